"""ITU-T G.711 µ-law and A-law (the RTP payloads PCMU and PCMA).

Audio inside the media server is 8 kHz, 16-bit signed linear PCM,
little-endian.  This module converts it to and from the 8-bit G.711 codes
that travel in RTP (RFC 3551 4.5.14).

The quantisation is exactly G.711's, on the 16-bit scale of the ITU-T
G.191 reference implementation: µ-law reads the top 14 bits of a sample,
A-law the top 13, and both decode to the midpoint of the code's interval
(µ-law 0xFF and 0x7F decode to 0, the largest codes to +-32124; A-law 0xD5
decodes to +8, 0x55 to -8, the largest codes to +-32256).  Negative samples
are taken in one's complement, as G.711 does, so -1 is the smallest
negative magnitude rather than the positive zero.

Speed matters (a frame every 20 ms per call), so everything is table
driven: decoding is two C{bytes.translate} calls (low and high byte of each
sample) interleaved by slice assignment, and encoding is one lookup per
sample in a 65536-entry table done by C{operator.itemgetter}.  A 20 ms
frame encodes in a few microseconds and decodes in well under one.

Prompts are played again and again, so their frames are L{PcmFrame}s: PCM
that keeps its encoding in each law once made (L{PcmFrame.encoded}); the
RTP session encodes a prompt frame once for all the calls that play it.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable
from operator import itemgetter
from typing import NamedTuple

__all__ = [
    "PCMA",
    "PCMU",
    "SUPPORTED",
    "G711Codec",
    "PcmFrame",
    "alaw_decode",
    "alaw_encode",
    "alaw_to_linear",
    "linear_to_alaw",
    "linear_to_ulaw",
    "ulaw_decode",
    "ulaw_encode",
    "ulaw_to_linear",
]

#: µ-law: bias added to the 14-bit magnitude, and its clip value.
_ULAW_BIAS = 33
_ULAW_CLIP = 0x1FFF
#: A-law inverts the even bits of every code.
_ALAW_TOGGLE = 0x55


def _ulaw_code(sample: int) -> int:
    """The µ-law code of one 16-bit sample (the G.711 decision rule)."""
    if sample < 0:
        sign = 0x00
        magnitude = (~sample) >> 2
    else:
        sign = 0x80
        magnitude = sample >> 2
    biased = min(magnitude + _ULAW_BIAS, _ULAW_CLIP)
    exponent = max(biased.bit_length() - 6, 0)
    mantissa = (biased >> (exponent + 1)) & 0x0F
    return (~((exponent << 4) | mantissa) & 0x7F) | sign


def _ulaw_value(code: int) -> int:
    """The 16-bit sample a µ-law code stands for."""
    inverted = ~code & 0xFF
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if inverted & 0x80 else magnitude


def _alaw_code(sample: int) -> int:
    """The A-law code of one 16-bit sample (the G.711 decision rule)."""
    if sample < 0:
        sign = 0x00
        magnitude = (~sample) >> 4
    else:
        sign = 0x80
        magnitude = sample >> 4
    if magnitude > 0x0F:
        exponent = magnitude.bit_length() - 4
        magnitude = (exponent << 4) | ((magnitude >> (exponent - 1)) & 0x0F)
    return (magnitude | sign) ^ _ALAW_TOGGLE


def _alaw_value(code: int) -> int:
    """The 16-bit sample an A-law code stands for."""
    toggled = code ^ _ALAW_TOGGLE
    exponent = (toggled >> 4) & 0x07
    mantissa = toggled & 0x0F
    magnitude = (mantissa << 4) + 8
    if exponent:
        magnitude = (magnitude + 0x100) << (exponent - 1)
    return magnitude if toggled & 0x80 else -magnitude


def _signed(index: int) -> int:
    """A 16-bit pattern read as a two's-complement sample."""
    return index - 0x10000 if index & 0x8000 else index


_ULAW_VALUES = tuple(_ulaw_value(code) for code in range(256))
_ALAW_VALUES = tuple(_alaw_value(code) for code in range(256))
# Decoding: the low and the high byte of each code's little-endian sample.
_ULAW_LOW = bytes(value & 0xFF for value in _ULAW_VALUES)
_ULAW_HIGH = bytes((value >> 8) & 0xFF for value in _ULAW_VALUES)
_ALAW_LOW = bytes(value & 0xFF for value in _ALAW_VALUES)
_ALAW_HIGH = bytes((value >> 8) & 0xFF for value in _ALAW_VALUES)
# Encoding: the code of every 16-bit pattern (index = sample & 0xFFFF).
_ULAW_CODES = bytes(_ulaw_code(_signed(index)) for index in range(0x10000))
_ALAW_CODES = bytes(_alaw_code(_signed(index)) for index in range(0x10000))

_NATIVE_LITTLE = sys.byteorder == "little"


def _samples(pcm: bytes | bytearray | memoryview) -> memoryview | array[int]:
    """The samples of little-endian PCM as unsigned 16-bit patterns."""
    if len(pcm) % 2:
        raise ValueError(f"16-bit PCM needs an even number of bytes, not {len(pcm)}")
    if _NATIVE_LITTLE:
        return memoryview(pcm).cast("B").cast("H")
    samples = array("H")
    samples.frombytes(bytes(pcm))
    samples.byteswap()
    return samples


def _encode(pcm: bytes | bytearray | memoryview, table: bytes) -> bytes:
    """Look every sample of C{pcm} up in an encoding table."""
    samples = _samples(pcm)
    count = len(samples)
    if count > 1:
        return bytes(itemgetter(*samples)(table))
    if count == 1:
        return bytes((table[samples[0]],))
    return b""


def _decode(codes: bytes | bytearray | memoryview, low: bytes, high: bytes) -> bytes:
    """Expand codes to little-endian samples through two byte tables."""
    data = bytes(codes)
    out = bytearray(2 * len(data))
    out[0::2] = data.translate(low)
    out[1::2] = data.translate(high)
    return bytes(out)


def ulaw_encode(pcm: bytes | bytearray | memoryview) -> bytes:
    """Encode linear PCM to µ-law.

    @param pcm: 16-bit signed little-endian samples.
    @return: one µ-law code per sample.
    @raise ValueError: when C{pcm} has an odd number of bytes.
    """
    return _encode(pcm, _ULAW_CODES)


def alaw_encode(pcm: bytes | bytearray | memoryview) -> bytes:
    """Encode linear PCM to A-law.

    @param pcm: 16-bit signed little-endian samples.
    @return: one A-law code per sample.
    @raise ValueError: when C{pcm} has an odd number of bytes.
    """
    return _encode(pcm, _ALAW_CODES)


def ulaw_decode(codes: bytes | bytearray | memoryview) -> bytes:
    """Decode µ-law to linear PCM.

    @param codes: µ-law codes, one per sample.
    @return: 16-bit signed little-endian samples (twice as many bytes).
    """
    return _decode(codes, _ULAW_LOW, _ULAW_HIGH)


def alaw_decode(codes: bytes | bytearray | memoryview) -> bytes:
    """Decode A-law to linear PCM.

    @param codes: A-law codes, one per sample.
    @return: 16-bit signed little-endian samples (twice as many bytes).
    """
    return _decode(codes, _ALAW_LOW, _ALAW_HIGH)


def linear_to_ulaw(sample: int) -> int:
    """The µ-law code of one sample.

    @param sample: -32768..32767.
    @return: the code, 0..255.
    @raise ValueError: for a sample out of range.
    """
    if not -0x8000 <= sample <= 0x7FFF:
        raise ValueError(f"not a 16-bit sample: {sample}")
    return _ULAW_CODES[sample & 0xFFFF]


def linear_to_alaw(sample: int) -> int:
    """The A-law code of one sample.

    @param sample: -32768..32767.
    @return: the code, 0..255.
    @raise ValueError: for a sample out of range.
    """
    if not -0x8000 <= sample <= 0x7FFF:
        raise ValueError(f"not a 16-bit sample: {sample}")
    return _ALAW_CODES[sample & 0xFFFF]


def ulaw_to_linear(code: int) -> int:
    """The sample a µ-law code decodes to.

    @param code: 0..255.
    @return: the 16-bit sample.
    """
    return _ULAW_VALUES[code]


def alaw_to_linear(code: int) -> int:
    """The sample an A-law code decodes to.

    @param code: 0..255.
    @return: the 16-bit sample.
    """
    return _ALAW_VALUES[code]


class G711Codec(NamedTuple):
    """One G.711 law as an RTP payload format.

    @ivar name: the RTP encoding name (C{PCMU} or C{PCMA}).
    @ivar payload_type: its static payload type (RFC 3551).
    @ivar encode: linear PCM -> codes.
    @ivar decode: codes -> linear PCM.
    @ivar silence: the code of a zero sample (what a silent packet holds).
    """

    name: str
    payload_type: int
    encode: Callable[[bytes | bytearray | memoryview], bytes]
    decode: Callable[[bytes | bytearray | memoryview], bytes]
    silence: int


class PcmFrame(bytes):
    """A frame of linear PCM that is played many times (a prompt's): it
    keeps its G.711 codes per law, made on first use.

    It is C{bytes} in every other respect, so whoever passes frames on
    (recorders, mixers) needs to know nothing of it.
    """

    def encoded(self, codec: G711Codec) -> bytes:
        """This frame in C{codec}'s law (encoded once, then kept)."""
        cache = self.__dict__
        codes = cache.get(codec.name)
        if codes is None:
            codes = cache[codec.name] = codec.encode(self)
        return codes  # type: ignore[no-any-return]


PCMU = G711Codec("PCMU", 0, ulaw_encode, ulaw_decode, _ULAW_CODES[0])
PCMA = G711Codec("PCMA", 8, alaw_encode, alaw_decode, _ALAW_CODES[0])

#: The codecs the media server speaks, by upper-case encoding name.
SUPPORTED: dict[str, G711Codec] = {PCMU.name: PCMU, PCMA.name: PCMA}
