"""Where an end-to-end latency goes: each probe's path split at the times the services
record on the way, read back once the probes are seen.

A probe (a module completion) is awarded by points and reaches the leaderboards through
points' outbox and `gamification.points`:

1. `to_points_batch`: sent -> the points batch holding it starts (`recorded_at` of its
   ledger entry): the broker hop, and the batches ahead of it;
2. `points_batch`: -> the batch's events are written to the outbox (`created_at`): the
   transaction's work;
3. `relay`: -> published and marked sent (`sent_at`): the commit, the relay's wake-up and
   the broker's acknowledgement;
4. `to_leaderboards_batch`: -> the leaderboards batch holding the award starts
   (`applied_at` of its applied-points record);
5. `leaderboards_batch_to_seen`: -> the bench sees it on the board: that transaction and
   its commit, then the watcher's poll and its check through the position endpoint.

The services' times are the database's (milliseconds, from the same machine's clock).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from bench.stats import percentiles
from services.leaderboards.store import APPLIED
from services.points.store import LEDGER
from services.runtime.mongo import IDS_PER_QUERY, find_in
from services.runtime.outbox import OUTBOX

STAGES = (
    "to_points_batch",
    "points_batch",
    "relay",
    "to_leaderboards_batch",
    "leaderboards_batch_to_seen",
)


def split(
    points: Database,
    leaderboards: Database,
    seen: Mapping[str, tuple[float, float]],
    since: datetime,
) -> dict[str, Any]:
    """`seen`: agent id -> (sent, seen) in Unix seconds, for the probes seen; `since`: when
    the first was sent; `points`, `leaderboards`: the two services' databases. Returns each
    stage's percentiles in ms, and how many probes could be traced through every record."""
    agents = list(seen)
    started = _earliest(find_in(points[LEDGER], "agent_id", agents, IDS_PER_QUERY), "recorded_at")
    applied = _earliest(
        find_in(leaderboards[APPLIED], "agent_id", agents, IDS_PER_QUERY), "applied_at"
    )
    outbox: dict[str, dict[str, Any]] = {}  # per agent, the first document with its events
    # Outbox documents are not indexed by key: only those written since are read (`_id`).
    recent = {"_id": {"$gte": ObjectId.from_datetime(since)}}
    for doc in find_in(points[OUTBOX], "events.key", agents, IDS_PER_QUERY, recent):
        if doc.get("sent_at") is None:
            continue
        for key in {event["key"] for event in doc["events"]} & seen.keys():
            known = outbox.get(key)
            if known is None or doc["created_at"] < known["created_at"]:
                outbox[key] = doc
    spans: dict[str, list[float]] = {stage: [] for stage in STAGES}
    traced = 0
    for agent, (sent, visible) in seen.items():
        if agent not in started or agent not in applied or agent not in outbox:
            continue
        doc = outbox[agent]
        times = [
            sent,
            started[agent],
            doc["created_at"].timestamp(),
            doc["sent_at"].timestamp(),
            applied[agent],
            visible,
        ]
        for stage, begin, end in zip(STAGES, times, times[1:], strict=False):
            spans[stage].append((end - begin) * 1000)
        traced += 1
    return {
        "probes_traced": traced,
        **{stage: percentiles(values, (50, 95, 99)) for stage, values in spans.items()},
    }


def _earliest(docs: Any, field: str) -> dict[str, float]:
    """Per agent, the earliest `field` (Unix seconds) among `docs`."""
    earliest: dict[str, float] = {}
    for doc in docs:
        at: datetime = doc[field]
        agent = doc["agent_id"]
        earliest[agent] = min(earliest.get(agent, at.timestamp()), at.timestamp())
    return earliest
