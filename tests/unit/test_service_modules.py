"""Each service module must look like exactly one service to `nameko run`."""

import pytest
from nameko.cli.run import import_service

SERVICES = ("progress", "points", "leaderboards", "credits", "badges", "gateway")


@pytest.mark.parametrize("name", SERVICES)
def test_nameko_run_finds_exactly_the_service(name):
    found = import_service(f"services.{name}.service")
    assert [cls.name for cls in found] == [name]
