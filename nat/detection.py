"""NAT detection: is a request (or a registered binding) from behind a NAT?

Pure functions over parsed messages; nothing here sends, stores or logs.
Each check gives the reasons it found, so that a caller can count or log
why a peer looks NATed, and decide what to do about it (see C{docs/nat.md}):

  - L{VIA_RECEIVED}: the top Via's sent-by host is an IP address other than
    the source address (RFC 3261 18.2.1 would add C{received}).
  - L{VIA_RPORT}: over UDP, the sent-by port (5060 when absent) is not the
    source port (RFC 3581 would fill C{rport}).  Over TCP/TLS the source
    port is the peer's ephemeral one, so it proves nothing there.
  - L{CONTACT_PRIVATE}: a Contact host is a private address
    (L{is_private}) that is not the source address.
  - L{CONTACT_DIFFERS}: a Contact host is an IP address other than the
    source address, or (over UDP) its port is not the source port.
  - L{SDP_PRIVATE}: a C{c=} line of the SDP body (session or media level,
    a multipart body's C{application/sdp} part included) names a private
    address that is not the source address.

A private address equal to the source address is a phone on the same
private network as the switch (a LAN, or loopback in tests): no NAT is in
between, so it is no reason.  Host names (in a Via or Contact) are not
resolved and never count as a difference.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from b2bua.core.location import Binding
from b2bua.sip.errors import ParseError
from b2bua.sip.headers import Via
from b2bua.sip.interfaces import RELIABLE_TRANSPORTS, Source
from b2bua.sip.message import Message, Request
from b2bua.sip.multipart import find_part, parse_multipart
from b2bua.sip.sdp import parse_sdp
from b2bua.sip.uri import URI, parse_uri

__all__ = [
    "CONTACT_DIFFERS",
    "CONTACT_PRIVATE",
    "PRIVATE_NETWORKS",
    "REASONS",
    "SDP_PRIVATE",
    "VIA_RECEIVED",
    "VIA_RPORT",
    "NatVerdict",
    "binding_verdict",
    "contact_reasons",
    "detect",
    "ip_literal",
    "is_private",
    "sdp_addresses",
    "sdp_reasons",
    "via_reasons",
]

VIA_RECEIVED = "via-received"
VIA_RPORT = "via-rport"
CONTACT_PRIVATE = "contact-private"
CONTACT_DIFFERS = "contact-differs"
SDP_PRIVATE = "sdp-private"

#: Every reason, in the order a verdict lists them.
REASONS = (VIA_RECEIVED, VIA_RPORT, CONTACT_PRIVATE, CONTACT_DIFFERS, SDP_PRIVATE)

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: What counts as private: RFC 1918, RFC 6598 (carrier-grade NAT shared
#: space), loopback, link-local (IPv4 and IPv6) and IPv6 unique local (RFC 4193).
PRIVATE_NETWORKS: tuple[_Network, ...] = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8", "::1/128",
    "169.254.0.0/16", "fe80::/10",
    "fc00::/7",
))

#: Default ports of a sent-by or Contact without one (RFC 3261 19.1.2).
_DEFAULT_PORT = {"sip": 5060, "sips": 5061}


@dataclass(frozen=True, slots=True)
class NatVerdict:
    """What detection found: the reasons (from L{REASONS}), in that order,
    each at most once.  True (and L{behind_nat}) when there is any."""

    reasons: tuple[str, ...] = ()

    @property
    def behind_nat(self) -> bool:
        """True when any reason was found."""
        return bool(self.reasons)

    def __bool__(self) -> bool:
        return bool(self.reasons)

    def __contains__(self, reason: object) -> bool:
        return reason in self.reasons

    @classmethod
    def of(cls, reasons: Iterable[str]) -> NatVerdict:
        """A verdict of C{reasons}, put in L{REASONS} order without repeats."""
        found = set(reasons)
        return cls(tuple(r for r in REASONS if r in found))


@lru_cache(maxsize=4096)
def ip_literal(host: str | None) -> _Address | None:
    """The IP address C{host} names (brackets, an IPv6 zone and the
    IPv4-mapped IPv6 form allowed), or C{None} for a host name."""
    if not host:
        return None
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    bare = bare.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=4096)
def is_private(host: str | None) -> bool:
    """True when C{host} is an IP address in L{PRIVATE_NETWORKS}."""
    address = ip_literal(host)
    return address is not None and any(address in net for net in PRIVATE_NETWORKS
                                       if net.version == address.version)


def _same(host: str | None, source_host: str) -> bool:
    address = ip_literal(host)
    return address is not None and address == ip_literal(source_host)


def via_reasons(via: Via, remote: tuple[str, int], transport: str) -> set[str]:
    """L{VIA_RECEIVED} and L{VIA_RPORT} of one (top) Via against the
    source C{remote} (host, port) reached over C{transport}."""
    reasons: set[str] = set()
    if ip_literal(via.host) is not None and not _same(via.host, remote[0]):
        reasons.add(VIA_RECEIVED)
    if transport.upper() not in RELIABLE_TRANSPORTS:
        port = via.port if via.port is not None else (
            5061 if via.transport.upper() == "TLS" else 5060)
        if port != remote[1]:
            reasons.add(VIA_RPORT)
    return reasons


def _uri_port(uri: URI) -> int:
    if uri.port is not None:
        return uri.port
    if (uri.transport or "").lower() == "tls":
        return 5061
    return _DEFAULT_PORT.get(uri.scheme, 5060)


def contact_reasons(uris: Iterable[URI], remote: tuple[str, int], transport: str) -> set[str]:
    """L{CONTACT_PRIVATE} and L{CONTACT_DIFFERS} of Contact URIs against
    the source C{remote}; non-SIP URIs and host names are skipped."""
    reasons: set[str] = set()
    stream = transport.upper() in RELIABLE_TRANSPORTS
    for uri in uris:
        if not uri.is_sip or ip_literal(uri.host) is None:
            continue
        same_host = _same(uri.host, remote[0])
        if not same_host:
            reasons.add(CONTACT_DIFFERS)
            if is_private(uri.host):
                reasons.add(CONTACT_PRIVATE)
        elif not stream and _uri_port(uri) != remote[1]:
            reasons.add(CONTACT_DIFFERS)
    return reasons


def _sdp_body(message: Message) -> bytes | None:
    """The SDP of C{message} (a multipart body's SDP part), or C{None}."""
    if not message.body:
        return None
    media = message.content_type
    if media == "application/sdp":
        return message.body
    if media is not None and media.startswith("multipart/"):
        try:
            part = find_part(parse_multipart(message.headers.get("content-type") or "",
                                             message.body), "application/sdp")
        except ParseError:
            return None
        return part.body if part is not None else None
    return None


def sdp_addresses(message: Message) -> Iterator[str]:
    """The addresses of every C{c=} line (session level first) of the
    message's SDP; nothing when there is none or it does not parse."""
    body = _sdp_body(message)
    if body is None:
        return
    try:
        sdp = parse_sdp(body)
    except (ParseError, ValueError):
        return
    lines = [sdp.connection, *(m.connection for m in sdp.media)]
    for line in lines:
        if line is not None and line.nettype.upper() == "IN":
            yield line.address.split("/", 1)[0]


def _may_name_private(body: bytes, source_host: str) -> bool:
    """Whether any C{c=} line of the SDP C{body}, read without parsing the
    rest, names a private address other than C{source_host}.

    Every connection line the parser finds is among these lines, split the
    same way, so C{False} means L{sdp_reasons} finds nothing: the common
    case (a phone on a public address, or on the switch's own network) then
    costs no SDP parse.  C{True} only means "parse it and see".
    """
    for raw in body.split(b"\n"):
        if raw[:2] != b"c=":
            continue
        parts = raw[2:].decode("utf-8", "surrogateescape").split()
        if len(parts) != 3 or parts[0].upper() != "IN":
            continue  # not a connection line the parser would accept as one
        address = parts[2].split("/", 1)[0]
        if is_private(address) and not _same(address, source_host):
            return True
    return False


def sdp_reasons(message: Message, remote: tuple[str, int]) -> set[str]:
    """L{SDP_PRIVATE} when a C{c=} line names a private address other than
    the source's (C{0.0.0.0}, the old hold form, is not private)."""
    body = message.body
    if not body:
        return set()
    if message.content_type == "application/sdp" and not _may_name_private(body, remote[0]):
        return set()
    for address in sdp_addresses(message):
        if is_private(address) and not _same(address, remote[0]):
            return {SDP_PRIVATE}
    return set()


def detect(request: Request, source: Source) -> NatVerdict:
    """Every reason C{request}, received from C{source}, shows of a NAT.

    Parts that do not parse (a bad Via, Contact or SDP) give no reason:
    detection never raises on what the transport layer let through.
    """
    reasons: set[str] = set()
    remote, transport = source.remote, source.transport
    try:
        vias = request.via
        if vias:
            reasons |= via_reasons(vias[0], remote, transport)
    except ParseError:
        pass
    try:
        uris = [na.uri for na in request.contact if not na.star]
        reasons |= contact_reasons(uris, remote, transport)
    except ParseError:
        pass
    reasons |= sdp_reasons(request, remote)
    return NatVerdict.of(reasons)


def binding_verdict(binding: Binding) -> NatVerdict:
    """Whether a registered binding is behind a NAT: its Contact against the
    address its REGISTER came from (C{received}).  No verdict without one."""
    received = binding.received
    if received is None:
        return NatVerdict()
    try:
        uri = parse_uri(binding.contact)
    except ParseError:
        return NatVerdict()
    return NatVerdict.of(contact_reasons([uri], (received.host, received.port),
                                         received.transport))
