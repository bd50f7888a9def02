"""Who may call what (ARCHITECTURE §5), as plain functions: agents read their own data and
every leaderboard, managers read their team's agents, admins and services write.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from contracts.vocabulary import ID_PATTERN
from services.gateway.auth import Caller
from services.gateway.routes import PATH_PATTERNS, Policy, Route
from services.runtime.errors import BadRequest, Forbidden

_ID = re.compile(ID_PATTERN)
BACKFILL_FIELD = "occurred_at"


def check_path(route: Route, values: Mapping[str, str]) -> None:
    """Every path parameter is an id of the safe character set (or a period key)."""
    details = []
    for name in route.params:
        value = values.get(name, "")
        pattern = PATH_PATTERNS.get(name)
        if pattern is not None:
            if not re.fullmatch(pattern, value):
                details.append({"field": name, "message": "not a period", "received": value})
        elif not _ID.fullmatch(value):
            details.append(
                {
                    "field": name,
                    "message": "ids are 1-64 characters of A-Z a-z 0-9 . _ : @ -, "
                    "starting with a letter or digit",
                    "received": value[:100],
                }
            )
    if details:
        raise BadRequest("invalid path parameter", details=details)


def authorize(
    caller: Caller,
    route: Route,
    values: Mapping[str, str],
    team_of: Callable[[str], str],
) -> None:
    """Raises 403 unless `caller` may call `route` for these path values.

    `team_of(agent_id)` is only asked for a manager's call about an agent; it raises the
    roster's 404 or a 503 itself.
    """
    policy = route.policy
    if policy is Policy.ADMIN:
        if caller.role == "admin":
            return
        raise Forbidden(f"{route.method} {route.path} is for admins; your role is {caller.role}")
    if policy in (Policy.ANYONE, Policy.PUBLIC) or caller.is_writer:
        return
    if policy is Policy.WRITER:
        raise Forbidden(
            f"{route.method} {route.path} is for admin and service callers; "
            f"your role is {caller.role}"
        )
    if policy is Policy.TEAM_READ:
        if caller.role == "manager" and values.get("team_id") == caller.team:
            return
        if caller.role == "manager":
            raise Forbidden(
                f"managers see their own team only: ask for team_id={caller.team}",
                details={"team_id": values.get("team_id")},
            )
        raise Forbidden("only the team's manager, admins and services may read a team's data")
    agent_id = values["agent_id"]
    if caller.role == "agent":
        if agent_id == caller.sub:
            return
        raise Forbidden("agents may only see and act on their own data")
    if caller.role == "manager" and policy is Policy.AGENT_READ:
        if team_of(agent_id) == caller.team:
            return
        raise Forbidden(f"agent {agent_id} is not in your team ({caller.team})")
    raise Forbidden(f"your role ({caller.role}) may not call {route.method} {route.path}")


def check_backfill(caller: Caller, route: Route, body: Any) -> None:
    """Only admin and service callers may date an event in the past (`occurred_at`)."""
    if isinstance(body, dict) and body.get(BACKFILL_FIELD) is not None and not caller.is_writer:
        raise Forbidden(
            f"`{BACKFILL_FIELD}` (backfill) is for admin and service callers; leave it out "
            "and the time of the call is used"
        )


def check_query_rights(caller: Caller, route: Route, args: Mapping[str, str]) -> None:
    """Query values that widen what a read shows (drafts) are for admin and service callers."""
    if caller.is_writer:
        return
    for name, allowed in route.writer_query:
        if name in args and args[name] != allowed:
            raise Forbidden(
                f"only admin and service callers may ask for {name}={args[name]}; "
                f"leave it out or send {name}={allowed}",
                details=[{"field": name, "received": args[name]}],
            )
