"""The issuer's Ed25519 signing key, as a nameko dependency.

From configuration (`signing_key_pem` or `signing_key_path`) when given. Otherwise one is
generated the first time it is needed and stored in the service's database, so credentials
issued before a restart (or by another replica) stay verifiable with the published key.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from eventlet.semaphore import Semaphore
from nameko.extensions import DependencyProvider
from pymongo.errors import PyMongoError

from services.badges import store
from services.badges.credentials import SigningKey, generate_key, key_from_pem
from services.badges.settings import BadgesSettings, badges_settings
from services.runtime.mongo import Mongo, ServiceDatabase

log = logging.getLogger(__name__)

STORED_KEY_NAME = "issuer"


class IssuerKeys(DependencyProvider):
    def setup(self) -> None:
        self._lock = Semaphore()
        # A configured key that cannot be read fails the start, not the first request.
        self._key: SigningKey | None = configured_key(badges_settings(self.container.config))

    def start(self) -> None:
        # Make (or load) the key at start, so the first credential request doesn't; if the
        # database is not reachable yet, the first request that needs the key does it.
        if self._key is not None:
            return
        database = next(
            (d.database for d in self.container.dependencies if isinstance(d, Mongo)), None
        )
        if database is None:
            return
        try:
            self.key(database)
        except PyMongoError as error:
            log.warning("signing key not loaded at start (%s); will retry on first use", error)

    def get_dependency(self, worker_ctx: Any) -> IssuerKeys:
        return self

    def key(self, db: ServiceDatabase) -> SigningKey:
        if self._key is None:
            with self._lock:
                if self._key is None:
                    self._key = stored_key(db)
        return self._key


def configured_key(settings: BadgesSettings) -> SigningKey | None:
    try:
        if settings.signing_key_pem:
            return key_from_pem(settings.signing_key_pem)
        if settings.signing_key_path:
            return key_from_pem(Path(settings.signing_key_path).read_bytes())
    except (OSError, ValueError) as error:
        raise SystemExit(f"invalid BADGES signing key: {error}") from None
    return None


def stored_key(db: ServiceDatabase) -> SigningKey:
    candidate = generate_key()
    pem = store.load_or_store_key(
        db.collection(store.KEYS), STORED_KEY_NAME, candidate.private_pem()
    )
    if pem == candidate.private_pem():
        log.info("generated a credential signing key and stored it in the database")
    return key_from_pem(pem)
