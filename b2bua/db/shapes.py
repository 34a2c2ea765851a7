"""The shapes a JSON field of the model may be held to.

A C{json} field accepts any plain JSON value unless its L{Field.shape}
names one of the L{SHAPES} here; validation then checks (and normalises)
the value with that shape's function, which raises C{ValueError} with a
message meant for the person who sent it.

  - C{object}: a JSON object (a customer's dial plan, a caller ID format).
  - C{networks}: a list of IPv4/IPv6 addresses or networks in CIDR
    notation (where a trunk's calls may come from).  Each is stored in its
    canonical form, a host as a C{/32} or C{/128}: C{"192.0.2.7"} becomes
    C{"192.0.2.7/32"}, C{"2001:DB8::/32"} becomes C{"2001:db8::/32"}.
  - C{codecs}: a list of RTP payload format names as SDP writes them
    (C{PCMU}, C{G722}, C{opus}, C{telephone-event}), in order of preference.
  - C{sip_codes}: final SIP response codes (300 to 699) or classes
    (C{"5xx"}) a call fails over on; 486 and 603 never fail over (the
    callee answered busy or declined, another route would ring it again).

L{json_schema} gives the JSON Schema of each shape, for API documents.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_CODECS", "MAX_NETWORKS", "MAX_SIP_CODES", "NEVER_FAIL_OVER", "SHAPES",
           "check_shape", "json_schema"]

#: The longest list each list shape takes.
MAX_NETWORKS = 256
MAX_CODECS = 32
MAX_SIP_CODES = 64
#: Final responses that never fail over to another route (rating.md 4.2).
NEVER_FAIL_OVER = frozenset({486, 603})

_CODEC = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]{0,31}")
_CLASS = re.compile(r"[3-6]xx")


def _list(value: Any, limit: int, what: str) -> list[Any]:
    """C{value} as a list of at most C{limit} items."""
    if not isinstance(value, list):
        raise ValueError(f"must be a list of {what}")
    if len(value) > limit:
        raise ValueError(f"has more than {limit} items")
    return value


def _object(value: Any) -> dict[str, Any]:
    """A JSON object."""
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value


def _network(item: Any) -> str:
    """One address or network in its canonical text."""
    if not isinstance(item, str) or not item:
        raise ValueError("is not text")
    if "%" in item:
        raise ValueError(f"{item} names an interface zone: give the address alone")
    try:
        network = ipaddress.ip_network(item, strict=True)
    except ValueError as error:
        if "host bits set" in str(error):
            fixed = ipaddress.ip_network(item, strict=False)
            raise ValueError(f"{item} has host bits set (the network is {fixed})") from None
        raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    if network.prefixlen == 0:
        raise ValueError(f"{item} would match every address")
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
        mapped = network.network_address.ipv4_mapped
        raise ValueError(f"{item} is an IPv4-mapped address: write it as IPv4 ({mapped})")
    return str(network)


def _networks(value: Any) -> list[str]:
    """Addresses and networks, canonical, without repeats."""
    out: list[str] = []
    for index, item in enumerate(_list(value, MAX_NETWORKS, "IP addresses or CIDR networks")):
        try:
            network = _network(item)
        except ValueError as error:
            raise ValueError(f"item {index}: {error}") from None
        if network in out:
            raise ValueError(f"item {index}: {network} is listed twice")
        out.append(network)
    return out


def _codecs(value: Any) -> list[str]:
    """Codec names, in order of preference, without repeats (case aside)."""
    seen: set[str] = set()
    for index, item in enumerate(_list(value, MAX_CODECS, "codec names")):
        if not isinstance(item, str) or not _CODEC.fullmatch(item):
            raise ValueError(f"item {index}: {item!r} is not a codec name such as PCMU, "
                             "G722 or opus")
        if item.lower() in seen:
            raise ValueError(f"item {index}: {item} is listed twice")
        seen.add(item.lower())
    return list(value)


def _sip_codes(value: Any) -> list[int | str]:
    """Final response codes (300-699) and classes (C{"5xx"})."""
    seen: set[int | str] = set()
    for index, item in enumerate(_list(value, MAX_SIP_CODES, "SIP response codes")):
        if isinstance(item, str) and _CLASS.fullmatch(item):
            pass
        elif isinstance(item, bool) or not isinstance(item, int) or not 300 <= item <= 699:
            raise ValueError(f"item {index}: {item!r} is not a final SIP response code "
                             "(300 to 699) or class (3xx to 6xx)")
        elif item in NEVER_FAIL_OVER:
            raise ValueError(f"item {index}: {item} never fails over (the callee answered: "
                             "another route would ring the same person)")
        if item in seen:
            raise ValueError(f"item {index}: {item} is listed twice")
        seen.add(item)
    return list(value)


#: Shape name -> the function that checks (and normalises) a value.
SHAPES: dict[str, Callable[[Any], Any]] = {
    "object": _object,
    "networks": _networks,
    "codecs": _codecs,
    "sip_codes": _sip_codes,
}

_SCHEMAS: dict[str, dict[str, Any]] = {
    "object": {"type": "object"},
    "networks": {"type": "array", "maxItems": MAX_NETWORKS, "uniqueItems": True,
                 "items": {"type": "string", "minLength": 1},
                 "description": "IPv4/IPv6 addresses or CIDR networks (no host bits set)."},
    "codecs": {"type": "array", "maxItems": MAX_CODECS, "uniqueItems": True,
               "items": {"type": "string", "pattern": f"^{_CODEC.pattern}$"},
               "description": "Codec names as SDP writes them, in order of preference."},
    "sip_codes": {"type": "array", "maxItems": MAX_SIP_CODES, "uniqueItems": True,
                  "items": {"oneOf": [{"type": "integer", "minimum": 300, "maximum": 699},
                                      {"type": "string", "pattern": "^[3-6]xx$"}]},
                  "description": "Final SIP response codes or classes (5xx) that fail "
                                 "over; 486 and 603 never do."},
}


def check_shape(shape: str, value: Any) -> Any:
    """Check C{value} against the shape called C{shape}.

    @return: the value, normalised (canonical networks).
    @raise ValueError: with a message for the sender when it does not fit.
    @raise KeyError: for an unknown shape (a mistake in the model).
    """
    return SHAPES[shape](value)


def json_schema(shape: str) -> dict[str, Any]:
    """The JSON Schema of the values of C{shape} (a fresh copy).

    @raise KeyError: for an unknown shape.
    """
    return copy.deepcopy(_SCHEMAS[shape])
