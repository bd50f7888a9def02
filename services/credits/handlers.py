"""Applying the credit rules through the store, one unit of work at a time.

Consumers (`deposit_course`, `observe_agent`, `record_course`) run one after another in
their batch's transaction (`handle_batch`); admin actions (`grant`, `revoke`) and the
expiry timer (`expire_lot`) in a transaction of their own. Each change, its history
entry and its events commit together.
"""

from __future__ import annotations

from dataclasses import dataclass
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
from services.credits import store
from services.credits.bank import (
    SOURCE_COURSE,
    SOURCE_GRANT,
    Lot,
    can_change,
    course_lot_id,
    expiry_of,
    to_millis,
)
from services.credits.policy import Policy
from services.credits.readiness import Course, requirements_met
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


# --- consumers --------------------------------------------------------------------------


def deposit_course(event: CourseCompleted, uow: UnitOfWork, policy: Policy) -> Lot | None:
    """A lot for the completed course; None when this completion was deposited before
    (the same completion re-sent under another event id)."""
    data = event.data
    agent_id = data.agent.agent_id
    completed_at = to_millis(event.time)
    observed = _observe(
        uow,
        agent_id,
        Observation(completed_at, RANK_SNAPSHOT, data.agent.tier, data.agent.team_id),
    )
    lot_id = course_lot_id(agent_id, data.course_id, completed_at)
    if store.find_lot(uow, lot_id) is not None:
        return None
    lot = Lot(
        lot_id=lot_id,
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
    store.insert_lot(uow, lot)
    store.append_history(uow, history_entry("deposit", lot, completed_at, source_event_id=event.id))
    check_requirement(uow, agent_id, observed, policy)
    return lot


def observe_agent(event: AgentRegistered | AgentUpdated, uow: UnitOfWork, policy: Policy) -> bool:
    """Records the agent's tier and team at the event's time; a new tier may already be
    met by the credits the agent holds."""
    data = event.data
    rank = RANK_UPDATED if isinstance(event, AgentUpdated) else RANK_REGISTERED
    observation = Observation(to_millis(event.time), rank, data.tier, data.team_id, data.name)
    observed = _observe(uow, data.agent_id, observation)
    check_requirement(uow, data.agent_id, observed, policy)
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
    windows = tier_windows(observed)
    if all(
        (rule := table.next_for(w.tier)) is None or rule.tier in done  # type: ignore[arg-type]
        for w in windows
    ):
        return []
    store.lock_agent(uow, agent_id)
    published: list[CreditsRequirementMet] = []
    for met in requirements_met(store.lots_of(uow, agent_id), windows, table):
        target = met.requirement.tier
        if target in done:
            continue
        then = resolve(agent_id, observed, met.at)
        assert then is not None
        event = CreditsRequirementMet.create(
            source=uow.source,
            subject=agent_id,
            time=met.at,
            data=CreditsRequirementMetData(
                agent=AgentSnapshot(agent_id=agent_id, team_id=then.team_id, tier=then.tier),
                target_tier=target,
                total=met.held.total,
                by_dimension=met.held.by_dimension,
            ),
        )
        store.insert_milestone(uow, agent_id, target, met.at, event.id)
        uow.publish(event)
        published.append(event)
    return published


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
