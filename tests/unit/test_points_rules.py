"""The points rules of ARCHITECTURE §4 as plain functions: every rule, bonus, multiplier,
cap and the local-day boundary, and the checks on a rule table."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from contracts.api.points import RULE_IDS, RuleDefinition
from contracts.events import (
    AssessmentGraded,
    BadgeAwarded,
    CourseCompleted,
    ModuleCompleted,
    TicketResolved,
)
from services.points.rules import (
    DEFAULT_RULES_FILE,
    Rule,
    RuleTableError,
    balance_after,
    cap_day,
    capped,
    is_newer_snapshot,
    load_rule_table,
    multiply,
    parse_rule_table,
    problems_with,
    propose,
    rule_for,
)
from tests.support.events import (
    assessment_graded,
    badge_awarded,
    course_completed,
    module_completed,
    snapshot,
    ticket_resolved,
)

T = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
AGENT = snapshot("a-1", tier="advanced")
TABLE = load_rule_table(DEFAULT_RULES_FILE)


def rule(rule_id: str, version: int = 1, **changes) -> Rule:
    definition = TABLE[rule_id].model_copy(update=changes)
    return Rule(rule_id, version, definition)


def module(kind: str = "lesson") -> ModuleCompleted:
    return module_completed(AGENT, T, module_kind=kind)


def graded(score: int, attempt: int = 1, passed: bool | None = None) -> AssessmentGraded:
    return assessment_graded(AGENT, T, score, attempt, passed=passed)


def course(tier: str) -> CourseCompleted:
    return course_completed(AGENT, T, tier, mean_best_score=None)


def ticket(qa_score: int) -> TicketResolved:
    return ticket_resolved(AGENT, T, "T-1", qa_score, csat=4)


def badge(bonus: int, level: str | None = "gold") -> BadgeAwarded:
    return badge_awarded(AGENT, T, bonus, "course-finisher", level=level)


def points(event, r: Rule | None = None) -> int | None:
    proposal = propose(event, r or rule(rule_for(event)))
    return None if proposal is None else proposal.points


# --- the default table ---------------------------------------------------------------------


def test_the_rules_file_holds_the_defaults_of_the_architecture():
    assert list(TABLE) == list(RULE_IDS)
    assert TABLE["module-completed"].points == 10
    assert TABLE["assessment-passed"].points == 20
    assert TABLE["assessment-passed"].bonuses == {"perfect_score": 10, "first_attempt": 5}
    assert TABLE["course-completed"].points == 50
    assert TABLE["course-completed"].tier_multipliers == {
        "foundation": 1,
        "advanced": 1.5,
        "leadership": 2,
    }
    assert TABLE["ticket-quality"].points == 5
    assert TABLE["ticket-quality"].min_qa_score == 90
    assert TABLE["ticket-quality"].daily_cap == 50
    assert TABLE["badge-bonus"].points is None
    assert all(definition.enabled for definition in TABLE.values())


@pytest.mark.parametrize(
    ("event", "rule_id"),
    [
        (module(), "module-completed"),
        (graded(90), "assessment-passed"),
        (course("foundation"), "course-completed"),
        (ticket(95), "ticket-quality"),
        (badge(10), "badge-bonus"),
    ],
)
def test_each_event_type_triggers_its_rule(event, rule_id):
    assert rule_for(event) == rule_id


# --- module-completed ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lesson", "quiz", "roleplay", "practice"])
def test_a_completed_module_of_any_kind_earns_10(kind):
    assert points(module(kind)) == 10


def test_the_proposal_names_rule_version_and_reason():
    proposal = propose(module(), rule("module-completed", version=4))
    assert proposal is not None
    assert (proposal.rule_id, proposal.rule_version) == ("module-completed", 4)
    assert proposal.reason == "module m-1 of course c-1 completed"


# --- assessment-passed -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "attempt", "expected"),
    [
        (80, 2, 20),  # passed, nothing extra
        (80, 1, 25),  # first attempt
        (100, 2, 30),  # perfect score
        (100, 1, 35),  # both bonuses
        (99, 1, 25),  # 99 is not perfect
    ],
)
def test_a_passed_assessment_earns_20_plus_its_bonuses(score, attempt, expected):
    assert points(graded(score, attempt)) == expected


def test_the_bonuses_are_itemised():
    proposal = propose(graded(100, 1), rule("assessment-passed"))
    assert proposal is not None
    assert proposal.details == {"base": 20, "bonuses": {"perfect_score": 10, "first_attempt": 5}}


def test_a_failed_assessment_earns_nothing_even_at_the_first_attempt():
    assert points(graded(40, 1)) is None


def test_passed_is_what_counts_not_the_score():
    # The progress service decides passing (pass_score per module); points trusts it.
    assert points(graded(100, 1, passed=False)) is None
    assert points(graded(50, 3, passed=True)) == 20


def test_a_bonus_left_out_of_the_table_is_not_paid():
    r = rule("assessment-passed", bonuses={"first_attempt": 5})
    assert points(graded(100, 1), r) == 25


# --- course-completed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "expected"), [("foundation", 50), ("advanced", 75), ("leadership", 100)]
)
def test_a_completed_course_earns_50_times_the_course_tier_multiplier(tier, expected):
    assert points(course(tier)) == expected


def test_the_course_tier_counts_not_the_agent_tier():
    # AGENT is advanced; a foundation course still earns x1.
    assert points(course("foundation")) == 50


def test_rounding_is_half_up_not_bankers():
    r = rule("course-completed", points=5, tier_multipliers={"advanced": 1.5})
    assert points(course("advanced"), r) == 8  # 7.5 -> 8
    r = rule("course-completed", points=1, tier_multipliers={"advanced": 2.5})
    assert points(course("advanced"), r) == 3  # 2.5 -> 3 (round() would give 2)
    r = rule("course-completed", points=1, tier_multipliers={"advanced": 0.5})
    assert points(course("advanced"), r) == 1  # 0.5 -> 1 (round() would give 0)


@pytest.mark.parametrize(
    ("value", "multiplier", "expected"),
    [
        (50, "1.5", 75),
        (50, "2", 100),
        (50, "1", 50),
        (7, "1.5", 11),  # 10.5
        (3, "1.5", 5),  # 4.5
        (1, "1.1", 1),  # 1.1
        (5, "1.1", 6),  # 5.5: exact in decimal, 5.500000000000001 in binary float
        (10, "0", 0),
    ],
)
def test_multiply_rounds_half_up_in_decimal(value, multiplier, expected):
    assert multiply(value, Decimal(multiplier)) == expected


def test_a_multiplier_written_as_a_float_is_read_as_its_decimal():
    r = rule("course-completed", points=5, tier_multipliers={"advanced": 1.1})
    assert points(course("advanced"), r) == 6  # 5.5 -> 6, not 5 from 5.4999...


def test_a_tier_missing_from_the_multipliers_counts_as_1():
    r = rule("course-completed", tier_multipliers={"leadership": 2})
    assert points(course("advanced"), r) == 50


def test_the_multiplier_is_recorded():
    proposal = propose(course("advanced"), rule("course-completed"))
    assert proposal is not None
    assert proposal.details == {"base": 50, "multiplier": "1.5", "multiplier_tier": "advanced"}


def test_other_rules_multiply_by_the_agent_tier_when_configured():
    r = rule("module-completed", tier_multipliers={"advanced": 1.5})
    assert points(module(), r) == 15  # AGENT is advanced


def test_a_multiplier_of_zero_awards_nothing():
    r = rule("course-completed", tier_multipliers={"advanced": 0})
    assert points(course("advanced"), r) is None


# --- ticket-quality --------------------------------------------------------------------------


@pytest.mark.parametrize(("qa_score", "expected"), [(89, None), (90, 5), (95, 5), (100, 5)])
def test_a_ticket_earns_5_from_a_qa_score_of_90(qa_score, expected):
    assert points(ticket(qa_score)) == expected


def test_the_qa_threshold_is_configurable():
    assert points(ticket(85), rule("ticket-quality", min_qa_score=80)) == 5


# --- badge-bonus -----------------------------------------------------------------------------


@pytest.mark.parametrize("bonus", [10, 20, 150])
def test_a_badge_earns_its_own_bonus_points(bonus):
    assert points(badge(bonus)) == bonus


def test_a_badge_without_bonus_awards_nothing():
    assert points(badge(0)) is None


def test_the_badge_reason_names_badge_and_level():
    proposal = propose(badge(150), rule("badge-bonus"))
    assert proposal is not None and proposal.reason == "badge course-finisher (gold) awarded"
    proposal = propose(badge(25, level=None), rule("badge-bonus"))
    assert proposal is not None and proposal.reason == "badge course-finisher awarded"


# --- enable/disable --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event", [module(), graded(100), course("leadership"), ticket(100), badge(50)]
)
def test_a_disabled_rule_awards_nothing(event):
    assert points(event, rule(rule_for(event), enabled=False)) is None


# --- the daily cap ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proposed", "used", "cap", "expected"),
    [
        (5, 0, 50, 5),
        (5, 45, 50, 5),  # exactly reaches the cap
        (5, 48, 50, 2),  # reached mid-award: what is left
        (5, 49, 50, 1),
        (5, 50, 50, 0),  # at the cap: nothing
        (5, 55, 50, 0),  # above (a lowered cap): nothing, never negative
        (5, 0, 3, 3),  # a cap below one award
        (5, 10_000, None, 5),  # no cap
    ],
)
def test_the_cap_awards_what_is_left(proposed, used, cap, expected):
    assert capped(proposed, used, cap) == expected


def test_ten_good_tickets_fill_the_cap_and_the_eleventh_earns_nothing():
    used = 0
    awarded = []
    for _ in range(11):
        grant = capped(5, used, 50)
        used += grant
        awarded.append(grant)
    assert awarded == [5] * 10 + [0]
    assert used == 50


def test_an_odd_cap_is_reached_mid_award():
    used, awarded = 0, []
    for _ in range(4):
        grant = capped(5, used, 12)
        used += grant
        awarded.append(grant)
    assert awarded == [5, 5, 2, 0]


# --- the local day (Asia/Shanghai, UTC+8) -----------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "day"),
    [
        (datetime(2026, 11, 23, 15, 59, 59, 999999, tzinfo=UTC), date(2026, 11, 23)),
        (datetime(2026, 11, 23, 16, 0, tzinfo=UTC), date(2026, 11, 24)),  # local midnight
        (datetime(2026, 11, 23, 0, 0, tzinfo=UTC), date(2026, 11, 23)),  # 08:00 local
        (datetime(2026, 11, 22, 23, 59, tzinfo=UTC), date(2026, 11, 23)),  # 07:59 local
        (datetime(2026, 12, 31, 16, 0, tzinfo=UTC), date(2027, 1, 1)),  # new year
    ],
)
def test_the_cap_day_is_the_local_day_of_the_event_time(moment, day):
    assert cap_day(moment, "Asia/Shanghai") == day


def test_the_cap_day_follows_the_configured_time_zone():
    moment = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
    assert cap_day(moment, "UTC") == date(2026, 11, 23)
    assert cap_day(moment, "Asia/Shanghai") == date(2026, 11, 24)


# --- snapshots ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current_at", "at", "expected"),
    [
        (None, T, True),  # the first snapshot of an agent
        (T, T.replace(hour=7), True),
        (T, T, True),  # the same time: the one handled later wins
        (T, T.replace(hour=5), False),  # a late, older event
    ],
)
def test_the_snapshot_of_the_newest_event_time_is_kept(current_at, at, expected):
    assert is_newer_snapshot(current_at, at) is expected


# --- balances --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("balance", "delta", "expected"),
    [(10, 5, 15), (10, -10, 0), (10, -11, None), (0, -1, None), (0, 0, 0)],
)
def test_a_balance_never_goes_below_zero(balance, delta, expected):
    assert balance_after(balance, delta) == expected


# --- checking a rule table --------------------------------------------------------------------


def test_a_table_must_define_every_rule_and_only_known_ones():
    raw = {"rules": {rule_id: TABLE[rule_id].model_dump() for rule_id in RULE_IDS[:-1]}}
    with pytest.raises(RuleTableError, match="missing rules \\['badge-bonus'\\]"):
        parse_rule_table(raw)
    raw = {"rules": {**{r: TABLE[r].model_dump() for r in RULE_IDS}, "login-bonus": {}}}
    with pytest.raises(RuleTableError, match="unknown rules \\['login-bonus'\\]"):
        parse_rule_table(raw)


def test_a_table_without_rules_is_refused():
    with pytest.raises(RuleTableError, match="`rules:`"):
        parse_rule_table({"module-completed": {"points": 10}})
    with pytest.raises(RuleTableError):
        parse_rule_table(None)


def test_a_table_with_a_bad_value_names_the_rule():
    raw = {"rules": {r: TABLE[r].model_dump() for r in RULE_IDS}}
    raw["rules"]["ticket-quality"] = {**raw["rules"]["ticket-quality"], "points": -5}
    with pytest.raises(RuleTableError, match="rule ticket-quality"):
        parse_rule_table(raw)
    raw["rules"]["ticket-quality"] = {"points": 5, "min_qa_score": 90, "surprise": 1}
    with pytest.raises(RuleTableError, match="surprise"):
        parse_rule_table(raw)


@pytest.mark.parametrize(
    ("rule_id", "definition", "field"),
    [
        ("module-completed", {}, "points"),
        ("badge-bonus", {"points": 10}, "points"),
        (
            "course-completed",
            {"points": 50, "bonuses": {"perfect_score": 1}},
            "bonuses.perfect_score",
        ),
        ("assessment-passed", {"points": 20, "bonuses": {"streak": 1}}, "bonuses.streak"),
        ("ticket-quality", {"points": 5}, "min_qa_score"),
        ("module-completed", {"points": 10, "min_qa_score": 90}, "min_qa_score"),
        ("login-bonus", {"points": 1}, "rule_id"),
    ],
)
def test_problems_name_the_field_to_fix(rule_id, definition, field):
    problems = problems_with(rule_id, RuleDefinition.model_validate(definition))
    assert [p["field"] for p in problems] == [field]


def test_the_default_table_has_no_problems():
    assert all(problems_with(rule_id, d) == [] for rule_id, d in TABLE.items())


def test_an_unreadable_file_is_an_error_that_names_it(tmp_path):
    missing = tmp_path / "nope.yml"
    with pytest.raises(RuleTableError, match="nope.yml"):
        load_rule_table(missing)
    broken = tmp_path / "broken.yml"
    broken.write_text("rules: [unclosed")
    with pytest.raises(RuleTableError, match="broken.yml"):
        load_rule_table(broken)
