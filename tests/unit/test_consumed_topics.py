"""Which topics each service consumes, read from its `@consume` entrypoints: what the bench's
settle check and the rebuild replay. They must match the README's table, an entrypoint of
several topics included (the points service takes three topics in one)."""

from __future__ import annotations

import pytest

from contracts.topics import (
    GAMIFICATION_BADGES,
    GAMIFICATION_LEADERBOARDS,
    GAMIFICATION_POINTS,
    LEARNING_CATALOG,
    LEARNING_CREDITS,
    LEARNING_PROGRESS,
    PEOPLE_AGENTS,
    WORK_TICKETS,
)
from services.runtime.kafka import consumed_topics

EXPECTED = {
    "points": {LEARNING_PROGRESS, WORK_TICKETS, GAMIFICATION_BADGES, PEOPLE_AGENTS},
    "leaderboards": {GAMIFICATION_POINTS, PEOPLE_AGENTS},
    "credits": {LEARNING_PROGRESS, LEARNING_CATALOG, PEOPLE_AGENTS},
    "badges": {
        LEARNING_PROGRESS,
        LEARNING_CATALOG,
        WORK_TICKETS,
        GAMIFICATION_LEADERBOARDS,
        LEARNING_CREDITS,
    },
    "progress": set(),
    "gateway": set(),
}


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_each_service_consumes_the_topics_of_the_readme(service: str) -> None:
    assert consumed_topics(service) == sorted(EXPECTED[service])
