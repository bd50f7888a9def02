"""Board queries on the real database held to the reference ranking (boards.ranked):
pages at any offset (also starting or ending inside a tie), exact ranks, and neighbours at
the top, the bottom and across score gaps, on a board with many ties and widely spread
scores. Batches: duplicates inside a batch, repeats across batches and any order give the
entries and score count maps that the events one by one give; an entry moving lanes keeps
the maps exact; the rebuild repairs damaged maps. Read views follow the journal through
batches from several lanes, answer as the database does, are read again when a write
bypassed the journal, and keep to their budget. Also: a period closes once when two
closers race. No broker needed: the handlers run on the database directly."""

from __future__ import annotations

import itertools
import random
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from functools import partial

import eventlet
import pytest
from pymongo import MongoClient
from pymongo.errors import BulkWriteError

from contracts.api.leaderboards import LeaderboardQuery, PositionQuery
from contracts.events import PointsAwarded, PointsChangeData
from services.leaderboards import handlers, queries, store
from services.leaderboards.boards import PointChange, fold, ranked, total
from services.leaderboards.count_maps import is_packed
from services.leaderboards.store import DOCUMENTS, BoardReader, counts_id
from services.leaderboards.views import BoardViews
from services.runtime.errors import NotFound
from services.runtime.mongo import ServiceDatabase
from tests.support.count_maps import add_to_maps, drop_map, put_map, stored_maps
from tests.support.count_maps import counted_from_entries as entries_call_for
from tests.support.databases import fresh_service_database
from tests.support.events import agent_registered, snapshot
from tests.support.standings import (
    delete_entries,
    members_held,
    put_entry,
    stored_entries,
    stored_members,
)

pytestmark = pytest.mark.integration

TZ = "Asia/Shanghai"
BOARD = "2026-W20|global"


def fresh_database(client: MongoClient) -> ServiceDatabase:
    return fresh_service_database(client, "lbstore", DOCUMENTS)


@pytest.fixture(scope="module")
def client(database):
    client = MongoClient(database.uri, tz_aware=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def database_(client):
    service_db = fresh_database(client)
    yield service_db
    client.drop_database(service_db.db.name)


@pytest.fixture
def make_database(client):
    made: list[ServiceDatabase] = []

    def make() -> ServiceDatabase:
        made.append(fresh_database(client))
        return made[-1]

    yield make
    for db in made:
        client.drop_database(db.db.name)


_award_ids = itertools.count()


def award(
    agent: str, delta: int, at: datetime, team: str = "t1", tier: str = "advanced"
) -> PointsAwarded:
    data = PointsChangeData(
        agent_id=agent,
        award_id=f"sa{next(_award_ids)}",
        delta=delta,
        rule_id="r",
        source_event_id=str(uuid.uuid4()),
        occurred_at=at,
        team_id=team,
        tier=tier,
        balance=max(delta, 0),
    )
    return PointsAwarded.create(source="t", subject=agent, time=at, data=data)


def lane_of(agent: str) -> int:
    """Events are keyed by agent: one agent's come from one lane."""
    return zlib.crc32(agent.encode()) % 3


def apply_batch(db: ServiceDatabase, events, lane: int) -> object:
    """One batch the way the consumer applies it: the work, deduplicated by its own log."""
    work = partial(handlers.apply_points, lane=lane, tz=TZ, now=datetime.now(UTC))
    return db.apply_batch(list(events), work)


def apply(db: ServiceDatabase, events, batch: int = 25) -> None:
    """The events in batches of up to `batch`, grouped by their agents' lanes."""
    by_lane: dict[int, list] = {}
    for event in events:
        by_lane.setdefault(lane_of(event.data.agent_id), []).append(event)
    for lane, mine in sorted(by_lane.items()):
        for start in range(0, len(mine), batch):
            apply_batch(db, mine[start : start + batch], lane)


def as_change(event) -> PointChange:
    d = event.data
    return PointChange(event.id, d.agent_id, d.delta, d.occurred_at, d.team_id, d.tier)


def entries(db: ServiceDatabase) -> dict[tuple[str, str], tuple[int, datetime, int]]:
    return {
        key: (row.score, row.reached_at, row.lane or 0)
        for key, row in stored_entries(db.db).items()
    }


def count_maps(db: ServiceDatabase) -> dict[str, dict[int, int]]:
    return stored_maps(db.db)


def counted_from_entries(db: ServiceDatabase) -> dict[str, dict[int, int]]:
    return entries_call_for(db.db)


def reference(events, board: str) -> list:
    return ranked(
        {agent: s for (key, agent), s in fold(map(as_change, events), TZ).items() if key == board}
    )


def test_pages_ranks_and_neighbours_match_the_reference(database_):
    rng = random.Random(3)
    monday = datetime(2026, 5, 11, 1, tzinfo=UTC)  # 2026-W20
    # Three times only: many agents tie on score AND time, so agent id decides often.
    times = [monday, monday + timedelta(hours=1), monday + timedelta(days=2)]
    events = []
    for i in range(120):
        score = rng.choice([1, 1, 2, 3, 7, 7, 7, 40, 41, 900, 25_000])
        events.append(award(f"s-{i:03d}", score, rng.choice(times)))
    events.append(award("s-000", -1, times[2]))  # s-000 may drop to 0 and off the board
    apply(database_, events)

    expected = reference(events, BOARD)
    reader = BoardReader(database_.db)
    histogram = reader.histogram(BOARD)
    assert total(histogram) == len(expected)
    assert count_maps(database_) == counted_from_entries(database_)
    rows = [(agent, standing.score) for _, agent, standing in expected]
    # Every start and length: pages that begin and end inside ties, span band edges, run
    # past the end, or start beyond it.
    for offset in range(0, len(rows) + 2):
        for limit in (1, 2, 5, 13, 100):
            page = [(r.agent_id, r.score) for r in reader.top(BOARD, offset, limit)]
            assert page == rows[offset : offset + limit], (offset, limit)

    for index in range(len(expected)):
        rank, agent, standing = expected[index]
        row = reader.entry(BOARD, agent)
        assert row.score == standing.score
        for k in (0, 1, 4, 10):
            placed, above, below = reader.place(BOARD, row, k, histogram)
            assert placed == rank, (agent, k)
            assert [r.agent_id for r in above] == [
                a for _, a, _ in expected[max(index - k, 0) : index]
            ], agent
            assert [r.agent_id for r in below] == [
                a for _, a, _ in expected[index + 1 : index + 1 + k]
            ], agent

    # rebuild over a consistent database changes nothing
    report = handlers.rebuild(database_, tz=TZ)
    assert (report.entries_fixed, report.boards_recounted) == (0, 0)


@pytest.mark.parametrize("read_whole", [100, 2], ids=["tie-read-whole", "tie-counted"])
def test_ranks_inside_one_tie_go_by_time_then_agent_id(make_database, monkeypatch, read_whole):
    # Ties up to TIE_READ_WHOLE are read in one query, larger ones counted: both agree.
    monkeypatch.setattr(store, "TIE_READ_WHOLE", read_whole)
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    events = [
        award("tie-e", 10, t + timedelta(minutes=5)),
        award("tie-b", 10, t),
        award("tie-a", 10, t),
        award("tie-d", 4, t),
        award("tie-d", 6, t + timedelta(minutes=1)),  # 10, reached after a and b
        award("tie-c", 10, t + timedelta(minutes=1)),  # same time as d: c first
        award("top-x", 11, t + timedelta(days=1)),
        award("low-y", 9, t - timedelta(days=1)),
    ]
    apply(db, events)
    reader = BoardReader(db.db)
    histogram = reader.histogram(BOARD)
    order = ["top-x", "tie-a", "tie-b", "tie-c", "tie-d", "tie-e", "low-y"]
    assert [a for _, a, _ in reference(events, BOARD)] == order
    for rank, agent in enumerate(order, 1):
        row = reader.entry(BOARD, agent)
        assert reader.place(BOARD, row, 0, histogram)[0] == rank
    row = reader.entry(BOARD, "tie-c")
    for k, (want_above, want_below) in {
        0: ([], []),
        2: (["tie-a", "tie-b"], ["tie-d", "tie-e"]),
        3: (["top-x", "tie-a", "tie-b"], ["tie-d", "tie-e", "low-y"]),  # past the tie
    }.items():
        rank, above, below = reader.place(BOARD, row, k, histogram)
        assert rank == 4
        assert [r.agent_id for r in above] == want_above
        assert [r.agent_id for r in below] == want_below
    # counts gone stale (an agent arrived above after they were read) put the rank one
    # off, but never the row among its own neighbours, nor one behind it among those ahead
    apply(db, [award("new-z", 50, t)])
    rank, above, below = reader.place(BOARD, row, 2, histogram)
    assert rank == 4
    assert [r.agent_id for r in above] == ["tie-a", "tie-b"]
    assert [r.agent_id for r in below] == ["tie-d", "tie-e"]
    assert reader.place(BOARD, row, 2, reader.histogram(BOARD)) == (5, above, below)
    assert [r.agent_id for r in reader.top(BOARD, 2, 3)] == ["tie-a", "tie-b", "tie-c"]


def test_batches_give_what_the_events_one_by_one_give(make_database):
    rng = random.Random(8)
    start = datetime(2026, 5, 8, 2, tzinfo=UTC)  # 2026-W19/W20 and the 2026-05 month
    agents = [f"bt-{i}" for i in range(9)]
    events = []
    for n in range(90):
        agent = rng.choice(agents)
        at = start + timedelta(hours=rng.randrange(0, 24 * 6), milliseconds=n)
        team, tier = rng.choice(["red", "blue"]), rng.choice(["foundation", "advanced"])
        events.append(award(agent, rng.choice([3, 5, 5, 10, 20]), at, team, tier))
    # reversals to zero and below: agents leave boards, and come back
    for event in rng.sample(events, 12):
        d = event.data
        events.append(award(d.agent_id, -d.delta, d.occurred_at, d.team_id, d.tier))

    one_by_one = make_database()
    for event in events:
        apply_batch(one_by_one, [event], lane_of(event.data.agent_id))

    # The same events shuffled, with repeats across batches and inside them, cut into a few
    # batches per lane: through the handled ids as the consumer applies them, and straight
    # into the handler (a database restored without its handled ids: the applied log alone
    # must keep every repeat from counting twice).
    batched, direct = make_database(), make_database()
    stream = events + rng.sample(events, 30)
    rng.shuffle(stream)
    by_lane: dict[int, list] = {}
    for event in stream:
        by_lane.setdefault(lane_of(event.data.agent_id), []).append(event)
    applied = 0
    for lane, mine in by_lane.items():
        cuts = sorted(rng.sample(range(1, len(mine)), 3))
        for part in (mine[: cuts[0]], mine[cuts[0] : cuts[1]], mine[cuts[1] :], mine[:9]):
            part = part + part[:2]  # the same event twice in one batch
            apply_batch(batched, part, lane)
            applied += len(
                direct.transaction(
                    lambda uow, part=part, lane=lane: handlers.apply_points(
                        uow, part, lane=lane, tz=TZ, now=datetime.now(UTC)
                    )
                )
            )
    assert applied == len(events)  # each event applied once, every repeat skipped

    expected = {
        key: (standing.score, standing.reached_at)
        for key, standing in fold(map(as_change, events), TZ).items()
    }
    for db in (one_by_one, batched, direct):
        assert {key: value[:2] for key, value in entries(db).items()} == {
            key: (score, at.replace(microsecond=at.microsecond // 1000 * 1000))
            for key, (score, at) in expected.items()
        }
        assert count_maps(db) == counted_from_entries(db)
        assert db.db.applied_points.count_documents({}) == len(events)
    teams = {d["_id"]: d["points_team_id"] for d in one_by_one.db.agents.find()}
    periods = sorted(d["_id"] for d in one_by_one.db.periods.find())
    assert {"2026-W19", "2026-W20", "2026-05"} <= set(periods)
    for db in (batched, direct):
        assert entries(db) == entries(one_by_one)
        assert count_maps(db) == count_maps(one_by_one)
        assert {d["_id"]: d["points_team_id"] for d in db.db.agents.find()} == teams
        assert sorted(d["_id"] for d in db.db.periods.find()) == periods


def test_the_team_of_point_events_is_kept_only_for_agents_the_roster_has_not_written(
    make_database,
):
    db = make_database()
    t0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
    roster = partial(handlers.apply_roster, lane=0)
    db.handle_batch("on_agent", [agent_registered(snapshot("on-roster", "t-roster"), t0)], roster)

    apply_batch(db, [award("on-roster", 5, t0, team="t-old"), award("unlisted", 5, t0)], 0)
    apply_batch(db, [award("unlisted", 5, t0 + timedelta(hours=2), team="t-new")], 0)
    apply_batch(db, [award("unlisted", 5, t0 + timedelta(hours=1), team="t-late")], 0)

    agents = {doc["_id"]: doc for doc in db.db[store.AGENTS].find()}
    assert "points_team_id" not in agents["on-roster"]
    assert store.display(agents["on-roster"]) == ("Li Wei", "t-roster")
    assert store.display(agents["unlisted"]) == (None, "t-new")

    # Once listed, the roster's team is shown, and point events no longer write the agent.
    db.handle_batch("on_agent", [agent_registered(snapshot("unlisted", "t-r"), t0)], roster)
    before = db.db[store.AGENTS].find_one({"_id": "unlisted"})
    apply_batch(db, [award("unlisted", 5, t0 + timedelta(hours=3), team="t-later")], 0)
    after = db.db[store.AGENTS].find_one({"_id": "unlisted"})
    assert after == before
    assert store.display(after) == ("Li Wei", "t-r")


def test_a_redelivered_batch_is_skipped_by_the_applied_log_alone(make_database):
    """The points consumer keeps no handled-id record: its applied log is the record."""
    db = make_database()
    at = datetime(2026, 3, 2, 9, tzinfo=UTC)
    first = [award("ada", 5, at), award("bob", 3, at)]
    handled = apply_batch(db, [*first, first[0]], lane=0)
    assert handled.fresh_ids == {event.id for event in first}

    again = apply_batch(db, [first[1], award("ada", 2, at + timedelta(minutes=1))], lane=0)
    assert first[1].id not in again.fresh_ids and len(again.fresh_ids) == 1
    assert db.db["processed_events"].count_documents({}) == 0
    reader = BoardReader(db.db)
    board = "all-time|global"
    assert [(row.agent_id, row.score) for row in reader.top(board, 0, 10)] == [
        ("ada", 7),
        ("bob", 3),
    ]


def test_an_entry_moving_lanes_keeps_the_count_maps_exact(make_database):
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    mover, still = award("mv-a", 10, t), award("mv-b", 10, t)
    apply_batch(db, [mover, still], 0)
    maps = count_maps(db)
    assert maps[counts_id(BOARD, 0)] == {10: 2}

    # the same agent's events now come from lane 2 (its partition moved): its entries move
    apply_batch(db, [award("mv-a", 5, t + timedelta(hours=1))], 2)
    maps = count_maps(db)
    assert maps[counts_id(BOARD, 0)] == {10: 1}
    assert maps[counts_id(BOARD, 2)] == {15: 1}
    assert count_maps(db) == counted_from_entries(db)

    # a net change of 0 still moves the entry (and its count) to the batch's lane, and the
    # map left empty in lane 0 goes away
    apply_batch(
        db, [award("mv-b", 4, t + timedelta(hours=2)), award("mv-b", -4, t + timedelta(hours=2))], 1
    )
    maps = count_maps(db)
    assert counts_id(BOARD, 0) not in maps
    assert maps[counts_id(BOARD, 1)] == {10: 1}
    assert count_maps(db) == counted_from_entries(db)

    # leaving the board takes the count back; the map keeps no zero
    apply_batch(db, [award("mv-a", -15, t + timedelta(hours=3))], 2)
    assert counts_id(BOARD, 2) not in count_maps(db)
    assert count_maps(db) == counted_from_entries(db)
    reader = BoardReader(db.db)
    assert total(reader.histogram(BOARD)) == 1
    assert [r.agent_id for r in reader.top(BOARD, 0, 10)] == ["mv-b"]


def test_rebuild_repairs_damaged_count_maps(make_database):
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    apply(db, [award(f"rp-{i}", 5 + i % 4, t + timedelta(minutes=i)) for i in range(12)])
    good = count_maps(db)
    add_to_maps(db.db, {"_id": counts_id(BOARD, 1)}, {5: 3, 99: 1})
    add_to_maps(db.db, {"_id": counts_id(BOARD, 2)}, {6: -1})  # a count lost
    drop_map(db.db, "all-time|global", 0)
    put_map(db.db, BOARD, 7, {1: 4})  # a lane nobody is counted in
    put_map(db.db, "2026-W01|global", 0, {})  # an empty map left behind
    assert total(BoardReader(db.db).histogram(BOARD)) != 12  # the damage shows

    report = handlers.rebuild(db, tz=TZ)
    assert report.entries_fixed == 0
    assert report.boards_recounted == 3
    assert count_maps(db) == good == counted_from_entries(db)
    assert total(BoardReader(db.db).histogram(BOARD)) == 12

    # a lost entry is recreated in its agent's lane (its map, still counting it, is then
    # recounted)
    delete_entries(db.db, [(BOARD, "rp-4")])
    report = handlers.rebuild(db, tz=TZ)
    assert (report.entries_fixed, report.boards_recounted) == (1, 1)
    assert entries(db)[(BOARD, "rp-4")][2] == lane_of("rp-4")
    assert count_maps(db) == good
    again = handlers.rebuild(db, tz=TZ)
    assert (again.entries_fixed, again.boards_recounted) == (0, 0)

    # an entry on a board its agent's log never counted in goes (with its count)
    stray = "2026-W01|global"
    put_entry(db.db, stray, "rp-5", 3, t)
    add_to_maps(db.db, {"_id": counts_id(stray, 0)}, {3: 1})
    report = handlers.rebuild(db, tz=TZ)
    assert report.entries_fixed == 1
    assert (stray, "rp-5") not in entries(db)
    assert count_maps(db) == good == counted_from_entries(db)


def store_as_legacy_entries(db: ServiceDatabase, lanes: bool = True) -> None:
    """Rewrites the stored entries as an earlier release kept them: one document per
    (board, agent), in `board_entries`, with no version (and no lane unless `lanes`)."""
    legacy = [
        {
            "_id": f"{board}|{agent}",
            "board": board,
            "agent_id": agent,
            "score": row.score,
            "reached_at": row.reached_at,
            **({"lane": row.lane} if lanes else {}),
        }
        for (board, agent), row in stored_entries(db.db).items()
    ]
    db.db.standings.delete_many({})
    db.db.team_members.delete_many({})  # that release read team boards from an index
    db.db.board_entries.insert_many(legacy)
    db.db.board_entries.create_index("agent_id", name="by_agent")


def test_boards_stored_before_count_maps_are_upgraded_on_start(make_database):
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    apply(db, [award(f"up-{i}", 5 + i % 3, t + timedelta(minutes=i)) for i in range(9)])
    want = {(key, agent): (score, at) for (key, agent), (score, at, _) in entries(db).items()}
    # What the earlier release left: entries without a lane, per-board totals, no maps.
    store_as_legacy_entries(db, lanes=False)
    db.db.score_counts.delete_many({})
    db.db["boards"].insert_one({"_id": BOARD, "entries": 9, "max_score": 8})

    assert handlers.upgrade_storage(db) > 0
    assert "boards" not in db.db.list_collection_names()
    assert "board_entries" not in db.db.list_collection_names()
    assert {k: v[:2] for k, v in entries(db).items()} == want
    assert count_maps(db) == counted_from_entries(db)  # entries without lanes: lane 0
    assert total(BoardReader(db.db).histogram(BOARD)) == 9
    assert handlers.upgrade_storage(db) == 0  # once only
    # and the boards go on from there
    apply(db, [award("up-0", 100, t + timedelta(hours=1))])
    assert {k: v[:2] for k, v in entries(db).items()}.keys() == want.keys()
    assert total(BoardReader(db.db).histogram(BOARD)) == 9
    assert count_maps(db) == counted_from_entries(db)


def test_an_agent_moving_team_and_tier_within_a_period_is_on_every_board_it_earned_on(
    make_database,
):
    """Standings documents hold one team's and one tier's entry per agent and period; the
    others are in spill documents (services/leaderboards/standings.py). Every entry is
    found, ranked, repaired by the rebuild and moved from the earlier layout alike."""
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    moves = [
        ("red", "foundation"),
        ("blue", "advanced"),
        ("green", "advanced"),
        ("red", "leadership"),
    ]
    events = [
        award("mv-0", 5 + i, t + timedelta(hours=i), team, tier)
        for i, (team, tier) in enumerate(moves)
    ]
    events += [award(f"mv-{i}", 6, t, "blue", "advanced") for i in range(1, 4)]
    apply(db, events)

    def check() -> None:
        want = {key: (s.score, s.reached_at) for key, s in fold(map(as_change, events), TZ).items()}
        assert {key: value[:2] for key, value in entries(db).items()} == want
        assert count_maps(db) == counted_from_entries(db)
        reader = BoardReader(db.db)
        for team in ("red", "blue", "green"):
            board = f"2026-W20|team:{team}"
            want_rows = [(r.agent_id, r.score) for r in reader.top(board, 0, 10)]
            assert want_rows == expected_rows(events, board)
            assert reader.entry(board, "mv-0") is not None
        assert reader.entry("2026-W20|team:gold", "mv-0") is None
        assert stored_members(db.db) == members_held(db.db)

    check()
    primary = db.db.standings.find_one({"_id": "2026-W20|mv-0"})
    assert (primary["team"]["id"], primary["tier"]["id"]) == ("red", "foundation")
    spills = {d["_id"] for d in db.db.standings.find({"agent_id": "mv-0", "period": "2026-W20"})}
    assert spills == {
        "2026-W20|mv-0",
        "2026-W20|mv-0|team:blue",
        "2026-W20|mv-0|team:green",
        "2026-W20|mv-0|tier:advanced",
        "2026-W20|mv-0|tier:leadership",
    }

    # The primary's team entry lost: a spill takes its slot, and the rebuild puts the lost
    # entry back (in a spill now); later points find each entry where it is.
    delete_entries(db.db, [("2026-W20|team:red", "mv-0")])
    assert db.db.standings.find_one({"_id": "2026-W20|mv-0"})["team"]["id"] != "red"
    report = handlers.rebuild(db, tz=TZ)
    assert report.entries_fixed == 1
    check()
    events += [award("mv-0", 40, t + timedelta(hours=9), team) for team in ("red", "green")]
    apply(db, events[-2:])
    check()
    assert handlers.rebuild(db, tz=TZ).entries_fixed == 0

    # Moved from an earlier release's layout (one document per entry) on start.
    store_as_legacy_entries(db)
    assert handlers.upgrade_storage(db) > 0
    check()
    assert "board_entries" not in db.db.list_collection_names()
    assert handlers.upgrade_storage(db) == 0


def test_team_boards_are_read_from_their_entries_with_no_maps_and_no_views(make_database):
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    team_board = "2026-W20|team:tb"
    events = [award(f"tb-{i}", 1 + i % 3, t + timedelta(minutes=i), team="tb") for i in range(9)]
    apply(db, events)
    assert not [m for m in count_maps(db) if "|team:" in m]
    assert not [r for r in db.db.entry_journal.find({}, {"board": 1}) if "|team:" in r["board"]]
    assert db.db.entry_journal.count_documents({}) > 0
    assert count_maps(db) == counted_from_entries(db)  # the global and tier boards keep theirs

    clock = Clock()
    views = views_on(db, clock)
    views.ready(team_board)
    views.sync()
    assert views.ready(team_board) is None  # never held: no journal to follow
    kwargs = {"tz": TZ, "now": datetime(2026, 5, 13, tzinfo=UTC), "views": views}
    ask = LeaderboardQuery(scope="team:tb", limit=100)
    page = queries.leaderboard(db.db, "2026-W20", ask, fresh_for=5.0, **kwargs)
    assert page.total == 9
    assert [(e.agent_id, e.score) for e in page.entries] == expected_rows(events, team_board)
    at = queries.position(
        db.db, "2026-W20", "tb-4", PositionQuery(scope="team:tb", neighbors=1), **kwargs
    )
    want = reference(events, team_board)
    index = [agent for _, agent, _ in want].index("tb-4")
    assert (at.rank, at.score) == (want[index][0], want[index][2].score)
    assert [e.agent_id for e in at.above] == [want[index - 1][1]]

    # A change is read at once (nothing is cached under tokens a team board does not have).
    reader = BoardReader(db.db)
    before = reader.top(team_board, 0, 3)
    assert [(r.agent_id, r.score) for r in before] == expected_rows(events, team_board)[:3]
    later = [award("tb-0", 50, t + timedelta(hours=1), team="tb")]
    apply(db, later)
    top = reader.top(team_board, 0, 3)
    assert [(r.agent_id, r.score) for r in top] == expected_rows(events + later, team_board)[:3]
    assert top[0].agent_id == "tb-0"

    # Maps an earlier release wrote for a team board are dropped on start; the board reads
    # the same.
    put_map(db.db, team_board, 0, {1: 99})
    assert handlers.upgrade_storage(db) == 1
    assert not [m for m in count_maps(db) if "|team:" in m]
    assert total(reader.histogram(team_board)) == 9
    assert handlers.upgrade_storage(db) == 0
    # ... and by the rebuild's recount, which writes none in their place.
    put_map(db.db, team_board, 0, {1: 99})
    assert handlers.rebuild(db, tz=TZ).boards_recounted == 1
    assert not [m for m in count_maps(db) if "|team:" in m]


def test_team_boards_of_an_earlier_release_get_their_members_on_start(make_database):
    """That release read team boards through a `rank_team` index of the standings and kept
    no member records: the upgrade records them, then drops the index."""
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    events = [award(f"tm-{i}", 1 + i, t + timedelta(minutes=i), team="tm") for i in range(6)]
    events += [award("tm-0", 9, t + timedelta(hours=1), team="other")]  # a spill
    apply(db, events)
    board = "2026-W20|team:tm"
    want = expected_rows(events, board)
    assert len(stored_members(db.db)) == 3 * 7  # three periods: six agents in tm, one moved
    db.db.team_members.delete_many({})
    fields = [("period", 1), ("team.id", 1), ("team.score", -1), ("team.reached_at", 1)]
    db.db.standings.create_index([*fields, ("agent_id", 1)], name="rank_team")
    assert BoardReader(db.db).top(board, 0, 10) == []  # no members: an empty board

    handlers.upgrade_storage(db)
    assert stored_members(db.db) == members_held(db.db)
    assert "rank_team" not in db.db.standings.index_information()
    assert [(r.agent_id, r.score) for r in BoardReader(db.db).top(board, 0, 10)] == want
    handlers.upgrade_storage(db)  # done: nothing to do
    assert stored_members(db.db) == members_held(db.db)


def test_the_rebuild_repairs_team_member_records_and_a_stray_one_never_fails_a_batch(
    make_database,
):
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    events = [award(f"tr-{i}", 1 + i, t + timedelta(minutes=i), team="tr") for i in range(4)]
    apply(db, events)
    board = "2026-W20|team:tr"
    # Damage: a record lost (its agent drops off the team board), and a stray one left by
    # a standings document deleted behind the service's back.
    db.db.team_members.delete_one({"_id": "2026-W20|tr|tr-1"})
    db.db.standings.delete_one({"_id": "2026-W20|tr-2"})
    assert "tr-1" not in [r.agent_id for r in BoardReader(db.db).top(board, 0, 10)]

    report = handlers.rebuild(db, tz=TZ)
    assert report.entries_fixed == 3  # tr-2's global, team and tier entries of the week
    assert report.team_members_fixed == 1
    assert stored_members(db.db) == members_held(db.db)
    assert [(r.agent_id, r.score) for r in BoardReader(db.db).top(board, 0, 10)] == (
        expected_rows(events, board)
    )
    assert handlers.rebuild(db, tz=TZ).team_members_fixed == 0

    # A stray record with no entry: the rebuild removes it; until then a batch that makes
    # the agent a member again writes over it.
    db.db.team_members.insert_one(
        {"_id": "2026-W20|tr|tr-9", "period": "2026-W20", "team_id": "tr", "agent_id": "tr-9"}
    )
    assert handlers.rebuild(db, tz=TZ).team_members_fixed == 1
    db.db.team_members.insert_one(
        {"_id": "2026-W20|tr|tr-9", "period": "2026-W20", "team_id": "tr", "agent_id": "tr-9"}
    )
    later = [award("tr-9", 30, t + timedelta(hours=2), team="tr")]
    apply(db, later)
    assert stored_members(db.db) == members_held(db.db)
    assert BoardReader(db.db).top(board, 0, 1)[0].agent_id == "tr-9"


def test_count_maps_stored_as_fields_are_packed_on_start(make_database):
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    apply(db, [award(f"pk-{i}", 5 + i % 3, t + timedelta(minutes=i)) for i in range(9)])
    want = count_maps(db)
    # What the earlier release stored: {"<score>": agents} fields, zero counts possible,
    # and no tokens.
    for id_, counts in want.items():
        fields = {str(score): n for score, n in counts.items()} | {"1234": 0}
        db.db.score_counts.update_one(
            {"_id": id_}, {"$set": {"counts": fields}, "$unset": {"write_token": ""}}
        )
    assert total(BoardReader(db.db).histogram(BOARD)) == 9  # read as before the upgrade

    assert handlers.upgrade_storage(db) == len(want)
    assert all(is_packed(d["counts"]) for d in db.db.score_counts.find())
    assert count_maps(db) == want == counted_from_entries(db)
    assert handlers.upgrade_storage(db) == 0  # once only
    # a packed map without a token gets one; the tokens' documents of the release before
    # (written beside the maps) are dropped
    some = sorted(want)[0]
    db.db.score_counts.update_one({"_id": some}, {"$unset": {"write_token": ""}})
    db.db.count_map_tokens.insert_one({"_id": some, "board": BOARD, "lane": 0, "write_token": "x"})
    assert handlers.upgrade_storage(db) == 1
    assert count_maps(db) == want  # checks every map has its token
    assert "count_map_tokens" not in db.db.list_collection_names()
    apply(db, [award("pk-0", 100, t + timedelta(hours=1))])
    assert count_maps(db) == counted_from_entries(db)


def test_a_page_read_from_memory_is_never_one_write_behind(make_database, monkeypatch):
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    apply_batch(db, [award("pg-a", 10, t), award("pg-b", 10, t + timedelta(minutes=1))], 0)
    reads = []
    positions = BoardReader.positions
    monkeypatch.setattr(
        BoardReader, "positions", lambda self, *a: reads.append(a) or positions(self, *a)
    )

    def page() -> list[str]:
        return [row.agent_id for row in BoardReader(db.db).top(BOARD, 0, 10)]

    assert page() == ["pg-a", "pg-b"]
    assert page() == ["pg-a", "pg-b"] and len(reads) == 1  # the second from memory
    # a change that keeps pg-a's score and lane still moves it behind pg-b in the tie
    later = t + timedelta(minutes=2)
    apply_batch(db, [award("pg-a", 4, later), award("pg-a", -4, later)], 0)
    assert page() == ["pg-b", "pg-a"] and len(reads) == 2
    apply_batch(db, [award("pg-c", 11, later)], 1)
    assert page() == ["pg-c", "pg-b", "pg-a"]


def test_a_histogram_read_from_memory_is_never_one_write_behind(make_database):
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    apply(db, [award(f"hc-{i}", 10 + i, t + timedelta(minutes=i)) for i in range(6)])
    reader = BoardReader(db.db)
    first = reader.histogram(BOARD)
    assert reader.histogram(BOARD) == first and total(first) == 6  # the second from memory
    apply(db, [award("hc-0", 100, t + timedelta(hours=1)), award("hc-new", 7, t)])
    after = reader.histogram(BOARD)
    assert total(after) == 7 and after.get(110) == 1 and 10 not in after
    report = handlers.rebuild(db, tz=TZ)  # a recount rewrites maps: read again as well
    assert report.boards_recounted == 0 and reader.histogram(BOARD) == after


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
    keys = [event["key"] for doc in database_.db.outbox.find() for event in doc["events"]]
    assert sorted(keys) == sorted(set(keys)) and {"2026-W10", "2026-03"} <= set(keys)
    assert handlers.close_due_periods(database_, tz=TZ, now=later, grace=timedelta(0)) == []


def test_reads_within_the_window_answer_from_memory_and_an_arrival_is_seen_at_once(
    make_database,
):
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    apply(db, [award("fw-a", 30, t), award("fw-b", 20, t)])
    now = datetime.now(UTC)
    page = partial(queries.leaderboard, db.db, "all-time", LeaderboardQuery(), tz=TZ, now=now)
    rank = partial(queries.position, db.db, "all-time", query=PositionQuery(), tz=TZ, now=now)

    def shown(answer) -> list[tuple[str, int]]:
        return [(e.agent_id, e.score) for e in answer.entries]

    assert shown(page(fresh_for=60)) == [("fw-a", 30), ("fw-b", 20)]
    apply(db, [award("fw-c", 50, t + timedelta(minutes=1)), award("fw-b", 5, t)])
    # within the window: the page as answered, and a rank from the same score counts
    assert shown(page(fresh_for=60)) == [("fw-a", 30), ("fw-b", 20)]
    assert shown(page(fresh_for=0)) == [("fw-c", 50), ("fw-a", 30), ("fw-b", 25)]
    # an agent who just arrived is found, at its rank: the counts are read again for it
    arrived = rank(agent_id="fw-c", fresh_for=60)
    assert (arrived.rank, arrived.score, arrived.total) == (1, 50, 3)
    assert [e.agent_id for e in arrived.below] == ["fw-a", "fw-b"]
    # past the window, the page is read again
    assert shown(page(fresh_for=1e-9)) == [("fw-c", 50), ("fw-a", 30), ("fw-b", 25)]


def test_a_map_known_absent_is_inserted_as_a_put_would_store_it(make_database):
    db = make_database().db
    put_map(db, BOARD, 0, {5: 2})
    writes = store.MapWrites()
    writes.put(BOARD, 1, {7: 1, 9: 3}, absent=True)
    writes.apply(db)
    assert stored_maps(db) == {counts_id(BOARD, 0): {5: 2}, counts_id(BOARD, 1): {7: 1, 9: 3}}
    shapes = {frozenset(d) for d in db.score_counts.find()}
    assert len(shapes) == 1  # the same fields, inserted or upserted

    # a map said absent that is there is an error, never a silent overwrite
    wrong = store.MapWrites()
    wrong.put(BOARD, 0, {1: 1}, absent=True)
    with pytest.raises(BulkWriteError):
        wrong.apply(db)
    assert stored_maps(db)[counts_id(BOARD, 0)] == {5: 2}


# --- read views (views.py): whole boards in memory, kept current from the journal -------


class Clock:
    """Moves on by `tick` seconds each time it is read: a load then takes time."""

    def __init__(self, tick: float = 0.0) -> None:
        self.now = 1_000.0
        self.tick = tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def views_on(db: ServiceDatabase, clock: Clock, max_entries: int = 10_000) -> BoardViews:
    return BoardViews(db.db, max_entries=max_entries, idle_seconds=60, clock=clock)


def rows_of(view) -> list[tuple[str, int]]:
    return [(r.agent_id, r.score) for r in view.page(0, 10_000)]


def expected_rows(events, board: str = BOARD) -> list[tuple[str, int]]:
    return [(agent, s.score) for _, agent, s in reference(events, board)]


def test_a_read_view_follows_the_journal_across_batches_lanes_and_reversals(make_database):
    db = make_database()
    rng = random.Random(5)
    monday = datetime(2026, 5, 11, 1, tzinfo=UTC)
    times = [monday + timedelta(hours=h) for h in (0, 0, 3, 30)]
    events = [
        award(f"v-{i:02d}", rng.choice([1, 2, 3, 7, 40]), rng.choice(times)) for i in range(60)
    ]
    apply(db, events)
    clock = Clock()
    views = views_on(db, clock)
    assert views.ready(BOARD) is None  # the first read asks for it; reads go to the database
    views.sync()
    view = views.ready(BOARD)
    assert view is not None
    assert rows_of(view) == expected_rows(events)

    # More batches: new agents, ups and downs, one agent back to zero, repeats, and one
    # agent's events from another lane (its entry moves: both lanes' chains list it).
    later = monday + timedelta(days=1)
    more = [award(f"v-{i:02d}", rng.choice([-1, 1, 4, 9]), later) for i in range(0, 70, 3)]
    more.append(award("v-01", -1_000, later))  # far below: the balance floor is points' job
    apply(db, more + more[:5], batch=7)
    moved = award("v-02", 6, later + timedelta(hours=1))
    apply_batch(db, [moved], (lane_of("v-02") + 1) % 3)
    views.sync()
    assert views.ready(BOARD) is view  # caught up from the journal, not read again
    assert views.loads == {"first read": 1}
    everything = events + more + [moved]
    assert rows_of(view) == expected_rows(everything)

    # The service's answers are the same from the view as from the database.
    now = datetime(2026, 5, 13, tzinfo=UTC)
    for _, agent, _ in reference(everything, BOARD)[::7]:
        for neighbors in (0, 3):
            query = PositionQuery(neighbors=neighbors)
            kwargs = {"tz": TZ, "now": now}
            from_view = queries.position(db.db, "2026-W20", agent, query, views=views, **kwargs)
            from_db = queries.position(db.db, "2026-W20", agent, query, **kwargs)
            assert from_view == from_db
    page = LeaderboardQuery(limit=25, offset=10)
    assert queries.leaderboard(
        db.db, "2026-W20", page, tz=TZ, now=now, views=views
    ) == queries.leaderboard(db.db, "2026-W20", page, tz=TZ, now=now)


def test_a_write_past_the_journal_has_the_view_read_again(make_database):
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    events = [award(f"w-{i:02d}", i + 1, t) for i in range(20)]
    apply(db, events)
    clock = Clock(tick=0.1)
    views = views_on(db, clock)
    views.ready(BOARD)
    views.sync()
    assert views.ready(BOARD) is not None

    # A recount rewrites the maps without journaling (as an upgrade or a bulk load would):
    # the view cannot tell what changed, so reads go to the database until it is read again.
    db.transaction(partial(handlers._recount_board, board=BOARD))
    later = [award("w-00", 50, t + timedelta(hours=1)), award("w-new", 3, t)]
    apply(db, later)
    views.sync()
    assert views.ready(BOARD) is None  # read again only after a few times its last load
    clock.now += 60 * clock.tick
    views.sync()
    view = views.ready(BOARD)
    assert view is not None
    assert rows_of(view) == expected_rows(events + later)
    assert views.loads == {"first read": 1, "chain broken": 1}


def test_views_keep_to_their_budget_and_drop_boards_no_longer_read(make_database):
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    tier_board = "2026-W20|tier:leadership"
    events = [award(f"b-{i:02d}", i + 1, t) for i in range(12)]
    events += [award(f"s-{i}", 2, t, tier="leadership") for i in range(3)]
    apply(db, events)
    clock = Clock()
    views = views_on(db, clock, max_entries=10)
    views.ready(BOARD)
    views.ready(tier_board)
    views.sync()
    assert views.ready(BOARD) is None  # 15 entries do not fit in 10: the database answers
    small = views.ready(tier_board)
    assert small is not None and rows_of(small) == expected_rows(events, tier_board)
    assert views.entries_held == 3

    clock.now += 61  # neither board read for longer than idle_seconds
    views.sync()
    assert views.entries_held == 0


def test_a_board_first_read_while_another_loads_is_loaded_next_round(make_database):
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    tier_board = "2026-W20|tier:advanced"
    apply(db, [award(f"r-{i}", i + 1, t) for i in range(5)])
    views: BoardViews

    class ReadArrives(Clock):
        """A request for another board comes in while the sync waits on the database."""

        calls = 0

        def __call__(self) -> float:
            self.calls += 1
            if self.calls == 3:  # after the first read's and the round's: inside the load
                views.ready(tier_board)
            return super().__call__()

    views = views_on(db, ReadArrives())
    views.ready(BOARD)
    views.sync()
    assert views.ready(BOARD) is not None
    views.sync()
    assert views.ready(tier_board) is not None


def test_a_view_is_caught_up_only_after_reads_and_never_served_stale(make_database):
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    first = [award("st-a", 3, t)]
    apply(db, first)
    clock = Clock()
    views = views_on(db, clock)
    views.ready(BOARD)
    views.sync()
    view = views.ready(BOARD)
    assert view is not None

    clock.now += 1  # caught up since that read: the next round leaves it alone
    views.sync()
    later = [award("st-b", 5, t)]
    apply(db, later)
    clock.now += 1
    views.sync()  # not read since its last catch-up: not caught up
    assert rows_of(view) == expected_rows(first)

    clock.now += views.stale_after  # not caught up for that long: the database answers
    assert views.ready(BOARD) is None
    views.sync()  # read since: caught up, and served again
    assert views.ready(BOARD) is view
    assert rows_of(view) == expected_rows(first + later)


def test_a_board_smaller_than_the_minimum_is_left_to_the_database(make_database):
    db = make_database()
    apply(db, [award(f"m-{i}", i + 1, datetime(2026, 5, 12, 2, tzinfo=UTC)) for i in range(4)])
    clock = Clock()
    views = BoardViews(db.db, max_entries=100, min_entries=5, idle_seconds=60, clock=clock)
    views.ready(BOARD)
    views.sync()
    assert views.ready(BOARD) is None
    assert views.loads == {}

    # It grows past the minimum (a bulk load, a busy morning): weighed again 30 s later.
    apply(db, [award(f"m-{i}", 1, datetime(2026, 5, 12, 2, tzinfo=UTC)) for i in range(4, 6)])
    views.sync()
    assert views.ready(BOARD) is None
    clock.now += BoardViews.RECHECK_SMALL_AFTER
    views.sync()
    assert views.ready(BOARD) is not None
    assert views.loads == {"first read": 1}


def test_a_rank_from_a_view_reads_the_entry_only_for_an_agent_it_does_not_hold(make_database):
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    apply(db, [award(f"h-{i}", i + 1, t) for i in range(6)])
    views = views_on(db, Clock())
    views.ready(BOARD)
    views.sync()
    assert views.ready(BOARD) is not None
    kwargs = {"tz": TZ, "now": datetime(2026, 5, 13, tzinfo=UTC), "views": views}

    # Held: answered from the view alone (the entry, gone from the database behind the
    # view's back, is not read).
    delete_entries(db.db, [(BOARD, "h-5")])
    held = queries.position(db.db, "2026-W20", "h-5", PositionQuery(neighbors=1), **kwargs)
    assert (held.rank, held.score, [e.agent_id for e in held.below]) == (1, 6, ["h-4"])

    # Not held yet (arrived since the last catch-up): read from the database at once, and
    # placed in the view.
    apply(db, [award("h-new", 10, t)])
    arrived = queries.position(db.db, "2026-W20", "h-new", PositionQuery(neighbors=1), **kwargs)
    assert (arrived.rank, arrived.score, arrived.total) == (1, 10, 7)
    assert [e.agent_id for e in arrived.below] == ["h-5"]
    with pytest.raises(NotFound):
        queries.position(db.db, "2026-W20", "h-nobody", PositionQuery(), **kwargs)


def test_a_view_read_while_another_board_loads_is_current_when_the_round_ends(make_database):
    db = make_database()
    t = datetime(2026, 5, 12, 2, tzinfo=UTC)
    tier_board = "2026-W20|tier:leadership"
    apply(db, [award(f"c-{i}", i + 1, t) for i in range(4)])
    apply(db, [award(f"l-{i}", 1, t, tier="leadership") for i in range(3)])
    clock = Clock()
    views = views_on(db, clock)
    load = views._load

    def slow_load(board, wanted) -> None:
        load(board, wanted)
        clock.now += 5  # reading a large board whole takes seconds

    views._load = slow_load  # type: ignore[method-assign]
    views.ready(BOARD)
    views.sync()
    assert views.ready(BOARD) is not None  # caught up after its own load, too
    apply(db, [award("c-new", 9, t)])
    views.ready(tier_board)  # first read: loaded in the next round, for seconds
    views.sync()
    view = views.ready(BOARD)  # caught up after that load, not before it
    assert view is not None
    assert rows_of(view)[0] == ("c-new", 9)
