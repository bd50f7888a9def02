"""Tier requirements: configuration, what is missing, the first time they were met,
and the recommendation order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.credits.bank import Balance, Lot, expiry_of
from services.credits.readiness import (
    DEFAULT_REQUIREMENTS_FILE,
    Course,
    RequirementTable,
    first_met,
    missing,
    recommend,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TABLE = RequirementTable.load(DEFAULT_REQUIREMENTS_FILE)
ADVANCED = TABLE.next_for("foundation")
LEADERSHIP = TABLE.next_for("advanced")


def held(communication=0.0, technology=0.0, problem_solving=0.0, **tags) -> Balance:
    by_dimension = {
        "communication": communication,
        "technology": technology,
        "problem_solving": problem_solving,
    }
    return Balance(total=sum(by_dimension.values()), by_dimension=by_dimension, by_tag=tags)


def lot(lot_id, hours, dimension, at, days=365, tags=(), revoked_at=None) -> Lot:
    return Lot(
        lot_id=lot_id,
        agent_id="a1",
        source="course",
        dimension=dimension,
        credit_hours=hours,
        deposited_at=at,
        expires_at=expiry_of(at, days),
        tags=tags,
        revoked_at=revoked_at,
    )


def test_defaults_are_those_of_the_architecture():
    assert ADVANCED is not None and LEADERSHIP is not None
    assert (ADVANCED.tier, ADVANCED.from_tier, ADVANCED.total) == ("advanced", "foundation", 12)
    assert set(ADVANCED.by_dimension.values()) == {3.0}
    assert ADVANCED.by_tag == {}
    assert (LEADERSHIP.tier, LEADERSHIP.total) == ("leadership", 24)
    assert set(LEADERSHIP.by_dimension.values()) == {6.0}
    assert LEADERSHIP.by_tag == {"coaching": 4.0}
    assert TABLE.next_for("leadership") is None


def test_foundation_to_advanced_needs_12_with_3_in_each_dimension():
    assert missing(held(4, 4, 4), ADVANCED).met
    short_total = missing(held(3, 3, 5.5), ADVANCED)
    assert not short_total.met and short_total.total == 0.5
    short_dimension = missing(held(10, 2.5, 3), ADVANCED)
    assert not short_dimension.met
    assert short_dimension.total == 0
    assert short_dimension.by_dimension == {
        "communication": 0,
        "technology": 0.5,
        "problem_solving": 0,
    }


def test_advanced_to_leadership_also_needs_4_coaching_hours():
    assert not missing(held(8, 8, 8), LEADERSHIP).met
    assert missing(held(8, 8, 8), LEADERSHIP).by_tag == {"coaching": 4.0}
    assert missing(held(8, 8, 8, coaching=3.5), LEADERSHIP).by_tag == {"coaching": 0.5}
    assert missing(held(8, 8, 8, coaching=4), LEADERSHIP).met
    assert not missing(held(6, 6, 11.5, coaching=4), LEADERSHIP).met  # 23.5 in total


def test_requirements_accept_a_value_per_dimension(tmp_path: Path):
    path = tmp_path / "req.yml"
    path.write_text(
        "advanced: {total: 5, per_dimension: {technology: 2}}\n"
        "leadership: {total: 10, tags: {mentoring: 1}}\n"
    )
    table = RequirementTable.load(path)
    advanced = table.next_for("foundation")
    assert advanced.by_dimension == {"communication": 0, "technology": 2, "problem_solving": 0}
    assert table.tags() == {"mentoring"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("advanced: {total: 12}\n", "exactly the tiers"),
        ("advanced: {total: 12}\nleadership: {total: 1}\nfoundation: {total: 1}\n", "unknown"),
        ("advanced: {total: -1}\nleadership: {total: 1}\n", "advanced"),
        ("advanced: {total: 1, per_dimension: {math: 1}}\nleadership: {total: 1}\n", "advanced"),
        ("advanced: {total: 1, extra: 2}\nleadership: {total: 1}\n", "advanced"),
        ("[1, 2]\n", "mapping"),
        ("advanced: {total: 1\n", "YAML"),
    ],
)
def test_a_broken_requirement_file_is_refused_with_a_reason(tmp_path, text, message):
    path = tmp_path / "req.yml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        RequirementTable.load(path)


def test_a_missing_requirement_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        RequirementTable.load(tmp_path / "nope.yml")


def test_first_met_is_the_deposit_that_completed_the_requirement():
    lots = [
        lot("a", 4, "communication", T0),
        lot("b", 4, "technology", T0 + timedelta(days=1)),
        lot("c", 4, "problem_solving", T0 + timedelta(days=2)),
        lot("d", 4, "problem_solving", T0 + timedelta(days=3)),
    ]
    found = first_met(lots, ADVANCED, None)
    assert found is not None
    at, balance_then = found
    assert at == T0 + timedelta(days=2)
    assert balance_then.total == 12


def test_first_met_does_not_depend_on_the_order_lots_arrived_in():
    lots = [
        lot("a", 4, "communication", T0),
        lot("b", 4, "technology", T0 + timedelta(days=1)),
        lot("c", 4, "problem_solving", T0 + timedelta(days=2)),
    ]
    assert first_met(list(reversed(lots)), ADVANCED, None) == first_met(lots, ADVANCED, None)
    # With only the later lots known, it was not met yet.
    assert first_met(lots[1:], ADVANCED, None) is None


def test_first_met_ignores_combinations_that_never_coexisted():
    lots = [
        lot("old", 8, "communication", T0, days=10),  # expired before the others came
        lot("b", 3, "technology", T0 + timedelta(days=20)),
        lot("c", 3, "problem_solving", T0 + timedelta(days=20)),
    ]
    assert first_met(lots, ADVANCED, None) is None


def test_first_met_ignores_lots_revoked_before_the_others_came():
    lots = [
        lot("a", 6, "communication", T0, revoked_at=T0 + timedelta(days=1)),
        lot("b", 3, "technology", T0 + timedelta(days=2)),
        lot("c", 3, "problem_solving", T0 + timedelta(days=2)),
    ]
    assert first_met(lots, ADVANCED, None) is None


def test_first_met_is_not_before_the_agent_reached_the_tier():
    lots = [lot("a", 30, "communication", T0)]
    lots += [lot(f"x{d}", 8, d, T0, tags=("coaching",)) for d in ("technology", "problem_solving")]
    promoted = T0 + timedelta(days=30)
    found = first_met(lots, LEADERSHIP, promoted)
    assert found is not None and found[0] == promoted
    assert first_met(lots, LEADERSHIP, None)[0] == T0


def course(course_id, dimension, hours, tier="foundation", tags=(), published=True) -> Course:
    return Course(course_id, f"Course {course_id}", tier, dimension, hours, tuple(tags), published)


def test_recommendations_close_the_largest_gap_first_then_more_hours_then_id():
    gaps = missing(held(communication=3, technology=1, problem_solving=2.5), ADVANCED)
    # gaps: technology 2, problem_solving 0.5, communication 0; total 5.5
    catalogue = [
        course("comm-big", "communication", 10),
        course("ps-1", "problem_solving", 1),
        course("tech-b", "technology", 2),
        course("tech-a", "technology", 2),
        course("tech-c", "technology", 4),
        course("ps-2", "problem_solving", 3),
    ]
    picks = recommend(catalogue, set(), "foundation", gaps, 5)
    assert [p.course.course_id for p in picks] == ["tech-c", "tech-a", "tech-b", "ps-2", "ps-1"]
    assert [p.gap_hours for p in picks] == [2, 2, 2, 0.5, 0.5]


def test_recommendations_skip_completed_unpublished_and_out_of_reach_tiers():
    gaps = missing(held(), ADVANCED)
    catalogue = [
        course("done", "technology", 2),
        course("draft", "technology", 2, published=False),
        course("too-high", "technology", 2, tier="leadership"),
        course("next-tier", "technology", 2, tier="advanced"),
        course("own-tier", "communication", 1),
    ]
    picks = recommend(catalogue, {"done"}, "foundation", gaps, 5)
    assert [p.course.course_id for p in picks] == ["next-tier", "own-tier"]


def test_recommendations_count_a_tag_gap_for_tagged_courses():
    gaps = missing(held(8, 8, 8, coaching=1), LEADERSHIP)  # only coaching is missing: 3
    catalogue = [
        course("coach", "communication", 1, tier="leadership", tags=["coaching"]),
        course("tech", "technology", 8, tier="advanced"),
    ]
    picks = recommend(catalogue, set(), "advanced", gaps, 5)
    assert [(p.course.course_id, p.gap_hours) for p in picks] == [("coach", 3), ("tech", 0)]


def test_at_the_top_tier_recommendations_are_of_that_tier_by_hours():
    catalogue = [
        course("l1", "technology", 2, tier="leadership"),
        course("l2", "technology", 6, tier="leadership"),
        course("a1", "technology", 9, tier="advanced"),
    ]
    picks = recommend(catalogue, set(), "leadership", None, 5)
    assert [p.course.course_id for p in picks] == ["l2", "l1"]


def test_at_most_limit_recommendations():
    catalogue = [course(f"c{i}", "technology", 1) for i in range(9)]
    assert len(recommend(catalogue, set(), "foundation", missing(held(), ADVANCED), 5)) == 5


def test_requirements_met_looks_at_every_tier_the_agent_held():
    from services.credits.readiness import requirements_met
    from services.credits.roster import TierWindow

    lots = [
        lot("c", 4, "communication", T0, tags=("coaching",)),
        lot("t", 4, "technology", T0 + timedelta(days=1)),
        lot("p", 4, "problem_solving", T0 + timedelta(days=2)),
        lot("big", 12, "communication", T0 + timedelta(days=20)),
        lot("t2", 2, "technology", T0 + timedelta(days=21)),
        lot("p2", 2, "problem_solving", T0 + timedelta(days=22)),
    ]
    promoted = T0 + timedelta(days=10)
    windows = [
        TierWindow("foundation", None, promoted),
        TierWindow("advanced", promoted, None),
    ]
    met = requirements_met(lots, windows, TABLE)
    assert [(m.requirement.tier, m.at) for m in met] == [
        ("advanced", T0 + timedelta(days=2)),
        ("leadership", T0 + timedelta(days=22)),
    ]
    assert met[1].held.total == 28
    # Had the promotion come before the credits, the advanced requirement was never met
    # while a foundation agent.
    early = [TierWindow("foundation", None, T0), TierWindow("advanced", T0, None)]
    assert [m.requirement.tier for m in requirements_met(lots, early, TABLE)] == ["leadership"]


def test_first_met_respects_the_end_of_a_span():
    lots = [lot(f"l{i}", 4, d, T0) for i, d in enumerate(("communication", "technology"))]
    lots.append(lot("late", 4, "problem_solving", T0 + timedelta(days=5)))
    assert first_met(lots, ADVANCED, None, T0 + timedelta(days=5)) is None
    assert first_met(lots, ADVANCED, None, T0 + timedelta(days=5, seconds=1)) is not None
