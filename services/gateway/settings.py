"""The gateway's settings: `JWT_SECRET` and `SERVICE_URLS` from the top of the config, the
rest from its `GATEWAY:` section (defaults below)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.gateway.auth import check_secret

SERVICES = ("progress", "points", "leaderboards", "credits", "badges")


class GatewaySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    jwt_secret: str = Field(repr=False)
    service_urls: dict[str, str]
    connect_timeout_seconds: float = Field(1.0, gt=0, le=30)
    read_timeout_seconds: float = Field(5.0, gt=0, le=120)
    #: Bodies above this many bytes are refused with 413 before they are read.
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: How long a roster lookup (agent -> team, for managers' calls) is reused.
    team_cache_seconds: float = Field(30.0, ge=0, le=3600)
    #: Clock skew tolerated on `exp` (and `iat`, `nbf`).
    token_leeway_seconds: float = Field(0.0, ge=0, le=300)
    #: /readyz asks each service's /healthz with this timeout.
    readiness_timeout_seconds: float = Field(1.0, gt=0, le=30)
    #: History entries the profile shows.
    profile_history_limit: int = Field(10, ge=1, le=100)
    http_pool_size: int = Field(50, ge=1, le=1000)

    @field_validator("jwt_secret")
    @classmethod
    def _strong_secret(cls, value: str) -> str:
        return check_secret(value.strip())

    @field_validator("service_urls")
    @classmethod
    def _every_service(cls, value: dict[str, str]) -> dict[str, str]:
        missing = [name for name in SERVICES if not value.get(name)]
        if missing:
            raise ValueError(f"SERVICE_URLS lacks {', '.join(missing)}")
        for name, url in value.items():
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"SERVICE_URLS.{name} must be an http(s) URL, got {url!r}")
        return value


def gateway_settings(config: dict[str, Any]) -> GatewaySettings:
    """Validated settings, or a start failure that names the setting."""
    values = {k: v for k, v in (config.get("GATEWAY") or {}).items() if v is not None}
    values["jwt_secret"] = str(config.get("JWT_SECRET") or "")
    values["service_urls"] = dict(config.get("SERVICE_URLS") or {})
    try:
        return GatewaySettings.model_validate(values)
    except ValidationError as error:
        raise SystemExit(f"invalid gateway configuration: {error}") from None
