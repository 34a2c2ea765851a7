"""Tests for L{media.ng}: the ng client against a fake rtpengine on loopback.

The datagrams are real (loopback UDP on the reactor); the retransmission
timers run on a L{Clock}, so a test decides when a timeout expires and
waits only for datagrams, each wait bounded by L{fake_ng.WAIT}.
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from media.bencode import decode, encode
from media.ng import (
    InstanceSet,
    NgClient,
    NgError,
    NgMetrics,
    NgRemoteError,
    NgTimeout,
    format_address,
    parse_address,
)
from tests.trial.media.fake_ng import WAIT, FakeRtpengine


class ClientTestCase(TestCase):
    """Starts a fake rtpengine and a client whose timers run on a Clock."""

    timeout = 30

    def setUp(self) -> None:
        self.clock = Clock()
        self.server = FakeRtpengine()
        self.address = self.server.listen()
        self.addCleanup(self.server.close)
        self.registry = CollectorRegistry()
        self.client = NgClient(reactor, clock=self.clock, interface="127.0.0.1", timeout=1.0,
                               retries=2, cookie_prefix="t", metrics=NgMetrics(self.registry))  # fmt: skip
        self.client.start()
        self.addCleanup(self.client.stop)

    def tearDown(self) -> None:
        """No timer may be left behind."""
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def sample(self, name: str, **labels: str) -> float:
        """A counter's value (0 when never incremented)."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def bounded(self, deferred: Deferred[Any]) -> Deferred[Any]:
        """C{deferred}, failing after a while instead of hanging."""
        return deferred.addTimeout(WAIT, reactor)


class RequestTests(ClientTestCase):
    """Requests, replies and cookies."""

    async def test_ping(self) -> None:
        """A ping is sent as cookie, space, bencoded dictionary; the pong fires it."""
        reply = await self.bounded(self.client.request(self.address, {"command": "ping"}))
        self.assertEqual(reply, {"result": "pong"})
        request = self.server.requests[0]
        self.assertEqual(request.raw, b"t_1 d7:command4:pinge")
        self.assertEqual(self.sample("b2bua_media_rtpengine_requests_total",
                                     command="ping", result="ok"), 1)  # fmt: skip
        self.assertEqual(self.client.pending, 0)

    async def test_cookies_are_unique(self) -> None:
        """Each request has a cookie of its own, with the client's prefix."""
        for _ in range(3):
            await self.bounded(self.client.request(self.address, {"command": "ping"}))
        self.assertEqual([r.cookie for r in self.server.requests], [b"t_1", b"t_2", b"t_3"])

    async def test_random_prefix(self) -> None:
        """Without a prefix, two clients pick different random ones."""
        first = NgClient(reactor, clock=self.clock, interface="127.0.0.1")
        second = NgClient(reactor, clock=self.clock, interface="127.0.0.1")
        for client in (first, second):
            client.start()
            self.addCleanup(client.stop)
            await self.bounded(client.request(self.address, {"command": "ping"}))
        cookies = [r.cookie for r in self.server.requests]
        self.assertRegex(cookies[0].decode(), r"^[0-9a-f]{12}_1$")
        self.assertNotEqual(cookies[0], cookies[1])

    async def test_replies_matched_by_cookie(self) -> None:
        """Replies in another order still reach their own requests."""
        self.server.handler = self.server.silent
        first = self.client.request(self.address, {"command": "query", "call-id": "one"})
        second = self.client.request(self.address, {"command": "query", "call-id": "two"})
        one = await self.server.received(1)
        two = await self.server.received(2)
        self.server.send(two.cookie, {"result": "ok", "call": "two"}, two.source)
        self.server.send(one.cookie, {"result": "ok", "call": "one"}, one.source)
        self.assertEqual((await self.bounded(first))["call"], "one")
        self.assertEqual((await self.bounded(second))["call"], "two")

    async def test_error_reply(self) -> None:
        """result=error fails the request with the reason."""
        self.server.handler = lambda m: {"result": "error", "error-reason": "Unknown call-id"}
        with self.assertRaises(NgRemoteError) as caught:
            await self.bounded(self.client.request(self.address, {"command": "query"}))
        self.assertEqual((caught.exception.result, caught.exception.reason),
                         ("error", "Unknown call-id"))  # fmt: skip
        self.assertIn("Unknown call-id", str(caught.exception))
        self.assertEqual(self.sample("b2bua_media_rtpengine_requests_total",
                                     command="query", result="error"), 1)  # fmt: skip

    async def test_load_limit(self) -> None:
        """A 'load limit' result is a remote error with that result."""
        self.server.handler = lambda m: {"result": "load limit", "message": "busy"}
        with self.assertRaises(NgRemoteError) as caught:
            await self.bounded(self.client.request(self.address, {"command": "offer"}))
        self.assertEqual((caught.exception.result, caught.exception.reason), ("load limit", "busy"))

    async def test_unknown_command_label(self) -> None:
        """Commands outside the known set are counted as 'other'."""
        await self.bounded(self.client.request(self.address, {"command": "ping"}))
        self.server.handler = lambda m: {"result": "ok"}
        await self.bounded(self.client.request(self.address, {"command": "block media"}))
        self.assertEqual(self.sample("b2bua_media_rtpengine_requests_total",
                                     command="other", result="ok"), 1)  # fmt: skip


class RetransmissionTests(ClientTestCase):
    """Timeouts, retransmissions and giving up."""

    async def test_retransmits_same_bytes(self) -> None:
        """Without a reply the request goes again, unchanged, after each timeout."""
        self.server.handler = self.server.silent
        result = self.client.request(self.address, {"command": "offer", "call-id": "c"})
        first = await self.server.received(1)
        self.clock.advance(0.999)
        self.assertEqual(len(self.server.requests), 1)
        self.clock.advance(0.001)
        second = await self.server.received(2)
        self.assertEqual(second.raw, first.raw)
        self.server.send(second.cookie, {"result": "ok", "sdp": "x"}, second.source)
        self.assertEqual(await self.bounded(result), {"result": "ok", "sdp": "x"})
        self.assertEqual(self.sample("b2bua_media_rtpengine_retransmissions_total",
                                     command="offer"), 1)  # fmt: skip

    async def test_gives_up(self) -> None:
        """After retries+1 sends and as many timeouts the request fails."""
        self.server.handler = self.server.silent
        failures: list[Any] = []
        self.client.request(self.address, {"command": "delete"}).addErrback(failures.append)
        for count in (1, 2, 3):
            await self.server.received(count)
            self.assertEqual(failures, [])
            self.clock.advance(1.0)
        self.assertEqual(len(failures), 1)
        error = failures[0].value
        self.assertIsInstance(error, NgTimeout)
        self.assertEqual((error.address, error.command), (self.address, "delete"))
        self.assertIn("after 3 attempts", str(error))
        self.assertEqual(len(self.server.requests), 3)
        self.assertEqual(self.client.pending, 0)
        self.assertEqual(self.sample("b2bua_media_rtpengine_requests_total",
                                     command="delete", result="timeout"), 1)  # fmt: skip

    async def test_late_reply_dropped(self) -> None:
        """A reply after the request gave up is dropped and counted."""
        self.server.handler = self.server.silent
        client = NgClient(reactor, clock=self.clock, interface="127.0.0.1", retries=0,
                          metrics=self.client.metrics)  # fmt: skip
        client.start()
        self.addCleanup(client.stop)
        failed = client.request(self.address, {"command": "ping"})
        request = await self.server.received(1)
        self.clock.advance(1.0)
        with self.assertRaises(NgTimeout):
            await failed
        ping = client.request(self.address, {"command": "ping"})
        second = await self.server.received(2)
        self.server.send(request.cookie, {"result": "pong"}, request.source)
        self.server.send(second.cookie, {"result": "pong"}, second.source)
        await self.bounded(ping)
        self.assertEqual(self.sample("b2bua_media_rtpengine_replies_dropped_total",
                                     reason="unknown_cookie"), 1)  # fmt: skip

    async def test_cancel(self) -> None:
        """Cancelling a request stops its retransmissions."""
        self.server.handler = self.server.silent
        result = self.client.request(self.address, {"command": "query"})
        await self.server.received(1)
        result.cancel()
        with self.assertRaises(CancelledError):
            await result
        self.assertEqual(self.client.pending, 0)


class BadReplyTests(ClientTestCase):
    """Replies that are not what they should be are dropped and counted."""

    async def check_dropped(self, reply: bytes, reason: str, **kwargs: Any) -> None:
        """Send C{reply} (after the cookie) first, then a good one."""
        self.server.handler = self.server.silent
        result = self.client.request(self.address, {"command": "ping"})
        request = await self.server.received(1)
        self.server.send(request.cookie, reply, request.source)
        ping = self.client.request(self.address, {"command": "ping"})
        second = await self.server.received(2)
        self.server.send(second.cookie, {"result": "pong"}, second.source)
        await self.bounded(ping)
        self.assertEqual(self.client.pending, 1)
        self.assertEqual(self.sample("b2bua_media_rtpengine_replies_dropped_total",
                                     reason=reason), 1)  # fmt: skip
        self.server.send(request.cookie, {"result": "pong"}, request.source)
        self.assertEqual(await self.bounded(result), {"result": "pong"})

    async def test_not_bencode(self) -> None:
        """A body that does not decode."""
        await self.check_dropped(b"d6:result", "malformed")

    async def test_not_a_dictionary(self) -> None:
        """A body that is a list."""
        await self.check_dropped(encode(["result", "ok"]), "malformed")

    async def test_no_result(self) -> None:
        """A dictionary without a result."""
        await self.check_dropped(encode({"sdp": "v=0"}), "malformed")

    async def test_no_space(self) -> None:
        """A datagram without the space after the cookie."""
        self.server.handler = self.server.silent
        result = self.client.request(self.address, {"command": "ping"})
        request = await self.server.received(1)
        self.server.transport.write(b"garbage", request.source)
        self.server.send(request.cookie, {"result": "pong"}, request.source)
        await self.bounded(result)
        self.assertEqual(self.sample("b2bua_media_rtpengine_replies_dropped_total",
                                     reason="malformed"), 1)  # fmt: skip

    async def test_wrong_source(self) -> None:
        """A reply with the right cookie from another address is ignored."""
        other = FakeRtpengine()
        other.listen()
        self.addCleanup(other.close)
        self.server.handler = self.server.silent
        result = self.client.request(self.address, {"command": "ping"})
        request = await self.server.received(1)
        other.send(request.cookie, {"result": "pong", "from": "other"}, request.source)
        ping = self.client.request(self.address, {"command": "ping"})
        second = await self.server.received(2)
        self.server.send(second.cookie, {"result": "pong"}, second.source)
        await self.bounded(ping)
        self.assertEqual(self.sample("b2bua_media_rtpengine_replies_dropped_total",
                                     reason="wrong_source"), 1)  # fmt: skip
        self.server.send(request.cookie, {"result": "pong"}, request.source)
        self.assertEqual(await self.bounded(result), {"result": "pong"})


class LifecycleTests(ClientTestCase):
    """Starting, stopping and requests that cannot be sent."""

    async def test_stop_fails_pending(self) -> None:
        """stop() fails what waits and cancels its timers."""
        self.server.handler = self.server.silent
        result = self.client.request(self.address, {"command": "offer"})
        await self.server.received(1)
        await self.client.stop()
        with self.assertRaisesRegex(NgError, "stopped"):
            await result
        with self.assertRaisesRegex(NgError, "not started"):
            await self.client.request(self.address, {"command": "ping"})

    async def test_too_large(self) -> None:
        """A request that does not fit one datagram fails at once."""
        with self.assertRaisesRegex(NgError, "too large"):
            await self.client.request(self.address, {"command": "offer", "sdp": "x" * 70000})
        self.assertEqual(self.client.pending, 0)

    async def test_not_encodable(self) -> None:
        """A request with a value bencode cannot carry fails at once."""
        with self.assertRaisesRegex(NgError, "cannot encode"):
            await self.client.request(self.address, {"command": "offer", "ptime": 2.5})

    def test_no_command(self) -> None:
        """A request without a command is a programming error."""
        self.assertRaises(ValueError, self.client.request, self.address, {"call-id": "x"})

    def test_bad_settings(self) -> None:
        """A non-positive timeout or negative retries are refused."""
        self.assertRaises(ValueError, NgClient, reactor, clock=self.clock, timeout=0)
        self.assertRaises(ValueError, NgClient, reactor, clock=self.clock, retries=-1)


class AddressTests(SynchronousTestCase):
    """L{parse_address} and L{format_address}."""

    def test_parse(self) -> None:
        """IPv4 and bracketed IPv6, canonicalised."""
        self.assertEqual(parse_address("127.0.0.1:2223"), ("127.0.0.1", 2223))
        self.assertEqual(parse_address("[::1]:2223"), ("::1", 2223))
        self.assertEqual(parse_address("[0:0::1]:9"), ("::1", 9))

    def test_format(self) -> None:
        """The inverse of parse."""
        for text in ("127.0.0.1:2223", "[::1]:2223"):
            self.assertEqual(format_address(parse_address(text)), text)

    def test_bad(self) -> None:
        """Names, missing or bad ports are refused with a reason."""
        for text, reason in (
            ("localhost:2223", "IP address"),
            ("127.0.0.1", "IP:PORT"),
            (":2223", "IP:PORT"),
            ("127.0.0.1:0", "1 to 65535"),
            ("127.0.0.1:65536", "1 to 65535"),
            ("127.0.0.1:x", "1 to 65535"),
        ):
            with self.subTest(text=text):
                self.assertRaisesRegex(ValueError, re.escape(reason), parse_address, text)


class InstanceSetTests(SynchronousTestCase):
    """Choosing an instance for a new call."""

    ADDRESSES = [("127.0.0.1", 2223), ("127.0.0.2", 2223), ("127.0.0.3", 2223)]

    def setUp(self) -> None:
        self.clock = Clock()
        self.instances = InstanceSet(self.clock, self.ADDRESSES, down_time=30)

    def test_every_instance_once(self) -> None:
        """The candidates are the instances, each once, in ring order."""
        order = self.instances.candidates("call-1")
        self.assertEqual(sorted(order), sorted(self.ADDRESSES))
        start = self.ADDRESSES.index(order[0])
        self.assertEqual(order, [self.ADDRESSES[(start + i) % 3] for i in range(3)])

    def test_stable(self) -> None:
        """The same Call-ID gives the same order, in another set too."""
        other = InstanceSet(Clock(), self.ADDRESSES)
        for n in range(20):
            self.assertEqual(self.instances.candidates(f"c{n}"), other.candidates(f"c{n}"))

    def test_spread(self) -> None:
        """Different calls start on different instances."""
        firsts = {self.instances.candidates(f"call-{n}")[0] for n in range(100)}
        self.assertEqual(firsts, set(self.ADDRESSES))

    def test_down_goes_last(self) -> None:
        """A down instance is tried last until down_time has passed."""
        first = self.instances.candidates("x")[0]
        self.instances.mark_down(first)
        self.assertFalse(self.instances.is_up(first))
        self.assertEqual(self.instances.candidates("x")[-1], first)
        self.clock.advance(29.9)
        self.assertEqual(self.instances.candidates("x")[-1], first)
        self.clock.advance(0.1)
        self.assertEqual(self.instances.candidates("x")[0], first)

    def test_mark_up(self) -> None:
        """An answer brings an instance back at once."""
        first = self.instances.candidates("x")[0]
        self.instances.mark_down(first)
        self.instances.mark_up(first)
        self.assertTrue(self.instances.is_up(first))

    def test_bad(self) -> None:
        """No instance, or one twice, is refused."""
        self.assertRaises(ValueError, InstanceSet, self.clock, [])
        self.assertRaises(ValueError, InstanceSet, self.clock, self.ADDRESSES[:1] * 2)


class CodecTests(SynchronousTestCase):
    """The fake decodes what the client encodes (a sanity check of the fake)."""

    def test_roundtrip(self) -> None:
        """An offer dictionary survives encoding."""
        message = {"command": "offer", "flags": ["trust address"], "sdp": b"v=0\r\n"}
        self.assertEqual(decode(encode(message), encoding="utf-8"),
                         {"command": "offer", "flags": ["trust address"], "sdp": "v=0\r\n"})  # fmt: skip
