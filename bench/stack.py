"""The shared stack fixture: a fresh broker and database on free ports, the topics, and every
service as its own `nameko run` process (as `make run` starts them), all stopped at the end.

Separate processes, not in-process containers: that is how the services are deployed, each
has its own interpreter (and GIL), and the two cores are shared the way production shares
them. Measurements read the servers directly (lag, outbox backlog, resident memory).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pymongo import MongoClient

from bench.config import ROOT, WORK_DIR, BenchConfig
from deploy.local.launcher import ServiceProcess, ServiceSpec
from deploy.local.servers import (
    Broker,
    Database,
    ManagedProcess,
    free_port,
    start_on_free_port,
    stop_all,
)
from deploy.local.topics import ensure_topics
from services.runtime.settings import RuntimeSettings

SERVICES = ("progress", "points", "leaderboards", "credits", "badges", "gateway")
#: Database servers, and the services whose databases each one holds (the first also holds
#: the raw ceilings' scratch database). The local MongoDB-protocol server runs its engine
#: on one core, so one server for every service leaves the machine's second core mostly
#: idle while the database is the bottleneck. The leaderboards write about half of what the
#: services write (see the bench's database time by statement), so they get a server of
#: their own: as production may give each service's database its own replica set, every
#: service reads its own `MONGODB_URI` (ARCHITECTURE §1: no service reads another's data).
DATABASE_SERVERS: dict[str, tuple[str, ...]] = {
    "database": ("progress", "points", "credits", "badges", "gateway"),
    "database-leaderboards": ("leaderboards",),
}
#: Only the join of a new consumer group waits for this (half of it): the local-stack value.
SESSION_TIMEOUT_MS = "6000"
READY_TIMEOUT = 120.0
#: When the bench counts the documents written (BENCH_WRITES=1), the database servers keep
#: this many oplog entries (the local server's default is 100,000), so that what a phase
#: wrote can still be counted at its end (writes.py): the full pipeline writes about
#: 350,000 documents on the first server. Measured with 4,000 pipeline agents, three runs
#: each: the servers' CPU per event was the same with 100,000 (1.22 to 1.44 ms on the
#: first server) and with 1,000,000 (1.27 to 1.31).
OPLOG_MAX_ENTRIES = 1_000_000


def peak_rss_mb(pid: int) -> dict[str, float]:
    """Peak (VmHWM) and current (VmRSS) resident memory of a process, in MB."""
    values: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values["peak" if key == "VmHWM" else "now"] = int(rest.split()[0]) / 1024
    return values


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each process used between two readings of `Stack.cpu_with_bench()`."""
    return {name: round(after[name] - before.get(name, 0.0), 1) for name in after}


def cpu_ms_per_event(spent: dict[str, float], events: int) -> float | None:
    """The whole stack's CPU (every process of `spent`, the bench's own included) per event
    the run published, in milliseconds; what the services derive from an event is part of
    its cost. Against the machine's two cores it says how far a rate is from saturating
    them: the steady stream's events cost more than the pipeline's (smaller batches, fewer
    changes folded together), so half the pipeline's rate can need all of the machine.
    None for a run that published nothing (the table shows "-")."""
    if events <= 0:
        return None
    return round(sum(spent.values()) * 1000 / events, 2)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its descendants so far, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{current}/stat").read_text()
            fields = stat.rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
    return total


def _client(uri: str) -> MongoClient:
    return MongoClient(uri, tz_aware=True, w="majority", journal=True)


@dataclass
class Stack:
    config: BenchConfig
    work_dir: Path = WORK_DIR
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    broker: Broker | None = None
    databases: dict[str, Database] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    settings: RuntimeSettings = field(default_factory=RuntimeSettings)

    @property
    def logs(self) -> Path:
        return self.work_dir / "logs"

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap

    @property
    def mongodb_uri(self) -> str:
        """The first database server's URI (the raw ceilings are measured on it)."""
        return next(iter(self.databases.values())).uri

    def database_of(self, service: str) -> Database:
        """The server that holds the service's database."""
        for server, services in DATABASE_SERVERS.items():
            if service in services:
                return self.databases[server]
        raise KeyError(service)

    def url(self, service: str) -> str:
        return self.services[service].spec.url

    def group(self, service: str) -> str:
        return self.settings.consumer_group(service)

    def database_name(self, service: str) -> str:
        return self.settings.database_name(service)

    def mongo(self, service: str) -> MongoClient:
        """A client of the server that holds the service's database."""
        return _client(self.database_of(service).uri)

    def database_client(self, server: str) -> MongoClient:
        """A client of one database server, by its name in DATABASE_SERVERS (close it)."""
        return _client(self.databases[server].uri)

    def database_clients(self) -> list[MongoClient]:
        """A client of each database server (close them after use)."""
        return [self.database_client(name) for name in self.databases]

    # --- lifecycle ---------------------------------------------------------------------

    def start_servers(self) -> None:
        data = self.work_dir / "db"
        shutil.rmtree(data, ignore_errors=True)  # a fresh server: single writes slow with churn
        self.logs.mkdir(parents=True, exist_ok=True)
        self.broker = start_on_free_port(lambda port: Broker(port, self.logs))
        for name in DATABASE_SERVERS:
            self.databases[name] = start_on_free_port(partial(self._database, name))
        self.settings = RuntimeSettings(
            kafka_bootstrap_servers=self.bootstrap, mongodb_uri=self.mongodb_uri
        )

    def _database(self, name: str, port: int) -> Database:
        oplog = OPLOG_MAX_ENTRIES if self.config.count_writes else None
        database = Database(port, self.work_dir / "db" / name, self.logs, oplog)
        database.name = name  # its log and config files, and its row in the report
        return database

    def create_topics(self, names: list[str]) -> None:
        ensure_topics(self.bootstrap, names)

    def start_services(self) -> None:
        ports = {name: free_port() for name in SERVICES}
        env = self._service_environment(ports)
        for name in SERVICES:
            process = ServiceProcess(
                ServiceSpec(name, ports[name]), self.logs, ROOT, self._environment_of(name, env)
            )
            self.services[name] = process
            process.start()
        deadline = time.monotonic() + READY_TIMEOUT
        for process in self.services.values():
            process.wait_ready(max(1.0, deadline - time.monotonic()))

    def _service_environment(self, ports: Mapping[str, int]) -> dict[str, str]:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "JWT_SECRET": self.secret,
            "NAME_PREFIX": "",
            "TIME_ZONE": self.config.time_zone,
            "CONSUMER_SESSION_TIMEOUT_MS": SESSION_TIMEOUT_MS,
        }
        for name, port in ports.items():
            if name != "gateway":
                env[f"{name.upper()}_URL"] = f"http://127.0.0.1:{port}"
        return env

    def _environment_of(self, service: str, shared: Mapping[str, str]) -> dict[str, str]:
        return {**shared, "MONGODB_URI": self.database_of(service).uri}

    def processes(self) -> Iterator[ManagedProcess]:
        yield from self.services.values()
        yield from self.databases.values()
        if self.broker is not None:
            yield self.broker

    def memory(self) -> dict[str, dict[str, float]]:
        return {
            process.name: peak_rss_mb(process.pid)
            for process in self.processes()
            if process.pid is not None and process.is_running
        }

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each process (with its children)."""
        return {
            process.name: cpu_seconds(process.pid)
            for process in self.processes()
            if process.pid is not None and process.is_running
        }

    def cpu_with_bench(self) -> dict[str, float]:
        """`cpu()` and this process's own CPU seconds (the bench's clients), as "bench"."""
        return self.cpu() | {"bench": time.process_time()}

    def stop(self) -> None:
        # The services first (they finish and commit what is in flight), then the servers
        # together: each database server takes seconds to close its storage.
        stop_all(list(self.services.values()))
        stop_all([server for server in [*self.databases.values(), self.broker] if server])

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
