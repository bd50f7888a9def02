"""SIGTERM to a busy `nameko run` consumer: readiness turns false first, the records in
flight are finished and committed (nothing handled is left uncommitted, nothing committed
is left unhandled), the process exits by itself, and a restart picks up exactly the rest.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from kafka import KafkaAdminClient
from pymongo import MongoClient

from contracts.events import TicketResolved
from contracts.topics import ALL_TOPICS, WORK_TICKETS
from deploy.local.servers import http_ok
from deploy.local.topics import ensure_topics
from tests.faults.stack import Deployment, Producer, ServiceProcess, database_name
from tests.support.events import snapshot, ticket_resolved
from tests.support.harness import unique_prefix, wait_until

pytestmark = pytest.mark.integration

#: Published before the service starts, so the stop lands mid-stream however fast they
#: were sent (sent while the service ran, they once trickled in slower than it handled
#: them on a loaded machine, and all were handled before the stop).
EVENTS = 600


def _tickets(count: int) -> list[TicketResolved]:
    at = datetime.now(UTC) - timedelta(minutes=5)
    return [
        ticket_resolved(snapshot(f"agent-{n % 40:03d}", "t-1"), at, f"tk-{n}", qa_score=90)
        for n in range(count)
    ]


def _handled(client: MongoClient, prefix: str) -> set[str]:
    docs = client[database_name(prefix, "points")]["processed_events"].find({}, {"_id": 1})
    return {doc["_id"].split(":", 1)[1] for doc in docs if doc["_id"].startswith("points.awards:")}


def _committed_event_ids(broker: Any, prefix: str, by_position: dict[Any, str]) -> set[str]:
    group = f"{prefix}skillquest.points"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        committed = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    topic = prefix + WORK_TICKETS
    marks = {tp.partition: mark.offset for tp, mark in committed.items() if tp.topic == topic}
    return {
        event_id
        for (partition, offset), event_id in by_position.items()
        if offset < marks.get(partition, 0)
    }


def test_sigterm_turns_unready_then_finishes_and_commits_in_flight_work(
    broker: Any, database: Any, tmp_path: Any
) -> None:
    prefix = unique_prefix()
    # Small polls (so small batches): the stream takes many batches, and the stop lands
    # between some of them.
    deployment = Deployment(
        broker, database, prefix, tmp_path, runtime={"consumer_max_poll_records": 5}
    )
    config = deployment.config()
    ensure_topics(broker.bootstrap, [prefix + topic for topic in ALL_TOPICS])
    client: MongoClient = MongoClient(database.uri, tz_aware=True)
    producer = Producer(broker.bootstrap, prefix)
    events = _tickets(EVENTS)
    by_position: dict[tuple[int, int], str] = {}
    points = ServiceProcess("points", 1, config, tmp_path)
    try:
        for event in events:
            _, partition, offset = producer.send_raw(
                WORK_TICKETS, event.subject, event.to_json_bytes()
            )
            by_position[(partition, offset)] = event.id
        points.start().wait_ready(90)
        # Busy: some handled, many still to go.
        wait_until(lambda: len(_handled(client, prefix)) >= 40, 60, "the first records")

        answers: list[tuple[float, int, dict[str, Any]]] = []
        stop_polling = threading.Event()

        def poll_readiness() -> None:
            while not stop_polling.is_set():
                try:
                    reply = requests.get(f"{points.url}/readyz", timeout=1)
                    answers.append((time.monotonic(), reply.status_code, reply.json()))
                except requests.RequestException:
                    answers.append((time.monotonic(), 0, {}))
                time.sleep(0.005)

        poller = threading.Thread(target=poll_readiness)
        poller.start()
        time.sleep(0.1)
        signalled = time.monotonic()
        points.terminate()
        code = points._wait(30)  # exits by itself: no SIGKILL needed
        exited = time.monotonic()
        stop_polling.set()
        poller.join()

        assert code == 0, f"points exited with {code}"
        after = [a for a in answers if a[0] >= signalled]
        unready = [a for a in after if a[1] == 503]
        assert unready, f"no 503 from /readyz between SIGTERM and exit: {after[:5]}"
        # Readiness turned false because it is stopping, while the database still answered.
        assert any(a[2]["checks"].get("accepting") is False for a in unready)
        assert any(a[2]["checks"].get("database") is True for a in unready)
        assert all(a[1] != 200 for a in after if a[0] >= unready[0][0])

        handled = _handled(client, prefix)
        committed = _committed_event_ids(broker, prefix, by_position)
        assert handled, "nothing was handled before the stop"
        assert len(handled) < EVENTS, "the stop came too late to test anything"
        # Everything done was committed; nothing committed was left undone.
        assert handled == committed
        print(
            f"\nSIGTERM: {len(handled)} of {EVENTS} handled and committed; "
            f"first 503 after {unready[0][0] - signalled:.3f}s, exit after "
            f"{exited - signalled:.2f}s"
        )

        # The next instance takes up exactly the rest.
        points = ServiceProcess("points", 2, config, tmp_path).start().wait_ready(90)
        wait_until(lambda: len(_handled(client, prefix)) == EVENTS, 120, "the rest")
        ledger = client[database_name(prefix, "points")]["ledger"]
        sources = [doc["source_event_id"] for doc in ledger.find({}, {"source_event_id": 1})]
        assert len(sources) == len(set(sources)), "an event was awarded twice"
    finally:
        producer.close()
        points.stop(20)
        client.close()


def test_sigterm_stops_an_idle_gateway_by_itself(broker: Any, database: Any, tmp_path: Any) -> None:
    """The gateway has no consumer polling, so nothing wakes its event loop between
    requests: the stop that SIGTERM asks for used to wait for the next request, and the
    process was killed when the grace period ran out (runtime/signal_wakeup.py)."""
    config = Deployment(broker, database, unique_prefix(), tmp_path).config()
    config["JWT_SECRET"] = secrets.token_urlsafe(48)
    gateway = ServiceProcess("gateway", 1, config, tmp_path)
    try:
        gateway.start()
        wait_until(lambda: http_ok(f"{gateway.url}/healthz"), 90, "the gateway to answer")
        gateway.terminate()
        # Well under the event loop's longest wait (a minute), and no request to wake it.
        wait_until(lambda: not gateway.is_running, 20, "the gateway to exit after SIGTERM")
        assert gateway.returncode == 0
    finally:
        gateway.stop()
