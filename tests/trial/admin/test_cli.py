"""Tests for L{b2bua.admin.cli} and L{b2bua.admin.commands}: the command line,
each API command against L{FakeAPI} on loopback (requests sent, tables,
C{--json}), and the one-line errors with their exit statuses."""

from __future__ import annotations

import io
import json
import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from b2bua.admin.cli import Console, build_parser, main
from b2bua.admin.commands import MAX_EXTENSIONS, UsageError, plan_extensions
from b2bua.admin.migrate import MigrationReport
from tests.trial.admin.fakeapi import KEY, FakeAPI
from tests.trial.admin.test_client import closed_port_url


def _no_migrations(url: str) -> MigrationReport:
    """A migrator that must not be called by API commands."""
    raise AssertionError("migrate was not asked for")


class CLITestCase(SynchronousTestCase):
    """Runs C{main} in-process against a fresh L{FakeAPI}."""

    def setUp(self) -> None:
        """A fake API; the URL and key come from the environment."""
        self.api = FakeAPI().start(self)
        self.environ = {"B2BUA_URL": self.api.url, "B2BUA_API_KEY": KEY}
        directory = self.mktemp()
        os.makedirs(directory)
        self.key_file = os.path.join(directory, "admin-api-key")

    def cli(self, *argv: str, stdin: bytes = b"", environ: dict[str, str] | None = None,
            migrator: Any = _no_migrations) -> tuple[int, str, str]:
        """Run one command line; return its exit status, stdout and stderr."""
        out, err = io.StringIO(), io.StringIO()
        console = Console(io.BytesIO(stdin), out, err,
                          self.environ if environ is None else environ,
                          key_file=self.key_file, migrator=migrator)
        return main(list(argv), console), out.getvalue(), err.getvalue()

    def assertFails(self, result: tuple[int, str, str], code: int, line: str) -> None:
        """C{result} is exit status C{code} with exactly C{line} on stderr."""
        self.assertEqual((result[0], result[2]), (code, f"b2bua-admin: {line}\n"))

    def customer(self, **values: Any) -> dict[str, Any]:
        """A customer already in the fake API."""
        return self.api.add("customers", **{"name": "Acme", "sip_domain": "acme.example",
                                            "currency": "USD", "status": "active", **values})


class ParserTests(CLITestCase):
    """The argument parser and its one-line usage errors."""

    def test_global_options_anywhere(self) -> None:
        """Global options work before the command and after it."""
        parser = build_parser()
        before = parser.parse_args(["--json", "--url", "http://h:1", "customer", "list"])
        after = parser.parse_args(["customer", "list", "--json", "--url", "http://h:1"])
        for args in (before, after):
            self.assertEqual((args.json, args.url, args.group, args.action),
                             (True, "http://h:1", "customer", "list"))

    def test_defaults(self) -> None:
        """Without options: no JSON, paging 50 from 0, URL and key left to the environment."""
        args = build_parser().parse_args(["calls", "list"])
        self.assertEqual((args.json, args.limit, args.offset, args.url, args.key, args.timeout),
                         (False, 50, 0, None, None, None))

    def test_missing_arguments(self) -> None:
        """A missing option is one line naming the command, exit status 2."""
        self.assertFails(self.cli("customer", "create", "--name", "A"), 2,
                         "customer create: the following arguments are required: --domain, "
                         "--currency (see 'b2bua-admin customer create --help')")

    def test_unknown_command(self) -> None:
        """An unknown command is one line, exit status 2."""
        code, _, err = self.cli("frobnicate")
        self.assertEqual(code, 2)
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("invalid choice: 'frobnicate'", err)

    def test_help(self) -> None:
        """C{--help} prints the usage to stdout and exits 0."""
        code, out, err = self.cli("did", "add", "--help")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("usage: b2bua-admin did add", out)

    def test_bad_values(self) -> None:
        """Currencies, limits, ids and timeouts are checked before anything is sent."""
        for argv in (["customer", "create", "--name", "A", "--domain", "a", "--currency", "US"],
                     ["customer", "list", "--limit", "0"],
                     ["customer", "create", "--name", "A", "--domain", "a", "--currency", "USD",
                      "--timezone", "Mars/Base"],
                     ["apikey", "revoke", "x"],
                     ["--timeout", "-1", "calls", "list"],
                     ["apikey", "create", "--name", "k", "--role", "root"]):
            code, _, err = self.cli(*argv)
            self.assertEqual((code, err.count("\n")), (2, 1), argv)
        self.assertEqual(self.api.seen, [])

    def test_key_from_option(self) -> None:
        """C{--key} wins over B2BUA_API_KEY; C{--url} over B2BUA_URL."""
        environ = {"B2BUA_URL": closed_port_url(), "B2BUA_API_KEY": "stale"}
        code, _, _ = self.cli("customer", "list", "--key", KEY, "--url", self.api.url,
                              environ=environ)
        self.assertEqual(code, 0)

    def test_key_from_file(self) -> None:
        """Without --key and B2BUA_API_KEY the key file is read."""
        with open(self.key_file, "w") as f:
            f.write(KEY + "\n")
        code, _, _ = self.cli("customer", "list", environ={"B2BUA_URL": self.api.url})
        self.assertEqual(code, 0)
        self.assertEqual(self.api.seen[0].headers["authorization"], f"Bearer {KEY}")

    def test_no_key(self) -> None:
        """No key anywhere: exit status 2 before anything is sent."""
        self.assertFails(self.cli("customer", "list", environ={"B2BUA_URL": self.api.url}), 2,
                         "no API key: give --key, set B2BUA_API_KEY or write one to "
                         f"./{self.key_file}")
        self.assertEqual(self.api.seen, [])


class PlanTests(SynchronousTestCase):
    """L{plan_extensions} turns the extension options into a checked list."""

    def test_range_keeps_width(self) -> None:
        """A range keeps leading zeros; comma-separated parts add up."""
        plan = plan_extensions("0098-0100,2000", "pw", None)
        self.assertEqual([(e.number, e.password, e.generated) for e in plan],
                         [("0098", "pw", False), ("0099", "pw", False), ("0100", "pw", False),
                          ("2000", "pw", False)])

    def test_generated_passwords(self) -> None:
        """Without a password each extension gets its own generated one."""
        plan = plan_extensions("1000-1002", None, ["1003:given", "1004"])
        self.assertEqual([e.generated for e in plan], [True, True, True, False, True])
        self.assertEqual(plan[3].password, "given")
        generated = [e.password for e in plan if e.generated]
        self.assertEqual(len(set(generated)), 4)
        self.assertTrue(all(len(p) == 16 and p.isalnum() for p in generated))

    def test_nothing(self) -> None:
        """No extension options: no extensions."""
        self.assertEqual(plan_extensions(None, None, None), [])

    def test_refused(self) -> None:
        """Malformed, repeated, oversized and contradictory lists are usage errors."""
        for ranges, password, pairs in (
                ("1019-1000", None, None), ("100-1000", None, None), ("1a-1b", None, None),
                ("1000-1001", None, ["1001:x"]), ("12a", None, None), (None, "pw", None),
                (None, None, ["1000:"]), (f"1-{MAX_EXTENSIONS + 1}", None, None),
                (None, None, ["1000:" + "x" * 129])):
            self.assertRaises(UsageError, plan_extensions, ranges, password, pairs)


class CustomerTests(CLITestCase):
    """C{customer create|list|show|delete}."""

    def test_create_with_extensions(self) -> None:
        """The customer is created, then one account per extension."""
        code, out, err = self.cli("customer", "create", "--name", "Acme", "--domain",
                                  "acme.example", "--currency", "usd", "--timezone",
                                  "Europe/Paris", "--extensions", "1000-1002",
                                  "--password", "s3cret")
        self.assertEqual((code, err), (0, ""))
        posts = self.api.requests("POST")
        self.assertEqual(posts[0].json(), {"name": "Acme", "sip_domain": "acme.example",
                                           "currency": "USD",
                                           "billing_timezone": "Europe/Paris"})
        self.assertEqual([p.json() for p in posts[1:]], [
            {"customer_id": 1, "kind": "extension", "number": n, "sip_username": n,
             "password": "s3cret"} for n in ("1000", "1001", "1002")])
        self.assertIn("sip_domain        acme.example\n", out)
        self.assertIn("ID  NUMBER  SIP USERNAME\n 2  1000    1000\n", out)
        self.assertNotIn("s3cret", out)

    def test_create_generates_passwords(self) -> None:
        """Generated passwords are shown (once), each the one sent."""
        code, out, _ = self.cli("customer", "create", "--name", "Acme", "--domain",
                                "acme.example", "--currency", "USD", "--extension", "200")
        self.assertEqual(code, 0)
        sent = self.api.requests("POST")[1].json()["password"]
        self.assertIn(f" 2  200     200           {sent}\n", out)
        self.assertIn("shown only this once", out)

    def test_create_json(self) -> None:
        """C{--json} prints the customer and its accounts as the API returned them."""
        code, out, _ = self.cli("--json", "customer", "create", "--name", "Acme", "--domain",
                                "acme.example", "--currency", "USD", "--extension", "7:pw")
        self.assertEqual(code, 0)
        printed = json.loads(out)
        self.assertEqual(printed["customer"]["sip_domain"], "acme.example")
        self.assertEqual([a["number"] for a in printed["accounts"]], ["7"])
        self.assertNotIn("password", printed["accounts"][0])

    def test_create_refused(self) -> None:
        """422: one line with every bad field; no extension is attempted."""
        result = self.cli("customer", "create", "--name", "Acme", "--domain", "bad domain",
                          "--currency", "USD", "--extensions", "1000-1001")
        self.assertFails(result, 1, "customers: validation failed: sip_domain: must match "
                                    "^[A-Za-z0-9.\\-]+$")
        self.assertEqual(len(self.api.requests("POST")), 1)

    def test_create_conflict_is_undone(self) -> None:
        """An extension refused half-way: what was created is deleted again."""
        self.api.fail("POST", "accounts", 409, {"error": "conflict", "field": "sip_username"},
                      after=2)
        result = self.cli("customer", "create", "--name", "Acme", "--domain", "acme.example",
                          "--currency", "USD", "--extensions", "1000-1003", "--password", "p")
        self.assertFails(result, 1, "accounts: conflict: sip_username already in use "
                                    "(extension 1002); nothing was kept (customer 1 was "
                                    "deleted again)")
        self.assertEqual([s.path for s in self.api.requests("DELETE")],
                         ["/api/v1/accounts/3", "/api/v1/accounts/2", "/api/v1/customers/1"])
        self.assertEqual(self.api.rows["customers"], {})

    def test_list(self) -> None:
        """A table of customers with the chosen columns."""
        self.customer(credit_limit="100.00", billing_timezone="UTC")
        self.customer(name="Beta Corp", sip_domain="beta.example", currency="EUR",
                      credit_limit="5", billing_timezone="Europe/Berlin", reseller_id=3)
        code, out, _ = self.cli("customer", "list")
        self.assertEqual(code, 0)
        self.assertEqual(out.splitlines(), [
            "ID  NAME       SIP DOMAIN    CURRENCY  CREDIT LIMIT  TIMEZONE       RESELLER  STATUS",
            " 1  Acme       acme.example  USD             100.00  UTC            -         active",
            " 2  Beta Corp  beta.example  EUR                  5  Europe/Berlin  3         active",
        ])

    def test_list_paging_and_filters(self) -> None:
        """Paging options and filters go to the query; a partial page says so."""
        for n in range(3):
            self.customer(sip_domain=f"c{n}.example", status="suspended")
        code, out, _ = self.cli("customer", "list", "--limit", "2", "--status", "suspended")
        self.assertEqual(code, 0)
        self.assertEqual(self.api.seen[0].query, {"limit": "2", "offset": "0",
                                                  "status": "suspended"})
        self.assertTrue(out.endswith("showing 1-2 of 3 customers (next page: --offset 2)\n"))

    def test_list_json(self) -> None:
        """C{--json} prints the API's page unchanged."""
        self.customer()
        code, out, _ = self.cli("customer", "list", "--json")
        self.assertEqual(code, 0)
        self.assertEqual(json.loads(out)["total"], 1)
        self.assertEqual(json.loads(out)["items"][0]["sip_domain"], "acme.example")

    def test_list_empty(self) -> None:
        """No customers: says so."""
        self.assertEqual(self.cli("customer", "list")[1], "no customers\n")

    def test_show_by_domain(self) -> None:
        """A SIP domain is looked up; extensions and DIDs are shown too."""
        customer = self.customer()
        self.api.add("accounts", customer_id=customer["id"], number="1000",
                     sip_username="1000", kind="extension", status="active")
        self.api.add("dids", customer_id=customer["id"], number="+15551230000",
                     target_kind="account", target="2", status="active")
        code, out, _ = self.cli("customer", "show", "acme.example")
        self.assertEqual(code, 0)
        self.assertEqual(self.api.seen[0].query, {"limit": "2", "sip_domain": "acme.example"})
        self.assertIn("name        Acme\n", out)
        self.assertIn("\nExtensions\nID  NUMBER  SIP USERNAME  KIND       CALLER ID NAME", out)
        self.assertIn(" 3  +15551230000         1  account      2       active\n", out)

    def test_show_missing(self) -> None:
        """An unknown id is 404; an unknown domain is said so."""
        self.assertFails(self.cli("customer", "show", "99"), 1, "customers/99: not found")
        self.assertFails(self.cli("customer", "show", "nope.example"), 1,
                         "customers: no customer with SIP domain 'nope.example'")

    def test_delete(self) -> None:
        """C{customer delete} sends DELETE and says so."""
        self.customer()
        self.assertEqual(self.cli("customer", "delete", "1")[:2], (0, "deleted customer 1\n"))
        self.assertEqual(self.api.rows["customers"], {})


class DIDTests(CLITestCase):
    """C{did add|list|remove}."""

    def setUp(self) -> None:
        """A customer with one extension."""
        super().setUp()
        self.customer()
        self.account = self.api.add("accounts", customer_id=1, number="1000")

    def test_add_to_account(self) -> None:
        """The DID rings the account: target_kind account, target its id."""
        code, out, _ = self.cli("did", "add", "+15551230000", "--customer", "1",
                                "--account", "2")
        self.assertEqual(code, 0)
        self.assertEqual(self.api.requests("POST")[0].json(), {
            "number": "+15551230000", "customer_id": 1, "target_kind": "account",
            "target": "2"})
        self.assertIn("number       +15551230000\n", out)

    def test_add_to_extension(self) -> None:
        """C{--extension} finds the account by its number within the customer."""
        code, _, _ = self.cli("did", "add", "15551230000", "--customer", "acme.example",
                              "--extension", "1000")
        self.assertEqual(code, 0)
        self.assertEqual(self.api.requests("POST")[0].json()["target"], "2")

    def test_add_unassigned(self) -> None:
        """Without an account the DID belongs to the customer and rings nothing yet."""
        self.assertEqual(self.cli("did", "add", "15551230000", "--customer", "1")[0], 0)
        self.assertEqual(self.api.requests("POST")[0].json()["target"], "")

    def test_account_of_another_customer(self) -> None:
        """An account of someone else is refused before anything is created."""
        self.api.add("accounts", customer_id=7, number="1000")
        self.assertFails(self.cli("did", "add", "15551230000", "--customer", "1",
                                  "--account", "3"), 1,
                         "accounts/3: belongs to customer 7, not 1")
        self.assertEqual(self.api.requests("POST"), [])

    def test_duplicate(self) -> None:
        """A number already provisioned is a conflict."""
        self.api.add("dids", number="15551230000", customer_id=1)
        self.assertFails(self.cli("did", "add", "15551230000", "--customer", "1"), 1,
                         "dids: conflict: number already in use")

    def test_invalid_number(self) -> None:
        """A malformed number is the API's validation failure."""
        self.assertFails(self.cli("did", "add", "12ab", "--customer", "1"), 1,
                         "dids: validation failed: number: must be E.164 digits")

    def test_list_and_remove(self) -> None:
        """DIDs are listed, and removed by number."""
        self.api.add("dids", number="15551230000", customer_id=1, target_kind="account",
                     target="2", status="active")
        code, out, _ = self.cli("did", "list", "--customer", "1")
        self.assertEqual(code, 0)
        self.assertEqual(out.splitlines()[1],
                         " 3  15551230000         1  account      2       active")
        self.assertEqual(self.cli("did", "remove", "15551230000")[:2],
                         (0, "removed DID 15551230000 (id 3)\n"))
        self.assertFails(self.cli("did", "remove", "15551230000"), 1, "dids: no DID 15551230000")


class RatesTests(CLITestCase):
    """C{rates upload}."""

    def deck(self, text: str) -> str:
        """A rate file holding C{text}."""
        path = self.mktemp() + ".csv"
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_upload(self) -> None:
        """The file becomes a tariff; its summary is printed."""
        path = self.deck("prefix,price\n1,0.01\n44,0.02\n")
        code, out, _ = self.cli("rates", "upload", path, "--name", "retail", "--currency", "eur")
        self.assertEqual(code, 0)
        seen = self.api.requests("POST")[0]
        self.assertEqual((seen.query, seen.headers["content-type"]),
                         ({"name": "retail", "currency": "EUR"}, "text/csv"))
        self.assertEqual(out, "id          1\nname        retail\ncurrency    EUR\n"
                              "entries     2\ncreated_at  2024-05-01 12:00:00\n")

    def test_upload_options_and_warnings(self) -> None:
        """C{--timezone} and C{--delimiter} go to the query; warnings are printed."""
        path = self.deck("prefix,price\n1,0.01\n")
        code, out, _ = self.cli("rates", "upload", path, "--name", "r", "--currency", "USD",
                                "--timezone", "Europe/Paris", "--delimiter", "comma")
        self.assertEqual(code, 0)
        self.assertEqual(self.api.requests("POST")[0].query,
                         {"name": "r", "currency": "USD", "timezone": "Europe/Paris",
                          "delimiter": "comma"})
        self.assertTrue(out.endswith("warning: no rate for prefix 2\n"))

    def test_upload_json_from_stdin(self) -> None:
        """C{-} reads stdin; C{--json} prints the tariff as returned."""
        code, out, _ = self.cli("rates", "upload", "-", "--name", "r", "--currency", "USD",
                                "--json", stdin=b"prefix,price\n1,0.01\n")
        self.assertEqual(code, 0)
        self.assertEqual(json.loads(out)["document"], {"entries": [{"prefix": "1"}]})

    def test_bad_rows(self) -> None:
        """A refused file: a summary line, then one line per bad row; exit 1."""
        path = self.deck("prefix,price\n1,0.01\n44,cheap\n49,\n")
        code, out, err = self.cli("rates", "upload", path, "--name", "r", "--currency", "USD")
        self.assertEqual((code, out), (1, ""))
        self.assertEqual(err, f"b2bua-admin: {path}: refused, 2 bad rows\n"
                              "row 3, column price: not a decimal\n"
                              "row 4, column price: not a decimal\n")

    def test_other_refusal(self) -> None:
        """A refusal without rows is the API's own message."""
        self.api.fail("POST", "tariffs/import", 409, {"error": "conflict", "field": "name"})
        self.assertFails(self.cli("rates", "upload", self.deck("prefix,price\n1,1\n"),
                                  "--name", "r", "--currency", "USD"), 1,
                         "tariffs/import: conflict: name already in use")

    def test_unreadable(self) -> None:
        """A missing or empty file is reported before anything is sent."""
        self.assertFails(self.cli("rates", "upload", "/nonexistent.csv", "--name", "r",
                                  "--currency", "USD"), 1,
                         "cannot read /nonexistent.csv: No such file or directory")
        empty = self.deck("\n")
        self.assertFails(self.cli("rates", "upload", empty, "--name", "r", "--currency", "USD"),
                         1, f"{empty}: the file is empty")
        self.assertEqual(self.api.seen, [])


class APIKeyTests(CLITestCase):
    """C{apikey create|list|revoke}."""

    def test_create_customer_key(self) -> None:
        """A customer key, its customer given by domain; the key is printed once."""
        self.customer()
        code, out, _ = self.cli("apikey", "create", "--name", "portal", "--role", "customer",
                                "--customer", "acme.example")
        self.assertEqual(code, 0)
        self.assertEqual(self.api.requests("POST")[0].json(),
                         {"name": "portal", "role": "customer", "customer_id": 1})
        self.assertEqual(out.count("b2k_new_secret_key"), 1)
        self.assertIn("\nkey: b2k_new_secret_key\nThe key is shown only this once", out)

    def test_create_json(self) -> None:
        """C{--json} prints the answer, key included."""
        code, out, _ = self.cli("--json", "apikey", "create", "--name", "ops", "--role", "admin")
        self.assertEqual(code, 0)
        self.assertEqual(json.loads(out)["key"], "b2k_new_secret_key")

    def test_create_enduser_key(self) -> None:
        """An enduser key is bound to an account."""
        self.assertEqual(self.cli("apikey", "create", "--name", "phone", "--role", "enduser",
                                  "--account", "5")[0], 0)
        self.assertEqual(self.api.requests("POST")[0].json()["account_id"], 5)

    def test_binding_checked(self) -> None:
        """Each role needs its own binding (and an admin key none)."""
        self.assertFails(self.cli("apikey", "create", "--name", "k", "--role", "admin",
                                  "--customer", "1"), 2,
                         "an admin key is bound to nothing: drop --customer")
        self.assertFails(self.cli("apikey", "create", "--name", "k", "--role", "reseller",
                                  "--customer", "1"), 2, "a reseller key needs --reseller ID")
        code, _, err = self.cli("apikey", "create", "--name", "k", "--role", "customer",
                                "--customer", "1", "--account", "2")
        self.assertEqual((code, err.count("\n")), (2, 1))
        self.assertEqual(self.api.seen, [])

    def test_list_and_revoke(self) -> None:
        """Keys are listed without secrets, and revoked by PATCH."""
        self.api.add("api_keys", name="ops", role="admin", prefix="b2k_abc", revoked=False)
        self.api.add("api_keys", name="portal", role="customer", customer_id=4,
                     prefix="b2k_def", revoked=False)
        code, out, _ = self.cli("apikey", "list")
        self.assertEqual(code, 0)
        self.assertEqual(out.splitlines()[2].split(), ["2", "portal", "customer", "customer",
                                                       "4", "b2k_def", "no", "-"])
        self.assertEqual(self.cli("apikey", "revoke", "1")[:2],
                         (0, "revoked API key 1 (ops)\n"))
        self.assertEqual(self.api.requests("PATCH")[0].json(), {"revoked": True})


class CallsTests(CLITestCase):
    """C{calls list}."""

    def test_table(self) -> None:
        """Newest first; times in UTC, durations as M:SS, costs with their currency."""
        self.api.add("cdrs", customer_id=1, account_id=2, call_id="abc@h", caller="1000",
                     callee="15551230000", started_at="2024-05-01T14:00:03.250000+02:00",
                     billsec=125, disposition="answered", cost="0.0420", currency="USD")
        self.api.add("cdrs", customer_id=1, account_id=2, call_id="def@h", caller="1000",
                     callee="1001", started_at="2024-05-01T12:10:00+00:00", billsec=3700,
                     disposition="answered", cost="0", currency="USD")
        code, out, _ = self.cli("calls", "list", "--customer", "1", "--limit", "5")
        self.assertEqual(code, 0)
        self.assertEqual(self.api.seen[0].query, {"limit": "5", "offset": "0", "order": "-id",
                                                  "customer_id": "1"})
        self.assertEqual(out.splitlines(), [
            "STARTED (UTC)        CUSTOMER  ACCOUNT  CALLER  CALLEE       DISPOSITION   "
            "BILLED        COST  CALL-ID",
            "2024-05-01 12:10:00         1        2  1000    1001         answered     "
            "1:01:40       0 USD  def@h",
            "2024-05-01 12:00:03         1        2  1000    15551230000  answered        "
            "2:05  0.0420 USD  abc@h",
        ])

    def test_json(self) -> None:
        """C{--json} prints the API's page."""
        self.api.add("cdrs", call_id="x", started_at="2024-05-01T12:00:00+00:00")
        code, out, _ = self.cli("calls", "list", "--json")
        self.assertEqual(code, 0)
        self.assertEqual(json.loads(out)["items"][0]["call_id"], "x")


class ErrorTests(CLITestCase):
    """Failures are one line on stderr and a non-zero exit status."""

    def test_unauthorized(self) -> None:
        """401 tells the operator to check the key."""
        self.assertFails(self.cli("customer", "list", "--key", "wrong"), 1,
                         "unauthorized (check --key)")

    def test_forbidden(self) -> None:
        """403 names what was refused."""
        self.api.fail("GET", "cdrs", 403, {"error": "forbidden"})
        self.assertFails(self.cli("calls", "list"), 1,
                         "cdrs: forbidden (this key may not do that)")

    def test_server_error(self) -> None:
        """5xx carries the API's error text."""
        self.api.fail("GET", "customers", 500, {"error": "internal error"})
        self.assertFails(self.cli("customer", "list"), 1,
                         "customers: server error 500: internal error")

    def test_connection_refused(self) -> None:
        """Nobody listening: exit status 3."""
        url = closed_port_url()
        self.assertFails(self.cli("customer", "list", "--url", url), 3,
                         f"cannot reach {url}: connection refused")

    def test_unexpected_answer(self) -> None:
        """Even an answer of the wrong shape is one line, not a traceback."""
        self.api.fail("GET", "customers", 200, [1, 2])
        code, _, err = self.cli("customer", "list")
        self.assertEqual((code, err.count("\n")), (1, 1))
        self.assertTrue(err.startswith("b2bua-admin: internal error: AttributeError"))
        self.assertNotIn("Traceback", err)
