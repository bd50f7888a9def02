"""What the settled views must hold, computed in-process from the same stream by the
services' own pure rule functions: the points rules (propose, capped, cap_day) for balances,
and the leaderboards `fold`/`ranked` for every board.

Badge bonuses are points too: they come from the badges the badges service awarded, read
back from `gamification.badges` (the points rules turn each into its badge-bonus award).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from contracts.envelope import CloudEvent
from contracts.events import (
    AssessmentGraded,
    BadgeAwarded,
    CourseCompleted,
    ModuleCompleted,
    TicketResolved,
)
from services.leaderboards.boards import PointChange, Standing, fold, ranked
from services.points.rules import (
    DEFAULT_RULES_FILE,
    Rule,
    cap_day,
    capped,
    load_rule_table,
    propose,
    rule_for,
)

AWARDING = (ModuleCompleted, AssessmentGraded, CourseCompleted, TicketResolved, BadgeAwarded)


@dataclass(frozen=True)
class Expected:
    balances: dict[str, int]  # agents that received at least one award
    entries: dict[tuple[str, str], Standing]  # (board key, agent id) -> standing

    def board(self, key: str) -> list[tuple[int, str, Standing]]:
        return ranked({agent: s for (board, agent), s in self.entries.items() if board == key})

    def boards(self) -> dict[str, list[tuple[int, str, Standing]]]:
        by_board: dict[str, dict[str, Standing]] = defaultdict(dict)
        for (board, agent), standing in self.entries.items():
            by_board[board][agent] = standing
        return {board: ranked(entries) for board, entries in by_board.items()}


def expected_views(events: Iterable[CloudEvent], tz: str) -> Expected:
    """`events` in the order one agent's events reach the points service (per agent and
    topic it is the publish order; only the ticket cap depends on order, within one topic)."""
    table = load_rule_table(DEFAULT_RULES_FILE)
    rules = {rule_id: Rule(rule_id, 1, definition) for rule_id, definition in table.items()}
    used: dict[tuple[str, str, str], int] = defaultdict(int)
    balances: dict[str, int] = defaultdict(int)
    changes: list[PointChange] = []
    for event in events:
        if not isinstance(event, AWARDING):
            continue
        proposal = propose(event, rules[rule_for(event)])
        if proposal is None:
            continue
        agent = event.data.agent
        points = proposal.points
        cap = rules[proposal.rule_id].definition.daily_cap
        if cap is not None:
            day = (agent.agent_id, proposal.rule_id, cap_day(event.time, tz).isoformat())
            points = capped(points, used[day], cap)
            used[day] += points
            if points == 0:
                continue
        balances[agent.agent_id] += points
        changes.append(
            PointChange(
                event_id=f"{event.id}|{proposal.rule_id}",
                agent_id=agent.agent_id,
                delta=points,
                occurred_at=event.time,
                team_id=agent.team_id,
                tier=agent.tier,
            )
        )
    return Expected(dict(balances), fold(changes, tz))
