"""The bench's count of documents written (bench/writes.py), on the real database: every
document a phase wrote, alone or in a transaction, and nothing written before it."""

from __future__ import annotations

import pytest
from pymongo import MongoClient

from bench.writes import OplogPosition

pytestmark = pytest.mark.integration


def test_counts_every_document_written_after_the_position(database, mongo_db_name) -> None:
    client: MongoClient = MongoClient(database.uri)
    db = client[mongo_db_name]
    try:
        db.ledger.insert_many([{"n": n} for n in range(5)])  # before: not counted
        position = OplogPosition.of(client)

        db.ledger.insert_many([{"n": n} for n in range(5, 12)])
        db.ledger.update_many({"n": {"$lt": 3}}, {"$set": {"seen": True}})
        with client.start_session() as session, session.start_transaction():
            db.accounts.insert_one({"_id": "a1", "balance": 10}, session=session)
            db.ledger.delete_one({"n": 11}, session=session)

        written = position.written_since(client)
        assert written is not None
        # Other tests write to the same server: only this database's namespaces are ours.
        mine = {key: n for key, n in written.items() if key[0].startswith(f"{mongo_db_name}.")}
        assert mine == {
            (f"{mongo_db_name}.ledger", "insert"): 7,
            (f"{mongo_db_name}.ledger", "update"): 3,
            (f"{mongo_db_name}.accounts", "insert"): 1,
            (f"{mongo_db_name}.ledger", "delete"): 1,
        }
    finally:
        client.drop_database(mongo_db_name)
        client.close()
