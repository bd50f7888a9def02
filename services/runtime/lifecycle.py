"""Whether the container has begun to stop, shared by the extensions that care.

nameko stops a container entrypoints first, then waits for workers, then dependencies. The
first entrypoint asked to stop marks the container as stopping: `/readyz` answers 503 from
then on (a load balancer or Kubernetes stops sending traffic), while the consumer finishes
the records in flight, commits them and leaves its group.
"""

from __future__ import annotations

import time

from nameko.extensions import SharedExtension


class Lifecycle(SharedExtension):
    """One per container (a shared sub-extension): `stopping` once any entrypoint stops."""

    def setup(self) -> None:
        self.stopping_since: float | None = None

    @property
    def stopping(self) -> bool:
        return getattr(self, "stopping_since", None) is not None

    def begin_stopping(self) -> None:
        if not self.stopping:
            self.stopping_since = time.monotonic()
