"""Tests for L{b2bua.core.call}: a call from the caller's INVITE to its end,
through the whole switch on the in-memory harness of L{b2bua.testing}.

Every test ends with L{CallTestCase.finish}: time runs until every
transaction is over, then no call, dialog, transaction or delayed call may
be left.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.call import Call, CallRecord, CallState, best_response
from b2bua.core.decisions import Destination, Reject, Route
from b2bua.core.switch import CoreSettings
from b2bua.hookspecs import hookimpl
from b2bua.sip.interfaces import Target
from b2bua.sip.message import Request, Response
from b2bua.testing import Phone, PhoneCall, SwitchHarness, sdp_direction


class StateRecorder:
    """A plugin that records the calls' state changes in C{states}; a base
    of the test recorders (this module's, the transfer tests')."""

    def __init__(self) -> None:
        self.states: list[tuple[CallState, CallState]] = []

    @hookimpl
    def b2bua_call_state_changed(self, call: Call, previous: CallState,
                                 current: CallState) -> None:
        """Record."""
        self.states.append((previous, current))


class Recorder(StateRecorder):
    """A plugin that records every notification, and rejects or limits
    calls when told to."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, Any]] = []
        self.ended: list[tuple[Call, CallRecord]] = []
        self.reject: Reject | None = None
        self.limit: tuple[float, float | None] | None = None

    @hookimpl
    def b2bua_call_received(self, call: Call, request: Request) -> None:
        """Record."""
        self.events.append(("received", call.id))

    @hookimpl
    def b2bua_authorize_call(self, call: Call, request: Request) -> Reject | None:
        """Reject when told to."""
        self.events.append(("authorize", call.id))
        return self.reject

    @hookimpl
    def b2bua_call_answered(self, call: Call, leg: Any, answered_at: float) -> None:
        """Record; arm the duration limit when told to."""
        self.events.append(("answered", answered_at))
        if self.limit is not None:
            call.limit_duration(*self.limit)

    @hookimpl
    def b2bua_call_warned(self, call: Call, remaining: float) -> None:
        """Record."""
        self.events.append(("warned", remaining))

    @hookimpl
    def b2bua_call_ended(self, call: Call, record: CallRecord) -> None:
        """Record."""
        self.events.append(("ended", record.disconnect))
        self.ended.append((call, record))


class Steps:
    """A plugin routing calls to C{2000} through the steps it is given."""

    def __init__(self) -> None:
        self.steps: list[Route] = []

    @hookimpl
    def b2bua_route_call(self, call: Call, request: Request) -> list[Route] | None:
        """The configured steps for 2000, no opinion otherwise."""
        return list(self.steps) if request.uri.user == "2000" else None


def to_phone(phone: Phone, transport: str = "UDP") -> Destination:
    """A route destination ringing C{phone}."""
    return Destination(phone.contact.uri.copy(), Target(transport, *phone.address),
                       label=phone.user)


class CallTestCase(SynchronousTestCase):
    """A switch with two registered phones: alice (1000) and bob (1001)."""

    core: CoreSettings | None = None

    def setUp(self) -> None:
        """Build the switch, register alice and bob."""
        self.recorder = Recorder()
        self.steps = Steps()
        self.h = SwitchHarness({"recorder": self.recorder, "steps": self.steps},
                               core=self.core)
        self.alice = self.h.register("1000")
        self.bob = self.h.register("1001")

    def connect(self, callee: Phone | None = None) -> tuple[PhoneCall, PhoneCall]:
        """Alice calls bob (or C{callee}), who rings and answers."""
        callee = callee or self.bob
        call = self.alice.call(callee.user)
        incoming = callee.incoming[-1]
        incoming.ring()
        incoming.answer()
        self.assertEqual(call.state, "confirmed")
        return call, incoming

    def finish(self) -> None:
        """Let every transaction end; nothing may be left behind."""
        self.h.settle()
        self.h.assert_idle()

    def ended_once(self) -> CallRecord:
        """The one call's record, asserting C{b2bua_call_ended} fired once."""
        self.assertEqual(len(self.recorder.ended), 1)
        return self.recorder.ended[0][1]

    def b_side(self, method: str, phone: Phone | None = None) -> list[Request]:
        """Requests the switch sent to C{phone} (bob)."""
        return self.h.network.requests(method, self.h.address, (phone or self.bob).address)

    def a_side(self, method: str) -> list[Request]:
        """Requests the switch sent to alice."""
        return self.h.network.requests(method, self.h.address, self.alice.address)


class BasicCallTests(CallTestCase):
    """Alice calls bob: ringing, answer, ACKs, hang-up."""

    def test_call_rings_answers_and_ends(self) -> None:
        """The caller's INVITE reaches the callee as a new INVITE, the 180 and
        the 200 come back, both sides are ACKed and the caller's BYE ends
        both legs; the call walks every state once."""
        call = self.alice.call("1001")
        self.assertEqual(len(self.bob.incoming), 1)
        self.assertEqual(call.responses[0].code, 407)
        incoming = self.bob.incoming[0]
        incoming.ring()
        self.assertEqual([r.code for r in call.responses[1:]], [180])
        incoming.answer()
        self.assertEqual(call.code, 200)
        self.assertEqual(len(self.b_side("ACK")), 1)
        self.assertEqual(len(self.h.network.requests("ACK", self.alice.address)), 2)
        bye = call.hangup()
        self.assertEqual(bye.code, 200)
        self.assertEqual(incoming.state, "terminated")
        self.assertEqual([(p.value, c.value) for p, c in self.recorder.states], [
            ("received", "authorizing"), ("authorizing", "routing"),
            ("routing", "proceeding"), ("proceeding", "early"), ("early", "connected"),
            ("connected", "releasing"), ("releasing", "ended")])
        record = self.ended_once()
        self.assertEqual((record.code, record.disconnect), (200, "caller"))
        self.assertEqual(record.caller, "sip:1000@127.0.0.1")
        self.assertEqual(record.callee, "sip:1001@127.0.0.1")
        self.assertEqual(record.tenant, "127.0.0.1")
        self.finish()

    def test_ringing_without_sdp(self) -> None:
        """A 180 without a body reaches the caller as a 180 without a body;
        a second one is not relayed again."""
        call = self.alice.call("1001")
        self.bob.incoming[0].ring()
        self.bob.incoming[0].ring()
        ringing = [r for r in call.responses if 100 < r.code < 200]
        self.assertEqual([(r.code, r.body) for r in ringing], [(180, b"")])
        call.cancel()
        self.finish()

    def test_ringing_with_sdp_becomes_183(self) -> None:
        """A 180 carrying SDP (early media) is relayed as 183 with the SDP,
        so that the caller plays the media instead of its own ringback."""
        call = self.alice.call("1001")
        self.bob.incoming[0].ring(180, sdp=True)
        early = [r for r in call.responses if 100 < r.code < 200]
        self.assertEqual([r.code for r in early], [183])
        self.assertEqual(early[0].content_type, "application/sdp")
        self.assertIn(b"m=audio", early[0].body)
        self.assertEqual(call.remote_sdp, early[0].body)
        self.bob.incoming[0].answer()
        call.hangup()
        self.finish()

    def test_session_progress_relayed(self) -> None:
        """A 183 with SDP is relayed as a 183 with the callee's SDP."""
        call = self.alice.call("1001")
        self.bob.incoming[0].ring(183, sdp=True)
        early = [r for r in call.responses if 100 < r.code < 200]
        self.assertEqual([r.code for r in early], [183])
        self.assertIn(b"c=IN IP4 127.0.0.3", early[0].body)
        call.cancel()
        self.finish()

    def test_answer_relays_sdp_and_acks_each_leg(self) -> None:
        """The callee's SDP answer reaches the caller in the 200; the switch
        ACKs the callee's 200 itself and absorbs the caller's ACK."""
        call, incoming = self.connect()
        final = call.responses[-1]
        self.assertEqual(final.content_type, "application/sdp")
        self.assertIn(b"c=IN IP4 127.0.0.3", final.body)
        self.assertIn(b"c=IN IP4 127.0.0.2", incoming.invite.body)
        [ack] = self.b_side("ACK")
        self.assertEqual(ack.cseq.number, incoming.invite.cseq.number)
        self.assertEqual(ack.body, b"")
        self.assertEqual([r.method for r in incoming.requests], ["ACK"])
        self.h.advance(10)
        self.assertEqual(len(self.h.network.responses(200, "INVITE", self.h.address,
                                                      self.alice.address)), 1)
        call.hangup()
        self.finish()

    def test_topology_hiding(self) -> None:
        """Nothing of one leg's Call-ID, tags, Via or Contact reaches the
        other leg."""
        call, incoming = self.connect()
        a_invite, b_invite = call.invite, incoming.invite
        self.assertNotEqual(a_invite.call_id, b_invite.call_id)
        self.assertNotEqual(a_invite.from_.tag, b_invite.from_.tag)
        self.assertEqual(len(b_invite.via), 1)
        self.assertEqual(b_invite.via[0].host, "127.0.0.1")
        self.assertEqual(str(b_invite.contact[0].uri), "sip:b2bua@127.0.0.1:5060")
        self.assertEqual(str(call.responses[-1].contact[0].uri), "sip:b2bua@127.0.0.1:5060")
        self.assertNotEqual(call.responses[-1].to.tag, incoming.local_tag)
        call.hangup()
        to_bob = self.h.network.messages(self.h.address, self.bob.address)
        to_alice = self.h.network.messages(self.h.address, self.alice.address)
        for message in to_bob:
            head = message.to_bytes().split(b"\r\n\r\n")[0]
            self.assertNotIn(a_invite.call_id.encode(), head)
            self.assertNotIn(call.local_tag.encode(), head)
            self.assertNotIn(b"127.0.0.2", head)
        for message in to_alice:
            head = message.to_bytes().split(b"\r\n\r\n")[0]
            self.assertNotIn(b_invite.call_id.encode(), head)
            self.assertNotIn(incoming.local_tag.encode(), head)
            self.assertNotIn(b"127.0.0.3", head)
        self.finish()


class EndingTests(CallTestCase):
    """Calls end by CANCEL, by a callee's refusal, by BYE from either side."""

    def test_cancel_before_answer(self) -> None:
        """The caller's CANCEL gets 200, its INVITE 487, and the callee gets a
        CANCEL (with a Reason) and answers 487 itself."""
        call = self.alice.call("1001")
        incoming = self.bob.incoming[0]
        incoming.ring()
        cancel = call.cancel()
        self.assertEqual(cancel.code, 200)
        self.assertEqual(call.code, 487)
        self.assertTrue(incoming.cancelled)
        self.assertEqual(incoming.code, 487)
        [b_cancel] = self.b_side("CANCEL")
        self.assertIn("ORIGINATOR_CANCEL", b_cancel.headers.get("Reason") or "")
        record = self.ended_once()
        self.assertEqual((record.code, record.disconnect), (487, "caller-cancel"))
        self.assertEqual(self.h.metric("b2bua_calls_total", outcome="cancelled"), 1)
        self.finish()

    def test_cancel_before_callee_answers_anything(self) -> None:
        """A CANCEL arriving before the callee sent any provisional response
        is sent on once one comes (RFC 3261 9.1)."""
        self.h.network.drop(lambda d: d.sender == self.bob.address, count=1)
        call = self.alice.call("1001")
        self.h.advance(0.3)
        call.cancel()
        self.assertEqual(call.code, 487)
        self.assertEqual(self.b_side("CANCEL"), [])
        self.bob.incoming[0].ring()
        self.assertEqual(len(self.b_side("CANCEL")), 1)
        self.assertEqual(self.bob.incoming[0].code, 487)
        self.ended_once()
        self.finish()

    def test_bye_on_early_dialog(self) -> None:
        """A caller's BYE on its early dialog is answered, its INVITE gets
        487 and the callee is cancelled (RFC 3261 15.1.2)."""
        call = self.alice.call("1001")
        self.bob.incoming[0].ring()
        bye = call.request("BYE")
        self.assertEqual(bye.code, 200)
        self.assertEqual(call.code, 487)
        self.assertEqual(self.bob.incoming[0].code, 487)
        self.assertEqual(self.ended_once().code, 487)
        self.finish()

    def test_busy_relayed(self) -> None:
        """A 486 from the callee reaches the caller; both INVITEs are ACKed
        by their transactions."""
        call = self.alice.call("1001")
        self.bob.incoming[0].busy()
        self.assertEqual(call.code, 486)
        self.assertEqual(len(self.b_side("ACK")), 1)
        record = self.ended_once()
        self.assertEqual((record.code, record.legs[0].code), (486, 486))
        self.assertEqual(self.h.metric("b2bua_calls_total", outcome="busy"), 1)
        self.finish()

    def test_bye_from_caller(self) -> None:
        """The caller's BYE is answered and a BYE (with the caller's Reason)
        goes to the callee."""
        call, incoming = self.connect()
        call.hangup('Q.850;cause=16;text="Normal call clearing"')
        [bye] = self.b_side("BYE")
        self.assertEqual(bye.headers.get("Reason"), 'Q.850;cause=16;text="Normal call clearing"')
        self.assertEqual(incoming.state, "terminated")
        self.assertEqual(self.ended_once().disconnect, "caller")
        self.finish()

    def test_bye_from_callee(self) -> None:
        """The callee's BYE is answered and a BYE goes to the caller."""
        call, incoming = self.connect()
        bye = incoming.hangup()
        self.assertEqual(bye.code, 200)
        self.assertEqual(len(self.a_side("BYE")), 1)
        self.assertEqual(call.state, "terminated")
        self.assertEqual(self.ended_once().disconnect, "callee")
        self.finish()

    def test_unregistered_extension(self) -> None:
        """A call to an extension with no registered contact gets 480."""
        call = self.alice.call("1005")
        self.assertEqual(call.code, 480)
        self.assertEqual(self.ended_once().disconnect, "rejected:local_routing")
        self.finish()

    def test_limit_duration(self) -> None:
        """C{Call.limit_duration} warns ahead, then ends the call with a BYE
        carrying a Reason on both sides."""
        self.recorder.limit = (60.0, 10.0)
        call, incoming = self.connect()
        self.h.advance(49)
        self.assertNotIn("warned", [e[0] for e in self.recorder.events])
        self.h.advance(1)
        self.assertIn(("warned", 10.0), self.recorder.events)
        self.assertEqual(self.b_side("BYE"), [])
        self.h.advance(10)
        for side in (self.a_side("BYE"), self.b_side("BYE")):
            self.assertEqual(len(side), 1)
            self.assertIn("duration limit", side[0].headers.get("Reason") or "")
        self.assertEqual((call.state, incoming.state), ("terminated", "terminated"))
        names = [e[0] for e in self.recorder.events]
        self.assertLess(names.index("warned"), names.index("ended"))
        record = self.ended_once()
        self.assertEqual((record.disconnect, record.duration), ("limit", 60.0))
        self.finish()

    def test_limit_before_answer(self) -> None:
        """A limit that runs out before the answer fails the call (403) and
        cancels the callee."""
        call = self.alice.call("1001")
        self.bob.incoming[0].ring()
        [active] = self.h.switch.calls.values()
        active.limit_duration(5)
        self.h.advance(5)
        self.assertEqual(call.code, 403)
        self.assertEqual(self.bob.incoming[0].code, 487)
        self.assertEqual(self.ended_once().disconnect, "limit")
        self.finish()


class ForkingTests(CallTestCase):
    """Parallel and sequential hunting (RFC 3261 16.7 rules for the answer)."""

    def setUp(self) -> None:
        """Bob registers a second phone; carol (1002) registers."""
        super().setUp()
        self.bob2 = self.h.register("1001")
        self.carol = self.h.register("1002")

    def test_parallel_first_answer_wins(self) -> None:
        """Both of bob's phones ring; the first 200 wins, the other phone
        gets a CANCEL saying the call was completed elsewhere."""
        call = self.alice.call("1001")
        first, second = self.bob.incoming[0], self.bob2.incoming[0]
        first.ring()
        second.ring()
        second.answer()
        self.assertEqual(call.code, 200)
        self.assertEqual(first.code, 487)
        [cancel] = self.b_side("CANCEL", self.bob)
        self.assertIn("completed elsewhere", cancel.headers.get("Reason") or "")
        call.hangup()
        self.assertEqual(second.state, "terminated")
        self.assertEqual([leg.code for leg in self.ended_once().legs], [487, 200])
        self.finish()

    def test_parallel_late_second_answer(self) -> None:
        """When both phones answer at once, the second 200 is ACKed and
        hung up with a BYE; the caller sees only one answer."""
        call = self.alice.call("1001")
        first, second = self.bob.incoming[0], self.bob2.incoming[0]
        with self.h.network.batch():
            first.answer()
            second.answer()
        self.assertEqual(call.code, 200)
        self.assertEqual(len(self.b_side("ACK", self.bob2)), 1)
        self.assertEqual(len(self.b_side("BYE", self.bob2)), 1)
        self.assertEqual(second.state, "terminated")
        self.assertEqual(first.state, "confirmed")
        self.assertEqual(len(self.h.network.responses(200, "INVITE", self.h.address,
                                                      self.alice.address)), 1)
        call.hangup()
        self.assertEqual(len(self.b_side("BYE", self.bob)), 1)
        self.ended_once()
        self.finish()

    def test_extra_2xx_from_a_forking_proxy(self) -> None:
        """A second 2xx with another To tag on the same B leg (a forking
        proxy downstream) is ACKed and hung up (RFC 3261 13.2.2.4)."""
        call = self.alice.call("1001")
        self.bob2.incoming[0].reject(480)
        incoming = self.bob.incoming[0]
        incoming.answer()
        other = Response(200, headers=[(n, v) for n, v in incoming.final_sent.headers
                                       if n.lower() != "to"] + [
            ("To", str(incoming.invite.to) + ";tag=otherfork")],
            body=incoming.final_sent.body)
        incoming.transaction.respond(other)
        self.h.flush()
        byes = self.b_side("BYE", self.bob)
        self.assertEqual([b.to.tag for b in byes], ["otherfork"])
        acks = self.b_side("ACK", self.bob)
        self.assertEqual(sorted(a.to.tag or "" for a in acks),
                         sorted([incoming.local_tag, "otherfork"]))
        call.hangup()
        self.finish()

    def test_sequential_with_ring_timeout(self) -> None:
        """Two route steps: bob rings for the first step's 10 s, is
        cancelled, then carol rings and answers."""
        self.steps.steps = [Route((to_phone(self.bob),), ring_timeout=10),
                            Route((to_phone(self.carol),))]
        call = self.alice.call("2000")
        self.bob.incoming[0].ring()
        self.assertEqual(self.carol.incoming, [])
        self.h.advance(9.9)
        self.assertEqual(self.carol.incoming, [])
        self.h.advance(0.1)
        self.assertEqual(self.bob.incoming[0].code, 487)
        self.assertIn("ring timeout", self.b_side("CANCEL")[0].headers.get("Reason") or "")
        self.carol.incoming[0].answer()
        self.assertEqual(call.code, 200)
        call.hangup()
        self.assertEqual(self.ended_once().legs[1].destination, "1002")
        self.finish()

    def test_sequential_after_busy(self) -> None:
        """A busy first step hunts on to the next (the default failover)."""
        self.steps.steps = [Route((to_phone(self.bob),)), Route((to_phone(self.carol),))]
        call = self.alice.call("2000")
        self.bob.incoming[0].busy()
        self.carol.incoming[0].answer()
        self.assertEqual(call.code, 200)
        call.hangup()
        self.finish()

    def test_unreachable_destination_among_parallel(self) -> None:
        """A destination that fails at once (no TCP listener there) does not
        end its step: the other destination of the step still rings."""
        dead = Destination(self.carol.contact.uri.copy(), Target("TCP", "127.0.0.99", 5060))
        self.steps.steps = [Route((dead, to_phone(self.bob))), Route((to_phone(self.carol),))]
        call = self.alice.call("2000")
        self.assertEqual(len(self.bob.incoming), 1)
        self.assertEqual(self.carol.incoming, [])
        self.bob.incoming[0].answer()
        self.assertEqual(call.code, 200)
        call.hangup()
        self.finish()

    def test_all_unreachable(self) -> None:
        """When no destination can be reached the caller gets 480: the
        callee is temporarily unavailable (a synthesized 503 would become
        500 under RFC 3261 16.7 and blame the switch)."""
        dead = Destination(self.carol.contact.uri.copy(), Target("TCP", "127.0.0.99", 5060))
        self.steps.steps = [Route((dead,))]
        call = self.alice.call("2000")
        self.assertEqual(call.code, 480)
        self.ended_once()
        self.finish()

    def test_callee_never_answers_the_invite(self) -> None:
        """A fork that never answers (every message to it is lost) times
        out (Timer B, 32 s); only then does the caller get the best
        response, the other fork's 486."""
        self.h.network.drop(lambda d: d.receiver == self.bob.address, count=None)
        call = self.alice.call("1001")
        self.bob2.incoming[0].busy()
        self.h.advance(31.9)
        self.assertIsNone(call.code)
        self.h.advance(0.2)
        self.assertEqual(call.code, 486)
        self.ended_once()
        self.finish()

    def test_redirect_followed(self) -> None:
        """A 302 is followed: its Contact is tried as a new step."""
        self.steps.steps = [Route((to_phone(self.bob),))]
        call = self.alice.call("2000")
        self.bob.incoming[0].redirect(f"<{self.carol.contact.uri}>")
        self.assertEqual(len(self.carol.incoming), 1)
        self.carol.incoming[0].answer()
        self.assertEqual(call.code, 200)
        call.hangup()
        self.assertEqual([leg.code for leg in self.ended_once().legs], [302, 200])
        self.finish()

    def test_redirect_target_busy(self) -> None:
        """When the redirect's target is busy the caller gets that 486, not
        the 3xx the switch recursed on (RFC 3261 16.7 step 4)."""
        self.steps.steps = [Route((to_phone(self.bob),))]
        call = self.alice.call("2000")
        self.bob.incoming[0].redirect(f"<{self.carol.contact.uri}>")
        self.carol.incoming[0].busy()
        self.assertEqual(call.code, 486)
        self.finish()

    def test_six_hundred_wins(self) -> None:
        """A 603 of one fork wins over a 486 of the other (16.7 step 6)."""
        call = self.alice.call("1001")
        self.bob.incoming[0].busy()
        self.bob2.incoming[0].reject(603)
        self.assertEqual(call.code, 603)
        self.finish()

    def test_six_hundred_stops_the_hunt(self) -> None:
        """A 603 cancels the other forks still ringing and no later step is
        tried (16.7 step 5)."""
        self.steps.steps = [Route((to_phone(self.bob), to_phone(self.bob2))),
                            Route((to_phone(self.carol),))]
        call = self.alice.call("2000")
        self.bob.incoming[0].ring()
        self.bob2.incoming[0].reject(603, "Decline")
        self.assertEqual(self.bob.incoming[0].code, 487)
        self.assertEqual(call.code, 603)
        self.assertEqual(self.carol.incoming, [])
        self.finish()

    def test_503_becomes_500(self) -> None:
        """A 503 from the only destination reaches the caller as 500."""
        call = self.alice.call("1001")
        self.bob.incoming[0].reject(503)
        self.bob2.incoming[0].reject(503)
        self.assertEqual(call.code, 500)
        self.finish()


class BestResponseTests(SynchronousTestCase):
    """L{best_response}: RFC 3261 16.7 step 6."""

    def choose(self, *codes: int) -> int:
        """The code chosen among responses with C{codes}."""
        return best_response([Response(c) for c in codes])[0]

    def test_rules(self) -> None:
        """6xx wins, then the lowest class; 401/407/415/420/484 are
        preferred among 4xx; 503 becomes 500; nothing at all is 408."""
        self.assertEqual(self.choose(486, 603, 500), 603)
        self.assertEqual(self.choose(500, 486), 486)
        self.assertEqual(self.choose(404, 407), 407)
        self.assertEqual(self.choose(503), 500)
        self.assertEqual(self.choose(302, 486), 302)
        self.assertEqual(self.choose(), 408)
        self.assertEqual(best_response([Response(503)])[1], "Server Internal Error")


class ReliableProvisionalTests(CallTestCase):
    """RFC 3262 on the callee's side."""

    def test_prack_sent_by_switch(self) -> None:
        """A reliable 180 from the callee is PRACKed by the switch (RAck
        naming it); the caller gets an ordinary 180."""
        call = self.alice.call("1001")
        incoming = self.bob.incoming[0]
        incoming.ring(reliable=True)
        [prack] = self.b_side("PRACK")
        invite = incoming.invite
        self.assertEqual(prack.headers.get("RAck"), f"1 {invite.cseq.number} INVITE")
        self.assertEqual([r.method for r in incoming.requests], ["PRACK"])
        ringing = [r for r in call.responses if r.code == 180]
        self.assertEqual(len(ringing), 1)
        self.assertNotIn("rseq", ringing[0].headers)
        incoming.ring(183, sdp=True, reliable=True)
        self.assertEqual(len(self.b_side("PRACK")), 2)
        incoming.answer()
        call.hangup()
        self.assertEqual(sdp_direction(call.remote_sdp), "sendrecv")
        self.finish()


class LossTests(CallTestCase):
    """Lost UDP messages and crossing requests around the answer."""

    def test_lost_answer_retransmitted(self) -> None:
        """A 200 lost on its way to the caller is sent again (T1 later)
        until the caller's ACK."""
        self.h.network.drop(lambda d: d.receiver == self.alice.address
                            and getattr(d.message, "code", 0) == 200)
        call = self.alice.call("1001")
        self.bob.incoming[0].answer()
        self.assertIsNone(call.code)
        self.h.advance(0.5)
        self.assertEqual(call.code, 200)
        call.hangup()
        self.finish()

    def test_lost_ack_to_callee(self) -> None:
        """When the switch's ACK to the callee is lost the callee sends its
        200 again; the switch ACKs it again and the call stays up."""
        self.h.network.drop(lambda d: d.receiver == self.bob.address
                            and getattr(d.message, "method", "") == "ACK")
        call, incoming = self.connect()
        self.assertEqual(self.b_side("ACK"), [])
        self.h.advance(0.5)
        self.assertEqual(len(self.b_side("ACK")), 1)
        self.assertEqual(self.b_side("BYE"), [])
        self.assertEqual(incoming.requests[-1].method, "ACK")
        self.h.advance(10)
        self.assertEqual((call.state, incoming.state), ("confirmed", "confirmed"))
        call.hangup()
        self.finish()

    def test_no_ack_from_caller(self) -> None:
        """A caller that never ACKs the 200 is hung up after 64*T1, both
        sides getting a BYE."""
        self.h.network.drop(lambda d: d.sender == self.alice.address
                            and getattr(d.message, "method", "") == "ACK", count=None)
        call = self.alice.call("1001")
        self.bob.incoming[0].answer()
        self.h.advance(31.9)
        self.assertEqual(self.b_side("BYE"), [])
        self.h.advance(0.1)
        self.assertEqual(len(self.b_side("BYE")), 1)
        self.assertEqual(self.ended_once().disconnect, "no-ack")
        self.assertEqual(call.code, 200)
        self.finish()

    def test_cancel_crossing_the_answer(self) -> None:
        """The caller's CANCEL and the callee's 200 cross: the caller gets
        487, the callee's 200 is ACKed and hung up with a BYE."""
        call = self.alice.call("1001")
        incoming = self.bob.incoming[0]
        incoming.ring()
        with self.h.network.batch():
            call.cancel()
            incoming.answer()
        self.assertEqual(call.code, 487)
        self.assertEqual(len(self.b_side("ACK")), 1)
        self.assertEqual(len(self.b_side("BYE")), 1)
        self.assertEqual(incoming.state, "terminated")
        self.ended_once()
        self.finish()

    def test_cancel_crossing_an_unannounced_answer(self) -> None:
        """The same when the callee answers without any provisional response
        first: its dialog is not left behind in the switch."""
        self.h.network.drop(lambda d: d.sender == self.bob.address, count=1)
        call = self.alice.call("1001")
        self.h.advance(0.3)
        incoming = self.bob.incoming[0]
        with self.h.network.batch():
            call.cancel()
            incoming.answer()
        self.assertEqual(call.code, 487)
        self.assertEqual(len(self.b_side("BYE")), 1)
        self.assertEqual(incoming.state, "terminated")
        self.finish()

    def test_answer_crossing_the_cancel(self) -> None:
        """When the callee's 200 reaches the switch before the caller's
        CANCEL, the call is answered and the CANCEL changes nothing."""
        call = self.alice.call("1001")
        incoming = self.bob.incoming[0]
        incoming.ring()
        with self.h.network.batch():
            incoming.answer()
            call.cancel()
        self.assertEqual(call.code, 200)
        self.assertEqual(call.cancel_outgoing.code, 200)
        self.assertEqual(self.b_side("CANCEL"), [])
        call.hangup()
        self.finish()


class SetUpReleasedTests(CallTestCase):
    """Once a call is set up its legs keep only what the established call
    needs: the INVITEs, their transactions and the answer's header fields
    are let go (memory per held call)."""

    core = CoreSettings(session_expires=0)

    def call_of(self, phone_call: PhoneCall) -> Call:
        """The switch's call whose A leg is C{phone_call}'s INVITE."""
        [call] = [c for c in self.h.switch.calls.values()
                  if c.id == phone_call.invite.call_id]
        return call

    def test_answered_call_lets_go(self) -> None:
        """After both ACKs: no INVITE, no transaction, a status-only final,
        packed ACK; the CDR still has the answer's code and reason."""
        phone_call, _ = self.connect()
        self.h.advance(0)
        call = self.call_of(phone_call)
        leg = call.answered_leg
        assert leg is not None
        self.assertIsNone(call.a_leg.request)
        self.assertIsNone(call.a_leg.transaction)
        self.assertIsNone(leg.invite)
        self.assertIsNone(leg.transaction)
        assert leg.final is not None and leg.ack is not None
        self.assertEqual((leg.final.code, leg.final.reason, len(leg.final.headers)),
                         (200, "OK", 0))
        self.assertIsInstance(leg.ack.headers._fields, str)
        self.assertEqual((self.h.switch._calls_by_tx, self.h.switch._merged), ({}, {}))
        self.assertEqual(call._steps, [])
        phone_call.hangup()
        record = self.ended_once()
        self.assertEqual([(r.code, r.reason) for r in record.legs], [(200, "OK")])
        self.finish()

    def test_retransmitted_answer_after_release(self) -> None:
        """The callee's 200, sent again after the leg let go of its INVITE
        (our ACK was lost), gets the same ACK again."""
        self.h.network.drop(lambda d: d.receiver == self.bob.address
                            and getattr(d.message, "method", "") == "ACK")
        phone_call, incoming = self.connect()
        self.h.advance(0)
        self.assertIsNone(self.call_of(phone_call).answered_leg.invite)  # type: ignore[union-attr]
        self.h.advance(0.5)
        [ack] = self.b_side("ACK")
        self.assertEqual(ack.to.tag, incoming.local_tag)
        self.assertEqual(self.b_side("BYE"), [])
        phone_call.hangup()
        self.finish()

    def test_other_fork_answer_after_release(self) -> None:
        """A 2xx with another To tag arriving after the leg let go of its
        INVITE still gets its own ACK and a BYE (the answered dialog forks)."""
        phone_call, incoming = self.connect()
        self.h.advance(0)
        self.assertIsNone(self.call_of(phone_call).answered_leg.invite)  # type: ignore[union-attr]
        other = Response(200, headers=[(n, v) for n, v in incoming.final_sent.headers
                                       if n.lower() != "to"] + [
            ("To", str(incoming.invite.to) + ";tag=otherfork")],
            body=incoming.final_sent.body)
        incoming.transaction.respond(other)
        self.h.flush()
        self.assertEqual([b.to.tag for b in self.b_side("BYE")], ["otherfork"])
        acks = self.b_side("ACK")
        self.assertEqual(sorted(a.to.tag or "" for a in acks),
                         sorted([incoming.local_tag, "otherfork"]))
        self.assertEqual(len({a.headers.get("Via") for a in acks}), 2)
        self.assertEqual(incoming.state, "confirmed")
        phone_call.hangup()
        self.finish()

    def test_late_offer_released_after_the_callers_ack(self) -> None:
        """Without SDP in the INVITE the answering leg keeps its INVITE and
        the callee's 200 until the caller's ACK brought the answer."""
        self.h.network.drop(lambda d: d.sender == self.alice.address
                            and getattr(d.message, "method", "") == "ACK"
                            and bool(d.message.body))
        phone_call = self.alice.call("1001", sdp=False)
        self.bob.incoming[0].answer()
        self.h.advance(0)
        call = self.call_of(phone_call)
        leg = call.answered_leg
        assert leg is not None
        self.assertIsNotNone(leg.invite)
        self.assertIsNotNone(call.a_leg.request)
        self.assertEqual(self.b_side("ACK"), [])
        self.h.advance(0.5)
        self.assertIsNone(leg.invite)
        self.assertIsNone(call.a_leg.request)
        self.assertEqual([a.body != b"" for a in self.b_side("ACK")], [True])
        self.assertEqual(len(leg.final.headers), 0)  # type: ignore[union-attr]
        phone_call.hangup()
        self.finish()


class DiagramTests(CallTestCase):
    """C{docs/state-machines/call.dot} draws the machine the tests see."""

    def edges(self) -> set[tuple[str, str]]:
        """The (from, to) edges of the diagram, between states."""
        text = (Path(__file__).resolve().parents[3] / "docs" / "state-machines"
                / "call.dot").read_text()
        states = {s.value for s in CallState}
        self.assertEqual(set(re.findall(r'^\s*"(\w+)" \[label=', text, re.M)), states)
        return {(a, b) for a, b in re.findall(r'"(\w+)" -> "(\w+)"', text)
                if a in states and b in states}

    def test_observed_transitions_are_drawn(self) -> None:
        """Answered, cancelled, refused, unrouted and busy calls only take
        transitions the diagram has."""
        call, _ = self.connect()
        call.hangup()
        self.alice.call("1001").cancel()
        busy = self.alice.call("1001")
        self.bob.incoming[-1].ring()
        self.bob.incoming[-1].busy()
        self.alice.call("sip:999@example.net")
        self.recorder.reject = Reject(403)
        self.alice.call("1001")
        self.assertEqual(busy.code, 486)
        seen = {(p.value, c.value) for p, c in self.recorder.states}
        self.assertEqual(seen - self.edges(), set())
        self.finish()
