"""Percentiles, the way the report states them (nearest rank, in milliseconds)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def percentiles(values: Sequence[float], ps: Iterable[int]) -> dict[str, float]:
    return {f"p{p}": round(percentile(values, p), 1) for p in ps}
