"""SIP, SIPS and tel URIs (RFC 3261 section 19.1, RFC 3966), sans-IO.

A L{URI} keeps the pieces of a URI as text; C{str(uri)} writes it back.
Escaped characters in the user part are kept as received (so a URI
round-trips untouched) and compared unescaped (RFC 3261 19.1.4).  URIs of
other schemes (C{http:}, C{urn:}, C{mailto:} ...) parse as an opaque
L{URI} with only C{scheme} and C{opaque} set, so that the layer above can
answer C{416 Unsupported URI Scheme}.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from urllib.parse import unquote

from b2bua.sip.errors import ParseError

__all__ = ["URI", "Params", "format_host", "parse_params", "parse_uri"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-_]*[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?\Z")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}\Z")
_USER_BAD = re.compile(r"[\x00-\x20\x7f<>\"@\[\]]")
_PARAM_BAD = re.compile(r"[\x00-\x20\x7f<>\"]")


class Params(dict):
    """Parameters of a URI or header: lower-cased names to values.

    A parameter without a value (C{;lr}, C{;rport}) maps to C{None}.  Order
    of insertion is kept, so writing the parameters back preserves it.
    """

    __slots__ = ()

    def to_string(self) -> str:
        """Serialize as C{;name=value;flag} (empty string when empty)."""
        if not self:
            return ""
        return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.items())


#: an empty parameter set to read from (never changed)
_NO_PARAMS = Params()

#: the usual schemes, one string each (most URIs are written lower-case)
_SCHEMES = {"sip": "sip", "sips": "sips", "tel": "tel"}


def parse_params(text: str, what: str = "parameter") -> Params:
    """Parse C{;a=b;c} (the leading C{;} optional) into L{Params}.

    Quoted values (C{;x="a;b"}) keep their quotes.

    @raise ParseError: on an empty parameter name.
    """
    params = Params()
    if not text:
        return params
    for part in _split_params(text):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not name:
            if not eq and not value.strip():
                continue
            raise ParseError(f"empty {what} name")
        params[name.lower()] = value.strip() if eq else None
    return params


def _split_params(text: str) -> list[str]:
    """Split on C{;} outside quoted strings, dropping a leading C{;}."""
    if '"' not in text:
        parts = text.split(";")
    else:
        parts = []
        current: list[str] = []
        quoted = False
        escaped = False
        for ch in text:
            if escaped:
                escaped = False
            elif quoted and ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = not quoted
            elif ch == ";" and not quoted:
                parts.append("".join(current))
                current = []
                continue
            current.append(ch)
        if quoted:
            raise ParseError("unterminated quoted string in parameters")
        parts.append("".join(current))
    if parts and not parts[0].strip():
        parts = parts[1:]
    return parts


@lru_cache(maxsize=8192)  # a switch sees the same peers again and again
def parse_host(text: str) -> str:
    """Check a host (hostname, IPv4 or bracketed IPv6 reference) and return it.

    @raise ParseError: when it is none of those.
    """
    if not text:
        raise ParseError("empty host")
    if text[0] == "[":
        if text[-1] != "]":
            raise ParseError("unterminated IPv6 reference")
        try:
            ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            # RFC 5118 4.10: tolerate the three-colon form an old ABNF allowed
            try:
                ipaddress.IPv6Address(text[1:-1].replace(":::", "::", 1))
            except ValueError:
                raise ParseError(f"bad IPv6 reference {text[:60]!r}") from None
        return text
    if _IPV4.match(text):
        if any(int(p) > 255 for p in text.split(".")):
            raise ParseError(f"bad IPv4 address {text!r}")
        return text
    if not _HOSTNAME.match(text):
        raise ParseError(f"bad host {text!r}")
    return text


def format_host(host: str) -> str:
    """Return C{host} as it goes in a URI or Via: IPv6 literals get brackets."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def split_hostport(text: str) -> tuple[str, int | None]:
    """Split C{host[:port]} (IPv6 in brackets) into a checked host and port.

    @raise ParseError: on a bad host or port.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError("unterminated IPv6 reference")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and rest[0] != ":":
            raise ParseError(f"junk after IPv6 reference {rest!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_ = text.partition(":")
        port_text = port_text_ if colon else None
    port = None
    if port_text is not None:
        port_text = port_text.strip()
        if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
            raise ParseError(f"bad port {port_text!r}")
        port = int(port_text)
        if port > 65535:
            raise ParseError(f"port out of range {port}")
    return parse_host(host.strip()), port


class URI:
    """A parsed URI.

    For C{sip}/C{sips}: C{user}, C{password}, C{host}, C{port}, C{params},
    C{headers} (the raw text after C{?}).  For C{tel}: C{user} holds the
    number and C{params} its parameters; C{host} is C{None}.  For any other
    scheme only C{opaque} (everything after the colon) is set.
    """

    __slots__ = ("_params", "headers", "host", "opaque", "password", "port", "scheme", "user")

    def __init__(
        self,
        scheme: str = "sip",
        user: str | None = None,
        host: str | None = None,
        port: int | None = None,
        params: Params | dict | None = None,
        password: str | None = None,
        headers: str | None = None,
        opaque: str | None = None,
    ) -> None:
        self.scheme = _SCHEMES.get(scheme) or scheme.lower()
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        #: made on first use: most URIs kept for long have no parameters
        self._params: Params | None = (
            params if isinstance(params, Params) else Params(params) if params else None)
        self.headers = headers
        self.opaque = opaque

    @property
    def params(self) -> Params:
        """The URI parameters (lower-cased names; C{None} for a flag)."""
        params = self._params
        if params is None:
            params = self._params = Params()
        return params

    @params.setter
    def params(self, value: Params | dict | None) -> None:
        self._params = value if isinstance(value, Params) else Params(value or {})

    @property
    def is_sip(self) -> bool:
        """True for C{sip} and C{sips} URIs."""
        return self.scheme in ("sip", "sips")

    @property
    def user_unescaped(self) -> str | None:
        """The user part with %-escapes decoded (for comparisons and lookups)."""
        if self.user is None or "%" not in self.user:
            return self.user
        return unquote(self.user)

    @property
    def host_unbracketed(self) -> str | None:
        """The host without IPv6 brackets (what a socket address uses)."""
        if self.host and self.host.startswith("["):
            return self.host[1:-1]
        return self.host

    @property
    def transport(self) -> str | None:
        """The lower-cased C{transport} parameter, if any."""
        value = (self._params or _NO_PARAMS).get("transport")
        return value.lower() if value else None

    def copy(self) -> URI:
        """Return an independent copy (parameters copied too)."""
        return URI(self.scheme, self.user, self.host, self.port,
                   Params(self._params) if self._params else None,
                   self.password, self.headers, self.opaque)

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            return f"tel:{self.user}{(self._params or _NO_PARAMS).to_string()}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":")
                out.append(self.password)
            out.append("@")
        out.append(format_host(self.host or ""))
        if self.port is not None:
            out.append(f":{self.port}")
        if self._params:
            out.append(self._params.to_string())
        if self.headers:
            out.append("?")
            out.append(self.headers)
        return "".join(out)

    def __repr__(self) -> str:
        return f"URI({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        """Compare per RFC 3261 19.1.4 (simplified: parameters in both must agree,
        user/transport/method/maddr/ttl must agree when either has them)."""
        if not isinstance(other, URI):
            return NotImplemented
        if self.scheme != other.scheme:
            return False
        if self.opaque is not None or other.opaque is not None:
            return self.opaque == other.opaque
        if self.user_unescaped != other.user_unescaped or self.password != other.password:
            return False
        if self.scheme == "tel":
            return (self._params or _NO_PARAMS) == (other._params or _NO_PARAMS)
        if (self.host or "").lower() != (other.host or "").lower() or self.port != other.port:
            return False
        for name in ("user", "ttl", "method", "maddr", "transport"):
            a, b = (self._params or _NO_PARAMS).get(name), (other._params or _NO_PARAMS).get(name)
            if (a or "").lower() != (b or "").lower():
                return False
        mine, theirs = self._params or _NO_PARAMS, other._params or _NO_PARAMS
        for name in set(mine) & set(theirs):
            a, b = mine[name], theirs[name]
            if (a or "").lower() != (b or "").lower():
                return False
        return (self.headers or "") == (other.headers or "")

    def __hash__(self) -> int:
        return hash((self.scheme, self.user_unescaped, (self.host or "").lower(), self.port))


def parse_uri(text: str) -> URI:
    """Parse a URI.

    @raise ParseError: on anything malformed (never another exception).
    """
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.match(scheme):
        raise ParseError(f"bad URI {text[:60]!r}")
    lscheme = scheme.lower()
    if lscheme in ("sip", "sips"):
        return _parse_sip(lscheme, rest)
    if lscheme == "tel":
        number, _, ptext = rest.partition(";")
        if not number or any(c in number for c in " <>\"@"):
            raise ParseError(f"bad tel URI {text[:60]!r}")
        return URI("tel", user=number, params=parse_params(ptext, "tel parameter"))
    if not rest or any(c in rest for c in " <>\"\t\r\n"):
        raise ParseError(f"bad URI {text[:60]!r}")
    return URI(lscheme, opaque=rest)


_SIP_FAST = re.compile(
    r"(?:([A-Za-z0-9\-_.!~*'()&=+$,/]+)@)?([A-Za-z0-9.\-]+)(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$=]+)*)\Z"
)


def _parse_sip(scheme: str, rest: str) -> URI:
    """Parse what follows C{sip:} / C{sips:}."""
    m = _SIP_FAST.match(rest)
    if m is not None:
        user, host, port, ptext = m.groups()
        host = parse_host(host)  # the checked string, shared by equal hosts
        port_number = int(port) if port else None
        if port_number is not None and port_number > 65535:
            raise ParseError(f"port out of range {port_number}")
        return URI(scheme, user, host, port_number,
                   parse_params(ptext, "URI parameter") if ptext else None)
    # '@' cannot appear unescaped after the userinfo (RFC 3261 25.1), while
    # the user part may hold '?', ';' and '/': split at the first '@' first
    at = rest.find("@")
    user = password = None
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, pcolon, pw = userinfo.partition(":")
        if pcolon:
            password = pw
        if not user or _USER_BAD.search(user) or (password and _USER_BAD.search(password)):
            raise ParseError(f"bad user part in URI {userinfo[:40]!r}")
        if "%" in user:
            _check_escapes(user)
    rest, qmark, headers = rest.partition("?")
    hostport, semi, ptext = rest.partition(";")
    if not hostport:
        raise ParseError("URI without host")
    host, port = split_hostport(hostport)
    params = parse_params(ptext, "URI parameter") if semi else None
    if semi and _PARAM_BAD.search(ptext):
        raise ParseError("bad character in URI parameters")
    if qmark and (not headers or any(c in headers for c in " <>\"")):
        raise ParseError("bad URI headers")
    return URI(scheme, user, host, port, params, password, headers if qmark else None)


def _check_escapes(text: str) -> None:
    """Reject a C{%} not followed by two hex digits."""
    i = text.find("%")
    while i >= 0:
        pair = text[i + 1 : i + 3]
        if len(pair) != 2 or any(c not in "0123456789abcdefABCDEF" for c in pair):
            raise ParseError(f"bad escape in {text[:40]!r}")
        i = text.find("%", i + 3)
