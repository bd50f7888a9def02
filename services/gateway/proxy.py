"""One proxied call: authenticate, check the path, authorize, read and validate the input,
forward to the owning service, and pass its answer on.

The order matters: a caller learns nothing about a route's input rules before their token
and role are accepted, and nothing reaches a service that the gateway would refuse.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import from_json
from werkzeug.wrappers import Request, Response

from services.gateway.auth import Caller, VerifiedTokens, bearer_token
from services.gateway.downstream import Downstream, DownstreamMetrics, Reply, team_cache
from services.gateway.policy import authorize, check_backfill, check_path, check_query_rights
from services.gateway.profile import build_profile
from services.gateway.routes import Policy, Route
from services.gateway.settings import GatewaySettings
from services.runtime.errors import (
    ApiError,
    BadRequest,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from services.runtime.http import JSON_TYPE, error_response, json_response, validation_details

#: Request headers the services act on, passed through unchanged.
FORWARDED_HEADERS = ("Idempotency-Key",)
REQUEST_ID = "X-Request-Id"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(request: Request) -> str:
    """The caller's X-Request-Id when it is a sane one, else a new one: it goes to every
    service the call reaches and back to the caller, to follow one call through the logs."""
    given = request.headers.get(REQUEST_ID, "")
    return given if _SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


@dataclass
class Input:
    raw: bytes | None  # forwarded as sent (the service validates it again)
    parsed: Any


class Gateway:
    """What the gateway's entrypoints share: settings, the HTTP client and the team cache."""

    def __init__(self, settings: GatewaySettings, metrics: DownstreamMetrics | None = None) -> None:
        self.settings = settings
        self.downstream = Downstream(
            settings.service_urls,
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            pool_size=settings.http_pool_size,
            metrics=metrics,
        )
        self.teams = team_cache(settings.team_cache_seconds)
        self.tokens = VerifiedTokens(settings.jwt_secret, settings.token_leeway_seconds)

    # -- auth ---------------------------------------------------------------------------

    def authenticate(self, request: Request) -> Caller:
        return self.tokens.caller(bearer_token(request.headers.get("Authorization")))

    def team_of(self, agent_id: str) -> str:
        """The agent's current team, from the roster (cached briefly)."""
        team = self.teams.get(agent_id)
        if team is not None:
            return team
        reply = self.downstream.call("progress", "GET", f"/v1/agents/{agent_id}")
        if reply.status == 404:
            raise NotFound(f"agent {agent_id} not found")
        agent = reply.json() if reply.ok else None
        if not isinstance(agent, dict) or not agent.get("team_id"):
            raise Unavailable(
                "the progress service answered without the agent's team; retry shortly",
                details={"service": "progress", "status": reply.status},
            )
        self.teams[agent_id] = agent["team_id"]
        return str(agent["team_id"])

    # -- input --------------------------------------------------------------------------

    def read_body(self, request: Request) -> Input:
        """The JSON body (413 over the limit, 415 when not JSON, 400 when not parseable)."""
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"request bodies are limited to {limit} bytes")
        raw = request.stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"request bodies are limited to {limit} bytes")
        if not raw.strip():
            return Input(None, None)
        if request.mimetype != JSON_TYPE:
            raise UnsupportedMediaType(
                f"send the body as {JSON_TYPE} (Content-Type: {JSON_TYPE})",
                details={"received": request.mimetype or None},
            )
        try:
            # pydantic's parser: bounded nesting depth, so a deep body is a 400, not a crash
            parsed = from_json(raw)
        except ValueError as error:
            raise BadRequest(f"the body is not valid JSON: {error}") from None
        return Input(raw, parsed)

    @staticmethod
    def validate(model: type[BaseModel] | None, body: Input) -> Input:
        if model is None:
            if body.parsed is not None and not isinstance(body.parsed, dict):
                raise BadRequest("the body must be a JSON object")
            return body
        raw = body.raw or b"{}"
        try:
            model.model_validate_json(raw)
        except ValidationError as error:
            raise BadRequest(
                f"invalid {model.__name__} body", details=validation_details(error)
            ) from None
        return Input(raw, body.parsed)

    @staticmethod
    def check_query(model: type[BaseModel] | None, request: Request) -> None:
        if model is None:
            return
        args = request.args
        repeated = [key for key in args if len(args.getlist(key)) > 1]
        if repeated:
            raise BadRequest(
                "give each query parameter once",
                details=[{"field": key, "message": "repeated"} for key in repeated],
            )
        try:
            model.model_validate(dict(args.items()))
        except ValidationError as error:
            raise BadRequest(
                "invalid query parameters", details=validation_details(error)
            ) from None

    # -- the call -----------------------------------------------------------------------

    def handle(self, route: Route, request: Request, values: dict[str, str]) -> Response:
        """The proxied call's response; every refusal is an answer in the error shape (not
        an exception: a refused call is not an error of the gateway worth a traceback)."""
        rid = request_id(request)
        try:
            response = self._forward(route, request, values, rid)
        except ApiError as error:
            response = refusal(error)
        response.headers[REQUEST_ID] = rid
        return response

    def profile(self, route: Route, request: Request, agent_id: str) -> Response:
        rid = request_id(request)
        response = self._profile(route, request, agent_id, rid)
        response.headers[REQUEST_ID] = rid
        return response

    def _profile(self, route: Route, request: Request, agent_id: str, rid: str) -> Response:
        try:
            caller = self.authenticate(request)
            values = {"agent_id": agent_id}
            check_path(route, values)
            authorize(caller, route, values, self.team_of)
            profile = build_profile(
                self.downstream,
                agent_id,
                caller,
                history_limit=self.settings.profile_history_limit,
                headers={REQUEST_ID: rid},
            )
        except ApiError as error:
            return refusal(error)
        return json_response(profile)

    def _forward(
        self, route: Route, request: Request, values: dict[str, str], rid: str
    ) -> Response:
        caller = None if route.policy is Policy.PUBLIC else self.authenticate(request)
        check_path(route, values)
        # A team's data is named in the path (/v1/teams/{team_id}/...) or, for lists, in
        # the query (?team_id=); the path wins.
        scope = {**request.args.to_dict(), **values} if route.policy is Policy.TEAM_READ else values
        if caller is not None:
            authorize(caller, route, scope, self.team_of)
            check_query_rights(caller, route, request.args)
        self.check_query(route.model("query"), request)
        body: Input | None = None
        if request.method in ("POST", "PUT", "PATCH"):
            body = self.read_body(request)
            if caller is not None:
                check_backfill(caller, route, body.parsed)
            body = self.validate(route.model("body"), body)
        path = route.path.format(**values)
        reply = self.downstream.call(
            route.service,
            request.method,
            path,
            query=request.query_string,
            body=body.raw if body is not None else None,
            caller=caller,
            headers={
                REQUEST_ID: rid,
                **{
                    name: request.headers[name]
                    for name in FORWARDED_HEADERS
                    if name in request.headers
                },
            },
        )
        return passed_on(reply)


def forwarded_headers(request: Request, rid: str) -> dict[str, str]:
    headers = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
    headers[REQUEST_ID] = rid
    return headers


def passed_on(reply: Reply) -> Response:
    """The service's answer as it is; a 4xx that is not in the error shape is put into it."""
    if reply.status < 400:
        return Response(reply.body, status=reply.status, content_type=reply.content_type)
    try:
        document = reply.json()
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        return Response(reply.body, status=reply.status, content_type=JSON_TYPE)
    error = ApiError(
        reply.body.decode(errors="replace")[:500] or f"the service answered {reply.status}",
        code={404: "not_found", 405: "method_not_allowed", 409: "conflict"}.get(
            reply.status, "rejected"
        ),
    )
    return json_response(error.body(), status=reply.status)


def refusal(error: ApiError) -> Response:
    """The error shape; a 401 with the challenge RFC 6750 asks for."""
    response = error_response(error)
    if not isinstance(error, Unauthorized):
        return response
    challenge = 'Bearer realm="skillquest"'
    if error.code != "missing_token":  # no error code when no credentials were sent
        challenge += ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = challenge
    return response
