"""Calls to the services over HTTP: pooled connections, connect and read timeouts, and
failures turned into the §5 error shape (a service that is down or slow is a 503, never a
hang or a traceback).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import requests
from prometheus_client import CollectorRegistry, Counter, Histogram
from requests.adapters import HTTPAdapter

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
    """One pooled HTTP client for all services (base URLs from SERVICE_URLS)."""

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
        self.session = requests.Session()
        # Service URLs are internal: no proxy from the environment applies to them, and
        # requests would otherwise look the proxy variables up again on every call (about a
        # tenth of the gateway's CPU per proxied read, measured with py-spy).
        self.session.trust_env = False
        # No retries here: a write must not be sent twice, and a read is retried by the client.
        adapter = HTTPAdapter(
            pool_connections=len(urls) or 1, pool_maxsize=pool_size, max_retries=0
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

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
        started = time.monotonic()
        try:
            response = self.session.request(
                method,
                url,
                data=body,
                headers=headers,
                timeout=timeout or self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            self._observe(service, "timeout", None)
            log.warning("%s %s: %s timed out", method, path, service)
            raise Unavailable(
                f"the {service} service did not answer in time; retry shortly",
                details={"service": service},
            ) from None
        except requests.RequestException as error:
            self._observe(service, "unreachable", None)
            log.warning("%s %s: %s unreachable: %s", method, path, service, error)
            raise Unavailable(
                f"the {service} service is unavailable; retry shortly",
                details={"service": service},
            ) from None
        elapsed = time.monotonic() - started
        status = response.status_code
        outcome = "failed" if status >= 500 else "rejected" if status >= 400 else "ok"
        self._observe(service, outcome, elapsed)
        if response.status_code >= 500:
            log.warning(
                "%s %s: %s answered %s after %.3fs: %.500s",
                method,
                path,
                service,
                response.status_code,
                elapsed,
                response.text,
            )
            raise Unavailable(
                f"the {service} service failed to answer; retry shortly",
                details={"service": service, "status": response.status_code},
            )
        content_type = response.headers.get("Content-Type", JSON_TYPE)
        return Reply(response.status_code, response.content, content_type)

    def _observe(self, service: str, outcome: str, seconds: float | None) -> None:
        if self.metrics is not None:
            self.metrics.observe(service, outcome, seconds)

    def healthy(self, service: str, timeout: float) -> bool:
        """The service's /healthz answers 200 within `timeout` seconds."""
        try:
            response = self.session.get(
                self.urls[service] + "/healthz", timeout=(timeout, timeout), allow_redirects=False
            )
        except requests.RequestException:
            return False
        return response.status_code == 200

    def close(self) -> None:
        self.session.close()


class TeamCache:
    """agent id -> team id, kept for a short while: a manager's calls about one agent should
    not each cost a roster lookup, and a team change shows within `ttl_seconds`."""

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, str]] = {}

    def get(self, agent_id: str, now: float | None = None) -> str | None:
        now = time.monotonic() if now is None else now
        entry = self._entries.get(agent_id)
        if entry is None:
            return None
        expires, team = entry
        if expires <= now:
            self._entries.pop(agent_id, None)
            return None
        return team

    def put(self, agent_id: str, team_id: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self._entries) >= self.max_entries:
            # Drop the entry that expires first (dicts keep insertion order: the oldest).
            self._entries.pop(next(iter(self._entries)), None)
        self._entries.pop(agent_id, None)
        self._entries[agent_id] = (now + self.ttl, team_id)
