"""Roster rules: an agent's team and tier over time (effective-dated).

Learning and ticket events carry the team and tier the agent had when the thing happened
(ARCHITECTURE §2). A backfilled event can lie before a later team change, so the roster
keeps every change with the time it took effect and folds them up to the event's time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from services.progress.rules_errors import NotAllowed


@dataclass(frozen=True)
class TeamTierChange:
    """From `at` on, the agent's team and/or tier (None: that one did not change here)."""

    at: datetime
    team_id: str | None = None
    tier: str | None = None


@dataclass(frozen=True)
class TeamTier:
    team_id: str
    tier: str


@dataclass(frozen=True)
class Period:
    """The agent had `team_id` and `tier` from `effective_at` until the next period."""

    effective_at: datetime
    team_id: str
    tier: str


def _in_effect_order(changes: Sequence[TeamTierChange]) -> list[TeamTierChange]:
    # Stable: the registration (stored first) stays ahead of a change at the same instant,
    # and two changes at one instant apply in the order they were made.
    return sorted(changes, key=lambda change: change.at)


def _apply(current: TeamTier, change: TeamTierChange) -> TeamTier:
    return TeamTier(
        team_id=change.team_id if change.team_id is not None else current.team_id,
        tier=change.tier if change.tier is not None else current.tier,
    )


def registration(at: datetime, team_id: str, tier: str) -> TeamTierChange:
    return TeamTierChange(at=at, team_id=team_id, tier=tier)


def snapshot_at(changes: Sequence[TeamTierChange], at: datetime | None) -> TeamTier:
    """Team and tier in effect at `at` (None: now, i.e. after every change).

    The first change is the registration, which carries both values. A time before the
    registration gets the registration's values: an imported history may start before the
    roster knew the agent, and the first known values are the best account of that time.
    """
    first, *rest = changes
    if first.team_id is None or first.tier is None:
        raise ValueError("the first change must be the registration, with team and tier")
    current = TeamTier(first.team_id, first.tier)
    for change in _in_effect_order(rest):
        if at is not None and change.at > at:
            break
        current = _apply(current, change)
    return current


def periods(changes: Sequence[TeamTierChange]) -> list[Period]:
    """The history as consecutive periods, oldest first (changes at one instant merged)."""
    first, *rest = changes
    current = TeamTier(first.team_id or "", first.tier or "")
    result = [Period(first.at, current.team_id, current.tier)]
    for change in _in_effect_order(rest):
        current = _apply(current, change)
        if (current.team_id, current.tier) == (result[-1].team_id, result[-1].tier):
            continue
        if change.at == result[-1].effective_at:
            result[-1] = Period(change.at, current.team_id, current.tier)
        else:
            result.append(Period(change.at, current.team_id, current.tier))
    return result


@dataclass(frozen=True)
class AgentUpdate:
    """What a PATCH does: the changed fields, the new change entry, values for the event."""

    changed: tuple[str, ...]
    name: str
    change: TeamTierChange | None
    at_event_time: TeamTier
    current: TeamTier


def plan_update(
    *,
    name: str,
    registered_at: datetime,
    changes: Sequence[TeamTierChange],
    new_name: str | None,
    new_team_id: str | None,
    new_tier: str | None,
    at: datetime,
) -> AgentUpdate:
    """The effect of changing an agent at `at`; `changed` is empty when nothing differs."""
    if at < registered_at:
        raise NotAllowed(
            f"occurred_at {at.isoformat()} is before the agent's registration at "
            f"{registered_at.isoformat()}: a change cannot take effect before it"
        )
    before = snapshot_at(changes, at)
    changed: list[str] = []
    if new_name is not None and new_name != name:
        changed.append("name")
    team_changes = new_team_id is not None and new_team_id != before.team_id
    tier_changes = new_tier is not None and new_tier != before.tier
    if team_changes:
        changed.append("team_id")
    if tier_changes:
        changed.append("tier")
    change = None
    if team_changes or tier_changes:
        change = TeamTierChange(
            at=at,
            team_id=new_team_id if team_changes else None,
            tier=new_tier if tier_changes else None,
        )
    after = [*changes, change] if change else list(changes)
    return AgentUpdate(
        changed=tuple(changed),
        name=new_name if new_name is not None else name,
        change=change,
        at_event_time=snapshot_at(after, at),
        current=snapshot_at(after, None),
    )
