"""The read side: a page of a board and one agent's position, in the §5 shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.database import Database

from contracts.api.leaderboards import (
    Leaderboard,
    LeaderboardEntry,
    LeaderboardPosition,
    LeaderboardQuery,
    PositionQuery,
)
from services.leaderboards.boards import (
    ResolvedPeriod,
    board_key,
    parse_scope,
    resolve_period,
    total,
)
from services.leaderboards.store import BoardReader, Row, display
from services.runtime.errors import BadRequest, NotFound


def _resolve(period: str, scope: str, tz: str, now: datetime) -> tuple[ResolvedPeriod, str]:
    try:
        return resolve_period(period, now, tz), parse_scope(scope)
    except ValueError as error:
        raise BadRequest(str(error)) from None


def _entries(
    agents: dict[str, dict[str, Any]], rows: list[Row], first_rank: int
) -> list[LeaderboardEntry]:
    entries = []
    for rank, row in enumerate(rows, first_rank):
        name, team = display(agents.get(row.agent_id))
        entries.append(
            LeaderboardEntry(
                rank=rank, agent_id=row.agent_id, name=name, team_id=team, score=row.score
            )
        )
    return entries


def leaderboard(
    db: Database, period: str, query: LeaderboardQuery, *, tz: str, now: datetime
) -> Leaderboard:
    resolved, scope = _resolve(period, query.scope, tz, now)
    reader = BoardReader(db)
    board = board_key(resolved.key, scope)
    histogram = reader.histogram(board)
    rows = reader.top(board, query.offset, query.limit, histogram)
    return Leaderboard(
        period=resolved.key,
        period_kind=resolved.kind,
        scope=scope,
        starts_at=resolved.starts_at,
        ends_at=resolved.ends_at,
        closed=resolved.kind != "all-time" and reader.is_closed(resolved.key),
        total=total(histogram),
        entries=_entries(reader.names([row.agent_id for row in rows]), rows, query.offset + 1),
    )


def position(
    db: Database, period: str, agent_id: str, query: PositionQuery, *, tz: str, now: datetime
) -> LeaderboardPosition:
    resolved, scope = _resolve(period, query.scope, tz, now)
    reader = BoardReader(db)
    board = board_key(resolved.key, scope)
    row = reader.entry(board, agent_id)
    if row is None or row.score <= 0:
        raise NotFound(f"agent {agent_id} is not on the {resolved.key} {scope} board")
    histogram = reader.histogram(board)
    rank = reader.rank(board, row, histogram)
    above, below = reader.neighbours(board, row, rank, query.neighbors, histogram)
    agents = reader.names([other.agent_id for other in [*above, row, *below]])
    (me,) = _entries(agents, [row], rank)
    return LeaderboardPosition(
        period=resolved.key,
        scope=scope,
        agent_id=agent_id,
        name=me.name,
        team_id=me.team_id,
        rank=rank,
        score=row.score,
        total=total(histogram),
        above=_entries(agents, above, rank - len(above)),
        below=_entries(agents, below, rank + 1),
    )
