"""The standard metric families every service exports (ARCHITECTURE §6), one registry per
service instance.

`ServiceMetrics` is a nameko SharedExtension: the consumer, the relay and the HTTP
entrypoints of one container share it, while two containers in one process (tests) each
have their own registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nameko.extensions import SharedExtension
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from contracts.events import EVENT_TYPES

# `_created` series double every counter's series count and nothing here reads them.
disable_created_metrics()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
CONSUME_OUTCOMES = ("handled", "duplicate", "ignored", "dead_lettered")
DEAD_LETTER_REASONS = ("malformed", "handler_failed")


class MetricFamilies:
    """The families themselves, independent of nameko (unit tests build one directly)."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "skillquest_events_consumed",
            "Events taken off Kafka, by outcome",
            ["topic", "type", "outcome"],
            registry=r,
        )
        self.handler_latency = Histogram(
            "skillquest_event_handler_duration_seconds",
            "Time to handle one event (its whole batch), retries included",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "skillquest_event_batch_size",
            "Events handled together in one transaction",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.handler_retries = Counter(
            "skillquest_event_handler_retries",
            "Failed handler attempts that were retried",
            ["type"],
            registry=r,
        )
        self.events_in_progress = Gauge(
            "skillquest_events_in_progress", "Events being handled now", registry=r
        )
        self.last_consume_success = Gauge(
            "skillquest_last_consume_success_timestamp_seconds",
            "When an event was last handled successfully (Unix time)",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "skillquest_consumer_lag_messages",
            "Messages behind the end of each assigned partition",
            ["topic", "partition"],
            registry=r,
        )
        self.dead_letters = Counter(
            "skillquest_dead_letters",
            "Messages sent to this service's dead-letter topic",
            ["topic", "reason"],
            registry=r,
        )
        self.events_published = Counter(
            "skillquest_events_published",
            "Events the outbox relay published to Kafka",
            ["topic", "type"],
            registry=r,
        )
        self.publish_errors = Counter(
            "skillquest_publish_errors",
            "Outbox relay batches that failed to publish (retried)",
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "skillquest_outbox_backlog_events", "Events written but not yet published", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "skillquest_outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished event (0 when none)",
            registry=r,
        )
        self.http_requests = Counter(
            "skillquest_http_requests",
            "HTTP requests served",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "skillquest_http_request_duration_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.up = Gauge(
            "skillquest_service_info",
            "Constant 1, labelled with the service",
            ["service"],
            registry=r,
        )
        self.up.labels(service).set(1)
        ProcessCollector(registry=r)  # CPU, memory, open files, start time
        self._domain: dict[str, Any] = {}

    def counter(self, name: str, documentation: str, labels: Iterable[str] = ()) -> Counter:
        """A service's own (domain) counter in this registry, created on first use.

        Domain counters of the product: skillquest_points_awarded_total{rule} (points) and
        skillquest_point_awards_total{rule} (entries), skillquest_badges_awarded_total{badge},
        skillquest_credits_deposited_total{dimension},
        skillquest_leaderboard_periods_closed_total{period}.
        """
        if name not in self._domain:
            self._domain[name] = Counter(name, documentation, list(labels), registry=self.registry)
        return self._domain[name]

    def gauge(self, name: str, documentation: str, labels: Iterable[str] = ()) -> Gauge:
        """A service's own gauge, created on first use (see `counter`)."""
        if name not in self._domain:
            self._domain[name] = Gauge(name, documentation, list(labels), registry=self.registry)
        return self._domain[name]

    def prime_consumer(self, topics: Iterable[str], types: Iterable[str]) -> None:
        """Creates the consumed-event label sets at zero so rate() works from the first scrape."""
        types = list(types)
        for topic in topics:
            for reason in DEAD_LETTER_REASONS:
                self.dead_letters.labels(topic, reason)
            for event_type in types:
                self.handler_retries.labels(event_type)
                for outcome in CONSUME_OUTCOMES:
                    self.events_consumed.labels(topic, event_type, outcome)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ServiceMetrics(SharedExtension):
    """One `MetricFamilies` per service container."""

    families: MetricFamilies

    def setup(self) -> None:
        if not hasattr(self, "families"):
            self.families = MetricFamilies(self.container.service_name)


def known_types_for_topic(topic: str) -> list[str]:
    from contracts.topics import TOPIC_OF_TYPE

    return [event_type for event_type in EVENT_TYPES if TOPIC_OF_TYPE[event_type] == topic]
