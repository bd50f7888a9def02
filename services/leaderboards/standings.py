"""How board entries are stored: one `standings` document per (period, agent) holds the
agent's global, team and tier standing of that period, each in a slot of its own.

A point change counts on nine boards (boards.boards_of): three periods x (global, its team,
its tier). Stored as one document per (board, agent), that was nine documents written per
change, and on the local database a write costs mostly per document (the statement, the
index catalogue it reads again for each document, the oplog entry), far less per index key.
Measured there, 10,000 agents, batches of 100 and 250 changes, each document read by id and
replaced: 2.1 to 2.7 ms of the server's CPU per change for three documents of three
standings, against 4.3 to 4.8 for nine of one.

A slot: {"id": the team or tier (not for global), "score", "reached_at", "lane" (whose
count map counts it, see store.py), "version" (one more on every write, journal.py)}.
The global and tier slots have their board order as an index each: `rank_global` (period,
global.score desc, global.reached_at, agent_id) and `rank_tier` (period, tier.id, then the
same).

Team boards have no index on the standings. Every index of a collection is written again
with each document written (the local database rewrites every entry of every index on an
update), and measured there a replaced standings document cost about 0.52 ms of its CPU
with two indexes and 0.61 to 0.77 with three, on the hottest write of the pipeline. A
team is a few dozen agents, so a team board is read whole instead: its members from
`team_members` (one record per (period, team, agent), indexed by period and team,
written with the standing that makes an agent a member and deleted with it), then their
documents by id, ordered in memory (`team_board`).

Placement. The primary document `<period>|<agent>` holds the global standing, and one
team's and one tier's. An agent who changed team (or tier) within a period has the other
team's standing in a spill document `<period>|<agent>|team:<id>` that holds that slot
alone. A primary's team (tier) slot is free only when the agent has no team (tier)
standing in the period: a new standing takes the primary's slot when it is free, and a
removed one (the rebuild) gives its slot to a spill of its kind. So an entry is where the
primary says, and a spill is read only when the primary's slot holds another team or tier.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, DeleteOne, InsertOne, ReplaceOne
from pymongo.client_session import ClientSession
from pymongo.collection import Collection
from pymongo.cursor import Cursor
from pymongo.database import Database

from services.leaderboards.boards import GLOBAL, Standing, board_key, order_key
from services.runtime.mongo import bulk_write_in_slices, find_by_ids

STANDINGS = "standings"
#: One record per (period, team, agent) holding a team standing: how a team board is found.
TEAM_MEMBERS = "team_members"
TEAM = "team"
#: The slots of a standings document, named after the kind of scope they hold.
SLOTS = (GLOBAL, TEAM, "tier")


@dataclass(frozen=True)
class Row:
    """A board entry as read."""

    agent_id: str
    score: int
    reached_at: datetime
    lane: int | None = None  # read for the rebuild only
    version: int = 0  # one more on every write of the entry (journal.py)

    @property
    def order(self) -> tuple[int, datetime, str]:
        return order_key(self.agent_id, Standing(self.score, self.reached_at))


@dataclass(frozen=True)
class Place:
    """Where a board's entries are: the period, the slot, and the team or tier it holds."""

    period: str
    slot: str
    owner: str | None  # None for the global slot

    @property
    def scope(self) -> str:
        return GLOBAL if self.owner is None else f"{self.slot}:{self.owner}"

    @property
    def board(self) -> str:
        return board_key(self.period, self.scope)


def place_of(board: str) -> Place:
    """The place of a board key (`<period>|<scope>`, boards.board_key)."""
    period, _, scope = board.partition("|")
    if scope == GLOBAL:
        return Place(period, GLOBAL, None)
    slot, _, owner = scope.partition(":")
    return Place(period, slot, owner)


def primary_id(period: str, agent_id: str) -> str:
    """`_id`s are built, never looked up: `|` occurs in no period, agent or team id."""
    return f"{period}|{agent_id}"


def spill_id(place: Place, agent_id: str) -> str:
    return f"{place.period}|{agent_id}|{place.scope}"


def member_id(period: str, team_id: str, agent_id: str) -> str:
    return f"{period}|{team_id}|{agent_id}"


def member_record(period: str, team_id: str, agent_id: str) -> dict[str, Any]:
    return {
        "_id": member_id(period, team_id, agent_id),
        "period": period,
        "team_id": team_id,
        "agent_id": agent_id,
    }


# --- queries on one board ---------------------------------------------------------------


def board_filter(board: str) -> dict[str, Any]:
    """The documents with a slot on `board` (add a condition on `score_field`)."""
    place = place_of(board)
    if place.owner is None:
        return {"period": place.period}
    return {"period": place.period, f"{place.slot}.id": place.owner}


def score_field(board: str) -> str:
    return f"{place_of(board).slot}.score"


def reached_field(board: str) -> str:
    return f"{place_of(board).slot}.reached_at"


def scored(board: str, condition: Any) -> dict[str, Any]:
    """The board's entries whose score meets `condition` (a value or an operator document).
    Every query of a board names a score: documents without the slot are left out."""
    return {**board_filter(board), score_field(board): condition}


def board_order(board: str) -> list[tuple[str, int]]:
    """The board order (score desc, reached_at, agent id): its slot's `rank_*` index."""
    slot = place_of(board).slot
    return [
        (f"{slot}.score", DESCENDING),
        (f"{slot}.reached_at", ASCENDING),
        ("agent_id", ASCENDING),
    ]


def projection(board: str) -> dict[str, int]:
    """What `row` reads of a document on `board`."""
    return {"_id": 0, "agent_id": 1, place_of(board).slot: 1}


def on_board(
    collection: Collection, board: str, session: ClientSession | None = None, **find: Any
) -> Cursor:
    """The documents holding an entry of `board` above 0, read with `projection(board)`
    (`row` or `placed` gives the entry); `find`: more arguments of the find."""
    return collection.find(scored(board, {"$gt": 0}), projection(board), session=session, **find)


def team_board(db: Database, board: str, session: ClientSession | None = None) -> list[Row]:
    """A team board's entries above 0, in board order: two queries, its members and then
    their documents (each member's primary, and its spill for the team, which holds the
    entry when the primary's team slot holds another team)."""
    place = place_of(board)
    members = db[TEAM_MEMBERS].find(
        {"period": place.period, "team_id": place.owner}, {"agent_id": 1}, session=session
    )
    agents = [doc["agent_id"] for doc in members]
    ids = [primary_id(place.period, a) for a in agents] + [spill_id(place, a) for a in agents]
    docs = find_by_ids(db[STANDINGS], ids, session, projection={"agent_id": 1, TEAM: 1})
    rows = [
        row(doc, board)
        for doc in docs.values()
        if doc.get(TEAM, {}).get("id") == place.owner and doc[TEAM]["score"] > 0
    ]
    return sorted(rows, key=lambda r: r.order)


def memberships_held(collection: Collection, **find: Any) -> Iterator[dict[str, Any]]:
    """A member record for every team standing stored: what `team_members` should hold
    (`find`: more arguments of the find)."""
    docs = collection.find(
        {f"{TEAM}.id": {"$exists": True}}, {"period": 1, "agent_id": 1, f"{TEAM}.id": 1}, **find
    )
    for doc in docs:
        yield member_record(doc["period"], doc[TEAM]["id"], doc["agent_id"])


def row(doc: Mapping[str, Any], board: str) -> Row:
    """The entry of `board` in a document read with `projection(board)` (or whole), as the
    board shows it (no lane)."""
    slot = doc[place_of(board).slot]
    return Row(doc["agent_id"], slot["score"], slot["reached_at"], version=_version(slot))


def placed(doc: Mapping[str, Any], board: str) -> Row:
    """The entry of `board` in a document, with its lane (for the count maps)."""
    return _placed_row(doc["agent_id"], doc[place_of(board).slot])


def _placed_row(agent_id: str, slot: Mapping[str, Any]) -> Row:
    """An entry with its lane: lane 0 for entries stored before lanes existed."""
    lane = int(slot.get("lane") or 0)
    return Row(agent_id, slot["score"], slot["reached_at"], lane, _version(slot))


def _version(slot: Mapping[str, Any]) -> int:
    """Entries bulk-loaded, or stored before versions existed, are at version 0."""
    return int(slot.get("version") or 0)


def entries_in(doc: Mapping[str, Any]) -> Iterator[tuple[str, Row]]:
    """Every entry a whole document holds, by board."""
    for slot_name in SLOTS:
        slot = doc.get(slot_name)
        if slot is not None:
            place = Place(doc["period"], slot_name, slot.get("id"))
            yield place.board, _placed_row(doc["agent_id"], slot)


def as_entries(docs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Stored documents as the entries they hold, one {board, agent_id, score, reached_at,
    lane, version} each, sorted. Which document holds an entry follows the order in which
    its agent's teams and tiers showed up, so two stores with the same entries compare
    equal this way and not document by document."""
    entries = [{"board": board, **asdict(row)} for doc in docs for board, row in entries_in(doc)]
    return sorted(entries, key=lambda entry: (entry["board"], entry["agent_id"]))


def all_entries(collection: Collection) -> Iterator[tuple[str, Row]]:
    """Every entry stored, by board, with its lane."""
    for doc in collection.find({}):
        yield from entries_in(doc)


# --- writing one agent's standings of one period ------------------------------------------


class AgentPeriod:
    """One agent's standings documents of one period as read, changed in memory by `put`
    and `remove`, and written back by `writes`."""

    def __init__(self, period: str, agent_id: str, primary: dict[str, Any] | None) -> None:
        self.period = period
        self.agent_id = agent_id
        self.primary = primary_id(period, agent_id)
        self._docs: dict[str, dict[str, Any]] = {}
        self._stored: set[str] = set()
        self._changed: set[str] = set()
        # Teams the agent became or stopped being a member of (TEAM_MEMBERS).
        self._joined: set[str] = set()
        self._left: set[str] = set()
        if primary is not None:
            self.add_stored(primary)

    def add_stored(self, doc: dict[str, Any]) -> None:
        self._docs[doc["_id"]] = doc
        self._stored.add(doc["_id"])

    def spill_to_read(self, board: str) -> str | None:
        """The spill that may hold the board's entry: its primary slot holds another team
        or tier. None when the primary says where it is (or that there is none)."""
        place = place_of(board)
        held = self._docs.get(self.primary, {}).get(place.slot)
        if place.owner is None or held is None or held.get("id") == place.owner:
            return None
        return spill_id(place, self.agent_id)

    def _where(self, place: Place) -> str | None:
        """The id of the document holding the entry of `place`, if there is one."""
        for id_ in (self.primary, spill_id(place, self.agent_id)):
            slot = self._docs.get(id_, {}).get(place.slot)
            if slot is not None and slot.get("id") == place.owner:
                return id_
        return None

    def get(self, board: str) -> Row | None:
        place = place_of(board)
        id_ = self._where(place)
        return None if id_ is None else _placed_row(self.agent_id, self._docs[id_][place.slot])

    def put(self, board: str, score: int, reached_at: datetime, lane: int, version: int) -> None:
        """Sets the board's entry: where it is, else in the primary's free slot, else in a
        spill of its own."""
        place = place_of(board)
        id_ = self._where(place)
        if id_ is None:
            primary_slot = self._docs.get(self.primary, {}).get(place.slot)
            id_ = self.primary if primary_slot is None else spill_id(place, self.agent_id)
            if place.slot == TEAM:
                self._member_change(place.owner, joined=True)  # type: ignore[arg-type]
        slot: dict[str, Any] = {} if place.owner is None else {"id": place.owner}
        slot.update(score=score, reached_at=reached_at, lane=lane, version=version)
        self._document(id_)[place.slot] = slot
        self._changed.add(id_)

    def remove(self, board: str) -> None:
        """Removes the board's entry. A primary slot freed goes to a spill of its kind, if
        the agent has one in the period: every spill of the period must have been read
        (`read` of every board the agent has an entry on, as the rebuild does), or one
        left unread would later be shadowed by a new entry in the freed slot."""
        place = place_of(board)
        id_ = self._where(place)
        if id_ is None:
            return
        del self._docs[id_][place.slot]
        self._changed.add(id_)
        if place.slot == TEAM:
            self._member_change(place.owner, joined=False)  # type: ignore[arg-type]
        if id_ != self.primary:
            return
        for other_id, doc in self._docs.items():
            if other_id != self.primary and doc.get(place.slot) is not None:
                self._docs[self.primary][place.slot] = doc.pop(place.slot)
                self._changed.add(other_id)
                return

    def _member_change(self, team_id: str, joined: bool) -> None:
        """A change of membership undoes an opposite one made since the read."""
        undone, done = (self._left, self._joined) if joined else (self._joined, self._left)
        if team_id in undone:
            undone.discard(team_id)
        else:
            done.add(team_id)

    def member_changes(self) -> tuple[list[dict[str, Any]], list[str]]:
        """(records to have, ids to delete) of team member records for the changes made
        since the read: a record exists exactly while the agent has a standing on the
        team's board."""
        joined = [member_record(self.period, t, self.agent_id) for t in sorted(self._joined)]
        left = [member_id(self.period, t, self.agent_id) for t in sorted(self._left)]
        return joined, left

    def members(self) -> list[dict[str, Any]]:
        """A member record for each team standing held now (for a bulk load)."""
        return [
            member_record(self.period, doc[TEAM]["id"], self.agent_id)
            for doc in self._docs.values()
            if doc.get(TEAM) is not None
        ]

    def _document(self, id_: str) -> dict[str, Any]:
        if id_ not in self._docs:
            self._docs[id_] = {"_id": id_, "period": self.period, "agent_id": self.agent_id}
        return self._docs[id_]

    def documents(self) -> list[dict[str, Any]]:
        """The documents as they stand now, those holding a slot."""
        return [doc for doc in self._docs.values() if _holds_a_slot(doc)]

    def writes(self) -> tuple[list[InsertOne], list[ReplaceOne | DeleteOne]]:
        """(inserts, replacements and deletes) that store the changes: a document is
        written whole, and deleted once it holds no slot."""
        inserts: list[InsertOne] = []
        others: list[ReplaceOne | DeleteOne] = []
        for id_ in sorted(self._changed):
            doc = self._docs[id_]
            holds = _holds_a_slot(doc)
            if id_ not in self._stored:
                if holds:
                    inserts.append(InsertOne(doc))
            elif holds:
                others.append(ReplaceOne({"_id": id_}, doc))
            else:
                others.append(DeleteOne({"_id": id_}))
        return inserts, others


def _holds_a_slot(doc: Mapping[str, Any]) -> bool:
    return any(slot in doc for slot in SLOTS)


def read(
    collection: Collection,
    entries: Iterable[tuple[str, str]],
    session: ClientSession | None = None,
) -> dict[tuple[str, str], AgentPeriod]:
    """The standings of the (board, agent) `entries`, by (period, agent): their primaries
    read by id, then the spills those say may hold one of the boards (usually none)."""
    wanted = {(place_of(board).period, agent_id, board) for board, agent_id in entries}
    keys = {(period, agent) for period, agent, _ in wanted}
    primaries = find_by_ids(collection, [primary_id(*key) for key in keys], session)
    found = {key: AgentPeriod(*key, primaries.get(primary_id(*key))) for key in keys}
    spills = {
        spill: (period, agent)
        for period, agent, board in wanted
        if (spill := found[(period, agent)].spill_to_read(board)) is not None
    }
    if spills:
        for id_, doc in find_by_ids(collection, spills, session).items():
            found[spills[id_]].add_stored(doc)
    return found


def held(
    periods: Mapping[tuple[str, str], AgentPeriod], agent_id: str, boards: Iterable[str]
) -> dict[str, Row]:
    """The agent's entries on `boards` in `periods` (as `read` gave them), by board."""
    found = {board: periods[(place_of(board).period, agent_id)].get(board) for board in boards}
    return {board: row for board, row in found.items() if row is not None}


def write(
    collection: Collection,
    periods: Iterable[AgentPeriod],
    session: ClientSession | None = None,
) -> None:
    """Stores the changes of `periods`: inserts first, then replacements and deletes, in
    slices (services/runtime/mongo.bulk_write_in_slices), then the team member records
    they change (`collection` is the standings collection; the records live beside it)."""
    inserts: list[InsertOne] = []
    others: list[ReplaceOne | DeleteOne] = []
    joined: list[dict[str, Any]] = []
    left: list[str] = []
    for agent_period in periods:
        new, changed = agent_period.writes()
        inserts += new
        others += changed
        joins, leaves = agent_period.member_changes()
        joined += joins
        left += leaves
    bulk_write_in_slices(collection, inserts, session)
    bulk_write_in_slices(collection, others, session)
    _write_members(collection.database[TEAM_MEMBERS], joined, left, session)


def _write_members(
    members: Collection,
    joined: list[dict[str, Any]],
    left: list[str],
    session: ClientSession | None,
) -> None:
    """Inserts the member records of `joined` not stored yet and deletes those of `left`.
    A record already there was left behind by damage to the standings, and says what is
    true again: it stays, and no insert of it can fail the batch (the rebuild removes such
    records). Joins are read first rather than upserted: per record, an upsert cost the
    local database 0.25 to 0.30 ms of its CPU, a read and an insert 0.14 to 0.17 (batches of
    500), and a batch of new agents joins three team boards each."""
    if joined:
        ids = [record["_id"] for record in joined]
        stored = find_by_ids(members, ids, session, projection={"_id": 1})
        absent = [InsertOne(record) for record in joined if record["_id"] not in stored]
        bulk_write_in_slices(members, absent, session)
    bulk_write_in_slices(members, [DeleteOne({"_id": id_}) for id_ in left], session)
