"""The leaderboards database: documents, indexes, and the queries the service needs.

- `applied_points`: the log of applied point events (the rebuild's source of truth).
- `board_entries`: one document per (board, agent): score and reached_at (boards.py).
  The index `rank` (board, score desc, reached_at asc, agent_id asc) is the board order:
  a page is a range of it and a rank is a count of the entries ahead of an agent in it.
- `boards`: per board, the number of agents on it (score above 0) and an upper bound of
  its best score, kept in the same transaction as the entries, so `total` is one read and
  a top-N page can be read as a bounded band of the index instead of the whole board.
- `periods` / `period_closes`: weekly and monthly periods seen, and the unique close
  record written in the same transaction as the period_closed event.
- `agents`: display names and current teams from `people.agents`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import mongoengine as me
from pymongo import ASCENDING, DESCENDING
from pymongo.client_session import ClientSession
from pymongo.database import Database

from services.leaderboards.boards import PointChange

# --- documents (declared for their indexes; writes go through pymongo) -----------------


class AppliedPoints(me.Document):
    id = me.StringField(primary_key=True)  # the event id
    agent_id = me.StringField(required=True)
    delta = me.IntField(required=True)
    occurred_at = me.DateTimeField(required=True)
    team_id = me.StringField(required=True)
    tier = me.StringField(required=True)
    type = me.StringField()
    award_id = me.StringField()
    applied_at = me.DateTimeField()
    meta = {
        "collection": "applied_points",
        "indexes": [{"fields": ["agent_id", "occurred_at"], "name": "by_agent"}],
    }


class BoardEntry(me.Document):
    id = me.StringField(primary_key=True)  # entry_id(board, agent_id)
    board = me.StringField(required=True)
    agent_id = me.StringField(required=True)
    score = me.IntField(required=True)
    reached_at = me.DateTimeField(required=True)
    period_key = me.StringField()
    scope = me.StringField()
    meta = {
        "collection": "board_entries",
        "indexes": [
            {"fields": ["board", "agent_id"], "unique": True, "name": "entry"},
            {"fields": ["board", "-score", "reached_at", "agent_id"], "name": "rank"},
            {"fields": ["agent_id"], "name": "by_agent"},
        ],
    }


class BoardStats(me.Document):
    id = me.StringField(primary_key=True)  # the board key
    entries = me.IntField(default=0)  # agents with a score above 0
    max_score = me.IntField(default=0)  # never below the best score on the board
    meta = {"collection": "boards"}


class PeriodRecord(me.Document):
    id = me.StringField(primary_key=True)  # the period key
    kind = me.StringField(required=True)
    ends_at = me.DateTimeField(required=True)
    last_points_at = me.DateTimeField(required=True)  # wall time points last arrived
    closed_at = me.DateTimeField()
    meta = {
        "collection": "periods",
        "indexes": [{"fields": ["closed_at", "ends_at"], "name": "open_by_end"}],
    }


class PeriodClose(me.Document):
    id = me.StringField(primary_key=True)  # the period key: at most one close, ever
    kind = me.StringField(required=True)
    closed_at = me.DateTimeField(required=True)
    event_id = me.StringField(required=True)
    top = me.ListField(me.DictField())
    meta = {"collection": "period_closes"}


class AgentRecord(me.Document):
    id = me.StringField(primary_key=True)
    name = me.StringField()
    team_id = me.StringField()
    tier = me.StringField()
    roster_at = me.DateTimeField()
    roster_event_id = me.StringField()
    points_team_id = me.StringField()  # team on the latest point event: until the roster
    points_at = me.DateTimeField()
    meta = {"collection": "agents"}


DOCUMENTS = (AppliedPoints, BoardEntry, BoardStats, PeriodRecord, PeriodClose, AgentRecord)

APPLIED = "applied_points"
ENTRIES = "board_entries"
BOARDS = "boards"
PERIODS = "periods"
CLOSES = "period_closes"
AGENTS = "agents"

#: Scores are integers, so "at least x" is written `{"$gt": x - 1}`: the local MongoDB-protocol
#: server drops the boundary value of `$gte` on a descending index key (it returns scores
#: above x only), and `$gt` means the same on every server.
BOARD_ORDER = [("score", DESCENDING), ("reached_at", ASCENDING), ("agent_id", ASCENDING)]
REVERSED_ORDER = [("score", ASCENDING), ("reached_at", DESCENDING), ("agent_id", DESCENDING)]


def entry_id(board: str, agent_id: str) -> str:
    """An entry's `_id`: writes address it directly, with no query plan to choose."""
    return f"{board}|{agent_id}"


def at_least(board: str, score: int) -> dict[str, Any]:
    return {"board": board, "score": {"$gt": score - 1}}


def change_from_log(doc: dict[str, Any]) -> PointChange:
    return PointChange(
        event_id=doc["_id"],
        agent_id=doc["agent_id"],
        delta=doc["delta"],
        occurred_at=doc["occurred_at"],
        team_id=doc["team_id"],
        tier=doc["tier"],
    )


# --- reading boards ------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    agent_id: str
    score: int
    reached_at: datetime


def _row(doc: dict[str, Any]) -> Row:
    return Row(doc["agent_id"], doc["score"], doc["reached_at"])


_ROW_FIELDS = {"_id": 0, "agent_id": 1, "score": 1, "reached_at": 1}


class BoardReader:
    """Queries on one database (optionally inside a transaction's session).

    Every query is a range of the `rank` index. Pages and neighbours are read as score
    bands that widen until they hold enough entries, so a server that sorts what a range
    matched (instead of walking the index in order) still touches a bounded part of the
    board rather than all of it.
    """

    def __init__(self, db: Database, session: ClientSession | None = None) -> None:
        self.db = db
        self.session = session

    def stats(self, board: str) -> dict[str, Any]:
        doc = self.db[BOARDS].find_one({"_id": board}, session=self.session)
        return doc or {"_id": board, "entries": 0, "max_score": 0}

    def entry(self, board: str, agent_id: str) -> Row | None:
        doc = self.db[ENTRIES].find_one(
            {"_id": entry_id(board, agent_id)}, _ROW_FIELDS, session=self.session
        )
        return _row(doc) if doc else None

    def _count(self, query: dict[str, Any]) -> int:
        return self.db[ENTRIES].count_documents(query, session=self.session)

    def _find(self, query: dict[str, Any], order: list, limit: int, skip: int = 0) -> list[Row]:
        cursor = self.db[ENTRIES].find(query, _ROW_FIELDS, session=self.session).sort(order)
        if skip:
            cursor = cursor.skip(skip)
        return [_row(doc) for doc in cursor.limit(limit)]

    @staticmethod
    def _same_score_ahead(board: str, row: Row) -> list[dict[str, Any]]:
        """Entries with the same score ahead of `row`: two index ranges, nearest first.

        Two plain ranges rather than one `$or`: every server answers a range from the
        index, not every one plans an `$or` over it.
        """
        same = {"board": board, "score": row.score}
        return [
            {**same, "reached_at": row.reached_at, "agent_id": {"$lt": row.agent_id}},
            {**same, "reached_at": {"$lt": row.reached_at}},
        ]

    @staticmethod
    def _same_score_behind(board: str, row: Row) -> list[dict[str, Any]]:
        same = {"board": board, "score": row.score}
        return [
            {**same, "reached_at": row.reached_at, "agent_id": {"$gt": row.agent_id}},
            {**same, "reached_at": {"$gt": row.reached_at}},
        ]

    def rank(self, board: str, row: Row) -> int:
        """1 + the entries ahead: three ranges of the rank index, counted."""
        ahead = self._count({"board": board, "score": {"$gt": row.score}})
        ahead += sum(self._count(query) for query in self._same_score_ahead(board, row))
        return ahead + 1

    def top(self, board: str, offset: int, limit: int) -> list[Row]:
        """Entries offset+1 .. offset+limit in board order."""
        stats = self.stats(board)
        wanted = offset + limit
        if stats["entries"] == 0 or offset >= stats["entries"]:
            return []
        floor = 1
        if wanted < stats["entries"]:
            floor = self._band_floor(board, stats["max_score"], wanted)
        return self._find(at_least(board, floor), BOARD_ORDER, limit, skip=offset)

    def _band_floor(self, board: str, max_score: int, wanted: int) -> int:
        """The highest score such that at least `wanted` entries score at least that much.

        Probes widen from the top (cheap: few entries score that high), then bisect, so no
        probe counts much more of the board than the page needs, whatever the score spread.
        """
        insufficient, width = max_score + 1, 1  # fewer than `wanted` score >= insufficient
        while True:
            floor = max_score + 1 - width
            if floor <= 1:
                sufficient = 1  # the whole board: more than `wanted` entries (caller checks)
                break
            if self._count(at_least(board, floor)) >= wanted:
                sufficient = floor
                break
            insufficient, width = floor, width * 2
        while insufficient - sufficient > 1:
            middle = (insufficient + sufficient) // 2
            if self._count(at_least(board, middle)) >= wanted:
                sufficient = middle
            else:
                insufficient = middle
        return sufficient

    def above(self, board: str, row: Row, k: int, max_score: int) -> list[Row]:
        """Up to k entries just ahead of `row`, best first."""
        if k == 0:
            return []
        found: list[Row] = []
        for query in self._same_score_ahead(board, row):  # nearest first
            if len(found) < k:  # a limit of 0 would mean "no limit"
                found += self._find(query, REVERSED_ORDER, k - len(found))
        low, width = row.score, 1  # scores in (low, max_score] not yet read
        while len(found) < k and low < max_score:
            high = low + width
            band = {"board": board, "score": {"$gt": low, "$lt": high + 1}}
            found += self._find(band, REVERSED_ORDER, k - len(found))
            low, width = high, width * 4
        return list(reversed(found))

    def below(self, board: str, row: Row, k: int) -> list[Row]:
        """Up to k entries just behind `row`, in board order."""
        if k == 0:
            return []
        found: list[Row] = []
        for query in self._same_score_behind(board, row):  # nearest first
            if len(found) < k:  # a limit of 0 would mean "no limit"
                found += self._find(query, BOARD_ORDER, k - len(found))
        high, width = row.score, 1  # scores in [low, high) not yet read
        while len(found) < k and high > 1:
            low = max(row.score - width, 1)
            band = {"board": board, "score": {"$gt": low - 1, "$lt": high}}
            found += self._find(band, BOARD_ORDER, k - len(found))
            high, width = low, width * 4
        return found

    def names(self, agent_ids: list[str]) -> dict[str, dict[str, Any]]:
        docs = self.db[AGENTS].find({"_id": {"$in": agent_ids}}, session=self.session)
        return {doc["_id"]: doc for doc in docs}

    def is_closed(self, period_key: str) -> bool:
        return self.db[CLOSES].find_one({"_id": period_key}, {"_id": 1}) is not None

    def agent_entries(self, agent_id: str) -> dict[str, Row]:
        docs = self.db[ENTRIES].find(
            {"agent_id": agent_id}, {"_id": 0, "board": 1, **_ROW_FIELDS}, session=self.session
        )
        return {doc["board"]: _row(doc) for doc in docs}

    def all_entries(self) -> Iterator[tuple[str, Row]]:
        for doc in self.db[ENTRIES].find({}, {"_id": 0, "board": 1, **_ROW_FIELDS}):
            yield doc["board"], _row(doc)

    def log(self, agent_id: str | None = None) -> Iterator[PointChange]:
        query = {} if agent_id is None else {"agent_id": agent_id}
        for doc in self.db[APPLIED].find(query, session=self.session):
            yield change_from_log(doc)


def display(agent: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(name, team) to show: the roster's, else the team of the latest point event."""
    if agent is None:
        return None, None
    return agent.get("name"), agent.get("team_id") or agent.get("points_team_id")
