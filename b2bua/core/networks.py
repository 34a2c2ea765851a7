"""Finding the most specific IP network that holds an address.

A L{NetworkTable} maps IPv4 and IPv6 networks to values (trunks, vendor
connections) and answers, for one source address, the value of the
longest prefix that contains it: a trunk for C{192.0.2.7/32} wins over one
for C{192.0.2.0/24}, which wins over one for C{192.0.0.0/16}.

It is built once (when a directory is built) and only read afterwards.  A
lookup parses the address once and makes one dictionary probe per distinct
prefix length present in the table (a handful in practice), longest first;
it never scans the entries.  Addresses and canonical networks are parsed
with C{inet_pton} (a fraction of a microsecond); anything else goes
through L{ipaddress}, which gives the same answer more slowly.

Addresses are read as a transport reports them: an IPv4-mapped IPv6
address (C{::ffff:192.0.2.7}, from a dual-stack socket) is its IPv4
address, a zone (C{fe80::1%eth0}) and brackets (C{[2001:db8::1]}) are
ignored.  Text that is no address matches nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Generic, TypeVar

__all__ = ["Address", "Network", "NetworkTable", "host_address", "parse_address"]

V = TypeVar("V")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_WIDTH = {4: 32, 6: 128}
#: The integer form of C{::ffff:0.0.0.0/96}, the IPv4-mapped IPv6 addresses.
_MAPPED, _MAPPED_MASK = 0xFFFF << 32, ((1 << 96) - 1) << 32


def _bare(text: str) -> str:
    """C{text} without brackets and zone."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return text.partition("%")[0]


def _address_key(text: str | Address) -> tuple[int, int] | None:
    """(IP version, integer) of an address (mapped IPv4 as IPv4), or C{None}."""
    if isinstance(text, str):
        bare = _bare(text)
        try:
            if ":" in bare:
                value = int.from_bytes(socket.inet_pton(socket.AF_INET6, bare), "big")
                if value & _MAPPED_MASK == _MAPPED:
                    return 4, value & 0xFFFFFFFF
                return 6, value
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, bare), "big")
        except (OSError, ValueError):
            pass
    address = parse_address(text)
    return None if address is None else (address.version, int(address))


def _network_key(network: str | Network) -> tuple[int, int, int]:
    """(IP version, prefix length, integer) of a network.

    @raise ValueError: when it is no network (or has host bits set).
    """
    if isinstance(network, str):
        text, slash, length = network.partition("/")
        try:
            version, family = (6, socket.AF_INET6) if ":" in text else (4, socket.AF_INET)
            value = int.from_bytes(socket.inet_pton(family, text), "big")
            width = _WIDTH[version]
            prefixlen = int(length) if length.isascii() and length.isdigit() else (
                width if not slash else -1)
            if 0 <= prefixlen <= width and (not slash or length == str(prefixlen)) \
                    and not value & ~_mask(prefixlen, width):
                return version, prefixlen, value
        except (OSError, ValueError):
            pass
    try:
        net = network if isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network) \
            else ipaddress.ip_network(network)
    except TypeError:
        raise ValueError(f"{network!r} is no network") from None
    return net.version, net.prefixlen, int(net.network_address)


def parse_address(text: str | Address) -> Address | None:
    """The IP address in C{text} (mapped IPv4 as IPv4), or C{None}."""
    if isinstance(text, ipaddress.IPv4Address | ipaddress.IPv6Address):
        address: Address = text
    else:
        if not isinstance(text, str):
            return None
        try:
            address = ipaddress.ip_address(_bare(text))
        except ValueError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def host_address(address: str) -> Address | None:
    """The IP address of a C{host:port} (or bare host) text, or C{None}
    when its host is a name: C{192.0.2.1:5060}, C{[2001:db8::1]:5060},
    C{2001:db8::1}."""
    if not isinstance(address, str):
        return None
    host = address.strip()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return parse_address(host)


def _mask(prefixlen: int, width: int) -> int:
    """The network mask of C{prefixlen} bits, as an integer."""
    return ((1 << prefixlen) - 1) << (width - prefixlen)


class NetworkTable(Generic[V]):
    """Values by IP network; L{lookup} finds the longest matching prefix.

    @ivar duplicates: the networks given more than once (the first value
        given for a network is kept).
    @ivar invalid: the entries that were no network (left out).
    """

    __slots__ = ("_size", "_tables", "duplicates", "invalid")

    def __init__(self, entries: Iterable[tuple[str | Network, V]] = ()) -> None:
        """
        @param entries: (network, value) pairs; a network is a L{Network} or
            its text (an address alone is a C{/32} or C{/128}).
        """
        found: dict[int, dict[int, dict[int, V]]] = {4: {}, 6: {}}
        duplicates: list[str] = []
        invalid: list[str] = []
        size = 0
        for network, value in entries:
            try:
                version, prefixlen, key = _network_key(network)
            except ValueError:
                invalid.append(str(network))
                continue
            table = found[version].setdefault(prefixlen, {})
            if key in table:
                kind = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
                duplicates.append(str(kind((key, prefixlen))))
                continue
            table[key] = value
            size += 1
        self._tables = {
            version: tuple((_mask(length, _WIDTH[version]), by_length[length])
                           for length in sorted(by_length, reverse=True))
            for version, by_length in found.items()}
        self._size = size
        self.duplicates: tuple[str, ...] = tuple(duplicates)
        self.invalid: tuple[str, ...] = tuple(invalid)

    def __len__(self) -> int:
        return self._size

    def lookup(self, address: str | Address) -> V | None:
        """The value of the most specific network holding C{address}, or
        C{None} (also for text that is no address)."""
        parsed = _address_key(address)
        if parsed is None:
            return None
        version, value = parsed
        for mask, table in self._tables[version]:
            found = table.get(value & mask)
            if found is not None:
                return found
        return None
