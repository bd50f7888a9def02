"""Event builders shared by the credits service's integration tests."""

from __future__ import annotations

from datetime import datetime

from contracts.events import (
    AgentData,
    AgentRegistered,
    AgentUpdated,
    AgentUpdatedData,
    CourseCompleted,
    CourseCompletedData,
    CourseData,
    CoursePublished,
    ModuleData,
)
from contracts.vocabulary import AgentSnapshot

SOURCE = "skillquest/test"


def registered(agent_id: str, at: datetime, tier: str = "foundation", team: str = "team-1"):
    return AgentRegistered.create(
        source=SOURCE,
        subject=agent_id,
        time=at,
        data=AgentData(agent_id=agent_id, name=f"Agent {agent_id}", team_id=team, tier=tier),
    )


def promoted(agent_id: str, at: datetime, tier: str, team: str = "team-1"):
    return AgentUpdated.create(
        source=SOURCE,
        subject=agent_id,
        time=at,
        data=AgentUpdatedData(
            agent_id=agent_id, name=f"Agent {agent_id}", team_id=team, tier=tier, changed=["tier"]
        ),
    )


def completed(
    agent_id: str,
    course_id: str,
    at: datetime,
    dimension: str,
    hours: float,
    tags: tuple[str, ...] = (),
    tier: str = "foundation",
    team: str = "team-1",
):
    return CourseCompleted.create(
        source=SOURCE,
        subject=agent_id,
        time=at,
        data=CourseCompletedData(
            agent=AgentSnapshot(agent_id=agent_id, team_id=team, tier=tier),
            course_id=course_id,
            course_tier="foundation",
            dimension=dimension,
            credit_hours=hours,
            tags=list(tags),
            mean_best_score=None,
        ),
    )


def published(
    course_id: str,
    at: datetime,
    dimension: str,
    hours: float,
    tier: str = "foundation",
    tags: tuple[str, ...] = (),
    revision: int = 1,
    is_published: bool = True,
):
    return CoursePublished.create(
        source=SOURCE,
        subject=course_id,
        time=at,
        data=CourseData(
            course_id=course_id,
            title=f"Course {course_id}",
            tier=tier,
            dimension=dimension,
            credit_hours=hours,
            tags=list(tags),
            modules=[ModuleData(module_id="m1", kind="lesson", title="Lesson")],
            published=is_published,
            revision=revision,
        ),
    )
