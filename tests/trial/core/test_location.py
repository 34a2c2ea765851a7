"""Tests for L{b2bua.core.location} and L{b2bua.core.location_redis}.

L{LocationStoreContract} is the one contract suite of L{ILocationStore}; it
runs against L{MemoryLocationStore} always and against L{RedisLocationStore}
when C{REDIS_URL} is set (e.g. C{redis://127.0.0.1:6379/0}).  Without
C{REDIS_URL} the Redis tests are skipped, except under C{CI=true}, where
they fail.  Times are explicit C{now} values, so expiry is tested without
sleeping; the Redis tests use the real reactor, a unique key prefix per
test, and remove their keys afterwards.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, maybeDeferred
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from b2bua.core.location import (
    Binding,
    ILocationStore,
    MemoryLocationStore,
    OutOfOrder,
    Received,
    TooManyBindings,
    contact_key,
    flow_key,
    normalise_aor,
    sort_bindings,
)
from b2bua.core.location_redis import RedisLocationStore, redis_connection_args
from b2bua.sip.interfaces import Source, Target
from tests.trial.redis_support import redis_skip, require_redis_url

T0 = 1_700_000_000.0
AOR = "alice@example.com"
C1 = "sip:alice@192.0.2.10:5060"
C2 = "sip:alice@192.0.2.11:5060;transport=tcp"
C3 = "sip:alice@198.51.100.7:5062"
C4 = "sips:alice@203.0.113.9"
RECEIVED = Received("UDP", "203.0.113.50", 40123, None, ("192.0.2.1", 5060))
INSTANCE = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"


def binding(contact: str, expires: float = 3600, now: float = T0, call_id: str = "cid-1",
            cseq: int = 1, aor: str = AOR, **kw: Any) -> Binding:
    """A binding as a REGISTER at C{now} asking for C{expires} makes it."""
    return Binding(aor=aor, contact=contact, expires_at=now + expires, call_id=call_id,
                   cseq=cseq, registered_at=now, **kw)


class LocationStoreContract:
    """The L{ILocationStore} contract; mixed into a trial C{TestCase} whose
    C{make_store()} returns a fresh, empty store (or a Deferred of one)
    using C{self.clock} as its clock."""

    clock: task.Clock
    store: ILocationStore

    def make_store(self) -> ILocationStore | Deferred[ILocationStore]:
        """Build the store under test."""
        raise NotImplementedError

    @inlineCallbacks
    def setUp(self) -> Any:
        """A fresh store with a fake clock at L{T0}."""
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.store = yield maybeDeferred(self.make_store)

    def update(self, changes: list[Binding], call_id: str = "cid-1", cseq: int = 1,
               now: float = T0, aor: str = AOR, **kw: Any) -> Deferred[list[Binding]]:
        """Apply C{changes} as one REGISTER would."""
        return self.store.update(aor, call_id, cseq, changes, now, **kw)

    def contacts(self, bindings: list[Binding]) -> list[str]:
        """The contacts of C{bindings}, in order."""
        return [b.contact for b in bindings]

    def test_provides_interface(self) -> None:
        """The store provides L{ILocationStore}."""
        self.assertTrue(verifyObject(ILocationStore, self.store))

    @inlineCallbacks
    def test_get_unknown(self) -> Any:
        """An AOR without bindings has none, and nothing is counted."""
        self.assertEqual((yield self.store.get(AOR, T0)), [])
        self.assertEqual((yield self.store.count(T0)), 0)

    @inlineCallbacks
    def test_add(self) -> Any:
        """A new contact is bound; update fires with it; get returns it."""
        b = binding(C1)
        self.assertEqual((yield self.update([b])), [b])
        self.assertEqual((yield self.store.get(AOR, T0 + 1)), [b])

    @inlineCallbacks
    def test_now_defaults_to_clock(self) -> Any:
        """Without C{now}, get and count use the store's clock."""
        yield self.update([binding(C1, expires=60)])
        self.assertEqual(len((yield self.store.get(AOR))), 1)
        self.clock.advance(60)
        self.assertEqual((yield self.store.get(AOR)), [])
        self.assertEqual((yield self.store.count()), 0)

    @inlineCallbacks
    def test_fields_kept(self) -> Any:
        """Every field survives storage: Path, received, instance, UA, q."""
        b = binding(C1, q=0.7, received=RECEIVED,
                    path=("<sip:edge1.example.net;lr;ob>", "<sip:edge2.example.net;lr>"),
                    instance_id=INSTANCE, reg_id=2, user_agent="Phone/1.0 (ü)")
        yield self.update([b])
        (got,) = yield self.store.get(AOR, T0)
        self.assertEqual(got, b)
        self.assertEqual(got.path, b.path)
        self.assertEqual(got.received, RECEIVED)
        self.assertEqual(got.received.target(), Target("UDP", "203.0.113.50", 40123))

    @inlineCallbacks
    def test_refresh_same_call_id(self) -> Any:
        """A higher CSeq on the same Call-ID refreshes the binding in place."""
        yield self.update([binding(C1)])
        later = binding(C1, expires=1800, now=T0 + 100, cseq=2)
        result = yield self.update([later], cseq=2, now=T0 + 100)
        self.assertEqual(result, [later])
        self.assertEqual((yield self.store.get(AOR, T0 + 1899)), [later])
        self.assertEqual((yield self.store.get(AOR, T0 + 1900)), [])

    @inlineCallbacks
    def test_refresh_other_call_id(self) -> Any:
        """Another Call-ID may refresh a binding whatever its CSeq."""
        yield self.update([binding(C1, cseq=50)], cseq=50)
        again = binding(C1, call_id="cid-2", cseq=1, now=T0 + 5)
        self.assertEqual((yield self.update([again], call_id="cid-2", now=T0 + 5)), [again])

    @inlineCallbacks
    def test_contact_uri_equivalence(self) -> Any:
        """Contacts equal under URI comparison (host and parameter case,
        escapes) are the same binding."""
        yield self.update([binding("sip:%61lice@HOST.example.com;Transport=UDP")])
        result = yield self.update(
            [binding("sip:alice@host.example.com;transport=udp", cseq=2)], cseq=2)
        self.assertEqual(self.contacts(result), ["sip:alice@host.example.com;transport=udp"])

    @inlineCallbacks
    def test_multiple_ordered_by_q(self) -> Any:
        """Several contacts of one AOR come highest q first (none = 1.0)."""
        yield self.update([binding(C1, q=0.1), binding(C2, q=0.9), binding(C3),
                           binding(C4, q=0.5)])
        got = yield self.store.get(AOR, T0)
        self.assertEqual(self.contacts(got), [C3, C2, C4, C1])

    @inlineCallbacks
    def test_equal_q_most_recent_first(self) -> Any:
        """Among equal q values, the most recently registered comes first."""
        yield self.update([binding(C1, q=0.5)])
        yield self.update([binding(C2, q=0.5, call_id="cid-2", now=T0 + 10)],
                          call_id="cid-2", now=T0 + 10)
        got = yield self.store.get(AOR, T0 + 10)
        self.assertEqual(self.contacts(got), [C2, C1])

    @inlineCallbacks
    def test_remove_expires_zero(self) -> Any:
        """A change with no time left (expires 0) removes that contact only."""
        yield self.update([binding(C1), binding(C2)])
        result = yield self.update([binding(C1, expires=0, cseq=2, now=T0 + 1)],
                                   cseq=2, now=T0 + 1)
        self.assertEqual(self.contacts(result), [C2])
        self.assertEqual(self.contacts((yield self.store.get(AOR, T0 + 1))), [C2])

    @inlineCallbacks
    def test_remove_last_binding(self) -> Any:
        """Removing the only binding leaves the AOR empty."""
        yield self.update([binding(C1)])
        self.assertEqual((yield self.update([binding(C1, expires=0, cseq=2)], cseq=2)), [])
        self.assertEqual((yield self.store.get(AOR, T0)), [])
        self.assertEqual((yield self.store.count(T0)), 0)

    @inlineCallbacks
    def test_remove_unknown_contact(self) -> Any:
        """Removing a contact that is not bound changes nothing."""
        yield self.update([binding(C1)])
        result = yield self.update([binding(C2, expires=0, cseq=2)], cseq=2)
        self.assertEqual(self.contacts(result), [C1])

    @inlineCallbacks
    def test_out_of_order_equal_cseq(self) -> Any:
        """The same Call-ID and CSeq again is refused with L{OutOfOrder}."""
        yield self.update([binding(C1)])
        yield self.assertFailure(self.update([binding(C1, expires=10)]), OutOfOrder)
        (got,) = yield self.store.get(AOR, T0)
        self.assertEqual(got.expires_at, T0 + 3600)

    @inlineCallbacks
    def test_out_of_order_lower_cseq(self) -> Any:
        """A lower CSeq on the same Call-ID is refused, even for a removal."""
        yield self.update([binding(C1, cseq=5)], cseq=5)
        yield self.assertFailure(self.update([binding(C1, expires=0, cseq=4)], cseq=4),
                                 OutOfOrder)
        self.assertEqual(len((yield self.store.get(AOR, T0))), 1)

    @inlineCallbacks
    def test_out_of_order_aborts_whole_update(self) -> Any:
        """When one contact is out of order, none of the request's changes apply."""
        yield self.update([binding(C1, cseq=5)], cseq=5)
        d = self.update([binding(C2, cseq=5), binding(C1, expires=0, cseq=5)], cseq=5)
        yield self.assertFailure(d, OutOfOrder)
        self.assertEqual(self.contacts((yield self.store.get(AOR, T0))), [C1])

    @inlineCallbacks
    def test_expired_binding_not_checked(self) -> Any:
        """An expired binding neither refuses a CSeq nor comes back."""
        yield self.update([binding(C1, expires=60, cseq=5)], cseq=5)
        fresh = binding(C1, cseq=1, now=T0 + 61)
        self.assertEqual((yield self.update([fresh], now=T0 + 61)), [fresh])

    @inlineCallbacks
    def test_remove_all(self) -> Any:
        """C{*} removes every binding of the AOR and no other AOR's."""
        yield self.update([binding(C1), binding(C2)])
        yield self.update([binding(C3, aor="bob@example.com")], aor="bob@example.com")
        result = yield self.store.remove_all(AOR, "cid-1", 2, T0 + 1)
        self.assertEqual(result, [])
        self.assertEqual((yield self.store.get(AOR, T0 + 1)), [])
        self.assertEqual(len((yield self.store.get("bob@example.com", T0 + 1))), 1)
        self.assertEqual((yield self.store.count(T0 + 1)), 1)

    @inlineCallbacks
    def test_remove_all_out_of_order(self) -> Any:
        """C{*} with the Call-ID of a binding and a CSeq not higher removes
        nothing and fails with L{OutOfOrder}."""
        yield self.update([binding(C1, call_id="other")], call_id="other")
        yield self.update([binding(C2, cseq=7)], cseq=7)
        yield self.assertFailure(self.store.remove_all(AOR, "cid-1", 7, T0), OutOfOrder)
        self.assertEqual(len((yield self.store.get(AOR, T0))), 2)

    @inlineCallbacks
    def test_remove_all_other_call_id(self) -> Any:
        """C{*} from another Call-ID removes bindings whatever their CSeq."""
        yield self.update([binding(C1, cseq=90)], cseq=90)
        yield self.store.remove_all(AOR, "cid-2", 1, T0)
        self.assertEqual((yield self.store.get(AOR, T0)), [])

    @inlineCallbacks
    def test_remove_all_empty(self) -> Any:
        """C{*} on an AOR without bindings succeeds."""
        self.assertEqual((yield self.store.remove_all(AOR, "cid-1", 1, T0)), [])

    @inlineCallbacks
    def test_expiry(self) -> Any:
        """A binding is returned until its expiry time, not at or after it."""
        yield self.update([binding(C1, expires=120), binding(C2, expires=3600)])
        self.assertEqual(len((yield self.store.get(AOR, T0 + 119.5))), 2)
        self.assertEqual(self.contacts((yield self.store.get(AOR, T0 + 120))), [C2])
        self.assertEqual((yield self.store.get(AOR, T0 + 3600)), [])

    @inlineCallbacks
    def test_update_drops_expired(self) -> Any:
        """An update's result leaves out bindings that expired meanwhile."""
        yield self.update([binding(C1, expires=60)])
        result = yield self.update([binding(C2, now=T0 + 100, call_id="x")],
                                   call_id="x", now=T0 + 100)
        self.assertEqual(self.contacts(result), [C2])

    @inlineCallbacks
    def test_count(self) -> Any:
        """count() counts active bindings over all AORs, as time passes."""
        yield self.update([binding(C1, expires=60), binding(C2)])
        yield self.update([binding(C3, aor="bob@example.com")], aor="bob@example.com")
        self.assertEqual((yield self.store.count(T0)), 3)
        self.assertEqual((yield self.store.count(T0 + 60)), 2)
        yield self.update([binding(C2, expires=0, cseq=2)], cseq=2, now=T0 + 61)
        self.assertEqual((yield self.store.count(T0 + 61)), 1)

    @inlineCallbacks
    def test_expire_housekeeping(self) -> Any:
        """expire(now) forgets what expired and leaves the rest."""
        yield self.update([binding(C1, expires=60)])
        yield self.update([binding(C2, expires=60, aor="bob@example.com")],
                          aor="bob@example.com")
        yield self.update([binding(C3, aor="carol@example.com")], aor="carol@example.com")
        self.assertEqual((yield self.store.expire(T0 + 60)), 2)
        self.assertEqual((yield self.store.count(T0 + 60)), 1)
        self.assertEqual(len((yield self.store.get("carol@example.com", T0 + 60))), 1)

    @inlineCallbacks
    def test_aor_isolation(self) -> Any:
        """Bindings of one AOR do not appear under another."""
        yield self.update([binding(C1)])
        self.assertEqual((yield self.store.get("bob@example.com", T0)), [])

    @inlineCallbacks
    def test_foreign_change_refused(self) -> Any:
        """A change of another AOR, Call-ID or CSeq than the update's is a
        programming error (ValueError), and nothing is stored."""
        yield self.assertFailure(self.update([binding(C1, aor="bob@example.com")]),
                                 ValueError)
        yield self.assertFailure(self.update([binding(C1, call_id="x")]), ValueError)
        yield self.assertFailure(self.update([binding(C1, cseq=2)]), ValueError)
        self.assertEqual((yield self.store.count(T0)), 0)

    @inlineCallbacks
    def test_flow_replacement(self) -> Any:
        """RFC 5626: a binding with the instance-id and reg-id of an existing
        one replaces it, even from a new contact and Call-ID."""
        yield self.update([binding(C1, instance_id=INSTANCE, reg_id=1, received=RECEIVED)])
        new = binding(C2, call_id="after-reboot", now=T0 + 30, instance_id=INSTANCE,
                      reg_id=1)
        result = yield self.update([new], call_id="after-reboot", now=T0 + 30)
        self.assertEqual(result, [new])
        self.assertEqual((yield self.store.count(T0 + 30)), 1)

    @inlineCallbacks
    def test_flow_other_reg_id_kept(self) -> Any:
        """The same instance with another reg-id is a second flow: both stay."""
        yield self.update([binding(C1, instance_id=INSTANCE, reg_id=1)])
        yield self.update([binding(C2, call_id="flow2", instance_id=INSTANCE, reg_id=2)],
                          call_id="flow2")
        self.assertEqual(len((yield self.store.get(AOR, T0))), 2)

    @inlineCallbacks
    def test_instance_without_reg_id_replaces(self) -> Any:
        """An instance-id without reg-id replaces the binding of that instance
        (RFC 5627), and leaves the instance's reg-id flows alone."""
        yield self.update([binding(C1, instance_id=INSTANCE),
                           binding(C3, instance_id=INSTANCE, reg_id=1)])
        result = yield self.update([binding(C2, call_id="new", instance_id=INSTANCE)],
                                   call_id="new")
        self.assertEqual(sorted(self.contacts(result)), sorted([C2, C3]))

    @inlineCallbacks
    def test_flow_replacement_out_of_order(self) -> Any:
        """Flow replacement obeys the CSeq rule of the binding it replaces."""
        yield self.update([binding(C1, cseq=9, instance_id=INSTANCE, reg_id=1)], cseq=9)
        d = self.update([binding(C2, cseq=8, instance_id=INSTANCE, reg_id=1)], cseq=8)
        yield self.assertFailure(d, OutOfOrder)
        self.assertEqual(self.contacts((yield self.store.get(AOR, T0))), [C1])

    @inlineCallbacks
    def test_max_bindings(self) -> Any:
        """An update that would grow the AOR beyond the limit fails with
        L{TooManyBindings}; refreshes and removals at the limit work."""
        yield self.update([binding(C1), binding(C2)], max_bindings=2)
        d = self.update([binding(C3, cseq=2)], cseq=2, max_bindings=2)
        failure = yield self.assertFailure(d, TooManyBindings)
        self.assertEqual((failure.count, failure.limit), (3, 2))
        self.assertEqual(len((yield self.store.get(AOR, T0))), 2)
        result = yield self.update([binding(C1, cseq=3), binding(C2, expires=0, cseq=3),
                                    binding(C3, cseq=3)], cseq=3, max_bindings=2)
        self.assertEqual(sorted(self.contacts(result)), sorted([C1, C3]))

    @inlineCallbacks
    def test_concurrent_updates(self) -> Any:
        """Updates of one AOR in flight together all apply (none is lost)."""
        ds = [self.update([binding(f"sip:alice@192.0.2.{i}", call_id=f"cid-{i}")],
                          call_id=f"cid-{i}") for i in range(10)]
        yield gatherResults(ds)
        self.assertEqual(len((yield self.store.get(AOR, T0))), 10)
        self.assertEqual((yield self.store.count(T0)), 10)

    @inlineCallbacks
    def test_concurrent_conflict(self) -> Any:
        """Two updates in flight with the same Call-ID and CSeq on one contact:
        exactly one applies and the other is out of order."""
        first = self.update([binding(C1, expires=600, cseq=3)], cseq=3)
        second = self.update([binding(C1, expires=900, cseq=3)], cseq=3)
        outcomes = yield gatherResults([
            d.addCallbacks(lambda _: "ok", lambda f: f.trap(OutOfOrder) and "refused")
            for d in (first, second)])
        self.assertEqual(sorted(outcomes), ["ok", "refused"])
        (got,) = yield self.store.get(AOR, T0)
        self.assertIn(got.expires_at, (T0 + 600, T0 + 900))


class MemoryLocationStoreTests(LocationStoreContract, TestCase):
    """The contract against L{MemoryLocationStore}."""

    def make_store(self) -> ILocationStore:
        """A memory store on the fake clock."""
        return MemoryLocationStore(self.clock)


class RedisLocationStoreTests(LocationStoreContract, TestCase):
    """The contract against L{RedisLocationStore} on a real Redis server,
    plus its key layout."""

    timeout = 20
    skip = redis_skip("Redis location store tests")

    @inlineCallbacks
    def make_store(self) -> Any:
        """Connect (a pool of two, so that updates can be in flight at once)
        and use a unique key prefix, removed after the test."""
        url = require_redis_url(self, "Redis location store tests")
        import txredisapi

        args = redis_connection_args(url)
        self.redis = yield txredisapi.ConnectionPool(
            poolsize=2, reconnect=False, connectTimeout=5, replyTimeout=5, **args)
        self.addCleanup(self.redis.disconnect)
        self.prefix = f"test:b2bua:loc:{uuid.uuid4().hex}:"
        self.addCleanup(self._delete_keys)
        return RedisLocationStore(self.redis, self.clock, prefix=self.prefix)

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
    def test_key_layout(self) -> Any:
        """Each AOR is a hash of contact key -> JSON with a TTL covering its
        longest binding; the index scores each binding by its expiry."""
        yield self.update([binding(C1, expires=60), binding(C2, expires=600)])
        key = self.store.aor_key(AOR)
        record = yield self.redis.hgetall(key)
        self.assertEqual(set(record), {contact_key(C1), contact_key(C2)})
        self.assertEqual(Binding.from_dict(json.loads(record[contact_key(C2)])).contact, C2)
        ttl = yield self.redis.execute_command("PTTL", key)
        self.assertTrue(590_000 < ttl <= 601_000, ttl)
        score = yield self.redis.zscore(self.prefix + "index", f"{AOR}\n{contact_key(C1)}")
        self.assertEqual(float(score), T0 + 60)

    @inlineCallbacks
    def test_key_removed_when_empty(self) -> Any:
        """Removing the last binding deletes the AOR's key and index entry."""
        yield self.update([binding(C1)])
        yield self.store.remove_all(AOR, "cid-2", 1, T0)
        self.assertEqual((yield self.redis.exists(self.store.aor_key(AOR))), 0)
        self.assertEqual((yield self.redis.zcard(self.prefix + "index")), 0)

    @inlineCallbacks
    def test_bad_record_fails(self) -> Any:
        """A record that is not a binding fails get() with ValueError."""
        yield self.redis.hset(self.store.aor_key(AOR), "sip:x@y", json.dumps({"q": 1}))
        yield self.assertFailure(self.store.get(AOR, T0), ValueError)


class RedisURLTests(SynchronousTestCase):
    """Tests for L{redis_connection_args}."""

    def test_defaults(self) -> None:
        """A bare URL means 127.0.0.1:6379 and the default database."""
        self.assertEqual(redis_connection_args("redis://"),
                         {"host": "127.0.0.1", "port": 6379, "dbid": None})

    def test_full(self) -> None:
        """Host, port, database, user and password are read."""
        self.assertEqual(
            redis_connection_args("redis://u:p%40ss@10.0.0.5:6380/3"),
            {"host": "10.0.0.5", "port": 6380, "dbid": 3, "password": "p@ss",
             "username": "u"})

    def test_other_scheme(self) -> None:
        """Another scheme raises ValueError."""
        self.assertRaises(ValueError, redis_connection_args, "http://localhost/")


class BindingTests(SynchronousTestCase):
    """Tests for L{Binding}, L{Received} and the helpers of the location module."""

    def test_dict_round_trip(self) -> None:
        """to_dict/from_dict through JSON give an equal binding."""
        b = binding(C1, q=0.25, received=RECEIVED, path=("<sip:p.example;lr>",),
                    instance_id=INSTANCE, reg_id=1, user_agent="UA")
        self.assertEqual(Binding.from_dict(json.loads(json.dumps(b.to_dict()))), b)

    def test_bad_record(self) -> None:
        """from_dict of a record without contact raises ValueError."""
        self.assertRaises(ValueError, Binding.from_dict, {"aor": AOR, "expires_at": 1})

    def test_expires_in(self) -> None:
        """expires_in rounds to whole seconds, at least 1 while unexpired."""
        b = binding(C1, expires=3600)
        self.assertEqual(b.expires_in(T0), 3600)
        self.assertEqual(b.expires_in(T0 + 3599.9), 1)
        self.assertEqual(b.expires_in(T0 + 3600), 0)

    def test_normalise_aor(self) -> None:
        """AORs are user@domain, user unescaped, domain lower-cased."""
        self.assertEqual(normalise_aor("sip:Al%69ce@Example.COM:5060;user=phone"),
                         "Alice@example.com")
        self.assertEqual(normalise_aor("bob@EXAMPLE.org."), "bob@example.org")
        self.assertEqual(normalise_aor("sips:carol@example.net"), "carol@example.net")
        self.assertRaises(ValueError, normalise_aor, "nobody@")

    def test_contact_key(self) -> None:
        """Equivalent contacts share a key; different ones do not."""
        self.assertEqual(contact_key("sip:%61lice@HOST;Transport=TCP"),
                         contact_key("sip:alice@host;transport=tcp"))
        self.assertNotEqual(contact_key("sip:alice@host"), contact_key("sip:alice@host:5060"))
        self.assertNotEqual(contact_key("sip:alice@host"), contact_key("sips:alice@host"))
        self.assertNotEqual(contact_key("sip:Alice@host"), contact_key("sip:alice@host"))

    def test_flow_key(self) -> None:
        """Flows are instance plus reg-id; no instance, no flow."""
        self.assertIsNone(flow_key(None, 1))
        self.assertNotEqual(flow_key(INSTANCE, 1), flow_key(INSTANCE, 2))
        self.assertNotEqual(flow_key(INSTANCE, None), flow_key(INSTANCE, 1))

    def test_sort_bindings(self) -> None:
        """q first (none counts as 1.0), then most recent."""
        a = binding(C1, q=1.0, now=T0)
        b = binding(C2, now=T0 + 1)
        c = binding(C3, q=0.2, now=T0 + 2)
        self.assertEqual(sort_bindings([c, a, b]), [b, a, c])

    def test_received_from_source(self) -> None:
        """Received keeps transport, address, connection and our listener."""
        source = Source("TCP", ("2001:db8::1", 50000), ("192.0.2.1", 5060), 17)
        received = Received.from_source(source)
        self.assertEqual(received, Received("TCP", "2001:db8::1", 50000, 17,
                                            ("192.0.2.1", 5060)))
        self.assertEqual(str(received), "tcp:[2001:db8::1]:50000")
        self.assertEqual(received.target(), Target("TCP", "2001:db8::1", 50000, 17))
