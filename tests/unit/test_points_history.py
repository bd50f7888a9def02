"""The history cursor: opaque, round-trips a position, and refuses what it did not make;
times compared in memory as the database keeps them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.common.times import to_millis
from services.points.store import BadCursor, decode_cursor, encode_cursor


def test_a_cursor_round_trips_the_position_to_the_millisecond():
    at = datetime(2026, 11, 23, 15, 59, 59, 123000, tzinfo=UTC)
    cursor = encode_cursor({"occurred_at": at, "seq": 42})
    assert decode_cursor(cursor) == (at, 42)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor  # URL-safe


@pytest.mark.parametrize("cursor", ["", "not-a-cursor", "e30", "eyJ0IjogMX0", "%%%"])
def test_a_cursor_it_did_not_make_is_refused(cursor):
    with pytest.raises(BadCursor):
        decode_cursor(cursor)


def test_a_time_is_compared_as_the_database_keeps_it_in_utc_milliseconds():
    local = timezone(timedelta(hours=8))
    at = datetime(2026, 11, 24, 0, 0, 1, 123987, tzinfo=local)
    assert to_millis(at) == datetime(2026, 11, 23, 16, 0, 1, 123000, tzinfo=UTC)
    assert to_millis(at).tzinfo == UTC
    # Read through a client that is not time zone aware: naive UTC.
    assert to_millis(datetime(2026, 11, 23, 16, 0, 1, 123456)) == to_millis(at)
