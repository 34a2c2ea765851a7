"""L{RelayBackend}: the media backend contract on the built-in relay.

It reads each offer and answer into L{StreamParams} (where the party wants
media, whether it holds the stream, its payload types' clock rates), lets
the L{Relay} open or update the streams, and returns a copy of the SDP that
points every relayed C{m=} line at the relay:

 - C{c=} (session and media level) gets the advertised address, C{m=} the
   port of the relay's pair facing the party the SDP goes to; C{a=rtcp}
   (RFC 3605), when present, gets that pair's RTCP port.  A null address
   (RFC 2543 hold) stays null, so the hold reads the same on the other leg.
 - Lines at port 0 stay at port 0.  A line the relay cannot relay (an
   answer enabling a line its offer disabled) is rejected (port 0).
 - Payload types, C{a=rtpmap}/C{a=fmtp} (telephone-event included),
   directions, crypto and everything else are kept; ICE attributes are
   removed (the relay does not do ICE, and the candidates would let the
   parties bypass it); a C{/<count>} port suffix is dropped (one pair is
   relayed per line).
 - The C{o=} line is left alone unless C{replace_origin} is set.

Dead media: with C{media_timeout} and C{on_dead}, one L{LoopingCall} for the
whole relay asks L{Relay.silent_calls} every C{check_interval} seconds and
reports each silent call once per silence (held streams never count).

Music on hold (L{media.moh.MusicOnHold}, on by default): the backend
registers the service as the relay's hold and close listener, tells it
whether each hold change came in an offer or an answer, and which of
PCMU/PCMA each party's latest SDP offered (in its order of preference);
L{start} and L{stop} start and stop it with the dead-media check.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime, IReactorUDP
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from b2bua.sip.offer_answer import effective_connection, is_on_hold, rewrite_connection
from b2bua.sip.sdp import MediaDescription, SessionDescription
from media.interfaces import MediaStats, MediaUnavailable
from media.latching import Address, LatchPolicy
from media.moh import MohCollector, MusicOnHold, music_on_hold_from_config
from media.ports import PortPool
from media.relay import Relay, RelayCounters, RelayEnd, StreamParams

__all__ = ["ICE_ATTRIBUTES", "RelayBackend"]

_log = Logger()

#: Attributes of ICE (RFC 8839) removed from relayed SDP.
ICE_ATTRIBUTES = frozenset(
    {
        "candidate",
        "end-of-candidates",
        "ice-lite",
        "ice-mismatch",
        "ice-options",
        "ice-pwd",
        "ice-ufrag",
        "remote-candidates",
    }
)

_UNSPECIFIED = frozenset({"0.0.0.0", "::"})
#: The encodings music on hold can be sent in.
_MOH_ENCODINGS = frozenset({"PCMU", "PCMA"})


class RelayBackend:
    """L{media.interfaces.IMediaBackend} on the built-in relay.

    Every method fires its Deferred before returning (the relay is local).

    @ivar relay: the relay (port pool, calls, counters).
    @ivar advertised_address: the address written into SDP.
    @ivar media_timeout: seconds of silence that make a call dead, or
        C{None} (no dead-media detection).
    @ivar moh: the music-on-hold service, or C{None} (disabled).
    """

    def __init__(
        self,
        reactor: IReactorUDP,
        *,
        interface: str = "127.0.0.1",
        port_range: tuple[int, int] = (30000, 39999),
        advertised_address: str | None = None,
        latching: LatchPolicy | None = None,
        media_timeout: float | None = None,
        on_dead: Callable[[str], object] | None = None,
        check_interval: float = 1.0,
        replace_origin: bool = False,
        clock: IReactorTime | None = None,
        moh: MusicOnHold | bool | Any = True,
        registry: Any = None,
    ) -> None:
        """
        @param reactor: opens the UDP sockets (and is the clock unless
            C{clock} is given).
        @param interface: the local IP address to bind the media sockets
            to; C{0.0.0.0} or C{::} binds all (then C{advertised_address}
            is required).
        @param port_range: first and last port (inclusive) of the range.
        @param advertised_address: the address written into SDP; defaults
            to C{interface}.
        @param latching: latching rules.
        @param media_timeout: seconds without RTP on every active stream
            after which a call is dead; C{None} turns detection off.
        @param on_dead: called with the call id of each dead call, once
            per silence, from the check started by L{start}.
        @param check_interval: seconds between dead-media checks.
        @param replace_origin: also write the advertised address into the
            C{o=} line.
        @param clock: the time source.
        @param moh: music on hold: C{True} (the default) for the service
            with the generated music, C{False} or C{None} for none, a
            L{MusicOnHold} to use, or a C{[media.moh]} configuration
            (C{b2bua.config.MohConfig}: C{enabled}, C{file},
            C{max_listeners}).
        @param registry: a Prometheus C{CollectorRegistry} to export the
            music-on-hold figures to (L{MohCollector}).
        @raise ValueError: for a bad address, range, timeout or interval,
            or an unusable music file (naming C{media.moh.file}).
        """
        family = _ip_version(interface)
        if family is None:
            raise ValueError(f"media interface must be an IP address, not {interface!r}")
        if advertised_address is None:
            if interface in _UNSPECIFIED:
                raise ValueError(
                    f"media advertised_address is required when binding to {interface}"
                )
            advertised_address = interface
        elif not advertised_address or any(ch.isspace() for ch in advertised_address):
            raise ValueError(f"bad media advertised_address: {advertised_address!r}")
        if media_timeout is not None and media_timeout <= 0:
            raise ValueError(f"media_timeout must be > 0, not {media_timeout}")
        if check_interval <= 0:
            raise ValueError(f"check_interval must be > 0, not {check_interval}")
        self._clock: IReactorTime = clock if clock is not None else reactor  # type: ignore[assignment]
        self.relay = Relay(
            reactor, PortPool(*port_range), interface=interface, policy=latching, clock=self._clock
        )
        self._family = family
        self.advertised_address = advertised_address
        self.replace_origin = replace_origin
        self.media_timeout = media_timeout
        self._on_dead = on_dead
        self._check_interval = check_interval
        self._checker: LoopingCall | None = None
        self._reported: set[str] = set()
        #: call id -> (stream index, side) -> the PCMU/PCMA formats of that
        #: party's latest SDP, in its order
        self._g711: dict[str, dict[tuple[int, str], tuple[tuple[int, str], ...]]] = {}
        self._answering = False
        self.moh: MusicOnHold | None = self._music_on_hold(moh)
        if self.moh is not None:
            self.relay.hold_listeners.append(self._hold_changed)
            self.relay.close_listeners.append(self.moh.call_closed)
            if registry is not None:
                registry.register(MohCollector(self.moh))

    def _music_on_hold(self, moh: MusicOnHold | bool | Any) -> MusicOnHold | None:
        """The music-on-hold service the C{moh} argument asks for."""
        if moh is None or moh is False:
            return None
        if moh is True:
            return MusicOnHold(self._clock, codecs=self.g711_formats)
        if isinstance(moh, MusicOnHold):
            return moh
        return music_on_hold_from_config(self._clock, moh, codecs=self.g711_formats)

    def _hold_changed(self, end: RelayEnd) -> None:
        """Tell music on hold of a change, and whether an answer made it
        (a failure there is logged: it must not fail the SDP)."""
        assert self.moh is not None
        try:
            self.moh.hold_changed(end, answer=self._answering)
        except Exception:
            _log.failure("media: music on hold failed", call_id=end.call_id)

    def g711_formats(self, call_id: str, index: int, side: str
                     ) -> tuple[tuple[int, str], ...] | None:
        """The PCMU and PCMA formats (payload type, encoding) of a party's
        latest SDP for one stream, in its order of preference.

        @return: the formats (empty: the party offered neither), or
            C{None} when no SDP of that party was seen.
        """
        return self._g711.get(call_id, {}).get((index, side))

    # ---- IMediaBackend ----------------------------------------------

    def offer(
        self,
        call_id: str,
        from_tag: str,
        sdp: SessionDescription,
        *,
        to_tag: str | None = None,
        side: str = "a",
    ) -> Deferred[SessionDescription]:
        """An offer from C{side}; see L{media.interfaces.IMediaBackend.offer}.

        @return: fires with the rewritten copy; fails with
            L{media.ports.PortsExhausted} (a L{MediaUnavailable}) when port
            pairs ran out, or C{ValueError} for a bad C{side}.
        """
        return self._apply(call_id, sdp, side, answer=False)

    def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: SessionDescription,
        *,
        side: str = "b",
    ) -> Deferred[SessionDescription]:
        """An answer from C{side}; see L{media.interfaces.IMediaBackend.answer}.

        @return: fires with the rewritten copy; fails with
            L{media.interfaces.UnknownCall} when no offer was seen.
        """
        return self._apply(call_id, sdp, side, answer=True)

    def delete(self, call_id: str) -> Deferred[MediaStats | None]:
        """The call ended: close its sockets, give its ports back.

        @return: fires with the final statistics (C{None} for an unknown
            call) when every port is back in the pool.
        """
        self._reported.discard(call_id)
        self._g711.pop(call_id, None)
        return self.relay.close(call_id)

    def query(self, call_id: str) -> Deferred[MediaStats | None]:
        """The call's statistics now (C{None} for an unknown call)."""
        return succeed(self.relay.statistics(call_id))

    # ---- supervision and metrics --------------------------------------

    def silent_calls(self, now: float | None = None) -> list[str]:
        """Calls with no RTP on any active stream for C{media_timeout}.

        @param now: the clock reading to judge at (default: now).
        @return: the call ids; empty when detection is off.
        """
        if self.media_timeout is None:
            return []
        when = self._clock.seconds() if now is None else now
        return self.relay.silent_calls(when, self.media_timeout)

    def start(self) -> None:
        """Start the dead-media check (when a timeout and C{on_dead} are
        configured); one timer for the whole relay."""
        if self.moh is not None:
            self.moh.start()
        if self._checker is not None or self.media_timeout is None or self._on_dead is None:
            return
        checker = LoopingCall(self._check)
        checker.clock = self._clock
        checker.start(self._check_interval, now=False)
        self._checker = checker

    def stop(self) -> Deferred[None]:
        """Stop the dead-media check and music on hold, and close every
        call's media.

        @return: fires when every port is back in the pool.
        """
        if self.moh is not None:
            self.moh.stop()
        self._g711.clear()
        if self._checker is not None:
            self._checker.stop()
            self._checker = None
        self._reported.clear()
        return self.relay.close_all()

    def _check(self) -> None:
        """Report calls that went silent since the last check."""
        silent = self.silent_calls()
        on_dead = self._on_dead
        assert on_dead is not None
        for call_id in silent:
            if call_id not in self._reported:
                try:
                    on_dead(call_id)
                except Exception:
                    _log.failure("media: dead-media callback failed", call_id=call_id)
        self._reported = set(silent)

    def stats(self) -> RelayCounters:
        """Relay-wide counters (packets relayed, drops, ports in use ...)."""
        return self.relay.counters()

    # ---- SDP ------------------------------------------------------------

    def _apply(
        self, call_id: str, sdp: SessionDescription, side: str, *, answer: bool
    ) -> Deferred[SessionDescription]:
        """Read, update the relay, rewrite; every error becomes a failure."""
        try:
            params = [self._params(sdp, media) for media in sdp.media]
            if self.moh is not None:
                self._remember_g711(call_id, side, sdp)
            self._answering = answer
            try:
                ports = self.relay.update(call_id, side, params, answer=answer)
            finally:
                self._answering = False
                if call_id not in self.relay:
                    self._g711.pop(call_id, None)
            if self.moh is not None:
                try:
                    self.moh.formats_changed(call_id, side, answer=answer)
                except Exception:
                    _log.failure("media: music on hold failed", call_id=call_id)
            return succeed(self._rewrite(sdp, ports))
        except MediaUnavailable as error:
            _log.warn("media: {error} (call {call_id})", error=error, call_id=call_id)
            return fail()
        except Exception:
            return fail()

    def _remember_g711(self, call_id: str, side: str, sdp: SessionDescription) -> None:
        """Keep the PCMU/PCMA formats of each of the party's streams."""
        formats = self._g711.setdefault(call_id, {})
        for index, media in enumerate(sdp.media):
            formats[(index, side)] = tuple(
                (codec.payload_type, codec.name.upper()) for codec in media.codecs
                if codec.name.upper() in _MOH_ENCODINGS and codec.clock_rate == 8000)

    def _params(self, sdp: SessionDescription, media: MediaDescription) -> StreamParams | None:
        """What one C{m=} line asks of the relay (C{None}: port 0)."""
        if media.rejected:
            return None
        connection = effective_connection(sdp, media)
        host = None if connection is None else self._sendable(connection.address)
        address = None if host is None else (host, media.port)
        rtcp: Address | None = None
        if media.is_rtp and host is not None:
            rtcp = (host, media.port + 1)
            if media.has_attribute("rtcp-mux"):
                rtcp = address
            explicit = _parse_rtcp_attribute(media.get_attribute("rtcp"))
            if explicit is not None:
                port, rtcp_host = explicit
                rtcp_host = host if rtcp_host is None else self._sendable(rtcp_host)
                rtcp = None if rtcp_host is None else (rtcp_host, port)
        rates = {
            codec.payload_type: 0 if codec.name.lower() == "telephone-event" else codec.clock_rate
            for codec in media.codecs
        }
        return StreamParams(
            media=media.media,
            rtp=media.is_rtp,
            address=address,
            rtcp_address=rtcp,
            held=is_on_hold(sdp, media),
            clock_rates=rates,
        )

    def _sendable(self, host: str) -> str | None:
        """The address the relay can send to, in the form C{recvfrom}
        reports it; C{None} for a null, non-IP or other-family address."""
        try:
            ip = ipaddress.ip_address(host.split("/", 1)[0])
        except ValueError:
            return None
        if ip.version != self._family or ip.is_unspecified:
            return None
        return ip.compressed

    def _rewrite(self, sdp: SessionDescription, ports: list[int | None]) -> SessionDescription:
        """A copy of C{sdp} pointing every relayed line at the relay."""
        copy = sdp.copy()
        rtcp_lines: list[tuple[int, str | None] | None] = []
        for media, port in zip(copy.media, ports, strict=True):
            rtcp_lines.append(_find_rtcp(media))
            if port is None:
                if not media.rejected:
                    media.reject()
                continue
            media.port_count = None
            media.attributes[:] = [a for a in media.attributes if a[0] not in ICE_ATTRIBUTES]
        copy.attributes[:] = [a for a in copy.attributes if a[0] not in ICE_ATTRIBUTES]
        rewrite_connection(copy, self.advertised_address, ports, rewrite_origin=self.replace_origin)
        addrtype = "IP6" if ":" in self.advertised_address else "IP4"
        rows = zip(sdp.media, copy.media, ports, rtcp_lines, strict=True)
        for original, media, port, found in rows:
            if port is None or found is None:
                continue
            position, value = found
            explicit = _parse_rtcp_attribute(value)
            # a=rtcp naming the RTP port itself signals RTCP multiplexing.
            muxed = explicit is not None and explicit[0] == original.port
            text = str(port if muxed else port + 1)
            if explicit is not None and explicit[1] is not None:
                text = f"{text} IN {addrtype} {self.advertised_address}"
            media.remove_attributes("rtcp")
            media.attributes.insert(min(position, len(media.attributes)), ("rtcp", text))
        return copy


def _find_rtcp(media: MediaDescription) -> tuple[int, str | None] | None:
    """Where the C{a=rtcp} line of a stream is, and its value."""
    for position, (name, value) in enumerate(media.attributes):
        if name == "rtcp":
            return position, value
    return None


def _parse_rtcp_attribute(value: str | None) -> tuple[int, str | None] | None:
    """Parse C{a=rtcp:<port> [IN IP4 <address>]} (RFC 3605).

    @return: the port and the address (C{None} when not given), or
        C{None} when malformed.
    """
    if not value:
        return None
    parts = value.split()
    if not parts[0].isdigit() or len(parts[0]) > 5 or not 0 < int(parts[0]) <= 65535:
        return None
    if len(parts) == 4 and parts[1] == "IN":
        return int(parts[0]), parts[3]
    return int(parts[0]), None


def _ip_version(host: str) -> int | None:
    """4 or 6 for an IP literal, else C{None}."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None
