"""The bench's split of an end-to-end latency into stages (bench/stages.py), from records
as the services write them, on the real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId
from pymongo import MongoClient

from bench import stages

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def unix(ms: int) -> float:
    return at(ms).timestamp()


def outbox_doc(written_ms: int, sent_ms: int | None, keys: list[str]) -> dict:
    return {
        "_id": ObjectId(),  # written now: after `since`, as the bench's probes are
        "events": [{"event_id": uuid.uuid4().hex, "key": key} for key in keys],
        "created_at": at(written_ms),
        "sent_at": None if sent_ms is None else at(sent_ms),
    }


def test_each_probe_is_split_at_the_records_it_left_and_untraced_ones_are_left_out(database):
    client: MongoClient = MongoClient(database.uri, tz_aware=True)
    names = {
        "points": f"points_{uuid.uuid4().hex[:8]}",
        "leaderboards": f"lb_{uuid.uuid4().hex[:8]}",
    }
    points, boards = client[names["points"]], client[names["leaderboards"]]
    try:
        # p1: sent at 0, batch at 100, outbox at 150, sent at 190, board batch 300, seen 420.
        # A later award of p1 (a badge bonus) must not count: the earliest records do.
        points.ledger.insert_many(
            [
                {"_id": "a1", "agent_id": "p1", "recorded_at": at(100)},
                {"_id": "a2", "agent_id": "p1", "recorded_at": at(2_000)},
                {"_id": "a3", "agent_id": "p2", "recorded_at": at(50)},
            ]
        )
        points.outbox.insert_many(
            [
                outbox_doc(2_100, 2_200, ["p1"]),
                outbox_doc(150, 190, ["x", "p1"]),
                outbox_doc(60, None, ["p2"]),  # p2's award is not published: untraced
            ]
        )
        # Written before the probes were sent (an earlier run's agent of the same id): not read.
        earlier = {**outbox_doc(60, 70, ["p2"]), "_id": ObjectId.from_datetime(at(-86_400_000))}
        points.outbox.insert_one(earlier)
        boards.applied_points.insert_many(
            [
                {"_id": "e1", "agent_id": "p1", "applied_at": at(300)},
                {"_id": "e2", "agent_id": "p1", "applied_at": at(2_500)},
                {"_id": "e3", "agent_id": "p2", "applied_at": at(200)},
            ]
        )
        seen = {"p1": (unix(0), unix(420)), "p2": (unix(0), unix(900))}
        split = stages.split(points, boards, seen, since=datetime.now(UTC) - timedelta(minutes=1))
        assert split["probes_traced"] == 1
        got = {stage: split[stage]["p50"] for stage in stages.STAGES}
        assert got == {
            "to_points_batch": 100.0,
            "points_batch": 50.0,
            "relay": 40.0,
            "to_leaderboards_batch": 110.0,
            "leaderboards_batch_to_seen": 120.0,
        }
    finally:
        client.drop_database(names["points"])
        client.drop_database(names["leaderboards"])
        client.close()
