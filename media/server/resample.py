"""Sample-rate conversion of 16-bit mono PCM, in pure Python.

The media server runs at 8000 Hz, while text-to-speech engines and most
recorded files come at 16000, 22050, 44100 or 48000 Hz.  L{resample}
converts between any two integer rates with a polyphase windowed-sinc
filter: the ratio is reduced to C{up/down}, one set of filter taps is
precomputed per output phase, and each output sample is one dot product
(C{sum(map(mul, ...))}, which runs in C).  The cut-off sits at 90% of the
lower Nyquist frequency (3.6 kHz for 8000 Hz output), so downsampling does
not alias, and each phase is normalised to unity gain at DC.

It is meant for offline work (preparing prompts and music on hold), not for
the 20 ms path: a second of speech converts in a few hundredths of a second.
"""

from __future__ import annotations

import math
from array import array
from functools import lru_cache
from operator import mul

from media.server.pcm import saturate, to_bytes, to_samples

__all__ = ["resample"]

#: Filter taps on each side of the interpolated instant.
HALF_TAPS = 20
#: Cut-off as a fraction of the lower of the two Nyquist frequencies.
CUTOFF = 0.9


def _blackman(x: float) -> float:
    """The Blackman window on [-1, 1] (zero outside)."""
    if abs(x) >= 1.0:
        return 0.0
    angle = math.pi * (x + 1.0)
    return 0.42 - 0.5 * math.cos(angle) + 0.08 * math.cos(2.0 * angle)


@lru_cache(maxsize=8)
def _phases(up: int, down: int) -> tuple[tuple[float, ...], ...]:
    """Return the taps of every output phase for the ratio C{up/down}."""
    cutoff = CUTOFF * min(1.0, up / down)
    phases = []
    for phase in range(up):
        offset = phase / up
        taps = []
        for j in range(-HALF_TAPS + 1, HALF_TAPS + 1):
            x = j - offset
            sinc = 1.0 if x == 0 else math.sin(math.pi * cutoff * x) / (math.pi * cutoff * x)
            taps.append(cutoff * sinc * _blackman(x / HALF_TAPS))
        total = sum(taps)
        phases.append(tuple(tap / total for tap in taps))
    return tuple(phases)


def resample(pcm: bytes, source_rate: int, target_rate: int) -> bytes:
    """Convert 16-bit little-endian mono C{pcm} from C{source_rate} to C{target_rate}.

    @return: the converted samples, C{ceil(n * target / source)} of them
        for C{n} input samples, clamped to the 16-bit range.
    @raise ValueError: for a rate that is not a positive integer.
    """
    if source_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {source_rate} and {target_rate}")
    if source_rate == target_rate:
        return pcm
    divisor = math.gcd(source_rate, target_rate)
    up, down = target_rate // divisor, source_rate // divisor
    phases = _phases(up, down)
    samples = to_samples(pcm)
    padded = array("d", bytes(8 * HALF_TAPS))
    padded.extend(map(float, samples))
    padded.extend(array("d", bytes(8 * HALF_TAPS)))
    count = -(-len(samples) * up // down)
    out = []
    width = 2 * HALF_TAPS
    for n in range(count):
        position = n * down
        k, phase = divmod(position, up)
        # taps j = -HALF_TAPS+1 .. HALF_TAPS around input sample k (shifted by the padding)
        start = k + 1
        out.append(round(sum(map(mul, phases[phase], padded[start:start + width]))))
    return to_bytes(saturate(out))
