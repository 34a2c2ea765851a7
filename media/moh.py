"""Music on hold for calls anchored in the built-in relay.

When one party of a call puts the other on hold (its re-INVITE or UPDATE
says C{sendonly} or C{inactive}, or gives the null address), the held party
hears music from the switch until the call is resumed or ends.

 - B{One source, encoded once.}  L{HoldMusic} holds the loop (a WAV file
   or, without one, L{generated_loop}: four soft chords) as a
   L{media.server.mixer.SharedSource} decoded once, and encodes it once per
   G.711 law (PCMU, PCMA) into a ring of 20 ms payloads.  Every listener
   reads the same ring objects; nothing is encoded per call.
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
   change of a party's hold state; when exactly one party of an audio
   stream holds, the other one hears music and the holder's own packets
   are not relayed (C{mute}); on resume, mutual hold or the call's end the
   music stops and relaying resumes.  A hold that the held party merely
   acknowledges in its answer (C{a=inactive} answering C{a=inactive})
   does not count as holding too.  A stream that was never active (a call
   set up C{sendonly}, such as a paging announcement) gets no music.
 - B{Bounded.}  At most C{max_listeners} parties hear music at once; the
   others hear silence (the holder is muted all the same) and are counted,
   and get music as soon as a place frees up.  A held party that signalled
   neither PCMU nor PCMA gets no music (its holder's media is relayed as
   before) and is counted.

L{MohCollector} exports the figures to Prometheus.  The configuration is
C{[media.moh]} (C{docs/music-on-hold.md}).
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from media.relay import RelayEnd
from media.rtp import rtp_packet
from media.server.g711 import PCMA, PCMU, G711Codec
from media.server.mixer import SharedSource
from media.server.pcm import FRAME_MS, FRAME_SAMPLES, RATE, to_bytes
from media.server.wav import Audio, read_wav

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
_CODECS: dict[str, G711Codec] = {PCMU.name: PCMU, PCMA.name: PCMA}

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
            for name, codec in _CODECS.items()
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


@dataclass(frozen=True, slots=True)
class MohCounters:
    """Music-on-hold figures (gauges now, counters since start).

    @ivar listeners: parties hearing music now.
    @ivar waiting: held parties hearing silence for want of a place now.
    @ivar packets_sent: RTP packets of music sent.
    @ivar packets_unsent: packets that could not be sent (no address for
        the party yet, or the socket refused).
    @ivar frames_skipped: frames left out because the timer ran too late
        to catch up.
    @ivar no_codec: held streams whose party signalled neither PCMU nor
        PCMA (no music).
    @ivar refused: holds that found every place taken (silence until one
        freed up).
    @ivar holds: holds that started music (or silence for want of a place).
    """

    listeners: int
    waiting: int
    packets_sent: int
    packets_unsent: int
    frames_skipped: int
    no_codec: int
    refused: int
    holds: int


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

    __slots__ = ("answered", "codec", "endpoints", "holding", "listener", "muted", "rates",
                 "target", "was_active")

    def __init__(self) -> None:
        self.endpoints: dict[str, _Endpoint] = {}
        self.holding = {"a": False, "b": False}
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


class _Rates:
    """The part of a L{RelayEnd} L{MusicOnHold._choose} reads."""

    __slots__ = ("clock_rates",)

    def __init__(self, clock_rates: Mapping[int, int]) -> None:
        self.clock_rates = clock_rates


#: (call id, stream index, side) -> the held party's usable codecs, in its
#: order of preference: (payload type, encoding name).
CodecLookup = Callable[[str, int, str], Sequence[tuple[int, str]] | None]


class MusicOnHold:
    """Music for every held party of the relay's calls (module docstring).

    Register L{hold_changed} as a hold listener and L{call_closed} as a
    close listener of the L{media.relay.Relay} (L{media.backend.RelayBackend}
    does), then L{start}.

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
        self._calls: dict[str, dict[int, _Stream]] = {}
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
        streams = self._calls.setdefault(end.call_id, {})
        stream = streams.get(end.index)
        if stream is not None and stream.endpoints.get(end.side, end.rtp) is not end.rtp:
            # the line was closed and opened again: new sockets, a new stream
            self._stop(end.call_id, end.index, stream)
            stream = None
        if stream is None:
            stream = streams[end.index] = _Stream()
        stream.endpoints[end.side] = end.rtp
        stream.rates = end.clock_rates
        other = "b" if end.side == "a" else "a"
        stream.holding[end.side] = end.held and not (answer and stream.holding[other])
        if answer:
            stream.answered = True
        self._evaluate(end, stream)

    def formats_changed(self, call_id: str, side: str) -> None:
        """Party C{side} sent new SDP: if it is held, it gets music in the
        codec that SDP prefers (or none, without PCMU and PCMA).

        @param call_id: the call.
        @param side: the party whose SDP it was.
        """
        streams = self._calls.get(call_id)
        if not streams:
            return
        for index, stream in streams.items():
            if stream.target != side or stream.endpoints.get(side) is None:
                continue
            codec = self._choose(call_id, index, side, _Rates(stream.rates))
            if codec == stream.codec:
                continue
            listener = stream.listener
            if listener is not None and codec is not None:
                listener.payload_type = codec[0]
                listener.ring = self.music.rings[codec[1]]
                stream.codec = codec
                continue
            self._stop(call_id, index, stream)
            self._play(call_id, index, stream, side, _Rates(stream.rates))

    def call_closed(self, call_id: str) -> None:
        """The call's media is closing: its music stops."""
        streams = self._calls.pop(call_id, None)
        if streams is None:
            return
        for index, stream in streams.items():
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
        stream = self._calls.get(call_id, {}).get(index)
        if stream is None or stream.listener is None or stream.target is None:
            return None
        return stream.target, stream.listener

    # ---- deciding ---------------------------------------------------------

    def _evaluate(self, end: RelayEnd, stream: _Stream) -> None:
        """Start or stop music after a change of one of the stream's ends."""
        holders = [side for side in _SIDES if stream.holding[side]]
        if stream.answered and not holders:
            stream.was_active = True
        wanted: str | None = None
        if end.media == "audio" and stream.was_active and len(holders) == 1:
            wanted = "b" if holders[0] == "a" else "a"
        if wanted == stream.target:
            return
        self._stop(end.call_id, end.index, stream)
        if wanted is not None:
            self._play(end.call_id, end.index, stream, wanted, end)

    def _play(self, call_id: str, index: int, stream: _Stream, side: str,
              end: RelayEnd | _Rates) -> None:
        """Party C{side} is held: music (or silence) for it, its holder muted."""
        stream.target = side
        stream.codec = self._choose(call_id, index, side, end)
        if stream.codec is None:
            self._no_codec += 1
            _log.info("moh: no PCMU or PCMA for the held party of {call_id} (stream {index})",
                      call_id=call_id, index=index)
            return
        holder = stream.endpoints.get("b" if side == "a" else "a")
        if holder is not None:
            holder.mute = True
            stream.muted = holder
        self._holds += 1
        if len(self._listeners) >= self.max_listeners:
            self._refused += 1
            self._waiting[(call_id, index)] = None
            return
        self._listen(stream)

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
                end: RelayEnd | _Rates) -> tuple[int, str] | None:
        """The payload type and encoding the held party gets."""
        signalled = self._codecs(call_id, index, side) if self._codecs is not None else None
        if signalled is not None:
            for payload_type, name in signalled:
                if name.upper() in _CODECS:
                    return payload_type, name.upper()
            return None
        rates = end.clock_rates
        for codec in (PCMU, PCMA):
            if rates.get(codec.payload_type) == RATE:
                return codec.payload_type, codec.name
        return None

    def _stop(self, call_id: str, index: int, stream: _Stream) -> None:
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
            stream = self._calls.get(call_id, {}).get(index)
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


class MohCollector:
    """The music-on-hold figures for a Prometheus registry, read at each
    scrape (C{b2bua_media_moh_*})."""

    GAUGES = (("listeners", "Held parties hearing music on hold now."),
              ("waiting", "Held parties hearing silence because every music-on-hold "
                          "place is taken."))
    COUNTERS = (("packets_sent", "RTP packets of music on hold sent."),
                ("packets_unsent", "Music-on-hold packets that could not be sent."),
                ("frames_skipped", "Music-on-hold frames skipped because the timer ran late."),
                ("no_codec", "Held streams without PCMU or PCMA: no music on hold."),
                ("refused", "Holds that found every music-on-hold place taken."),
                ("holds", "Holds that started music on hold."))

    def __init__(self, moh: MusicOnHold) -> None:
        """
        @param moh: the service whose figures are exported.
        """
        self.moh = moh

    def describe(self) -> list[Any]:
        """Nothing up front (the figures are read at collection)."""
        return []

    def collect(self) -> Iterator[Any]:
        """The gauges and counters now."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counters = self.moh.counters()
        for name, text in self.GAUGES:
            yield GaugeMetricFamily(f"b2bua_media_moh_{name}", text,
                                    value=getattr(counters, name))
        for name, text in self.COUNTERS:
            yield CounterMetricFamily(f"b2bua_media_moh_{name}", text,
                                      value=getattr(counters, name))


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
