"""End-to-end latency: from an event's publish to its award on the all-time leaderboard.

A steady stream at half the measured pipeline throughput (the learning and ticket events of
new agents) carries probes: module completions of agents never seen before, a few per
second. A probe is visible when the leaderboards service's position endpoint first answers
200 for its agent; each probe is polled every `POLL_SECONDS` by its own thread.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

from bench.kafka_io import producer
from bench.stack import Stack
from bench.stats import percentiles
from bench.workload import Message, Workload

BACKGROUND_PREFIX = "l"
PROBE_PREFIX = "p"
POLL_SECONDS = 0.02
PROBE_TIMEOUT = 60.0


@dataclass
class LatencyResult:
    target_rate: float = 0.0
    achieved_rate: float = 0.0
    seconds: float = 0.0
    events: int = 0
    probes: int = 0
    lost: int = 0
    samples_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            **percentiles(self.samples_ms, (50, 95, 99)),
            "max": max(self.samples_ms, default=0.0),
        }


def run(
    stack: Stack, workload: Workload, rate: float, seconds: float, probes_per_second: float
) -> LatencyResult:
    total = max(int(rate * seconds), 1)
    every = max(int(rate / probes_per_second), 1)  # one probe in `every` slots
    background = workload.activity(BACKGROUND_PREFIX, max(total // 5, 1))
    result = LatencyResult(target_rate=rate, seconds=seconds)
    lock = threading.Lock()
    url = stack.url("leaderboards")

    def watch(agent_id: str, sent_at: float) -> None:
        session = requests.Session()
        deadline = sent_at + PROBE_TIMEOUT
        while time.monotonic() < deadline:
            response = session.get(
                f"{url}/v1/leaderboards/all-time/agents/{agent_id}",
                params={"neighbors": 0},
                timeout=10,
            )
            if response.status_code == 200:
                seen = time.monotonic()
                with lock:
                    result.samples_ms.append((seen - sent_at) * 1000)
                return
            time.sleep(POLL_SECONDS)
        with lock:
            result.lost += 1

    sender = producer(stack.bootstrap, linger_ms=5)
    stream = iter(background)
    watchers = ThreadPoolExecutor(max_workers=64)
    started = time.monotonic()
    try:
        for slot in range(total):
            due = started + slot / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if slot % every == 0:
                agent_id = f"{PROBE_PREFIX}{slot:06d}"
                message: Message | None = workload.probe(agent_id, datetime.now(UTC))
                result.probes += 1
            else:
                message = next(stream, None)
                agent_id = ""
            if message is None:
                continue
            sent_at = time.monotonic()
            sender.send(message.topic, key=message.key.encode(), value=message.value)
            result.events += 1
            if agent_id:
                watchers.submit(watch, agent_id, sent_at)
        sender.flush()
        result.achieved_rate = result.events / (time.monotonic() - started)
    finally:
        watchers.shutdown(wait=True)
        sender.close()
    return result
