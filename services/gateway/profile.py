"""`GET /v1/agents/{agent_id}/profile`: the agent's roster entry, points, current weekly and
all-time global ranks, credit view, badges and in-progress courses, fetched concurrently.

Five calls: progress answers the roster entry and the courses in one (`/summary`), the
leaderboards both ranks in one (`/standings`); every call saved is an HTTP hop less in the
gateway and in a service. Those two endpoints came with this gateway: roll out progress and
the leaderboards before it (an older progress answers `/summary` with a 404, which reads as
an unknown agent).

A part whose service is down (or slow, or failing) is `null` and named in `unavailable`
(both parts of a call that failed); the rest of the profile is still served. Only an agent
the roster does not know is a 404.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args

from eventlet import GreenPool

from contracts.api.gateway import ProfilePart, ProfileRanks, ProfileResponse, RankView
from services.gateway.auth import Caller
from services.gateway.downstream import Downstream
from services.runtime.errors import NotFound, Unavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    """One downstream call, answering the profile parts `names`."""

    names: tuple[ProfilePart, ...]
    service: str
    path: str
    query: str = ""
    #: How the answer of a call for several parts is shared out (one part takes it whole).
    share: Callable[[dict[str, Any]], dict[ProfilePart, Any]] | None = None


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
        log.warning("profile %s: %s answered %s", "+".join(part.names), part.service, reply.status)
        return Unavailable
    try:
        return reply.json()
    except ValueError:
        log.warning("profile %s: %s answered non-JSON", "+".join(part.names), part.service)
        return Unavailable


#: The boards of the profile's ranks, asked of the leaderboards in this order.
RANK_PERIODS = ("weekly", "all-time")


def _summary_shares(summary: dict[str, Any]) -> dict[ProfilePart, Any]:
    return {"agent": summary.get("agent"), "courses": summary.get("courses")}


def _standings_shares(standings: dict[str, Any]) -> dict[ProfilePart, Any]:
    by_period = dict(zip(RANK_PERIODS, standings.get("standings") or [], strict=False))
    return {"weekly_rank": by_period.get("weekly"), "all_time_rank": by_period.get("all-time")}


def parts_for(agent_id: str, history_limit: int) -> list[Part]:
    agent = f"/v1/agents/{agent_id}"
    return [
        Part(
            ("agent", "courses"),
            "progress",
            f"{agent}/summary",
            "status=in_progress&limit=100",
            share=_summary_shares,
        ),
        Part(("points",), "points", f"{agent}/points", f"limit={history_limit}"),
        Part(
            ("weekly_rank", "all_time_rank"),
            "leaderboards",
            f"{agent}/standings",
            f"periods={','.join(RANK_PERIODS)}&scope=global",
            share=_standings_shares,
        ),
        Part(("credits",), "credits", f"{agent}/credits"),
        Part(("badges",), "badges", f"{agent}/badges"),
    ]


def split(part: Part, answer: Any) -> dict[ProfilePart, Any]:
    """Each of the part's names with its share of the call's answer (the same outage or
    404 for all of them)."""
    if answer is Unavailable or answer is Missing or part.share is None:
        return {name: answer for name in part.names}
    return part.share(answer)


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


def rank_view(period: str, standing: Any) -> RankView:
    """A global board's standing as the profile shows it (no rank: not on the board)."""
    if not isinstance(standing, dict):
        return RankView(period=period, rank=None, score=0)
    return RankView(
        period=str(standing.get("period") or period),
        rank=standing.get("rank"),
        score=int(standing.get("score") or 0),
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
    answers: dict[ProfilePart, Any] = {}
    fetched = pool.imap(lambda part: _fetch(downstream, part, caller, headers or {}), parts)
    for part, answer in zip(parts, fetched, strict=True):
        answers |= split(part, answer)
    if answers["agent"] is Missing:
        raise NotFound(f"agent {agent_id} not found")
    unavailable = [name for name in get_args(ProfilePart) if answers[name] is Unavailable]

    def value(name: ProfilePart) -> Any:
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
