"""Badge definitions as data: the models a definitions file is validated into, and the loader.

A definition names one criterion of a small closed set of kinds; the rules in `criteria.py`
interpret them. A new badge of an existing kind is a few lines of YAML and no code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contracts.events import EVENT_TYPES
from contracts.topics import TOPIC_OF_TYPE
from contracts.vocabulary import ID_PATTERN, Tag, Tier

DEFAULT_DEFINITIONS = Path(__file__).with_name("definitions.yml")

#: Paths under /v1/badges/ that are not badge ids.
RESERVED_IDS = frozenset({"issuer"})


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Condition(Strict):
    """A test on one field of an event's data; every given operator must hold."""

    eq: Any = None
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None
    one_of: list[Any] | None = Field(None, alias="in")

    def holds(self, value: Any) -> bool:
        if value is None:
            return False
        checks = (
            (self.eq, lambda: value == self.eq),
            (self.gte, lambda: value >= self.gte),
            (self.gt, lambda: value > self.gt),
            (self.lte, lambda: value <= self.lte),
            (self.lt, lambda: value < self.lt),
            (self.one_of, lambda: value in (self.one_of or ())),
        )
        try:
            return all(check() for bound, check in checks if bound is not None)
        except TypeError:  # e.g. a number compared with a string: not a match
            return False


class EventSelector(Strict):
    """Which events count: the listed types, or every type of a topic (e.g. any progress)."""

    types: list[str] | None = None
    topic: str | None = None
    #: `data` field path (dots for nesting) -> condition.
    where: dict[str, Condition] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> EventSelector:
        if (self.types is None) == (self.topic is None):
            raise ValueError("give exactly one of `types` or `topic`")
        unknown = [t for t in self.types or () if t not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event types {unknown}")
        if self.topic is not None and self.topic not in set(TOPIC_OF_TYPE.values()):
            raise ValueError(f"unknown topic {self.topic!r}")
        return self

    @property
    def event_types(self) -> frozenset[str]:
        if self.types is not None:
            return frozenset(self.types)
        return frozenset(t for t, topic in TOPIC_OF_TYPE.items() if topic == self.topic)

    def matches(self, event_type: str, data: dict[str, Any]) -> bool:
        if event_type not in self.event_types:
            return False
        return all(cond.holds(field_value(data, path)) for path, cond in self.where.items())


def field_value(data: dict[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class EventCount(Strict):
    """The Nth event of a selection (e.g. 50 tickets with qa_score >= 90)."""

    kind: Literal["event_count"]
    events: EventSelector


class ScoreThreshold(Strict):
    """An event whose score field reaches a minimum (levels count such events)."""

    kind: Literal["score_threshold"]
    events: EventSelector
    field: str = "score"
    min_score: float

    def selector(self) -> EventSelector:
        where = dict(self.events.where)
        where[self.field] = Condition(gte=self.min_score)
        return self.events.model_copy(update={"where": where})


class StreakDays(Strict):
    """Activity on consecutive local days (distinct days of any selected event)."""

    kind: Literal["streak_days"]
    events: EventSelector


class TopN(Strict):
    """Among the first N of a leaderboard when its period closes."""

    kind: Literal["top_n"]
    period: Literal["weekly", "monthly"]
    scope: Literal["global"] = "global"
    n: int = Field(ge=1, le=10, description="Period-close events carry the top 10")


class TaggedCoursesCompleted(Strict):
    """Completed every published course with a tag (at least one must exist)."""

    kind: Literal["tagged_courses_completed"]
    tag: Tag


class CreditsRequirementMet(Strict):
    """The credits requirement of a target tier met; one level per target tier."""

    kind: Literal["credits_requirement_met"]


Criterion = Annotated[
    EventCount
    | ScoreThreshold
    | StreakDays
    | TopN
    | TaggedCoursesCompleted
    | CreditsRequirementMet,
    Field(discriminator="kind"),
]
COUNTED_KINDS = ("event_count", "score_threshold", "streak_days")


class Level(Strict):
    level: str | None = Field(None, description="e.g. bronze; null for a badge of one level")
    threshold: int = Field(1, ge=1, description="Events or days needed (counting kinds)")
    target_tier: Tier | None = Field(None, description="credits_requirement_met only")
    bonus_points: int = Field(ge=0)


class BadgeDefinition(Strict):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1)
    criteria_narrative: str = Field(min_length=1, description="How it is earned, for people")
    image: str | None = None
    criterion: Criterion
    levels: list[Level] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> BadgeDefinition:
        if self.id in RESERVED_IDS:
            raise ValueError(f"{self.id!r} is reserved")
        names = [lv.level for lv in self.levels]
        if len(set(names)) != len(names):
            raise ValueError("level names must be unique")
        if len(self.levels) > 1 and None in names:
            raise ValueError("a badge of several levels must name each level")
        kind = self.criterion.kind
        if kind in COUNTED_KINDS:
            thresholds = [lv.threshold for lv in self.levels]
            if thresholds != sorted(set(thresholds)):
                raise ValueError("level thresholds must increase strictly, lowest first")
        if kind == "credits_requirement_met":
            tiers = [lv.target_tier for lv in self.levels]
            if None in tiers or len(set(tiers)) != len(tiers):
                raise ValueError("each level needs its own target_tier")
        elif any(lv.target_tier for lv in self.levels):
            raise ValueError("target_tier is for credits_requirement_met badges only")
        if kind in ("top_n", "tagged_courses_completed") and len(self.levels) != 1:
            raise ValueError(f"a {kind} badge has exactly one level")
        return self

    def level(self, name: str | None) -> Level | None:
        return next((lv for lv in self.levels if lv.level == name), None)

    @property
    def level_names(self) -> list[str | None]:
        return [lv.level for lv in self.levels]


class DefinitionsFile(Strict):
    badges: list[BadgeDefinition] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> DefinitionsFile:
        ids = [badge.id for badge in self.badges]
        if len(set(ids)) != len(ids):
            raise ValueError("badge ids must be unique")
        return self


class DefinitionsError(ValueError):
    """The definitions file is missing or invalid; the message names the file and field."""


def parse_definitions(raw: str, origin: str = "definitions") -> tuple[BadgeDefinition, ...]:
    try:
        document = yaml.safe_load(raw)
        return tuple(DefinitionsFile.model_validate(document).badges)
    except yaml.YAMLError as error:
        raise DefinitionsError(f"{origin}: not valid YAML ({error})") from None
    except ValidationError as error:
        raise DefinitionsError(f"{origin}: {error}") from None


def load_definitions(path: str | Path | None = None) -> tuple[BadgeDefinition, ...]:
    source = Path(path) if path else DEFAULT_DEFINITIONS
    try:
        raw = source.read_text(encoding="utf-8")
    except OSError as error:
        raise DefinitionsError(f"cannot read badge definitions {source}: {error}") from None
    return parse_definitions(raw, str(source))
