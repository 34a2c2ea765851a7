"""Tests for L{media.server.mixer}: the N-party mix and shared sources."""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from media.server.mixer import Mixer, SharedSource, SharedSources
from media.server.pcm import FRAME_BYTES, SILENCE_FRAME
from media.server.wav import Audio, write_wav


def frame(*values: int) -> bytes:
    """A 160-sample frame: C{values} repeated to fill it."""
    samples = (list(values) * 160)[:160]
    return struct.pack("<160h", *samples)


def unpack(data: bytes) -> tuple[int, ...]:
    """The samples of a frame."""
    return struct.unpack(f"<{len(data) // 2}h", data)


class MixerTests(SynchronousTestCase):
    """Everybody hears everybody else, never itself."""

    def test_three_way(self) -> None:
        """Each of three parties hears the sum of the two others."""
        mixer = Mixer()
        for key in ("a", "b", "c"):
            mixer.join(key)
        out = mixer.mix({"a": frame(100), "b": frame(20), "c": frame(3)})
        self.assertEqual(out, {"a": frame(23), "b": frame(103), "c": frame(120)})

    def test_saturation_before_not_after(self) -> None:
        """Sums clamp at 16 bits, but one's own loud signal is removed exactly."""
        mixer = Mixer()
        for key in ("a", "b", "c"):
            mixer.join(key)
        out = mixer.mix({"a": frame(30000), "b": frame(30000), "c": frame(-5)})
        self.assertEqual(out["c"], frame(32767))
        self.assertEqual(out["a"], frame(29995))
        out = mixer.mix({"a": frame(-30000), "b": frame(-30000), "c": None})
        self.assertEqual(out["c"], frame(-32768))

    def test_silence_and_single_speaker(self) -> None:
        """No speaker: silence for all; one speaker: the others get its frame."""
        mixer = Mixer()
        mixer.join("a")
        mixer.join("b")
        self.assertEqual(mixer.mix({}), {"a": SILENCE_FRAME, "b": SILENCE_FRAME})
        speech = frame(1, 2, 3)
        self.assertEqual(mixer.mix({"a": speech, "b": None}), {"a": SILENCE_FRAME, "b": speech})

    def test_join_leave(self) -> None:
        """Participants come and go; late frames of leavers are ignored."""
        mixer = Mixer()
        mixer.join("a")
        mixer.join("b")
        self.assertRaises(ValueError, mixer.join, "a")
        self.assertTrue(mixer.leave("b"))
        self.assertFalse(mixer.leave("b"))
        self.assertEqual((len(mixer), "a" in mixer, "b" in mixer), (1, True, False))
        self.assertEqual(mixer.mix({"a": frame(5), "b": frame(9)}), {"a": SILENCE_FRAME})

    def test_mute_and_listen_only(self) -> None:
        """A muted participant is not heard; a speak-only one gets nothing."""
        mixer = Mixer()
        mixer.join("a")
        mixer.join("b")
        mixer.join("announcer", hears=False)
        mixer.participant("b").speaks = False
        out = mixer.mix({"a": frame(10), "b": frame(1000), "announcer": frame(1)})
        self.assertEqual(out, {"a": frame(1), "b": frame(11)})
        self.assertRaises(KeyError, mixer.participant, "zz")

    def test_short_and_bad_frames(self) -> None:
        """Short frames are padded with silence; long or odd ones are refused."""
        mixer = Mixer()
        mixer.join("a")
        mixer.join("b")
        mixer.join("c")
        out = mixer.mix({"a": struct.pack("<2h", 7, 7), "b": frame(1), "c": None})
        self.assertEqual(unpack(out["c"])[:3], (8, 8, 1))
        self.assertEqual(len(out["c"]), FRAME_BYTES)
        self.assertRaises(ValueError, mixer.mix, {"a": bytes(FRAME_BYTES + 2)})
        self.assertRaises(ValueError, mixer.mix, {"a": bytes(3)})

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.one_of(st.none(), st.lists(st.integers(-32768, 32767), min_size=160,
                                                  max_size=160)), min_size=1, max_size=6))
    def test_matches_naive_mix(self, inputs: list[list[int] | None]) -> None:
        """For any inputs, each output is the clamped sum of the other inputs."""
        mixer = Mixer()
        frames = {}
        for index, values in enumerate(inputs):
            mixer.join(index)
            frames[index] = None if values is None else struct.pack("<160h", *values)
        out = mixer.mix(frames)
        for index in range(len(inputs)):
            expected = []
            for sample in range(160):
                total = sum(values[sample] for other, values in enumerate(inputs)
                            if other != index and values is not None)
                expected.append(max(-32768, min(32767, total)))
            self.assertEqual(unpack(out[index]), tuple(expected))


class SharedSourceTests(SynchronousTestCase):
    """Music on hold: decoded once, looping, shared."""

    def setUp(self) -> None:
        """A clock and a three-frame source whose frames are 1, 2, 3."""
        self.clock = Clock()
        pcm = frame(1) + frame(2) + struct.pack("<80h", *[3] * 80)
        self.source = SharedSource(Audio(pcm), self.clock, "moh")

    def test_loops(self) -> None:
        """A listener reads the frames in order, looping; the tail is padded."""
        cursor = self.source.listen()
        read = [cursor.next_frame() for _ in range(4)]
        self.assertEqual(read[:2], [frame(1), frame(2)])
        self.assertEqual(read[2], struct.pack("<80h", *[3] * 80) + bytes(160))
        self.assertEqual(read[3], frame(1))

    def test_new_listener_joins_common_position(self) -> None:
        """A listener that starts later starts where the broadcast is now."""
        first = self.source.listen()
        self.clock.advance(0.02)
        self.clock.advance(0.02)
        self.assertEqual(self.source.position(), 2)
        late = self.source.listen()
        self.assertEqual(late.next_frame()[:2], struct.pack("<h", 3))
        self.assertEqual(first.next_frame(), frame(1))
        self.clock.advance(0.06 * 1000)
        self.assertEqual(self.source.position(), 2)
        self.assertEqual(self.source.listeners, 2)

    def test_frames_are_shared(self) -> None:
        """Listeners get the very same bytes objects: no copy per listener."""
        cursors = [self.source.listen() for _ in range(100)]
        firsts = {id(cursor.next_frame()) for cursor in cursors}
        self.assertEqual(len(firsts), 1)

    def test_close(self) -> None:
        """A closed cursor reads silence and is no longer counted."""
        cursor = self.source.listen()
        cursor.close()
        cursor.close()
        self.assertEqual((self.source.listeners, cursor.next_frame()), (0, SILENCE_FRAME))

    def test_empty_refused(self) -> None:
        """A source without audio is refused."""
        self.assertRaises(ValueError, SharedSource, Audio(b""), self.clock)

    def test_library_decodes_once(self) -> None:
        """SharedSources hands out one source per file and unloads idle ones."""
        directory = Path(self.mktemp())
        directory.mkdir()
        write_wav(directory / "moh.wav", frame(4) * 2)
        sources = SharedSources(self.clock)
        first = sources.get(directory / "moh.wav")
        self.assertIs(sources.get(str(directory / "." / "moh.wav")), first)
        cursor = first.listen()
        self.assertEqual(cursor.next_frame(), frame(4))
        self.assertEqual(sources.unload_idle(), [])
        cursor.close()
        self.assertEqual(sources.unload_idle(), [(directory / "moh.wav").resolve()])
        self.assertIsNot(sources.get(directory / "moh.wav"), first)
