"""HTTP models of the progress service: roster, catalogue, enrolments, module progress,
attempts, feedback and ticket intake (ARCHITECTURE §4 "Roster and catalogue", §5).

Requests are frozen and forbid unknown fields, so a typo is a 400 naming the field rather
than a silently ignored value. Every time is ISO 8601 with a zone; responses write UTC
with a `Z`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from contracts.envelope import Contract, utc_iso
from contracts.vocabulary import (
    ASSESSED_KINDS,
    AgentSnapshot,
    CreditHours,
    Dimension,
    Id,
    ModuleKind,
    Score,
    Tag,
    Tier,
)

#: The pass score a quiz or roleplay gets when the course does not say (ARCHITECTURE §4).
DEFAULT_PASS_SCORE = 80
MAX_MODULES = 100
MAX_TAGS = 20
MAX_PAGE_SIZE = 100

UtcTime = Annotated[AwareDatetime, PlainSerializer(utc_iso, return_type=str)]

OCCURRED_AT_DOC = (
    "Backfill (admin and service callers): when this happened, in the past; the events carry "
    "it as their time. Omit for now."
)


class Response(BaseModel):
    """Base of response bodies: immutable; readers must accept fields added later."""

    model_config = ConfigDict(frozen=True)


# --- roster -----------------------------------------------------------------------------


class AgentCreate(Contract):
    """`POST /v1/agents`."""

    agent_id: Id = Field(description="Stable id from the HR system")
    name: str = Field(min_length=1, max_length=200)
    team_id: Id
    tier: Tier = "foundation"
    occurred_at: AwareDatetime | None = Field(None, description=OCCURRED_AT_DOC)


class AgentPatch(Contract):
    """`PATCH /v1/agents/{agent_id}`: send only what changes (at least one field)."""

    name: str | None = Field(None, min_length=1, max_length=200)
    team_id: Id | None = None
    tier: Tier | None = None
    occurred_at: AwareDatetime | None = Field(
        None,
        description="Backfill: when the change took effect (past only, not before the "
        "agent's registration). Events at or after it carry the new team and tier.",
    )

    @model_validator(mode="after")
    def _something_to_change(self) -> Self:
        if self.name is None and self.team_id is None and self.tier is None:
            raise ValueError("send at least one of name, team_id, tier")
        return self


class TeamTierPeriod(Response):
    """From `effective_at` on (until the next entry), the agent had these values."""

    effective_at: UtcTime
    team_id: Id
    tier: Tier


class Agent(Response):
    agent_id: Id
    name: str
    team_id: Id
    tier: Tier
    registered_at: UtcTime = Field(description="Effective time of the registration")
    updated_at: UtcTime = Field(description="Wall time of the last change")
    revision: int = Field(ge=1, description="Increases with every change")
    history: list[TeamTierPeriod] = Field(
        description="Team and tier over time, oldest first (effective-dated)"
    )


class AgentQuery(Contract):
    """`GET /v1/agents?team_id=&tier=&limit=&offset=` (ordered by agent id)."""

    team_id: Id | None = None
    tier: Tier | None = None
    limit: int = Field(50, ge=1, le=MAX_PAGE_SIZE)
    offset: int = Field(0, ge=0)


class AgentList(Response):
    total: int
    limit: int
    offset: int
    agents: list[Agent]


# --- catalogue --------------------------------------------------------------------------


class ModuleSpec(Contract):
    """A module of a course. `pass_score` is for quiz and roleplay only (default 80)."""

    module_id: Id
    kind: ModuleKind
    title: str = Field(min_length=1, max_length=200)
    pass_score: Score | None = Field(
        None, description=f"Quiz and roleplay only; default {DEFAULT_PASS_SCORE}"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_pass_score(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and data.get("kind") in ASSESSED_KINDS
            and data.get("pass_score") is None
        ):
            return {**data, "pass_score": DEFAULT_PASS_SCORE}
        return data

    @model_validator(mode="after")
    def _pass_score_fits_kind(self) -> Self:
        if self.kind not in ASSESSED_KINDS and self.pass_score is not None:
            raise ValueError(
                f"a {self.kind} module has no pass_score (only quiz and roleplay do): omit it"
            )
        return self


def _unique_module_ids(modules: list[ModuleSpec]) -> list[ModuleSpec]:
    seen: set[str] = set()
    for module in modules:
        if module.module_id in seen:
            raise ValueError(f"module_id {module.module_id!r} appears twice: ids must be unique")
        seen.add(module.module_id)
    return modules


def _unique_tags(tags: list[str]) -> list[str]:
    if len(set(tags)) != len(tags):
        raise ValueError("tags must not repeat")
    return tags


class CourseCreate(Contract):
    """`POST /v1/courses`: published at once unless `"published": false`."""

    course_id: Id
    title: str = Field(min_length=1, max_length=200)
    tier: Tier
    dimension: Dimension
    credit_hours: CreditHours = Field(description="0.5 to 40 in steps of 0.5")
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    modules: list[ModuleSpec] = Field(
        min_length=1, max_length=MAX_MODULES, description="In the order they are taken"
    )
    published: bool = True

    _modules = field_validator("modules")(_unique_module_ids)
    _tags = field_validator("tags")(_unique_tags)


class CoursePatch(Contract):
    """`PATCH /v1/courses/{course_id}`: send only what changes (at least one field).

    `modules` replaces the whole list. Agents already enrolled keep the modules they
    enrolled with; later enrolments get the new list.
    """

    title: str | None = Field(None, min_length=1, max_length=200)
    tier: Tier | None = None
    dimension: Dimension | None = None
    credit_hours: CreditHours | None = None
    tags: list[Tag] | None = Field(None, max_length=MAX_TAGS)
    modules: list[ModuleSpec] | None = Field(None, min_length=1, max_length=MAX_MODULES)

    @field_validator("modules")
    @classmethod
    def _modules_unique(cls, modules: list[ModuleSpec] | None) -> list[ModuleSpec] | None:
        return None if modules is None else _unique_module_ids(modules)

    @field_validator("tags")
    @classmethod
    def _tags_unique(cls, tags: list[str] | None) -> list[str] | None:
        return None if tags is None else _unique_tags(tags)

    @model_validator(mode="after")
    def _something_to_change(self) -> Self:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError(
                "send at least one of title, tier, dimension, credit_hours, tags, modules"
            )
        return self


class Module(Response):
    module_id: Id
    kind: ModuleKind
    title: str
    pass_score: Score | None = None


class Course(Response):
    course_id: Id
    title: str
    tier: Tier
    dimension: Dimension
    credit_hours: float
    tags: list[str]
    modules: list[Module]
    published: bool
    revision: int = Field(ge=1, description="Increases with every change")
    created_at: UtcTime
    updated_at: UtcTime
    published_at: UtcTime | None = None


class CourseQuery(Contract):
    """`GET /v1/courses?tier=&dimension=&tag=&published=&limit=&offset=` (by course id).

    `published` defaults to `true` (what learners may see); `false` lists drafts and `any`
    both.
    """

    tier: Tier | None = None
    dimension: Dimension | None = None
    tag: Tag | None = None
    published: Literal["true", "false", "any"] = "true"
    limit: int = Field(50, ge=1, le=MAX_PAGE_SIZE)
    offset: int = Field(0, ge=0)


class CourseList(Response):
    total: int
    limit: int
    offset: int
    courses: list[Course]


# --- progress ---------------------------------------------------------------------------


class EnrollmentCreate(Contract):
    """`POST /v1/agents/{agent_id}/enrollments`."""

    course_id: Id
    occurred_at: AwareDatetime | None = Field(None, description=OCCURRED_AT_DOC)


class ModuleCompletion(Contract):
    """`POST .../modules/{module_id}/complete` (lesson and practice); the body is optional."""

    occurred_at: AwareDatetime | None = Field(None, description=OCCURRED_AT_DOC)


class AttemptCreate(Contract):
    """`POST .../modules/{module_id}/attempts` (quiz and roleplay)."""

    score: Score = Field(description="0 to 100; passes at score >= the module's pass_score")
    occurred_at: AwareDatetime | None = Field(None, description=OCCURRED_AT_DOC)


class FeedbackCreate(Contract):
    """`POST /v1/agents/{agent_id}/courses/{course_id}/feedback` (after completion, once)."""

    rating: int = Field(ge=1, le=5, description="1 (poor) to 5 (excellent)")
    comment: str = Field("", max_length=2000)
    occurred_at: AwareDatetime | None = Field(None, description=OCCURRED_AT_DOC)


class Attempt(Response):
    attempt: int = Field(ge=1, description="Numbered per module, from 1")
    score: Score
    passed: bool
    occurred_at: UtcTime


class ModuleProgress(Response):
    module_id: Id
    kind: ModuleKind
    title: str
    pass_score: Score | None = None
    completed: bool
    completed_at: UtcTime | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    best_score: Score | None = Field(None, description="Highest attempt score so far")


class Feedback(Response):
    rating: int
    comment: str
    submitted_at: UtcTime


class CourseProgress(Response):
    agent_id: Id
    course_id: Id
    title: str
    tier: Tier
    dimension: Dimension
    credit_hours: float
    status: Literal["in_progress", "completed"]
    enrolled_at: UtcTime
    modules_total: int
    modules_done: int
    modules: list[ModuleProgress] = Field(description="The modules the agent enrolled with")
    completed_at: UtcTime | None = Field(
        None, description="Time of the module completion that finished the course"
    )
    mean_best_score: float | None = Field(
        None,
        description="As published on completion: mean of the best scores of the assessed "
        "modules (null when the course has none or it is not completed)",
    )
    feedback: Feedback | None = None


class CourseProgressQuery(Contract):
    """`GET /v1/agents/{agent_id}/courses?status=&limit=&offset=` (newest enrolment first)."""

    status: Literal["in_progress", "completed"] | None = None
    limit: int = Field(50, ge=1, le=MAX_PAGE_SIZE)
    offset: int = Field(0, ge=0)


class CourseProgressList(Response):
    agent_id: Id
    total: int
    limit: int
    offset: int
    courses: list[CourseProgress]


class AgentSummary(Response):
    """`GET /v1/agents/{agent_id}/summary` (same query as the courses): the roster entry and
    a page of course progress in one call, for the gateway's profile."""

    agent: Agent
    courses: CourseProgressList


class AttemptResult(Response):
    """What an attempt did: its number and grade, and the course progress after it."""

    module_id: Id
    attempt: int
    score: Score
    pass_score: Score
    passed: bool
    module_completed: bool = Field(description="This attempt completed the module")
    course_completed: bool = Field(description="This attempt completed the course")
    occurred_at: UtcTime
    progress: CourseProgress


class FeedbackResult(Response):
    agent_id: Id
    course_id: Id
    rating: int
    comment: str
    submitted_at: UtcTime


# --- tickets ----------------------------------------------------------------------------


class TicketCreate(Contract):
    """`POST /v1/tickets` (service role): a ticket the work-order system resolved.

    Re-sending the same ticket_id with the same content is a no-op answered with the original
    result; the same ticket_id with different content is a 409.
    """

    ticket_id: Id
    agent_id: Id
    qa_score: Score
    csat: int = Field(ge=1, le=5)
    resolved_at: AwareDatetime = Field(description="When it was resolved (the event time); past")
    occurred_at: AwareDatetime | None = Field(
        None, description="Accepted for uniformity with the other calls; must equal resolved_at"
    )

    @model_validator(mode="after")
    def _one_time(self) -> Self:
        if self.occurred_at is not None and self.occurred_at != self.resolved_at:
            raise ValueError("occurred_at must equal resolved_at when both are sent; send one")
        return self


class TicketReceipt(Response):
    ticket_id: Id
    agent_id: Id
    qa_score: Score
    csat: int
    resolved_at: UtcTime
    agent: AgentSnapshot = Field(description="The agent's team and tier at resolved_at")
    event_id: str = Field(description="Id of the work.ticket.resolved.v1 event")
    received_at: UtcTime
    duplicate: bool = Field(description="True when this ticket_id had been received before")
