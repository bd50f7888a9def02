"""Errors a caller sees: each carries its HTTP status and the §5 error shape."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, details: Any = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class RuleViolation(ApiError):
    """The request is well-formed but a domain rule forbids it (HTTP 422)."""

    status = 422
    code = "rule_violation"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"
