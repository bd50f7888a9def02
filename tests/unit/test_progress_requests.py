"""Request validation of the progress API and event time (backfill) rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from contracts.api.progress import (
    AgentCreate,
    AgentPatch,
    AttemptCreate,
    CourseCreate,
    CoursePatch,
    FeedbackCreate,
    ModuleSpec,
    TicketCreate,
)
from services.common.times import to_millis
from services.progress.rules_errors import Invalid
from services.progress.timing import event_time

LESSON = {"module_id": "l1", "kind": "lesson", "title": "Intro"}
QUIZ = {"module_id": "q1", "kind": "quiz", "title": "Check"}


def course(**overrides):
    body = {
        "course_id": "c-1",
        "title": "Handling complaints",
        "tier": "foundation",
        "dimension": "communication",
        "credit_hours": 1.5,
        "tags": ["complaint-handling"],
        "modules": [LESSON, QUIZ],
    }
    return CourseCreate.model_validate({**body, **overrides})


def test_a_new_course_is_published_and_quizzes_default_to_pass_score_80():
    created = course()
    assert created.published is True
    assert [m.pass_score for m in created.modules] == [None, 80]


@pytest.mark.parametrize("hours", [0.5, 1.0, 12.5, 40])
def test_credit_hours_in_half_steps_within_range(hours):
    assert course(credit_hours=hours).credit_hours == hours


@pytest.mark.parametrize("hours", [0, 0.25, 0.75, 40.5, 41, -1])
def test_credit_hours_outside_range_or_step_are_refused(hours):
    with pytest.raises(ValidationError):
        course(credit_hours=hours)


def test_module_ids_must_be_unique():
    with pytest.raises(ValidationError, match="appears twice"):
        course(modules=[LESSON, {**QUIZ, "module_id": "l1"}])


@pytest.mark.parametrize("score", [-1, 101])
def test_pass_score_outside_range_is_refused(score):
    with pytest.raises(ValidationError):
        ModuleSpec.model_validate({**QUIZ, "pass_score": score})


def test_pass_score_on_a_lesson_is_refused():
    with pytest.raises(ValidationError, match="no pass_score"):
        ModuleSpec.model_validate({**LESSON, "pass_score": 50})


def test_roleplay_keeps_its_own_pass_score():
    assert (
        ModuleSpec.model_validate({**QUIZ, "kind": "roleplay", "pass_score": 65}).pass_score == 65
    )


@pytest.mark.parametrize("bad_id", ["", "has space", "a/b", "-starts-with-dash", "x" * 65, "ü"])
def test_ids_outside_the_safe_character_set_are_refused(bad_id):
    with pytest.raises(ValidationError):
        course(course_id=bad_id)
    with pytest.raises(ValidationError):
        AgentCreate(agent_id=bad_id, name="A", team_id="t")


def test_a_course_needs_modules_and_unknown_fields_are_refused():
    with pytest.raises(ValidationError):
        course(modules=[])
    with pytest.raises(ValidationError):
        course(colour="red")


def test_tags_must_be_lowercase_and_not_repeat():
    with pytest.raises(ValidationError):
        course(tags=["Coaching"])
    with pytest.raises(ValidationError, match="repeat"):
        course(tags=["coaching", "coaching"])


def test_patches_need_something_to_change():
    with pytest.raises(ValidationError, match="at least one"):
        CoursePatch.model_validate({})
    with pytest.raises(ValidationError, match="at least one"):
        AgentPatch.model_validate({"occurred_at": "2026-01-01T00:00:00Z"})
    assert CoursePatch.model_validate({"credit_hours": 2}).credit_hours == 2


@pytest.mark.parametrize("score", [-1, 101, 50.5])
def test_attempt_score_is_a_whole_number_in_range(score):
    with pytest.raises(ValidationError):
        AttemptCreate.model_validate({"score": score})


@pytest.mark.parametrize("rating", [0, 6])
def test_feedback_rating_is_one_to_five(rating):
    with pytest.raises(ValidationError):
        FeedbackCreate.model_validate({"rating": rating})


def test_times_need_a_zone():
    with pytest.raises(ValidationError):
        AttemptCreate.model_validate({"score": 90, "occurred_at": "2026-01-01T00:00:00"})


def test_ticket_occurred_at_must_agree_with_resolved_at():
    body = {
        "ticket_id": "T-1",
        "agent_id": "a-1",
        "qa_score": 95,
        "csat": 5,
        "resolved_at": "2026-11-01T00:00:00Z",
    }
    assert TicketCreate.model_validate(body).qa_score == 95
    assert TicketCreate.model_validate({**body, "occurred_at": "2026-11-01T08:00:00+08:00"})
    with pytest.raises(ValidationError, match="equal resolved_at"):
        TicketCreate.model_validate({**body, "occurred_at": "2026-11-02T00:00:00Z"})
    with pytest.raises(ValidationError):
        TicketCreate.model_validate({**body, "csat": 0})


NOW = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)
SKEW = timedelta(seconds=5)


def test_event_time_is_now_when_not_given_truncated_to_milliseconds():
    assert event_time(None, NOW, SKEW) == datetime(2026, 11, 23, 10, 0, 0, 123000, tzinfo=UTC)


def test_past_occurred_at_is_taken_in_utc():
    from zoneinfo import ZoneInfo

    local = datetime(2026, 11, 1, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert event_time(local, NOW, SKEW) == datetime(2026, 11, 1, 1, 0, tzinfo=UTC)


def test_future_occurred_at_is_refused_beyond_the_skew():
    assert event_time(NOW + timedelta(seconds=4), NOW, SKEW) == to_millis(
        NOW + timedelta(seconds=4)
    )
    with pytest.raises(Invalid, match="future"):
        event_time(NOW + timedelta(seconds=6), NOW, SKEW)
