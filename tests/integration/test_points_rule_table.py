"""The rule table across restarts: the file seeds the database once, API changes survive a
restart with the same file, and an edited file makes a new version."""

from __future__ import annotations

import pytest
import yaml

from services.points.rules import DEFAULT_RULES_FILE
from services.points.service import PointsService
from tests.integration.points_events import PointsClient
from tests.support.harness import running, service_config, unique_prefix

pytestmark = pytest.mark.integration


def module_rule(client: PointsClient) -> dict:
    response = client.get("/v1/points/rules/module-completed")
    response.raise_for_status()
    return response.json()


def test_the_rules_file_seeds_once_and_an_edited_file_makes_a_new_version(
    broker, database, tmp_path
):
    prefix = unique_prefix()
    config = service_config(broker, database, prefix)
    with running(PointsService, config):
        client = PointsClient(config)
        rule = module_rule(client)
        assert (rule["version"], rule["definition"]["points"]) == (1, 10)
        assert rule["on"] == ["learning.module.completed.v1"]
        changed = client.put("/v1/points/rules/module-completed", {"points": 12, "daily_cap": 100})
        assert changed.status_code == 200

    # Same file again: the admin's change stays.
    config = service_config(broker, database, prefix)
    with running(PointsService, config):
        rule = module_rule(PointsClient(config))
        assert (rule["version"], rule["definition"]["points"]) == (2, 12)
        assert rule["definition"]["daily_cap"] == 100

    # An operator edits the file: its values become the next version.
    table = yaml.safe_load(DEFAULT_RULES_FILE.read_text())
    table["rules"]["module-completed"]["points"] = 11
    edited = tmp_path / "rules.yml"
    edited.write_text(yaml.safe_dump(table))
    config = service_config(broker, database, prefix, POINTS={"rules_file": str(edited)})
    with running(PointsService, config):
        client = PointsClient(config)
        rule = module_rule(client)
        assert (rule["version"], rule["definition"]["points"]) == (3, 11)
        assert rule["definition"]["daily_cap"] is None
        versions = client.get("/v1/points/rules/module-completed/versions").json()["versions"]
        assert [v["version"] for v in versions] == [3, 2, 1]
        assert [v["definition"]["points"] for v in versions] == [11, 12, 10]
        others = client.get("/v1/points/rules").json()["rules"]
        assert all(r["version"] == 1 for r in others if r["rule_id"] != "module-completed")
