"""The progress service against the real broker and database: the HTTP API drives every
learning fact, the events land on Kafka in order, each valid against its checked-in JSON
Schema, and refused requests change nothing and publish nothing (issue 3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import eventlet
import pytest
import requests

from contracts.topics import LEARNING_CATALOG, LEARNING_PROGRESS, PEOPLE_AGENTS, WORK_TICKETS
from services.progress.service import ProgressService
from tests.support.harness import (
    EventBus,
    base_url,
    running,
    service_config,
    unique_prefix,
    wait_until,
)
from tests.support.schemas import assert_matches_schema

pytestmark = pytest.mark.integration


class Api:
    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        headers = {"X-Caller-Sub": "test-admin", "X-Caller-Role": "admin"}
        return requests.request(method, self.url + path, json=body, headers=headers, timeout=15)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = self.call(method, path, body)
        assert response.status_code == status, response.text
        return response.json()

    def refused(self, method: str, path: str, body: Any, status: int) -> dict:
        response = self.call(method, path, body)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] and error["message"]
        return error


@pytest.fixture(scope="module")
def service(broker, database):
    prefix = unique_prefix()
    config = service_config(broker, database, prefix)
    bus = EventBus(broker.bootstrap, prefix)
    with running(ProgressService, config):
        api = Api(base_url(config))
        wait_until(lambda: api.call("GET", "/readyz").ok, message="progress to be ready")
        yield api, bus
    bus.close()


def events(bus: EventBus, topic: str, subject: str) -> list[dict]:
    found = [json.loads(record.value) for record in bus.read_all(topic)]
    return [event for event in found if event["subject"] == subject]


def wait_for_events(bus: EventBus, topic: str, subject: str, count: int) -> list[dict]:
    """The subject's events once `count` are there (a few more would show up as a failure)."""
    found = wait_until(
        lambda: e if len(e := events(bus, topic, subject)) >= count else None,
        message=f"{count} events for {subject} on {topic}",
    )
    for event in found:
        assert_matches_schema(event)
        assert event["source"] == "skillquest/progress"
    return found


def facts(api: Api, fact: str) -> float:
    """The service's domain counter for one fact, from its /metrics."""
    line = f'skillquest_progress_facts_total{{fact="{fact}"}} '
    text = api.call("GET", "/metrics").text
    return float(next(row for row in text.splitlines() if row.startswith(line)).split()[-1])


def types(found: list[dict]) -> list[str]:
    return [event["type"].removesuffix(".v1") for event in found]


def course_body(course_id: str, modules: list[dict], **fields: Any) -> dict:
    return {
        "course_id": course_id,
        "title": f"Course {course_id}",
        "tier": "foundation",
        "dimension": "communication",
        "credit_hours": 1.0,
        "tags": [],
        "modules": modules,
        **fields,
    }


def lesson(module_id: str) -> dict:
    return {"module_id": module_id, "kind": "lesson", "title": f"Lesson {module_id}"}


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def test_a_learning_journey_publishes_every_fact_in_order_with_schema_valid_events(service):
    api, bus = service
    completions_before = facts(api, "course_completed")
    duplicates_before = facts(api, "ticket_duplicate")
    agent = "journey-1"
    base = f"/v1/agents/{agent}"
    api.ok("POST", "/v1/agents", {"agent_id": agent, "name": "Li Na", "team_id": "team-a"}, 201)
    changed = api.ok("PATCH", base, {"team_id": "team-b", "tier": "advanced"})
    assert (changed["team_id"], changed["tier"], changed["revision"]) == ("team-b", "advanced", 2)
    listed = api.ok("GET", "/v1/agents?team_id=team-b")
    assert agent in [a["agent_id"] for a in listed["agents"]]

    modules = [
        lesson("l1"),
        {"module_id": "q1", "kind": "quiz", "title": "Quiz"},
        {"module_id": "r1", "kind": "roleplay", "title": "Angry caller", "pass_score": 70},
        {"module_id": "p1", "kind": "practice", "title": "Live calls"},
    ]
    course = "journey-course"
    created = api.ok(
        "POST",
        "/v1/courses",
        course_body(course, modules, tier="advanced", credit_hours=2.5, tags=["coaching"]),
        201,
    )
    assert created["published"] is True
    assert [m["pass_score"] for m in created["modules"]] == [None, 80, 70, None]

    api.ok("POST", f"{base}/enrollments", {"course_id": course}, 201)
    api.ok("POST", f"{base}/courses/{course}/modules/l1/complete")
    api.ok("POST", f"{base}/courses/{course}/modules/p1/complete", {})
    attempts = f"{base}/courses/{course}/modules/q1/attempts"
    failed = api.ok("POST", attempts, {"score": 60}, 201)
    passed = api.ok("POST", attempts, {"score": 80}, 201)  # exactly the pass score
    again = api.ok("POST", attempts, {"score": 95}, 201)  # after the pass: still graded
    assert (failed["attempt"], failed["passed"], failed["module_completed"]) == (1, False, False)
    assert (passed["attempt"], passed["passed"], passed["module_completed"]) == (2, True, True)
    assert (again["attempt"], again["passed"], again["module_completed"]) == (3, True, False)
    last = api.ok("POST", f"{base}/courses/{course}/modules/r1/attempts", {"score": 70}, 201)
    assert last["course_completed"] is True
    feedback = api.ok(
        "POST", f"{base}/courses/{course}/feedback", {"rating": 5, "comment": "useful"}, 201
    )
    assert feedback["rating"] == 5

    progress = api.ok("GET", f"{base}/courses")["courses"]
    assert len(progress) == 1
    view = progress[0]
    assert view["status"] == "completed"
    assert (view["modules_done"], view["modules_total"]) == (4, 4)
    assert view["completed_at"] == last["occurred_at"]
    assert view["mean_best_score"] == 82.5  # best of q1 (95) and r1 (70)
    by_id = {m["module_id"]: m for m in view["modules"]}
    assert [a["attempt"] for a in by_id["q1"]["attempts"]] == [1, 2, 3]
    assert (by_id["q1"]["best_score"], by_id["r1"]["best_score"]) == (95, 70)
    assert by_id["l1"]["completed"] and by_id["l1"]["attempts"] == []
    assert view["feedback"]["comment"] == "useful"
    assert api.ok("GET", f"{base}/courses/{course}") == view

    ticket = {"ticket_id": "T-journey", "agent_id": agent, "qa_score": 96, "csat": 5}
    ticket["resolved_at"] = last["occurred_at"]  # after the move to team-b
    first = api.ok("POST", "/v1/tickets", ticket, 202)
    resent = api.ok("POST", "/v1/tickets", ticket, 200)
    assert resent["duplicate"] is True and resent["event_id"] == first["event_id"]
    assert first["agent"] == {"agent_id": agent, "team_id": "team-b", "tier": "advanced"}

    learning = wait_for_events(bus, LEARNING_PROGRESS, agent, 11)
    assert types(learning) == [
        "learning.course.enrolled",
        "learning.module.completed",  # l1
        "learning.module.completed",  # p1
        "learning.assessment.graded",  # q1 #1 failed
        "learning.assessment.graded",  # q1 #2 passed
        "learning.module.completed",  # q1
        "learning.assessment.graded",  # q1 #3
        "learning.assessment.graded",  # r1 #1
        "learning.module.completed",  # r1
        "learning.course.completed",
        "learning.feedback.submitted",
    ]
    snapshot = {"agent_id": agent, "team_id": "team-b", "tier": "advanced"}
    assert all(event["data"]["agent"] == snapshot for event in learning)
    graded = [e["data"] for e in learning if e["type"] == "learning.assessment.graded.v1"]
    assert [(g["module_id"], g["attempt"], g["score"], g["passed"]) for g in graded] == [
        ("q1", 1, 60, False),
        ("q1", 2, 80, True),
        ("q1", 3, 95, True),
        ("r1", 1, 70, True),
    ]
    completed = learning[9]
    assert completed["time"] == last["occurred_at"]
    assert completed["data"] == {
        "agent": snapshot,
        "course_id": course,
        "course_tier": "advanced",
        "dimension": "communication",
        "credit_hours": 2.5,
        "tags": ["coaching"],
        "mean_best_score": 82.5,
    }
    assert learning[5]["data"]["score"] == 80 and learning[1]["data"]["score"] is None

    people = wait_for_events(bus, PEOPLE_AGENTS, agent, 2)
    assert types(people) == ["people.agent.registered", "people.agent.updated"]
    assert sorted(people[1]["data"]["changed"]) == ["team_id", "tier"]
    catalog = wait_for_events(bus, LEARNING_CATALOG, course, 1)
    assert catalog[0]["data"]["revision"] == 1 and len(catalog[0]["data"]["modules"]) == 4
    tickets = wait_for_events(bus, WORK_TICKETS, agent, 1)
    assert tickets[0]["id"] == first["event_id"]
    assert tickets[0]["time"] == ticket["resolved_at"]

    assert facts(api, "course_completed") == completions_before + 1
    assert facts(api, "ticket_duplicate") == duplicates_before + 1


def test_backfilled_history_carries_its_own_times_and_the_team_of_that_time(service):
    api, bus = service
    agent = "backfill-1"
    base = f"/v1/agents/{agent}"
    day0 = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)

    def day(n: int) -> str:
        return iso(day0 + timedelta(days=n))

    api.ok(
        "POST",
        "/v1/agents",
        {"agent_id": agent, "name": "Wang", "team_id": "team-old", "occurred_at": day(0)},
        201,
    )
    moved = api.ok("PATCH", base, {"team_id": "team-new", "occurred_at": day(10)})
    assert [(p["effective_at"], p["team_id"]) for p in moved["history"]] == [
        (day(0), "team-old"),
        (day(10), "team-new"),
    ]
    course = "backfill-course"
    quiz = {"module_id": "q1", "kind": "quiz", "title": "Quiz"}
    api.ok("POST", "/v1/courses", course_body(course, [lesson("l1"), quiz]), 201)
    api.ok("POST", f"{base}/enrollments", {"course_id": course, "occurred_at": day(5)}, 201)
    api.ok("POST", f"{base}/courses/{course}/modules/l1/complete", {"occurred_at": day(6)})
    future = iso(datetime.now(UTC) + timedelta(hours=1))
    error = api.refused(
        "POST",
        f"{base}/courses/{course}/modules/q1/attempts",
        {"score": 90, "occurred_at": future},
        400,
    )
    assert "future" in error["message"]
    api.ok(
        "POST",
        f"{base}/courses/{course}/modules/q1/attempts",
        {"score": 90, "occurred_at": day(12)},
        201,
    )
    for ticket_id, resolved in [("T-old", day(3)), ("T-new", day(11))]:
        body = {"ticket_id": ticket_id, "agent_id": agent, "qa_score": 91, "csat": 4}
        api.ok("POST", "/v1/tickets", {**body, "resolved_at": resolved}, 202)

    learning = wait_for_events(bus, LEARNING_PROGRESS, agent, 5)
    teams = [
        (e["type"].removesuffix(".v1"), e["time"][:10], e["data"]["agent"]["team_id"])
        for e in learning
    ]
    assert teams == [
        ("learning.course.enrolled", day(5)[:10], "team-old"),
        ("learning.module.completed", day(6)[:10], "team-old"),
        ("learning.assessment.graded", day(12)[:10], "team-new"),
        ("learning.module.completed", day(12)[:10], "team-new"),
        ("learning.course.completed", day(12)[:10], "team-new"),
    ]
    assert learning[4]["time"] == learning[3]["time"]  # completion at the finishing module's time
    tickets = wait_for_events(bus, WORK_TICKETS, agent, 2)
    assert [(e["data"]["ticket_id"], e["data"]["agent"]["team_id"]) for e in tickets] == [
        ("T-old", "team-old"),
        ("T-new", "team-new"),
    ]
    people = wait_for_events(bus, PEOPLE_AGENTS, agent, 2)
    assert [e["time"][:10] for e in people] == [day(0)[:10], day(10)[:10]]
    assert api.ok("GET", base)["team_id"] == "team-new"


def test_bad_input_and_conflicts_are_clear_4xx_that_change_and_publish_nothing(service):
    api, bus = service
    agent = "refused-1"
    base = f"/v1/agents/{agent}"
    course, draft = "refused-course", "refused-draft"
    quiz = {"module_id": "q1", "kind": "quiz", "title": "Quiz"}
    api.ok("POST", "/v1/agents", {"agent_id": agent, "name": "Zhao", "team_id": "team-r"}, 201)
    api.ok("POST", "/v1/courses", course_body(course, [lesson("l1"), quiz]), 201)
    api.ok("POST", "/v1/courses", course_body(draft, [lesson("l1")], published=False), 201)

    api.refused("POST", "/v1/agents", {"agent_id": agent, "name": "Z", "team_id": "t"}, 409)
    api.refused("POST", "/v1/agents/nobody/enrollments", {"course_id": course}, 404)
    api.refused("POST", f"{base}/enrollments", {"course_id": "no-such-course"}, 404)
    api.refused("POST", f"{base}/enrollments", {"course_id": draft}, 422)
    not_enrolled = api.refused("POST", f"{base}/courses/{course}/modules/l1/complete", None, 422)
    assert "enrol" in not_enrolled["message"]
    api.ok("POST", f"{base}/enrollments", {"course_id": course}, 201)
    api.refused("POST", f"{base}/enrollments", {"course_id": course}, 409)

    modules = f"{base}/courses/{course}/modules"
    quiz_complete = api.refused("POST", f"{modules}/q1/complete", None, 422)
    assert "attempts" in quiz_complete["message"]
    api.refused("POST", f"{modules}/l1/attempts", {"score": 90}, 422)
    for score in (101, -1, "ninety"):
        error = api.refused("POST", f"{modules}/q1/attempts", {"score": score}, 400)
        assert error["details"][0]["field"] == "score"
    api.refused("POST", f"{modules}/nope/complete", None, 404)
    api.refused("POST", f"{modules}/q1/attempts", {"score": 90, "extra": 1}, 400)
    api.refused("POST", f"{base}/courses/{course}/feedback", {"rating": 5}, 422)
    api.refused("POST", f"{base}/courses/{course}/feedback", {"rating": 9}, 400)
    future = iso(datetime.now(UTC) + timedelta(days=1))
    api.refused("POST", f"{modules}/l1/complete", {"occurred_at": future}, 400)
    past = iso(datetime.now(UTC) - timedelta(days=30))
    api.refused("POST", f"{modules}/l1/complete", {"occurred_at": past}, 422)  # before enrolling

    api.ok("POST", f"{modules}/l1/complete")
    api.refused("POST", f"{modules}/l1/complete", None, 409)

    ticket = {"ticket_id": "T-refused", "agent_id": "nobody", "qa_score": 90, "csat": 5}
    ticket["resolved_at"] = iso(datetime.now(UTC) - timedelta(hours=1))
    api.refused("POST", "/v1/tickets", ticket, 404)
    api.refused("POST", "/v1/tickets", {**ticket, "agent_id": agent, "resolved_at": future}, 400)
    api.ok("POST", "/v1/tickets", {**ticket, "agent_id": agent}, 202)
    api.refused("POST", "/v1/tickets", {**ticket, "agent_id": agent, "csat": 4}, 409)

    bad_hours = api.refused(
        "POST", "/v1/courses", course_body("bad-c", [lesson("x")], credit_hours=0.75), 400
    )
    assert bad_hours["details"][0]["field"] == "credit_hours"
    api.refused("POST", "/v1/courses", course_body("bad-c", [lesson("x"), lesson("x")]), 400)
    api.refused("POST", "/v1/courses", course_body("bad id", [lesson("x")]), 400)
    api.refused("POST", "/v1/courses", course_body(course, [lesson("x")]), 409)
    api.refused("GET", "/v1/courses/bad-c", None, 404)
    api.refused("PATCH", f"{base}", {}, 400)
    api.refused("GET", "/v1/agents/nobody", None, 404)

    # A last accepted call on the same key: once its event is on Kafka, everything committed
    # before it is too (one relay, commit order), so the counts below are final.
    api.ok("POST", f"{modules}/q1/attempts", {"score": 50}, 201)
    view = api.ok("GET", f"{base}/courses/{course}")
    assert view["modules_done"] == 1 and view["status"] == "in_progress"
    assert [len(m["attempts"]) for m in view["modules"]] == [0, 1]
    learning = wait_for_events(bus, LEARNING_PROGRESS, agent, 3)
    assert types(learning) == [
        "learning.course.enrolled",
        "learning.module.completed",
        "learning.assessment.graded",
    ]
    assert len(wait_for_events(bus, WORK_TICKETS, agent, 1)) == 1
    assert events(bus, LEARNING_CATALOG, "bad-c") == []


def test_catalogue_publishing_updates_filters_and_paging(service):
    api, bus = service
    tag = "catalogue-test"
    draft = "cat-draft"
    api.ok(
        "POST", "/v1/courses", course_body(draft, [lesson("l1")], tags=[tag], published=False), 201
    )
    for n, (tier, dimension) in enumerate(
        [("foundation", "technology"), ("advanced", "technology"), ("advanced", "problem_solving")]
    ):
        body = course_body(f"cat-{n}", [lesson("l1")], tier=tier, dimension=dimension, tags=[tag])
        api.ok("POST", "/v1/courses", body, 201)

    visible = api.ok("GET", f"/v1/courses?tag={tag}")
    assert [c["course_id"] for c in visible["courses"]] == ["cat-0", "cat-1", "cat-2"]
    assert api.ok("GET", f"/v1/courses?tag={tag}&published=false")["total"] == 1
    assert api.ok("GET", f"/v1/courses?tag={tag}&published=any")["total"] == 4
    advanced = api.ok("GET", f"/v1/courses?tag={tag}&tier=advanced&dimension=technology")
    assert [c["course_id"] for c in advanced["courses"]] == ["cat-1"]
    page = api.ok("GET", f"/v1/courses?tag={tag}&limit=2&offset=2")
    assert (page["total"], [c["course_id"] for c in page["courses"]]) == (3, ["cat-2"])
    api.refused("GET", "/v1/courses?limit=1000", None, 400)
    api.refused("GET", "/v1/courses?tier=expert", None, 400)

    published = api.ok("POST", f"/v1/courses/{draft}/publish")
    assert (published["published"], published["revision"]) == (True, 2)
    assert api.ok("POST", f"/v1/courses/{draft}/publish")["revision"] == 2  # a retry: no-op
    updated = api.ok("PATCH", f"/v1/courses/{draft}", {"title": "Renamed", "credit_hours": 3})
    assert (updated["title"], updated["credit_hours"], updated["revision"]) == ("Renamed", 3.0, 3)
    assert api.ok("PATCH", f"/v1/courses/{draft}", {"title": "Renamed"})["revision"] == 3
    api.refused(
        "PATCH",
        f"/v1/courses/{draft}",
        {"modules": [{"module_id": "x", "kind": "exam", "title": "X"}]},
        400,
    )

    catalog = wait_for_events(bus, LEARNING_CATALOG, draft, 2)
    assert types(catalog) == ["learning.course.published", "learning.course.updated"]
    assert [e["data"]["revision"] for e in catalog] == [2, 3]
    assert catalog[1]["data"]["title"] == "Renamed" and catalog[1]["data"]["credit_hours"] == 3.0


def test_an_agents_courses_page_by_page_with_the_total_of_every_page(service):
    api, _ = service
    agent = "paging-agent"
    api.ok("POST", "/v1/agents", {"agent_id": agent, "name": "Pei", "team_id": "team-p"}, 201)
    courses = [f"paging-{n}" for n in range(3)]
    for course in courses:
        api.ok("POST", "/v1/courses", course_body(course, [lesson("l1")]), 201)
        api.ok("POST", f"/v1/agents/{agent}/enrollments", {"course_id": course}, 201)
    api.ok("POST", f"/v1/agents/{agent}/courses/{courses[0]}/modules/l1/complete")
    base = f"/v1/agents/{agent}/courses"

    def page(query: str) -> tuple[int, list[str]]:
        found = api.ok("GET", f"{base}?{query}")
        return found["total"], [c["course_id"] for c in found["courses"]]

    newest_first = courses[::-1]
    # A full page counts; a page that ends the list (or a page past its end) says the same.
    assert page("limit=2") == (3, newest_first[:2])
    assert page("limit=2&offset=2") == (3, newest_first[2:])
    assert page("limit=5") == (3, newest_first)
    assert page("limit=2&offset=5") == (3, [])
    assert page("status=in_progress&limit=100") == (2, newest_first[:2])
    assert page("status=completed&limit=1") == (1, [courses[0]])

    # The roster entry and a page of courses in one call (the gateway's profile).
    summary = api.ok("GET", f"/v1/agents/{agent}/summary?status=in_progress&limit=100")
    assert summary["agent"]["agent_id"] == agent and summary["agent"]["name"] == "Pei"
    in_progress = summary["courses"]
    assert in_progress["total"] == 2
    assert [c["course_id"] for c in in_progress["courses"]] == newest_first[:2]
    api.refused("GET", "/v1/agents/nobody-here/summary", None, 404)
    api.refused("GET", f"/v1/agents/{agent}/summary?limit=0", None, 400)


def test_completing_the_last_two_modules_at_once_completes_the_course_exactly_once(service):
    api, bus = service
    course = "race-course"
    api.ok("POST", "/v1/courses", course_body(course, [lesson("m1"), lesson("m2")]), 201)
    agents = [f"racer-{n}" for n in range(4)]
    for agent in agents:
        api.ok("POST", "/v1/agents", {"agent_id": agent, "name": agent, "team_id": "team-r"}, 201)
        api.ok("POST", f"/v1/agents/{agent}/enrollments", {"course_id": course}, 201)

    pool = eventlet.GreenPool()
    calls = [(agent, module) for agent in agents for module in ("m1", "m2")]
    responses = list(
        pool.imap(
            lambda call: api.call(
                "POST", f"/v1/agents/{call[0]}/courses/{course}/modules/{call[1]}/complete"
            ),
            calls,
        )
    )
    assert [r.status_code for r in responses] == [200] * len(calls)

    for agent in agents:
        view = api.ok("GET", f"/v1/agents/{agent}/courses/{course}")
        assert view["status"] == "completed"
        # Feedback is committed after the completion on the same key: once it is on Kafka, a
        # second completion, had there been one, would be there too.
        api.ok("POST", f"/v1/agents/{agent}/courses/{course}/feedback", {"rating": 4}, 201)
    for agent in agents:
        learning = wait_for_events(bus, LEARNING_PROGRESS, agent, 5)
        assert types(learning) == [
            "learning.course.enrolled",
            "learning.module.completed",
            "learning.module.completed",
            "learning.course.completed",
            "learning.feedback.submitted",
        ]
        completed = learning[3]
        finished = max(learning[1]["time"], learning[2]["time"], key=datetime.fromisoformat)
        assert completed["time"] == finished
        view = api.ok("GET", f"/v1/agents/{agent}/courses/{course}")
        assert view["completed_at"] == completed["time"]
