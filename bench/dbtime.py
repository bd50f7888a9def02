"""Where the database spent its time during a phase: MongoDB's `top` command (per namespace,
per kind of operation, microseconds and counts since the server started), read before and
after the phase and subtracted. Commits are not attributed to a namespace, so the shares
are of the time the statements themselves took.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo import MongoClient

if TYPE_CHECKING:
    from bench.stack import Stack

KINDS = ("queries", "getmore", "insert", "update", "remove", "commands")


def snapshot(stack: Stack) -> dict[str, dict[str, tuple[int, int]]]:
    """{namespace: {kind: (microseconds, count)}} as the stack's database servers report it
    now (each service's database is on one of them, so namespaces do not collide)."""
    taken: dict[str, dict[str, tuple[int, int]]] = {}
    for client in stack.database_clients():
        try:
            taken.update(_server_snapshot(client))
        finally:
            client.close()
    return taken


def _server_snapshot(client: MongoClient) -> dict[str, dict[str, tuple[int, int]]]:
    totals = client.admin.command("top").get("totals", {})
    taken: dict[str, dict[str, tuple[int, int]]] = {}
    for namespace, kinds in totals.items():
        if not isinstance(kinds, dict):
            continue  # the "note" entry
        taken[namespace] = {
            kind: (int(kinds[kind]["time"]), int(kinds[kind]["count"]))
            for kind in KINDS
            if kind in kinds
        }
    return taken


def spent(
    before: dict[str, dict[str, tuple[int, int]]],
    after: dict[str, dict[str, tuple[int, int]]],
    top: int = 30,
) -> list[dict[str, Any]]:
    """The `top` busiest (namespace, kind) pairs between two snapshots, busiest first."""
    rows = []
    for namespace, kinds in after.items():
        for kind, (micros, count) in kinds.items():
            was_micros, was_count = before.get(namespace, {}).get(kind, (0, 0))
            if count > was_count:
                rows.append((micros - was_micros, count - was_count, namespace, kind))
    total = sum(row[0] for row in rows) or 1
    rows.sort(reverse=True)
    return [
        {
            "namespace": namespace,
            "kind": kind,
            "ms": round(micros / 1000),
            "share": round(micros / total, 3),
            "count": count,
            "ms_each": round(micros / count / 1000, 2),
        }
        for micros, count, namespace, kind in rows[:top]
    ]
