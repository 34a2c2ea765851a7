"""L{CallLimiter}: a node's calls against the trunk and connection limits
(C{docs/limits.md}).

A trunking plugin drives it from the call hooks; it decides which keys a
call holds, acquires and releases them in an L{ICallLimitStore}, turns
refusals into SIP rejections and counts them, and renews the leases of
every call of the node on its clock.

Two scopes of holding:

  - I{call-scoped} keys (L{CallLimiter.admit_call}) are held until the call
    ends: the customer's trunk, and for an inbound call the vendor
    connection it arrived on;
  - I{attempt-scoped} keys (L{CallLimiter.admit_attempt}) are held by one
    attempt of the hunt: the vendor connection an outbound attempt goes
    to.  A failed attempt releases it (L{CallLimiter.attempt_ended}); the
    answered attempt keeps it until the call ends.  Each attempt is its
    own store member (C{<call id>#<attempt>}), so two attempts of one call
    on one connection count twice, as the vendor counts them.

L{CallLimiter.call_ended} releases everything the call still holds,
whichever way it ended (BYE, CANCEL, busy, timeout, a crashed leg), and an
admission still in flight when the call ends is released when it lands.
The node's table of held keys is what L{CallLimiter.renew} sends to the
store every C{renew_interval}; a node that dies stops renewing, and its
calls drop out of every count when their lease runs out.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.core.decisions import Reject
from plugins.trunking.limits import (
    CONNECTION,
    DIRECTIONS,
    OUTBOUND,
    TRUNK,
    Admission,
    ICallLimitStore,
    LimitKey,
    Limits,
    Refusal,
)

__all__ = [
    "SOURCE",
    "CallLimiter",
    "LimitLookup",
    "LimitSettings",
    "SettingsError",
    "limits_from_row",
    "provisioned_limits",
]

#: The C{source} of the rejections (logs, CDR disconnect causes).
SOURCE = "trunk_limits"
#: (kind, id) -> the entity's limits, or C{None} for an entity that is not
#: limited (not provisioned, or without limits): no key, no store work.
LimitLookup = Callable[[str, str], "Limits | None"]

log = Logger()


def limits_from_row(row: Mapping[str, Any]) -> Limits:
    """The limits of a provisioned trunk or connection row: its
    C{max_calls}, C{max_calls_in}, C{max_calls_out} and C{max_cps} columns
    (missing or empty: 0, unlimited)."""
    def value(column: str) -> int:
        return int(row.get(column) or 0)

    return Limits(total=value("max_calls"), inbound=value("max_calls_in"),
                  outbound=value("max_calls_out"), cps=value("max_cps"))


def provisioned_limits(directory: Any) -> LimitLookup:
    """A L{LimitLookup} over the provisioning snapshot (C{services.directory},
    anything with C{trunk(id)} and C{connection(id)}): entity ids are row ids
    as strings.  A row that is not there (unknown, suspended, disabled) is
    not limited; a row without limits still counts its calls (for
    L{ICallLimitStore.snapshot}).  Read at every admission, so a change of
    limits applies to the next call."""
    def lookup(kind: str, id: str) -> Limits | None:
        if not id.isdigit():
            return None
        row = directory.trunk(int(id)) if kind == TRUNK else directory.connection(int(id))
        return None if row is None else limits_from_row(row)

    return lookup


class SettingsError(ValueError):
    """A bad limits settings table (the message names the key)."""


@dataclass(frozen=True)
class LimitSettings:
    """How refusals are answered and how leases are kept.

    @ivar reject_code: the response to a call over a concurrency limit:
        503 (default) or 480.
    @ivar retry_after: the C{Retry-After} (seconds) of a concurrency
        refusal and of a store failure under C{on_store_error="reject"}.
        CPS refusals say when the window admits again (at least 1 s).
    @ivar lease: seconds a call's membership lives without renewal: how
        long the calls of a dead node keep counting.
    @ivar renew_interval: seconds between two renewals (below C{lease}).
    @ivar on_store_error: C{"allow"} admits a call when the store cannot
        be reached (its keys are counted once it can), C{"reject"} answers
        503.
    """

    reject_code: int = 503
    retry_after: int = 5
    lease: float = 60.0
    renew_interval: float = 20.0
    on_store_error: str = "allow"

    def __post_init__(self) -> None:
        self.check("settings")

    def check(self, where: str) -> None:
        """@raise SettingsError: naming C{where.<key>} of the first bad value."""
        def bad(key: str, expected: str, value: Any) -> SettingsError:
            return SettingsError(f"{where}.{key}: expected {expected}, not {value!r}")

        if self.reject_code not in (480, 503):
            raise bad("reject_code", "480 or 503", self.reject_code)
        if (isinstance(self.retry_after, bool) or not isinstance(self.retry_after, int)
                or not 1 <= self.retry_after <= 3600):
            raise bad("retry_after", "whole seconds from 1 to 3600", self.retry_after)
        for key in ("lease", "renew_interval"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 1:
                raise bad(key, "at least 1 second", value)
        if self.renew_interval * 2 > self.lease:
            raise bad("renew_interval", f"at most half the lease ({self.lease} s)",
                      self.renew_interval)
        if self.on_store_error not in ("allow", "reject"):
            raise bad("on_store_error", '"allow" or "reject"', self.on_store_error)

    @classmethod
    def from_settings(cls, table: Mapping[str, Any],
                      where: str = "plugins.trunking.limits") -> LimitSettings:
        """Read a settings table (C{[plugins.trunking.limits]}); missing
        keys keep their defaults.

        @raise SettingsError: for an unknown key or a bad value, naming it.
        """
        known = {"reject_code", "retry_after", "lease", "renew_interval", "on_store_error"}
        for key in table:
            if key not in known:
                raise SettingsError(f"{where}.{key}: unknown key (known: {sorted(known)})")
        values = dict(table)
        if "lease" in values and "renew_interval" not in values:
            lease = values["lease"]
            if isinstance(lease, int | float) and not isinstance(lease, bool):
                values["renew_interval"] = max(1.0, lease / 3)
        try:
            return cls(**values)
        except SettingsError as error:
            raise SettingsError(str(error).replace("settings.", f"{where}.", 1)) from None


@dataclass
class _Call:
    """What one call holds on this node.

    @ivar keys: call-scoped keys granted, by entity.
    @ivar attempts: attempt-scoped keys granted, by attempt.
    @ivar pending: admissions in flight.
    @ivar inflight: attempts whose admission is in flight.
    @ivar abandoned: attempts that ended while their admission was in flight.
    @ivar missing: renewals that found the call gone from C{live_calls}.
    """

    direction: str
    keys: dict[str, LimitKey] = field(default_factory=dict)
    attempts: dict[str, LimitKey] = field(default_factory=dict)
    pending: int = 0
    ended: bool = False
    inflight: set[str] = field(default_factory=set)
    abandoned: set[str] = field(default_factory=set)
    missing: int = 0


def _holder(call_id: str, attempt: str) -> str:
    """The store member of an attempt."""
    return f"{call_id}#{attempt}"


class CallLimiter:
    """The limits of one node's calls.

    @param store: where the counts live (shared by the nodes of a cluster).
    @param clock: drives the renewal loop.
    @param registry: where the metrics go (the service's registry).
    @param limits: (kind, id) -> L{Limits} or C{None} (not limited); asked
        at every admission, so provisioning changes apply to the next call.
    @param settings: responses and leases.
    @param live_calls: optional: the ids of the calls the switch has now;
        a call held here that is missing from it at two renewals in a row
        is released (C{b2bua_trunk_limit_stale_calls_total}), a safety net
        for a plugin that missed an end.
    """

    def __init__(self, store: ICallLimitStore, clock: IReactorTime,
                 registry: CollectorRegistry, limits: LimitLookup,
                 settings: LimitSettings | None = None,
                 live_calls: Callable[[], Collection[str]] | None = None) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings or LimitSettings()
        self.registry = registry
        self._limits = limits
        self._live_calls = live_calls
        self._calls: dict[str, _Call] = {}
        #: call id -> when it ended (s): a late admission of it acquires nothing
        self._ended: OrderedDict[str, float] = OrderedDict()
        self._loop: LoopingCall | None = None
        self._started = False
        self._renewing = False
        self.rejections = Counter(
            "b2bua_trunk_limit_rejections_total",
            "Calls and attempts refused by a trunk or connection limit.",
            ["kind", "id", "limit"], registry=registry)
        self.store_errors = Counter(
            "b2bua_trunk_limit_store_errors_total",
            "Limit store operations that failed, by operation.",
            ["operation"], registry=registry)
        for operation in ("acquire", "release", "renew"):
            self.store_errors.labels(operation)
        self.restored = Counter(
            "b2bua_trunk_limit_restored_total",
            "Memberships a renewal found missing from the store and added back (drift).",
            registry=registry)
        self.stale = Counter(
            "b2bua_trunk_limit_stale_calls_total",
            "Calls released because the switch no longer had them (a missed end).",
            registry=registry)
        self.held_gauge = Gauge(
            "b2bua_trunk_limit_held_calls",
            "Calls of this node holding a trunk or connection limit key.",
            registry=registry)
        self.held_gauge.set_function(lambda: sum(
            1 for call in self._calls.values() if call.keys or call.attempts))

    # -- life cycle ------------------------------------------------------------

    def start(self) -> None:
        """Renew every C{renew_interval} seconds on the clock while this
        node holds calls (an idle node keeps no timer)."""
        self._started = True
        self._wake()

    def stop(self) -> None:
        """Stop renewing (the calls' leases then run out by themselves)."""
        self._started = False
        self._sleep()

    def _wake(self) -> None:
        """Run the renewal loop, if started and calls are held."""
        if self._started and self._loop is None and self._calls:
            self._loop = LoopingCall(self.renew)
            self._loop.clock = self.clock
            self._loop.start(self.settings.renew_interval, now=False)

    def _sleep(self) -> None:
        """Stop the renewal loop."""
        if self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None

    def _forget(self, call_id: str) -> None:
        """Drop a call's record; the loop sleeps when none is left."""
        self._calls.pop(call_id, None)
        if not self._calls:
            self._sleep()

    # -- admission -------------------------------------------------------------

    def _key(self, kind: str, id: str | None, direction: str) -> LimitKey | None:
        if id is None:
            return None
        limits = self._limits(kind, id)
        return None if limits is None else LimitKey(kind, id, direction, limits)

    def _direction(self, call_id: str, direction: str) -> str | None:
        """The call's direction (that of its first admission wins), or
        C{None} once it ended.

        @raise ValueError: for a direction that is not one of L{DIRECTIONS}.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}: {direction!r}")
        if call_id in self._ended:
            return None
        record = self._calls.get(call_id)
        return direction if record is None else record.direction

    def _record(self, call_id: str, direction: str) -> _Call:
        """The call's record, created when it first needs a key."""
        record = self._calls.get(call_id)
        if record is None:
            record = self._calls[call_id] = _Call(direction)
            self._wake()
        return record

    def admit_call(self, call_id: str, direction: str, trunk: str | None = None,
                   connection: str | None = None) -> Deferred[Reject | None]:
        """Admit a call into its call-scoped keys: C{trunk} (the customer's
        trunk) and C{connection} (for an inbound call, the vendor connection
        it came from), in C{direction}.  Fires with C{None} when admitted
        (or not limited), or with the L{Reject} to answer.  May be called
        again for the same call (e.g. once the trunk is known): keys already
        held are kept, and the direction of the first admission wins."""
        known = self._direction(call_id, direction)
        if known is None:
            return succeed(None)
        held = self._calls.get(call_id)
        keys = [key for key in (self._key(TRUNK, trunk, known),
                                self._key(CONNECTION, connection, known))
                if key is not None and (held is None or key.entity not in held.keys)]
        if not keys:
            return succeed(None)
        record = self._record(call_id, known)

        def granted() -> None:
            if record.ended:
                self._release(call_id, keys)
            else:
                record.keys.update((key.entity, key) for key in keys)

        return self._admit(call_id, call_id, record, keys, granted)

    def admit_attempt(self, call_id: str, attempt: str, connection: str,
                      direction: str = OUTBOUND) -> Deferred[Reject | None]:
        """Admit one attempt of the hunt (e.g. the B leg's index) into the
        vendor C{connection} it goes to.  Fires with C{None} (admitted, or
        not limited) or a L{Reject}: the connection is over a limit, try the
        next one (or answer with it when none is left).  The call's
        direction, if admitted before, wins over C{direction}."""
        known = self._direction(call_id, direction)
        if known is None:
            return succeed(None)
        held = self._calls.get(call_id)
        if held is not None and (attempt in held.attempts or attempt in held.inflight):
            return succeed(None)
        key = self._key(CONNECTION, connection, known)
        if key is None:
            return succeed(None)
        record = self._record(call_id, known)
        holder = _holder(call_id, attempt)
        record.inflight.add(attempt)

        def granted() -> None:
            if record.ended or attempt in record.abandoned:
                self._release(holder, [key])
            else:
                record.attempts[attempt] = key

        def landed() -> None:
            record.inflight.discard(attempt)
            record.abandoned.discard(attempt)

        return self._admit(call_id, holder, record, [key], granted, landed)

    def _admit(self, call_id: str, holder: str, record: _Call, keys: list[LimitKey],
               granted: Callable[[], None],
               then: Callable[[], None] | None = None) -> Deferred[Reject | None]:
        """Acquire C{keys} for C{holder} (a member of call C{call_id}):
        C{granted} runs when it holds them, C{then} once the answer is in.
        The returned Deferred may be cancelled (a hook timeout) without
        losing track of the keys."""
        record.pending += 1

        def landed(admission: Admission) -> Reject | None:
            if admission.granted:
                granted()
                return None
            assert admission.refusal is not None
            return self._refused(admission.refusal)

        def failed(failure: Failure) -> Reject | None:
            self.store_errors.labels("acquire").inc()
            log.failure("limit store: admission of {holder} failed", failure, holder=holder)
            if self.settings.on_store_error == "allow":
                # counted once the store is back: renewals add it back
                granted()
                return None
            # the script may have run before the failure: undo it
            self._release(holder, keys)
            return Reject(503, "Service Unavailable", (
                ("Retry-After", str(self.settings.retry_after)),
                ("Reason", 'Q.850;cause=41;text="call limits unavailable"')), source=SOURCE)

        def settled(result: Reject | None) -> Reject | None:
            if then is not None:
                then()
            record.pending -= 1
            if record.ended and not record.pending:
                self._forget(call_id)
            return result

        inner = self.store.acquire(holder, keys).addCallbacks(landed, failed)
        inner.addCallback(settled)
        outer: Deferred[Reject | None] = Deferred()
        inner.chainDeferred(outer)
        return outer

    def _refused(self, refusal: Refusal) -> Reject:
        """Count a refusal and answer it."""
        key = refusal.key
        self.rejections.labels(key.kind, key.id, refusal.limit).inc()
        if refusal.limit == "cps":
            retry = max(1, math.ceil(refusal.retry_after or 1))
            return Reject(503, "Service Unavailable", (
                ("Retry-After", str(retry)),
                ("Reason", 'Q.850;cause=42;text="call rate limit"')), source=SOURCE)
        code = self.settings.reject_code
        return Reject(code, "Service Unavailable" if code == 503 else "Temporarily Unavailable", (
            ("Retry-After", str(self.settings.retry_after)),
            ("Reason", 'Q.850;cause=34;text="call limit"')), source=SOURCE)

    # -- release ---------------------------------------------------------------

    def _release(self, holder: str, keys: Sequence[LimitKey]) -> Deferred[None]:
        """Release C{keys} of C{holder}; a failure is counted and logged (the
        lease ends the membership anyway)."""
        def failed(failure: Failure) -> None:
            self.store_errors.labels("release").inc()
            log.failure("limit store: release of {holder} failed", failure, holder=holder)

        return self.store.release(holder, keys).addCallbacks(lambda _: None, failed)

    def attempt_ended(self, call_id: str, attempt: str) -> Deferred[None]:
        """An attempt failed (busy, error, timeout, cancelled): release its
        connection.  Idempotent; an admission still in flight is released
        when it lands."""
        record = self._calls.get(call_id)
        if record is None:
            return succeed(None)
        key = record.attempts.pop(attempt, None)
        if key is None:
            if attempt in record.inflight:
                record.abandoned.add(attempt)
            return succeed(None)
        return self._release(_holder(call_id, attempt), [key])

    def call_answered(self, call_id: str, attempt: str) -> Deferred[None]:
        """The call was answered by C{attempt}: release every other attempt
        (the forks that lost)."""
        record = self._calls.get(call_id)
        if record is None:
            return succeed(None)
        others = [other for other in (*record.attempts, *record.inflight) if other != attempt]
        return gatherResults([self.attempt_ended(call_id, other) for other in others]
                             ).addCallback(lambda _: None)

    def call_ended(self, call_id: str) -> Deferred[None]:
        """The call ended, however it ended: release every key it holds.
        Idempotent; admissions still in flight are released when they land,
        and a later admission of the same call acquires nothing."""
        self._forget_ended()
        self._ended[call_id] = self.clock.seconds()
        record = self._calls.get(call_id)
        if record is None:
            return succeed(None)
        record.ended = True
        if not record.pending:
            self._forget(call_id)
        releases = []
        if record.keys:
            releases.append(self._release(call_id, list(record.keys.values())))
        releases += [self._release(_holder(call_id, attempt), [key])
                     for attempt, key in record.attempts.items()]
        record.keys, record.attempts = {}, {}
        return gatherResults(releases).addCallback(lambda _: None)

    def _forget_ended(self) -> None:
        """Forget the ended calls older than a lease."""
        horizon = self.clock.seconds() - self.settings.lease
        while self._ended:
            call_id, at = next(iter(self._ended.items()))
            if at > horizon:
                break
            del self._ended[call_id]

    # -- renewal ---------------------------------------------------------------

    def held(self) -> dict[str, list[LimitKey]]:
        """Store member -> the keys it holds, for every call of this node
        (what L{renew} sends)."""
        table: dict[str, list[LimitKey]] = {}
        for call_id, record in self._calls.items():
            if record.keys:
                table[call_id] = list(record.keys.values())
            for attempt, key in record.attempts.items():
                table[_holder(call_id, attempt)] = [key]
        return table

    def _reconcile(self) -> None:
        """Release the calls the switch no longer has (two renewals in a row)."""
        if self._live_calls is None:
            return
        live = self._live_calls()
        for call_id, record in list(self._calls.items()):
            if call_id in live or record.pending:
                record.missing = 0
                continue
            record.missing += 1
            if record.missing >= 2:
                self.stale.inc()
                log.warn("limits: releasing {call_id}, which the switch no longer has",
                         call_id=call_id)
                self.call_ended(call_id)

    def renew(self) -> Deferred[int]:
        """Renew the leases of every call of this node (one store call);
        fires with the memberships the store had lost.  Never fails (a
        failure is counted and logged); skipped while one is in flight."""
        if self._renewing:
            return succeed(0)
        self._reconcile()
        table = self.held()
        if not table:
            return succeed(0)
        self._renewing = True

        def done(restored: int) -> int:
            if restored:
                self.restored.inc(restored)
                log.warn("limits: {count} call memberships were missing from the store "
                         "and were added back", count=restored)
            return restored

        def failed(failure: Failure) -> int:
            self.store_errors.labels("renew").inc()
            log.failure("limit store: renewal failed", failure)
            return 0

        def finished(result: int) -> int:
            self._renewing = False
            return result

        return self.store.renew(table).addCallbacks(done, failed).addCallback(finished)
