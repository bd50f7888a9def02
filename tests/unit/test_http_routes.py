"""A route's method must take what its URL rule gives it: checked when the service starts,
not on every call."""

import pytest
from nameko.cli.run import import_service
from nameko.containers import ServiceContainer
from nameko.exceptions import IncorrectSignature
from nameko.testing.utils import get_extension

from services.runtime.http import JsonRoute, http
from tests.unit.test_service_modules import SERVICES


class Matching:
    name = "matching"

    @http("GET", "/v1/things/<thing_id>/parts/<int:part>")
    def part(self, request, thing_id, part):
        return {}


class Mismatched:
    name = "mismatched"

    @http("GET", "/v1/things/<thing_id>")
    def thing(self, request, id):  # the rule's variable is thing_id
        return {}


def test_a_route_whose_method_takes_its_rules_variables_sets_up():
    container = ServiceContainer(Matching, config={})
    get_extension(container, JsonRoute).setup()


def test_a_route_whose_method_does_not_take_them_stops_the_start():
    container = ServiceContainer(Mismatched, config={})
    with pytest.raises(IncorrectSignature, match="thing_id"):
        get_extension(container, JsonRoute).setup()


@pytest.mark.parametrize("name", SERVICES)
def test_every_route_of_every_service_takes_its_rules_variables(name):
    [service_class] = import_service(f"services.{name}.service")
    container = ServiceContainer(service_class, config={})
    routes = [e for e in container.entrypoints if isinstance(e, JsonRoute)]
    assert routes
    for route in routes:
        route.setup()
