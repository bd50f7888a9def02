"""The progress service's settings: the `PROGRESS:` section of deploy/config.yml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ProgressSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    clock_skew_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description="How far in the future an occurred_at may be and still count as now "
        "(clocks of callers differ a little); beyond it the call is a 400",
    )
