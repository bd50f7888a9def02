"""Credit lots: validity at the exact second, revocation, balances, expiring soon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.common.times import to_millis
from services.credits.bank import (
    ACTIVE,
    EXPIRED,
    REVOKED,
    Lot,
    balance,
    can_change,
    course_lot_id,
    expiring_soon,
    expiry_of,
    grant_lot_id,
    is_valid,
    known_at,
    status_at,
)

T0 = datetime(2026, 1, 10, 8, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def lot(
    lot_id: str = "l1",
    hours: float = 2.0,
    dimension: str = "communication",
    at: datetime = T0,
    days: int = 365,
    tags: tuple[str, ...] = (),
    **kwargs,
) -> Lot:
    return Lot(
        lot_id=lot_id,
        agent_id="a1",
        source="course",
        dimension=dimension,
        credit_hours=hours,
        deposited_at=at,
        expires_at=expiry_of(at, days),
        tags=tags,
        **kwargs,
    )


def test_expiry_is_365_days_after_completion_by_default_setting():
    assert expiry_of(T0, 365) == datetime(2027, 1, 10, 8, 0, tzinfo=UTC)


def test_a_lot_expiring_at_t_is_valid_strictly_before_t():
    item = lot()
    expires = item.expires_at
    assert is_valid(item, expires - MS)
    assert is_valid(item, expires - timedelta(seconds=1))
    assert not is_valid(item, expires)
    assert not is_valid(item, expires + MS)
    assert status_at(item, expires - MS) == "valid"
    assert status_at(item, expires) == "expired"


def test_a_lot_counts_from_its_deposit_instant_not_before():
    item = lot()
    assert not is_valid(item, T0 - MS)
    assert is_valid(item, T0)


def test_a_revoked_lot_counts_before_the_revocation_only():
    revoked_at = T0 + timedelta(days=10)
    item = lot(state=REVOKED, revoked_at=revoked_at)
    assert is_valid(item, revoked_at - MS)
    assert not is_valid(item, revoked_at)
    assert status_at(item, revoked_at) == "revoked"
    assert status_at(item, item.expires_at + timedelta(days=1)) == "revoked"


def test_balance_sums_valid_lots_by_dimension_and_tag():
    lots = [
        lot("a", 2.0, "communication", tags=("coaching",)),
        lot("b", 3.5, "technology"),
        lot("c", 1.0, "problem_solving", tags=("coaching", "complaint-handling")),
        lot("old", 9.0, "technology", at=T0 - timedelta(days=400)),  # expired
        lot("later", 4.0, "technology", at=T0 + timedelta(days=1)),  # not yet deposited
    ]
    held = balance(lots, T0 + timedelta(hours=1))
    assert held.total == 6.5
    assert held.by_dimension == {"communication": 2.0, "technology": 3.5, "problem_solving": 1.0}
    assert held.by_tag == {"coaching": 3.0, "complaint-handling": 1.0}


def test_balance_of_nothing_has_every_dimension_at_zero():
    held = balance([], T0)
    assert held.total == 0
    assert held.by_dimension == {"communication": 0.0, "technology": 0.0, "problem_solving": 0.0}


def test_expiring_soon_is_valid_lots_expiring_within_the_window_soonest_first():
    now = T0 + timedelta(days=340)  # T0 lots expire in 25 days
    lots = [
        lot("in-25-days-b", at=T0),
        lot("in-25-days-a", at=T0),
        lot("in-30-days-exactly", at=now - timedelta(days=335)),
        lot("in-31-days", at=now - timedelta(days=334)),
        lot("already-expired", at=now - timedelta(days=365)),
        lot("revoked", at=T0, state=REVOKED, revoked_at=now - MS),
    ]
    soon = expiring_soon(lots, now, timedelta(days=30))
    assert [item.lot_id for item in soon] == ["in-25-days-a", "in-25-days-b", "in-30-days-exactly"]


def test_known_at_drops_lots_deposited_later():
    lots = [lot("a", at=T0), lot("b", at=T0 + MS)]
    assert [item.lot_id for item in known_at(lots, T0)] == ["a"]


def test_to_millis_truncates_and_converts_to_utc():
    from zoneinfo import ZoneInfo

    local = datetime(2026, 1, 10, 16, 0, 0, 123987, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert to_millis(local) == datetime(2026, 1, 10, 8, 0, 0, 123000, tzinfo=UTC)


def test_course_lot_ids_identify_a_completion():
    same = course_lot_id("a1", "c1", T0)
    assert same == course_lot_id("a1", "c1", T0 + timedelta(microseconds=300))  # same ms
    assert same != course_lot_id("a1", "c1", T0 + timedelta(days=400))  # completed again
    assert same != course_lot_id("a2", "c1", T0)
    assert grant_lot_id("a1", "key") != grant_lot_id("a2", "key")
    assert grant_lot_id("a1", "key").startswith("grant-")


def test_only_an_active_unexpired_lot_can_be_revoked():
    item = lot()
    assert can_change(item, T0) is None
    assert "expired" in (can_change(item, item.expires_at) or "")
    assert "expired" in (can_change(lot(state=EXPIRED), T0) or "")
    assert "revoked" in (can_change(lot(state=REVOKED, revoked_at=T0), T0) or "")
    assert can_change(lot(state=ACTIVE), item.expires_at - MS) is None
