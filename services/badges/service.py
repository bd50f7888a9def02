"""The badges service: awards badges from learning, ticket, leaderboard and credits events,
and serves them, their definitions and Open Badges 3.0 credentials."""

from __future__ import annotations

from functools import partial
from typing import Any

from nameko.extensions import DependencyProvider
from prometheus_client import Counter
from werkzeug.wrappers import Request

from contracts.api.badges import AchievementQuery, CredentialQuery
from contracts.events import (
    AssessmentGraded,
    CourseCompleted,
    CourseEnrolled,
    CoursePublished,
    CourseUpdated,
    CreditsRequirementMet,
    FeedbackSubmitted,
    LeaderboardPeriodClosed,
    ModuleCompleted,
    TicketResolved,
)
from contracts.topics import (
    GAMIFICATION_LEADERBOARDS,
    LEARNING_CATALOG,
    LEARNING_CREDITS,
    LEARNING_PROGRESS,
    WORK_TICKETS,
)
from services.badges import views
from services.badges.criteria import Achievement
from services.badges.definitions import load_definitions
from services.badges.handlers import Rules, handle_agent_events, handle_catalog_event
from services.badges.keys import IssuerKeys
from services.badges.settings import BadgesSettings, badges_settings
from services.badges.store import DOCUMENTS, RETIRED_INDEXES
from services.runtime import operations
from services.runtime.batches import EventBatch, each
from services.runtime.http import http, parse_query
from services.runtime.kafka import consume
from services.runtime.metrics import MetricFamilies, ServiceMetrics
from services.runtime.mongo import Mongo
from services.runtime.settings import ServiceSettings

PROGRESS_TYPES = [
    CourseEnrolled.TYPE,
    ModuleCompleted.TYPE,
    AssessmentGraded.TYPE,
    CourseCompleted.TYPE,
    FeedbackSubmitted.TYPE,
]


def awarded_counter(families: MetricFamilies) -> Counter:
    return families.counter(
        "skillquest_badges_awarded_total",
        "Badges awarded (one per agent, badge and level)",
        ["badge"],
    )


class BadgeRules(DependencyProvider):
    """The definitions, loaded and validated once at start (a bad file fails the start)."""

    metrics = ServiceMetrics()

    def setup(self) -> None:
        settings = badges_settings(self.container.config)
        self.rules = Rules(load_definitions(settings.definitions_path), settings.time_zone)

    def start(self) -> None:
        counter = awarded_counter(self.metrics.families)
        for definition in self.rules.definitions:
            counter.labels(definition.id)  # at zero from the first scrape, so rate() works

    def get_dependency(self, worker_ctx: Any) -> Rules:
        return self.rules


class BadgesService(operations.ConsumerEndpoints):
    """Consumes progress, catalogue, tickets, period closes and credits; serves /v1/badges.

    The base is named through its module, not imported by name: `nameko run` starts every
    class of this module that has entrypoints.
    """

    name = "badges"

    db = Mongo(documents=DOCUMENTS, retired_indexes=RETIRED_INDEXES)
    settings = ServiceSettings(BadgesSettings, "BADGES")
    rules = BadgeRules()
    keys = IssuerKeys()

    # --- consuming ------------------------------------------------------------------------

    @consume(LEARNING_PROGRESS, types=PROGRESS_TYPES)
    def on_progress(self, batch: EventBatch[Any]) -> Any:
        return self._agent_events("progress", batch)

    @consume(WORK_TICKETS, types=[TicketResolved.TYPE])
    def on_ticket(self, batch: EventBatch[TicketResolved]) -> Any:
        return self._agent_events("tickets", batch)

    @consume(LEARNING_CREDITS, types=[CreditsRequirementMet.TYPE])
    def on_credits(self, batch: EventBatch[CreditsRequirementMet]) -> Any:
        return self._agent_events("credits", batch)

    @consume(GAMIFICATION_LEADERBOARDS, types=[LeaderboardPeriodClosed.TYPE])
    def on_period_closed(self, batch: EventBatch[LeaderboardPeriodClosed]) -> Any:
        return self._agent_events("leaderboards", batch)

    @consume(LEARNING_CATALOG, types=[CoursePublished.TYPE, CourseUpdated.TYPE])
    def on_catalog(self, batch: EventBatch[CoursePublished | CourseUpdated]) -> Any:
        # Per event: catalogue changes are rare, and each compares with the one before.
        work = each(partial(handle_catalog_event, rules=self.rules))
        handled = self.db.handle_batch("catalog", batch.events, work)
        self._count([met for achieved in handled.result or () for met in achieved])
        return handled

    def _agent_events(self, consumer: str, batch: EventBatch[Any]) -> Any:
        work = partial(handle_agent_events, rules=self.rules)
        handled = self.db.handle_batch(consumer, batch.events, work)
        self._count(handled.result or [])
        return handled

    def _count(self, achieved: list[Achievement]) -> None:
        # After the commit: a retried transaction must not count twice.
        counter = awarded_counter(self.ops.families)
        for met in achieved:
            counter.labels(met.badge_id).inc()

    # --- HTTP -----------------------------------------------------------------------------

    @http("GET", "/v1/badges")
    def list_definitions(self, request: Request) -> Any:
        return views.definitions(self.rules, self.settings)

    @http("GET", "/v1/badges/issuer")
    def issuer(self, request: Request) -> Any:
        return views.issuer(self.settings, self.keys.key(self.db))

    @http("GET", "/v1/badges/issuer/jwks")
    def jwks(self, request: Request) -> Any:
        return views.jwks(self.keys.key(self.db))

    @http("GET", "/v1/badges/<badge_id>")
    def definition(self, request: Request, badge_id: str) -> Any:
        return views.definition(self.rules, self.settings, badge_id)

    @http("GET", "/v1/badges/<badge_id>/achievement")
    def achievement(self, request: Request, badge_id: str) -> Any:
        query = parse_query(request, AchievementQuery)
        return views.achievement_of(self.rules, self.settings, badge_id, query.level)

    @http("GET", "/v1/agents/<agent_id>/badges")
    def agent_badges(self, request: Request, agent_id: str) -> Any:
        return views.agent_badges(self.db, self.rules, self.settings, agent_id)

    @http("GET", "/v1/agents/<agent_id>/badges/<badge_id>/credential")
    def credential(self, request: Request, agent_id: str, badge_id: str) -> Any:
        query = parse_query(request, CredentialQuery)
        return views.credential(
            self.db, self.rules, self.settings, self.keys, agent_id, badge_id, query
        )
