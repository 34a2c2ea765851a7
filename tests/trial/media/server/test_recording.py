"""Tests for L{media.server.recording}: whole-call and message recordings,
and the C{record} action on a real L{MediaCall}."""

from __future__ import annotations

import struct
from pathlib import Path

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from media.server.ivr import load_flow
from media.server.ivr_actions import ActionError, builtin_actions
from media.server.ivr_runtime import FlowResult, FlowRun, run_flow
from media.server.ivr_session import CallerHungUp
from media.server.pcm import to_samples
from media.server.recorder import RecordingError
from media.server.recording import (
    CallRecordings,
    RecordedMessage,
    RecordingConflict,
    header_value,
    record_action,
    register_recording_actions,
    unsafe_directory,
)
from media.server.ua_session import MediaCall
from media.server.wav import read_wav

#: 2024-03-01 12:00:05 UTC
START = 1709294405.0


def frame(value: int) -> bytes:
    """A 20 ms frame of constant samples."""
    return struct.pack("<160h", *[value] * 160)


def channels(path: Path) -> tuple[list[int], list[int]]:
    """The left and right samples of a stereo WAV file."""
    audio = read_wav(path)
    samples = list(to_samples(audio.pcm))
    return samples[0::2], samples[1::2]


class Tokens:
    """Distinct random parts for file names: t0000001, t0000002..."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"t{self.count:07d}"


class RecordingsMixin:
    """A clock and a L{CallRecordings} on a temporary directory."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.directory = Path(self.mktemp())  # type: ignore[attr-defined]
        self.recordings = CallRecordings(self.clock, self.directory, "call-1@host",
                                         token=Tokens())

    def tick(self, caller: bytes | None, prompt: bytes | None) -> None:
        """One RTP tick: the frame sent, then the frame received."""
        self.recordings.sent(prompt)
        if caller is not None:
            self.recordings.received(caller)


class WholeCallTests(RecordingsMixin, SynchronousTestCase):
    """The stereo recording of the whole call and its controls."""

    def test_stereo_channels(self) -> None:
        """Caller left, prompts right, each tick aligned; silence where a
        side had nothing."""
        self.assertEqual(self.recordings.control("start"), "recording")
        self.tick(frame(100), frame(-7))
        self.tick(None, frame(5))
        self.tick(frame(9), None)
        finished = self.recordings.close()
        self.assertEqual(len(finished), 1)
        recording = finished[0]
        self.assertEqual((recording.mode, recording.duration_ms), ("stereo", 60))
        left, right = channels(recording.path)
        self.assertEqual(left, [100] * 160 + [0] * 160 + [9] * 160)
        self.assertEqual(right, [-7] * 160 + [5] * 160 + [0] * 160)
        self.assertTrue(str(recording.path).startswith(str(self.directory / "2024/03/01")))
        self.assertIn("call-1_host", recording.path.name)

    def test_receiving_only(self) -> None:
        """Frames received with no tick sent between them (we do not send,
        e.g. on hold) are each written, with silence on the right."""
        self.recordings.control("start")
        for value in (1, 2, 3):
            self.recordings.received(frame(value))
        left, right = channels(self.recordings.close()[0].path)
        self.assertEqual(left, [1] * 160 + [2] * 160 + [3] * 160)
        self.assertEqual(set(right), {0})

    def test_pause_skips_audio(self) -> None:
        """Paused ticks are not written; resume goes on in the same file."""
        self.recordings.control("start")
        self.tick(frame(1), None)
        self.assertEqual(self.recordings.control("pause"), "paused")
        self.tick(frame(2), None)
        self.tick(frame(2), None)
        self.assertEqual(self.recordings.control("resume"), "recording")
        self.tick(frame(3), None)
        finished = self.recordings.close()
        self.assertEqual(len(finished), 1)
        left, _ = channels(finished[0].path)
        self.assertEqual(left, [1] * 160 + [3] * 160)
        self.assertEqual(finished[0].duration_ms, 40)

    def test_stop_then_start_makes_a_new_file(self) -> None:
        """C{stop} finishes the file; C{start} opens another one."""
        self.recordings.control("start")
        self.tick(frame(1), None)
        self.assertEqual(self.recordings.control("stop"), "stopped")
        self.tick(frame(2), None)
        self.assertEqual(self.recordings.control("start"), "recording")
        self.tick(frame(3), None)
        first, second = self.recordings.close()
        self.assertNotEqual(first.path, second.path)
        self.assertEqual(channels(first.path)[0], [1] * 160)
        self.assertEqual(channels(second.path)[0], [3] * 160)
        self.assertEqual(self.recordings.state, "stopped")

    def test_repeated_actions_change_nothing(self) -> None:
        """C{start} while recording, C{pause} while paused, C{stop} when
        idle: the same state, no new file."""
        self.assertEqual(self.recordings.control("stop"), "idle")
        self.recordings.control("start")
        path = self.recordings.status()["path"]
        self.assertEqual(self.recordings.control("start"), "recording")
        self.assertEqual(self.recordings.status()["path"], path)
        self.recordings.control("pause")
        self.assertEqual(self.recordings.control("pause"), "paused")
        self.assertEqual(len(list(self.directory.rglob("*.wav"))), 1)

    def test_conflicts(self) -> None:
        """Pause/resume with nothing recording, start while paused, any
        action after the end: L{RecordingConflict}; an unknown action:
        L{ValueError}."""
        for action in ("pause", "resume"):
            self.assertRaises(RecordingConflict, self.recordings.control, action)
        self.recordings.control("start")
        self.recordings.control("pause")
        self.assertRaises(RecordingConflict, self.recordings.control, "start")
        self.assertRaises(ValueError, self.recordings.control, "rewind")
        self.recordings.close()
        self.assertRaises(RecordingConflict, self.recordings.control, "start")
        self.assertRaises(RecordingConflict, self.recordings.record, 1000, "#")

    def test_status(self) -> None:
        """The state, the current file and its duration, the files finished."""
        self.assertEqual(self.recordings.status(),
                         {"state": "idle", "path": None, "duration_ms": None,
                          "recordings": []})
        self.recordings.control("start")
        self.tick(frame(1), None)
        self.tick(frame(1), None)
        status = self.recordings.status()
        self.assertEqual((status["state"], status["duration_ms"]), ("recording", 20))
        self.recordings.control("stop")
        status = self.recordings.status()
        self.assertEqual(status["path"], None)
        self.assertEqual([r["duration_ms"] for r in status["recordings"]], [40])

    def test_directory_that_cannot_be_made(self) -> None:
        """A directory that cannot be created: L{RecordingError}, state
        unchanged."""
        blocker = Path(self.mktemp())
        blocker.write_text("a file, not a directory")
        recordings = CallRecordings(self.clock, blocker / "sub", "c")
        self.assertRaises(RecordingError, recordings.control, "start")
        self.assertEqual(recordings.state, "idle")

    def test_header_value(self) -> None:
        """C{<path>;duration=<ms>}."""
        self.recordings.control("start")
        self.tick(frame(1), None)
        recording = self.recordings.close()[0]
        self.assertEqual(header_value(recording), f"{recording.path};duration=20")

    def test_unsafe_directory(self) -> None:
        """Separators of header parameters and control characters are unsafe."""
        self.assertFalse(unsafe_directory("/var/lib/b2bua/recordings"))
        for bad in ("/a;b", "/a,b", "/a\nb"):
            self.assertTrue(unsafe_directory(bad))


class MessageTests(RecordingsMixin, SynchronousTestCase):
    """Mono message recordings."""

    def test_limit(self) -> None:
        """The recording ends at C{max_ms}, firing with the file."""
        d = self.recordings.record(60, "#")
        for value in range(1, 6):
            self.tick(frame(value), None)
        message = self.successResultOf(d)
        self.assertIsInstance(message, RecordedMessage)
        self.assertEqual((message.key, message.recording.duration_ms), (None, 60))
        self.assertTrue(message.recording.truncated)
        self.assertEqual(list(to_samples(read_wav(message.recording.path).pcm)),
                         [1] * 160 + [2] * 160 + [3] * 160)
        self.assertEqual(self.recordings.finished, [message.recording])

    def test_stop_key(self) -> None:
        """A stop key ends it and is consumed; another key is not."""
        d = self.recordings.record(10_000, "#*")
        self.tick(frame(1), None)
        self.assertFalse(self.recordings.key("5"))
        self.assertNoResult(d)
        self.assertTrue(self.recordings.key("#"))
        message = self.successResultOf(d)
        self.assertEqual((message.key, message.recording.duration_ms), ("#", 20))
        self.assertFalse(self.recordings.key("#"))  # nothing records any more

    def test_one_at_a_time(self) -> None:
        """A second message while one records: L{RecordingConflict}."""
        self.recordings.record(1000, "#")
        self.assertRaises(RecordingConflict, self.recordings.record, 1000, "#")

    def test_cancel_keeps_the_file(self) -> None:
        """Cancelling (the node's timeout) closes the file, which is kept."""
        d = self.recordings.record(10_000, "#")
        self.tick(frame(4), None)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(self.recordings.finished), 1)
        self.assertEqual(self.recordings.finished[0].duration_ms, 20)
        self.recordings.record(1000, "#")  # a new one may start

    def test_hangup_fails_it(self) -> None:
        """The caller's hang-up fails the message with the error given; the
        file is kept; the whole-call file too."""
        self.recordings.control("start")
        d = self.recordings.record(10_000, "#")
        self.tick(frame(4), frame(8))
        finished = self.recordings.close(CallerHungUp())
        self.failureResultOf(d, CallerHungUp)
        self.assertEqual(sorted(r.mode for r in finished), ["mono", "stereo"])


RECORD_FLOW = """
[flow]
name = "voicemail"
start = "record"

[variables]
record_max = "{max}"
record_stop = "#"

[nodes.record]
type = "action"
action = "record"
result = "file"
timeout = 0
on_error = "failed"
next = "bye"

[nodes.bye]
type = "hangup"
cause = "recorded"

[nodes.failed]
type = "hangup"
cause = "not_recorded"
"""


class RecordActionTests(SynchronousTestCase):
    """The C{record} action in a flow run on a L{MediaCall}."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.directory = Path(self.mktemp())
        self.reasons: list[str] = []
        self.media = MediaCall(self.clock, None, end=self.reasons.append, telephone_event=True,
                               label="c1", recordings=CallRecordings(self.clock,
                                                                     self.directory, "c1"))
        self.actions = register_recording_actions(builtin_actions())

    def start(self, max_seconds: str = "1") -> tuple[FlowRun, Deferred[FlowResult]]:
        """Run the record flow with C{record_max = max_seconds}."""
        flow = load_flow(RECORD_FLOW.format(max=max_seconds), actions=self.actions)
        return run_flow(flow, self.media, actions=self.actions, clock=self.clock)

    def ticks(self, count: int, value: int = 3) -> None:
        """The RTP session's ticks: a frame sent, a frame received."""
        for _ in range(count):
            self.media.next_frame()
            self.media.audio_received(frame(value))

    def test_records_until_the_limit(self) -> None:
        """C{record_max} seconds, then the flow goes on; the variables name
        the file and its duration."""
        _, done = self.start("1")
        self.ticks(49)
        self.assertNoResult(done)
        self.ticks(1)
        result = self.successResultOf(done)
        self.assertEqual(result.detail, "recorded")
        self.assertEqual(result.variables["recording_ms"], "1000")
        self.assertEqual(result.variables["recording_key"], "")
        path = Path(result.variables["recording"])
        self.assertEqual(result.variables["file"], str(path))
        self.assertEqual(read_wav(path).duration_ms, 1000)
        self.assertEqual(set(to_samples(read_wav(path).pcm)), {3})

    def test_stop_key(self) -> None:
        """The stop key ends the recording early and is not buffered."""
        _, done = self.start("60")
        self.ticks(10)
        self.media.digit_received("#")
        result = self.successResultOf(done)
        self.assertEqual((result.variables["recording_ms"], result.variables["recording_key"]),
                         ("200", "#"))

    def test_bad_record_max(self) -> None:
        """A bad C{record_max} takes C{on_error} naming it; nothing recorded."""
        _, done = self.start("0")
        result = self.successResultOf(done)
        self.assertEqual(result.detail, "not_recorded")
        self.assertIn("record_max", result.variables["last_error"])
        self.assertEqual(list(self.directory.rglob("*.wav")), [])

    def test_cannot_record(self) -> None:
        """A session without recordings (or that cannot record at all)
        takes C{on_error}."""
        self.media.recordings = None
        _, done = self.start("1")
        self.assertIn("not configured", self.successResultOf(done).variables["last_error"])
        self.assertRaises(ActionError, record_action, object(), {})

    def test_hangup_during_recording(self) -> None:
        """The caller hangs up while recording: the run ends C{caller_hangup}
        and the file is kept."""
        _, done = self.start("60")
        self.ticks(5)
        self.media.caller_hung_up()
        self.assertEqual(self.successResultOf(done).outcome, "caller_hangup")
        files = self.media.close_recordings()
        self.assertEqual([r.duration_ms for r in files], [100])
