"""The location service: bindings of addresses-of-record to contacts.

A L{Binding} is one registered contact of an address-of-record (AOR), with
what the registrar learned when it was registered: where the REGISTER came
from (L{Received}, kept for NAT traversal), the Path of RFC 3327, and the
instance-id / reg-id of RFC 5626.  L{ILocationStore} is the storage
contract; every method returns a L{Deferred} so that the in-memory store
here and the Redis store (L{b2bua.core.location_redis}) look the same.

L{apply_changes} holds the rules of RFC 3261 section 10.3 steps 6-8 (and the
flow replacement of RFC 5626 section 6) as a pure function: the memory store
calls it, the Redis store's Lua script implements the very same rules, and
one contract suite (C{tests/trial/core/test_location.py}) checks both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

from b2bua.sip.errors import ParseError
from b2bua.sip.interfaces import Source, Target
from b2bua.sip.uri import URI, parse_uri

__all__ = [
    "Binding",
    "ILocationStore",
    "LocationError",
    "MemoryLocationStore",
    "OutOfOrder",
    "Received",
    "TooManyBindings",
    "apply_changes",
    "check_changes",
    "check_remove_all",
    "contact_key",
    "flow_key",
    "normalise_aor",
    "sort_bindings",
]


class LocationError(Exception):
    """An update of the location service that was refused as a whole."""


class OutOfOrder(LocationError):
    """RFC 3261 10.3 step 6/7: a binding already holds this Call-ID with a
    CSeq higher than or equal to the request's; nothing was changed.

    @ivar contact: the contact of the binding that refused the update.
    """

    def __init__(self, contact: str) -> None:
        super().__init__(f"out-of-order CSeq for binding {contact}")
        self.contact = contact


class TooManyBindings(LocationError):
    """The update would leave the AOR with more bindings than allowed.

    @ivar count: how many bindings the update would have left.
    @ivar limit: the limit.
    """

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} bindings, at most {limit} allowed")
        self.count = count
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Received:
    """The address a REGISTER came from: where requests for the binding go
    when the contact is unreachable (NAT), and the flow of RFC 5626.

    @ivar transport: C{UDP}, C{TCP}, C{TLS} ...
    @ivar host: the peer's IP address (IPv6 without brackets).
    @ivar port: the peer's port.
    @ivar connection_id: the stream connection it arrived on, if any.
    @ivar local: (host, port) of our listener that received it, if known.
    """

    transport: str
    host: str
    port: int
    connection_id: int | None = None
    local: tuple[str, int] | None = None

    @classmethod
    def from_source(cls, source: Source) -> Received:
        """The L{Received} of a message that arrived from C{source}."""
        return cls(source.transport, source.remote[0], source.remote[1],
                   source.connection_id, (source.local[0], source.local[1]))

    def target(self) -> Target:
        """A L{Target} that sends back along the same path (and connection)."""
        return Target(self.transport, self.host, self.port, self.connection_id)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport.lower()}:{host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"transport": self.transport, "host": self.host, "port": self.port,
                "connection_id": self.connection_id,
                "local": list(self.local) if self.local is not None else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Received:
        """The inverse of L{to_dict}."""
        local = data.get("local")
        return cls(str(data["transport"]), str(data["host"]), int(data["port"]),
                   None if data.get("connection_id") is None else int(data["connection_id"]),
                   None if local is None else (str(local[0]), int(local[1])))


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact bound to an address-of-record.

    @ivar aor: the normalised AOR (L{normalise_aor}): C{user@domain}.
    @ivar contact: the Contact URI as registered (without header parameters).
    @ivar expires_at: absolute expiry time (seconds, the injected clock's).
        A change whose C{expires_at} is not after the update's C{now} is a
        removal of that contact.
    @ivar q: the C{q} preference (0.0-1.0) or C{None} when not given.
    @ivar call_id: Call-ID of the REGISTER that last set the binding.
    @ivar cseq: its CSeq number.
    @ivar received: where that REGISTER came from, or C{None}.
    @ivar path: the Path header values of that REGISTER, top first.
    @ivar instance_id: the C{+sip.instance} value, quotes removed.
    @ivar reg_id: the C{reg-id} (RFC 5626), only when outbound applies.
    @ivar user_agent: the User-Agent header, if any.
    @ivar registered_at: when the binding was last created or refreshed.
    """

    aor: str
    contact: str
    expires_at: float
    q: float | None = None
    call_id: str = ""
    cseq: int = 0
    received: Received | None = None
    path: tuple[str, ...] = ()
    instance_id: str | None = None
    reg_id: int | None = None
    user_agent: str | None = None
    registered_at: float = 0.0
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", tuple(self.path))
        object.__setattr__(self, "key", contact_key(self.contact))

    def expires_in(self, now: float) -> int:
        """Whole seconds left at C{now} (at least 1 while unexpired, else 0)."""
        left = self.expires_at - now
        if left <= 0:
            return 0
        return max(1, math.floor(left + 0.5))

    @property
    def flow(self) -> str | None:
        """L{flow_key} of this binding."""
        return flow_key(self.instance_id, self.reg_id)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what the Redis store keeps)."""
        return {
            "aor": self.aor, "contact": self.contact, "expires_at": self.expires_at,
            "q": self.q, "call_id": self.call_id, "cseq": self.cseq,
            "received": None if self.received is None else self.received.to_dict(),
            "path": list(self.path), "instance_id": self.instance_id,
            "reg_id": self.reg_id, "user_agent": self.user_agent,
            "registered_at": self.registered_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Binding:
        """The inverse of L{to_dict}.  @raise ValueError: on a bad record."""
        try:
            received = data.get("received")
            q = data.get("q")
            reg_id = data.get("reg_id")
            return cls(
                aor=str(data["aor"]), contact=str(data["contact"]),
                expires_at=float(data["expires_at"]),
                q=None if q is None else float(q),
                call_id=str(data.get("call_id", "")), cseq=int(data.get("cseq", 0)),
                received=None if received is None else Received.from_dict(received),
                path=tuple(str(p) for p in data.get("path") or ()),
                instance_id=data.get("instance_id"),
                reg_id=None if reg_id is None else int(reg_id),
                user_agent=data.get("user_agent"),
                registered_at=float(data.get("registered_at", 0.0)),
            )
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"bad binding record: {exc!r}") from None


def normalise_aor(aor: str | URI) -> str:
    """The AOR as the location service keys it: C{user@domain}, the user part
    unescaped (RFC 3261 19.1.4), the domain lower-cased, no scheme, port or
    parameters.  Accepts a URI, C{sip:user@domain} text or C{user@domain}.

    @raise ValueError: when there is no domain.
    """
    if isinstance(aor, URI):
        user, host = aor.user_unescaped, aor.host_unbracketed
    else:
        text = aor.strip()
        if text[:4].lower() == "sip:" or text[:5].lower() == "sips:":
            uri = parse_uri(text)
            user, host = uri.user_unescaped, uri.host_unbracketed
        else:
            user, _, host = text.rpartition("@")
            user = unquote(user) if user else None
    if not host:
        raise ValueError(f"AOR without a domain: {str(aor)[:60]!r}")
    host = host.lower().rstrip(".")
    return f"{user}@{host}" if user else host


#: characters left unescaped in the user part of a contact key
_USER_SAFE = "-_.!~*'()&=+$,;?/"


def contact_key(contact: str) -> str:
    """A canonical form of a Contact URI: two contacts that are the same
    binding (RFC 3261 10.3 step 7, URI equality of 19.1.4) get the same key.

    Escapes are normalised, host and parameter names/values lower-cased and
    parameters sorted.  Unlike 19.1.4, a parameter present in only one of two
    URIs makes them different (stricter, but an equivalence relation).
    """
    try:
        uri = parse_uri(contact)
    except ParseError:
        return contact.strip()
    if uri.opaque is not None:
        return f"{uri.scheme}:{uri.opaque}"
    parts = [uri.scheme, ":"]
    if uri.user is not None:
        parts.append(quote(unquote(uri.user), safe=_USER_SAFE))
        if uri.password is not None:
            parts.append(":" + uri.password)
        parts.append("@")
    if uri.host is not None:
        parts.append(uri.host.lower())
    if uri.port is not None:
        parts.append(f":{uri.port}")
    for name in sorted(uri.params):
        value = uri.params[name]
        parts.append(f";{name}" if value is None else f";{name}={value.lower()}")
    if uri.headers:
        parts.append("?" + uri.headers)
    return "".join(parts)


def flow_key(instance_id: str | None, reg_id: int | None) -> str | None:
    """What makes two bindings the same flow (RFC 5626 section 6): the
    instance-id and reg-id; with an instance-id but no reg-id, the
    instance-id alone (RFC 5627).  C{None} without an instance-id."""
    if not instance_id:
        return None
    return f"{instance_id}\n{'' if reg_id is None else reg_id}"


def _sort_key(binding: Binding) -> tuple[float, float, str]:
    q = 1.0 if binding.q is None else binding.q
    return (-q, -binding.registered_at, binding.key)


def sort_bindings(bindings: Iterable[Binding]) -> list[Binding]:
    """Order bindings as targets are tried: highest C{q} first (no q counts
    as 1.0), then the most recently registered, then by contact."""
    return sorted(bindings, key=_sort_key)


def check_changes(aor: str, call_id: str, cseq: int, changes: Iterable[Binding]) -> None:
    """Check that every change belongs to the update: same AOR, Call-ID and
    CSeq as the update itself.  @raise ValueError: if one does not."""
    for change in changes:
        if (change.aor, change.call_id, change.cseq) != (aor, call_id, cseq):
            raise ValueError(
                f"binding of {change.aor!r} {change.call_id!r} {change.cseq} "
                f"in the update of {aor!r} {call_id!r} {cseq}")


def apply_changes(
    current: Mapping[str, Binding], call_id: str, cseq: int,
    changes: Iterable[Binding], now: float, max_bindings: int | None = None,
) -> dict[str, Binding]:
    """Apply one REGISTER's contacts to an AOR's bindings (RFC 3261 10.3
    steps 6-8); return the new bindings by key, unexpired only.

    A change matches the binding with the same contact key and, when it has
    an instance-id, every binding of the same L{flow_key} (RFC 5626 flow
    replacement).  Every matched binding must have another Call-ID or a
    lower CSeq, checked against the state before the request; a change not
    after C{now} removes, any other adds or replaces.  All or nothing.

    @raise OutOfOrder: when a matched binding has the same Call-ID and a
        CSeq not lower than C{cseq}.
    @raise TooManyBindings: when the update grows the AOR beyond
        C{max_bindings}.
    """
    alive = {k: b for k, b in current.items() if b.expires_at > now}
    changes = list(changes)
    matched_per_change: list[set[str]] = []
    for change in changes:
        matched = {change.key} if change.key in alive else set()
        flow = change.flow
        if flow is not None:
            matched.update(k for k, b in alive.items() if b.flow == flow)
        for k in matched:
            old = alive[k]
            if old.call_id == call_id and old.cseq >= cseq:
                raise OutOfOrder(old.contact)
        matched_per_change.append(matched)
    result = dict(alive)
    for change, matched in zip(changes, matched_per_change, strict=True):
        for k in matched:
            result.pop(k, None)
        result.pop(change.key, None)
        if change.expires_at > now:
            result[change.key] = change
    if max_bindings is not None and len(result) > max_bindings and len(result) > len(alive):
        raise TooManyBindings(len(result), max_bindings)
    return result


def check_remove_all(current: Iterable[Binding], call_id: str, cseq: int,
                     now: float) -> None:
    """The C{Contact: *} rule of RFC 3261 10.3 step 6: every unexpired binding
    must have another Call-ID or a lower CSeq.  @raise OutOfOrder: if not."""
    for b in current:
        if b.expires_at > now and b.call_id == call_id and b.cseq >= cseq:
            raise OutOfOrder(b.contact)


class ILocationStore(Interface):
    """Where bindings live.  Every method returns a L{Deferred}; updates of
    one AOR are atomic (all changes or none, never interleaved with another
    update of that AOR).  C{now} is seconds on the same clock as
    L{Binding.expires_at}; when a method takes it optionally, the store's
    own clock supplies it."""

    # zope.interface method declarations take no self (hence noqa: N805)
    def get(aor: str, now: float | None = None) -> Deferred[list[Binding]]:  # noqa: N805
        """The unexpired bindings of C{aor}, ordered by L{sort_bindings}."""

    def update(aor: str, call_id: str, cseq: int, changes: list[Binding], now: float,  # noqa: N805
               max_bindings: int | None = None) -> Deferred[list[Binding]]:
        """Apply a REGISTER's contacts (L{apply_changes}) and fire with every
        unexpired binding of C{aor} afterwards, ordered.  Fails with
        L{OutOfOrder} or L{TooManyBindings}, leaving everything unchanged,
        or with C{ValueError} when a change is not of this AOR, Call-ID and
        CSeq (L{check_changes})."""

    def remove_all(aor: str, call_id: str, cseq: int,  # noqa: N805
                   now: float) -> Deferred[list[Binding]]:
        """C{Contact: *}: remove every binding of C{aor} when
        L{check_remove_all} passes (fires with C{[]}); else fail with
        L{OutOfOrder} and remove nothing."""

    def count(now: float | None = None) -> Deferred[int]:  # noqa: N805
        """How many unexpired bindings there are, over all AORs."""

    def expire(now: float | None = None) -> Deferred[int]:  # noqa: N805
        """Housekeeping: forget what expired by C{now}; fire with how many
        entries went."""


@implementer(ILocationStore)
class MemoryLocationStore:
    """L{ILocationStore} in a dict, for one node and for tests.

    Expired bindings are never returned; L{expire} frees their memory (run
    it now and then, e.g. from a C{LoopingCall} owned by the service).

    @param clock: supplies C{now} when a caller does not.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._aors: dict[str, dict[str, Binding]] = {}

    def _now(self, now: float | None) -> float:
        return self._clock.seconds() if now is None else now

    def get(self, aor: str, now: float | None = None) -> Deferred[list[Binding]]:
        """See L{ILocationStore.get}."""
        at = self._now(now)
        bindings = self._aors.get(aor, {})
        return succeed(sort_bindings(b for b in bindings.values() if b.expires_at > at))

    def update(self, aor: str, call_id: str, cseq: int, changes: list[Binding], now: float,
               max_bindings: int | None = None) -> Deferred[list[Binding]]:
        """See L{ILocationStore.update}."""
        try:
            check_changes(aor, call_id, cseq, changes)
            result = apply_changes(self._aors.get(aor, {}), call_id, cseq, changes, now,
                                   max_bindings)
        except (LocationError, ValueError):
            return fail()
        if result:
            self._aors[aor] = result
        else:
            self._aors.pop(aor, None)
        return succeed(sort_bindings(result.values()))

    def remove_all(self, aor: str, call_id: str, cseq: int,
                   now: float) -> Deferred[list[Binding]]:
        """See L{ILocationStore.remove_all}."""
        try:
            check_remove_all(self._aors.get(aor, {}).values(), call_id, cseq, now)
        except OutOfOrder:
            return fail()
        self._aors.pop(aor, None)
        return succeed([])

    def count(self, now: float | None = None) -> Deferred[int]:
        """See L{ILocationStore.count}."""
        at = self._now(now)
        return succeed(sum(1 for bindings in self._aors.values()
                           for b in bindings.values() if b.expires_at > at))

    def expire(self, now: float | None = None) -> Deferred[int]:
        """See L{ILocationStore.expire}."""
        at = self._now(now)
        removed = 0
        for aor in list(self._aors):
            bindings = self._aors[aor]
            for key in [k for k, b in bindings.items() if b.expires_at <= at]:
                del bindings[key]
                removed += 1
            if not bindings:
                del self._aors[aor]
        return succeed(removed)
