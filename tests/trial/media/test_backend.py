"""Tests for L{media.backend.RelayBackend}: the SDP it sends on, errors, and
the backend contract."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.sdp import parse_sdp
from media.backend import RelayBackend
from media.interfaces import IMediaBackend, MediaStats, MediaUnavailable, UnknownCall
from media.ports import PortsExhausted
from tests.trial.media.support import (
    A_SDP,
    B_SDP,
    FakeUDPReactor,
    RelayHarness,
    audio_offer,
    crlf,
    t38_offer,
)

#: An offer with two audio lines at media level, one disabled, an
#: a=rtcp with address, ICE, a port count and a video line.
RICH = parse_sdp(
    crlf("""
v=0
o=bob 1 7 IN IP4 192.0.2.20
s=-
t=0 0
a=ice-options:trickle
m=audio 40000 RTP/AVP 8 101
c=IN IP4 192.0.2.20
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=rtcp:40001 IN IP4 192.0.2.20
a=ice-ufrag:abcd
a=ice-pwd:secretsecretsecretsecret
a=candidate:1 1 UDP 2130706431 192.0.2.20 40000 typ host
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz
a=recvonly
m=audio 0 RTP/AVP 0
c=IN IP4 192.0.2.20
m=video 40010/2 RTP/AVP 96
c=IN IP4 192.0.2.20
a=rtpmap:96 H264/90000
a=fmtp:96 profile-level-id=42e01f
""")
)


class RewriteTests(SynchronousTestCase):
    """What the other side receives."""

    def setUp(self) -> None:
        self.h = RelayHarness()

    def test_offer_points_at_relay(self) -> None:
        """c= and m= point at the relay; everything else is as sent."""
        offer = audio_offer(*A_SDP)
        original = offer.to_bytes()
        to_b = self.h.offer("c", offer)
        self.assertEqual(offer.to_bytes(), original, "the input must not change")
        expected = original.replace(b"c=IN IP4 192.0.2.10", b"c=IN IP4 203.0.113.1").replace(
            b"m=audio 49170", f"m=audio {to_b.media[0].port}".encode()
        )
        self.assertEqual(to_b.to_bytes(), expected)
        self.assertEqual(self.h.backend.relay.pool.in_use, 2)

    def test_ports_face_the_receiving_side(self) -> None:
        """The offer (to B) names the pair facing B, the answer (to A) the
        pair facing A: two different pairs."""
        to_b = self.h.offer("c", audio_offer(*A_SDP))
        to_a = self.h.answer("c", audio_offer(*B_SDP))
        self.assertNotEqual(to_a.media[0].port, to_b.media[0].port)
        self.assertEqual({to_a.media[0].port % 2, to_b.media[0].port % 2}, {0})
        self.assertEqual(self.h.backend.relay.pool.in_use, 2)

    def test_rich_offer(self) -> None:
        """Media-level c=, a=rtcp with address, a disabled line, ICE, crypto,
        direction, port count, fmtp."""
        original = RICH.to_bytes()
        out = self.h.offer("c", RICH, side="b")
        self.assertEqual(RICH.to_bytes(), original)
        audio, disabled, video = out.media
        self.assertEqual([m.port for m in out.media], [audio.port, 0, video.port])
        self.assertEqual(self.h.backend.relay.pool.in_use, 4)
        self.assertEqual(audio.connection.address, "203.0.113.1")  # type: ignore[union-attr]
        self.assertEqual(video.connection.address, "203.0.113.1")  # type: ignore[union-attr]
        self.assertEqual(
            audio.attributes,
            [
                ("rtpmap", "8 PCMA/8000"),
                ("rtpmap", "101 telephone-event/8000"),
                ("fmtp", "101 0-15"),
                ("rtcp", f"{audio.port + 1} IN IP4 203.0.113.1"),
                (
                    "crypto",
                    "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
                ),
                ("recvonly", None),
            ],
        )
        self.assertEqual(out.attributes, [])
        self.assertIsNone(video.port_count)
        self.assertEqual(video.formats, ["96"])
        self.assertEqual(video.fmtp(96), "profile-level-id=42e01f")
        self.assertEqual((disabled.port, disabled.formats), (0, ["0"]))
        self.assertEqual(out.origin.address, "192.0.2.20")

    def test_rtcp_short_form_and_mux(self) -> None:
        """C{a=rtcp:<port>} keeps its form; an a=rtcp naming the RTP port
        itself (multiplexing) names the relay's RTP port."""
        out = self.h.offer("c", audio_offer(*A_SDP, extra="a=rtcp:49171"))
        self.assertEqual(out.media[0].get_attribute("rtcp"), str(out.media[0].port + 1))
        out = self.h.offer("d", audio_offer(*A_SDP, extra="a=rtcp:49170\na=rtcp-mux"))
        self.assertEqual(out.media[0].get_attribute("rtcp"), str(out.media[0].port))

    def test_rtcp_attribute_sets_destination(self) -> None:
        """RTCP goes where a=rtcp says, not to port + 1."""
        to_b = self.h.offer("c", audio_offer(*A_SDP, extra="a=rtcp:50000 IN IP4 192.0.2.99"))
        self.h.answer("c", audio_offer(*B_SDP))
        facing_b = to_b.media[0].port
        self.h.reactor.deliver(facing_b + 1, b"\x80\xc9\x00\x01\x00\x00\x00\x01", (B_SDP[0], 6001))
        self.assertEqual(self.h.reactor.take()[0].destination, ("192.0.2.99", 50000))

    def test_replace_origin(self) -> None:
        """With C{replace_origin}, o= carries the relay's address too."""
        h = RelayHarness(replace_origin=True)
        out = h.offer("c", audio_offer(*A_SDP))
        self.assertEqual(out.origin.address, "203.0.113.1")

    def test_t38_offer(self) -> None:
        """m=image udptl t38 is relayed (ports allocated and rewritten)."""
        out = self.h.offer("c", t38_offer())
        self.assertEqual((out.media[0].media, out.media[0].proto), ("image", "udptl"))
        self.assertNotEqual(out.media[0].port, 49172)
        self.assertEqual(out.media[0].get_attribute("T38MaxBitRate"), "14400")

    def test_answer_enabling_disabled_line(self) -> None:
        """An answer cannot accept a line its offer disabled: port 0."""
        self.h.offer("c", RICH)
        answer = parse_sdp(
            RICH.to_bytes().replace(b"m=audio 0 RTP/AVP 0", b"m=audio 40020 RTP/AVP 0")
        )
        out = self.h.answer("c", answer)
        self.assertEqual(out.media[1].port, 0)
        self.assertEqual(self.h.backend.relay.pool.in_use, 4)

    def test_answer_rejecting_line_frees_ports(self) -> None:
        """The answerer refuses video: its pairs go back."""
        self.h.offer("c", RICH)
        answer = parse_sdp(RICH.to_bytes().replace(b"m=video 40010/2", b"m=video 0"))
        out = self.h.answer("c", answer)
        self.assertEqual(out.media[2].port, 0)
        self.assertEqual(self.h.backend.relay.pool.in_use, 2)

    def test_unusable_addresses_wait_for_latching(self) -> None:
        """An IPv6 or host-name c= cannot be sent to by an IPv4 relay: the
        stream still gets its ports and learns the address from media."""
        for host in ("2001:db8::5", "phone.example.com"):
            sdp = parse_sdp(
                audio_offer(*A_SDP)
                .to_bytes()
                .replace(b"IN IP4 192.0.2.10", f"IN IP4 {host}".encode())
            )
            self.h.offer(host, sdp)
            to_a = self.h.answer(host, audio_offer(*B_SDP))
            facing_a = to_a.media[0].port
            self.h.reactor.deliver(facing_a + 2, b"\x80\x00\x00\x01" + bytes(8), B_SDP)
            self.assertEqual(self.h.reactor.take(), [])
            self.h.reactor.deliver(facing_a, b"\x80\x00\x00\x01" + bytes(8), ("192.0.2.77", 1))
            self.h.reactor.deliver(facing_a + 2, b"\x80\x00\x00\x02" + bytes(8), B_SDP)
            self.assertEqual(
                [s.destination for s in self.h.reactor.take()], [B_SDP, ("192.0.2.77", 1)]
            )

    def test_late_offer(self) -> None:
        """INVITE without SDP: the offer comes from B (200 OK), the answer
        from A (ACK)."""
        to_a = self.h.offer("c", audio_offer(*B_SDP), side="b")
        to_b = self.h.answer("c", audio_offer(*A_SDP), side="a")
        self.h.reactor.deliver(to_a.media[0].port, b"\x80\x00\x00\x01" + bytes(8), A_SDP)
        self.assertEqual(self.h.reactor.take()[0].local, to_b.media[0].port)
        self.assertEqual(self.h.reactor.take(), [])


class ErrorTests(SynchronousTestCase):
    """Failures are Deferred failures of the contract's types."""

    def test_answer_without_offer(self) -> None:
        """UnknownCall."""
        h = RelayHarness()
        d = h.backend.answer("nope", "f", "t", audio_offer())
        self.failureResultOf(d, UnknownCall)

    def test_exhaustion_leaves_nothing_behind(self) -> None:
        """Too few ports for a three-line offer: MediaUnavailable, and the
        pairs taken for the first lines are given back."""
        h = RelayHarness(first=20000, last=20007)
        d = h.backend.offer(
            "c", "f", parse_sdp(RICH.to_bytes().replace(b"m=audio 0", b"m=audio 40020"))
        )
        failure = self.failureResultOf(d, PortsExhausted)
        self.assertIsInstance(failure.value, MediaUnavailable)
        self.assertEqual(h.backend.relay.pool.in_use, 0)
        self.assertEqual(h.reactor.ports, {})
        self.assertNotIn("c", h.backend.relay)
        self.assertEqual(h.backend.stats().ports_exhausted, 1)

    def test_failed_reoffer_keeps_call(self) -> None:
        """A re-offer adding two lines with ports for one fails; the call
        goes on as it was."""
        h = RelayHarness(first=20000, last=20007)
        facing_a, facing_b = h.establish()
        three = parse_sdp(RICH.to_bytes().replace(b"m=audio 0", b"m=audio 40020"))
        self.failureResultOf(h.backend.offer("call-1", "f", three), MediaUnavailable)
        self.assertEqual(h.backend.relay.pool.in_use, 2)
        h.reactor.deliver(facing_a, b"\x80\x00\x00\x01" + bytes(8), A_SDP)
        h.reactor.deliver(facing_b, b"\x80\x00\x00\x01" + bytes(8), B_SDP)
        self.assertEqual([s.destination for s in h.reactor.take()], [B_SDP, A_SDP])

    def test_bind_failure_skipped(self) -> None:
        """A pair held by another process is skipped."""
        h = RelayHarness()
        h.reactor.refused.add(20001)
        out = h.offer("c", audio_offer())
        self.assertEqual(out.media[0].port, 20004)
        self.assertEqual(h.backend.stats().bind_failures, 1)
        self.assertNotIn(20000, h.reactor.ports)

    def test_bad_side(self) -> None:
        """A side other than a/b fails with ValueError."""
        h = RelayHarness()
        self.failureResultOf(h.backend.offer("c", "f", audio_offer(), side="c"), ValueError)

    def test_unknown_call(self) -> None:
        """delete and query of an unknown call fire with None."""
        h = RelayHarness()
        self.assertIsNone(self.successResultOf(h.backend.delete("x")))
        self.assertIsNone(self.successResultOf(h.backend.query("x")))

    def test_configuration_errors(self) -> None:
        """Bad settings are refused with a message naming them."""
        reactor = FakeUDPReactor()
        cases = [
            ({"interface": "example.com"}, "interface"),
            ({"interface": "0.0.0.0"}, "advertised_address"),
            ({"advertised_address": "a b"}, "advertised_address"),
            ({"media_timeout": 0}, "media_timeout"),
            ({"check_interval": -1}, "check_interval"),
            ({"port_range": (5, 4)}, "port range"),
        ]
        for options, word in cases:
            with self.assertRaises(ValueError, msg=str(options)) as caught:
                RelayBackend(reactor, **options)  # type: ignore[arg-type]
            self.assertIn(word, str(caught.exception))
        backend = RelayBackend(reactor, interface="0.0.0.0", advertised_address="203.0.113.9")
        self.assertEqual(backend.advertised_address, "203.0.113.9")


class ContractTests(SynchronousTestCase):
    """The IMediaBackend contract."""

    def test_is_a_media_backend(self) -> None:
        """RelayBackend has the protocol's methods."""
        self.assertIsInstance(RelayHarness().backend, IMediaBackend)

    def test_delete_returns_final_statistics(self) -> None:
        """delete fires with the statistics and frees every port."""
        h = RelayHarness()
        facing_a, _ = h.establish()
        h.reactor.deliver(facing_a, b"\x80\x00\x00\x01" + bytes(8), A_SDP)
        stats = self.successResultOf(h.backend.delete("call-1"))
        assert isinstance(stats, MediaStats)
        self.assertEqual([(s.side, s.packets) for s in stats.streams], [("a", 1), ("b", 0)])
        self.assertEqual(h.backend.relay.pool.in_use, 0)
        self.assertEqual(h.reactor.ports, {})
        self.assertIsNone(self.successResultOf(h.backend.query("call-1")))

    def test_stop_closes_everything(self) -> None:
        """stop() frees every call's ports."""
        h = RelayHarness()
        h.establish("x")
        h.establish("y")
        self.successResultOf(h.backend.stop())
        self.assertEqual(h.backend.stats().calls, 0)
        self.assertEqual(h.backend.relay.pool.in_use, 0)
