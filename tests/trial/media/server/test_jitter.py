"""Tests for L{media.server.jitter}: the receive jitter buffer."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from media.server.jitter import (
    FRAME_BYTES,
    FRAME_SAMPLES,
    RESYNC_BEHIND,
    SHRINK_AFTER,
    JitterBuffer,
)

SILENCE = bytes(FRAME_BYTES)
BASE = 1_000_000


def frame(n: int, samples: int = FRAME_SAMPLES) -> bytes:
    """A recognisable frame: every sample holds C{n + 1}."""
    return struct.pack(f"<{samples}h", *([n + 1] * samples))


def ts(n: int) -> int:
    """The RTP timestamp of frame C{n}."""
    return (BASE + n * FRAME_SAMPLES) % (1 << 32)


def drain(buffer: JitterBuffer, count: int) -> list[bytes | None]:
    """C{count} ticks of playout."""
    return [buffer.pull() for _ in range(count)]


class PlayoutTests(SynchronousTestCase):
    """Start-up, order and silence."""

    def test_nothing_before_first_packet(self) -> None:
        """Before any packet, a tick delivers nothing."""
        buffer = JitterBuffer()
        self.assertIsNone(buffer.pull())
        self.assertFalse(buffer.started)

    def test_initial_delay(self) -> None:
        """The first packet plays after the target delay (in frames)."""
        buffer = JitterBuffer(initial_delay=3)
        buffer.put(ts(0), frame(0), 0.0)
        out = []
        for n in range(6):
            if n:
                buffer.put(ts(n), frame(n), n * 0.02)
            out.append(buffer.pull())
        self.assertEqual(out, [SILENCE] * 3 + [frame(0), frame(1), frame(2)])
        self.assertEqual(buffer.counters.silent, 3)
        self.assertEqual(buffer.counters.played, 3)

    def test_reordering(self) -> None:
        """Packets arriving out of order play in timestamp order."""
        buffer = JitterBuffer(min_delay=1, initial_delay=3, max_delay=10)
        for n in (0, 2, 1, 4, 3, 5):
            buffer.put(ts(n), frame(n), 0.0)
        self.assertEqual(drain(buffer, 9), [SILENCE] * 3 + [frame(n) for n in range(6)])

    def test_loss_concealed(self) -> None:
        """A lost packet becomes one silent frame; the stream goes on."""
        buffer = JitterBuffer(initial_delay=2)
        for n in (0, 1, 3, 4):
            buffer.put(ts(n), frame(n), 0.0)
        out = drain(buffer, 7)
        self.assertEqual(out, [SILENCE] * 2 + [frame(0), frame(1), SILENCE, frame(3), frame(4)])

    def test_late_dropped(self) -> None:
        """A packet whose time has passed is dropped and counted."""
        buffer = JitterBuffer(initial_delay=2)
        buffer.put(ts(0), frame(0), 0.0)
        buffer.put(ts(2), frame(2), 0.0)
        drain(buffer, 4)  # two silent, frame 0, frame 1 concealed
        self.assertFalse(buffer.put(ts(1), frame(1), 0.1))
        self.assertEqual(buffer.counters.late, 1)
        self.assertEqual(buffer.pull(), frame(2))

    def test_duplicate_dropped(self) -> None:
        """A second copy of a buffered packet is dropped and counted."""
        buffer = JitterBuffer(initial_delay=2)
        self.assertTrue(buffer.put(ts(0), frame(0), 0.0))
        self.assertFalse(buffer.put(ts(0), frame(7), 0.0))
        self.assertEqual(buffer.counters.duplicates, 1)
        self.assertEqual(drain(buffer, 3)[2], frame(0))

    def test_empty_buffer_holds(self) -> None:
        """While nothing is buffered the playout point waits, so a packet
        that comes late (but not too late) still plays whole."""
        buffer = JitterBuffer(initial_delay=1, min_delay=1)
        buffer.put(ts(0), frame(0), 0.0)
        self.assertEqual(drain(buffer, 2), [SILENCE, frame(0)])
        self.assertEqual(drain(buffer, 3), [SILENCE] * 3)
        position = buffer.position
        self.assertEqual(position, ts(1))
        self.assertTrue(buffer.put(ts(1), frame(1), 0.1))
        self.assertEqual(buffer.pull(), frame(1))

    def test_odd_packet_sizes(self) -> None:
        """30 ms and 10 ms packets are cut into 20 ms frames."""
        buffer = JitterBuffer(initial_delay=1, min_delay=1)
        long = frame(5, 240)
        buffer.put(BASE, long, 0.0)
        buffer.put(BASE + 240, frame(6, 80), 0.0)
        out = drain(buffer, 3)
        self.assertEqual(out[0], SILENCE)
        self.assertEqual(out[1], long[:FRAME_BYTES])
        self.assertEqual(out[2], long[FRAME_BYTES:] + frame(6, 80))
        # Everything was consumed: the buffer is empty and holds its place.
        position = buffer.position
        self.assertEqual(drain(buffer, 2), [SILENCE, SILENCE])
        self.assertEqual(buffer.position, position)

    def test_partial_gap(self) -> None:
        """A frame only half covered is half audio, half silence."""
        buffer = JitterBuffer(initial_delay=1, min_delay=1)
        buffer.put(BASE, frame(0, 80), 0.0)
        buffer.put(BASE + 320, frame(1), 0.0)
        out = drain(buffer, 3)
        self.assertEqual(out[1], frame(0, 80) + bytes(160))

    def test_timestamp_wrap(self) -> None:
        """Timestamps wrapping past 2**32 keep their order."""
        buffer = JitterBuffer(initial_delay=1, min_delay=1)
        start = (1 << 32) - 2 * FRAME_SAMPLES
        stamps = [(start + n * FRAME_SAMPLES) % (1 << 32) for n in range(4)]
        for n in (0, 2, 1, 3):
            buffer.put(stamps[n], frame(n), 0.0)
        self.assertEqual(drain(buffer, 5), [SILENCE] + [frame(n) for n in range(4)])

    def test_reset(self) -> None:
        """After a reset the buffer waits for a new first packet."""
        buffer = JitterBuffer()
        buffer.put(ts(0), frame(0), 0.0)
        buffer.reset()
        self.assertIsNone(buffer.pull())
        self.assertEqual(buffer.depth, 0)

    def test_bad_delays(self) -> None:
        """Delays out of order are refused."""
        self.assertRaises(ValueError, JitterBuffer, min_delay=0)
        self.assertRaises(ValueError, JitterBuffer, min_delay=4, initial_delay=3)
        self.assertRaises(ValueError, JitterBuffer, initial_delay=11, max_delay=10)


class AdaptationTests(SynchronousTestCase):
    """Re-anchoring, growth and shrinking."""

    def test_marker_reanchors_on_empty_buffer(self) -> None:
        """A talkspurt (marker) after silence plays after the target
        delay, however far its timestamp jumped."""
        buffer = JitterBuffer(initial_delay=2)
        buffer.put(ts(0), frame(0), 0.0)
        drain(buffer, 3)
        buffer.put(ts(100), frame(100), 2.0, marker=True)
        self.assertEqual(drain(buffer, 3), [SILENCE, SILENCE, frame(100)])
        self.assertEqual(buffer.counters.resyncs, 1)

    def test_jump_ahead_reanchors(self) -> None:
        """A timestamp beyond the largest delay re-anchors even without a
        marker, dropping what was buffered."""
        buffer = JitterBuffer(initial_delay=2, max_delay=5)
        buffer.put(ts(0), frame(0), 0.0)
        buffer.put(ts(1), frame(1), 0.0)
        buffer.put(ts(50), frame(50), 0.02)
        self.assertEqual(drain(buffer, 3), [SILENCE, SILENCE, frame(50)])

    def test_restart_behind_reanchors(self) -> None:
        """A timestamp far behind the playout point (the sender restarted)
        re-anchors instead of being dropped as late."""
        buffer = JitterBuffer(initial_delay=2)
        buffer.put(ts(1000), frame(0), 0.0)
        drain(buffer, 3)
        self.assertTrue(buffer.put(ts(1000) - RESYNC_BEHIND - 800, frame(9), 0.1))
        self.assertEqual(drain(buffer, 3)[2], frame(9))

    def test_shrinks_when_too_full(self) -> None:
        """When more than target + 1 frames stay buffered, frames are
        discarded until the delay is back in bounds."""
        buffer = JitterBuffer(min_delay=2, initial_delay=2, max_delay=10)
        for n in range(8):  # a burst: 8 frames at once
            buffer.put(ts(n), frame(n), 0.0)
        drain(buffer, 2)
        sent = 8
        for _ in range(SHRINK_AFTER * 3):
            buffer.put(ts(sent), frame(sent), 0.0)
            sent += 1
            buffer.pull()
        self.assertGreater(buffer.counters.discarded, 0)
        self.assertLessEqual(buffer.depth, (buffer.target + 1) * FRAME_SAMPLES)

    def test_target_follows_jitter(self) -> None:
        """Irregular arrivals raise the target delay, regular ones keep it
        at the minimum."""
        steady = JitterBuffer(min_delay=2, initial_delay=3, max_delay=10)
        shaky = JitterBuffer(min_delay=2, initial_delay=3, max_delay=10)
        for n in range(200):
            steady.put(ts(n), frame(n), n * 0.02)
            shaky.put(ts(n), frame(n), n * 0.02 + (0.06 if n % 2 else 0.0))
            steady.pull()
            shaky.pull()
        self.assertEqual(steady.target, 2)
        self.assertGreater(shaky.jitter, 300)
        self.assertGreaterEqual(shaky.target, 6)


class PropertyTests(SynchronousTestCase):
    """Whatever the arrival order, loss and duplication."""

    @given(
        st.permutations(range(12)),
        st.sets(st.integers(0, 11), max_size=4),
        st.sets(st.integers(0, 11), max_size=3),
    )
    def test_frames_in_order(self, order: list[int], lost: set[int], copies: set[int]) -> None:
        """With all packets in the buffer before playout (and within its
        reach), the output is every frame in order, silence for the lost
        ones, whatever the order and duplicates of arrival."""
        buffer = JitterBuffer(min_delay=1, initial_delay=12, max_delay=24)
        for n in order:
            if n in lost:
                continue
            buffer.put(ts(n), frame(n), 0.0)
            if n in copies:
                buffer.put(ts(n), frame(n), 0.0)
        out = [f for f in drain(buffer, 40) if f is not None]
        audio = [f for f in out if f != SILENCE]
        self.assertEqual(audio, [frame(n) for n in range(12) if n not in lost])
        self.assertTrue(all(len(f) == FRAME_BYTES for f in out))
        self.assertEqual(buffer.counters.duplicates, len(copies - lost))
