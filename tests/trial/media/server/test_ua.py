"""Tests for L{media.server.ua}: the media server answering calls.

A test phone (L{b2bua.testing.Phone}) calls the user agent over a
L{FakeNetwork}; RTP goes through a L{FakeUDPReactor}, which is also the
clock.  Nothing touches a socket.
"""

from __future__ import annotations

import struct

from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.sdp import parse_sdp
from b2bua.testing import FakeNetwork, FakeTransport, Phone, PhoneCall
from media.ports import PortPool
from media.server.dtmf import telephone_event_packets
from media.server.ivr import Flow, load_flow
from media.server.ivr_actions import builtin_actions
from media.server.ivr_runtime import FlowResult
from media.server.ua import MediaServerUA
from media.server.ua_session import reason_for_cause
from tests.trial.media.support import FakeUDPReactor

UA = ("127.0.0.1", 5070)
PHONE_RTP = 4000 + 5060 % 1000  # where the test phone's offer says it listens

PIN_FLOW = """
[flow]
name = "pin"
start = "ask"
max_duration = 60

[nodes.ask]
type = "collect"
variable = "pin"
max_digits = 3
first_digit_timeout = 5
retries = 0
on_timeout = "bad"
on_invalid = "bad"
next = "check"

[nodes.check]
type = "branch"
variable = "pin"
cases = { "123" = "good" }
default = "bad"

[nodes.good]
type = "hangup"
cause = "pin_ok"

[nodes.bad]
type = "hangup"
cause = "pin_wrong"
"""

GREETING_FLOW = """
[flow]
name = "greeting"
start = "hello"

[nodes.hello]
type = "play"
prompt = ["welcome", "welcome"]
next = "bye"

[nodes.bye]
type = "hangup"
"""


def rtp_packet(payload_type: int, sequence: int, timestamp: int, payload: bytes,
               marker: bool = False, ssrc: int = 0x1234) -> bytes:
    """A plain RTP packet."""
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | payload_type,
                       sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc) + payload


class UATestsMixin:
    """A user agent, a phone and a port pool on one fake reactor.

    @cvar flow_texts: the UA's flows, as C{(name, TOML text)}.
    """

    flow_texts: tuple[tuple[str, str], ...] = (("pin", PIN_FLOW), ("greeting", GREETING_FLOW))

    def setUp(self) -> None:
        self.reactor = FakeUDPReactor()
        self.network = FakeNetwork(self.reactor)
        self.results: list[tuple[str, FlowResult]] = []
        flows: dict[str, Flow] = {
            name: load_flow(text, actions=builtin_actions()) for name, text in self.flow_texts}
        self.pool = PortPool(30000, 30009)
        self.ua = MediaServerUA(
            self.reactor, listen=UA, flows=flows, actions=builtin_actions(), prompts=None,
            port_pool=self.pool, transport=FakeTransport(self.network, *UA),
            on_result=lambda flow, result: self.results.append((flow.name, result)))
        self.ua.start()
        self.phone = Phone(self.network, "1000", "127.0.0.2", proxy=UA)

    def call(self, flow: str, **kwargs: object) -> PhoneCall:
        """The phone calls a flow of the UA."""
        return self.phone.call(f"sip:{flow}@127.0.0.1:5070", **kwargs)  # type: ignore[arg-type]

    def tick(self, seconds: float) -> None:
        """Let time pass 20 ms at a time (the pace of the RTP sessions)."""
        for _ in range(round(seconds / 0.02)):
            self.reactor.advance(0.02)

    def byes(self) -> list:
        """BYE requests the phone received."""
        return [r for r in self.phone.requests if r.method == "BYE"]

    def ua_port(self, call: PhoneCall) -> int:
        """The RTP port of the UA's answer."""
        return parse_sdp(call.remote_sdp).media[0].port

    def press(self, port: int, digit: str, timestamp: int, sequence: int) -> int:
        """Send one RFC 4733 key press to the UA's RTP port; the next
        sequence number."""
        for packet in telephone_event_packets(digit, 100, timestamp):
            if port not in self.reactor.ports:  # the call ended
                break
            self.reactor.deliver(port, rtp_packet(101, sequence, packet.timestamp,
                                                  packet.payload, packet.marker),
                                 ("127.0.0.2", PHONE_RTP))
            sequence += 1
            self.reactor.advance(0.02)
        return sequence


class AnswerTests(UATestsMixin, SynchronousTestCase):
    """INVITE handling: 200 with SDP, 488, 404."""

    def test_answers_with_sdp(self) -> None:
        """A call to a known flow is answered 200 with a G.711 answer on a
        pool port, and RTP flows to the phone's address."""
        call = self.call("pin")
        self.assertEqual(call.code, 200)
        answer = parse_sdp(call.remote_sdp)
        media = answer.media[0]
        self.assertIn(media.port, range(30000, 30010, 2))
        self.assertEqual(answer.connection.address, "127.0.0.1")
        self.assertEqual(self.pool.in_use, 1)
        self.reactor.take()
        self.reactor.advance(0.1)
        sent = self.reactor.take()
        self.assertTrue(sent)
        self.assertEqual(sent[0].destination, ("127.0.0.2", PHONE_RTP))

    def test_not_acceptable(self) -> None:
        """An offer without PCMU or PCMA gets 488 with a Warning; no port is
        kept."""
        offer = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\n"
                 b"t=0 0\r\nm=audio 4060 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n")
        self.phone.offer = lambda direction=None: offer  # type: ignore[method-assign]
        call = self.call("pin")
        self.assertEqual(call.code, 488)
        self.assertIn("305", call.outgoing.final.headers.get("warning"))
        self.reactor.advance(1)
        self.assertEqual(self.pool.in_use, 0)
        self.assertEqual(self.ua.calls, {})

    def test_no_offer(self) -> None:
        """An INVITE without SDP is refused with 488."""
        call = self.call("pin", sdp=False)
        self.assertEqual(call.code, 488)

    def test_unknown_flow(self) -> None:
        """A Request-URI user that names no flow gets 404."""
        call = self.call("nosuchflow")
        self.assertEqual(call.code, 404)
        self.assertEqual(self.pool.in_use, 0)

    def test_ports_exhausted(self) -> None:
        """With every port pair in use the call gets 503."""
        calls = [self.call("pin") for _ in range(5)]
        self.assertEqual([c.code for c in calls], [200] * 5)
        self.assertEqual(self.call("pin").code, 503)


class FlowTests(UATestsMixin, SynchronousTestCase):
    """The flow runs on the call."""

    def test_rfc4733_digits_reach_collect(self) -> None:
        """Digits sent as RFC 4733 events are collected; the branch hangs
        up with the matching cause in the BYE's Reason."""
        call = self.call("pin")
        port = self.ua_port(call)
        sequence = 100
        for n, digit in enumerate("123"):
            sequence = self.press(port, digit, 8000 * (n + 1), sequence)
            self.reactor.advance(0.1)
        self.network.flush()
        byes = self.byes()
        self.assertEqual(len(byes), 1)
        self.assertEqual(byes[0].headers.get("reason"), reason_for_cause("pin_ok"))
        self.assertEqual(self.results[0][1].variables["pin"], "123")
        self.assertEqual(self.results[0][1].outcome, "hangup")
        self.assertEqual(self.ua.calls, {})
        self.reactor.advance(1)
        self.assertEqual(self.pool.in_use, 0)

    def test_wrong_digits(self) -> None:
        """Other digits take the default branch."""
        call = self.call("pin")
        port = self.ua_port(call)
        sequence = 7
        for n, digit in enumerate("129"):
            sequence = self.press(port, digit, 1000 + 8000 * n, sequence)
        self.network.flush()
        self.assertEqual(self.byes()[0].headers.get("reason"), reason_for_cause("pin_wrong"))

    def test_info_digits(self) -> None:
        """Digits sent by SIP INFO are answered 200 and collected."""
        call = self.call("pin")
        for digit in "123":
            outgoing = call.info(f"Signal={digit}\r\nDuration=100\r\n".encode())
            self.assertEqual(outgoing.code, 200)
        self.network.flush()
        self.assertEqual(self.byes()[0].headers.get("reason"), reason_for_cause("pin_ok"))

    def test_bad_info(self) -> None:
        """An INFO body without a digit gets 400; another content type 415."""
        call = self.call("pin")
        self.assertEqual(call.info(b"Signal=x\r\n").code, 400)
        self.assertEqual(call.info(b"5", content_type="text/plain").code, 415)

    def test_timeout(self) -> None:
        """No digit: the collect times out and the flow hangs up."""
        self.call("pin")
        self.reactor.advance(6)
        self.network.flush()
        self.assertEqual(self.byes()[0].headers.get("reason"), reason_for_cause("pin_wrong"))

    def test_bye_stops_flow(self) -> None:
        """The caller's BYE is answered, stops the run and frees the ports."""
        call = self.call("pin")
        self.assertEqual(self.pool.in_use, 1)
        outgoing = call.hangup()
        self.assertEqual(outgoing.code, 200)
        self.assertEqual([(name, r.outcome) for name, r in self.results],
                         [("pin", "caller_hangup")])
        self.assertEqual(self.byes(), [])
        self.assertEqual(self.ua.calls, {})
        self.reactor.advance(1)
        self.assertEqual(self.pool.in_use, 0)

    def test_missing_prompts_play_silence(self) -> None:
        """Missing prompts become silence, logged once per name; the flow
        goes on to its hangup."""
        self.call("greeting")
        self.tick(0.5)
        self.assertEqual(self.byes(), [])
        self.tick(1.0)
        self.network.flush()
        self.assertEqual(len(self.byes()), 1)
        self.assertEqual(self.results[0][1].outcome, "hangup")
        self.assertEqual(self.ua.missing_prompts, {"welcome"})
        self.flushLoggedErrors()

    def test_in_dialog_unknown(self) -> None:
        """An in-dialog request for no call gets 481."""
        call = self.call("pin")
        call.hangup()
        call.dialog.state = call.dialog.state.CONFIRMED  # let the phone send anyway
        self.assertEqual(call.info().code, 481)

    def test_stop(self) -> None:
        """Stopping the UA ends its calls with a BYE."""
        self.call("pin")
        self.ua.stop()
        self.network.flush()
        self.assertEqual(len(self.byes()), 1)
        self.assertEqual(self.ua.calls, {})
