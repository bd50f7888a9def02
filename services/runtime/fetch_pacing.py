"""How a consumer's fetches wait at the broker: gathering while events flow, answered at the
first record while the consumer is idle.

While events flow, a fetch waits for `consumer_fetch_min_bytes` (or
`consumer_fetch_max_wait_ms`): batches of several events per transaction at moderate rates.
That wait costs a consumer with nothing to do a fetch, and the broker an answer, every
50 ms by default. Once a consumer has polled nothing for `IDLE_FETCH_AFTER_SECONDS`, its fetches ask
for 1 byte and may be held `consumer_idle_fetch_max_wait_ms`: the broker answers at the
first record, so the first event after a quiet spell is not held at all, and an idle
consumer asks a tenth as often. Its first records bring the gathering settings back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from services.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

#: Polls that bring nothing for this long make the consumer idle. Long enough that a steady
#: stream of a few events a second keeps gathering; short next to the time a stack spends
#: idle between bursts.
IDLE_FETCH_AFTER_SECONDS = 1.0


class FetchSettings(NamedTuple):
    min_bytes: int
    max_wait_ms: int


def fetcher_config(consumer: Any) -> dict[str, Any] | None:
    """The settings kafka-python's fetcher builds each fetch request from.

    `KafkaConsumer` copies its settings into its fetcher when it is made and has no setter,
    so the fetcher's own dict is the one place a change takes effect (read for every fetch
    request). None when a kafka-python release no longer has it: fetches then keep the
    settings the consumer was made with, as they did before this module.
    """
    config = getattr(getattr(consumer, "_fetcher", None), "config", None)
    if isinstance(config, dict) and {"fetch_min_bytes", "fetch_max_wait_ms"} <= config.keys():
        return config
    return None


class FetchPacing:
    """Switches one consumer's fetches between gathering and idle (see the module)."""

    def __init__(
        self,
        settings: RuntimeSettings,
        idle_after: float = IDLE_FETCH_AFTER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gathering = FetchSettings(
            settings.consumer_fetch_min_bytes, settings.consumer_fetch_max_wait_ms
        )
        self.idle = FetchSettings(1, settings.consumer_idle_fetch_max_wait_ms)
        self.idle_after = idle_after
        self.clock = clock
        self.current = self.gathering  # what the consumer is made with
        self.last_records = clock()
        self._unsupported = False

    def polled(self, consumer: Any, records: int) -> None:
        """After every poll: `records` is how many it brought."""
        now = self.clock()
        if records:
            self.last_records = now
            wanted = self.gathering
        elif now - self.last_records >= self.idle_after:
            wanted = self.idle
        else:
            return
        if wanted == self.current or self._unsupported:
            return
        config = fetcher_config(consumer)
        if config is None:
            self._unsupported = True
            log.warning("this kafka-python cannot change fetch settings: idle fetches stay")
            return
        config["fetch_min_bytes"], config["fetch_max_wait_ms"] = wanted
        self.current = wanted
