"""Local days, ISO weeks and months in the configured time zone (ARCHITECTURE §4).

Every period is computed from event time. Keys: `2026-W48` (ISO week, Monday 00:00 local),
`2026-11` (calendar month), `all-time`.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

Period = Literal["all-time", "weekly", "monthly"]
ALL_TIME = "all-time"
_WEEK_KEY = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH_KEY = re.compile(r"^(\d{4})-(\d{2})$")
ONE_MICROSECOND = timedelta(microseconds=1)


@lru_cache(maxsize=16)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_date(moment: datetime, tz: str) -> date:
    """The calendar day `moment` falls on in `tz`."""
    return moment.astimezone(zone(tz)).date()


def week_key(moment: datetime, tz: str) -> str:
    year, week, _ = local_date(moment, tz).isocalendar()
    return f"{year}-W{week:02d}"


def month_key(moment: datetime, tz: str) -> str:
    day = local_date(moment, tz)
    return f"{day.year}-{day.month:02d}"


def period_key(period: Period, moment: datetime, tz: str) -> str:
    if period == "weekly":
        return week_key(moment, tz)
    if period == "monthly":
        return month_key(moment, tz)
    return ALL_TIME


def period_of_key(key: str) -> Period:
    """Which kind of period a key names; ValueError for anything else."""
    if key == ALL_TIME:
        return "all-time"
    if _WEEK_KEY.match(key):
        period_bounds(key, "UTC")  # rejects week 54 and friends
        return "weekly"
    if _MONTH_KEY.match(key):
        period_bounds(key, "UTC")
        return "monthly"
    raise ValueError(f"not a period key: {key!r} (use all-time, YYYY-Www or YYYY-MM)")


def period_bounds(key: str, tz: str) -> tuple[datetime, datetime]:
    """[start, end) of a weekly or monthly key, as UTC instants."""
    local = zone(tz)
    if match := _WEEK_KEY.match(key):
        year, week = int(match[1]), int(match[2])
        try:
            first_day = date.fromisocalendar(year, week, 1)
        except ValueError:
            raise ValueError(f"no such ISO week: {key!r}") from None
        last_day = first_day + timedelta(days=7)
    elif match := _MONTH_KEY.match(key):
        year, month = int(match[1]), int(match[2])
        if not 1 <= month <= 12:
            raise ValueError(f"no such month: {key!r}")
        first_day = date(year, month, 1)
        last_day = date(year + month // 12, month % 12 + 1, 1)
    else:
        raise ValueError(f"not a weekly or monthly key: {key!r}")
    start = datetime.combine(first_day, datetime.min.time(), local).astimezone(UTC)
    end = datetime.combine(last_day, datetime.min.time(), local).astimezone(UTC)
    return start, end


def last_instant(key: str, tz: str) -> datetime:
    """The last instant of a period: the time of events a period close causes."""
    return period_bounds(key, tz)[1] - ONE_MICROSECOND


def previous_key(key: str, tz: str) -> str:
    """The period before `key`, of the same kind."""
    start, _ = period_bounds(key, tz)
    before = start - ONE_MICROSECOND
    return week_key(before, tz) if _WEEK_KEY.match(key) else month_key(before, tz)
