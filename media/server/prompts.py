"""Prompt sets and the prompt player.

A prompt set is one directory per language, C{<root>/<lang>/<name>.wav},
holding the recordings a language's rules (L{media.server.languages}) may
ask for.  L{PromptSet} turns values into prompt names with those rules
(L{PromptSet.sequence_number}, L{PromptSet.money}, L{PromptSet.duration},
L{PromptSet.date}, L{PromptSet.digits}) and loads the recordings, decoded
once and cached.

L{Player} plays a list of prompts (names or decoded L{Audio}) as a stream
of 20 ms frames of 8 kHz 16-bit linear PCM.  The prompts are joined
sample to sample, so a sequence sounds like one sentence; only the very
last frame is padded with silence.  A frame that lies inside one prompt is
the prompt's own kept frame (L{Audio.frames_at}: cut once, and encoded once
per law by the RTP session), so playing a prompt costs no copying or
encoding after its first play; only the frames that straddle two prompts
are joined afresh.  The player pulls nothing from a clock:
whoever sends the media asks for one frame per 20 ms tick.  It stops early
(barge-in) when L{Player.stop} is called, for example by the DTMF
detector, or when its C{interrupt} callback answers true before a frame.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from pathlib import Path

from media.server.languages import Language, get_language
from media.server.pcm import FRAME_BYTES, FRAME_MS
from media.server.wav import Audio, WavError, read_wav

__all__ = ["MissingPrompt", "Player", "PromptSet"]

#: What a prompt name may look like: no path separators, no dots.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class MissingPrompt(LookupError):
    """A prompt that the set does not hold (or whose file is unreadable)."""


class PromptSet:
    """The prompts of one language, read from C{<root>/<language code>/}.

    @ivar language: the rules that build sequences.
    @ivar directory: where the C{<name>.wav} files are.
    """

    def __init__(self, directory: str | Path, language: Language) -> None:
        """Serve the prompts of C{language} from C{directory}."""
        self.directory = Path(directory)
        self.language = language
        self._cache: dict[str, Audio] = {}

    @classmethod
    def open(cls, root: str | Path, code: str) -> PromptSet:
        """Return the prompt set of language C{code} under C{root}.

        @raise KeyError: for a language without rules.
        @raise MissingPrompt: when C{<root>/<code>} is not a directory.
        """
        language = get_language(code)
        directory = Path(root) / code
        if not directory.is_dir():
            raise MissingPrompt(f"no prompt directory {directory} (generate it with "
                                "'make prompts')")
        return cls(directory, language)

    @property
    def code(self) -> str:
        """The language code."""
        return self.language.code

    def sequence_number(self, n: int) -> list[str]:
        """Prompt names reading the integer C{n}."""
        return self.language.number(n)

    def digits(self, text: str) -> list[str]:
        """Prompt names reading the digits of C{text} one by one."""
        return self.language.digits(text)

    def money(self, amount: Decimal, currency: str) -> list[str]:
        """Prompt names reading C{amount} of C{currency}, cut to its minor unit."""
        return self.language.money(amount, currency)

    def duration(self, seconds: int | datetime.timedelta, *, hours: bool = True) -> list[str]:
        """Prompt names reading a duration ("N minutes and S seconds")."""
        return self.language.duration(seconds, hours=hours)

    def date(self, day: datetime.date) -> list[str]:
        """Prompt names reading the calendar date C{day}."""
        return self.language.date(day)

    def path(self, name: str) -> Path:
        """The file of prompt C{name}.

        @raise MissingPrompt: for a name that is not a plain prompt name.
        """
        if not _NAME.match(name):
            raise MissingPrompt(f"{name!r} is not a prompt name (a-z, 0-9, '-', '_')")
        return self.directory / f"{name}.wav"

    def audio(self, name: str) -> Audio:
        """The decoded prompt C{name} (mono, 8000 Hz), read once and cached.

        @raise MissingPrompt: when the file is missing or not a usable WAV.
        """
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        path = self.path(name)
        try:
            audio = read_wav(path).mono()
        except FileNotFoundError:
            raise MissingPrompt(f"prompt {name!r} is missing in {self.directory}") from None
        except (OSError, WavError) as error:
            raise MissingPrompt(f"prompt {name!r} cannot be used: {error}") from error
        self._cache[name] = audio
        return audio

    def missing(self) -> list[str]:
        """The names the language may ask for that have no file here, sorted."""
        return sorted(name for name in self.language.prompts if not self.path(name).is_file())

    def preload(self) -> None:
        """Read every prompt of the language now (a start-up check).

        @raise MissingPrompt: naming the first prompt that cannot be used.
        """
        for name in sorted(self.language.prompts):
            self.audio(name)


class Player:
    """Play prompts as 20 ms frames, stoppable at any frame (barge-in).

    Iterate over it, or call L{next_frame} once per 20 ms tick until it
    returns C{None}.  Every prompt is resolved when the player is built, so
    a missing prompt fails before anything is heard.

    @ivar stopped: C{None} while playing; C{"finished"} after the last
        frame, C{"interrupted"} when the callback stopped it,
        C{"stopped"} (or the reason given to L{stop}) otherwise.
    @ivar played_ms: milliseconds of audio handed out so far.
    """

    def __init__(
        self,
        items: Iterable[str | Audio],
        prompts: PromptSet | None = None,
        *,
        interrupt: Callable[[], bool] | None = None,
    ) -> None:
        """Play C{items}: prompt names looked up in C{prompts}, or L{Audio}.

        @param interrupt: asked before each frame; a true answer stops the
            player (barge-in).  C{None} makes the player uninterruptible
            except by L{stop}.
        @raise MissingPrompt: for a name C{prompts} lacks, or a name given
            without a prompt set.
        @raise WavError: for audio that is not 8000 Hz.
        """
        self._audio = [self._resolve(item, prompts) for item in items]
        self._pieces = [audio.pcm for audio in self._audio]
        self._interrupt = interrupt
        self._piece = 0
        self._offset = 0
        self.stopped: str | None = None
        self.played_ms = 0
        self.total_ms = sum(len(piece) for piece in self._pieces) // 16

    @staticmethod
    def _resolve(item: str | Audio, prompts: PromptSet | None) -> Audio:
        """The mono 8 kHz audio of one item."""
        if isinstance(item, Audio):
            if item.rate != 8000:
                raise WavError(f"audio at {item.rate} Hz cannot be played; it must be 8000 Hz")
            return item.mono()
        if prompts is None:
            raise MissingPrompt(f"prompt {item!r} given without a prompt set")
        return prompts.audio(item)

    def stop(self, reason: str = "stopped") -> None:
        """Stop now; the next L{next_frame} returns C{None}."""
        if self.stopped is None:
            self.stopped = reason

    def next_frame(self) -> bytes | None:
        """The next 320-byte frame, or C{None} once finished or stopped."""
        if self.stopped is not None:
            return None
        if self._interrupt is not None and self._interrupt():
            self.stopped = "interrupted"
            return None
        index, offset = self._piece, self._offset
        if index < len(self._pieces):
            end = offset + FRAME_BYTES
            size = len(self._pieces[index])
            kept = None
            if end <= size:  # inside one piece: its kept frame
                frames = self._audio[index].frames_at(offset % FRAME_BYTES)
                if frames is not None:
                    kept = frames[offset // FRAME_BYTES]
            if kept is not None:
                if end == size:
                    self._piece, self._offset = index + 1, 0
                else:
                    self._offset = end
                self.played_ms += FRAME_MS
                return kept
        frame = bytearray()
        while len(frame) < FRAME_BYTES and self._piece < len(self._pieces):
            piece = self._pieces[self._piece]
            take = piece[self._offset:self._offset + FRAME_BYTES - len(frame)]
            frame += take
            self._offset += len(take)
            if self._offset >= len(piece):
                self._piece += 1
                self._offset = 0
        if not frame:
            self.stopped = "finished"
            return None
        self.played_ms += FRAME_MS
        return bytes(frame.ljust(FRAME_BYTES, b"\0"))

    def __iter__(self) -> Iterator[bytes]:
        """Yield frames until the player finishes or is stopped."""
        while (frame := self.next_frame()) is not None:
            yield frame
