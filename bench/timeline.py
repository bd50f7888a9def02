"""Where a run's wall time goes: each step announced on the console, timed until the next."""

from __future__ import annotations

import time
from collections.abc import Callable


class Timeline:
    """Steps of one run, in order. `step` prints the message with the time since the start
    and closes the step before it; `seconds` gives each step's share of the wall time (a
    step announced twice adds up)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        output: Callable[[str], None] = lambda line: print(line, flush=True),
    ) -> None:
        self.clock = clock
        self.output = output
        self.started = clock()
        self.marks: list[tuple[str, float]] = []

    def step(self, name: str, message: str) -> None:
        now = self.clock()
        self.marks.append((name, now))
        self.output(f"[bench {now - self.started:4.0f}s] {message}")

    def seconds(self) -> dict[str, float]:
        """Each step's seconds, from its announcement to the next one's (the last: to now),
        in the order first announced."""
        spent: dict[str, float] = {}
        ends = [at for _, at in self.marks[1:]] + [self.clock()]
        for (name, at), end in zip(self.marks, ends, strict=True):
            spent[name] = round(spent.get(name, 0.0) + end - at, 1)
        return spent
