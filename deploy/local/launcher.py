"""`make run`: the whole system on this machine, in the foreground until Ctrl-C or SIGTERM.

Starts the broker, the database and Prometheus (each only when the configuration points at
the local default), creates the topics, starts every service that exists, restarts a service
that crashes, and on Ctrl-C stops everything it started: services first, then Prometheus, the
database and the broker. Data under `.data/` survives a restart (the broker keeps topics in
memory only: they are created again at each start).
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from kafka.errors import KafkaError

from deploy.local.servers import (
    LOOPBACK,
    Broker,
    Database,
    ManagedProcess,
    Prometheus,
    ServerError,
    http_ok,
    port_is_open,
    stop_all,
)
from deploy.local.supervision import Supervisor
from deploy.local.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_MONGODB_URI = "mongodb://127.0.0.1:27017"
#: The leaderboards' database, on a server of its own: the local MongoDB-protocol server runs
#: its engine on one core, and the leaderboards write about half of what the services
#: write, so one server for all left the second core idle while the database was the
#: bottleneck (the bench measured 143 events/s with one, 231 with two).
DEFAULT_LEADERBOARDS_MONGODB_URI = "mongodb://127.0.0.1:27018"
DEFAULT_PROMETHEUS_PORT = 9090
DEFAULT_GATEWAY_PORT = 8080
SERVICE_PORTS: dict[str, int] = {
    "progress": 8101,
    "points": 8102,
    "leaderboards": 8103,
    "credits": 8104,
    "badges": 8105,
}
NAMEKO_CONFIG = Path("deploy") / "config.yml"  # relative to ROOT, the services' working dir
SERVICE_READY_TIMEOUT = 60.0  # the first start imports a lot on a busy 2-core machine
SERVER_READY_TIMEOUT = 30.0
TICK_SECONDS = 0.25


class StopRequested(BaseException):
    """Ctrl-C or SIGTERM: unwinds whatever the launcher is doing, like KeyboardInterrupt."""


# Configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    data: Path

    @property
    def logs(self) -> Path:
        return self.data / "logs"

    @property
    def mongo(self) -> Path:
        return self.data / "mongo"

    @property
    def leaderboards_mongo(self) -> Path:
        return self.data / "mongo-leaderboards"

    @property
    def prometheus(self) -> Path:
        return self.data / "prometheus"

    @property
    def jwt_secret(self) -> Path:
        return self.data / "jwt-secret"


@dataclass(frozen=True)
class Settings:
    bootstrap: str
    mongodb_uri: str
    leaderboards_mongodb_uri: str
    prometheus_port: int
    gateway_port: int
    name_prefix: str
    #: Ports of the servers to start here; None: the configuration points elsewhere.
    broker_port: int | None
    database_port: int | None
    leaderboards_database_port: int | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP
        mongodb_uri = env.get("MONGODB_URI") or DEFAULT_MONGODB_URI
        database_port = local_database_port(mongodb_uri, DEFAULT_MONGODB_URI)
        # Unset: its own local server beside a local database; else the one database.
        leaderboards_uri = env.get("LEADERBOARDS_MONGODB_URI") or (
            mongodb_uri if database_port is None else DEFAULT_LEADERBOARDS_MONGODB_URI
        )
        return cls(
            bootstrap=bootstrap,
            mongodb_uri=mongodb_uri,
            leaderboards_mongodb_uri=leaderboards_uri,
            prometheus_port=_port(env, "PROMETHEUS_PORT", DEFAULT_PROMETHEUS_PORT),
            gateway_port=_port(env, "GATEWAY_PORT", DEFAULT_GATEWAY_PORT),
            name_prefix=env.get("NAME_PREFIX", ""),
            broker_port=local_broker_port(bootstrap),
            database_port=database_port,
            leaderboards_database_port=local_database_port(
                leaderboards_uri, DEFAULT_LEADERBOARDS_MONGODB_URI
            ),
        )


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name) or str(default)
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise SystemExit(f"{name}={value!r} is not a port number: give 1-65535")
    return int(value)


def local_broker_port(bootstrap: str) -> int | None:
    """The port to start a broker on, when the bootstrap servers are the local default; None
    when they point at another broker (which is then used as it is)."""
    if bootstrap.strip() != DEFAULT_BOOTSTRAP:
        return None
    return int(DEFAULT_BOOTSTRAP.rsplit(":", 1)[1])


def local_database_port(uri: str, default: str) -> int | None:
    """The port to start a database on, when the URI is the local `default` (a trailing
    slash aside); None for any other URI."""
    if uri.strip().rstrip("/") != default:
        return None
    return urlsplit(default).port


# Services ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int

    @property
    def module(self) -> str:
        return f"services.{self.name}.service"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def service_ports(gateway_port: int) -> dict[str, int]:
    return {**SERVICE_PORTS, "gateway": gateway_port}


def discover_services(root: Path, ports: Mapping[str, int]) -> list[ServiceSpec]:
    """The known services whose `services/<name>/service.py` exists, in the order given."""
    return [
        ServiceSpec(name, port)
        for name, port in ports.items()
        if (root / "services" / name / "service.py").is_file()
    ]


class ServiceProcess(ManagedProcess):
    """One service under `nameko run`, ready when its /readyz answers 200."""

    def __init__(
        self, spec: ServiceSpec, log_dir: Path, root: Path, env: Mapping[str, str]
    ) -> None:
        super().__init__(log_dir, cwd=root)
        self.spec = spec
        self.name = spec.name
        self._env = dict(env)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "nameko",
            "run",
            "--config",
            str(NAMEKO_CONFIG),
            self.spec.module,
        ]

    def environment(self) -> dict[str, str]:
        return {
            **self._env,
            "WEB_SERVER_ADDRESS": self.spec.address,
            "PYTHONUNBUFFERED": "1",  # the log file shows what happened just before a crash
        }

    def is_ready(self) -> bool:
        return http_ok(f"{self.spec.url}/readyz")


def service_environment(
    base: Mapping[str, str], settings: Settings, mongodb_uri: str, jwt_secret: str
) -> dict[str, str]:
    """What every service is started with: this environment plus the effective addresses."""
    return {
        **base,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap,
        "MONGODB_URI": mongodb_uri,
        "JWT_SECRET": jwt_secret,
    }


class Readiness:
    """Which services have answered /readyz since they were (re)started, reporting each one
    the first time it does.

    A service that exits before it is ready counts as settled: the supervisor restarts it with
    backoff, and waiting for it would only delay everything else.
    """

    def __init__(
        self,
        processes: Iterable[ManagedProcess],
        clock: Callable[[], float] = time.monotonic,
        report: Callable[[str], None] = print,
    ) -> None:
        self.clock = clock
        self.report = report
        self.pending: dict[str, tuple[ManagedProcess, float]] = {}
        self.crashed: dict[str, int | None] = {}  # exit status of the first crash
        for process in processes:
            self.expect(process)

    def expect(self, process: ManagedProcess) -> None:
        """(Re)started: not ready until its /readyz says so."""
        self.pending[process.name] = (process, self.clock())

    def poll(self) -> None:
        for name, (process, since) in list(self.pending.items()):
            if not process.is_running:
                self.crashed.setdefault(name, process.returncode)
            elif process.is_ready():
                del self.pending[name]
                self.crashed.pop(name, None)
                self.report(f"{name} ready ({self.clock() - since:.1f}s)")

    @property
    def settled(self) -> bool:
        """Every service is ready or has crashed at least once."""
        return all(name in self.crashed for name in self.pending)

    def status(self, name: str) -> str:
        if name not in self.pending:
            return "ready"
        if name in self.crashed:
            return f"crashed (status {self.crashed[name]}), restarting with backoff"
        return "not ready yet"


# Secrets, topics, Prometheus config ----------------------------------------------------------


def jwt_secret(env: Mapping[str, str], path: Path) -> tuple[str, Path | None]:
    """JWT_SECRET from the environment, else the one kept in `path` (made on first use,
    readable by this user only, so tokens stay valid across restarts). Returns the secret
    and the file it came from (None: from the environment)."""
    if env.get("JWT_SECRET"):
        return env["JWT_SECRET"], None
    if path.is_file():
        secret = path.read_text().strip()
        if secret:
            os.chmod(path, 0o600)
            return secret, path
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # Created with its final mode: never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secret + "\n")
    return secret, path


def topic_names(prefix: str = "") -> list[str] | None:
    """Every topic the services use (with the name prefix); None when the contracts do not
    define them yet."""
    try:
        from contracts.topics import ALL_TOPICS
    except ImportError as error:
        say(
            f"topics not created: contracts.topics.ALL_TOPICS is not available ({error}); "
            "the broker will create topics on first use, with its default partition count"
        )
        return None
    return [prefix + name for name in ALL_TOPICS]


def prometheus_config(root: Path, generated: Path, ports: Mapping[str, int]) -> Path:
    """The checked-in scrape config when there is one, else a minimal one written to
    `generated` (one job per service, named after it)."""
    checked_in = root / "deploy" / "prometheus" / "prometheus.yml"
    if checked_in.is_file():
        return checked_in
    generated.parent.mkdir(parents=True, exist_ok=True)
    generated.write_text(minimal_prometheus_config(ports))
    return generated


def minimal_prometheus_config(ports: Mapping[str, int]) -> str:
    lines = ["global:", "  scrape_interval: 15s", "scrape_configs:"]
    for name, port in ports.items():
        lines += [
            f"  - job_name: {name}",
            "    metrics_path: /metrics",
            "    static_configs:",
            f'      - targets: ["{LOOPBACK}:{port}"]',
        ]
    return "\n".join(lines) + "\n"


# Output --------------------------------------------------------------------------------------


def first_steps(gateway_url: str) -> str:
    """What a new user runs next: a token, a first call, the API description, demo data."""
    return f"""
First steps (in another terminal, from this directory):
  TOKEN=$(.venv/bin/python -m services.gateway.token --role admin --sub alice)
  curl -H "Authorization: Bearer $TOKEN" {gateway_url}/v1/leaderboards/weekly
  curl {gateway_url}/openapi.json          # the whole API, no token needed
  make demo                                 # seed 3 teams, 30 agents, 3 weeks of history
"""


def say(message: str) -> None:
    print(f"[launcher] {message}", flush=True)


def shown(path: Path) -> str:
    """A path relative to the working directory when it is under it (shorter to read)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def table(rows: list[tuple[str, str, str]]) -> str:
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(
        f"  {name:<{width[0]}}  {where:<{width[1]}}  {note}".rstrip() for name, where, note in rows
    )


# Running -------------------------------------------------------------------------------------


class StopSignals:
    """Ctrl-C and SIGTERM: the first unwinds whatever the launcher is doing (StopRequested);
    once stopping, later ones only say so, so that the stop itself is not cut short."""

    def __init__(self) -> None:
        self.stopping = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            say("already stopping: waiting for the children to exit (each is killed after 10s)")
            return
        self.stopping = True
        raise StopRequested(signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def require_free(port: int, what: str, variable: str) -> None:
    if port_is_open(port):
        raise ServerError(
            f"port {port} is in use, so the local {what} cannot start there: stop whatever "
            f"listens on it, or set {variable} to use that server instead"
        )


class Launcher:
    """Starts and stops the stack; `servers` and `services` hold what it started."""

    def __init__(self, env: Mapping[str, str], root: Path = ROOT) -> None:
        self.env = dict(env)
        self.root = root
        self.paths = Paths(root / ".data")
        self.settings = Settings.from_env(env)
        self.servers: list[ManagedProcess] = []  # broker, databases, prometheus
        self.leaderboards_mongodb_uri = self.settings.leaderboards_mongodb_uri
        self.services: list[ServiceProcess] = []
        self.rows: list[tuple[str, str, str]] = []
        self.supervisor = Supervisor(report=say)
        self.readiness = Readiness([], report=say)
        self.reported_exits: list[ManagedProcess] = []

    def run(self) -> None:
        self.start_broker()
        mongodb_uri = self.start_database()
        self.leaderboards_mongodb_uri = self.start_leaderboards_database()
        self.start_prometheus()
        self.create_topics()
        secret, secret_file = jwt_secret(self.env, self.paths.jwt_secret)
        self.start_services(service_environment(self.env, self.settings, mongodb_uri, secret))
        if secret_file is not None:
            self.rows.append(("jwt secret", shown(secret_file), "used as JWT_SECRET is unset"))
        self.rows.append(("logs", shown(self.paths.logs), ""))
        print("\nSkillquest is running (Ctrl-C stops everything):\n" + table(self.rows), flush=True)
        print(first_steps(f"http://127.0.0.1:{self.settings.gateway_port}"), flush=True)
        self.supervise()

    def create_topics(self) -> None:
        names = topic_names(self.settings.name_prefix)
        if not names:
            return
        try:
            created = ensure_topics(self.settings.bootstrap, names)
        except KafkaError as error:
            raise ServerError(
                f"could not create the topics on {self.settings.bootstrap}: {error!r}"
            ) from error
        say(f"topics: {len(names)} present ({len(created)} created now)")

    def start_database(self) -> str:
        return self._database(
            "database", self.settings.mongodb_uri, self.settings.database_port, self.paths.mongo
        )

    def start_leaderboards_database(self) -> str:
        return self._database(
            "database-leaderboards",
            self.settings.leaderboards_mongodb_uri,
            self.settings.leaderboards_database_port,
            self.paths.leaderboards_mongo,
        )

    def _database(self, name: str, uri: str, port: int | None, data: Path) -> str:
        """Starts a local database server on `port`, or uses the one `uri` names (None)."""
        variable = "MONGODB_URI" if name == "database" else "LEADERBOARDS_MONGODB_URI"
        if port is None:
            self.rows.append((name, uri, f"external ({variable})"))
            return uri
        require_free(port, name, variable)
        database = Database(port, data, self.paths.logs)
        database.name = name  # its log and config files
        self._start_server(database)
        self.rows.append((name, database.uri, f"data in {shown(data)}"))
        return database.uri

    def start_broker(self) -> None:
        port = self.settings.broker_port
        if port is None:
            self.rows.append(("broker", self.settings.bootstrap, "external"))
            return
        require_free(port, "broker", "KAFKA_BOOTSTRAP_SERVERS")
        broker = Broker(port, self.paths.logs)
        self._start_server(broker)
        self.rows.append(("broker", broker.bootstrap, "topics in memory only"))

    def start_prometheus(self) -> None:
        port = self.settings.prometheus_port
        if not Prometheus.available():
            say("prometheus is not installed: running without it (`make install` adds it)")
            return
        if port_is_open(port):
            say(f"port {port} is in use: running without Prometheus (set PROMETHEUS_PORT)")
            return
        ports = service_ports(self.settings.gateway_port)
        config = prometheus_config(self.root, self.paths.data / "prometheus.generated.yml", ports)
        prometheus = Prometheus(port, config, self.paths.prometheus, self.paths.logs)
        self._start_server(prometheus)
        self.rows.append(("prometheus", prometheus.url, f"config {shown(config)}"))

    def _start_server(self, server: ManagedProcess) -> None:
        self.servers.append(server)  # before start: a stop request mid-start still stops it
        started = time.monotonic()
        server.start().wait_ready(SERVER_READY_TIMEOUT)
        say(f"{server.name} ready in {time.monotonic() - started:.1f}s")

    def start_services(self, env: Mapping[str, str]) -> None:
        specs = discover_services(self.root, service_ports(self.settings.gateway_port))
        if not specs:
            say("no services yet (no services/<name>/service.py): servers only")
            return
        for spec in specs:
            process = ServiceProcess(
                spec, self.paths.logs, self.root, self.environment_of(spec.name, env)
            )
            self.services.append(process)
            process.start()
        self.supervisor.watch(self.services)
        self.readiness = Readiness(self.services, report=say)
        say(f"started {', '.join(s.name for s in specs)}; waiting for their /readyz")
        deadline = time.monotonic() + SERVICE_READY_TIMEOUT
        while not self.readiness.settled and time.monotonic() < deadline:
            self.watch_once()
        for process in self.services:
            note = self.readiness.status(process.name)
            if note != "ready":
                note += f": see {shown(process.log_file)}"
            self.rows.append((process.name, process.spec.url, note))

    def environment_of(self, service: str, env: Mapping[str, str]) -> dict[str, str]:
        """The shared environment, with the leaderboards' own database for them."""
        if service == "leaderboards":
            return {**env, "MONGODB_URI": self.leaderboards_mongodb_uri}
        return dict(env)

    def supervise(self) -> None:
        """Until a stop signal."""
        while True:
            self.watch_once()

    def watch_once(self) -> None:
        """One round: stop if the broker or the database has gone (the services cannot work
        without them), restart crashed services, report services that became ready."""
        for server in self.servers:
            if server.is_running:
                continue
            if not isinstance(server, Prometheus):
                raise ServerError(
                    f"the {server.name} exited (status {server.returncode}): see "
                    f"{shown(server.log_file)}"
                )
            if server not in self.reported_exits:
                self.reported_exits.append(server)
                say(f"prometheus exited: see {shown(server.log_file)}; the services run on")
        for name in self.supervisor.tick():
            self.readiness.expect(self.service(name))
        self.readiness.poll()
        time.sleep(TICK_SECONDS)

    def service(self, name: str) -> ServiceProcess:
        return next(process for process in self.services if process.name == name)

    def stop(self) -> None:
        """Services first (they flush and commit), then the servers together (each
        database server takes seconds to close its storage, and nothing orders them)."""
        if self.services:
            say("stopping services")
            stop_all(self.services)
        servers = list(reversed(self.servers))
        running = [server.name for server in servers if server.is_running]
        if running:
            say(f"stopping {', '.join(running)}")
        stop_all(servers)


def main() -> int:
    launcher = Launcher(os.environ)
    signals = StopSignals()
    status = 0
    with signals.installed():
        try:
            launcher.run()
        except StopRequested:
            print(flush=True)
            say("stop requested")
        except ServerError as error:
            say(f"error: {error}")
            status = 1
        finally:
            signals.stopping = True
            launcher.stop()
    say("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
