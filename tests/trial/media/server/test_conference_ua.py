"""Tests for ad-hoc conference rooms of L{MediaServerUA} (C{conf-<room>}).

Three test phones (L{b2bua.testing.Phone}) call C{sip:conf-<room>@...}
over a L{FakeNetwork}; RTP goes through a L{FakeUDPReactor}.  Each phone
sends a PCMU tone of its own; what the media server sends each phone is
decoded and measured with the Goertzel reference.  Nothing touches a socket.
"""

from __future__ import annotations

import math
import struct

from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.sdp import parse_sdp
from b2bua.testing import FakeNetwork, FakeTransport, Phone, PhoneCall
from media.ports import PortPool
from media.server.g711 import PCMU
from media.server.goertzel import goertzel_power
from media.server.ivr import load_flow
from media.server.ivr_actions import builtin_actions
from media.server.pcm import RATE
from media.server.ua import MediaServerUA
from tests.trial.media.support import FakeUDPReactor

UA = ("127.0.0.1", 5070)
#: Each phone's host and tone (multiples of 50 Hz).
PHONES = {"127.0.0.2": 400.0, "127.0.0.3": 1000.0, "127.0.0.4": 1700.0}
PHONE_RTP = 4000 + 5060 % 1000

HANGUP_FLOW = """
[flow]
start = "bye"

[nodes.bye]
type = "hangup"
cause = "flow_not_room"
"""


def tone_payloads(frequency: float, count: int) -> list[bytes]:
    """PCMU payloads of a continuous sine, 20 ms each."""
    step = 2 * math.pi * frequency / RATE
    out = []
    for n in range(count):
        pcm = struct.pack("<160h", *(round(6000 * math.sin(step * (n * 160 + i)))
                                     for i in range(160)))
        out.append(PCMU.encode(pcm))
    return out


def rtp(sequence: int, timestamp: int, payload: bytes, ssrc: int) -> bytes:
    """A PCMU RTP packet."""
    return struct.pack("!BBHII", 0x80, 0, sequence & 0xFFFF, timestamp & 0xFFFFFFFF,
                       ssrc) + payload


class AdHocCase(SynchronousTestCase):
    """A user agent with a room limit of 3, and three phones."""

    def setUp(self) -> None:
        self.reactor = FakeUDPReactor()
        self.network = FakeNetwork(self.reactor)
        self.pool = PortPool(30000, 30019)
        flows = {"conf-flow": load_flow(HANGUP_FLOW, actions=builtin_actions())}
        self.ua = MediaServerUA(
            self.reactor, listen=UA, flows=flows, actions=builtin_actions(), prompts=None,
            port_pool=self.pool, transport=FakeTransport(self.network, *UA),
            conference_max=3)
        self.ua.start()
        self.phones = {host: Phone(self.network, f"10{n}", host, proxy=UA)
                       for n, host in enumerate(PHONES)}

    def join(self, host: str, room: str = "3way-1") -> PhoneCall:
        """The phone at C{host} calls the room."""
        return self.phones[host].call(f"sip:conf-{room}@127.0.0.1:5070")

    def ua_port(self, call: PhoneCall) -> int:
        """The RTP port of the UA's answer."""
        return parse_sdp(call.remote_sdp).media[0].port


class AdHocTests(AdHocCase):
    """conf-<room> calls join the room directly."""

    def test_three_way(self) -> None:
        """Three phones, three tones: each hears the two others and not
        itself."""
        calls = {host: self.join(host) for host in PHONES}
        self.assertEqual({host: call.code for host, call in calls.items()},
                         dict.fromkeys(PHONES, 200))
        room = self.ua.conferences.room("3way-1")
        assert room is not None
        self.assertEqual(len(room), 3)
        ports = {host: self.ua_port(call) for host, call in calls.items()}
        payloads = {host: tone_payloads(frequency, 60) for host, frequency in PHONES.items()}
        self.reactor.take()
        heard: dict[str, list[bytes]] = {host: [] for host in PHONES}
        for n in range(60):
            for index, host in enumerate(PHONES):
                self.reactor.deliver(ports[host], rtp(n, n * 160, payloads[host][n], index + 7),
                                     (host, PHONE_RTP))
            self.reactor.advance(0.02)
            for sent in self.reactor.take():
                host, port = sent.destination
                if port == PHONE_RTP and host in heard and len(sent.data) == 172:
                    heard[host].append(PCMU.decode(sent.data[12:]))
        for host, frames in heard.items():
            samples = list(struct.unpack(f"<{len(frames[-30:]) * 160}h",
                                         b"".join(frames[-30:])))
            power = {other: goertzel_power(samples, frequency)
                     for other, frequency in PHONES.items()}
            others = [power[h] for h in PHONES if h != host]
            self.assertGreater(min(others), 1e9, (host, power))
            self.assertLess(power[host], min(others) * 1e-3, (host, power))
        self.assertEqual(self.ua.conferences.refused, 0)
        for call in calls.values():
            self.assertEqual(call.hangup().code, 200)
        self.assertEqual((len(self.ua.conferences), self.ua.calls), (0, {}))
        self.reactor.advance(1)
        self.assertEqual(self.pool.in_use, 0)

    def test_full_room_busy(self) -> None:
        """A fourth party gets 486 with a Warning naming the room; no port
        stays taken for it."""
        for host in PHONES:
            self.assertEqual(self.join(host).code, 200)
        fourth = Phone(self.network, "199", "127.0.0.9", proxy=UA)
        call = fourth.call("sip:conf-3way-1@127.0.0.1:5070")
        self.assertEqual(call.code, 486)
        response = next(r for r in fourth.responses if r.code == 486)
        self.assertIn("conference room '3way-1' is full (3 participants)",
                      response.headers.get("warning") or "")
        self.assertEqual(self.ua.answered.get(486), 1)
        self.reactor.advance(1)
        self.assertEqual(self.pool.in_use, 3)
        self.assertEqual(self.ua.conferences.refused, 1)

    def test_names(self) -> None:
        """A bad or empty room name is 404; a flow of that name wins."""
        phone = self.phones["127.0.0.2"]
        self.assertEqual(phone.call("sip:conf-@127.0.0.1:5070").code, 404)
        self.assertEqual(phone.call("sip:conf-a%2Fb@127.0.0.1:5070").code, 404)
        self.assertEqual(phone.call("sip:conf-flow@127.0.0.1:5070").code, 200)
        self.network.flush()
        byes = [r for r in phone.requests if r.method == "BYE"]
        self.assertIn("flow_not_room", byes[0].headers.get("reason") or "")
        self.assertEqual(len(self.ua.conferences), 0)

    def test_leave_and_stop(self) -> None:
        """A BYE leaves the room, the others stay; stopping the UA ends the
        rest and destroys the room."""
        calls = [self.join(host) for host in PHONES]
        calls[0].hangup()
        room = self.ua.conferences.room("3way-1")
        assert room is not None
        self.assertEqual(len(room), 2)
        self.ua.stop()
        self.network.flush()
        self.assertEqual((len(self.ua.conferences), self.ua.calls), (0, {}))
        self.assertTrue(room.closed)
        for host in list(PHONES)[1:]:
            byes = [r for r in self.phones[host].requests if r.method == "BYE"]
            self.assertEqual(len(byes), 1)

    def test_uri_parameters(self) -> None:
        """C{;max=N} limits the room; C{;muted} joins listen-only; a bad
        C{max} is 400 and takes no port."""
        phones = list(self.phones.values())
        self.assertEqual(phones[0].call("sip:conf-p@127.0.0.1:5070;max=1").code, 200)
        self.assertEqual(phones[1].call("sip:conf-p@127.0.0.1:5070").code, 486)
        self.assertEqual(phones[1].call("sip:conf-q@127.0.0.1:5070;muted").code, 200)
        room = self.ua.conferences.room("q")
        assert room is not None
        self.assertEqual([member.muted for member in room], [True])
        for bad in ("x", "0", "1001", ""):
            self.assertEqual(phones[2].call(f"sip:conf-r@127.0.0.1:5070;max={bad}").code, 400)
        self.reactor.advance(1)
        self.assertEqual((self.pool.in_use, self.ua.conferences.room("r")), (2, None))
