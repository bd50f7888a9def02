"""Applying the credit rules through the store, one unit of work at a time.

Consumers take a whole batch in its transaction (`handle_batch`): `deposit_courses` and
`observe_agents` apply the events in order in memory and write in bulk, exactly as
`deposit_course` and `observe_agent` would one after another; catalogue events, rare, go
one by one (`record_course`). Admin actions (`grant`, `revoke`) and the expiry timer
(`expire_lot`) run in a transaction of their own. Each change, its history entry and its
events commit together.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contracts.api.credits import CreditGrant
from contracts.events import (
    AgentRegistered,
    AgentUpdated,
    CourseCompleted,
    CoursePublished,
    CourseUpdated,
    CreditsExpired,
    CreditsExpiredData,
    CreditsRequirementMet,
    CreditsRequirementMetData,
)
from contracts.vocabulary import AgentSnapshot
from services.common.times import to_millis
from services.credits import store
from services.credits.bank import (
    SOURCE_COURSE,
    SOURCE_GRANT,
    Lot,
    can_change,
    course_lot_id,
    expiry_of,
)
from services.credits.policy import Policy
from services.credits.readiness import Course, Met, RequirementTable, requirements_met
from services.credits.roster import (
    RANK_REGISTERED,
    RANK_SNAPSHOT,
    RANK_UPDATED,
    Observation,
    add,
    resolve,
    tier_windows,
)
from services.runtime.errors import Conflict, NotFound
from services.runtime.mongo import UnitOfWork


def history_entry(kind: str, lot: Lot, at: datetime, **fields: Any) -> dict[str, Any]:
    hours = lot.credit_hours if kind in ("deposit", "grant") else -lot.credit_hours
    return {
        "_id": f"{kind}:{lot.lot_id}",
        "agent_id": lot.agent_id,
        "kind": kind,
        "at": at,
        "lot_id": lot.lot_id,
        "dimension": lot.dimension,
        "credit_hours": hours,
        "course_id": lot.course_id,
        **fields,
    }


# --- consumers: a batch at a time -------------------------------------------------------


def deposit_courses(
    uow: UnitOfWork, events: Sequence[CourseCompleted], policy: Policy
) -> list[Lot | None]:
    """`deposit_course` for each event in turn, in a few statements whatever the size: what
    the batch needs is read first (agents, milestones, the lots of agents whose
    requirements may be evaluated, which of the completions' lots exist), the events apply
    in order in memory, and each collection is written with one bulk write."""
    arrivals = [(event.data.agent.agent_id, _snapshot_observation(event)) for event in events]
    lots = [_course_lot(event, policy) for event in events]
    batch = _Batch.load(uow, policy, arrivals, [lot.lot_id for lot in lots])
    deposited = [
        batch.deposit(event, agent_id, observation, lot)
        for event, (agent_id, observation), lot in zip(events, arrivals, lots, strict=True)
    ]
    batch.save()
    return deposited


def observe_agents(
    uow: UnitOfWork, events: Sequence[AgentRegistered | AgentUpdated], policy: Policy
) -> list[bool]:
    """`observe_agent` for each event in turn, as `deposit_courses` does it."""
    arrivals = [(event.data.agent_id, _roster_observation(event)) for event in events]
    batch = _Batch.load(uow, policy, arrivals, [])
    for agent_id, observation in arrivals:
        batch.check(agent_id, batch.observe(agent_id, observation))
    batch.save()
    return [True] * len(events)


@dataclass
class _Batch:
    """The documents a batch reads and writes, held in memory while its events apply in
    order, each as the per-event handler applies it to the database."""

    uow: UnitOfWork
    policy: Policy
    docs: dict[str, dict[str, Any]]  # agent id -> its document, as it stands in the batch
    observed: dict[str, list[Observation]]  # agent id -> the observations in its document
    done: dict[str, dict[str, Any]]  # agent id -> target tier -> when first met
    lots: dict[str, list[Lot]]  # agents whose requirements may be evaluated -> their lots
    lot_ids: set[str]  # of the batch's completions: the lots stored, and those deposited
    changed: dict[str, None] = field(default_factory=dict)  # agents, in first-change order
    stored: frozenset[str] = field(init=False)  # agents whose document the batch read
    new_lots: list[Lot] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    milestones: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stored = frozenset(self.docs)

    @classmethod
    def load(
        cls,
        uow: UnitOfWork,
        policy: Policy,
        arrivals: Sequence[tuple[str, Observation]],
        lot_ids: Sequence[str],
    ) -> _Batch:
        agent_ids = sorted({agent_id for agent_id, _ in arrivals})
        docs = store.agent_documents(uow, agent_ids)
        observed = {agent_id: store.observations_in(doc) for agent_id, doc in docs.items()}
        done = store.milestones_of_agents(uow, agent_ids)
        # An agent's requirements are evaluated when one of the tiers they held has a next
        # requirement not met yet. Observations and milestones only get added in a batch,
        # so the tiers stored or arriving, against the milestones stored, name every agent
        # the batch may evaluate (and perhaps a few it will not): only their lots are read.
        tiers: dict[str, set[str]] = {
            agent_id: {o.tier for o in observed.get(agent_id, ())} for agent_id in agent_ids
        }
        for agent_id, observation in arrivals:
            tiers[agent_id].add(observation.tier)
        table = policy.requirements
        evaluated = [
            agent_id
            for agent_id in agent_ids
            if any(
                (rule := table.next_for(tier)) is not None  # type: ignore[arg-type]
                and rule.tier not in done[agent_id]
                for tier in tiers[agent_id]
            )
        ]
        return cls(
            uow,
            policy,
            docs,
            observed,
            done,
            lots=store.lots_of_agents(uow, evaluated) if evaluated else {},
            lot_ids=store.existing_lot_ids(uow, lot_ids) if lot_ids else set(),
        )

    def observe(self, agent_id: str, observation: Observation) -> list[Observation]:
        """`_observe` in memory."""
        known = self.observed.get(agent_id, [])
        observed = add(known, observation)
        if observed != known:
            self.observed[agent_id] = observed
            self.docs[agent_id] = store.agent_document(agent_id, observed)
            self.changed[agent_id] = None
        return observed

    def deposit(
        self, event: CourseCompleted, agent_id: str, observation: Observation, lot: Lot
    ) -> Lot | None:
        """`deposit_course` in memory."""
        observed = self.observe(agent_id, observation)
        if lot.lot_id in self.lot_ids:
            return None
        self.lot_ids.add(lot.lot_id)
        self.new_lots.append(lot)
        if agent_id in self.lots:
            self.lots[agent_id].append(lot)
        self.history.append(_deposit_entry(event, lot))
        self.check(agent_id, observed)
        return lot

    def check(self, agent_id: str, observed: list[Observation]) -> None:
        """`check_requirement` in memory."""
        done = self.done[agent_id]
        table = self.policy.requirements
        if not _needs_evaluation(observed, done, table):
            return
        # `store.lock_agent`'s count, written with the document at the end: that write is
        # what makes a concurrent evaluation of this agent (a grant, say) conflict.
        doc = self.docs[agent_id]  # there is one: the agent has observations
        doc["evaluations"] = doc.get("evaluations", 0) + 1
        self.changed[agent_id] = None
        lots = _in_store_order(self.lots[agent_id])
        for met, event in _newly_met(self.uow.source, agent_id, lots, observed, done, table):
            target = met.requirement.tier
            self.milestones.append(store.milestone_document(agent_id, target, met.at, event.id))
            done[target] = met.at
            self.uow.publish(event)

    def save(self) -> None:
        store.save_agent_documents(self.uow, {a: self.docs[a] for a in self.changed}, self.stored)
        store.insert_lots(self.uow, self.new_lots)
        store.append_history_entries(self.uow, self.history)
        store.insert_milestones(self.uow, self.milestones)


def _in_store_order(lots: Sequence[Lot]) -> list[Lot]:
    """As `store.lots_of` returns them (newest first, then by id): balances add the hours
    in this order, so the batch's sums are the per-event ones to the last bit."""
    by_id = sorted(lots, key=lambda lot: lot.lot_id)
    return sorted(by_id, key=lambda lot: lot.deposited_at, reverse=True)  # stable


# --- consumers: one event at a time (the reference the batch functions follow) -----------


def deposit_course(event: CourseCompleted, uow: UnitOfWork, policy: Policy) -> Lot | None:
    """A lot for the completed course; None when this completion was deposited before
    (the same completion re-sent under another event id)."""
    agent_id = event.data.agent.agent_id
    observed = _observe(uow, agent_id, _snapshot_observation(event))
    lot = _course_lot(event, policy)
    if store.find_lot(uow, lot.lot_id) is not None:
        return None
    store.insert_lot(uow, lot)
    store.append_history(uow, _deposit_entry(event, lot))
    check_requirement(uow, agent_id, observed, policy)
    return lot


def observe_agent(event: AgentRegistered | AgentUpdated, uow: UnitOfWork, policy: Policy) -> bool:
    """Records the agent's tier and team at the event's time; a new tier may already be
    met by the credits the agent holds."""
    agent_id = event.data.agent_id
    observed = _observe(uow, agent_id, _roster_observation(event))
    check_requirement(uow, agent_id, observed, policy)
    return True


def record_course(event: CoursePublished | CourseUpdated, uow: UnitOfWork) -> bool:
    data = event.data
    course = Course(
        course_id=data.course_id,
        title=data.title,
        tier=data.tier,
        dimension=data.dimension,
        credit_hours=float(data.credit_hours),
        tags=tuple(data.tags),
        published=data.published,
    )
    return store.save_course(uow, course, data.revision)


def _observe(uow: UnitOfWork, agent_id: str, observation: Observation) -> list[Observation]:
    known = store.observations(uow, agent_id)
    observed = add(known, observation)
    if observed != known:
        store.save_observations(uow, agent_id, observed)
    return observed


def _snapshot_observation(event: CourseCompleted) -> Observation:
    agent = event.data.agent
    return Observation(to_millis(event.time), RANK_SNAPSHOT, agent.tier, agent.team_id)


def _roster_observation(event: AgentRegistered | AgentUpdated) -> Observation:
    data = event.data
    rank = RANK_UPDATED if isinstance(event, AgentUpdated) else RANK_REGISTERED
    return Observation(to_millis(event.time), rank, data.tier, data.team_id, data.name)


def _course_lot(event: CourseCompleted, policy: Policy) -> Lot:
    data = event.data
    agent_id = data.agent.agent_id
    completed_at = to_millis(event.time)
    return Lot(
        lot_id=course_lot_id(agent_id, data.course_id, completed_at),
        agent_id=agent_id,
        source=SOURCE_COURSE,
        dimension=data.dimension,
        credit_hours=float(data.credit_hours),
        deposited_at=completed_at,
        expires_at=expiry_of(completed_at, policy.settings.course_valid_days),
        tags=tuple(data.tags),
        course_id=data.course_id,
        source_event_id=event.id,
    )


def _deposit_entry(event: CourseCompleted, lot: Lot) -> dict[str, Any]:
    return history_entry("deposit", lot, lot.deposited_at, source_event_id=event.id)


# --- requirement met --------------------------------------------------------------------


def check_requirement(
    uow: UnitOfWork, agent_id: str, observed: list[Observation], policy: Policy
) -> list[CreditsRequirementMet]:
    """Publishes `requirement_met` the first time the agent's valid credits met a tier's
    requirement while they held the tier below it; the milestone record (unique per agent
    and target tier) in the same transaction makes it once, even after the credits fall
    below it again."""
    done = store.milestones_of(uow, agent_id)
    table = policy.requirements
    if not _needs_evaluation(observed, done, table):
        return []
    store.lock_agent(uow, agent_id)
    published: list[CreditsRequirementMet] = []
    lots = store.lots_of(uow, agent_id)
    for met, event in _newly_met(uow.source, agent_id, lots, observed, done, table):
        store.insert_milestone(uow, agent_id, met.requirement.tier, met.at, event.id)
        uow.publish(event)
        published.append(event)
    return published


def _needs_evaluation(
    observed: list[Observation], done: Collection[str], table: RequirementTable
) -> bool:
    """Whether a tier the agent held has a next requirement not met yet."""
    return not all(
        (rule := table.next_for(w.tier)) is None or rule.tier in done  # type: ignore[arg-type]
        for w in tier_windows(observed)
    )


def _newly_met(
    source: str,
    agent_id: str,
    lots: Sequence[Lot],
    observed: list[Observation],
    done: Collection[str],
    table: RequirementTable,
) -> list[tuple[Met, CreditsRequirementMet]]:
    """The requirements the lots met, not met before, each with its event."""
    found = []
    for met in requirements_met(lots, tier_windows(observed), table):
        target = met.requirement.tier
        if target in done:
            continue
        then = resolve(agent_id, observed, met.at)
        assert then is not None
        event = CreditsRequirementMet.create(
            source=source,
            subject=agent_id,
            time=met.at,
            data=CreditsRequirementMetData(
                agent=AgentSnapshot(agent_id=agent_id, team_id=then.team_id, tier=then.tier),
                target_tier=target,
                total=met.held.total,
                by_dimension=met.held.by_dimension,
            ),
        )
        found.append((met, event))
    return found


# --- admin actions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    subject: str | None
    role: str | None


def grant(
    uow: UnitOfWork,
    agent_id: str,
    body: CreditGrant,
    actor: Actor,
    now: datetime,
    lot_id: str,
    policy: Policy,
) -> tuple[Lot, bool]:
    """Grants a lot; (lot, created). A retried request with the same idempotency key (the
    same `lot_id`) returns the first grant; with a different body it is a conflict."""
    observed = store.observations(uow, agent_id)
    if not observed:
        raise NotFound(
            f"agent {agent_id} not found: credits are granted to agents the roster has "
            "registered (retry shortly after registering)"
        )
    now = to_millis(now)
    tags = tuple(body.tags)
    existing = store.find_lot(uow, lot_id)
    if existing is not None:
        same = (
            existing.agent_id == agent_id
            and existing.credit_hours == body.credit_hours
            and existing.dimension == body.dimension
            and existing.reason == body.reason
            and existing.evidence_url == body.evidence_url
            and existing.tags == tags
        )
        if not same:
            raise Conflict("this Idempotency-Key was already used for a different grant")
        return existing, False
    valid_days = body.valid_days or policy.settings.grant_valid_days
    lot = Lot(
        lot_id=lot_id,
        agent_id=agent_id,
        source=SOURCE_GRANT,
        dimension=body.dimension,
        credit_hours=float(body.credit_hours),
        deposited_at=now,
        expires_at=expiry_of(now, valid_days),
        tags=tags,
        reason=body.reason,
        evidence_url=body.evidence_url,
        granted_by=actor.subject,
    )
    store.insert_lot(uow, lot)
    store.append_history(
        uow,
        history_entry(
            "grant",
            lot,
            now,
            reason=body.reason,
            evidence_url=body.evidence_url,
            actor=actor.subject,
            actor_role=actor.role,
        ),
    )
    check_requirement(uow, agent_id, observed, policy)
    return lot, True


def revoke(
    uow: UnitOfWork, agent_id: str, lot_id: str, reason: str, actor: Actor, now: datetime
) -> Lot:
    """Revokes a lot from now on (it still counts in views as of earlier instants)."""
    now = to_millis(now)
    lot = store.find_lot(uow, lot_id)
    if lot is None or lot.agent_id != agent_id:
        raise NotFound(f"lot {lot_id} of agent {agent_id} not found")
    why_not = can_change(lot, now)
    if why_not is not None or not store.mark_revoked(uow, lot_id, now, actor.subject, reason):
        raise Conflict(why_not or f"lot {lot_id} can no longer be revoked")
    store.append_history(
        uow,
        history_entry(
            "revocation", lot, now, reason=reason, actor=actor.subject, actor_role=actor.role
        ),
    )
    revoked = store.find_lot(uow, lot_id)
    assert revoked is not None
    return revoked


# --- expiry -----------------------------------------------------------------------------


def expire_lot(uow: UnitOfWork, lot_id: str, now: datetime) -> Lot | None:
    """Marks a lot whose expiry passed as expired and publishes `credits.expired` (time:
    the expiry instant); None if it was not due or another instance did it first."""
    lot = store.find_lot(uow, lot_id)
    if lot is None or not store.mark_expired(uow, lot_id, now):
        return None
    store.append_history(uow, history_entry("expiry", lot, lot.expires_at))
    uow.publish(
        CreditsExpired.create(
            source=uow.source,
            subject=lot.agent_id,
            time=lot.expires_at,
            data=CreditsExpiredData(
                agent_id=lot.agent_id,
                lot_id=lot.lot_id,
                credit_hours=lot.credit_hours,
                dimension=lot.dimension,  # type: ignore[arg-type]
            ),
        )
    )
    return lot
