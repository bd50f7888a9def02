"""The history cursor: opaque, round-trips a position, and refuses what it did not make."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

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
