"""The balance store contract: accounts, holds, commits (rating.md 3.1-3.6).

L{IBalanceStore} is what the charging layer uses to authorise a call before
its INVITE is forwarded, to grow the hold while the call runs, to debit the
re-rated cost of the whole call once, and to settle the holds of a node that
died.  Two implementations share one contract suite
(C{tests/trial/rating/stores/test_contract.py}):
L{rating.stores.memory.MemoryBalanceStore} (one node, tests, the demo) and
L{rating.stores.redis.RedisBalanceStore} (every node of a cluster, one Lua
function per operation, each run atomically by Redis).

Vocabulary:

    - an I{account} is a string key (C{"customer:12"}, C{"card:9"}); one
      that was never written has balance 0, credit limit 0 and no holds;
    - a I{hold} is money set aside for one call, keyed by its I{reservation
      id} (the Call-ID); its amount is cumulative (the price of the whole
      call up to the granted horizon), it has an absolute expiry, and the
      last I{checkpoint} (amount rated so far) that recovery settles from;
    - C{available = balance + credit_limit - held}, where C{held} is the sum
      of the account's holds;
    - a I{commit} closes a reservation for good: it debits the final cost
      (capped by what is available, see L{IBalanceStore.commit}), drops the
      hold and appends one entry to the ledger, the outbox the CDR writer
      drains.  A closed reservation id stays closed for C{done_ttl}
      seconds (7 days by default): commits repeat their first result.

Money is C{Decimal} (whole micro-units, L{rating.money}); times are seconds
since the epoch on the caller's clock, kept to the millisecond.  Before any
operation that touches an account, its holds that expired by the store's
clock are settled from their checkpoint (rating.md 3.6), so an abandoned
hold never blocks credit for longer than it was meant to live.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import ParamSpec, TypeVar

from twisted.internet.defer import Deferred, fail
from zope.interface import Interface

from rating.money import MoneyError, from_micros, to_micros

__all__ = [
    "DEFAULT_DONE_TTL",
    "MAX_NOTE",
    "RECOVERED_REFERENCE",
    "SETTLE_BATCH",
    "Balance",
    "BalanceError",
    "Commit",
    "ExpiredHold",
    "Hold",
    "IBalanceStore",
    "InsufficientFunds",
    "InvalidAmount",
    "InvalidRequest",
    "LedgerEntry",
    "ReservationClosed",
    "ReservationConflict",
    "UnknownReservation",
    "amount_micros",
    "check_cursor",
    "check_key",
    "check_note",
    "parse_entry_id",
    "refusals_as_failures",
    "time_ms",
]

P = ParamSpec("P")
T = TypeVar("T")

#: Seconds a closed reservation id (and its first result) is remembered.
DEFAULT_DONE_TTL = 7 * 86400
#: The reference of a commit made by recovery from a checkpoint.
RECOVERED_REFERENCE = "recovered"
_ENTRY_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
#: At most this many expired holds of an account are settled by one
#: operation (the earliest first); the recovery sweeper settles the rest.
SETTLE_BATCH = 100
#: The longest recovery note a hold may carry (characters).
MAX_NOTE = 4096


class BalanceError(Exception):
    """A balance store operation that was refused; nothing was changed."""


class InvalidRequest(BalanceError, ValueError):
    """A malformed request (a programming error): a bad key, an expiry not
    in the future, a negative amount ..."""


class InvalidAmount(InvalidRequest, MoneyError):
    """An amount that is negative where it may not be, not a whole number of
    micro-units, or would take a balance beyond L{rating.money.MAX_MICROS}."""


class InsufficientFunds(BalanceError):
    """Not enough available credit for a hold or its growth (rating.md 3.1).

    @ivar account: the account.
    @ivar requested: what the operation needed beyond the current hold.
    @ivar available: what was available (may be negative when the credit
        limit was lowered under the holds).
    """

    def __init__(self, account: str, requested: Decimal, available: Decimal) -> None:
        super().__init__(f"{account}: {requested} requested, {available} available")
        self.account = account
        self.requested = requested
        self.available = available


class UnknownReservation(BalanceError):
    """No active hold under this reservation id (never reserved, or
    released)."""

    def __init__(self, account: str, reservation_id: str) -> None:
        super().__init__(f"{account}: no hold {reservation_id!r}")
        self.account = account
        self.reservation_id = reservation_id


class ReservationClosed(BalanceError):
    """The reservation id was committed or settled: it cannot hold again.

    @ivar commit: the L{Commit} that closed it.
    """

    def __init__(self, commit: Commit) -> None:
        super().__init__(f"{commit.account}: {commit.reservation_id!r} is already "
                         f"{'settled' if commit.recovered else 'committed'}")
        self.commit = commit


class ReservationConflict(BalanceError):
    """L{IBalanceStore.reserve} again with an amount above the existing
    hold: growing a hold is L{IBalanceStore.extend}'s job.

    @ivar hold: the existing hold, unchanged.
    """

    def __init__(self, hold: Hold) -> None:
        super().__init__(f"{hold.account}: {hold.reservation_id!r} already holds "
                         f"{hold.amount}; use extend")
        self.hold = hold


@dataclass(frozen=True, slots=True)
class Balance:
    """An account's money at one instant.

    @ivar account: the account key.
    @ivar balance: money on the account (negative only after a manual
        adjustment elsewhere; this store never overdraws).
    @ivar credit_limit: postpaid credit (0 for prepaid, rating.md 3.4).
    @ivar held: the sum of the account's active holds.
    """

    account: str
    balance: Decimal
    credit_limit: Decimal
    held: Decimal

    @property
    def available(self) -> Decimal:
        """C{balance + credit_limit - held} (rating.md 3.1)."""
        return self.balance + self.credit_limit - self.held


@dataclass(frozen=True, slots=True)
class Hold:
    """Money set aside for one call.

    @ivar account: the account key.
    @ivar reservation_id: the call id it is held for.
    @ivar amount: the cumulative amount held (the price of the whole call up
        to the granted horizon).
    @ivar expires_at: when it is abandoned unless extended (seconds).
    @ivar checkpoint: the last amount rated so far (L{IBalanceStore.checkpoint});
        0 until the first checkpoint.
    @ivar checkpointed_at: when that checkpoint was written, by the store's
        clock, or C{None} when there was none (an unanswered call).
    """

    account: str
    reservation_id: str
    amount: Decimal
    expires_at: float
    checkpoint: Decimal
    checkpointed_at: float | None = None


@dataclass(frozen=True, slots=True)
class ExpiredHold(Hold):
    """A hold whose C{expires_at} has passed: recovery settles it with
    L{IBalanceStore.settle_expired}, debiting C{checkpoint}."""


@dataclass(frozen=True, slots=True)
class Commit:
    """The result of closing a reservation (by commit or by recovery).

    @ivar account: the account key.
    @ivar reservation_id: the call id.
    @ivar reference: the commit's reference (a CDR id ...), or
        L{RECOVERED_REFERENCE}.
    @ivar final_cost: what the call cost (the re-rating of the whole call,
        or the checkpoint for a recovered hold).
    @ivar debited: what was taken from the balance: C{final_cost}, or less
        when that exceeded the hold plus what was available.
    @ivar held: the hold that was dropped (0 when there was none).
    @ivar recovered: C{True} when recovery settled an expired hold.
    @ivar committed_at: when (the store's clock, seconds).
    @ivar balance: the account's balance right after.
    """

    account: str
    reservation_id: str
    reference: str
    final_cost: Decimal
    debited: Decimal
    held: Decimal
    recovered: bool
    committed_at: float
    balance: Decimal

    @property
    def shortfall(self) -> Decimal:
        """C{final_cost - debited}: cost that could not be debited (alarm on
        any; the CDR keeps the full C{final_cost})."""
        return self.final_cost - self.debited


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One money movement, in the order they happened.

    @ivar id: the entry's position (a Redis stream id C{"<ms>-<seq>"}).
    @ivar kind: C{"top_up"}, C{"commit"} or C{"recovered"}.
    @ivar account: the account key.
    @ivar reservation_id: the call id (C{""} for a top-up).
    @ivar reference: the top-up's or the commit's reference.
    @ivar amount: what moved: credited (top-up) or debited (commits).
    @ivar final_cost: the rated cost (commits); equal to C{amount} for a
        top-up.
    @ivar balance: the balance right after.
    @ivar at: when (the store's clock, seconds).
    @ivar note: for a C{recovered} entry, the hold's recovery note (what
        the call's owner wrote with L{IBalanceStore.reserve} or
        L{IBalanceStore.checkpoint}, C{""} when none); C{""} otherwise.
    @ivar checkpointed_at: for a C{recovered} entry, when the checkpoint it
        settled from was written (C{None} when there was none); C{None}
        otherwise.
    """

    id: str
    kind: str
    account: str
    reservation_id: str
    reference: str
    amount: Decimal
    final_cost: Decimal
    balance: Decimal
    at: float
    note: str = ""
    checkpointed_at: float | None = None


def amount_micros(what: str, amount: Decimal | int, minimum: int = 0) -> int:
    """C{amount} in micro-units (L{rating.money.to_micros}), at least
    C{minimum} micro-units.

    @raise InvalidAmount: when it is not storable exactly or is too small.
    @raise TypeError: for a float (or another type that is not money).
    """
    if isinstance(amount, str):
        raise TypeError(f"{what} must be a Decimal or int, not a string")
    try:
        micros = to_micros(amount)
    except MoneyError as exc:
        raise InvalidAmount(f"{what}: {exc}") from None
    if micros < minimum:
        raise InvalidAmount(f"{what} must be at least {from_micros(minimum)}: {amount}")
    return micros


def time_ms(what: str, seconds: float) -> int:
    """Seconds since the epoch as integer milliseconds (how holds keep time).

    @raise InvalidRequest: for a value that is not a finite real number.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float | Decimal):
        raise InvalidRequest(f"{what} must be seconds since the epoch: {seconds!r}")
    try:
        return round(seconds * 1000)
    except (ValueError, OverflowError, ArithmeticError):
        raise InvalidRequest(f"{what} must be a finite number: {seconds!r}") from None


def refusals_as_failures(method: Callable[P, Deferred[T]]) -> Callable[P, Deferred[T]]:
    """Decorate a store method so that a L{BalanceError} or C{TypeError}
    raised before it returns comes back as a failed L{Deferred}, as the
    interface promises, instead of being raised at the caller."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        try:
            return method(*args, **kwargs)
        except (BalanceError, TypeError):
            return fail()

    return wrapper


def check_note(note: str) -> str:
    """C{note}, checked: text of at most L{MAX_NOTE} characters.

    @raise InvalidRequest: otherwise.
    """
    if not isinstance(note, str):
        raise InvalidRequest("note must be text")
    if len(note) > MAX_NOTE:
        raise InvalidRequest(f"note longer than {MAX_NOTE} characters")
    return note


def check_cursor(name: str) -> str:
    """A ledger cursor's name, checked like a key."""
    return check_key("cursor name", name)


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """A ledger entry id C{"<ms>-<seq>"} (or C{"<ms>"}) as a comparable pair.

    @raise InvalidRequest: for anything else.
    """
    found = _ENTRY_ID.fullmatch(str(entry_id))
    if found is None:
        raise InvalidRequest(f"not a ledger entry id: {entry_id!r}")
    return int(found[1]), int(found[2] or 0)


def check_key(what: str, value: str) -> str:
    """Check an account key or reservation id: a non-empty string without
    line breaks (the ledger and the expiry index separate fields by LF).

    @raise InvalidRequest: if it is not.
    """
    if not isinstance(value, str) or not value or "\n" in value or "\r" in value:
        raise InvalidRequest(f"{what} must be a non-empty single-line string: {value!r}")
    return value


class IBalanceStore(Interface):
    """Balances, credit limits, holds and commits of accounts.

    Every method returns a L{Deferred}; each is atomic (all or nothing,
    never interleaved with another operation on the same account, on any
    node).  Refusals fail the Deferred with a L{BalanceError}; nothing but
    the settling of expired holds was changed then.  Before its own work,
    every operation on an account settles that account's holds that
    expired by the store's clock, as L{settle_expired} does.  Amounts are
    C{Decimal} (or C{int}) in whole micro-units, never C{float};
    C{expires_at}/C{now} are seconds since the epoch.
    """

    # zope.interface method declarations take no self (hence noqa: N805)
    def get_balance(account: str) -> Deferred[Balance]:  # noqa: N805
        """The account's L{Balance} (zeros for an unknown account)."""

    def top_up(account: str, amount: Decimal, reference: str) -> Deferred[Balance]:  # noqa: N805
        """Credit C{amount} (> 0) and append a C{top_up} ledger entry, once
        per C{reference} and account: a repeated reference credits nothing
        and fires with the current balance.  Fails with L{InvalidAmount}
        when the balance would exceed L{rating.money.MAX_MICROS}."""

    def set_credit_limit(account: str, credit_limit: Decimal) -> Deferred[Balance]:  # noqa: N805
        """Set the postpaid credit limit (>= 0; 0 is prepaid).  Lowering it
        below what is held leaves the holds alone (available goes negative
        and new holds are refused)."""

    def reserve(account: str, reservation_id: str, amount: Decimal,  # noqa: N805
                expires_at: float, note: str = "") -> Deferred[Hold]:
        """Hold C{amount} (>= 0) for a new call, before its INVITE is
        forwarded.

        Fails with L{InsufficientFunds} when C{available < amount} (never an
        overdraft, whatever runs concurrently).  Idempotent: when the id
        already holds C{amount} or more, fires with that hold unchanged;
        more fails with L{ReservationConflict}.  After a commit or
        settlement of the id: L{ReservationClosed}.  A released id may be
        reserved again.  C{expires_at} must be after the store's C{now}
        (L{InvalidRequest}).

        C{note} (text, at most L{MAX_NOTE} characters) is kept with a new
        hold for recovery: if the hold is ever settled as abandoned, its
        C{recovered} ledger entry carries the note (the call's owner writes
        there what a CDR of the call needs).  It is dropped with the hold
        by a commit or a release."""

    def extend(account: str, reservation_id: str, new_total: Decimal,  # noqa: N805
               expires_at: float) -> Deferred[Hold]:
        """Grow the hold to the cumulative C{new_total} (never shrinks: a
        lower total keeps the amount) and move its expiry to C{expires_at}
        (never earlier).  Fails with L{InsufficientFunds} when the increase
        is not available, leaving the old hold as it was; with
        L{UnknownReservation} without a hold, L{ReservationClosed} after a
        commit or settlement (e.g. the hold expired and was settled)."""

    def checkpoint(account: str, reservation_id: str,  # noqa: N805
                   rated_so_far: Decimal, note: str | None = None) -> Deferred[Hold]:
        """Record what the call has cost so far, for recovery (rating.md
        3.6).  The recorded checkpoint never decreases and never exceeds the
        hold (a higher value is capped at the hold's amount); it is stamped
        with the store's clock.  A C{note} replaces the hold's recovery
        note (C{None} keeps it).  Fails like L{extend} without a hold."""

    def commit(account: str, reservation_id: str, final_cost: Decimal,  # noqa: N805
               reference: str) -> Deferred[Commit]:
        """Close the reservation with the final cost of the whole call:
        debit it, drop the hold, append a C{commit} ledger entry.

        The debit is C{min(final_cost, hold + available)}: a cost above the
        hold takes the difference from what is available, and what even that
        cannot cover is not debited (L{Commit.shortfall}; the ledger keeps
        the full cost) - the store never overdraws, against rating.md 3.3
        step 6, which lets the balance go negative.  Without a hold (never
        reserved, or released) the same rule applies with a hold of 0
        (postpaid and offline rating).

        Exactly once per reservation id: a repeated commit, or one after
        recovery settled the hold, fires with the first L{Commit} and
        debits nothing."""

    def release(account: str, reservation_id: str) -> Deferred[None]:  # noqa: N805
        """Drop the hold without any debit (failure paths: CANCEL, non-2xx,
        a failed re-hold at answer).  Idempotent; a no-op without a hold or
        after a commit."""

    def expired(now: float, limit: int = 1000) -> Deferred[list[ExpiredHold]]:  # noqa: N805
        """Up to C{limit} holds of any account whose C{expires_at <= now},
        earliest first (for the recovery sweeper)."""

    def settle_expired(account: str, reservation_id: str,  # noqa: N805
                       now: float | None = None) -> Deferred[Commit | None]:
        """Settle the hold if it expired by C{now} (default: the store's
        clock): debit its checkpoint (0 for an unanswered call), drop it,
        append a C{recovered} ledger entry, close the id.  Exactly once:
        when the id is already closed, fires with the L{Commit} that closed
        it (debiting nothing); fires with C{None} when there is nothing to
        settle (no hold, or a hold that is not expired)."""

    def ledger(after: str = "0-0", count: int = 100) -> Deferred[list[LedgerEntry]]:  # noqa: N805
        """Up to C{count} ledger entries after the entry id C{after}, oldest
        first (the CDR writer's outbox; reading does not remove them)."""

    def ledger_cursor(name: str) -> Deferred[str]:  # noqa: N805
        """Where the ledger reader C{name} got to (an entry id; C{"0-0"}
        before it first moved)."""

    def advance_ledger_cursor(name: str, entry_id: str) -> Deferred[str]:  # noqa: N805
        """Move the reader C{name} to C{entry_id}, never backwards (a lower
        id keeps the cursor); fires with the cursor after the move."""
