"""The agent's tier and team from observations, whatever order they arrived in."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from services.credits.roster import (
    RANK_REGISTERED,
    RANK_SNAPSHOT,
    RANK_UPDATED,
    Observation,
    add,
    resolve,
)

T0 = datetime(2026, 2, 1, tzinfo=UTC)


def at(days: int) -> datetime:
    return T0 + timedelta(days=days)


def test_nothing_known_is_none():
    assert resolve("a1", []) is None


def test_latest_observation_wins_whatever_the_arrival_order():
    observations = [
        Observation(at(0), RANK_REGISTERED, "foundation", "t1", "Ann"),
        Observation(at(5), RANK_SNAPSHOT, "foundation", "t1"),
        Observation(at(10), RANK_UPDATED, "advanced", "t2", "Ann"),
        Observation(at(12), RANK_SNAPSHOT, "advanced", "t2"),
    ]
    results = set()
    for order in itertools.permutations(observations):
        known: list[Observation] = []
        for observation in order:
            known = add(known, observation)
        state = resolve("a1", known)
        results.add((state.tier, state.team_id, state.name, state.tier_since))
    assert results == {("advanced", "t2", "Ann", at(10))}


def test_an_update_wins_a_tie_with_a_snapshot():
    known = add([], Observation(at(3), RANK_UPDATED, "advanced", "t1", "Bo"))
    known = add(known, Observation(at(3), RANK_SNAPSHOT, "foundation", "t1"))
    assert resolve("a1", known).tier == "advanced"


def test_as_of_an_earlier_instant():
    known = [
        Observation(at(0), RANK_REGISTERED, "foundation", "t1", "Cy"),
        Observation(at(10), RANK_UPDATED, "advanced", "t1", "Cy"),
    ]
    assert resolve("a1", known, at(9)).tier == "foundation"
    assert resolve("a1", known, at(10)).tier == "advanced"
    # Before anything was known: the earliest observation.
    assert resolve("a1", known, at(-5)).tier == "foundation"


def test_tier_since_is_none_when_no_other_tier_was_seen():
    known = [Observation(at(0), RANK_SNAPSHOT, "foundation", "t1")]
    assert resolve("a1", known).tier_since is None


def test_tier_since_follows_a_demotion_and_promotion():
    known = [
        Observation(at(0), RANK_REGISTERED, "foundation", "t1", "Di"),
        Observation(at(10), RANK_UPDATED, "advanced", "t1", "Di"),
        Observation(at(15), RANK_UPDATED, "foundation", "t1", "Di"),
        Observation(at(20), RANK_UPDATED, "advanced", "t1", "Di"),
    ]
    assert resolve("a1", known).tier_since == at(20)


def test_the_same_observation_twice_is_kept_once():
    observation = Observation(at(1), RANK_SNAPSHOT, "foundation", "t1")
    assert add([observation], observation) == [observation]


def test_tier_windows_split_time_at_each_change_of_tier():
    from services.credits.roster import TierWindow, tier_windows

    known = [
        Observation(at(0), RANK_REGISTERED, "foundation", "t1", "Ed"),
        Observation(at(5), RANK_SNAPSHOT, "foundation", "t1"),
        Observation(at(10), RANK_UPDATED, "advanced", "t2", "Ed"),
        Observation(at(12), RANK_SNAPSHOT, "advanced", "t2"),
        Observation(at(30), RANK_UPDATED, "leadership", "t2", "Ed"),
    ]
    assert tier_windows(reversed(known)) == [
        TierWindow("foundation", None, at(10)),
        TierWindow("advanced", at(10), at(30)),
        TierWindow("leadership", at(30), None),
    ]
    assert tier_windows([]) == []
