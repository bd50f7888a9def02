"""The leaderboards' score count maps as tests see them: what is stored, what the entries
call for, and damage done to them on purpose (services/leaderboards/count_maps.py)."""

from __future__ import annotations

from collections.abc import Mapping

from pymongo.database import Database

from services.leaderboards.boards import keeps_count_maps
from services.leaderboards.count_maps import unpack
from services.leaderboards.store import MapWrites, counts_id
from tests.support.standings import stored_entries


def stored_maps(db: Database) -> dict[str, dict[int, int]]:
    """The stored maps' counts, once checked that each has a write token (readers trust
    the tokens to say a map is unchanged)."""
    maps = list(db.score_counts.find())
    assert all(d.get("write_token") for d in maps), "a map without a write token"
    return {d["_id"]: unpack(d.get("counts")) for d in maps}


def counted_from_entries(db: Database) -> dict[str, dict[int, int]]:
    """The maps the entries call for: per (board, lane) of a board that keeps maps (not a
    team's), agents per score above 0 (an entry without a lane, stored before lanes, counts
    in lane 0)."""
    maps: dict[str, dict[int, int]] = {}
    for (board, _), row in stored_entries(db).items():
        if row.score <= 0 or not keeps_count_maps(board):
            continue
        counts = maps.setdefault(counts_id(board, row.lane or 0), {})
        counts[row.score] = counts.get(row.score, 0) + 1
    return maps


def add_to_maps(db: Database, query: Mapping[str, object], added: Mapping[int, int]) -> None:
    """Damage: adds `added` to the counts of every stored map matching `query` (written
    with new tokens, as any write of a map, so readers see it)."""
    writes = MapWrites()
    for doc in db.score_counts.find(dict(query)):
        counts = unpack(doc.get("counts"))
        for score, n in added.items():
            counts[score] = counts.get(score, 0) + n
        writes.put(doc["board"], doc["lane"], counts)
    writes.apply(db)


def put_map(db: Database, board: str, lane: int, counts: Mapping[int, int]) -> None:
    """Damage: a map stored as given, whatever the entries say."""
    writes = MapWrites()
    writes.put(board, lane, counts)
    writes.apply(db)


def drop_map(db: Database, board: str, lane: int) -> None:
    """Damage: a map lost."""
    writes = MapWrites()
    writes.delete(counts_id(board, lane))
    writes.apply(db)
