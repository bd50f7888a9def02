"""Reads through the gateway with `clients` concurrent clients and `agents` on the board.

Loading 100,000 agents through the consumers would take minutes of every service's time
(each award goes through points, credits and badges too), and the rebuild path recomputes
each agent in a transaction of its own. The fastest correct way is what the rebuild
computes, written in bulk: the applied-points log (the rebuild's source of truth), every
board entry as the leaderboards' own `fold` makes it from that log, each in the lane
(partition) its agent's events would come from, the per-lane score count maps of every
board made from those entries, and the roster names. The load's correctness is then
checked with the rebuild's own comparison (no agent differs).

Requests: top 10 of the all-time global board, one agent's all-time rank (2 neighbours),
and the profile of an agent registered in the roster (its own token, as the portal calls).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
import urllib3
from kafka.partitioner.default import murmur2

from bench.heap import frozen_heap
from bench.stack import Stack
from bench.stats import percentiles
from bench.workload import Workload
from contracts.vocabulary import TIERS
from deploy.local.topics import DEFAULT_PARTITIONS
from services.gateway.auth import mint
from services.leaderboards import names
from services.leaderboards.boards import (
    GLOBAL,
    PointChange,
    Standing,
    board_key,
    fold,
    keeps_count_maps,
    resolve_period,
    total,
)
from services.leaderboards.count_maps import unpack
from services.leaderboards.standings import STANDINGS, TEAM_MEMBERS, AgentPeriod, place_of
from services.leaderboards.store import (
    AGENTS,
    APPLIED,
    SCORE_COUNTS,
    BoardReader,
    MapWrites,
    counts_id,
)
from services.runtime.mongo import find_by_ids

BULK_PREFIX = "b"
ALL_TIME_GLOBAL = "all-time|global"
BATCH = 5_000
MIX = (("top10", 0.45), ("rank", 0.45), ("profile", 0.10))


@dataclass
class ApiResult:
    agents_on_board: int = 0
    loaded_agents: int = 0
    load_seconds: float = 0.0
    views_warm_seconds: float | None = None
    load_docs: int = 0
    load_by_collection: dict[str, dict[str, float]] = field(default_factory=dict)
    load_check: dict[str, Any] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: float = 0.0
    database_time: list[dict[str, Any]] = field(default_factory=list)
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    def summary(self, clients: int) -> dict[str, Any]:
        top, rank, profile = (self.latencies[k] for k in ("top10", "rank", "profile"))
        count = sum(len(v) for v in self.latencies.values())
        return {
            "agents": self.agents_on_board,
            "clients": clients,
            "top10_p50_ms": percentiles(top, (50,))["p50"],
            "top10_p99_ms": percentiles(top, (99,))["p99"],
            "rank_p50_ms": percentiles(rank, (50,))["p50"],
            "rank_p99_ms": percentiles(rank, (99,))["p99"],
            "profile_p50_ms": percentiles(profile, (50,))["p50"],
            "profile_p99_ms": percentiles(profile, (99,))["p99"],
            "requests_per_s": round(count / self.seconds, 1) if self.seconds else 0.0,
            "requests": {k: len(v) for k, v in self.latencies.items()},
            "errors": dict(self.errors),
            "bulk_load": {
                "agents": self.loaded_agents,
                "documents": self.load_docs,
                "seconds": round(self.load_seconds, 1),
                "by_collection": self.load_by_collection,
                "check": self.load_check,
            },
            # until the leaderboards' read views held the boards read (None: never did)
            "views_warm_seconds": self.views_warm_seconds,
            "cpu_seconds": self.cpu_seconds,
            "database_time_by_statement": self.database_time,
        }


# --- the bulk load -------------------------------------------------------------------------


def bulk_load(stack: Stack, workload: Workload, count: int, seed: int) -> dict[str, Any]:
    """`count` agents with one award each in the current week, as the rebuild would store them."""
    rng = random.Random(f"{seed}:bulk")
    start, end = workload.window
    span = (end - start).total_seconds()
    now = datetime.now(UTC)
    changes = []
    for i in range(count):
        changes.append(
            PointChange(
                event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                agent_id=f"{BULK_PREFIX}{i:06d}",
                delta=rng.randint(1, 2_000),
                occurred_at=start + timedelta(milliseconds=int(rng.uniform(0, span) * 1000)),
                team_id=f"{BULK_PREFIX}team-{i // 10:05d}",
                tier=rng.choice(TIERS),
            )
        )
    entries = fold(changes, workload.tz)
    lanes = {c.agent_id: agent_lane(c.agent_id) for c in changes}
    client = stack.mongo("leaderboards")
    db = client[stack.database_name("leaderboards")]
    load = Load()
    try:
        load.insert(
            db[APPLIED],
            (
                {
                    "_id": c.event_id,
                    "agent_id": c.agent_id,
                    "delta": c.delta,
                    "occurred_at": c.occurred_at,
                    "team_id": c.team_id,
                    "tier": c.tier,
                    "type": "gamification.points.awarded.v1",
                    "award_id": c.event_id,
                    "applied_at": now,
                    "lane": lanes[c.agent_id],
                }
                for c in changes
            ),
        )
        load.insert(
            db[AGENTS],
            (
                {
                    "_id": c.agent_id,
                    "name": f"Agent {c.agent_id}",
                    "team_id": c.team_id,
                    "tier": c.tier,
                    "roster_at": now - timedelta(days=30),
                    "roster_event_id": c.event_id,
                }
                for c in changes
            ),
        )
        # Written past the roster handler, as a restore would be: the read views' names
        # are read again (services/leaderboards/names.py).
        names.invalidate(db)
        write_board_documents(db, entries, lanes.__getitem__, load)
    finally:
        client.close()
    return {
        "documents": load.documents,
        "entries": len(entries),
        "by_collection": load.by_collection,
    }


def agent_lane(agent_id: str, partitions: int = DEFAULT_PARTITIONS) -> int:
    """The partition the producers' default partitioner puts an agent's events in (the
    events are keyed by agent id): the lane the consumer would count its entries in."""
    return (murmur2(agent_id.encode()) & 0x7FFFFFFF) % partitions


def write_board_documents(
    db: Any,
    entries: dict[tuple[str, str], Standing],
    lane_of: Callable[[str], int],
    load: Load,
) -> None:
    """The board entries in standings documents, their team boards' member records, and
    their boards' per-lane score count maps (team boards have none), as the consumer and
    the rebuild store them
    (services/leaderboards/store.py), recorded in `load`. The agents are new: none of
    their documents is stored yet."""
    periods: dict[tuple[str, str], AgentPeriod] = {}
    for (board, agent), s in entries.items():
        period = place_of(board).period
        agent_period = periods.get((period, agent))
        if agent_period is None:
            agent_period = periods[(period, agent)] = AgentPeriod(period, agent, None)
        agent_period.put(board, s.score, s.reached_at, lane_of(agent), version=1)
    load.insert(db[STANDINGS], (doc for p in periods.values() for doc in p.documents()))
    load.insert(db[TEAM_MEMBERS], (doc for p in periods.values() for doc in p.members()))
    counts: dict[tuple[str, int], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for (board, agent), s in entries.items():
        if s.score > 0 and keeps_count_maps(board):
            counts[(board, lane_of(agent))][s.score] += 1
    # The maps the pipeline's agents already have (the global and tier boards) get the
    # counts added; the others are new, and inserted (see MapWrites.put).
    ids = {key: counts_id(*key) for key in counts}
    existing = {
        id_: unpack(doc.get("counts"))
        for id_, doc in find_by_ids(db[SCORE_COUNTS], ids.values()).items()
    }
    writes = MapWrites()
    for (board, lane), by_score in counts.items():
        id_ = ids[(board, lane)]
        held = existing.get(id_, {})
        merged = {s: held.get(s, 0) + by_score.get(s, 0) for s in held.keys() | by_score}
        writes.put(board, lane, merged, absent=id_ not in existing)
    started = time.monotonic()
    writes.apply(db)
    load.record(SCORE_COUNTS, len(writes), time.monotonic() - started)


@dataclass
class Load:
    """Documents written and seconds taken, per collection: which part of a load is slow."""

    by_collection: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def documents(self) -> int:
        return int(sum(c["documents"] for c in self.by_collection.values()))

    def record(self, collection: str, documents: int, seconds: float) -> None:
        self.by_collection[collection] = {"documents": documents, "seconds": round(seconds, 1)}

    def insert(self, collection: Any, documents: Any) -> None:
        """Inserts `documents` in batches of BATCH."""
        started = time.monotonic()
        batch: list[dict[str, Any]] = []
        written = 0
        for document in documents:
            batch.append(document)
            if len(batch) == BATCH:
                collection.insert_many(batch, ordered=False)
                written, batch = written + len(batch), []
        if batch:
            collection.insert_many(batch, ordered=False)
            written += len(batch)
        self.record(collection.name, written, time.monotonic() - started)


def agents_on_all_time_board(stack: Stack) -> int:
    """Agents on the all-time global board now: the sum of its score count maps."""
    client = stack.mongo("leaderboards")
    try:
        return total(
            BoardReader(client[stack.database_name("leaderboards")]).histogram(ALL_TIME_GLOBAL)
        )
    finally:
        client.close()


def verify_load(stack: Stack, sample_agents: list[str], tz: str) -> dict[str, Any]:
    """The rebuild's per-agent comparison (log fold vs stored entries, and each entry in its
    agent's lane) for a sample, and the lookups the position endpoint makes."""
    client = stack.mongo("leaderboards")
    try:
        reader = BoardReader(client[stack.database_name("leaderboards")])
        wrong = 0
        for agent_id in sample_agents:
            want = {
                board: (s.score, s.reached_at)
                for (board, _), s in fold(reader.log(agent_id), tz).items()
            }
            placed = reader.agent_entries(agent_id, want)
            have = {board: (r.score, r.reached_at) for board, r in placed.items()}
            lanes = {r.lane for r in placed.values()}
            found = reader.entry(ALL_TIME_GLOBAL, agent_id)
            wrong += want != have or lanes != {agent_lane(agent_id)} or found is None
        on_board = total(reader.histogram(ALL_TIME_GLOBAL))
    finally:
        client.close()
    return {
        "agents_compared": len(sample_agents),
        "agents_differing": wrong,
        "all_time_total": on_board,
    }


# --- the read views ------------------------------------------------------------------------

VIEW_ENTRIES = "skillquest_leaderboard_view_entries"
VIEW_NAMES = "skillquest_leaderboard_view_names"


def warm_views(stack: Stack, profile_agent: str, tz: str, timeout: float) -> float | None:
    """The leaderboards' read views (services/leaderboards/views.py) hold a board once a
    read asked for it and the service has read it whole, and the roster's names while they
    hold a board (names.py); until then the database answers. The portal reads its boards
    all day, so the read test measures them held: this asks once for the two boards of the
    mix (all-time, and the current week through a profile) and waits until the views hold
    them and the names of everyone the roster has named. Returns the seconds it took
    (reported), None if they were not held within `timeout` (the reads then run on the
    database as well)."""
    client = stack.mongo("leaderboards")
    try:
        db = client[stack.database_name("leaderboards")]
        reader = BoardReader(db)
        weekly = board_key(resolve_period("weekly", datetime.now(UTC), tz).key, GLOBAL)
        boards = sum(total(reader.histogram(board)) for board in (ALL_TIME_GLOBAL, weekly))
        # Everyone the roster has named.
        named = db[AGENTS].count_documents({"roster_at": {"$ne": None}})
    finally:
        client.close()
    wanted = {VIEW_ENTRIES: boards, VIEW_NAMES: named}
    started = time.monotonic()
    base = stack.url("gateway")
    service_token = mint(stack.secret, sub="bench", role="service", ttl_seconds=600)
    agent_token = mint(stack.secret, sub=profile_agent, role="agent", ttl_seconds=600)
    with requests.Session() as session:
        for path, token in (
            ("/v1/leaderboards/all-time?limit=10", service_token),
            (f"/v1/agents/{profile_agent}/profile", agent_token),
        ):
            session.get(f"{base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        while time.monotonic() - started < timeout:
            metrics = session.get(f"{stack.url('leaderboards')}/metrics", timeout=30).text
            held = {
                name: float(line.split()[-1])
                for line in metrics.splitlines()
                for name in wanted
                if line.startswith(f"{name} ")
            }
            if all(held.get(name, 0.0) >= n for name, n in wanted.items()):
                return time.monotonic() - started
            time.sleep(0.2)  # the views are read whole in the service: poll its gauges
    return None


# --- the read load -------------------------------------------------------------------------


def read_load(
    stack: Stack,
    board_agents: list[str],
    profile_agents: list[str],
    seconds: float,
    clients: int,
    seed: int,
) -> ApiResult:
    result = ApiResult()
    base = stack.url("gateway")
    service_token = mint(stack.secret, sub="bench", role="service", ttl_seconds=3600)
    agent_tokens = {
        a: mint(stack.secret, sub=a, role="agent", ttl_seconds=3600) for a in profile_agents
    }
    lock = threading.Lock()
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]

    # One urllib3 pool per client, not requests: the clients share the bench's process and
    # the machine's two cores with the stack, and requests cost about twice the CPU per call
    # (its session merges cookies, hooks and environment settings on every request).
    def client(n: int) -> None:
        rng = random.Random(f"{seed}:client:{n}")
        pool = urllib3.PoolManager(maxsize=1, retries=False, timeout=30.0)
        while time.monotonic() < deadline:
            kind = rng.choices(kinds, weights)[0]
            if kind == "top10":
                url, token = f"{base}/v1/leaderboards/all-time?limit=10", service_token
            elif kind == "rank":
                agent = rng.choice(board_agents)
                url, token = f"{base}/v1/leaderboards/all-time/agents/{agent}", service_token
            else:
                agent = rng.choice(profile_agents)
                url, token = f"{base}/v1/agents/{agent}/profile", agent_tokens[agent]
            started = time.perf_counter()
            response = pool.request("GET", url, headers={"Authorization": f"Bearer {token}"})
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                # Every request counts in the percentiles: a timeout (503) is a slow answer.
                result.latencies[kind].append(elapsed)
                if response.status != 200:
                    result.errors[f"{kind}:{response.status}"] += 1
                elif kind == "profile" and response.json().get("unavailable"):
                    result.errors["profile:partial"] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    with frozen_heap():
        started = time.monotonic()
        deadline = started + seconds
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        result.seconds = time.monotonic() - started
    return result


def register_profiles(stack: Stack, workload: Workload, prefix: str, count: int) -> list[str]:
    """Registers pipeline agents in the roster (through the gateway), so profiles resolve."""
    token = mint(stack.secret, sub="bench-admin", role="admin", ttl_seconds=3600)
    session = requests.Session()
    registered = []
    for i in range(count):
        agent = workload.agent(prefix, i)
        response = session.post(
            f"{stack.url('gateway')}/v1/agents",
            json={
                "agent_id": agent.agent_id,
                "name": agent.name,
                "team_id": agent.team_id,
                "tier": agent.tier,
            },
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        if response.status_code in (200, 201, 409):
            registered.append(agent.agent_id)
    return registered
