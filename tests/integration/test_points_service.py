"""The points service against the real broker and database: awards, the daily cap, exact
balances under duplicate and out-of-order delivery, admin adjustments and reversals, the
rule table, the events it publishes. One running service is shared by the module's tests;
each test uses its own agents."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import MongoClient

from contracts.topics import GAMIFICATION_BADGES, LEARNING_PROGRESS, WORK_TICKETS
from services.points.service import PointsService
from services.points.store import LEDGER
from tests.integration.points_events import PointsClient, published_points_events
from tests.support.events import (
    agent_registered,
    assessment_graded,
    badge_awarded,
    course_completed,
    module_completed,
    snapshot,
    ticket_resolved,
)
from tests.support.harness import (
    EventBus,
    events_consumed,
    running,
    service_config,
    unique_prefix,
    wait_until,
)

pytestmark = pytest.mark.integration

#: 05:00 UTC is 13:00 in Shanghai; 16:00 UTC is local midnight.
DAY = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)


def new_agent(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def env(broker, database):
    prefix = unique_prefix()
    config = service_config(broker, database, prefix)
    bus = EventBus(broker.bootstrap, prefix)
    with running(PointsService, config) as container:
        yield container, PointsClient(config), bus
    bus.close()


@pytest.fixture
def client(env) -> PointsClient:
    return env[1]


@pytest.fixture
def bus(env) -> EventBus:
    return env[2]


def test_each_rule_awards_and_publishes_what_the_ledger_holds(client, bus):
    agent_id = new_agent("rules")
    agent = snapshot(agent_id, team_id="team-7", tier="advanced")
    events = [
        module_completed(agent, DAY),  # 10
        assessment_graded(agent, DAY + timedelta(minutes=1), score=100, attempt=1),  # 35
        assessment_graded(agent, DAY + timedelta(minutes=2), score=50, attempt=1),  # failed: 0
        course_completed(agent, DAY + timedelta(minutes=3), course_tier="advanced"),  # 75
        ticket_resolved(agent, DAY + timedelta(minutes=4), "T-1", qa_score=89),  # below 90: 0
        ticket_resolved(agent, DAY + timedelta(minutes=5), "T-2", qa_score=90),  # 5
        badge_awarded(agent, DAY + timedelta(minutes=6), bonus=50),  # 50
    ]
    for event in events:
        bus.publish(event)

    wait_until(lambda: client.balance(agent_id) == 175, message="all awards")
    page = client.points(agent_id)
    assert page["agent_id"] == agent_id and page["next_cursor"] is None
    history = page["history"]
    assert [(e["rule_id"], e["delta"]) for e in history] == [
        ("badge-bonus", 50),
        ("ticket-quality", 5),
        ("course-completed", 75),
        ("assessment-passed", 35),
        ("module-completed", 10),
    ]  # newest event time first
    # Topics are consumed concurrently: each entry's balance is a running total of the
    # entries in the order they were recorded, which may differ from event time order.
    recorded = sorted(history, key=lambda e: e["balance"])
    running = 0
    for entry in recorded:
        running += entry["delta"]
        assert entry["balance"] == running
    by_rule = {e["rule_id"]: e for e in history}
    assert by_rule["assessment-passed"]["details"]["bonuses"] == {
        "perfect_score": 10,
        "first_attempt": 5,
    }
    assert by_rule["course-completed"]["details"]["multiplier"] == "1.5"
    assert all(e["rule_version"] == 1 for e in history)
    assert {e["source_event_id"] for e in history} == {events[i].id for i in (0, 1, 3, 5, 6)}

    published = wait_until(
        lambda: (
            len(published_points_events(bus, agent_id)) == 5
            and published_points_events(bus, agent_id)
        ),
        message="the points events",
    )
    source_times = {event.id: event.time for event in events}
    for key, event in published:
        data = event["data"]
        assert key == agent_id and event["subject"] == agent_id
        assert event["type"] == "gamification.points.awarded.v1"
        assert data["team_id"] == "team-7" and data["tier"] == "advanced"
        occurred_at = datetime.fromisoformat(data["occurred_at"])
        assert occurred_at == source_times[data["source_event_id"]]
        assert event["time"] == data["occurred_at"]
    running = 0
    for _, event in published:  # in the order the ledger recorded them
        running += event["data"]["delta"]
        assert event["data"]["balance"] == running
    assert running == 175
    assert sorted(event["data"]["delta"] for _, event in published) == [5, 10, 35, 50, 75]


def test_the_daily_cap_counts_per_local_day_and_awards_what_is_left(client, bus):
    agent_id = new_agent("cap")
    agent = snapshot(agent_id)
    before_midnight = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # 23:00 local
    for i in range(9):  # 45 points
        bus.publish(ticket_resolved(agent, before_midnight + timedelta(seconds=i), f"A{i}"))
    wait_until(lambda: client.balance(agent_id) == 45, message="45 of the cap")

    # 45 used: the next ticket fills the cap, the one after earns and records nothing.
    bus.publish(ticket_resolved(agent, before_midnight + timedelta(minutes=30), "A9"))  # 5 -> 50
    bus.publish(ticket_resolved(agent, before_midnight + timedelta(minutes=59), "A10"))  # capped
    midnight = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)  # 00:00 local: a new day
    bus.publish(ticket_resolved(agent, midnight, "B0"))  # 5 on the next day
    wait_until(lambda: client.balance(agent_id) == 55, message="next day's first ticket")
    history = client.full_history(agent_id)
    assert len(history) == 11  # the capped ticket recorded nothing
    assert sum(e["delta"] for e in history if e["occurred_at"] < "2026-11-23T16") == 50


def test_duplicate_and_out_of_order_delivery_give_the_same_balances(client, bus):
    """Two agents receive the same history: one in order, once; the other shuffled, with
    every event delivered twice. The cap decides which tickets pay, but not how much."""
    in_order, shuffled = new_agent("ordered"), new_agent("shuffled")

    def history_for(agent_id: str):
        agent = snapshot(agent_id, tier="leadership")
        events = [module_completed(agent, DAY + timedelta(minutes=m), f"m{m}") for m in range(3)]
        events.append(assessment_graded(agent, DAY + timedelta(minutes=5), 100, 2))
        events.append(course_completed(agent, DAY + timedelta(minutes=6), "leadership"))
        # 14 good tickets on one local day (cap 50 = 10 of them) and 3 on the next.
        events += [
            ticket_resolved(agent, DAY + timedelta(minutes=10 + i), f"T{i}") for i in range(14)
        ]
        events += [
            ticket_resolved(agent, DAY + timedelta(hours=12, minutes=i), f"N{i}") for i in range(3)
        ]
        events.append(badge_awarded(agent, DAY + timedelta(minutes=30), 20, "course-finisher"))
        return events

    expected = 30 + 30 + 100 + 50 + 15 + 20
    for event in history_for(in_order):
        bus.publish(event)
    redelivered = history_for(shuffled) * 2
    random.Random(7).shuffle(redelivered)
    for event in redelivered:
        bus.publish(event)

    wait_until(lambda: client.balance(in_order) == expected, message="in-order balance")
    wait_until(lambda: client.balance(shuffled) == expected, message="shuffled balance")
    # One late event per topic: once they are in, every duplicate before them was seen.
    late = snapshot(shuffled, tier="leadership")
    markers = [
        module_completed(late, DAY + timedelta(days=3), "m-last"),
        ticket_resolved(late, DAY + timedelta(days=3), "T-last"),
        badge_awarded(late, DAY + timedelta(days=3), 1, "marker"),
    ]
    for marker in markers:
        bus.publish(marker)
    wait_until(lambda: client.balance(shuffled) == expected + 16, message="the markers")
    marker_ids = {marker.id for marker in markers}

    def totals(agent_id):
        sums: Counter = Counter()
        for entry in client.full_history(agent_id):
            if entry["source_event_id"] not in marker_ids:
                sums[entry["rule_id"]] += entry["delta"]
        return sums

    assert totals(in_order) == totals(shuffled)
    assert totals(in_order)["ticket-quality"] == 65  # 50 (capped day) + 15
    source_ids = [e["source_event_id"] for e in client.full_history(shuffled)]
    assert len(source_ids) == len(set(source_ids))


def test_adjustments_and_reversals_never_take_a_balance_below_zero(client, bus):
    newcomer = new_agent("new")
    bus.publish(agent_registered(snapshot(newcomer, team_id="team-9", tier="advanced"), DAY))
    path = f"/v1/agents/{newcomer}/points/adjustments"

    # Known from the roster only, no activity yet: an adjustment still works.
    response = wait_until(
        lambda: (
            (r := client.post(path, {"delta": 20, "reason": "welcome"})).status_code == 201 and r
        ),
        message="the roster event",
    )
    entry = response.json()
    assert (entry["delta"], entry["balance"], entry["rule_id"]) == (20, 20, "adjustment")
    assert (entry["team_id"], entry["tier"]) == ("team-9", "advanced")
    assert entry["source_event_id"] == entry["award_id"]

    refused = client.post(path, {"delta": -21, "reason": "too much"}, **{"X-Caller-Sub": "ops"})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "rule_violation"
    assert client.balance(newcomer) == 20
    assert len(client.points(newcomer)["history"]) == 1

    taken = client.post(path, {"delta": -20, "reason": "correction"}, **{"X-Caller-Sub": "ops"})
    assert taken.status_code == 201 and taken.json()["balance"] == 0
    assert taken.json()["recorded_by"] == "ops"

    for body, field in [
        ({"delta": 0, "reason": "nothing"}, None),
        ({"delta": 5}, "reason"),
        ({"delta": 5, "reason": "   "}, "reason"),
        ({"delta": 1.5, "reason": "half"}, "delta"),
        ({"delta": 5, "reason": "x", "extra": 1}, "extra"),
    ]:
        response = client.post(path, body)
        assert response.status_code == 400, body
        if field:
            assert field in {d["field"] for d in response.json()["error"]["details"]}
    unknown = client.post(
        f"/v1/agents/{new_agent('ghost')}/points/adjustments", {"delta": 5, "reason": "x"}
    )
    assert unknown.status_code == 404

    # Reversal: an award is undone once, in the team, tier and time it counted in.
    earner = new_agent("earner")
    agent = snapshot(earner, team_id="team-3")
    bus.publish(badge_awarded(agent, DAY, 50))
    bus.publish(module_completed(agent, DAY + timedelta(minutes=1)))
    wait_until(lambda: client.balance(earner) == 60, message="the awards")
    badge_award = next(e for e in client.points(earner)["history"] if e["rule_id"] == "badge-bonus")
    reversal_path = f"/v1/agents/{earner}/points/awards/{badge_award['award_id']}/reversal"
    reversed_ = client.post(reversal_path, {"reason": "badge revoked"})
    assert reversed_.status_code == 201
    undo = reversed_.json()
    assert (undo["delta"], undo["balance"], undo["rule_id"]) == (-50, 10, "reversal")
    assert undo["reversed_award_id"] == badge_award["award_id"]
    assert undo["occurred_at"] == badge_award["occurred_at"]
    assert client.post(reversal_path, {"reason": "again"}).status_code == 409
    history = {e["award_id"]: e for e in client.points(earner)["history"]}
    assert history[badge_award["award_id"]]["reversed_by"] == undo["award_id"]
    one = client.get(f"/v1/agents/{earner}/points/awards/{badge_award['award_id']}")
    assert one.status_code == 200
    assert (one.json()["delta"], one.json()["reversed_by"]) == (50, undo["award_id"])
    assert client.get(f"/v1/agents/{earner}/points/awards/nope").status_code == 404

    # A reversal that would go below zero is refused and changes nothing.
    module_award = next(
        e for e in client.points(earner)["history"] if e["rule_id"] == "module-completed"
    )
    assert (
        client.post(
            f"/v1/agents/{earner}/points/adjustments", {"delta": -5, "reason": "spent"}
        ).status_code
        == 201
    )
    too_far = client.post(
        f"/v1/agents/{earner}/points/awards/{module_award['award_id']}/reversal",
        {"reason": "mistake"},
    )
    assert too_far.status_code == 422
    assert client.balance(earner) == 5
    missing = client.post(f"/v1/agents/{earner}/points/awards/nope/reversal", {"reason": "x"})
    assert missing.status_code == 404

    published = wait_until(
        lambda: (
            len(published_points_events(bus, earner)) == 4 and published_points_events(bus, earner)
        ),
        message="the earner's events",
    )
    kinds = [(event["type"].split(".")[2], event["data"]["delta"]) for _, event in published]
    # The two awards come from two topics (consumed concurrently): either order.
    assert sorted(kinds[:2]) == [("awarded", 10), ("awarded", 50)]
    assert kinds[2:] == [("reversed", -50), ("awarded", -5)]
    reversal_event = published[2][1]["data"]
    assert reversal_event["reversed_award_id"] == badge_award["award_id"]
    assert reversal_event["team_id"] == "team-3" and reversal_event["balance"] == 10
    newcomer_events = wait_until(
        lambda: (
            len(published_points_events(bus, newcomer)) == 2
            and published_points_events(bus, newcomer)
        ),
        message="the newcomer's events",
    )
    assert [event["data"]["balance"] for _, event in newcomer_events] == [20, 0]


def test_history_pages_are_stable_while_awards_arrive(client, bus):
    agent_id = new_agent("pages")
    agent = snapshot(agent_id)
    for i in range(5):
        bus.publish(module_completed(agent, DAY + timedelta(minutes=i), f"m{i}"))
    wait_until(lambda: client.balance(agent_id) == 50, message="five modules")

    first = client.points(agent_id, limit=2)
    # Newer and older awards land while the client pages.
    bus.publish(module_completed(agent, DAY + timedelta(hours=1), "m-new"))
    bus.publish(module_completed(agent, DAY - timedelta(hours=1), "m-old"))
    wait_until(lambda: client.balance(agent_id) == 70, message="two more")
    second = client.points(agent_id, limit=2, cursor=first["next_cursor"])
    third = client.points(agent_id, limit=2, cursor=second["next_cursor"])
    seen = [e["reason"] for page in (first, second, third) for e in page["history"]]
    assert seen[:5] == [f"module m{i} of course c-1 completed" for i in (4, 3, 2, 1, 0)]
    assert seen[5:] == ["module m-old of course c-1 completed"]
    assert third["next_cursor"] is None

    # A reversal comes just before its award: on the same page, or the page before.
    award = first["history"][0]
    reversal_path = f"/v1/agents/{agent_id}/points/awards/{award['award_id']}/reversal"
    undo = client.post(reversal_path, {"reason": "module retracted"}).json()
    for size in (1, 2, 3):  # m-new, the reversal, m4, ...: apart, apart, on one first page
        paged, cursor = [], None
        while True:
            page = client.points(agent_id, limit=size, cursor=cursor)
            paged += page["history"]
            if (cursor := page["next_cursor"]) is None:
                break
        ids = [e["award_id"] for e in paged]
        assert ids[1:3] == [undo["award_id"], award["award_id"]], size
        assert [e["award_id"] for e in paged if e["reversed_by"]] == [award["award_id"]], size
        assert paged[2]["reversed_by"] == undo["award_id"]

    bad = client.get(f"/v1/agents/{agent_id}/points?cursor=not-a-cursor")
    assert bad.status_code == 400
    assert client.get(f"/v1/agents/{agent_id}/points?limit=500").status_code == 400
    empty = client.points(new_agent("nobody"))
    assert (empty["balance"], empty["history"], empty["next_cursor"]) == (0, [], None)


def test_a_rule_change_applies_to_future_awards_only(client, bus, env):
    agent_id = new_agent("rulechange")
    agent = snapshot(agent_id)
    bus.publish(module_completed(agent, DAY, "before"))
    wait_until(lambda: client.balance(agent_id) == 10, message="award at version 1")

    rules = client.get("/v1/points/rules").json()["rules"]
    assert [r["rule_id"] for r in rules] == [
        "module-completed",
        "assessment-passed",
        "course-completed",
        "ticket-quality",
        "badge-bonus",
    ]
    current = next(r for r in rules if r["rule_id"] == "module-completed")
    bad = client.put("/v1/points/rules/module-completed", {"points": 15, "min_qa_score": 50})
    assert bad.status_code == 400
    assert bad.json()["error"]["details"][0]["field"] == "min_qa_score"
    assert client.put("/v1/points/rules/login-bonus", {"points": 1}).status_code == 404
    try:
        changed = client.put(
            "/v1/points/rules/module-completed",
            {"points": 15, "expected_version": current["version"]},
        )
        assert changed.status_code == 200
        assert changed.json()["version"] == current["version"] + 1
        stale = client.put(
            "/v1/points/rules/module-completed",
            {"points": 20, "expected_version": current["version"]},
        )
        assert stale.status_code == 409

        bus.publish(module_completed(agent, DAY + timedelta(minutes=1), "after"))
        wait_until(lambda: client.balance(agent_id) == 25, message="award at version 2")
        history = client.points(agent_id)["history"]
        assert [(e["delta"], e["rule_version"]) for e in history] == [
            (15, current["version"] + 1),
            (10, current["version"]),
        ]
        versions = client.get("/v1/points/rules/module-completed/versions").json()["versions"]
        assert [v["definition"]["points"] for v in versions[:2]] == [15, 10]
    finally:
        client.put("/v1/points/rules/module-completed", {"points": 10})

    metrics = client.get("/metrics").text
    assert 'skillquest_points_awarded_total{rule="module-completed"}' in metrics
    assert 'skillquest_point_awards_total{rule="adjustment"}' in metrics
    awarded = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('skillquest_points_awarded_total{rule="module-completed"}')
    ]
    assert awarded and awarded[0] >= 25


def test_the_latest_snapshot_by_event_time_files_an_adjustment(client, bus):
    agent_id = new_agent("moved")
    bus.publish(module_completed(snapshot(agent_id, "team-new", "advanced"), DAY, "m-new"))
    # Delivered later but happened earlier (a backfill): it must not win.
    bus.publish(module_completed(snapshot(agent_id, "team-old"), DAY - timedelta(days=3), "m-old"))
    wait_until(lambda: client.balance(agent_id) == 20, message="both awards")
    path = f"/v1/agents/{agent_id}/points/adjustments"
    body = {"delta": 1, "reason": "goodwill gesture"}
    adjusted = client.post(path, body, **{"Idempotency-Key": "req-1"})
    assert adjusted.status_code == 201
    again = client.post(path, body, **{"Idempotency-Key": "req-1"})  # a client retry
    assert again.status_code == 200 and again.json()["award_id"] == adjusted.json()["award_id"]
    assert client.balance(agent_id) == 21
    assert (adjusted.json()["team_id"], adjusted.json()["tier"]) == ("team-new", "advanced")
    # Each award counts in the team the agent had when it happened.
    teams = {e["reason"].split()[1]: e["team_id"] for e in client.points(agent_id)["history"]}
    assert teams == {"m-new": "team-new", "m-old": "team-old", "gesture": "team-new"}


def test_one_entrypoint_awards_from_three_topics_and_counts_each_under_its_own(client, bus):
    agent_id = new_agent("topics")
    agent = snapshot(agent_id)
    events = [
        module_completed(agent, DAY),  # 10
        ticket_resolved(agent, DAY + timedelta(minutes=1), "T-9", qa_score=95),  # 5
        badge_awarded(agent, DAY + timedelta(minutes=2), bonus=20),  # 20
    ]
    before = events_consumed(client.url)
    for event in events:
        bus.publish(event)
    wait_until(lambda: client.balance(agent_id) == 35, message="the three awards")
    expected = {
        (LEARNING_PROGRESS, events[0].type): 1,
        (WORK_TICKETS, events[1].type): 1,
        (GAMIFICATION_BADGES, events[2].type): 1,
    }

    def counted() -> dict[tuple[str, str], int]:
        after = events_consumed(client.url)
        return {key: after[key] - before[key] for key in after if after[key] != before[key]}

    # The consumer counts a batch once its worker hands back the result, which is after
    # the transaction the balance reads: wait for the counts too.
    wait_until(lambda: sum(counted().values()) >= len(events), message="the three counted")
    assert counted() == expected


def test_start_drops_the_ledger_indexes_an_earlier_release_made(broker, database):
    # Earlier releases kept two unique ledger indexes the ids and the account already
    # guarantee: an upgraded database still has them, and each would cost every award.
    prefix = unique_prefix()
    mongo: MongoClient = MongoClient(database.uri)
    ledger = mongo[f"{prefix}skillquest_points".replace(".", "_")][LEDGER]
    ledger.create_index([("source_event_id", 1), ("rule_id", 1)], name="award_key", unique=True)
    ledger.create_index([("agent_id", 1), ("seq", 1)], name="agent_seq", unique=True)
    try:
        with running(PointsService, service_config(broker, database, prefix)):
            assert set(ledger.index_information()) == {"_id_", "history"}
    finally:
        mongo.close()
