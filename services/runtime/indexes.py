"""Indexes an earlier release made and this one no longer wants: dropped on start.

`ensure_indexes` (mongoengine) and `create_index` only add; an index left behind would go
on costing every write its entry.
"""

from __future__ import annotations

from collections.abc import Iterable

from pymongo.collection import Collection


def drop_indexes(collection: Collection, names: Iterable[str]) -> None:
    """Drops those of the named indexes the collection has (idempotent)."""
    existing = collection.index_information()
    for name in names:
        if name in existing:
            collection.drop_index(name)
