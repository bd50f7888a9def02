"""Rebuilding a service's derived state by replaying its input topics from the beginning.

The service itself does the work, so the rules are the ones it runs live: `nameko run` of the
service with a database and a consumer group of its own (a new group reads every topic from
offset 0, `auto_offset_reset=earliest`) and its outbox not relayed (what it would publish
was published when the events first went through). It runs until its group has committed
every record that was on its topics when the rebuild began, then stops.

What carries over and what is replaced:

- configuration the service keeps in its database (the points rule table, the badges
  signing keys) is copied into the new database first and never replaced;
- plumbing (outbox, leases) stays as it is in the live database;
- everything else is derived, *together with* `processed_events`: the handled-event ids are
  what makes the service skip an event, so they must describe exactly the state beside
  them. `--apply` replaces both, while the live service is stopped; on restart it goes on
  from its own committed offsets, and whatever the rebuild had already applied is skipped.

Topics must keep their whole history for this (retention unlimited, or compaction that
keeps every event id): a deployment with time-limited retention cannot rebuild.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pymongo import MongoClient

from services.leaderboards.count_maps import merged_by_board
from services.leaderboards.standings import STANDINGS, as_entries
from services.runtime.settings import RuntimeSettings, settings_from_config

ROOT = Path(__file__).resolve().parents[2]
#: Derived views that can be rebuilt from topics. The points ledger is not one: admin
#: adjustments and reversals reach it over HTTP, not through a topic.
REBUILDABLE = ("leaderboards", "credits", "badges")
#: Configuration a service keeps in its database: copied into a rebuild, never replaced.
CONFIGURATION = {"points": ("rules", "rule_versions"), "badges": ("signing_keys",)}
#: Not state: what the relay and the leases need, and the leaderboards' entry journal (what
#: each write of a count map changed, for the read views; it expires within minutes).
PLUMBING = ("outbox", "leases", "entry_journal")
#: Replaced by a rebuild but not compared: the leaderboards' name marks say how far each
#: roster lane's names journal has gone (a token per write), which follows the batching,
#: not what the events made. Replacing them has every read view read the names again.
NOT_COMPARED = ("name_marks",)
#: Fields that record when this process wrote a document, not what the events made of it.
WALL_CLOCK_FIELDS = frozenset(
    {"at", "recorded_at", "updated_at", "created_at", "applied_at", "last_points_at"}
    # and the token each write of a leaderboard count map sets (services/leaderboards)
    | {"write_token"}
)
#: Fields that say where a document was placed, not what it holds: a leaderboard entry's
#: lane (the count-map shard that counts it) follows how the consumer's polls were batched.
PLACEMENT_FIELDS = frozenset({"lane"})
#: Fields that count a document's writes (a leaderboard entry's version, which the read
#: views order writes by): how many there were follows the batching too.
WRITE_COUNT_FIELDS = frozenset({"version"})
#: Collections compared as what their documents stand for: the leaderboards' count maps as
#: the counts their lanes add up to, and their standings as the entries they hold.
SHARDED: dict[str, Callable[[Iterable[dict[str, Any]]], list[dict[str, Any]]]] = {
    "score_counts": merged_by_board,
    STANDINGS: as_entries,
}
#: Admin actions on credit lots arrive over HTTP and are in no topic: a rebuild of credits
#: would drop them, so `apply` refuses while any exist.
CREDITS_ADMIN_KINDS = ("grant", "revocation")


class RebuildError(RuntimeError):
    pass


def consumed_topics(service: str) -> list[str]:
    """The topics the service's `@consume` entrypoints read (logical names)."""
    from services.runtime.kafka import consumed_topics as of_service

    try:
        return of_service(service)
    except LookupError as error:
        raise RebuildError(str(error)) from None


@dataclass
class Rebuild:
    """One rebuild of `service` into `<live database>__rebuild_<stamp>`."""

    config: dict[str, Any]
    service: str
    stamp: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y%m%d%H%M%S"))

    def __post_init__(self) -> None:
        if self.service not in REBUILDABLE:
            raise RebuildError(
                f"{self.service} is not a derived view; rebuildable: {', '.join(REBUILDABLE)}"
            )
        self.live: RuntimeSettings = settings_from_config(self.config)
        self.suffix = f"__rebuild_{self.stamp}"
        self.client: MongoClient = MongoClient(
            self.live.mongodb_uri, tz_aware=True, w="majority", journal=True
        )

    @property
    def live_db(self) -> str:
        return self.live.database_name(self.service)

    @property
    def rebuild_db(self) -> str:
        return self.live_db + self.suffix

    @property
    def group(self) -> str:
        return self.live.consumer_group(self.service) + self.suffix

    def close(self) -> None:
        self.client.close()

    # --- replaying -------------------------------------------------------------------

    def run(self, timeout: float = 1800.0, log: Path | None = None) -> float:
        """Replays every topic of the service into the rebuild database; returns seconds."""
        started = time.monotonic()
        self.client.drop_database(self.rebuild_db)
        live, fresh = self.client[self.live_db], self.client[self.rebuild_db]
        for name in CONFIGURATION.get(self.service, ()):
            docs = list(live[name].find())
            if docs:
                fresh[name].insert_many(docs)
        targets = self._end_offsets()
        config = json.loads(json.dumps(self.config, default=str))
        config["RUNTIME"] = {
            **(config.get("RUNTIME") or {}),
            "database_suffix": self.suffix,
            "consumer_group_suffix": self.suffix,
            "outbox_relay_enabled": False,
        }
        config["WEB_SERVER_ADDRESS"] = f"127.0.0.1:{_free_port()}"
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "rebuild.yml"
            path.write_text(yaml.safe_dump(config))
            log_path = log or Path(scratch) / "rebuild.log"
            with log_path.open("ab") as out:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "nameko",
                        "run",
                        "--config",
                        str(path),
                        f"services.{self.service}.service",
                    ],
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            try:
                self._wait_caught_up(targets, process, timeout, log_path)
            finally:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(30)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
        self._forget_group()
        return time.monotonic() - started

    def _end_offsets(self) -> dict[Any, int]:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.live.kafka_bootstrap_servers.split(","))
        try:
            tps = []
            for topic in consumed_topics(self.service):
                name = self.live.topic(topic)
                tps += [TopicPartition(name, p) for p in consumer.partitions_for_topic(name) or ()]
            return {tp: end for tp, end in consumer.end_offsets(tps).items() if end > 0}
        finally:
            consumer.close()

    def _wait_caught_up(
        self, targets: dict[Any, int], process: subprocess.Popen[bytes], timeout: float, log: Path
    ) -> None:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.live.kafka_bootstrap_servers.split(","))
        deadline = time.monotonic() + timeout
        try:
            while True:
                if process.poll() is not None:
                    tail = log.read_text(errors="replace")[-2000:]
                    code = process.returncode
                    raise RebuildError(f"the rebuild process exited ({code}):\n{tail}")
                committed = admin.list_group_offsets(self.group).get(self.group, {})
                behind = {
                    tp: end
                    for tp, end in targets.items()
                    if (committed.get(tp).offset if committed.get(tp) else -1) < end
                }
                if not behind:
                    return
                if time.monotonic() > deadline:
                    raise RebuildError(f"the rebuild did not catch up in {timeout:.0f}s")
                time.sleep(0.5)
        finally:
            admin.close()

    def _forget_group(self) -> None:
        from kafka import KafkaAdminClient

        with contextlib.suppress(Exception):
            admin = KafkaAdminClient(bootstrap_servers=self.live.kafka_bootstrap_servers.split(","))
            try:
                admin.delete_groups([self.group])
            finally:
                admin.close()

    # --- comparing and applying ----------------------------------------------------------

    def derived_collections(self, db_name: str) -> list[str]:
        keep = set(CONFIGURATION.get(self.service, ())) | set(PLUMBING)
        return sorted(n for n in self.client[db_name].list_collection_names() if n not in keep)

    def differences(self) -> dict[str, dict[str, int]]:
        """Per derived collection that differs: documents only live, only rebuilt."""
        found = {}
        names = set(self.derived_collections(self.live_db))
        names |= set(self.derived_collections(self.rebuild_db))
        for name in sorted(names - set(NOT_COMPARED)):
            live = _documents(self.client[self.live_db][name])
            rebuilt = _documents(self.client[self.rebuild_db][name])
            if live != rebuilt:
                found[name] = {
                    "only_live": sum((live - rebuilt).values()),
                    "only_rebuilt": sum((rebuilt - live).values()),
                }
        return found

    def apply(self) -> dict[str, int]:
        """Replaces the live derived state and handled-event ids with the rebuilt ones.

        Run it with the service stopped: nothing else may write these collections meanwhile.
        """
        if self.service == "credits":
            admin = self.client[self.live_db]["history"].count_documents(
                {"kind": {"$in": list(CREDITS_ADMIN_KINDS)}}
            )
            if admin:
                raise RebuildError(
                    f"credits holds {admin} admin grants or revocations, which are in no "
                    "topic: a rebuild would drop them"
                )
        live, fresh = self.client[self.live_db], self.client[self.rebuild_db]
        replaced = {}
        names = set(self.derived_collections(self.live_db))
        names |= set(self.derived_collections(self.rebuild_db))
        for name in sorted(names):
            docs = list(fresh[name].find())
            live[name].delete_many({})
            for start in range(0, len(docs), 1000):
                live[name].insert_many(docs[start : start + 1000], ordered=False)
            replaced[name] = len(docs)
        return replaced

    def discard(self) -> None:
        self.client.drop_database(self.rebuild_db)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _canonical(v)
            for k, v in sorted(value.items())
            if k not in WALL_CLOCK_FIELDS
            and k not in PLACEMENT_FIELDS
            and k not in WRITE_COUNT_FIELDS
        }
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def _documents(collection: Any) -> Counter[str]:
    docs = collection.find()
    if collection.name in SHARDED:
        docs = SHARDED[collection.name](docs)
    return Counter(json.dumps(_canonical(doc), sort_keys=True) for doc in docs)
