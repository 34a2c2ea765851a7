"""Helpers of C{test_nat_media_sipp}: counting the RTP a sipp phone
receives, and telling whether the relay's ports are free.

sipp plays RTP from a pcap through a raw socket and reads nothing back: the
datagrams that reach its media port are swallowed by its media socket,
uncounted.  L{DeliveryCounter} counts them all the same: a raw
C{IPPROTO_UDP} socket bound to the phone's loopback address gets a copy of
every UDP datagram the kernel delivers to that address (raw(7)), with its
IP and UDP headers, so the test sees who sent each datagram to which port
without taking it away from sipp.  Raw sockets need root (or
C{CAP_NET_RAW}), as sipp's pcap play does; without it the tests are
skipped, and fail under C{CI=true}.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field

from twisted.internet.interfaces import IReactorFDSet
from twisted.python.failure import Failure
from twisted.trial.unittest import FailTest, SkipTest

__all__ = [
    "RELAY_MEDIA_CONFIG",
    "Delivery",
    "DeliveryCounter",
    "free_port_range",
    "held_ports",
    "require_raw_sockets",
    "skip_or_fail",
]

#: The C{[media]} section of a switch anchoring media in its built-in
#: relay on C{relay}, ports C{port_min} to C{port_max} (formatted with
#: those); the section's other keys (C{media_timeout} ...) may follow it.
RELAY_MEDIA_CONFIG = """
[media]
backend = "relay"
interface = "{relay}"
port_min = {port_min}
port_max = {port_max}
"""

#: The largest datagram read at once (an RTP packet is far smaller).
_MAX_DATAGRAM = 65535


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it under C{CI=true} (CI never skips an
    integration test)."""
    if os.environ.get("CI") == "true":
        raise FailTest(f"{reason} (CI=true: a missing prerequisite is a failure, not a skip)")
    raise SkipTest(reason)


def require_raw_sockets() -> None:
    """Skip (or fail under CI) without the right to open raw sockets, which
    sipp's pcap play and L{DeliveryCounter} need."""
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    except PermissionError:
        skip_or_fail("sipp plays RTP through a raw socket and the test counts RTP with one: "
                     "run as root (or with CAP_NET_RAW)")
    else:
        probe.close()


@dataclass(frozen=True)
class Delivery:
    """One UDP datagram delivered to the watched address.

    @ivar source: the sender's (address, port).
    @ivar port: the destination port.
    @ivar rtp: whether the payload reads as RTP version 2.
    @ivar ssrc: the RTP SSRC (C{None} when not RTP).
    """

    source: tuple[str, int]
    port: int
    rtp: bool
    ssrc: int | None


@dataclass(eq=False)
class DeliveryCounter:
    """Count the UDP datagrams the kernel delivers to C{address}.

    Open it with L{start} (before the traffic), read L{to_port} or
    L{deliveries}, close it with L{stop}.  Only IPv4 loopback addresses
    are meant: the test watches its own phones.

    @ivar address: the watched IPv4 address, such as C{"127.0.0.51"}.
    @ivar deliveries: every datagram seen, in arrival order.
    """

    address: str
    deliveries: list[Delivery] = field(default_factory=list)
    _socket: socket.socket | None = None
    _reactor: IReactorFDSet | None = None

    def start(self, reactor: IReactorFDSet) -> None:
        """Open the raw socket and read it from C{reactor}."""
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        raw.bind((self.address, 0))
        raw.setblocking(False)
        self._socket = raw
        self._reactor = reactor
        reactor.addReader(self)

    def stop(self) -> None:
        """Read what is queued, then stop reading and close the socket."""
        if self._socket is None:
            return
        self.doRead()
        assert self._reactor is not None
        self._reactor.removeReader(self)
        self._socket.close()
        self._socket = None

    # -- IReadDescriptor -------------------------------------------------------------

    def fileno(self) -> int:
        """The raw socket's descriptor (-1 once closed)."""
        return self._socket.fileno() if self._socket is not None else -1

    def logPrefix(self) -> str:
        """How the reactor names this reader in its log."""
        return f"DeliveryCounter({self.address})"

    def connectionLost(self, reason: Failure) -> None:
        """The reactor dropped the reader (at shutdown): nothing to do."""

    def doRead(self) -> None:
        """Read every queued datagram."""
        raw = self._socket
        while raw is not None:
            try:
                packet = raw.recv(_MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in (errno.EINTR, errno.ECONNREFUSED):
                    continue
                raise
            delivery = parse_delivery(packet)
            if delivery is not None:
                self.deliveries.append(delivery)

    # -- what it saw -----------------------------------------------------------------

    def to_port(self, port: int) -> list[Delivery]:
        """The RTP datagrams delivered to C{port}."""
        return [d for d in self.deliveries if d.port == port and d.rtp]

    def sources(self, port: int) -> Counter[tuple[str, int]]:
        """Who sent the RTP delivered to C{port}, with how many datagrams each."""
        return Counter(d.source for d in self.to_port(port))


def parse_delivery(packet: bytes) -> Delivery | None:
    """The L{Delivery} of one raw IPv4+UDP packet, C{None} if it is not one."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return None
    header = (packet[0] & 0x0F) * 4
    if len(packet) < header + 8:
        return None
    source = socket.inet_ntoa(packet[12:16])
    sport, dport = struct.unpack("!HH", packet[header:header + 4])
    payload = packet[header + 8:]
    rtp = len(payload) >= 12 and payload[0] >> 6 == 2
    ssrc = struct.unpack("!I", payload[8:12])[0] if rtp else None
    return Delivery((source, sport), dport, rtp, ssrc)


def held_ports(host: str, first: int, last: int) -> list[int]:
    """The UDP ports from C{first} to C{last} (inclusive) that cannot be
    bound on C{host} right now: someone holds them."""
    held = []
    for port in range(first, last + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, port))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
                held.append(port)
    return held


def free_port_range(host: str, size: int, low: int = 30000, high: int = 32700) -> int:
    """The first port of C{size} consecutive UDP ports, starting at an even
    port between C{low} and C{high}, all free on C{host} right now.

    Below Linux's default ephemeral range (32768-60999), so the ports that
    the other processes of the test pick (C{free_port}) never fall in it.
    """
    for _ in range(200):
        first = random.randrange(low, high - size, 2)
        if not held_ports(host, first, first + size - 1):
            return first
    raise RuntimeError(f"no {size} free UDP ports in a row on {host} between {low} and {high}")
