"""The credits service's domain counter, created with every dimension at zero so that
rate() works from the first scrape."""

from __future__ import annotations

from typing import Any

from nameko.extensions import DependencyProvider
from prometheus_client import Counter

from contracts.vocabulary import DIMENSIONS
from services.credits.bank import Lot
from services.runtime.metrics import ServiceMetrics

DEPOSITED = "skillquest_credits_deposited_total"
DEPOSITED_DOC = "Credit hours deposited (completed courses and admin grants), by dimension"


class CreditMetrics(DependencyProvider):
    metrics = ServiceMetrics()

    def start(self) -> None:
        for dimension in DIMENSIONS:
            self._deposited.labels(dimension)

    @property
    def _deposited(self) -> Counter:
        return self.metrics.families.counter(DEPOSITED, DEPOSITED_DOC, ["dimension"])

    def deposited(self, lot: Lot) -> None:
        """Call after the transaction committed (a transaction may run more than once)."""
        self._deposited.labels(lot.dimension).inc(lot.credit_hours)

    def get_dependency(self, worker_ctx: Any) -> CreditMetrics:
        return self
