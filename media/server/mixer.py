"""The N-party mixer and shared looping sources (music on hold).

L{Mixer} serves three-way calls and conference rooms alike.  Once per 20 ms
tick the caller hands it the frame each participant sent (or C{None} when
nothing arrived or the participant is silent) and gets back the frame each
participant must hear: the sum of everybody else, computed as the total of
all speakers minus the listener's own contribution, in plain integers, then
clamped to 16 bits.  The subtraction happens before the clamp, so a
listener never hears a distorted echo of itself even when the total
overflows.  The cost is one addition pass per active speaker plus one
subtraction-and-clamp pass per speaking listener; listeners who did not
speak share one precomputed frame, so silent participants cost nothing.

L{SharedSource} is a looping source (music on hold) decoded once into an
immutable tuple of frames that any number of listeners read.  Each
listener gets a L{SourceCursor} of its own that advances one frame per
read, so playback is smooth whatever the phase of that call's 20 ms tick;
a new cursor starts at the source's common position, derived from the
clock since the source was loaded, so callers put on hold hear the same
music at the same point, like a broadcast, instead of the first bars of
the track each time they are held.  A listener costs one small object
holding an integer.  L{SharedSources} keeps one source per file, so a
hundred held calls share one decoded copy.
"""

from __future__ import annotations

from array import array
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from operator import add, sub
from pathlib import Path

from twisted.internet.interfaces import IReactorTime

from media.server.pcm import (
    FRAME_BYTES,
    FRAME_MS,
    MAX_SAMPLE,
    MIN_SAMPLE,
    SILENCE_FRAME,
    saturate,
    to_bytes,
    to_samples,
)
from media.server.wav import Audio, read_wav

__all__ = ["Mixer", "Participant", "SharedSource", "SharedSources", "SourceCursor"]


@dataclass
class Participant:
    """One party of a mix.

    @ivar speaks: whether its audio goes into the mix (false: muted).
    @ivar hears: whether it gets a frame back (false: a speak-only source
        such as an announcement).
    """

    key: Hashable
    speaks: bool = True
    hears: bool = True


class Mixer:
    """Mix 20 ms frames of N participants; each hears all the others."""

    def __init__(self) -> None:
        """Start an empty mix."""
        self._participants: dict[Hashable, Participant] = {}

    def join(self, key: Hashable, *, speaks: bool = True, hears: bool = True) -> Participant:
        """Add participant C{key}.

        @raise ValueError: when C{key} is in the mix already.
        """
        if key in self._participants:
            raise ValueError(f"participant {key!r} is in the mix already")
        participant = Participant(key, speaks, hears)
        self._participants[key] = participant
        return participant

    def leave(self, key: Hashable) -> bool:
        """Remove participant C{key}; return whether it was there."""
        return self._participants.pop(key, None) is not None

    def participant(self, key: Hashable) -> Participant:
        """The participant C{key} (to change C{speaks}/C{hears}).

        @raise KeyError: when it is not in the mix.
        """
        return self._participants[key]

    def __len__(self) -> int:
        """The number of participants."""
        return len(self._participants)

    def __contains__(self, key: object) -> bool:
        """Whether C{key} is a participant."""
        return key in self._participants

    def mix(self, frames: Mapping[Hashable, bytes | None]) -> dict[Hashable, bytes]:
        """Mix one tick.

        @param frames: the frame each participant sent this tick; a missing
            key or C{None} is silence, keys of non-participants are ignored
            (a late frame of someone who left), shorter frames are padded
            with silence.
        @return: the frame for every participant that hears.
        @raise ValueError: for a frame longer than 20 ms or of odd length.
        """
        speakers: dict[Hashable, bytes] = {}
        for key, participant in self._participants.items():
            frame = frames.get(key)
            if frame is None or not participant.speaks:
                continue
            if len(frame) > FRAME_BYTES or len(frame) % 2:
                raise ValueError(f"participant {key!r} sent {len(frame)} bytes; a frame is "
                                 f"at most {FRAME_BYTES} bytes of 16-bit samples")
            speakers[key] = frame.ljust(FRAME_BYTES, b"\0")
        hearers = [key for key, p in self._participants.items() if p.hears]
        if not speakers:
            return dict.fromkeys(hearers, SILENCE_FRAME)
        if len(speakers) == 1:
            ((only, frame),) = speakers.items()
            return {key: SILENCE_FRAME if key == only else frame for key in hearers}
        samples = {key: to_samples(frame) for key, frame in speakers.items()}
        total = [0] * (FRAME_BYTES // 2)
        for values in samples.values():
            total = list(map(add, total, values))
        everybody = to_bytes(_clamp(total))
        out: dict[Hashable, bytes] = {}
        for key in hearers:
            own = samples.get(key)
            out[key] = everybody if own is None else to_bytes(_clamp(list(map(sub, total, own))))
        return out


def _clamp(values: list[int]) -> array:
    """C{values} as 16-bit samples, clamped (L{saturate}) only when one is
    out of range: the common case costs a C{min} and a C{max}, a fifth of
    the clamp."""
    if values and (max(values) > MAX_SAMPLE or min(values) < MIN_SAMPLE):
        return saturate(values)
    return array("h", values)


class SharedSource:
    """A looping source decoded once and read by any number of listeners."""

    def __init__(self, audio: Audio, clock: IReactorTime, name: str = "") -> None:
        """Loop C{audio} (mono 8 kHz, or stereo to be averaged).

        @param clock: keeps the common position (see the module docstring).
        @raise ValueError: for audio shorter than one frame.
        """
        self.frames: tuple[bytes, ...] = tuple(audio.mono().frames())
        if not self.frames:
            raise ValueError(f"source {name or '(unnamed)'} holds no audio")
        self.name = name
        self._clock = clock
        self._start = clock.seconds()
        self.listeners = 0

    @classmethod
    def from_wav(cls, path: str | Path, clock: IReactorTime) -> SharedSource:
        """Load the WAV file at C{path} (see L{media.server.wav.read_wav})."""
        return cls(read_wav(path), clock, str(path))

    def position(self) -> int:
        """The common position: the frame a broadcast would play now."""
        elapsed_frames = int((self._clock.seconds() - self._start) * 1000 / FRAME_MS + 1e-6)
        return elapsed_frames % len(self.frames)

    def listen(self) -> SourceCursor:
        """A new listener, starting at the common position."""
        self.listeners += 1
        return SourceCursor(self, self.position())


class SourceCursor:
    """One listener's place in a L{SharedSource}."""

    def __init__(self, source: SharedSource, index: int) -> None:
        """Read C{source} from frame C{index} on."""
        self.source = source
        self.index = index
        self.closed = False

    def next_frame(self) -> bytes:
        """The next frame (the source loops forever); silence once closed."""
        if self.closed:
            return SILENCE_FRAME
        frames = self.source.frames
        frame = frames[self.index]
        self.index = (self.index + 1) % len(frames)
        return frame

    def close(self) -> None:
        """Stop listening (idempotent)."""
        if not self.closed:
            self.closed = True
            self.source.listeners -= 1


class SharedSources:
    """One L{SharedSource} per file, loaded on first use."""

    def __init__(self, clock: IReactorTime) -> None:
        """Keep sources whose common position follows C{clock}."""
        self._clock = clock
        self._sources: dict[Path, SharedSource] = {}

    def get(self, path: str | Path) -> SharedSource:
        """The source of the WAV file at C{path}, decoded at most once."""
        key = Path(path).resolve()
        source = self._sources.get(key)
        if source is None:
            source = self._sources[key] = SharedSource.from_wav(key, self._clock)
        return source

    def unload_idle(self) -> list[Path]:
        """Forget the sources nobody listens to; return their paths."""
        idle = [path for path, source in self._sources.items() if source.listeners == 0]
        for path in idle:
            del self._sources[path]
        return idle
