"""JSON over HTTP for nameko: `@http(method, url)` entrypoints that return plain data,
validate bodies with pydantic, answer every error in the §5 shape, and count requests and
latency by route template (never by id).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, TypeVar

from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, WsgiApp
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map
from werkzeug.wrappers import Request, Response

from services.runtime.errors import (
    ApiError,
    BadRequest,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from services.runtime.metrics import ServiceMetrics

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

MAX_BODY_BYTES = 64 * 1024
JSON_TYPE = "application/json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(to_json(body), status=status, headers=headers, mimetype=JSON_TYPE)


def error_response(error: ApiError) -> Response:
    return json_response(error.body(), status=error.status)


class JsonWsgiApp(WsgiApp):
    """Unknown paths and methods answer in the JSON error shape too."""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ, shallow=True)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            provider, values = adapter.match()
        except HTTPException as exc:
            code = "not_found" if exc.code == 404 else "method_not_allowed"
            error = ApiError(exc.description or exc.name, code=code)
            error.status = exc.code or 500
            return error_response(error)(environ, start_response)
        request.path_values = values  # type: ignore[attr-defined]  # nameko's convention
        return provider.handle_request(request)(environ, start_response)


class JsonWebServer(WebServer):
    def get_wsgi_app(self) -> JsonWsgiApp:
        return JsonWsgiApp(self)


class JsonRoute(HttpRequestHandler):
    """Handlers return data (dict, list, pydantic model), `(status, data)`, or a Response."""

    server = JsonWebServer()
    metrics = ServiceMetrics()

    def __init__(
        self, method: str, url: str, expected_exceptions: Any = (ApiError,), **kwargs: Any
    ) -> None:
        # ApiErrors are answers to the caller, not faults of the service.
        super().__init__(method, url, expected_exceptions=expected_exceptions, **kwargs)

    def setup(self) -> None:
        # nameko checks each call's arguments against the method (inspect.getcallargs, 3
        # to 4% of a service's CPU per request under py-spy). An HTTP call's arguments are
        # always the request and the rule's variables: checked once, here, where a mismatch
        # stops the service from starting instead of failing its calls.
        rule = self.get_url_rule()
        Map([rule])  # binding the rule compiles it: its variables are known after
        super().check_signature((None,), dict.fromkeys(rule.arguments, ""))
        super().setup()

    def check_signature(self, args: Any, kwargs: Any) -> None:
        """Done once, in `setup`."""

    def handle_request(self, request: Request) -> Response:
        started = time.monotonic()
        response = super().handle_request(request)
        families = self.metrics.families
        families.http_requests.labels(self.url, request.method, str(response.status_code)).inc()
        families.http_latency.labels(self.url, request.method).observe(time.monotonic() - started)
        return response

    def response_from_result(self, result: Any) -> Response:
        if isinstance(result, Response):
            return result
        status = 200
        if isinstance(result, tuple):
            status, result = result
        return json_response(result, status=status)

    def response_from_exception(self, exc: BaseException) -> Response:
        if isinstance(exc, ApiError):
            return error_response(exc)
        if isinstance(exc, ServerSelectionTimeoutError | ConnectionFailure):
            return error_response(Unavailable("the database is unavailable; retry shortly"))
        log.error("unhandled error in %s %s", self.method, self.url, exc_info=exc)
        return error_response(ApiError("internal error; it has been logged"))


http = JsonRoute.decorator


class _QuietClientErrors(logging.Filter):
    """nameko logs every expected exception with a traceback; a 4xx answer is no news."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, ApiError) and error.status < 500)


logging.getLogger("nameko.containers").addFilter(_QuietClientErrors())


def parse_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as `model`, or a 400/413/415 that says what to send."""
    if request.content_length and request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request bodies are limited to {MAX_BODY_BYTES} bytes")
    if request.mimetype != JSON_TYPE:
        raise UnsupportedMediaType(f"send the body as {JSON_TYPE}")
    raw = request.get_data(cache=True)
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request bodies are limited to {MAX_BODY_BYTES} bytes")
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as error:
        raise BadRequest(
            f"invalid {model.__name__} body", details=validation_details(error)
        ) from None


def parse_query(request: Request, model: type[M]) -> M:
    """Query-string parameters as `model` (pydantic converts the strings)."""
    try:
        return model.model_validate(dict(request.args.items()))
    except ValidationError as error:
        raise BadRequest("invalid query parameters", details=validation_details(error)) from None


def validation_details(error: ValidationError) -> list[dict[str, Any]]:
    """Field-level details a client can act on: where, what was wrong, what was sent."""
    details = []
    for item in error.errors(include_url=False):
        detail = {"field": ".".join(str(part) for part in item["loc"]), "message": item["msg"]}
        if "input" in item and not isinstance(item["input"], dict | list):
            detail["received"] = item["input"]
        details.append(detail)
    return json.loads(to_json(details))


def require(found: Any, what: str) -> Any:
    """`found`, or a 404 naming what was missing."""
    if found is None:
        raise NotFound(f"{what} not found")
    return found
