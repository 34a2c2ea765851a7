"""The shape every REST API endpoint shares: asynchronous handlers on a
C{twisted.web} resource, with one place that writes answers.

An L{ApiEndpoint} lists its methods; C{render} answers 405 (with C{Allow})
for the others, then runs the matching C{handle_<method>} coroutine in a
L{Deferred}: authentication first (unless the endpoint is public), then
the handler, whose L{Reply} (or L{ApiError}) becomes the response.  A
request that finds the database closed (the switch is stopping) gets 503
with C{Retry-After}.  An unexpected exception is reported (logged and counted in the OAM metrics)
and answered 500 JSON, never with a traceback.  A client that went away
before the answer was ready gets nothing written.

The body and query-string readers (L{json_body}, L{query}) live here too,
so that every endpoint refuses bad input the same way.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from b2bua.db.database import DatabaseClosed
from b2bua.db.interfaces import Scope
from oam.api.problems import (
    ApiError,
    Reply,
    invalid,
    malformed,
    method_not_allowed,
    not_found,
    too_large,
    unsupported_media_type,
)
from oam.resource import ErrorReporter, write_json

__all__ = ["MAX_JSON_BODY", "ApiContext", "ApiEndpoint", "json_body", "media_type", "query",
           "read_body"]

log = Logger()

#: The largest JSON body read, in bytes.
MAX_JSON_BODY = 1024 * 1024


@dataclass(frozen=True)
class ApiContext:
    """What every endpoint of one API instance shares.

    @ivar repositories: collection name -> repository.
    @ivar authenticate: turns a request into the key's L{Scope} or raises
        a 401 L{ApiError}.
    @ivar report: told about every unexpected exception.
    @ivar base: the URL path the API is served under (for C{Location}).
    """

    repositories: dict[str, Any]
    authenticate: Callable[[IRequest], Awaitable[Scope]]
    report: ErrorReporter
    base: str = "/api/v1"


Handler = Callable[[IRequest, Scope], Awaitable[Reply]]


def media_type(request: IRequest) -> tuple[str, dict[str, str]]:
    """The request's C{Content-Type}: lower-case type and its parameters."""
    raw = request.getHeader(b"Content-Type")
    if raw is None:
        return "", {}
    text = raw.decode("latin-1")
    kind, _, rest = text.partition(";")
    params = {}
    for item in rest.split(";"):
        name, sep, value = item.partition("=")
        if sep:
            params[name.strip().lower()] = value.strip().strip('"').lower()
    return kind.strip().lower(), params


def read_body(request: IRequest, accepted: tuple[str, ...], limit: int) -> tuple[str, str]:
    """Check the C{Content-Type} and read the body as UTF-8 text.

    @param accepted: the media types this endpoint reads.
    @return: C{(media type, text)}.
    @raise ApiError: 415 for another type or charset, 413 past C{limit}
        bytes, 400 when the bytes are not UTF-8.
    """
    kind, params = media_type(request)
    if kind not in accepted or params.get("charset", "utf-8") not in ("utf-8", "utf8"):
        raise unsupported_media_type(list(accepted))
    content = request.content
    if content is None:
        data = b""
    else:
        content.seek(0)
        data = content.read(limit + 1)
    if len(data) > limit:
        raise too_large(limit)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise malformed("JSON" if kind.endswith("json") else "CSV",
                        f"not UTF-8 (byte {error.start})") from None
    return kind, text


def _no_constant(name: str) -> Any:
    """Refuse C{NaN} and C{Infinity}, which JSON does not have."""
    raise ValueError(f"{name} is not JSON")


def _plain(value: Any) -> None:
    """Refuse strings holding lone surrogates (escaped as C{\\ud800})."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())


def parse_json(text: str) -> Any:
    """Parse JSON text strictly (no NaN, no lone surrogates).

    @raise ApiError: 400 malformed JSON.
    """
    try:
        value = json.loads(text, parse_constant=_no_constant)
        _plain(value)
    except (ValueError, RecursionError, UnicodeEncodeError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise malformed("JSON", reason[:200]) from None
    return value


def json_body(request: IRequest, limit: int = MAX_JSON_BODY) -> Any:
    """The request body as a JSON value (C{application/json}, UTF-8).

    @raise ApiError: 415, 413 or 400.
    """
    _, text = read_body(request, ("application/json",), limit)
    return parse_json(text)


def query(request: IRequest) -> dict[str, str]:
    """The query string as text, one value per name.

    @raise ApiError: 422 naming parameters given more than once, or not UTF-8.
    """
    out: dict[str, str] = {}
    errors: dict[str, str] = {}
    for raw_name, values in (request.args or {}).items():
        try:
            name = raw_name.decode("utf-8")
            decoded = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            errors[raw_name.decode("utf-8", "replace")[:64]] = "must be UTF-8"
            continue
        if len(decoded) != 1:
            errors[name[:64]] = "given more than once"
            continue
        out[name] = decoded[0]
    if errors:
        raise invalid(errors)
    return out


class ApiEndpoint(Resource):
    """A resource of the REST API: method dispatch to async handlers.

    Subclasses set C{methods} and define C{handle_get}, C{handle_post},
    C{handle_patch}, C{handle_delete} as coroutines taking the request and
    the caller's L{Scope} and returning a L{Reply}.

    @cvar methods: the methods answered (C{HEAD} is added for C{GET}).
    @cvar public: whether the endpoint answers without an API key.
    """

    methods: tuple[str, ...] = ()
    public = False

    def __init__(self, api: ApiContext) -> None:
        super().__init__()
        self.api = api

    def allowed(self) -> list[str]:
        """The methods for C{Allow}."""
        names = set(self.methods)
        if "GET" in names:
            names.add("HEAD")
        return sorted(names)

    def render(self, request: IRequest) -> bytes | int:
        """Dispatch on the method; the handler's answer is written later."""
        if self.isLeaf and request.postpath not in ([], [b""]):
            return _write(request, not_found().reply)
        method = request.method.decode("ascii", "replace")
        if method == "HEAD" and "GET" in self.methods:
            method = "GET"
        if method not in self.methods:
            return _write(request, method_not_allowed(request.method, self.allowed()).reply)
        handler: Handler = getattr(self, f"handle_{method.lower()}")
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        d = Deferred.fromCoroutine(self._answer(request, handler))
        d.addCallback(self._send, request, gone)
        d.addErrback(self._lost, request)
        return NOT_DONE_YET

    async def _answer(self, request: IRequest, handler: Handler) -> Reply:
        """Authenticate, run the handler, and turn any failure into a L{Reply}."""
        try:
            scope = Scope("anonymous") if self.public else await self.api.authenticate(request)
            return await handler(request, scope)
        except ApiError as error:
            return error.reply
        except DatabaseClosed:
            return Reply(503, {"error": "unavailable", "reason": "shutting down"},
                         {b"Retry-After": b"5"})
        except Exception:
            self.api.report("api", Failure(), request)
            return Reply(500, {"error": "internal error"})

    def _send(self, reply: Reply, request: IRequest, gone: list[bool]) -> None:
        """Write C{reply} unless the client went away."""
        if gone:
            return
        body = _write(request, reply)
        if body:
            request.write(body)
        request.finish()

    def _lost(self, failure: Failure, request: IRequest) -> None:
        """An error while writing (a bug): log it; nothing more can be sent."""
        log.failure("oam api: writing the answer to {path} failed", failure,
                    path=request.path.decode("utf-8", "replace")[:256])


def _write(request: IRequest, reply: Reply) -> bytes:
    """Set the status and headers of C{reply}; return its body."""
    if reply.payload is None:
        request.setResponseCode(reply.code)
        request.setHeader(b"Cache-Control", b"no-store")
        for name, value in reply.headers.items():
            request.setHeader(name, value)
        if reply.code != 204:
            request.setHeader(b"Content-Length", b"0")
        return b""
    body = write_json(request, reply.code, reply.payload, reply.headers)
    request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
    return body
