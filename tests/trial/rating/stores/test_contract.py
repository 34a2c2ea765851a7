"""The contract of L{IBalanceStore}, run against every implementation.

L{BalanceStoreContract} is the one contract suite; it runs against
L{MemoryBalanceStore} always and against L{RedisBalanceStore} when
C{REDIS_URL} is set (e.g. C{redis://127.0.0.1:6379/0}).  Without
C{REDIS_URL} the Redis tests are skipped, except under C{CI=true}, where
they fail.  The store's clock is a L{task.Clock} and every expiry is an
explicit time, so nothing sleeps; the Redis tests use the real reactor (for
the connection only), a unique key prefix per test, and remove their keys
afterwards.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, maybeDeferred
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from b2bua.core.location_redis import redis_connection_args
from rating.money import MAX_MICROS, from_micros
from rating.stores import redis as redis_store
from rating.stores.interface import (
    MAX_NOTE,
    Commit,
    ExpiredHold,
    Hold,
    IBalanceStore,
    InsufficientFunds,
    InvalidAmount,
    InvalidRequest,
    ReservationClosed,
    ReservationConflict,
    UnknownReservation,
)
from rating.stores.memory import MemoryBalanceStore
from rating.stores.redis import RedisBalanceStore
from tests.trial.redis_support import REDIS_URL, redis_skip, require_redis_url

T0 = 1_700_000_000.0
A = "customer:12"
B = "card:9"
CALL = "a84b4c76e66710@pc33.example.com"


class BalanceStoreContract:
    """The L{IBalanceStore} contract; mixed into a trial C{TestCase} whose
    C{make_store()} returns a fresh, empty store (or a Deferred of one)
    on C{self.clock}."""

    clock: task.Clock
    store: IBalanceStore

    def make_store(self) -> IBalanceStore | Deferred[IBalanceStore]:
        """Build the store under test."""
        raise NotImplementedError

    @inlineCallbacks
    def setUp(self) -> Any:
        """A fresh store with a fake clock at L{T0}."""
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.store = yield maybeDeferred(self.make_store)

    @inlineCallbacks
    def funded(self, amount: str, account: str = A) -> Any:
        """Top C{account} up by C{amount} (reference C{"initial"})."""
        yield self.store.top_up(account, Decimal(amount), "initial")

    @inlineCallbacks
    def assertMoney(self, account: str, balance: str, held: str = "0",
                    credit_limit: str = "0") -> Any:
        """The account's balance, holds and credit limit are these."""
        got = yield self.store.get_balance(account)
        self.assertEqual((got.balance, got.held, got.credit_limit),
                         (Decimal(balance), Decimal(held), Decimal(credit_limit)))
        self.assertEqual(got.available, Decimal(balance) + Decimal(credit_limit) - Decimal(held))

    def test_provides_interface(self) -> None:
        """The store provides L{IBalanceStore}."""
        self.assertTrue(verifyObject(IBalanceStore, self.store))

    # -- balances and top-ups -------------------------------------------------

    @inlineCallbacks
    def test_unknown_account(self) -> Any:
        """An account never written has nothing: balance, limit, holds 0."""
        got = yield self.store.get_balance(A)
        self.assertEqual((got.account, got.balance, got.credit_limit, got.held, got.available),
                         (A, 0, 0, 0, 0))

    @inlineCallbacks
    def test_top_up(self) -> Any:
        """A top-up credits the amount exactly and is written to the ledger."""
        got = yield self.store.top_up(A, Decimal("12.345678"), "pay-1")
        self.assertEqual(got.balance, Decimal("12.345678"))
        self.assertEqual(str(got.balance), "12.345678")
        (entry,) = yield self.store.ledger()
        self.assertEqual((entry.kind, entry.account, entry.reservation_id, entry.reference,
                          entry.amount, entry.final_cost, entry.balance, entry.at),
                         ("top_up", A, "", "pay-1", Decimal("12.345678"), Decimal("12.345678"),
                          Decimal("12.345678"), T0))

    @inlineCallbacks
    def test_top_up_idempotent(self) -> Any:
        """The same reference credits once; another reference credits again;
        the same reference on another account is another top-up."""
        yield self.store.top_up(A, Decimal(10), "pay-1")
        again = yield self.store.top_up(A, Decimal(10), "pay-1")
        self.assertEqual(again.balance, Decimal(10))
        yield self.store.top_up(A, Decimal(5), "pay-2")
        yield self.store.top_up(B, Decimal(1), "pay-1")
        yield self.assertMoney(A, "15")
        yield self.assertMoney(B, "1")
        self.assertEqual(len((yield self.store.ledger())), 3)

    @inlineCallbacks
    def test_top_up_bad_amounts(self) -> Any:
        """Zero, negative, sub-micro-unit and float amounts are refused and
        change nothing."""
        for amount in (Decimal(0), Decimal("-1"), Decimal("0.0000001"), Decimal("NaN")):
            yield self.assertFailure(self.store.top_up(A, amount, f"r{amount}"), InvalidAmount)
        yield self.assertFailure(self.store.top_up(A, 1.5, "float"), TypeError)  # type: ignore[arg-type]
        yield self.assertMoney(A, "0")
        self.assertEqual((yield self.store.ledger()), [])

    @inlineCallbacks
    def test_top_up_limit(self) -> Any:
        """A top-up that would take the balance beyond the largest stored
        amount is refused (Lua's doubles must stay exact)."""
        top = from_micros(MAX_MICROS)
        yield self.store.top_up(A, top, "big")
        yield self.assertFailure(self.store.top_up(A, Decimal("0.000001"), "more"), InvalidAmount)
        yield self.assertMoney(A, str(top))

    @inlineCallbacks
    def test_bad_keys(self) -> Any:
        """Empty or multi-line account keys and ids are refused."""
        yield self.assertFailure(self.store.get_balance(""), InvalidRequest)
        yield self.assertFailure(self.store.top_up("a\nb", Decimal(1), "r"), InvalidRequest)
        yield self.assertFailure(self.store.reserve(A, "", Decimal(1), T0 + 60), InvalidRequest)
        yield self.assertFailure(self.store.commit(A, "x\ry", Decimal(1), "r"), InvalidRequest)

    @inlineCallbacks
    def test_accounts_isolated(self) -> Any:
        """Money and holds of one account never show on another."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal(4), T0 + 60)
        yield self.assertMoney(B, "0")
        yield self.assertFailure(self.store.reserve(B, CALL, Decimal(1), T0 + 60), InsufficientFunds)

    # -- reserve ---------------------------------------------------------------

    @inlineCallbacks
    def test_reserve(self) -> Any:
        """A hold sets money aside without debiting it."""
        yield self.funded("10")
        hold = yield self.store.reserve(A, CALL, Decimal("2.50"), T0 + 90)
        self.assertEqual(hold, Hold(A, CALL, Decimal("2.50"), T0 + 90, Decimal(0), None))
        yield self.assertMoney(A, "10", held="2.50")

    @inlineCallbacks
    def test_reserve_insufficient(self) -> Any:
        """A hold above what is available fails with L{InsufficientFunds}
        (with both amounts) and holds nothing."""
        yield self.funded("3")
        yield self.store.reserve(A, "other", Decimal(2), T0 + 60)
        failure = yield self.assertFailure(self.store.reserve(A, CALL, Decimal("1.000001"), T0 + 60),
                                           InsufficientFunds)
        self.assertEqual((failure.account, failure.requested, failure.available),
                         (A, Decimal("1.000001"), Decimal(1)))
        yield self.assertMoney(A, "3", held="2")

    @inlineCallbacks
    def test_reserve_all_available(self) -> Any:
        """Exactly what is available may be held; a micro-unit more may not."""
        yield self.funded("1")
        yield self.store.reserve(A, "c1", Decimal("0.600000"), T0 + 60)
        yield self.store.reserve(A, "c2", Decimal("0.4"), T0 + 60)
        yield self.assertFailure(self.store.reserve(A, "c3", Decimal("0.000001"), T0 + 60),
                                 InsufficientFunds)
        yield self.assertMoney(A, "1", held="1")

    @inlineCallbacks
    def test_reserve_zero(self) -> Any:
        """A zero hold (free destination) is allowed, even on nothing."""
        hold = yield self.store.reserve(A, CALL, Decimal(0), T0 + 60)
        self.assertEqual(hold.amount, 0)
        self.assertEqual(len((yield self.store.expired(T0 + 60))), 1)

    @inlineCallbacks
    def test_reserve_idempotent(self) -> Any:
        """Reserving again with the same id returns the hold, counted once;
        a smaller amount too; a larger one is a L{ReservationConflict}."""
        yield self.funded("10")
        first = yield self.store.reserve(A, CALL, Decimal(3), T0 + 60)
        self.assertEqual((yield self.store.reserve(A, CALL, Decimal(3), T0 + 60)), first)
        self.assertEqual((yield self.store.reserve(A, CALL, Decimal(1), T0 + 120)), first)
        failure = yield self.assertFailure(self.store.reserve(A, CALL, Decimal(4), T0 + 60),
                                           ReservationConflict)
        self.assertEqual(failure.hold, first)
        yield self.assertMoney(A, "10", held="3")

    @inlineCallbacks
    def test_reserve_needs_future_expiry(self) -> Any:
        """A hold must expire after now (the store's clock)."""
        yield self.funded("10")
        yield self.assertFailure(self.store.reserve(A, CALL, Decimal(1), T0), InvalidRequest)
        yield self.assertFailure(self.store.extend(A, CALL, Decimal(1), T0 - 1), InvalidRequest)
        yield self.assertMoney(A, "10")

    @inlineCallbacks
    def test_reserve_refuses_float(self) -> Any:
        """Money never passes through a float."""
        yield self.funded("10")
        yield self.assertFailure(self.store.reserve(A, CALL, 0.1, T0 + 60),  # type: ignore[arg-type]
                                 TypeError)
        yield self.assertFailure(self.store.reserve(A, CALL, Decimal("0.1234567"), T0 + 60),
                                 InvalidAmount)

    # -- extend ----------------------------------------------------------------

    @inlineCallbacks
    def test_extend_cumulative(self) -> Any:
        """An extension sets the hold to the new total (the price of the call
        so far), not the old hold plus the total, and moves its expiry."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal("1.20"), T0 + 60)
        hold = yield self.store.extend(A, CALL, Decimal("2.40"), T0 + 120)
        self.assertEqual((hold.amount, hold.expires_at), (Decimal("2.40"), T0 + 120))
        hold = yield self.store.extend(A, CALL, Decimal("3.60"), T0 + 180)
        self.assertEqual(hold.amount, Decimal("3.60"))
        yield self.assertMoney(A, "10", held="3.60")

    @inlineCallbacks
    def test_extend_never_shrinks(self) -> Any:
        """A lower total keeps the amount; an earlier expiry keeps the later."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal(3), T0 + 120)
        hold = yield self.store.extend(A, CALL, Decimal(1), T0 + 60)
        self.assertEqual((hold.amount, hold.expires_at), (Decimal(3), T0 + 120))
        yield self.assertMoney(A, "10", held="3")

    @inlineCallbacks
    def test_extend_insufficient_keeps_old_hold(self) -> Any:
        """An extension beyond what is available fails with the increase and
        what was available, and leaves the hold exactly as it was."""
        yield self.funded("5")
        yield self.store.reserve(A, "other", Decimal(2), T0 + 60)
        yield self.store.reserve(A, CALL, Decimal(2), T0 + 60)
        failure = yield self.assertFailure(self.store.extend(A, CALL, Decimal("3.5"), T0 + 120),
                                           InsufficientFunds)
        self.assertEqual((failure.requested, failure.available), (Decimal("1.5"), Decimal(1)))
        yield self.assertMoney(A, "5", held="4")
        holds = {h.reservation_id: h for h in (yield self.store.expired(T0 + 60))}
        self.assertEqual(set(holds), {CALL, "other"})
        self.assertEqual((holds[CALL].amount, holds[CALL].expires_at), (Decimal(2), T0 + 60))
        hold = yield self.store.extend(A, CALL, Decimal(3), T0 + 120)
        self.assertEqual(hold.amount, Decimal(3))

    @inlineCallbacks
    def test_extend_unknown(self) -> Any:
        """Extending or checkpointing an id without a hold fails."""
        yield self.funded("5")
        yield self.assertFailure(self.store.extend(A, CALL, Decimal(1), T0 + 60),
                                 UnknownReservation)
        yield self.assertFailure(self.store.checkpoint(A, CALL, Decimal(1)), UnknownReservation)

    # -- commit ----------------------------------------------------------------

    @inlineCallbacks
    def test_commit(self) -> Any:
        """A commit debits the final cost exactly, drops the hold, and writes
        one ledger entry."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal("1.20"), T0 + 60)
        yield self.store.extend(A, CALL, Decimal("2.40"), T0 + 120)
        self.clock.advance(75)
        commit = yield self.store.commit(A, CALL, Decimal("1.8333"), "cdr-1")
        self.assertEqual(commit, Commit(A, CALL, "cdr-1", Decimal("1.8333"), Decimal("1.8333"), Decimal("2.40"),
                                        False, T0 + 75, Decimal("8.1667")))
        self.assertEqual(commit.shortfall, 0)
        yield self.assertMoney(A, "8.1667")
        entries = yield self.store.ledger()
        self.assertEqual([(e.kind, e.reservation_id, e.reference, e.amount, e.final_cost,
                           e.balance, e.at) for e in entries[1:]],
                         [("commit", CALL, "cdr-1", Decimal("1.8333"), Decimal("1.8333"), Decimal("8.1667"),
                           T0 + 75)])
        self.assertEqual((yield self.store.expired(T0 + 10_000)), [])

    @inlineCallbacks
    def test_commit_exactly_once(self) -> Any:
        """A second commit of the id (whatever its cost) returns the first
        result and debits nothing; the ledger has one entry."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal(2), T0 + 60)
        first = yield self.store.commit(A, CALL, Decimal("1.5"), "cdr-1")
        self.clock.advance(5)
        again = yield self.store.commit(A, CALL, Decimal("1.9"), "cdr-2")
        self.assertEqual(again, first)
        yield self.assertMoney(A, "8.5")
        self.assertEqual([e.kind for e in (yield self.store.ledger())], ["top_up", "commit"])

    @inlineCallbacks
    def test_concurrent_commits_once(self) -> Any:
        """Commits of one id in flight together debit once."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal(2), T0 + 60)
        results = yield gatherResults([self.store.commit(A, CALL, Decimal(1), f"r{i}")
                                       for i in range(10)])
        self.assertEqual(len({r.reference for r in results}), 1)
        yield self.assertMoney(A, "9")

    @inlineCallbacks
    def test_commit_above_hold_takes_available(self) -> Any:
        """A final cost above the hold (timer slop) takes the difference from
        what is available."""
        yield self.funded("5")
        yield self.store.reserve(A, CALL, Decimal(1), T0 + 60)
        commit = yield self.store.commit(A, CALL, Decimal("1.25"), "cdr")
        self.assertEqual((commit.debited, commit.shortfall), (Decimal("1.25"), 0))
        yield self.assertMoney(A, "3.75")

    @inlineCallbacks
    def test_commit_never_overdraws(self) -> Any:
        """What neither the hold nor the available credit covers is not
        debited (the shortfall); other calls' holds stay covered."""
        yield self.funded("2")
        yield self.store.reserve(A, CALL, Decimal(1), T0 + 60)
        yield self.store.reserve(A, "other", Decimal(1), T0 + 60)
        commit = yield self.store.commit(A, CALL, Decimal(3), "cdr")
        self.assertEqual((commit.final_cost, commit.debited, commit.shortfall, commit.held),
                         (Decimal(3), Decimal(1), Decimal(2), Decimal(1)))
        yield self.assertMoney(A, "1", held="1")
        other = yield self.store.commit(A, "other", Decimal(1), "cdr-2")
        self.assertEqual(other.debited, Decimal(1))
        yield self.assertMoney(A, "0")
        (_, entry, _) = yield self.store.ledger()
        self.assertEqual((entry.amount, entry.final_cost), (Decimal(1), Decimal(3)))

    @inlineCallbacks
    def test_commit_without_hold(self) -> Any:
        """A commit with no hold (offline or postpaid rating) debits what is
        available, up to the cost, and closes the id."""
        yield self.funded("1")
        commit = yield self.store.commit(A, CALL, Decimal("0.75"), "cdr")
        self.assertEqual((commit.debited, commit.held), (Decimal("0.75"), 0))
        short = yield self.store.commit(A, "second", Decimal(1), "cdr-2")
        self.assertEqual((short.debited, short.shortfall), (Decimal("0.25"), Decimal("0.75")))
        yield self.assertMoney(A, "0")
        yield self.assertFailure(self.store.reserve(A, CALL, Decimal(0), T0 + 60), ReservationClosed)

    @inlineCallbacks
    def test_closed_id_refuses_holds(self) -> Any:
        """After a commit the id can neither hold, grow nor checkpoint again
        (L{ReservationClosed} carries the commit); release is a no-op."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal(2), T0 + 60)
        commit = yield self.store.commit(A, CALL, Decimal(1), "cdr")
        failure = yield self.assertFailure(self.store.reserve(A, CALL, Decimal(1), T0 + 60),
                                           ReservationClosed)
        self.assertEqual(failure.commit, commit)
        yield self.assertFailure(self.store.extend(A, CALL, Decimal(3), T0 + 60), ReservationClosed)
        yield self.assertFailure(self.store.checkpoint(A, CALL, Decimal(1)), ReservationClosed)
        yield self.store.release(A, CALL)
        yield self.assertMoney(A, "9")

    # -- release ---------------------------------------------------------------

    @inlineCallbacks
    def test_release(self) -> Any:
        """Release drops the hold and debits nothing, even after a checkpoint;
        again, or without a hold, it does nothing."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal(4), T0 + 60)
        yield self.store.checkpoint(A, CALL, Decimal(1))
        self.assertIsNone((yield self.store.release(A, CALL)))
        yield self.assertMoney(A, "10")
        yield self.store.release(A, CALL)
        yield self.store.release(A, "never")
        yield self.store.release(B, "never")
        yield self.assertMoney(A, "10")
        self.assertEqual(len((yield self.store.ledger())), 1)
        self.assertEqual((yield self.store.expired(T0 + 60)), [])

    @inlineCallbacks
    def test_reserve_after_release(self) -> Any:
        """A released id may hold again (an INVITE retried on the same
        Call-ID after a failure)."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal(4), T0 + 60)
        yield self.store.release(A, CALL)
        hold = yield self.store.reserve(A, CALL, Decimal(6), T0 + 60)
        self.assertEqual(hold.amount, Decimal(6))
        yield self.assertMoney(A, "10", held="6")

    @inlineCallbacks
    def test_release_on_failure_paths(self) -> Any:
        """Calls that fail before answer release their holds: all the money is
        available again, and nothing reached the ledger."""
        yield self.funded("3")
        for i in range(3):
            yield self.store.reserve(A, f"call-{i}", Decimal(1), T0 + 60)
        yield self.assertFailure(self.store.reserve(A, "call-3", Decimal(1), T0 + 60),
                                 InsufficientFunds)
        yield gatherResults([self.store.release(A, f"call-{i}") for i in range(3)])
        yield self.assertMoney(A, "3")
        self.assertEqual([e.kind for e in (yield self.store.ledger())], ["top_up"])

    # -- checkpoint, expiry, recovery ------------------------------------------

    @inlineCallbacks
    def test_checkpoint(self) -> Any:
        """A checkpoint is stamped with the store's clock, never decreases and
        is capped at the hold."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal(2), T0 + 60)
        self.clock.advance(30)
        hold = yield self.store.checkpoint(A, CALL, Decimal("0.50"))
        self.assertEqual((hold.checkpoint, hold.checkpointed_at), (Decimal("0.5"), T0 + 30))
        self.clock.advance(5)
        hold = yield self.store.checkpoint(A, CALL, Decimal("0.40"))
        self.assertEqual((hold.checkpoint, hold.checkpointed_at), (Decimal("0.5"), T0 + 35))
        hold = yield self.store.checkpoint(A, CALL, Decimal(7))
        self.assertEqual(hold.checkpoint, Decimal(2))
        yield self.assertMoney(A, "10", held="2")

    @inlineCallbacks
    def test_expired_listing(self) -> Any:
        """expired(now) lists holds of every account whose expiry is not after
        C{now}, earliest first, up to C{limit}."""
        yield self.funded("10")
        yield self.funded("10", B)
        yield self.store.reserve(A, "late", Decimal(1), T0 + 300)
        yield self.store.reserve(B, "early", Decimal(2), T0 + 60)
        yield self.store.reserve(A, "mid", Decimal(3), T0 + 120)
        yield self.store.checkpoint(A, "mid", Decimal("0.5"))
        self.assertEqual((yield self.store.expired(T0 + 59)), [])
        found = yield self.store.expired(T0 + 120)
        self.assertEqual(found, [ExpiredHold(B, "early", Decimal(2), T0 + 60, Decimal(0), None),
                                 ExpiredHold(A, "mid", Decimal(3), T0 + 120, Decimal("0.5"), T0)])
        self.assertEqual([h.reservation_id for h in (yield self.store.expired(T0 + 999, 2))],
                         ["early", "mid"])

    @inlineCallbacks
    def test_settle_from_checkpoint_once(self) -> Any:
        """Recovery settles an expired hold by debiting its last checkpoint
        (not the hold, not zero), exactly once: again, or a late commit of
        the call, returns the settlement and debits nothing."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal(2), T0 + 60)
        yield self.store.checkpoint(A, CALL, Decimal("0.70"))
        self.clock.advance(61)
        (expired,) = yield self.store.expired(T0 + 61)
        self.assertEqual((expired.reservation_id, expired.checkpoint), (CALL, Decimal("0.7")))
        settled = yield self.store.settle_expired(A, CALL)
        self.assertEqual(settled, Commit(A, CALL, "recovered", Decimal("0.7"), Decimal("0.7"), Decimal(2), True,
                                         T0 + 61, Decimal("9.3")))
        yield self.assertMoney(A, "9.3")
        self.assertEqual((yield self.store.settle_expired(A, CALL)), settled)
        self.assertEqual((yield self.store.commit(A, CALL, Decimal("1.9"), "late")), settled)
        yield self.assertMoney(A, "9.3")
        self.assertEqual((yield self.store.expired(T0 + 61)), [])
        entries = yield self.store.ledger()
        self.assertEqual([(e.kind, e.reference, e.amount) for e in entries[1:]],
                         [("recovered", "recovered", Decimal("0.7"))])

    @inlineCallbacks
    def test_settle_unanswered(self) -> Any:
        """An expired hold without a checkpoint (unanswered) settles for 0."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal(2), T0 + 60)
        settled = yield self.store.settle_expired(A, CALL, T0 + 60)
        self.assertEqual((settled.debited, settled.recovered), (Decimal(0), True))
        yield self.assertMoney(A, "10")

    @inlineCallbacks
    def test_settle_not_expired(self) -> Any:
        """A hold that has not expired is not settled (None); neither is an
        id without a hold."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal(2), T0 + 60)
        self.assertIsNone((yield self.store.settle_expired(A, CALL)))
        self.assertIsNone((yield self.store.settle_expired(A, CALL, T0 + 59.999)))
        self.assertIsNone((yield self.store.settle_expired(A, "nothing")))
        yield self.assertMoney(A, "10", held="2")

    @inlineCallbacks
    def test_settle_after_extension(self) -> Any:
        """An extension moves the expiry: what expired at the old time no
        longer does."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal(1), T0 + 60)
        yield self.store.extend(A, CALL, Decimal(2), T0 + 120)
        self.assertEqual((yield self.store.expired(T0 + 60)), [])
        self.assertIsNone((yield self.store.settle_expired(A, CALL, T0 + 60)))

    @inlineCallbacks
    def test_operations_settle_expired_holds(self) -> Any:
        """Any operation on the account settles its expired holds first, so
        an abandoned hold stops blocking credit; the id is then closed."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal(8), T0 + 60)
        yield self.store.checkpoint(A, CALL, Decimal(3))
        yield self.store.reserve(A, "live", Decimal(1), T0 + 600)
        self.clock.advance(60)
        hold = yield self.store.reserve(A, "new", Decimal(5), T0 + 200)
        self.assertEqual(hold.amount, Decimal(5))
        yield self.assertMoney(A, "7", held="6")
        yield self.assertFailure(self.store.extend(A, CALL, Decimal(9), T0 + 200), ReservationClosed)
        kinds = [e.kind for e in (yield self.store.ledger())]
        self.assertEqual(kinds, ["top_up", "recovered"])

    @inlineCallbacks
    def test_recovered_entry_carries_note(self) -> Any:
        """A settled hold's C{recovered} ledger entry carries its recovery
        note (the last one written) and its checkpoint time; commits and
        releases drop the note with the hold."""
        yield self.funded("10")
        yield self.store.reserve(A, CALL, Decimal(2), T0 + 60, note='{"at": "invite"}')
        self.clock.advance(10)
        yield self.store.checkpoint(A, CALL, Decimal("0.3"))
        self.clock.advance(10)
        yield self.store.checkpoint(A, CALL, Decimal("0.6"), note='{"at": "answer", "é": 1}')
        yield self.store.reserve(A, "kept", Decimal(1), T0 + 60, note="one")
        yield self.store.checkpoint(A, "kept", Decimal(0))
        yield self.store.reserve(A, "done", Decimal(1), T0 + 60, note="two")
        yield self.store.commit(A, "done", Decimal("0.1"), "cdr")
        yield self.store.reserve(A, "dropped", Decimal(1), T0 + 60, note="three")
        yield self.store.release(A, "dropped")
        yield self.store.reserve(A, "dropped", Decimal(1), T0 + 60)
        yield self.store.reserve(A, "none", Decimal(1), T0 + 60)
        self.clock.advance(41)
        for rid in (CALL, "kept", "dropped", "none"):
            yield self.store.settle_expired(A, rid)
        recovered = {e.reservation_id: e for e in (yield self.store.ledger())
                     if e.kind == "recovered"}
        self.assertEqual(recovered[CALL].note, '{"at": "answer", "é": 1}')
        self.assertEqual(recovered[CALL].checkpointed_at, T0 + 20)
        self.assertEqual((recovered[CALL].amount, recovered[CALL].final_cost),
                         (Decimal("0.6"), Decimal("0.6")))
        self.assertEqual((recovered["kept"].note, recovered["kept"].checkpointed_at),
                         ("one", T0 + 20))
        self.assertEqual((recovered["dropped"].note, recovered["dropped"].checkpointed_at),
                         ("", None))
        self.assertEqual(recovered["none"].note, "")
        commits = [e for e in (yield self.store.ledger()) if e.kind != "recovered"]
        self.assertEqual({(e.note, e.checkpointed_at) for e in commits}, {("", None)})

    @inlineCallbacks
    def test_note_checked(self) -> Any:
        """A note is text of at most MAX_NOTE characters."""
        yield self.funded("10")
        yield self.assertFailure(
            self.store.reserve(A, CALL, Decimal(1), T0 + 60, note="x" * (MAX_NOTE + 1)),
            InvalidRequest)
        yield self.store.reserve(A, CALL, Decimal(1), T0 + 60, note="x" * MAX_NOTE)
        yield self.assertFailure(self.store.checkpoint(A, CALL, Decimal(0), note=7),
                                 InvalidRequest)

    @inlineCallbacks
    def test_ledger_cursor(self) -> Any:
        """A ledger cursor starts at 0-0, moves forward only, and is kept per
        name."""
        self.assertEqual((yield self.store.ledger_cursor("cdrs")), "0-0")
        self.assertEqual((yield self.store.advance_ledger_cursor("cdrs", "1000-2")), "1000-2")
        self.assertEqual((yield self.store.advance_ledger_cursor("cdrs", "1000-1")), "1000-2")
        self.assertEqual((yield self.store.advance_ledger_cursor("cdrs", "999")), "1000-2")
        self.assertEqual((yield self.store.advance_ledger_cursor("cdrs", "1001-0")), "1001-0")
        self.assertEqual((yield self.store.ledger_cursor("cdrs")), "1001-0")
        self.assertEqual((yield self.store.ledger_cursor("other")), "0-0")
        yield self.assertFailure(self.store.advance_ledger_cursor("cdrs", "later"),
                                 InvalidRequest)
        yield self.assertFailure(self.store.ledger_cursor(""), InvalidRequest)

    # -- postpaid --------------------------------------------------------------

    @inlineCallbacks
    def test_postpaid_credit_limit(self) -> Any:
        """A credit limit is available like a balance: holds and commits may
        take the balance below zero down to minus the limit, never further."""
        got = yield self.store.set_credit_limit(A, Decimal(10))
        self.assertEqual((got.balance, got.credit_limit, got.available), (0, Decimal(10), Decimal(10)))
        yield self.store.reserve(A, CALL, Decimal(8), T0 + 60)
        yield self.assertFailure(self.store.reserve(A, "c2", Decimal(3), T0 + 60), InsufficientFunds)
        commit = yield self.store.commit(A, CALL, Decimal(9), "cdr")
        self.assertEqual((commit.debited, commit.balance), (Decimal(9), Decimal(-9)))
        short = yield self.store.commit(A, "c3", Decimal(5), "cdr-3")
        self.assertEqual((short.debited, short.balance), (Decimal(1), Decimal(-10)))
        yield self.assertMoney(A, "-10", credit_limit="10")
        yield self.store.top_up(A, Decimal(4), "invoice-paid")
        yield self.assertMoney(A, "-6", credit_limit="10")

    @inlineCallbacks
    def test_lower_credit_limit(self) -> Any:
        """Lowering the limit under the holds keeps them; new holds (even of
        0) are refused until money is available again."""
        yield self.store.set_credit_limit(A, Decimal(10))
        yield self.store.reserve(A, CALL, Decimal(6), T0 + 60)
        got = yield self.store.set_credit_limit(A, Decimal(2))
        self.assertEqual(got.available, Decimal(-4))
        yield self.assertFailure(self.store.reserve(A, "c2", Decimal(0), T0 + 60), InsufficientFunds)
        yield self.assertFailure(self.store.set_credit_limit(A, Decimal(-1)), InvalidAmount)
        yield self.store.release(A, CALL)
        yield self.assertMoney(A, "0", credit_limit="2")

    # -- concurrency and the ledger --------------------------------------------

    @inlineCallbacks
    def test_concurrent_reserves_never_overdraw(self) -> Any:
        """50 reserves in flight on one account whose balance covers only 7:
        exactly 7 hold; commits above the holds never debit more than the
        balance (rating.md 3.3's invariant)."""
        yield self.funded("7.5")
        ds = [self.store.reserve(A, f"call-{i}", Decimal(1), T0 + 60) for i in range(50)]
        outcomes = yield gatherResults([
            d.addCallbacks(lambda hold: hold,
                           lambda f: f.trap(InsufficientFunds) and None) for d in ds])
        holds = [h for h in outcomes if h is not None]
        self.assertEqual(len(holds), 7)
        self.assertLessEqual(sum(h.amount for h in holds), Decimal("7.5"))
        yield self.assertMoney(A, "7.5", held="7")
        commits = yield gatherResults([self.store.commit(A, h.reservation_id, Decimal("1.3"), "cdr")
                                       for h in holds])
        debited = sum(c.debited for c in commits)
        self.assertEqual(debited, Decimal("7.5"))
        self.assertEqual(sum(c.shortfall for c in commits), Decimal("1.6"))
        yield self.assertMoney(A, "0")

    @inlineCallbacks
    def test_ledger_paging(self) -> Any:
        """ledger(after, count) pages through the entries in order."""
        for i in range(5):
            yield self.store.top_up(A, Decimal(i + 1), f"r{i}")
        first = yield self.store.ledger(count=2)
        self.assertEqual([e.reference for e in first], ["r0", "r1"])
        rest = yield self.store.ledger(after=first[-1].id, count=10)
        self.assertEqual([e.reference for e in rest], ["r2", "r3", "r4"])
        self.assertEqual((yield self.store.ledger(after=rest[-1].id)), [])
        self.assertEqual((yield self.store.ledger(count=0)), [])
        yield self.assertFailure(self.store.ledger(after="x"), InvalidRequest)

    @inlineCallbacks
    def test_numeric_looking_text(self) -> Any:
        """Accounts, ids and references that look like numbers stay text."""
        yield self.store.top_up("12", Decimal("1.50"), "1.50")
        yield self.store.reserve("12", "7", Decimal(1), T0 + 60)
        commit = yield self.store.commit("12", "7", Decimal("0.5"), "1e5")
        self.assertEqual((commit.account, commit.reservation_id, commit.reference),
                         ("12", "7", "1e5"))
        entries = yield self.store.ledger()
        self.assertEqual([(e.account, e.reservation_id, e.reference) for e in entries],
                         [("12", "", "1.50"), ("12", "7", "1e5")])


class MemoryBalanceStoreTests(BalanceStoreContract, TestCase):
    """The contract against L{MemoryBalanceStore}, plus its memory bounds."""

    def make_store(self) -> IBalanceStore:
        """A memory store on the fake clock."""
        return MemoryBalanceStore(self.clock)

    @inlineCallbacks
    def test_done_ttl(self) -> Any:
        """A closed id is forgotten C{done_ttl} seconds after closing."""
        store = MemoryBalanceStore(self.clock, done_ttl=3600)
        yield store.top_up(A, Decimal(5), "r")
        yield store.commit(A, CALL, Decimal(1), "cdr")
        self.clock.advance(3599)
        yield self.assertFailure(store.reserve(A, CALL, Decimal(1), T0 + 7200), ReservationClosed)
        self.clock.advance(1)
        hold = yield store.reserve(A, CALL, Decimal(1), T0 + 7200)
        self.assertEqual(hold.amount, Decimal(1))

    @inlineCallbacks
    def test_ledger_bounded(self) -> Any:
        """The memory ledger keeps about its last C{max_ledger} entries."""
        store = MemoryBalanceStore(self.clock, max_ledger=32)
        for i in range(100):
            yield store.top_up(A, Decimal(1), f"r{i}")
        entries = yield store.ledger(count=1000)
        self.assertLessEqual(len(entries), 34)
        self.assertEqual(entries[-1].reference, "r99")


class RedisSetup:
    """Connects to C{REDIS_URL} for a Redis test case: skipped without it,
    failing under C{CI=true}; a unique key prefix, removed afterwards."""

    timeout = 30
    skip = redis_skip("Redis balance store tests")
    #: keyword arguments of the store under test
    store_options: dict[str, Any] = {}
    clock: task.Clock

    @inlineCallbacks
    def make_store(self) -> Any:
        """Connect a pool of four (so that script runs really interleave on
        the server) and use a unique key prefix, removed after the test."""
        url = require_redis_url(self, "Redis balance store tests")
        import txredisapi

        args = redis_connection_args(url)
        self.redis = yield txredisapi.ConnectionPool(
            poolsize=4, reconnect=False, connectTimeout=5, replyTimeout=10, **args)
        self.addCleanup(self.redis.disconnect)  # type: ignore[attr-defined]
        self.prefix = f"test:b2bua:bal:{uuid.uuid4().hex}:"
        self.addCleanup(self._delete_keys)  # type: ignore[attr-defined]
        return RedisBalanceStore(self.redis, self.clock, prefix=self.prefix,
                                 **self.store_options)

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


class RedisOneRunPerOperationTests(RedisSetup, BalanceStoreContract, TestCase):
    """The contract against L{RedisBalanceStore} without coalescing: every
    operation is its own script run, up to 64 in flight over the pool, so
    concurrent operations race on the server."""

    store_options = {"batch": 1, "in_flight": 64}


class RedisBalanceStoreTests(RedisSetup, BalanceStoreContract, TestCase):
    """The contract against L{RedisBalanceStore} as configured by default
    (operations coalesced under load), plus its key layout."""

    @inlineCallbacks
    def test_key_layout(self) -> Any:
        """Money is integer micro-units in the account hash; a hold is a
        record in the hold hash, scored by expiry in the account's and the
        global index; a commit leaves a done guard with a TTL and a ledger
        stream entry."""
        yield self.store.top_up(A, Decimal("10.5"), "pay")
        yield self.store.reserve(A, CALL, Decimal("1.25"), T0 + 60)
        yield self.store.checkpoint(A, CALL, Decimal("0.25"))
        keys = self.store.account_keys(A)
        acct, hold_key, exp, index, ledger, topup = (
            keys[k] for k in ("acct", "hold", "exp", "holds", "ledger", "topup"))
        self.assertEqual(acct, f"{self.prefix}acct:{{{A}}}")
        record = yield self.redis.hgetall(acct)
        self.assertEqual({k: int(v) for k, v in record.items()},
                         {"balance": 10_500_000, "credit_limit": 0, "held": 1_250_000,
                          "version": 2})
        raw = yield self.redis.hget(hold_key, CALL)
        self.assertEqual(raw, f"1250000|{int(T0 + 60) * 1000}|250000|{int(T0) * 1000}")
        self.assertEqual(int((yield self.redis.zscore(exp, CALL))), int(T0 + 60) * 1000)
        self.assertEqual(int((yield self.redis.zscore(index, f"{A}\n{CALL}"))),
                         int(T0 + 60) * 1000)
        self.assertEqual(str((yield self.redis.hget(topup, "pay"))).split("|")[0], "10500000")
        yield self.store.commit(A, CALL, Decimal(1), "cdr")
        self.assertFalse((yield self.redis.exists(hold_key)))
        self.assertEqual((yield self.redis.zcard(index)), 0)
        ttl = yield self.redis.ttl(self.store.done_key(A, CALL))
        self.assertTrue(7 * 86400 - 60 < ttl <= 7 * 86400, ttl)
        rows = yield self.redis.execute_command("XRANGE", ledger, "-", "+")
        fields = dict(zip(rows[-1][1][::2], rows[-1][1][1::2], strict=True))
        self.assertEqual((fields["kind"], fields["account"], str(fields["amount"])),
                         ("commit", A, "1000000"))

    @inlineCallbacks
    def test_concurrent_nodes_keep_the_invariant(self) -> Any:
        """Five nodes (each its own connection and store) race 50 calls on one
        account: reserve, extend twice, commit above the hold.  At every
        stage C{debited + held <= initial balance} (rating.md 3.3), the
        balance never goes negative, and each call is debited once."""
        import random

        import txredisapi

        args = redis_connection_args(REDIS_URL or "")
        nodes = []
        for _ in range(5):
            connection = yield txredisapi.Connection(reconnect=False, connectTimeout=5,
                                                     replyTimeout=10, **args)
            self.addCleanup(connection.disconnect)
            nodes.append(RedisBalanceStore(connection, self.clock, prefix=self.prefix))
        rng = random.Random(5)
        initial = Decimal("23.456789")
        yield self.store.top_up(A, initial, "initial")

        def refused(failure: Any) -> None:
            failure.trap(InsufficientFunds)

        calls = [f"call-{i}" for i in range(50)]
        chunks = {c: Decimal(rng.randint(1, 3_000_000)).scaleb(-6) for c in calls}

        @inlineCallbacks
        def check() -> Any:
            got = yield self.store.get_balance(A)
            debited = initial - got.balance
            self.assertGreaterEqual(got.balance, 0)
            self.assertLessEqual(debited + got.held, initial)

        yield gatherResults([
            nodes[i % 5].reserve(A, c, chunks[c], T0 + 60).addErrback(refused)
            for i, c in enumerate(calls)])
        yield check()
        for step in (2, 3):
            yield gatherResults([
                nodes[(i + step) % 5].extend(A, c, chunks[c] * step, T0 + 60 * step)
                .addErrback(lambda f: f.trap(InsufficientFunds, UnknownReservation))
                for i, c in enumerate(calls)])
            yield check()
        commits = yield gatherResults([
            nodes[(i + 1) % 5].commit(A, c, chunks[c] * 4, f"cdr-{c}")
            for i, c in enumerate(calls)])
        yield check()
        got = yield self.store.get_balance(A)
        self.assertEqual(sum(c.debited for c in commits), initial - got.balance)
        self.assertEqual(got.held, 0)
        entries = yield self.store.ledger(count=1000)
        self.assertEqual(sorted(e.reservation_id for e in entries if e.kind == "commit"),
                         sorted(calls))

    @inlineCallbacks
    def test_noscript_fallback(self) -> Any:
        """A script Redis does not know (restart, SCRIPT FLUSH) is sent with
        EVAL and then known by its SHA1."""
        source = redis_store.BALANCE_SCRIPT + f"\n-- {uuid.uuid4().hex}\n"
        sha = redis_store._sha(source)
        self.patch(redis_store, "_SHAS", {**redis_store._SHAS, "balance": sha})
        self.patch(redis_store, "_SOURCES", {**redis_store._SOURCES, "balance": source})
        self.assertEqual((yield self.redis.execute_command("SCRIPT", "EXISTS", sha)), [0])
        yield self.funded("3")
        got = yield self.store.get_balance(A)
        self.assertEqual(got.balance, Decimal(3))
        self.assertEqual((yield self.redis.execute_command("SCRIPT", "EXISTS", sha)), [1])

    @inlineCallbacks
    def test_scripts_reply_json(self) -> Any:
        """Scripts answer with JSON whose money is integer strings."""
        yield self.funded("2")
        reply = yield self.store._run("get_balance", A, [])
        self.assertEqual(reply, {"s": "balance", "balance": "2000000", "credit": "0",
                                 "held": "0"})
        json.dumps(reply)


class FakeRedis:
    """Records C{execute_command} calls; the test fires their Deferreds."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], Deferred[Any]]] = []

    def execute_command(self, *args: Any) -> Deferred[Any]:
        """Record the command and return its (unfired) Deferred."""
        d: Deferred[Any] = Deferred()
        self.calls.append((args, d))
        return d

    def ops(self, n: int) -> list[list[str]]:
        """The operations carried by call C{n}."""
        return json.loads(self.calls[n][0][-1])

    def answer(self, n: int, *answers: dict[str, str]) -> None:
        """Fire call C{n} with a script reply made of C{answers}."""
        self.calls[n][1].callback(json.dumps(list(answers)))


def balance_reply(micros: int = 0) -> dict[str, str]:
    """A script answer to get_balance."""
    return {"s": "balance", "balance": str(micros), "credit": "0", "held": "0"}


class CoalescingTests(SynchronousTestCase):
    """How L{RedisBalanceStore} packs operations into script runs (no Redis
    server: a fake records the commands)."""

    def setUp(self) -> None:
        """A store with at most one run in flight and batches of three."""
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.redis = FakeRedis()
        self.store = RedisBalanceStore(self.redis, self.clock, prefix="p:", batch=3,
                                       in_flight=1)

    def test_alone_sent_at_once(self) -> None:
        """An operation with nothing in flight is one EVALSHA right away,
        carrying its name, account, now (ms) and arguments."""
        d = self.store.get_balance(A)
        ((args, _),) = self.redis.calls
        self.assertEqual(args[:5], ("EVALSHA", redis_store._SHAS["balance"], 0, "p:", "604800"))
        self.assertEqual(self.redis.ops(0), [["get_balance", A, str(int(T0) * 1000)]])
        self.redis.answer(0, balance_reply(1_500_000))
        self.assertEqual(self.successResultOf(d).balance, Decimal("1.5"))

    def test_queued_while_in_flight(self) -> None:
        """Operations issued while a run is in flight go together in the next
        run (at most C{batch}), in order, each with its own reply."""
        first = self.store.get_balance("a0")
        rest = [self.store.get_balance(f"a{i}") for i in range(1, 6)]
        self.assertEqual(len(self.redis.calls), 1)
        self.redis.answer(0, balance_reply(0))
        self.successResultOf(first)
        self.assertEqual(len(self.redis.calls), 2)
        self.assertEqual([op[1] for op in self.redis.ops(1)], ["a1", "a2", "a3"])
        self.redis.answer(1, *(balance_reply(i) for i in (1, 2, 3)))
        self.assertEqual([self.successResultOf(d).balance for d in rest[:3]],
                         [Decimal("0.000001"), Decimal("0.000002"), Decimal("0.000003")])
        self.assertEqual([op[1] for op in self.redis.ops(2)], ["a4", "a5"])
        self.assertNoResult(rest[3])

    def test_callbacks_batch_together(self) -> None:
        """Operations queued by reply callbacks wait for the delivery to end
        and then go as one run."""
        follow: list[Deferred[Any]] = []
        ds = [self.store.get_balance(f"a{i}") for i in range(3)]
        for d in ds:
            d.addCallback(lambda b: follow.append(self.store.get_balance(b.account + "x")))
        self.redis.answer(0, balance_reply())
        self.assertEqual([op[1] for op in self.redis.ops(1)], ["a1", "a2", "a0x"])
        self.redis.answer(1, *[balance_reply()] * 3)
        self.assertEqual([op[1] for op in self.redis.ops(2)], ["a1x", "a2x"])
        self.assertEqual((len(self.redis.calls), len(follow)), (3, 3))

    def test_spread_over_free_runs(self) -> None:
        """With several runs allowed and all of them free, what queued is
        split between them, so that Redis works while answers are handled."""
        store = RedisBalanceStore(self.redis, self.clock, prefix="p:", batch=10, in_flight=2)
        first, second = store.get_balance("a0"), store.get_balance("a1")
        self.assertEqual(len(self.redis.calls), 2)
        self.redis.answer(1, balance_reply())
        self.successResultOf(second)
        first.addCallback(lambda _: [store.get_balance(f"b{i}") for i in range(5)])
        self.redis.answer(0, balance_reply())
        self.assertEqual([[op[1] for op in self.redis.ops(n)] for n in (2, 3)],
                         [["b0", "b1", "b2"], ["b3", "b4"]])

    def test_failed_run_fails_its_operations(self) -> None:
        """A run that fails (timeout, lost connection) fails every operation
        in it; the store goes on with the next run."""
        ds = [self.store.get_balance(f"a{i}") for i in range(3)]
        self.redis.calls[0][1].errback(ConnectionError("lost"))
        self.failureResultOf(ds[0], ConnectionError)
        self.redis.calls[1][1].errback(ConnectionError("lost"))
        for d in ds[1:]:
            self.failureResultOf(d, ConnectionError)
        later = self.store.get_balance(A)
        self.redis.answer(2, balance_reply(7))
        self.assertEqual(self.successResultOf(later).balance, Decimal("0.000007"))

    def test_script_error_fails_one_operation(self) -> None:
        """An operation the script reports as failed fails alone."""
        self.store.get_balance("first")
        ok, bad = self.store.get_balance("a"), self.store.get_balance("b")
        self.redis.answer(0, balance_reply())
        self.redis.answer(1, balance_reply(3), {"s": "error", "message": "boom"})
        self.assertEqual(self.successResultOf(ok).balance, Decimal("0.000003"))
        self.assertIn("boom", str(self.failureResultOf(bad, RuntimeError).value))

    def test_bad_reply_fails_the_run(self) -> None:
        """A reply that is not one answer per operation fails them all."""
        d = self.store.get_balance(A)
        self.redis.calls[0][1].callback("OK")
        self.failureResultOf(d, RuntimeError)
        d = self.store.get_balance(A)
        self.redis.answer(1, balance_reply(), balance_reply())
        self.failureResultOf(d, RuntimeError)

    def test_noscript_falls_back_to_eval(self) -> None:
        """When Redis does not know the script, it is sent with EVAL."""
        d = self.store.get_balance(A)
        self.redis.calls[0][1].errback(Exception("NOSCRIPT No matching script"))
        self.assertEqual(self.redis.calls[1][0][:2], ("EVAL", redis_store.BALANCE_SCRIPT))
        self.redis.answer(1, balance_reply(2))
        self.assertEqual(self.successResultOf(d).balance, Decimal("0.000002"))

    def test_refused_before_queueing(self) -> None:
        """Bad arguments fail at once and send nothing."""
        self.failureResultOf(self.store.reserve(A, CALL, Decimal("-1"), T0 + 60),
                             InvalidAmount)
        self.failureResultOf(self.store.ledger(after="nope"), InvalidRequest)
        self.assertEqual(self.redis.calls, [])

    def test_options_checked(self) -> None:
        """batch and in_flight must be at least 1."""
        self.assertRaises(ValueError, RedisBalanceStore, self.redis, self.clock, batch=0)
        self.assertRaises(ValueError, RedisBalanceStore, self.redis, self.clock, in_flight=0)
