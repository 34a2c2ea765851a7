"""Tests for L{rating.cdr_writer} and the C{cdrs} plugin: CDRs journaled,
written in batches, idempotently, through a database outage and a crash.

The writer contract runs against SQLite always and PostgreSQL when
C{DATABASE_URL} is set (skipped without it, failing under C{CI=true}), with
a L{FileJournal}; one test also uses L{RedisStreamJournal} when
C{REDIS_URL} is set.  SQL runs in worker threads, so these tests use the
real reactor for the database; the writer's own clock is a L{task.Clock}
that the tests advance.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase, TestCase

from b2bua.core.call import CallRecord, LegRecord
from b2bua.core.location_redis import redis_connection_args
from b2bua.db.model import entity
from b2bua.db.repository import decode
from b2bua.testing import SwitchHarness
from plugins.cdrs import CDRs
from rating.cdr import CDR, build_cdr
from rating.cdr_writer import CDRWriter, insert_cdrs
from rating.journal import FileJournal, JournalError, RedisStreamJournal
from tests.trial.db.support import open_database, stack
from tests.trial.redis_support import redis_skip, require_redis_url

T0 = 1_700_000_000.0


def make_cdr(n: int, *, started: float = T0, cost: str = "0.070000", **changes: Any) -> CDR:
    """The CDR of answered call C{n} (two attempts, the second answered)."""
    record = CallRecord(
        call_id=f"call-{n}@example.com", caller="sip:1000@127.0.0.1",
        callee="sip:+3120555@127.0.0.1", tenant="127.0.0.1", received_at=started,
        answered_at=started + 2.5, ended_at=started + 62.0, code=200, reason="OK",
        disconnect="caller",
        legs=[LegRecord("vendor:a", "sip:+3120555@192.0.2.1", started, None, started + 62,
                        503, "Service Unavailable"),
              LegRecord("vendor:b", "sip:+3120555@192.0.2.2", started + 1, started + 2.5,
                        started + 62, 200, "OK")])
    cdr = build_cdr(record, charging={"cost": Decimal(cost), "currency": "EUR",
                                      "legs": [None, {"vendor": "B", "cost": "0.03"}]})
    return CDR(**{**cdr.__dict__, **changes})


class Down(Exception):
    """The database is unreachable (a stand-in for OperationalError)."""


class FlakyDatabase:
    """A L{Database} that can be taken down; counts transactions."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.dialect = real.dialect
        self.down = False
        self.runs = 0

    def run(self, fn: Any) -> Deferred[Any]:
        """Fail while down, else run on the real database."""
        self.runs += 1
        if self.down:
            return fail(Down("connection refused"))
        return self.real.run(fn)


class LossyJournal:
    """Wraps a journal: appends may fail; confirms may be lost (a crash
    right after the database commit)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.fail_appends = False
        self.drop_confirms = False

    def append(self, record: dict[str, Any]) -> Deferred[str]:
        """Fail when told to."""
        if self.fail_appends:
            return fail(JournalError("No space left on device"))
        return self.real.append(record)

    def confirm(self, ids: Any) -> Deferred[None]:
        """Do nothing when told to."""
        return succeed(None) if self.drop_confirms else self.real.confirm(ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class WriterContract:
    """The writer against one SQL dialect."""

    dialect = ""
    timeout = 60

    async def setUp(self) -> None:
        """A migrated database, a journal in a fresh directory, a writer."""
        self.database = await open_database(self, self.dialect)
        directory = self.mktemp()  # type: ignore[attr-defined]
        os.makedirs(directory)
        self.path = os.path.join(directory, "cdrs.journal")
        self.clock = task.Clock()
        self.clock.advance(T0 + 100)
        self.journal = self.open_journal()
        self.writer = self.make_writer()

    def open_journal(self) -> FileJournal:
        """The journal file, opened (closed after the test)."""
        journal = FileJournal(self.path)
        self.addCleanup(journal.close)  # type: ignore[attr-defined]
        return journal

    def make_writer(self, journal: Any = None, database: Any = None, **options: Any) -> CDRWriter:
        """A writer with a registry of its own."""
        options.setdefault("batch_size", 4)
        writer = CDRWriter(journal or self.journal, database or self.database, self.clock,
                           registry=CollectorRegistry(), **options)
        self.addCleanup(writer.stop, flush=False)  # type: ignore[attr-defined]
        return writer

    async def rows(self) -> list[dict[str, Any]]:
        """Every stored CDR, decoded, by call id."""
        e = entity("cdr")

        def txn(connection: Any) -> list[dict[str, Any]]:
            rows = connection.execute("SELECT * FROM cdrs ORDER BY call_id")
            return [decode(connection, e, r) for r in rows]

        return await self.database.run(txn)

    def metric(self, writer: CDRWriter, name: str, **labels: str) -> float:
        """A sample of the writer's registry."""
        return writer.registry.get_sample_value(name, labels) or 0.0

    async def tick(self, seconds: float) -> None:
        """Let C{seconds} pass on the writer's clock and its cycle finish."""
        self.clock.advance(seconds)
        await self.writer.when_idle()

    # -- writing -------------------------------------------------------------------------

    async def test_append_then_flush(self) -> None:
        """Appended CDRs reach the table exactly as built: exact cost, legs
        and breakdown as JSON, times in UTC, stamped by the writer's clock."""
        cdrs = [make_cdr(n) for n in range(3)]
        for cdr in cdrs:
            self.assertIsNone(await self.writer.append(cdr))
        self.assertEqual(self.metric(self.writer, "b2bua_cdr_queue_depth"), 3)
        self.assertEqual(await self.writer.flush(), 3)
        rows = await self.rows()
        self.assertEqual([r["call_id"] for r in rows], [c.call_id for c in cdrs])
        row, cdr = rows[0], cdrs[0]
        columns = cdr.columns(row["created_at"])
        for name in ("customer_id", "account_id", "caller", "callee", "started_at",
                     "answered_at", "ended_at", "billsec", "disposition", "cost", "currency",
                     "legs", "breakdown"):
            self.assertEqual(row[name], columns[name], name)
        self.assertEqual(str(row["cost"]), "0.070000")
        self.assertEqual(row["legs"][1]["cost"], "0.03")
        self.assertEqual(row["created_at"].timestamp(), T0 + 100)
        self.assertEqual(self.metric(self.writer, "b2bua_cdrs_written_total"), 3)
        self.assertEqual(self.metric(self.writer, "b2bua_cdr_queue_depth"), 0)
        self.assertEqual(await self.journal.backlog(), 0)

    async def test_batches(self) -> None:
        """Each batch of C{batch_size} is one transaction."""
        counting = FlakyDatabase(self.database)
        writer = self.make_writer(database=counting, batch_size=3)
        for n in range(7):
            await writer.append(make_cdr(n))
        await writer.flush()
        self.assertEqual(counting.runs, 3)
        self.assertEqual(len(await self.rows()), 7)

    async def test_same_cdr_twice_stored_once(self) -> None:
        """Writing the same CDR twice (in one batch, or again later) stores
        one row and counts one write."""
        await self.writer.append(make_cdr(1))
        await self.writer.append(make_cdr(1))
        await self.writer.flush()
        await self.writer.append(make_cdr(1))
        await self.writer.flush()
        self.assertEqual([r["call_id"] for r in await self.rows()], ["call-1@example.com"])
        self.assertEqual(self.metric(self.writer, "b2bua_cdrs_written_total"), 1)
        now = dt.datetime.fromtimestamp(T0, dt.UTC)
        result = await self.database.run(lambda c: insert_cdrs(c, [make_cdr(1)] * 2, now))
        self.assertEqual((result.inserted, result.duplicates), (0, 2))

    async def test_call_id_reused_by_another_call(self) -> None:
        """Another call with a used Call-ID (another start) is not taken for
        a duplicate: it is stored under a derived id, and a replay of it is
        a duplicate again."""
        await self.writer.append(make_cdr(1))
        await self.writer.flush()
        later = make_cdr(1, started=T0 + 3600, cost="1.5")
        await self.writer.append(later)
        await self.writer.append(later)
        await self.writer.flush()
        await self.writer.append(later)
        await self.writer.flush()
        rows = await self.rows()
        self.assertEqual([r["call_id"] for r in rows],
                         ["call-1@example.com",
                          "call-1@example.com;started=2023-11-14T23:13:20.000000Z"])
        self.assertEqual(rows[1]["cost"], Decimal("1.5"))
        self.flushLoggedErrors()  # type: ignore[attr-defined]

    async def test_unknown_customer_kept_in_breakdown(self) -> None:
        """A CDR naming a customer or account that does not exist is stored
        without the reference (its foreign key would refuse the batch), the
        ids kept in C{breakdown.unlinked}; existing ones are linked."""
        _, _, build = stack(self.database)
        tenant = await build.tenant()
        await self.writer.append(make_cdr(1, customer_id=tenant.customer_id,
                                          account_id=tenant.account_id))
        await self.writer.append(make_cdr(2, customer_id=999_999, account_id=tenant.account_id))
        await self.writer.flush()
        first, second = await self.rows()
        self.assertEqual((first["customer_id"], first["account_id"]),
                         (tenant.customer_id, tenant.account_id))
        self.assertNotIn("unlinked", first["breakdown"])
        self.assertEqual((second["customer_id"], second["account_id"]),
                         (None, tenant.account_id))
        self.assertEqual(second["breakdown"]["unlinked"], {"customer_id": 999_999})

    # -- failures ------------------------------------------------------------------------

    async def test_database_down_then_up(self) -> None:
        """While the database is down the batch is retried with back-off
        (interval doubling to max_backoff) and nothing is confirmed; once it
        is back every CDR is stored, once."""
        flaky = FlakyDatabase(self.database)
        self.writer = writer = self.make_writer(database=flaky, interval=0.5, max_backoff=4)
        await writer.start()
        flaky.down = True
        for n in range(6):
            await writer.append(make_cdr(n))
        await self.tick(0)
        delays = []
        for _ in range(5):
            delay = writer._timer.getTime() - self.clock.seconds()  # type: ignore[union-attr]
            delays.append(delay)
            await self.tick(delay)
        self.assertEqual(delays, [0.5, 1, 2, 4, 4])
        self.assertEqual(writer.failures, 6)
        self.assertEqual(self.metric(writer, "b2bua_cdr_write_errors_total", stage="database"), 6)
        self.assertEqual(self.metric(writer, "b2bua_cdr_queue_depth"), 6)
        self.assertEqual(await self.journal.backlog(), 6)
        self.assertEqual(await self.rows(), [])
        flaky.down = False
        while writer.depth:
            await self.tick(writer._timer.getTime() - self.clock.seconds())  # type: ignore[union-attr]
        self.assertEqual(len(await self.rows()), 6)
        self.assertEqual(writer.failures, 0)
        self.assertEqual(self.metric(writer, "b2bua_cdrs_written_total"), 6)
        self.assertEqual(await self.journal.backlog(), 0)

    async def test_replay_after_crash(self) -> None:
        """A writer dies after a batch was committed but before it was
        confirmed: a new writer on the same journal writes what was not
        confirmed, and every CDR is stored exactly once."""
        lossy = LossyJournal(self.journal)
        first = self.make_writer(journal=lossy, batch_size=4)
        for n in range(10):
            await first.append(make_cdr(n))
        await first.start()
        self.clock.advance(0)
        await first.when_idle()  # batch 1: written and confirmed
        lossy.drop_confirms = True
        self.clock.advance(0)
        await first.when_idle()  # batch 2: written, the confirm lost
        self.assertEqual(len(await self.rows()), 8)
        await first.stop(flush=False)
        await self.journal.close()  # the process is gone
        self.journal = self.open_journal()
        second = self.make_writer(batch_size=4)
        self.assertEqual(await self.journal.backlog(), 6)
        self.assertEqual(await second.flush(), 6)
        rows = await self.rows()
        self.assertEqual(sorted(r["call_id"] for r in rows),
                         sorted(f"call-{n}@example.com" for n in range(10)))
        self.assertEqual(self.metric(second, "b2bua_cdrs_written_total"), 2)
        self.assertEqual(await self.journal.backlog(), 0)

    async def test_start_replays(self) -> None:
        """A writer started on a journal with entries writes them."""
        for n in range(5):
            await self.journal.append(make_cdr(n).to_json())
        await self.writer.start()
        self.assertEqual(self.metric(self.writer, "b2bua_cdr_queue_depth"), 5)
        await self.tick(0)
        await self.tick(0)
        self.assertEqual(len(await self.rows()), 5)
        self.assertEqual(self.metric(self.writer, "b2bua_cdr_queue_depth"), 0)

    async def test_full_batch_drains_at_once(self) -> None:
        """A full batch does not wait for the interval."""
        await self.writer.start()
        await self.tick(0)
        for n in range(4):
            await self.writer.append(make_cdr(n))
        await self.tick(0)
        self.assertEqual(len(await self.rows()), 4)
        await self.tick(0)  # a full batch: look again at once (nothing more)
        await self.writer.append(make_cdr(9))
        await self.tick(0.4)
        self.assertEqual(len(await self.rows()), 4)
        await self.tick(0.1)
        self.assertEqual(len(await self.rows()), 5)

    async def test_refused_cdr_set_aside(self) -> None:
        """A CDR the database refuses for good (a value out of range) is set
        aside in the journal's dead letters; the rest of its batch is
        stored, and the queue goes on."""
        await self.writer.append(make_cdr(1))
        await self.writer.append(make_cdr(2, billsec=2**63))
        await self.writer.append(make_cdr(3))
        await self.writer.flush()
        self.assertEqual([r["call_id"] for r in await self.rows()],
                         ["call-1@example.com", "call-3@example.com"])
        self.assertEqual(self.metric(self.writer, "b2bua_cdr_write_errors_total",
                                     stage="rejected"), 1)
        self.assertEqual(await self.journal.backlog(), 0)
        with open(self.path + ".rejected", encoding="utf-8") as letters:
            (letter,) = letters.read().splitlines()
        self.assertIn("call-2@example.com", letter)
        self.assertIn("refused by the database", letter)

    async def test_not_a_cdr_set_aside(self) -> None:
        """A journal entry that is not a CDR is set aside, not retried."""
        await self.journal.append({"what": "else"})
        await self.writer.append(make_cdr(1))
        await self.writer.flush()
        self.assertEqual(len(await self.rows()), 1)
        self.assertEqual(await self.journal.backlog(), 0)
        self.assertTrue(os.path.exists(self.path + ".rejected"))

    async def test_journal_failure_writes_directly(self) -> None:
        """When the journal refuses an append the CDR is written to the
        database at once; if that fails too the append fails (and the CDR
        is logged in full)."""
        lossy = LossyJournal(self.journal)
        flaky = FlakyDatabase(self.database)
        writer = self.make_writer(journal=lossy, database=flaky)
        lossy.fail_appends = True
        await writer.append(make_cdr(1))
        self.assertEqual(len(await self.rows()), 1)
        self.assertEqual(self.metric(writer, "b2bua_cdr_write_errors_total", stage="journal"), 1)
        self.assertEqual(self.metric(writer, "b2bua_cdrs_written_total"), 1)
        flaky.down = True
        with self.assertRaises(Down):
            await writer.append(make_cdr(2))
        self.flushLoggedErrors(JournalError)  # type: ignore[attr-defined]

    async def test_stop_flushes(self) -> None:
        """Stopping writes what is queued; with the database down it leaves
        it in the journal for the next start."""
        flaky = FlakyDatabase(self.database)
        writer = self.make_writer(database=flaky)
        await writer.start()
        await writer.append(make_cdr(1))
        await writer.stop()
        self.assertEqual(len(await self.rows()), 1)
        writer = self.make_writer(database=flaky)
        await writer.start()
        await writer.append(make_cdr(2))
        flaky.down = True
        await writer.stop()
        self.assertEqual(await self.journal.backlog(), 1)
        self.flushLoggedErrors(Down)  # type: ignore[attr-defined]
        self.assertEqual(self.clock.getDelayedCalls(), [])

    async def test_metrics_registered(self) -> None:
        """The three metrics are on the registry given, errors by stage."""
        registry = CollectorRegistry()
        CDRWriter(self.journal, self.database, self.clock, registry=registry)
        names = {m.name for m in registry.collect()}
        self.assertEqual(names, {"b2bua_cdr_queue_depth", "b2bua_cdrs_written",
                                 "b2bua_cdr_write_errors"})
        for stage in ("journal", "database", "confirm", "rejected"):
            self.assertEqual(registry.get_sample_value("b2bua_cdr_write_errors_total",
                                                       {"stage": stage}), 0)


class SQLiteWriterTests(WriterContract, TestCase):
    """The writer on SQLite."""

    dialect = "sqlite"


class PostgreSQLWriterTests(WriterContract, TestCase):
    """The writer on PostgreSQL (C{DATABASE_URL})."""

    dialect = "postgresql"


class RedisWriterTests(TestCase):
    """A node dies with CDRs read from the Redis stream and not confirmed:
    another node's writer takes them over and stores each once."""

    timeout = 30
    skip = redis_skip("Redis journal tests")

    async def test_dead_node_taken_over(self) -> None:
        """Node A appends 6 and writes 3 without confirming (it dies);
        node B claims A's entries and writes all 6 exactly once."""
        import txredisapi

        url = require_redis_url(self, "Redis journal tests")
        redis = await txredisapi.Connection(reconnect=False, connectTimeout=5, replyTimeout=10,
                                            **redis_connection_args(url))
        self.addCleanup(redis.disconnect)
        stream = f"test:b2bua:cdrs:{uuid.uuid4().hex}"
        self.addCleanup(redis.execute_command, "DEL", stream, stream + ":rejected")
        database = await open_database(self, "sqlite")
        clock = task.Clock()
        node_a = LossyJournal(RedisStreamJournal(redis, stream, consumer="a"))
        writer_a = CDRWriter(node_a, database, clock, batch_size=3)
        for n in range(6):
            await writer_a.append(make_cdr(n))
        node_a.drop_confirms = True
        await writer_a.start()
        clock.advance(0)
        await writer_a.when_idle()
        await writer_a.stop(flush=False)
        node_b = RedisStreamJournal(redis, stream, consumer="b", claim_idle=0)
        writer_b = CDRWriter(node_b, database, clock, batch_size=3)
        await writer_b.flush()
        rows = await database.run(lambda c: c.execute("SELECT call_id FROM cdrs"))
        self.assertEqual(sorted(r["call_id"] for r in rows),
                         sorted(f"call-{n}@example.com" for n in range(6)))
        self.assertEqual(await node_b.backlog(), 0)
        self.assertEqual(writer_b.registry.get_sample_value("b2bua_cdrs_written_total"), 3)


class PluginTests(SynchronousTestCase):
    """The C{cdrs} plugin on the switch harness (journal only: the
    database side is covered above)."""

    def setUp(self) -> None:
        """A switch with the plugin and a writer on a file journal."""
        directory = self.mktemp()
        os.makedirs(directory)
        self.journal = FileJournal(os.path.join(directory, "cdrs.journal"))
        self.addCleanup(self.journal.close)
        self.plugin = CDRs()
        self.h = SwitchHarness({"cdrs": self.plugin})
        self.writer = CDRWriter(self.journal, None, self.h.clock,  # type: ignore[arg-type]
                                registry=self.h.metrics.registry)
        self.h.services.extra["cdr_writer"] = self.writer
        self.plugin.b2bua_configure(self.h.services, {"cdrs": {"settle_timeout": 5}})
        self.alice = self.h.register("1000")
        self.bob = self.h.register("1001")

    def journaled(self) -> list[CDR]:
        """The CDRs in the journal."""
        entries = self.successResultOf(self.journal.read(100))
        return [CDR.from_json(e.record) for e in entries if e.record is not None]

    def call(self) -> None:
        """Alice calls bob, who answers; 30 s later alice hangs up."""
        call = self.alice.call("1001")
        self.bob.incoming[0].answer()
        self.h.advance(30)
        call.hangup()

    def test_answered_call_journaled(self) -> None:
        """A call's CDR is in the journal when the call has ended, on the
        service's registry."""
        self.call()
        (cdr,) = self.journaled()
        self.assertEqual((cdr.caller, cdr.callee, cdr.disposition, cdr.billsec),
                         ("sip:1000@127.0.0.1", "sip:1001@127.0.0.1", "answered", 30))
        self.assertEqual(cdr.breakdown["identity"], "1000@127.0.0.1")
        self.assertEqual(self.h.metric("b2bua_cdr_queue_depth"), 1)
        self.h.settle()
        self.h.assert_idle()

    def test_rejected_call_journaled(self) -> None:
        """A call that fails gets its CDR too."""
        self.alice.call("1099")
        (cdr,) = self.journaled()
        self.assertEqual((cdr.disposition, cdr.breakdown["code"]), ("rejected", 404))
        self.h.settle()

    def test_waits_for_charging(self) -> None:
        """With a C{settled} Deferred in the charging data the CDR waits for
        it and has the final cost."""
        settled: Deferred[None] = Deferred()
        charging: dict[str, Any] = {"settled": settled}

        class Charger:
            from b2bua.hookspecs import hookimpl

            @hookimpl
            def b2bua_call_received(self, call: Any, request: Any) -> None:
                call.data["charging"] = charging

        self.h.pm.register(Charger(), name="charger")
        self.call()
        self.assertEqual(self.journaled(), [])
        charging.update(cost=Decimal("0.25"), currency="EUR")
        settled.callback(None)
        (cdr,) = self.journaled()
        self.assertEqual((cdr.cost, cdr.currency), (Decimal("0.25"), "EUR"))
        self.h.settle()
        self.h.assert_idle()

    def test_charging_session_shape(self) -> None:
        """The charging session as docs/charging.md describes it: an object
        whose C{settled} property is a new Deferred on each access, and
        whose C{cost} and C{billsec} are known once it has settled."""
        waiters: list[Deferred[Any]] = []

        class Session:
            cost: Decimal | None = None
            billsec: int | None = None
            currency = "EUR"
            breakdown = None

            @property
            def settled(self) -> Deferred[Any]:
                d: Deferred[Any] = Deferred()
                waiters.append(d)
                return d

        session = Session()

        class Charger:
            from b2bua.hookspecs import hookimpl

            @hookimpl
            def b2bua_call_received(self, call: Any, request: Any) -> None:
                call.data["charging"] = session

        self.h.pm.register(Charger(), name="charger")
        self.call()
        self.assertEqual((len(waiters), self.journaled()), (1, []))
        session.cost, session.billsec = Decimal("0.600000"), 60
        waiters[0].callback(None)
        (cdr,) = self.journaled()
        self.assertEqual((cdr.cost, cdr.currency, cdr.billsec), (Decimal("0.6"), "EUR", 60))
        self.h.settle()
        self.h.assert_idle()

    def test_charging_never_settles(self) -> None:
        """A charging commit that takes longer than C{settle_timeout} does
        not hold the CDR back for ever."""
        charging: dict[str, Any] = {"settled": Deferred()}

        class Charger:
            from b2bua.hookspecs import hookimpl

            @hookimpl
            def b2bua_call_received(self, call: Any, request: Any) -> None:
                call.data["charging"] = charging

        self.h.pm.register(Charger(), name="charger")
        self.call()
        self.h.advance(5)
        (cdr,) = self.journaled()
        self.assertEqual(cdr.breakdown["charging"], "unsettled: timed out")
        self.h.settle()
        self.h.assert_idle()

    def test_waits_for_every_recording_producer(self) -> None:
        """Files listed at the end and files of a producer that finishes
        later (registered with C{add_recording_wait}) are all in the CDR's
        C{breakdown.recordings}, which waits for the later one."""
        from media.call_recording import add_recording, add_recording_wait

        later: Deferred[None] = Deferred()
        calls: list[Any] = []

        class Producers:
            from b2bua.hookspecs import hookimpl

            @hookimpl(tryfirst=True)
            def b2bua_call_ended(self, call: Any, record: Any) -> None:
                calls.append(call)
                add_recording(call, "/rec/a.wav", "stereo", 30000, "relay")
                add_recording_wait(call, later)

        self.h.pm.register(Producers(), name="producers")
        self.call()
        self.assertEqual(self.journaled(), [])
        add_recording(calls[0], "/rec/b.wav", "stereo", 29000, "media_server")
        later.callback(None)
        (cdr,) = self.journaled()
        self.assertEqual(cdr.breakdown["recordings"], [
            {"path": "/rec/a.wav", "mode": "stereo", "duration_ms": 30000, "source": "relay"},
            {"path": "/rec/b.wav", "mode": "stereo", "duration_ms": 29000,
             "source": "media_server"}])
        self.assertNotIn("charging", cdr.breakdown)
        self.h.settle()
        self.h.assert_idle()

    def test_failed_recording_producer_is_not_a_charging_failure(self) -> None:
        """A recording producer that fails lets the CDR go with what is
        known, and only a failed charging commit is noted as such."""
        from media.call_recording import add_recording_wait

        later: Deferred[None] = Deferred()
        settled: Deferred[None] = Deferred()

        class Producers:
            from b2bua.hookspecs import hookimpl

            @hookimpl
            def b2bua_call_received(self, call: Any, request: Any) -> None:
                call.data["charging"] = {"settled": settled}

            @hookimpl(tryfirst=True)
            def b2bua_call_ended(self, call: Any, record: Any) -> None:
                add_recording_wait(call, later)

        self.h.pm.register(Producers(), name="producers")
        self.call()
        later.errback(RuntimeError("disk gone"))
        self.assertEqual(self.journaled(), [])
        settled.errback(RuntimeError("store down"))
        (cdr,) = self.journaled()
        self.assertEqual(cdr.breakdown["charging"], "unsettled: charging failed")
        self.assertNotIn("recordings", cdr.breakdown)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 0)
        self.h.settle()
        self.h.assert_idle()

    def late_recording_producer(self, outcome: Exception | None) -> CDR:
        """A call whose charging commit settles (or fails with C{outcome})
        at once and whose recording producer never finishes: its CDR,
        which comes after C{settle_timeout} (5 s) and not before."""
        from media.call_recording import add_recording_wait

        settled: Deferred[None] = Deferred()

        class Producers:
            from b2bua.hookspecs import hookimpl

            @hookimpl
            def b2bua_call_received(self, call: Any, request: Any) -> None:
                call.data["charging"] = {"settled": settled}

            @hookimpl(tryfirst=True)
            def b2bua_call_ended(self, call: Any, record: Any) -> None:
                add_recording_wait(call, Deferred())

        self.h.pm.register(Producers(), name="producers")
        self.call()
        if outcome is None:
            settled.callback(None)
        else:
            settled.errback(outcome)
        self.h.advance(4.9)
        self.assertEqual(self.journaled(), [])
        self.h.advance(0.2)
        (cdr,) = self.journaled()
        self.h.settle()
        self.h.assert_idle()
        return cdr

    def test_late_recording_producer_not_blamed_on_charging(self) -> None:
        """The time-out of a recording producer is not a charging time-out."""
        self.assertNotIn("charging", self.late_recording_producer(None).breakdown)

    def test_late_recording_producer_keeps_charging_failure(self) -> None:
        """A charging failure is still noted when a producer is late."""
        cdr = self.late_recording_producer(RuntimeError("store down"))
        self.assertEqual(cdr.breakdown["charging"], "unsettled: charging failed")

    def test_idle_without_writer(self) -> None:
        """Without a writer in C{services.extra} the plugin does nothing."""
        plugin = CDRs()
        h = SwitchHarness({"cdrs": plugin})
        self.assertIsNone(plugin.writer)
        alice, bob = h.register("1000"), h.register("1001")
        call = alice.call("1001")
        bob.incoming[0].answer()
        call.hangup()
        h.settle()
        h.assert_idle()
        self.assertEqual(h.metric("b2bua_plugin_errors_total", hook="b2bua_call_ended"), 0)
