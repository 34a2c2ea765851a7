"""SIP messages: the sans-IO codec (RFC 3261 section 7).

L{parse_message} turns bytes into a L{Request} or L{Response}; C{to_bytes()}
writes one back.  Header values are kept as text, in order, under their
original names (unknown headers round-trip untouched); the typed values the
stack needs (C{via}, C{from_}, C{to}, C{call_id}, C{cseq}, C{contact} ...)
are parsed on first access and cached until that header changes.  Any
malformed input raises L{ParseError}, at parse time or at first access of the
bad header, and never any other exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from b2bua.sip.errors import ParseError
from b2bua.sip.headers import (
    LIST_HEADERS,
    CSeq,
    NameAddress,
    Via,
    canonical_name,
    header_key,
    is_token,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_list,
)
from b2bua.sip.uri import URI, parse_uri

__all__ = [
    "DEFAULT_MAX_SIZE",
    "REASON_PHRASES",
    "Headers",
    "Message",
    "Request",
    "Response",
    "make_response",
    "parse_message",
]

#: Largest message accepted by default (bytes).
DEFAULT_MAX_SIZE = 65536

SIP_VERSION = "SIP/2.0"

#: The methods SIP's RFCs define (3261, 3262, 3311, 3428, 3515, 3903,
#: 6086, 6665): answered 405 when not handled, unlike unknown ones (501).
KNOWN_METHODS = frozenset({
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
    "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
})

#: method name -> the one string object of that name
_METHOD_NAMES = {method: method for method in KNOWN_METHODS}

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 417: "Unknown Resource-Priority", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    428: "Use Identity Header", 429: "Provide Referrer Identity", 430: "Flow Failed",
    433: "Anonymity Disallowed", 436: "Bad Identity-Info", 437: "Unsupported Certificate",
    438: "Invalid Identity Header", 439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded", 469: "Bad Info Package", 470: "Consent Needed",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete",
    485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable", 607: "Unwanted", 608: "Rejected",
}


class Headers:
    """The header fields of a message, in order, as text.

    Lookups are case-insensitive and understand compact forms (C{i} is
    C{Call-ID}).  Each field keeps the name it was received with, so that
    writing a received message back changes nothing.  C{get_all} splits
    comma-separated values of list headers (Via, Route, Contact, ...).  A
    message kept for long packs its fields into one string (L{pack}); any
    read or change unpacks them first.
    """

    __slots__ = ("_fields", "_index", "_owner")

    def __init__(self, fields: list[tuple[str, str]] | None = None) -> None:
        #: (key, name, value) per header line: tuples, the lightest record
        #: to work with; or, once L{pack}ed, all of it in one string
        self._fields: list[tuple[str, str, str]] | str = [
            (header_key(name), name, value) for name, value in fields or ()]
        #: key -> values, built on the first lookup, dropped on any change
        self._index: dict[str, list[str]] | None = None
        #: the typed-value cache of the message these headers belong to (the
        #: dict, not the message: no reference cycle, so a message is freed
        #: by reference counting as soon as it is dropped, never by the
        #: cyclic garbage collector)
        self._owner: dict[str, object] | None = None

    def _lines(self) -> list[tuple[str, str, str]]:
        """The (key, name, value) records, unpacked first when packed."""
        fields = self._fields
        if fields.__class__ is str:
            fields = self._fields = _unpack(fields)  # type: ignore[arg-type]
        return fields  # type: ignore[return-value]

    def pack(self) -> None:
        """Keep the fields as one string until they are read or changed again
        (a message kept for a long call): one string instead of a tuple and
        a value string per line.

        Nothing is lost: names, values and order come back as they were.
        Fields whose text holds a line feed are left as they are.
        """
        fields = self._fields
        self._index = None
        if fields.__class__ is str or not fields:
            return
        packed = "\n".join([part for _, name, value in fields for part in (name, value)])
        if packed.count("\n") == 2 * len(fields) - 1:
            self._fields = packed

    def _changed(self, key: str) -> None:
        """Fields named C{key} changed: drop the index and the owner's typed
        value of that header (the typed values of others stay valid)."""
        self._index = None
        cache = self._owner
        if cache:
            cache.pop(key, None)

    def _values(self, name: str) -> list[str] | None:
        """The values of the lines named C{name} (through the index)."""
        index = self._index
        if index is None:
            index = {}
            for key, _, value in self._lines():
                found = index.get(key)
                if found is None:
                    index[key] = [value]
                else:
                    found.append(value)
            self._index = index
        found = index.get(name)  # a lookup key already (as most callers pass)
        return found if found is not None else index.get(header_key(name))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """Iterate (name, value) in order, one item per header line."""
        for _key, name, value in self._lines():
            yield name, value

    def __len__(self) -> int:
        return len(self._lines())

    def __contains__(self, name: str) -> bool:
        return self._values(name) is not None

    def lines_by_key(self) -> Mapping[str, list[str]]:
        """Every field's value, unsplit, by lookup key (lower-case, compact
        forms expanded), in order: one read for many lookups.  Read it,
        never change it; it is stale once the headers change."""
        self._values("")
        return self._index  # type: ignore[return-value]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first field named C{name} (whole line value)."""
        values = self._values(name)
        return values[0] if values else default

    def get_lines(self, name: str) -> list[str]:
        """Every field named C{name}, one string per header line, unsplit."""
        return list(self._values(name) or ())

    def get_all(self, name: str) -> list[str]:
        """Every value of C{name}; list headers are split at commas.

        @raise ParseError: on an unterminated quote or C{<} in a list header.
        """
        values = self._values(name)
        if not values:
            return []
        if header_key(name) in LIST_HEADERS:
            out: list[str] = []
            for v in values:
                out.extend(split_list(v))
            return out
        return list(values)

    def count(self, name: str) -> int:
        """How many header lines are named C{name}."""
        return len(self._values(name) or ())

    def add(self, name: str, value: str) -> None:
        """Append a field (after any existing ones)."""
        key = header_key(name)
        fields = self._lines()
        # keep fields of one name together: insert after the last such field
        for i in range(len(fields) - 1, -1, -1):
            if fields[i][0] == key:
                fields.insert(i + 1, (key, canonical_name(name), value))
                break
        else:
            fields.append((key, canonical_name(name), value))
        self._changed(key)

    def add_first(self, name: str, value: str) -> None:
        """Insert a field before any existing field of that name (a Via, a Route)."""
        key = header_key(name)
        fields = self._lines()
        for i, f in enumerate(fields):
            if f[0] == key:
                fields.insert(i, (key, canonical_name(name), value))
                break
        else:
            fields.append((key, canonical_name(name), value))
        self._changed(key)

    def set(self, name: str, value: str) -> None:
        """Replace every field named C{name} by one with C{value} (kept in place)."""
        key = header_key(name)
        fields = self._lines()
        for i, f in enumerate(fields):
            if f[0] == key:
                fields[i] = (key, canonical_name(name), value)
                fields[i + 1 :] = [g for g in fields[i + 1 :] if g[0] != key]
                break
        else:
            fields.append((key, canonical_name(name), value))
        self._changed(key)

    def set_all(self, name: str, values: list[str]) -> None:
        """Replace every field named C{name} by one line per value (in place)."""
        key = header_key(name)
        new = [(key, canonical_name(name), v) for v in values]
        fields = self._lines()
        for i, f in enumerate(fields):
            if f[0] == key:
                rest = [g for g in fields[i + 1 :] if g[0] != key]
                fields[i:] = new + rest
                break
        else:
            fields.extend(new)
        self._changed(key)

    def remove(self, name: str) -> int:
        """Remove every field named C{name}; return how many lines went."""
        key = header_key(name)
        fields = self._lines()
        kept = [f for f in fields if f[0] != key]
        self._fields = kept
        self._changed(key)
        return len(fields) - len(kept)

    def pop_first_value(self, name: str) -> str | None:
        """Remove and return the first value of a list header (the top Via)."""
        key = header_key(name)
        fields = self._lines()
        for i, f in enumerate(fields):
            if f[0] == key:
                values = split_list(f[2]) if key in LIST_HEADERS else [f[2]]
                if len(values) <= 1:
                    del fields[i]
                else:
                    fields[i] = (f[0], f[1], ", ".join(values[1:]))
                self._changed(key)
                return values[0] if values else None
        return None

    def copy(self) -> Headers:
        """An independent copy (not attached to any message)."""
        h = Headers()
        h._fields = list(self._lines())
        return h


class ParsedList(Sequence):
    """The values of a list header (Via, Contact, Route...), each parsed on
    first access: a proxy-like reader of the top Via never pays for the
    others.  Reading an element may raise L{ParseError}; C{list(...)} checks
    them all.
    """

    __slots__ = ("_items", "_parse", "_raw")

    def __init__(self, raw: list[str], parse: Callable[[str], Any]) -> None:
        self._raw = raw
        self._parse = parse
        self._items: list[Any] = [_UNPARSED] * len(raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, index):  # type: ignore[no-untyped-def,override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self._raw)))]
        item = self._items[index]
        if item is _UNPARSED:
            item = self._parse(self._raw[index])
            self._items[index] = item
        return item

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self._raw)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    def __repr__(self) -> str:
        return f"ParsedList({self._raw!r})"


_UNPARSED = object()


def _unpack(packed: str) -> list[tuple[str, str, str]]:
    """The (key, name, value) records of L{Headers.pack}'s string."""
    parts = packed.split("\n")
    fields = []
    known = _known_names
    for i in range(0, len(parts), 2):
        name = parts[i]
        entry = known.get(name)
        if entry is None:
            fields.append((header_key(name), name, parts[i + 1]))
        else:
            # the shared key and name strings, as when it was parsed
            fields.append((entry[0], entry[1], parts[i + 1]))
    return fields


class Message:
    """What requests and responses share: headers, body and typed accessors."""

    __slots__ = ("_cache", "body", "headers")

    def __init__(self, headers: Headers | list[tuple[str, str]] | None = None,
                 body: bytes = b"") -> None:
        if not isinstance(headers, Headers):
            headers = Headers(headers)
        #: typed header values by name; C{None} once compacted.  The headers
        #: hold this dict (to drop what a change makes stale), never the
        #: message itself: see L{Headers._owner}.
        self._cache: dict[str, object] | None = {}
        self.headers = headers
        headers._owner = self._cache
        self.body = body

    def compact(self) -> None:
        """Drop the parsed forms of the headers and pack their text into one
        string (L{Headers.pack}); both come back when read: a message kept
        for a long call then costs little more than its text."""
        self._cache = None  # type: ignore[assignment]
        self.headers._owner = None
        self.headers.pack()

    def _new_cache(self) -> dict[str, object]:
        """Start an empty typed-value cache (after L{compact}), shared with
        the headers so that their changes keep dropping stale values."""
        cache: dict[str, object] = {}
        self._cache = cache
        self.headers._owner = cache
        return cache

    def _typed(self, key: str, build):  # type: ignore[no-untyped-def]
        cache = self._cache
        try:
            return cache[key]
        except KeyError:
            pass
        except TypeError:  # compacted: no cache until a typed value is read
            cache = self._new_cache()
        value = build()
        cache[key] = value
        return value

    def _single(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise ParseError(f"missing {canonical_name(name)} header")
        return value

    @property
    def via(self) -> Sequence[Via]:
        """Every Via value, top first, each parsed when read.
        @raise ParseError: when a value read is bad."""
        return self._typed("via", lambda: ParsedList(self.headers.get_all("via"), parse_via))

    def set_top_via(self, via: Via) -> None:
        """Write C{via} as the top Via value (the others are kept, one per
        line) and keep C{via} itself as the parsed top Via, so that the
        next reader of L{via} does not parse it again."""
        values = self.headers.get_all("via")
        if not values:
            raise ParseError("missing Via header")
        values[0] = str(via)
        self.headers.set_all("Via", values)
        parsed = ParsedList(list(values), parse_via)
        parsed._items[0] = via
        cache = self._cache
        if cache is None:
            cache = self._new_cache()
        cache["via"] = parsed

    def add_top_via(self, via: Via) -> None:
        """Put C{via} on top of the Via fields (a new hop's Via) and keep it
        as the parsed top Via: the next reader of L{via} does not parse it."""
        self.headers.add_first("Via", str(via))
        parsed = ParsedList(self.headers.get_all("via"), parse_via)
        parsed._items[0] = via
        cache = self._cache
        if cache is None:
            cache = self._new_cache()
        cache["via"] = parsed

    @property
    def from_(self) -> NameAddress:
        """The From header.  @raise ParseError: when missing or bad."""
        return self._typed("from", lambda: parse_name_addr(self._single("from")))

    @property
    def to(self) -> NameAddress:
        """The To header.  @raise ParseError: when missing or bad."""
        return self._typed("to", lambda: parse_name_addr(self._single("to")))

    @property
    def call_id(self) -> str:
        """The Call-ID.  @raise ParseError: when missing or empty."""
        def build() -> str:
            value = self._single("call-id").strip()
            if not value or " " in value or "\t" in value:
                raise ParseError("bad Call-ID")
            return value
        return self._typed("call-id", build)

    @property
    def cseq(self) -> CSeq:
        """The CSeq.  @raise ParseError: when missing or bad."""
        return self._typed("cseq", lambda: parse_cseq(self._single("cseq")))

    @property
    def contact(self) -> Sequence[NameAddress]:
        """Every Contact value (C{*} gives one wildcard L{NameAddress})."""
        return self._typed(
            "contact", lambda: ParsedList(self.headers.get_all("contact"), parse_name_addr))

    @property
    def record_route(self) -> Sequence[NameAddress]:
        """Every Record-Route value, top first."""
        return self._typed(
            "record-route",
            lambda: ParsedList(self.headers.get_all("record-route"), parse_name_addr))

    @property
    def route(self) -> Sequence[NameAddress]:
        """Every Route value, top first."""
        return self._typed(
            "route", lambda: ParsedList(self.headers.get_all("route"), parse_name_addr))

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards as an integer, or C{None} when absent."""
        def build() -> int | None:
            value = self.headers.get("max-forwards")
            if value is None:
                return None
            value = value.strip()
            if not value.isdigit() or not value.isascii() or int(value) > 255:
                raise ParseError(f"bad Max-Forwards {value[:20]!r}")
            return int(value)
        return self._typed("max-forwards", build)

    @property
    def expires(self) -> int | None:
        """Expires as an integer number of seconds, or C{None} when absent."""
        def build() -> int | None:
            value = self.headers.get("expires")
            if value is None:
                return None
            value = value.strip()
            if not value.isdigit() or not value.isascii():
                raise ParseError(f"bad Expires {value[:20]!r}")
            return min(int(value), 2**32 - 1)
        return self._typed("expires", build)

    @property
    def content_type(self) -> str | None:
        """The media type of the body (lower-cased, parameters removed)."""
        value = self.headers.get("content-type")
        if value is None:
            return None
        return value.split(";", 1)[0].strip().lower()

    def to_bytes(self) -> bytes:
        """Serialize; Content-Length is written to match the body."""
        body = self.body
        lines = [self._start_line()]
        length_written = False
        length = str(len(body))
        for key, name, value in self.headers._lines():
            if key == "content-length":
                if length_written:
                    continue
                length_written = True
                if value.strip() != length:
                    value = length
            lines.append(f"{name}: {value}")
        if not length_written:
            lines.append(f"Content-Length: {length}")
        lines.append("")
        lines.append("")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body

    def _start_line(self) -> str:
        raise NotImplementedError


class Request(Message):
    """A SIP request.

    @ivar method: the method (case-sensitive, RFC 3261 7.1).
    @ivar version: the protocol version from the request line.
    """

    __slots__ = ("_uri", "_uri_text", "method", "version")

    def __init__(self, method: str, uri: URI | str,
                 headers: Headers | list[tuple[str, str]] | None = None,
                 body: bytes = b"", version: str = SIP_VERSION) -> None:
        super().__init__(headers, body)
        self.method = method
        self.version = version
        if isinstance(uri, URI):
            self._uri = uri
            self._uri_text = None
        else:
            self._uri = None
            self._uri_text = uri

    @property
    def uri(self) -> URI:
        """The Request-URI, parsed on first access.  @raise ParseError."""
        if self._uri is None:
            self._uri = parse_uri(self._uri_text or "")
        return self._uri

    @uri.setter
    def uri(self, value: URI | str) -> None:
        if isinstance(value, URI):
            self._uri, self._uri_text = value, None
        else:
            self._uri, self._uri_text = None, value

    @property
    def uri_text(self) -> str:
        """The Request-URI as text (without parsing it)."""
        return self._uri_text if self._uri is None else str(self._uri)

    def _start_line(self) -> str:
        return f"{self.method} {self.uri_text} {self.version}"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_text}>"


class Response(Message):
    """A SIP response.

    @ivar code: the status code (100-699).
    @ivar reason: the reason phrase.
    """

    __slots__ = ("code", "reason", "version")

    def __init__(self, code: int, reason: str | None = None,
                 headers: Headers | list[tuple[str, str]] | None = None,
                 body: bytes = b"", version: str = SIP_VERSION) -> None:
        super().__init__(headers, body)
        self.code = code
        self.reason = REASON_PHRASES.get(code, "Unknown") if reason is None else reason
        self.version = version

    @property
    def is_provisional(self) -> bool:
        """True for 1xx."""
        return self.code < 200

    @property
    def is_success(self) -> bool:
        """True for 2xx."""
        return 200 <= self.code < 300

    def _start_line(self) -> str:
        return f"{self.version} {self.code} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.code} {self.reason}>"


def parse_message(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> Request | Response:
    """Parse one message from C{data} (a whole datagram or a framed stream unit).

    Leading CRLFs are ignored (RFC 3261 7.5).  When Content-Length is present
    the body is cut to it (extra bytes of a datagram are dropped, RFC 3261
    18.3); a body shorter than Content-Length is an error.  Without
    Content-Length the body is the rest of the data.

    @raise ParseError: on anything malformed; nothing else is ever raised.
    """
    try:
        return _parse(data, max_size)
    except ParseError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError,
            UnicodeError, RecursionError) as exc:
        raise ParseError(f"malformed message ({exc.__class__.__name__})") from None


#: header names seen before (as written) -> lookup key; bounded
_known_names: dict[str, tuple[str, str]] = {}


def _parse(data: bytes, max_size: int) -> Request | Response:
    if len(data) > max_size:
        raise ParseError(f"message larger than {max_size} bytes")
    start = 0
    n = len(data)
    while start < n and data[start] in (13, 10):
        start += 1
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        head = data[start:end]
        body_start = end + 4
        crlf = True
    else:
        end = data.find(b"\n\n", start)
        if end < 0:
            # a message without body may lack the final empty line in a datagram
            if data.endswith(b"\r\n") or data.endswith(b"\n"):
                head, body_start = data[start:].rstrip(b"\r\n"), n
                crlf = b"\r\n" in head
            else:
                raise ParseError("no empty line after the headers")
        else:
            head = data[start:end]
            body_start = end + 2
            crlf = False
    if not head:
        raise ParseError("empty message")
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\r\n") if crlf else text.replace("\r\n", "\n").split("\n")
    first = lines[0]
    if first.startswith("SIP/"):
        msg: Request | Response = _response_line(first)
    else:
        msg = _request_line(first)
    fields = msg.headers._fields
    for line in lines[1:]:
        if not line:
            raise ParseError("empty line inside the headers")
        c = line[0]
        if c == " " or c == "\t":
            if not fields:
                raise ParseError("continuation line before any header")
            key, name, value = fields[-1]
            fields[-1] = (key, name, (value + " " + line.strip()).strip())
            continue
        colon = line.find(":")
        if colon <= 0:
            raise ParseError(f"header line without colon: {line[:40]!r}")
        known = _known_names.get(line[:colon])
        if known is None:
            name = line[:colon].rstrip()
            if not is_token(name):
                raise ParseError(f"bad header name {name[:40]!r}")
            key = header_key(name)
            if len(_known_names) < 4096:
                _known_names[name] = (key, name)
        else:
            # one string object per header name, shared by every message
            key, name = known
        fields.append((key, name, line[colon + 1 :].strip()))
    body = data[body_start:]
    length_text = None
    for f in fields:
        if f[0] == "content-length":
            if length_text is not None and f[2] != length_text:
                raise ParseError("conflicting Content-Length headers")
            length_text = f[2]
    if length_text is not None:
        if not length_text.isdigit() or not length_text.isascii():
            raise ParseError(f"bad Content-Length {length_text[:20]!r}")
        length = int(length_text)
        if length > len(body):
            raise ParseError("Content-Length larger than the message body")
        body = body[:length]
    msg.body = body
    return msg


def _request_line(line: str) -> Request:
    parts = line.split(" ")
    if len(parts) != 3:
        raise ParseError("bad request line")
    method, uri, version = parts
    known = _METHOD_NAMES.get(method)
    if known is not None:
        method = known  # one string per method name across messages
    elif not is_token(method):
        raise ParseError(f"bad method {method[:20]!r}")
    if not uri or not version.upper().startswith("SIP/"):
        raise ParseError("bad request line")
    if version == SIP_VERSION:
        version = SIP_VERSION  # the shared string
    return Request(method, uri, version=version)


def _response_line(line: str) -> Response:
    version, sep, rest = line.partition(" ")
    code_text, _, reason = rest.partition(" ")
    if not sep or len(code_text) != 3 or not code_text.isdigit() or not code_text.isascii():
        raise ParseError("bad status line")
    code = int(code_text)
    if not 100 <= code <= 699:
        raise ParseError(f"status code out of range {code}")
    if version == SIP_VERSION:
        version = SIP_VERSION  # the shared string
    usual = REASON_PHRASES.get(code)
    if usual == reason:
        reason = usual  # the shared string
    return Response(code, reason, version=version)


def make_response(request: Request, code: int, reason: str | None = None,
                  to_tag: str | None = None,
                  headers: list[tuple[str, str]] | None = None,
                  body: bytes = b"") -> Response:
    """Build a response to C{request} per RFC 3261 8.2.6.2.

    Via, From, Call-ID and CSeq are copied; To is copied and gets C{to_tag}
    when it has no tag yet (never for 100 Trying).  Record-Route is copied
    into 1xx/2xx responses to dialog-creating requests (12.1.1).  The
    copies are of the received text, so this works even when the typed
    values of those headers are malformed (a 400 can always be formed).
    """
    src = request.headers
    fields: list[tuple[str, str]] = []
    for key, name, value in src._lines():
        if key in ("via", "from", "call-id", "cseq"):
            fields.append((name, value))
        elif key == "to":
            if to_tag and code != 100 and ";tag=" not in value.replace(" ", "").lower():
                value = f"{value};tag={to_tag}"
            fields.append((name, value))
        elif (key == "record-route" and code < 300 and code != 100 and request.method in (
            "INVITE", "SUBSCRIBE", "REFER", "NOTIFY"
        )) or (key == "timestamp" and code == 100):
            fields.append((name, value))
    response = Response(code, reason, fields, body)
    for name, value in headers or ():
        response.headers.add(name, value)
    return response
