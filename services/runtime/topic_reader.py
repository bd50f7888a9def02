"""Reading a whole topic as it stands now, without a consumer group (so nobody's offsets
move): for operators' tools (dead letters, rebuild checks), the benchmark and the tests."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord


def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    limit: int | None = None,
    timeout: float = 60.0,
    max_poll_records: int = 500,
) -> list[ConsumerRecord]:
    """Every record on `topic` up to its current end (at most `limit`), in offset order per
    partition; TimeoutError when the end cannot be reached within `timeout` seconds."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers.split(","),
        enable_auto_commit=False,
        max_poll_records=max_poll_records,
    )
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if limit is not None and len(records) >= limit:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout}s")
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records if limit is None else records[:limit]
    finally:
        consumer.close()
