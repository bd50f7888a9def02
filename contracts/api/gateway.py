"""The gateway's own HTTP models: the error shape, the token claims, the aggregated profile,
the path patterns it checks before proxying, and its readiness answer.

Everything else the gateway serves is described by the owning service's models in
`contracts/api/<service>.py`; the gateway reuses them for validation and its OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from contracts.vocabulary import ID_PATTERN, Id

Role = Literal["agent", "manager", "admin", "service"]
ROLES: tuple[str, ...] = ("agent", "manager", "admin", "service")

#: `all-time`, `weekly`, `monthly`, an ISO week key (`2026-W48`) or a month key (`2026-11`).
PERIOD_PATTERN = r"^(all-time|weekly|monthly|\d{4}-W(0[1-9]|[1-4]\d|5[0-3])|\d{4}-(0[1-9]|1[0-2]))$"
Period = Annotated[str, StringConstraints(pattern=PERIOD_PATTERN)]


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable error code, e.g. `bad_request`")
    message: str = Field(description="What was wrong and what to send instead")
    details: Any = Field(
        None, description="Field-level details for bad input: `[{field, message, received}]`"
    )


class ErrorResponse(BaseModel):
    """Every error the API answers, whatever its status."""

    error: ErrorDetail


class TokenClaims(BaseModel):
    """The claims of a Skillquest bearer token (HS256 JWT)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sub: Id = Field(description="Who calls: the agent id for agents, a user or system name else")
    role: Role
    team: Id | None = Field(None, description="The team a manager manages (required for them)")
    exp: int = Field(description="Expiry (Unix time)")


class RankView(BaseModel):
    """An agent's place on one board of the profile."""

    period: str = Field(description="The period key, e.g. `2026-W48` or `all-time`")
    scope: str = "global"
    rank: int | None = Field(description="1-based; null when the agent is not on the board")
    score: int = 0


class ProfileRanks(BaseModel):
    weekly: RankView | None = Field(description="Current ISO week, global scope")
    all_time: RankView | None = Field(description="All-time, global scope")


ProfilePart = Literal[
    "agent", "points", "weekly_rank", "all_time_rank", "credits", "badges", "courses"
]


class ProfileResponse(BaseModel):
    """Everything about one agent in one call. A part whose service is down is `null` and
    named in `unavailable`; the rest is still served."""

    agent_id: Id
    agent: dict[str, Any] | None = Field(description="Roster entry: name, team_id, tier")
    points: dict[str, Any] | None = Field(description="Balance and the latest history page")
    ranks: ProfileRanks
    credits: dict[str, Any] | None = Field(description="The credit view (capability bank)")
    badges: dict[str, Any] | None = Field(description="Awarded badges")
    courses_in_progress: list[dict[str, Any]] | None = Field(
        description="Enrolled courses not completed yet, with their progress"
    )
    unavailable: list[ProfilePart] = Field(
        default_factory=list, description="Parts left out because their service did not answer"
    )


class ReadinessResponse(BaseModel):
    ready: bool
    checks: dict[str, bool] = Field(description="Each downstream service's /healthz answered")


__all__ = [
    "ID_PATTERN",
    "PERIOD_PATTERN",
    "ROLES",
    "ErrorDetail",
    "ErrorResponse",
    "Period",
    "ProfilePart",
    "ProfileRanks",
    "ProfileResponse",
    "RankView",
    "ReadinessResponse",
    "Role",
    "TokenClaims",
]
