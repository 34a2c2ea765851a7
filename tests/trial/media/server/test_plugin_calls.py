"""Tests for L{media.server.plugin} with calls: recordings into the
switch's call (for its CDR) and the media server's metrics.

The plugin runs in a L{SwitchHarness} whose clock is a L{FakeUDPReactor};
its user agent listens on the fake port 5070.  The test plays the switch's
B leg with raw SIP datagrams (INVITE, ACK, INFO, BYE) into that port and
calls the plugin's switch-side hooks as the core would: the B-leg INVITE
goes through C{b2bua_prepare_outgoing_request} before it is sent, the
switch's call end through C{b2bua_call_ended}.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.interfaces import Target
from b2bua.sip.message import Request, Response, parse_message
from b2bua.testing import SwitchHarness
from media.server.cdr_recordings import RECORDINGS, RECORDINGS_SETTLED, SETTLE_TIMEOUT
from media.server.plugin import NAME, MediaServer
from media.server.wav import read_wav
from tests.trial.media.support import FakeUDPReactor

SWITCH = ("127.0.0.1", 5060)
UA_PORT = 5070
SWITCH_RTP = 6000
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       f"m=audio {SWITCH_RTP} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
       "a=fmtp:101 0-16\r\na=sendrecv\r\n")


class BLeg:
    """The switch's side of a call to the media server, in raw SIP."""

    def __init__(self, reactor: FakeUDPReactor, call_id: str, flow: str = "echo") -> None:
        self.reactor = reactor
        self.call_id = call_id
        self.flow = flow
        self.cseq = 1
        self.to_tag = ""

    def _request(self, method: str, body: str = "", content_type: str = "",
                 cseq: int | None = None) -> bytes:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        to = f"<sip:{self.flow}@127.0.0.1:{UA_PORT}>" + (f";tag={self.to_tag}" if self.to_tag
                                                          else "")
        lines = [f"{method} sip:{self.flow}@127.0.0.1:{UA_PORT} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{self.call_id}{method}{cseq}",
                 "Max-Forwards: 70", "From: <sip:1000@127.0.0.1>;tag=sw1", f"To: {to}",
                 f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}",
                 "Contact: <sip:b2bua@127.0.0.1:5060>"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def invite(self) -> Request:
        """The INVITE, parsed (as the core hands it to the hook)."""
        request = parse_message(self._request("INVITE", SDP, "application/sdp", cseq=1))
        assert isinstance(request, Request)
        return request

    def send(self, data: bytes) -> list[Response | Request]:
        """Deliver a datagram to the UA; what it sent back to the switch."""
        self.reactor.sent = [s for s in self.reactor.sent if s.local != UA_PORT]
        self.reactor.deliver(UA_PORT, data, SWITCH)
        return [parse_message(s.data) for s in self.reactor.take() if s.local == UA_PORT]

    def call(self) -> Response:
        """INVITE (answered 200) and ACK: the flow runs."""
        replies = self.send(self._request("INVITE", SDP, "application/sdp", cseq=1))
        final = [r for r in replies if isinstance(r, Response) and r.code >= 200]
        assert final and final[0].code == 200, replies
        self.to_tag = final[0].to.tag or ""
        self.send(self._request("ACK", cseq=1))
        return final[0]

    def info(self, digit: str) -> None:
        """A DTMF digit in an INFO."""
        self.send(self._request("INFO", f"Signal={digit}\r\nDuration=100\r\n",
                                "application/dtmf-relay"))

    def bye(self) -> Response:
        """The switch hangs up; the UA's 200."""
        replies = self.send(self._request("BYE"))
        final = [r for r in replies if isinstance(r, Response)]
        assert final, replies
        return final[0]


class PluginCallTests(SynchronousTestCase):
    """A plugin with record_policy always, and one B leg at a time."""

    def setUp(self) -> None:
        self.reactor = FakeUDPReactor()
        self.directory = Path(self.mktemp())
        self.harness = SwitchHarness(settings={NAME: {
            "enabled": True, "port_min": 42000, "port_max": 42009, "record_policy": "always",
            "recordings": str(self.directory)}}, clock=self.reactor,
            extra={"reactor": self.reactor})
        self.plugin: MediaServer = self.harness.pm.get_plugin(NAME)
        self.switch_call = SimpleNamespace(data={})
        self.addCleanup(self.stop)

    def stop(self) -> None:
        """Stop the harness; nothing may be left on the clock."""
        if self.plugin.ua is not None:
            self.harness.stop()
        self.reactor.advance(1)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def leg(self, call_id: str = "b-leg-1@b2bua", to_media_server: bool = True) -> BLeg:
        """A B leg whose INVITE went through the hook."""
        leg = BLeg(self.reactor, call_id)
        hop = Target("UDP", "127.0.0.1", UA_PORT if to_media_server else 5080)
        self.plugin.b2bua_prepare_outgoing_request(
            call=self.switch_call, leg=SimpleNamespace(destination=SimpleNamespace(
                next_hop=hop)), request=leg.invite())
        return leg

    def ticks(self, count: int) -> None:
        """C{count} 20 ms ticks (the UA sends and records each)."""
        for _ in range(count):
            self.reactor.advance(0.02)

    def ended(self) -> list[Any]:
        """The switch call ends; the waits it got."""
        self.plugin.b2bua_call_ended(call=self.switch_call, record=None)
        return list(self.switch_call.data.get(RECORDINGS_SETTLED, []))

    def test_caller_hangs_up_first(self) -> None:
        """The switch call ends while the media server call is up: its CDR
        gets a wait, which fires when the BYE has ended the media server
        call; then C{recordings} names the file and its duration, as the
        C{X-Recording} header of the 200 does."""
        leg = self.leg()
        leg.call()
        self.ticks(25)
        waits = self.ended()
        self.assertEqual(len(waits), 1)
        self.assertFalse(waits[0].called)
        self.assertNotIn(RECORDINGS, self.switch_call.data)
        ok = leg.bye()
        path, _, duration = ok.headers.get("x-recording").partition(";duration=")
        entries = self.switch_call.data[RECORDINGS]
        self.assertEqual(entries, [{"path": path, "mode": "stereo",
                                    "duration_ms": int(duration), "source": "media_server"}])
        self.assertGreaterEqual(int(duration), 480)
        self.assertEqual(read_wav(path).duration_ms, int(duration))
        self.assertEqual(self.successResultOf(waits[0]), entries)

    def test_media_server_call_over_first(self) -> None:
        """The media server call ended before the switch's: the entry is
        there at once and the CDR gets no wait."""
        leg = self.leg()
        leg.call()
        self.ticks(10)
        leg.bye()
        self.assertEqual(len(self.switch_call.data[RECORDINGS]), 1)
        self.assertEqual(self.ended(), [])

    def test_bounded_wait(self) -> None:
        """A media server call that does not end within the timeout: the
        wait fires with nothing, and a later end adds nothing."""
        leg = self.leg()
        leg.call()
        waits = self.ended()
        self.ticks(int(SETTLE_TIMEOUT / 0.02) - 5)
        self.assertFalse(waits[0].called)
        self.ticks(10)
        self.assertEqual(self.successResultOf(waits[0]), [])
        leg.bye()
        self.assertNotIn(RECORDINGS, self.switch_call.data)

    def test_other_legs_ignored(self) -> None:
        """A leg to somewhere else, or no leg to the media server at all:
        no wait; a media server call the switch did not note adds nothing."""
        self.leg(to_media_server=False)
        self.assertEqual(self.ended(), [])
        unknown = BLeg(self.reactor, "direct@elsewhere")
        unknown.call()
        unknown.bye()
        self.assertEqual(self.switch_call.data, {})

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the service's registry."""
        value = self.harness.services.metrics.registry.get_sample_value(name, labels)
        return -1.0 if value is None else value

    def test_metrics(self) -> None:
        """Scraped: calls up, RTP sent and received, late packets, DTMF by
        source, missing prompts; ended calls keep counting."""
        self.assertEqual(self.metric("b2bua_media_server_calls"), 0)
        self.assertEqual(self.metric("b2bua_media_server_rtp_packets_sent_total"), 0)
        leg = self.leg()
        response = leg.call()
        port = int(response.body.split(b"m=audio ")[1].split(b" ")[0])
        self.ticks(10)
        for n in range(5):
            packet = bytes([0x80, 0]) + (100 + n).to_bytes(2, "big") + \
                (8000 + 160 * n).to_bytes(4, "big") + b"\0\0\0\1" + bytes(160)
            self.reactor.deliver(port, packet, ("127.0.0.1", SWITCH_RTP))
        old = bytes([0x80, 0]) + (99).to_bytes(2, "big") + (7840).to_bytes(4, "big") + \
            b"\0\0\0\1" + bytes(160)
        self.ticks(10)
        self.reactor.deliver(port, old, ("127.0.0.1", SWITCH_RTP))  # played already: late
        leg.info("5")
        self.assertEqual(self.metric("b2bua_media_server_calls"), 1)
        self.assertEqual(self.metric("b2bua_media_server_rtp_packets_sent_total"), 21)
        self.assertEqual(self.metric("b2bua_media_server_rtp_packets_received_total"), 6)
        self.assertEqual(self.metric("b2bua_media_server_rtp_late_packets_total"), 1)
        self.assertEqual(self.metric("b2bua_media_server_dtmf_digits_total", source="info"), 1)
        self.assertEqual(self.metric("b2bua_media_server_dtmf_digits_total",
                                     source="rfc4733"), 0)
        self.assertEqual(self.metric("b2bua_media_server_dtmf_digits_total",
                                     source="inband"), 0)
        leg.bye()
        self.assertEqual(self.metric("b2bua_media_server_calls"), 0)
        self.assertEqual(self.metric("b2bua_media_server_rtp_packets_sent_total"), 21)
        self.assertEqual(self.metric("b2bua_media_server_dtmf_digits_total", source="info"), 1)
        # no prompt set here: what the echo flow said played as silence
        missing = self.metric("b2bua_media_server_prompts_missing")
        self.assertEqual(missing, len(self.plugin.ua.missing_prompts))
        self.assertGreater(missing, 0)
        speaking = BLeg(self.reactor, "clock@b2bua", flow="speaking_clock")
        speaking.call()
        self.ticks(5)
        speaking.bye()
        self.assertGreater(self.metric("b2bua_media_server_prompts_missing"), missing)

    def test_unconfigure_unregisters(self) -> None:
        """After the plugin stops, its families are gone from the registry
        (so that it can be configured again on the same one)."""
        self.assertEqual(self.metric("b2bua_media_server_calls"), 0)
        self.harness.stop()
        self.assertEqual(self.metric("b2bua_media_server_calls"), -1.0)
        names = {m.name for m in self.harness.services.metrics.registry.collect()}
        self.assertNotIn("b2bua_media_ivr_runs", names)
