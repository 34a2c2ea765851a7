"""Tests for L{media.rtpengine}: the rtpengine media backend.

The backend talks ng over loopback UDP to L{FakeRtpengine} servers written
for these tests; retransmission timers run on a L{Clock}, and every wait
for a datagram is bounded.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from b2bua.sip.sdp import SessionDescription, parse_sdp
from media.interfaces import IMediaBackend, MediaError, MediaUnavailable, UnknownCall
from media.ng import InstanceSet, NgClient
from media.rtpengine import (
    OFFER_FLAGS,
    REPLACE,
    RtpengineBackend,
    RtpengineConfig,
    parse_rtpengine_config,
    stats_from_reply,
)
from tests.trial.media.fake_ng import WAIT, FakeRtpengine, stats_reply

OFFER = parse_sdp(
    b"v=0\r\n"
    b"o=alice 10 1 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=sendrecv\r\n"
    b"m=video 0 RTP/AVP 96\r\n"
    b"m=image 4010 udptl t38\r\n"
)

ANSWER = parse_sdp(
    b"v=0\r\n"
    b"o=bob 20 1 IN IP4 198.51.100.20\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.20\r\n"
    b"t=0 0\r\n"
    b"m=audio 5000 RTP/AVP 0 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=sendonly\r\n"
    b"m=video 0 RTP/AVP 96\r\n"
    b"m=image 5010 udptl t38\r\n"
)


class BackendTestCase(TestCase):
    """One or more fake rtpengines and a backend whose timers run on a Clock."""

    timeout = 30
    servers_count = 1
    interfaces: tuple[str, str] | None = None

    def setUp(self) -> None:
        self.clock = Clock()
        self.servers = []
        for _ in range(self.servers_count):
            server = FakeRtpengine()
            server.listen()
            self.addCleanup(server.close)
            self.servers.append(server)
        self.server = self.servers[0]
        client = NgClient(reactor, clock=self.clock, interface="127.0.0.1", timeout=1.0, retries=1)
        client.start()
        self.instances = InstanceSet(self.clock, [s.address for s in self.servers], down_time=60)
        self.backend = RtpengineBackend(client, self.instances, interfaces=self.interfaces)
        self.addCleanup(self.backend.stop)

    def tearDown(self) -> None:
        """No timer may be left behind."""
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def bounded(self, deferred: Deferred[Any]) -> Deferred[Any]:
        """C{deferred}, failing after a while instead of hanging."""
        return deferred.addTimeout(WAIT, reactor)

    def server_for(self, call_id: str) -> FakeRtpengine:
        """The fake a new call goes to first."""
        first = self.instances.candidates(call_id)[0]
        return next(s for s in self.servers if s.address == first)

    async def expire(self, server: FakeRtpengine, first: int = 1) -> None:
        """Let a silent server's request time out: it is the server's
        C{first}-th datagram, and its retransmission the next."""
        for n in (first, first + 1):
            await server.received(n)
            self.clock.advance(1.0)

    async def call(self, call_id: str = "call-1") -> SessionDescription:
        """Offer and answer a call; return the rewritten answer."""
        await self.bounded(self.backend.offer(call_id, "tag-a", OFFER))
        return await self.bounded(self.backend.answer(call_id, "tag-a", "tag-b", ANSWER))


class OfferAnswerTests(BackendTestCase):
    """SDP goes to rtpengine and comes back rewritten."""

    def test_provides_interface(self) -> None:
        """The backend is an IMediaBackend."""
        self.assertIsInstance(self.backend, IMediaBackend)

    async def test_offer(self) -> None:
        """The offer carries the SDP and the flags; the reply is parsed."""
        original = OFFER.to_bytes()
        rewritten = await self.bounded(self.backend.offer("call-1", "tag-a", OFFER))
        message = self.server.requests[0].message
        self.assertEqual(message, {
            "command": "offer",
            "call-id": "call-1",
            "from-tag": "tag-a",
            "sdp": original.decode(),
            "flags": list(OFFER_FLAGS),
            "replace": list(REPLACE),
            "ICE": "remove",
            "supports": ["load limit"],
        })  # fmt: skip
        self.assertEqual(OFFER.to_bytes(), original, "the offer given is not changed")
        self.assertIsInstance(rewritten, SessionDescription)
        self.assertEqual(rewritten.connection.address, "127.0.0.1")
        self.assertEqual([m.port for m in rewritten.media], [30000, 0, 30002])
        self.assertEqual(rewritten.media[0].fmtp(101), "0-15")
        self.assertEqual(self.backend.calls, 1)

    async def test_flags_sent(self) -> None:
        """The documented flags are the ones sent."""
        self.assertEqual(OFFER_FLAGS, ("trust address", "original sendrecv"))
        self.assertEqual(REPLACE, ("origin", "session connection"))

    async def test_answer(self) -> None:
        """The answer names the caller's tag as from-tag and the callee's as to-tag."""
        answer = await self.call()
        message = self.server.requests[1].message
        self.assertEqual(message["command"], "answer")
        self.assertEqual((message["from-tag"], message["to-tag"]), ("tag-a", "tag-b"))
        self.assertEqual(message["sdp"], ANSWER.to_bytes().decode())
        self.assertEqual([m.port for m in answer.media], [30004, 0, 30006])

    async def test_answer_without_offer(self) -> None:
        """An answer for a call never offered fails without a request."""
        with self.assertRaises(UnknownCall):
            await self.backend.answer("nope", "tag-a", "tag-b", ANSWER)
        self.assertEqual(self.server.requests, [])

    async def test_reoffer_from_b(self) -> None:
        """A re-offer from the callee swaps the tags: its own tag is from-tag."""
        await self.call()
        await self.bounded(self.backend.offer("call-1", "tag-a", OFFER, to_tag="tag-b", side="b"))
        await self.bounded(self.backend.answer("call-1", "tag-a", "tag-b", ANSWER, side="a"))
        offer, answer = (r.message for r in self.server.requests[2:])
        self.assertEqual((offer["from-tag"], offer["to-tag"]), ("tag-b", "tag-a"))
        self.assertEqual((answer["from-tag"], answer["to-tag"]), ("tag-b", "tag-a"))

    async def test_reoffer_from_a(self) -> None:
        """A re-offer from the caller keeps the caller's tag as from-tag."""
        await self.call()
        await self.bounded(self.backend.offer("call-1", "tag-a", OFFER, to_tag="tag-b"))
        offer = self.server.requests[2].message
        self.assertEqual((offer["from-tag"], offer["to-tag"]), ("tag-a", "tag-b"))

    async def test_offer_from_b_unknown_call(self) -> None:
        """Side b cannot open a call."""
        with self.assertRaises(UnknownCall):
            await self.backend.offer("call-1", "tag-a", OFFER, to_tag="tag-b", side="b")
        with self.assertRaises(UnknownCall):
            await self.backend.offer("call-1", "tag-a", OFFER, side="b")
        self.assertEqual(self.server.requests, [])

    def test_bad_side(self) -> None:
        """A side other than a or b is a programming error."""
        self.assertRaises(ValueError, self.backend.offer, "c", "t", OFFER, side="c")
        self.assertRaises(ValueError, self.backend.answer, "c", "t", "u", ANSWER, side="x")

    async def test_error_reply_is_unavailable(self) -> None:
        """rtpengine refusing the offer (out of ports) gives MediaUnavailable."""
        self.server.handler = lambda m: {"result": "error", "error-reason": "Ran out of ports"}
        with self.assertRaisesRegex(MediaUnavailable, "Ran out of ports"):
            await self.bounded(self.backend.offer("call-1", "tag-a", OFFER))
        self.assertEqual(self.backend.calls, 0)

    async def test_answer_error(self) -> None:
        """An error reply to an answer is a MediaError."""
        await self.bounded(self.backend.offer("call-1", "tag-a", OFFER))
        self.server.handler = lambda m: {"result": "error", "error-reason": "Incomplete SDP"}
        with self.assertRaisesRegex(MediaError, "Incomplete SDP") as caught:
            await self.bounded(self.backend.answer("call-1", "tag-a", "tag-b", ANSWER))
        self.assertNotIsInstance(caught.exception, MediaUnavailable)

    async def test_answer_unknown_at_rtpengine(self) -> None:
        """rtpengine no longer knowing the call is UnknownCall."""
        await self.bounded(self.backend.offer("call-1", "tag-a", OFFER))
        self.server.calls.clear()
        with self.assertRaises(UnknownCall):
            await self.bounded(self.backend.answer("call-1", "tag-a", "tag-b", ANSWER))

    async def test_reply_without_sdp(self) -> None:
        """An ok reply without SDP is a MediaError."""
        self.server.handler = lambda m: {"result": "ok"}
        with self.assertRaisesRegex(MediaError, "no SDP"):
            await self.bounded(self.backend.offer("call-1", "tag-a", OFFER))

    async def test_reply_with_bad_sdp(self) -> None:
        """Unparseable SDP in the reply is a MediaError."""
        self.server.handler = lambda m: {"result": "ok", "sdp": "v=1\r\n"}
        with self.assertRaisesRegex(MediaError, "bad SDP"):
            await self.bounded(self.backend.offer("call-1", "tag-a", OFFER))

    async def test_reply_with_other_media(self) -> None:
        """A reply whose m= lines do not match the offer's is a MediaError."""
        short = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n"
        self.server.handler = lambda m: {"result": "ok", "sdp": short}
        with self.assertRaisesRegex(MediaError, "1 media lines, not 3"):
            await self.bounded(self.backend.offer("call-1", "tag-a", OFFER))


class DirectionTests(BackendTestCase):
    """Logical interfaces are sent as direction, in the offerer's order."""

    interfaces = ("pub", "priv")

    async def test_direction(self) -> None:
        """Side a offers say [a's, b's]; side b offers the reverse; answers none."""
        await self.call()
        await self.bounded(self.backend.offer("call-1", "tag-a", OFFER, to_tag="tag-b", side="b"))
        offer, answer, reoffer = (r.message for r in self.server.requests)
        self.assertEqual(offer["direction"], ["pub", "priv"])
        self.assertNotIn("direction", answer)
        self.assertEqual(reoffer["direction"], ["priv", "pub"])


class FailoverTests(BackendTestCase):
    """Several instances: hashing, failover and staying on one instance."""

    servers_count = 2

    async def test_new_call_fails_over(self) -> None:
        """A silent first instance is skipped; the call then stays on the second."""
        first = self.server_for("call-1")
        second = next(s for s in self.servers if s is not first)
        first.handler = first.silent
        offer = self.backend.offer("call-1", "tag-a", OFFER)
        await self.expire(first)
        rewritten = await self.bounded(offer)
        self.assertEqual(rewritten.connection.address, "127.0.0.1")
        self.assertEqual(len(second.requests), 1)
        self.assertFalse(self.instances.is_up(first.address))
        await self.bounded(self.backend.answer("call-1", "tag-a", "tag-b", ANSWER))
        self.assertEqual([r.message["command"] for r in second.requests], ["offer", "answer"])
        self.assertEqual(len(first.requests), 2)

    async def test_known_call_does_not_fail_over(self) -> None:
        """A call's instance not answering fails the request; no other is tried."""
        home = self.server_for("call-1")
        other = next(s for s in self.servers if s is not home)
        await self.bounded(self.backend.offer("call-1", "tag-a", OFFER))
        home.handler = home.silent
        answer = self.backend.answer("call-1", "tag-a", "tag-b", ANSWER)
        await self.expire(home, first=2)
        with self.assertRaisesRegex(MediaError, "did not answer"):
            await answer
        self.assertEqual(other.requests, [])
        self.assertFalse(self.instances.is_up(home.address))

    async def test_down_instance_tried_last(self) -> None:
        """After a timeout, new calls go to the other instance first."""
        first = self.server_for("call-1")
        first.handler = first.silent
        offer = self.backend.offer("call-1", "tag-a", OFFER)
        await self.expire(first)
        await self.bounded(offer)
        await self.bounded(self.backend.offer("call-1b", "tag-a", OFFER))
        self.assertEqual(len(first.requests), 2, "the down instance got no new call")

    async def test_load_limit_fails_over(self) -> None:
        """An overloaded first instance hands the new call to the next."""
        first = self.server_for("call-1")
        first.handler = lambda m: {"result": "load limit"}
        await self.bounded(self.backend.offer("call-1", "tag-a", OFFER))
        self.assertEqual(len(first.requests), 1)
        self.assertTrue(self.instances.is_up(first.address))

    async def test_error_does_not_fail_over(self) -> None:
        """An error reply is final: the other instance is not asked."""
        first = self.server_for("call-1")
        other = next(s for s in self.servers if s is not first)
        first.handler = lambda m: {"result": "error", "error-reason": "Failed to parse SDP"}
        with self.assertRaises(MediaUnavailable):
            await self.bounded(self.backend.offer("call-1", "tag-a", OFFER))
        self.assertEqual(other.requests, [])

    async def test_all_silent(self) -> None:
        """When no instance answers the offer fails with MediaUnavailable naming both."""
        for server in self.servers:
            server.handler = server.silent
        offer = self.backend.offer("call-1", "tag-a", OFFER)
        first = self.server_for("call-1")
        second = next(s for s in self.servers if s is not first)
        await self.expire(first)
        await self.expire(second)
        with self.assertRaises(MediaUnavailable) as caught:
            await offer
        for server in self.servers:
            self.assertIn(f"127.0.0.1:{server.address[1]}", str(caught.exception))
        self.assertEqual(self.backend.calls, 0)


class StatisticsTests(BackendTestCase):
    """query and delete map rtpengine's counters to MediaStats."""

    async def test_query(self) -> None:
        """Per side and m= line: packets, bytes, RTCP figures, last packet."""
        await self.call()
        self.server.stats = stats_reply("tag-a", "tag-b")
        stats = await self.bounded(self.backend.query("call-1"))
        message = self.server.requests[-1].message
        self.assertEqual(message, {"command": "query", "call-id": "call-1", "from-tag": "tag-a"})
        audio_a, audio_b, image_a, image_b = stats.streams
        self.assertEqual((audio_a.index, audio_a.media, audio_a.side), (0, "audio", "a"))
        self.assertEqual((audio_a.packets, audio_a.bytes), (50, 8600))
        self.assertEqual((audio_b.packets, audio_b.bytes, audio_b.side), (45, 7740, "b"))
        # a reported on what it received from b; b sent no reports
        self.assertEqual((audio_b.lost, audio_b.jitter_ms), (5, 20.0))
        self.assertEqual((audio_a.lost, audio_a.jitter_ms), (0, None))
        self.assertEqual((audio_a.rtt_ms, audio_b.rtt_ms), (0.67, None))
        self.assertEqual((audio_a.last_packet_at, audio_b.last_packet_at),
                         (1700000010.0, 1700000011.0))  # fmt: skip
        self.assertEqual((image_a.index, image_a.media, image_a.packets), (1, "image", 0))
        self.assertIsNone(image_b.last_packet_at)

    async def test_query_unknown_at_rtpengine(self) -> None:
        """A call rtpengine dropped (media timeout) queries as None."""
        await self.call()
        self.server.calls.clear()
        self.assertIsNone(await self.bounded(self.backend.query("call-1")))

    async def test_query_never_offered(self) -> None:
        """A call this backend never held is None, without a request."""
        self.assertIsNone(await self.backend.query("nope"))
        self.assertEqual(self.server.requests, [])

    async def test_query_timeout(self) -> None:
        """rtpengine not answering a query is a MediaError."""
        await self.call()
        self.server.handler = self.server.silent
        query = self.backend.query("call-1")
        await self.expire(self.server, first=3)
        with self.assertRaises(MediaError):
            await query

    async def test_delete(self) -> None:
        """delete frees the call at once and returns the final counters."""
        await self.call()
        self.server.stats = stats_reply("tag-a", "tag-b")
        stats = await self.bounded(self.backend.delete("call-1"))
        message = self.server.requests[-1].message
        self.assertEqual(message, {"command": "delete", "call-id": "call-1",
                                   "from-tag": "tag-a", "delete delay": 0})  # fmt: skip
        self.assertEqual([s.packets for s in stats.streams], [50, 45, 0, 0])
        self.assertEqual(self.backend.calls, 0)
        self.assertIsNone(await self.backend.query("call-1"))
        self.assertIsNone(await self.backend.delete("call-1"))
        self.assertEqual(len(self.server.requests), 3)

    async def test_delete_unknown_at_rtpengine(self) -> None:
        """rtpengine's 'not found' warning gives None."""
        await self.call()
        self.server.calls.clear()
        self.assertIsNone(await self.bounded(self.backend.delete("call-1")))

    async def test_delete_timeout(self) -> None:
        """rtpengine not answering a delete fails it; the call is forgotten anyway."""
        await self.call()
        self.server.handler = self.server.silent
        deleted = self.backend.delete("call-1")
        self.assertEqual(self.backend.calls, 0)
        await self.expire(self.server, first=3)
        with self.assertRaisesRegex(MediaError, "did not answer 'delete'"):
            await deleted

    async def test_delete_before_answer(self) -> None:
        """A call deleted before its answer (cancelled) reports side a only."""
        await self.bounded(self.backend.offer("call-1", "tag-a", OFFER))
        reply = stats_reply("tag-a", "")
        self.server.stats = reply
        stats = await self.bounded(self.backend.delete("call-1"))
        self.assertEqual({s.side for s in stats.streams}, {"a"})


class StatsMappingTests(SynchronousTestCase):
    """L{stats_from_reply} on its own."""

    def test_sides_by_tag(self) -> None:
        """The tags decide the sides, whatever their order in the reply."""
        reply = stats_reply("x", "y")
        swapped = stats_from_reply(reply, "y", "x")
        self.assertEqual([(s.side, s.packets) for s in swapped.streams[:2]], [("a", 45), ("b", 50)])

    def test_without_rtcp(self) -> None:
        """No SSRC table: lost 0, jitter and round trip unknown."""
        reply = stats_reply("x", "y")
        del reply["SSRC"]
        for stream in stats_from_reply(reply, "x", "y").streams:
            self.assertEqual((stream.lost, stream.jitter_ms, stream.rtt_ms), (0, None, None))

    def test_unknown_tags(self) -> None:
        """Tags the switch does not know (other branches) are left out."""
        reply = stats_reply("x", "y")
        self.assertEqual(stats_from_reply(reply, "p", "q").streams, ())
        self.assertEqual(len(stats_from_reply(reply, "x", None).streams), 2)

    def test_garbage(self) -> None:
        """Fields of the wrong type are treated as absent."""
        reply = {"tags": {"x": {"medias": ["junk", {"index": "1"}, {"index": 1, "streams": 5}]}},
                 "SSRC": []}  # fmt: skip
        (stream,) = stats_from_reply(reply, "x", None).streams
        self.assertEqual((stream.index, stream.media, stream.packets), (0, "", 0))
        self.assertEqual(stats_from_reply({"tags": "no"}, "x", "y").streams, ())


class ConfigTests(TestCase):
    """L{parse_rtpengine_config} and L{RtpengineBackend.from_config}."""

    def test_defaults(self) -> None:
        """An empty table gives one local instance."""
        self.assertEqual(parse_rtpengine_config({}), RtpengineConfig())
        self.assertEqual(RtpengineConfig().instances, (("127.0.0.1", 2223),))

    def test_values(self) -> None:
        """Every key read."""
        config = parse_rtpengine_config({
            "instances": ["127.0.0.1:2223", "[::1]:2224"], "timeout": 0.5, "retries": 3,
            "down_time": 10, "interfaces": ["pub", "priv"], "bind": "::",
        })  # fmt: skip
        self.assertEqual(config, RtpengineConfig((("127.0.0.1", 2223), ("::1", 2224)), 0.5, 3,
                                                 10.0, ("pub", "priv"), "::"))  # fmt: skip

    def test_problems_name_keys(self) -> None:
        """Each bad key is named, all at once."""
        with self.assertRaises(ValueError) as caught:
            parse_rtpengine_config({
                "instances": ["rtpengine:2223", "127.0.0.1:2223", "127.0.0.1:2223"],
                "timeout": 0, "retries": -1, "down_time": float("inf"),
                "interfaces": ["pub"], "bind": "eth0", "port": 1,
            })  # fmt: skip
        lines = str(caught.exception).splitlines()
        for key in ("instances", "timeout", "retries", "down_time", "interfaces", "bind", "port"):
            self.assertTrue(any(line.startswith(f"media.rtpengine.{key}: ") for line in lines), key)
        self.assertIn("listed twice", str(caught.exception))
        self.assertRaises(ValueError, parse_rtpengine_config, {"instances": []})
        self.assertRaises(ValueError, parse_rtpengine_config, {"retries": True})

    async def test_from_config(self) -> None:
        """from_config builds a started backend that answers through the fake."""
        server = FakeRtpengine()
        address = server.listen()
        self.addCleanup(server.close)
        config = RtpengineConfig(instances=(address,), timeout=0.5, retries=0, bind="127.0.0.1")
        backend = RtpengineBackend.from_config(reactor, config, clock=Clock())
        self.assertEqual(backend.client.timeout, 0.5)
        self.assertEqual(backend.instances.addresses, (address,))
        offer = backend.offer("c", "t", OFFER).addTimeout(WAIT, reactor)
        self.assertEqual((await offer).media[0].port, 30000)
        self.assertEqual(server.requests[0].source[0], "127.0.0.1")
        await backend.stop()
