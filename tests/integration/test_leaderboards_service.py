"""The leaderboards service against the real broker and database, run as TWO instances of
one deployment (one consumer group, one database): boards from shuffled and repeated point
events, ties, Shanghai week and month boundaries, a team change mid-week, reversal to zero,
neighbours, score count maps that match the entries, rebuild equals live (and repairs
damaged maps), and each period closed exactly once.

The instances are shared by the tests of this module; every test uses its own agents and
its own past weeks, so the tests stay independent."""

from __future__ import annotations

import itertools
import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests
from pymongo import MongoClient

from contracts.events import (
    AgentRegistered,
    AgentUpdated,
    AgentUpdatedData,
    PointsAwarded,
    PointsChangeData,
    PointsReversed,
    PointsReversedData,
)
from contracts.topics import GAMIFICATION_LEADERBOARDS
from services.common.periods import last_instant
from services.leaderboards.boards import PointChange, fold, ranked
from services.leaderboards.rebuild import rebuild_from_config
from services.leaderboards.service import LeaderboardsService
from services.runtime.settings import settings_from_config
from tests.support.count_maps import add_to_maps, counted_from_entries, stored_maps
from tests.support.harness import (
    EventBus,
    base_url,
    running,
    service_config,
    unique_prefix,
    wait_until,
)
from tests.support.standings import delete_entries, put_entry, stored_entries

pytestmark = pytest.mark.integration

TZ = "Asia/Shanghai"
_award_ids = itertools.count()


@pytest.fixture(scope="module")
def stack(broker, database):
    prefix = unique_prefix()
    # Read views for boards of any size: the HTTP answers below come from them once held.
    settings = {
        "close_check_interval_seconds": 0.3,
        "close_grace_seconds": 3,
        "view_min_entries": 0,
    }
    first = service_config(broker, database, prefix, LEADERBOARDS=settings)
    second = service_config(broker, database, prefix, LEADERBOARDS=settings)
    bus = EventBus(broker.bootstrap, prefix)
    client = MongoClient(database.uri, tz_aware=True)
    db = client[settings_from_config(first).database_name("leaderboards")]
    with running(LeaderboardsService, first), running(LeaderboardsService, second):
        yield [base_url(first), base_url(second)], bus, db, first
    bus.close()
    client.close()


@pytest.fixture
def urls(stack):
    return stack[0]


@pytest.fixture
def bus(stack):
    return stack[1]


@pytest.fixture
def db(stack):
    return stack[2]


@pytest.fixture
def config(stack):
    return stack[3]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def award(agent: str, delta: int, at: datetime, team: str = "t1", tier: str = "foundation"):
    data = PointsChangeData(
        agent_id=agent,
        award_id=f"aw{next(_award_ids)}",
        delta=delta,
        rule_id="module-completed",
        source_event_id=str(uuid.uuid4()),
        occurred_at=at,
        team_id=team,
        tier=tier,
        balance=max(delta, 0),
    )
    return PointsAwarded.create(source="skillquest/points", subject=agent, time=at, data=data)


def reversal(of: PointsAwarded) -> PointsReversed:
    data = PointsReversedData(
        **{**of.data.model_dump(), "delta": -of.data.delta, "balance": 0},
        reversed_award_id=of.data.award_id,
    )
    data = data.model_copy(update={"award_id": f"aw{next(_award_ids)}"})
    return PointsReversed.create(
        source="skillquest/points", subject=of.subject, time=of.time, data=data
    )


def registered(agent: str, name: str, team: str, at: datetime) -> AgentRegistered:
    return AgentRegistered.create(
        source="skillquest/progress",
        subject=agent,
        time=at,
        data={"agent_id": agent, "name": name, "team_id": team, "tier": "foundation"},
    )


def get(url: str, path: str, **params) -> requests.Response:
    return requests.get(f"{url}{path}", params=params, timeout=10)


def board(url: str, period: str, **params) -> dict:
    response = get(url, f"/v1/leaderboards/{period}", **params)
    assert response.status_code == 200, response.text
    return response.json()


def scores(url: str, period: str, scope: str = "global") -> list[tuple[int, str, int]]:
    body = board(url, period, scope=scope, limit=100)
    return [(e["rank"], e["agent_id"], e["score"]) for e in body["entries"]]


def mine(rows, agents) -> list:
    """The rows of these agents, re-ranked among themselves (other tests share boards)."""
    return [row[1:] for row in rows if row[1] in agents]


def entries_of(db, agents) -> dict[tuple[str, str], tuple[int, datetime]]:
    return {key: (row.score, row.reached_at) for key, row in stored_entries(db, agents).items()}


def as_change(event) -> PointChange:
    d = event.data
    return PointChange(event.id, d.agent_id, d.delta, d.occurred_at, d.team_id, d.tier)


def ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_ranks_ties_names_neighbours_and_bad_requests(urls, bus):
    a, b = urls
    t = utc(2026, 9, 29, 2)  # Tuesday of 2026-W40, Shanghai
    agents = [f"rk-{i}" for i in range(6)]
    bus.publish(registered("rk-0", "Lin Wei", "red", t))
    events = [
        award("rk-0", 30, t),  # 30 reached first
        award("rk-1", 20, t + timedelta(hours=1)),
        award("rk-1", 10, t + timedelta(hours=2)),  # 30 reached later
        award("rk-2", 30, t),  # 30 at the same instant as rk-0: agent id decides
        award("rk-3", 50, t + timedelta(hours=3)),
        award("rk-4", 5, t),
        award("rk-5", 1, t),
    ]
    for event in events:
        bus.publish(event)
    wait_until(
        lambda: len(mine(scores(a, "2026-W40"), agents)) == 6,
        timeout=40,
        message="six on the board",
    )

    expected = [("rk-3", 50), ("rk-0", 30), ("rk-2", 30), ("rk-1", 30), ("rk-4", 5), ("rk-5", 1)]
    assert mine(scores(a, "2026-W40"), agents) == expected
    assert mine(scores(b, "2026-09"), agents) == expected  # the other instance, same boards
    page = board(a, "2026-W40", limit=2, offset=1)
    assert [e["rank"] for e in page["entries"]] == [2, 3]
    assert page["total"] >= 6 and page["period_kind"] == "weekly"
    top = board(a, "2026-W40", scope="team:t1", limit=1)["entries"][0]
    assert top["agent_id"] == "rk-3"
    named = wait_until(
        lambda: (
            next(e for e in board(a, "2026-W40", limit=100)["entries"] if e["agent_id"] == "rk-0")[
                "name"
            ]
            == "Lin Wei"
            and board(a, "2026-W40", limit=100)
        ),
        message="display name from the roster",
    )
    lin = next(e for e in named["entries"] if e["agent_id"] == "rk-0")
    assert lin["team_id"] == "red"  # the current team, not the one on the award
    # The service holds the roster's names beside the views it holds (names.py).
    wait_until(
        lambda: metric(a, "skillquest_leaderboard_view_names") >= 1,
        message="the names held in memory",
    )

    # around-me, in the middle and at both ends of the board
    middle = get(b, "/v1/leaderboards/2026-W40/agents/rk-2", neighbors=1).json()
    assert (middle["rank"], middle["score"]) == (3, 30)
    assert [e["agent_id"] for e in middle["above"]] == ["rk-0"]
    assert [e["agent_id"] for e in middle["below"]] == ["rk-1"]
    assert [e["rank"] for e in middle["above"] + middle["below"]] == [2, 4]
    first = get(a, "/v1/leaderboards/2026-W40/agents/rk-3", neighbors=10, scope="tier:foundation")
    assert first.json()["rank"] == 1 and first.json()["above"] == []
    assert [e["agent_id"] for e in first.json()["below"]][:5] == [
        "rk-0",
        "rk-2",
        "rk-1",
        "rk-4",
        "rk-5",
    ]
    last = get(a, "/v1/leaderboards/2026-W40/agents/rk-5", neighbors=3).json()
    assert last["below"] == [] and [e["agent_id"] for e in last["above"]] == [
        "rk-2",
        "rk-1",
        "rk-4",
    ]
    assert last["rank"] == last["total"]

    missing = get(a, "/v1/leaderboards/2026-W40/agents/nobody")
    assert missing.status_code == 404 and "not on the 2026-W40 global board" in missing.text

    # Several boards in one call (the profile's): no rank where the agent is not on one.
    standings = get(b, "/v1/agents/rk-2/standings", periods="2026-W40, 2026-W41,all-time").json()
    assert standings["agent_id"] == "rk-2" and standings["scope"] == "global"
    all_time = get(b, "/v1/leaderboards/all-time/agents/rk-2", neighbors=0).json()
    assert standings["standings"] == [
        {"period": "2026-W40", "rank": 3, "score": 30},
        {"period": "2026-W41", "rank": None, "score": 0},
        {"period": "all-time", "rank": all_time["rank"], "score": 30},
    ]
    team = get(a, "/v1/agents/rk-3/standings", periods="2026-W40", scope="team:t1").json()
    assert team["scope"] == "team:t1"
    assert team["standings"] == [{"period": "2026-W40", "rank": 1, "score": 50}]
    nobody = get(a, "/v1/agents/nobody/standings").json()["standings"]
    assert nobody == [{"period": "all-time", "rank": None, "score": 0}]

    for path, params, says in [
        ("/v1/leaderboards/daily", {}, "all-time, weekly, monthly"),
        ("/v1/leaderboards/2026-W40", {"scope": "tier:expert"}, "scope"),
        ("/v1/leaderboards/2026-W40", {"limit": 101}, "limit"),
        ("/v1/leaderboards/2026-W40/agents/rk-0", {"neighbors": 11}, "neighbors"),
        ("/v1/agents/rk-0/standings", {"periods": "weekly,,all-time"}, "empty period"),
        ("/v1/agents/rk-0/standings", {"periods": "weekly,weekly"}, "named twice"),
        ("/v1/agents/rk-0/standings", {"periods": "a,b,c,d,e"}, "at most 4"),
        ("/v1/agents/rk-0/standings", {"periods": "daily"}, "all-time, weekly, monthly"),
    ]:
        response = get(a, path, **params)
        assert response.status_code == 400, response.text
        assert says in json.dumps(response.json()["error"])


def test_shanghai_week_and_month_boundaries(urls, bus):
    a, _ = urls
    sunday_late = utc(2026, 11, 1, 15, 59, 59)  # Sunday 1 Nov 23:59:59 local: 2026-W44
    monday = utc(2026, 11, 1, 16, 0, 0)  # Monday 2 Nov 00:00 local: 2026-W45
    october_last = utc(2026, 10, 31, 15, 59)  # Sat 31 Oct 23:59 local
    bus.publish(award("bd-1", 7, sunday_late))
    bus.publish(award("bd-2", 9, monday))
    bus.publish(award("bd-3", 4, october_last))
    agents = {"bd-1", "bd-2", "bd-3"}
    wait_until(lambda: len(mine(scores(a, "all-time"), agents)) == 3, message="all applied")
    assert mine(scores(a, "2026-W44"), agents) == [("bd-1", 7), ("bd-3", 4)]
    assert mine(scores(a, "2026-W45"), agents) == [("bd-2", 9)]
    assert mine(scores(a, "2026-10"), agents) == [("bd-3", 4)]
    assert mine(scores(a, "2026-11"), agents) == [("bd-2", 9), ("bd-1", 7)]


def test_team_change_mid_week_and_reversal_to_zero(urls, bus):
    a, _ = urls
    monday, thursday = utc(2026, 10, 12, 2), utc(2026, 10, 15, 2)  # 2026-W42
    bus.publish(registered("tc-1", "Zhang Min", "red", monday))
    bus.publish(award("tc-1", 10, monday, team="red"))
    bus.publish(
        AgentUpdated.create(
            source="skillquest/progress",
            subject="tc-1",
            time=monday + timedelta(days=2),
            data=AgentUpdatedData(
                agent_id="tc-1",
                name="Zhang Min",
                team_id="blue",
                tier="foundation",
                changed=["team_id"],
            ),
        )
    )
    bus.publish(award("tc-1", 25, thursday, team="blue"))
    gone = award("tc-2", 40, monday, team="red")
    bus.publish(gone)
    bus.publish(award("tc-3", 3, monday, team="red"))
    agents = {"tc-1", "tc-2", "tc-3"}
    wait_until(lambda: len(mine(scores(a, "2026-W42"), agents)) == 3, message="applied")

    assert mine(scores(a, "2026-W42", "team:red"), agents) == [
        ("tc-2", 40),
        ("tc-1", 10),
        ("tc-3", 3),
    ]
    assert mine(scores(a, "2026-W42", "team:blue"), agents) == [("tc-1", 25)]
    assert mine(scores(a, "2026-W42"), agents)[0] == ("tc-2", 40)

    bus.publish(reversal(gone))
    wait_until(
        lambda: "tc-2" not in {row[1] for row in scores(a, "2026-W42", "team:red")},
        message="reversed to zero leaves the board",
    )
    assert mine(scores(a, "2026-W42", "team:red"), agents) == [("tc-1", 10), ("tc-3", 3)]
    # Another board: eventually consistent with the first (its view or page may still be
    # the one caught up just before the reversal), so polled too.
    wait_until(
        lambda: mine(scores(a, "2026-W42"), agents) == [("tc-1", 35), ("tc-3", 3)],
        message="the reversal reaches the global board",
    )
    assert get(a, "/v1/leaderboards/2026-W42/agents/tc-2").status_code == 404
    me = get(a, "/v1/leaderboards/2026-W42/agents/tc-1", scope="team:blue").json()
    assert (me["rank"], me["score"], me["team_id"]) == (1, 25, "blue")


def test_shuffled_and_repeated_stream_gives_the_canonical_boards_and_rebuild_equals_live(
    urls, bus, db, config
):
    a, b = urls
    rng = random.Random(11)
    start = utc(2026, 10, 19, 2)  # 2026-W43, and the 2026-10 / 2026-11 month edge
    agents = [f"sh-{i}" for i in range(8)]
    events = []
    for _ in range(60):
        agent = rng.choice(agents)
        at = start + timedelta(hours=rng.randrange(0, 24 * 16))
        team = rng.choice(["red", "blue"])
        tier = rng.choice(["foundation", "advanced"])
        events.append(award(agent, rng.choice([5, 10, 20, 25, 50]), at, team, tier))
    events += [reversal(event) for event in rng.sample(events, 6)]
    stream = events + rng.sample(events, 20)  # redeliveries: the same event ids again
    rng.shuffle(stream)
    for event in stream:
        bus.publish(event)

    expected = {
        key: (standing.score, ms(standing.reached_at))
        for key, standing in fold([as_change(e) for e in events], TZ).items()
    }
    wait_until(lambda: entries_of(db, agents) == expected, timeout=30, message="canonical boards")
    wait_until(lambda: stored_maps(db) == counted_from_entries(db), message="count maps = entries")
    for period in ("all-time", "2026-W44", "2026-10", "2026-11"):
        board_key = f"{period}|global"
        canonical = [
            (agent, s.score)
            for _, agent, s in ranked(
                {
                    agent: s
                    for (key, agent), s in fold([as_change(e) for e in events], TZ).items()
                    if key == board_key
                }
            )
        ]
        # Pages may be answered from memory for a moment (read_cache_seconds): poll.
        wait_until(
            lambda p=period, c=canonical: mine(scores(b, p), set(agents)) == c,
            message=f"the {period} page",
        )

    live = entries_of(db, agents)

    def standings(url: str) -> dict:
        # The past week may close (its grace period ends) while this runs: compare the board.
        return {k: v for k, v in board(url, "2026-W44", limit=100).items() if k != "closed"}

    shown = standings(a)
    delete_entries(db, [key for key in live if key[1] in agents[:3]])  # lose some entries
    for (key, agent), (score, at) in live.items():
        if agent == agents[3]:
            put_entry(db, key, agent, score + 1000, at)  # corrupt
    add_to_maps(db, {"board": "2026-W44|global"}, {7: 2})
    wait_until(lambda: standings(a) != shown, message="the damage is visible")
    response = requests.post(f"{a}/v1/leaderboards/rebuild", timeout=120)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["entries_fixed"] > 0 and report["applied_events"] >= len(events)
    assert report["boards_recounted"] > 0
    assert entries_of(db, agents) == live
    wait_until(lambda: standings(a) == shown, message="the board as before the damage")
    assert stored_maps(db) == counted_from_entries(db)
    again = requests.post(f"{b}/v1/leaderboards/rebuild", json={}, timeout=120).json()
    assert again["entries_fixed"] == 0 and again["boards_recounted"] == 0

    # the command-line rebuild: same function, same result
    delete_entries(db, [key for key in live if key[1] == agents[4]])
    assert rebuild_from_config(config).entries_fixed > 0
    assert entries_of(db, agents) == live
    refused = requests.post(f"{a}/v1/leaderboards/rebuild", json={"full": True}, timeout=10)
    assert refused.status_code == 400


def closes(bus: EventBus, key: str) -> list[dict]:
    events = [json.loads(r.value) for r in bus.read_all(GAMIFICATION_LEADERBOARDS)]
    return [e for e in events if e["subject"] == key]


def metric(url: str, name: str) -> float:
    """The value of an unlabelled metric on the service's /metrics."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return next(
        (
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(f"{name} ")
        ),
        0.0,
    )


def closed_total(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("skillquest_leaderboard_periods_closed_total{")
        and 'period="weekly"' in line
    )


def test_a_past_period_closes_exactly_once_across_two_instances(urls, bus, db):
    a, b = urls
    monday = utc(2026, 7, 20, 2)  # 2026-W30, first seen now: a backfill
    bus.publish(award("pc-1", 20, monday))
    bus.publish(award("pc-2", 30, monday + timedelta(hours=5)))
    bus.publish(award("pc-3", 20, monday - timedelta(hours=1)))
    bus.publish(registered("pc-2", "Chen Jing", "green", monday))

    (closed,) = wait_until(lambda: closes(bus, "2026-W30"), timeout=30, message="W30 closed")
    assert closed["type"] == "gamification.leaderboard.period_closed.v1"
    assert closed["time"] == "2026-07-26T15:59:59.999999Z"
    assert closed["time"].startswith(last_instant("2026-W30", TZ).strftime("%Y-%m-%dT%H:%M"))
    assert [(s["rank"], s["agent_id"], s["score"]) for s in closed["data"]["top"]] == [
        (1, "pc-2", 30),
        (2, "pc-3", 20),
        (3, "pc-1", 20),
    ]
    assert closed["data"]["period"] == "weekly"
    assert board(a, "2026-W30")["closed"] is True

    # A late event for the closed week updates its board, not the snapshot; a later week
    # closing shows both timers kept running after it, and W30 still closed once.
    bus.publish(award("pc-1", 100, monday + timedelta(days=1)))
    bus.publish(award("pc-4", 5, utc(2026, 7, 28, 2)))  # 2026-W31
    wait_until(lambda: scores(b, "2026-W30")[0][1:] == ("pc-1", 120), message="late event")
    wait_until(lambda: closes(bus, "2026-W31"), timeout=30, message="W31 closed")
    assert len(closes(bus, "2026-W30")) == 1
    snapshot = db.period_closes.find_one({"_id": "2026-W30"})
    assert [s["agent_id"] for s in snapshot["top"]] == ["pc-2", "pc-3", "pc-1"]
    assert wait_until(lambda: closed_total(a) + closed_total(b) >= 2, message="counted")
    assert db.period_closes.count_documents({"_id": {"$in": ["2026-W30", "2026-W31"]}}) == 2
