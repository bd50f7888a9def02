"""Two points service instances (same name prefix: one consumer group, one database) split
the partitions between them; the daily cap and the balances stay exact even when both
handle the same agent at once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from contracts.topics import WORK_TICKETS
from services.points.service import PointsService
from services.runtime.kafka import KafkaConsumerExtension
from tests.integration.points_events import PointsClient
from tests.support.events import (
    module_completed,
    snapshot,
    ticket_resolved,
)
from tests.support.harness import EventBus, running, service_config, unique_prefix, wait_until

pytestmark = pytest.mark.integration

DAY = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def consumer_of(container) -> KafkaConsumerExtension:
    return next(e for e in container.extensions if isinstance(e, KafkaConsumerExtension))


def test_two_instances_respect_the_daily_cap_and_keep_exact_balances(broker, database):
    prefix = unique_prefix()
    bus = EventBus(broker.bootstrap, prefix)
    first_config = service_config(broker, database, prefix)
    second_config = service_config(broker, database, prefix)
    try:
        with (
            running(PointsService, first_config) as first,
            running(PointsService, second_config) as second,
        ):
            wait_until(
                lambda: consumer_of(first).assigned and consumer_of(second).assigned,
                timeout=40,
                message="both instances to own partitions",
            )
            hot = f"hot-{uuid.uuid4().hex[:6]}"
            agent = snapshot(hot)
            # Producers key by agent id, which keeps an agent on one instance; a rebalance
            # or a producer keying otherwise puts one agent on both. Force that: 40 good
            # tickets of one local day (5 each, cap 50) under keys spread over partitions.
            for i in range(40):
                event = ticket_resolved(agent, DAY + timedelta(seconds=i), f"T{i}")
                bus.send(WORK_TICKETS, f"key-{i}", event.to_json_bytes())
            # And ordinary traffic for many agents, keyed as producers key it.
            others = [snapshot(f"crowd-{uuid.uuid4().hex[:6]}") for _ in range(12)]
            for other in others:
                for i in range(12):
                    bus.publish(ticket_resolved(other, DAY + timedelta(minutes=i), f"C{i}"))
                bus.publish(module_completed(other, DAY))

            one, two = PointsClient(first_config), PointsClient(second_config)
            wait_until(
                lambda: all(one.balance(o.agent_id) == 60 for o in others),
                timeout=60,
                message="every agent's capped tickets and module",
            )
            wait_until(lambda: one.balance(hot) == 50, timeout=60, message="the hot agent's cap")
            # Let the partitions drain, then check the cap was never exceeded.
            marker = ticket_resolved(agent, DAY + timedelta(days=1), "marker")
            bus.publish(marker)
            wait_until(lambda: one.balance(hot) == 55, timeout=30, message="the next day")
            history = two.full_history(hot)
            capped_day = [e for e in history if e["source_event_id"] != marker.id]
            assert sum(e["delta"] for e in capped_day) == 50
            assert len(capped_day) == 10
            assert [e["balance"] for e in sorted(history, key=lambda e: e["balance"])] == list(
                range(5, 60, 5)
            )
            handled = [
                consumer_of(c)
                .metrics.families.events_consumed.labels(
                    WORK_TICKETS, "work.ticket.resolved.v1", "handled"
                )
                ._value.get()
                for c in (first, second)
            ]
            assert all(count > 0 for count in handled), handled  # both did real work
    finally:
        bus.close()
