"""Linear PCM helpers shared by the media-server pieces.

Audio inside the media server is 8 kHz, 16-bit signed linear PCM,
little-endian, in 20 ms frames of 160 samples (320 bytes).  The helpers here
turn such bytes into C{array("h")} sample arrays and back, and add signals
with saturation, so the player, the recorder and the mixer agree on one
representation without a third-party dependency.
"""

from __future__ import annotations

import sys
from array import array
from itertools import repeat
from operator import add

#: Samples per second inside the media server.
RATE = 8000
#: Samples in one 20 ms frame.
FRAME_SAMPLES = 160
#: Bytes in one 20 ms frame of 16-bit mono PCM.
FRAME_BYTES = FRAME_SAMPLES * 2
#: Milliseconds in one frame.
FRAME_MS = 20
#: The largest and smallest 16-bit sample values.
MAX_SAMPLE = 32767
MIN_SAMPLE = -32768

#: One frame of digital silence.
SILENCE_FRAME = bytes(FRAME_BYTES)

_BIG_ENDIAN = sys.byteorder == "big"


def to_samples(data: bytes) -> array:
    """Return the little-endian 16-bit PCM C{data} as an C{array("h")}.

    @raise ValueError: when C{data} has an odd number of bytes.
    """
    if len(data) % 2:
        raise ValueError(f"16-bit PCM needs an even number of bytes, got {len(data)}")
    samples = array("h")
    samples.frombytes(data)
    if _BIG_ENDIAN:
        samples.byteswap()
    return samples


def to_bytes(samples: array) -> bytes:
    """Return the C{array("h")} C{samples} as little-endian 16-bit PCM bytes."""
    if _BIG_ENDIAN:
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def saturate(values: list[int]) -> array:
    """Clamp integer C{values} to the 16-bit range and return an C{array("h")}."""
    return array(
        "h", map(min, repeat(MAX_SAMPLE), map(max, repeat(MIN_SAMPLE), values))
    )


def mix(frames: list[bytes]) -> bytes:
    """Return the saturated sum of equal-length PCM C{frames} as bytes.

    An empty list gives an empty result; frames of different lengths are
    mixed over the length of the longest, the shorter ones padded with
    silence.
    """
    if not frames:
        return b""
    if len(frames) == 1:
        return frames[0]
    length = max(len(frame) for frame in frames)
    total = [0] * (length // 2)
    for frame in frames:
        total = list(map(add, total, to_samples(frame.ljust(length, b"\0"))))
    return to_bytes(saturate(total))

