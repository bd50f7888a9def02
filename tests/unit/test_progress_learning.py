"""Progress rules: attempt numbering, pass at exactly the pass score, best-score mean,
course completion (once, at the finishing module's time, also for backfilled modules),
feedback after completion only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.progress.learning import (
    Enrollment,
    ModuleDef,
    ModuleState,
    complete_module,
    enroll,
    give_feedback,
    mean_best_score,
    record_attempt,
)
from services.progress.rules_errors import Clash, Invalid, Missing, NotAllowed

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
LESSON = ModuleDef("l1", "lesson", "Greeting")
PRACTICE = ModuleDef("p1", "practice", "Live call")
QUIZ = ModuleDef("q1", "quiz", "Quiz", 80)
ROLEPLAY = ModuleDef("r1", "roleplay", "Angry customer", 70)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def enrolled(*modules: ModuleDef) -> Enrollment:
    return enroll("a-1", "c-1", modules, T0)


def test_a_lesson_completes_by_a_call_and_a_single_module_course_completes_with_it():
    step = complete_module(enrolled(LESSON), "l1", at(5))
    assert step.module_completed
    assert step.enrollment.state("l1").completed_at == at(5)
    assert step.course_completed is not None
    assert step.course_completed.at == at(5)
    assert step.course_completed.mean_best_score is None  # no assessed modules
    assert step.enrollment.completed_at == at(5)


def test_course_does_not_complete_until_every_module_is_done():
    step = complete_module(enrolled(LESSON, PRACTICE), "l1", at(1))
    assert step.course_completed is None
    assert step.enrollment.modules_done == 1
    step = complete_module(step.enrollment, "p1", at(2))
    assert step.course_completed is not None
    assert step.course_completed.at == at(2)


def test_attempts_are_numbered_per_module_from_one():
    enrollment = enrolled(QUIZ, ROLEPLAY)
    numbers = []
    for module_id, score in [("q1", 10), ("r1", 20), ("q1", 30), ("q1", 40), ("r1", 50)]:
        step = record_attempt(enrollment, module_id, score, at(len(numbers)))
        enrollment = step.enrollment
        numbers.append((module_id, step.attempt.number))
    assert numbers == [("q1", 1), ("r1", 1), ("q1", 2), ("q1", 3), ("r1", 2)]


@pytest.mark.parametrize(("score", "passed"), [(79, False), (80, True), (81, True), (100, True)])
def test_pass_at_exactly_the_pass_score(score, passed):
    step = record_attempt(enrolled(QUIZ, LESSON), "q1", score, at(1))
    assert step.attempt.passed is passed
    assert step.module_completed is passed


def test_pass_score_zero_passes_every_score():
    zero = ModuleDef("q0", "quiz", "Survey", 0)
    assert record_attempt(enrolled(zero), "q0", 0, at(1)).attempt.passed


def test_module_completes_on_the_first_pass_only_and_later_attempts_are_still_graded():
    enrollment = enrolled(QUIZ, LESSON)
    first = record_attempt(enrollment, "q1", 85, at(1))
    again = record_attempt(first.enrollment, "q1", 95, at(2))
    assert first.module_completed
    assert not again.module_completed  # already complete: no second completion
    assert again.attempt.number == 2 and again.attempt.passed
    assert again.enrollment.state("q1").completed_at == at(1)
    assert again.enrollment.state("q1").best_score == 95


def test_mean_of_best_scores_counts_improvements_made_before_completion():
    enrollment = enrolled(QUIZ, ROLEPLAY, LESSON)
    for module_id, score, minute in [("q1", 60, 1), ("q1", 90, 2), ("q1", 84, 3), ("r1", 75, 4)]:
        enrollment = record_attempt(enrollment, module_id, score, at(minute)).enrollment
    step = complete_module(enrollment, "l1", at(5))
    assert step.course_completed is not None
    assert step.course_completed.mean_best_score == 82.5  # (90 + 75) / 2; the lesson has none


def test_mean_is_frozen_at_completion_while_best_score_follows_later_attempts():
    step = record_attempt(enrolled(QUIZ), "q1", 80, at(1))
    assert step.course_completed.mean_best_score == 80.0
    later = record_attempt(step.enrollment, "q1", 100, at(2))
    assert later.course_completed is None  # completes once
    assert later.enrollment.mean_best_score == 80.0
    assert later.enrollment.state("q1").best_score == 100
    assert later.enrollment.completed_at == at(1)


def test_mean_is_rounded_to_two_decimals():
    states = {
        "q1": ModuleState(at(1), ()),
    }
    modules = (ModuleDef("a", "quiz", "A", 0), ModuleDef("b", "quiz", "B", 0), QUIZ)
    enrollment = enroll("a-1", "c-1", modules, T0)
    for module_id, score in [("a", 100), ("b", 100), ("q1", 99)]:
        enrollment = record_attempt(enrollment, module_id, score, at(1)).enrollment
    assert enrollment.mean_best_score == 99.67
    assert mean_best_score((LESSON,), states) is None


def test_completion_time_of_a_backfilled_module_is_that_modules_time():
    step = complete_module(enrolled(LESSON, QUIZ), "l1", at(10))
    step = record_attempt(step.enrollment, "q1", 90, at(20))
    assert step.course_completed.at == at(20)


def test_history_imported_out_of_order_completes_when_the_last_module_really_was_done():
    step = complete_module(enrolled(LESSON, PRACTICE), "p1", at(50))
    step = complete_module(step.enrollment, "l1", at(10))  # finishes the set, dated earlier
    assert step.course_completed.at == at(50)


def test_plain_complete_of_an_assessed_module_says_to_post_an_attempt():
    with pytest.raises(NotAllowed, match="attempts"):
        complete_module(enrolled(QUIZ), "q1", at(1))
    with pytest.raises(NotAllowed, match="roleplay"):
        complete_module(enrolled(ROLEPLAY), "r1", at(1))


def test_scoring_a_lesson_or_practice_is_refused():
    with pytest.raises(NotAllowed, match="complete"):
        record_attempt(enrolled(LESSON), "l1", 90, at(1))
    with pytest.raises(NotAllowed):
        record_attempt(enrolled(PRACTICE), "p1", 90, at(1))


@pytest.mark.parametrize("score", [-1, 101])
def test_score_outside_range_is_invalid(score):
    with pytest.raises(Invalid):
        record_attempt(enrolled(QUIZ), "q1", score, at(1))


def test_unknown_module_is_missing_and_names_the_course_modules():
    with pytest.raises(Missing, match="l1"):
        complete_module(enrolled(LESSON), "nope", at(1))


def test_completing_a_lesson_twice_is_a_clash():
    step = complete_module(enrolled(LESSON, PRACTICE), "l1", at(1))
    with pytest.raises(Clash):
        complete_module(step.enrollment, "l1", at(2))


def test_progress_before_the_enrolment_is_refused():
    with pytest.raises(NotAllowed, match="before the enrolment"):
        complete_module(enrolled(LESSON), "l1", T0 - timedelta(seconds=1))
    with pytest.raises(NotAllowed):
        record_attempt(enrolled(QUIZ), "q1", 90, T0 - timedelta(days=1))


def test_progress_at_the_enrolment_instant_is_fine():
    assert complete_module(enrolled(LESSON), "l1", T0).course_completed.at == T0


def test_feedback_only_after_completion_and_only_once():
    enrollment = enrolled(LESSON, PRACTICE)
    with pytest.raises(NotAllowed, match="0 of 2"):
        give_feedback(enrollment, 5, "", at(1))
    enrollment = complete_module(enrollment, "l1", at(1)).enrollment
    enrollment = complete_module(enrollment, "p1", at(2)).enrollment
    with pytest.raises(NotAllowed, match="before the course completed"):
        give_feedback(enrollment, 4, "", at(1))
    given = give_feedback(enrollment, 4, "clear", at(3))
    assert given.feedback.rating == 4 and given.feedback.comment == "clear"
    with pytest.raises(Clash):
        give_feedback(given, 5, "", at(4))


@pytest.mark.parametrize("rating", [0, 6])
def test_rating_outside_one_to_five_is_invalid(rating):
    enrollment = complete_module(enrolled(LESSON), "l1", at(1)).enrollment
    with pytest.raises(Invalid):
        give_feedback(enrollment, rating, "", at(2))


def test_a_refused_step_leaves_the_enrolment_unchanged():
    enrollment = enrolled(QUIZ, LESSON)
    with pytest.raises(NotAllowed):
        complete_module(enrollment, "q1", at(1))
    assert enrollment.states == {}
    assert enrollment.modules_done == 0


def test_a_course_without_modules_cannot_be_enrolled():
    with pytest.raises(NotAllowed):
        enroll("a-1", "c-1", (), T0)
