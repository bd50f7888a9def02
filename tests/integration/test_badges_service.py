"""The badges service against the real broker and database: awards from events (once,
whatever the order and redelivery), through the outbox, read over HTTP, and credentials a
verifier can check. One running service is shared; each test uses its own agents. And a
batch in one transaction against the database alone: what one transaction per event leaves."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from pymongo import MongoClient

from contracts.envelope import CloudEvent
from contracts.events import (
    AssessmentGraded,
    CourseCompleted,
    CourseData,
    CoursePublished,
    CourseUpdated,
    CreditsRequirementMet,
    CreditsRequirementMetData,
    LeaderboardPeriodClosed,
    ModuleCompleted,
    ModuleData,
    PeriodClosedData,
    StandingData,
)
from contracts.topics import GAMIFICATION_BADGES
from contracts.vocabulary import AgentSnapshot
from services.badges.credentials import key_from_pem, verify
from services.badges.handlers import handle_agent_event, handle_agent_events, handle_catalog_event
from services.badges.service import BadgesService
from services.badges.store import AGENTS, AWARDS, DOCUMENTS, FACTS
from services.runtime.batches import each
from services.runtime.mongo import ServiceDatabase
from services.runtime.outbox import outbox_events
from services.runtime.settings import settings_from_config
from tests.support.databases import fresh_service_database
from tests.support.events import (
    assessment_graded,
    course_completed,
    module_completed,
    snapshot,
    ticket_resolved,
)
from tests.support.harness import (
    EventBus,
    base_url,
    events_consumed,
    get_json,
    running,
    service_config,
    unique_prefix,
    wait_until,
)
from tests.support.schemas import schema_errors as errors
from tests.unit.test_badges_handlers import (
    SMALL,
    agent_event_stream,
    course_event,
    random_split,
)

pytestmark = pytest.mark.integration

SCHEMA = json.loads(
    (
        Path(__file__).parents[1] / "unit" / "data" / "ob_v3p0_openbadgecredential.schema.json"
    ).read_text()
)
T0 = datetime(2026, 10, 5, 2, 0, tzinfo=UTC)
WEEK_45_END = datetime(2026, 11, 8, 15, 59, 59, 999999, tzinfo=UTC)


@pytest.fixture(scope="module")
def stack(broker, database):
    prefix = unique_prefix()
    config = service_config(
        broker,
        database,
        prefix,
        BADGES={"public_base_url": "https://skillquest.test", "issuer_name": "Skillquest QA"},
    )
    bus = EventBus(broker.bootstrap, prefix)
    with running(BadgesService, config):
        yield config, bus, database, prefix
    bus.close()


@pytest.fixture
def config(stack):
    return stack[0]


@pytest.fixture
def bus(stack):
    return stack[1]


def snap(agent: str, tier: str = "foundation") -> AgentSnapshot:
    return snapshot(agent, "team-9", tier)


def module_done(agent: str, at: datetime) -> ModuleCompleted:
    return module_completed(snap(agent), at, module_id="m1", course_id="c0")


def course_done(agent: str, course: str, at: datetime, tags=()) -> CourseCompleted:
    return course_completed(snap(agent), at, course_id=course, tags=tags)


def perfect(agent: str, at: datetime) -> AssessmentGraded:
    return assessment_graded(snap(agent), at, 100, 1, course_id="c0", module_id="q1")


def course(course_id: str, revision: int, published: bool, tags: list[str], kind=CoursePublished):
    data = CourseData(
        course_id=course_id,
        title=f"Course {course_id}",
        tier="foundation",
        dimension="communication",
        credit_hours=2,
        tags=tags,
        published=published,
        revision=revision,
        modules=[ModuleData(module_id="m1", kind="lesson", title="Lesson")],
    )
    return kind.create(source="t", subject=course_id, time=T0 + timedelta(days=revision), data=data)


def awards_on_topic(bus: EventBus, agent: str) -> list[dict]:
    values = [json.loads(r.value) for r in bus.read_all(GAMIFICATION_BADGES)]
    return [v for v in values if v["subject"] == agent]


def badges_of(config, agent: str) -> dict:
    return get_json(f"{base_url(config)}/v1/agents/{agent}/badges")


def held(config, agent: str) -> set[tuple[str, str | None]]:
    return {(b["badge_id"], b["level"]) for b in badges_of(config, agent)["badges"]}


def handled(config, event_type: str) -> int:
    consumed = events_consumed(base_url(config))
    return sum(n for (_, type_), n in consumed.items() if type_ == event_type)


def publish_all(bus: EventBus, events: list[CloudEvent]) -> None:
    for event in events:
        bus.publish(event)


def test_awards_once_in_event_time_whatever_the_order_and_redelivery(config, bus):
    agent = "it-ada"
    courses = [course_done(agent, f"c{i}", T0 + timedelta(days=i)) for i in range(5)]
    first_module = module_done(agent, T0 - timedelta(hours=1))
    deliveries = [*courses, courses[1], first_module, courses[3]]
    random.Random(11).shuffle(deliveries)
    publish_all(bus, deliveries)
    wait_until(lambda: len(held(config, agent)) == 3, timeout=30, message="three awards")

    # Everything again, then one new event behind it on the same partition.
    publish_all(bus, deliveries)
    marker = perfect(agent, T0 + timedelta(days=9))
    bus.publish(marker)
    wait_until(lambda: ("perfect-score", None) in held(config, agent), message="marker award")

    body = badges_of(config, agent)
    by_key = {(b["badge_id"], b["level"]): b for b in body["badges"]}
    assert set(by_key) == {
        ("first-steps", None),
        ("course-finisher", "bronze"),
        ("course-finisher", "silver"),
        ("perfect-score", None),
    }
    silver = by_key[("course-finisher", "silver")]
    assert silver["awarded_at"] == "2026-10-09T02:00:00Z"  # the fifth course, in event time
    assert silver["bonus_points"] == 50
    assert sorted(silver["evidence"]) == sorted(c.id for c in courses)
    # Bronze was met by the first completion that arrived (no earlier one was known then).
    first_known = next(e for e in deliveries if isinstance(e, CourseCompleted))
    bronze_at = by_key[("course-finisher", "bronze")]["awarded_at"]
    assert bronze_at == first_known.time.strftime("%Y-%m-%dT%H:%M:%SZ")
    gold = next(p for p in body["progress"] if p["badge_id"] == "course-finisher")
    assert gold == {
        "badge_id": "course-finisher",
        "next_level": "gold",
        "current": 5,
        "target": 20,
        "unit": "events",
    }

    published = wait_until(
        lambda: len(awards_on_topic(bus, agent)) == 4 and awards_on_topic(bus, agent)
    )
    assert sorted((e["data"]["badge_id"], e["data"]["level"]) for e in published) == sorted(by_key)
    silver_event = next(e for e in published if e["data"]["level"] == "silver")
    assert silver_event["time"] == "2026-10-09T02:00:00Z"
    assert silver_event["data"]["agent"] == {
        "agent_id": agent,
        "team_id": "team-9",
        "tier": "foundation",
    }
    assert silver_event["data"]["bonus_points"] == 50

    metrics = requests.get(f"{base_url(config)}/metrics", timeout=5).text
    assert 'skillquest_badges_awarded_total{badge="course-finisher"}' in metrics


def test_period_close_and_credits_award_with_the_latest_known_snapshot(config, bus):
    seen, unseen = "it-top10", "it-top3"
    bus.publish(module_done(seen, T0))
    wait_until(lambda: ("first-steps", None) in held(config, seen), message="first steps")

    close = LeaderboardPeriodClosed.create(
        source="t",
        subject="2026-W45",
        time=WEEK_45_END,
        data=PeriodClosedData(
            period="weekly",
            period_key="2026-W45",
            top=[
                StandingData(rank=3, agent_id=unseen, score=300),
                StandingData(rank=10, agent_id=seen, score=100),
            ],
        ),
    )
    bus.publish(close)
    bus.publish(close)  # redelivered
    wait_until(lambda: ("weekly-top-10", None) in held(config, seen), message="top 10")
    [award] = [b for b in badges_of(config, seen)["badges"] if b["badge_id"] == "weekly-top-10"]
    assert (award["awarded_at"], award["bonus_points"]) == ("2026-11-08T15:59:59.999999Z", 30)

    # The other agent had no snapshot yet: awarded as soon as one of its events arrives.
    assert ("weekly-top-10", None) not in held(config, unseen)
    bus.publish(ticket_resolved(snap(unseen, "advanced"), WEEK_45_END + timedelta(days=1), "T1"))
    wait_until(lambda: ("weekly-top-10", None) in held(config, unseen), message="late award")
    # The award is stored before the relay publishes it: wait for the topic too.
    [event] = wait_until(
        lambda: [
            e for e in awards_on_topic(bus, unseen) if e["data"]["badge_id"] == "weekly-top-10"
        ],
        message="the late award on the topic",
    )
    assert event["time"] == "2026-11-08T15:59:59.999999Z"
    assert event["data"]["agent"]["tier"] == "advanced"
    assert event["data"]["evidence"] == [close.id]

    met = CreditsRequirementMet.create(
        source="t",
        subject=seen,
        time=T0 + timedelta(days=30),
        data=CreditsRequirementMetData(
            agent=snap(seen),
            target_tier="advanced",
            total=12.5,
            by_dimension={"communication": 4.0},
        ),
    )
    bus.publish(met)
    wait_until(lambda: ("tier-ready", "advanced") in held(config, seen), message="tier-ready")
    assert ("tier-ready", "leadership") not in held(config, seen)


def test_complaint_master_follows_the_catalogue(config, bus):
    early, late = "it-early", "it-late"
    tag = ["complaint-handling"]
    before = handled(config, CoursePublished.TYPE)
    bus.publish(course("ch1", 1, True, tag))
    wait_until(lambda: handled(config, CoursePublished.TYPE) > before, message="catalogue")

    first = course_done(early, "ch1", T0 + timedelta(days=1), tag)
    bus.publish(first)
    wait_until(lambda: ("complaint-master", None) in held(config, early), message="award")

    # A second tagged course: the award stays; an agent who has not earned it needs both.
    before = handled(config, CoursePublished.TYPE)
    bus.publish(course("ch2", 2, True, tag))
    wait_until(lambda: handled(config, CoursePublished.TYPE) > before, message="ch2")
    bus.publish(course_done(late, "ch1", T0 + timedelta(days=2, hours=1), tag))
    bus.publish(module_done(late, T0 + timedelta(days=3)))
    wait_until(lambda: ("first-steps", None) in held(config, late), message="late's events")
    assert ("complaint-master", None) not in held(config, late)

    def step() -> tuple[int, int]:
        progress = badges_of(config, late)["progress"]
        [found] = [p for p in progress if p["badge_id"] == "complaint-master"]
        return found["current"], found["target"]

    # The catalogue a read consults may be up to `reference_cache_seconds` old: poll.
    wait_until(lambda: step() == (1, 2), message="progress toward both courses")
    assert ("complaint-master", None) in held(config, early)

    # ch2 is unpublished: what the late agent did is now all it asks, as of that change.
    withdrawn = course("ch2", 3, False, tag, kind=CourseUpdated)
    bus.publish(withdrawn)
    wait_until(lambda: ("complaint-master", None) in held(config, late), message="on change")
    [award] = [b for b in badges_of(config, late)["badges"] if b["badge_id"] == "complaint-master"]
    assert award["awarded_at"] == "2026-10-08T02:00:00Z"  # the catalogue change's time
    assert withdrawn.id in award["evidence"]


def test_definitions_credentials_and_the_published_key(config, bus, stack):
    url = base_url(config)
    definitions = get_json(f"{url}/v1/badges")["badges"]
    assert len(definitions) == 8
    finisher = next(d for d in definitions if d["badge_id"] == "course-finisher")
    assert [(lv["level"], lv["threshold"], lv["bonus_points"]) for lv in finisher["levels"]] == [
        ("bronze", 1, 20),
        ("silver", 5, 50),
        ("gold", 20, 150),
    ]

    agent = "it-cred"
    publish_all(bus, [course_done(agent, f"k{i}", T0 + timedelta(hours=i)) for i in range(5)])
    wait_until(lambda: ("course-finisher", "silver") in held(config, agent), message="silver")
    cred_url = f"{url}/v1/agents/{agent}/badges/course-finisher/credential"

    several = requests.get(cred_url, timeout=5)
    assert several.status_code == 400
    assert several.json()["error"]["details"] == {"levels": ["bronze", "silver"]}
    assert requests.get(cred_url, params={"level": "gold"}, timeout=5).status_code == 404
    missing = requests.get(f"{url}/v1/agents/{agent}/badges/ticket-ace/credential", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert requests.get(cred_url, params={"format": "xml"}, timeout=5).status_code == 400

    document = get_json(cred_url, params={"level": "silver"})
    assert errors(SCHEMA, document) == []
    assert document["validFrom"] == "2026-10-05T06:00:00Z"
    assert document["credentialSubject"]["achievement"]["name"] == "Course Finisher (Silver)"
    assert document["issuer"]["id"] == "https://skillquest.test/v1/badges/issuer"

    signed = get_json(cred_url, params={"level": "silver", "format": "jwt"})
    issuer = get_json(f"{url}/v1/badges/issuer")
    [method] = issuer["verificationMethod"]
    assert signed["kid"] == method["id"]
    assert verify(signed["jwt"], method["publicKeyJwk"]) == document
    head, payload, signature = signed["jwt"].split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged["validFrom"] = "2020-01-01T00:00:00Z"
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        verify(f"{head}.{forged_payload}.{signature}", method["publicKeyJwk"])
    assert get_json(f"{url}/v1/badges/issuer/jwks")["keys"] == [method["publicKeyJwk"]]

    achievement = get_json(f"{url}/v1/badges/course-finisher/achievement", params={"level": "gold"})
    assert achievement["type"] == ["Achievement"]
    assert requests.get(f"{url}/v1/badges/nope", timeout=5).status_code == 404

    # The generated key is kept in the service's database: a restart signs with it again.
    database = stack[2]
    client = MongoClient(database.uri)
    try:
        name = settings_from_config(config).database_name("badges")
        stored = client[name]["signing_keys"].find_one({"_id": "issuer"})
    finally:
        client.close()
    assert key_from_pem(stored["private_pem"]).public_jwk() == method["publicKeyJwk"]


# --- a batch in one transaction, against the database alone ---------------------------------


@pytest.fixture
def two_databases(database) -> Iterator[tuple[ServiceDatabase, ServiceDatabase]]:
    """Two new databases with the service's collections and indexes."""
    client: MongoClient = MongoClient(database.uri, tz_aware=True)
    made = [fresh_service_database(client, "badges", DOCUMENTS) for _ in range(2)]
    yield made[0], made[1]
    for service_db in made:
        client.drop_database(service_db.db.name)
    client.close()


def left_in(service_db: ServiceDatabase) -> dict[str, Any]:
    """The documents badges keeps and the outgoing events in commit order."""
    db = service_db.db
    left: dict[str, Any] = {
        name: list(db[name].find({}).sort("_id")) for name in (FACTS, AWARDS, AGENTS)
    }
    left["outbox"] = outbox_events(db)
    return left


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_batch_in_one_transaction_leaves_what_one_per_event_leaves(two_databases, seed):
    rng = random.Random(seed)
    events = agent_event_stream(rng, 120, agents=5)
    single, batched = two_databases
    for service_db in (single, batched):
        catalogue = [course_event("ch1", 1), course_event("ch2", 2)]
        service_db.handle_batch(
            "catalog", catalogue, each(partial(handle_catalog_event, rules=SMALL))
        )

    per_event = each(partial(handle_agent_event, rules=SMALL))
    for event in events:
        single.handle_batch("progress", [event], per_event)
    batch_work = partial(handle_agent_events, rules=SMALL)
    results = [
        batched.handle_batch("progress", batch, batch_work) for batch in random_split(rng, events)
    ]

    expected, got = left_in(single), left_in(batched)
    assert got == expected
    assert len(got["outbox"]) == len(got[AWARDS]) == sum(len(r.result or []) for r in results) > 5
    assert {award["badge_id"] for award in got[AWARDS]} == set(SMALL.by_id)
    # Strangers are named by period closes before any event of theirs shows their snapshot.
    assert any(award["agent_id"].startswith("stranger") for award in got[AWARDS])


def test_start_drops_the_indexes_an_earlier_release_made(broker, database):
    prefix = unique_prefix()
    mongo: MongoClient = MongoClient(database.uri)
    db = mongo[f"{prefix}skillquest_badges".replace(".", "_")]
    awards, facts = db[AWARDS], db[FACTS]
    # Earlier releases kept these: no query reads awards by badge, and the ids make the
    # same keys unique.
    awards.create_index("badge_id")
    facts.create_index([("agent_id", 1), ("badge_id", 1), ("key", 1)], unique=True)
    try:
        for _ in range(2):  # idempotent: the second start finds them gone
            with running(BadgesService, service_config(broker, database, prefix)):
                assert set(awards.index_information()) == {"_id_", "agent_id_1_badge_id_1_level_1"}
                assert set(facts.index_information()) == {
                    "_id_",
                    "by_agent",
                    "badge_id_1_agent_id_1",
                }
    finally:
        mongo.close()
