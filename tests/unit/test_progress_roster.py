"""Roster rules: effective-dated team and tier, snapshots as of an event time, updates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.progress.roster import (
    TeamTier,
    TeamTierChange,
    periods,
    plan_update,
    registration,
    snapshot_at,
)
from services.progress.rules_errors import NotAllowed

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def day(n: int) -> datetime:
    return T0 + timedelta(days=n)


HISTORY = [
    registration(day(0), "team-a", "foundation"),
    TeamTierChange(day(10), team_id="team-b"),
    TeamTierChange(day(20), tier="advanced"),
]


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (day(-5), TeamTier("team-a", "foundation")),  # before registration: first known values
        (day(0), TeamTier("team-a", "foundation")),
        (day(10) - timedelta(microseconds=1000), TeamTier("team-a", "foundation")),
        (day(10), TeamTier("team-b", "foundation")),  # a change applies from its instant
        (day(19), TeamTier("team-b", "foundation")),
        (day(25), TeamTier("team-b", "advanced")),
        (None, TeamTier("team-b", "advanced")),
    ],
)
def test_snapshot_as_of_an_event_time(when, expected):
    assert snapshot_at(HISTORY, when) == expected


def test_changes_apply_in_time_order_whatever_order_they_were_recorded():
    history = [*HISTORY, TeamTierChange(day(5), team_id="team-x")]  # backfilled later
    assert snapshot_at(history, day(7)) == TeamTier("team-x", "foundation")
    assert snapshot_at(history, day(12)) == TeamTier("team-b", "foundation")


def test_periods_list_the_history_oldest_first():
    assert [(p.effective_at, p.team_id, p.tier) for p in periods(HISTORY)] == [
        (day(0), "team-a", "foundation"),
        (day(10), "team-b", "foundation"),
        (day(20), "team-b", "advanced"),
    ]


def test_periods_merge_changes_at_one_instant():
    history = [
        registration(day(0), "a", "foundation"),
        TeamTierChange(day(1), team_id="b"),
        TeamTierChange(day(1), tier="advanced"),
    ]
    assert [(p.team_id, p.tier) for p in periods(history)] == [
        ("a", "foundation"),
        ("b", "advanced"),
    ]


def test_update_now_changes_current_values_and_event_values():
    plan = plan_update(
        name="Ann",
        registered_at=day(0),
        changes=HISTORY,
        new_name=None,
        new_team_id="team-c",
        new_tier=None,
        at=day(30),
    )
    assert plan.changed == ("team_id",)
    assert plan.change == TeamTierChange(day(30), team_id="team-c")
    assert plan.at_event_time == TeamTier("team-c", "advanced")
    assert plan.current == TeamTier("team-c", "advanced")


def test_backdated_update_does_not_override_a_later_change_of_the_same_field():
    plan = plan_update(
        name="Ann",
        registered_at=day(0),
        changes=HISTORY,
        new_name=None,
        new_team_id="team-x",
        new_tier=None,
        at=day(5),
    )
    assert plan.at_event_time == TeamTier("team-x", "foundation")
    assert plan.current == TeamTier("team-b", "advanced")  # day 10 moved the agent on


def test_update_with_the_same_values_changes_nothing():
    plan = plan_update(
        name="Ann",
        registered_at=day(0),
        changes=HISTORY,
        new_name="Ann",
        new_team_id="team-b",
        new_tier="advanced",
        at=day(30),
    )
    assert plan.changed == ()
    assert plan.change is None


def test_name_change_needs_no_history_entry():
    plan = plan_update(
        name="Ann",
        registered_at=day(0),
        changes=HISTORY,
        new_name="Anne",
        new_team_id=None,
        new_tier=None,
        at=day(30),
    )
    assert plan.changed == ("name",)
    assert plan.change is None
    assert plan.name == "Anne"


def test_update_before_registration_is_refused():
    with pytest.raises(NotAllowed, match="registration"):
        plan_update(
            name="Ann",
            registered_at=day(0),
            changes=HISTORY,
            new_name=None,
            new_team_id="team-z",
            new_tier=None,
            at=day(-1),
        )
