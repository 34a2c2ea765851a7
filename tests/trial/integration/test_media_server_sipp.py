"""The media server answering a real sipp caller through the switch.

C{twistd -n b2bua} runs with C{[plugins.media_server] enabled = true}, the
test flow C{ms_flows/pin_check.toml} (collect three digits; C{123} hangs up
with cause C{pin_ok}, anything else C{pin_wrong}) and the extension
C{7123} routed to it.  A sipp caller (demo extension 1000) dials 7123,
answers the 407, and after the 200 sends the digits as RFC 4733
telephone-events from a pcap file this test writes with the project's own
sender (L{media.server.dtmf.telephone_event_packets}).  The scenario then
requires the media server's BYE (relayed by the switch) to carry the
C{Reason} of the chosen branch.  Loopback only, bounded well under a minute.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial import unittest

from media.server.dtmf import telephone_event_packets
from media.server.ua_session import reason_for_cause
from tests.trial.integration.sipp import (
    MEDIA_SERVER_CONFIG,
    SWITCH_CONFIG,
    SwitchProcessMixin,
    free_port,
    run_sipp,
    scenario,
)

FLOWS = Path(__file__).resolve().parent / "ms_flows"
TIMEOUT = 25.0
EXTENSION = "7123"

CONFIG = SWITCH_CONFIG + MEDIA_SERVER_CONFIG + '''extensions = {{ "{extension}" = "pin_check" }}
'''

#: the pcap's link type: Ethernet
_ETHERNET = 1
_TELEPHONE_EVENT_PT = 101


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(payload: bytes, source_port: int, destination_port: int) -> bytes:
    """Ethernet + IPv4 + UDP around an RTP packet (127.0.0.1 both ways;
    sipp replaces addresses and ports when it plays the file)."""
    udp = struct.pack("!HHHH", source_port, destination_port, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    header = header[:10] + struct.pack("!H", _ip_checksum(header)) + header[12:]
    return bytes(6) + bytes(6) + b"\x08\x00" + header + udp


def write_rtp_pcap(path: Path, packets: list[tuple[int, bytes]]) -> None:
    """A pcap sipp plays (C{play_pcap_audio}): each C{(at_ms, rtp)} of
    C{packets} is sent C{at_ms} after the play starts, from port 6000 to
    6002 (which sipp rewrites)."""
    records = []
    for at_ms, rtp in packets:
        frame = _frame(rtp, 6000, 6002)
        records.append(struct.pack("<IIII", at_ms // 1000, (at_ms % 1000) * 1000,
                                   len(frame), len(frame)) + frame)
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, _ETHERNET)
    path.write_bytes(header + b"".join(records))


def write_dtmf_pcap(path: Path, digits: str, *, gap_ms: int = 400) -> None:
    """A pcap of RFC 4733 key presses (100 ms each, C{gap_ms} apart)."""
    packets: list[tuple[int, bytes]] = []
    sequence, ssrc, start_ms = 1000, 0x4D53_5541, 200
    for n, digit in enumerate(digits):
        timestamp = 16000 + n * 8 * (100 + gap_ms)
        for packet in telephone_event_packets(digit, 100, timestamp,
                                              interval_ms=20):
            rtp = struct.pack("!BBHII", 0x80,
                              (0x80 if packet.marker else 0) | _TELEPHONE_EVENT_PT,
                              sequence, packet.timestamp, ssrc) + packet.payload
            sequence += 1
            packets.append((start_ms + n * (100 + gap_ms) + packet.send_at_ms, rtp))
    write_rtp_pcap(path, packets)


class MediaServerCase(SwitchProcessMixin, unittest.TestCase):
    """The switch with its media server under twistd, and a sipp caller
    that plays a pcap to a flow (the base of the media-server sipp tests).

    @cvar config_template: the configuration, formatted with C{port},
        C{oam}, C{database}, C{folder}, C{ms_port}, C{rtp}, C{rtp_max},
        C{flows} and C{extension}.
    @cvar extension: what the caller dials.
    """

    timeout = 60
    config_template = CONFIG
    extension = EXTENSION

    async def setUp(self) -> None:
        """Seed the demo tenant, start the switch, wait for its SIP port."""
        rtp = 20000 + (os.getpid() % 200) * 100
        await self.start_demo_switch(self.config_template, prefix="b2bua-ms-",
                                     ms_port=free_port("udp"), rtp=rtp, rtp_max=rtp + 99,
                                     flows=FLOWS, extension=self.extension)

    async def dial(self, pcap: Path, cause: str) -> None:
        """Dial L{extension}, play C{pcap} after the 200, and require a BYE
        whose Reason carries C{cause}."""
        expected = reason_for_cause(cause).split(";text=")[1]
        text = Path(scenario("ms_pin_uac.xml")).read_text(encoding="iso-8859-1")
        copy = self.folder / f"ms_uac-{pcap.stem}.xml"
        copy.write_text(text.replace("PCAP_FILE", str(pcap))
                        .replace("REASON_REGEXP", "text=." + expected.strip('"') + "."),
                        encoding="iso-8859-1")
        result = await run_sipp(
            reactor, str(copy), f"127.0.0.1:{self.port}", "u1",
            ["-s", self.extension, "-au", "1000", "-ap", "1234", "-set", "caller", "1000",
             "-mp", str(free_port("udp"))],
            timeout=TIMEOUT, sipp=self.sipp)
        self.assertTrue(result.ok, result.describe() + "\n" + self.output[-3000:])


class MediaServerWithSippTests(MediaServerCase):
    """A sipp caller reaches an IVR flow of the media server."""

    async def _call(self, digits: str, cause: str) -> None:
        """Send C{digits} as RFC 4733 events; the BYE must carry C{cause}."""
        pcap = self.folder / f"dtmf-{digits}.pcap"
        write_dtmf_pcap(pcap, digits)
        await self.dial(pcap, cause)

    def test_right_digits(self) -> None:
        """1 2 3 as telephone-events: the BYE says C{pin_ok}."""
        return ensureDeferred(self._call("123", "pin_ok"))

    def test_wrong_digits(self) -> None:
        """1 2 4: the BYE says C{pin_wrong} (so the first test can fail)."""
        return ensureDeferred(self._call("124", "pin_wrong"))
