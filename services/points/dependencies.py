"""The points service's own nameko dependencies: settings, the rule table, domain counters."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventlet.event import Event
from eventlet.semaphore import Semaphore
from nameko.extensions import DependencyProvider
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.api.points import ADJUSTMENT_RULE_ID, REVERSAL_RULE_ID, RULE_IDS
from services.points.handlers import Change, current_rules, seed_rules
from services.points.rules import DEFAULT_RULES_FILE, Rule, RuleTableError, load_rule_table
from services.runtime.metrics import ServiceMetrics
from services.runtime.mongo import Mongo, ServiceDatabase, UnitOfWork

log = logging.getLogger(__name__)


class PointsSettings(BaseModel):
    """The `POINTS:` section of deploy/config.yml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules_file: Path = Field(
        DEFAULT_RULES_FILE, description="The rule table loaded on start (defaults of §4)"
    )
    time_zone: str = Field("Asia/Shanghai", description="Local days of the daily caps")
    rules_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="How long an instance reuses the rule table before reading it again: an "
        "update through another instance applies to events handled after at most this long "
        "(0: read it in every transaction)",
    )


class RuleTable(DependencyProvider):
    """Loads the rules file on start, stores it in the database (versioned), and serves
    the current rules to the handlers."""

    def setup(self) -> None:
        section = self.container.config.get("POINTS") or {}
        try:
            settings = PointsSettings.model_validate(
                {k: v for k, v in section.items() if v is not None}
            )
            self.file_table = load_rule_table(settings.rules_file)
        except (ValidationError, RuleTableError) as error:
            raise SystemExit(f"invalid points configuration: {error}") from None
        self.cache_seconds = settings.rules_cache_seconds
        self._seeded = Event()
        self._lock = Semaphore()
        self._cached: dict[str, Rule] | None = None
        self._cached_at = 0.0

    def start(self) -> None:
        # The collections and indexes are there already: Mongo prepares them in its setup,
        # which nameko finishes for every extension before it starts any.
        database = self._database()

        def seed(uow: UnitOfWork) -> list[str]:
            return seed_rules(uow, self.file_table, datetime.now(UTC))

        changed = database.transaction(seed)
        if changed:
            log.info("points rules stored from the rules file: %s", ", ".join(changed))
        self._seeded.send(True)

    def _database(self) -> ServiceDatabase:
        for dependency in self.container.dependencies:
            if isinstance(dependency, Mongo):
                return dependency.database
        raise RuntimeError("the points service needs a Mongo dependency")

    def get_dependency(self, worker_ctx: Any) -> RuleTable:
        return self

    def current(self, uow: UnitOfWork) -> dict[str, Rule]:
        """The rules to apply now: read in the transaction, or a copy at most
        `rules_cache_seconds` old (rules change rarely; every event needs them)."""
        self._seeded.wait()
        if self.cache_seconds <= 0:
            return current_rules(uow)
        now = time.monotonic()
        if self._cached is None or now - self._cached_at > self.cache_seconds:
            self._cached = current_rules(uow)
            self._cached_at = now
        return self._cached

    def forget(self) -> None:
        """After an update through this instance: read the table again at once."""
        self._cached = None


class PointsCounters(DependencyProvider):
    """Domain counters, incremented after the transaction committed."""

    metrics = ServiceMetrics()

    def start(self) -> None:
        # Not in setup(): the shared registry is only built during setup, in any order.
        families = self.metrics.families
        self.points = families.counter(
            "skillquest_points_awarded_total", "Points awarded, by rule", ["rule"]
        )
        self.deducted = families.counter(
            "skillquest_points_deducted_total",
            "Points taken away (negative adjustments, reversals), by rule",
            ["rule"],
        )
        self.entries = families.counter(
            "skillquest_point_awards_total", "Ledger entries written, by rule", ["rule"]
        )
        for rule_id in (*RULE_IDS, ADJUSTMENT_RULE_ID, REVERSAL_RULE_ID):
            self.points.labels(rule_id)
            self.deducted.labels(rule_id)
            self.entries.labels(rule_id)

    def get_dependency(self, worker_ctx: Any) -> PointsCounters:
        return self

    def count(self, changes: Iterable[Change]) -> None:
        for change in changes:
            self.entries.labels(change.rule_id).inc()
            if change.delta > 0:
                self.points.labels(change.rule_id).inc(change.delta)
            else:
                self.deducted.labels(change.rule_id).inc(-change.delta)
