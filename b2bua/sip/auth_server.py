"""Digest authentication, server side (RFC 3261 22, RFC 7616, RFC 8760).

L{DigestServer} issues stateless nonces (issue time, random bytes and an
HMAC under a secret the cluster shares) and checks credentials against the
stored HA1 values.  The only state is a bounded nonce-count table that
rejects replays.  The header codec and the digest calculation are in
L{b2bua.sip.auth}.
"""

from __future__ import annotations

import base64
import enum
import heapq
import hmac
import os
import string
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from b2bua.sip.auth import (
    _canonical_algorithm,
    _hash,
    digest_response,
    format_auth_header,
    parse_auth_header,
)
from b2bua.sip.errors import ParseError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime


class AuthOutcome(enum.Enum):
    """What the caller of L{DigestServer.verify} does next.

    @cvar OK: let the request through as the authenticated user.
    @cvar STALE: answer 401/407 with L{DigestServer.challenge}C{(stale=True)}:
        the password was right but the nonce is too old.
    @cvar FAILED: answer 401/407 with a fresh L{DigestServer.challenge}().
    """

    OK = "ok"
    STALE = "stale"
    FAILED = "failed"


class FailureReason(enum.StrEnum):
    """Why credentials failed: a bounded set, fit for a metric label.

    Internal only: every failure leads to the same challenge on the wire.
    """

    MALFORMED = "malformed"
    REALM = "realm"
    ALGORITHM = "algorithm"
    QOP = "qop"
    URI_MISMATCH = "uri_mismatch"
    BAD_NONCE = "bad_nonce"
    UNKNOWN_USER = "unknown_user"
    BAD_RESPONSE = "bad_response"
    REPLAY = "replay"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The verdict of L{DigestServer.verify}.

    @ivar outcome: see L{AuthOutcome}.
    @ivar username: the authenticated username, set only when C{OK}.
    @ivar reason: why it failed, set only when C{FAILED}.
    @ivar claimed_username: the username the credentials claimed, for logs;
        never proof of identity.
    @ivar algorithm: the algorithm the credentials used, when known.
    """

    outcome: AuthOutcome
    username: str | None = None
    reason: FailureReason | None = None
    claimed_username: str | None = None
    algorithm: str | None = None

    @property
    def ok(self) -> bool:
        """C{True} when the credentials are good."""
        return self.outcome is AuthOutcome.OK

    @property
    def stale(self) -> bool:
        """C{True} when the caller must re-challenge with C{stale=true}."""
        return self.outcome is AuthOutcome.STALE


LookupHA1 = Callable[[str, str, str], str | None]

_NONCE_MAC_LABEL = b"b2bua digest nonce\x00"
_OPAQUE_LABEL = b"b2bua digest opaque\x00"
_DUMMY_LABEL = b"b2bua digest dummy\x00"
_NONCE_RANDOM = 12
_NONCE_MAC = 16
_NONCE_CHARS = 48  # base64url of 8 + 12 + 16 bytes, no padding needed
_BASE64URL = frozenset(string.ascii_letters + string.digits + "-_")
_LHEX = frozenset("0123456789abcdefABCDEF")


class _NonceCounts:
    """The highest nonce count seen per (nonce, username), bounded.

    An entry lives as long as its nonce: once a nonce is older than the
    lifetime it is answered "stale" before this table is asked, so entries
    are pruned on the clock. When the hard cap forces an eviction, the
    newest evicted issue time becomes a floor: an unknown nonce issued at or
    before it may have been evicted, so it is refused as stale rather than
    accepted afresh. Memory pressure thus costs extra challenges, never a
    replay window.
    """

    def __init__(self, lifetime: float, max_entries: int) -> None:
        self._lifetime = lifetime
        self._max_entries = max_entries
        self._highest: dict[tuple[str, str], int] = {}
        self._by_issue: list[tuple[float, tuple[str, str]]] = []
        self._floor = float("-inf")

    def __len__(self) -> int:
        return len(self._highest)

    def prune(self, now: float) -> None:
        """Forget the entries whose nonce is older than the lifetime."""
        while self._by_issue and now - self._by_issue[0][0] > self._lifetime:
            _, key = heapq.heappop(self._by_issue)
            del self._highest[key]

    def record(
        self, key: tuple[str, str], issued: float, nc: int
    ) -> Literal["ok", "replay", "evicted"]:
        """Accept C{nc} if it is higher than any seen for C{key}, and remember it."""
        seen = self._highest.get(key)
        if seen is not None:
            if nc <= seen:
                return "replay"
            self._highest[key] = nc
            return "ok"
        if issued <= self._floor:
            return "evicted"
        if len(self._highest) >= self._max_entries:
            evicted_issue, evicted = heapq.heappop(self._by_issue)
            del self._highest[evicted]
            self._floor = max(self._floor, evicted_issue)
            if issued <= self._floor:
                return "evicted"
        self._highest[key] = nc
        heapq.heappush(self._by_issue, (issued, key))
        return "ok"


def _normalise_uri(uri: str) -> str:
    """Trim blanks and angle brackets and lower-case the URI scheme."""
    uri = uri.strip()
    if uri.startswith("<") and uri.endswith(">"):
        uri = uri[1:-1].strip()
    scheme, colon, rest = uri.partition(":")
    return f"{scheme.lower()}{colon}{rest}"


class DigestServer:
    """Challenges requests and checks their digest credentials, for one realm.

    Nonces are stateless (see L{challenge}); the only state is the bounded
    nonce-count table that rejects replays on this node. One instance per
    realm; every node of a cluster configured with the same C{secret}
    accepts the nonces of the others.

    @ivar realm: the protection realm, sent in every challenge.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        clock: IReactorTime,
        nonce_lifetime: float = 300.0,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        *,
        previous_secrets: Sequence[bytes] = (),
        max_tracked_nonces: int = 100_000,
        clock_skew: float = 10.0,
        random_bytes: Callable[[int], bytes] = os.urandom,
        check_uri: bool = True,
    ) -> None:
        """
        @param secret: the HMAC key shared by the nodes of a cluster.
        @param clock: the only source of time; C{clock.seconds()} is used.
        @param nonce_lifetime: seconds a nonce stays fresh.
        @param algorithms: offered in this order of preference (RFC 8760:
            strongest first); any of C{MD5}, C{MD5-sess}, C{SHA-256},
            C{SHA-256-sess}.
        @param previous_secrets: older keys whose nonces are still accepted,
            so the secret can be rotated without a burst of failures.
        @param max_tracked_nonces: hard cap on the nonce-count table.
        @param clock_skew: seconds a nonce may seem to come from the future,
            for nodes whose clocks disagree.
        @param check_uri: require the credentials' C{uri} to equal the
            Request-URI (RFC 3261 22.4).  Some clients (sipp among them)
            digest another URI; turning this off accepts them.
        @raise ValueError: for an empty secret or realm, a non-positive
            lifetime or cap, or an unsupported algorithm.
        """
        if not secret or not realm:
            raise ValueError("realm and secret must not be empty")
        if nonce_lifetime <= 0 or max_tracked_nonces <= 0:
            raise ValueError("nonce_lifetime and max_tracked_nonces must be positive")
        canonical = [_canonical_algorithm(name) for name in algorithms]
        if not canonical or None in canonical:
            raise ValueError("algorithms must be a non-empty list of supported algorithms")
        self.realm = realm
        self._secrets = (secret, *previous_secrets)
        self._clock = clock
        self._lifetime = float(nonce_lifetime)
        self._algorithms: tuple[str, ...] = tuple(name for name in canonical if name)
        self._clock_skew = clock_skew
        self._random_bytes = random_bytes
        self._check_uri = check_uri
        self._counts = _NonceCounts(self._lifetime, max_tracked_nonces)
        self._dummy_ha1 = {
            base: _hash(base, hmac.new(secret, _DUMMY_LABEL + realm.encode(), "sha256").digest())
            for base in ("MD5", "SHA-256")
        }

    @property
    def tracked_nonces(self) -> int:
        """How many (nonce, username) pairs the replay table holds: a gauge."""
        return len(self._counts)

    # -- nonces ----------------------------------------------------------

    def _mac(self, secret: bytes, payload: bytes) -> bytes:
        """Authenticate a nonce payload, bound to this realm."""
        message = _NONCE_MAC_LABEL + self.realm.encode("utf-8") + b"\x00" + payload
        return hmac.new(secret, message, "sha256").digest()[:_NONCE_MAC]

    def _opaque(self, secret: bytes, nonce: str) -> str:
        """Derive the C{opaque} value that goes with a nonce."""
        tag = hmac.new(secret, _OPAQUE_LABEL + nonce.encode("ascii"), "sha256").digest()[:12]
        return base64.urlsafe_b64encode(tag).decode("ascii")

    def _new_nonce(self) -> str:
        """Issue a nonce: base64url(issued milliseconds | random | HMAC)."""
        issued_ms = max(0, int(self._clock.seconds() * 1000))
        payload = struct.pack(">Q", issued_ms) + self._random_bytes(_NONCE_RANDOM)
        raw = payload + self._mac(self._secrets[0], payload)
        return base64.urlsafe_b64encode(raw).decode("ascii")

    def _open_nonce(self, nonce: str) -> tuple[float, bytes] | None:
        """Check a nonce's HMAC against every known secret.

        @return: its issue time in seconds and the secret that made it, or
            C{None} when it is not one of ours.
        """
        if len(nonce) != _NONCE_CHARS or not set(nonce) <= _BASE64URL:
            return None
        raw = base64.urlsafe_b64decode(nonce)
        payload, mac = raw[:-_NONCE_MAC], raw[-_NONCE_MAC:]
        for secret in self._secrets:
            if hmac.compare_digest(mac, self._mac(secret, payload)):
                return struct.unpack(">Q", payload[:8])[0] / 1000.0, secret
        return None

    # -- the two operations ----------------------------------------------

    def challenge(self, stale: bool = False) -> list[str]:
        """Build the C{WWW-Authenticate} (or C{Proxy-Authenticate}) values.

        @param stale: add C{stale=true}, after a L{AuthOutcome.STALE} result.
        @return: one value per configured algorithm, in order of preference,
            each with its own fresh nonce, C{opaque} and C{qop="auth"}.
        """
        values = []
        for algorithm in self._algorithms:
            nonce = self._new_nonce()
            params = {
                "realm": self.realm,
                "nonce": nonce,
                "opaque": self._opaque(self._secrets[0], nonce),
                "algorithm": algorithm,
                "qop": "auth",
            }
            if stale:
                params["stale"] = "true"
            values.append(format_auth_header("Digest", params))
        return values

    def verify(
        self,
        method: str,
        request_uri: str,
        header_value: str,
        lookup_ha1: LookupHA1,
        body: bytes = b"",
    ) -> AuthResult:
        """Check an C{Authorization} (or C{Proxy-Authorization}) value.

        Never raises for bad input. An unknown user is checked against a
        dummy HA1, so that it costs the same as a wrong password; both give
        C{FAILED} and the caller answers both with the same fresh challenge.
        Credentials without C{qop} (RFC 2069) are refused with reason C{qop}.

        @param method: the request's method, as in its request line.
        @param request_uri: the Request-URI, to match the C{uri} parameter.
        @param lookup_ha1: C{lookup_ha1(username, realm, algorithm)} returns
            the stored HA1 hex for the base algorithm (C{"MD5"} or
            C{"SHA-256"}, also for the C{-sess} variants), or C{None} for an
            unknown user.
        @param body: the message body, hashed for C{qop=auth-int}.
        """
        now = self._clock.seconds()
        self._counts.prune(now)
        try:
            scheme, params = parse_auth_header(header_value)
        except ParseError:
            return self._failed(FailureReason.MALFORMED)
        if scheme.lower() != "digest" or not all(
            name in params for name in ("username", "realm", "nonce", "uri", "response")
        ):
            return self._failed(FailureReason.MALFORMED, params.get("username"))
        username = params["username"]
        if params["realm"] != self.realm:
            return self._failed(FailureReason.REALM, username)
        algorithm = _canonical_algorithm(params.get("algorithm", "MD5"))
        if algorithm is None or algorithm not in self._algorithms:
            return self._failed(FailureReason.ALGORITHM, username)
        qop = params.get("qop", "").lower()
        if qop not in ("auth", "auth-int"):
            return self._failed(FailureReason.QOP, username, algorithm)
        nc, cnonce = params.get("nc", ""), params.get("cnonce")
        if len(nc) != 8 or not set(nc) <= _LHEX or int(nc, 16) == 0 or not cnonce:
            return self._failed(FailureReason.MALFORMED, username, algorithm)
        if self._check_uri and _normalise_uri(params["uri"]) != _normalise_uri(request_uri):
            return self._failed(FailureReason.URI_MISMATCH, username, algorithm)
        nonce = params["nonce"]
        opened = self._open_nonce(nonce)
        if opened is None:
            return self._failed(FailureReason.BAD_NONCE, username, algorithm)
        issued, secret = opened
        opaque = params.get("opaque")
        if issued - now > self._clock_skew or (
            opaque is not None
            and not hmac.compare_digest(
                opaque.encode("utf-8"), self._opaque(secret, nonce).encode("ascii")
            )
        ):
            return self._failed(FailureReason.BAD_NONCE, username, algorithm)

        base = algorithm.removesuffix("-sess")
        ha1 = lookup_ha1(username, self.realm, base)
        known = ha1 is not None
        expected = digest_response(
            algorithm=algorithm,
            ha1=ha1 if ha1 is not None else self._dummy_ha1[base],
            method=method,
            uri=params["uri"],
            nonce=nonce,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        matches = hmac.compare_digest(
            expected.encode("ascii"), params["response"].lower().encode("utf-8")
        )
        if not known:
            return self._failed(FailureReason.UNKNOWN_USER, username, algorithm)
        if not matches:
            return self._failed(FailureReason.BAD_RESPONSE, username, algorithm)
        if now - issued > self._lifetime:
            return AuthResult(AuthOutcome.STALE, claimed_username=username, algorithm=algorithm)
        verdict = self._counts.record((nonce, username), issued, int(nc, 16))
        if verdict == "replay":
            return self._failed(FailureReason.REPLAY, username, algorithm)
        if verdict == "evicted":
            return AuthResult(AuthOutcome.STALE, claimed_username=username, algorithm=algorithm)
        return AuthResult(
            AuthOutcome.OK, username=username, claimed_username=username, algorithm=algorithm
        )

    @staticmethod
    def _failed(
        reason: FailureReason, username: str | None = None, algorithm: str | None = None
    ) -> AuthResult:
        """Build a C{FAILED} result."""
        return AuthResult(
            AuthOutcome.FAILED, reason=reason, claimed_username=username, algorithm=algorithm
        )


# --------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------
