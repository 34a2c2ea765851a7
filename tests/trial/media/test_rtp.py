"""Tests for L{media.rtp}: RTP/RTCP fields and reception statistics."""

from __future__ import annotations

import struct

from twisted.trial.unittest import SynchronousTestCase

from media.rtp import (
    ReceptionStatistics,
    ReportBlock,
    is_rtcp,
    ntp_middle,
    parse_rtcp,
    rtcp_receiver_report,
    rtcp_sender_report,
    rtcp_ssrc,
    rtp_packet,
    rtp_ssrc,
)

PAYLOAD = bytes(160)


def feed(
    stats: ReceptionStatistics,
    seqs: list[int],
    *,
    ssrc: int = 0x1234,
    start: float = 100.0,
    pt: int = 0,
) -> None:
    """Packets with the given sequence numbers, 20 ms and 160 ticks apart
    in send order (timestamps follow the sequence number)."""
    for number, seq in enumerate(seqs):
        stats.packet(rtp_packet(pt, seq, seq * 160, ssrc, PAYLOAD), start + number * 0.020)


class PacketFieldTests(SynchronousTestCase):
    """Header fields and the builders."""

    def test_rtp_fields(self) -> None:
        """The builder writes version 2, marker, payload type, sequence,
        timestamp and SSRC where RFC 3550 5.1 puts them."""
        packet = rtp_packet(101, 70000, 2**32 + 5, 0xDEADBEEF, b"ab", marker=True)
        self.assertEqual(
            struct.unpack("!BBHII", packet[:12]), (0x80, 0x80 | 101, 70000 - 65536, 5, 0xDEADBEEF)
        )
        self.assertEqual(packet[12:], b"ab")
        self.assertEqual(rtp_ssrc(packet), 0xDEADBEEF)

    def test_ssrc_of_other_datagrams(self) -> None:
        """Not RTP version 2 (STUN, short, RTCP): no RTP SSRC."""
        self.assertIsNone(rtp_ssrc(b"\x00\x01" + bytes(18)))
        self.assertIsNone(rtp_ssrc(b"\x80\x00\x00"))
        report = rtcp_receiver_report(77)
        self.assertIsNone(rtp_ssrc(report + bytes(8)))
        self.assertEqual(rtcp_ssrc(report), 77)
        self.assertIsNone(rtcp_ssrc(b"\x00" * 8))

    def test_multiplexed_rtcp(self) -> None:
        """RFC 5761: packet types 192-223 are RTCP."""
        self.assertTrue(is_rtcp(rtcp_receiver_report(1)))
        self.assertFalse(is_rtcp(rtp_packet(0, 1, 1, 1)))
        self.assertFalse(is_rtcp(rtp_packet(127, 1, 1, 1, marker=True)))

    def test_ntp_middle(self) -> None:
        """The compact form keeps the low 16 bits of the seconds and the high
        16 bits of the fraction."""
        self.assertEqual(ntp_middle(0xAABBCCDD, 0x11223344), 0xCCDD1122)


class RtcpParseTests(SynchronousTestCase):
    """L{parse_rtcp}."""

    block = ReportBlock(0xB0B, 12, 345, 70000, 80, 0x12345678, 0x00018000)

    def test_sender_report(self) -> None:
        """An SR gives its compact NTP time and its report blocks."""
        summary = parse_rtcp(rtcp_sender_report(0xA1, 0x00011111, 0x22220000, blocks=[self.block]))
        assert summary is not None
        self.assertEqual(summary.ssrc, 0xA1)
        self.assertEqual(summary.sr_ntp, 0x11112222)
        self.assertEqual(summary.reports, (self.block,))

    def test_receiver_report(self) -> None:
        """An RR gives its blocks; negative cumulative loss (duplicates)
        keeps its sign."""
        other = self.block._replace(ssrc=5, cumulative_lost=-3)
        summary = parse_rtcp(rtcp_receiver_report(0xB2, [self.block, other]))
        assert summary is not None
        self.assertEqual((summary.ssrc, summary.sr_ntp), (0xB2, None))
        self.assertEqual(summary.reports, (self.block, other))

    def test_compound(self) -> None:
        """SDES and BYE are skipped; reports after them still count."""
        sdes = struct.pack("!BBH", 0x81, 202, 2) + struct.pack("!I", 0xA1) + b"\x01\x01x\x00"
        compound = rtcp_sender_report(0xA1, 1, 2) + sdes + rtcp_receiver_report(0xA1, [self.block])
        summary = parse_rtcp(compound)
        assert summary is not None
        self.assertEqual(summary.sr_ntp, ntp_middle(1, 2))
        self.assertEqual(summary.reports, (self.block,))

    def test_truncated(self) -> None:
        """A packet whose length runs past the datagram ends the parse; a
        count larger than the blocks present reads only those."""
        good = rtcp_receiver_report(1, [self.block])
        summary = parse_rtcp(good + rtcp_receiver_report(2, [self.block])[:-4])
        assert summary is not None
        self.assertEqual(summary.reports, (self.block,))
        lying = bytes([0x82]) + good[1:]
        summary = parse_rtcp(lying)
        assert summary is not None
        self.assertEqual(summary.reports, (self.block,))

    def test_not_rtcp(self) -> None:
        """Garbage is not RTCP."""
        self.assertIsNone(parse_rtcp(b""))
        self.assertIsNone(parse_rtcp(b"\x00" * 40))


class LossTests(SynchronousTestCase):
    """Loss from sequence numbers (RFC 3550 A.1, A.3)."""

    def test_no_loss(self) -> None:
        """Packets in order: nothing lost; the first one is the probation
        packet, counted in packets but not in the sequence state."""
        stats = ReceptionStatistics()
        feed(stats, list(range(1, 101)))
        self.assertEqual((stats.packets, stats.bytes), (100, 100 * 172))
        self.assertEqual((stats.received, stats.expected, stats.lost), (99, 99, 0))

    def test_gap(self) -> None:
        """Missing sequence numbers are lost."""
        stats = ReceptionStatistics()
        feed(stats, [1, 2, 3, 4, 7, 8, 10])
        self.assertEqual(stats.lost, 3)

    def test_wrap_around(self) -> None:
        """The 16-bit sequence number wraps without counting a loss, and a
        loss across the wrap counts once."""
        stats = ReceptionStatistics()
        seqs = [s & 0xFFFF for s in range(65530, 65550) if s != 65537]
        feed(stats, seqs)
        self.assertEqual(stats.cycles, 65536)
        self.assertEqual(stats.lost, 1)

    def test_reordering(self) -> None:
        """A late packet fills its gap."""
        stats = ReceptionStatistics()
        feed(stats, [1, 2, 3, 5, 4, 6, 7])
        self.assertEqual(stats.lost, 0)
        self.assertEqual(stats.max_seq, 7)

    def test_duplicates_never_make_loss_negative(self) -> None:
        """Duplicates are counted as received; loss stays at 0, not below."""
        stats = ReceptionStatistics()
        feed(stats, [1, 2, 3, 3, 3, 4])
        self.assertEqual(stats.lost, 0)

    def test_stray_jump_ignored(self) -> None:
        """One packet far ahead is ignored; the stream carries on."""
        stats = ReceptionStatistics()
        feed(stats, [1, 2, 3, 30000, 4, 5, 6])
        self.assertEqual((stats.lost, stats.max_seq, stats.received), (0, 6, 5))

    def test_restart_after_jump(self) -> None:
        """Two packets in sequence after a big jump re-synchronise (a sender
        restart), keeping what was lost before."""
        stats = ReceptionStatistics()
        feed(stats, [1, 2, 4, 40000, 40001, 40002, 40004])
        self.assertEqual(stats.base_seq, 40001)
        self.assertEqual(stats.lost, 2)

    def test_new_ssrc_keeps_old_loss(self) -> None:
        """A new source starts a new count; the old source's loss stays."""
        stats = ReceptionStatistics()
        feed(stats, [1, 2, 4, 5], ssrc=1)
        feed(stats, [900, 901, 903], ssrc=2, start=200.0)
        self.assertEqual(stats.ssrc, 2)
        self.assertEqual(stats.lost, 2)

    def test_probation_restarts_on_gap(self) -> None:
        """A new source must send two packets in sequence before counting."""
        stats = ReceptionStatistics()
        feed(stats, [10, 12, 13, 14])
        self.assertEqual((stats.base_seq, stats.received, stats.lost), (13, 2, 0))

    def test_not_rtp(self) -> None:
        """Other datagrams count as packets and bytes only."""
        stats = ReceptionStatistics()
        stats.packet(b"\x00\x01\x00\x00" + bytes(20), 1.0)
        stats.packet(rtcp_receiver_report(5), 1.0)
        self.assertEqual((stats.packets, stats.bytes, stats.ssrc), (2, 32, None))
        udptl = ReceptionStatistics(rtp=False)
        feed(udptl, [1, 2, 5])
        self.assertEqual(
            (udptl.packets, udptl.lost, udptl.ssrc, udptl.jitter_ms), (3, 0, None, None)
        )


class JitterTests(SynchronousTestCase):
    """Interarrival jitter (RFC 3550 A.8)."""

    def test_constant_spacing(self) -> None:
        """Packets arriving exactly on time have no jitter."""
        stats = ReceptionStatistics()
        feed(stats, list(range(1, 50)))
        self.assertEqual(stats.jitter_ms, 0.0)

    def test_one_late_packet(self) -> None:
        """J += (|D| - J) / 16, worked by hand: packet 5 arrives 10 ms
        (80 ticks at 8 kHz) late."""
        stats = ReceptionStatistics()
        for seq in range(8):
            arrival = 10.0 + seq * 0.020 + (0.010 if seq == 5 else 0.0)
            stats.packet(rtp_packet(0, seq, seq * 160, 9, PAYLOAD), arrival)
            if seq == 5:
                self.assertAlmostEqual(stats.jitter, 5.0, places=6)
            if seq == 6:
                self.assertAlmostEqual(stats.jitter, 9.6875, places=6)
        self.assertAlmostEqual(stats.jitter, 9.08203125, places=6)
        assert stats.jitter_ms is not None
        self.assertAlmostEqual(stats.jitter_ms, 9.08203125 / 8, places=6)

    def test_clock_rate_from_sdp(self) -> None:
        """The payload type's clock rate turns ticks into milliseconds."""
        stats = ReceptionStatistics({9: 16000})
        for seq in range(8):
            arrival = 10.0 + seq * 0.020 + (0.010 if seq == 5 else 0.0)
            stats.packet(rtp_packet(9, seq, seq * 320, 9, PAYLOAD), arrival)
        assert stats.jitter_ms is not None
        self.assertAlmostEqual(stats.jitter_ms, 9.08203125 / 8, places=6)

    def test_timestamp_wrap(self) -> None:
        """The 32-bit timestamp wrapping does not look like jitter."""
        stats = ReceptionStatistics()
        for seq in range(10):
            stats.packet(rtp_packet(0, seq, 2**32 - 800 + seq * 160, 9, PAYLOAD), seq * 0.020)
        self.assertAlmostEqual(stats.jitter, 0.0, places=3)

    def test_telephone_events_left_out(self) -> None:
        """RFC 4733 packets repeat the event's start timestamp; a payload
        type mapped to rate 0 stays out of the jitter."""
        stats = ReceptionStatistics({0: 8000, 101: 0})
        feed(stats, list(range(1, 10)))
        for number in range(5):
            stats.packet(
                rtp_packet(101, 10 + number, 10 * 160, 0x1234, b"\x01\x0a\x00\xa0"),
                100.0 + (9 + number) * 0.020,
            )
        feed(stats, list(range(15, 20)), start=100.0 + 14 * 0.020)
        assert stats.jitter_ms is not None
        self.assertAlmostEqual(stats.jitter_ms, 0.0, places=6)
        self.assertEqual(stats.lost, 0)

    def test_no_jitter_before_two_packets(self) -> None:
        """Nothing measured yet: C{None}."""
        stats = ReceptionStatistics()
        self.assertIsNone(stats.jitter_ms)
        self.assertIsNone(stats.rtt_ms)


class RoundTripTests(SynchronousTestCase):
    """RTT samples."""

    def test_mean(self) -> None:
        """The RTT is the mean of the samples; negative ones count as 0."""
        stats = ReceptionStatistics()
        stats.add_rtt(0.040)
        stats.add_rtt(0.020)
        stats.add_rtt(-0.001)
        assert stats.rtt_ms is not None
        self.assertAlmostEqual(stats.rtt_ms, 20.0)
