"""Restarting crashed child processes with exponential backoff (plain logic, no processes:
the launcher gives it its children and the clock).

A child that crashes straight after starting is retried after 1, 2, 4 ... seconds up to a cap,
so a broken service does not spin; one that had been up for a while before crashing is
retried at once again, as that crash says nothing about the next start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol


class Child(Protocol):
    """What the supervisor needs of a child process."""

    name: str

    @property
    def is_running(self) -> bool: ...

    @property
    def returncode(self) -> int | None: ...

    def start(self) -> object: ...


@dataclass
class Backoff:
    """Delays initial, initial*factor, ... capped at `cap`, until `reset()`."""

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    failures: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.initial * self.factor**self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


@dataclass
class _Watched:
    child: Child
    backoff: Backoff
    started_at: float
    restart_at: float | None = None  # set while waiting out a backoff delay
    restarts: int = 0


@dataclass
class Supervisor:
    """Call `tick()` periodically: it notices exited children and restarts them when their
    backoff delay has passed. It never blocks."""

    #: Up this long before a crash counts as stable: the backoff starts again from the start.
    stable_after: float = 60.0
    clock: Callable[[], float] = time.monotonic
    report: Callable[[str], None] = print
    make_backoff: Callable[[], Backoff] = Backoff
    _watched: dict[str, _Watched] = field(default_factory=dict)

    def watch(self, children: Iterable[Child]) -> None:
        """Supervise children that have just been started."""
        now = self.clock()
        for child in children:
            self._watched[child.name] = _Watched(child, self.make_backoff(), started_at=now)

    def restarts(self, name: str) -> int:
        return self._watched[name].restarts

    def waiting(self) -> dict[str, float]:
        """Children waiting to be restarted, with the time of their restart."""
        return {
            name: watched.restart_at
            for name, watched in self._watched.items()
            if watched.restart_at is not None
        }

    def tick(self) -> list[str]:
        """One round; returns the names of the children it restarted."""
        now = self.clock()
        restarted = []
        for watched in self._watched.values():
            due = watched.restart_at
            if due is None and not watched.child.is_running:
                self._crashed(watched, now)
            elif due is not None and now >= due and self._restart(watched, now):
                restarted.append(watched.child.name)
        return restarted

    def _schedule(self, watched: _Watched, now: float) -> float:
        """Sets the restart time after a crash; returns the delay."""
        if now - watched.started_at >= self.stable_after:
            watched.backoff.reset()
        delay = watched.backoff.next_delay()
        watched.restart_at = now + delay
        return delay

    def _crashed(self, watched: _Watched, now: float) -> None:
        uptime = now - watched.started_at
        delay = self._schedule(watched, now)
        self.report(
            f"{watched.child.name} exited (status {watched.child.returncode}) after "
            f"{uptime:.0f}s; restarting in {delay:.0f}s"
        )

    def _restart(self, watched: _Watched, now: float) -> bool:
        watched.restart_at = None
        watched.started_at = now
        try:
            watched.child.start()
        except Exception as error:  # a failed start is one more crash: back off again
            delay = self._schedule(watched, now)
            self.report(
                f"{watched.child.name} could not be restarted ({error}); "
                f"trying again in {delay:.0f}s"
            )
            return False
        watched.restarts += 1
        self.report(f"{watched.child.name} restarted")
        return True
