"""Board queries on the real database held to the reference ranking (boards.ranked):
pages at any offset, exact ranks, and neighbours at the top, the bottom and across score
gaps, on a board with many ties and widely spread scores. Also: a period closes once
when two closers race. No broker needed: the handlers run on the database directly."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import eventlet
import pytest
from pymongo import MongoClient

from contracts.events import PointsAwarded, PointsChangeData
from services.leaderboards import handlers
from services.leaderboards.boards import PointChange, fold, ranked
from services.leaderboards.store import DOCUMENTS, BoardReader
from services.runtime.mongo import ServiceDatabase

pytestmark = pytest.mark.integration

TZ = "Asia/Shanghai"
BOARD = "2026-W20|global"


@pytest.fixture(scope="module")
def database_(database):
    client = MongoClient(database.uri, tz_aware=True)
    db = client[f"lbstore_{uuid.uuid4().hex[:8]}"]
    for document in DOCUMENTS:  # the indexes the service creates on start
        for spec in document._meta.get("index_specs", []):
            db[document._get_collection_name()].create_index(
                spec["fields"], unique=spec.get("unique", False)
            )
    service_db = ServiceDatabase(client, db, "skillquest/leaderboards", on_commit=lambda: None)
    yield service_db
    client.drop_database(db.name)
    client.close()


def award(agent: str, delta: int, at: datetime) -> PointsAwarded:
    data = PointsChangeData(
        agent_id=agent,
        award_id=str(uuid.uuid4()),
        delta=delta,
        rule_id="r",
        source_event_id=str(uuid.uuid4()),
        occurred_at=at,
        team_id="t1",
        tier="advanced",
        balance=max(delta, 0),
    )
    return PointsAwarded.create(source="t", subject=agent, time=at, data=data)


def apply(db: ServiceDatabase, events) -> None:
    now = datetime.now(UTC)
    for event in events:
        db.handle_once(
            "on_points", event, lambda uow, e=event: handlers.apply_points(e, uow, tz=TZ, now=now)
        )


def as_change(event) -> PointChange:
    d = event.data
    return PointChange(event.id, d.agent_id, d.delta, d.occurred_at, d.team_id, d.tier)


def test_pages_ranks_and_neighbours_match_the_reference(database_):
    rng = random.Random(3)
    monday = datetime(2026, 5, 11, 1, tzinfo=UTC)  # 2026-W20
    # Three times only: many agents tie on score AND time, so agent id decides often.
    times = [monday, monday + timedelta(hours=1), monday + timedelta(days=2)]
    events = []
    for i in range(120):
        score = rng.choice([1, 1, 2, 3, 7, 7, 7, 40, 41, 900, 25_000])
        events.append(award(f"s{i:03d}", score, rng.choice(times)))
    events.append(award("s000", -1, times[2]))  # s000 may drop to 0 and off the board
    apply(database_, events)

    expected = ranked(
        {
            agent: s
            for (board, agent), s in fold(map(as_change, events), TZ).items()
            if board == BOARD
        }
    )
    reader = BoardReader(database_.db)
    assert reader.stats(BOARD)["entries"] == len(expected)
    rows = [(agent, standing.score) for _, agent, standing in expected]
    for offset, limit in [(0, 10), (0, 100), (5, 7), (100, 50), (len(rows) - 1, 10), (500, 5)]:
        page = [(r.agent_id, r.score) for r in reader.top(BOARD, offset, limit)]
        assert page == rows[offset : offset + limit], (offset, limit)

    for rank, agent, standing in expected:
        row = reader.entry(BOARD, agent)
        assert (row.score, reader.rank(BOARD, row)) == (standing.score, rank)
    max_score = reader.stats(BOARD)["max_score"]
    for index in [0, 1, 5, len(expected) // 2, len(expected) - 2, len(expected) - 1]:
        rank, agent, _ = expected[index]
        row = reader.entry(BOARD, agent)
        above = [r.agent_id for r in reader.above(BOARD, row, 10, max_score)]
        below = [r.agent_id for r in reader.below(BOARD, row, 10)]
        assert above == [a for _, a, _ in expected[max(index - 10, 0) : index]], agent
        assert below == [a for _, a, _ in expected[index + 1 : index + 11]], agent

    # rebuild over a consistent database changes nothing
    report = handlers.rebuild(database_, tz=TZ)
    assert (report.entries_fixed, report.boards_recounted) == (0, 0)


def test_two_racing_closers_publish_one_close(database_):
    at = datetime(2026, 3, 3, 2, tzinfo=UTC)  # 2026-W10 and 2026-03
    apply(database_, [award("c1", 10, at), award("c2", 12, at)])
    later = datetime.now(UTC) + timedelta(seconds=1)  # points arrived just now (a backfill)
    pool = eventlet.GreenPool()
    results = list(
        pool.imap(
            lambda _: handlers.close_due_periods(
                database_, tz=TZ, now=later, grace=timedelta(seconds=0)
            ),
            range(4),
        )
    )
    closes = [kind for result in results for kind in result]
    # every ended period of this database closed once, by one of the four closers
    assert len(closes) == database_.db.period_closes.count_documents({}) >= 2
    keys = [doc["key"] for doc in database_.db.outbox.find()]
    assert sorted(keys) == sorted(set(keys)) and {"2026-W10", "2026-03"} <= set(keys)
    assert handlers.close_due_periods(database_, tz=TZ, now=later, grace=timedelta(0)) == []
