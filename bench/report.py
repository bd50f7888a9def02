"""The report: `.bench/report.json` and the table printed at the end of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: (key path, label, target, unit); the target is None where the issue sets none.
ROWS: tuple[tuple[str, str, str | None, str], ...] = (
    ("raw_broker_produce_msgs_per_s", "raw broker produce (1 KB, 6 partitions)", None, "msg/s"),
    ("raw_broker_consume_msgs_per_s", "raw broker consume", None, "msg/s"),
    ("raw_db_bulk_docs_per_s", "raw db insert_many (1,000/batch, journaled)", None, "docs/s"),
    ("raw_db_single_writes_per_s", "raw db insert_one (journaled)", None, "writes/s"),
    ("pipeline_events_per_s", "pipeline throughput", ">= 1,000", "events/s"),
    ("pipeline_correct", "pipeline correct", "true", ""),
    ("pipeline.cpu_ms_per_event", "CPU per event, pipeline (whole stack)", None, "ms"),
    ("e2e_latency_ms.p50", "end-to-end latency p50", None, "ms"),
    ("e2e_latency_ms.p95", "end-to-end latency p95", None, "ms"),
    ("e2e_latency_ms.p99", "end-to-end latency p99", "< 1,000", "ms"),
    ("e2e.cpu_ms_per_event", "CPU per event, end to end (whole stack)", None, "ms"),
    ("e2e_light_latency_ms.p50", "end-to-end p50, light load (1/10)", None, "ms"),
    ("e2e_light_latency_ms.p99", "end-to-end p99, light load (1/10)", None, "ms"),
    ("api.agents", "agents on the board (API test)", "100,000", ""),
    ("api.top10_p50_ms", "top 10 p50", None, "ms"),
    ("api.top10_p99_ms", "top 10 p99", "< 50", "ms"),
    ("api.rank_p50_ms", "agent rank p50", None, "ms"),
    ("api.rank_p99_ms", "agent rank p99", "< 50", "ms"),
    ("api.profile_p99_ms", "profile p99", "< 150", "ms"),
    ("api.requests_per_s", "gateway requests/s (8 clients)", None, "req/s"),
    ("idle_cpu_cores", "idle CPU, the whole stack", None, "cores"),
)


def lookup(report: dict[str, Any], path: str) -> Any:
    value: Any = report
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(report: dict[str, Any]) -> str:
    rows = [("measure", "measured", "target", "unit")]
    for path, label, target, unit in ROWS:
        rows.append((label, shown(lookup(report, path)), target or "", unit))
    for name, rss in sorted((report.get("rss_mb") or {}).items()):
        # The targets are the services'; the servers are measured, not targeted.
        target = "" if name == "broker" or name.startswith("database") else "< 200"
        rows.append((f"peak RSS {name}", shown(rss), target, "MB"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(widths[i]) if i != 1 else cell.rjust(widths[i])
                for i, cell in enumerate(row)
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False, default=str) + "\n")
