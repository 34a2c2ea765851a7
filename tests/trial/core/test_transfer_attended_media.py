"""An attended transfer with the media anchored in the built-in relay.

The second call goes on and keeps its relay ports: alice is re-INVITEd to
the relay port the second call had facing bob, carol keeps hers and learns
alice's media through her re-INVITE; RTP flows between alice and carol;
the first call's ports go back at the join, every port when the joined
call ends.
"""

from __future__ import annotations

from tests.trial.core.test_transfer_attended import replaces_uri
from tests.trial.core.test_transfer_media import RELAY, AnchoredPhonesCase
from tests.trial.media.test_plugin import media_of


class AnchoredAttendedTransferTests(AnchoredPhonesCase):
    """Alice calls bob, bob calls carol, all through the relay; bob joins
    alice and carol."""

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
        self.assert_rtp_crosses(call, carol_side, to_alice, to_carol)
        call.hangup()
        self.h.settle()
        self.assertEqual(carol_side.state, "terminated")
        self.assertEqual(self.backend.stats().ports_in_use, 0)
        self.h.assert_idle()
