"""The launcher's decisions without starting anything: what to start, how a crashed service
is restarted (backoff), the order of the stop, the JWT secret file."""

from __future__ import annotations

import signal
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.local.launcher import (
    Launcher,
    Readiness,
    ServiceProcess,
    ServiceSpec,
    Settings,
    StopRequested,
    StopSignals,
    discover_services,
    jwt_secret,
    minimal_prometheus_config,
    prometheus_config,
    service_environment,
    service_ports,
)
from deploy.local.supervision import Backoff, Supervisor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeChild:
    """A child process as the supervisor and the stop see it."""

    name: str
    running: bool = True
    fail_start: bool = False
    starts: int = 0
    log: list[str] = field(default_factory=list)
    ready: bool = True

    @property
    def is_running(self) -> bool:
        return self.running

    @property
    def returncode(self) -> int | None:
        return None if self.running else 1

    def start(self) -> FakeChild:
        if self.fail_start:
            raise OSError("exec failed")
        self.starts += 1
        self.running = True
        return self

    def crash(self) -> None:
        self.running = False

    def is_ready(self) -> bool:
        return self.ready

    def terminate(self) -> None:
        self.log.append(f"terminate {self.name}")

    def stop(self, timeout: float = 10.0) -> int:
        self.log.append(f"stop {self.name}")
        self.running = False
        return 0


# Backoff and supervision ---------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_and_starts_over_after_reset() -> None:
    backoff = Backoff(initial=1, factor=2, cap=30)
    assert [backoff.next_delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.next_delay() == 1


def supervised(*children: FakeChild) -> tuple[Supervisor, Clock, list[str]]:
    clock, reports = Clock(), list[str]()
    supervisor = Supervisor(stable_after=60, clock=clock, report=reports.append)
    supervisor.watch(children)
    return supervisor, clock, reports


def test_a_running_service_is_left_alone() -> None:
    child = FakeChild("points")
    supervisor, clock, _ = supervised(child)
    for _ in range(5):
        clock.advance(10)
        assert supervisor.tick() == []
    assert child.starts == 0


def test_a_crashed_service_is_restarted_after_its_backoff_delay() -> None:
    child = FakeChild("points")
    supervisor, clock, reports = supervised(child)
    clock.advance(5)
    child.crash()

    assert supervisor.tick() == []  # noticed: restart scheduled 1 s from now
    assert "points exited" in reports[-1]
    clock.advance(0.9)
    assert supervisor.tick() == []
    clock.advance(0.1)
    assert supervisor.tick() == ["points"]
    assert child.starts == 1 and child.is_running


def test_repeated_crashes_back_off_exponentially_to_the_cap() -> None:
    child = FakeChild("badges")
    supervisor, clock, _ = supervised(child)
    delays = []
    for _ in range(7):
        child.crash()
        supervisor.tick()
        (restart_at,) = supervisor.waiting().values()
        delays.append(restart_at - clock.now)
        clock.now = restart_at
        assert supervisor.tick() == ["badges"]
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert supervisor.restarts("badges") == 7


def test_a_crash_after_a_stable_run_restarts_quickly_again() -> None:
    child = FakeChild("credits")
    supervisor, clock, _ = supervised(child)
    for _ in range(4):  # backoff climbs to 8 s
        child.crash()
        supervisor.tick()
        clock.now = supervisor.waiting()["credits"]
        supervisor.tick()

    clock.advance(61)  # then it ran fine for over a minute
    child.crash()
    supervisor.tick()
    assert supervisor.waiting()["credits"] - clock.now == 1


def test_a_failed_restart_is_retried_with_a_longer_delay() -> None:
    child = FakeChild("progress")
    supervisor, clock, reports = supervised(child)
    child.crash()
    supervisor.tick()
    child.fail_start = True
    clock.now = supervisor.waiting()["progress"]

    assert supervisor.tick() == []  # the error is reported, not raised
    assert "could not be restarted" in reports[-1]
    assert supervisor.waiting()["progress"] - clock.now == 2

    child.fail_start = False
    clock.advance(2)
    assert supervisor.tick() == ["progress"]


def test_each_service_has_its_own_backoff() -> None:
    points, badges = FakeChild("points"), FakeChild("badges")
    supervisor, clock, _ = supervised(points, badges)
    for _ in range(3):
        points.crash()
        supervisor.tick()
        clock.now = supervisor.waiting()["points"]
        supervisor.tick()
    badges.crash()
    supervisor.tick()
    assert supervisor.waiting()["badges"] - clock.now == 1


# Stopping ------------------------------------------------------------------------------------


def test_stop_takes_services_down_first_then_prometheus_database_broker(tmp_path: Path):
    log: list[str] = []
    stack = Launcher({}, root=tmp_path)
    servers: list[Any] = [FakeChild(name, log=log) for name in ("broker", "database", "prometheus")]
    services: list[Any] = [FakeChild(name, log=log) for name in ("points", "gateway")]
    stack.servers, stack.services = servers, services

    stack.stop()

    stops = [entry for entry in log if entry.startswith("stop")]
    assert stops == [
        "stop points",
        "stop gateway",
        "stop prometheus",
        "stop database",
        "stop broker",
    ]
    # Services are signalled together, before any is waited for.
    assert log[:2] == ["terminate points", "terminate gateway"]


def test_the_first_stop_signal_unwinds_and_later_ones_do_not() -> None:
    signals = StopSignals()
    with pytest.raises(StopRequested):
        signals.handle(signal.SIGINT, None)
    signals.handle(signal.SIGTERM, None)  # while stopping: only a message


# What to start -------------------------------------------------------------------------------


def test_defaults_start_a_local_broker_and_database() -> None:
    settings = Settings.from_env({})
    assert settings.broker_port == 9092
    assert settings.database_port == 27017
    assert settings.leaderboards_database_port == 27018
    assert settings.prometheus_port == 9090
    assert settings.gateway_port == 8080


def test_the_leaderboards_get_their_own_local_database_and_only_they() -> None:
    launcher = Launcher({}, Path("/nonexistent"))
    shared = {"MONGODB_URI": "mongodb://127.0.0.1:27017/?directConnection=true", "X": "1"}

    leaderboards = launcher.environment_of("leaderboards", shared)
    points = launcher.environment_of("points", shared)

    assert leaderboards == {**shared, "MONGODB_URI": "mongodb://127.0.0.1:27018"}
    assert points == shared


def test_an_external_database_holds_the_leaderboards_too_unless_they_are_given_one() -> None:
    external = "mongodb://db-1:27017/?replicaSet=rs0"
    settings = Settings.from_env({"MONGODB_URI": external})
    assert settings.leaderboards_mongodb_uri == external
    assert settings.leaderboards_database_port is None

    own = "mongodb://db-2:27017/?replicaSet=rs1"
    settings = Settings.from_env({"MONGODB_URI": external, "LEADERBOARDS_MONGODB_URI": own})
    assert settings.leaderboards_mongodb_uri == own
    assert settings.leaderboards_database_port is None


def test_servers_configured_elsewhere_are_used_not_started() -> None:
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092,kafka-2:9092",
            "MONGODB_URI": "mongodb://db-1:27017/?replicaSet=rs0",
        }
    )
    assert settings.broker_port is None
    assert settings.database_port is None
    assert settings.bootstrap == "kafka-1:9092,kafka-2:9092"


def test_a_port_that_is_not_a_number_is_refused_with_the_variable_named() -> None:
    with pytest.raises(SystemExit, match="GATEWAY_PORT"):
        Settings.from_env({"GATEWAY_PORT": "eighty"})


def test_only_services_with_a_service_module_are_started(tmp_path: Path) -> None:
    for name in ("points", "gateway"):
        (tmp_path / "services" / name).mkdir(parents=True)
        (tmp_path / "services" / name / "service.py").write_text("")
    (tmp_path / "services" / "badges").mkdir()  # rules only, no service yet

    specs = discover_services(tmp_path, service_ports(gateway_port=9999))

    assert specs == [ServiceSpec("points", 8102), ServiceSpec("gateway", 9999)]


def test_a_service_runs_under_nameko_with_its_address_and_the_shared_settings(tmp_path: Path):
    settings = Settings.from_env({"NAME_PREFIX": "dev."})
    env = service_environment(
        {"NAME_PREFIX": "dev.", "PATH": "/bin"},
        settings,
        mongodb_uri="mongodb://127.0.0.1:27017/?directConnection=true",
        jwt_secret="s3cret",
    )
    process = ServiceProcess(ServiceSpec("points", 8102), tmp_path, tmp_path, env)

    assert process.command()[1:] == [
        "-m",
        "nameko",
        "run",
        "--config",
        "deploy/config.yml",
        "services.points.service",
    ]
    child_env = process.environment()
    assert child_env["WEB_SERVER_ADDRESS"] == "127.0.0.1:8102"
    assert child_env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9092"
    assert child_env["MONGODB_URI"] == "mongodb://127.0.0.1:27017/?directConnection=true"
    assert child_env["JWT_SECRET"] == "s3cret"
    assert child_env["NAME_PREFIX"] == "dev."
    assert process.log_file == tmp_path / "points.log"


def test_readiness_reports_each_service_once_and_settles_on_ready_or_crashed() -> None:
    reports: list[str] = []
    ready, crashed, slow = FakeChild("points"), FakeChild("badges"), FakeChild("credits")
    slow.ready = False
    processes: list[Any] = [ready, crashed, slow]
    readiness = Readiness(processes, clock=Clock(), report=reports.append)

    crashed.crash()
    readiness.poll()
    readiness.poll()
    assert reports == ["points ready (0.0s)"]
    assert not readiness.settled  # credits is running and may still get ready
    assert readiness.status("points") == "ready"
    assert readiness.status("badges").startswith("crashed (status 1)")
    assert readiness.status("credits") == "not ready yet"

    slow.crash()
    readiness.poll()
    assert readiness.settled


def test_a_crashed_service_that_comes_back_is_reported_ready() -> None:
    reports: list[str] = []
    child = FakeChild("badges")
    readiness = Readiness([child], clock=Clock(), report=reports.append)  # type: ignore[list-item]
    child.crash()
    readiness.poll()
    child.start()  # the supervisor restarted it
    readiness.poll()
    assert readiness.status("badges") == "ready"
    assert reports == ["badges ready (0.0s)"]


def test_a_restarted_service_is_reported_ready_again() -> None:
    reports: list[str] = []
    clock = Clock()
    child = FakeChild("points")
    readiness = Readiness([child], clock=clock, report=reports.append)  # type: ignore[list-item]
    readiness.poll()

    child.crash()
    clock.advance(30)
    child.start()
    readiness.expect(child)  # type: ignore[arg-type]
    assert readiness.status("points") == "not ready yet"
    clock.advance(2.5)
    readiness.poll()
    assert reports == ["points ready (0.0s)", "points ready (2.5s)"]


# JWT secret and Prometheus config ------------------------------------------------------------


def test_the_jwt_secret_from_the_environment_wins(tmp_path: Path) -> None:
    assert jwt_secret({"JWT_SECRET": "given"}, tmp_path / "jwt-secret") == ("given", None)
    assert not (tmp_path / "jwt-secret").exists()


def test_a_generated_jwt_secret_is_private_and_kept_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / ".data" / "jwt-secret"
    secret, where = jwt_secret({}, path)

    assert where == path and len(secret) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert jwt_secret({}, path) == (secret, path)


def test_an_empty_secret_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "jwt-secret"
    path.write_text("\n")
    secret, _ = jwt_secret({}, path)
    assert secret and path.read_text().strip() == secret


def test_the_generated_prometheus_config_scrapes_every_service(tmp_path: Path) -> None:
    ports = service_ports(gateway_port=8080)
    config = yaml.safe_load(minimal_prometheus_config(ports))

    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"progress", "points", "leaderboards", "credits", "badges", "gateway"}
    assert jobs["gateway"]["static_configs"][0]["targets"] == ["127.0.0.1:8080"]
    assert jobs["badges"]["static_configs"][0]["targets"] == ["127.0.0.1:8105"]
    assert all(job["metrics_path"] == "/metrics" for job in jobs.values())


def test_the_checked_in_prometheus_config_is_preferred(tmp_path: Path) -> None:
    generated = tmp_path / ".data" / "prometheus.generated.yml"
    assert prometheus_config(tmp_path, generated, {"points": 8102}) == generated
    assert generated.is_file()

    checked_in = tmp_path / "deploy" / "prometheus" / "prometheus.yml"
    checked_in.parent.mkdir(parents=True)
    checked_in.write_text("global: {}\n")
    assert prometheus_config(tmp_path, generated, {"points": 8102}) == checked_in
