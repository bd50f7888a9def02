"""Each state change of the progress service with its events, in one unit of work.

Functions `(uow, ...)` run inside `ServiceDatabase.transaction`: they read and write only
through the unit of work (they may run again on a write conflict) and queue their events
with `uow.publish`, so a change and its events commit together or not at all. A refusal
raises before anything is written, and the aborted transaction leaves no trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.errors import DuplicateKeyError

from contracts.api.progress import (
    AgentCreate,
    AgentPatch,
    CourseCreate,
    CoursePatch,
    TicketCreate,
)
from contracts.envelope import CloudEvent
from contracts.events import (
    AgentData,
    AgentRegistered,
    AgentUpdated,
    AgentUpdatedData,
    AssessmentGraded,
    AssessmentGradedData,
    CourseCompleted,
    CourseCompletedData,
    CourseData,
    CourseEnrolled,
    CourseEnrolledData,
    CoursePublished,
    CourseUpdated,
    FeedbackSubmitted,
    FeedbackSubmittedData,
    ModuleCompleted,
    ModuleCompletedData,
    ModuleData,
    TicketResolved,
    TicketResolvedData,
)
from contracts.vocabulary import AgentSnapshot
from services.progress import learning, roster
from services.progress.learning import Step
from services.progress.rules_errors import Clash, Missing, NotAllowed
from services.progress.store import (
    AGENTS,
    COURSES,
    TICKETS,
    change_document,
    changes_of,
    enrollment_from,
    find_agent,
    find_course,
    find_enrollment,
    find_ticket,
    insert_enrollment,
    module_defs,
    save_enrollment,
    update_by_id,
)
from services.runtime.mongo import UnitOfWork

SOURCE = "skillquest/progress"


def _event(cls: type[CloudEvent], subject: str, at: datetime, data: Any) -> Any:
    return cls.create(source=SOURCE, subject=subject, time=at, data=data)


def _agent(uow: UnitOfWork, agent_id: str) -> dict:
    agent = find_agent(uow.db, agent_id, uow.session)
    if agent is None:
        raise Missing(f"agent {agent_id!r} not found; register it with POST /v1/agents")
    return agent


def _course(uow: UnitOfWork, course_id: str) -> dict:
    course = find_course(uow.db, course_id, uow.session)
    if course is None:
        raise Missing(f"course {course_id!r} not found")
    return course


def snapshot(agent: dict, at: datetime) -> AgentSnapshot:
    """The agent as it was at `at` (effective-dated team and tier)."""
    values = roster.snapshot_at(changes_of(agent), at)
    return AgentSnapshot(agent_id=agent["_id"], team_id=values.team_id, tier=values.tier)


# --- roster -----------------------------------------------------------------------------


def register_agent(
    uow: UnitOfWork, body: AgentCreate, at: datetime, now: datetime, caller: str | None
) -> dict:
    document = {
        "_id": body.agent_id,
        "name": body.name,
        "team_id": body.team_id,
        "tier": body.tier,
        "registered_at": at,
        "updated_at": now,
        "revision": 1,
        "changes": [change_document(roster.registration(at, body.team_id, body.tier))],
        "created_by": caller,
        "updated_by": caller,
    }
    try:
        uow.collection(AGENTS).insert_one(document, session=uow.session)
    except DuplicateKeyError:
        raise Clash(
            f"agent {body.agent_id!r} is already registered; change it with "
            f"PATCH /v1/agents/{body.agent_id}"
        ) from None
    data = AgentData(agent_id=body.agent_id, name=body.name, team_id=body.team_id, tier=body.tier)
    uow.publish(_event(AgentRegistered, body.agent_id, at, data))
    return document


def update_agent(
    uow: UnitOfWork,
    agent_id: str,
    patch: AgentPatch,
    at: datetime,
    now: datetime,
    caller: str | None,
) -> tuple[dict, bool]:
    """The agent after the change, and whether anything changed."""
    agent = _agent(uow, agent_id)
    plan = roster.plan_update(
        name=agent["name"],
        registered_at=agent["registered_at"],
        changes=changes_of(agent),
        new_name=patch.name,
        new_team_id=patch.team_id,
        new_tier=patch.tier,
        at=at,
    )
    if not plan.changed:
        return agent, False  # nothing differs: no revision, no event
    fields: dict[str, Any] = {
        "name": plan.name,
        "team_id": plan.current.team_id,
        "tier": plan.current.tier,
        "updated_at": now,
        "updated_by": caller,
    }
    update: dict[str, Any] = {"$set": fields, "$inc": {"revision": 1}}
    if plan.change is not None:
        update["$push"] = {"changes": change_document(plan.change)}
    updated = update_by_id(uow.db, AGENTS, agent_id, update, uow.session)
    data = AgentUpdatedData(
        agent_id=agent_id,
        name=plan.name,
        team_id=plan.at_event_time.team_id,
        tier=plan.at_event_time.tier,
        changed=list(plan.changed),  # type: ignore[arg-type]
    )
    uow.publish(_event(AgentUpdated, agent_id, at, data))
    return updated, True


# --- catalogue --------------------------------------------------------------------------


def course_data(course: dict) -> CourseData:
    return CourseData(
        course_id=course["_id"],
        title=course["title"],
        tier=course["tier"],
        dimension=course["dimension"],
        credit_hours=course["credit_hours"],
        tags=course["tags"],
        modules=[ModuleData.model_validate(module) for module in course["modules"]],
        published=course["published"],
        revision=course["revision"],
    )


def create_course(uow: UnitOfWork, body: CourseCreate, now: datetime, caller: str | None) -> dict:
    document = {
        "_id": body.course_id,
        "title": body.title,
        "tier": body.tier,
        "dimension": body.dimension,
        "credit_hours": body.credit_hours,
        "tags": list(body.tags),
        "modules": [module.model_dump() for module in body.modules],
        "published": body.published,
        "revision": 1,
        "created_at": now,
        "updated_at": now,
        "published_at": now if body.published else None,
        "created_by": caller,
        "updated_by": caller,
    }
    try:
        uow.collection(COURSES).insert_one(document, session=uow.session)
    except DuplicateKeyError:
        raise Clash(
            f"course {body.course_id!r} already exists; change it with "
            f"PATCH /v1/courses/{body.course_id}"
        ) from None
    if body.published:
        uow.publish(_event(CoursePublished, body.course_id, now, course_data(document)))
    return document


def update_course(
    uow: UnitOfWork, course_id: str, patch: CoursePatch, now: datetime, caller: str | None
) -> tuple[dict, bool]:
    """The course after the change, and whether an update event was published."""
    course = _course(uow, course_id)
    changes = patch.model_dump(exclude_none=True)
    changed = {name: value for name, value in changes.items() if course.get(name) != value}
    if not changed:
        return course, False  # the same values again: no revision, no event
    updated = update_by_id(
        uow.db,
        COURSES,
        course_id,
        {"$set": {**changed, "updated_at": now, "updated_by": caller}, "$inc": {"revision": 1}},
        uow.session,
    )
    if not updated["published"]:  # a draft's edits are nobody's business until published
        return updated, False
    uow.publish(_event(CourseUpdated, course_id, now, course_data(updated)))
    return updated, True


def publish_course(
    uow: UnitOfWork, course_id: str, now: datetime, caller: str | None
) -> tuple[dict, bool]:
    """The course, and whether this call published it."""
    course = _course(uow, course_id)
    if course["published"]:
        return course, False  # publishing twice is a harmless retry: no new revision, no event
    updated = update_by_id(
        uow.db,
        COURSES,
        course_id,
        {
            "$set": {
                "published": True,
                "published_at": now,
                "updated_at": now,
                "updated_by": caller,
            },
            "$inc": {"revision": 1},
        },
        uow.session,
    )
    uow.publish(_event(CoursePublished, course_id, now, course_data(updated)))
    return updated, True


# --- progress ---------------------------------------------------------------------------


def enroll(uow: UnitOfWork, agent_id: str, course_id: str, at: datetime) -> dict:
    agent = _agent(uow, agent_id)
    course = _course(uow, course_id)
    if not course["published"]:
        raise NotAllowed(f"course {course_id!r} is not published yet: publish it first")
    enrollment = learning.enroll(agent_id, course_id, module_defs(course), at)
    try:
        document = insert_enrollment(uow.db, enrollment, uow.session)
    except DuplicateKeyError:
        raise Clash(f"agent {agent_id!r} is already enrolled in course {course_id!r}") from None
    data = CourseEnrolledData(agent=snapshot(agent, at), course_id=course_id)
    uow.publish(_event(CourseEnrolled, agent_id, at, data))
    return document


def _enrollment(uow: UnitOfWork, agent_id: str, course_id: str) -> tuple[dict, dict, dict]:
    agent = _agent(uow, agent_id)
    course = _course(uow, course_id)
    document = find_enrollment(uow.db, agent_id, course_id, uow.session)
    if document is None:
        raise NotAllowed(
            f"agent {agent_id!r} is not enrolled in course {course_id!r}: enrol first with "
            f'POST /v1/agents/{agent_id}/enrollments {{"course_id": "{course_id}"}}'
        )
    return agent, course, document


@dataclass(frozen=True)
class StepResult:
    step: Step
    enrollment: dict


def _publish_step(uow: UnitOfWork, agent: dict, course: dict, step: Step) -> None:
    """graded -> module completed -> course completed, in that order on the agent's key."""
    enrollment = step.enrollment
    agent_id = enrollment.agent_id
    module = step.module
    at_step = snapshot(agent, step.at)
    if step.attempt is not None:
        graded = AssessmentGradedData(
            agent=at_step,
            course_id=enrollment.course_id,
            module_id=module.module_id,
            module_kind=module.kind,  # type: ignore[arg-type]
            score=step.attempt.score,
            pass_score=module.pass_score or 0,
            passed=step.attempt.passed,
            attempt=step.attempt.number,
        )
        uow.publish(_event(AssessmentGraded, agent_id, step.at, graded))
    if step.module_completed:
        completed = ModuleCompletedData(
            agent=at_step,
            course_id=enrollment.course_id,
            module_id=module.module_id,
            module_kind=module.kind,  # type: ignore[arg-type]
            score=step.attempt.score if step.attempt is not None else None,
        )
        uow.publish(_event(ModuleCompleted, agent_id, step.at, completed))
    if step.course_completed is not None:
        at = step.course_completed.at
        data = CourseCompletedData(
            agent=snapshot(agent, at),
            course_id=enrollment.course_id,
            course_tier=course["tier"],
            dimension=course["dimension"],
            credit_hours=course["credit_hours"],
            tags=course["tags"],
            mean_best_score=step.course_completed.mean_best_score,
        )
        uow.publish(_event(CourseCompleted, agent_id, at, data))


def complete_module(
    uow: UnitOfWork, agent_id: str, course_id: str, module_id: str, at: datetime
) -> StepResult:
    agent, course, document = _enrollment(uow, agent_id, course_id)
    step = learning.complete_module(enrollment_from(document), module_id, at)
    saved = save_enrollment(uow.db, document, step.enrollment, uow.session)
    _publish_step(uow, agent, course, step)
    return StepResult(step, saved)


def record_attempt(
    uow: UnitOfWork, agent_id: str, course_id: str, module_id: str, score: int, at: datetime
) -> StepResult:
    agent, course, document = _enrollment(uow, agent_id, course_id)
    step = learning.record_attempt(enrollment_from(document), module_id, score, at)
    saved = save_enrollment(uow.db, document, step.enrollment, uow.session)
    _publish_step(uow, agent, course, step)
    return StepResult(step, saved)


def submit_feedback(
    uow: UnitOfWork, agent_id: str, course_id: str, rating: int, comment: str, at: datetime
) -> dict:
    agent, _course_doc, document = _enrollment(uow, agent_id, course_id)
    enrollment = learning.give_feedback(enrollment_from(document), rating, comment, at)
    saved = save_enrollment(uow.db, document, enrollment, uow.session)
    data = FeedbackSubmittedData(
        agent=snapshot(agent, at), course_id=course_id, rating=rating, comment=comment
    )
    uow.publish(_event(FeedbackSubmitted, agent_id, at, data))
    return saved


# --- tickets ----------------------------------------------------------------------------


def _same_ticket(document: dict, body: TicketCreate, resolved_at: datetime) -> bool:
    return (
        document["agent_id"] == body.agent_id
        and document["qa_score"] == body.qa_score
        and document["csat"] == body.csat
        and document["resolved_at"] == resolved_at
    )


def record_ticket(
    uow: UnitOfWork, body: TicketCreate, resolved_at: datetime, now: datetime
) -> tuple[dict, bool]:
    """The ticket's record and whether it had been received before (then nothing happens)."""
    existing = find_ticket(uow.db, body.ticket_id, uow.session)
    if existing is not None:
        if not _same_ticket(existing, body, resolved_at):
            raise Clash(
                f"ticket {body.ticket_id!r} was already received with different content "
                f"(agent {existing['agent_id']!r}, qa_score {existing['qa_score']}, csat "
                f"{existing['csat']}, resolved_at {existing['resolved_at'].isoformat()}); "
                "a ticket is reported once"
            )
        return existing, True
    agent = _agent(uow, body.agent_id)
    at_resolution = snapshot(agent, resolved_at)
    event = _event(
        TicketResolved,
        body.agent_id,
        resolved_at,
        TicketResolvedData(
            agent=at_resolution, ticket_id=body.ticket_id, qa_score=body.qa_score, csat=body.csat
        ),
    )
    document = {
        "_id": body.ticket_id,
        "agent_id": body.agent_id,
        "qa_score": body.qa_score,
        "csat": body.csat,
        "resolved_at": resolved_at,
        "agent": at_resolution.model_dump(),
        "event_id": event.id,
        "received_at": now,
    }
    uow.collection(TICKETS).insert_one(document, session=uow.session)
    uow.publish(event)
    return document, False
