"""Trust by source address: INVITEs from listed networks are not challenged.

An IP-PBX or a carrier that cannot do digest authentication is recognised by
the address its requests come from.  Each listed network maps to the
identity its calls are made as: an account's address-of-record
(C{"1000@127.0.0.1"}) whose tenant then owns the call.

Settings (C{[plugins.ip_trust]})::

    [plugins.ip_trust]
    sources = { "192.0.2.0/24" = "1000@pbx.example.com" }

Only INVITEs are trusted this way: REGISTER is always challenged.  The
plugin is built in and does nothing until networks are configured.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from b2bua.core.services import Services
from b2bua.hookspecs import hookimpl
from b2bua.sip.interfaces import Source
from b2bua.sip.message import Request

NAME = "ip_trust"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A bad C{[plugins.ip_trust]} table (names the key)."""


def parse_sources(table: dict[str, Any]) -> list[tuple[Network, str]]:
    """Read C{sources} (network -> identity).

    @raise SettingsError: naming the bad entry.
    """
    sources = table.get("sources", {})
    if not isinstance(sources, dict):
        raise SettingsError("plugins.ip_trust.sources: expected a table of network = identity")
    parsed = []
    for network, identity in sources.items():
        try:
            net = ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise SettingsError(
                f"plugins.ip_trust.sources: {network!r} is not a network") from None
        if not isinstance(identity, str) or "@" not in identity:
            raise SettingsError(
                f"plugins.ip_trust.sources.{network}: expected an address-of-record "
                f"such as \"1000@example.com\"")
        parsed.append((net, identity))
    # most specific network first
    parsed.sort(key=lambda item: item[0].prefixlen, reverse=True)
    return parsed


class IPTrust:
    """The built-in plugin that trusts configured source networks."""

    def __init__(self) -> None:
        self.sources: list[tuple[Network, str]] = []
        self._cache: dict[str, str | None] = {}

    @hookimpl
    def b2bua_configure(self, services: Services, settings: dict[str, Any]) -> None:
        """Read the networks."""
        self.sources = parse_sources(settings.get(NAME, {}))
        self._cache.clear()

    @hookimpl
    def b2bua_trusted_source(self, source: Source, request: Request) -> str | None:
        """The identity of a trusted network's INVITE, else no opinion."""
        if not self.sources or request.method != "INVITE":
            return None
        host = source.remote[0]
        if host in self._cache:
            return self._cache[host]
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        identity = next((ident for net, ident in self.sources if address in net), None)
        if len(self._cache) < 4096:
            self._cache[host] = identity
        return identity
