"""Tests for L{media.server.rtp_session}: pacing, receiving, RTCP, latching."""

from __future__ import annotations

import itertools
import random
import struct

from twisted.internet.error import CannotListenError
from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.sdp import INACTIVE, RECVONLY, SENDONLY, SENDRECV
from media.rtp import ReportBlock, parse_rtcp, rtcp_receiver_report, rtcp_sender_report, rtp_packet
from media.server.g711 import PCMA, PCMU, alaw_encode, ulaw_decode, ulaw_encode
from media.server.jitter import JitterBuffer
from media.server.rtcp_reports import NTP_EPOCH_OFFSET
from media.server.rtp_packet import RtpPacket, parse_rtp
from media.server.rtp_session import MAX_CATCH_UP, RtpSession
from tests.trial.media.support import FakeUDPReactor, Sent

LOCAL = 30000
REMOTE = ("192.0.2.10", 49170)
REMOTE_RTCP = ("192.0.2.10", 49171)
SILENT = bytes(320)


class ScriptedRandom(random.Random):
    """A seeded C{Random} whose C{getrandbits} answers from a script first
    (in the session's order: SSRC, sequence, timestamp, CNAME)."""

    def __init__(self, *values: int) -> None:
        super().__init__(7)
        self.script = list(values)

    def getrandbits(self, k: int) -> int:
        """The next scripted value, else a seeded random one."""
        if self.script:
            return self.script.pop(0) & ((1 << k) - 1)
        return super().getrandbits(k)


def tone(n: int) -> bytes:
    """A recognisable 20 ms frame (a ramp offset by C{n})."""
    return struct.pack("<160h", *((n * 37 + i * 101) % 20000 - 10000 for i in range(160)))


class Harness:
    """A session on a fake reactor, and helpers to look at the wire."""

    def __init__(self, **options: object) -> None:
        self.reactor = FakeUDPReactor()
        self.audio: list[bytes] = []
        self.events: list[RtpPacket] = []
        options.setdefault("remote", REMOTE)
        options.setdefault("rng", ScriptedRandom(0x11223344, 1000, 50000))
        options.setdefault("on_audio", self.audio.append)
        options.setdefault("on_event", self.events.append)
        codec = options.pop("codec", PCMU)
        self.session = RtpSession(self.reactor, codec, **options)  # type: ignore[arg-type]
        self.session.listen(LOCAL)

    def rtp(self) -> list[RtpPacket]:
        """The RTP packets sent since the last look."""
        return [self._parse(sent) for sent in self._take(LOCAL)]

    def rtcp(self) -> list[Sent]:
        """The RTCP datagrams sent since the last look."""
        return self._take(LOCAL + 1)

    def _take(self, port: int) -> list[Sent]:
        """Sent datagrams from one local port (the others stay)."""
        mine = [sent for sent in self.reactor.sent if sent.local == port]
        self.reactor.sent = [sent for sent in self.reactor.sent if sent.local != port]
        return mine

    @staticmethod
    def _parse(sent: Sent) -> RtpPacket:
        """Parse an RTP packet sent."""
        packet = parse_rtp(sent.data)
        assert packet is not None
        return packet

    def ticks(self, count: int) -> None:
        """Let C{count} 20 ms ticks pass."""
        for _ in range(count):
            self.reactor.advance(0.02)

    def deliver(
        self, seq: int, ts: int, payload: bytes, *, pt: int = 0, ssrc: int = 0xBEEF,
        marker: bool = False, source: tuple[str, int] = REMOTE,
    ) -> None:  # fmt: skip
        """An RTP packet from the remote."""
        self.reactor.deliver(LOCAL, rtp_packet(pt, seq, ts, ssrc, payload, marker=marker), source)

    def stop(self) -> None:
        """Stop the session; no timer may be left behind."""
        self.session.stop()
        assert not self.reactor.getDelayedCalls(), self.reactor.getDelayedCalls()


class SendingTests(SynchronousTestCase):
    """Packet timing, numbering and contents."""

    def test_paced_every_20ms(self) -> None:
        """One packet at start, then exactly one per 20 ms, with sequence
        +1, timestamp +160, one SSRC, and the marker on the first only."""
        h = Harness()
        h.session.start()
        first = h.rtp()
        self.assertEqual(len(first), 1)
        h.reactor.advance(0.019)
        self.assertEqual(h.rtp(), [])
        h.reactor.advance(0.001)
        h.ticks(9)
        packets = first + h.rtp()
        self.assertEqual(len(packets), 11)
        self.assertEqual([p.sequence for p in packets], list(range(1000, 1011)))
        self.assertEqual([p.timestamp for p in packets], [50000 + 160 * n for n in range(11)])
        self.assertEqual({p.ssrc for p in packets}, {0x11223344})
        self.assertEqual([p.marker for p in packets], [True] + [False] * 10)
        self.assertEqual({p.payload_type for p in packets}, {0})
        self.assertTrue(all(len(p.payload) == 160 for p in packets))
        h.stop()

    def test_sent_to_sdp_address(self) -> None:
        """Packets go to the remote address from the SDP."""
        h = Harness()
        h.session.start()
        self.assertEqual([s.destination for s in h.reactor.sent], [REMOTE])
        h.stop()

    def test_source_audio_encoded(self) -> None:
        """The source's frames are encoded with the session's law."""
        frames = [tone(n) for n in range(3)]
        for codec, encode in ((PCMU, ulaw_encode), (PCMA, alaw_encode)):
            feed = iter(frames)
            h = Harness(codec=codec, source=lambda feed=feed: next(feed))
            h.session.start()
            h.ticks(2)
            packets = h.rtp()
            self.assertEqual([p.payload for p in packets], [encode(f) for f in frames])
            self.assertEqual({p.payload_type for p in packets}, {codec.payload_type})
            h.stop()

    def test_negotiated_payload_type(self) -> None:
        """A dynamic payload type from the SDP is used on the wire."""
        h = Harness(codec=PCMA, payload_type=98)
        h.session.start()
        self.assertEqual(h.rtp()[0].payload_type, 98)
        h.stop()

    def test_silence_packets(self) -> None:
        """Without a source, silence packets keep the stream going."""
        for codec in (PCMU, PCMA):
            h = Harness(codec=codec)
            h.session.start()
            h.ticks(2)
            packets = h.rtp()
            self.assertEqual([p.payload for p in packets], [bytes([codec.silence]) * 160] * 3)
            self.assertEqual([p.marker for p in packets], [True, False, False])
            h.stop()

    def test_silence_suppression_marks_talkspurts(self) -> None:
        """With silence suppressed, nothing is sent while the source is
        silent; the timestamp keeps time, the sequence number does not
        skip, and the first packet after the silence has the marker."""
        script = [tone(0), tone(1), None, None, None, tone(5), tone(6)]
        feed = iter(script)
        h = Harness(source=lambda: next(feed), suppress_silence=True)
        h.session.start()
        h.ticks(6)
        packets = h.rtp()
        self.assertEqual([p.sequence for p in packets], [1000, 1001, 1002, 1003])
        self.assertEqual([p.timestamp - 50000 for p in packets], [0, 160, 5 * 160, 6 * 160])
        self.assertEqual([p.marker for p in packets], [True, False, True, False])
        h.stop()

    def test_sequence_wraps(self) -> None:
        """The sequence number wraps from 65535 to 0."""
        h = Harness(rng=ScriptedRandom(1, 65534, 0))
        h.session.start()
        h.ticks(3)
        self.assertEqual([p.sequence for p in h.rtp()], [65534, 65535, 0, 1])
        h.stop()

    def test_timestamp_wraps(self) -> None:
        """The timestamp wraps at 2**32."""
        h = Harness(rng=ScriptedRandom(1, 0, (1 << 32) - 320))
        h.session.start()
        h.ticks(3)
        self.assertEqual([p.timestamp for p in h.rtp()], [(1 << 32) - 320, (1 << 32) - 160, 0, 160])
        h.stop()

    def test_random_start(self) -> None:
        """SSRC, sequence and timestamp start at random values."""
        starts = set()
        for seed in range(5):
            h = Harness(rng=random.Random(seed))
            h.session.start()
            packet = h.rtp()[0]
            starts.add((packet.ssrc, packet.sequence, packet.timestamp))
            h.stop()
        self.assertEqual(len(starts), 5)

    def test_catch_up_after_stall(self) -> None:
        """Missed ticks are sent in a burst; beyond the catch-up limit the
        oldest frames are skipped and the marker flags the jump."""
        h = Harness()
        h.session.start()
        h.rtp()
        h.reactor.advance(0.06)
        burst = h.rtp()
        self.assertEqual([p.timestamp - 50000 for p in burst], [160, 320, 480])
        self.assertFalse(any(p.marker for p in burst))
        h.reactor.advance(0.02 * (MAX_CATCH_UP + 3))
        burst = h.rtp()
        self.assertEqual(len(burst), MAX_CATCH_UP)
        self.assertEqual(burst[0].timestamp - 50000, 160 * 7)
        self.assertEqual([p.marker for p in burst], [True] + [False] * (MAX_CATCH_UP - 1))
        self.assertEqual(h.session.counters.skipped_frames, 3)
        h.stop()

    def test_direction_gates_sending(self) -> None:
        """recvonly and inactive send no RTP; going back to sendrecv marks
        the first packet."""
        for direction in (RECVONLY, INACTIVE):
            h = Harness(direction=direction)
            h.session.start()
            h.ticks(5)
            self.assertEqual(h.rtp(), [])
            h.session.update(remote=REMOTE, direction=SENDRECV, codec=PCMU)
            h.ticks(2)
            packets = h.rtp()
            self.assertEqual([p.marker for p in packets], [True, False])
            self.assertEqual(packets[0].timestamp - 50000, 160 * 6)
            h.stop()

    def test_learns_destination(self) -> None:
        """Without an SDP address nothing is sent until the remote's first
        packet, then packets go where it came from."""
        h = Harness(remote=None)
        h.session.start()
        h.ticks(2)
        self.assertEqual(h.rtp(), [])
        self.assertEqual(h.session.counters.undeliverable, 3)
        nat = ("198.51.100.1", 61000)
        h.deliver(1, 0, bytes(160), source=nat)
        h.ticks(1)
        self.assertEqual([s.destination for s in h.reactor.sent if s.local == LOCAL], [nat])
        self.assertTrue(h.rtp()[0].marker)
        h.stop()

    def test_send_payload(self) -> None:
        """An out-of-band packet (an RFC 4733 event) takes the next
        sequence number, our SSRC and the current timestamp."""
        h = Harness(telephone_event=101)
        h.session.start()
        h.rtp()
        self.assertTrue(h.session.send_payload(101, b"\x01\x0a\x00\xa0", marker=True))
        h.ticks(1)
        event, audio = h.rtp()
        self.assertEqual(
            (event.payload_type, event.sequence, event.timestamp, event.marker, event.payload),
            (101, 1001, 50160, True, b"\x01\x0a\x00\xa0"),
        )
        self.assertEqual((audio.sequence, audio.timestamp), (1002, 50160))
        h.stop()

    def test_source_error_keeps_pacing(self) -> None:
        """A source that raises is counted; the clock keeps going."""

        def broken() -> bytes:
            raise RuntimeError("boom")

        h = Harness(source=broken)
        h.session.start()
        h.ticks(2)
        self.assertEqual(len(h.rtp()), 3)
        self.assertEqual(h.session.counters.callback_errors, 3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
        h.stop()

    def test_bad_frame_size(self) -> None:
        """A frame of the wrong size is padded (counted), not refused."""
        h = Harness(source=lambda: b"\x00\x10" * 10)
        h.session.start()
        packet = h.rtp()[0]
        self.assertEqual(len(packet.payload), 160)
        self.assertEqual(h.session.counters.bad_frames, 1)
        h.stop()


class ReceivingTests(SynchronousTestCase):
    """Jitter buffer, events, latching."""

    def _stream(self, h: Harness, order: list[int]) -> None:
        """Deliver frames C{order} (one per tick), then let them play."""
        for n in order:
            h.deliver(n, 8000 + 160 * n, ulaw_encode(tone(n)))
            h.ticks(1)
        h.ticks(6)

    def test_frames_delivered_in_order(self) -> None:
        """Received audio comes out decoded, one frame per tick, reordered,
        after the jitter buffer's delay."""
        h = Harness(jitter=JitterBuffer(min_delay=2, initial_delay=2))
        h.session.start()
        self.assertEqual(h.audio, [])
        self._stream(h, [0, 2, 1, 3, 4])
        audio = [frame for frame in h.audio if frame != SILENT]
        self.assertEqual(audio, [ulaw_decode(ulaw_encode(tone(n))) for n in range(5)])
        self.assertEqual(h.audio[:2], [SILENT, SILENT])
        h.stop()

    def test_loss_concealed_with_silence(self) -> None:
        """A lost packet becomes a silent frame between its neighbours."""
        h = Harness(jitter=JitterBuffer(min_delay=2, initial_delay=2))
        h.session.start()
        self._stream(h, [0, 1, 3, 4])
        start = h.audio.index(ulaw_decode(ulaw_encode(tone(0))))
        self.assertEqual(h.audio[start + 2], SILENT)
        self.assertEqual(h.audio[start + 3], ulaw_decode(ulaw_encode(tone(3))))
        h.stop()

    def test_continuous_frames(self) -> None:
        """Once the stream started, every tick delivers one frame."""
        h = Harness()
        h.session.start()
        h.deliver(0, 0, bytes(160))
        h.ticks(50)
        self.assertEqual(len(h.audio), 50)
        self.assertTrue(all(len(frame) == 320 for frame in h.audio))
        h.stop()

    def test_events_handed_on(self) -> None:
        """Telephone-event packets go to the event callback untouched and
        not into the audio."""
        h = Harness(telephone_event=101)
        h.session.start()
        h.deliver(7, 1234, b"\x05\x8a\x03\x20", pt=101, marker=True)
        self.assertEqual(h.events, [RtpPacket(101, True, 7, 1234, 0xBEEF, b"\x05\x8a\x03\x20")])
        h.ticks(5)
        self.assertEqual(h.audio, [])
        h.stop()

    def test_other_payloads_dropped(self) -> None:
        """Comfort noise is ignored and unknown payload types counted."""
        h = Harness()
        h.session.start()
        h.deliver(1, 0, b"\x40", pt=13)
        h.deliver(2, 0, b"xx", pt=18)
        h.deliver(3, 0, b"\x01\x02\x03\x04", pt=101)
        counters = h.session.counters
        self.assertEqual((counters.comfort_noise, counters.unknown_payload), (1, 2))
        h.ticks(3)
        self.assertEqual((h.audio, h.events), ([], []))
        h.stop()

    def test_malformed_dropped(self) -> None:
        """Datagrams that are not RTP are counted and dropped."""
        h = Harness()
        h.session.start()
        h.reactor.deliver(LOCAL, b"\x00\x01junk", REMOTE)
        h.reactor.deliver(LOCAL, rtcp_receiver_report(5), REMOTE)
        self.assertEqual(h.session.counters.malformed, 2)
        h.stop()

    def test_stranger_refused_after_latching(self) -> None:
        """Once the remote is latched, another source is refused."""
        h = Harness()
        h.session.start()
        h.deliver(1, 0, bytes(160))
        h.deliver(2, 160, bytes(160), source=("203.0.113.66", 4000))
        self.assertEqual(h.session.counters.foreign, 1)
        self.assertEqual(h.session.destination, REMOTE)
        h.stop()

    def test_new_ssrc_restarts_buffer(self) -> None:
        """A new source starts the jitter buffer afresh."""
        h = Harness(jitter=JitterBuffer(min_delay=1, initial_delay=1))
        h.session.start()
        h.deliver(1, 1000, ulaw_encode(tone(1)))
        h.ticks(3)
        h.deliver(500, 9_000_000, ulaw_encode(tone(2)), ssrc=0xCAFE)
        h.ticks(2)
        self.assertEqual(h.audio[-1], ulaw_decode(ulaw_encode(tone(2))))
        h.stop()

    def test_sendonly_delivers_nothing(self) -> None:
        """In sendonly and inactive, received audio is not played."""
        for direction in (SENDONLY, INACTIVE):
            h = Harness(direction=direction)
            h.session.start()
            h.deliver(1, 0, bytes(160))
            h.ticks(5)
            self.assertEqual(h.audio, [])
            h.stop()

    def test_codec_change(self) -> None:
        """A re-negotiation to PCMA decodes the new payload type."""
        h = Harness(jitter=JitterBuffer(min_delay=1, initial_delay=1))
        h.session.start()
        h.session.update(remote=REMOTE, direction=SENDRECV, codec=PCMA)
        h.ticks(1)
        self.assertEqual(h.rtp()[-1].payload_type, 8)
        h.deliver(1, 0, alaw_encode(tone(4)), pt=8)
        h.ticks(2)
        self.assertEqual(h.audio[-1], PCMA.decode(alaw_encode(tone(4))))
        h.stop()


def sender_info(data: bytes) -> tuple[int, int, int, int, int, int]:
    """SSRC, NTP seconds, NTP fraction, RTP timestamp, packets, octets."""
    return struct.unpack_from("!IIIIII", data, 4)


def sdes_cname(data: bytes) -> str:
    """The CNAME of the SDES packet that follows the first report."""
    length = (struct.unpack_from("!H", data, 2)[0] + 1) * 4
    sdes = data[length:]
    assert sdes[1] == 202
    size = sdes[9]
    return sdes[10 : 10 + size].decode()


class RtcpTests(SynchronousTestCase):
    """Sender and receiver reports."""

    def test_sender_report_contents(self) -> None:
        """An SR reports our SSRC, wall-clock NTP time, the RTP timestamp of
        that instant, and the packets and payload octets sent."""
        h = Harness(cname="media@example")
        h.session.start()
        started = h.reactor.seconds()
        h.ticks(300)
        sent = h.reactor.take()
        at = next(i for i, s in enumerate(sent) if s.local == LOCAL + 1)
        report = sent[at]
        self.assertEqual(report.destination, REMOTE_RTCP)
        data = report.data
        self.assertEqual(data[0] >> 6, 2)
        self.assertEqual(data[1], 200)
        ssrc, ntp_seconds, ntp_fraction, rtp_ts, packets, octets = sender_info(data)
        self.assertEqual(ssrc, 0x11223344)
        # The first report falls between 1.25 and 3.75 s after the start.
        sent_at = ntp_seconds - NTP_EPOCH_OFFSET + ntp_fraction / 2**32
        self.assertTrue(started + 1.25 <= sent_at <= started + 3.75, sent_at - started)
        self.assertEqual(rtp_ts, (50000 + round((sent_at - started) * 8000)) % 2**32)
        rtp_before = [s for s in sent[:at] if s.local == LOCAL]
        self.assertEqual(packets, len(rtp_before))
        self.assertEqual(octets, sum(len(s.data) - 12 for s in rtp_before))
        self.assertEqual(octets, 160 * packets)
        self.assertEqual(sdes_cname(data), "media@example")
        h.stop()

    def test_report_interval(self) -> None:
        """Reports come every 2.5-7.5 s (about 5 s on average)."""
        h = Harness()
        h.session.start()
        times = []
        for _ in range(60 * 10):
            h.reactor.advance(0.1)
            if h.rtcp():
                times.append(h.reactor.seconds())
        gaps = [b - a for a, b in itertools.pairwise(times)]
        self.assertTrue(all(2.4 <= gap <= 7.6 for gap in gaps), gaps)
        self.assertTrue(8 <= len(times) <= 18, len(times))
        h.stop()

    def test_receiver_report_with_block(self) -> None:
        """Not sending, we send an RR whose block tells the loss, highest
        sequence number and the remote's last SR (LSR/DLSR)."""
        h = Harness(direction=RECVONLY)
        h.session.start()
        for n in (0, 1, 2, 4, 5, 7, 8, 9):  # 3 and 6 lost
            h.deliver(65530 + n, 160 * n, bytes(160))
            h.ticks(1)
        h.reactor.deliver(
            LOCAL + 1, rtcp_sender_report(0xBEEF, 0x12345678, 0x9ABC0000), REMOTE_RTCP
        )
        h.reactor.advance(0.5)
        h.session.rtcp_report()  # the first interval: start counting anew
        h.deliver(65540 - 65536, 1600, bytes(160))
        h.reactor.advance(0.25)
        data = h.session.rtcp_report()
        self.assertEqual(data[1], 201)
        summary = parse_rtcp(data)
        assert summary is not None
        (block,) = summary.reports
        self.assertEqual(block.ssrc, 0xBEEF)
        self.assertEqual(block.cumulative_lost, 2)
        self.assertEqual(block.fraction_lost, 0)
        self.assertEqual(block.highest_seq, 65536 + 4)
        self.assertEqual(block.lsr, 0x56789ABC)
        self.assertEqual(block.dlsr, int(0.75 * 65536))
        h.stop()

    def test_fraction_lost(self) -> None:
        """The fraction lost covers the interval since the last report."""
        h = Harness(direction=RECVONLY)
        h.session.start()
        for n in range(10):
            if n not in (5, 6):
                h.deliver(100 + n, 160 * n, bytes(160))
        summary = parse_rtcp(h.session.rtcp_report())
        assert summary is not None
        # The first packet is probation (RFC 3550 A.1): counting starts at
        # the second, so 9 expected and 7 received.
        self.assertEqual(summary.reports[0].fraction_lost, (2 << 8) // 9)
        h.stop()

    def test_round_trip_time(self) -> None:
        """An RR answering one of our SRs gives the round-trip time."""
        h = Harness()
        h.session.start()
        data = h.session.rtcp_report()
        _, seconds, fraction, *_ = sender_info(data)
        lsr = ((seconds & 0xFFFF) << 16) | (fraction >> 16)
        h.reactor.advance(0.3)
        block = ReportBlock(0x11223344, 0, 0, 0, 0, lsr, int(0.1 * 65536))
        h.reactor.deliver(LOCAL + 1, rtcp_receiver_report(0xBEEF, [block]), REMOTE_RTCP)
        assert h.session.rtt is not None
        self.assertAlmostEqual(h.session.rtt, 0.2, places=3)
        h.stop()

    def test_bye_on_stop(self) -> None:
        """Stopping sends a final report ending in a BYE and closes both
        ports."""
        h = Harness()
        h.session.start()
        h.rtcp()
        h.stop()
        (last,) = h.rtcp()
        self.assertEqual(last.data[-8:], struct.pack("!BBHI", 0x81, 203, 1, 0x11223344))
        self.assertEqual(h.reactor.ports, {})

    def test_stop_from_callback(self) -> None:
        """A consumer may stop the session from inside its callback: no
        timer is left behind and nothing more is sent."""
        h = Harness(on_audio=lambda frame: h.session.stop())
        h.session.start()
        h.deliver(1, 0, bytes(160))
        h.reactor.advance(0.1)
        self.assertEqual(h.reactor.getDelayedCalls(), [])
        self.assertEqual(h.reactor.ports, {})
        h.reactor.take()
        h.reactor.advance(10)
        self.assertEqual(h.reactor.take(), [])

    def test_rtcp_in_every_direction(self) -> None:
        """RTCP keeps flowing while the stream is inactive."""
        h = Harness(direction=INACTIVE)
        h.session.start()
        h.reactor.advance(8.0)
        self.assertEqual(h.rtp(), [])
        self.assertTrue(h.rtcp())
        h.stop()


class PacketTests(SynchronousTestCase):
    """L{parse_rtp} and the session's life cycle."""

    def test_parse_plain(self) -> None:
        """Header fields and payload of a plain packet."""
        data = rtp_packet(8, 513, 99, 7, b"abc", marker=True)
        self.assertEqual(parse_rtp(data), RtpPacket(8, True, 513, 99, 7, b"abc"))

    def test_parse_csrc_extension_padding(self) -> None:
        """CSRCs, a header extension and padding are skipped."""
        header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, 0, 1, 2, 3)
        csrcs = struct.pack("!II", 10, 11)
        extension = struct.pack("!HH", 0xBEDE, 1) + b"\x00" * 4
        data = header + csrcs + extension + b"voice" + b"\x00\x00\x03"
        packet = parse_rtp(data)
        assert packet is not None
        self.assertEqual(packet.payload, b"voice")

    def test_parse_refuses(self) -> None:
        """Short, wrong-version, RTCP and truncated packets are refused."""
        self.assertIsNone(parse_rtp(b"\x80\x00"))
        self.assertIsNone(parse_rtp(b"\x40" + bytes(11)))
        self.assertIsNone(parse_rtp(rtcp_receiver_report(1) + bytes(4)))
        self.assertIsNone(parse_rtp(struct.pack("!BBHII", 0x8F, 0, 1, 2, 3)))
        self.assertIsNone(parse_rtp(struct.pack("!BBHII", 0xA0, 0, 1, 2, 3) + b"\x00"))

    def test_listen_failure_releases(self) -> None:
        """When the RTCP port is taken, the RTP port is given back."""
        reactor = FakeUDPReactor()
        reactor.refused.add(LOCAL + 1)
        session = RtpSession(reactor, PCMU, remote=REMOTE)
        self.assertRaises(CannotListenError, session.listen, LOCAL)
        self.assertEqual(reactor.ports, {})

    def test_start_needs_listen(self) -> None:
        """Starting before listening is an error."""
        session = RtpSession(FakeUDPReactor(), PCMU)
        self.assertRaises(RuntimeError, session.start)

    def test_bad_arguments(self) -> None:
        """A bad direction, payload type or interval is refused."""
        reactor = FakeUDPReactor()
        self.assertRaises(ValueError, RtpSession, reactor, PCMU, direction="both")
        self.assertRaises(ValueError, RtpSession, reactor, PCMU, payload_type=200)
        self.assertRaises(ValueError, RtpSession, reactor, PCMU, telephone_event=72)
        self.assertRaises(ValueError, RtpSession, reactor, PCMU, rtcp_interval=0)
