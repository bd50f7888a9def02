"""Contracts: every event type round-trips, parsing tells malformed from unknown, and the
checked-in JSON Schemas match the models."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from contracts.events import (
    EVENT_CLASSES,
    EVENT_TYPES,
    CourseCompleted,
    CourseCompletedData,
    TicketResolved,
    TicketResolvedData,
)
from contracts.parsing import MalformedEvent, UnknownEventType, parse_event
from contracts.schemas_export import SCHEMA_DIR, schema_documents
from contracts.topics import ALL_TOPICS, TOPIC_OF_TYPE, topic_for
from contracts.vocabulary import AgentSnapshot, next_tier

AGENT = AgentSnapshot(agent_id="a-1", team_id="team-1", tier="foundation")
WHEN = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def ticket() -> TicketResolved:
    return TicketResolved.create(
        source="skillquest/progress",
        subject="a-1",
        time=WHEN,
        data=TicketResolvedData(agent=AGENT, ticket_id="T-1", qa_score=95, csat=5),
    )


def test_an_event_round_trips_through_json_as_a_cloudevent():
    event = ticket()
    raw = json.loads(event.to_json_bytes())
    assert raw["specversion"] == "1.0"
    assert raw["type"] == "work.ticket.resolved.v1"
    assert raw["time"] == "2026-11-23T06:00:00Z"
    assert raw["datacontenttype"] == "application/json"
    assert parse_event(event.to_json_bytes()) == event


def test_every_event_type_has_a_topic_and_a_schema():
    assert len(EVENT_TYPES) == len(EVENT_CLASSES) == 16
    for event_type in EVENT_TYPES:
        assert TOPIC_OF_TYPE[event_type] in ALL_TOPICS
    assert topic_for("learning.course.published.v1") == "learning.catalog"
    assert topic_for("learning.course.completed.v1") == "learning.progress"
    assert "dlq.points" in ALL_TOPICS


def test_checked_in_schemas_are_current():
    expected = schema_documents()
    on_disk = {path.name: path.read_text() for path in SCHEMA_DIR.glob("*.json")}
    stale = sorted(name for name in expected if on_disk.get(name) != expected[name])
    extra = sorted(set(on_disk) - set(expected))
    assert not stale and not extra, f"run `make schemas`: stale {stale}, extra {extra}"


def test_an_unknown_type_is_told_apart_from_a_malformed_message():
    raw = json.loads(ticket().to_json_bytes())
    raw["type"] = "work.ticket.escalated.v2"
    with pytest.raises(UnknownEventType) as unknown:
        parse_event(json.dumps(raw))
    assert unknown.value.envelope.type == "work.ticket.escalated.v2"

    raw["time"] = "yesterday"
    with pytest.raises(MalformedEvent):
        parse_event(json.dumps(raw))


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda e: e["data"].__setitem__("qa_score", 101), "qa_score"),
        (lambda e: e.__setitem__("time", "2026-11-23T06:00:00"), "time"),  # no time zone
        (lambda e: e["data"].pop("agent"), "agent"),
        (lambda e: e.__setitem__("specversion", "0.3"), "specversion"),
    ],
)
def test_malformed_events_say_what_is_wrong(mutate, complaint):
    raw = json.loads(ticket().to_json_bytes())
    mutate(raw)
    with pytest.raises(MalformedEvent, match=complaint):
        parse_event(json.dumps(raw))


def test_additive_fields_from_a_newer_producer_are_accepted():
    raw = json.loads(ticket().to_json_bytes())
    raw["data"]["channel"] = "voice"
    raw["traceparent"] = "00-abc-def-01"
    assert parse_event(json.dumps(raw)).data.qa_score == 95


def test_credit_hours_come_in_half_hour_steps():
    def completed(hours: float) -> CourseCompleted:
        return CourseCompleted.create(
            source="s",
            subject="a-1",
            time=WHEN,
            data=CourseCompletedData(
                agent=AGENT,
                course_id="c-1",
                course_tier="advanced",
                dimension="technology",
                credit_hours=hours,
                tags=[],
                mean_best_score=None,
            ),
        )

    assert completed(2.5).data.credit_hours == 2.5
    for bad in (0.0, 0.25, 40.5):
        with pytest.raises(ValueError):
            completed(bad)


def test_tiers_are_ordered():
    assert next_tier("foundation") == "advanced"
    assert next_tier("advanced") == "leadership"
    assert next_tier("leadership") is None
