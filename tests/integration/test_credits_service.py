"""The credits service running on the real broker and database: events in, the credit
view, admin grants and revocations, the team view, and expiry by the timer across two
instances (ARCHITECTURE §4 "Learning credits", §5)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import requests

from contracts.events import CreditsExpired, CreditsRequirementMet
from contracts.topics import LEARNING_CREDITS
from services.credits.service import CreditsService
from tests.integration.credits_support import completed, published, registered
from tests.support.harness import (
    EventBus,
    base_url,
    get_json,
    running,
    service_config,
    unique_prefix,
    wait_until,
)

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
YEAR = timedelta(days=365)


@pytest.fixture(scope="module")
def prefix() -> str:
    return unique_prefix()


@pytest.fixture(scope="module")
def bus(broker, prefix):
    bus = EventBus(broker.bootstrap, prefix)
    yield bus
    bus.close()


@pytest.fixture(scope="module")
def config(broker, database, prefix):
    return service_config(broker, database, prefix, CREDITS={"expiry_scan_interval_seconds": 0.2})


@pytest.fixture(scope="module")
def service(config):
    with running(CreditsService, config) as container:
        yield container


@pytest.fixture
def url(service, config) -> str:
    return base_url(config)


def new_agent() -> str:
    return f"agent-{uuid.uuid4().hex[:8]}"


def view_of(url: str, agent: str, query: str = "") -> dict | None:
    """The agent's credit view, or None while the service knows nothing of them yet."""
    response = requests.get(f"{url}/v1/agents/{agent}/credits{query}", timeout=5)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.json()


def credit_events(bus: EventBus, agent: str, event_type: str) -> list[dict]:
    records = [json.loads(r.value) for r in bus.read_all(LEARNING_CREDITS)]
    return [r for r in records if r["subject"] == agent and r["type"] == event_type]


def test_completions_in_any_order_fill_the_view_and_meet_the_requirement_once(url, bus):
    agent, early = new_agent(), new_agent()
    now = datetime.now(UTC)
    tag = agent[-8:]
    for event in [
        published(f"tech-{tag}", now, "technology", 2),
        published(f"ps-{tag}", now, "problem_solving", 3),
        published(f"next-{tag}", now, "communication", 6, tier="advanced"),
        published(f"comm-{tag}", now, "communication", 1),
    ]:
        bus.publish(event)
    c1 = completed(agent, f"comm-{tag}", now - 3 * DAY, "communication", 4)
    c2 = completed(agent, f"done-{tag}", now - 2 * DAY, "technology", 4)
    c3 = completed(agent, f"done2-{tag}", now - DAY, "problem_solving", 4)
    # The completion that meets the requirement first, the registration last, and c1 twice.
    for event in [c3, c1, c1, c2, registered(agent, now - 30 * DAY)]:
        bus.publish(event)
    # Another agent whose only completion comes before anything else is known about them.
    bus.publish(completed(early, "c-x", now - DAY, "technology", 1.5, team="team-9"))

    def ours_recommended(view: dict) -> list[str]:
        return [c["course_id"] for c in view["recommended_courses"] if c["course_id"].endswith(tag)]

    # The catalogue behind recommendations is read at most once a second (the API's
    # eventual consistency): poll for it, as clients are told to.
    def deposited_and_recommended() -> dict | None:
        view = view_of(url, agent)
        return view if view and view["total"] == 12 and len(ours_recommended(view)) >= 3 else None

    view = wait_until(deposited_and_recommended, message="three deposits and the catalogue")
    assert view["tier"] == "foundation"
    assert view["by_dimension"] == {"communication": 4, "technology": 4, "problem_solving": 4}
    assert view["next_tier"]["tier"] == "advanced"
    assert view["next_tier"]["met"] is True
    assert view["next_tier"]["missing"]["total"] == 0
    assert view["expiring_soon"] == []
    # Nothing is missing: by hours, then id; never a completed course.
    assert ours_recommended(view)[:3] == [f"next-{tag}", f"ps-{tag}", f"tech-{tag}"]

    met = wait_until(
        lambda: credit_events(bus, agent, CreditsRequirementMet.TYPE), message="requirement met"
    )
    assert len(met) == 1
    assert met[0]["data"]["target_tier"] == "advanced"
    assert met[0]["time"].startswith(c3.time.strftime("%Y-%m-%dT%H:%M:%S"))

    early_view = wait_until(lambda: view_of(url, early), message="early agent known")
    assert early_view["total"] == 1.5 and early_view["team_id"] == "team-9"

    lots = get_json(f"{url}/v1/agents/{agent}/credits/lots")["lots"]
    assert len(lots) == 3 and {lot["source"] for lot in lots} == {"course"}
    # c1 was delivered twice and counted once (this test runs first in the module).
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert 'skillquest_credits_deposited_total{dimension="communication"} 4.0' in metrics


def test_grants_revocations_history_and_the_team_view_over_http(url, bus):
    agent, teammate = new_agent(), new_agent()
    team = f"team-{agent[-8:]}"
    now = datetime.now(UTC)
    bus.publish(registered(agent, now - 30 * DAY, team=team))
    bus.publish(registered(teammate, now - 30 * DAY, team=team))
    bus.publish(completed(teammate, "c-old", now - YEAR + 10 * DAY, "technology", 2, team=team))
    wait_until(lambda: view_of(url, agent), message="agent registered")
    # The teammate's events travel in another partition: wait for them too.
    wait_until(
        lambda: (v := view_of(url, teammate)) and v["total"] == 2, message="teammate's completion"
    )
    headers = {"X-Caller-Sub": "admin-7", "X-Caller-Role": "admin"}
    grant = {
        "credit_hours": 12,
        "dimension": "communication",
        "reason": "External coaching certificate",
        "evidence_url": "https://certs.example.com/42",
        "tags": ["coaching"],
        "valid_days": 20,
    }
    grants = f"{url}/v1/agents/{agent}/credits/grants"

    bad = requests.post(grants, json={**grant, "credit_hours": 0.3, "colour": 1}, timeout=5)
    assert bad.status_code == 400
    assert {d["field"] for d in bad.json()["error"]["details"]} == {"credit_hours", "colour"}
    missing = requests.post(f"{url}/v1/agents/nobody-x/credits/grants", json=grant, timeout=5)
    assert missing.status_code == 404

    first = requests.post(
        grants, json=grant, headers={**headers, "Idempotency-Key": "k1"}, timeout=5
    )
    assert first.status_code == 201
    lot = first.json()
    assert (lot["source"], lot["granted_by"], lot["status"]) == ("grant", "admin-7", "valid")
    retry = requests.post(
        grants, json=grant, headers={**headers, "Idempotency-Key": "k1"}, timeout=5
    )
    assert retry.status_code == 200 and retry.json()["lot_id"] == lot["lot_id"]

    view = get_json(f"{url}/v1/agents/{agent}/credits")
    assert view["total"] == 12 and view["by_tag"] == {"coaching": 12}
    assert [x["lot_id"] for x in view["expiring_soon"]] == [lot["lot_id"]]  # 20 days
    assert view["next_tier"]["met"] is False  # 12 in one dimension only
    assert view["next_tier"]["missing"]["by_dimension"] == {
        "communication": 0,
        "technology": 3,
        "problem_solving": 3,
    }

    team_view = get_json(f"{url}/v1/teams/{team}/credits")
    assert [a["agent_id"] for a in team_view["agents"]] == sorted([agent, teammate])
    mate = next(a for a in team_view["agents"] if a["agent_id"] == teammate)
    assert mate["expiring_soon_hours"] == 2 and mate["next_tier"]["met"] is False
    assert team_view["ready"] == 0
    assert requests.get(f"{url}/v1/teams/no-such-team/credits", timeout=5).status_code == 404

    revocation = f"{url}/v1/agents/{agent}/credits/lots/{lot['lot_id']}/revocation"
    revoked = requests.post(
        revocation, json={"reason": "forged certificate"}, headers=headers, timeout=5
    )
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    again = requests.post(
        revocation, json={"reason": "forged certificate"}, headers=headers, timeout=5
    )
    assert again.status_code == 409 and "already revoked" in again.json()["error"]["message"]
    assert get_json(f"{url}/v1/agents/{agent}/credits")["total"] == 0
    before = quote(lot["deposited_at"])
    assert get_json(f"{url}/v1/agents/{agent}/credits?as_of={before}")["total"] == 12

    history = get_json(f"{url}/v1/agents/{agent}/credits/history?limit=1")
    assert [h["kind"] for h in history["history"]] == ["revocation"]
    assert history["history"][0]["actor"] == "admin-7"
    rest = get_json(f"{url}/v1/agents/{agent}/credits/history?cursor={history['next_cursor']}")
    assert [h["kind"] for h in rest["history"]] == ["grant"] and rest["next_cursor"] is None

    bad_query = requests.get(f"{url}/v1/agents/{agent}/credits?as_of=yesterday", timeout=5)
    assert bad_query.status_code == 400
    assert bad_query.json()["error"]["details"][0]["field"] == "as_of"
    bad_cursor = requests.get(f"{url}/v1/agents/{agent}/credits/history?cursor=zz", timeout=5)
    assert bad_cursor.status_code == 400
    assert requests.get(f"{url}/v1/agents/nobody-y/credits", timeout=5).status_code == 404
    requirements = get_json(f"{url}/v1/credits/requirements")["requirements"]
    assert [(r["tier"], r["total"]) for r in requirements] == [("advanced", 12), ("leadership", 24)]


def test_lots_expire_once_across_two_instances_and_below_a_met_requirement(
    url, bus, config, service
):
    agent = new_agent()
    now = datetime.now(UTC)
    # Completed a year ago, the lots expire within seconds of arriving.
    start = now - YEAR + timedelta(seconds=1)
    for i, dimension in enumerate(("communication", "technology", "problem_solving")):
        bus.publish(
            completed(agent, f"c{i}", start + i * timedelta(milliseconds=200), dimension, 4)
        )

    expired = wait_until(
        lambda: len(e := credit_events(bus, agent, CreditsExpired.TYPE)) == 3 and e,
        message="three expiries",
    )
    assert {e["data"]["credit_hours"] for e in expired} == {4}
    view = get_json(f"{url}/v1/agents/{agent}/credits")
    assert view["total"] == 0
    assert view["next_tier"]["met"] is False and view["next_tier"]["first_met_at"] is not None
    assert len(credit_events(bus, agent, CreditsRequirementMet.TYPE)) == 1
    lots = get_json(f"{url}/v1/agents/{agent}/credits/lots")["lots"]
    assert {lot["status"] for lot in lots} == {"expired"}
    expiry = lots[0]["expires_at"]
    just_before = datetime.fromisoformat(expiry) - timedelta(milliseconds=1)
    as_of = quote(just_before.isoformat())
    assert get_json(f"{url}/v1/agents/{agent}/credits/lots?as_of={as_of}&status=valid")["lots"]

    # A second instance starts (its eager scan must find nothing to redo) and both scan
    # while another lot comes due.
    second = dict(config, WEB_SERVER_ADDRESS=f"127.0.0.1:{_free_port()}")
    with running(CreditsService, second):
        bus.publish(completed(agent, "c-late", now - YEAR + timedelta(seconds=3), "technology", 1))
        wait_until(
            lambda: len(credit_events(bus, agent, CreditsExpired.TYPE)) >= 4,
            timeout=40,
            message="the fourth expiry",
        )
    expired = credit_events(bus, agent, CreditsExpired.TYPE)
    assert len(expired) == 4
    assert len({e["data"]["lot_id"] for e in expired}) == 4
    kinds = [h["kind"] for h in get_json(f"{url}/v1/agents/{agent}/credits/history")["history"]]
    assert sorted(kinds) == ["deposit"] * 4 + ["expiry"] * 4


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
