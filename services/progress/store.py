"""The progress service's documents, their indexes, and the reads and writes it needs.

Writes go through pymongo inside a unit of work (`session=uow.session`); the mongoengine
classes declare the collections and indexes only. Each enrolment is ONE document holding
the progress of all its modules: two calls finishing the last two modules at once both
write it, so the database's write-conflict check serialises them and exactly one sees the
course complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mongoengine import (
    BooleanField,
    DateTimeField,
    DictField,
    Document,
    FloatField,
    IntField,
    ListField,
    StringField,
)
from pymongo import ReturnDocument
from pymongo.client_session import ClientSession
from pymongo.database import Database

from services.progress.learning import (
    Attempt,
    Enrollment,
    FeedbackGiven,
    ModuleDef,
    ModuleState,
)
from services.progress.roster import TeamTierChange

_META: dict[str, Any] = {"strict": False, "auto_create_index": False}


class AgentDocument(Document):
    """An agent; `changes` is the effective-dated team/tier history (registration first)."""

    agent_id = StringField(primary_key=True)
    name = StringField(required=True)
    team_id = StringField(required=True)
    tier = StringField(required=True)
    registered_at = DateTimeField(required=True)
    updated_at = DateTimeField(required=True)
    revision = IntField(required=True)
    changes = ListField(DictField())
    meta = {**_META, "collection": "agents", "indexes": [("team_id", "agent_id"), "tier"]}


class CourseDocument(Document):
    course_id = StringField(primary_key=True)
    title = StringField(required=True)
    tier = StringField(required=True)
    dimension = StringField(required=True)
    credit_hours = FloatField(required=True)
    tags = ListField(StringField())
    modules = ListField(DictField())
    published = BooleanField(required=True)
    revision = IntField(required=True)
    created_at = DateTimeField(required=True)
    updated_at = DateTimeField(required=True)
    published_at = DateTimeField()
    meta = {
        **_META,
        "collection": "courses",
        "indexes": [("published", "tier"), ("published", "dimension"), "tags"],
    }


class EnrollmentDocument(Document):
    """`_id` is `<agent_id>/<course_id>` ('/' cannot occur in an id): one per pair."""

    key = StringField(primary_key=True)
    agent_id = StringField(required=True)
    course_id = StringField(required=True)
    enrolled_at = DateTimeField(required=True)
    modules = ListField(DictField())
    completed_at = DateTimeField()
    mean_best_score = FloatField()
    feedback = DictField()
    version = IntField(required=True)
    meta = {
        **_META,
        "collection": "enrollments",
        "indexes": [("agent_id", "-enrolled_at"), ("agent_id", "completed_at"), "course_id"],
    }


class TicketDocument(Document):
    """A received ticket, kept to deduplicate by ticket_id and answer re-sends."""

    ticket_id = StringField(primary_key=True)
    agent_id = StringField(required=True)
    qa_score = IntField(required=True)
    csat = IntField(required=True)
    resolved_at = DateTimeField(required=True)
    agent = DictField()
    event_id = StringField(required=True)
    received_at = DateTimeField(required=True)
    meta = {**_META, "collection": "tickets", "indexes": [("agent_id", "resolved_at")]}


DOCUMENTS = (AgentDocument, CourseDocument, EnrollmentDocument, TicketDocument)

AGENTS = "agents"
COURSES = "courses"
ENROLLMENTS = "enrollments"
TICKETS = "tickets"


def enrollment_key(agent_id: str, course_id: str) -> str:
    return f"{agent_id}/{course_id}"


# --- agents -----------------------------------------------------------------------------


def find_agent(db: Database, agent_id: str, session: ClientSession | None = None) -> dict | None:
    return db[AGENTS].find_one({"_id": agent_id}, session=session)


def changes_of(agent: Mapping[str, Any]) -> list[TeamTierChange]:
    return [
        TeamTierChange(at=item["at"], team_id=item.get("team_id"), tier=item.get("tier"))
        for item in agent["changes"]
    ]


def change_document(change: TeamTierChange) -> dict[str, Any]:
    document: dict[str, Any] = {"at": change.at}
    if change.team_id is not None:
        document["team_id"] = change.team_id
    if change.tier is not None:
        document["tier"] = change.tier
    return document


def list_agents(
    db: Database, *, team_id: str | None, tier: str | None, limit: int, offset: int
) -> tuple[int, list[dict]]:
    query: dict[str, Any] = {}
    if team_id is not None:
        query["team_id"] = team_id
    if tier is not None:
        query["tier"] = tier
    total = db[AGENTS].count_documents(query)
    found = db[AGENTS].find(query).sort("_id", 1).skip(offset).limit(limit)
    return total, list(found)


# --- courses ----------------------------------------------------------------------------


def find_course(db: Database, course_id: str, session: ClientSession | None = None) -> dict | None:
    return db[COURSES].find_one({"_id": course_id}, session=session)


def list_courses(
    db: Database,
    *,
    tier: str | None,
    dimension: str | None,
    tag: str | None,
    published: bool | None,
    limit: int,
    offset: int,
) -> tuple[int, list[dict]]:
    query: dict[str, Any] = {}
    if published is not None:
        query["published"] = published
    if tier is not None:
        query["tier"] = tier
    if dimension is not None:
        query["dimension"] = dimension
    if tag is not None:
        query["tags"] = tag
    total = db[COURSES].count_documents(query)
    found = db[COURSES].find(query).sort("_id", 1).skip(offset).limit(limit)
    return total, list(found)


def courses_by_id(db: Database, course_ids: list[str]) -> dict[str, dict]:
    return {doc["_id"]: doc for doc in db[COURSES].find({"_id": {"$in": course_ids}})}


def module_defs(course: Mapping[str, Any]) -> tuple[ModuleDef, ...]:
    return tuple(
        ModuleDef(
            module_id=item["module_id"],
            kind=item["kind"],
            title=item["title"],
            pass_score=item.get("pass_score"),
        )
        for item in course["modules"]
    )


# --- enrolments -------------------------------------------------------------------------


def find_enrollment(
    db: Database, agent_id: str, course_id: str, session: ClientSession | None = None
) -> dict | None:
    return db[ENROLLMENTS].find_one({"_id": enrollment_key(agent_id, course_id)}, session=session)


def list_enrollments(
    db: Database, agent_id: str, *, status: str | None, limit: int, offset: int
) -> tuple[int, list[dict]]:
    query: dict[str, Any] = {"agent_id": agent_id}
    if status == "completed":
        query["completed_at"] = {"$ne": None}
    elif status == "in_progress":
        query["completed_at"] = None
    found = list(
        db[ENROLLMENTS]
        .find(query)
        .sort([("enrolled_at", -1), ("_id", 1)])
        .skip(offset)
        .limit(limit)
    )
    if len(found) < limit and (found or offset == 0):
        # The page ends the list: the total is known without counting (a profile asks
        # for every course in progress on one page, so this is the common case).
        return offset + len(found), found
    return db[ENROLLMENTS].count_documents(query), found


def enrollment_from(document: Mapping[str, Any]) -> Enrollment:
    modules = []
    states: dict[str, ModuleState] = {}
    for item in document["modules"]:
        module = ModuleDef(
            module_id=item["module_id"],
            kind=item["kind"],
            title=item["title"],
            pass_score=item.get("pass_score"),
        )
        modules.append(module)
        states[module.module_id] = ModuleState(
            completed_at=item.get("completed_at"),
            attempts=tuple(
                Attempt(number=a["attempt"], score=a["score"], passed=a["passed"], at=a["at"])
                for a in item.get("attempts", [])
            ),
        )
    feedback = document.get("feedback") or None
    return Enrollment(
        agent_id=document["agent_id"],
        course_id=document["course_id"],
        enrolled_at=document["enrolled_at"],
        modules=tuple(modules),
        states=states,
        completed_at=document.get("completed_at"),
        mean_best_score=document.get("mean_best_score"),
        feedback=(
            FeedbackGiven(rating=feedback["rating"], comment=feedback["comment"], at=feedback["at"])
            if feedback
            else None
        ),
    )


def enrollment_fields(enrollment: Enrollment) -> dict[str, Any]:
    """The document fields that an enrolment's progress determines."""
    modules = []
    for module in enrollment.modules:
        state = enrollment.state(module.module_id)
        modules.append(
            {
                "module_id": module.module_id,
                "kind": module.kind,
                "title": module.title,
                "pass_score": module.pass_score,
                "completed_at": state.completed_at,
                "attempts": [
                    {"attempt": a.number, "score": a.score, "passed": a.passed, "at": a.at}
                    for a in state.attempts
                ],
            }
        )
    feedback = enrollment.feedback
    return {
        "agent_id": enrollment.agent_id,
        "course_id": enrollment.course_id,
        "enrolled_at": enrollment.enrolled_at,
        "modules": modules,
        "completed_at": enrollment.completed_at,
        "mean_best_score": enrollment.mean_best_score,
        "feedback": (
            {"rating": feedback.rating, "comment": feedback.comment, "at": feedback.at}
            if feedback
            else None
        ),
    }


def insert_enrollment(db: Database, enrollment: Enrollment, session: ClientSession) -> dict:
    document = {
        "_id": enrollment_key(enrollment.agent_id, enrollment.course_id),
        **enrollment_fields(enrollment),
        "version": 1,
    }
    db[ENROLLMENTS].insert_one(document, session=session)
    return document


def save_enrollment(
    db: Database, document: Mapping[str, Any], enrollment: Enrollment, session: ClientSession
) -> dict:
    """Writes the new progress over the version read in this transaction."""
    fields = enrollment_fields(enrollment)
    result = db[ENROLLMENTS].update_one(
        {"_id": document["_id"], "version": document["version"]},
        {"$set": fields, "$inc": {"version": 1}},
        session=session,
    )
    if result.matched_count != 1:  # only if isolation failed: never write over a change
        raise RuntimeError(f"enrolment {document['_id']} changed during the transaction")
    return {**document, **fields, "version": document["version"] + 1}


# --- tickets ----------------------------------------------------------------------------


def find_ticket(db: Database, ticket_id: str, session: ClientSession | None = None) -> dict | None:
    return db[TICKETS].find_one({"_id": ticket_id}, session=session)


def update_by_id(
    db: Database, collection: str, _id: str, update: dict[str, Any], session: ClientSession
) -> dict:
    """Applies `update` to a document read earlier in this transaction; returns the result."""
    updated = db[collection].find_one_and_update(
        {"_id": _id}, update, session=session, return_document=ReturnDocument.AFTER
    )
    if updated is None:  # read in this transaction, so only a broken isolation gets here
        raise RuntimeError(f"{collection} {_id!r} vanished during the transaction")
    return updated
