"""A three-party conference over real SIP and RTP on 127.0.0.1.

A L{MediaServerUA} listens on a free loopback UDP port.  Three in-process
parties, each a tiny SIP UAC (plain datagrams, parsed with the project's
codec) with an L{RtpSession} of its own, join one room: two by calling
C{sip:conf-<room>@...} directly (three-way calling's ad-hoc room), the
third through the built-in C{conference} flow, entering the room number
with SIP INFO digits (the flow scopes the room by the caller's domain,
C{127.0.0.1}, so it is the same room as C{conf-127.0.0.1-42}).  Each party
sends a tone of its own; each must hear the two others and not itself.
Then each hangs up (BYE, 200) and the room is gone.

Loopback only; about 2 s; bounded by C{timeout}.
"""

from __future__ import annotations

import math
import os
import struct
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.trial import unittest

from b2bua.sip.message import Response, parse_message
from b2bua.sip.sdp import parse_sdp
from media.ports import PortPool
from media.server.g711 import PCMU
from media.server.goertzel import goertzel_power
from media.server.ivr import builtin_flow
from media.server.ivr_actions import builtin_actions
from media.server.pcm import RATE, SILENCE_FRAME
from media.server.rtp_session import RtpSession
from media.server.ua import MediaServerUA
from tests.trial.integration.sipp import free_port

HOST = "127.0.0.1"
ROOM = "127.0.0.1-42"
#: Each party's tone (multiples of 50 Hz).
TONES = {"alice": 400.0, "bob": 1000.0, "carol": 1700.0}
#: Frames analysed per party, after the room settled.
FRAMES = 40


class Tone:
    """A continuous sine, one 20 ms frame per call (an RTP source)."""

    def __init__(self, frequency: float) -> None:
        self.step = 2 * math.pi * frequency / RATE
        self.index = 0

    def __call__(self) -> bytes:
        """The next frame."""
        start, self.index = self.index, self.index + 160
        return struct.pack("<160h", *(round(6000 * math.sin(self.step * (start + i)))
                                      for i in range(160)))


class Party(DatagramProtocol):
    """A minimal SIP UAC over UDP and its RTP session."""

    def __init__(self, name: str, ua: tuple[str, int], rtp_port: int) -> None:
        self.name = name
        self.ua = ua
        self.tag = os.urandom(4).hex()
        self.call_id = f"{os.urandom(6).hex()}@{HOST}"
        self.cseq = 0
        self.to_tag = ""
        self.contact_uri = ""
        self.request_uri = ""
        self.waiting: dict[tuple[int, str], Deferred[Response]] = {}
        self.heard: list[bytes] = []
        self.enough: Deferred[None] = Deferred()
        self.session = RtpSession(reactor, PCMU, interface=HOST, source=Tone(TONES[name]),
                                  on_audio=self.audio)
        self.rtp_port = rtp_port
        self.port: Any = None

    def audio(self, frame: bytes) -> None:
        """A frame from the media server (after its first sound)."""
        if frame != SILENCE_FRAME or self.heard:
            self.heard.append(frame)
        if len(self.heard) >= FRAMES + 25 and not self.enough.called:
            self.enough.callback(None)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """A response (requests from the media server are not expected)."""
        message = parse_message(data)
        if not isinstance(message, Response) or message.code < 200:
            return
        waiting = self.waiting.pop((message.cseq.number, message.cseq.method), None)
        if waiting is not None:
            waiting.callback(message)

    def request(self, method: str, body: bytes = b"", content_type: str = "",
                cseq: int | None = None) -> Deferred[Response] | None:
        """Send a request in the dialog (or the INVITE); its final response."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        local = self.port.getHost().port
        uri = self.contact_uri or self.request_uri
        to = f"<{self.request_uri}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {HOST}:{local};branch=z9hG4bK{os.urandom(6).hex()};rport",
                 "Max-Forwards: 70", f"From: <sip:{self.name}@{HOST}>;tag={self.tag}",
                 f"To: {to}", f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}",
                 f"Contact: <sip:{self.name}@{HOST}:{local}>"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        self.transport.write(data, self.ua)
        if method == "ACK":
            return None
        d: Deferred[Response] = Deferred()
        self.waiting[(cseq, method)] = d
        d.addTimeout(5, reactor)
        return d

    async def call(self, user: str) -> None:
        """INVITE C{user} at the media server, ACK the 200, start the RTP."""
        self.request_uri = f"sip:{user}@{self.ua[0]}:{self.ua[1]}"
        offer = (f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
                 f"m=audio {self.rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
                 "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
                 "a=sendrecv\r\n").encode()
        d = self.request("INVITE", offer, "application/sdp")
        assert d is not None
        response = await d
        if response.code != 200:
            raise AssertionError(f"{self.name}: INVITE answered {response.code}")
        self.to_tag = response.to.tag or ""
        self.contact_uri = str(response.contact[0].uri)
        self.request("ACK", cseq=self.cseq)
        answer = parse_sdp(response.body)
        port = answer.media[0].port
        self.session.update(remote=(HOST, port), direction="sendrecv", codec=PCMU)
        self.session.start()

    async def press(self, digits: str) -> None:
        """Send keys as SIP INFO (application/dtmf-relay)."""
        for digit in digits:
            d = self.request("INFO", f"Signal={digit}\r\nDuration=100\r\n".encode(),
                             "application/dtmf-relay")
            assert d is not None
            response = await d
            if response.code != 200:
                raise AssertionError(f"{self.name}: INFO answered {response.code}")

    async def hang_up(self) -> int:
        """BYE; the final code."""
        d = self.request("BYE")
        assert d is not None
        return (await d).code


class ConferenceLoopbackTests(unittest.TestCase):
    """Three parties in one room over real sockets."""

    timeout = 30

    def setUp(self) -> None:
        """The media server with the conference flow, on free ports."""
        # above the ephemeral range (32768-60999 on Linux), wide enough that
        # ports held by other processes are skipped, never exhausted
        base = 61000 + (os.getpid() % 8) * 500
        self.ua_address = (HOST, free_port("udp"))
        flows = {"conference": builtin_flow("conference", actions=builtin_actions())}
        self.ua = MediaServerUA(reactor, listen=self.ua_address, flows=flows,
                                actions=builtin_actions(), prompts=None,
                                port_pool=PortPool(base, base + 249), conference_max=3)
        self.ua.start()
        self.addCleanup(self.ua.stop)
        self.client_ports = PortPool(base + 250, base + 499)
        self.parties: dict[str, Party] = {}
        for name in TONES:
            party = Party(name, self.ua_address, 0)
            party.rtp_port, _ = self.client_ports.acquire(party.session.listen)
            party.port = reactor.listenUDP(0, party, interface=HOST)
            self.addCleanup(party.port.stopListening)
            self.addCleanup(party.session.stop)
            self.parties[name] = party

    def test_three_parties_hear_each_other(self) -> None:
        """Each party hears the two other tones and not its own."""
        return ensureDeferred(self._three_parties())

    async def _three_parties(self) -> None:
        alice, bob, carol = self.parties.values()
        await alice.call(f"conf-{ROOM}")
        await bob.call(f"conf-{ROOM}")
        await carol.call("conference")
        await deferLater(reactor, 0.3, lambda: None)  # the prompt (silence), then the digits
        await carol.press("42#")
        room = self.ua.conferences.room(ROOM)
        self.assertIsNotNone(room, "carol's digits did not reach the room")
        assert room is not None
        self.assertEqual(len(room), 3)
        for party in self.parties.values():
            await party.enough
        for party in self.parties.values():
            window = party.heard[-FRAMES:]
            samples = list(struct.unpack(f"<{len(window) * 160}h", b"".join(window)))
            power = {name: goertzel_power(samples, frequency)
                     for name, frequency in TONES.items()}
            others = [power[name] for name in TONES if name != party.name]
            self.assertGreater(min(others), 1e9, (party.name, power))
            self.assertLess(power[party.name], min(others) * 1e-3, (party.name, power))
        codes = [await party.hang_up() for party in self.parties.values()]
        self.assertEqual(codes, [200, 200, 200])
        self.assertEqual((len(self.ua.conferences), self.ua.active()), (0, 0))
