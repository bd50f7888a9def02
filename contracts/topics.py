"""Topic names, which topic each event type goes to, and the dead-letter topics."""

from __future__ import annotations

from contracts.events import EVENT_TYPES

PEOPLE_AGENTS = "people.agents"
LEARNING_CATALOG = "learning.catalog"
LEARNING_PROGRESS = "learning.progress"
WORK_TICKETS = "work.tickets"
GAMIFICATION_POINTS = "gamification.points"
GAMIFICATION_BADGES = "gamification.badges"
GAMIFICATION_LEADERBOARDS = "gamification.leaderboards"
LEARNING_CREDITS = "learning.credits"

EVENT_TOPICS: tuple[str, ...] = (
    PEOPLE_AGENTS,
    LEARNING_CATALOG,
    LEARNING_PROGRESS,
    WORK_TICKETS,
    GAMIFICATION_POINTS,
    GAMIFICATION_BADGES,
    GAMIFICATION_LEADERBOARDS,
    LEARNING_CREDITS,
)

#: Reference data that other events are judged against (who an agent is, what a course
#: asks for). A consumer applies these before the rest of the same poll: handled
#: concurrently, a course's new tags and a completion of it could each commit without
#: seeing the other, and a badge they meet together would never be awarded.
REFERENCE_TOPICS: frozenset[str] = frozenset({PEOPLE_AGENTS, LEARNING_CATALOG})

#: Services that consume events, each with its own dead-letter topic.
CONSUMING_SERVICES: tuple[str, ...] = ("points", "leaderboards", "credits", "badges")

_PREFIX_TOPICS: dict[str, str] = {
    "people.agent.": PEOPLE_AGENTS,
    "learning.course.published.": LEARNING_CATALOG,
    "learning.course.updated.": LEARNING_CATALOG,
    "learning.course.": LEARNING_PROGRESS,
    "learning.module.": LEARNING_PROGRESS,
    "learning.assessment.": LEARNING_PROGRESS,
    "learning.feedback.": LEARNING_PROGRESS,
    "work.ticket.": WORK_TICKETS,
    "gamification.points.": GAMIFICATION_POINTS,
    "gamification.badge.": GAMIFICATION_BADGES,
    "gamification.leaderboard.": GAMIFICATION_LEADERBOARDS,
    "learning.credits.": LEARNING_CREDITS,
}


def dead_letter_topic(service: str) -> str:
    return f"dlq.{service}"


def topic_for(event_type: str) -> str:
    """The topic an event type is published on (first matching prefix wins)."""
    for prefix, topic in _PREFIX_TOPICS.items():
        if event_type.startswith(prefix):
            return topic
    raise KeyError(f"no topic for event type {event_type!r}")


#: Every known type resolves to a topic: checked at import so a new type can't be orphaned.
TOPIC_OF_TYPE: dict[str, str] = {event_type: topic_for(event_type) for event_type in EVENT_TYPES}

ALL_TOPICS: tuple[str, ...] = EVENT_TOPICS + tuple(
    dead_letter_topic(service) for service in CONSUMING_SERVICES
)
