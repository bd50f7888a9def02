"""The gateway: the only API the portal calls. It checks bearer tokens and roles, validates
input with the services' own models, and proxies each §5 path to the service that owns it;
it owns no database and consumes no events.

Each route of `routes.ROUTES` becomes its own `@http` entrypoint (added below the class),
so requests and latency are counted by route template, never by id.
"""

from __future__ import annotations

from typing import Any

from eventlet import GreenPool
from nameko.extensions import DependencyProvider
from pydantic_core import to_json
from werkzeug.wrappers import Request, Response

from services.gateway.downstream import DownstreamMetrics
from services.gateway.openapi import build_document
from services.gateway.proxy import Gateway
from services.gateway.routes import ROUTES, Route
from services.gateway.settings import SERVICES, gateway_settings

# The module, not the class: `nameko run services.gateway.service` runs every class with
# entrypoints that it finds in this module, and the mixin alone is not a service.
from services.runtime import operations
from services.runtime.http import http
from services.runtime.metrics import ServiceMetrics

PROFILE = next(route for route in ROUTES if route.service == "gateway")


class GatewayProvider(DependencyProvider):
    """Settings, the pooled HTTP client and the team cache, built once per container."""

    metrics = ServiceMetrics()

    def setup(self) -> None:
        self.gateway = Gateway(gateway_settings(self.container.config))
        # Built once: the routes and models do not change while the service runs.
        self.document = to_json(build_document(ROUTES))

    def start(self) -> None:
        # In start, not setup: the shared metrics registry is made in its own setup.
        services = sorted(self.gateway.settings.service_urls)
        self.gateway.downstream.metrics = DownstreamMetrics(
            self.metrics.families.registry, services
        )

    def stop(self) -> None:
        self.gateway.downstream.close()

    kill = stop

    def get_dependency(self, worker_ctx: Any) -> GatewayProvider:
        return self


class GatewayService(operations.OperationalEndpoints):
    name = "gateway"
    provider = GatewayProvider()

    @http("GET", "/openapi.json")
    def openapi(self, request: Request) -> Response:
        return Response(self.provider.document, mimetype="application/json")

    @http("GET", PROFILE.rule)
    def profile(self, request: Request, agent_id: str) -> Response:
        return self.provider.gateway.profile(PROFILE, request, agent_id)

    def proxy(self, route: Route, request: Request, values: dict[str, str]) -> Response:
        return self.provider.gateway.handle(route, request, values)

    def readiness_checks(self) -> dict[str, bool]:
        """Ready when every service behind the gateway answers its /healthz."""
        gateway = self.provider.gateway
        timeout = gateway.settings.readiness_timeout_seconds
        pool = GreenPool(len(SERVICES))
        answers = pool.imap(lambda name: gateway.downstream.healthy(name, timeout), SERVICES)
        return dict(zip(SERVICES, answers, strict=True))


def _entrypoint(route: Route) -> Any:
    def entrypoint(self: GatewayService, request: Request, **values: str) -> Response:
        return self.proxy(route, request, values)

    entrypoint.__name__ = entrypoint.__qualname__ = route.name
    entrypoint.__doc__ = f"{route.method} {route.path}: {route.summary} ({route.service})"
    return http(route.method, route.rule)(entrypoint)


for _route in ROUTES:
    if _route is not PROFILE:
        setattr(GatewayService, _route.name, _entrypoint(_route))
