"""Observability with the real tools: promtool checks the scrape config and the alert rules
and runs their unit tests; a real Prometheus scrapes a running service, loads the rules, and
sees a handful of events move the service's series; promtool lints the live /metrics."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from deploy.local.servers import LOOPBACK, Prometheus, start_on_free_port
from tests.integration.sample_service import SampleService
from tests.support.events import ticket
from tests.support.harness import (
    EventBus,
    base_url,
    running,
    service_config,
    unique_prefix,
    wait_until,
)

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
SERVICE_PORTS = {
    "progress": 8101,
    "points": 8102,
    "leaderboards": 8103,
    "credits": 8104,
    "badges": 8105,
    "gateway": 8080,
}

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (`make install` installs the prometheus package)",
)
needs_prometheus = pytest.mark.skipif(
    PROMTOOL is None or not Prometheus.available(),
    reason="prometheus is not installed (`make install` installs the prometheus package)",
)


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args],
        cwd=PROMETHEUS_DIR,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_succeeds(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)}:\n{result.stdout}{result.stderr}"


# --- the files ---------------------------------------------------------------------------


def test_scrape_config_has_a_job_per_service_on_its_port_and_loads_the_rules():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    for service, port in SERVICE_PORTS.items():
        assert targets[service] == [f"127.0.0.1:{port}"], service
    assert "prometheus" in targets
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
    # Relative to the config file, so `--config.file=deploy/prometheus/prometheus.yml` works
    # from any directory.
    assert config["rule_files"] == ["alerts.yml"]


@needs_promtool
def test_promtool_accepts_the_scrape_config_and_its_rule_files():
    assert_succeeds(promtool("check", "config", "prometheus.yml"))


@needs_promtool
def test_promtool_accepts_the_alert_rules():
    assert_succeeds(promtool("check", "rules", "alerts.yml"))


@needs_promtool
def test_alert_rule_unit_tests_pass():
    assert_succeeds(promtool("test", "rules", "alerts_test.yml"))


# --- a real Prometheus against a running service -------------------------------------------


def local_config(prometheus_port: int, service_address: str) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with its rules, scraping this test's targets fast."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / path) for path in config["rule_files"]]
    config["scrape_configs"] = [
        {
            "job_name": "prometheus",
            "static_configs": [{"targets": [f"{LOOPBACK}:{prometheus_port}"]}],
        },
        {"job_name": "sample", "static_configs": [{"targets": [service_address]}]},
    ]
    return config


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    """Starts a Prometheus scraping the given service address; stops it after the test."""
    started: list[Prometheus] = []

    def start(service_address: str) -> Prometheus:
        def make(port: int) -> Prometheus:
            config_file = tmp_path / f"prometheus-{port}.yml"
            config_file.write_text(yaml.safe_dump(local_config(port, service_address)))
            return Prometheus(port, config_file, tmp_path / f"tsdb-{port}", tmp_path / "logs")

        server = start_on_free_port(make)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class PrometheusApi:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def value(self, query: str) -> float | None:
        """The value of a query that returns one series, None when it returns none."""
        result = self.get("query", query=query)["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def targets_up(self) -> dict[str, str]:
        return {t["labels"]["job"]: t["health"] for t in self.get("targets")["activeTargets"]}

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.get("rules")["groups"] for rule in group["rules"]]


@pytest.mark.integration
@needs_prometheus
def test_prometheus_scrapes_a_running_service_and_sees_events_move_its_series(
    broker, database, prometheus_for
):
    prefix = unique_prefix()
    config = service_config(broker, database, prefix)
    bus = EventBus(broker.bootstrap, prefix)
    with running(SampleService, config):
        service = base_url(config)
        prometheus = PrometheusApi(prometheus_for(config["WEB_SERVER_ADDRESS"]).url)

        # A handful of events: two arrive from Kafka, one is written through the API
        # (published by the outbox relay, then consumed like the others).
        bus.publish(ticket("agent-o1", "T-1", qa_score=90, csat=5))
        bus.publish(ticket("agent-o2", "T-2", qa_score=90, csat=5))
        response = requests.post(
            f"{service}/tickets",
            json={"agent_id": "agent-o3", "ticket_id": "T-3", "qa_score": 80},
            timeout=10,
        )
        assert response.status_code == 202

        wait_until(
            lambda: prometheus.targets_up() == {"prometheus": "up", "sample": "up"},
            message="every target up",
        )
        assert prometheus.value('skillquest_service_info{job="sample", service="sample"}') == 1

        handled = 'sum(skillquest_events_consumed_total{job="sample", outcome="handled"})'
        wait_until(lambda: prometheus.value(handled) == 3, timeout=30, message=handled)
        published = 'sum(skillquest_events_published_total{job="sample", topic="work.tickets"})'
        wait_until(lambda: prometheus.value(published) == 1, message=published)
        posted = (
            'skillquest_http_requests_total{job="sample", route="/tickets", method="POST",'
            ' status="202"}'
        )
        assert prometheus.value(posted) == 1
        lag = 'sum(skillquest_consumer_lag_messages{job="sample", topic="work.tickets"})'
        wait_until(lambda: prometheus.value(lag) == 0, message="the lag drained")
        assert prometheus.value('skillquest_outbox_backlog_events{job="sample"}') == 0

        # The real rules load and evaluate against live series without errors.
        wait_until(
            lambda: all(r["health"] == "ok" for r in prometheus.rules()),
            message="every rule evaluated",
        )
        assert {r["name"] for r in prometheus.rules()} >= {
            "SkillquestServiceDown",
            "SkillquestDeadLetters",
        }

        # The exposition itself passes Prometheus' own lint.
        exposition = requests.get(f"{service}/metrics", timeout=5).text
        lint = promtool("check", "metrics", stdin=exposition)
        assert_succeeds(lint)
        assert not lint.stdout.strip() and not lint.stderr.strip(), lint.stdout + lint.stderr
    bus.close()
