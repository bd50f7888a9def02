"""Bearer token checks: every way a token can be wrong is a 401; the CLI mints good ones."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from services.gateway import token as token_cli
from services.gateway.auth import (
    Caller,
    VerifiedTokens,
    bearer_token,
    check_secret,
    mint,
    verify,
)
from services.runtime.errors import Unauthorized

SECRET = "a-test-secret-that-is-long-enough-for-hs256-and-even-hs512-keys!!"
NOW = int(time.time())


def signed(claims: dict, secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def claims(**overrides: object) -> dict:
    base: dict[str, object] = {"sub": "agent-1", "role": "agent", "exp": int(time.time()) + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def rejected(token: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as raised:
        verify(token, SECRET)
    assert raised.value.status == 401
    return raised.value


def test_a_good_token_names_the_caller() -> None:
    assert verify(signed(claims()), SECRET) == Caller("agent-1", "agent", None)
    manager = verify(signed(claims(sub="mia", role="manager", team="t1")), SECRET)
    assert manager == Caller("mia", "manager", "t1")
    assert not manager.is_writer
    assert verify(signed(claims(sub="lms", role="service")), SECRET).is_writer
    assert verify(signed(claims(sub="alice", role="admin")), SECRET).is_writer


@pytest.mark.parametrize("header", [None, ""])
def test_a_missing_header_is_401(header: str | None) -> None:
    with pytest.raises(Unauthorized) as raised:
        bearer_token(header)
    assert raised.value.code == "missing_token"


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "token abc"])
def test_a_header_that_is_not_bearer_is_401(header: str) -> None:
    with pytest.raises(Unauthorized):
        bearer_token(header)


def test_the_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token("bearer abc.def.ghi") == "abc.def.ghi"


@pytest.mark.parametrize("token", ["garbage", "a.b", "a.b.c", "", "..", "é.é.é"])
def test_a_malformed_token_is_401(token: str) -> None:
    rejected(token)


def test_an_expired_token_is_401() -> None:
    error = rejected(signed(claims(exp=NOW - 60)))
    assert error.code == "token_expired"


def test_a_token_signed_with_another_secret_is_401() -> None:
    error = rejected(signed(claims(), secret="another-secret-that-is-also-32-bytes!"))
    assert "signature" in error.message


def test_an_unsigned_alg_none_token_is_401() -> None:
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
    error = rejected(unsigned)
    assert "HS256" in error.message
    # also with a "signature" appended, and with the alg name in other cases
    rejected(f"{b64({'alg': 'None', 'typ': 'JWT'})}.{b64(claims())}.c2ln")


def test_a_token_of_another_hmac_algorithm_is_401() -> None:
    rejected(signed(claims(), algorithm="HS512"))


def test_a_tampered_payload_is_401() -> None:
    header, _, signature = signed(claims()).split(".")
    rejected(f"{header}.{b64(claims(role='admin'))}.{signature}")


@pytest.mark.parametrize("missing", ["sub", "role", "exp"])
def test_a_token_without_a_required_claim_is_401(missing: str) -> None:
    error = rejected(signed({k: v for k, v in claims().items() if k != missing}))
    assert missing in error.message


@pytest.mark.parametrize(
    "bad",
    [
        {"role": "superuser"},
        {"sub": "has space"},
        {"sub": "../etc"},
        {"sub": ""},
        {"role": "manager"},  # a manager without a team
        {"role": "manager", "team": "bad team"},
        {"exp": "tomorrow"},
    ],
)
def test_a_token_with_invalid_claims_is_401(bad: dict) -> None:
    rejected(signed(claims(**bad)))


def test_a_token_not_yet_valid_is_401() -> None:
    rejected(signed(claims(nbf=NOW + 600)))


def test_leeway_tolerates_a_little_clock_skew() -> None:
    token = signed(claims(exp=int(time.time()) - 2))  # now, not at import: suites run long
    assert verify(token, SECRET, leeway_seconds=30).sub == "agent-1"


def test_mint_makes_tokens_verify_accepts() -> None:
    token = mint(SECRET, sub="mia", role="manager", team="t1", ttl_seconds=60)
    assert verify(token, SECRET) == Caller("mia", "manager", "t1")
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    with pytest.raises(ValueError):
        mint(SECRET, sub="mia", role="manager")
    with pytest.raises(ValueError):
        mint(SECRET, sub="x", role="root")
    expired = mint(SECRET, sub="a", role="agent", ttl_seconds=10, now=NOW - 100)
    rejected(expired)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        check_secret("short")
    assert check_secret(SECRET) == SECRET


def test_the_cli_reads_the_secret_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    assert token_cli.main(["--role", "admin", "--sub", "alice", "--ttl", "120"]) == 0
    caller = verify(capsys.readouterr().out.strip(), SECRET)
    assert caller == Caller("alice", "admin", None)


def test_the_cli_reads_the_secret_file_of_make_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("JWT_SECRET", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "jwt-secret").write_text(SECRET + "\n")
    assert token_cli.main(["--role", "manager", "--sub", "mia", "--team", "t1"]) == 0
    assert verify(capsys.readouterr().out.strip(), SECRET).team == "t1"


def test_the_cli_refuses_what_would_not_verify(
    monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JWT_SECRET", raising=False)
    with pytest.raises(SystemExit):  # no secret anywhere
        token_cli.main(["--role", "admin", "--sub", "alice"])
    monkeypatch.setenv("JWT_SECRET", SECRET)
    with pytest.raises(SystemExit):  # a manager needs a team
        token_cli.main(["--role", "manager", "--sub", "mia"])
    with pytest.raises(SystemExit):  # unknown role
        token_cli.main(["--role", "root", "--sub", "mia"])
    assert token_cli.main(["--role", "agent", "--sub", "bad id"]) == 2
    assert "cannot mint" in capsys.readouterr().err


def test_scripts_mint_from_the_local_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    token = token_cli.mint_from_environment(role="admin", sub="demo-seeder")
    assert verify(token, SECRET) == Caller("demo-seeder", "admin", None)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_token_verified_once_is_answered_from_memory_until_it_expires(monkeypatch) -> None:
    now = int(time.time())  # now, not at import: suites run long
    clock = Clock(now)
    tokens = VerifiedTokens(SECRET, clock=clock)
    token = signed(claims(exp=now + 600))
    decoded = []
    decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decoded.append(1) or decode(*a, **k))
    assert tokens.caller(token) == Caller("agent-1", "agent", None)
    clock.now = now + 600
    assert tokens.caller(token).sub == "agent-1"
    assert len(decoded) == 1  # the signature was checked once

    clock.now = now + 601  # past its expiry: checked in full again (and refused when expired)
    tokens.caller(token)
    assert len(decoded) == 2
    expired = signed(claims(exp=now - 100))
    with pytest.raises(Unauthorized) as raised:
        VerifiedTokens(SECRET).caller(expired)
    assert raised.value.code == "token_expired"


def test_only_the_exact_token_verified_is_remembered() -> None:
    tokens = VerifiedTokens(SECRET, max_entries=2)
    good = signed(claims())
    tokens.caller(good)
    head, payload, signature = good.split(".")
    forged = f"{head}.{b64(claims(role='admin'))}.{signature}"
    with pytest.raises(Unauthorized):
        tokens.caller(forged)
    with pytest.raises(Unauthorized):
        tokens.caller(signed(claims(), secret="another-secret-that-is-long-enough-for-hs256!!"))
    for n in range(3):  # bounded: the least recently used go first
        tokens.caller(signed(claims(sub=f"agent-{n}")))
    assert len(tokens._known) == 2
