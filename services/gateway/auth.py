"""Bearer tokens: HS256 JWTs with `sub`, `role` (agent | manager | admin | service), `exp`,
and `team` for managers. Only HS256 is accepted, so `alg: none` and algorithm-confusion
tokens fail like any wrongly signed one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from cachetools import LRUCache
from pydantic import ValidationError

from contracts.api.gateway import TokenClaims
from services.runtime.errors import Unauthorized

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["sub", "role", "exp"]
#: HS256 keys shorter than the hash output are brute-forceable (RFC 7518 §3.2).
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class Caller:
    sub: str
    role: str
    team: str | None = None

    @property
    def is_writer(self) -> bool:
        """Admins and services write roster, catalogue, backfill and adjustments."""
        return self.role in ("admin", "service")


def check_secret(secret: str) -> str:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes "
            "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return secret


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or a 401 saying what to send."""
    if not authorization:
        raise Unauthorized("send `Authorization: Bearer <token>`", code="missing_token")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "the Authorization header must be `Bearer <token>`", code="invalid_token"
        )
    return token.strip()


def verify(token: str, secret: str, leeway_seconds: float = 0) -> Caller:
    """The caller a token names, or a 401: malformed, wrongly signed, expired, wrong
    algorithm, missing claims, unknown role or a manager without a team."""
    return _verified(token, secret, leeway_seconds)[0]


def _verified(token: str, secret: str, leeway_seconds: float) -> tuple[Caller, float]:
    """`verify`'s caller, and the token's `exp` (Unix time)."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": REQUIRED_CLAIMS},
            leeway=leeway_seconds,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired; get a new one", code="token_expired") from None
    except jwt.MissingRequiredClaimError as error:
        raise Unauthorized(
            f"the token lacks the `{error.claim}` claim", code="invalid_token"
        ) from None
    except jwt.InvalidAlgorithmError:
        raise Unauthorized(f"only {ALGORITHM} tokens are accepted", code="invalid_token") from None
    except jwt.InvalidSignatureError:
        raise Unauthorized("the token signature is not valid", code="invalid_token") from None
    except jwt.InvalidTokenError as error:
        raise Unauthorized(f"the token is not valid: {error}", code="invalid_token") from None
    try:
        parsed = TokenClaims.model_validate(claims)
    except ValidationError as error:
        fields = ", ".join(str(item["loc"][0]) for item in error.errors() if item["loc"])
        raise Unauthorized(
            f"the token has invalid claims: {fields}", code="invalid_token"
        ) from None
    if parsed.role == "manager" and not parsed.team:
        raise Unauthorized("a manager's token must carry its `team`", code="invalid_token")
    return Caller(sub=parsed.sub, role=parsed.role, team=parsed.team), float(claims["exp"])


class VerifiedTokens:
    """Tokens verified before, with their callers, until they expire.

    Why: verifying a token (signature, claims, their model) took about 200 µs of the
    gateway's CPU per request, and a portal sends the same agent's token with every request
    of a session. Keyed by the whole token, signature included, so only the exact string
    verified before is answered from here; its expiry is checked on every use (a token
    verified once cannot become valid later in any other way: one not valid yet, `nbf`, was
    never kept). Bounded: the least recently used go first.
    """

    def __init__(
        self,
        secret: str,
        leeway_seconds: float = 0,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = secret
        self.leeway = leeway_seconds
        self.clock = clock
        self._known: LRUCache[str, tuple[Caller, float]] = LRUCache(maxsize=max_entries)

    def caller(self, token: str) -> Caller:
        """As `verify`."""
        known = self._known.get(token)
        if known is not None and self.clock() <= known[1] + self.leeway:
            return known[0]
        caller, expires = _verified(token, self.secret, self.leeway)  # raises when expired
        self._known[token] = (caller, expires)
        return caller


def mint(
    secret: str,
    *,
    sub: str,
    role: str,
    team: str | None = None,
    ttl_seconds: int = 3600,
    now: float | None = None,
) -> str:
    """A signed token for `sub` in `role`; validated as `verify` would check it."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {
        "sub": sub,
        "role": role,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    if team is not None:
        claims["team"] = team
    TokenClaims.model_validate(claims)
    if role == "manager" and team is None:
        raise ValueError("a manager's token needs a team")
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
