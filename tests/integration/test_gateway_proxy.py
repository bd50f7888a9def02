"""The gateway container in front of small real HTTP services (plain WSGI stand-ins on free
ports): tokens, roles, input checks, proxying, a stopped or slow service, the profile,
readiness, metrics and the OpenAPI document, as a portal would see them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests
import yaml
from nameko.cli.main import setup_yaml_parser

from services.gateway.auth import mint
from services.gateway.service import GatewayService
from tests.integration.gateway_standins import StandIn
from tests.support.harness import CONFIG_FILE, free_port, running

SECRET = "integration-secret-for-the-gateway-tests-0123456789"
SERVICES = ("progress", "points", "leaderboards", "credits", "badges")
MAX_BODY = 4096


@pytest.fixture(scope="module")
def standins() -> Iterator[dict[str, StandIn]]:
    started = {name: StandIn(name).start() for name in SERVICES}
    yield started
    for standin in started.values():
        standin.stop()


@pytest.fixture(scope="module")
def gateway(standins: dict[str, StandIn]) -> Iterator[str]:
    setup_yaml_parser()
    config = yaml.safe_load(CONFIG_FILE.read_text())
    port = free_port()
    config.update(
        WEB_SERVER_ADDRESS=f"127.0.0.1:{port}",
        JWT_SECRET=SECRET,
        SERVICE_URLS={name: standin.url for name, standin in standins.items()},
        GATEWAY={
            "connect_timeout_seconds": 0.5,
            "read_timeout_seconds": 0.5,
            "readiness_timeout_seconds": 0.5,
            "max_body_bytes": MAX_BODY,
            "team_cache_seconds": 60,
        },
    )
    with running(GatewayService, config):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def fresh(standins: dict[str, StandIn]) -> None:
    for standin in standins.values():
        standin.reset()
    standins["progress"].answer(
        "GET", "/v1/agents/ann", 200, {"agent_id": "ann", "team_id": "t1", "tier": "advanced"}
    )
    standins["progress"].answer(
        "GET", "/v1/agents/bob", 200, {"agent_id": "bob", "team_id": "t2", "tier": "foundation"}
    )


def auth(role: str, sub: str, team: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(SECRET, sub=sub, role=role, team=team)}"}


ANN = auth("agent", "ann")
ADMIN = auth("admin", "alice")
SERVICE = auth("service", "lms")


def error_of(response: requests.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    return body["error"]


def api_calls(standin: StandIn) -> list[str]:
    return [f"{s.method} {s.path}" for s in standin.seen if s.path != "/healthz"]


def test_a_call_reaches_its_service_with_the_caller_and_comes_back_as_answered(
    gateway: str, standins: dict[str, StandIn]
) -> None:
    points = standins["points"]
    view = {"agent_id": "ann", "balance": 75, "history": [], "next_cursor": None}
    points.answer("GET", "/v1/agents/ann/points", 200, view)
    response = requests.get(
        f"{gateway}/v1/agents/ann/points?limit=5&cursor=abc", headers=ANN, timeout=5
    )
    assert response.status_code == 200 and response.json() == view
    seen = points.last("GET", "/v1/agents/ann/points")
    assert seen.headers["X-Caller-Sub"] == "ann" and seen.headers["X-Caller-Role"] == "agent"
    assert seen.query == "limit=5&cursor=abc"
    # one request id follows the call: made here, or the caller's own when it sent one
    assert seen.headers["X-Request-Id"] == response.headers["X-Request-Id"]
    traced = requests.get(
        f"{gateway}/v1/agents/ann/points", headers={**ANN, "X-Request-Id": "trace-42"}, timeout=5
    )
    assert traced.headers["X-Request-Id"] == "trace-42"
    assert points.last("GET", "/v1/agents/ann/points").headers["X-Request-Id"] == "trace-42"

    credits = standins["credits"]
    credits.routes[("POST", "/v1/agents/ann/credits/grants")] = lambda s: (201, s.json())
    grant = {
        "credit_hours": 2.5,
        "dimension": "technology",
        "reason": "external course",
        "evidence_url": "https://example.org/cert/1",
    }
    headers = {**ADMIN, "Idempotency-Key": "grant-1"}
    response = requests.post(
        f"{gateway}/v1/agents/ann/credits/grants", json=grant, headers=headers, timeout=5
    )
    assert response.status_code == 201 and response.json() == grant
    seen = credits.last("POST", "/v1/agents/ann/credits/grants")
    assert seen.headers["Idempotency-Key"] == "grant-1"
    assert seen.headers["X-Caller-Sub"] == "alice" and seen.headers["X-Caller-Role"] == "admin"


def test_a_services_4xx_is_passed_on_as_it_is(gateway: str, standins: dict[str, StandIn]) -> None:
    conflict = {"error": {"code": "conflict", "message": "agent ann exists", "details": None}}
    standins["progress"].answer("POST", "/v1/agents", 409, conflict)
    body = {"agent_id": "ann", "name": "Ann", "team_id": "t1"}
    response = requests.post(f"{gateway}/v1/agents", json=body, headers=ADMIN, timeout=5)
    assert response.status_code == 409 and response.json() == conflict

    missing = requests.get(f"{gateway}/v1/agents/zed/credits", headers=ADMIN, timeout=5)
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"


def test_every_bad_token_is_401_and_reaches_no_service(
    gateway: str, standins: dict[str, StandIn]
) -> None:
    now = int(time.time())
    claims = {"sub": "ann", "role": "agent", "exp": now + 600}
    unsigned = jwt.encode(claims, None, algorithm="none")
    tokens = {
        "missing": None,
        "malformed": "Bearer not-a-jwt",
        "expired": "Bearer " + jwt.encode({**claims, "exp": now - 10}, SECRET, algorithm="HS256"),
        "wrong secret": "Bearer " + jwt.encode(claims, "x" * 40, algorithm="HS256"),
        "alg none": f"Bearer {unsigned}",
        "no role": "Bearer " + jwt.encode({"sub": "ann", "exp": now + 60}, SECRET),
    }
    for what, header in tokens.items():
        headers = {"Authorization": header} if header else {}
        response = requests.get(f"{gateway}/v1/agents/ann/points", headers=headers, timeout=5)
        assert response.status_code == 401, what
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), what
        error_of(response)
    assert api_calls(standins["points"]) == []


def test_agents_see_themselves_and_every_leaderboard(
    gateway: str, standins: dict[str, StandIn]
) -> None:
    board = {"period": "2026-W48", "scope": "global", "total": 0, "entries": []}
    standins["leaderboards"].answer("GET", "/v1/leaderboards/weekly", 200, board)
    standins["leaderboards"].answer(
        "GET", "/v1/leaderboards/all-time/agents/bob", 200, {"rank": 1, "score": 9}
    )
    assert (
        requests.get(f"{gateway}/v1/agents/bob/points", headers=ANN, timeout=5).status_code == 403
    )
    assert (
        requests.get(f"{gateway}/v1/agents/bob/profile", headers=ANN, timeout=5).status_code == 403
    )
    assert api_calls(standins["points"]) == []
    response = requests.get(
        f"{gateway}/v1/leaderboards/weekly?scope=team:t2", headers=ANN, timeout=5
    )
    assert response.status_code == 200 and response.json() == board
    other = requests.get(f"{gateway}/v1/leaderboards/all-time/agents/bob", headers=ANN, timeout=5)
    assert other.status_code == 200 and other.json()["rank"] == 1


def test_managers_see_their_team_only(gateway: str, standins: dict[str, StandIn]) -> None:
    standins["credits"].answer("GET", "/v1/agents/ann/credits", 200, {"agent_id": "ann"})
    standins["credits"].answer("GET", "/v1/teams/t1/credits", 200, {"team_id": "t1"})
    mia = auth("manager", "mia", team="t1")
    for _ in range(3):
        response = requests.get(f"{gateway}/v1/agents/ann/credits", headers=mia, timeout=5)
        assert response.status_code == 200
    # the roster was asked once for ann's team, then the cache answered
    assert api_calls(standins["progress"]).count("GET /v1/agents/ann") == 1
    refused = requests.get(f"{gateway}/v1/agents/bob/credits", headers=mia, timeout=5)
    assert refused.status_code == 403 and "t1" in error_of(refused)["message"]
    assert requests.get(f"{gateway}/v1/teams/t1/credits", headers=mia, timeout=5).ok
    assert requests.get(f"{gateway}/v1/teams/t2/credits", headers=mia, timeout=5).status_code == 403
    # managers read, they do not write
    adjust = {"delta": 10, "reason": "great week"}
    response = requests.post(
        f"{gateway}/v1/agents/ann/points/adjustments", json=adjust, headers=mia, timeout=5
    )
    assert response.status_code == 403
    unknown = requests.get(f"{gateway}/v1/agents/nobody/credits", headers=mia, timeout=5)
    assert unknown.status_code == 404
    assert api_calls(standins["points"]) == []
    assert api_calls(standins["credits"]) == ["GET /v1/agents/ann/credits"] * 3 + [
        "GET /v1/teams/t1/credits"
    ]


def test_writes_are_for_admins_and_services_and_so_is_backfill(
    gateway: str, standins: dict[str, StandIn]
) -> None:
    points, progress = standins["points"], standins["progress"]
    points.routes[("POST", "/v1/agents/ann/points/adjustments")] = lambda s: (201, s.json())
    adjust = {"delta": -5, "reason": "duplicate ticket"}
    url = f"{gateway}/v1/agents/ann/points/adjustments"
    assert requests.post(url, json=adjust, headers=ANN, timeout=5).status_code == 403
    assert requests.post(url, json=adjust, headers=ADMIN, timeout=5).status_code == 201
    assert points.last("POST", "/v1/agents/ann/points/adjustments").json() == adjust

    progress.routes[("POST", "/v1/agents/ann/enrollments")] = lambda s: (201, s.json())
    enrol = f"{gateway}/v1/agents/ann/enrollments"
    backfill = {"course_id": "c1", "occurred_at": "2026-11-01T08:00:00Z"}
    refused = requests.post(enrol, json=backfill, headers=ANN, timeout=5)
    assert refused.status_code == 403 and "occurred_at" in error_of(refused)["message"]
    assert api_calls(progress) == []
    assert requests.post(enrol, json={"course_id": "c1"}, headers=ANN, timeout=5).status_code == 201
    assert requests.post(enrol, json=backfill, headers=SERVICE, timeout=5).status_code == 201
    assert progress.last("POST", "/v1/agents/ann/enrollments").json() == backfill


def test_bad_input_is_refused_before_any_service_sees_it(
    gateway: str, standins: dict[str, StandIn]
) -> None:
    enrol = f"{gateway}/v1/agents/ann/enrollments"
    as_text = requests.post(enrol, data="course_id=c1", headers=ANN, timeout=5)
    assert as_text.status_code == 415
    too_big = json.dumps({"course_id": "c1", "padding": "x" * MAX_BODY})
    response = requests.post(
        enrol, data=too_big, headers={**ANN, "Content-Type": "application/json"}, timeout=5
    )
    assert response.status_code == 413
    broken = requests.post(
        enrol, data="{nope", headers={**ANN, "Content-Type": "application/json"}, timeout=5
    )
    assert broken.status_code == 400
    deep = requests.post(
        enrol,
        data="[" * 2000 + "]" * 2000,
        headers={**ANN, "Content-Type": "application/json"},
        timeout=5,
    )
    assert deep.status_code == 400
    invalid = requests.post(enrol, json={"course_id": "bad id", "extra": 1}, headers=ANN, timeout=5)
    assert invalid.status_code == 400
    fields = {detail["field"] for detail in error_of(invalid)["details"]}
    assert fields == {"course_id", "extra"}
    score = f"{gateway}/v1/agents/ann/courses/c1/modules/q1/attempts"
    out_of_range = requests.post(score, json={"score": 101}, headers=ANN, timeout=5)
    assert out_of_range.status_code == 400
    assert error_of(out_of_range)["details"][0]["field"] == "score"

    bad_id = requests.get(f"{gateway}/v1/agents/a%20b/points", headers=ADMIN, timeout=5)
    assert bad_id.status_code == 400 and error_of(bad_id)["details"][0]["field"] == "agent_id"
    for query in ("limit=1000", "limit=0", "offset=-1", "scope=planet", "sort=name"):
        response = requests.get(f"{gateway}/v1/leaderboards/weekly?{query}", headers=ANN, timeout=5)
        assert response.status_code == 400, query
    too_many = requests.get(
        f"{gateway}/v1/leaderboards/weekly/agents/ann?neighbors=11", headers=ANN, timeout=5
    )
    assert too_many.status_code == 400
    assert (
        requests.get(f"{gateway}/v1/leaderboards/daily", headers=ANN, timeout=5).status_code == 400
    )
    for name in ("progress", "leaderboards", "points"):
        assert api_calls(standins[name]) == [], name


def test_a_stopped_service_is_503_and_recovers(gateway: str, standins: dict[str, StandIn]) -> None:
    credits = standins["credits"]
    credits.stop()
    response = requests.get(f"{gateway}/v1/agents/ann/credits", headers=ANN, timeout=5)
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "unavailable" and "credits" in error["message"]
    ready = requests.get(f"{gateway}/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["checks"]["credits"] is False
    assert ready.json()["checks"]["points"] is True
    metrics = requests.get(f"{gateway}/metrics", timeout=5).text
    unreachable = (
        'skillquest_gateway_downstream_requests_total{outcome="unreachable",service="credits"}'
    )
    assert float(metrics.split(unreachable, 1)[1].split()[0]) >= 1

    credits.start()
    credits.answer("GET", "/v1/agents/ann/credits", 200, {"agent_id": "ann", "total": 3.0})
    response = requests.get(f"{gateway}/v1/agents/ann/credits", headers=ANN, timeout=5)
    assert response.status_code == 200 and response.json()["total"] == 3.0
    assert requests.get(f"{gateway}/readyz", timeout=5).json() == {
        "ready": True,
        "checks": {name: True for name in SERVICES},
    }


def test_a_slow_or_failing_service_is_503_without_its_details(
    gateway: str, standins: dict[str, StandIn]
) -> None:
    badges = standins["badges"]
    badges.answer("GET", "/v1/badges", 200, {"badges": []})
    badges.delay_seconds = 2.0  # beyond the 0.5 s read timeout
    slow = requests.get(f"{gateway}/v1/badges", headers=ANN, timeout=10)
    assert slow.status_code == 503 and "in time" in error_of(slow)["message"]
    badges.delay_seconds = 0
    badges.answer("GET", "/v1/badges", 500, {"trace": "secret internals"})
    failing = requests.get(f"{gateway}/v1/badges", headers=ANN, timeout=10)
    assert failing.status_code == 503 and "secret" not in failing.text


def test_the_profile_gathers_everything_and_degrades_part_by_part(
    gateway: str, standins: dict[str, StandIn]
) -> None:
    standins["points"].answer(
        "GET", "/v1/agents/ann/points", 200, {"agent_id": "ann", "balance": 120, "history": []}
    )
    standins["leaderboards"].answer(
        "GET",
        "/v1/agents/ann/standings",
        200,
        {
            "agent_id": "ann",
            "scope": "global",
            "standings": [
                {"period": "2026-W48", "rank": 2, "score": 40},
                {"period": "all-time", "rank": 7, "score": 120},
            ],
        },
    )
    standins["credits"].answer(
        "GET", "/v1/agents/ann/credits", 200, {"agent_id": "ann", "total": 9}
    )
    standins["badges"].answer(
        "GET",
        "/v1/agents/ann/badges",
        200,
        {"agent_id": "ann", "badges": [{"badge_id": "first-steps"}]},
    )
    courses = [
        {"course_id": "c1", "status": "completed"},
        {"course_id": "c2", "status": "in_progress"},
    ]
    standins["progress"].answer(
        "GET",
        "/v1/agents/ann/summary",
        200,
        {
            "agent": {"agent_id": "ann", "team_id": "t1", "tier": "advanced"},
            "courses": {"agent_id": "ann", "courses": courses},
        },
    )
    url = f"{gateway}/v1/agents/ann/profile"
    mia = auth("manager", "mia", team="t1")
    profile = requests.get(url, headers=mia, timeout=5).json()
    assert profile["unavailable"] == []
    assert profile["agent"]["tier"] == "advanced"
    assert profile["points"]["balance"] == 120
    assert profile["ranks"]["weekly"] == {
        "period": "2026-W48",
        "scope": "global",
        "rank": 2,
        "score": 40,
    }
    assert profile["ranks"]["all_time"]["rank"] == 7
    assert profile["credits"]["total"] == 9
    assert profile["badges"]["badges"][0]["badge_id"] == "first-steps"
    assert [c["course_id"] for c in profile["courses_in_progress"]] == ["c2"]
    sent = standins["points"].last("GET", "/v1/agents/ann/points").headers
    assert sent["X-Caller-Sub"] == "mia" and sent["X-Request-Id"]

    standins["leaderboards"].stop()
    standins["badges"].stop()
    degraded = requests.get(url, headers=ANN, timeout=5)
    assert degraded.status_code == 200
    body = degraded.json()
    assert sorted(body["unavailable"]) == ["all_time_rank", "badges", "weekly_rank"]
    assert body["ranks"] == {"weekly": None, "all_time": None} and body["badges"] is None
    assert body["points"]["balance"] == 120 and body["credits"]["total"] == 9

    missing = requests.get(f"{gateway}/v1/agents/zed/profile", headers=ADMIN, timeout=5)
    assert missing.status_code == 404


def test_openapi_health_and_metrics_need_no_token(gateway: str) -> None:
    document = requests.get(f"{gateway}/openapi.json", timeout=5)
    assert document.status_code == 200 and document.json()["openapi"] == "3.1.0"
    assert "/v1/agents/{agent_id}/profile" in document.json()["paths"]
    assert requests.get(f"{gateway}/healthz", timeout=5).json() == {"status": "ok"}
    requests.get(f"{gateway}/v1/agents/ann/points", headers=ANN, timeout=5)
    requests.get(f"{gateway}/v1/agents/bob/points", headers=ANN, timeout=5)
    metrics = requests.get(f"{gateway}/metrics", timeout=5).text
    lines = [line for line in metrics.splitlines() if line.startswith("skillquest_http_requests")]
    assert any('route="/v1/agents/<agent_id>/points"' in line for line in lines)
    assert not any("ann" in line or "bob" in line for line in lines)


def test_open_badges_verification_documents_need_no_token(
    gateway: str, standins: dict[str, StandIn]
) -> None:
    badges = standins["badges"]
    issuer = {"@context": ["https://www.w3.org/ns/credentials/v2"], "id": "x", "type": ["Profile"]}
    badges.answer("GET", "/v1/badges/issuer", 200, issuer)
    badges.answer("GET", "/v1/badges/issuer/jwks", 200, {"keys": []})
    assert requests.get(f"{gateway}/v1/badges/issuer", timeout=5).json() == issuer
    assert requests.get(f"{gateway}/v1/badges/issuer/jwks", timeout=5).json() == {"keys": []}
    assert "X-Caller-Sub" not in badges.last("GET", "/v1/badges/issuer").headers
    # the credential itself is the agent's: it needs their token
    credential = f"{gateway}/v1/agents/ann/badges/first-steps/credential"
    assert requests.get(credential, timeout=5).status_code == 401
    assert requests.get(f"{gateway}/v1/badges", timeout=5).status_code == 401
