"""Runtime settings: environment -> deploy/config.yml (`${VAR:default}`) -> container.config.

Read once, in an extension's `setup()`, into a validated model: a typo in the environment
fails the start with a message that names the setting, not a KeyError deep in a handler.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from nameko.extensions import DependencyProvider
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class RuntimeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    mongodb_uri: str = "mongodb://127.0.0.1:27017"
    #: Prepended to every topic, consumer group and database name: isolates tests and
    #: lets several deployments share a cluster.
    name_prefix: str = ""
    time_zone: str = "Asia/Shanghai"
    #: A rebuild (`skillquest rebuild`) runs the service into a database and consumer group
    #: of its own, with the outbox not relayed: these say which, and whether to relay.
    database_suffix: str = ""
    consumer_group_suffix: str = ""
    outbox_relay_enabled: bool = True

    # Consuming
    consumer_session_timeout_ms: int = Field(10_000, ge=6_000)
    consumer_heartbeat_interval_ms: int = Field(1_000, ge=100)
    #: Bounds how long one slow partition holds up the next poll (and every commit).
    #: Also the largest batch a handler gets (one transaction): bigger batches mean fewer
    #: database round trips per event, up to the point where a conflict retries too much.
    #: A batch only grows this large when a backlog waits (a catch-up, a burst): measured on
    #: the local stack's pipeline, 2,000 against 500 took 22% less of the leaderboards'
    #: database per event (more of an agent's changes fold into one entry write, and each
    #: board's count map is written once per batch) and settled 277 events/s against 236.
    #: A failing batch is split in halves (kafka.py), so its size costs little there.
    consumer_max_poll_records: int = Field(2_000, ge=1)
    #: Batches a poll is split into, handled at once (each its own transaction, over a
    #: fixed share of the consumer's partitions: kafka.batch_lane). Measured on the local
    #: stack: one batch per poll is fastest, because its database runs one statement at a
    #: time, every transaction has a cost of its own, and concurrent batches that write a
    #: shared document conflict and are retried whole. Raise it against a MongoDB that runs
    #: transactions in parallel; replicas add parallelism either way.
    consumer_partition_concurrency: int = Field(1, ge=1)
    #: How long the broker may hold a fetch while it has less than
    #: `consumer_fetch_min_bytes` (while events flow; idle, see below). The client keeps one
    #: fetch in flight per broker, and a partition whose records were still buffered when it
    #: went out waits for the next: at a few events a second a record often waits two of
    #: these. Measured on the local broker alone (one consumer of six, 50 events/s, 64 KB):
    #: produce-to-poll p50 / p95 / p99 64 / 189 / 253 ms at 100 ms, 33 / 59 / 100 at 50.
    #: Through the stack, 20 s at 50 events/s (two hops, two runs each): publish-to-board
    #: p50 / p99 419-489 / 1,023-1,361 ms at 64 KB and 100 ms; 250-297 / 430-522 at 16 KB
    #: and 50 ms, with the same CPU. Each empty fetch costs the consumer and the broker, but
    #: an idle consumer switches to the idle settings below.
    consumer_fetch_max_wait_ms: int = Field(50, ge=0, le=500)
    #: How much the broker gathers before it answers a fetch (waiting at most
    #: `consumer_fetch_max_wait_ms`). Kafka's default, 1 byte, answers with the first
    #: record: at moderate rates every consumer then runs a transaction per few events,
    #: each with its fixed statements (handled ids, outbox), and the database saturates
    #: sooner. Measured on the local stack, 20 s at 50 events/s: 1 byte (100 ms) used 33.9
    #: CPU seconds, 1 byte (50 ms) 39.1, 16 KB (50 ms) 28.3 and 31.4; at 250 events/s the
    #: runs' spread (p99 1 to 2.8 s in the same settings) hid any difference.
    consumer_fetch_min_bytes: int = Field(16_384, ge=1)
    #: Once a consumer has polled nothing for `IDLE_FETCH_AFTER_SECONDS` (runtime/kafka.py),
    #: its fetches ask for 1 byte and may be held this long: the broker answers at the
    #: first record, so a quiet consumer sees an event as soon as with the settings above
    #: (sooner: it does not wait for more), and it asks a tenth as often. Its first records
    #: bring the two settings above back. Measured on the local stack, idle (4 consumers,
    #: broker, database, relays): 0.47 of 2 cores at 100 ms, 0.24 at 500.
    consumer_idle_fetch_max_wait_ms: int = Field(500, ge=0, le=5_000)
    #: How long a read of reference data (the course catalogue as each service holds it)
    #: is answered from memory: reads are eventually consistent within about a second
    #: anyway, and a profile consulted the catalogue three times (a fifth of its cost on
    #: the local database). 0 reads it every time.
    reference_cache_seconds: float = Field(1.0, ge=0, le=60)

    handler_max_attempts: int = Field(5, ge=1, description="Then the message is dead-lettered")
    handler_retry_backoff_seconds: float = Field(0.2, ge=0)
    handler_retry_backoff_max_seconds: float = Field(5.0, ge=0)

    # Publishing
    outbox_poll_interval_seconds: float = Field(0.5, gt=0)
    outbox_gather_seconds: float = Field(0.02, ge=0, description="Batching after a commit")
    outbox_batch_size: int = Field(500, ge=1)
    outbox_lease_seconds: float = Field(10.0, gt=0)
    producer_linger_ms: int = Field(5, ge=0, le=500)  # below the delivery timeout's floor
    producer_delivery_timeout_ms: int = Field(30_000, ge=1_000)

    def topic(self, name: str) -> str:
        return f"{self.name_prefix}{name}"

    def database_name(self, service: str) -> str:
        return f"{self.name_prefix}skillquest_{service}{self.database_suffix}".replace(".", "_")

    def consumer_group(self, service: str) -> str:
        return f"{self.name_prefix}skillquest.{service}{self.consumer_group_suffix}"


_KEYS = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka_bootstrap_servers",
    "MONGODB_URI": "mongodb_uri",
    "NAME_PREFIX": "name_prefix",
    "TIME_ZONE": "time_zone",
}


def settings_from_config(config: dict[str, Any]) -> RuntimeSettings:
    """Builds settings from nameko's config: the §6 names at top level, the rest under RUNTIME."""
    values: dict[str, Any] = dict(config.get("RUNTIME") or {})
    for key, field in _KEYS.items():
        if config.get(key) not in (None, ""):
            values[field] = config[key]
    try:
        return RuntimeSettings.model_validate(values)
    except ValidationError as error:
        raise SystemExit(f"invalid configuration: {error}") from None


M = TypeVar("M", bound=BaseModel)


class ServiceSettings(DependencyProvider, Generic[M]):
    """A service's own settings: the `section` of the config (e.g. POINTS) as `model`.

    Validated once at start; the time zone and other runtime values are merged in when the
    model declares them, so a service reads every setting from one object.
    """

    def __init__(self, model: type[M], section: str) -> None:
        self.model = model
        self.section = section

    def setup(self) -> None:
        config = self.container.config
        values = {k: v for k, v in (config.get(self.section) or {}).items() if v is not None}
        runtime = settings_from_config(config)
        for name in self.model.model_fields:
            if name not in values and name in RuntimeSettings.model_fields:
                values[name] = getattr(runtime, name)
        try:
            self.value: M = self.model.model_validate(values)
        except ValidationError as error:
            raise SystemExit(f"invalid {self.section} configuration: {error}") from None

    def get_dependency(self, worker_ctx: Any) -> M:
        return self.value
