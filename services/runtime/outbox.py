"""The outbox relay: publishes events that units of work committed to the `outbox`
collection, in commit order, and marks them sent.

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
from services.runtime.metrics import ServiceMetrics
from services.runtime.publisher import KafkaPublisher, OutgoingMessage, PublishError
from services.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

#: How often the backlog gauges are refreshed (two queries each time).
BACKLOG_REPORT_SECONDS = 1.0
OUTBOX = "outbox"
LEASES = "leases"
RELAY_LEASE = "outbox-relay"


def outbox_record(event: CloudEvent, now: datetime) -> dict[str, Any]:
    """The outbox document for an event; `_id` (an ObjectId) gives the commit order."""
    return {
        "event_id": event.id,
        "type": event.type,
        "topic": TOPIC_OF_TYPE[event.type],
        "key": event.subject,
        "value": event.to_json_bytes(),
        "created_at": now,
        "sent_at": None,
    }


def ensure_outbox_indexes(db: Database) -> None:
    # Pending events in commit order; sent ones kept a week for inspection, then dropped.
    db[OUTBOX].create_index([("sent_at", 1), ("_id", 1)], name="pending_in_order")
    db[OUTBOX].create_index("sent_at", name="sent_ttl", expireAfterSeconds=7 * 24 * 3600)
    db[OUTBOX].create_index("event_id", name="event_id", unique=True)


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
                    self._report_backlog()
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
        """Publishes one batch of pending events; returns how many were published."""
        pending = list(
            self.db[OUTBOX]
            .find({"sent_at": None}, {"topic": 1, "key": 1, "value": 1, "type": 1})
            .sort("_id", 1)
            .limit(self.settings.outbox_batch_size)
        )
        if not pending:
            return 0
        messages = [OutgoingMessage(r["topic"], r["key"], bytes(r["value"])) for r in pending]
        outcomes = self.publisher.send_all(messages)
        # Stop at the first failure: marking later ones sent would let them overtake it.
        sent = []
        for record, ok in zip(pending, outcomes, strict=True):
            if not ok:
                break
            sent.append(record)
        if sent:
            self.db[OUTBOX].update_many(
                {"_id": {"$in": [r["_id"] for r in sent]}},
                {"$set": {"sent_at": datetime.now(UTC)}},
            )
            for record in sent:
                self.metrics.families.events_published.labels(record["topic"], record["type"]).inc()
        if len(sent) < len(pending):
            raise PublishError(f"{len(pending) - len(sent)} events not acknowledged")
        return len(sent)

    def _report_backlog(self) -> None:
        families = self.metrics.families
        families.outbox_backlog.set(self.db[OUTBOX].count_documents({"sent_at": None}))
        oldest = self.db[OUTBOX].find_one({"sent_at": None}, {"created_at": 1}, sort=[("_id", 1)])
        age = 0.0
        if oldest:
            age = (datetime.now(UTC) - oldest["created_at"]).total_seconds()
        families.outbox_oldest_age.set(max(age, 0.0))
