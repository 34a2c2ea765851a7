"""Tests for L{b2bua.core.transfer_attended}: which call goes on after an
attended transfer, and who pays for it.

The second call goes on (its payer keeps paying for the other party),
unless the transferee is an outside callee of the first call (a vendor
trunk: the first call's payer is charged for that leg), then the first
call goes on with the second call's party moved in; two outside callees
are never joined.  See C{docs/transfer.md}, "Attended transfer".
"""

from __future__ import annotations

from b2bua.core.transfer_attended import JoinedLeg
from b2bua.core.transfer_policy import Party, callee_party, caller_party
from tests.trial.core.test_transfer import media_lines
from tests.trial.core.test_transfer_attended import replaces_uri
from tests.trial.core.test_transfer_payer import VENDOR_NUMBER, PayerTestCase

ALICE = Party("1000@127.0.0.1", "127.0.0.1")
BOB = Party("1001@127.0.0.1", "127.0.0.1")


class WhichCallGoesOnTests(PayerTestCase):
    """The call that goes on keeps its identity, tenant and CDR."""

    def calls(self) -> list:
        """The switch's calls, in the order they were received."""
        return [call for call, _ in self.recorder.received]

    def test_outside_transferee_keeps_the_first_call(self) -> None:
        """Bob calls the vendor, then carol, and joins them: the vendor's
        leg stays in the first call (bob keeps paying for it, as dialled);
        carol moves in; the second call ends as transferred."""
        vendor_side = self.bob.call(VENDOR_NUMBER)
        self.answered(self.vendor)
        bob_second = self.bob.call("1002")
        carol_side = self.answered(self.carol)
        first, second = self.calls()
        refer = self.refer(vendor_side, replaces_uri(bob_second))
        self.assertEqual(refer.code, 202)
        self.assertEqual([n.body for n in self.notifies(vendor_side)][-1],
                         b"SIP/2.0 200 OK\r\n")
        vendor_in = self.vendor.incoming[-1]
        self.assertEqual(media_lines(carol_side.remote_sdp), media_lines(vendor_in.local_sdp))
        self.assertEqual(media_lines(vendor_in.remote_sdp), media_lines(carol_side.local_sdp))
        self.assertEqual((vendor_side.state, bob_second.state), ("terminated", "terminated"))
        self.assertTrue(second.ended)
        self.assertFalse(first.ended)
        self.assertIsInstance(first.a_leg, JoinedLeg)
        # carol, now the first call's caller side, transfers as herself
        self.assertEqual(caller_party(first), Party("1002@127.0.0.1", "127.0.0.1"))
        vendor_in.hangup()
        self.assertEqual(carol_side.state, "terminated")
        records = {call.id: record for call, record in self.recorder.ended}
        self.assertEqual(records[second.id].disconnect, "transferred")
        self.assertEqual(records[first.id].disconnect, "callee")
        self.assertEqual(records[first.id].callee, f"sip:{VENDOR_NUMBER}@127.0.0.1")
        self.assertEqual(first.identity, "1001@127.0.0.1")
        self.finish()

    def test_two_outside_callees_refused(self) -> None:
        """Bob calls the vendor twice: joining the two would leave one
        vendor leg unpaid: 403, both calls stay."""
        vendor_side = self.bob.call(VENDOR_NUMBER)
        self.answered(self.vendor)
        bob_second = self.bob.call(VENDOR_NUMBER)
        self.answered(self.vendor)
        refer = self.refer(vendor_side, replaces_uri(bob_second))
        self.assertEqual((refer.code, refer.final.reason),
                         (403, "Transfer would join two outside calls"))
        self.assertEqual((vendor_side.state, bob_second.state), ("confirmed", "confirmed"))
        vendor_side.hangup()
        bob_second.hangup()
        self.assertEqual(len(self.recorder.ended), 2)
        self.finish()

    def test_second_call_from_the_other_party(self) -> None:
        """Carol called bob (bob is the second call's callee): alice takes
        bob's place as its answered leg; carol's call goes on, alice
        transfers as herself."""
        alice_side, bob_first = self.connect()
        self.carol.call("1001")
        bob_second = self.answered(self.bob)
        carol_side = self.carol.calls[-1]
        first, second = self.calls()
        refer = self.refer(bob_first, replaces_uri(bob_second))
        self.assertEqual(refer.code, 202)
        self.assertEqual(media_lines(alice_side.remote_sdp), media_lines(carol_side.local_sdp))
        self.assertEqual(media_lines(carol_side.remote_sdp), media_lines(alice_side.local_sdp))
        self.assertTrue(first.ended)
        self.assertIsInstance(second.answered_leg, JoinedLeg)
        self.assertEqual(callee_party(second.answered_leg), ALICE)
        self.assertEqual(alice_side.info().code, 200)
        carol_side.hangup()
        self.assertEqual(alice_side.state, "terminated")
        records = {call.id: record for call, record in self.recorder.ended}
        self.assertEqual(records[first.id].disconnect, "transferred")
        self.assertEqual(records[second.id].caller, "sip:1002@127.0.0.1")
        self.finish()

    def test_caller_transfers_its_callee(self) -> None:
        """Bob called alice (an extension), then carol: alice moves into
        the second call as its caller side, calling on as herself."""
        alice_in = self.bob.call("1000")
        alice_side = self.answered(self.alice)
        bob_second = self.bob.call("1002")
        carol_side = self.answered(self.carol)
        first, second = self.calls()
        self.assertEqual(self.refer(alice_in, replaces_uri(bob_second)).code, 202)
        self.assertTrue(first.ended)
        self.assertEqual(caller_party(second), ALICE)
        self.assertEqual(second.identity, BOB.identity)  # bob still pays carol's side
        alice_side.hangup()
        self.assertEqual(carol_side.state, "terminated")
        self.finish()

    def test_referrer_gone_and_transferee_refuses(self) -> None:
        """Bob hangs up both calls after the 202 and alice refuses the
        re-INVITE: nobody to go back to, both calls end (transfer-failed)."""
        alice_side, bob_first = self.connect()
        bob_second = self.bob.call("1002")
        carol_side = self.answered(self.carol)
        self.alice.answers["INVITE"] = 488
        with self.h.network.batch():
            refer = self.refer(bob_first, replaces_uri(bob_second))
            bob_first.hangup()
            bob_second.hangup()
        self.assertEqual(refer.code, 202)
        self.assertEqual((alice_side.state, carol_side.state), ("terminated", "terminated"))
        self.assertEqual({record.disconnect for _, record in self.recorder.ended},
                         {"transfer-failed"})
        self.assertEqual(len(self.recorder.ended), 2)
        self.finish()
