"""Rebuilding derived views from the topics: replaying leaderboards, credits and badges from
offset 0 into fresh databases yields exactly the live state; applying a rebuild (service
stopped) keeps the live state and configuration, and the service goes on from there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pymongo import MongoClient

from services import cli
from services.runtime.rebuild import Rebuild
from tests.faults.stack import (
    Deployment,
    Producer,
    compare,
    database_name,
    make_stream,
    state_of,
    wait_settled,
)
from tests.support.harness import unique_prefix

pytestmark = pytest.mark.integration


def test_rebuilds_reproduce_the_live_state(
    broker: Any, database: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = unique_prefix()
    deployment = Deployment(broker, database, prefix, tmp_path / "logs").start()
    client: MongoClient = MongoClient(database.uri, tz_aware=True)
    producer = Producer(broker.bootstrap, prefix)
    stream = make_stream(30, seed=3)
    head, tail = stream.events[:-20], stream.events[-20:]
    try:
        producer.publish(head)
        _, left = wait_settled(broker.bootstrap, client, prefix, 180)
        assert not any(left.values()), left
        config = deployment.config()

        for service in ("leaderboards", "credits"):
            rebuild = Rebuild(config, service)
            try:
                rebuild.run(timeout=180, log=tmp_path / f"rebuild-{service}.log")
                assert rebuild.differences() == {}, service
                rebuilt = state_of(client, rebuild.rebuild_db)
                assert rebuilt["processed_events"], "the rebuild handled nothing"
            finally:
                rebuild.discard()
                rebuild.close()

        # Applying: badges stopped, rebuilt, replaced; its signing keys are kept.
        live_db = database_name(prefix, "badges")
        keys = list(client[live_db]["signing_keys"].find())
        before = state_of(client, live_db)
        for process in deployment.processes["badges"]:
            process.stop(20)
        rebuild = Rebuild(config, "badges")
        try:
            rebuild.run(timeout=180, log=tmp_path / "rebuild-badges.log")
            assert rebuild.differences() == {}
            replaced = rebuild.apply()
            assert replaced["badge_awards"] > 0
        finally:
            rebuild.discard()
            rebuild.close()
        assert compare({"badges": before}, {"badges": state_of(client, live_db)}) == {}
        assert list(client[live_db]["signing_keys"].find()) == keys
        for process in deployment.processes["badges"]:
            process.start().wait_ready(90)
        producer.publish(tail)
        _, left = wait_settled(broker.bootstrap, client, prefix, 180)
        assert not any(left.values()), left
        awards = [d["_id"] for d in client[live_db]["badge_awards"].find({}, {"_id": 1})]
        assert len(awards) == len(set(awards))

        # The boards-only rebuild of the leaderboards, from the CLI: nothing to fix.
        path = tmp_path / "config.yml"
        path.write_text(yaml.safe_dump(config))
        capsys.readouterr()
        assert cli.main(["rebuild", "leaderboards", "--from-log", "--config", str(path)]) == 0
        assert '"entries_fixed": 0' in capsys.readouterr().out
    finally:
        producer.close()
        deployment.stop()
        client.close()
