"""Test support for the relay: a fake UDP reactor on a L{Clock}, and SDP
samples."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock

from b2bua.sip.sdp import SessionDescription, parse_sdp

Address = tuple[str, int]


@dataclass
class Sent:
    """One datagram a fake port sent."""

    local: int
    destination: Address
    data: bytes


@dataclass
class FakeDatagramPort:
    """A listening UDP port of L{FakeUDPReactor}: writes are recorded."""

    reactor: FakeUDPReactor
    port: int
    protocol: DatagramProtocol
    interface: str
    closed: bool = False
    refuse_writes: bool = False
    pending_close: list[Deferred[None]] = field(default_factory=list)

    def write(self, data: bytes, addr: Address) -> None:
        """Record a datagram (or refuse it like a full socket buffer)."""
        assert not self.closed, "write on a closed port"
        if self.refuse_writes:
            raise OSError(errno.EAGAIN, "would block")
        self.reactor.sent.append(Sent(self.port, addr, data))

    def getHost(self) -> IPv4Address:
        """The bound address."""
        return IPv4Address("UDP", self.interface, self.port)

    def stopListening(self) -> Deferred[None] | None:
        """Close, now or when the reactor finishes closes."""
        if self.reactor.deferred_closes:
            d: Deferred[None] = Deferred()
            self.reactor.closing.append((self, d))
            return d
        self._close()
        return None

    def _close(self) -> None:
        """Really close."""
        assert not self.closed, "double close"
        self.closed = True
        del self.reactor.ports[self.port]
        self.protocol.doStop()


class FakeUDPReactor(Clock):
    """A L{Clock} that also listens on fake UDP ports.

    @ivar ports: open ports by number.
    @ivar refused: ports whose bind fails (held by someone else).
    @ivar sent: every datagram written, in order.
    @ivar deferred_closes: when set, closes wait for L{finish_closes}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ports: dict[int, FakeDatagramPort] = {}
        self.refused: set[int] = set()
        self.sent: list[Sent] = []
        self.deferred_closes = False
        self.closing: list[tuple[FakeDatagramPort, Deferred[None]]] = []
        self.advance(1000.0)

    def listenUDP(
        self,
        port: int,
        protocol: DatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,  # noqa: N803
    ) -> FakeDatagramPort:
        """Bind a fake port (fails like the real one when taken)."""
        if port in self.refused or port in self.ports:
            raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "in use"))
        listening = FakeDatagramPort(self, port, protocol, interface)
        self.ports[port] = listening
        protocol.makeConnection(listening)  # type: ignore[arg-type]
        return listening

    def finish_closes(self) -> None:
        """Complete every close in progress."""
        closing, self.closing = self.closing, []
        for listening, d in closing:
            listening._close()
            d.callback(None)

    def deliver(self, local: int, data: bytes, source: Address) -> None:
        """A datagram from C{source} arrives at local port C{local}."""
        self.ports[local].protocol.datagramReceived(data, source)

    def take(self) -> list[Sent]:
        """The datagrams sent since the last call."""
        sent, self.sent = self.sent, []
        return sent


def crlf(text: str) -> bytes:
    """A readable multi-line literal as a CRLF SDP body."""
    return ("\r\n".join(text.strip("\n").split("\n")) + "\r\n").encode("utf-8")


def audio_offer(
    host: str = "192.0.2.10",
    port: int = 49170,
    direction: str = "sendrecv",
    *,
    extra: str = "",
) -> SessionDescription:
    """A PCMU/PCMA/telephone-event offer."""
    return parse_sdp(
        crlf(f"""
v=0
o=alice 2890844526 2890844526 IN IP4 {host}
s=-
c=IN IP4 {host}
t=0 0
m=audio {port} RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a={direction}
{extra}""")
    )


def t38_offer(host: str = "192.0.2.10", port: int = 49172) -> SessionDescription:
    """A re-offer switching the audio line to T.38 (m=image udptl)."""
    return parse_sdp(
        crlf(f"""
v=0
o=alice 2890844526 2890844527 IN IP4 {host}
s=-
c=IN IP4 {host}
t=0 0
m=image {port} udptl t38
a=T38FaxVersion:0
a=T38MaxBitRate:14400
a=T38FaxRateManagement:transferredTCF
a=T38FaxUdpEC:t38UDPRedundancy
""")
    )


A_SDP = ("192.0.2.10", 49170)
B_SDP = ("198.51.100.7", 6000)


class RelayHarness:
    """A L{media.backend.RelayBackend} on a L{FakeUDPReactor}, with helpers
    to set up calls and move packets.

    @ivar reactor: the fake reactor (and clock).
    @ivar backend: the backend under test.
    """

    def __init__(self, first: int = 20000, last: int = 20099, **options: object) -> None:
        from media.backend import RelayBackend

        self.reactor = FakeUDPReactor()
        self.backend = RelayBackend(
            self.reactor,
            port_range=(first, last),
            advertised_address="203.0.113.1",
            **options,  # type: ignore[arg-type]
        )

    def result(self, d: Deferred[object]) -> object:
        """The result a fired Deferred carries (a Failure is raised)."""
        results: list[object] = []
        d.addBoth(results.append)
        assert results, "the Deferred has not fired"
        outcome = results[0]
        from twisted.python.failure import Failure

        if isinstance(outcome, Failure):
            outcome.raiseException()
        return outcome

    def offer(self, call_id: str, sdp: SessionDescription, side: str = "a") -> SessionDescription:
        """Send an offer through the backend; the rewritten copy."""
        out = self.result(self.backend.offer(call_id, "from-tag", sdp, side=side))
        assert isinstance(out, SessionDescription)
        return out

    def answer(self, call_id: str, sdp: SessionDescription, side: str = "b") -> SessionDescription:
        """Send an answer through the backend; the rewritten copy."""
        out = self.result(self.backend.answer(call_id, "from-tag", "to-tag", sdp, side=side))
        assert isinstance(out, SessionDescription)
        return out

    def establish(
        self, call_id: str = "call-1", a: Address = A_SDP, b: Address = B_SDP
    ) -> tuple[int, int]:
        """Offer from A and answer from B (audio); the relay ports facing A
        and facing B."""
        to_b = self.offer(call_id, audio_offer(*a))
        to_a = self.answer(call_id, audio_offer(*b))
        return to_a.media[0].port, to_b.media[0].port
