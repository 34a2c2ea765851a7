"""RTP and RTCP packets (RFC 3550): header fields, reports, statistics.

Sans-IO.  L{ReceptionStatistics} keeps what the relay records per stream and
sender: packets, bytes, loss from sequence numbers (RFC 3550 A.1 and A.3,
with wrap-around, reordering, duplicates and re-synchronisation after a
large jump), interarrival jitter (A.8) and round-trip times.  It is updated
once per packet, incrementally and without allocating, so it sits on the
relay's hot path.

L{parse_rtcp} reads the parts of a compound RTCP packet that matter for
round-trip time: the NTP timestamp of a sender report and the LSR/DLSR of
report blocks (RFC 3550 6.4).  The builders (L{rtp_packet},
L{rtcp_sender_report}, L{rtcp_receiver_report}) make packets for tests,
benchmarks and media endpoints.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import NamedTuple

__all__ = [
    "DEFAULT_CLOCK_RATE",
    "ReceptionStatistics",
    "ReportBlock",
    "RtcpSummary",
    "is_rtcp",
    "ntp_middle",
    "parse_rtcp",
    "rtcp_receiver_report",
    "rtcp_sender_report",
    "rtcp_ssrc",
    "rtp_packet",
    "rtp_ssrc",
]

#: Clock rate (Hz) assumed for a payload type the SDP does not map.
DEFAULT_CLOCK_RATE = 8000

#: RFC 3550 A.1: packets in sequence before a new source counts, the
#: largest forward jump still taken as loss, the largest backward step
#: still taken as reordering.
MIN_SEQUENTIAL = 2
MAX_DROPOUT = 3000
MAX_MISORDER = 100
_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32
_TS_HALF = 1 << 31

_RTP_HEADER = struct.Struct("!BBHII")
_unpack_rtp = _RTP_HEADER.unpack_from
_WORD = struct.Struct("!I")
_RTCP_HEADER = struct.Struct("!BBH")
_SENDER_INFO = struct.Struct("!IIIIII")
_REPORT_BLOCK = struct.Struct("!IIIIII")

RTCP_SR = 200
RTCP_RR = 201


def rtp_ssrc(data: bytes) -> int | None:
    """The SSRC of an RTP packet.

    @param data: a datagram.
    @return: the SSRC, or C{None} when C{data} is not an RTP version 2
        packet (or is RTCP).
    """
    if len(data) < 12 or data[0] & 0xC0 != 0x80 or is_rtcp(data):
        return None
    return int(_WORD.unpack_from(data, 8)[0])


def rtcp_ssrc(data: bytes) -> int | None:
    """The sender SSRC of the first packet of a compound RTCP packet.

    @param data: a datagram.
    @return: the SSRC, or C{None} when C{data} is not RTCP version 2.
    """
    if len(data) < 8 or data[0] & 0xC0 != 0x80:
        return None
    return int(_WORD.unpack_from(data, 4)[0])


def is_rtcp(data: bytes) -> bool:
    """Whether a datagram on a multiplexed port is RTCP (RFC 5761 4).

    @param data: a datagram of at least two bytes.
    @return: C{True} when the second byte (the RTCP packet type) is in
        192-223, which RTP payload types with the marker bit never reach
        in practice.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


def ntp_middle(seconds: int, fraction: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp (the LSR of RR blocks).

    @param seconds: the NTP seconds word.
    @param fraction: the NTP fraction word.
    @return: the compact 16.16 timestamp.
    """
    return ((seconds & 0xFFFF) << 16) | (fraction >> 16)


class ReportBlock(NamedTuple):
    """One reception report block of an SR or RR (RFC 3550 6.4.1).

    C{lsr} is the compact NTP time of the last SR received from C{ssrc}
    (0: none yet), C{dlsr} the delay since then in 1/65536 seconds.
    """

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int


class RtcpSummary(NamedTuple):
    """What L{parse_rtcp} read from a compound packet.

    @ivar ssrc: sender SSRC of the first packet.
    @ivar sr_ntp: compact NTP timestamp of the first sender report, or
        C{None} when there is none.
    @ivar reports: every report block, of SRs and RRs, in order.
    """

    ssrc: int
    sr_ntp: int | None
    reports: tuple[ReportBlock, ...]


def parse_rtcp(data: bytes) -> RtcpSummary | None:
    """Read a compound RTCP packet's sender reports and report blocks.

    Packets of other types (SDES, BYE, APP, feedback) are skipped.  Parsing
    stops at the first malformed packet, keeping what came before it.

    @param data: a datagram.
    @return: the summary, or C{None} when the first packet is not RTCP.
    """
    size = len(data)
    if size < 8 or data[0] & 0xC0 != 0x80:
        return None
    ssrc = int(_WORD.unpack_from(data, 4)[0])
    sr_ntp: int | None = None
    reports: list[ReportBlock] = []
    offset = 0
    while offset + 4 <= size:
        first, packet_type, length = _RTCP_HEADER.unpack_from(data, offset)
        end = offset + (length + 1) * 4
        if first & 0xC0 != 0x80 or end > size:
            break
        count = first & 0x1F
        if packet_type == RTCP_SR and offset + 28 <= end:
            _, ntp_sec, ntp_frac, _, _, _ = _SENDER_INFO.unpack_from(data, offset + 4)
            if sr_ntp is None:
                sr_ntp = ntp_middle(ntp_sec, ntp_frac)
            _read_blocks(data, offset + 28, end, count, reports)
        elif packet_type == RTCP_RR and offset + 8 <= end:
            _read_blocks(data, offset + 8, end, count, reports)
        offset = end
    return RtcpSummary(ssrc, sr_ntp, tuple(reports))


def _read_blocks(data: bytes, start: int, end: int, count: int, out: list[ReportBlock]) -> None:
    """Append up to C{count} report blocks found between C{start} and C{end}."""
    for number in range(count):
        at = start + number * 24
        if at + 24 > end:
            return
        ssrc, lost_word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, at)
        cumulative = lost_word & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        out.append(ReportBlock(ssrc, lost_word >> 24, cumulative, highest, jitter, lsr, dlsr))


def rtp_packet(
    payload_type: int,
    seq: int,
    timestamp: int,
    ssrc: int,
    payload: bytes = b"",
    *,
    marker: bool = False,
) -> bytes:
    """Build an RTP version 2 packet without CSRCs or extensions.

    @param payload_type: 0-127.
    @param seq: sequence number (taken modulo 2**16).
    @param timestamp: RTP timestamp (taken modulo 2**32).
    @param ssrc: synchronisation source.
    @param payload: the payload bytes.
    @param marker: the marker bit.
    @return: the packet.
    """
    second = (0x80 if marker else 0) | (payload_type & 0x7F)
    header = _RTP_HEADER.pack(0x80, second, seq & 0xFFFF, timestamp % _TS_MOD, ssrc)
    return header + payload


def _pack_blocks(blocks: Iterable[ReportBlock]) -> bytes:
    """Serialize report blocks."""
    out = []
    for block in blocks:
        lost_word = ((block.fraction_lost & 0xFF) << 24) | (block.cumulative_lost & 0xFFFFFF)
        out.append(
            _REPORT_BLOCK.pack(
                block.ssrc, lost_word, block.highest_seq, block.jitter, block.lsr, block.dlsr
            )
        )
    return b"".join(out)


def rtcp_sender_report(
    ssrc: int,
    ntp_seconds: int,
    ntp_fraction: int,
    rtp_timestamp: int = 0,
    packets: int = 0,
    octets: int = 0,
    blocks: Iterable[ReportBlock] = (),
) -> bytes:
    """Build an RTCP SR (RFC 3550 6.4.1).

    @return: the packet (not compound: no SDES).
    """
    body = _SENDER_INFO.pack(ssrc, ntp_seconds, ntp_fraction, rtp_timestamp, packets, octets)
    packed = _pack_blocks(blocks)
    count = len(packed) // 24
    length = (4 + len(body) + len(packed)) // 4 - 1
    return _RTCP_HEADER.pack(0x80 | count, RTCP_SR, length) + body + packed


def rtcp_receiver_report(ssrc: int, blocks: Iterable[ReportBlock] = ()) -> bytes:
    """Build an RTCP RR (RFC 3550 6.4.2).

    @return: the packet (not compound: no SDES).
    """
    packed = _pack_blocks(blocks)
    count = len(packed) // 24
    length = (8 + len(packed)) // 4 - 1
    return _RTCP_HEADER.pack(0x80 | count, RTCP_RR, length) + _WORD.pack(ssrc) + packed


class ReceptionStatistics:
    """What one sender's packets on one stream looked like on arrival.

    Call L{packet} for every datagram accepted from the sender.  RTP
    version 2 packets feed the sequence and jitter state; other datagrams
    (T.38 UDPTL, STUN, DTLS, multiplexed RTCP) only count as packets and
    bytes.  A new SSRC starts a new source (RFC 3550 A.1 probation of
    L{MIN_SEQUENTIAL} packets); what the previous source lost is kept.

    @ivar packets: datagrams counted.
    @ivar bytes: their bytes.
    @ivar rates: payload type -> clock rate (Hz) for the jitter; a rate of
        0 excludes the payload type from the jitter (RFC 4733 events
        repeat one timestamp for the whole event).  Shared with the
        stream; changed in place when the SDP changes.
    @ivar ssrc: the current source, or C{None} before the first RTP packet.
    """

    __slots__ = (
        "_lost_before",
        "_rate",
        "_rtt_count",
        "_rtt_sum",
        "_transit",
        "bad_seq",
        "base_seq",
        "bytes",
        "cycles",
        "jitter",
        "max_seq",
        "packets",
        "probation",
        "rates",
        "received",
        "rtp",
        "ssrc",
    )

    def __init__(self, rates: Mapping[int, int] | None = None, *, rtp: bool = True) -> None:
        """
        @param rates: payload type -> clock rate; see L{rates}.
        @param rtp: C{False} for non-RTP media (only packets and bytes).
        """
        self.rates: Mapping[int, int] = rates if rates is not None else {}
        self.rtp = rtp
        self.packets = 0
        self.bytes = 0
        self.ssrc: int | None = None
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.bad_seq = _SEQ_MOD + 1
        self.probation = 0
        self.received = 0
        self.jitter = 0.0
        self._transit: float | None = None
        self._rate = 0
        self._lost_before = 0
        self._rtt_sum = 0.0
        self._rtt_count = 0

    def packet(self, data: bytes, now: float) -> None:
        """Count one datagram received at C{now} (seconds).

        @param data: the datagram.
        @param now: its arrival time.
        """
        self.packets += 1
        self.bytes += len(data)
        if not self.rtp or len(data) < 12:
            return
        first, second, seq, timestamp, ssrc = _unpack_rtp(data)
        if first & 0xC0 != 0x80 or 191 < second < 224:
            return
        if ssrc != self.ssrc:
            self._new_source(ssrc, seq)
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if udelta != 1:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
                return
            self.probation -= 1
            self.max_seq = seq
            if self.probation:
                return
            self._restart(seq)
            self.received = 1
        elif udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += _SEQ_MOD
            self.max_seq = seq
            self.received += 1
        elif udelta <= _SEQ_MOD - MAX_MISORDER:
            if seq != self.bad_seq:
                self.bad_seq = (seq + 1) & 0xFFFF
                return
            # Two packets in sequence after a big jump: the sender restarted.
            self._lost_before += self._lost_now()
            self._restart(seq)
            self.received = 1
        else:
            self.received += 1  # duplicate or reordered
        rate = self.rates.get(second & 0x7F, DEFAULT_CLOCK_RATE)
        if not rate:
            return
        if rate != self._rate:
            if self._rate:
                self.jitter = self.jitter * rate / self._rate
            self._rate = rate
            self._transit = None
        transit = now * rate - timestamp
        previous = self._transit
        self._transit = transit
        if previous is not None:
            d = transit - previous
            if d > _TS_HALF:
                d -= _TS_MOD
            elif d < -_TS_HALF:
                d += _TS_MOD
            if d < 0:
                d = -d
            self.jitter += (d - self.jitter) / 16.0

    def _new_source(self, ssrc: int, seq: int) -> None:
        """Start counting a new SSRC (RFC 3550 A.1, on probation)."""
        if self.ssrc is not None:
            self._lost_before += self._lost_now()
        self.ssrc = ssrc
        self._restart(seq)
        self.max_seq = (seq - 1) & 0xFFFF
        self.probation = MIN_SEQUENTIAL
        self._transit = None

    def _restart(self, seq: int) -> None:
        """RFC 3550 A.1 C{init_seq}: sequence state from C{seq}."""
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = _SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self._transit = None

    def _lost_now(self) -> int:
        """Packets lost by the current source (A.3), never negative."""
        if not self.received:
            return 0
        expected = self.cycles + self.max_seq - self.base_seq + 1
        return max(0, expected - self.received)

    @property
    def expected(self) -> int:
        """Packets the current source sent since counting began (A.3)."""
        if not self.received:
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Packets lost, all sources together."""
        return self._lost_before + self._lost_now()

    @property
    def jitter_ms(self) -> float | None:
        """Interarrival jitter in milliseconds, or C{None} if not measured."""
        if not self._rate:
            return None
        return self.jitter * 1000.0 / self._rate

    def add_rtt(self, seconds: float) -> None:
        """Record one round-trip time sample.

        @param seconds: the sample; negative ones (clock granularity) count
            as 0.
        """
        self._rtt_sum += seconds if seconds > 0 else 0.0
        self._rtt_count += 1

    @property
    def rtt_ms(self) -> float | None:
        """Mean round-trip time in milliseconds, or C{None} without samples."""
        if not self._rtt_count:
            return None
        return self._rtt_sum * 1000.0 / self._rtt_count
