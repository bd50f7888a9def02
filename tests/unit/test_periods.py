"""Periods in Asia/Shanghai (UTC+8): day, ISO week and month boundaries."""

from datetime import UTC, date, datetime

import pytest

from services.common.periods import (
    last_instant,
    local_date,
    month_key,
    period_bounds,
    period_of_key,
    previous_key,
    week_key,
)

TZ = "Asia/Shanghai"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_local_day_starts_at_16_00_utc_the_day_before():
    assert local_date(utc(2026, 11, 22, 15, 59, 59), TZ) == date(2026, 11, 22)
    assert local_date(utc(2026, 11, 22, 16, 0, 0), TZ) == date(2026, 11, 23)


def test_iso_weeks_start_monday_local_time():
    # Monday 2026-11-23 00:00 in Shanghai is Sunday 16:00 UTC
    assert week_key(utc(2026, 11, 22, 15, 59, 59), TZ) == "2026-W47"
    assert week_key(utc(2026, 11, 22, 16, 0, 0), TZ) == "2026-W48"
    # ISO year differs from calendar year around new year
    assert week_key(utc(2026, 12, 31, 12), TZ) == "2026-W53"
    assert week_key(utc(2027, 1, 4, 0), TZ) == "2027-W01"


def test_months_follow_local_time():
    assert month_key(utc(2026, 11, 30, 15, 59), TZ) == "2026-11"
    assert month_key(utc(2026, 11, 30, 16, 0), TZ) == "2026-12"


def test_bounds_and_last_instant():
    start, end = period_bounds("2026-W48", TZ)
    assert start == utc(2026, 11, 22, 16)
    assert end == utc(2026, 11, 29, 16)
    assert last_instant("2026-W48", TZ) == utc(2026, 11, 29, 15, 59, 59, 999999)
    assert week_key(last_instant("2026-W48", TZ), TZ) == "2026-W48"
    start, end = period_bounds("2026-12", TZ)
    assert (start, end) == (utc(2026, 11, 30, 16), utc(2026, 12, 31, 16))


def test_previous_keys():
    assert previous_key("2027-W01", TZ) == "2026-W53"
    assert previous_key("2027-01", TZ) == "2026-12"


@pytest.mark.parametrize("key", ["2026-W54", "2026-13", "2026-W5", "last-week", ""])
def test_invalid_keys_are_rejected(key):
    with pytest.raises(ValueError):
        period_of_key(key)


def test_valid_keys_are_classified():
    assert period_of_key("all-time") == "all-time"
    assert period_of_key("2026-W48") == "weekly"
    assert period_of_key("2026-11") == "monthly"
