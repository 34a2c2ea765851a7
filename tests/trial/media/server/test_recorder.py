"""Tests for L{media.server.recorder}."""

from __future__ import annotations

import datetime
import io
import os
import struct
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from media.server.pcm import FRAME_BYTES
from media.server.recorder import Recorder, RecordingError, recording_path, safe_call_id
from media.server.wav import WavWriter, parse_wav, read_wav

#: 2024-03-01 12:00:05 UTC
START = 1709294405.0


def frame(value: int) -> bytes:
    """A 20 ms frame of constant samples."""
    return struct.pack("<160h", *[value] * 160)


class NamingTests(SynchronousTestCase):
    """Recording file names."""

    def test_path(self) -> None:
        """Directory, UTC day, timestamp, cleaned call id, random part."""
        when = datetime.datetime(2024, 3, 1, 12, 0, 5)
        self.assertEqual(recording_path("/rec", "a9@host/x y", when, "0a1b2c3d"),
                         Path("/rec/2024/03/01/20240301-120005-a9_host_x_y-0a1b2c3d.wav"))

    def test_safe_call_id(self) -> None:
        """No separators, no leading dots, at most 64 characters, never empty."""
        self.assertEqual(safe_call_id("../../etc/passwd"), "_.._etc_passwd")
        self.assertEqual(safe_call_id("..."), "call")
        self.assertEqual(safe_call_id(""), "call")
        self.assertEqual(len(safe_call_id("x" * 200)), 64)


class RecorderTests(SynchronousTestCase):
    """Recording frames to files."""

    def setUp(self) -> None:
        """A clock at START and an empty recording directory."""
        self.clock = Clock()
        self.clock.advance(START)
        self.directory = Path(self.mktemp())

    def create(self, mode: str = "mono", **kwargs) -> Recorder:
        """A recorder for call "c1" in C{mode}."""
        return Recorder.create(self.directory, "c1", clock=self.clock, mode=mode, **kwargs)

    def test_mono(self) -> None:
        """Mono writes one leg; None is a frame of silence; duration counted."""
        recorder = self.create()
        self.assertTrue(recorder.write(frame(5)))
        self.assertTrue(recorder.write(None))
        result = recorder.close()
        self.assertEqual(result.path.parent, self.directory / "2024" / "03" / "01")
        self.assertTrue(result.path.name.startswith("20240301-120005-c1-"))
        self.assertEqual((result.mode, result.duration_ms, result.data_bytes), ("mono", 40, 640))
        self.assertFalse(result.truncated)
        audio = read_wav(result.path)
        self.assertEqual((audio.channels, audio.pcm), (1, frame(5) + frame(0)))
        self.assertEqual(recorder.close(), result)
        self.assertFalse(recorder.write(frame(1)))
        self.assertEqual(os.stat(result.path).st_mode & 0o777, 0o640)

    def test_stereo(self) -> None:
        """Stereo puts the first leg left and the second right, silence for None."""
        recorder = self.create("stereo")
        recorder.write(frame(1), frame(-2))
        recorder.write(None, frame(3))
        result = recorder.close()
        audio = read_wav(result.path)
        self.assertEqual((audio.channels, result.duration_ms), (2, 40))
        samples = struct.unpack(f"<{len(audio.pcm) // 2}h", audio.pcm)
        self.assertEqual(samples[:4], (1, -2, 1, -2))
        self.assertEqual(samples[320:324], (0, 3, 0, 3))

    def test_mixed_saturates(self) -> None:
        """Mixed sums both legs into one channel, clamped to 16 bits."""
        recorder = self.create("mixed")
        recorder.write(frame(30000), frame(10000))
        recorder.write(frame(-100), None)
        recorder.write(None, None)
        audio = read_wav(recorder.close().path)
        self.assertEqual(audio.pcm, frame(32767) + frame(-100) + frame(0))

    def test_never_overwrites(self) -> None:
        """An existing name is skipped; the existing file keeps its content."""
        tokens = iter(["aaaa", "aaaa", "bbbb"])
        first = self.create(token=lambda: next(tokens))
        first.write(frame(7))
        first_result = first.close()
        second = self.create(token=lambda: next(tokens))
        second_result = second.close()
        self.assertNotEqual(first_result.path, second_result.path)
        self.assertTrue(second_result.path.name.endswith("-bbbb.wav"))
        self.assertEqual(read_wav(first_result.path).pcm, frame(7))

    def test_gives_up_after_attempts(self) -> None:
        """A name source that always collides ends in RecordingError."""
        self.create(token=lambda: "same").close()
        error = self.assertRaises(RecordingError, self.create, token=lambda: "same")
        self.assertIn("no free recording name", str(error))

    def test_unwritable_directory(self) -> None:
        """A directory that cannot be created is a RecordingError naming it."""
        blocker = Path(self.mktemp())
        blocker.write_bytes(b"a file, not a directory")
        error = self.assertRaises(RecordingError, Recorder.create, blocker, "c1",
                                  clock=self.clock)
        self.assertIn(str(blocker), str(error))

    def test_limit(self) -> None:
        """max_duration_ms cuts the recording to the limit and reports it."""
        recorder = self.create("stereo", max_duration_ms=30)
        self.assertTrue(recorder.write(frame(1), frame(1)))
        self.assertFalse(recorder.write(frame(1), frame(1)))
        self.assertFalse(recorder.write(frame(1), frame(1)))
        result = recorder.close()
        self.assertEqual((result.duration_ms, result.truncated), (30, True))
        self.assertEqual(read_wav(result.path).sample_count, 240)

    def test_bad_input(self) -> None:
        """Unknown modes, a second leg in mono and odd frames are refused."""
        self.assertRaises(ValueError, self.create, "surround")
        recorder = self.create()
        self.assertRaises(ValueError, recorder.write, frame(1), frame(1))
        self.assertRaises(ValueError, recorder.write, b"\0\0\0")
        stereo = self.create("stereo")
        self.assertRaises(ValueError, stereo.write, frame(1), b"\0")
        recorder.close()
        stereo.close()

    def test_write_error_reported(self) -> None:
        """A disk error stops the recorder and is reported, not raised."""
        file = _FillingFile(limit=44 + FRAME_BYTES)
        recorder = Recorder(WavWriter(file), Path("full.wav"))
        self.assertTrue(recorder.write(frame(2)))
        self.assertFalse(recorder.write(frame(3)))
        self.assertFalse(recorder.write(frame(4)))
        result = recorder.close()
        self.assertIn("No space left", result.error)
        self.assertEqual((result.duration_ms, result.data_bytes), (20, FRAME_BYTES))
        self.assertEqual(parse_wav(file.getvalue()).pcm, frame(2))

    def test_crash_leaves_readable_file(self) -> None:
        """A recording never closed still reads (sizes left at zero)."""
        recorder = self.create()
        recorder.write(frame(9))
        recorder._writer._file.flush()
        self.assertEqual(read_wav(recorder.path).pcm, frame(9))
        recorder.close()


class _FillingFile(io.BytesIO):
    """A file on a disk that fills up after C{limit} bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: bytes) -> int:
        """Refuse to grow past the limit, like ENOSPC."""
        if self.tell() + len(data) > self.limit:
            raise OSError(28, "No space left on device")
        return super().write(data)

    def close(self) -> None:
        """Keep the value readable."""
