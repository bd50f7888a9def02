"""The event stream: a roster, a catalogue, and for each agent a realistic run of learning
and ticket events, as the progress service would publish them (valid CloudEvents of the
contracts' models, each carrying the agent snapshot), in event-time order per agent.

All event times fall in the current ISO week (and month) of the configured time zone, so
no period closes while the benchmark runs and the expected boards are exactly computable.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from contracts.envelope import CloudEvent
from contracts.events import (
    AgentData,
    AgentRegistered,
    AssessmentGraded,
    AssessmentGradedData,
    CourseCompleted,
    CourseCompletedData,
    CourseData,
    CourseEnrolled,
    CourseEnrolledData,
    CoursePublished,
    FeedbackSubmitted,
    FeedbackSubmittedData,
    ModuleCompleted,
    ModuleCompletedData,
    ModuleData,
    TicketResolved,
    TicketResolvedData,
)
from contracts.topics import TOPIC_OF_TYPE
from contracts.vocabulary import DIMENSIONS, TIERS, AgentSnapshot
from services.common.periods import month_key, period_bounds, week_key

SOURCE = "skillquest/progress"
TICKET_SOURCE = "skillquest/progress"
AGENTS_PER_TEAM = 10
TIER_WEIGHTS = (0.6, 0.3, 0.1)


@dataclass(frozen=True)
class Message:
    """One Kafka record to send: the parsed event (for the expected results) and its bytes."""

    topic: str
    key: str
    value: bytes
    event: CloudEvent


def message(event: CloudEvent) -> Message:
    return Message(TOPIC_OF_TYPE[event.type], event.subject, event.to_json_bytes(), event)


def millis(moment: datetime) -> datetime:
    """MongoDB keeps milliseconds: events carry no finer time, so stored == expected."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def current_window(now: datetime, tz: str) -> tuple[datetime, datetime]:
    """[start, end) inside both the current local week and month, ending a second ago."""
    week_start, _ = period_bounds(week_key(now, tz), tz)
    month_start, _ = period_bounds(month_key(now, tz), tz)
    return max(week_start, month_start), now - timedelta(seconds=1)


def catalogue(published_at: datetime) -> list[CourseData]:
    """Nine courses, one per tier and dimension, with quizzes, role-plays and two tags."""
    courses = []
    for t, tier in enumerate(TIERS):
        for d, dimension in enumerate(DIMENSIONS):
            tags = ["complaint-handling"] if (t, d) in ((0, 0), (1, 0)) else []
            if tier == "advanced" and dimension == "communication":
                tags.append("coaching")
            assessed = "roleplay" if dimension == "communication" else "quiz"
            modules = [
                ModuleData(module_id="m1", kind="lesson", title="Introduction"),
                ModuleData(module_id="m2", kind=assessed, title="Check", pass_score=80),
                ModuleData(module_id="m3", kind="practice", title="On the floor"),
            ]
            courses.append(
                CourseData(
                    course_id=f"c-{tier}-{dimension}".replace("_", "-"),
                    title=f"{dimension.replace('_', ' ').title()} ({tier})",
                    tier=tier,
                    dimension=dimension,
                    credit_hours=4.0 + t * 2,
                    tags=tags,
                    modules=modules,
                    published=True,
                    revision=1,
                )
            )
    return courses


class Workload:
    """Deterministic for a seed: the same agents, teams, tiers and activity each run."""

    def __init__(self, tz: str, seed: int, now: datetime | None = None) -> None:
        self.tz = tz
        self.seed = seed
        self.now = millis(now or datetime.now(UTC))
        self.window = current_window(self.now, tz)
        self.courses = catalogue(self.window[0] - timedelta(days=2))

    def _id(self, rng: random.Random) -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def agent(self, prefix: str, index: int) -> AgentData:
        rng = random.Random(f"{self.seed}:{prefix}:{index}")
        tier = rng.choices(TIERS, TIER_WEIGHTS)[0]
        team = f"{prefix}team-{index // AGENTS_PER_TEAM:05d}"
        return AgentData(
            agent_id=f"{prefix}{index:06d}", name=f"Agent {prefix}{index}", team_id=team, tier=tier
        )

    def catalogue_events(self) -> list[Message]:
        at = self.window[0] - timedelta(days=2)
        rng = random.Random(f"{self.seed}:catalogue")
        return [
            message(
                CoursePublished(
                    id=self._id(rng), source=SOURCE, time=at, subject=course.course_id, data=course
                )
            )
            for course in self.courses
        ]

    def roster_events(self, prefix: str, count: int) -> list[Message]:
        return self.registrations(prefix, range(count))

    def registrations(self, prefix: str, indexes: Iterable[int]) -> list[Message]:
        """The roster's events for the agents `prefix` + index, a day before the window."""
        at = self.window[0] - timedelta(days=1)
        rng = random.Random(f"{self.seed}:roster:{prefix}")
        return [
            message(
                AgentRegistered(
                    id=self._id(rng), source=SOURCE, time=at, subject=agent.agent_id, data=agent
                )
            )
            for agent in (self.agent(prefix, i) for i in indexes)
        ]

    def activity(self, prefix: str, count: int) -> list[Message]:
        """Every agent's learning and ticket events, merged in event-time order."""
        events = [m for i in range(count) for m in self.agent_activity(prefix, i)]
        events.sort(key=lambda m: m.event.time)  # stable: one agent's order is kept
        return events

    def agent_activity(self, prefix: str, index: int) -> Iterator[Message]:
        agent = self.agent(prefix, index)
        rng = random.Random(f"{self.seed}:activity:{prefix}:{index}")
        snapshot = AgentSnapshot(agent_id=agent.agent_id, team_id=agent.team_id, tier=agent.tier)
        start, end = self.window
        span = (end - start).total_seconds()
        clock = start + timedelta(seconds=rng.uniform(0, span * 0.7))
        step = span * 0.3 / 12

        def tick() -> datetime:
            nonlocal clock
            clock = min(clock + timedelta(seconds=rng.uniform(0.2, 1.0) * step), end)
            return millis(clock)

        def event(cls: type[CloudEvent], data: Any) -> Message:
            return message(
                cls(
                    id=self._id(rng),
                    type=cls.TYPE,
                    source=SOURCE,
                    time=tick(),
                    subject=agent.agent_id,
                    data=data,
                )
            )

        tickets = rng.choice((0, 1, 1, 2, 3))
        if rng.random() < 0.85:
            yield from self._course_run(rng, agent, snapshot, event)
        for _ in range(tickets):
            qa = rng.choice((70, 85, 90, 92, 95, 98, 100))
            data = TicketResolvedData(
                agent=snapshot,
                ticket_id=f"tk-{self._id(rng)[:18]}",
                qa_score=qa,
                csat=rng.randint(3, 5),
            )
            yield event(TicketResolved, data)

    def _course_run(
        self, rng: random.Random, agent: AgentData, snapshot: AgentSnapshot, event: Any
    ) -> Iterator[Message]:
        """Enrol in a course of the agent's tier, work through its modules (the assessed one
        may take attempts), sometimes stop halfway; complete it, sometimes rate it."""
        course = rng.choice([c for c in self.courses if c.tier == agent.tier])
        yield event(CourseEnrolled, CourseEnrolledData(agent=snapshot, course_id=course.course_id))
        best: list[int] = []
        for module in course.modules:
            if rng.random() < 0.1:
                return  # abandoned
            score = None
            if module.pass_score is not None:
                for attempt in range(1, 4):
                    score = rng.choice((60, 75, 85, 90, 95, 100))
                    passed = score >= module.pass_score
                    yield event(
                        AssessmentGraded,
                        AssessmentGradedData(
                            agent=snapshot,
                            course_id=course.course_id,
                            module_id=module.module_id,
                            module_kind=module.kind,
                            score=score,
                            pass_score=module.pass_score,
                            passed=passed,
                            attempt=attempt,
                        ),
                    )
                    if passed:
                        break
                else:
                    return  # failed three times: comes back another week
                best.append(score)
            yield event(
                ModuleCompleted,
                ModuleCompletedData(
                    agent=snapshot,
                    course_id=course.course_id,
                    module_id=module.module_id,
                    module_kind=module.kind,
                    score=score,
                ),
            )
        completed = event(
            CourseCompleted,
            CourseCompletedData(
                agent=snapshot,
                course_id=course.course_id,
                course_tier=course.tier,
                dimension=course.dimension,
                credit_hours=course.credit_hours,
                tags=course.tags,
                mean_best_score=sum(best) / len(best) if best else None,
            ),
        )
        yield completed
        if rng.random() < 0.4:
            yield event(
                FeedbackSubmitted,
                FeedbackSubmittedData(
                    agent=snapshot,
                    course_id=course.course_id,
                    rating=rng.randint(3, 5),
                    comment="useful",
                ),
            )

    def probe(self, prefix: str, index: int, at: datetime) -> Message:
        """The first activity of agent `prefix` + index, a module completion: 10 points on
        the boards."""
        agent = self.agent(prefix, index)
        agent_id = agent.agent_id
        rng = random.Random(f"{self.seed}:probe:{agent_id}")
        snapshot = AgentSnapshot(agent_id=agent_id, team_id=agent.team_id, tier=agent.tier)
        course = next(c for c in self.courses if c.tier == agent.tier)
        lesson = course.modules[0]  # a lesson: no score to pass
        data = ModuleCompletedData(
            agent=snapshot,
            course_id=course.course_id,
            module_id=lesson.module_id,
            module_kind=lesson.kind,
        )
        return message(
            ModuleCompleted(
                id=self._id(rng), source=SOURCE, time=millis(at), subject=agent_id, data=data
            )
        )
