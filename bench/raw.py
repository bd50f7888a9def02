"""The raw ceilings: what kafka-python and pymongo get from the same broker and database
server, with the settings the services use (acks=all and idempotence; journaled writes)."""

from __future__ import annotations

import os
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer
from pymongo import MongoClient
from pymongo.write_concern import WriteConcern

from bench.stack import Stack

MESSAGE_BYTES = 1024
BULK_BATCH = 1_000
DURABLE = WriteConcern(w="majority", j=True)


def broker_ceilings(stack: Stack, topic: str, messages: int) -> dict[str, float]:
    """1 KB messages keyed like agent ids, produced as fast as acknowledged, then consumed."""
    payload = os.urandom(MESSAGE_BYTES // 2).hex().encode()
    keys = [f"a{i:06d}".encode() for i in range(1_000)]
    producer = KafkaProducer(
        bootstrap_servers=stack.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=10,
        batch_size=128 * 1024,
    )
    started = time.perf_counter()
    for i in range(messages):
        producer.send(topic, key=keys[i % len(keys)], value=payload)
    producer.flush()
    produce_seconds = time.perf_counter() - started
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=stack.bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=2_000,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
    )
    consumed = 0
    first_at: float | None = None
    deadline = time.monotonic() + 120
    while consumed < messages and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            if first_at is None:
                first_at = time.perf_counter()  # the group join is not consumption
            consumed += len(records)
    consume_seconds = time.perf_counter() - (first_at or time.perf_counter())
    consumer.close()
    return {
        "raw_broker_produce_msgs_per_s": messages / produce_seconds,
        "raw_broker_consume_msgs_per_s": consumed / consume_seconds if consume_seconds else 0.0,
    }


def database_ceilings(stack: Stack, bulk_docs: int, single_writes: int) -> dict[str, float]:
    """insert_many in 1,000-document batches and insert_one one at a time, journaled, into a
    scratch database that is dropped afterwards."""
    client: MongoClient = MongoClient(stack.mongodb_uri, w="majority", journal=True)
    db = client["bench_raw"]
    try:
        bulk = db.get_collection("bulk", write_concern=DURABLE)
        docs = [_document(i) for i in range(bulk_docs)]
        started = time.perf_counter()
        for i in range(0, bulk_docs, BULK_BATCH):
            bulk.insert_many(docs[i : i + BULK_BATCH], ordered=False)
        bulk_seconds = time.perf_counter() - started

        single = db.get_collection("single", write_concern=DURABLE)
        started = time.perf_counter()
        for i in range(single_writes):
            single.insert_one(_document(i))
        single_seconds = time.perf_counter() - started
    finally:
        client.drop_database("bench_raw")
        client.close()
    return {
        "raw_db_bulk_docs_per_s": bulk_docs / bulk_seconds,
        "raw_db_single_writes_per_s": single_writes / single_seconds,
    }


def _document(i: int) -> dict[str, object]:
    """About the size of a ledger entry."""
    return {
        "agent_id": f"a{i % 10_000:06d}",
        "seq": i,
        "delta": 10,
        "rule_id": "module-completed",
        "reason": "module m1 of course c-foundation-technology completed",
        "source_event_id": str(uuid.uuid4()),
        "team_id": f"team-{i % 1_000:05d}",
        "tier": "foundation",
        "balance": i * 10,
    }
