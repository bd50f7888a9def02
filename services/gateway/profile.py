"""`GET /v1/agents/{agent_id}/profile`: the agent's roster entry, points, current weekly and
all-time global ranks, credit view, badges and in-progress courses, fetched concurrently.

A part whose service is down (or slow, or failing) is `null` and named in `unavailable`;
the rest of the profile is still served. Only an agent the roster does not know is a 404.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventlet import GreenPool

from contracts.api.gateway import ProfileRanks, ProfileResponse, RankView
from services.gateway.auth import Caller
from services.gateway.downstream import Downstream
from services.runtime.errors import NotFound, Unavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    name: str
    service: str
    path: str
    query: str = ""


class Missing:
    """The service answered 404: the agent has nothing there (not an outage)."""


def _fetch(downstream: Downstream, part: Part, caller: Caller, headers: dict[str, str]) -> Any:
    try:
        reply = downstream.call(
            part.service, "GET", part.path, query=part.query, caller=caller, headers=headers
        )
    except Unavailable:
        return Unavailable
    if reply.status == 404:
        return Missing
    if not reply.ok:
        log.warning("profile part %s: %s answered %s", part.name, part.service, reply.status)
        return Unavailable
    try:
        return reply.json()
    except ValueError:
        log.warning("profile part %s: %s answered non-JSON", part.name, part.service)
        return Unavailable


def parts_for(agent_id: str, history_limit: int) -> list[Part]:
    agent = f"/v1/agents/{agent_id}"
    return [
        Part("agent", "progress", agent),
        Part("points", "points", f"{agent}/points", f"limit={history_limit}"),
        Part(
            "weekly_rank",
            "leaderboards",
            f"/v1/leaderboards/weekly/agents/{agent_id}",
            "scope=global&neighbors=0",
        ),
        Part(
            "all_time_rank",
            "leaderboards",
            f"/v1/leaderboards/all-time/agents/{agent_id}",
            "scope=global&neighbors=0",
        ),
        Part("credits", "credits", f"{agent}/credits"),
        Part("badges", "badges", f"{agent}/badges"),
        Part("courses", "progress", f"{agent}/courses", "status=in_progress&limit=100"),
    ]


def in_progress(courses: Any) -> list[dict[str, Any]]:
    """Enrolled courses that are not completed, whatever list wrapper the service uses."""
    items = courses.get("courses", []) if isinstance(courses, dict) else courses
    if not isinstance(items, list):
        return []
    result = []
    for item in items:
        if not isinstance(item, dict):
            continue
        status = item.get("status")
        done = (
            status == "completed"
            if status is not None
            else bool(item.get("completed") or item.get("completed_at"))
        )
        if not done:
            result.append(item)
    return result


def rank_view(period: str, position: Any) -> RankView:
    if position is Missing or not isinstance(position, dict):
        return RankView(period=period, rank=None, score=0)
    return RankView(
        period=str(position.get("period") or period),
        scope=str(position.get("scope") or "global"),
        rank=position.get("rank"),
        score=int(position.get("score") or 0),
    )


def build_profile(
    downstream: Downstream,
    agent_id: str,
    caller: Caller,
    *,
    history_limit: int = 10,
    headers: dict[str, str] | None = None,
    spawn_pool: Callable[[int], GreenPool] = GreenPool,
) -> ProfileResponse:
    parts = parts_for(agent_id, history_limit)
    pool = spawn_pool(len(parts))
    answers = dict(
        zip(
            [p.name for p in parts],
            pool.imap(lambda part: _fetch(downstream, part, caller, headers or {}), parts),
            strict=True,
        )
    )
    if answers["agent"] is Missing:
        raise NotFound(f"agent {agent_id} not found")
    unavailable = [name for name, value in answers.items() if value is Unavailable]

    def value(name: str) -> Any:
        found = answers[name]
        return None if found is Unavailable or found is Missing else found

    courses = answers["courses"]
    return ProfileResponse(
        agent_id=agent_id,
        agent=value("agent"),
        points=value("points"),
        ranks=ProfileRanks(
            weekly=None
            if answers["weekly_rank"] is Unavailable
            else rank_view("weekly", answers["weekly_rank"]),
            all_time=None
            if answers["all_time_rank"] is Unavailable
            else rank_view("all-time", answers["all_time_rank"]),
        ),
        credits=value("credits"),
        badges=value("badges"),
        courses_in_progress=None
        if courses is Unavailable
        else in_progress(courses if courses is not Missing else []),
        unavailable=unavailable,
    )
