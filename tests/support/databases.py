"""A service's database for tests that run handlers on the real database directly (no
broker, no nameko container): the collections and indexes the service creates on start."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import mongoengine
from pymongo import MongoClient, monitoring

from services.runtime.mongo import PROCESSED_EVENTS, ServiceDatabase
from services.runtime.outbox import LEASES, OUTBOX, ensure_outbox_indexes


def fresh_service_database(
    client: MongoClient, service: str, documents: Iterable[type[mongoengine.Document]]
) -> ServiceDatabase:
    """A new, uniquely named database for `service` with its collections and indexes."""
    db = client[f"{service}_{uuid.uuid4().hex[:10]}"]
    documents = tuple(documents)
    for name in (*(doc._get_collection_name() for doc in documents), OUTBOX, PROCESSED_EVENTS):
        db.create_collection(name)
    db.create_collection(LEASES)
    ensure_outbox_indexes(db)
    for document in documents:
        for spec in document._meta.get("index_specs", []):
            db[document._get_collection_name()].create_index(
                spec["fields"], unique=spec.get("unique", False)
            )
    return ServiceDatabase(client, db, f"skillquest/{service}", on_events_committed=lambda: None)


class Statements(monitoring.CommandListener):
    """The names of the commands a client sends, in order (give it as an event listener)."""

    WRITES = ("insert", "update", "delete")

    def __init__(self) -> None:
        self.names: list[str] = []

    @property
    def writes(self) -> list[str]:
        return [name for name in self.names if name in self.WRITES]

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass
