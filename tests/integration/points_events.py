"""Events the points service consumes, built the way their producers build them, and a
small client for its HTTP API (shared by the points integration tests)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import requests

from contracts.events import (
    AgentData,
    AgentRegistered,
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
from contracts.topics import GAMIFICATION_POINTS
from contracts.vocabulary import AgentSnapshot
from tests.support.harness import EventBus, base_url


def snapshot(agent_id: str, team_id: str = "team-1", tier: str = "foundation") -> AgentSnapshot:
    return AgentSnapshot(agent_id=agent_id, team_id=team_id, tier=tier)


def module_completed(agent: AgentSnapshot, at: datetime, module_id: str = "m-1"):
    return ModuleCompleted.create(
        source="skillquest/progress",
        subject=agent.agent_id,
        time=at,
        data=ModuleCompletedData(
            agent=agent, course_id="c-1", module_id=module_id, module_kind="lesson"
        ),
    )


def assessment_graded(agent: AgentSnapshot, at: datetime, score: int, attempt: int):
    return AssessmentGraded.create(
        source="skillquest/progress",
        subject=agent.agent_id,
        time=at,
        data=AssessmentGradedData(
            agent=agent,
            course_id="c-1",
            module_id="q-1",
            module_kind="quiz",
            score=score,
            pass_score=80,
            passed=score >= 80,
            attempt=attempt,
        ),
    )


def course_completed(agent: AgentSnapshot, at: datetime, course_tier: str):
    return CourseCompleted.create(
        source="skillquest/progress",
        subject=agent.agent_id,
        time=at,
        data=CourseCompletedData(
            agent=agent,
            course_id="c-1",
            course_tier=course_tier,
            dimension="communication",
            credit_hours=2,
            tags=[],
            mean_best_score=90.0,
        ),
    )


def ticket_resolved(agent: AgentSnapshot, at: datetime, ticket_id: str, qa_score: int = 95):
    return TicketResolved.create(
        source="skillquest/progress",
        subject=agent.agent_id,
        time=at,
        data=TicketResolvedData(agent=agent, ticket_id=ticket_id, qa_score=qa_score, csat=5),
    )


def badge_awarded(agent: AgentSnapshot, at: datetime, bonus: int, badge_id: str = "first-steps"):
    return BadgeAwarded.create(
        source="skillquest/badges",
        subject=agent.agent_id,
        time=at,
        data=BadgeAwardedData(
            agent=agent, badge_id=badge_id, level=None, bonus_points=bonus, evidence=["e-1"]
        ),
    )


def agent_registered(agent: AgentSnapshot, at: datetime):
    return AgentRegistered.create(
        source="skillquest/progress",
        subject=agent.agent_id,
        time=at,
        data=AgentData(
            agent_id=agent.agent_id, name="Li Wei", team_id=agent.team_id, tier=agent.tier
        ),
    )


class PointsClient:
    def __init__(self, config: dict[str, Any]) -> None:
        self.url = base_url(config)

    def points(self, agent_id: str, **params: Any) -> dict[str, Any]:
        response = requests.get(
            f"{self.url}/v1/agents/{agent_id}/points", params=params, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def balance(self, agent_id: str) -> int:
        return int(self.points(agent_id)["balance"])

    def full_history(self, agent_id: str) -> list[dict[str, Any]]:
        entries, cursor = [], None
        while True:
            params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = self.points(agent_id, **params)
            entries.extend(page["history"])
            cursor = page["next_cursor"]
            if cursor is None:
                return entries

    def post(self, path: str, body: Any, **headers: str) -> requests.Response:
        return requests.post(f"{self.url}{path}", json=body, headers=headers, timeout=10)

    def put(self, path: str, body: Any) -> requests.Response:
        return requests.put(f"{self.url}{path}", json=body, timeout=10)

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=10)


def published_points_events(bus: EventBus, agent_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(Kafka key, event) of every points event about `agent_id`, in publication order."""
    records = bus.read_all(GAMIFICATION_POINTS)
    found = []
    for record in records:
        event = json.loads(record.value)
        if event["subject"] == agent_id:
            found.append((record.key.decode(), event))
    return found
