"""Read and write WAV files for the media server.

Reading accepts what an operator is likely to upload for a prompt or music
on hold and what this project writes itself:

* linear PCM, 16-bit, mono or stereo (format tag 1);
* G.711 µ-law (tag 7) and A-law (tag 6), 8-bit, mono or stereo, decoded to
  16-bit linear on reading;
* the same three inside C{WAVE_FORMAT_EXTENSIBLE} (tag 0xFFFE).

Every other format (8/24/32-bit PCM, float, ADPCM, GSM ...) is refused with
a L{WavError} naming what was found.  The sample rate must be 8000 Hz unless
the caller asks for another with C{rate=None} (the prompt generator reads
22050 Hz speech and resamples it with L{media.server.resample}).

Writing produces 16-bit linear PCM at 8000 Hz, mono or stereo, through
L{WavWriter}, which streams frames to an open file and fixes the sizes in
the header when it is closed.  A file whose writer never closed (a crash)
keeps zero sizes in its header; L{parse_wav} then reads the data chunk up to
the end of the file, so such a recording is not lost.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from media.server.g711 import PcmFrame, alaw_decode, ulaw_decode
from media.server.pcm import FRAME_BYTES, RATE, to_bytes, to_samples

__all__ = [
    "FORMAT_ALAW",
    "FORMAT_PCM",
    "FORMAT_ULAW",
    "MAX_SHIFTS",
    "Audio",
    "WavError",
    "WavWriter",
    "parse_wav",
    "read_wav",
    "write_wav",
]

#: WAVE format tags this module understands.
FORMAT_PCM = 1
FORMAT_ALAW = 6
FORMAT_ULAW = 7
_FORMAT_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {FORMAT_PCM: "PCM", FORMAT_ALAW: "A-law", FORMAT_ULAW: "µ-law"}

#: The most frame shifts L{Audio.frames_at} keeps per audio.
MAX_SHIFTS = 16
#: Size of the canonical header L{WavWriter} writes (RIFF + fmt + data header).
HEADER_BYTES = 44
#: Sizes a streaming writer may leave in a header it never finished.
_UNFINISHED_SIZES = (0, 0xFFFFFFFF)


class WavError(ValueError):
    """A WAV file that is malformed or in a format the media server refuses."""


@dataclass(frozen=True)
class Audio:
    """Decoded audio: 16-bit little-endian linear PCM, interleaved channels.

    @ivar pcm: the samples; for stereo, left then right for each instant.
    @ivar channels: 1 or 2.
    @ivar rate: samples per second per channel.
    @ivar source_format: the format tag the file had (L{FORMAT_PCM},
        L{FORMAT_ULAW}, L{FORMAT_ALAW}).
    """

    pcm: bytes
    channels: int = 1
    rate: int = RATE
    source_format: int = FORMAT_PCM
    _shifted: dict[int, tuple[PcmFrame, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False)

    @property
    def sample_count(self) -> int:
        """Samples per channel."""
        return len(self.pcm) // (2 * self.channels)

    @property
    def duration_ms(self) -> int:
        """Duration in whole milliseconds (rounded down)."""
        return self.sample_count * 1000 // self.rate

    def mono(self) -> Audio:
        """Return this audio as one channel (stereo is averaged)."""
        if self.channels == 1:
            return self
        samples = to_samples(self.pcm)
        left, right = samples[0::2], samples[1::2]
        mixed = array("h", ((a + b) >> 1 for a, b in zip(left, right, strict=True)))
        return Audio(to_bytes(mixed), 1, self.rate, self.source_format)

    def frames(self) -> list[bytes]:
        """Split mono audio into 20 ms frames, the last padded with silence.

        @raise WavError: for stereo audio or a rate other than 8000 Hz.
        """
        if self.channels != 1 or self.rate != RATE:
            raise WavError(f"frames need mono {RATE} Hz audio, got {self.channels} "
                           f"channel(s) at {self.rate} Hz")
        pcm = self.pcm
        frames = [pcm[i:i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
        if frames and len(frames[-1]) < FRAME_BYTES:
            frames[-1] = frames[-1].ljust(FRAME_BYTES, b"\0")
        return frames


    def frames_at(self, shift: int) -> tuple[PcmFrame, ...] | None:
        """The whole 20 ms frames of mono audio that start C{shift} bytes in:
        frame C{k} is C{pcm[shift + 320 k : shift + 320 (k + 1)]}; what
        is left over at either end is not in any.

        A player joining prompts sample to sample starts a prompt wherever
        the one before ended, so it asks for the frames at that shift.
        Each shift's frames are made once and kept with the audio (as
        L{PcmFrame}s, which keep their G.711 codes too): a prompt played
        by many calls is cut and encoded once per shift, not per play.
        At most L{MAX_SHIFTS} shifts are kept per audio (memory stays
        within that many copies of it); past them the answer is C{None}
        and the caller cuts its frames itself.

        @param shift: 0 <= shift < 320, even.
        @raise ValueError: for a bad shift, or audio that is not mono.
        """
        frames = self._shifted.get(shift)
        if frames is not None:
            return frames
        if not 0 <= shift < FRAME_BYTES or shift % 2:
            raise ValueError(f"a frame shift is an even byte count below {FRAME_BYTES}, "
                             f"not {shift}")
        if self.channels != 1:
            raise ValueError("frames_at needs mono audio")
        if len(self._shifted) >= MAX_SHIFTS:
            return None
        pcm = self.pcm
        stop = len(pcm) - FRAME_BYTES
        frames = tuple(PcmFrame(pcm[i:i + FRAME_BYTES])
                       for i in range(shift, stop + 1, FRAME_BYTES))
        self._shifted[shift] = frames
        return frames


def _chunks(data: bytes):
    """Yield C{(id, start, size)} for each chunk after the RIFF/WAVE header."""
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, offset)
        start = offset + 8
        yield chunk_id, start, size
        offset = start + size + (size & 1)


def _parse_fmt(body: bytes) -> tuple[int, int, int, int, int]:
    """Return C{(tag, channels, rate, block_align, bits)} of a fmt chunk."""
    if len(body) < 16:
        raise WavError(f"fmt chunk is {len(body)} bytes, needs at least 16")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _FORMAT_EXTENSIBLE:
        if len(body) < 40:
            raise WavError("WAVE_FORMAT_EXTENSIBLE fmt chunk is too short")
        (tag,) = struct.unpack_from("<H", body, 24)
    return tag, channels, rate, block_align, bits


def parse_wav(data: bytes, *, rate: int | None = RATE, name: str = "WAV data") -> Audio:
    """Decode the WAV file held in C{data}.

    @param rate: the sample rate the audio must have, or C{None} to accept
        any rate.
    @param name: how error messages name the input (a file name).
    @raise WavError: when the data is not a WAV file, uses a refused
        format, or has another sample rate than C{rate}.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError(f"{name}: not a RIFF/WAVE file")
    fmt = None
    payload = None
    for chunk_id, start, size in _chunks(data):
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(data[start:start + size])
        elif chunk_id == b"data":
            if size in _UNFINISHED_SIZES or start + size > len(data):
                size = len(data) - start  # an unfinished or truncated recording
            payload = data[start:start + size]
            break
    if fmt is None:
        raise WavError(f"{name}: no fmt chunk")
    if payload is None:
        raise WavError(f"{name}: no data chunk")
    tag, channels, file_rate, _block_align, bits = fmt
    if channels not in (1, 2):
        raise WavError(f"{name}: {channels} channels; only mono and stereo are accepted")
    if rate is not None and file_rate != rate:
        raise WavError(f"{name}: sample rate is {file_rate} Hz; the media server needs "
                       f"{rate} Hz (resample it, for example with media.server.resample)")
    if tag == FORMAT_PCM and bits == 16:
        payload = payload[:len(payload) - len(payload) % (2 * channels)]
        return Audio(payload, channels, file_rate, FORMAT_PCM)
    if tag in (FORMAT_ULAW, FORMAT_ALAW) and bits == 8:
        payload = payload[:len(payload) - len(payload) % channels]
        decode = ulaw_decode if tag == FORMAT_ULAW else alaw_decode
        return Audio(decode(payload), channels, file_rate, tag)
    kind = _FORMAT_NAMES.get(tag, f"format tag {tag}")
    raise WavError(f"{name}: {kind} with {bits} bits per sample is not accepted; use 16-bit "
                   "PCM, G.711 µ-law or G.711 A-law")


def read_wav(path: str | Path, *, rate: int | None = RATE) -> Audio:
    """Read and decode the WAV file at C{path} (see L{parse_wav})."""
    path = Path(path)
    return parse_wav(path.read_bytes(), rate=rate, name=str(path))


def _header(channels: int, rate: int, data_bytes: int) -> bytes:
    """Return the 44-byte header of a 16-bit PCM WAV file."""
    block_align = 2 * channels
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data_bytes, b"WAVE",
        b"fmt ", 16, FORMAT_PCM, channels, rate, rate * block_align, block_align, 16,
        b"data", data_bytes,
    )


class WavWriter:
    """Stream 16-bit linear PCM into a WAV file.

    The header is written first with zero sizes and patched by L{close},
    which needs a seekable file.  The writer owns the file and closes it.
    """

    #: The largest data chunk a RIFF header can describe.
    MAX_DATA_BYTES = 0xFFFFFFFF - 36

    def __init__(self, file: BinaryIO, *, channels: int = 1, rate: int = RATE) -> None:
        """Start a WAV file on C{file} with C{channels} (1 or 2) at C{rate}."""
        if channels not in (1, 2):
            raise WavError(f"a WAV file is written with 1 or 2 channels, not {channels}")
        self._file = file
        self.channels = channels
        self.rate = rate
        self.data_bytes = 0
        self.closed = False
        file.write(_header(channels, rate, 0))

    def write(self, pcm: bytes) -> None:
        """Append interleaved 16-bit little-endian samples.

        @raise WavError: when C{pcm} is not a whole number of sample frames,
            the writer is closed, or the file would outgrow a RIFF header.
        """
        if self.closed:
            raise WavError("write on a closed WAV writer")
        if len(pcm) % (2 * self.channels):
            raise WavError(f"{len(pcm)} bytes is not a whole number of "
                           f"{self.channels}-channel 16-bit samples")
        if self.data_bytes + len(pcm) > self.MAX_DATA_BYTES:
            raise WavError("a WAV file cannot hold more than 4 GiB of samples")
        self._file.write(pcm)
        self.data_bytes += len(pcm)

    @property
    def duration_ms(self) -> int:
        """Milliseconds of audio written so far."""
        return self.data_bytes // (2 * self.channels) * 1000 // self.rate

    def close(self) -> None:
        """Fix the sizes in the header and close the file (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.data_bytes & 1:  # never: samples are 2 bytes; kept for RIFF's pad rule
                self._file.write(b"\0")
            self._file.seek(0)
            self._file.write(_header(self.channels, self.rate, self.data_bytes))
        finally:
            self._file.close()


def write_wav(path: str | Path, pcm: bytes, *, channels: int = 1, rate: int = RATE) -> None:
    """Write C{pcm} (16-bit little-endian, interleaved) as a WAV file at C{path}.

    An existing file at C{path} is replaced.
    """
    writer = WavWriter(open(path, "wb"), channels=channels, rate=rate)  # noqa: SIM115
    try:
        writer.write(pcm)
    finally:
        writer.close()
