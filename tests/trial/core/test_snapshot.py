"""Tests for L{b2bua.core.snapshot} and L{b2bua.core.directory.Directory.from_rows}.

  - L{FromRowsTests}: a frozen directory built from provisioning rows
    (stored HA1 values, never passwords);
  - L{SnapshotTests}: loading, swapping, coalescing and retrying on a
    L{Clock}, with a loader whose Deferreds the test fires by hand;
  - L{RegistrationTests}: the switch of L{b2bua.testing.SwitchHarness}
    reading the snapshot as its directory: an account added to the data
    can register once the change is heard;
  - L{SQLiteLiveTests} and L{PostgreSQLLiveTests}: a change made through a
    repository is in the snapshot within one second, on the real reactor
    (SQL runs in threads), with every wait bounded; on SQLite the new
    account then registers with the harness's switch.  The PostgreSQL test
    writes through one L{Database} and reads through a running
    L{SwitchService} on another (C{LISTEN/NOTIFY}); it needs
    C{DATABASE_URL} and skips without it (fails under C{CI=true}).
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from b2bua.config import parse_config
from b2bua.core.directory import Directory, DirectoryFrozen, Tenant
from b2bua.core.snapshot import Snapshot
from b2bua.db.changes import ChangeFeed
from b2bua.db.interfaces import Scope
from b2bua.db.repository import repositories
from b2bua.db.secrets import account_ha1
from b2bua.service import SwitchService
from b2bua.sip.auth import compute_ha1
from b2bua.testing import SwitchHarness
from tests.trial.db.support import database_url, open_database

#: Seconds a change may take to reach the snapshot.
WITHIN = 1.0
ADMIN = Scope.admin("test")


def rows(*accounts: tuple[str, str, str], domain: str = "example.com",
         customer_id: int = 7) -> dict[str, list[dict[str, Any]]]:
    """What C{load_directory_rows} would read: one customer of C{domain}
    and its C{(number, username, password)} accounts."""
    stored = []
    for n, (number, username, password) in enumerate(accounts, 1):
        md5, sha256 = account_ha1(username, domain, password)
        stored.append({"id": n, "customer_id": customer_id, "number": number,
                       "sip_username": username, "ha1_md5": md5, "ha1_sha256": sha256,
                       "caller_id_name": f"User {number}", "status": "active"})
    return {"customers": [{"id": customer_id, "sip_domain": domain, "name": "acme",
                           "currency": "EUR", "billing_timezone": "Europe/Paris",
                           "status": "active"}],
            "accounts": stored, "dids": [], "vendors": [], "connections": [],
            "routing_plans": [], "tariffs": []}


class FromRowsTests(SynchronousTestCase):
    """L{Directory.from_rows}."""

    def test_tenants_and_extensions(self) -> None:
        """Customers become tenants and accounts extensions, with the
        stored HA1 values (no password anywhere)."""
        directory = Directory.from_rows(rows(("200", "alice", "s3cret")))
        tenant = directory.tenant("EXAMPLE.com")
        self.assertEqual(tenant, Tenant("example.com", "acme", 7, "EUR", "Europe/Paris"))
        self.assertIs(directory.tenant_by_id(7), tenant)
        ext = directory.extension("example.com", "200")
        self.assertEqual((ext.username, ext.display_name, ext.id, ext.aor),
                         ("alice", "User 200", 1, "200@example.com"))
        self.assertIs(directory.by_username("example.com", "alice"), ext)
        self.assertIsNone(directory.by_username("example.com", "200"))
        for algorithm in ("MD5", "SHA-256"):
            self.assertEqual(directory.lookup_ha1("alice", "example.com", algorithm),
                             compute_ha1("alice", "example.com", "s3cret", algorithm))
        self.assertNotIn("s3cret", repr(vars(ext)))
        self.assertEqual((len(directory), directory.extensions("example.com")), (1, [ext]))

    def test_orphans_and_missing_ha1(self) -> None:
        """Accounts of a customer not loaded are left out; a missing HA1
        is no HA1 (that algorithm cannot authenticate)."""
        data = rows(("200", "alice", "pw"))
        data["accounts"].append({"id": 9, "customer_id": 99, "number": "300",
                                 "sip_username": "bob", "ha1_md5": "x", "ha1_sha256": "y"})
        data["accounts"][0]["ha1_sha256"] = None
        directory = Directory.from_rows(data)
        self.assertIsNone(directory.by_username("example.com", "bob"))
        self.assertEqual(len(directory), 1)
        self.assertIsNone(directory.lookup_ha1("alice", "example.com", "SHA-256"))
        self.assertIsNotNone(directory.lookup_ha1("alice", "example.com", "MD5"))

    def test_other_collections(self) -> None:
        """DIDs by number (with or without C{+}); vendors, connections,
        routing plans and tariffs by id, read-only."""
        data = rows()
        data["dids"] = [{"id": 1, "number": "+3120555", "target": "1"}]
        data["vendors"] = [{"id": 4, "name": "carrier"}]
        data["connections"] = [{"id": 6, "vendor_id": 4, "address": "192.0.2.1:5060"},
                               {"id": 5, "vendor_id": 4, "address": "192.0.2.2:5060"}]
        data["routing_plans"] = [{"id": 2, "name": "default", "entries": []}]
        data["tariffs"] = [{"id": 3, "name": "retail", "currency": "EUR", "document": {}}]
        directory = Directory.from_rows(data)
        self.assertEqual(directory.did("+3120555")["target"], "1")
        self.assertIs(directory.did("3120555"), directory.did("+3120555"))
        self.assertIsNone(directory.did("3120556"))
        self.assertEqual(directory.vendor(4)["name"], "carrier")
        self.assertEqual([c["id"] for c in directory.connections()], [5, 6])
        self.assertEqual(directory.connection(6)["address"], "192.0.2.1:5060")
        self.assertEqual(directory.routing_plan(2)["name"], "default")
        self.assertEqual([p["id"] for p in directory.routing_plans()], [2])
        self.assertEqual(directory.tariff(3)["currency"], "EUR")
        self.assertRaises(TypeError, operator.setitem, directory.tariff(3), "currency", "USD")
        self.assertEqual(directory.counts(), {
            "tenants": 1, "extensions": 0, "dids": 1, "vendors": 1, "connections": 2,
            "routing_plans": 1, "tariffs": 1, "trunks": 0, "lnp_entries": 0,
            "source_conflicts": 0})

    def test_frozen(self) -> None:
        """A directory built from rows is published: it cannot be changed."""
        directory = Directory.from_rows(rows())
        tenant = directory.tenant("example.com")
        self.assertRaises(DirectoryFrozen, directory.add_tenant, Tenant("other.example"))
        self.assertRaises(DirectoryFrozen, directory.add_extension, tenant, "1", "pw")

    def test_empty(self) -> None:
        """No rows, no data."""
        directory = Directory.from_rows({})
        self.assertEqual((len(directory), directory.tenants()), (0, []))
        self.assertIsNone(directory.lookup_ha1("a", "example.com", "MD5"))


class FakeLoader:
    """A loader whose loads the test finishes by hand.

    @ivar loads: the Deferred of each load asked for, in order.
    """

    def __init__(self) -> None:
        self.loads: list[Deferred[Any]] = []

    def __call__(self, database: object) -> Deferred[Any]:
        """Start one load."""
        d: Deferred[Any] = Deferred()
        self.loads.append(d)
        return d


class SnapshotTests(SynchronousTestCase):
    """L{Snapshot}: first load, reloads on change, coalescing, retries."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.feed = ChangeFeed()
        self.loader = FakeLoader()
        self.snapshot = Snapshot(object(), self.feed, self.clock,  # type: ignore[arg-type]
                                 load=self.loader, min_backoff=0.5, max_backoff=4.0)
        self.addCleanup(self.assertEqual, self.clock.getDelayedCalls(), [])

    def started(self) -> Snapshot:
        """The snapshot, started and loaded with one account."""
        d = self.snapshot.start()
        self.loader.loads[-1].callback(rows(("200", "alice", "pw")))
        self.successResultOf(d)
        return self.snapshot

    def change(self, n: int = 1) -> None:
        """Announce C{n} account changes."""
        for i in range(n):
            self.feed.publish("account", i, "update")

    def test_before_start(self) -> None:
        """Before the first load the directory is empty, version 0."""
        self.assertEqual((self.snapshot.version, self.snapshot.loaded_at), (0, None))
        self.assertFalse(self.snapshot.loaded)
        self.assertIsNone(self.snapshot.by_username("example.com", "alice"))
        self.change()
        self.assertEqual(self.loader.loads, [])

    def test_start_loads(self) -> None:
        """C{start} loads once; the directory is published with version 1
        and the clock's time."""
        d = self.snapshot.start()
        self.assertNoResult(d)
        self.assertEqual(len(self.loader.loads), 1)
        self.loader.loads[0].callback(rows(("200", "alice", "pw")))
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual((self.snapshot.version, self.snapshot.loaded_at), (1, 1000.0))
        self.assertTrue(self.snapshot.loaded)
        self.assertEqual(self.snapshot.extension("example.com", "200").username, "alice")
        self.assertEqual(self.snapshot.lookup_ha1("alice", "example.com", "MD5"),
                         compute_ha1("alice", "example.com", "pw", "MD5"))
        self.assertRaises(RuntimeError, self.snapshot.start)

    def test_first_load_fails(self) -> None:
        """A failed first load fails C{start}; nothing is retried and
        changes are no longer heard."""
        d = self.snapshot.start()
        self.loader.loads[0].errback(RuntimeError("no database"))
        self.failureResultOf(d, RuntimeError)
        self.change()
        self.assertEqual((len(self.loader.loads), self.snapshot.failures), (1, 1))
        self.assertFalse(self.snapshot.loaded)

    def test_change_reloads_and_swaps(self) -> None:
        """A change reloads; the new directory replaces the old one, which
        is left as it was."""
        snapshot = self.started()
        old = snapshot.directory
        self.clock.advance(5)
        self.change()
        self.assertEqual(len(self.loader.loads), 2)
        self.assertIs(snapshot.directory, old)
        self.loader.loads[1].callback(rows(("200", "alice", "pw"), ("201", "bob", "pw")))
        self.assertEqual((snapshot.version, snapshot.loaded_at, snapshot.changes),
                         (2, 1005.0, 1))
        self.assertIsNot(snapshot.directory, old)
        self.assertIsNotNone(snapshot.by_username("example.com", "bob"))
        self.assertIsNone(old.by_username("example.com", "bob"))

    def test_burst_is_coalesced(self) -> None:
        """Changes heard while a reload runs queue exactly one more."""
        snapshot = self.started()
        self.change(1)
        self.change(50)
        self.assertEqual(len(self.loader.loads), 2)
        self.loader.loads[1].callback(rows())
        self.assertEqual(len(self.loader.loads), 3)
        self.loader.loads[2].callback(rows(("201", "bob", "pw")))
        self.assertEqual((len(self.loader.loads), snapshot.version, snapshot.changes),
                         (3, 3, 51))
        self.assertIsNotNone(snapshot.by_username("example.com", "bob"))

    def test_change_during_first_load(self) -> None:
        """A change heard during the first load is not missed."""
        d = self.snapshot.start()
        self.change()
        self.loader.loads[0].callback(rows())
        self.successResultOf(d)
        self.assertEqual(len(self.loader.loads), 2)
        self.loader.loads[1].callback(rows(("200", "alice", "pw")))
        self.assertEqual(self.snapshot.version, 2)

    def test_failed_reload_keeps_and_retries(self) -> None:
        """A failed reload keeps the directory and retries after 0.5, 1, 2,
        4, 4 seconds; a success resets the back-off."""
        snapshot = self.started()
        kept = snapshot.directory
        self.change()
        delays = []
        for n in range(5):
            self.loader.loads[-1].errback(RuntimeError(f"down {n}"))
            self.assertIs(snapshot.directory, kept)
            [call] = self.clock.getDelayedCalls()
            delays.append(call.getTime() - self.clock.seconds())
            self.clock.advance(delays[-1])
        self.assertEqual(delays, [0.5, 1.0, 2.0, 4.0, 4.0])
        self.assertEqual((snapshot.failures, snapshot.version), (5, 1))
        self.loader.loads[-1].callback(rows(("201", "bob", "pw")))
        self.assertEqual(snapshot.version, 2)
        self.change()
        self.loader.loads[-1].errback(RuntimeError("down again"))
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime() - self.clock.seconds(), 0.5)
        self.clock.advance(0.5)
        self.loader.loads[-1].callback(rows())
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_change_while_waiting_to_retry(self) -> None:
        """Changes heard while a retry is scheduled add no load: the retry
        reads everything."""
        self.started()
        self.change()
        self.loader.loads[-1].errback(RuntimeError("down"))
        self.change(3)
        self.assertEqual(len(self.loader.loads), 2)
        self.clock.advance(0.5)
        self.assertEqual(len(self.loader.loads), 3)
        self.loader.loads[-1].callback(rows())
        self.assertEqual(len(self.loader.loads), 3)

    def test_stop(self) -> None:
        """C{stop} cancels a retry, stops listening, and waits for a load in
        flight."""
        snapshot = self.started()
        self.change()
        self.loader.loads[-1].errback(RuntimeError("down"))
        self.successResultOf(snapshot.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.change()
        self.assertEqual(len(self.loader.loads), 2)

    def test_stop_waits_for_a_load(self) -> None:
        """A load in flight is let finish before C{stop} fires."""
        snapshot = self.started()
        self.change()
        stopped = snapshot.stop()
        self.assertNoResult(stopped)
        self.loader.loads[-1].callback(rows())
        self.successResultOf(stopped)

    def test_bad_rows_are_a_failed_load(self) -> None:
        """Rows that do not make a directory count as a failed reload."""
        snapshot = self.started()
        self.change()
        self.loader.loads[-1].callback({"customers": [{"no": "columns"}]})
        self.assertEqual((snapshot.failures, snapshot.version), (1, 1))
        self.clock.advance(0.5)
        self.loader.loads[-1].callback(rows())

    def test_read_api(self) -> None:
        """Every read of L{Directory} is offered, on the current directory."""
        snapshot = self.started()
        names = [n for n in vars(Directory) if not n.startswith("_") and n != "from_rows"
                 and callable(getattr(Directory, n))]
        names.remove("add_tenant")
        names.remove("add_extension")
        for name in names:
            self.assertTrue(callable(getattr(snapshot, name)), name)
        self.assertEqual(snapshot.counts(), snapshot.directory.counts())
        self.assertEqual(snapshot.tenants(), snapshot.directory.tenants())
        self.assertEqual(len(snapshot), 1)
        self.assertIs(snapshot.tenant_by_id(7), snapshot.tenant("example.com"))
        self.assertEqual(snapshot.extensions(), snapshot.directory.extensions())
        self.assertIsNone(snapshot.did("+3120555"))
        for lookup in (snapshot.vendor, snapshot.connection, snapshot.routing_plan,
                       snapshot.tariff):
            self.assertIsNone(lookup(1))
        self.assertEqual((snapshot.connections(), snapshot.routing_plans()), ([], []))
        self.assertIn("version=1", repr(snapshot))


class RegistrationTests(SynchronousTestCase):
    """The switch reads the snapshot per request."""

    def test_new_account_registers_after_the_change(self) -> None:
        """An account unknown to the switch (REGISTER refused) registers as
        soon as the reload that follows its creation is published."""
        harness = SwitchHarness()
        data = [rows(("200", "200", "pw"))]
        snapshot = Snapshot(object(), ChangeFeed(), harness.clock,  # type: ignore[arg-type]
                            load=lambda database: succeed(data[0]))
        self.successResultOf(snapshot.start())
        harness.switch.directory = snapshot  # type: ignore[assignment]
        harness.services.directory = snapshot  # type: ignore[assignment]
        bob = harness.phone("201", password="bob's pw", domain="example.com")
        self.assertEqual(bob.register().code, 401)
        alice = harness.phone("200", password="pw", domain="example.com")
        self.assertEqual(alice.register().code, 200)

        data[0] = rows(("200", "200", "pw"), ("201", "201", "bob's pw"))
        snapshot.feed.publish("account", 2, "create")
        self.assertEqual(snapshot.version, 2)
        self.assertEqual(bob.register().code, 200)
        harness.settle()
        self.successResultOf(snapshot.stop())


def report(dialect: str, seconds: float) -> None:
    """With C{B2BUA_REPORT_LATENCY} set, print a measured change-to-snapshot
    latency (for docs/provisioning.md); silent otherwise."""
    if os.environ.get("B2BUA_REPORT_LATENCY"):
        print(f"\n{dialect} change-to-snapshot latency: {seconds * 1000:.1f} ms")


async def wait_for(predicate: Callable[[], object], timeout: float = WITHIN) -> float:
    """Poll C{predicate} on the real reactor every 2 ms until it is true;
    return the seconds it took.  @raise AssertionError: after C{timeout}."""
    start = reactor.seconds()
    while not predicate():
        if reactor.seconds() - start > timeout:
            raise AssertionError(f"not true within {timeout}s")
        await deferLater(reactor, 0.002, lambda: None)
    return reactor.seconds() - start


async def provision_account(repos: dict[str, Any], domain: str, username: str) -> float:
    """Create a customer of C{domain} with one account; return the
    reactor's time when the account's write committed."""
    customer = await repos["customers"].create(
        {"name": domain, "sip_domain": domain, "currency": "EUR"}, ADMIN)
    await repos["accounts"].create({"customer_id": customer["id"], "number": "200",
                                    "sip_username": username, "password": "pw-123456"}, ADMIN)
    return reactor.seconds()


class SQLiteLiveTests(TestCase):
    """A change through a repository reaches the snapshot of the same
    process (SQLite: the in-process feed)."""

    timeout = 30

    async def test_change_visible_within_a_second(self) -> None:
        """A new account is visible within one second; a suspended customer
        takes its extensions away just as fast."""
        database = await open_database(self, "sqlite")
        feed = ChangeFeed()
        repos = repositories(database, feed, "k" * 20)
        snapshot = Snapshot(database, feed, reactor)
        await snapshot.start()
        self.addCleanup(snapshot.stop)
        committed = await provision_account(repos, "live.example", "alice")
        await wait_for(lambda: snapshot.by_username("live.example", "alice"))
        report("SQLite", reactor.seconds() - committed)
        ext = snapshot.by_username("live.example", "alice")
        self.assertEqual(ext.ha1["MD5"], compute_ha1("alice", "live.example", "pw-123456",
                                                     "MD5"))
        await repos["customers"].update(ext.tenant.id, {"status": "suspended"}, ADMIN)
        await wait_for(lambda: snapshot.tenant("live.example") is None)
        self.assertIsNone(snapshot.by_username("live.example", "alice"))
        self.assertEqual(snapshot.failures, 0)


    async def test_new_account_registers(self) -> None:
        """End to end on SQLite: an account created through the repository
        registers with the switch of the test harness once it is heard."""
        database = await open_database(self, "sqlite")
        feed = ChangeFeed()
        repos = repositories(database, feed, "k" * 20)
        harness = SwitchHarness()
        snapshot = Snapshot(database, feed, harness.clock)
        await snapshot.start()
        self.addCleanup(snapshot.stop)
        harness.switch.directory = snapshot  # type: ignore[assignment]
        harness.services.directory = snapshot  # type: ignore[assignment]
        phone = harness.phone("200", password="pw-123456", domain="reg.example")
        self.assertEqual(phone.register().code, 401)
        await provision_account(repos, "reg.example", "200")
        await wait_for(lambda: snapshot.by_username("reg.example", "200"))
        self.assertEqual(phone.register().code, 200)
        harness.settle()


class PostgreSQLLiveTests(TestCase):
    """A change written through one database instance reaches the snapshot
    of a running switch on another, through LISTEN/NOTIFY."""

    timeout = 60

    async def test_change_visible_in_a_service_within_a_second(self) -> None:
        """The switch is started on PostgreSQL (migrating, listening); a
        writer with its own L{Database} creates an account; the switch's
        snapshot has it within one second, and it is gone within one
        second of its deletion."""
        url = database_url(self, "postgresql")
        config = parse_config({
            "sip": {"listen": ["udp:127.0.0.1:0"]}, "oam": {"enabled": False},
            "storage": {"database": url, "migrate": True},
        }, "live.toml")
        failures: list[str] = []
        service = SwitchService(reactor, config, fatal=failures.append)
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        await service.when_started().addTimeout(10, reactor)
        self.assertEqual(failures, [])
        self.assertTrue(service.ready)
        self.assertTrue(service.listener.running)

        writer = await open_database(self, "postgresql", migrated=False, url=url)
        repos = repositories(writer, ChangeFeed(), "k" * 20)
        committed = await provision_account(repos, "pg.example", "carol")
        took = await wait_for(
            lambda: service.switch.directory.by_username("pg.example", "carol"))
        latency = reactor.seconds() - committed
        self.assertLess(latency, WITHIN)
        self.assertLess(took, WITHIN)
        report("PostgreSQL", latency)

        ext = service.snapshot.by_username("pg.example", "carol")
        deleted = reactor.seconds()
        await repos["accounts"].delete(ext.id, ADMIN)
        await wait_for(lambda: service.snapshot.by_username("pg.example", "carol") is None)
        self.assertLess(reactor.seconds() - deleted, WITHIN)
