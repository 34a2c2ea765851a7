"""Music on hold from the switch under C{twistd}, with real sipp phones.

The switch anchors media in its built-in relay (C{[media] backend =
"relay"}), which plays music on hold by default.  The callee (extension
1001, C{uas_answer.xml}) sits at L{CALLEE_HOST}; its SDP names port
L{CALLEE_RTP} there, where this test listens with a plain UDP socket
(sipp's own media socket is moved elsewhere with C{-mp}), so it sees every
RTP packet the relay sends the callee.  The caller (extension 1000,
C{uac_hold_resume.xml}) answers, waits L{PAUSE_MS}, puts the call on hold
with a re-INVITE saying C{a=sendonly}, waits L{PAUSE_MS}, resumes with
C{a=sendrecv}, waits L{PAUSE_MS} again and hangs up.  Neither sipp sends
RTP, so everything the callee's port receives is the switch's music.

L{MusicOnHoldTests.test_held_callee_hears_music}: during the hold the
callee receives one RTP stream from a port of the relay's range: PCMU (the
only audio codec the callee offers), one SSRC, the marker on its first
packet, consecutive sequence numbers, timestamps 160 apart, every payload
a frame of the switch's generated music, about one packet per 20 ms; it
stops when the call is resumed (the packets span the hold, not the
resumed talk after it) and nothing comes after the BYE.  When the switch
exports the music-on-hold metrics, they count at least what arrived.
"""

from __future__ import annotations

import statistics
import time
from itertools import pairwise

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater

from b2bua.demo import seed_database
from media.moh import generated_loop
from media.server.g711 import ulaw_encode
from media.server.rtp_packet import parse_rtp
from tests.trial.integration.nat_media import RELAY_MEDIA_CONFIG, free_port_range
from tests.trial.integration.sipp import SippResult, run_sipp, run_sipp_uas, scenario, wait_for_port
from tests.trial.integration.trunk_switch import TrunkSwitchCase, free_port_on

#: Where the callee is, and its SDP's media port (C{uas_answer.xml}).
CALLEE_HOST = "127.0.0.61"
CALLEE_RTP = 6002
#: Where the caller is.
CALLER_HOST = "127.0.0.62"
#: The relay's address and the size of its range (two calls' worth).
RELAY = "127.0.0.1"
RANGE = 8
CALLEE, CALLER, PASSWORD = "1001", "1000", "1234"
#: Each of the caller's three pauses: talk, hold, talk again (ms).
PAUSE_MS = 2000
SIPP_TIMEOUT = 40.0

MEDIA_CONFIG = RELAY_MEDIA_CONFIG + """media_timeout = 0

[media.moh]
enabled = true
max_listeners = 10

[plugins.nat]
ping_interval = 0
"""


class Listener(DatagramProtocol):
    """The callee's media port: keeps every datagram with its arrival time."""

    def __init__(self) -> None:
        self.datagrams: list[tuple[float, bytes, tuple[str, int]]] = []

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """Keep it."""
        self.datagrams.append((time.monotonic(), datagram, addr))


class MusicOnHoldTests(TrunkSwitchCase):
    """A caller holds a sipp callee; the switch plays it music."""

    timeout = 120

    async def start(self) -> None:
        """Seed the demo tenant, pick the relay's range, start the switch."""
        self.database = self.database_url()
        await seed_database(self.database, reactor, admin_key=False)
        self.port_min = free_port_range(RELAY, RANGE)
        self.port_max = self.port_min + RANGE - 1
        self.config_extra = MEDIA_CONFIG.format(relay=RELAY, port_min=self.port_min,
                                                port_max=self.port_max)
        await self.start_switch()

    def media_port(self, host: str) -> int:
        """A free port on C{host} for sipp's own media socket (sipp binds
        it and the one two above), away from the SDP's 6000 and 6002."""
        while True:
            port = free_port_on(host)
            if port not in range(5996, 6004):
                return port

    def context(self, **results: SippResult | None) -> str:
        """The phones' and the switch's accounts, for a failure message."""
        parts = [f"--- {name} ---\n{result.describe()}"
                 for name, result in results.items() if result is not None]
        return "\n" + "\n".join(parts) + f"\n--- switch ---\n{self.output[-4000:]}"

    async def test_held_callee_hears_music(self) -> None:
        """Music from the relay during the hold, and only then."""
        await self.start()
        listener = Listener()
        port = reactor.listenUDP(CALLEE_RTP, listener, interface=CALLEE_HOST)
        self.addCleanup(port.stopListening)
        sip_port = free_port_on(CALLEE_HOST)
        registered = await run_sipp(
            reactor, scenario("register_contact.xml"), self.target, "u1",
            ["-s", CALLEE, "-au", CALLEE, "-ap", PASSWORD], timeout=SIPP_TIMEOUT,
            local_port=sip_port, sipp=self.sipp, local_ip=CALLEE_HOST)
        self.assertTrue(registered.ok, self.context(register=registered))
        callee = run_sipp_uas(
            reactor, scenario("uas_answer.xml"), sip_port, "u1",
            ["-mi", CALLEE_HOST, "-mp", str(self.media_port(CALLEE_HOST))],
            timeout=SIPP_TIMEOUT, recv_timeout=15.0, sipp=self.sipp, local_ip=CALLEE_HOST)
        self.addCleanup(lambda: callee.addBoth(lambda _: None))
        await wait_for_port(reactor, sip_port, "udp", ended=callee, host=CALLEE_HOST)
        caller = await run_sipp(
            reactor, scenario("uac_hold_resume.xml"), self.target, "u1",
            ["-s", CALLEE, "-au", CALLER, "-ap", PASSWORD, "-set", "caller", CALLER,
             "-mi", CALLER_HOST, "-mp", str(self.media_port(CALLER_HOST)),
             "-d", str(PAUSE_MS)],
            timeout=SIPP_TIMEOUT, sipp=self.sipp, local_ip=CALLER_HOST)
        answered = await callee
        context = self.context(caller=caller, callee=answered)
        self.assertTrue(caller.ok, context)
        self.assertTrue(answered.ok, context)
        received = len(listener.datagrams)
        await deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(len(listener.datagrams), received, "RTP after the BYE" + context)
        self.check_music(listener.datagrams, context)
        metrics = await self.metrics()
        if any(name.startswith("b2bua_media_moh_") for name, _ in metrics):
            # exported once the service hands the backend its registry
            self.assertGreaterEqual(
                self.sample(metrics, "b2bua_media_moh_packets_sent_total"), received)
            self.assertEqual(self.sample(metrics, "b2bua_media_moh_listeners"), 0)
        await self.stop_switch()

    def check_music(self, datagrams: list[tuple[float, bytes, tuple[str, int]]],
                    context: str) -> None:
        """One PCMU stream of the generated music from the relay, one packet
        per 20 ms, spanning the hold only."""
        hold_seconds = PAUSE_MS / 1000
        self.assertGreater(len(datagrams), hold_seconds * 50 * 0.6,
                           f"{len(datagrams)} RTP packets during a {hold_seconds} s hold"
                           + context)
        sources = {addr for _, _, addr in datagrams}
        self.assertEqual(len(sources), 1, f"RTP from {sources}")
        ((host, source_port),) = sources
        self.assertEqual(host, RELAY)
        self.assertTrue(self.port_min <= source_port <= self.port_max, source_port)
        packets = [parse_rtp(data) for _, data, _ in datagrams]
        self.assertNotIn(None, packets)
        self.assertEqual({p.payload_type for p in packets if p is not None}, {0})
        self.assertEqual(len({p.ssrc for p in packets if p is not None}), 1)
        self.assertEqual([p.marker for p in packets if p is not None],
                         [True] + [False] * (len(packets) - 1))
        first = packets[0]
        assert first is not None
        self.assertEqual([p.sequence for p in packets if p is not None],
                         [(first.sequence + i) & 0xFFFF for i in range(len(packets))])
        stamps = [p.timestamp for p in packets if p is not None]
        self.assertEqual(stamps, [(first.timestamp + 160 * i) & 0xFFFFFFFF
                                  for i in range(len(packets))])
        ring = {ulaw_encode(frame) for frame in generated_loop().frames()}
        self.assertTrue(all(p is not None and p.payload in ring for p in packets),
                        "payloads not from the generated music")
        self.assertGreater(len({p.payload for p in packets if p is not None}), 10)
        arrivals = [when for when, _, _ in datagrams]
        gaps = [b - a for a, b in pairwise(arrivals)]
        self.assertTrue(0.015 < statistics.median(gaps) < 0.025, statistics.median(gaps))
        span = arrivals[-1] - arrivals[0]
        # the hold lasts PAUSE_MS; after the resume the call talks another
        # PAUSE_MS, so music that did not stop would span twice as long
        self.assertLess(span, hold_seconds + 0.75, f"music for {span:.2f} s" + context)
