"""The relay on real UDP sockets: packets through the kernel on 127.0.0.1,
both ways.  Bounded (a few packets, a 10 s timeout) and loopback only."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from media.backend import RelayBackend
from media.interfaces import MediaStats
from media.rtp import rtcp_receiver_report, rtp_packet
from tests.trial.media.support import audio_offer

HOST = "127.0.0.1"


class Phone(DatagramProtocol):
    """A UDP endpoint that records what it receives and fires when it has
    had C{expected} datagrams."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.done: Deferred[None] = Deferred()

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        """Record; fire once enough came."""
        self.received.append((data, addr))
        if len(self.received) == self.expected:
            self.done.callback(None)

    def send(self, data: bytes, port: int) -> None:
        """Send to the relay."""
        self.transport.write(data, (HOST, port))  # type: ignore[union-attr]


class LoopbackTests(TestCase):
    """Real sockets, the global reactor, 127.0.0.1."""

    timeout = 10

    def setUp(self) -> None:
        self.backend = RelayBackend(reactor, interface=HOST, port_range=(43000, 43399))

    def phone(self, expected: int) -> tuple[Phone, int]:
        """A listening phone and its port."""
        phone = Phone(expected)
        listening = reactor.listenUDP(0, phone, interface=HOST)
        self.addCleanup(listening.stopListening)
        return phone, listening.getHost().port

    @inlineCallbacks
    def test_both_ways(self):  # type: ignore[no-untyped-def]
        """A's RTP reaches B from the relay's port facing B and B's reaches
        A from the port facing A; RTCP on the odd ports; delete closes every
        socket and fills the pool again."""
        a, a_port = self.phone(6)
        b, b_port = self.phone(6)
        b_rtcp, b_rtcp_port = self.phone(1)
        to_b = yield self.backend.offer("loop", "f", audio_offer(HOST, a_port))
        b_sdp = audio_offer(HOST, b_port, extra=f"a=rtcp:{b_rtcp_port}")
        to_a = yield self.backend.answer("loop", "f", "t", b_sdp)
        facing_a, facing_b = to_a.media[0].port, to_b.media[0].port
        a_packets = [rtp_packet(0, seq, seq * 160, 0xA, bytes(160)) for seq in range(5)]
        for packet in a_packets:
            a.send(packet, facing_a)
        a.send(rtcp_receiver_report(0xA), facing_a + 1)
        yield b_rtcp.done
        self.assertEqual(b_rtcp.received, [(rtcp_receiver_report(0xA), (HOST, facing_b + 1))])
        b_packets = [rtp_packet(8, seq, seq * 160, 0xB, bytes(160)) for seq in range(6)]
        for packet in b_packets:
            b.send(packet, facing_b)
        a.send(a_packets[0], facing_a)
        yield a.done
        yield b.done
        self.assertEqual([data for data, _ in a.received], b_packets)
        self.assertEqual({addr for _, addr in a.received}, {(HOST, facing_a)})
        self.assertEqual([data for data, _ in b.received], [*a_packets, a_packets[0]])
        self.assertEqual({addr for _, addr in b.received}, {(HOST, facing_b)})
        stats = yield self.backend.delete("loop")
        assert isinstance(stats, MediaStats)
        self.assertEqual([(s.side, s.packets) for s in stats.streams], [("a", 6), ("b", 6)])
        pool = self.backend.relay.pool
        self.assertEqual(pool.free, pool.capacity)

    @inlineCallbacks
    def test_latching_through_real_sockets(self):  # type: ignore[no-untyped-def]
        """A announces a port it does not send from (as behind a NAT): B's
        media reaches A's real socket once A has sent one packet."""
        a, _ = self.phone(1)
        b, b_port = self.phone(1)
        announced, announced_port = self.phone(1)
        to_b = yield self.backend.offer("nat", "f", audio_offer(HOST, announced_port))
        to_a = yield self.backend.answer("nat", "f", "t", audio_offer(HOST, b_port))
        facing_a, facing_b = to_a.media[0].port, to_b.media[0].port
        first = rtp_packet(0, 1, 160, 0xB, b"before")
        b.send(first, facing_b)
        yield announced.done
        self.assertEqual(announced.received, [(first, (HOST, facing_a))])
        a.send(rtp_packet(0, 1, 160, 0xA, b"hello"), facing_a)
        yield b.done
        second = rtp_packet(0, 2, 320, 0xB, b"after")
        b.send(second, facing_b)
        yield a.done
        self.assertEqual(a.received, [(second, (HOST, facing_a))])
        self.assertEqual(len(announced.received), 1)
        yield self.backend.stop()
        self.assertEqual(self.backend.relay.pool.in_use, 0)

    def tearDown(self) -> Deferred[None]:
        """Close whatever a failed test left open."""
        return self.backend.stop()
