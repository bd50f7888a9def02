"""HTTP models of the leaderboards service (ARCHITECTURE §4 "Leaderboards", §5).

Reads: `GET /v1/leaderboards/{period}` (a page of a board) and
`GET /v1/leaderboards/{period}/agents/{agent_id}` (one agent's position with neighbours).
`{period}` is `all-time`, `weekly` or `monthly` (the current one, in the configured time
zone) or a key such as `2026-W48` (ISO week) or `2026-11` (month).
`GET /v1/agents/{agent_id}/standings?periods=weekly,all-time` gives one agent's rank on
several boards in one call (the gateway's profile); an agent not on a board has no rank there.
Admin: `POST /v1/leaderboards/rebuild` recomputes every board from the applied-points log.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from contracts.envelope import Contract
from contracts.vocabulary import ID_PATTERN

#: `global`, `team:<team_id>` or `tier:<tier>`.
SCOPE_PATTERN = r"^(global|team:" + ID_PATTERN[1:-1] + r"|tier:(foundation|advanced|leadership))$"
SCOPE_HELP = "global, team:<team_id> or tier:<foundation|advanced|leadership>"
MAX_LIMIT = 100
MAX_NEIGHBORS = 10
#: Boards one standings call may ask for.
MAX_STANDINGS = 4


def _valid_scope(value: str) -> str:
    if not _SCOPE.match(value):
        raise ValueError(f"unknown scope {value!r}: use {SCOPE_HELP}")
    return value


_SCOPE = re.compile(SCOPE_PATTERN)
#: A board scope; the pattern is also published in the OpenAPI document.
Scope = Annotated[
    str,
    AfterValidator(_valid_scope),
    Field(
        description=f"Which board of the period: {SCOPE_HELP}",
        json_schema_extra={"pattern": SCOPE_PATTERN},
    ),
]


class LeaderboardQuery(Contract):
    """Query string of `GET /v1/leaderboards/{period}`."""

    scope: Scope = "global"
    limit: int = Field(10, ge=1, le=MAX_LIMIT, description="Entries per page (1-100)")
    offset: int = Field(0, ge=0, le=1_000_000, description="Entries to skip from the top")


class PositionQuery(Contract):
    """Query string of `GET /v1/leaderboards/{period}/agents/{agent_id}`."""

    scope: Scope = "global"
    neighbors: int = Field(
        2, ge=0, le=MAX_NEIGHBORS, description="Entries to show above and below (0-10)"
    )


def _split(value: object) -> object:
    return [part.strip() for part in value.split(",")] if isinstance(value, str) else value


def _checked_periods(periods: list[str]) -> list[str]:
    if not all(periods):
        raise ValueError("an empty period: separate periods with single commas")
    if len(set(periods)) != len(periods):
        raise ValueError("a period is named twice")
    if len(periods) > MAX_STANDINGS:
        raise ValueError(f"at most {MAX_STANDINGS} periods")
    return periods


class StandingsQuery(Contract):
    """Query string of `GET /v1/agents/{agent_id}/standings`."""

    periods: Annotated[list[str], BeforeValidator(_split), AfterValidator(_checked_periods)] = (
        Field(
            default_factory=lambda: ["all-time"],
            description=f"Comma-separated periods (up to {MAX_STANDINGS}): all-time, weekly, "
            "monthly or a key such as 2026-W48",
        )
    )
    scope: Scope = "global"


class RebuildRequest(Contract):
    """Body of `POST /v1/leaderboards/rebuild`: empty (or `{}`); the rebuild takes no options."""


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class LeaderboardEntry(_Response):
    rank: int = Field(ge=1, description="1..N without gaps; ties are broken, never shared")
    agent_id: str
    name: str | None = Field(description="Display name; null until the roster names the agent")
    team_id: str | None = Field(description="The agent's current team (display only)")
    score: int = Field(gt=0, description="Points earned in this period and scope")


class Leaderboard(_Response):
    period: str = Field(description="The period key: all-time, 2026-W48 or 2026-11")
    period_kind: Literal["all-time", "weekly", "monthly"]
    scope: str
    starts_at: AwareDatetime | None = Field(description="Start of the period (null for all-time)")
    ends_at: AwareDatetime | None = Field(description="End (exclusive) of the period")
    closed: bool = Field(description="Whether the period close has been published")
    total: int = Field(ge=0, description="Agents on the board (score above 0)")
    entries: list[LeaderboardEntry]


class LeaderboardPosition(_Response):
    period: str
    scope: str
    agent_id: str
    name: str | None
    team_id: str | None
    rank: int = Field(ge=1)
    score: int
    total: int = Field(ge=0)
    above: list[LeaderboardEntry] = Field(
        description="Up to k entries ranked just above, best first"
    )
    below: list[LeaderboardEntry] = Field(description="Up to k entries ranked just below")


class AgentStanding(_Response):
    period: str = Field(description="The period key, e.g. `2026-W48` or `all-time`")
    rank: int | None = Field(ge=1, description="1-based; null when the agent is not on the board")
    score: int = Field(description="0 when the agent is not on the board")


class AgentStandings(_Response):
    agent_id: str
    scope: str
    standings: list[AgentStanding] = Field(description="One per period asked, in that order")


class RebuildReport(_Response):
    """What `POST /v1/leaderboards/rebuild` (and the CLI) found and fixed."""

    applied_events: int = Field(description="Point events in the applied-points log")
    entries_expected: int = Field(description="Board entries the log yields")
    entries_fixed: int = Field(description="Entries that differed from the log and were rewritten")
    agents_fixed: int
    boards_recounted: int = Field(description="Boards whose agent count was corrected")
    team_members_fixed: int = Field(
        0, description="Team board member records added or removed to match the entries"
    )
    started_at: datetime
    duration_seconds: float
