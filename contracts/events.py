"""Every v1 event type (ARCHITECTURE §2 and §4), one envelope subclass per type.

`type` is the discriminator: the module-level `EVENT_ADAPTER` parses any of them in one
pass. A change that is not purely additive is a new class with a `.v2` type.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, TypeAdapter, field_serializer

from contracts.envelope import CloudEvent, EventPayload, utc_iso
from contracts.vocabulary import (
    AgentSnapshot,
    CreditHours,
    Dimension,
    Id,
    ModuleKind,
    Score,
    Tag,
    Tier,
)

# --- people.agents ----------------------------------------------------------------------


class AgentData(EventPayload):
    agent_id: Id
    name: str = Field(min_length=1, max_length=200)
    team_id: Id
    tier: Tier


class AgentUpdatedData(AgentData):
    changed: list[Literal["name", "team_id", "tier"]] = Field(
        description="Which fields this update changed"
    )


class AgentRegistered(CloudEvent):
    type: Literal["people.agent.registered.v1"] = "people.agent.registered.v1"
    data: AgentData


class AgentUpdated(CloudEvent):
    type: Literal["people.agent.updated.v1"] = "people.agent.updated.v1"
    data: AgentUpdatedData


# --- learning.catalog -------------------------------------------------------------------


class ModuleData(EventPayload):
    module_id: Id
    kind: ModuleKind
    title: str = Field(min_length=1, max_length=200)
    pass_score: Score | None = Field(None, description="Quiz and roleplay only")


class CourseData(EventPayload):
    course_id: Id
    title: str = Field(min_length=1, max_length=200)
    tier: Tier
    dimension: Dimension
    credit_hours: CreditHours
    tags: list[Tag] = Field(default_factory=list)
    modules: list[ModuleData] = Field(min_length=1)
    published: bool
    revision: int = Field(ge=1, description="Increases with every change of the course")


class CoursePublished(CloudEvent):
    type: Literal["learning.course.published.v1"] = "learning.course.published.v1"
    data: CourseData


class CourseUpdated(CloudEvent):
    """A change to a published course (title, tags, modules...), carrying the whole course."""

    type: Literal["learning.course.updated.v1"] = "learning.course.updated.v1"
    data: CourseData


# --- learning.progress ------------------------------------------------------------------


class CourseEnrolledData(EventPayload):
    agent: AgentSnapshot
    course_id: Id


class ModuleCompletedData(EventPayload):
    agent: AgentSnapshot
    course_id: Id
    module_id: Id
    module_kind: ModuleKind
    score: Score | None = Field(None, description="The passing score, for assessed modules")


class AssessmentGradedData(EventPayload):
    agent: AgentSnapshot
    course_id: Id
    module_id: Id
    module_kind: Literal["quiz", "roleplay"]
    score: Score
    pass_score: Score
    passed: bool
    attempt: int = Field(ge=1, description="1 for the first attempt at this module")


class CourseCompletedData(EventPayload):
    agent: AgentSnapshot
    course_id: Id
    course_tier: Tier
    dimension: Dimension
    credit_hours: CreditHours
    tags: list[Tag]
    mean_best_score: float | None = Field(
        description="Mean of the best scores of the assessed modules; null when there are none"
    )


class FeedbackSubmittedData(EventPayload):
    agent: AgentSnapshot
    course_id: Id
    rating: int = Field(ge=1, le=5)
    comment: str = Field("", max_length=2000)


class CourseEnrolled(CloudEvent):
    type: Literal["learning.course.enrolled.v1"] = "learning.course.enrolled.v1"
    data: CourseEnrolledData


class ModuleCompleted(CloudEvent):
    type: Literal["learning.module.completed.v1"] = "learning.module.completed.v1"
    data: ModuleCompletedData


class AssessmentGraded(CloudEvent):
    type: Literal["learning.assessment.graded.v1"] = "learning.assessment.graded.v1"
    data: AssessmentGradedData


class CourseCompleted(CloudEvent):
    type: Literal["learning.course.completed.v1"] = "learning.course.completed.v1"
    data: CourseCompletedData


class FeedbackSubmitted(CloudEvent):
    type: Literal["learning.feedback.submitted.v1"] = "learning.feedback.submitted.v1"
    data: FeedbackSubmittedData


# --- work.tickets -----------------------------------------------------------------------


class TicketResolvedData(EventPayload):
    agent: AgentSnapshot
    ticket_id: Id
    qa_score: Score
    csat: int = Field(ge=1, le=5)


class TicketResolved(CloudEvent):
    """Time is the ticket's `resolved_at`."""

    type: Literal["work.ticket.resolved.v1"] = "work.ticket.resolved.v1"
    data: TicketResolvedData


# --- gamification.points ----------------------------------------------------------------


class PointsChangeData(EventPayload):
    agent_id: Id
    award_id: str = Field(description="Ledger entry id")
    delta: int = Field(description="Points added (negative for a deduction or reversal)")
    rule_id: str
    rule_version: int | None = None
    reason: str | None = None
    source_event_id: str
    source_event_type: str | None = None
    occurred_at: AwareDatetime = Field(description="The source event's time")
    team_id: Id
    tier: Tier
    balance: int = Field(ge=0, description="The agent's balance after this change")

    @field_serializer("occurred_at")
    def _serialize_occurred_at(self, value: datetime) -> str:
        return utc_iso(value)


class PointsReversedData(PointsChangeData):
    reversed_award_id: str


class PointsAwarded(CloudEvent):
    type: Literal["gamification.points.awarded.v1"] = "gamification.points.awarded.v1"
    data: PointsChangeData


class PointsReversed(CloudEvent):
    type: Literal["gamification.points.reversed.v1"] = "gamification.points.reversed.v1"
    data: PointsReversedData


# --- gamification.badges ---------------------------------------------------------------


class BadgeAwardedData(EventPayload):
    agent: AgentSnapshot
    badge_id: Id
    level: str | None = Field(None, description="e.g. bronze; null for badges without levels")
    bonus_points: int = Field(ge=0)
    evidence: list[str] = Field(description="Ids of the events that met the criterion")


class BadgeAwarded(CloudEvent):
    """Time is the time of the event that met the criterion."""

    type: Literal["gamification.badge.awarded.v1"] = "gamification.badge.awarded.v1"
    data: BadgeAwardedData


# --- gamification.leaderboards ----------------------------------------------------------


class StandingData(EventPayload):
    rank: int = Field(ge=1)
    agent_id: Id
    score: int
    team_id: Id | None = None


class PeriodClosedData(EventPayload):
    period: Literal["weekly", "monthly"]
    period_key: str = Field(description="e.g. 2026-W48 or 2026-11")
    scope: Literal["global"] = "global"
    top: list[StandingData] = Field(max_length=10)


class LeaderboardPeriodClosed(CloudEvent):
    """Time is the last instant of the period; subject is the period key."""

    type: Literal["gamification.leaderboard.period_closed.v1"] = (
        "gamification.leaderboard.period_closed.v1"
    )
    data: PeriodClosedData


# --- learning.credits -------------------------------------------------------------------


class CreditsRequirementMetData(EventPayload):
    agent: AgentSnapshot
    target_tier: Tier
    total: float
    by_dimension: dict[Dimension, float]


class CreditsExpiredData(EventPayload):
    agent_id: Id
    lot_id: str
    credit_hours: float
    dimension: Dimension


class CreditsRequirementMet(CloudEvent):
    type: Literal["learning.credits.requirement_met.v1"] = "learning.credits.requirement_met.v1"
    data: CreditsRequirementMetData


class CreditsExpired(CloudEvent):
    """Time is the instant the lot expired."""

    type: Literal["learning.credits.expired.v1"] = "learning.credits.expired.v1"
    data: CreditsExpiredData


# --- the union ---------------------------------------------------------------------------

EVENT_CLASSES: tuple[type[CloudEvent], ...] = (
    AgentRegistered,
    AgentUpdated,
    CoursePublished,
    CourseUpdated,
    CourseEnrolled,
    ModuleCompleted,
    AssessmentGraded,
    CourseCompleted,
    FeedbackSubmitted,
    TicketResolved,
    PointsAwarded,
    PointsReversed,
    BadgeAwarded,
    LeaderboardPeriodClosed,
    CreditsRequirementMet,
    CreditsExpired,
)
EVENT_TYPES: dict[str, type[CloudEvent]] = {cls.TYPE: cls for cls in EVENT_CLASSES}

Event = Annotated[
    AgentRegistered
    | AgentUpdated
    | CoursePublished
    | CourseUpdated
    | CourseEnrolled
    | ModuleCompleted
    | AssessmentGraded
    | CourseCompleted
    | FeedbackSubmitted
    | TicketResolved
    | PointsAwarded
    | PointsReversed
    | BadgeAwarded
    | LeaderboardPeriodClosed
    | CreditsRequirementMet
    | CreditsExpired,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
