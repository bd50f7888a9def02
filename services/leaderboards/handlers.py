"""Functions (event, uow, ...) that apply the leaderboard rules through the store."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from pymongo import UpdateOne
from pymongo.errors import DuplicateKeyError

from contracts.api.leaderboards import RebuildReport
from contracts.events import (
    AgentRegistered,
    AgentUpdated,
    LeaderboardPeriodClosed,
    PeriodClosedData,
    PointsAwarded,
    PointsReversed,
    StandingData,
)
from services.common.periods import last_instant, period_bounds, period_key
from services.leaderboards.boards import (
    CLOSE_TOP,
    GLOBAL,
    BoardRef,
    PointChange,
    Standing,
    board_key,
    boards_of,
    closable_periods,
    fold,
    score_bound,
)
from services.leaderboards.store import (
    AGENTS,
    APPLIED,
    BOARDS,
    CLOSES,
    ENTRIES,
    PERIODS,
    BoardReader,
    display,
    entry_id,
)
from services.runtime.mongo import ServiceDatabase, UnitOfWork

#: Ids of period_closed events are derived from the period key: should a close ever be
#: attempted twice past the unique close record, the outbox's unique event id (and every
#: consumer's handled-event ids) would still let only one through.
CLOSE_EVENT_NAMESPACE = uuid.UUID("6f1c3f1e-2b7a-4a53-9a55-5f0c0d6d1b2e")
#: Points arriving for a period refresh its "last points" time at most this often: the
#: period document is shared by every agent, and a write per event would make it a hot spot.
TOUCH_RESOLUTION = timedelta(seconds=1)


def change_of(event: PointsAwarded | PointsReversed) -> PointChange:
    data = event.data
    return PointChange(
        event_id=event.id,
        agent_id=data.agent_id,
        delta=data.delta,
        occurred_at=data.occurred_at,
        team_id=data.team_id,
        tier=data.tier,
    )


# --- points ------------------------------------------------------------------------


def apply_points(
    event: PointsAwarded | PointsReversed, uow: UnitOfWork, *, tz: str, now: datetime
) -> str:
    """Logs the change and adds it to its nine board entries, all in one transaction."""
    change = change_of(event)
    s = uow.session
    log = uow.collection(APPLIED)
    if log.find_one({"_id": change.event_id}, {"_id": 1}, session=s) is not None:
        return "duplicate"  # in the log already (e.g. restored): boards include it
    log.insert_one(
        {
            "_id": change.event_id,
            "agent_id": change.agent_id,
            "delta": change.delta,
            "occurred_at": change.occurred_at,
            "team_id": change.team_id,
            "tier": change.tier,
            "type": event.type,
            "award_id": event.data.award_id,
            "applied_at": now,
        },
        session=s,
    )
    _add_to_entries(uow, list(boards_of(change, tz)), change)
    for kind, key in closable_periods(change, tz):
        _touch_period(uow, kind, key, tz, now)
    _remember_points_team(uow, change)
    return "applied"


def _add_to_entries(uow: UnitOfWork, boards: list[BoardRef], change: PointChange) -> None:
    """Adds the change to its entry on each board: three round trips for all nine boards
    (one bulk write, one read of the new scores, one of the boards' stats) instead of two
    per board. Against the database each statement in a transaction costs the most."""
    s = uow.session
    ids = [entry_id(board.key, change.agent_id) for board in boards]
    uow.collection(ENTRIES).bulk_write(
        [
            UpdateOne(
                {"_id": id_},
                {
                    "$inc": {"score": change.delta},
                    "$max": {"reached_at": change.occurred_at},
                    "$setOnInsert": {
                        "board": board.key,
                        "agent_id": change.agent_id,
                        "period_key": board.period_key,
                        "scope": board.scope,
                    },
                },
                upsert=True,
            )
            for id_, board in zip(ids, boards, strict=True)
        ],
        ordered=True,
        session=s,
    )
    scores = {
        doc["_id"]: doc["score"]
        for doc in uow.collection(ENTRIES).find({"_id": {"$in": ids}}, {"score": 1}, session=s)
    }
    stats = {
        doc["_id"]: doc
        for doc in uow.collection(BOARDS).find(
            {"_id": {"$in": [board.key for board in boards]}}, session=s
        )
    }
    for id_, board in zip(ids, boards, strict=True):
        new_score = scores[id_]
        _adjust_stats(
            uow, board.key, new_score - change.delta, new_score, known=stats.get(board.key, {})
        )


def _adjust_stats(
    uow: UnitOfWork,
    board: str,
    old_score: int,
    new_score: int,
    known: dict[str, Any] | None = None,
) -> None:
    """Keeps the board's agent count and best-score bound in step with one entry's change.

    The stats document is shared by every agent of the board, so it is written only when
    it must change: an agent joins or leaves the board, or a score passes the bound, which
    is kept at a power of two so that it moves a few dozen times in a board's life rather
    than with every award of the leader (each write there conflicts with its neighbours').
    """
    joined = (new_score > 0) - (old_score > 0)
    # `known`: the stats document read already in this transaction ({} when there is none).
    if known is None:
        stats = uow.collection(BOARDS).find_one({"_id": board}, session=uow.session)
    else:
        stats = known or None
    raise_max = new_score > (stats or {}).get("max_score", 0)
    if not joined and not raise_max and stats is not None:
        return
    update: dict[str, Any] = {"$inc": {"entries": joined}}
    if raise_max:
        update["$max"] = {"max_score": score_bound(new_score)}
    else:
        update["$setOnInsert"] = {"max_score": 0}
    uow.collection(BOARDS).update_one({"_id": board}, update, upsert=True, session=uow.session)


def _touch_period(uow: UnitOfWork, kind: str, key: str, tz: str, now: datetime) -> None:
    periods = uow.collection(PERIODS)
    found = periods.find_one({"_id": key}, {"last_points_at": 1}, session=uow.session)
    if found is None:
        _, ends_at = period_bounds(key, tz)
        periods.update_one(
            {"_id": key},
            {
                "$setOnInsert": {"kind": kind, "ends_at": ends_at, "closed_at": None},
                "$max": {"last_points_at": now},
            },
            upsert=True,
            session=uow.session,
        )
    elif found["last_points_at"] < now - TOUCH_RESOLUTION:
        periods.update_one({"_id": key}, {"$max": {"last_points_at": now}}, session=uow.session)


def _remember_points_team(uow: UnitOfWork, change: PointChange) -> None:
    """The team of the agent's latest point event: shown until the roster event arrives."""
    agents = uow.collection(AGENTS)
    agent = agents.find_one({"_id": change.agent_id}, {"points_at": 1}, session=uow.session)
    if agent is not None and agent.get("points_at") and agent["points_at"] >= change.occurred_at:
        return
    agents.update_one(
        {"_id": change.agent_id},
        {"$set": {"points_team_id": change.team_id, "points_at": change.occurred_at}},
        upsert=True,
        session=uow.session,
    )


# --- roster ------------------------------------------------------------------------


def apply_roster(event: AgentRegistered | AgentUpdated, uow: UnitOfWork) -> bool:
    """Keeps the newest roster state per agent (by event time, then event id): any order."""
    data = event.data
    agents = uow.collection(AGENTS)
    agent = agents.find_one({"_id": data.agent_id}, session=uow.session) or {}
    if agent.get("roster_at") is not None:
        known = (agent["roster_at"], agent.get("roster_event_id") or "")
        # Mongo keeps milliseconds: compare at that precision so a re-read never looks newer.
        moment = event.time.replace(microsecond=event.time.microsecond // 1000 * 1000)
        if (moment, event.id) <= known:
            return False
    agents.update_one(
        {"_id": data.agent_id},
        {
            "$set": {
                "name": data.name,
                "team_id": data.team_id,
                "tier": data.tier,
                "roster_at": event.time,
                "roster_event_id": event.id,
            }
        },
        upsert=True,
        session=uow.session,
    )
    return True


# --- period close --------------------------------------------------------------------


class AlreadyClosed(Exception):
    """Another instance (or an earlier run) closed the period first."""


def due_periods(database: ServiceDatabase, now: datetime, grace: timedelta) -> list[str]:
    """Keys of ended, unclosed periods that received no points for `grace`."""
    cutoff = now - grace
    query = {"closed_at": None, "ends_at": {"$lte": cutoff}, "last_points_at": {"$lte": cutoff}}
    docs = database.collection(PERIODS).find(query, {"_id": 1}).sort("ends_at", 1)
    return [doc["_id"] for doc in docs]


def close_period(uow: UnitOfWork, key: str, *, tz: str, now: datetime) -> str | None:
    """Publishes the period's close with its global top 10 as it stands; once per period.

    Returns the period kind when this call closed it, None when it was already closed.
    Raises AlreadyClosed when a concurrent close committed its unique record first.
    """
    s = uow.session
    period = uow.collection(PERIODS).find_one({"_id": key}, session=s)
    if period is None or period.get("closed_at") is not None:
        return None
    board = board_key(key, GLOBAL)
    reader = BoardReader(uow.db, s)
    rows = reader.top(board, 0, CLOSE_TOP)
    agents = reader.names([row.agent_id for row in rows])
    top = [
        StandingData(
            rank=rank,
            agent_id=row.agent_id,
            score=row.score,
            team_id=display(agents.get(row.agent_id))[1],
        )
        for rank, row in enumerate(rows, 1)
    ]
    event = LeaderboardPeriodClosed(
        id=str(uuid.uuid5(CLOSE_EVENT_NAMESPACE, key)),
        type=LeaderboardPeriodClosed.TYPE,
        source=uow.source,
        subject=key,
        time=last_instant(key, tz),
        data=PeriodClosedData(period=period["kind"], period_key=key, top=top),
    )
    try:
        uow.collection(CLOSES).insert_one(
            {
                "_id": key,
                "kind": period["kind"],
                "closed_at": now,
                "event_id": event.id,
                "top": [standing.model_dump() for standing in top],
            },
            session=s,
        )
    except DuplicateKeyError:
        raise AlreadyClosed(key) from None
    uow.collection(PERIODS).update_one({"_id": key}, {"$set": {"closed_at": now}}, session=s)
    uow.publish(event)
    return str(period["kind"])


def close_due_at(database: ServiceDatabase, kind: str, *, tz: str, now: datetime) -> datetime:
    """When the oldest period of `kind` not closed yet ended; the current period's end when
    every earlier one is closed. Exported so an alert can tell a close that is overdue."""
    oldest = database.collection(PERIODS).find_one(
        {"kind": kind, "closed_at": None}, {"ends_at": 1}, sort=[("ends_at", 1)]
    )
    if oldest is not None:
        return oldest["ends_at"]
    return period_bounds(period_key(kind, now, tz), tz)[1]  # type: ignore[arg-type]


def close_due_periods(
    database: ServiceDatabase, *, tz: str, now: datetime, grace: timedelta
) -> list[str]:
    """Closes every period that is due; returns the kinds of those this call closed."""
    closed = []
    for key in due_periods(database, now, grace):
        try:
            kind = database.transaction(partial(close_period, key=key, tz=tz, now=now))
        except (AlreadyClosed, DuplicateKeyError):
            continue
        if kind is not None:
            closed.append(kind)
    return closed


# --- rebuild -------------------------------------------------------------------------


def rebuild(database: ServiceDatabase, *, tz: str, now: datetime | None = None) -> RebuildReport:
    """Recomputes every board from the applied-points log and rewrites what differs.

    Safe while events are consumed: the log and the entries change together in one
    transaction, so each agent is recomputed from its log inside a transaction of its own
    (a concurrent change of that agent conflicts and is retried), never from a stale scan.
    """
    started = datetime.now(UTC)
    clock = time.monotonic()
    now = now or started
    reader = BoardReader(database.db)
    changes = list(reader.log())
    expected = fold(changes, tz)
    live = {
        (board, row.agent_id): Standing(row.score, row.reached_at)
        for board, row in reader.all_entries()
    }
    suspects = {
        agent for (board, agent), want in expected.items() if live.get((board, agent)) != want
    }
    suspects |= {agent for (board, agent) in live if (board, agent) not in expected}
    fixed = agents_fixed = 0
    for agent_id in sorted(suspects):
        count = database.transaction(partial(_rebuild_agent, agent_id=agent_id, tz=tz))
        fixed += count
        agents_fixed += count > 0
    recounted = _recount_boards(database, expected)
    periods = {period for change in changes for period in closable_periods(change, tz)}
    for kind, key in sorted(periods):
        _ensure_period(database, kind, key, tz, now)
    return RebuildReport(
        applied_events=len(changes),
        entries_expected=len(expected),
        entries_fixed=fixed,
        agents_fixed=agents_fixed,
        boards_recounted=recounted,
        started_at=started,
        duration_seconds=round(time.monotonic() - clock, 3),
    )


def _rebuild_agent(uow: UnitOfWork, agent_id: str, tz: str) -> int:
    reader = BoardReader(uow.db, uow.session)
    expected = {board: standing for (board, _), standing in fold(reader.log(agent_id), tz).items()}
    live = reader.agent_entries(agent_id)
    entries = uow.collection(ENTRIES)
    fixed = 0
    for board in set(expected) | set(live):
        want, have = expected.get(board), live.get(board)
        if have is not None and want == Standing(have.score, have.reached_at):
            continue
        fixed += 1
        old_score = have.score if have is not None else 0
        if want is None:
            entries.delete_one({"_id": entry_id(board, agent_id)}, session=uow.session)
            _adjust_stats(uow, board, old_score, 0)
            continue
        period_key, _, scope = board.partition("|")
        entries.update_one(
            {"_id": entry_id(board, agent_id)},
            {
                "$set": {
                    "board": board,
                    "agent_id": agent_id,
                    "score": want.score,
                    "reached_at": want.reached_at,
                    "period_key": period_key,
                    "scope": scope,
                }
            },
            upsert=True,
            session=uow.session,
        )
        _adjust_stats(uow, board, old_score, want.score)
    return fixed


def _recount_boards(database: ServiceDatabase, expected: dict[tuple[str, str], Standing]) -> int:
    """Corrects boards whose stored agent count differs from their entries."""
    counts: dict[str, int] = defaultdict(int)
    for (board, _), standing in expected.items():
        counts[board] += standing.score > 0
    stored = {doc["_id"]: doc.get("entries", 0) for doc in database.collection(BOARDS).find()}
    recounted = 0
    for board in set(counts) | set(stored):
        if counts.get(board, 0) == stored.get(board, 0):
            continue

        def recount(uow: UnitOfWork, board: str = board) -> None:
            n = uow.collection(ENTRIES).count_documents(
                {"board": board, "score": {"$gt": 0}}, session=uow.session
            )
            uow.collection(BOARDS).update_one(
                {"_id": board}, {"$set": {"entries": n}}, upsert=True, session=uow.session
            )

        database.transaction(recount)
        recounted += 1
    return recounted


def _ensure_period(database: ServiceDatabase, kind: str, key: str, tz: str, now: datetime) -> None:
    _, ends_at = period_bounds(key, tz)
    database.collection(PERIODS).update_one(
        {"_id": key},
        {
            "$setOnInsert": {
                "kind": kind,
                "ends_at": ends_at,
                "closed_at": None,
                "last_points_at": now,
            }
        },
        upsert=True,
    )
