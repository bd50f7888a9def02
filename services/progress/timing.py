"""Event time: when a thing happened, given by a backfilling caller or taken as now."""

from __future__ import annotations

from datetime import datetime, timedelta

from services.common.times import to_millis
from services.progress.rules_errors import Invalid


def event_time(occurred_at: datetime | None, now: datetime, skew: timedelta) -> datetime:
    """`occurred_at` (past only, `skew` of clock difference tolerated) or `now`."""
    if occurred_at is None:
        return to_millis(now)
    if occurred_at > now + skew:
        raise Invalid(
            f"occurred_at {occurred_at.isoformat()} is in the future: backfill accepts past "
            "times only; omit occurred_at for now"
        )
    return to_millis(occurred_at)
