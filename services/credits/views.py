"""The read side: the agent's credit view, lots, history and the team view, computed at
read time from what is stored (so they hold whatever order the events arrived in)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from contracts.api.credits import (
    AgentCredits,
    AgentLots,
    CreditHistory,
    CreditLot,
    DimensionHours,
    HistoryEntry,
    NextTier,
    RecommendedCourse,
    Requirement,
    Requirements,
    TeamCredits,
    TeamMemberCredits,
)
from contracts.api.credits import Missing as MissingModel
from contracts.vocabulary import next_tier
from services.credits import store
from services.credits.bank import Balance, Lot, balance, expiring_soon, known_at, status_at
from services.credits.policy import Policy
from services.credits.readiness import Missing, missing, recommend
from services.credits.readiness import Requirement as RequirementRule
from services.credits.roster import AgentState, resolve
from services.runtime.errors import BadRequest, NotFound
from services.runtime.mongo import ServiceDatabase


def lot_model(lot: Lot, at: datetime) -> CreditLot:
    return CreditLot(
        lot_id=lot.lot_id,
        agent_id=lot.agent_id,
        source=lot.source,  # type: ignore[arg-type]
        course_id=lot.course_id,
        dimension=lot.dimension,  # type: ignore[arg-type]
        credit_hours=lot.credit_hours,
        tags=list(lot.tags),
        deposited_at=lot.deposited_at,
        expires_at=lot.expires_at,
        status=status_at(lot, at),  # type: ignore[arg-type]
        reason=lot.reason,
        evidence_url=lot.evidence_url,
        granted_by=lot.granted_by,
        revoked_at=lot.revoked_at,
        revoked_by=lot.revoked_by,
        revocation_reason=lot.revocation_reason,
    )


def requirement_model(rule: RequirementRule) -> Requirement:
    return Requirement(
        tier=rule.tier,
        from_tier=rule.from_tier,
        total=rule.total,
        by_dimension=DimensionHours(**rule.by_dimension),
        by_tag=dict(rule.by_tag),
    )


def _missing_model(gaps: Missing) -> MissingModel:
    return MissingModel(
        total=gaps.total, by_dimension=DimensionHours(**gaps.by_dimension), by_tag=dict(gaps.by_tag)
    )


def _readiness(
    agent: AgentState, held: Balance, milestones: Mapping[str, datetime], policy: Policy
) -> tuple[NextTier | None, Missing | None]:
    rule = policy.requirements.next_for(agent.tier)  # type: ignore[arg-type]
    if rule is None:
        return None, None
    gaps = missing(held, rule)
    model = NextTier(
        tier=rule.tier,
        met=gaps.met,
        missing=_missing_model(gaps),
        required=requirement_model(rule),
        first_met_at=milestones.get(rule.tier),
    )
    return model, gaps


def _agent(source: store.Reader, agent_id: str, at: datetime) -> AgentState:
    agent = resolve(agent_id, store.observations(source, agent_id), at)
    if agent is None:
        raise NotFound(f"agent {agent_id} not found (no roster or learning events for them yet)")
    return agent


def agent_credits(
    source: ServiceDatabase, agent_id: str, at: datetime, policy: Policy
) -> AgentCredits:
    agent = _agent(source, agent_id, at)
    lots = store.lots_of(source, agent_id)
    held = balance(lots, at)
    next_tier_model, gaps = _readiness(agent, held, store.milestones_of(source, agent_id), policy)
    tiers = [t for t in (agent.tier, next_tier(agent.tier)) if t]  # type: ignore[arg-type]
    completed = {lot.course_id for lot in lots if lot.course_id}
    catalogue = source.recent("published courses").get(
        tuple(tiers), lambda: tuple(store.published_courses(source, tiers))
    )
    recommendations = recommend(
        catalogue,
        completed,
        agent.tier,  # type: ignore[arg-type]
        gaps,
        policy.settings.max_recommendations,
    )
    counted_tags = policy.requirements.tags()
    return AgentCredits(
        agent_id=agent_id,
        tier=agent.tier,  # type: ignore[arg-type]
        team_id=agent.team_id,
        as_of=at,
        total=held.total,
        by_dimension=DimensionHours(**held.by_dimension),
        by_tag={tag: held.by_tag.get(tag, 0.0) for tag in sorted(counted_tags)},
        expiring_soon=[
            lot_model(lot, at) for lot in expiring_soon(lots, at, policy.expiring_window)
        ],
        next_tier=next_tier_model,
        recommended_courses=[
            RecommendedCourse(
                course_id=r.course.course_id,
                title=r.course.title,
                tier=r.course.tier,
                dimension=r.course.dimension,  # type: ignore[arg-type]
                credit_hours=r.course.credit_hours,
                tags=list(r.course.tags),
                gap_hours=r.gap_hours,
            )
            for r in recommendations
        ],
    )


def agent_lots(source: store.Reader, agent_id: str, at: datetime, status: str | None) -> AgentLots:
    lots = store.lots_of(source, agent_id)
    if not lots:
        _agent(source, agent_id, at)  # 404 for an agent we know nothing of
    models = [lot_model(lot, at) for lot in known_at(lots, at)]
    if status is not None:
        models = [model for model in models if model.status == status]
    return AgentLots(agent_id=agent_id, as_of=at, lots=models)


def agent_lot(source: store.Reader, agent_id: str, lot_id: str, at: datetime) -> CreditLot:
    lot = store.find_lot(source, lot_id)
    if lot is None or lot.agent_id != agent_id:
        raise NotFound(f"lot {lot_id} of agent {agent_id} not found")
    return lot_model(lot, at)


def _history_entry(doc: dict[str, Any]) -> HistoryEntry:
    return HistoryEntry(
        entry_id=doc["_id"],
        kind=doc["kind"],
        at=doc["at"],
        lot_id=doc["lot_id"],
        dimension=doc["dimension"],
        credit_hours=doc["credit_hours"],
        course_id=doc.get("course_id"),
        reason=doc.get("reason"),
        evidence_url=doc.get("evidence_url"),
        actor=doc.get("actor"),
        source_event_id=doc.get("source_event_id"),
    )


def credit_history(
    source: store.Reader, agent_id: str, limit: int, cursor: str | None, now: datetime
) -> CreditHistory:
    after = None
    if cursor is not None:
        try:
            after = store.decode_cursor(cursor)
        except ValueError as error:
            raise BadRequest(
                str(error), details=[{"field": "cursor", "message": "send a next_cursor value"}]
            ) from None
    entries, next_cursor = store.history_page(source, agent_id, limit, after)
    if not entries and after is None:
        _agent(source, agent_id, now)
    return CreditHistory(
        agent_id=agent_id, history=[_history_entry(e) for e in entries], next_cursor=next_cursor
    )


def team_credits(source: store.Reader, team_id: str, at: datetime, policy: Policy) -> TeamCredits:
    """Agents whose team (as last known) is `team_id`, each with their readiness for the
    next tier and what expires in the window."""
    members = store.team_members(source, team_id)
    if not members:
        raise NotFound(f"team {team_id} not found (no agents known in it)")
    lots = store.lots_of_agents(source, members)
    milestones = store.milestones_of_agents(source, members)
    agents: list[TeamMemberCredits] = []
    for agent_id, observed in members.items():
        agent = resolve(agent_id, observed, at)
        assert agent is not None
        held = balance(lots[agent_id], at)
        next_tier_model, _ = _readiness(agent, held, milestones[agent_id], policy)
        soon = expiring_soon(lots[agent_id], at, policy.expiring_window)
        agents.append(
            TeamMemberCredits(
                agent_id=agent_id,
                name=agent.name,
                tier=agent.tier,  # type: ignore[arg-type]
                total=held.total,
                by_dimension=DimensionHours(**held.by_dimension),
                next_tier=next_tier_model,
                expiring_soon=[lot_model(lot, at) for lot in soon],
                expiring_soon_hours=sum(lot.credit_hours for lot in soon),
            )
        )
    ready = sum(1 for a in agents if a.next_tier is not None and a.next_tier.met)
    return TeamCredits(team_id=team_id, as_of=at, ready=ready, agents=agents)


def requirements(policy: Policy) -> Requirements:
    return Requirements(requirements=[requirement_model(r) for r in policy.requirements.all()])
