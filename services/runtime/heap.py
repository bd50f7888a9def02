"""The service process's heap and Python's cyclic garbage collector.

A service imports nameko, eventlet, kafka-python, pymongo, pydantic and its own modules
before it serves anything: several hundred thousand objects that live as long as the
process. Python's full (oldest-generation) collection walks every one of them each time it
runs, and stops the whole process meanwhile: on the local stack 60 to 230 ms, a few times
a minute under load, which every request in flight waits for. `gc.freeze()` once the
container has started moves them to a permanent generation that collections skip; what the
service makes afterwards (views, caches, connections) is still collected as usual.
"""

from __future__ import annotations

import gc
import logging

from nameko.extensions import SharedExtension

log = logging.getLogger(__name__)


class StartupHeapFreeze(SharedExtension):
    """One per container: at its start, the objects made so far leave the collector's
    generations (after a collection, so that no garbage is kept for good)."""

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        log.debug("%d objects made at startup are no longer scanned", gc.get_freeze_count())
