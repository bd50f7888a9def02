"""The progress service (nameko name "progress"): unpack the request, call, answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from werkzeug.wrappers import Request

from contracts.api.progress import (
    AgentCreate,
    AgentList,
    AgentPatch,
    AgentQuery,
    AgentSummary,
    AttemptCreate,
    AttemptResult,
    CourseCreate,
    CourseList,
    CoursePatch,
    CourseProgressList,
    CourseProgressQuery,
    CourseQuery,
    EnrollmentCreate,
    FeedbackCreate,
    FeedbackResult,
    ModuleCompletion,
    TicketCreate,
)
from services.common.times import to_millis
from services.progress import handlers
from services.progress.config import ProgressSettings
from services.progress.metrics import ProgressCounters
from services.progress.rules_errors import Clash, Invalid, Missing, NotAllowed, Refused
from services.progress.store import (
    DOCUMENTS,
    courses_by_id,
    find_agent,
    find_course,
    find_enrollment,
    list_agents,
    list_courses,
    list_enrollments,
)
from services.progress.timing import event_time
from services.progress.views import agent_view, course_view, progress_view, ticket_view
from services.runtime import operations
from services.runtime.errors import BadRequest, Conflict, NotFound, RuleViolation
from services.runtime.http import http, parse_body, parse_query, require
from services.runtime.mongo import Mongo, UnitOfWork
from services.runtime.settings import ServiceSettings

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_STATUS = {Invalid: BadRequest, Missing: NotFound, Clash: Conflict, NotAllowed: RuleViolation}


@contextmanager
def answered() -> Iterator[None]:
    """A refusal of the rules as the HTTP error its kind calls for."""
    try:
        yield
    except Refused as refused:
        error = next(cls for kind, cls in _STATUS.items() if isinstance(refused, kind))
        raise error(str(refused)) from None


def caller(request: Request) -> str | None:
    """Who called, as the gateway says: recorded on changes, never used to authorise."""
    return request.headers.get("X-Caller-Sub")


def optional_body(request: Request, model: type[M]) -> M:
    """A body that may be left out entirely (then all defaults)."""
    if not request.get_data(cache=True):
        return model()
    return parse_body(request, model)


# The base class is reached through its module: `nameko run <module>` starts every class with
# entrypoints it finds at the top level of the module, and the base alone is no service.
class ProgressService(operations.OperationalEndpoints):
    name = "progress"
    db = Mongo(documents=DOCUMENTS)
    settings = ServiceSettings(ProgressSettings, "PROGRESS")
    counters = ProgressCounters()

    def _now(self) -> datetime:
        return to_millis(datetime.now(UTC))

    def _at(self, occurred_at: datetime | None, now: datetime) -> datetime:
        with answered():
            return event_time(occurred_at, now, timedelta(seconds=self.settings.clock_skew_seconds))

    def _run(self, work: Callable[[UnitOfWork], T]) -> T:
        with answered():
            return self.db.transaction(work)

    # --- roster ---------------------------------------------------------------------------

    @http("POST", "/v1/agents")
    def register_agent(self, request: Request) -> Any:
        body = parse_body(request, AgentCreate)
        now = self._now()
        at = self._at(body.occurred_at, now)
        agent = self._run(lambda uow: handlers.register_agent(uow, body, at, now, caller(request)))
        self.counters.count("agent_registered")
        return 201, agent_view(agent).model_dump(mode="json")

    @http("GET", "/v1/agents")
    def list_agents(self, request: Request) -> Any:
        query = parse_query(request, AgentQuery)
        total, agents = list_agents(
            self.db.db,
            team_id=query.team_id,
            tier=query.tier,
            limit=query.limit,
            offset=query.offset,
        )
        return AgentList(
            total=total,
            limit=query.limit,
            offset=query.offset,
            agents=[agent_view(agent) for agent in agents],
        ).model_dump(mode="json")

    @http("GET", "/v1/agents/<agent_id>")
    def get_agent(self, request: Request, agent_id: str) -> Any:
        agent = require(find_agent(self.db.db, agent_id), f"agent {agent_id!r}")
        return agent_view(agent).model_dump(mode="json")

    @http("PATCH", "/v1/agents/<agent_id>")
    def update_agent(self, request: Request, agent_id: str) -> Any:
        patch = parse_body(request, AgentPatch)
        now = self._now()
        at = self._at(patch.occurred_at, now)
        agent, changed = self._run(
            lambda uow: handlers.update_agent(uow, agent_id, patch, at, now, caller(request))
        )
        if changed:
            self.counters.count("agent_updated")
        return agent_view(agent).model_dump(mode="json")

    # --- catalogue ------------------------------------------------------------------------

    @http("POST", "/v1/courses")
    def create_course(self, request: Request) -> Any:
        body = parse_body(request, CourseCreate)
        now = self._now()
        course = self._run(lambda uow: handlers.create_course(uow, body, now, caller(request)))
        if course["published"]:
            self.counters.count("course_published")
        return 201, course_view(course).model_dump(mode="json")

    @http("GET", "/v1/courses")
    def list_courses(self, request: Request) -> Any:
        query = parse_query(request, CourseQuery)
        published = {"true": True, "false": False, "any": None}[query.published]
        total, courses = list_courses(
            self.db.db,
            tier=query.tier,
            dimension=query.dimension,
            tag=query.tag,
            published=published,
            limit=query.limit,
            offset=query.offset,
        )
        return CourseList(
            total=total,
            limit=query.limit,
            offset=query.offset,
            courses=[course_view(course) for course in courses],
        ).model_dump(mode="json")

    @http("GET", "/v1/courses/<course_id>")
    def get_course(self, request: Request, course_id: str) -> Any:
        course = require(find_course(self.db.db, course_id), f"course {course_id!r}")
        return course_view(course).model_dump(mode="json")

    @http("PATCH", "/v1/courses/<course_id>")
    def update_course(self, request: Request, course_id: str) -> Any:
        patch = parse_body(request, CoursePatch)
        now = self._now()
        course, announced = self._run(
            lambda uow: handlers.update_course(uow, course_id, patch, now, caller(request))
        )
        if announced:
            self.counters.count("course_updated")
        return course_view(course).model_dump(mode="json")

    @http("POST", "/v1/courses/<course_id>/publish")
    def publish_course(self, request: Request, course_id: str) -> Any:
        now = self._now()
        course, published = self._run(
            lambda uow: handlers.publish_course(uow, course_id, now, caller(request))
        )
        if published:
            self.counters.count("course_published")
        return course_view(course).model_dump(mode="json")

    # --- progress -------------------------------------------------------------------------

    def _courses(self, course_ids: list[str]) -> dict[str, dict]:
        """The courses of some enrolments; read-only (kept a moment for other readers)."""
        return self.db.recent("courses").get_many(
            course_ids, lambda missing: courses_by_id(self.db.db, missing)
        )

    def _progress(self, enrollment: dict) -> Any:
        course = require(find_course(self.db.db, enrollment["course_id"]), "course")
        return progress_view(enrollment, course)

    @http("POST", "/v1/agents/<agent_id>/enrollments")
    def enroll(self, request: Request, agent_id: str) -> Any:
        body = parse_body(request, EnrollmentCreate)
        at = self._at(body.occurred_at, self._now())
        enrollment = self._run(lambda uow: handlers.enroll(uow, agent_id, body.course_id, at))
        self.counters.count("enrolled")
        return 201, self._progress(enrollment).model_dump(mode="json")

    @http("GET", "/v1/agents/<agent_id>/courses")
    def list_progress(self, request: Request, agent_id: str) -> Any:
        query = parse_query(request, CourseProgressQuery)
        require(find_agent(self.db.db, agent_id), f"agent {agent_id!r}")
        return self._course_list(agent_id, query).model_dump(mode="json")

    @http("GET", "/v1/agents/<agent_id>/summary")
    def agent_summary(self, request: Request, agent_id: str) -> Any:
        query = parse_query(request, CourseProgressQuery)
        agent = require(find_agent(self.db.db, agent_id), f"agent {agent_id!r}")
        return AgentSummary(
            agent=agent_view(agent), courses=self._course_list(agent_id, query)
        ).model_dump(mode="json")

    def _course_list(self, agent_id: str, query: CourseProgressQuery) -> CourseProgressList:
        total, enrollments = list_enrollments(
            self.db.db, agent_id, status=query.status, limit=query.limit, offset=query.offset
        )
        courses = self._courses([e["course_id"] for e in enrollments])
        return CourseProgressList(
            agent_id=agent_id,
            total=total,
            limit=query.limit,
            offset=query.offset,
            courses=[progress_view(e, courses[e["course_id"]]) for e in enrollments],
        )

    @http("GET", "/v1/agents/<agent_id>/courses/<course_id>")
    def get_progress(self, request: Request, agent_id: str, course_id: str) -> Any:
        require(find_agent(self.db.db, agent_id), f"agent {agent_id!r}")
        require(find_course(self.db.db, course_id), f"course {course_id!r}")
        enrollment = require(
            find_enrollment(self.db.db, agent_id, course_id),
            f"enrolment of agent {agent_id!r} in course {course_id!r}",
        )
        return self._progress(enrollment).model_dump(mode="json")

    @http("POST", "/v1/agents/<agent_id>/courses/<course_id>/modules/<module_id>/complete")
    def complete_module(
        self, request: Request, agent_id: str, course_id: str, module_id: str
    ) -> Any:
        body = optional_body(request, ModuleCompletion)
        at = self._at(body.occurred_at, self._now())
        result = self._run(
            lambda uow: handlers.complete_module(uow, agent_id, course_id, module_id, at)
        )
        self.counters.count("module_completed")
        if result.step.course_completed is not None:
            self.counters.count("course_completed")
        return self._progress(result.enrollment).model_dump(mode="json")

    @http("POST", "/v1/agents/<agent_id>/courses/<course_id>/modules/<module_id>/attempts")
    def record_attempt(
        self, request: Request, agent_id: str, course_id: str, module_id: str
    ) -> Any:
        body = parse_body(request, AttemptCreate)
        at = self._at(body.occurred_at, self._now())
        result = self._run(
            lambda uow: handlers.record_attempt(uow, agent_id, course_id, module_id, body.score, at)
        )
        step = result.step
        attempt = step.attempt
        assert attempt is not None  # an attempt step always has one
        self.counters.count("assessment_graded")
        if attempt.passed:
            self.counters.count("assessment_passed")
        if step.module_completed:
            self.counters.count("module_completed")
        if step.course_completed is not None:
            self.counters.count("course_completed")
        return 201, AttemptResult(
            module_id=module_id,
            attempt=attempt.number,
            score=attempt.score,
            pass_score=step.module.pass_score or 0,
            passed=attempt.passed,
            module_completed=step.module_completed,
            course_completed=step.course_completed is not None,
            occurred_at=attempt.at,
            progress=self._progress(result.enrollment),
        ).model_dump(mode="json")

    @http("POST", "/v1/agents/<agent_id>/courses/<course_id>/feedback")
    def submit_feedback(self, request: Request, agent_id: str, course_id: str) -> Any:
        body = parse_body(request, FeedbackCreate)
        at = self._at(body.occurred_at, self._now())
        self._run(
            lambda uow: handlers.submit_feedback(
                uow, agent_id, course_id, body.rating, body.comment, at
            )
        )
        self.counters.count("feedback_submitted")
        return 201, FeedbackResult(
            agent_id=agent_id,
            course_id=course_id,
            rating=body.rating,
            comment=body.comment,
            submitted_at=at,
        ).model_dump(mode="json")

    # --- tickets --------------------------------------------------------------------------

    @http("POST", "/v1/tickets")
    def receive_ticket(self, request: Request) -> Any:
        body = parse_body(request, TicketCreate)
        now = self._now()
        resolved_at = self._at(body.resolved_at, now)
        ticket, duplicate = self._run(
            lambda uow: handlers.record_ticket(uow, body, resolved_at, now)
        )
        self.counters.count("ticket_duplicate" if duplicate else "ticket_received")
        return (200 if duplicate else 202), ticket_view(ticket, duplicate).model_dump(mode="json")
