"""Decision values that plugins return to the core (frozen, with an origin).

pluggy's results do not say which plugin produced them, so each decision
carries a C{source} naming it, for logs and CDRs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from b2bua.sip.interfaces import Target
from b2bua.sip.uri import URI

__all__ = ["Destination", "Hunt", "Reject", "Route", "StopHunting"]


@dataclass(frozen=True)
class Reject:
    """Refuse the call (or the request) with a final response.

    @ivar code: 4xx, 5xx or 6xx.
    @ivar reason: the reason phrase.
    @ivar headers: extra header fields, e.g. C{Retry-After} or C{Reason}.
    @ivar source: which plugin decided, for logs and CDRs.
    """

    code: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    source: str = ""


@dataclass(frozen=True)
class Destination:
    """One B leg to try.

    @ivar uri: the Request-URI of the B leg's INVITE.
    @ivar next_hop: where to send it; C{None} means "resolve from C{uri}".
    @ivar route: Route header values to put on the INVITE (a registration's
        Path, an outbound proxy).
    @ivar headers: extra header fields for the INVITE.
    @ivar label: a short name for logs and CDRs (an extension, a vendor).
    @ivar setup_timeout: seconds to wait for the callee's first ringing
        response (a provisional response other than 100, or a final one)
        before giving up on this destination: a vendor that takes the
        INVITE and does nothing is left after a few seconds, not after the
        step's ring timeout.  C{None}: no such limit.
    """

    uri: URI
    next_hop: Target | None = None
    route: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    label: str = ""
    setup_timeout: float | None = None


@dataclass(frozen=True)
class Route:
    """A step of the hunt: its destinations ring in parallel.

    @ivar ring_timeout: seconds to ring this step before moving on
        (C{None}: until the call's overall timeout).
    """

    destinations: tuple[Destination, ...]
    ring_timeout: float | None = None
    source: str = ""


@dataclass(frozen=True)
class Hunt:
    """Failover answer: go on with the next route step."""

    source: str = ""


@dataclass(frozen=True)
class StopHunting:
    """Failover answer: stop and answer the caller with C{code}."""

    code: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = field(default=())
    source: str = ""
