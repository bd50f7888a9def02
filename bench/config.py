"""The sizes of one benchmark run: the full run (about 5 minutes) or `BENCH_QUICK=1` (about 1)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK_DIR = ROOT / ".bench"
REPORT_FILE = WORK_DIR / "report.json"


@dataclass(frozen=True)
class BenchConfig:
    quick: bool
    time_zone: str
    seed: int
    # raw ceilings
    raw_messages: int  # 1 KB messages produced, then consumed
    raw_bulk_docs: int  # insert_many in batches of 1,000
    raw_single_writes: int  # insert_one, one at a time
    # pipeline
    pipeline_agents: int
    correctness_sample: int  # agents whose balance and ranks are read over HTTP
    settle_timeout_seconds: float
    # end-to-end latency
    latency_seconds: float
    probes_per_second: float
    #: the same at a tenth of the throughput, where nothing queues: the latency floor
    light_latency_seconds: float
    # reads through the gateway
    api_agents: int  # agents on the all-time board during the read test
    api_seconds: float
    api_clients: int
    profile_agents: int  # agents registered in the roster, whose profiles are read
    # idle
    idle_seconds: float  # the stack's CPU with nothing to do, measured at the end
    #: run py-spy on the services and the database during one phase: BENCH_PROFILE=1 (or
    #: `pipeline`) during the pipeline, BENCH_PROFILE=reads during the reads
    profile: str = ""
    #: BENCH_WRITES=1: count the documents each phase wrote (writes.py). Off by default: on
    #: the local database the count of a full run's pipeline took about 75 s and the two
    #: latency tests' about 215 s more, and the first server's memory went from 0.9 to 2.7 GB.
    count_writes: bool = False


FULL = BenchConfig(
    quick=False,
    time_zone="Asia/Shanghai",
    seed=11,
    raw_messages=40_000,
    raw_bulk_docs=50_000,
    raw_single_writes=2_000,
    pipeline_agents=10_000,
    correctness_sample=400,
    settle_timeout_seconds=900.0,
    latency_seconds=30.0,
    probes_per_second=5.0,
    light_latency_seconds=15.0,
    api_agents=100_000,
    api_seconds=20.0,
    api_clients=8,
    profile_agents=200,
    idle_seconds=10.0,
)

QUICK = replace(
    FULL,
    quick=True,
    raw_messages=10_000,
    raw_bulk_docs=10_000,
    raw_single_writes=500,
    pipeline_agents=1_000,
    correctness_sample=150,
    settle_timeout_seconds=300.0,
    latency_seconds=8.0,
    light_latency_seconds=5.0,
    api_agents=10_000,
    api_seconds=6.0,
    profile_agents=50,
    idle_seconds=5.0,
)


def from_environment(env: dict[str, str] | None = None) -> BenchConfig:
    env = dict(os.environ if env is None else env)
    config = QUICK if env.get("BENCH_QUICK", "") not in ("", "0") else FULL
    return replace(
        config,
        time_zone=env.get("TIME_ZONE") or config.time_zone,
        profile=_profiled_phase(env.get("BENCH_PROFILE", "")),
        pipeline_agents=int(env.get("BENCH_PIPELINE_AGENTS") or config.pipeline_agents),
        api_agents=int(env.get("BENCH_API_AGENTS") or config.api_agents),
        count_writes=env.get("BENCH_WRITES", "") not in ("", "0"),
    )


def _profiled_phase(value: str) -> str:
    if value in ("", "0"):
        return ""
    if value in ("1", "pipeline"):
        return "pipeline"
    if value == "reads":
        return "reads"
    raise SystemExit(f"BENCH_PROFILE={value!r}: use 1 (or pipeline) or reads")
