"""The leaderboards database: documents, indexes, and the queries the service needs.

- `applied_points`: the log of applied point events (the rebuild's source of truth).
- `standings`: the board entries, one document per (period, agent) holding the agent's
  global, team and tier entry of that period (standings.py): score and reached_at
  (boards.py), and the lane (partition) whose count map counts it. An index per large
  kind of scope (`rank_global`, `rank_tier`: period, tier, score desc, reached_at asc,
  agent_id asc) is the board order.
- `team_members`: who holds a standing on each team board of a period: a team board is
  read whole from its members' documents, with no index on the standings (standings.py).
- `score_counts`: per (board, lane), how many of the lane's entries hold each score above
  0 (boards.py, histograms), written in the same transaction as the entries. Team boards
  have none (boards.keeps_count_maps): a team board is read whole. A
  board's size and the agents ahead of a score are sums over its maps; a page or a neighbourhood
  is read as one narrow score band of the board's index, and a rank counts only the agents
  tied with it: no read counts or sorts a deep range of a large board.
- `periods` / `period_closes`: weekly and monthly periods seen, and the unique close
  record written in the same transaction as the period_closed event.
- `agents`: display names and current teams from `people.agents`.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import mongoengine as me
from cachetools import LRUCache
from pymongo import DESCENDING, DeleteOne, InsertOne, ReplaceOne
from pymongo.client_session import ClientSession
from pymongo.collection import Collection
from pymongo.database import Database

from services.leaderboards import standings
from services.leaderboards.boards import (
    Histogram,
    PointChange,
    ahead_of,
    band,
    keeps_count_maps,
    merge_counts,
)
from services.leaderboards.count_maps import pack, unpack
from services.leaderboards.journal import SEQ, WRITE_TOKEN, JournalRecord
from services.leaderboards.standings import STANDINGS, Row, place_of
from services.runtime.mongo import find_by_ids

K = TypeVar("K")
V = TypeVar("V")

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
    lane = me.IntField()  # the lane it was applied from (a rebuilt entry goes back there)
    meta = {
        "collection": "applied_points",
        "indexes": [{"fields": ["agent_id", "occurred_at"], "name": "by_agent"}],
    }


def _rank_index(slot: str, owned: bool) -> dict[str, Any]:
    owner = [f"{slot}.id"] if owned else []
    fields = ["period", *owner, f"-{slot}.score", f"{slot}.reached_at", "agent_id"]
    return {"fields": fields, "name": f"rank_{slot.rstrip('_')}"}


class Standings(me.Document):
    """The board entries of one agent in one period (standings.py): a slot is
    {id (team or tier), score, reached_at, lane, version}."""

    id = me.StringField(primary_key=True)  # standings.primary_id or standings.spill_id
    period = me.StringField(required=True)
    agent_id = me.StringField(required=True)
    global_ = me.DictField(db_field="global")
    team = me.DictField()
    tier = me.DictField()
    meta = {
        "collection": STANDINGS,
        # The board orders are the only other indexes: every index is written with each
        # document, on the hottest collection (an index by agent cost about 20% more per
        # entry written on the local database). An agent's documents are read by id: the
        # boards its applied log counts in say which.
        "indexes": [
            _rank_index("global_", owned=False),
            _rank_index("tier", owned=True),
        ],
    }


#: The team board order of an earlier release: team boards are read from their members now
#: (standings.py). Dropped on start once the members are recorded (handlers.upgrade_storage).
LEGACY_TEAM_INDEX = "rank_team"


class TeamMember(me.Document):
    """An agent holding a standing on a team's board of a period (standings.TEAM_MEMBERS)."""

    id = me.StringField(primary_key=True)  # standings.member_id
    period = me.StringField(required=True)
    team_id = me.StringField(required=True)
    agent_id = me.StringField(required=True)
    meta = {
        "collection": standings.TEAM_MEMBERS,
        "indexes": [{"fields": ["period", "team_id"], "name": "by_team"}],
    }


class ScoreCounts(me.Document):
    id = me.StringField(primary_key=True)  # counts_id(board, lane)
    board = me.StringField(required=True)
    lane = me.IntField(required=True)
    counts = me.BinaryField()  # count_maps.pack({score: agents}): scores above 0
    write_token = me.StringField()  # new on every write (see WRITE_TOKEN)
    seq = me.IntField()  # the map's journaled writes (see journal.py); absent: 0
    meta = {
        "collection": "score_counts",
        "indexes": [{"fields": ["board"], "name": "by_board"}],
    }


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


DOCUMENTS = (
    AppliedPoints,
    Standings,
    TeamMember,
    ScoreCounts,
    JournalRecord,
    PeriodRecord,
    PeriodClose,
    AgentRecord,
)

APPLIED = "applied_points"
#: Where an earlier release kept one document per (board, agent); moved into `standings`
#: on start (handlers.upgrade_storage).
LEGACY_ENTRIES = "board_entries"
SCORE_COUNTS = "score_counts"
#: Where an earlier release also kept each map's token, in a document of its own: a second
#: write of every map, to spare readers whole maps when they check tokens. Dropped on start:
#: a reader checks a board's tokens at most every `fresh_for` seconds, and reading them from
#: the maps took 1.2 ms on the local database at 100,000 agents (six maps, 190 KB of
#: counts), against a second upsert with every map written on the pipeline's hottest path.
LEGACY_MAP_TOKENS = "count_map_tokens"
PERIODS = "periods"
CLOSES = "period_closes"
AGENTS = "agents"


class TokenCache(Generic[K, V]):
    """Values kept per process under the write tokens they were read under: a value is
    served only while its tokens are still the current ones; least recently used dropped."""

    def __init__(self, size: int) -> None:
        self._kept: LRUCache[K, tuple[tuple[Any, ...], V]] = LRUCache(size)

    def get(self, key: K, tokens: tuple[Any, ...]) -> V | None:
        kept = self._kept.get(key)
        if kept is None or kept[0] != tokens:
            return None
        return kept[1]

    def put(self, key: K, tokens: tuple[Any, ...], value: V) -> None:
        self._kept[key] = (tokens, value)


class RecentCache(Generic[K, V]):
    """Values kept per process with when they were read (time.monotonic()): a value is
    served only while younger than the window the caller asks; least recently used
    dropped."""

    def __init__(self, size: int) -> None:
        self._kept: LRUCache[K, tuple[float, V]] = LRUCache(size)

    def get(self, key: K, within: float) -> tuple[float, V] | None:
        """(read at, value), if read less than `within` seconds ago."""
        kept = self._kept.get(key)
        if kept is None or time.monotonic() - kept[0] >= within:
            return None
        return kept

    def put(self, key: K, read_at: float, value: V) -> None:
        self._kept[key] = (read_at, value)


#: Merged histograms, one per board read.
_HISTOGRAMS: TokenCache[tuple[str, str], Histogram] = TokenCache(256)
#: Pages of boards (offset and limit) under the tokens of their board's maps. Every change
#: of an entry writes its map (handlers._count_moves), so a page whose board's tokens are
#: unchanged is exactly what the index would give.
_PAGES: TokenCache[tuple[str, str, int, int], list[Row]] = TokenCache(256)
#: Each board's tokens as last read here, with when (time.monotonic()): within a reader's
#: `fresh_for` they stand for the current ones, with no query (see BoardReader).
_TOKENS_READ: RecentCache[tuple[str, str], tuple[Any, ...]] = RecentCache(1024)


def new_write_token() -> str:
    return uuid.uuid4().hex


@dataclass
class MapWrites:
    """Writes of count maps: whoever writes a map gives it a new token. Apply them in the
    transaction that changes what the maps count."""

    maps: list[InsertOne | ReplaceOne | DeleteOne] = field(default_factory=list)

    def put(
        self,
        board: str,
        lane: int,
        counts: Mapping[int, int],
        absent: bool = False,
        seq: int = 0,
    ) -> str:
        """Returns the map's new write token. `absent`: the map is known not to be stored
        and nobody else can write it (a bulk load). It is then inserted: the local database
        commits a batch of inserts at once, but upserts one by one outside a transaction
        (about 0.8 ms each, measured). `seq`: the journal record this write goes with
        (journal.py); a write that records nothing there leaves 0, and readers of the
        journal then read the board again."""
        id_ = counts_id(board, lane)
        token = new_write_token()
        stored = {
            "board": board,
            "lane": lane,
            "counts": pack(counts),
            WRITE_TOKEN: token,
            SEQ: seq,
        }
        self.maps.append(
            InsertOne({"_id": id_, **stored})
            if absent
            else ReplaceOne({"_id": id_}, stored, upsert=True)
        )
        return token

    def delete(self, id_: str) -> None:
        self.maps.append(DeleteOne({"_id": id_}))

    def __len__(self) -> int:
        return len(self.maps)

    def apply(self, db: Database, session: ClientSession | None = None) -> None:
        if self.maps:
            db[SCORE_COUNTS].bulk_write(self.maps, ordered=False, session=session)


def counts_id(board: str, lane: int) -> str:
    """A count map's `_id`. Unique: the lane is the integer after the last `#`."""
    return f"{board}#{lane}"


def score_band(board: str, low: int, high: int) -> dict[str, Any]:
    """Scores are integers, so a band of scores `low..high` is written
    `{"$gt": low - 1, "$lt": high + 1}`: the local MongoDB-protocol server drops the
    boundary value of `$gte` on a descending index key (it returns scores above it only),
    and the strict bounds mean the same on every server."""
    return standings.scored(board, {"$gt": low - 1, "$lt": high + 1})


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


#: When neighbours are asked, ties up to this size are read whole to rank within them (one
#: query); larger ones, and every rank asked alone, are counted by the index (two queries,
#: then one for the neighbours if asked).
TIE_READ_WHOLE = 100


class BoardReader:
    """Queries on one database (optionally inside a transaction's session).

    A board's histogram (its per-lane count maps, merged) turns positions into scores: a
    page or a neighbourhood is ONE find on the narrow band of scores that holds it, sorted
    by the board's index and skipped within the band, and a rank is the agents above the
    agent's score (a sum over the histogram) plus those tied with it and ahead (counted in
    the index, within the tie only). A server that sorts every match of a range before its
    limit thus sorts a band, never the part of the board above it.
    """

    def __init__(
        self, db: Database, session: ClientSession | None = None, *, fresh_for: float = 0.0
    ) -> None:
        """`fresh_for` > 0 (seconds) lets a board's count maps read that recently in this
        process stand for the current ones: reads are eventually consistent (ARCHITECTURE
        §5), and a busy board then costs no query per read. Never inside a transaction."""
        self.db = db
        self.session = session
        self.fresh_for = fresh_for if session is None else 0.0
        # The maps' tokens each board's histogram was read under, and when (see `top`).
        self._tokens: dict[str, tuple[Any, ...]] = {}
        self._read_at: dict[str, float] = {}
        # Each team board as its last histogram read it whole: the rows that histogram counts
        # (`positions` and `place` take the histogram they are given).
        self._team_boards: dict[str, list[Row]] = {}

    def read_at(self, board: str) -> float:
        """When (time.monotonic()) the tokens of the board's last histogram were read."""
        return self._read_at[board]

    def _board_tokens(self, board: str, refresh: bool) -> tuple[float, tuple[Any, ...]]:
        key = (self.db.name, board)
        recent = None if refresh else _TOKENS_READ.get(key, self.fresh_for)
        if recent is not None:
            return recent
        read_at = time.monotonic()
        tokens = tuple(
            sorted(
                (doc["_id"], doc.get(WRITE_TOKEN))
                for doc in self.db[SCORE_COUNTS].find(
                    {"board": board}, {WRITE_TOKEN: 1}, session=self.session
                )
            )
        )
        if self.session is None:
            _TOKENS_READ.put(key, read_at, tokens)
        return read_at, tokens

    def histogram(self, board: str, *, refresh: bool = False) -> Histogram:
        """The board's merged count maps: read whole only when one of them changed since
        this process last merged them (their write tokens say), else from memory. The
        tokens are read unless read within `fresh_for` (and `refresh` is not asked).
        A team board has no maps: its scores are counted from its entries."""
        if not keeps_count_maps(board):
            return self._counted_histogram(board)
        maps = self.db[SCORE_COUNTS]
        self._read_at[board], tokens = self._board_tokens(board, refresh)
        self._tokens[board] = tokens
        key = (self.db.name, board)
        cached = _HISTOGRAMS.get(key, tokens)
        if cached is not None:
            return cached
        docs = list(
            maps.find({"board": board}, {"counts": 1, WRITE_TOKEN: 1}, session=self.session)
        )
        histogram = merge_counts(unpack(doc.get("counts")) for doc in docs)
        # What was read may be newer than the tokens: cache it under its own tokens.
        read_tokens = tuple(sorted((doc["_id"], doc.get(WRITE_TOKEN)) for doc in docs))
        if all(token is not None for _, token in read_tokens):
            _HISTOGRAMS.put(key, read_tokens, histogram)
        return histogram

    def _counted_histogram(self, board: str) -> Histogram:
        """A board without count maps (a team's, boards.keeps_count_maps): its scores, from
        the board read whole (kept for the `positions` and `place` given this histogram).
        It has no write tokens, so nothing read from it is cached under them (`top` reads
        it every time)."""
        self._read_at[board] = time.monotonic()
        rows = standings.team_board(self.db, board, self.session)
        self._team_boards[board] = rows
        return merge_counts([Counter(row.score for row in rows)])

    def _team_board(self, board: str) -> list[Row]:
        """The team board whole, in board order, as its last histogram read it."""
        if board not in self._team_boards:
            self._counted_histogram(board)
        return self._team_boards[board]

    @property
    def _entries(self) -> Collection:
        return self.db[STANDINGS]

    def entry(self, board: str, agent_id: str) -> Row | None:
        """One query: the agent's primary document, and its spill for the board (if the
        board is a team's or a tier's), whichever holds the board's slot."""
        place = place_of(board)
        ids = [standings.primary_id(place.period, agent_id)]
        if place.owner is not None:
            ids.append(standings.spill_id(place, agent_id))
        query = {"_id": {"$in": ids}, **standings.scored(board, {"$exists": True})}
        doc = self._entries.find_one(query, standings.projection(board), session=self.session)
        return standings.row(doc, board) if doc else None

    def _count(self, query: dict[str, Any]) -> int:
        return self._entries.count_documents(query, session=self.session)

    def place(
        self, board: str, row: Row, k: int, histogram: Histogram
    ) -> tuple[int, list[Row], list[Row]]:
        """The row's rank (1 + the agents above its score + those tied with it and ahead)
        and up to k entries just ahead of it and k just behind it, in board order.

        The histogram gives the size of the tie. Alone on its score with no neighbours
        asked, the row needs no query. With neighbours asked, a tie of up to TIE_READ_WHOLE
        is read whole, as the band of its one score in the board's index: the rank within
        the tie and the neighbours inside it come from it. Only when the k positions on a
        side reach past the tie are those read too, from the next scores. (Reading the tie
        and both neighbouring scores as one band read three ties where one is needed: at
        100,000 agents, about 150 entries for every rank; a server that sorts every match
        of a range before its limit reads them all.) Without neighbours, or for a larger
        tie, the tied entries ahead are counted as two plain ranges of the index (every
        server answers a range from the index, not every one plans an `$or` over it): they
        are about half the tie, and no entry is sent back. Then the positions around the
        rank, if asked, are read as one band.

        Measured on the local database, 100,000 agents, ties of about 50: 12.1 ms for a
        rank with two neighbours read as three ties, 5.6 to 7.0 as one; 7.0 ms for a rank
        alone read from its whole tie, 2.1 counted.

        A team board, read whole (`_team_board`), is ranked in memory.

        The rows are split by their order against `row`, so the row never appears among its
        own neighbours, nor one behind it among those ahead, even when a change landed
        after the histogram was read (the positions are then off by one at most).
        """
        if not keeps_count_maps(board):
            rows = self._team_board(board)
            ahead = [other for other in rows if other.order < row.order]
            behind = [other for other in rows if other.order > row.order]
            return 1 + len(ahead), ahead[max(len(ahead) - k, 0) :], behind[:k]
        above = ahead_of(histogram, row.score)
        tied = histogram.get(row.score, 0)
        if tied <= 1 and k == 0:
            return 1 + above, [], []
        if k and tied <= TIE_READ_WHOLE:
            tie_ends = above + max(tied, 1)
            rows = self.positions(board, above + 1, tie_ends, histogram)
            same_ahead = [o for o in rows if o.order < row.order and o.score == row.score]
            rank = 1 + above + len(same_ahead)
            if rank - k <= above:
                # Read first: a higher score comes before the tie in board order.
                rows = self.positions(board, max(rank - k, 1), above, histogram) + rows
            if rank + k > tie_ends:
                rows = rows + self.positions(board, tie_ends + 1, rank + k, histogram)
            ahead = [other for other in rows if other.order < row.order]
        else:
            same = standings.scored(board, row.score)
            reached_at = standings.reached_field(board)
            tied_ahead = self._count({**same, reached_at: {"$lt": row.reached_at}})
            tied_ahead += self._count(
                {**same, reached_at: row.reached_at, "agent_id": {"$lt": row.agent_id}}
            )
            rank = 1 + above + tied_ahead
            if k == 0:
                return rank, [], []
            rows = self.positions(board, max(rank - k, 1), rank + k, histogram)
            ahead = [other for other in rows if other.order < row.order]
        behind = [other for other in rows if other.order > row.order]
        return rank, ahead[max(len(ahead) - k, 0) :], behind[:k]

    def positions(
        self, board: str, first: int, last: int, histogram: Histogram | None = None
    ) -> list[Row]:
        """The entries at positions `first`..`last` (1-based, inclusive) in board order."""
        if not keeps_count_maps(board):
            return self._team_board(board)[first - 1 : last]
        if histogram is None:
            histogram = self.histogram(board)
        found = band(histogram, first, last)
        if found is None:
            return []
        cursor = self._entries.find(
            score_band(board, found.low, found.high),
            standings.projection(board),
            session=self.session,
        ).sort(standings.board_order(board))
        if first - 1 > found.above:
            cursor = cursor.skip(first - 1 - found.above)
        return [standings.row(doc, board) for doc in cursor.limit(last - first + 1)]

    def top(
        self, board: str, offset: int, limit: int, histogram: Histogram | None = None
    ) -> list[Row]:
        """Entries offset+1 .. offset+limit in board order: from memory while the board's
        maps have the tokens its histogram was read under here and the page was read."""
        if histogram is None:
            histogram = self.histogram(board)
        tokens = self._tokens.get(board)
        key = (self.db.name, board, offset, limit)
        cached = _PAGES.get(key, tokens) if tokens is not None else None
        if cached is not None:
            return list(cached)
        rows = self.positions(board, offset + 1, offset + limit, histogram)
        if tokens is not None and self.session is None:
            # Read after the tokens: if a write landed between, its new tokens are what
            # every later read sees, so this page is never served under them.
            _PAGES.put(key, tokens, rows)
        return list(rows)

    def names(self, agent_ids: list[str]) -> dict[str, dict[str, Any]]:
        return find_by_ids(self.db[AGENTS], agent_ids, self.session)

    def is_closed(self, period_key: str) -> bool:
        return self.db[CLOSES].find_one({"_id": period_key}, {"_id": 1}) is not None

    def agent_entries(self, agent_id: str, boards: Iterable[str]) -> dict[str, Row]:
        """The agent's entries on `boards` that exist, by board, with their lanes."""
        boards = set(boards)
        periods = standings.read(self._entries, ((b, agent_id) for b in boards), self.session)
        return standings.held(periods, agent_id, boards)

    def all_entries(self) -> Iterator[tuple[str, Row]]:
        """Every entry, with its lane."""
        return standings.all_entries(self._entries)

    def log(self, agent_id: str | None = None) -> Iterator[PointChange]:
        query = {} if agent_id is None else {"agent_id": agent_id}
        for doc in self.db[APPLIED].find(query, session=self.session):
            yield change_from_log(doc)

    def logged_lane(self, agent_id: str) -> int | None:
        """The lane the agent's latest logged change was applied from, if it recorded one."""
        doc = self.db[APPLIED].find_one(
            {"agent_id": agent_id, "lane": {"$exists": True}},
            {"lane": 1},
            sort=[("applied_at", DESCENDING)],
            session=self.session,
        )
        return None if doc is None else int(doc["lane"])

    def stored_counts(self) -> Iterator[tuple[str, int, dict[int, int]]]:
        """Every count map as stored: (board, lane, {score: count})."""
        for doc in self.db[SCORE_COUNTS].find({}):
            counts = unpack(doc.get("counts"))
            yield doc["board"], doc["lane"], counts


def display(agent: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(name, team) to show: the roster's, else the team of the latest point event."""
    if agent is None:
        return None, None
    return agent.get("name"), agent.get("team_id") or agent.get("points_team_id")
