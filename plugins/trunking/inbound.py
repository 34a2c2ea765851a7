"""Incoming vendor calls: a DID rings its target.

A call from a vendor connection (recognised by its source address, see
C{Directory.connection_by_source}) is routed by the dialled DID: the DID's
row names a C{target_kind} and a C{target}.  Each kind has a resolver in
L{TARGETS}, a registry other plugins extend (a hunt group, a queue, an
auto attendant register theirs with L{register_target}):

    - C{account}: the extension with that account id rings at its
      registered contacts;
    - C{trunk}: the customer trunk with that id: its C{address} when it has
      one, else the contacts its trunk account registered.

A resolver answers like C{b2bua_route_call}: a list of L{Route} steps, a
L{Reject}, or a lazy callable giving either.  A kind without a resolver
gets C{480} (the feature that answers it is not installed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred

from b2bua.core.decisions import Destination, Reject, Route
from b2bua.core.location import Binding
from b2bua.core.transfer_policy import CalleeDestination
from b2bua.sip.errors import ParseError
from b2bua.sip.interfaces import Target
from b2bua.sip.uri import URI, parse_uri
from plugins.trunking.uac import BadConnection, target_for

__all__ = ["TARGETS", "InboundContext", "Resolver", "register_target", "route_did"]

_SOURCE = "trunking"

UNKNOWN_DID = Reject(404, "Not Found", (("Reason", 'Q.850;cause=1;text="unallocated number"'),),
                     source=_SOURCE)
UNREACHABLE = Reject(480, "Temporarily Unavailable",
                     (("Reason", 'Q.850;cause=20;text="subscriber absent"'),), source=_SOURCE)
NO_FEATURE = Reject(480, "Temporarily Unavailable",
                    (("Reason", 'Q.850;cause=79;text="DID target not available"'),),
                    source=_SOURCE)


class InboundContext:
    """What a resolver may use: the snapshot, the registrar, the DID.

    @ivar directory: the provisioning snapshot.
    @ivar registrar: C{lookup(aor)} gives the current bindings.
    @ivar did: the DID's row.
    @ivar number: the DID as dialled (E.164 digits).
    @ivar ring_timeout: seconds a target rings (C{None}: the core's).
    """

    def __init__(self, directory: Any, registrar: Any, did: Mapping[str, Any], number: str,
                 ring_timeout: float | None = None) -> None:
        self.directory = directory
        self.registrar = registrar
        self.did = did
        self.number = number
        self.ring_timeout = ring_timeout

    def ring_contacts(self, aor: str, label: str) -> Callable[[], Deferred[Any]]:
        """A lazy answer: the AOR's registered contacts, in parallel."""

        def routes(bindings: list[Binding]) -> list[Route] | Reject:
            destinations = []
            for binding in bindings:
                try:
                    contact = parse_uri(binding.contact)
                except ParseError:
                    continue
                received = binding.received
                hop = received.target() if binding.instance_id or binding.reg_id \
                    else Target(received.transport, received.host, received.port)
                # our subscriber answers there: a transfer it asks for is
                # charged to it (docs/transfer.md, "Who pays")
                destinations.append(CalleeDestination(
                    uri=contact, next_hop=hop, route=tuple(binding.path), label=label,
                    callee_identity=aor, callee_tenant=aor.rpartition("@")[2]))
            if not destinations:
                return UNREACHABLE
            return [Route(tuple(destinations), self.ring_timeout, source=_SOURCE)]

        return lambda: self.registrar.lookup(aor).addCallback(routes)


Resolver = Callable[[InboundContext], Any]


def _account(context: InboundContext) -> Any:
    try:
        account_id = int(context.did.get("target") or "")
    except ValueError:
        return NO_FEATURE
    customer = context.directory.tenant_by_id(context.did.get("customer_id"))
    if customer is None:
        return UNKNOWN_DID
    for extension in context.directory.extensions(customer.domain):
        if extension.id == account_id:
            return context.ring_contacts(extension.aor, f"did:{context.number}")
    return UNREACHABLE


def _trunk(context: InboundContext) -> Any:
    try:
        trunk = context.directory.trunk(int(context.did.get("target") or ""))
    except ValueError:
        trunk = None
    if trunk is None:
        return UNREACHABLE
    label = f"trunk:{trunk['id']}"
    address = trunk.get("address") or ""
    if address:
        try:
            target = target_for(address, str(trunk.get("transport") or "udp"))
        except BadConnection:
            return UNREACHABLE
        uri = URI("sip", user="+" + context.number, host=target.host, port=target.port)
        return [Route((Destination(uri=uri, next_hop=target, label=label),),
                      context.ring_timeout, source=_SOURCE)]
    account_id = trunk.get("account_id")
    customer = context.directory.tenant_by_id(trunk["customer_id"])
    if account_id is None or customer is None:
        return UNREACHABLE
    for extension in context.directory.extensions(customer.domain):
        if extension.id == account_id:
            return context.ring_contacts(extension.aor, label)
    return UNREACHABLE


#: DID target kind -> resolver.  Extend with L{register_target}.
TARGETS: dict[str, Resolver] = {"account": _account, "trunk": _trunk}


def register_target(kind: str, resolver: Resolver) -> None:
    """Let DIDs of C{kind} ring through C{resolver} (a feature plugin calls
    this from its C{b2bua_configure})."""
    TARGETS[kind] = resolver


def route_did(context: InboundContext) -> Any:
    """The answer for a call to the DID of C{context}."""
    resolver = TARGETS.get(str(context.did.get("target_kind") or ""))
    if resolver is None:
        return NO_FEATURE
    return resolver(context)
