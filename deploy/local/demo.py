"""Seeds a realistic organisation through the gateway (`make demo`, with `make run` up).

Three teams, 30 agents across the three tiers, eight courses over the three competency
dimensions (two tagged complaint-handling, one coaching), and three weeks of backfilled
learning activity and tickets, so that every board, badge and credit view has something to
show. Deterministic (seeded), and safe to run twice: what exists already is skipped.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

TEAMS = ("team-harbour", "team-lotus", "team-summit")
FIRST = ("Li", "Wang", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu")
GIVEN = ("Wei", "Fang", "Min", "Jing", "Lei", "Yan", "Tao", "Hui", "Qiang", "Xin")
# 14 foundation, 10 advanced, 6 leadership: a typical pyramid.
TIER_PLAN = ("foundation",) * 14 + ("advanced",) * 10 + ("leadership",) * 6


def _modules(*kinds: str) -> list[dict[str, Any]]:
    titles = {"lesson": "Lesson", "quiz": "Quiz", "roleplay": "Role-play", "practice": "Practice"}
    modules = []
    for index, kind in enumerate(kinds, start=1):
        module: dict[str, Any] = {
            "module_id": f"m{index}-{kind}",
            "kind": kind,
            "title": f"{titles[kind]} {index}",
        }
        if kind in ("quiz", "roleplay"):
            module["pass_score"] = 80
        modules.append(module)
    return modules


COURSES: tuple[dict[str, Any], ...] = (
    {
        "course_id": "active-listening",
        "title": "Active listening on the phone",
        "tier": "foundation",
        "dimension": "communication",
        "credit_hours": 4.0,
        "tags": ["soft-skills"],
        "modules": _modules("lesson", "roleplay", "quiz"),
    },
    {
        "course_id": "crm-essentials",
        "title": "CRM essentials",
        "tier": "foundation",
        "dimension": "technology",
        "credit_hours": 4.5,
        "tags": ["tools"],
        "modules": _modules("lesson", "practice", "quiz"),
    },
    {
        "course_id": "first-contact-resolution",
        "title": "First-contact resolution",
        "tier": "foundation",
        "dimension": "problem_solving",
        "credit_hours": 4.0,
        "tags": ["resolution"],
        "modules": _modules("lesson", "practice", "roleplay"),
    },
    {
        "course_id": "complaint-deescalation",
        "title": "De-escalating complaints",
        "tier": "advanced",
        "dimension": "communication",
        "credit_hours": 8.0,
        "tags": ["complaint-handling"],
        "modules": _modules("lesson", "roleplay", "quiz"),
    },
    {
        "course_id": "complaint-root-cause",
        "title": "Complaint root-cause analysis",
        "tier": "advanced",
        "dimension": "problem_solving",
        "credit_hours": 8.0,
        "tags": ["complaint-handling"],
        "modules": _modules("lesson", "practice", "quiz"),
    },
    {
        "course_id": "omnichannel-tools",
        "title": "Omnichannel tools: chat, mail and voice",
        "tier": "advanced",
        "dimension": "technology",
        "credit_hours": 8.0,
        "tags": ["tools"],
        "modules": _modules("lesson", "practice", "quiz"),
    },
    {
        "course_id": "coaching-peers",
        "title": "Coaching your peers",
        "tier": "leadership",
        "dimension": "communication",
        "credit_hours": 6.0,
        "tags": ["coaching"],
        "modules": _modules("lesson", "roleplay", "practice"),
    },
    {
        "course_id": "workforce-analytics",
        "title": "Workforce analytics for team leads",
        "tier": "leadership",
        "dimension": "technology",
        "credit_hours": 6.0,
        "tags": ["analytics"],
        "modules": _modules("lesson", "practice", "quiz"),
    },
)


@dataclass
class Call:
    method: str
    path: str
    body: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None


def organisation() -> list[dict[str, Any]]:
    agents = []
    for index, tier in enumerate(TIER_PLAN):
        agents.append(
            {
                "agent_id": f"agent-{index + 1:02d}",
                "name": f"{FIRST[index % 10]} {GIVEN[(index * 3) % 10]}",
                "team_id": TEAMS[index % 3],
                "tier": tier,
            }
        )
    return agents


def activity(agents: list[dict[str, Any]], now: datetime, days: int = 21) -> Iterator[Call]:
    """Backfilled calls in time order: enrolments, modules, attempts, feedback, tickets."""
    rng = random.Random(20261123)
    start = (now - timedelta(days=days)).replace(hour=1, minute=0, second=0, microsecond=0)
    # Anchored to a whole hour: the same history whenever it is seeded on the same day.
    calls: list[Call] = []
    by_tier = {tier: [c for c in COURSES if c["tier"] == tier] for tier in set(TIER_PLAN)}
    for agent in agents:
        diligence = rng.uniform(0.3, 1.0)  # how much this agent learns
        own = list(by_tier[agent["tier"]])
        rng.shuffle(own)
        chosen = own[: max(1, round(len(own) * diligence))]
        if agent["tier"] != "leadership" and rng.random() < diligence:
            above = "advanced" if agent["tier"] == "foundation" else "leadership"
            chosen.append(rng.choice(by_tier[above]))
        when = start + timedelta(hours=rng.uniform(0, 48))
        for course in chosen:
            agent_path = f"/v1/agents/{agent['agent_id']}"
            course_path = f"{agent_path}/courses/{course['course_id']}"
            calls.append(
                Call("POST", f"{agent_path}/enrollments", {"course_id": course["course_id"]}, when)
            )
            finished = rng.random() < 0.5 + diligence / 2
            for position, module in enumerate(course["modules"]):
                when += timedelta(hours=rng.uniform(3, 30))
                if not finished and position == len(course["modules"]) - 1:
                    break
                path = f"{course_path}/modules/{module['module_id']}"
                if module["kind"] in ("quiz", "roleplay"):
                    for _ in range(3):
                        score = min(100, int(rng.gauss(82 + 12 * diligence, 9)))
                        calls.append(Call("POST", f"{path}/attempts", {"score": score}, when))
                        if score >= module["pass_score"]:
                            break
                        when += timedelta(hours=rng.uniform(1, 6))
                    else:
                        calls.append(Call("POST", f"{path}/attempts", {"score": 90}, when))
                else:
                    calls.append(Call("POST", f"{path}/complete", {}, when))
            if finished:
                when += timedelta(hours=1)
                rating = {"rating": rng.randint(3, 5), "comment": "Useful for my daily calls."}
                calls.append(Call("POST", f"{course_path}/feedback", rating, when))
        for day in range(days):
            for _ in range(rng.randint(0, 4)):  # tickets closed that day
                resolved = start + timedelta(days=day, hours=rng.uniform(0, 10))
                qa = max(40, min(100, int(rng.gauss(84 + 10 * diligence, 7))))
                ticket = {
                    "ticket_id": f"T-{agent['agent_id']}-{day:02d}-{rng.randrange(10**6):06d}",
                    "agent_id": agent["agent_id"],
                    "qa_score": qa,
                    "csat": max(1, min(5, round(qa / 20))),
                    "resolved_at": _iso(resolved),
                }
                calls.append(Call("POST", "/v1/tickets", ticket))
    latest = now - timedelta(minutes=5)
    for call in calls:  # nothing may be dated in the future
        if call.occurred_at and call.occurred_at > latest:
            call.occurred_at = latest
    return iter(sorted(calls, key=lambda c: c.occurred_at or _ticket_time(c)))


def _ticket_time(call: Call) -> datetime:
    return datetime.fromisoformat(call.body["resolved_at"].replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Seeder:
    """Calls the gateway as an admin (roster, catalogue, backfilled progress) and as the
    work-order system (tickets, which need the service role)."""

    def __init__(self, gateway: str, admin_token: str, service_token: str) -> None:
        self.gateway = gateway.rstrip("/")
        self.admin = self._session(admin_token)
        self.work_orders = self._session(service_token)
        self.failures: list[str] = []

    @staticmethod
    def _session(token: str) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        return session

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> int:
        session = self.work_orders if path == "/v1/tickets" else self.admin
        response = session.request(method, self.gateway + path, json=body, timeout=30)
        # 409: it exists already (a second run); 200 on a ticket: a known duplicate.
        if response.status_code >= 400 and response.status_code != 409:
            self.failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return response.status_code

    def seed(self, now: datetime, days: int = 21) -> int:
        """Seeds everything; returns the number of activity calls made (0 if seeded before).

        Attempts are not idempotent (each one is a new, numbered attempt), so the history is
        only replayed into an organisation that does not exist yet.
        """
        agents = organisation()
        probe = self.admin.get(f"{self.gateway}/v1/agents/{agents[0]['agent_id']}", timeout=30)
        if probe.status_code == 200:
            print("the demo organisation is there already: nothing to do")
            return 0
        for agent in agents:
            self.call("POST", "/v1/agents", agent)
        for course in COURSES:
            self.call("POST", "/v1/courses", course)
        count = 0
        for call in activity(agents, now, days):
            body = dict(call.body)
            if call.occurred_at is not None:
                body["occurred_at"] = _iso(call.occurred_at)
            self.call(call.method, call.path, body)
            count += 1
            if count % 250 == 0:
                print(f"  {count} calls...", flush=True)
        print(f"seeded {len(agents)} agents, {len(COURSES)} courses, {count} activity calls")
        return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:8080")
    parser.add_argument("--days", type=int, default=21, help="days of backfilled history")
    args = parser.parse_args(argv)
    seeder = Seeder(args.gateway, _token("admin"), _token("service"))
    seeder.seed(datetime.now(UTC), args.days)
    for failure in seeder.failures[:20]:
        print("failed:", failure, file=sys.stderr)
    return 1 if seeder.failures else 0


def _token(role: str) -> str:
    # JWT_SECRET from the environment, or the secret `make run` keeps under .data/.
    from services.gateway.token import mint_from_environment

    return mint_from_environment(role=role, sub=f"demo-{role}")


if __name__ == "__main__":
    sys.exit(main())
