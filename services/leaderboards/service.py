"""The leaderboards nameko service: consumes points and roster events, serves boards,
closes periods on a timer, rebuilds on demand. Thin: unpack, call, return."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from nameko.extensions import DependencyProvider
from nameko.timer import timer
from werkzeug.wrappers import Request

from contracts.api.leaderboards import (
    AgentStandings,
    Leaderboard,
    LeaderboardPosition,
    LeaderboardQuery,
    PositionQuery,
    RebuildReport,
    RebuildRequest,
    StandingsQuery,
)
from contracts.events import AgentRegistered, AgentUpdated, PointsAwarded, PointsReversed
from contracts.topics import GAMIFICATION_POINTS, PEOPLE_AGENTS
from services.leaderboards import handlers, queries
from services.leaderboards.settings import LeaderboardSettings
from services.leaderboards.store import DOCUMENTS
from services.leaderboards.views import ReadViews
from services.runtime import operations
from services.runtime.batches import EventBatch
from services.runtime.http import http, parse_body, parse_query
from services.runtime.kafka import consume
from services.runtime.mongo import Mongo
from services.runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

PERIODS_CLOSED = "skillquest_leaderboard_periods_closed_total"
CLOSE_DUE = "skillquest_leaderboard_close_due_timestamp_seconds"
#: The timer ticks this often; the configured check interval decides which ticks look.
TICK_SECONDS = 1.0


class CloseSchedule(DependencyProvider):
    """Remembers when this instance last looked for periods to close."""

    def setup(self) -> None:
        self.last_check: float | None = None

    def due(self, interval: float) -> bool:
        now = time.monotonic()
        if self.last_check is not None and now - self.last_check < interval:
            return False
        self.last_check = now
        return True

    def get_dependency(self, worker_ctx: Any) -> CloseSchedule:
        return self


class LeaderboardsService(operations.ConsumerEndpoints):
    name = "leaderboards"

    db = Mongo(documents=DOCUMENTS, upgrade=handlers.upgrade_storage)
    settings = ServiceSettings(LeaderboardSettings, "LEADERBOARDS")
    schedule = CloseSchedule()
    views = ReadViews(database="db", settings="settings")

    @consume(GAMIFICATION_POINTS, types=[PointsAwarded.TYPE, PointsReversed.TYPE])
    def on_points(self, batch: EventBatch[PointsAwarded | PointsReversed]) -> Any:
        apply = partial(
            handlers.apply_points,
            lane=batch.lane,
            tz=self.settings.time_zone,
            now=datetime.now(UTC),
            touch_every=handlers.touch_interval(
                timedelta(seconds=self.settings.close_grace_seconds)
            ),
        )
        # The applied-points log is the consumer's own record of what it applied.
        return self.db.apply_batch(batch.events, apply)

    @consume(PEOPLE_AGENTS, types=[AgentRegistered.TYPE, AgentUpdated.TYPE])
    def on_agent(self, batch: EventBatch[AgentRegistered | AgentUpdated]) -> Any:
        apply = partial(handlers.apply_roster, lane=batch.lane)
        return self.db.handle_batch("on_agent", batch.events, apply)

    @timer(interval=TICK_SECONDS)
    def close_periods(self) -> None:
        counter = self.ops.families.counter(
            PERIODS_CLOSED, "Weekly and monthly periods closed (snapshot published)", ["period"]
        )
        for kind in ("weekly", "monthly"):
            counter.labels(kind)  # at zero from the first scrape
        if not self.schedule.due(self.settings.close_check_interval_seconds):
            return
        closed = handlers.close_due_periods(
            self.db,
            tz=self.settings.time_zone,
            now=datetime.now(UTC),
            grace=timedelta(seconds=self.settings.close_grace_seconds),
        )
        for kind in closed:  # counted after each close committed
            counter.labels(kind).inc()
        due = self.ops.families.gauge(
            CLOSE_DUE, "When the oldest period not closed yet ended (Unix time)", ["period"]
        )
        now = datetime.now(UTC)
        for kind in ("weekly", "monthly"):
            ends = handlers.close_due_at(self.db, kind, tz=self.settings.time_zone, now=now)
            due.labels(kind).set(ends.timestamp())

    @http("GET", "/v1/leaderboards/<period>")
    def leaderboard(self, request: Request, period: str) -> Leaderboard:
        query = parse_query(request, LeaderboardQuery)
        return queries.leaderboard(self.db.db, period, query, **self._read_as())

    @http("GET", "/v1/leaderboards/<period>/agents/<agent_id>")
    def position(self, request: Request, period: str, agent_id: str) -> LeaderboardPosition:
        query = parse_query(request, PositionQuery)
        return queries.position(self.db.db, period, agent_id, query, **self._read_as())

    @http("GET", "/v1/agents/<agent_id>/standings")
    def standings(self, request: Request, agent_id: str) -> AgentStandings:
        query = parse_query(request, StandingsQuery)
        return queries.standings(self.db.db, agent_id, query, **self._read_as())

    def _read_as(self) -> dict[str, Any]:
        """What every read is answered with: the time zone and now (which periods are
        current), how old a cached answer may be, and the read views."""
        return {
            "tz": self.settings.time_zone,
            "now": datetime.now(UTC),
            "fresh_for": self.settings.read_cache_seconds,
            "views": self.views,
        }

    @http("POST", "/v1/leaderboards/rebuild")
    def rebuild(self, request: Request) -> RebuildReport:
        if request.get_data(cache=True):
            parse_body(request, RebuildRequest)
        caller = request.headers.get("X-Caller-Sub", "unknown")
        log.info("leaderboard rebuild requested by %s", caller)
        report = handlers.rebuild(self.db, tz=self.settings.time_zone)
        log.info("leaderboard rebuild by %s done: %s", caller, report.model_dump_json())
        return report
