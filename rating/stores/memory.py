"""L{IBalanceStore} in dicts: one node, the embedded demo, and tests.

It keeps exactly what the Redis store keeps (integer micro-units, times in
milliseconds) and applies the same rules in the same order, so the one
contract suite holds for both.  Operations complete before they return (the
Deferreds have already fired), which is what makes each one atomic here.

Memory is bounded the way Redis bounds it: closed reservation ids are
forgotten C{done_ttl} seconds after closing, and the ledger keeps its last
C{max_ledger} entries, give or take a sixteenth (the memory store has no
CDR writer draining it).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from rating.money import MAX_MICROS, from_micros
from rating.stores.interface import (
    DEFAULT_DONE_TTL,
    RECOVERED_REFERENCE,
    SETTLE_BATCH,
    Balance,
    Commit,
    ExpiredHold,
    Hold,
    IBalanceStore,
    InsufficientFunds,
    InvalidAmount,
    InvalidRequest,
    LedgerEntry,
    ReservationClosed,
    ReservationConflict,
    UnknownReservation,
    amount_micros,
    check_cursor,
    check_key,
    check_note,
    parse_entry_id,
    refusals_as_failures,
    time_ms,
)

__all__ = ["MemoryBalanceStore"]


@dataclass(slots=True)
class _Hold:
    """One hold, as the Redis store's record keeps it."""

    amount: int
    expires_ms: int
    checkpoint: int = 0
    checkpoint_ms: int = 0
    note: str = ""


@dataclass(slots=True)
class _Account:
    """One account: money in micro-units, its holds and top-up references."""

    balance: int = 0
    credit_limit: int = 0
    held: int = 0
    holds: dict[str, _Hold] = field(default_factory=dict)
    top_ups: set[str] = field(default_factory=set)

    @property
    def available(self) -> int:
        """C{balance + credit_limit - held}, micro-units."""
        return self.balance + self.credit_limit - self.held


@implementer(IBalanceStore)
class MemoryBalanceStore:
    """L{IBalanceStore} in process memory.

    @param clock: the store's clock: what "now" is when expired holds are
        settled, checkpoints stamped and commits dated.
    @param done_ttl: seconds a closed reservation id is remembered.
    @param max_ledger: ledger entries kept (the oldest go first).
    """

    def __init__(self, clock: IReactorTime, done_ttl: float = DEFAULT_DONE_TTL,
                 max_ledger: int = 100_000) -> None:
        self._clock = clock
        self._done_ttl_ms = time_ms("done_ttl", done_ttl)
        self._max_ledger = max_ledger
        self._accounts: dict[str, _Account] = {}
        #: (account, reservation id) -> (commit, forget at ms); closing order
        self._done: OrderedDict[tuple[str, str], tuple[Commit, int]] = OrderedDict()
        self._ledger: list[LedgerEntry] = []
        self._ledger_keys: list[tuple[int, int]] = []
        self._last_id = (0, 0)
        self._cursors: dict[str, str] = {}

    # -- helpers -------------------------------------------------------------

    def _now_ms(self) -> int:
        return time_ms("now", self._clock.seconds())

    def _account(self, account: str) -> _Account:
        """The account's record, created on first write."""
        record = self._accounts.get(account)
        if record is None:
            record = self._accounts[account] = _Account()
        return record

    def _balance(self, account: str) -> Balance:
        record = self._accounts.get(account) or _Account()
        return Balance(account, from_micros(record.balance),
                       from_micros(record.credit_limit), from_micros(record.held))

    @staticmethod
    def _hold(account: str, rid: str, hold: _Hold, cls: type[Hold] = Hold) -> Hold:
        return cls(account, rid, from_micros(hold.amount), hold.expires_ms / 1000,
                   from_micros(hold.checkpoint),
                   hold.checkpoint_ms / 1000 if hold.checkpoint_ms else None)

    def _closed(self, account: str, rid: str, now_ms: int) -> Commit | None:
        """The commit that closed C{rid}, if it is remembered; forgets the
        closings whose time is up."""
        while self._done:
            key, (_, forget_ms) = next(iter(self._done.items()))
            if forget_ms > now_ms:
                break
            del self._done[key]
        found = self._done.get((account, rid))
        return found[0] if found else None

    def _append(self, kind: str, account: str, rid: str, reference: str, amount: int,
                final_cost: int, balance: int, now_ms: int,
                settled: _Hold | None = None) -> None:
        """Append a ledger entry, with a stream-like id (C{settled}: the
        hold a C{recovered} entry settled, for its note and checkpoint)."""
        ms, seq = self._last_id
        self._last_id = (now_ms, 0) if now_ms > ms else (ms, seq + 1)
        entry_id = f"{self._last_id[0]}-{self._last_id[1]}"
        note, checkpointed_at = "", None
        if settled is not None:
            note = settled.note
            checkpointed_at = settled.checkpoint_ms / 1000 if settled.checkpoint_ms else None
        self._ledger.append(LedgerEntry(entry_id, kind, account, rid, reference,
                                        from_micros(amount), from_micros(final_cost),
                                        from_micros(balance), now_ms / 1000, note,
                                        checkpointed_at))
        self._ledger_keys.append(self._last_id)
        excess = len(self._ledger) - self._max_ledger
        if excess > self._max_ledger // 16:
            del self._ledger[:excess]
            del self._ledger_keys[:excess]

    def _close(self, account: str, record: _Account, rid: str, final_cost: int,
               reference: str, recovered: bool, now_ms: int) -> Commit:
        """Debit C{min(final_cost, hold + available)}, drop the hold, remember
        the commit, append it to the ledger (the commit and settle rule)."""
        hold = record.holds.pop(rid, None)
        held = hold.amount if hold else 0
        room = record.available + held
        debited = max(0, min(final_cost, room))
        record.balance -= debited
        record.held -= held
        commit = Commit(account, rid, reference, from_micros(final_cost),
                        from_micros(debited), from_micros(held), recovered,
                        now_ms / 1000, from_micros(record.balance))
        self._done[(account, rid)] = (commit, now_ms + self._done_ttl_ms)
        self._append("recovered" if recovered else "commit", account, rid, reference,
                     debited, final_cost, record.balance, now_ms,
                     (hold or _Hold(0, 0)) if recovered else None)
        return commit

    def _settle_expired_holds(self, account: str, now_ms: int) -> _Account | None:
        """Settle every hold of C{account} that expired by C{now_ms} from its
        checkpoint, earliest first; the account's record, if it has one."""
        record = self._accounts.get(account)
        if record is None:
            return None
        gone = sorted((h.expires_ms, rid) for rid, h in record.holds.items()
                      if h.expires_ms <= now_ms)
        for _, rid in gone[:SETTLE_BATCH]:
            self._close(account, record, rid, record.holds[rid].checkpoint,
                        RECOVERED_REFERENCE, True, now_ms)
        return record

    def _open_hold(self, account: str, rid: str, now_ms: int) -> tuple[_Account, _Hold]:
        """The account and the active hold of C{rid}, after settling expired
        holds.  @raise ReservationClosed, UnknownReservation: without one."""
        record = self._settle_expired_holds(account, now_ms)
        commit = self._closed(account, rid, now_ms)
        if commit is not None:
            raise ReservationClosed(commit)
        if record is None or rid not in record.holds:
            raise UnknownReservation(account, rid)
        return record, record.holds[rid]

    # -- IBalanceStore -------------------------------------------------------

    @refusals_as_failures
    def get_balance(self, account: str) -> Deferred[Balance]:
        """See L{IBalanceStore.get_balance}."""
        self._settle_expired_holds(check_key("account", account), self._now_ms())
        return succeed(self._balance(account))

    @refusals_as_failures
    def top_up(self, account: str, amount: Decimal, reference: str) -> Deferred[Balance]:
        """See L{IBalanceStore.top_up}."""
        check_key("account", account)
        check_key("reference", reference)
        micros = amount_micros("top-up amount", amount, minimum=1)
        now_ms = self._now_ms()
        self._settle_expired_holds(account, now_ms)
        record = self._account(account)
        if reference not in record.top_ups:
            if record.balance + micros > MAX_MICROS:
                raise InvalidAmount(f"{account}: the balance would exceed "
                                    f"{from_micros(MAX_MICROS)}")
            record.balance += micros
            record.top_ups.add(reference)
            self._append("top_up", account, "", reference, micros, micros, record.balance,
                         now_ms)
        return succeed(self._balance(account))

    @refusals_as_failures
    def set_credit_limit(self, account: str, credit_limit: Decimal) -> Deferred[Balance]:
        """See L{IBalanceStore.set_credit_limit}."""
        check_key("account", account)
        micros = amount_micros("credit limit", credit_limit)
        self._settle_expired_holds(account, self._now_ms())
        self._account(account).credit_limit = micros
        return succeed(self._balance(account))

    def _hold_args(self, account: str, rid: str, amount: Decimal, what: str,
                   expires_at: float) -> tuple[int, int, int]:
        """Validated arguments of reserve/extend: micro-units, expiry and now
        (ms)."""
        check_key("account", account)
        check_key("reservation id", rid)
        micros = amount_micros(what, amount)
        expires_ms = time_ms("expires_at", expires_at)
        now_ms = self._now_ms()
        if expires_ms <= now_ms:
            raise InvalidRequest(f"expires_at {expires_at} is not after now")
        return micros, expires_ms, now_ms

    @refusals_as_failures
    def reserve(self, account: str, reservation_id: str, amount: Decimal,
                expires_at: float, note: str = "") -> Deferred[Hold]:
        """See L{IBalanceStore.reserve}."""
        micros, expires_ms, now_ms = self._hold_args(account, reservation_id, amount,
                                                     "hold amount", expires_at)
        check_note(note)
        self._settle_expired_holds(account, now_ms)
        commit = self._closed(account, reservation_id, now_ms)
        if commit is not None:
            raise ReservationClosed(commit)
        record = self._account(account)
        hold = record.holds.get(reservation_id)
        if hold is not None:
            if micros > hold.amount:
                raise ReservationConflict(self._hold(account, reservation_id, hold))
            return succeed(self._hold(account, reservation_id, hold))
        if micros > record.available:
            raise InsufficientFunds(account, from_micros(micros),
                                    from_micros(record.available))
        hold = record.holds[reservation_id] = _Hold(micros, expires_ms, note=note)
        record.held += micros
        return succeed(self._hold(account, reservation_id, hold))

    @refusals_as_failures
    def extend(self, account: str, reservation_id: str, new_total: Decimal,
               expires_at: float) -> Deferred[Hold]:
        """See L{IBalanceStore.extend}."""
        micros, expires_ms, now_ms = self._hold_args(account, reservation_id, new_total,
                                                     "hold total", expires_at)
        record, hold = self._open_hold(account, reservation_id, now_ms)
        increase = micros - hold.amount
        if increase > 0:
            if increase > record.available:
                raise InsufficientFunds(account, from_micros(increase),
                                        from_micros(record.available))
            hold.amount = micros
            record.held += increase
        hold.expires_ms = max(hold.expires_ms, expires_ms)
        return succeed(self._hold(account, reservation_id, hold))

    @refusals_as_failures
    def checkpoint(self, account: str, reservation_id: str,
                   rated_so_far: Decimal, note: str | None = None) -> Deferred[Hold]:
        """See L{IBalanceStore.checkpoint}."""
        check_key("account", account)
        check_key("reservation id", reservation_id)
        micros = amount_micros("rated so far", rated_so_far)
        if note is not None:
            check_note(note)
        now_ms = self._now_ms()
        _, hold = self._open_hold(account, reservation_id, now_ms)
        hold.checkpoint = max(hold.checkpoint, min(micros, hold.amount))
        hold.checkpoint_ms = now_ms
        if note is not None:
            hold.note = note
        return succeed(self._hold(account, reservation_id, hold))

    @refusals_as_failures
    def commit(self, account: str, reservation_id: str, final_cost: Decimal,
               reference: str) -> Deferred[Commit]:
        """See L{IBalanceStore.commit}."""
        check_key("account", account)
        check_key("reservation id", reservation_id)
        check_key("reference", reference)
        micros = amount_micros("final cost", final_cost)
        now_ms = self._now_ms()
        self._settle_expired_holds(account, now_ms)
        commit = self._closed(account, reservation_id, now_ms)
        if commit is None:
            commit = self._close(account, self._account(account), reservation_id, micros,
                                 reference, False, now_ms)
        return succeed(commit)

    @refusals_as_failures
    def release(self, account: str, reservation_id: str) -> Deferred[None]:
        """See L{IBalanceStore.release}."""
        check_key("account", account)
        check_key("reservation id", reservation_id)
        record = self._settle_expired_holds(account, self._now_ms())
        if record is not None:
            hold = record.holds.pop(reservation_id, None)
            if hold is not None:
                record.held -= hold.amount
        return succeed(None)

    @refusals_as_failures
    def expired(self, now: float, limit: int = 1000) -> Deferred[list[ExpiredHold]]:
        """See L{IBalanceStore.expired}."""
        now_ms = time_ms("now", now)
        found = sorted((hold.expires_ms, account, rid)
                       for account, record in self._accounts.items()
                       for rid, hold in record.holds.items() if hold.expires_ms <= now_ms)
        return succeed([
            self._hold(account, rid, self._accounts[account].holds[rid], ExpiredHold)
            for _, account, rid in found[:max(0, limit)]])

    @refusals_as_failures
    def settle_expired(self, account: str, reservation_id: str,
                       now: float | None = None) -> Deferred[Commit | None]:
        """See L{IBalanceStore.settle_expired}."""
        check_key("account", account)
        check_key("reservation id", reservation_id)
        now_ms = self._now_ms() if now is None else time_ms("now", now)
        self._settle_expired_holds(account, now_ms)
        return succeed(self._closed(account, reservation_id, now_ms))

    @refusals_as_failures
    def ledger(self, after: str = "0-0", count: int = 100) -> Deferred[list[LedgerEntry]]:
        """See L{IBalanceStore.ledger}."""
        start = bisect.bisect_right(self._ledger_keys, parse_entry_id(after))
        return succeed(self._ledger[start:start + max(0, count)])

    @refusals_as_failures
    def ledger_cursor(self, name: str) -> Deferred[str]:
        """See L{IBalanceStore.ledger_cursor}."""
        return succeed(self._cursors.get(check_cursor(name), "0-0"))

    @refusals_as_failures
    def advance_ledger_cursor(self, name: str, entry_id: str) -> Deferred[str]:
        """See L{IBalanceStore.advance_ledger_cursor}."""
        check_cursor(name)
        current = self._cursors.get(name, "0-0")
        if parse_entry_id(entry_id) > parse_entry_id(current):
            current = self._cursors[name] = entry_id
        return succeed(current)
