"""Tests for L{rating.cdr}: building a call's CDR from its L{CallRecord}
and charging data, and the CDR's journal and SQL forms."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.call import CallRecord, LegRecord
from rating.cdr import CDR, DISPOSITIONS, MAX_TEXT, build_cdr, cdr_for_call, disposition_for

T0 = 1_700_000_000.0


def record(code: int = 200, answered: float | None = 5.25, ended: float = 65.5,
           disconnect: str = "caller", legs: list[LegRecord] | None = None) -> CallRecord:
    """A call received at L{T0}: answered C{answered} s later unless None."""
    if legs is None:
        legs = [
            LegRecord("vendor:slow", "sip:+3120555@192.0.2.1", T0 + 0.1, None, T0 + ended,
                      503, "Service Unavailable"),
            LegRecord("vendor:good", "sip:+3120555@192.0.2.2", T0 + 1.0,
                      None if answered is None else T0 + answered, T0 + ended, code,
                      "OK" if code == 200 else "Nope"),
        ]
    return CallRecord(
        call_id="a84b4c76e66710@pc33.example.com", caller="sip:1000@127.0.0.1",
        callee="sip:+3120555@127.0.0.1", tenant="127.0.0.1", received_at=T0,
        answered_at=None if answered is None else T0 + answered, ended_at=T0 + ended,
        code=code, reason="OK" if code == 200 else "Nope", disconnect=disconnect, legs=legs)


class FakeBreakdown:
    """Stands for L{rating.cost.Breakdown}: something with C{as_dict()}."""

    def as_dict(self) -> dict[str, Any]:
        """Decimals and a datetime, as the real one has."""
        return {"cost": Decimal("0.070000"), "rate_id": "NL-mob",
                "answered_at": dt.datetime(2023, 11, 14, 22, 13, 25, tzinfo=dt.UTC)}


@dataclass
class Charging:
    """Charging data as an object (the other accepted shape)."""

    cost: Any = Decimal("0.07")
    currency: str = "EUR"
    customer_id: int | None = 12
    account_id: int | None = 34
    legs: Any = field(default_factory=dict)


class BuildTests(SynchronousTestCase):
    """L{build_cdr}."""

    def test_answered_call_with_charging(self) -> None:
        """An answered call: one CDR with the caller's cost, the billable
        seconds (rounded up), and every attempt as a leg with its vendor,
        code and cost."""
        charging = {
            "customer_id": 12, "account_id": 34, "cost": Decimal("0.070000"),
            "currency": "EUR", "breakdown": FakeBreakdown(),
            "legs": [{"vendor": "Slow Carrier", "cost": "0"},
                     {"vendor": "Good Carrier", "cost": Decimal("0.031"), "currency": "USD",
                      "rate": Decimal("0.03")}],
        }
        cdr = build_cdr(record(), charging=charging, identity="1000@127.0.0.1")
        self.assertEqual((cdr.call_id, cdr.caller, cdr.callee, cdr.customer_id,
                          cdr.account_id, cdr.disposition, cdr.billsec, cdr.cost, cdr.currency),
                         ("a84b4c76e66710@pc33.example.com", "sip:1000@127.0.0.1",
                          "sip:+3120555@127.0.0.1", 12, 34, "answered", 61,
                          Decimal("0.070000"), "EUR"))
        self.assertEqual((cdr.started_at, cdr.answered_at, cdr.ended_at),
                         (T0, T0 + 5.25, T0 + 65.5))
        first, second = cdr.legs
        self.assertEqual(first, {
            "attempt": 1, "destination": "vendor:slow", "uri": "sip:+3120555@192.0.2.1",
            "vendor": "Slow Carrier", "started_at": "2023-11-14T22:13:20.100000Z",
            "ringing_at": None, "answered_at": None, "ended_at": "2023-11-14T22:14:25.500000Z", "code": 503,
            "reason": "Service Unavailable", "billsec": 0, "cost": "0", "currency": ""})
        self.assertEqual((second["attempt"], second["vendor"], second["code"],
                          second["billsec"], second["cost"], second["currency"],
                          second["rate"]),
                         (2, "Good Carrier", 200, 61, "0.031", "USD", "0.03"))
        self.assertEqual(cdr.breakdown, {
            "code": 200, "reason": "OK", "disconnect": "caller", "tenant": "127.0.0.1",
            "identity": "1000@127.0.0.1",
            "rating": {"cost": "0.070000", "rate_id": "NL-mob",
                       "answered_at": "2023-11-14T22:13:25+00:00"}})

    def test_without_charging(self) -> None:
        """No charging data: cost 0 without a currency, ids from the caller."""
        cdr = build_cdr(record(), customer_id=5, account_id=6)
        self.assertEqual((cdr.cost, cdr.currency, cdr.customer_id, cdr.account_id),
                         (Decimal(0), "", 5, 6))
        self.assertEqual([leg["cost"] for leg in cdr.legs], [None, None])
        self.assertNotIn("rating", cdr.breakdown)

    def test_charging_object_and_keyed_legs(self) -> None:
        """Charging data may be an object; per-leg charges may be keyed by
        attempt index or destination label; its ids win."""
        charging = Charging(legs={1: {"vendor": "by index"}})
        cdr = build_cdr(record(), charging=charging, customer_id=99)
        self.assertEqual((cdr.customer_id, cdr.account_id, cdr.cost), (12, 34, Decimal("0.07")))
        self.assertEqual([leg["vendor"] for leg in cdr.legs], ["", "by index"])
        charging = Charging(legs={"vendor:slow": {"vendor": "by label"}})
        cdr = build_cdr(record(), charging=charging)
        self.assertEqual([leg["vendor"] for leg in cdr.legs], ["by label", ""])

    def test_billsec_from_charging(self) -> None:
        """Billable seconds the charging layer decided win."""
        self.assertEqual(build_cdr(record(), charging={"billsec": 42}).billsec, 42)
        self.assertEqual(build_cdr(record(), charging={"billsec": -1}).billsec, 61)

    def test_float_cost_never_stored(self) -> None:
        """A float cost is not money: it is left out (cost 0), named in the
        breakdown and logged; the CDR is still built."""
        cdr = build_cdr(record(), charging={"cost": 0.07, "currency": "EUR",
                                            "legs": [{"cost": 1.5}]})
        self.assertEqual(cdr.cost, Decimal(0))
        self.assertEqual(cdr.legs[0]["cost"], None)
        self.assertEqual(len(cdr.breakdown["problems"]), 2)
        self.assertIn("0.07", cdr.breakdown["problems"][0])

    def test_unanswered(self) -> None:
        """An unanswered call has no answer time and 0 billable seconds."""
        cdr = build_cdr(record(486, answered=None, disconnect="callee"))
        self.assertEqual((cdr.disposition, cdr.billsec, cdr.answered_at), ("busy", 0, None))

    def test_rejected_without_legs(self) -> None:
        """A call rejected before routing has no legs."""
        cdr = build_cdr(record(403, answered=None, disconnect="rejected:authorize", legs=[]))
        self.assertEqual((cdr.disposition, cdr.legs), ("rejected", []))

    def test_dispositions(self) -> None:
        """Final code and disconnect cause give the disposition."""
        cases = {(200, "caller"): "answered", (487, "caller-cancel"): "cancelled",
                 (486, "callee"): "busy", (600, "callee"): "busy",
                 (408, "callee"): "no_answer", (480, "drain"): "no_answer",
                 (487, "callee"): "no_answer", (503, "callee"): "unavailable",
                 (500, "plugin-error"): "failed", (404, "no-route"): "rejected",
                 (302, "callee"): "rejected", (0, "x"): "failed"}
        for (code, disconnect), expected in cases.items():
            got = disposition_for(record(code, answered=None if code != 200 else 1.0,
                                         disconnect=disconnect))
            self.assertEqual(got, expected, (code, disconnect))
            self.assertIn(got, DISPOSITIONS)

    def test_text_made_safe(self) -> None:
        """NUL characters are removed and long text is cut."""
        legs = [LegRecord("a\x00b", "x" * 5000, T0, None, T0 + 1, 404, "No\x00pe")]
        source = record(404, answered=None, legs=legs)
        source.caller = "sip:\x00evil@example.com"
        cdr = build_cdr(source)
        self.assertEqual(cdr.caller, "sip:evil@example.com")
        self.assertEqual((cdr.legs[0]["destination"], len(cdr.legs[0]["uri"]),
                          cdr.legs[0]["reason"]), ("ab", MAX_TEXT, "Nope"))

    def test_unstorable_breakdown(self) -> None:
        """A breakdown that is not plain JSON is left out, not fatal."""
        cdr = build_cdr(record(), charging={"breakdown": {"x": float("inf")}})
        self.assertIsNone(cdr.breakdown["rating"])
        self.assertIn("breakdown", cdr.breakdown["problems"][0])


class Directory:
    """The two lookups L{cdr_for_call} makes of a directory."""

    @dataclass
    class Row:
        """A tenant or an extension with its row id."""

        id: int | None

    def tenant(self, domain: str) -> Any:
        """Tenant 7 for 127.0.0.1."""
        return self.Row(7) if domain == "127.0.0.1" else None

    def extension(self, domain: str, number: str) -> Any:
        """Account 70 for 1000."""
        return self.Row(70) if number == "1000" else None


class FakeCall:
    """What L{cdr_for_call} reads of a call."""

    def __init__(self, identity: str, data: dict[str, Any] | None = None) -> None:
        self.identity = identity
        self.data = data or {}


class CallTests(SynchronousTestCase):
    """L{cdr_for_call}."""

    def test_ids_from_directory(self) -> None:
        """The tenant's and the calling extension's row ids are used."""
        cdr = cdr_for_call(FakeCall("1000@127.0.0.1"), record(), Directory())
        self.assertEqual((cdr.customer_id, cdr.account_id), (7, 70))
        self.assertEqual(cdr.breakdown["identity"], "1000@127.0.0.1")

    def test_trusted_source_has_no_account(self) -> None:
        """A trunk identity names no extension."""
        cdr = cdr_for_call(FakeCall("trunk:42"), record(), Directory())
        self.assertEqual((cdr.customer_id, cdr.account_id), (7, None))

    def test_charging_from_call_data(self) -> None:
        """C{call.data["charging"]} is read, and its ids win."""
        call = FakeCall("1000@127.0.0.1", {"charging": {"cost": "1.5", "customer_id": 3}})
        cdr = cdr_for_call(call, record(), Directory())
        self.assertEqual((cdr.cost, cdr.customer_id, cdr.account_id), (Decimal("1.5"), 3, 70))

    def test_without_directory(self) -> None:
        """No directory: no ids."""
        cdr = cdr_for_call(FakeCall("1000@127.0.0.1"), record())
        self.assertEqual((cdr.customer_id, cdr.account_id), (None, None))


class FormTests(SynchronousTestCase):
    """L{CDR.to_json}, L{CDR.from_json} and L{CDR.columns}."""

    def test_round_trip(self) -> None:
        """The journal form is plain JSON with the cost as a decimal string,
        and comes back equal."""
        cdr = build_cdr(record(), charging={"cost": Decimal("12345678901234.123456"),
                                            "currency": "EUR"})
        data = cdr.to_json()
        self.assertEqual(data["cost"], "12345678901234.123456")
        self.assertEqual(CDR.from_json(data), cdr)

    def test_bad_records(self) -> None:
        """Records that are not CDRs are refused with ValueError."""
        good = build_cdr(record()).to_json()
        for change in ({"call_id": ""}, {"started_at": None}, {"started_at": "today"},
                       {"ended_at": float("nan")}, {"cost": 1}, {"cost": "abc"},
                       {"legs": {}}, {"billsec": -1}, {"billsec": 1.5}):
            with self.assertRaises(ValueError, msg=str(change)):
                CDR.from_json({**good, **change})
        with self.assertRaises(ValueError):
            CDR.from_json({"cost": "1"})

    def test_columns(self) -> None:
        """The SQL form: aware UTC datetimes, the exact Decimal, JSON values."""
        cdr = build_cdr(record(), charging={"cost": "0.5"})
        now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        columns = cdr.columns(now)
        self.assertEqual(columns["started_at"],
                         dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC))
        self.assertEqual(columns["answered_at"],
                         dt.datetime(2023, 11, 14, 22, 13, 25, 250000, tzinfo=dt.UTC))
        self.assertEqual((columns["cost"], columns["created_at"], columns["updated_at"]),
                         (Decimal("0.5"), now, now))
        self.assertEqual(columns["legs"], cdr.legs)
        self.assertNotIn("id", columns)
