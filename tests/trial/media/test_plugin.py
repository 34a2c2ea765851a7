"""Tests for L{media.plugin}: calls through the switch with their media
anchored in the built-in relay (on a fake UDP reactor that is also the
harness's clock)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from b2bua.hookspecs import hookimpl
from b2bua.sip.sdp import parse_sdp
from b2bua.testing import SwitchHarness
from media.backend import RelayBackend
from media.plugin import NAME, MediaAnchor
from media.rtp import rtp_packet
from tests.trial.media.support import FakeUDPReactor, Sent

RELAY = "198.51.100.1"


class Ended:
    """Keeps each ended call's data and record."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], Any]] = []

    @hookimpl(trylast=True)
    def b2bua_call_ended(self, call: Any, record: Any) -> None:
        self.calls.append((dict(call.data), record))


def media_of(body: bytes) -> tuple[str, int]:
    """The address and port of the first m= line of an SDP body."""
    sdp = parse_sdp(body)
    connection = sdp.media[0].connection or sdp.connection
    assert connection is not None
    return connection.address, sdp.media[0].port


def rtp_both_ways(reactor: FakeUDPReactor, to_a: tuple[str, int], a_media: tuple[str, int],
                  to_b: tuple[str, int], b_media: tuple[str, int], count: int,
                  b_ssrc: int) -> list[Sent]:
    """What the relay sends while each of two parties sends it C{count} RTP
    packets: A from C{a_media} to the relay's C{to_a} (SSRC C{0xA11CE}), B
    from C{b_media} to C{to_b} (SSRC C{b_ssrc}); what was sent before is
    dropped first."""
    reactor.take()
    for seq in range(count):
        reactor.deliver(to_a[1], rtp_packet(0, seq, seq * 160, 0xA11CE, b"x" * 160), a_media)
        reactor.deliver(to_b[1], rtp_packet(0, seq, seq * 160, b_ssrc, b"y" * 160), b_media)
    return reactor.take()


class AnchorTests(SynchronousTestCase):
    """Alice (1000) calls Bob (1001) with the media in the relay."""

    def setUp(self) -> None:
        self.start()

    def start(self, first: int = 40000, last: int = 40099, timeout: float | None = None) -> None:
        self.reactor = FakeUDPReactor()
        self.backend = RelayBackend(self.reactor, interface=RELAY, port_range=(first, last),
                                    media_timeout=timeout,
                                    on_dead=lambda call_id: self.anchor.media_dead(call_id),
                                    clock=self.reactor)
        self.anchor = MediaAnchor(self.backend)
        self.ended = Ended()
        self.h = SwitchHarness({NAME: self.anchor, "ended": self.ended}, clock=self.reactor)
        self.backend.start()
        self.alice = self.h.register("1000")
        self.bob = self.h.register("1001")

    def tearDown(self) -> None:
        self.backend.stop()

    def connect(self) -> tuple[Any, Any]:
        call = self.alice.call("1001")
        incoming = self.bob.incoming[-1]
        incoming.answer()
        self.h.flush()
        self.assertEqual(call.code, 200)
        return call, incoming

    def test_both_ways_through_the_relay(self) -> None:
        """Each party is told to send to the relay; RTP from one reaches the
        other's SDP address through it; the CDR gets the statistics and the
        ports go back."""
        call, incoming = self.connect()
        to_bob = media_of(incoming.invite.body)
        to_alice = media_of(call.remote_sdp)
        self.assertEqual((to_bob[0], to_alice[0]), (RELAY, RELAY))
        self.assertTrue(40000 <= to_bob[1] <= 40099 and 40000 <= to_alice[1] <= 40099)
        alice_media = media_of(call.local_sdp)
        bob_media = media_of(incoming.local_sdp)
        sent = rtp_both_ways(self.reactor, to_alice, alice_media, to_bob, bob_media, 5, 0xB0B)
        self.assertEqual(sum(1 for s in sent if s.destination == bob_media), 5)
        self.assertEqual(sum(1 for s in sent if s.destination == alice_media), 5)
        self.assertGreater(self.backend.stats().ports_in_use, 0)
        self.reactor.deferred_closes = True  # sockets close later, as on a real reactor
        call.hangup()
        self.h.settle()
        data, _ = self.ended.calls[-1]
        packets = {(s["side"], s["packets"]) for s in data["media"]}
        self.assertEqual(packets, {("a", 5), ("b", 5)})
        self.reactor.finish_closes()
        self.assertEqual(self.backend.stats().ports_in_use, 0)
        self.assertEqual(self.h.metric("b2bua_media_relay_ports_in_use"), 0)
        self.assertEqual(self.h.metric("b2bua_media_relay_packets_relayed_total"), 10)
        self.assertEqual(self.h.metric("b2bua_media_packets_total"), 10)

    def test_hold_reinvite_anchored(self) -> None:
        """A re-INVITE putting the call on hold is anchored too: the other
        party sees the relay and the direction it asked for."""
        call, incoming = self.connect()
        call.reinvite(direction="sendonly")
        self.h.flush()
        offer = incoming.requests[-2].body if incoming.requests[-1].method == "ACK" \
            else incoming.requests[-1].body
        self.assertEqual(media_of(offer)[0], RELAY)
        self.assertIn(b"a=sendonly", offer)
        self.assertEqual(media_of(call.remote_sdp)[0], RELAY)
        call.hangup()
        self.h.settle()

    def test_dead_media_hangs_up(self) -> None:
        """No RTP for the media timeout ends the answered call with a
        Reason, and the CDR says why."""
        self.backend.stop()
        self.start(timeout=5.0)
        call, incoming = self.connect()
        self.h.advance(7)
        self.assertEqual(call.state, "terminated")
        self.assertEqual(incoming.state, "terminated")
        bye = next(r for r in incoming.requests if r.method == "BYE")
        self.assertIn("media timeout", bye.headers.get("reason"))
        self.h.settle()
        _, record = self.ended.calls[-1]
        self.assertEqual(record.disconnect, "media-timeout")
        self.assertEqual(self.h.metric("b2bua_media_timeouts_total"), 1)

    def test_no_ports_refuses_the_call(self) -> None:
        """A relay out of ports refuses the call with 503 and Retry-After
        before anything rings."""
        self.backend.stop()
        self.start(first=40000, last=40003)  # two pairs: one stream, both sides
        first, _ = self.connect()
        second = self.alice.call("1001")
        self.h.flush()
        self.assertEqual(second.code, 503)
        self.assertEqual(second.responses[-1].headers.get("retry-after"), "5")
        self.assertEqual(len(self.bob.incoming), 1)
        first.hangup()
        self.h.settle()
