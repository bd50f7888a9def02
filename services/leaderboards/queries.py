"""The read side: a page of a board and one agent's position, in the §5 shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo.database import Database

from contracts.api.leaderboards import (
    AgentStanding,
    AgentStandings,
    Leaderboard,
    LeaderboardEntry,
    LeaderboardPosition,
    LeaderboardQuery,
    PositionQuery,
    StandingsQuery,
)
from services.leaderboards.boards import (
    ResolvedPeriod,
    board_key,
    parse_scope,
    resolve_period,
    total,
)
from services.leaderboards.store import BoardReader, RecentCache, Row, display
from services.leaderboards.views import BoardViews
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


def _names(
    reader: BoardReader, views: BoardViews | None, rows: list[Row]
) -> dict[str, dict[str, Any]]:
    """What to show the rows' agents by: from the names the views hold (names.py), which
    read from the database what they do not hold."""
    ids = [row.agent_id for row in rows]
    return reader.names(ids) if views is None else views.names.displays(ids, reader.names)


#: Pages as answered, with when their board's count maps were read (time.monotonic()).
_ANSWERED: RecentCache[tuple[str, str, int, int], Leaderboard] = RecentCache(256)


def leaderboard(
    db: Database,
    period: str,
    query: LeaderboardQuery,
    *,
    tz: str,
    now: datetime,
    fresh_for: float = 0.0,
    views: BoardViews | None = None,
) -> Leaderboard:
    """A page of a board: from the board's read view when it is held (views.py), else
    from the database. With `fresh_for` > 0 (seconds), a page answered here from a view or
    count maps caught up or read less than that long ago is answered again as it was (names
    included): the busiest read, the top of a board, then costs no query while the window
    lasts."""
    resolved, scope = _resolve(period, query.scope, tz, now)
    board = board_key(resolved.key, scope)
    key = (db.name, board, query.offset, query.limit)
    answered = _ANSWERED.get(key, fresh_for)
    if answered is not None:
        return answered[1]
    reader = BoardReader(db, fresh_for=fresh_for)
    view = views.ready(board) if views is not None else None
    if view is not None:
        rows, size, read_at = view.page(query.offset, query.limit), len(view), view.synced_at
    else:
        histogram = reader.histogram(board)
        rows = reader.top(board, query.offset, query.limit, histogram)
        size, read_at = total(histogram), reader.read_at(board)
    page = Leaderboard(
        period=resolved.key,
        period_kind=resolved.kind,
        scope=scope,
        starts_at=resolved.starts_at,
        ends_at=resolved.ends_at,
        closed=resolved.kind != "all-time" and reader.is_closed(resolved.key),
        total=size,
        entries=_entries(_names(reader, views, rows), rows, query.offset + 1),
    )
    if fresh_for > 0:
        _ANSWERED.put(key, read_at, page)
    return page


def standings(
    db: Database,
    agent_id: str,
    query: StandingsQuery,
    *,
    tz: str,
    now: datetime,
    fresh_for: float = 0.0,
    views: BoardViews | None = None,
) -> AgentStandings:
    """One agent's rank and score on each board asked, as `position` finds them (no
    neighbours): one call for the boards a profile shows."""
    ask = PositionQuery(scope=query.scope, neighbors=0)
    found = []
    for period in query.periods:
        try:
            at = position(
                db, period, agent_id, ask, tz=tz, now=now, fresh_for=fresh_for, views=views
            )
        except NotFound:
            key = _resolve(period, query.scope, tz, now)[0].key
            found.append(AgentStanding(period=key, rank=None, score=0))
            continue
        found.append(AgentStanding(period=at.period, rank=at.rank, score=at.score))
    return AgentStandings(agent_id=agent_id, scope=query.scope, standings=found)


def position(
    db: Database,
    period: str,
    agent_id: str,
    query: PositionQuery,
    *,
    tz: str,
    now: datetime,
    fresh_for: float = 0.0,
    views: BoardViews | None = None,
) -> LeaderboardPosition:
    """One agent's rank and neighbours: from the board's read view when it is held (caught
    up at most `fresh_for` seconds ago) and holds the agent, else from the database. An
    agent the view does not hold on the board is read from the database (one who just
    arrived is found at once) and the entry read goes into the view. On the database path
    the board's count maps may be up to `fresh_for` seconds old, unless they count nobody
    at the entry's score (read before the agent reached it): then they are read again."""
    resolved, scope = _resolve(period, query.scope, tz, now)
    reader = BoardReader(db, fresh_for=fresh_for)
    board = board_key(resolved.key, scope)
    # Asked first: a board is held for the reads of it, an agent's 404 included.
    view = views.ready(board) if views is not None else None
    row = view.entry(agent_id) if view is not None else None
    if row is None:
        row = reader.entry(board, agent_id)
        if row is None or row.score <= 0:
            raise NotFound(f"agent {agent_id} is not on the {resolved.key} {scope} board")
        if view is not None:
            view.apply(row.agent_id, row.score, row.reached_at, row.version)
    placed = None
    if view is not None:
        placed, size = view.place(agent_id, query.neighbors), len(view)
    if placed is None:
        histogram = reader.histogram(board)
        if histogram.get(row.score, 0) == 0:
            histogram = reader.histogram(board, refresh=True)
        placed, size = reader.place(board, row, query.neighbors, histogram), total(histogram)
    rank, above, below = placed
    agents = _names(reader, views, [*above, row, *below])
    (me,) = _entries(agents, [row], rank)
    return LeaderboardPosition(
        period=resolved.key,
        scope=scope,
        agent_id=agent_id,
        name=me.name,
        team_id=me.team_id,
        rank=rank,
        score=row.score,
        total=size,
        above=_entries(agents, above, rank - len(above)),
        below=_entries(agents, below, rank + 1),
    )
