"""JSON Schema checks for tests: published events against contracts/schemas/, and other
documents (Open Badges credentials) against the schemas the tests ship."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jsonschema import FormatChecker
from jsonschema.validators import validator_for

from contracts.events import EVENT_ADAPTER
from contracts.schemas_export import SCHEMA_DIR


def schema_errors(schema: dict[str, Any], document: Any) -> list[str]:
    """Every violation as `path: message` (empty when valid), by the schema's own draft."""
    validator_cls = validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema, format_checker=FormatChecker())
    found = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]


@cache
def event_schema(event_type: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{event_type}.json").read_text())


def assert_matches_schema(event: dict[str, Any]) -> None:
    """A published event must satisfy its checked-in schema and parse as consumers parse it."""
    errors = schema_errors(event_schema(event["type"]), event)
    assert not errors, f"{event['type']} breaks its schema: {errors}"
    EVENT_ADAPTER.validate_python(event)
