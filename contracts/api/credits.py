"""HTTP models of the credits service: the capability bank (ARCHITECTURE §4 "Learning
credits", §5).

An agent's credits are *lots*: one per completed course and one per admin grant, each with
its hours, dimension, tags and an expiry. Valid credits as of an instant are the lots
deposited at or before it that are neither revoked nor expired by then (a lot expiring at
T counts strictly before T).

Requests are frozen and forbid unknown fields, so a typo is a 400 naming the field rather
than a silently ignored value. Every time is ISO 8601 with a zone; responses write UTC
with a `Z`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, field_validator

from contracts.envelope import Contract, utc_iso
from contracts.vocabulary import Dimension, Id, Tag, Tier

UtcTime = Annotated[AwareDatetime, PlainSerializer(utc_iso, return_type=str)]

MAX_PAGE_SIZE = 100
MAX_TAGS = 20
#: External training can be longer than one course, so a grant may exceed a course's 40 h.
MAX_GRANT_HOURS = 200.0
MAX_VALID_DAYS = 3650

LotSource = Literal["course", "grant"]
LotStatus = Literal["valid", "expired", "revoked"]
HistoryKind = Literal["deposit", "grant", "revocation", "expiry"]

AS_OF_DOC = (
    "The instant to evaluate at (ISO 8601 date-time with a zone, e.g. 2026-11-23T06:00:00Z; "
    "encode a `+` offset as %2B). Omit for now."
)


class Response(BaseModel):
    """Base of response bodies: immutable; readers must accept fields added later."""

    model_config = ConfigDict(frozen=True)


# --- requests ---------------------------------------------------------------------------


class CreditGrant(Contract):
    """`POST /v1/agents/{agent_id}/credits/grants` (admin): credits for external training.

    The lot is valid from now for `valid_days`. Send an `Idempotency-Key` header to make a
    retried request return the first grant instead of granting twice.
    """

    credit_hours: float = Field(
        ge=0.5, le=MAX_GRANT_HOURS, multiple_of=0.5, description="Hours, in steps of 0.5"
    )
    dimension: Dimension
    reason: str = Field(min_length=3, max_length=500, description="Why: what training it is")
    evidence_url: str = Field(
        min_length=8,
        max_length=2000,
        pattern=r"^https?://\S+$",
        description="Link to the certificate or record (http or https)",
    )
    tags: list[Tag] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description="e.g. `coaching`, which counts towards the leadership requirement",
    )
    valid_days: int | None = Field(
        None, ge=1, le=MAX_VALID_DAYS, description="Days the lot stays valid; default 365"
    )

    @field_validator("tags")
    @classmethod
    def _distinct_tags(cls, tags: list[str]) -> list[str]:
        if len(set(tags)) != len(tags):
            raise ValueError("tags must be distinct")
        return tags


class LotRevocation(Contract):
    """`POST /v1/agents/{agent_id}/credits/lots/{lot_id}/revocation` (admin)."""

    reason: str = Field(min_length=3, max_length=500, description="Why the lot is revoked")


class CreditsQuery(Contract):
    """Query of `GET /v1/agents/{agent_id}/credits` and `GET /v1/teams/{team_id}/credits`."""

    as_of: AwareDatetime | None = Field(None, description=AS_OF_DOC)


class LotsQuery(Contract):
    """Query of `GET /v1/agents/{agent_id}/credits/lots`."""

    as_of: AwareDatetime | None = Field(None, description=AS_OF_DOC)
    status: LotStatus | None = Field(None, description="Only lots in this status as of then")


class HistoryQuery(Contract):
    """Query of `GET /v1/agents/{agent_id}/credits/history` (newest first)."""

    limit: int = Field(20, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = Field(None, max_length=200, description="`next_cursor` of a page")


# --- responses --------------------------------------------------------------------------


class DimensionHours(Response):
    communication: float = 0.0
    technology: float = 0.0
    problem_solving: float = 0.0


class CreditLot(Response):
    lot_id: str
    agent_id: Id
    source: LotSource = Field(description="`course` (a completed course) or `grant` (admin)")
    course_id: Id | None = Field(None, description="The completed course, for course lots")
    dimension: Dimension
    credit_hours: float
    tags: list[str]
    deposited_at: UtcTime = Field(description="Course completion time, or when granted")
    expires_at: UtcTime = Field(description="Valid strictly before this instant")
    status: LotStatus = Field(description="As of the instant the response was computed for")
    reason: str | None = Field(None, description="Grants: why they were granted")
    evidence_url: str | None = None
    granted_by: str | None = None
    revoked_at: UtcTime | None = None
    revoked_by: str | None = None
    revocation_reason: str | None = None


class Missing(Response):
    """What is still missing to meet a requirement (0 where it is met)."""

    total: float
    by_dimension: DimensionHours
    by_tag: dict[str, float] = Field(description="Hours from lots carrying the tag")


class Requirement(Response):
    """Valid credits an agent needs to be ready for `tier` (configuration)."""

    tier: Tier
    from_tier: Tier
    total: float
    by_dimension: DimensionHours
    by_tag: dict[str, float]


class NextTier(Response):
    tier: Tier
    met: bool = Field(description="Whether valid credits meet the requirement as of then")
    missing: Missing
    required: Requirement
    first_met_at: UtcTime | None = Field(
        None,
        description="When the requirement was first met (the requirement_met event), even if "
        "credits have expired since",
    )


class RecommendedCourse(Response):
    course_id: Id
    title: str
    tier: Tier
    dimension: Dimension
    credit_hours: float
    tags: list[str]
    gap_hours: float = Field(description="The gap this course works on: its dimension's or tag's")


class AgentCredits(Response):
    """`GET /v1/agents/{agent_id}/credits`: the agent's credit view."""

    agent_id: Id
    tier: Tier
    team_id: Id | None
    as_of: UtcTime
    total: float = Field(description="Valid credit hours")
    by_dimension: DimensionHours
    by_tag: dict[str, float] = Field(description="Valid hours from lots with the tags that count")
    expiring_soon: list[CreditLot] = Field(description="Valid lots expiring in the next 30 days")
    next_tier: NextTier | None = Field(description="Null at the top tier")
    recommended_courses: list[RecommendedCourse]


class AgentLots(Response):
    """`GET /v1/agents/{agent_id}/credits/lots`: every lot, newest deposit first."""

    agent_id: Id
    as_of: UtcTime
    lots: list[CreditLot]


class HistoryEntry(Response):
    entry_id: str
    kind: HistoryKind
    at: UtcTime = Field(description="When it took effect (completion, grant, revocation, expiry)")
    lot_id: str
    dimension: Dimension
    credit_hours: float = Field(description="Positive for deposits and grants, negative after")
    course_id: Id | None = None
    reason: str | None = None
    evidence_url: str | None = None
    actor: str | None = Field(None, description="Who granted or revoked (the caller's subject)")
    source_event_id: str | None = Field(None, description="The event that caused it, if any")


class CreditHistory(Response):
    """`GET /v1/agents/{agent_id}/credits/history`: append-only, newest first."""

    agent_id: Id
    history: list[HistoryEntry]
    next_cursor: str | None


class TeamMemberCredits(Response):
    agent_id: Id
    name: str | None
    tier: Tier
    total: float
    by_dimension: DimensionHours
    next_tier: NextTier | None
    expiring_soon: list[CreditLot]
    expiring_soon_hours: float


class TeamCredits(Response):
    """`GET /v1/teams/{team_id}/credits`: readiness and expiring credits of a team."""

    team_id: Id
    as_of: UtcTime
    ready: int = Field(description="Agents whose credits meet their next tier's requirement")
    agents: list[TeamMemberCredits]


class Requirements(Response):
    """`GET /v1/credits/requirements`: the configured tier requirements."""

    requirements: list[Requirement]
