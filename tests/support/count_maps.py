"""The leaderboards' score count maps as tests see them: what is stored, what the entries
call for, and damage done to them on purpose (services/leaderboards/count_maps.py)."""

from __future__ import annotations

from collections.abc import Mapping

from pymongo.database import Database

from services.leaderboards.count_maps import pack, unpack
from services.leaderboards.store import counts_id


def stored_maps(db: Database) -> dict[str, dict[int, int]]:
    return {d["_id"]: unpack(d.get("counts")) for d in db.score_counts.find()}


def counted_from_entries(db: Database) -> dict[str, dict[int, int]]:
    """The maps the entries call for: per (board, lane), agents per score above 0 (an entry
    without a lane, stored before lanes, counts in lane 0)."""
    maps: dict[str, dict[int, int]] = {}
    for d in db.board_entries.find({"score": {"$gt": 0}}):
        counts = maps.setdefault(counts_id(d["board"], d.get("lane", 0)), {})
        counts[d["score"]] = counts.get(d["score"], 0) + 1
    return maps


def add_to_maps(db: Database, query: Mapping[str, object], added: Mapping[int, int]) -> None:
    """Damage: adds `added` to the counts of every stored map matching `query`."""
    for doc in db.score_counts.find(dict(query)):
        counts = unpack(doc.get("counts"))
        for score, n in added.items():
            counts[score] = counts.get(score, 0) + n
        db.score_counts.update_one({"_id": doc["_id"]}, {"$set": {"counts": pack(counts)}})


def put_map(db: Database, board: str, lane: int, counts: Mapping[int, int]) -> None:
    """Damage: a map stored as given, whatever the entries say."""
    db.score_counts.replace_one(
        {"_id": counts_id(board, lane)},
        {"board": board, "lane": lane, "counts": pack(counts)},
        upsert=True,
    )
