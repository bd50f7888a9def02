"""Who may call what: agents themselves and every leaderboard, managers their team,
admins and services the writes; backfill only by admins and services; safe ids only."""

from __future__ import annotations

import pytest

from services.gateway.auth import Caller
from services.gateway.downstream import team_cache
from services.gateway.policy import authorize, check_backfill, check_path, check_query_rights
from services.gateway.routes import ROUTES, Policy, Route
from services.runtime.errors import BadRequest, Forbidden, NotFound

AGENT = Caller("ann", "agent")
OTHER_AGENT = Caller("bob", "agent")
MANAGER = Caller("mia", "manager", "t1")
OTHER_MANAGER = Caller("max", "manager", "t2")
ADMIN = Caller("alice", "admin")
SERVICE = Caller("lms", "service")
TEAMS = {"ann": "t1", "bob": "t2"}


def route(method: str, path: str) -> Route:
    return next(r for r in ROUTES if r.method == method and r.path == path)


POINTS = route("GET", "/v1/agents/{agent_id}/points")
PROFILE = route("GET", "/v1/agents/{agent_id}/profile")
ENROL = route("POST", "/v1/agents/{agent_id}/enrollments")
ADJUST = route("POST", "/v1/agents/{agent_id}/points/adjustments")
REGISTER = route("POST", "/v1/agents")
BOARD = route("GET", "/v1/leaderboards/{period}")
POSITION = route("GET", "/v1/leaderboards/{period}/agents/{agent_id}")
TEAM_CREDITS = route("GET", "/v1/teams/{team_id}/credits")
ROSTER = route("GET", "/v1/agents")


def team_of(agent_id: str) -> str:
    if agent_id not in TEAMS:
        raise NotFound(f"agent {agent_id} not found")
    return TEAMS[agent_id]


def allowed(caller: Caller, r: Route, **values: str) -> bool:
    try:
        authorize(caller, r, values, team_of)
    except Forbidden:
        return False
    return True


def test_agents_read_their_own_data_only() -> None:
    assert allowed(AGENT, POINTS, agent_id="ann")
    assert allowed(AGENT, PROFILE, agent_id="ann")
    assert not allowed(AGENT, POINTS, agent_id="bob")
    assert not allowed(OTHER_AGENT, PROFILE, agent_id="ann")


def test_agents_read_every_leaderboard_and_anyones_position() -> None:
    for caller in (AGENT, MANAGER, ADMIN, SERVICE):
        assert allowed(caller, BOARD, period="weekly")
        assert allowed(caller, POSITION, period="all-time", agent_id="bob")


def test_agents_act_on_their_own_learning_only() -> None:
    assert allowed(AGENT, ENROL, agent_id="ann")
    assert not allowed(AGENT, ENROL, agent_id="bob")


def test_managers_read_the_agents_of_their_team() -> None:
    assert allowed(MANAGER, POINTS, agent_id="ann")
    assert allowed(MANAGER, PROFILE, agent_id="ann")
    assert not allowed(MANAGER, POINTS, agent_id="bob")
    assert allowed(OTHER_MANAGER, POINTS, agent_id="bob")
    assert not allowed(OTHER_MANAGER, PROFILE, agent_id="ann")


def test_a_manager_asking_about_an_unknown_agent_gets_the_rosters_404() -> None:
    with pytest.raises(NotFound):
        authorize(MANAGER, POINTS, {"agent_id": "nobody"}, team_of)


def test_managers_do_not_write() -> None:
    assert not allowed(MANAGER, ENROL, agent_id="ann")  # even for their own team
    assert not allowed(MANAGER, ADJUST, agent_id="ann")
    assert not allowed(MANAGER, REGISTER)


def test_managers_read_their_own_teams_views_only() -> None:
    assert allowed(MANAGER, TEAM_CREDITS, team_id="t1")
    assert not allowed(MANAGER, TEAM_CREDITS, team_id="t2")
    assert allowed(MANAGER, ROSTER, team_id="t1")  # ?team_id= of a list
    assert not allowed(MANAGER, ROSTER)  # the whole roster
    assert not allowed(AGENT, TEAM_CREDITS, team_id="t1")
    assert allowed(ADMIN, TEAM_CREDITS, team_id="t2")


def test_admins_and_services_write_and_read_everything_but_operations() -> None:
    for caller in (ADMIN, SERVICE):
        for r in ROUTES:
            if r.policy is Policy.ADMIN and caller is SERVICE:
                continue  # test_operations_are_for_admins_only
            values = {name: "t1" if name == "team_id" else "x1" for name in r.params}
            if "period" in values:
                values["period"] = "weekly"
            assert allowed(caller, r, **values), r.path


def test_agents_may_not_call_any_writer_route() -> None:
    writer_routes = [r for r in ROUTES if r.policy in (Policy.WRITER, Policy.ADMIN)]
    assert {r.path for r in writer_routes} >= {
        "/v1/agents",
        "/v1/courses",
        "/v1/tickets",
        "/v1/agents/{agent_id}/points/adjustments",
        "/v1/agents/{agent_id}/points/awards/{award_id}/reversal",
        "/v1/points/rules/{rule_id}",
        "/v1/agents/{agent_id}/credits/grants",
        "/v1/agents/{agent_id}/credits/lots/{lot_id}/revocation",
        "/v1/leaderboards/rebuild",
    }
    for r in writer_routes:
        values = {name: "ann" for name in r.params}
        assert not allowed(AGENT, r, **values), r.path


def test_the_role_is_named_in_a_refusal() -> None:
    with pytest.raises(Forbidden) as refused:
        authorize(AGENT, ADJUST, {"agent_id": "ann"}, team_of)
    assert "agent" in refused.value.message
    assert refused.value.status == 403


@pytest.mark.parametrize("caller", [AGENT, MANAGER])
def test_backfill_by_agents_and_managers_is_403(caller: Caller) -> None:
    with pytest.raises(Forbidden) as refused:
        check_backfill(caller, ENROL, {"course_id": "c1", "occurred_at": "2026-01-01T00:00:00Z"})
    assert "occurred_at" in refused.value.message


@pytest.mark.parametrize("caller", [ADMIN, SERVICE])
def test_backfill_by_admins_and_services_passes(caller: Caller) -> None:
    check_backfill(caller, ENROL, {"course_id": "c1", "occurred_at": "2026-01-01T00:00:00Z"})


def test_no_backfill_is_fine_for_anyone() -> None:
    check_backfill(AGENT, ENROL, {"course_id": "c1"})
    check_backfill(AGENT, ENROL, {"course_id": "c1", "occurred_at": None})
    check_backfill(AGENT, ENROL, None)
    check_backfill(AGENT, ENROL, ["not", "an", "object"])


@pytest.mark.parametrize(
    "agent_id", ["ann", "a1", "A.b_c:d@e-f", "x" * 64, "0", "agent-007@t1.example"]
)
def test_safe_ids_pass(agent_id: str) -> None:
    check_path(POINTS, {"agent_id": agent_id})


@pytest.mark.parametrize(
    "agent_id",
    [
        "",
        "x" * 65,
        "-lead",
        ".hidden",
        "has space",
        "a/b",
        "a%2Fb",
        "a?b",
        "ä",
        "a\nb",
        "ann\n",
        "$where",
    ],
)
def test_unsafe_ids_are_400_with_the_field(agent_id: str) -> None:
    with pytest.raises(BadRequest) as refused:
        check_path(POINTS, {"agent_id": agent_id})
    assert refused.value.details[0]["field"] == "agent_id"


@pytest.mark.parametrize(
    "period", ["all-time", "weekly", "monthly", "2026-W48", "2026-W01", "2026-11"]
)
def test_period_keys_pass(period: str) -> None:
    check_path(BOARD, {"period": period})


@pytest.mark.parametrize(
    "period", ["daily", "2026-W54", "2026-W00", "2026-13", "2026-1", "w48", "weekly\n"]
)
def test_other_periods_are_400(period: str) -> None:
    with pytest.raises(BadRequest):
        check_path(BOARD, {"period": period})


def test_the_team_cache_expires_and_stays_bounded() -> None:
    now = [0.0]
    cache = team_cache(ttl_seconds=30, max_entries=2, timer=lambda: now[0])
    cache["ann"] = "t1"
    now[0] = 29.9
    assert cache.get("ann") == "t1"
    now[0] = 30
    assert cache.get("ann") is None
    for agent, team in (("a", "t1"), ("b", "t2"), ("c", "t3")):
        cache[agent] = team
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, "t2", "t3")
    unkept = team_cache(ttl_seconds=0, timer=lambda: now[0])
    unkept["x"] = "t1"
    assert unkept.get("x") is None  # 0 seconds: every call asks the roster


def test_drafts_in_the_catalogue_are_for_writers() -> None:
    catalogue = route("GET", "/v1/courses")
    check_query_rights(AGENT, catalogue, {"tier": "foundation"})
    check_query_rights(AGENT, catalogue, {"published": "true"})
    for value in ("false", "any"):
        with pytest.raises(Forbidden):
            check_query_rights(AGENT, catalogue, {"published": value})
        with pytest.raises(Forbidden):
            check_query_rights(MANAGER, catalogue, {"published": value})
        check_query_rights(ADMIN, catalogue, {"published": value})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/points/dead-letters"),
        ("POST", "/v1/admin/badges/dead-letters/replay"),
        ("POST", "/v1/leaderboards/rebuild"),
    ],
)
def test_operations_are_for_admins_only(method: str, path: str) -> None:
    target = route(method, path)
    authorize(Caller("ops", "admin", None), target, {}, team_of)
    for caller in (Caller("etl", "service", None), Caller("mia", "manager", "t1")):
        with pytest.raises(Forbidden):
            authorize(caller, target, {}, team_of)
