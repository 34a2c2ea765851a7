"""The music of music on hold (L{media.moh}): one loop, decoded once and
encoded once per G.711 law into rings of 20 ms payloads that every
listener shares.

The loop is a WAV file or, without one, L{generated_loop}: four soft
chords synthesised once per process.
"""

from __future__ import annotations

import math
from array import array
from functools import lru_cache
from pathlib import Path

from twisted.internet.interfaces import IReactorTime

from media.server.g711 import PCMA, PCMU, G711Codec
from media.server.mixer import SharedSource
from media.server.pcm import RATE, to_bytes
from media.server.wav import Audio, read_wav

__all__ = ["CODECS", "HoldMusic", "generated_loop"]

#: The encodings music on hold is played in, by name.
CODECS: dict[str, G711Codec] = {PCMU.name: PCMU, PCMA.name: PCMA}

#: The generated loop: (frequencies in Hz, for two seconds each).  C major,
#: A minor, F major, G major, voiced inside the telephone band.
_CHORDS: tuple[tuple[int, ...], ...] = (
    (262, 330, 392, 523),
    (220, 262, 330, 440),
    (262, 349, 440, 523),
    (294, 392, 494, 587),
)
_CHORD_SECONDS = 2
_TONE_LEVEL = 1800  # per tone, of 32767: four tones peak near -13 dBFS


def generated_loop() -> Audio:
    """The built-in music: four soft chords (C, Am, F, G), two seconds each.

    Each chord fades in over 60 ms, decays gently like a struck pad and
    fades out over its last 150 ms, so the loop joins without a click.
    Integer frequencies make one 8000-entry sine table exact for every
    tone.

    @return: eight seconds of mono 8 kHz audio.
    """
    return Audio(_generated_pcm(), 1, RATE)


@lru_cache(maxsize=1)
def _generated_pcm() -> bytes:
    """The samples of L{generated_loop}, computed once per process."""
    table = [math.sin(2 * math.pi * n / RATE) for n in range(RATE)]
    length = RATE * _CHORD_SECONDS
    attack, release = RATE * 60 // 1000, RATE * 150 // 1000
    envelope = []
    for n in range(length):
        level = math.exp(-n / (RATE * 1.6))
        if n < attack:
            level *= n / attack
        if n >= length - release:
            level *= (length - n) / release
        envelope.append(level * _TONE_LEVEL)
    samples = array("h")
    for chord in _CHORDS:
        for n in range(length):
            total = 0.0
            for frequency in chord:
                total += table[(n * frequency) % RATE]
            samples.append(int(total * envelope[n]))
    return to_bytes(samples)


class HoldMusic:
    """The loop, decoded once (a L{SharedSource}) and encoded once per
    G.711 law into rings of 20 ms payloads shared by every listener.

    @ivar source: the decoded loop.
    @ivar rings: encoding name (C{PCMU}, C{PCMA}) -> one payload per frame.
    """

    def __init__(self, source: SharedSource) -> None:
        """
        @param source: the loop, decoded.
        """
        self.source = source
        self.rings: dict[str, tuple[bytes, ...]] = {
            name: tuple(codec.encode(frame) for frame in source.frames)
            for name, codec in CODECS.items()
        }

    def __len__(self) -> int:
        """Frames in the loop."""
        return len(self.source.frames)

    @classmethod
    def from_file(cls, path: str | Path, clock: IReactorTime) -> HoldMusic:
        """The music of a WAV file (8 kHz, 16-bit PCM or G.711, mono or
        stereo).

        @raise ValueError: (a L{media.server.wav.WavError}) for a file that
            cannot be used, naming what is wrong; C{OSError} when it
            cannot be read.
        """
        return cls(SharedSource(read_wav(path), clock, str(path)))

    @classmethod
    def generated(cls, clock: IReactorTime) -> HoldMusic:
        """The built-in music (L{generated_loop}), encoded once per process."""
        return _generated_music(clock)


@lru_cache(maxsize=4)
def _generated_music(clock: IReactorTime) -> HoldMusic:
    """L{HoldMusic.generated}, kept per clock."""
    return HoldMusic(SharedSource(generated_loop(), clock, "generated"))
