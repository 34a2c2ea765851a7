"""The CDR writer: journal first, then SQL in batches, never a CDR lost.

L{CDRWriter.append} is the durability point: it appends the CDR to an
L{IJournal} and its Deferred fires once the journal has it durably (what
C{b2bua_call_ended} returns, so drain and shutdown wait for it).  A loop on
the injected clock reads the journal in batches (C{batch_size}, every
C{interval} seconds, at once when a batch is full), inserts each batch in
one transaction, then confirms it in the journal.  A crash anywhere in
between replays the unconfirmed entries; L{insert_cdrs} is idempotent
(C{INSERT ... ON CONFLICT (call_id) DO NOTHING}), so each CDR is stored
exactly once.

Failures:

  - the database is down (or any error that may pass): the batch is kept
    and retried with exponential back-off (C{interval} doubling up to
    C{max_backoff}); nothing is confirmed, so nothing is lost;
  - the database refuses a batch for good (an integrity or data error):
    the batch is written row by row, and a row refused on its own is set
    aside in the journal's dead letters (never dropped, never blocking);
  - the journal refuses an append (disk full...): the CDR goes straight to
    the database in a transaction of its own; only if that fails too is it
    lost, and then it is logged in full at critical level;
  - a confirm fails: the rows are stored; the confirm is retried, and a
    replay in the meantime finds the rows already there.

Metrics (on the registry given): C{b2bua_cdr_queue_depth} (CDRs appended
and not yet written), C{b2bua_cdrs_written_total} (rows inserted; replayed
duplicates are not counted) and C{b2bua_cdr_write_errors_total{stage}}
(C{journal}, C{database}, C{confirm}, C{rejected}).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.db.database import Connection, Database
from b2bua.db.model import entity
from rating.cdr import CDR
from rating.journal import IJournal, JournalEntry

__all__ = ["ERROR_STAGES", "CDRWriter", "WriteResult", "insert_cdrs"]

log = Logger()

_ENTITY = entity("cdr")
_TYPES = {f.name: f.type for f in _ENTITY.fields}
_COLUMNS = tuple(f.name for f in _ENTITY.fields if f.name != "id")
#: Rows per INSERT statement (16 parameters each; well under every limit).
ROWS_PER_STATEMENT = 100
#: Values of the C{stage} label of C{b2bua_cdr_write_errors_total}.
ERROR_STAGES = ("journal", "database", "confirm", "rejected")
#: Exception class names (anywhere in the MRO) that no retry will fix.
_PERMANENT = frozenset({"IntegrityError", "DataError"})


@dataclass
class WriteResult:
    """What one L{insert_cdrs} did.

    @ivar inserted: rows added.
    @ivar duplicates: CDRs already stored (a replay): nothing added.
    @ivar renamed: call ids that another call already used (a caller that
        reuses a Call-ID), stored as C{CALLID;started=TIME} instead.
    @ivar unlinked: CDRs whose customer or account row does not exist; the
        ids were moved to C{breakdown["unlinked"]}.
    """

    inserted: int = 0
    duplicates: int = 0
    renamed: list[str] = field(default_factory=list)
    unlinked: int = 0


def _started(cdr: CDR) -> dt.datetime:
    return dt.datetime.fromtimestamp(cdr.started_at, dt.UTC)


def _renamed(cdr: CDR) -> CDR:
    """The same CDR under a call id that includes its start (deterministic)."""
    stamp = _started(cdr).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return replace(cdr, call_id=f"{cdr.call_id};started={stamp}")


def _existing(connection: Connection, table: str, ids: set[int]) -> set[int]:
    """Which of C{ids} are rows of C{table}."""
    if not ids:
        return set()
    marks = ", ".join("?" for _ in ids)
    rows = connection.execute(f"SELECT id FROM {table} WHERE id IN ({marks})", sorted(ids))
    return {row["id"] for row in rows}


def _link(connection: Connection, cdrs: list[CDR], result: WriteResult) -> list[CDR]:
    """Drop references to customers and accounts that do not exist (their
    foreign keys would refuse the whole batch), keeping them in the breakdown."""
    customers = _existing(connection, "customers",
                          {c.customer_id for c in cdrs if c.customer_id is not None})
    accounts = _existing(connection, "accounts",
                         {c.account_id for c in cdrs if c.account_id is not None})
    out = []
    for cdr in cdrs:
        missing = {}
        if cdr.customer_id is not None and cdr.customer_id not in customers:
            missing["customer_id"] = cdr.customer_id
        if cdr.account_id is not None and cdr.account_id not in accounts:
            missing["account_id"] = cdr.account_id
        if missing:
            result.unlinked += 1
            cdr = replace(cdr, customer_id=None if "customer_id" in missing else cdr.customer_id,
                          account_id=None if "account_id" in missing else cdr.account_id,
                          breakdown={**cdr.breakdown, "unlinked": missing})
        out.append(cdr)
    return out


def _insert(connection: Connection, cdrs: Sequence[CDR], now: dt.datetime) -> set[str]:
    """One multi-row insert; @return: the call ids it added."""
    to_db = connection.dialect.to_db
    row = "(" + ", ".join("?" for _ in _COLUMNS) + ")"
    sql = (f"INSERT INTO {_ENTITY.collection} ({', '.join(_COLUMNS)}) VALUES "
           + ", ".join(row for _ in cdrs)
           + " ON CONFLICT (call_id) DO NOTHING RETURNING call_id")
    params = []
    for cdr in cdrs:
        values = cdr.columns(now)
        params.extend(to_db(_TYPES[name], values[name]) for name in _COLUMNS)
    return {r["call_id"] for r in connection.execute(sql, params)}


def _starts(connection: Connection, call_ids: Sequence[str]) -> dict[str, dt.datetime]:
    """The stored C{started_at} of each of C{call_ids} that is stored."""
    marks = ", ".join("?" for _ in call_ids)
    rows = connection.execute(f"SELECT call_id, started_at FROM {_ENTITY.collection} "
                              f"WHERE call_id IN ({marks})", list(call_ids))
    from_db = connection.dialect.from_db
    return {r["call_id"]: from_db("timestamp", r["started_at"]) for r in rows}


def insert_cdrs(connection: Connection, cdrs: Sequence[CDR], now: dt.datetime) -> WriteResult:
    """Store C{cdrs} (inside L{Database.run}'s transaction), idempotently.

    A CDR whose call id is stored already is a duplicate when the stored
    row started at the same instant (a replay: nothing is written), and a
    different call otherwise, stored under L{_renamed}'s id (so that a
    caller reusing a Call-ID loses no CDR, and a replay of it is still a
    duplicate).  Both dialects use C{ON CONFLICT (call_id) DO NOTHING}, which
    ignores that one conflict only (SQLite's C{INSERT OR IGNORE} would also
    swallow a NOT NULL violation, silently dropping the row).
    """
    result = WriteResult()
    unique: dict[str, CDR] = {}
    later: list[CDR] = []
    for cdr in _link(connection, list(cdrs), result):
        first = unique.get(cdr.call_id)
        if first is None:
            unique[cdr.call_id] = cdr
        elif first.started_at == cdr.started_at:
            result.duplicates += 1
        else:
            later.append(cdr)
    pending = list(unique.values())
    for attempt in range(2):
        collided: list[CDR] = []
        for start in range(0, len(pending), ROWS_PER_STATEMENT):
            chunk = pending[start:start + ROWS_PER_STATEMENT]
            added = _insert(connection, chunk, now)
            result.inserted += len(added)
            rest = [c for c in chunk if c.call_id not in added]
            if not rest:
                continue
            stored = _starts(connection, [c.call_id for c in rest])
            for cdr in rest:
                if stored.get(cdr.call_id) == _started(cdr):
                    result.duplicates += 1
                elif attempt == 0:
                    collided.append(cdr)
                else:  # pragma: no cover - a renamed id includes the start instant
                    raise ValueError(f"call id {cdr.call_id!r} is stored for another call")
        pending = [_renamed(c) for c in collided + later]
        result.renamed.extend(c.call_id for c in collided + later)
        later = []
        if not pending:
            break
    return result


def _permanent(error: BaseException, database: Database) -> bool:
    """Whether no retry can store what raised C{error}."""
    if isinstance(error, TypeError | ValueError | ArithmeticError):
        return True
    if database.dialect.integrity_error(error) is not None:
        return True
    return any(cls.__name__ in _PERMANENT for cls in type(error).__mro__)


class _Stage(Exception):
    """A failure of one stage of a drain cycle (for the error metric)."""

    def __init__(self, stage: str, failure: Failure) -> None:
        super().__init__(f"{stage}: {failure.getErrorMessage()}")
        self.stage = stage
        self.failure = failure


class CDRWriter:
    """Appends CDRs to a journal and drains it to SQL (module docstring).

    @param journal: the L{IJournal} (durability point, replay source).
    @param database: a L{Database} migrated with L{b2bua.db.migrations}.
    @param clock: the only source of time (loop, back-off, row stamps).
    @param batch_size: CDRs per transaction.
    @param interval: seconds between drains when the queue is short; also
        the first back-off step.
    @param max_backoff: the longest wait between retries.
    @param registry: where the metrics go (the service's registry); a
        registry of its own when omitted.
    """

    def __init__(self, journal: IJournal, database: Database, clock: IReactorTime,
                 batch_size: int = 200, interval: float = 0.5, *, max_backoff: float = 30.0,
                 registry: CollectorRegistry | None = None) -> None:
        if batch_size < 1 or interval <= 0:
            raise ValueError("batch_size must be at least 1 and interval positive")
        self.journal = journal
        self.database = database
        self.clock = clock
        self.batch_size = batch_size
        self.interval = interval
        self.max_backoff = max(max_backoff, interval)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.queue_depth = Gauge("b2bua_cdr_queue_depth",
                                 "CDRs appended to the journal and not yet written to the "
                                 "database.", registry=self.registry)
        self.written = Counter("b2bua_cdrs_written",
                               "CDRs written to the database (replayed duplicates not "
                               "counted).", registry=self.registry)
        self.errors = Counter("b2bua_cdr_write_errors",
                              "Failures on a CDR's way to the database, by stage "
                              "(database and confirm are retried; rejected CDRs are set "
                              "aside in the journal's dead letters).", ["stage"],
                              registry=self.registry)
        for stage in ERROR_STAGES:
            self.errors.labels(stage)
        self.failures = 0
        self._depth = 0
        self._running = False
        self._timer: IDelayedCall | None = None
        self._cycle: Deferred[int] | None = None
        self._cycle_waiters: list[Deferred[None]] = []
        self._batch: list[tuple[JournalEntry, CDR]] | None = None
        self._unconfirmed: list[str] = []
        self._kick = False

    def __repr__(self) -> str:
        return f"<CDRWriter {self.journal!r} -> {self.database!r}>"

    # -- appending ---------------------------------------------------------------------

    def append(self, cdr: CDR) -> Deferred[None]:
        """Journal C{cdr}; fire once it is durable (or, if the journal
        failed, once it is in the database)."""
        d = self.journal.append(cdr.to_json())
        d.addCallbacks(self._appended, self._append_failed, errbackArgs=(cdr,))
        return d

    def _appended(self, entry_id: str) -> None:
        self._set_depth(self._depth + 1)
        if self._depth >= self.batch_size:
            if self._cycle is None:
                self._schedule(0)
            else:  # a full batch is waiting: no pause after the running cycle
                self._kick = True

    def _append_failed(self, failure: Failure, cdr: CDR) -> Deferred[None]:
        """The journal refused it: write this one CDR directly."""
        self.errors.labels("journal").inc()
        log.failure("CDR {call_id}: journal append failed; writing it directly",
                    failure, call_id=cdr.call_id)
        now = self._now()
        d = self.database.run(lambda connection: insert_cdrs(connection, [cdr], now))

        def stored(result: WriteResult) -> None:
            self.written.inc(result.inserted)

        def lost(second: Failure) -> Failure:
            self.errors.labels("database").inc()
            log.critical("CDR LOST (journal and database both failed: {error}); record: "
                         "{record}", error=second.getErrorMessage(),
                         record=json.dumps(cdr.to_json(), ensure_ascii=False))
            return second

        return d.addCallbacks(stored, lost)

    # -- the drain loop ----------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Start draining, beginning with what an earlier run left (replay)."""
        self._running = True
        self._schedule(0)
        return Deferred.fromCoroutine(self._resync())

    def _schedule(self, delay: float) -> None:
        """Run a cycle in C{delay} seconds (sooner if one is due sooner)."""
        if not self._running:
            return
        if self._timer is not None and self._timer.active():
            if self._timer.getTime() <= self.clock.seconds() + delay:
                return
            self._timer.cancel()
        self._timer = self.clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._cycle is not None or not self._running:
            return
        self._run_cycle(self._reschedule).addErrback(lambda _: None)

    def _reschedule(self, result: int | Failure) -> None:
        """After a loop cycle: at once after a full batch, after C{interval}
        otherwise, after the back-off on failure."""
        kick, self._kick = self._kick, False
        if not isinstance(result, Failure):
            self._schedule(0 if kick or result >= self.batch_size else self.interval)
            return
        delay = min(self.max_backoff, self.interval * 2 ** min(self.failures - 1, 30))
        log.warn("CDR writer: {error}; retrying in {delay} s ({depth} CDRs waiting)",
                 error=result.getErrorMessage(), delay=delay, depth=self._depth)
        self._schedule(delay)

    def _run_cycle(self, then: Callable[[int | Failure], None] | None = None) -> Deferred[int]:
        """One drain step, exclusive; counts its failures, calls C{then}
        with its outcome, and only then lets L{when_idle} waiters go."""
        cycle = Deferred.fromCoroutine(self._drain_once())
        self._cycle = cycle

        def done(result: Any) -> Any:
            self._cycle = None
            if isinstance(result, Failure):
                self.failures += 1
                stage = result.value.stage if isinstance(result.value, _Stage) else "database"
                self.errors.labels(stage).inc()
            else:
                self.failures = 0
            if then is not None:
                then(result)
            waiters, self._cycle_waiters = self._cycle_waiters, []
            for waiter in waiters:
                waiter.callback(None)
            return result

        return cycle.addBoth(done)

    def when_idle(self) -> Deferred[None]:
        """Fire when no cycle is running."""
        if self._cycle is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._cycle_waiters.append(d)
        return d

    async def _drain_once(self) -> int:
        """Read a batch (or retry the kept one), store it, confirm it.

        @return: how many journal entries it finished.
        """
        if self._unconfirmed:
            await self._confirm(self._unconfirmed)
        if self._batch is None:
            try:
                entries = await self.journal.read(self.batch_size)
            except Exception:
                raise _Stage("journal", Failure()) from None
            batch, bad = [], []
            for entry in entries:
                try:
                    if entry.record is None:
                        raise ValueError("undecodable journal entry")
                    batch.append((entry, CDR.from_json(entry.record)))
                except ValueError as error:
                    log.error("CDR journal entry {id} is not a CDR ({error}): set aside",
                              id=entry.id, error=str(error))
                    bad.append(entry)
            if bad:
                self.errors.labels("rejected").inc(len(bad))
                await self._set_aside(bad, "not a CDR record")
            if not batch:
                await self._resync()
                return len(bad)
            self._batch = batch
        batch = self._batch
        finished = len(batch)
        now = self._now()
        cdrs = [cdr for _, cdr in batch]
        try:
            result = await self.database.run(lambda c: insert_cdrs(c, cdrs, now))
        except Exception as error:
            if not _permanent(error, self.database):
                raise _Stage("database", Failure()) from None
            result = await self._one_by_one(batch, error)
        self._batch = None
        self._count(result)
        self._set_depth(max(0, self._depth - len(batch)))
        await self._confirm([entry.id for entry, _ in batch])
        await self._resync()
        return finished

    async def _one_by_one(self, batch: list[tuple[JournalEntry, CDR]],
                          error: Exception) -> WriteResult:
        """A batch refused for good: find the CDRs that are at fault."""
        log.warn("CDR writer: a batch of {count} was refused ({error}); writing it row by row",
                 count=len(batch), error=str(error))
        total = WriteResult()
        for entry, cdr in list(batch):
            now = self._now()
            try:
                result = await self.database.run(
                    lambda c, cdr=cdr, now=now: insert_cdrs(c, [cdr], now))
            except Exception as row_error:
                if not _permanent(row_error, self.database):
                    raise _Stage("database", Failure()) from None
                self.errors.labels("rejected").inc()
                log.error("CDR {call_id} refused by the database ({error}): set aside",
                          call_id=cdr.call_id, error=str(row_error))
                await self._set_aside([entry], f"refused by the database: {row_error}")
                batch.remove((entry, cdr))
                self._set_depth(max(0, self._depth - 1))
                continue
            total.inserted += result.inserted
            total.duplicates += result.duplicates
            total.renamed += result.renamed
            total.unlinked += result.unlinked
        return total

    async def _set_aside(self, entries: list[JournalEntry], reason: str) -> None:
        at = self._now().isoformat()
        try:
            await self.journal.set_aside(entries, f"{at} {reason}")
        except Exception:
            raise _Stage("journal", Failure()) from None

    async def _confirm(self, ids: list[str]) -> None:
        """Confirm C{ids}; on failure keep them for the next cycle."""
        try:
            await self.journal.confirm(ids)
        except Exception:
            self.errors.labels("confirm").inc()
            log.failure("CDR writer: confirming {count} stored CDRs failed (will retry)",
                        Failure(), count=len(ids))
            self._unconfirmed = list(ids)
        else:
            self._unconfirmed = []

    def _count(self, result: WriteResult) -> None:
        self.written.inc(result.inserted)
        if result.renamed:
            log.warn("CDR writer: call ids reused by other calls, stored renamed: {ids}",
                     ids=", ".join(result.renamed))
        if result.unlinked:
            log.warn("CDR writer: {count} CDRs name a customer or account that does not "
                     "exist (kept in breakdown.unlinked)", count=result.unlinked)

    async def _resync(self) -> None:
        """Read the queue depth from the journal."""
        try:
            self._set_depth(await self.journal.backlog())
        except Exception:
            log.failure("CDR writer: reading the journal's backlog failed", Failure())

    def _set_depth(self, depth: int) -> None:
        self._depth = depth
        self.queue_depth.set(depth)

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock.seconds(), dt.UTC)

    # -- draining on demand and stopping ------------------------------------------------

    @property
    def depth(self) -> int:
        """CDRs appended and not yet written (as last known)."""
        return self._depth

    def flush(self) -> Deferred[int]:
        """Drain until the journal is empty; fire with the entries finished,
        or fail with the first error (what is left stays in the journal)."""
        return Deferred.fromCoroutine(self._flush())

    async def _flush(self) -> int:
        total = 0
        while True:
            await self.when_idle()
            if self._cycle is not None:
                continue
            try:
                count = await self._run_cycle()
            except _Stage as error:
                error.failure.raiseException()
            total += count
            if count == 0 and self._batch is None:
                return total

    def stop(self, flush: bool = True) -> Deferred[None]:
        """Stop the loop; with C{flush}, first try to write what is queued
        (a failure is logged: the journal keeps the rest for the next start)."""
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        return Deferred.fromCoroutine(self._stop(flush))

    async def _stop(self, flush: bool) -> None:
        await self.when_idle()
        if not flush:
            return
        try:
            await self._flush()
        except Exception:
            log.failure("CDR writer: final flush failed; {depth} CDRs stay in the journal",
                        Failure(), depth=self._depth)
