"""Times as the database keeps them."""

from __future__ import annotations

from datetime import UTC, datetime


def to_millis(moment: datetime) -> datetime:
    """`moment` in UTC, truncated to the millisecond BSON dates store: a time compared in
    memory with a stored one must be cut the same way to decide as the database would.
    A naive `moment` (read through a client that is not time zone aware) is UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
