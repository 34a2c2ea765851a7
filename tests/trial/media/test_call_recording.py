"""Tests for L{media.call_recording}: G.711 RTP from the relay's taps placed
by timestamp into WAV files (loss, reordering, SSRC changes, PCMU and
PCMA, pause, stop and start), and the several-producers CDR helpers."""

from __future__ import annotations

import math
import struct
from array import array
from pathlib import Path

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from media.call_recording import (
    REORDER_WINDOW,
    ChannelPlacement,
    RecordingMetrics,
    RelayCallRecorder,
    add_recording,
    add_recording_wait,
    recording_waits,
    rtp_audio,
)
from media.rtp import rtp_packet
from media.server.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from media.server.recorder import RecordingError
from media.server.recording import RecordingConflict
from media.server.wav import read_wav

SSRC_A, SSRC_B = 0xA11CE, 0xB0B


def tone(frequency: float, samples: int, amplitude: int = 8000, start: int = 0) -> bytes:
    """A sine as 16-bit PCM, from sample C{start} of the wave on."""
    step = 2 * math.pi * frequency / 8000
    return array("h", (round(amplitude * math.sin(step * n))
                       for n in range(start, start + samples))).tobytes()


def level(value: int, samples: int = 160) -> bytes:
    """A constant 16-bit PCM block."""
    return array("h", [value] * samples).tobytes()


def g711(pcm: bytes, payload_type: int = 0) -> bytes:
    """The payload of C{pcm} in PCMU (0) or PCMA (8)."""
    return ulaw_encode(pcm) if payload_type == 0 else alaw_encode(pcm)


def heard(pcm: bytes, payload_type: int = 0) -> bytes:
    """What C{pcm} decodes to after a G.711 round trip."""
    return ulaw_decode(ulaw_encode(pcm)) if payload_type == 0 else alaw_decode(alaw_encode(pcm))


def packet(seq: int, timestamp: int, pcm: bytes, ssrc: int = SSRC_A,
           payload_type: int = 0) -> bytes:
    """An RTP packet of C{pcm}."""
    return rtp_packet(payload_type, seq, timestamp, ssrc, g711(pcm, payload_type))


def samples(pcm: bytes) -> list[int]:
    """16-bit PCM as integers."""
    return list(array("h", pcm))


class RtpAudioTests(SynchronousTestCase):
    """L{rtp_audio} finds G.711 payloads and refuses the rest."""

    def test_plain(self) -> None:
        """Payload type, timestamp, SSRC and the payload's bounds."""
        data = rtp_packet(8, 1, 1234, 99, b"abc")
        self.assertEqual(rtp_audio(data), (8, 1234, 99, 12, 15))

    def test_csrc_extension_padding(self) -> None:
        """CSRCs, a header extension and padding are skipped."""
        header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, 0, 7, 160, 5)
        csrcs = struct.pack("!II", 1, 2)
        extension = struct.pack("!HH", 0xBEDE, 1) + b"\0\0\0\0"
        data = header + csrcs + extension + b"PAYLOAD" + b"\0\0\3"
        parsed = rtp_audio(data)
        assert parsed is not None
        self.assertEqual(data[parsed[3]:parsed[4]], b"PAYLOAD")

    def test_refused(self) -> None:
        """Telephone-event, other types, RTCP, version 1, short or empty
        packets are not audio to record."""
        for data in (rtp_packet(101, 1, 0, 5, b"\x01\x0a\x00\xa0"), rtp_packet(18, 1, 0, 5, b"x"),
                     rtp_packet(0, 1, 0, 5, b""), b"\x80\xc8" + bytes(26),
                     b"\x40" + rtp_packet(0, 1, 0, 5, b"x")[1:], b"\x80\x00"):
            self.assertIsNone(rtp_audio(data), data)


class PlacementTests(SynchronousTestCase):
    """L{ChannelPlacement}: each packet where its timestamp says."""

    def setUp(self) -> None:
        self.channel = ChannelPlacement()
        self.blocks = [level(1000 * (n + 1)) for n in range(6)]

    def test_in_order(self) -> None:
        """Consecutive packets make consecutive audio from the first one's
        arrival on."""
        for n, block in enumerate(self.blocks[:3]):
            self.channel.place(packet(n, 5000 + 160 * n, block), 800 + 160 * n + (n % 2) * 30)
        self.assertEqual(self.channel.take(800), bytes(1600))
        self.assertEqual(self.channel.take(480), b"".join(heard(b) for b in self.blocks[:3]))
        self.assertEqual(self.channel.packets, 3)

    def test_loss_is_silence(self) -> None:
        """A lost packet leaves 20 ms of silence between its neighbours."""
        self.channel.place(packet(1, 0, self.blocks[0]), 0)
        self.channel.place(packet(3, 320, self.blocks[2]), 320)
        self.assertEqual(self.channel.take(480),
                         heard(self.blocks[0]) + bytes(320) + heard(self.blocks[2]))

    def test_reordered(self) -> None:
        """Packets arriving out of order are put back in order."""
        order = [0, 2, 1, 4, 3, 5]
        for n in order:
            self.channel.place(packet(n, 160 * n, self.blocks[n]), 160 * order.index(n))
        self.assertEqual(self.channel.take(960), b"".join(heard(b) for b in self.blocks))

    def test_late_after_written(self) -> None:
        """A packet whose place was written already is dropped and counted;
        one that overlaps the written part keeps its tail."""
        self.channel.place(packet(1, 0, self.blocks[0]), 0)
        self.channel.take(400)  # written up to sample 400
        self.channel.place(packet(2, 160, self.blocks[1]), 420)  # samples 160..319: too late
        self.channel.place(packet(3, 320, self.blocks[2]), 420)  # 320..479: tail 400..479
        self.assertEqual(self.channel.late, 1)
        self.assertEqual(self.channel.take(80), heard(self.blocks[2])[160:])

    def test_ssrc_change(self) -> None:
        """A new source is placed where it arrives, whatever its timestamps."""
        self.channel.place(packet(1, 0, self.blocks[0]), 0)
        self.channel.place(packet(900, 0x7FFF0000, self.blocks[1], ssrc=77), 480)
        self.channel.place(packet(901, 0x7FFF00A0, self.blocks[2], ssrc=77), 640)
        self.assertEqual(self.channel.take(800), heard(self.blocks[0]) + bytes(640)
                         + heard(self.blocks[1]) + heard(self.blocks[2]))
        self.assertEqual(self.channel.resyncs, 1)

    def test_timestamp_jump_resyncs(self) -> None:
        """A timestamp far from the packet's arrival (the sender restarted
        its clock) starts a new placement at the arrival."""
        self.channel.place(packet(1, 0, self.blocks[0]), 0)
        self.channel.place(packet(2, 8000 * 60, self.blocks[1]), 160)
        self.assertEqual(self.channel.take(320), heard(self.blocks[0]) + heard(self.blocks[1]))
        self.assertEqual(self.channel.resyncs, 1)

    def test_timestamp_wraps(self) -> None:
        """The 32-bit timestamp wraps around without a jump."""
        self.channel.place(packet(1, 0xFFFFFF60, self.blocks[0]), 0)
        self.channel.place(packet(2, 0, self.blocks[1]), 160)
        self.assertEqual(self.channel.take(320), heard(self.blocks[0]) + heard(self.blocks[1]))
        self.assertEqual(self.channel.resyncs, 0)

    def test_pcma_and_skipped(self) -> None:
        """PCMA is decoded as A-law; telephone-event is skipped."""
        self.channel.place(packet(1, 0, self.blocks[0], payload_type=8), 0)
        self.channel.place(rtp_packet(101, 2, 160, SSRC_A, b"\x01\x0a\x00\xa0"), 160)
        self.assertEqual(self.channel.take(320), heard(self.blocks[0], 8) + bytes(320))
        self.assertEqual((self.channel.packets, self.channel.skipped), (1, 1))


class Phones:
    """Two phones sending 20 ms of G.711 every 20 ms into a recorder's
    taps, on a clock."""

    def __init__(self, clock: Clock, recorder: RelayCallRecorder) -> None:
        self.clock = clock
        self.recorder = recorder
        self.sequence = {"a": 0, "b": 0}

    def talk(self, milliseconds: int, a: float | None = 1000, b: float | None = 400,
             payload_type: int = 0) -> None:
        """Both phones send tones (C{None}: that phone sends nothing)."""
        for _ in range(milliseconds // 20):
            for side, frequency, tap, ssrc in (("a", a, self.recorder.tap_a, SSRC_A),
                                               ("b", b, self.recorder.tap_b, SSRC_B)):
                n = self.sequence[side]
                self.sequence[side] += 1
                if frequency is not None:
                    pcm = tone(frequency, 160, start=160 * n)
                    tap(packet(n, 160 * n, pcm, ssrc, payload_type), self.clock.seconds())
            self.clock.advance(0.02)


def dominant(pcm: list[int], low: int = 200, high: int = 3000) -> int:
    """The strongest frequency in 10 Hz steps (a plain DFT probe)."""
    def power(frequency: int) -> float:
        step = 2 * math.pi * frequency / 8000
        re = sum(s * math.cos(step * n) for n, s in enumerate(pcm))
        im = sum(s * math.sin(step * n) for n, s in enumerate(pcm))
        return re * re + im * im
    return max(range(low, high + 1, 10), key=power)


class RecorderTests(SynchronousTestCase):
    """L{RelayCallRecorder}: files, modes, states."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.directory = Path(self.mktemp())
        self.registry = CollectorRegistry()
        self.metrics = RecordingMetrics(self.registry)
        names = iter(f"{n:08x}" for n in range(100))
        self.recorder = RelayCallRecorder(self.clock, self.directory, "call-1@host",
                                          metrics=self.metrics, token=lambda: next(names))
        self.phones = Phones(self.clock, self.recorder)

    def tearDown(self) -> None:
        self.recorder.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def metric(self, name: str) -> float:
        value = self.registry.get_sample_value(name)
        return 0.0 if value is None else value

    def test_stereo(self) -> None:
        """A on the left, B on the right, about as long as recorded; the
        file is written while the call goes on, not only at the end."""
        self.assertEqual(self.recorder.control("start"), "recording")
        self.phones.talk(2100)
        path = Path(str(self.recorder.status()["path"]))
        # flushed at 1 s and 2 s: 1.8 s written, of which at most a buffer's worth
        # (8 kB) may still wait in the file object
        self.assertGreater(path.stat().st_size, 44 + 4 * 8000)
        self.recorder.control("stop")
        (recording,) = self.recorder.finished
        audio = read_wav(recording.path)
        self.assertEqual(audio.channels, 2)
        self.assertTrue(2090 <= recording.duration_ms <= 2300, recording.duration_ms)
        left = samples(audio.pcm)[0::2]
        right = samples(audio.pcm)[1::2]
        self.assertEqual(dominant(left[800:2400]), 1000)
        self.assertEqual(dominant(right[800:2400]), 400)
        self.assertEqual(recording.path.parent, self.directory / "2023" / "11" / "14")
        self.assertIn("call-1_host", recording.path.name)
        self.assertEqual(self.metric("b2bua_media_call_recordings_started_total"), 1)
        self.assertEqual(self.metric("b2bua_media_call_recordings_finished_total"), 1)
        self.assertEqual(self.metric("b2bua_media_call_recording_bytes_total"),
                         recording.data_bytes)

    def test_timeline_aligned(self) -> None:
        """The sample a packet lands on is its arrival's: B starting to
        talk a second late starts a second into the right channel."""
        self.recorder.control("start")
        self.phones.talk(1000, b=None)
        self.phones.talk(1000)
        self.recorder.control("stop")
        audio = read_wav(self.recorder.finished[0].path)
        right = samples(audio.pcm)[1::2]
        first = next(n for n, s in enumerate(right) if s != 0)
        self.assertTrue(7990 <= first <= 8010, first)

    def test_mixed_and_one_side(self) -> None:
        """Mixed is one channel with both tones; C{a} and C{b} one party."""
        for mode, expected in (("mixed", {1000, 400}), ("a", {1000}), ("b", {400})):
            self.recorder.control("start", mode)
            self.phones.talk(600, payload_type=8)
            self.recorder.control("stop")
            recording = self.recorder.finished[-1]
            audio = read_wav(recording.path)
            self.assertEqual(audio.channels, 1, mode)
            pcm = samples(audio.pcm)[400:2000]
            found = {dominant(pcm)}
            if mode == "mixed":
                found.add(dominant(pcm, 200, 700))
            self.assertEqual(found, expected, mode)
        self.assertEqual([r["mode"] for r in self.recorder.status()["recordings"]],  # type: ignore[index, union-attr]
                         ["mixed", "a", "b"])

    def test_pause_writes_nothing(self) -> None:
        """A paused recording writes nothing: the file is as long as the
        time recorded, and what was said during the pause is not in it."""
        self.recorder.control("start")
        self.phones.talk(1000)
        self.assertEqual(self.recorder.control("pause"), "paused")
        self.assertEqual(self.recorder.control("pause"), "paused")
        self.phones.talk(3000, a=2000, b=2000)
        self.assertEqual(self.recorder.control("resume"), "recording")
        self.phones.talk(1000)
        self.recorder.control("stop")
        (recording,) = self.recorder.finished
        self.assertTrue(1990 <= recording.duration_ms <= 2250, recording.duration_ms)
        left = samples(read_wav(recording.path).pcm)[0::2]
        for start in range(0, len(left) - 800, 800):
            window = left[start:start + 800]
            if any(window):
                self.assertNotEqual(dominant(window), 2000)

    def test_stop_then_start_new_file(self) -> None:
        """C{stop} closes the file; C{start} opens another; C{stop} when
        stopped is harmless."""
        self.recorder.control("start")
        self.phones.talk(500)
        self.assertEqual(self.recorder.control("stop"), "stopped")
        self.assertEqual(self.recorder.control("stop"), "stopped")
        self.phones.talk(500)
        self.recorder.control("start")
        self.phones.talk(500)
        self.recorder.close()
        paths = [r.path for r in self.recorder.finished]
        self.assertEqual(len(set(paths)), 2)
        self.assertTrue(all(p.exists() for p in paths))

    def test_conflicts(self) -> None:
        """Pause with nothing recording, start while paused, a bad mode or
        action, anything after the call: refused."""
        self.assertRaises(RecordingConflict, self.recorder.control, "pause")
        self.assertRaises(RecordingConflict, self.recorder.control, "resume")
        self.assertRaises(ValueError, self.recorder.control, "start", "quad")
        self.assertRaises(ValueError, self.recorder.control, "rewind")
        self.recorder.control("start")
        self.recorder.control("pause")
        self.assertRaises(RecordingConflict, self.recorder.control, "start")
        self.recorder.close()
        self.assertRaises(RecordingConflict, self.recorder.control, "resume")
        self.assertEqual(self.recorder.state, "stopped")

    def test_close_returns_modes(self) -> None:
        """L{RelayCallRecorder.close} reports every file with its mode; the
        packets still in the reorder window go into the file."""
        self.recorder.control("start", "a")
        self.phones.talk(400)
        (entry,) = self.recorder.close()
        self.assertEqual(entry[1], "a")
        self.assertGreaterEqual(entry[0].duration_ms, 400)
        self.assertEqual(self.recorder.close(), [entry])

    def test_cannot_create(self) -> None:
        """A directory that cannot be made: RecordingError, counted."""
        blocker = Path(self.mktemp())
        blocker.write_bytes(b"")
        recorder = RelayCallRecorder(self.clock, blocker / "sub", "c", metrics=self.metrics)
        self.assertRaises(RecordingError, recorder.control, "start")
        self.assertEqual(recorder.state, "idle")
        self.assertEqual(self.metric("b2bua_media_call_recordings_failed_total"), 1)

    def test_write_error_stops(self) -> None:
        """A write error stops the recording (the file keeps what it had),
        counted as failed."""
        self.recorder.control("start")
        self.phones.talk(1500)
        writer = self.recorder._recorder._writer  # type: ignore[union-attr]

        def full(pcm: bytes) -> None:
            raise OSError(28, "No space left on device")

        writer._file.write = full  # type: ignore[method-assign]
        self.phones.talk(1500)
        self.assertEqual(self.recorder.state, "stopped")
        self.assertEqual(self.metric("b2bua_media_call_recordings_failed_total"), 1)
        self.flushLoggedErrors()

    def test_window(self) -> None:
        """The timer writes only what is older than the reorder window."""
        self.assertEqual(REORDER_WINDOW, 0.2)
        self.recorder.control("start")
        self.phones.talk(1100)
        # flushed at the first 20 ms step from 1 s on: up to 0.2 s before it
        self.assertIn(self.recorder.status()["duration_ms"], range(800, 821))
        self.phones.talk(1000)
        self.assertIn(self.recorder.status()["duration_ms"], range(1800, 1821))


class ProducerTests(SynchronousTestCase):
    """The helpers several recording producers share."""

    class Call:
        def __init__(self) -> None:
            self.data: dict[str, object] = {}

    def test_add_and_wait(self) -> None:
        """Files and waits accumulate; a single Deferred is read as one."""
        call = self.Call()
        self.assertEqual(recording_waits(call), [])
        add_recording(call, "/r/1.wav", "stereo", 1500, "relay")
        first: Deferred[None] = Deferred()
        second: Deferred[None] = Deferred()
        add_recording_wait(call, first)
        add_recording_wait(call, second)
        self.assertEqual(call.data["recordings"], [
            {"path": "/r/1.wav", "mode": "stereo", "duration_ms": 1500, "source": "relay"}])
        self.assertEqual(recording_waits(call), [first, second])
        call.data["recordings_settled"] = first
        self.assertEqual(recording_waits(call), [first])
