"""The OpenAPI 3.1 document of the gateway, generated from the route table and the very
pydantic models the routes validate with, so the document cannot drift from the code."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from contracts.api.gateway import ErrorResponse, ReadinessResponse
from contracts.vocabulary import ID_PATTERN
from services.gateway.routes import PATH_PATTERNS, Policy, Route

REF = "#/components/schemas/{model}"
ERROR_TEXT = {
    400: "Bad input: the details say which field and what to send",
    401: "Missing, malformed, expired or wrongly signed bearer token",
    403: "The caller's role or team may not do this",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Body too large",
    415: "Body is not application/json",
    422: "A domain rule forbids it",
    503: "A service behind the gateway is down or slow; retry shortly",
}
PARAM_TEXT = {
    "agent_id": "The agent's id",
    "course_id": "The course's id",
    "module_id": "The module's id",
    "badge_id": "The badge's id",
    "team_id": "The team's id",
    "period": "`all-time`, `weekly`, `monthly`, or a key like `2026-W48` or `2026-11`",
}


def _models(routes: tuple[Route, ...]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
        (ErrorResponse, "serialization"): None,
        (ReadinessResponse, "serialization"): None,
    }
    for route in routes:
        for which, mode in (
            ("body", "validation"),
            ("query", "validation"),
            ("response", "serialization"),
        ):
            model = route.model(which)
            if model is not None:
                wanted[(model, mode)] = None  # type: ignore[index]
    return list(wanted)


def _error(status: int) -> dict[str, Any]:
    return {
        "description": ERROR_TEXT.get(status, "Error"),
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}},
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(
    route: Route, refs: dict[Any, dict[str, Any]], schemas: dict[str, Any]
) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": PARAM_TEXT.get(name, name),
            "schema": {"type": "string", "pattern": PATH_PATTERNS.get(name, ID_PATTERN)},
        }
        for name in route.params
    ]
    query = route.model("query")
    if query is not None:
        definition = schemas[refs[(query, "validation")]["$ref"].rsplit("/", 1)[1]]
        required = set(definition.get("required", []))
        for name, schema in definition.get("properties", {}).items():
            parameter = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": schema,
            }
            if "description" in schema:
                parameter["description"] = schema["description"]
            parameters.append(parameter)
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "tags": [route.service],
        "security": [] if route.policy is Policy.PUBLIC else [{"bearerAuth": []}],
        "parameters": parameters,
    }
    body = route.model("body")
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(body, "validation")]}},
        }
    response = route.model("response")
    schema = refs[(response, "serialization")] if response is not None else {"type": "object"}
    responses: dict[str, Any] = {str(route.status): _json(schema, route.summary)}
    statuses = {400, 503, *route.errors}
    if route.policy is not Policy.PUBLIC:
        statuses.add(401)
    if route.policy not in (Policy.ANYONE, Policy.PUBLIC) or route.backfill:
        statuses.add(403)
    if route.method in ("POST", "PUT", "PATCH"):
        statuses.update({413, 415})
    for status in sorted(statuses):
        responses[str(status)] = _error(status)
    operation["responses"] = responses
    return operation


def _operational() -> dict[str, Any]:
    ready = {"$ref": REF.format(model="ReadinessResponse")}
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "The gateway process is up",
                "tags": ["operations"],
                "security": [],
                "responses": {"200": _json({"type": "object"}, "Up")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Every service behind the gateway answers its /healthz",
                "tags": ["operations"],
                "security": [],
                "responses": {"200": _json(ready, "Ready"), "503": _json(ready, "Not ready")},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "tags": ["operations"],
                "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document")},
            }
        },
    }


def build_document(routes: tuple[Route, ...], version: str = "1.0.0") -> dict[str, Any]:
    models = _models(routes)
    refs, definitions = models_json_schema(models, ref_template=REF)
    schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
    paths: dict[str, Any] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs, schemas)
    paths.update(_operational())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Skillquest API",
            "version": version,
            "description": (
                "The learning portal's API: roster and catalogue, learning progress, points, "
                "leaderboards, learning credits and badges. Every call but the operational "
                "ones needs `Authorization: Bearer <token>` (HS256 JWT with `sub`, `role` and, "
                'for managers, `team`). Errors are `{"error": {"code", "message", '
                '"details"}}`. Reads are eventually consistent with writes.'
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": name}
            for name in ("progress", "points", "leaderboards", "credits", "badges", "gateway")
        ]
        + [{"name": "operations"}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": schemas,
        },
    }
