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
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime, IReactorUDP
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from b2bua.sip.offer_answer import effective_connection, is_on_hold, rewrite_connection
from b2bua.sip.sdp import MediaDescription, SessionDescription
from media.interfaces import MediaStats, MediaUnavailable
from media.latching import Address, LatchPolicy
from media.ports import PortPool
from media.relay import Relay, RelayCounters, StreamParams

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


class RelayBackend:
    """L{media.interfaces.IMediaBackend} on the built-in relay.

    Every method fires its Deferred before returning (the relay is local).

    @ivar relay: the relay (port pool, calls, counters).
    @ivar advertised_address: the address written into SDP.
    @ivar media_timeout: seconds of silence that make a call dead, or
        C{None} (no dead-media detection).
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
        @raise ValueError: for a bad address, range, timeout or interval.
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
        if self._checker is not None or self.media_timeout is None or self._on_dead is None:
            return
        checker = LoopingCall(self._check)
        checker.clock = self._clock
        checker.start(self._check_interval, now=False)
        self._checker = checker

    def stop(self) -> Deferred[None]:
        """Stop the dead-media check and close every call's media.

        @return: fires when every port is back in the pool.
        """
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
            ports = self.relay.update(call_id, side, params, answer=answer)
            return succeed(self._rewrite(sdp, ports))
        except MediaUnavailable as error:
            _log.warn("media: {error} (call {call_id})", error=error, call_id=call_id)
            return fail()
        except Exception:
            return fail()

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
