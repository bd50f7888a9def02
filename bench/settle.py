"""When is the system done? Every consumer group at zero lag and every outbox empty, in two
reads in a row between which the topics did not grow.

An event waiting anywhere is in one of three places: an outbox (not yet marked sent), a
topic past its group's committed offset, or a consumer's transaction (whose input is not
committed before the transaction is). Reads of the outboxes and of the lag are not one
snapshot, though: an event relayed while the outboxes are counted (appended, then marked
sent) is in neither count if the lag was read first. So each read counts the outboxes
first and reads the lag after them, and settling also asks that the end offsets did not
move between two such reads. Then nothing was appended between them; everything appended
before the first was committed by its group, so handled, with whatever it put in an
outbox; and an outbox event still unsent would have been counted by the second read, or
appended (moving the end offsets) to be sent.

Lag is the broker's end offset minus the group's committed offset per partition, read with
the admin client's `list_group_offsets` (the broker does not answer `describe_groups`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from pymongo import MongoClient

from bench.stack import Stack
from services.runtime.kafka import consumed_topics
from services.runtime.outbox import OUTBOX

CONSUMERS = ("points", "leaderboards", "credits", "badges")
PUBLISHERS = ("progress", "points", "leaderboards", "credits", "badges")


@dataclass(frozen=True)
class Backlog:
    lag: dict[str, int]  # consumer group -> messages not yet committed
    outbox: dict[str, int]  # service -> events not yet relayed
    #: the end offsets the lag was computed against, by partition
    ends: dict[TopicPartition, int] = field(default_factory=dict)

    @property
    def zero(self) -> bool:
        return not any(self.lag.values()) and not any(self.outbox.values())

    def settled_since(self, earlier: Backlog | None) -> bool:
        """Zero now and at `earlier`, with nothing appended to the topics in between."""
        return earlier is not None and earlier.zero and self.zero and earlier.ends == self.ends

    @property
    def total(self) -> int:
        return sum(self.lag.values()) + sum(max(n, 0) for n in self.outbox.values())


class Settler:
    def __init__(self, stack: Stack, partitions: int = 6) -> None:
        self.stack = stack
        self.admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
        self.offsets = KafkaConsumer(bootstrap_servers=stack.bootstrap)
        self.mongo: dict[str, MongoClient] = {
            service: stack.mongo(service) for service in PUBLISHERS
        }
        self.partitions: dict[str, list[TopicPartition]] = {}
        for service in CONSUMERS:
            self.partitions[service] = [
                TopicPartition(stack.settings.topic(topic), p)
                for topic in consumed_topics(service)
                for p in range(partitions)
            ]

    def backlog(self) -> Backlog:
        """The lag from the broker; once there is none, the outboxes, and then the lag again
        (see the module's docstring). Counting the outboxes is work for the database under
        test, so the bench asks only when it can matter."""
        ends, lag = self._lag()
        if any(lag.values()):
            return Backlog(lag, {service: -1 for service in PUBLISHERS}, ends)  # -1: not counted
        outbox = {
            service: self.mongo[service][self.stack.database_name(service)][OUTBOX].count_documents(
                {"sent_at": None}
            )
            for service in PUBLISHERS
        }
        ends, lag = self._lag()
        return Backlog(lag, outbox, ends)

    def _lag(self) -> tuple[dict[TopicPartition, int], dict[str, int]]:
        wanted = sorted({tp for tps in self.partitions.values() for tp in tps})
        ends = self.offsets.end_offsets(wanted)
        groups = {self.stack.group(service): service for service in CONSUMERS}
        committed = self.admin.list_group_offsets(list(groups))  # read after the ends
        lag = {}
        for group, service in groups.items():
            done = committed.get(group, {})
            lag[service] = sum(
                max(ends[tp] - (done[tp].offset if tp in done else 0), 0)
                for tp in self.partitions[service]
            )
        return ends, lag

    def wait(self, timeout: float, every: float = 0.1, report_every: float = 10.0) -> float:
        """Blocks until settled; returns the monotonic time of the first of the two reads
        that settled it."""
        deadline = time.monotonic() + timeout
        previous: Backlog | None = None
        previous_at = 0.0
        reported = time.monotonic()
        while True:
            at = time.monotonic()
            backlog = self.backlog()
            if backlog.settled_since(previous):
                return previous_at
            previous, previous_at = backlog, at
            if not backlog.zero and at - reported >= report_every:
                reported = at
                print(
                    f"    ... backlog {backlog.total}: lag {backlog.lag} outbox {backlog.outbox}",
                    flush=True,
                )
            if at > deadline:
                raise TimeoutError(f"not settled after {timeout:.0f}s: {backlog}")
            time.sleep(every)

    def close(self) -> None:
        self.admin.close()
        self.offsets.close()
        for client in self.mongo.values():
            client.close()
