"""One answered call's media, as the IVR interpreter's L{Session}.

L{MediaCall} joins the media server's pieces for one call: an
L{RtpSession} (opened by the user agent), a L{Player} fed into it 20 ms
at a time, the DTMF receivers (RFC 4733 events, SIP INFO, and in-band
Goertzel detection only when no telephone-event was negotiated) feeding a
L{DigitCollector}, and the echo loop.  It knows nothing of SIP: ending the
call (C{hangup}) goes through the C{end} callback the user agent gives it,
which sends the BYE, and a transfer through its C{refer} callback, which
sends a REFER (C{media/server/refer.py}).

Decisions:

  - B{Missing prompts} never fail a call: a prompt the set lacks (or the
    whole set missing) plays L{MISSING_PROMPT_MS} of silence instead, and
    is logged once per prompt name per user agent (the C{missing} set is
    shared; with several languages loaded the key is C{<code>/<name>}).
  - B{Language}: the call plays from one of the user agent's prompt sets
    (C{languages}, by code); L{set_language} (the flow's C{language}
    variable) switches set and number/date/duration rules for every later
    prompt; a prompt already playing finishes in its language.
  - B{Digits while nothing waits} for them (between two nodes, or after a
    prompt without barge-in ended) are kept, up to L{MAX_BUFFERED_DIGITS},
    for the next C{collect}; a C{play} drops them (as the interpreter drops
    its type-ahead), and digits during a C{play} without barge-in are
    dropped.
  - B{Echo} sends each received frame back on the next tick, keeping at
    most L{ECHO_DEPTH} frames (older ones are dropped: the delay never
    grows).
  - B{Recording} (L{CallRecordings}, when the user agent gives one): every
    tick's sent and received frames go to it; a key press that ends a
    message recording is consumed by it; the call's end finishes every
    file.
  - B{Conference} (L{Conferences}, when the user agent gives them): in a
    room the call sends what the room mixes for it (a prompt being played
    still comes first) and its received audio goes to the room; its keys
    are not buffered for a later C{collect}: the leave key leaves, the mute
    key toggles listen-only, the others are ignored.  The call's end
    leaves the room.
  - B{Transfer} (with a C{refer} callback): while the transfer is pending
    the caller hears silence (nothing is played; keys are kept for a later
    C{collect}); success leaves the call up, silent, for the switch to
    hang up; a L{TransferFailed} leaves the caller in the flow (the cause
    of a later C{transfer_failed} hang-up is its status); a peer that
    does not take REFER (L{ReferNotSupported}) gets the old behaviour: a
    BYE whose C{Reason} names the target.  Without C{refer}, always the
    old behaviour.
"""

from __future__ import annotations

import datetime
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from media.server.conference import ConferenceError, Conferences, Member
from media.server.dtmf import DtmfEvent, TelephoneEventReceiver
from media.server.goertzel import DtmfDetector
from media.server.ivr_session import (
    CallerHungUp,
    DigitCollector,
    Prompt,
    PromptItem,
    SayDate,
    SayDigits,
    SayDuration,
    SayNumber,
    TransferFailed,
    UnknownLanguage,
)
from media.server.pcm import FRAME_BYTES, RATE
from media.server.prompts import MissingPrompt, Player, PromptSet
from media.server.recorder import Recording, RecordingError
from media.server.recording import CallRecordings, RecordedMessage
from media.server.refer import ReferNotSupported
from media.server.rtp_packet import RtpPacket
from media.server.wav import Audio

__all__ = ["ECHO_DEPTH", "MAX_BUFFERED_DIGITS", "MISSING_PROMPT_MS", "MediaCall",
           "reason_for_cause"]

#: Silence played in place of a prompt that cannot be found.
MISSING_PROMPT_MS = 500
#: Digits kept for the next C{collect} while nothing waits for them.
MAX_BUFFERED_DIGITS = 16
#: Frames of received audio waiting to be echoed.
ECHO_DEPTH = 10

_SILENCE = Audio(bytes(MISSING_PROMPT_MS * RATE // 1000 * 2))

#: Q.850 cause values for the flow's hangup causes (RFC 3326 Reason).
_Q850 = {"flow_error": 41, "flow_runaway": 41, "flow_timeout": 102, "transfer_timeout": 102}


def reason_for_cause(cause: str) -> str:
    """The C{Reason} header value (RFC 3326) for a flow's hangup cause.

    Every cause is a normal clearing (Q.850 16) with the cause word as
    text, except the interpreter's own failures: C{flow_error} and
    C{flow_runaway} (41, temporary failure) and C{flow_timeout} and
    C{transfer_timeout} (102, recovery on timer expiry).
    """
    text = "".join(c for c in cause if c.isalnum() or c in "_-.") or "normal"
    return f'Q.850;cause={_Q850.get(cause, 16)};text="{text}"'


class MediaCall:
    """The IVR L{Session} of one answered call (also an C{EchoSession} and a
    C{ConferenceSession}).

    The user agent builds it, sets it as the RTP session's C{source},
    C{on_audio} and C{on_event} (L{next_frame}, L{audio_received},
    L{event_received}), gives it the INFO digits (L{digit_received}) and
    calls L{caller_hung_up} on the caller's BYE.

    @ivar digits: every digit received, in order (for logs and tests).
    @ivar ended: why the call ended (C{None} while it runs).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        prompts: PromptSet | None,
        *,
        end: Callable[[str], object],
        telephone_event: bool,
        missing: set[str] | None = None,
        tz: datetime.tzinfo | None = None,
        label: str = "",
        recordings: CallRecordings | None = None,
        conferences: Conferences | None = None,
        refer: Callable[[str, float | None], Deferred[None]] | None = None,
        languages: Mapping[str, PromptSet | None] | None = None,
        language: str = "",
    ) -> None:
        """
        @param clock: the reactor's clock (collect timeouts, C{now}).
        @param prompts: the prompt set, or C{None} when none could be
            opened (every prompt is then silence).
        @param end: called once with a C{Reason} header value to end the
            call (the user agent sends the BYE and frees the media).
        @param telephone_event: whether RFC 4733 events were negotiated;
            without them the received audio goes through a
            L{DtmfDetector}.
        @param missing: the prompt names already logged as missing
            (shared by the calls of one user agent).
        @param tz: the zone of L{now} (default: the host's local zone).
        @param label: a name for logs (the Call-ID).
        @param recordings: the call's recordings (C{None}: this call
            cannot record).
        @param conferences: the rooms this call may join (C{None}: it
            cannot join any).
        @param refer: C{refer(target, timeout)} asks the peer to transfer
            the caller (see L{transfer}); C{None}: a transfer ends the call
            with a BYE naming the target.
        @param languages: the prompt sets the call may switch to, by
            language code (C{None} for a language whose directory is
            missing: its prompts are silence); default: just C{prompts}.
        @param language: the language to start in (one of C{languages});
            default: that of C{prompts}.
        @raise UnknownLanguage: for a C{language} not among C{languages}.
        """
        self._clock = clock
        self._prompts = prompts
        if languages is None:
            languages = {prompts.code: prompts} if prompts is not None else {}
        self._languages: dict[str, PromptSet | None] = dict(languages)
        self.language = prompts.code if prompts is not None else ""
        if language:
            self.set_language(language)
        self._end = end
        self._missing = missing if missing is not None else set()
        self._tz = tz
        self.label = label
        self.recordings = recordings
        self.events = TelephoneEventReceiver(clock, self.digit_received)
        self.detector = None if telephone_event else DtmfDetector(self.digit_received)
        self.digits: list[str] = []
        self.ended: str | None = None
        self._player: Player | None = None
        self._playing: Deferred[str | None] | None = None
        self._barge_in = False
        self._collector: DigitCollector | None = None
        self._buffer: deque[str] = deque(maxlen=MAX_BUFFERED_DIGITS)
        self._echo: Deferred[None] | None = None
        self._echo_frames: deque[bytes] = deque(maxlen=ECHO_DEPTH)
        self._closed = False
        self.conferences = conferences
        self.member: Member | None = None
        self._in_room: Deferred[str] | None = None
        self._leave_digit = ""
        self._mute_digit = ""
        self._refer = refer
        self._transferring: Deferred[None] | None = None
        self.transferred = False
        self.transfer_error: TransferFailed | None = None

    # -- media callbacks --------------------------------------------------------------

    def next_frame(self) -> bytes | None:
        """The RTP session's C{source}: the player's frame, an echoed
        frame, or C{None} (silence); recorded as the tick's sent frame."""
        frame = self._next_frame()
        if self.recordings is not None:
            self.recordings.sent(frame)
        return frame

    def _next_frame(self) -> bytes | None:
        player = self._player
        if player is not None:
            frame = player.next_frame()
            if frame is not None:
                return frame
            self._play_done(None)
            return None
        member = self.member
        if member is not None:
            return member.next_frame()
        if self._echo is not None and self._echo_frames:
            return self._echo_frames.popleft()
        return None

    def audio_received(self, frame: bytes) -> None:
        """The RTP session's C{on_audio}: recording, in-band DTMF, the echo."""
        if self.recordings is not None:
            self.recordings.received(frame)
        if self.detector is not None:
            self.detector.frame(frame)
        if self.member is not None:
            self.member.received(frame)
        if self._echo is not None and len(frame) == FRAME_BYTES:
            self._echo_frames.append(frame)

    def event_received(self, packet: RtpPacket) -> None:
        """The RTP session's C{on_event}: an RFC 4733 packet."""
        self.events.packet(packet.payload, packet.timestamp, packet.sequence, packet.marker)

    def digit_received(self, event: DtmfEvent | str) -> None:
        """A key press, from any source: barge-in, collection or the
        buffer."""
        if self.ended is not None:
            return
        digit = event if isinstance(event, str) else event.digit
        self.digits.append(digit)
        if self.recordings is not None and self.recordings.key(digit):
            return
        if self.member is not None:
            self._room_key(digit)
            return
        if self._playing is not None:
            if self._barge_in:
                self._play_done(digit)
            return
        if self._collector is not None and not self._collector.done:
            self._collector.digit_received(digit)
            return
        self._buffer.append(digit)

    # -- the Session protocol ---------------------------------------------------------

    def set_language(self, code: str) -> None:
        """Play every later prompt from the prompt set of language C{code}
        (see L{media.server.ivr_session.LanguageSession}).

        @raise UnknownLanguage: when C{code} is not one of the loaded
            languages.
        """
        if code not in self._languages:
            loaded = ", ".join(sorted(self._languages)) or "none"
            raise UnknownLanguage(f"language {code!r} is not loaded (loaded: {loaded})")
        self._prompts = self._languages[code]
        self.language = code

    def play(self, prompts: Sequence[PromptItem], barge_in: bool) -> Deferred[str | None]:
        """Play the prompts into the call (see L{Session.play})."""
        if self.ended is not None:
            return _hung_up()
        self._buffer.clear()
        self._stop_player()
        self._player = Player(self._audio_for(prompts))
        self._barge_in = barge_in
        self._playing = d = Deferred(lambda _: self._stop_player())
        return d

    def collect(self, max_digits: int, terminator: str, first_digit_timeout: float,
                inter_digit_timeout: float) -> Deferred[str]:
        """Collect digits (see L{Session.collect}); buffered digits count."""
        if self.ended is not None:
            return _hung_up()
        collector = DigitCollector(self._clock, max_digits, terminator, first_digit_timeout,
                                   inter_digit_timeout)
        self._collector = collector
        while self._buffer and not collector.done:
            collector.digit_received(self._buffer.popleft())
        return collector.deferred

    def transfer(self, target: str, timeout: float | None = None) -> Deferred[None] | None:
        """Hand the call on (see L{Session.transfer}).

        With a C{refer} callback: the REFER's outcome; the caller hears
        silence meanwhile.  Fires with C{None} once the peer reported
        success (L{transferred}; the call stays up until the peer hangs
        up); fails with L{TransferFailed} (the caller is still here) or
        L{TransferTimedOut}.  When the peer does not take REFER
        (L{ReferNotSupported}), and without C{refer}: the call ends with a
        BYE whose C{Reason} names the target (C{SIP;cause=302}).

        @param timeout: seconds to wait for the outcome (C{None}: the
            C{refer} callback's default).
        """
        if self.ended is not None:
            return _hung_up()
        if self._refer is None:
            self._finish_as_moved(target)
            return None
        self._buffer.clear()
        self._stop_player()
        self.transfer_error = None
        pending = self._refer(target, timeout)
        outer: Deferred[None] = Deferred(lambda _: pending.cancel())
        self._transferring = outer

        def succeeded(_: object) -> None:
            if self._transferring is outer:
                self._transferring = None
            if not outer.called:
                self.transferred = True
                outer.callback(None)

        def failed(failure: Any) -> None:
            if self._transferring is outer:
                self._transferring = None
            if outer.called:
                return
            error = failure.value
            if isinstance(error, ReferNotSupported):
                self.log.info("media server: {call} does not take REFER ({error}); ending the "
                              "call instead", call=self.label, error=str(error))
                self._finish_as_moved(target)
                outer.callback(None)
                return
            if isinstance(error, TransferFailed):
                self.transfer_error = error
            outer.errback(failure)

        pending.addCallbacks(succeeded, failed)
        return outer

    def _finish_as_moved(self, target: str) -> None:
        """End the call with a BYE whose C{Reason} names the target."""
        text = "".join(c for c in target if c.isprintable() and c not in '"\\')[:128]
        self._finish(f'SIP;cause=302;text="transfer {text}"')

    def hangup(self, cause: str) -> None:
        """End the call with a BYE carrying L{reason_for_cause}; after a
        failed transfer, cause C{transfer_failed} carries the transfer's
        status instead (C{SIP;cause=486;text="transfer failed: Busy Here"})."""
        error = self.transfer_error
        if cause == "transfer_failed" and error is not None:
            text = "".join(c for c in error.reason if c.isprintable() and c not in '"\\')[:96]
            self._finish(f'SIP;cause={error.code};text="transfer failed: {text}"')
            return
        self._finish(reason_for_cause(cause))

    def now(self) -> datetime.datetime:
        """The clock's time, aware, in the configured (or local) zone."""
        moment = datetime.datetime.fromtimestamp(self._clock.seconds(), datetime.UTC)
        return moment.astimezone(self._tz)

    def echo(self) -> Deferred[None]:
        """Send the caller's audio back until cancelled."""
        if self.ended is not None:
            return _hung_up()
        self._echo_frames.clear()

        def cancelled(_: Deferred[None]) -> None:
            self._echo = None
            self._echo_frames.clear()

        self._echo = d = Deferred(cancelled)
        return d

    def join_room(self, room: str, *, muted: bool = False, announce: bool = False,
                  max_participants: int = 0) -> Member:
        """Join a conference room now (an ad-hoc C{conf-<room>} call).

        @raise ConferenceError: when conferencing is not configured, the
            call is in a room already or has ended, or the room cannot be
            joined (L{RoomFull}, L{BadRoomName}).
        """
        if self.conferences is None:
            raise ConferenceError("conferencing is not configured on this media server")
        if self.member is not None:
            raise ConferenceError(f"the call is in room {self.member.room.name!r} already")
        if self.ended is not None:
            raise ConferenceError("the call has ended")
        self._buffer.clear()
        self.member = self.conferences.join(room, self, muted=muted,
                                            max_participants=max_participants,
                                            announce=announce)
        return self.member

    def conference(self, room: str, *, muted: bool = False, announce: bool = True,
                   max_participants: int = 0, leave_digit: str = "",
                   mute_digit: str = "") -> Deferred[str]:
        """Join room C{room} until C{leave_digit} (see
        L{ConferenceSession.conference})."""
        if self.ended is not None:
            return _hung_up()
        try:
            self.join_room(room, muted=muted, announce=announce,
                           max_participants=max_participants)
        except ConferenceError as error:
            return fail(error)
        self._leave_digit = leave_digit
        self._mute_digit = mute_digit
        self._in_room = d = Deferred(lambda _: self._leave())
        return d

    def leave_room(self, digit: str = "") -> None:
        """Leave the room the call is in (idempotent); a pending
        L{conference} fires with C{digit}."""
        waiting = self._in_room
        self._leave()
        if waiting is not None and not waiting.called:
            waiting.callback(digit)

    def _leave(self) -> None:
        member, self.member = self.member, None
        self._in_room = None
        if member is not None:
            member.leave()

    def _room_key(self, digit: str) -> None:
        """A key pressed in a room: leave, toggle mute, or nothing."""
        member = self.member
        assert member is not None
        if self._leave_digit and digit == self._leave_digit:
            self.leave_room(digit)
        elif self._mute_digit and digit == self._mute_digit:
            member.muted = not member.muted

    def record(self, max_ms: int, stop_digits: str) -> Deferred[RecordedMessage]:
        """Record the caller's message (see L{CallRecordings.record}).

        @raise RecordingError: when this call cannot record or the file
            cannot be created.
        @raise RecordingConflict: while another message records.
        """
        if self.ended is not None:
            return _hung_up()
        if self.recordings is None:
            raise RecordingError("recording is not configured on this media server")
        return self.recordings.record(max_ms, stop_digits)

    # -- the end ----------------------------------------------------------------------

    def close_recordings(self, hung_up: bool = False) -> list[Recording]:
        """Finish every recording of the call (idempotent); a message being
        recorded fails with L{CallerHungUp} when C{hung_up}.

        @return: every file the call recorded, in the order they ended.
        """
        if self.recordings is None:
            return []
        return self.recordings.close(CallerHungUp() if hung_up else None)

    def caller_hung_up(self) -> None:
        """The call is over from outside (the caller's BYE, the server
        stopping): fail what is pending with L{CallerHungUp}.  Idempotent."""
        if self.ended is None:
            self.ended = "caller"
        self._close(CallerHungUp())

    def _finish(self, reason: str) -> None:
        if self.ended is not None:
            return
        self.ended = reason
        self._close(None)
        self._end(reason)

    def _close(self, error: Exception | None) -> None:
        """Stop the player, the collector, the echo and the receivers."""
        if self._closed:
            return
        self._closed = True
        playing, self._playing = self._playing, None
        self._player = None
        collector, self._collector = self._collector, None
        echo, self._echo = self._echo, None
        in_room, self._in_room = self._in_room, None
        transferring, self._transferring = self._transferring, None
        member, self.member = self.member, None
        if member is not None:
            member.leave()
        self._buffer.clear()
        self.close_recordings(hung_up=error is not None)
        self.events.close()
        if self.detector is not None:
            self.detector = None
        if error is None:
            for pending in (playing, echo, in_room, transferring):
                if pending is not None and not pending.called:
                    pending.cancel()
            if collector is not None and not collector.done:
                collector.deferred.cancel()
            return
        if collector is not None:
            collector.caller_hung_up()
        for pending in (playing, echo, in_room, transferring):
            if pending is not None and not pending.called:
                pending.errback(error)

    # -- helpers ----------------------------------------------------------------------

    def _play_done(self, digit: str | None) -> None:
        playing, self._playing = self._playing, None
        self._player = None
        if playing is not None and not playing.called:
            playing.callback(digit)

    def _stop_player(self) -> None:
        self._player = None
        self._playing = None

    def _names(self, item: PromptItem) -> list[str]:
        """The prompt names that say one resolved item."""
        prompts = self._prompts
        if isinstance(item, Prompt):
            return [item.name]
        if prompts is None:
            return [repr(item)]
        if isinstance(item, SayNumber):
            return prompts.sequence_number(item.value)
        if isinstance(item, SayDuration):
            return prompts.duration(item.seconds)
        if isinstance(item, SayDate):
            return prompts.date(item.value)
        if isinstance(item, SayDigits):
            return prompts.digits(item.digits)
        raise TypeError(f"not a prompt item: {item!r}")

    def _audio_for(self, items: Sequence[PromptItem]) -> list[Audio]:
        """The audio of the items; silence for what cannot be found."""
        pieces: list[Audio] = []
        for item in items:
            for name in self._names(item):
                pieces.append(self._load(name))
        return pieces

    def _load(self, name: str) -> Audio:
        if self._prompts is not None:
            try:
                return self._prompts.audio(name)
            except MissingPrompt as error:
                problem = str(error)
        else:
            problem = "no prompt set could be opened"
        key = name if len(self._languages) <= 1 else f"{self.language}/{name}"
        if key not in self._missing:
            self._missing.add(key)
            self.log.warn("media server: prompt {name} cannot be played ({problem}); "
                          "playing silence instead", name=name, problem=problem)
        return _SILENCE


def _hung_up() -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(CallerHungUp())
    return d
