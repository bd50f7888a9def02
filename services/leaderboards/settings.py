"""The `LEADERBOARDS:` section of deploy/config.yml (every field has a working default)."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.leaderboards.journal import RETENTION_SECONDS


class LeaderboardSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Filled from the runtime configuration (TIME_ZONE) unless set here.
    time_zone: str = "Asia/Shanghai"
    close_check_interval_seconds: float = Field(
        30.0, gt=0, description="How often ended periods are looked for and closed"
    )
    close_grace_seconds: float = Field(
        300.0,
        ge=0,
        description=(
            "A period closes once it has ended and no points arrived for it for this long: "
            "room for events in flight at the end, and for a backfill to finish"
        ),
    )

    read_cache_seconds: float = Field(
        0.5,
        ge=0,
        le=5,
        description=(
            "Reads may answer from what was read this long ago: a page as answered, a "
            "board's score counts, a read view (caught up this often; an agent it does not "
            "hold is read from the database). Reads are eventually consistent; 0 reads the "
            "count maps' tokens every time and turns the read views off"
        ),
    )

    view_max_entries: int = Field(
        250_000,
        ge=0,
        description=(
            "Board entries the read views may hold in memory, over all boards (about 290 "
            "bytes each), and agents whose display names they may hold (about 370 bytes "
            "each); a board (or a roster) that does not fit is read from the database. 0 "
            "turns the views off"
        ),
    )
    view_min_entries: int = Field(
        1_000,
        ge=0,
        description=(
            "Boards smaller than this are read from the database (cheap at that size) and "
            "not held: a view is for the large boards everyone reads, not every team's"
        ),
    )
    view_idle_seconds: float = Field(
        60.0,
        gt=0,
        # A view not read is not caught up: past the journal's retention it could not be.
        le=RETENTION_SECONDS / 2,
        description="A board not read for this long is dropped from the read views",
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value
