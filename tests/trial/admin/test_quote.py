"""C{b2bua-admin quote}: the request it sends and what it prints, against
L{FakeAPI}; then the real REST API (L{oam.api}) on a loopback port over a
temporary SQLite database, as C{test_end_to_end} does."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import reactor

from b2bua.db.database import Database
from b2bua.db.interfaces import Scope
from b2bua.db.migrations import migrate
from tests.trial.admin.fakeapi import QUOTE
from tests.trial.admin.realapi import RealAPITestCase
from tests.trial.admin.test_cli import CLITestCase

ADMIN = Scope.admin("test")
START = "2024-05-14T17:59:40Z"
#: rating.md 2.8 example 1, with JSON numbers as a tariff file may hold them.
FILE_TARIFF = (
    '{"timezone": "UTC", "rates": {"R1": {"connect_fee": 0.05, "groups": ['
    '{"start_s": 0, "price": 0.30, "unit_s": 60, "increment_s": 60}, '
    '{"start_s": 60, "price": "0.20", "unit_s": 60, "increment_s": 6}]}}, '
    '"entries": [{"prefixes": ["33"], "rate": "R1"}, {"prefixes": ["34"], "blocked": true}]}'
)
#: rating.md 2.8 example 2 (peak to off-peak at 18:00, split).
SPLIT_TARIFF = {
    "timezone": "UTC", "period_boundary": "split",
    "timings": {"peak": {"weekdays": [1, 2, 3, 4, 5], "start": "08:00:00", "end": "18:00:00"}},
    "rates": {"PEAK": {"connect_fee": "0.02", "groups": [
                  {"start_s": 0, "price": "0.10", "unit_s": 60, "increment_s": 1}]},
              "OFF": {"groups": [
                  {"start_s": 0, "price": "0.04", "unit_s": 60, "increment_s": 30}]}},
    "entries": [{"prefixes": ["44"], "timing": "peak", "rate": "PEAK", "weight": "10"},
                {"prefixes": ["44"], "rate": "OFF"}],
}


def call(*options: str) -> list[str]:
    """A C{quote} command line for 75 s to 33612345678 on a Tuesday."""
    return ["quote", "--destination", "33612345678", "--start", START, "--duration", "75",
            *options]


class FakeQuoteTests(CLITestCase):
    """Against the fake API: requests, tables, --json and errors."""

    def tariff_file(self, text: str = FILE_TARIFF) -> str:
        """A tariff file holding C{text}."""
        path = os.path.join(os.path.dirname(self.key_file), "tariff.json")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_stored_tariff(self) -> None:
        """--tariff sends tariff_id; the cost, its currency and the breakdown print."""
        self.api.add("tariffs", name="retail", currency="EUR", document={})
        code, out, err = self.cli(*call("--tariff", "1"))
        self.assertEqual((code, err), (0, ""))
        sent = self.api.requests("POST")[0]
        self.assertEqual(sent.path, "/api/v1/rating/quote")
        self.assertEqual(sent.json(), {"destination": "33612345678", "start": START,
                                       "duration_s": 75, "tariff_id": 1})
        lines = out.splitlines()
        self.assertEqual(lines[0], "cost             0.4100 EUR")
        self.assertIn("duration         75 s (billable 75 s, free 0 s)", lines)
        self.assertIn("entry            0: prefix 33, rate R1, timing always, weight 0", lines)
        table = lines[lines.index("") + 1:]
        self.assertEqual(table, [
            "COMPONENT       DETAIL                                      AMOUNT",
            "connect fee     -                                             0.05",
            "time            R1 group 0: 1 x 60 s from 0 s at 0.30/60 s    0.30",
            "time            R1 group 1: 3 x 6 s from 60 s at 0.20/60 s    0.06",
            "time charge     -                                             0.36",
            "fixed fees      -                                                0",
            "disconnect fee  -                                                0",
            "surcharge       0 %                                           0.00",
            "minimum charge  adjustment                                       0",
            "max cost        adjustment                                       0",
            "unrounded       -                                             0.41",
            "rounding        up, 4 decimals                              0.0000",
            "cost            -                                           0.4100"])
        self.assertNotIn("discount", out)
        self.assertNotIn("max duration", out)

    def test_tariff_file(self) -> None:
        """--tariff-file sends the document, its numbers as exact decimal strings."""
        code, out, err = self.cli(*call("--tariff-file", self.tariff_file()))
        self.assertEqual((code, err), (0, ""))
        document = self.api.requests("POST")[0].json()["tariff"]
        self.assertEqual(document["rates"]["R1"]["connect_fee"], "0.05")
        self.assertEqual([g["price"] for g in document["rates"]["R1"]["groups"]],
                         ["0.30", "0.20"])
        self.assertEqual(document["entries"][1], {"prefixes": ["34"], "blocked": True})
        self.assertTrue(out.startswith("cost             0.4100\n"), out)

    def test_stdin(self) -> None:
        """--tariff-file - reads the document from stdin."""
        code, _, err = self.cli(*call("--tariff-file", "-"), stdin=FILE_TARIFF.encode())
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(self.api.requests("POST")[0].json()["tariff"]["timezone"], "UTC")

    def test_balance(self) -> None:
        """--balance is sent as given; the durations print."""
        code, out, err = self.cli(*call("--tariff-file", self.tariff_file(),
                                        "--balance", "0.50"))
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(self.api.requests("POST")[0].json()["balance"], "0.50")
        lines = out.splitlines()
        self.assertIn("balance             0.50", lines)
        self.assertIn("max duration        102 s (limited by credit)", lines)
        self.assertIn("announced duration  102 s", lines)
        self.assertIn("may announce        yes", lines)

    def test_json(self) -> None:
        """--json prints the API's answer."""
        code, out, err = self.cli(*call("--tariff-file", self.tariff_file(), "--balance",
                                        "0.50", "--json"))
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(json.loads(out), QUOTE)

    def test_unknown_tariff(self) -> None:
        """An unknown (or invisible) tariff is one line naming it."""
        self.assertFails(self.cli(*call("--tariff", "9")), 1, "tariffs/9: not found")

    def test_refusals(self) -> None:
        """The API's 422s are one line each."""
        self.api.fail("POST", "rating/quote", 422, {
            "error": "validation failed",
            "fields": {"start": "must be an ISO 8601 date-time with its offset",
                       "tariff.timezone": "unknown IANA time zone 'X'"}})
        self.assertFails(self.cli(*call("--tariff-file", self.tariff_file())), 1,
                         "quote: validation failed: start: must be an ISO 8601 date-time "
                         "with its offset, tariff.timezone: unknown IANA time zone 'X'")
        self.api.fail("POST", "rating/quote", 422, {"error": "destination not rated",
                                                    "destination": "33612345678"})
        self.assertFails(self.cli(*call("--tariff-file", self.tariff_file())), 1,
                         "quote: destination not rated")

    def test_bad_files(self) -> None:
        """An unreadable file, or one that is not a JSON object: one line, nothing sent."""
        missing = os.path.join(os.path.dirname(self.key_file), "missing.json")
        self.assertFails(self.cli(*call("--tariff-file", missing)), 1,
                         f"cannot read {missing}: No such file or directory")
        for text, reason in (("{", "not a JSON tariff document: Expecting"),
                             ("[1]", "a tariff document is a JSON object"),
                             ('{"x": NaN}', "not a JSON tariff document: NaN is not JSON")):
            path = self.tariff_file(text)
            code, out, err = self.cli(*call("--tariff-file", path))
            self.assertEqual((code, out, err.count("\n")), (1, "", 1), text)
            self.assertTrue(err.startswith(f"b2bua-admin: {path}: {reason}"), err)
        self.assertEqual(self.api.seen, [])

    def test_usage(self) -> None:
        """One tariff option, a whole --duration: else a usage error (exit 2)."""
        for argv in (call(), call("--tariff", "1", "--tariff-file", "x.json"),
                     ["quote", "--tariff", "1", "--destination", "33", "--start", START,
                      "--duration", "-1"],
                     ["quote", "--tariff", "0", "--destination", "33", "--start", START,
                      "--duration", "1"]):
            code, _, err = self.cli(*argv)
            self.assertEqual((code, err.count("\n")), (2, 1), argv)
            self.assertTrue(err.startswith("b2bua-admin: quote: "), err)
        self.assertEqual(self.api.seen, [])


class RealQuoteTests(RealAPITestCase):
    """The tool against the real API on a loopback port."""

    timeout = 60

    async def setUp(self) -> None:
        """Migrate a temporary database, serve the API over it, make keys."""
        path = os.path.abspath(self.mktemp()) + ".db"
        database = Database(f"sqlite:///{path}", reactor)
        self.addCleanup(database.close)
        await migrate(database)
        await self.serve_api(database, "quote")

    def file(self, document: Any) -> str:
        """A tariff file holding C{document} (text as is, else as JSON)."""
        path = os.path.join(self.directory, f"t{len(os.listdir(self.directory))}.json")
        with open(path, "w") as f:
            f.write(document if isinstance(document, str) else json.dumps(document))
        return path

    async def test_quotes(self) -> None:
        """Inline and stored tariffs, the worked examples, durations and refusals."""
        code, out, err = await self.cli(*call("--tariff-file", self.file(FILE_TARIFF),
                                              "--balance", "0.50"))
        self.assertEqual((code, err), (0, ""))
        self.assertTrue(out.startswith("cost             0.4100\n"), out)
        self.assertIn("max duration        102 s (limited by credit)\n", out)

        code, out, err = await self.cli("--json", "quote", "--tariff-file",
                                        self.file(SPLIT_TARIFF), "--destination", "4420",
                                        "--start", START, "--duration", "50")
        self.assertEqual((code, err), (0, ""))
        answer = json.loads(out)
        self.assertEqual((answer["cost"], answer["period_boundary"]), ("0.0734", "split"))

        row = await self.repos["tariffs"].create(
            {"name": "retail", "currency": "EUR", "document": json.loads(FILE_TARIFF,
                                                                         parse_float=str)},
            ADMIN)
        code, out, err = await self.cli(*call("--tariff", str(row["id"])))
        self.assertEqual((code, err), (0, ""))
        self.assertTrue(out.startswith("cost             0.4100 EUR\n"), out)

        code, _, err = await self.cli("quote", "--tariff", str(row["id"]), "--destination",
                                      "3412", "--start", START, "--duration", "1")
        self.assertEqual((code, err), (1, "b2bua-admin: quote: destination blocked\n"))
        code, _, err = await self.cli(*call("--tariff-file",
                                            self.file({"timezone": "Mars/Olympus"}),
                                            "--balance", "lots"))
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("b2bua-admin: quote: validation failed: balance: "),
                        err)
        self.assertIn("tariff.timezone: unknown IANA time zone 'Mars/Olympus'", err)
        self.assertEqual(err.count("\n"), 1)

        customer = (await self.repos["customers"].create(
            {"name": "Acme", "sip_domain": "acme.example", "currency": "EUR"}, ADMIN))
        key = await self.repos["api_keys"].create(
            {"name": "portal", "role": "customer", "customer_id": customer["id"]}, ADMIN)
        code, _, err = await self.cli(*call("--tariff", str(row["id"])), key=str(key["key"]))
        self.assertEqual((code, err), (1, f"b2bua-admin: tariffs/{row['id']}: not found\n"))
        code, out, err = await self.cli(*call("--tariff-file", self.file(FILE_TARIFF)),
                                        key=str(key["key"]))
        self.assertEqual((code, err), (0, ""))
