"""The SIP transport layer (RFC 3261 section 18) over UDP, TCP and TLS.

L{TransportLayer} implements L{b2bua.sip.interfaces.Transport}.  It listens
on the addresses given as listener strings (L{parse_listener}), parses what
arrives and hands each good message to its L{TransportUser} (the
transaction layer) with a L{Source}; it sends requests and responses where
RFC 3261 18.1 and 18.2.2 and RFC 3581 say.

Inbound, a request first gets C{received}/C{rport} in its top Via.  Bad
input never stops a listener: a request whose start line, Via, Call-ID and
CSeq can be read is answered C{400} with the parse error as reason phrase;
anything else is dropped.  Both are counted in L{TransportLayer.stats}.

Everything goes through the injected reactor: C{listenUDP}, C{listenTCP},
C{listenSSL}, C{connectTCP}, C{connectSSL} and C{callLater}.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.sip.errors import ParseError, TransportError
from b2bua.sip.framing import DEFAULT_MAX_SIZE, FramingError
from b2bua.sip.interfaces import Source, Target, TransportUser
from b2bua.sip.listeners import Listener, ListenerAddress, ListenerError, parse_listener
from b2bua.sip.message import Request, Response, parse_message
from b2bua.sip.tls import TLSConfig, TLSContexts, build_tls
from b2bua.sip.transport_rules import (
    bad_request,
    check_request,
    check_response,
    response_address,
    salvage_request,
    set_sent_by,
    stamp_via,
)
from b2bua.sip.transport_stream import StreamConnection, StreamConnections, normalize_host

__all__ = [
    "Listener",
    "ListenerAddress",
    "ListenerError",
    "TransportLayer",
    "parse_listener",
]

log = Logger()

#: RFC 3261 18.1.1: above this size a UDP request goes over TCP.
UDP_SIZE_LIMIT = 1300

#: Receive buffer asked for each UDP listener (bytes): a burst of a few
#: thousand datagrams, e.g. while a garbage collection pauses the reactor,
#: waits in the kernel instead of being dropped (each drop costs a
#: retransmission later, and drops beget drops).  The kernel caps it at
#: C{net.core.rmem_max}.
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024

#: Seconds a peer that refused the TCP of a large request is sent UDP only.
TCP_REFUSED_MEMORY = 300.0

#: What a keep-alive is: a CRLF CRLF ping (RFC 5626 4.4.1).
KEEPALIVE = b"\r\n\r\n"


class _DatagramReceiver(DatagramProtocol):
    """The protocol of one UDP listener: hands each datagram to the layer."""

    def __init__(self, layer: TransportLayer) -> None:
        self._layer = layer
        self.listener: Listener | None = None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """One datagram from C{addr} (host, port[, flow, scope])."""
        if self.listener is not None:
            self._layer._datagram_received(self.listener, data, addr[0], addr[1])


class TransportLayer:
    """UDP, TCP and TLS listeners and connections (RFC 3261 section 18).

    @ivar user: who receives parsed messages (settable, for wiring).
    @ivar stats: counters (a L{Counter}): C{messages_received},
        C{requests_received}, C{responses_received}, C{bad_requests_answered},
        C{messages_dropped}, C{keepalives_received}, C{udp_to_tcp},
        C{send_errors}, C{user_errors}, C{internal_errors} and the stream
        counters of L{StreamConnections} (C{connections_accepted},
        C{connections_refused}, C{connections_opened}, C{connect_failures},
        C{connections_closed}, C{idle_timeouts}, C{framing_errors},
        C{keepalive_pings}).
    @ivar listeners: bound listeners, in the order they were added.
    @ivar connections: the TCP/TLS connections.
    """

    def __init__(
        self,
        reactor: Any,
        user: TransportUser | None,
        *,
        tls: TLSConfig | TLSContexts | None = None,
        idle_timeout: float = 600.0,
        max_connections_per_address: int = 64,
        max_message_size: int = DEFAULT_MAX_SIZE,
        udp_size_limit: int | None = UDP_SIZE_LIMIT,
        connect_timeout: float = 10.0,
        udp_receive_buffer: int | None = UDP_RECEIVE_BUFFER,
    ) -> None:
        """
        @param reactor: provides IReactorUDP, IReactorTCP, IReactorSSL (for
            TLS) and IReactorTime.
        @param tls: our TLS identity (required for TLS listeners and sends).
        @param idle_timeout: seconds before an unused TCP/TLS connection is
            closed (0 never).
        @param max_connections_per_address: inbound TCP/TLS connections
            allowed at once from one IP address.
        @param max_message_size: the largest message accepted (bytes).
        @param udp_size_limit: requests larger than this go over TCP when a
            TCP listener exists (RFC 3261 18.1.1); C{None} never switches.
        @param connect_timeout: seconds an outbound connect may take.
        @param udp_receive_buffer: C{SO_RCVBUF} asked for UDP listeners
            (C{None} keeps the system default).
        """
        self._reactor = reactor
        self.user = user
        #: answers datagrams that are not SIP (RFC 5626 4.4.2: STUN
        #: keep-alives on the SIP port): C{(data, (host, port)) -> reply or
        #: None}; set by the service (the stack knows no STUN)
        self.datagram_responder: Callable[[bytes, tuple[str, int]], bytes | None] | None = None
        self.tls = build_tls(tls) if isinstance(tls, TLSConfig) else tls
        self.max_message_size = max_message_size
        self.udp_size_limit = udp_size_limit
        self.udp_receive_buffer = udp_receive_buffer
        self.stats: Counter[str] = Counter()
        self.listeners: list[Listener] = []
        #: (host, port) -> time until which large requests to it skip TCP
        self._tcp_refused: dict[tuple[str, int], float] = {}
        self.connections = StreamConnections(
            reactor, self._stream_message, self._stream_framing_error, self.stats,
            idle_timeout=idle_timeout, max_per_address=max_connections_per_address,
            max_message_size=max_message_size, connect_timeout=connect_timeout,
        )

    # -- listeners -----------------------------------------------------------

    def listen(self, listener: str | ListenerAddress) -> Listener:
        """Start listening.

        @raise ListenerError: on a bad string, a TLS listener without TLS
            configuration, or an address that cannot be bound.
        """
        address = parse_listener(listener) if isinstance(listener, str) else listener
        text = address.text or f"{address.transport.lower()}:{address.host}:{address.port}"
        holder: list[Listener] = []

        def local() -> tuple[str, int]:
            return holder[0].sent_by

        try:
            if address.transport == "UDP":
                receiver = _DatagramReceiver(self)
                port = self._reactor.listenUDP(
                    address.port, receiver, interface=address.host,
                    maxPacketSize=self.max_message_size,
                )
                _grow_receive_buffer(port, self.udp_receive_buffer)
            elif address.transport == "TCP":
                factory = self.connections.server_factory("TCP", local)
                port = self._reactor.listenTCP(address.port, factory, interface=address.host)
            elif address.transport == "TLS":
                if self.tls is None:
                    raise ListenerError(f"SIP listener {text!r}: TLS is not configured")
                factory = self.connections.server_factory("TLS", local)
                port = self._reactor.listenSSL(
                    address.port, factory, self.tls.server, interface=address.host
                )
            else:
                raise ListenerError(f"SIP listener {text!r}: unknown transport "
                                    f"{address.transport!r}")
        except CannotListenError as exc:
            raise ListenerError(f"cannot listen on {text!r}: {exc.socketError}") from None
        bound = Listener(address, port, port.getHost().port or address.port)
        holder.append(bound)
        if address.transport == "UDP":
            receiver.listener = bound
        for other in self.listeners:
            if other.transport == bound.transport and other.sent_by == bound.sent_by:
                port.stopListening()
                raise ListenerError(f"SIP listener {text!r}: {other.address.text!r} "
                                    f"already uses that address")
        self.listeners.append(bound)
        log.info("SIP listening on {transport} {host}:{port}", transport=bound.transport,
                 host=address.host, port=bound.bound_port)
        return bound

    def stop(self) -> Deferred[None]:
        """Stop every listener and close every connection.

        @return: fires once all are closed.
        """
        waits: list[Deferred[Any]] = []
        for listener in self.listeners:
            result = listener.port.stopListening()
            if isinstance(result, Deferred):
                waits.append(result)
        self.listeners = []
        waits.append(self.connections.close_all())
        return DeferredList(waits).addCallback(lambda _: None)

    def local_address(self, transport: str) -> tuple[str, int]:
        """(host, port) of our first listener for C{transport} (Via, Contact).

        @raise TransportError: when no listener of that kind exists.
        """
        transport = transport.upper()
        for listener in self.listeners:
            if listener.transport == transport:
                return listener.sent_by
        raise TransportError(f"no {transport} listener")

    def listener_for(self, transport: str, host: str) -> Listener:
        """The listener to send with to C{host}: same transport, same IP version.

        @raise TransportError: when there is none.
        """
        transport = transport.upper()
        version = _ip_version(host)
        for listener in self.listeners:
            if listener.transport == transport and listener.version == version:
                return listener
        raise TransportError(f"no {transport} listener for IPv{version}")

    # -- sending -----------------------------------------------------------

    def send_request(self, request: Request, target: Target) -> Deferred[None]:
        """Send a request; the top Via gets our transport and sent-by.

        A UDP request larger than C{udp_size_limit} goes over TCP when a
        TCP listener exists (RFC 3261 18.1.1); if that connection cannot be
        opened it is sent over UDP after all.
        """
        try:
            transport = target.transport.upper()
            host = _ip_literal(target.host)
            if not request.via:
                raise TransportError("request has no Via (the transaction layer adds it)")
            listener = self.listener_for(transport, host)
            set_sent_by(request, transport, listener.sent_by)
            data = request.to_bytes()
        except ParseError as exc:
            return self._send_failed(TransportError(f"bad top Via: {exc.reason}"))
        except TransportError as exc:
            return self._send_failed(exc)
        if transport != "UDP":
            return self._send_stream(transport, host, target.port, target.connection_id,
                                     data, listener)
        limit = self.udp_size_limit
        if limit is not None and len(data) > limit and self._may_try_tcp(host, target.port):
            tcp = self._find_listener("TCP", _ip_version(host))
            if tcp is not None:
                return self._send_over_tcp(request, host, target.port, tcp, listener)
        return self._send_datagram(listener, data, host, target.port)

    def send_keepalive(self, target: Target) -> Deferred[None]:
        """Send a CRLF CRLF keep-alive (RFC 5626 4.4.1) to C{target}.

        Over TCP/TLS only on an existing connection (the one named by
        C{target.connection_id}, else the one to its address): a keep-alive
        never opens a connection.  Over UDP the same bytes go as a datagram
        (refreshing NAT bindings; RFC 5626 prefers STUN there).

        @return: fails with L{TransportError} when there is nothing to keep alive.
        """
        try:
            host = _ip_literal(target.host)
            transport = target.transport.upper()
            if transport == "UDP":
                return self._send_datagram(self.listener_for("UDP", host), KEEPALIVE,
                                           host, target.port)
        except TransportError as exc:
            return self._send_failed(exc)
        if target.connection_id is not None:
            return self.connections.send_on(target.connection_id, KEEPALIVE)
        connection = self.connections.find(transport, host, target.port)
        if connection is None:
            return self._send_failed(TransportError(
                f"no {transport} connection to {host}:{target.port}"))
        connection.write(KEEPALIVE)
        return succeed(None)

    def send_response(self, response: Response, source: Source) -> Deferred[None]:
        """Send a response to the request that came from C{source}.

        Streams: the request's connection if still open, else a connection
        to the address RFC 3261 18.2.2 gives.  UDP: from the listener the
        request arrived on, to maddr / received:rport / sent-by (RFC 3581).
        """
        try:
            top = response.via[0] if response.via else None
        except ParseError as exc:
            return self._send_failed(TransportError(f"bad top Via: {exc.reason}"))
        if top is None:
            return self._send_failed(TransportError("response has no Via"))
        transport = source.transport.upper()
        data = response.to_bytes()
        if source.reliable and source.connection_id is not None:
            connection = self.connections.get(source.connection_id)
            if connection is not None:
                connection.write(data)
                return succeed(None)
        host, port = response_address(top, transport)
        try:
            host = _ip_literal(host)
        except TransportError as exc:
            return self._send_failed(exc)
        if transport == "UDP":
            listener = self._udp_listener_at(source.local)
            if listener is None or listener.version != _ip_version(host):
                try:
                    listener = self.listener_for("UDP", host)
                except TransportError as exc:
                    return self._send_failed(exc)
            return self._send_datagram(listener, data, host, port)
        try:
            listener = self.listener_for(transport, host)
        except TransportError as exc:
            return self._send_failed(exc)
        return self._send_stream(transport, host, port, None, data, listener)

    def _send_datagram(self, listener: Listener, data: bytes, host: str,
                       port: int) -> Deferred[None]:
        udp = listener.port
        sock = getattr(udp, "socket", None)
        if sock is not None and getattr(udp, "addressFamily", None) == _family(host):
            # the host is an IP literal of the listener's family (checked by
            # the callers): straight to the socket, without the port's
            # re-checks of the address; any error goes the port's way below
            try:
                sock.sendto(data, (host, port))
            except OSError:
                pass
            else:
                return succeed(None)
        try:
            udp.write(data, (host, port))  # type: ignore[attr-defined]
        except Exception as exc:
            return self._send_failed(TransportError(f"cannot send to UDP {host}:{port}: {exc}"))
        return succeed(None)

    def _send_stream(self, transport: str, host: str, port: int, connection_id: int | None,
                     data: bytes, listener: Listener) -> Deferred[None]:
        if connection_id is not None:
            d = self.connections.send_on(connection_id, data)
        elif transport == "TLS" and self.tls is None:
            return self._send_failed(TransportError("TLS is not configured"))
        else:
            context = self.tls.client if transport == "TLS" and self.tls else None
            d = self.connections.send(transport, host, port, data, listener.sent_by, context)
        return d.addErrback(self._count_send_error)

    def _send_over_tcp(self, request: Request, host: str, port: int, tcp: Listener,
                       udp: Listener) -> Deferred[None]:
        """RFC 3261 18.1.1: a large request over TCP, falling back to UDP."""
        self.stats["udp_to_tcp"] += 1
        set_sent_by(request, "TCP", tcp.sent_by)
        data = request.to_bytes()
        d = self.connections.send("TCP", host, port, data, tcp.sent_by)

        def fallback(failure: Failure) -> Deferred[None]:
            failure.trap(TransportError)
            now = self._reactor.seconds()
            if len(self._tcp_refused) >= 4096:
                self._tcp_refused = {k: t for k, t in self._tcp_refused.items() if t > now}
            self._tcp_refused[(host, port)] = now + TCP_REFUSED_MEMORY
            log.info("large request to {host}:{port}: TCP failed, sending over UDP",
                     host=host, port=port)
            set_sent_by(request, "UDP", udp.sent_by)
            return self._send_datagram(udp, request.to_bytes(), host, port)

        return d.addErrback(fallback)

    def _may_try_tcp(self, host: str, port: int) -> bool:
        """False while (host, port) is remembered to refuse TCP."""
        until = self._tcp_refused.get((host, port))
        if until is None:
            return True
        if until > self._reactor.seconds():
            return False
        del self._tcp_refused[(host, port)]
        return True

    def _send_failed(self, error: TransportError) -> Deferred[None]:
        self.stats["send_errors"] += 1
        return fail(error)

    def _count_send_error(self, failure: Failure) -> Failure:
        self.stats["send_errors"] += 1
        return failure

    def _find_listener(self, transport: str, version: int) -> Listener | None:
        for listener in self.listeners:
            if listener.transport == transport and listener.version == version:
                return listener
        return None

    def _udp_listener_at(self, local: tuple[str, int]) -> Listener | None:
        for listener in self.listeners:
            if listener.transport == "UDP" and listener.sent_by == local:
                return listener
        return None

    # -- receiving -----------------------------------------------------------

    def _datagram_received(self, listener: Listener, data: bytes, host: str,
                           port: int) -> None:
        if not data.strip(b"\r\n\x00 \t"):
            self.stats["keepalives_received"] += 1
            return
        if data[:1] < b"\x04" and self.datagram_responder is not None:
            # a SIP message starts with a letter; STUN's first byte is 0 or 1
            self.stats["keepalives_received"] += 1
            try:
                reply = self.datagram_responder(data, (host, port))
                if reply:
                    listener.port.write(reply, (host, port))  # type: ignore[attr-defined]
            except Exception:
                self.stats["internal_errors"] += 1
                log.failure("answering a keep-alive from {host} failed", host=host)
            return
        source = Source("UDP", (normalize_host(host), port), listener.sent_by)
        self._receive_safely(data, source)

    def _stream_message(self, connection: StreamConnection, data: bytes) -> None:
        self._receive_safely(data, connection.source)

    def _receive_safely(self, data: bytes, source: Source) -> None:
        """L{_receive}, with a last guard: a bug never stops a listener."""
        try:
            self._receive(data, source)
        except Exception:
            self.stats["internal_errors"] += 1
            log.failure("transport layer failed on a message from {remote}",
                        remote=source.remote)

    def _stream_framing_error(self, connection: StreamConnection,
                              error: FramingError) -> None:
        log.debug("closing {connection}: {reason}", connection=connection,
                  reason=error.reason)
        if error.head is None:
            self.stats["messages_dropped"] += 1
            return
        self._reject(salvage_request(error.head + b"\r\n\r\n"), error.reason,
                     connection.source, error.code)

    def _receive(self, data: bytes, source: Source) -> None:
        """Parse, check, stamp and deliver one message; never raises."""
        self.stats["messages_received"] += 1
        try:
            message = parse_message(data, self.max_message_size)
        except ParseError as exc:
            self._reject(salvage_request(data), exc.reason, source)
            return
        if isinstance(message, Request):
            try:
                check_request(message)
            except ParseError as exc:
                request = message if _answerable(message) else salvage_request(data)
                self._reject(request, exc.reason, source)
                return
            stamp_via(message, source.remote)
            self.stats["requests_received"] += 1
        else:
            try:
                check_response(message)
            except ParseError as exc:
                self._drop(exc.reason, source)
                return
            self.stats["responses_received"] += 1
        if self.user is None:
            self._drop("no transport user", source)
            return
        try:
            self.user.message_received(message, source)
        except Exception:
            self.stats["user_errors"] += 1
            log.failure("the transport user failed on a message from {remote}",
                        remote=source.remote)

    def _reject(self, request: Request | None, reason: str, source: Source,
                code: int = 400) -> None:
        """Answer a bad request when possible, else drop it."""
        if request is None or request.method == "ACK":
            self._drop(reason, source)
            return
        stamp_via(request, source.remote)
        self.stats["bad_requests_answered"] += 1
        log.debug("answering {code} to {remote}: {reason}", code=code,
                  remote=source.remote, reason=reason)
        self.send_response(bad_request(request, reason, code), source).addErrback(
            lambda failure: None
        )

    def _drop(self, reason: str, source: Source) -> None:
        self.stats["messages_dropped"] += 1
        log.debug("dropped a message from {remote}: {reason}", remote=source.remote,
                  reason=reason)


def _answerable(request: Request) -> bool:
    """True when the parsed request's top Via, Call-ID and CSeq can be read."""
    try:
        request.via[0]
        request.call_id  # noqa: B018
        request.cseq  # noqa: B018
    except (ParseError, IndexError):
        return False
    return True


@lru_cache(maxsize=4096)
def _ip_version(host: str) -> int:
    return ipaddress.ip_address(host).version


@lru_cache(maxsize=4096)
def _family(host: str) -> int | None:
    """The socket address family of IP literal C{host} (C{None} otherwise)."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return None
    return socket.AF_INET6 if version == 6 else socket.AF_INET


@lru_cache(maxsize=4096)
def _ip_literal(host: str) -> str:
    """C{host} as a canonical IP literal without brackets.

    @raise TransportError: for a host name (resolve it first, RFC 3263).
    """
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        raise TransportError(f"cannot send to {host!r}: not an IP address "
                             f"(resolve it first, RFC 3263)") from None


def _grow_receive_buffer(port: Any, size: int | None) -> None:
    """Ask for a C{size}-byte receive buffer on a UDP port's socket, when
    it has one (not in memory reactors) and it is smaller; best effort."""
    if not size:
        return
    sock = getattr(port, "socket", None)
    if sock is None or not hasattr(sock, "setsockopt"):
        return
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < size:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError as error:
        log.debug("UDP receive buffer left as it is: {error}", error=error)
