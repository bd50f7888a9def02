"""The credits service: the capability bank (ARCHITECTURE §4 "Learning credits", §5)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Any

from werkzeug.wrappers import Request

from contracts.api.credits import CreditGrant, CreditsQuery, HistoryQuery, LotRevocation, LotsQuery
from contracts.events import (
    AgentRegistered,
    AgentUpdated,
    CourseCompleted,
    CoursePublished,
    CourseUpdated,
)
from contracts.topics import LEARNING_CATALOG, LEARNING_PROGRESS, PEOPLE_AGENTS
from services.credits import handlers, store, views
from services.credits.bank import grant_lot_id
from services.credits.handlers import Actor
from services.credits.metrics import CreditMetrics
from services.credits.policy import CreditsPolicy, Policy, expiry_timer
from services.runtime import operations
from services.runtime.batches import EventBatch, each
from services.runtime.errors import ApiError, BadRequest
from services.runtime.http import http, parse_body, parse_query
from services.runtime.kafka import consume
from services.runtime.mongo import Mongo

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY_MAX = 200


def _now() -> datetime:
    return datetime.now(UTC)


def _actor(request: Request) -> Actor:
    # Recorded for audit only: the gateway has already decided the caller may do this.
    return Actor(request.headers.get("X-Caller-Sub"), request.headers.get("X-Caller-Role"))


# Inherits `operations.OperationalEndpoints` through its module: `nameko run` would take a
# class with entrypoints imported into this namespace for a second service.
class CreditsService(operations.ConsumerEndpoints):
    """HTTP routes declare `ApiError` expected: a 4xx answer is logged as a warning, not as
    an error of the service."""

    name = "credits"

    db = Mongo(documents=store.DOCUMENTS)
    policy: Policy = CreditsPolicy()  # type: ignore[assignment]
    credit_metrics: CreditMetrics = CreditMetrics()

    # --- consumers ----------------------------------------------------------------------

    @consume(LEARNING_PROGRESS, types=[CourseCompleted.TYPE])
    def on_course_completed(self, batch: EventBatch[CourseCompleted]) -> Any:
        work = partial(handlers.deposit_courses, policy=self.policy)
        handled = self.db.handle_batch("on_course_completed", batch.events, work)
        for lot in handled.result or ():  # after the commit: a retry must not count twice
            if lot is not None:
                self.credit_metrics.deposited(lot)
        return handled

    @consume(PEOPLE_AGENTS, types=[AgentRegistered.TYPE, AgentUpdated.TYPE])
    def on_agent(self, batch: EventBatch[AgentRegistered | AgentUpdated]) -> Any:
        work = partial(handlers.observe_agents, policy=self.policy)
        return self.db.handle_batch("on_agent", batch.events, work)

    @consume(LEARNING_CATALOG, types=[CoursePublished.TYPE, CourseUpdated.TYPE])
    def on_course(self, batch: EventBatch[CoursePublished | CourseUpdated]) -> Any:
        return self.db.handle_batch("on_course", batch.events, each(handlers.record_course))

    # --- expiry -------------------------------------------------------------------------

    @expiry_timer
    def expire_lots(self) -> int:
        """Expires every lot whose expiry passed, one transaction per lot."""
        now = _now()
        expired = 0
        batch = self.policy.settings.expiry_scan_batch_size
        for lot_id in store.due_for_expiry(self.db, now, batch):
            if self.db.transaction(partial(handlers.expire_lot, lot_id=lot_id, now=now)):
                expired += 1
        if expired:
            log.info("expired %d credit lots", expired)
        return expired

    # --- HTTP: reads --------------------------------------------------------------------

    @http("GET", "/v1/agents/<agent_id>/credits", expected_exceptions=ApiError)
    def get_credits(self, request: Request, agent_id: str) -> Any:
        query = parse_query(request, CreditsQuery)
        return views.agent_credits(self.db, agent_id, query.as_of or _now(), self.policy)

    @http("GET", "/v1/agents/<agent_id>/credits/lots", expected_exceptions=ApiError)
    def get_lots(self, request: Request, agent_id: str) -> Any:
        query = parse_query(request, LotsQuery)
        return views.agent_lots(self.db, agent_id, query.as_of or _now(), query.status)

    @http("GET", "/v1/agents/<agent_id>/credits/lots/<lot_id>", expected_exceptions=ApiError)
    def get_lot(self, request: Request, agent_id: str, lot_id: str) -> Any:
        query = parse_query(request, CreditsQuery)
        return views.agent_lot(self.db, agent_id, lot_id, query.as_of or _now())

    @http("GET", "/v1/agents/<agent_id>/credits/history", expected_exceptions=ApiError)
    def get_history(self, request: Request, agent_id: str) -> Any:
        query = parse_query(request, HistoryQuery)
        return views.credit_history(self.db, agent_id, query.limit, query.cursor, _now())

    @http("GET", "/v1/teams/<team_id>/credits", expected_exceptions=ApiError)
    def get_team_credits(self, request: Request, team_id: str) -> Any:
        query = parse_query(request, CreditsQuery)
        return views.team_credits(self.db, team_id, query.as_of or _now(), self.policy)

    @http("GET", "/v1/credits/requirements", expected_exceptions=ApiError)
    def get_requirements(self, request: Request) -> Any:
        return views.requirements(self.policy)

    # --- HTTP: admin --------------------------------------------------------------------

    @http("POST", "/v1/agents/<agent_id>/credits/grants", expected_exceptions=ApiError)
    def post_grant(self, request: Request, agent_id: str) -> Any:
        body = parse_body(request, CreditGrant)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
            raise BadRequest(f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters")
        lot_id = grant_lot_id(agent_id, key) if key else f"grant-{uuid.uuid4().hex[:24]}"
        lot, created = self.db.transaction(
            lambda uow: handlers.grant(
                uow, agent_id, body, _actor(request), _now(), lot_id, self.policy
            )
        )
        if created:
            self.credit_metrics.deposited(lot)
        return (201 if created else 200), views.lot_model(lot, _now())

    @http(
        "POST",
        "/v1/agents/<agent_id>/credits/lots/<lot_id>/revocation",
        expected_exceptions=ApiError,
    )
    def post_revocation(self, request: Request, agent_id: str, lot_id: str) -> Any:
        body = parse_body(request, LotRevocation)
        lot = self.db.transaction(
            lambda uow: handlers.revoke(uow, agent_id, lot_id, body.reason, _actor(request), _now())
        )
        return views.lot_model(lot, _now())
