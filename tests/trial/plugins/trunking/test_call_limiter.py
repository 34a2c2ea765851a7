"""Tests of L{CallLimiter}: every way a call can end leaves every count at
zero, refusals become the documented SIP answers and metrics, and leases
are renewed on the clock.

L{BackAtZero} drives the limiter through normal, cancelled, busy,
failed-over, refused, crashed-leg and crashed-node call sequences and then
shows the store empty; it runs on the memory store always and on Redis when
C{REDIS_URL} is set (the same skip-or-fail rule as the store contract).
L{LimiterStateMachine} is a hypothesis state machine checking after every
step that each count equals the calls the limiter holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from prometheus_client import CollectorRegistry
from twisted.internet import task
from twisted.internet.defer import Deferred, fail, inlineCallbacks, maybeDeferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from b2bua.core.decisions import Reject
from plugins.trunking.call_limiter import (
    SOURCE,
    CallLimiter,
    LimitSettings,
    SettingsError,
    provisioned_limits,
)
from plugins.trunking.limits import (
    CONNECTION,
    INBOUND,
    OUTBOUND,
    TRUNK,
    Admission,
    ICallLimitStore,
    LimitKey,
    Limits,
    MemoryCallLimitStore,
    Usage,
)
from tests.trial.plugins.trunking.test_limits import LEASE, T0, RedisSetup

#: What provisioning says: trunk t1 takes 2 calls, 1 inbound, 3 a second;
#: connections v1 and v2 take 2 and 4 calls; t2 has no limit but counts; v9
#: is not limited at all (no key).
PROVISIONED = {
    (TRUNK, "t1"): Limits(total=2, inbound=1, cps=3),
    (TRUNK, "t2"): Limits(),
    (CONNECTION, "v1"): Limits(total=2),
    (CONNECTION, "v2"): Limits(total=4, cps=10),
}
ENTITIES = sorted(PROVISIONED)


def lookup(kind: str, id: str) -> Limits | None:
    """The provisioned limits of an entity."""
    return PROVISIONED.get((kind, id))


class LimiterFixture:
    """A L{CallLimiter} on C{self.store}, a fake clock and its own registry."""

    clock: task.Clock
    store: ICallLimitStore
    limiter: CallLimiter
    registry: CollectorRegistry

    def make_store(self) -> Any:
        """A memory store on the fake clock."""
        return MemoryCallLimitStore(self.clock, lease=LEASE)

    def make_limiter(self, store: ICallLimitStore | None = None, **options: Any) -> CallLimiter:
        """A limiter on C{store} (default C{self.store}) with its own registry."""
        limiter = CallLimiter(store or self.store, self.clock, CollectorRegistry(), lookup,
                              **options)
        self.addCleanup(limiter.stop)  # type: ignore[attr-defined]
        return limiter

    @inlineCallbacks
    def setUp(self) -> Any:
        """The clock at L{T0}, an empty store and a limiter."""
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.store = yield maybeDeferred(self.make_store)
        self.limiter = self.make_limiter()
        self.registry = self.limiter.registry

    @inlineCallbacks
    def usage(self, kind: str, id: str) -> Any:
        """(inbound, outbound) live calls of an entity."""
        got = yield self.store.usage(kind, id)
        return got.inbound, got.outbound

    @inlineCallbacks
    def assertAllZero(self, *limiters: CallLimiter) -> Any:
        """No entity has a live call and the limiters hold nothing."""
        for kind, id in ENTITIES:
            self.assertEqual((yield self.usage(kind, id)), (0, 0), f"{kind}:{id}")
        self.assertEqual([u for u in (yield self.store.snapshot()) if u.total], [])
        for limiter in limiters or (self.limiter,):
            self.assertEqual(limiter.held(), {})
            self.assertEqual(limiter._calls, {})


class BackAtZero(LimiterFixture):
    """Whatever way calls end, every count comes back to zero."""

    @inlineCallbacks
    def test_answered_then_bye(self) -> Any:
        """A normal call holds its trunk and connection while it runs."""
        self.assertIsNone((yield self.limiter.admit_call("c1", OUTBOUND, trunk="t1")))
        self.assertIsNone((yield self.limiter.admit_attempt("c1", "0", "v1")))
        yield self.limiter.call_answered("c1", "0")
        self.assertEqual((yield self.usage(TRUNK, "t1")), (0, 1))
        self.assertEqual((yield self.usage(CONNECTION, "v1")), (0, 1))
        self.clock.advance(600)
        yield self.limiter.renew()
        self.assertEqual((yield self.usage(CONNECTION, "v1")), (0, 1))
        yield self.limiter.call_ended("c1")
        yield self.assertAllZero()

    @inlineCallbacks
    def test_cancelled_while_forking(self) -> Any:
        """The caller cancels while two forks ring on two connections."""
        yield self.limiter.admit_call("c1", OUTBOUND, trunk="t1")
        yield self.limiter.admit_attempt("c1", "0", "v1")
        yield self.limiter.admit_attempt("c1", "1", "v2")
        self.assertEqual(sorted(self.limiter.held()), ["c1", "c1#0", "c1#1"])
        yield self.limiter.call_ended("c1")
        yield self.assertAllZero()

    @inlineCallbacks
    def test_busy(self) -> Any:
        """The callee is busy: the attempt ends, then the call."""
        yield self.limiter.admit_call("c1", OUTBOUND, trunk="t1")
        yield self.limiter.admit_attempt("c1", "0", "v1")
        yield self.limiter.attempt_ended("c1", "0")
        self.assertEqual((yield self.usage(CONNECTION, "v1")), (0, 0))
        yield self.limiter.call_ended("c1")
        yield self.assertAllZero()

    @inlineCallbacks
    def test_failover(self) -> Any:
        """The first vendor fails: its slot is released, the trunk's kept;
        the second answers and holds its slot until the BYE."""
        yield self.limiter.admit_call("c1", OUTBOUND, trunk="t1")
        yield self.limiter.admit_attempt("c1", "0", "v1")
        yield self.limiter.attempt_ended("c1", "0")
        self.assertEqual((yield self.usage(CONNECTION, "v1")), (0, 0))
        self.assertEqual((yield self.usage(TRUNK, "t1")), (0, 1))
        self.assertIsNone((yield self.limiter.admit_attempt("c1", "1", "v2")))
        yield self.limiter.call_answered("c1", "1")
        self.assertEqual((yield self.usage(CONNECTION, "v2")), (0, 1))
        yield self.limiter.call_ended("c1")
        yield self.assertAllZero()

    @inlineCallbacks
    def test_failover_past_a_full_connection(self) -> Any:
        """A full connection refuses the attempt (counted), the hunt goes
        on to the next one."""
        for other in ("x1", "x2"):
            yield self.limiter.admit_attempt(other, "0", "v1")
        yield self.limiter.admit_call("c1", OUTBOUND, trunk="t1")
        reject = yield self.limiter.admit_attempt("c1", "0", "v1")
        self.assertEqual(reject.code, 503)
        self.assertIsNone((yield self.limiter.admit_attempt("c1", "1", "v2")))
        self.assertEqual(self.registry.get_sample_value(
            "b2bua_trunk_limit_rejections_total",
            {"kind": CONNECTION, "id": "v1", "limit": "total"}), 1)
        for call in ("x1", "x2", "c1"):
            yield self.limiter.call_ended(call)
        yield self.assertAllZero()

    @inlineCallbacks
    def test_crashed_leg(self) -> Any:
        """A B leg times out (or its transport dies) and the core fails the
        call: only the end is reported, and it releases everything."""
        yield self.limiter.admit_call("c1", OUTBOUND, trunk="t1")
        yield self.limiter.admit_attempt("c1", "0", "v1")
        self.clock.advance(32)
        yield self.limiter.call_ended("c1")
        yield self.assertAllZero()

    @inlineCallbacks
    def test_refused_call(self) -> Any:
        """A call over the trunk's limit is refused; its end releases
        nothing of the calls that hold the trunk."""
        yield self.limiter.admit_call("a", OUTBOUND, trunk="t1")
        yield self.limiter.admit_call("b", OUTBOUND, trunk="t1")
        reject = yield self.limiter.admit_call("c", OUTBOUND, trunk="t1")
        self.assertIsInstance(reject, Reject)
        yield self.limiter.call_ended("c")
        self.assertEqual((yield self.usage(TRUNK, "t1")), (0, 2))
        yield self.limiter.call_ended("a")
        yield self.limiter.call_ended("b")
        yield self.assertAllZero()

    @inlineCallbacks
    def test_inbound_call(self) -> Any:
        """An inbound call holds the vendor connection it came on and the
        customer's trunk, both inbound."""
        yield self.limiter.admit_call("c1", INBOUND, connection="v1")
        yield self.limiter.admit_call("c1", INBOUND, trunk="t1")
        self.assertEqual((yield self.usage(TRUNK, "t1")), (1, 0))
        self.assertEqual((yield self.usage(CONNECTION, "v1")), (1, 0))
        reject = yield self.limiter.admit_call("c2", INBOUND, trunk="t1", connection="v1")
        self.assertEqual(reject.code, 503)
        self.assertEqual((yield self.usage(CONNECTION, "v1")), (1, 0))
        yield self.limiter.call_ended("c2")
        yield self.limiter.call_ended("c1")
        yield self.assertAllZero()

    @inlineCallbacks
    def test_ends_repeated(self) -> Any:
        """A double BYE, an attempt ending after its call, an end of a call
        never admitted: nothing goes below zero."""
        yield self.limiter.admit_call("c1", OUTBOUND, trunk="t1")
        yield self.limiter.admit_call("c2", OUTBOUND, trunk="t1")
        yield self.limiter.admit_attempt("c1", "0", "v1")
        yield self.limiter.call_ended("c1")
        yield self.limiter.call_ended("c1")
        yield self.limiter.attempt_ended("c1", "0")
        yield self.limiter.call_ended("never")
        self.assertEqual((yield self.usage(TRUNK, "t1")), (0, 1))
        yield self.limiter.call_ended("c2")
        yield self.assertAllZero()

    @inlineCallbacks
    def test_node_crash(self) -> Any:
        """A node dies with calls up: the survivor renews its own calls,
        the dead node's calls stop counting once their lease ran out, and
        the survivor's calls still count until they end."""
        dead = self.make_limiter()
        yield dead.admit_call("d1", OUTBOUND, trunk="t1")
        yield dead.admit_attempt("d1", "0", "v2")
        yield self.limiter.admit_call("s1", OUTBOUND, trunk="t1")
        yield self.limiter.admit_attempt("s1", "0", "v2")
        self.assertIsInstance((yield self.limiter.admit_call("s2", OUTBOUND, trunk="t1")), Reject)
        for _ in range(4):
            self.clock.advance(LEASE / 3)
            yield self.limiter.renew()
        self.assertEqual((yield self.usage(TRUNK, "t1")), (0, 1))
        self.assertEqual((yield self.usage(CONNECTION, "v2")), (0, 1))
        self.assertIsNone((yield self.limiter.admit_call("s2", OUTBOUND, trunk="t1")))
        yield self.limiter.call_ended("s1")
        yield self.limiter.call_ended("s2")
        yield self.assertAllZero(self.limiter)

    @inlineCallbacks
    def test_all_sequences_on_one_store(self) -> Any:
        """All of the above, interleaved on one store, two trunks and two
        connections, then every count is zero."""
        lim = self.limiter
        yield lim.admit_call("normal", OUTBOUND, trunk="t2")
        yield lim.admit_call("busy", OUTBOUND, trunk="t2")
        yield lim.admit_call("cancel", OUTBOUND, trunk="t1")
        yield lim.admit_call("failover", OUTBOUND, trunk="t1")
        yield lim.admit_call("inbound", INBOUND, trunk="t2", connection="v1")
        for call, attempt, vendor in (("normal", "0", "v1"), ("busy", "0", "v2"),
                                      ("cancel", "0", "v2"), ("failover", "0", "v2"),
                                      ("cancel", "1", "v9")):
            self.assertIsNone((yield lim.admit_attempt(call, attempt, vendor)))
        yield lim.call_answered("normal", "0")
        yield lim.attempt_ended("busy", "0")
        yield lim.attempt_ended("failover", "0")
        self.assertIsNone((yield lim.admit_attempt("failover", "1", "v2")))
        yield lim.call_answered("failover", "1")
        self.assertEqual((yield self.usage(CONNECTION, "v2")), (0, 2))
        self.assertEqual((yield self.usage(TRUNK, "t2")), (1, 2))
        for call in ("cancel", "busy", "normal", "failover", "inbound"):
            self.clock.advance(5)
            yield lim.call_ended(call)
        yield self.assertAllZero()


class MemoryBackAtZero(BackAtZero, TestCase):
    """L{BackAtZero} on the memory store."""


class RedisBackAtZero(RedisSetup, BackAtZero, TestCase):
    """L{BackAtZero} on Redis."""


class ManualStore:
    """A memory store whose acquisitions answer when the test says, and
    whose operations can be made to fail."""

    def __init__(self, store: MemoryCallLimitStore) -> None:
        self.store = store
        self.lease = store.lease
        self.waiting: list[tuple[Deferred[Admission], str, list[LimitKey]]] = []
        self.hold = False
        self.failing: set[str] = set()
        self.released: list[tuple[str, list[LimitKey]]] = []

    def acquire(self, call_id: str, keys: Sequence[LimitKey]) -> Deferred[Admission]:
        """Queue it while C{hold} is set."""
        if "acquire" in self.failing:
            return fail(ConnectionError("redis: connection lost"))
        if not self.hold:
            return self.store.acquire(call_id, keys)
        d: Deferred[Admission] = Deferred()
        self.waiting.append((d, call_id, list(keys)))
        return d

    def land(self) -> None:
        """Apply and answer every queued acquisition, in order."""
        waiting, self.waiting = self.waiting, []
        for d, call_id, keys in waiting:
            self.store.acquire(call_id, keys).chainDeferred(d)

    def release(self, call_id: str, keys: Sequence[LimitKey]) -> Deferred[int]:
        """Release (or fail)."""
        self.released.append((call_id, list(keys)))
        if "release" in self.failing:
            return fail(ConnectionError("redis: connection lost"))
        return self.store.release(call_id, keys)

    def renew(self, held: Mapping[str, Sequence[LimitKey]]) -> Deferred[int]:
        """Renew (or fail)."""
        if "renew" in self.failing:
            return fail(TimeoutError("redis: timeout"))
        return self.store.renew(held)

    def usage(self, kind: str, id: str) -> Deferred[Usage]:
        """Pass through."""
        return self.store.usage(kind, id)

    def snapshot(self) -> Deferred[list[Usage]]:
        """Pass through."""
        return self.store.snapshot()


class PolicyTests(LimiterFixture, SynchronousTestCase):
    """Responses, metrics, in-flight admissions, store failures and the
    renewal loop, on a memory store behind L{ManualStore}."""

    def setUp(self) -> None:
        """A limiter on a L{ManualStore}."""
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.manual = ManualStore(MemoryCallLimitStore(self.clock, lease=LEASE))
        self.store = self.manual  # type: ignore[assignment]
        self.limiter = self.make_limiter()
        self.registry = self.limiter.registry

    def sample(self, name: str, **labels: str) -> float:
        """A metric's value (0 when absent)."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def admit(self, call_id: str, **kwargs: Any) -> Reject | None:
        """admit_call, answered at once."""
        direction = kwargs.pop("direction", OUTBOUND)
        return self.successResultOf(self.limiter.admit_call(call_id, direction, **kwargs))

    def current(self, kind: str, id: str) -> tuple[int, int]:
        """(inbound, outbound) now."""
        return self.successResultOf(self.usage(kind, id))

    def test_concurrency_reject(self) -> None:
        """Over a concurrency limit: 503, Retry-After, a Q.850 reason, and
        the rejection counted by kind, id and limit."""
        self.admit("a", trunk="t1")
        self.admit("b", trunk="t1")
        reject = self.admit("c", trunk="t1")
        self.assertEqual(reject, Reject(503, "Service Unavailable", (
            ("Retry-After", "5"), ("Reason", 'Q.850;cause=34;text="call limit"')),
            source=SOURCE))
        inbound = self.admit("d", trunk="t1", direction=INBOUND)
        self.assertEqual(inbound.code, 503)
        self.assertEqual(self.sample("b2bua_trunk_limit_rejections_total", kind=TRUNK,
                                     id="t1", limit="total"), 2)

    def test_concurrency_reject_480(self) -> None:
        """C{reject_code = 480} answers concurrency refusals with 480 and
        the configured Retry-After."""
        limiter = self.make_limiter(settings=LimitSettings(reject_code=480, retry_after=30))
        self.successResultOf(limiter.admit_call("a", INBOUND, trunk="t1"))
        reject = self.successResultOf(limiter.admit_call("b", INBOUND, trunk="t1"))
        self.assertEqual((reject.code, reject.reason, reject.headers[0]),
                         (480, "Temporarily Unavailable", ("Retry-After", "30")))
        self.assertEqual(limiter.registry.get_sample_value(
            "b2bua_trunk_limit_rejections_total", {"kind": TRUNK, "id": "t1", "limit": "in"}), 1)

    def test_cps_reject(self) -> None:
        """Over the CPS limit: 503 with a Retry-After of at least a second,
        whatever the concurrency settings say."""
        self.limiter = self.make_limiter(settings=LimitSettings(reject_code=480))
        self.registry = self.limiter.registry
        for i in range(3):
            self.admit(f"c{i}", trunk="t1")
            self.successResultOf(self.limiter.call_ended(f"c{i}"))
        reject = self.admit("c3", trunk="t1")
        self.assertEqual(reject, Reject(503, "Service Unavailable", (
            ("Retry-After", "1"), ("Reason", 'Q.850;cause=42;text="call rate limit"')),
            source=SOURCE))
        self.assertEqual(self.sample("b2bua_trunk_limit_rejections_total", kind=TRUNK,
                                     id="t1", limit="cps"), 1)
        self.clock.advance(1)
        self.assertIsNone(self.admit("c3", trunk="t1"))

    def test_not_limited(self) -> None:
        """An entity without provisioned limits costs no store work."""
        self.assertIsNone(self.admit("c1", trunk="unknown", connection="v9"))
        self.assertIsNone(self.successResultOf(self.limiter.admit_attempt("c1", "0", "v9")))
        self.assertEqual(self.limiter.held(), {})
        self.successResultOf(self.limiter.call_ended("c1"))
        self.assertEqual(self.manual.released, [])
        self.assertEqual(self.limiter._calls, {})

    def test_call_ends_during_admission(self) -> None:
        """The call ends while its admission is in flight: once granted,
        the keys are released at once."""
        self.manual.hold = True
        d = self.limiter.admit_call("c1", OUTBOUND, trunk="t1")
        a = self.limiter.admit_attempt("c1", "0", "v1")
        self.successResultOf(self.limiter.call_ended("c1"))
        self.assertNoResult(d)
        self.manual.land()
        self.assertIsNone(self.successResultOf(d))
        self.assertIsNone(self.successResultOf(a))
        self.successResultOf(self.assertAllZero())

    def test_attempt_ends_during_admission(self) -> None:
        """An attempt that ends (or loses to another fork) while its
        admission is in flight is released when it lands."""
        self.admit("c1", trunk="t1")
        self.manual.hold = True
        a0 = self.limiter.admit_attempt("c1", "0", "v1")
        a1 = self.limiter.admit_attempt("c1", "1", "v2")
        a2 = self.limiter.admit_attempt("c1", "2", "v2")
        self.successResultOf(self.limiter.attempt_ended("c1", "0"))
        self.successResultOf(self.limiter.call_answered("c1", "2"))
        self.manual.land()
        for d in (a0, a1, a2):
            self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.current(CONNECTION, "v1"), (0, 0))
        self.assertEqual(self.current(CONNECTION, "v2"), (0, 1))
        self.assertEqual(sorted(self.limiter.held()), ["c1", "c1#2"])
        self.successResultOf(self.limiter.call_ended("c1"))
        self.successResultOf(self.assertAllZero())

    def test_hook_timeout_cancels(self) -> None:
        """The core cancels an admission that takes too long (hook timeout):
        the keys it gets later are still tracked and released."""
        self.manual.hold = True
        d = self.limiter.admit_call("c1", OUTBOUND, trunk="t1")
        d.cancel()
        self.failureResultOf(d)
        self.manual.land()
        self.assertEqual(self.current(TRUNK, "t1"), (0, 1))
        self.assertEqual(list(self.limiter.held()), ["c1"])
        self.successResultOf(self.limiter.call_ended("c1"))
        self.successResultOf(self.assertAllZero())

    def test_admission_after_end(self) -> None:
        """An admission of a call that already ended acquires nothing."""
        self.successResultOf(self.limiter.call_ended("c1"))
        self.assertIsNone(self.admit("c1", trunk="t1"))
        self.assertIsNone(self.successResultOf(self.limiter.admit_attempt("c1", "0", "v1")))
        self.successResultOf(self.assertAllZero())
        self.clock.advance(LEASE)
        self.successResultOf(self.limiter.call_ended("other"))
        self.assertNotIn("c1", self.limiter._ended)

    def test_admission_idempotent(self) -> None:
        """Admitting the same call, or attempt, again holds nothing more."""
        self.admit("c1", trunk="t1")
        self.admit("c1", trunk="t1")
        self.successResultOf(self.limiter.admit_attempt("c1", "0", "v1"))
        self.successResultOf(self.limiter.admit_attempt("c1", "0", "v1"))
        self.assertEqual(self.current(TRUNK, "t1"), (0, 1))
        self.assertEqual(self.current(CONNECTION, "v1"), (0, 1))

    def test_direction(self) -> None:
        """The first admission's direction is the call's; a bad one is a
        programming error."""
        self.admit("c1", trunk="t1", direction=INBOUND)
        self.successResultOf(self.limiter.admit_attempt("c1", "0", "v1"))
        self.assertEqual(self.current(CONNECTION, "v1"), (1, 0))
        self.assertRaises(ValueError, self.limiter.admit_call, "c2", "both", trunk="t1")

    def test_store_down_allows(self) -> None:
        """With the store down, calls are admitted (C{on_store_error =
        "allow"}), counted as errors, and counted in the store by the first
        renewal once it is back."""
        self.manual.failing = {"acquire", "renew"}
        self.assertIsNone(self.admit("c1", trunk="t1"))
        self.assertEqual(self.sample("b2bua_trunk_limit_store_errors_total",
                                     operation="acquire"), 1)
        self.assertEqual(len(self.flushLoggedErrors(ConnectionError)), 1)
        self.assertEqual(self.successResultOf(self.limiter.renew()), 0)
        self.assertEqual(self.sample("b2bua_trunk_limit_store_errors_total",
                                     operation="renew"), 1)
        self.flushLoggedErrors(TimeoutError)
        self.manual.failing = set()
        self.assertEqual(self.current(TRUNK, "t1"), (0, 0))
        self.assertEqual(self.successResultOf(self.limiter.renew()), 1)
        self.assertEqual(self.sample("b2bua_trunk_limit_restored_total"), 1)
        self.assertEqual(self.current(TRUNK, "t1"), (0, 1))
        self.successResultOf(self.limiter.call_ended("c1"))
        self.successResultOf(self.assertAllZero())

    def test_store_down_rejects(self) -> None:
        """With C{on_store_error = "reject"}, a call the store cannot admit
        gets 503, and whatever the store may have applied is released."""
        limiter = self.make_limiter(settings=LimitSettings(on_store_error="reject"))
        self.manual.failing = {"acquire"}
        reject = self.successResultOf(limiter.admit_call("c1", OUTBOUND, trunk="t1"))
        self.assertEqual((reject.code, reject.headers), (503, (
            ("Retry-After", "5"), ("Reason", 'Q.850;cause=41;text="call limits unavailable"'))))
        self.flushLoggedErrors(ConnectionError)
        self.assertEqual([c for c, _ in self.manual.released], ["c1"])
        self.assertEqual(limiter.held(), {})

    def test_release_failure(self) -> None:
        """A release that fails is counted and logged; the lease then ends
        the membership."""
        self.admit("c1", trunk="t1")
        self.manual.failing = {"release"}
        self.successResultOf(self.limiter.call_ended("c1"))
        self.flushLoggedErrors(ConnectionError)
        self.assertEqual(self.sample("b2bua_trunk_limit_store_errors_total",
                                     operation="release"), 1)
        self.assertEqual(self.limiter.held(), {})
        self.clock.advance(LEASE)
        self.manual.failing = set()
        self.successResultOf(self.assertAllZero())

    def test_renewal_loop(self) -> None:
        """Started, the limiter renews every C{renew_interval} on the clock,
        so its calls outlive many leases; stopped, it leaves no delayed
        call, and its calls' leases run out."""
        self.admit("c1", trunk="t1")
        self.successResultOf(self.limiter.admit_attempt("c1", "0", "v1"))
        self.limiter.start()
        self.limiter.start()
        for _ in range(10):
            self.clock.advance(20)
        self.assertEqual(self.current(TRUNK, "t1"), (0, 1))
        self.assertEqual(self.current(CONNECTION, "v1"), (0, 1))
        self.assertEqual(self.sample("b2bua_trunk_limit_held_calls"), 1)
        self.limiter.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(LEASE)
        self.assertEqual(self.current(TRUNK, "t1"), (0, 0))

    def test_renewal_survives_failures(self) -> None:
        """A failed renewal is counted and the loop goes on."""
        self.admit("c1", trunk="t1")
        self.limiter.start()
        self.manual.failing = {"renew"}
        self.clock.advance(20)
        self.flushLoggedErrors(TimeoutError)
        self.manual.failing = set()
        self.clock.advance(20)
        self.assertEqual(self.sample("b2bua_trunk_limit_store_errors_total",
                                     operation="renew"), 1)
        self.clock.advance(30)
        self.assertEqual(self.current(TRUNK, "t1"), (0, 1))

    def test_reconciliation(self) -> None:
        """A call the switch no longer has (an end the plugin missed) is
        released after two renewals, and counted."""
        live = {"c1", "c2"}
        limiter = self.make_limiter(live_calls=lambda: live)
        for call in ("c1", "c2"):
            self.successResultOf(limiter.admit_call(call, OUTBOUND, trunk="t2"))
        live.discard("c2")
        self.successResultOf(limiter.renew())
        self.assertEqual(self.current(TRUNK, "t2"), (0, 2))
        self.successResultOf(limiter.renew())
        self.assertEqual(self.current(TRUNK, "t2"), (0, 1))
        self.assertEqual(list(limiter.held()), ["c1"])
        self.assertEqual(limiter.registry.get_sample_value(
            "b2bua_trunk_limit_stale_calls_total"), 1)


class ProvisionedLimitsTests(SynchronousTestCase):
    """L{provisioned_limits} and L{limits_from_row}."""

    class Directory:
        """Trunk 4 with limits, connection 7 without; nothing else."""

        def trunk(self, id: int) -> dict[str, Any] | None:
            """Trunk 4 only."""
            return {"id": 4, "max_calls": 10, "max_calls_in": 4, "max_calls_out": 8,
                    "max_cps": 2} if id == 4 else None

        def connection(self, id: int) -> dict[str, Any] | None:
            """Connection 7 only, with its limit columns at 0."""
            return {"id": 7, "max_calls": 0, "max_cps": None} if id == 7 else None

    def test_lookup(self) -> None:
        """Rows give their limits (missing or empty columns: unlimited);
        entities not provisioned, or with ids that are not row ids, are not
        limited."""
        lookup = provisioned_limits(self.Directory())
        self.assertEqual(lookup(TRUNK, "4"), Limits(total=10, inbound=4, outbound=8, cps=2))
        self.assertEqual(lookup(CONNECTION, "7"), Limits())
        for kind, id in ((TRUNK, "7"), (CONNECTION, "4"), (TRUNK, "x4"), (TRUNK, "-4")):
            self.assertIsNone(lookup(kind, id))

    def test_limiter_on_provisioning(self) -> None:
        """A limiter reading provisioning refuses the 11th call of trunk 4."""
        clock = task.Clock()
        limiter = CallLimiter(MemoryCallLimitStore(clock), clock, CollectorRegistry(),
                              provisioned_limits(self.Directory()))
        for i in range(8):
            clock.advance(1)
            self.assertIsNone(self.successResultOf(limiter.admit_call(f"c{i}", OUTBOUND, "4")))
        reject = self.successResultOf(limiter.admit_call("c8", OUTBOUND, "4"))
        self.assertEqual(reject.code, 503)
        self.assertIsNone(self.successResultOf(limiter.admit_call("c9", INBOUND, "4")))


class SettingsTests(SynchronousTestCase):
    """L{LimitSettings.from_settings}."""

    def test_defaults(self) -> None:
        """An empty table gives the defaults."""
        self.assertEqual(LimitSettings.from_settings({}), LimitSettings())
        self.assertEqual((LimitSettings().reject_code, LimitSettings().lease), (503, 60.0))

    def test_values(self) -> None:
        """Every key is read; a lease alone sets the renewal to a third."""
        got = LimitSettings.from_settings({"reject_code": 480, "retry_after": 10,
                                           "lease": 90, "on_store_error": "reject"})
        self.assertEqual(got, LimitSettings(480, 10, 90, 30.0, "reject"))

    def test_errors_name_the_key(self) -> None:
        """A bad table fails with one line naming the key."""
        for table, key in (({"reject_code": 486}, "reject_code"),
                           ({"retry_after": 0}, "retry_after"),
                           ({"retry_after": "5"}, "retry_after"),
                           ({"lease": 0.5}, "lease"),
                           ({"lease": 30, "renew_interval": 20}, "renew_interval"),
                           ({"on_store_error": "ignore"}, "on_store_error"),
                           ({"limit": 3}, "limit")):
            with self.assertRaises(SettingsError) as caught:
                LimitSettings.from_settings(table, "plugins.trunking.limits")
            self.assertTrue(str(caught.exception).startswith(f"plugins.trunking.limits.{key}:"),
                            str(caught.exception))


class LimiterStateMachine(RuleBasedStateMachine):
    """Random call life cycles through a L{CallLimiter} on a memory store:
    after every step each entity's counts equal the calls the limiter
    holds on it (which equal the model's), never exceed the limits, and at
    the end every count is back at zero."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.store = MemoryCallLimitStore(self.clock, lease=LEASE)
        self.limiter = CallLimiter(self.store, self.clock, CollectorRegistry(), lookup)
        self.limiter.start()
        #: call -> (direction, trunk or None, {attempt: connection}) admitted
        self.model: dict[str, tuple[str, str | None, dict[str, str]]] = {}
        self.serial = 0

    def _result(self, d: Deferred[Any]) -> Any:
        box: list[Any] = []
        d.addBoth(box.append)
        assert box, "the memory store answers at once"
        return box[0]

    @rule(direction=st.sampled_from([INBOUND, OUTBOUND]),
          trunk=st.sampled_from(["t1", "t2", "none"]))
    def new_call(self, direction: str, trunk: str) -> None:
        """A call arrives on a trunk."""
        self.serial += 1
        call = f"call-{self.serial}"
        reject = self._result(self.limiter.admit_call(call, direction, trunk=trunk))
        if reject is None:
            self.model[call] = (direction, trunk if lookup(TRUNK, trunk) else None, {})
        else:
            assert isinstance(reject, Reject)
            self._result(self.limiter.call_ended(call))

    @precondition(lambda self: self.model)
    @rule(data=st.data(), vendor=st.sampled_from(["v1", "v2", "v9"]))
    def attempt(self, data: st.DataObject, vendor: str) -> None:
        """An attempt of a call goes to a vendor."""
        call = data.draw(st.sampled_from(sorted(self.model)))
        direction, _, attempts = self.model[call]
        self.serial += 1
        attempt = f"a{self.serial}"
        reject = self._result(self.limiter.admit_attempt(call, attempt, vendor, direction))
        if reject is None and lookup(CONNECTION, vendor):
            attempts[attempt] = vendor

    @precondition(lambda self: any(attempts for _, _, attempts in self.model.values()))
    @rule(data=st.data())
    def attempt_fails(self, data: st.DataObject) -> None:
        """An attempt fails (busy, timeout, error)."""
        call = data.draw(st.sampled_from(sorted(c for c, m in self.model.items() if m[2])))
        attempt = data.draw(st.sampled_from(sorted(self.model[call][2])))
        self._result(self.limiter.attempt_ended(call, attempt))
        del self.model[call][2][attempt]

    @precondition(lambda self: any(attempts for _, _, attempts in self.model.values()))
    @rule(data=st.data())
    def answered(self, data: st.DataObject) -> None:
        """An attempt answers: the other forks are released."""
        call = data.draw(st.sampled_from(sorted(c for c, m in self.model.items() if m[2])))
        attempt = data.draw(st.sampled_from(sorted(self.model[call][2])))
        self._result(self.limiter.call_answered(call, attempt))
        attempts = self.model[call][2]
        for other in [a for a in attempts if a != attempt]:
            del attempts[other]

    @precondition(lambda self: self.model)
    @rule(data=st.data(), twice=st.booleans())
    def ended(self, data: st.DataObject, twice: bool) -> None:
        """A call ends (BYE, CANCEL, a crash...), perhaps reported twice."""
        call = data.draw(st.sampled_from(sorted(self.model)))
        for _ in range(2 if twice else 1):
            self._result(self.limiter.call_ended(call))
        del self.model[call]

    @rule(seconds=st.sampled_from([0.2, 1, 7, 25]))
    def time_passes(self, seconds: float) -> None:
        """Time passes; the renewal loop runs."""
        self.clock.advance(seconds)

    @invariant()
    def counts_are_live_calls(self) -> None:
        """Every count equals the calls holding it, within its limits."""
        for kind, id in ENTITIES:
            expect = {INBOUND: 0, OUTBOUND: 0}
            for direction, trunk, attempts in self.model.values():
                held = trunk == id if kind == TRUNK else list(attempts.values()).count(id)
                expect[direction] += int(held)
            got = self._result(self.store.usage(kind, id))
            assert (got.inbound, got.outbound) == (expect[INBOUND], expect[OUTBOUND]), (
                kind, id, got, expect)
            limits = PROVISIONED[(kind, id)]
            for limit, value in ((limits.total, got.total), (limits.inbound, got.inbound),
                                 (limits.outbound, got.outbound)):
                assert not limit or value <= limit, (kind, id, got)

    def teardown(self) -> None:
        """End every call: every count is zero and nothing is held."""
        for call in list(self.model):
            self._result(self.limiter.call_ended(call))
        self.limiter.stop()
        for kind, id in ENTITIES:
            got = self._result(self.store.usage(kind, id))
            assert got.total == 0, (kind, id, got)
        assert self.limiter.held() == {}
        assert self.clock.getDelayedCalls() == []


class LimiterStateMachineTests(SynchronousTestCase):
    """Runs L{LimiterStateMachine}."""

    def test_counts_follow_live_calls(self) -> None:
        """Random call life cycles keep every count equal to the live calls
        and end at zero."""
        run_state_machine_as_test(LimiterStateMachine, settings=hypothesis_settings(
            max_examples=60, stateful_step_count=40, deadline=None, database=None))
