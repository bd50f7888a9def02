"""The topic job of the container deployments (deploy/kafka_topics.py): every topic of
contracts.topics.ALL_TOPICS, kept forever, with enough partitions; idempotent."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.topics import ALL_TOPICS, EVENT_TOPICS
from deploy import kafka_topics
from deploy.kafka_topics import RETENTION, ensure, topic_specs


def test_a_spec_for_every_topic_the_services_use_each_kept_forever():
    specs = topic_specs()
    assert [spec.name for spec in specs] == list(ALL_TOPICS)
    assert set(EVENT_TOPICS) <= {spec.name for spec in specs}
    for spec in specs:
        assert spec.partitions == kafka_topics.DEFAULT_PARTITIONS == 6
        assert spec.configs["retention.ms"] == "-1"
        assert spec.configs["retention.bytes"] == "-1"


def test_the_name_prefix_is_applied_as_the_services_apply_it():
    specs = topic_specs(prefix="acme.", partitions=12, replication_factor=3, min_insync_replicas=2)
    assert [spec.name for spec in specs] == [f"acme.{name}" for name in ALL_TOPICS]
    assert {spec.partitions for spec in specs} == {12}
    assert {spec.configs["min.insync.replicas"] for spec in specs} == {"2"}
    assert specs[0].as_request() == {
        "num_partitions": 12,
        "replication_factor": 3,
        "configs": {"retention.ms": "-1", "retention.bytes": "-1", "min.insync.replicas": "2"},
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"partitions": 0},
        {"replication_factor": 0},
        {"replication_factor": 1, "min_insync_replicas": 2},
    ],
)
def test_impossible_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        topic_specs(**kwargs)


class FakeAdmin:
    """The part of KafkaAdminClient the job uses, over an in-memory cluster."""

    def __init__(self, topics: dict[str, tuple[int, dict[str, str]]]) -> None:
        self.topics = dict(topics)
        self.altered: list[str] = []

    def list_topics(self) -> list[str]:
        return list(self.topics)

    def create_topics(self, specs: dict[str, dict[str, Any]], **_: Any) -> dict[str, Any]:
        results = []
        for name, spec in specs.items():
            if name in self.topics:
                results.append({"name": name, "error_code": 36, "error_message": "exists"})
                continue
            self.topics[name] = (spec["num_partitions"], dict(spec["configs"]))
            results.append({"name": name, "error_code": 0, "error_message": None})
        return {"topics": results}

    def wait_for_topics(self, names: list[str], timeout_ms: int = 0) -> None:
        assert set(names) <= set(self.topics)

    def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "partitions": [{"partition_index": i} for i in range(self.topics[name][0])],
            }
            for name in names
        ]

    def describe_configs(self, resources: list[Any], config_filter: str = "") -> dict[str, Any]:
        return {
            "topic": {
                resource.name: {
                    key: {"value": self.topics[resource.name][1].get(key, "604800000")}
                    for key in RETENTION
                }
                for resource in resources
            }
        }

    def alter_configs(self, resources: list[Any]) -> None:
        for resource in resources:
            partitions, configs = self.topics[resource.name]
            self.topics[resource.name] = (partitions, {**configs, **resource.configs})
            self.altered.append(resource.name)


def test_an_empty_cluster_gets_every_topic_kept_forever():
    admin = FakeAdmin({})
    report = ensure(admin, topic_specs())  # type: ignore[arg-type]
    assert report.created == list(ALL_TOPICS)
    assert report.ok and not report.retention_set
    assert all(configs["retention.ms"] == "-1" for _, configs in admin.topics.values())


def test_a_second_run_changes_nothing():
    admin = FakeAdmin({})
    ensure(admin, topic_specs())  # type: ignore[arg-type]
    report = ensure(admin, topic_specs())  # type: ignore[arg-type]
    assert report.created == [] and report.existing == list(ALL_TOPICS)
    assert report.ok and admin.altered == []


def test_an_existing_topic_with_a_time_limit_is_made_unlimited_and_keeps_its_partitions():
    admin = FakeAdmin({"learning.progress": (12, {"retention.ms": "604800000"})})
    report = ensure(admin, topic_specs())  # type: ignore[arg-type]
    assert "learning.progress" not in report.created
    assert report.retention_set == ["learning.progress"]
    assert admin.topics["learning.progress"] == (
        12,
        {"retention.ms": "-1", "retention.bytes": "-1"},
    )
    assert report.ok


def test_a_topic_with_too_few_partitions_fails_the_job():
    admin = FakeAdmin({"gamification.points": (1, dict(RETENTION))})
    report = ensure(admin, topic_specs())  # type: ignore[arg-type]
    assert report.too_few_partitions == {"gamification.points": 1}
    assert not report.ok


def test_main_exits_2_when_a_topic_has_too_few_partitions(monkeypatch):
    admin = FakeAdmin({"work.tickets": (3, dict(RETENTION))})
    admin.close = lambda: None  # type: ignore[attr-defined]
    monkeypatch.setattr(kafka_topics, "_connect", lambda bootstrap, wait: admin)
    assert kafka_topics.main([], env={"TOPIC_PARTITIONS": "6"}) == 2
    assert kafka_topics.main([], env={"TOPIC_PARTITIONS": "3"}) == 0


def test_settings_come_from_the_environment():
    args = kafka_topics.parse_args(
        [],
        {
            "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
            "NAME_PREFIX": "x.",
            "TOPIC_PARTITIONS": "12",
            "TOPIC_REPLICATION_FACTOR": "3",
            "TOPIC_MIN_INSYNC_REPLICAS": "",
        },
    )
    assert (args.bootstrap, args.prefix, args.partitions, args.replication_factor) == (
        "kafka:9092",
        "x.",
        12,
        3,
    )
    assert args.min_insync_replicas is None
    with pytest.raises(SystemExit):
        kafka_topics.parse_args([], {"TOPIC_PARTITIONS": "six"})
