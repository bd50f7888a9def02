"""The bench's count of documents written (bench/writes.py): oplog entries tallied by
collection and operation, and the report's per-event and per-document figures."""

from __future__ import annotations

from collections import Counter

from bson.timestamp import Timestamp

from bench.config import from_environment
from bench.writes import still_holds, summary, tally


def test_tally_counts_each_document_written_alone_or_in_a_transaction() -> None:
    entries = [
        {"op": "i", "ns": "app.ledger"},
        {"op": "u", "ns": "app.accounts"},
        {"op": "d", "ns": "app.outbox"},
        # MongoDB writes a transaction as one command entry holding its writes.
        {
            "op": "c",
            "ns": "admin.$cmd",
            "o": {"applyOps": [{"op": "i", "ns": "app.ledger"}, {"op": "u", "ns": "app.accounts"}]},
        },
        {"op": "c", "ns": "app.$cmd", "o": {"create": "ledger"}},  # not a document
        {"op": "n", "ns": "", "o": {"msg": "periodic noop"}},
    ]
    assert tally(entries) == Counter(
        {
            ("app.ledger", "insert"): 2,
            ("app.accounts", "update"): 2,
            ("app.outbox", "delete"): 1,
        }
    )


def test_an_oplog_holds_a_position_until_pruned_past_it() -> None:
    position = Timestamp(1_000, 5)
    assert still_holds(position, Timestamp(900, 1))
    assert still_holds(position, position)
    assert still_holds(position, None)
    assert not still_holds(position, Timestamp(1_000, 6))


def test_summary_gives_documents_per_event_and_each_servers_cpu_per_document() -> None:
    counts = {
        "database": Counter({("p.ledger", "insert"): 300, ("p.accounts", "update"): 100}),
        "database-leaderboards": Counter({("l.standings", "update"): 200}),
    }
    cpu = {"database": 0.08, "database-leaderboards": 0.1, "points": 5.0}
    written = summary(counts, events=100, cpu_seconds=cpu)
    assert written["documents"] == 600
    assert written["per_event"] == 6.0
    # The servers' CPU only (0.18 s) over their 600 documents.
    assert written["cpu_us_per_document"] == 300
    assert written["servers"]["database"] == {
        "counted": True,
        "documents": 400,
        "per_event": 4.0,
        "cpu_us_per_document": 200,
    }
    assert written["servers"]["database-leaderboards"]["cpu_us_per_document"] == 500
    assert [row["namespace"] for row in written["by_collection"]] == [
        "p.ledger",
        "l.standings",
        "p.accounts",
    ]
    assert written["by_collection"][0] == {
        "namespace": "p.ledger",
        "op": "insert",
        "documents": 300,
        "per_event": 3.0,
    }


def test_a_server_whose_oplog_was_pruned_leaves_the_totals_out() -> None:
    counts = {"database": Counter({("p.ledger", "insert"): 300}), "database-leaderboards": None}
    written = summary(counts, events=100, cpu_seconds={"database": 0.1})
    assert written["documents"] is None
    assert written["per_event"] is None
    assert written["cpu_us_per_document"] is None
    assert written["servers"]["database-leaderboards"]["counted"] is False
    assert written["servers"]["database"]["per_event"] == 3.0


def test_writes_are_counted_only_when_asked() -> None:
    assert from_environment({}).count_writes is False
    assert from_environment({"BENCH_WRITES": "0"}).count_writes is False
    assert from_environment({"BENCH_WRITES": "1", "BENCH_QUICK": "1"}).count_writes is True
