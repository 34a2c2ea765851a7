"""CRUD of every collection through the REST API, and every error answer
the generic resources give (L{oam.api.collection}, L{oam.api.endpoint})."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest

from b2bua.db.model import ENTITIES, entity
from b2bua.metrics import Metrics
from oam.api import reporter
from tests.trial.db.support import UPDATES
from tests.trial.oam.api.support import ADMIN, TARIFF, Api, Reply, open_api

#: Updates the API accepts (the storage tests' tariff update is no tariff).
API_UPDATES = {**UPDATES, "tariff": {"document": {**TARIFF, "timezone": "UTC"}}}


class ApiTestCase(TestCase):
    """A fresh API over a fresh database, with an admin key."""

    timeout = 60

    async def setUp(self) -> None:
        """Open the API and make an admin key."""
        self.api: Api = await open_api(self)
        self.admin = await self.api.key("admin")

    async def call(self, method: str, path: str, **kwargs: Any) -> Reply:
        """A request with the admin key (unless another C{key} is given)."""
        kwargs.setdefault("key", self.admin)
        return await self.api.request(method, path, **kwargs)

    async def payload(self, name: str, **overrides: Any) -> dict[str, Any]:
        """A valid create body for C{name} (parents made directly)."""
        if name == "tariff":
            overrides.setdefault("document", TARIFF)
        values = await self.api.build.payload(name, **overrides)
        return values

    def assertError(self, reply: Reply, code: int, error: str) -> dict[str, Any]:
        """A JSON error answer of C{code} and C{error}; its body."""
        self.assertEqual((reply.code, reply.header("Content-Type")), (code, "application/json"),
                         reply.body)
        body = reply.json()
        self.assertEqual(body["error"], error)
        self.assertNotIn(b"Traceback", reply.body)
        return body


class CrudTests(ApiTestCase):
    """Create, read, list, update and delete each entity as an admin."""

    async def test_every_entity(self) -> None:
        """Every collection takes a create (201, Location, the row without
        secrets), serves the row and lists it, and (unless immutable) takes
        a partial update and a delete."""
        for e in ENTITIES:
            body = await self.payload(e.name)
            created = await self.call("POST", e.collection, body=body)
            self.assertEqual(created.code, 201, (e.name, created.body))
            row = created.json()
            self.assertEqual(created.header("Location"), f"/api/v1/{e.collection}/{row['id']}")
            hidden = {f.name for f in e.fields if not f.readable} | {
                f.name for f in e.write_only}
            self.assertFalse(hidden & set(row), e.name)
            got = await self.call("GET", f"{e.collection}/{row['id']}")
            self.assertEqual(got.code, 200)
            self.assertEqual(got.json(), {k: v for k, v in row.items() if k != "key"})
            listed = await self.call("GET", e.collection, params={"order": "-id", "limit": 2})
            self.assertIn(got.json(), listed.json()["items"], e.name)
            item = f"{e.collection}/{row['id']}"
            if e.immutable:
                for method in ("PATCH", "DELETE"):
                    reply = await self.call(method, item, body={})
                    self.assertError(reply, 405, "method not allowed")
                    self.assertEqual(reply.header("Allow"), "GET, HEAD")
                continue
            changed = await self.call("PATCH", item, body=API_UPDATES[e.name])
            self.assertEqual(changed.code, 200, (e.name, changed.body))
            for name, value in API_UPDATES[e.name].items():
                self.assertEqual(changed.json()[name], value if not isinstance(value, int)
                                 or e.field(name).type != "decimal" else str(value))
            deleted = await self.call("DELETE", item)
            self.assertEqual((deleted.code, deleted.body), (204, b""))
            self.assertError(await self.call("GET", item), 404, "not found")

    async def test_types_on_the_wire(self) -> None:
        """Decimals are strings, exactly as given; times are ISO 8601 with Z;
        dates YYYY-MM-DD; JSON fields as stored."""
        body = await self.payload("card_batch", face_value="12345678901234.123456")
        row = (await self.call("POST", "card_batches", body=body)).json()
        self.assertEqual(row["face_value"], "12345678901234.123456")
        self.assertRegex(row["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
        invoice = (await self.call("POST", "invoices", body=await self.payload(
            "invoice", lines=[{"text": "é", "amount": "1.50"}]))).json()
        self.assertEqual(invoice["period_start"], "2024-01-01")
        self.assertEqual(invoice["lines"], [{"text": "é", "amount": "1.50"}])

    async def test_api_key_shown_once(self) -> None:
        """Creating an API key answers the key itself, once; it works."""
        created = await self.call("POST", "api_keys", body={"name": "ops", "role": "admin"})
        self.assertEqual(created.code, 201)
        key = created.json()["key"]
        self.assertTrue(key.startswith("b2k_"))
        self.assertEqual(created.json()["prefix"], key[:12])
        again = await self.call("GET", f"api_keys/{created.json()['id']}")
        self.assertNotIn("key", again.json())
        self.assertEqual((await self.call("GET", "vendors", key=key)).code, 200)

    async def test_head(self) -> None:
        """HEAD answers like GET, without a body."""
        row = await self.api.build.make("vendor")
        reply = await self.call("HEAD", f"vendors/{row['id']}")
        self.assertEqual((reply.code, reply.body), (200, b""))

    async def test_trailing_slash(self) -> None:
        """C{/C/} is the collection, C{/C/<id>/} the row."""
        row = await self.api.build.make("vendor")
        self.assertEqual((await self.call("GET", "vendors/")).json()["total"], 1)
        self.assertEqual((await self.call("GET", f"vendors/{row['id']}/")).code, 200)


class ListTests(ApiTestCase):
    """Paging, ordering and filtering."""

    async def setUp(self) -> None:
        """Five vendors, two of them suspended."""
        await super().setUp()
        for n in range(5):
            await self.api.build.make("vendor", status="suspended" if n % 2 else "active")

    async def test_default_page(self) -> None:
        """Without arguments: the first 50 rows by id, with the total."""
        body = (await self.call("GET", "vendors")).json()
        self.assertEqual((body["total"], body["limit"], body["offset"]), (5, 50, 0))
        self.assertEqual([r["id"] for r in body["items"]], [1, 2, 3, 4, 5])

    async def test_paging_and_order(self) -> None:
        """limit, offset and order (- for descending) select the page."""
        body = (await self.call("GET", "vendors", params={
            "limit": 2, "offset": 1, "order": "-id"})).json()
        self.assertEqual([r["id"] for r in body["items"]], [4, 3])
        self.assertEqual((body["total"], body["limit"], body["offset"]), (5, 2, 1))
        body = (await self.call("GET", "vendors", params={"limit": 500})).json()
        self.assertEqual(body["limit"], 500)

    async def test_filters(self) -> None:
        """A filterable field equal to a value; null means "has none"."""
        body = (await self.call("GET", "vendors", params={"status": "suspended"})).json()
        self.assertEqual([r["id"] for r in body["items"]], [2, 4])
        self.assertEqual(body["total"], 2)
        reseller = await self.api.build.make("reseller")
        await self.api.build.make("customer", reseller_id=reseller["id"])
        await self.api.build.make("customer")
        orphans = (await self.call("GET", "customers", params={"reseller_id": "null"})).json()
        self.assertEqual([r["reseller_id"] for r in orphans["items"]], [None])
        mine = (await self.call("GET", "customers", params={"reseller_id": reseller["id"]}))
        self.assertEqual(mine.json()["total"], 1)

    async def test_bad_parameters_named(self) -> None:
        """Every bad query parameter is named in one 422."""
        reply = await self.call("GET", "vendors", params={
            "limit": 0, "offset": -1, "order": "secret", "status": "dormant", "colour": "red"})
        body = self.assertError(reply, 422, "validation failed")
        self.assertEqual(set(body["fields"]), {"limit", "offset", "order", "status", "colour"})
        for limit in ("501", "x", "", "1.5"):
            reply = await self.call("GET", "vendors", params={"limit": limit})
            self.assertEqual(list(self.assertError(reply, 422, "validation failed")["fields"]),
                             ["limit"])

    async def test_repeated_parameter(self) -> None:
        """A parameter given twice is refused, not silently picked."""
        reply = await self.call("GET", "vendors", params={"status": ["active", "suspended"]})
        self.assertEqual(self.assertError(reply, 422, "validation failed")["fields"],
                         {"status": "given more than once"})

    async def test_secret_fields_are_no_filter(self) -> None:
        """Fields the API never shows cannot be probed by filtering."""
        reply = await self.call("GET", "api_keys", params={"key_hash": "00"})
        self.assertIn("key_hash", self.assertError(reply, 422, "validation failed")["fields"])


class BodyErrorTests(ApiTestCase):
    """What is wrong with a body, and how the API says so."""

    async def test_malformed_json(self) -> None:
        """Not JSON, NaN, bad UTF-8, lone surrogates: 400 malformed JSON."""
        for raw in (b"{", b"", b'{"name": NaN}', b'{"name": "\xff"}', b'{"name": "\\ud800"}',
                    b"[" * 100000):
            reply = await self.call("POST", "vendors", raw=raw, content_type="application/json")
            self.assertError(reply, 400, "malformed JSON")
        self.assertEqual((await self.call("GET", "vendors")).json()["total"], 0)

    async def test_content_type(self) -> None:
        """A body that is not application/json (UTF-8) is 415."""
        for kind in (None, "text/plain", "application/json; charset=latin-1", "text/csv"):
            reply = await self.call("POST", "vendors", raw=b'{"name": "v"}', content_type=kind)
            body = self.assertError(reply, 415, "unsupported media type")
            self.assertEqual(body["expected"], ["application/json"])
        reply = await self.call("POST", "vendors", raw=b'{"name": "v"}',
                                content_type="Application/JSON; charset=UTF-8")
        self.assertEqual(reply.code, 201)

    async def test_too_large(self) -> None:
        """A body over 1 MiB is 413."""
        raw = b'{"name": "' + b"x" * (1024 * 1024) + b'"}'
        reply = await self.call("POST", "vendors", raw=raw, content_type="application/json")
        self.assertError(reply, 413, "request too large")

    async def test_every_bad_field_named(self) -> None:
        """One 422 names each bad field, unknown and read-only ones too."""
        reply = await self.call("POST", "customers", body={
            "sip_domain": "bad domain", "currency": "euro", "credit_limit": 0.5,
            "id": 7, "colour": "red", "status": "asleep"})
        body = self.assertError(reply, 422, "validation failed")
        self.assertEqual(set(body["fields"]), {"name", "sip_domain", "currency", "credit_limit",
                                               "id", "colour", "status"})
        for name in ("[1, 2]", '"text"', "null"):
            reply = await self.call("POST", "vendors", raw=name.encode(),
                                    content_type="application/json")
            self.assertEqual(self.assertError(reply, 422, "validation failed")["fields"],
                             {"body": "must be an object"})

    async def test_timestamp_out_of_range(self) -> None:
        """Timestamps far in the past are refused, not stored unreadably."""
        body = await self.payload("cdr", started_at="0038-08-07T03:03:38-06:24")
        reply = await self.call("POST", "cdrs", body=body)
        self.assertIn("started_at", self.assertError(reply, 422, "validation failed")["fields"])
        body = await self.payload("cdr", started_at="0001-01-01T00:00:00+01:00")
        reply = await self.call("POST", "cdrs", body=body)
        self.assertIn("started_at", self.assertError(reply, 422, "validation failed")["fields"])

    async def test_patch_checks_the_body(self) -> None:
        """A partial update is checked like a create (nothing is required)."""
        row = await self.api.build.make("vendor")
        reply = await self.call("PATCH", f"vendors/{row['id']}", body={"status": "gone"})
        self.assertEqual(self.assertError(reply, 422, "validation failed")["fields"],
                         {"status": "must be one of active, suspended, closed"})
        reply = await self.call("PATCH", f"vendors/{row['id']}", body={})
        self.assertEqual(reply.json()["status"], "active")

    async def test_missing_reference(self) -> None:
        """An admin naming a parent that does not exist gets 409 naming it."""
        reply = await self.call("POST", "accounts", body={
            "customer_id": 999, "number": "100", "sip_username": "u", "password": "secret!"})
        self.assertEqual(self.assertError(reply, 409, "conflict")["field"], "customer_id")


class StatusTests(ApiTestCase):
    """404, 405, 409 and 500."""

    async def test_not_found(self) -> None:
        """Unknown collections, ids that are no ids, and missing rows: 404."""
        for path in ("nothing", "vendors/0", "vendors/abc", "vendors/-1", "vendors/1.5",
                     "vendors/99", "vendors/%C2%B2", "vendors/99999999999999999999",
                     "vendors/1/more"):
            self.assertError(await self.call("GET", path), 404, "not found")
        for method in ("PATCH", "DELETE"):
            self.assertError(await self.call(method, "vendors/99", body={}), 404, "not found")

    async def test_method_not_allowed(self) -> None:
        """Other methods: 405 JSON with Allow."""
        reply = await self.call("PUT", "vendors", body={})
        body = self.assertError(reply, 405, "method not allowed")
        self.assertEqual(reply.header("Allow"), "GET, HEAD, POST")
        self.assertEqual(body["allowed"], ["GET", "HEAD", "POST"])
        reply = await self.call("POST", "vendors/1", body={})
        self.assertEqual(reply.header("Allow"), "DELETE, GET, HEAD, PATCH")
        reply = await self.call("DELETE", "openapi.json")
        self.assertEqual(reply.header("Allow"), "GET, HEAD")

    async def test_conflicts(self) -> None:
        """A taken unique value and a row still referred to: 409 naming the field."""
        await self.call("POST", "vendors", body={"name": "carrier"})
        reply = await self.call("POST", "vendors", body={"name": "carrier"})
        self.assertEqual(self.assertError(reply, 409, "conflict")["field"], "name")
        account = await self.api.build.make("account")
        reply = await self.call("DELETE", f"customers/{account['customer_id']}")
        self.assertEqual(self.assertError(reply, 409, "conflict")["field"], None)

    async def test_unexpected_error(self) -> None:
        """A bug answers 500 JSON without details and is counted and logged."""

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("secret detail")

        self.patch(self.api.repos["vendors"], "list", broken)
        reply = await self.call("GET", "vendors")
        self.assertEqual(self.assertError(reply, 500, "internal error"),
                         {"error": "internal error"})
        self.assertNotIn(b"secret", reply.body)
        self.assertEqual(self.api.errors(), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_audit_names_the_key(self) -> None:
        """Changes made through the API are audited as key:<id>."""
        keys = (await self.api.repos["api_keys"].list(ADMIN)).rows
        await self.call("POST", "vendors", body={"name": "carrier"})
        audit = (await self.call("GET", "audit", params={"entity": "vendor"})).json()["items"]
        self.assertEqual([a["actor"] for a in audit], [f"key:{keys[0]['id']}"])
        self.assertEqual(entity("audit_record").collection, "audit")


class LifecycleTests(ApiTestCase):
    """Answers around the edges of a request's life."""

    async def test_database_closed(self) -> None:
        """While the switch stops (database closed): 503 with Retry-After."""
        await self.api.database.close()
        reply = await self.call("GET", "vendors")
        self.assertEqual(self.assertError(reply, 503, "unavailable")["reason"], "shutting down")
        self.assertEqual(reply.header("Retry-After"), "5")
        self.assertEqual(self.api.errors(), 0)

    async def test_client_gone(self) -> None:
        """A client that hangs up before the answer gets nothing written, and
        nothing fails on the server."""
        d = self.api.client.request("GET", "http://oam.test/api/v1/vendors",
                                    headers={"Authorization": [f"Bearer {self.admin}"]})
        self.api.client.flush()
        d.cancel()
        d.addErrback(lambda failure: None)
        for _ in range(50):
            self.api.client.flush()
            await deferLater(reactor, 0.002, lambda: None)
        self.assertEqual(self.api.errors(), 0)
        self.assertEqual((await self.call("GET", "vendors")).code, 200)


class ReporterTests(SynchronousTestCase):
    """L{oam.api.reporter}: where unexpected errors are told."""

    def test_metrics(self) -> None:
        """Given the switch's Metrics, errors are counted under route api and logged."""
        metrics = Metrics()
        report = reporter(metrics)
        request = DummyRequest([b"vendors"])
        request.path = b"/api/v1/vendors"
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            report("api", Failure(), request)
        self.assertEqual(metrics.registry.get_sample_value(
            "b2bua_oam_http_errors_total", {"route": "api"}), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_callable(self) -> None:
        """An error reporter is used as it is; anything else is refused."""

        def report(route: str, failure: Failure, request: Any) -> None:
            """Nothing."""

        self.assertIs(reporter(report), report)
        self.assertRaises(TypeError, reporter, object())
