"""The capability bank's rules on plain data: lots, their validity, balances, expiry.

A lot is valid at instant t when it was deposited at or before t, t is strictly before its
expiry, and it was not revoked at or before t. Times are kept to the millisecond because
that is what the database stores: a rule evaluated before and after a round trip must
give the same answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from contracts.vocabulary import DIMENSIONS
from services.common.times import to_millis

SOURCE_COURSE = "course"
SOURCE_GRANT = "grant"

#: Stored states. `active` lots may still expire or be revoked; the others are final.
ACTIVE = "active"
EXPIRED = "expired"
REVOKED = "revoked"


@dataclass(frozen=True)
class Lot:
    lot_id: str
    agent_id: str
    source: str
    dimension: str
    credit_hours: float
    deposited_at: datetime
    expires_at: datetime
    tags: tuple[str, ...] = ()
    course_id: str | None = None
    state: str = ACTIVE
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revocation_reason: str | None = None
    reason: str | None = None
    evidence_url: str | None = None
    granted_by: str | None = None
    source_event_id: str | None = None


def expiry_of(deposited_at: datetime, valid_days: int) -> datetime:
    return deposited_at + timedelta(days=valid_days)


def course_lot_id(agent_id: str, course_id: str, completed_at: datetime) -> str:
    """One lot per completion: the same completion sent again (even under a new event id)
    maps to the same lot, while completing the course again later makes a new one."""
    key = f"{agent_id}|{course_id}|{to_millis(completed_at).isoformat()}"
    return "course-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def grant_lot_id(agent_id: str, idempotency_key: str) -> str:
    key = f"{agent_id}|{idempotency_key}"
    return "grant-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def is_valid(lot: Lot, at: datetime) -> bool:
    if not lot.deposited_at <= at < lot.expires_at:
        return False
    return lot.revoked_at is None or at < lot.revoked_at


def status_at(lot: Lot, at: datetime) -> str:
    """`valid`, `expired` or `revoked` as of `at` (whichever ended the lot first)."""
    if lot.revoked_at is not None and lot.revoked_at <= at and lot.revoked_at < lot.expires_at:
        return "revoked"
    if lot.expires_at <= at:
        return "expired"
    return "valid"


def known_at(lots: Iterable[Lot], at: datetime) -> list[Lot]:
    """The lots that existed at `at` (deposited at or before it)."""
    return [lot for lot in lots if lot.deposited_at <= at]


@dataclass(frozen=True)
class Balance:
    total: float = 0.0
    by_dimension: dict[str, float] = field(default_factory=lambda: dict.fromkeys(DIMENSIONS, 0.0))
    by_tag: dict[str, float] = field(default_factory=dict)


def balance(lots: Iterable[Lot], at: datetime) -> Balance:
    """Valid credits at `at`: total, per dimension, and per tag."""
    total = 0.0
    by_dimension: dict[str, float] = dict.fromkeys(DIMENSIONS, 0.0)
    by_tag: dict[str, float] = {}
    for lot in lots:
        if not is_valid(lot, at):
            continue
        total += lot.credit_hours
        by_dimension[lot.dimension] = by_dimension.get(lot.dimension, 0.0) + lot.credit_hours
        for tag in set(lot.tags):
            by_tag[tag] = by_tag.get(tag, 0.0) + lot.credit_hours
    return Balance(total=total, by_dimension=by_dimension, by_tag=by_tag)


def expiring_soon(lots: Iterable[Lot], at: datetime, window: timedelta) -> list[Lot]:
    """Lots valid at `at` that expire within `window` after it, soonest first."""
    horizon = at + window
    soon = [lot for lot in lots if is_valid(lot, at) and lot.expires_at <= horizon]
    return sorted(soon, key=lambda lot: (lot.expires_at, lot.lot_id))


def can_change(lot: Lot, now: datetime) -> str | None:
    """Why `lot` can no longer be revoked at `now`, or None when it can."""
    if lot.state == REVOKED or lot.revoked_at is not None:
        return f"lot {lot.lot_id} was already revoked"
    if lot.state == EXPIRED or lot.expires_at <= now:
        return f"lot {lot.lot_id} expired at {lot.expires_at.isoformat()}; nothing to revoke"
    return None
