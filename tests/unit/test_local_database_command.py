"""The local database server's command line (deploy/local/servers.py)."""

from __future__ import annotations

from pathlib import Path

from deploy.local.servers import Database


def test_the_oplog_keeps_the_servers_default_unless_a_size_is_given(tmp_path: Path) -> None:
    default = Database(27017, tmp_path / "data", tmp_path).command()
    sized = Database(27017, tmp_path / "data", tmp_path, oplog_max_entries=1_000_000).command()
    assert "--oplog-max-entries" not in default
    assert sized[sized.index("--oplog-max-entries") + 1] == "1000000"
    # Durability stays whatever the oplog's size.
    assert "--sync-on-commit" in default and "--sync-on-commit" in sized
