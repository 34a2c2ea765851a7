"""Tests for L{media.server.resample}."""

from __future__ import annotations

import math
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from media.server.resample import resample


def tone(frequency: float, rate: int, seconds: float, amplitude: int = 10000) -> bytes:
    """A sine tone as 16-bit PCM."""
    count = int(rate * seconds)
    return struct.pack(f"<{count}h", *(round(amplitude * math.sin(2 * math.pi * frequency * i
                                                                   / rate)) for i in range(count)))


def samples(pcm: bytes) -> tuple[int, ...]:
    """Unpack 16-bit PCM."""
    return struct.unpack(f"<{len(pcm) // 2}h", pcm)


def correlation(values: tuple[int, ...], frequency: float, rate: int) -> float:
    """Amplitude of C{frequency} in C{values} (a one-bin DFT)."""
    re = sum(v * math.cos(2 * math.pi * frequency * i / rate) for i, v in enumerate(values))
    im = sum(v * math.sin(2 * math.pi * frequency * i / rate) for i, v in enumerate(values))
    return 2 * math.hypot(re, im) / len(values)


class ResampleTests(SynchronousTestCase):
    """Rate conversion keeps the pass band and removes what would alias."""

    def test_length(self) -> None:
        """n input samples give ceil(n * target / source) outputs."""
        self.assertEqual(len(resample(bytes(2 * 22050), 22050, 8000)), 2 * 8000)
        self.assertEqual(len(resample(bytes(2 * 441), 22050, 8000)), 2 * 160)
        self.assertEqual(len(resample(bytes(2 * 442), 22050, 8000)), 2 * 161)
        self.assertEqual(len(resample(bytes(2 * 100), 8000, 16000)), 2 * 200)

    def test_pass_band_kept(self) -> None:
        """A 1 kHz tone keeps its amplitude and frequency at 8 kHz."""
        out = samples(resample(tone(1000, 22050, 0.25), 22050, 8000))
        middle = out[100:-100]
        self.assertLess(abs(correlation(middle, 1000, 8000) - 10000), 150)
        self.assertLess(max(abs(v) for v in middle), 10200)

    def test_alias_removed(self) -> None:
        """A 6 kHz tone, above the new Nyquist limit, is filtered out instead of
        folding to 2 kHz."""
        out = samples(resample(tone(6000, 22050, 0.25), 22050, 8000))
        middle = out[100:-100]
        self.assertLess(correlation(middle, 2000, 8000), 50)
        self.assertLess(max(abs(v) for v in middle), 100)

    def test_dc_and_identity(self) -> None:
        """A constant stays constant; equal rates return the input."""
        out = samples(resample(struct.pack("<400h", *[1000] * 400), 48000, 8000))
        self.assertTrue(all(v == 1000 for v in out[10:-10]), out)
        data = struct.pack("<3h", 1, 2, 3)
        self.assertIs(resample(data, 8000, 8000), data)

    def test_bad_rates(self) -> None:
        """Rates must be positive."""
        self.assertRaises(ValueError, resample, b"", 0, 8000)
        self.assertRaises(ValueError, resample, b"", 8000, -1)

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.integers(-32768, 32767), max_size=300),
           st.sampled_from([16000, 22050, 44100, 11025]))
    def test_never_overflows(self, values: list[int], rate: int) -> None:
        """Any input (even full-scale noise) stays within 16 bits."""
        out = resample(struct.pack(f"<{len(values)}h", *values), rate, 8000)
        self.assertEqual(len(out) // 2, -(-len(values) * 8000 // rate))
