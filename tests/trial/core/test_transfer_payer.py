"""Tests for L{b2bua.core.transfer_policy}: the referrer pays for a transfer,
a callee the switch cannot charge may not transfer, and C{[core]
max_transfers} bounds the transfers of a call and its descendants.

Alice (1000), bob (1001), carol (1002) and dave (1003) are extensions of the
demo tenant; "the vendor" is a phone reached over a route a plugin gives
with a plain L{Destination} (as a trunk to a carrier is), which nobody
marked as a subscriber.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.call import Call
from b2bua.core.decisions import Destination, Route
from b2bua.core.switch import CoreSettings
from b2bua.core.transfer import TransferCall
from b2bua.core.transfer_policy import (
    TRANSFERS,
    CalleeDestination,
    Party,
    callee_party,
    caller_party,
    transfers_made,
)
from b2bua.hookspecs import hookimpl
from b2bua.metrics import TRANSFER_RESULTS, Metrics
from b2bua.sip.interfaces import Target
from b2bua.sip.message import Request
from b2bua.sip.uri import URI
from b2bua.testing import Phone, PhoneCall
from tests.trial.core.test_transfer import CAROL, TransferTestCase

VENDOR_NUMBER = "5550100"
PREMIUM = "<sip:0900666@127.0.0.1>"
NOT_A_SUBSCRIBER = (403, "Transfer not allowed: not a subscriber")
LIMIT = (403, "Transfer limit reached")


class VendorRoute:
    """Routes L{VENDOR_NUMBER} to the vendor phone, unmarked (a trunk)."""

    def __init__(self) -> None:
        self.phone: Phone | None = None

    @hookimpl
    def b2bua_route_call(self, call: Call, request: Request) -> Any:
        """The vendor number goes to the vendor phone; no opinion otherwise."""
        if self.phone is None or request.uri.user != VENDOR_NUMBER:
            return None
        host, port = self.phone.address
        return [Route((Destination(uri=URI("sip", VENDOR_NUMBER, host, port),
                                   next_hop=Target("UDP", host, port), label="vendor:1"),),
                      source="test")]


class PayerTestCase(TransferTestCase):
    """The transfer harness with a vendor route and dave (1003)."""

    def setUp(self) -> None:
        """Add dave and the vendor phone."""
        self.vendor_route = VendorRoute()
        super().setUp()
        self.h.pm.register(self.vendor_route, "vendor")
        self.dave = self.h.register("1003")
        self.vendor = self.h.phone(VENDOR_NUMBER)
        self.vendor_route.phone = self.vendor

    def transferred(self, result: str) -> float:
        """C{b2bua_calls_transferred_total{result}}."""
        return self.h.metric("b2bua_calls_transferred_total", result=result)

    def answered(self, phone: Phone) -> PhoneCall:
        """C{phone}'s last incoming call, answered."""
        side = phone.incoming[-1]
        side.answer()
        return side

    def new_calls(self) -> list[TransferCall]:
        """The transfer calls that were received."""
        return [call for call, _ in self.recorder.received if isinstance(call, TransferCall)]

    def assertRefused(self, referrer: PhoneCall, refer_to: str,
                      answer: tuple[int, str]) -> None:
        """A REFER from C{referrer} gets C{answer}: no NOTIFY reaches the
        referrer (no subscription was made), the hook is not asked, no
        call is placed."""
        notifies = len(self.notifies(referrer))
        asked, received = len(self.recorder.transfers), len(self.recorder.received)
        outgoing = self.refer(referrer, refer_to)
        self.assertEqual((outgoing.code, outgoing.final.reason), answer)
        self.assertEqual(len(self.notifies(referrer)), notifies)
        self.assertEqual(len(self.recorder.transfers), asked)
        self.assertEqual(len(self.recorder.received), received)


class WhoPaysTests(PayerTestCase):
    """The new call is placed as the referrer."""

    def test_callee_extension_pays(self) -> None:
        """Bob (an extension, the callee) transfers alice: the new call is
        bob's (identity and tenant), counted accepted then connected."""
        call, bob_side = self.connect()
        self.assertEqual(self.refer(bob_side).code, 202)
        self.assertEqual(self.transferred("accepted"), 1)
        [new_call] = self.new_calls()
        self.assertEqual((new_call.identity, new_call.tenant), ("1001@127.0.0.1", "127.0.0.1"))
        # alice, now the new call's caller, still calls as herself
        self.assertEqual(new_call.caller_party, Party("1000@127.0.0.1", "127.0.0.1"))
        self.answered(self.carol)
        self.assertEqual(self.transferred("connected"), 1)
        call.hangup()
        self.finish()

    def test_caller_pays(self) -> None:
        """Alice (the caller) transfers bob: the new call is alice's."""
        call, bob_side = self.connect()
        self.assertEqual(self.refer(call).code, 202)
        [new_call] = self.new_calls()
        self.assertEqual((new_call.identity, new_call.tenant), ("1000@127.0.0.1", "127.0.0.1"))
        # bob, now the new call's caller, calls as the extension he was
        self.assertEqual(new_call.caller_party, Party("1001@127.0.0.1", "127.0.0.1"))
        self.answered(self.carol)
        self.assertEqual(len(self.carol.incoming), 1)
        bob_side.hangup()
        self.finish()

    def test_outside_callee_refused(self) -> None:
        """The vendor (alice called it over an unmarked route) REFERs alice
        to a premium number: 403, no call placed, no NOTIFY, counted both
        as a refused transfer and as a forbidden request; the call goes on."""
        forbidden = self.h.metric("b2bua_sip_rejected_requests_total", reason="forbidden")
        call = self.alice.call(VENDOR_NUMBER)
        vendor_side = self.answered(self.vendor)
        self.assertRefused(vendor_side, PREMIUM, NOT_A_SUBSCRIBER)
        self.assertEqual(self.new_calls(), [])
        self.assertEqual(self.transferred("refused_payer"), 1)
        self.assertEqual(self.transferred("accepted"), 0)
        self.assertEqual(self.h.metric("b2bua_sip_rejected_requests_total",
                                       reason="forbidden"), forbidden + 1)
        self.assertEqual((call.state, vendor_side.state), ("confirmed", "confirmed"))
        call.hangup()
        self.assertEqual(vendor_side.state, "terminated")
        self.finish()

    def test_caller_may_transfer_an_outside_callee(self) -> None:
        """Alice transfers the vendor to carol (alice pays); then the vendor,
        now the caller of the new call, is still nobody: its REFER gets
        403, while carol's REFER is hers to pay."""
        call = self.alice.call(VENDOR_NUMBER)
        vendor_side = self.answered(self.vendor)
        self.assertEqual(self.refer(call, CAROL).code, 202)
        [new_call] = self.new_calls()
        self.assertEqual(new_call.identity, "1000@127.0.0.1")
        self.assertIsNone(new_call.caller_party)
        carol_side = self.answered(self.carol)
        self.assertEqual(call.state, "terminated")
        self.assertRefused(vendor_side, PREMIUM, NOT_A_SUBSCRIBER)
        self.assertEqual(self.refer(carol_side, "<sip:1003@127.0.0.1>").code, 202)
        newest = self.new_calls()[-1]
        self.assertEqual(newest.identity, "1002@127.0.0.1")
        self.assertIsNone(newest.caller_party)
        self.answered(self.dave)
        self.assertEqual(carol_side.state, "terminated")
        vendor_side.hangup()
        self.assertEqual(self.transferred("refused_payer"), 1)
        self.assertEqual(self.transferred("connected"), 2)
        self.finish()

    def test_redirected_callee_is_nobody(self) -> None:
        """Bob's phone redirects (302) to the vendor, who answers: the
        vendor is not bob (its destination came from the 3xx): 403."""
        call = self.alice.call("1001")
        host, port = self.vendor.address
        self.bob.incoming[0].redirect(f"<sip:{VENDOR_NUMBER}@{host}:{port}>")
        vendor_side = self.answered(self.vendor)
        self.assertEqual(call.state, "confirmed")
        self.assertRefused(vendor_side, PREMIUM, NOT_A_SUBSCRIBER)
        call.hangup()
        self.finish()


class LimitTests(PayerTestCase):
    """C{[core] max_transfers}."""

    core = CoreSettings(max_transfers=2)

    def test_failed_attempts_count(self) -> None:
        """Two REFERs accepted (each target busy), the third gets 403."""
        call, bob_side = self.connect()
        for attempt in range(2):
            self.assertEqual(self.refer(bob_side).code, 202)
            self.carol.incoming[attempt].busy()
        self.assertEqual(self.transferred("failed"), 2)
        self.assertRefused(bob_side, CAROL, LIMIT)
        self.assertEqual(len(self.carol.incoming), 2)
        self.assertEqual(self.transferred("refused_limit"), 1)
        first = self.recorder.received[0][0]
        self.assertEqual(transfers_made(first), 2)
        call.hangup()
        self.finish()

    def test_chain_inherits_the_count(self) -> None:
        """Bob transfers alice to carol, carol to dave: the new call counts
        the transfers of the calls it came from, dave's REFER gets 403."""
        call, bob_side = self.connect()
        self.assertEqual(self.refer(bob_side).code, 202)
        carol_side = self.answered(self.carol)
        self.assertEqual(self.refer(carol_side, "<sip:1003@127.0.0.1>").code, 202)
        dave_side = self.answered(self.dave)
        newest = self.new_calls()[-1]
        self.assertEqual(newest.data[TRANSFERS], 2)
        self.assertRefused(dave_side, "<sip:1001@127.0.0.1>", LIMIT)
        self.assertEqual(len(self.bob.incoming), 1)
        self.assertEqual(self.refer(call, "<sip:1001@127.0.0.1>").code, 403)
        call.hangup()
        self.assertEqual(dave_side.state, "terminated")
        self.assertEqual(self.transferred("refused_limit"), 2)
        self.finish()


class NoTransfersTests(PayerTestCase):
    """C{[core] max_transfers = 0}: every REFER is refused."""

    core = CoreSettings(max_transfers=0)

    def test_refused(self) -> None:
        """The first REFER gets 403, counted as refused_limit."""
        call, bob_side = self.connect()
        self.assertRefused(bob_side, CAROL, LIMIT)
        self.assertEqual(self.carol.incoming, [])
        self.assertEqual(self.transferred("refused_limit"), 1)
        call.hangup()
        self.finish()


class PartyTests(SynchronousTestCase):
    """The policy's helpers on their own."""

    def test_parties(self) -> None:
        """A call's caller is its identity; a callee is its destination's
        mark, or nobody; the tenant defaults to the identity's domain."""
        call = SimpleNamespace(identity="1000@Example.COM", tenant="", data={})
        self.assertEqual(caller_party(call), Party("1000@Example.COM", "example.com"))
        self.assertIsNone(caller_party(SimpleNamespace(identity="", tenant="")))
        self.assertEqual(transfers_made(call), 0)
        uri = URI("sip", "x", "192.0.2.1", 5060)
        self.assertIsNone(callee_party(SimpleNamespace(destination=Destination(uri))))
        self.assertIsNone(callee_party(SimpleNamespace(destination=CalleeDestination(uri))))
        marked = CalleeDestination(uri, callee_identity="1001@example.com")
        self.assertEqual(callee_party(SimpleNamespace(destination=marked)),
                         Party("1001@example.com", "example.com"))
        marked = CalleeDestination(uri, callee_identity="1001@a.example",
                                   callee_tenant="B.example")
        self.assertEqual(callee_party(SimpleNamespace(destination=marked)),
                         Party("1001@a.example", "b.example"))
        self.assertIsNone(callee_party(SimpleNamespace()))

    def test_metric_labels(self) -> None:
        """Every result is exported at 0 from the start; an unknown one
        folds into C{other} (the label set stays bounded)."""
        metrics = Metrics()
        for result in TRANSFER_RESULTS:
            self.assertEqual(metrics.registry.get_sample_value(
                "b2bua_calls_transferred_total", {"result": result}), 0.0)
        self.assertEqual(metrics.call_transferred("accepted"), "accepted")
        self.assertEqual(metrics.call_transferred("x" * 500), "other")
        self.assertEqual(metrics.registry.get_sample_value(
            "b2bua_calls_transferred_total", {"result": "other"}), 1.0)
