"""Running nameko services in the test process against the real broker and database."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import requests
import yaml
from kafka import KafkaProducer
from nameko.cli.main import setup_yaml_parser
from nameko.containers import ServiceContainer
from prometheus_client.parser import text_string_to_metric_families

from contracts.envelope import CloudEvent
from contracts.topics import TOPIC_OF_TYPE
from deploy.local.servers import free_port
from services.runtime.topic_reader import read_topic

T = TypeVar("T")
CONFIG_FILE = Path(__file__).resolve().parents[2] / "deploy" / "config.yml"


def wait_until(
    condition: Callable[[], T], timeout: float = 20.0, message: str = "condition", every=0.05
) -> T:
    """Polls `condition` until it returns something truthy; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


def service_config(broker: Any, database: Any, prefix: str, **overrides: Any) -> dict[str, Any]:
    """deploy/config.yml as the services read it, pointed at the test servers."""
    setup_yaml_parser()
    config = yaml.safe_load(CONFIG_FILE.read_text())
    config.update(
        WEB_SERVER_ADDRESS=f"127.0.0.1:{free_port()}",
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
        MONGODB_URI=database.uri,
        NAME_PREFIX=prefix,
    )
    config["RUNTIME"] = {
        **(config.get("RUNTIME") or {}),
        # Fast group joins and takeovers (LOCAL-STACK.md): about 3 s to the first batch.
        "consumer_session_timeout_ms": 6000,
        "consumer_heartbeat_interval_ms": 1000,
        "handler_max_attempts": 3,
        "handler_retry_backoff_seconds": 0.05,
        "outbox_poll_interval_seconds": 0.2,
        **overrides.pop("RUNTIME", {}),
    }
    config.update(overrides)
    return config


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@contextmanager
def running(service_cls: type, config: dict[str, Any]) -> Iterator[ServiceContainer]:
    container = ServiceContainer(service_cls, config)
    container.start()
    try:
        yield container
    finally:
        container.stop()


def base_url(config: dict[str, Any]) -> str:
    return f"http://{config['WEB_SERVER_ADDRESS']}"


class EventBus:
    """A test's view of Kafka: publish events or raw bytes, read what a topic holds."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")

    def publish(self, event: CloudEvent) -> None:
        self.send(TOPIC_OF_TYPE[event.type], event.subject, event.to_json_bytes())

    def send(self, topic: str, key: str, value: bytes) -> None:
        self.producer.send(self.prefix + topic, key=key.encode(), value=value).get(timeout=10)

    def read_all(self, topic: str) -> list[Any]:
        """Every record now on `topic` (all partitions), in offset order per partition."""
        return read_topic(self.bootstrap, self.prefix + topic, timeout=10)

    def close(self) -> None:
        self.producer.close()


def events_consumed(url: str, outcome: str = "handled") -> Counter[tuple[str, str]]:
    """The events a service's consumer counted with `outcome` (handled, duplicate, ignored,
    dead_lettered), by (topic, type), from its /metrics at `url`."""
    found: Counter[tuple[str, str]] = Counter()
    text = requests.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "skillquest_events_consumed_total" and (
                labels.get("outcome") == outcome
            ):
                found[(labels["topic"], labels["type"])] += int(sample.value)
    return found


def get_json(url: str, **kwargs: Any) -> Any:
    # Generous: on a loaded 2-core machine a rebalance can keep a service busy for seconds.
    response = requests.get(url, timeout=30, **kwargs)
    response.raise_for_status()
    return response.json()
