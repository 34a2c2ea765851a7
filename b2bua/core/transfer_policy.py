"""Who may transfer a call, and who pays for it (C{docs/transfer.md}, "Who pays").

B{The referrer pays.}  A transfer is a new call placed by the switch on
somebody's behalf; it is authorized, routed and charged as the call of the
party that asked for it (the I{referrer}), never as the call of whoever
happens to be on the other side:

  - the caller's side of a call (its A leg) calls as the identity that
    authenticated the call (C{call.identity}, C{call.tenant});
  - the callee's side calls as the identity its destination was marked
    with when the call was routed to it (L{CalleeDestination}); a callee
    that was not marked (a vendor trunk, a redirect target, anyone the
    switch cannot vouch for) may not transfer at all: C{403};
  - in a transfer's own call (L{b2bua.core.transfer.TransferCall}) the
    caller's side is the transferee, who calls as the party it was in the
    call it came from (C{caller_party}), which may be nobody.

A chain of transfers is bounded: every REFER accepted (C{202}) in a call
counts against C{[core] max_transfers}, and the transfer's call inherits
the count of the call it came from.

The core knows nothing of features: a routing plugin that sends a call to
one of the switch's own authenticated subscribers says so by routing to a
L{CalleeDestination} (an ordinary L{Destination} with the callee's
identity) instead of a plain L{Destination}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from b2bua.core.decisions import Destination

if TYPE_CHECKING:
    from b2bua.core.call import Call
    from b2bua.core.leg import Leg

__all__ = [
    "TRANSFERS",
    "CalleeDestination",
    "Party",
    "TransferRefused",
    "callee_party",
    "caller_party",
    "transfer_payer",
    "transfers_made",
]

#: the key of C{call.data} counting the transfers accepted in a call and the
#: calls it came from (read it, never write it)
TRANSFERS = "transfers"

_UNSET: Any = object()


@dataclass(frozen=True)
class Party:
    """Whom a call placed on a party's behalf is authorized and charged as.

    @ivar identity: an address-of-record, C{<user>@<tenant domain>}.
    @ivar tenant: the tenant domain.
    """

    identity: str
    tenant: str


@dataclass(frozen=True)
class CalleeDestination(Destination):
    """A L{Destination} whose answerer the switch vouches for: a transfer
    asked for by whoever answers there is charged to C{callee_identity}.

    Routing plugins use it for the switch's own authenticated subscribers
    (an extension's registered contacts: C{callee_identity} is the
    extension's C{<number>@<tenant domain>}), and for services acting on
    somebody's behalf (the media server: the caller's own identity, see
    C{docs/transfer.md}).

    @ivar callee_identity: C{<user>@<tenant domain>}; C{""} means nobody
        (as a plain L{Destination}).
    @ivar callee_tenant: its tenant domain (C{""}: the identity's domain).
    """

    callee_identity: str = ""
    callee_tenant: str = ""


class TransferRefused(Exception):
    """A REFER the switch refuses by policy: C{code}, C{reason}, and the
    C{result} label counted in C{b2bua_calls_transferred_total}."""

    def __init__(self, code: int, reason: str, result: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.result = result


def caller_party(call: Call) -> Party | None:
    """Whom the caller's side of C{call} calls as: the call's own identity,
    or for a transfer's call the party the transferee was (maybe nobody)."""
    party = getattr(call, "caller_party", _UNSET)
    if party is not _UNSET:
        return party  # type: ignore[no-any-return]
    if not call.identity:
        return None
    return Party(call.identity, (call.tenant or call.identity.rpartition("@")[2]).lower())


def callee_party(leg: Leg) -> Party | None:
    """Whom the callee's side C{leg} calls as: the mark of the destination
    it was routed to (L{CalleeDestination}), or nobody; a leg joined into
    a call by an attended transfer carries the party it had (C{party})."""
    party = getattr(leg, "party", _UNSET)
    if party is not _UNSET:
        return party  # type: ignore[no-any-return]
    destination = getattr(leg, "destination", None)
    identity = getattr(destination, "callee_identity", "") or ""
    if not identity:
        return None
    tenant = getattr(destination, "callee_tenant", "") or identity.rpartition("@")[2]
    return Party(identity, tenant.lower())


def transfers_made(call: Call) -> int:
    """The transfers accepted in C{call} and in the calls it came from."""
    return int(call.data.get(TRANSFERS, 0))


def transfer_payer(call: Call, referrer: Leg, max_transfers: int) -> Party:
    """The party a transfer asked for by C{referrer} is placed as.

    @raise TransferRefused: C{403} when the referrer is nobody the switch
        can charge (an unmarked callee, or a transferee that was one), or
        when C{call} reached C{max_transfers}.
    """
    party = caller_party(call) if referrer is call.a_leg else callee_party(referrer)
    if party is None:
        raise TransferRefused(403, "Transfer not allowed: not a subscriber", "refused_payer")
    if transfers_made(call) >= max_transfers:
        raise TransferRefused(403, "Transfer limit reached", "refused_limit")
    return party
