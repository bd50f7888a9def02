"""When is the system done? Every consumer group at zero lag and every outbox empty, twice
in a row (an outbox relayed between the two reads makes new lag, seen by the second).

Lag is the broker's end offset minus the group's committed offset per partition, read with
the admin client's `list_group_offsets` (the broker does not answer `describe_groups`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from pymongo import MongoClient

from bench.stack import Stack, consumed_topics
from services.runtime.outbox import OUTBOX

CONSUMERS = ("points", "leaderboards", "credits", "badges")
PUBLISHERS = ("progress", "points", "leaderboards", "credits", "badges")


@dataclass(frozen=True)
class Backlog:
    lag: dict[str, int]  # consumer group -> messages not yet committed
    outbox: dict[str, int]  # service -> events not yet relayed

    @property
    def zero(self) -> bool:
        return not any(self.lag.values()) and not any(self.outbox.values())

    @property
    def total(self) -> int:
        return sum(self.lag.values()) + sum(max(n, 0) for n in self.outbox.values())


class Settler:
    def __init__(self, stack: Stack, partitions: int = 6) -> None:
        self.stack = stack
        self.admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
        self.offsets = KafkaConsumer(bootstrap_servers=stack.bootstrap)
        self.mongo: MongoClient = MongoClient(stack.mongodb_uri)
        self.partitions: dict[str, list[TopicPartition]] = {}
        for service in CONSUMERS:
            self.partitions[service] = [
                TopicPartition(stack.settings.topic(topic), p)
                for topic in consumed_topics(service)
                for p in range(partitions)
            ]

    def backlog(self) -> Backlog:
        """The lag from the broker; the outboxes only once there is no lag (counting them is
        work for the database under test, so the bench asks only when it can matter)."""
        wanted = sorted({tp for tps in self.partitions.values() for tp in tps})
        ends = self.offsets.end_offsets(wanted)
        groups = {self.stack.group(service): service for service in CONSUMERS}
        committed = self.admin.list_group_offsets(list(groups))
        lag = {}
        for group, service in groups.items():
            done = committed.get(group, {})
            lag[service] = sum(
                max(ends[tp] - (done[tp].offset if tp in done else 0), 0)
                for tp in self.partitions[service]
            )
        outbox = {service: -1 for service in PUBLISHERS}  # -1: not counted while lagging
        if not any(lag.values()):
            outbox = {
                service: self.mongo[self.stack.database_name(service)][OUTBOX].count_documents(
                    {"sent_at": None}
                )
                for service in PUBLISHERS
            }
        return Backlog(lag, outbox)

    def wait(self, timeout: float, every: float = 0.1, report_every: float = 10.0) -> float:
        """Blocks until settled; returns the monotonic time of the first of the two zero reads."""
        deadline = time.monotonic() + timeout
        first_zero: float | None = None
        reported = time.monotonic()
        while True:
            at = time.monotonic()
            backlog = self.backlog()
            if backlog.zero:
                if first_zero is not None:
                    return first_zero
                first_zero = at
            else:
                first_zero = None
                if at - reported >= report_every:
                    reported = at
                    print(
                        f"    ... backlog {backlog.total}: lag {backlog.lag} outbox "
                        f"{backlog.outbox}",
                        flush=True,
                    )
            if at > deadline:
                raise TimeoutError(f"not settled after {timeout:.0f}s: {backlog}")
            time.sleep(every)

    def close(self) -> None:
        self.admin.close()
        self.offsets.close()
        self.mongo.close()
