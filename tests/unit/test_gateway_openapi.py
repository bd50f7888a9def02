"""The OpenAPI 3.1 document comes from the route table and the routes' own models; the
route table is consistent; the profile assembles and degrades part by part."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest
from pydantic import BaseModel

from services.gateway.auth import Caller
from services.gateway.downstream import Reply
from services.gateway.openapi import build_document
from services.gateway.profile import build_profile, in_progress
from services.gateway.routes import ROUTES, ModelRef, Policy
from services.runtime.errors import NotFound, Unavailable

DOCUMENT = build_document(ROUTES)
METHODS = {"get", "put", "post", "patch", "delete"}


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def test_it_is_an_openapi_3_1_document() -> None:
    assert DOCUMENT["openapi"] == "3.1.0"
    assert DOCUMENT["info"]["title"] and DOCUMENT["info"]["version"]
    json.dumps(DOCUMENT)  # serialisable as served
    for path, item in DOCUMENT["paths"].items():
        assert path.startswith("/")
        assert set(item) <= METHODS
        for operation in item.values():
            assert operation["responses"], path
            for status in operation["responses"]:
                assert re.fullmatch(r"[1-5]\d\d", status)


def test_every_route_is_in_the_document_once() -> None:
    for route in ROUTES:
        operation = DOCUMENT["paths"][route.path][route.method.lower()]
        assert operation["operationId"] == route.name
        assert str(route.status) in operation["responses"]
    operation_ids = [
        op["operationId"] for item in DOCUMENT["paths"].values() for op in item.values()
    ]
    assert not [name for name, n in Counter(operation_ids).items() if n > 1]
    assert {"/healthz", "/readyz", "/metrics", "/openapi.json"} <= set(DOCUMENT["paths"])


def test_the_bearer_security_scheme_guards_every_api_route() -> None:
    scheme = DOCUMENT["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for route in ROUTES:
        security = DOCUMENT["paths"][route.path][route.method.lower()]["security"]
        if route.policy is Policy.PUBLIC:
            assert security == [] and route.method == "GET", route.path
        else:
            assert security == [{"bearerAuth": []}], route.path
    public = {r.path for r in ROUTES if r.policy is Policy.PUBLIC}
    assert public == {
        "/v1/badges/issuer",
        "/v1/badges/issuer/jwks",
        "/v1/badges/{badge_id}/achievement",
    }
    assert DOCUMENT["paths"]["/openapi.json"]["get"]["security"] == []
    assert DOCUMENT["paths"]["/healthz"]["get"]["security"] == []


def test_every_path_parameter_is_declared_and_constrained() -> None:
    for route in ROUTES:
        operation = DOCUMENT["paths"][route.path][route.method.lower()]
        declared = [p for p in operation["parameters"] if p["in"] == "path"]
        assert [p["name"] for p in declared] == re.findall(r"\{(\w+)\}", route.path)
        for parameter in declared:
            assert parameter["required"] is True
            assert parameter["schema"]["pattern"].startswith("^")


def test_error_responses_are_listed_in_the_error_shape() -> None:
    error_ref = "#/components/schemas/ErrorResponse"
    schema = DOCUMENT["components"]["schemas"]["ErrorResponse"]
    assert schema["required"] == ["error"]
    for route in ROUTES:
        responses = DOCUMENT["paths"][route.path][route.method.lower()]["responses"]
        expected = {"400", "503"} | {str(s) for s in route.errors}
        if route.policy is not Policy.PUBLIC:
            expected.add("401")
        if route.policy not in (Policy.ANYONE, Policy.PUBLIC):
            expected.add("403")
        if route.method in ("POST", "PUT", "PATCH"):
            expected |= {"413", "415"}
        assert expected <= set(responses), route.path
        for status in expected:
            content = responses[status]["content"]["application/json"]
            assert content["schema"] == {"$ref": error_ref}


def test_every_reference_resolves() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    for ref in refs(DOCUMENT):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref
    assert "$defs" not in json.dumps(DOCUMENT)


def test_bodies_and_queries_come_from_the_routes_models() -> None:
    for route in ROUTES:
        operation = DOCUMENT["paths"][route.path][route.method.lower()]
        body = route.model("body")
        if body is not None:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            target = DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
            assert target["title"] == body.__name__
        query = route.model("query")
        if query is not None:
            names = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
            assert names == set(query.model_fields)
    board = DOCUMENT["paths"]["/v1/leaderboards/{period}"]["get"]
    limit = next(p for p in board["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 100 and limit["schema"]["minimum"] == 1


def test_every_model_the_table_names_exists() -> None:
    for route in ROUTES:
        for which in ("body", "query", "response"):
            ref = getattr(route, which)
            if isinstance(ref, ModelRef):
                assert issubclass(ref.resolve(), BaseModel), (route.path, ref)


def test_the_route_table_is_consistent() -> None:
    keys = [(r.method, r.path) for r in ROUTES]
    assert len(keys) == len(set(keys))
    assert {r.service for r in ROUTES} == {
        "progress",
        "points",
        "leaderboards",
        "credits",
        "badges",
        "gateway",
    }
    for route in ROUTES:
        assert route.path.startswith("/v1/")
        assert "{" not in route.rule
        assert route.method in ("GET", "POST", "PUT", "PATCH", "DELETE")
        if route.method == "GET":
            assert route.body is None and not route.backfill
        if route.policy in (Policy.AGENT_READ, Policy.AGENT_WRITE):
            assert "agent_id" in route.params, route.path
    section5 = {
        ("POST", "/v1/agents"),
        ("GET", "/v1/agents/{agent_id}"),
        ("PATCH", "/v1/agents/{agent_id}"),
        ("POST", "/v1/courses"),
        ("GET", "/v1/courses"),
        ("GET", "/v1/courses/{course_id}"),
        ("PATCH", "/v1/courses/{course_id}"),
        ("POST", "/v1/courses/{course_id}/publish"),
        ("POST", "/v1/agents/{agent_id}/enrollments"),
        ("POST", "/v1/agents/{agent_id}/courses/{course_id}/modules/{module_id}/complete"),
        ("POST", "/v1/agents/{agent_id}/courses/{course_id}/modules/{module_id}/attempts"),
        ("POST", "/v1/agents/{agent_id}/courses/{course_id}/feedback"),
        ("GET", "/v1/agents/{agent_id}/courses"),
        ("POST", "/v1/tickets"),
        ("GET", "/v1/agents/{agent_id}/points"),
        ("POST", "/v1/agents/{agent_id}/points/adjustments"),
        ("GET", "/v1/leaderboards/{period}"),
        ("GET", "/v1/leaderboards/{period}/agents/{agent_id}"),
        ("GET", "/v1/agents/{agent_id}/credits"),
        ("GET", "/v1/agents/{agent_id}/badges"),
        ("GET", "/v1/badges"),
        ("GET", "/v1/agents/{agent_id}/badges/{badge_id}/credential"),
        ("GET", "/v1/agents/{agent_id}/profile"),
    }
    assert section5 <= set(keys)


# -- the profile ------------------------------------------------------------------------


class FakeDownstream:
    """Answers by (service, path); a service in `down` raises the 503 the client would."""

    def __init__(self, answers: dict[tuple[str, str], tuple[int, Any]], down: set[str]) -> None:
        self.answers = answers
        self.down = down
        self.calls: list[tuple[str, str, str]] = []

    def call(self, service: str, method: str, path: str, **kwargs: Any) -> Reply:
        self.calls.append((service, path, str(kwargs.get("query", ""))))
        if service in self.down:
            raise Unavailable(f"the {service} service is unavailable")
        status, body = self.answers.get((service, path), (404, {"error": {}}))
        return Reply(status, json.dumps(body).encode(), "application/json")


ANSWERS = {
    ("progress", "/v1/agents/ann/summary"): (
        200,
        {
            "agent": {"agent_id": "ann", "team_id": "t1", "tier": "advanced"},
            "courses": {
                "courses": [
                    {"course_id": "c1", "status": "completed"},
                    {"course_id": "c2", "status": "in_progress"},
                ]
            },
        },
    ),
    ("points", "/v1/agents/ann/points"): (200, {"agent_id": "ann", "balance": 120, "history": []}),
    ("leaderboards", "/v1/agents/ann/standings"): (
        200,
        {
            "agent_id": "ann",
            "scope": "global",
            "standings": [
                {"period": "2026-W48", "rank": 3, "score": 40},
                {"period": "all-time", "rank": None, "score": 0},
            ],
        },
    ),
    ("credits", "/v1/agents/ann/credits"): (200, {"agent_id": "ann", "total": 6.5}),
    ("badges", "/v1/agents/ann/badges"): (200, {"agent_id": "ann", "badges": []}),
}
CALLER = Caller("ann", "agent")


def test_the_profile_gathers_every_part() -> None:
    downstream = FakeDownstream(ANSWERS, down=set())
    profile = build_profile(downstream, "ann", CALLER, history_limit=5)  # type: ignore[arg-type]
    assert profile.unavailable == []
    assert profile.points == {"agent_id": "ann", "balance": 120, "history": []}
    assert profile.ranks.weekly is not None and profile.ranks.weekly.rank == 3
    assert profile.ranks.weekly.period == "2026-W48"
    # not on the all-time board: no rank, but not an outage either
    assert profile.ranks.all_time is not None and profile.ranks.all_time.rank is None
    assert profile.ranks.all_time.period == "all-time"
    assert profile.credits == {"agent_id": "ann", "total": 6.5}
    assert [c["course_id"] for c in profile.courses_in_progress or []] == ["c2"]
    assert ("points", "/v1/agents/ann/points", "limit=5") in downstream.calls
    # Five calls: one for the roster entry and the courses, one for both ranks.
    assert len(downstream.calls) == 5
    assert (
        "leaderboards",
        "/v1/agents/ann/standings",
        "periods=weekly,all-time&scope=global",
    ) in downstream.calls


@pytest.mark.parametrize(
    ("down", "parts"),
    [
        ({"credits"}, ["credits"]),
        ({"leaderboards"}, ["weekly_rank", "all_time_rank"]),
        ({"progress"}, ["agent", "courses"]),
        ({"points", "badges"}, ["points", "badges"]),
    ],
)
def test_a_part_whose_service_is_down_is_null_and_named(down: set[str], parts: list[str]) -> None:
    profile = build_profile(FakeDownstream(ANSWERS, down), "ann", CALLER)  # type: ignore[arg-type]
    assert sorted(profile.unavailable) == sorted(parts)
    dumped = profile.model_dump()
    for part in parts:
        key = {"courses": "courses_in_progress"}.get(part, part)
        if part.endswith("_rank"):
            assert dumped["ranks"][part.removesuffix("_rank")] is None
        else:
            assert dumped[key] is None
    assert dumped["agent_id"] == "ann"


def test_an_unexpected_answer_of_one_part_degrades_it_too() -> None:
    answers = {**ANSWERS, ("badges", "/v1/agents/ann/badges"): (400, {"error": {}})}
    profile = build_profile(FakeDownstream(answers, set()), "ann", CALLER)  # type: ignore[arg-type]
    assert profile.unavailable == ["badges"]


def test_the_profile_of_an_unknown_agent_is_404() -> None:
    answers = {k: v for k, v in ANSWERS.items() if k != ("progress", "/v1/agents/ann/summary")}
    with pytest.raises(NotFound):
        build_profile(FakeDownstream(answers, set()), "ann", CALLER)  # type: ignore[arg-type]


def test_in_progress_courses_accept_list_or_wrapper() -> None:
    items = [{"course_id": "a", "completed_at": "2026-11-01T00:00:00Z"}, {"course_id": "b"}]
    assert in_progress(items) == [{"course_id": "b"}]
    assert in_progress({"courses": items}) == [{"course_id": "b"}]
    assert in_progress(None) == []
