"""A read view (services/leaderboards/views.py) held to the reference ranking
(boards.ranked) through any sequence of writes, applied in any order by version; and the
journal chain a view follows, walked back from a map's current token."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from services.leaderboards.boards import Standing, ranked
from services.leaderboards.journal import chain_to
from services.leaderboards.standings import Row
from services.leaderboards.views import BoardView

T0 = datetime(2026, 5, 11, 1, tzinfo=UTC)


def reference_rows(standings: dict[str, Standing]) -> list[tuple[str, int]]:
    return [(agent, s.score) for _, agent, s in ranked(standings)]


def test_a_view_ranks_pages_and_neighbours_as_the_reference_through_random_writes():
    rng = random.Random(11)
    agents = [f"a{i:02d}" for i in range(40)]
    times = [T0 + timedelta(minutes=m) for m in (0, 0, 5, 9)]  # ties on time too
    truth: dict[str, tuple[Standing, int]] = {}  # agent -> (standing, version)
    initial = []
    for agent in agents[:25]:
        standing = Standing(rng.choice([0, 1, 2, 2, 7, 30]), rng.choice(times))
        truth[agent] = (standing, rng.randrange(0, 3))
        initial.append(Row(agent, standing.score, standing.reached_at, version=truth[agent][1]))
    view = BoardView.of_entries("B", initial, {})
    for _ in range(400):
        agent = rng.choice(agents)
        old, version = truth.get(agent, (Standing(0, T0), 0))
        new = Standing(max(old.score + rng.choice([-7, -1, 1, 2, 5]), 0), rng.choice(times))
        truth[agent] = (new, version + 1)
        assert view.apply(agent, new.score, new.reached_at, version + 1)
        # a stale write arriving late (from another lane's chain) changes nothing
        assert not view.apply(agent, old.score + 1, old.reached_at, version)

    standings = {agent: s for agent, (s, _) in truth.items() if s.score > 0}
    expected = ranked(standings)
    assert [(r.agent_id, r.score) for r in view.page(0, 100)] == reference_rows(standings)
    assert len(view) == len(expected)
    for offset in range(len(expected) + 2):
        assert [r.agent_id for r in view.page(offset, 3)] == [
            a for _, a, _ in expected[offset : offset + 3]
        ]
    for index, (rank, agent, _) in enumerate(expected):
        placed = view.place(agent, 2)
        assert placed is not None
        got_rank, above, below = placed
        assert got_rank == rank
        assert [r.agent_id for r in above] == [a for _, a, _ in expected[max(index - 2, 0) : index]]
        assert [r.agent_id for r in below] == [a for _, a, _ in expected[index + 1 : index + 3]]
    off_board = [agent for agent, (s, _) in truth.items() if s.score == 0]
    assert off_board, "the random walk should leave some agents at 0"
    assert all(view.place(agent, 2) is None for agent in off_board)
    assert view.place("never-seen", 2) is None


def test_an_agent_back_on_the_board_takes_its_new_place_once():
    view = BoardView.of_entries("B", [], {})
    view.apply("a", 5, T0, 1)
    view.apply("b", 3, T0, 1)
    view.apply("a", 0, T0, 2)  # reversed to zero: off the board
    assert [r.agent_id for r in view.page(0, 10)] == ["b"]
    view.apply("a", 4, T0 + timedelta(hours=1), 3)
    assert [(r.agent_id, r.score) for r in view.page(0, 10)] == [("a", 4), ("b", 3)]
    assert view.held == 2 and len(view) == 2


def record(token: str, prev: str | None, **extra: object) -> dict[str, object]:
    return {"token": token, "prev": prev, "entries": [], **extra}


def test_the_chain_leads_from_the_held_token_to_the_current_one():
    records = [record("t2", "t1"), record("t3", "t2"), record("t4", "t3")]
    chain = chain_to(records, "t1", "t3")
    assert chain is not None
    assert [r["token"] for r in chain] == ["t2", "t3"]  # t4 came after the maps were read
    assert chain_to(records, "t2", "t2") == []


def test_a_missing_record_or_a_deletion_breaks_the_chain():
    assert chain_to([record("t3", "t2")], "t1", "t3") is None  # t2 never journaled
    assert chain_to([record("t2", "t1", reread=True)], "t1", "t2") is None
    assert chain_to([], "t1", "t2") is None


def test_a_map_made_again_is_followed_by_its_own_chain():
    # the map was deleted (emptied) and made again: two chains start from no token
    records = [record("old1", None), record("old2", "old1"), record("new1", None)]
    chain = chain_to(records, None, "new1")
    assert chain is not None
    assert [r["token"] for r in chain] == ["new1"]
    # a view that held the old map cannot reach the new one
    assert chain_to(records, "old2", "new1") is None
