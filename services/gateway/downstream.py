"""Calls to the services over HTTP: pooled connections, connect and read timeouts, and
failures turned into the §5 error shape (a service that is down or slow is a 503, never a
hang or a traceback).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import urllib3
from cachetools import TTLCache
from prometheus_client import CollectorRegistry, Counter, Histogram

from services.gateway.auth import Caller
from services.runtime.errors import Unavailable
from services.runtime.metrics import LATENCY_BUCKETS

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"


@dataclass(frozen=True)
class Reply:
    """A service's answer, as the gateway passes it on."""

    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


OUTCOMES = ("ok", "rejected", "failed", "timeout", "unreachable")


class DownstreamMetrics:
    """Calls to each service by outcome, and their latency: which dependency fails or slows
    down shows here, not only as the gateway's own 503s."""

    def __init__(self, registry: CollectorRegistry, services: list[str]) -> None:
        self.calls = Counter(
            "skillquest_gateway_downstream_requests",
            "Calls from the gateway to a service, by outcome (ok 2xx-3xx, rejected 4xx, "
            "failed 5xx, timeout, unreachable)",
            ["service", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "skillquest_gateway_downstream_duration_seconds",
            "Latency of the gateway's calls to a service (answered calls only)",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        for service in services:  # label sets at zero, so rate() works from the first scrape
            self.latency.labels(service)
            for outcome in OUTCOMES:
                self.calls.labels(service, outcome)

    def observe(self, service: str, outcome: str, seconds: float | None) -> None:
        self.calls.labels(service, outcome).inc()
        if seconds is not None:
            self.latency.labels(service).observe(seconds)


class Downstream:
    """One pooled HTTP client for all services (base URLs from SERVICE_URLS).

    urllib3 itself rather than requests on top of it: requests prepared each call (hooks,
    cookies, environment settings) in about a third of the gateway's CPU per proxied read
    (py-spy), and its conveniences buy nothing for internal calls. No proxy from the
    environment applies to the service URLs.
    """

    def __init__(
        self,
        urls: dict[str, str],
        *,
        connect_timeout: float = 1.0,
        read_timeout: float = 5.0,
        pool_size: int = 50,
        metrics: DownstreamMetrics | None = None,
    ) -> None:
        self.urls = {name: url.rstrip("/") for name, url in urls.items()}
        self.metrics = metrics
        self.timeout = (connect_timeout, read_timeout)
        # No retries here: a write must not be sent twice, and a read is retried by the client.
        self.pool = urllib3.PoolManager(
            num_pools=max(len(urls), 1), maxsize=pool_size, block=False, retries=False
        )

    def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        query: bytes | str = b"",
        body: bytes | None = None,
        caller: Caller | None = None,
        timeout: tuple[float, float] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """The service's reply for 2xx-4xx; a 503 `Unavailable` when it cannot be reached,
        times out, or fails with a 5xx (whose details stay in the log, not with the caller)."""
        url = self.urls[service] + path
        if query:
            url += "?" + (query.decode("latin-1") if isinstance(query, bytes) else query)
        headers = {**(headers or {}), "Accept": JSON_TYPE}
        if body is not None:
            headers["Content-Type"] = JSON_TYPE
        if caller is not None:
            headers["X-Caller-Sub"] = caller.sub
            headers["X-Caller-Role"] = caller.role
            if caller.team:
                headers["X-Caller-Team"] = caller.team
        connect, read = timeout or self.timeout
        started = time.monotonic()
        try:
            response = self.pool.request(
                method,
                url,
                body=body,
                headers=headers,
                timeout=urllib3.Timeout(connect=connect, read=read),
                redirect=False,
            )
        except urllib3.exceptions.NewConnectionError as error:  # refused: a timeout's subclass
            self._unreachable(service, method, path, error)
        except urllib3.exceptions.TimeoutError:
            self._timed_out(service, method, path)
        except urllib3.exceptions.HTTPError as error:
            self._unreachable(service, method, path, error)
        elapsed = time.monotonic() - started
        status = response.status
        outcome = "failed" if status >= 500 else "rejected" if status >= 400 else "ok"
        self._observe(service, outcome, elapsed)
        if status >= 500:
            log.warning(
                "%s %s: %s answered %s after %.3fs: %.500s",
                method,
                path,
                service,
                status,
                elapsed,
                response.data.decode("utf-8", "replace"),
            )
            raise Unavailable(
                f"the {service} service failed to answer; retry shortly",
                details={"service": service, "status": status},
            )
        content_type = response.headers.get("Content-Type", JSON_TYPE)
        return Reply(status, response.data, content_type)

    def _timed_out(self, service: str, method: str, path: str) -> NoReturn:
        self._observe(service, "timeout", None)
        log.warning("%s %s: %s timed out", method, path, service)
        raise Unavailable(
            f"the {service} service did not answer in time; retry shortly",
            details={"service": service},
        ) from None

    def _unreachable(self, service: str, method: str, path: str, error: Exception) -> NoReturn:
        self._observe(service, "unreachable", None)
        log.warning("%s %s: %s unreachable: %s", method, path, service, error)
        raise Unavailable(
            f"the {service} service is unavailable; retry shortly", details={"service": service}
        ) from None

    def _observe(self, service: str, outcome: str, seconds: float | None) -> None:
        if self.metrics is not None:
            self.metrics.observe(service, outcome, seconds)

    def healthy(self, service: str, timeout: float) -> bool:
        """The service's /healthz answers 200 within `timeout` seconds."""
        try:
            response = self.pool.request(
                "GET", self.urls[service] + "/healthz", timeout=timeout, redirect=False
            )
        except urllib3.exceptions.HTTPError:
            return False
        return response.status == 200

    def close(self) -> None:
        self.pool.clear()


def team_cache(
    ttl_seconds: float, max_entries: int = 10_000, timer: Callable[[], float] = time.monotonic
) -> TTLCache[str, str]:
    """agent id -> team id, kept for a short while: a manager's calls about one agent should
    not each cost a roster lookup, and a team change shows within `ttl_seconds`."""
    return TTLCache(maxsize=max_entries, ttl=ttl_seconds, timer=timer)
