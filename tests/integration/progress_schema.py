"""Checks a published event against its checked-in JSON Schema (contracts/schemas/).

`jsonschema` is not a dependency, so this validates the keywords the exported schemas use
(type, const, enum, pattern, lengths, bounds, multipleOf, required, properties,
additionalProperties, propertyNames, items, min/maxItems, anyOf, $ref to $defs) and fails
on any other keyword, so a schema that grows beyond it cannot pass unchecked. The event is
also parsed with the pydantic union, as a consumer would.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from contracts.events import EVENT_ADAPTER
from contracts.schemas_export import SCHEMA_DIR

_ANNOTATIONS = {"title", "description", "default", "$schema", "$id", "$defs", "examples"}
_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


@cache
def schema_of(event_type: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{event_type}.json").read_text())


def schema_errors(
    value: Any, schema: dict[str, Any], root: dict[str, Any], at: str = "$"
) -> list[str]:
    errors: list[str] = []
    for keyword, rule in schema.items():
        if keyword in _ANNOTATIONS or keyword in {"properties", "additionalProperties"}:
            continue
        if keyword == "$ref":
            name = rule.removeprefix("#/$defs/")
            errors += schema_errors(value, root["$defs"][name], root, at)
        elif keyword == "type":
            kinds = rule if isinstance(rule, list) else [rule]
            if not any(_TYPES[kind](value) for kind in kinds):
                errors.append(f"{at}: {value!r} is not of type {rule}")
        elif keyword == "const":
            if value != rule:
                errors.append(f"{at}: {value!r} != const {rule!r}")
        elif keyword == "enum":
            if value not in rule:
                errors.append(f"{at}: {value!r} not in {rule}")
        elif keyword == "anyOf":
            if all(schema_errors(value, option, root, at) for option in rule):
                errors.append(f"{at}: {value!r} matches none of anyOf")
        elif keyword == "pattern":
            if isinstance(value, str) and not re.search(rule, value):
                errors.append(f"{at}: {value!r} does not match {rule}")
        elif keyword in {"minLength", "maxLength"}:
            if isinstance(value, str) and not _within(len(value), keyword, rule):
                errors.append(f"{at}: length of {value!r} breaks {keyword} {rule}")
        elif keyword in {"minItems", "maxItems"}:
            if isinstance(value, list) and not _within(len(value), keyword, rule):
                errors.append(f"{at}: {len(value)} items break {keyword} {rule}")
        elif keyword in {"minimum", "maximum"}:
            if _TYPES["number"](value) and not _within(value, keyword, rule):
                errors.append(f"{at}: {value} breaks {keyword} {rule}")
        elif keyword == "multipleOf":
            if _TYPES["number"](value) and (value / rule) != int(value / rule):
                errors.append(f"{at}: {value} is not a multiple of {rule}")
        elif keyword == "required":
            if isinstance(value, dict):
                errors += [f"{at}: missing required {name!r}" for name in rule if name not in value]
        elif keyword == "items":
            if isinstance(value, list):
                for index, item in enumerate(value):
                    errors += schema_errors(item, rule, root, f"{at}[{index}]")
        elif keyword == "propertyNames":
            if isinstance(value, dict):
                for name in value:
                    errors += schema_errors(name, rule, root, f"{at} key {name!r}")
        else:
            errors.append(f"{at}: schema keyword {keyword!r} is not checked by this validator")
    if isinstance(value, dict) and ("properties" in schema or "additionalProperties" in schema):
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                errors += schema_errors(item, properties[name], root, f"{at}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{at}: unexpected property {name!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += schema_errors(item, schema["additionalProperties"], root, f"{at}.{name}")
    return errors


def _within(number: float, keyword: str, bound: float) -> bool:
    return number >= bound if keyword.startswith("min") else number <= bound


def assert_matches_schema(event: dict[str, Any]) -> None:
    """The event conforms to the schema of its type and parses as that pydantic type."""
    schema = schema_of(event["type"])
    errors = schema_errors(event, schema, schema)
    assert not errors, f"{event['type']} breaks its JSON Schema: {errors}"
    parsed = EVENT_ADAPTER.validate_python(event)
    assert parsed.type == event["type"]
