"""Publishing a stream onto the topics, and reading a topic back."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.workload import Message


def producer(bootstrap: str, linger_ms: int = 10) -> KafkaProducer:
    """As the services' relay publishes: idempotent, acks=all, batched."""
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        batch_size=128 * 1024,
    )


def publish(bootstrap: str, messages: Iterable[Message], prefix: str = "") -> int:
    """Sends every message (in order per key) and waits for every acknowledgement."""
    sender = producer(bootstrap)
    sent = 0
    try:
        for m in messages:
            sender.send(prefix + m.topic, key=m.key.encode(), value=m.value)
            sent += 1
        sender.flush()
    finally:
        sender.close()
    return sent


def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every record on `topic` now, in offset order per partition."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=2_000
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end")
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()
