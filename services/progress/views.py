"""Stored documents as the HTTP response models of contracts/api/progress.py."""

from __future__ import annotations

from typing import Any

from contracts.api.progress import (
    Agent,
    Attempt,
    Course,
    CourseProgress,
    Feedback,
    Module,
    ModuleProgress,
    TeamTierPeriod,
    TicketReceipt,
)
from services.progress import roster
from services.progress.store import changes_of, enrollment_from


def agent_view(document: dict[str, Any]) -> Agent:
    return Agent(
        agent_id=document["_id"],
        name=document["name"],
        team_id=document["team_id"],
        tier=document["tier"],
        registered_at=document["registered_at"],
        updated_at=document["updated_at"],
        revision=document["revision"],
        history=[
            TeamTierPeriod(effective_at=p.effective_at, team_id=p.team_id, tier=p.tier)
            for p in roster.periods(changes_of(document))
        ],
    )


def course_view(document: dict[str, Any]) -> Course:
    return Course(
        course_id=document["_id"],
        title=document["title"],
        tier=document["tier"],
        dimension=document["dimension"],
        credit_hours=document["credit_hours"],
        tags=document["tags"],
        modules=[Module.model_validate(module) for module in document["modules"]],
        published=document["published"],
        revision=document["revision"],
        created_at=document["created_at"],
        updated_at=document["updated_at"],
        published_at=document.get("published_at"),
    )


def progress_view(document: dict[str, Any], course: dict[str, Any]) -> CourseProgress:
    """An enrolment with the course's current title, tier, dimension and credit hours."""
    enrollment = enrollment_from(document)
    modules = []
    for module in enrollment.modules:
        state = enrollment.state(module.module_id)
        modules.append(
            ModuleProgress(
                module_id=module.module_id,
                kind=module.kind,  # type: ignore[arg-type]
                title=module.title,
                pass_score=module.pass_score,
                completed=state.completed,
                completed_at=state.completed_at,
                attempts=[
                    Attempt(attempt=a.number, score=a.score, passed=a.passed, occurred_at=a.at)
                    for a in state.attempts
                ],
                best_score=state.best_score,
            )
        )
    feedback = enrollment.feedback
    return CourseProgress(
        agent_id=enrollment.agent_id,
        course_id=enrollment.course_id,
        title=course["title"],
        tier=course["tier"],
        dimension=course["dimension"],
        credit_hours=course["credit_hours"],
        status="completed" if enrollment.completed else "in_progress",
        enrolled_at=enrollment.enrolled_at,
        modules_total=len(enrollment.modules),
        modules_done=enrollment.modules_done,
        modules=modules,
        completed_at=enrollment.completed_at,
        mean_best_score=enrollment.mean_best_score,
        feedback=(
            Feedback(rating=feedback.rating, comment=feedback.comment, submitted_at=feedback.at)
            if feedback
            else None
        ),
    )


def ticket_view(document: dict[str, Any], duplicate: bool) -> TicketReceipt:
    return TicketReceipt(
        ticket_id=document["_id"],
        agent_id=document["agent_id"],
        qa_score=document["qa_score"],
        csat=document["csat"],
        resolved_at=document["resolved_at"],
        agent=document["agent"],
        event_id=document["event_id"],
        received_at=document["received_at"],
        duplicate=duplicate,
    )
