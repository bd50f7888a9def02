"""The CloudEvents 1.0 envelope (structured JSON mode) every Kafka message carries.

Each event type subclasses `CloudEvent`, pinning `type` to a Literal (the discriminator)
and `data` to its own payload model.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer


class Contract(BaseModel):
    """Base of request bodies and other input we own: immutable, unknown fields an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class EventPayload(BaseModel):
    """Base of event envelopes and payloads: immutable, unknown fields ignored.

    An additive change keeps the version of an event type (ARCHITECTURE §2), so a reader
    must accept fields it does not know yet; strictness would turn every additive change
    into an outage of the consumers that were not redeployed first.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")


def utc_iso(value: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, the form every contract time is written in."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class CloudEvent(EventPayload):
    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=128, description="Unique event id (a UUID)")
    type: str
    source: str = Field(min_length=1, description="Producer, e.g. skillquest/progress")
    time: AwareDatetime = Field(description="When the thing happened (event time)")
    subject: str = Field(min_length=1, max_length=128, description="The agent id (or key)")
    datacontenttype: Literal["application/json"] = "application/json"
    data: Any

    #: the value of `type` for this class, taken from the subclass' Literal default.
    TYPE: ClassVar[str] = ""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        default = cls.model_fields["type"].default
        if isinstance(default, str):
            cls.TYPE = default

    @field_serializer("time")
    def _serialize_time(self, value: datetime) -> str:
        return utc_iso(value)

    @classmethod
    def create(cls, *, source: str, subject: str, time: datetime, data: Any) -> Self:
        """A new event of this type with a fresh id."""
        return cls(
            id=str(uuid.uuid4()),
            type=cls.TYPE,
            source=source,
            time=time,
            subject=subject,
            data=data,
        )

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode()
