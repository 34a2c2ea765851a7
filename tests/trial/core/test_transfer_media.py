"""A blind transfer with the media anchored in the built-in relay.

The transfer's call anchors its own media: the target is offered a relay
port of the new call, the transferee is re-INVITEd to another one, and
RTP flows between them through the relay; every port goes back when the
call ends.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from b2bua.testing import SwitchHarness
from media.backend import RelayBackend
from media.plugin import NAME, MediaAnchor
from media.rtp import rtp_packet
from tests.trial.media.support import FakeUDPReactor
from tests.trial.media.test_plugin import media_of

RELAY = "198.51.100.1"


class AnchoredTransferTests(SynchronousTestCase):
    """Alice calls bob through the relay; bob transfers alice to carol."""

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
        alice_media, carol_media = media_of(call.local_sdp), media_of(carol_side.local_sdp)
        self.reactor.take()
        for seq in range(4):
            self.reactor.deliver(to_alice[1], rtp_packet(0, seq, seq * 160, 0xA11CE, b"x" * 160),
                                 alice_media)
            self.reactor.deliver(to_carol[1], rtp_packet(0, seq, seq * 160, 0xCA201, b"y" * 160),
                                 carol_media)
        sent = self.reactor.take()
        self.assertEqual(sum(1 for s in sent if s.destination == carol_media), 4)
        self.assertEqual(sum(1 for s in sent if s.destination == alice_media), 4)
        call.hangup()
        self.h.settle()
        self.assertEqual(self.backend.stats().ports_in_use, 0)
        self.h.assert_idle()
