"""What the credits service knows of an agent: observations of tier and team, each at an
event time, from `people.agents` and from the snapshots progress events carry.

Keeping the observations (not just the last value applied) makes the answer independent of
the order events arrive in: the current tier is the latest observation by event time, and
the tier's start is read off the same set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

#: Which source wins when two observations share an instant: an update describes the
#: state after a change; a snapshot is only the state a progress event happened to carry.
RANK_SNAPSHOT = 0
RANK_REGISTERED = 1
RANK_UPDATED = 2


@dataclass(frozen=True)
class Observation:
    at: datetime
    rank: int
    tier: str
    team_id: str
    name: str | None = None

    def key(self) -> tuple[datetime, int]:
        return (self.at, self.rank)


@dataclass(frozen=True)
class AgentState:
    agent_id: str
    tier: str
    team_id: str
    name: str | None
    tier_since: datetime | None  # None: the agent had this tier as far as we know


def add(observations: Sequence[Observation], new: Observation) -> list[Observation]:
    """`observations` with `new` added (once), ordered by event time."""
    if new in observations:
        return list(observations)
    return sorted([*observations, new], key=Observation.key)


def resolve(
    agent_id: str, observations: Iterable[Observation], at: datetime | None = None
) -> AgentState | None:
    """The agent as of `at` (default: the latest we know); None when nothing is known.

    Before the first observation we assume the earliest one held: an agent's first event
    may come after their first course.
    """
    ordered = sorted(observations, key=Observation.key)
    if not ordered:
        return None
    seen = [o for o in ordered if at is None or o.at <= at] or ordered[:1]
    latest = seen[-1]
    names = [o.name for o in seen if o.name] or [o.name for o in ordered if o.name]
    return AgentState(
        agent_id=agent_id,
        tier=latest.tier,
        team_id=latest.team_id,
        name=names[-1] if names else None,
        tier_since=tier_since(seen),
    )


@dataclass(frozen=True)
class TierWindow:
    """The agent held `tier` from `start` (None: as far back as we know) until `end`
    (None: still)."""

    tier: str
    start: datetime | None
    end: datetime | None


def tier_windows(observations: Iterable[Observation]) -> list[TierWindow]:
    """The spans of time the agent held each tier, oldest first. A span starts at the
    first observation of a tier after one of another tier."""
    windows: list[TierWindow] = []
    tier: str | None = None
    start: datetime | None = None
    for observation in sorted(observations, key=Observation.key):
        if observation.tier == tier:
            continue
        if tier is not None:
            windows.append(TierWindow(tier, start, observation.at))
            start = observation.at
        tier = observation.tier
    if tier is not None:
        windows.append(TierWindow(tier, start, None))
    return windows


def tier_since(ordered: Sequence[Observation]) -> datetime | None:
    """When the latest observation's tier began, as far as the observations tell: the first
    observation of it after the last one of another tier (None if there is none)."""
    if not ordered:
        return None
    current = ordered[-1].tier
    since: datetime | None = None
    for observation in reversed(ordered):
        if observation.tier != current:
            return since
        since = observation.at
    return None
