"""Tests for L{rating.recovery}: abandoned holds settled from their
checkpoint, one CDR per recovered call, exactly once end to end.

The sweeper runs on a L{task.Clock} against the memory store, and against
Redis when C{REDIS_URL} is set; one test writes through the real
L{CDRWriter} into SQLite and shows a recovered CDR that duplicates one the
node wrote before it died is stored once.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import task
from twisted.internet.defer import Deferred, fail, inlineCallbacks, maybeDeferred, succeed
from twisted.trial.unittest import TestCase

from b2bua.db.model import entity
from b2bua.db.repository import decode
from rating.cdr import CDR, cdr_for_recovery
from rating.cdr_writer import CDRWriter
from rating.journal import FileJournal
from rating.recovery import CURSOR, Recovery
from rating.stores.interface import LedgerEntry
from rating.stores.memory import MemoryBalanceStore
from tests.trial.db.support import open_database
from tests.trial.rating.stores.test_contract import RedisSetup

T0 = 1_700_000_000.0
A = "customer:7"


def note(started: float, answered: float | None = None, **more: Any) -> str:
    """A recovery note as the charging session writes it."""
    return json.dumps({"v": 1, "caller": "sip:1000@example.com",
                       "callee": "sip:+442079460000@example.com", "tenant": "example.com",
                       "identity": "1000@example.com", "started_at": started,
                       "customer_id": 3, "account_id": 5, "currency": "EUR",
                       "answered_at": answered, **more})


class CollectingWriter:
    """Collects appended CDRs; can be made to fail."""

    def __init__(self) -> None:
        self.cdrs: list[CDR] = []
        self.failing = False

    def append(self, cdr: CDR) -> Deferred[None]:
        if self.failing:
            return fail(OSError("disk full"))
        self.cdrs.append(cdr)
        return succeed(None)


class RecoveryContract:
    """The sweeper against one balance store (C{make_store} on C{self.clock})."""

    clock: task.Clock

    def make_store(self) -> Any:
        raise NotImplementedError

    @inlineCallbacks
    def setUp(self) -> Any:
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.store = yield maybeDeferred(self.make_store)
        self.writer = CollectingWriter()
        self.registry = CollectorRegistry()
        self.recovery = Recovery(self.store, self.writer, self.clock, interval=10,
                                 batch=2, registry=self.registry)
        yield self.store.top_up(A, Decimal(10), "initial")

    @inlineCallbacks
    def dead_calls(self) -> Any:
        """Three calls of a node that died: answered with two checkpoints,
        answered before its first checkpoint, unanswered; and one live call
        whose node keeps extending it."""
        store = self.store
        yield store.reserve(A, "answered", Decimal(2), T0 + 60, note=note(T0))
        yield store.checkpoint(A, "answered", Decimal(0), note=note(T0, T0 + 3))
        self.clock.advance(30)
        yield store.checkpoint(A, "answered", Decimal("0.27"))
        yield store.reserve(A, "early", Decimal(1), T0 + 150, note=note(T0 + 30))
        yield store.checkpoint(A, "early", Decimal(0), note=note(T0 + 30, T0 + 31))
        yield store.reserve(A, "ringing", Decimal(1), T0 + 150, note=note(T0 + 30.5))
        yield store.reserve(A, "live", Decimal(1), T0 + 150, note=note(T0 + 30.25))

    def metric(self, answered: str) -> float:
        return self.registry.get_sample_value(
            "b2bua_recovered_calls_total", {"answered": answered}) or 0.0

    @inlineCallbacks
    def test_settles_and_writes_one_cdr_per_call(self) -> Any:
        """Once expired, each abandoned hold is settled from its last
        checkpoint and gets one CDR with its own id and start; a live call
        (extended in time) is left alone; nothing is charged twice."""
        yield self.dead_calls()
        self.assertEqual((yield self.recovery.run_once()), (0, 0))
        yield self.store.extend(A, "live", Decimal(1), T0 + 400)  # its node lives on
        self.clock.advance(35)  # T0 + 65: "answered" expired at T0 + 60
        self.assertEqual((yield self.recovery.run_once()), (1, 1))
        self.clock.advance(90)  # T0 + 155: "early" and "ringing" expired too
        self.assertEqual((yield self.recovery.run_once()), (2, 2))
        self.assertEqual((yield self.recovery.run_once()), (0, 0))
        by_id = {cdr.call_id: cdr for cdr in self.writer.cdrs}
        self.assertEqual(sorted(by_id), ["answered", "early", "ringing"])
        self.assertEqual(len(self.writer.cdrs), 3)
        answered = by_id["answered"]
        self.assertEqual((answered.started_at, answered.answered_at, answered.ended_at),
                         (T0, T0 + 3, T0 + 30))
        self.assertEqual((answered.billsec, answered.cost, answered.currency,
                          answered.disposition), (27, Decimal("0.27"), "EUR", "answered"))
        self.assertEqual((answered.caller, answered.callee, answered.customer_id,
                          answered.account_id),
                         ("sip:1000@example.com", "sip:+442079460000@example.com", 3, 5))
        self.assertEqual((answered.breakdown["disconnect"], answered.breakdown["partial"]),
                         ("recovered", True))
        early = by_id["early"]
        self.assertEqual((early.answered_at, early.ended_at, early.billsec, early.cost),
                         (T0 + 31, T0 + 31, 0, Decimal(0)))
        ringing = by_id["ringing"]
        self.assertEqual((ringing.disposition, ringing.answered_at, ringing.cost,
                          ringing.started_at), ("failed", None, Decimal(0), T0 + 30.5))
        balance = yield self.store.get_balance(A)
        self.assertEqual((balance.balance, balance.held), (Decimal("9.73"), Decimal(1)))
        self.assertEqual((self.metric("yes"), self.metric("no")), (2, 1))
        # the dead node's late commit charges nothing more
        late = yield self.store.commit(A, "answered", Decimal("5"), "late")
        self.assertTrue(late.recovered)
        self.assertEqual((yield self.store.get_balance(A)).balance, Decimal("9.73"))

    @inlineCallbacks
    def test_entries_settled_by_other_operations(self) -> Any:
        """A hold settled by another operation on the account (not by the
        sweep) still gets its CDR from the ledger."""
        yield self.dead_calls()
        self.clock.advance(35)
        yield self.store.get_balance(A)  # settles "answered" on the way
        self.assertEqual((yield self.recovery.run_once()), (0, 1))
        self.assertEqual([cdr.call_id for cdr in self.writer.cdrs], ["answered"])

    @inlineCallbacks
    def test_cursor_moves_only_after_durable_appends(self) -> Any:
        """A CDR append that fails keeps the cursor: the next run writes the
        CDR again (the SQL writer keeps one copy)."""
        yield self.dead_calls()
        self.clock.advance(200)
        self.writer.failing = True
        yield self.assertFailure(self.recovery.run_once(), Exception)
        self.assertEqual((yield self.store.ledger_cursor(CURSOR)), "0-0")
        self.writer.failing = False
        settled, written = yield self.recovery.run_once()
        self.assertEqual((settled, written), (0, 4))
        self.assertEqual(sorted(cdr.call_id for cdr in self.writer.cdrs),
                         ["answered", "early", "live", "ringing"])
        self.assertNotEqual((yield self.store.ledger_cursor(CURSOR)), "0-0")

    @inlineCallbacks
    def test_loop(self) -> Any:
        """start() runs at once and then every interval; stop() stops it."""
        yield self.dead_calls()
        yield self.recovery.start()
        self.assertEqual(self.writer.cdrs, [])
        self.clock.advance(70)
        self.assertEqual([cdr.call_id for cdr in self.writer.cdrs], ["answered"])
        yield self.recovery.stop()
        self.clock.advance(100)
        self.assertEqual(len(self.writer.cdrs), 1)


class MemoryRecoveryTests(RecoveryContract, TestCase):
    """The sweeper on the memory store."""

    def make_store(self) -> Any:
        return MemoryBalanceStore(self.clock)


class RedisRecoveryTests(RedisSetup, RecoveryContract, TestCase):
    """The sweeper on the Redis store (C{REDIS_URL})."""

    @inlineCallbacks
    def test_loop(self) -> Any:
        """The loop runs on the fake clock, but Redis answers on the real
        reactor: run steps by hand instead."""
        yield self.dead_calls()
        self.clock.advance(70)
        self.assertEqual((yield self.recovery.run_once()), (1, 1))


class RecoveredCDRTests(TestCase):
    """L{cdr_for_recovery} on odd entries, and the real writer."""

    def entry(self, note_text: str, checkpointed_at: float | None = T0 + 40) -> LedgerEntry:
        return LedgerEntry("1-0", "recovered", A, "call@x", "recovered", Decimal("0.5"),
                           Decimal("0.6"), Decimal("9.5"), T0 + 200, note_text, checkpointed_at)

    def test_full_cost_kept(self) -> None:
        """The CDR keeps the settled cost (a shortfall is the store's matter)."""
        cdr = cdr_for_recovery(self.entry(note(T0, T0 + 10)))
        self.assertEqual((cdr.cost, cdr.billsec, cdr.ended_at), (Decimal("0.6"), 30, T0 + 40))
        self.assertEqual(cdr.breakdown["recovered"]["debited"], "0.5")

    def test_no_note(self) -> None:
        """Without a note (a store written by an older node), the CDR still
        exists: the settlement time stands for the start, and it says so."""
        cdr = cdr_for_recovery(self.entry(""))
        self.assertEqual((cdr.call_id, cdr.started_at, cdr.disposition), ("call@x", T0 + 200,
                                                                           "failed"))
        self.assertIn("call start unknown", cdr.breakdown["problems"][0])

    def test_bad_notes(self) -> None:
        """A note that is not a JSON object is named, never fatal."""
        for text in ("{", "[1]", '"x"'):
            cdr = cdr_for_recovery(self.entry(text))
            self.assertEqual(cdr.call_id, "call@x")
            self.assertTrue(cdr.breakdown["problems"])

    def test_checkpoint_before_answer(self) -> None:
        """No checkpoint after the answer: ended at the answer, 0 s billed."""
        cdr = cdr_for_recovery(self.entry(note(T0, T0 + 50), checkpointed_at=None))
        self.assertEqual((cdr.answered_at, cdr.ended_at, cdr.billsec), (T0 + 50, T0 + 50, 0))

    async def test_duplicate_of_the_nodes_own_cdr_is_stored_once(self) -> None:
        """The node wrote its CDR, then died before its commit: recovery's
        CDR of the same call (same id, same start) is a duplicate and the
        node's own CDR is the one kept."""
        database = await open_database(self, "sqlite")
        directory = self.mktemp()
        os.makedirs(directory)
        journal = FileJournal(os.path.join(directory, "cdrs.journal"))
        self.addCleanup(journal.close)
        clock = task.Clock()
        clock.advance(T0 + 300)
        writer = CDRWriter(journal, database, clock, registry=CollectorRegistry())
        self.addCleanup(writer.stop, flush=False)
        own = CDR(call_id="call@x", started_at=T0, answered_at=T0 + 10, ended_at=T0 + 45,
                  billsec=35, disposition="answered", cost=Decimal("0.7"),
                  breakdown={"disconnect": "caller"})
        await writer.append(own)
        await writer.append(cdr_for_recovery(self.entry(note(T0, T0 + 10))))
        await writer.flush()

        def rows(connection: Any) -> list[dict[str, Any]]:
            return [decode(connection, entity("cdr"), r)
                    for r in connection.execute("SELECT * FROM cdrs")]

        stored = await database.run(rows)
        self.assertEqual([(r["call_id"], Decimal(r["cost"]), r["breakdown"]["disconnect"])
                          for r in stored], [("call@x", Decimal("0.7"), "caller")])
