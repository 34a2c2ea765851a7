"""Tests for L{media.server.wav}: reading PCM and G.711 WAV files, writing PCM."""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from media.server import g711
from media.server.pcm import FRAME_BYTES
from media.server.wav import (
    FORMAT_ALAW,
    FORMAT_PCM,
    FORMAT_ULAW,
    Audio,
    WavError,
    WavWriter,
    parse_wav,
    read_wav,
    write_wav,
)


def wav_bytes(tag: int, channels: int, rate: int, bits: int, payload: bytes, *,
              extensible: bool = False, extra_chunk: bytes = b"", data_size: int | None = None,
              ) -> bytes:
    """Build a WAV file by hand, independent of the writer under test."""
    block = channels * bits // 8
    if extensible:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits,
                          22, bits, 0) + struct.pack("<H", tag) + guid_tail
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    size = len(payload) if data_size is None else data_size
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra_chunk
            + b"data" + struct.pack("<I", size) + payload)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def pcm16(*values: int) -> bytes:
    """Little-endian 16-bit samples."""
    return struct.pack(f"<{len(values)}h", *values)


class ReadTests(SynchronousTestCase):
    """Reading the accepted formats."""

    def test_pcm_mono(self) -> None:
        """16-bit PCM mono comes back unchanged."""
        audio = parse_wav(wav_bytes(FORMAT_PCM, 1, 8000, 16, pcm16(1, -2, 32767, -32768)))
        self.assertEqual(audio, Audio(pcm16(1, -2, 32767, -32768), 1, 8000, FORMAT_PCM))
        self.assertEqual(audio.sample_count, 4)

    def test_pcm_stereo_and_mono_downmix(self) -> None:
        """Stereo is kept interleaved; mono() averages the two channels."""
        audio = parse_wav(wav_bytes(FORMAT_PCM, 2, 8000, 16, pcm16(100, 300, -10, -20)))
        self.assertEqual(audio.channels, 2)
        self.assertEqual(audio.sample_count, 2)
        self.assertEqual(audio.mono().pcm, pcm16(200, -15))

    def test_ulaw(self) -> None:
        """µ-law (tag 7) decodes through G.711: 0xFF is 0, 0x00 the most negative."""
        audio = parse_wav(wav_bytes(FORMAT_ULAW, 1, 8000, 8, bytes([0xFF, 0x00, 0x80])))
        self.assertEqual(audio.source_format, FORMAT_ULAW)
        self.assertEqual(audio.pcm, pcm16(0, -32124, 32124))

    def test_alaw(self) -> None:
        """A-law (tag 6) decodes through G.711: 0xD5 is +8, 0x55 is -8."""
        audio = parse_wav(wav_bytes(FORMAT_ALAW, 1, 8000, 8, bytes([0xD5, 0x55, 0xAA])))
        self.assertEqual(audio.source_format, FORMAT_ALAW)
        self.assertEqual(audio.pcm, pcm16(8, -8, 32256))

    @settings(max_examples=50)
    @given(st.binary(max_size=400))
    def test_g711_matches_codec(self, codes: bytes) -> None:
        """Any G.711 payload decodes exactly like the RTP codec does."""
        self.assertEqual(parse_wav(wav_bytes(FORMAT_ULAW, 1, 8000, 8, codes)).pcm,
                         g711.ulaw_decode(codes))
        self.assertEqual(parse_wav(wav_bytes(FORMAT_ALAW, 1, 8000, 8, codes)).pcm,
                         g711.alaw_decode(codes))

    def test_extensible(self) -> None:
        """WAVE_FORMAT_EXTENSIBLE is read by its sub-format."""
        data = wav_bytes(FORMAT_PCM, 1, 8000, 16, pcm16(5, 6), extensible=True)
        self.assertEqual(parse_wav(data).pcm, pcm16(5, 6))

    def test_skips_other_chunks(self) -> None:
        """A LIST chunk (odd size, padded) before the data is skipped."""
        extra = b"LIST" + struct.pack("<I", 3) + b"abc\0"
        data = wav_bytes(FORMAT_PCM, 1, 8000, 16, pcm16(7), extra_chunk=extra)
        self.assertEqual(parse_wav(data).pcm, pcm16(7))

    def test_unfinished_sizes(self) -> None:
        """A data size of 0 or 0xFFFFFFFF (never-closed writer) reads to the end."""
        for size in (0, 0xFFFFFFFF):
            data = wav_bytes(FORMAT_PCM, 1, 8000, 16, pcm16(1, 2, 3), data_size=size)
            self.assertEqual(parse_wav(data).pcm, pcm16(1, 2, 3))

    def test_other_rate_refused(self) -> None:
        """A rate other than 8000 Hz is refused, naming both rates."""
        data = wav_bytes(FORMAT_PCM, 1, 22050, 16, pcm16(1))
        error = self.assertRaises(WavError, parse_wav, data, name="hello.wav")
        self.assertIn("hello.wav", str(error))
        self.assertIn("22050 Hz", str(error))
        self.assertIn("8000 Hz", str(error))
        self.assertEqual(parse_wav(data, rate=None).rate, 22050)

    def test_refused_formats(self) -> None:
        """8-bit PCM, 24-bit PCM, float, ADPCM and 3 channels are refused clearly."""
        cases = [
            (FORMAT_PCM, 1, 8, b"\x80\x80", "8 bits"),
            (FORMAT_PCM, 1, 24, b"\0" * 6, "24 bits"),
            (3, 1, 32, b"\0" * 8, "format tag 3"),
            (2, 1, 4, b"\0", "format tag 2"),
            (FORMAT_PCM, 3, 16, b"\0" * 6, "3 channels"),
        ]
        for tag, channels, bits, payload, words in cases:
            error = self.assertRaises(WavError, parse_wav,
                                      wav_bytes(tag, channels, 8000, bits, payload))
            self.assertIn(words, str(error))

    def test_malformed(self) -> None:
        """Not RIFF, no fmt, no data: each has its own message."""
        self.assertIn("not a RIFF", str(self.assertRaises(WavError, parse_wav, b"hello")))
        no_fmt = b"RIFF" + struct.pack("<I", 12) + b"WAVE" + b"data" + struct.pack("<I", 0)
        self.assertIn("no fmt", str(self.assertRaises(WavError, parse_wav, no_fmt)))
        fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
        no_data = b"RIFF" + struct.pack("<I", 28) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
        self.assertIn("no data", str(self.assertRaises(WavError, parse_wav, no_data)))
        short_fmt = (b"RIFF" + struct.pack("<I", 20) + b"WAVEfmt " + struct.pack("<I", 4)
                     + b"\1\0\1\0")
        self.assertIn("fmt chunk", str(self.assertRaises(WavError, parse_wav, short_fmt)))

    def test_odd_trailing_byte_dropped(self) -> None:
        """A truncated last sample is dropped, not misread."""
        data = wav_bytes(FORMAT_PCM, 1, 8000, 16, pcm16(9) + b"\x01")
        self.assertEqual(parse_wav(data).pcm, pcm16(9))

    def test_frames(self) -> None:
        """frames() cuts 20 ms frames and pads the last one with silence."""
        audio = Audio(pcm16(*range(200)))
        frames = audio.frames()
        self.assertEqual([len(frame) for frame in frames], [FRAME_BYTES, FRAME_BYTES])
        self.assertEqual(frames[1], pcm16(*range(160, 200)) + bytes(240))
        self.assertRaises(WavError, Audio(pcm16(1, 2), channels=2).frames)
        self.assertEqual(Audio(b"").frames(), [])


class WriteTests(SynchronousTestCase):
    """Writing PCM files and reading them back."""

    def test_round_trip_file(self) -> None:
        """write_wav then read_wav gives the same samples, mono and stereo."""
        directory = Path(self.mktemp())
        directory.mkdir()
        tone = pcm16(*(int(8000 * math.sin(i / 5)) for i in range(800)))
        write_wav(directory / "m.wav", tone)
        self.assertEqual(read_wav(directory / "m.wav"), Audio(tone))
        write_wav(directory / "s.wav", tone, channels=2)
        stereo = read_wav(directory / "s.wav")
        self.assertEqual((stereo.channels, stereo.pcm, stereo.duration_ms), (2, tone, 50))

    def test_header_is_standard(self) -> None:
        """The header is the canonical 44-byte PCM one with correct sizes."""
        buffer = _KeepOpen()
        writer = WavWriter(buffer, channels=2)
        writer.write(pcm16(1, 2, 3, 4))
        writer.close()
        data = buffer.getvalue()
        self.assertEqual(struct.unpack_from("<4sI4s", data), (b"RIFF", 44, b"WAVE"))
        self.assertEqual(struct.unpack_from("<4sIHHIIHH", data, 12),
                         (b"fmt ", 16, 1, 2, 8000, 32000, 4, 16))
        self.assertEqual(struct.unpack_from("<4sI", data, 36), (b"data", 8))
        self.assertEqual(len(data), 52)

    def test_writer_checks(self) -> None:
        """Odd sample frames, writes after close and 3 channels are refused."""
        self.assertRaises(WavError, WavWriter, _KeepOpen(), channels=3)
        writer = WavWriter(_KeepOpen(), channels=2)
        self.assertRaises(WavError, writer.write, pcm16(1))
        writer.close()
        writer.close()
        self.assertRaises(WavError, writer.write, pcm16(1, 2))

    @given(st.lists(st.integers(-32768, 32767), max_size=500), st.sampled_from([1, 2]))
    def test_round_trip_property(self, values: list[int], channels: int) -> None:
        """Any whole number of samples survives writing and parsing."""
        values = values[:len(values) - len(values) % channels]
        buffer = _KeepOpen()
        writer = WavWriter(buffer, channels=channels)
        writer.write(pcm16(*values))
        writer.close()
        audio = parse_wav(buffer.getvalue())
        self.assertEqual((audio.pcm, audio.channels), (pcm16(*values), channels))


class _KeepOpen(io.BytesIO):
    """A BytesIO whose close() keeps the value readable."""

    def close(self) -> None:
        """Do not discard the buffer."""
