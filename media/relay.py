"""The built-in RTP relay: UDP sockets that anchor each call's media.

For every call and every active C{m=} line the relay holds two port pairs
(an even RTP port and the odd RTCP port above it), one facing each party:
party A sends to and receives from the pair facing A, party B the pair
facing B.  A packet that arrives on the RTP socket facing A is counted in
A's reception statistics and sent out of the RTP socket facing B to B's
address, and the other way round; RTCP does the same on the odd ports.

Where a party's packets are accepted from and sent to is decided per socket
by a L{Latch} (RFC 7362 symmetric latching, L{media.latching}): the SDP
address until the party's first packet, the latched source afterwards.

The relay knows nothing of SDP: L{Relay.update} takes one L{StreamParams}
per C{m=} line, as L{media.backend.RelayBackend} reads them from an offer or
answer, and returns the ports to write into the SDP sent to the other side.

The sockets themselves are L{media.endpoints}; relay-wide counters are
summed from them when asked for, so the hot path counts nothing shared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IReactorTime, IReactorUDP

from media.endpoints import RtcpEndpoint, RtpEndpoint
from media.interfaces import SIDES, MediaStats, StreamStats, UnknownCall, other_side
from media.latching import Address, Latch, LatchPolicy
from media.ports import PortPool
from media.rtp import ReceptionStatistics

__all__ = ["Relay", "RelayCounters", "RelayEnd", "StreamParams"]


@dataclass(frozen=True, slots=True)
class StreamParams:
    """What one party's SDP says about one stream.

    @ivar media: the C{m=} media type (C{audio}, C{image} ...).
    @ivar rtp: whether the stream carries RTP (sequence and jitter
        statistics); C{False} for T.38 UDPTL and other non-RTP transports.
    @ivar address: where to send the party's media until it latches, or
        C{None} (unknown, or a null address).
    @ivar rtcp_address: the same for RTCP.
    @ivar held: the party holds the stream (C{sendonly}, C{inactive} or a
        null address): dead-media detection leaves it alone.
    @ivar clock_rates: payload type -> clock rate, 0 for payload types
        left out of the jitter (telephone-event).
    """

    media: str
    rtp: bool
    address: Address | None
    rtcp_address: Address | None
    held: bool = False
    clock_rates: Mapping[int, int] | None = None


@dataclass(frozen=True, slots=True)
class RelayCounters:
    """Relay-wide figures for metrics (counts since start, gauges now).

    @ivar calls: calls with media now.
    @ivar streams: streams relayed now.
    @ivar ports_in_use: UDP ports open now (two per pair).
    @ivar ports_capacity: UDP ports of the configured range (pairs x 2).
    @ivar packets_relayed: packets sent on to the other party (RTP and
        RTCP).
    @ivar bytes_relayed: their bytes.
    @ivar dropped_foreign: packets refused from a source other than the
        latched one (hijack attempts, stray streams).
    @ivar dropped_no_destination: packets with nowhere to go yet (the
        other party's address unknown or on hold).
    @ivar send_errors: packets the socket layer refused to send.
    @ivar latches: sources latched.
    @ivar takeovers: latched sources replaced by another.
    @ivar bind_failures: port pairs skipped because they could not be
        bound.
    @ivar ports_exhausted: offers refused for want of a port pair.
    """

    calls: int
    streams: int
    ports_in_use: int
    ports_capacity: int
    packets_relayed: int
    bytes_relayed: int
    dropped_foreign: int
    dropped_no_destination: int
    send_errors: int
    latches: int
    takeovers: int
    bind_failures: int
    ports_exhausted: int


@dataclass(frozen=True, slots=True)
class RelayEnd:
    """A view of the relay's sockets facing one party of one stream, for
    features that listen to or speak into a call's media (recording, music
    on hold).

    @ivar call_id: the call.
    @ivar index: the stream's C{m=} index.
    @ivar side: the party this end faces, C{"a"} or C{"b"}.
    @ivar media: the stream's media type (C{audio} ...).
    @ivar rtp: the live RTP endpoint facing the party: its C{tap} sees what
        the party sends, its C{mute} stops relaying that, and its
        C{send_to_party} speaks to the party.
    @ivar held: whether the party holds the stream (C{sendonly},
        C{inactive} or a null address in its last SDP).
    @ivar clock_rates: payload type -> clock rate, as signalled.
    """

    call_id: str
    index: int
    side: str
    media: str
    rtp: RtpEndpoint
    held: bool
    clock_rates: Mapping[int, int]


class _End:
    """The relay's port pair facing one party of one stream."""

    __slots__ = ("held", "listening", "port", "rtcp", "rtp", "seen")

    def __init__(
        self, port: int, rtp: RtpEndpoint, rtcp: RtcpEndpoint, listening: list[IListeningPort]
    ) -> None:
        self.port = port
        self.rtp = rtp
        self.rtcp = rtcp
        self.listening = listening
        self.held = False
        self.seen = False


class _Stream:
    """One C{m=} line of a call: two ends, and its media state."""

    __slots__ = ("activated_at", "answered", "ends", "index", "is_rtp", "media", "rates")

    def __init__(self, index: int, ends: dict[str, _End], now: float) -> None:
        self.index = index
        self.ends = ends
        self.media = ""
        self.is_rtp = True
        self.answered = False
        self.activated_at = now
        self.rates: dict[int, int] = {}

    @property
    def active(self) -> bool:
        """Negotiated and held by neither party: media is expected."""
        return self.answered and not (self.ends["a"].held or self.ends["b"].held)

    def last_media(self) -> float:
        """When media last came from either party (or the stream became
        active, if later)."""
        last = self.activated_at
        for end in self.ends.values():
            seen = end.rtp.latch.last_seen
            if seen is not None and seen > last:
                last = seen
        return last

    def snapshot(self) -> Iterator[StreamStats]:
        """The stream's statistics, party A's then party B's."""
        for side in SIDES:
            endpoint = self.ends[side].rtp
            stats = endpoint.stats
            yield StreamStats(
                self.index,
                self.media,
                side,
                stats.packets,
                stats.bytes,
                stats.lost if self.is_rtp else 0,
                stats.jitter_ms,
                stats.rtt_ms,
                endpoint.latch.last_seen,
            )


class _CallMedia:
    """A call's streams (by C{m=} index; C{None} for disabled lines), the
    statistics of streams already gone, and closes in progress."""

    __slots__ = ("archived", "closing", "streams")

    def __init__(self) -> None:
        self.streams: list[_Stream | None] = []
        self.archived: list[StreamStats] = []
        self.closing: list[Deferred[Any]] = []


class Relay:
    """Port pairs, latching and statistics for every call with media.

    @ivar pool: the port pool.
    @ivar interface: the local address the sockets bind to.
    @ivar policy: the latching rules.
    """

    def __init__(
        self,
        reactor: IReactorUDP,
        pool: PortPool,
        *,
        interface: str = "127.0.0.1",
        policy: LatchPolicy | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param reactor: opens the UDP sockets.
        @param pool: where the port pairs come from.
        @param interface: the address to bind (C{0.0.0.0} or C{::} for all).
        @param policy: latching rules (defaults: L{LatchPolicy}()).
        @param clock: the time source; defaults to C{reactor}.
        """
        self._reactor = reactor
        self.pool = pool
        self.interface = interface
        self.policy = policy if policy is not None else LatchPolicy()
        self._clock: IReactorTime = clock if clock is not None else reactor  # type: ignore[assignment]
        self._seconds = self._clock.seconds
        self._calls: dict[str, _CallMedia] = {}
        self._closed = _Totals()
        #: called as C{listener(end)} with a L{RelayEnd} whenever a party's
        #: hold state of a stream changes (and for each new stream's ends).
        self.hold_listeners: list[Callable[[RelayEnd], None]] = []
        #: called as C{listener(call_id)} when a call's media is closed.
        self.close_listeners: list[Callable[[str], None]] = []

    # ---- signalling side ---------------------------------------------

    def __contains__(self, call_id: object) -> bool:
        """Whether the relay holds media for C{call_id}."""
        return call_id in self._calls

    def update(
        self, call_id: str, side: str, streams: Sequence[StreamParams | None], *, answer: bool
    ) -> list[int | None]:
        """Apply an offer or answer from C{side} to a call's streams.

        Streams the SDP enables get port pairs (both ends at once, on the
        first offer that enables them); streams it disables (C{None}) are
        closed, their statistics kept.  The party's addresses re-open
        latching where they changed.  An answer marks its streams
        negotiated, which starts dead-media supervision.  All port pairs
        are taken before anything changes, so a failure leaves the call as
        it was (and a new call not created).

        @param call_id: the call.
        @param side: the party whose SDP this is, C{"a"} or C{"b"}.
        @param streams: one entry per C{m=} line, C{None} for port 0.
        @param answer: whether the SDP is an answer (which never opens new
            streams: a line the offer did not enable cannot be relayed).
        @return: per C{m=} line, the relay port facing the other party, to
            be written into the SDP sent there; C{None} for a line that is
            not relayed (port 0 in that SDP).
        @raise PortsExhausted: when port pairs ran out (nothing changed).
        @raise UnknownCall: for an answer on a call without an offer.
        @raise ValueError: for a bad C{side}.
        """
        other = other_side(side)
        call = self._calls.get(call_id)
        if call is None:
            if answer:
                raise UnknownCall(f"no offer for call {call_id!r}")
            call = _CallMedia()
        wanted = [
            index
            for index, params in enumerate(streams)
            if params is not None
            and not answer
            and (index >= len(call.streams) or call.streams[index] is None)
        ]
        opened = self._open_ends(len(wanted))
        now = self._seconds()
        fresh = dict(zip(wanted, opened, strict=True))
        if len(call.streams) < len(streams):
            call.streams.extend([None] * (len(streams) - len(call.streams)))
        ports: list[int | None] = []
        for index, params in enumerate(streams):
            stream = call.streams[index]
            if params is None:
                if stream is not None:
                    self._retire(call, stream)
                    call.streams[index] = None
                ports.append(None)
                continue
            if stream is None:
                ends = fresh.get(index)
                if ends is None:
                    ports.append(None)
                    continue
                stream = call.streams[index] = _Stream(index, ends, now)
            changed = self._apply(call, stream, side, params, answer, now)
            if changed and self.hold_listeners:
                self._announce(call_id, stream, side)
            ports.append(stream.ends[other].port)
        self._calls[call_id] = call
        return ports

    def _apply(
        self,
        call: _CallMedia,
        stream: _Stream,
        side: str,
        params: StreamParams,
        answer: bool,
        now: float,
    ) -> bool:
        """Set one party's view of one stream.

        @return: whether the party's hold state changed (or the stream is
            new to it).
        """
        if stream.media != params.media or stream.is_rtp != params.rtp:
            if stream.media:
                call.archived.extend(stream.snapshot())
            stream.media = params.media
            stream.is_rtp = params.rtp
            stream.rates = {}
            for end in stream.ends.values():
                end.rtp.stats = ReceptionStatistics(stream.rates, rtp=params.rtp)
        if params.clock_rates:
            stream.rates.update(params.clock_rates)
        was_active = stream.active
        end = stream.ends[side]
        moved = end.rtp.latch.expect(params.address)
        end.rtcp.latch.expect(params.rtcp_address)
        changed = end.held != params.held or not end.seen
        end.held = params.held
        end.seen = True
        if answer:
            stream.answered = True
        if stream.active and (moved or not was_active):
            stream.activated_at = now
        return changed

    def _announce(self, call_id: str, stream: _Stream, side: str) -> None:
        """Tell the hold listeners about one end (their errors are theirs)."""
        view = _view(call_id, stream, side)
        for listener in list(self.hold_listeners):
            listener(view)

    def ends(self, call_id: str) -> list[RelayEnd]:
        """The live streams' ends of a call (stream order, A before B).

        @param call_id: the call.
        @return: the views; empty for an unknown call.
        """
        call = self._calls.get(call_id)
        if call is None:
            return []
        return [_view(call_id, stream, side)
                for stream in call.streams if stream is not None for side in SIDES]

    def _open_ends(self, count: int) -> list[dict[str, _End]]:
        """Take and open C{count} streams' worth of port pairs, or none."""
        opened: list[dict[str, _End]] = []
        ends: dict[str, _End] = {}
        try:
            for _ in range(count):
                ends = {}
                for side in SIDES:
                    ends[side] = self._open_end()
                a, b = ends["a"], ends["b"]
                a.rtp.peer, b.rtp.peer = b.rtp, a.rtp
                a.rtcp.peer, b.rtcp.peer = b.rtcp, a.rtcp
                opened.append(ends)
        except BaseException:
            for end in [*ends.values(), *(e for pair in opened for e in pair.values())]:
                self._close_end(end)
            raise
        return opened

    def _open_end(self) -> _End:
        """Take one port pair from the pool and listen on it."""
        _, end = self.pool.acquire(self._listen_pair)
        return end

    def _listen_pair(self, port: int) -> _End:
        """Open the RTP and RTCP sockets of one end on C{port}/C{port + 1}."""
        stats = ReceptionStatistics()
        rtp = RtpEndpoint(Latch(self.policy), self._seconds, stats)
        rtcp = RtcpEndpoint(Latch(self.policy), self._seconds, rtp)
        first = self._reactor.listenUDP(port, rtp, interface=self.interface)
        try:
            second = self._reactor.listenUDP(port + 1, rtcp, interface=self.interface)
        except BaseException:
            first.stopListening()
            raise
        return _End(port, rtp, rtcp, [first, second])

    def _close_end(self, end: _End) -> Deferred[None]:
        """Close one end's sockets; its pair goes back to the pool after."""
        self._closed.add(end)
        closing = [maybeDeferred(listening.stopListening) for listening in end.listening]
        end.listening = []
        done: Deferred[Any] = DeferredList(closing, consumeErrors=True)

        def release(_: object) -> None:
            self.pool.release(end.port)

        done.addCallback(release)
        return done

    def _retire(self, call: _CallMedia, stream: _Stream) -> None:
        """Close a stream that a re-offer or answer disabled."""
        call.archived.extend(stream.snapshot())
        for end in stream.ends.values():
            call.closing.append(self._close_end(end))

    def statistics(self, call_id: str) -> MediaStats | None:
        """A call's statistics now.

        @param call_id: the call.
        @return: entries of streams gone (in the order they went), then of
            live streams by index, party A before B; C{None} for an
            unknown call.
        """
        call = self._calls.get(call_id)
        if call is None:
            return None
        return _stats_of(call)

    def close(self, call_id: str) -> Deferred[MediaStats | None]:
        """The call ended: close all its sockets and free its ports.

        @param call_id: the call.
        @return: fires with the final statistics (C{None} for an unknown
            call) once every port is back in the pool.
        """
        call = self._calls.pop(call_id, None)
        if call is None:
            return succeed(None)
        for listener in list(self.close_listeners):
            listener(call_id)
        stats = _stats_of(call)
        closing = list(call.closing)
        for stream in call.streams:
            if stream is not None:
                closing.extend(self._close_end(end) for end in stream.ends.values())
        done: Deferred[Any] = DeferredList(closing, consumeErrors=True)
        done.addCallback(lambda _: stats)
        return done

    def close_all(self) -> Deferred[None]:
        """Close every call (shutdown).

        @return: fires when every port is back in the pool.
        """
        closing = [self.close(call_id) for call_id in list(self._calls)]
        done: Deferred[Any] = DeferredList(closing, consumeErrors=True)
        done.addCallback(lambda _: None)
        return done

    # ---- supervision -------------------------------------------------

    def silent_calls(self, now: float, timeout: float) -> list[str]:
        """Calls whose media has stopped (the dead-media primitive).

        A call is silent when it has at least one active stream (answered,
        held by neither party) and no RTP came from either party on any
        active stream for more than C{timeout} seconds (counted from when
        the stream became active, if later).  Held streams are ignored, so
        a call on hold is never silent.

        @param now: the clock reading to judge at.
        @param timeout: the silence allowed, in seconds.
        @return: the call ids.
        """
        silent = []
        for call_id, call in self._calls.items():
            active = [s for s in call.streams if s is not None and s.active]
            if active and all(now - stream.last_media() > timeout for stream in active):
                silent.append(call_id)
        return silent

    def counters(self) -> RelayCounters:
        """Relay-wide counters and gauges for metrics.

        @return: the figures now.
        """
        totals = _Totals()
        totals.merge(self._closed)
        streams = 0
        for call in self._calls.values():
            for stream in call.streams:
                if stream is not None:
                    streams += 1
                    for end in stream.ends.values():
                        totals.add(end)
        return RelayCounters(
            calls=len(self._calls),
            streams=streams,
            ports_in_use=self.pool.in_use * 2,
            ports_capacity=self.pool.capacity * 2,
            packets_relayed=totals.relayed,
            bytes_relayed=totals.relayed_bytes,
            dropped_foreign=totals.dropped,
            dropped_no_destination=totals.undeliverable,
            send_errors=totals.send_errors,
            latches=totals.latches,
            takeovers=totals.takeovers,
            bind_failures=self.pool.bind_failures,
            ports_exhausted=self.pool.exhausted,
        )


class _Totals:
    """Sums of endpoint counters (of closed ends, or of everything)."""

    __slots__ = (
        "dropped",
        "latches",
        "relayed",
        "relayed_bytes",
        "send_errors",
        "takeovers",
        "undeliverable",
    )

    def __init__(self) -> None:
        self.relayed = 0
        self.relayed_bytes = 0
        self.dropped = 0
        self.undeliverable = 0
        self.send_errors = 0
        self.latches = 0
        self.takeovers = 0

    def add(self, end: _End) -> None:
        """Add the counters of one end's two sockets."""
        for endpoint in (end.rtp, end.rtcp):
            self.relayed += endpoint.relayed
            self.relayed_bytes += endpoint.relayed_bytes
            self.undeliverable += endpoint.undeliverable
            self.send_errors += endpoint.send_errors
            self.dropped += endpoint.latch.dropped
            self.latches += endpoint.latch.latches
            self.takeovers += endpoint.latch.takeovers

    def merge(self, other: _Totals) -> None:
        """Add another total."""
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _view(call_id: str, stream: _Stream, side: str) -> RelayEnd:
    """The public view of one end of a stream."""
    end = stream.ends[side]
    return RelayEnd(call_id, stream.index, side, stream.media, end.rtp, end.held,
                    dict(stream.rates))


def _stats_of(call: _CallMedia) -> MediaStats:
    """A call's L{MediaStats}: streams gone, then live ones."""
    entries = list(call.archived)
    for stream in call.streams:
        if stream is not None:
            entries.extend(stream.snapshot())
    return MediaStats(tuple(entries))
