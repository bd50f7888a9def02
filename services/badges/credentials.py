"""Open Badges 3.0: issuer profile, achievements and awarded badges as `OpenBadgeCredential`s
(JSON-LD on the VC Data Model 2.0), signed as a JWT (VC-JOSE-COSE, EdDSA over Ed25519).

Pure functions of a definition, an award and a key: no I/O here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contracts.envelope import utc_iso
from services.badges.definitions import BadgeDefinition

VC_V2_CONTEXT = "https://www.w3.org/ns/credentials/v2"
OB_V3_CONTEXT = "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"
JWT_TYPE = "vc+jwt"
#: Stable ids for credentials: the same award always has the same credential id.
CREDENTIAL_NAMESPACE = uuid.UUID("6b1c8f0e-5f0a-4b8e-9a57-2f7a0c3d9e41")


@dataclass(frozen=True)
class Issuer:
    base_url: str  # where the API is reached from outside (the gateway), no trailing slash
    name: str
    url: str | None = None
    email: str | None = None

    @property
    def id(self) -> str:
        return f"{self.base_url}/v1/badges/issuer"


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    def public_jwk(self) -> dict[str, str]:
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
        return {**jwk, "kid": thumbprint(jwk), "alg": "EdDSA", "use": "sig"}

    @property
    def kid(self) -> str:
        return self.public_jwk()["kid"]

    def private_pem(self) -> str:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()


def generate_key() -> SigningKey:
    return SigningKey(Ed25519PrivateKey.generate())


def key_from_pem(pem: str | bytes) -> SigningKey:
    """An Ed25519 private key in PEM (PKCS#8); ValueError for anything else."""
    data = pem.encode() if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the credential signing key must be an Ed25519 private key")
    return SigningKey(key)


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint (required members, sorted, no spaces), base64url SHA-256."""
    members = {k: jwk[k] for k in ("crv", "kty", "x")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return _b64url(hashlib.sha256(canonical).digest())


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def achievement_id(issuer: Issuer, badge_id: str, level: str | None) -> str:
    suffix = f"?level={level}" if level else ""
    return f"{issuer.base_url}/v1/badges/{badge_id}/achievement{suffix}"


def display_name(definition: BadgeDefinition, level: str | None) -> str:
    return f"{definition.name} ({level.capitalize()})" if level else definition.name


def issuer_profile(issuer: Issuer, key: SigningKey | None = None) -> dict[str, Any]:
    """The issuer `Profile`; with a key, its public key as a verification method."""
    profile: dict[str, Any] = {
        "@context": [VC_V2_CONTEXT, OB_V3_CONTEXT],
        "id": issuer.id,
        "type": ["Profile"],
        "name": issuer.name,
    }
    if issuer.url:
        profile["url"] = issuer.url
    if issuer.email:
        profile["email"] = issuer.email
    if key is not None:
        jwk = key.public_jwk()
        profile["verificationMethod"] = [
            {
                "id": f"{issuer.id}#{jwk['kid']}",
                "type": "JsonWebKey",
                "controller": issuer.id,
                "publicKeyJwk": jwk,
            }
        ]
    return profile


def achievement(issuer: Issuer, definition: BadgeDefinition, level: str | None) -> dict[str, Any]:
    """The OB 3.0 `Achievement` of one level of a badge."""
    lv = definition.level(level)
    narrative = definition.criteria_narrative
    if lv is not None and lv.level:
        narrative = f"{narrative} This is the {lv.level} level."
    result: dict[str, Any] = {
        "id": achievement_id(issuer, definition.id, level),
        "type": ["Achievement"],
        "achievementType": "Badge",
        "name": display_name(definition, level),
        "description": definition.description,
        "criteria": {"narrative": narrative},
        "creator": {"id": issuer.id, "type": ["Profile"], "name": issuer.name},
    }
    if definition.image:
        result["image"] = {"id": definition.image, "type": "Image"}
    if level:
        result["tag"] = [level]
    return result


def evidence_uri(event_id: str) -> str:
    try:
        return uuid.UUID(event_id).urn
    except ValueError:
        return f"urn:skillquest:event:{event_id}"


def credential_id(agent_id: str, badge_id: str, level: str | None) -> str:
    return uuid.uuid5(CREDENTIAL_NAMESPACE, f"{agent_id}|{badge_id}|{level or ''}").urn


def open_badge_credential(
    issuer: Issuer,
    definition: BadgeDefinition,
    *,
    agent_id: str,
    level: str | None,
    awarded_at: datetime,
    evidence: list[str],
) -> dict[str, Any]:
    """An awarded badge as an `OpenBadgeCredential` (unsigned JSON-LD)."""
    return {
        "@context": [VC_V2_CONTEXT, OB_V3_CONTEXT],
        "id": credential_id(agent_id, definition.id, level),
        "type": ["VerifiableCredential", "OpenBadgeCredential"],
        "name": display_name(definition, level),
        "description": definition.description,
        "issuer": issuer_profile(issuer),
        "validFrom": utc_iso(awarded_at),
        "credentialSubject": {
            "id": f"{issuer.base_url}/v1/agents/{agent_id}",
            "type": ["AchievementSubject"],
            "achievement": achievement(issuer, definition, level),
        },
        "evidence": [
            {
                "id": evidence_uri(event_id),
                "type": ["Evidence"],
                "name": "Skillquest event",
                "description": f"The event {event_id} counted toward this badge.",
            }
            for event_id in evidence
        ],
    }


def sign(credential: dict[str, Any], key: SigningKey, issuer: Issuer) -> str:
    """The credential as a compact JWS: header names the key; payload is the credential."""
    headers = {"typ": JWT_TYPE, "cty": "vc", "kid": f"{issuer.id}#{key.kid}"}
    return jwt.encode(credential, key.private, algorithm="EdDSA", headers=headers)


def verify(token: str, public_jwk: dict[str, Any]) -> dict[str, Any]:
    """The credential if `token` was signed by the key of `public_jwk`; raises otherwise."""
    key = jwt.PyJWK(public_jwk).key
    return jwt.decode(token, key, algorithms=["EdDSA"], options={"verify_aud": False})
