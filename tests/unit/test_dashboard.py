"""The Grafana dashboard and its provisioning files: valid, laid out, and querying only the
series the services export (a typo in a metric or label name gives an empty panel, which
nobody notices until the day it is needed)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.promql import (
    PROMETHEUS_SERIES,
    TARGET_LABELS,
    domain_counters,
    exported_series,
    selectors,
    unknown_references,
)

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "skillquest.json"
SERVICE_FILTER = 'job=~"$service"'


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard["panels"]) if p["type"] != "row"]


def exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in query_panels(dashboard) for t in p["targets"]]


def test_dashboard_is_a_provisionable_dashboard(dashboard):
    assert dashboard["uid"] == "skillquest-overview"
    assert dashboard["title"] == "Skillquest"
    assert isinstance(dashboard["schemaVersion"], int)
    # Provisioned dashboards must not carry a database id from an export.
    assert dashboard.get("id") is None
    assert dashboard["panels"]


def test_panel_ids_are_unique(dashboard):
    ids = [p["id"] for p in all_panels(dashboard["panels"])]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_panel_has_a_grid_position_inside_the_24_columns_without_overlap(dashboard):
    taken: list[tuple[str, dict[str, int]]] = []
    for panel in all_panels(dashboard["panels"]):
        grid = panel.get("gridPos")
        assert grid, f"{panel['title']}: no gridPos"
        assert {"h", "w", "x", "y"} <= grid.keys(), panel["title"]
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in "hwxy"), panel["title"]
        assert grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the dashboard"
        for title, other in taken:
            overlaps = (
                grid["x"] < other["x"] + other["w"]
                and other["x"] < grid["x"] + grid["w"]
                and grid["y"] < other["y"] + other["h"]
                and other["y"] < grid["y"] + grid["h"]
            )
            assert not overlaps, f"{panel['title']} overlaps {title}"
        taken.append((panel["title"], grid))


def test_every_query_panel_has_a_datasource_and_targets(dashboard):
    panels = query_panels(dashboard)
    assert panels
    for panel in panels:
        assert panel.get("datasource", {}).get("uid") == "${datasource}", panel["title"]
        assert panel.get("targets"), f"{panel['title']}: no targets"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", {}).get("uid") == "${datasource}", panel["title"]
            assert target.get("expr", "").strip(), f"{panel['title']}: empty expr"
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"


def test_queries_use_only_exported_metrics_and_labels(dashboard):
    known = {**exported_series(), **PROMETHEUS_SERIES}
    problems = [
        f"{title}: {problem}"
        for title, expr in exprs(dashboard)
        for problem in unknown_references(expr, known)
    ]
    assert not problems, "\n".join(problems)


def test_legends_name_labels_the_query_returns(dashboard):
    known = {**exported_series(), **PROMETHEUS_SERIES}
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            carried = set(TARGET_LABELS)
            for selector in selectors(target["expr"]):
                carried |= known.get(selector.metric, frozenset())
            legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend_labels <= carried, f"{panel['title']}: legend uses {legend_labels}"


def test_the_service_variable_lists_the_services_and_filters_the_service_panels(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    service = variables["service"]
    assert service["type"] == "query"
    assert "skillquest_service_info" in json.dumps(service["query"])
    assert service["includeAll"] and service["multi"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"

    # Every selector of a per-service family is filtered; business totals are global.
    domain = set(domain_counters())
    for title, expr in exprs(dashboard):
        per_service = [s for s in selectors(expr) if s.metric not in domain]
        filtered = expr.count(SERVICE_FILTER)
        assert filtered == len(per_service), f"{title}: not filtered by the service variable"


def test_the_red_row_repeats_per_service(dashboard):
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    red = [r for r in rows if r.get("repeat") == "service"]
    assert len(red) == 1
    assert "$service" in red[0]["title"]


def test_the_dashboard_covers_red_the_pipeline_and_the_business_view(dashboard):
    used = {s.metric for _, expr in exprs(dashboard) for s in selectors(expr)}
    required = {
        # RED
        "skillquest_http_requests_total",
        "skillquest_http_request_duration_seconds_bucket",
        # event pipeline
        "skillquest_events_consumed_total",
        "skillquest_consumer_lag_messages",
        "skillquest_dead_letters_total",
        "skillquest_outbox_backlog_events",
        "skillquest_outbox_oldest_pending_age_seconds",
        "skillquest_events_published_total",
        "skillquest_event_handler_duration_seconds_bucket",
        # business: every domain counter
        *domain_counters(),
    }
    assert required <= used, sorted(required - used)
    assert len(domain_counters()) == 5


def test_provisioning_points_grafana_at_the_dashboard_and_the_datasource(dashboard):
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/skillquest.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]

    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"].startswith("http")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    # The dashboard's default data source is the provisioned one.
    assert variables["datasource"]["current"]["value"] == source["uid"]
