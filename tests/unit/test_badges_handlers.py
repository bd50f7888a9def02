"""The handlers with an in-memory unit of work: awards once, award events derived from the
award, badges waiting for a snapshot, and the catalogue changing what complaint-master asks;
and a batch handled at once leaving exactly what its events handled one by one leave."""

from __future__ import annotations

import copy
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import InsertOne, ReplaceOne, UpdateOne
from pymongo.errors import DuplicateKeyError

from contracts.envelope import CloudEvent
from contracts.events import (
    AssessmentGraded,
    AssessmentGradedData,
    CourseCompleted,
    CourseCompletedData,
    CourseData,
    CourseEnrolled,
    CourseEnrolledData,
    CoursePublished,
    CourseUpdated,
    CreditsRequirementMet,
    CreditsRequirementMetData,
    FeedbackSubmitted,
    FeedbackSubmittedData,
    LeaderboardPeriodClosed,
    ModuleCompleted,
    ModuleCompletedData,
    ModuleData,
    PeriodClosedData,
    StandingData,
    TicketResolved,
    TicketResolvedData,
)
from contracts.vocabulary import AgentSnapshot
from services.badges import store
from services.badges.definitions import load_definitions, parse_definitions
from services.badges.handlers import (
    AWARD_EVENT_NAMESPACE,
    Rules,
    handle_agent_event,
    handle_agent_events,
    handle_catalog_event,
)
from services.runtime.mongo import IDS_PER_QUERY
from tests.unit.test_badges_criteria import course_done, module_done, ticket

RULES = Rules(load_definitions(), "Asia/Shanghai")
T0 = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)


def _matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    for key, expected in query.items():
        value = doc.get(key)
        if isinstance(expected, dict) and "$in" in expected:
            values = value if isinstance(value, list) else [value]
            if not set(values) & set(expected["$in"]):
                return False
        elif value != expected:
            return False
    return True


class FakeCollection:
    """The few pymongo calls the store makes, over a dict of documents by `_id`; `calls`
    counts the statements (a bulk write is one)."""

    def __init__(self, name: str = "", calls: Counter[str] | None = None) -> None:
        self.name = name
        self.calls: Counter[str] = Counter() if calls is None else calls
        self.docs: dict[Any, dict[str, Any]] = {}

    def _count(self, method: str) -> None:
        self.calls[f"{method} {self.name}"] += 1

    def find_one(self, query, projection=None, session=None):
        return next(iter(self.find(query)), None)

    def find(self, query, projection=None, session=None):
        self._count("find")
        return [copy.deepcopy(d) for d in self.docs.values() if _matches(d, query)]

    def distinct(self, name, query, session=None):
        return sorted({d[name] for d in self.find(query)})

    def insert_one(self, doc, session=None):
        self._count("insert")
        self._insert(doc)

    def _insert(self, doc):
        if doc["_id"] in self.docs:
            raise DuplicateKeyError(f"duplicate {doc['_id']}")
        self.docs[doc["_id"]] = copy.deepcopy(doc)

    def insert_many(self, docs, session=None):
        self._count("insert")
        for doc in docs:
            self._insert(doc)

    def update_one(self, query, update, upsert=False, session=None):
        self._count("update")
        self._update(query, update, upsert)

    def _update(self, query, update, upsert):
        [doc] = [d for d in self.docs.values() if _matches(d, query)] or [None]
        if doc is None:
            if not upsert:
                return
            doc = {"_id": query["_id"]}
        doc.update(copy.deepcopy(update["$set"]))
        self.docs[doc["_id"]] = doc

    def replace_one(self, query, doc, upsert=False, session=None):
        self._count("update")
        self._replace(query, doc, upsert)

    def _replace(self, query, doc, upsert):
        if query["_id"] in self.docs or upsert:
            self.docs[query["_id"]] = copy.deepcopy(doc)

    def bulk_write(self, requests, session=None):
        self._count("bulk_write")
        for request in requests:  # what pymongo's operations hold, read for this fake only
            if isinstance(request, InsertOne):
                self._insert(request._doc)
            elif isinstance(request, ReplaceOne):
                self._replace(request._filter, request._doc, request._upsert)
            else:
                assert isinstance(request, UpdateOne)
                self._update(request._filter, request._doc, request._upsert)


@dataclass
class FakeUnitOfWork:
    collections: dict[str, FakeCollection] = field(default_factory=dict)
    published: list[Any] = field(default_factory=list)
    session: Any = None
    calls: Counter[str] = field(default_factory=Counter)

    def collection(self, name: str) -> FakeCollection:
        return self.collections.setdefault(name, FakeCollection(name, self.calls))

    def publish(self, event: Any) -> None:
        self.published.append(event)

    def awards(self, agent: str) -> set[tuple[str, str | None]]:
        docs = self.collection(store.AWARDS).find({"agent_id": agent})
        return {(d["badge_id"], d["level"]) for d in docs}


def closed(ranks: dict[str, int]) -> LeaderboardPeriodClosed:
    return LeaderboardPeriodClosed.create(
        source="t",
        subject="2026-W45",
        time=datetime(2026, 11, 8, 15, 59, 59, 999999, tzinfo=UTC),
        data=PeriodClosedData(
            period="weekly",
            period_key="2026-W45",
            top=[StandingData(rank=r, agent_id=a, score=50) for a, r in ranks.items()],
        ),
    )


def course_event(course_id: str, revision: int, published: bool = True, kind=CoursePublished):
    return kind.create(
        source="t",
        subject=course_id,
        time=T0 + timedelta(days=revision),
        data=CourseData(
            course_id=course_id,
            title=course_id,
            tier="foundation",
            dimension="technology",
            credit_hours=1,
            tags=["complaint-handling"],
            modules=[ModuleData(module_id="m", kind="lesson", title="m")],
            published=published,
            revision=revision,
        ),
    )


def test_an_event_applied_twice_awards_once_with_an_event_derived_from_the_award():
    uow = FakeUnitOfWork()
    event = module_done(T0)
    [first] = handle_agent_event(event, uow, RULES)
    assert handle_agent_event(event, uow, RULES) == []
    assert handle_agent_event(module_done(T0 + timedelta(hours=1)), uow, RULES) == []
    [award_event] = [e for e in uow.published if e.data.badge_id == "first-steps"]
    assert award_event.id == str(uuid.uuid5(AWARD_EVENT_NAMESPACE, "a1|first-steps|"))
    assert (award_event.time, award_event.subject) == (event.time, "a1")
    assert award_event.data.evidence == [event.id]
    assert award_event.data.bonus_points == 10
    assert first.badge_id == "first-steps"


def test_a_period_close_for_an_agent_never_seen_waits_for_its_snapshot():
    uow = FakeUnitOfWork()
    handle_agent_event(module_done(T0, agent="known"), uow, RULES)
    close = closed({"stranger": 2, "known": 9})
    awarded = handle_agent_event(close, uow, RULES)
    assert [(a.agent_id, a.badge_id) for a in awarded] == [("known", "weekly-top-10")]
    assert uow.collection(store.AGENTS).find_one({"_id": "stranger"})["awaiting"] == [
        "weekly-top-10"
    ]

    later = ticket(close.time + timedelta(days=2), 70, 1, agent="stranger")
    [award] = handle_agent_event(later, uow, RULES)
    assert (award.badge_id, award.time, award.evidence) == (
        "weekly-top-10",
        close.time,
        (close.id,),
    )
    event = uow.published[-1]
    assert event.data.agent.agent_id == "stranger"
    assert uow.collection(store.AGENTS).find_one({"_id": "stranger"})["awaiting"] == []
    assert handle_agent_event(ticket(later.time, 70, 2, agent="stranger"), uow, RULES) == []


def test_the_catalogue_decides_what_complaint_master_asks():
    uow = FakeUnitOfWork()
    handle_catalog_event(course_event("ch1", 1), uow, RULES)
    [award] = handle_agent_event(course_done(T0, "ch1", agent="early"), uow, RULES)[-1:]
    assert award.badge_id == "complaint-master"

    assert handle_catalog_event(course_event("ch2", 2), uow, RULES) == []  # asks more now
    handle_agent_event(course_done(T0, "ch1", agent="late"), uow, RULES)
    assert ("complaint-master", None) not in uow.awards("late")
    assert ("complaint-master", None) in uow.awards("early")

    stale = course_event("ch2", 1, published=False, kind=CourseUpdated)
    assert handle_catalog_event(stale, uow, RULES) == []  # an older revision changes nothing
    withdrawn = course_event("ch2", 3, published=False, kind=CourseUpdated)
    [late] = handle_catalog_event(withdrawn, uow, RULES)
    assert (late.agent_id, late.time) == ("late", withdrawn.time)
    assert late.evidence[-1] == withdrawn.id
    assert handle_catalog_event(course_event("ch3", 4, published=False), uow, RULES) == []


def test_facts_stop_once_every_level_is_awarded():
    uow = FakeUnitOfWork()
    handle_agent_event(module_done(T0), uow, RULES)
    facts = uow.collection(store.FACTS)
    first_steps = [d for d in facts.docs.values() if d["badge_id"] == "first-steps"]
    handle_agent_event(module_done(T0 + timedelta(days=1)), uow, RULES)
    assert [d for d in facts.docs.values() if d["badge_id"] == "first-steps"] == first_steps


# --- a batch at once equals its events one by one -----------------------------------------

#: Low thresholds, so short random streams reach every level of every kind.
SMALL = Rules(
    parse_definitions(
        """
badges:
  - id: first-steps
    name: First Steps
    description: d
    criteria_narrative: n
    criterion: {kind: event_count, events: {types: [learning.module.completed.v1]}}
    levels: [{bonus_points: 10}]
  - id: course-finisher
    name: Course Finisher
    description: d
    criteria_narrative: n
    criterion: {kind: event_count, events: {types: [learning.course.completed.v1]}}
    levels:
      - {level: bronze, threshold: 1, bonus_points: 20}
      - {level: silver, threshold: 2, bonus_points: 50}
      - {level: gold, threshold: 4, bonus_points: 150}
  - id: perfect-score
    name: Perfect Score
    description: d
    criteria_narrative: n
    criterion:
      kind: score_threshold
      events: {types: [learning.assessment.graded.v1]}
      min_score: 100
    levels: [{bonus_points: 25}]
  - id: streak-3
    name: Streak
    description: d
    criteria_narrative: n
    criterion: {kind: streak_days, events: {topic: learning.progress}}
    levels: [{threshold: 3, bonus_points: 50}]
  - id: ticket-ace
    name: Ticket Ace
    description: d
    criteria_narrative: n
    criterion:
      kind: event_count
      events: {types: [work.ticket.resolved.v1], where: {qa_score: {gte: 90}}}
    levels:
      - {level: one, threshold: 2, bonus_points: 5}
      - {level: two, threshold: 4, bonus_points: 10}
  - id: weekly-top-3
    name: Weekly Top 3
    description: d
    criteria_narrative: n
    criterion: {kind: top_n, period: weekly, n: 3}
    levels: [{bonus_points: 30}]
  - id: monthly-top-5
    name: Monthly Top 5
    description: d
    criteria_narrative: n
    criterion: {kind: top_n, period: monthly, n: 5}
    levels: [{bonus_points: 30}]
  - id: complaint-master
    name: Complaint Master
    description: d
    criteria_narrative: n
    criterion: {kind: tagged_courses_completed, tag: complaint-handling}
    levels: [{bonus_points: 100}]
  - id: tier-ready
    name: Tier Ready
    description: d
    criteria_narrative: n
    criterion: {kind: credits_requirement_met}
    levels:
      - {level: advanced, target_tier: advanced, bonus_points: 40}
      - {level: leadership, target_tier: leadership, bonus_points: 40}
"""
    ),
    "Asia/Shanghai",
)
TAGGED = ["complaint-handling"]


def agent_event_stream(rng: random.Random, n: int, agents: int = 4) -> list[CloudEvent]:
    """Events of several agents as the learning, ticket, credits and leaderboard topics
    deliver them: out of event-time order, some at one instant, snapshots that change (team,
    tier), period closes naming agents no event has shown yet, and redeliveries."""
    known = [f"agent-{i}" for i in range(agents)]
    strangers = ["stranger-1", "stranger-2"]
    events: list[CloudEvent] = []
    for _ in range(n):
        if events and rng.random() < 0.1:
            events.append(rng.choice(events))  # redelivered
            continue
        if events and rng.random() < 0.1:
            at = rng.choice(events).time  # at one instant with another event
        else:
            at = T0 + timedelta(days=rng.randrange(10), hours=rng.randrange(24))
        # A stranger's own events come late, if at all.
        agent = rng.choice(known + strangers if len(events) > n // 2 else known)
        snap = AgentSnapshot(
            agent_id=agent,
            team_id=rng.choice(["team-1", "team-2"]),
            tier=rng.choice(["foundation", "advanced"]),
        )
        kind = rng.randrange(9)
        if kind == 0:
            data: Any = ModuleCompletedData(
                agent=snap, course_id="c1", module_id=f"m{rng.randrange(5)}", module_kind="lesson"
            )
            events.append(ModuleCompleted.create(source="t", subject=agent, time=at, data=data))
        elif kind == 1:
            data = CourseEnrolledData(agent=snap, course_id=f"c{rng.randrange(5)}")
            events.append(CourseEnrolled.create(source="t", subject=agent, time=at, data=data))
        elif kind == 2:
            score = rng.choice([95, 100])
            data = AssessmentGradedData(
                agent=snap,
                course_id="c1",
                module_id="q1",
                module_kind="quiz",
                score=score,
                pass_score=80,
                passed=True,
                attempt=1,
            )
            events.append(AssessmentGraded.create(source="t", subject=agent, time=at, data=data))
        elif kind == 3:
            course = rng.choice(["ch1", "ch2", "c3", "c4"])
            data = CourseCompletedData(
                agent=snap,
                course_id=course,
                course_tier="foundation",
                dimension="communication",
                credit_hours=2,
                tags=TAGGED if course.startswith("ch") else [],
                mean_best_score=None,
            )
            events.append(CourseCompleted.create(source="t", subject=agent, time=at, data=data))
        elif kind == 4:
            data = FeedbackSubmittedData(agent=snap, course_id="c1", rating=4)
            events.append(FeedbackSubmitted.create(source="t", subject=agent, time=at, data=data))
        elif kind in (5, 6):
            data = TicketResolvedData(
                agent=snap,
                ticket_id=f"T{rng.randrange(1000)}",
                qa_score=rng.choice([85, 95]),
                csat=4,
            )
            events.append(TicketResolved.create(source="t", subject=agent, time=at, data=data))
        elif kind == 7:
            data = CreditsRequirementMetData(
                agent=snap,
                target_tier=rng.choice(["advanced", "leadership"]),
                total=12.0,
                by_dimension={},
            )
            events.append(
                CreditsRequirementMet.create(source="t", subject=agent, time=at, data=data)
            )
        else:
            period = rng.choice(["weekly", "monthly"])
            ranked = rng.sample(known + strangers, 4)
            data = PeriodClosedData(
                period=period,
                period_key=f"2026-W{rng.randrange(44, 47)}" if period == "weekly" else "2026-11",
                top=[
                    StandingData(rank=r, agent_id=a, score=90 - r) for r, a in enumerate(ranked, 1)
                ],
            )
            events.append(
                LeaderboardPeriodClosed.create(
                    source="t", subject=data.period_key, time=at, data=data
                )
            )
    return events


def random_split(rng: random.Random, events: list[CloudEvent]) -> list[list[CloudEvent]]:
    cuts = sorted(rng.sample(range(1, len(events)), rng.randrange(0, min(6, len(events) - 1))))
    return [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]


def with_catalogue(rules: Rules) -> FakeUnitOfWork:
    uow = FakeUnitOfWork()
    for revision, course_id in enumerate(["ch1", "ch2"], 1):
        handle_catalog_event(course_event(course_id, revision), uow, rules)
    return uow


def left_behind(uow: FakeUnitOfWork) -> dict[str, Any]:
    """Every document and outgoing event, comparable (documents in `_id` order)."""
    return {
        "documents": {
            name: sorted(c.docs.values(), key=lambda d: d["_id"])
            for name, c in uow.collections.items()
            if c.docs
        },
        "published": [event.model_dump() for event in uow.published],
    }


@pytest.mark.parametrize("rules", [SMALL, RULES], ids=["low-thresholds", "product"])
@pytest.mark.parametrize("seed", range(40))
def test_a_batch_leaves_what_its_events_one_by_one_leave(rules: Rules, seed: int):
    rng = random.Random(seed)
    events = agent_event_stream(rng, rng.randrange(20, 90))
    single, batched = with_catalogue(rules), with_catalogue(rules)

    one_by_one = [met for event in events for met in handle_agent_event(event, single, rules)]
    at_once = [
        met
        for batch in random_split(rng, events)
        for met in handle_agent_events(batched, batch, rules)
    ]

    assert at_once == one_by_one
    assert left_behind(batched) == left_behind(single)


def test_the_random_streams_reach_what_the_comparison_is_about():
    """Awards of every kind, badges left waiting for a snapshot and awards that end such a
    wait: else the comparison above could pass without looking at them."""
    kinds: set[str] = set()
    waited = late = 0
    for seed in range(40):
        rng = random.Random(seed)
        uow = with_catalogue(SMALL)
        for event in agent_event_stream(rng, rng.randrange(20, 90)):
            for met in handle_agent_event(event, uow, SMALL):
                kinds.add(met.badge_id)
                late += met.time < event.time and met.snapshot is None
        agents = uow.collection(store.AGENTS).docs.values()
        waited += sum(1 for state in agents if state.get("awaiting"))
    assert kinds == set(SMALL.by_id)
    assert waited > 0 and late > 0


def test_an_award_in_a_batch_carries_the_snapshot_as_of_its_event():
    """A period close awards with the agent's snapshot as known then; a later event of the
    batch that brings a newer one does not change it, as one by one."""
    uow = FakeUnitOfWork()
    advanced = AgentSnapshot(agent_id="a1", team_id="team-1", tier="advanced")
    first = ticket(T0, 70, 1, agent="a1")
    close = closed({"a1": 1, "stranger": 2})
    newer = TicketResolved.create(
        source="t",
        subject="a1",
        time=close.time + timedelta(days=1),
        data=TicketResolvedData(agent=advanced, ticket_id="T-9", qa_score=70, csat=4),
    )
    stranger = ticket(close.time + timedelta(days=2), 70, 3, agent="stranger")
    awarded = handle_agent_events(uow, [first, close, newer, stranger], RULES)

    assert [(a.agent_id, a.badge_id, a.time) for a in awarded] == [
        ("a1", "weekly-top-10", close.time),
        ("stranger", "weekly-top-10", close.time),
    ]
    tiers = {e.subject: e.data.agent.tier for e in uow.published}
    assert tiers == {"a1": "foundation", "stranger": "foundation"}
    state = uow.collection(store.AGENTS).find_one({"_id": "a1"})
    assert (state["snapshot"]["tier"], state["awaiting"]) == ("advanced", [])
    assert uow.collection(store.AGENTS).find_one({"_id": "stranger"})["awaiting"] == []


def test_a_batch_takes_a_few_statements_whatever_its_size():
    # The reads grow with the batch's agents, in slices (an `$in` of many values is slow on
    # the local database), never with its events; the writes are one bulk each.
    rng = random.Random(5)
    agents = 50 + 2  # and the stream's two strangers
    slices = -(-agents // store.AGENTS_PER_QUERY)
    for size in (10, 300):
        uow = with_catalogue(RULES)
        uow.calls.clear()
        handle_agent_events(uow, agent_event_stream(rng, size, agents=50), RULES)
        reads = {call: n for call, n in uow.calls.items() if call.startswith("find")}
        writes = {call: n for call, n in uow.calls.items() if not call.startswith("find")}
        assert reads[f"find {store.AGENTS}"] <= -(-agents // IDS_PER_QUERY)  # by id
        assert reads[f"find {store.AWARDS}"] <= slices
        assert reads[f"find {store.FACTS}"] <= len(RULES.definitions) * slices  # per badge
        assert reads.get(f"find {store.COURSES}", 0) <= 1
        assert writes == {
            f"bulk_write {store.FACTS}": 1,
            f"insert {store.AWARDS}": 1,
            f"bulk_write {store.AGENTS}": 1,
        }
