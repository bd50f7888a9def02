"""The bench's own garbage collection, kept out of what it times."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_heap() -> Iterator[None]:
    """While the bench times the stack: what it holds already (the pipeline's stream and
    expectations, the bulk load's leftovers) out of the collector's generations. A full
    collection of it took 0.1 to 0.3 s and stopped every client thread, and the probe
    watcher, at once: their clocks ran on while nothing was sent or seen."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
