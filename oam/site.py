"""The OAM HTTP site: health, readiness, metrics, drain, and room for a REST API.

L{OAMSite} is bound to one switch instance: everything it answers comes from
the objects it was built with, never from module globals, and it never
touches a reactor (the C{Site} that serves it is given one by whoever listens).

Routes::

    GET  /health      200 {"status": "ok", "version": ...}
    GET  /ready       200 {"ready": true}, or 503 {"ready": false, "reason": ...}
    GET  /metrics     200 Prometheus text exposition (OpenMetrics on request)
    POST /drain       202 {"draining": true}; calls drain() at most once
    *    /api/v1/...  resources mounted with L{OAMSite.mount_api}

Every other path answers 404 JSON, every other method 405 JSON with
C{Allow}, and an unexpected exception 500 JSON (logged, and counted in
C{b2bua_oam_http_errors_total}). C{POST} requests carrying an C{Origin}
header are refused with 403, so a web page open in an operator's browser
cannot drain the switch behind their back.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from b2bua.metrics import Metrics
from oam.resource import (
    ErrorReporter,
    Guarded,
    JSONEndpoint,
    NotFound,
    request_path,
    write_json,
)

__all__ = ["OAMSite", "make_site"]

log = Logger()

_API_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _refuse_cross_origin(request: IRequest) -> bytes | None:
    """Answer 403 to a browser's cross-site POST; C{None} if the request may go on."""
    if request.getHeader(b"Origin") is None:
        return None
    return write_json(
        request,
        403,
        {"error": "forbidden", "reason": "cross-origin requests are not accepted"},
    )


class _Health(JSONEndpoint):
    """C{GET /health}: the process is up and serving HTTP."""

    methods = (b"GET",)
    route = "health"

    def __init__(self, report: ErrorReporter, version: str) -> None:
        super().__init__(report)
        self._version = version

    def render_GET(self, request: IRequest) -> bytes:
        """Answer 200 with the version."""
        return write_json(request, 200, {"status": "ok", "version": self._version})


class _Ready(JSONEndpoint):
    """C{GET /ready}: the switch takes new traffic (listeners up, not draining)."""

    methods = (b"GET",)
    route = "ready"

    def __init__(self, site: OAMSite) -> None:
        super().__init__(site.report_error)
        self._site = site

    def render_GET(self, request: IRequest) -> bytes:
        """Answer 200 when ready, else 503 with the reason."""
        reason = self._site.not_ready_reason()
        if reason is None:
            return write_json(request, 200, {"ready": True})
        return write_json(
            request, 503, {"error": "not ready", "ready": False, "reason": reason}
        )


class _Metrics(JSONEndpoint):
    """C{GET /metrics}: the Prometheus scrape, straight from the instance's registry."""

    methods = (b"GET",)
    route = "metrics"

    def __init__(self, report: ErrorReporter, metrics: Metrics) -> None:
        super().__init__(report)
        self._metrics = metrics

    def render_GET(self, request: IRequest) -> bytes:
        """Answer 200 with the exposition format the scraper asked for."""
        accept = request.getHeader(b"Accept")
        body, content_type = self._metrics.render(
            accept.decode("latin-1") if accept is not None else None
        )
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        return body


class _Drain(JSONEndpoint):
    """C{POST /drain}: stop taking new calls and let the current ones finish."""

    methods = (b"POST",)
    route = "drain"

    def __init__(self, site: OAMSite) -> None:
        super().__init__(site.report_error)
        self._site = site

    def render_POST(self, request: IRequest) -> bytes:
        """Start the drain (once) and answer 202."""
        refused = _refuse_cross_origin(request)
        if refused is not None:
            return refused
        self._site.start_drain()
        return write_json(request, 202, {"draining": True})


class _Root(Resource):
    """A directory: its children, JSON 404 for the rest and for itself."""

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        """Return the JSON 404 leaf for any path not registered."""
        return NotFound()

    def render(self, request: IRequest) -> bytes:
        """Answer 404 for C{/} itself."""
        return NotFound().render(request)


class OAMSite:
    """The OAM HTTP resource tree of one switch instance.

    @ivar resource: the root resource; serve it with L{make_site} or any
        C{twisted.web.server.Site}.
    """

    def __init__(
        self,
        metrics: Metrics,
        readiness: Callable[[], bool],
        drain: Callable[[], object],
        draining: Callable[[], bool],
        version: str,
    ) -> None:
        """
        @param metrics: the instance's metrics; rendered by C{/metrics}, and
            where the site's own errors are counted.
        @param readiness: returns C{True} once the SIP listeners are up.
        @param drain: starts a graceful drain; may return a L{Deferred},
            whose failure is logged.
        @param draining: returns C{True} while the switch drains.
        @param version: the software version C{/health} reports.
        """
        self._metrics = metrics
        self._readiness = readiness
        self._drain = drain
        self._draining = draining
        self._drain_started = False
        self._api = _Root()
        api = _Root()
        api.putChild(b"v1", Guarded(self._api, "api", self.report_error))
        root = _Root()
        root.putChild(b"health", _Health(self.report_error, version))
        root.putChild(b"ready", _Ready(self))
        root.putChild(b"metrics", _Metrics(self.report_error, metrics))
        root.putChild(b"drain", _Drain(self))
        root.putChild(b"api", api)
        self.resource: IResource = root

    def mount_api(self, name: str, resource: IResource) -> None:
        """Serve C{resource} (and its children) under C{/api/v1/<name>}.

        Exceptions it raises while looking up children or rendering are
        answered with 500 JSON and counted under the route C{api}.

        @param name: one path segment: letters, digits, C{.}, C{_}, C{-}.
        @raise ValueError: if C{name} is not a valid segment or is taken.
        """
        if not _API_NAME.fullmatch(name) or name in (".", ".."):
            raise ValueError(f"invalid API name: {name!r}")
        key = name.encode("ascii")
        if key in self._api.children:
            raise ValueError(f"API name already mounted: {name!r}")
        self._api.putChild(key, resource)

    def not_ready_reason(self) -> str | None:
        """Return why the switch is not ready (C{"draining"}, C{"starting"}), or C{None}."""
        if self._draining():
            return "draining"
        if not self._readiness():
            return "starting"
        return None

    def start_drain(self) -> None:
        """Call C{drain()} unless a drain already started; idempotent.

        If C{drain()} raises, the drain did not start, so a later call tries
        again (and the exception propagates to become a 500).
        """
        if self._drain_started or self._draining():
            return
        self._drain_started = True
        try:
            result = self._drain()
        except BaseException:
            self._drain_started = False
            raise
        log.info("oam: drain requested")
        if isinstance(result, Deferred):
            result.addErrback(self._drain_failed)

    def _drain_failed(self, failure: Failure) -> None:
        """Log a drain whose Deferred failed (the 202 is long gone)."""
        log.failure("oam: the drain failed", failure)

    def report_error(self, route: str, failure: Failure, request: IRequest) -> None:
        """Log and count an unexpected exception answered with 500."""
        self._metrics.oam_error(route)
        log.failure(
            "oam: {method} {path} failed",
            failure,
            method=request.method.decode("ascii", "replace"),
            path=request_path(request),
        )

    def make_site(self, reactor: IReactorTime) -> Site:
        """Return a C{Site} serving this tree, with tracebacks never shown.

        @param reactor: the reactor the site times its connections with.
        """
        site = Site(self.resource, reactor=reactor)
        site.displayTracebacks = False
        return site


def make_site(
    metrics: Metrics,
    readiness: Callable[[], bool],
    drain: Callable[[], object],
    draining: Callable[[], bool],
    version: str,
    reactor: IReactorTime,
) -> Site:
    """Build an L{OAMSite} and return a C{Site} serving it on C{reactor}.

    Use L{OAMSite} directly to keep a handle for L{OAMSite.mount_api}.
    """
    return OAMSite(metrics, readiness, drain, draining, version).make_site(reactor)
