"""Shared value types: ids, tiers, competency dimensions, module kinds, the agent snapshot."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, StringConstraints

from contracts.envelope import EventPayload

#: Ids travel in URLs, Kafka keys and Mongo keys: a conservative character set.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$"
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]

Tier = Literal["foundation", "advanced", "leadership"]
#: Career tiers in order, lowest first.
TIERS: tuple[Tier, ...] = get_args(Tier)

Dimension = Literal["communication", "technology", "problem_solving"]
DIMENSIONS: tuple[Dimension, ...] = get_args(Dimension)

ModuleKind = Literal["lesson", "quiz", "roleplay", "practice"]
#: Modules completed by a scored attempt rather than a plain "complete" call.
ASSESSED_KINDS: frozenset[str] = frozenset({"quiz", "roleplay"})

Score = Annotated[int, Field(ge=0, le=100)]
CreditHours = Annotated[float, Field(ge=0.5, le=40.0, multiple_of=0.5)]
Tag = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
]


def next_tier(tier: Tier) -> Tier | None:
    """The tier above `tier`, or None at the top."""
    index = TIERS.index(tier)
    return TIERS[index + 1] if index + 1 < len(TIERS) else None


class AgentSnapshot(EventPayload):
    """Who the agent was when the event happened: later team or tier changes don't rewrite it."""

    agent_id: Id
    team_id: Id
    tier: Tier
