"""HTTP models of the badges service: definitions, an agent's awards with progress, and
Open Badges 3.0 documents (issuer profile, achievements, credentials) (ARCHITECTURE §4
"Badges", §5).

Requests are frozen and forbid unknown fields. Times are ISO 8601 in UTC with a `Z`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer

from contracts.envelope import Contract, utc_iso
from contracts.vocabulary import Id, Tier

UtcTime = Annotated[AwareDatetime, PlainSerializer(utc_iso, return_type=str)]
LevelName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]


class Response(BaseModel):
    """Base of response bodies: immutable; readers must accept fields added later."""

    model_config = ConfigDict(frozen=True)


# --- definitions ------------------------------------------------------------------------


class BadgeLevelView(Response):
    level: str | None = Field(description="e.g. bronze; null for a badge of one level")
    threshold: int | None = Field(None, description="Events or days needed, for counting criteria")
    target_tier: Tier | None = Field(None, description="For credits-requirement badges")
    bonus_points: int = Field(ge=0, description="Points the points service awards with it")


class BadgeDefinitionView(Response):
    badge_id: Id
    name: str
    description: str
    criteria_narrative: str = Field(description="How it is earned, for people")
    image: str | None = None
    criterion: dict[str, Any] = Field(
        description="The rule as data: `kind` (event_count, score_threshold, streak_days, "
        "top_n, tagged_courses_completed, credits_requirement_met) and its parameters"
    )
    levels: list[BadgeLevelView]
    achievement_url: str = Field(description="The Open Badges 3.0 achievement of the badge")


class BadgeDefinitionsResponse(Response):
    """`GET /v1/badges`."""

    badges: list[BadgeDefinitionView]


# --- an agent's badges ------------------------------------------------------------------


class AwardedBadge(Response):
    badge_id: Id
    level: str | None
    name: str
    awarded_at: UtcTime = Field(description="Time of the event that met the criterion")
    bonus_points: int
    evidence: list[str] = Field(description="Ids of the events that met the criterion")
    credential_url: str = Field(description="Path of its Open Badges 3.0 credential")


class BadgeProgressView(Response):
    badge_id: Id
    next_level: str | None = Field(description="The lowest level not yet awarded")
    current: int = Field(ge=0)
    target: int = Field(ge=0, description="0 when nothing can be earned yet (no course)")
    unit: Literal["events", "days", "courses", "periods", "requirements"]


class AgentBadgesResponse(Response):
    """`GET /v1/agents/{agent_id}/badges`: awards (oldest first) and progress toward the next
    level of every badge not fully awarded."""

    agent_id: Id
    badges: list[AwardedBadge]
    progress: list[BadgeProgressView]


# --- Open Badges 3.0 --------------------------------------------------------------------


class CredentialQuery(Contract):
    """`GET /v1/agents/{agent_id}/badges/{badge_id}/credential` query."""

    level: LevelName | None = Field(
        None, description="Which level, when the badge was awarded at several"
    )
    format: Literal["json", "jwt"] = Field(
        "json",
        description="json: the OpenBadgeCredential (JSON-LD); jwt: the same credential "
        'signed as a JWT (EdDSA, VC-JOSE-COSE) in `{"jwt": ...}`',
    )


class AchievementQuery(Contract):
    """`GET /v1/badges/{badge_id}/achievement` query."""

    level: LevelName | None = None


class SignedCredentialResponse(Response):
    """A credential signed as a compact JWS; verify it with the issuer's published key."""

    format: Literal["jwt"] = "jwt"
    media_type: Literal["application/vc+jwt"] = "application/vc+jwt"
    kid: str = Field(description="The key that signed it (in the issuer profile and JWKS)")
    jwt: str


class JsonWebKeySet(Response):
    """`GET /v1/badges/issuer/jwks`: the public keys that verify credentials."""

    keys: list[dict[str, Any]]


class OpenBadgeDocument(Response):
    """An Open Badges 3.0 JSON-LD document: an `OpenBadgeCredential`, an `Achievement` or
    the issuer `Profile`. The Open Badges specification owns their shape; every one has
    these members, and the rest pass through."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    context: list[str] = Field(alias="@context")
    id: str
    type: list[str]
