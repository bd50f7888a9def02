"""HTTP models of the points service (ARCHITECTURE §4 "Points", §5).

Requests are frozen and forbid unknown fields; responses describe every field so the
gateway's OpenAPI document is complete.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer

from contracts.envelope import Contract, utc_iso
from contracts.vocabulary import Id, Score, Tier

#: Rule ids of the built-in rules (the rule table, `services/points/rules.yml`).
RULE_IDS: tuple[str, ...] = (
    "module-completed",
    "assessment-passed",
    "course-completed",
    "ticket-quality",
    "badge-bonus",
)
#: Rule ids of ledger entries made by an admin rather than by an event.
ADJUSTMENT_RULE_ID = "adjustment"
REVERSAL_RULE_ID = "reversal"

Reason = Annotated[
    str,
    Field(
        min_length=1,
        max_length=500,
        pattern=r"\S",
        description="Why: shown in the agent's history and kept for audit",
    ),
]
Multiplier = Annotated[float, Field(ge=0, le=100)]


class Response(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- balance and history ----------------------------------------------------------------


class HistoryQuery(Contract):
    limit: int = Field(20, ge=1, le=100, description="Entries per page (1-100)")
    cursor: str | None = Field(
        None, max_length=200, description="`next_cursor` of the previous page; omit for newest"
    )


class LedgerEntry(Response):
    award_id: str = Field(description="Ledger entry id (use it to reverse this entry)")
    delta: int = Field(description="Points added; negative for a deduction or a reversal")
    rule_id: str = Field(description="The rule that produced it, or `adjustment` / `reversal`")
    rule_version: int | None = Field(description="Version of the rule applied (null for admin)")
    reason: str = Field(description="What happened, in words")
    occurred_at: AwareDatetime = Field(
        description="When the source happened (event time; for an adjustment, when it was made)"
    )
    source_event_id: str = Field(
        description="The event that caused it; for an adjustment its own id; for a reversal "
        "the reversed award's id"
    )
    source_event_type: str | None = Field(description="Type of the source event, when one")
    team_id: str = Field(description="The agent's team when it happened")
    tier: Tier = Field(description="The agent's tier when it happened")
    balance: int = Field(description="The agent's balance right after this entry")
    reversed_award_id: str | None = Field(None, description="For a reversal: the award undone")
    reversed_by: str | None = Field(None, description="Id of the reversal of this entry, if any")
    recorded_at: AwareDatetime = Field(description="When the ledger recorded it (wall time)")
    recorded_by: str | None = Field(None, description="Who made an adjustment or reversal")
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="How the points were computed: base, bonuses, multiplier, capped_from",
    )

    @field_serializer("occurred_at", "recorded_at")
    def _serialize_times(self, value: datetime) -> str:
        return utc_iso(value)


class PointsView(Response):
    """`GET /v1/agents/{agent_id}/points`: balance and one page of history, newest first."""

    agent_id: Id
    balance: int = Field(ge=0)
    history: list[LedgerEntry]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: end")


# --- admin changes ------------------------------------------------------------------------


class AdjustmentRequest(Contract):
    """`POST /v1/agents/{agent_id}/points/adjustments`."""

    delta: int = Field(
        description="Points to add (positive) or take away (negative); not zero",
        ge=-1_000_000,
        le=1_000_000,
    )
    reason: Reason


class ReversalRequest(Contract):
    """`POST /v1/agents/{agent_id}/points/awards/{award_id}/reversal`."""

    reason: Reason


# --- the rule table -------------------------------------------------------------------------


class RuleDefinition(Contract):
    """One rule's values. Which fields a rule accepts depends on the rule (see `GET
    /v1/points/rules`); fields a rule does not use must be left out."""

    enabled: bool = Field(True, description="A disabled rule awards nothing")
    points: int | None = Field(
        None,
        ge=0,
        le=100_000,
        description="Base points; required by every rule but badge-bonus, which awards the "
        "badge's own bonus points",
    )
    bonuses: dict[str, Annotated[int, Field(ge=0, le=100_000)]] = Field(
        default_factory=dict,
        description="assessment-passed only: `perfect_score` (score 100), `first_attempt`",
    )
    tier_multipliers: dict[Tier, Multiplier] = Field(
        default_factory=dict,
        description="Points are multiplied by the tier's factor, rounded half up (missing "
        "tiers: 1). course-completed uses the course's tier, other rules the agent's",
    )
    daily_cap: int | None = Field(
        None, ge=1, le=1_000_000, description="Most points per agent per local day; null: none"
    )
    min_qa_score: Score | None = Field(
        None, description="ticket-quality only: lowest QA score that earns points"
    )


class RuleUpdate(RuleDefinition):
    """`PUT /v1/points/rules/{rule_id}`: the rule's new values (all of them)."""

    expected_version: int | None = Field(
        None, ge=1, description="When given, the update is refused (409) if the rule moved on"
    )


class RuleView(Response):
    rule_id: str
    version: int = Field(description="Increases with every change; ledger entries record it")
    description: str = Field(description="When the rule awards")
    on: list[str] = Field(description="Event types the rule reacts to")
    definition: RuleDefinition
    updated_at: AwareDatetime
    updated_by: str | None = Field(description="Who changed it last (null: the rules file)")

    @field_serializer("updated_at")
    def _serialize_updated_at(self, value: datetime) -> str:
        return utc_iso(value)


class RulesView(Response):
    rules: list[RuleView]


class RuleVersionsView(Response):
    rule_id: str
    versions: list[RuleView] = Field(description="Every version, newest first")
