"""A small client for the points service's HTTP API, and the points events it published
(shared by the points integration tests; the events they publish: tests/support/events.py)."""

from __future__ import annotations

import json
from typing import Any

import requests

from contracts.topics import GAMIFICATION_POINTS
from tests.support.harness import EventBus, base_url


class PointsClient:
    def __init__(self, config: dict[str, Any]) -> None:
        self.url = base_url(config)

    def points(self, agent_id: str, **params: Any) -> dict[str, Any]:
        response = requests.get(
            f"{self.url}/v1/agents/{agent_id}/points", params=params, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def balance(self, agent_id: str) -> int:
        return int(self.points(agent_id)["balance"])

    def full_history(self, agent_id: str) -> list[dict[str, Any]]:
        entries, cursor = [], None
        while True:
            params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = self.points(agent_id, **params)
            entries.extend(page["history"])
            cursor = page["next_cursor"]
            if cursor is None:
                return entries

    def post(self, path: str, body: Any, **headers: str) -> requests.Response:
        return requests.post(f"{self.url}{path}", json=body, headers=headers, timeout=10)

    def put(self, path: str, body: Any) -> requests.Response:
        return requests.put(f"{self.url}{path}", json=body, timeout=10)

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=10)


def published_points_events(bus: EventBus, agent_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(Kafka key, event) of every points event about `agent_id`, in publication order."""
    records = bus.read_all(GAMIFICATION_POINTS)
    found = []
    for record in records:
        event = json.loads(record.value)
        if event["subject"] == agent_id:
            found.append((record.key.decode(), event))
    return found
