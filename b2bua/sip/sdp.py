"""SDP codec (RFC 8866), sans-IO.

L{parse_sdp} turns a message body into a L{SessionDescription};
L{SessionDescription.to_bytes} writes it back with CRLF line endings.

The model keeps what a B2BUA acts on as fields (origin, session name,
connection data, bandwidths, attributes, media descriptions) and every other
line (C{i= u= e= p= t= r= z= k=}, lines of unknown type) verbatim in
C{extra_lines}, in the order received.  On output the lines of each section
are written in RFC 8866 order (C{v o s i u e p c b t r z k a} for the session,
C{m i c b k a} for a media description), lines of unknown type last in their
section; input that follows that order therefore round-trips byte for byte.

Attribute values are opaque here: a malformed C{a=rtpmap} is kept as it is and
treated as absent by the lookups.  Text is UTF-8; bytes that are not valid
UTF-8 are carried through unchanged (C{surrogateescape}).

Offer/answer helpers (RFC 3264) live in L{b2bua.sip.offer_answer}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from b2bua.sip.errors import ParseError

__all__ = [
    "DIRECTIONS",
    "INACTIVE",
    "RECVONLY",
    "SENDONLY",
    "SENDRECV",
    "STATIC_PAYLOAD_TYPES",
    "Attribute",
    "Bandwidth",
    "Codec",
    "Connection",
    "MediaDescription",
    "Origin",
    "RtpMap",
    "SessionDescription",
    "parse_sdp",
]

SENDRECV = "sendrecv"
SENDONLY = "sendonly"
RECVONLY = "recvonly"
INACTIVE = "inactive"
DIRECTIONS = frozenset({SENDRECV, SENDONLY, RECVONLY, INACTIVE})

#: RTP/AVP static payload types (RFC 3551 tables 4 and 5):
#: payload type -> (encoding name, clock rate, channels).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1),
    28: ("nv", 90000, 1),
    31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}

#: An attribute line C{a=name:value} as C{(name, value)}; C{a=flag} has
#: value C{None}.
Attribute = tuple[str, str | None]

_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

# Output order of the lines kept verbatim (RFC 8866 section 5); the fields
# kept as structure sit at c (7/2), b (8/3) and a (12/5).  Unknown types go
# after the attributes.
_SESSION_RANK = {"i": 3, "u": 4, "e": 5, "p": 6, "c": 7, "t": 9, "r": 9, "z": 10, "k": 11}
_SESSION_ATTRIBUTES = 12
_SESSION_UNKNOWN = 13
_MEDIA_RANK = {"i": 1, "c": 2, "k": 4}
_MEDIA_ATTRIBUTES = 5
_MEDIA_UNKNOWN = 6

_MAX_NUMBER_DIGITS = 64


class Origin(NamedTuple):
    """The C{o=} line: who made the session description, and which version.

    @ivar sess_id: kept as text (it is an opaque identifier).
    @ivar sess_version: incremented whenever the description changes
        (L{SessionDescription.bump_version}); leading zeros are not kept.
    """

    username: str
    sess_id: str
    sess_version: int
    nettype: str
    addrtype: str
    address: str


class Connection(NamedTuple):
    """A C{c=} line; C{address} keeps any multicast C{/ttl/count} suffix."""

    nettype: str
    addrtype: str
    address: str


class Bandwidth(NamedTuple):
    """A C{b=} line such as C{b=AS:64} (C{bwtype} C{AS}, C{value} 64)."""

    bwtype: str
    value: int


class RtpMap(NamedTuple):
    """A parsed C{a=rtpmap:<pt> <name>/<rate>[/<channels>]} value."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int


class Codec(NamedTuple):
    """One RTP format of a media description, from C{a=rtpmap} or the
    static payload type table; C{channels} is 1 when not given."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int


class _Section:
    """Attribute access shared by the session and media sections."""

    __slots__ = ()
    attributes: list[Attribute]

    def has_attribute(self, name: str) -> bool:
        """Whether this section has at least one C{a=name} line.

        @param name: the attribute name (case-sensitive, RFC 8866 6).
        @return: C{True} if present.
        """
        return any(attr[0] == name for attr in self.attributes)

    def get_attribute(self, name: str) -> str | None:
        """The value of the first C{a=name} line of this section.

        @param name: the attribute name.
        @return: the value, or C{None} when absent or a flag.
        """
        for attr_name, value in self.attributes:
            if attr_name == name:
                return value
        return None

    def get_attributes(self, name: str) -> list[str | None]:
        """The values of every C{a=name} line of this section, in order.

        @param name: the attribute name.
        @return: the values (C{None} for flags).
        """
        return [value for attr_name, value in self.attributes if attr_name == name]

    def remove_attributes(self, name: str) -> int:
        """Remove every C{a=name} line of this section.

        @param name: the attribute name.
        @return: how many lines were removed.
        """
        kept = [attr for attr in self.attributes if attr[0] != name]
        removed = len(self.attributes) - len(kept)
        self.attributes[:] = kept
        return removed


@dataclass(slots=True)
class MediaDescription(_Section):
    """One media description: an C{m=} line and the lines below it.

    @ivar media: C{audio}, C{video}, C{image}, C{application} ...
    @ivar port: the transport port; 0 means the stream is rejected or
        disabled (RFC 3264 section 6).
    @ivar proto: C{RTP/AVP}, C{RTP/SAVP}, C{UDP/TLS/RTP/SAVPF}, C{udptl} ...
    @ivar formats: the formats of the C{m=} line as text (payload types for
        RTP, C{t38} for T.38 over UDPTL).
    @ivar port_count: the C{/<number of ports>} suffix, or C{None}.
    @ivar connection: the media-level C{c=} line, or C{None}.
    @ivar bandwidths: the C{b=} lines.
    @ivar attributes: the C{a=} lines as L{Attribute} tuples, in order.
    @ivar extra_lines: every other line as C{(type, value)}, in order.
    """

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    extra_lines: list[tuple[str, str]] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        """Whether the port is 0 (stream rejected or disabled)."""
        return self.port == 0

    def reject(self) -> None:
        """Reject this stream (RFC 3264 section 6): set the port to 0.

        The formats stay (an C{m=} line needs at least one) as do the other
        lines, which a peer ignores for a rejected stream.
        """
        self.port = 0
        self.port_count = None

    @property
    def is_rtp(self) -> bool:
        """Whether the formats are RTP payload types (C{RTP/} in proto)."""
        return "RTP/" in self.proto

    def rtpmap(self, payload_type: int | str) -> RtpMap | None:
        """The C{a=rtpmap} of a payload type.

        @param payload_type: the payload type, as int or text.
        @return: the parsed mapping, or C{None} when absent or malformed
            (static payload types are not filled in; see L{codecs}).
        """
        prefix = f"{payload_type} "
        for name, value in self.attributes:
            if name == "rtpmap" and value is not None and value.startswith(prefix):
                return _parse_rtpmap(value)
        return None

    def fmtp(self, payload_type: int | str) -> str | None:
        """The C{a=fmtp} parameters of a payload type.

        @param payload_type: the payload type, as int or text.
        @return: the text after C{<pt> }, or C{None} when absent.
        """
        prefix = f"{payload_type} "
        for name, value in self.attributes:
            if name == "fmtp" and value is not None and value.startswith(prefix):
                return value[len(prefix) :].lstrip()
        return None

    @property
    def codecs(self) -> list[Codec]:
        """The RTP formats of the C{m=} line in order, as L{Codec}s.

        A format with a well-formed C{a=rtpmap} takes it; otherwise a
        static payload type takes the RFC 3551 entry, and a dynamic one
        without a mapping is left out.  Non-RTP media have no codecs.
        """
        if not self.is_rtp:
            return []
        maps: dict[str, RtpMap] = {}
        for name, value in self.attributes:
            if name == "rtpmap" and value is not None:
                parsed = _parse_rtpmap(value)
                if parsed is not None:
                    maps.setdefault(str(parsed.payload_type), parsed)
        result = []
        for fmt in self.formats:
            mapped = maps.get(fmt)
            if mapped is not None:
                result.append(Codec(*mapped))
            elif fmt.isascii() and fmt.isdigit() and len(fmt) <= 3:
                static = STATIC_PAYLOAD_TYPES.get(int(fmt))
                if static is not None:
                    result.append(Codec(int(fmt), *static))
        return result

    def copy(self) -> MediaDescription:
        """A copy that can be changed without touching this one.

        @return: the copy.
        """
        return MediaDescription(
            self.media,
            self.port,
            self.proto,
            list(self.formats),
            self.port_count,
            self.connection,
            list(self.bandwidths),
            list(self.attributes),
            list(self.extra_lines),
        )

    def _write(self, out: list[str]) -> None:
        """Append this media description's lines to C{out}."""
        port = self.port if self.port_count is None else f"{self.port}/{self.port_count}"
        head = f"m={self.media} {port} {self.proto}"
        out.append(f"{head} {' '.join(self.formats)}" if self.formats else head)
        _write_section(
            out,
            self.connection,
            self.bandwidths,
            self.attributes,
            self.extra_lines,
            _MEDIA_RANK,
            _MEDIA_ATTRIBUTES,
            _MEDIA_UNKNOWN,
        )


def _default_timing() -> list[tuple[str, str]]:
    """The C{t=0 0} line a new session description starts with."""
    return [("t", "0 0")]


@dataclass(slots=True)
class SessionDescription(_Section):
    """A whole session description (the body of an offer or answer).

    @ivar origin: the C{o=} line.
    @ivar session_name: the C{s=} text.
    @ivar connection: the session-level C{c=} line, or C{None}.
    @ivar bandwidths: the session-level C{b=} lines.
    @ivar attributes: the session-level C{a=} lines, in order.
    @ivar media: the media descriptions, in C{m=} order.
    @ivar extra_lines: every other session-level line as C{(type, value)},
        in order; a new description starts with C{t=0 0}.
    @ivar version: the C{v=} protocol version, always 0.
    """

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    extra_lines: list[tuple[str, str]] = field(default_factory=_default_timing)
    version: int = 0

    def to_bytes(self) -> bytes:
        """Serialize, with CRLF line endings.

        @return: the body bytes.
        """
        origin = self.origin
        out = [
            f"v={self.version}",
            f"o={origin.username} {origin.sess_id} {origin.sess_version} "
            f"{origin.nettype} {origin.addrtype} {origin.address}",
            f"s={self.session_name}",
        ]
        _write_section(
            out,
            self.connection,
            self.bandwidths,
            self.attributes,
            self.extra_lines,
            _SESSION_RANK,
            _SESSION_ATTRIBUTES,
            _SESSION_UNKNOWN,
        )
        for media in self.media:
            media._write(out)
        out.append("")
        return "\r\n".join(out).encode("utf-8", "surrogateescape")

    def bump_version(self) -> None:
        """Increment the origin's sess-version, as every changed offer or
        answer in a session must (RFC 3264 section 8)."""
        self.origin = self.origin._replace(sess_version=self.origin.sess_version + 1)

    def copy(self) -> SessionDescription:
        """A deep copy that can be changed without touching this one.

        @return: the copy.
        """
        return SessionDescription(
            self.origin,
            self.session_name,
            self.connection,
            list(self.bandwidths),
            list(self.attributes),
            [media.copy() for media in self.media],
            list(self.extra_lines),
            self.version,
        )


def _write_section(
    out: list[str],
    connection: Connection | None,
    bandwidths: list[Bandwidth],
    attributes: list[Attribute],
    extra_lines: list[tuple[str, str]],
    ranks: dict[str, int],
    attribute_rank: int,
    unknown_rank: int,
) -> None:
    """Append the lines of a section after its first line, in RFC order."""
    early: list[tuple[int, str]] = []
    late: list[str] = []
    if connection is not None:
        early.append((ranks["c"], f"c={connection[0]} {connection[1]} {connection[2]}"))
    bandwidth_rank = ranks["c"] + 1
    for bwtype, value in bandwidths:
        early.append((bandwidth_rank, f"b={bwtype}:{value}"))
    for kind, value in extra_lines:
        rank = ranks.get(kind, unknown_rank)
        if rank < attribute_rank:
            early.append((rank, f"{kind}={value}"))
        else:
            late.append(f"{kind}={value}")
    if early:
        early.sort(key=_rank_of)
        out.extend(line for _, line in early)
    for name, value in attributes:
        out.append(f"a={name}" if value is None else f"a={name}:{value}")
    out.extend(late)


def _rank_of(item: tuple[int, str]) -> int:
    """Sort key of L{_write_section}'s pieces."""
    return item[0]


def _parse_rtpmap(value: str) -> RtpMap | None:
    """Parse an C{a=rtpmap} value, or return C{None} if it is malformed."""
    pt, _, encoding = value.partition(" ")
    parts = encoding.strip().split("/")
    if not (2 <= len(parts) <= 3) or not parts[0]:
        return None
    channels = parts[2] if len(parts) == 3 else "1"
    if not (_is_number(pt, 3) and _is_number(parts[1], 10) and _is_number(channels, 3)):
        return None
    return RtpMap(int(pt), parts[0], int(parts[1]), int(channels))


def _is_number(text: str, max_digits: int) -> bool:
    """Whether C{text} is 1 to C{max_digits} ASCII digits."""
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse a session description.

    Lines may end in CRLF or a bare LF; empty lines are skipped.  C{v=0}
    must come first; C{o=} and C{s=} must each appear once, before the first
    C{m=}.  Other lines are accepted in any order (and written back in RFC
    order).

    @param data: the message body.
    @return: the parsed description.
    @raise ParseError: when the body is not a session description; the
        reason is a fixed phrase (never echoing input) with the line number.
    @raise TypeError: when C{data} is neither bytes nor str.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        text = bytes(data).decode("utf-8", "surrogateescape")
    elif isinstance(data, str):
        text = data
        if not text.isascii():
            try:
                text.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raise ParseError("SDP is not valid text") from None
    else:
        raise TypeError(f"SDP must be bytes or str, not {type(data).__name__}")
    if "\x00" in text:
        raise ParseError("NUL in SDP")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            raise ParseError("bare CR in SDP")
    return _Parser(text.split("\n")).parse()


class _Parser:
    """One run of L{parse_sdp} over the lines of a body."""

    __slots__ = ("lines", "number")

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.number = 0

    def fail(self, what: str) -> ParseError:
        """A L{ParseError} naming the problem and the current line."""
        return ParseError(f"{what} at SDP line {self.number}")

    def parse(self) -> SessionDescription:
        """Parse every line and build the description."""
        origin: Origin | None = None
        session_name: str | None = None
        session_connection: Connection | None = None
        session_bandwidths: list[Bandwidth] = []
        session_attributes: list[Attribute] = []
        session_extra: list[tuple[str, str]] = []
        media_list: list[MediaDescription] = []
        media: MediaDescription | None = None
        attributes = session_attributes
        extra = session_extra
        seen_version = False
        for line in self.lines:
            self.number += 1
            if not line:
                continue
            if len(line) < 2 or line[1] != "=":
                raise self.fail("malformed line")
            kind = line[0]
            value = line[2:]
            if not seen_version:
                if kind != "v":
                    raise self.fail("missing v= line")
                if value != "0":
                    raise self.fail("unsupported SDP version")
                seen_version = True
            elif kind == "a":
                name, colon, attr_value = value.partition(":")
                if not name:
                    raise self.fail("empty attribute name")
                attributes.append((name, attr_value if colon else None))
            elif kind == "m":
                if origin is None:
                    raise self.fail("missing o= line")
                if session_name is None:
                    raise self.fail("missing s= line")
                media = self.parse_media(value)
                media_list.append(media)
                attributes = media.attributes
                extra = media.extra_lines
            elif kind == "c":
                connection = self.parse_connection(value)
                if media is None:
                    if session_connection is None:
                        session_connection = connection
                    else:
                        extra.append((kind, value))
                elif media.connection is None:
                    media.connection = connection
                else:
                    extra.append((kind, value))
            elif kind == "b":
                bandwidth = self.parse_bandwidth(value)
                (session_bandwidths if media is None else media.bandwidths).append(bandwidth)
            elif kind == "o":
                if media is not None:
                    raise self.fail("o= line in media description")
                if origin is not None:
                    raise self.fail("duplicate o= line")
                origin = self.parse_origin(value)
            elif kind == "s":
                if media is not None:
                    raise self.fail("s= line in media description")
                if session_name is not None:
                    raise self.fail("duplicate s= line")
                session_name = value
            elif kind == "v":
                raise self.fail("duplicate v= line")
            elif kind in _LETTERS:
                extra.append((kind, value))
            else:
                raise self.fail("invalid line type")
        if not seen_version:
            raise ParseError("empty SDP")
        if origin is None:
            raise self.fail("missing o= line")
        if session_name is None:
            raise self.fail("missing s= line")
        return SessionDescription(
            origin,
            session_name,
            session_connection,
            session_bandwidths,
            session_attributes,
            media_list,
            session_extra,
        )

    def parse_origin(self, value: str) -> Origin:
        """Parse the value of an C{o=} line."""
        parts = value.split()
        if len(parts) != 6:
            raise self.fail("malformed o= line")
        if not _is_number(parts[2], _MAX_NUMBER_DIGITS):
            raise self.fail("bad sess-version in o= line")
        return Origin(parts[0], parts[1], int(parts[2]), parts[3], parts[4], parts[5])

    def parse_connection(self, value: str) -> Connection:
        """Parse the value of a C{c=} line."""
        parts = value.split()
        if len(parts) != 3:
            raise self.fail("malformed c= line")
        return Connection(parts[0], parts[1], parts[2])

    def parse_bandwidth(self, value: str) -> Bandwidth:
        """Parse the value of a C{b=} line."""
        bwtype, colon, amount = value.partition(":")
        if not bwtype or not colon or not _is_number(amount, _MAX_NUMBER_DIGITS):
            raise self.fail("malformed b= line")
        return Bandwidth(bwtype, int(amount))

    def parse_media(self, value: str) -> MediaDescription:
        """Parse the value of an C{m=} line (formats may be empty)."""
        parts = value.split()
        if len(parts) < 3:
            raise self.fail("malformed m= line")
        port_text, slash, count_text = parts[1].partition("/")
        if not _is_number(port_text, 5) or int(port_text) > 65535:
            raise self.fail("bad port in m= line")
        port_count = None
        if slash:
            if not _is_number(count_text, 5) or int(count_text) == 0:
                raise self.fail("bad port count in m= line")
            port_count = int(count_text)
        return MediaDescription(parts[0], int(port_text), parts[2], parts[3:], port_count)
