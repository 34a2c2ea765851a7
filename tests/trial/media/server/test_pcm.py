"""Tests for L{media.server.pcm}."""

from __future__ import annotations

import struct

from twisted.trial.unittest import SynchronousTestCase

from media.server.pcm import FRAME_BYTES, SILENCE_FRAME, mix, saturate, to_bytes, to_samples


class PcmTests(SynchronousTestCase):
    """Sample conversion and saturating mix."""

    def test_round_trip(self) -> None:
        """Bytes to samples and back; little-endian whatever the host."""
        data = struct.pack("<3h", 1, -2, 32767)
        self.assertEqual(list(to_samples(data)), [1, -2, 32767])
        self.assertEqual(to_bytes(to_samples(data)), data)
        self.assertRaises(ValueError, to_samples, b"\0")

    def test_saturate(self) -> None:
        """Values clamp to the 16-bit range."""
        self.assertEqual(list(saturate([40000, -40000, 5])), [32767, -32768, 5])

    def test_mix(self) -> None:
        """Frames add with saturation; shorter ones are padded."""
        a = struct.pack("<2h", 30000, 1)
        b = struct.pack("<3h", 30000, 2, 3)
        self.assertEqual(mix([a, b]), struct.pack("<3h", 32767, 3, 3))
        self.assertEqual(mix([a]), a)
        self.assertEqual(mix([]), b"")
        self.assertEqual(len(SILENCE_FRAME), FRAME_BYTES)
