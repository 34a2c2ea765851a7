"""Tests for L{oam.site}: every route and error path, over in-memory HTTP.

Requests go through L{treq.testing.StubTreq}, which drives the real
C{twisted.web} server and client over a memory reactor: no sockets.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Site

from b2bua.metrics import Metrics
from oam.site import OAMSite, make_site

VERSION = "1.2.3-test"
BASE = "http://oam.example/"


class SwitchStub:
    """The switch as the site sees it: readiness, drain and draining flags."""

    def __init__(self) -> None:
        self.listening = True
        self.is_draining = False
        self.drain_calls = 0
        self.drain_result: object = None
        self.drain_error: Exception | None = None
        self.readiness_error: Exception | None = None

    def readiness(self) -> bool:
        """Return whether the SIP listeners are up, or raise as configured."""
        if self.readiness_error is not None:
            raise self.readiness_error
        return self.listening

    def drain(self) -> object:
        """Record the call and answer as configured."""
        self.drain_calls += 1
        if self.drain_error is not None:
            raise self.drain_error
        return self.drain_result

    def draining(self) -> bool:
        """Return whether a drain is going on."""
        return self.is_draining


class Reply:
    """A fully read response: status, headers and body."""

    def __init__(self, code: int, headers: Any, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        """Return the single value of a response header, or C{None}."""
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def json(self) -> Any:
        """Decode the body as JSON."""
        return json.loads(self.body.decode("utf-8"))


class Things(Resource):
    """A stand-in for a REST collection mounted under /api/v1/."""

    def __init__(self) -> None:
        super().__init__()
        self.putChild(b"one", _Leaf(b'{"id": 1}'))

    def render_GET(self, request: IRequest) -> bytes:
        """List the things."""
        return b'{"things": [1]}'


class _Leaf(Resource):
    """A fixed JSON answer."""

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def render_GET(self, request: IRequest) -> bytes:
        """Answer the fixed body."""
        return self.body


class Broken(Resource):
    """A mounted resource with bugs in rendering and in child lookup."""

    def getChild(self, path: bytes, request: IRequest) -> Resource:
        """Fail to look a child up."""
        raise KeyError("secret-key-detail")

    def render_GET(self, request: IRequest) -> bytes:
        """Fail to render."""
        raise RuntimeError("secret-render-detail")


class BrokenCollector:
    """A collector that fails at scrape time."""

    def describe(self) -> list[object]:
        """Describe nothing, so registering does not collect."""
        return []

    def collect(self) -> list[object]:
        """Fail."""
        raise RuntimeError("secret-collector-detail")


class SiteTestCase(SynchronousTestCase):
    """Builds a site around a L{SwitchStub} and talks to it with StubTreq."""

    def setUp(self) -> None:
        """Build the metrics, the switch stub, the site and the client."""
        self.metrics = Metrics()
        self.switch = SwitchStub()
        self.oam = OAMSite(
            self.metrics,
            readiness=self.switch.readiness,
            drain=self.switch.drain,
            draining=self.switch.draining,
            version=VERSION,
        )
        self.client = StubTreq(self.oam.resource)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Reply:
        """Send one request and return the complete reply."""
        response = self.successResultOf(
            self.client.request(method, BASE + path.lstrip("/"), headers=headers))
        body = self.successResultOf(treq.content(response))
        return Reply(response.code, response.headers, body)

    def assertJSONError(self, reply: Reply, code: int, error: str) -> dict[str, Any]:
        """Assert a JSON error answer with C{code} and C{error}; return its body."""
        self.assertEqual(reply.code, code)
        self.assertEqual(reply.header("Content-Type"), "application/json")
        body = reply.json()
        self.assertEqual(body["error"], error)
        self.assertNotIn(b"Traceback", reply.body)
        self.assertNotIn(b"secret", reply.body)
        return body

    def errors(self, route: str) -> float | None:
        """Return C{b2bua_oam_http_errors_total} for C{route}."""
        return self.metrics.registry.get_sample_value(
            "b2bua_oam_http_errors_total", {"route": route})


class HealthTests(SiteTestCase):
    """GET /health."""

    def test_ok(self) -> None:
        """/health answers 200 with the status and the version, as JSON."""
        reply = self.request("GET", "/health")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Content-Type"), "application/json")
        self.assertEqual(reply.header("Cache-Control"), "no-store")
        self.assertEqual(reply.json(), {"status": "ok", "version": VERSION})

    def test_ok_while_not_ready(self) -> None:
        """Health is about the process: it stays 200 while starting or draining."""
        self.switch.listening = False
        self.switch.is_draining = True
        self.assertEqual(self.request("GET", "/health").code, 200)

    def test_trailing_slash(self) -> None:
        """/health/ is the same resource."""
        self.assertEqual(self.request("GET", "/health/").json()["status"], "ok")

    def test_head(self) -> None:
        """HEAD /health answers 200 with no body."""
        reply = self.request("HEAD", "/health")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.body, b"")

    def test_wrong_method(self) -> None:
        """POST /health answers 405 JSON with an Allow header."""
        reply = self.request("POST", "/health")
        body = self.assertJSONError(reply, 405, "method not allowed")
        self.assertEqual(reply.header("Allow"), "GET, HEAD")
        self.assertEqual(body["allowed"], ["GET", "HEAD"])
        self.assertEqual(body["method"], "POST")

    def test_below_endpoint(self) -> None:
        """A path below /health is not found."""
        body = self.assertJSONError(self.request("GET", "/health/deep"), 404, "not found")
        self.assertEqual(body["path"], "/health/deep")


class ReadyTests(SiteTestCase):
    """GET /ready."""

    def test_ready(self) -> None:
        """Listening and not draining: 200 {"ready": true}."""
        reply = self.request("GET", "/ready")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.json(), {"ready": True})

    def test_starting(self) -> None:
        """Before the SIP listeners are up: 503 with the reason starting."""
        self.switch.listening = False
        body = self.assertJSONError(self.request("GET", "/ready"), 503, "not ready")
        self.assertEqual(body, {"error": "not ready", "ready": False, "reason": "starting"})

    def test_draining(self) -> None:
        """While draining: 503 with the reason draining, though listening."""
        self.switch.is_draining = True
        body = self.assertJSONError(self.request("GET", "/ready"), 503, "not ready")
        self.assertEqual(body["reason"], "draining")

    def test_follows_state(self) -> None:
        """Readiness is read on every request, not cached."""
        self.switch.listening = False
        self.assertEqual(self.request("GET", "/ready").code, 503)
        self.switch.listening = True
        self.assertEqual(self.request("GET", "/ready").code, 200)

    def test_wrong_method(self) -> None:
        """DELETE /ready answers 405 with Allow."""
        reply = self.request("DELETE", "/ready")
        self.assertJSONError(reply, 405, "method not allowed")
        self.assertEqual(reply.header("Allow"), "GET, HEAD")

    def test_failing_probe(self) -> None:
        """A readiness callback that raises gives 500 JSON, logged and counted."""
        self.switch.readiness_error = RuntimeError("secret-probe-detail")
        body = self.assertJSONError(self.request("GET", "/ready"), 500, "internal error")
        self.assertEqual(body, {"error": "internal error"})
        self.assertEqual(self.errors("ready"), 1.0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class MetricsRouteTests(SiteTestCase):
    """GET /metrics."""

    def test_scrape(self) -> None:
        """/metrics answers the registry in the classic text format."""
        self.metrics.request_received("INVITE")
        self.metrics.request_received("NOPE")
        reply = self.request("GET", "/metrics")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Content-Type"), CONTENT_TYPE_PLAIN_0_0_4)
        self.assertIn(b'b2bua_sip_requests_total{method="INVITE"} 1.0\n', reply.body)
        self.assertIn(b'b2bua_sip_requests_total{method="other"} 1.0\n', reply.body)
        self.assertIn(b"# TYPE b2bua_call_setup_seconds histogram\n", reply.body)

    def test_openmetrics(self) -> None:
        """A scraper asking for OpenMetrics gets OpenMetrics."""
        reply = self.request(
            "GET", "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
        self.assertEqual(reply.code, 200)
        self.assertTrue(reply.header("Content-Type").startswith("application/openmetrics-text"))
        self.assertTrue(reply.body.endswith(b"# EOF\n"))

    def test_bad_accept(self) -> None:
        """An Accept header prometheus_client cannot parse still gets the text format."""
        reply = self.request("GET", "/metrics", {"Accept": "text/plain; version=x"})
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.header("Content-Type"), CONTENT_TYPE_PLAIN_0_0_4)

    def test_wrong_method(self) -> None:
        """PUT /metrics answers 405."""
        self.assertJSONError(self.request("PUT", "/metrics"), 405, "method not allowed")

    def test_broken_collector(self) -> None:
        """A collector failing during the scrape gives 500 JSON, counted under metrics."""
        self.metrics.registry.register(BrokenCollector())
        self.assertJSONError(self.request("GET", "/metrics"), 500, "internal error")
        self.assertEqual(self.errors("metrics"), 1.0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class DrainTests(SiteTestCase):
    """POST /drain."""

    def test_drain(self) -> None:
        """POST /drain calls drain() and answers 202 {"draining": true}."""
        reply = self.request("POST", "/drain")
        self.assertEqual(reply.code, 202)
        self.assertEqual(reply.json(), {"draining": True})
        self.assertEqual(self.switch.drain_calls, 1)

    def test_idempotent(self) -> None:
        """A second POST answers 202 again and does not call drain() again."""
        self.switch.drain_result = Deferred()
        self.assertEqual(self.request("POST", "/drain").code, 202)
        self.assertEqual(self.request("POST", "/drain").code, 202)
        self.assertEqual(self.switch.drain_calls, 1)

    def test_already_draining(self) -> None:
        """If the switch already drains (say on SIGTERM), drain() is not called."""
        self.switch.is_draining = True
        self.assertEqual(self.request("POST", "/drain").code, 202)
        self.assertEqual(self.switch.drain_calls, 0)

    def test_deferred_success(self) -> None:
        """A drain() returning a Deferred that succeeds answers 202."""
        self.switch.drain_result = succeed(None)
        self.assertEqual(self.request("POST", "/drain").code, 202)

    def test_deferred_failure_logged(self) -> None:
        """A drain() whose Deferred fails is logged, not left unhandled."""
        self.switch.drain_result = fail(RuntimeError("drain went wrong"))
        self.assertEqual(self.request("POST", "/drain").code, 202)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_drain_raises(self) -> None:
        """drain() raising gives 500 JSON, is counted, and a retry calls it again."""
        self.switch.drain_error = RuntimeError("secret-drain-detail")
        self.assertJSONError(self.request("POST", "/drain"), 500, "internal error")
        self.assertEqual(self.errors("drain"), 1.0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.switch.drain_error = None
        self.assertEqual(self.request("POST", "/drain").code, 202)
        self.assertEqual(self.switch.drain_calls, 2)

    def test_wrong_method(self) -> None:
        """GET /drain answers 405 with Allow: POST and does not drain."""
        reply = self.request("GET", "/drain")
        self.assertJSONError(reply, 405, "method not allowed")
        self.assertEqual(reply.header("Allow"), "POST")
        self.assertEqual(self.switch.drain_calls, 0)

    def test_cross_origin(self) -> None:
        """A POST carrying Origin (a browser's cross-site form) is refused with 403."""
        reply = self.request("POST", "/drain", {"Origin": "http://evil.example"})
        body = self.assertJSONError(reply, 403, "forbidden")
        self.assertIn("cross-origin", body["reason"])
        self.assertEqual(self.switch.drain_calls, 0)

    def test_ready_after_drain(self) -> None:
        """Once the switch reports draining, /ready turns 503."""
        self.request("POST", "/drain")
        self.switch.is_draining = True
        self.assertEqual(self.request("GET", "/ready").json()["reason"], "draining")


class NotFoundTests(SiteTestCase):
    """Unknown paths answer 404 JSON."""

    def test_unknown(self) -> None:
        """An unknown path answers 404 with the path echoed."""
        body = self.assertJSONError(self.request("GET", "/nope"), 404, "not found")
        self.assertEqual(body, {"error": "not found", "path": "/nope"})

    def test_root(self) -> None:
        """The root itself is not a page."""
        body = self.assertJSONError(self.request("GET", "/"), 404, "not found")
        self.assertEqual(body["path"], "/")

    def test_any_method(self) -> None:
        """Unknown paths are 404 whatever the method."""
        self.assertJSONError(self.request("POST", "/nope"), 404, "not found")

    def test_long_path_truncated(self) -> None:
        """A very long path is echoed only in part."""
        body = self.assertJSONError(self.request("GET", "/" + "a" * 5000), 404, "not found")
        self.assertLess(len(body["path"]), 600)

    def test_escaped_path(self) -> None:
        """Markup in the path comes back inside JSON, as data."""
        reply = self.request("GET", "/%3Cscript%3E")
        self.assertJSONError(reply, 404, "not found")
        self.assertEqual(reply.header("X-Content-Type-Options"), "nosniff")


class APITests(SiteTestCase):
    """The /api/v1/ extension point."""

    def test_empty_api(self) -> None:
        """/api, /api/v1 and /api/v1/ are 404 JSON until something is mounted."""
        for path in ("/api", "/api/v1", "/api/v1/", "/api/v1/things", "/api/v2/things"):
            self.assertJSONError(self.request("GET", path), 404, "not found")

    def test_mounted(self) -> None:
        """A mounted resource answers under /api/v1/<name>, children included."""
        self.oam.mount_api("things", Things())
        self.assertEqual(self.request("GET", "/api/v1/things").json(), {"things": [1]})
        self.assertEqual(self.request("GET", "/api/v1/things/one").json(), {"id": 1})

    def test_mounted_render_error(self) -> None:
        """A mounted resource that raises while rendering gives 500 JSON, counted."""
        self.oam.mount_api("broken", Broken())
        self.assertJSONError(self.request("GET", "/api/v1/broken"), 500, "internal error")
        self.assertEqual(self.errors("api"), 1.0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_mounted_lookup_error(self) -> None:
        """A mounted resource that raises while finding a child gives 500 JSON, counted."""
        self.oam.mount_api("broken", Broken())
        self.assertJSONError(self.request("GET", "/api/v1/broken/x"), 500, "internal error")
        self.assertEqual(self.errors("api"), 1.0)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_bad_names(self) -> None:
        """Names that are not one plain path segment are refused."""
        for name in ("", "a/b", ".", "..", ".hidden", "x" * 65, "caf\u00e9", "a b"):
            self.assertRaises(ValueError, self.oam.mount_api, name, Things())

    def test_duplicate(self) -> None:
        """A name can be mounted only once."""
        self.oam.mount_api("things", Things())
        self.assertRaises(ValueError, self.oam.mount_api, "things", Things())


class MakeSiteTests(SynchronousTestCase):
    """L{make_site} and L{OAMSite.make_site} build a Site on the given reactor."""

    def test_make_site(self) -> None:
        """The site uses the reactor it is given and never shows tracebacks."""
        reactor = MemoryReactorClock()
        switch = SwitchStub()
        site = make_site(Metrics(), switch.readiness, switch.drain, switch.draining,
                         VERSION, reactor)
        self.assertIsInstance(site, Site)
        self.assertIs(site.reactor, reactor)
        self.assertFalse(site.displayTracebacks)

    def test_serves_tree(self) -> None:
        """The Site from L{OAMSite.make_site} serves the instance's tree."""
        switch = SwitchStub()
        oam = OAMSite(Metrics(), switch.readiness, switch.drain, switch.draining, VERSION)
        site = oam.make_site(MemoryReactorClock())
        self.assertIs(site.resource, oam.resource)

    def test_instances_independent(self) -> None:
        """Two sites share nothing: each reports its own version and metrics."""
        switch = SwitchStub()
        first = OAMSite(Metrics(), switch.readiness, switch.drain, switch.draining, "1")
        second = OAMSite(Metrics(), switch.readiness, switch.drain, switch.draining, "2")
        first.mount_api("things", Things())
        for oam, version in ((first, "1"), (second, "2")):
            response = self.successResultOf(StubTreq(oam.resource).get(BASE + "health"))
            body = self.successResultOf(treq.json_content(response))
            self.assertEqual(body["version"], version)
        response = self.successResultOf(StubTreq(second.resource).get(BASE + "api/v1/things"))
        self.assertEqual(response.code, 404)
        self.successResultOf(treq.content(response))
