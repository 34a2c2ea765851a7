"""Tests for L{plugins.trunking.plugin}: a PBX's calls out through the
cheapest vendor with failover, limits, caller IDs and CDR legs; vendor DID
calls in to their targets.  Everything runs on the public harness: phones
for the PBX, the vendors and an extension, a fake network, a fake clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.directory import Directory
from b2bua.hookspecs import hookimpl
from b2bua.testing import DEMO_PASSWORD, SwitchHarness
from plugins.trunking.plugin import NAME, fails_over
from tests.trial.plugins.trunking.decks import deck

DOMAIN = "acme.example"
PBX = "127.0.0.5"
VENDORS = {1: "127.0.0.11", 2: "127.0.0.12", 3: "127.0.0.13"}
#: per-minute price of each vendor for +44 (2 is cheapest, then 1, then 3)
PRICES = {1: "0.020", 2: "0.010", 3: "0.030"}
DID = "+442071234567"
DAY = dt.date(2020, 1, 1)


def directory(lnp: tuple[dict[str, Any], ...] = (), **trunk: Any) -> Directory:
    """A customer with an IP trunk from L{PBX}, an extension, a DID, and
    three vendors for +44 in one routing plan."""
    customer = {"id": 1, "sip_domain": DOMAIN, "name": "Acme", "currency": "EUR",
                "billing_timezone": "UTC", "dial_plan": {"country": "GB"},
                "routing_plan_id": 1, "status": "active"}
    account = {"id": 10, "customer_id": 1, "number": "200", "sip_username": "200",
               "kind": "extension", "caller_id_name": "", "status": "active",
               "ha1_md5": hashlib.md5(f"200:{DOMAIN}:{DEMO_PASSWORD}".encode()).hexdigest(),
               "ha1_sha256": hashlib.sha256(
                   f"200:{DOMAIN}:{DEMO_PASSWORD}".encode()).hexdigest()}
    trunk_row = {"id": 1, "customer_id": 1, "name": "pbx", "auth_mode": "ip",
                 "allowed_sources": [f"{PBX}/32"], "account_id": None, "address": "",
                 "transport": "udp", "codecs": [], "max_calls": 0, "max_calls_in": 0,
                 "max_calls_out": 0, "max_cps": 0, "routing_plan_id": None,
                 "caller_id_format": {}, "status": "active", **trunk}
    vendors = [{"id": n, "name": f"vendor{n}", "status": "active"} for n in VENDORS]
    tariffs = [{"id": n, "name": f"deck{n}", "currency": "EUR",
                "document": deck(("44", PRICES[n], 1, 1), *([("999", "0")] if n == 3 else []),
                                 *([("9944", "0.05")] if n == 1 else []))}
               for n in VENDORS]
    connections = [{"id": n, "vendor_id": n, "name": f"c{n}", "address": f"{host}:5060",
                    "transport": "udp", "tariff_id": n, "enabled": True, "max_calls": 0,
                    "max_calls_in": 0, "max_calls_out": 0, "max_cps": 0, "weight": 0,
                    "setup_timeout": 4, "answer_timeout": 60,
                    "failover_codes": [408, 480, "5xx"], "caller_id_format": {},
                    "inbound_sources": [f"{host}/32"]} for n, host in VENDORS.items()]
    plan = {"id": 1, "name": "uk", "strategy": "lcr",
            "entries": [{"prefix": "44", "connection_ids": [1, 2, 3]},
                        {"prefix": "999", "connection_ids": [3]},
                        {"prefix": "9944", "connection_ids": [1]}]}
    did = {"id": 1, "number": DID, "customer_id": 1, "target_kind": "account",
           "target": "10", "status": "active"}
    return Directory.from_rows({
        "customers": [customer], "accounts": [account], "trunks": [trunk_row],
        "vendors": vendors, "tariffs": tariffs, "connections": connections,
        "routing_plans": [plan], "dids": [did], "lnp_entries": list(lnp)})


class Recorder:
    """Keeps what the trunking plugin left for the CDR of each call."""

    def __init__(self) -> None:
        self.legs: list[dict[str, Any]] = []
        self.data: list[dict[str, Any]] = []

    @hookimpl(trylast=True)
    def b2bua_call_ended(self, call: Any, record: Any) -> None:
        self.legs.append(call.data.get("legs", {}))
        self.data.append(dict(call.data))


class TrunkingTests(SynchronousTestCase):
    """A PBX, three vendors and an extension around the switch."""

    def setUp(self) -> None:
        self.start()

    def start(self, settings: dict[str, Any] | None = None,
              lnp: tuple[dict[str, Any], ...] = (), extra: dict[str, Any] | None = None,
              **trunk: Any) -> None:
        self.recorder = Recorder()
        self.h = SwitchHarness({"recorder": self.recorder}, directory=directory(lnp, **trunk),
                               settings={NAME: settings or {}}, extra=extra)
        self.plugin = self.h.pm.get_plugin(NAME)
        self.pbx = self.h.phone("pbx", host=PBX, domain=DOMAIN)
        self.vendors = {n: self.h.phone(f"v{n}", host=host) for n, host in VENDORS.items()}

    def dial(self, number: str, **kwargs: Any) -> Any:
        """The PBX calls C{number} (no credentials: its address is trusted)."""
        call = self.pbx.call(f"sip:{number}@127.0.0.1", authenticate=False, **kwargs)
        self.h.flush()
        return call

    def test_cheapest_first_then_failover(self) -> None:
        """The call goes to the cheapest vendor first; a 503 with
        Retry-After moves on at once and parks that vendor; one that never
        rings is left after its set-up timeout; the third answers.  Each
        attempt is its own CDR leg, with the vendor and its buy cost."""
        call = self.dial("02079460000")  # UK national dialling, GB dial plan
        (offer,) = self.vendors[2].incoming
        self.assertEqual(offer.invite.uri.user, "+442079460000")
        offer.reject(503, headers=(("Retry-After", "120"),))
        self.h.flush()
        (silent,) = self.vendors[1].incoming
        self.assertEqual(self.vendors[3].incoming, [])
        self.h.advance(4.5)  # connection 1's set-up timeout is 4 s
        (answering,) = self.vendors[3].incoming
        answering.answer()
        self.h.flush()
        self.assertEqual(call.code, 200)
        self.assertTrue(silent.cancelled)
        prober = self.h.services.extra["trunk_prober"]
        self.assertEqual(prober.unavailable(), {2})
        self.h.advance(30)
        call.hangup()
        self.h.flush()
        legs = self.recorder.legs[-1]
        self.assertEqual([(label, leg["vendor"], leg["cost"]) for label, leg in legs.items()],
                         [("connection:2", "vendor2", Decimal(0)),
                          ("connection:1", "vendor1", Decimal(0)),
                          ("connection:3", "vendor3", Decimal("0.015"))])
        self.assertEqual(self.h.metric("b2bua_trunk_failovers_total", connection="2"), 1)
        self.assertEqual(self.h.metric("b2bua_trunk_failovers_total", connection="1"), 1)
        self.assertEqual(self.h.metric("b2bua_trunk_answered_total", connection="3",
                                       direction="out"), 1)
        self.h.settle()
        self.h.stop()

    def test_parked_vendor_skipped(self) -> None:
        """A vendor parked by 503 Retry-After is not tried until the time is up."""
        first = self.dial("+442079460000")
        self.vendors[2].incoming[0].reject(503, headers=(("Retry-After", "60"),))
        self.h.flush()
        self.vendors[1].incoming[0].answer()
        self.h.flush()
        self.assertEqual(first.code, 200)
        second = self.dial("+442079460001")
        self.assertEqual(len(self.vendors[2].incoming), 1)
        self.vendors[1].incoming[1].answer()
        self.h.flush()
        self.assertEqual(second.code, 200)
        first.hangup()
        second.hangup()
        self.h.flush()
        self.h.settle()
        self.h.stop()

    def test_not_failing_over_on_busy(self) -> None:
        """A 486 is the callee's answer: the hunt stops and the PBX gets it."""
        call = self.dial("+442079460000")
        self.vendors[2].incoming[0].busy()
        self.h.flush()
        self.assertEqual(call.code, 486)
        self.assertEqual(self.vendors[1].incoming, [])
        self.h.settle()
        self.h.stop()

    def test_trunk_limit(self) -> None:
        """A trunk allowed one outbound call refuses the second with 503 and
        Retry-After; once the first ends every counter is back at zero."""
        self.h.settle()
        self.h.stop()
        self.start(max_calls_out=1)
        first = self.dial("+442079460000")
        self.vendors[2].incoming[0].answer()
        self.h.flush()
        second = self.dial("+442079460001")
        self.assertEqual(second.code, 503)
        self.assertEqual(second.responses[-1].headers.get("retry-after"), "5")
        self.assertEqual(self.h.metric("b2bua_trunk_limit_rejections_total", kind="trunk",
                                       id="1", limit="out"), 1)
        first.hangup()
        self.h.flush()
        limiter = self.h.services.extra["trunk_limiter"]
        usage = self.successResultOf(limiter.store.snapshot())
        self.assertEqual([u.total for u in usage if u.total], [])
        self.h.settle()
        self.h.stop()

    def test_connection_limit_fails_over(self) -> None:
        """A vendor connection at its limit is skipped for the next one."""
        self.h.settle()
        self.h.stop()
        self.start()
        limiter = self.h.services.extra["trunk_limiter"]
        from plugins.trunking.limits import LimitKey, Limits

        key = LimitKey("connection", "2", "out", Limits(total=1))
        self.successResultOf(limiter.store.acquire("elsewhere", [key]))
        self.h.services.directory = self.h.directory
        self.plugin.limiter._limits = lambda kind, id: Limits(total=1) \
            if (kind, id) == ("connection", "2") else None
        call = self.dial("+442079460000")
        self.assertEqual(self.vendors[2].incoming, [])
        self.vendors[1].incoming[0].answer()
        self.h.flush()
        self.assertEqual(call.code, 200)
        call.hangup()
        self.h.flush()
        self.successResultOf(limiter.store.release("elsewhere", [key]))
        self.h.settle()
        self.h.stop()

    def test_caller_id(self) -> None:
        """The vendor sees the PBX's number when the customer owns it
        (its DID), asserted; a number it does not own is not passed on."""
        call = self.dial("+442079460000", headers=(
            ("From", f"<sip:{DID}@{DOMAIN}>;tag=x1"),))
        invite = self.vendors[2].incoming[0].invite
        self.assertEqual(invite.from_.uri.user, DID)
        self.assertIn(DID, invite.headers.get("p-asserted-identity"))
        self.vendors[2].incoming[0].reject(404)
        self.h.flush()
        self.assertEqual(call.code, 404)
        other = self.dial("+442079460000", headers=(
            ("From", "<sip:+15551234567@acme.example>;tag=x2"),))
        invite = self.vendors[2].incoming[1].invite
        self.assertIsNone(invite.headers.get("p-asserted-identity"))
        self.vendors[2].incoming[1].reject(404)
        self.h.flush()
        self.assertEqual(other.code, 404)
        self.h.settle()
        self.h.stop()

    def test_emergency_beyond_limits(self) -> None:
        """An emergency number is routed even when the trunk is full, and
        is not charged."""
        self.h.stop()
        self.start(max_calls_out=1)
        first = self.dial("+442079460000")
        self.vendors[2].incoming[0].answer()
        self.h.flush()
        emergency = self.dial("999")
        (incoming,) = self.vendors[3].incoming
        self.assertEqual(incoming.invite.uri.user, "999")
        incoming.answer()
        self.h.flush()
        self.assertEqual(emergency.code, 200)
        emergency.hangup()
        self.h.flush()
        self.assertEqual(self.recorder.data[-1]["uncharged"], "emergency")
        first.hangup()
        self.h.settle()
        self.h.stop()

    def test_codecs(self) -> None:
        """The offer to a vendor keeps only the codecs both the trunk and
        the connection allow, and telephone events."""
        self.h.stop()
        self.start(codecs=["PCMA", "PCMU"])
        self.h.directory._connections[2] = {**self.h.directory._connections[2],
                                            "codecs": ["PCMA", "G729"]}
        call = self.dial("+442079460000")
        offer = self.vendors[2].incoming[0].invite.body.decode()
        self.assertIn("RTP/AVP 8", offer.replace(" 101", ""))
        self.assertNotIn("PCMU", offer)
        self.vendors[2].incoming[0].answer()
        self.h.flush()
        self.assertEqual(call.code, 200)
        call.hangup()
        self.h.settle()
        self.h.stop()

    def test_preferred_identity_privacy_and_diversion(self) -> None:
        """The PBX's P-Preferred-Identity names the customer's DID; it asks
        for privacy and forwards the call: the vendor (trusted) gets the DID
        asserted, an anonymous From, Privacy: id, and the Diversion."""
        call = self.dial("+442079460000", headers=(
            ("P-Preferred-Identity", f"<sip:{DID}@{DOMAIN}>"),
            ("Privacy", "id"),
            ("Diversion", f"<sip:{DID}@{DOMAIN}>;reason=unconditional;counter=1"),
        ))
        invite = self.vendors[2].incoming[0].invite
        self.assertIn(DID, invite.headers.get("p-asserted-identity"))
        self.assertEqual(invite.from_.uri.user, "anonymous")
        self.assertEqual(invite.headers.get("privacy"), "id")
        self.assertIn("reason=unconditional", invite.headers.get("diversion"))
        self.assertIsNone(invite.headers.get("p-preferred-identity"))
        self.vendors[2].incoming[0].reject(404)
        self.h.flush()
        self.assertEqual(call.code, 404)
        self.h.settle()
        self.h.stop()

    def test_ported_number(self) -> None:
        """A ported number is ranked by its routing prefix (the LNP table):
        only the vendor pricing that network's prefix gets it."""
        self.h.stop()
        self.start(lnp=({"id": 1, "number": "+442079460000", "routing_prefix": "99",
                         "carrier": "other"},))
        call = self.dial("+442079460000")
        self.assertEqual([len(self.vendors[n].incoming) for n in (1, 2, 3)], [1, 0, 0])
        self.assertEqual(self.vendors[1].incoming[0].invite.uri.user, "+442079460000")
        self.vendors[1].incoming[0].reject(404)
        self.h.flush()
        self.assertEqual(call.code, 404)
        self.h.settle()
        self.h.stop()

    def test_lnp_hook(self) -> None:
        """A plugin's LNP lookup (C{services.extra["lnp_lookup"]}, a carrier
        database) replaces the table."""
        self.h.stop()
        asked: list[str] = []

        def lookup(number: str) -> str | None:
            asked.append(number)
            return "99"

        self.start(extra={"lnp_lookup": lookup})
        call = self.dial("+442079460001")
        self.assertEqual(asked, ["+442079460001"])
        self.assertEqual([len(self.vendors[n].incoming) for n in (1, 2, 3)], [1, 0, 0])
        self.vendors[1].incoming[0].reject(404)
        self.h.flush()
        self.assertEqual(call.code, 404)
        self.h.settle()
        self.h.stop()

    def test_invalid_number(self) -> None:
        """What the dial plan cannot read is 484, before any vendor."""
        call = self.dial("12")
        self.assertEqual(call.code, 484)
        self.assertEqual([len(v.incoming) for v in self.vendors.values()], [0, 0, 0])
        self.h.settle()
        self.h.stop()

    def test_did_rings_the_extension(self) -> None:
        """A vendor's call to the customer's DID rings the extension the
        DID points to, wherever it registered; it is not charged."""
        extension = self.h.phone("200", host="127.0.0.20", domain=DOMAIN)
        extension.register()
        self.h.flush()
        call = self.vendors[1].call(f"sip:{DID}@127.0.0.1", authenticate=False)
        self.h.flush()
        (ringing,) = extension.incoming
        ringing.answer()
        self.h.flush()
        self.assertEqual(call.code, 200)
        self.assertEqual(self.h.metric("b2bua_trunk_current_calls", connection="1",
                                       direction="in"), 1)
        call.hangup()
        self.h.flush()
        self.assertEqual(self.h.metric("b2bua_trunk_answered_total", connection="1",
                                       direction="in"), 1)
        self.assertEqual(self.h.metric("b2bua_trunk_current_calls", connection="1",
                                       direction="in"), 0)
        self.assertEqual(self.recorder.data[-1]["uncharged"], "inbound-did")
        self.h.settle()
        self.h.stop()

    def test_unknown_did(self) -> None:
        """A number that is not a DID of ours is 404."""
        call = self.vendors[1].call("sip:+449999999999@127.0.0.1", authenticate=False)
        self.h.flush()
        self.assertEqual(call.code, 404)
        self.h.settle()
        self.h.stop()

    def test_failover_codes(self) -> None:
        """Codes and classes, as the connection lists them."""
        self.assertTrue(fails_over(503, [408, "5xx"]))
        self.assertTrue(fails_over(408, [408]))
        self.assertFalse(fails_over(486, [408, 480, "5xx"]))
        self.assertFalse(fails_over(404, ["5xx"]))
        self.h.settle()
        self.h.stop()
