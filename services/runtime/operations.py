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

from services.runtime.dead_letters import (
    DeadLetterList,
    DeadLetterQuery,
    DeadLetterStore,
    DeadLetterView,
    ReplayReport,
    ReplayRequest,
)
from services.runtime.errors import NotFound
from services.runtime.heap import StartupHeapFreeze
from services.runtime.http import JsonRoute, http, parse_body, parse_query
from services.runtime.lifecycle import Lifecycle
from services.runtime.metrics import MetricFamilies, ServiceMetrics
from services.runtime.publisher import KafkaPublisher
from services.runtime.settings import RuntimeSettings, settings_from_config
from services.runtime.signal_wakeup import SignalWakeup


class ReadinessRoute(JsonRoute):
    """The `/readyz` route: the first entrypoint to stop, it marks the container stopping
    (and keeps answering, now 503, until the web server itself stops last)."""

    lifecycle = Lifecycle()

    def stop(self) -> None:
        self.lifecycle.begin_stopping()
        super().stop()


readiness = ReadinessRoute.decorator


class Operations(DependencyProvider):
    """The service's metric registry and broker connection, as a dependency."""

    publisher = KafkaPublisher()
    metrics = ServiceMetrics()
    lifecycle = Lifecycle()
    heap = StartupHeapFreeze()
    signals = SignalWakeup()

    def setup(self) -> None:
        self.settings: RuntimeSettings = settings_from_config(self.container.config)
        self.service_name: str = self.container.service_name

    def get_dependency(self, worker_ctx: Any) -> Operations:
        return self

    @property
    def stopping(self) -> bool:
        return self.lifecycle.stopping

    def dead_letters(self) -> DeadLetterStore:
        s = self.settings
        return DeadLetterStore(s.kafka_bootstrap_servers, self.service_name, s.name_prefix)

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

    @readiness("GET", "/readyz")
    def readyz(self, request: Request) -> Any:
        checks = self.readiness_checks()
        if self.ops.stopping:  # whatever a service checks, a stopping one takes no traffic
            checks["accepting"] = False
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


class ConsumerEndpoints(OperationalEndpoints):
    """For services that consume events: the operational endpoints plus the dead-letter
    admin API over `dlq.<service>` (the same store as `skillquest dlq`).

    Each route is served both as `/v1/admin/dead-letters` and as
    `/v1/admin/<service>/dead-letters` (the gateway's path, forwarded unchanged); the second
    answers 404 when `<service>` is not this one.
    """

    @http("GET", "/v1/admin/dead-letters")
    def list_dead_letters(self, request: Request) -> DeadLetterList:
        return self._list_dead_letters(request)

    @http("GET", "/v1/admin/<service>/dead-letters")
    def list_service_dead_letters(self, request: Request, service: str) -> DeadLetterList:
        self._check_service(service)
        return self._list_dead_letters(request)

    @http("GET", "/v1/admin/<service>/dead-letters/<position>")
    def get_dead_letter(self, request: Request, service: str, position: str) -> DeadLetterView:
        self._check_service(service)
        found = self.ops.dead_letters().get(position)
        if found is None:
            raise NotFound(f"no dead letter at {position}: list them for their positions")
        return DeadLetterView.of(position, found)

    @http("POST", "/v1/admin/dead-letters/replay")
    def replay_dead_letters(self, request: Request) -> ReplayReport:
        return self._replay(request)

    @http("POST", "/v1/admin/<service>/dead-letters/replay")
    def replay_service_dead_letters(self, request: Request, service: str) -> ReplayReport:
        self._check_service(service)
        return self._replay(request)

    def _check_service(self, service: str) -> None:
        if service != self.ops.service_name:
            raise NotFound(f"this is the {self.ops.service_name} service, not {service}")

    def _list_dead_letters(self, request: Request) -> DeadLetterList:
        query = parse_query(request, DeadLetterQuery)
        letters = self.ops.dead_letters().letters(limit=query.limit)
        return DeadLetterList(
            service=self.ops.service_name,
            dead_letters=[DeadLetterView.of(position, letter) for position, letter in letters],
        )

    def _replay(self, request: Request) -> ReplayReport:
        body = ReplayRequest()
        if request.get_data(cache=True):
            body = parse_body(request, ReplayRequest)
        wanted = body.positions
        replayed = self.ops.dead_letters().replay(wanted)
        missing = sorted(set(wanted or ()) - set(replayed))
        return ReplayReport(service=self.ops.service_name, replayed=replayed, missing=missing)
