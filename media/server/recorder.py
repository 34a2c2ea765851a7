"""Record call audio to WAV files.

A L{Recorder} takes 20 ms frames of 8 kHz 16-bit linear PCM and writes a
WAV file in one of three modes:

* C{"mono"}: one leg (C{write(frame)});
* C{"stereo"}: two legs, the first on the left channel, the second on the
  right (C{write(first, second)}), so both sides stay separable;
* C{"mixed"}: two legs summed with saturation into one channel (half the
  size of stereo).

A leg with nothing to give in a tick passes C{None} and is recorded as
silence, so both channels stay aligned in time; the duration is counted
from the samples written, not from a wall clock.

Files go under a configured directory, one sub-directory per UTC day:
C{<directory>/YYYY/MM/DD/YYYYMMDD-HHMMSS-<call id>-<random>.wav}.  The call
id is reduced to C{[A-Za-z0-9._-]} (at most 64 characters), the random part
is 8 hex digits from C{secrets}, and the file is created with C{O_EXCL}, so
an existing file is never overwritten: a name that exists already is
retried with a new random part.

Write errors (a full disk) do not escape into the media loop: the recorder
stops, keeps what it wrote, and reports the error in its L{Recording}.
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.interfaces import IReactorTime

from media.server.pcm import FRAME_BYTES, RATE, mix, to_bytes, to_samples
from media.server.wav import WavError, WavWriter

__all__ = ["MODES", "Recorder", "Recording", "RecordingError", "recording_path"]

#: The recording modes and the channels each writes.
MODES = {"mono": 1, "stereo": 2, "mixed": 1}
#: How many random names L{Recorder.create} tries before giving up.
ATTEMPTS = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class RecordingError(OSError):
    """A recording file that cannot be created."""


@dataclass(frozen=True)
class Recording:
    """What a finished recording reports.

    @ivar path: the WAV file.
    @ivar mode: C{"mono"}, C{"stereo"} or C{"mixed"}.
    @ivar duration_ms: milliseconds of audio in the file.
    @ivar data_bytes: bytes of samples in the file (without the header).
    @ivar truncated: true when the length limit cut the recording short.
    @ivar error: why writing stopped early (a disk error), or C{None}.
    """

    path: Path
    mode: str
    duration_ms: int
    data_bytes: int
    truncated: bool = False
    error: str | None = None


def safe_call_id(call_id: str) -> str:
    """C{call_id} reduced to a file-name-safe string of at most 64 characters."""
    cleaned = _UNSAFE.sub("_", call_id)[:64].lstrip(".")
    return cleaned or "call"


def recording_path(directory: str | Path, call_id: str, when: datetime.datetime,
                   suffix: str) -> Path:
    """The path of a recording of C{call_id} started at C{when} (UTC).

    >>> recording_path("/rec", "a@b", datetime.datetime(2024, 3, 1, 12, 0, 5), "0a1b2c3d")
    PosixPath('/rec/2024/03/01/20240301-120005-a_b-0a1b2c3d.wav')
    """
    day = when.strftime("%Y/%m/%d")
    stamp = when.strftime("%Y%m%d-%H%M%S")
    return Path(directory) / day / f"{stamp}-{safe_call_id(call_id)}-{suffix}.wav"


class Recorder:
    """A WAV recording in progress (see the module docstring)."""

    def __init__(self, writer: WavWriter, path: Path, mode: str = "mono", *,
                 max_duration_ms: int | None = None) -> None:
        """Record through C{writer} (already open on C{path}) in C{mode}."""
        if mode not in MODES:
            raise ValueError(f"recording mode must be one of {', '.join(MODES)}, not {mode!r}")
        if writer.channels != MODES[mode]:
            raise ValueError(f"mode {mode!r} needs {MODES[mode]} channel(s)")
        self._writer = writer
        self.path = path
        self.mode = mode
        self.max_duration_ms = max_duration_ms
        self.truncated = False
        self.error: str | None = None
        self._result: Recording | None = None

    @classmethod
    def create(
        cls,
        directory: str | Path,
        call_id: str,
        *,
        clock: IReactorTime,
        mode: str = "mono",
        max_duration_ms: int | None = None,
        token: Callable[[], str] = lambda: secrets.token_hex(4),
    ) -> Recorder:
        """Create a new, never-existing recording file for C{call_id}.

        @param clock: gives the start time that dates the file name.
        @param token: makes the random part of the name (tests inject it).
        @raise ValueError: for an unknown mode.
        @raise RecordingError: when the directory cannot be made or no free
            name was found in L{ATTEMPTS} tries.
        """
        if mode not in MODES:
            raise ValueError(f"recording mode must be one of {', '.join(MODES)}, not {mode!r}")
        when = datetime.datetime.fromtimestamp(clock.seconds(), datetime.UTC)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        for _ in range(ATTEMPTS):
            path = recording_path(directory, call_id, when, token())
            try:
                path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
                fd = os.open(path, flags, 0o640)
            except FileExistsError:
                continue
            except OSError as error:
                raise RecordingError(f"cannot create a recording in {directory}: {error}") \
                    from error
            writer = WavWriter(os.fdopen(fd, "wb"), channels=MODES[mode])
            return cls(writer, path, mode, max_duration_ms=max_duration_ms)
        raise RecordingError(f"no free recording name for {call_id!r} in {directory} "
                             f"after {ATTEMPTS} tries")

    @property
    def duration_ms(self) -> int:
        """Milliseconds recorded so far."""
        return self._writer.duration_ms

    @property
    def active(self) -> bool:
        """Whether frames are still being written."""
        return not (self._writer.closed or self.truncated or self.error)

    def write(self, first: bytes | None, second: bytes | None = None) -> bool:
        """Record one tick: C{first} (and C{second} for two legs) or C{None}.

        @return: whether the recorder still records (false after the limit,
            an error, or L{close}).
        @raise ValueError: for a second leg in mono mode or a frame with an
            odd number of bytes.
        """
        if self.mode == "mono" and second is not None:
            raise ValueError("a mono recording takes one leg")
        if not self.active:
            return False
        pcm = self._encode(first, second)
        if self.max_duration_ms is not None:
            room = self._room_bytes()
            if len(pcm) >= room:
                pcm = pcm[:room]
                self.truncated = True
        try:
            if pcm:
                self._writer.write(pcm)
        except (OSError, WavError) as error:
            self.error = str(error)
        return self.active

    def _room_bytes(self) -> int:
        """Bytes left before C{max_duration_ms}, whole sample frames only."""
        block = 2 * self._writer.channels
        limit = self.max_duration_ms * RATE // 1000 * block
        return max(0, limit - self._writer.data_bytes)

    def _encode(self, first: bytes | None, second: bytes | None) -> bytes:
        """The bytes one tick adds to the file."""
        for frame in (first, second):
            if frame is not None and len(frame) % 2:
                raise ValueError(f"a 16-bit PCM frame has an even length, not {len(frame)}")
        if self.mode == "mono":
            return first if first is not None else bytes(FRAME_BYTES)
        size = max(len(first or b""), len(second or b"")) or FRAME_BYTES
        left = (first or b"").ljust(size, b"\0")
        right = (second or b"").ljust(size, b"\0")
        if self.mode == "mixed":
            return mix([left, right])
        interleaved = array("h", bytes(2 * size))
        interleaved[0::2] = to_samples(left)
        interleaved[1::2] = to_samples(right)
        return to_bytes(interleaved)

    def close(self) -> Recording:
        """Finish the file and report it (idempotent)."""
        if self._result is None:
            try:
                self._writer.close()
            except OSError as error:
                self.error = self.error or str(error)
            self._result = Recording(self.path, self.mode, self._writer.duration_ms,
                                     self._writer.data_bytes, self.truncated, self.error)
        return self._result
