"""Relay port leak test: many calls with every kind of ending, then the
port pool must be full again and every socket closed."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.sdp import parse_sdp
from media.interfaces import MediaUnavailable, UnknownCall
from tests.trial.media.support import A_SDP, B_SDP, RelayHarness, audio_offer, crlf, t38_offer

VIDEO = crlf("""
m=video 51372 RTP/AVP 96
a=rtpmap:96 H264/90000
""")
PACKET = b"\x80\x00\x00\x01" + bytes(160)


class LeakTests(SynchronousTestCase):
    """Every call end returns every port."""

    def run_scenarios(self, h: RelayHarness, rounds: int) -> None:
        """Run each kind of call C{rounds} times, ending them all."""
        backend = h.backend
        for n in range(rounds):
            # Answered, media both ways, hung up.
            facing_a, facing_b = h.establish(f"answered-{n}")
            h.reactor.deliver(facing_a, PACKET, A_SDP)
            h.reactor.deliver(facing_b, PACKET, B_SDP)
            backend.delete(f"answered-{n}")
            # Never answered (cancelled, rejected, timed out).
            h.offer(f"unanswered-{n}", audio_offer(*A_SDP))
            backend.delete(f"unanswered-{n}")
            # Re-INVITEs: B moves, video added, video removed, T.38.
            call = f"reinvite-{n}"
            h.establish(call)
            h.offer(call, audio_offer("198.51.100.9", 7000 + n), side="b")
            h.answer(call, audio_offer(*A_SDP), side="a")
            with_video = parse_sdp(audio_offer(*A_SDP).to_bytes() + VIDEO)
            h.offer(call, with_video)
            h.answer(call, parse_sdp(audio_offer(*B_SDP).to_bytes() + VIDEO))
            h.offer(call, parse_sdp(with_video.to_bytes().replace(b"m=video 51372", b"m=video 0")))
            h.offer(call, t38_offer(), side="b")
            backend.delete(call)
            # The answerer rejects every line.
            h.offer(f"rejected-{n}", audio_offer(*A_SDP))
            rejected = parse_sdp(
                audio_offer(*B_SDP).to_bytes().replace(b"m=audio 6000", b"m=audio 0")
            )
            h.answer(f"rejected-{n}", rejected)
            backend.delete(f"rejected-{n}")
            # An offer with every line disabled, deleted twice.
            h.offer(
                f"empty-{n}",
                parse_sdp(audio_offer().to_bytes().replace(b"m=audio 49170", b"m=audio 0")),
            )
            backend.delete(f"empty-{n}")
            backend.delete(f"empty-{n}")
            # An answer for a call that is not there.
            self.failureResultOf(backend.answer(f"ghost-{n}", "f", "t", audio_offer()), UnknownCall)

    def assert_full(self, h: RelayHarness) -> None:
        """Every pair free, every socket closed, no timer left."""
        pool = h.backend.relay.pool
        self.assertEqual((pool.in_use, pool.free), (0, pool.capacity))
        self.assertEqual(h.reactor.ports, {})
        self.assertEqual(h.backend.stats().calls, 0)
        self.assertEqual(h.reactor.getDelayedCalls(), [])

    def test_every_ending(self) -> None:
        """200 rounds of every kind of call."""
        h = RelayHarness()
        self.run_scenarios(h, 200)
        self.assert_full(h)

    def test_closes_that_take_time(self) -> None:
        """With sockets that close later (the real reactor), ports come back
        only once closed, and all of them do."""
        h = RelayHarness(first=20000, last=21999)
        h.reactor.deferred_closes = True
        self.run_scenarios(h, 10)
        self.assertGreater(h.backend.relay.pool.in_use, 0)
        h.reactor.finish_closes()
        self.assert_full(h)

    def test_failure_during_offer(self) -> None:
        """Offers failing for want of ports (first offers and re-offers)
        leave nothing behind, again and again."""
        h = RelayHarness(first=20000, last=20011)  # 6 pairs: 3 calls
        for n in range(50):
            h.establish("x")
            h.establish("y", a=("192.0.2.11", 4000))
            partial = parse_sdp(audio_offer().to_bytes() + VIDEO + VIDEO)
            self.failureResultOf(h.backend.offer(f"z-{n}", "f", partial), MediaUnavailable)
            h.establish("z")
            self.failureResultOf(
                h.backend.offer("z", "f", parse_sdp(audio_offer().to_bytes() + VIDEO)),
                MediaUnavailable,
            )
            for call in ("x", "y", "z"):
                h.backend.delete(call)
        self.assert_full(h)
        self.assertEqual(h.backend.stats().ports_exhausted, 100)

    def test_stop_with_calls_up(self) -> None:
        """Shutdown with calls in every state returns every port."""
        h = RelayHarness()
        h.establish("up")
        h.offer("ringing", audio_offer())
        h.establish("t38")
        h.offer("t38", t38_offer(), side="b")
        h.backend.stop()
        self.assert_full(h)
