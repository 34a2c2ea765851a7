"""The rtpengine backend against a real rtpengine, with RTP from two sipps.

The test starts C{rtpengine} (Debian's C{rtpengine-daemon}) as a child
process, in userspace-only mode (C{--table=-1}) on loopback, and drives one
call through L{RtpengineBackend}: the offer and the answer go through
rtpengine's ng protocol and come back rewritten to rtpengine's ports.  Then
two sipp processes, a caller and a callee signalling to each other
directly, each play G.711 RTP from a pcap to the ports rtpengine gave (the
INVITE carries the rewritten offer's port, the 200 the rewritten answer's).
rtpengine forwards each party's packets to the address in the other
party's SDP, where the test listens and counts them.  Finally C{query} and
C{delete} must report packets from both parties, and both listeners must
have received packets, sent from rtpengine's ports.

sipp sends pcap RTP through a raw socket with its media port as the
source, and its own media socket swallows whatever arrives there; so the
SDP given to rtpengine names the test's listeners instead, and rtpengine
runs with C{--endpoint-learning=off} to forward to the SDP address rather
than to the source it sees.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import DatagramProtocol, ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.trial.unittest import FailTest, SkipTest

from b2bua.sip.sdp import parse_sdp
from media.interfaces import MediaUnavailable
from media.rtpengine import RtpengineBackend, RtpengineConfig
from tests.trial.integration.sipp import (
    free_port,
    port_in_use,
    require_program,
    run_sipp,
    run_sipp_uas,
    scenario,
    wait_for_port,
)

#: The pcap the sipp scenarios play (shipped by Debian's sip-tester).
PCAP = Path("/usr/share/sip-tester/g711a.pcap")

#: How many RTP ports rtpengine may use.
PORT_RANGE = 100

#: Seconds for each sipp run (and for rtpengine to start).
TIMEOUT = 20.0


def _skip_or_fail(reason: str) -> None:
    """Skip, or fail under CI=true (CI never skips an integration test)."""
    if os.environ.get("CI") == "true":
        raise FailTest(f"{reason} (CI=true: a missing prerequisite is a failure, not a skip)")
    raise SkipTest(reason)


def require_raw_sockets() -> None:
    """sipp plays pcap RTP through a raw socket: skip without the right."""
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    except PermissionError:
        _skip_or_fail("sipp plays RTP through a raw socket: run as root (or with CAP_NET_RAW)")
    else:
        probe.close()


def sdp(port: int) -> bytes:
    """A party's SDP: PCMA and telephone-event on 127.0.0.1:C{port}."""
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 8 101\r\n"
        "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\na=sendrecv\r\n"
    ).encode()


def media_port() -> int:
    """A loopback port free for sipp's media (it binds the port and port + 2)."""
    for _ in range(50):
        port = free_port("udp")
        if port < 65533 and not port_in_use(port + 2, "udp"):
            return port
    raise RuntimeError("no free pair of media ports")


class Listener(DatagramProtocol):
    """Counts the datagrams that arrive on one loopback port."""

    def __init__(self) -> None:
        self.packets = 0
        self.sources: set[tuple[str, int]] = set()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Count one datagram and remember its source."""
        self.packets += 1
        self.sources.add((addr[0], addr[1]))


class RtpengineProcess(ProcessProtocol):
    """A child rtpengine: keeps its log, tells when it ends."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        """Keep what it prints (its log goes to stderr)."""
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        """Fire L{ended}."""
        self.ended.callback(None)

    def log(self) -> str:
        """The last part of its log, for a failure message."""
        return self.output.decode("utf-8", "replace")[-4000:]


class RtpengineFlowTests(unittest.TestCase):
    """One call through a real rtpengine, with RTP both ways."""

    timeout = 90

    async def setUp(self) -> None:
        """Start rtpengine on loopback and a backend pointing at it."""
        self.sipp = require_program("sipp", "sip-tester")
        binary = require_program("rtpengine", "rtpengine-daemon")
        require_raw_sockets()
        if not PCAP.is_file():
            _skip_or_fail(f"{PCAP} is missing; get it with: apt-get install sip-tester")
        self.ng_port = free_port("udp")
        self.port_min = random.randrange(20000, 30000 - PORT_RANGE, 2)
        self.args = [
            binary,
            "--config-file=none",
            "--table=-1",
            "--interface=127.0.0.1",
            f"--listen-ng=127.0.0.1:{self.ng_port}",
            f"--port-min={self.port_min}",
            f"--port-max={self.port_min + PORT_RANGE - 1}",
            "--endpoint-learning=off",
            "--delete-delay=0",
            "--num-threads=2",
            "--foreground",
            "--log-stderr",
            "--log-level=6",
        ]
        self.rtpengine = RtpengineProcess()
        self.process = reactor.spawnProcess(self.rtpengine, binary, self.args, env={})
        self.addCleanup(self.stop_rtpengine)
        try:
            await wait_for_port(reactor, self.ng_port, "udp", timeout=TIMEOUT)
        except Exception as error:
            self.fail(f"rtpengine did not listen: {error}\n{self.rtpengine.log()}")
        config = RtpengineConfig(instances=(("127.0.0.1", self.ng_port),), timeout=0.5,
                                 retries=4, bind="127.0.0.1")  # fmt: skip
        self.backend = RtpengineBackend.from_config(reactor, config)
        self.addCleanup(self.backend.stop)
        await self.backend.client.request(self.backend.instances.addresses[0],
                                          {"command": "ping"})  # fmt: skip

    async def stop_rtpengine(self) -> None:
        """Stop rtpengine (TERM, then KILL after 5 s) and wait for its end."""
        try:
            self.process.signalProcess("TERM")
        except ProcessExitedAlready:
            return
        killer = reactor.callLater(5.0, self.kill)
        await self.rtpengine.ended
        if killer.active():
            killer.cancel()

    def kill(self) -> None:
        """rtpengine ignored TERM."""
        try:
            self.process.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    def listen(self) -> tuple[Listener, int]:
        """A counting listener on a free loopback port."""
        listener = Listener()
        port = reactor.listenUDP(0, listener, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return listener, port.getHost().port

    def assertInRange(self, port: int) -> None:
        """C{port} is one of rtpengine's."""
        self.assertTrue(self.port_min <= port < self.port_min + PORT_RANGE, port)

    async def test_rtp_flows_both_ways(self) -> None:
        """Offer/answer through rtpengine, RTP from two sipps, then query and delete."""
        at_a, port_a = self.listen()
        at_b, port_b = self.listen()
        call_id = f"rtpengine-it-{random.randrange(10**9)}"

        offer = await self.backend.offer(call_id, "tag-a", parse_sdp(sdp(port_a)))
        answer = await self.backend.answer(call_id, "tag-a", "tag-b", parse_sdp(sdp(port_b)))
        for rewritten in (offer, answer):
            self.assertEqual(rewritten.connection.address, "127.0.0.1")
            self.assertInRange(rewritten.media[0].port)
            self.assertEqual(rewritten.media[0].fmtp(101), "0-15")
            self.assertEqual(rewritten.media[0].formats, ["8", "101"])
            self.assertTrue(rewritten.media[0].has_attribute("sendrecv"))
        to_b = offer.media[0].port  # where the callee sends: rtpengine's port facing it
        to_a = answer.media[0].port  # where the caller sends

        sip_port = free_port("udp")
        uas = run_sipp_uas(reactor, scenario("rtpengine_uas.xml"), sip_port, timeout=TIMEOUT,
                           extra_args=["-mi", "127.0.0.1", "-mp", str(media_port()),
                                       "-set", "sdp_port", str(to_a)],
                           sipp=self.sipp)  # fmt: skip
        await wait_for_port(reactor, sip_port, "udp", ended=uas)
        caller = await run_sipp(reactor, scenario("rtpengine_uac.xml"), f"127.0.0.1:{sip_port}",
                                timeout=TIMEOUT,
                                extra_args=["-mi", "127.0.0.1", "-mp", str(media_port()),
                                            "-set", "sdp_port", str(to_b)],
                                sipp=self.sipp)  # fmt: skip
        callee = await uas
        self.assertTrue(caller.ok, caller.describe())
        self.assertTrue(callee.ok, callee.describe())

        stats = await self.backend.query(call_id)
        self.assertIsNotNone(stats, self.rtpengine.log())
        sent = {s.side: s for s in stats.streams if s.index == 0}
        self.assertEqual(set(sent), {"a", "b"})
        for side in ("a", "b"):
            self.assertEqual(sent[side].media, "audio")
            self.assertGreater(sent[side].packets, 0, f"no packets from side {side}")
            self.assertGreater(sent[side].bytes, sent[side].packets * 12)
            self.assertIsNotNone(sent[side].last_packet_at)

        final = await self.backend.delete(call_id)
        self.assertIsNotNone(final)
        done = {s.side: s for s in final.streams if s.index == 0}
        for side in ("a", "b"):
            self.assertGreaterEqual(done[side].packets, sent[side].packets)
        self.assertEqual(self.backend.calls, 0)
        self.assertIsNone(await self.backend.query(call_id))

        # what each party sent reached the other, from rtpengine's ports
        self.assertGreater(at_b.packets, 0, "the callee's address received nothing")
        self.assertGreater(at_a.packets, 0, "the caller's address received nothing")
        self.assertLessEqual(at_b.packets, done["a"].packets)
        self.assertLessEqual(at_a.packets, done["b"].packets)
        self.assertEqual(at_b.sources, {("127.0.0.1", to_b)})
        self.assertEqual(at_a.sources, {("127.0.0.1", to_a)})


class UnreachableTests(unittest.TestCase):
    """No rtpengine at the configured address."""

    async def test_unreachable_is_unavailable(self) -> None:
        """An offer to an rtpengine that does not answer fails with MediaUnavailable,
        which the switch answers with 503, after timeout x (retries + 1)."""
        silent = free_port("udp")
        config = RtpengineConfig(instances=(("127.0.0.1", silent),), timeout=0.2, retries=1,
                                 bind="127.0.0.1")  # fmt: skip
        backend = RtpengineBackend.from_config(reactor, config)
        self.addCleanup(backend.stop)
        with self.assertRaises(MediaUnavailable):
            await backend.offer("lost", "tag-a", parse_sdp(sdp(4000)))
