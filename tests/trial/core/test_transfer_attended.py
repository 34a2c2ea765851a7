"""Tests for L{b2bua.core.transfer_attended}: attended transfer by the
switch (REFER with C{Replaces}, RFC 5589 7 / RFC 3891), through the whole
switch on the in-memory harness.

Alice (1000) calls bob (1001) (the first call); bob puts her on hold and
calls carol (1002) (the second call), then REFERs alice to carol naming
his leg of the second call.  The switch joins alice and carol with two
re-INVITEs and lets bob go.
"""

from __future__ import annotations

from typing import Any

from b2bua.core.call import Call
from b2bua.core.transfer import parse_refer_to
from b2bua.core.transfer_attended import NOT_YOURS, parse_replaces
from b2bua.core.transfer_policy import caller_party
from b2bua.sip.message import Request, Response
from b2bua.sip.uri import parse_uri
from b2bua.testing import PhoneCall
from tests.trial.core.test_transfer import TransferTestCase, media_lines


def replaces_uri(side: PhoneCall, swap: bool = False, target: str = "1002") -> str:
    """A Refer-To naming C{side}'s dialog as its phone sees it (the
    switch's tag as to-tag, the phone's as from-tag)."""
    dialog = side.dialog
    assert dialog is not None
    to_tag, from_tag = dialog.remote_tag, dialog.local_tag
    if swap:
        to_tag, from_tag = from_tag, to_tag
    value = f"{dialog.call_id};to-tag={to_tag};from-tag={from_tag}"
    escaped = value.replace("@", "%40").replace(";", "%3B").replace("=", "%3D")
    return f"<sip:{target}@127.0.0.1?Replaces={escaped}>"


class AttendedTestCase(TransferTestCase):
    """Alice talks to bob; bob talks to carol."""

    def two_calls(self) -> tuple[PhoneCall, PhoneCall, PhoneCall, PhoneCall]:
        """(alice's side, bob's side of the first call, bob's side of the
        second, carol's side)."""
        alice_side, bob_first = self.connect()
        bob_first.reinvite("sendonly")  # bob puts alice on hold
        bob_second = self.bob.call("1002")
        carol_side = self.carol.incoming[-1]
        carol_side.answer()
        self.assertEqual(bob_second.state, "confirmed")
        return alice_side, bob_first, bob_second, carol_side

    def calls(self) -> list[Call]:
        """The switch's calls, first call first."""
        return [call for call, _ in self.recorder.received]

    def ended_once(self) -> dict[str, Any]:
        """The CDR records by Call-ID, asserting one per call."""
        ids = [call.id for call, _ in self.recorder.ended]
        self.assertEqual(len(ids), len(set(ids)), "b2bua_call_ended fired twice for a call")
        return {call.id: record for call, record in self.recorder.ended}


class AttendedTransferTests(AttendedTestCase):
    """An attended transfer that works."""

    def test_join(self) -> None:
        """Bob REFERs alice to carol with Replaces: 202, NOTIFY 100 then
        200; alice is re-INVITEd with carol's SDP, carol with alice's
        answer; bob gets BYE on both legs; alice and carol talk until
        alice hangs up; one CDR per call, the second call's goes on."""
        alice_side, bob_first, bob_second, carol_side = self.two_calls()
        first, second = self.calls()
        refer = self.refer(bob_first, replaces_uri(bob_second))
        self.assertEqual((refer.code, refer.final.reason), (202, "Accepted"))
        self.assertEqual(len(self.carol.incoming), 1)  # no new INVITE to carol
        self.assertEqual([n.body for n in self.notifies(bob_first)],
                         [b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 200 OK\r\n"])
        self.assertEqual(self.notifies(bob_first)[-1].headers.get("subscription-state"),
                         "terminated;reason=noresource")
        # alice got carol's media, carol alice's
        alice_invites = [r for r in alice_side.requests if r.method == "INVITE"]
        self.assertEqual(len(alice_invites), 2)  # bob's hold, then the join
        self.assertEqual(media_lines(alice_side.remote_sdp), media_lines(carol_side.local_sdp))
        carol_invites = [r for r in carol_side.requests if r.method == "INVITE"]
        self.assertEqual(len(carol_invites), 1)
        self.assertEqual(media_lines(carol_side.remote_sdp), media_lines(alice_side.local_sdp))
        # bob is gone from both calls
        self.assertEqual((bob_first.state, bob_second.state), ("terminated", "terminated"))
        self.assertEqual((alice_side.state, carol_side.state), ("confirmed", "confirmed"))
        records = self.ended_once()
        self.assertEqual(list(records), [first.id])
        self.assertEqual(records[first.id].disconnect, "transferred")
        self.assertFalse(second.ended)
        self.assertEqual(second.data["joined_from"], first.id)
        # alice and carol are connected: in-dialog requests cross, the BYE too
        self.assertEqual(alice_side.info().code, 200)
        self.assertEqual([r.method for r in carol_side.requests].count("INFO"), 1)
        alice_side.hangup()
        self.assertEqual(carol_side.state, "terminated")
        records = self.ended_once()
        self.assertEqual(set(records), {first.id, second.id})
        # the second call keeps its CDR: bob's call to carol, bob pays
        self.assertEqual(records[second.id].disconnect, "caller")
        self.assertEqual(records[second.id].caller, "sip:1001@127.0.0.1")
        self.assertEqual(records[second.id].callee, "sip:1002@127.0.0.1")
        self.assertEqual(second.identity, "1001@127.0.0.1")
        self.assertEqual(self.h.metric("b2bua_calls_transferred_total", result="connected"),
                         1)
        self.finish()

    def test_carol_hangs_up_the_joined_call(self) -> None:
        """After the join carol's BYE reaches alice."""
        alice_side, bob_first, bob_second, carol_side = self.two_calls()
        self.refer(bob_first, replaces_uri(bob_second))
        carol_side.hangup()
        self.assertEqual(alice_side.state, "terminated")
        self.assertEqual(len(self.ended_once()), 2)
        self.finish()

    def test_tags_either_way(self) -> None:
        """A Replaces naming the dialog with its tags the other way round
        (as the switch sees it) is accepted too."""
        alice_side, bob_first, bob_second, carol_side = self.two_calls()
        refer = self.refer(bob_first, replaces_uri(bob_second, swap=True))
        self.assertEqual(refer.code, 202)
        self.assertEqual(media_lines(alice_side.remote_sdp), media_lines(carol_side.local_sdp))
        alice_side.hangup()
        self.finish()

    def test_referrer_hangs_up_after_202(self) -> None:
        """Bob hangs up both his calls right after the REFER (his BYEs
        arrive while alice's re-INVITE is on its way): they are answered,
        and the join goes on."""
        alice_side, bob_first, bob_second, carol_side = self.two_calls()
        with self.h.network.batch():
            refer = self.refer(bob_first, replaces_uri(bob_second))
            byes = [bob_first.hangup(), bob_second.hangup()]
        self.assertEqual(refer.code, 202)
        self.assertEqual([bye.code for bye in byes], [200, 200])
        # the BYE came before the join was done: no final NOTIFY after it
        self.assertEqual(len(self.notifies(bob_first)), 1)
        self.assertEqual(media_lines(alice_side.remote_sdp), media_lines(carol_side.local_sdp))
        self.assertEqual(media_lines(carol_side.remote_sdp), media_lines(alice_side.local_sdp))
        self.assertEqual((alice_side.state, carol_side.state), ("confirmed", "confirmed"))
        self.assertEqual(len(self.ended_once()), 1)
        alice_side.hangup()
        self.assertEqual(carol_side.state, "terminated")
        self.assertEqual(len(self.ended_once()), 2)
        self.finish()

    def test_referrer_hangs_up_on_the_final_notify(self) -> None:
        """Bob's answer to the NOTIFY 200 is lost and he hangs up both legs
        at once: the first call ends as transferred, his BYE on his old
        leg of the second call gets 481 (that leg is out of the call), and
        alice and carol stay joined."""
        alice_side, bob_first, bob_second, carol_side = self.two_calls()
        first, _ = self.calls()
        bob_address = self.bob.address
        seen: list[int] = []

        def final_notify_ok(delivery: Any) -> bool:
            """Bob's 200 to the second NOTIFY (the final one)."""
            message = delivery.message
            if delivery.sender != bob_address or not isinstance(message, Response) \
                    or message.cseq.method != "NOTIFY":
                return False
            seen.append(message.cseq.number)
            return len(seen) == 2

        self.h.network.drop(final_notify_ok, count=1)
        with self.h.network.batch():
            self.refer(bob_first, replaces_uri(bob_second))
        self.assertEqual(len(self.notifies(bob_first)), 2)
        self.assertEqual(self.ended_once(), {})
        self.assertEqual(bob_first.hangup().code, 200)
        self.assertEqual(bob_second.hangup().code, 481)
        records = self.ended_once()
        self.assertEqual(list(records), [first.id])
        self.assertEqual(records[first.id].disconnect, "transferred")
        self.assertEqual((alice_side.state, carol_side.state), ("confirmed", "confirmed"))
        self.assertEqual(alice_side.info().code, 200)
        self.h.network.advance(5)
        # the NOTIFY got its answer at last: the switch lets bob's old leg
        # of the second call go (bob answers 481: he ended it already)
        assert bob_second.dialog is not None
        self.assertEqual([r.call_id for r in self.requests_to(self.bob, "BYE")],
                         [bob_second.dialog.call_id])
        carol_side.hangup()
        self.assertEqual(alice_side.state, "terminated")
        self.assertEqual(len(self.ended_once()), 2)
        self.finish()

    def test_transferee_hangs_up_during_the_join(self) -> None:
        """Alice hangs up while her re-INVITE is on its way: the first call
        ends as usual, the join fails, bob stays with carol."""
        alice_side, bob_first, bob_second, carol_side = self.two_calls()
        with self.h.network.batch():
            refer = self.refer(bob_first, replaces_uri(bob_second))
            alice_side.hangup()
        self.assertEqual(refer.code, 202)
        self.assertEqual(bob_first.state, "terminated")
        self.assertEqual((bob_second.state, carol_side.state), ("confirmed", "confirmed"))
        self.assertEqual(bob_second.info().code, 200)
        self.assertEqual(self.h.metric("b2bua_calls_transferred_total", result="failed"), 1)
        carol_side.hangup()
        self.assertEqual(len(self.ended_once()), 2)
        self.finish()

    def test_joined_party_transfers_as_itself(self) -> None:
        """After the join alice is the second call's caller side: she
        transfers in turn as the party she was in the first call (herself),
        never as bob, who paid the second call."""
        alice_side, bob_first, bob_second, _ = self.two_calls()
        _, second = self.calls()
        self.refer(bob_first, replaces_uri(bob_second))
        party = caller_party(second)
        assert party is not None
        self.assertEqual(party.identity, "1000@127.0.0.1")
        alice_side.hangup()
        self.finish()


class AttendedRefusedTests(AttendedTestCase):
    """Attended transfers the switch refuses: nothing changes."""

    def assertNothingChanged(self, alice_side: PhoneCall, bob_first: PhoneCall,
                             bob_second: PhoneCall, carol_side: PhoneCall) -> None:
        """Both calls are up as before; end them cleanly."""
        self.assertEqual([s.state for s in (alice_side, bob_first, bob_second, carol_side)],
                         ["confirmed"] * 4)
        self.assertEqual(len(self.carol.incoming), 1)
        self.assertEqual(self.recorder.ended, [])
        self.assertEqual(bob_first.info().code, 200)  # still talking to alice
        self.assertEqual(bob_second.info().code, 200)  # and to carol
        alice_side.hangup()
        carol_side.hangup()
        self.assertEqual((bob_first.state, bob_second.state), ("terminated", "terminated"))
        self.assertEqual(len(self.ended_once()), 2)
        self.finish()

    def test_unknown_dialog(self) -> None:
        """A Replaces naming no dialog: 403, as for somebody else's (no
        probing of dialog ids)."""
        sides = self.two_calls()
        refer = self.refer(
            sides[1], "<sip:1002@127.0.0.1?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>")
        self.assertEqual((refer.code, refer.final.reason), (403, NOT_YOURS))
        self.assertEqual(self.notifies(sides[1]), [])
        self.assertNothingChanged(*sides)

    def test_dialog_of_another_party(self) -> None:
        """Bob names carol's leg of the second call (not his): 403."""
        sides = self.two_calls()
        refer = self.refer(sides[1], replaces_uri(sides[3]))
        self.assertEqual((refer.code, refer.final.reason), (403, NOT_YOURS))
        self.assertNothingChanged(*sides)

    def test_call_of_another_subscriber(self) -> None:
        """Alice names a call between bob and carol (bob's leg): alice is
        not bob: 403, the calls stay."""
        sides = self.two_calls()
        refer = self.refer(sides[0], replaces_uri(sides[2]))
        self.assertEqual((refer.code, refer.final.reason), (403, NOT_YOURS))
        self.assertNothingChanged(*sides)

    def test_same_call(self) -> None:
        """A Replaces naming a leg of the call the REFER came in: 403."""
        sides = self.two_calls()
        refer = self.refer(sides[1], replaces_uri(sides[1]))
        self.assertEqual(refer.code, 403)
        self.assertNothingChanged(*sides)

    def test_cross_tenant(self) -> None:
        """The two calls are of different tenants: 403."""
        sides = self.two_calls()
        first, second = self.calls()
        second.tenant = "other.example"
        refer = self.refer(sides[1], replaces_uri(sides[2]))
        self.assertEqual(refer.code, 403)
        second.tenant = first.tenant
        self.assertNothingChanged(*sides)

    def test_bad_replaces(self) -> None:
        """A Replaces without tags: 400."""
        sides = self.two_calls()
        refer = self.refer(sides[1], "<sip:1002@127.0.0.1?Replaces=abc%40h>")
        self.assertEqual((refer.code, refer.final.reason), (400, "Bad Replaces"))
        self.assertNothingChanged(*sides)

    def test_second_call_not_answered(self) -> None:
        """Carol still rings (semi-attended): 501, bob may CANCEL and send
        a blind REFER instead."""
        alice_side, bob_first = self.connect()
        bob_second = self.bob.call("1002")
        carol_side = self.carol.incoming[-1]
        carol_side.ring()
        self.assertIsNotNone(bob_second.dialog)
        refer = self.refer(bob_first, replaces_uri(bob_second))
        self.assertEqual(refer.code, 501)
        carol_side.answer()
        self.assertNothingChanged(alice_side, bob_first, bob_second, carol_side)

    def test_transferee_refuses_reinvite(self) -> None:
        """Alice refuses the re-INVITE with carol's media: NOTIFY with her
        status, both calls stay as they were."""
        sides = self.two_calls()
        self.alice.answers["INVITE"] = 488
        refer = self.refer(sides[1], replaces_uri(sides[2]))
        self.assertEqual(refer.code, 202)
        self.assertEqual([n.body for n in self.notifies(sides[1])],
                         [b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 488 Not Acceptable Here\r\n"])
        del self.alice.answers["INVITE"]
        self.assertNothingChanged(*sides)

    def test_target_refuses_reinvite(self) -> None:
        """Carol refuses the re-INVITE with alice's media (after the join):
        bob gets NOTIFY with her status, the joined call ends
        (transfer-failed) and bob's legs are let go."""
        alice_side, bob_first, bob_second, carol_side = self.two_calls()
        first, second = self.calls()
        self.carol.answers["INVITE"] = 488
        refer = self.refer(bob_first, replaces_uri(bob_second))
        self.assertEqual(refer.code, 202)
        self.assertEqual(self.notifies(bob_first)[-1].body,
                         b"SIP/2.0 488 Not Acceptable Here\r\n")
        self.assertEqual([s.state for s in (alice_side, bob_first, bob_second, carol_side)],
                         ["terminated"] * 4)
        records = self.ended_once()
        self.assertEqual(records[second.id].disconnect, "transfer-failed")
        self.assertEqual(records[first.id].disconnect, "transferred")
        self.finish()

    def test_invite_with_replaces(self) -> None:
        """An INVITE with Replaces (RFC 3891 directly: call pickup, a
        phone's own attended transfer) gets 501; the call it names stays."""
        sides = self.two_calls()
        dialog = sides[2].dialog
        assert dialog is not None
        replaces = f"{dialog.call_id};to-tag={dialog.remote_tag};from-tag={dialog.local_tag}"
        before = self.h.metric("b2bua_sip_rejected_requests_total", reason="other")
        pickup = self.alice.call("1002", headers=(("Replaces", replaces),))
        self.assertEqual((pickup.code, pickup.responses[-1].reason),
                         (501, "INVITE with Replaces not supported"))
        self.assertEqual(self.h.metric("b2bua_sip_rejected_requests_total", reason="other"),
                         before + 1)
        self.assertEqual(len(self.calls()), 2)
        self.assertNothingChanged(*sides)

    def test_parse_replaces(self) -> None:
        """The Replaces URI header field, unescaped; none without it."""
        uri = parse_uri("sip:c@h?Replaces=a%40b%3Bto-tag%3Dt%3Bfrom-tag%3Df%3Bearly-only")
        replaces = parse_replaces(uri)
        assert replaces is not None
        self.assertEqual((replaces.call_id, replaces.to_tag, replaces.from_tag,
                          replaces.early_only), ("a@b", "t", "f", True))
        self.assertIsNone(parse_replaces(parse_uri("sip:c@h")))
        request = Request("REFER", "sip:x@h", [("Refer-To", f"<{uri}>")])
        self.assertEqual(str(parse_refer_to(request, attended=True)), "sip:c@h")
