"""Events the tests publish, built as their producers build them."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts.events import TicketResolved, TicketResolvedData
from contracts.vocabulary import AgentSnapshot


def ticket(agent_id: str, ticket_id: str, qa_score: int = 95, csat: int = 4) -> TicketResolved:
    """A ticket resolved now by `agent_id` of team-1, a foundation agent."""
    return TicketResolved.create(
        source="skillquest/test",
        subject=agent_id,
        time=datetime.now(UTC),
        data=TicketResolvedData(
            agent=AgentSnapshot(agent_id=agent_id, team_id="team-1", tier="foundation"),
            ticket_id=ticket_id,
            qa_score=qa_score,
            csat=csat,
        ),
    )
