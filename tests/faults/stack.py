"""What the fault tests stand on: their own broker and database (they kill and pause them),
the consuming services as `nameko run` processes (so kill -9 is real), a deterministic event
stream, and the checks: consumer lag, outbox backlog, and every service's state as data.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import requests
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from pymongo import MongoClient

from contracts.envelope import CloudEvent
from contracts.events import (
    AgentData,
    AgentRegistered,
    AssessmentGraded,
    AssessmentGradedData,
    CourseCompleted,
    CourseCompletedData,
    CourseData,
    CoursePublished,
    ModuleCompleted,
    ModuleCompletedData,
    ModuleData,
    TicketResolved,
    TicketResolvedData,
)
from contracts.topics import (
    ALL_TOPICS,
    GAMIFICATION_BADGES,
    GAMIFICATION_LEADERBOARDS,
    GAMIFICATION_POINTS,
    LEARNING_CATALOG,
    LEARNING_CREDITS,
    LEARNING_PROGRESS,
    PEOPLE_AGENTS,
    TOPIC_OF_TYPE,
    WORK_TICKETS,
)
from contracts.vocabulary import AgentSnapshot
from deploy.local.servers import Database, ManagedProcess, free_port, http_ok
from deploy.local.topics import ensure_topics
from services.runtime.dead_letters import DeadLetterStore
from services.runtime.outbox import LEASES, OUTBOX
from services.runtime.rebuild import (
    NOT_COMPARED,
    PLACEMENT_FIELDS,
    PLUMBING,
    SHARDED,
    WRITE_COUNT_FIELDS,
)
from tests.support.harness import service_config

ROOT = Path(__file__).resolve().parents[2]

#: What each consuming service subscribes to (its `@consume` topics).
SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    "points": (LEARNING_PROGRESS, WORK_TICKETS, GAMIFICATION_BADGES, PEOPLE_AGENTS),
    "leaderboards": (GAMIFICATION_POINTS, PEOPLE_AGENTS),
    "credits": (LEARNING_PROGRESS, LEARNING_CATALOG, PEOPLE_AGENTS),
    "badges": (
        LEARNING_PROGRESS,
        LEARNING_CATALOG,
        WORK_TICKETS,
        GAMIFICATION_LEADERBOARDS,
        LEARNING_CREDITS,
    ),
}
SERVICES = tuple(SUBSCRIPTIONS)

#: Collections that are not derived from events: configuration, plumbing, name marks.
NOT_STATE = {*PLUMBING, *NOT_COMPARED, OUTBOX, LEASES, "rules", "rule_versions", "signing_keys"}
#: Fields that say when this run wrote a document, not what the events made of it.
WALL_CLOCK_FIELDS = {
    "at",
    "recorded_at",
    "updated_at",
    "created_at",
    "applied_at",
    "observed_at",
    "last_seen_at",
    "first_seen_at",
    "handled_at",
    "last_points_at",
    "write_token",  # a random token per write of a leaderboard count map
}
#: Fields that depend on how events of different topics interleaved, which no run controls
#: (a ledger entry's running balance and sequence number: a badge bonus may land before or
#: after a quiz award; the account's final balance and count are compared).
ORDER_DEPENDENT_FIELDS = {"ledger": {"balance", "seq"}}


# --- processes --------------------------------------------------------------------------


class DurableDatabase(Database):
    """The database server with every transaction commit synced to disk before it is
    acknowledged. Without `--sync-on-commit`, a kill -9 of this server loses the last
    acknowledged transactions even when they were committed with `j: true` (measured: 6 of
    1,250 in 2 s of commits), and a consumer has committed its offset past them by then."""

    def command(self) -> list[str]:
        return [*super().command(), "--sync-on-commit"]


class ServiceProcess(ManagedProcess):
    """One instance of a service under `nameko run`, with its own config file and port."""

    def __init__(self, service: str, instance: int, config: dict[str, Any], log_dir: Path) -> None:
        super().__init__(log_dir, cwd=ROOT)
        self.service = service
        self.name = f"{service}-{instance}"
        self.port = free_port()
        self.config_path = log_dir / f"{self.name}.yml"
        log_dir.mkdir(parents=True, exist_ok=True)
        own = {**config, "WEB_SERVER_ADDRESS": f"127.0.0.1:{self.port}"}
        self.config_path.write_text(yaml.safe_dump(own))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        import sys

        module = f"services.{self.service}.service"
        return [sys.executable, "-m", "nameko", "run", "--config", str(self.config_path), module]

    def environment(self) -> dict[str, str]:
        import os

        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def is_ready(self) -> bool:
        return http_ok(f"{self.url}/readyz")


@dataclass
class Deployment:
    """The consuming services of one name prefix, `instances` processes each."""

    broker: Any
    database: Any
    prefix: str
    log_dir: Path
    instances: int = 1
    partitions: int = 6
    runtime: dict[str, Any] = field(default_factory=dict)
    processes: dict[str, list[ServiceProcess]] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        config = service_config(
            self.broker,
            self.database,
            self.prefix,
            RUNTIME={"handler_retry_backoff_seconds": 0.05, **self.runtime},
        )
        config["LOGGING"]["root"]["level"] = "WARNING"
        return config

    def start(self) -> Deployment:
        ensure_topics(self.broker.bootstrap, [self.prefix + t for t in ALL_TOPICS], self.partitions)
        config = self.config()
        for service in SERVICES:
            self.processes[service] = [
                ServiceProcess(service, i, config, self.log_dir)
                for i in range(1, self.instances + 1)
            ]
        for process in self.all():
            process.start()
        for process in self.all():
            process.wait_ready(90)
        return self

    def add_instances(self) -> None:
        """One more instance of every service (they share each group's partitions)."""
        config = self.config()
        added = []
        for service in SERVICES:
            number = len(self.processes[service]) + 1
            added.append(ServiceProcess(service, number, config, self.log_dir))
            self.processes[service].append(added[-1])
        for process in added:
            process.start()
        for process in added:
            process.wait_ready(120)

    def all(self) -> Iterator[ServiceProcess]:
        for processes in self.processes.values():
            yield from processes

    def stop(self) -> None:
        for process in self.all():
            process.terminate()
        for process in self.all():
            process.stop(20)


# --- the event stream -------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    events: list[CloudEvent]

    def chunks(self, count: int) -> list[list[CloudEvent]]:
        size = -(-len(self.events) // count)
        return [self.events[i : i + size] for i in range(0, len(self.events), size)]


def _window(time_zone: str, now: datetime) -> tuple[datetime, datetime]:
    """Event times inside the current local week and month, so that no leaderboard period
    closes (on the wall clock) while the test runs."""
    local = now.astimezone(ZoneInfo(time_zone))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    week_start = midnight - timedelta(days=local.weekday())
    month_start = midnight.replace(day=1)
    start = max(week_start, month_start).astimezone(UTC) + timedelta(seconds=1)
    end = now - timedelta(seconds=30)
    return start, max(end, start + timedelta(seconds=1))


def make_stream(agents: int, seed: int = 7, time_zone: str = "Asia/Shanghai") -> Stream:
    """Roster and catalogue, then learning and ticket activity of `agents` agents, in time
    order: about 6 events an agent."""
    rng = random.Random(seed)
    ids = uuid.UUID(int=rng.getrandbits(128))
    counter = iter(range(10**9))

    def stamp(event: CloudEvent) -> CloudEvent:
        return event.model_copy(update={"id": str(uuid.uuid5(ids, str(next(counter))))})

    start, end = _window(time_zone, datetime.now(UTC))
    span = (end - start).total_seconds()

    def at(fraction: float) -> datetime:
        return start + timedelta(seconds=span * fraction)

    courses = []
    for number, tier in enumerate(["foundation", "foundation", "advanced", "leadership"]):
        tags = ["complaint-handling"] if number < 2 else ["escalation"]
        courses.append(
            CourseData(
                course_id=f"course-{number}",
                title=f"Course {number}",
                tier=tier,  # type: ignore[arg-type]
                dimension="communication",
                credit_hours=2.0 + number,
                tags=tags,
                modules=[
                    ModuleData(module_id="lesson-1", kind="lesson", title="Lesson"),
                    ModuleData(module_id="quiz-1", kind="quiz", title="Quiz", pass_score=80),
                ],
                published=True,
                revision=1,
            )
        )
    timed: list[tuple[float, int, CloudEvent]] = []
    order = iter(range(10**9))
    for course in courses:
        published = CoursePublished.create(
            source="skillquest/progress", subject=course.course_id, time=at(0.0), data=course
        )
        timed.append((0.0, next(order), stamp(published)))
    for number in range(agents):
        agent = AgentSnapshot(
            agent_id=f"agent-{number:04d}",
            team_id=f"team-{number % 12:02d}",
            tier=rng.choice(["foundation", "foundation", "advanced"]),  # type: ignore[arg-type]
        )
        t = rng.uniform(0.0, 0.1)
        registered = AgentRegistered.create(
            source="skillquest/progress",
            subject=agent.agent_id,
            time=at(t),
            data=AgentData(
                agent_id=agent.agent_id,
                name=f"Agent {number}",
                team_id=agent.team_id,
                tier=agent.tier,
            ),
        )
        timed.append((t, next(order), stamp(registered)))
        for course in rng.sample(courses, 1 if rng.random() < 0.8 else 2):
            t += rng.uniform(0.01, 0.1)
            lesson = ModuleCompleted.create(
                source="skillquest/progress",
                subject=agent.agent_id,
                time=at(t),
                data=ModuleCompletedData(
                    agent=agent,
                    course_id=course.course_id,
                    module_id="lesson-1",
                    module_kind="lesson",
                ),
            )
            timed.append((t, next(order), stamp(lesson)))
            best = 0
            for attempt in range(1, rng.randint(1, 2) + 1):
                t += rng.uniform(0.005, 0.05)
                score = rng.choice([60, 85, 90, 100])
                best = max(best, score)
                graded = AssessmentGraded.create(
                    source="skillquest/progress",
                    subject=agent.agent_id,
                    time=at(t),
                    data=AssessmentGradedData(
                        agent=agent,
                        course_id=course.course_id,
                        module_id="quiz-1",
                        module_kind="quiz",
                        score=score,
                        pass_score=80,
                        passed=score >= 80,
                        attempt=attempt,
                    ),
                )
                timed.append((t, next(order), stamp(graded)))
            if best >= 80:
                t += rng.uniform(0.001, 0.01)
                done = CourseCompleted.create(
                    source="skillquest/progress",
                    subject=agent.agent_id,
                    time=at(t),
                    data=CourseCompletedData(
                        agent=agent,
                        course_id=course.course_id,
                        course_tier=course.tier,
                        dimension=course.dimension,
                        credit_hours=course.credit_hours,
                        tags=course.tags,
                        mean_best_score=float(best),
                    ),
                )
                timed.append((t, next(order), stamp(done)))
        for ticket in range(rng.randint(1, 3)):
            t2 = rng.uniform(0.1, 1.0)
            resolved = TicketResolved.create(
                source="skillquest/progress",
                subject=agent.agent_id,
                time=at(t2),
                data=TicketResolvedData(
                    agent=agent,
                    ticket_id=f"tk-{number}-{ticket}",
                    qa_score=rng.choice([70, 88, 95, 100]),
                    csat=rng.randint(3, 5),
                ),
            )
            timed.append((t2, next(order), stamp(resolved)))
    timed.sort(key=lambda item: (item[0], item[1]))
    return Stream([event for _, _, event in timed])


class Producer:
    """Publishes events (or raw bytes) the way the outbox relay does: keyed by subject."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.prefix = prefix
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5, enable_idempotence=True
        )

    def publish(self, events: Iterable[CloudEvent]) -> int:
        futures = [
            self.producer.send(
                self.prefix + TOPIC_OF_TYPE[e.type], key=e.subject.encode(), value=e.to_json_bytes()
            )
            for e in events
        ]
        self.producer.flush(60)
        for future in futures:
            future.get(timeout=60)
        return len(futures)

    def send_raw(self, topic: str, key: str, value: bytes) -> tuple[str, int, int]:
        metadata = self.producer.send(self.prefix + topic, key=key.encode(), value=value).get(60)
        return topic, metadata.partition, metadata.offset

    def close(self) -> None:
        self.producer.close()


# --- observing ----------------------------------------------------------------------------


class LagProbe:
    """Per consuming service: records on its topics that its group has not committed."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.admin: KafkaAdminClient | None = None
        self.consumer: KafkaConsumer | None = None

    def lag(self) -> dict[str, int]:
        try:
            if self.admin is None or self.consumer is None:
                self.admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap,
                    request_timeout_ms=5000,
                    bootstrap_timeout_ms=5000,
                )
                self.consumer = KafkaConsumer(
                    bootstrap_servers=self.bootstrap, request_timeout_ms=5000
                )
            return _lag(self.admin, self.consumer, self.prefix)
        except Exception:
            self.close()  # reconnect next time (the broker was away)
            raise

    def close(self) -> None:
        for client in (self.admin, self.consumer):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self.admin = self.consumer = None


def group_lag(bootstrap: str, prefix: str) -> dict[str, int]:
    probe = LagProbe(bootstrap, prefix)
    try:
        return probe.lag()
    finally:
        probe.close()


def _lag(admin: KafkaAdminClient, consumer: KafkaConsumer, prefix: str) -> dict[str, int]:
    lag = {}
    for service, topics in SUBSCRIPTIONS.items():
        group = f"{prefix}skillquest.{service}"
        committed = admin.list_group_offsets(group).get(group, {})
        tps = [
            TopicPartition(prefix + topic, p)
            for topic in topics
            for p in (consumer.partitions_for_topic(prefix + topic) or ())
        ]
        ends = consumer.end_offsets(tps)
        total = 0
        for tp in tps:
            done = committed.get(tp)
            position = done.offset if done is not None and done.offset >= 0 else 0
            total += max(ends[tp] - position, 0)
        lag[service] = total
    return lag


def database_name(prefix: str, service: str) -> str:
    return f"{prefix}skillquest_{service}".replace(".", "_")


def outbox_backlog(client: MongoClient, prefix: str) -> dict[str, int]:
    return {
        service: client[database_name(prefix, service)][OUTBOX].count_documents({"sent_at": None})
        for service in SERVICES
    }


def wait_settled(
    bootstrap: str, client: MongoClient, prefix: str, timeout: float = 120.0
) -> tuple[float, dict[str, int]]:
    """Waits until every group has committed every record of its topics and every outbox
    is empty, twice in a row; returns (seconds it took, what was left at the deadline)."""
    started = time.monotonic()
    calm = 0
    left: dict[str, int] = {}
    probe = LagProbe(bootstrap, prefix)
    while time.monotonic() - started < timeout:
        try:
            left = probe.lag()
            left.update({f"outbox.{k}": v for k, v in outbox_backlog(client, prefix).items()})
        except Exception as error:  # noqa: BLE001 - a server is still coming back
            left = {"error": 1, str(error)[:80]: 1}
        if not any(left.values()):
            calm += 1
            if calm >= 2:
                probe.close()
                return time.monotonic() - started, left
        else:
            calm = 0
        time.sleep(0.4)
    probe.close()
    return time.monotonic() - started, left


def _canonical(value: Any, drop: frozenset[str] = frozenset()) -> Any:
    if isinstance(value, dict):
        return {
            k: _canonical(v)
            for k, v in sorted(value.items())
            if k not in WALL_CLOCK_FIELDS and k not in drop
        }
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def state_of(client: MongoClient, db_name: str) -> dict[str, Counter[str]]:
    """A service's derived state as data: per collection, the multiset of its documents
    (wall-clock fields left out); `processed_events` by id only."""
    db = client[db_name]
    state: dict[str, Counter[str]] = {}
    for name in sorted(db.list_collection_names()):
        if name in NOT_STATE:
            continue
        docs = db[name].find({}, {"_id": 1} if name == "processed_events" else None)
        if name in SHARDED:
            docs = SHARDED[name](docs)
        drop = (
            frozenset(ORDER_DEPENDENT_FIELDS.get(name, ())) | PLACEMENT_FIELDS | WRITE_COUNT_FIELDS
        )
        state[name] = Counter(json.dumps(_canonical(doc, drop), sort_keys=True) for doc in docs)
    return state


def snapshot(client: MongoClient, prefix: str) -> dict[str, dict[str, Counter[str]]]:
    return {service: state_of(client, database_name(prefix, service)) for service in SERVICES}


@dataclass
class Difference:
    lost: int = 0  # expected documents missing
    extra: int = 0  # documents that should not be there (duplicated or wrong)
    examples: list[str] = field(default_factory=list)


def compare(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, Difference]:
    """Per `service.collection` that differs: how many documents are missing and extra."""
    differences: dict[str, Difference] = {}
    for service in expected.keys() | actual.keys():
        mine, theirs = expected.get(service, {}), actual.get(service, {})
        for name in mine.keys() | theirs.keys():
            want, got = mine.get(name, Counter()), theirs.get(name, Counter())
            lost, extra = want - got, got - want
            if lost or extra:
                differences[f"{service}.{name}"] = Difference(
                    sum(lost.values()),
                    sum(extra.values()),
                    [f"-{d[:300]}" for d in list(lost)[:2]]
                    + [f"+{d[:300]}" for d in list(extra)[:2]],
                )
    return differences


def dead_letter_positions(bootstrap: str, prefix: str, service: str) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of the original message of each letter in dlq.<service>."""
    letters = DeadLetterStore(bootstrap, service, prefix).letters(limit=1_000_000, timeout=20)
    return [(letter.topic, letter.partition, letter.offset) for _, letter in letters]


def get(url: str) -> Any:
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    return response.json()


def records_on_topics(bootstrap: str, prefix: str) -> dict[str, int]:
    """How many records each event topic of `prefix` holds (inputs and what services sent)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        counts = {}
        for topic in ALL_TOPICS:
            name = prefix + topic
            tps = [TopicPartition(name, p) for p in (consumer.partitions_for_topic(name) or ())]
            counts[topic] = sum(consumer.end_offsets(tps).values()) if tps else 0
        return counts
    finally:
        consumer.close()
