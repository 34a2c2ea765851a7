"""Charging sessions: the prepaid protocol of rating.md 3.3 for one call.

A L{ChargingSession} charges one call to one account of an
L{IBalanceStore}, on an injected clock.  It knows nothing of SIP or hooks:
the charging plugin (C{plugins/charging.py}) creates it, feeds it the call's
events and turns its decisions into SIP.  States, in order:

  - C{new}: created for a call whose payer has a tariff.
  - C{authorizing}: L{authorize} looks the number up at the INVITE instant,
    computes the maximum duration from the available credit (3.2) and
    reserves the first hold, C{cost(min(D_max, first_chunk))}, before the
    INVITE is forwarded (3.3 step 1).
  - C{refused}: the destination is unrated or blocked, the credit does not
    cover the minimum charged call, or the store failed.
  - C{authorized}: the hold is in place; the call is being set up.
  - C{running}: L{answered} re-runs the lookup at the answer instant C{T0}
    (3.3 step 3) and arms the cut at C{T0 + limit_s}, C{limit_s} being the
    largest duration the credit pays for (available plus the call's own
    hold).  Every debit interval, C{lead} seconds before the hold runs out,
    the hold is extended cumulatively to cover one more interval and the
    cost rated so far is checkpointed (3.3 step 4, 3.6).  When an extension
    is refused for lack of money the cut moves to the last instant the hold
    covers (C{reserved_until}); L{balance_changed} (a top-up, or another call
    of the account closing) moves it later again.
  - C{ended}: L{end} re-rates the whole call from scratch and commits it
    exactly once (3.3 step 6), or releases the hold of a call that was not
    answered (3.3 step 2).  No timer is left on the clock.

The cut itself is the caller's business: the session calls
C{on_limit(seconds_from_now, reason)} whenever the instant changes (the
plugin arms C{Call.limit_duration} with it).  Money is C{Decimal}; time is
C{clock.seconds()}; every store operation is timed and every failure
counted through a L{ChargingObserver}.  The live sessions of a node are
kept by L{rating.charging_sessions.ChargingSessions}.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from rating.cost import Breakdown, billable_duration, cost
from rating.duration import (
    DEFAULT_FREE_CALL_DURATION_S,
    DEFAULT_MAX_CALL_DURATION_S,
    MAX_COST_EXCEEDED,
    MaxDuration,
    max_duration,
)
from rating.lookup import BLOCKED_DESTINATION, DestinationRejected, Match, TariffIndex
from rating.stores.interface import (
    BalanceError,
    Commit,
    Hold,
    IBalanceStore,
    InsufficientFunds,
    ReservationClosed,
    UnknownReservation,
)

__all__ = [
    "BLOCKED",
    "INSUFFICIENT_BALANCE",
    "OPERATIONS",
    "POSTPAID",
    "PREPAID",
    "REJECTION_REASONS",
    "STORE_ERROR",
    "UNRATED",
    "Authorization",
    "ChargingObserver",
    "ChargingPolicy",
    "ChargingSession",
    "Payer",
    "SessionState",
    "follow",
]

T = TypeVar("T")

PREPAID = "prepaid"
POSTPAID = "postpaid"
#: Reasons of a refusal (and of C{b2bua_rating_rejections_total}).
INSUFFICIENT_BALANCE = "insufficient_balance"
UNRATED = "unrated_destination"
BLOCKED = "blocked_destination"
STORE_ERROR = "store_error"
REJECTION_REASONS = (INSUFFICIENT_BALANCE, UNRATED, BLOCKED, STORE_ERROR)
#: Values of the C{op} label of C{b2bua_balance_operation_seconds}.
OPERATIONS = ("reserve", "extend", "checkpoint", "commit", "release", "balance")
#: Values of the C{op} label of C{b2bua_charging_errors_total}.
ERROR_OPERATIONS = (*OPERATIONS, "rating", "shortfall")
#: The Reason of a BYE when the money ran out.
CREDIT_CUT = 'Q.850;cause=16;text="insufficient balance"'
#: The Reason of a BYE at the maximum call duration.
DURATION_CUT = 'SIP;cause=200;text="Call duration limit reached"'
#: The Reason of a BYE when the destination is no longer rated at the answer.
REJECTED_CUT = 'Q.850;cause=21;text="destination not rated at answer"'
_ZERO = Decimal(0)


def _instant(seconds: float) -> dt.datetime:
    """A clock reading as an aware UTC datetime (what the rating layer takes)."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def follow(d: Deferred[T]) -> Deferred[T]:
    """A new Deferred firing with C{d}'s result, leaving C{d}'s chain alone
    (so several waiters, or a cancelling one, never disturb the original)."""
    out: Deferred[T] = Deferred()

    def relay(result: Any) -> Any:
        if not out.called:
            if isinstance(result, Failure):
                out.errback(result)
            else:
                out.callback(result)
        return result

    d.addBoth(relay)
    return out


@dataclass(frozen=True)
class ChargingPolicy:
    """How sessions hold money and cut calls (rating.md 3.2, 3.3, 3.6).

    @ivar debit_interval: seconds each extension adds to the hold.
    @ivar warn_before: seconds before the cut that C{b2bua_call_warned} fires.
    @ivar lead: seconds before the hold runs out that it is extended.
    @ivar min_hold: seconds the first hold covers at least (default: one
        debit interval); never less than the first increment.
    @ivar hold_grace: seconds a hold outlives its horizon before recovery
        may settle it (default: two debit intervals).
    @ivar setup_ttl: seconds the first hold lives while the call is set up.
    @ivar hold_mode: C{chunk} (3.3) or C{full} (the whole maximum duration
        is held at the INVITE, for calling cards).
    @ivar max_call_duration: the cap of priced calls (3.2).
    @ivar free_call_duration: the cap of calls to destinations that cost 0.
    @ivar retry_delay: seconds before a failed store operation is retried
        (doubled at each attempt).
    @ivar attempts: tries of a commit or release, and of a hold when other
        calls take the money in between.
    """

    debit_interval: int = 60
    warn_before: int = 30
    lead: int = 5
    min_hold: int | None = None
    hold_grace: int | None = None
    setup_ttl: int = 600
    hold_mode: str = "chunk"
    max_call_duration: int = DEFAULT_MAX_CALL_DURATION_S
    free_call_duration: int = DEFAULT_FREE_CALL_DURATION_S
    retry_delay: float = 1.0
    attempts: int = 3

    @property
    def grace(self) -> int:
        """The hold grace in seconds (3.6 default: two debit intervals)."""
        return 2 * self.debit_interval if self.hold_grace is None else self.hold_grace


@dataclass(frozen=True)
class Payer:
    """Who pays a call: an account of the balance store, prepaid (holds and
    cut, the default) or postpaid (rated and committed at the end only)."""

    account: str
    payment: str = PREPAID


@dataclass(frozen=True)
class Authorization:
    """The outcome of L{ChargingSession.authorize}.

    @ivar reason: C{None} when the call may proceed, else one of
        L{REJECTION_REASONS}.
    @ivar limit: the maximum duration computed at the INVITE (C{None} when
        the number was not rated or the store failed).
    @ivar hold: the first hold (C{None} when refused, and for postpaid).
    """

    reason: str | None
    limit: MaxDuration | None = None
    hold: Hold | None = None

    @property
    def allowed(self) -> bool:
        """Whether the call may be forwarded."""
        return self.reason is None


class SessionState(enum.StrEnum):
    """The states of a L{ChargingSession} (see the module docstring)."""

    NEW = "new"
    AUTHORIZING = "authorizing"
    REFUSED = "refused"
    AUTHORIZED = "authorized"
    RUNNING = "running"
    ENDED = "ended"


class ChargingObserver(Protocol):
    """What a session reports (L{rating.charging_sessions.ChargingMetrics}
    is the Prometheus one)."""

    def rejected(self, reason: str) -> None:
        """A call was refused for C{reason} (one of L{REJECTION_REASONS})."""

    def operation(self, op: str, seconds: float) -> None:
        """A store operation C{op} (one of L{OPERATIONS}) took C{seconds}."""

    def error(self, op: str) -> None:
        """C{op} (one of L{ERROR_OPERATIONS}) failed."""


class ChargingSession:
    """The charging of one call (see the module docstring for the states).

    @param call_id: the call's id, also the reservation id and the commit's
        reference.
    @param payer: the account and whether it is prepaid.
    @param index: the tariff to rate with (chosen at the INVITE, kept for
        the whole call).
    @param number: the dialled number, as the tariff's prefixes are written.
    @param on_limit: called with (seconds from now, Reason header value)
        whenever the instant the call must be cut changes.
    @param on_ended: called once, synchronously, when L{end} is called.
    @param on_closed: called once the hold was committed or released.
    @ivar limit_s: the call second at which the call is cut (armed).
    @ivar reserved_until: the last call second the hold pays for.
    @ivar breakdown: the re-rated cost of the whole call, set by L{end}
        (C{None} when the call is not charged).
    @ivar commit: the store's L{Commit}, once committed.
    @ivar currency: the account's currency, for the CDR (set by the owner).
    @ivar note: what a CDR of the call needs if its node dies (caller,
        callee, start, row ids: set by the owner before L{authorize}); it
        goes to the store with the hold, and again with C{answered_at} at
        the answer, so that recovery (rating.md 3.6) can write the call's
        CDR from the C{recovered} ledger entry.

    What the CDR writer reads (C{rating.cdr}): C{cost}, C{billsec},
    C{breakdown}, C{currency} and C{settled}.
    """

    log = Logger()

    def __init__(self, call_id: str, payer: Payer, index: TariffIndex, number: str,
                 store: IBalanceStore, clock: IReactorTime,
                 policy: ChargingPolicy | None = None, *,
                 on_limit: Callable[[float, str], object] | None = None,
                 metrics: ChargingObserver | None = None,
                 on_ended: Callable[[ChargingSession], object] | None = None,
                 on_closed: Callable[[ChargingSession], object] | None = None) -> None:
        self.call_id = call_id
        self.payer = payer
        self.index = index
        self.number = number
        self.store = store
        self.clock = clock
        self.policy = policy or ChargingPolicy()
        self.metrics = metrics
        self.on_limit = on_limit
        self._on_ended = on_ended
        self._on_closed = on_closed
        self.state = SessionState.NEW
        self.reason: str | None = None
        self.match: Match | None = None
        self.cap_s = self.policy.max_call_duration
        self.hold = _ZERO
        self.expires_at = 0.0
        self.reserved_until = 0
        self.limit_s = 0
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.forfeited = False
        self.breakdown: Breakdown | None = None
        self.commit: Commit | None = None
        self.currency = ""
        self.note: dict[str, Any] | None = None
        self._note_due = False
        self._armed: tuple[int, str] | None = None
        self._timer: IDelayedCall | None = None
        self._busy: Deferred[None] | None = None
        self._again: tuple[bool, bool] | None = None
        self._retrying = False
        self._reserved = False
        self._ending = False
        self._waiters: list[Deferred[Commit | None]] = []
        self._closing: Deferred[Commit | None] | None = None

    def __repr__(self) -> str:
        return f"<ChargingSession {self.call_id} {self.payer.account} {self.state}>"

    @property
    def cost(self) -> Decimal | None:
        """The re-rated cost of the call (C{None}: not charged, or not ended)."""
        return None if self.breakdown is None else self.breakdown.cost

    @property
    def billsec(self) -> int | None:
        """The billable seconds the cost was rated on (C{None}: not charged)."""
        return None if self.breakdown is None else self.breakdown.duration_s

    @property
    def settled(self) -> Deferred[Commit | None]:
        """A new Deferred firing once the hold is committed or released."""
        return self.when_closed()

    @property
    def account(self) -> str:
        """The account charged."""
        return self.payer.account

    @property
    def prepaid(self) -> bool:
        """Whether the reservation protocol runs (holds, extensions, cut)."""
        return self.payer.payment != POSTPAID

    @property
    def live(self) -> bool:
        """True until L{end} was called."""
        return not self._ending

    @property
    def starved(self) -> bool:
        """True while a running call is cut before its cap for lack of money."""
        return self.state is SessionState.RUNNING and self.prepaid and self.live \
            and self.limit_s < self.cap_s

    # -- store operations, timed and counted -----------------------------------------

    def _count(self, op: str) -> None:
        if self.metrics is not None:
            self.metrics.error(op)

    async def _op(self, op: str, call: Callable[[], Deferred[T]]) -> T:
        """Run one store operation, timing it; failures are counted unless
        they are a refusal the protocol expects (L{InsufficientFunds})."""
        started = self.clock.seconds()
        try:
            result = await call()
        except InsufficientFunds:
            raise
        except Exception:
            self._count(op)
            raise
        finally:
            if self.metrics is not None:
                self.metrics.operation(op, self.clock.seconds() - started)
        return result

    async def _persist(self, op: str, call: Callable[[], Deferred[T]]) -> T:
        """Run an idempotent operation (commit, release), retrying transient
        failures (not refusals) C{policy.attempts} times with back-off."""
        attempt = 0
        while True:
            try:
                return await self._op(op, call)
            except BalanceError:
                raise
            except Exception:
                attempt += 1
                if attempt >= self.policy.attempts:
                    raise
                self.log.failure("charging: {op} of {call_id} failed, retrying", Failure(),
                                 op=op, call_id=self.call_id)
                await deferLater(self.clock, self.policy.retry_delay * 2 ** (attempt - 1),
                                 lambda: None)

    def _serialize(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> Deferred[T]:
        """Run C{factory()} as the session's one operation in flight."""
        busy: Deferred[None] = Deferred()
        self._busy = busy
        d = ensureDeferred(factory())

        def done(result: object) -> object:
            if self._busy is busy:
                self._busy = None
            busy.callback(None)
            return result

        d.addBoth(done)
        return d

    # -- rating helpers --------------------------------------------------------------

    def _limit(self, match: Match, available: Decimal) -> MaxDuration:
        """L{max_duration} under the policy's caps."""
        policy = self.policy
        return max_duration(match, available, max_call_duration_s=policy.max_call_duration,
                            free_call_duration_s=policy.free_call_duration)

    def _covered(self, amount: Decimal) -> int:
        """The last call second C{amount} pays for (within the cap)."""
        assert self.match is not None
        result = self._limit(self.match, amount)
        if result.allowed:
            return result.seconds
        return min(self.match.rate.grace_s, result.cap_s)

    def _first_chunk(self, match: Match) -> int:
        """C{max(first increment, min_hold)} (3.3 step 1)."""
        policy = self.policy
        floor = policy.debit_interval if policy.min_hold is None else policy.min_hold
        return max(match.rate.groups[0].increment_s, floor)

    # -- authorisation (3.3 step 1) --------------------------------------------------

    def authorize(self) -> Deferred[Authorization]:
        """Rate the number now, and hold the first chunk (prepaid).

        Fires with an L{Authorization}; never fails (a store failure is the
        refusal C{store_error})."""
        if self.state is not SessionState.NEW:
            raise RuntimeError(f"{self!r} was already authorized")
        self.state = SessionState.AUTHORIZING
        return follow(self._serialize(self._authorize))

    def _refuse(self, reason: str, limit: MaxDuration | None = None) -> Authorization:
        self.state = SessionState.REFUSED
        self.reason = reason
        if self.metrics is not None:
            self.metrics.rejected(reason)
        return Authorization(reason, limit)

    async def _authorize(self) -> Authorization:
        now = self.clock.seconds()
        try:
            match = self.match = self.index.match(self.number, _instant(now))
        except DestinationRejected as rejected:
            return self._refuse(BLOCKED if rejected.reason == BLOCKED_DESTINATION else UNRATED)
        probe = self._limit(match, _ZERO)
        self.cap_s = probe.cap_s
        if not self.prepaid:
            self.limit_s = self.reserved_until = self.cap_s
            self.state = SessionState.AUTHORIZED
            return Authorization(None, MaxDuration(self.cap_s, self.cap_s, self.cap_s, "cap",
                                                   None, _ZERO))
        try:
            balance = await self._op("balance", lambda: self.store.get_balance(self.account))
        except Exception:
            self.log.failure("charging: balance of {account} unavailable", Failure(),
                             account=self.account)
            return self._refuse(STORE_ERROR)
        available = balance.available
        limit = probe
        for _ in range(max(1, self.policy.attempts)):
            limit = self._limit(match, available)
            if not limit.allowed:
                return self._refuse(BLOCKED if limit.reason == MAX_COST_EXCEEDED
                                    else INSUFFICIENT_BALANCE, limit)
            horizon = limit.seconds
            if self.policy.hold_mode != "full":
                horizon = min(horizon, self._first_chunk(match))
            amount = cost(match, horizon).cost
            self._reserved = True
            try:
                hold = await self._op("reserve", lambda amount=amount: self.store.reserve(
                    self.account, self.call_id, amount, now + self.policy.setup_ttl,
                    **self._note_argument()))
            except InsufficientFunds as short:
                available = short.available  # another call took it meanwhile
                continue
            except Exception:
                self.log.failure("charging: hold for {call_id} failed", Failure(),
                                 call_id=self.call_id)
                return self._refuse(STORE_ERROR, limit)
            self.hold, self.expires_at = hold.amount, hold.expires_at
            self.reserved_until = self._covered(hold.amount)
            self.limit_s = max(limit.seconds, self.reserved_until)
            self.state = SessionState.AUTHORIZED
            return Authorization(None, limit, hold)
        return self._refuse(INSUFFICIENT_BALANCE, limit)

    # -- the answered call (3.3 steps 3-5) -------------------------------------------

    def answered(self, answered_at: float) -> Deferred[None]:
        """The call was answered at C{answered_at}: re-rate at C{T0}, arm the
        cut, start the extensions.  Fires when the first update is done."""
        if self.state is not SessionState.AUTHORIZED or not self.live:
            return succeed(None)
        self.answered_at = answered_at
        self._note_due = self.note is not None
        self.state = SessionState.RUNNING
        try:
            self.match = self.index.match(self.number, _instant(answered_at))
        except DestinationRejected:
            # rated at the INVITE, not at T0: cut at once, charge nothing (3.3 step 3)
            self.forfeited = True
            self.limit_s = 0
            self._arm(REJECTED_CUT)
            return succeed(None)
        if not self.prepaid:
            self.limit_s = self.reserved_until = self.cap_s
            self._arm()
            return succeed(None)
        self.reserved_until = self._covered(self.hold)
        self.limit_s = self.reserved_until
        if self.reserved_until > 0:
            self._arm()
        return self._run(grow=False, refresh=True)

    def balance_changed(self) -> Deferred[None]:
        """The account's money changed (a top-up, a call closed): recompute
        the limit and re-arm the cut; extensions resume if they had stopped."""
        return self._run(grow=False, refresh=True)

    def _tick(self) -> None:
        self._timer = None
        self._run(grow=True, refresh=False)

    def _run(self, grow: bool, refresh: bool) -> Deferred[None]:
        """Run one update, or fold it into the one in flight."""
        if not self.live or self.state is not SessionState.RUNNING or not self.prepaid:
            return succeed(None)
        if self._busy is not None:
            again = self._again or (False, False)
            self._again = (again[0] or grow, again[1] or refresh)
            return follow(self._busy)
        d = self._serialize(lambda: self._update(grow, refresh))
        d.addErrback(self._update_failed)
        d.addCallback(self._after_update)
        return d

    def _update_failed(self, failure: Failure) -> None:
        self._count("rating")
        self.log.failure("charging: update of {call_id} failed", failure, call_id=self.call_id)
        if self.live:
            self.limit_s = self.reserved_until
            self._arm()

    def _after_update(self, _: object) -> None:
        again, self._again = self._again, None
        if again is not None:
            self._run(*again)

    async def _update(self, grow: bool, refresh: bool) -> None:
        """Refresh the limit (when asked, or when the cut is near), grow the
        hold (one interval on a tick; the first chunk at the answer), then
        checkpoint, re-arm the cut and schedule the next extension."""
        match, t0 = self.match, self.answered_at
        assert match is not None and t0 is not None
        policy = self.policy
        interval = policy.debit_interval
        limit = self.limit_s
        self._retrying = False
        if refresh or limit <= self.reserved_until + interval:
            try:
                balance = await self._op("balance",
                                         lambda: self.store.get_balance(self.account))
            except Exception:
                self.log.failure("charging: balance of {account} unavailable", Failure(),
                                 account=self.account)
                self._retrying = True
            else:
                limit = self._affordable(balance.available + self.hold)
        if grow:
            want = self.reserved_until + interval
        else:
            want = max(self.reserved_until, min(self._first_chunk(match), limit))
        target = min(want, limit, self.cap_s)
        now = self.clock.seconds()
        elapsed = billable_duration(_instant(t0), _instant(now))
        expires = t0 + max(target, elapsed + interval + policy.lead) + policy.grace
        needs_expiry = self.expires_at < t0 + self.reserved_until + policy.grace
        for _ in range(max(1, policy.attempts)):
            if target <= self.reserved_until and not needs_expiry:
                break
            amount = cost(match, max(target, self.reserved_until)).cost
            try:
                hold = await self._op("extend", lambda amount=amount: self.store.extend(
                    self.account, self.call_id, amount, expires))
            except InsufficientFunds as short:
                limit = self._affordable(short.available + self.hold)
                target = min(target, limit)
                needs_expiry = False
                continue
            except (ReservationClosed, UnknownReservation):
                # the hold is gone (settled as abandoned): nothing more is granted
                self.log.error("charging: hold of {call_id} lost", call_id=self.call_id)
                limit = self.reserved_until
                break
            except Exception:
                self.log.failure("charging: extending {call_id} failed", Failure(),
                                 call_id=self.call_id)
                limit = self.reserved_until
                self._retrying = True
                break
            self.hold, self.expires_at = hold.amount, hold.expires_at
            self.reserved_until = max(self.reserved_until, self._covered(hold.amount))
            break
        self.limit_s = max(min(limit, self.cap_s), self.reserved_until)
        if self.reserved_until == 0:
            # the hold pays for nothing under the answer-time rate: cut, charge nothing
            self.forfeited = True
            self.limit_s = 0
        if (grow and elapsed > 0) or self._note_due:
            # at the answer nothing has been talked yet: the note alone is news
            rated = cost(match, elapsed).cost if grow and elapsed > 0 else _ZERO
            note = self._note_argument()
            try:
                await self._op("checkpoint", lambda: self.store.checkpoint(
                    self.account, self.call_id, rated, **note))
            except Exception:
                self.log.failure("charging: checkpoint of {call_id} failed", Failure(),
                                 call_id=self.call_id)
            else:
                self._note_due = self._note_due and not note
        if self.live:
            self._arm()
            self._schedule()

    def _note_argument(self) -> dict[str, str]:
        """C{{"note": <the recovery note as JSON>}} when there is a note to
        write (at the hold, and once with C{answered_at}), else C{{}}."""
        if self.note is None or (self.answered_at is not None and not self._note_due):
            return {}
        note = dict(self.note, answered_at=self.answered_at)
        return {"note": json.dumps(note, separators=(",", ":"), default=str)}

    def _affordable(self, money: Decimal) -> int:
        """The longest call C{money} pays for (0 when not even the minimum)."""
        assert self.match is not None
        result = self._limit(self.match, money)
        return result.seconds if result.allowed else 0

    def _arm(self, reason: str | None = None) -> None:
        """Tell C{on_limit} the cut instant, when it changed."""
        assert self.answered_at is not None
        if reason is None:
            reason = DURATION_CUT if self.limit_s >= self.cap_s else CREDIT_CUT
        armed = (self.limit_s, reason)
        if armed == self._armed:
            return
        self._armed = armed
        if self.on_limit is not None:
            remaining = self.answered_at + self.limit_s - self.clock.seconds()
            self.on_limit(max(0.0, remaining), reason)

    def _schedule(self) -> None:
        """Schedule the next extension, if the limit lies beyond the hold, or
        a retry after a store failure."""
        self._cancel_timer()
        if self.answered_at is None or self.forfeited:
            return
        now = self.clock.seconds()
        delay = max(0.0, self.answered_at + self.reserved_until - self.policy.lead - now)
        if self._retrying:
            delay = min(delay, self.policy.retry_delay) if self.limit_s > self.reserved_until \
                else self.policy.retry_delay
        elif self.limit_s <= self.reserved_until:
            return
        self._timer = self.clock.callLater(delay, self._tick)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- the end (3.3 steps 2 and 6) -------------------------------------------------

    def end(self, ended_at: float | None = None, cut: bool = False) -> Deferred[Commit | None]:
        """The call is over: commit the re-rated cost (answered) or release
        the hold.  Exactly once: later calls fire with the same result.

        @param ended_at: when it ended (default: now).
        @param cut: the call ended because the armed limit fired; the time
            after the cut instant (BYE signalling) is not billed.
        @return: a Deferred firing with the L{Commit} (C{None} when nothing
            was committed); it never fails (errors are logged and counted).
        """
        if self._closing is None:
            self._ending = True
            self._cancel_timer()
            self.ended_at = self.clock.seconds() if ended_at is None else ended_at
            t0 = self.answered_at
            if t0 is not None and not self.forfeited and self.match is not None:
                end = min(self.ended_at, t0 + self.limit_s) if cut else self.ended_at
                try:
                    self.breakdown = cost(self.match, billable_duration(_instant(t0),
                                                                        _instant(end)))
                except Exception:
                    self._count("rating")
                    self.log.failure("charging: rating {call_id} failed; not charged",
                                     Failure(), call_id=self.call_id)
                    self.forfeited = True
            if self._on_ended is not None:
                self._on_ended(self)
            self._closing = ensureDeferred(self._close())
        return follow(self._closing)

    async def _close(self) -> Commit | None:
        if self._busy is not None:
            await follow(self._busy)
        self.state = SessionState.ENDED
        if self.forfeited:
            self.breakdown = None
        try:
            if self.breakdown is not None:
                self.commit = await self._persist("commit", lambda: self.store.commit(
                    self.account, self.call_id, self.breakdown.cost,  # type: ignore[union-attr]
                    self.call_id))
                if self.commit.shortfall > 0:
                    self._count("shortfall")
                    self.log.warn("charging: {call_id} cost {cost}, {short} not debited",
                                  call_id=self.call_id, cost=self.commit.final_cost,
                                  short=self.commit.shortfall)
            elif self._reserved:
                await self._persist("release", lambda: self.store.release(
                    self.account, self.call_id))
        except Exception:
            self.log.failure("charging: closing {call_id} failed", Failure(),
                             call_id=self.call_id)
        finally:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(self.commit)
            if self._on_closed is not None:
                self._on_closed(self)
        return self.commit

    def when_closed(self) -> Deferred[Commit | None]:
        """A Deferred firing (with the L{Commit} or C{None}) once the hold
        was committed or released."""
        if self._closing is None:
            d: Deferred[Commit | None] = Deferred()
            self._waiters.append(d)
            return d
        return follow(self._closing)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary for CDRs: account, payment, state, times,
        the re-rated C{cost} (C{None} before the end or when not charged),
        what was debited, and the cost breakdown."""
        charged = self.breakdown is not None
        commit = self.commit
        return {
            "account": self.account, "payment": self.payer.payment,
            "state": str(self.state), "reason": self.reason, "number": self.number,
            "answered_at": self.answered_at, "ended_at": self.ended_at,
            "limit_s": self.limit_s, "forfeited": self.forfeited, "currency": self.currency,
            "cost": str(self.breakdown.cost) if charged else None,  # type: ignore[union-attr]
            "debited": str(commit.debited) if commit is not None else None,
            "shortfall": str(commit.shortfall) if commit is not None else None,
            "breakdown": self.breakdown.as_dict() if charged else None,  # type: ignore[union-attr]
        }
