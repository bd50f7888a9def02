"""Tier readiness on plain data: the requirement table, what is missing, when a requirement
was first met, and which courses to recommend.

Requirements are configuration (requirements.yml next to this file by default): for each
tier above the lowest, the valid credits needed in total, per dimension and from lots with
a tag (ARCHITECTURE §4).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contracts.vocabulary import DIMENSIONS, TIERS, Dimension, Tag, Tier, next_tier
from services.credits.bank import Balance, Lot, balance
from services.credits.roster import TierWindow

DEFAULT_REQUIREMENTS_FILE = Path(__file__).with_name("requirements.yml")

Hours = float


class _RequirementSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    total: float = Field(ge=0)
    per_dimension: float | dict[Dimension, float] = Field(
        0.0, description="One value for every dimension, or a value per dimension"
    )
    tags: dict[Tag, float] = Field(default_factory=dict)

    @field_validator("per_dimension")
    @classmethod
    def _non_negative(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        values = value.values() if isinstance(value, dict) else [value]
        if any(v < 0 for v in values):
            raise ValueError("hours must be >= 0")
        return value

    @field_validator("tags")
    @classmethod
    def _non_negative_tags(cls, value: dict[str, float]) -> dict[str, float]:
        if any(v < 0 for v in value.values()):
            raise ValueError("hours must be >= 0")
        return value


@dataclass(frozen=True)
class Requirement:
    tier: Tier  # the tier it makes an agent ready for
    from_tier: Tier
    total: Hours
    by_dimension: Mapping[str, Hours]
    by_tag: Mapping[str, Hours]


@dataclass(frozen=True)
class Missing:
    total: Hours
    by_dimension: Mapping[str, Hours]
    by_tag: Mapping[str, Hours]

    @property
    def met(self) -> bool:
        return (
            self.total <= 0
            and all(v <= 0 for v in self.by_dimension.values())
            and all(v <= 0 for v in self.by_tag.values())
        )


class RequirementTable:
    """Target tier -> requirement, for every tier above the lowest."""

    def __init__(self, requirements: Iterable[Requirement]) -> None:
        self._by_target = {r.tier: r for r in requirements}
        expected = set(TIERS[1:])
        if set(self._by_target) != expected:
            raise ValueError(
                f"requirements must name exactly the tiers {sorted(expected)}, "
                f"got {sorted(self._by_target)}"
            )

    def next_for(self, tier: Tier) -> Requirement | None:
        """The requirement to move up from `tier`; None at the top tier."""
        target = next_tier(tier)
        return self._by_target[target] if target is not None else None

    def all(self) -> list[Requirement]:
        return [self._by_target[t] for t in TIERS[1:]]

    def tags(self) -> set[str]:
        return {tag for r in self._by_target.values() for tag in r.by_tag}

    @classmethod
    def from_mapping(cls, raw: Any) -> RequirementTable:
        if not isinstance(raw, dict):
            raise ValueError("expected a mapping of target tier -> requirement")
        requirements = []
        for tier, spec_raw in raw.items():
            if tier not in TIERS or tier == TIERS[0]:
                raise ValueError(f"unknown target tier {tier!r}; use one of {list(TIERS[1:])}")
            try:
                spec = _RequirementSpec.model_validate(spec_raw)
            except ValidationError as error:
                raise ValueError(f"requirement for {tier}: {error}") from None
            by_dimension: dict[str, float]
            if isinstance(spec.per_dimension, dict):
                by_dimension = {d: float(spec.per_dimension.get(d, 0.0)) for d in DIMENSIONS}
            else:
                by_dimension = dict.fromkeys(DIMENSIONS, float(spec.per_dimension))
            requirements.append(
                Requirement(
                    tier=tier,
                    from_tier=TIERS[TIERS.index(tier) - 1],
                    total=float(spec.total),
                    by_dimension=by_dimension,
                    by_tag={tag: float(hours) for tag, hours in spec.tags.items()},
                )
            )
        return cls(requirements)

    @classmethod
    def load(cls, path: Path) -> RequirementTable:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ValueError(f"cannot read tier requirements {path}: {error}") from None
        except yaml.YAMLError as error:
            raise ValueError(f"tier requirements {path} are not valid YAML: {error}") from None
        try:
            return cls.from_mapping(raw)
        except ValueError as error:
            raise ValueError(f"tier requirements {path}: {error}") from None


def missing(held: Balance, requirement: Requirement) -> Missing:
    return Missing(
        total=max(requirement.total - held.total, 0.0),
        by_dimension={
            d: max(requirement.by_dimension.get(d, 0.0) - held.by_dimension.get(d, 0.0), 0.0)
            for d in DIMENSIONS
        },
        by_tag={
            tag: max(hours - held.by_tag.get(tag, 0.0), 0.0)
            for tag, hours in requirement.by_tag.items()
        },
    )


def first_met(
    lots: Sequence[Lot],
    requirement: Requirement,
    not_before: datetime | None,
    before: datetime | None = None,
) -> tuple[datetime, Balance] | None:
    """The earliest instant in [`not_before`, `before`) at which valid credits met
    `requirement`, with the balance then; None if they never did.

    Valid credits only grow when a lot is deposited (expiry and revocation only take away),
    so the candidates are the deposit instants plus `not_before` (the agent's tier started
    then). The answer depends on the set of lots, not on the order they arrived in.
    """
    candidates = {lot.deposited_at for lot in lots}
    if not_before is not None:
        candidates = {t for t in candidates if t >= not_before} | {not_before}
    if before is not None:
        candidates = {t for t in candidates if t < before}
    for instant in sorted(candidates):
        held = balance(lots, instant)
        if missing(held, requirement).met:
            return instant, held
    return None


@dataclass(frozen=True)
class Met:
    requirement: Requirement
    at: datetime
    held: Balance


def requirements_met(
    lots: Sequence[Lot], windows: Sequence[TierWindow], table: RequirementTable
) -> list[Met]:
    """For each span the agent held a tier, whether and when valid credits first met the
    next tier's requirement during it (the earliest span wins for a target tier).

    Looking at every span, not just the current tier, keeps the outcome independent of the
    order events arrive in: a promotion processed before the completions that preceded it
    still finds the requirement they met back then.
    """
    found: dict[str, Met] = {}
    for window in windows:
        requirement = table.next_for(window.tier)  # type: ignore[arg-type]
        if requirement is None or requirement.tier in found:
            continue
        met = first_met(lots, requirement, window.start, window.end)
        if met is not None:
            found[requirement.tier] = Met(requirement, met[0], met[1])
    return sorted(found.values(), key=lambda m: (m.at, TIERS.index(m.requirement.tier)))


@dataclass(frozen=True)
class Course:
    course_id: str
    title: str
    tier: Tier
    dimension: str
    credit_hours: float
    tags: tuple[str, ...]
    published: bool = True


@dataclass(frozen=True)
class Recommendation:
    course: Course
    gap_hours: Hours


def course_gap(course: Course, gaps: Missing | None) -> Hours:
    """The largest gap `course` works on: its dimension's, or a tag's it carries."""
    if gaps is None:
        return 0.0
    candidates = [gaps.by_dimension.get(course.dimension, 0.0)]
    candidates += [gaps.by_tag[tag] for tag in course.tags if tag in gaps.by_tag]
    return max(candidates)


def recommend(
    courses: Iterable[Course],
    completed: set[str],
    tier: Tier,
    gaps: Missing | None,
    limit: int,
) -> list[Recommendation]:
    """Up to `limit` published courses of `tier` or the next, not completed, that close
    the largest gap first; ties by more credit hours, then course id."""
    tiers = {tier, next_tier(tier)}
    eligible = [
        Recommendation(course, course_gap(course, gaps))
        for course in courses
        if course.published and course.tier in tiers and course.course_id not in completed
    ]
    eligible.sort(key=lambda r: (-r.gap_hours, -r.course.credit_hours, r.course.course_id))
    return eligible[:limit]
