"""`python -m bench` (`make bench`): one run on a fresh local stack, in this order:

1. raw ceilings of the broker and the database (before any service starts);
2. the services start, as separate `nameko run` processes;
3. pipeline throughput and correctness;
4. end-to-end latency at half the measured throughput, then at a tenth (light load);
5. reads through the gateway with the board bulk-loaded to `api_agents` agents;
6. the stack's CPU while it has nothing to do;
then the table is printed and `.bench/report.json` written. BENCH_QUICK=1: about a minute.
"""

from __future__ import annotations

import platform
import random
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench import api, dbtime, latency, pipeline, raw
from bench.config import REPORT_FILE, WORK_DIR, BenchConfig, from_environment
from bench.heap import collector_paused
from bench.profiling import Profiler
from bench.report import table, write
from bench.settle import Settler
from bench.stack import DATABASE_SERVERS, Stack, cpu_ms_per_event, cpu_spent
from bench.timeline import Timeline
from bench.workload import Workload
from contracts.topics import ALL_TOPICS

RAW_TOPIC = "bench.raw"
#: The light-load latency runs at this fraction of the throughput (1/LIGHT_SHARE): where
#: the machine is far from saturated, it shows what the path itself takes.
LIGHT_SHARE = 10
LIGHT_PREFIX = "w"


def run(config: BenchConfig) -> dict[str, Any]:
    report: dict[str, Any] = {
        "mode": "quick" if config.quick else "full",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": _cpus(),
            "python": platform.python_version(),
            "load_average_at_start": _load(),
        },
        "time_zone": config.time_zone,
    }
    timeline = Timeline()
    step = timeline.step
    with Stack(config) as stack:
        step("servers", "starting a fresh broker and database on free ports")
        stack.start_servers()
        stack.create_topics([*ALL_TOPICS, RAW_TOPIC])

        step("raw", "raw ceilings (broker, then database)")
        report.update(raw.broker_ceilings(stack, RAW_TOPIC, config.raw_messages))
        report.update(raw.database_ceilings(stack, config.raw_bulk_docs, config.raw_single_writes))
        report["raw_sizes"] = {
            "messages": config.raw_messages,
            "bulk_docs": config.raw_bulk_docs,
            "single_writes": config.raw_single_writes,
        }

        step("services", "starting the services (nameko run, one process each)")
        service_start = time.monotonic()
        stack.start_services()
        report["services_ready_seconds"] = round(time.monotonic() - service_start, 1)
        # Which server holds which service's database (the raw ceilings are the first's).
        report["database_servers"] = {name: list(held) for name, held in DATABASE_SERVERS.items()}

        workload = Workload(config.time_zone, config.seed)
        step("pipeline", f"pipeline: {config.pipeline_agents} agents")
        profiler = Profiler(stack, WORK_DIR, "pipeline") if config.profile == "pipeline" else None
        result = pipeline.run(
            stack,
            workload,
            config.pipeline_agents,
            config.settle_timeout_seconds,
            config.correctness_sample,
            during=profiler.start if profiler else None,
        )
        report["pipeline_events_per_s"] = round(result.events_per_s, 1)
        report["pipeline_correct"] = result.correct
        report["pipeline"] = {
            "agents": result.agents,
            "agents_asked_by_the_issue": 10_000,
            "projected_seconds_for_10000_agents": round(
                result.events / max(result.agents, 1) * 10_000 / max(result.events_per_s, 0.1)
            ),
            "events": result.events,
            "event_mix": result.event_mix,
            "publish_seconds": round(result.publish_seconds, 1),
            "settle_seconds": round(result.settle_seconds, 1),
            "derived": result.derived_events,
            "setup": {"events": result.setup_events, "seconds": round(result.setup_seconds, 1)},
            "checks": result.checks,
            "cpu_seconds": result.cpu_seconds,
            "cpu_ms_per_event": cpu_ms_per_event(result.cpu_seconds, result.events),
            "documents_written": result.documents_written,
            "database_time_by_statement": result.database_time,
        }
        if profiler is not None:
            report["profile"] = profiler.finish()

        rate = max(result.events_per_s / 2, 1.0)
        report.update(
            _latency(stack, workload, config, timeline, "e2e", rate, config.latency_seconds)
        )
        settler = Settler(stack)
        try:
            settler.wait(config.settle_timeout_seconds)
            light_rate = max(result.events_per_s / LIGHT_SHARE, 1.0)
            seconds = config.light_latency_seconds
            report.update(
                _latency(
                    stack,
                    workload,
                    config,
                    timeline,
                    "e2e_light",
                    light_rate,
                    seconds,
                    LIGHT_PREFIX,
                )
            )
            settler.wait(config.settle_timeout_seconds)

            step(
                "bulk_load",
                f"reads: registering {config.profile_agents} agents in the roster, "
                f"bulk-loading the board to {config.api_agents} agents",
            )
            profiles = api.register_profiles(
                stack, workload, pipeline.AGENT_PREFIX, config.profile_agents
            )
            settler.wait(config.settle_timeout_seconds)
        finally:
            settler.close()
        on_board = api.agents_on_all_time_board(stack)
        to_load = max(config.api_agents - on_board, 0)
        load_started = time.monotonic()
        with collector_paused():
            loaded = api.bulk_load(stack, workload, to_load, config.seed)
        load_seconds = time.monotonic() - load_started
        rng = random.Random(config.seed)
        bulk_ids = [f"{api.BULK_PREFIX}{i:06d}" for i in range(to_load)]
        check = api.verify_load(stack, rng.sample(bulk_ids, min(200, to_load)), config.time_zone)
        board_agents = bulk_ids or profiles
        step(
            "views_warm", "reads: waiting for the leaderboards' read views to hold the boards read"
        )
        warm = api.warm_views(stack, profiles[0], config.time_zone, timeout=120.0)
        step("reads", f"reads: {config.api_clients} clients for {config.api_seconds:.0f}s")
        reads_profiler = Profiler(stack, WORK_DIR, "reads") if config.profile == "reads" else None
        if reads_profiler is not None:
            reads_profiler.start(config.api_seconds)
        before = dbtime.snapshot(stack)
        cpu_before = stack.cpu_with_bench()
        reads = api.read_load(
            stack, board_agents, profiles, config.api_seconds, config.api_clients, config.seed
        )
        reads.cpu_seconds = cpu_spent(cpu_before, stack.cpu_with_bench())
        reads.database_time = dbtime.spent(before, dbtime.snapshot(stack))
        if reads_profiler is not None:
            report["profile_reads"] = reads_profiler.finish()
        reads.agents_on_board = on_board + to_load
        reads.loaded_agents, reads.load_seconds = to_load, load_seconds
        reads.views_warm_seconds = None if warm is None else round(warm, 1)
        reads.load_docs, reads.load_check = loaded["documents"], check
        reads.load_by_collection = loaded["by_collection"]
        report["api"] = reads.summary(config.api_clients)

        step("idle", f"idle: the stack's CPU for {config.idle_seconds:.0f}s with nothing to do")
        report.update(_idle(stack, config.idle_seconds))

        memory = stack.memory()
        report["rss_mb"] = {name: round(m.get("peak", 0.0), 1) for name, m in memory.items()}
        report["rss_mb_now"] = {name: round(m.get("now", 0.0), 1) for name, m in memory.items()}
        step("stop", "stopping the stack")
    report["wall_seconds_by_step"] = timeline.seconds()
    report["wall_seconds"] = round(time.monotonic() - timeline.started, 1)
    return report


def _latency(
    stack: Stack,
    workload: Workload,
    config: BenchConfig,
    timeline: Timeline,
    key: str,
    rate: float,
    seconds: float,
    prefix: str = "",
) -> dict[str, Any]:
    """One end-to-end latency run, as the report keeps it: `<key>_latency_ms` (the
    percentiles) and `<key>` (the rest). `prefix`: agents of its own (latency.run)."""
    timeline.step(key, f"{key}: end-to-end latency at {rate:.0f} events/s for {seconds:.0f}s")
    result = latency.run(
        stack,
        workload,
        rate,
        seconds,
        min(config.probes_per_second, rate),
        prefix=prefix,
        settle_timeout=config.settle_timeout_seconds,
    )
    return {f"{key}_latency_ms": result.summary(), key: result.details()}


def _idle(stack: Stack, seconds: float) -> dict[str, Any]:
    """What the stack costs with no traffic: consumers polling, relays, leases, sweeps.
    It is taken from the machine's cores during every other measurement."""
    before = stack.cpu()
    time.sleep(seconds)  # the measurement window itself: nothing to wait for
    spent = cpu_spent(before, stack.cpu())
    return {
        "idle_cpu_cores": round(sum(spent.values()) / seconds, 2),
        "idle": {"seconds": seconds, "cpu_seconds": spent},
    }


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _load() -> list[float]:
    import os

    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    config = from_environment()
    report = run(config)
    write(report, REPORT_FILE)
    print()
    print(table(report))
    print(
        f"\nmode {report['mode']}, wall time {report['wall_seconds']:.0f}s; "
        f"report: {REPORT_FILE.relative_to(REPORT_FILE.parents[1])}"
    )
    steps = report["wall_seconds_by_step"]
    print("wall time by step: " + ", ".join(f"{name} {s:.0f}s" for name, s in steps.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
