"""The MongoDB side of a service: its own database, units of work, idempotent handling.

`Mongo` is the nameko dependency. It gives each worker a `ServiceDatabase` that runs
functions inside a MongoDB transaction (`UnitOfWork`), where domain writes, outgoing events
(the outbox) and the handled-event record all commit together or not at all.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import mongoengine
from nameko.extensions import DependencyProvider
from pymongo import MongoClient
from pymongo.client_session import ClientSession
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import CollectionInvalid, DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from contracts.envelope import CloudEvent
from services.runtime.outbox import (
    LEASES,
    OUTBOX,
    OutboxRelay,
    ensure_outbox_indexes,
    outbox_record,
)
from services.runtime.settings import RuntimeSettings, settings_from_config

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Anything a caller is told succeeded must survive a crash of the database server.
DURABLE = WriteConcern(w="majority", j=True)

PROCESSED_EVENTS = "processed_events"


class AlreadyHandled(Exception):
    """The event id was recorded before: the transaction is aborted and that is a success."""


@dataclass
class UnitOfWork:
    """One transaction: the session to pass to every pymongo call, plus the outbox."""

    db: Database
    session: ClientSession
    source: str
    pending_events: list[CloudEvent] = field(default_factory=list)

    def collection(self, name: str) -> Collection:
        return self.db[name]

    def publish(self, event: CloudEvent) -> None:
        """Queues an event; it is written to the outbox when the transaction commits."""
        self.pending_events.append(event)

    def mark_handled(self, consumer: str, event_id: str) -> None:
        """Records the event as handled; raises `AlreadyHandled` on a redelivery."""
        try:
            self.db[PROCESSED_EVENTS].insert_one(
                {"_id": f"{consumer}:{event_id}", "at": datetime.now(UTC)}, session=self.session
            )
        except DuplicateKeyError:
            raise AlreadyHandled(event_id) from None

    def _write_outbox(self) -> None:
        if not self.pending_events:
            return
        now = datetime.now(UTC)
        self.db[OUTBOX].insert_many(
            [outbox_record(event, now) for event in self.pending_events], session=self.session
        )


class ServiceDatabase:
    """What a worker gets: the service's database and a way to run a unit of work."""

    def __init__(
        self, client: MongoClient, db: Database, source: str, on_commit: Callable[[], None]
    ) -> None:
        self.client = client
        self.db = db
        self.source = source
        self._on_commit = on_commit

    def collection(self, name: str) -> Collection:
        return self.db[name]

    def transaction(self, work: Callable[[UnitOfWork], T]) -> T:
        """Runs `work` in a transaction, retried on transient errors (write conflicts).

        `work` may run more than once, so it must do nothing but database calls through the
        unit of work: no Kafka sends, no HTTP calls.
        """
        with self.client.start_session() as session:

            def attempt(session: ClientSession) -> T:
                uow = UnitOfWork(self.db, session, self.source)
                result = work(uow)
                uow._write_outbox()
                return result

            result = session.with_transaction(
                attempt, read_concern=ReadConcern("snapshot"), write_concern=DURABLE
            )
        self._on_commit()
        return result

    def handle_once(
        self, consumer: str, event: CloudEvent, work: Callable[[UnitOfWork], T]
    ) -> T | None:
        """Applies `work` for `event` unless this consumer already did (then returns None)."""

        def guarded(uow: UnitOfWork) -> T:
            uow.mark_handled(consumer, event.id)
            return work(uow)

        try:
            return self.transaction(guarded)
        except AlreadyHandled:
            return None

    def ping(self) -> bool:
        try:
            self.client.admin.command("ping")
            return True
        except PyMongoError:
            return False


class Mongo(DependencyProvider):
    """The service's own database (ARCHITECTURE §1: no service reads another's).

    `documents` are the service's mongoengine classes: their indexes are created on start.
    """

    relay = OutboxRelay()

    def __init__(self, documents: Iterable[type[mongoengine.Document]] = ()) -> None:
        self.documents = tuple(documents)

    def setup(self) -> None:
        self.settings: RuntimeSettings = settings_from_config(self.container.config)
        service = self.container.service_name
        self.client: MongoClient = MongoClient(
            self.settings.mongodb_uri,
            tz_aware=True,
            w="majority",
            journal=True,
            serverSelectionTimeoutMS=5_000,
            connect=False,
        )
        self.db = self.client[self.settings.database_name(service)]
        self._connect_documents(service)
        self.relay.attach(self.db, self.settings)
        self.database = ServiceDatabase(
            self.client, self.db, f"skillquest/{service}", on_commit=self.relay.wake
        )
        # In setup, not start: nameko finishes every extension's setup before it starts any,
        # so the consumer and the relay never run a transaction on a half-made schema.
        self.prepare_schema()

    def _connect_documents(self, alias: str) -> None:
        # mongoengine keeps connections in a process-wide registry and caches each
        # document's collection: reset both so this container uses its own database.
        mongoengine.disconnect(alias)
        mongoengine.connect(
            db=self.db.name, host=self.settings.mongodb_uri, alias=alias, tz_aware=True
        )
        for document in self.documents:
            document._meta["db_alias"] = alias
            document._collection = None

    def prepare_schema(self) -> None:
        """Creates every collection and index before the first transaction can run.

        A collection created implicitly inside a transaction while an index build runs on
        it can stall the server (seen with the local MongoDB-protocol server), and MongoDB
        itself refuses some implicit creations in transactions: so nothing is left implicit.
        Idempotent.
        """
        existing = set(self.db.list_collection_names())
        names = [OUTBOX, PROCESSED_EVENTS, LEASES]
        names += [document._get_collection_name() for document in self.documents]
        for name in names:
            if name not in existing:
                with contextlib.suppress(CollectionInvalid):
                    self.db.create_collection(name)
        ensure_outbox_indexes(self.db)
        for document in self.documents:
            document.ensure_indexes()

    def stop(self) -> None:
        self.relay.stop()  # its last batch needs the client: stop it before closing
        self.client.close()

    def kill(self) -> None:
        self.relay.kill()
        self.client.close()

    def get_dependency(self, worker_ctx: Any) -> ServiceDatabase:
        return self.database
