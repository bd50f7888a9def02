"""The handlers with an in-memory unit of work: awards once, award events derived from the
award, badges waiting for a snapshot, and the catalogue changing what complaint-master asks."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from contracts.events import (
    CourseData,
    CoursePublished,
    CourseUpdated,
    LeaderboardPeriodClosed,
    ModuleData,
    PeriodClosedData,
    StandingData,
)
from services.badges import store
from services.badges.definitions import load_definitions
from services.badges.handlers import (
    AWARD_EVENT_NAMESPACE,
    Rules,
    handle_agent_event,
    handle_catalog_event,
)
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
    """The few pymongo calls the store makes, over a dict of documents by `_id`."""

    def __init__(self) -> None:
        self.docs: dict[Any, dict[str, Any]] = {}

    def find_one(self, query, projection=None, session=None):
        return next(iter(self.find(query)), None)

    def find(self, query, projection=None, session=None):
        return [copy.deepcopy(d) for d in self.docs.values() if _matches(d, query)]

    def distinct(self, name, query, session=None):
        return sorted({d[name] for d in self.find(query)})

    def insert_one(self, doc, session=None):
        if doc["_id"] in self.docs:
            raise DuplicateKeyError(f"duplicate {doc['_id']}")
        self.docs[doc["_id"]] = copy.deepcopy(doc)

    def update_one(self, query, update, upsert=False, session=None):
        [doc] = self.find(query) or [None]
        if doc is None:
            if not upsert:
                return
            doc = {"_id": query["_id"]}
        doc.update(copy.deepcopy(update["$set"]))
        self.docs[doc["_id"]] = doc

    def replace_one(self, query, doc, upsert=False, session=None):
        self.docs[query["_id"]] = copy.deepcopy(doc)


@dataclass
class FakeUnitOfWork:
    collections: dict[str, FakeCollection] = field(default_factory=dict)
    published: list[Any] = field(default_factory=list)
    session: Any = None

    def collection(self, name: str) -> FakeCollection:
        return self.collections.setdefault(name, FakeCollection())

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
