"""Tests for L{rating.charging}: one call's holds, extensions, cut and
commit (rating.md 3.3) on a L{MemoryBalanceStore} and a L{task.Clock}.

The tariff of most tests charges 0.60 a minute in whole minutes (60/60),
so a call of D seconds costs 0.60 per started minute and the numbers stay
easy to follow.  Every test ends with no delayed call left on the clock.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from b2bua.testing import assert_no_delayed_calls
from rating.charging import (
    BLOCKED,
    CREDIT_CUT,
    DURATION_CUT,
    INSUFFICIENT_BALANCE,
    POSTPAID,
    REJECTED_CUT,
    STORE_ERROR,
    UNRATED,
    ChargingPolicy,
    ChargingSession,
    Payer,
    SessionState,
)
from rating.charging_sessions import ChargingMetrics, ChargingSessions
from rating.lookup import TariffIndex
from rating.stores import IBalanceStore, MemoryBalanceStore
from rating.tariff import load_tariff
from tests.trial.rating import group

#: 2023-11-14T22:13:20Z
START = 1_700_000_000.0
ACCOUNT = "card:1"
NUMBER = "4930123456"


def minute_tariff(**entry: Any) -> TariffIndex:
    """0.60 a started minute on prefix 49; 33 is blocked; 800 is free."""
    return TariffIndex(load_tariff({
        "timezone": "UTC",
        "rates": {"MIN": {"groups": [group(0, "0.60", 60, 60)]},
                  "FREE": {"groups": [group(0, "0", 60, 60)]}},
        "entries": [{"prefixes": ["49"], "rate": "MIN", **entry},
                    {"prefixes": ["800"], "rate": "FREE"},
                    {"prefixes": ["33"], "blocked": True}]}))


@implementer(IBalanceStore)
class FlakyStore:
    """A memory store whose next operations of some kinds fail (a store
    outage), or whose balances read stale (another node's race)."""

    def __init__(self, clock: Clock) -> None:
        self.inner = MemoryBalanceStore(clock)
        self.failures: dict[str, int] = {}
        self.stale: Decimal | None = None
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Deferred[Any]:
            self.calls.append(name)
            if self.failures.get(name, 0) > 0:
                self.failures[name] -= 1
                return fail(RuntimeError(f"{name}: connection lost"))
            d = method(*args, **kwargs)
            if name == "get_balance" and self.stale is not None:
                stale = self.stale
                d.addCallback(lambda b: type(b)(b.account, stale, b.credit_limit, b.held))
            return d

        return call


class SessionTestCase(SynchronousTestCase):
    """A clock at L{START}, a memory store, a session factory."""

    def setUp(self) -> None:
        """A clock and a memory store with nothing on it."""
        self.clock = Clock()
        self.clock.advance(START)
        self.store: Any = MemoryBalanceStore(self.clock)
        self.metrics = ChargingMetrics()
        self.limits: list[tuple[float, float, str]] = []
        self.index = minute_tariff()

    def tearDown(self) -> None:
        """No timer may be left behind."""
        assert_no_delayed_calls(self.clock)

    def fund(self, amount: str, account: str = ACCOUNT) -> None:
        """Top the account up."""
        self.successResultOf(self.store.top_up(account, Decimal(amount),
                                               f"t{self.clock.seconds()}{amount}"))

    def session(self, number: str = NUMBER, call_id: str = "call-1",
                policy: ChargingPolicy | None = None, payer: Payer | None = None,
                index: TariffIndex | None = None) -> ChargingSession:
        """A session recording the cut instants it asks for."""
        return ChargingSession(
            call_id, payer or Payer(ACCOUNT), index or self.index, number, self.store,
            self.clock, policy, metrics=self.metrics,
            on_limit=lambda seconds, reason: self.limits.append(
                (self.clock.seconds(), seconds, reason)))

    def cut_at(self) -> tuple[float, str]:
        """The last cut instant (since the answer at START) and its reason."""
        now, seconds, reason = self.limits[-1]
        return now + seconds - START, reason

    def balance(self, account: str = ACCOUNT) -> tuple[Decimal, Decimal]:
        """(balance, held) of the account."""
        found = self.successResultOf(self.store.get_balance(account))
        return found.balance, found.held

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the metrics' registry."""
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


class AuthorizeTests(SessionTestCase):
    """The INVITE: rating, the authorisation threshold, the first hold."""

    def test_first_hold(self) -> None:
        """With 10.00 the maximum is 16 minutes, and one debit interval
        (60 s, 0.60) is held before the INVITE goes on."""
        self.fund("10")
        session = self.session()
        result = self.successResultOf(session.authorize())
        self.assertTrue(result.allowed)
        self.assertEqual((result.limit.seconds, result.hold.amount),  # type: ignore[union-attr]
                         (960, Decimal("0.6")))
        self.assertEqual(self.balance(), (Decimal(10), Decimal("0.6")))
        self.assertEqual((session.state, session.reserved_until, session.limit_s),
                         (SessionState.AUTHORIZED, 60, 960))
        self.assertEqual(self.successResultOf(session.end()), None)
        self.assertEqual(self.balance(), (Decimal(10), Decimal(0)))

    def test_min_hold(self) -> None:
        """C{min_hold} makes the first hold cover more than one interval;
        C{hold_mode = full} holds the whole maximum."""
        self.fund("10")
        first = self.session(policy=ChargingPolicy(min_hold=150))
        self.assertEqual(self.successResultOf(first.authorize()).hold.amount,  # type: ignore[union-attr]
                         Decimal("1.8"))
        self.assertEqual(first.reserved_until, 180)
        full = self.session(call_id="call-2", policy=ChargingPolicy(hold_mode="full"))
        self.assertEqual(self.successResultOf(full.authorize()).hold.amount,  # type: ignore[union-attr]
                         Decimal("7.8"))
        for session in (first, full):
            self.successResultOf(session.end())

    def test_insufficient_balance(self) -> None:
        """0.50 does not pay the minimum charged call (one minute): refused,
        nothing held, counted."""
        self.fund("0.50")
        session = self.session()
        result = self.successResultOf(session.authorize())
        self.assertEqual((result.reason, session.state),
                         (INSUFFICIENT_BALANCE, SessionState.REFUSED))
        self.assertEqual(self.balance(), (Decimal("0.5"), Decimal(0)))
        self.assertEqual(self.metric("b2bua_rating_rejections_total",
                                     reason=INSUFFICIENT_BALANCE), 1)
        self.successResultOf(session.end())
        self.assertNotIn("release", self.metrics_ops())

    def metrics_ops(self) -> list[str]:
        """The store operations timed so far."""
        return [op for op in ("reserve", "extend", "checkpoint", "commit", "release", "balance")
                if self.metric("b2bua_balance_operation_seconds_count", op=op)]

    def test_unrated_and_blocked(self) -> None:
        """A number without a rate and a blocked one are refused before the
        store is asked."""
        self.fund("10")
        for number, reason in (("1234", UNRATED), ("3312345", BLOCKED)):
            session = self.session(number, call_id=number)
            self.assertEqual(self.successResultOf(session.authorize()).reason, reason)
            self.successResultOf(session.end())
        self.assertEqual(self.metrics_ops(), [])

    def test_free_destination(self) -> None:
        """A destination that costs nothing holds 0 and is capped at the
        free-call duration."""
        session = self.session("8001234")
        result = self.successResultOf(session.authorize())
        self.assertEqual((result.hold.amount, session.limit_s),  # type: ignore[union-attr]
                         (Decimal(0), 5400))
        session.answered(START)
        self.assertEqual(self.cut_at(), (5400, DURATION_CUT))
        self.clock.advance(100)
        self.assertEqual(self.successResultOf(session.end()).final_cost,  # type: ignore[union-attr]
                         Decimal(0))

    def test_race_at_the_hold(self) -> None:
        """When the balance read is stale (another node took money), the
        store refuses the hold and the session asks for what is there."""
        self.store = FlakyStore(self.clock)
        self.fund("1.00")
        self.store.stale = Decimal(10)
        session = self.session(policy=ChargingPolicy(min_hold=120))
        result = self.successResultOf(session.authorize())
        self.assertEqual(result.hold.amount, Decimal("0.6"))  # type: ignore[union-attr]
        self.assertEqual(self.store.calls, ["top_up", "get_balance", "reserve", "reserve"])
        self.successResultOf(session.end())

    def test_store_down(self) -> None:
        """A store failure refuses the call (C{store_error}), and its end
        releases whatever the failed hold may have left."""
        self.store = FlakyStore(self.clock)
        self.fund("10")
        self.store.failures["reserve"] = 1
        session = self.session()
        self.assertEqual(self.successResultOf(session.authorize()).reason, STORE_ERROR)
        self.assertEqual(self.metric("b2bua_charging_errors_total", op="reserve"), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.successResultOf(session.end())
        self.assertEqual(self.store.calls[-1], "release")

    def test_postpaid(self) -> None:
        """A postpaid payer is not held or cut before the cap; the call is
        committed at the end (the store debits what the credit limit
        allows)."""
        self.successResultOf(self.store.set_credit_limit(ACCOUNT, Decimal(100)))
        session = self.session(payer=Payer(ACCOUNT, POSTPAID))
        self.assertTrue(self.successResultOf(session.authorize()).allowed)
        self.assertEqual(self.balance(), (Decimal(0), Decimal(0)))
        session.answered(START)
        self.assertEqual(self.cut_at(), (10800, DURATION_CUT))
        self.clock.advance(61)
        commit = self.successResultOf(session.end())
        self.assertEqual((commit.final_cost, commit.debited),  # type: ignore[union-attr]
                         (Decimal("1.2"), Decimal("1.2")))
        self.assertEqual(self.balance(), (Decimal("-1.2"), Decimal(0)))


class RunningCallTests(SessionTestCase):
    """The answered call: the cut, cumulative extensions, checkpoints."""

    def answered(self, amount: str, **policy: Any) -> ChargingSession:
        """A session funded with C{amount}, authorised and answered at START."""
        self.fund(amount)
        session = self.session(policy=ChargingPolicy(**policy))
        self.assertTrue(self.successResultOf(session.authorize()).allowed)
        self.successResultOf(session.answered(START))
        return session

    def test_extension_schedule(self) -> None:
        """Five seconds before the hold runs out it grows by one interval,
        cumulatively, and the cost so far is checkpointed."""
        session = self.answered("10")
        self.assertEqual(self.cut_at(), (960, CREDIT_CUT))
        armed = len(self.limits)
        seen = []
        for _ in range(3):
            self.clock.advance(self.clock.getDelayedCalls()[0].getTime() - self.clock.seconds())
            hold = self.successResultOf(self.store.extend(ACCOUNT, "call-1", Decimal(0),
                                                          self.clock.seconds() + 1))
            seen.append((self.clock.seconds() - START, hold.amount, hold.checkpoint))
        self.assertEqual(seen, [(55, Decimal("1.2"), Decimal("0.6")),
                                (115, Decimal("1.8"), Decimal("1.2")),
                                (175, Decimal("2.4"), Decimal("1.8"))])
        self.assertEqual(len(self.limits), armed)  # the cut did not move
        self.clock.advance(10)
        self.successResultOf(session.end())

    def test_recovery_note(self) -> None:
        """The owner's recovery note goes with the hold at the INVITE, and
        once more with C{answered_at} at the answer; later checkpoints keep
        it.  A node that dies then leaves what its call's CDR needs."""
        self.fund("10")
        session = self.session(policy=ChargingPolicy(setup_ttl=30))
        session.note = {"caller": "sip:1000@example.com", "started_at": START - 3}
        self.assertTrue(self.successResultOf(session.authorize()).allowed)
        self.clock.advance(2)
        self.successResultOf(session.answered(START + 2))
        self.clock.advance(60)  # past the first extension
        self.successResultOf(self.store.settle_expired(ACCOUNT, "call-1", START + 10_000))
        (entry,) = [e for e in self.successResultOf(self.store.ledger())
                    if e.kind == "recovered"]
        self.assertEqual(json.loads(entry.note), {"caller": "sip:1000@example.com",
                                                  "started_at": START - 3,
                                                  "answered_at": START + 2})
        self.assertEqual(entry.final_cost, Decimal("0.6"))  # the checkpoint at 55 s
        self.successResultOf(session.end())

    def test_no_note_without_owner(self) -> None:
        """Without a note, none is written (and nothing else changes)."""
        session = self.answered("10")
        self.clock.advance(60)
        self.successResultOf(self.store.settle_expired(ACCOUNT, "call-1", START + 10_000))
        (entry,) = [e for e in self.successResultOf(self.store.ledger())
                    if e.kind == "recovered"]
        self.assertEqual(entry.note, "")
        self.successResultOf(session.end())

    def test_hold_expiry_outlives_the_horizon(self) -> None:
        """Each extension moves the hold's expiry past its new horizon
        plus the grace (3.6); at the answer, a set-up expiry too close is
        moved as well."""
        session = self.answered("10", setup_ttl=30)
        hold = self.successResultOf(self.store.checkpoint(ACCOUNT, "call-1", Decimal(0)))
        self.assertEqual(hold.expires_at, START + 65 + 120)
        self.clock.advance(55)
        hold = self.successResultOf(self.store.checkpoint(ACCOUNT, "call-1", Decimal(0)))
        self.assertEqual(hold.expires_at, START + 120 + 120)
        self.successResultOf(session.end())

    def test_cut_when_the_money_runs_out(self) -> None:
        """1.50 pays two minutes: the cut is armed at 120 s from the answer,
        the second minute is held at 55 s, and nothing more is asked."""
        session = self.answered("1.50")
        self.assertEqual(self.cut_at(), (120, CREDIT_CUT))
        self.clock.advance(55)
        self.assertEqual(self.balance(), (Decimal("1.5"), Decimal("1.2")))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(65)
        commit = self.successResultOf(session.end(START + 120.4, cut=True))
        self.assertEqual(commit.final_cost, Decimal("1.2"))  # type: ignore[union-attr]
        self.assertEqual(self.balance(), (Decimal("0.3"), Decimal(0)))

    def test_cut_billed_until_the_cut(self) -> None:
        """A call cut by its limit is billed to the cut instant, not to the
        end of the BYE transactions."""
        session = self.answered("1.50")
        self.clock.advance(130)
        commit = self.successResultOf(session.end(cut=True))
        self.assertEqual(commit.final_cost, Decimal("1.2"))  # type: ignore[union-attr]

    def test_other_calls_take_the_money(self) -> None:
        """Two calls on 2.40: each holds a minute, extends once, then finds
        nothing left and is cut at 120 s; together they spend 2.40."""
        self.fund("2.40")
        first, second = self.session(), self.session(call_id="call-2")
        for session in (first, second):
            self.assertTrue(self.successResultOf(session.authorize()).allowed)
            self.successResultOf(session.answered(START))
        self.assertEqual(self.cut_at(), (180, CREDIT_CUT))
        self.clock.advance(55)
        self.assertEqual(self.balance(), (Decimal("2.4"), Decimal("2.4")))
        self.clock.advance(60)
        self.assertEqual([self.cut_at()], [(120, CREDIT_CUT)])
        self.assertEqual([(now + s - START, r) for now, s, r in self.limits[-2:]],
                         [(120, CREDIT_CUT)] * 2)
        self.clock.advance(5)
        for session in (first, second):
            self.successResultOf(session.end(cut=True))
        self.assertEqual(self.balance(), (Decimal(0), Decimal(0)))

    def test_extension_refused(self) -> None:
        """When the extension itself is refused (money gone since the limit
        was computed), the cut moves to the last covered instant."""
        session = self.answered("10")
        self.successResultOf(self.store.reserve(ACCOUNT, "elsewhere", Decimal("9.1"),
                                                START + 1000))
        self.clock.advance(55)
        self.assertEqual(self.cut_at(), (60, CREDIT_CUT))
        self.assertEqual(self.limits[-1][1], 5)
        self.clock.advance(5)
        self.assertEqual(self.successResultOf(session.end(cut=True)).final_cost,  # type: ignore[union-attr]
                         Decimal("0.6"))
        self.successResultOf(self.store.release(ACCOUNT, "elsewhere"))

    def test_partial_extension(self) -> None:
        """Per-second billing: when less than an interval is left, the hold
        grows by what there is and the cut lands exactly there."""
        self.index = TariffIndex(load_tariff({
            "timezone": "UTC", "rates": {"S": {"groups": [group(0, "0.60", 60, 1)]}},
            "entries": [{"prefixes": ["49"], "rate": "S"}]}))
        session = self.answered("10")
        self.successResultOf(self.store.reserve(ACCOUNT, "elsewhere", Decimal("9.1"),
                                                START + 1000))
        self.clock.advance(55)
        # 0.30 left beside the 0.60 hold: 90 s in all
        self.assertEqual(self.cut_at(), (90, CREDIT_CUT))
        self.assertEqual(session.reserved_until, 90)
        self.clock.advance(35)
        self.assertEqual(self.successResultOf(session.end(cut=True)).final_cost,  # type: ignore[union-attr]
                         Decimal("0.9"))
        self.successResultOf(self.store.release(ACCOUNT, "elsewhere"))
        self.assertEqual(self.balance(), (Decimal("9.1"), Decimal(0)))

    def test_top_up_through_the_registry(self) -> None:
        """L{ChargingSessions.balance_changed} re-arms every live call of
        the account: 1.50 then a 6.00 top-up at 100 s moves the cut from
        120 s to 720 s, and the hold grows again at 115 s."""
        self.fund("1.50")
        sessions = ChargingSessions(self.store, self.clock, metrics=self.metrics)
        session = sessions.open("call-1", Payer(ACCOUNT), self.index, NUMBER,
                                on_limit=lambda s, r: self.limits.append(
                                    (self.clock.seconds(), s, r)))
        self.successResultOf(session.authorize())
        self.successResultOf(session.answered(START))
        self.clock.advance(100)
        self.assertEqual(self.cut_at(), (120, CREDIT_CUT))
        self.fund("6")
        self.successResultOf(sessions.balance_changed(ACCOUNT))
        self.assertEqual(self.cut_at(), (720, CREDIT_CUT))
        self.clock.advance(15)
        self.assertEqual(self.balance(), (Decimal("7.5"), Decimal("1.8")))
        self.clock.advance(30)
        commit = self.successResultOf(session.end())
        self.assertEqual(commit.final_cost, Decimal("1.8"))  # type: ignore[union-attr]
        self.assertEqual(len(sessions), 0)
        self.assertEqual(sessions.of(ACCOUNT), [])

    def test_money_given_back_goes_to_starved_calls(self) -> None:
        """When one call of the account ends, the hold it gives back
        extends the calls that were cut short for lack of money."""
        self.fund("3.00")
        sessions = ChargingSessions(self.store, self.clock)
        cuts: dict[str, list[float]] = {"a": [], "b": []}
        opened = []
        for name in ("a", "b"):
            session = sessions.open(name, Payer(ACCOUNT), self.index, NUMBER,
                                    on_limit=lambda s, r, name=name: cuts[name].append(
                                        self.clock.seconds() + s - START))
            self.successResultOf(session.authorize())
            self.successResultOf(session.answered(START))
            opened.append(session)
        self.clock.advance(115)
        # a held its third minute (its limit, computed alone, is stale),
        # b found nothing left for one
        self.assertEqual((cuts["a"][-1], cuts["b"][-1]), (300, 120))
        self.clock.advance(2)
        self.successResultOf(opened[0].end())  # a costs 1.20 of its 1.80 hold
        self.assertEqual(cuts["b"][-1], 180)  # b gets the 0.60 a gave back
        self.clock.advance(60)
        self.successResultOf(opened[1].end(cut=True))
        self.assertEqual(self.balance(), (Decimal("0.0"), Decimal(0)))

    def test_destination_gone_at_answer(self) -> None:
        """Rated at the INVITE but not at the answer (its entry ended in
        between): the call is cut at once and costs nothing."""
        self.index = minute_tariff(effective_to="2023-11-14T22:13:30+00:00")
        self.fund("10")
        session = self.session()
        self.assertTrue(self.successResultOf(session.authorize()).allowed)
        self.clock.advance(20)
        self.successResultOf(session.answered(self.clock.seconds()))
        self.assertEqual(self.limits[-1][1:], (0.0, REJECTED_CUT))
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(session.end(cut=True)))
        self.assertEqual(self.balance(), (Decimal(10), Decimal(0)))

    def test_extension_store_error_retried(self) -> None:
        """A failed extension moves the cut to the covered instant and is
        retried a second later; once the store answers, the cut goes back."""
        self.store = FlakyStore(self.clock)
        session = self.answered("10")
        self.store.failures["extend"] = 1
        self.clock.advance(55)
        self.assertEqual(self.cut_at(), (60, CREDIT_CUT))
        self.assertEqual(self.metric("b2bua_charging_errors_total", op="extend"), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.clock.advance(1)
        self.assertEqual(self.cut_at(), (960, CREDIT_CUT))
        self.assertEqual(session.reserved_until, 120)
        self.successResultOf(session.end())


class EndTests(SessionTestCase):
    """The end: one re-rated commit, or a release."""

    def test_commit_is_the_re_rated_cost(self) -> None:
        """A call of 75.5 s is billed 76 s, two started minutes: 1.20, not
        the sum of what was held."""
        self.fund("10")
        session = self.session()
        self.successResultOf(session.authorize())
        self.successResultOf(session.answered(START))
        self.clock.advance(75.5)
        commit = self.successResultOf(session.end())
        self.assertEqual((commit.final_cost, commit.debited, commit.held),  # type: ignore[union-attr]
                         (Decimal("1.2"), Decimal("1.2"), Decimal("1.2")))
        self.assertEqual((session.cost, session.billsec), (Decimal("1.2"), 76))
        self.assertIs(self.successResultOf(session.settled), commit)
        self.assertEqual(self.balance(), (Decimal("8.8"), Decimal(0)))
        summary = session.as_dict()
        self.assertEqual((summary["cost"], summary["debited"], summary["state"]),
                         ("1.2000", "1.200000", "ended"))
        self.assertEqual(summary["breakdown"]["billable_s"], 76)

    def test_exactly_once(self) -> None:
        """Ending twice commits once and answers the same commit."""
        self.fund("10")
        session = self.session()
        self.successResultOf(session.authorize())
        self.successResultOf(session.answered(START))
        self.clock.advance(30)
        first = self.successResultOf(session.end())
        self.clock.advance(30)
        self.assertIs(self.successResultOf(session.end()), first)
        self.assertEqual(self.balance(), (Decimal("9.4"), Decimal(0)))
        self.assertEqual(self.metric("b2bua_balance_operation_seconds_count", op="commit"), 1)

    def test_unanswered_releases(self) -> None:
        """A call that is never answered (busy, cancelled) releases its hold
        and commits nothing."""
        self.fund("10")
        session = self.session()
        self.successResultOf(session.authorize())
        self.clock.advance(20)
        self.assertIsNone(self.successResultOf(session.end()))
        self.assertEqual(self.balance(), (Decimal(10), Decimal(0)))
        self.assertIsNone(session.as_dict()["cost"])
        kinds = [entry.kind for entry in self.successResultOf(self.store.ledger())]
        self.assertEqual(kinds, ["top_up"])

    def test_ended_while_authorizing(self) -> None:
        """An end during a slow hold waits for it, then releases it."""
        gate: Deferred[None] = Deferred()
        inner = MemoryBalanceStore(self.clock)
        self.store = FlakyStore(self.clock)
        self.store.inner = inner
        self.fund("10")
        slow_reserve = inner.reserve

        def reserve(*args: Any) -> Deferred[Any]:
            return gate.addCallback(lambda _: slow_reserve(*args))

        inner.reserve = reserve  # type: ignore[method-assign]
        session = self.session()
        authorized = session.authorize()
        ended = session.end()
        self.assertNoResult(ended)
        gate.callback(None)
        self.assertTrue(self.successResultOf(authorized).allowed)
        self.assertIsNone(self.successResultOf(ended))
        self.assertEqual(self.balance(), (Decimal(10), Decimal(0)))

    def test_commit_retried(self) -> None:
        """A commit that fails on the wire is retried (it is idempotent)."""
        self.store = FlakyStore(self.clock)
        self.fund("10")
        session = self.session()
        self.successResultOf(session.authorize())
        self.successResultOf(session.answered(START))
        self.clock.advance(30)
        self.store.failures["commit"] = 2
        ended = session.end()
        self.assertNoResult(ended)
        self.clock.advance(1)
        self.assertNoResult(ended)
        self.clock.advance(2)
        self.assertEqual(self.successResultOf(ended).final_cost,  # type: ignore[union-attr]
                         Decimal("0.6"))
        self.assertEqual(self.metric("b2bua_charging_errors_total", op="commit"), 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(self.balance(), (Decimal("9.4"), Decimal(0)))

    def test_commit_given_up(self) -> None:
        """A commit that keeps failing is given up after C{attempts}
        (logged, counted); the end still fires and the clock is clean."""
        self.store = FlakyStore(self.clock)
        self.fund("10")
        session = self.session()
        self.successResultOf(session.authorize())
        self.successResultOf(session.answered(START))
        self.store.failures["commit"] = 5
        ended = session.end()
        for _ in range(5):
            self.clock.advance(2)
        self.assertIsNone(self.successResultOf(ended))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)

    def test_metrics_registered_once(self) -> None:
        """L{ChargingMetrics.on} gives the one instance of a registry."""
        self.assertIs(ChargingMetrics.on(self.metrics.registry),
                      ChargingMetrics.on(self.metrics.registry))

