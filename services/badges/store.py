"""The badges service's documents (with their indexes) and the queries it needs.

Collections: `badge_facts` (what each criterion remembers per agent), `badge_awards` (one
per agent, badge and level: a unique index), `agents` (latest snapshot seen per agent),
`catalog_courses` (published courses and tags) and `signing_keys` (a generated issuer key).
Writes take the unit of work's session so they commit with the outbox.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import mongoengine as me
from pymongo import InsertOne, ReplaceOne
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from services.badges.criteria import Achievement, Catalog, Fact
from services.runtime.mongo import UnitOfWork, find_by_ids, find_in

#: Agents per `$in` query on facts and awards (see `find_in`). Measured on the local
#: database, 300 agents with 6 facts each: 575 ms in one query, 132 in queries of 50, 122
#: in queries of 25, 118 in queries of 10; their awards (2 each): 145, 44, 46, 57 ms.
AGENTS_PER_QUERY = 25


class BadgeFact(me.Document):
    id = me.StringField(primary_key=True)  # agent|badge|key
    agent_id = me.StringField(required=True)
    badge_id = me.StringField(required=True)
    key = me.StringField(required=True)
    event_id = me.StringField(required=True)
    time = me.DateTimeField(required=True)
    time_us = me.IntField(required=True)  # exact: BSON dates keep milliseconds only
    snapshot = me.DictField()
    meta = {
        "collection": "badge_facts",
        # One agent's facts (of a badge), and the agents of a badge: some agents' facts of a
        # badge are read through the second (the local database plans a `$in` on the first
        # field of an index as a collection scan). The id makes (agent, badge, key) unique.
        "indexes": [
            {"fields": ["agent_id", "badge_id"], "name": "by_agent"},
            {"fields": ["badge_id", "agent_id"]},
        ],
    }


class BadgeAward(me.Document):
    id = me.StringField(primary_key=True)  # agent|badge|level
    agent_id = me.StringField(required=True)
    badge_id = me.StringField(required=True)
    level = me.StringField(null=True)
    awarded_at = me.DateTimeField(required=True)
    awarded_at_us = me.IntField(required=True)
    bonus_points = me.IntField(required=True)
    evidence = me.ListField(me.StringField())
    trigger_event_id = me.StringField(required=True)
    event_id = me.StringField(required=True)  # the BadgeAwarded event
    snapshot = me.DictField()
    meta = {
        "collection": "badge_awards",
        # Every read is of one agent's awards (or of some agents'): this index serves them.
        # The id makes (agent, badge, level) unique already, but a non-unique index of the
        # same keys cannot stand beside this one: pods of the earlier release would fail
        # to start during a rollout (the insert of an award is rarer than of a fact).
        "indexes": [{"fields": ["agent_id", "badge_id", "level"], "unique": True}],
    }


#: Indexes of earlier releases, dropped on start. No query reads awards by badge. The
#: facts' unique (agent, badge, key) held again what the id (agent|badge|key) guarantees,
#: and a unique index costs the local database a claim and a probe with every insert: a
#: fact's insert took 0.20 ms of its CPU with it, 0.17 to 0.18 with `by_agent` instead
#: (measured apart). Its keys differ from `by_agent`'s, so the two can stand side by side
#: while pods of the earlier release restart during a rollout.
RETIRED_AWARD_INDEXES = ("badge_id_1",)
RETIRED_FACT_INDEXES = ("agent_id_1_badge_id_1_key_1",)


class AgentState(me.Document):
    id = me.StringField(primary_key=True)  # agent id
    snapshot = me.DictField()
    snapshot_time = me.DateTimeField()
    snapshot_us = me.IntField()
    #: Badges met while no snapshot of the agent was known (awarded when one arrives).
    awaiting = me.ListField(me.StringField())
    meta = {"collection": "agents"}


class CatalogCourse(me.Document):
    id = me.StringField(primary_key=True)  # course id
    revision = me.IntField(required=True)
    published = me.BooleanField(required=True)
    tags = me.ListField(me.StringField())
    meta = {"collection": "catalog_courses", "indexes": [{"fields": ["tags", "published"]}]}


class SigningKeyRecord(me.Document):
    id = me.StringField(primary_key=True)
    private_pem = me.StringField(required=True)
    created_at = me.DateTimeField(required=True)
    meta = {"collection": "signing_keys"}


DOCUMENTS = (BadgeFact, BadgeAward, AgentState, CatalogCourse, SigningKeyRecord)


def _name(document: type[me.Document]) -> str:
    return document._meta["collection"]


FACTS = _name(BadgeFact)
AWARDS = _name(BadgeAward)
AGENTS = _name(AgentState)
COURSES = _name(CatalogCourse)
KEYS = _name(SigningKeyRecord)
#: What `Mongo(retired_indexes=...)` drops on start.
RETIRED_INDEXES = {AWARDS: RETIRED_AWARD_INDEXES, FACTS: RETIRED_FACT_INDEXES}


def fact_id(fact: Fact) -> str:
    return f"{fact.agent_id}|{fact.badge_id}|{fact.key}"


def award_id(agent_id: str, badge_id: str, level: str | None) -> str:
    return f"{agent_id}|{badge_id}|{level or ''}"


# --- facts --------------------------------------------------------------------------------


def fact_document(fact: Fact) -> dict[str, Any]:
    return {
        "agent_id": fact.agent_id,
        "badge_id": fact.badge_id,
        "key": fact.key,
        "event_id": fact.event_id,
        "time": fact.time,
        "time_us": to_us(fact.time),
        "snapshot": fact.snapshot,
    }


def save_fact(uow: UnitOfWork, fact: Fact) -> None:
    """Stores a fact; of two with one key the earlier (event time, then id) stays."""
    facts = uow.collection(FACTS)
    document = fact_document(fact)
    existing = facts.find_one(
        {"_id": fact_id(fact)}, {"time_us": 1, "event_id": 1}, session=uow.session
    )
    if existing is None:
        facts.insert_one({"_id": fact_id(fact), **document}, session=uow.session)
    elif (to_us(fact.time), fact.event_id) < (existing["time_us"], existing["event_id"]):
        facts.update_one({"_id": fact_id(fact)}, {"$set": document}, session=uow.session)


def save_facts(uow: UnitOfWork, new: list[Fact], replacing: list[Fact]) -> None:
    """Stores facts whose key had none (`new`) and earlier ones for a key (`replacing`), in one
    bulk write (the caller applied the earlier-stays rule against what it read)."""
    writes: list[Any] = [InsertOne({"_id": fact_id(f), **fact_document(f)}) for f in new]
    writes += [
        ReplaceOne({"_id": fact_id(f)}, {"_id": fact_id(f), **fact_document(f)}) for f in replacing
    ]
    if writes:
        uow.collection(FACTS).bulk_write(writes, session=uow.session)


def facts_of(
    collection: Collection, agent_id: str, badge_id: str | None = None, session: Any = None
) -> list[Fact]:
    query: dict[str, Any] = {"agent_id": agent_id}
    if badge_id is not None:
        query["badge_id"] = badge_id
    return [_fact(doc) for doc in collection.find(query, session=session)]


def facts_of_pairs(
    uow: UnitOfWork, pairs: set[tuple[str, str]]
) -> dict[tuple[str, str], list[Fact]]:
    """The facts of each (agent, badge) pair (every pair present, maybe empty), read per
    badge: exactly the pairs' facts, where reading all the agents' facts of all the badges
    would read about twice as many documents."""
    found: dict[tuple[str, str], list[Fact]] = {pair: [] for pair in pairs}
    agents_of: dict[str, set[str]] = defaultdict(set)
    for agent_id, badge_id in pairs:
        agents_of[badge_id].add(agent_id)
    facts = uow.collection(FACTS)
    for badge_id in sorted(agents_of):
        for doc in find_in(
            facts,
            "agent_id",
            agents_of[badge_id],
            AGENTS_PER_QUERY,
            {"badge_id": badge_id},
            session=uow.session,
        ):
            found[(doc["agent_id"], badge_id)].append(_fact(doc))
    return found


def agents_with_facts(uow: UnitOfWork, badge_id: str) -> list[str]:
    return list(
        uow.collection(FACTS).distinct("agent_id", {"badge_id": badge_id}, session=uow.session)
    )


def _fact(doc: dict[str, Any]) -> Fact:
    return Fact(
        agent_id=doc["agent_id"],
        badge_id=doc["badge_id"],
        key=doc["key"],
        event_id=doc["event_id"],
        time=from_us(doc["time_us"]),
        snapshot=doc.get("snapshot"),
    )


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch: event times keep their precision (BSON dates don't)."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


# --- awards -------------------------------------------------------------------------------


def awarded_levels(
    collection: Collection, agent_id: str, session: Any = None
) -> dict[str, set[str | None]]:
    levels: dict[str, set[str | None]] = defaultdict(set)
    for doc in collection.find(
        {"agent_id": agent_id}, {"badge_id": 1, "level": 1}, session=session
    ):
        levels[doc["badge_id"]].add(doc.get("level"))
    return levels


def awarded_levels_of(
    uow: UnitOfWork, agent_ids: set[str]
) -> dict[str, dict[str, set[str | None]]]:
    """`awarded_levels` of several agents (every agent present, maybe empty)."""
    levels: dict[str, dict[str, set[str | None]]] = {
        agent_id: defaultdict(set) for agent_id in agent_ids
    }
    projection = {"agent_id": 1, "badge_id": 1, "level": 1}
    for doc in find_in(
        uow.collection(AWARDS),
        "agent_id",
        agent_ids,
        AGENTS_PER_QUERY,
        session=uow.session,
        projection=projection,
    ):
        levels[doc["agent_id"]][doc["badge_id"]].add(doc.get("level"))
    return levels


def award_document(
    achieved: Achievement, snapshot: dict[str, Any], event_id: str
) -> dict[str, Any]:
    return {
        "_id": award_id(achieved.agent_id, achieved.badge_id, achieved.level),
        "agent_id": achieved.agent_id,
        "badge_id": achieved.badge_id,
        "level": achieved.level,
        "awarded_at": achieved.time,
        "awarded_at_us": to_us(achieved.time),
        "bonus_points": achieved.bonus_points,
        "evidence": list(achieved.evidence),
        "trigger_event_id": achieved.trigger_event_id,
        "event_id": event_id,
        "snapshot": snapshot,
    }


def insert_award(
    uow: UnitOfWork, achieved: Achievement, snapshot: dict[str, Any], event_id: str
) -> None:
    uow.collection(AWARDS).insert_one(
        award_document(achieved, snapshot, event_id), session=uow.session
    )


def insert_awards(uow: UnitOfWork, documents: list[dict[str, Any]]) -> None:
    if documents:
        uow.collection(AWARDS).insert_many(documents, session=uow.session)


def awards_of(collection: Collection, agent_id: str) -> list[dict[str, Any]]:
    docs = collection.find({"agent_id": agent_id}).sort([("awarded_at_us", 1), ("_id", 1)])
    return [{**doc, "awarded_at": from_us(doc["awarded_at_us"])} for doc in docs]


def find_award(collection: Collection, agent_id: str, badge_id: str) -> list[dict[str, Any]]:
    query = {"agent_id": agent_id, "badge_id": badge_id}
    docs = collection.find(query).sort([("awarded_at_us", 1), ("_id", 1)])
    return [{**doc, "awarded_at": from_us(doc["awarded_at_us"])} for doc in docs]


# --- agents -------------------------------------------------------------------------------


def snapshot_stamp(snapshot: dict[str, Any], time: datetime) -> dict[str, Any]:
    return {"snapshot": snapshot, "snapshot_time": time, "snapshot_us": to_us(time)}


def takes_snapshot(state: dict[str, Any], time: datetime) -> bool:
    """An event's snapshot replaces the known one unless that came from a later event (of
    two at one time, the one handled last stays)."""
    return state.get("snapshot_us") is None or state["snapshot_us"] <= to_us(time)


def remember_snapshot(uow: UnitOfWork, snapshot: dict[str, Any], time: datetime) -> None:
    """Keeps the snapshot of the latest event (event time) seen for the agent."""
    agents = uow.collection(AGENTS)
    agent_id = snapshot["agent_id"]
    existing = agents.find_one({"_id": agent_id}, {"snapshot_us": 1}, session=uow.session)
    stamp = snapshot_stamp(snapshot, time)
    if existing is None:
        agents.insert_one({"_id": agent_id, **stamp, "awaiting": []}, session=uow.session)
    elif takes_snapshot(existing, time):
        agents.update_one(
            {"_id": agent_id},
            {"$set": stamp},
            session=uow.session,
        )


def agent_state(uow: UnitOfWork, agent_id: str) -> dict[str, Any] | None:
    return uow.collection(AGENTS).find_one({"_id": agent_id}, session=uow.session)


def agent_states(uow: UnitOfWork, agent_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The stored state of each of `agent_ids` that has one."""
    return find_by_ids(uow.collection(AGENTS), agent_ids, uow.session)


def save_agent_states(
    uow: UnitOfWork, new: list[dict[str, Any]], replacing: list[dict[str, Any]]
) -> None:
    """Writes whole agent states (snapshot and awaiting badges) in one bulk write: `new`
    ones had no document, `replacing` ones replace the document read in this transaction."""
    writes: list[Any] = [InsertOne(state) for state in new]
    writes += [ReplaceOne({"_id": state["_id"]}, state) for state in replacing]
    if writes:
        uow.collection(AGENTS).bulk_write(writes, session=uow.session)


def set_awaiting(uow: UnitOfWork, agent_id: str, badge_ids: set[str]) -> None:
    uow.collection(AGENTS).update_one(
        {"_id": agent_id},
        {"$set": {"awaiting": sorted(badge_ids)}},
        upsert=True,
        session=uow.session,
    )


# --- catalogue ----------------------------------------------------------------------------


def save_course(
    uow: UnitOfWork, course_id: str, revision: int, published: bool, tags: list[str]
) -> bool:
    """Stores a course unless a newer revision is known; True when it changed."""
    courses = uow.collection(COURSES)
    existing = courses.find_one({"_id": course_id}, {"revision": 1}, session=uow.session)
    if existing is not None and existing["revision"] >= revision:
        return False
    courses.replace_one(
        {"_id": course_id},
        {"_id": course_id, "revision": revision, "published": published, "tags": tags},
        upsert=True,
        session=uow.session,
    )
    return True


def catalog(collection: Collection, tags: set[str], session: Any = None) -> Catalog:
    """Published courses carrying any of `tags`."""
    by_tag: dict[str, set[str]] = {tag: set() for tag in tags}
    if tags:
        query = {"tags": {"$in": sorted(tags)}, "published": True}
        for doc in collection.find(query, {"tags": 1}, session=session):
            for tag in doc["tags"]:
                if tag in by_tag:
                    by_tag[tag].add(doc["_id"])
    return Catalog({tag: frozenset(ids) for tag, ids in by_tag.items()})


# --- signing key --------------------------------------------------------------------------


def load_or_store_key(collection: Collection, name: str, candidate_pem: str) -> str:
    """The stored key's PEM; stores `candidate_pem` first when there is none (race-safe)."""
    existing = collection.find_one({"_id": name})
    if existing is not None:
        return str(existing["private_pem"])
    try:
        collection.insert_one(
            {"_id": name, "private_pem": candidate_pem, "created_at": datetime.now(UTC)}
        )
        return candidate_pem
    except DuplicateKeyError:  # another replica stored one first: use that
        stored = collection.find_one({"_id": name})
        assert stored is not None
        return str(stored["private_pem"])
