"""What the trunking plugins need to act as a SIP client toward vendors.

Registration (L{plugins.trunking.registration}) and probing
(L{plugins.trunking.probing}) send requests outside any call: REGISTER and
OPTIONS to a vendor connection.  This module holds what they share:

  - L{RequestSender}, the seam to the stack: C{send_request} of the
    transaction layer (a new client transaction, Via added) and
    C{local_address} of the transport layer (our listener, for Contact);
    L{sender_from} finds it in the plugin's L{Services};
  - L{Connection}, the fields of a provisioned C{connection} row that a
    client needs, read by L{connection_from_row};
  - L{build_request}, an out-of-dialog request with our headers;
  - L{timestamp}, clock seconds as the ISO 8601 text the API shows.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from b2bua.sip.errors import ParseError
from b2bua.sip.interfaces import Target
from b2bua.sip.message import Request
from b2bua.sip.uri import URI, format_host, split_hostport

if TYPE_CHECKING:
    from b2bua.core.services import Services
    from b2bua.sip.interfaces import ClientTransactionUser
    from b2bua.sip.message import Response

__all__ = [
    "LOCAL_ADDRESS",
    "SEND_REQUEST",
    "BadConnection",
    "CallableSender",
    "Connection",
    "RequestSender",
    "build_request",
    "connection_from_row",
    "contact_uri",
    "retry_after",
    "sender_from",
    "target_for",
    "timestamp",
]

#: The C{services.extra} key of the transaction layer's C{send_request}.
SEND_REQUEST = "send_request"
#: The C{services.extra} key of the transport layer's C{local_address}.
LOCAL_ADDRESS = "local_address"

_DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061}


class RequestSender(Protocol):
    """How a plugin sends a request outside any dialog."""

    def send_request(self, request: Request, target: Target,
                     owner: ClientTransactionUser) -> object:
        """Send C{request} to C{target} in a new client transaction whose
        responses and failures go to C{owner} (a failure at once is reported
        before this returns).

        @raise TransportError: when no listener serves the target's transport.
        """

    def local_address(self, transport: str) -> tuple[str, int]:
        """(host, port) of our listener for C{transport}.

        @raise TransportError: when there is none.
        """


@dataclass(frozen=True)
class CallableSender:
    """A L{RequestSender} made of the two stack functions it stands for:
    C{TransactionLayer.send_request} and C{TransportLayer.local_address}."""

    send: Callable[[Request, Target, Any], object]
    address: Callable[[str], tuple[str, int]]

    def send_request(self, request: Request, target: Target,
                     owner: ClientTransactionUser) -> object:
        """Send C{request} in a new client transaction."""
        return self.send(request, target, owner)

    def local_address(self, transport: str) -> tuple[str, int]:
        """Our listener for C{transport}."""
        return self.address(transport)


def sender_from(services: Services) -> RequestSender | None:
    """The sender the service put in C{services.extra} (under
    L{SEND_REQUEST} and L{LOCAL_ADDRESS}), or C{None} when it put none."""
    send = services.extra.get(SEND_REQUEST)
    address = services.extra.get(LOCAL_ADDRESS)
    if callable(send) and callable(address):
        return CallableSender(send, address)
    return None


class BadConnection(ValueError):
    """A connection row a client cannot use; the message names the field."""


@dataclass(frozen=True)
class Connection:
    """What a SIP client needs of one vendor connection.

    @ivar id: the connection's id.
    @ivar name: its name (for logs and the API).
    @ivar target: where requests go (an IP literal, port, transport).
    @ivar address: the C{host:port} as provisioned.
    @ivar username: the digest username (C{auth_username}), may be empty.
    @ivar realm: the digest realm (C{auth_realm}), may be empty.
    @ivar ha1: the stored MD5 HA1 (C{auth_ha1}), if any.
    """

    id: int
    name: str
    target: Target
    address: str
    username: str = ""
    realm: str = ""
    ha1: str | None = None

    @property
    def host(self) -> str:
        """The target host as it goes in a URI (IPv6 in brackets)."""
        return format_host(self.target.host)


def target_for(address: str, transport: str = "udp") -> Target:
    """The next hop of a C{host[:port]} address over C{transport}.

    The host must be an IP literal: resolving names (RFC 3263) is not done
    here.  The port defaults to 5060 (5061 for TLS).

    @raise BadConnection: for a bad address, a host name or an unknown
        transport.
    """
    kind = (transport or "udp").upper()
    if kind not in _DEFAULT_PORTS:
        raise BadConnection(f"transport: {transport!r} is not udp, tcp or tls")
    try:
        host, port = split_hostport(address.strip())
    except ParseError as error:
        raise BadConnection(f"address: {error.reason}") from None
    bare = host[1:-1] if host.startswith("[") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        raise BadConnection(f"address: {bare!r} is not an IP address "
                              "(host names are not resolved)") from None
    return Target(kind, bare, port or _DEFAULT_PORTS[kind])


def connection_from_row(row: Mapping[str, Any]) -> Connection:
    """Read a provisioned C{connection} row (C{id}, C{name}, C{address},
    C{transport}, C{auth_username}, C{auth_realm}, C{auth_ha1}).

    @raise BadConnection: naming the field that cannot be used.
    """
    try:
        connection_id = int(row["id"])
    except (KeyError, TypeError, ValueError):
        raise BadConnection("id: missing or not a number") from None
    address = row.get("address")
    if not isinstance(address, str) or not address.strip():
        raise BadConnection("address: missing")
    target = target_for(address, row.get("transport") or "udp")
    return Connection(
        id=connection_id,
        name=str(row.get("name") or connection_id),
        target=target,
        address=address.strip(),
        username=str(row.get("auth_username") or ""),
        realm=str(row.get("auth_realm") or ""),
        ha1=row.get("auth_ha1") or None,
    )


def contact_uri(local: tuple[str, int], transport: str, user: str | None) -> URI:
    """Our Contact URI on the listener C{local} (a C{transport} parameter
    for anything but UDP)."""
    params = {"transport": transport.lower()} if transport.upper() != "UDP" else {}
    return URI("sip", user or None, format_host(local[0]), local[1], params)


def build_request(method: str, uri: str, *, from_: str, to: str, call_id: str, cseq: int,
                  headers: Sequence[tuple[str, str]] = (), user_agent: str = "b2bua") -> Request:
    """An out-of-dialog request: Max-Forwards, From, To, Call-ID, CSeq, then
    C{headers}, then User-Agent.  The transaction layer adds the Via."""
    fields = [
        ("Max-Forwards", "70"),
        ("From", from_),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        *headers,
        ("User-Agent", user_agent),
    ]
    return Request(method, uri, fields)


def retry_after(response: Response) -> float | None:
    """The seconds of a response's Retry-After (its comment and parameters
    ignored), or C{None} when there is none or it is not a number."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    head = value.split(";", 1)[0].split("(", 1)[0].strip()
    return float(head) if head.isdigit() and head.isascii() else None


def timestamp(seconds: float | None) -> str | None:
    """Clock seconds as ISO 8601 UTC text (C{None} stays C{None})."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def connection_tables(table: Mapping[str, Any], where: str, allowed: frozenset[str] | set[str],
                      error: type[ValueError]) -> Iterator[tuple[int, Mapping[str, Any], str]]:
    """The per-connection tables of a plugin's settings (C{connections},
    keyed by connection id): C{(id, table, its key path)} each, checked for
    shape and unknown keys.

    @raise error: naming the bad key.
    """
    raw = table.get("connections", {})
    if not isinstance(raw, Mapping):
        raise error(f"{where}.connections: expected a table of connection ids")
    for key, own in raw.items():
        path = f"{where}.connections.{key}"
        if not str(key).isdigit():
            raise error(f"{path}: the key must be a connection id")
        if not isinstance(own, Mapping):
            raise error(f"{path}: expected a table")
        unknown = set(own) - set(allowed)
        if unknown:
            raise error(f"{path}.{sorted(unknown)[0]}: unknown key")
        yield int(key), own, path


def positive_seconds(table: Mapping[str, Any], name: str, default: float, where: str,
                     error: type[ValueError]) -> float:
    """C{table[name]}: a positive number of seconds (C{default} when missing).

    @raise error: naming C{where.name}.
    """
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise error(f"{where}.{name}: expected a positive number of seconds")
    return float(value)
