"""C{b2bua-admin blend} and C{b2bua-admin route-explain}: the requests they
send and what they print, against L{FakeAPI} (answers scripted from the
real API's shape); then the real REST API (L{oam.api.routing}) on a
loopback port over a temporary SQLite database, as the quote tests do."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import reactor

from b2bua.db.database import Database
from b2bua.db.interfaces import Scope
from b2bua.db.migrations import migrate
from tests.trial.admin.realapi import RealAPITestCase
from tests.trial.admin.test_cli import CLITestCase
from tests.trial.plugins.trunking.decks import deck

ADMIN = Scope.admin("test")
START = "2024-05-14T10:00:00Z"
O2 = "447783855111"
#: Two vendor decks as files may hold them (JSON numbers with fractions).
VOXBEAM_FILE = ('{"timezone": "UTC", "rates": {"R0": {"groups": [{"start_s": 0, "price": 0.0955,'
                ' "unit_s": 60, "increment_s": 60}]}, "R1": {"groups": [{"start_s": 0, '
                '"price": 0.0079, "unit_s": 60, "increment_s": 60}]}}, "entries": ['
                '{"prefixes": ["44"], "rate": "R0"}, {"prefixes": ["447783"], "rate": "R1"}]}')
THINQ = deck(("44", "0.0200"))
#: The shape of a blend answer (two vendors, depth 2, 10 %).
BLEND: dict[str, Any] = {
    "currency": "EUR", "document": {"timezone": "UTC", "rates": {}, "entries": []},
    "destinations": [
        {"prefix": "44", "sell": "0.1051", "base": "0.0955", "used": 2, "rate": "S1",
         "vendors": [{"vendor": "thinq", "matched_prefix": "44", "rate": "R0",
                      "per_minute": "0.02", "connect_fee": "0", "increments": "60/60"},
                     {"vendor": "voxbeam", "matched_prefix": "44", "rate": "R0",
                      "per_minute": "0.0955", "connect_fee": "0", "increments": "60/60"}],
         "blocked": []}],
    "uncovered": ["1"], "short": ["447783"],
    "tariff": {"id": 9, "name": "uk-retail", "currency": "EUR"},
}
#: The shape of an explanation (one route, one connection left out).
EXPLANATION: dict[str, Any] = {
    "number": O2, "start": "2024-05-14T10:00:00+00:00", "duration_s": 60, "strategy": "lcr",
    "customer_cost": "0.0150", "ceiling": "0.0150", "loss": False, "rejected": False,
    "currency": "EUR", "routing_plan_id": 3,
    "routes": [{"position": 1, "connection_id": 4, "connection": "vox-ams", "vendor_id": 1,
                "vendor": "Voxbeam", "plan_prefix": "44", "plan_entry": 0, "weight": "1",
                "matched_prefix": "447783",
                "rate": {"id": "R1", "price": "0.0079", "unit_s": 60, "increment_s": 60,
                         "connect_fee": "0"},
                "cost": "0.0079", "margin": "0.0071", "reason": "plan prefix 44; cost 0.0079",
                "loss": False}],
    "excluded": [{"connection_id": 5, "connection": "thinq-1", "vendor_id": 2,
                  "vendor": "ThinQ", "reason": "profit_guarantee",
                  "detail": "cost 0.0200 is above the ceiling 0.0150", "plan_prefix": "44",
                  "cost": "0.0200"}],
}


class FakeBlendTests(CLITestCase):
    """C{blend} against the fake API."""

    def file(self, name: str, text: str) -> str:
        """A file holding C{text} next to the key file."""
        path = os.path.join(os.path.dirname(self.key_file), name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_request_and_table(self) -> None:
        """Stored and file tariffs, every option, the save: the request
        carries them exactly; the table, the gaps and the saved row print."""
        self.api.fail("POST", "routing/blend", 201, BLEND)
        vox = self.file("voxbeam.json", VOXBEAM_FILE)
        prefixes = self.file("deck.json", '["44", 447783]')
        output = self.file("out.json", "")
        code, out, err = self.cli(
            "blend", "--tariff", "5", "--tariff-file", vox, "--depth", "2", "--method",
            "average", "--margin-pct", "10", "--margin-abs", "0.001", "--min-sell", "0.01",
            "--max-sell", "1", "--min-markup", "0.0005", "--rounding", "half_up",
            "--decimals", "3", "--prefixes-file", prefixes, "--timezone", "Europe/London",
            "--at", START, "--effective-from", "2024-07-01T00:00:00Z", "--save", "uk-retail",
            "--currency", "eur", "--output", output)
        self.assertEqual((code, err), (0, ""))
        sent = self.api.requests("POST")[0]
        self.assertEqual(sent.path, "/api/v1/routing/blend")
        payload = sent.json()
        self.assertEqual(payload["vendors"][0], {"tariff_id": 5})
        self.assertEqual(payload["vendors"][1]["name"], "voxbeam")
        self.assertEqual(payload["vendors"][1]["tariff"]["rates"]["R1"]["groups"][0]["price"],
                         "0.0079")
        self.assertEqual({k: v for k, v in payload.items() if k != "vendors"}, {
            "at": START, "depth": 2, "method": "average", "margin_pct": "10",
            "margin_abs": "0.001", "min_sell": "0.01", "max_sell": "1",
            "min_markup_abs": "0.0005", "rounding": {"method": "half_up", "decimals": 3},
            "prefixes": ["44", "447783"], "timezone": "Europe/London",
            "effective_from": "2024-07-01T00:00:00Z",
            "save": {"name": "uk-retail", "currency": "EUR"}})
        self.assertEqual(out.splitlines(), [
            "PREFIX    SELL    BASE  USED  VENDORS (CHEAPEST FIRST)",
            "44      0.1051  0.0955     2  thinq 0.02, voxbeam 0.0955",
            "uncovered (1): 1",
            "fewer vendors than the depth (1): 447783",
            "saved as tariff 9 (uk-retail, EUR)"])
        with open(output) as f:
            self.assertEqual(json.load(f), BLEND["document"])

    def test_defaults_and_json(self) -> None:
        """Without options: depth 1 at now; --json prints the answer."""
        answer = {k: v for k, v in BLEND.items() if k != "tariff"}
        self.api.fail("POST", "routing/blend", 200, answer)
        code, out, err = self.cli("--json", "blend", "--tariff", "5", "--tariff", "6")
        self.assertEqual((code, err), (0, ""))
        payload = self.api.requests("POST")[0].json()
        self.assertEqual((payload["vendors"], payload["depth"], payload["method"]),
                         ([{"tariff_id": 5}, {"tariff_id": 6}], 1, "depth"))
        self.assertRegex(payload["at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
        self.assertEqual(json.loads(out), answer)

    def test_errors(self) -> None:
        """No vendor, a bad amount: usage (2); the API's 422 and 404: one line (1)."""
        code, _, err = self.cli("blend")
        self.assertEqual((code, err.count("\n")), (2, 1))
        self.assertIn("at least one --tariff", err)
        code, _, err = self.cli("blend", "--tariff", "1", "--margin-pct", "-3")
        self.assertEqual(code, 2)
        self.assertIn("not a decimal amount", err)
        self.api.fail("POST", "routing/blend", 422, {
            "error": "validation failed", "fields": {"vendors": "the tariffs are in "
                                                                "different currencies"}})
        self.assertFails(self.cli("blend", "--tariff", "1"), 1,
                         "blend: validation failed: vendors: the tariffs are in different "
                         "currencies")
        self.api.fail("POST", "routing/blend", 404, {"error": "not found"})
        self.assertFails(self.cli("blend", "--tariff", "1"), 1,
                         "blend: a --tariff given is not found")
        missing = os.path.join(os.path.dirname(self.key_file), "none.json")
        code, _, err = self.cli("blend", "--tariff-file", missing)
        self.assertEqual((code, err), (1, f"b2bua-admin: cannot read {missing}: No such file "
                                          "or directory\n"))


class FakeExplainTests(CLITestCase):
    """C{route-explain} against the fake API."""

    def test_request_and_tables(self) -> None:
        """The members sent; the call, the routes and what was left out print."""
        self.api.fail("POST", "routing/explain", 200, EXPLANATION)
        code, out, err = self.cli(
            "route-explain", "--number", O2, "--start", START, "--plan", "3",
            "--connection", "4", "--connection", "5", "--customer-tariff", "7",
            "--duration", "90", "--unavailable", "6", "--max-cost", "event_cost",
            "--seed", "1")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(self.api.requests("POST")[0].json(), {
            "number": O2, "start": START, "routing_plan_id": 3, "connections": [4, 5],
            "customer_tariff_id": 7, "duration_s": 90, "unavailable": [6],
            "profit_guarantee": {"max_cost": "event_cost"}, "seed": 1})
        lines = out.splitlines()
        self.assertEqual(lines[:6], [
            "number          447783855111", "start           2024-05-14T10:00:00+00:00",
            "strategy        lcr", "reference call  60 s", "customer cost   0.0150 EUR",
            "profit ceiling  0.0150 EUR"])
        self.assertEqual(lines[7:], [
            "#  CONNECTION  VENDOR   PLAN PREFIX  WEIGHT  MATCHED  RATE           COST  "
            "MARGIN  REASON",
            "1  4 vox-ams   Voxbeam  44                1  447783   0.0079/60 s  0.0079  "
            "0.0071  plan prefix 44; cost 0.0079",
            "",
            "Left out",
            "CONNECTION  VENDOR  REASON            DETAIL",
            "5 thinq-1   ThinQ   profit_guarantee  cost 0.0200 is above the ceiling 0.0150"])

    def test_files_and_rejection(self) -> None:
        """An inline plan, connections and customer tariff from files; no route."""
        directory = os.path.dirname(self.key_file)
        paths = {}
        for name, value in (("plan", {"strategy": "lcr"}),
                            ("connections", [{"id": 1, "vendor": "t", "tariff": THINQ}]),
                            ("retail", deck(("44", "0.01")))):
            paths[name] = os.path.join(directory, f"{name}.json")
            with open(paths[name], "w") as f:
                json.dump(value, f)
        self.api.fail("POST", "routing/explain", 200, {
            **EXPLANATION, "routes": [], "rejected": True, "customer_cost": None,
            "ceiling": None, "excluded": []})
        code, out, err = self.cli(
            "route-explain", "--number", O2, "--start", START, "--plan-file", paths["plan"],
            "--connections-file", paths["connections"], "--customer-tariff-file",
            paths["retail"])
        self.assertEqual((code, err), (0, ""))
        sent = self.api.requests("POST")[0].json()
        self.assertEqual((sent["plan"], sent["connections"][0]["tariff"], sent["customer_tariff"]
                          ["rates"]["R0"]["groups"][0]["price"]),
                         ({"strategy": "lcr"}, THINQ, "0.01"))
        self.assertIn("no route: the call would be rejected\n", out)
        self.assertNotIn("Left out", out)

    def test_errors(self) -> None:
        """A plan is required; a list file must be a list; 404 and 422: one line."""
        code, _, err = self.cli("route-explain", "--number", O2, "--start", START)
        self.assertEqual(code, 2)
        self.assertIn("--plan", err)
        path = os.path.join(os.path.dirname(self.key_file), "c.json")
        with open(path, "w") as f:
            f.write('{"id": 1}')
        self.assertFails(self.cli("route-explain", "--number", O2, "--start", START, "--plan",
                                  "1", "--connections-file", path), 1,
                         f"{path}: a list of connections is a JSON list")
        self.api.fail("POST", "routing/explain", 404, {"error": "not found"})
        self.assertFails(self.cli("route-explain", "--number", O2, "--start", START, "--plan",
                                  "1"), 1,
                         "route-explain: a routing plan, connection or tariff given is not "
                         "found")
        self.api.fail("POST", "routing/explain", 422, {
            "error": "destination not rated by the customer tariff", "destination": O2})
        self.assertFails(self.cli("route-explain", "--number", O2, "--start", START, "--plan",
                                  "1"), 1,
                         "route-explain: destination not rated by the customer tariff")
        self.assertEqual(len(self.api.requests("POST")), 2)


class RealRoutingTests(RealAPITestCase):
    """Both commands against the real API on a loopback port."""

    timeout = 60

    async def setUp(self) -> None:
        """Migrate a temporary database, serve the API over it."""
        path = os.path.abspath(self.mktemp()) + ".db"
        database = Database(f"sqlite:///{path}", reactor)
        self.addCleanup(database.close)
        await migrate(database)
        await self.serve_api(database, "routing")

    async def test_blend_and_explain(self) -> None:
        """Blend two stored decks and save the result; explain a stored plan
        priced against that blend as the customer tariff."""
        repos = self.repos
        vox = await repos["tariffs"].create({"name": "voxbeam", "currency": "EUR",
                                             "document": json.loads(VOXBEAM_FILE,
                                                                    parse_float=str)}, ADMIN)
        thinq = await repos["tariffs"].create({"name": "thinq", "currency": "EUR",
                                               "document": THINQ}, ADMIN)
        code, out, err = await self.cli("blend", "--tariff", str(vox["id"]), "--tariff",
                                        str(thinq["id"]), "--margin-pct", "25", "--at", START,
                                        "--save", "uk-retail")
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[1].split()[:4], ["44", "0.0250", "0.02", "1"])
        self.assertEqual(lines[2].split()[:4], ["447783", "0.0099", "0.0079", "1"])
        self.assertRegex(lines[-1], r"^saved as tariff [0-9]+ \(uk-retail, EUR\)$")
        retail_id = int(lines[-1].split()[3])

        vendor = await repos["vendors"].create({"name": "Voxbeam"}, ADMIN)
        other = await repos["vendors"].create({"name": "ThinQ"}, ADMIN)
        ams = await repos["connections"].create({"vendor_id": vendor["id"], "name": "ams",
                                                 "address": "192.0.2.1:5060",
                                                 "tariff_id": vox["id"]}, ADMIN)
        nyc = await repos["connections"].create({"vendor_id": other["id"], "name": "nyc",
                                                 "address": "192.0.2.2:5060",
                                                 "tariff_id": thinq["id"]}, ADMIN)
        plan = await repos["routing_plans"].create(
            {"name": "uk", "entries": [{"prefix": "44",
                                        "connection_ids": [nyc["id"], ams["id"]]}]}, ADMIN)
        code, out, err = await self.cli("--json", "route-explain", "--number", O2, "--start",
                                        START, "--plan", str(plan["id"]), "--customer-tariff",
                                        str(retail_id), "--max-cost", "event_cost")
        self.assertEqual((code, err), (0, ""))
        answer = json.loads(out)
        self.assertEqual([(r["connection"], r["cost"], r["margin"]) for r in answer["routes"]],
                         [("ams", "0.0079", "0.0020")])
        self.assertEqual([(e["connection"], e["reason"]) for e in answer["excluded"]],
                         [("nyc", "profit_guarantee")])

        code, _, err = await self.cli("route-explain", "--number", O2, "--start", "noon",
                                      "--plan", str(plan["id"]))
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("b2bua-admin: route-explain: validation failed: start: "),
                        err)
        code, _, err = await self.cli("blend", "--tariff", "999", "--at", START)
        self.assertEqual((code, err), (1, "b2bua-admin: blend: a --tariff given is not found\n"))
