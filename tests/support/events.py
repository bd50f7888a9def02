"""Events the tests publish, built as their producers build them (one builder per type;
the tests name only what their case is about)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from contracts.events import (
    AgentData,
    AgentRegistered,
    AgentUpdated,
    AgentUpdatedData,
    AssessmentGraded,
    AssessmentGradedData,
    BadgeAwarded,
    BadgeAwardedData,
    CourseCompleted,
    CourseCompletedData,
    ModuleCompleted,
    ModuleCompletedData,
    TicketResolved,
    TicketResolvedData,
)
from contracts.vocabulary import AgentSnapshot

PROGRESS = "skillquest/progress"


def snapshot(agent_id: str, team_id: str = "team-1", tier: str = "foundation") -> AgentSnapshot:
    return AgentSnapshot(agent_id=agent_id, team_id=team_id, tier=tier)


def module_completed(
    agent: AgentSnapshot,
    at: datetime,
    module_id: str = "m-1",
    course_id: str = "c-1",
    module_kind: str = "lesson",
) -> ModuleCompleted:
    return ModuleCompleted.create(
        source=PROGRESS,
        subject=agent.agent_id,
        time=at,
        data=ModuleCompletedData(
            agent=agent, course_id=course_id, module_id=module_id, module_kind=module_kind
        ),
    )


def assessment_graded(
    agent: AgentSnapshot,
    at: datetime,
    score: int,
    attempt: int,
    course_id: str = "c-1",
    module_id: str = "q-1",
    passed: bool | None = None,
) -> AssessmentGraded:
    """`passed` as the score says against the pass score of 80, unless given."""
    return AssessmentGraded.create(
        source=PROGRESS,
        subject=agent.agent_id,
        time=at,
        data=AssessmentGradedData(
            agent=agent,
            course_id=course_id,
            module_id=module_id,
            module_kind="quiz",
            score=score,
            pass_score=80,
            passed=score >= 80 if passed is None else passed,
            attempt=attempt,
        ),
    )


def course_completed(
    agent: AgentSnapshot,
    at: datetime,
    course_tier: str = "foundation",
    course_id: str = "c-1",
    tags: Iterable[str] = (),
    mean_best_score: float | None = 90.0,
) -> CourseCompleted:
    return CourseCompleted.create(
        source=PROGRESS,
        subject=agent.agent_id,
        time=at,
        data=CourseCompletedData(
            agent=agent,
            course_id=course_id,
            course_tier=course_tier,
            dimension="communication",
            credit_hours=2,
            tags=list(tags),
            mean_best_score=mean_best_score,
        ),
    )


def ticket_resolved(
    agent: AgentSnapshot, at: datetime, ticket_id: str, qa_score: int = 95, csat: int = 5
) -> TicketResolved:
    return TicketResolved.create(
        source=PROGRESS,
        subject=agent.agent_id,
        time=at,
        data=TicketResolvedData(agent=agent, ticket_id=ticket_id, qa_score=qa_score, csat=csat),
    )


def ticket(agent_id: str, ticket_id: str, qa_score: int = 95, csat: int = 4) -> TicketResolved:
    """A ticket resolved now by `agent_id` of team-1, a foundation agent."""
    return ticket_resolved(snapshot(agent_id), datetime.now(UTC), ticket_id, qa_score, csat)


def badge_awarded(
    agent: AgentSnapshot,
    at: datetime,
    bonus: int,
    badge_id: str = "first-steps",
    level: str | None = None,
) -> BadgeAwarded:
    return BadgeAwarded.create(
        source="skillquest/badges",
        subject=agent.agent_id,
        time=at,
        data=BadgeAwardedData(
            agent=agent, badge_id=badge_id, level=level, bonus_points=bonus, evidence=["e-1"]
        ),
    )


def agent_registered(agent: AgentSnapshot, at: datetime, name: str = "Li Wei") -> AgentRegistered:
    return AgentRegistered.create(
        source=PROGRESS,
        subject=agent.agent_id,
        time=at,
        data=AgentData(agent_id=agent.agent_id, name=name, team_id=agent.team_id, tier=agent.tier),
    )


def agent_updated(
    agent: AgentSnapshot, at: datetime, *, changed: list[str], name: str = "Li Wei"
) -> AgentUpdated:
    """The roster's update of `agent` (its team and tier as given) at `at`."""
    return AgentUpdated.create(
        source=PROGRESS,
        subject=agent.agent_id,
        time=at,
        data=AgentUpdatedData(
            agent_id=agent.agent_id,
            name=name,
            team_id=agent.team_id,
            tier=agent.tier,
            changed=changed,
        ),
    )
