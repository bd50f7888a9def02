"""The MongoDB side of a service: its own database, units of work, idempotent handling.

`Mongo` is the nameko dependency. It gives each worker a `ServiceDatabase` that runs
functions inside a MongoDB transaction (`UnitOfWork`), where domain writes, outgoing events
(the outbox) and the handled-event record all commit together or not at all.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import mongoengine
from nameko.extensions import DependencyProvider
from pymongo import InsertOne, MongoClient, ReplaceOne
from pymongo.client_session import ClientSession
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import CollectionInvalid, DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from contracts.envelope import CloudEvent
from services.common.recent import RecentReads
from services.runtime.indexes import drop_indexes
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
E = TypeVar("E", bound=CloudEvent)

#: Anything a caller is told succeeded must survive a crash of the database server.
DURABLE = WriteConcern(w="majority", j=True)

PROCESSED_EVENTS = "processed_events"
#: Ids per `$in` query. One query for a whole batch is what MongoDB does best; the local
#: MongoDB-protocol server's cost of an `$in` grows with the square of the documents it
#: finds (500 found: about 300 ms; ten queries of 50: about 50 ms), and ten round trips
#: cost MongoDB little.
IDS_PER_QUERY = 50


def find_in(
    collection: Collection,
    field: str,
    values: Iterable[Any],
    per_query: int,
    query: dict[str, Any] | None = None,
    *,
    session: ClientSession | None = None,
    projection: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """The documents matching `query` whose `field` is one of `values`, read `per_query`
    values at a time (an `$in` of that many: see IDS_PER_QUERY for why not all at once).

    In a transaction this matters beyond the query itself: while one statement runs, the
    local server starts no statement of any other transaction. An `$in` of 300 agents on
    the badges' facts (1,800 found) took 575 ms in one query and 122 ms in queries of 25,
    and every consumer of the stack waited that long."""
    wanted = sorted(set(values))
    for start in range(0, len(wanted), per_query):
        chunk = wanted[start : start + per_query]
        yield from collection.find(
            {**(query or {}), field: {"$in": chunk}}, projection, session=session
        )


def find_by_ids(
    collection: Collection,
    ids: Iterable[Any],
    session: ClientSession | None = None,
    projection: dict[str, Any] | None = None,
) -> dict[Any, dict[str, Any]]:
    """The documents of `ids` that exist, by `_id`, read `IDS_PER_QUERY` ids at a time."""
    found = find_in(collection, "_id", ids, IDS_PER_QUERY, session=session, projection=projection)
    return {doc["_id"]: doc for doc in found}


#: Writes per statement of a large bulk write. A transaction's statement holds the local
#: MongoDB-protocol server's transaction registry while it runs: no statement of another
#: transaction starts meanwhile. 4,500 board entries in one statement took about 2 s, and
#: every other consumer's transaction waited that long; slices of 500 keep the wait short
#: at the cost of a few more round trips (MongoDB itself runs them side by side).
WRITES_PER_STATEMENT = 500


def bulk_write_in_slices(
    collection: Collection,
    requests: Sequence[Any],
    session: ClientSession | None = None,
    ordered: bool = False,
) -> None:
    """`bulk_write` of `requests` in statements of at most `WRITES_PER_STATEMENT`."""
    for start in range(0, len(requests), WRITES_PER_STATEMENT):
        collection.bulk_write(
            requests[start : start + WRITES_PER_STATEMENT], ordered=ordered, session=session
        )


def save_whole(
    collection: Collection,
    docs: Iterable[dict[str, Any]],
    stored: Container[Any],
    session: ClientSession | None = None,
) -> None:
    """Writes documents computed in memory whole, in one bulk write: each inserted when the
    transaction's read found none (`stored`: the ids it found), else replaced. On the local
    database an insert costs about a quarter of an upsert (0.07 against 0.25 ms of its CPU
    per document) and a replacement three quarters of a `$set` of the same fields (0.16
    against 0.21). A document another transaction created since this one's snapshot makes
    the insert conflict (a transient write conflict), and the transaction runs again.

    The inserts go first and the replacements after them: an ordered bulk write is sent as
    one command per run of writes of one kind, so documents interleaved as they come made
    a command of nearly every one (a batch of new and known agents, in the end-to-end
    bench, sent about a thousand commands of one write each)."""
    docs = list(docs)
    writes: list[InsertOne | ReplaceOne] = [InsertOne(d) for d in docs if d["_id"] not in stored]
    writes += [ReplaceOne({"_id": d["_id"]}, d) for d in docs if d["_id"] in stored]
    if writes:
        collection.bulk_write(writes, session=session)


#: A batch whose handled-ids insert lost a race with another instance is re-read this often.
BATCH_RACE_ATTEMPTS = 5


class _HandledConcurrently(Exception):
    """Another instance recorded one of the batch's ids after this transaction read them."""


@dataclass(frozen=True)
class Handled(Generic[T]):
    """What `handle_batch` did: the work's result, and which events were new to it."""

    result: T | None
    fresh_ids: frozenset[str]

    def is_fresh(self, event_id: str) -> bool:
        return event_id in self.fresh_ids


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

    def mark_batch_handled(self, consumer: str, events: Sequence[E]) -> list[E]:
        """Records the batch's events as handled; returns those not handled before, in
        order (a batch may also repeat an event: it counts once). Two statements for any
        batch size: one read of the ids known already, one insert of the rest."""
        keys = {event.id: f"{consumer}:{event.id}" for event in events}
        known = find_by_ids(
            self.db[PROCESSED_EVENTS], keys.values(), self.session, projection={"_id": 1}
        )
        fresh: dict[str, E] = {}
        for event in events:
            if keys[event.id] not in known:
                fresh.setdefault(event.id, event)
        if fresh:
            now = datetime.now(UTC)
            try:
                self.db[PROCESSED_EVENTS].insert_many(
                    [{"_id": keys[event_id], "at": now} for event_id in fresh],
                    ordered=False,
                    session=self.session,
                )
            except DuplicateKeyError:
                raise _HandledConcurrently() from None
        return list(fresh.values())

    def _write_outbox(self) -> None:
        if not self.pending_events:
            return
        record = outbox_record(self.pending_events, datetime.now(UTC))
        self.db[OUTBOX].insert_one(record, session=self.session)


class ServiceDatabase:
    """What a worker gets: the service's database and a way to run a unit of work."""

    def __init__(
        self,
        client: MongoClient,
        db: Database,
        source: str,
        on_events_committed: Callable[[], None],
        recent_seconds: float = 0.0,
    ) -> None:
        self.client = client
        self.db = db
        self.source = source
        self._on_events_committed = on_events_committed
        self._recent_seconds = recent_seconds
        self._recent: dict[str, RecentReads[Any]] = {}

    def recent(self, read: str) -> RecentReads[Any]:
        """The recent answers of the read named `read` (one cache per name), kept for the
        runtime's `reference_cache_seconds`: for reference data (the catalogue) read outside
        a transaction, never for what a caller may have just changed."""
        if read not in self._recent:
            self._recent[read] = RecentReads(self._recent_seconds)
        return self._recent[read]

    def collection(self, name: str) -> Collection:
        return self.db[name]

    def transaction(self, work: Callable[[UnitOfWork], T]) -> T:
        """Runs `work` in a transaction, retried on transient errors (write conflicts).

        `work` may run more than once, so it must do nothing but database calls through the
        unit of work: no Kafka sends, no HTTP calls.
        """
        attempts = 0
        started = time.monotonic()
        queued = False  # whether the attempt that committed wrote events to the outbox
        with self.client.start_session() as session:

            def attempt(session: ClientSession) -> T:
                nonlocal attempts, queued
                attempts += 1
                uow = UnitOfWork(self.db, session, self.source)
                result = work(uow)
                uow._write_outbox()
                queued = bool(uow.pending_events)
                return result

            result = session.with_transaction(
                attempt, read_concern=ReadConcern("snapshot"), write_concern=DURABLE
            )
        if queued:
            # Only then has the relay something new to publish: a commit without events
            # would cost it a query of the outbox for nothing.
            self._on_events_committed()
        if attempts > 1:
            # Each retry ran the whole unit of work again: worth knowing when it happens.
            log.info(
                "a transaction committed after %d attempts (write conflicts), in %.1fs",
                attempts,
                time.monotonic() - started,
            )
        return result

    def handle_batch(
        self, consumer: str, events: Sequence[E], work: Callable[[UnitOfWork, list[E]], T]
    ) -> Handled[T]:
        """Applies `work` to the events of the batch this consumer has not handled before,
        and records them as handled, in one transaction (`work` is not called when every
        event is a redelivery). The whole batch commits or none of it does."""

        def guarded(uow: UnitOfWork) -> Handled[T]:
            fresh = uow.mark_batch_handled(consumer, events)
            result = work(uow, fresh) if fresh else None
            return Handled(result, frozenset(event.id for event in fresh))

        for attempt in range(1, BATCH_RACE_ATTEMPTS + 1):
            try:
                return self.transaction(guarded)
            except _HandledConcurrently:
                # Another instance handled some of these meanwhile (a rebalance): read again.
                if attempt == BATCH_RACE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def apply_batch(
        self, events: Sequence[E], work: Callable[[UnitOfWork, list[E]], Iterable[str]]
    ) -> Handled[None]:
        """Applies a batch in one transaction, for `work` that is idempotent by itself: it
        keeps its own record of the events it applied (a log keyed by event id), skips those
        and returns the ids it applied now. The handled-id record of `handle_batch` would
        repeat that record: two statements and a write per event less."""
        distinct = list({event.id: event for event in events}.values())  # first copy counts
        applied = self.transaction(lambda uow: frozenset(work(uow, distinct)))
        return Handled(None, applied)

    def ping(self) -> bool:
        try:
            self.client.admin.command("ping")
            return True
        except PyMongoError:
            return False


class Mongo(DependencyProvider):
    """The service's own database (ARCHITECTURE §1: no service reads another's).

    `documents` are the service's mongoengine classes: their indexes are created on start.
    `retired_indexes`: by collection, the names of indexes an earlier release made that
    this one does without, dropped on start (runtime/indexes.py).
    """

    relay = OutboxRelay()

    def __init__(
        self,
        documents: Iterable[type[mongoengine.Document]] = (),
        upgrade: Callable[[ServiceDatabase], Any] | None = None,
        retired_indexes: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.documents = tuple(documents)
        self.retired_indexes = dict(retired_indexes or {})
        # Brings data stored by an earlier release to this release's layout; idempotent,
        # run once the schema is prepared and before any consumer or route can start.
        self.upgrade = upgrade

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
            self.client,
            self.db,
            f"skillquest/{service}",
            on_events_committed=self.relay.wake,
            recent_seconds=self.settings.reference_cache_seconds,
        )
        # In setup, not start: nameko finishes every extension's setup before it starts any,
        # so the consumer and the relay never run a transaction on a half-made schema.
        self.prepare_schema()
        if self.upgrade is not None:
            self.upgrade(self.database)

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
        for name, indexes in self.retired_indexes.items():
            drop_indexes(self.db[name], indexes)
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
