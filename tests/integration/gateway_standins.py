"""Small real HTTP services standing in for progress, points, leaderboards, credits and
badges in the gateway's tests: plain WSGI apps on free ports that answer canned JSON and
record what they were sent. They can be stopped and started again on the same port.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import eventlet
from eventlet import wsgi

Handler = Callable[["Seen"], tuple[int, Any]]


@dataclass
class Seen:
    """One request a stand-in received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class _QuietLog:
    def write(self, *args: Any) -> None:  # eventlet's access log: not wanted in test output
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StandIn:
    """A service answering `routes[(method, path)]` (404 in the error shape otherwise)."""

    name: str
    port: int = field(default_factory=_free_port)
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    delay_seconds: float = 0.0
    _thread: Any = None
    _sock: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, method: str, path: str, status: int, body: Any) -> None:
        self.routes[(method, path)] = lambda seen: (status, body)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        seen = Seen(
            method=environ["REQUEST_METHOD"],
            path=environ["PATH_INFO"],
            query=environ.get("QUERY_STRING", ""),
            headers={
                key[5:].replace("_", "-").title(): value
                for key, value in environ.items()
                if key.startswith("HTTP_")
            },
            body=environ["wsgi.input"].read(length) if length else b"",
        )
        self.seen.append(seen)
        if self.delay_seconds:
            eventlet.sleep(self.delay_seconds)
        handler = self.routes.get((seen.method, seen.path))
        if seen.path == "/healthz":
            status, body = 200, {"status": "ok"}
        elif handler is None:
            status, body = (
                404,
                {
                    "error": {
                        "code": "not_found",
                        "message": f"{seen.path} not found",
                        "details": None,
                    }
                },
            )
        else:
            status, body = handler(seen)
        payload = json.dumps(body).encode()
        start_response(
            f"{status} X",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    def start(self) -> StandIn:
        self._sock = eventlet.listen(("127.0.0.1", self.port))
        self._thread = eventlet.spawn(
            wsgi.server, self._sock, self, log=_QuietLog(), log_output=False
        )
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None

    def reset(self) -> None:
        """Forget routes and requests; listen again if stopped."""
        self.routes.clear()
        self.seen.clear()
        self.delay_seconds = 0.0
        if not self.running:
            self.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.kill()
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def last(self, method: str, path: str) -> Seen:
        for seen in reversed(self.seen):
            if seen.method == method and seen.path == path:
                return seen
        raise AssertionError(f"{self.name} received no {method} {path}")
