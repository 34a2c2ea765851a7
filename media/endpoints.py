"""The relay's UDP endpoints: one socket facing one party, RTP or RTCP.

An endpoint accepts the party's packets (checking the source against its
L{Latch}), counts them, and sends them out of its I{peer}, the socket of the
same kind facing the other party, to that party's destination.

Hot path (L{RtpEndpoint.datagramReceived}): one comparison of the source
with the latched address, one clock read, the incremental statistics, one
C{sendto}.  Nothing is allocated there beyond what the socket layer does;
relay-wide counters are summed from the endpoints when asked for.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import DatagramProtocol

from media.latching import Address, Latch
from media.rtp import ReceptionStatistics, parse_rtcp, rtp_ssrc

if TYPE_CHECKING:
    from media.rtp import RtcpSummary

__all__ = ["PENDING_REPORTS", "Endpoint", "RtcpEndpoint", "RtpEndpoint"]

#: Sender reports remembered per direction for matching LSR values.
PENDING_REPORTS = 8


class Endpoint(DatagramProtocol):
    """One relay socket facing one party, for RTP or for RTCP.

    @ivar latch: where the party's packets come from and go to.
    @ivar peer: the socket of the same kind facing the other party.
    """

    def __init__(self, latch: Latch, seconds: Callable[[], float]) -> None:
        """
        @param latch: the party's latch for this socket.
        @param seconds: the clock (returns seconds).
        """
        self.latch = latch
        self.peer: Endpoint = self
        self._seconds = seconds
        self._send: Callable[[bytes, Address], Any] | None = None
        self.relayed = 0
        self.relayed_bytes = 0
        self.undeliverable = 0
        self.send_errors = 0
        #: called with each packet accepted from this party, and the time
        #: (RTP only: call recording); C{None} when nobody listens.
        self.tap: Callable[[bytes, float], None] | None = None
        #: when true, the party's packets are counted (and tapped) but not
        #: relayed: something else speaks to the other party (music on hold).
        self.mute = False
        self.injected = 0

    def startProtocol(self) -> None:
        """Choose how to send: the socket's own C{sendto} when there is
        one (the reactor's C{write} re-validates the address on every
        packet, which the relay did once when it learned it)."""
        sock = getattr(self.transport, "socket", None)
        if isinstance(sock, socket.socket):
            self._send = sock.sendto
        else:
            self._send = self.transport.write  # type: ignore[union-attr]

    def stopProtocol(self) -> None:
        """The socket is closed: send nothing more through it."""
        self._send = None

    def send_to_party(self, data: bytes) -> bool:
        """Send C{data} of our own (not relayed) out of this socket to the
        party it faces, at its latched (or signalled) address.

        @return: whether it was sent (C{False}: no address yet, the socket
            closed, or the socket layer refused).
        """
        destination = self.latch.destination
        if destination is None or self._send is None:
            return False
        try:
            self._send(data, destination)
        except OSError:
            self.send_errors += 1
            return False
        self.injected += 1
        return True

    def _forward(self, data: bytes) -> bool:
        """Send C{data} out of the peer socket to the other party."""
        peer = self.peer
        destination = peer.latch.destination
        if destination is None or peer._send is None:
            self.undeliverable += 1
            return False
        try:
            peer._send(data, destination)
        except OSError:
            self.send_errors += 1
            return False
        self.relayed += 1
        self.relayed_bytes += len(data)
        return True


class RtpEndpoint(Endpoint):
    """The RTP (or UDPTL) socket facing one party.

    @ivar stats: reception statistics of what the party sent.
    """

    def __init__(self, latch: Latch, seconds: Callable[[], float], stats: ReceptionStatistics):
        """
        @param latch: the party's latch for this socket.
        @param seconds: the clock.
        @param stats: where the party's packets are counted.
        """
        super().__init__(latch, seconds)
        self.stats = stats

    def datagramReceived(self, data: bytes, addr: Address) -> None:  # type: ignore[override]
        """Latch or check the source, count, relay."""
        now = self._seconds()
        latch = self.latch
        if addr == latch.address:
            latch.last_seen = now
        elif not latch.admit(addr, rtp_ssrc(data), self.stats.ssrc, now):
            return
        self.stats.packet(data, now)
        tap = self.tap
        if tap is not None:
            tap(data, now)
        if not self.mute:
            self._forward(data)


class RtcpEndpoint(Endpoint):
    """The RTCP socket facing one party; measures that party's RTT.

    When an SR from the other party is relayed to this party, its compact
    NTP time is remembered with the relay's clock; when this party reports
    on it (LSR), the round trip is the time since minus the DLSR.

    @ivar rtp: the RTP endpoint facing the same party (its statistics get
        the RTT samples).
    @ivar reports: compact NTP time -> relay time, of SRs sent to this
        party.
    """

    def __init__(self, latch: Latch, seconds: Callable[[], float], rtp: RtpEndpoint):
        """
        @param latch: the party's latch for this socket (RTCP latches
            apart from RTP).
        @param seconds: the clock.
        @param rtp: the RTP endpoint facing the same party.
        """
        super().__init__(latch, seconds)
        self.rtp = rtp
        self.ssrc: int | None = None
        self.reports: dict[int, float] = {}

    def datagramReceived(self, data: bytes, addr: Address) -> None:  # type: ignore[override]
        """Latch or check the source, read reports, relay."""
        now = self._seconds()
        summary = parse_rtcp(data)
        latch = self.latch
        if addr == latch.address:
            latch.last_seen = now
        elif not latch.admit(addr, None if summary is None else summary.ssrc, self.ssrc, now):
            return
        if summary is not None:
            self.ssrc = summary.ssrc
            self._measure(summary, now)
        if self._forward(data) and summary is not None and summary.sr_ntp is not None:
            pending = self.peer.reports  # type: ignore[attr-defined]
            pending[summary.sr_ntp] = now
            if len(pending) > PENDING_REPORTS:
                del pending[next(iter(pending))]

    def _measure(self, summary: RtcpSummary, now: float) -> None:
        """Turn report blocks answering relayed SRs into RTT samples."""
        for block in summary.reports:
            if block.lsr:
                sent = self.reports.pop(block.lsr, None)
                if sent is not None:
                    self.rtp.stats.add_rtt(now - sent - block.dlsr / 65536.0)
