"""A small JSON Schema (draft 2019-09) checker for the keywords the shipped Open Badges
schema uses. The project has no JSON Schema library among its dependencies; with one
(`jsonschema`), `Draft201909Validator(schema).iter_errors(doc)` replaces this.

Keywords: type, const, enum, pattern, format (date-time, uri), required, properties,
additionalProperties (boolean), items (schema or list) with additionalItems, minItems,
contains, allOf, anyOf, oneOf, and $ref to "#/$defs/...".
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}
KNOWN = {
    "$schema", "$id", "title", "description", "$comment", "$defs", "type", "const", "enum",
    "pattern", "format", "required", "properties", "additionalProperties", "items",
    "additionalItems", "minItems", "contains", "allOf", "anyOf", "oneOf", "$ref",
}  # fmt: skip


def errors(schema: dict[str, Any], document: Any) -> list[str]:
    return list(_check(schema, document, schema, "$"))


def _type_ok(expected: str, value: Any) -> bool:
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, TYPES[expected])


def _format_ok(name: str, value: str) -> bool:
    if name == "date-time":
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
        except ValueError:
            return False
    if name == "uri":
        return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$", value) is not None
    return True


def _check(schema: Any, value: Any, root: dict[str, Any], path: str):  # noqa: C901
    unknown = set(schema) - KNOWN
    if unknown:
        raise ValueError(f"schema keywords this checker does not know: {sorted(unknown)}")
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        yield from _check(target, value, root, path)
    if "type" in schema and not _type_ok(schema["type"], value):
        yield f"{path}: expected {schema['type']}, got {type(value).__name__}"
        return
    if "const" in schema and value != schema["const"]:
        yield f"{path}: expected {schema['const']!r}"
    if "enum" in schema and value not in schema["enum"]:
        yield f"{path}: not one of {schema['enum']}"
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            yield f"{path}: does not match {schema['pattern']}"
        if "format" in schema and not _format_ok(schema["format"], value):
            yield f"{path}: not a {schema['format']}"
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                yield f"{path}: missing {name!r}"
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                yield from _check(properties[name], item, root, f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                yield f"{path}: unexpected {name!r}"
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            yield f"{path}: fewer than {schema['minItems']} items"
        items = schema.get("items")
        for index, item in enumerate(value):
            if isinstance(items, list):
                sub = items[index] if index < len(items) else schema.get("additionalItems")
            else:
                sub = items
            if sub is not None:
                yield from _check(sub, item, root, f"{path}[{index}]")
        if "contains" in schema and not any(
            not errors_of(schema["contains"], item, root) for item in value
        ):
            yield f"{path}: no item matches {schema['contains']}"
    for sub in schema.get("allOf", []):
        yield from _check(sub, value, root, path)
    if "anyOf" in schema and all(errors_of(s, value, root) for s in schema["anyOf"]):
        yield f"{path}: matches none of anyOf"
    if "oneOf" in schema:
        matching = sum(1 for s in schema["oneOf"] if not errors_of(s, value, root))
        if matching != 1:
            yield f"{path}: matches {matching} of oneOf, not exactly 1"


def errors_of(schema: Any, value: Any, root: dict[str, Any]) -> list[str]:
    return list(_check(schema, value, root, "$"))
