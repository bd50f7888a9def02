"""The roster's display names held beside the read views (services/leaderboards/names.py),
on the real database: kept current from the names journal the roster batches write, read
again when a write bypassed it, and never newer-overwritten by an older roster event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from pymongo import MongoClient

from contracts.events import AgentRegistered, AgentUpdated
from services.leaderboards import handlers, names
from services.leaderboards.names import NameBook
from services.leaderboards.store import AGENTS, DOCUMENTS, BoardReader
from services.runtime.mongo import ServiceDatabase
from tests.support.databases import fresh_service_database
from tests.support.events import agent_registered, agent_updated, snapshot

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 12, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def client(database):
    client = MongoClient(database.uri, tz_aware=True)
    yield client
    client.close()


@pytest.fixture
def db(client):
    service_db = fresh_service_database(client, "lbnames", DOCUMENTS)
    yield service_db
    client.drop_database(service_db.db.name)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def registered(agent: str, name: str, team: str, at: datetime) -> AgentRegistered:
    return agent_registered(snapshot(agent, team), at, name=name)


def renamed(agent: str, name: str, team: str, at: datetime) -> AgentUpdated:
    return agent_updated(snapshot(agent, team), at, changed=["name"], name=name)


def roster(db: ServiceDatabase, events, lane: int = 0) -> list[bool]:
    """One roster batch, as the consumer handles it."""
    work = partial(handlers.apply_roster, lane=lane)
    return db.handle_batch("on_agent", list(events), work).result


class CountingReader:
    """The database read the book falls back to, counting the agents asked for."""

    def __init__(self, db: ServiceDatabase) -> None:
        self.reader = BoardReader(db.db)
        self.asked: list[str] = []

    def __call__(self, ids: list[str]):
        self.asked += ids
        return self.reader.names(ids)


def shown(book: NameBook, read: CountingReader, *ids: str) -> dict[str, tuple]:
    return {a: (d.get("name"), d.get("team_id")) for a, d in book.displays(ids, read).items()}


def loaded_book(db: ServiceDatabase, clock: Clock) -> NameBook:
    book = NameBook(db.db, max_agents=1_000, clock=clock)
    book.sync(wanted=True)
    assert book.ready()
    return book


def test_names_follow_the_roster_batches_of_every_lane(db):
    roster(db, [registered("n-a", "Ann", "t1", T0), registered("n-b", "Bo", "t1", T0)], lane=0)
    roster(db, [registered("n-c", "Cy", "t2", T0)], lane=1)
    clock = Clock()
    book = loaded_book(db, clock)
    read = CountingReader(db)
    assert shown(book, read, "n-a", "n-c") == {"n-a": ("Ann", "t1"), "n-c": ("Cy", "t2")}
    assert read.asked == []  # all held: no query

    # A rename, a move and a newcomer, in two lanes: held once the next round caught up.
    roster(db, [renamed("n-a", "Anna", "t1", T0 + timedelta(hours=1))], lane=0)
    roster(db, [renamed("n-c", "Cy", "t3", T0 + timedelta(hours=1))], lane=1)
    roster(db, [registered("n-d", "Di", "t2", T0)], lane=1)
    clock.now += 0.5
    book.sync(wanted=True)
    assert shown(book, read, "n-a", "n-c", "n-d") == {
        "n-a": ("Anna", "t1"),
        "n-c": ("Cy", "t3"),
        "n-d": ("Di", "t2"),
    }
    assert read.asked == []
    assert book.loads == {"first read": 1}


def test_an_older_roster_write_never_replaces_a_newer_name(db):
    roster(db, [registered("o-a", "First", "t1", T0)], lane=0)
    clock = Clock()
    book = loaded_book(db, clock)
    read = CountingReader(db)
    # The agent's events in two lanes (the topic was given more partitions): the older
    # write committed first, in the lane the book catches up last.
    roster(db, [renamed("o-a", "Older", "t1", T0 + timedelta(hours=1))], lane=1)
    roster(db, [renamed("o-a", "Newer", "t2", T0 + timedelta(hours=2))], lane=0)
    assert list(book._marks()) == [0, 1]  # lane 0 is caught up first
    shown(book, read, "o-a")
    clock.now += 0.5
    book.sync(wanted=True)
    assert shown(book, read, "o-a") == {"o-a": ("Newer", "t2")}

    # A name read from the database while the book was behind, then the records before it.
    roster(db, [renamed("o-a", "Third", "t2", T0 + timedelta(hours=3))], lane=0)
    roster(db, [renamed("o-a", "Fourth", "t2", T0 + timedelta(hours=4))], lane=1)
    del book._held["o-a"]  # not held: read, and kept
    assert shown(book, read, "o-a") == {"o-a": ("Fourth", "t2")}
    assert read.asked == ["o-a"]
    clock.now += 0.5
    book.sync(wanted=True)
    assert shown(book, read, "o-a") == {"o-a": ("Fourth", "t2")}


def test_an_agent_without_a_roster_entry_is_read_each_time(db):
    clock = Clock()
    roster(db, [registered("r-a", "Ann", "t1", T0)])
    book = loaded_book(db, clock)
    db.db[AGENTS].insert_one({"_id": "p-only", "points_team_id": "t7"})
    read = CountingReader(db)
    for _ in range(2):
        assert shown(book, read, "p-only") == {"p-only": (None, None)}
    assert read.asked == ["p-only", "p-only"]
    assert len(book) == 1


def test_a_write_past_the_journal_has_the_names_read_again(db):
    roster(db, [registered("w-a", "Ann", "t1", T0)])
    clock = Clock()
    book = loaded_book(db, clock)
    read = CountingReader(db)
    # A bulk load writes names straight into the collection and says so.
    db.db[AGENTS].update_one({"_id": "w-a"}, {"$set": {"name": "Restored"}})
    names.invalidate(db.db)
    shown(book, read, "w-a")  # read since the last round
    clock.now += 0.5
    book.sync(wanted=True)
    assert not book.ready()  # broken: the database answers until it is read again
    assert shown(book, read, "w-a") == {"w-a": ("Restored", "t1")}
    clock.now += 1
    book.sync(wanted=True)
    assert book.ready()
    assert book.loads == {"first read": 1, "chain broken": 1}


def test_names_not_caught_up_in_time_are_not_served_and_go_with_the_last_view(db):
    roster(db, [registered("s-a", "Ann", "t1", T0)])
    clock = Clock()
    book = loaded_book(db, clock)
    read = CountingReader(db)
    clock.now += book.stale_after + 0.1
    shown(book, read, "s-a")
    assert read.asked == ["s-a"]  # behind: read from the database
    book.sync(wanted=True)
    assert book.ready()
    book.sync(wanted=False)
    assert not book.ready() and len(book) == 0
