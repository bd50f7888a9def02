"""The runtime against the real broker and database: consume, commit, retry, dead-letter,
outbox, redelivery, group membership (ARCHITECTURE §3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import requests
from kafka import KafkaConsumer, TopicPartition
from pymongo import MongoClient

from contracts.events import TicketResolved
from contracts.topics import WORK_TICKETS, dead_letter_topic
from services.runtime.dead_letters import DeadLetterStore
from services.runtime.fetch_pacing import FetchPacing
from services.runtime.kafka import KafkaConsumerExtension
from services.runtime.mongo import Mongo
from services.runtime.outbox import OUTBOX, outbox_events
from services.runtime.settings import RuntimeSettings
from tests.integration.sample_service import LANES, SampleService
from tests.support.databases import fresh_service_database
from tests.support.events import ticket
from tests.support.harness import (
    EventBus,
    base_url,
    events_consumed,
    get_json,
    running,
    service_config,
    unique_prefix,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
def bus(broker, prefix):
    bus = EventBus(broker.bootstrap, prefix)
    yield bus
    bus.close()


@pytest.fixture
def config(broker, database, prefix):
    return service_config(broker, database, prefix)


def counts(config, agent_id: str) -> dict:
    return get_json(f"{base_url(config)}/counts/{agent_id}")


def dead_letters(bus: EventBus) -> list[dict]:
    return [json.loads(r.value) for r in bus.read_all(dead_letter_topic("sample"))]


def gauge(config, name: str) -> float:
    """An unlabelled sample of the service's /metrics."""
    text = requests.get(f"{base_url(config)}/metrics", timeout=5).text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


def ticket_outcomes(config, outcome: str) -> int:
    """How many ticket events the service's consumer counted with `outcome`."""
    return events_consumed(base_url(config), outcome)[(WORK_TICKETS, TicketResolved.TYPE)]


def consumer_of(container) -> KafkaConsumerExtension:
    return next(e for e in container.extensions if isinstance(e, KafkaConsumerExtension))


def test_event_is_handled_once_even_when_delivered_again(config, bus):
    with running(SampleService, config):
        event = ticket("agent-1", "T-1")
        bus.publish(event)
        wait_until(lambda: counts(config, "agent-1")["tickets"] == 1, message="first delivery")

        bus.publish(event)  # the same event id again: a redelivery
        bus.publish(ticket("agent-1", "T-2"))  # and a later one, to know the first was seen
        wait_until(lambda: counts(config, "agent-1")["tickets"] == 2, message="second ticket")
        assert counts(config, "agent-1")["ticket_ids"] == ["T-1", "T-2"]
        # The consumer counts a batch once its worker hands back the result, which is
        # after the transaction the counts above read: wait for the count too.
        wait_until(
            lambda: ticket_outcomes(config, "duplicate") >= 1, message="the duplicate counted"
        )
        assert ticket_outcomes(config, "duplicate") == 1


def test_failing_handler_is_retried_then_dead_lettered_and_the_next_message_flows(config, bus):
    with running(SampleService, config):
        failing = ticket("agent-2", "fail-1")
        bus.publish(failing)
        bus.publish(ticket("agent-2", "T-after"))  # same key: same partition, behind it

        wait_until(lambda: counts(config, "agent-2")["tickets"] == 1, message="next message")
        letters = wait_until(lambda: dead_letters(bus), message="dead letter")
        assert len(letters) == 1
        assert letters[0]["event_id"] == failing.id
        assert letters[0]["reason"] == "handler_failed"
        assert letters[0]["attempts"] == 3
        assert "cannot handle fail-1" in letters[0]["error"]
        assert counts(config, "agent-2")["ticket_ids"] == ["T-after"]


def test_a_batch_lane_stays_the_same_whatever_partitions_a_poll_brings(config, bus):
    # One event at a time: each poll brings the one partition its agent hashes to. The
    # lane comes from the consumer's partitions, not the poll's, so a handler's per-lane
    # documents do not change lane with every batch of a quiet stream.
    LANES.clear()
    agents = [f"lane-{n}" for n in range(8)]
    with running(SampleService, config):
        for agent in agents:
            bus.publish(ticket(agent, f"L-{agent}"))
            wait_until(lambda a=agent: counts(config, a)["tickets"] == 1, message=agent)
    spread = {r.partition for r in bus.read_all(WORK_TICKETS) if r.key.decode() in agents}
    assert len(spread) > 1, "the agents hashed to one partition: the test shows nothing"
    assert len(LANES) >= len(agents)
    assert set(LANES) == {0}  # the lowest partition this one consumer owns


def test_a_poison_event_inside_a_batch_is_dead_lettered_and_the_rest_apply_once_in_order(
    config, bus
):
    # Published before the service starts: the first poll takes them as one batch.
    repeated, poison = ticket("agent-4", "T-1"), ticket("agent-4", "fail-2")
    for event in (repeated, poison, repeated, ticket("agent-4", "T-2")):
        bus.publish(event)
    bus.publish(ticket("agent-4", "T-3"))
    with running(SampleService, config):
        wait_until(lambda: counts(config, "agent-4")["tickets"] == 3, message="the good ones")
        letters = wait_until(lambda: dead_letters(bus), message="dead letter")
        assert [(letter["event_id"], letter["reason"]) for letter in letters] == [
            (poison.id, "handler_failed")
        ]
        assert counts(config, "agent-4")["ticket_ids"] == ["T-1", "T-2", "T-3"]
        metrics = requests.get(f"{base_url(config)}/metrics", timeout=5).text
        batched = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("skillquest_event_batch_size_sum")
        ]
        counted = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("skillquest_event_batch_size_count")
        ]
        assert batched and counted and batched[0] > counted[0], "no batch held several events"


def test_a_batch_with_a_poison_event_is_split_in_halves_not_into_single_events(config, bus):
    # 16 events before the service starts: one batch. Halving it finds the poison in
    # 9 handled batches (16, 8, 4, 2, 1, 1, 2, 4, 8); event by event would take 17.
    tickets = [ticket("agent-5", f"T-{n:02d}") for n in range(16)]
    tickets[2] = ticket("agent-5", "fail-3")
    for event in tickets:
        bus.publish(event)
    with running(SampleService, config):
        wait_until(lambda: counts(config, "agent-5")["tickets"] == 15, message="the good ones")
        assert counts(config, "agent-5")["ticket_ids"] == [
            f"T-{n:02d}" for n in range(16) if n != 2
        ]
        letters = wait_until(lambda: dead_letters(bus), message="dead letter")
        assert [letter["event_id"] for letter in letters] == [tickets[2].id]
        metrics = requests.get(f"{base_url(config)}/metrics", timeout=5).text
        batches = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("skillquest_event_batch_size_count")
        )
        assert batches <= 9


def test_malformed_and_unknown_messages_do_not_block_the_partition(config, bus):
    with running(SampleService, config):
        bus.send(WORK_TICKETS, "agent-3", b"{this is not json")
        unknown = json.loads(ticket("agent-3", "x").to_json_bytes())
        unknown["type"] = "work.ticket.escalated.v7"
        bus.send(WORK_TICKETS, "agent-3", json.dumps(unknown).encode())
        bus.publish(ticket("agent-3", "T-ok"))

        wait_until(lambda: counts(config, "agent-3")["tickets"] == 1, message="valid message")
        letters = wait_until(lambda: dead_letters(bus), message="dead letter")
        assert [letter["reason"] for letter in letters] == ["malformed"]
        assert "Invalid JSON" in letters[0]["error"]


def test_outbox_write_succeeds_while_the_broker_is_down_and_arrives_once(
    broker, database, prefix, bus
):
    # A relay round gives up on the broker after 2 s (30 by default), and reports then.
    config = service_config(
        broker, database, prefix, RUNTIME={"producer_delivery_timeout_ms": 2_000}
    )
    with running(SampleService, config):
        wait_until(lambda: requests.get(f"{base_url(config)}/readyz", timeout=5).ok)
        broker.pause()
        try:
            response = requests.post(
                f"{base_url(config)}/tickets",
                json={"agent_id": "agent-4", "ticket_id": "T-outage", "qa_score": 99},
                timeout=10,
            )
            assert response.status_code == 202
            # The relay keeps trying, and the backlog it reports is the event waiting.
            wait_until(
                lambda: (
                    gauge(config, "skillquest_outbox_backlog_events") == 1
                    and gauge(config, "skillquest_outbox_oldest_pending_age_seconds") > 0
                ),
                message="the backlog reported",
            )
        finally:
            broker.resume()
        wait_until(lambda: counts(config, "agent-4")["tickets"] == 1, timeout=40)
        wait_until(
            lambda: (
                gauge(config, "skillquest_outbox_backlog_events") == 0
                and gauge(config, "skillquest_outbox_oldest_pending_age_seconds") == 0
            ),
            message="the backlog reported empty",
        )
        published = [
            r for r in bus.read_all(WORK_TICKETS) if json.loads(r.value)["subject"] == "agent-4"
        ]
        assert len(published) == 1
        assert json.loads(published[0].value)["id"] == response.json()["event_id"]


def test_events_left_in_the_outbox_by_the_earlier_layout_are_relayed_after_an_upgrade(
    config, bus, database, prefix
):
    # Earlier releases held one event per document, under a unique index on a top-level
    # `event_id`, and later a unique index on each event's id: an upgraded database may
    # still have all of them.
    old = ticket("agent-6", "T-old")
    client = MongoClient(database.uri)
    outbox = client[f"{prefix}skillquest_sample".replace(".", "_")][OUTBOX]
    outbox.create_index("event_id", name="event_id", unique=True)
    outbox.create_index("events.event_id", name="event_ids", unique=True)
    outbox.insert_one(
        {
            "event_id": old.id,
            "type": old.type,
            "topic": WORK_TICKETS,
            "key": "agent-6",
            "value": old.to_json_bytes(),
            "created_at": datetime.now(UTC),
            "sent_at": None,
        }
    )
    try:
        with running(SampleService, config):
            for ticket_id in ("T-new-1", "T-new-2"):  # two documents of the new layout
                response = requests.post(
                    f"{base_url(config)}/tickets",
                    json={"agent_id": "agent-6", "ticket_id": ticket_id, "qa_score": 99},
                    timeout=10,
                )
                assert response.status_code == 202
            wait_until(lambda: counts(config, "agent-6")["tickets"] == 3, message="all three")
            assert counts(config, "agent-6")["ticket_ids"] == ["T-old", "T-new-1", "T-new-2"]
        assert set(outbox.index_information()) == {"_id_", "pending_in_order", "sent_ttl"}
    finally:
        client.close()


def test_consumer_killed_after_handling_before_committing_applies_the_event_once(
    config, bus, broker, database, prefix
):
    with running(SampleService, {**config, "HANG_AFTER_HANDLING": True}) as first:
        bus.publish(ticket("agent-5", "T-1"))
        wait_until(lambda: counts(config, "agent-5")["tickets"] == 1, message="handled")
        first.kill()  # the offset was never committed

    restarted = service_config(broker, database, prefix)  # same group and database
    with running(SampleService, restarted):
        bus.publish(ticket("agent-5", "T-2"))
        wait_until(lambda: counts(restarted, "agent-5")["tickets"] == 2, message="next ticket")
        # Counted once the worker hands back its result, after the transaction: wait.
        wait_until(
            lambda: ticket_outcomes(restarted, "duplicate") >= 1, message="T-1 counted again"
        )
        assert ticket_outcomes(restarted, "duplicate") == 1  # T-1 came again, changed nothing
        assert counts(restarted, "agent-5")["ticket_ids"] == ["T-1", "T-2"]


def test_two_instances_share_partitions_and_one_takes_over_when_the_other_dies(
    config, bus, broker, database, prefix
):
    other = service_config(broker, database, prefix)
    with running(SampleService, config) as first, running(SampleService, other) as second:
        wait_until(
            lambda: consumer_of(first).assigned and consumer_of(second).assigned,
            timeout=40,
            message="both instances to own partitions",
        )
        second.kill()
        agents = [f"agent-{i}" for i in range(12)]  # keys spread over all partitions
        for agent in agents:
            bus.publish(ticket(agent, f"T-{agent}"))
        wait_until(
            lambda: all(counts(config, agent)["tickets"] == 1 for agent in agents),
            timeout=60,
            message="the survivor to handle every partition",
        )


def test_a_replayed_dead_letter_that_now_succeeds_is_applied_once(config, bus, broker, prefix):
    store = DeadLetterStore(broker.bootstrap, "sample", prefix)
    with running(SampleService, config) as container:
        db = next(e for e in container.extensions if isinstance(e, Mongo)).database
        db.collection("switches").insert_one({"_id": "failing"})
        bus.publish(ticket("agent-6", "flaky-1"))
        letters = wait_until(lambda: store.letters(), message="dead letter")
        assert [letter.event_type for _, letter in letters] == [TicketResolved.TYPE]

        db.collection("switches").delete_one({"_id": "failing"})  # the dependency is back
        assert store.replay() == [letters[0][0]]
        wait_until(lambda: counts(config, "agent-6")["tickets"] == 1, message="replayed")
        store.replay()  # replaying again is harmless
        bus.publish(ticket("agent-6", "T-after"))
        wait_until(lambda: counts(config, "agent-6")["tickets"] == 2, message="later ticket")
        assert counts(config, "agent-6")["ticket_ids"] == ["flaky-1", "T-after"]


def test_only_a_commit_that_queued_events_wakes_the_relay(database):
    client: MongoClient = MongoClient(database.uri, tz_aware=True)
    service_db = fresh_service_database(client, "sample", ())
    try:
        woken = []
        service_db._on_events_committed = lambda: woken.append(True)
        service_db.db.create_collection("notes")
        event = ticket("agent-5", "T-wake", qa_score=90)
        service_db.transaction(
            lambda uow: uow.collection("notes").insert_one({}, session=uow.session)
        )
        assert woken == []  # nothing new for the relay: no query of the outbox
        service_db.transaction(lambda uow: uow.publish(event))
        assert woken == [True]
        assert [e["event_id"] for e in outbox_events(service_db.db)] == [event.id]
    finally:
        client.drop_database(service_db.db.name)
        client.close()


def test_idle_fetch_pacing_reaches_the_fetch_requests_kafka_python_sends(broker, prefix):
    """Pins what fetch pacing relies on in kafka-python (a private part): the consumer's
    fetcher builds each fetch request from the settings dict that pacing changes."""
    topic = f"{prefix}pacing"
    bus = EventBus(broker.bootstrap, "")
    bus.send(topic, "k", b"{}")
    bus.close()
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, fetch_min_bytes=65_536, fetch_max_wait_ms=100
    )
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek(partition, 0)
        settings = RuntimeSettings(
            consumer_fetch_min_bytes=65_536,
            consumer_fetch_max_wait_ms=100,
            consumer_idle_fetch_max_wait_ms=700,
        )
        FetchPacing(settings, idle_after=0.0).polled(consumer, 0)
        requests_built = consumer._fetcher._create_fetch_requests()
        sent = [request for request, _ in requests_built.values()]
        assert [(r.min_bytes, r.max_wait_ms) for r in sent] == [(1, 700)]
    finally:
        consumer.close()
