"""What the IVR interpreter needs from a call: the L{Session} protocol.

The interpreter (L{media.server.ivr_runtime}) drives a call through this
protocol only, so it runs against the real media endpoint (player, DTMF
receiver, transfer through the core) and against a fake in tests alike.

Prompts reach the session resolved: L{Prompt} (a recorded prompt by name)
or one of the I{say} items (L{SayNumber}, L{SayDuration}, L{SayDate},
L{SayDigits}) that the player turns into recorded prompts in the caller's
language.  A session that speaks several languages is a
L{LanguageSession}: the interpreter tells it the flow's C{language}
variable at the start and after every C{set} of it.

When the caller hangs up, any pending session operation fails with
L{CallerHungUp}; the interpreter then stops without calling the session
again.

L{DigitCollector} implements the C{collect} contract on an injected clock
for a session that receives digits one by one (RFC 4733 events or in-band
detection): a session feeds it digits and returns its Deferred.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = [
    "CallerHungUp",
    "ConferenceSession",
    "DigitCollector",
    "EchoSession",
    "LanguageSession",
    "Prompt",
    "PromptItem",
    "SayDate",
    "SayDigits",
    "SayDuration",
    "SayNumber",
    "Session",
    "TransferFailed",
    "TransferTimedOut",
    "UnknownLanguage",
]


class CallerHungUp(Exception):
    """The caller hung up while a session operation was pending."""


class TransferFailed(Exception):
    """A transfer did not happen and the caller is still in the call: the
    peer refused it, or the target could not be reached.

    @ivar code: the SIP status that says why (the REFER's final response,
        or the final status the peer reported in its NOTIFY).
    @ivar reason: its reason phrase.
    """

    def __init__(self, code: int, reason: str) -> None:
        """
        @param code: a SIP status code (300-699).
        @param reason: its reason phrase.
        """
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class TransferTimedOut(TransferFailed):
    """No final word on a transfer came in time: whether the caller is still
    in the call is unknown, so the interpreter hangs up (no C{on_error})."""


@dataclass(frozen=True)
class Prompt:
    """A recorded prompt, by its catalogue name."""

    name: str


@dataclass(frozen=True)
class SayNumber:
    """A whole number, said as a number ("twenty-three")."""

    value: int


@dataclass(frozen=True)
class SayDuration:
    """A duration in seconds, said in hours, minutes and seconds."""

    seconds: int


@dataclass(frozen=True)
class SayDate:
    """A calendar date."""

    value: datetime.date


@dataclass(frozen=True)
class SayDigits:
    """Digits said one by one ("one two three")."""

    digits: str


PromptItem = Prompt | SayNumber | SayDuration | SayDate | SayDigits


@runtime_checkable
class Session(Protocol):
    """One call as the IVR interpreter sees it.

    Each method returning a Deferred may be cancelled by the interpreter
    (the flow's time is up, or the run was stopped); the session must then
    stop what it was doing.  A pending Deferred fails with L{CallerHungUp}
    when the caller hangs up.
    """

    def play(self, prompts: Sequence[PromptItem], barge_in: bool) -> Deferred[str | None]:
        """Play prompts in order.

        @param prompts: what to play.
        @param barge_in: whether a digit stops the playback.
        @return: fires with the digit that stopped the playback, or C{None}
            when it played to its end.
        """

    def collect(
        self,
        max_digits: int,
        terminator: str,
        first_digit_timeout: float,
        inter_digit_timeout: float,
    ) -> Deferred[str]:
        """Collect digits from the caller.

        Collection ends when C{max_digits} digits were pressed, when the
        terminator was pressed, when no digit came within
        C{first_digit_timeout} seconds (none yet) or
        C{inter_digit_timeout} seconds (after one).  A digit that barged in
        on a prompt is not collected again: the interpreter keeps it and
        asks only for the rest.

        @param max_digits: at most this many digits (terminator excluded).
        @param terminator: the digit that ends the entry, or C{""}.
        @return: fires with the digits pressed, ending with the terminator
            if the caller pressed it; C{""} when nothing was pressed.
        """

    def transfer(self, target: str) -> Deferred[None] | None:
        """Hand the call to a number or a URI; the session is over after.

        The interpreter passes C{timeout=<seconds>} as a keyword too when
        the node sets one (how long to wait for the outcome).

        @return: C{None} or a Deferred firing once the caller was handed
            on; failing with L{TransferFailed} when the transfer did not
            happen and the caller is still there (the node's C{on_error}),
            with L{TransferTimedOut} when no outcome came in time (the
            call is hung up), with L{CallerHungUp} when the caller left.
        """

    def hangup(self, cause: str) -> Deferred[None] | None:
        """End the call.

        @param cause: why (C{normal}, C{no_input}, C{flow_error}, ...).
        """

    def now(self) -> datetime.datetime:
        """The wall-clock time of the call, aware, in the caller's zone."""


@runtime_checkable
class EchoSession(Protocol):
    """A session that can send the caller's audio back (the echo test)."""

    def echo(self) -> Deferred[None]:
        """Loop the caller's audio back until cancelled or the caller hangs
        up (then fail with L{CallerHungUp})."""


class UnknownLanguage(ValueError):
    """A language the session has no prompt set for (the message names the
    loaded ones)."""


@runtime_checkable
class LanguageSession(Protocol):
    """A session whose prompts may be played in one of several languages."""

    def set_language(self, code: str) -> None:
        """Play every later prompt (and say numbers, dates, durations) in
        language C{code}.

        @raise UnknownLanguage: for a language that is not loaded; the
            language in use does not change.
        """


@runtime_checkable
class ConferenceSession(Protocol):
    """A session that can join conference rooms (the C{conference} node)."""

    def conference(
        self,
        room: str,
        *,
        muted: bool,
        announce: bool,
        max_participants: int,
        leave_digit: str,
        mute_digit: str,
    ) -> Deferred[str]:
        """Join room C{room} and stay there.

        While in the room the caller's keys are not collected:
        C{leave_digit} leaves, C{mute_digit} toggles listen-only, others
        are ignored.

        @return: fires with C{leave_digit} when the caller pressed it (the
            caller has left the room); fails with
            L{media.server.conference.RoomFull} when the room is full, with
            another L{media.server.conference.ConferenceError} when the
            room cannot be joined, with L{CallerHungUp} when the caller
            hangs up.  Cancelling it leaves the room.
        """


class DigitCollector:
    """One C{collect} operation on an injected clock, fed digit by digit.

    C{deferred} fires with the digits as L{Session.collect} describes.
    Cancelling it stops the timer.

    @ivar deferred: the result.
    """

    def __init__(
        self,
        clock: IReactorTime,
        max_digits: int,
        terminator: str,
        first_digit_timeout: float,
        inter_digit_timeout: float,
    ) -> None:
        """Start collecting: the first-digit timer starts now."""
        if max_digits < 1:
            raise ValueError(f"max_digits must be at least 1, not {max_digits}")
        self._clock = clock
        self._max = max_digits
        self._terminator = terminator
        self._inter = inter_digit_timeout
        self._digits: list[str] = []
        self._timer: IDelayedCall | None = clock.callLater(first_digit_timeout, self._timed_out)
        self.deferred: Deferred[str] = Deferred(self._cancelled)

    @property
    def done(self) -> bool:
        """Whether the collection has ended."""
        return self._timer is None

    def digit_received(self, digit: str) -> None:
        """A digit from the caller; ignored once the collection ended."""
        if self._timer is None:
            return
        if self._terminator and digit == self._terminator:
            self._finish("".join(self._digits) + digit)
            return
        self._digits.append(digit)
        if len(self._digits) >= self._max:
            self._finish("".join(self._digits))
            return
        self._timer.reset(self._inter)

    def caller_hung_up(self) -> None:
        """The caller went away: fail with L{CallerHungUp}."""
        if self._timer is not None:
            self._stop()
            self.deferred.errback(CallerHungUp())

    def _timed_out(self) -> None:
        self._timer = None
        self.deferred.callback("".join(self._digits))

    def _finish(self, result: str) -> None:
        self._stop()
        self.deferred.callback(result)

    def _stop(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _cancelled(self, _: Deferred[str]) -> None:
        # The Deferred then fails with CancelledError by itself.
        self._stop()
