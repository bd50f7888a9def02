"""Consuming Kafka in nameko: the `@consume(topic)` entrypoint and the one poller per
service that feeds it, with every rule about offsets in this file.

- One green thread polls, and only it touches the kafka-python consumer (not thread-safe).
- The records of one poll go to each entrypoint as one batch (the partitions one after
  another, each in offset order: Kafka keys are agent ids, so an agent's events stay in
  order), handled in one database transaction; reference topics (roster, catalogue) first,
  then the rest. `consumer_partition_concurrency` > 1 splits a poll's partitions into that
  many batches handled at once.
- An offset is committed only once its handler's transaction has committed, as the
  contiguous run of finished offsets (`last + 1`): at-least-once delivery, made effectively
  once by the handled-event ids the handlers record (services/runtime/mongo.py).
- A malformed message goes straight to `dlq.<service>`; a batch that fails is split into
  batches of one, and an event that keeps failing alone is retried with backoff, then
  dead-lettered; an unknown event type is counted and skipped. None of them stops the
  partition.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections import defaultdict
from collections.abc import Collection, Iterable
from functools import partial
from typing import Any

import eventlet
from eventlet.event import Event
from eventlet.greenpool import GreenPool
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import (
    ENTRYPOINT_EXTENSIONS_ATTR,
    Entrypoint,
    ProviderCollector,
    SharedExtension,
)
from pymongo.errors import ConnectionFailure

from contracts.envelope import CloudEvent
from contracts.parsing import MalformedEvent, UnknownEventType, parse_event
from contracts.topics import REFERENCE_TOPICS
from services.runtime.batches import EventBatch
from services.runtime.dead_letters import dead_letter_for
from services.runtime.fetch_pacing import FetchPacing
from services.runtime.lifecycle import Lifecycle
from services.runtime.metrics import ServiceMetrics, known_types_for_topic
from services.runtime.mongo import Handled
from services.runtime.publisher import KafkaPublisher, PublishError
from services.runtime.settings import RuntimeSettings, settings_from_config

log = logging.getLogger(__name__)

#: A batch that takes this long is logged (its size and time), at INFO.
SLOW_BATCH_SECONDS = 1.0
#: The lag gauges are refreshed at most this often: a consumer polls every
#: `consumer_fetch_max_wait_ms` when idle and after every batch when busy, and refreshing
#: on every poll was a tenth of its CPU either way (idle, and at 20 events/s).
LAG_REPORT_SECONDS = 1.0
#: Handler errors that mean "the database cannot be reached": retried without limit.
DATABASE_UNREACHABLE = (ConnectionFailure,)


class OffsetTracker:
    """Finished offsets per partition, and the offset that is safe to commit.

    Finished 34, 35, 36 and 40 after a commit at 34 means 37 may be committed: 37-39 are
    still in flight and must be redelivered if we die now.
    """

    def __init__(self) -> None:
        self._next: dict[Any, int] = {}  # partition -> next offset not yet known finished
        self._finished: dict[Any, set[int]] = defaultdict(set)

    def start(self, partition: Any, offset: int) -> None:
        """A batch of `partition` begins at `offset`.

        With nothing left unfinished, the batch start is the truth: it may lie past the last
        commit (offsets have gaps: transaction markers, compaction) or before it (the group
        rebalanced and the partition came back from its last committed offset).
        """
        if not self._finished.get(partition):
            self._next[partition] = offset

    def finish(self, partition: Any, offset: int) -> None:
        self._finished[partition].add(offset)

    def committable(self) -> dict[Any, int]:
        """Advances over contiguous finished offsets; returns partitions that moved."""
        moved = {}
        for partition, finished in self._finished.items():
            position = self._next.get(partition)
            if position is None:
                continue
            start = position
            while position in finished:
                finished.discard(position)
                position += 1
            if position != start:
                self._next[partition] = position
                moved[partition] = position
        return moved

    def forget(self, partitions: Iterable[Any]) -> None:
        """After a revocation: another member now owns these partitions."""
        for partition in partitions:
            self._next.pop(partition, None)
            self._finished.pop(partition, None)

    def partitions(self) -> list[Any]:
        return list(self._next)

    def position(self, partition: Any) -> int | None:
        return self._next.get(partition)


class KafkaConsumerExtension(SharedExtension, ProviderCollector):
    """The service's single consumer (group `skillquest.<service>`) and its poll loop."""

    publisher = KafkaPublisher()
    metrics = ServiceMetrics()
    lifecycle = Lifecycle()

    settings: RuntimeSettings

    def setup(self) -> None:
        self.settings = settings_from_config(self.container.config)
        self.service = self.container.service_name
        self.tracker = OffsetTracker()
        self._consumer: KafkaConsumer | None = None
        self._running = False
        self._stopped = Event()
        self._thread: Any = None
        self.assigned = False
        self._reported_lag: set[TopicPartition] = set()
        self._lag_reported_at = 0.0

    def start(self) -> None:
        if not self._providers_registered:
            return
        topics = sorted({topic for provider in self._providers for topic in provider.topics})
        for topic in topics:
            self.metrics.families.prime_consumer([topic], known_types_for_topic(topic))
        self._running = True
        self._thread = self.container.spawn_managed_thread(partial(self._run, topics))

    def unregister_provider(self, provider: Any) -> None:
        # Finish the batch in flight before any entrypoint goes: a record whose handler
        # had gone would otherwise look "not for us" and be committed unhandled. Readiness
        # turns false first, while the batch in flight finishes.
        self.lifecycle.begin_stopping()
        self._stop_polling()
        super().unregister_provider(provider)

    def stop(self) -> None:
        self.lifecycle.begin_stopping()
        self._stop_polling()
        super().stop()

    def _stop_polling(self) -> None:
        self._running = False
        if self._thread is not None:
            self._stopped.wait()
            self._thread = None

    def kill(self) -> None:
        self._running = False
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:  # noqa: BLE001 - we are dying anyway
                log.exception("closing the consumer failed")
            self._consumer = None

    # --- the poll loop (the only code that touches self._consumer) ---------------------

    def _run(self, topics: list[str]) -> None:
        try:
            self._consumer = self._connect(topics)
            pacing = FetchPacing(self.settings)
            groups = self.settings.consumer_partition_concurrency
            pool = GreenPool(size=groups)
            while self._running:
                batch = self._poll()
                pacing.polled(self._consumer, sum(len(records) for records in batch.values()))
                if batch:
                    for partition, records in batch.items():
                        self.tracker.start(partition, records[0].offset)
                    # Groups of the assignment, not of the poll: a batch's lane stays put
                    # (batch_lane). A polled partition is in it; the union is defensive.
                    owned = partition_groups(
                        sorted(self._consumer.assignment() | batch.keys()), groups
                    )
                    # Reference data (roster, catalogue) first, then everything else.
                    for wave in self._in_dependency_order(batch):
                        for group in owned:
                            polled = [(p, batch[p]) for p in group if p in wave]
                            if polled:
                                pool.spawn(self._handle_records, polled, group)
                        pool.waitall()
                    self._commit()
                if time.monotonic() - self._lag_reported_at >= LAG_REPORT_SECONDS:
                    self._report_lag()
        finally:
            if self._consumer is not None:
                self._commit()
                self._consumer.close(autocommit=False)
                self._consumer = None
            self._stopped.send(True)

    def _in_dependency_order(self, batch: dict[Any, Any]) -> list[list[Any]]:
        """The polled partitions in two waves: those of reference topics, then the rest."""
        reference = [p for p in batch if self._logical(p.topic) in REFERENCE_TOPICS]
        return [wave for wave in (reference, [p for p in batch if p not in reference]) if wave]

    def _connect(self, topics: list[str]) -> KafkaConsumer:
        s = self.settings
        while True:
            try:
                consumer = KafkaConsumer(
                    bootstrap_servers=s.kafka_bootstrap_servers.split(","),
                    group_id=s.consumer_group(self.service),
                    client_id=f"skillquest-{self.service}",
                    enable_auto_commit=False,
                    # A new group reads the whole history: derived views rebuild from it.
                    auto_offset_reset="earliest",
                    session_timeout_ms=s.consumer_session_timeout_ms,
                    heartbeat_interval_ms=s.consumer_heartbeat_interval_ms,
                    max_poll_records=s.consumer_max_poll_records,
                    fetch_max_wait_ms=s.consumer_fetch_max_wait_ms,
                    fetch_min_bytes=s.consumer_fetch_min_bytes,
                    metrics_enabled=False,
                )
                consumer.subscribe([s.topic(t) for t in topics])
                return consumer
            except KafkaError as error:
                if not self._running:
                    raise
                log.warning("cannot reach the broker (%s); retrying", error)
                eventlet.sleep(1.0)

    def _poll(self) -> dict[Any, list[ConsumerRecord]]:
        assert self._consumer is not None
        try:
            batch = self._consumer.poll(timeout_ms=200)
        except KafkaError as error:
            log.warning("poll failed (%s); retrying", error)
            eventlet.sleep(0.5)
            return {}
        assignment = self._consumer.assignment()
        self.assigned = bool(assignment)
        self.tracker.forget(p for p in self.tracker.partitions() if p not in assignment)
        return batch

    def _commit(self) -> None:
        moved = self.tracker.committable()
        if not moved or self._consumer is None:
            return
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in moved.items()}
        try:
            self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as error:
            # The group rebalanced: the new owner re-reads from the last commit, and the
            # handled-event ids make the re-reads harmless.
            log.warning("offset commit failed (%s); the records will be redelivered", error)

    def _report_lag(self) -> None:
        assert self._consumer is not None
        self._lag_reported_at = time.monotonic()
        lag_gauge = self.metrics.families.consumer_lag
        assignment = self._consumer.assignment()
        # Partitions another member took over are not ours to report any more.
        for lost in self._reported_lag - assignment:
            with contextlib.suppress(KeyError):
                lag_gauge.remove(self._logical(lost.topic), str(lost.partition))
        self._reported_lag = set(assignment)
        for tp in assignment:
            highwater = self._consumer.highwater(tp)
            position = self.tracker.position(tp)
            if highwater is None:
                continue
            if position is None:
                try:
                    position = self._consumer.position(tp, timeout_ms=0)
                except Exception:  # noqa: BLE001 - position unknown yet: report nothing
                    continue
                if position is None:
                    continue
            lag_gauge.labels(self._logical(tp.topic), str(tp.partition)).set(
                max(highwater - position, 0)
            )

    def _logical(self, topic: str) -> str:
        """The topic name without the deployment's prefix (metrics and handlers use these)."""
        return topic[len(self.settings.name_prefix) :]

    # --- handling (one green thread per batch of a poll) --------------------------------

    def _handle_records(
        self,
        polled: list[tuple[TopicPartition, list[ConsumerRecord]]],
        owned: list[TopicPartition],
    ) -> None:
        """Parses the records of some partitions of one poll, gives each entrypoint all the
        events it accepts among them as one batch (partition after partition, each in
        offset order), and finishes every record whose entrypoints all got through
        (handled, skipped or dead-lettered). On stop, what is unfinished stays uncommitted
        for the next owner. `owned`: the group of this consumer's partitions the polled ones
        belong to, which gives each batch its lane (`batch_lane`)."""
        families = self.metrics.families
        waiting: dict[tuple[TopicPartition, int], int] = {}  # record -> entrypoints to go
        batches: dict[KafkaEntrypoint, list[tuple[ConsumerRecord, CloudEvent]]] = {}
        for partition, records in polled:
            topic = self._logical(partition.topic)
            for record in records:
                event = self._parse(record, topic)
                if event is None:
                    if not self._running:
                        return
                    continue  # handled already: skipped or dead-lettered
                entrypoints = [
                    p for p in self._providers if topic in p.topics and p.accepts(event.type)
                ]
                if not entrypoints:
                    families.events_consumed.labels(topic, event.type, "ignored").inc()
                    self.tracker.finish(partition, record.offset)
                    continue
                waiting[(partition, record.offset)] = len(entrypoints)
                for entrypoint in entrypoints:
                    batches.setdefault(entrypoint, []).append((record, event))
        for entrypoint, items in batches.items():
            topics = {self.settings.topic(t) for t in entrypoint.topics}
            lane = batch_lane(owned, topics, fallback=items[0][0].partition)
            for record, _ in self._through(entrypoint, items, lane):
                key = (TopicPartition(record.topic, record.partition), record.offset)
                waiting[key] -= 1
                if waiting[key] == 0:
                    self.tracker.finish(*key)
            if not self._running:
                return

    def _parse(self, record: ConsumerRecord, topic: str) -> CloudEvent | None:
        """The record's event; None once a record that is not one was skipped or
        dead-lettered (the record is then finished here)."""
        families = self.metrics.families
        try:
            return parse_event(record.value)
        except UnknownEventType as unknown:
            families.events_consumed.labels(topic, "unknown", "ignored").inc()
            log.info("skipping unknown event type %s", unknown.envelope.type)
            finished = True
        except MalformedEvent as error:
            finished = self._dead_letter(record, topic, "malformed", str(error), 0, None)
        if finished:
            self.tracker.finish(TopicPartition(record.topic, record.partition), record.offset)
        return None

    def _through(
        self,
        entrypoint: KafkaEntrypoint,
        items: list[tuple[ConsumerRecord, CloudEvent]],
        lane: int,
    ) -> list[tuple[ConsumerRecord, CloudEvent]]:
        """Runs `items` through `entrypoint` as one batch; returns the items it got through.

        A batch that fails for a reason other than the database being away is split in
        halves, each handled the same way, so that only a poison message is retried and
        dead-lettered, and the rest of the batch still commits in batches: a poison among
        2,000 events costs about twenty transactions, not 2,000.
        """
        families = self.metrics.families
        s = self.settings
        batch = EventBatch(tuple(event for _, event in items), lane)
        started = time.monotonic()
        families.events_in_progress.inc(len(items))
        families.batch_size.observe(len(items))
        attempt = 0
        try:
            while True:
                try:
                    result, exc_info = entrypoint.handle(batch)
                except ContainerBeingKilled:
                    return []
                if exc_info is None:
                    seconds = time.monotonic() - started
                    self._count_handled(items, result, seconds)
                    if seconds >= SLOW_BATCH_SECONDS:
                        topics = sorted({self._logical(record.topic) for record, _ in items})
                        log.info(
                            "%s: a batch of %d %s events took %.1fs",
                            entrypoint.method_name,
                            len(items),
                            "+".join(topics),
                            seconds,
                        )
                    return items
                error = f"{exc_info[0].__name__}: {exc_info[1]}"
                database_away = issubclass(exc_info[0], DATABASE_UNREACHABLE)
                if len(items) > 1 and not database_away:
                    log.warning(
                        "a batch of %d failed in %s (%s); handling it in halves",
                        len(items),
                        entrypoint.method_name,
                        error,
                    )
                    return self._in_halves(entrypoint, items, lane)
                # The database being away is no fault of the message: wait for it without
                # using up attempts, or a long outage would dead-letter good messages.
                if not database_away:
                    attempt += 1
                if attempt >= s.handler_max_attempts:
                    record, event = items[0]
                    topic = self._logical(record.topic)
                    if self._dead_letter(record, topic, "handler_failed", error, attempt, event):
                        return items
                    return []
                for event in batch.events:
                    families.handler_retries.labels(event.type).inc()
                log.warning(
                    "handler %s failed (attempt %d): %s", entrypoint.method_name, attempt, error
                )
                backoff = s.handler_retry_backoff_seconds * 2 ** max(attempt - 1, 0)
                eventlet.sleep(min(backoff, s.handler_retry_backoff_max_seconds))
                if not self._running:
                    return []
        finally:
            families.events_in_progress.dec(len(items))

    def _in_halves(
        self,
        entrypoint: KafkaEntrypoint,
        items: list[tuple[ConsumerRecord, CloudEvent]],
        lane: int,
    ) -> list[tuple[ConsumerRecord, CloudEvent]]:
        middle = len(items) // 2
        through: list[tuple[ConsumerRecord, CloudEvent]] = []
        for half in (items[:middle], items[middle:]):
            if not self._running:
                break
            done = self._through(entrypoint, half, lane)
            through += done
            if len(done) < len(half):
                break  # order within the partition: nothing after an unfinished event
        return through

    def _count_handled(
        self, items: list[tuple[ConsumerRecord, CloudEvent]], result: Any, seconds: float
    ) -> None:
        families = self.metrics.families
        for record, event in items:
            duplicate = isinstance(result, Handled) and not result.is_fresh(event.id)
            outcome = "duplicate" if duplicate else "handled"
            topic = self._logical(record.topic)
            families.events_consumed.labels(topic, event.type, outcome).inc()
            # Each event waited for its whole batch: that is its handling time.
            families.handler_latency.labels(event.type).observe(seconds)
        families.last_consume_success.set(time.time())

    def _dead_letter(
        self,
        record: ConsumerRecord,
        topic: str,
        reason: str,
        error: str,
        attempts: int,
        event: CloudEvent | None,
    ) -> bool:
        letter = dead_letter_for(
            service=self.service,
            reason=reason,
            error=error,
            attempts=attempts,
            topic=topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            event_id=event.id if event else None,
            event_type=event.type if event else None,
        )
        # Keep trying while the broker is away: the offset must not pass a message that
        # is neither handled nor safely in the dead-letter topic.
        while self._running:
            try:
                self.publisher.send(letter.to_message())
                break
            except PublishError as publish_error:
                log.warning("dead-letter publish failed (%s); retrying", publish_error)
                eventlet.sleep(1.0)
        else:
            return False
        log.error("dead-lettered %s@%d/%d: %s", topic, record.partition, record.offset, error)
        self.metrics.families.dead_letters.labels(topic, reason).inc()
        event_type = event.type if event else "unknown"
        self.metrics.families.events_consumed.labels(topic, event_type, "dead_lettered").inc()
        return True


class KafkaEntrypoint(Entrypoint):
    """`@consume(topic, types=...)`: the method is called with an `EventBatch` of the
    poll's events it accepts, and handles them in one transaction
    (`ServiceDatabase.handle_batch`). `@consume((topic, topic), ...)` takes the events of
    several topics in one batch: one transaction per poll for events handled alike."""

    consumer = KafkaConsumerExtension()

    def __init__(
        self, topic: str | tuple[str, ...], types: Iterable[str] | None = None, **kwargs: Any
    ) -> None:
        self.topics: tuple[str, ...] = (topic,) if isinstance(topic, str) else tuple(topic)
        self.types = frozenset(types) if types is not None else None
        super().__init__(**kwargs)

    def setup(self) -> None:
        self.consumer.register_provider(self)

    def stop(self) -> None:
        self.consumer.unregister_provider(self)
        super().stop()

    def accepts(self, event_type: str) -> bool:
        return self.types is None or event_type in self.types

    def handle(self, batch: EventBatch[CloudEvent]) -> tuple[Any, Any]:
        """Runs one worker for `batch`; returns (result, exc_info) once it finished."""
        done: Event = Event()
        self.container.spawn_worker(
            self, (batch,), {}, handle_result=partial(self._handle_result, done)
        )
        return done.wait()

    @staticmethod
    def _handle_result(done: Event, worker_ctx: Any, result: Any, exc_info: Any) -> Any:
        done.send((result, exc_info))
        return result, exc_info


consume = KafkaEntrypoint.decorator


def consumed_topics(service: str) -> list[str]:
    """The topics (logical names) the `@consume` entrypoints of the nameko service `service`
    read, from its class in `services.<service>.service`. LookupError: no such service."""
    module = importlib.import_module(f"services.{service}.service")
    classes = [c for c in vars(module).values() if getattr(c, "name", None) == service]
    if not classes:
        raise LookupError(f"no nameko service named {service} in services.{service}.service")
    topics: set[str] = set()
    for name in dir(classes[0]):
        for extension in getattr(getattr(classes[0], name), ENTRYPOINT_EXTENSIONS_ATTR, ()):
            if isinstance(extension, KafkaEntrypoint):
                topics.update(extension.topics)
    return sorted(topics)


def partition_groups(partitions: list[TopicPartition], groups: int) -> list[list[TopicPartition]]:
    """The partitions in at most `groups` groups (round robin), one batch each."""
    return [group for group in (partitions[i::groups] for i in range(groups)) if group]


def batch_lane(owned: Iterable[TopicPartition], topics: Collection[str], fallback: int) -> int:
    """A batch's lane (batches.EventBatch): the lowest partition number of its group of the
    consumer's partitions, among the topics its entrypoint reads.

    It depends on the assignment only, not on which partitions a poll happened to bring:
    a handler counts each entry in the lane of the batch that last wrote it (the
    leaderboards' count maps, names.py's marks), so a lane taken from the poll moved
    entries between lanes with every batch of a quiet stream, a lane's map emptied and was
    deleted, and every read view of the board read it whole again (measured: every few
    seconds at 50 events/s, about 1 s of the service each at 10,000 agents). `fallback`
    when the group holds none of the topics (a record polled just as the group changed)."""
    numbers = [p.partition for p in owned if p.topic in topics]
    return min(numbers, default=fallback)
