"""Tests for L{b2bua.core.leg.ClientLeg.after_call}: once a call is over, the
answered INVITE's lingering transaction (Timer M) no longer keeps the call
alive, and still answers retransmitted 2xx as the leg did."""

from __future__ import annotations

import gc

from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.call import Call
from b2bua.core.leg import ClientLeg
from b2bua.sip.message import Response
from b2bua.sip.transaction_client import InviteClientTransaction
from b2bua.testing import PhoneCall, SwitchHarness
from tests.trial.core.test_call import Recorder


class AfterCallTests(SynchronousTestCase):
    """Alice calls bob, who answers; the call ends; bob's 200 comes again."""

    def setUp(self) -> None:
        self.recorder = Recorder()
        self.h = SwitchHarness({"recorder": self.recorder})
        self.alice = self.h.register("1000")
        self.bob = self.h.register("1001")

    def ended_call(self) -> tuple[Call, PhoneCall, InviteClientTransaction]:
        """A call answered by bob and hung up by alice; the switch's INVITE
        transaction toward bob, still lingering."""
        call = self.alice.call("1001")
        incoming = self.bob.incoming[-1]
        incoming.answer()
        self.h.flush()
        call.hangup()
        self.h.flush()
        [(ended, _)] = self.recorder.ended
        [tx] = [t for t in self.h.transactions.client_transactions()
                if isinstance(t, InviteClientTransaction)]
        self.assertEqual(tx.state, "Accepted")
        return ended, incoming, tx

    def acks_to_bob(self) -> list[object]:
        return self.h.network.requests("ACK", self.h.address, self.bob.address)

    def test_transaction_lets_go_of_the_call(self) -> None:
        """The lingering transaction's owner holds neither the leg nor the
        call (nor does the dialog it keeps)."""
        call, _, tx = self.ended_call()
        leg = call.b_legs[0]
        self.assertIsInstance(leg, ClientLeg)
        self.assertIsNot(tx.owner, leg)
        held = gc.get_referents(tx.owner)
        self.assertNotIn(leg, held)
        self.assertNotIn(call, held)
        self.assertIsNone(leg.dialog.user)

    def test_retransmitted_answer_acked_again(self) -> None:
        """Bob's 200 again (our ACK lost) after the call ended: the same ACK
        goes again, nothing else."""
        _, incoming, _ = self.ended_call()
        [ack] = self.acks_to_bob()
        byes = len(self.h.network.requests("BYE", self.h.address, self.bob.address))
        incoming.transaction.respond(incoming.final_sent)
        self.h.flush()
        acks = self.acks_to_bob()
        self.assertEqual(len(acks), 2)
        self.assertEqual(acks[1].to_bytes(), ack.to_bytes())
        self.assertEqual(len(self.h.network.requests("BYE", self.h.address, self.bob.address)),
                         byes)

    def test_other_fork_acked_and_hung_up(self) -> None:
        """A 2xx with another To tag after the call ended is ACKed and hung
        up, as during the call."""
        _, incoming, _ = self.ended_call()
        other = Response(200, headers=[(n, v) for n, v in incoming.final_sent.headers
                                       if n.lower() != "to"] + [
            ("To", str(incoming.invite.to) + ";tag=otherfork")],
            body=incoming.final_sent.body)
        incoming.transaction.respond(other)
        self.h.flush()
        byes = self.h.network.requests("BYE", self.h.address, self.bob.address)
        self.assertEqual(byes[-1].to.tag, "otherfork")
        self.assertEqual(self.acks_to_bob()[-1].to.tag, "otherfork")
