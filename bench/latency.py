"""End-to-end latency: from an event's publish to its award on the all-time leaderboard.

A steady stream at half the measured pipeline throughput (the learning and ticket events of
new agents) carries probes: module completions of agents with no activity before, a few per
second. A probe is visible when the leaderboards service's position endpoint first answers
200 for its agent.

Every agent of the run is registered in the roster first (not timed), as agents are before
they train and as the pipeline's agents are: an agent the roster has not named costs the
leaderboards a write of its team with every batch (handlers._remember_points_teams), a
path production takes only for the odd event that overtakes its agent's registration.

One watcher thread looks for every outstanding probe's all-time entry in the leaderboards
database every `POLL_SECONDS` (one query for all of them: the endpoint reads that entry
too) and asks the endpoint once an entry is there; the time is taken when the endpoint
answers 200. Polling the endpoint itself every 20 ms per probe had put 100-200 requests/s
on the service being measured. The watcher's own query is kept rare for the same reason: at
every 20 ms it ran about 1,200 times in the test's 30 s, and the standings queries were 17%
of the leaderboards database's statement time (4.7 of 27 s). Every 50 ms, a probe is seen
at most 50 ms late (25 on average, against 10), next to a target of 1,000.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from bench import dbtime, stages
from bench.heap import frozen_heap
from bench.kafka_io import producer, publish
from bench.settle import Settler
from bench.stack import Stack, cpu_ms_per_event, cpu_spent
from bench.stats import percentiles
from bench.workload import Message, Workload
from bench.writes import WritesMeter
from services.common.periods import ALL_TIME
from services.leaderboards import standings
from services.leaderboards.boards import board_key
from services.leaderboards.standings import STANDINGS

BACKGROUND_PREFIX = "l"
PROBE_PREFIX = "p"
POLL_SECONDS = 0.05
#: The stream is sent in the slots due every tick, not one wake-up per event: kafka-python
#: then makes one produce request per tick. At 280 events/s the generator alone used 0.22
#: of a core woken for each event (1.80 s of CPU in 8 s, measured apart against the same
#: broker), 0.11 every 20 ms: on a 2-core machine the instrument took CPU from what it
#: measured. A slot goes out at most 20 ms late; a probe's time starts when it is sent.
TICK_SECONDS = 0.02
ALL_TIME_GLOBAL = board_key("all-time", "global")
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
    #: Where the database and each process spent their time while the stream ran: at this
    #: rate batches are small, and what each transaction costs whatever its size shows.
    database_time: list[dict[str, Any]] = field(default_factory=list)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    documents_written: dict[str, Any] | None = None  # writes.py
    #: Each probe's path split at the services' own records (stages.py).
    stages: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            **percentiles(self.samples_ms, (50, 95, 99)),
            "max": max(self.samples_ms, default=0.0),
        }

    def details(self) -> dict[str, Any]:
        """What the report keeps besides the percentiles."""
        return {
            "target_rate": round(self.target_rate, 1),
            "achieved_rate": round(self.achieved_rate, 1),
            "events": self.events,
            "probes": self.probes,
            "lost": self.lost,
            "stages_ms": self.stages,
            "cpu_seconds": self.cpu_seconds,
            "cpu_ms_per_event": cpu_ms_per_event(self.cpu_seconds, self.events),
            "documents_written": self.documents_written,
            "database_time_by_statement": self.database_time,
        }


def run(
    stack: Stack,
    workload: Workload,
    rate: float,
    seconds: float,
    probes_per_second: float,
    prefix: str = "",
    settle_timeout: float = 300.0,
) -> LatencyResult:
    """`prefix`: before every agent id of the run, so that a second run's agents are new."""
    total = max(int(rate * seconds), 1)
    every = max(int(rate / probes_per_second), 1)  # one probe in `every` slots
    background_agents = max(total // 5, 1)
    background = workload.activity(prefix + BACKGROUND_PREFIX, background_agents)
    _register(
        stack,
        [
            *workload.roster_events(prefix + BACKGROUND_PREFIX, background_agents),
            *workload.registrations(prefix + PROBE_PREFIX, range(0, total, every)),
        ],
        settle_timeout,
    )
    result = LatencyResult(target_rate=rate, seconds=seconds)
    watcher = ProbeWatcher(stack, result)

    sender = producer(stack.bootstrap, linger_ms=0)  # a tick's messages go out together
    stream = iter(background)
    db_before = dbtime.snapshot(stack)
    writes = WritesMeter(stack)
    cpu_before = stack.cpu_with_bench()
    started_at = datetime.now(UTC) - timedelta(seconds=1)  # ObjectIds keep whole seconds
    with frozen_heap():
        watcher.start()
        started = time.monotonic()
        try:
            woke = started
            for slot in range(total):
                due = started + slot / rate
                if due > time.monotonic():
                    # Wake for the slot, but at most once a tick: the slots due by then are
                    # sent together.
                    woke = max(due, woke + TICK_SECONDS)
                    time.sleep(max(woke - time.monotonic(), 0.0))
                message: Message | None
                agent_id = ""
                if slot % every == 0:
                    message = workload.probe(prefix + PROBE_PREFIX, slot, datetime.now(UTC))
                    agent_id = message.key
                    result.probes += 1
                else:
                    message = next(stream, None)
                if message is None:
                    continue
                sent_at = time.monotonic()
                sender.send(message.topic, key=message.key.encode(), value=message.value)
                result.events += 1
                if agent_id:
                    watcher.add(agent_id, sent_at)
            sender.flush()
            result.achieved_rate = result.events / (time.monotonic() - started)
        finally:
            watcher.finish(PROBE_TIMEOUT)
            sender.close()
    result.cpu_seconds = cpu_spent(cpu_before, stack.cpu_with_bench())
    result.database_time = dbtime.spent(db_before, dbtime.snapshot(stack))
    result.documents_written = writes.documents_written(result.events, result.cpu_seconds)
    result.samples_ms = [(at - sent) * 1000 for sent, at in watcher.seen.values()]
    to_unix = time.time() - time.monotonic()
    seen = {a: (sent + to_unix, at + to_unix) for a, (sent, at) in watcher.seen.items()}
    points, leaderboards = stack.mongo("points"), stack.mongo("leaderboards")
    try:
        result.stages = stages.split(
            points[stack.database_name("points")],
            leaderboards[stack.database_name("leaderboards")],
            seen,
            since=started_at,
        )
    finally:
        points.close()
        leaderboards.close()
    return result


def _register(stack: Stack, roster: list[Message], timeout: float) -> None:
    """Publishes the run's roster and waits until every service has taken it."""
    settler = Settler(stack)
    try:
        publish(stack.bootstrap, roster)
        settler.wait(timeout)
    finally:
        settler.close()


class ProbeWatcher:
    """Times outstanding probes until each shows on the all-time board (or times out)."""

    def __init__(self, stack: Stack, result: LatencyResult) -> None:
        self.result = result
        self.url = stack.url("leaderboards")
        self.client = stack.mongo("leaderboards")
        self.entries = self.client[stack.database_name("leaderboards")][STANDINGS]
        self.pending: dict[str, float] = {}  # agent id -> sent at (time.monotonic())
        self.seen: dict[str, tuple[float, float]] = {}  # agent id -> (sent at, seen at)
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def add(self, agent_id: str, sent_at: float) -> None:
        with self.lock:
            self.pending[agent_id] = sent_at

    def finish(self, timeout: float) -> None:
        """Waits until every probe is seen or lost, at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not self.pending:
                    break
            time.sleep(POLL_SECONDS)
        self.closing.set()
        self.thread.join()
        with self.lock:
            self.result.lost += len(self.pending)
        self.client.close()

    def _run(self) -> None:
        session = requests.Session()
        while not self.closing.is_set():
            with self.lock:
                pending = dict(self.pending)
            now = time.monotonic()
            for agent_id in [a for a, sent in pending.items() if now - sent > PROBE_TIMEOUT]:
                with self.lock:
                    self.pending.pop(agent_id, None)
                    self.result.lost += 1
            ids = [standings.primary_id(ALL_TIME, agent_id) for agent_id in pending]
            on_board = standings.scored(ALL_TIME_GLOBAL, {"$gt": 0})
            found = (
                {
                    doc["agent_id"]
                    for doc in self.entries.find({"_id": {"$in": ids}, **on_board}, {"agent_id": 1})
                }
                if ids
                else set()
            )
            for agent_id in found:
                response = session.get(
                    f"{self.url}/v1/leaderboards/all-time/agents/{agent_id}",
                    params={"neighbors": 0},
                    timeout=10,
                )
                if response.status_code == 200:
                    seen = time.monotonic()
                    with self.lock:
                        self.seen[agent_id] = (pending[agent_id], seen)
                        self.pending.pop(agent_id, None)
            time.sleep(POLL_SECONDS)
