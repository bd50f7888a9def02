"""Dropping retired indexes on start (services/runtime/indexes.py), when instances start
together: a pure unit test over a stand-in collection."""

from __future__ import annotations

import pytest
from pymongo.errors import OperationFailure

from services.runtime.indexes import INDEX_NOT_FOUND, drop_indexes


class RacedCollection:
    """Lists `names` as present, then finds each already dropped by another instance."""

    def __init__(self, names: list[str], code: int) -> None:
        self.names = names
        self.code = code
        self.dropped: list[str] = []

    def index_information(self) -> dict[str, dict]:
        return {"_id_": {}, **{name: {} for name in self.names}}

    def drop_index(self, name: str) -> None:
        self.dropped.append(name)
        raise OperationFailure(f"index not found with name [{name}]", code=self.code)


def test_an_index_another_instance_dropped_meanwhile_is_not_an_error() -> None:
    collection = RacedCollection(["award_key", "agent_seq"], INDEX_NOT_FOUND)
    drop_indexes(collection, ["award_key", "agent_seq", "never_made"])  # type: ignore[arg-type]
    assert collection.dropped == ["award_key", "agent_seq"]


def test_any_other_failure_to_drop_stops_the_start() -> None:
    collection = RacedCollection(["award_key"], code=13)  # unauthorized, say
    with pytest.raises(OperationFailure):
        drop_indexes(collection, ["award_key"])  # type: ignore[arg-type]
