"""Recent answers of a read that may be a moment old, kept for a fixed number of seconds.

The API's reads are eventually consistent with writes within about a second (clients poll),
so a read of data that rarely changes (the course catalogue a profile's credits, badges and
courses parts each consult) need not go to the database on every request: on the local
database such a read was a fifth of a profile's cost. The value kept must not be changed
by callers: keep tuples, frozen models and read-only mappings.

Green threads switch only on I/O, so the cache is used without a lock; two requests that
miss together both load, and the later value stays.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Generic, TypeVar

from cachetools import TTLCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Keys kept per read (a few tiers or tags; one per course for the courses by id).
MAX_KEYS = 1_024


class RecentReads(Generic[V]):
    """`get(key, load)`: the value loaded for `key` less than `seconds` ago, else `load()`.
    `seconds` 0 keeps nothing (every call loads)."""

    def __init__(
        self,
        seconds: float,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kept: TTLCache[Hashable, V] | None = (
            TTLCache(maxsize=max_keys, ttl=seconds, timer=clock) if seconds > 0 else None
        )

    def get(self, key: Hashable, load: Callable[[], V]) -> V:
        if self._kept is None:
            return load()
        try:
            return self._kept[key]
        except KeyError:
            pass
        value = load()
        self._kept[key] = value
        return value

    def get_many(self, keys: Iterable[K], load: Callable[[list[K]], Mapping[K, V]]) -> dict[K, V]:
        """The values of `keys`: those kept, and the rest from one `load(missing keys)`
        (a key it does not return is not kept, and is read again next time)."""
        wanted = list(dict.fromkeys(keys))
        if self._kept is None:
            return dict(load(wanted)) if wanted else {}
        found: dict[K, V] = {}
        missing = []
        for key in wanted:
            try:
                found[key] = self._kept[key]
            except KeyError:
                missing.append(key)
        if missing:
            loaded = load(missing)
            for key, value in loaded.items():
                self._kept[key] = value
            found.update(loaded)
        return found

    def clear(self) -> None:
        """Forget every answer (a writer in this process that must read its own change)."""
        if self._kept is not None:
            self._kept.clear()
