"""What the HTTP entrypoints answer, built from the store, the rules and the key."""

from __future__ import annotations

import re
from typing import Any

from contracts.api.badges import (
    AgentBadgesResponse,
    AwardedBadge,
    BadgeDefinitionsResponse,
    BadgeDefinitionView,
    BadgeLevelView,
    BadgeProgressView,
    CredentialQuery,
    JsonWebKeySet,
    SignedCredentialResponse,
)
from contracts.vocabulary import ID_PATTERN
from services.badges import credentials, store
from services.badges.credentials import Issuer, SigningKey
from services.badges.criteria import progress
from services.badges.definitions import COUNTED_KINDS, BadgeDefinition
from services.badges.handlers import Rules
from services.badges.keys import IssuerKeys
from services.badges.settings import BadgesSettings
from services.runtime.errors import BadRequest, NotFound
from services.runtime.http import require
from services.runtime.mongo import ServiceDatabase


def check_id(value: str, name: str) -> str:
    """Path ids follow the id pattern of the contracts; anything else is a 400, not a miss."""
    if not re.match(ID_PATTERN, value):
        raise BadRequest(
            f"invalid {name}",
            details=[{"field": name, "message": f"must match {ID_PATTERN}", "received": value}],
        )
    return value


def issuer_of(settings: BadgesSettings) -> Issuer:
    return Issuer(
        settings.base_url, settings.issuer_name, settings.issuer_url, settings.issuer_email
    )


def definition_view(definition: BadgeDefinition, issuer: Issuer) -> BadgeDefinitionView:
    counted = definition.criterion.kind in COUNTED_KINDS
    return BadgeDefinitionView(
        badge_id=definition.id,
        name=definition.name,
        description=definition.description,
        criteria_narrative=definition.criteria_narrative,
        image=definition.image,
        criterion=definition.criterion.model_dump(mode="json", by_alias=True, exclude_none=True),
        levels=[
            BadgeLevelView(
                level=lv.level,
                threshold=lv.threshold if counted else None,
                target_tier=lv.target_tier,
                bonus_points=lv.bonus_points,
            )
            for lv in definition.levels
        ],
        achievement_url=credentials.achievement_id(issuer, definition.id, None),
    )


def definitions(rules: Rules, settings: BadgesSettings) -> BadgeDefinitionsResponse:
    issuer = issuer_of(settings)
    return BadgeDefinitionsResponse(badges=[definition_view(d, issuer) for d in rules.definitions])


def known_badge(rules: Rules, badge_id: str) -> BadgeDefinition:
    return require(rules.by_id.get(badge_id), f"badge {badge_id}")  # type: ignore[no-any-return]


def definition(rules: Rules, settings: BadgesSettings, badge_id: str) -> BadgeDefinitionView:
    return definition_view(known_badge(rules, badge_id), issuer_of(settings))


def achievement_of(
    rules: Rules, settings: BadgesSettings, badge_id: str, level: str | None
) -> dict[str, Any]:
    badge = known_badge(rules, badge_id)
    if badge.level(level) is None:
        raise BadRequest(
            f"badge {badge_id} has no level {level!r}",
            details={"levels": badge.level_names},
        )
    document = credentials.achievement(issuer_of(settings), badge, level)
    return {"@context": [credentials.VC_V2_CONTEXT, credentials.OB_V3_CONTEXT], **document}


def issuer(settings: BadgesSettings, key: SigningKey) -> dict[str, Any]:
    return credentials.issuer_profile(issuer_of(settings), key)


def jwks(key: SigningKey) -> JsonWebKeySet:
    return JsonWebKeySet(keys=[key.public_jwk()])


def agent_badges(
    db: ServiceDatabase, rules: Rules, settings: BadgesSettings, agent_id: str
) -> AgentBadgesResponse:
    check_id(agent_id, "agent_id")
    awards = store.awards_of(db.collection(store.AWARDS), agent_id)
    awarded: dict[str, set[str | None]] = {}
    badges = []
    for award in awards:
        awarded.setdefault(award["badge_id"], set()).add(award["level"])
        badge = rules.by_id.get(award["badge_id"])
        level_query = f"?level={award['level']}" if award["level"] else ""
        badges.append(
            AwardedBadge(
                badge_id=award["badge_id"],
                level=award["level"],
                name=credentials.display_name(badge, award["level"])
                if badge
                else award["badge_id"],
                awarded_at=award["awarded_at"],
                bonus_points=award["bonus_points"],
                evidence=award["evidence"],
                credential_url=(
                    f"/v1/agents/{agent_id}/badges/{award['badge_id']}/credential{level_query}"
                ),
            )
        )
    facts = store.facts_of(db.collection(store.FACTS), agent_id)
    tags = rules.tags()
    catalog = db.recent("catalog").get(
        frozenset(tags), lambda: store.catalog(db.collection(store.COURSES), tags)
    )
    progress_views = []
    for definition in rules.definitions:
        own = [f for f in facts if f.badge_id == definition.id]
        step = progress(definition, own, awarded.get(definition.id, set()), catalog)
        if step is not None:
            progress_views.append(
                BadgeProgressView(
                    badge_id=step.badge_id,
                    next_level=step.next_level,
                    current=step.current,
                    target=step.target,
                    unit=step.unit,  # type: ignore[arg-type]
                )
            )
    return AgentBadgesResponse(agent_id=agent_id, badges=badges, progress=progress_views)


def credential(
    db: ServiceDatabase,
    rules: Rules,
    settings: BadgesSettings,
    keys: IssuerKeys,
    agent_id: str,
    badge_id: str,
    query: CredentialQuery,
) -> Any:
    check_id(agent_id, "agent_id")
    badge = known_badge(rules, badge_id)
    awards = store.find_award(db.collection(store.AWARDS), agent_id, badge_id)
    if query.level is not None:
        awards = [a for a in awards if a["level"] == query.level]
    if not awards:
        level = f" at level {query.level}" if query.level else ""
        raise NotFound(f"agent {agent_id} has not been awarded badge {badge_id}{level}")
    if len(awards) > 1:
        levels = [a["level"] for a in awards]
        raise BadRequest(
            f"badge {badge_id} was awarded at several levels; choose one with ?level=",
            details={"levels": levels},
        )
    award = awards[0]
    issuer = issuer_of(settings)
    document = credentials.open_badge_credential(
        issuer,
        badge,
        agent_id=agent_id,
        level=award["level"],
        awarded_at=award["awarded_at"],
        evidence=award["evidence"],
    )
    if query.format == "json":
        return document
    key = keys.key(db)
    token = credentials.sign(document, key, issuer)
    return SignedCredentialResponse(kid=f"{issuer.id}#{key.kid}", jwt=token)
