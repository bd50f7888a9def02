"""The documents a phase wrote, counted from each database server's oplog: in all, per
event, by collection, and each server's CPU per document.

On the local database most of a write's cost is per document written (its oplog entry, its
index entries; see the bench README), so CPU per event is documents per event times CPU per
document: the first is the design's, the second the database's. The oplog lists every
document written, alone or in a transaction (on MongoDB, one `applyOps` entry holding the
transaction's writes), so the entries after a position taken before the phase are what the
phase wrote. The count is only whole while the oplog still holds that position: a phase
that wrote more than the oplog keeps is reported as not counted, never as a smaller figure.

Only with BENCH_WRITES=1 (config.py): the local database reads its whole oplog for such a
query, and holds it in memory meanwhile.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from bson.timestamp import Timestamp
from pymongo import MongoClient

if TYPE_CHECKING:
    from bench.stack import Stack

OPLOG = "oplog.rs"
#: Oplog operation codes of a document write. "c" is a command (a transaction's `applyOps`
#: holds writes; others create or drop), "n" a no-op.
WRITES = {"i": "insert", "u": "update", "d": "delete"}
#: Only what the count needs: not the documents themselves.
PROJECTION = {"op": 1, "ns": 1, "o.applyOps.op": 1, "o.applyOps.ns": 1}
BY_COLLECTION_ROWS = 20
T = TypeVar("T")


def tally(entries: Iterable[Mapping[str, Any]]) -> Counter[tuple[str, str]]:
    """Documents written, by (namespace, insert | update | delete), in oplog entries."""
    counts: Counter[tuple[str, str]] = Counter()
    for entry in entries:
        op = entry.get("op")
        if op == "c":
            counts.update(tally((entry.get("o") or {}).get("applyOps") or ()))
        elif op in WRITES:
            counts[(str(entry.get("ns", "")), WRITES[op])] += 1
    return counts


@dataclass(frozen=True)
class OplogPosition:
    """The newest entry of a server's oplog when taken (None: the oplog was empty)."""

    newest: Timestamp | None

    @classmethod
    def of(cls, client: MongoClient) -> OplogPosition:
        return cls(_end(client, newest=True))

    def written_since(self, client: MongoClient) -> Counter[tuple[str, str]] | None:
        """What was written after this position; None if the oplog no longer holds it
        (entries after it may have been pruned)."""
        if self.newest is None or not still_holds(self.newest, _end(client, newest=False)):
            return None
        return tally(client.local[OPLOG].find({"ts": {"$gt": self.newest}}, PROJECTION))


def still_holds(position: Timestamp, oldest: Timestamp | None) -> bool:
    """Whether an oplog whose oldest entry is now `oldest` (None: it is empty) still holds
    every entry after `position`: pruning drops the oldest entries first, so it does while
    the position itself is not older than what is left."""
    return oldest is None or oldest <= position


def _end(client: MongoClient, *, newest: bool) -> Timestamp | None:
    order = -1 if newest else 1
    for entry in client.local[OPLOG].find({}, {"ts": 1}).sort("$natural", order).limit(1):
        return entry["ts"]
    return None


class WritesMeter:
    """Takes every database server's oplog position at the start of a phase, and counts
    what each wrote since at its end (`documents_written`); does nothing unless the run
    counts writes."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.positions = {
            name: self._read(name, OplogPosition.of)
            for name in (stack.databases if stack.config.count_writes else ())
        }

    def _read(self, server: str, read: Callable[[MongoClient], T]) -> T:
        client = self.stack.database_client(server)
        try:
            return read(client)
        finally:
            client.close()

    def documents_written(
        self, events: int, cpu_seconds: Mapping[str, float]
    ) -> dict[str, Any] | None:
        if not self.positions:
            return None
        counts = {
            name: self._read(name, position.written_since)
            for name, position in self.positions.items()
        }
        return summary(counts, events, cpu_seconds)


def summary(
    counts: Mapping[str, Counter[tuple[str, str]] | None],
    events: int,
    cpu_seconds: Mapping[str, float],
) -> dict[str, Any]:
    """The report's `documents_written`: documents per event in all and per server, with the
    server's CPU per document (its CPU seconds over the same phase), and the collections
    that took most. A server whose count is not whole leaves the totals out."""

    def per_event(n: int) -> float | None:
        return round(n / events, 2) if events > 0 else None

    def cpu_us_per_document(cpu: float | None, documents: int) -> int | None:
        return round(cpu * 1e6 / documents) if cpu and documents else None

    servers: dict[str, Any] = {}
    whole = Counter[tuple[str, str]]()
    for name, counted in counts.items():
        if counted is None:
            servers[name] = {"counted": False, "why": "its oplog no longer held the start"}
            continue
        documents = sum(counted.values())
        servers[name] = {
            "counted": True,
            "documents": documents,
            "per_event": per_event(documents),
            "cpu_us_per_document": cpu_us_per_document(cpu_seconds.get(name), documents),
        }
        whole.update(counted)
    complete = all(server["counted"] for server in servers.values())
    total = sum(whole.values())
    servers_cpu = sum(cpu_seconds.get(name, 0.0) for name in counts)
    return {
        "documents": total if complete else None,
        "per_event": per_event(total) if complete else None,
        # The database servers' CPU per document they wrote, all servers together.
        "cpu_us_per_document": cpu_us_per_document(servers_cpu, total) if complete else None,
        "servers": servers,
        "by_collection": [
            {"namespace": ns, "op": op, "documents": n, "per_event": per_event(n)}
            for (ns, op), n in whole.most_common(BY_COLLECTION_ROWS)
        ],
    }
