"""The answers of the REST API that are not a row: every error, as a type.

An L{ApiError} carries its status code, its JSON body and its headers; the
endpoint that catches one writes it (L{oam.api.endpoint}).  This module is
the one place that decides which status code a failure gets:

    ======================================  ====  =================================
    failure                                 code  body
    ======================================  ====  =================================
    no, unknown, revoked or suspended key   401   C{{"error": "unauthorized"}}
    the role may not write the entity       403   C{{"error": "forbidden"}}
    no such row, or not the caller's        404   C{{"error": "not found"}}
    method not allowed on this path         405   C{{"error": "method not allowed"}}
    unique value or reference conflict      409   C{{"error": "conflict", "field"}}
    body too large                          413   C{{"error": "request too large"}}
    wrong C{Content-Type}                   415   C{{"error": "unsupported media type"}}
    body not JSON (or not UTF-8)            400   C{{"error": "malformed JSON"}}
    bad fields or query parameters          422   C{{"error": "validation failed",
                                                  "fields": {name: message}}}
    unexpected exception                    500   C{{"error": "internal error"}}
    ======================================  ====  =================================

L{from_repository} maps the provisioning layer's typed errors
(L{b2bua.db.interfaces}) onto these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from b2bua.db.interfaces import Conflict, NotFound, ValidationFailed
from b2bua.db.model import Entity
from b2bua.db.scoping import Forbidden

__all__ = ["ApiError", "Reply", "conflict", "forbidden", "from_repository", "invalid",
           "malformed", "method_not_allowed", "not_found", "too_large", "unauthorized",
           "unsupported_media_type"]


@dataclass
class Reply:
    """One answer: its status, its JSON body (C{None}: no body) and headers."""

    code: int
    payload: dict[str, Any] | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)


class ApiError(Exception):
    """A failure answered with an error status; raised by handlers.

    @ivar reply: the L{Reply} to send.
    """

    def __init__(self, code: int, payload: dict[str, Any],
                 headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__(f"{code} {payload.get('error')}")
        self.reply = Reply(code, payload, dict(headers or {}))


def unauthorized() -> ApiError:
    """401: no usable API key (the same answer whatever was wrong with it)."""
    return ApiError(401, {"error": "unauthorized"}, {b"WWW-Authenticate": b"Bearer"})


def forbidden() -> ApiError:
    """403: the key's role may not write this entity at all."""
    return ApiError(403, {"error": "forbidden"})


def not_found() -> ApiError:
    """404: no such row, or a row the key may not see (the same answer)."""
    return ApiError(404, {"error": "not found"})


def method_not_allowed(method: bytes, allowed: list[str]) -> ApiError:
    """405 with C{Allow}, shaped as the rest of the OAM site answers it."""
    return ApiError(405, {"error": "method not allowed",
                          "method": method.decode("ascii", "replace")[:32],
                          "allowed": allowed},
                    {b"Allow": ", ".join(allowed).encode("ascii")})


def conflict(field_name: str | None, message: str) -> ApiError:
    """409: a unique value is taken, a reference is missing or still held."""
    return ApiError(409, {"error": "conflict", "field": field_name, "message": message})


def too_large(limit: int) -> ApiError:
    """413: the body is larger than C{limit} bytes."""
    return ApiError(413, {"error": "request too large", "limit": limit})


def unsupported_media_type(expected: list[str]) -> ApiError:
    """415: the body is not of a type this endpoint reads."""
    return ApiError(415, {"error": "unsupported media type", "expected": expected})


def malformed(kind: str, reason: str) -> ApiError:
    """400: the body could not be parsed (C{kind} is C{JSON} or C{CSV})."""
    return ApiError(400, {"error": f"malformed {kind}", "reason": reason})


def invalid(fields: dict[str, str], **extra: Any) -> ApiError:
    """422 naming every bad field (or query parameter)."""
    return ApiError(422, {"error": "validation failed", "fields": dict(sorted(fields.items())),
                          **extra})


#: How the repositories word a L{NotFound} about a value the caller gave:
#: C{"customer_id: customer 5 not found"} (a ref) and C{"customer_id 5 not
#: found"} (an owner id).
_NAMED = re.compile(r"^(?P<field>[a-z_]+)(?::| \S+ not found$)")


def _named_field(error: NotFound, entity: Entity, given: set[str]) -> str | None:
    """The body field a L{NotFound} is about, if the message names one."""
    match = _NAMED.match(str(error))
    if match is None:
        return None
    name = match.group("field")
    names = {f.name for f in entity.fields}
    return name if name in names and name in given else None


def from_repository(error: Exception, entity: Entity,
                    given: set[str] | None = None) -> ApiError | None:
    """The answer to a repository failure, or C{None} for an unexpected one.

    A L{NotFound} about a value of the request body (another tenant's owner
    id, or a ref to a row the key cannot see) is answered 422 naming the
    field, with the same message whether the row exists elsewhere or not at
    all; any other L{NotFound} is a 404.

    @param given: the names of the body's fields (for creates and updates).
    """
    if isinstance(error, Forbidden):
        return forbidden()
    if isinstance(error, NotFound):
        name = _named_field(error, entity, given or set())
        if name is not None:
            return invalid({name: "not found"})
        return not_found()
    if isinstance(error, ValidationFailed):
        return invalid({str(k): str(v) for k, v in error.errors.items()})
    if isinstance(error, Conflict):
        return conflict(error.field, str(error))
    return None
