"""Recording on the media server's calls: the whole call, and messages.

One L{CallRecordings} belongs to each answered call (L{MediaCall} feeds it
every 20 ms tick) and holds two kinds of recording, both written by a
L{Recorder} under the configured directory with names that cannot collide:

  - B{The whole call}, stereo: the caller on the left channel, what the
    media server sends (prompts, echo; silence otherwise) on the right.
    It is controlled by L{CallRecordings.control} with C{start}, C{stop},
    C{pause} and C{resume} (the HTTP API, L{oam.api.media_calls}), and is
    started by the user agent when the recording policy of the call is
    C{always}.  A paused recording writes nothing: the file holds only
    what was recorded and its duration is the audio it holds.  C{stop}
    finishes the file; a later C{start} opens a new one.
  - B{Messages}, mono: the C{record} action (L{record_action}) records the
    caller alone for at most C{record_max} seconds or until one of the
    C{record_stop} keys is pressed (the key is consumed).

Ticks and alignment: the RTP session asks for the frame to send, then
delivers the frame received, once per tick.  L{CallRecordings.sent} and
L{CallRecordings.received} pair them, and the pair is written when the
next tick starts (or when the recording closes), so the two channels stay
aligned even when one direction is silent or on hold.

Every finished file is a L{Recording} in L{CallRecordings.finished}; the
user agent reports them in the C{X-Recording} header of the BYE it sends
(or of its C{200} to the caller's BYE), one header per file:
C{X-Recording: <path>;duration=<ms>} (L{header_value}).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from media.server.ivr_actions import ActionError, ActionRegistry
from media.server.recorder import Recorder, Recording, RecordingError

__all__ = [
    "ACTIONS",
    "DEFAULT_RECORD_MAX",
    "DEFAULT_RECORD_STOP",
    "MAX_RECORD_MAX",
    "RECORD_POLICIES",
    "STATES",
    "CallRecordings",
    "RecordedMessage",
    "RecordingConflict",
    "RecordingSession",
    "header_value",
    "plan_action",
    "record_action",
    "register_recording_actions",
    "unsafe_directory",
]

#: The recording policies of a call: C{always} records the whole call from
#: the ACK on; C{on_demand} only when asked (the API, the C{record} action).
RECORD_POLICIES = ("on_demand", "always")
#: What the API may ask of a call's whole-call recording.
ACTIONS = ("start", "stop", "pause", "resume")
#: The states of the whole-call recording.
STATES = ("idle", "recording", "paused", "stopped")
#: Seconds a message recording lasts at most, unless C{record_max} says.
DEFAULT_RECORD_MAX = 60
#: The largest C{record_max}.
MAX_RECORD_MAX = 3600
#: The keys that end a message recording, unless C{record_stop} says.
DEFAULT_RECORD_STOP = "0123456789*#"
#: What a recording directory may not hold (it goes into a SIP header).
_UNSAFE_DIRECTORY = re.compile(r"[;,\x00-\x1f\x7f]")


class RecordingConflict(Exception):
    """An action the whole-call recording cannot take in its state
    (C{pause} when nothing records, C{start} while paused)."""


def plan_action(action: str, state: str, closed: bool) -> str | None:
    """What C{action} asks of a whole-call recording in C{state}: the
    change to make (C{start}, C{stop}, C{pause}, C{resume}), or C{None}
    when it is in effect already (C{start} while recording, C{pause} while
    paused, C{stop} when nothing records), so a repeated request is
    harmless.  Shared by the media server's recordings and the switch's
    relay recordings (C{media/call_recording.py}).

    @param state: one of L{STATES}.
    @param closed: whether the call has ended.
    @raise ValueError: for an action not in L{ACTIONS}.
    @raise RecordingConflict: C{pause}/C{resume} when nothing records,
        C{start} while paused, anything once the call has ended.
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    if closed:
        raise RecordingConflict("the call has ended")
    if action == "start":
        if state == "paused":
            raise RecordingConflict("the recording is paused: resume it")
        return None if state == "recording" else "start"
    if action == "stop":
        return "stop" if state in ("recording", "paused") else None
    if state not in ("recording", "paused"):
        raise RecordingConflict(f"nothing is being recorded ({state})")
    if action == "pause":
        return "pause" if state == "recording" else None
    return "resume" if state == "paused" else None


def unsafe_directory(directory: str) -> bool:
    """Whether a recording directory holds characters that cannot go into
    the C{X-Recording} header (C{;}, C{,}, control characters)."""
    return bool(_UNSAFE_DIRECTORY.search(directory))


def header_value(recording: Recording) -> str:
    """The C{X-Recording} header value of a finished file:
    C{/rec/2024/03/01/...wav;duration=5020}."""
    return f"{recording.path};duration={recording.duration_ms}"


@dataclass(frozen=True)
class RecordedMessage:
    """A finished message recording.

    @ivar recording: the file.
    @ivar key: the stop key that ended it, or C{None} (the limit, the
        call's end, a disk error).
    """

    recording: Recording
    key: str | None = None


class _Message:
    """A message recording in progress: the caller's audio, mono."""

    def __init__(self, recorder: Recorder, stop_digits: str,
                 done: Callable[[_Message], None]) -> None:
        self.recorder = recorder
        self.stop_digits = stop_digits
        self.digit: str | None = None
        self._done = done
        self.result: Recording | None = None
        self.deferred: Deferred[RecordedMessage] = Deferred(lambda _: self.finish())

    def audio(self, frame: bytes) -> None:
        """One received frame; the limit (or a disk error) ends it."""
        if not self.recorder.write(frame):
            self.fire()

    def key(self, digit: str) -> bool:
        """A key press: consumed (and the end) when it is a stop key."""
        if digit not in self.stop_digits:
            return False
        self.digit = digit
        self.fire()
        return True

    def fire(self, error: Exception | None = None) -> None:
        """Finish, then fire the Deferred (with C{error}, when given)."""
        result = self.finish()
        if self.deferred.called:
            return
        if error is not None:
            self.deferred.errback(error)
        else:
            self.deferred.callback(RecordedMessage(result, self.digit))

    def finish(self) -> Recording:
        """Close the file (idempotent); the Deferred is left to the caller."""
        if self.result is None:
            self.result = self.recorder.close()
            self._done(self)
        return self.result


class CallRecordings:
    """The recordings of one call (module docstring).

    @ivar finished: every file finished, in the order they ended.
    @ivar state: the whole-call recording's state (one of L{STATES}).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, directory: str | Path, call_id: str, *,
                 token: Callable[[], str] = lambda: secrets.token_hex(4)) -> None:
        """
        @param clock: dates the file names.
        @param directory: where the files go (created when needed).
        @param call_id: the call's SIP Call-ID (part of the file names).
        @param token: the random part of the names (tests inject it).
        """
        self._clock = clock
        self.directory = Path(directory)
        self.call_id = call_id
        self._token = token
        self.finished: list[Recording] = []
        self.state = "idle"
        self._call: Recorder | None = None
        self._message: _Message | None = None
        self._caller: bytes | None = None
        self._prompt: bytes | None = None
        self._pending = False
        self._closed = False

    # -- the whole call ---------------------------------------------------------------

    def control(self, action: str) -> str:
        """Start, stop, pause or resume the whole-call recording.

        An action already in effect changes nothing (C{start} while
        recording, C{pause} while paused, C{stop} when nothing records), so
        a repeated request is harmless.

        @return: the state after it.
        @raise ValueError: for an action not in L{ACTIONS}.
        @raise RecordingConflict: C{pause}/C{resume} when nothing records,
            C{start} while paused, anything once the call has ended.
        @raise RecordingError: when the file cannot be created.
        """
        step = plan_action(action, self.state, self._closed)
        if step is None:
            return self.state
        self._flush()
        if step == "start":
            self._call = Recorder.create(self.directory, self.call_id, clock=self._clock,
                                         mode="stereo", token=self._token)
            self.state = "recording"
        elif step == "stop":
            self._finish_call()
            self.state = "stopped"
        else:
            self.state = "paused" if step == "pause" else "recording"
        return self.state

    def status(self) -> dict[str, object]:
        """The whole-call recording as the API shows it: state, the current
        file and its duration so far, and the files finished."""
        current = self._call
        return {
            "state": self.state,
            "path": str(current.path) if current is not None else None,
            "duration_ms": current.duration_ms if current is not None else None,
            "recordings": [{"path": str(r.path), "mode": r.mode, "duration_ms": r.duration_ms}
                           for r in self.finished],
        }

    @property
    def call_recordings(self) -> list[Recording]:
        """The whole-call files finished (stereo)."""
        return [r for r in self.finished if r.mode == "stereo"]

    # -- messages ---------------------------------------------------------------------

    def record(self, max_ms: int, stop_digits: str) -> Deferred[RecordedMessage]:
        """Record the caller (mono) for at most C{max_ms} ms or until a key
        of C{stop_digits}; fires with the L{RecordedMessage}.

        Cancelling it closes the file (kept, and listed in L{finished}).

        @raise RecordingConflict: while another message records, or after
            the call ended.
        @raise RecordingError: when the file cannot be created.
        """
        if self._closed:
            raise RecordingConflict("the call has ended")
        if self._message is not None:
            raise RecordingConflict("a message is being recorded already")
        recorder = Recorder.create(self.directory, self.call_id, clock=self._clock,
                                   mode="mono", max_duration_ms=max_ms, token=self._token)
        message = _Message(recorder, stop_digits, self._message_done)
        self._message = message
        return message.deferred

    def _message_done(self, message: _Message) -> None:
        if self._message is message:
            self._message = None
        self._ended(message.finish())

    # -- the media loop ---------------------------------------------------------------

    def sent(self, frame: bytes | None) -> None:
        """A tick begins: C{frame} is what is sent to the caller (C{None}
        for silence)."""
        self._flush()
        self._prompt = frame
        self._pending = True

    def received(self, frame: bytes) -> None:
        """The caller's frame of this tick."""
        if self._pending and self._caller is not None:
            self._flush()  # two received frames without a tick: receiving only
        self._caller = frame
        self._pending = True
        message = self._message
        if message is not None:
            message.audio(frame)

    def key(self, digit: str) -> bool:
        """A key press: whether a message recording took it as its stop key."""
        message = self._message
        return message is not None and message.key(digit)

    def _flush(self) -> None:
        """Write the tick that is pending into the whole-call file."""
        if not self._pending:
            return
        caller, prompt = self._caller, self._prompt
        self._caller = self._prompt = None
        self._pending = False
        recorder = self._call
        if recorder is None or self.state != "recording":
            return
        if not recorder.write(caller, prompt):
            self.log.warn("media server: the recording {path} of {call_id} stopped: {error}",
                          path=str(recorder.path), call_id=self.call_id,
                          error=recorder.error or "limit reached")
            self._finish_call()
            self.state = "stopped"

    # -- the end ----------------------------------------------------------------------

    def close(self, error: Exception | None = None) -> list[Recording]:
        """The call ended: finish every file (idempotent).

        A message recording in progress is kept; its Deferred fails with
        C{error} when given (the caller hung up), else fires with it.

        @return: L{finished}.
        """
        if self._closed:
            return self.finished
        self._flush()
        self._finish_call()
        if self.state in ("recording", "paused"):
            self.state = "stopped"
        message, self._message = self._message, None
        if message is not None:
            message.fire(error)
        self._closed = True
        return self.finished

    def _finish_call(self) -> None:
        recorder, self._call = self._call, None
        if recorder is not None:
            self._ended(recorder.close())

    def _ended(self, recording: Recording) -> None:
        if recording not in self.finished:
            self.finished.append(recording)


@runtime_checkable
class RecordingSession(Protocol):
    """A session that can record the caller (L{MediaCall})."""

    def record(self, max_ms: int, stop_digits: str) -> Deferred[RecordedMessage]:
        """Record the caller for at most C{max_ms} ms or until a stop key."""


def _record_max(variables: MutableMapping[str, str]) -> int:
    text = variables.get("record_max", str(DEFAULT_RECORD_MAX)).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_RECORD_MAX:
        raise ActionError(f"record_max must be whole seconds from 1 to {MAX_RECORD_MAX}, "
                          f"not {text!r}")
    return int(text)


def record_action(session: object, variables: MutableMapping[str, str]) -> Deferred[str]:
    """The C{record} action: record the caller's message (mono).

    Reads C{record_max} (seconds, default L{DEFAULT_RECORD_MAX}) and
    C{record_stop} (the keys that end it, default any key; C{""}: none);
    sets C{recording} (the file), C{recording_ms} (its duration) and
    C{recording_key} (the stop key pressed, or C{""}); returns the file.

    @raise ActionError: for a session that cannot record, a bad
        C{record_max}, or a file that cannot be created.
    """
    if not isinstance(session, RecordingSession):
        raise ActionError("this session cannot record")
    seconds = _record_max(variables)
    stop = variables.get("record_stop", DEFAULT_RECORD_STOP)
    if set(stop) - set(DEFAULT_RECORD_STOP + "ABCD"):
        raise ActionError(f"record_stop must hold DTMF keys only, not {stop!r}")
    try:
        d = session.record(seconds * 1000, stop)
    except (RecordingError, RecordingConflict) as error:
        raise ActionError(str(error)) from error

    def done(message: RecordedMessage) -> str:
        variables["recording"] = str(message.recording.path)
        variables["recording_ms"] = str(message.recording.duration_ms)
        variables["recording_key"] = message.key or ""
        return str(message.recording.path)

    return d.addCallback(done)


def register_recording_actions(registry: ActionRegistry) -> ActionRegistry:
    """Add the C{record} action to C{registry}; return it."""
    registry.register("record", record_action)
    return registry
