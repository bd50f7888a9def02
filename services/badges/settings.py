"""The `BADGES:` section of the configuration."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.runtime.settings import settings_from_config


class BadgesSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    time_zone: str = Field("Asia/Shanghai", description="Local days for streaks")
    definitions_path: str | None = Field(
        None, description="Badge definitions (YAML); default: definitions.yml beside the code"
    )
    public_base_url: str = Field(
        "http://127.0.0.1:8080",
        description="Where the API is reached from outside (the gateway): ids in credentials",
    )
    issuer_name: str = Field("Skillquest", min_length=1)
    issuer_url: str | None = None
    issuer_email: str | None = None
    signing_key_pem: str | None = Field(
        None, description="Ed25519 private key (PKCS#8 PEM) that signs credentials"
    )
    signing_key_path: str | None = Field(None, description="A file holding that PEM instead")

    @model_validator(mode="after")
    def _one_key_source(self) -> BadgesSettings:
        if self.signing_key_pem and self.signing_key_path:
            raise ValueError("give signing_key_pem or signing_key_path, not both")
        return self

    @property
    def base_url(self) -> str:
        return self.public_base_url.rstrip("/")


def badges_settings(config: dict[str, Any]) -> BadgesSettings:
    """The section as `ServiceSettings` builds it, for extensions set up before it is."""
    values = {k: v for k, v in (config.get("BADGES") or {}).items() if v is not None}
    values.setdefault("time_zone", settings_from_config(config).time_zone)
    try:
        return BadgesSettings.model_validate(values)
    except ValidationError as error:
        raise SystemExit(f"invalid BADGES configuration: {error}") from None
