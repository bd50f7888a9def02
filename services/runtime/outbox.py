"""The outbox relay: publishes events that units of work committed to the `outbox`
collection, in commit order, and marks them sent.

One outbox document holds every event of one unit of work (a consumed batch commits one
document, not one per event): pending documents stay few under load, so finding the next
ones stays cheap even on a server that reads every match of a query before its limit.

A crash between publishing and marking sends the event again on restart: consumers dedupe
by event id, so it is applied once. One instance of a service relays at a time (a lease in
the database), which keeps one agent's events in order when several replicas run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import eventlet
from eventlet.event import Event
from nameko.extensions import Extension
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from contracts.envelope import CloudEvent
from contracts.topics import TOPIC_OF_TYPE
from services.runtime.indexes import drop_indexes
from services.runtime.metrics import ServiceMetrics
from services.runtime.publisher import KafkaPublisher, OutgoingMessage, PublishError
from services.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

#: How often the backlog gauges are refreshed (two queries each time).
BACKLOG_REPORT_SECONDS = 1.0
OUTBOX = "outbox"
LEASES = "leases"
RELAY_LEASE = "outbox-relay"
#: Indexes of earlier releases: `event_id`, unique on the one-event-per-document layout's
#: top-level id (it would reject every document of this layout after the first), and
#: `event_ids`, unique on each event's id (see `ensure_outbox_indexes`).
RETIRED_INDEXES = ("event_id", "event_ids")


def outbox_record(events: list[CloudEvent], now: datetime) -> dict[str, Any]:
    """The outbox document for one unit of work's events, in the order they were queued;
    `_id` (an ObjectId) gives the commit order."""
    return {
        "events": [
            {
                "event_id": event.id,
                "type": event.type,
                "topic": TOPIC_OF_TYPE[event.type],
                "key": event.subject,
                "value": event.to_json_bytes(),
            }
            for event in events
        ],
        "count": len(events),
        "created_at": now,
        "sent_at": None,
    }


def events_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of an outbox document; a document of the earlier one-event-per-document
    layout (written before an upgrade, still pending) is its own single event."""
    events: list[dict[str, Any]] = doc.get("events", [doc])
    return events


def outbox_events(db: Database, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every event in the outbox (matching `query` on the documents), in commit order."""
    docs = db[OUTBOX].find(query or {}).sort("_id", 1)
    return [event for doc in docs for event in events_of(doc)]


def ensure_outbox_indexes(db: Database) -> None:
    drop_indexes(db[OUTBOX], RETIRED_INDEXES)
    # Pending documents in commit order; sent ones kept a week for inspection, then dropped.
    db[OUTBOX].create_index([("sent_at", 1), ("_id", 1)], name="pending_in_order")
    db[OUTBOX].create_index("sent_at", name="sent_ttl", expireAfterSeconds=7 * 24 * 3600)
    # No unique index on the events' ids: every event id is either new (`create`) or derived
    # one to one from the key of a document the same transaction inserts under a unique
    # index (ledger entry, badge award, credits milestone, period close), so the outbox
    # cannot hold one id twice; consumers dedupe by id besides. Such an index cost an entry
    # per event at the insert and again at the mark-sent rewrite: for a document of 1,400
    # events, 222 ms of the local server's CPU against 46 without it.


class Lease:
    """A named lease in the database: at most one holder until it expires unrenewed."""

    def __init__(self, db: Database, name: str, owner: str, seconds: float) -> None:
        self.db = db
        self.name = name
        self.owner = owner
        self.seconds = seconds
        self.held_until: datetime | None = None

    def acquire_or_renew(self) -> bool:
        now = datetime.now(UTC)
        if self.held_until and now < self.held_until - timedelta(seconds=self.seconds / 2):
            return True  # renewed recently enough: spare the database a write
        until = now + timedelta(seconds=self.seconds)
        try:
            self.db[LEASES].find_one_and_update(
                {"_id": self.name, "$or": [{"owner": self.owner}, {"expires_at": {"$lt": now}}]},
                {"$set": {"owner": self.owner, "expires_at": until}},
                upsert=True,
            )
        except DuplicateKeyError:  # held by someone else and not expired
            self.held_until = None
            return False
        self.held_until = until
        return True

    def release(self) -> None:
        if self.held_until is None:
            return
        with contextlib.suppress(PyMongoError):
            self.db[LEASES].delete_one({"_id": self.name, "owner": self.owner})
        self.held_until = None


class OutboxRelay(Extension):
    """Runs beside `Mongo` (a sub-extension of it): `Mongo.setup` hands over the database."""

    publisher = KafkaPublisher()
    metrics = ServiceMetrics()

    db: Database
    settings: RuntimeSettings

    def setup(self) -> None:
        self._wake = Event()
        self._running = False
        self._thread: Any = None
        #: What the last round left pending, in commit order, when it saw every pending
        #: document (None: it did not, or no round ran since the loop's last pass).
        self.left_pending: list[dict[str, Any]] | None = None

    def attach(self, db: Database, settings: RuntimeSettings) -> None:
        self.db = db
        self.settings = settings
        owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.lease = Lease(db, RELAY_LEASE, owner, settings.outbox_lease_seconds)

    def start(self) -> None:
        if not self.settings.outbox_relay_enabled:
            return  # a rebuild: what the handlers would publish was published already
        self._running = True
        self._thread = self.container.spawn_managed_thread(self._run)

    def wake(self) -> None:
        """Called after a unit of work commits: publish now rather than at the next poll."""
        if not self._wake.ready():
            self._wake.send(True)

    def stop(self) -> None:
        # Idempotent: `Mongo.stop` calls it before closing the client, nameko calls it again.
        self._running = False
        self.wake()
        if self._thread is not None:
            self._thread.wait()
            self._thread = None
            self.lease.release()

    def kill(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.kill()

    def _run(self) -> None:
        reported_at = 0.0
        while self._running:
            published = 0
            self.left_pending = None
            try:
                if self.lease.acquire_or_renew():
                    published = self.relay_once()
            except PublishError as error:
                self.metrics.families.publish_errors.inc()
                log.warning("outbox relay: broker unavailable (%s); retrying", error)
            except PyMongoError as error:
                log.warning("outbox relay: database unavailable (%s); retrying", error)
            # Also (and especially) while publishing fails: the backlog alerts need it.
            if time.monotonic() - reported_at >= BACKLOG_REPORT_SECONDS:
                reported_at = time.monotonic()
                with contextlib.suppress(PyMongoError):
                    self._report_backlog(self.left_pending)
            if published < self.settings.outbox_batch_size:
                self._wait(self.settings.outbox_poll_interval_seconds)

    def _wait(self, seconds: float) -> None:
        with eventlet.Timeout(seconds, False):
            self._wake.wait()
            # Woken by a commit: let the commits of concurrent handlers gather for a moment,
            # so one round trip publishes and marks many events instead of one each.
            eventlet.sleep(self.settings.outbox_gather_seconds)
        self._wake = Event()

    def relay_once(self) -> int:
        """Publishes the events of the oldest pending documents (about `outbox_batch_size`
        events); returns how many were published."""
        pending = []
        events = 0
        whole = True  # whether `pending` is every pending document
        # Closed on leaving the block, even when the loop stops early: the server keeps an
        # open cursor (and its place in the collection) until told or until it times out.
        with self.db[OUTBOX].find({"sent_at": None}).sort("_id", 1) as cursor:
            for doc in cursor:
                pending.append(doc)
                events += len(events_of(doc))
                if events >= self.settings.outbox_batch_size:
                    whole = False
                    break
        if not pending:
            self.left_pending = []
            return 0
        messages = [
            OutgoingMessage(e["topic"], e["key"], bytes(e["value"]))
            for doc in pending
            for e in events_of(doc)
        ]
        failure: PublishError | None = None
        try:
            acknowledged = self.publisher.send_all(messages)
        except PublishError as error:  # nothing acknowledged: raised once the backlog is known
            acknowledged, failure = [False] * len(messages), error
        outcomes = iter(acknowledged)
        # Stop at the first document not wholly acknowledged: marking later ones sent would
        # let them overtake it. Its acknowledged events go again: consumers dedupe by id.
        sent = []
        for doc in pending:
            if not all([next(outcomes) for _ in events_of(doc)]):
                break
            sent.append(doc)
        published = sum(len(events_of(doc)) for doc in sent)
        if sent:
            self.db[OUTBOX].update_many(
                {"_id": {"$in": [doc["_id"] for doc in sent]}},
                {"$set": {"sent_at": datetime.now(UTC)}},
            )
            for doc in sent:
                for e in events_of(doc):
                    self.metrics.families.events_published.labels(e["topic"], e["type"]).inc()
        if whole:
            self.left_pending = pending[len(sent) :]
        if failure is not None:
            raise failure
        if len(sent) < len(pending):
            raise PublishError(f"{len(messages) - published} events not acknowledged")
        return published

    def _report_backlog(self, pending: list[dict[str, Any]] | None = None) -> None:
        """`pending`: the documents still pending as this round's relay saw them all (None:
        it did not, and they are read). An idle relay thus reports with no query of its
        own: at a poll every half second, the report's query had been a third of them."""
        families = self.metrics.families
        if pending is None:
            pending = list(
                self.db[OUTBOX]
                .find({"sent_at": None}, {"count": 1, "created_at": 1})
                .sort("_id", 1)
            )
        families.outbox_backlog.set(sum(doc.get("count", 1) for doc in pending))
        age = 0.0
        if pending:
            age = (datetime.now(UTC) - pending[0]["created_at"]).total_seconds()
        families.outbox_oldest_age.set(max(age, 0.0))
