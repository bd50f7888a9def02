"""Functions (uow, events, ...) that apply the leaderboard rules through the store."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import islice
from typing import Any

from pymongo import InsertOne, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError

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
from services.common.times import to_millis
from services.leaderboards import journal, names, standings
from services.leaderboards.boards import (
    CLOSE_TOP,
    GLOBAL,
    Move,
    PointChange,
    Standing,
    board_key,
    closable_periods,
    count_changes,
    fold,
    keeps_count_maps,
)
from services.leaderboards.count_maps import unpack
from services.leaderboards.journal import Written
from services.leaderboards.standings import STANDINGS, TEAM, TEAM_MEMBERS, place_of
from services.leaderboards.store import (
    AGENTS,
    APPLIED,
    CLOSES,
    LEGACY_ENTRIES,
    LEGACY_MAP_TOKENS,
    LEGACY_TEAM_INDEX,
    PERIODS,
    SCORE_COUNTS,
    SEQ,
    WRITE_TOKEN,
    BoardReader,
    MapWrites,
    Row,
    counts_id,
    display,
)
from services.runtime.indexes import drop_indexes
from services.runtime.mongo import ServiceDatabase, UnitOfWork, find_by_ids

log = logging.getLogger(__name__)
#: Per-board totals of the release before count maps (see `upgrade_storage`).
LEGACY_BOARD_TOTALS = "boards"
#: Entries moved from the earlier one-document-per-entry layout per slice (`upgrade_storage`).
LEGACY_ENTRIES_SLICE = 1000
#: The server's code for a write refused by a unique index.
DUPLICATE_KEY = 11000

#: Ids of period_closed events are derived from the period key: should a close ever be
#: attempted twice past the unique close record, the outbox's unique event id (and every
#: consumer's handled-event ids) would still let only one through.
CLOSE_EVENT_NAMESPACE = uuid.UUID("6f1c3f1e-2b7a-4a53-9a55-5f0c0d6d1b2e")
#: Points arriving for a period refresh its "last points" time at most this often (and a
#: tenth of the close grace at most: see `touch_interval`): the period document is shared
#: by every lane, and concurrent batches that all write it conflict and are retried whole.
TOUCH_RESOLUTION = timedelta(seconds=30)


def touch_interval(grace: timedelta) -> timedelta:
    """How stale a period's "last points" time may be; the close waits that much longer
    than the grace, so a period still closes only after `grace` without points."""
    return min(TOUCH_RESOLUTION, grace / 10)


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
    uow: UnitOfWork,
    events: Sequence[PointsAwarded | PointsReversed],
    *,
    lane: int,
    tz: str,
    now: datetime,
    touch_every: timedelta = timedelta(0),
) -> list[str]:
    """Logs a batch of point changes and adds them to their board entries, in one
    transaction of few statements (each statement in a transaction is what costs): the log,
    the entries, their count maps, the periods and the agents' point teams are each read by
    id (`find_by_ids`, IDS_PER_QUERY at a time) and written in bulk.

    Returns the ids of the events applied now; the rest were in the log already (a
    redelivery, a replay, or a restored database) and the boards include them.
    """
    s = uow.session
    distinct: dict[str, PointsAwarded | PointsReversed] = {}
    for event in events:
        distinct.setdefault(event.id, event)  # a repeat inside the batch counts once
    applied = uow.collection(APPLIED)
    logged = set(find_by_ids(applied, distinct, s, projection={"_id": 1}))
    fresh = [event for id_, event in distinct.items() if id_ not in logged]
    if not fresh:
        return []
    applied.insert_many([_log_record(event, lane, now) for event in fresh], session=s)
    changes = [change_of(event) for event in fresh]
    # Sum of deltas and latest time per (board, agent): what applying them one by one
    # would leave (boards.py), so the batch adds to each entry once.
    _add_to_entries(uow, fold(changes, tz), lane)
    periods: set[tuple[str, str]] = {
        period for change in changes for period in closable_periods(change, tz)
    }
    _touch_periods(uow, periods, tz, now, touch_every)
    _remember_points_teams(uow, changes)
    return [event.id for event in fresh]


def _log_record(event: PointsAwarded | PointsReversed, lane: int, now: datetime) -> dict[str, Any]:
    data = event.data
    return {
        "_id": event.id,
        "agent_id": data.agent_id,
        "delta": data.delta,
        "occurred_at": data.occurred_at,
        "team_id": data.team_id,
        "tier": data.tier,
        "type": event.type,
        "award_id": data.award_id,
        "applied_at": now,
        "lane": lane,
    }


def _add_to_entries(uow: UnitOfWork, added: dict[tuple[str, str], Standing], lane: int) -> None:
    """Adds each (board, agent) total to its entry and moves the entry into `lane`'s count
    map. The agents' standings documents are read first (standings.py): their old scores
    and lanes are what the count maps must take back, and the transaction's snapshot makes
    old + added the new score (a concurrent change of the same entry is a write conflict,
    and the batch is retried).

    Documents not there yet are inserted in bulk (the database inserts several times faster
    than it updates), the others replaced whole in bulk: every field is known here, and a
    replacement measured about 15% cheaper than an update of the same fields on the local
    database.
    """
    s = uow.session
    collection = uow.collection(STANDINGS)
    periods = standings.read(collection, added, s)
    moves = []
    written = []
    for (board, agent_id), change in added.items():
        agent_period = periods[(place_of(board).period, agent_id)]
        old = agent_period.get(board)
        if old is None:
            score, reached_at, version = change.score, change.reached_at, 1
            moves.append(Move(board, lane, 0, lane, score))
        else:
            score = old.score + change.score
            reached_at = max(old.reached_at, change.reached_at)
            version = old.version + 1
            moves.append(Move(board, old.lane or 0, old.score, lane, score))
        agent_period.put(board, score, reached_at, lane, version)
        written.append(Written(board, lane, agent_id, score, reached_at, version))
    standings.write(collection, periods.values(), s)
    _count_moves(uow, moves, written)


def _count_moves(uow: UnitOfWork, moves: list[Move], written: list[Written]) -> None:
    """Applies the entries' moves to the count maps: one read of the maps they change, one
    bulk write of them rewritten whole (count_maps.py). A count that reaches zero is
    removed, and a map left empty is deleted, so the maps depend on the entries only, never
    on how the events were batched.

    Every map an entry was `written` into is written too, counts changed or not: for its
    journal record (journal.py), and for a new write token, so that a page read under the
    old tokens is never served again (store.BoardReader.top): an entry that keeps its
    score and lane may still move within its tie (a later reached_at).

    Team boards have no maps (boards.keeps_count_maps): their moves are left out."""
    changes = count_changes(move for move in moves if keeps_count_maps(move.board))
    by_map: dict[tuple[str, int], list[Written]] = defaultdict(list)
    for entry in written:
        if not keeps_count_maps(entry.board):
            continue
        by_map[(entry.board, entry.lane)].append(entry)
        changes.setdefault((entry.board, entry.lane), {})
    if not changes:
        return
    s = uow.session
    maps = uow.collection(SCORE_COUNTS)
    ids = {key: counts_id(*key) for key in changes}
    held = find_by_ids(maps, ids.values(), s, projection={"counts": 1, WRITE_TOKEN: 1, SEQ: 1})
    writes = MapWrites()
    records = []
    for (board, lane), by_score in changes.items():
        id_ = ids[(board, lane)]
        old = held.get(id_)
        counts = unpack(old.get("counts")) if old is not None else {}
        for score, n in by_score.items():
            left = counts.get(score, 0) + n
            if left > 0:
                counts[score] = left
            else:  # below zero only if the map was damaged: the rebuild recounts it
                counts.pop(score, None)
        if counts:
            seq = int(old.get(SEQ) or 0) + 1 if old is not None else 1
            token = writes.put(board, lane, counts, seq=seq)
            prev = old.get(WRITE_TOKEN) if old is not None else None
            records.append(journal.record(board, lane, seq, token, prev, by_map[(board, lane)]))
        elif old is not None:
            writes.delete(id_)
    writes.apply(uow.db, s)
    journal.append(uow.db, records, s)


def _touch_periods(
    uow: UnitOfWork,
    periods: set[tuple[str, str]],
    tz: str,
    now: datetime,
    touch_every: timedelta,
) -> None:
    """Records the weekly and monthly periods the batch counted in, and that points just
    arrived for them (for the close's grace), refreshing that time at most every
    `touch_every` (see TOUCH_RESOLUTION)."""
    if not periods:
        return
    collection = uow.collection(PERIODS)
    found = {
        doc["_id"]: doc["last_points_at"]
        for doc in find_by_ids(
            collection, [key for _, key in periods], uow.session, projection={"last_points_at": 1}
        ).values()
    }
    writes = []
    for kind, key in sorted(periods):
        if key not in found:
            _, ends_at = period_bounds(key, tz)
            update = {
                "$setOnInsert": {"kind": kind, "ends_at": ends_at, "closed_at": None},
                "$max": {"last_points_at": now},
            }
            writes.append(UpdateOne({"_id": key}, update, upsert=True))
        elif found[key] < now - touch_every:
            writes.append(UpdateOne({"_id": key}, {"$max": {"last_points_at": now}}))
    if writes:
        collection.bulk_write(writes, ordered=False, session=uow.session)


def _remember_points_teams(uow: UnitOfWork, changes: list[PointChange]) -> None:
    """The team of each agent's latest point event: shown until the roster event arrives.
    At equal times the first applied stays, as when the events are applied one by one.

    An agent the roster has written is left alone: a roster entry always has a team, which
    `display` shows before this one, so the write would change nothing anyone reads. Every
    agent with activity is on the roster in the usual flow, and this write was one document
    per agent and batch (about 7% of the leaderboards database's time in the bench)."""
    latest: dict[str, PointChange] = {}
    for change in changes:
        known = latest.get(change.agent_id)
        if known is None or change.occurred_at > known.occurred_at:
            latest[change.agent_id] = change
    agents = uow.collection(AGENTS)
    found = find_by_ids(agents, latest, uow.session, projection={"points_at": 1, "team_id": 1})
    writes: list[InsertOne | UpdateOne] = []
    for agent_id, change in latest.items():
        fields = {"points_team_id": change.team_id, "points_at": change.occurred_at}
        stored = found.get(agent_id)
        if stored is None:  # an insert costs the local database a quarter of an upsert
            writes.append(InsertOne({"_id": agent_id, **fields}))
        elif stored.get("team_id") is not None:
            continue  # on the roster: its team is the one shown
        elif stored.get("points_at") is None or stored["points_at"] < change.occurred_at:
            writes.append(UpdateOne({"_id": agent_id}, {"$set": fields}))
    if writes:
        agents.bulk_write(writes, ordered=False, session=uow.session)


# --- roster ------------------------------------------------------------------------


def apply_roster(
    uow: UnitOfWork, events: Sequence[AgentRegistered | AgentUpdated], *, lane: int
) -> list[bool]:
    """A roster batch, event by event (roster events are rare, and each is compared with
    the stored one); the names it wrote are journaled for the read views (names.py)."""
    written = [_roster_write(event, uow) for event in events]
    names.journal_roster(uow, lane, [doc for doc in written if doc is not None])
    return [doc is not None for doc in written]


def _roster_write(event: AgentRegistered | AgentUpdated, uow: UnitOfWork) -> dict[str, Any] | None:
    """Keeps the newest roster state per agent (by event time, then event id): any order.
    Returns the roster fields written, None when the stored state is newer."""
    data = event.data
    agents = uow.collection(AGENTS)
    agent = agents.find_one({"_id": data.agent_id}, session=uow.session) or {}
    if agent.get("roster_at") is not None:
        known = (agent["roster_at"], agent.get("roster_event_id") or "")
        # Mongo keeps milliseconds: compare at that precision so a re-read never looks newer.
        if (to_millis(event.time), event.id) <= known:
            return None
    roster = {
        "name": data.name,
        "team_id": data.team_id,
        "tier": data.tier,
        "roster_at": event.time,
        "roster_event_id": event.id,
    }
    agents.update_one({"_id": data.agent_id}, {"$set": roster}, upsert=True, session=uow.session)
    return {"_id": data.agent_id, **roster}


# --- period close --------------------------------------------------------------------


class AlreadyClosed(Exception):
    """Another instance (or an earlier run) closed the period first."""


def due_periods(database: ServiceDatabase, now: datetime, grace: timedelta) -> list[str]:
    """Keys of ended, unclosed periods that received no points for `grace`."""
    cutoff = now - grace
    quiet_since = cutoff - touch_interval(grace)  # the last points time may be that stale
    query = {
        "closed_at": None,
        "ends_at": {"$lte": cutoff},
        "last_points_at": {"$lte": quiet_since},
    }
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
    """Recomputes every board from the applied-points log and rewrites what differs, then
    recounts the count maps of every board whose maps differ from its entries.

    Safe while events are consumed: the log and the entries change together in one
    transaction, so each agent is recomputed from its log inside a transaction of its own
    (a concurrent change of that agent conflicts and is retried), never from a stale scan;
    likewise each board is recounted from its entries inside a transaction.
    """
    started = datetime.now(UTC)
    clock = time.monotonic()
    now = now or started
    reader = BoardReader(database.db)
    changes = list(reader.log())
    expected = fold(changes, tz)
    placed = {(board, row.agent_id): row for board, row in reader.all_entries()}
    live = {key: Standing(row.score, row.reached_at) for key, row in placed.items()}
    suspects = {
        agent for (board, agent), want in expected.items() if live.get((board, agent)) != want
    }
    suspects |= {agent for (board, agent) in live if (board, agent) not in expected}
    # Each suspect's boards: those its log counts in and those it has entries on.
    boards: dict[str, set[str]] = defaultdict(set)
    for board, agent in expected.keys() | placed.keys():
        if agent in suspects:
            boards[agent].add(board)
    fixed = agents_fixed = 0
    counted = [(board, row) for (board, agent), row in placed.items() if agent not in suspects]
    for agent_id in sorted(suspects):
        count = database.transaction(
            partial(_rebuild_agent, agent_id=agent_id, tz=tz, boards_seen=boards[agent_id])
        )
        fixed += count
        agents_fixed += count > 0
        counted += reader.agent_entries(agent_id, boards[agent_id]).items()
    recounted = _recount_boards(database, counted)
    members_fixed = _repair_team_members(database)
    periods: set[tuple[str, str]] = {
        period for change in changes for period in closable_periods(change, tz)
    }
    for kind, key in sorted(periods):
        _ensure_period(database, kind, key, tz, now)
    return RebuildReport(
        applied_events=len(changes),
        entries_expected=len(expected),
        entries_fixed=fixed,
        agents_fixed=agents_fixed,
        boards_recounted=recounted,
        team_members_fixed=members_fixed,
        started_at=started,
        duration_seconds=round(time.monotonic() - clock, 3),
    )


def _repair_team_members(database: ServiceDatabase) -> int:
    """Makes the team member records match the standings' team slots (after damage, or a
    standing written by an instance of an earlier release). Both are scanned and compared,
    and each difference is checked again and fixed in a transaction of its own: a batch
    applied since the scan may have made it right. Returns how many records were fixed."""
    db = database.db

    def members(records: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {(r["period"], r["team_id"], r["agent_id"]) for r in records}

    held = members(standings.memberships_held(db[STANDINGS]))
    recorded = members(db[TEAM_MEMBERS].find({}))
    fixed = 0
    for period, team_id, agent_id in sorted(held ^ recorded):
        fixed += database.transaction(
            partial(_repair_team_member, period=period, team_id=team_id, agent_id=agent_id)
        )
    return fixed


def _repair_team_member(uow: UnitOfWork, period: str, team_id: str, agent_id: str) -> int:
    """Records the agent as a member of the team's board of `period` exactly when one of its
    standings documents holds that team's slot; returns 1 when that took a write."""
    place = standings.Place(period, TEAM, team_id)
    ids = [standings.primary_id(period, agent_id), standings.spill_id(place, agent_id)]
    docs = find_by_ids(uow.collection(STANDINGS), ids, uow.session, projection={TEAM: 1})
    holds = any(doc.get(TEAM, {}).get("id") == team_id for doc in docs.values())
    members = uow.collection(TEAM_MEMBERS)
    id_ = standings.member_id(period, team_id, agent_id)
    recorded = members.find_one({"_id": id_}, {"_id": 1}, session=uow.session) is not None
    if holds and not recorded:
        members.insert_one(standings.member_record(period, team_id, agent_id), session=uow.session)
    elif recorded and not holds:
        members.delete_one({"_id": id_}, session=uow.session)
    else:
        return 0
    return 1


def _rebuild_agent(uow: UnitOfWork, agent_id: str, tz: str, boards_seen: set[str]) -> int:
    """Rewrites the agent's entries from its log, read in this transaction. Its entries are
    read by id on the boards of that log and `boards_seen` (those the rebuild's scan found
    it on): only a point change writes an entry, and it logs the change in the same
    transaction, so an entry written since the scan is on a board of the log read here."""
    reader = BoardReader(uow.db, uow.session)
    expected = {board: standing for (board, _), standing in fold(reader.log(agent_id), tz).items()}
    boards = set(expected) | boards_seen
    collection = uow.collection(STANDINGS)
    periods = standings.read(collection, ((board, agent_id) for board in boards), uow.session)
    live = standings.held(periods, agent_id, boards)
    # A recreated entry is counted where most of the agent's other entries are, else where
    # its log was last applied from (any lane counts right: the lane only keeps concurrent
    # batches off each other's maps).
    lanes = Counter(row.lane or 0 for row in live.values())
    home = lanes.most_common(1)[0][0] if lanes else reader.logged_lane(agent_id) or 0
    moves = []
    written: list[Written] = []
    for board in sorted(boards):
        want, have = expected.get(board), live.get(board)
        if have is not None and want == Standing(have.score, have.reached_at):
            continue
        if want is None and have is None:
            continue
        old_score, lane = (have.score, have.lane or 0) if have is not None else (0, home)
        version = (have.version if have is not None else 0) + 1
        agent_period = periods[(place_of(board).period, agent_id)]
        if want is None:
            agent_period.remove(board)
            moves.append(Move(board, lane, old_score, lane, 0))
            written.append(Written(board, lane, agent_id, 0, None, version, deleted=True))
            continue
        agent_period.put(board, want.score, want.reached_at, lane, version)
        moves.append(Move(board, lane, old_score, lane, want.score))
        written.append(Written(board, lane, agent_id, want.score, want.reached_at, version))
    standings.write(collection, periods.values(), uow.session)
    _count_moves(uow, moves, written)
    return len(moves)


def upgrade_storage(database: ServiceDatabase) -> int:
    """Brings boards stored by earlier releases to this layout; idempotent. Returns how
    many boards were recounted or count maps repacked.

    - Entries stored one document per (board, agent) move into standings documents
      (`_move_legacy_entries`); the entries' index by agent goes with their collection.
    - Per-board totals (`boards`, before count maps) give way to count maps recounted from
      the entries (entries without a lane count in lane 0).
    - Count maps stored as documents of {"<score>": agents} fields are packed
      (count_maps.py), and a map without a write token gets one. Instances of the earlier
      release must be stopped first: they would add to a packed map by field.
    - Team boards' count maps are deleted: those boards are read from their entries now
      (boards.keeps_count_maps); their journal records expire on their own.
    - The tokens' own documents are dropped (store.LEGACY_MAP_TOKENS says why). Until a
      rolling update has replaced the earlier release's instances, those may answer a
      board's top pages as they last read them: they check the token documents, which
      nothing writes any more.
    - Team boards were read through an index of the standings; their members are recorded
      from the standings, then the index is dropped (`_record_team_members`).
    """
    _record_team_members(database)
    upgraded = _move_legacy_entries(database)
    if LEGACY_BOARD_TOTALS in database.db.list_collection_names():
        upgraded += _recount_boards(database, BoardReader(database.db).all_entries())
        database.db.drop_collection(LEGACY_BOARD_TOTALS)
    upgraded += _repack_maps(database)
    upgraded += _drop_team_maps(database)
    database.db.drop_collection(LEGACY_MAP_TOKENS)  # nothing when already gone
    if upgraded:
        log.info("leaderboards storage upgraded: %d boards recounted or maps packed", upgraded)
    return upgraded


def _move_legacy_entries(database: ServiceDatabase) -> int:
    """Moves the entries an earlier release stored one document per (board, agent) into
    standings documents, LEGACY_ENTRIES_SLICE at a time (read, placed and written in bulk),
    then drops their collection. Returns how many boards they were on.

    The entries and the count maps hold the same values before and after, so the maps and
    the read views' journal stay as they are. Interrupted, it starts again on the next
    start: an entry placed twice is written with the same values. (Deleting each slice
    from the old collection as it goes, to resume instead, made it three times slower on
    the local database.) Instances of the earlier release must be stopped first: they
    would go on writing the old collection."""
    db = database.db
    if LEGACY_ENTRIES not in db.list_collection_names():
        return 0
    target = db[STANDINGS]
    boards: set[str] = set()
    moved = 0
    cursor = db[LEGACY_ENTRIES].find({}, batch_size=LEGACY_ENTRIES_SLICE)
    while slice_ := list(islice(cursor, LEGACY_ENTRIES_SLICE)):
        entries = {(doc["board"], doc["agent_id"]): doc for doc in slice_}
        periods = standings.read(target, entries)
        for (board, agent_id), doc in entries.items():
            periods[(place_of(board).period, agent_id)].put(
                board,
                doc["score"],
                doc["reached_at"],
                int(doc.get("lane") or 0),
                int(doc.get("version") or 0),
            )
        standings.write(target, periods.values())
        boards.update(board for board, _ in entries)
        moved += len(slice_)
        if moved % (100 * LEGACY_ENTRIES_SLICE) == 0:
            log.info("leaderboards storage upgrade: %d entries moved into standings", moved)
    db.drop_collection(LEGACY_ENTRIES)
    log.info("leaderboards storage upgraded: %d entries moved into standings", moved)
    return len(boards)


def _record_team_members(database: ServiceDatabase) -> int:
    """Records the members of every team board from the standings' team slots, then drops
    the team index (store.LEGACY_TEAM_INDEX) that an earlier release read those boards
    through. While that index is there the upgrade is not done, and it starts again on the
    next start: a record already written is left as it is. Returns how many were written.

    Instances of the earlier release must be stopped first: a team standing they add has
    no member record, and the team's board would leave it out (the rebuild adds it)."""
    db = database.db
    if LEGACY_TEAM_INDEX not in db[STANDINGS].index_information():
        return 0
    held = standings.memberships_held(db[STANDINGS], batch_size=LEGACY_ENTRIES_SLICE)
    written = 0
    while records := list(islice(held, LEGACY_ENTRIES_SLICE)):
        written += _insert_absent(db[TEAM_MEMBERS], records)
    drop_indexes(db[STANDINGS], [LEGACY_TEAM_INDEX])
    log.info("leaderboards storage upgraded: %d team member records written", written)
    return written


def _insert_absent(collection: Collection, documents: list[dict[str, Any]]) -> int:
    """Inserts those of `documents` whose id is not stored (outside a transaction: the
    others are refused one by one and the rest go in). Returns how many went in."""
    try:
        return len(collection.insert_many(documents, ordered=False).inserted_ids)
    except BulkWriteError as error:
        errors = error.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return int(error.details.get("nInserted", 0))


def _repack_maps(database: ServiceDatabase) -> int:
    """Count maps stored as {"<score>": agents} fields, or without a write token, are
    written again (packed, with a token). Returns how many maps were rewritten.

    Runs on every start: one query, which sends back only the maps to rewrite."""
    db = database.db
    outdated = {"$or": [{"counts": {"$not": {"$type": "binData"}}}, {WRITE_TOKEN: None}]}
    writes = MapWrites()
    for doc in db[SCORE_COUNTS].find(outdated):
        writes.put(doc["board"], doc["lane"], unpack(doc.get("counts")))
    writes.apply(db)
    return len(writes)


def _drop_team_maps(database: ServiceDatabase) -> int:
    """Deletes the count maps of boards that keep none (written by an earlier release).
    Returns how many boards had some. Runs on every start: one query of the maps' boards."""
    maps = database.db[SCORE_COUNTS]
    dropped = {
        doc["_id"]: doc["board"]
        for doc in maps.find({}, {"board": 1})
        if not keeps_count_maps(doc["board"])
    }
    if dropped:
        maps.delete_many({"_id": {"$in": list(dropped)}})
    return len(set(dropped.values()))


def _recount_boards(database: ServiceDatabase, entries: Iterable[tuple[str, Row]]) -> int:
    """Recounts every board whose stored count maps differ from its entries (a damaged or
    missing map, or one stored before the maps existed); returns how many."""
    expected: dict[tuple[str, int], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for board, row in entries:
        if row.score > 0 and keeps_count_maps(board):
            expected[(board, row.lane or 0)][row.score] += 1
    stored = {
        (board, lane): counts for board, lane, counts in BoardReader(database.db).stored_counts()
    }
    differing = {
        board
        for board, lane in expected.keys() | stored.keys()
        if expected.get((board, lane)) != stored.get((board, lane))
    }
    for board in sorted(differing):
        database.transaction(partial(_recount_board, board=board))
    return len(differing)


def _recount_board(uow: UnitOfWork, board: str) -> None:
    """Rewrites the board's count maps from its entries, in one transaction (a team board's
    maps, written by an earlier release, are deleted)."""
    s = uow.session
    counts: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    if keeps_count_maps(board):
        for doc in standings.on_board(uow.collection(STANDINGS), board, s):
            row = standings.placed(doc, board)
            counts[row.lane or 0][row.score] += 1
    maps = uow.collection(SCORE_COUNTS)
    stale = {doc["_id"] for doc in maps.find({"board": board}, {"_id": 1}, session=s)}
    writes = MapWrites()
    for lane, by_score in counts.items():
        writes.put(board, lane, by_score)
        stale.discard(counts_id(board, lane))
    for id_ in sorted(stale):
        writes.delete(id_)
    writes.apply(uow.db, s)


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
