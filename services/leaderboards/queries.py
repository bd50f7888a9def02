"""The read side: a page of a board and one agent's position, in the §5 shapes."""

from __future__ import annotations

from datetime import datetime

from pymongo.database import Database

from contracts.api.leaderboards import (
    Leaderboard,
    LeaderboardEntry,
    LeaderboardPosition,
    LeaderboardQuery,
    PositionQuery,
)
from services.leaderboards.boards import ResolvedPeriod, board_key, parse_scope, resolve_period
from services.leaderboards.store import BoardReader, Row, display
from services.runtime.errors import BadRequest, NotFound


def _resolve(period: str, scope: str, tz: str, now: datetime) -> tuple[ResolvedPeriod, str]:
    try:
        return resolve_period(period, now, tz), parse_scope(scope)
    except ValueError as error:
        raise BadRequest(str(error)) from None


def _entries(reader: BoardReader, rows: list[Row], first_rank: int) -> list[LeaderboardEntry]:
    agents = reader.names([row.agent_id for row in rows])
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
    rows = reader.top(board, query.offset, query.limit)
    return Leaderboard(
        period=resolved.key,
        period_kind=resolved.kind,
        scope=scope,
        starts_at=resolved.starts_at,
        ends_at=resolved.ends_at,
        closed=resolved.kind != "all-time" and reader.is_closed(resolved.key),
        total=reader.stats(board)["entries"],
        entries=_entries(reader, rows, query.offset + 1),
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
    stats = reader.stats(board)
    rank = reader.rank(board, row)
    above = reader.above(board, row, query.neighbors, stats["max_score"])
    below = reader.below(board, row, query.neighbors)
    (me,) = _entries(reader, [row], rank)
    return LeaderboardPosition(
        period=resolved.key,
        scope=scope,
        agent_id=agent_id,
        name=me.name,
        team_id=me.team_id,
        rank=rank,
        score=row.score,
        total=stats["entries"],
        above=_entries(reader, above, rank - len(above)),
        below=_entries(reader, below, rank + 1),
    )
