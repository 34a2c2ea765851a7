"""Stream connections (TCP and TLS) of the transport layer.

L{StreamConnection} is the Twisted protocol of one TCP or TLS connection:
it frames the byte stream (L{b2bua.sip.framing}), answers keep-alive pings
and hands every framed message to its L{StreamConnections} table.

L{StreamConnections} owns every connection, inbound and outbound.  It finds
the connection to reuse for a peer (RFC 3261 18.1.1 and 18.2.2), opens new
ones through the injected reactor (C{connectTCP}/C{connectSSL}) and queues
what is sent while they connect, closes connections that stayed unused for
C{idle_timeout} seconds (on the injected clock) and refuses inbound
connections beyond C{max_per_address} from one IP address.  Connection ids
are unique within the process.

Parsing, Via handling and the choice of where to send live in
L{b2bua.sip.transport}; this module only moves framed bytes.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IAddress, IConnector, IDelayedCall
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.sip.errors import TransportError
from b2bua.sip.framing import DEFAULT_MAX_SIZE, PING, PONG, FramingError, StreamFramer
from b2bua.sip.interfaces import Source

__all__ = ["StreamConnection", "StreamConnections", "normalize_host"]

log = Logger()

#: Connection ids, unique within the process (never reused).
_connection_ids = itertools.count(1)

#: (transport, host, port): how a peer's connection is looked up for reuse.
PeerKey = tuple[str, str, int]


@lru_cache(maxsize=4096)
def normalize_host(host: str) -> str:
    """An IP literal in its canonical text form, without IPv6 brackets.

    Host names are returned unchanged (lower-cased).
    """
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return bare.lower()


class StreamConnection(Protocol):
    """One TCP or TLS connection carrying SIP.

    @ivar connection_id: unique within the process.
    @ivar transport_name: C{TCP} or C{TLS}.
    @ivar local: (host, port) of the listener it belongs to, as in our Via.
    @ivar remote: (host, port) of the peer, host without brackets.
    @ivar inbound: True when the peer opened it.
    """

    def __init__(self, table: StreamConnections, transport_name: str,
                 local: tuple[str, int], inbound: bool) -> None:
        self.connection_id = next(_connection_ids)
        self.transport_name = transport_name
        self.local = local
        self.inbound = inbound
        self.remote: tuple[str, int] = ("", 0)
        self._table = table
        self._framer = StreamFramer(table.max_message_size)
        self._idle: IDelayedCall | None = None
        self._lost = False
        #: the address counted against the per-address cap (inbound)
        self._admitted_host: str | None = None
        #: the attempt that opened it (outbound), until connected
        self._connect: _PendingConnect | None = None
        #: its key in the table's peer index
        self._peer_key: PeerKey | None = None
        self._closed: list[Deferred[None]] = []

    @property
    def open(self) -> bool:
        """True while bytes written now would still be sent."""
        return (self.transport is not None and not self._lost
                and not getattr(self.transport, "disconnecting", False))

    @property
    def source(self) -> Source:
        """The L{Source} of a message that arrived on this connection."""
        return Source(self.transport_name, self.remote, self.local, self.connection_id)

    def connectionMade(self) -> None:
        """Register with the table; start the idle timer."""
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.remote = (normalize_host(peer.host), peer.port)
        self._table._connection_made(self)

    def dataReceived(self, data: bytes) -> None:
        """Frame the bytes; hand on messages, answer pings, close on errors."""
        self._table._touch(self)
        for event in self._framer.feed(data):
            if not self.open:
                return
            if isinstance(event, bytes):
                self._table._message(self, event)
            elif event is PING:
                self._table.stats["keepalive_pings"] += 1
                self.transport.write(PONG)  # type: ignore[union-attr]
            elif isinstance(event, FramingError):
                self._table._framing_error(self, event)
                self.close()

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Forget the connection; wake whoever waits for it to close."""
        if self._lost:
            return
        self._lost = True
        self._table._connection_lost(self)
        waiters, self._closed = self._closed, []
        for d in waiters:
            d.callback(None)

    def write(self, data: bytes) -> None:
        """Send bytes now (the connection is open)."""
        self.transport.write(data)  # type: ignore[union-attr]
        self._table._touch(self)

    def close(self) -> None:
        """Close after sending what is queued."""
        if self.transport is not None and not self._lost:
            self.transport.loseConnection()

    def when_closed(self) -> Deferred[None]:
        """A Deferred that fires once the connection is gone."""
        if self._lost:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed.append(d)
        return d

    def __repr__(self) -> str:
        direction = "from" if self.inbound else "to"
        host, port = self.remote
        return f"<StreamConnection {self.connection_id} {self.transport_name} {direction} " \
               f"{host}:{port}>"


class _ServerFactory(Factory):
    """Builds the connections accepted by one TCP or TLS listener."""

    def __init__(self, table: StreamConnections, transport_name: str,
                 local: Callable[[], tuple[str, int]]) -> None:
        self._table = table
        self._transport_name = transport_name
        self._local = local

    def buildProtocol(self, addr: IAddress) -> StreamConnection | None:
        """A new connection, or C{None} (closed at once) beyond the cap."""
        host = normalize_host(getattr(addr, "host", ""))
        if not self._table._admit(host):
            return None
        connection = StreamConnection(self._table, self._transport_name, self._local(), True)
        connection._admitted_host = host
        return connection


class _PendingConnect(ClientFactory):
    """One outbound connection attempt and what waits to be sent on it."""

    def __init__(self, table: StreamConnections, key: PeerKey, local: tuple[str, int]) -> None:
        self._table = table
        self.key = key
        self.local = local
        self.queue: list[tuple[bytes, Deferred[None]]] = []
        self.connector: IConnector | None = None

    def buildProtocol(self, addr: IAddress) -> StreamConnection:
        """The connection, once the peer accepted it."""
        connection = StreamConnection(self._table, self.key[0], self.local, False)
        connection._connect = self
        return connection

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        """Fail everything queued with L{TransportError}."""
        self._table._connect_failed(self, reason)


class StreamConnections:
    """Every TCP and TLS connection of one transport layer.

    @ivar stats: counters shared with the transport layer.
    @ivar idle_timeout: seconds without traffic before a connection closes.
    @ivar max_per_address: concurrent inbound connections allowed from one
        IP address.
    @ivar max_message_size: the framers' size limit.
    @ivar connect_timeout: seconds an outbound connect may take.
    """

    def __init__(
        self,
        reactor: Any,
        on_message: Callable[[StreamConnection, bytes], None],
        on_framing_error: Callable[[StreamConnection, FramingError], None],
        stats: Counter[str],
        *,
        idle_timeout: float = 600.0,
        max_per_address: int = 64,
        max_message_size: int = DEFAULT_MAX_SIZE,
        connect_timeout: float = 10.0,
    ) -> None:
        self._reactor = reactor
        self._on_message = on_message
        self._on_framing_error = on_framing_error
        self.stats = stats
        self.idle_timeout = idle_timeout
        self.max_per_address = max_per_address
        self.max_message_size = max_message_size
        self.connect_timeout = connect_timeout
        self._by_id: dict[int, StreamConnection] = {}
        self._by_peer: dict[PeerKey, StreamConnection] = {}
        self._pending: dict[PeerKey, _PendingConnect] = {}
        self._per_address: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[StreamConnection]:
        """The open connections (a snapshot)."""
        return iter(list(self._by_id.values()))

    def server_factory(self, transport_name: str,
                       local: Callable[[], tuple[str, int]]) -> Factory:
        """The factory for a TCP or TLS listener.

        @param local: returns the listener's (host, port) as in our Via
            (called per connection: the port is known only once listening).
        """
        return _ServerFactory(self, transport_name, local)

    def get(self, connection_id: int) -> StreamConnection | None:
        """The open connection with that id, if any."""
        connection = self._by_id.get(connection_id)
        return connection if connection is not None and connection.open else None

    def find(self, transport_name: str, host: str, port: int) -> StreamConnection | None:
        """An open connection to or from (host, port) over that transport."""
        connection = self._by_peer.get((transport_name, normalize_host(host), port))
        return connection if connection is not None and connection.open else None

    def send(self, transport_name: str, host: str, port: int, data: bytes,
             local: tuple[str, int], context_factory: object = None) -> Deferred[None]:
        """Send on a connection to (host, port), opening one if needed.

        @param local: our listener's (host, port), for a new connection.
        @param context_factory: the TLS client context (TLS only).
        @return: fires once the bytes are written; fails with
            L{TransportError} if the connection cannot be opened.
        """
        key = (transport_name, normalize_host(host), port)
        connection = self.find(*key)
        if connection is not None:
            connection.write(data)
            return succeed(None)
        d: Deferred[None] = Deferred()
        pending = self._pending.get(key)
        if pending is None:
            pending = _PendingConnect(self, key, local)
            self._pending[key] = pending
            pending.queue.append((data, d))
            self.stats["connections_opened"] += 1
            try:
                if transport_name == "TLS":
                    pending.connector = self._reactor.connectSSL(
                        key[1], port, pending, context_factory, timeout=self.connect_timeout
                    )
                else:
                    pending.connector = self._reactor.connectTCP(
                        key[1], port, pending, timeout=self.connect_timeout
                    )
            except Exception as exc:
                self._pending.pop(key, None)
                self.stats["connect_failures"] += 1
                return fail(TransportError(f"cannot connect to {transport_name} "
                                           f"{key[1]}:{port}: {exc}"))
        else:
            pending.queue.append((data, d))
        return d

    def send_on(self, connection_id: int, data: bytes) -> Deferred[None]:
        """Send on that very connection.

        @raise TransportError: (as a failed Deferred) when it is gone.
        """
        connection = self.get(connection_id)
        if connection is None:
            return fail(TransportError(f"connection {connection_id} is gone"))
        connection.write(data)
        return succeed(None)

    def close_all(self) -> Deferred[None]:
        """Stop pending connects, close every connection; fires when all are gone."""
        for pending in list(self._pending.values()):
            if pending.connector is not None:
                pending.connector.stopConnecting()
        waits = []
        for connection in list(self._by_id.values()):
            waits.append(connection.when_closed())
            connection.close()
        return DeferredList(waits).addCallback(lambda _: None)

    # -- called by the connections and factories ---------------------------

    def _admit(self, host: str) -> bool:
        if self._per_address[host] >= self.max_per_address:
            self.stats["connections_refused"] += 1
            log.debug("refused a connection from {host}: {limit} already open",
                     host=host, limit=self.max_per_address)
            return False
        self._per_address[host] += 1
        self.stats["connections_accepted"] += 1
        return True

    def _connection_made(self, connection: StreamConnection) -> None:
        self._by_id[connection.connection_id] = connection
        key = (connection.transport_name, connection.remote[0], connection.remote[1])
        pending = connection._connect
        connection._connect = None
        if pending is not None:
            # index by the address we dialled: that is what later sends ask for
            key = pending.key
            self._pending.pop(key, None)
        self._by_peer.setdefault(key, connection)
        connection._peer_key = key
        if self.idle_timeout:
            connection._idle = self._reactor.callLater(
                self.idle_timeout, self._idle_expired, connection
            )
        if pending is not None:
            queue, pending.queue = pending.queue, []
            for data, d in queue:
                connection.write(data)
                d.callback(None)

    def _connection_lost(self, connection: StreamConnection) -> None:
        self._by_id.pop(connection.connection_id, None)
        key = connection._peer_key
        if key is not None and self._by_peer.get(key) is connection:
            del self._by_peer[key]
        host = connection._admitted_host
        if host is not None:
            self._per_address[host] -= 1
            if self._per_address[host] <= 0:
                del self._per_address[host]
        idle = connection._idle
        if idle is not None and idle.active():
            idle.cancel()
        connection._idle = None
        self.stats["connections_closed"] += 1

    def _connect_failed(self, pending: _PendingConnect, reason: Failure) -> None:
        if self._pending.get(pending.key) is pending:
            del self._pending[pending.key]
        self.stats["connect_failures"] += 1
        transport_name, host, port = pending.key
        detail = reason.getErrorMessage()
        queue, pending.queue = pending.queue, []
        for _data, d in queue:
            d.errback(TransportError(f"cannot connect to {transport_name} {host}:{port}: "
                                     f"{detail}"))

    def _touch(self, connection: StreamConnection) -> None:
        idle = connection._idle
        if idle is not None and idle.active():
            idle.reset(self.idle_timeout)

    def _idle_expired(self, connection: StreamConnection) -> None:
        connection._idle = None
        self.stats["idle_timeouts"] += 1
        connection.close()

    def _message(self, connection: StreamConnection, data: bytes) -> None:
        self._on_message(connection, data)

    def _framing_error(self, connection: StreamConnection, error: FramingError) -> None:
        self.stats["framing_errors"] += 1
        self._on_framing_error(connection, error)
