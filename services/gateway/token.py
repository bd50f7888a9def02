"""Mint a bearer token for local use.

    python -m services.gateway.token --role admin --sub alice [--team t1] [--ttl 3600]

The secret is `JWT_SECRET` from the environment, else the file `.data/jwt-secret` in the
current directory (which `make run` writes). Prints the token.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from contracts.api.gateway import ROLES
from services.gateway.auth import check_secret, mint

SECRET_FILE = Path(".data") / "jwt-secret"


def load_secret() -> str:
    secret = os.environ.get("JWT_SECRET", "").strip()
    if not secret and SECRET_FILE.is_file():
        secret = SECRET_FILE.read_text().strip()
    if not secret:
        raise SystemExit(
            f"no secret: set JWT_SECRET or run from the directory holding {SECRET_FILE} "
            "(`make run` writes it)"
        )
    return secret


def mint_from_environment(
    *, role: str, sub: str, team: str | None = None, ttl_seconds: int = 3600
) -> str:
    """A token signed with the local secret (see `load_secret`), for scripts like the demo."""
    return mint(check_secret(load_secret()), sub=sub, role=role, team=team, ttl_seconds=ttl_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.gateway.token", description="Mint a Skillquest bearer token."
    )
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--sub", required=True, help="the agent id for agents, else a name")
    parser.add_argument("--team", help="the team a manager manages (required for managers)")
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (3600)")
    args = parser.parse_args(argv)
    if args.role == "manager" and not args.team:
        parser.error("--team is required for --role manager")
    if args.ttl <= 0:
        parser.error("--ttl must be positive")
    try:
        secret = check_secret(load_secret())
        token = mint(secret, sub=args.sub, role=args.role, team=args.team, ttl_seconds=args.ttl)
    except (ValueError, ValidationError) as error:
        print(f"cannot mint a token: {error}", file=sys.stderr)
        return 2
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
