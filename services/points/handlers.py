"""Applying the points rules through the store, one unit of work at a time.

Every function here runs inside a MongoDB transaction (`uow`): the daily cap counters, the
balances, the ledger entries and the outgoing events commit together or not at all, and a
write conflict with another instance re-runs the whole function (services/runtime/mongo.py).
Events come in batches (one Kafka partition's poll): what a batch needs is read by id in a
few queries per collection, applied in memory in order, and written back with one bulk
write per collection.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
from services.common.times import to_millis
from services.points.rules import (
    SHAPES,
    AwardingEvent,
    Proposal,
    Rule,
    balance_after,
    cap_day,
    capped,
    is_newer_snapshot,
    problems_with,
    propose,
    rule_for,
)
from services.points.store import (
    ACCOUNTS,
    DAILY_CAPS,
    IDS,
    LEDGER,
    RULE_VERSIONS,
    RULES,
    append_entries,
    award_id_for,
    cap_id,
    find_accounts,
    find_caps,
    recorded_award_ids,
    reversal_id_of,
    version_id,
)
from services.runtime.errors import BadRequest, Conflict, NotFound, RuleViolation
from services.runtime.mongo import UnitOfWork, save_whole


class AlreadyAwarded(Exception):
    """An admin change whose award id the ledger holds already (an adjustment retried with
    its Idempotency-Key, a reversal made twice at once): the transaction is abandoned."""


@dataclass(frozen=True)
class Change:
    """A committed ledger entry, reported to the caller (metrics, HTTP responses)."""

    rule_id: str
    delta: int
    entry: dict[str, Any]


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


@dataclass(frozen=True)
class _Planned:
    """What one event would award before the batch's state is known: the rule's proposal
    (None: nothing), the cap it counts against, and the ledger id the award would take."""

    event: AwardingEvent
    proposal: Proposal | None
    cap: int | None = None
    cap_day: str = ""
    cap_key: str = ""
    award_id: str = ""


def _plan(event: AwardingEvent, rules: Mapping[str, Rule], time_zone: str) -> _Planned:
    proposal = propose(event, rules[rule_for(event)])
    if proposal is None:
        return _Planned(event, None)
    day = cap_day(event.time, time_zone).isoformat()
    return _Planned(
        event,
        proposal,
        cap=rules[proposal.rule_id].definition.daily_cap,
        cap_day=day,
        cap_key=cap_id(event.data.agent.agent_id, proposal.rule_id, day),
        award_id=award_id_for(event.id, proposal.rule_id),
    )


@dataclass
class _Books:
    """What a batch reads once and then changes in memory, event by event: the accounts
    and the daily cap counters as stored (with the ones it changed, to write back), and
    which of the batch's award ids the ledger holds already."""

    accounts: dict[str, dict[str, Any]]
    caps: dict[str, dict[str, Any]]
    awarded: set[str]
    changed_accounts: set[str] = field(default_factory=set)
    changed_caps: set[str] = field(default_factory=set)
    stored_accounts: frozenset[str] = field(init=False)
    stored_caps: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        # What the reads found is written back by replacement; what they did not, inserted.
        self.stored_accounts = frozenset(self.accounts)
        self.stored_caps = frozenset(self.caps)

    def save(self, uow: UnitOfWork) -> None:
        """Writes back, whole, the accounts and counters the batch changed: a statement each."""
        accounts = [self.accounts[a] for a in self.changed_accounts]
        save_whole(uow.collection(ACCOUNTS), accounts, self.stored_accounts, uow.session)
        caps = [self.caps[key] for key in self.changed_caps]
        save_whole(uow.collection(DAILY_CAPS), caps, self.stored_caps, uow.session)

    def account(self, agent_id: str) -> dict[str, Any]:
        # Not stored yet: inserted with what the batch sets on it (save_whole).
        return self.accounts.setdefault(agent_id, {"_id": agent_id, "balance": 0, "seq": 0})

    def used(self, key: str) -> int:
        counter = self.caps.get(key)
        return counter["used"] if counter is not None else 0

    def take(self, plan: _Planned, rule_id: str, points: int) -> None:
        counter = self.caps.setdefault(
            plan.cap_key,
            {
                "_id": plan.cap_key,
                "agent_id": plan.event.data.agent.agent_id,
                "rule_id": rule_id,
                "day": plan.cap_day,
                "used": 0,
            },
        )
        counter["used"] += points
        self.changed_caps.add(plan.cap_key)

    def note_snapshot(self, agent: AgentSnapshot, at: datetime) -> dict[str, Any]:
        """Keeps the newest snapshot by event time; returns the account."""
        account = self.account(agent.agent_id)
        at = to_millis(at)
        current = account.get("snapshot_at")
        if is_newer_snapshot(None if current is None else to_millis(current), at):
            account.update(team_id=agent.team_id, tier=agent.tier, snapshot_at=at)
            self.changed_accounts.add(agent.agent_id)
        return account

    def add(self, agent: AgentSnapshot, points: int, at: datetime) -> dict[str, Any]:
        account = self.note_snapshot(agent, at)
        account["balance"] = account.get("balance", 0) + points
        account["seq"] = account.get("seq", 0) + 1
        self.changed_accounts.add(agent.agent_id)
        return account


def award_batch(
    uow: UnitOfWork,
    events: Sequence[AwardingEvent],
    rules: Mapping[str, Rule],
    time_zone: str,
    now: datetime,
) -> list[Change]:
    """Applies the rules to a batch of events, in order, exactly as one by one would: each
    award capped by its local day, balances, ledger sequence and snapshots carried from one
    event to the next in memory. Reads what the batch needs by id (a chunk of ids a
    query) and writes it back with one bulk write per collection: the per-statement cost
    of the database dominates, not the data."""
    seen: set[str] = set()
    planned = []
    for event in events:
        if event.id not in seen:  # a redelivery inside the batch: the first copy counts
            seen.add(event.id)
            planned.append(_plan(event, rules, time_zone))
    awarding = [plan for plan in planned if plan.proposal is not None]
    books = _Books(
        accounts=find_accounts(
            uow.db, {plan.event.data.agent.agent_id for plan in planned}, uow.session
        ),
        caps=find_caps(
            uow.db, {plan.cap_key for plan in awarding if plan.cap is not None}, uow.session
        ),
        awarded=recorded_award_ids(uow.db, [plan.award_id for plan in awarding], uow.session),
    )
    entries = []
    changes = []
    for plan in planned:
        entry = _apply(books, plan, now)
        if entry is not None:
            entries.append(entry)
            changes.append(Change(entry["rule_id"], entry["delta"], entry))
    books.save(uow)
    append_entries(uow.db, entries, uow.session)
    for entry in entries:
        uow.publish(_event_for(entry, uow.source))
    return changes


def _apply(books: _Books, plan: _Planned, now: datetime) -> dict[str, Any] | None:
    """One event against the batch's books; the ledger entry it adds, if any."""
    event, proposal = plan.event, plan.proposal
    agent = event.data.agent
    if proposal is None:
        books.note_snapshot(agent, event.time)
        return None
    points = proposal.points
    details = dict(proposal.details)
    if plan.cap is not None:
        points = capped(points, books.used(plan.cap_key), plan.cap)
        if points < proposal.points:
            details["capped_from"] = proposal.points
        if points == 0:
            books.note_snapshot(agent, event.time)
            return None  # the day's cap is used up: nothing recorded
    if plan.award_id in books.awarded:
        # In the ledger already (a replay under another consumer record): this event
        # changes nothing, the rest of the batch goes on.
        return None
    if plan.cap is not None:
        books.take(plan, proposal.rule_id, points)
    account = books.add(agent, points, event.time)
    return _entry(
        account,
        award_id=plan.award_id,
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


# --- agents -------------------------------------------------------------------------------


def record_agents(uow: UnitOfWork, events: Sequence[AgentRegistered | AgentUpdated]) -> int:
    """Keeps each agent's latest team and tier (for adjustments before any activity), in
    one read and one write for the batch; returns how many accounts changed."""
    books = _Books(
        accounts=find_accounts(uow.db, {e.data.agent_id for e in events}, uow.session),
        caps={},
        awarded=set(),
    )
    for event in events:
        data = event.data
        snapshot = AgentSnapshot(agent_id=data.agent_id, team_id=data.team_id, tier=data.tier)
        books.note_snapshot(snapshot, event.time)
    books.save(uow)
    return len(books.changed_accounts)


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


def _record(uow: UnitOfWork, entry: dict[str, Any]) -> None:
    """Appends one ledger entry (an admin change) and its event; `AlreadyAwarded` when the
    ledger holds that award id already."""
    try:
        uow.collection(LEDGER).insert_one(entry, session=uow.session)
    except DuplicateKeyError:
        raise AlreadyAwarded(f"{entry['source_event_id']}/{entry['rule_id']}") from None
    uow.publish(_event_for(entry, uow.source))


def _entry(
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
    """The ledger entry for a change already applied to `account` (its seq and balance)."""
    team_id, tier = snapshot
    return {
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


def _event_for(entry: dict[str, Any], source: str) -> PointsAwarded | PointsReversed:
    """The event announcing a ledger entry; its id derives from the award id."""
    change = dict(
        agent_id=entry["agent_id"],
        award_id=entry["_id"],
        delta=entry["delta"],
        rule_id=entry["rule_id"],
        rule_version=entry["rule_version"],
        reason=entry["reason"],
        source_event_id=entry["source_event_id"],
        source_event_type=entry["source_event_type"],
        occurred_at=entry["occurred_at"],
        team_id=entry["team_id"],
        tier=entry["tier"],
        balance=entry["balance"],
    )
    event_id = str(uuid.uuid5(IDS, f"points-event|{entry['_id']}"))
    reversed_award_id = entry["reversed_award_id"]
    if reversed_award_id is None:
        return PointsAwarded(
            id=event_id,
            source=source,
            subject=entry["agent_id"],
            time=entry["occurred_at"],
            data=PointsChangeData(**change),
        )
    return PointsReversed(
        id=event_id,
        source=source,
        subject=entry["agent_id"],
        time=entry["occurred_at"],
        data=PointsReversedData(**change, reversed_award_id=reversed_award_id),
    )


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
    entry = _entry(
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
    _record(uow, entry)
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
    earlier = ledger.find_one({"_id": reversal_id_of(award_id)}, {"_id": 1}, session=uow.session)
    if earlier is not None:
        raise Conflict(
            f"award {award_id} was already reversed", details={"reversal_id": earlier["_id"]}
        )
    delta = -award["delta"]
    account = _change_balance(uow, agent_id, delta)
    entry = _entry(
        account,
        award_id=reversal_id_of(award_id),
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
    _record(uow, entry)
    return Change(REVERSAL_RULE_ID, delta, entry)
