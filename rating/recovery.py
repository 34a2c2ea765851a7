"""Crash recovery of charged calls (rating.md 3.6): settle abandoned holds
and write the CDRs of the calls a dead node could not finish.

A node that dies mid-call leaves its calls' holds in the balance store.
Each hold carries an expiry (moved by every extension) and a recovery note
(L{rating.cdr.recovery_note}: caller, callee, start, row ids, and the answer
time once answered).  Once the expiry passes, the hold is I{abandoned}:

    1. the sweep (every C{interval} seconds) lists expired holds of every
       account (L{IBalanceStore.expired}) and settles each
       (L{IBalanceStore.settle_expired}): the store debits the last
       checkpoint (the usage known to have happened; 0 for an unanswered
       call), closes the call's id so that nothing can charge it again, and
       appends a C{recovered} ledger entry carrying the note.  Any other
       operation on the account settles its expired holds the same way, so
       entries may appear without this sweep;
    2. the catch-up reads the ledger after this reader's cursor (kept in
       the store, shared by every node), turns each C{recovered} entry into
       a CDR (L{rating.cdr.cdr_for_recovery}) and appends it to the CDR
       journal; once those appends are durable, it moves the cursor.

Exactly once, end to end: the store settles a hold once; a CDR appended
twice (a crash between the append and the cursor move, or two nodes
catching up at once) has the same call id and start, so the SQL writer
keeps one; a CDR the node did write before dying (a crash between its CDR
and its commit) is kept and the recovered one is the duplicate.

Every node runs one L{Recovery}; it starts with a sweep and a catch-up, so
a restarted node settles what its previous life left as soon as the holds
expire (C{hold_grace} after their last horizon: see C{docs/charging.md}).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rating.cdr import cdr_for_recovery
from rating.stores.interface import IBalanceStore

__all__ = ["CURSOR", "DEFAULT_INTERVAL", "Recovery"]

#: The ledger cursor's name in the balance store.
CURSOR = "recovered-cdrs"
#: Seconds between two sweeps (rating.md 3.6: "a periodic sweeper every 10 s").
DEFAULT_INTERVAL = 10.0

log = Logger()


class Recovery:
    """The sweeper and the recovered-CDR writer of one node.

    @param store: the balance store (shared by the nodes).
    @param writer: what CDRs are appended to (L{rating.cdr_writer.CDRWriter}:
        C{append(cdr)} fires once the CDR is durable); C{None} settles holds
        without writing CDRs.
    @param clock: the node's clock (what "expired" means).
    @param interval: seconds between two runs.
    @param batch: holds settled and ledger entries read per step.
    @param registry: where C{b2bua_recovered_calls_total} is registered.
    """

    def __init__(self, store: IBalanceStore, writer: Any, clock: IReactorTime, *,
                 interval: float = DEFAULT_INTERVAL, batch: int = 500,
                 registry: CollectorRegistry | None = None) -> None:
        if interval <= 0 or batch < 1:
            raise ValueError("interval must be > 0 and batch >= 1")
        self.store = store
        self.writer = writer
        self.clock = clock
        self.interval = interval
        self.batch = batch
        self.settled = Counter(
            "b2bua_recovered_calls_total",
            "Abandoned holds settled by recovery (rating.md 3.6), by the CDR written",
            ["answered"], registry=registry)
        self._loop: LoopingCall | None = None
        self._running: Deferred[None] | None = None
        self._first: Deferred[None] | None = None

    def start(self) -> Deferred[None]:
        """Run now, then every C{interval} seconds; fires after the first run
        (whose failure is logged, not raised: the next run tries again)."""
        loop = self._loop = LoopingCall(self._tick)
        loop.clock = self.clock
        first: Deferred[None] = Deferred()
        self._first = first
        loop.start(self.interval, now=True).addErrback(
            lambda failure: log.failure("recovery: the loop stopped", failure))
        return first

    def stop(self) -> Deferred[None]:
        """Stop the loop; fires once a run in progress is over."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        running = self._running
        if running is None:
            return succeed(None)
        done: Deferred[None] = Deferred()
        running.addBoth(lambda result: (done.callback(None), result)[1])
        return done

    def _tick(self) -> None:
        if self._running is not None:
            return  # the previous run is still going (a slow store)
        d = self._running = self.run_once()

        def over(result: Any) -> None:
            self._running = None
            if hasattr(result, "getErrorMessage"):
                log.failure("recovery: run failed; next in {interval} s", result,
                            interval=self.interval)
            first, self._first = self._first, None
            if first is not None:
                first.callback(None)

        d.addBoth(over)

    def run_once(self) -> Deferred[Any]:
        """One sweep and one catch-up; fires with C{(settled, written)}."""
        return ensureDeferred(self._run())

    async def _run(self) -> tuple[int, int]:
        settled = await self.sweep()
        written = await self.catch_up()
        return settled, written

    async def sweep(self) -> int:
        """Settle every hold expired by now; the number settled here."""
        count = 0
        while True:
            expired = await self.store.expired(self.clock.seconds(), self.batch)
            if not expired:
                return count
            results = await DeferredList(
                [self.store.settle_expired(hold.account, hold.reservation_id)
                 for hold in expired], consumeErrors=True)
            progressed = 0
            for (ok, result), hold in zip(results, expired, strict=True):
                if not ok:
                    log.failure("recovery: settling {id} of {account} failed", result,
                                id=hold.reservation_id, account=hold.account)
                elif result is not None:
                    progressed += 1
            count += progressed
            if len(expired) < self.batch or progressed == 0:
                return count

    async def catch_up(self) -> int:
        """Write a CDR for every C{recovered} ledger entry after the cursor;
        the number of CDRs written."""
        written = 0
        cursor = await self.store.ledger_cursor(CURSOR)
        while True:
            entries = await self.store.ledger(cursor, self.batch)
            if not entries:
                return written
            recovered = [entry for entry in entries if entry.kind == "recovered"]
            if recovered and self.writer is not None:
                cdrs = [cdr_for_recovery(entry) for entry in recovered]
                # every append must be durable before the cursor moves past it
                await DeferredList([self.writer.append(cdr) for cdr in cdrs],
                                   fireOnOneErrback=True, consumeErrors=True)
                for cdr in cdrs:
                    self.settled.labels(answered="yes" if cdr.answered_at is not None
                                        else "no").inc()
                    log.info("recovery: call {call_id} settled from its checkpoint "
                             "({cost}); CDR written", call_id=cdr.call_id, cost=cdr.cost)
                written += len(cdrs)
            cursor = await self.store.advance_ledger_cursor(CURSOR, entries[-1].id)
            if len(entries) < self.batch:
                return written
