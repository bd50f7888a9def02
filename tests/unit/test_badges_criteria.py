"""The badge rules of ARCHITECTURE §4 at their boundaries, in any order, delivered any number
of times; and new badges of existing kinds from data alone."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from contracts.envelope import CloudEvent
from contracts.events import (
    AssessmentGraded,
    AssessmentGradedData,
    CourseCompleted,
    CourseCompletedData,
    CourseEnrolled,
    CourseEnrolledData,
    CreditsRequirementMet,
    CreditsRequirementMetData,
    FeedbackSubmitted,
    FeedbackSubmittedData,
    LeaderboardPeriodClosed,
    ModuleCompleted,
    ModuleCompletedData,
    PeriodClosedData,
    StandingData,
    TicketResolved,
    TicketResolvedData,
)
from contracts.vocabulary import AgentSnapshot
from services.badges.criteria import (
    Achievement,
    Catalog,
    Fact,
    current_streak,
    earlier,
    evaluate,
    facts_from_event,
    progress,
)
from services.badges.definitions import (
    DEFAULT_DEFINITIONS,
    BadgeDefinition,
    DefinitionsError,
    load_definitions,
    parse_definitions,
)

TZ = "Asia/Shanghai"
T0 = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
DEFS = {d.id: d for d in load_definitions()}


def snap(agent: str = "a1", tier: str = "foundation") -> AgentSnapshot:
    return AgentSnapshot(agent_id=agent, team_id="team-1", tier=tier)


def module_done(at: datetime, agent: str = "a1") -> ModuleCompleted:
    return ModuleCompleted.create(
        source="t",
        subject=agent,
        time=at,
        data=ModuleCompletedData(
            agent=snap(agent), course_id="c1", module_id="m1", module_kind="lesson"
        ),
    )


def course_done(at: datetime, course: str = "c1", agent: str = "a1", tags=()) -> CourseCompleted:
    return CourseCompleted.create(
        source="t",
        subject=agent,
        time=at,
        data=CourseCompletedData(
            agent=snap(agent),
            course_id=course,
            course_tier="foundation",
            dimension="communication",
            credit_hours=2,
            tags=list(tags),
            mean_best_score=None,
        ),
    )


def graded(at: datetime, score: int, agent: str = "a1") -> AssessmentGraded:
    return AssessmentGraded.create(
        source="t",
        subject=agent,
        time=at,
        data=AssessmentGradedData(
            agent=snap(agent),
            course_id="c1",
            module_id="q1",
            module_kind="quiz",
            score=score,
            pass_score=80,
            passed=score >= 80,
            attempt=1,
        ),
    )


def ticket(at: datetime, qa: int, n: int, agent: str = "a1") -> TicketResolved:
    return TicketResolved.create(
        source="t",
        subject=agent,
        time=at,
        data=TicketResolvedData(agent=snap(agent), ticket_id=f"T-{n}", qa_score=qa, csat=4),
    )


def closed(ranks: dict[str, int], period: str = "weekly", key: str = "2026-W45"):
    return LeaderboardPeriodClosed.create(
        source="t",
        subject=key,
        time=datetime(2026, 11, 8, 15, 59, 59, 999999, tzinfo=UTC),
        data=PeriodClosedData(
            period=period,
            period_key=key,
            top=[StandingData(rank=r, agent_id=a, score=100 - r) for a, r in ranks.items()],
        ),
    )


def requirement_met(at: datetime, tier: str, agent: str = "a1") -> CreditsRequirementMet:
    return CreditsRequirementMet.create(
        source="t",
        subject=agent,
        time=at,
        data=CreditsRequirementMetData(
            agent=snap(agent), target_tier=tier, total=12.0, by_dimension={}
        ),
    )


class Agent:
    """What the handler does for one badge, in memory: keep facts (earliest per key), then
    evaluate and remember the awarded levels."""

    def __init__(self, definition: BadgeDefinition, catalog: Catalog | None = None) -> None:
        self.definition = definition
        self.catalog = catalog
        self.facts: dict[tuple[str, str], Fact] = {}
        self.awards: list[Achievement] = []

    def receive(self, *events: CloudEvent) -> list[Achievement]:
        new = []
        for event in events:
            for fact in facts_from_event(self.definition, event, TZ):
                key = (fact.agent_id, fact.key)
                self.facts[key] = earlier(fact, self.facts[key]) if key in self.facts else fact
            for agent in {a for a, _ in self.facts}:
                mine = [f for (a, _), f in self.facts.items() if a == agent]
                done = [w.level for w in self.awards if w.agent_id == agent]
                got = evaluate(self.definition, mine, done, self.catalog)
                self.awards += got
                new += got
        return new

    def levels(self, agent: str = "a1") -> list[str | None]:
        return [w.level for w in self.awards if w.agent_id == agent]


# --- first-steps, perfect-score -----------------------------------------------------------


def test_first_steps_is_the_first_module_and_only_once():
    agent = Agent(DEFS["first-steps"])
    assert agent.receive(course_done(T0)) == []
    first = module_done(T0 + timedelta(hours=1))
    [award] = agent.receive(first)
    assert (award.level, award.bonus_points, award.time) == (None, 10, first.time)
    assert award.evidence == (first.id,)
    assert award.snapshot == {"agent_id": "a1", "team_id": "team-1", "tier": "foundation"}
    assert agent.receive(module_done(T0 + timedelta(hours=2)), first) == []


def test_perfect_score_needs_100_not_99():
    agent = Agent(DEFS["perfect-score"])
    assert agent.receive(graded(T0, 99), graded(T0, 80)) == []
    hundred = graded(T0 + timedelta(minutes=5), 100)
    [award] = agent.receive(hundred)
    assert (award.bonus_points, award.trigger_event_id) == (25, hundred.id)


# --- course-finisher ----------------------------------------------------------------------


def test_course_finisher_four_courses_is_bronze_five_is_silver_at_the_fifth():
    agent = Agent(DEFS["course-finisher"])
    courses = [course_done(T0 + timedelta(days=i), f"c{i}") for i in range(5)]
    agent.receive(*courses[:4])
    assert agent.levels() == ["bronze"]
    assert agent.awards[0].time == courses[0].time
    [silver] = agent.receive(courses[4])
    assert (silver.level, silver.bonus_points, silver.time) == ("silver", 50, courses[4].time)
    assert silver.evidence == tuple(c.id for c in courses)


def test_course_finisher_gold_at_twenty_whatever_the_order_and_duplicates():
    courses = [course_done(T0 + timedelta(hours=i), f"c{i}") for i in range(20)]
    deliveries = courses + courses[:7]  # redelivered
    random.Random(7).shuffle(deliveries)
    agent = Agent(DEFS["course-finisher"])
    agent.receive(*deliveries)
    assert sorted(agent.levels()) == ["bronze", "gold", "silver"]
    gold = next(w for w in agent.awards if w.level == "gold")
    assert gold.time == courses[19].time  # the 20th in event time met it
    assert gold.bonus_points == 150
    assert len(gold.evidence) == 20


def test_nth_event_in_event_time_order_is_the_trigger_when_all_arrive_together():
    courses = [course_done(T0 + timedelta(hours=i), f"c{i}") for i in range(5)]
    facts = [f for c in reversed(courses) for f in facts_from_event(DEFS["course-finisher"], c, TZ)]
    silver = next(a for a in evaluate(DEFS["course-finisher"], facts) if a.level == "silver")
    assert silver.trigger_event_id == courses[4].id
    assert silver.time == courses[4].time


# --- ticket-ace ---------------------------------------------------------------------------


def test_ticket_ace_counts_qa_90_not_89_and_needs_50():
    agent = Agent(DEFS["ticket-ace"])
    low = [ticket(T0, 89, 1000 + i) for i in range(30)]
    good = [ticket(T0 + timedelta(minutes=i), 90 + i % 11, i) for i in range(50)]
    assert agent.receive(*low, *good[:49]) == []
    assert progress(DEFS["ticket-ace"], agent.facts.values()).current == 49
    [award] = agent.receive(good[49])
    assert (award.bonus_points, award.time, len(award.evidence)) == (50, good[49].time, 50)
    assert not set(award.evidence) & {t.id for t in low}


# --- streak-7 -----------------------------------------------------------------------------


def day(d: int, month: int = 10, hour_utc: int = 2) -> datetime:
    return datetime(2026, month, d, hour_utc, 0, tzinfo=UTC)


def test_streak_six_days_across_a_month_boundary_is_not_seven():
    agent = Agent(DEFS["streak-7"])
    # Local days Oct 28 .. Nov 2 (six): the last at 23:30 Nov 1 UTC = 07:30 Nov 2 local.
    events = [module_done(day(d)) for d in (28, 29, 30, 31)]
    events += [graded(day(1, 11), 70), module_done(datetime(2026, 11, 1, 23, 30, tzinfo=UTC))]
    assert agent.receive(*events) == []
    assert progress(DEFS["streak-7"], agent.facts.values()).current == 6


def test_streak_seventh_local_day_across_the_month_awards_at_its_first_event():
    agent = Agent(DEFS["streak-7"])
    days = [day(d) for d in (27, 28, 29, 30, 31)] + [day(1, 11)]
    agent.receive(*[module_done(t) for t in days])
    # 16:30 UTC on Nov 2 is 00:30 Nov 3 in Shanghai: the seventh local day.
    seventh = CourseEnrolled.create(
        source="t",
        subject="a1",
        time=datetime(2026, 11, 2, 16, 30, tzinfo=UTC) - timedelta(days=1),
        data=CourseEnrolledData(agent=snap(), course_id="c9"),
    )
    later_same_day = module_done(seventh.time + timedelta(hours=5))
    [award] = agent.receive(seventh, later_same_day)
    assert (award.time, award.trigger_event_id, award.bonus_points) == (
        seventh.time,
        seventh.id,
        50,
    )
    assert len(award.evidence) == 7


def test_streak_in_utc_days_is_not_a_streak_in_local_days():
    # Seven consecutive UTC days, the first at 15:00 UTC (23:00 local, Nov 1) and the others
    # at 17:00 UTC (01:00 the next local day): local days Nov 1, then Nov 3-8, skip Nov 2.
    times = [datetime(2026, 11, 1, 15, 0, tzinfo=UTC)]
    times += [datetime(2026, 11, d, 17, 0, tzinfo=UTC) for d in range(2, 8)]
    agent = Agent(DEFS["streak-7"])
    assert agent.receive(*[module_done(t) for t in times]) == []


def test_a_gap_resets_the_streak_and_any_progress_event_counts():
    agent = Agent(DEFS["streak-7"])
    first_run = [module_done(day(d)) for d in range(1, 5)]  # Oct 1-4
    second_run = [
        FeedbackSubmitted.create(
            source="t",
            subject="a1",
            time=day(d),
            data=FeedbackSubmittedData(agent=snap(), course_id="c1", rating=5),
        )
        for d in range(6, 12)  # Oct 6-11: six days after a gap
    ]
    assert agent.receive(*first_run, *second_run) == []
    [award] = agent.receive(graded(day(12), 10))
    assert award.time == day(12)
    assert current_streak(agent.facts.values()) == 7


def test_streak_redelivered_and_shuffled_awards_once_at_the_same_event():
    events = [module_done(day(d, hour_utc=h)) for d in range(1, 9) for h in (1, 9)]
    deliveries = events * 2
    random.Random(3).shuffle(deliveries)
    agent = Agent(DEFS["streak-7"])
    agent.receive(*deliveries)
    assert len(agent.awards) == 1
    reference = Agent(DEFS["streak-7"])
    reference.receive(*events)
    # One delivery order cannot know the 7th day before it arrived: both agree once all did.
    assert {a.time.date() for a in agent.awards} <= {day(7).date(), day(8).date()}
    assert reference.awards[0].time == day(7, hour_utc=1)


# --- weekly-top-10 ------------------------------------------------------------------------


def test_weekly_top_10_rank_10_yes_and_not_monthly():
    agent = Agent(DEFS["weekly-top-10"])
    ranks = {f"a{i}": i for i in range(1, 11)}
    assert agent.receive(closed(ranks, period="monthly", key="2026-10")) == []
    event = closed(ranks)
    awards = agent.receive(event)
    assert sorted(a.agent_id for a in awards) == sorted(ranks)
    tenth = next(a for a in awards if a.agent_id == "a10")
    assert (tenth.time, tenth.bonus_points, tenth.evidence) == (event.time, 30, (event.id,))
    assert tenth.snapshot is None  # the period close carries none: the handler supplies it
    assert agent.receive(closed(ranks, key="2026-W46")) == []  # once per agent


def test_top_n_from_data_ranks_n_in_and_n_plus_one_out():
    top3 = parse_definitions(
        """
badges:
  - id: weekly-podium
    name: Podium
    description: Top three of a week.
    criteria_narrative: Be in the global weekly top 3 when the week closes.
    criterion: {kind: top_n, period: weekly, n: 3}
    levels: [{bonus_points: 60}]
"""
    )[0]
    agent = Agent(top3)
    awards = agent.receive(closed({"x1": 1, "x3": 3, "x4": 4, "x10": 10}))
    assert sorted(a.agent_id for a in awards) == ["x1", "x3"]


def test_the_eleventh_is_not_in_a_top_10():
    # A close carries at most 10 standings; an agent past rank 10 is not among them.
    agent = Agent(DEFS["weekly-top-10"])
    ranks = {f"a{i}": i for i in range(1, 11)}
    agent.receive(closed(ranks))
    assert agent.levels("a11") == []
    assert agent.levels("a10") == [None]


# --- complaint-master ---------------------------------------------------------------------


def test_complaint_master_needs_every_published_tagged_course():
    catalog = Catalog({"complaint-handling": frozenset({"ch1", "ch2"})})
    agent = Agent(DEFS["complaint-master"], catalog)
    first = course_done(T0, "ch1", tags=["complaint-handling"])
    other = course_done(T0 + timedelta(hours=1), "other")
    assert agent.receive(first, other) == []
    last = course_done(T0 + timedelta(days=1), "ch2", tags=["complaint-handling"])
    [award] = agent.receive(last)
    assert (award.time, award.bonus_points) == (last.time, 100)
    assert award.evidence == (first.id, last.id)


def test_complaint_master_needs_at_least_one_tagged_course():
    agent = Agent(DEFS["complaint-master"], Catalog())
    assert agent.receive(course_done(T0, "c1")) == []
    p = progress(DEFS["complaint-master"], agent.facts.values(), catalog=Catalog())
    assert (p.current, p.target) == (0, 0)


def test_complaint_master_course_published_later_keeps_awards_and_raises_the_bar():
    definition = DEFS["complaint-master"]
    done = [course_done(T0, "ch1", agent="early"), course_done(T0, "ch1", agent="late")]
    facts = [f for e in done for f in facts_from_event(definition, e, TZ)]
    one = Catalog({"complaint-handling": frozenset({"ch1"})})
    two = Catalog({"complaint-handling": frozenset({"ch1", "ch2"})})
    early = [f for f in facts if f.agent_id == "early"]
    late = [f for f in facts if f.agent_id == "late"]
    assert len(evaluate(definition, early, [], one)) == 1
    # After ch2 is published: the early award stays (awarded levels are not re-evaluated),
    # and the agent who had not earned it yet now needs ch2 as well.
    assert evaluate(definition, early, [None], two) == []
    assert evaluate(definition, late, [], two) == []
    late_ch2 = facts_from_event(definition, course_done(T0 + timedelta(days=2), "ch2", "late"), TZ)
    [award] = evaluate(definition, late + late_ch2, [], two)
    assert award.time == T0 + timedelta(days=2)


def test_complaint_master_met_by_a_catalogue_change_is_awarded_at_that_change():
    definition = DEFS["complaint-master"]
    facts = facts_from_event(definition, course_done(T0, "ch1"), TZ)
    cause = Fact("", definition.id, "ch2", "catalog-event", T0 + timedelta(days=3))
    [award] = evaluate(
        definition, facts, [], Catalog({"complaint-handling": frozenset({"ch1"})}), cause
    )
    assert (award.time, award.trigger_event_id) == (cause.time, "catalog-event")
    assert award.evidence == (facts[0].event_id, "catalog-event")


# --- tier-ready ---------------------------------------------------------------------------


def test_tier_ready_one_badge_per_target_tier():
    agent = Agent(DEFS["tier-ready"])
    advanced = requirement_met(T0, "advanced")
    [first] = agent.receive(advanced, advanced)
    assert (first.level, first.bonus_points, first.time) == ("advanced", 40, T0)
    later = requirement_met(T0 + timedelta(days=90), "leadership")
    [second] = agent.receive(later)
    assert (second.level, second.time) == ("leadership", later.time)
    assert agent.receive(requirement_met(T0 + timedelta(days=91), "advanced")) == []
    assert progress(DEFS["tier-ready"], agent.facts.values(), ["advanced", "leadership"]) is None


# --- new badges from data -----------------------------------------------------------------

EXTRA = """
badges:
  - id: happy-customers
    name: Happy Customers
    description: Customers loved it.
    criteria_narrative: Resolve tickets rated 5 by the customer (3 for bronze, 6 for silver).
    criterion:
      kind: event_count
      events:
        types: [work.ticket.resolved.v1]
        where: {csat: {eq: 5}, qa_score: {gte: 50}}
    levels:
      - {level: bronze, threshold: 3, bonus_points: 5}
      - {level: silver, threshold: 6, bonus_points: 15}
  - id: streak-3
    name: Three-Day Streak
    description: Three days in a row.
    criteria_narrative: Complete modules on 3 consecutive local days.
    criterion:
      kind: streak_days
      events: {types: [learning.module.completed.v1]}
    levels: [{threshold: 3, bonus_points: 5}]
"""


def test_a_new_badge_of_an_existing_kind_needs_only_data():
    happy, streak3 = parse_definitions(EXTRA)
    agent = Agent(happy)
    five = [
        TicketResolved.create(
            source="t",
            subject="a1",
            time=T0 + timedelta(minutes=i),
            data=TicketResolvedData(agent=snap(), ticket_id=f"H{i}", qa_score=60, csat=csat),
        )
        for i, csat in enumerate([5, 4, 5, 5, 5])
    ]
    agent.receive(*five[:3])
    assert agent.levels() == []
    [bronze] = agent.receive(five[3])
    assert (bronze.level, bronze.time) == ("bronze", five[3].time)
    assert progress(happy, agent.facts.values(), ["bronze"]).current == 3

    days = Agent(streak3)
    assert days.receive(graded(day(1), 90), graded(day(2), 90), graded(day(3), 90)) == []
    assert len(days.receive(*(module_done(day(d)) for d in (1, 2, 3)))) == 1


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("criterion: {kind: magic}", "kind"),
        (
            "criterion: {kind: event_count, events: {types: [x.y.v1]}}",
            "unknown event types",
        ),
        (
            "criterion: {kind: event_count, events: {topic: learning.progress}}\n"
            "    levels: [{level: a, threshold: 5, bonus_points: 1}, "
            "{level: b, threshold: 2, bonus_points: 1}]",
            "increase",
        ),
        (
            "criterion: {kind: credits_requirement_met}\n    levels: [{level: a, bonus_points: 1}]",
            "target_tier",
        ),
    ],
)
def test_invalid_definitions_are_refused_with_a_reason(snippet, message):
    levels = "" if "levels" in snippet else "\n    levels: [{bonus_points: 1}]"
    raw = (
        "badges:\n  - id: bad\n    name: Bad\n    description: d\n    criteria_narrative: n\n"
        f"    {snippet}{levels}\n"
    )
    with pytest.raises(DefinitionsError, match=message):
        parse_definitions(raw)


def test_default_definitions_are_the_eight_of_the_architecture():
    assert list(DEFS) == [
        "first-steps",
        "course-finisher",
        "perfect-score",
        "streak-7",
        "ticket-ace",
        "weekly-top-10",
        "complaint-master",
        "tier-ready",
    ]
    finisher = DEFS["course-finisher"]
    assert [(lv.level, lv.threshold, lv.bonus_points) for lv in finisher.levels] == [
        ("bronze", 1, 20),
        ("silver", 5, 50),
        ("gold", 20, 150),
    ]
    bonuses = {d.id: d.levels[-1].bonus_points for d in DEFS.values()}
    assert bonuses["first-steps"] == 10 and bonuses["ticket-ace"] == 50
    assert bonuses["weekly-top-10"] == 30 and bonuses["complaint-master"] == 100


def test_a_definitions_file_from_settings_adds_badges_without_code(tmp_path):
    default = DEFAULT_DEFINITIONS.read_text()
    extra = EXTRA.split("badges:\n", 1)[1]
    path = tmp_path / "badges.yml"
    path.write_text(default + extra)
    loaded = {d.id: d for d in load_definitions(path)}
    assert len(loaded) == 10 and "happy-customers" in loaded
    with pytest.raises(DefinitionsError, match="cannot read"):
        load_definitions(tmp_path / "missing.yml")
