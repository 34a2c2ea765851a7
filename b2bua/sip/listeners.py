"""SIP listeners: the listener strings of the configuration, and bound listeners.

A listener string is C{PROTO:HOST[:PORT][;advertise=HOST[:PORT]]}, for
instance C{udp:127.0.0.1:5060}, C{tcp:[::1]:5060} or
C{tls:0.0.0.0:5061;advertise=sip.example.com}.  L{parse_listener} checks one
and raises a L{ListenerError} naming it; L{Listener} is what the transport
layer keeps once the reactor has bound it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from twisted.internet.interfaces import IListeningPort

from b2bua.sip.errors import ParseError
from b2bua.sip.uri import split_hostport

__all__ = ["TRANSPORTS", "Listener", "ListenerAddress", "ListenerError", "parse_listener"]

#: Transports a listener string may name.
TRANSPORTS = ("UDP", "TCP", "TLS")


class ListenerError(ValueError):
    """A listener string is malformed, or its address cannot be bound."""


@dataclass(frozen=True, slots=True)
class ListenerAddress:
    """A parsed listener string: where to bind and what to put in our Via.

    @ivar transport: C{UDP}, C{TCP} or C{TLS}.
    @ivar host: the IP address to bind, without brackets.
    @ivar port: the port to bind; 0 picks a free one.
    @ivar advertise: (host, port or C{None}) for our Via and Contact when
        they must differ from the bound address (a wildcard bind, a NAT).
    @ivar text: the listener string as written.
    """

    transport: str
    host: str
    port: int
    advertise: tuple[str, int | None] | None = None
    text: str = ""


def parse_listener(text: str) -> ListenerAddress:
    """Parse C{PROTO:HOST[:PORT][;advertise=HOST[:PORT]]}.

    PROTO is C{udp}, C{tcp} or C{tls}; HOST an IP address (IPv6 in
    brackets); PORT defaults to 5060 (5061 for TLS) and may be 0 for any
    free port.  A wildcard HOST (C{0.0.0.0}, C{[::]}) needs C{advertise}:
    no Via can carry it.  Examples: C{udp:127.0.0.1:5060},
    C{tcp:[::1]:5060}, C{tls:0.0.0.0:5061;advertise=sip.example.com}.

    @raise ListenerError: naming C{text} and what is wrong with it.
    """

    def bad(why: str) -> ListenerError:
        return ListenerError(f"bad SIP listener {text!r}: {why}")

    proto, colon, rest = text.strip().partition(":")
    transport = proto.upper()
    if not colon or transport not in TRANSPORTS:
        raise bad("must start with udp:, tcp: or tls:")
    rest, _, options = rest.partition(";")
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise bad("unterminated [ in the IPv6 address")
        host, after = rest[1:end], rest[end + 1 :]
        if after and not after.startswith(":"):
            raise bad(f"unexpected {after!r} after the address")
        port_text = after[1:] if after else ""
    else:
        host, _, port_text = rest.partition(":")
        if ":" in port_text:
            raise bad("IPv6 addresses need brackets, as in tcp:[::1]:5060")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise bad(f"{host!r} is not an IP address") from None
    if port_text:
        if not port_text.isdigit() or not port_text.isascii() or int(port_text) > 65535:
            raise bad(f"bad port {port_text!r}")
        port = int(port_text)
    else:
        port = 5061 if transport == "TLS" else 5060
    advertise: tuple[str, int | None] | None = None
    for option in filter(None, (o.strip() for o in options.split(";"))):
        name, eq, value = option.partition("=")
        if name.strip().lower() != "advertise" or not eq:
            raise bad(f"unknown option {option!r} (only advertise=HOST[:PORT])")
        try:
            adv_host, adv_port = split_hostport(value.strip())
        except ParseError as exc:
            raise bad(f"advertise: {exc.reason}") from None
        advertise = (_unbracket(adv_host), adv_port)
    if address.is_unspecified and advertise is None:
        raise bad("a wildcard address needs ;advertise=HOST for the Via")
    return ListenerAddress(transport, str(address), port, advertise, text)


@dataclass(eq=False)
class Listener:
    """A bound listener.

    @ivar address: what it was asked to listen on.
    @ivar port: the listening port object from the reactor (for UDP also
        the socket that sends).
    @ivar bound_port: the port actually bound (differs when asked for 0).
    """

    address: ListenerAddress
    port: IListeningPort
    bound_port: int

    @property
    def transport(self) -> str:
        """C{UDP}, C{TCP} or C{TLS}."""
        return self.address.transport

    @property
    def version(self) -> int:
        """4 or 6: the IP version of the bound address."""
        return _version(self.address.host)

    @property
    def sent_by(self) -> tuple[str, int]:
        """(host, port) for our Via and Contact (the advertised ones if any)."""
        advertise = self.address.advertise
        if advertise is None:
            return self.address.host, self.bound_port
        return advertise[0], advertise[1] or self.bound_port



def _unbracket(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


@lru_cache(maxsize=256)
def _version(host: str) -> int:
    """4 or 6 for an IP literal."""
    return ipaddress.ip_address(host).version
