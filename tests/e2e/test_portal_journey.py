"""The whole system, as the portal sees it: every service running on the real broker and
database, driven only through the gateway with signed tokens.

One agent's journey (roster, catalogue, enrolment, lesson, perfect first-attempt quiz,
tickets) must show up as points, ranks, credits, badges and the profile, with roles
enforced on the way.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from services.badges.service import BadgesService
from services.credits.service import CreditsService
from services.gateway.auth import mint
from services.gateway.service import GatewayService
from services.leaderboards.service import LeaderboardsService
from services.points.service import PointsService
from services.progress.service import ProgressService
from tests.support.harness import base_url, running, service_config, unique_prefix, wait_until

pytestmark = pytest.mark.integration

BACKENDS = {
    "progress": ProgressService,
    "points": PointsService,
    "leaderboards": LeaderboardsService,
    "credits": CreditsService,
    "badges": BadgesService,
}
SECRET = secrets.token_urlsafe(48)
TEAM = "team-e2e"


class Portal:
    """The learning portal: HTTP calls to the gateway with a caller's token."""

    def __init__(self, url: str, backends: dict[str, str]) -> None:
        self.url = url
        self.backends = backends  # service name -> base URL (operations, not the portal)

    def call(self, method: str, path: str, sub: str, role: str, body: Any = None, **claims):
        token = mint(SECRET, sub=sub, role=role, ttl_seconds=600, **claims)
        return requests.request(
            method,
            self.url + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=15,
        )

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = self.call(method, path, "ops-admin", "admin", body)
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        return response.json()


@pytest.fixture(scope="module")
def portal(broker, database):
    prefix = unique_prefix()
    with ExitStack() as stack:
        urls = {}
        for name, service_cls in BACKENDS.items():
            config = service_config(broker, database, prefix)
            stack.enter_context(running(service_cls, config))
            urls[name] = base_url(config)
        gateway = service_config(broker, database, prefix, JWT_SECRET=SECRET, SERVICE_URLS=urls)
        stack.enter_context(running(GatewayService, gateway))
        url = base_url(gateway)
        wait_until(lambda: requests.get(f"{url}/readyz", timeout=5).ok, message="gateway ready")
        yield Portal(url, {**urls, "gateway": url})


def test_an_agents_learning_shows_up_everywhere_the_portal_looks(portal: Portal) -> None:
    started = datetime.now(UTC) - timedelta(hours=2)
    portal.admin(
        "POST",
        "/v1/agents",
        {"agent_id": "mei", "name": "Mei Lin", "team_id": TEAM, "tier": "foundation"},
    )
    portal.admin(
        "POST",
        "/v1/agents",
        {"agent_id": "tom", "name": "Tom Wu", "team_id": "team-other", "tier": "foundation"},
    )
    portal.admin(
        "POST",
        "/v1/courses",
        {
            "course_id": "calm-complaints",
            "title": "Calm complaint calls",
            "tier": "foundation",
            "dimension": "communication",
            "credit_hours": 3.0,
            "tags": ["complaint-handling"],
            "modules": [
                {"module_id": "intro", "kind": "lesson", "title": "Why customers complain"},
                {"module_id": "check", "kind": "quiz", "title": "Check yourself"},
            ],
        },
    )

    course = "/v1/agents/mei/courses/calm-complaints"
    as_mei = {"sub": "mei", "role": "agent"}
    enrol = portal.call(
        "POST", "/v1/agents/mei/enrollments", body={"course_id": "calm-complaints"}, **as_mei
    )
    assert enrol.status_code == 201, enrol.text
    assert portal.call("POST", f"{course}/modules/intro/complete", body={}, **as_mei).ok
    attempt = portal.call("POST", f"{course}/modules/check/attempts", body={"score": 100}, **as_mei)
    assert attempt.json()["course_completed"] is True

    # Backfill is for admins and services only; an agent may not date its own progress.
    forged = portal.call(
        "POST",
        "/v1/agents/mei/enrollments",
        body={"course_id": "calm-complaints", "occurred_at": started.isoformat()},
        **as_mei,
    )
    assert forged.status_code == 403

    ticket = {
        "ticket_id": "WO-1",
        "agent_id": "mei",
        "qa_score": 95,
        "csat": 5,
        "resolved_at": started.isoformat(),
    }
    assert portal.call("POST", "/v1/tickets", "work-orders", "service", ticket).status_code == 202
    assert portal.call("POST", "/v1/tickets", "mei", "agent", ticket).status_code == 403

    # 10 lesson + 10 quiz module + (20 + 10 perfect + 5 first attempt) + 50 course + 5 ticket,
    # plus badge bonuses: first-steps 10, course-finisher bronze 20, perfect-score 25,
    # complaint-master 100 (the only tagged course is done).
    expected = 10 + 10 + 35 + 50 + 5 + 10 + 20 + 25 + 100

    def points() -> dict:
        return portal.call("GET", "/v1/agents/mei/points", "mei", "agent").json()

    settled = wait_until(lambda: points()["balance"] == expected and points(), timeout=60)
    rules = sorted(entry["rule_id"] for entry in settled["history"])
    assert rules.count("badge-bonus") == 4
    assert {"module-completed", "assessment-passed", "course-completed", "ticket-quality"} <= set(
        rules
    )

    badges = portal.call("GET", "/v1/agents/mei/badges", "mei", "agent").json()
    assert {(b["badge_id"], b["level"]) for b in badges["badges"]} >= {
        ("first-steps", None),
        ("course-finisher", "bronze"),
        ("perfect-score", None),
        ("complaint-master", None),
    }

    board = wait_until(
        lambda: (
            (b := portal.call("GET", "/v1/leaderboards/all-time?limit=10", "tom", "agent").json())[
                "entries"
            ]
            and b["entries"][0]["score"] == expected
            and b
        ),
        timeout=30,
        message="the leaderboard to catch up",
    )
    assert board["entries"][0] == {
        **board["entries"][0],
        "rank": 1,
        "agent_id": "mei",
        "name": "Mei Lin",
        "team_id": TEAM,
    }
    team_board = portal.call(
        "GET", f"/v1/leaderboards/weekly?scope=team:{TEAM}", "mei", "agent"
    ).json()
    assert [e["agent_id"] for e in team_board["entries"]] == ["mei"]

    # Credits consume the same events on their own: wait for them as for the others.
    credits = wait_until(
        lambda: (
            (reply := portal.call("GET", "/v1/agents/mei/credits", "mei", "agent")).ok
            and reply.json().get("total") == 3.0
            and reply.json()
        ),
        timeout=30,
        message="the credits to catch up",
    )
    assert credits["total"] == 3.0
    assert credits["by_dimension"]["communication"] == 3.0
    assert credits["next_tier"]["tier"] == "advanced"
    assert credits["next_tier"]["met"] is False

    credential = portal.call(
        "GET", "/v1/agents/mei/badges/perfect-score/credential", "mei", "agent"
    ).json()
    assert "OpenBadgeCredential" in credential["type"]

    profile = portal.call("GET", "/v1/agents/mei/profile", "mei", "agent").json()
    assert profile["unavailable"] == []
    assert profile["points"]["balance"] == expected
    assert profile["ranks"]["all_time"]["rank"] == 1


def test_roles_decide_who_sees_what(portal: Portal) -> None:
    portal.admin(
        "POST",
        "/v1/agents",
        {"agent_id": "ana", "name": "Ana Gao", "team_id": TEAM, "tier": "advanced"},
    )
    # An agent reads only itself; a manager only the team; everyone reads the boards.
    assert portal.call("GET", "/v1/agents/ana/points", "ana", "agent").status_code == 200
    assert portal.call("GET", "/v1/agents/ana/points", "tom", "agent").status_code == 403
    manager = {"sub": "lead", "role": "manager", "team": TEAM}
    wait_until(  # reads are eventually consistent: credits learns of ana from the roster event
        lambda: portal.call("GET", "/v1/agents/ana/credits", **manager).status_code == 200,
        message="the manager to read ana's credits",
    )
    other = {"sub": "lead2", "role": "manager", "team": "team-other"}
    assert portal.call("GET", "/v1/agents/ana/credits", **other).status_code == 403
    assert portal.call("GET", "/v1/leaderboards/weekly", "tom", "agent").status_code == 200
    # Writes need admin or service; nothing changes when refused.
    adjustment = {"delta": 50, "reason": "forged"}
    refused = portal.call("POST", "/v1/agents/ana/points/adjustments", "ana", "agent", adjustment)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"]
    # No token, a wrong signature: 401 in the error shape.
    anonymous = requests.get(portal.url + "/v1/agents/ana/points", timeout=5)
    assert anonymous.status_code == 401
    assert set(anonymous.json()["error"]) >= {"code", "message"}
    # Bad input is refused with field-level details and changes nothing.
    bad = portal.call("POST", "/v1/agents/ana/points/adjustments", "ops", "admin", {"delta": "x"})
    assert bad.status_code == 400
    assert portal.call("GET", "/v1/agents/ana/points", "ana", "agent").json()["balance"] == 0
    spec = requests.get(portal.url + "/openapi.json", timeout=5).json()
    assert spec["openapi"].startswith("3.1")
    assert "/v1/agents/{agent_id}/profile" in spec["paths"]


def test_the_demo_organisation_seeds_without_a_refusal(portal: Portal) -> None:
    from deploy.local.demo import TEAMS, Seeder

    admin = mint(SECRET, sub="demo", role="admin", ttl_seconds=600)
    service = mint(SECRET, sub="demo", role="service", ttl_seconds=600)
    seeder = Seeder(portal.url, admin, service)
    calls = seeder.seed(datetime.now(UTC), days=2)
    assert seeder.failures == []
    assert calls > 100
    # Every team's board fills up as the backfilled history flows through.
    for team in TEAMS:
        wait_until(
            lambda team=team: (
                portal.call(
                    "GET", f"/v1/leaderboards/all-time?scope=team:{team}", "x", "agent"
                ).json()["total"]
                >= 5
            ),
            timeout=90,
            message=f"{team}'s board",
        )


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_every_service_exports_lint_clean_metrics(portal: Portal) -> None:
    for name, url in portal.backends.items():
        exposition = requests.get(f"{url}/metrics", timeout=5).text
        assert f'skillquest_service_info{{service="{name}"}} 1.0' in exposition
        lint = subprocess.run(
            ["promtool", "check", "metrics"],
            input=exposition,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert lint.returncode == 0, f"{name}: {lint.stdout}{lint.stderr}"
    # The staleness alert needs to know when each period is due to close.
    leaderboards = requests.get(f"{portal.backends['leaderboards']}/metrics", timeout=5).text
    wait_until(
        lambda: (
            'skillquest_leaderboard_close_due_timestamp_seconds{period="weekly"}'
            in requests.get(f"{portal.backends['leaderboards']}/metrics", timeout=5).text
        ),
        timeout=40,
        message="the close-due gauge",
    )
    assert "skillquest_http_requests_total" in leaderboards
