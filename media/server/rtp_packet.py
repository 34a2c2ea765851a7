"""Received RTP packets (RFC 3550 5.1): the fields the media server uses.

L{parse_rtp} reads a version 2 packet, skipping its CSRC list, header
extension and padding, and refuses what is not RTP (RTCP included: its
second byte 192-223 would be a marker bit with payload type 64-95).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = ["RtpPacket", "parse_rtp"]

_RTP_HEADER = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")


class RtpPacket(NamedTuple):
    """The fields of a received RTP packet (RFC 3550 5.1).

    @ivar payload: the payload, without CSRCs, header extension or padding.
    """

    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """Read an RTP version 2 packet.

    @param data: a datagram.
    @return: the packet, or C{None} when it is not RTP version 2, is RTCP,
        or is truncated (CSRC list, extension or padding beyond its end).
    """
    if len(data) < 12:
        return None
    first, second, sequence, timestamp, ssrc = _RTP_HEADER.unpack_from(data)
    if first & 0xC0 != 0x80 or 191 < second < 224:
        return None
    start = 12 + 4 * (first & 0x0F)
    end = len(data)
    if first & 0x10:
        if start + 4 > end:
            return None
        start += 4 + 4 * _EXTENSION.unpack_from(data, start)[1]
    if first & 0x20:
        padding = data[-1]
        if padding == 0:
            return None
        end -= padding
    if start > end:
        return None
    return RtpPacket(second & 0x7F, bool(second & 0x80), sequence, timestamp, ssrc, data[start:end])
