"""One RTP audio session of the media server: G.711 out and in, RTCP reports.

An L{RtpSession} owns an even UDP port for RTP and the odd one above it for
RTCP (RFC 3550 11).  Everything is timed on the injected reactor:

 - B{Sending}: a 20 ms tick asks the source for a frame of linear PCM,
   encodes it (PCMU or PCMA; a L{PcmFrame}, such as a prompt's, keeps its
   encoding, so a prompt is encoded once however often it plays) and sends
   one packet of 160 samples straight to the socket.  The ticks of every
   session of a reactor come from one shared L{Pacer} (one timer for all,
   C{media/server/pacer.py}); a session's frame C{n} is due C{n x 20 ms}
   after its I{epoch}, the pacer phase it joined (at most 20 ms before its
   start; the first frame goes at start).  Sequence
   numbers, timestamps and the SSRC start at random values (RFC 3550 5.1);
   the sequence number grows by one per packet and the timestamp by 160 per
   20 ms, whether a packet was sent or not.  The marker bit is set on the
   first packet and on the first packet after any gap (silence suppression,
   a direction that forbade sending, no destination yet, ticks the reactor
   missed), as RFC 3551 4.1 asks of the start of a talkspurt.  When the
   source has nothing, a silence packet is sent, unless C{suppress_silence}
   is set.  After a stall of the reactor up to L{MAX_CATCH_UP} missed
   frames are sent in a burst; older ones are skipped.
 - B{Receiving}: packets of the negotiated payload type are decoded into a
   L{JitterBuffer}; from the first packet on, every tick delivers exactly one
   320-byte frame to C{on_audio} (silence where nothing arrived in time).  A
   new SSRC restarts the buffer.  Telephone-event packets (RFC 4733) go to
   C{on_event} as parsed L{RtpPacket}s, untouched; comfort noise (payload
   type 13) is ignored; other payload types are counted and dropped.
 - B{Symmetric RTP} (RFC 4961): packets go to the address from the SDP, and
   to where the remote's packets come from once they arrive
   (L{media.latching.Latch}, the relay's rules against hijacking); RTP and
   RTCP latch apart.
 - B{RTCP}: a compound report (SR when we sent RTP since the report before
   last, else RR; a reception report block once RTP arrived; SDES CNAME)
   every C{rtcp_interval} seconds on average, randomised to 0.5-1.5 times it
   (RFC 3550 6.2), the first after half an interval.  L{stop} sends a BYE.

The direction (RFC 3264) gates RTP only: C{sendonly} and C{inactive}
deliver no audio and C{recvonly} and C{inactive} send none, while RTCP goes
on in every direction.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from b2bua.sip.sdp import DIRECTIONS, RECVONLY, SENDONLY, SENDRECV
from media.latching import Address, Latch, LatchPolicy
from media.rtp import ReceptionStatistics, parse_rtcp, rtp_packet
from media.server.g711 import G711Codec, PcmFrame
from media.server.jitter import FRAME_BYTES, FRAME_SAMPLES, JitterBuffer
from media.server.pacer import Pacer
from media.server.rtcp_reports import RtcpReporter
from media.server.rtp_packet import RtpPacket, parse_rtp

__all__ = [
    "COMFORT_NOISE",
    "MAX_CATCH_UP",
    "PTIME",
    "RtpSession",
    "SessionCounters",
]

#: Seconds per packet (20 ms of G.711).
PTIME = 0.020
#: Most frames sent in one burst after the reactor missed ticks.
MAX_CATCH_UP = 5
#: RFC 3389 comfort noise, static payload type 13.
COMFORT_NOISE = 13

#: Ticks are scheduled this much early (seconds), so that a clock whose
#: time is a sum of float steps never misses one.
_EARLY = 1e-4
_TS_MOD = 1 << 32
_SENDING = frozenset({SENDRECV, SENDONLY})
_RECEIVING = frozenset({SENDRECV, RECVONLY})

log = Logger()


@dataclass(slots=True)
class SessionCounters:
    """What an L{RtpSession} sent and received.

    @ivar packets_sent: RTP packets sent (audio and others).
    @ivar octets_sent: their payload octets (what an SR reports).
    @ivar packets_received: RTP packets accepted from the remote.
    @ivar malformed: datagrams on the RTP port that were not RTP.
    @ivar foreign: packets refused by latching (another source).
    @ivar unknown_payload: packets of a payload type not negotiated.
    @ivar events: telephone-event packets handed on.
    @ivar comfort_noise: comfort-noise packets ignored.
    @ivar undeliverable: frames not sent for want of a destination.
    @ivar send_errors: sends the socket refused.
    @ivar skipped_frames: frames skipped after a stall of the reactor.
    @ivar bad_frames: source frames of the wrong size (padded or cut).
    @ivar callback_errors: exceptions raised by the source or callbacks.
    @ivar rtcp_sent: compound RTCP packets sent.
    @ivar rtcp_received: RTCP packets accepted.
    @ivar rtcp_malformed: datagrams on the RTCP port that were not RTCP.
    """

    packets_sent: int = 0
    octets_sent: int = 0
    packets_received: int = 0
    malformed: int = 0
    foreign: int = 0
    unknown_payload: int = 0
    events: int = 0
    comfort_noise: int = 0
    undeliverable: int = 0
    send_errors: int = 0
    skipped_frames: int = 0
    bad_frames: int = 0
    callback_errors: int = 0
    rtcp_sent: int = 0
    rtcp_received: int = 0
    rtcp_malformed: int = 0


class _Port(DatagramProtocol):
    """A UDP socket of a session, handing datagrams to one of its methods."""

    def __init__(self, receive: Callable[[bytes, Address], None]) -> None:
        self._receive = receive

    def datagramReceived(self, data: bytes, addr: Address) -> None:  # type: ignore[override]
        """Hand the datagram to the session."""
        self._receive(data, addr)


class RtpSession:
    """One G.711 audio stream: paced sender, jitter-buffered receiver, RTCP.

    Use: make it, L{listen} on a port pair (directly, or as
    C{PortPool.acquire(session.listen)}), L{start}, and L{stop} at the end.

    @ivar codec: the G.711 law in use.
    @ivar payload_type: its negotiated payload type.
    @ivar telephone_event: the negotiated telephone-event payload type, or
        C{None}.
    @ivar direction: C{sendrecv}, C{sendonly}, C{recvonly} or C{inactive},
        from this side's point of view (the answer's direction).
    @ivar ssrc: our synchronisation source.
    @ivar sequence: the sequence number of the next packet.
    @ivar port: the RTP port, once listening.
    @ivar jitter: the receive L{JitterBuffer}.
    @ivar statistics: reception statistics of the remote's RTP (loss,
        jitter), as RTCP reports them.
    @ivar reporter: the L{RtcpReporter} (RTCP state, round-trip time).
    @ivar counters: the L{SessionCounters}.
    """

    def __init__(
        self,
        reactor: Any,
        codec: G711Codec,
        *,
        payload_type: int | None = None,
        telephone_event: int | None = None,
        remote: Address | None = None,
        remote_rtcp: Address | None = None,
        direction: str = SENDRECV,
        interface: str = "",
        source: Callable[[], bytes | None] | None = None,
        on_audio: Callable[[bytes], object] | None = None,
        on_event: Callable[[RtpPacket], object] | None = None,
        suppress_silence: bool = False,
        jitter: JitterBuffer | None = None,
        latching: LatchPolicy | None = None,
        rtcp_interval: float = 5.0,
        cname: str | None = None,
        rng: random.Random | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        """
        @param reactor: an C{IReactorUDP} that is also the C{IReactorTime}.
        @param codec: L{media.server.g711.PCMU} or C{PCMA}.
        @param payload_type: the negotiated payload type (default: the
            codec's static one).
        @param telephone_event: the negotiated telephone-event payload
            type, or C{None}.
        @param remote: the remote RTP address from its SDP, or C{None}
            (unknown, or on hold: then we send only after latching); a
            host that is not an IP literal counts as unknown (logged).
        @param remote_rtcp: the remote RTCP address (default: the RTP port
            plus one).
        @param direction: our direction.
        @param interface: the address to bind.
        @param source: called once per 20 ms with no argument; returns 320
            bytes of linear PCM, or C{None} for silence.
        @param on_audio: called with each 320-byte frame received.
        @param on_event: called with each telephone-event L{RtpPacket}.
        @param suppress_silence: send nothing (instead of silence packets)
            while the source returns C{None}.
        @param jitter: the receive buffer (default: L{JitterBuffer}()).
        @param latching: the latching rules (default: L{LatchPolicy}()).
        @param rtcp_interval: mean seconds between RTCP reports (> 0).
        @param cname: the RTCP canonical name (default: random, RFC 7022).
        @param rng: randomness for SSRC, sequence, timestamp, CNAME and
            report times (default: the system's secure source).
        @param pacer: the 20 ms clock (default: the reactor's shared
            L{Pacer.of}).
        @raise ValueError: for a bad direction, payload type or interval.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"not a media direction: {direction!r}")
        if rtcp_interval <= 0:
            raise ValueError(f"rtcp_interval must be > 0, not {rtcp_interval}")
        self._reactor = reactor
        self._rng = rng if rng is not None else random.SystemRandom()
        self.codec = codec
        self.payload_type = codec.payload_type if payload_type is None else payload_type
        self.telephone_event = telephone_event
        _check_payload_type(self.payload_type)
        if telephone_event is not None:
            _check_payload_type(telephone_event)
        self.direction = direction
        self.interface = interface
        self.source = source
        self.on_audio = on_audio
        self.on_event = on_event
        self.suppress_silence = suppress_silence
        self.jitter = jitter if jitter is not None else JitterBuffer()
        policy = latching if latching is not None else LatchPolicy()
        remote, remote_rtcp = _literal(remote), _literal(remote_rtcp)
        self._rtp_latch = Latch(policy, remote)
        self._rtcp_latch = Latch(policy, _rtcp_address(remote, remote_rtcp))
        self.rtcp_interval = rtcp_interval
        self.ssrc = self._rng.getrandbits(32)
        self.sequence = self._rng.getrandbits(16)
        self._initial_timestamp = self._rng.getrandbits(32)
        self._timestamp = self._initial_timestamp
        self.cname = cname if cname is not None else f"{self._rng.getrandbits(96):024x}"
        self.statistics = ReceptionStatistics(
            {} if telephone_event is None else {telephone_event: 0}
        )
        self.reporter = RtcpReporter(self.ssrc, self.cname, self.statistics)
        self.counters = SessionCounters()
        self.port: int | None = None
        self._ports: list[Any] = []
        self._pacer = pacer
        self._sendto: Callable[[bytes, Address], object] | None = None
        self._stopped = False
        self._frames_due = 0
        self._rtcp_call: IDelayedCall | None = None
        self._started_at: float | None = None
        self._marker = True
        self._remote_ssrc: int | None = None

    # -- life cycle ---------------------------------------------------------

    def listen(self, port: int) -> int:
        """Bind the RTP port and the RTCP port above it.

        Fits C{PortPool.acquire}: when either bind fails, nothing stays
        bound and the error propagates.

        @param port: the RTP port (even by convention).
        @return: C{port}.
        @raise CannotListenError: when a port is taken.
        """
        if self._ports:
            raise RuntimeError("the session is already listening")
        if not 0 < port < 65535:
            raise CannotListenError(self.interface, port, ValueError("bad RTP port"))
        rtp = self._reactor.listenUDP(port, _Port(self._rtp_received), interface=self.interface)
        try:
            rtcp = self._reactor.listenUDP(
                port + 1, _Port(self._rtcp_received), interface=self.interface
            )
        except BaseException:
            rtp.stopListening()
            raise
        self._ports = [rtp, rtcp]
        # straight to the socket: the port's write() checks and wraps what
        # a connected RTP sender never needs (a test's fake port has none)
        sock = getattr(rtp, "socket", None)
        self._sendto = sock.sendto if sock is not None else rtp.write
        self.port = port
        return port

    def start(self) -> None:
        """Start sending and playing out (the first packet goes now), and
        schedule the first RTCP report.

        @raise RuntimeError: when not listening, or already started.
        """
        if not self._ports:
            raise RuntimeError("listen() before start()")
        if self._started_at is not None:
            raise RuntimeError("the session is already started")
        if self._pacer is None:
            self._pacer = Pacer.of(self._reactor)
        self._started_at = self._pacer.join(self)
        self._frames_due = 1
        self._tick(1)
        if not self._stopped:
            self._schedule_rtcp(first=True)

    def stop(self) -> Deferred[Any]:
        """Send an RTCP BYE, stop the timers and close both ports.

        @return: a Deferred that fires when the ports are closed.
        """
        if self._started_at is not None and not self._stopped:
            self._stopped = True
            if self._pacer is not None:
                self._pacer.leave(self)
            call, self._rtcp_call = self._rtcp_call, None
            if call is not None and call.active():
                call.cancel()
            self._send_rtcp(bye=True)
        ports, self._ports = self._ports, []
        self._sendto = None
        self.jitter.reset()
        return DeferredList([maybeDeferred(port.stopListening) for port in ports])

    def update(
        self,
        *,
        remote: Address | None,
        direction: str,
        codec: G711Codec,
        payload_type: int | None = None,
        telephone_event: int | None = None,
        remote_rtcp: Address | None = None,
    ) -> None:
        """Apply the result of a new offer/answer exchange (re-INVITE,
        UPDATE); every value is replaced, as the new SDP states it.

        A changed remote address returns latching to learning; a direction
        that stops receiving empties the jitter buffer; a changed codec or
        payload type restarts it and sets the marker on the next packet.

        @param remote: the remote RTP address from the new SDP, or C{None}.
        @param direction: our new direction.
        @param codec: the G.711 law.
        @param payload_type: its payload type (default: the codec's).
        @param telephone_event: the telephone-event payload type, or C{None}.
        @param remote_rtcp: its RTCP address (default: RTP port plus one).
        @raise ValueError: for a bad direction or payload type.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"not a media direction: {direction!r}")
        payload_type = codec.payload_type if payload_type is None else payload_type
        _check_payload_type(payload_type)
        if telephone_event is not None:
            _check_payload_type(telephone_event)
        remote, remote_rtcp = _literal(remote), _literal(remote_rtcp)
        self._rtp_latch.expect(remote)
        self._rtcp_latch.expect(_rtcp_address(remote, remote_rtcp))
        if codec != self.codec or payload_type != self.payload_type:
            self.codec = codec
            self.payload_type = payload_type
            self.jitter.reset()
            self._remote_ssrc = None
            self._marker = True
        if telephone_event != self.telephone_event:
            self.telephone_event = telephone_event
            self.statistics.rates = {} if telephone_event is None else {telephone_event: 0}
        if direction != self.direction:
            self.direction = direction
            if direction not in _RECEIVING:
                self.jitter.reset()
                self._remote_ssrc = None

    # -- sending --------------------------------------------------------------

    @property
    def destination(self) -> Address | None:
        """Where RTP goes now: the latched source, else the SDP address."""
        return self._rtp_latch.destination

    @property
    def rtcp_destination(self) -> Address | None:
        """Where RTCP goes now."""
        return self._rtcp_latch.destination

    @property
    def epoch(self) -> float | None:
        """The reactor time frame 0 was due (frame C{n} is due C{n x 20 ms}
        later); C{None} before L{start}."""
        return self._started_at

    @property
    def timestamp(self) -> int:
        """The RTP timestamp of the next 20 ms frame (for packets sent with
        L{send_payload}, such as RFC 4733 events)."""
        return self._timestamp

    def rtp_timestamp_at(self, seconds: float) -> int:
        """The RTP timestamp of the sampling instant C{seconds} (reactor
        time), on the timeline of the packets sent.

        @param seconds: a reactor time at or after L{start}.
        @return: the 32-bit timestamp.
        @raise RuntimeError: before L{start}.
        """
        if self._started_at is None:
            raise RuntimeError("the session is not started")
        elapsed = round((seconds - self._started_at) * 8000)
        return (self._initial_timestamp + elapsed) % _TS_MOD

    def send_payload(
        self,
        payload_type: int,
        payload: bytes,
        *,
        timestamp: int | None = None,
        marker: bool = False,
    ) -> bool:
        """Send one packet outside the audio pacing (an RFC 4733 event).

        It takes the next sequence number and our SSRC; it is sent whatever
        the direction, since the caller decides.

        @param payload_type: its payload type.
        @param payload: its payload.
        @param timestamp: its RTP timestamp (default: L{timestamp}).
        @param marker: its marker bit.
        @return: C{True} when sent.
        """
        _check_payload_type(payload_type)
        stamp = self._timestamp if timestamp is None else timestamp
        return self._send(payload_type, payload, stamp, marker)

    def _send(self, payload_type: int, payload: bytes, timestamp: int, marker: bool) -> bool:
        """Send one RTP packet to the destination."""
        destination = self._rtp_latch.destination
        sendto = self._sendto
        if destination is None or sendto is None:
            self.counters.undeliverable += 1
            return False
        data = rtp_packet(payload_type, self.sequence, timestamp, self.ssrc, payload, marker=marker)
        try:
            sendto(data, destination)
        except OSError:
            self.counters.send_errors += 1
            return False
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.counters.packets_sent += 1
        self.counters.octets_sent += len(payload)
        self.reporter.rtp_sent()
        return True

    def pace(self, now: float) -> None:
        """The pacer's call: run the ticks that are due by C{now} (frame
        C{n} is due C{n * PTIME} after the L{epoch}); the schedule is
        absolute, so the pace does not drift however late the reactor
        calls."""
        started = self._started_at
        if started is None or self._stopped:
            return
        due = int((now - started + 2 * _EARLY) / PTIME) + 1
        count = due - self._frames_due
        if count > 0:
            self._frames_due = due
            self._tick(count)

    def _tick(self, count: int) -> None:
        """Every 20 ms (C{count} > 1 after missed ticks): send and play."""
        skipped = max(count - MAX_CATCH_UP, 0)
        if skipped:
            self.counters.skipped_frames += skipped
            self._timestamp = (self._timestamp + skipped * FRAME_SAMPLES) % _TS_MOD
            self._marker = True
        for _ in range(count - skipped):
            if self._stopped:
                return
            self._send_frame()
            self._play_frame()

    def _send_frame(self) -> None:
        """Send the source's next frame, then move the timestamp on."""
        timestamp = self._timestamp
        self._timestamp = (timestamp + FRAME_SAMPLES) % _TS_MOD
        if self.direction not in _SENDING:
            self._marker = True
            return
        pcm = None
        if self.source is not None:
            try:
                pcm = self.source()
            except Exception:
                self.counters.callback_errors += 1
                log.failure("the RTP session's audio source failed")
        if pcm is None:
            if self.suppress_silence:
                self._marker = True
                return
            payload = _silence(self.codec)
        elif type(pcm) is PcmFrame and len(pcm) == FRAME_BYTES:
            payload = pcm.encoded(self.codec)
        else:
            if len(pcm) != FRAME_BYTES:
                self.counters.bad_frames += 1
                pcm = bytes(pcm[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\0")
            payload = self.codec.encode(pcm)
        if self._send(self.payload_type, payload, timestamp, self._marker):
            self._marker = False
        else:
            self._marker = True

    # -- receiving --------------------------------------------------------------

    def _play_frame(self) -> None:
        """Deliver the jitter buffer's next frame."""
        if self.direction not in _RECEIVING:
            return
        frame = self.jitter.pull()
        if frame is not None and self.on_audio is not None:
            try:
                self.on_audio(frame)
            except Exception:
                self.counters.callback_errors += 1
                log.failure("the RTP session's audio consumer failed")

    def _rtp_received(self, data: bytes, addr: Address) -> None:
        """A datagram on the RTP port."""
        packet = parse_rtp(data)
        if packet is None:
            self.counters.malformed += 1
            return
        now = self._reactor.seconds()
        latch = self._rtp_latch
        if addr == latch.address:
            latch.last_seen = now
        elif not latch.admit(addr, packet.ssrc, self.statistics.ssrc, now):
            self.counters.foreign += 1
            return
        self.counters.packets_received += 1
        self.statistics.packet(data, now)
        if self.direction not in _RECEIVING:
            return
        payload_type = packet.payload_type
        if payload_type == self.payload_type:
            if packet.ssrc != self._remote_ssrc:
                self._remote_ssrc = packet.ssrc
                self.jitter.reset()
            pcm = self.codec.decode(packet.payload)
            self.jitter.put(packet.timestamp, pcm, now, marker=packet.marker)
        elif payload_type == self.telephone_event:
            self.counters.events += 1
            if self.on_event is not None:
                try:
                    self.on_event(packet)
                except Exception:
                    self.counters.callback_errors += 1
                    log.failure("the RTP session's event consumer failed")
        elif payload_type == COMFORT_NOISE:
            self.counters.comfort_noise += 1
        else:
            self.counters.unknown_payload += 1

    # -- RTCP -------------------------------------------------------------------

    def _schedule_rtcp(self, *, first: bool = False) -> None:
        """Schedule the next report at a randomised interval."""
        interval = self.rtcp_interval * self._rng.uniform(0.5, 1.5)
        if first:
            interval /= 2
        self._rtcp_call = self._reactor.callLater(interval, self._report)

    def _report(self) -> None:
        """Send a report and schedule the next one."""
        self._rtcp_call = None
        self._send_rtcp()
        if not self._stopped:
            self._schedule_rtcp()

    def rtcp_report(self, *, bye: bool = False) -> bytes:
        """Build the compound RTCP packet that would be sent now (see
        L{RtcpReporter.build}); this starts a new report interval.

        @param bye: end with a BYE.
        @return: the packet.
        """
        now = self._reactor.seconds()
        stamp = None if self._started_at is None else self.rtp_timestamp_at(now)
        return self.reporter.build(
            now,
            rtp_timestamp=stamp,
            packets=self.counters.packets_sent,
            octets=self.counters.octets_sent,
            bye=bye,
        )

    def _send_rtcp(self, *, bye: bool = False) -> None:
        """Send a compound report to the remote's RTCP address."""
        destination = self._rtcp_latch.destination
        if destination is None or len(self._ports) < 2:
            return
        data = self.rtcp_report(bye=bye)
        try:
            self._ports[1].write(data, destination)
        except OSError:
            self.counters.send_errors += 1
            return
        self.counters.rtcp_sent += 1

    def _rtcp_received(self, data: bytes, addr: Address) -> None:
        """A datagram on the RTCP port: latch, note SRs, measure RTT."""
        summary = parse_rtcp(data)
        if summary is None:
            self.counters.rtcp_malformed += 1
            return
        now = self._reactor.seconds()
        latch = self._rtcp_latch
        if addr == latch.address:
            latch.last_seen = now
        elif not latch.admit(addr, summary.ssrc, self._remote_ssrc, now):
            self.counters.foreign += 1
            return
        self.counters.rtcp_received += 1
        self.reporter.received(summary, now)

    @property
    def rtt(self) -> float | None:
        """The last round-trip time measured from RTCP, in seconds."""
        return self.reporter.rtt


_SILENCE: dict[int, bytes] = {}


def _silence(codec: G711Codec) -> bytes:
    """A frame of silence in C{codec} (made once per law)."""
    payload = _SILENCE.get(codec.silence)
    if payload is None:
        payload = _SILENCE[codec.silence] = bytes((codec.silence,)) * FRAME_SAMPLES
    return payload


def _check_payload_type(payload_type: int) -> None:
    """Refuse a payload type outside 0-127 or in the RTCP-clashing range."""
    if not 0 <= payload_type <= 127 or 64 <= payload_type <= 95:
        raise ValueError(f"bad RTP payload type: {payload_type}")


def _literal(address: Address | None) -> Address | None:
    """C{address} when its host is an IP literal, else C{None} (packets go
    straight to the socket, which would look a name up, blocking: a
    session with a named remote waits for latching instead)."""
    if address is None:
        return None
    try:
        ipaddress.ip_address(address[0])
    except ValueError:
        log.warn("media server: RTP address {host!r} is not an IP address; waiting for the "
                 "remote's packets instead", host=address[0])
        return None
    return address


def _rtcp_address(remote: Address | None, remote_rtcp: Address | None) -> Address | None:
    """The RTCP address: given, or the RTP port plus one."""
    if remote_rtcp is not None:
        return remote_rtcp
    if remote is None:
        return None
    return (remote[0], remote[1] + 1)
