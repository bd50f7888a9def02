"""Open Badges 3.0 credentials: shape (against the shipped OB 3.0 schema) and the EdDSA
signature a verifier checks with the published key."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest

from services.badges.credentials import (
    OB_V3_CONTEXT,
    VC_V2_CONTEXT,
    Issuer,
    generate_key,
    issuer_profile,
    key_from_pem,
    open_badge_credential,
    sign,
    thumbprint,
    verify,
)
from services.badges.definitions import load_definitions
from tests.support.schemas import schema_errors as errors

SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "ob_v3p0_openbadgecredential.schema.json").read_text()
)
DEFS = {d.id: d for d in load_definitions()}
ISSUER = Issuer("https://skillquest.example.com", "Skillquest Academy", "https://example.com")
AWARDED = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
EVIDENCE = ["6f1e3a52-8f7c-4e39-9d8a-2b9f6a0f3c11", "backfill-42"]


def credential(badge: str = "course-finisher", level: str | None = "silver") -> dict:
    return open_badge_credential(
        ISSUER, DEFS[badge], agent_id="a-7", level=level, awarded_at=AWARDED, evidence=EVIDENCE
    )


def test_credential_has_the_open_badges_3_shape():
    doc = credential()
    assert doc["@context"] == [VC_V2_CONTEXT, OB_V3_CONTEXT]
    assert doc["type"] == ["VerifiableCredential", "OpenBadgeCredential"]
    assert doc["validFrom"] == "2026-11-02T02:00:00Z"
    assert doc["issuer"]["id"] == "https://skillquest.example.com/v1/badges/issuer"
    assert doc["issuer"]["type"] == ["Profile"]
    subject = doc["credentialSubject"]
    assert subject["type"] == ["AchievementSubject"]
    assert subject["id"] == "https://skillquest.example.com/v1/agents/a-7"
    achievement = subject["achievement"]
    assert achievement["type"] == ["Achievement"]
    assert achievement["name"] == "Course Finisher (Silver)"
    assert achievement["id"].endswith("/v1/badges/course-finisher/achievement?level=silver")
    assert "5 for silver" in achievement["criteria"]["narrative"]
    assert [e["id"] for e in doc["evidence"]] == [
        "urn:uuid:6f1e3a52-8f7c-4e39-9d8a-2b9f6a0f3c11",
        "urn:skillquest:event:backfill-42",
    ]
    assert doc["id"] == credential()["id"]  # stable: the same award, the same credential id
    assert doc["id"] != credential(level="gold")["id"]


@pytest.mark.parametrize("badge", sorted(DEFS))
def test_every_badge_credential_validates_against_the_ob3_schema(badge):
    level = DEFS[badge].levels[0].level
    assert errors(SCHEMA, credential(badge, level)) == []


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda d: d.pop("validFrom"), "<root>: 'validFrom' is a required property"),
        (lambda d: d.update(type=["VerifiableCredential"]), "type: "),
        (lambda d: d.update({"@context": [OB_V3_CONTEXT, VC_V2_CONTEXT]}), "@context/0: "),
        (
            lambda d: d["credentialSubject"]["achievement"].pop("criteria"),
            "credentialSubject/achievement: 'criteria' is a required property",
        ),
        (lambda d: d["credentialSubject"].update(type=["Person"]), "credentialSubject/type: "),
        (lambda d: d["issuer"].pop("id"), "issuer: 'id' is a required property"),
        (lambda d: d.update(validFrom="2026-11-02 02:00"), "validFrom: "),
        (lambda d: d["evidence"][0].update(type=["Proof"]), "evidence/0/type"),
    ],
)
def test_the_schema_check_rejects_a_broken_credential(change, complaint):
    doc = copy.deepcopy(credential())
    change(doc)
    found = errors(SCHEMA, doc)
    assert any(complaint in e for e in found), found


def test_signed_credential_verifies_with_the_published_key_and_not_when_altered():
    key = generate_key()
    doc = credential()
    token = sign(doc, key, ISSUER)
    profile = issuer_profile(ISSUER, key)
    [method] = profile["verificationMethod"]
    published = method["publicKeyJwk"]
    assert errors({"$defs": SCHEMA["$defs"], "$ref": "#/$defs/Profile"}, profile) == []
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "typ": "vc+jwt", "cty": "vc", "kid": method["id"]}
    assert verify(token, published) == doc

    head, payload, signature = token.split(".")
    altered = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    altered["credentialSubject"]["achievement"]["name"] = "Course Finisher (Gold)"
    forged_payload = base64.urlsafe_b64encode(json.dumps(altered).encode()).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        verify(f"{head}.{forged_payload}.{signature}", published)
    with pytest.raises(jwt.InvalidSignatureError):
        verify(token, generate_key().public_jwk())


def test_a_key_survives_its_pem_and_only_ed25519_is_accepted():
    key = generate_key()
    again = key_from_pem(key.private_pem())
    assert again.public_jwk() == key.public_jwk()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="Ed25519"):
        key_from_pem(other)


def test_jwk_thumbprint_matches_rfc_8037():
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
