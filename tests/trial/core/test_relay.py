"""Tests for L{b2bua.core.relay}: in-dialog requests of an established call
relayed between its legs (re-INVITE, UPDATE, INFO, glare), the SDP and
request hooks on the way, and ACKs carrying an answer across (late offer),
on the in-memory harness of L{b2bua.testing}."""

from __future__ import annotations

from typing import Any

from b2bua.core.call import Call
from b2bua.hookspecs import hookimpl
from b2bua.sip.dialog import DialogState
from b2bua.sip.message import Request, Response, make_response
from b2bua.testing import sdp_direction
from tests.trial.core.test_call import CallTestCase


class HoldTests(CallTestCase):
    """Hold and resume by re-INVITE, from either side."""

    def test_hold_and_resume_from_caller(self) -> None:
        """The caller's sendonly offer reaches the callee, whose recvonly
        answer comes back; then sendrecv resumes.  Each re-INVITE's 200 is
        ACKed on both legs."""
        call, incoming = self.connect()
        hold = call.reinvite("sendonly")
        self.assertEqual(hold.code, 200)
        self.assertEqual(sdp_direction(incoming.remote_sdp), "sendonly")
        self.assertEqual(sdp_direction(call.remote_sdp), "recvonly")
        self.assertEqual(len(self.b_side("ACK")), 2)
        self.assertEqual(incoming.requests[-1].method, "ACK")
        resume = call.reinvite("sendrecv")
        self.assertEqual(resume.code, 200)
        self.assertEqual(sdp_direction(incoming.remote_sdp), "sendrecv")
        self.assertEqual(sdp_direction(call.remote_sdp), "sendrecv")
        self.assertEqual(len(self.b_side("ACK")), 3)
        self.h.advance(40)
        self.assertEqual(len(self.h.network.responses(200, "INVITE", self.bob.address)), 3)
        call.hangup()
        self.finish()

    def test_hold_and_resume_from_callee(self) -> None:
        """The callee puts the caller on hold and back; the caller's answers
        travel back to the callee."""
        call, incoming = self.connect()
        incoming.reinvite("sendonly")
        self.assertEqual(sdp_direction(call.remote_sdp), "sendonly")
        self.assertEqual(sdp_direction(incoming.remote_sdp), "recvonly")
        self.assertEqual(len(self.a_side("ACK")), 1)
        self.assertEqual(call.requests[-1].method, "ACK")
        resume = incoming.reinvite("sendrecv")
        self.assertEqual(resume.code, 200)
        self.assertEqual(sdp_direction(incoming.remote_sdp), "sendrecv")
        incoming.hangup()
        self.finish()

    def test_reinvite_without_sdp(self) -> None:
        """A re-INVITE without SDP: the callee's offer comes in its 200, the
        switch holds its ACK until the caller's ACK brings the answer, which
        it carries to the callee (RFC 3261 14.1)."""
        call, incoming = self.connect()
        reinvite = call.reinvite(None)
        self.assertEqual(reinvite.code, 200)
        self.assertEqual(self.b_side("INVITE")[-1].body, b"")
        self.assertEqual(sdp_direction(call.remote_sdp), "sendrecv")
        ack = incoming.requests[-1]
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(ack.content_type, "application/sdp")
        self.assertEqual(incoming.remote_sdp, ack.body)
        self.assertIn(b"c=IN IP4 127.0.0.2", ack.body)
        call.hangup()
        self.finish()

    def test_glare(self) -> None:
        """Both sides re-INVITE at once: each gets 491 (RFC 3261 14.2), and a
        later re-INVITE goes through."""
        call, incoming = self.connect()
        with self.h.network.batch():
            mine = call.reinvite("sendonly")
            theirs = incoming.reinvite("sendonly")
        self.assertEqual(mine.code, 491)
        self.assertEqual(theirs.code, 491)
        self.h.advance(2)
        again = call.reinvite("sendonly")
        self.assertEqual(again.code, 200)
        self.assertEqual(sdp_direction(incoming.remote_sdp), "sendonly")
        call.hangup()
        self.finish()

    def test_update(self) -> None:
        """An UPDATE's offer reaches the other side and its answer comes
        back in the 200 (RFC 3311); nothing is ACKed."""
        call, incoming = self.connect()
        update = call.update("sendonly")
        self.assertEqual(update.code, 200)
        self.assertEqual(incoming.requests[-1].method, "UPDATE")
        self.assertEqual(sdp_direction(incoming.remote_sdp), "sendonly")
        self.assertEqual(sdp_direction(call.remote_sdp), "recvonly")
        self.assertEqual(len(self.b_side("ACK")), 1)
        call.hangup()
        self.finish()

    def test_reinvite_refused(self) -> None:
        """A callee's 488 to a re-INVITE goes back to the caller; the call
        stays up."""
        call, _ = self.connect()
        self.bob.answers["INVITE"] = 488
        reinvite = call.reinvite("sendonly")
        self.assertEqual(reinvite.code, 488)
        self.assertEqual(call.state, "confirmed")
        bye = call.hangup()
        self.assertEqual(bye.code, 200)
        self.finish()


class Claimer:
    """A plugin answering every in-dialog MESSAGE itself."""

    @hookimpl
    def b2bua_handle_in_dialog_request(self, call: Call, leg: Any,
                                       request: Request) -> Response | None:
        """Claim MESSAGE; leave the rest to the core."""
        if request.method != "MESSAGE":
            return None
        return make_response(request, 202, "Accepted by plugin")


class RaisingClaimer:
    """A plugin whose C{b2bua_handle_in_dialog_request} raises."""

    @hookimpl
    def b2bua_handle_in_dialog_request(self, call: Call, leg: Any,
                                       request: Request) -> Response | None:
        """Raise."""
        raise RuntimeError("claim is broken")


class InfoTests(CallTestCase):
    """INFO and other requests relayed, or claimed by a plugin."""

    def test_info_relayed(self) -> None:
        """The INFO reaches the other side with its body, Content-Type and
        Info-Package; the response's code comes back."""
        call, incoming = self.connect()
        info = call.request("INFO", b"Signal=5\r\n", "application/dtmf-relay",
                            [("Info-Package", "dtmf"), ("X-Secret", "not relayed")])
        self.assertEqual(info.code, 200)
        [relayed] = self.b_side("INFO")
        self.assertEqual(relayed.body, b"Signal=5\r\n")
        self.assertEqual(relayed.headers.get("Content-Type"), "application/dtmf-relay")
        self.assertEqual(relayed.headers.get("Info-Package"), "dtmf")
        self.assertIsNone(relayed.headers.get("X-Secret"))
        self.bob.answers["INFO"] = 469
        self.assertEqual(call.info().code, 469)
        self.assertEqual(incoming.info().code, 200)
        self.assertEqual(len(self.a_side("INFO")), 1)
        call.hangup()
        self.finish()

    def test_claimed_by_plugin(self) -> None:
        """A request a plugin claims is answered by the plugin and not
        relayed."""
        self.h.pm.register(Claimer(), name="claimer")
        call, _ = self.connect()
        message = call.request("MESSAGE", b"hi", "text/plain")
        self.assertEqual(message.code, 202)
        self.assertEqual(message.final.reason, "Accepted by plugin")
        self.assertEqual(self.b_side("MESSAGE"), [])
        call.hangup()
        self.finish()

    def test_claim_that_raises(self) -> None:
        """A plugin raising in C{b2bua_handle_in_dialog_request} gets the
        request answered with 500 (counted); the call stays up."""
        self.h.pm.register(RaisingClaimer(), name="raising")
        call, _ = self.connect()
        self.assertEqual(call.info().code, 500)
        self.assertEqual(self.b_side("INFO"), [])
        self.assertEqual(self.h.metric("b2bua_plugin_errors_total",
                                       hook="b2bua_handle_in_dialog_request"), 1)
        self.assertEqual(call.hangup().code, 200)
        self.flushLoggedErrors(RuntimeError)
        self.finish()

    def test_request_after_the_end(self) -> None:
        """A request in a dialog the switch has forgotten gets 481."""
        call, _ = self.connect()
        call.hangup()
        assert call.dialog is not None
        call.dialog.state = DialogState.CONFIRMED  # as if the phone missed the BYE
        late = call.info()
        self.assertEqual(late.code, 481)
        self.finish()

    def test_prack_toward_caller(self) -> None:
        """A PRACK from the caller gets 481: the switch never sends reliable
        provisional responses."""
        call, _ = self.connect()
        prack = call.request("PRACK", headers=[("RAck", "1 1 INVITE")])
        self.assertEqual(prack.code, 481)
        call.hangup()
        self.finish()


class Rewriter:
    """A plugin rewriting every SDP's connection address (by direction)
    and tagging every B-leg INVITE."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    @hookimpl
    def b2bua_rewrite_sdp(self, call: Call, leg: Any, sdp: Any, direction: str) -> None:
        """Point the media at a relay address."""
        self.seen.append((leg.role, direction))
        address = "192.0.2.1" if direction == "offer" else "192.0.2.2"
        sdp.connection = sdp.connection._replace(address=address)

    @hookimpl
    def b2bua_prepare_outgoing_request(self, call: Call, leg: Any, request: Request) -> None:
        """Tag B-leg INVITEs."""
        request.headers.add("X-Prepared", request.method)


class TransformationTests(CallTestCase):
    """C{b2bua_rewrite_sdp} and C{b2bua_prepare_outgoing_request} on the
    initial INVITE and on re-INVITEs."""

    def test_sdp_rewritten_both_ways(self) -> None:
        """Offers and answers crossing the switch go through the SDP hook,
        on the call's setup and on a re-INVITE from either side."""
        rewriter = Rewriter()
        self.h.pm.register(rewriter, name="rewriter")
        call, incoming = self.connect()
        self.assertIn(b"c=IN IP4 192.0.2.1", incoming.invite.body)
        self.assertIn(b"c=IN IP4 192.0.2.2", call.remote_sdp)
        self.assertEqual(rewriter.seen, [("callee", "offer"), ("caller", "answer")])
        incoming.reinvite("sendonly")
        self.assertIn(b"c=IN IP4 192.0.2.1", call.remote_sdp)
        self.assertIn(b"c=IN IP4 192.0.2.2", incoming.remote_sdp)
        self.assertEqual(sdp_direction(call.remote_sdp), "sendonly")
        call.hangup()
        self.finish()

    def test_prepare_outgoing_request(self) -> None:
        """A plugin may change the B leg's INVITE and re-INVITEs before they
        are sent, not the requests toward the caller."""
        self.h.pm.register(Rewriter(), name="rewriter")
        call, incoming = self.connect()
        self.assertEqual(incoming.invite.headers.get("X-Prepared"), "INVITE")
        call.reinvite("sendonly")
        self.assertEqual(self.b_side("INVITE")[-1].headers.get("X-Prepared"), "INVITE")
        incoming.reinvite("sendrecv")
        self.assertIsNone(self.a_side("INVITE")[-1].headers.get("X-Prepared"))
        call.hangup()
        self.finish()


class LossInDialogTests(CallTestCase):
    """Lost messages around re-INVITEs."""

    def test_lost_ack_of_reinvite(self) -> None:
        """When the switch's ACK of a re-INVITE's 200 is lost, the callee's
        retransmitted 200 is ACKed again, and the caller gets one 200."""
        call, incoming = self.connect()
        self.h.network.drop(lambda d: d.receiver == self.bob.address
                            and getattr(d.message, "method", "") == "ACK")
        hold = call.reinvite("sendonly")
        self.assertEqual(hold.code, 200)
        self.h.advance(0.5)
        self.assertEqual(incoming.requests[-1].method, "ACK")
        self.h.advance(5)
        to_alice = self.h.network.responses(200, "INVITE", self.h.address, self.alice.address)
        self.assertEqual(len(to_alice), 2)
        self.assertEqual(self.b_side("BYE"), [])
        call.hangup()
        self.finish()


class LateOfferTests(CallTestCase):
    """An INVITE without SDP: the offer comes in the callee's 200."""

    def test_offer_in_answer(self) -> None:
        """The callee's offer reaches the caller in the 200; the switch
        holds the callee's ACK until the caller's ACK brings the answer."""
        call = self.alice.call("1001", sdp=False)
        incoming = self.bob.incoming[0]
        self.assertEqual(incoming.invite.body, b"")
        incoming.answer()
        self.assertEqual(call.code, 200)
        self.assertIn(b"c=IN IP4 127.0.0.3", call.remote_sdp)
        [ack] = self.b_side("ACK")
        self.assertIn(b"c=IN IP4 127.0.0.2", ack.body)
        self.assertEqual(incoming.remote_sdp, ack.body)
        self.h.advance(5)
        self.assertEqual(len(self.b_side("ACK")), 1)
        call.hangup()
        self.finish()

    def test_late_offer_with_retransmitted_200(self) -> None:
        """While the caller's ACK is late the callee retransmits its 200; the
        call survives and the callee finally gets the answer."""
        self.h.network.drop(lambda d: d.sender == self.alice.address
                            and getattr(d.message, "method", "") == "ACK"
                            and bool(d.message.body))
        call = self.alice.call("1001", sdp=False)
        incoming = self.bob.incoming[0]
        incoming.answer()
        self.h.advance(0.5)
        self.assertEqual(self.b_side("BYE"), [])
        self.h.advance(0.5)
        [ack] = self.b_side("ACK")
        self.assertIn(b"c=IN IP4 127.0.0.2", ack.body)
        self.assertEqual(incoming.state, "confirmed")
        call.hangup()
        self.finish()
