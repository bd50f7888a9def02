"""The badge rules as plain functions on plain data (no I/O).

An event becomes *facts* (what the criterion of a badge needs to remember about one agent);
a badge is evaluated from all of an agent's facts for it, never from a running counter, so
the outcome is the same whatever order the events came in and however often.

Fact keys make redelivery harmless: a counted event is keyed by its id, an active day by
the local date, a closed period by its key, a completed course by its id, a credits
requirement by its target tier. Two facts with one key keep the earlier (event time).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from contracts.envelope import CloudEvent
from services.badges.definitions import BadgeDefinition, EventSelector
from services.common.periods import local_date


@dataclass(frozen=True)
class Fact:
    agent_id: str
    badge_id: str
    key: str
    event_id: str
    time: datetime
    #: The agent snapshot the event carried ({agent_id, team_id, tier}); None when it had none.
    snapshot: dict[str, Any] | None = None

    @property
    def order(self) -> tuple[datetime, str]:
        return (self.time, self.event_id)


@dataclass(frozen=True)
class Achievement:
    """A level of a badge whose criterion is met, and the event that met it."""

    agent_id: str
    badge_id: str
    level: str | None
    bonus_points: int
    time: datetime
    trigger_event_id: str
    evidence: tuple[str, ...]
    snapshot: dict[str, Any] | None


@dataclass(frozen=True)
class Progress:
    badge_id: str
    next_level: str | None
    current: int
    target: int
    unit: str


@dataclass(frozen=True)
class Catalog:
    """Published courses by tag, as the badges service knows the catalogue."""

    courses_by_tag: dict[str, frozenset[str]] = field(default_factory=dict)

    def required(self, tag: str) -> frozenset[str]:
        return self.courses_by_tag.get(tag, frozenset())


def earlier(a: Fact, b: Fact) -> Fact:
    return a if a.order <= b.order else b


def selector_of(definition: BadgeDefinition) -> EventSelector | None:
    criterion = definition.criterion
    if criterion.kind == "score_threshold":
        return criterion.selector()
    if criterion.kind in ("event_count", "streak_days"):
        return criterion.events
    return None


def event_types_of(definition: BadgeDefinition) -> frozenset[str]:
    """The event types that can give a badge facts."""
    selector = selector_of(definition)
    if selector is not None:
        return selector.event_types
    kind = definition.criterion.kind
    if kind == "top_n":
        return frozenset({"gamification.leaderboard.period_closed.v1"})
    if kind == "tagged_courses_completed":
        return frozenset({"learning.course.completed.v1"})
    return frozenset({"learning.credits.requirement_met.v1"})


def snapshot_of(event: CloudEvent) -> dict[str, Any] | None:
    agent = getattr(event.data, "agent", None)
    return agent.model_dump() if agent is not None else None


def facts_from_event(definition: BadgeDefinition, event: CloudEvent, tz: str) -> list[Fact]:
    """What `event` tells about the criterion of `definition`, per agent."""
    if event.type not in event_types_of(definition):
        return []
    criterion = definition.criterion
    data = event.data.model_dump(mode="json")
    snapshot = snapshot_of(event)

    def fact(agent_id: str, key: str, snap: dict[str, Any] | None = snapshot) -> Fact:
        return Fact(agent_id, definition.id, key, event.id, event.time, snap)

    if criterion.kind == "top_n":
        if data["period"] != criterion.period or data["scope"] != criterion.scope:
            return []
        return [
            fact(s["agent_id"], data["period_key"], None)
            for s in data["top"]
            if s["rank"] <= criterion.n
        ]
    if snapshot is None:
        return []
    agent_id = snapshot["agent_id"]
    if criterion.kind == "tagged_courses_completed":
        # Every completion is kept, tagged or not: a course may be tagged later, and then
        # the agents who completed it before have done what it asks.
        return [fact(agent_id, data["course_id"])]
    if criterion.kind == "credits_requirement_met":
        return [fact(agent_id, data["target_tier"])]
    selector = selector_of(definition)
    assert selector is not None
    if not selector.matches(event.type, data):
        return []
    if criterion.kind == "streak_days":
        return [fact(agent_id, local_date(event.time, tz).isoformat())]
    return [fact(agent_id, event.id)]


def evaluate(
    definition: BadgeDefinition,
    facts: Iterable[Fact],
    awarded: Iterable[str | None] = (),
    catalog: Catalog | None = None,
    cause: Fact | None = None,
) -> list[Achievement]:
    """The levels of `definition` that `facts` meet and that are not in `awarded`.

    `cause` is an event that is no fact of the agent but can complete the criterion (a
    catalogue change that drops a course from what complaint-master asks): when it is
    later than the facts, it is the event that met the criterion.
    """
    done = set(awarded)
    ordered = sorted(facts, key=lambda f: f.order)
    kind = definition.criterion.kind
    results: list[Achievement] = []
    for level in definition.levels:
        if level.level in done:
            continue
        met: tuple[Fact, Sequence[Fact]] | None
        if kind in ("event_count", "score_threshold"):
            met = _nth(ordered, level.threshold)
        elif kind == "streak_days":
            met = _first_streak(ordered, level.threshold)
        elif kind == "top_n":
            met = (ordered[0], ordered[:1]) if ordered else None
        elif kind == "tagged_courses_completed":
            tag = definition.criterion.tag  # type: ignore[union-attr]
            met = _all_tagged(ordered, (catalog or Catalog()).required(tag))
        else:
            met = _target_tier(ordered, level.target_tier)
        if met is None:
            continue
        trigger, evidence = met
        evidence_ids = [f.event_id for f in evidence]
        time, trigger_id, snapshot = trigger.time, trigger.event_id, trigger.snapshot
        if cause is not None and cause.order > trigger.order:
            time, trigger_id = cause.time, cause.event_id
            evidence_ids.append(cause.event_id)
        results.append(
            Achievement(
                agent_id=trigger.agent_id,
                badge_id=definition.id,
                level=level.level,
                bonus_points=level.bonus_points,
                time=time,
                trigger_event_id=trigger_id,
                evidence=tuple(dict.fromkeys(evidence_ids)),
                snapshot=snapshot,
            )
        )
    return results


def _nth(ordered: list[Fact], n: int) -> tuple[Fact, Sequence[Fact]] | None:
    """The Nth qualifying event in event-time order met the criterion."""
    return (ordered[n - 1], ordered[:n]) if len(ordered) >= n else None


def _days(ordered: Iterable[Fact]) -> list[tuple[date, Fact]]:
    return sorted((date.fromisoformat(f.key), f) for f in ordered)


def _first_streak(ordered: list[Fact], length: int) -> tuple[Fact, Sequence[Fact]] | None:
    """The first run of `length` consecutive days; met by the first event of its last day."""
    run: list[Fact] = []
    previous: date | None = None
    for day, fact in _days(ordered):
        if previous is not None and day == previous + timedelta(days=1):
            run.append(fact)
        else:
            run = [fact]
        previous = day
        if len(run) >= length:
            window = run[-length:]
            return window[-1], window
    return None


def current_streak(facts: Iterable[Fact]) -> int:
    """Consecutive days ending on the latest active day."""
    days = [day for day, _ in _days(facts)]
    if not days:
        return 0
    length = 1
    for later, earlier_day in zip(reversed(days), reversed(days[:-1]), strict=False):
        if later - earlier_day != timedelta(days=1):
            break
        length += 1
    return length


def _all_tagged(
    ordered: list[Fact], required: frozenset[str]
) -> tuple[Fact, Sequence[Fact]] | None:
    """Every required course completed: met by the last of those completions."""
    if not required:
        return None  # "at least one exists"
    completed = {f.key: f for f in ordered}
    if not required <= completed.keys():
        return None
    evidence = sorted((completed[c] for c in required), key=lambda f: f.order)
    return evidence[-1], evidence


def _target_tier(ordered: list[Fact], tier: str | None) -> tuple[Fact, Sequence[Fact]] | None:
    fact = next((f for f in ordered if f.key == tier), None)
    return (fact, [fact]) if fact else None


def progress(
    definition: BadgeDefinition,
    facts: Iterable[Fact],
    awarded: Iterable[str | None] = (),
    catalog: Catalog | None = None,
) -> Progress | None:
    """How far the agent is toward the lowest level not yet awarded (None: all awarded)."""
    done = set(awarded)
    pending = [lv for lv in definition.levels if lv.level not in done]
    if not pending:
        return None
    level = pending[0]
    facts = list(facts)
    kind = definition.criterion.kind
    if kind in ("event_count", "score_threshold"):
        count = min(len(facts), level.threshold)
        return Progress(definition.id, level.level, count, level.threshold, "events")
    if kind == "streak_days":
        streak = min(current_streak(facts), level.threshold)
        return Progress(definition.id, level.level, streak, level.threshold, "days")
    if kind == "tagged_courses_completed":
        required = (catalog or Catalog()).required(definition.criterion.tag)  # type: ignore[union-attr]
        completed = len(required & {f.key for f in facts})
        return Progress(definition.id, level.level, completed, len(required), "courses")
    if kind == "top_n":
        return Progress(definition.id, level.level, 0, 1, "periods")
    return Progress(definition.id, level.level, 0, 1, "requirements")
