"""The credits service's settings (the CREDITS section of deploy/config.yml) and the
policy the handlers apply: validity periods and the tier requirement table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from nameko.timer import Timer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.credits.readiness import DEFAULT_REQUIREMENTS_FILE, RequirementTable
from services.runtime.settings import ServiceSettings

SECTION = "CREDITS"


class CreditsSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    requirements_file: str = Field(
        str(DEFAULT_REQUIREMENTS_FILE),
        description="YAML tier requirements; a relative path is taken from the working dir",
    )
    course_valid_days: int = Field(365, ge=1, description="Validity of a completed course's lot")
    grant_valid_days: int = Field(365, ge=1, description="Validity of a grant that names none")
    expiring_soon_days: int = Field(30, ge=1, description="Window of `expiring_soon`")
    max_recommendations: int = Field(5, ge=0, le=50)
    expiry_scan_interval_seconds: float = Field(30.0, gt=0)
    expiry_scan_batch_size: int = Field(500, ge=1)


@dataclass(frozen=True)
class Policy:
    settings: CreditsSettings
    requirements: RequirementTable

    @property
    def expiring_window(self) -> timedelta:
        return timedelta(days=self.settings.expiring_soon_days)


class CreditsPolicy(ServiceSettings[CreditsSettings]):
    """The settings plus the requirement table, loaded and checked once at start: a broken
    table stops the service with a message rather than failing every event."""

    def __init__(self) -> None:
        super().__init__(CreditsSettings, SECTION)

    def setup(self) -> None:
        super().setup()
        try:
            table = RequirementTable.load(Path(self.value.requirements_file))
        except ValueError as error:
            raise SystemExit(f"invalid {SECTION} configuration: {error}") from None
        self.policy = Policy(settings=self.value, requirements=table)

    def get_dependency(self, worker_ctx: Any) -> Policy:  # type: ignore[override]
        return self.policy


class ExpiryTimer(Timer):
    """A nameko timer whose interval is `expiry_scan_interval_seconds` from the config."""

    def __init__(self, **kwargs: Any) -> None:
        # Eager: lots that expired while no instance ran are expired on start.
        kwargs.setdefault("eager", True)
        super().__init__(interval=CreditsSettings().expiry_scan_interval_seconds, **kwargs)

    def setup(self) -> None:
        section = {
            k: v for k, v in (self.container.config.get(SECTION) or {}).items() if v is not None
        }
        try:
            self.interval = CreditsSettings.model_validate(section).expiry_scan_interval_seconds
        except ValidationError as error:
            raise SystemExit(f"invalid {SECTION} configuration: {error}") from None


expiry_timer = ExpiryTimer.decorator
