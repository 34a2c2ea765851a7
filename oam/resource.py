"""JSON building blocks of the OAM HTTP site, on plain C{twisted.web.resource}.

Every answer of the site, errors included, is a JSON object; every error
object has an C{"error"} member. This module is the one place that writes
them:

    - L{write_json} sets the status, the headers and returns the body;
    - L{JSONEndpoint} is a leaf resource that dispatches on the method,
      answers 405 (with C{Allow}) for the others, 404 for any path below it,
      and turns an unexpected exception into a 500 through an
      L{ErrorReporter} (which logs and counts it), never a traceback;
    - L{NotFound} answers 404 for whatever path reached it;
    - L{Guarded} wraps a resource written elsewhere (a mounted REST API) so
      its exceptions, during traversal or rendering, end the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

__all__ = [
    "ErrorReporter",
    "Guarded",
    "JSONEndpoint",
    "NotFound",
    "internal_error",
    "not_found",
    "request_path",
    "write_json",
]

ErrorReporter = Callable[[str, Failure, IRequest], None]
"""Called as C{report(route, failure, request)} for every unexpected exception."""

MAX_ECHOED_PATH = 512
"""Longest request path echoed back in a 404 body, in characters."""


def write_json(
    request: IRequest,
    code: int,
    payload: dict[str, Any],
    headers: dict[bytes, bytes] | None = None,
) -> bytes:
    """Set the response status and headers for a JSON answer; return its body.

    @param request: the request being answered.
    @param code: the HTTP status code.
    @param payload: the JSON object to send.
    @param headers: extra response headers.
    @return: the UTF-8 body, to be returned from C{render}.
    """
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    return json.dumps(payload, sort_keys=True).encode("utf-8") + b"\n"


def request_path(request: IRequest) -> str:
    """Return the request path as text, bounded to L{MAX_ECHOED_PATH} characters."""
    path = request.path.decode("utf-8", "replace")
    if len(path) > MAX_ECHOED_PATH:
        path = path[:MAX_ECHOED_PATH] + "..."
    return path


def not_found(request: IRequest) -> bytes:
    """Answer 404 C{{"error": "not found", "path": ...}}."""
    return write_json(request, 404, {"error": "not found", "path": request_path(request)})


def internal_error(request: IRequest) -> bytes:
    """Answer 500 C{{"error": "internal error"}}, hiding what went wrong."""
    return write_json(request, 500, {"error": "internal error"})


class NotFound(Resource):
    """A leaf that answers 404 JSON to every method and path below it."""

    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        """Answer 404 for the path that led here."""
        return not_found(request)


class JSONEndpoint(Resource):
    """A leaf resource answering one path with JSON.

    Subclasses list their C{methods} and define the matching C{render_GET},
    C{render_POST} and so on, returning C{bytes} (usually from
    L{write_json}). C{HEAD} is served by C{render_GET}; Twisted drops the
    body.

    @cvar methods: the methods answered; any other gets 405.
    @cvar route: the C{route} label errors of this endpoint are counted
        under.
    """

    isLeaf = True
    methods: tuple[bytes, ...] = ()
    route = "other"

    def __init__(self, report: ErrorReporter) -> None:
        """
        @param report: told about every unexpected exception in a handler.
        """
        super().__init__()
        self._report = report

    def allowed_methods(self) -> list[bytes]:
        """Return the methods this endpoint answers, for the C{Allow} header."""
        allowed = set(self.methods)
        if b"GET" in allowed:
            allowed.add(b"HEAD")
        return sorted(allowed)

    def render(self, request: IRequest) -> bytes:
        """Dispatch on the method; 404 below the endpoint, 405 for other methods."""
        if request.postpath not in ([], [b""]):
            return not_found(request)
        method = request.method
        if method == b"HEAD" and b"GET" in self.methods:
            method = b"GET"
        if method not in self.methods:
            return self.method_not_allowed(request)
        handler = getattr(self, "render_" + method.decode("ascii"))
        try:
            return handler(request)
        except Exception:
            self._report(self.route, Failure(), request)
            return internal_error(request)

    def method_not_allowed(self, request: IRequest) -> bytes:
        """Answer 405 with the C{Allow} header and the allowed methods in JSON."""
        allowed = self.allowed_methods()
        return write_json(
            request,
            405,
            {
                "error": "method not allowed",
                "method": request.method.decode("ascii", "replace")[:32],
                "allowed": [m.decode("ascii") for m in allowed],
            },
            {b"Allow": b", ".join(allowed)},
        )


class Guarded(Resource):
    """Wrap a resource so none of its exceptions reaches Twisted's error page.

    Traversal (C{getChildWithDefault}) and rendering are both guarded, and
    every child the wrapped resource returns is wrapped in turn, so the whole
    subtree answers 500 JSON on a bug and the bug is reported once.
    """

    def __init__(self, wrapped: IResource, route: str, report: ErrorReporter) -> None:
        """
        @param wrapped: the resource (and subtree) to protect.
        @param route: the C{route} label its errors are counted under.
        @param report: told about every unexpected exception.
        """
        super().__init__()
        self._wrapped = wrapped
        self._route = route
        self._report = report
        self.isLeaf = wrapped.isLeaf

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:
        """Return the wrapped child, guarded; a failing lookup becomes a 500."""
        try:
            child = self._wrapped.getChildWithDefault(path, request)
        except Exception:
            self._report(self._route, Failure(), request)
            return _Failed()
        return Guarded(child, self._route, self._report)

    def render(self, request: IRequest) -> bytes | int:
        """Render the wrapped resource; an exception becomes a 500 JSON answer."""
        try:
            return self._wrapped.render(request)
        except Exception:
            self._report(self._route, Failure(), request)
            # The failing resource may have set headers for another body.
            request.responseHeaders.removeHeader(b"Content-Length")
            return internal_error(request)


class _Failed(Resource):
    """The leaf put in place of a child whose lookup raised: answers 500."""

    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        """Answer 500 JSON (the error is already reported)."""
        return internal_error(request)
