"""C{POST /api/v1/routing/explain} and C{POST /api/v1/routing/blend}
(L{oam.api.routing}): inline and stored plans, connections, vendors and
tariffs; exclusions with reasons; the profit guarantee with a customer
tariff; blends returned and saved; every error answer; the routes in the
OpenAPI document and real answers against their schemas.  Real SQLite
database, real OAM site (L{tests.trial.oam.api.support}), as the quote
tests do."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from oam.api.openapi import build_document
from tests.trial.oam.api.support import ADMIN, VERSION, Api, Reply, open_api
from tests.trial.plugins.trunking.decks import deck

try:
    import jsonschema_rs
except ImportError:  # pragma: no cover - depends on the test environment
    jsonschema_rs = None

START = "2024-05-14T10:00:00Z"
O2 = "447783855111"
#: cgrates #180: voxbeam's O2 range is far cheaper than its UK-mobile rate.
VOXBEAM = deck(("44", "0.0955"), ("447783", "0.0079"))
THINQ = deck(("44", "0.0200"))
US_ONLY = deck(("1", "0.0050"))
RETAIL = deck(("44", "0.0150"))


def inline(connection_id: int, vendor: str, document: Any, **more: Any) -> dict[str, Any]:
    """An inline connection of C{vendor} with an inline tariff."""
    return {"id": connection_id, "vendor": vendor, "tariff": document, **more}


class RoutingTestCase(TestCase):
    """The API with an admin key."""

    timeout = 60

    async def setUp(self) -> None:
        """Open the API and make an admin key."""
        self.api: Api = await open_api(self)
        self.admin = await self.api.key("admin")

    async def post(self, path: str, payload: Any, key: str | None = None) -> Reply:
        """POST /routing/<path> with the admin key (or C{key})."""
        return await self.api.request("POST", f"routing/{path}", key=key or self.admin,
                                      body=payload)

    async def ok(self, path: str, payload: Any, key: str | None = None,
                 code: int = 200) -> dict[str, Any]:
        """A request that must succeed with C{code}: its answer."""
        reply = await self.post(path, payload, key)
        self.assertEqual(reply.code, code, reply.body)
        answer: dict[str, Any] = reply.json()
        return answer

    async def refused(self, path: str, payload: Any, **expected: str) -> dict[str, str]:
        """A 422 naming exactly C{expected}'s members (each message containing its value)."""
        reply = await self.post(path, payload)
        self.assertEqual(reply.code, 422, reply.body)
        answer = reply.json()
        self.assertEqual(answer["error"], "validation failed")
        self.assertEqual(set(answer["fields"]), set(expected), answer)
        for name, part in expected.items():
            self.assertIn(part, answer["fields"][name])
        fields: dict[str, str] = answer["fields"]
        return fields

    async def stored(self) -> dict[str, Any]:
        """Vendors, tariffs, connections and a UK routing plan in the database."""
        repos = self.api.repos
        ids: dict[str, Any] = {}
        for name, currency, document in (("voxbeam", "EUR", VOXBEAM), ("thinq", "EUR", THINQ),
                                         ("us", "EUR", US_ONLY), ("retail", "EUR", RETAIL),
                                         ("dollars", "USD", THINQ)):
            row = await repos["tariffs"].create({"name": name, "currency": currency,
                                                 "document": document}, ADMIN)
            ids[f"tariff:{name}"] = row["id"]
        for name, status in (("Voxbeam", "active"), ("ThinQ", "active"),
                             ("Sleepy", "suspended")):
            row = await repos["vendors"].create({"name": name, "status": status}, ADMIN)
            ids[f"vendor:{name}"] = row["id"]
        for name, vendor, tariff, enabled in (
                ("vox-ams", "Voxbeam", "voxbeam", True), ("thinq-1", "ThinQ", "thinq", True),
                ("thinq-us", "ThinQ", "us", True), ("vox-off", "Voxbeam", "voxbeam", False),
                ("sleepy", "Sleepy", "thinq", True), ("usd", "ThinQ", "dollars", True),
                ("bare", "ThinQ", None, True)):
            row = await repos["connections"].create(
                {"vendor_id": ids[f"vendor:{vendor}"], "name": name,
                 "address": "192.0.2.1:5060", "enabled": enabled,
                 "tariff_id": ids[f"tariff:{tariff}"] if tariff else None}, ADMIN)
            ids[name] = row["id"]
        row = await repos["routing_plans"].create(
            {"name": "uk", "strategy": "lcr", "entries": [
                {"prefix": "44", "connection_ids": [ids[n] for n in (
                    "thinq-1", "vox-ams", "thinq-us", "vox-off", "sleepy", "usd", "bare")] + [999],
                 "weight": 1},
                {"prefix": "33", "connection_ids": [ids["thinq-1"]]}]}, ADMIN)
        ids["plan"] = row["id"]
        return ids


class ExplainInlineTests(RoutingTestCase):
    """Everything inline: any key may ask."""

    def body(self, **members: Any) -> dict[str, Any]:
        """Three inline vendors for an O2 number under a catch-all plan."""
        out: dict[str, Any] = {
            "number": O2, "start": START, "plan": {"strategy": "lcr"},
            "connections": [inline(1, "voxbeam", VOXBEAM), inline(2, "thinq", THINQ),
                            inline(3, "us-only", US_ONLY)]}
        out.update(members)
        return out

    async def test_ranking(self) -> None:
        """The O2 range wins at 0.0079; the US-only deck is left out with a
        reason; the others are ranked; amounts are decimal strings."""
        answer = await self.ok("explain", self.body())
        self.assertEqual([(r["connection_id"], r["matched_prefix"], r["cost"])
                          for r in answer["routes"]],
                         [(1, "447783", "0.0079"), (2, "44", "0.0200")])
        self.assertEqual([(e["connection_id"], e["reason"]) for e in answer["excluded"]],
                         [(3, "no_rate")])
        self.assertEqual((answer["strategy"], answer["duration_s"], answer["currency"],
                          answer["rejected"], answer["routing_plan_id"]),
                         ("lcr", 60, None, False, None))
        self.assertEqual(answer["routes"][0]["plan_prefix"], "*any")
        self.assertEqual(answer["routes"][0]["rate"]["price"], "0.0079")

    async def test_plan_entries_and_weights(self) -> None:
        """A plan with entries: longer plan prefixes first; priority by weight."""
        body = self.body(plan={"strategy": "priority", "entries": [
            {"prefix": "44", "connection_ids": [1], "weight": "1"},
            {"prefix": "44", "connection_ids": [2], "weight": 5},
            {"prefix": "4477", "connection_ids": [3]}]})
        answer = await self.ok("explain", body)
        self.assertEqual([r["connection_id"] for r in answer["routes"]], [2, 1])
        self.assertEqual(answer["excluded"][0]["plan_prefix"], "4477")

    async def test_profit_guarantee(self) -> None:
        """An inline customer tariff (0.0150/min) drops thinq (0.0200)."""
        answer = await self.ok("explain", self.body(customer_tariff=RETAIL,
                                                    profit_guarantee={}))
        self.assertEqual((answer["customer_cost"], answer["ceiling"]), ("0.0150", "0.0150"))
        self.assertEqual([(r["connection_id"], r["margin"]) for r in answer["routes"]],
                         [(1, "0.0071")])
        self.assertIn((2, "profit_guarantee"), [(e["connection_id"], e["reason"])
                                                for e in answer["excluded"]])
        lossy = await self.ok("explain", self.body(
            customer_tariff=deck(("44", "0.0010")), duration_s=120,
            profit_guarantee={"on_empty": "cheapest"}))
        self.assertEqual((lossy["loss"], lossy["routes"][0]["cost"], lossy["duration_s"]),
                         (True, "0.0158", 120))

    async def test_unavailable_and_quality(self) -> None:
        """An unavailable connection is left out; quality orders by ASR."""
        answer = await self.ok("explain", self.body(
            unavailable=[1], plan={"strategy": "quality"},
            quality={"2": {"asr": "0.5"}, "3": {"asr": "0.9"}}))
        self.assertEqual([r["connection_id"] for r in answer["routes"]], [2])
        self.assertEqual({e["connection_id"]: e["reason"] for e in answer["excluded"]},
                         {1: "unavailable", 3: "no_rate"})

    async def test_connection_weight(self) -> None:
        """An inline connection's weight ranks it among equal routes."""
        body = self.body(connections=[inline(1, "a", THINQ), inline(2, "b", THINQ, weight=3)])
        answer = await self.ok("explain", body)
        self.assertEqual([(r["connection_id"], r["connection_weight"])
                          for r in answer["routes"]], [(2, 3), (1, 0)])
        await self.refused("explain", self.body(connections=[inline(1, "a", THINQ,
                                                                    weight="3")]),
                           **{"connections[0].weight": "integer"})

    async def test_weighted_seed(self) -> None:
        """A seed makes the weighted draw reproducible."""
        body = self.body(plan={"strategy": "weighted", "entries": [
            {"prefix": "44", "connection_ids": [1, 2], "weight": 1}]}, seed=42)
        first = await self.ok("explain", body)
        again = await self.ok("explain", body)
        self.assertEqual(first, again)

    async def test_any_key(self) -> None:
        """Customer and end-user keys explain inline plans."""
        tenant = await self.api.build.tenant()
        for role in ("customer", "enduser"):
            answer = await self.ok("explain", self.body(), await self.api.key(role, tenant))
            self.assertEqual(len(answer["routes"]), 2)

    async def test_customer_does_not_rate(self) -> None:
        """A customer tariff without the number: 422 saying so."""
        reply = await self.post("explain", self.body(customer_tariff=US_ONLY))
        self.assertEqual((reply.code, reply.json()),
                         (422, {"error": "destination not rated by the customer tariff",
                                "destination": O2}))
        blocked = deck(("1", "0.01"), blocked=("44",))
        reply = await self.post("explain", self.body(customer_tariff=blocked))
        self.assertEqual(reply.json()["error"], "destination blocked by the customer tariff")


class ExplainStoredTests(RoutingTestCase):
    """Stored plans, connections, vendors and tariffs."""

    async def test_stored_plan(self) -> None:
        """Candidates come from the plan's matching entry: ranked, and every
        other one left out with its reason (a missing connection too)."""
        ids = await self.stored()
        answer = await self.ok("explain", {"number": O2, "start": START,
                                           "routing_plan_id": ids["plan"],
                                           "customer_tariff_id": ids["tariff:retail"]})
        self.assertEqual([(r["connection_id"], r["vendor"], r["connection"], r["cost"],
                           r["margin"]) for r in answer["routes"]],
                         [(ids["vox-ams"], "Voxbeam", "vox-ams", "0.0079", "0.0071"),
                          (ids["thinq-1"], "ThinQ", "thinq-1", "0.0200", "-0.0050")])
        self.assertEqual({e["connection_id"]: e["reason"] for e in answer["excluded"]}, {
            999: "unknown_connection", ids["vox-off"]: "disabled",
            ids["sleepy"]: "vendor_inactive", ids["usd"]: "currency_mismatch",
            ids["bare"]: "no_tariff", ids["thinq-us"]: "no_rate"})
        self.assertEqual((answer["currency"], answer["routing_plan_id"]), ("EUR", ids["plan"]))
        guarded = await self.ok("explain", {"number": O2, "start": START,
                                            "routing_plan_id": ids["plan"],
                                            "customer_tariff_id": ids["tariff:retail"],
                                            "profit_guarantee": {"max_cost": "event_cost"}})
        self.assertEqual([r["connection_id"] for r in guarded["routes"]], [ids["vox-ams"]])

    async def test_given_connections(self) -> None:
        """Stored connection ids, mixed with an inline one using a stored tariff."""
        ids = await self.stored()
        answer = await self.ok("explain", {
            "number": O2, "start": START, "routing_plan_id": ids["plan"],
            "connections": [ids["thinq-1"], {"id": 999, "vendor": "lab",
                                              "tariff_id": ids["tariff:voxbeam"]}]})
        self.assertEqual([r["connection_id"] for r in answer["routes"]], [999, ids["thinq-1"]])
        self.assertEqual({e["reason"] for e in answer["excluded"]}, {"unknown_connection"})

    async def test_stored_rows_are_admin_only(self) -> None:
        """Another key gets 404 for a stored plan, connection or tariff id."""
        ids = await self.stored()
        key = await self.api.key("customer", await self.api.build.tenant())
        for body in ({"number": O2, "start": START, "routing_plan_id": ids["plan"]},
                     {"number": O2, "start": START, "plan": {},
                      "connections": [ids["thinq-1"]]},
                     {"number": O2, "start": START, "plan": {},
                      "connections": [inline(1, "x", THINQ)],
                      "customer_tariff_id": ids["tariff:retail"]}):
            reply = await self.post("explain", body, key)
            self.assertEqual((reply.code, reply.json()), (404, {"error": "not found"}), body)
        reply = await self.post("explain", {"number": O2, "start": START,
                                            "routing_plan_id": 12345})
        self.assertEqual(reply.code, 404)

    async def test_refused_stored_documents(self) -> None:
        """A stored plan or customer tariff the loaders now refuse is a 422
        on its id; a vendor's is only that vendor's exclusion."""
        ids = await self.stored()
        plan = await self.api.repos["routing_plans"].create(
            {"name": "broken", "entries": [{"prefix": "44"}]}, ADMIN)
        await self.refused("explain", {"number": O2, "start": START,
                                       "routing_plan_id": plan["id"]},
                           routing_plan_id="the stored plan is refused: "
                                           "entries[0].connection_ids")
        broken = await self.api.repos["tariffs"].create(
            {"name": "broken", "currency": "EUR", "document": {"timezone": "UTC"}}, ADMIN)
        await self.api.repos["connections"].update(ids["thinq-1"],
                                                   {"tariff_id": broken["id"]}, ADMIN)
        answer = await self.ok("explain", {"number": O2, "start": START,
                                           "routing_plan_id": ids["plan"]})
        excluded = {e["connection_id"]: e for e in answer["excluded"]}
        self.assertEqual(excluded[ids["thinq-1"]]["reason"], "invalid_tariff")
        self.assertIn("the stored document is refused", excluded[ids["thinq-1"]]["detail"])
        await self.refused("explain", {"number": O2, "start": START,
                                       "routing_plan_id": ids["plan"],
                                       "customer_tariff_id": broken["id"]},
                           customer_tariff_id="the stored document is refused")


class ExplainErrorTests(RoutingTestCase):
    """Bad bodies: each member named; nothing else answered."""

    async def test_members(self) -> None:
        """Every bad member is named once."""
        await self.refused("explain", {"number": "44-12", "start": "yesterday",
                                        "plan": {"strategy": "cheap", "entries": [
                                            {"prefix": "x", "connection_ids": [1]}]},
                                        "duration_s": 0, "colour": "red", "seed": -1,
                                        "unavailable": "all", "quality": {"x": {}},
                                        "connections": [1, 1, "two", {"id": 3, "extra": 1,
                                                                      "enabled": "yes"}]},
                           number="digits", start="ISO 8601", duration_s="from 1",
                           colour="unknown field", seed="from 0", unavailable="list",
                           **{"plan.strategy": "one of", "plan.entries[0].prefix": "digits",
                              "quality.x": "connection id", "connections[1]": "twice",
                              "connections[2]": "connection id",
                              "connections[3].extra": "unknown field",
                              "connections[3].enabled": "true or false"})

    async def test_plan_choice(self) -> None:
        """One of routing_plan_id and plan; a plan without entries needs connections."""
        await self.refused("explain", {"number": O2, "start": START},
                           routing_plan_id="required")
        await self.refused("explain", {"number": O2, "start": START, "routing_plan_id": 1,
                                       "plan": {}}, plan="not both")
        await self.refused("explain", {"number": O2, "start": START, "plan": {}},
                           connections="without entries")

    async def test_inline_documents(self) -> None:
        """An inline tariff's problems are named under its member path."""
        bad = {"timezone": "UTC", "rates": {"R": {"groups": [
            {"start_s": 0, "price": "x", "unit_s": 60, "increment_s": 60}]}}, "entries": []}
        await self.refused("explain", {"number": O2, "start": "x", "plan": {},
                                       "connections": [inline(1, "a", bad)],
                                       "customer_tariff": {"timezone": "Mars/Olympus"}},
                           start="ISO 8601",
                           **{"connections[0].tariff.rates.R.groups[0].price": "decimal",
                              "customer_tariff.timezone": "unknown IANA time zone",
                              "customer_tariff.rates": "required",
                              "customer_tariff.entries": "required"})

    async def test_guarantee_needs_customer(self) -> None:
        """An event-cost guarantee without a customer tariff; a guarantee twice."""
        await self.refused("explain", {"number": O2, "start": START, "plan": {},
                                       "connections": [], "profit_guarantee": {}},
                           customer_tariff_id="required by the profit guarantee")
        await self.refused("explain", {"number": O2, "start": START,
                                       "plan": {"profit_guarantee": {"max_cost": "1"}},
                                       "connections": [],
                                       "profit_guarantee": {"on_empty": "sometimes"}},
                           profit_guarantee="give it once",
                           **{"profit_guarantee.on_empty": "one of"})

    async def test_transport_errors(self) -> None:
        """No key 401, wrong type 415, not JSON 400, GET 405; nothing counted as a bug."""
        reply = await self.api.request("POST", "routing/explain", body={})
        self.assertEqual(reply.code, 401)
        reply = await self.api.request("POST", "routing/explain", key=self.admin, raw=b"{",
                                       content_type="application/json")
        self.assertEqual(reply.code, 400)
        reply = await self.api.request("POST", "routing/blend", key=self.admin, raw=b"{}",
                                       content_type="text/plain")
        self.assertEqual(reply.code, 415)
        reply = await self.api.request("GET", "routing/explain", key=self.admin)
        self.assertEqual((reply.code, reply.header("Allow")), (405, "POST"))
        reply = await self.api.request("POST", "routing/nothing", key=self.admin, body={})
        self.assertEqual(reply.code, 404)
        self.assertEqual(self.api.errors(), 0)


class BlendTests(RoutingTestCase):
    """Blends, returned and saved."""

    def body(self, **members: Any) -> dict[str, Any]:
        """Two inline vendor decks at depth 2 with a 10 % margin."""
        out: dict[str, Any] = {
            "vendors": [{"tariff": VOXBEAM, "name": "voxbeam"}, {"tariff": THINQ}],
            "at": START, "depth": 2, "margin_pct": "10"}
        out.update(members)
        return out

    async def test_inline(self) -> None:
        """The second cheapest plus 10 %, rounded up; a loadable document."""
        answer = await self.ok("blend", self.body())
        sells = {d["prefix"]: d["sell"] for d in answer["destinations"]}
        self.assertEqual(sells, {"44": "0.1051", "447783": "0.0220"})
        self.assertEqual(answer["destinations"][1]["vendors"][0]["vendor"], "voxbeam")
        self.assertEqual(answer["destinations"][1]["vendors"][1]["vendor"], "vendor 2")
        self.assertEqual((answer["uncovered"], answer["short"], answer["currency"]),
                         ([], [], None))
        quoted = await self.api.request("POST", "rating/quote", key=self.admin, body={
            "tariff": answer["document"], "destination": O2, "start": START,
            "duration_s": 60})
        self.assertEqual(quoted.json()["cost"], "0.0220")

    async def test_options(self) -> None:
        """A code deck, clamps, rounding, zone and effective date as asked."""
        answer = await self.ok("blend", self.body(
            depth=1, margin_pct=0, margin_abs="0.001", max_sell="0.05", min_markup_abs=0,
            rounding={"method": "half_up", "decimals": 3}, prefixes=["44", "1", "4477"],
            timezone="Europe/London", effective_from="2024-07-01T00:00:00+01:00",
            tariff_rounding={"decimals": 2}, method="average"))
        self.assertEqual({d["prefix"]: d["sell"] for d in answer["destinations"]},
                         {"44": "0.021", "4477": "0.021"})
        self.assertEqual(answer["uncovered"], ["1"])
        document = answer["document"]
        self.assertEqual((document["timezone"], document["rounding"]),
                         ("Europe/London", {"method": "up", "decimals": 2}))
        self.assertEqual(document["entries"][0]["effective_from"], "2024-07-01T00:00:00+01:00")

    async def test_stored_and_saved(self) -> None:
        """Stored vendor tariffs (named after their rows, in EUR), saved as a
        new tariff: 201, Location, the row; the same name again: 409."""
        ids = await self.stored()
        body = {"vendors": [{"tariff_id": ids["tariff:voxbeam"]},
                            {"tariff_id": ids["tariff:thinq"], "weight": 2}],
                "at": START, "save": {"name": "uk-retail"}}
        reply = await self.post("blend", body)
        self.assertEqual(reply.code, 201, reply.body)
        answer = reply.json()
        row = answer["tariff"]
        self.assertEqual((row["name"], row["currency"], answer["currency"]),
                         ("uk-retail", "EUR", "EUR"))
        self.assertEqual(reply.header("Location"), f"/api/v1/tariffs/{row['id']}")
        self.assertEqual(row["document"], answer["document"])
        self.assertEqual(answer["destinations"][0]["vendors"][0]["vendor"], "thinq")
        stored = await self.api.repos["tariffs"].get(row["id"], ADMIN)
        self.assertEqual(stored["document"], answer["document"])
        again = await self.post("blend", body)
        self.assertEqual((again.code, again.json()["error"]), (409, "conflict"))

    async def test_currencies(self) -> None:
        """Vendor tariffs in two currencies, a save in a third, a save with none."""
        ids = await self.stored()
        await self.refused("blend", {"vendors": [{"tariff_id": ids["tariff:thinq"]},
                                                 {"tariff_id": ids["tariff:dollars"]}],
                                     "at": START}, vendors="EUR, USD")
        await self.refused("blend", {"vendors": [{"tariff_id": ids["tariff:thinq"]}],
                                     "at": START, "save": {"name": "x", "currency": "USD"}},
                           **{"save.currency": "in EUR"})
        await self.refused("blend", self.body(save={"name": "x"}),
                           **{"save.currency": "required"})
        answer = await self.ok("blend", self.body(save={"name": "inline", "currency": "GBP"}),
                               code=201)
        self.assertEqual(answer["tariff"]["currency"], "GBP")

    async def test_keys(self) -> None:
        """Any key blends inline documents; only admin keys save or read
        stored vendor tariffs (404 for others)."""
        ids = await self.stored()
        key = await self.api.key("customer", await self.api.build.tenant())
        await self.ok("blend", self.body(), key)
        reply = await self.post("blend", self.body(save={"name": "mine", "currency": "EUR"}),
                                key)
        self.assertEqual((reply.code, reply.json()), (403, {"error": "forbidden"}))
        reply = await self.post("blend", {"vendors": [{"tariff_id": ids["tariff:thinq"]}],
                                          "at": START}, key)
        self.assertEqual(reply.code, 404)

    async def test_members(self) -> None:
        """Each bad member named, inline documents by path."""
        await self.refused("blend", {"vendors": [{"tariff": {"timezone": "UTC", "rates": {},
                                                             "entries": [{}]}},
                                                 {"tariff_id": 1, "tariff": THINQ},
                                                 {"name": ""}, "x"],
                                     "at": "now", "depth": 11, "method": "median",
                                     "margin_pct": "-1", "min_sell": "2", "max_sell": "1",
                                     "rounding": {"method": "up", "decimals": 7},
                                     "prefixes": ["4a"], "timezone": "Mars/Olympus",
                                     "save": {"name": ""}},
                           at="ISO 8601", depth="from 1", method="one of",
                           margin_pct="decimal", max_sell="below min_sell",
                           prefixes="prefixes", timezone="IANA",
                           **{"vendors[0].tariff.entries[0].prefixes": "required",
                              "vendors[0].tariff.entries[0].rate": "required unless blocked",
                              "vendors[1].tariff": "not both",
                              "vendors[2].tariff_id": "required",
                              "vendors[2].name": "1 to 255", "vendors[3]": "an object",
                              "rounding.decimals": "0 to 6", "save.name": "required"})
        await self.refused("blend", {"at": START}, vendors="1 to 20")


class OpenAPITests(RoutingTestCase):
    """The routes in the document; real answers against their schemas."""

    async def test_document(self) -> None:
        """Both operations, tagged routing, with their schemas; the document
        stays valid JSON Schema."""
        document = build_document(VERSION)
        paths = document["paths"]
        self.assertEqual(paths["/routing/explain"]["post"]["operationId"], "explain_routing")
        self.assertEqual(paths["/routing/blend"]["post"]["operationId"], "blend_tariff")
        self.assertIn({"name": "routing"}, document["tags"])
        self.assertIn("201", paths["/routing/blend"]["post"]["responses"])
        schemas = document["components"]["schemas"]
        if jsonschema_rs is not None:
            for name in ("RoutingExplainRequest", "RoutingExplanation", "BlendRequest",
                         "BlendedTariff", "RoutingPlanDocument", "ProfitGuarantee"):
                self.assertTrue(jsonschema_rs.meta.is_valid(schemas[name]), name)
        served = (await self.api.request("GET", "openapi.json")).json()
        self.assertIn("/routing/blend", served["paths"])

    async def test_answers_match(self) -> None:
        """Requests and answers validate against the document's schemas."""
        if jsonschema_rs is None:
            raise self.skipTest("jsonschema_rs (installed with schemathesis) is missing")
        document = build_document(VERSION)

        def check(schema: str, value: Any) -> None:
            validator = jsonschema_rs.Draft202012Validator(
                {"$ref": f"#/components/schemas/{schema}", "components": document["components"]})
            self.assertEqual([str(e) for e in validator.iter_errors(value)], [], (schema, value))

        ids = await self.stored()
        explain = {"number": O2, "start": START, "routing_plan_id": ids["plan"],
                   "customer_tariff_id": ids["tariff:retail"],
                   "profit_guarantee": {"on_empty": "cheapest"}, "quality": {"1": {"asr": "1"}}}
        check("RoutingExplainRequest", explain)
        check("RoutingExplanation", await self.ok("explain", explain))
        inline_body = {"number": O2, "start": START,
                       "plan": {"entries": [{"prefix": "", "connection_ids": [1, 2]}]},
                       "connections": [inline(1, "a", VOXBEAM), {"id": 2}]}
        check("RoutingExplainRequest", inline_body)
        check("RoutingExplanation", await self.ok("explain", inline_body))
        blend = {"vendors": [{"tariff_id": ids["tariff:voxbeam"]}, {"tariff": THINQ}],
                 "at": START, "effective_from": START, "save": {"name": "b"}}
        check("BlendRequest", blend)
        check("BlendedTariff", await self.ok("blend", blend, code=201))
        check("ValidationError", (await self.post("blend", {"at": START})).json())
