"""The alert rules as files: every alert labelled, explained, in the runbook, unit-tested both
ways, and querying only series that exist. (`promtool` itself runs them in
tests/integration/test_observability.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.promql import PROMETHEUS_SERIES, exported_series, unknown_references

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"

# Proposed for the leaderboards service (a service gauge, no runtime change): when its
# oldest period not yet closed ends, per period kind. SkillquestLeaderboardPeriodCloseOverdue
# is written against it and stays silent until the service exports it.
PROPOSED_SERIES = {
    "skillquest_leaderboard_close_due_timestamp_seconds": frozenset({"period"}),
}


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def alerts(rules) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules if "alert" in rule}


def test_the_issue_s_alerts_exist(alerts):
    assert {
        "SkillquestServiceDown",
        "SkillquestConsumerLagHigh",
        "SkillquestConsumerLagGrowing",
        "SkillquestConsumerStalled",
        "SkillquestDeadLetters",
        "SkillquestHandlerErrorRatioHigh",
        "SkillquestOutboxBacklogHigh",
        "SkillquestOutboxStuck",
        "SkillquestHttpErrorRatioHigh",
        "SkillquestLeaderboardStale",
    } <= alerts.keys()


def test_every_alert_has_a_for_clause_a_severity_a_summary_and_a_runbook(alerts):
    for name, rule in alerts.items():
        assert rule.get("for"), f"{name}: no `for:` (one bad scrape would page)"
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert annotations.get("summary"), name
        assert annotations.get("runbook"), name
        assert f"RUNBOOK.md#{name.lower()}" in annotations["runbook"], name


def test_every_alert_has_a_runbook_section(alerts):
    runbook = (PROMETHEUS_DIR / "RUNBOOK.md").read_text()
    headings = {line[3:].strip() for line in runbook.splitlines() if line.startswith("## ")}
    assert alerts.keys() <= headings, sorted(alerts.keys() - headings)


def test_rules_query_only_exported_series(rules):
    known = {**exported_series(), **PROMETHEUS_SERIES, **PROPOSED_SERIES}
    problems = [
        f"{rule.get('alert') or rule.get('record')}: {problem}"
        for rule in rules
        for problem in unknown_references(rule["expr"], known)
    ]
    assert not problems, "\n".join(problems)


def test_every_alert_is_unit_tested_firing_and_quiet(alerts):
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts.keys() <= firing, f"never shown firing: {sorted(alerts.keys() - firing)}"
    assert alerts.keys() <= quiet, f"never shown quiet: {sorted(alerts.keys() - quiet)}"
