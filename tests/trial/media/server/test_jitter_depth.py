"""Tests for the running depth of L{media.server.jitter.JitterBuffer}.

The buffer keeps where its last buffered sample ends instead of scanning
its packets on every tick.  A reference buffer whose C{depth} is the scan
(what the buffer did before) is fed the same random streams (reordered,
duplicated, lost, resized packets, timestamp jumps and wraps): every frame
played, every counter and the depth after each step must be the same.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from media.server.jitter import FRAME_SAMPLES, JitterBuffer

_TS_MOD = 1 << 32
_TS_HALF = 1 << 31


class ScanningBuffer(JitterBuffer):
    """The reference: the depth by a scan of every buffered packet."""

    @property
    def depth(self) -> int:
        """Samples buffered at or after the playout point, scanned."""
        position = self._position
        if position is None or not self._packets:
            return 0
        end = max(((ts - position + _TS_HALF) % _TS_MOD) - _TS_HALF + len(pcm) // 2
                  for ts, pcm in self._packets.items())
        return max(end, 0)


def stream(rng: random.Random, steps: int) -> list[tuple[str, object]]:
    """A random script of puts and pulls around a wrapping timestamp."""
    script: list[tuple[str, object]] = []
    timestamp = rng.choice([0, _TS_MOD - 5 * FRAME_SAMPLES, rng.getrandbits(32)])
    now = 0.0
    for _ in range(steps):
        now += 0.02
        for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
            size = rng.choice([80, 160, 160, 160, 240])
            jump = rng.random()
            if jump < 0.02:
                timestamp += rng.choice([-9000, 4000, 30 * FRAME_SAMPLES])
            ts = (timestamp + rng.choice([0, 0, 0, -160, 160, 320, -480])) % _TS_MOD
            if rng.random() > 0.05:  # some are lost
                pcm = bytes([rng.getrandbits(8)]) * (2 * size)
                script.append(("put", (ts, pcm, now + rng.random() * 0.03,
                                       rng.random() < 0.03)))
            timestamp = (timestamp + size) % _TS_MOD
        script.append(("pull", None))
        if rng.random() < 0.01:
            script.append(("reset", None))
    return script


class RunningDepthTests(SynchronousTestCase):
    """The running depth against the scan."""

    def test_same_as_the_scan(self) -> None:
        """Many random streams: the same frames, counters and depth."""
        for seed in range(40):
            rng = random.Random(seed)
            fast, slow = JitterBuffer(), ScanningBuffer()
            for step, (kind, args) in enumerate(stream(rng, 400)):
                if kind == "put":
                    ts, pcm, arrival, marker = args  # type: ignore[misc]
                    self.assertEqual(fast.put(ts, pcm, arrival, marker=marker),
                                     slow.put(ts, pcm, arrival, marker=marker))
                elif kind == "pull":
                    self.assertEqual(fast.pull(), slow.pull(), (seed, step))
                else:
                    fast.reset()
                    slow.reset()
                self.assertEqual(fast.depth, slow.depth, (seed, step, kind))
            self.assertEqual(fast.counters, slow.counters)
            self.assertGreater(fast.counters.played, 100)

    def test_depth_follows_puts_and_pulls(self) -> None:
        """Three frames buffered: 480 samples; each pull takes 160."""
        buffer = JitterBuffer(min_delay=1, initial_delay=1)
        for n in range(3):
            buffer.put(1000 + n * FRAME_SAMPLES, bytes(2 * FRAME_SAMPLES), n * 0.02)
        self.assertEqual(buffer.depth, 4 * FRAME_SAMPLES)  # one frame of delay first
        buffer.pull()
        self.assertEqual(buffer.depth, 3 * FRAME_SAMPLES)
        for _ in range(3):
            buffer.pull()
        self.assertEqual(buffer.depth, 0)
        buffer.put(1000 + 4 * FRAME_SAMPLES, bytes(2 * FRAME_SAMPLES), 0.1)  # one frame gap
        self.assertEqual(buffer.depth, 2 * FRAME_SAMPLES)
