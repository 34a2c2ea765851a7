"""Tests for L{b2bua.core.transfer}: blind transfer by the switch (REFER,
RFC 3515 / RFC 5589), through the whole switch on the in-memory harness.

Alice (1000) calls bob (1001); one of them REFERs the other to carol
(1002).  Every test ends with L{TransferTestCase.finish}: no call, dialog,
transaction or timer may be left.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.call import Call, CallRecord, CallState
from b2bua.core.decisions import Reject
from b2bua.core.switch import CoreSettings
from b2bua.core.transfer import SIPFRAG, BadReferTo, TransferCall, parse_refer_to
from b2bua.hookspecs import hookimpl
from b2bua.sip.errors import TransportError
from b2bua.sip.message import Request, Response
from b2bua.sip.uri import URI, parse_uri
from b2bua.testing import Phone, PhoneCall, SwitchHarness, sdp_offer
from tests.trial.core.test_call import StateRecorder

CAROL = "<sip:1002@127.0.0.1>"


def media_lines(body: bytes) -> list[bytes]:
    """An SDP's lines but its origin (whose version each answer bumps)."""
    return [line for line in body.splitlines() if not line.startswith(b"o=")]


class Recorder(StateRecorder):
    """Records the calls' hooks; refuses or rewrites transfers when told."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[Call, Request]] = []
        self.authorized: list[tuple[Call, Request]] = []
        self.answered: list[Call] = []
        self.ended: list[tuple[Call, CallRecord]] = []
        self.transfers: list[tuple[Call, Any, URI]] = []
        self.transfer_answer: Any = None

    @hookimpl
    def b2bua_call_received(self, call: Call, request: Request) -> None:
        """Record."""
        self.received.append((call, request))

    @hookimpl
    def b2bua_authorize_call(self, call: Call, request: Request) -> None:
        """Record."""
        self.authorized.append((call, request))

    @hookimpl
    def b2bua_call_answered(self, call: Call, leg: Any, answered_at: float) -> None:
        """Record."""
        self.answered.append(call)

    @hookimpl
    def b2bua_authorize_transfer(self, call: Call, leg: Any, target: URI) -> Any:
        """Record; answer what the test says."""
        self.transfers.append((call, leg, target))
        return self.transfer_answer

    @hookimpl
    def b2bua_call_ended(self, call: Call, record: CallRecord) -> None:
        """Record."""
        self.ended.append((call, record))


class TransferTestCase(SynchronousTestCase):
    """A switch with alice (1000), bob (1001) and carol (1002) registered."""

    core: CoreSettings | None = None

    def setUp(self) -> None:
        """Build the switch, register the three phones."""
        self.recorder = Recorder()
        self.h = SwitchHarness({"recorder": self.recorder}, core=self.core)
        self.alice = self.h.register("1000")
        self.bob = self.h.register("1001")
        self.carol = self.h.register("1002")

    def connect(self) -> tuple[PhoneCall, PhoneCall]:
        """Alice calls bob, who answers."""
        call = self.alice.call("1001")
        incoming = self.bob.incoming[-1]
        incoming.ring()
        incoming.answer()
        self.assertEqual(call.state, "confirmed")
        return call, incoming

    def refer(self, side: PhoneCall, refer_to: str | None = CAROL,
              headers: list[tuple[str, str]] | None = None) -> Any:
        """Send REFER on C{side}'s dialog."""
        extra = list(headers or ())
        if refer_to is not None:
            extra.insert(0, ("Refer-To", refer_to))
        return side.request("REFER", headers=extra)

    def notifies(self, side: PhoneCall) -> list[Request]:
        """The NOTIFYs C{side} received."""
        return [r for r in side.requests if r.method == "NOTIFY"]

    def requests_to(self, phone: Phone, method: str) -> list[Request]:
        """Requests the switch sent to C{phone}."""
        return self.h.network.requests(method, self.h.address, phone.address)

    def records(self) -> dict[str, CallRecord]:
        """The CDR records by call kind (C{first}, C{transfer}), asserting
        C{b2bua_call_ended} fired once per call."""
        ids = [call.id for call, _ in self.recorder.ended]
        self.assertEqual(len(ids), len(set(ids)), "b2bua_call_ended fired twice for a call")
        return {("transfer" if isinstance(call, TransferCall) else "first"): record
                for call, record in self.recorder.ended}

    def finish(self) -> None:
        """Let every transaction end; nothing may be left behind."""
        self.h.settle()
        self.h.assert_idle()


class BlindTransferTests(TransferTestCase):
    """A transfer that works."""

    def test_callee_transfers_caller(self) -> None:
        """Bob REFERs alice to carol: 202, NOTIFY 100 then 200 (sipfrag),
        carol's INVITE offers alice's SDP, alice is re-INVITEd with
        carol's, bob gets BYE; alice and carol talk until alice hangs up."""
        call, bob_side = self.connect()
        alice_sdp = call.local_sdp
        refer = self.refer(bob_side)
        self.assertEqual((refer.code, refer.final.reason), (202, "Accepted"))
        self.assertEqual(len(self.carol.incoming), 1)
        carol_side = self.carol.incoming[0]
        self.assertEqual(carol_side.invite.body, alice_sdp)
        self.assertEqual(len(self.notifies(bob_side)), 1)
        carol_side.ring()
        self.assertEqual(len(self.notifies(bob_side)), 1)  # ringing is not notified
        self.assertEqual(self.requests_to(self.bob, "BYE"), [])
        carol_side.answer()

        notifies = self.notifies(bob_side)
        self.assertEqual([n.body for n in notifies],
                         [b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 200 OK\r\n"])
        for notify in notifies:
            self.assertEqual(notify.headers.get("content-type"), SIPFRAG)
            self.assertTrue(notify.headers.get("event").startswith("refer"))
        self.assertEqual([n.headers.get("subscription-state") for n in notifies],
                         ["active;expires=180", "terminated;reason=noresource"])
        self.assertEqual(bob_side.state, "terminated")
        reinvites = [r for r in call.requests if r.method == "INVITE"]
        self.assertEqual(len(reinvites), 1)
        self.assertEqual(reinvites[0].body, carol_side.local_sdp)
        self.assertEqual(call.remote_sdp, carol_side.local_sdp)
        self.assertEqual([r.method for r in call.requests].count("ACK"), 1)
        # alice and carol are connected: in-dialog requests cross, the BYE too
        info = call.info()
        self.assertEqual(info.code, 200)
        self.assertEqual([r.method for r in carol_side.requests].count("INFO"), 1)
        call.hangup()
        self.assertEqual(carol_side.state, "terminated")

        records = self.records()
        self.assertEqual(set(records), {"first", "transfer"})
        self.assertEqual(records["first"].disconnect, "transferred")
        self.assertEqual(records["transfer"].disconnect, "caller")
        self.assertEqual(records["transfer"].caller, "sip:1000@127.0.0.1")
        self.assertEqual(records["transfer"].callee, "sip:1002@127.0.0.1")
        self.assertEqual(records["transfer"].tenant, "127.0.0.1")
        self.assertIsNotNone(records["transfer"].answered_at)
        self.finish()

    def test_new_call_goes_through_the_call_hooks(self) -> None:
        """The transfer's call is received, authorized and answered like a
        call from the transferee to the target, naming the first call."""
        _, bob_side = self.connect()
        first = self.recorder.received[0][0]
        self.refer(bob_side, headers=[("Referred-By", "<sip:1001@127.0.0.1>")])
        self.carol.incoming[0].answer()
        self.assertEqual(len(self.recorder.received), 2)
        new_call, request = self.recorder.authorized[1]
        self.assertIsInstance(new_call, TransferCall)
        assert isinstance(new_call, TransferCall)
        self.assertEqual(new_call.transferred_from, first.id)
        self.assertEqual(str(request.uri), "sip:1002@127.0.0.1")
        self.assertEqual(str(request.from_.uri), "sip:1000@127.0.0.1")
        self.assertEqual(request.headers.get("referred-by"), "<sip:1001@127.0.0.1>")
        # bob, the referrer, pays: the new call is his (docs/transfer.md, "Who pays")
        self.assertEqual((new_call.identity, new_call.tenant), ("1001@127.0.0.1", "127.0.0.1"))
        self.assertEqual(first.identity, "1000@127.0.0.1")
        self.assertEqual(self.recorder.answered, [first, new_call])
        transfer_call, leg, target = self.recorder.transfers[0]
        self.assertIs(transfer_call, first)
        self.assertIs(leg, first.answered_leg)
        self.assertEqual(str(target), "sip:1002@127.0.0.1")
        self.alice.calls[0].hangup()
        self.finish()

    def test_caller_transfers_callee(self) -> None:
        """Alice REFERs bob to carol: bob is re-INVITEd, alice gets BYE; the
        new call's caller is the number alice dialled."""
        call, bob_side = self.connect()
        refer = self.refer(call)
        self.assertEqual(refer.code, 202)
        carol_side = self.carol.incoming[0]
        carol_side.answer()
        self.assertEqual(call.state, "terminated")
        self.assertEqual(
            [n.body for n in self.notifies(call)],
            [b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 200 OK\r\n"])
        reinvites = [r for r in bob_side.requests if r.method == "INVITE"]
        self.assertEqual(len(reinvites), 1)
        self.assertEqual(bob_side.remote_sdp, carol_side.local_sdp)
        carol_side.hangup()
        self.assertEqual(bob_side.state, "terminated")
        records = self.records()
        self.assertEqual(records["transfer"].caller, "sip:1001@127.0.0.1")
        self.assertEqual(records["transfer"].disconnect, "callee")
        self.assertEqual(records["first"].disconnect, "transferred")
        self.finish()

    def test_referrer_hangs_up_after_202(self) -> None:
        """Bob hangs up right after the 202 (what phones do): alice stays,
        and is connected to carol when carol answers."""
        call, bob_side = self.connect()
        self.refer(bob_side)
        bye = bob_side.hangup()
        self.assertEqual(bye.code, 200)
        self.assertEqual(call.state, "confirmed")
        self.assertEqual(self.recorder.ended, [])
        carol_side = self.carol.incoming[0]
        carol_side.answer()
        self.assertEqual(call.remote_sdp, carol_side.local_sdp)
        self.assertEqual(len(self.notifies(bob_side)), 1)  # no NOTIFY after its BYE
        self.assertEqual(self.records()["first"].disconnect, "transferred")
        call.hangup()
        self.assertEqual(carol_side.state, "terminated")
        self.assertEqual(len(self.recorder.ended), 2)
        self.finish()

    def test_reinvite_glare_retried(self) -> None:
        """Alice's answer to the re-INVITE is 491 (her own re-INVITE
        crossed it): the switch tries again 2 s later."""
        call, bob_side = self.connect()
        self.refer(bob_side)
        self.alice.answers["INVITE"] = 491
        carol_side = self.carol.incoming[0]
        carol_side.answer()
        self.assertNotEqual(call.remote_sdp, carol_side.local_sdp)
        del self.alice.answers["INVITE"]
        self.h.advance(2.5)
        self.assertEqual(call.remote_sdp, carol_side.local_sdp)
        self.assertEqual([r.method for r in call.requests].count("INVITE"), 2)
        call.hangup()
        self.assertEqual(carol_side.state, "terminated")
        self.finish()

    def test_transferred_call_transferred_again(self) -> None:
        """Carol, reached by a transfer, transfers alice on to dave: three
        calls, three records, alice ends up with dave."""
        dave = self.h.register("1003")
        call, bob_side = self.connect()
        self.refer(bob_side)
        carol_side = self.carol.incoming[0]
        carol_side.answer()
        self.assertEqual(self.refer(carol_side, "<sip:1003@127.0.0.1>").code, 202)
        dave_side = dave.incoming[0]
        self.assertEqual(media_lines(dave_side.invite.body), media_lines(call.local_sdp))
        dave_side.answer()
        self.assertEqual(carol_side.state, "terminated")
        self.assertEqual(call.remote_sdp, dave_side.local_sdp)
        call.hangup()
        self.assertEqual(dave_side.state, "terminated")
        records = [record for _, record in self.recorder.ended]
        self.assertEqual([(r.callee, r.disconnect) for r in records], [
            ("sip:1001@127.0.0.1", "transferred"), ("sip:1002@127.0.0.1", "transferred"),
            ("sip:1003@127.0.0.1", "caller")])
        self.finish()

    def test_transferee_answers_with_other_media(self) -> None:
        """Alice answers the re-INVITE with another port than carol was
        offered: carol gets a re-INVITE with it (and is ACKed)."""
        call, bob_side = self.connect()
        self.refer(bob_side)
        self.alice.answer_for = lambda offer, direction=None: sdp_offer(  # type: ignore
            "127.0.0.2", 5555, version=7)
        carol_side = self.carol.incoming[0]
        carol_side.answer()
        # carol's answer to her re-INVITE is the same media (a new o= version)
        self.assertEqual(media_lines(call.remote_sdp), media_lines(carol_side.local_sdp))
        reinvites = [r for r in carol_side.requests if r.method == "INVITE"]
        self.assertEqual(len(reinvites), 1)
        self.assertEqual(reinvites[0].body, call.local_sdp)
        self.assertIn(b"m=audio 5555 ", carol_side.remote_sdp)
        self.assertEqual([r.method for r in carol_side.requests].count("ACK"), 2)
        call.hangup()
        self.assertEqual(carol_side.state, "terminated")
        self.finish()

    def test_referrer_hangs_up_on_the_final_notify(self) -> None:
        """Bob hangs up on the final NOTIFY before answering it (the
        switch waits for that answer to send its BYE): the first call
        ends at once, as transferred."""
        call, bob_side = self.connect()
        self.refer(bob_side)
        bob = self.bob.address
        self.h.network.drop(lambda d: d.sender == bob and isinstance(d.message, Response)
                            and d.message.cseq.method == "NOTIFY", count=None)
        carol_side = self.carol.incoming[0]
        carol_side.answer()
        self.assertEqual(self.notifies(bob_side)[-1].body, b"SIP/2.0 200 OK\r\n")
        self.assertEqual(self.recorder.ended, [])
        self.assertEqual(bob_side.hangup().code, 200)
        self.assertEqual(self.records()["first"].disconnect, "transferred")
        self.assertEqual(call.remote_sdp, carol_side.local_sdp)
        call.hangup()
        self.assertEqual(carol_side.state, "terminated")
        self.finish()

    def test_late_offer_when_no_sdp_is_known(self) -> None:
        """Nothing known of the transferee's media: carol gets an INVITE
        without SDP, her offer goes to alice in the re-INVITE, and alice's
        answer to carol in the ACK."""
        call, bob_side = self.connect()
        first = self.recorder.received[0][0]
        first.a_leg.last_sdp = first.answered_leg.last_sdp = (b"", None)
        self.refer(bob_side)
        carol_side = self.carol.incoming[0]
        self.assertEqual(carol_side.invite.body, b"")
        carol_side.answer()
        self.assertEqual(call.remote_sdp, carol_side.local_sdp)
        acks = [r for r in carol_side.requests if r.method == "ACK"]
        self.assertEqual([a.body for a in acks], [call.local_sdp])
        call.hangup()
        self.finish()


class FailedTransferTests(TransferTestCase):
    """Transfers that fail: the call stays (RFC 5589)."""

    def test_target_busy(self) -> None:
        """Carol is busy: bob gets NOTIFY 486, alice and bob stay connected."""
        call, bob_side = self.connect()
        self.assertEqual(self.refer(bob_side).code, 202)
        self.carol.incoming[0].busy()
        notifies = self.notifies(bob_side)
        self.assertEqual([n.body for n in notifies],
                         [b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 486 Busy Here\r\n"])
        self.assertEqual(notifies[-1].headers.get("subscription-state"),
                         "terminated;reason=noresource")
        self.assertEqual((call.state, bob_side.state), ("confirmed", "confirmed"))
        self.assertEqual([r.method for r in call.requests if r.method == "INVITE"], [])
        records = self.records()
        self.assertEqual(list(records), ["transfer"])
        self.assertEqual(records["transfer"].code, 486)
        # still one call: an INFO crosses, and bob may try again
        self.assertEqual(call.info().code, 200)
        self.assertEqual([r.method for r in bob_side.requests].count("INFO"), 1)
        self.assertEqual(self.refer(bob_side).code, 202)
        self.carol.incoming[1].reject(480)
        self.assertEqual(self.notifies(bob_side)[-1].body,
                         b"SIP/2.0 480 Temporarily Unavailable\r\n")
        call.hangup()
        self.assertEqual(bob_side.state, "terminated")
        self.assertEqual(len(self.recorder.ended), 3)
        self.assertEqual(self.records()["first"].disconnect, "caller")
        self.finish()

    def test_failed_transfers_are_not_kept(self) -> None:
        """A referrer trying again and again (each target busy) leaves
        nothing of the failed transfers' calls behind while the first call
        goes on: memory does not grow with every REFER."""
        call, bob_side = self.connect()
        gone = []
        for attempt in range(3):
            self.assertEqual(self.refer(bob_side).code, 202)
            self.carol.incoming[attempt].busy()
            gone.append(weakref.ref(self.recorder.ended[-1][0]))
        self.h.settle()
        for kept in (self.recorder.received, self.recorder.authorized, self.recorder.ended,
                     self.recorder.transfers):
            kept.clear()
        gc.collect()
        self.assertEqual([ref() for ref in gone], [None, None, None])
        self.assertEqual((call.state, bob_side.state), ("confirmed", "confirmed"))
        call.hangup()
        self.assertEqual(bob_side.state, "terminated")
        self.finish()

    def test_target_not_registered(self) -> None:
        """No route to the target: NOTIFY with the routing's refusal."""
        _, bob_side = self.connect()
        self.assertEqual(self.refer(bob_side, "<sip:1009@127.0.0.1>").code, 202)
        self.assertEqual(self.notifies(bob_side)[-1].body,
                         b"SIP/2.0 480 Temporarily Unavailable\r\n")
        bob_side.hangup()
        self.assertEqual(len(self.recorder.ended), 2)
        self.finish()

    def test_target_does_not_answer(self) -> None:
        """Carol rings until the no-answer timeout: NOTIFY 408."""
        call, bob_side = self.connect()
        self.refer(bob_side)
        self.carol.incoming[0].ring()
        self.h.advance(CoreSettings().no_answer_timeout + 1)
        self.assertEqual(self.notifies(bob_side)[-1].body, b"SIP/2.0 408 Request Timeout\r\n")
        self.assertEqual(call.state, "confirmed")
        call.hangup()
        self.finish()

    def test_referrer_gone_and_target_busy(self) -> None:
        """Bob left after the 202 and carol is busy: alice is hung up."""
        call, bob_side = self.connect()
        self.refer(bob_side)
        bob_side.hangup()
        self.carol.incoming[0].busy()
        self.assertEqual(call.state, "terminated")
        bye = next(r for r in call.requests if r.method == "BYE")
        self.assertIn("cause=486", bye.headers.get("reason"))
        self.assertEqual(self.records()["first"].disconnect, "transfer-failed")
        self.assertEqual(len(self.recorder.ended), 2)
        self.finish()

    def test_transferee_hangs_up_while_target_rings(self) -> None:
        """Alice hangs up while carol rings: carol is cancelled, both calls
        end once."""
        call, bob_side = self.connect()
        self.refer(bob_side)
        carol_side = self.carol.incoming[0]
        carol_side.ring()
        call.hangup()
        self.assertTrue(carol_side.cancelled)
        self.assertEqual(bob_side.state, "terminated")
        records = self.records()
        self.assertEqual(records["first"].disconnect, "caller")
        self.assertEqual(records["transfer"].code, 487)
        self.finish()

    def test_transferee_refuses_the_reinvite(self) -> None:
        """Alice refuses the re-INVITE (488): the new call is hung up on
        both sides."""
        call, bob_side = self.connect()
        self.refer(bob_side)
        self.alice.answers["INVITE"] = 488
        carol_side = self.carol.incoming[0]
        carol_side.answer()
        self.assertEqual(carol_side.state, "terminated")
        self.assertEqual(call.state, "terminated")
        self.assertEqual(self.records()["transfer"].disconnect, "transfer-failed")
        self.assertEqual(len(self.recorder.ended), 2)
        self.finish()

    def test_reinvite_cannot_be_sent(self) -> None:
        """The re-INVITE to alice cannot even be sent (her TCP flow is
        gone: a transport error at once): the new call, answered by carol,
        ends once, after its answer (never connected after it ended, which
        fired b2bua_call_answered after b2bua_call_ended), with a BYE to
        carol; nothing (a session timer) is left."""
        _, bob_side = self.connect()
        self.refer(bob_side)
        carol_side = self.carol.incoming[0]
        transactions = self.h.switch.transactions
        send_request = transactions.send_request

        def failing(request: Request, target: Any, user: Any) -> Any:
            if request.method == "INVITE" and request.uri.user == "1000":
                raise TransportError("the flow to alice is gone")
            return send_request(request, target, user)

        transactions.send_request = failing
        self.addCleanup(setattr, transactions, "send_request", send_request)
        carol_side.answer()
        self.h.settle()
        self.assertEqual(carol_side.state, "terminated")
        self.assertEqual([type(c).__name__ for c in self.recorder.answered],
                         ["Call", "TransferCall"])
        self.assertEqual(self.records()["transfer"].disconnect, "transfer-failed")
        self.assertNotIn((CallState.ENDED, CallState.CONNECTED), self.recorder.states)
        self.finish()


class RefusedReferTests(TransferTestCase):
    """REFERs the switch does not act on."""

    def assertRefused(self, outgoing: Any, code: int, call: PhoneCall,
                      bob_side: PhoneCall) -> None:
        """C{outgoing} got C{code}; no transfer started; the call stays."""
        self.assertEqual(outgoing.code, code)
        self.assertEqual(self.carol.incoming, [])
        self.assertEqual((call.state, bob_side.state), ("confirmed", "confirmed"))
        self.assertEqual(len(self.recorder.received), 1)
        call.hangup()
        self.assertEqual(len(self.recorder.ended), 1)
        self.finish()

    def test_replaces_unknown_dialog(self) -> None:
        """An attended transfer (Refer-To with Replaces) naming no dialog of
        the referrer's gets 403 (test_transfer_attended has the rest)."""
        call, bob_side = self.connect()
        outgoing = self.refer(
            bob_side, "<sip:1002@127.0.0.1?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>")
        self.assertEqual(outgoing.final.reason, "Replaces does not name a call of yours")
        self.assertRefused(outgoing, 403, call, bob_side)

    def test_missing_refer_to(self) -> None:
        """No Refer-To: 400."""
        call, bob_side = self.connect()
        self.assertRefused(self.refer(bob_side, None), 400, call, bob_side)

    def test_refer_to_not_sip(self) -> None:
        """A Refer-To that is no SIP URI: 400."""
        call, bob_side = self.connect()
        self.assertRefused(self.refer(bob_side, "<http://example.com/>"), 400, call, bob_side)

    def test_refer_to_malformed(self) -> None:
        """An unparsable Refer-To: 400, counted as malformed."""
        call, bob_side = self.connect()
        before = self.h.metric("b2bua_sip_rejected_requests_total", reason="malformed")
        self.assertRefused(self.refer(bob_side, "<sip:1002@>"), 400, call, bob_side)
        self.assertEqual(
            self.h.metric("b2bua_sip_rejected_requests_total", reason="malformed"), before + 1)

    def test_plugin_refuses(self) -> None:
        """C{b2bua_authorize_transfer} answering a Reject: its code."""
        call, bob_side = self.connect()
        self.recorder.transfer_answer = Reject(403, "No transfers for you")
        outgoing = self.refer(bob_side)
        self.assertEqual(outgoing.final.reason, "No transfers for you")
        self.assertRefused(outgoing, 403, call, bob_side)

    def test_plugin_refuses_later(self) -> None:
        """A lazy refusal (a Deferred) is waited for."""
        call, bob_side = self.connect()
        pending: Deferred[Reject] = Deferred()
        self.recorder.transfer_answer = lambda: pending
        outgoing = self.refer(bob_side)
        self.assertIsNone(outgoing.code)
        pending.callback(Reject(403))
        self.h.flush()
        self.assertRefused(outgoing, 403, call, bob_side)

    def test_plugin_fails(self) -> None:
        """A plugin raising in the hook: 500, the call stays."""
        call, bob_side = self.connect()

        def broken() -> None:
            raise RuntimeError("boom")

        self.recorder.transfer_answer = broken
        self.assertRefused(self.refer(bob_side), 500, call, bob_side)
        self.flushLoggedErrors(RuntimeError)

    def test_refer_before_answer(self) -> None:
        """A REFER in the early dialog: 403 (the call is not established)."""
        call = self.alice.call("1001")
        bob_side = self.bob.incoming[0]
        bob_side.ring()
        outgoing = self.refer(bob_side)
        self.assertEqual(outgoing.code, 403)
        call.cancel()
        self.assertEqual(len(self.recorder.ended), 1)
        self.finish()

    def test_referrer_hangs_up_while_authorizing(self) -> None:
        """Bob hangs up before the transfer is authorized: the call ends as
        usual and the REFER gets 481."""
        call, bob_side = self.connect()
        pending: Deferred[None] = Deferred()
        self.recorder.transfer_answer = lambda: pending
        refer = self.refer(bob_side)
        bob_side.hangup()
        self.assertEqual(call.state, "terminated")
        pending.callback(None)
        self.h.flush()
        self.assertEqual(refer.code, 481)
        self.assertEqual(self.carol.incoming, [])
        self.assertEqual(len(self.recorder.ended), 1)
        self.finish()

    def test_second_refer_while_one_runs(self) -> None:
        """One transfer at a time: a second REFER gets 491."""
        call, bob_side = self.connect()
        self.assertEqual(self.refer(bob_side).code, 202)
        self.assertEqual(self.refer(call).code, 491)
        self.carol.incoming[0].busy()
        call.hangup()
        self.assertEqual(len(self.recorder.ended), 2)
        self.finish()


class RewriteTests(TransferTestCase):
    """C{b2bua_authorize_transfer} answering a URI."""

    def test_plugin_rewrites_target(self) -> None:
        """The transfer goes to the URI the plugin gave."""
        self.dave = self.h.register("1003")
        call, bob_side = self.connect()
        self.recorder.transfer_answer = parse_uri("sip:1003@127.0.0.1")
        self.assertEqual(self.refer(bob_side).code, 202)
        self.assertEqual(self.carol.incoming, [])
        self.dave.incoming[0].answer()
        self.assertEqual(self.records()["first"].disconnect, "transferred")
        call.hangup()
        self.assertEqual(self.records()["transfer"].callee, "sip:1003@127.0.0.1")
        self.finish()


class DisabledTests(TransferTestCase):
    """C{[core] transfer = false}."""

    core = CoreSettings(transfer=False)

    def test_refer_refused(self) -> None:
        """A REFER gets 403 and is not relayed to the other party."""
        call, bob_side = self.connect()
        outgoing = self.refer(bob_side)
        self.assertEqual((outgoing.code, outgoing.final.reason), (403, "Call transfer disabled"))
        self.assertEqual([r.method for r in call.requests].count("REFER"), 0)
        self.assertEqual(self.recorder.transfers, [])
        call.hangup()
        self.finish()


class ParseReferToTests(SynchronousTestCase):
    """L{parse_refer_to} on its own."""

    def refer(self, *values: str) -> Request:
        """A REFER with C{values} as Refer-To."""
        return Request("REFER", "sip:b2bua@127.0.0.1",
                       [("Refer-To", value) for value in values])

    def test_target_without_uri_headers(self) -> None:
        """URI headers other than Replaces and C{method=INVITE} are dropped."""
        target = parse_refer_to(self.refer("<sip:1002@127.0.0.1;method=INVITE?X-A=1>"))
        self.assertEqual(str(target), "sip:1002@127.0.0.1")

    def test_compact_form(self) -> None:
        """C{r:} is Refer-To."""
        request = Request("REFER", "sip:b2bua@127.0.0.1", [("r", "sip:1002@127.0.0.1")])
        self.assertEqual(str(parse_refer_to(request)), "sip:1002@127.0.0.1")

    def test_refusals(self) -> None:
        """Each bad REFER's code."""
        for values, code in [((), 400), (("<sip:a@b>", "<sip:c@d>"), 400),
                             (("<tel:+15551234>",), 400),
                             (("<sip:1002@127.0.0.1;method=BYE>",), 501),
                             (("<sip:1002@h?replaces=x%40y>",), 501)]:
            with self.assertRaises(BadReferTo) as raised:
                parse_refer_to(self.refer(*values))
            self.assertEqual(raised.exception.code, code, values)


class DiagramTests(TransferTestCase):
    """The transfer's calls walk only the call diagram's edges."""

    def test_transitions_are_drawn(self) -> None:
        """A completed and a failed transfer take only drawn transitions."""
        dot = (Path(__file__).parents[3] / "docs/state-machines/call.dot").read_text()
        import re

        edges = set(re.findall(r'"(\w+)" -> "(\w+)"', dot))
        call, bob_side = self.connect()
        self.refer(bob_side)
        self.carol.incoming[0].busy()
        self.refer(bob_side)
        self.carol.incoming[1].answer()
        call.hangup()
        seen = {(p.value, c.value) for p, c in self.recorder.states}
        self.assertEqual(seen - edges, set())
        self.finish()
