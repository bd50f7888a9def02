"""Runs the test suite as several pytest processes at once (`make test`).

Most of an integration test's time is spent waiting on the broker and the database, so a
few processes make good use of two cores. Each process has its own broker and database
(session fixtures in tests/conftest.py). pytest-xdist would do this, but its workers hang
under eventlet's monkey patching, which nameko needs.

Test files are dealt to shards by weight (integration files weigh more), each shard's
output is printed whole once it ends, and the closing line sums them up.

    python -m tests.parallel [--shards N] [pytest args...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK_DIR = ROOT / ".pytest-shards"
#: Relative cost of a file by folder: integration files start servers and consumer groups.
WEIGHTS = {"unit": 1.0, "integration": 12.0, "e2e": 30.0, "faults": 40.0}


@dataclass
class Shard:
    index: int
    files: list[Path] = field(default_factory=list)
    weight: float = 0.0

    @property
    def log(self) -> Path:
        return WORK_DIR / f"shard-{self.index}.log"

    @property
    def junit(self) -> Path:
        return WORK_DIR / f"shard-{self.index}.xml"


def test_files() -> list[Path]:
    return sorted(p for p in (ROOT / "tests").rglob("test_*.py") if "support" not in p.parts)


def weight(path: Path) -> float:
    folder = path.relative_to(ROOT / "tests").parts[0]
    size_factor = 1.0 + path.stat().st_size / 20_000  # longer files hold more tests
    return WEIGHTS.get(folder, 1.0) * size_factor


def deal(files: list[Path], count: int) -> list[Shard]:
    """Heaviest file first onto the lightest shard (greedy longest-processing-time)."""
    shards = [Shard(i) for i in range(count)]
    for path in sorted(files, key=weight, reverse=True):
        lightest = min(shards, key=lambda s: s.weight)
        lightest.files.append(path)
        lightest.weight += weight(path)
    return [s for s in shards if s.files]


def totals(junit: Path) -> dict[str, int]:
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if not junit.exists():
        return counts
    root = ElementTree.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shards", type=int, default=int(os.environ.get("TEST_SHARDS", "3")), help="processes"
    )
    args, pytest_args = parser.parse_known_args(argv)
    WORK_DIR.mkdir(exist_ok=True)
    shards = deal(test_files(), max(1, args.shards))
    started = time.monotonic()
    running = []
    for shard in shards:
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--basetemp={WORK_DIR / f'tmp-{shard.index}'}",
            f"--junitxml={shard.junit}",
            *pytest_args,
            *[str(p.relative_to(ROOT)) for p in shard.files],
        ]
        shard.junit.unlink(missing_ok=True)
        log = shard.log.open("w")
        running.append((shard, subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log), log))
    failed_shards = 0
    for shard, process, log in running:
        code = process.wait()
        log.close()
        print(f"===== shard {shard.index}: {len(shard.files)} files, exit {code} =====")
        print(shard.log.read_text(), end="")
        if code not in (0, 5):  # 5: no tests collected in this shard
            failed_shards += 1
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for shard in shards:
        for key, value in totals(shard.junit).items():
            counts[key] += value
    failed = counts["failures"] + counts["errors"]
    passed = counts["tests"] - failed - counts["skipped"]
    elapsed = time.monotonic() - started
    print(f"{len(shards)} shards in {elapsed:.0f}s")
    if failed_shards and not failed:
        print(f"{failed_shards} shard(s) exited abnormally; see their output above")
        failed = failed_shards
    print(f"{passed} passed, {failed} failed, {counts['skipped']} skipped")
    return 1 if failed or counts["tests"] == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
