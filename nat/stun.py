"""A STUN server for Binding requests (RFC 5389), over UDP.

A phone behind a NAT asks what address and port its requests come from
(its server-reflexive address), to put them in its Contact and SDP, or
just to keep its NAT mapping open.  The codec and the rules are sans-IO
(L{parse}, L{encode}, L{answer}); L{StunServer} is the thin Twisted
protocol around them.

What L{answer} does with a datagram:

  - not STUN (the first two bits not zero, shorter than the 20-byte
    header, a length that is not a multiple of 4 or not the datagram's,
    attributes that overrun, a FINGERPRINT that is wrong or not last):
    dropped silently (RFC 5389 7.3);
  - an indication (a Binding indication is a keep-alive) or a response:
    no answer (7.3.2, 7.3.3); any method but Binding: dropped (7.3);
  - a Binding request with an unknown comprehension-required attribute
    (type below 0x8000): error response 420 with UNKNOWN-ATTRIBUTES
    (7.3.1).  Known: MAPPED-ADDRESS, USERNAME, MESSAGE-INTEGRITY,
    ERROR-CODE, UNKNOWN-ATTRIBUTES, REALM, NONCE, XOR-MAPPED-ADDRESS (the
    ones this server does not use, it ignores: it runs without
    authentication, as a public STUN server does), and CHANGE-REQUEST
    (RFC 5780) when it asks no change; one that asks for another address
    or port gets 420 (this server has no alternate address);
  - any other Binding request: success response with XOR-MAPPED-ADDRESS
    and FINGERPRINT.  A request without the magic cookie comes from an
    RFC 3489 client: it gets MAPPED-ADDRESS instead (section 12.2), its
    cookie field echoed, and no FINGERPRINT.

Responses go to the source of the request only (never to a
RESPONSE-ADDRESS, which is unknown here and so refused): the server
reflects no traffic elsewhere, and an answer is never larger than a
request could be by more than a few dozen bytes.
"""

from __future__ import annotations

import binascii
import ipaddress
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

__all__ = [
    "BINDING",
    "CHANGE_REQUEST",
    "ERROR",
    "ERROR_CODE",
    "FINGERPRINT",
    "INDICATION",
    "MAGIC_COOKIE",
    "MAPPED_ADDRESS",
    "REQUEST",
    "SOFTWARE",
    "SUCCESS",
    "UNKNOWN_ATTRIBUTES",
    "XOR_MAPPED_ADDRESS",
    "Answer",
    "Message",
    "StunError",
    "StunServer",
    "answer",
    "decode_address",
    "encode",
    "encode_address",
    "fingerprint",
    "is_stun",
    "parse",
]

_log = Logger()

MAGIC_COOKIE = 0x2112A442
_COOKIE = struct.pack("!I", MAGIC_COOKIE)
_FINGERPRINT_XOR = 0x5354554E
_HEADER = 20

#: the one method served
BINDING = 0x001

#: message classes (RFC 5389 6)
REQUEST, INDICATION, SUCCESS, ERROR = 0b00, 0b01, 0b10, 0b11

MAPPED_ADDRESS = 0x0001
RESPONSE_ADDRESS = 0x0002  # RFC 3489 only: refused (420)
CHANGE_REQUEST = 0x0003
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
REALM = 0x0014
NONCE = 0x0015
XOR_MAPPED_ADDRESS = 0x0020
SOFTWARE = 0x8022
FINGERPRINT = 0x8028

#: the comprehension-required attributes this server understands (or
#: knowingly ignores); CHANGE-REQUEST is judged by its value
_KNOWN_REQUIRED = frozenset({MAPPED_ADDRESS, USERNAME, MESSAGE_INTEGRITY, ERROR_CODE,
                             UNKNOWN_ATTRIBUTES, REALM, NONCE, XOR_MAPPED_ADDRESS})

_FAMILY = {4: 0x01, 6: 0x02}


class StunError(ValueError):
    """A datagram that is not a well-formed STUN message (dropped)."""


@dataclass(frozen=True)
class Message:
    """A STUN message.

    @ivar method: 12-bit method (L{BINDING}).
    @ivar cls: L{REQUEST}, L{INDICATION}, L{SUCCESS} or L{ERROR}.
    @ivar transaction_id: the 96-bit transaction id.
    @ivar cookie: the magic cookie field (another value: an RFC 3489
        message, whose transaction id is this field and the 96 bits).
    @ivar attributes: (type, value) in order, padding removed; those after
        MESSAGE-INTEGRITY (FINGERPRINT excepted) are left out, as RFC 5389
        15.4 says they must be ignored.
    @ivar fingerprinted: the message ended with a correct FINGERPRINT.
    """

    method: int
    cls: int
    transaction_id: bytes
    cookie: bytes = _COOKIE
    attributes: tuple[tuple[int, bytes], ...] = field(default=())
    fingerprinted: bool = False

    @property
    def classic(self) -> bool:
        """True for an RFC 3489 message (no magic cookie)."""
        return self.cookie != _COOKIE

    def get(self, kind: int) -> bytes | None:
        """The value of the first attribute of type C{kind}, if any."""
        return next((value for t, value in self.attributes if t == kind), None)


def _message_type(method: int, cls: int) -> int:
    return ((method & 0x00F) | ((method & 0x070) << 1) | ((method & 0xF80) << 2)
            | ((cls & 0b01) << 4) | ((cls & 0b10) << 7))


def _split_type(kind: int) -> tuple[int, int]:
    cls = ((kind >> 4) & 0b01) | ((kind >> 7) & 0b10)
    method = (kind & 0x00F) | ((kind >> 1) & 0x070) | ((kind >> 2) & 0xF80)
    return method, cls


def fingerprint(message: bytes) -> bytes:
    """The FINGERPRINT value of C{message} (everything before the
    attribute, its header's length already counting it): CRC-32 XOR
    0x5354554e (RFC 5389 15.5)."""
    return struct.pack("!I", (binascii.crc32(message) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF)


def is_stun(data: bytes) -> bool:
    """A cheap test (RFC 5389 7.3, RFC 7983): could C{data} be an RFC 5389
    message?  The first two bits zero, the magic cookie, a sane length.
    Use it to tell STUN from SIP arriving on one port."""
    return (len(data) >= _HEADER and data[0] & 0xC0 == 0 and data[4:8] == _COOKIE
            and struct.unpack_from("!H", data, 2)[0] == len(data) - _HEADER
            and len(data) % 4 == 0)


def parse(data: bytes) -> Message:
    """Decode one STUN message.  @raise StunError: when it is not one."""
    if len(data) < _HEADER:
        raise StunError("shorter than a STUN header")
    kind, length = struct.unpack_from("!HH", data, 0)
    if kind & 0xC000:
        raise StunError("the first two bits are not zero")
    if length % 4 or length != len(data) - _HEADER:
        raise StunError("bad message length")
    method, cls = _split_type(kind)
    cookie, transaction_id = data[4:8], data[8:20]
    attributes: list[tuple[int, bytes]] = []
    fingerprinted = False
    after_integrity = False
    offset = _HEADER
    while offset < len(data):
        if fingerprinted:
            raise StunError("an attribute after FINGERPRINT")
        if offset + 4 > len(data):
            raise StunError("truncated attribute header")
        attr, size = struct.unpack_from("!HH", data, offset)
        start, end = offset + 4, offset + 4 + size
        if end > len(data):
            raise StunError("attribute overruns the message")
        value = data[start:end]
        if attr == FINGERPRINT:
            if size != 4 or value != fingerprint(data[:offset]):
                raise StunError("bad FINGERPRINT")
            fingerprinted = True
        elif not after_integrity:
            attributes.append((attr, value))
        if attr == MESSAGE_INTEGRITY:
            after_integrity = True
        offset = end + (-size % 4)
    if offset != len(data):
        raise StunError("attribute padding overruns the message")
    return Message(method, cls, transaction_id, cookie, tuple(attributes), fingerprinted)


def encode(message: Message, with_fingerprint: bool = True) -> bytes:
    """Encode C{message} (its attributes padded with zeros), with a
    FINGERPRINT at the end when asked."""
    body = bytearray()
    for attr, value in message.attributes:
        body += struct.pack("!HH", attr, len(value)) + value + b"\x00" * (-len(value) % 4)
    extra = 8 if with_fingerprint else 0
    head = struct.pack("!HH", _message_type(message.method, message.cls), len(body) + extra)
    out = head + message.cookie + message.transaction_id + bytes(body)
    if with_fingerprint:
        out += struct.pack("!HH", FINGERPRINT, 4) + fingerprint(out)
    return out


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's IPv4 peer
    return address


def encode_address(host: str, port: int, xor_with: bytes | None = None) -> bytes:
    """A MAPPED-ADDRESS value, or an XOR-MAPPED-ADDRESS one when C{xor_with}
    is the magic cookie and transaction id (16 bytes)."""
    address = _address(host)
    raw = address.packed
    if xor_with is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, xor_with, strict=False))
    return struct.pack("!BBH", 0, _FAMILY[address.version], port) + raw


def decode_address(value: bytes, xor_with: bytes | None = None) -> tuple[str, int]:
    """The (host, port) of a (XOR-)MAPPED-ADDRESS value.  @raise StunError."""
    if len(value) < 4:
        raise StunError("short address attribute")
    _, family, port = struct.unpack_from("!BBH", value, 0)
    size = {0x01: 4, 0x02: 16}.get(family)
    if size is None or len(value) != 4 + size:
        raise StunError("bad address family or length")
    raw = value[4:]
    if xor_with is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, xor_with, strict=False))
    return str(ipaddress.ip_address(raw)), port


@dataclass(frozen=True)
class Answer:
    """What to do with one datagram: C{reply} to send back (or C{None}),
    and the C{result} counted (C{ok}, C{error}, C{ignored}, C{malformed})."""

    result: str
    reply: bytes | None = None
    reason: str = ""


def _unknown(message: Message) -> list[int]:
    unknown: list[int] = []
    for attr, value in message.attributes:
        if attr >= 0x8000 or attr in _KNOWN_REQUIRED:
            continue
        if attr == CHANGE_REQUEST and len(value) == 4 and not value[3] & 0x06:
            continue  # asks no change of address or port: nothing to do
        if attr not in unknown:
            unknown.append(attr)
    return unknown


def _error(message: Message, code: int, reason: str, unknown: Iterable[int]) -> bytes:
    text = reason.encode()
    value = struct.pack("!HBB", 0, code // 100, code % 100) + text
    listed = b"".join(struct.pack("!H", a) for a in unknown)
    attributes = [(ERROR_CODE, value), (UNKNOWN_ATTRIBUTES, listed)]
    reply = Message(BINDING, ERROR, message.transaction_id, message.cookie, tuple(attributes))
    return encode(reply, with_fingerprint=not message.classic)


def answer(data: bytes, source: tuple[str, int], software: str | None = None) -> Answer:
    """The server's answer to a datagram from C{source} (host, port); see
    the module doc for the rules.  Never raises."""
    try:
        message = parse(data)
    except StunError as error:
        return Answer("malformed", reason=str(error))
    if message.method != BINDING:
        return Answer("ignored", reason="not a Binding")
    if message.cls != REQUEST:
        return Answer("ignored", reason="not a request")
    unknown = _unknown(message)
    if unknown:
        return Answer("error", _error(message, 420, "Unknown Attribute", unknown),
                      reason="unknown comprehension-required attribute")
    try:
        if message.classic:
            attributes = [(MAPPED_ADDRESS, encode_address(*source))]
        else:
            attributes = [(XOR_MAPPED_ADDRESS,
                           encode_address(*source, xor_with=_COOKIE + message.transaction_id))]
    except (ValueError, KeyError):
        return Answer("malformed", reason="the source is not an IP address")
    if software:
        attributes.append((SOFTWARE, software.encode()[:763]))
    reply = Message(BINDING, SUCCESS, message.transaction_id, message.cookie, tuple(attributes))
    return Answer("ok", encode(reply, with_fingerprint=not message.classic))


class StunServer(DatagramProtocol):
    """L{answer} on a UDP port.

    @param on_result: told each datagram's C{result} (for metrics).
    @param software: a SOFTWARE attribute for success responses (none by
        default: a version string helps attackers more than clients).
    """

    def __init__(self, on_result: Callable[[str], object] | None = None,
                 software: str | None = None) -> None:
        self.on_result = on_result
        self.software = software

    def datagramReceived(self, data: bytes, addr: tuple) -> None:
        """Answer one datagram from C{addr} (an IPv6 one has 4 fields)."""
        result = answer(data, (addr[0], addr[1]), self.software)
        if self.on_result is not None:
            try:
                self.on_result(result.result)
            except Exception:
                _log.failure("STUN result listener failed")
        if result.reply is not None and self.transport is not None:
            try:
                self.transport.write(result.reply, addr)
            except OSError as error:
                _log.debug("STUN reply to {addr} failed: {error}", addr=addr, error=error)
