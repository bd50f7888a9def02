"""The points service (nameko name "points"): awards points from learning, ticket and badge
events into an append-only ledger, keeps balances, and serves them over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from werkzeug.wrappers import Request

from contracts.api.points import (
    RULE_IDS,
    AdjustmentRequest,
    HistoryQuery,
    LedgerEntry,
    PointsView,
    ReversalRequest,
    RuleDefinition,
    RulesView,
    RuleUpdate,
    RuleVersionsView,
    RuleView,
)
from contracts.events import (
    AgentRegistered,
    AgentUpdated,
    AssessmentGraded,
    BadgeAwarded,
    CourseCompleted,
    ModuleCompleted,
    TicketResolved,
)
from contracts.topics import GAMIFICATION_BADGES, LEARNING_PROGRESS, PEOPLE_AGENTS, WORK_TICKETS
from contracts.vocabulary import Id
from services.points import handlers, store
from services.points.dependencies import PointsCounters, PointsSettings, RuleTable
from services.points.rules import SHAPES, AwardingEvent
from services.runtime import operations
from services.runtime.batches import EventBatch
from services.runtime.errors import ApiError, BadRequest, Conflict
from services.runtime.http import http, parse_body, parse_query, require
from services.runtime.kafka import consume
from services.runtime.mongo import Handled, Mongo, UnitOfWork
from services.runtime.settings import ServiceSettings

_ID = TypeAdapter(Id)
AWARDS_CONSUMER = "points.awards"
ROSTER_CONSUMER = "points.roster"


def _checked_id(value: str, what: str) -> str:
    try:
        return _ID.validate_python(value)
    except ValidationError:
        raise BadRequest(
            f"invalid {what}: use 1-64 letters, digits and . _ : @ -",
            details=[{"field": what, "message": "invalid id", "received": value}],
        ) from None


def _caller(request: Request) -> str | None:
    return request.headers.get("X-Caller-Sub") or None


def _entry_view(doc: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry.model_validate({**doc, "award_id": doc["_id"]})


def _rule_view(doc: dict[str, Any]) -> RuleView:
    rule_id = doc.get("rule_id", doc["_id"])
    shape = SHAPES[rule_id]
    return RuleView(
        rule_id=rule_id,
        version=doc["version"],
        description=shape.description,
        on=list(shape.on),
        definition=RuleDefinition.model_validate(doc["definition"]),
        updated_at=doc["updated_at"],
        updated_by=doc.get("updated_by"),
    )


class PointsService(operations.ConsumerEndpoints):
    name = "points"

    db = Mongo(documents=store.DOCUMENTS, retired_indexes=store.RETIRED_INDEXES)
    settings = ServiceSettings(PointsSettings, "POINTS")
    rules = RuleTable()
    counters = PointsCounters()

    # --- events -------------------------------------------------------------------------

    # Every event that may award points, whichever topic it came on, in one batch per poll:
    # one transaction where three had run one after another (each a round of statements
    # on the database, and a wait for the next poll for the events behind it).
    @consume(
        (LEARNING_PROGRESS, WORK_TICKETS, GAMIFICATION_BADGES),
        types=[
            ModuleCompleted.TYPE,
            AssessmentGraded.TYPE,
            CourseCompleted.TYPE,
            TicketResolved.TYPE,
            BadgeAwarded.TYPE,
        ],
    )
    def on_awarding_event(self, batch: EventBatch[AwardingEvent]) -> Any:
        return self._award(batch)

    @consume(PEOPLE_AGENTS, types=[AgentRegistered.TYPE, AgentUpdated.TYPE])
    def on_agent(self, batch: EventBatch[AgentRegistered | AgentUpdated]) -> Any:
        return self.db.handle_batch(ROSTER_CONSUMER, batch.events, handlers.record_agents)

    def _award(self, batch: EventBatch[Any]) -> Handled[list[handlers.Change]]:
        def work(uow: UnitOfWork, events: list[AwardingEvent]) -> list[handlers.Change]:
            rules = self.rules.current(uow)
            now = datetime.now(UTC)
            return handlers.award_batch(uow, events, rules, self.settings.time_zone, now)

        handled = self.db.handle_batch(AWARDS_CONSUMER, batch.events, work)
        if handled.result:  # after the commit: a retried transaction must not count twice
            self.counters.count(handled.result)
        return handled

    # --- balance and history --------------------------------------------------------------

    @http("GET", "/v1/agents/<agent_id>/points", expected_exceptions=ApiError)
    def get_points(self, request: Request, agent_id: str) -> Any:
        agent_id = _checked_id(agent_id, "agent_id")
        query = parse_query(request, HistoryQuery)
        try:
            page, next_cursor = store.history_page(self.db.db, agent_id, query.limit, query.cursor)
        except store.BadCursor:
            raise BadRequest(
                "invalid cursor: pass the next_cursor of the previous page, or none",
                details=[{"field": "cursor", "message": "not a cursor of this API"}],
            ) from None
        account = store.find_account(self.db.db, agent_id) or {}
        return PointsView(
            agent_id=agent_id,
            balance=account.get("balance", 0),
            history=[_entry_view(doc) for doc in page],
            next_cursor=next_cursor,
        )

    @http("GET", "/v1/agents/<agent_id>/points/awards/<award_id>", expected_exceptions=ApiError)
    def get_award(self, request: Request, agent_id: str, award_id: str) -> Any:
        found = store.find_award(self.db.db, agent_id, award_id)
        return _entry_view(require(found, f"award {award_id} of agent {agent_id}"))

    # --- admin changes -------------------------------------------------------------------

    @http("POST", "/v1/agents/<agent_id>/points/adjustments", expected_exceptions=ApiError)
    def post_adjustment(self, request: Request, agent_id: str) -> Any:
        agent_id = _checked_id(agent_id, "agent_id")
        body = parse_body(request, AdjustmentRequest)
        key = request.headers.get("Idempotency-Key")
        adjustment_id = None
        if key:
            adjustment_id = store.award_id_for(f"{agent_id}|{key}", "adjustment")
        now = datetime.now(UTC)

        def work(uow: UnitOfWork) -> handlers.Change:
            return handlers.adjust(
                uow, agent_id, body.delta, body.reason, now, _caller(request), adjustment_id
            )

        try:
            change = self.db.transaction(work)
        except handlers.AlreadyAwarded:
            # The same Idempotency-Key again: answer with what the first request did.
            existing = store.find_award(self.db.db, agent_id, adjustment_id or "")
            if existing is None or existing["delta"] != body.delta:
                raise Conflict("this Idempotency-Key was used for another adjustment") from None
            return 200, _entry_view(existing)
        self.counters.count([change])
        return 201, _entry_view(change.entry)

    @http(
        "POST",
        "/v1/agents/<agent_id>/points/awards/<award_id>/reversal",
        expected_exceptions=ApiError,
    )
    def post_reversal(self, request: Request, agent_id: str, award_id: str) -> Any:
        body = parse_body(request, ReversalRequest)
        now = datetime.now(UTC)

        def work(uow: UnitOfWork) -> handlers.Change:
            return handlers.reverse(uow, agent_id, award_id, body.reason, now, _caller(request))

        try:
            change = self.db.transaction(work)
        except handlers.AlreadyAwarded:
            raise Conflict(f"award {award_id} was already reversed") from None
        self.counters.count([change])
        return 201, _entry_view(change.entry)

    # --- the rule table ------------------------------------------------------------------

    @http("GET", "/v1/points/rules", expected_exceptions=ApiError)
    def get_rules(self, request: Request) -> Any:
        docs = {doc["_id"]: doc for doc in store.all_rules(self.db.db)}
        return RulesView(rules=[_rule_view(docs[r]) for r in RULE_IDS if r in docs])

    @http("GET", "/v1/points/rules/<rule_id>", expected_exceptions=ApiError)
    def get_rule(self, request: Request, rule_id: str) -> Any:
        docs = {doc["_id"]: doc for doc in store.all_rules(self.db.db)}
        return _rule_view(require(docs.get(rule_id), f"rule {rule_id}"))

    @http("GET", "/v1/points/rules/<rule_id>/versions", expected_exceptions=ApiError)
    def get_rule_versions(self, request: Request, rule_id: str) -> Any:
        versions = store.rule_versions(self.db.db, rule_id)
        require(versions or None, f"rule {rule_id}")
        return RuleVersionsView(rule_id=rule_id, versions=[_rule_view(doc) for doc in versions])

    @http("PUT", "/v1/points/rules/<rule_id>", expected_exceptions=ApiError)
    def put_rule(self, request: Request, rule_id: str) -> Any:
        update = parse_body(request, RuleUpdate)
        now = datetime.now(UTC)

        def work(uow: UnitOfWork) -> dict[str, Any]:
            return handlers.update_rule(uow, rule_id, update, now, _caller(request))

        doc = self.db.transaction(work)
        self.rules.forget()
        return _rule_view(doc)
