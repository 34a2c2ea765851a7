"""The contract of L{ICallLimitStore}, run against every implementation.

L{LimitStoreContract} runs against L{MemoryCallLimitStore} always and
against L{RedisCallLimitStore} when C{REDIS_URL} is set (skipped without
it, failing under C{CI=true}: L{tests.trial.redis_support}).  The store's
clock is a L{task.Clock}, so nothing sleeps; the Redis tests use the real
reactor for the connection only, a unique key prefix per test, and remove
their keys afterwards.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, maybeDeferred
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from b2bua.core.location_redis import redis_connection_args
from plugins.trunking import limits_redis
from plugins.trunking.limits import (
    CONNECTION,
    INBOUND,
    OUTBOUND,
    TRUNK,
    ICallLimitStore,
    LimitError,
    LimitKey,
    Limits,
    MemoryCallLimitStore,
    Refusal,
    Usage,
)
from plugins.trunking.limits_redis import RedisCallLimitStore
from tests.trial.redis_support import REDIS_URL, redis_skip, require_redis_url

T0 = 1_700_000_000.0
LEASE = 60.0
CALL = "a84b4c76e66710@pc33.example.com"


def trunk(direction: str = OUTBOUND, id: str = "42", **limits: int) -> LimitKey:
    """A key of customer trunk C{id}."""
    return LimitKey(TRUNK, id, direction, Limits(**limits))


def connection(direction: str = OUTBOUND, id: str = "7", **limits: int) -> LimitKey:
    """A key of vendor connection C{id}."""
    return LimitKey(CONNECTION, id, direction, Limits(**limits))


class LimitStoreContract:
    """The L{ICallLimitStore} contract; mixed into a trial C{TestCase} whose
    C{make_store()} returns a fresh, empty store (or a Deferred of one)
    with a lease of L{LEASE} seconds on C{self.clock}."""

    clock: task.Clock
    store: ICallLimitStore

    def make_store(self) -> ICallLimitStore | Deferred[ICallLimitStore]:
        """Build the store under test."""
        raise NotImplementedError

    @inlineCallbacks
    def setUp(self) -> Any:
        """A fresh store with a fake clock at L{T0}."""
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.store = yield maybeDeferred(self.make_store)

    @inlineCallbacks
    def assertUsage(self, key: LimitKey, inbound: int, outbound: int,
                    attempts: int | None = None) -> Any:
        """The entity of C{key} has these live calls (and attempts)."""
        got = yield self.store.usage(key.kind, key.id)
        self.assertEqual((got.kind, got.id, got.inbound, got.outbound),
                         (key.kind, key.id, inbound, outbound))
        if attempts is not None:
            self.assertEqual(got.attempts, attempts)

    @inlineCallbacks
    def admit(self, call_id: str, *keys: LimitKey) -> Any:
        """Acquire and check that it was granted."""
        admission = yield self.store.acquire(call_id, list(keys))
        self.assertTrue(admission.granted, admission.refusal)
        self.assertIsNone(admission.refusal)

    @inlineCallbacks
    def refused(self, call_id: str, *keys: LimitKey) -> Any:
        """Acquire and check that it was refused; the L{Refusal}."""
        admission = yield self.store.acquire(call_id, list(keys))
        self.assertFalse(admission.granted)
        return admission.refusal

    def test_provides_interface(self) -> None:
        """The store provides L{ICallLimitStore} with the lease it was given."""
        self.assertTrue(verifyObject(ICallLimitStore, self.store))
        self.assertEqual(self.store.lease, LEASE)

    # -- concurrency -------------------------------------------------------------

    @inlineCallbacks
    def test_total_limit(self) -> Any:
        """A trunk admits calls up to its total, in either direction, then
        refuses with the key, the limit, the count and no retry time."""
        out, inbound = trunk(total=3), trunk(INBOUND, total=3)
        yield self.admit("c1", out)
        yield self.admit("c2", inbound)
        yield self.admit("c3", out)
        refusal = yield self.refused("c4", inbound)
        self.assertEqual(refusal, Refusal(inbound, "total", 3, 3, None))
        self.assertEqual(refusal.key.limits, Limits(total=3))
        yield self.assertUsage(out, 1, 2, attempts=3)

    @inlineCallbacks
    def test_direction_limits(self) -> Any:
        """Inbound and outbound limits are separate; the total covers both."""
        out, inbound = trunk(outbound=2, inbound=1, total=4), trunk(INBOUND, outbound=2,
                                                                     inbound=1, total=4)
        yield self.admit("o1", out)
        yield self.admit("o2", out)
        self.assertEqual((yield self.refused("o3", out)), Refusal(out, "out", 2, 2))
        yield self.admit("i1", inbound)
        self.assertEqual((yield self.refused("i2", inbound)), Refusal(inbound, "in", 1, 1))
        yield self.assertUsage(out, 1, 2)

    @inlineCallbacks
    def test_total_checked_before_direction(self) -> Any:
        """A call over both the total and its direction's limit is refused
        for the total."""
        key = trunk(total=1, outbound=1)
        yield self.admit("c1", key)
        self.assertEqual((yield self.refused("c2", key)).limit, "total")

    @inlineCallbacks
    def test_zero_is_unlimited(self) -> Any:
        """Limits of 0 admit everything (and still count)."""
        key = trunk()
        for i in range(30):
            yield self.admit(f"c{i}", key)
        yield self.assertUsage(key, 0, 30, attempts=30)

    @inlineCallbacks
    def test_entities_separate(self) -> Any:
        """A trunk and a connection with the same id, and two trunks, count
        apart."""
        yield self.admit("c1", trunk(total=1), connection(id="42", total=1))
        yield self.admit("c2", trunk(id="43", total=1))
        yield self.assertUsage(trunk(), 0, 1)
        yield self.assertUsage(connection(id="42"), 0, 1)
        yield self.assertUsage(trunk(id="43"), 0, 1)

    @inlineCallbacks
    def test_lowered_limit(self) -> Any:
        """Limits come with each request: lowering one below the count
        evicts no one, and refuses new calls until the count is below."""
        yield self.admit("c1", trunk(total=5))
        yield self.admit("c2", trunk(total=5))
        refusal = yield self.refused("c3", trunk(total=1))
        self.assertEqual((refusal.current, refusal.maximum), (2, 1))
        yield self.store.release("c1", [trunk()])
        yield self.store.release("c2", [trunk()])
        yield self.admit("c3", trunk(total=1))

    # -- atomicity ---------------------------------------------------------------

    @inlineCallbacks
    def test_atomic_refusal(self) -> Any:
        """When one key refuses, the call joins none: the keys before it
        are untouched, counts and attempt windows alike."""
        full = connection(total=1)
        yield self.admit("other", full)
        keys = [trunk(total=5, cps=5), connection(id="8", total=5), full, trunk(id="9")]
        refusal = yield self.refused(CALL, *keys)
        self.assertEqual((refusal.key, refusal.limit), (full, "total"))
        yield self.assertUsage(trunk(), 0, 0, attempts=0)
        yield self.assertUsage(connection(id="8"), 0, 0, attempts=0)
        yield self.assertUsage(trunk(id="9"), 0, 0, attempts=0)
        yield self.assertUsage(full, 0, 1, attempts=1)
        self.assertEqual([u.id for u in (yield self.store.snapshot())], ["7"])

    @inlineCallbacks
    def test_first_refusing_key_reported(self) -> Any:
        """With several keys over their limits, the first in order is
        reported."""
        a, b = trunk(total=1), connection(total=1)
        yield self.admit("x", a, b)
        self.assertEqual((yield self.refused("y", b, a)).key, b)
        self.assertEqual((yield self.refused("y", a, b)).key, a)

    @inlineCallbacks
    def test_all_keys_joined(self) -> Any:
        """A granted call counts on every key, each in its direction."""
        yield self.admit(CALL, trunk(INBOUND), connection(INBOUND, id="1"), connection(id="2"))
        yield self.assertUsage(trunk(), 1, 0, attempts=1)
        yield self.assertUsage(connection(id="1"), 1, 0, attempts=1)
        yield self.assertUsage(connection(id="2"), 0, 1, attempts=1)

    # -- CPS ---------------------------------------------------------------------

    @inlineCallbacks
    def test_cps_window(self) -> Any:
        """At most C{cps} attempts in any one-second window: the next is
        refused until the oldest attempt leaves the window, and the refusal
        says when that is."""
        key = trunk(cps=3)
        yield self.admit("c1", key)
        self.clock.advance(0.25)
        yield self.admit("c2", key)
        self.clock.advance(0.25)
        yield self.admit("c3", key)
        refusal = yield self.refused("c4", key)
        self.assertEqual((refusal.limit, refusal.current, refusal.maximum), ("cps", 3, 3))
        self.assertAlmostEqual(refusal.retry_after, 0.5)
        self.clock.advance(0.499)
        self.assertAlmostEqual((yield self.refused("c4", key)).retry_after, 0.001)
        self.clock.advance(0.001)
        yield self.admit("c4", key)
        self.assertAlmostEqual((yield self.refused("c5", key)).retry_after, 0.25)
        yield self.assertUsage(key, 0, 4, attempts=3)

    @inlineCallbacks
    def test_cps_counts_attempts(self) -> Any:
        """Released calls still count in the window (they were attempts);
        refused ones do not."""
        key = trunk(cps=2)
        yield self.admit("c1", key)
        yield self.store.release("c1", [key])
        yield self.admit("c2", key)
        yield self.refused("c3", key)
        yield self.assertUsage(key, 0, 1, attempts=2)
        self.clock.advance(1)
        yield self.assertUsage(key, 0, 1, attempts=0)
        yield self.admit("c3", key)

    @inlineCallbacks
    def test_cps_refusal_leaves_other_windows(self) -> Any:
        """A CPS refusal on a connection leaves the trunk's window alone: a
        failover attempt on another connection then counts as an attempt
        there, and the trunk's call once."""
        busy = connection(cps=1)
        yield self.admit("other", busy)
        key = trunk(cps=1)
        yield self.refused(CALL, key, busy)
        yield self.admit(CALL, key, connection(id="8", cps=1))
        yield self.assertUsage(key, 0, 1, attempts=1)
        yield self.assertUsage(connection(id="8"), 0, 1, attempts=1)

    @inlineCallbacks
    def test_cps_lowered_below_window(self) -> Any:
        """With more attempts in the window than a lowered limit allows, the
        retry time is when enough of them have left."""
        for i, at in enumerate((0.0, 0.1, 0.2, 0.3)):
            self.clock.advance(at - (self.clock.seconds() - T0))
            yield self.admit(f"c{i}", trunk())
        refusal = yield self.refused("late", trunk(cps=2))
        self.assertEqual((refusal.current, refusal.maximum), (4, 2))
        self.assertAlmostEqual(refusal.retry_after, 0.9)

    # -- idempotence and release -------------------------------------------------

    @inlineCallbacks
    def test_acquire_idempotent(self) -> Any:
        """Acquiring again what the call holds is granted without counting
        it twice, checking limits or recording an attempt, even when only
        some of the keys are new."""
        key = trunk(total=1, cps=1)
        yield self.admit(CALL, key)
        yield self.admit(CALL, key)
        yield self.admit(CALL, key, connection())
        yield self.assertUsage(key, 0, 1, attempts=1)
        yield self.assertUsage(connection(), 0, 1, attempts=1)

    @inlineCallbacks
    def test_release(self) -> Any:
        """Release removes the call from the keys given, in both directions,
        and says how many memberships went; again, nothing changes."""
        yield self.admit(CALL, trunk(total=1), connection())
        self.assertEqual((yield self.store.release(CALL, [trunk(INBOUND), connection()])), 2)
        self.assertEqual((yield self.store.release(CALL, [trunk(), connection()])), 0)
        yield self.assertUsage(trunk(), 0, 0)
        yield self.admit("next", trunk(total=1))

    @inlineCallbacks
    def test_release_some(self) -> Any:
        """Releasing the connection (a failed attempt) keeps the trunk."""
        yield self.admit(CALL, trunk(), connection())
        yield self.store.release(CALL, [connection()])
        yield self.assertUsage(trunk(), 0, 1)
        yield self.assertUsage(connection(), 0, 0)

    @inlineCallbacks
    def test_release_unknown(self) -> Any:
        """Releasing a call never admitted, or from an unknown entity, does
        nothing and never drives a count below zero."""
        yield self.admit("c1", trunk())
        self.assertEqual((yield self.store.release("nobody", [trunk(), connection()])), 0)
        self.assertEqual((yield self.store.release("c1", [])), 0)
        yield self.assertUsage(trunk(), 0, 1)

    # -- leases ------------------------------------------------------------------

    @inlineCallbacks
    def test_lease_expiry(self) -> Any:
        """A call nobody renews (its node crashed) stops counting when its
        lease runs out, and its slot admits another call."""
        key = trunk(total=1)
        yield self.admit("crashed", key)
        self.clock.advance(LEASE - 0.001)
        yield self.assertUsage(key, 0, 1)
        yield self.refused("new", key)
        self.clock.advance(0.001)
        yield self.assertUsage(key, 0, 0)
        yield self.admit("new", key)
        self.assertEqual([(u.id, u.total) for u in (yield self.store.snapshot())], [("42", 1)])

    @inlineCallbacks
    def test_renew_keeps_calls(self) -> Any:
        """A renewed call outlives its first lease; a surviving node renews
        its own calls only, so a crashed node's calls go and its calls
        stay."""
        key = trunk(total=3)
        yield self.admit("mine", key, connection())
        yield self.admit("theirs", key)
        for _ in range(3):
            self.clock.advance(LEASE / 2)
            restored = yield self.store.renew({"mine": [key, connection()]})
            self.assertEqual(restored, 0)
        yield self.assertUsage(key, 0, 1)
        yield self.assertUsage(connection(), 0, 1)
        self.assertEqual((yield self.store.release("mine", [key, connection()])), 2)

    @inlineCallbacks
    def test_acquire_renews_held(self) -> Any:
        """Acquiring a held key again gives it a fresh lease."""
        yield self.admit(CALL, trunk())
        self.clock.advance(LEASE - 1)
        yield self.admit(CALL, trunk())
        self.clock.advance(LEASE - 1)
        yield self.assertUsage(trunk(), 0, 1)

    @inlineCallbacks
    def test_renew_restores(self) -> Any:
        """A live call the store lost (lease run out, a released membership,
        a Redis failover) is added back by the next renewal, over the
        limit if need be, and counted as restored."""
        key = trunk(total=1)
        yield self.admit("c1", key)
        self.clock.advance(LEASE)
        yield self.admit("c2", key)
        restored = yield self.store.renew({"c1": [key], "c2": [key], "c3": [connection()]})
        self.assertEqual(restored, 2)
        yield self.assertUsage(key, 0, 2, attempts=1)
        yield self.assertUsage(connection(), 0, 1, attempts=0)
        self.assertEqual((yield self.store.renew({"c1": [key]})), 0)

    @inlineCallbacks
    def test_renew_nothing(self) -> Any:
        """Renewing no call changes nothing."""
        self.assertEqual((yield self.store.renew({})), 0)
        self.assertEqual((yield self.store.renew({"c": []})), 0)
        self.assertEqual((yield self.store.snapshot()), [])

    # -- reading -----------------------------------------------------------------

    @inlineCallbacks
    def test_usage_unknown(self) -> Any:
        """An entity never seen has zeros."""
        got = yield self.store.usage(CONNECTION, "nothing")
        self.assertEqual(got, Usage(CONNECTION, "nothing", 0, 0, 0))
        self.assertEqual(got.total, 0)

    @inlineCallbacks
    def test_snapshot(self) -> Any:
        """The snapshot lists every entity with a live call or a recent
        attempt, sorted by kind and id; entities left with neither drop
        out."""
        yield self.admit("c1", trunk(id="b"), connection(id="z"))
        yield self.admit("c2", trunk(INBOUND, id="a"))
        yield self.store.release("c2", [trunk(id="a")])
        self.assertEqual((yield self.store.snapshot()), [
            Usage(CONNECTION, "z", 0, 1, 1), Usage(TRUNK, "a", 0, 0, 1),
            Usage(TRUNK, "b", 0, 1, 1)])
        self.clock.advance(1)
        self.assertEqual([u.id for u in (yield self.store.snapshot())], ["z", "b"])
        self.clock.advance(LEASE)
        self.assertEqual((yield self.store.snapshot()), [])

    @inlineCallbacks
    def test_bad_requests(self) -> Any:
        """Malformed requests fail with L{LimitError} and change nothing."""
        yield self.assertFailure(self.store.acquire("", [trunk()]), LimitError)
        yield self.assertFailure(self.store.acquire("a b", [trunk()]), LimitError)
        yield self.assertFailure(self.store.acquire("x" * 1025, [trunk()]), LimitError)
        yield self.assertFailure(self.store.acquire(CALL, [trunk(), trunk(INBOUND)]), LimitError)
        yield self.assertFailure(self.store.acquire(CALL, ["trunk:42"]), LimitError)  # type: ignore[list-item]
        yield self.assertFailure(self.store.release("a\nb", [trunk()]), LimitError)
        yield self.assertFailure(self.store.renew({"": [trunk()]}), LimitError)
        yield self.assertFailure(self.store.usage("vendor", "1"), LimitError)
        self.assertEqual((yield self.store.snapshot()), [])

    def test_bad_keys(self) -> None:
        """Keys and limits check themselves."""
        for bad in ({"kind": "vendor"}, {"direction": "both"}, {"id": ""}, {"id": "a b"},
                    {"id": 42}):
            args = {"kind": TRUNK, "id": "1", "direction": OUTBOUND, **bad}
            self.assertRaises(LimitError, LimitKey, **args)
        for bad_limit in ({"total": -1}, {"cps": 1.5}, {"inbound": True}):
            self.assertRaises(LimitError, Limits, **bad_limit)
        self.assertRaises(LimitError, LimitKey, TRUNK, "1", OUTBOUND, {"total": 1})

    # -- a random walk -----------------------------------------------------------

    @inlineCallbacks
    def test_random_sequence(self) -> Any:
        """A seeded random walk of acquires, releases, renewals and clock
        steps over two trunks and three connections: after every step each
        count equals the calls a model says are live (admitted, not
        released, lease not run out), and stays within its limits."""
        rng = random.Random(20240611)
        entities = [(TRUNK, "t1", Limits(total=4, outbound=3, inbound=2, cps=5)),
                    (TRUNK, "t2", Limits(total=3)),
                    (CONNECTION, "v1", Limits(total=2, cps=3)),
                    (CONNECTION, "v2", Limits(outbound=2)),
                    (CONNECTION, "v3", Limits())]
        model: dict[str, dict[tuple[str, str], tuple[str, int]]] = {}
        lease_ms = int(LEASE * 1000)
        for step in range(150):
            now = round(self.clock.seconds() * 1000)
            action = rng.random()
            if action < 0.45:
                call = f"call-{step}"
                direction = rng.choice([INBOUND, OUTBOUND])
                chosen = rng.sample(entities, rng.randint(1, 3))
                keys = [LimitKey(kind, id, direction, limits) for kind, id, limits in chosen]
                admission = yield self.store.acquire(call, keys)
                if admission.granted:
                    model[call] = {(k.kind, k.id): (k.direction, now + lease_ms) for k in keys}
            elif action < 0.75 and model:
                call = rng.choice(sorted(model))
                held = model.pop(call)
                yield self.store.release(call, [LimitKey(kind, id, direction) for (kind, id), (
                    direction, _) in held.items()])
            elif action < 0.85:
                renewed = {call: held for call, held in model.items() if rng.random() < 0.7}
                yield self.store.renew({call: [LimitKey(kind, id, direction)
                                               for (kind, id), (direction, _) in held.items()]
                                        for call, held in renewed.items()})
                for held in renewed.values():
                    for entity, (direction, _) in held.items():
                        held[entity] = (direction, now + lease_ms)
            else:
                self.clock.advance(rng.choice([0.1, 0.5, 1, 5, 20]))
            now = round(self.clock.seconds() * 1000)
            for held in model.values():
                for entity in [e for e, (_, expiry) in held.items() if expiry <= now]:
                    del held[entity]
            for kind, id, limits in entities:
                got = yield self.store.usage(kind, id)
                expect = {INBOUND: 0, OUTBOUND: 0}
                for held in model.values():
                    if (kind, id) in held:
                        expect[held[(kind, id)][0]] += 1
                self.assertEqual((got.inbound, got.outbound), (expect[INBOUND], expect[OUTBOUND]),
                                 f"step {step}: {kind}:{id}")
                for limit, value in ((limits.total, got.total), (limits.inbound, got.inbound),
                                     (limits.outbound, got.outbound), (limits.cps, got.attempts)):
                    if limit:
                        self.assertLessEqual(value, limit)


class MemoryCallLimitStoreTests(LimitStoreContract, TestCase):
    """The contract against L{MemoryCallLimitStore}, plus its memory bound."""

    def make_store(self) -> ICallLimitStore:
        """A memory store on the fake clock."""
        return MemoryCallLimitStore(self.clock, lease=LEASE)

    @inlineCallbacks
    def test_forgets_idle_entities(self) -> Any:
        """Entities with nothing left to count take no memory."""
        yield self.admit(CALL, trunk(), connection())
        yield self.store.release(CALL, [trunk(), connection()])
        self.clock.advance(1)
        yield self.store.snapshot()
        self.assertEqual(self.store._entities, {})  # type: ignore[attr-defined]

    def test_bad_lease(self) -> None:
        """A lease under a second is refused."""
        self.assertRaises(LimitError, MemoryCallLimitStore, self.clock, lease=0.5)


class RedisSetup:
    """Connects to C{REDIS_URL} for a Redis test case: skipped without it,
    failing under C{CI=true}; a unique key prefix, removed afterwards."""

    timeout = 30
    skip = redis_skip("Redis call limit store tests")
    clock: task.Clock

    @inlineCallbacks
    def make_store(self) -> Any:
        """Connect a pool of four and use a unique key prefix, removed after
        the test."""
        url = require_redis_url(self, "Redis call limit store tests")
        import txredisapi

        self.redis = yield txredisapi.ConnectionPool(
            poolsize=4, reconnect=False, connectTimeout=5, replyTimeout=10,
            **redis_connection_args(url))
        self.addCleanup(self.redis.disconnect)  # type: ignore[attr-defined]
        self.prefix = f"test:b2bua:lim:{uuid.uuid4().hex}:"
        self.addCleanup(self._delete_keys)  # type: ignore[attr-defined]
        return RedisCallLimitStore(self.redis, self.clock, lease=LEASE, prefix=self.prefix)

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


class RedisCallLimitStoreTests(RedisSetup, LimitStoreContract, TestCase):
    """The contract against L{RedisCallLimitStore}, plus its key layout, its
    script loading and a race between nodes."""

    @inlineCallbacks
    def test_key_layout(self) -> Any:
        """Live calls are zset members scored by lease expiry (ms), attempts
        members of the log scored by their instant, the entity is indexed;
        every key carries a TTL just beyond its lease or window."""
        yield self.admit(CALL, trunk(), connection(INBOUND))
        inbound, outbound, log = self.store.entity_keys("trunk:42")
        self.assertEqual(outbound, f"{self.prefix}{{trunk:42}}:out")
        expiry = int((T0 + LEASE) * 1000)
        self.assertEqual(int((yield self.redis.zscore(outbound, CALL))), expiry)
        self.assertEqual((yield self.redis.zcard(inbound)), 0)
        self.assertEqual(int((yield self.redis.zscore(log, f"{CALL}\n{int(T0 * 1000)}"))),
                         int(T0 * 1000))
        members = yield self.redis.smembers(self.store.index_key)
        self.assertEqual(set(members), {"trunk:42", "connection:7"})
        ttl = yield self.redis.execute_command("PTTL", outbound)
        self.assertTrue(LEASE * 1000 < ttl <= LEASE * 1000 + 1000, ttl)
        ttl = yield self.redis.execute_command("PTTL", log)
        self.assertTrue(0 < ttl <= 2000, ttl)
        yield self.store.release(CALL, [trunk(), connection()])
        self.assertFalse((yield self.redis.exists(outbound)))

    @inlineCallbacks
    def test_noscript_fallback(self) -> Any:
        """A script Redis does not know (restart, SCRIPT FLUSH) is sent with
        EVAL and then known by its SHA1."""
        import hashlib

        source = limits_redis.ACQUIRE_SCRIPT + f"\n-- {uuid.uuid4().hex}\n"
        sha = hashlib.sha1(source.encode()).hexdigest()
        self.patch(limits_redis, "_SHAS", {**limits_redis._SHAS, "acquire": sha})
        self.patch(limits_redis, "_SOURCES", {**limits_redis._SOURCES, "acquire": source})
        self.assertEqual((yield self.redis.execute_command("SCRIPT", "EXISTS", sha)), [0])
        yield self.admit(CALL, trunk())
        self.assertEqual((yield self.redis.execute_command("SCRIPT", "EXISTS", sha)), [1])

    @inlineCallbacks
    def test_nodes_race(self) -> Any:
        """Five nodes (each its own connection) race 60 admissions of one
        trunk through three connections: exactly the limits are admitted,
        and after every release each count is back at zero."""
        import txredisapi

        nodes = []
        for _ in range(5):
            link = yield txredisapi.Connection(reconnect=False, connectTimeout=5,
                                               replyTimeout=10,
                                               **redis_connection_args(REDIS_URL or ""))
            self.addCleanup(link.disconnect)
            nodes.append(RedisCallLimitStore(link, self.clock, lease=LEASE, prefix=self.prefix))
        key = trunk(total=10)
        vendors = [connection(id=str(i), total=4) for i in range(3)]
        admissions = yield gatherResults([
            nodes[i % 5].acquire(f"c{i}", [key, vendors[i % 3]]) for i in range(60)])
        granted = [f"c{i}" for i, a in enumerate(admissions) if a.granted]
        self.assertEqual(len(granted), 10)
        yield self.assertUsage(key, 0, 10)
        usages = yield gatherResults([self.store.usage(CONNECTION, v.id) for v in vendors])
        self.assertEqual(sum(u.total for u in usages), 10)
        self.assertTrue(all(u.total <= 4 for u in usages), usages)
        yield gatherResults([nodes[i % 5].release(f"c{i}", [key, vendors[i % 3]])
                             for i in range(60)])
        self.assertEqual([u.total for u in (yield self.store.snapshot())], [0, 0, 0, 0])

    @inlineCallbacks
    def test_renew_batches(self) -> Any:
        """A renewal of more calls than one script run carries is split."""
        self.patch(limits_redis, "RENEW_BATCH", 3)
        held = {f"c{i}": [trunk(), connection(id=str(i % 2))] for i in range(8)}
        self.assertEqual((yield self.store.renew(held)), 16)
        yield self.assertUsage(trunk(), 0, 8, attempts=0)
        self.assertEqual((yield self.store.renew(held)), 0)
