"""Tests for L{media.latching}: symmetric latching and its hijack rules."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from media.latching import Latch, LatchPolicy

SDP = ("192.0.2.10", 4000)
NAT = ("198.51.100.1", 61000)
MOVED = ("198.51.100.1", 61234)
ATTACKER = ("203.0.113.66", 5004)


class LearningTests(SynchronousTestCase):
    """Before the first packet, and the first packet."""

    def test_sends_to_sdp_until_latched(self) -> None:
        """Without a packet, the destination is the SDP address."""
        latch = Latch(LatchPolicy(), SDP)
        self.assertEqual((latch.address, latch.destination), (None, SDP))
        self.assertIsNone(Latch(LatchPolicy()).destination)

    def test_first_packet_latches(self) -> None:
        """Any source latches first; replies go where media came from."""
        latch = Latch(LatchPolicy(), SDP)
        self.assertTrue(latch.admit(NAT, 7, None, 10.0))
        self.assertEqual((latch.address, latch.destination, latch.last_seen), (NAT, NAT, 10.0))
        self.assertEqual(latch.latches, 1)

    def test_new_sdp_address_relearns(self) -> None:
        """A re-INVITE with another address re-opens learning; the same
        address again changes nothing."""
        latch = Latch(LatchPolicy(), SDP)
        latch.admit(NAT, 7, None, 10.0)
        self.assertFalse(latch.expect(SDP))
        self.assertEqual(latch.address, NAT)
        other = ("192.0.2.20", 5000)
        self.assertTrue(latch.expect(other))
        self.assertEqual((latch.address, latch.destination), (None, other))
        self.assertTrue(latch.admit(MOVED, 8, 7, 10.5))
        self.assertEqual(latch.address, MOVED)

    def test_hold_address(self) -> None:
        """A null address (None) stops sending until media comes again."""
        latch = Latch(LatchPolicy(), SDP)
        latch.admit(SDP, 7, None, 10.0)
        latch.expect(None)
        self.assertIsNone(latch.destination)


class HijackTests(SynchronousTestCase):
    """Sources other than the latched one."""

    def latched(self, **policy: object) -> Latch:
        """A latch on C{NAT} (SSRC 7) at t=10."""
        latch = Latch(LatchPolicy(**policy), SDP)  # type: ignore[arg-type]
        latch.admit(NAT, 7, None, 10.0)
        return latch

    def test_stranger_dropped_while_latched_source_talks(self) -> None:
        """Even with the right SSRC, nobody takes over a live stream."""
        latch = self.latched()
        for n in range(10):
            latch.last_seen = 10.0 + n * 0.02
            self.assertFalse(latch.admit(ATTACKER, 7, 7, 10.01 + n * 0.02))
        self.assertEqual((latch.address, latch.dropped, latch.takeovers), (NAT, 10, 0))

    def test_takeover_after_silence_with_same_ssrc(self) -> None:
        """A phone whose NAT binding changed: the old source is silent for
        more than 2 s, the new one sends 3 packets with the same SSRC."""
        latch = self.latched()
        self.assertFalse(latch.admit(MOVED, 7, 7, 12.5))
        self.assertFalse(latch.admit(MOVED, 7, 7, 12.52))
        self.assertTrue(latch.admit(MOVED, 7, 7, 12.54))
        self.assertEqual((latch.address, latch.destination), (MOVED, MOVED))
        self.assertEqual((latch.takeovers, latch.latches, latch.dropped), (1, 2, 2))

    def test_no_takeover_before_silence(self) -> None:
        """Packets sent before the silence limit do not count."""
        latch = self.latched()
        self.assertFalse(latch.admit(MOVED, 7, 7, 11.0))
        self.assertFalse(latch.admit(MOVED, 7, 7, 11.5))
        self.assertFalse(latch.admit(MOVED, 7, 7, 12.1))
        self.assertFalse(latch.admit(MOVED, 7, 7, 12.2))
        self.assertTrue(latch.admit(MOVED, 7, 7, 12.3))

    def test_wrong_ssrc_never_takes_over(self) -> None:
        """An attacker that does not know the SSRC stays out for good."""
        latch = self.latched()
        for n in range(50):
            self.assertFalse(latch.admit(ATTACKER, 1234, 7, 13.0 + n * 0.02))
        self.assertEqual(latch.address, NAT)

    def test_interleaved_strangers_restart_the_count(self) -> None:
        """Packets must come in a row from one source."""
        latch = self.latched(require_ssrc=False)
        for n in range(6):
            source = MOVED if n % 2 == 0 else ATTACKER
            self.assertFalse(latch.admit(source, None, 7, 13.0 + n * 0.02))
        self.assertEqual(latch.address, NAT)

    def test_ssrc_check_can_be_turned_off(self) -> None:
        """Without the SSRC rule, three packets in a row suffice."""
        latch = self.latched(require_ssrc=False, takeover_packets=3)
        self.assertFalse(latch.admit(MOVED, 99, 7, 13.0))
        self.assertFalse(latch.admit(MOVED, 99, 7, 13.02))
        self.assertTrue(latch.admit(MOVED, 99, 7, 13.04))

    def test_no_ssrc_known(self) -> None:
        """Non-RTP media (T.38): the packet count rule alone."""
        latch = Latch(LatchPolicy(takeover_packets=2), SDP)
        latch.admit(NAT, None, None, 10.0)
        self.assertFalse(latch.admit(MOVED, None, None, 13.0))
        self.assertTrue(latch.admit(MOVED, None, None, 13.02))

    def test_signalled_address_wins_back(self) -> None:
        """A stranger that got in first is replaced as soon as the address
        from the SDP sends."""
        latch = Latch(LatchPolicy(), SDP)
        latch.admit(ATTACKER, 5, None, 10.0)
        self.assertTrue(latch.admit(SDP, 7, 5, 10.01))
        self.assertEqual((latch.address, latch.takeovers), (SDP, 1))
        self.assertFalse(latch.admit(ATTACKER, 5, 7, 10.02))

    def test_signalled_preference_can_be_turned_off(self) -> None:
        """With C{prefer_signalled=False} the SDP address is a stranger too."""
        latch = Latch(LatchPolicy(prefer_signalled=False), SDP)
        latch.admit(NAT, 7, None, 10.0)
        self.assertFalse(latch.admit(SDP, 7, 7, 10.01))

    def test_policy_checks(self) -> None:
        """Nonsense knobs are refused."""
        self.assertRaises(ValueError, LatchPolicy, takeover_silence=-1)
        self.assertRaises(ValueError, LatchPolicy, takeover_packets=0)
