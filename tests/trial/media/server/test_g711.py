"""Tests for L{media.server.g711}: G.711 µ-law and A-law."""

from __future__ import annotations

import itertools
import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from media.server.g711 import (
    PCMA,
    PCMU,
    SUPPORTED,
    alaw_decode,
    alaw_encode,
    alaw_to_linear,
    linear_to_alaw,
    linear_to_ulaw,
    ulaw_decode,
    ulaw_encode,
    ulaw_to_linear,
)

ALL_SAMPLES = range(-32768, 32768)
ALL_PCM = struct.pack("<65536h", *ALL_SAMPLES)

#: The first sixteen µ-law codes (0x00-0x0F) as every G.711 table lists them.
ULAW_FIRST_ROW = [
    -32124, -31100, -30076, -29052, -28028, -27004, -25980, -24956,
    -23932, -22908, -21884, -20860, -19836, -18812, -17788, -16764,
]  # fmt: skip
#: The first sixteen A-law codes (0x00-0x0F): the even bits are inverted,
#: so they do not run in order.
ALAW_FIRST_ROW = [
    -5504, -5248, -6016, -5760, -4480, -4224, -4992, -4736,
    -7552, -7296, -8064, -7808, -6528, -6272, -7040, -6784,
]  # fmt: skip


def reference_ulaw(sample: int) -> int:
    """µ-law encoding written the way ITU-T G.191 states it (a segment
    search by shifting), independent of the module's bit-length form."""
    magnitude = ((~sample) >> 2) if sample < 0 else (sample >> 2)
    magnitude += 33
    if magnitude > 0x1FFF:
        magnitude = 0x1FFF
    rest = magnitude >> 6
    segment = 1
    while rest:
        segment += 1
        rest >>= 1
    high = 8 - segment
    low = 15 - ((magnitude >> segment) & 0x0F)
    code = (high << 4) | low
    return code | 0x80 if sample >= 0 else code


def reference_alaw(sample: int) -> int:
    """A-law encoding written the way ITU-T G.191 states it."""
    value = ((~sample) >> 4) if sample < 0 else (sample >> 4)
    if value > 15:
        exponent = 1
        while value > 31:
            value >>= 1
            exponent += 1
        value = value - 16 + (exponent << 4)
    if sample >= 0:
        value |= 0x80
    return value ^ 0x55


def ulaw_step(code: int) -> int:
    """The quantisation step of a µ-law code's segment (16-bit scale)."""
    return 8 << ((~code >> 4) & 7)


def alaw_step(code: int) -> int:
    """The quantisation step of an A-law code's segment (16-bit scale)."""
    exponent = ((code ^ 0x55) >> 4) & 7
    return 16 << max(exponent - 1, 0)


class KnownValueTests(SynchronousTestCase):
    """Values from the G.711 tables."""

    def test_ulaw_zero_codes(self) -> None:
        """µ-law 0xFF and 0x7F (positive and negative zero) decode to 0."""
        self.assertEqual(ulaw_to_linear(0xFF), 0)
        self.assertEqual(ulaw_to_linear(0x7F), 0)

    def test_ulaw_extremes(self) -> None:
        """The loudest µ-law codes decode to +-32124."""
        self.assertEqual(ulaw_to_linear(0x80), 32124)
        self.assertEqual(ulaw_to_linear(0x00), -32124)

    def test_ulaw_first_row(self) -> None:
        """Codes 0x00-0x0F decode as the published table says."""
        self.assertEqual([ulaw_to_linear(code) for code in range(16)], ULAW_FIRST_ROW)

    def test_ulaw_small_codes(self) -> None:
        """The quietest non-zero µ-law codes are +-8, and the first code of
        the second segment is 132."""
        self.assertEqual(ulaw_to_linear(0xFE), 8)
        self.assertEqual(ulaw_to_linear(0x7E), -8)
        self.assertEqual(ulaw_to_linear(0xF0), 120)
        self.assertEqual(ulaw_to_linear(0xEF), 132)

    def test_alaw_smallest(self) -> None:
        """A-law 0xD5 decodes to +8 and 0x55 to -8 (A-law has no zero)."""
        self.assertEqual(alaw_to_linear(0xD5), 8)
        self.assertEqual(alaw_to_linear(0x55), -8)
        self.assertEqual(alaw_to_linear(0xD4), 24)

    def test_alaw_extremes(self) -> None:
        """The loudest A-law codes decode to +-32256."""
        self.assertEqual(alaw_to_linear(0xAA), 32256)
        self.assertEqual(alaw_to_linear(0x2A), -32256)

    def test_alaw_first_row(self) -> None:
        """Codes 0x00-0x0F decode as the published table says."""
        self.assertEqual([alaw_to_linear(code) for code in range(16)], ALAW_FIRST_ROW)

    def test_encode_known(self) -> None:
        """Zero, -1 and the extremes encode to the expected codes."""
        self.assertEqual(linear_to_ulaw(0), 0xFF)
        self.assertEqual(linear_to_ulaw(-1), 0x7F)
        self.assertEqual(linear_to_ulaw(32767), 0x80)
        self.assertEqual(linear_to_ulaw(-32768), 0x00)
        self.assertEqual(linear_to_alaw(0), 0xD5)
        self.assertEqual(linear_to_alaw(-1), 0x55)
        self.assertEqual(linear_to_alaw(32767), 0xAA)
        self.assertEqual(linear_to_alaw(-32768), 0x2A)

    def test_out_of_range(self) -> None:
        """A sample outside 16 bits is refused."""
        self.assertRaises(ValueError, linear_to_ulaw, 32768)
        self.assertRaises(ValueError, linear_to_alaw, -32769)


class ExhaustiveTests(SynchronousTestCase):
    """Every 16-bit sample and every code."""

    def test_ulaw_matches_reference(self) -> None:
        """The µ-law encoder agrees with the G.191 formulation everywhere."""
        encoded = ulaw_encode(ALL_PCM)
        self.assertEqual(list(encoded), [reference_ulaw(s) for s in ALL_SAMPLES])

    def test_alaw_matches_reference(self) -> None:
        """The A-law encoder agrees with the G.191 formulation everywhere."""
        encoded = alaw_encode(ALL_PCM)
        self.assertEqual(list(encoded), [reference_alaw(s) for s in ALL_SAMPLES])

    def test_round_trip_codes(self) -> None:
        """Decoding then encoding gives every code back, except µ-law's
        negative zero, which comes back as the positive one."""
        for code in range(256):
            expected = 0xFF if code == 0x7F else code
            self.assertEqual(linear_to_ulaw(ulaw_to_linear(code)), expected, hex(code))
            self.assertEqual(linear_to_alaw(alaw_to_linear(code)), code, hex(code))

    def test_monotonic(self) -> None:
        """The reconstruction never decreases as the input grows."""
        for decode, encode in ((ulaw_decode, ulaw_encode), (alaw_decode, alaw_encode)):
            out = struct.unpack("<65536h", decode(encode(ALL_PCM)))
            self.assertTrue(all(a <= b for a, b in itertools.pairwise(out)))

    def test_distinct_levels(self) -> None:
        """µ-law has 255 distinct levels (two zeros) and A-law 256."""
        self.assertEqual(len({ulaw_to_linear(code) for code in range(256)}), 255)
        self.assertEqual(len({alaw_to_linear(code) for code in range(256)}), 256)

    def test_quantisation_error(self) -> None:
        """Outside the clipping range, the error is at most half a step."""
        for sample in range(-32600, 32600, 7):
            code = linear_to_ulaw(sample)
            self.assertLessEqual(abs(ulaw_to_linear(code) - sample), ulaw_step(code) // 2)
            code = linear_to_alaw(sample)
            self.assertLessEqual(abs(alaw_to_linear(code) - sample), alaw_step(code) // 2)


class BufferTests(SynchronousTestCase):
    """The bytes API."""

    def test_decode_layout(self) -> None:
        """Decoding writes little-endian 16-bit samples, two bytes a code."""
        codes = bytes(range(256))
        self.assertEqual(
            ulaw_decode(codes), struct.pack("<256h", *(ulaw_to_linear(c) for c in codes))
        )
        self.assertEqual(
            alaw_decode(codes), struct.pack("<256h", *(alaw_to_linear(c) for c in codes))
        )

    def test_sizes(self) -> None:
        """Empty and one-sample buffers work; an odd byte count does not."""
        self.assertEqual(ulaw_encode(b""), b"")
        self.assertEqual(ulaw_decode(b""), b"")
        self.assertEqual(alaw_encode(struct.pack("<h", -1)), b"\x55")
        self.assertRaises(ValueError, ulaw_encode, b"\x00\x01\x02")

    def test_buffer_types(self) -> None:
        """bytearray and memoryview inputs give the same result as bytes."""
        pcm = struct.pack("<4h", 0, 1000, -1000, 32767)
        expected = ulaw_encode(pcm)
        self.assertEqual(ulaw_encode(bytearray(pcm)), expected)
        self.assertEqual(ulaw_encode(memoryview(pcm)), expected)
        self.assertEqual(ulaw_decode(memoryview(expected)), ulaw_decode(expected))

    def test_codecs(self) -> None:
        """PCMU and PCMA carry their RFC 3551 payload types, and their
        silence code decodes to (nearly) nothing."""
        self.assertEqual((PCMU.payload_type, PCMA.payload_type), (0, 8))
        self.assertEqual(SUPPORTED, {"PCMU": PCMU, "PCMA": PCMA})
        self.assertEqual(PCMU.decode(bytes([PCMU.silence]) * 2), bytes(4))
        self.assertEqual(PCMA.decode(bytes([PCMA.silence])), struct.pack("<h", 8))

    @given(st.binary(max_size=640).map(lambda data: data[: len(data) // 2 * 2]))
    def test_reencode_is_stable(self, pcm: bytes) -> None:
        """Encoding a decoded signal again gives codes that decode the same
        (the same codes but for µ-law's two zeros: 0x7F, "negative zero",
        decodes to 0, which encodes as 0xFF)."""
        for codec in (PCMU, PCMA):
            codes = codec.encode(pcm)
            self.assertEqual(len(codes), len(pcm) // 2)
            decoded = codec.decode(codes)
            again = codec.encode(decoded)
            self.assertEqual(codec.decode(again), decoded)
            self.assertEqual(again, codes.replace(b"\x7f", b"\xff") if codec is PCMU
                             else codes)

    @given(st.lists(st.integers(-32768, 32767), max_size=200))
    def test_buffer_matches_scalar(self, samples: list[int]) -> None:
        """The buffer encoders agree with the one-sample functions."""
        pcm = struct.pack(f"<{len(samples)}h", *samples)
        self.assertEqual(list(ulaw_encode(pcm)), [linear_to_ulaw(s) for s in samples])
        self.assertEqual(list(alaw_encode(pcm)), [linear_to_alaw(s) for s in samples])
