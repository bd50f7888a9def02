"""Turning Kafka message values into events, with the two ways that can fail told apart.

A *malformed* message (not JSON, not a CloudEvent, or a known type whose data is wrong) can
never succeed and goes to the dead-letter topic. An *unknown* type is a well-formed event a
newer producer sent: consumers count it and move on (ARCHITECTURE §2).
"""

from __future__ import annotations

from pydantic import ValidationError

from contracts.envelope import CloudEvent
from contracts.events import EVENT_ADAPTER, Event


class MalformedEvent(ValueError):
    """The message can never be handled: it goes to the dead-letter topic."""


class UnknownEventType(Exception):
    """A valid envelope of a type this code does not know."""

    def __init__(self, envelope: CloudEvent) -> None:
        super().__init__(f"unknown event type {envelope.type!r}")
        self.envelope = envelope


def parse_event(raw: bytes | str) -> Event:
    try:
        return EVENT_ADAPTER.validate_json(raw)
    except ValidationError as error:
        if any(detail["type"] == "union_tag_invalid" for detail in error.errors()):
            raise UnknownEventType(_parse_envelope(raw)) from None
        raise MalformedEvent(_describe(error)) from None


def _parse_envelope(raw: bytes | str) -> CloudEvent:
    try:
        return CloudEvent.model_validate_json(raw)
    except ValidationError as error:
        raise MalformedEvent(_describe(error)) from None


def _describe(error: ValidationError) -> str:
    """A short, readable account of what was wrong, for the dead letter's error field."""
    parts = []
    for detail in error.errors()[:5]:
        location = ".".join(str(item) for item in detail["loc"]) or "message"
        parts.append(f"{location}: {detail['msg']}")
    return "; ".join(parts)
