"""Dead-letter tooling through the admin API (and the gateway's route to it): a message whose
handler kept failing is listed and inspected, and once the cause is fixed a replay applies
it exactly once, however often it is replayed."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from pymongo import MongoClient

from contracts.events import TicketResolved
from contracts.topics import ALL_TOPICS
from deploy.local.topics import ensure_topics
from services.gateway.auth import mint
from services.gateway.service import GatewayService
from services.points.service import PointsService
from tests.faults.stack import Producer, database_name, group_lag
from tests.support.events import snapshot, ticket_resolved
from tests.support.harness import base_url, running, service_config, unique_prefix, wait_until

pytestmark = pytest.mark.integration

SECRET = secrets.token_urlsafe(48)
POISON = "agent-poison"


def _ticket(agent_id: str, ticket_id: str) -> TicketResolved:
    agent = snapshot(agent_id, team_id="t-1")
    return ticket_resolved(agent, datetime.now(UTC) - timedelta(minutes=1), ticket_id)


def _token(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(SECRET, sub='ops', role=role, ttl_seconds=600)}"}


def test_a_replayed_dead_letter_that_now_succeeds_is_applied_once(broker: Any, database: Any):
    prefix = unique_prefix()
    ensure_topics(broker.bootstrap, [prefix + topic for topic in ALL_TOPICS])
    client: MongoClient = MongoClient(database.uri, tz_aware=True)
    db = client[database_name(prefix, "points")]
    # The fault: the ledger refuses this agent's entries (as a bad deploy or a full disk
    # would refuse them), so its award fails every attempt and is dead-lettered.
    db.create_collection("ledger")
    refuse = {"$jsonSchema": {"properties": {"agent_id": {"not": {"enum": [POISON]}}}}}
    db.command("collMod", "ledger", validator=refuse, validationAction="error")

    config = service_config(broker, database, prefix)
    producer = Producer(broker.bootstrap, prefix)
    with running(PointsService, config):
        url = base_url(config)
        gateway_config = service_config(
            broker,
            database,
            prefix,
            JWT_SECRET=SECRET,
            SERVICE_URLS={**config["SERVICE_URLS"], "points": url},
        )
        with running(GatewayService, gateway_config):
            gateway = base_url(gateway_config)
            poisoned = _ticket(POISON, "tk-poison")
            producer.publish([_ticket("agent-fine", "tk-fine"), poisoned])

            def letters() -> list[dict[str, Any]]:
                reply = requests.get(f"{url}/v1/admin/dead-letters", timeout=10)
                reply.raise_for_status()
                return reply.json()["dead_letters"]

            [letter] = wait_until(letters, 60, "the dead letter")
            assert letter["reason"] == "handler_failed"
            assert letter["event_id"] == poisoned.id
            assert letter["value"]["id"] == poisoned.id
            # The other agent's award flows (its partition may be handled after this one).
            wait_until(
                lambda: db.ledger.count_documents({"agent_id": "agent-fine"}) == 1,
                30,
                "the other award",
            )
            assert db.ledger.count_documents({"agent_id": POISON}) == 0

            # The gateway: admins reach each service's dead letters by name; agents do not.
            listed = requests.get(
                f"{gateway}/v1/admin/points/dead-letters", headers=_token("admin"), timeout=10
            )
            assert listed.status_code == 200, listed.text
            assert [d["position"] for d in listed.json()["dead_letters"]] == [letter["position"]]
            one = requests.get(
                f"{gateway}/v1/admin/points/dead-letters/{letter['position']}",
                headers=_token("admin"),
                timeout=10,
            )
            assert one.status_code == 200 and one.json()["event_id"] == poisoned.id
            refused = requests.get(
                f"{gateway}/v1/admin/points/dead-letters", headers=_token("agent"), timeout=10
            )
            assert refused.status_code == 403
            wrong = requests.get(f"{url}/v1/admin/badges/dead-letters", timeout=10)
            assert wrong.status_code == 404

            # The cause is fixed; the replay (through the gateway) applies it once.
            db.command("collMod", "ledger", validator={})
            replayed = requests.post(
                f"{gateway}/v1/admin/points/dead-letters/replay",
                json={"positions": [letter["position"], "9:999"]},
                headers=_token("admin"),
                timeout=30,
            )
            assert replayed.status_code == 200, replayed.text
            assert replayed.json() == {
                "service": "points",
                "replayed": [letter["position"]],
                "missing": ["9:999"],
            }
            wait_until(lambda: db.ledger.count_documents({"agent_id": POISON}) == 1, 30)

            # Replaying again (all of them, straight to the service) changes nothing.
            again = requests.post(f"{url}/v1/admin/dead-letters/replay", timeout=30)
            assert again.json()["replayed"] == [letter["position"]]
            wait_until(lambda: group_lag(broker.bootstrap, prefix)["points"] == 0, 30)
            assert db.ledger.count_documents({"agent_id": POISON}) == 1
            balance = db.accounts.find_one({"_id": POISON})["balance"]
            assert balance == db.ledger.find_one({"agent_id": POISON})["delta"] > 0
    producer.close()
    client.close()
