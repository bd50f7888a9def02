"""Publishing a stream onto the topics, and reading a topic back."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kafka import KafkaProducer

from bench.workload import Message
from services.runtime.topic_reader import read_topic as read_all_of_topic


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
    return read_all_of_topic(bootstrap, topic, timeout=timeout, max_poll_records=2_000)
