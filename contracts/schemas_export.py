"""Writes one JSON Schema per event type into contracts/schemas/ (`make schemas`).

Non-Python producers (the ticket system, an LMS) validate what they send against these;
a test fails when a checked-in file differs from what the models produce.
"""

from __future__ import annotations

import json
from pathlib import Path

from contracts.events import EVENT_CLASSES

SCHEMA_DIR = Path(__file__).parent / "schemas"


def schema_documents() -> dict[str, str]:
    """File name -> JSON text, for every event type."""
    documents = {}
    for cls in EVENT_CLASSES:
        schema = cls.model_json_schema(mode="serialization")
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://skillquest.dev/schemas/{cls.TYPE}.json",
            **schema,
        }
        documents[f"{cls.TYPE}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return documents


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    documents = schema_documents()
    for stale in SCHEMA_DIR.glob("*.json"):
        if stale.name not in documents:
            stale.unlink()
    for name, text in documents.items():
        (SCHEMA_DIR / name).write_text(text)
    print(f"wrote {len(documents)} schemas to {SCHEMA_DIR}")


if __name__ == "__main__":
    main()
