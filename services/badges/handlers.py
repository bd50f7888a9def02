"""Event handlers: (events, unit of work, rules) -> the badges awarded, applied through the store.

Each runs inside one transaction with the handled-event record: facts, awards and the
`BadgeAwarded` events (outbox) commit together, so a redelivery changes nothing.

`handle_agent_events` handles a polled batch with a number of statements that does not grow
with it: it loads what the batch's agents need, applies the events one by one in memory as
`handle_agent_event` applies one to the database, and writes the outcome in bulk. Every
learning and ticket event reaches badges, and the database's cost per statement, not per
document, is what limits it. The per-event handler stays as the reference the batch must
equal (tests compare them on random streams).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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


def facts_by_agent(event: CloudEvent, rules: Rules) -> dict[str, dict[str, list[Fact]]]:
    """What `event` tells about each badge (in definition order), per agent."""
    per_agent: dict[str, dict[str, list[Fact]]] = {}
    for definition in rules.definitions:
        for fact in facts_from_event(definition, event, rules.time_zone):
            per_agent.setdefault(fact.agent_id, {}).setdefault(fact.badge_id, []).append(fact)
    return per_agent


def handle_agent_event(event: CloudEvent, uow: UnitOfWork, rules: Rules) -> list[Achievement]:
    """A progress, ticket, credits or period-close event: new facts, then evaluation."""
    snapshot = snapshot_of(event)
    if snapshot is not None:
        store.remember_snapshot(uow, snapshot, event.time)
    per_agent = facts_by_agent(event, rules)
    if snapshot is not None:
        # Badges met before any snapshot of this agent was known can be awarded now.
        state = store.agent_state(uow, snapshot["agent_id"]) or {}
        for badge_id in state.get("awaiting", []):
            if badge_id in rules.by_id:
                per_agent.setdefault(snapshot["agent_id"], {}).setdefault(badge_id, [])
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


# --- a batch of agent events --------------------------------------------------------------


def handle_agent_events(
    uow: UnitOfWork, events: Sequence[CloudEvent], rules: Rules
) -> list[Achievement]:
    """The events of a batch, with what `handle_agent_event` gives for each in turn.

    Reads: the agents' states and awarded levels, their facts of the badges the batch
    touches (per badge), each in slices of agents (store.AGENTS_PER_QUERY), and the
    catalogue when a tagged badge is among them. Writes: facts, awards and agent states,
    one bulk write each. In between, the events apply in order to those documents in memory
    as `handle_agent_event` applies each to the database, so every award carries the
    snapshot, time and evidence it would have had with the events handled one by one.
    """
    arrived = [(event, snapshot_of(event), facts_by_agent(event, rules)) for event in events]
    book = _Book.load(uow, rules, arrived)
    achieved: list[Achievement] = []
    for event, snapshot, per_agent in arrived:
        achieved += book.apply(event, snapshot, per_agent)
    book.save()
    return achieved


_Arrival = tuple[CloudEvent, dict[str, Any] | None, dict[str, dict[str, list[Fact]]]]


@dataclass
class _Book:
    """The documents a batch reads and writes, held in memory while its events apply."""

    uow: UnitOfWork
    rules: Rules
    states: dict[str, dict[str, Any]]  # agent id -> its state document, when it has one
    awarded: dict[str, dict[str, set[str | None]]]  # agent id -> badge id -> levels
    facts: dict[tuple[str, str], dict[str, Fact]]  # (agent id, badge id) -> key -> fact
    catalog: Catalog | None
    stored_states: set[str] = field(default_factory=set)
    stored_facts: set[str] = field(default_factory=set)
    changed_facts: dict[str, Fact] = field(default_factory=dict)
    changed_states: dict[str, None] = field(default_factory=dict)  # in first-change order
    awards: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, uow: UnitOfWork, rules: Rules, arrived: list[_Arrival]) -> _Book:
        agent_ids = {agent_id for _, _, per_agent in arrived for agent_id in per_agent}
        agent_ids |= {snapshot["agent_id"] for _, snapshot, _ in arrived if snapshot}
        states = store.agent_states(uow, agent_ids)
        awarded = store.awarded_levels_of(uow, agent_ids)
        pairs = {
            (a, b) for _, _, per_agent in arrived for a, badges in per_agent.items() for b in badges
        }
        for _, snapshot, _ in arrived:
            if snapshot is not None:
                # Badges waiting for a snapshot come back when one arrives; those that start
                # waiting during the batch are among the pairs already.
                agent_id = snapshot["agent_id"]
                waiting = states.get(agent_id, {}).get("awaiting", [])
                pairs |= {(agent_id, b) for b in waiting if b in rules.by_id}
        # Fully awarded badges stay so: their facts are neither read nor kept.
        pairs = {(a, b) for a, b in pairs if not set(rules.by_id[b].level_names) <= awarded[a][b]}
        stored = store.facts_of_pairs(uow, pairs)
        tags = rules.tags({badge_id for _, badge_id in pairs})
        catalog = store.catalog(uow.collection(store.COURSES), tags, uow.session) if tags else None
        return cls(
            uow,
            rules,
            states,
            awarded,
            {pair: {f.key: f for f in facts} for pair, facts in stored.items()},
            catalog,
            stored_states=set(states),
            stored_facts={store.fact_id(f) for facts in stored.values() for f in facts},
        )

    def apply(
        self,
        event: CloudEvent,
        snapshot: dict[str, Any] | None,
        per_agent: dict[str, dict[str, list[Fact]]],
    ) -> list[Achievement]:
        """`handle_agent_event` on the documents in memory."""
        if snapshot is not None:
            agent_id = snapshot["agent_id"]
            self.remember(snapshot, event)
            for badge_id in self.states[agent_id].get("awaiting", []):
                if badge_id in self.rules.by_id:
                    per_agent.setdefault(agent_id, {}).setdefault(badge_id, [])
        achieved: list[Achievement] = []
        for agent_id in sorted(per_agent):
            achieved += self.evaluate(agent_id, per_agent[agent_id])
        return achieved

    def evaluate(self, agent_id: str, new_facts: dict[str, list[Fact]]) -> list[Achievement]:
        """`evaluate_agent` on the documents in memory."""
        awarded = self.awarded[agent_id]
        state = self.states.get(agent_id, {})
        awaiting: set[str] = set()
        achieved: list[Achievement] = []
        for badge_id, facts in new_facts.items():
            definition = self.rules.by_id[badge_id]
            if set(definition.level_names) <= awarded[badge_id]:
                continue
            known = self.facts[(agent_id, badge_id)]
            for fact in facts:
                self.keep(known, fact)
            for met in evaluate(definition, known.values(), awarded[badge_id], self.catalog):
                snapshot = met.snapshot if met.snapshot is not None else state.get("snapshot")
                if not snapshot:
                    awaiting.add(badge_id)
                    continue
                event = award_event(met, snapshot)
                self.awards.append(store.award_document(met, snapshot, event.id))
                self.uow.publish(event)
                awarded[badge_id].add(met.level)
                achieved.append(met)
        before = set(state.get("awaiting", []))
        remaining = (before - set(new_facts)) | awaiting
        if remaining != before:
            self.states.setdefault(agent_id, {"_id": agent_id})["awaiting"] = sorted(remaining)
            self.changed_states[agent_id] = None
        return achieved

    def remember(self, snapshot: dict[str, Any], event: CloudEvent) -> None:
        """`store.remember_snapshot` in memory."""
        agent_id = snapshot["agent_id"]
        state = self.states.get(agent_id)
        stamp = store.snapshot_stamp(snapshot, event.time)
        if state is None:
            self.states[agent_id] = {"_id": agent_id, **stamp, "awaiting": []}
        elif store.takes_snapshot(state, event.time):
            state.update(stamp)
        else:
            return
        self.changed_states[agent_id] = None

    def keep(self, known: dict[str, Fact], fact: Fact) -> None:
        """`store.save_fact` in memory: of two facts with one key the earlier stays."""
        # As the database gives it back: event times are kept to the microsecond.
        fact = replace(fact, time=store.from_us(store.to_us(fact.time)))
        existing = known.get(fact.key)
        if existing is None or fact.order < existing.order:
            known[fact.key] = fact
            self.changed_facts[store.fact_id(fact)] = fact

    def save(self) -> None:
        changed = list(self.changed_facts.values())
        store.save_facts(
            self.uow,
            [f for f in changed if store.fact_id(f) not in self.stored_facts],
            [f for f in changed if store.fact_id(f) in self.stored_facts],
        )
        store.insert_awards(self.uow, self.awards)
        store.save_agent_states(
            self.uow,
            [self.states[a] for a in self.changed_states if a not in self.stored_states],
            [self.states[a] for a in self.changed_states if a in self.stored_states],
        )
