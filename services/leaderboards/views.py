"""Read views: boards held whole in this process, in board order, kept current from the
entry journal (journal.py). A rank, a page or an agent's neighbours then cost no query.

Why: on the local database the reads of one rank (the agent's entry, its tie, the
neighbours, the names) took 8.6 to 8.9 ms of the server's CPU with 8 clients, and the
server is the bottleneck of every read. A view answers from memory and costs the
database one query per board and lane changed every `read_cache_seconds`.

A view is used only once loaded and caught up. Until then, and for a board larger than
the budget (`view_max_entries`), or from the moment its journal chain breaks until it is
read again, reads go to the database (store.BoardReader), which answers the same.

Memory: about 290 bytes per entry held (measured with 100,000 entries: 29 MB), less the
agent ids that other views and the names (names.py) hold already: they share one string.
"""

from __future__ import annotations

import bisect
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import eventlet
from nameko.extensions import DependencyProvider
from pymongo.database import Database
from pymongo.errors import PyMongoError

from services.common.pacing import paced
from services.leaderboards import journal, standings
from services.leaderboards.boards import keeps_count_maps, merge_counts, total
from services.leaderboards.count_maps import unpack
from services.leaderboards.names import NameBook
from services.leaderboards.standings import STANDINGS
from services.leaderboards.store import SCORE_COUNTS, SEQ, WRITE_TOKEN, Row
from services.runtime.metrics import ServiceMetrics

log = logging.getLogger(__name__)

#: (-score, reached_at, agent_id, version): board order; the agent id is unique, so the
#: version never takes part in a comparison.
Key = tuple[int, datetime, str, int]

VIEW_ENTRIES = "skillquest_leaderboard_view_entries"
VIEW_LOADS = "skillquest_leaderboard_view_loads_total"
VIEW_SYNC_AGE = "skillquest_leaderboard_view_sync_age_seconds"
NAMES_HELD = "skillquest_leaderboard_view_names"


def _row(key: Key) -> Row:
    return Row(key[2], -key[0], key[1], version=key[3])


class BoardView:
    """One board's entries in board order. Pure: no I/O."""

    def __init__(self, board: str, lanes: journal.Lanes) -> None:
        self.board = board
        self.lanes = lanes
        self.synced_at = 0.0  # time.monotonic() of the last catch-up
        self._order: list[Key] = []  # the entries above 0
        self._held: dict[str, Key] = {}  # every entry seen, by agent (those at 0 too)

    @classmethod
    def of_entries(cls, board: str, rows: Iterable[Row], lanes: journal.Lanes) -> BoardView:
        """From the board's entries as read (standings.row)."""
        view = cls(board, lanes)
        for row in rows:
            agent_id = sys.intern(row.agent_id)  # one string per agent, in every view
            key = (-row.score, row.reached_at, agent_id, row.version)
            view._held[key[2]] = key
            if key[0] < 0:
                view._order.append(key)
        view._order.sort()
        return view

    def __len__(self) -> int:
        """Agents on the board (score above 0)."""
        return len(self._order)

    @property
    def held(self) -> int:
        return len(self._held)

    def apply(self, agent_id: str, score: int, reached_at: datetime, version: int) -> bool:
        """Takes an entry as written, unless the view holds a later write of it."""
        held = self._held.get(agent_id)
        if held is not None:
            if held[3] >= version:
                return False
            if held[0] < 0:
                del self._order[bisect.bisect_left(self._order, held)]
        agent_id = sys.intern(agent_id)  # one string per agent, in every view
        key = (-score, reached_at, agent_id, version)
        self._held[agent_id] = key
        if score > 0:
            bisect.insort(self._order, key)
        return True

    def entry(self, agent_id: str) -> Row | None:
        """The agent's entry as the view holds it, if it is on the board (above 0)."""
        key = self._held.get(agent_id)
        return _row(key) if key is not None and key[0] < 0 else None

    def place(self, agent_id: str, k: int) -> tuple[int, list[Row], list[Row]] | None:
        """The agent's rank and up to k entries just ahead of and behind it; None when the
        agent is not on the board."""
        key = self._held.get(agent_id)
        if key is None or key[0] >= 0:
            return None
        i = bisect.bisect_left(self._order, key)
        above = [_row(other) for other in self._order[max(i - k, 0) : i]]
        below = [_row(other) for other in self._order[i + 1 : i + 1 + k]]
        return i + 1, above, below

    def page(self, offset: int, limit: int) -> list[Row]:
        return [_row(key) for key in self._order[offset : offset + limit]]


@dataclass
class _Wanted:
    """A board read here: its view once loaded, and when it was last read."""

    read_at: float
    view: BoardView | None = None
    load_after: float = 0.0  # a view is (re)loaded no earlier than this
    load_seconds: float = 0.0  # how long the last load took
    reason: str = "first read"  # why the next load happens


class BoardViews:
    """The boards read in this process, loaded and kept current by `sync` (one caller at a
    time: the service's sync loop); `ready` is for the request handlers."""

    #: After a chain broke, a board is read again no sooner than this many times its last
    #: load took: while writes bypass the journal (a bulk load), reading the board whole
    #: takes at most a fifth of the database's time spent on it.
    RELOAD_FACTOR = 4.0
    #: A board too large for the budget is weighed again this much later.
    RECHECK_AFTER = 300.0
    #: A board too small to need a view is weighed again this much later (one query for
    #: its maps): a board grows past the minimum in a bulk load or a busy morning.
    RECHECK_SMALL_AFTER = 30.0
    #: A view read more recently than this is not dropped to make room for another.
    IN_USE = 30.0
    #: A board is read whole in batches of this many entries, with a `pause` after each.
    LOAD_BATCH = 2_000

    def __init__(
        self,
        db: Database | None,
        *,
        max_entries: int,
        idle_seconds: float,
        min_entries: int = 0,
        stale_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[], None] = lambda: None,
    ) -> None:
        """`stale_after`: a view not caught up for this long is not served (reads go to the
        database) until a round has caught it up; a view is caught up only in the rounds
        after it was read, so this is how stale a read may be (the service gives two
        rounds: a second by default). `pause`: lets other work run while a board is read
        whole (in the service, a green yield: building a view of 100,000 entries takes
        about a second of CPU, and requests must not wait for it)."""
        self.database = db  # attached when the service starts (ReadViews.start)
        self.max_entries = max_entries
        self.min_entries = min_entries
        self.stale_after = stale_after
        self.idle_seconds = idle_seconds
        self.clock = clock
        self.pause = pause
        self._boards: dict[str, _Wanted] = {}
        #: The roster's names, held while some view is (names.py; ReadViews runs their
        #: sync in a loop of its own).
        self.names = NameBook(db, clock=clock, pause=pause)
        self.loads: Counter[str] = Counter()  # by reason: "first read", "chain broken", "room"

    def ready(self, board: str) -> BoardView | None:
        """The board's view if it is loaded and caught up within `stale_after`; notes the read
        either way, so the next `sync` loads a board not held yet."""
        if self.max_entries <= 0 or self.database is None or not keeps_count_maps(board):
            return None  # a team board has no journal to follow (and is small)
        now = self.clock()
        wanted = self._boards.get(board)
        if wanted is None:
            self._boards[board] = _Wanted(read_at=now)
            return None
        wanted.read_at = now
        view = wanted.view
        if view is None or now - view.synced_at > self.stale_after:
            return None  # the sync is behind (a slow or unreachable database): not served
        return view

    @property
    def db(self) -> Database:
        if self.database is None:
            raise RuntimeError("the read views have no database before the service starts")
        return self.database

    @property
    def holding(self) -> bool:
        """Some view is held: the names are wanted."""
        return any(w.view is not None for w in self._boards.values())

    @property
    def entries_held(self) -> int:
        return sum(w.view.held for w in self._boards.values() if w.view is not None)

    def oldest_sync(self) -> float:
        """How far behind the views being read are: seconds since the least recently
        caught-up view read after its last catch-up was (0 when none waits for one)."""
        waiting = [
            w.view.synced_at
            for w in self._boards.values()
            if w.view is not None and w.read_at > w.view.synced_at
        ]
        return self.clock() - min(waiting) if waiting else 0.0

    def sync(self) -> None:
        """One round: drops the boards not read for `idle_seconds`, loads the boards read
        but not held yet, then catches up the views read since they last were (one query
        for all their maps, one per lane written since). The catch-up comes last: a load
        can take seconds, and the views read meanwhile are then current when the round
        ends, not a round later. A view nobody reads costs nothing: after a pause it is
        served again once a read has had it caught up."""
        now = self.clock()
        for board, wanted in list(self._boards.items()):
            if now - wanted.read_at > self.idle_seconds:
                del self._boards[board]
        try:
            # A copy: requests add boards while this round waits on the database.
            for board, wanted in list(self._boards.items()):
                if wanted.view is None and now >= wanted.load_after:
                    self._load(board, wanted)
            self._catch_up_read()
        except PyMongoError as error:
            log.warning("leaderboard views: database unavailable (%s); next round", error)

    def _catch_up_read(self) -> None:
        """Catches up the views read since their last catch-up; a view whose chain broke
        is dropped, and read again after a few times its last load took."""
        held = [
            (w, w.view)
            for w in self._boards.values()
            if w.view is not None and w.read_at >= w.view.synced_at
        ]
        maps = self._maps_of([view.board for _, view in held])
        for wanted, view in held:
            if not self.catch_up(view, maps.get(view.board, {})):
                log.info("leaderboard view %s: journal chain broken", view.board)
                wanted.view = None
                wanted.reason = "chain broken"
                wanted.load_after = self.clock() + self.RELOAD_FACTOR * wanted.load_seconds

    def _maps_of(self, boards: list[str]) -> dict[str, journal.Lanes]:
        """Each board's maps as they are now: lane -> (token, seq)."""
        if not boards:
            return {}
        fields = {"board": 1, "lane": 1, WRITE_TOKEN: 1, SEQ: 1}
        by_board: dict[str, list[Mapping[str, Any]]] = {board: [] for board in boards}
        for doc in self.db[SCORE_COUNTS].find({"board": {"$in": boards}}, fields):
            by_board[doc["board"]].append(doc)
        return {board: journal.lanes_of(docs) for board, docs in by_board.items()}

    def catch_up(self, view: BoardView, current: journal.Lanes | None = None) -> bool:
        """Applies the journal records written since the view was last current, up to the
        maps as they are now (`current`, read if not given); False if the records do not
        lead there (the view is then stale)."""
        if current is None:
            current = self._maps_of([view.board])[view.board]
        pending = journal.follow(self.db, view.board, view.lanes, current)
        if pending is None:
            return False
        for record in pending:
            for agent_id, score, reached_at, version in record["entries"]:
                view.apply(agent_id, score, reached_at, version)
        view.lanes = current
        view.synced_at = self.clock()
        return True

    def _load(self, board: str, wanted: _Wanted) -> None:
        started = self.clock()
        maps = list(
            self.db[SCORE_COUNTS].find(
                {"board": board}, {"lane": 1, "counts": 1, WRITE_TOKEN: 1, SEQ: 1}
            )
        )
        size = total(merge_counts(unpack(m.get("counts")) for m in maps))
        if size < self.min_entries:
            wanted.load_after = started + self.RECHECK_SMALL_AFTER  # the database reads it cheaply
            return
        if size > self.max_entries or not self._make_room(size, started):
            wanted.load_after = started + self.RECHECK_AFTER
            log.info(
                "leaderboard view %s: %d entries do not fit (%d held of %d); read from the "
                "database",
                board,
                size,
                self.entries_held,
                self.max_entries,
            )
            return
        entries = standings.on_board(self.db[STANDINGS], board, batch_size=self.LOAD_BATCH)
        rows = (standings.row(doc, board) for doc in paced(entries, self.LOAD_BATCH, self.pause))
        view = BoardView.of_entries(board, rows, journal.lanes_of(maps))
        caught_up = self.catch_up(view)
        wanted.load_seconds = self.clock() - started
        if caught_up:
            wanted.view = view
            self.loads[wanted.reason] += 1
            log.info(
                "leaderboard view %s: %d entries read in %.2f s (%s)",
                board,
                len(view),
                wanted.load_seconds,
                wanted.reason,
            )
        else:  # written past the journal while it was read: again, a little later
            wanted.load_after = self.clock() + self.RELOAD_FACTOR * wanted.load_seconds

    def _make_room(self, size: int, now: float) -> bool:
        """Drops views not read for IN_USE seconds, least recently read first, until `size`
        more entries fit; False if they cannot."""
        held = self.entries_held
        views = [w for w in self._boards.values() if w.view is not None]
        idle = sorted((w for w in views if now - w.read_at > self.IN_USE), key=lambda w: w.read_at)
        while held + size > self.max_entries and idle:
            dropped = idle.pop(0)
            assert dropped.view is not None
            held -= dropped.view.held
            dropped.view = None
            dropped.reason = "room"
        return held + size <= self.max_entries


class ReadViews(DependencyProvider):
    """Runs the service's `BoardViews` (the dependency): a sync every `read_cache_seconds`
    while the service runs; none at all when that is 0 or `view_max_entries` is."""

    metrics = ServiceMetrics()

    def __init__(self, database: str = "db", settings: str = "settings") -> None:
        self.database_attr = database
        self.settings_attr = settings

    def setup(self) -> None:
        self.views = BoardViews(
            None, max_entries=0, idle_seconds=0, pause=partial(eventlet.sleep, 0)
        )
        self._threads: list[Any] = []
        self._running = False
        self._stopped = eventlet.Event()
        self._counted: Counter[str] = Counter()  # loads already added to the counter

    def start(self) -> None:
        # Every extension's setup has run: the database and the settings are there.
        siblings = {dep.attr_name: dep for dep in self.container.dependencies}
        settings = siblings[self.settings_attr].value
        self.interval = settings.read_cache_seconds
        if self.interval <= 0 or settings.view_max_entries <= 0:
            return
        self.views.max_entries = settings.view_max_entries
        self.views.idle_seconds = settings.view_idle_seconds
        self.views.min_entries = settings.view_min_entries
        self.views.stale_after = self.views.names.stale_after = 2 * self.interval
        self.views.database = self.views.names.database = siblings[self.database_attr].db
        self.views.names.max_agents = settings.view_max_entries
        families = self.metrics.families
        self.loads = families.counter(
            VIEW_LOADS,
            "Boards (and, as `names: ...`, the roster's names) read whole for the read views, "
            "by reason",
            ["reason"],
        )
        reasons = ("first read", "chain broken", "room")
        for reason in (*reasons, *(f"names: {r}" for r in reasons[:2])):
            self.loads.labels(reason)
        self._running = True
        # Two loops: reading the names whole takes seconds (4 to 6 s at 100,000 agents),
        # and the views must go on being caught up meanwhile, and the other way round.
        for round_ in (self._views_round, self._names_round):
            self._threads.append(self.container.spawn_managed_thread(partial(self._loop, round_)))

    def _loop(self, round_: Callable[[], None]) -> None:
        while self._running:
            try:
                round_()
            except Exception:  # a bug here must not take the service down: reads fall back
                log.exception("leaderboard views: a sync round failed; next round")
            with eventlet.Timeout(self.interval, False):
                self._stopped.wait()

    def _views_round(self) -> None:
        families = self.metrics.families
        self.views.sync()
        self._count_loads(self.views.loads)
        families.gauge(VIEW_ENTRIES, "Board entries held in memory by the read views").set(
            self.views.entries_held
        )
        families.gauge(VIEW_SYNC_AGE, "How far behind the read views being read are (seconds)").set(
            self.views.oldest_sync()
        )

    def _names_round(self) -> None:
        names = self.views.names
        try:
            names.sync(wanted=self.views.holding)
        except PyMongoError as error:
            log.warning("leaderboard names: database unavailable (%s); next round", error)
        self._count_loads(Counter({f"names: {r}": n for r, n in names.loads.items()}))
        self.metrics.families.gauge(
            NAMES_HELD, "Agents whose display names the read views hold in memory"
        ).set(len(names))

    def _count_loads(self, loads: Counter[str]) -> None:
        for reason, n in loads.items():
            self.loads.labels(reason).inc(n - self._counted[reason])
            self._counted[reason] = n

    def stop(self) -> None:
        self._running = False
        if not self._stopped.ready():
            self._stopped.send(True)
        for thread in self._threads:
            thread.wait()
        self._threads = []

    def kill(self) -> None:
        self._running = False
        for thread in self._threads:
            thread.kill()

    def get_dependency(self, worker_ctx: Any) -> BoardViews:
        return self.views
