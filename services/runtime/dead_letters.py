"""Dead letters: the record written to `dlq.<service>` for a message that could not be
handled, and how to read and replay them.

The record wraps the original message unchanged (base64, so a value that is not even text
survives) with what went wrong, so an operator can inspect it and put it back on its topic.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.envelope import utc_iso
from contracts.topics import dead_letter_topic
from services.runtime.publisher import OutgoingMessage
from services.runtime.topic_reader import read_topic


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    reason: str  # "malformed" | "handler_failed"
    error: str
    attempts: int
    topic: str  # the logical topic the message came from (without any name prefix)
    partition: int
    offset: int
    key: str | None
    value_b64: str
    event_id: str | None = None
    event_type: str | None = None
    failed_at: str

    @property
    def value(self) -> bytes:
        return base64.b64decode(self.value_b64)

    def to_message(self) -> OutgoingMessage:
        return OutgoingMessage(
            dead_letter_topic(self.service),
            self.key or "",
            self.model_dump_json().encode(),
        )

    def replay_message(self) -> OutgoingMessage:
        """The original message, for its original topic and key."""
        return OutgoingMessage(self.topic, self.key or "", self.value)


def dead_letter_for(
    *,
    service: str,
    reason: str,
    error: str,
    attempts: int,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    event_id: str | None = None,
    event_type: str | None = None,
) -> DeadLetter:
    return DeadLetter(
        service=service,
        reason=reason,
        error=error[:4000],
        attempts=attempts,
        topic=topic,
        partition=partition,
        offset=offset,
        key=key.decode(errors="replace") if key is not None else None,
        value_b64=base64.b64encode(value).decode(),
        event_id=event_id,
        event_type=event_type,
        failed_at=utc_iso(datetime.now(UTC)),
    )


class DeadLetterStore:
    """Reads and replays the dead letters of one service, for operators (CLI and admin API).

    Plain kafka-python, no consumer group: listing never moves anyone's offsets.
    """

    def __init__(self, bootstrap_servers: str, service: str, name_prefix: str = "") -> None:
        self.bootstrap_servers = bootstrap_servers.split(",")
        self.service = service
        self.name_prefix = name_prefix

    @property
    def topic(self) -> str:
        return self.name_prefix + dead_letter_topic(self.service)

    def letters(self, limit: int = 100, timeout: float = 60.0) -> list[tuple[str, DeadLetter]]:
        """(position, letter) pairs, oldest first; position is `partition:offset`."""
        records = read_topic(
            ",".join(self.bootstrap_servers), self.topic, limit=limit, timeout=timeout
        )
        return [
            (f"{record.partition}:{record.offset}", DeadLetter.model_validate_json(record.value))
            for record in records
        ]

    def get(self, position: str) -> DeadLetter | None:
        return dict(self.letters(limit=1_000_000)).get(position)

    def replay(self, positions: list[str] | None = None) -> list[str]:
        """Puts letters back on their original topics; all of them when `positions` is None.

        Every consumer of that topic sees the message again; those that handled it already
        recorded its event id, so only the service that failed applies it (once).
        """
        from kafka import KafkaProducer

        letters = self.letters(limit=1_000_000)
        chosen = [(p, letter) for p, letter in letters if positions is None or p in positions]
        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap_servers, acks="all", enable_idempotence=True
        )
        try:
            for _, letter in chosen:
                message = letter.replay_message()
                producer.send(
                    self.name_prefix + message.topic, key=message.key.encode(), value=message.value
                ).get(timeout=30)
        finally:
            producer.close()
        return [p for p, _ in chosen]


# --- the admin API's models (services/runtime/operations.py serves them) ---------------------


class DeadLetterQuery(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    limit: int = Field(100, ge=1, le=10_000)


class DeadLetterView(BaseModel):
    """One dead letter; `position` (`partition:offset` in `dlq.<service>`) names it."""

    model_config = ConfigDict(frozen=True)

    position: str
    service: str
    reason: str
    error: str
    attempts: int
    topic: str
    partition: int
    offset: int
    key: str | None
    event_id: str | None
    event_type: str | None
    failed_at: str
    #: the original message: parsed JSON when it is JSON, else its text
    value: Any

    @classmethod
    def of(cls, position: str, letter: DeadLetter) -> DeadLetterView:
        raw = letter.value
        value: Any
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw.decode(errors="replace")
        fields = letter.model_dump(exclude={"value_b64"})
        return cls(position=position, value=value, **fields)


class DeadLetterList(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    dead_letters: list[DeadLetterView]


class ReplayRequest(BaseModel):
    """`{"positions": ["0:12", ...]}` replays those; no body, `{}` or `null` replays all."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    positions: list[str] | None = Field(None, max_length=10_000)


class ReplayReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: str
    replayed: list[str]
    #: positions asked for that are not in the dead-letter topic
    missing: list[str]
