"""The points service's documents, their indexes, and the queries it needs.

Writes go through pymongo on these collections inside a unit of work (handlers.py);
mongoengine only declares the shapes and creates the indexes on start.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import Any

from mongoengine import (
    DateTimeField,
    DictField,
    Document,
    IntField,
    StringField,
)
from pymongo import DESCENDING
from pymongo.client_session import ClientSession
from pymongo.database import Database

from contracts.api.points import REVERSAL_RULE_ID
from services.runtime.mongo import find_by_ids

#: Award and event ids derive from (source event, rule): a replay rebuilds the same ids.
IDS = uuid.UUID("6f1c2a0e-5b7d-4e8a-9c3f-2d4b6a8e0f17")


def award_id_for(source_event_id: str, rule_id: str) -> str:
    """A ledger entry's id. One id per (source, rule) is what makes an event award once
    under a rule and an award reversed once: the ledger's primary key enforces both."""
    return uuid.uuid5(IDS, f"{source_event_id}|{rule_id}").hex


def reversal_id_of(award_id: str) -> str:
    """The id the reversal of `award_id` has, if it was reversed."""
    return award_id_for(award_id, REVERSAL_RULE_ID)


class PointsRule(Document):
    """The current version of a rule (one document per rule id)."""

    rule_id = StringField(primary_key=True)
    version = IntField(required=True)
    definition = DictField(required=True)
    #: The definition as last read from the rules file: a restart with an edited file
    #: makes a new version, one with the same file keeps changes made through the API.
    file_definition = DictField()
    updated_at = DateTimeField(required=True)
    updated_by = StringField()
    meta = {"collection": "rules"}


class PointsRuleVersion(Document):
    """Every version of every rule, kept so a ledger entry's rule version can be looked up."""

    version_id = StringField(primary_key=True)  # "<rule_id>@<version>"
    rule_id = StringField(required=True)
    version = IntField(required=True)
    definition = DictField(required=True)
    updated_at = DateTimeField(required=True)
    updated_by = StringField()
    meta = {
        "collection": "rule_versions",
        "indexes": [{"fields": ["rule_id", "-version"], "name": "rule_versions"}],
    }


class PointsAccount(Document):
    """An agent's balance, ledger sequence and latest known snapshot (team, tier)."""

    agent_id = StringField(primary_key=True)
    balance = IntField(required=True, min_value=0)
    #: Number of ledger entries: each entry takes the next value (a stable sort key).
    seq = IntField(required=True)
    team_id = StringField()
    tier = StringField()
    #: Event time of the snapshot: a late, older event does not overwrite a newer one.
    snapshot_at = DateTimeField()
    updated_at = DateTimeField()
    meta = {"collection": "accounts"}


class PointsLedgerEntry(Document):
    """One change of a balance. Append-only: entries are never updated or deleted."""

    award_id = StringField(primary_key=True)
    agent_id = StringField(required=True)
    seq = IntField(required=True)
    delta = IntField(required=True)
    rule_id = StringField(required=True)
    rule_version = IntField()
    reason = StringField(required=True)
    source_event_id = StringField(required=True)
    source_event_type = StringField()
    occurred_at = DateTimeField(required=True)
    team_id = StringField(required=True)
    tier = StringField(required=True)
    balance = IntField(required=True)
    reversed_award_id = StringField()
    details = DictField()
    recorded_at = DateTimeField(required=True)
    recorded_by = StringField()
    meta = {
        "collection": "ledger",
        # One index besides the primary key, whose id (`award_id_for`) already makes an
        # award once per (source, rule). An agent's `seq` is unique without an index: it
        # comes from the account, which the same transaction rewrites, so two
        # transactions taking the same number conflict and one runs again.
        "indexes": [{"fields": ["agent_id", "-occurred_at", "-seq"], "name": "history"}],
    }


#: Ledger indexes of earlier releases, dropped on start: each cost every award an index
#: entry (with both, an insert took 0.39 to 0.43 ms of the local server's CPU per entry,
#: against 0.17 to 0.22 without), for a guarantee the ids and the account already give.
RETIRED_LEDGER_INDEXES = ("award_key", "agent_seq")


class DailyCap(Document):
    """Points a capped rule gave an agent on one local day."""

    cap_id = StringField(primary_key=True)  # "<agent_id>|<rule_id>|<YYYY-MM-DD>"
    agent_id = StringField(required=True)
    rule_id = StringField(required=True)
    day = StringField(required=True)
    used = IntField(required=True)
    meta = {"collection": "daily_caps"}


DOCUMENTS = (PointsRule, PointsRuleVersion, PointsAccount, PointsLedgerEntry, DailyCap)

RULES = PointsRule._get_collection_name()
RULE_VERSIONS = PointsRuleVersion._get_collection_name()
ACCOUNTS = PointsAccount._get_collection_name()
LEDGER = PointsLedgerEntry._get_collection_name()
DAILY_CAPS = DailyCap._get_collection_name()
#: What `Mongo(retired_indexes=...)` drops on start.
RETIRED_INDEXES = {LEDGER: RETIRED_LEDGER_INDEXES}


def cap_id(agent_id: str, rule_id: str, day: str) -> str:
    return f"{agent_id}|{rule_id}|{day}"


def version_id(rule_id: str, version: int) -> str:
    return f"{rule_id}@{version}"


# --- batches: one read and one write per collection ----------------------------------------
#
# Inside a transaction (snapshot isolation): an account or counter another instance changed
# after this transaction read it makes the batch's write of it (handlers._Books.save)
# conflict, and the transaction re-runs.


def find_accounts(
    db: Database, agent_ids: Collection[str], session: ClientSession | None = None
) -> dict[str, dict[str, Any]]:
    return find_by_ids(db[ACCOUNTS], agent_ids, session)


def find_caps(
    db: Database, cap_ids: Collection[str], session: ClientSession | None = None
) -> dict[str, dict[str, Any]]:
    return find_by_ids(db[DAILY_CAPS], cap_ids, session)


def recorded_award_ids(
    db: Database, award_ids: Collection[str], session: ClientSession | None = None
) -> set[str]:
    """Which of `award_ids` the ledger holds already."""
    return set(find_by_ids(db[LEDGER], award_ids, session, projection={"_id": 1}))


def append_entries(
    db: Database, entries: list[dict[str, Any]], session: ClientSession | None = None
) -> None:
    """Appends ledger entries, in order (a duplicate award id fails the whole write)."""
    if entries:
        db[LEDGER].insert_many(entries, session=session)


# --- history paging ------------------------------------------------------------------------


class BadCursor(ValueError):
    pass


def encode_cursor(entry: dict[str, Any]) -> str:
    """An opaque position after `entry` in (occurred_at, seq) descending order."""
    position = {"t": round(entry["occurred_at"].timestamp() * 1000), "s": entry["seq"]}
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
        millis, seq = int(position["t"]), int(position["s"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise BadCursor(cursor) from None
    return datetime.fromtimestamp(millis / 1000, UTC), seq


def history_page(
    db: Database, agent_id: str, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of an agent's ledger, newest event time first, and the next page's cursor.

    The position is (occurred_at, seq): an entry recorded while a client pages lands before
    or after the cursor, never shifting entries already paged over.
    """
    query: dict[str, Any] = {"agent_id": agent_id}
    if cursor is not None:
        occurred_at, seq = decode_cursor(cursor)
        query["$or"] = [
            {"occurred_at": {"$lt": occurred_at}},
            {"occurred_at": occurred_at, "seq": {"$lt": seq}},
        ]
    found = list(
        db[LEDGER]
        .find(query)
        .sort([("occurred_at", DESCENDING), ("seq", DESCENDING)])
        .limit(limit + 1)
    )
    page = found[:limit]
    shown: Iterable[dict[str, Any]]
    if cursor is None:
        # A reversal carries its award's event time and a later seq, so it comes just
        # before the award in this order: every award on a first page has its reversal, if
        # any, on the page too (the profile's read: one query instead of two).
        shown = page
    else:  # a reversal may be on an earlier page
        shown = db[LEDGER].find(
            {"_id": {"$in": [reversal_id_of(entry["_id"]) for entry in page]}},
            {"reversed_award_id": 1, "rule_id": 1},
        )
    reversals = {
        doc["reversed_award_id"]: doc["_id"] for doc in shown if doc["rule_id"] == REVERSAL_RULE_ID
    }
    for entry in page:
        entry["reversed_by"] = reversals.get(entry["_id"])
    next_cursor = encode_cursor(page[-1]) if len(found) > limit else None
    return page, next_cursor


def find_account(db: Database, agent_id: str) -> dict[str, Any] | None:
    return db[ACCOUNTS].find_one({"_id": agent_id})


def find_award(db: Database, agent_id: str, award_id: str) -> dict[str, Any] | None:
    entry = db[LEDGER].find_one({"_id": award_id, "agent_id": agent_id})
    if entry is not None:
        reversal = db[LEDGER].find_one({"_id": reversal_id_of(award_id)}, {"_id": 1})
        entry["reversed_by"] = reversal["_id"] if reversal else None
    return entry


def all_rules(db: Database) -> list[dict[str, Any]]:
    return list(db[RULES].find({}))


def rule_versions(db: Database, rule_id: str) -> list[dict[str, Any]]:
    return list(db[RULE_VERSIONS].find({"rule_id": rule_id}).sort("version", DESCENDING))
