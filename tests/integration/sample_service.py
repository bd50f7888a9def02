"""A minimal service on the runtime, used to test the runtime itself (not a product service).

It counts resolved tickets per agent: consumed with `@consume`, applied once per event id,
and published through the outbox by an HTTP call.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import eventlet
from nameko.dependency_providers import Config
from pydantic import BaseModel

from contracts.events import TicketResolved, TicketResolvedData
from contracts.topics import WORK_TICKETS
from contracts.vocabulary import AgentSnapshot
from services.runtime.batches import EventBatch, each
from services.runtime.http import http, parse_body
from services.runtime.kafka import consume
from services.runtime.mongo import Mongo, UnitOfWork
from services.runtime.operations import OperationalEndpoints


class TicketIn(BaseModel):
    agent_id: str
    ticket_id: str
    qa_score: int


def count_ticket(event: TicketResolved, uow: UnitOfWork) -> int:
    if event.data.ticket_id.startswith("fail"):
        raise RuntimeError(f"cannot handle {event.data.ticket_id}")
    # "flaky" tickets fail while the test has switched the failure on (a broken dependency).
    if event.data.ticket_id.startswith("flaky") and uow.collection("switches").find_one(
        {"_id": "failing"}, session=uow.session
    ):
        raise RuntimeError(f"dependency down for {event.data.ticket_id}")
    doc = uow.collection("counts").find_one_and_update(
        {"_id": event.data.agent.agent_id},
        {"$inc": {"tickets": 1}, "$push": {"ticket_ids": event.data.ticket_id}},
        upsert=True,
        return_document=True,
        session=uow.session,
    )
    return int(doc["tickets"])


#: The lane of every batch `on_ticket` got, in order (tests clear it).
LANES: list[int] = []


class SampleService(OperationalEndpoints):
    name = "sample"
    db = Mongo()
    config = Config()

    @consume(WORK_TICKETS, types=[TicketResolved.TYPE])
    def on_ticket(self, batch: EventBatch[TicketResolved]) -> Any:
        LANES.append(batch.lane)
        result = self.db.handle_batch("on_ticket", batch.events, each(count_ticket))
        if self.config.get("HANG_AFTER_HANDLING"):
            eventlet.sleep(3600)  # the test kills us here: handled, offset not committed
        return result

    @http("POST", "/tickets")
    def post_ticket(self, request: Any) -> Any:
        body = parse_body(request, TicketIn)
        event = TicketResolved.create(
            source="skillquest/sample",
            subject=body.agent_id,
            time=datetime.now(UTC),
            data=TicketResolvedData(
                agent=AgentSnapshot(agent_id=body.agent_id, team_id="team-1", tier="foundation"),
                ticket_id=body.ticket_id,
                qa_score=body.qa_score,
                csat=5,
            ),
        )

        def record(uow: UnitOfWork) -> None:
            uow.collection("intake").insert_one({"_id": body.ticket_id}, session=uow.session)
            uow.publish(event)

        self.db.transaction(record)
        return 202, {"event_id": event.id}

    @http("GET", "/counts/<agent_id>")
    def get_count(self, request: Any, agent_id: str) -> Any:
        doc = self.db.collection("counts").find_one({"_id": agent_id}) or {}
        return {
            "agent_id": agent_id,
            "tickets": doc.get("tickets", 0),
            "ticket_ids": doc.get("ticket_ids", []),
        }
