"""Progress rules: module completion, numbered attempts, course completion, feedback.

Plain functions on plain data. An enrolment pins the modules the course had when the agent
enrolled: a later edit of the course does not move the goalposts of a learner half-way
through (later enrolments get the new modules).

Decisions where ARCHITECTURE §4 is silent:
- Attempts are numbered per module in the order they are recorded (1, 2, ...), also after a
  pass: a learner may practise, and every attempt is graded and published.
- The best score of a module is its highest attempt score, whenever it was made. The
  course's `mean_best_score` is taken when the course completes and then frozen: it was
  published on `learning.course.completed.v1`, so the progress view shows that same value
  while `best_score` per module keeps following later attempts.
- A course completes at the time of the module completion that finished it: the latest
  completion time of its modules. With calls in time order that is the finishing call's
  time; with an imported history sent out of order it is still the moment the last module
  was really done.
- Progress cannot be dated before the enrolment, feedback not before the completion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from services.progress.rules_errors import Clash, Invalid, Missing, NotAllowed

ASSESSED = frozenset({"quiz", "roleplay"})


@dataclass(frozen=True)
class ModuleDef:
    module_id: str
    kind: str
    title: str
    pass_score: int | None = None

    @property
    def assessed(self) -> bool:
        return self.kind in ASSESSED


@dataclass(frozen=True)
class Attempt:
    number: int
    score: int
    passed: bool
    at: datetime


@dataclass(frozen=True)
class ModuleState:
    completed_at: datetime | None = None
    attempts: tuple[Attempt, ...] = ()

    @property
    def completed(self) -> bool:
        return self.completed_at is not None

    @property
    def best_score(self) -> int | None:
        return max((attempt.score for attempt in self.attempts), default=None)


@dataclass(frozen=True)
class FeedbackGiven:
    rating: int
    comment: str
    at: datetime


@dataclass(frozen=True)
class Enrollment:
    agent_id: str
    course_id: str
    enrolled_at: datetime
    modules: tuple[ModuleDef, ...]
    states: Mapping[str, ModuleState] = field(default_factory=dict)
    completed_at: datetime | None = None
    mean_best_score: float | None = None
    feedback: FeedbackGiven | None = None

    def module(self, module_id: str) -> ModuleDef:
        for module in self.modules:
            if module.module_id == module_id:
                return module
        raise Missing(
            f"module {module_id!r} not found in course {self.course_id!r} "
            f"(its modules: {', '.join(m.module_id for m in self.modules)})"
        )

    def state(self, module_id: str) -> ModuleState:
        return self.states.get(module_id, ModuleState())

    @property
    def modules_done(self) -> int:
        return sum(1 for module in self.modules if self.state(module.module_id).completed)

    @property
    def completed(self) -> bool:
        return self.completed_at is not None


@dataclass(frozen=True)
class Completion:
    """The course completed by this step: when, and the mean of the best scores."""

    at: datetime
    mean_best_score: float | None


@dataclass(frozen=True)
class Step:
    """The outcome of one progress call, for the store and the events."""

    enrollment: Enrollment
    module: ModuleDef
    at: datetime
    attempt: Attempt | None = None
    module_completed: bool = False
    course_completed: Completion | None = None


def enroll(
    agent_id: str, course_id: str, modules: tuple[ModuleDef, ...], at: datetime
) -> Enrollment:
    if not modules:
        raise NotAllowed(f"course {course_id!r} has no modules to take")
    return Enrollment(agent_id=agent_id, course_id=course_id, enrolled_at=at, modules=modules)


def mean_best_score(
    modules: tuple[ModuleDef, ...], states: Mapping[str, ModuleState]
) -> float | None:
    """Mean of the best scores of the assessed modules (2 decimals); None when none is."""
    best = [
        state.best_score
        for module in modules
        if module.assessed
        and (state := states.get(module.module_id)) is not None
        and state.best_score is not None
    ]
    if not best:
        return None
    return round(sum(best) / len(best), 2)


def _not_before_enrolment(enrollment: Enrollment, at: datetime) -> None:
    if at < enrollment.enrolled_at:
        raise NotAllowed(
            f"occurred_at {at.isoformat()} is before the enrolment in {enrollment.course_id!r} "
            f"at {enrollment.enrolled_at.isoformat()}: progress cannot precede it"
        )


def _with_state(enrollment: Enrollment, module_id: str, state: ModuleState) -> Enrollment:
    return replace(enrollment, states={**enrollment.states, module_id: state})


def _completion(enrollment: Enrollment) -> tuple[Enrollment, Completion | None]:
    """Completes the course when this step finished its last module (once only)."""
    if enrollment.completed or enrollment.modules_done < len(enrollment.modules):
        return enrollment, None
    finished_at = max(
        enrollment.state(module.module_id).completed_at or enrollment.enrolled_at
        for module in enrollment.modules
    )
    completion = Completion(
        at=finished_at, mean_best_score=mean_best_score(enrollment.modules, enrollment.states)
    )
    done = replace(
        enrollment, completed_at=completion.at, mean_best_score=completion.mean_best_score
    )
    return done, completion


def complete_module(enrollment: Enrollment, module_id: str, at: datetime) -> Step:
    """A lesson or practice module done by a plain call."""
    module = enrollment.module(module_id)
    if module.assessed:
        raise NotAllowed(
            f"module {module_id!r} is a {module.kind}: it is completed by a passing attempt; "
            f'POST .../modules/{module_id}/attempts with {{"score": 0-100}} instead'
        )
    state = enrollment.state(module_id)
    if state.completed:
        raise Clash(
            f"module {module_id!r} was already completed at {state.completed_at.isoformat()}"  # type: ignore[union-attr]
        )
    _not_before_enrolment(enrollment, at)
    updated = _with_state(enrollment, module_id, replace(state, completed_at=at))
    updated, completion = _completion(updated)
    return Step(updated, module, at, module_completed=True, course_completed=completion)


def record_attempt(enrollment: Enrollment, module_id: str, score: int, at: datetime) -> Step:
    """A scored attempt at a quiz or roleplay; it completes the module at score >= pass."""
    module = enrollment.module(module_id)
    if not module.assessed:
        raise NotAllowed(
            f"module {module_id!r} is a {module.kind}: it has no score; "
            f"POST .../modules/{module_id}/complete instead"
        )
    if not 0 <= score <= 100:
        raise Invalid(f"score {score} is outside 0..100")
    _not_before_enrolment(enrollment, at)
    state = enrollment.state(module_id)
    pass_score = module.pass_score if module.pass_score is not None else 0
    attempt = Attempt(
        number=len(state.attempts) + 1, score=score, passed=score >= pass_score, at=at
    )
    completes = attempt.passed and not state.completed
    new_state = ModuleState(
        completed_at=at if completes else state.completed_at,
        attempts=(*state.attempts, attempt),
    )
    updated = _with_state(enrollment, module_id, new_state)
    completion = None
    if completes:
        updated, completion = _completion(updated)
    return Step(
        updated,
        module,
        at,
        attempt=attempt,
        module_completed=completes,
        course_completed=completion,
    )


def give_feedback(enrollment: Enrollment, rating: int, comment: str, at: datetime) -> Enrollment:
    """Kirkpatrick level 1: once per enrolment, after the course completed."""
    if not enrollment.completed:
        raise NotAllowed(
            f"feedback comes after completion: course {enrollment.course_id!r} is not "
            f"completed ({enrollment.modules_done} of {len(enrollment.modules)} modules done)"
        )
    if enrollment.feedback is not None:
        raise Clash(
            f"feedback on {enrollment.course_id!r} was already submitted at "
            f"{enrollment.feedback.at.isoformat()}"
        )
    if not 1 <= rating <= 5:
        raise Invalid(f"rating {rating} is outside 1..5")
    if enrollment.completed_at is not None and at < enrollment.completed_at:
        raise NotAllowed(
            f"occurred_at {at.isoformat()} is before the course completed at "
            f"{enrollment.completed_at.isoformat()}"
        )
    return replace(enrollment, feedback=FeedbackGiven(rating=rating, comment=comment, at=at))
