"""C{POST /api/v1/rating/quote} (L{oam.api.quote}): inline and stored
tariffs, the worked examples of rating.md 2.8 through the API, maximum and
announced durations from a balance, every error answer, and the route in
the OpenAPI document.  Real SQLite database, real OAM site (L{support})."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase

from oam.api.openapi import build_document
from oam.api.quote import MAX_QUOTE_DURATION_S, load_quoted, parse_quote
from tests.trial.oam.api.support import ADMIN, VERSION, Api, Reply, open_api

try:
    import jsonschema_rs
except ImportError:  # pragma: no cover - depends on the test environment
    jsonschema_rs = None

#: rating.md 2.8 example 1: connect 0.05, 60 s at 0.30/min, then 6 s increments at 0.20/min.
EXAMPLE_1 = {
    "timezone": "UTC",
    "rates": {"R1": {"connect_fee": "0.05", "groups": [
        {"start_s": 0, "price": "0.30", "unit_s": 60, "increment_s": 60},
        {"start_s": 60, "price": "0.20", "unit_s": 60, "increment_s": 6}]}},
    "entries": [{"prefixes": ["33"], "rate": "R1"},
                {"prefixes": ["3399"], "blocked": True}],
}
#: Peak Mon-Fri 08:00-18:00 (weight 10) over an always-active off-peak entry.
_PEAK = {"weekdays": [1, 2, 3, 4, 5], "start": "08:00:00", "end": "18:00:00"}


def peak_tariff(boundary: str, peak: dict[str, Any], off: dict[str, Any]) -> dict[str, Any]:
    """A tariff with a peak rate and an off-peak rate for prefix 44."""
    return {"timezone": "UTC", "period_boundary": boundary, "timings": {"peak": _PEAK},
            "rates": {"PEAK": peak, "OFF": off},
            "entries": [{"prefixes": ["44"], "timing": "peak", "rate": "PEAK", "weight": 10},
                        {"prefixes": ["44"], "rate": "OFF"}]}


#: rating.md 2.8 example 2.
EXAMPLE_2 = {
    "peak": {"connect_fee": "0.02",
             "groups": [{"start_s": 0, "price": "0.10", "unit_s": 60, "increment_s": 1}]},
    "off": {"groups": [{"start_s": 0, "price": "0.04", "unit_s": 60, "increment_s": 30}]},
}
#: rating.md 2.8 example 3.
EXAMPLE_3 = {
    "peak": {"groups": [{"start_s": 0, "price": "1.00", "unit_s": 60, "increment_s": 60}]},
    "off": {"groups": [{"start_s": 0, "price": "0.50", "unit_s": 60, "increment_s": 1}]},
}
#: rating.md 2.8 example 4: connect, time, disconnect, surcharge, minimum, max cost.
EXAMPLE_4 = {
    "timezone": "UTC",
    "rates": {"R": {"connect_fee": "0.10", "disconnect_fee": "0.05",
                    "post_call_surcharge_pct": "20", "min_charge": "1.00",
                    "groups": [{"start_s": 0, "price": "0.50", "unit_s": 60,
                                "increment_s": 60}]}},
    "entries": [{"prefixes": ["1"], "rate": "R", "max_cost": "0.90",
                 "max_cost_strategy": "free"}],
}
#: A Tuesday, 20 seconds before the end of the peak period.
TUESDAY = "2024-05-14T17:59:40Z"


def body(tariff: Any = None, **members: Any) -> dict[str, Any]:
    """A quote body: C{tariff} inline (EXAMPLE_1 by default) unless
    C{tariff_id} is among C{members}."""
    out: dict[str, Any] = {"destination": "33612345678", "start": TUESDAY, "duration_s": 75}
    if "tariff_id" not in members:
        out["tariff"] = EXAMPLE_1 if tariff is None else tariff
    out.update(members)
    return {k: v for k, v in out.items() if v is not _DROP}


_DROP = object()


class QuoteTestCase(TestCase):
    """The API with an admin key."""

    timeout = 60

    async def setUp(self) -> None:
        """Open the API and make an admin key."""
        self.api: Api = await open_api(self)
        self.admin = await self.api.key("admin")

    async def quote(self, payload: Any, key: str | None = None) -> Reply:
        """POST /rating/quote with the admin key (or C{key})."""
        return await self.api.request("POST", "rating/quote", key=key or self.admin,
                                      body=payload)

    async def ok(self, payload: Any, key: str | None = None) -> dict[str, Any]:
        """A quote that must succeed: its answer."""
        reply = await self.quote(payload, key)
        self.assertEqual(reply.code, 200, reply.body)
        answer: dict[str, Any] = reply.json()
        return answer

    async def refused(self, payload: Any, **expected: str) -> dict[str, str]:
        """A quote that must be a 422 naming exactly C{expected}'s fields."""
        reply = await self.quote(payload)
        self.assertEqual(reply.code, 422, reply.body)
        answer = reply.json()
        self.assertEqual(answer["error"], "validation failed")
        self.assertEqual(set(answer["fields"]), set(expected), answer)
        for name, part in expected.items():
            self.assertIn(part, answer["fields"][name])
        fields: dict[str, str] = answer["fields"]
        return fields


class InlineTests(QuoteTestCase):
    """Inline tariff documents and the worked examples of rating.md 2.8."""

    async def test_example_1(self) -> None:
        """75 s: 0.05 + 0.30 + 3 x 6 s x 0.20/60 = 0.41, explained."""
        answer = await self.ok(body())
        self.assertEqual(Decimal(answer["cost"]), Decimal("0.41"))
        self.assertEqual(answer["cost"], "0.4100")
        self.assertIsNone(answer["currency"])
        self.assertEqual((answer["destination"], answer["start"], answer["duration_s"],
                          answer["billable_s"], answer["free_s"], answer["status"]),
                         ("33612345678", "2024-05-14T17:59:40+00:00", 75, 75, 0, "rated"))
        entry = answer["entry"]
        self.assertEqual((entry["index"], entry["prefix"], entry["prefixes"], entry["timing"],
                          entry["weight"], entry["rate"]), (0, "33", ["33"], None, "0", "R1"))
        self.assertEqual(answer["rate"]["id"], "R1")
        self.assertEqual(answer["rate"]["connect_fee"], "0.05")
        self.assertEqual([g["increment_s"] for g in answer["rate"]["groups"]], [60, 6])
        parts = answer["components"]
        self.assertEqual([(g["group"], g["increments"], g["seconds"], Decimal(g["amount"]))
                          for g in parts["groups"]],
                         [(0, 1, 60, Decimal("0.30")), (1, 3, 18, Decimal("0.06"))])
        amounts = {k: Decimal(parts[k]) for k in (
            "connect_fee", "time_charge", "fixed_fees", "disconnect_fee", "surcharge",
            "min_charge_adjustment", "max_cost_adjustment", "unrounded")}
        self.assertEqual(amounts, {"connect_fee": Decimal("0.05"), "time_charge": Decimal("0.36"),
                                   "fixed_fees": 0, "disconnect_fee": 0, "surcharge": 0,
                                   "min_charge_adjustment": 0, "max_cost_adjustment": 0,
                                   "unrounded": Decimal("0.41")})
        self.assertEqual(parts["rounding"]["method"], "up")
        self.assertEqual(parts["rounding"]["decimals"], 4)
        self.assertEqual(Decimal(parts["rounding"]["adjustment"]), 0)
        self.assertNotIn("max_duration_s", answer)

    async def test_example_2(self) -> None:
        """Peak to off-peak at 18:00: split 0.0734, start 0.1034."""
        split = peak_tariff("split", EXAMPLE_2["peak"], EXAMPLE_2["off"])
        answer = await self.ok(body(split, destination="4420", duration_s=50))
        self.assertEqual(answer["cost"], "0.0734")
        self.assertEqual(answer["period_boundary"], "split")
        self.assertEqual(answer["entry"]["timing"], "peak")
        groups = answer["components"]["groups"]
        self.assertEqual([(g["rate_id"], g["increments"], g["seconds"]) for g in groups],
                         [("PEAK", 20, 20), ("OFF", 1, 30)])
        self.assertEqual(Decimal(answer["components"]["connect_fee"]), Decimal("0.02"))
        start = peak_tariff("start", EXAMPLE_2["peak"], EXAMPLE_2["off"])
        answer = await self.ok(body(start, destination="4420", duration_s=50))
        self.assertEqual(answer["cost"], "0.1034")

    async def test_example_3(self) -> None:
        """An increment started in peak is charged whole: 1.00 + 0.25."""
        split = peak_tariff("split", EXAMPLE_3["peak"], EXAMPLE_3["off"])
        answer = await self.ok(body(split, destination="4420", duration_s=90,
                                    start="2024-05-14T19:59:30+02:00"))
        self.assertEqual(Decimal(answer["cost"]), Decimal("1.25"))

    async def test_example_4(self) -> None:
        """0.78 with surcharge, raised to the 1.00 minimum, capped at 0.90."""
        answer = await self.ok(body(EXAMPLE_4, destination="1555", duration_s=60))
        parts = {k: Decimal(v) for k, v in answer["components"].items()
                 if isinstance(v, str)}
        self.assertEqual(parts["connect_fee"] + parts["time_charge"] + parts["disconnect_fee"]
                         + parts["surcharge"], Decimal("0.78"))
        self.assertEqual(parts["surcharge"], Decimal("0.13"))
        self.assertEqual(parts["min_charge_adjustment"], Decimal("0.22"))
        self.assertEqual(parts["max_cost_adjustment"], Decimal("-0.10"))
        self.assertEqual(answer["cost"], "0.9000")
        self.assertEqual((answer["entry"]["max_cost"], answer["entry"]["max_cost_strategy"]),
                         ("0.90", "free"))

    async def test_zero_and_grace(self) -> None:
        """0 s costs nothing; so does a call within the grace period."""
        answer = await self.ok(body(duration_s=0))
        self.assertEqual((answer["cost"], answer["status"]), ("0.0000", "zero_duration"))
        graced = copy.deepcopy(EXAMPLE_1)
        graced["rates"]["R1"]["grace_s"] = 5
        answer = await self.ok(body(graced, duration_s=5))
        self.assertEqual((answer["cost"], answer["status"]), ("0.0000", "grace"))

    async def test_any_key(self) -> None:
        """Customer and end-user keys quote inline documents."""
        tenant = await self.api.build.tenant()
        for role in ("reseller", "customer", "enduser"):
            answer = await self.ok(body(), key=await self.api.key(role, tenant))
            self.assertEqual(answer["cost"], "0.4100", role)

    async def test_plus_is_kept(self) -> None:
        """The number is matched as given: + is part of it."""
        plus = copy.deepcopy(EXAMPLE_1)
        plus["entries"] = [{"prefixes": ["+33"], "rate": "R1"}]
        answer = await self.ok(body(plus, destination="+33612345678"))
        self.assertEqual(answer["entry"]["prefix"], "+33")


class StoredTests(QuoteTestCase):
    """Tariffs stored with the API, named by id."""

    async def stored(self, document: Any = EXAMPLE_1, name: str = "retail") -> int:
        """A stored tariff's id."""
        row = await self.api.repos["tariffs"].create(
            {"name": name, "currency": "EUR", "document": document}, ADMIN)
        return int(row["id"])

    async def test_by_id(self) -> None:
        """A stored tariff is quoted with its currency."""
        tariff_id = await self.stored()
        answer = await self.ok(body(tariff_id=tariff_id))
        self.assertEqual((answer["cost"], answer["currency"]), ("0.4100", "EUR"))

    async def test_unknown_or_invisible(self) -> None:
        """An unknown id, or a tariff the key cannot see, is 404."""
        tariff_id = await self.stored()
        reply = await self.quote(body(tariff_id=tariff_id + 1))
        self.assertEqual((reply.code, reply.json()), (404, {"error": "not found"}))
        tenant = await self.api.build.tenant()
        for role in ("reseller", "customer", "enduser"):
            key = await self.api.key(role, tenant)
            reply = await self.quote(body(tariff_id=tariff_id), key=key)
            self.assertEqual((reply.code, reply.json()), (404, {"error": "not found"}), role)

    async def test_stored_document_refused(self) -> None:
        """A stored document the loader now refuses is a 422 on tariff_id."""
        tariff_id = await self.stored({"timezone": "Nowhere/Land"}, name="broken")
        fields = await self.refused(body(tariff_id=tariff_id), tariff_id="refused")
        self.assertEqual(fields["tariff_id"],
                         "the stored document is refused: rates: required (and 2 more)")


class BalanceTests(QuoteTestCase):
    """A balance adds the maximum and announced durations (rating.md 3.2)."""

    async def test_credit_limits(self) -> None:
        """0.50 buys 102 s of example 1 (0.35 + 7 increments of 0.02)."""
        answer = await self.ok(body(balance="0.50"))
        self.assertEqual((answer["balance"], answer["max_duration_s"],
                          answer["announced_duration_s"], answer["limited_by"],
                          answer["reason"], answer["may_announce"], answer["cap_s"]),
                         ("0.50", 102, 102, "credit", None, True, 10800))
        self.assertEqual(Decimal(answer["max_duration_cost"]), Decimal("0.49"))
        self.assertEqual(answer["cost"], "0.4100")

    async def test_tricky_connect_fee(self) -> None:
        """A tricky connect fee is left out of the announced duration only."""
        tricky = copy.deepcopy(EXAMPLE_1)
        tricky["rates"]["R1"]["connect_fee_tricky"] = True
        answer = await self.ok(body(tricky, balance="0.50"))
        self.assertEqual((answer["max_duration_s"], answer["announced_duration_s"]), (102, 120))

    async def test_refused(self) -> None:
        """Less than the minimum call: 0 s, insufficient credit; a negative balance too."""
        for balance in ("0.34", "-5"):
            answer = await self.ok(body(balance=balance))
            self.assertEqual((answer["max_duration_s"], answer["limited_by"], answer["reason"],
                              answer["may_announce"]),
                             (0, "refused", "insufficient_credit", False), balance)

    async def test_cap(self) -> None:
        """A large balance is capped at 3 h."""
        answer = await self.ok(body(balance="1000000"))
        self.assertEqual((answer["max_duration_s"], answer["limited_by"]), (10800, "cap"))

    async def test_long_grace(self) -> None:
        """No maximum duration for a grace period over a day (bounded work)."""
        graced = copy.deepcopy(EXAMPLE_1)
        graced["rates"]["R1"]["grace_s"] = MAX_QUOTE_DURATION_S + 1
        await self.refused(body(graced, balance="1"), balance="grace period")
        answer = await self.ok(body(graced))
        self.assertEqual(answer["status"], "grace")


class ErrorTests(QuoteTestCase):
    """Every error answer."""

    async def test_bad_fields(self) -> None:
        """Each bad field is named, all in one answer."""
        await self.refused(body(destination="33-61", start="2024-05-14T17:59:40",
                                duration_s=-1, balance="1e3", colour="red"),
                           destination="digits", start="offset", duration_s="integer",
                           balance="decimal", colour="unknown field")
        for value in ("60", True, 1.5, MAX_QUOTE_DURATION_S + 1, None):
            await self.refused(body(duration_s=value), duration_s="integer")
        for value in ("33 61", "", "3" * 33, 33, "33\n"):
            await self.refused(body(destination=value), destination="digits")
        for value in ("2024-02-30T10:00:00Z", "0001-01-01T00:00:00+01:00", "tomorrow", 0):
            await self.refused(body(start=value), start="")
        for value in (None, 10, "", "1.", "+1", "1.1234567890123"):
            await self.refused(body(balance=value), balance="decimal")

    async def test_tariff_choice(self) -> None:
        """Exactly one of tariff_id and tariff."""
        await self.refused(body(tariff_id=_DROP, tariff=_DROP), tariff_id="required")
        await self.refused({**body(), "tariff_id": 1}, tariff="not both")
        for value in (0, "1", True, 2**63, None):
            await self.refused(body(tariff_id=value), tariff_id="integer")

    async def test_bad_document(self) -> None:
        """The loader's problems, named tariff.<key path>, with the other fields."""
        document = copy.deepcopy(EXAMPLE_1)
        document["timezone"] = "Nowhere/Land"
        document["rates"]["R1"]["groups"][0]["price"] = "-1"
        document["colour"] = "red"
        await self.refused(body(document, destination="x"), destination="digits",
                           **{"tariff.timezone": "unknown IANA time zone",
                              "tariff.rates.R1.groups[0].price": "must be >= 0",
                              "tariff.colour": "unknown key"})
        await self.refused(body([1]), tariff="must be an object")
        await self.refused({**body(), "tariff": None}, tariff="must be an object")

    async def test_destination_rejected(self) -> None:
        """A number no entry rates, or a blocked one: 422 saying which."""
        reply = await self.quote(body(destination="49301234"))
        self.assertEqual((reply.code, reply.json()),
                         (422, {"error": "destination not rated", "destination": "49301234"}))
        reply = await self.quote(body(destination="339912"))
        self.assertEqual((reply.code, reply.json()),
                         (422, {"error": "destination blocked", "destination": "339912"}))

    async def test_inexact(self) -> None:
        """Amounts beyond exact arithmetic are a 422, not a crash."""
        huge = copy.deepcopy(EXAMPLE_1)
        huge["rates"]["R1"]["groups"][0]["price"] = "1." + "7" * 99
        await self.refused(body(huge), tariff="exactly")
        self.assertEqual(self.api.errors(), 0)

    async def test_protocol_errors(self) -> None:
        """401 without a key, 400 for bad JSON, 415 for another type, 405 for
        GET, 404 below the route, 422 for a body that is not an object."""
        reply = await self.api.request("POST", "rating/quote", body=body())
        self.assertEqual(reply.code, 401)
        reply = await self.api.request("POST", "rating/quote", key=self.admin, raw=b"{",
                                       content_type="application/json")
        self.assertEqual((reply.code, reply.json()["error"]), (400, "malformed JSON"))
        reply = await self.api.request("POST", "rating/quote", key=self.admin, raw=b"x",
                                       content_type="text/plain")
        self.assertEqual(reply.code, 415)
        reply = await self.api.request("GET", "rating/quote", key=self.admin)
        self.assertEqual((reply.code, reply.header("Allow")), (405, "POST"))
        for path in ("rating", "rating/", "rating/quote/more", "rating/other"):
            reply = await self.api.request("POST", path, key=self.admin, body=body())
            self.assertEqual(reply.code, 404, path)
        await self.refused([body()], body="must be an object")
        self.assertEqual(self.api.errors(), 0)


class DocumentTests(QuoteTestCase):
    """The route in the OpenAPI document."""

    async def test_listed(self) -> None:
        """The served document lists POST /rating/quote with its schemas."""
        document = (await self.api.request("GET", "openapi.json")).json()
        operation = document["paths"]["/rating/quote"]["post"]
        self.assertEqual(operation["operationId"], "quote_call")
        self.assertEqual(operation["requestBody"]["content"]["application/json"]["schema"],
                         {"$ref": "#/components/schemas/QuoteRequest"})
        self.assertIn("200", operation["responses"])
        self.assertIn("422", operation["responses"])
        self.assertIn("404", operation["responses"])
        self.assertIn({"name": "rating"}, document["tags"])
        request = document["components"]["schemas"]["QuoteRequest"]
        self.assertEqual(set(request["properties"]),
                         {"tariff_id", "tariff", "destination", "start", "duration_s",
                          "balance"})
        self.assertEqual(request["properties"]["duration_s"]["maximum"], MAX_QUOTE_DURATION_S)
        without = build_document(VERSION, ())
        self.assertNotIn("/rating/quote", without["paths"])

    async def test_answers_match(self) -> None:
        """Requests and answers validate against the document's schemas."""
        if jsonschema_rs is None:
            raise self.skipTest("jsonschema_rs (installed with schemathesis) is missing")
        document = (await self.api.request("GET", "openapi.json")).json()

        def valid(schema: str, value: Any) -> bool:
            validator = jsonschema_rs.Draft202012Validator(
                {"$ref": f"#/components/schemas/{schema}", "components": document["components"]})
            return bool(validator.is_valid(value))

        request = body(balance="0.50")
        self.assertTrue(valid("QuoteRequest", request))
        self.assertFalse(valid("QuoteRequest", {**request, "tariff_id": 1}))
        self.assertFalse(valid("QuoteRequest", {**request, "duration_s": -1}))
        self.assertTrue(valid("Quote", await self.ok(request)))
        self.assertTrue(valid("Quote", await self.ok(body(duration_s=0))))
        rejected = (await self.quote(body(destination="49"))).json()
        self.assertTrue(valid("Error", rejected))
        self.assertTrue(valid("ValidationError", (await self.quote(body(start=1))).json()))


class ParseTests(SynchronousTestCase):
    """The pure helpers, without HTTP."""

    def test_parse(self) -> None:
        """A good body becomes a request; the offset is kept."""
        ask, errors = parse_quote(body(balance="2.5"))
        self.assertEqual(errors, {})
        assert ask is not None
        self.assertEqual((ask.destination, ask.duration_s, ask.balance, ask.tariff_id),
                         ("33612345678", 75, Decimal("2.5"), None))
        self.assertEqual(ask.start.utcoffset().total_seconds(), 0)  # type: ignore[union-attr]

    def test_load_problems(self) -> None:
        """Problems of one path are joined; a stored document gets one summary."""
        tariff, errors = load_quoted({"timezone": "UTC", "rates": {}, "entries": [
            {"prefixes": ["1"], "max_cost": "1"}]}, "tariff")
        self.assertIsNone(tariff)
        self.assertIn("tariff.entries[0].rate", errors)
        _, errors = load_quoted({"timezone": "UTC"}, "tariff_id")
        self.assertEqual(list(errors), ["tariff_id"])
        self.assertIn("(and 1 more)", errors["tariff_id"])
