"""The leaderboards' board entries as tests see them, read from and damaged in their
standings documents (services/leaderboards/standings.py) whatever document holds each."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pymongo.database import Database

from services.leaderboards import standings
from services.leaderboards.standings import STANDINGS, TEAM_MEMBERS, Row


def stored_entries(db: Database, agents: Iterable[str] | None = None) -> dict[tuple[str, str], Row]:
    """Every stored entry (of `agents`, if given) by (board, agent), with its lane."""
    query = {} if agents is None else {"agent_id": {"$in": list(agents)}}
    docs = db[STANDINGS].find(query)
    return {(board, row.agent_id): row for doc in docs for board, row in standings.entries_in(doc)}


def put_entry(
    db: Database,
    board: str,
    agent_id: str,
    score: int,
    reached_at: datetime,
    lane: int | None = None,
) -> None:
    """Damage: sets an entry behind the service's back, its count maps left as they are
    (`lane`: the entry's own, else 0 for a new one)."""
    periods = standings.read(db[STANDINGS], [(board, agent_id)])
    agent_period = periods[(standings.place_of(board).period, agent_id)]
    old = agent_period.get(board)
    if lane is None:
        lane = old.lane or 0 if old is not None else 0
    version = old.version + 1 if old is not None else 1
    agent_period.put(board, score, reached_at, lane, version)
    standings.write(db[STANDINGS], periods.values())


def delete_entries(db: Database, entries: Iterable[tuple[str, str]]) -> None:
    """Damage: deletes (board, agent) entries behind the service's back (every document
    of their agents is read first, as the rebuild does: a primary's freed slot goes to a
    spill of its kind)."""
    entries = list(entries)
    agents = {agent_id for _, agent_id in entries}
    periods = standings.read(db[STANDINGS], list(stored_entries(db, agents)))
    for board, agent_id in entries:
        periods[(standings.place_of(board).period, agent_id)].remove(board)
    standings.write(db[STANDINGS], periods.values())


Member = tuple[str, str, str]  # (period, team, agent)


def stored_members(db: Database) -> set[Member]:
    """The team member records (standings.TEAM_MEMBERS)."""
    return {(d["period"], d["team_id"], d["agent_id"]) for d in db[TEAM_MEMBERS].find({})}


def members_held(db: Database) -> set[Member]:
    """The members the stored team entries make: the records there should be."""
    return {
        (standings.place_of(board).period, standings.place_of(board).owner or "", agent)
        for (board, agent) in stored_entries(db)
        if standings.place_of(board).slot == standings.TEAM
    }
