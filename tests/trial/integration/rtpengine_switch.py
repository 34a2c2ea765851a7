"""Helpers of C{test_rtpengine_switch}: a child rtpengine, waiting for a
child to bind its UDP port without racing it, the SDPs a sipp received, and
a tap counting the RTP delivered on loopback.

  - L{RtpengineChild} runs Debian's C{rtpengine} in userspace mode on
    loopback, as C{test_rtpengine} does, but with rtpengine's default
    endpoint learning, and tells when it is up by reading C{/proc/net/udp}.
  - L{wait_until_bound} waits for a UDP port to be bound by reading
    C{/proc/net/udp}.  L{tests.trial.integration.sipp.wait_for_port} probes
    by binding the port itself, and a child binding it in that instant
    fails with C{EADDRINUSE}; watching the kernel's table never does.
  - L{received_sdps} reads sipp's C{-trace_msg} file and returns the SDP
    bodies of the messages sipp received.
  - L{RtpTap} opens a raw C{IPPROTO_UDP} socket bound to 127.0.0.1: it gets
    a copy of every UDP datagram the kernel delivers to that address
    (raw(7)), without taking it from its socket, so the test sees who sent
    RTP to whom even though sipp's media socket swallows what it receives.
    Raw sockets need root (or C{CAP_NET_RAW}), as sipp's pcap play does.
"""

from __future__ import annotations

import os
import random
import re
import socket
import struct
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import FailTest, SkipTest

from b2bua.sip.sdp import SessionDescription, parse_sdp
from tests.trial.integration.sipp import free_port
from tests.trial.integration.test_rtpengine import PCAP, RtpengineProcess

__all__ = ["LOOPBACK", "RtpTap", "RtpengineChild", "bound_udp_ports", "received_sdps",
           "require_pcap", "skip_or_fail", "wait_until_bound"]

LOOPBACK = "127.0.0.1"
#: C{/proc/net/udp} writes 127.0.0.1 as this (little-endian hex).
_PROC_LOOPBACK = "0100007F"
#: Ports bound to every IPv4 address are written with this address.
_PROC_ANY = "00000000"
#: Seconds between two looks at C{/proc/net/udp}.
_POLL = 0.05


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it under C{CI=true} (CI never skips an
    integration test)."""
    if os.environ.get("CI") == "true":
        raise FailTest(f"{reason} (CI=true: a missing prerequisite is a failure, not a skip)")
    raise SkipTest(reason)


def require_pcap() -> Path:
    """The pcap the sipps play (sip-tester's); skip (or fail under CI)
    without it."""
    if not PCAP.is_file():
        skip_or_fail(f"{PCAP} is missing; get it with: apt-get install sip-tester")
    return PCAP


def bound_udp_ports(path: str = "/proc/net/udp") -> set[int]:
    """The UDP ports bound on 127.0.0.1 (or on every IPv4 address) right now."""
    ports: set[int] = set()
    with open(path, encoding="ascii") as table:
        next(table, None)  # the header
        for line in table:
            fields = line.split()
            if len(fields) < 2:
                continue
            address, _, port = fields[1].partition(":")
            if address in (_PROC_LOOPBACK, _PROC_ANY):
                ports.add(int(port, 16))
    return ports


async def wait_until_bound(reactor: Any, port: int, ended: Deferred[Any], what: str,
                           timeout: float = 20.0) -> None:
    """Wait until C{port} is bound on 127.0.0.1 (read from C{/proc/net/udp}).

    @param ended: fires when the child meant to bind it ends; the wait then
        fails at once.  It is only looked at (C{called}), not consumed.
    @param what: the child's name, for the error.
    @raise RuntimeError: the child ended, or C{timeout} seconds passed.
    """
    waited = 0.0
    while port not in bound_udp_ports():
        if ended.called:
            raise RuntimeError(f"{what} ended before binding UDP port {port}")
        if waited >= timeout:
            raise RuntimeError(f"{what} did not bind UDP port {port} within {timeout:g} s")
        await deferLater(reactor, _POLL, lambda: None)
        waited += _POLL


class RtpengineChild:
    """A child rtpengine on loopback, userspace forwarding, default endpoint
    learning.

    @ivar ng_port: its ng control port (once L{start} has fired).
    @ivar port_min: the first of its L{port_count} media ports.
    """

    def __init__(self, reactor: Any, binary: str, port_count: int = 100) -> None:
        self.reactor = reactor
        self.binary = binary
        self.port_count = port_count
        self.ng_port = 0
        self.port_min = 0
        self.process: Any = None
        self.protocol: RtpengineProcess | None = None

    @property
    def port_max(self) -> int:
        """Its last media port."""
        return self.port_min + self.port_count - 1

    @property
    def ports(self) -> range:
        """Its media ports."""
        return range(self.port_min, self.port_max + 1)

    def owns(self, port: int) -> bool:
        """Whether C{port} is one of its media ports."""
        return port in self.ports

    def arguments(self) -> list[str]:
        """Its command line (C{--config-file=none}: no system configuration,
        C{--table=-1}: no kernel module; endpoint learning left as it is)."""
        return [
            self.binary,
            "--config-file=none",
            "--table=-1",
            f"--interface={LOOPBACK}",
            f"--listen-ng={LOOPBACK}:{self.ng_port}",
            f"--port-min={self.port_min}",
            f"--port-max={self.port_max}",
            "--delete-delay=0",
            "--num-threads=2",
            "--foreground",
            "--log-stderr",
            "--log-level=6",
        ]

    async def start(self, attempts: int = 3) -> None:
        """Start it and wait until its ng port is bound.  A port taken by
        someone else in the meantime (the ports are only free when chosen)
        makes it exit: it is tried again on other ports."""
        for attempt in range(attempts):
            self.ng_port = free_port("udp")
            self.port_min = random.randrange(20000, 30000 - self.port_count, 2)
            self.protocol = RtpengineProcess()
            self.process = self.reactor.spawnProcess(self.protocol, self.binary,
                                                     self.arguments(), env={})
            try:
                await wait_until_bound(self.reactor, self.ng_port, self.protocol.ended,
                                       "rtpengine", timeout=10.0)
            except RuntimeError:
                await self.stop()
                if attempt + 1 == attempts or "Address already in use" not in self.log():
                    raise RuntimeError(f"rtpengine did not start:\n{self.log()}") from None
            else:
                return

    async def stop(self) -> None:
        """TERM, then KILL after 5 s; wait for its end."""
        if self.process is None or self.protocol is None:
            return
        try:
            self.process.signalProcess("TERM")
        except ProcessExitedAlready:
            return
        killer = self.reactor.callLater(5.0, self._kill)
        await self.protocol.ended
        if killer.active():
            killer.cancel()

    def _kill(self) -> None:
        try:
            self.process.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    def log(self) -> str:
        """The end of its log."""
        return self.protocol.log() if self.protocol is not None else ""


_RECEIVED = re.compile(r"^\S+ message received \[\d+\] bytes :\s*$", re.MULTILINE)
_SEPARATOR = re.compile(r"^-{20,} .*$", re.MULTILINE)


def received_sdps(message_file: Path, first_line: str) -> list[SessionDescription]:
    """The SDP bodies of the messages sipp received whose first line starts
    with C{first_line} (C{"INVITE"}, C{"SIP/2.0 200"}), from its
    C{-trace_msg -message_file} file, in order."""
    text = message_file.read_text("utf-8", "replace") if message_file.exists() else ""
    found: list[SessionDescription] = []
    for match in _RECEIVED.finditer(text):
        rest = text[match.end():]
        end = _SEPARATOR.search(rest)
        message = rest[:end.start() if end else len(rest)].strip("\r\n")
        message = message.replace("\r\n", "\n")
        head, _, body = message.partition("\n\n")
        if not head.startswith(first_line) or "application/sdp" not in head.lower():
            continue
        found.append(parse_sdp(body.strip("\n").replace("\n", "\r\n").encode() + b"\r\n"))
    return found


class RtpTap:
    """Count the RTP datagrams the kernel delivers to 127.0.0.1, by
    (source port, destination port).

    L{start} it before the traffic, L{stop} it after; L{flows} holds the
    counts.  It is a reader of the reactor (C{IReadDescriptor}).
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.flows: Counter[tuple[int, int]] = Counter()
        self._socket: socket.socket | None = None

    def start(self) -> None:
        """Open the raw socket and start reading."""
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        raw.bind((LOOPBACK, 0))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        raw.setblocking(False)
        self._socket = raw
        self.reactor.addReader(self)

    def stop(self) -> None:
        """Read what is left, stop reading and close the socket."""
        if self._socket is None:
            return
        self.doRead()
        self.reactor.removeReader(self)
        self._socket.close()
        self._socket = None

    def fileno(self) -> int:
        """The raw socket's descriptor."""
        return self._socket.fileno() if self._socket is not None else -1

    def logPrefix(self) -> str:
        """The reactor's name for it in logs."""
        return "RtpTap"

    def connectionLost(self, reason: Failure) -> None:
        """The reactor gave up on the descriptor."""
        self._socket = None

    def doRead(self) -> None:
        """Count every datagram waiting."""
        if self._socket is None:
            return
        while True:
            try:
                packet = self._socket.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            self._count(packet)

    def _count(self, packet: bytes) -> None:
        """Count one IPv4 packet if it is UDP carrying RTP version 2."""
        if len(packet) < 20 or packet[0] >> 4 != 4:
            return
        header = (packet[0] & 0x0F) * 4
        if len(packet) < header + 8 + 12:
            return
        source, destination = struct.unpack("!HH", packet[header:header + 4])
        if packet[header + 8] >> 6 == 2:
            self.flows[(source, destination)] += 1

    def between(self, sources: Iterable[int], destinations: Iterable[int]) -> int:
        """RTP packets delivered from any of the ports C{sources} to any of
        the ports C{destinations}."""
        senders, receivers = set(sources), set(destinations)
        return sum(n for (s, d), n in self.flows.items() if s in senders and d in receivers)
