"""The entry journal: for every journaled write of a count map, the entries it changed
(and, as a chain of its own, the display names each roster batch wrote: names.py).

The read views (views.py) hold whole boards in memory and must learn what changed without
reading a board again. Change streams would tell them on MongoDB, but on the local server
each watcher costs about 0.6 ms of its CPU per oplog entry of any collection (measured:
3,000 replacements took 1.1 s of server CPU unwatched, 2.9 s with one watcher, 3.2 s with
one whose filter matched nothing), more than the writes themselves. The journal costs one
small insert per map written, in the transaction that writes the map.

Each (board, lane) count map is already written by one transaction at a time (a
concurrent write of it is a conflict, retried), so its records form a chain:
- a record's `seq` is the map's `seq` after the write, `prev` the map's write token before
  it (None for a new map) and `token` the one after;
- a reader that holds a map at token T follows the records after T's `seq` from T to the
  map's current token. Any write that did not journal (a recount, an upgrade, a bulk load,
  a map deleted when it emptied) or a record already expired breaks the chain, and the
  reader reads the board again instead.

Records list the entries as written, with their versions: an entry written from two lanes
has records in both chains, and the higher version is the later write. A deleted entry (a
rebuild's) is not listed: its record asks readers to read the board again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mongoengine as me
from pymongo.client_session import ClientSession
from pymongo.database import Database

JOURNAL = "entry_journal"
#: Every write of a count map (or a name mark) sets a new random token, so a reader can
#: tell that a map is exactly as it last read it without taking the map itself (its
#: `counts` are the large part: at 100,000 agents, thousands of scores per lane).
WRITE_TOKEN = "write_token"
#: How many journaled writes a count map (or a name mark) has had: its records' numbers.
SEQ = "seq"
#: Per lane, the write token and seq a reader is current with (or a map or mark is at).
Lanes = dict[int, tuple[str | None, int]]
#: Readers poll every `read_cache_seconds` (under a second); one that falls further behind
#: than this reads its boards again. Short on purpose: the TTL sweep reads the collection.
RETENTION_SECONDS = 120


class JournalRecord(me.Document):
    id = me.StringField(primary_key=True)  # record_id(board, lane, seq, token)
    board = me.StringField(required=True)
    lane = me.IntField(required=True)
    seq = me.IntField(required=True)
    token = me.StringField(required=True)
    prev = me.StringField()
    entries = me.ListField()  # [agent_id, score, reached_at, version] as written
    reread = me.BooleanField()  # an entry was deleted: read the board again
    written_at = me.DateTimeField(required=True)
    meta = {
        "collection": JOURNAL,
        "indexes": [
            {"fields": ["written_at"], "name": "expiry", "expireAfterSeconds": RETENTION_SECONDS},
            # A map's records after a seq: one range of this index. (The local server scans
            # the collection for a range of `_id`, or for an `$or` of ranges: 590 ms
            # against 1.0 ms with this index, 14,000 records.)
            {"fields": ["board", "lane", "seq"], "name": "chain"},
        ],
    }


@dataclass(frozen=True)
class Written:
    """An entry as a write left it, for its map's record; `deleted`: removed altogether."""

    board: str
    lane: int
    agent_id: str
    score: int
    reached_at: datetime | None
    version: int
    deleted: bool = False


def record_id(board: str, lane: int, seq: int, token: str) -> str:
    """Unique even across a map deleted and made again (its seq starts over): the token."""
    return f"{board}#{lane}#{seq}#{token}"


def record(
    board: str, lane: int, seq: int, token: str, prev: str | None, written: Iterable[Written]
) -> dict[str, Any]:
    """The record of one write of a (board, lane) count map."""
    listed = list(written)
    entries = [[w.agent_id, w.score, w.reached_at, w.version] for w in listed if not w.deleted]
    return chained(board, lane, seq, token, prev, entries, reread=any(w.deleted for w in listed))


def chained(
    stream: str,
    lane: int,
    seq: int,
    token: str,
    prev: str | None,
    entries: list[list[Any]],
    *,
    reread: bool = False,
) -> dict[str, Any]:
    """A record of any chain kept here: a board's count map (`record`), or the display
    names of a roster lane (names.py, under the stream `names.STREAM`)."""
    return {
        "_id": record_id(stream, lane, seq, token),
        "board": stream,
        "lane": lane,
        "seq": seq,
        "token": token,
        "prev": prev,
        "entries": entries,
        "reread": reread,
        "written_at": datetime.now(UTC),
    }


def append(db: Database, records: list[dict[str, Any]], session: ClientSession) -> None:
    if records:
        db[JOURNAL].insert_many(records, ordered=False, session=session)


def records_after(db: Database, board: str, lane: int, seq: int) -> list[dict[str, Any]]:
    """The map's records after `seq` (in no particular order: readers follow the tokens)."""
    query = {"board": board, "lane": lane, "seq": {"$gt": seq}}
    return list(db[JOURNAL].find(query, {"written_at": 0}))


def chain_to(
    records: Iterable[Mapping[str, Any]], held: str | None, current: str
) -> list[Mapping[str, Any]] | None:
    """The records that lead a map from token `held` to `current`, oldest first; None if
    they do not (a write that did not journal, an expired record, or an entry deleted).

    Walked back from `current`: tokens are unique, while a map deleted and created again
    starts a second chain from no token, whose records may still be in the journal."""
    by_token = {record["token"]: record for record in records}
    chain: list[Mapping[str, Any]] = []
    token: str | None = current
    while token != held:
        record = by_token.pop(token, None) if token is not None else None
        if record is None or record.get("reread"):
            return None
        chain.append(record)
        token = record["prev"]
    chain.reverse()
    return chain


def lanes_of(docs: Iterable[Mapping[str, Any]]) -> Lanes:
    """Lane -> (write token, seq) of count maps or name marks as stored."""
    return {int(d["lane"]): (d.get(WRITE_TOKEN), int(d.get(SEQ) or 0)) for d in docs}


def follow(
    db: Database, stream: str, held: Lanes, current: Lanes
) -> list[Mapping[str, Any]] | None:
    """The records that lead every lane of `stream` from `held` to `current`, each lane's
    oldest first; None if some do not (the reader must read the stream's state again)."""
    if any(lane not in current for lane in held):
        return None  # a map emptied and deleted: what left it is not journaled
    pending: list[Mapping[str, Any]] = []
    for lane, (token, _) in current.items():
        held_token, held_seq = held.get(lane, (None, 0))
        if token == held_token:
            continue
        if token is None:
            return None
        chain = chain_to(records_after(db, stream, lane, held_seq), held_token, token)
        if chain is None:
            return None
        pending += chain
    return pending
