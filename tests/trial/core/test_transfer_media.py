"""A blind transfer with the media anchored in the built-in relay.

The transfer's call anchors its own media: the target is offered a relay
port of the new call, the transferee is re-INVITEd to another one, and
RTP flows between them through the relay; every port goes back when the
call ends.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from b2bua.testing import PhoneCall, SwitchHarness
from media.backend import RelayBackend
from media.plugin import NAME, MediaAnchor
from tests.trial.media.support import FakeUDPReactor
from tests.trial.media.test_plugin import media_of, rtp_both_ways

RELAY = "198.51.100.1"


class AnchoredPhonesCase(SynchronousTestCase):
    """A switch with the media anchored in the relay (on a fake UDP reactor
    that is also its clock), and three phones: alice (1000), bob (1001),
    carol (1002).  Shared by the transfer tests with the relay."""

    def setUp(self) -> None:
        """A switch with the relay, and the three phones."""
        self.reactor = FakeUDPReactor()
        self.backend = RelayBackend(self.reactor, interface=RELAY, port_range=(40000, 40099),
                                    media_timeout=None, on_dead=lambda call_id: None,
                                    clock=self.reactor)
        self.h = SwitchHarness({NAME: MediaAnchor(self.backend)}, clock=self.reactor)
        self.backend.start()
        self.addCleanup(self.backend.stop)
        self.alice = self.h.register("1000")
        self.bob = self.h.register("1001")
        self.carol = self.h.register("1002")

    def assert_rtp_crosses(self, call: PhoneCall, carol_side: PhoneCall,
                           to_alice: tuple[str, int], to_carol: tuple[str, int]) -> None:
        """Alice (in C{call}) and carol (C{carol_side}) each send four RTP
        packets to the relay (C{to_alice}, C{to_carol}: the addresses
        their SDPs were given): each gets the other's four."""
        alice_media, carol_media = media_of(call.local_sdp), media_of(carol_side.local_sdp)
        sent = rtp_both_ways(self.reactor, to_alice, alice_media, to_carol, carol_media, 4,
                             0xCA201)
        self.assertEqual(sum(1 for s in sent if s.destination == carol_media), 4)
        self.assertEqual(sum(1 for s in sent if s.destination == alice_media), 4)


class AnchoredTransferTests(AnchoredPhonesCase):
    """Alice calls bob through the relay; bob transfers alice to carol."""

    def test_media_relayed_after_transfer(self) -> None:
        """Carol is offered the relay, alice is re-INVITEd to a new relay
        port, and RTP crosses between alice and carol."""
        call = self.alice.call("1001")
        bob_side = self.bob.incoming[-1]
        bob_side.answer()
        self.h.flush()
        before = media_of(call.remote_sdp)
        self.assertEqual(bob_side.request("REFER", headers=[
            ("Refer-To", "<sip:1002@127.0.0.1>")]).code, 202)
        carol_side = self.carol.incoming[0]
        carol_side.answer()
        self.h.flush()
        to_carol, to_alice = media_of(carol_side.invite.body), media_of(call.remote_sdp)
        self.assertEqual((to_carol[0], to_alice[0]), (RELAY, RELAY))
        self.assertNotEqual(to_alice, before)
        self.assert_rtp_crosses(call, carol_side, to_alice, to_carol)
        call.hangup()
        self.h.settle()
        self.assertEqual(self.backend.stats().ports_in_use, 0)
        self.h.assert_idle()
