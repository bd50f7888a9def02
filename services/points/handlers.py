"""Applying the points rules through the store, one unit of work at a time.

Every function here runs inside a MongoDB transaction (`uow`): the daily cap counter, the
balance, the ledger entry and the outgoing event commit together or not at all, and a
write conflict with another instance re-runs the whole function (services/runtime/mongo.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from contracts.api.points import (
    ADJUSTMENT_RULE_ID,
    REVERSAL_RULE_ID,
    RuleDefinition,
    RuleUpdate,
)
from contracts.events import (
    AgentRegistered,
    AgentUpdated,
    PointsAwarded,
    PointsChangeData,
    PointsReversed,
    PointsReversedData,
)
from contracts.vocabulary import AgentSnapshot
from services.points.rules import (
    SHAPES,
    AwardingEvent,
    Rule,
    balance_after,
    cap_day,
    capped,
    problems_with,
    propose,
    rule_for,
)
from services.points.store import (
    ACCOUNTS,
    DAILY_CAPS,
    LEDGER,
    RULE_VERSIONS,
    RULES,
    cap_id,
    version_id,
)
from services.runtime.errors import BadRequest, Conflict, NotFound, RuleViolation
from services.runtime.mongo import UnitOfWork

#: Award and event ids derive from (source event, rule): a replay rebuilds the same ids.
_IDS = uuid.UUID("6f1c2a0e-5b7d-4e8a-9c3f-2d4b6a8e0f17")


class AlreadyAwarded(Exception):
    """The ledger already holds this (source event, rule): the transaction is abandoned."""


@dataclass(frozen=True)
class Change:
    """A committed ledger entry, reported to the caller (metrics, HTTP responses)."""

    rule_id: str
    delta: int
    entry: dict[str, Any]


def award_id_for(source_event_id: str, rule_id: str) -> str:
    return uuid.uuid5(_IDS, f"{source_event_id}|{rule_id}").hex


# --- rules --------------------------------------------------------------------------------


def rule_from_document(doc: Mapping[str, Any]) -> Rule:
    return Rule(doc["_id"], doc["version"], RuleDefinition.model_validate(doc["definition"]))


def current_rules(uow: UnitOfWork) -> dict[str, Rule]:
    docs = uow.collection(RULES).find({}, session=uow.session)
    return {doc["_id"]: rule_from_document(doc) for doc in docs}


def seed_rules(uow: UnitOfWork, table: Mapping[str, RuleDefinition], now: datetime) -> list[str]:
    """Stores the file's rule table: new rules at version 1; a rule whose file values
    changed since the last start gets a new version; API changes otherwise stay."""
    changed = []
    rules = uow.collection(RULES)
    for rule_id, definition in table.items():
        values = definition.model_dump(mode="json")
        current = rules.find_one({"_id": rule_id}, session=uow.session)
        if current is not None and current.get("file_definition") == values:
            continue
        if current is not None and current["definition"] == values:
            rules.update_one(
                {"_id": rule_id}, {"$set": {"file_definition": values}}, session=uow.session
            )
            continue
        version = 1 if current is None else current["version"] + 1
        _store_version(uow, rule_id, version, values, now, None, file_definition=values)
        changed.append(rule_id)
    return changed


def update_rule(
    uow: UnitOfWork, rule_id: str, update: RuleUpdate, now: datetime, actor: str | None
) -> dict[str, Any]:
    """An admin's new values for a rule: a new version, applied to future awards only."""
    current = uow.collection(RULES).find_one({"_id": rule_id}, session=uow.session)
    if current is None or rule_id not in SHAPES:
        raise NotFound(f"rule {rule_id} not found")
    definition = RuleDefinition.model_validate(update.model_dump(exclude={"expected_version"}))
    problems = problems_with(rule_id, definition)
    if problems:
        raise BadRequest(f"invalid values for rule {rule_id}", details=problems)
    if update.expected_version is not None and update.expected_version != current["version"]:
        raise Conflict(
            f"rule {rule_id} is at version {current['version']}, not "
            f"{update.expected_version}: read it again and resend",
            details={"version": current["version"]},
        )
    values = definition.model_dump(mode="json")
    if values == current["definition"]:
        return current  # nothing changes: no new version
    return _store_version(uow, rule_id, current["version"] + 1, values, now, actor)


def _store_version(
    uow: UnitOfWork,
    rule_id: str,
    version: int,
    values: dict[str, Any],
    now: datetime,
    actor: str | None,
    file_definition: dict[str, Any] | None = None,
) -> dict[str, Any]:
    doc = {
        "_id": rule_id,
        "version": version,
        "definition": values,
        "updated_at": now,
        "updated_by": actor,
    }
    fields = dict(doc)
    if file_definition is not None:
        fields["file_definition"] = file_definition
    # An API change keeps the file's values on record: the next start must not undo it.
    if version > 1 and file_definition is None:
        previous = uow.collection(RULES).find_one({"_id": rule_id}, session=uow.session)
        fields["file_definition"] = (previous or {}).get("file_definition", {})
    uow.collection(RULES).replace_one({"_id": rule_id}, fields, upsert=True, session=uow.session)
    history = {**doc, "_id": version_id(rule_id, version), "rule_id": rule_id}
    uow.collection(RULE_VERSIONS).insert_one(history, session=uow.session)
    return doc


# --- awards from events ---------------------------------------------------------------------


def award_points(
    event: AwardingEvent,
    uow: UnitOfWork,
    rules: Mapping[str, Rule],
    time_zone: str,
    now: datetime,
) -> list[Change]:
    """Applies the rule `event` triggers; the award (if any) is capped by the local day."""
    agent = event.data.agent
    proposal = propose(event, rules[rule_for(event)])
    if proposal is None:
        _note_snapshot(uow, agent, event.time)
        return []
    points = proposal.points
    details = dict(proposal.details)
    cap = rules[proposal.rule_id].definition.daily_cap
    if cap is not None:
        points = _take_from_cap(
            uow, agent.agent_id, proposal.rule_id, event.time, points, cap, time_zone
        )
        if points < proposal.points:
            details["capped_from"] = proposal.points
        if points == 0:
            _note_snapshot(uow, agent, event.time)
            return []  # the day's cap is used up: nothing recorded
    account = _award_to_account(uow, agent, points, event.time)
    entry = _record(
        uow,
        account,
        award_id=award_id_for(event.id, proposal.rule_id),
        delta=points,
        rule_id=proposal.rule_id,
        rule_version=proposal.rule_version,
        reason=proposal.reason,
        source_event_id=event.id,
        source_event_type=event.type,
        occurred_at=event.time,
        snapshot=(agent.team_id, agent.tier),
        details=details,
        now=now,
    )
    return [Change(proposal.rule_id, points, entry)]


def _take_from_cap(
    uow: UnitOfWork,
    agent_id: str,
    rule_id: str,
    at: datetime,
    points: int,
    cap: int,
    time_zone: str,
) -> int:
    """Takes up to `points` from the agent's cap for the local day of `at`; returns what it got.

    The counter is read and written in this transaction: an instance that changed it in the
    meantime makes this write conflict, and the runtime re-runs the transaction.
    """
    day = cap_day(at, time_zone).isoformat()
    key = cap_id(agent_id, rule_id, day)
    caps = uow.collection(DAILY_CAPS)
    # Optimistic: take all of it in one round trip, give back what did not fit (rare).
    counter: dict[str, Any] = caps.find_one_and_update(  # type: ignore[assignment]
        {"_id": key},
        {
            "$inc": {"used": points},
            "$setOnInsert": {"agent_id": agent_id, "rule_id": rule_id, "day": day},
        },
        upsert=True,
        return_document=ReturnDocument.AFTER,
        session=uow.session,
    )
    granted = capped(points, counter["used"] - points, cap)
    if granted < points:
        caps.update_one({"_id": key}, {"$inc": {"used": granted - points}}, session=uow.session)
    return granted


# --- agents -------------------------------------------------------------------------------


def record_agent(event: AgentRegistered | AgentUpdated, uow: UnitOfWork) -> bool:
    """Keeps the agent's latest team and tier (for adjustments before any activity)."""
    data = event.data
    snapshot = AgentSnapshot(agent_id=data.agent_id, team_id=data.team_id, tier=data.tier)
    _note_snapshot(uow, snapshot, event.time)
    return True


def _note_snapshot(uow: UnitOfWork, agent: AgentSnapshot, at: datetime) -> None:
    _award_to_account(uow, agent, 0, at)


def _award_to_account(
    uow: UnitOfWork, agent: AgentSnapshot, delta: int, at: datetime
) -> dict[str, Any]:
    """Adds a non-negative `delta` and keeps the newest snapshot by event time, in one
    round trip (the hot path: every awarding event); returns the account as it is now."""
    newer = {
        "$or": [
            {"$eq": [{"$ifNull": ["$snapshot_at", None]}, None]},
            {"$lte": ["$snapshot_at", at]},
        ]
    }
    return uow.collection(ACCOUNTS).find_one_and_update(  # type: ignore[return-value]
        {"_id": agent.agent_id},
        [
            {
                "$set": {
                    "balance": {"$add": [{"$ifNull": ["$balance", 0]}, delta]},
                    "seq": {"$add": [{"$ifNull": ["$seq", 0]}, 1 if delta else 0]},
                    "team_id": {"$cond": [newer, agent.team_id, "$team_id"]},
                    "tier": {"$cond": [newer, agent.tier, "$tier"]},
                    "snapshot_at": {"$cond": [newer, at, "$snapshot_at"]},
                }
            }
        ],
        upsert=True,
        return_document=ReturnDocument.AFTER,
        session=uow.session,
    )


def _change_balance(uow: UnitOfWork, agent_id: str, delta: int) -> dict[str, Any]:
    """An admin change of any sign: refused (422) when the balance would go below zero,
    404 for an agent never seen (no team or tier to file the change under)."""
    accounts = uow.collection(ACCOUNTS)
    current = accounts.find_one({"_id": agent_id}, session=uow.session)
    if current is None:
        raise NotFound(f"agent {agent_id} not found")
    after = balance_after(current["balance"], delta)
    if after is None:
        raise RuleViolation(
            f"the balance of agent {agent_id} is {current['balance']}: a change of {delta} "
            "would take it below zero",
            details={"balance": current["balance"], "delta": delta},
        )
    return accounts.find_one_and_update(  # type: ignore[return-value]
        {"_id": agent_id},
        {"$set": {"balance": after, "seq": current["seq"] + 1}},
        return_document=ReturnDocument.AFTER,
        session=uow.session,
    )


# --- the ledger ---------------------------------------------------------------------------


def _record(
    uow: UnitOfWork,
    account: dict[str, Any],
    *,
    award_id: str,
    delta: int,
    rule_id: str,
    rule_version: int | None,
    reason: str,
    source_event_id: str,
    source_event_type: str | None,
    occurred_at: datetime,
    snapshot: tuple[str, str],
    details: dict[str, Any] | None = None,
    recorded_by: str | None = None,
    reversed_award_id: str | None = None,
    now: datetime,
) -> dict[str, Any]:
    """Appends the ledger entry for a change already applied to `account`, and its event."""
    team_id, tier = snapshot
    entry = {
        "_id": award_id,
        "agent_id": account["_id"],
        "seq": account["seq"],
        "delta": delta,
        "rule_id": rule_id,
        "rule_version": rule_version,
        "reason": reason,
        "source_event_id": source_event_id,
        "source_event_type": source_event_type,
        "occurred_at": occurred_at,
        "team_id": team_id,
        "tier": tier,
        "balance": account["balance"],
        "reversed_award_id": reversed_award_id,
        "details": details or {},
        "recorded_at": now,
        "recorded_by": recorded_by,
    }
    try:
        uow.collection(LEDGER).insert_one(entry, session=uow.session)
    except DuplicateKeyError:
        raise AlreadyAwarded(f"{source_event_id}/{rule_id}") from None
    change = dict(
        agent_id=account["_id"],
        award_id=award_id,
        delta=delta,
        rule_id=rule_id,
        rule_version=rule_version,
        reason=reason,
        source_event_id=source_event_id,
        source_event_type=source_event_type,
        occurred_at=occurred_at,
        team_id=team_id,
        tier=tier,
        balance=account["balance"],
    )
    event_id = uuid.uuid5(_IDS, f"points-event|{award_id}")
    if reversed_award_id is None:
        uow.publish(
            PointsAwarded(
                id=str(event_id),
                source=uow.source,
                subject=account["_id"],
                time=occurred_at,
                data=PointsChangeData(**change),
            )
        )
    else:
        uow.publish(
            PointsReversed(
                id=str(event_id),
                source=uow.source,
                subject=account["_id"],
                time=occurred_at,
                data=PointsReversedData(**change, reversed_award_id=reversed_award_id),
            )
        )
    return entry


# --- admin changes --------------------------------------------------------------------------


def adjust(
    uow: UnitOfWork,
    agent_id: str,
    delta: int,
    reason: str,
    now: datetime,
    actor: str | None,
    adjustment_id: str | None = None,
) -> Change:
    """An admin adjustment: no source event, so it is its own source, at `now`, in the
    agent's current team and tier. Refused (422) when the balance would go below zero."""
    if delta == 0:
        raise BadRequest(
            "delta must not be zero",
            details=[{"field": "delta", "message": "send a positive or negative number"}],
        )
    award_id = adjustment_id or uuid.uuid4().hex
    account = _change_balance(uow, agent_id, delta)
    entry = _record(
        uow,
        account,
        award_id=award_id,
        delta=delta,
        rule_id=ADJUSTMENT_RULE_ID,
        rule_version=None,
        reason=reason,
        source_event_id=award_id,
        source_event_type=None,
        occurred_at=now,
        snapshot=(account["team_id"], account["tier"]),
        recorded_by=actor,
        now=now,
    )
    return Change(ADJUSTMENT_RULE_ID, delta, entry)


def reverse(
    uow: UnitOfWork, agent_id: str, award_id: str, reason: str, now: datetime, actor: str | None
) -> Change:
    """Undoes one award, once: in the period, team and tier the award counted in."""
    ledger = uow.collection(LEDGER)
    award = ledger.find_one({"_id": award_id, "agent_id": agent_id}, session=uow.session)
    if award is None:
        raise NotFound(f"award {award_id} of agent {agent_id} not found")
    if award["rule_id"] == REVERSAL_RULE_ID:
        raise RuleViolation("a reversal cannot be reversed: make an adjustment instead")
    earlier = ledger.find_one(
        {"source_event_id": award_id, "rule_id": REVERSAL_RULE_ID}, {"_id": 1}, session=uow.session
    )
    if earlier is not None:
        raise Conflict(
            f"award {award_id} was already reversed", details={"reversal_id": earlier["_id"]}
        )
    delta = -award["delta"]
    account = _change_balance(uow, agent_id, delta)
    entry = _record(
        uow,
        account,
        award_id=award_id_for(award_id, REVERSAL_RULE_ID),
        delta=delta,
        rule_id=REVERSAL_RULE_ID,
        rule_version=None,
        reason=reason,
        source_event_id=award_id,
        source_event_type=None,
        occurred_at=award["occurred_at"],
        snapshot=(award["team_id"], award["tier"]),
        details={"reversed_rule_id": award["rule_id"]},
        recorded_by=actor,
        reversed_award_id=award_id,
        now=now,
    )
    return Change(REVERSAL_RULE_ID, delta, entry)
