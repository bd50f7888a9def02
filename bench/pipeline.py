"""Pipeline throughput and correctness.

Setup (not timed): the catalogue and the roster go onto their topics and the system settles.
Then the learning and ticket events of every agent are published as fast as the broker
takes them; the figure is events / (time from the first send until every consumer group is
at zero lag and every outbox is empty). The settled views are then compared with what the
pure rule functions compute from the same stream.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from pymongo import MongoClient

from bench import dbtime
from bench.expected import Expected, expected_views
from bench.kafka_io import publish, read_topic
from bench.settle import Settler
from bench.stack import Stack, cpu_spent
from bench.workload import Workload
from bench.writes import WritesMeter
from contracts.envelope import CloudEvent
from contracts.events import BadgeAwarded
from contracts.parsing import parse_event
from contracts.topics import GAMIFICATION_BADGES
from services.common.periods import month_key, week_key
from services.leaderboards import standings
from services.leaderboards.boards import board_key, team_scope, tier_scope
from services.leaderboards.standings import STANDINGS

AGENT_PREFIX = "a"


@dataclass
class PipelineResult:
    events: int = 0
    agents: int = 0
    setup_events: int = 0
    setup_seconds: float = 0.0
    publish_seconds: float = 0.0
    settle_seconds: float = 0.0
    events_per_s: float = 0.0
    event_mix: dict[str, int] = field(default_factory=dict)
    derived_events: dict[str, int] = field(default_factory=dict)
    correct: bool = False
    checks: dict[str, Any] = field(default_factory=dict)
    database_time: list[dict[str, Any]] = field(default_factory=list)
    #: CPU seconds per process while the pipeline ran, and per 1,000 events
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    #: The documents the database servers wrote meanwhile (writes.py)
    documents_written: dict[str, Any] | None = None
    expected: Expected | None = None


def run(
    stack: Stack,
    workload: Workload,
    agents: int,
    settle_timeout: float,
    sample: int,
    during: Callable[[float], Any] | None = None,
) -> PipelineResult:
    """`during(seconds)` is started with the timed phase (the optional profiler)."""
    result = PipelineResult(agents=agents)
    settler = Settler(stack)
    try:
        setup = workload.catalogue_events() + workload.roster_events(AGENT_PREFIX, agents)
        started = time.monotonic()
        publish(stack.bootstrap, setup)
        settler.wait(settle_timeout)
        result.setup_events, result.setup_seconds = len(setup), time.monotonic() - started
        print(
            f"  setup: {len(setup)} catalogue and roster events settled in "
            f"{result.setup_seconds:.1f}s",
            flush=True,
        )

        stream = workload.activity(AGENT_PREFIX, agents)
        result.events = len(stream)
        for m in stream:
            result.event_mix[m.event.type] = result.event_mix.get(m.event.type, 0) + 1
        print(
            f"  publishing {len(stream)} learning and ticket events of {agents} agents", flush=True
        )
        if during is not None:
            during(60.0)
        before = dbtime.snapshot(stack)
        writes = WritesMeter(stack)
        cpu_before = stack.cpu_with_bench()
        started = time.monotonic()
        publish(stack.bootstrap, stream)
        result.publish_seconds = time.monotonic() - started
        settled_at = settler.wait(settle_timeout)
        result.settle_seconds = settled_at - started
        result.events_per_s = result.events / result.settle_seconds
        result.cpu_seconds = cpu_spent(cpu_before, stack.cpu_with_bench())
        result.database_time = dbtime.spent(before, dbtime.snapshot(stack))
        result.documents_written = writes.documents_written(result.events, result.cpu_seconds)
        print(
            f"  published in {result.publish_seconds:.1f}s, settled after "
            f"{result.settle_seconds:.1f}s: {result.events_per_s:.0f} events/s",
            flush=True,
        )
    finally:
        settler.close()

    records = read_topic(stack.bootstrap, GAMIFICATION_BADGES)
    badges = [e for e in (parse_event(r.value) for r in records) if isinstance(e, BadgeAwarded)]
    result.derived_events = {"badges_awarded": len(badges)}
    events: list[CloudEvent] = [m.event for m in stream]
    expected = expected_views([*events, *badges], workload.tz)
    result.expected = expected
    result.derived_events["agents_on_all_time_board"] = sum(
        1 for (board, _a) in expected.entries if board == board_key("all-time", "global")
    )
    result.checks = check(stack, workload, expected, agents, random.Random(workload.seed), sample)
    result.correct = all(c["mismatches"] == 0 for c in result.checks.values())
    return result


# --- correctness ---------------------------------------------------------------------------


def check(
    stack: Stack,
    workload: Workload,
    expected: Expected,
    agents: int,
    rng: random.Random,
    sample: int,
) -> dict[str, Any]:
    checks = {
        "all_balances_in_points_db": _balances_in_db(stack, expected),
        "all_board_entries_in_leaderboards_db": _entries_in_db(stack, expected),
    }
    ids = [workload.agent(AGENT_PREFIX, i) for i in rng.sample(range(agents), min(sample, agents))]
    checks.update(_over_http(stack, workload, expected, ids))
    return checks


def _outcome(mismatches: list[Any], checked: int) -> dict[str, Any]:
    return {"checked": checked, "mismatches": len(mismatches), "examples": mismatches[:3]}


def _balances_in_db(stack: Stack, expected: Expected) -> dict[str, Any]:
    client: MongoClient = stack.mongo("points")
    try:
        docs = client[stack.database_name("points")]["accounts"].find({}, {"balance": 1})
        actual = {d["_id"]: d["balance"] for d in docs if d["_id"].startswith(AGENT_PREFIX)}
    finally:
        client.close()
    names = set(actual) | set(expected.balances)
    wrong = [
        (a, actual.get(a, 0), expected.balances.get(a, 0))
        for a in sorted(names)
        if actual.get(a, 0) != expected.balances.get(a, 0)
    ]
    return _outcome(wrong, len(names))


def _entries_in_db(stack: Stack, expected: Expected) -> dict[str, Any]:
    client: MongoClient = stack.mongo("leaderboards")
    try:
        entries = standings.all_entries(client[stack.database_name("leaderboards")][STANDINGS])
        actual = {
            (board, row.agent_id): (row.score, row.reached_at)
            for board, row in entries
            if row.score > 0 and row.agent_id.startswith(AGENT_PREFIX)
        }
    finally:
        client.close()
    want = {key: (s.score, s.reached_at) for key, s in expected.entries.items() if s.score > 0}
    wrong = [
        (k, actual.get(k), want.get(k))
        for k in sorted(set(actual) | set(want))
        if actual.get(k) != want.get(k)
    ]
    return _outcome([(str(k), str(a), str(w)) for k, a, w in wrong], len(want))


def _over_http(
    stack: Stack, workload: Workload, expected: Expected, agents: list[Any]
) -> dict[str, Any]:
    """Balances and ranks as the services' APIs answer them, for a sample of agents."""
    now, tz = workload.now, workload.tz
    week, month = week_key(now, tz), month_key(now, tz)
    ranks: dict[str, dict[str, tuple[int, int]]] = {}

    def rank_of(board: str) -> dict[str, tuple[int, int]]:
        if board not in ranks:
            ranks[board] = {a: (r, s.score) for r, a, s in expected.board(board)}
        return ranks[board]

    points_url, boards_url = stack.url("points"), stack.url("leaderboards")
    session = requests.Session()
    balance_wrong: list[Any] = []
    rank_wrong: list[Any] = []
    lookups = []
    for agent in agents:
        lookups += [
            (agent.agent_id, "all-time", "global", board_key("all-time", "global")),
            (
                agent.agent_id,
                "weekly",
                team_scope(agent.team_id),
                board_key(week, team_scope(agent.team_id)),
            ),
            (
                agent.agent_id,
                "monthly",
                tier_scope(agent.tier),
                board_key(month, tier_scope(agent.tier)),
            ),
        ]
    for board in {lookup[3] for lookup in lookups}:
        rank_of(board)

    def balance(agent_id: str) -> None:
        body = session.get(f"{points_url}/v1/agents/{agent_id}/points?limit=1", timeout=30).json()
        if body["balance"] != expected.balances.get(agent_id, 0):
            balance_wrong.append((agent_id, body["balance"], expected.balances.get(agent_id, 0)))

    def position(lookup: tuple[str, str, str, str]) -> None:
        agent_id, period, scope, board = lookup
        response = session.get(
            f"{boards_url}/v1/leaderboards/{period}/agents/{agent_id}",
            params={"scope": scope, "neighbors": "0"},
            timeout=30,
        )
        want = ranks[board].get(agent_id)
        got = None
        if response.status_code == 200:
            body = response.json()
            got = (body["rank"], body["score"])
        if got != want:
            rank_wrong.append((agent_id, period, scope, got, want))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(balance, [a.agent_id for a in agents]))
        list(pool.map(position, lookups))

    top = session.get(
        f"{boards_url}/v1/leaderboards/all-time", params={"limit": 100}, timeout=30
    ).json()
    got_top = [(e["rank"], e["agent_id"], e["score"]) for e in top["entries"]]
    want_top = [
        (r, a, s.score)
        for r, a, s in expected.board(board_key("all-time", "global"))
        if a.startswith(AGENT_PREFIX)
    ][:100]
    top_wrong = [] if got_top == want_top else [(got_top[:3], want_top[:3])]
    return {
        "sample_balances_over_http": _outcome(balance_wrong, len(agents)),
        "sample_ranks_over_http": _outcome(rank_wrong, len(lookups)),
        "all_time_top_100_over_http": _outcome(top_wrong, 1),
    }
