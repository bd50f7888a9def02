"""The progress service's domain counter, created with every label at zero on start."""

from __future__ import annotations

from typing import Any

from nameko.extensions import DependencyProvider
from prometheus_client import Counter

from services.runtime.metrics import ServiceMetrics

FACTS = (
    "agent_registered",
    "agent_updated",
    "course_published",
    "course_updated",
    "enrolled",
    "module_completed",
    "assessment_graded",
    "assessment_passed",
    "course_completed",
    "feedback_submitted",
    "ticket_received",
    "ticket_duplicate",
)


class ProgressCounters(DependencyProvider):
    """`skillquest_progress_facts_total{fact}`: learning facts recorded (committed)."""

    metrics = ServiceMetrics()

    def setup(self) -> None:
        self.metrics.setup()  # idempotent; extensions are set up in no particular order
        self.facts: Counter = self.metrics.families.counter(
            "skillquest_progress_facts",
            "Learning and ticket facts the progress service recorded, by fact",
            ["fact"],
        )
        for fact in FACTS:
            self.facts.labels(fact)

    def get_dependency(self, worker_ctx: Any) -> ProgressCounters:
        return self

    def count(self, *facts: str) -> None:
        for fact in facts:
            self.facts.labels(fact).inc()
