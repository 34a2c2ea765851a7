"""Local routing: a call to an extension of the caller's tenant rings every
contact registered for it (in parallel).

Unregistered extension -> C{480}; unknown number -> no opinion (the core
answers C{404}, after the caller authenticated).  Calls to another tenant's
domain are not this plugin's business.

Each destination is a L{CalleeDestination} marked with the extension's
address-of-record: the phone that answers is one of the switch's own
authenticated subscribers, so a transfer it asks for (REFER) is placed and
charged as that extension (C{docs/transfer.md}, "Who pays").
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from b2bua.core.call import Call
from b2bua.core.decisions import Destination, Reject, Route
from b2bua.core.location import Binding
from b2bua.core.services import Services
from b2bua.core.transfer_policy import CalleeDestination
from b2bua.hookspecs import hookimpl
from b2bua.sip.errors import ParseError
from b2bua.sip.interfaces import Target
from b2bua.sip.message import Request
from b2bua.sip.uri import parse_uri

NAME = "local_routing"


def _next_hop(binding: Binding) -> Target:
    """Where to send a call for C{binding}: back to the address its
    REGISTER came from (NAT friendly).  Only an RFC 5626 (outbound)
    registration pins the very connection it arrived on; otherwise an open
    connection to that address is reused, or a new one is made."""
    received = binding.received
    if binding.instance_id or binding.reg_id:
        return received.target()
    return Target(received.transport, received.host, received.port)


class LocalRouting:
    """The built-in plugin that routes calls between a tenant's extensions.

    Settings (C{[plugins.local_routing]}): C{ring_timeout} (seconds, default
    the core's no-answer timeout).
    """

    def __init__(self) -> None:
        self.services: Services | None = None
        self.ring_timeout: float | None = None

    @hookimpl
    def b2bua_configure(self, services: Services, settings: dict[str, Any]) -> None:
        """Keep the directory and registrar."""
        self.services = services
        own = settings.get(NAME, {})
        timeout = own.get("ring_timeout")
        self.ring_timeout = float(timeout) if isinstance(timeout, int | float) else None

    @hookimpl
    def b2bua_route_call(self, call: Call, request: Request) -> Any:
        """Route to the dialled extension's registered contacts."""
        services = self.services
        uri = request.uri
        if services is None or not uri.is_sip or not uri.host or not call.tenant:
            return None
        domain = uri.host.lower()
        if domain != call.tenant.lower():
            return None
        extension = services.directory.extension(domain, uri.user_unescaped or "")
        if extension is None:
            return None

        def lookup() -> Deferred[Any]:
            return services.registrar.lookup(extension.aor).addCallback(routes)

        def routes(bindings: list[Binding]) -> Route | Reject | list[Route]:
            destinations: list[Destination] = []
            for binding in bindings:
                try:
                    contact = parse_uri(binding.contact)
                except ParseError:
                    continue
                destinations.append(CalleeDestination(
                    uri=contact, next_hop=_next_hop(binding),
                    route=tuple(binding.path), label=extension.number,
                    callee_identity=extension.aor, callee_tenant=extension.tenant.domain))
            if not destinations:
                return Reject(480, "Temporarily Unavailable", source=NAME)
            return [Route(tuple(destinations), self.ring_timeout, source=NAME)]

        return lookup
