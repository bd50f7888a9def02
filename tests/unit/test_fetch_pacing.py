"""Fetch pacing (services/runtime/fetch_pacing.py): gathering while events flow, answered at
the first record once the consumer has been idle."""

from __future__ import annotations

from types import SimpleNamespace

from services.runtime.fetch_pacing import FetchPacing, fetcher_config
from services.runtime.settings import RuntimeSettings

SETTINGS = RuntimeSettings(
    consumer_fetch_min_bytes=65_536,
    consumer_fetch_max_wait_ms=100,
    consumer_idle_fetch_max_wait_ms=500,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def consumer_made_with(min_bytes: int, max_wait_ms: int) -> SimpleNamespace:
    """What kafka-python's consumer holds: its fetcher's settings dict."""
    config = {"fetch_min_bytes": min_bytes, "fetch_max_wait_ms": max_wait_ms, "other": 1}
    return SimpleNamespace(_fetcher=SimpleNamespace(config=config))


def fetch_settings(consumer: SimpleNamespace) -> tuple[int, int]:
    config = consumer._fetcher.config
    return config["fetch_min_bytes"], config["fetch_max_wait_ms"]


def test_a_consumer_gathers_until_it_has_polled_nothing_for_a_second_then_fetches_idle():
    clock = Clock()
    consumer = consumer_made_with(65_536, 100)
    pacing = FetchPacing(SETTINGS, idle_after=1.0, clock=clock)
    pacing.polled(consumer, 3)
    clock.now += 0.9
    pacing.polled(consumer, 0)
    assert fetch_settings(consumer) == (65_536, 100)
    clock.now += 0.1
    pacing.polled(consumer, 0)
    assert fetch_settings(consumer) == (1, 500)
    assert consumer._fetcher.config["other"] == 1


def test_the_first_records_after_a_quiet_spell_bring_gathering_back():
    clock = Clock()
    consumer = consumer_made_with(65_536, 100)
    pacing = FetchPacing(SETTINGS, idle_after=1.0, clock=clock)
    clock.now += 5
    pacing.polled(consumer, 0)
    assert fetch_settings(consumer) == (1, 500)
    pacing.polled(consumer, 1)
    assert fetch_settings(consumer) == (65_536, 100)
    clock.now += 0.5  # less than a second since those records: still gathering
    pacing.polled(consumer, 0)
    assert fetch_settings(consumer) == (65_536, 100)


def test_a_consumer_without_the_fetcher_settings_keeps_its_own():
    clock = Clock()
    pacing = FetchPacing(SETTINGS, idle_after=1.0, clock=clock)
    consumer = SimpleNamespace()
    clock.now += 5
    pacing.polled(consumer, 0)  # no error: the fetches stay as the consumer was made
    assert fetcher_config(consumer) is None
    assert fetcher_config(SimpleNamespace(_fetcher=SimpleNamespace(config={}))) is None
