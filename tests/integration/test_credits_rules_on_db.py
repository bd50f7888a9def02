"""The credits handlers against the real database, without Kafka: redelivery and
reordering of course completions, requirement_met exactly once, expiry exactly once across
two instances, grants, revocations and a tier change (ARCHITECTURE §3, §4); batches handled
exactly as their events one by one, with a fixed number of statements."""

from __future__ import annotations

import json
import random
import threading
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from pymongo import MongoClient

from contracts.api.credits import CreditGrant
from contracts.events import CreditsExpired, CreditsRequirementMet
from services.common.times import to_millis
from services.credits import handlers, store, views
from services.credits.handlers import Actor
from services.credits.policy import CreditsSettings, Policy
from services.credits.readiness import DEFAULT_REQUIREMENTS_FILE, RequirementTable
from services.runtime.batches import each
from services.runtime.errors import Conflict, NotFound
from services.runtime.mongo import ServiceDatabase
from services.runtime.outbox import ensure_outbox_indexes, outbox_events
from tests.integration.credits_support import completed, promoted, published, registered
from tests.support.databases import Statements

pytestmark = pytest.mark.integration

POLICY = Policy(CreditsSettings(), RequirementTable.load(DEFAULT_REQUIREMENTS_FILE))
ADMIN = Actor("admin-1", "admin")
NOW = to_millis(datetime.now(UTC))
DAY = timedelta(days=1)
MS = timedelta(milliseconds=1)


def service_database(uri: str, name: str, recent_seconds: float = 0.0) -> ServiceDatabase:
    client: MongoClient = MongoClient(uri, tz_aware=True, w="majority", journal=True)
    db = client[name]
    ensure_outbox_indexes(db)
    return ServiceDatabase(
        client,
        db,
        "skillquest/credits",
        on_events_committed=lambda: None,
        recent_seconds=recent_seconds,
    )


@pytest.fixture(scope="module")
def db(database):
    sdb = service_database(database.uri, f"credits_rules_{uuid.uuid4().hex[:8]}")
    yield sdb
    sdb.client.close()


def agent_id() -> str:
    return f"agent-{uuid.uuid4().hex[:8]}"


def consumer_of(event) -> str:
    if event.type.endswith("course.completed.v1"):
        return "on_course_completed"
    return "on_agent" if event.type.startswith("people.agent.") else "on_course"


def batch_work(consumer: str) -> Any:
    """What the service runs for a batch of the consumer's events."""
    return {
        "on_course_completed": partial(handlers.deposit_courses, policy=POLICY),
        "on_agent": partial(handlers.observe_agents, policy=POLICY),
        "on_course": each(handlers.record_course),
    }[consumer]


def one_by_one_work(consumer: str) -> Any:
    """The per-event handlers: the reference the batch functions must match."""
    return each(
        {
            "on_course_completed": partial(handlers.deposit_course, policy=POLICY),
            "on_agent": partial(handlers.observe_agent, policy=POLICY),
            "on_course": handlers.record_course,
        }[consumer]
    )


def handle(db: ServiceDatabase, event) -> object:
    """The event alone, in a batch of its own, as the service handles it."""
    consumer = consumer_of(event)
    handled = db.handle_batch(consumer, [event], batch_work(consumer))
    return handled.result[0] if handled.result else None


def outbox(db: ServiceDatabase, event_type: str, agent: str) -> list[dict]:
    return [e for e in outbox_events(db.db) if e["type"] == event_type and e["key"] == agent]


def view(db: ServiceDatabase, agent: str, at: datetime | None = None):
    return views.agent_credits(db, agent, at or datetime.now(UTC), POLICY)


def meeting_advanced(agent: str, start: datetime, prefix: str = "c") -> list:
    """Three completions that together meet foundation -> advanced (4 + 4 + 4)."""
    return [
        completed(agent, f"{prefix}-comm", start, "communication", 4),
        completed(agent, f"{prefix}-tech", start + DAY, "technology", 4),
        completed(agent, f"{prefix}-ps", start + 2 * DAY, "problem_solving", 4),
    ]


def test_redelivered_and_resent_completions_deposit_once(db):
    agent = agent_id()
    event = completed(agent, "c1", NOW - DAY, "communication", 2.5)
    assert handle(db, event) is not None
    assert handle(db, event) is None  # redelivery: same event id
    resent = event.model_copy(update={"id": str(uuid.uuid4())})
    assert handle(db, resent) is None  # the same completion under a new id

    lots = views.agent_lots(db, agent, datetime.now(UTC), None).lots
    assert [(lot.course_id, lot.credit_hours, lot.status) for lot in lots] == [("c1", 2.5, "valid")]
    assert lots[0].expires_at == to_millis(event.time) + timedelta(days=365)
    history = views.credit_history(db, agent, 10, None, datetime.now(UTC)).history
    assert [(h.kind, h.credit_hours, h.source_event_id) for h in history] == [
        ("deposit", 2.5, event.id)
    ]


def test_reordered_completions_meet_the_requirement_once_at_the_same_instant(db):
    in_order, reordered = agent_id(), agent_id()
    start = NOW - 10 * DAY
    for event in [registered(in_order, start - DAY), *meeting_advanced(in_order, start)]:
        handle(db, event)
    # The completions in reverse, before the agent's registration.
    late = [*reversed(meeting_advanced(reordered, start)), registered(reordered, start - DAY)]
    for event in late:
        handle(db, event)
    for event in late:
        handle(db, event)  # and all of it redelivered

    for agent in (in_order, reordered):
        events = outbox(db, CreditsRequirementMet.TYPE, agent)
        assert len(events) == 1, agent
        met = CreditsRequirementMet.model_validate_json(events[0]["value"])
        assert met.data.target_tier == "advanced"
        assert met.time == to_millis(start + 2 * DAY)  # the completion that met it
        assert met.data.total == 12
        assert met.data.agent.team_id == "team-1"
        assert view(db, agent).next_tier.met is True
        assert view(db, agent).next_tier.first_met_at == met.time


def test_exact_expiry_boundary_in_the_view(db):
    agent = agent_id()
    event = completed(agent, "c1", NOW - 5 * DAY, "technology", 3)
    handle(db, event)
    expires = to_millis(event.time) + timedelta(days=365)
    assert view(db, agent, expires - MS).total == 3
    assert view(db, agent, expires - MS).by_dimension.technology == 3
    assert view(db, agent, expires).total == 0
    assert view(db, agent, expires).expiring_soon == []
    soon = view(db, agent, expires - 30 * DAY).expiring_soon
    assert [lot.expires_at for lot in soon] == [expires]
    assert view(db, agent, expires - 30 * DAY - MS).expiring_soon == []


def test_expiry_below_a_met_requirement_emits_no_second_event_and_shows_not_met(db):
    agent = agent_id()
    # Met 365 days ago, with the communication lot expiring first.
    start = NOW - timedelta(days=365) - 3 * DAY
    for event in meeting_advanced(agent, start):
        handle(db, event)
    assert len(outbox(db, CreditsRequirementMet.TYPE, agent)) == 1

    now = datetime.now(UTC)
    expired = [
        lot_id
        for lot_id in store.due_for_expiry(db, now, 100)
        if db.transaction(partial(handlers.expire_lot, lot_id=lot_id, now=now))
        and store.find_lot(db, lot_id).agent_id == agent
    ]
    assert len(expired) == 3
    credits = view(db, agent)
    assert credits.total == 0
    assert credits.next_tier.met is False
    assert credits.next_tier.missing.total == 12
    assert credits.next_tier.first_met_at is not None

    # New credits that meet it again: still no second event.
    for event in meeting_advanced(agent, NOW - 3 * DAY, prefix="retaken"):
        handle(db, event)
    assert view(db, agent).next_tier.met is True
    assert len(outbox(db, CreditsRequirementMet.TYPE, agent)) == 1
    expiries = outbox(db, CreditsExpired.TYPE, agent)
    assert len(expiries) == 3
    first = CreditsExpired.model_validate_json(expiries[0]["value"])
    assert first.time == store.find_lot(db, first.data.lot_id).expires_at


def test_two_instances_expire_each_lot_exactly_once(db, database):
    agent = agent_id()
    for day in range(6):
        at = NOW - timedelta(days=365) - day * timedelta(hours=1)
        handle(db, completed(agent, f"c{day}", at, "communication", 1))
    other = service_database(database.uri, db.db.name)  # a second instance, own client
    now = datetime.now(UTC)
    due = [i for i in store.due_for_expiry(db, now, 1000) if i.startswith("course-")]
    results: list[int] = []

    def scan(instance: ServiceDatabase) -> None:
        done = 0
        for lot_id in due:
            if instance.transaction(partial(handlers.expire_lot, lot_id=lot_id, now=now)):
                done += 1
        results.append(done)

    threads = [threading.Thread(target=scan, args=(i,)) for i in (db, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.client.close()

    expiries = outbox(db, CreditsExpired.TYPE, agent)
    lot_ids = [CreditsExpired.model_validate_json(e["value"]).data.lot_id for e in expiries]
    assert len(lot_ids) == 6 and len(set(lot_ids)) == 6
    history = views.credit_history(db, agent, 50, None, now).history
    assert sorted(h.kind for h in history).count("expiry") == 6
    # A later scan (a restart) finds nothing left to do.
    assert not [i for i in store.due_for_expiry(db, datetime.now(UTC), 1000) if i in lot_ids]


def grant_body(hours: float, dimension: str, tags: list[str] | None = None, days=None):
    return CreditGrant(
        credit_hours=hours,
        dimension=dimension,
        reason="External de-escalation workshop",
        evidence_url="https://lms.example.com/cert/42",
        tags=tags or [],
        valid_days=days,
    )


def test_a_grant_that_meets_the_requirement_publishes_it_and_revocation_takes_it_back(db):
    agent = agent_id()
    handle(db, registered(agent, NOW - 30 * DAY))
    for event in meeting_advanced(agent, NOW - 20 * DAY)[:2]:
        handle(db, event)
    assert outbox(db, CreditsRequirementMet.TYPE, agent) == []

    now = datetime.now(UTC)
    lot, created = db.transaction(
        lambda uow: handlers.grant(
            uow, agent, grant_body(4, "problem_solving"), ADMIN, now, "grant-x-" + agent, POLICY
        )
    )
    assert created and lot.granted_by == "admin-1"
    assert lot.expires_at == to_millis(now) + timedelta(days=365)
    met = outbox(db, CreditsRequirementMet.TYPE, agent)
    assert len(met) == 1
    assert CreditsRequirementMet.model_validate_json(met[0]["value"]).time == to_millis(now)

    # The same idempotency key: the first grant back; with another body: a conflict.
    again, created = db.transaction(
        lambda uow: handlers.grant(
            uow, agent, grant_body(4, "problem_solving"), ADMIN, now, "grant-x-" + agent, POLICY
        )
    )
    assert not created and again.lot_id == lot.lot_id
    with pytest.raises(Conflict):
        db.transaction(
            lambda uow: handlers.grant(
                uow, agent, grant_body(5, "technology"), ADMIN, now, "grant-x-" + agent, POLICY
            )
        )
    with pytest.raises(NotFound):
        db.transaction(
            lambda uow: handlers.grant(
                uow, "nobody-" + agent, grant_body(1, "technology"), ADMIN, now, "g-1", POLICY
            )
        )

    revoked_at = datetime.now(UTC)
    revoked = db.transaction(
        lambda uow: handlers.revoke(uow, agent, lot.lot_id, "certificate forged", ADMIN, revoked_at)
    )
    assert revoked.revoked_by == "admin-1" and revoked.revocation_reason == "certificate forged"
    with pytest.raises(Conflict, match="already revoked"):
        db.transaction(lambda uow: handlers.revoke(uow, agent, lot.lot_id, "again", ADMIN, now))
    with pytest.raises(NotFound):
        db.transaction(lambda uow: handlers.revoke(uow, agent, "grant-nope", "x", ADMIN, now))

    credits = view(db, agent)
    assert credits.total == 8 and credits.next_tier.met is False
    assert view(db, agent, to_millis(revoked_at) - MS).total == 12  # before the revocation
    assert len(outbox(db, CreditsRequirementMet.TYPE, agent)) == 1
    kinds = [h.kind for h in views.credit_history(db, agent, 10, None, now).history]
    assert kinds == ["revocation", "grant", "deposit", "deposit"]
    lots = views.agent_lots(db, agent, datetime.now(UTC), "revoked").lots
    assert [x.lot_id for x in lots] == [lot.lot_id]


def test_a_grant_and_a_deposit_at_the_same_time_together_meet_the_requirement(db):
    agents = [agent_id() for _ in range(4)]
    for agent in agents:
        handle(db, registered(agent, NOW - 30 * DAY))
        for event in meeting_advanced(agent, NOW - 20 * DAY)[:2]:
            handle(db, event)

    def deposit(agent: str) -> None:
        handle(db, completed(agent, "c-last", NOW - DAY, "problem_solving", 2))

    def grant(agent: str) -> None:
        body = grant_body(2, "problem_solving")
        db.transaction(
            lambda uow: handlers.grant(
                uow, agent, body, ADMIN, datetime.now(UTC), f"grant-{agent}", POLICY
            )
        )

    threads = [threading.Thread(target=f, args=(a,)) for a in agents for f in (deposit, grant)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for agent in agents:  # neither alone meets it (3 problem-solving hours needed)
        assert view(db, agent).next_tier.met is True
        assert len(outbox(db, CreditsRequirementMet.TYPE, agent)) == 1, agent


def test_an_expired_lot_cannot_be_revoked(db):
    agent = agent_id()
    event = completed(agent, "c-old", NOW - timedelta(days=366), "technology", 2)
    lot = handle(db, event)
    with pytest.raises(Conflict, match="expired"):
        db.transaction(lambda uow: handlers.revoke(uow, agent, lot.lot_id, "too late", ADMIN, NOW))


def test_a_promotion_moves_the_view_to_the_next_tier_and_may_meet_it_at_once(db):
    agent = agent_id()
    start = NOW - 40 * DAY
    handle(db, registered(agent, start))
    for i, dimension in enumerate(("communication", "technology", "problem_solving")):
        tags = ("coaching",) if dimension == "communication" else ()
        handle(db, completed(agent, f"c{i}", start + DAY, dimension, 8, tags=tags))
    assert [
        CreditsRequirementMet.model_validate_json(e["value"]).data.target_tier
        for e in outbox(db, CreditsRequirementMet.TYPE, agent)
    ] == ["advanced"]
    assert view(db, agent).next_tier.tier == "advanced"

    promotion = promoted(agent, start + 10 * DAY, "advanced")
    handle(db, promotion)
    met = [
        CreditsRequirementMet.model_validate_json(e["value"])
        for e in outbox(db, CreditsRequirementMet.TYPE, agent)
    ]
    assert [m.data.target_tier for m in met] == ["advanced", "leadership"]
    assert met[1].time == to_millis(promotion.time)  # not before the promotion
    assert met[1].data.agent.tier == "advanced"
    credits = view(db, agent)
    assert credits.tier == "advanced"
    assert credits.next_tier.tier == "leadership" and credits.next_tier.met is True
    # As of before the promotion the agent was still a foundation agent.
    assert view(db, agent, start + 5 * DAY).tier == "foundation"

    handle(db, promoted(agent, start + 20 * DAY, "leadership"))
    assert view(db, agent).next_tier is None
    assert len(outbox(db, CreditsRequirementMet.TYPE, agent)) == 2


def test_a_promotion_handled_before_earlier_completions_changes_nothing(db):
    in_order, reordered = agent_id(), agent_id()
    start = NOW - 40 * DAY
    for agent in (in_order, reordered):
        events = [
            registered(agent, start),
            *meeting_advanced(agent, start + DAY),
            promoted(agent, start + 10 * DAY, "advanced"),
        ]
        if agent == reordered:  # the promotion (another topic) overtakes the completions
            events = [events[0], events[-1], *events[1:-1]]
        for event in events:
            handle(db, event)
    outcomes = []
    for agent in (in_order, reordered):
        met = [
            CreditsRequirementMet.model_validate_json(e["value"])
            for e in outbox(db, CreditsRequirementMet.TYPE, agent)
        ]
        outcomes.append([(m.data.target_tier, m.time, m.data.agent.tier) for m in met])
    assert outcomes[0] == outcomes[1] == [("advanced", to_millis(start + 3 * DAY), "foundation")]


def test_the_catalogue_behind_recommendations_is_read_once_per_reference_cache_time(database):
    db = service_database(database.uri, f"credits_recent_{uuid.uuid4().hex[:8]}", 60.0)
    try:
        agent = agent_id()
        handle(db, registered(agent, NOW - 30 * DAY))
        handle(db, published("first", NOW, "technology", 2))

        def picks() -> list[str]:
            return [c.course_id for c in view(db, agent).recommended_courses]

        assert picks() == ["first"]
        handle(db, published("second", NOW, "technology", 4))
        assert picks() == ["first"]  # the catalogue read a moment ago
        db.recent("published courses").clear()  # as when reference_cache_seconds passed
        assert picks() == ["second", "first"]
    finally:
        db.client.close()


def test_recommendations_follow_the_largest_gap(db):
    agent = agent_id()
    suffix = agent[-8:]
    handle(db, registered(agent, NOW - 30 * DAY))
    handle(db, completed(agent, f"done-{suffix}", NOW - DAY, "communication", 3))
    catalogue = [
        published(f"done-{suffix}", NOW, "communication", 3),
        published(f"tech-b-{suffix}", NOW, "technology", 2),
        published(f"tech-a-{suffix}", NOW, "technology", 2),
        published(f"tech-big-{suffix}", NOW, "technology", 6, tier="advanced"),
        published(f"ps-{suffix}", NOW, "problem_solving", 1, revision=2),
        published(f"comm-{suffix}", NOW, "communication", 10),
        published(f"lead-{suffix}", NOW, "technology", 40, tier="leadership"),
        published(f"draft-{suffix}", NOW, "technology", 5, is_published=False),
    ]
    for event in catalogue:
        handle(db, event)
    # A stale revision arriving late changes nothing.
    handle(db, published(f"ps-{suffix}", NOW, "problem_solving", 1, is_published=False, revision=1))

    picks = [
        c.course_id for c in view(db, agent).recommended_courses if c.course_id.endswith(suffix)
    ]
    # Gaps: technology 3, problem_solving 3, communication 0 (3 held).
    # tech-big closes the technology gap with the most hours; tech-a and tech-b tie on gap
    # and hours and go by id; comm-10 works on no gap; lead-, done- and draft- are out.
    assert picks == [
        f"tech-big-{suffix}",
        f"tech-a-{suffix}",
        f"tech-b-{suffix}",
        f"ps-{suffix}",
        f"comm-{suffix}",
    ]


# --- batches: identical to one by one ------------------------------------------------------

DIMENSIONS = ("communication", "technology", "problem_solving")


def random_stream(rng: random.Random, agents: list[str], start: datetime) -> list:
    """Roster and completion events of a few agents, in an arrival order unlike their
    event times: completions re-sent under new ids and redelivered, completions at the same
    instant, snapshots of another tier, promotions before and after the completions, and
    enough hours to meet requirements inside a batch."""
    events: list = []

    def at(days: float) -> datetime:
        return start + timedelta(days=days, milliseconds=rng.randrange(1000))

    for agent in agents:
        team = rng.choice(("team-1", "team-2"))
        if rng.random() < 0.8:
            tier = rng.choice(("foundation", "foundation", "advanced"))
            events.append(registered(agent, at(rng.uniform(-3, 20)), tier=tier, team=team))
        for _ in range(rng.randint(0, 2)):
            tier = rng.choice(("advanced", "leadership"))
            events.append(promoted(agent, at(rng.uniform(0, 40)), tier, team=team))
        first = rng.randrange(3)
        for k in range(rng.randint(3, 12)):
            event = completed(
                agent,
                f"c{rng.randrange(8)}",
                at(rng.uniform(0, 40)),
                DIMENSIONS[(first + k) % 3],
                rng.choice((1, 2.5, 4, 4, 6)),
                tags=rng.choice(((), (), ("coaching",))),
                tier=rng.choice(("foundation", "foundation", "advanced")),
                team=team,
            )
            events.append(event)
            if rng.random() < 0.2:  # another course completed at the very same instant
                events.append(completed(agent, "c-twin", event.time, "technology", 2, team=team))
            if rng.random() < 0.25:  # the same completion under a new event id
                events.append(event.model_copy(update={"id": str(uuid.uuid4())}))
            if rng.random() < 0.15:  # redelivered
                events.append(event)
    rng.shuffle(events)
    return events


def batches_of(rng: random.Random, events: list) -> list[tuple[str, list]]:
    """The stream cut into batches of one consumer each, in stream order, of 1 to 25."""
    runs: list[tuple[str, list]] = []
    for event in events:
        consumer = consumer_of(event)
        if not runs or runs[-1][0] != consumer or len(runs[-1][1]) >= rng.randint(1, 25):
            runs.append((consumer, []))
        runs[-1][1].append(event)
    return runs


def stored_state(db: ServiceDatabase) -> dict[str, Any]:
    """Every credits collection, with event ids (random per run) replaced by the event."""
    published = {
        e["event_id"]: {k: v for k, v in json.loads(e["value"]).items() if k != "id"}
        for e in outbox_events(db.db)
    }

    def docs(name: str) -> list[dict]:
        return list(db.db[name].find().sort("_id", 1))

    milestones = [{**m, "event_id": published[m["event_id"]]} for m in docs(store.MILESTONES)]
    return {
        "agents": docs(store.AGENTS),
        "lots": docs(store.LOTS),
        "history": docs(store.HISTORY),
        "milestones": milestones,
        "outbox": [(e["type"], e["key"], published[e["event_id"]]) for e in outbox_events(db.db)],
    }


@pytest.mark.parametrize("seed", range(6))
def test_batches_do_exactly_what_their_events_do_one_by_one(database, seed):
    rng = random.Random(seed)
    agents = [f"agent-{seed}-{i}" for i in range(rng.randint(3, 6))]
    events = random_stream(rng, agents, NOW - 60 * DAY)
    one_by_one = service_database(database.uri, f"credits_each_{uuid.uuid4().hex[:8]}")
    batched = service_database(database.uri, f"credits_batch_{uuid.uuid4().hex[:8]}")
    try:
        expected: dict[str, Any] = {}
        for event in events:
            consumer = consumer_of(event)
            handled = one_by_one.handle_batch(consumer, [event], one_by_one_work(consumer))
            if handled.result:
                expected[event.id] = handled.result[0]
        got: dict[str, Any] = {}
        batch_sizes_meeting = []
        for consumer, batch in batches_of(rng, events):
            before = len(outbox_events(batched.db))
            handled = batched.handle_batch(consumer, batch, batch_work(consumer))
            fresh = list(dict.fromkeys(e.id for e in batch if handled.is_fresh(e.id)))
            got.update(zip(fresh, handled.result or [], strict=True))
            if len(outbox_events(batched.db)) > before:
                batch_sizes_meeting.append(len(batch))

        assert got == expected  # the same lots deposited, None for the same completions
        expected_state, got_state = stored_state(one_by_one), stored_state(batched)
        for name in expected_state:
            assert got_state[name] == expected_state[name], name
        # The stream did what it is for: lots re-sent, requirements met inside batches.
        assert None in expected.values()
        assert expected_state["milestones"]
        assert max(batch_sizes_meeting) > 1
    finally:
        for db in (one_by_one, batched):
            db.client.drop_database(db.db.name)
            db.client.close()


def test_a_batch_takes_a_fixed_number_of_statements_whatever_its_size(database):
    name = f"credits_statements_{uuid.uuid4().hex[:8]}"
    statements = Statements()
    client: MongoClient = MongoClient(
        database.uri, tz_aware=True, w="majority", journal=True, event_listeners=[statements]
    )
    db = ServiceDatabase(
        client, client[name], "skillquest/credits", on_events_committed=lambda: None
    )
    ensure_outbox_indexes(db.db)
    try:
        counts = []
        for size in (5, 40):
            agents = [agent_id() for _ in range(size)]
            db.handle_batch(
                "on_agent", [registered(a, NOW - 30 * DAY) for a in agents], batch_work("on_agent")
            )
            deposits = [completed(a, "c1", NOW - DAY, "technology", 4) for a in agents]
            statements.names.clear()
            db.handle_batch("on_course_completed", deposits, batch_work("on_course_completed"))
            counts.append(len(statements.names))
        # Reads come in chunks of ids, so a few more for a bigger batch; writes one each.
        # One by one, a deposit takes about eight statements.
        assert counts[0] <= 15
        assert counts[1] <= 20, statements.names
    finally:
        client.drop_database(name)
        client.close()
