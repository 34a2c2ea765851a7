"""SIP digest authentication (RFC 3261 section 22, RFC 7616, RFC 8760), sans-IO.

Everything here works on header I{values} as plain strings, so that it does
not depend on the message classes:

  - L{parse_auth_header} and L{format_auth_header} read and write
    C{WWW-Authenticate}, C{Proxy-Authenticate}, C{Authorization} and
    C{Proxy-Authorization} values;
  - L{DigestServer} issues challenges and checks credentials, with stateless
    HMAC-authenticated nonces that every node sharing the secret can verify,
    and a bounded per-node nonce-count table against replays;
  - L{DigestClient} answers challenges, for the B2BUA's outbound legs
    (registrations to carriers, authenticated trunks).

Supported algorithms: C{MD5}, C{MD5-sess}, C{SHA-256} and C{SHA-256-sess};
quality of protection C{auth} and C{auth-int}. The decisions behind the
design (nonce format, lifetimes, replay protection, RFC 2069 clients) are in
C{docs/auth.md}.
"""

from __future__ import annotations

import hashlib
import os
import string
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from b2bua.sip.errors import ParseError

if TYPE_CHECKING:
    pass

__all__ = [
    "AuthOutcome",
    "AuthResult",
    "DigestClient",
    "DigestServer",
    "FailureReason",
    "UnsupportedChallenge",
    "compute_ha1",
    "digest_response",
    "format_auth_header",
    "parse_auth_header",
]

# --------------------------------------------------------------------------
# Header values: challenge = scheme 1*SP #auth-param (RFC 3261 25.1, RFC 7235)
# --------------------------------------------------------------------------

# HTTP tchar, a superset of the SIP token characters.
_TOKEN = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
# Unquoted values are read leniently: any visible ASCII character but the
# ones that delimit (quote, comma, backslash). Some clients leave a nonce
# with '/' and '=' or even a URI unquoted.
_BARE = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset('",\\')
_WHITESPACE = " \t"


def _is_text(ch: str) -> bool:
    """Tell whether C{ch} may appear inside a quoted-string.

    @return: C{True} for HTAB, SP, visible ASCII and any non-ASCII character
        (SIP allows UTF-8 text); C{False} for every other control character.
    """
    code = ord(ch)
    return ch == "\t" or 0x20 <= code <= 0x7E or code >= 0x80


def _skip_whitespace(value: str, i: int) -> int:
    """Return the index of the first non-whitespace character at or after C{i}."""
    while i < len(value) and value[i] in _WHITESPACE:
        i += 1
    return i


def _read_run(value: str, i: int, allowed: frozenset[str], what: str) -> tuple[str, int]:
    """Read a non-empty run of C{allowed} characters starting at C{i}.

    @raise ParseError: when the run is empty.
    """
    start = i
    while i < len(value) and value[i] in allowed:
        i += 1
    if i == start:
        raise ParseError(f"expected {what}")
    return value[start:i], i


def _read_quoted(value: str, i: int) -> tuple[str, int]:
    """Read the quoted-string whose opening quote is at C{i}, undoing escapes.

    @return: the unquoted text and the index just past the closing quote.
    @raise ParseError: for an unterminated string or a control character.
    """
    out: list[str] = []
    i += 1
    while i < len(value):
        ch = value[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            i += 1
            if i == len(value):
                break
            ch = value[i]
        if not _is_text(ch):
            raise ParseError("invalid character in quoted-string")
        out.append(ch)
        i += 1
    raise ParseError("unterminated quoted-string")


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """Parse one challenge or credentials header value.

    C{Digest realm="a, b", nonce=abc} gives C{("Digest", {"realm": "a, b",
    "nonce": "abc"})}. Parameter names are lower-cased, values are unquoted
    (quoted-pairs resolved) and otherwise kept as sent. The scheme is
    returned as written: compare it case-insensitively. Empty list elements
    (stray commas) are tolerated, as RFC 7235 asks; token68 credentials
    (C{Basic dXNl...}) are not supported.

    @raise ParseError: for anything malformed, including a repeated
        parameter name. The reason never quotes the input.
    """
    scheme, i = _read_run(value, _skip_whitespace(value, 0), _TOKEN, "auth scheme")
    params: dict[str, str] = {}
    if i < len(value) and value[i] not in _WHITESPACE:
        raise ParseError("invalid character after auth scheme")
    while True:
        i = _skip_whitespace(value, i)
        if i == len(value):
            return scheme, params
        if value[i] == ",":
            i += 1
            continue
        name, i = _read_run(value, i, _TOKEN, "auth-param name")
        i = _skip_whitespace(value, i)
        if i == len(value) or value[i] != "=":
            raise ParseError("expected '=' after auth-param name")
        i = _skip_whitespace(value, i + 1)
        if i < len(value) and value[i] == '"':
            text, i = _read_quoted(value, i)
        else:
            text, i = _read_run(value, i, _BARE, "auth-param value")
        key = name.lower()
        if key in params:
            raise ParseError("duplicate auth-param")
        params[key] = text
        i = _skip_whitespace(value, i)
        if i < len(value) and value[i] != ",":
            raise ParseError("expected ',' between auth-params")


_UNQUOTED_BY_DEFAULT = frozenset({"algorithm", "stale", "nc"})


def format_auth_header(
    scheme: str, params: Mapping[str, str], quoted: Collection[str] | None = None
) -> str:
    """Write a challenge or credentials header value.

    @param scheme: the auth scheme, normally C{"Digest"}.
    @param params: parameter names and unquoted values, written in order.
    @param quoted: the names of the parameters to write as quoted-strings;
        C{None} quotes everything but C{algorithm}, C{stale} and C{nc}, which
        fits a challenge. Credentials must also leave C{qop} unquoted
        (RFC 3261 section 25.1, C{message-qop}).
    @raise ValueError: for a name or scheme that is not a token, a control
        character (CR, LF...) in a value, or an unquoted value that is not
        made of safe characters. This guards against header injection.
    """
    if not scheme or not set(scheme) <= _TOKEN:
        raise ValueError("auth scheme must be a token")
    parts: list[str] = []
    for name, text in params.items():
        if not name or not set(name) <= _TOKEN:
            raise ValueError("auth-param name must be a token")
        must_quote = name.lower() not in _UNQUOTED_BY_DEFAULT if quoted is None else name in quoted
        if must_quote:
            if not all(_is_text(ch) for ch in text):
                raise ValueError("control character in auth-param value")
            escaped = text.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{name}="{escaped}"')
        else:
            if not text or not set(text) <= _BARE:
                raise ValueError("unquoted auth-param value must be visible ASCII")
            parts.append(f"{name}={text}")
    return f"{scheme} {', '.join(parts)}" if parts else scheme


# --------------------------------------------------------------------------
# The digest computation (RFC 7616 section 3.4, RFC 2617 section 3.2.2)
# --------------------------------------------------------------------------

_ALGORITHMS = {
    "md5": "MD5",
    "md5-sess": "MD5-sess",
    "sha-256": "SHA-256",
    "sha-256-sess": "SHA-256-sess",
}
# Strength for the client's choice among several challenges (RFC 8760).
_STRENGTH = {"MD5": 1, "SHA-256": 2}


def _canonical_algorithm(name: str) -> str | None:
    """Return the canonical spelling of a supported algorithm, else C{None}."""
    return _ALGORITHMS.get(name.strip().lower())


def _base_algorithm(algorithm: str) -> str:
    """Return C{"MD5"} or C{"SHA-256"} for any supported algorithm name.

    @raise ValueError: for an unsupported algorithm.
    """
    canonical = _canonical_algorithm(algorithm)
    if canonical is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return canonical.removesuffix("-sess")


def _hash(base: str, data: str | bytes) -> str:
    """Return the lower-case hex digest of C{data} with the base algorithm."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if base == "MD5":
        return hashlib.md5(raw, usedforsecurity=False).hexdigest()
    return hashlib.sha256(raw).hexdigest()


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """Compute the HA1 that provisioning stores instead of a password.

    For a C{-sess} algorithm this is the value stored (and looked up) too: the
    session HA1 is derived from it per nonce. Strings are hashed as UTF-8.

    @return: C{H(username ":" realm ":" password)} as lower-case hex.
    @raise ValueError: for an unsupported algorithm.
    """
    return _hash(_base_algorithm(algorithm), f"{username}:{realm}:{password}")


def digest_response(
    *,
    algorithm: str,
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """Compute the C{response} parameter of digest credentials.

    @param ha1: the stored HA1, that is C{H(username:realm:password)}; the
        session key of a C{-sess} algorithm is derived here.
    @param qop: C{"auth"}, C{"auth-int"} (hashes C{body}) or C{None} for the
        RFC 2069 form, without C{nc} and C{cnonce}.
    @param nc: the nonce count exactly as sent (8 hex digits).
    @raise ValueError: for an unsupported algorithm or qop, or missing
        C{nc}/C{cnonce} where they are needed.
    """
    canonical = _canonical_algorithm(algorithm)
    if canonical is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    base = canonical.removesuffix("-sess")
    ha1 = ha1.lower()
    if canonical.endswith("-sess"):
        if cnonce is None:
            raise ValueError("a -sess algorithm needs a cnonce")
        ha1 = _hash(base, f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        ha2 = _hash(base, f"{method}:{uri}:{_hash(base, body)}")
    elif qop in ("auth", None):
        ha2 = _hash(base, f"{method}:{uri}")
    else:
        raise ValueError(f"unsupported qop {qop!r}")
    if qop is None:
        return _hash(base, f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise ValueError("qop needs nc and cnonce")
    return _hash(base, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --------------------------------------------------------------------------
# Server side
# --------------------------------------------------------------------------


class UnsupportedChallenge(Exception):
    """A challenge this client cannot answer (malformed, unknown algorithm,
    foreign realm, only C{auth-int} without a body...).

    @ivar reason: a short phrase for logs.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Challenge:
    """The parts of a digest challenge the client needs."""

    realm: str
    nonce: str
    opaque: str | None
    algorithm: str
    algorithm_sent: bool
    qop: str | None


_MAX_CLIENT_NONCES = 64


class DigestClient:
    """Answers digest challenges with one set of credentials.

    The client keeps a nonce count per nonce (the last few nonces only) so
    that reusing a nonce sends an increasing C{nc}. It does not decide
    whether to retry: a second 401/407 without C{stale=true} after sending
    credentials means they were refused, and the caller must stop there.
    """

    def __init__(
        self,
        username: str,
        password: str | None = None,
        *,
        ha1: Mapping[str, str] | None = None,
        realm: str | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """
        @param password: the password; or give C{ha1} instead.
        @param ha1: stored HA1 values keyed by base algorithm (C{"MD5"},
            C{"SHA-256"}); only those algorithms (and their C{-sess}
            variants) are then answered. Needs C{realm}.
        @param realm: when set, challenges for any other realm are refused,
            so the credentials are never offered to a stranger.
        @param random_bytes: the source of the client nonces.
        @raise ValueError: unless exactly one of C{password} and C{ha1} is
            given, or when C{ha1} comes without C{realm}.
        """
        if (password is None) == (ha1 is None):
            raise ValueError("give exactly one of password and ha1")
        if ha1 is not None and realm is None:
            raise ValueError("an HA1 is only valid for its realm: give realm")
        if not all(_is_text(ch) for ch in username):
            raise ValueError("control character in username")
        self.username = username
        self.realm = realm
        self._password = password
        self._ha1 = {_base_algorithm(k): v.lower() for k, v in (ha1 or {}).items()}
        self._random_bytes = random_bytes
        self._counts: OrderedDict[str, int] = OrderedDict()

    def _read(self, challenge_value: str, body: bytes | None) -> _Challenge:
        """Parse a challenge and check that this client can answer it.

        @raise UnsupportedChallenge: when it cannot.
        """
        try:
            scheme, params = parse_auth_header(challenge_value)
        except ParseError as e:
            raise UnsupportedChallenge(f"malformed challenge: {e.reason}") from e
        if scheme.lower() != "digest":
            raise UnsupportedChallenge("not a Digest challenge")
        if "realm" not in params or "nonce" not in params:
            raise UnsupportedChallenge("challenge without realm or nonce")
        if self.realm is not None and params["realm"] != self.realm:
            raise UnsupportedChallenge("challenge for another realm")
        algorithm = _canonical_algorithm(params.get("algorithm", "MD5"))
        if algorithm is None:
            raise UnsupportedChallenge("unsupported algorithm")
        if self._password is None and algorithm.removesuffix("-sess") not in self._ha1:
            raise UnsupportedChallenge("no HA1 for this algorithm")
        qop: str | None = None
        if "qop" in params:
            offered = {item.strip().lower() for item in params["qop"].split(",")}
            if "auth" in offered:
                qop = "auth"
            elif "auth-int" in offered and body is not None:
                qop = "auth-int"
            else:
                raise UnsupportedChallenge("no usable qop")
        elif algorithm.endswith("-sess"):
            raise UnsupportedChallenge("a -sess algorithm needs qop")
        return _Challenge(
            realm=params["realm"],
            nonce=params["nonce"],
            opaque=params.get("opaque"),
            algorithm=algorithm,
            algorithm_sent="algorithm" in params,
            qop=qop,
        )

    def _next_count(self, nonce: str) -> int:
        """Return the next nonce count for C{nonce}, remembering few nonces."""
        count = self._counts.pop(nonce, 0) + 1
        self._counts[nonce] = count
        while len(self._counts) > _MAX_CLIENT_NONCES:
            self._counts.popitem(last=False)
        return count

    def authorize(
        self, method: str, uri: str, challenge_value: str, body: bytes | None = None
    ) -> str:
        """Answer one challenge.

        @param method: the method of the request being sent.
        @param uri: its Request-URI, sent as the C{uri} parameter.
        @param challenge_value: a C{WWW-Authenticate}/C{Proxy-Authenticate}
            value.
        @param body: the request's body, needed only when the challenge
            offers C{auth-int} alone; C{None} means "not available", while
            C{b""} is a real empty body.
        @return: the C{Authorization}/C{Proxy-Authorization} value.
        @raise UnsupportedChallenge: when the challenge cannot be answered.
        """
        return self._answer(self._read(challenge_value, body), method, uri, body)

    def authorize_strongest(
        self, method: str, uri: str, challenge_values: Iterable[str], body: bytes | None = None
    ) -> str:
        """Answer the strongest of several challenges (RFC 8760 section 2.4).

        SHA-256 beats MD5; between equals the first offered wins, since the
        server lists them in its order of preference. Challenges this client
        cannot answer are skipped.

        @raise UnsupportedChallenge: when none can be answered.
        """
        best: _Challenge | None = None
        for value in challenge_values:
            try:
                candidate = self._read(value, body)
            except UnsupportedChallenge:
                continue
            strength = _STRENGTH[candidate.algorithm.removesuffix("-sess")]
            if best is None or strength > _STRENGTH[best.algorithm.removesuffix("-sess")]:
                best = candidate
        if best is None:
            raise UnsupportedChallenge("no supported challenge")
        return self._answer(best, method, uri, body)

    def _answer(self, challenge: _Challenge, method: str, uri: str, body: bytes | None) -> str:
        """Build the credentials for a checked challenge."""
        base = challenge.algorithm.removesuffix("-sess")
        if self._password is not None:
            ha1 = compute_ha1(self.username, challenge.realm, self._password, base)
        else:
            ha1 = self._ha1[base]
        nc = cnonce = None
        if challenge.qop is not None:
            cnonce = self._random_bytes(16).hex()
            nc = f"{self._next_count(challenge.nonce):08x}"
        response = digest_response(
            algorithm=challenge.algorithm,
            ha1=ha1,
            method=method,
            uri=uri,
            nonce=challenge.nonce,
            qop=challenge.qop,
            nc=nc,
            cnonce=cnonce,
            body=body or b"",
        )
        params = {
            "username": self.username,
            "realm": challenge.realm,
            "nonce": challenge.nonce,
            "uri": uri,
            "response": response,
        }
        if challenge.algorithm_sent:
            params["algorithm"] = challenge.algorithm
        if challenge.opaque is not None:
            params["opaque"] = challenge.opaque
        if challenge.qop is not None and nc is not None and cnonce is not None:
            params.update(qop=challenge.qop, nc=nc, cnonce=cnonce)
        quoted = {"username", "realm", "nonce", "uri", "response", "opaque", "cnonce"}
        return format_auth_header("Digest", params, quoted=quoted)


# The server side lives in b2bua.sip.auth_server; re-exported here.
from b2bua.sip.auth_server import (  # noqa: E402
    AuthOutcome,
    AuthResult,
    DigestServer,
    FailureReason,
)
