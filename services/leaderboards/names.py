"""Display names held in memory beside the read views (views.py): a rank or a page answered
from a view then costs no query at all.

Why: with the views, the names of an agent and its neighbours were the last query of a
rank (one indexed read by id, about a fifth of the database's time during the bench's
reads), and names change rarely: a rename, a move to another team.

How it stays current: every roster batch that changes someone moves its lane's name mark
(collection `name_marks`: a write token and a seq, as a count map has) and adds a record
to the entry journal listing the names it wrote, in the batch's transaction. The book
follows each lane's chain from the token it holds to the mark's (journal.follow), as a
view follows a count map's. A write of the roster that did not journal (a rebuild applied,
a bulk load, a restore: `invalidate`) leaves no chain to the mark, and the book is read
again.

Held: agents with a roster entry, as (name, team, roster time in ms, roster event id); the
last two order writes as the roster handler does, so two lanes' records, or a name read
from the database meanwhile, apply in the right order. An agent without one (its team on
its latest point event is shown until the roster event arrives) is read from the database
each time, and kept once it has one.

Memory: about 370 bytes per agent (measured with 100,000: 37 MB).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database

from services.common.pacing import paced
from services.common.times import to_millis
from services.leaderboards import journal
from services.leaderboards.journal import SEQ, WRITE_TOKEN
from services.leaderboards.store import AGENTS, new_write_token
from services.runtime.mongo import UnitOfWork

log = logging.getLogger(__name__)

#: The journal's stream of roster names (in its `board` field: no board key has no `|`).
STREAM = "names"
NAME_MARKS = "name_marks"
#: The lane of the mark that `invalidate` moves: never journaled, so moving it breaks
#: every book's chain.
UNJOURNALED_LANE = -1
#: What a name record lists per agent after its id, in this order, and what the book reads
#: of a roster document.
NAME_FIELDS = ("name", "team_id", "roster_at", "roster_event_id")

#: (name, team, roster time in ms since the epoch, roster event id)
Held = tuple[str, str, int, str]
Reader = Callable[[list[str]], dict[str, dict[str, Any]]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def held_of(doc: Mapping[str, Any]) -> Held | None:
    """What the book keeps of a roster document, None if it has no roster entry."""
    if doc.get("roster_at") is None or not doc.get("name"):
        return None
    millis = (to_millis(doc["roster_at"]) - _EPOCH) // timedelta(milliseconds=1)
    # Many agents share a team: one string for all of them.
    team = sys.intern(str(doc.get("team_id") or ""))
    return (doc["name"], team, millis, str(doc.get("roster_event_id") or ""))


def mark_id(lane: int) -> str:
    return f"lane:{lane}"


def journal_roster(uow: UnitOfWork, lane: int, written: list[Mapping[str, Any]]) -> None:
    """In a roster batch's transaction: moves the lane's mark and journals the roster
    documents the batch `written` (as stored, with NAME_FIELDS)."""
    if not written:
        return
    s = uow.session
    marks = uow.collection(NAME_MARKS)
    old = marks.find_one({"_id": mark_id(lane)}, session=s) or {}
    seq = int(old.get(SEQ) or 0) + 1
    token = new_write_token()
    marks.replace_one(
        {"_id": mark_id(lane)}, {"lane": lane, WRITE_TOKEN: token, SEQ: seq}, upsert=True, session=s
    )
    entries = [[doc["_id"], *(doc[field] for field in NAME_FIELDS)] for doc in written]
    record = journal.chained(STREAM, lane, seq, token, old.get(WRITE_TOKEN), entries)
    journal.append(uow.db, [record], s)


def invalidate(db: Database) -> None:
    """For writes of the roster that bypass the handler (a bulk load, a restore): every book
    reads the names again, as it would after a rebuild."""
    db[NAME_MARKS].replace_one(
        {"_id": mark_id(UNJOURNALED_LANE)},
        {"lane": UNJOURNALED_LANE, WRITE_TOKEN: new_write_token(), SEQ: 0},
        upsert=True,
    )


class NameBook:
    """The roster's names in this process, loaded and kept current by `sync` (a loop of
    the read views' provider, beside theirs); `displays` is for the request handlers."""

    #: After a chain broke, the names are read again no sooner than this many times the
    #: last load took (as the views do).
    RELOAD_FACTOR = 4.0
    #: Too many agents for the budget: counted again this much later.
    RECHECK_AFTER = 300.0
    LOAD_BATCH = 2_000

    def __init__(
        self,
        db: Database | None = None,
        *,
        max_agents: int = 0,
        stale_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[], None] = lambda: None,
    ) -> None:
        self.database = db
        self.max_agents = max_agents
        self.stale_after = stale_after
        self.clock = clock
        self.pause = pause
        self._held: dict[str, Held] | None = None  # None: not loaded
        self.lanes: journal.Lanes = {}
        self.synced_at = 0.0
        self.read_at = 0.0
        self.load_after = 0.0
        self.load_seconds = 0.0
        self.reason = "first read"
        self.loads: Counter[str] = Counter()  # by reason: "first read", "chain broken"

    def __len__(self) -> int:
        return len(self._held or {})

    @property
    def db(self) -> Database:
        if self.database is None:
            raise RuntimeError("the name book has no database before the service starts")
        return self.database

    def ready(self) -> bool:
        return self._held is not None and self.clock() - self.synced_at <= self.stale_after

    def displays(self, agent_ids: Iterable[str], read: Reader) -> dict[str, dict[str, Any]]:
        """The documents store.display shows the agents by: from the book when it is
        loaded and caught up within `stale_after`; the others `read` from the database (and
        kept, when they have a roster entry)."""
        ids = list(agent_ids)
        self.read_at = self.clock()
        if self._held is None or not self.ready():
            return read(ids)
        found: dict[str, dict[str, Any]] = {}
        missing = []
        for agent_id in ids:
            held = self._held.get(agent_id)
            if held is None:
                missing.append(agent_id)
            else:
                found[agent_id] = {"name": held[0], "team_id": held[1]}
        if missing:
            for agent_id, doc in read(missing).items():
                found[agent_id] = doc
                self._take(agent_id, held_of(doc))
        return found

    def sync(self, wanted: bool) -> None:
        """One round: while `wanted` (some view is held), loads the names, or catches them
        up if they were read since they last were (as the views are: a book nobody reads
        costs nothing); otherwise lets them go."""
        if not wanted:
            self._held = None
            self.lanes = {}
            return
        if self._held is None:
            if self.clock() >= self.load_after:
                self._load()
            return
        if self.read_at < self.synced_at:
            return
        if not self.catch_up():
            log.info("leaderboard names: journal chain broken")
            self._held = None
            self.reason = "chain broken"
            self.load_after = self.clock() + self.RELOAD_FACTOR * self.load_seconds

    def _marks(self) -> journal.Lanes:
        return journal.lanes_of(self.db[NAME_MARKS].find({}, {"lane": 1, WRITE_TOKEN: 1, SEQ: 1}))

    def catch_up(self) -> bool:
        """Applies the records written since the book was last current; False if they do
        not lead to the marks as they are now."""
        current = self._marks()
        pending = journal.follow(self.db, STREAM, self.lanes, current)
        if pending is None:
            return False
        for record in pending:
            for agent_id, *fields in record["entries"]:
                self._take(agent_id, held_of(dict(zip(NAME_FIELDS, fields, strict=True))))
        self.lanes = current
        self.synced_at = self.clock()
        return True

    def _take(self, agent_id: str, held: Held | None) -> None:
        """Keeps `held` unless the book has a later roster write of the agent."""
        if held is None or self._held is None:
            return
        known = self._held.get(agent_id)
        if known is None or (known[2], known[3]) < (held[2], held[3]):
            self._held[sys.intern(agent_id)] = held

    def _load(self) -> None:
        started = self.clock()
        agents = self.db[AGENTS]
        if agents.estimated_document_count() > self.max_agents:
            self.load_after = started + self.RECHECK_AFTER
            log.info(
                "leaderboard names: more agents than %d; read from the database", self.max_agents
            )
            return
        lanes = self._marks()  # before the names: records written meanwhile apply again
        held: dict[str, Held] = {}
        docs = agents.find({}, list(NAME_FIELDS), batch_size=self.LOAD_BATCH)
        for doc in paced(docs, self.LOAD_BATCH, self.pause):
            kept = held_of(doc)
            if kept is not None:
                held[sys.intern(doc["_id"])] = kept  # the string the views hold
        self._held, self.lanes = held, lanes
        caught_up = self.catch_up()
        self.load_seconds = self.clock() - started
        if not caught_up:  # written past the journal while it was read: again, later
            self._held = None
            self.load_after = self.clock() + self.RELOAD_FACTOR * self.load_seconds
            return
        self.loads[self.reason] += 1
        log.info(
            "leaderboard names: %d agents read in %.2f s (%s)",
            len(held),
            self.load_seconds,
            self.reason,
        )
