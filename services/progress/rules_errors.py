"""What the rules refuse, told apart by what the caller did wrong.

The rules raise these; the service turns them into HTTP answers (400, 404, 409, 422), so the
rules stay free of any transport.
"""

from __future__ import annotations


class Refused(Exception):
    """A request the rules refuse; nothing was changed."""


class Invalid(Refused):
    """The input itself is wrong (HTTP 400)."""


class Missing(Refused):
    """Something the request names does not exist (HTTP 404)."""


class Clash(Refused):
    """The request conflicts with what exists (HTTP 409)."""


class NotAllowed(Refused):
    """Well-formed, but a domain rule forbids it now (HTTP 422)."""
