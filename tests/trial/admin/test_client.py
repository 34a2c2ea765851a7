"""Tests for L{b2bua.admin.client}: requests as the API contract wants them,
and every failure turned into one line (against L{FakeAPI} on loopback)."""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from b2bua.admin.client import AdminError, APIClient, APIError, Unreachable, describe_api_error
from tests.trial.admin.fakeapi import KEY, FakeAPI


def closed_port_url() -> str:
    """The URL of a loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class DescribeTests(SynchronousTestCase):
    """L{describe_api_error} says what the API's error bodies mean."""

    def test_unauthorized(self) -> None:
        """401 points at the key."""
        self.assertEqual(describe_api_error(401, {"error": "unauthorized"}, "customers"),
                         ("unauthorized (check --key)", ()))

    def test_forbidden(self) -> None:
        """403 names what was asked for."""
        message, _ = describe_api_error(403, {"error": "forbidden"}, "vendors")
        self.assertEqual(message, "vendors: forbidden (this key may not do that)")

    def test_not_found(self) -> None:
        """404 names the item."""
        self.assertEqual(describe_api_error(404, {"error": "not found"}, "customers/9")[0],
                         "customers/9: not found")

    def test_conflict_names_the_field(self) -> None:
        """409 names the field that is already taken."""
        self.assertEqual(
            describe_api_error(409, {"error": "conflict", "field": "sip_domain"}, "customers")[0],
            "customers: conflict: sip_domain already in use")

    def test_conflict_message(self) -> None:
        """409 with the API's message uses it (a delete of a row still in use)."""
        body = {"error": "conflict", "field": None,
                "message": "customer is still referred to by accounts"}
        self.assertEqual(describe_api_error(409, body, "customers/3")[0],
                         "customers/3: conflict: customer is still referred to by accounts")

    def test_conflict_without_field(self) -> None:
        """409 without a field still says conflict."""
        self.assertEqual(describe_api_error(409, {"error": "conflict"}, "customers")[0],
                         "customers: conflict")

    def test_validation_lists_every_field(self) -> None:
        """422 lists each field with its message, on one line."""
        body = {"error": "validation failed",
                "fields": {"sip_domain": "must match ^[a-z]+$", "currency": "required"}}
        self.assertEqual(describe_api_error(422, body, "customers"), (
            "customers: validation failed: sip_domain: must match ^[a-z]+$, "
            "currency: required", ()))

    def test_validation_rows(self) -> None:
        """422 with bad rows counts them and gives one detail line per row."""
        body = {"error": "validation failed", "rows": [
            {"row": 12, "column": "price", "message": "not a decimal"},
            {"row": 13, "message": "empty"}]}
        self.assertEqual(describe_api_error(422, body, "tariffs/import"), (
            "tariffs/import: validation failed: 2 bad rows",
            ("row 12, column price: not a decimal", "row 13: empty")))

    def test_server_error(self) -> None:
        """5xx says server error with the API's text."""
        self.assertEqual(describe_api_error(503, {"error": "database down"}, "customers")[0],
                         "customers: server error 503: database down")

    def test_body_not_json(self) -> None:
        """Without a JSON body the reason phrase is used."""
        self.assertEqual(describe_api_error(502, None, "customers", "Bad Gateway")[0],
                         "customers: server error 502: Bad Gateway")

    def test_other_status(self) -> None:
        """Any other status is reported with its number."""
        self.assertEqual(describe_api_error(418, {"error": "teapot"}, "x")[0],
                         "x: HTTP 418: teapot")


class RequestTests(SynchronousTestCase):
    """What L{APIClient} sends and what it returns."""

    def setUp(self) -> None:
        """A fake API and a client with the right key."""
        self.api = FakeAPI().start(self)
        self.client = APIClient(self.api.url, KEY, timeout=5)

    def test_list_page(self) -> None:
        """A page is a GET with the bearer key, paging and filters (None left out)."""
        self.api.add("customers", name="Acme", sip_domain="acme.example")
        answer = self.client.list_page("customers", limit=10, offset=0,
                                       sip_domain="acme.example", status=None)
        self.assertEqual(answer["total"], 1)
        seen = self.api.requests()[-1]
        self.assertEqual((seen.method, seen.path), ("GET", "/api/v1/customers"))
        self.assertEqual(seen.query, {"limit": "10", "offset": "0",
                                      "sip_domain": "acme.example"})
        self.assertEqual(seen.headers["authorization"], f"Bearer {KEY}")
        self.assertEqual(seen.headers["accept"], "application/json")

    def test_create_sends_json(self) -> None:
        """A create is a POST of a JSON body; the stored row comes back."""
        row = self.client.create("customers", {"name": "Acme", "sip_domain": "acme.example",
                                               "currency": "USD"})
        self.assertEqual(row["name"], "Acme")
        seen = self.api.requests("POST")[0]
        self.assertEqual(seen.headers["content-type"], "application/json")
        self.assertEqual(seen.json()["sip_domain"], "acme.example")

    def test_get_update_delete(self) -> None:
        """GET, PATCH and DELETE address one row; DELETE's 204 gives None."""
        row = self.api.add("api_keys", name="ops", revoked=False)
        self.assertEqual(self.client.get("api_keys", row["id"])["name"], "ops")
        self.assertTrue(self.client.update("api_keys", row["id"], {"revoked": True})["revoked"])
        self.assertIsNone(self.client.delete("api_keys", row["id"]))
        self.assertEqual([(s.method, s.path) for s in self.api.requests()][-1],
                         ("DELETE", f"/api/v1/api_keys/{row['id']}"))

    def test_list_all_pages_through(self) -> None:
        """L{APIClient.list_all} asks page after page until it has them all."""
        for n in range(5):
            self.api.add("accounts", customer_id=1, number=str(1000 + n))
        self.api.add("accounts", customer_id=2, number="2000")
        items = self.client.list_all("accounts", page=2, customer_id=1)
        self.assertEqual([i["number"] for i in items], ["1000", "1001", "1002", "1003", "1004"])
        self.assertEqual([s.query["offset"] for s in self.api.requests()], ["0", "2", "4"])

    def test_import_tariff(self) -> None:
        """A rate file is POSTed as text/csv with the name and currency in the query."""
        tariff = self.client.import_tariff(b"prefix,price\n1,0.01\n", name="retail",
                                           currency="USD")
        self.assertEqual(tariff["document"], {"entries": [{"prefix": "1"}]})
        seen = self.api.requests("POST")[0]
        self.assertEqual(seen.path, "/api/v1/tariffs/import")
        self.assertEqual(seen.query, {"name": "retail", "currency": "USD"})
        self.assertEqual(seen.body, b"prefix,price\n1,0.01\n")

    def test_error_status(self) -> None:
        """An error status raises L{APIError} with the status and the body."""
        error = self.assertRaises(APIError, self.client.get, "customers", 42)
        self.assertEqual((error.status, error.body, error.message, error.exit_code),
                         (404, {"error": "not found"}, "customers/42: not found", 1))

    def test_wrong_key(self) -> None:
        """A wrong key gives 401 and a message that does not repeat the key."""
        client = APIClient(self.api.url, "wrong-secret", timeout=5)
        error = self.assertRaises(APIError, client.list_page, "customers")
        self.assertEqual(error.message, "unauthorized (check --key)")
        self.assertNotIn("wrong-secret", error.message)

    def test_not_json(self) -> None:
        """A 200 that is not JSON is reported, not decoded into nonsense."""
        self.api.fail("GET", "customers", 200, b"<html>hello</html>")
        error = self.assertRaises(AdminError, self.client.list_page, "customers")
        self.assertIn("is not JSON", error.message)

    def test_ids_are_quoted(self) -> None:
        """An id is one path segment, whatever it holds."""
        self.assertRaises(APIError, self.client.get, "customers", "a/b")
        self.assertEqual(self.api.requests()[-1].path, "/api/v1/customers/a%2Fb")


class UnreachableTests(SynchronousTestCase):
    """Failures to reach the switch become one line and exit status 3."""

    def test_connection_refused(self) -> None:
        """Nobody listening: connection refused, naming the URL."""
        url = closed_port_url()
        error = self.assertRaises(Unreachable, APIClient(url, KEY, timeout=5).list_page,
                                  "customers")
        self.assertEqual(error.message, f"cannot reach {url}: connection refused")
        self.assertEqual(error.exit_code, 3)

    def test_timeout(self) -> None:
        """A switch that accepts but never answers times out after C{timeout}."""
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(1)
            url = f"http://127.0.0.1:{silent.getsockname()[1]}"
            error = self.assertRaises(Unreachable, APIClient(url, KEY, timeout=0.2).list_page,
                                      "customers")
        self.assertEqual(error.message, f"cannot reach {url}: no answer within 0.2 s")

    def test_bad_url(self) -> None:
        """Only http(s) URLs with a host are accepted."""
        for url in ("ftp://127.0.0.1", "127.0.0.1:8080", "http://"):
            error = self.assertRaises(AdminError, APIClient, url, KEY)
            self.assertIn("use http://HOST:PORT", error.message)
