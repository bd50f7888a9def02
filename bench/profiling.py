"""Optional (BENCH_PROFILE=1): py-spy samples the consuming services and the database server
for 60 s of the pipeline, and each profile is summarised by its busy time: how many cores'
worth, the busy frames themselves, and our frames (services, database server) with callees.
Waiting is left out: py-spy samples only threads on a CPU (no `--idle`), and frames that
wait (under eventlet, a wait for a database reply is the hub's poll) are dropped besides.
With `--idle`, a database thread blocked on a lock counted as busy in the frame that took
it: in one pipeline profile, 43% of the database's "busy" samples were its statements
queued on the transaction registry's lock (on the local database, statements of different
transactions run one at a time: bench/README.md), which used no CPU.

py-spy is not a dependency: `pip install py-spy` into the virtualenv to use this.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.stack import Stack

#: The processes sampled in each phase: the consumers, or what a read goes through.
PROFILED = {
    "pipeline": (
        "points",
        "leaderboards",
        "badges",
        "credits",
        "database",
        "database-leaderboards",
    ),
    "reads": ("gateway", "leaderboards", "points", "database-leaderboards"),
}
#: Leaf frames of a thread or green thread that waits (for a socket, a lock-free event, the
#: next request): under eventlet a wait for a database reply is the hub's poll.
WAITING = (
    "Hub.do_poll",
    "_recv_exactly",
    "_readable",
    "Condition.wait",
    "socket.accept",
    "Event.wait",
)
#: Frames worth naming with their time including callees.
OURS = ("services/", "secantus/")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


class Profiler:
    def __init__(self, stack: Stack, out_dir: Path, phase: str) -> None:
        self.stack = stack
        self.out_dir = out_dir
        self.phase = phase
        self.running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(self, seconds: float) -> None:
        self.seconds = seconds
        binary = py_spy()
        if binary is None:
            print("  BENCH_PROFILE=1 but py-spy is not installed: no profiles", flush=True)
            return
        pids = {p.name: p.pid for p in self.stack.processes() if p.pid is not None}
        for name in PROFILED[self.phase]:
            if name not in pids:
                continue
            out = self.out_dir / f"profile-{self.phase}-{name}.txt"
            command = [
                binary,
                "record",
                "--pid",
                str(pids[name]),
                "--duration",
                str(int(seconds)),
                "--rate",
                "50",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out),
            ]
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            self.running[name] = (process, out)

    def finish(self) -> dict[str, Any]:
        summaries = {}
        for name, (process, out) in self.running.items():
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.terminate()
            if out.is_file():
                summaries[name] = summarise(out.read_text(), seconds=self.seconds)
        return summaries


def summarise(collapsed: str, seconds: float = 60.0, rate: int = 50, top: int = 10) -> dict:
    """Busy time (not waiting) of py-spy's collapsed stacks: how many cores' worth, the
    frames that were busy themselves, and our frames including what they called."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if any(marker in frames[-1] for marker in WAITING):
            continue
        count = int(count_text)
        busy += count
        own[frames[-1]] += count
        for frame in set(frames):
            if any(marker in frame for marker in OURS):
                inclusive[frame] += count
    return {
        "busy_cores": round(busy / (seconds * rate), 2),
        "busy_own_time": [
            {"frame": frame, "share": round(count / busy, 3)}
            for frame, count in own.most_common(top)
        ],
        "busy_including_callees": [
            {"frame": frame, "share": round(count / busy, 3)}
            for frame, count in inclusive.most_common(top)
        ],
    }
