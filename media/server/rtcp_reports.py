"""RTCP reports of one media-server RTP session (RFC 3550 6), sans-IO.

An L{RtcpReporter} builds the compound packets an L{RtpSession} sends and
reads those it receives:

 - a sender report (SR) when we sent RTP during the current or the previous
   report interval (RFC 3550 6.4), else a receiver report (RR).  The SR's
   NTP timestamp is the reactor's time (Unix seconds) moved to the NTP
   epoch, and its RTP timestamp is the same instant on the timeline of the
   packets sent; packet and octet counts are since the session began
   (octets of payload only);
 - one reception report block once the remote's RTP arrived: fraction lost
   in the interval, cumulative loss, extended highest sequence number and
   interarrival jitter from L{media.rtp.ReceptionStatistics}, and LSR/DLSR
   from the remote's last SR;
 - an SDES packet with the CNAME, as every compound packet needs;
 - a BYE when the session ends.

Report blocks the remote sends about our SSRC that answer one of our SRs
give the round-trip time (LSR/DLSR, RFC 3550 6.4.1).
"""

from __future__ import annotations

import struct

from media.rtp import (
    ReceptionStatistics,
    ReportBlock,
    RtcpSummary,
    ntp_middle,
    rtcp_receiver_report,
    rtcp_sender_report,
)

__all__ = ["NTP_EPOCH_OFFSET", "RtcpReporter", "rtcp_bye", "rtcp_sdes_cname"]

#: Seconds from 1900-01-01 (NTP) to 1970-01-01 (the reactor's clock).
NTP_EPOCH_OFFSET = 2_208_988_800
_RTCP_SDES = 202
_RTCP_BYE = 203
_SDES_CNAME = 1
_MAX_PENDING_SR = 8
_WORD = 0xFFFFFFFF


def rtcp_sdes_cname(ssrc: int, cname: str) -> bytes:
    """An SDES packet with one chunk holding a CNAME (RFC 3550 6.5).

    @param ssrc: the chunk's source.
    @param cname: the canonical name (cut to 255 bytes of UTF-8).
    @return: the packet, padded to a 32-bit boundary.
    """
    text = cname.encode("utf-8")[:255]
    chunk = struct.pack("!IBB", ssrc, _SDES_CNAME, len(text)) + text + b"\0"
    chunk += b"\0" * (-len(chunk) % 4)
    return struct.pack("!BBH", 0x81, _RTCP_SDES, len(chunk) // 4) + chunk


def rtcp_bye(ssrc: int) -> bytes:
    """A BYE packet for one source, without a reason (RFC 3550 6.6).

    @param ssrc: the source leaving.
    @return: the packet.
    """
    return struct.pack("!BBHI", 0x81, _RTCP_BYE, 1, ssrc)


class RtcpReporter:
    """The RTCP state of one session: what to report, and what was heard.

    @ivar ssrc: our source.
    @ivar cname: our canonical name.
    @ivar statistics: reception statistics of the remote's RTP.
    @ivar rtt: the last round-trip time measured, in seconds, or C{None}.
    @ivar remote_ssrc: the sender SSRC of the last RTCP packet heard.
    """

    def __init__(self, ssrc: int, cname: str, statistics: ReceptionStatistics) -> None:
        """
        @param ssrc: our source.
        @param cname: our canonical name.
        @param statistics: updated by the session for every RTP packet.
        """
        self.ssrc = ssrc
        self.cname = cname
        self.statistics = statistics
        self.rtt: float | None = None
        self.remote_ssrc: int | None = None
        self._sent_now = 0
        self._sent_before = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._reported_ssrc: int | None = None
        self._last_sr: tuple[int, float] | None = None
        self._our_reports: dict[int, float] = {}

    def rtp_sent(self) -> None:
        """Note one RTP packet sent during the current interval."""
        self._sent_now += 1

    def build(
        self,
        now: float,
        *,
        rtp_timestamp: int | None,
        packets: int,
        octets: int,
        bye: bool = False,
    ) -> bytes:
        """The compound packet to send now; starts a new interval.

        @param now: reactor time, in seconds since 1970.
        @param rtp_timestamp: the RTP timestamp of C{now}, or C{None} when
            the sender has no timeline yet (then an RR is sent).
        @param packets: RTP packets we sent since the session began.
        @param octets: their payload octets.
        @param bye: end with a BYE.
        @return: SR or RR, then SDES, then BYE if asked.
        """
        blocks = self._blocks(now)
        if (self._sent_now or self._sent_before) and rtp_timestamp is not None:
            ntp = now + NTP_EPOCH_OFFSET
            seconds = int(ntp)
            fraction = int((ntp - seconds) * (1 << 32)) & _WORD
            seconds &= _WORD
            head = rtcp_sender_report(
                self.ssrc, seconds, fraction, rtp_timestamp, packets & _WORD, octets & _WORD, blocks
            )
            self._our_reports[ntp_middle(seconds, fraction)] = now
            if len(self._our_reports) > _MAX_PENDING_SR:
                del self._our_reports[next(iter(self._our_reports))]
        else:
            head = rtcp_receiver_report(self.ssrc, blocks)
        self._sent_before, self._sent_now = self._sent_now, 0
        parts = [head, rtcp_sdes_cname(self.ssrc, self.cname)]
        if bye:
            parts.append(rtcp_bye(self.ssrc))
        return b"".join(parts)

    def received(self, summary: RtcpSummary, now: float) -> None:
        """Take a compound packet from the remote (already parsed).

        @param summary: what L{media.rtp.parse_rtcp} read.
        @param now: its arrival time.
        """
        self.remote_ssrc = summary.ssrc
        if summary.sr_ntp is not None:
            self._last_sr = (summary.sr_ntp, now)
        for block in summary.reports:
            if block.ssrc == self.ssrc and block.lsr:
                sent = self._our_reports.get(block.lsr)
                if sent is not None:
                    self.rtt = max(now - sent - block.dlsr / 65536.0, 0.0)

    def _blocks(self, now: float) -> list[ReportBlock]:
        """The report block on the remote's stream (none before its RTP)."""
        stats = self.statistics
        if stats.ssrc is None or not stats.received:
            return []
        if stats.ssrc != self._reported_ssrc:
            self._reported_ssrc = stats.ssrc
            self._expected_prior = self._received_prior = 0
        expected = stats.expected
        expected_interval = expected - self._expected_prior
        received_interval = stats.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = stats.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min((lost_interval << 8) // expected_interval, 255)
        lost = expected - stats.received
        lsr = dlsr = 0
        if self._last_sr is not None:
            lsr, received_at = self._last_sr
            dlsr = int((now - received_at) * 65536) & _WORD
        return [
            ReportBlock(
                stats.ssrc,
                fraction,
                max(min(lost, 0x7FFFFF), -0x800000),
                (stats.cycles + stats.max_seq) & _WORD,
                int(stats.jitter) & _WORD,
                lsr,
                dlsr,
            )
        ]
