"""The service's Kafka producer: idempotent, acks=all, shared by the outbox relay and the
dead-letter path of the consumer.

Nothing in a handler sends to Kafka directly: events go through the outbox
(services/runtime/outbox.py) so that a database change and its event are never split.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError
from nameko.extensions import SharedExtension

from services.runtime.settings import RuntimeSettings, settings_from_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingMessage:
    topic: str  # the logical topic name; the configured prefix is added on send
    key: str
    value: bytes


class PublishError(Exception):
    """The broker did not acknowledge a message in time: the caller keeps it and retries."""


class KafkaPublisher(SharedExtension):
    settings: RuntimeSettings

    def setup(self) -> None:
        self.settings = settings_from_config(self.container.config)
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()
        self._admin: KafkaAdminClient | None = None
        self._probed_at = float("-inf")
        self._reachable = False

    def _get_producer(self) -> KafkaProducer:
        # Created on first use, not at start: a service must come up (and report not
        # ready) while the broker is down, and connect once it is back.
        with self._lock:
            if self._producer is None:
                s = self.settings
                self._producer = KafkaProducer(
                    bootstrap_servers=s.kafka_bootstrap_servers.split(","),
                    client_id=f"skillquest-{self.container.service_name}",
                    acks="all",
                    enable_idempotence=True,
                    max_in_flight_requests_per_connection=5,
                    linger_ms=s.producer_linger_ms,
                    batch_size=128 * 1024,
                    delivery_timeout_ms=s.producer_delivery_timeout_ms,
                    # kafka-python requires delivery >= linger + request timeout.
                    request_timeout_ms=min(
                        s.producer_delivery_timeout_ms - s.producer_linger_ms, 15_000
                    ),
                    max_block_ms=s.producer_delivery_timeout_ms,
                    # A broker away when the producer is made: give up as on a send.
                    bootstrap_timeout_ms=s.producer_delivery_timeout_ms,
                    metrics_enabled=False,
                )
            return self._producer

    def send_all(self, messages: Sequence[OutgoingMessage]) -> list[bool]:
        """Sends in order and waits for every acknowledgement; True where acknowledged."""
        try:
            producer = self._get_producer()
            futures = [
                producer.send(self.settings.topic(m.topic), key=m.key.encode(), value=m.value)
                for m in messages
            ]
            producer.flush(timeout=self.settings.producer_delivery_timeout_ms / 1000)
        except KafkaError as error:
            raise PublishError(str(error)) from error
        outcomes = []
        for future in futures:
            try:
                future.get(timeout=0)
                outcomes.append(True)
            except KafkaError as error:
                log.warning("publish failed: %s", error)
                outcomes.append(False)
        return outcomes

    def send(self, message: OutgoingMessage) -> None:
        if not all(self.send_all([message])):
            raise PublishError(f"not acknowledged: {message.topic}")

    def connected(self) -> bool:
        """A real round trip to the broker (metadata), cached for a second or two."""
        now = time.monotonic()
        if now - self._probed_at > 2.0:
            self._probed_at = now
            self._reachable = self._probe()
        return self._reachable

    def _probe(self) -> bool:
        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(
                    bootstrap_servers=self.settings.kafka_bootstrap_servers.split(","),
                    client_id=f"skillquest-{self.container.service_name}-probe",
                    request_timeout_ms=3_000,
                )
            self._admin.list_topics()
            return True
        except Exception:  # noqa: BLE001 - any failure means "not reachable now"
            self._close_admin()
            return False

    def _close_admin(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None

    def stop(self) -> None:
        self._close(timeout=5)

    def kill(self) -> None:
        self._close(timeout=0)

    def _close(self, timeout: float) -> None:
        self._close_admin()
        with self._lock:
            if self._producer is not None:
                try:
                    self._producer.close(timeout=timeout)
                except Exception:  # noqa: BLE001 - closing must not block shutdown
                    log.exception("closing the producer failed")
                self._producer = None
