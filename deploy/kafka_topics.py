"""The topic job of the container deployments (compose and Kubernetes): creates every
Skillquest topic, `contracts.topics.ALL_TOPICS`, with the partitions and retention that
production needs, before the services start.

    python -m deploy.kafka_topics [--partitions N] [--replication-factor N]

(The image runs it as its `topics` command.) Settings also come from the environment:
`KAFKA_BOOTSTRAP_SERVERS`, `NAME_PREFIX`, `TOPIC_PARTITIONS` (6), `TOPIC_REPLICATION_FACTOR`
(1), `TOPIC_MIN_INSYNC_REPLICAS` (unset: the broker's default).

The event topics are the history every derived view is rebuilt from (ARCHITECTURE §3), so they
are kept forever: `retention.ms=-1` and `retention.bytes=-1`. The dead-letter topics too: a
dead letter is gone when an operator has replayed or dropped it, never because of its age.

Idempotent. A topic that exists keeps its partitions (raising them would move keys, hence
agents, to other partitions and break per-agent order while old messages wait); its retention
is set to unlimited when it is not. A topic with fewer partitions than asked is an error (a
consumer group can use no more replicas than there are partitions): the job says so and
exits with status 2, and the deployment does not start on it silently.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError

from contracts.topics import ALL_TOPICS

log = logging.getLogger("skillquest.topics")

DEFAULT_PARTITIONS = 6
DEFAULT_REPLICATION_FACTOR = 1
#: Kept forever: the history is the source of truth for rebuilds.
RETENTION: dict[str, str] = {"retention.ms": "-1", "retention.bytes": "-1"}
EXIT_TOO_FEW_PARTITIONS = 2


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)

    def as_request(self) -> dict[str, object]:
        """The per-topic options of kafka-python's `create_topics`."""
        return {
            "num_partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "configs": dict(self.configs),
        }


def topic_specs(
    prefix: str = "",
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int = DEFAULT_REPLICATION_FACTOR,
    min_insync_replicas: int | None = None,
    names: Iterable[str] = ALL_TOPICS,
) -> list[TopicSpec]:
    """One spec per topic the services use, with the name prefix they apply."""
    if partitions < 1 or replication_factor < 1:
        raise ValueError("partitions and replication factor must be at least 1")
    configs = dict(RETENTION)
    if min_insync_replicas is not None:
        if not 1 <= min_insync_replicas <= replication_factor:
            raise ValueError("min.insync.replicas must be between 1 and the replication factor")
        configs["min.insync.replicas"] = str(min_insync_replicas)
    return [
        TopicSpec(f"{prefix}{name}", partitions, replication_factor, configs)
        for name in dict.fromkeys(names)
    ]


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    retention_set: list[str] = field(default_factory=list)
    too_few_partitions: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.too_few_partitions


def partition_counts(topics: Sequence[Mapping[str, object]]) -> dict[str, int]:
    """Topic name -> partition count, from kafka-python's `describe_topics`."""
    counts = {}
    for topic in topics:
        partitions = topic.get("partitions")
        name = topic.get("name", topic.get("topic"))  # the key changed across versions
        counts[str(name)] = len(partitions) if isinstance(partitions, list) else 0
    return counts


def ensure(
    client: KafkaAdminClient, specs: Sequence[TopicSpec], timeout_ms: int = 30_000
) -> Report:
    """Creates the missing topics, checks and fixes the existing ones (see the module doc)."""
    report = Report()
    existing = set(client.list_topics())
    missing = [spec for spec in specs if spec.name not in existing]
    if missing:
        response = client.create_topics(
            {spec.name: spec.as_request() for spec in missing},
            timeout_ms=timeout_ms,
            raise_errors=False,
        )
        for result in response["topics"]:
            code = int(result["error_code"])
            if code == 0:
                report.created.append(str(result["name"]))
            elif code != TopicAlreadyExistsError.errno:
                raise KafkaError(
                    f"could not create topic {result['name']!r}: "
                    f"error {code} ({result.get('error_message')})"
                )
        client.wait_for_topics([spec.name for spec in missing], timeout_ms=timeout_ms)

    present = [spec for spec in specs if spec.name not in report.created]
    report.existing = [spec.name for spec in present]
    if present:
        counts = partition_counts(client.describe_topics([s.name for s in present]))
        for spec in present:
            if counts.get(spec.name, 0) < spec.partitions:
                report.too_few_partitions[spec.name] = counts.get(spec.name, 0)
        wanted = {spec.name: {key: spec.configs[key] for key in RETENTION} for spec in present}
        described = client.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, None) for name in wanted],
            config_filter="all",
        )
        current = _topic_config_values(described)
        to_fix = [
            name
            for name, configs in wanted.items()
            if any(current.get(name, {}).get(key) != value for key, value in configs.items())
        ]
        if to_fix:
            client.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name, wanted[name]) for name in to_fix]
            )
            report.retention_set = to_fix
    return report


def _topic_config_values(described: object) -> dict[str, dict[str, str | None]]:
    """{topic: {key: value}} from `describe_configs` (a dict by resource type and name)."""
    values: dict[str, dict[str, str | None]] = {}
    if not isinstance(described, Mapping):
        return values
    for by_name in described.values():
        if not isinstance(by_name, Mapping):
            continue
        for name, configs in by_name.items():
            if isinstance(configs, Mapping):
                values[str(name)] = {
                    str(key): (entry.get("value") if isinstance(entry, Mapping) else entry)
                    for key, entry in configs.items()
                }
    return values


def _int_env(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a whole number") from None


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="skillquest-topics", description=__doc__.strip().splitlines()[0] if __doc__ else ""
    )
    parser.add_argument(
        "--bootstrap", default=env.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092"
    )
    parser.add_argument("--prefix", default=env.get("NAME_PREFIX", ""))
    parser.add_argument(
        "--partitions", type=int, default=_int_env(env, "TOPIC_PARTITIONS", DEFAULT_PARTITIONS)
    )
    parser.add_argument(
        "--replication-factor",
        type=int,
        default=_int_env(env, "TOPIC_REPLICATION_FACTOR", DEFAULT_REPLICATION_FACTOR),
    )
    parser.add_argument(
        "--min-insync-replicas",
        type=int,
        default=_int_env(env, "TOPIC_MIN_INSYNC_REPLICAS", None),
    )
    parser.add_argument(
        "--wait-seconds",
        type=float,
        default=120.0,
        help="how long to wait for the broker to answer before giving up",
    )
    return parser.parse_args(argv)


def _connect(bootstrap: str, wait_seconds: float) -> KafkaAdminClient:
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="skillquest-topics",
                request_timeout_ms=30_000,
            )
        except KafkaError as error:
            if time.monotonic() >= deadline:
                raise SystemExit(f"Kafka at {bootstrap} did not answer: {error}") from None
            log.info("waiting for Kafka at %s (%s)", bootstrap, error)
            time.sleep(2.0)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    args = parse_args(argv, os.environ if env is None else env)
    try:
        specs = topic_specs(
            args.prefix, args.partitions, args.replication_factor, args.min_insync_replicas
        )
    except ValueError as error:
        raise SystemExit(str(error)) from None
    admin = _connect(args.bootstrap, args.wait_seconds)
    try:
        report = ensure(admin, specs)
    finally:
        admin.close()
    for name in report.created:
        log.info("created %s (%d partitions, kept forever)", name, args.partitions)
    for name in report.retention_set:
        log.info("set unlimited retention on existing topic %s", name)
    for name, count in report.too_few_partitions.items():
        log.error(
            "topic %s has %d partitions, fewer than %d: a consumer group can use only %d "
            "replicas; add partitions while no producer runs "
            "(kafka-topics.sh --alter --partitions %d), knowing that keys move",
            name,
            count,
            args.partitions,
            count,
            args.partitions,
        )
    log.info(
        "%d topics: %d created, %d already there",
        len(specs),
        len(report.created),
        len(report.existing),
    )
    return 0 if report.ok else EXIT_TOO_FEW_PARTITIONS


if __name__ == "__main__":
    sys.exit(main())
