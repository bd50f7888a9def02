"""Event handlers: (event, unit of work, rules) -> the badges awarded, applied through the store.

Each runs inside one transaction with the handled-event record: facts, awards and the
`BadgeAwarded` events (outbox) commit together, so a redelivery changes nothing.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from contracts.envelope import CloudEvent
from contracts.events import BadgeAwarded, BadgeAwardedData, CoursePublished, CourseUpdated
from contracts.vocabulary import AgentSnapshot
from services.badges import store
from services.badges.criteria import (
    Achievement,
    Catalog,
    Fact,
    evaluate,
    facts_from_event,
    snapshot_of,
)
from services.badges.definitions import BadgeDefinition
from services.runtime.mongo import UnitOfWork

SOURCE = "skillquest/badges"
#: Award event ids derive from the award: the same award can only ever be one event.
AWARD_EVENT_NAMESPACE = uuid.UUID("0d7f4a9e-2b61-4c36-8f0e-9b8c51f7a2d3")


@dataclass(frozen=True)
class Rules:
    definitions: tuple[BadgeDefinition, ...]
    time_zone: str
    by_id: dict[str, BadgeDefinition] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {d.id: d for d in self.definitions})

    def tags(self, badge_ids: Any = None) -> set[str]:
        """Tags that the tagged-course badges (of `badge_ids`, default all) ask for."""
        return {
            d.criterion.tag  # type: ignore[union-attr]
            for d in self.definitions
            if d.criterion.kind == "tagged_courses_completed"
            and (badge_ids is None or d.id in badge_ids)
        }


def award_event(achieved: Achievement, snapshot: dict[str, Any]) -> BadgeAwarded:
    key = store.award_id(achieved.agent_id, achieved.badge_id, achieved.level)
    return BadgeAwarded(
        id=str(uuid.uuid5(AWARD_EVENT_NAMESPACE, key)),
        type=BadgeAwarded.TYPE,
        source=SOURCE,
        subject=achieved.agent_id,
        time=achieved.time,
        data=BadgeAwardedData(
            agent=AgentSnapshot.model_validate(snapshot),
            badge_id=achieved.badge_id,
            level=achieved.level,
            bonus_points=achieved.bonus_points,
            evidence=list(achieved.evidence),
        ),
    )


def handle_agent_event(event: CloudEvent, uow: UnitOfWork, rules: Rules) -> list[Achievement]:
    """A progress, ticket, credits or period-close event: new facts, then evaluation."""
    snapshot = snapshot_of(event)
    if snapshot is not None:
        store.remember_snapshot(uow, snapshot, event.time)
    per_agent: dict[str, dict[str, list[Fact]]] = defaultdict(lambda: defaultdict(list))
    for definition in rules.definitions:
        for fact in facts_from_event(definition, event, rules.time_zone):
            per_agent[fact.agent_id][fact.badge_id].append(fact)
    if snapshot is not None:
        # Badges met before any snapshot of this agent was known can be awarded now.
        state = store.agent_state(uow, snapshot["agent_id"]) or {}
        for badge_id in state.get("awaiting", []):
            if badge_id in rules.by_id:
                per_agent[snapshot["agent_id"]].setdefault(badge_id, [])
    achieved: list[Achievement] = []
    for agent_id in sorted(per_agent):
        achieved += evaluate_agent(uow, rules, agent_id, per_agent[agent_id])
    return achieved


def handle_catalog_event(
    event: CoursePublished | CourseUpdated, uow: UnitOfWork, rules: Rules
) -> list[Achievement]:
    """A course published or changed: keep the catalogue; when a tagged badge now asks for
    less (a course unpublished or untagged), agents may have met it with what they did."""
    course = event.data
    tags = rules.tags()
    courses = uow.collection(store.COURSES)
    before = store.catalog(courses, tags, uow.session)
    if not store.save_course(
        uow, course.course_id, course.revision, course.published, list(course.tags)
    ):
        return []  # an older revision, or this one again
    after = store.catalog(courses, tags, uow.session)
    achieved: list[Achievement] = []
    for definition in rules.definitions:
        if definition.criterion.kind != "tagged_courses_completed":
            continue
        tag = definition.criterion.tag
        if not (before.required(tag) - after.required(tag)) or not after.required(tag):
            continue  # requirements only grew (awards stay) or none is left to complete
        cause = Fact("", definition.id, course.course_id, event.id, event.time)
        for agent_id in sorted(store.agents_with_facts(uow, definition.id)):
            achieved += evaluate_agent(
                uow, rules, agent_id, {definition.id: []}, catalog=after, cause=cause
            )
    return achieved


def evaluate_agent(
    uow: UnitOfWork,
    rules: Rules,
    agent_id: str,
    new_facts: dict[str, list[Fact]],
    catalog: Catalog | None = None,
    cause: Fact | None = None,
) -> list[Achievement]:
    """Stores `new_facts` and awards every level the agent's facts now meet, once."""
    awarded = store.awarded_levels(uow.collection(store.AWARDS), agent_id, uow.session)
    tags = rules.tags(new_facts.keys())
    if catalog is None and tags:
        catalog = store.catalog(uow.collection(store.COURSES), tags, uow.session)
    state: dict[str, Any] | None = None
    awaiting: set[str] = set()
    achieved: list[Achievement] = []
    for badge_id, facts in new_facts.items():
        definition = rules.by_id[badge_id]
        if set(definition.level_names) <= awarded[badge_id]:
            continue  # every level awarded: nothing left to remember
        for fact in facts:
            store.save_fact(uow, fact)
        known = store.facts_of(uow.collection(store.FACTS), agent_id, badge_id, uow.session)
        for met in evaluate(definition, known, awarded[badge_id], catalog, cause):
            snapshot = met.snapshot
            if snapshot is None:
                if state is None:
                    state = store.agent_state(uow, agent_id) or {}
                snapshot = state.get("snapshot")
            if not snapshot:
                awaiting.add(badge_id)  # e.g. a period close for an agent not seen yet
                continue
            event = award_event(met, snapshot)
            store.insert_award(uow, met, snapshot, event.id)
            uow.publish(event)
            achieved.append(met)
    # Badges evaluated here are settled unless they still lack a snapshot.
    if state is None:
        state = store.agent_state(uow, agent_id) or {}
    before = set(state.get("awaiting", []))
    remaining = (before - set(new_facts)) | awaiting
    if remaining != before:
        store.set_awaiting(uow, agent_id, remaining)
    return achieved
