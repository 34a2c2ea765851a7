"""Tests for L{media.relay} and L{media.endpoints}: packets through the relay
on a fake UDP reactor (latching, hold, RTCP, T.38, dead media, counters)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.sdp import parse_sdp
from media.interfaces import MediaStats
from media.ports import PortPool
from media.relay import Relay, RelayEnd, StreamParams
from media.rtp import ReportBlock, ntp_middle, rtcp_receiver_report, rtcp_sender_report, rtp_packet
from tests.trial.media.support import (
    A_SDP,
    B_SDP,
    FakeUDPReactor,
    RelayHarness,
    Sent,
    audio_offer,
    crlf,
    t38_offer,
)

NAT_A = ("198.51.100.200", 61000)
STRANGER = ("203.0.113.66", 5004)
VOICE = bytes(160)


def voice(seq: int, ssrc: int = 0xA0A0) -> bytes:
    """A PCMU packet."""
    return rtp_packet(0, seq, seq * 160, ssrc, VOICE)


class FlowTests(SynchronousTestCase):
    """Packets go both ways, to the right place."""

    def setUp(self) -> None:
        self.h = RelayHarness()
        self.facing_a, self.facing_b = self.h.establish()
        self.reactor = self.h.reactor

    def test_both_ways(self) -> None:
        """A's packet leaves the port facing B towards B's SDP address, and
        B's the port facing A towards A's; bytes unchanged."""
        self.reactor.deliver(self.facing_a, voice(1), A_SDP)
        self.reactor.deliver(self.facing_b, voice(1, 0xB0B0), B_SDP)
        self.assertEqual(
            self.reactor.take(),
            [Sent(self.facing_b, B_SDP, voice(1)), Sent(self.facing_a, A_SDP, voice(1, 0xB0B0))],
        )

    def test_symmetric_latching(self) -> None:
        """Before A sends, B's media goes to A's SDP address; after, to the
        address A's media really comes from (its NAT)."""
        self.reactor.deliver(self.facing_b, voice(1, 0xB0B0), B_SDP)
        self.reactor.deliver(self.facing_a, voice(1), NAT_A)
        self.reactor.deliver(self.facing_b, voice(2, 0xB0B0), B_SDP)
        self.assertEqual([sent.destination for sent in self.reactor.take()], [A_SDP, B_SDP, NAT_A])

    def test_hijack_dropped_and_counted(self) -> None:
        """Once A latched, a stranger's packets to the port facing A are
        dropped, counted, and change nothing."""
        self.reactor.deliver(self.facing_a, voice(1), NAT_A)
        self.reactor.take()
        for seq in range(5):
            self.reactor.deliver(self.facing_a, voice(seq, 0x666), STRANGER)
        self.reactor.deliver(self.facing_b, voice(1, 0xB0B0), B_SDP)
        self.assertEqual([s.destination for s in self.reactor.take()], [NAT_A])
        counters = self.h.backend.stats()
        self.assertEqual((counters.dropped_foreign, counters.packets_relayed), (5, 2))
        stats = self.h.result(self.h.backend.query("call-1"))
        assert isinstance(stats, MediaStats)
        self.assertEqual(stats.streams[0].packets, 1)

    def test_nat_rebinding_takeover(self) -> None:
        """A's NAT binding changes mid-call: after 2 s of silence from the
        old address and 3 packets with A's SSRC, media follows A."""
        moved = (NAT_A[0], NAT_A[1] + 1)
        self.reactor.deliver(self.facing_a, voice(1), NAT_A)
        self.reactor.advance(3)
        for seq in range(2, 5):
            self.reactor.deliver(self.facing_a, voice(seq), moved)
        self.reactor.deliver(self.facing_b, voice(1, 0xB0B0), B_SDP)
        sent = self.reactor.take()
        self.assertEqual([s.destination for s in sent], [B_SDP, B_SDP, moved])
        self.assertEqual(self.h.backend.stats().takeovers, 1)

    def test_telephone_event_unchanged(self) -> None:
        """RFC 4733 packets pass byte for byte."""
        event = rtp_packet(101, 7, 1120, 0xA0A0, b"\x05\x8a\x03\x20", marker=True)
        for _ in range(3):
            self.reactor.deliver(self.facing_a, event, A_SDP)
        self.assertEqual([s.data for s in self.reactor.take()], [event] * 3)

    def test_send_errors_counted(self) -> None:
        """A full socket buffer drops the packet, counted; no exception."""
        self.reactor.ports[self.facing_b].refuse_writes = True
        self.reactor.deliver(self.facing_a, voice(1), A_SDP)
        counters = self.h.backend.stats()
        self.assertEqual((counters.send_errors, counters.packets_relayed), (1, 0))

    def test_statistics(self) -> None:
        """Per side: packets, bytes, loss, jitter, last packet time."""
        for seq in [1, 2, 3, 5, 6]:
            self.reactor.deliver(self.facing_a, voice(seq), A_SDP)
            self.reactor.advance(0.02)
        stats = self.h.result(self.h.backend.query("call-1"))
        assert isinstance(stats, MediaStats)
        a, b = stats.streams
        self.assertEqual((a.index, a.media, a.side), (0, "audio", "a"))
        self.assertEqual((a.packets, a.bytes, a.lost), (5, 5 * 172, 1))
        self.assertIsNotNone(a.jitter_ms)
        self.assertAlmostEqual(a.last_packet_at or 0, 1000.08)
        self.assertEqual((b.side, b.packets, b.last_packet_at, b.jitter_ms), ("b", 0, None, None))


class EarlyMediaTests(SynchronousTestCase):
    """Before the answer."""

    def test_callee_media_before_answer(self) -> None:
        """B's early media latches B and reaches A; A's media then reaches
        B's latched address although B's SDP is not known yet."""
        h = RelayHarness()
        to_b = h.offer("c", audio_offer(*A_SDP))
        facing_b = to_b.media[0].port
        facing_a = facing_b - 2  # both pairs are opened at the offer, A's first
        h.reactor.deliver(facing_a, voice(1), A_SDP)
        self.assertEqual(h.backend.stats().dropped_no_destination, 1)
        h.reactor.deliver(facing_b, voice(1, 0xB0B0), B_SDP)
        h.reactor.deliver(facing_a, voice(2), A_SDP)
        self.assertEqual(
            h.reactor.take(),
            [Sent(facing_a, A_SDP, voice(1, 0xB0B0)), Sent(facing_b, B_SDP, voice(2))],
        )


class ReinviteTests(SynchronousTestCase):
    """Re-offers that move, hold, or change media."""

    def setUp(self) -> None:
        self.h = RelayHarness()
        self.facing_a, self.facing_b = self.h.establish()
        self.reactor = self.h.reactor

    def test_new_address_relearns(self) -> None:
        """A re-INVITE from B with a new address: media for B goes there,
        and the next source B sends from is latched; the ports stay."""
        self.reactor.deliver(self.facing_b, voice(1, 0xB0B0), B_SDP)
        new_b = ("198.51.100.8", 7000)
        to_a = self.h.offer("call-1", audio_offer(*new_b), side="b")
        self.assertEqual(to_a.media[0].port, self.facing_a)
        self.h.answer("call-1", audio_offer(*A_SDP), side="a")
        self.reactor.deliver(self.facing_a, voice(1), A_SDP)
        self.reactor.deliver(self.facing_b, voice(2, 0xB0B0), new_b)
        self.reactor.deliver(self.facing_a, voice(2), A_SDP)
        self.assertEqual([s.destination for s in self.reactor.take()], [A_SDP, new_b, A_SDP, new_b])

    def test_same_address_keeps_latch(self) -> None:
        """A re-INVITE that changes codecs only leaves latching alone."""
        self.reactor.deliver(self.facing_a, voice(1), NAT_A)
        self.h.offer("call-1", audio_offer(*A_SDP, extra="a=rtpmap:9 G722/8000"))
        self.reactor.take()
        self.reactor.deliver(self.facing_b, voice(1, 0xB0B0), B_SDP)
        self.assertEqual(self.reactor.take()[0].destination, NAT_A)

    def test_null_address_hold(self) -> None:
        """RFC 2543 hold (c=0.0.0.0): nothing is sent to the holder, and the
        null address reaches the other side unchanged."""
        held = parse_sdp(
            audio_offer(*A_SDP).to_bytes().replace(b"IN IP4 192.0.2.10", b"IN IP4 0.0.0.0")
        )
        to_b = self.h.offer("call-1", held)
        self.assertEqual(to_b.connection.address, "0.0.0.0")  # type: ignore[union-attr]
        self.reactor.deliver(self.facing_b, voice(1, 0xB0B0), B_SDP)
        self.assertEqual(self.reactor.take(), [])
        self.assertEqual(self.h.backend.stats().dropped_no_destination, 1)

    def test_t38_switch(self) -> None:
        """Audio replaced by T.38 on the same line: same ports, UDPTL relayed
        like RTP, the audio statistics kept beside the image ones."""
        self.reactor.deliver(self.facing_a, voice(1), A_SDP)
        to_a = self.h.offer("call-1", t38_offer(B_SDP[0], 6100), side="b")
        self.assertEqual(to_a.media[0].media, "image")
        self.assertEqual(to_a.media[0].port, self.facing_a)
        self.assertEqual(to_a.media[0].proto, "udptl")
        self.h.answer("call-1", t38_offer(A_SDP[0], 49172), side="a")
        udptl = b"\x00\x01\x00\x05t38data"
        self.reactor.deliver(self.facing_a, udptl, (A_SDP[0], 49172))
        self.reactor.deliver(self.facing_b, udptl, (B_SDP[0], 6100))
        self.assertEqual(
            [s.destination for s in self.reactor.take()],
            [B_SDP, (B_SDP[0], 6100), (A_SDP[0], 49172)],
        )
        stats = self.h.result(self.h.backend.delete("call-1"))
        assert isinstance(stats, MediaStats)
        self.assertEqual(
            [(s.index, s.media, s.side, s.packets) for s in stats.streams],
            [
                (0, "audio", "a", 1),
                (0, "audio", "b", 0),
                (0, "image", "a", 1),
                (0, "image", "b", 1),
            ],
        )
        self.assertEqual(self.h.backend.relay.pool.free, self.h.backend.relay.pool.capacity)

    def test_added_and_removed_stream(self) -> None:
        """A re-offer adding video takes two more pairs; disabling it gives
        them back (and keeps its statistics)."""
        pool = self.h.backend.relay.pool
        video = crlf("""
m=video 51372 RTP/AVP 96
a=rtpmap:96 H264/90000
""").decode()
        with_video = parse_sdp(audio_offer(*A_SDP).to_bytes() + video.encode())
        to_b = self.h.offer("call-1", with_video)
        self.assertEqual(pool.in_use, 4)
        self.h.answer("call-1", parse_sdp(audio_offer(*B_SDP).to_bytes() + video.encode()))
        self.reactor.deliver(to_b.media[1].port - 2, rtp_packet(96, 1, 0, 5, b"v"), A_SDP)
        without = parse_sdp(with_video.to_bytes().replace(b"m=video 51372", b"m=video 0"))
        to_b = self.h.offer("call-1", without)
        self.assertEqual(to_b.media[1].port, 0)
        self.assertEqual(pool.in_use, 2)
        stats = self.h.result(self.h.backend.query("call-1"))
        assert isinstance(stats, MediaStats)
        self.assertEqual(
            [(s.index, s.media, s.side, s.packets) for s in stats.streams],
            [
                (1, "video", "a", 1),
                (1, "video", "b", 0),
                (0, "audio", "a", 0),
                (0, "audio", "b", 0),
            ],
        )


class RtcpTests(SynchronousTestCase):
    """RTCP on the odd ports."""

    def setUp(self) -> None:
        self.h = RelayHarness()
        self.facing_a, self.facing_b = self.h.establish()
        self.reactor = self.h.reactor

    def test_relayed_to_rtcp_port(self) -> None:
        """RTCP goes to the RTP port + 1 of the SDP, from the relay's odd
        port, and latches on its own."""
        report = rtcp_receiver_report(0xA0A0)
        rtcp_source = (NAT_A[0], 61001)
        self.reactor.deliver(self.facing_a + 1, report, rtcp_source)
        self.reactor.deliver(self.facing_b + 1, rtcp_receiver_report(0xB0B0), (B_SDP[0], 6001))
        self.assertEqual(
            [(s.local, s.destination) for s in self.reactor.take()],
            [(self.facing_b + 1, (B_SDP[0], 6001)), (self.facing_a + 1, rtcp_source)],
        )

    def test_round_trip_time(self) -> None:
        """A's SR is relayed to B; B's report on it 60 ms later with a DLSR
        of 10 ms gives B's round trip of 50 ms; A's report on B's SR gives
        A's."""
        self.reactor.deliver(self.facing_a + 1, rtcp_sender_report(0xA0A0, 5, 0x80000000), A_SDP)
        self.reactor.advance(0.060)
        dlsr = int(0.010 * 65536)
        block = ReportBlock(0xA0A0, 0, 0, 0, 0, ntp_middle(5, 0x80000000), dlsr)
        self.reactor.deliver(
            self.facing_b + 1, rtcp_sender_report(0xB0B0, 9, 0, blocks=[block]), B_SDP
        )
        self.reactor.advance(0.100)
        block = ReportBlock(0xB0B0, 0, 0, 0, 0, ntp_middle(9, 0), 0)
        self.reactor.deliver(self.facing_a + 1, rtcp_receiver_report(0xA0A0, [block]), A_SDP)
        stats = self.h.result(self.h.backend.query("call-1"))
        assert isinstance(stats, MediaStats)
        a, b = stats.streams
        self.assertAlmostEqual(b.rtt_ms or 0, 50.0, places=1)
        self.assertAlmostEqual(a.rtt_ms or 0, 100.0, places=1)

    def test_unknown_lsr_ignored(self) -> None:
        """A report on an SR the relay never carried gives no sample."""
        block = ReportBlock(1, 0, 0, 0, 0, 0x12345678, 0)
        self.reactor.deliver(self.facing_b + 1, rtcp_receiver_report(2, [block]), B_SDP)
        stats = self.h.result(self.h.backend.query("call-1"))
        assert isinstance(stats, MediaStats)
        self.assertIsNone(stats.streams[1].rtt_ms)


class DeadMediaTests(SynchronousTestCase):
    """Silence on every active stream ends a call; hold does not."""

    def setUp(self) -> None:
        self.dead: list[str] = []
        self.h = RelayHarness(media_timeout=30.0, on_dead=self.dead.append, check_interval=1.0)
        self.reactor = self.h.reactor
        self.h.backend.start()
        self.addCleanup(self.h.backend.stop)

    def test_silence_reported_once(self) -> None:
        """No RTP for 30 s after the answer: reported once, by the one
        relay-wide check."""
        facing_a, _ = self.h.establish()
        self.reactor.advance(10)
        self.reactor.deliver(facing_a, voice(1), A_SDP)
        self.reactor.advance(30)
        self.assertEqual(self.dead, [])
        self.reactor.advance(1)
        self.assertEqual(self.dead, ["call-1"])
        self.reactor.advance(60)
        self.assertEqual(self.dead, ["call-1"])
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)

    def test_media_keeps_call_alive(self) -> None:
        """One direction flowing is enough."""
        _, facing_b = self.h.establish()
        for seq in range(100):
            self.reactor.deliver(facing_b, voice(seq, 0xB0B0), B_SDP)
            self.reactor.advance(1)
        self.assertEqual(self.dead, [])

    def test_hold_is_not_dead(self) -> None:
        """A holds (sendonly), B answers recvonly and nobody sends: not dead;
        after resume, silence counts from the resume."""
        self.h.establish()
        self.h.offer("call-1", audio_offer(*A_SDP, direction="sendonly"))
        self.h.answer("call-1", audio_offer(*B_SDP, direction="recvonly"))
        self.reactor.advance(300)
        self.assertEqual(self.dead, [])
        self.h.offer("call-1", audio_offer(*A_SDP))
        self.h.answer("call-1", audio_offer(*B_SDP))
        self.reactor.advance(30)
        self.assertEqual(self.dead, [])
        self.reactor.advance(2)
        self.assertEqual(self.dead, ["call-1"])

    def test_unanswered_call_not_supervised(self) -> None:
        """Ringing without early media is not dead media."""
        self.h.offer("call-1", audio_offer(*A_SDP))
        self.reactor.advance(120)
        self.assertEqual(self.dead, [])
        self.assertEqual(self.h.backend.silent_calls(), [])

    def test_deleted_call_forgotten(self) -> None:
        """After delete the call is not reported again."""
        self.h.establish()
        self.reactor.advance(31)
        self.h.backend.delete("call-1")
        self.h.establish()
        self.reactor.advance(32)
        self.assertEqual(self.dead, ["call-1", "call-1"])

    def test_callback_errors_contained(self) -> None:
        """A failing callback is logged; the check goes on."""
        calls: list[str] = []

        def broken(call_id: str) -> None:
            calls.append(call_id)
            raise RuntimeError("boom")

        h = RelayHarness(media_timeout=5.0, on_dead=broken)
        h.backend.start()
        h.establish("x")
        h.establish("y", a=("192.0.2.11", 4000), b=("192.0.2.12", 4000))
        h.reactor.advance(7)
        self.assertEqual(sorted(calls), ["x", "y"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        h.backend.stop()
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_detection_off(self) -> None:
        """Without a timeout nothing is silent and no timer runs."""
        h = RelayHarness()
        h.backend.start()
        h.establish()
        h.reactor.advance(1000)
        self.assertEqual(h.backend.silent_calls(), [])
        self.assertEqual(h.reactor.getDelayedCalls(), [])


class RelayDirectTests(SynchronousTestCase):
    """L{Relay} without SDP."""

    def test_answer_never_opens_streams(self) -> None:
        """An answer cannot enable a line its offer disabled."""
        reactor = FakeUDPReactor()
        relay = Relay(reactor, PortPool(20000, 20099))
        params = StreamParams("audio", True, A_SDP, None)
        self.assertEqual(relay.update("c", "a", [None], answer=False), [None])
        self.assertEqual(relay.update("c", "b", [params], answer=True), [None])
        self.assertEqual(relay.pool.in_use, 0)
        self.assertIn("c", relay)

    def test_bad_side(self) -> None:
        """Sides are C{a} and C{b}."""
        relay = Relay(FakeUDPReactor(), PortPool(20000, 20099))
        self.assertRaises(ValueError, relay.update, "c", "x", [], answer=False)


class FeatureInterfaceTests(SynchronousTestCase):
    """What recording and music on hold use: taps, mute, injection, hold
    and close notifications, and the ends of a call."""

    def setUp(self) -> None:
        self.h = RelayHarness()
        self.relay = self.h.backend.relay
        self.held: list[tuple[str, int, str, bool]] = []
        self.closed: list[str] = []
        self.relay.hold_listeners.append(
            lambda end: self.held.append((end.call_id, end.index, end.side, end.held))
        )
        self.relay.close_listeners.append(self.closed.append)
        self.facing_a, self.facing_b = self.h.establish()
        self.reactor = self.h.reactor

    def end(self, side: str) -> RelayEnd:
        """The call's audio end facing C{side}."""
        return next(e for e in self.relay.ends("call-1") if e.side == side)

    def test_ends(self) -> None:
        """Both ends of the one stream, A first, with their clock rates."""
        ends = self.relay.ends("call-1")
        self.assertEqual([(e.index, e.side, e.media, e.held) for e in ends],
                         [(0, "a", "audio", False), (0, "b", "audio", False)])
        self.assertEqual(ends[0].clock_rates.get(0), 8000)
        self.assertEqual(self.relay.ends("nope"), [])

    def test_tap_sees_what_the_party_sends(self) -> None:
        """The tap of the end facing A gets A's packets, with the time."""
        seen: list[tuple[bytes, float]] = []
        self.end("a").rtp.tap = lambda data, now: seen.append((data, now))
        self.reactor.advance(5)
        self.reactor.deliver(self.facing_a, voice(1), A_SDP)
        self.reactor.deliver(self.facing_b, voice(1, 0xB0B0), B_SDP)
        self.assertEqual(seen, [(voice(1), self.reactor.seconds())])
        self.assertEqual(len(self.reactor.take()), 2)

    def test_mute_and_inject(self) -> None:
        """A muted party's packets are counted, not relayed; injected
        packets go from the end facing B to B."""
        a, b = self.end("a"), self.end("b")
        a.rtp.mute = True
        self.reactor.deliver(self.facing_a, voice(1), A_SDP)
        self.assertEqual(self.reactor.take(), [])
        self.assertTrue(b.rtp.send_to_party(b"music"))
        self.assertEqual(self.reactor.take(), [Sent(self.facing_b, B_SDP, b"music")])
        self.assertEqual((a.rtp.stats.packets, b.rtp.injected), (1, 1))

    def test_hold_announced(self) -> None:
        """New ends are announced, then a change of hold state, once."""
        self.assertEqual(self.held, [("call-1", 0, "a", False), ("call-1", 0, "b", False)])
        del self.held[:]
        held = parse_sdp(audio_offer(*A_SDP).to_bytes().replace(b"sendrecv", b"sendonly")
                         if b"sendrecv" in audio_offer(*A_SDP).to_bytes()
                         else audio_offer(*A_SDP).to_bytes() + b"a=sendonly\r\n")
        self.h.offer("call-1", held)
        self.h.answer("call-1", audio_offer(*B_SDP))
        self.assertEqual(self.held, [("call-1", 0, "a", True)])

    def test_close_announced(self) -> None:
        """Closing the call's media tells the close listeners."""
        self.h.backend.delete("call-1")
        self.assertEqual(self.closed, ["call-1"])
