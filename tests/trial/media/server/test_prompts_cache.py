"""Tests for the kept frames of prompts: cut once per shift, encoded once
per law (L{media.server.wav.Audio.frames_at}, L{media.server.g711.PcmFrame},
the L{media.server.prompts.Player} and the RTP session using them)."""

from __future__ import annotations

import random
import struct

from twisted.trial.unittest import SynchronousTestCase

from media.server.g711 import PCMA, PCMU, PcmFrame, alaw_encode, ulaw_encode
from media.server.prompts import Player
from media.server.rtp_packet import parse_rtp
from media.server.rtp_session import RtpSession
from media.server.wav import MAX_SHIFTS, Audio
from tests.trial.media.support import FakeUDPReactor

FRAME = 320


def ramp(samples: int, start: int = 0) -> Audio:
    """Mono audio whose every sample differs from its neighbours."""
    return Audio(struct.pack(f"<{samples}h", *(((start + i) * 37) % 30000 - 15000
                                               for i in range(samples))))


class FramesAtTests(SynchronousTestCase):
    """L{Audio.frames_at}."""

    def test_frames_at_each_shift(self) -> None:
        """The whole frames starting at the shift, kept: asked again, the
        very same objects."""
        audio = ramp(1000)  # 2000 bytes
        for shift in (0, 2, 160, 318):
            frames = audio.frames_at(shift)
            expected = [audio.pcm[i:i + FRAME] for i in range(shift, 2000 - FRAME + 1, FRAME)]
            self.assertEqual(list(frames), expected)
            self.assertTrue(all(type(f) is PcmFrame for f in frames))
            self.assertIs(audio.frames_at(shift), frames)

    def test_bad_shift(self) -> None:
        """Odd, negative or whole-frame shifts, and stereo audio, are refused."""
        audio = ramp(400)
        for shift in (1, -2, 320):
            self.assertRaises(ValueError, audio.frames_at, shift)
        self.assertRaises(ValueError, Audio(bytes(640), channels=2).frames_at, 0)

    def test_audio_equality_ignores_the_cache(self) -> None:
        """Two equal audios stay equal (and hash alike) once one has frames kept."""
        one, two = ramp(500), ramp(500)
        one.frames_at(0)
        self.assertEqual(one, two)
        self.assertEqual(hash(one), hash(two))


class PcmFrameTests(SynchronousTestCase):
    """L{PcmFrame.encoded}."""

    def test_encoded_once_per_law(self) -> None:
        """Each law encodes the frame once; it stays equal to its bytes."""
        calls: list[str] = []

        def counting(law, encode):  # type: ignore[no-untyped-def]
            def run(pcm):  # type: ignore[no-untyped-def]
                calls.append(law)
                return encode(pcm)
            return run

        ulaw = PCMU._replace(encode=counting("u", ulaw_encode))
        alaw = PCMA._replace(encode=counting("a", alaw_encode))
        frame = PcmFrame(ramp(160).pcm)
        for _ in range(3):
            self.assertEqual(frame.encoded(ulaw), ulaw_encode(frame))
            self.assertEqual(frame.encoded(alaw), alaw_encode(frame))
        self.assertEqual(calls, ["u", "a"])
        self.assertEqual(frame, ramp(160).pcm)


class PlayerCacheTests(SynchronousTestCase):
    """The player hands out kept frames and still joins prompts sample to sample."""

    def test_same_audio_as_joining(self) -> None:
        """Random prompt lengths: the frames are the concatenation cut in
        320-byte frames, the last padded, as before the cache."""
        rng = random.Random(3)
        for _ in range(50):
            pieces = [ramp(rng.randrange(1, 900), rng.randrange(1000))
                      for _ in range(rng.randrange(1, 5))]
            joined = b"".join(p.pcm for p in pieces)
            expected = [joined[i:i + FRAME].ljust(FRAME, b"\0")
                        for i in range(0, len(joined), FRAME)]
            self.assertEqual(list(Player(pieces)), expected)

    def test_second_play_reuses_frames(self) -> None:
        """Playing a prompt again hands out the same frame objects (nothing
        cut or copied); frames across two prompts are fresh."""
        hello, world = ramp(800), ramp(490, 5)  # 1600 and 980 bytes
        first = list(Player([hello, world]))
        second = list(Player([hello, world]))
        self.assertEqual(first, second)
        kept = [a is b for a, b in zip(first, second, strict=True)]
        # hello: five whole frames; world starts at shift 0: three whole frames
        # (980 = 3 x 320 + 20), then the padded tail
        self.assertEqual(kept, [True] * 5 + [True] * 3 + [False])
        shifted = list(Player([ramp(100), hello]))  # hello now starts at byte 200
        self.assertIs(shifted[1], hello.frames_at(120)[0])


class SessionEncodingTests(SynchronousTestCase):
    """The RTP session sends a kept frame's kept encoding."""

    def test_prompt_frame_encoded_once_for_many_sessions(self) -> None:
        """Two sessions playing the same prompt frames encode each frame
        once in all; what goes out is the frame in the session's law."""
        calls: list[int] = []

        def counting(pcm):  # type: ignore[no-untyped-def]
            calls.append(len(pcm))
            return ulaw_encode(pcm)

        codec = PCMU._replace(encode=counting)
        prompt = ramp(160 * 4)
        frames = prompt.frames_at(0)
        reactor = FakeUDPReactor()
        sessions = []
        for n in range(2):
            feed = iter(frames)
            session = RtpSession(reactor, codec, remote=("192.0.2.1", 4000 + 2 * n),
                                 source=lambda feed=feed: next(feed, None),
                                 rng=random.Random(n))
            session.listen(30000 + 2 * n)
            session.start()
            sessions.append(session)
        for _ in range(3):
            reactor.advance(0.02)
        payloads = {}
        for sent in reactor.sent:
            packet = parse_rtp(sent.data)
            if packet is not None:
                payloads.setdefault(sent.local, []).append(packet.payload)
        for port in (30000, 30002):
            self.assertEqual(payloads[port], [ulaw_encode(f) for f in frames])
        self.assertEqual(calls, [FRAME] * 4)
        for session in sessions:
            session.stop()
        self.assertEqual(reactor.getDelayedCalls(), [])


class BoundTests(SynchronousTestCase):
    """The shifts kept per audio are bounded."""

    def test_shifts_bounded(self) -> None:
        """Past L{MAX_SHIFTS} shifts nothing more is kept; a player then
        cuts its frames itself, with the same audio."""
        audio = ramp(2000)
        for shift in range(0, 2 * MAX_SHIFTS, 2):
            self.assertIsNotNone(audio.frames_at(shift))
        self.assertIsNone(audio.frames_at(2 * MAX_SHIFTS))
        self.assertIsNotNone(audio.frames_at(0))  # kept ones are still there
        lead = ramp(MAX_SHIFTS + 1)  # puts the audio at a shift not kept
        frames = list(Player([lead, audio]))
        joined = lead.pcm + audio.pcm
        self.assertEqual(frames, [joined[i:i + FRAME].ljust(FRAME, b"\0")
                                  for i in range(0, len(joined), FRAME)])
