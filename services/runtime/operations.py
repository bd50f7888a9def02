"""What every service serves for operations: `/healthz`, `/readyz` and `/metrics`.

A service class inherits them from `OperationalEndpoints` (nameko collects entrypoints and
dependencies from base classes too). Import the module, not the class
(`from services.runtime import operations`): `nameko run services.x.service` starts every
class with entrypoints it finds at the top of the module, and would take the bare mixin
for a second service. `/healthz` says the process is up; `/readyz` that what
it depends on answers, so the launcher and Kubernetes send traffic only then.
"""

from __future__ import annotations

from typing import Any

from nameko.extensions import DependencyProvider
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.wrappers import Request, Response

from services.runtime.http import http
from services.runtime.metrics import MetricFamilies, ServiceMetrics
from services.runtime.publisher import KafkaPublisher


class Operations(DependencyProvider):
    """The service's metric registry and broker connection, as a dependency."""

    publisher = KafkaPublisher()
    metrics = ServiceMetrics()

    def get_dependency(self, worker_ctx: Any) -> Operations:
        return self

    @property
    def families(self) -> MetricFamilies:
        return self.metrics.families

    def broker_reachable(self) -> bool:
        return self.publisher.connected()


class OperationalEndpoints:
    """Mix into a nameko service class; override `readiness_checks` to change what counts."""

    ops = Operations()

    @http("GET", "/healthz")
    def healthz(self, request: Request) -> dict[str, Any]:
        return {"status": "ok"}

    @http("GET", "/readyz")
    def readyz(self, request: Request) -> Any:
        checks = self.readiness_checks()
        ready = all(checks.values())
        return (200 if ready else 503), {"ready": ready, "checks": checks}

    @http("GET", "/metrics")
    def metrics(self, request: Request) -> Response:
        return Response(
            self.ops.families.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def readiness_checks(self) -> dict[str, bool]:
        """Database (when the service has one, as `db`) and broker reachable."""
        checks = {"broker": self.ops.broker_reachable()}
        database = getattr(self, "db", None)
        if database is not None:
            checks["database"] = database.ping()
        return checks
