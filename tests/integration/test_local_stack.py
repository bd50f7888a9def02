"""The local servers behave as the system relies on: journaled writes survive a crash of the
database, transactions work with the URI handed to services, the broker survives a pause
(our outage drill), topics are created once, and no server outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaTimeoutError
from pymongo import MongoClient
from pymongo.write_concern import WriteConcern

from deploy.local.servers import Broker, Database, start_on_free_port
from deploy.local.topics import ensure_topics

pytestmark = pytest.mark.integration

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def process_state(pid: int) -> str | None:
    """The kernel's state letter for pid (R, S, T stopped, Z zombie...); None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def is_alive(pid: int) -> bool:
    return process_state(pid) not in (None, "Z")


@pytest.fixture
def own_broker(tmp_path: Path):
    """A broker of the test's own, for tests that pause or stop it."""
    server = start_on_free_port(lambda port: Broker(port, tmp_path / "logs"))
    yield server
    server.stop()


# Database ------------------------------------------------------------------------------------


def test_journaled_writes_survive_kill_9_of_the_database(tmp_path: Path) -> None:
    database = start_on_free_port(lambda port: Database(port, tmp_path / "data", tmp_path))
    try:
        client: MongoClient = MongoClient(database.uri)
        docs = client.durability.get_collection("docs", write_concern=WriteConcern(j=True))
        for number in range(200):
            docs.insert_one({"n": number})  # one acknowledgement per document
        client.close()

        database.kill()
        database.start().wait_ready()

        client = MongoClient(database.uri)
        assert client.durability.docs.count_documents({}) == 200
        client.close()
    finally:
        database.kill()  # its data is thrown away: no need for the 2 s graceful stop


def test_a_multi_document_transaction_commits_or_aborts_as_one(
    database: Database, mongo_db_name: str
) -> None:
    client: MongoClient = MongoClient(database.uri)
    db = client[mongo_db_name]
    try:
        with client.start_session() as session, session.start_transaction():
            db.ledger.insert_one({"agent": "a1", "delta": 10}, session=session)
            db.balances.insert_one({"agent": "a1", "balance": 10}, session=session)
            # Not visible outside the transaction before it commits.
            assert db.ledger.count_documents({}) == 0

        assert db.ledger.count_documents({}) == 1
        assert db.balances.count_documents({}) == 1

        with (
            pytest.raises(RuntimeError),
            client.start_session() as session,
            session.start_transaction(),
        ):
            db.ledger.insert_one({"agent": "a2", "delta": 5}, session=session)
            db.balances.insert_one({"agent": "a2", "balance": 5}, session=session)
            raise RuntimeError("the handler failed")

        assert db.ledger.count_documents({"agent": "a2"}) == 0
        assert db.balances.count_documents({"agent": "a2"}) == 0
    finally:
        client.drop_database(mongo_db_name)
        client.close()


# Broker --------------------------------------------------------------------------------------


def test_the_broker_serves_again_after_a_pause(own_broker: Broker, kafka_topic_prefix: str):
    topic = f"{kafka_topic_prefix}outage"
    ensure_topics(own_broker.bootstrap, [topic], partitions=1)
    producer = KafkaProducer(bootstrap_servers=own_broker.bootstrap)
    try:
        producer.send(topic, b"before").get(timeout=10)

        own_broker.pause()
        assert process_state(own_broker.pid or 0) == "T"
        pending = producer.send(topic, b"during")
        with pytest.raises(KafkaTimeoutError):
            pending.get(timeout=0.5)  # nothing is acknowledged while the broker is paused

        own_broker.resume()
        pending.get(timeout=15)
        producer.send(topic, b"after").get(timeout=10)
    finally:
        producer.close()

    consumer = KafkaConsumer(bootstrap_servers=own_broker.bootstrap, enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        received: list[bytes] = []

        def all_received() -> bool:
            for records in consumer.poll(timeout_ms=200).values():
                received.extend(record.value for record in records)
            return len(received) >= 3

        wait_for(all_received, what="the three messages")
        assert received == [b"before", b"during", b"after"]
    finally:
        consumer.close()


def test_a_paused_server_stops_on_sigterm_without_being_killed(own_broker: Broker) -> None:
    own_broker.pause()
    returncode = own_broker.stop(timeout=10)
    assert not own_broker.is_running
    assert returncode != -signal.SIGKILL  # the SIGTERM got through, no fallback needed


def test_ensure_topics_creates_each_topic_once(broker: Broker, kafka_topic_prefix: str):
    names = [f"{kafka_topic_prefix}{name}" for name in ("learning.progress", "dlq.points")]

    assert sorted(ensure_topics(broker.bootstrap, names, partitions=3)) == sorted(names)
    assert ensure_topics(broker.bootstrap, names, partitions=3) == []
    extra = f"{kafka_topic_prefix}work.tickets"
    assert ensure_topics(broker.bootstrap, [*names, extra, extra], partitions=3) == [extra]

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        described = admin.describe_topics([*names, extra])
    finally:
        admin.close()
    assert {topic["name"]: len(topic["partitions"]) for topic in described} == {
        name: 3 for name in [*names, extra]
    }


# Processes -----------------------------------------------------------------------------------

ORPHAN_SCRIPT = textwrap.dedent(
    """
    import sys, tempfile, time
    from deploy.local.servers import Broker, start_on_free_port
    broker = start_on_free_port(lambda port: Broker(port, tempfile.mkdtemp()))
    print(broker.pid, flush=True)
    time.sleep(120)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_a_server_dies_with_the_process_that_started_it() -> None:
    child_pid = 0
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert is_alive(child_pid)
        parent.kill()  # no chance to clean up
        parent.wait()
        wait_for(lambda: not is_alive(child_pid), what=f"broker {child_pid} to die")
    finally:
        parent.kill()
        parent.wait()
        if child_pid and is_alive(child_pid):  # the behaviour under test broke: clean up
            os.kill(child_pid, signal.SIGKILL)
