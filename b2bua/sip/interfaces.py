"""The seams between the stack's layers: addresses and the typed protocols
that the transport layer, the transaction layer and the transaction user
offer one another.

Transport layer -> transaction layer: L{TransportUser.message_received}.
Transaction layer -> transport layer: L{Transport}.
Transaction layer -> transaction user (the core, or the minimal UAS):
L{TransactionUser} for server transactions and stray messages,
L{ClientTransactionUser} for the responses and failures of a request it sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from b2bua.sip.errors import TransactionTimeout, TransportError
    from b2bua.sip.message import Request, Response

__all__ = [
    "RELIABLE_TRANSPORTS",
    "ClientTransactionUser",
    "Source",
    "Target",
    "TransactionUser",
    "Transport",
    "TransportUser",
]

#: Transports on which SIP does not retransmit (RFC 3261 17.1.1.2, 17.1.2.2).
RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "WS", "WSS", "SCTP"})


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send a request: a transport name (C{UDP}, C{TCP}, C{TLS}),
    a host (IP address literal, without IPv6 brackets) and a port.

    @ivar connection_id: when set, send over that very stream connection
        (in-dialog requests to a phone that registered over TCP/TLS, RFC 5626
        flows); if it is gone, fail rather than open a new one.
    """

    transport: str
    host: str
    port: int
    connection_id: int | None = None

    @property
    def reliable(self) -> bool:
        """True when the transport is a stream (no retransmissions)."""
        return self.transport in RELIABLE_TRANSPORTS


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from and on which of our listeners.

    @ivar transport: C{UDP}, C{TCP} or C{TLS}.
    @ivar remote: (host, port) of the peer, host without brackets.
    @ivar local: (host, port) of our listener.
    @ivar connection_id: the stream connection it arrived on (C{None} for UDP).
    """

    transport: str
    remote: tuple[str, int]
    local: tuple[str, int]
    connection_id: int | None = None

    @property
    def reliable(self) -> bool:
        """True when the message came over a stream."""
        return self.transport in RELIABLE_TRANSPORTS

    def reply_target(self) -> Target:
        """A L{Target} that sends back to the source (same connection if any)."""
        return Target(self.transport, self.remote[0], self.remote[1], self.connection_id)


class TransportUser(Protocol):
    """What the transport layer hands every parsed message to."""

    def message_received(self, message: Request | Response, source: Source) -> None:
        """A message arrived; requests already carry C{received}/C{rport}."""


class Transport(Protocol):
    """What the transaction layer needs from the transport layer."""

    def send_request(self, request: Request, target: Target) -> Deferred[None]:
        """Send a request.  The top Via's transport and sent-by are set to the
        listener used (its C{branch} and other parameters are kept).  The
        Deferred fires once the bytes are handed to the socket, or fails
        with L{TransportError}."""

    def send_response(self, response: Response, source: Source) -> Deferred[None]:
        """Send a response to the request that came from C{source}, per
        RFC 3261 18.2.2 and RFC 3581 (connection reuse, received, rport,
        maddr).  Fails with L{TransportError}."""

    def local_address(self, transport: str) -> tuple[str, int]:
        """(host, port) of our listener for C{transport}, for Via and Contact.

        @raise TransportError: when no listener of that kind exists.
        """


class ClientTransactionUser(Protocol):
    """Who sent a request through a client transaction."""

    def response_received(self, response: Response, transaction: object) -> None:
        """A provisional or final response (every 2xx of a forked INVITE too)."""

    def transaction_failed(
        self, transaction: object, error: TransactionTimeout | TransportError
    ) -> None:
        """Timer B/F fired or the transport failed; no final response came."""


class TransactionUser(Protocol):
    """The layer above the transaction layer (RFC 3261's TU)."""

    def request_received(self, request: Request, transaction: object | None) -> None:
        """A new request.  C{transaction} is its server transaction, or C{None}
        for an ACK that matched none (the ACK of a 2xx)."""

    def response_received(self, response: Response, source: Source) -> None:
        """A response that matched no client transaction (a retransmitted 2xx
        of an INVITE whose transaction has ended): the TU re-sends its ACK."""

    def server_transaction_failed(
        self, transaction: object, error: TransactionTimeout | TransportError
    ) -> None:
        """A response could not be delivered, or Timer H fired (no ACK)."""
