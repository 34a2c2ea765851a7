"""Tests for L{nat.keepalive}: which bindings are pinged, what a ping proves,
and when a binding is dropped, on a L{Clock} with a fake transaction layer."""

from __future__ import annotations

import uuid
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from b2bua.core.location import Binding, MemoryLocationStore, Received
from b2bua.core.location_redis import RedisLocationStore, redis_connection_args
from b2bua.sip.errors import TransactionTimeout, TransportError
from b2bua.sip.interfaces import Target
from b2bua.sip.message import Request, make_response
from b2bua.testing import assert_no_delayed_calls
from nat.keepalive import (
    KeepAlive,
    KeepAliveSettings,
    OptionsPinger,
    PingTimeout,
    needs_ping,
    options_request,
)
from nat.metrics import NatMetrics
from tests.trial.redis_support import redis_skip, require_redis_url

AOR = "1000@example.com"
OTHER = "1001@example.com"
SWITCH = ("203.0.113.1", 5060)
T0 = 1_700_000_000.0


def natted(contact: str = "sip:1000@192.168.1.5:5060", host: str = "198.51.100.7",
           port: int = 40000, transport: str = "UDP", aor: str = AOR, cseq: int = 1,
           path: tuple[str, ...] = (), local: tuple[str, int] | None = SWITCH,
           now: float = T0) -> Binding:
    """A binding registered (Call-ID C{reg-<contact>}) from C{host:port}."""
    return Binding(aor=aor, contact=contact, expires_at=now + 3600, call_id=f"reg-{contact}",
                   cseq=cseq, received=Received(transport, host, port, None, local),
                   path=path, registered_at=now)


def advance(clock: Clock, seconds: float) -> None:
    """Move C{clock} forward by C{seconds}, one scheduled call at a time (so
    that what a call schedules is timed from when it ran)."""
    end = clock.seconds() + seconds
    while True:
        due = min((c.getTime() for c in clock.getDelayedCalls()), default=None)
        if due is None or due > end:
            break
        clock.advance(max(0.0, due - clock.seconds()))
    clock.advance(max(0.0, end - clock.seconds()))


class FakeTransactions:
    """A transaction layer that keeps what is sent, for the test to answer.

    @ivar sent: (request, target, owner) of every request, in order.
    @ivar refuse: raise C{TransportError} on send when set.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[Request, Target, Any]] = []
        self.refuse = False

    def send_request(self, request: Request, target: Target, owner: Any) -> object:
        """Keep the request (or refuse it)."""
        if self.refuse:
            raise TransportError("no UDP listener")
        self.sent.append((request, target, owner))
        return object()

    def local_address(self, transport: str) -> tuple[str, int]:
        """Our listener."""
        return SWITCH

    def answer(self, index: int, code: int) -> None:
        """Answer the C{index}th request sent with C{code}."""
        request, _, owner = self.sent[index]
        owner.response_received(make_response(request, code, to_tag="t"), None)

    def time_out(self, index: int) -> None:
        """Let the C{index}th request's transaction time out (Timer F)."""
        owner = self.sent[index][2]
        owner.transaction_failed(None, TransactionTimeout("timer F"))


class SelectionTests(SynchronousTestCase):
    """L{needs_ping} and L{options_request}."""

    def test_which_bindings(self) -> None:
        """Only NATed UDP bindings received by this node without a Path."""
        self.assertTrue(needs_ping(natted()))
        self.assertTrue(needs_ping(natted(contact="sip:1000@198.51.100.7:5060")))
        self.assertFalse(needs_ping(natted(contact="sip:1000@198.51.100.7:40000")))
        self.assertFalse(needs_ping(natted(transport="TCP")))
        self.assertFalse(needs_ping(natted(transport="TLS")))
        self.assertFalse(needs_ping(natted(path=("<sip:edge.example.net;lr>",))))
        self.assertFalse(needs_ping(natted(), owns=lambda local: local != SWITCH))
        self.assertTrue(needs_ping(natted(local=None), owns=lambda local: local is None))
        self.assertFalse(needs_ping(Binding(aor=AOR, contact="sip:1000@10.0.0.1",
                                            expires_at=T0 + 60)))

    def test_options_request(self) -> None:
        """The OPTIONS goes to the Contact, from our listener, with a fresh
        Call-ID and tag."""
        request = options_request(natted(), SWITCH, lambda n: b"\x01" * n, "b2bua-test")
        self.assertEqual((request.method, request.uri_text),
                         ("OPTIONS", "sip:1000@192.168.1.5:5060"))
        self.assertEqual(request.headers.get("From"),
                         f"<sip:ping@{SWITCH[0]}:{SWITCH[1]}>;tag={'01' * 6}")
        self.assertEqual(request.headers.get("To"), "<sip:1000@192.168.1.5:5060>")
        self.assertEqual(request.call_id, f"{'01' * 12}@{SWITCH[0]}")
        self.assertEqual(str(request.cseq), "1 OPTIONS")
        self.assertEqual(request.headers.get("User-Agent"), "b2bua-test")

    def test_settings(self) -> None:
        """Bad settings are refused."""
        for bad in ({"interval": 0}, {"failures": 0}, {"timeout": 0},
                    {"timeout": 31, "interval": 30}, {"in_flight": 0}):
            self.assertRaises(ValueError, KeepAliveSettings, **bad)


class KeepAliveTests(SynchronousTestCase):
    """Sweeps on a clock with the L{OptionsPinger} over fake transactions."""

    def setUp(self) -> None:
        """A store, a fake transaction layer, a keep-alive (not started)."""
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = MemoryLocationStore(self.clock)
        self.tx = FakeTransactions()
        self.registry = CollectorRegistry()
        self.metrics = NatMetrics(self.registry)
        self.pinger = OptionsPinger(self.clock, self.tx.send_request, self.tx.local_address,
                                    timeout=5.0, random_bytes=lambda n: b"\x02" * n)
        self.aors = [AOR, OTHER]
        self.keepalive = KeepAlive(self.clock, self.store, lambda: self.aors, self.pinger,
                                   KeepAliveSettings(interval=30, failures=2, timeout=5),
                                   owns=lambda local: local in (None, SWITCH),
                                   metrics=self.metrics)

    def tearDown(self) -> None:
        """Stop, and leave nothing on the clock."""
        self.keepalive.stop()
        self.pinger.stop()
        assert_no_delayed_calls(self.clock)

    def bind(self, binding: Binding) -> None:
        """Store C{binding} as its REGISTER would."""
        self.successResultOf(self.store.update(binding.aor, binding.call_id, binding.cseq,
                                               [binding], self.clock.seconds()))

    def bindings(self, aor: str = AOR) -> list[Binding]:
        """The current bindings of C{aor}."""
        return self.successResultOf(self.store.get(aor))

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the registry (0 when absent)."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def test_answered_ping_keeps_binding(self) -> None:
        """A sweep an interval after the start pings the NATed binding at
        its received address; a 200 keeps it, and so does a 503 (any
        response proves the phone and its NAT mapping alive)."""
        binding = natted()
        self.bind(binding)
        self.keepalive.start()
        advance(self.clock, 29)
        self.assertEqual(self.tx.sent, [])
        advance(self.clock, 1)
        [(request, target, _)] = self.tx.sent
        self.assertEqual(target, Target("UDP", "198.51.100.7", 40000))
        self.assertEqual(request.uri_text, binding.contact)
        self.tx.answer(0, 200)
        self.assertEqual(self.keepalive.last.ok if self.keepalive.last else None, 1)
        advance(self.clock, 30)
        self.tx.answer(1, 503)
        self.assertEqual(self.bindings(), [binding])
        self.assertEqual(self.metric("b2bua_nat_pings_total", result="ok"), 2)
        self.assertEqual(self.keepalive.pingable, 1)
        self.assertEqual(self.keepalive.failures_of(binding), 0)

    def test_silent_binding_dropped(self) -> None:
        """No answer within the timeout twice in a row: the binding goes
        (the other AOR's binding, which answers, stays)."""
        silent, alive = natted(), natted(contact="sip:1001@10.0.0.9:5060", aor=OTHER,
                                         host="198.51.100.8")
        self.bind(silent)
        self.bind(alive)
        self.keepalive.start()
        advance(self.clock, 30)
        self.assertEqual([t.host for _, t, _ in self.tx.sent], ["198.51.100.7", "198.51.100.8"])
        self.tx.answer(1, 200)
        advance(self.clock, 5)
        self.assertEqual(self.keepalive.failures_of(silent), 1)
        self.assertEqual(self.bindings(), [silent])
        advance(self.clock, 25)
        self.tx.answer(3, 200)
        advance(self.clock, 4.9)
        self.assertEqual(self.bindings(), [silent])
        advance(self.clock, 0.1)
        self.assertEqual(self.bindings(), [])
        self.assertEqual(self.bindings(OTHER), [alive])
        self.assertEqual(self.metric("b2bua_nat_pings_total", result="timeout"), 2)
        self.assertEqual(self.metric("b2bua_nat_pings_total", result="ok"), 2)
        self.assertEqual(self.metric("b2bua_nat_bindings_dropped_total"), 1)
        report = self.keepalive.last
        assert report is not None
        self.assertEqual((report.aors, report.bindings, report.pinged, report.ok, report.failed,
                          report.dropped), (2, 2, 2, 1, 1, 1))
        self.assertEqual(self.keepalive.failures_of(silent), 0)

    def test_transaction_timeout_and_send_errors(self) -> None:
        """Timer F counts as a timeout, a refused send as an error; both
        are failures."""
        self.bind(natted())
        self.keepalive.start()
        advance(self.clock, 30)
        self.tx.time_out(0)
        self.tx.refuse = True
        advance(self.clock, 30)
        self.assertEqual(self.bindings(), [])
        self.assertEqual(self.metric("b2bua_nat_pings_total", result="timeout"), 1)
        self.assertEqual(self.metric("b2bua_nat_pings_total", result="error"), 1)

    def test_refresh_starts_count_afresh(self) -> None:
        """A refresh (CSeq + 1) between two failed pings: the count starts
        again, and the binding stays."""
        self.bind(natted())
        self.keepalive.start()
        advance(self.clock, 35)
        refreshed = natted(cseq=2, now=self.clock.seconds())
        self.bind(refreshed)
        advance(self.clock, 30)
        self.assertEqual(self.keepalive.failures_of(refreshed), 1)
        self.assertEqual(self.bindings(), [refreshed])
        self.assertEqual(self.metric("b2bua_nat_bindings_dropped_total"), 0)

    def test_refresh_during_last_ping(self) -> None:
        """The phone refreshes while the deciding ping is in flight: the
        binding read before the ping is not removed (it changed)."""
        self.bind(natted())
        self.keepalive.start()
        advance(self.clock, 35)
        advance(self.clock, 25)
        refreshed = natted(cseq=2, now=self.clock.seconds())
        self.bind(refreshed)
        advance(self.clock, 5)
        self.assertEqual(self.bindings(), [refreshed])
        self.assertEqual(self.metric("b2bua_nat_bindings_dropped_total"), 0)

    def test_removal_uses_the_stores_order_rule(self) -> None:
        """The removal is an update at the binding's CSeq + 1: a binding
        refreshed with that CSeq between the read and the removal is kept
        (the store refuses the update as out of order)."""
        binding = natted()
        self.bind(binding)
        real_get = self.store.get
        reads: list[str] = []

        def get(aor: str, now: float | None = None) -> Deferred[list[Binding]]:
            reads.append(aor)
            result = real_get(aor, now)
            if reads.count(AOR) == 3:  # the removal's re-read: a refresh lands after it
                self.bind(natted(cseq=2, now=self.clock.seconds()))
            return result

        self.store.get = get  # type: ignore[method-assign]
        self.keepalive.start()
        advance(self.clock, 35)
        advance(self.clock, 35)
        [kept] = self.bindings()
        self.assertEqual(kept.cseq, 2)
        self.assertEqual(self.metric("b2bua_nat_bindings_dropped_total"), 0)

    def test_not_pinged(self) -> None:
        """TCP/TLS (CRLF keep-alives keep those), Path, other nodes' and
        un-NATed bindings get no OPTIONS."""
        for binding in (natted(contact="sip:1000@10.0.0.1:5060;transport=tcp", transport="TCP"),
                        natted(contact="sip:1000@10.0.0.2:5061;transport=tls", transport="TLS"),
                        natted(contact="sip:1000@10.0.0.3", path=("<sip:edge;lr>",)),
                        natted(contact="sip:1000@10.0.0.4", local=("203.0.113.2", 5060)),
                        natted(contact="sip:1000@198.51.100.7:40000")):
            self.bind(binding)
        self.keepalive.start()
        advance(self.clock, 90)
        self.assertEqual(self.tx.sent, [])
        self.assertEqual(len(self.bindings()), 5)
        self.assertEqual(self.keepalive.pingable, 0)

    def test_bounded_in_flight(self) -> None:
        """At most C{in_flight} pings at once; the rest wait for a slot."""
        self.keepalive.stop()
        self.keepalive = KeepAlive(self.clock, self.store, lambda: self.aors, self.pinger,
                                   KeepAliveSettings(interval=30, timeout=5, in_flight=2))
        self.aors = [f"{n}@example.com" for n in range(5)]
        for n in range(5):
            self.bind(natted(contact=f"sip:{n}@10.0.0.{n + 1}", aor=f"{n}@example.com",
                             port=40000 + n))
        self.keepalive.start()
        advance(self.clock, 30)
        self.assertEqual(len(self.tx.sent), 2)
        self.tx.answer(0, 200)
        self.assertEqual(len(self.tx.sent), 3)
        advance(self.clock, 5)  # the two in flight time out; two more go
        self.assertEqual(len(self.tx.sent), 5)
        for index in (3, 4):
            self.tx.answer(index, 200)
        report = self.keepalive.last
        assert report is not None
        self.assertEqual((report.pinged, report.ok, report.failed), (5, 3, 2))

    def test_slow_sweep_delays_next(self) -> None:
        """A sweep waiting on pings delays the next one (never two at once);
        asking for a sweep while one runs gets the running one's report."""
        self.bind(natted())
        self.keepalive.start()
        advance(self.clock, 30)
        first = self.keepalive.sweep()
        self.assertNoResult(first)
        self.assertEqual(len(self.tx.sent), 1)
        self.tx.answer(0, 200)
        self.assertEqual(self.successResultOf(first).ok, 1)

    def test_store_failure(self) -> None:
        """An AOR whose bindings cannot be read is logged and skipped; the
        others are still pinged."""
        self.bind(natted(aor=OTHER, contact="sip:1001@10.0.0.7"))
        real_get = self.store.get

        def get(aor: str, now: float | None = None) -> Deferred[list[Binding]]:
            return fail(RuntimeError("store down")) if aor == AOR else real_get(aor, now)

        self.store.get = get  # type: ignore[method-assign]
        report = self.keepalive.sweep()
        self.assertEqual(len(self.tx.sent), 1)
        self.tx.answer(0, 200)
        self.assertEqual(self.successResultOf(report).ok, 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stop_abandons_pings(self) -> None:
        """Stopping cancels the loop and the pings' timers; answers that
        come later change nothing."""
        self.bind(natted())
        self.keepalive.start()
        advance(self.clock, 30)
        self.keepalive.stop()
        self.pinger.stop()
        self.assertFalse(self.keepalive.running)
        assert_no_delayed_calls(self.clock)
        self.tx.time_out(0)
        self.assertEqual(len(self.bindings()), 1)
        self.assertEqual(self.metric("b2bua_nat_pings_total", result="timeout"), 0)


class WatchTests(SynchronousTestCase):
    """A keep-alive without a fixed AOR list: it sweeps the AORs it is told
    to watch, and keeps no timer while there are none."""

    def setUp(self) -> None:
        """A store, a pinger that answers 200 or times out, a keep-alive."""
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = MemoryLocationStore(self.clock)
        self.pinged: list[Binding] = []
        self.silent = False
        self.keepalive = KeepAlive(self.clock, self.store, None, self.ping,
                                   KeepAliveSettings(interval=30, failures=1, timeout=5))

    def ping(self, binding: Binding) -> Deferred[int]:
        """Answer 200 at once, or fail (silent phone)."""
        self.pinged.append(binding)
        return fail(PingTimeout("silent")) if self.silent else succeed(200)

    def bind(self, binding: Binding) -> None:
        """Store C{binding} as its REGISTER would."""
        self.successResultOf(self.store.update(binding.aor, binding.call_id, binding.cseq,
                                               [binding], self.clock.seconds()))

    def test_sleeps_without_aors(self) -> None:
        """Started with nothing to watch: no timer at all."""
        self.keepalive.start()
        self.assertFalse(self.keepalive.running)
        assert_no_delayed_calls(self.clock)

    def test_watch_ping_forget(self) -> None:
        """A watched AOR is swept every interval; once its binding is gone
        (here: dropped after a failed ping) the AOR is forgotten and the
        loop sleeps again."""
        self.keepalive.start()
        self.bind(natted())
        self.keepalive.watch(AOR)
        self.assertTrue(self.keepalive.running)
        advance(self.clock, 30)
        self.assertEqual(len(self.pinged), 1)
        self.assertEqual(self.keepalive.watching, {AOR})
        self.silent = True
        advance(self.clock, 30)
        self.assertEqual(self.successResultOf(self.store.get(AOR)), [])
        advance(self.clock, 30)
        self.assertEqual(self.keepalive.watching, set())
        self.assertFalse(self.keepalive.running)
        assert_no_delayed_calls(self.clock)
        self.keepalive.watch(AOR)
        self.assertTrue(self.keepalive.running)
        self.keepalive.stop()
        assert_no_delayed_calls(self.clock)

    def test_nothing_natted(self) -> None:
        """An AOR watched by mistake (its contact is not NATed) is swept
        once, forgotten, and the loop sleeps."""
        self.keepalive.start()
        self.bind(natted(contact="sip:1000@198.51.100.7:40000"))
        self.keepalive.watch(AOR)
        advance(self.clock, 30)
        self.assertEqual(self.pinged, [])
        self.assertFalse(self.keepalive.running)
        assert_no_delayed_calls(self.clock)

    def test_watch_before_start(self) -> None:
        """Watching before L{start} sets no timer; L{start} then runs."""
        self.keepalive.watch(AOR)
        assert_no_delayed_calls(self.clock)
        self.keepalive.start()
        self.assertTrue(self.keepalive.running)
        self.keepalive.stop()

    def test_seed(self) -> None:
        """L{KeepAlive.seed} watches the AORs that hold a binding to ping."""
        self.bind(natted())
        self.bind(natted(contact="sip:1001@198.51.100.9:5060", host="198.51.100.9",
                         port=5060, aor=OTHER))
        self.assertEqual(self.successResultOf(self.keepalive.seed([AOR, OTHER, "x@y"])), 1)
        self.assertEqual(self.keepalive.watching, {AOR})
        self.assertEqual(self.successResultOf(self.keepalive.seed([AOR])), 0)

    def test_fixed_list_refuses_watch(self) -> None:
        """A keep-alive with a fixed AOR list cannot be told to watch."""
        keepalive = KeepAlive(self.clock, self.store, lambda: [AOR], self.ping)
        self.assertRaises(ValueError, keepalive.watch, AOR)


class PingerTests(SynchronousTestCase):
    """L{OptionsPinger} on its own."""

    def setUp(self) -> None:
        """A pinger over fake transactions."""
        self.clock = Clock()
        self.tx = FakeTransactions()
        self.pinger = OptionsPinger(self.clock, self.tx.send_request, self.tx.local_address,
                                    timeout=2.0)

    def test_outcomes(self) -> None:
        """A final response fires with its code (provisional ones wait), the
        timeout fails with L{PingTimeout}, a late answer is ignored."""
        d = self.pinger(natted())
        self.tx.answer(0, 100)
        self.assertNoResult(d)
        self.tx.answer(0, 404)
        self.assertEqual(self.successResultOf(d), 404)
        late = self.pinger(natted())
        advance(self.clock, 2)
        self.failureResultOf(late, PingTimeout)
        self.tx.answer(1, 200)
        assert_no_delayed_calls(self.clock)

    def test_local_address_fallback(self) -> None:
        """A binding without a recorded listener is pinged from our
        listener for its transport; one without a received address is a
        programming error."""
        d = self.pinger(natted(local=None))
        request = self.tx.sent[0][0]
        self.assertIn(f"@{SWITCH[0]}:{SWITCH[1]}>", request.headers.get("From") or "")
        self.tx.answer(0, 200)
        self.successResultOf(d)
        self.assertRaises(ValueError, self.pinger,
                          Binding(aor=AOR, contact="sip:1000@10.0.0.1", expires_at=T0))

    def test_send_failure(self) -> None:
        """A send that fails at once fails the ping at once."""
        self.tx.refuse = True
        self.failureResultOf(self.pinger(natted()), TransportError)
        assert_no_delayed_calls(self.clock)


class RedisKeepAliveTests(TestCase):
    """The removal on the shared Redis store (whose Lua script applies the
    same order rule): a silent binding goes, a refreshed one stays."""

    timeout = 20
    skip = redis_skip("NAT keep-alive tests on Redis")

    @inlineCallbacks
    def setUp(self) -> Any:
        """A Redis location store under a unique prefix (removed after)."""
        url = require_redis_url(self, "NAT keep-alive tests on Redis")
        import txredisapi

        self.redis = yield txredisapi.ConnectionPool(
            poolsize=2, reconnect=False, connectTimeout=5, replyTimeout=5,
            **redis_connection_args(url))
        self.addCleanup(self.redis.disconnect)
        self.prefix = f"test:b2bua:nat:{uuid.uuid4().hex}:"
        self.addCleanup(self._delete_keys)
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = RedisLocationStore(self.redis, self.clock, prefix=self.prefix)

    @inlineCallbacks
    def _delete_keys(self) -> Any:
        """Remove every key under this test's prefix."""
        cursor = 0
        while True:
            cursor, keys = yield self.redis.scan(cursor, self.prefix + "*", 500)
            if keys:
                yield self.redis.delete(keys)
            if int(cursor) == 0:
                break

    @inlineCallbacks
    def test_drop_and_keep(self) -> Any:
        """With one failure allowed, a silent binding is removed; one whose
        refresh (CSeq + 1) lands between the read and the removal stays."""
        silent = natted()
        refreshed = natted(contact="sip:1001@10.0.0.9:5060", aor=OTHER, host="198.51.100.8")
        for binding in (silent, refreshed):
            yield self.store.update(binding.aor, binding.call_id, 1, [binding], T0)
        store = self.store
        real_get = store.get
        reads: list[str] = []

        def get(aor: str, now: float | None = None) -> Deferred[list[Binding]]:
            reads.append(aor)
            result = real_get(aor, now)
            if aor == OTHER and reads.count(OTHER) == 2:  # the removal's re-read
                return result.addCallback(self._refresh, refreshed)
            return result

        store.get = get  # type: ignore[method-assign]
        keepalive = KeepAlive(self.clock, store, lambda: [AOR, OTHER],
                              lambda binding: fail(PingTimeout("silent")),
                              KeepAliveSettings(interval=30, failures=1, timeout=5))
        report = yield keepalive.sweep()
        self.assertEqual((report.pinged, report.failed, report.dropped), (2, 2, 1))
        self.assertEqual((yield real_get(AOR)), [])
        [kept] = yield real_get(OTHER)
        self.assertEqual(kept.cseq, 2)

    @inlineCallbacks
    def _refresh(self, bindings: list[Binding], binding: Binding) -> Any:
        """Refresh C{binding} (CSeq 2), then hand on what was read before."""
        again = natted(contact=binding.contact, aor=binding.aor, host="198.51.100.8", cseq=2)
        yield self.store.update(binding.aor, binding.call_id, 2, [again], T0)
        return bindings
