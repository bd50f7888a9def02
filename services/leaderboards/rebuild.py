"""Command line: recompute every leaderboard from the applied-points log.

    python -m services.leaderboards.rebuild [--config deploy/config.yml]

Uses the same configuration as the service (MONGODB_URI, NAME_PREFIX, TIME_ZONE and the
LEADERBOARDS section); safe to run while the service consumes (see handlers.rebuild).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pymongo import MongoClient

from services.leaderboards.handlers import rebuild
from services.leaderboards.settings import LeaderboardSettings
from services.runtime.mongo import ServiceDatabase
from services.runtime.settings import settings_from_config

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "config.yml"


def load_config(path: Path) -> dict[str, Any]:
    from nameko.cli.main import setup_yaml_parser  # `${VAR:default}` from the environment

    setup_yaml_parser()
    return yaml.safe_load(path.read_text())


def rebuild_from_config(config: dict[str, Any]) -> Any:
    runtime = settings_from_config(config)
    section = dict(config.get("LEADERBOARDS") or {})
    section.setdefault("time_zone", runtime.time_zone)
    settings = LeaderboardSettings.model_validate(section)
    client: MongoClient = MongoClient(
        runtime.mongodb_uri, tz_aware=True, w="majority", journal=True
    )
    try:
        db = client[runtime.database_name("leaderboards")]
        database = ServiceDatabase(
            client, db, "skillquest/leaderboards", on_events_committed=lambda: None
        )
        return rebuild(database, tz=settings.time_zone)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    args = parser.parse_args(argv)
    report = rebuild_from_config(load_config(args.config))
    print(report.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
