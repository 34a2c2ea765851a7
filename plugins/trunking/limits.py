"""Call limits of SIP trunks and vendor connections: the store contract and
its in-memory implementation (C{docs/limits.md}).

A I{limited entity} is a customer trunk or a vendor connection
(L{LimitKey.kind}); each may cap its concurrent calls in total, inbound and
outbound, and its call attempts per second (L{Limits}).  The counts are not
counters that are incremented and decremented: per entity and direction the
store keeps the I{set} of live call ids, each with a I{lease} (an absolute
expiry).  A count is the number of members whose lease has not run out, so:

  - releasing a call twice, or releasing one never admitted, changes
    nothing (a double BYE cannot make a count negative);
  - a call whose node crashed disappears when its lease runs out, since no
    one renews it (L{ICallLimitStore.renew});
  - a live call the store lost (a Redis failover) comes back at the next
    renewal, which re-adds every call its node still holds.

Call attempts per second are a sliding window log: the store keeps the
instants of the attempts of the last second per entity, and admits an
attempt when fewer than C{cps} are in the window.  An attempt is a call
newly joining the entity (an INVITE from a customer trunk; each failover
attempt to a vendor connection); refused attempts are not recorded.

L{ICallLimitStore.acquire} is atomic across every key it is given: the call
joins all of them, or, when any one refuses, none (and nothing is
recorded).  Two implementations share one contract suite
(C{tests/trial/plugins/trunking/test_limits.py}): L{MemoryCallLimitStore}
(one node, tests, the demo) and
L{plugins.trunking.limits_redis.RedisCallLimitStore} (every node of a
cluster; one Lua script per operation).
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import Attribute, Interface, implementer

__all__ = [
    "CONNECTION",
    "DIRECTIONS",
    "GRANTED",
    "INBOUND",
    "KINDS",
    "LIMIT_NAMES",
    "OUTBOUND",
    "TRUNK",
    "UNLIMITED",
    "WINDOW_MS",
    "Admission",
    "ICallLimitStore",
    "LimitError",
    "LimitKey",
    "Limits",
    "MemoryCallLimitStore",
    "Refusal",
    "Usage",
    "check_call_id",
    "check_keys",
    "check_lease",
    "refusal_for",
]

P = ParamSpec("P")
T = TypeVar("T")

TRUNK = "trunk"
CONNECTION = "connection"
#: The kinds of limited entity: a customer's SIP trunk, a vendor connection.
KINDS = (TRUNK, CONNECTION)
INBOUND = "in"
OUTBOUND = "out"
#: Call directions: C{"out"} towards the network (a customer's trunk sends
#: it, a vendor connection carries it away), C{"in"} towards a customer (it
#: arrives on a vendor connection and is delivered to a trunk).
DIRECTIONS = (INBOUND, OUTBOUND)
#: The values of L{Refusal.limit} (and of the rejection metric's label).
LIMIT_NAMES = ("total", INBOUND, OUTBOUND, "cps")
#: The CPS window, milliseconds.
WINDOW_MS = 1000
#: The longest entity id or call id accepted.
MAX_ID = 1024


class LimitError(ValueError):
    """A malformed request (a programming or provisioning error): an
    unknown kind or direction, a bad id, a negative limit."""


@dataclass(frozen=True, slots=True)
class Limits:
    """An entity's limits; 0 means unlimited.

    @ivar total: concurrent calls, both directions together.
    @ivar inbound: concurrent inbound calls.
    @ivar outbound: concurrent outbound calls.
    @ivar cps: call attempts in any one-second window.
    """

    total: int = 0
    inbound: int = 0
    outbound: int = 0
    cps: int = 0

    def __post_init__(self) -> None:
        for name in ("total", "inbound", "outbound", "cps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise LimitError(f"limit {name} must be a whole number >= 0: {value!r}")

    def concurrent(self, direction: str) -> int:
        """The concurrency limit of C{direction} (0: unlimited)."""
        return self.inbound if direction == INBOUND else self.outbound


UNLIMITED = Limits()


@dataclass(frozen=True, slots=True)
class LimitKey:
    """One entity a call joins, in the call's direction, with the entity's
    limits at admission time (provisioning may change them at any moment;
    the store keeps none).

    @ivar kind: L{TRUNK} or L{CONNECTION}.
    @ivar id: the entity's provisioned id.
    @ivar direction: L{INBOUND} or L{OUTBOUND}.
    @ivar limits: what the entity allows.
    """

    kind: str
    id: str
    direction: str
    limits: Limits = field(default=UNLIMITED, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LimitError(f"kind must be one of {KINDS}: {self.kind!r}")
        if self.direction not in DIRECTIONS:
            raise LimitError(f"direction must be one of {DIRECTIONS}: {self.direction!r}")
        _check_id("entity id", self.id)
        if not isinstance(self.limits, Limits):
            raise LimitError(f"limits must be a Limits: {self.limits!r}")

    @property
    def entity(self) -> str:
        """C{"<kind>:<id>"}: the entity's name (one set of counts per name)."""
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an admission was refused.

    @ivar key: the key that refused (the first, in the order given).
    @ivar limit: which limit: C{"total"}, C{"in"}, C{"out"} or C{"cps"}.
    @ivar current: the count it was at (calls, or attempts in the window).
    @ivar maximum: the limit.
    @ivar retry_after: for C{"cps"}, seconds until the window admits an
        attempt again; C{None} for concurrency (no one knows when a call
        ends).
    """

    key: LimitKey
    limit: str
    current: int
    maximum: int
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer of L{ICallLimitStore.acquire}.

    @ivar refusal: C{None} when the call joined every key.
    """

    refusal: Refusal | None = None

    @property
    def granted(self) -> bool:
        """True when the call joined every key."""
        return self.refusal is None


GRANTED = Admission()


@dataclass(frozen=True, slots=True)
class Usage:
    """An entity's counts at one instant.

    @ivar kind: L{TRUNK} or L{CONNECTION}.
    @ivar id: the entity's id.
    @ivar inbound: live inbound calls.
    @ivar outbound: live outbound calls.
    @ivar attempts: call attempts in the last second.
    """

    kind: str
    id: str
    inbound: int = 0
    outbound: int = 0
    attempts: int = 0

    @property
    def total(self) -> int:
        """Live calls in both directions."""
        return self.inbound + self.outbound


def _check_id(what: str, value: str) -> str:
    if (not isinstance(value, str) or not value or len(value) > MAX_ID
            or not value.isprintable() or any(c.isspace() for c in value)):
        raise LimitError(f"{what} must be 1 to {MAX_ID} printable characters without "
                         f"spaces: {value!r}")
    return value


def check_call_id(call_id: str) -> str:
    """Check a call id: 1 to L{MAX_ID} printable characters, no white space.

    @raise LimitError: if it is not.
    """
    return _check_id("call id", call_id)


def check_keys(keys: Iterable[LimitKey]) -> list[LimitKey]:
    """The keys as a list, checked: L{LimitKey}s of distinct entities.

    @raise LimitError: otherwise.
    """
    checked = list(keys)
    seen: set[str] = set()
    for key in checked:
        if not isinstance(key, LimitKey):
            raise LimitError(f"not a LimitKey: {key!r}")
        if key.entity in seen:
            raise LimitError(f"{key.entity} given twice")
        seen.add(key.entity)
    return checked


def check_lease(lease: float) -> int:
    """A lease in seconds, as milliseconds (at least one second).

    @raise LimitError: for less, or for something that is not a number.
    """
    if isinstance(lease, bool) or not isinstance(lease, int | float) or not lease >= 1:
        raise LimitError(f"lease must be at least 1 second: {lease!r}")
    return round(lease * 1000)


def refusals_as_failures(method: Callable[P, Deferred[T]]) -> Callable[P, Deferred[T]]:
    """Decorate a store method so that a L{LimitError} raised before it
    returns comes back as a failed L{Deferred}, as the interface says."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        try:
            return method(*args, **kwargs)
        except LimitError:
            return fail()

    return wrapper


class ICallLimitStore(Interface):
    """Live calls and call attempts of limited entities, shared by every
    node that uses the same store.

    Every method returns a L{Deferred} and is atomic: no other operation,
    from any node, interleaves with it.  Malformed arguments fail the
    Deferred with L{LimitError}.  Times are the store's clock.
    """

    lease = Attribute("Seconds a membership lives unless renewed (or released).")

    # zope.interface method declarations take no self (hence noqa: N805)
    def acquire(call_id: str, keys: Sequence[LimitKey]) -> Deferred[Admission]:  # noqa: N805
        """Admit C{call_id} into every key, or into none.

        For each key the call does not hold yet, in the order given: the
        entity's live calls in both directions must be below
        C{limits.total}, those in the key's direction below that
        direction's limit, and its attempts in the last second below
        C{limits.cps} (each checked only when not 0).  The first key that
        refuses is reported (L{Refusal}); then nothing was recorded
        anywhere.  Otherwise the call joins every key with a fresh lease,
        and an attempt is recorded on each key it newly joined.

        A key the call already holds (in the same direction) admits it
        again without checking or recording an attempt: acquire is
        idempotent, and renews the lease of the keys it holds."""

    def release(call_id: str, keys: Sequence[LimitKey]) -> Deferred[int]:  # noqa: N805
        """Remove C{call_id} from the live calls of C{keys} (both
        directions); fires with the number of memberships removed.
        Idempotent; attempts already recorded stay in their window."""

    def renew(held: Mapping[str, Sequence[LimitKey]]) -> Deferred[int]:  # noqa: N805
        """Extend to now + L{lease} the lease of every call id in C{held} on
        each of its keys, without checking limits (the calls are live).
        A membership that had expired or was lost is added back; fires
        with the number of those (the store had drifted from the node's
        own table of calls)."""

    def usage(kind: str, id: str) -> Deferred[Usage]:  # noqa: N805
        """The entity's live calls by direction and its attempts in the last
        second (zeros for an unknown entity)."""

    def snapshot() -> Deferred[list[Usage]]:
        """L{usage} of every entity with a live call or a recent attempt,
        sorted by kind and id."""


@dataclass(slots=True)
class _Entity:
    """One entity's live calls (id -> lease expiry ms) and attempt log.

    @ivar earliest: no lease expires before this instant (ms): leases are
        scanned only once it has passed.
    """

    live: dict[str, dict[str, int]] = field(
        default_factory=lambda: {INBOUND: {}, OUTBOUND: {}})
    attempts: deque[int] = field(default_factory=deque)
    earliest: float = math.inf

    def join(self, direction: str, call_id: str, expiry: int) -> bool:
        """Set C{call_id}'s lease; True when it was not a member."""
        calls = self.live[direction]
        new = call_id not in calls
        calls[call_id] = expiry
        self.earliest = min(self.earliest, expiry)
        return new

    def purge(self, now_ms: int) -> None:
        """Forget expired leases and attempts older than the window."""
        if self.earliest <= now_ms:
            self.earliest = math.inf
            for calls in self.live.values():
                for call_id, expiry in list(calls.items()):
                    if expiry <= now_ms:
                        del calls[call_id]
                    else:
                        self.earliest = min(self.earliest, expiry)
        while self.attempts and self.attempts[0] <= now_ms - WINDOW_MS:
            self.attempts.popleft()

    @property
    def empty(self) -> bool:
        """True when nothing is left to count."""
        return not (self.attempts or any(self.live.values()))


def refusal_for(key: LimitKey, inbound: int, outbound: int,
                attempts: Sequence[int], now_ms: int) -> Refusal | None:
    """The refusal of a call newly joining C{key}, given the entity's live
    calls and its attempt instants (ms, oldest first, within the window):
    the one rule both stores apply (the Redis one in Lua)."""
    limits = key.limits
    total = inbound + outbound
    if limits.total and total >= limits.total:
        return Refusal(key, "total", total, limits.total)
    current = inbound if key.direction == INBOUND else outbound
    maximum = limits.concurrent(key.direction)
    if maximum and current >= maximum:
        return Refusal(key, key.direction, current, maximum)
    if limits.cps and len(attempts) >= limits.cps:
        # a slot frees when the attempt that put the window at its limit leaves
        leaves = attempts[len(attempts) - limits.cps] + WINDOW_MS
        return Refusal(key, "cps", len(attempts), limits.cps, (leaves - now_ms) / 1000)
    return None


@implementer(ICallLimitStore)
class MemoryCallLimitStore:
    """L{ICallLimitStore} in process memory (one node).

    @param clock: the store's clock (leases and the CPS window).
    @param lease: seconds a membership lives unless renewed.
    """

    def __init__(self, clock: IReactorTime, lease: float = 60.0) -> None:
        self._clock = clock
        self._lease_ms = check_lease(lease)
        self.lease = self._lease_ms / 1000
        self._entities: dict[str, _Entity] = {}

    def _now_ms(self) -> int:
        return round(self._clock.seconds() * 1000)

    def _entity(self, name: str, now_ms: int) -> _Entity:
        entity = self._entities.get(name)
        if entity is None:
            entity = self._entities[name] = _Entity()
        entity.purge(now_ms)
        return entity

    def _tidy(self, name: str) -> None:
        entity = self._entities.get(name)
        if entity is not None and entity.empty:
            del self._entities[name]

    @refusals_as_failures
    def acquire(self, call_id: str, keys: Sequence[LimitKey]) -> Deferred[Admission]:
        """See L{ICallLimitStore.acquire}."""
        check_call_id(call_id)
        checked = check_keys(keys)
        now_ms = self._now_ms()
        joining: list[tuple[LimitKey, _Entity, bool]] = []
        for key in checked:
            entity = self._entity(key.entity, now_ms)
            held = call_id in entity.live[key.direction]
            if not held:
                refusal = refusal_for(key, len(entity.live[INBOUND]),
                                      len(entity.live[OUTBOUND]), entity.attempts, now_ms)
                if refusal is not None:
                    for other in checked:
                        self._tidy(other.entity)
                    return succeed(Admission(refusal))
            joining.append((key, entity, held))
        expiry = now_ms + self._lease_ms
        for key, entity, held in joining:
            entity.join(key.direction, call_id, expiry)
            if not held:
                entity.attempts.append(now_ms)
        return succeed(GRANTED)

    @refusals_as_failures
    def release(self, call_id: str, keys: Sequence[LimitKey]) -> Deferred[int]:
        """See L{ICallLimitStore.release}."""
        check_call_id(call_id)
        removed = 0
        for key in check_keys(keys):
            entity = self._entities.get(key.entity)
            if entity is None:
                continue
            entity.purge(self._now_ms())
            for calls in entity.live.values():
                removed += calls.pop(call_id, None) is not None
            self._tidy(key.entity)
        return succeed(removed)

    @refusals_as_failures
    def renew(self, held: Mapping[str, Sequence[LimitKey]]) -> Deferred[int]:
        """See L{ICallLimitStore.renew}."""
        now_ms = self._now_ms()
        expiry = now_ms + self._lease_ms
        checked = [(check_call_id(call_id), check_keys(keys)) for call_id, keys in held.items()]
        restored = 0
        for call_id, keys in checked:
            for key in keys:
                restored += self._entity(key.entity, now_ms).join(key.direction, call_id,
                                                                  expiry)
        return succeed(restored)

    @refusals_as_failures
    def usage(self, kind: str, id: str) -> Deferred[Usage]:
        """See L{ICallLimitStore.usage}."""
        name = LimitKey(kind, id, OUTBOUND).entity
        entity = self._entities.get(name)
        if entity is None:
            return succeed(Usage(kind, id))
        entity.purge(self._now_ms())
        found = Usage(kind, id, len(entity.live[INBOUND]), len(entity.live[OUTBOUND]),
                      len(entity.attempts))
        self._tidy(name)
        return succeed(found)

    def snapshot(self) -> Deferred[list[Usage]]:
        """See L{ICallLimitStore.snapshot}."""
        now_ms = self._now_ms()
        found = []
        for name in sorted(self._entities):
            entity = self._entities[name]
            entity.purge(now_ms)
            if entity.empty:
                del self._entities[name]
                continue
            kind, _, id = name.partition(":")
            found.append(Usage(kind, id, len(entity.live[INBOUND]),
                               len(entity.live[OUTBOUND]), len(entity.attempts)))
        return succeed(found)
