"""Header names and the typed header values the stack reads.

Header field values are stored as text and parsed on demand into the small
value classes here: L{NameAddress} (From, To, Contact, Route, ...), L{Via}
and L{CSeq}.  L{split_list} splits comma-separated values while keeping
commas inside quoted strings and C{<...>}.
"""

from __future__ import annotations

import re
from functools import lru_cache

from b2bua.sip.errors import ParseError
from b2bua.sip.uri import (
    URI,
    Params,
    format_host,
    parse_host,
    parse_params,
    parse_uri,
    split_hostport,
)

__all__ = [
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "CSeq",
    "NameAddress",
    "Via",
    "canonical_name",
    "header_key",
    "parse_cseq",
    "parse_name_addr",
    "parse_via",
    "split_list",
]

#: RFC 3261 7.3.3 and later RFCs: compact form -> full name.
COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID", "m": "Contact", "f": "From", "t": "To", "v": "Via",
    "e": "Content-Encoding", "l": "Content-Length", "c": "Content-Type",
    "s": "Subject", "k": "Supported", "o": "Event", "r": "Refer-To",
    "b": "Referred-By", "u": "Allow-Events", "x": "Session-Expires",
    "y": "Identity", "a": "Accept-Contact", "j": "Reject-Contact",
    "d": "Request-Disposition",
}

_CANONICAL = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Diversion", "Error-Info", "Event", "Expires",
    "History-Info", "Identity", "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE",
    "MIME-Version", "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path",
    "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require",
    "RAck", "Reason", "Record-Route", "Refer-To", "Referred-By", "Reject-Contact",
    "Replaces", "Reply-To", "Request-Disposition", "Require", "Retry-After", "Route", "RSeq",
    "Server", "Service-Route", "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject",
    "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
    "Warning", "WWW-Authenticate",
]

#: lower-case name (compact forms included) -> canonical spelling
_CANONICAL_BY_KEY: dict[str, str] = {n.lower(): n for n in _CANONICAL}
for _short, _long in COMPACT_FORMS.items():
    _CANONICAL_BY_KEY[_short] = _long

#: Headers whose values may be comma-separated lists (RFC 3261 7.3.1).
LIST_HEADERS = frozenset(
    n.lower() for n in (
        "Via", "Route", "Record-Route", "Contact", "Allow", "Supported", "Require",
        "Proxy-Require", "Unsupported", "Accept", "Accept-Encoding", "Accept-Language",
        "Content-Encoding", "Content-Language", "Allow-Events", "Path", "Service-Route",
        "In-Reply-To", "Warning", "Call-Info", "Alert-Info", "Error-Info", "Reason",
        "P-Asserted-Identity", "P-Preferred-Identity", "History-Info", "Diversion",
        "Privacy", "Accept-Contact", "Reject-Contact", "Request-Disposition",
    )
)


@lru_cache(maxsize=4096)
def header_key(name: str) -> str:
    """The lookup key of a header name: lower-cased, compact forms expanded."""
    key = name.lower()
    if len(key) == 1:
        full = COMPACT_FORMS.get(key)
        if full is not None:
            return full.lower()
    return key


def canonical_name(name: str) -> str:
    """The conventional spelling of a header name (C{call-id} -> C{Call-ID})."""
    return _CANONICAL_BY_KEY.get(name.lower(), name)


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, keeping commas that sit inside
    quoted strings or C{<...>}; empty elements are dropped.

    @raise ParseError: on an unterminated quoted string or C{<}.
    """
    if "," not in value:
        v = value.strip()
        return [v] if v else []
    if '"' not in value and "<" not in value:
        return [p for p in (s.strip() for s in value.split(",")) if p]
    out: list[str] = []
    start = 0
    quoted = False
    angle = False
    escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
    if quoted:
        raise ParseError("unterminated quoted string")
    if angle:
        raise ParseError("unterminated <")
    part = value[start:].strip()
    if part:
        out.append(part)
    return out


class NameAddress:
    """A name-addr or addr-spec with header parameters (From, To, Contact...).

    @ivar display_name: the display name without quotes, or C{None}.
    @ivar uri: the L{URI}.
    @ivar params: header parameters (C{tag}, C{expires}, C{q}, ...).
    @ivar star: C{True} for the C{Contact: *} of a REGISTER.
    """

    __slots__ = ("_params", "_quoted", "display_name", "star", "uri")

    def __init__(self, uri: URI, display_name: str | None = None,
                 params: Params | dict | None = None) -> None:
        self.uri = uri
        self.display_name = display_name
        #: made on first use when empty: most addresses kept for long have none
        self._params: Params | None = (
            params if isinstance(params, Params) else Params(params) if params else None)
        self.star = False
        self._quoted = True

    @property
    def params(self) -> Params:
        """Header parameters (C{tag}, C{expires}, C{q}, ...)."""
        params = self._params
        if params is None:
            params = self._params = Params()
        return params

    @params.setter
    def params(self, value: Params | dict | None) -> None:
        self._params = value if isinstance(value, Params) else Params(value or {})

    @classmethod
    def wildcard(cls) -> NameAddress:
        """The C{*} contact (REGISTER removal of all bindings)."""
        na = cls(URI("sip", host="*"))
        na.star = True
        return na

    @property
    def tag(self) -> str | None:
        """The C{tag} parameter (dialog identification), if any."""
        params = self._params
        return params.get("tag") if params else None

    @tag.setter
    def tag(self, value: str | None) -> None:
        if value is None:
            if self._params:
                self._params.pop("tag", None)
        else:
            self.params["tag"] = value

    def without_tag(self) -> NameAddress:
        """An independent copy without the C{tag} parameter."""
        params = self._params
        na = NameAddress(self.uri.copy(), self.display_name,
                         Params({k: v for k, v in params.items() if k != "tag"})
                         if params else None)
        na.star = self.star
        return na

    def text_without_tag(self) -> str:
        """C{str(self.without_tag())} (display name always quoted), without
        making the copy: what a dialog keeps of its From and To."""
        params = self._params
        if not params:
            tail = ""
        elif "tag" in params:
            tail = "".join(f";{k}" if v is None else f";{k}={v}"
                           for k, v in params.items() if k != "tag")
        else:
            tail = params.to_string()
        if self.star:
            return "*" + tail
        name = self.display_name
        if name:
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
            return f"{name} <{self.uri}>{tail}"
        return f"<{self.uri}>{tail}"

    def copy(self) -> NameAddress:
        """An independent copy."""
        na = NameAddress(self.uri.copy(), self.display_name,
                         Params(self._params) if self._params else None)
        na.star = self.star
        return na

    def __str__(self) -> str:
        params = self._params
        tail = params.to_string() if params else ""
        if self.star:
            return "*" + tail
        if self.display_name:
            name = self.display_name
            if self._quoted or not _is_token_list(name):
                name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
            head = f"{name} <{self.uri}>"
        else:
            head = f"<{self.uri}>"
        return head + tail

    def __repr__(self) -> str:
        return f"NameAddress({str(self)!r})"


_TOKEN_LIST = re.compile(r"[\w\-.!%*+`'~ ]*\Z")


def _is_token_list(text: str) -> bool:
    """True when C{text} is tokens separated by spaces (no quoting needed)."""
    return _TOKEN_LIST.match(text) is not None


_NAME_ADDR_FAST = re.compile(
    r'(?:"([^"\\]*)" ?)?<([^<>"\s]+)>((?:;[A-Za-z0-9\-_.!~*%+`\'=]+)*)\Z'
)


def parse_name_addr(text: str) -> NameAddress:
    """Parse a name-addr (C{"Bob" <sip:bob@b.example>;tag=1}) or an addr-spec
    (C{sip:bob@b.example;tag=1}: parameters belong to the header).

    @raise ParseError: when malformed.
    """
    text = text.strip()
    m = _NAME_ADDR_FAST.match(text)
    if m is not None:
        display, uri_text, tail = m.groups()
        return NameAddress(parse_uri(uri_text), display,
                           parse_params(tail, "header parameter") if tail else None)
    if not text:
        raise ParseError("empty address")
    if text[0] == "*":
        na = NameAddress.wildcard()
        na.params = parse_params(text[1:], "Contact parameter")
        return na
    display = None
    quoted = False
    if text[0] == '"':
        i = 1
        chars: list[str] = []
        n = len(text)
        while i < n:
            ch = text[i]
            if ch == "\\" and i + 1 < n:
                chars.append(text[i + 1])
                i += 2
                continue
            if ch == '"':
                break
            chars.append(ch)
            i += 1
        else:
            raise ParseError("unterminated display name")
        display = "".join(chars)
        quoted = True
        rest = text[i + 1 :].lstrip()
        if not rest.startswith("<"):
            raise ParseError("display name without <URI>")
    else:
        lt = text.find("<")
        rest = text
        if lt > 0:
            display = text[:lt].strip() or None
            if display and not _is_token_list(display):
                raise ParseError(f"bad display name {display[:40]!r}")
            rest = text[lt:]
    if rest.startswith("<"):
        gt = rest.find(">")
        if gt < 0:
            raise ParseError("unterminated <URI>")
        inner = rest[1:gt]
        if inner != inner.strip():
            raise ParseError("whitespace inside <URI>")
        uri = parse_uri(inner)
        tail = rest[gt + 1 :].strip()
        if tail and tail[0] != ";":
            raise ParseError(f"junk after <URI>: {tail[:40]!r}")
        na = NameAddress(uri, display, parse_params(tail, "header parameter"))
        na._quoted = quoted
        return na
    if display is not None:
        raise ParseError("display name without <URI>")
    # addr-spec: URI parameters cannot be told apart, they belong to the header
    uri_text, _, ptext = rest.partition(";")
    if "?" in uri_text or "," in uri_text:
        raise ParseError("addr-spec with reserved characters must use <>")
    if " " in uri_text.strip():
        raise ParseError(f"bad address {uri_text[:40]!r}")
    return NameAddress(parse_uri(uri_text), None, parse_params(ptext, "header parameter"))


class Via:
    """One Via header value (RFC 3261 20.42).

    @ivar transport: upper-cased transport (C{UDP}, C{TCP}, C{TLS}, C{WS}...).
    @ivar host: sent-by host (IPv6 with brackets).
    @ivar port: sent-by port or C{None}.
    @ivar params: C{branch}, C{received}, C{rport} (C{None} when empty)...
    """

    __slots__ = ("host", "params", "port", "protocol", "transport")

    def __init__(self, transport: str, host: str, port: int | None = None,
                 params: Params | dict | None = None, protocol: str = "SIP/2.0") -> None:
        self.protocol = protocol
        self.transport = transport.upper()
        self.host = host
        self.port = port
        self.params = params if isinstance(params, Params) else Params(params or {})

    @property
    def branch(self) -> str | None:
        """The branch parameter (transaction id when it has the magic cookie)."""
        return self.params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """(host, port) as the sender wrote them."""
        return self.host, self.port

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        params = self.params.to_string()
        return f"{self.protocol}/{self.transport} {format_host(self.host)}{port}{params}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"


_VIA_FAST = re.compile(
    r"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9.\-]+)(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-.!%*_+`'~=:\[\]]+)*)\Z"
)


def parse_via(text: str) -> Via:
    """Parse one Via value (C{SIP/2.0/UDP host:port;branch=...}).

    @raise ParseError: when malformed.
    """
    text = text.strip()
    m = _VIA_FAST.match(text)
    if m is not None:
        transport, host, port, ptext = m.groups()
        host = parse_host(host)  # the checked string, shared by equal hosts
        params = parse_params(ptext, "Via parameter") if ptext else Params()
        via = Via(transport, host, int(port) if port else None, params)
        if via.port is not None and via.port > 65535:
            raise ParseError("Via port out of range")
        _check_via_params(params)
        return via
    parts = text.split("/", 2)
    if len(parts) != 3:
        raise ParseError(f"bad Via {text[:60]!r}")
    name, version, rest = parts[0].strip(), parts[1].strip(), parts[2].lstrip()
    if not name or not version:
        raise ParseError(f"bad Via protocol {text[:60]!r}")
    i = 0
    n = len(rest)
    while i < n and not rest[i].isspace():
        i += 1
    transport = rest[:i]
    sent = rest[i:].strip()
    if not transport or not sent:
        raise ParseError(f"bad Via {text[:60]!r}")
    hostport, semi, ptext = sent.partition(";")
    # linear whitespace is allowed around ':' between host and port
    hostport = hostport.strip().replace(" ", "").replace("\t", "")
    host, port = split_hostport(hostport)
    params = parse_params(ptext, "Via parameter") if semi else Params()
    _check_via_params(params)
    return Via(transport, host, port, params, f"{name}/{version}")


def _check_via_params(params: Params) -> None:
    """Reject empty values of Via parameters that need one, and a bad rport."""
    for key in ("received", "branch", "maddr", "ttl"):
        if key in params and not params[key]:
            raise ParseError(f"Via parameter {key} without value")
    rport = params.get("rport")
    if rport is not None and not (rport.isdigit() and int(rport) <= 65535):
        raise ParseError(f"bad Via rport {rport!r}")


class CSeq:
    """The CSeq header: a sequence number and a method."""

    __slots__ = ("method", "number")

    def __init__(self, number: int, method: str) -> None:
        self.number = number
        self.method = method

    def __str__(self) -> str:
        return f"{self.number} {self.method}"

    def __repr__(self) -> str:
        return f"CSeq({self.number}, {self.method!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CSeq):
            return NotImplemented
        return self.number == other.number and self.method == other.method

    def __hash__(self) -> int:
        return hash((self.number, self.method))


def parse_cseq(text: str) -> CSeq:
    """Parse C{CSeq: 4711 INVITE}; the number must be below 2**31.

    @raise ParseError: when malformed.
    """
    parts = text.split()
    if len(parts) != 2 or not parts[0].isdigit() or not parts[0].isascii():
        raise ParseError(f"bad CSeq {text[:40]!r}")
    number = int(parts[0])
    if number >= 2**31:
        raise ParseError("CSeq number out of range")
    method = parts[1]
    if not _is_token(method):
        raise ParseError(f"bad CSeq method {method[:20]!r}")
    return CSeq(number, method)


_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_is_token_match = _TOKEN.match


def _is_token(text: str) -> bool:
    """True when C{text} is an RFC 3261 token."""
    return _is_token_match(text) is not None


def is_token(text: str) -> bool:
    """True when C{text} is an RFC 3261 token (methods, header names...)."""
    return _is_token(text)
