"""Where board entries are placed in standings documents (services/leaderboards/standings.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from pymongo import DeleteOne, InsertOne, ReplaceOne

from services.leaderboards.standings import (
    AgentPeriod,
    as_entries,
    board_filter,
    entries_in,
    place_of,
    scored,
)

T = datetime(2026, 5, 12, tzinfo=UTC)
W = "2026-W20"


def stored(agent_period: AgentPeriod) -> dict[str, dict]:
    """The documents as `writes` would leave them, by id."""
    return {doc["_id"]: doc for doc in agent_period.documents()}


def test_a_board_key_names_its_period_slot_and_owner():
    assert place_of(f"{W}|global").slot == "global"
    assert place_of(f"{W}|global").owner is None
    team = place_of("all-time|team:north:2")  # a team id may hold a colon
    assert (team.period, team.slot, team.owner) == ("all-time", "team", "north:2")
    assert team.board == "all-time|team:north:2"
    assert board_filter(f"{W}|tier:advanced") == {"period": W, "tier.id": "advanced"}
    assert scored(f"{W}|global", 5) == {"period": W, "global.score": 5}


def test_one_document_holds_the_three_entries_of_an_agent_that_kept_its_team():
    agent_period = AgentPeriod(W, "a", None)
    for board in (f"{W}|global", f"{W}|team:red", f"{W}|tier:advanced"):
        agent_period.put(board, 7, T, lane=2, version=1)
    docs = stored(agent_period)
    assert list(docs) == [f"{W}|a"]
    assert docs[f"{W}|a"]["team"] == {
        "id": "red",
        "score": 7,
        "reached_at": T,
        "lane": 2,
        "version": 1,
    }
    assert "id" not in docs[f"{W}|a"]["global"]
    inserts, others = agent_period.writes()
    assert [type(op) for op in inserts] == [InsertOne] and others == []


def test_a_second_team_spills_and_each_entry_is_found_where_it_is():
    doc = {
        "_id": f"{W}|a",
        "period": W,
        "agent_id": "a",
        "global": {"score": 7, "reached_at": T, "lane": 0, "version": 1},
        "team": {"id": "red", "score": 7, "reached_at": T, "lane": 0, "version": 1},
    }
    agent_period = AgentPeriod(W, "a", doc)
    assert agent_period.spill_to_read(f"{W}|team:red") is None
    assert agent_period.spill_to_read(f"{W}|team:blue") == f"{W}|a|team:blue"
    assert agent_period.spill_to_read(f"{W}|tier:advanced") is None  # the slot is free
    agent_period.put(f"{W}|team:blue", 3, T, lane=0, version=1)
    agent_period.put(f"{W}|tier:advanced", 3, T, lane=0, version=1)
    agent_period.put(f"{W}|team:red", 9, T, lane=1, version=2)
    docs = stored(agent_period)
    assert docs[f"{W}|a"]["team"]["score"] == 9
    assert docs[f"{W}|a"]["tier"]["id"] == "advanced"
    assert docs[f"{W}|a|team:blue"]["team"]["id"] == "blue"
    assert set(docs[f"{W}|a|team:blue"]) == {"_id", "period", "agent_id", "team"}
    assert agent_period.get(f"{W}|team:blue").score == 3
    assert agent_period.get(f"{W}|team:red").lane == 1
    assert agent_period.get(f"{W}|team:green") is None
    inserts, others = agent_period.writes()
    assert [op._doc["_id"] for op in inserts] == [f"{W}|a|team:blue"]
    assert [type(op) for op in others] == [ReplaceOne]


def test_a_freed_primary_slot_goes_to_a_spill_and_an_empty_document_is_deleted():
    agent_period = AgentPeriod(W, "a", None)
    for team in ("red", "blue"):
        agent_period.put(f"{W}|team:{team}", 4, T, lane=0, version=1)
    before = sorted((board, row.score) for board, row in entries_in(stored(agent_period)[f"{W}|a"]))
    assert before == [(f"{W}|team:red", 4)]
    # as stored: the documents are read again
    primary, spill = stored(agent_period)[f"{W}|a"], stored(agent_period)[f"{W}|a|team:blue"]
    agent_period = AgentPeriod(W, "a", primary)
    agent_period.add_stored(spill)
    agent_period.remove(f"{W}|team:red")
    assert agent_period.get(f"{W}|team:red") is None
    assert agent_period.get(f"{W}|team:blue").score == 4
    assert list(stored(agent_period)) == [f"{W}|a"]
    inserts, others = agent_period.writes()
    assert inserts == []
    assert {type(op) for op in others} == {ReplaceOne, DeleteOne}


def test_stores_with_the_same_entries_compare_equal_whatever_holds_them():
    first, second = AgentPeriod(W, "a", None), AgentPeriod(W, "a", None)
    for team in ("red", "blue"):
        first.put(f"{W}|team:{team}", 4, T, lane=0, version=1)
    for team in ("blue", "red"):
        second.put(f"{W}|team:{team}", 4, T, lane=0, version=1)
    assert stored(first) != stored(second)
    assert as_entries(first.documents()) == as_entries(second.documents())
