"""The credits service's documents (mongoengine, for their indexes) and its queries.

Writes go through pymongo on the unit of work's session; reads take anything with a
`collection(name)` (a unit of work inside a transaction, or the service database outside
one) and pass the session when there is one.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Container, Iterable
from datetime import datetime
from typing import Any, Protocol

from mongoengine import (
    BooleanField,
    DateTimeField,
    Document,
    FloatField,
    IntField,
    ListField,
    StringField,
)
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection

from services.credits.bank import ACTIVE, EXPIRED, REVOKED, Lot
from services.credits.readiness import Course
from services.credits.roster import Observation, resolve
from services.runtime.mongo import UnitOfWork, find_by_ids, find_in, save_whole


class Reader(Protocol):
    def collection(self, name: str) -> Collection: ...


def _session(source: Reader) -> Any:
    return getattr(source, "session", None)


#: Agents per `$in` query on `agent_id`. The local MongoDB-protocol server's cost of an
#: `$in` grows with the square of the documents it finds (the lots of 75 agents, 300
#: found: about 26 ms in one query, 15 ms in queries of 10); MongoDB would take the whole
#: batch in one query, and a few more round trips cost it little. An agent has many lots
#: but at most one milestone per tier.
AGENTS_PER_LOTS_QUERY = 10
AGENTS_PER_MILESTONES_QUERY = 25


# --- documents --------------------------------------------------------------------------


class AgentDocument(Document):
    """Observations of the agent's tier and team, plus the values they resolve to."""

    meta = {
        "collection": "agents",
        "strict": False,
        "indexes": [{"fields": ["team_id", "_id"], "name": "by_team"}],
    }
    id = StringField(primary_key=True)
    team_id = StringField()
    tier = StringField()


class LotDocument(Document):
    meta = {
        "collection": "lots",
        "strict": False,
        "indexes": [
            {"fields": ["agent_id", "-deposited_at"], "name": "by_agent"},
            # The expiry timer's scan: active lots whose expiry has passed.
            {"fields": ["state", "expires_at"], "name": "due_for_expiry"},
        ],
    }
    id = StringField(primary_key=True)
    agent_id = StringField(required=True)
    deposited_at = DateTimeField()
    expires_at = DateTimeField()
    state = StringField()


class HistoryDocument(Document):
    """Append-only: `_id` is `<kind>:<lot_id>`, so each lot is deposited, revoked and
    expired at most once in the history whatever is retried."""

    meta = {
        "collection": "history",
        "strict": False,
        "indexes": [{"fields": ["agent_id", "-at", "-_id"], "name": "by_agent_newest"}],
    }
    id = StringField(primary_key=True)
    agent_id = StringField(required=True)
    at = DateTimeField()


class MilestoneDocument(Document):
    """One per agent and target tier: `_id` is `<agent_id>:<tier>` (requirement met)."""

    meta = {"collection": "milestones", "strict": False, "indexes": ["agent_id"]}
    id = StringField(primary_key=True)
    agent_id = StringField(required=True)


class CourseDocument(Document):
    meta = {
        "collection": "courses",
        "strict": False,
        "indexes": [{"fields": ["published", "tier"], "name": "published_by_tier"}],
    }
    id = StringField(primary_key=True)
    tier = StringField()
    published = BooleanField()
    revision = IntField()
    credit_hours = FloatField()
    tags = ListField(StringField())


DOCUMENTS = (AgentDocument, LotDocument, HistoryDocument, MilestoneDocument, CourseDocument)
AGENTS = AgentDocument._get_collection_name()
LOTS = LotDocument._get_collection_name()
HISTORY = HistoryDocument._get_collection_name()
MILESTONES = MilestoneDocument._get_collection_name()
COURSES = CourseDocument._get_collection_name()


# --- agents -----------------------------------------------------------------------------


def _observation(raw: dict[str, Any]) -> Observation:
    return Observation(
        at=raw["at"], rank=raw["rank"], tier=raw["tier"], team_id=raw["team_id"], name=raw["name"]
    )


def observations(source: Reader, agent_id: str) -> list[Observation]:
    doc = source.collection(AGENTS).find_one({"_id": agent_id}, session=_session(source))
    return observations_in(doc)


def observations_in(doc: dict[str, Any] | None) -> list[Observation]:
    return [_observation(raw) for raw in (doc or {}).get("observations", [])]


def agent_document(agent_id: str, observed: list[Observation]) -> dict[str, Any]:
    """The agent's document (without `_id`): the observations and what they resolve to
    now (for the team query)."""
    state = resolve(agent_id, observed)
    assert state is not None
    return {
        "observations": [
            {"at": o.at, "rank": o.rank, "tier": o.tier, "team_id": o.team_id, "name": o.name}
            for o in observed
        ],
        "tier": state.tier,
        "team_id": state.team_id,
        "name": state.name,
    }


def save_observations(uow: UnitOfWork, agent_id: str, observed: list[Observation]) -> None:
    uow.collection(AGENTS).replace_one(
        {"_id": agent_id}, agent_document(agent_id, observed), upsert=True, session=uow.session
    )


def agent_documents(uow: UnitOfWork, agent_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The stored documents of those of `agent_ids` that have one, by id (without `_id`)."""
    found = find_by_ids(uow.collection(AGENTS), agent_ids, uow.session)
    return {
        agent_id: {k: v for k, v in doc.items() if k != "_id"} for agent_id, doc in found.items()
    }


def save_agent_documents(
    uow: UnitOfWork, docs: dict[str, dict[str, Any]], stored: Container[str]
) -> None:
    """Writes agents' documents computed in memory, whole: those the transaction read
    (`stored`) replaced, the others inserted (`save_whole`, cheaper than upserts)."""
    whole = [{"_id": agent_id, **doc} for agent_id, doc in docs.items()]
    save_whole(uow.collection(AGENTS), whole, stored, uow.session)


def lock_agent(uow: UnitOfWork, agent_id: str) -> None:
    """Writes the agent's document so that two transactions evaluating the same agent at
    once (a course deposit and a grant, say) conflict and run one after the other: under
    snapshot isolation each would otherwise miss the other's new lot."""
    uow.collection(AGENTS).update_one(
        {"_id": agent_id}, {"$inc": {"evaluations": 1}}, session=uow.session
    )


def team_members(source: Reader, team_id: str) -> dict[str, list[Observation]]:
    docs = source.collection(AGENTS).find({"team_id": team_id}, session=_session(source))
    return {
        doc["_id"]: [_observation(raw) for raw in doc.get("observations", [])]
        for doc in docs.sort("_id", ASCENDING)
    }


# --- lots -------------------------------------------------------------------------------


def lot_document(lot: Lot) -> dict[str, Any]:
    return {
        "_id": lot.lot_id,
        "agent_id": lot.agent_id,
        "source": lot.source,
        "dimension": lot.dimension,
        "credit_hours": lot.credit_hours,
        "deposited_at": lot.deposited_at,
        "expires_at": lot.expires_at,
        "tags": list(lot.tags),
        "course_id": lot.course_id,
        "state": lot.state,
        "revoked_at": lot.revoked_at,
        "revoked_by": lot.revoked_by,
        "revocation_reason": lot.revocation_reason,
        "reason": lot.reason,
        "evidence_url": lot.evidence_url,
        "granted_by": lot.granted_by,
        "source_event_id": lot.source_event_id,
    }


def lot_from(doc: dict[str, Any]) -> Lot:
    return Lot(
        lot_id=doc["_id"],
        agent_id=doc["agent_id"],
        source=doc["source"],
        dimension=doc["dimension"],
        credit_hours=float(doc["credit_hours"]),
        deposited_at=doc["deposited_at"],
        expires_at=doc["expires_at"],
        tags=tuple(doc.get("tags") or ()),
        course_id=doc.get("course_id"),
        state=doc.get("state", ACTIVE),
        revoked_at=doc.get("revoked_at"),
        revoked_by=doc.get("revoked_by"),
        revocation_reason=doc.get("revocation_reason"),
        reason=doc.get("reason"),
        evidence_url=doc.get("evidence_url"),
        granted_by=doc.get("granted_by"),
        source_event_id=doc.get("source_event_id"),
    )


def find_lot(source: Reader, lot_id: str) -> Lot | None:
    doc = source.collection(LOTS).find_one({"_id": lot_id}, session=_session(source))
    return lot_from(doc) if doc else None


def lots_of(source: Reader, agent_id: str) -> list[Lot]:
    cursor = source.collection(LOTS).find({"agent_id": agent_id}, session=_session(source))
    return [lot_from(doc) for doc in cursor.sort([("deposited_at", DESCENDING), ("_id", 1)])]


def lots_of_agents(source: Reader, agent_ids: Iterable[str]) -> dict[str, list[Lot]]:
    found: dict[str, list[Lot]] = {agent_id: [] for agent_id in agent_ids}
    lots = source.collection(LOTS)
    for doc in find_in(lots, "agent_id", found, AGENTS_PER_LOTS_QUERY, session=_session(source)):
        found[doc["agent_id"]].append(lot_from(doc))
    return found


def existing_lot_ids(uow: UnitOfWork, lot_ids: Iterable[str]) -> set[str]:
    """Which of `lot_ids` are stored already."""
    return set(find_by_ids(uow.collection(LOTS), lot_ids, uow.session, projection={"_id": 1}))


def insert_lot(uow: UnitOfWork, lot: Lot) -> None:
    uow.collection(LOTS).insert_one(lot_document(lot), session=uow.session)


def insert_lots(uow: UnitOfWork, lots: list[Lot]) -> None:
    """In order; a lot id stored already fails the whole write."""
    if lots:
        uow.collection(LOTS).insert_many(
            [lot_document(lot) for lot in lots], ordered=True, session=uow.session
        )


def mark_revoked(uow: UnitOfWork, lot_id: str, at: datetime, by: str | None, reason: str) -> bool:
    """Conditional: only an active lot not yet past its expiry can be revoked."""
    result = uow.collection(LOTS).update_one(
        {"_id": lot_id, "state": ACTIVE, "expires_at": {"$gt": at}},
        {
            "$set": {
                "state": REVOKED,
                "revoked_at": at,
                "revoked_by": by,
                "revocation_reason": reason,
            }
        },
        session=uow.session,
    )
    return result.modified_count == 1


def mark_expired(uow: UnitOfWork, lot_id: str, now: datetime) -> bool:
    """Conditional, so that of two instances scanning at once only one expires the lot
    (the other's transaction conflicts, retries and then matches nothing)."""
    result = uow.collection(LOTS).update_one(
        {"_id": lot_id, "state": ACTIVE, "expires_at": {"$lte": now}},
        {"$set": {"state": EXPIRED, "expired_recorded_at": now}},
        session=uow.session,
    )
    return result.modified_count == 1


def due_for_expiry(source: Reader, now: datetime, limit: int) -> list[str]:
    cursor = source.collection(LOTS).find(
        {"state": ACTIVE, "expires_at": {"$lte": now}}, {"_id": 1}, session=_session(source)
    )
    return [doc["_id"] for doc in cursor.sort("expires_at", ASCENDING).limit(limit)]


# --- history ----------------------------------------------------------------------------


def append_history(uow: UnitOfWork, entry: dict[str, Any]) -> None:
    uow.collection(HISTORY).insert_one(entry, session=uow.session)


def append_history_entries(uow: UnitOfWork, entries: list[dict[str, Any]]) -> None:
    if entries:
        uow.collection(HISTORY).insert_many(entries, ordered=True, session=uow.session)


def encode_cursor(at: datetime, entry_id: str) -> str:
    raw = json.dumps([at.isoformat(), entry_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """ValueError when the cursor is not one this service handed out."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, entry_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None or not isinstance(entry_id, str):
            raise ValueError(cursor)
        return moment, entry_id
    except (binascii.Error, TypeError, ValueError, UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"not a history cursor: {cursor!r}") from None


def history_page(
    source: Reader, agent_id: str, limit: int, after: tuple[datetime, str] | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; `after` is the (at, id) of the last entry of the previous page."""
    query: dict[str, Any] = {"agent_id": agent_id}
    if after is not None:
        at, entry_id = after
        query["$or"] = [{"at": {"$lt": at}}, {"at": at, "_id": {"$lt": entry_id}}]
    cursor = source.collection(HISTORY).find(query, session=_session(source))
    entries = list(cursor.sort([("at", DESCENDING), ("_id", DESCENDING)]).limit(limit + 1))
    next_cursor = None
    if len(entries) > limit:
        entries = entries[:limit]
        next_cursor = encode_cursor(entries[-1]["at"], entries[-1]["_id"])
    return entries, next_cursor


# --- milestones -------------------------------------------------------------------------


def milestone_id(agent_id: str, tier: str) -> str:
    return f"{agent_id}:{tier}"


def milestones_of(source: Reader, agent_id: str) -> dict[str, datetime]:
    """Target tier -> when its requirement was first met."""
    cursor = source.collection(MILESTONES).find({"agent_id": agent_id}, session=_session(source))
    return {doc["target_tier"]: doc["met_at"] for doc in cursor}


def milestones_of_agents(source: Reader, agent_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Agent id -> target tier -> when its requirement was first met, for each agent."""
    found: dict[str, dict[str, Any]] = {agent_id: {} for agent_id in agent_ids}
    milestones = source.collection(MILESTONES)
    for doc in find_in(
        milestones, "agent_id", found, AGENTS_PER_MILESTONES_QUERY, session=_session(source)
    ):
        found[doc["agent_id"]][doc["target_tier"]] = doc["met_at"]
    return found


def has_milestone(source: Reader, agent_id: str, tier: str) -> bool:
    doc = source.collection(MILESTONES).find_one(
        {"_id": milestone_id(agent_id, tier)}, {"_id": 1}, session=_session(source)
    )
    return doc is not None


def milestone_document(agent_id: str, tier: str, met_at: datetime, event_id: str) -> dict[str, Any]:
    return {
        "_id": milestone_id(agent_id, tier),
        "agent_id": agent_id,
        "target_tier": tier,
        "met_at": met_at,
        "event_id": event_id,
    }


def insert_milestone(
    uow: UnitOfWork, agent_id: str, tier: str, met_at: datetime, event_id: str
) -> None:
    uow.collection(MILESTONES).insert_one(
        milestone_document(agent_id, tier, met_at, event_id), session=uow.session
    )


def insert_milestones(uow: UnitOfWork, docs: list[dict[str, Any]]) -> None:
    """Unique per agent and tier: a milestone recorded already fails the whole write."""
    if docs:
        uow.collection(MILESTONES).insert_many(docs, ordered=True, session=uow.session)


# --- catalogue --------------------------------------------------------------------------


def save_course(uow: UnitOfWork, course: Course, revision: int) -> bool:
    """Keeps the highest revision seen, whatever order the catalogue events arrive in."""
    collection = uow.collection(COURSES)
    existing = collection.find_one({"_id": course.course_id}, {"revision": 1}, session=uow.session)
    if existing is not None and existing.get("revision", 0) >= revision:
        return False
    collection.replace_one(
        {"_id": course.course_id},
        {
            "title": course.title,
            "tier": course.tier,
            "dimension": course.dimension,
            "credit_hours": course.credit_hours,
            "tags": list(course.tags),
            "published": course.published,
            "revision": revision,
        },
        upsert=True,
        session=uow.session,
    )
    return True


def published_courses(source: Reader, tiers: Iterable[str]) -> list[Course]:
    cursor = source.collection(COURSES).find(
        {"published": True, "tier": {"$in": list(tiers)}}, session=_session(source)
    )
    return [
        Course(
            course_id=doc["_id"],
            title=doc["title"],
            tier=doc["tier"],
            dimension=doc["dimension"],
            credit_hours=float(doc["credit_hours"]),
            tags=tuple(doc.get("tags") or ()),
            published=bool(doc.get("published")),
        )
        for doc in cursor
    ]
