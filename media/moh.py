"""Music on hold for calls anchored in the built-in relay.

When one party of a call puts the other on hold (its re-INVITE or UPDATE
says C{sendonly} or C{inactive}, or gives the null address), the held party
hears music from the switch until the call is resumed or ends.

 - B{One source, encoded once}: L{media.moh_music.HoldMusic}.  Every
   listener reads the same ring objects; nothing is encoded per call.
 - B{One timer.}  L{MusicOnHold} drives every held party from one timer on
   the injected clock, scheduled by absolute time (tick M{k} is due at
   M{epoch + k * 20 ms}), so it never drifts.  It runs only while someone
   listens.  All listeners hear the same frame at the same tick, like a
   broadcast.  A late tick sends the frames it missed (at most
   L{CATCH_UP} of them; beyond that the timestamps jump, counted as
   skipped).
 - B{Per listener, only the RTP header}: its own SSRC, sequence number and
   timestamp (random starts), the marker bit on its first packet, and the
   payload type the held party signalled for PCMU or PCMA.  The packets go
   out of the relay socket facing the held party
   (L{media.endpoints.Endpoint.send_to_party}).
 - B{Who hears it.}  The relay tells L{MusicOnHold.hold_changed} of every
   change of a party's hold state, and the backend tells
   L{MusicOnHold.formats_changed} of every SDP.  A party holds when its
   latest offer says so; an answer saying C{inactive} (or C{sendonly})
   to an offer of a party that holds neither starts nor ends a hold of
   the answerer (it is an acknowledgement), while an answer that holds
   when the offerer does not, holds.  When exactly one party of an audio
   stream holds, the other one hears music and the holder's own packets
   are not relayed (C{mute}); when both hold nobody hears music and
   nobody is muted; when one of them resumes, the other is the holder.
   Resume of both or the call's end stops the music.  A stream that was
   never active (a call set up C{sendonly}, such as a paging
   announcement) gets no music.
 - B{Bounded.}  At most C{max_listeners} parties hear music at once; the
   others hear silence (the holder is muted all the same) and are counted,
   and get music as soon as a place frees up.  A held party that signalled
   neither PCMU nor PCMA gets no music (its holder's media is relayed as
   before) and is counted.  Each figure counts a hold once, whatever codec
   changes it goes through.

L{media.moh_metrics.MohCollector} exports the figures to Prometheus.  The
configuration is C{[media.moh]} (C{docs/music-on-hold.md}).  The music and
the metrics live in L{media.moh_music} and L{media.moh_metrics}; their
public names are importable from here too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from media.moh_metrics import MohCollector, MohCounters
from media.moh_music import CODECS, HoldMusic, generated_loop
from media.relay import RelayEnd
from media.rtp import rtp_packet
from media.server.g711 import PCMA, PCMU
from media.server.pcm import FRAME_MS, FRAME_SAMPLES, RATE
from media.server.wav import read_wav

__all__ = [
    "CATCH_UP",
    "DEFAULT_MAX_LISTENERS",
    "HoldMusic",
    "MohCollector",
    "MohCounters",
    "MusicOnHold",
    "check_music_file",
    "generated_loop",
    "music_on_hold_from_config",
]

_log = Logger()

#: Parties that may hear music at once unless configured otherwise.
DEFAULT_MAX_LISTENERS = 1000
#: Frames a late tick sends to catch up, at most.
CATCH_UP = 5
#: Seconds per frame.
_FRAME = FRAME_MS / 1000.0
#: How early a tick may run and still count as due (seconds): rounding of
#: float clocks must not push a tick to the next timer.
_EARLY = 20e-6
_SIDES = ("a", "b")
_OTHER = {"a": "b", "b": "a"}


class _Endpoint(Protocol):
    """What the service needs of a relay endpoint (L{media.endpoints.RtpEndpoint})."""

    mute: bool

    def send_to_party(self, data: bytes) -> bool:
        """Send our own packet to the party."""


class _Listener:
    """One held party: where to send, and its RTP header state."""

    __slots__ = ("endpoint", "first", "payload_type", "ring", "sequence", "ssrc", "timestamp")

    def __init__(self, endpoint: _Endpoint, payload_type: int, ring: tuple[bytes, ...],
                 rng: random.Random) -> None:
        self.endpoint = endpoint
        self.payload_type = payload_type
        self.ring = ring
        self.ssrc = rng.getrandbits(32)
        self.sequence = rng.getrandbits(16)
        self.timestamp = rng.getrandbits(32)
        self.first = True


class _Stream:
    """What the service knows of one audio stream of a call."""

    __slots__ = ("answered", "codec", "counted", "endpoints", "held", "holding", "listener",
                 "media", "muted", "rates", "target", "was_active")

    def __init__(self) -> None:
        self.endpoints: dict[str, _Endpoint] = {}
        #: what each party's latest SDP says (the relay's C{held})
        self.held = {"a": False, "b": False}
        #: whether each party holds (an acknowledging answer does not)
        self.holding = {"a": False, "b": False}
        self.media = ""
        self.answered = False
        self.was_active = False
        #: payload type -> clock rate, as the relay last reported them
        self.rates: Mapping[int, int] = {}
        #: the held side (hearing music, waiting for a place, or without a codec)
        self.target: str | None = None
        #: the payload type and encoding it gets (None: no usable codec)
        self.codec: tuple[int, str] | None = None
        #: its header state while it hears music
        self.listener: _Listener | None = None
        #: the holder's endpoint we muted
        self.muted: _Endpoint | None = None
        #: the figures this hold was counted in (C{holds}, C{refused}, C{no_codec})
        self.counted: set[str] = set()


class _Call:
    """A call's streams, and where its offer/answer exchange stands."""

    __slots__ = ("announced", "expecting", "streams")

    def __init__(self) -> None:
        self.streams: dict[int, _Stream] = {}
        #: (side, answer) of the relay's hold notice for the SDP being applied
        self.announced: tuple[str, bool] | None = None
        #: the side whose answer is due (an offer from the other is pending)
        self.expecting: str | None = None


#: (call id, stream index, side) -> the held party's usable codecs, in its
#: order of preference: (payload type, encoding name).
CodecLookup = Callable[[str, int, str], Sequence[tuple[int, str]] | None]


class MusicOnHold:
    """Music for every held party of the relay's calls (module docstring).

    Register L{hold_changed} as a hold listener and L{call_closed} as a
    close listener of the L{media.relay.Relay}, and call L{formats_changed}
    after each SDP (L{media.backend.RelayBackend} does), then L{start}.

    @ivar music: the shared loop.
    @ivar max_listeners: parties that may hear music at once.
    """

    def __init__(
        self,
        clock: IReactorTime,
        music: HoldMusic | None = None,
        *,
        max_listeners: int = DEFAULT_MAX_LISTENERS,
        codecs: CodecLookup | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """
        @param clock: drives the timer.
        @param music: the loop (default: L{HoldMusic.generated}).
        @param max_listeners: parties that may hear music at once (>= 0).
        @param codecs: tells the held party's usable codecs from its SDP;
            without it (or when it knows nothing), PCMU then PCMA from the
            stream's signalled payload types (0 and 8).
        @param rng: picks SSRCs and initial sequence numbers and timestamps.
        @raise ValueError: for a negative C{max_listeners}.
        """
        if max_listeners < 0:
            raise ValueError(f"media.moh.max_listeners must be >= 0, not {max_listeners}")
        self._clock = clock
        self.music = music if music is not None else HoldMusic.generated(clock)
        self.max_listeners = max_listeners
        self._codecs = codecs
        self._rng = rng if rng is not None else random.SystemRandom()
        self._calls: dict[str, _Call] = {}
        self._listeners: dict[int, _Listener] = {}  # id(listener) -> listener, in join order
        self._waiting: dict[tuple[str, int], None] = {}  # (call id, index), oldest first
        self._epoch = clock.seconds()
        self._tick_done = 0
        self._timer: IDelayedCall | None = None
        self._running = False
        self._sent = 0
        self._unsent = 0
        self._skipped = 0
        self._no_codec = 0
        self._refused = 0
        self._holds = 0

    # ---- the relay's notifications --------------------------------------

    def hold_changed(self, end: RelayEnd, *, answer: bool = False) -> None:
        """A party's hold state of a stream changed (or its end is new).

        @param end: the relay's view of the party's end.
        @param answer: whether the SDP that changed it was an answer (a
            held party answering C{inactive} to its holder's C{inactive}
            offer does not hold in turn).
        """
        call = self._calls.setdefault(end.call_id, _Call())
        call.announced = (end.side, answer)
        stream = call.streams.get(end.index)
        if stream is not None and stream.endpoints.get(end.side, end.rtp) is not end.rtp:
            # the line was closed and opened again: new sockets, a new stream
            self._stop(end.call_id, end.index, stream)
            stream = None
        if stream is None:
            stream = call.streams[end.index] = _Stream()
        stream.endpoints[end.side] = end.rtp
        stream.rates = end.clock_rates
        stream.media = end.media
        stream.held[end.side] = end.held
        stream.holding[end.side] = _holds(stream, end.side, answer)
        if answer:
            stream.answered = True
        self._evaluate(end.call_id, end.index, stream)

    def formats_changed(self, call_id: str, side: str, *, answer: bool | None = None) -> None:
        """Party C{side} sent new SDP.

        An offer whose hold state the relay saw unchanged still decides
        whether the party holds (a party that acknowledged a hold with
        C{inactive} and now offers C{inactive} holds in turn).  If the
        party is held, it gets music in the codec that SDP prefers (or
        none, without PCMU and PCMA).

        @param call_id: the call.
        @param side: the party whose SDP it was.
        @param answer: whether the SDP was an answer; by default what the
            relay's hold notice for it said, or else what the exchange so
            far implies (after an offer from the other party, an answer).
        """
        call = self._calls.get(call_id)
        if call is None:
            return
        if answer is None:
            announced = call.announced
            answer = announced[1] if announced is not None and announced[0] == side \
                else call.expecting == side
        call.announced = None
        call.expecting = None if answer else _OTHER[side]
        for index, stream in list(call.streams.items()):
            if stream.endpoints.get(side) is None:
                continue
            holding = _holds(stream, side, answer)
            if holding != stream.holding[side]:
                stream.holding[side] = holding
                self._evaluate(call_id, index, stream)
            if stream.target == side:
                self._recodec(call_id, index, stream)

    def call_closed(self, call_id: str) -> None:
        """The call's media is closing: its music stops."""
        call = self._calls.pop(call_id, None)
        if call is None:
            return
        for index, stream in call.streams.items():
            self._stop(call_id, index, stream)

    # ---- the service ------------------------------------------------------

    def start(self) -> None:
        """Let the timer run (whenever someone listens)."""
        self._running = True
        self._arm()

    def stop(self) -> None:
        """Stop the timer and every listener; unmute every holder."""
        self._running = False
        for call_id in list(self._calls):
            self.call_closed(call_id)
        self._disarm()

    def counters(self) -> MohCounters:
        """The figures now."""
        return MohCounters(
            listeners=len(self._listeners), waiting=len(self._waiting),
            packets_sent=self._sent, packets_unsent=self._unsent,
            frames_skipped=self._skipped, no_codec=self._no_codec, refused=self._refused,
            holds=self._holds)

    @property
    def timer_active(self) -> bool:
        """Whether the one timer is scheduled."""
        return self._timer is not None

    def listener_of(self, call_id: str, index: int = 0) -> tuple[str, _Listener] | None:
        """Who hears music on a stream (side, header state), for tests and
        the API."""
        call = self._calls.get(call_id)
        stream = call.streams.get(index) if call is not None else None
        if stream is None or stream.listener is None or stream.target is None:
            return None
        return stream.target, stream.listener

    # ---- deciding ---------------------------------------------------------

    def _evaluate(self, call_id: str, index: int, stream: _Stream) -> None:
        """Start or stop music after a change of one of the stream's ends."""
        holders = [side for side in _SIDES if stream.holding[side]]
        if stream.answered and not holders:
            stream.was_active = True
        wanted: str | None = None
        if stream.media == "audio" and stream.was_active and len(holders) == 1:
            wanted = _OTHER[holders[0]]
        if wanted == stream.target:
            return
        self._stop(call_id, index, stream)
        if wanted is not None:
            self._play(call_id, index, stream, wanted)

    def _play(self, call_id: str, index: int, stream: _Stream, side: str) -> None:
        """Party C{side} is held: music (or silence) for it, its holder muted."""
        stream.target = side
        stream.codec = self._choose(call_id, index, side, stream.rates)
        if stream.codec is None:
            if _first(stream, "no_codec"):
                self._no_codec += 1
                _log.info("moh: no PCMU or PCMA for the held party of {call_id} "
                          "(stream {index})", call_id=call_id, index=index)
            return
        holder = stream.endpoints.get(_OTHER[side])
        if holder is not None:
            holder.mute = True
            stream.muted = holder
        if _first(stream, "holds"):
            self._holds += 1
        if len(self._listeners) >= self.max_listeners:
            if _first(stream, "refused"):
                self._refused += 1
            self._waiting[(call_id, index)] = None
            return
        self._listen(stream)

    def _recodec(self, call_id: str, index: int, stream: _Stream) -> None:
        """The held party's codec may have changed: follow it, counting
        nothing again (the hold goes on)."""
        assert stream.target is not None
        codec = self._choose(call_id, index, stream.target, stream.rates)
        if codec == stream.codec:
            return
        if codec is not None and stream.codec is not None:
            stream.codec = codec  # a waiting party keeps its place in line
            listener = stream.listener
            if listener is not None:
                listener.payload_type = codec[0]
                listener.ring = self.music.rings[codec[1]]
            return
        side = stream.target
        self._release(call_id, index, stream)
        self._play(call_id, index, stream, side)

    def _listen(self, stream: _Stream) -> None:
        """The stream's held party hears music from now on; arm the timer."""
        assert stream.target is not None and stream.codec is not None
        payload_type, name = stream.codec
        listener = _Listener(stream.endpoints[stream.target], payload_type,
                             self.music.rings[name], self._rng)
        stream.listener = listener
        self._listeners[id(listener)] = listener
        self._arm()

    def _choose(self, call_id: str, index: int, side: str,
                rates: Mapping[int, int]) -> tuple[int, str] | None:
        """The payload type and encoding the held party gets."""
        signalled = self._codecs(call_id, index, side) if self._codecs is not None else None
        if signalled is not None:
            for payload_type, name in signalled:
                if name.upper() in CODECS:
                    return payload_type, name.upper()
            return None
        for codec in (PCMU, PCMA):
            if rates.get(codec.payload_type) == RATE:
                return codec.payload_type, codec.name
        return None

    def _stop(self, call_id: str, index: int, stream: _Stream) -> None:
        """The hold ended: no more music (or silence); relay the holder again."""
        self._release(call_id, index, stream)
        stream.counted.clear()

    def _release(self, call_id: str, index: int, stream: _Stream) -> None:
        """No more music (or silence) on the stream; relay the holder again."""
        stream.target = None
        stream.codec = None
        if stream.muted is not None:
            stream.muted.mute = False
            stream.muted = None
        self._waiting.pop((call_id, index), None)
        listener = stream.listener
        if listener is None:
            return
        stream.listener = None
        del self._listeners[id(listener)]
        self._admit_waiting()
        if not self._listeners:
            self._disarm()

    def _admit_waiting(self) -> None:
        """Give freed places to held parties hearing silence, oldest first."""
        while self._waiting and len(self._listeners) < self.max_listeners:
            call_id, index = next(iter(self._waiting))
            del self._waiting[(call_id, index)]
            call = self._calls.get(call_id)
            stream = call.streams.get(index) if call is not None else None
            if stream is not None and stream.target is not None and stream.listener is None:
                self._listen(stream)

    # ---- the one timer ----------------------------------------------------

    def _due(self) -> int:
        """The number of the tick due now (the grid starts at the epoch)."""
        return int((self._clock.seconds() - self._epoch) / _FRAME + _EARLY / _FRAME)

    def _arm(self) -> None:
        """Schedule the next tick, when running and someone listens."""
        if self._timer is not None or not self._running or not self._listeners:
            return
        self._tick_done = self._due()
        self._schedule()

    def _schedule(self) -> None:
        """Call L{_tick} at the next tick of the grid."""
        at = self._epoch + (self._tick_done + 1) * _FRAME - _EARLY / 2
        self._timer = self._clock.callLater(max(0.0, at - self._clock.seconds()), self._tick)

    def _disarm(self) -> None:
        """Cancel the next tick."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        """Send every listener the frames due since the last tick."""
        self._timer = None
        due = self._due()
        missed = due - self._tick_done
        if missed > 0:
            count = min(missed, CATCH_UP)
            skipped = missed - count
            if skipped:
                self._skipped += skipped
                for listener in self._listeners.values():
                    listener.timestamp += skipped * FRAME_SAMPLES
            length = len(self.music)
            for tick in range(due - count + 1, due + 1):
                self._send_all(tick % length)
            self._tick_done = due
        if self._listeners and self._running:
            self._schedule()

    def _send_all(self, position: int) -> None:
        """One frame to every listener."""
        sent = 0
        for listener in list(self._listeners.values()):
            packet = rtp_packet(listener.payload_type, listener.sequence, listener.timestamp,
                                listener.ssrc, listener.ring[position], marker=listener.first)
            listener.first = False
            listener.sequence = (listener.sequence + 1) & 0xFFFF
            listener.timestamp = (listener.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
            if listener.endpoint.send_to_party(packet):
                sent += 1
            else:
                self._unsent += 1
        self._sent += sent



def _holds(stream: _Stream, side: str, answer: bool) -> bool:
    """Whether C{side} holds after an SDP of its own.

    An offer says it; an answer that holds while the offerer holds is an
    acknowledgement (C{inactive} answering C{inactive}): it neither
    starts nor ends a hold of the answerer.
    """
    if not stream.held[side]:
        return False
    if answer and stream.holding[_OTHER[side]]:
        return stream.holding[side]
    return True


def _first(stream: _Stream, figure: str) -> bool:
    """Whether the stream's hold is not yet counted in C{figure} (and now is)."""
    if figure in stream.counted:
        return False
    stream.counted.add(figure)
    return True



def music_on_hold_from_config(clock: IReactorTime, config: Any,
                              codecs: CodecLookup | None = None) -> MusicOnHold | None:
    """The service a C{[media.moh]} table asks for.

    @param config: has C{enabled}, C{file} (empty: the generated loop) and
        C{max_listeners} (C{b2bua.config.MohConfig}).
    @return: the service, or C{None} when disabled.
    @raise ValueError: naming C{media.moh.file} when the file is unusable.
    """
    if not config.enabled:
        return None
    music = None
    if config.file:
        try:
            music = HoldMusic.from_file(config.file, clock)
        except (OSError, ValueError) as error:
            raise ValueError(f"media.moh.file: {error}") from None
    return MusicOnHold(clock, music, max_listeners=config.max_listeners, codecs=codecs)


def check_music_file(path: str | Path) -> str | None:
    """What is wrong with a music-on-hold file (for the configuration
    check), or C{None} when it can be played.

    @param path: the WAV file.
    """
    try:
        audio = read_wav(path)
    except OSError as error:
        return f"cannot read {str(path)!r}: {error.strerror or error}"
    except ValueError as error:
        return str(error)
    if audio.sample_count < FRAME_SAMPLES:
        return f"{path}: holds less than 20 ms of audio"
    return None
