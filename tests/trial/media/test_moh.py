"""Music on hold (L{media.moh}) on the relay, driven through
L{media.backend.RelayBackend} on a fake UDP reactor."""

from __future__ import annotations

from itertools import pairwise
from types import SimpleNamespace

from prometheus_client import CollectorRegistry
from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.sdp import SessionDescription, parse_sdp
from media.moh import CATCH_UP, MusicOnHold, generated_loop
from media.rtp import rtp_packet
from media.server.g711 import alaw_encode, ulaw_encode
from media.server.pcm import FRAME_SAMPLES, to_samples
from media.server.rtp_packet import RtpPacket, parse_rtp
from tests.trial.media.support import A_SDP, B_SDP, RelayHarness, Sent, audio_offer, crlf

VOICE = bytes(range(160))


def voice(seq: int, ssrc: int = 0xA0A0) -> bytes:
    """A PCMU packet of a party."""
    return rtp_packet(0, seq, seq * 160, ssrc, VOICE)


def offer(host: str, port: int, formats: str = "0 8 101", direction: str = "sendrecv",
          connection: str | None = None) -> SessionDescription:
    """An audio SDP with the given formats (static ones need no rtpmap)."""
    return parse_sdp(crlf(f"""
v=0
o=- 1 1 IN IP4 {host}
s=-
c=IN IP4 {connection or host}
t=0 0
m=audio {port} RTP/AVP {formats}
a=rtpmap:101 telephone-event/8000
a={direction}
"""))


class MohCase(SynchronousTestCase):
    """A relay with music on hold, started; helpers to hold and resume."""

    options: dict[str, object] = {}

    def setUp(self) -> None:
        self.h = RelayHarness(**self.options)
        self.backend = self.h.backend
        self.reactor = self.h.reactor
        self.moh = self.backend.moh
        assert self.moh is not None
        self.backend.start()

    def hold(self, call_id: str = "call-1", direction: str = "sendonly",
             b_formats: str = "0 8 101", b_answer: str = "recvonly") -> None:
        """A re-offers holding; B answers."""
        self.h.offer(call_id, audio_offer(*A_SDP, direction=direction))
        self.h.answer(call_id, offer(*B_SDP, formats=b_formats, direction=b_answer))

    def resume(self, call_id: str = "call-1") -> None:
        """A re-offers sendrecv; B answers sendrecv."""
        self.h.offer(call_id, audio_offer(*A_SDP))
        self.h.answer(call_id, audio_offer(*B_SDP))

    def tick(self, count: int = 1) -> list[Sent]:
        """Let C{count} frames pass, one at a time; what was sent."""
        for _ in range(count):
            self.reactor.advance(0.02)
        return self.reactor.take()

    def music(self, sent: list[Sent], port: int) -> list[RtpPacket]:
        """The packets sent out of relay port C{port} to B, parsed."""
        packets = [parse_rtp(s.data) for s in sent if s.local == port and s.destination == B_SDP]
        assert all(p is not None for p in packets)
        return packets  # type: ignore[return-value]


class HoldTests(MohCase):
    """A holds, B hears the music; resume and the end stop it."""

    def setUp(self) -> None:
        super().setUp()
        self.facing_a, self.facing_b = self.h.establish()
        self.reactor.take()

    def test_music_every_20_ms(self) -> None:
        """One PCMU packet per 20 ms to B from the port facing B: one SSRC,
        consecutive sequence numbers, timestamps 160 apart, the marker on
        the first packet only, payloads consecutive frames of the shared
        ring."""
        self.hold()
        packets = []
        for _ in range(10):
            sent = self.tick()
            self.assertEqual(len(sent), 1)
            self.assertEqual((sent[0].local, sent[0].destination), (self.facing_b, B_SDP))
            packets.extend(self.music(sent, self.facing_b))
        self.assertEqual({p.payload_type for p in packets}, {0})
        self.assertEqual(len({p.ssrc for p in packets}), 1)
        self.assertEqual([p.marker for p in packets], [True] + [False] * 9)
        first = packets[0]
        self.assertEqual([p.sequence for p in packets],
                         [(first.sequence + i) & 0xFFFF for i in range(10)])
        self.assertEqual([p.timestamp for p in packets],
                         [(first.timestamp + i * FRAME_SAMPLES) & 0xFFFFFFFF for i in range(10)])
        ring = self.moh.music.rings["PCMU"]
        start = ring.index(first.payload)
        self.assertEqual([p.payload for p in packets],
                         [ring[(start + i) % len(ring)] for i in range(10)])
        self.assertEqual(ring[0], ulaw_encode(self.moh.music.source.frames[0]))
        self.assertEqual(self.moh.counters().packets_sent, 10)

    def test_holder_not_relayed(self) -> None:
        """During the hold A's packets are counted but not relayed to B;
        B's still go to A."""
        self.hold()
        self.reactor.deliver(self.facing_a, voice(1), A_SDP)
        self.reactor.deliver(self.facing_b, voice(1, 0xB0B0), B_SDP)
        sent = self.reactor.take()
        self.assertEqual([(s.local, s.destination) for s in sent], [(self.facing_a, A_SDP)])
        self.assertEqual(self.backend.relay.ends("call-1")[0].rtp.stats.packets, 1)

    def test_resume_stops_music(self) -> None:
        """After resume: no more music, A relayed again, no timer left."""
        self.hold()
        self.assertEqual(len(self.tick(3)), 3)
        self.resume()
        self.assertEqual(self.tick(5), [])
        self.assertFalse(self.moh.timer_active)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.deliver(self.facing_a, voice(2), A_SDP)
        self.assertEqual([s.data for s in self.reactor.take()], [voice(2)])
        self.assertEqual(self.moh.counters().listeners, 0)

    def test_hold_again_new_stream_of_packets(self) -> None:
        """A second hold starts a new RTP source (new SSRC, marker)."""
        self.hold()
        first = self.music(self.tick(), self.facing_b)[0]
        self.resume()
        self.hold()
        second = self.music(self.tick(), self.facing_b)[0]
        self.assertTrue(second.marker)
        self.assertNotEqual(first.ssrc, second.ssrc)

    def test_close_during_hold(self) -> None:
        """Ending the call during the hold stops the music and the timer."""
        self.hold()
        self.tick(2)
        self.h.result(self.backend.delete("call-1"))
        self.assertEqual(self.tick(5), [])
        self.assertFalse(self.moh.timer_active)
        self.assertEqual(self.moh.counters().listeners, 0)

    def test_inactive_hold(self) -> None:
        """A holds with a=inactive, B answers a=inactive (as it must): B
        still hears the music (its answer is not a hold of its own)."""
        self.hold(direction="inactive", b_answer="inactive")
        self.assertEqual(len(self.music(self.tick(2), self.facing_b)), 2)

    def test_null_address_hold(self) -> None:
        """RFC 2543 hold (c=0.0.0.0) from A: B hears the music."""
        held = parse_sdp(audio_offer(*A_SDP).to_bytes().replace(b"IN IP4 192.0.2.10",
                                                                b"IN IP4 0.0.0.0"))
        self.h.offer("call-1", held)
        self.h.answer("call-1", audio_offer(*B_SDP))
        self.assertEqual(len(self.music(self.tick(2), self.facing_b)), 2)

    def test_b_holds_a_hears(self) -> None:
        """B holds: A hears the music, from the port facing A."""
        self.h.offer("call-1", audio_offer(*B_SDP, direction="sendonly"), side="b")
        self.h.answer("call-1", audio_offer(*A_SDP, direction="recvonly"), side="a")
        sent = self.tick(2)
        self.assertEqual([(s.local, s.destination) for s in sent], [(self.facing_a, A_SDP)] * 2)

    def test_mutual_hold(self) -> None:
        """Both hold: nobody hears music and nobody is muted; when B
        resumes, B hears the music again."""
        self.hold()
        self.tick()
        self.h.offer("call-1", offer(*B_SDP, direction="inactive"), side="b")
        self.h.answer("call-1", audio_offer(*A_SDP, direction="inactive"), side="a")
        self.assertEqual(self.tick(3), [])
        self.assertEqual([e.rtp.mute for e in self.backend.relay.ends("call-1")], [False, False])
        self.h.offer("call-1", offer(*B_SDP, direction="recvonly"), side="b")
        self.h.answer("call-1", audio_offer(*A_SDP, direction="sendonly"), side="a")
        self.assertEqual(len(self.music(self.tick(2), self.facing_b)), 2)

    def test_pcma_party_gets_pcma(self) -> None:
        """B answers the hold signalling PCMA only: payload type 8, frames
        of the A-law ring, in the same RTP source."""
        self.hold(b_formats="8 101")
        packets = self.music(self.tick(2), self.facing_b)
        self.assertEqual([p.payload_type for p in packets], [8, 8])
        self.assertEqual(len({p.ssrc for p in packets}), 1)
        ring = self.moh.music.rings["PCMA"]
        self.assertIn(packets[0].payload, ring)
        self.assertEqual(ring[0], alaw_encode(self.moh.music.source.frames[0]))

    def test_pcma_from_earlier_sdp(self) -> None:
        """B said PCMA only when the call was set up: the hold's music is
        PCMA from the first packet."""
        self.h.offer("call-2", audio_offer(*A_SDP))
        self.h.answer("call-2", offer(*B_SDP, formats="8 101"))
        self.h.offer("call-2", audio_offer(*A_SDP, direction="sendonly"))
        self.reactor.take()
        packets = [parse_rtp(s.data) for s in self.tick()]
        self.assertEqual([p.payload_type for p in packets if p is not None], [8])

    def test_dynamic_payload_type_for_pcmu(self) -> None:
        """A party that maps PCMU to a dynamic payload type gets that type."""
        self.h.offer("call-2", audio_offer(*A_SDP))
        self.h.answer("call-2", parse_sdp(offer(*B_SDP, formats="96 101").to_bytes()
                                          + b"a=rtpmap:96 PCMU/8000\r\n"))
        self.h.offer("call-2", audio_offer(*A_SDP, direction="sendonly"))
        self.reactor.take()
        packets = [parse_rtp(s.data) for s in self.tick()]
        self.assertEqual([p.payload_type for p in packets if p is not None], [96])

    def test_no_usable_codec(self) -> None:
        """B signalled neither PCMU nor PCMA: no music, counted, and A's
        media still relayed."""
        self.h.offer("call-2", audio_offer(*A_SDP))
        to_a = self.h.answer("call-2", offer(*B_SDP, formats="9 101"))
        self.h.offer("call-2", audio_offer(*A_SDP, direction="sendonly"))
        self.reactor.take()
        self.assertEqual(self.tick(3), [])
        self.assertEqual(self.moh.counters().no_codec, 1)
        self.reactor.deliver(to_a.media[0].port, voice(1), A_SDP)
        self.assertEqual(len(self.reactor.take()), 1)

    def test_stop_unmutes(self) -> None:
        """Stopping the backend stops the music and the timer and unmutes
        the holder."""
        self.hold()
        self.tick()
        holder = self.backend.relay.ends("call-1")[0].rtp
        self.assertTrue(holder.mute)
        self.h.result(self.backend.stop())
        self.assertFalse(holder.mute)
        self.assertFalse(self.moh.timer_active)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class NeverActiveTests(MohCase):
    """A call set up on hold (paging, announcements) gets no music."""

    def test_initial_sendonly(self) -> None:
        """An INVITE with a=sendonly answered recvonly: A's media is
        relayed, nobody hears music."""
        to_b = self.h.offer("call-1", audio_offer(*A_SDP, direction="sendonly"))
        to_a = self.h.answer("call-1", audio_offer(*B_SDP, direction="recvonly"))
        self.reactor.take()
        self.assertEqual(self.tick(3), [])
        self.reactor.deliver(to_a.media[0].port, voice(1), A_SDP)
        self.assertEqual([(s.local, s.data) for s in self.reactor.take()],
                         [(to_b.media[0].port, voice(1))])


class SharingTests(MohCase):
    """Many held calls: one ring, one timer."""

    options = {"first": 20000, "last": 20399}

    def test_hundred_calls_share_one_ring_and_one_timer(self) -> None:
        """100 held calls: every listener reads the same ring object, one
        delayed call drives them all, 100 packets per tick, each call its
        own SSRC."""
        for n in range(100):
            self.h.establish(f"call-{n}")
            self.hold(f"call-{n}")
        self.reactor.take()
        ring = self.moh.music.rings["PCMU"]
        listeners = [self.moh.listener_of(f"call-{n}") for n in range(100)]
        self.assertTrue(all(entry is not None and entry[1].ring is ring for entry in listeners))
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        sent = self.tick()
        self.assertEqual(len(sent), 100)
        packets = [parse_rtp(s.data) for s in sent]
        self.assertEqual(len({p.ssrc for p in packets if p is not None}), 100)
        self.assertEqual(len({p.payload for p in packets if p is not None}), 1)
        self.assertEqual(self.moh.counters().listeners, 100)


class TimingTests(MohCase):
    """The one timer keeps to absolute time."""

    def setUp(self) -> None:
        super().setUp()
        _, self.facing_b = self.h.establish()
        self.hold()
        self.reactor.take()

    def test_no_drift(self) -> None:
        """Uneven clock steps adding up to four seconds give 200 packets,
        200 timestamps 160 apart."""
        for step in [0.013, 0.031, 0.007, 0.049] * 40:
            self.reactor.advance(step)
        packets = [parse_rtp(s.data) for s in self.reactor.take()]
        self.assertEqual(len(packets), 200)
        stamps = [p.timestamp for p in packets if p is not None]
        self.assertEqual(stamps[-1] - stamps[0], 199 * FRAME_SAMPLES)

    def test_late_timer_catches_up(self) -> None:
        """A tick 60 ms late sends the three frames due, timestamps 160
        apart."""
        self.tick(1)
        self.reactor.advance(0.06)
        packets = [parse_rtp(s.data) for s in self.reactor.take()]
        stamps = [p.timestamp for p in packets if p is not None]
        self.assertEqual(len(stamps), 3)
        self.assertEqual([b - a for a, b in pairwise(stamps)], [160, 160])

    def test_very_late_timer_skips(self) -> None:
        """One second late: L{CATCH_UP} frames are sent, the rest skipped,
        and the timestamps keep to real time."""
        first = self.music(self.tick(1), self.facing_b)[0]
        self.reactor.advance(1.0)
        packets = self.music(self.reactor.take(), self.facing_b)
        self.assertEqual(len(packets), CATCH_UP)
        self.assertEqual(packets[-1].timestamp - first.timestamp, 50 * FRAME_SAMPLES)
        self.assertEqual(packets[-1].sequence - first.sequence, CATCH_UP)
        self.assertEqual(self.moh.counters().frames_skipped, 50 - CATCH_UP)


class LimitTests(SynchronousTestCase):
    """At most C{max_listeners} hear music; the others hear silence."""

    def setUp(self) -> None:
        config = SimpleNamespace(enabled=True, file="", max_listeners=1)
        self.h = RelayHarness(moh=config)
        self.moh = self.h.backend.moh
        assert self.moh is not None
        self.h.backend.start()
        self.ports = {}
        for call_id in ("call-1", "call-2"):
            self.ports[call_id] = self.h.establish(call_id)
            self.h.offer(call_id, audio_offer(*A_SDP, direction="sendonly"))
        self.h.reactor.take()

    def test_second_hears_silence_then_music(self) -> None:
        """The second hold is refused (silence, its holder muted, counted)
        and gets the freed place when the first call resumes."""
        self.h.reactor.advance(0.02)
        sent = self.h.reactor.take()
        self.assertEqual([s.local for s in sent], [self.ports["call-1"][1]])
        counters = self.moh.counters()
        self.assertEqual((counters.listeners, counters.waiting, counters.refused), (1, 1, 1))
        self.h.reactor.deliver(self.ports["call-2"][0], voice(1), A_SDP)
        self.assertEqual(self.h.reactor.take(), [])  # the holder is muted all the same
        self.h.offer("call-1", audio_offer(*A_SDP))
        self.h.reactor.advance(0.02)
        sent = self.h.reactor.take()
        self.assertEqual([s.local for s in sent], [self.ports["call-2"][1]])
        self.assertTrue(parse_rtp(sent[0].data).marker)  # type: ignore[union-attr]


class DisabledTests(SynchronousTestCase):
    """Without music on hold, holding changes nothing."""

    def test_disabled(self) -> None:
        """C{moh=False} and C{enabled = false}: no service, A still relayed."""
        for moh in (False, SimpleNamespace(enabled=False, file="", max_listeners=5)):
            h = RelayHarness(moh=moh)
            self.assertIsNone(h.backend.moh)
            facing_a, _ = h.establish()
            h.backend.start()
            h.offer("call-1", audio_offer(*A_SDP, direction="sendonly"))
            h.reactor.take()
            h.reactor.deliver(facing_a, voice(1), A_SDP)
            h.reactor.advance(0.1)
            self.assertEqual(len(h.reactor.take()), 1)


class MetricsTests(SynchronousTestCase):
    """The figures reach a Prometheus registry."""

    def test_collector(self) -> None:
        """Listeners now and packets sent, by name."""
        registry = CollectorRegistry()
        h = RelayHarness(registry=registry)
        h.establish()
        h.backend.start()
        h.offer("call-1", audio_offer(*A_SDP, direction="sendonly"))
        for _ in range(3):
            h.reactor.advance(0.02)
        self.assertEqual(registry.get_sample_value("b2bua_media_moh_listeners"), 1)
        self.assertEqual(registry.get_sample_value("b2bua_media_moh_packets_sent_total"), 3)
        self.assertEqual(registry.get_sample_value("b2bua_media_moh_no_codec_total"), 0)
        h.result(h.backend.stop())


class MusicTests(SynchronousTestCase):
    """The generated loop and the service's own checks."""

    def test_generated_loop(self) -> None:
        """Eight seconds of audible, unclipped audio that starts and ends
        near silence (the loop joins without a click)."""
        audio = generated_loop()
        samples = to_samples(audio.pcm)
        self.assertEqual(len(samples), 8 * 8000)
        peak = max(abs(s) for s in samples)
        self.assertGreater(peak, 3000)
        self.assertLess(peak, 16000)
        self.assertLess(abs(samples[0]) + abs(samples[-1]), 200)

    def test_negative_limit(self) -> None:
        """A negative limit is refused, naming the key."""
        from twisted.internet.task import Clock

        with self.assertRaises(ValueError) as caught:
            MusicOnHold(Clock(), max_listeners=-1)
        self.assertIn("media.moh.max_listeners", str(caught.exception))
