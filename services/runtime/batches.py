"""What a consuming method receives: the events of one poll (or of a share of its partitions).

Handling a batch in one database transaction with bulk writes is what makes consumers fast
(the database's per-statement cost dominates; LOCAL-STACK.md): see `ServiceDatabase
.handle_batch`. Kafka itself stays in services/runtime/kafka.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from contracts.envelope import CloudEvent

if TYPE_CHECKING:  # the unit of work lives with the database; only its type is needed here
    from services.runtime.mongo import UnitOfWork

E = TypeVar("E", bound=CloudEvent)
R = TypeVar("R")


@dataclass(frozen=True)
class EventBatch(Generic[E]):
    """1..N events of the types the method accepts, each partition's in offset order.

    `lane` is the lowest partition number of the group of the consumer's partitions the
    batch came from (kafka.batch_lane), among its entrypoint's topics: it stays the same
    from batch to batch while the assignment does. A process handles batches of disjoint
    groups at once, and instances own disjoint partitions (but briefly, while the group
    rebalances; the transaction makes that safe): so two batches of one lane are not
    handled at the same time, and a handler may keep per-lane documents (shards of a
    shared counter) that concurrent batches never both write.
    """

    events: tuple[E, ...]
    lane: int = 0

    def __len__(self) -> int:
        return len(self.events)


def batch_of(*events: E, lane: int = 0) -> EventBatch[E]:
    """A batch built by hand: tests, replays and admin paths."""
    return EventBatch(tuple(events), lane)


def each(apply: Callable[[E, UnitOfWork], R]) -> Callable[[UnitOfWork, list[E]], list[R]]:
    """Batch work made of a per-event handler `apply(event, uow)`: the events one after
    another in the batch's one transaction (for consumers whose events are rare or whose
    rules need each event's effects before the next; hot paths write in bulk instead)."""

    def work(uow: UnitOfWork, events: list[E]) -> list[R]:
        return [apply(event, uow) for event in events]

    return work
