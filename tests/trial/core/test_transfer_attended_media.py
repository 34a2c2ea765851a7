"""An attended transfer with the media anchored in the built-in relay.

The second call goes on and keeps its relay ports: alice is re-INVITEd to
the relay port the second call had facing bob, carol keeps hers and learns
alice's media through her re-INVITE; RTP flows between alice and carol;
the first call's ports go back at the join, every port when the joined
call ends.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from b2bua.testing import SwitchHarness
from media.backend import RelayBackend
from media.plugin import NAME, MediaAnchor
from media.rtp import rtp_packet
from tests.trial.core.test_transfer_attended import replaces_uri
from tests.trial.media.support import FakeUDPReactor
from tests.trial.media.test_plugin import media_of

RELAY = "198.51.100.1"


class AnchoredAttendedTransferTests(SynchronousTestCase):
    """Alice calls bob, bob calls carol, all through the relay; bob joins
    alice and carol."""

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

    def test_media_relayed_after_join(self) -> None:
        """Alice is re-INVITEd to the second call's relay port, and RTP
        crosses between alice and carol."""
        call = self.alice.call("1001")
        bob_first = self.bob.incoming[-1]
        bob_first.answer()
        bob_second = self.bob.call("1002")
        carol_side = self.carol.incoming[-1]
        carol_side.answer()
        self.h.flush()
        ports_before = self.backend.stats().ports_in_use
        refer = bob_first.request("REFER", headers=[("Refer-To", replaces_uri(bob_second))])
        self.assertEqual(refer.code, 202)
        self.h.flush()
        self.assertEqual(bob_second.state, "terminated")
        to_alice, to_carol = media_of(call.remote_sdp), media_of(carol_side.remote_sdp)
        self.assertEqual((to_alice[0], to_carol[0]), (RELAY, RELAY))
        self.assertLess(self.backend.stats().ports_in_use, ports_before)  # the first call's
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
        self.assertEqual(carol_side.state, "terminated")
        self.assertEqual(self.backend.stats().ports_in_use, 0)
        self.h.assert_idle()
