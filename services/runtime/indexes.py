"""Indexes an earlier release made and this one no longer wants: dropped on start.

`ensure_indexes` (mongoengine) and `create_index` only add; an index left behind would go
on costing every write its entry.
"""

from __future__ import annotations

from collections.abc import Iterable

from pymongo.collection import Collection
from pymongo.errors import OperationFailure

#: MongoDB's error code for dropping an index that is not there.
INDEX_NOT_FOUND = 27


def drop_indexes(collection: Collection, names: Iterable[str]) -> None:
    """Drops those of the named indexes the collection has (idempotent)."""
    existing = collection.index_information()
    for name in names:
        if name not in existing:
            continue
        try:
            collection.drop_index(name)
        except OperationFailure as error:
            # Instances starting together: another one dropped it between the two calls.
            if error.code != INDEX_NOT_FOUND:
                raise
