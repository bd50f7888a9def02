"""Awards a whole batch at a time (one transaction, bulk writes) against the real database:
a batch must leave exactly what the same events handled one by one leave (ledger, balances,
sequences, daily caps, snapshots, outgoing events), including caps crossed, many events of
one agent, late events and duplicates inside the batch."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import MongoClient

from contracts.envelope import CloudEvent
from contracts.events import AgentUpdated
from services.points import handlers
from services.points.rules import DEFAULT_RULES_FILE, Rule, load_rule_table
from services.points.service import AWARDS_CONSUMER
from services.points.store import ACCOUNTS, DAILY_CAPS, DOCUMENTS, LEDGER, cap_id
from services.runtime.mongo import ServiceDatabase
from services.runtime.outbox import outbox_events
from tests.support.databases import Statements, fresh_service_database
from tests.support.events import (
    agent_registered,
    agent_updated,
    assessment_graded,
    badge_awarded,
    course_completed,
    module_completed,
    snapshot,
    ticket_resolved,
)

pytestmark = pytest.mark.integration

TZ = "Asia/Shanghai"
DAY = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)  # 13:00 local
LATER = DAY + timedelta(hours=1)
NOW = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
RULES = {
    rule_id: Rule(rule_id, 1, definition)
    for rule_id, definition in load_rule_table(DEFAULT_RULES_FILE).items()
}


@pytest.fixture(scope="module")
def client(database) -> Iterator[MongoClient]:
    client: MongoClient = MongoClient(database.uri, tz_aware=True)
    yield client
    client.close()


@pytest.fixture
def fresh_database(client: MongoClient) -> Iterator[Callable[[], ServiceDatabase]]:
    """A new database with the service's collections and indexes, per call."""
    names = []

    def make() -> ServiceDatabase:
        made = fresh_service_database(client, "points", DOCUMENTS)
        names.append(made.db.name)
        return made

    yield make
    for name in names:
        client.drop_database(name)


def award(database: ServiceDatabase, events: Sequence[Any]) -> list[handlers.Change]:
    return database.transaction(lambda uow: handlers.award_batch(uow, list(events), RULES, TZ, NOW))


def one_by_one(database: ServiceDatabase, events: Sequence[Any]) -> list[handlers.Change]:
    return [change for event in events for change in award(database, [event])]


def state(database: ServiceDatabase) -> dict[str, Any]:
    """Everything an award leaves behind, in a comparable form (outgoing events in commit
    order; their ids derive from the awards, so they are compared too)."""
    db = database.db
    return {
        "ledger": list(db[LEDGER].find({}).sort("_id")),
        "accounts": list(db[ACCOUNTS].find({}).sort("_id")),
        "caps": list(db[DAILY_CAPS].find({}).sort("_id")),
        "outbox": [
            (event["event_id"], event["topic"], event["key"], event["value"])
            for event in outbox_events(db)
        ],
    }


def ledger_of(database: ServiceDatabase, agent_id: str) -> list[dict[str, Any]]:
    return list(database.db[LEDGER].find({"agent_id": agent_id}).sort("seq"))


def account_of(database: ServiceDatabase, agent_id: str) -> dict[str, Any]:
    return database.db[ACCOUNTS].find_one({"_id": agent_id}) or {}


def use_cap(database: ServiceDatabase, agent_id: str, day: str, used: int) -> None:
    """Points the ticket rule gave the agent earlier that local day."""
    database.db[DAILY_CAPS].insert_one(
        {
            "_id": cap_id(agent_id, "ticket-quality", day),
            "agent_id": agent_id,
            "rule_id": "ticket-quality",
            "day": day,
            "used": used,
        }
    )


def mixed_history() -> tuple[list[CloudEvent], dict[str, str]]:
    """Events of several agents interleaved as one partition delivers them."""
    names = {name: f"{name}-{uuid.uuid4().hex[:6]}" for name in ("capped", "busy", "moved")}
    capped = snapshot(names["capped"])
    busy = snapshot(names["busy"], tier="advanced")
    events: list[CloudEvent] = [
        # 48 of 50 used already: 2 of the first ticket, nothing of the second (its newer
        # snapshot is still kept), 5 of one on the day before.
        ticket_resolved(capped, DAY, "C1"),
        module_completed(busy, DAY, "m0"),
        ticket_resolved(snapshot(names["capped"], "team-2"), DAY + timedelta(hours=10), "C2"),
        ticket_resolved(capped, DAY - timedelta(days=1), "C3"),
    ]
    events += [module_completed(busy, DAY + timedelta(minutes=m), f"m{m}") for m in (1, 2)]
    events += [
        assessment_graded(busy, DAY + timedelta(minutes=3), score=100, attempt=1),  # 35
        assessment_graded(busy, DAY + timedelta(minutes=4), score=10, attempt=2),  # failed
        course_completed(busy, DAY + timedelta(minutes=5), course_tier="advanced"),  # 75
        badge_awarded(busy, DAY + timedelta(minutes=6), bonus=20),
    ]
    # Twelve good tickets of one day: the cap (50) is crossed inside the batch.
    events += [ticket_resolved(busy, DAY + timedelta(minutes=10 + i), f"T{i}") for i in range(12)]
    # The snapshot follows event time, not arrival: a backfill does not win, and an event
    # that awards nothing still moves it forward.
    moved = names["moved"]
    events += [
        module_completed(snapshot(moved, "team-new", "advanced"), DAY, "new"),
        module_completed(snapshot(moved, "team-old"), DAY - timedelta(days=3), "old"),
        assessment_graded(snapshot(moved, "team-x"), LATER + timedelta(microseconds=900), 0, 1),
        # In the same millisecond: the database keeps milliseconds, so this later-handled
        # one wins although its microseconds are smaller.
        assessment_graded(snapshot(moved, "team-y"), LATER + timedelta(microseconds=100), 0, 2),
    ]
    return events, names


def test_a_batch_leaves_exactly_what_one_by_one_leaves(fresh_database):
    events, names = mixed_history()
    day = "2026-11-23"
    single, batched = fresh_database(), fresh_database()
    for database in (single, batched):
        use_cap(database, names["capped"], day, 48)

    singles = one_by_one(single, events)
    changes = award(batched, events)

    assert [c.entry for c in changes] == [c.entry for c in singles]
    assert state(batched) == state(single)
    assert len(state(batched)["outbox"]) == len(changes) == 2 + 16 + 2

    capped = ledger_of(batched, names["capped"])
    assert [(e["delta"], e["seq"], e["balance"]) for e in capped] == [(2, 1, 2), (5, 2, 7)]
    assert capped[0]["details"]["capped_from"] == 5
    caps = {c["day"]: c["used"] for c in state(batched)["caps"] if c["agent_id"] == names["capped"]}
    assert caps == {day: 50, "2026-11-22": 5}
    assert account_of(batched, names["capped"])["team_id"] == "team-2"

    busy = ledger_of(batched, names["busy"])
    assert [e["seq"] for e in busy] == list(range(1, 17))
    assert [e["delta"] for e in busy] == [10, 10, 10, 35, 75, 20] + [5] * 10
    assert busy[-1]["balance"] == account_of(batched, names["busy"])["balance"] == 210
    assert account_of(batched, names["busy"])["seq"] == 16

    moved = account_of(batched, names["moved"])
    assert (moved["team_id"], moved["tier"], moved["balance"]) == ("team-y", "foundation", 20)
    teams = [e["team_id"] for e in ledger_of(batched, names["moved"])]
    assert teams == ["team-new", "team-old"]  # each award in the team it happened in


def test_a_batch_split_anywhere_gives_the_same_result(fresh_database):
    events, names = mixed_history()
    whole, split = fresh_database(), fresh_database()
    for database in (whole, split):
        use_cap(database, names["capped"], "2026-11-23", 48)
    award(whole, events)
    for start in range(0, len(events), 7):
        award(split, events[start : start + 7])
    assert state(split) == state(whole)


def test_a_redelivery_inside_a_batch_counts_once(fresh_database):
    agent = snapshot(f"dup-{uuid.uuid4().hex[:6]}")
    tickets = [ticket_resolved(agent, DAY + timedelta(minutes=i), f"T{i}") for i in range(3)]
    module = module_completed(agent, DAY)
    once, twice = fresh_database(), fresh_database()

    award(once, [*tickets, module])
    changes = award(twice, [tickets[0], tickets[1], tickets[0], module, tickets[2], module])

    assert [c.entry["source_event_id"] for c in changes] == [
        tickets[0].id,
        tickets[1].id,
        module.id,
        tickets[2].id,
    ]
    assert account_of(twice, agent.agent_id)["balance"] == 25
    assert twice.db[DAILY_CAPS].find_one()["used"] == 15
    once_state, twice_state = state(once), state(twice)
    assert {e["_id"] for e in twice_state["ledger"]} == {e["_id"] for e in once_state["ledger"]}
    assert len(twice_state["outbox"]) == 4


def test_an_award_in_the_ledger_is_skipped_and_the_rest_of_the_batch_goes_on(
    fresh_database,
):
    """A replay under another consumer record (a rebuild, a renamed consumer) meets awards
    the ledger holds: those change nothing, the new events in the same batch still award."""
    database = fresh_database()
    agent = snapshot(f"replay-{uuid.uuid4().hex[:6]}")
    first = [ticket_resolved(agent, DAY + timedelta(minutes=i), f"T{i}") for i in range(2)]
    work = lambda uow, events: handlers.award_batch(uow, events, RULES, TZ, NOW)  # noqa: E731
    handled = database.handle_batch(AWARDS_CONSUMER, first, work)
    assert handled.fresh_ids == {e.id for e in first}

    later = [ticket_resolved(agent, DAY + timedelta(minutes=5 + i), f"N{i}") for i in range(2)]
    mixed = [first[0], later[0], first[1], later[1]]
    replayed = database.handle_batch("points.replay", mixed, work)

    assert replayed.fresh_ids == {e.id for e in mixed}  # all new to this consumer
    assert [c.entry["source_event_id"] for c in replayed.result or []] == [e.id for e in later]
    ledger = ledger_of(database, agent.agent_id)
    assert [(e["source_event_id"], e["seq"], e["balance"]) for e in ledger] == [
        (first[0].id, 1, 5),
        (first[1].id, 2, 10),
        (later[0].id, 3, 15),
        (later[1].id, 4, 20),
    ]
    assert account_of(database, agent.agent_id)["balance"] == 20
    assert database.db[DAILY_CAPS].find_one()["used"] == 20  # the skipped ones took nothing
    assert len(state(database)["outbox"]) == 4


def team_moved(agent_id: str, team_id: str, tier: str, at: datetime) -> AgentUpdated:
    return agent_updated(snapshot(agent_id, team_id, tier), at, changed=["team_id"])


def test_roster_events_keep_the_newest_snapshot_in_a_batch_as_one_by_one(fresh_database):
    agent_id = f"roster-{uuid.uuid4().hex[:6]}"
    earner = snapshot(f"earner-{uuid.uuid4().hex[:6]}", team_id="team-1")
    events = [
        agent_registered(snapshot(agent_id, "team-1"), DAY),
        team_moved(agent_id, "team-3", "leadership", DAY + timedelta(days=2)),
        team_moved(agent_id, "team-2", "advanced", DAY + timedelta(days=1)),  # late
        team_moved(earner.agent_id, "team-9", "advanced", DAY + timedelta(days=1)),
    ]
    single, batched = fresh_database(), fresh_database()
    for database in (single, batched):
        award(database, [module_completed(earner, DAY)])  # an account with a balance
    for event in events:
        single.transaction(lambda uow, event=event: handlers.record_agents(uow, [event]))
    changed = batched.transaction(lambda uow: handlers.record_agents(uow, events))

    assert changed == 2
    assert state(batched)["accounts"] == state(single)["accounts"]
    roster = account_of(batched, agent_id)
    assert (roster["team_id"], roster["tier"], roster["balance"], roster["seq"]) == (
        "team-3",
        "leadership",
        0,
        0,
    )
    moved = account_of(batched, earner.agent_id)
    assert (moved["team_id"], moved["balance"], moved["seq"]) == ("team-9", 10, 1)


def test_a_roster_batch_of_new_and_known_agents_writes_them_in_two_commands(database):
    """New and known agents alternate in the batch: one insert command for the new, one
    update command for the known, not a command for each run of one kind."""
    commands = Statements()
    client: MongoClient = MongoClient(database.uri, tz_aware=True, event_listeners=[commands])
    made = fresh_service_database(client, "points", DOCUMENTS)
    try:
        known = [snapshot(f"known-{i}-{uuid.uuid4().hex[:6]}") for i in range(4)]
        made.transaction(
            lambda uow: handlers.record_agents(uow, [agent_registered(a, DAY) for a in known])
        )
        new = [snapshot(f"new-{i}-{uuid.uuid4().hex[:6]}") for i in range(4)]
        alternating = [agent for pair in zip(new, known, strict=True) for agent in pair]
        moves = [team_moved(a.agent_id, "team-7", "advanced", LATER) for a in alternating]
        commands.names.clear()
        changed = made.transaction(lambda uow: handlers.record_agents(uow, moves))

        assert changed == 8
        assert commands.writes == ["insert", "update"]
        assert {account_of(made, a.agent_id)["team_id"] for a in alternating} == {"team-7"}
    finally:
        client.drop_database(made.db.name)
        client.close()
