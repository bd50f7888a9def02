"""The points rules (ARCHITECTURE §4 "Points") as plain functions on plain data.

The values live in a rule table (`rules.yml`, then the database, versioned); this module
says what each rule means, checks a table, and turns one event into at most one award.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from contracts.api.points import RULE_IDS, RuleDefinition
from contracts.events import (
    AssessmentGraded,
    BadgeAwarded,
    CourseCompleted,
    ModuleCompleted,
    TicketResolved,
)
from contracts.vocabulary import Tier
from services.common.periods import local_date

AwardingEvent = ModuleCompleted | AssessmentGraded | CourseCompleted | TicketResolved | BadgeAwarded

DEFAULT_RULES_FILE = Path(__file__).with_name("rules.yml")


@dataclass(frozen=True)
class RuleShape:
    """What a rule id means: what it reacts to, and which fields of a definition it uses."""

    rule_id: str
    description: str
    on: tuple[str, ...]
    points_from_event: bool = False  # badge-bonus: the badge says how many
    bonuses: frozenset[str] = frozenset()
    uses_min_qa_score: bool = False


SHAPES: dict[str, RuleShape] = {
    shape.rule_id: shape
    for shape in (
        RuleShape(
            "module-completed",
            "A module of any kind completed",
            (ModuleCompleted.TYPE,),
        ),
        RuleShape(
            "assessment-passed",
            "An assessment (quiz, roleplay) graded and passed; bonuses for a perfect score "
            "and for passing at the first attempt",
            (AssessmentGraded.TYPE,),
            bonuses=frozenset({"perfect_score", "first_attempt"}),
        ),
        RuleShape(
            "course-completed",
            "A course completed; multiplied by the course tier's factor",
            (CourseCompleted.TYPE,),
        ),
        RuleShape(
            "ticket-quality",
            "A ticket resolved with a QA score of at least min_qa_score",
            (TicketResolved.TYPE,),
            uses_min_qa_score=True,
        ),
        RuleShape(
            "badge-bonus",
            "A badge awarded: the badge's bonus points",
            (BadgeAwarded.TYPE,),
            points_from_event=True,
        ),
    )
}
assert tuple(SHAPES) == RULE_IDS


class RuleTableError(ValueError):
    """A rule table (file or update) that cannot be used; the message says why."""


def problems_with(rule_id: str, definition: RuleDefinition) -> list[dict[str, str]]:
    """Field-level problems of `definition` for `rule_id` (empty: usable)."""
    shape = SHAPES.get(rule_id)
    if shape is None:
        return [{"field": "rule_id", "message": f"unknown rule; known: {', '.join(RULE_IDS)}"}]
    problems = []
    if shape.points_from_event and definition.points is not None:
        problems.append(
            {"field": "points", "message": f"{rule_id} awards the event's points: leave it out"}
        )
    if not shape.points_from_event and definition.points is None:
        problems.append({"field": "points", "message": f"{rule_id} needs points"})
    for name in sorted(set(definition.bonuses) - shape.bonuses):
        allowed = ", ".join(sorted(shape.bonuses)) or "none"
        problems.append(
            {"field": f"bonuses.{name}", "message": f"{rule_id} has no such bonus ({allowed})"}
        )
    if shape.uses_min_qa_score and definition.min_qa_score is None:
        problems.append({"field": "min_qa_score", "message": f"{rule_id} needs min_qa_score"})
    if not shape.uses_min_qa_score and definition.min_qa_score is not None:
        problems.append(
            {"field": "min_qa_score", "message": f"{rule_id} has no QA threshold: leave it out"}
        )
    return problems


def parse_rule_table(raw: Any) -> dict[str, RuleDefinition]:
    """A rule table's text (YAML/JSON already parsed) as definitions, every rule present."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("rules"), Mapping):
        raise RuleTableError("the rule table must have a `rules:` mapping of rule id to values")
    rules = raw["rules"]
    missing = [rule_id for rule_id in RULE_IDS if rule_id not in rules]
    unknown = [str(rule_id) for rule_id in rules if rule_id not in SHAPES]
    if missing or unknown:
        raise RuleTableError(f"rule table: missing rules {missing}, unknown rules {unknown}")
    table = {}
    for rule_id in RULE_IDS:
        try:
            definition = RuleDefinition.model_validate(rules[rule_id] or {})
        except ValidationError as error:
            raise RuleTableError(f"rule {rule_id}: {error}") from None
        problems = problems_with(rule_id, definition)
        if problems:
            details = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            raise RuleTableError(f"rule {rule_id}: {details}")
        table[rule_id] = definition
    return table


def load_rule_table(path: Path) -> dict[str, RuleDefinition]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise RuleTableError(f"cannot read the rule table {path}: {error}") from None
    return parse_rule_table(raw)


# --- applying a rule ----------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One version of a rule, as stored."""

    rule_id: str
    version: int
    definition: RuleDefinition


@dataclass(frozen=True)
class Proposal:
    """What a rule would award for an event, before the daily cap."""

    rule_id: str
    rule_version: int
    points: int
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def rule_for(event: AwardingEvent) -> str:
    """The rule id that reacts to `event`'s type."""
    for shape in SHAPES.values():
        if event.type in shape.on:
            return shape.rule_id
    raise KeyError(f"no points rule for {event.type}")


def multiply(points: int, multiplier: Decimal) -> int:
    """`points` x `multiplier`, rounded half up (50 x 1.5 = 75; 5 x 1.5 = 7.5 -> 8)."""
    return int((Decimal(points) * multiplier).to_integral_value(rounding=ROUND_HALF_UP))


def multiplier_for(definition: RuleDefinition, tier: Tier) -> Decimal:
    # Through str: 1.1 becomes Decimal("1.1"), not the binary float's long expansion.
    return Decimal(str(definition.tier_multipliers.get(tier, 1)))


def propose(event: AwardingEvent, rule: Rule) -> Proposal | None:
    """What `rule` awards for `event`, before any cap; None when it awards nothing."""
    definition = rule.definition
    if not definition.enabled:
        return None
    base, bonuses, tier, reason = _base(event, definition)
    if base is None:
        return None
    total = base + sum(bonuses.values())
    multiplier = multiplier_for(definition, tier)
    points = multiply(total, multiplier)
    if points <= 0:
        return None
    details: dict[str, Any] = {"base": base}
    if bonuses:
        details["bonuses"] = bonuses
    if multiplier != 1:
        details["multiplier"] = str(multiplier)
        details["multiplier_tier"] = tier
    return Proposal(rule.rule_id, rule.version, points, reason, details)


def _base(
    event: AwardingEvent, definition: RuleDefinition
) -> tuple[int | None, dict[str, int], Tier, str]:
    """(base points or None when the rule does not apply, bonuses, tier, reason)."""
    points = definition.points or 0
    data = event.data
    tier = data.agent.tier
    if isinstance(event, ModuleCompleted):
        d = event.data
        return points, {}, tier, f"module {d.module_id} of course {d.course_id} completed"
    if isinstance(event, AssessmentGraded):
        a = event.data
        if not a.passed:
            return None, {}, tier, ""
        bonuses = {}
        if a.score == 100 and "perfect_score" in definition.bonuses:
            bonuses["perfect_score"] = definition.bonuses["perfect_score"]
        if a.attempt == 1 and "first_attempt" in definition.bonuses:
            bonuses["first_attempt"] = definition.bonuses["first_attempt"]
        reason = (
            f"{a.module_kind} {a.module_id} of course {a.course_id} passed with {a.score} "
            f"(attempt {a.attempt})"
        )
        return points, {k: v for k, v in bonuses.items() if v}, tier, reason
    if isinstance(event, CourseCompleted):
        c = event.data
        return points, {}, c.course_tier, f"course {c.course_id} ({c.course_tier}) completed"
    if isinstance(event, TicketResolved):
        t = event.data
        threshold = definition.min_qa_score if definition.min_qa_score is not None else 0
        if t.qa_score < threshold:
            return None, {}, tier, ""
        return points, {}, tier, f"ticket {t.ticket_id} resolved with QA score {t.qa_score}"
    b = event.data
    level = f" ({b.level})" if b.level else ""
    return b.bonus_points, {}, tier, f"badge {b.badge_id}{level} awarded"


def capped(points: int, used: int, cap: int | None) -> int:
    """What is left to award under a cap: 48 used of 50 and 5 proposed gives 2."""
    if cap is None:
        return points
    return max(0, min(points, cap - used))


def cap_day(moment: datetime, time_zone: str) -> date:
    """The local day a capped award counts against (event time, not wall time)."""
    return local_date(moment, time_zone)


def is_newer_snapshot(current_at: datetime | None, at: datetime) -> bool:
    """Whether an event at `at` carries the agent's latest team and tier: a late, older
    event does not overwrite a newer one; at the same time the one handled later wins."""
    return current_at is None or current_at <= at


def balance_after(balance: int, delta: int) -> int | None:
    """The balance after a change, or None when it would go below zero (refused)."""
    after = balance + delta
    return after if after >= 0 else None
