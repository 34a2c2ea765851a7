"""The live charging sessions of a node, and the charging metrics.

L{ChargingSessions} opens one L{rating.charging.ChargingSession} per call,
keeps the live ones by call id and by account, and tells an account's
calls in progress when its money changed: on L{ChargingSessions.balance_changed}
(a top-up, called by the API) and whenever another call of the account
gives back what it held.  L{ChargingMetrics} exports what the sessions
report, on the service's registry, registered once per registry.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime

from rating.charging import (
    ERROR_OPERATIONS,
    OPERATIONS,
    REJECTION_REASONS,
    STORE_ERROR,
    ChargingPolicy,
    ChargingSession,
    Payer,
    SessionState,
    follow,
)
from rating.lookup import TariffIndex
from rating.stores.interface import Commit, IBalanceStore

__all__ = ["ChargingMetrics", "ChargingSessions"]

#: Upper bounds, in seconds, of the C{b2bua_balance_operation_seconds} buckets.
OPERATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0)


class ChargingMetrics:
    """The charging layer's metrics, on one registry (never twice on it).

    C{b2bua_rating_rejections_total{reason}}, C{b2bua_balance_operation_seconds{op}}
    and C{b2bua_charging_errors_total{op}}, every label value from a fixed
    set.  Use L{on} to get the one instance of a registry.
    """

    _instances: weakref.WeakKeyDictionary[CollectorRegistry, ChargingMetrics] = (
        weakref.WeakKeyDictionary())

    @classmethod
    def on(cls, registry: CollectorRegistry) -> ChargingMetrics:
        """The metrics registered on C{registry}, created the first time."""
        found = cls._instances.get(registry)
        if found is None:
            found = cls._instances[registry] = cls(registry)
        return found

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Register the metrics on C{registry} (a private one by default)."""
        registry = registry if registry is not None else CollectorRegistry()
        self.registry = registry
        ChargingMetrics._instances[registry] = self
        self.rejections = Counter(
            "b2bua_rating_rejections_total", "Calls refused by charging, by reason.",
            ["reason"], registry=registry)
        self.operations = Histogram(
            "b2bua_balance_operation_seconds",
            "Time balance store operations take, in seconds, by operation.",
            ["op"], buckets=OPERATION_BUCKETS, registry=registry)
        self.errors = Counter(
            "b2bua_charging_errors_total",
            "Charging failures (store errors, rating errors, commit shortfalls), by operation.",
            ["op"], registry=registry)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
        for op in OPERATIONS:
            self.operations.labels(op)
        for op in ERROR_OPERATIONS:
            self.errors.labels(op)

    def rejected(self, reason: str) -> None:
        """Count a refused call (C{reason} from L{REJECTION_REASONS})."""
        self.rejections.labels(reason if reason in REJECTION_REASONS else STORE_ERROR).inc()

    def operation(self, op: str, seconds: float) -> None:
        """Record how long a store operation took."""
        if op in OPERATIONS and seconds >= 0:
            self.operations.labels(op).observe(seconds)

    def error(self, op: str) -> None:
        """Count a failure of C{op}."""
        self.errors.labels(op if op in ERROR_OPERATIONS else "rating").inc()


class ChargingSessions:
    """The live sessions, by call id and by account, on one store.

    A session leaves when its call ends; once its hold is settled, the
    starved sessions of the same account (cut before their cap for lack of
    money) are told the balance changed, so money a call gives back goes to
    the calls still running.
    """

    def __init__(self, store: IBalanceStore, clock: IReactorTime,
                 policy: ChargingPolicy | None = None,
                 metrics: ChargingMetrics | None = None) -> None:
        self.store = store
        self.clock = clock
        self.policy = policy or ChargingPolicy()
        self.metrics = metrics
        self._calls: dict[str, ChargingSession] = {}
        self._accounts: dict[str, dict[str, ChargingSession]] = {}
        self._closing: set[Deferred[Commit | None]] = set()

    def __len__(self) -> int:
        return len(self._calls)

    def open(self, call_id: str, payer: Payer, index: TariffIndex, number: str,
             on_limit: Callable[[float, str], object] | None = None) -> ChargingSession:
        """A new session for C{call_id}, kept until its call ends."""
        if call_id in self._calls:
            raise ValueError(f"call {call_id!r} already has a charging session")
        session = ChargingSession(call_id, payer, index, number, self.store, self.clock,
                                  self.policy, on_limit=on_limit, metrics=self.metrics,
                                  on_ended=self._ended, on_closed=self._closed)
        self._calls[call_id] = session
        self._accounts.setdefault(payer.account, {})[call_id] = session
        return session

    def get(self, call_id: str) -> ChargingSession | None:
        """The live session of C{call_id}, if any."""
        return self._calls.get(call_id)

    def of(self, account: str) -> list[ChargingSession]:
        """The live sessions charging C{account}."""
        return list(self._accounts.get(account, {}).values())

    def balance_changed(self, account: str) -> Deferred[None]:
        """Money came to (or left) C{account}: every live answered call of
        it recomputes its limit and re-arms its cut.  Fires when all did."""
        updates = [s.balance_changed() for s in self.of(account)
                   if s.state is SessionState.RUNNING]
        return DeferredList(updates, consumeErrors=True).addCallback(lambda _: None)

    def drained(self) -> Deferred[None]:
        """Fires when every session that ended has settled its hold."""
        return DeferredList([follow(d) for d in self._closing],
                            consumeErrors=True).addCallback(lambda _: None)

    def _ended(self, session: ChargingSession) -> None:
        self._calls.pop(session.call_id, None)
        sessions = self._accounts.get(session.account, {})
        sessions.pop(session.call_id, None)
        if not sessions:
            self._accounts.pop(session.account, None)
        closing = session.when_closed()
        self._closing.add(closing)
        closing.addBoth(lambda _: self._closing.discard(closing))

    def _closed(self, session: ChargingSession) -> None:
        for other in self.of(session.account):
            if other.starved:
                other.balance_changed()
