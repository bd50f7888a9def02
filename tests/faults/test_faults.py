"""ARCHITECTURE §3 under faults: a stream of events from a hundred agents (about 700 put on
the input topics, about 1,700 with what the services publish in turn) goes through the
consuming services, each a `nameko run` process (two each from the second fault on), while
they are killed, the broker stalls and the database crashes. After each fault the
state of every service must equal what a fault-free run of the same events made: every
balance, ledger entry, board, badge and credit lot, with nothing lost, nothing applied
twice, no record left uncommitted and every malformed message in the dead-letter topics.

The expectation comes from a fault-free run (one instance each, its own name prefix) that
publishes the same events in the same chunks; states are compared chunk by chunk, so each
fault gets its own verdict. The measured table is printed (pytest -s) and written next to
the servers' logs (fault-table.md).

The database runs with `--sync-on-commit` (tests/faults/stack.py `DurableDatabase`): without
it a kill -9 of the server loses acknowledged transactions, which no consumer can make up.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import eventlet
import pytest
from pymongo import MongoClient

from contracts.topics import LEARNING_PROGRESS, PEOPLE_AGENTS, WORK_TICKETS
from deploy.local.servers import Broker, Database, start_on_free_port
from tests.faults.stack import (
    SERVICES,
    SUBSCRIPTIONS,
    Deployment,
    DurableDatabase,
    Producer,
    Stream,
    compare,
    dead_letter_positions,
    group_lag,
    make_stream,
    outbox_backlog,
    records_on_topics,
    snapshot,
    wait_settled,
)
from tests.support.harness import unique_prefix

pytestmark = pytest.mark.integration

AGENTS = 100
CHUNKS = 5
#: Longer than the consumer session timeout the services run with (6 s in tests).
BROKER_PAUSE_SECONDS = 9.0
SETTLE_TIMEOUT = 240.0


def _servers(root: Path) -> tuple[Broker, Database]:
    broker = start_on_free_port(lambda port: Broker(port, root / "logs"))
    database = start_on_free_port(lambda port: DurableDatabase(port, root / "mongo", root / "logs"))
    return broker, database


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Broker, Database, Path]]:
    """A broker and database of this module's own: the tests pause and kill them."""
    root = tmp_path_factory.mktemp("faults")
    broker, database = _servers(root)
    yield broker, database, root
    broker.stop()
    database.stop()


@pytest.fixture(scope="module")
def stream() -> Stream:
    return make_stream(AGENTS)


class Baseline:
    """The fault-free run, on servers of its own so that it runs beside the faulted one
    (the two take about as long): the state after each chunk, as it becomes known."""

    def __init__(self, root: Path, stream: Stream) -> None:
        self.root = root
        self.stream = stream
        self.states: list[dict[str, Any]] = []
        self.seconds: list[float] = []  # how long each chunk took to settle
        self.failure: str | None = None
        self.thread = eventlet.spawn(self._run)

    def _run(self) -> None:
        broker, database = _servers(self.root)
        prefix = unique_prefix()
        deployment = Deployment(broker, database, prefix, self.root / "logs" / "services")
        client: MongoClient = MongoClient(database.uri, tz_aware=True)
        producer = None
        try:
            deployment.start()
            producer = Producer(broker.bootstrap, prefix)
            for chunk in self.stream.chunks(CHUNKS):
                producer.publish(chunk)
                took, left = wait_settled(broker.bootstrap, client, prefix, SETTLE_TIMEOUT)
                self.seconds.append(round(took, 1))
                if any(left.values()):
                    self.failure = f"the fault-free run did not settle: {left}"
                    return
                self.states.append(snapshot(client, prefix))
        except Exception as error:  # noqa: BLE001 - reported to the test
            self.failure = f"the fault-free run failed: {error!r}"
        finally:
            if producer is not None:
                producer.close()
            deployment.stop()
            client.close()
            broker.stop()
            database.stop()

    def state_after(self, chunk: int, timeout: float = SETTLE_TIMEOUT * 2) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while len(self.states) <= chunk:
            assert self.failure is None, self.failure
            assert time.monotonic() < deadline, "the fault-free run is too slow"
            time.sleep(0.2)
        return self.states[chunk]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, stream: Stream) -> Iterator[Baseline]:
    run = Baseline(tmp_path_factory.mktemp("fault-free"), stream)
    yield run
    run.thread.wait()


def _in_flight(bootstrap: str, client: MongoClient, prefix: str) -> int:
    """Records published but not yet committed by a consumer, plus unrelayed outbox events."""
    try:
        return sum(group_lag(bootstrap, prefix).values()) + sum(
            outbox_backlog(client, prefix).values()
        )
    except Exception:  # noqa: BLE001
        return -1


def test_faults_lose_nothing_and_double_nothing(servers, stream, baseline) -> None:
    broker, database, root = servers
    prefix = unique_prefix()
    deployment = Deployment(broker, database, prefix, root / "logs" / "faults")
    deployment.start()
    client: MongoClient = MongoClient(database.uri, tz_aware=True)
    producer = Producer(broker.bootstrap, prefix)
    chunks = stream.chunks(CHUNKS)
    published: list[Any] = []
    rows: list[dict[str, Any]] = []
    malformed: list[tuple[str, int, int]] = []
    rng = random.Random(11)

    def kill_each_service_in_turn() -> str:
        for service in SERVICES:  # a second apart, each restarted at once
            for process in deployment.processes[service]:
                process.kill()
            for process in deployment.processes[service]:
                process.start()
            time.sleep(1.0)
        for process in deployment.all():
            process.wait_ready(120)
        return "restarted"

    def kill_one_of_two() -> str:
        for service in SERVICES:
            deployment.processes[service][0].kill()
        return "the other instance took over"

    def pause_broker() -> str:
        broker.pause()
        time.sleep(BROKER_PAUSE_SECONDS)
        broker.resume()
        return f"resumed after {BROKER_PAUSE_SECONDS:.0f}s"

    def crash_database() -> str:
        database.kill()
        database.start().wait_ready(60)
        return "restarted on the same data directory"

    def duplicates_and_malformed() -> str:
        for event in rng.sample(published, 300):
            producer.publish([event])
        bad = [b"not json at all", b'{"specversion": "1.0"}', b"\xff\xfe\x00"]
        for number in range(30):
            topic = (LEARNING_PROGRESS, WORK_TICKETS, PEOPLE_AGENTS)[number % 3]
            malformed.append(producer.send_raw(topic, f"agent-{number:04d}", bad[number % 3]))
        return "300 duplicates, 30 malformed"

    faults = [
        (
            "kill -9 each consuming service in turn mid-stream, restart",
            kill_each_service_in_turn,
        ),
        ("two instances each, kill -9 one of each", kill_one_of_two),
        (f"broker SIGSTOP {BROKER_PAUSE_SECONDS:.0f}s (> 6s session timeout)", pause_broker),
        ("database kill -9, restart on the same data dir", crash_database),
        ("burst of 300 duplicates and 30 malformed messages", duplicates_and_malformed),
    ]
    try:
        for index, (chunk, (fault, inject)) in enumerate(zip(chunks, faults, strict=True)):
            if inject is kill_one_of_two:
                deployment.add_instances()
            producer.publish(chunk)
            published.extend(chunk)
            time.sleep(0.7)  # mid-stream: the consumers are busy with the chunk
            in_flight = _in_flight(broker.bootstrap, client, prefix)
            started = time.monotonic()
            note = inject()
            recovery, left = wait_settled(broker.bootstrap, client, prefix, SETTLE_TIMEOUT)
            total = time.monotonic() - started
            expected = baseline.state_after(index)
            differences = compare(expected, snapshot(client, prefix))
            rows.append(
                {
                    "fault": fault,
                    "events_published": len(published),
                    "in_flight_at_fault": in_flight,
                    "lost": sum(d.lost for d in differences.values()),
                    "duplicated_or_wrong": sum(d.extra for d in differences.values()),
                    "stuck": sum(left.values()),
                    "recovery_seconds": round(total, 1),
                    "fault_free_seconds": baseline.seconds[index],
                    "note": note,
                    "differences": {k: vars(v) for k, v in differences.items()},
                }
            )
    finally:
        try:
            carried = records_on_topics(broker.bootstrap, prefix)
        except Exception:  # noqa: BLE001 - the report goes out anyway
            carried = {}
        _report(rows, root, carried)
        producer.close()
        deployment.stop()
        client.close()

    for row in rows:
        assert row["stuck"] == 0, row
        assert row["lost"] == 0 and row["duplicated_or_wrong"] == 0, row
    # Every malformed message is in the dead-letter topic of each service that reads its
    # topic, once; nothing else is.
    for service, topics in SUBSCRIPTIONS.items():
        letters = set(dead_letter_positions(broker.bootstrap, prefix, service))
        expected = {m for m in malformed if m[0] in topics}
        assert letters == expected, service


def _report(rows: list[dict[str, Any]], root: Path, carried: dict[str, int]) -> None:
    lines = [
        "| fault | events published | in flight at fault | lost | duplicated | stuck | "
        "settled after (s) | same chunk without faults (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['fault']} | {row['events_published']} | {row['in_flight_at_fault']} | "
            f"{row['lost']} | {row['duplicated_or_wrong']} | {row['stuck']} | "
            f"{row['recovery_seconds']} | {row['fault_free_seconds']} |"
        )
    lines.append("")
    lines.append(
        f"Records on the topics at the end: {sum(carried.values())} "
        + ", ".join(f"{topic} {count}" for topic, count in carried.items())
    )
    table = "\n".join(lines)
    print("\n" + table)
    (root / "fault-table.md").write_text(table + "\n")
    (root / "fault-table.json").write_text(json.dumps(rows, indent=2, default=str))
