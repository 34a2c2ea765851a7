"""Outbound registration to vendors (RFC 3261 section 10.2).

A vendor that sends us calls on a dynamic address (or that simply wants it)
expects the switch to register with it like a phone.  L{OutboundRegistration}
does it for one vendor connection: it sends REGISTER, answers the digest
challenge, keeps the binding fresh before it expires, backs off when the
registrar fails, and removes the binding when stopped.
L{plugins.trunking.registration} builds one per connection, exports the
metrics and runs it as a plugin.

Rules (the reasons are in C{docs/outbound-registration.md}):

  - one Call-ID and From tag for the life of a registration; the CSeq
    grows by one with every REGISTER, refreshes and the removal included
    (10.2.4);
  - a 401/407 is answered with the connection's credentials (MD5 or
    SHA-256, C{qop=auth}, L{DigestClient}); a second challenge in a row
    fails the attempt, unless it says C{stale=true}; refreshes send the
    last challenge's credentials at once;
  - the expiry granted is our Contact's C{expires} in the 2xx, else its
    C{Expires} header, else what we asked; the refresh goes out at the later
    of half of it and C{margin} seconds before it (L{refresh_delay});
  - C{423 Interval Too Brief} raises the asked expiry to C{Min-Expires} and
    tries again at once;
  - any other failure (a final response, a timeout, a transport error)
    schedules a retry after L{retry_delay}: exponential, with jitter, capped,
    and never sooner than a C{Retry-After};
  - stopping sends the REGISTER with C{Expires: 0} (after the answer to a
    REGISTER still pending: 10.2 allows one at a time) and waits for its
    answer, at most C{settings.unregister_timeout} seconds.
"""

from __future__ import annotations

import enum
import os
import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from b2bua.sip.auth import DigestClient, UnsupportedChallenge, parse_auth_header
from b2bua.sip.errors import ParseError, TransportError
from b2bua.sip.headers import NameAddress
from b2bua.sip.timers import Table, TimedMachine
from plugins.trunking.uac import build_request, contact_uri, retry_after, timestamp

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from b2bua.sip.interfaces import Target
    from b2bua.sip.message import Response
    from plugins.trunking.uac import RequestSender

__all__ = [
    "OutboundRegistration",
    "RegistrationConfig",
    "RegistrationSettings",
    "RegistrationState",
    "refresh_delay",
    "retry_delay",
]

_log = Logger()


def refresh_delay(granted: float, margin: float) -> float:
    """Seconds after a 2xx when the binding is refreshed: the later of half
    the granted expiry and C{margin} seconds before it."""
    return max(granted / 2, granted - margin)


def retry_delay(failures: int, base: float, cap: float, jitter: float) -> float:
    """Seconds before the next attempt after C{failures} failures in a row.

    C{base * 2**(failures - 1)}, capped at C{cap}, then reduced by up to half
    ("equal jitter") by C{jitter} in [0, 1): C{jitter} 0 gives half the
    exponential value, values near 1 nearly all of it.
    """
    exponential = min(cap, base * 2 ** min(max(failures - 1, 0), 32))
    return exponential * (0.5 + 0.5 * jitter)


@dataclass(frozen=True)
class RegistrationSettings:
    """Timing knobs of a registration.

    @ivar expires: the expiry asked for, in seconds.
    @ivar margin: refresh this many seconds before expiry (at half the
        expiry for short ones; L{refresh_delay}).
    @ivar retry_base: the first retry delay after a failure.
    @ivar retry_max: the cap of the retry delay.
    @ivar max_expires: the largest expiry a C{423}'s Min-Expires may
        impose; a larger one is a failure.
    @ivar max_retry_after: the cap of a registrar's Retry-After.
    @ivar unregister_timeout: how long stopping waits for the answer to
        the removal.
    """

    expires: int = 3600
    margin: float = 60.0
    retry_base: float = 5.0
    retry_max: float = 600.0
    max_expires: int = 86400
    max_retry_after: float = 3600.0
    unregister_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.expires <= self.max_expires:
            raise ValueError(f"expires must be 1..{self.max_expires}, not {self.expires}")
        for name in ("margin", "retry_base", "retry_max", "max_retry_after",
                     "unregister_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.retry_max < self.retry_base:
            raise ValueError("retry_max must not be smaller than retry_base")


@dataclass(frozen=True)
class RegistrationConfig:
    """One registration: who we are at which registrar.

    @ivar connection_id: the vendor connection.
    @ivar name: its name (for logs and the API).
    @ivar target: where the REGISTERs go (C{None} only with a C{problem}).
    @ivar registrar: the Request-URI (C{sip:vendor.example}).
    @ivar aor: the address-of-record registered (To and From).
    @ivar username: the digest username.
    @ivar password: the password, or C{None} (then C{ha1}, or no
        credentials at all: a challenge is then a failure).
    @ivar ha1: stored HA1 values by algorithm (C{"MD5"}, C{"SHA-256"}).
    @ivar realm: the only realm credentials are given to (required with
        C{ha1}); empty: any realm.
    @ivar contact_user: the user part of our Contact.
    @ivar contact_address: the (host, port) our Contact advertises instead
        of our listener's (a public address in front of NAT).
    @ivar instance_id: the C{+sip.instance} of our Contact (RFC 5626),
        C{urn:uuid:...}; stable across restarts so that a new binding
        replaces the old one.
    @ivar problem: when set, the registration cannot run (a connection row
        that cannot be used); it stays C{failed} with this reason.
    """

    connection_id: int
    name: str
    target: Target | None
    registrar: str
    aor: str
    username: str
    password: str | None = None
    ha1: dict[str, str] = field(default_factory=dict)
    realm: str = ""
    contact_user: str = ""
    contact_address: tuple[str, int] | None = None
    instance_id: str = ""
    settings: RegistrationSettings = RegistrationSettings()
    problem: str | None = None


class RegistrationState(enum.StrEnum):
    """States of L{OutboundRegistration}."""

    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERING = "unregistering"


class _Attempt:
    """The owner of one REGISTER's client transaction."""

    __slots__ = ("expires", "registration")

    def __init__(self, registration: OutboundRegistration, expires: int) -> None:
        self.registration = registration
        self.expires = expires

    def response_received(self, response: Response, transaction: object) -> None:
        """A response to this REGISTER."""
        if response.code >= 200:
            self.registration._final(self, response)

    def transaction_failed(self, transaction: object, error: Exception) -> None:
        """No final response came (timeout, transport error)."""
        self.registration._no_answer(self, error)


class OutboundRegistration(TimedMachine):
    """The registration of one vendor connection.

    States:
      - C{unregistered}: no binding (before L{start}, after L{stop}).
      - C{registering}: a REGISTER is pending (first one, refresh, retry or
        the answer to a challenge or a 423).
      - C{registered}: the registrar keeps our binding until C{expires_at};
        the refresh timer runs.
      - C{failed}: the last attempt failed; the retry timer runs (none for a
        registration with a C{problem}).
      - C{unregistering}: L{stop} was called; the REGISTER with
        C{Expires: 0} is pending (or goes once the pending one is answered).

    @ivar failures: failed attempts in a row.
    @ivar last_code: the code of the last final response (C{None} after a
        timeout or a transport error).
    @ivar last_reason: its reason phrase, or what went wrong.
    @ivar expires_at: when the binding runs out (clock seconds), if any.
    @ivar next_attempt_at: when the next REGISTER goes (refresh or retry).
    """

    log = Logger()

    State = RegistrationState
    initial = RegistrationState.UNREGISTERED
    terminal = RegistrationState.UNREGISTERED
    events = frozenset({"start", "invalid", "stop", "drop", "refresh", "retry", "accepted",
                        "challenged", "too_brief", "failed", "removed", "give_up"})

    def __init__(self, clock: IReactorTime, sender: RequestSender, config: RegistrationConfig,
                 *, user_agent: str = "b2bua",
                 random_bytes: Callable[[int], bytes] = os.urandom,
                 random: Callable[[], float] = _random.random,
                 on_change: Callable[[OutboundRegistration, RegistrationState], Any] | None
                 = None) -> None:
        """
        @param clock: runs the refresh, retry and stop timers.
        @param sender: sends the REGISTERs (L{RequestSender}).
        @param random_bytes: the source of the Call-ID, tag and cnonces.
        @param random: jitter of the retry delay, in [0, 1).
        @param on_change: called with the registration and its previous state
            after every change of state.
        """
        super().__init__(clock)
        self.config = config
        self.settings = config.settings
        self._sender = sender
        self._user_agent = user_agent
        self._random = random
        self._on_change = on_change
        #: why this registration cannot run, if it cannot
        self.problem = config.problem
        self._digest: DigestClient | None = None
        if self.problem is None and (config.password is not None or config.ha1):
            try:
                self._digest = DigestClient(
                    config.username, config.password, ha1=config.ha1 or None,
                    realm=config.realm or None, random_bytes=random_bytes)
            except ValueError as error:
                self.problem = f"credentials: {error}"
        self.call_id = f"{random_bytes(12).hex()}@b2bua"
        self.from_tag = random_bytes(6).hex()
        self.cseq = 0
        self.requested_expires = config.settings.expires
        self.granted_expires: int | None = None
        self.failures = 0
        self.last_code: int | None = None
        self.last_reason = ""
        self.expires_at: float | None = None
        self.next_attempt_at: float | None = None
        self.contact = ""
        self._contact_uri = ""
        self._pending: _Attempt | None = None
        self._challenges = 0
        #: (credentials header name, its value) for the next REGISTER
        self._next_auth: tuple[str, str] | None = None
        #: (challenge kind, challenge values) to answer at once next time
        self._last_challenge: tuple[int, list[str]] | None = None
        self._stopped: list[Deferred[None]] = []

    def __repr__(self) -> str:
        return f"<OutboundRegistration {self.config.connection_id} {self.state}>"

    # --- public ------------------------------------------------------------

    def start(self) -> None:
        """Register (from C{unregistered}; ignored in any other state)."""
        self._fire("invalid" if self.problem else "start")

    def stop(self) -> Deferred[None]:
        """Remove the binding (C{Expires: 0}) and stop; fires once
        C{unregistered}: when the removal is answered, or at the latest
        C{unregister_timeout} seconds after this call."""
        if self.state is RegistrationState.UNREGISTERED:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stopped.append(d)
        bound = self.expires_at is not None and self.expires_at > self._clock.seconds()
        self._fire("drop" if self.state is RegistrationState.FAILED and not bound else "stop")
        return d

    @property
    def registered(self) -> bool:
        """True in C{registered}."""
        return self.state is RegistrationState.REGISTERED

    def status(self) -> dict[str, Any]:
        """The registration as JSON-ready values (for the API)."""
        now = self._clock.seconds()
        config = self.config
        target = config.target
        return {
            "connection": config.connection_id,
            "name": config.name,
            "state": str(self.state),
            "aor": config.aor,
            "registrar": config.registrar,
            "target": None if target is None
            else f"{target.transport.lower()}:{target.host}:{target.port}",
            "contact": self.contact or None,
            "requested_expires": self.requested_expires,
            "granted_expires": self.granted_expires,
            "expires_at": timestamp(self.expires_at),
            "expires_in": None if self.expires_at is None
            else max(0, round(self.expires_at - now)),
            "next_attempt_at": timestamp(self.next_attempt_at),
            "failures": self.failures,
            "last_code": self.last_code,
            "last_reason": self.last_reason or None,
            "cseq": self.cseq,
        }

    # --- transitions ----------------------------------------------------------

    def _step(self, event: str, args: tuple[object, ...]) -> None:
        old = self.state
        super()._step(event, args)
        if self.state is not old and self._on_change is not None:
            try:
                self._on_change(self, old)  # type: ignore[arg-type]
            except Exception:
                _log.failure("registration observer failed")

    def _register(self) -> None:
        self.next_attempt_at = None
        self._send(self.requested_expires)

    def _unregister(self, *_: object) -> None:
        self._cancel_timer("refresh")
        self._cancel_timer("retry")
        self.next_attempt_at = None
        if "give_up" not in self.pending_timers:
            self._start_timer("give_up", self.settings.unregister_timeout)
        if self._pending is None:  # else the REGISTER in flight is answered first (10.2)
            self._send(0)

    def _bound(self, granted: int) -> None:
        now = self._clock.seconds()
        self.failures = 0
        self.granted_expires = granted
        self.expires_at = now + granted
        delay = refresh_delay(granted, self.settings.margin)
        self.next_attempt_at = now + delay
        self._start_timer("refresh", delay)
        self.log.info("registered {name} at {registrar} for {granted}s",
                      name=self.config.name, registrar=self.config.registrar, granted=granted)

    def _failed(self, retry_after: float | None = None) -> None:
        self.failures += 1
        delay = retry_delay(self.failures, self.settings.retry_base, self.settings.retry_max,
                            self._random())
        if retry_after:
            delay = max(delay, min(retry_after, self.settings.max_retry_after))
        self.next_attempt_at = self._clock.seconds() + delay
        self._start_timer("retry", delay)
        self.log.warn("registration of {name} failed ({code} {reason}); retry in {delay:.0f}s",
                      name=self.config.name, code=self.last_code, reason=self.last_reason,
                      delay=delay)

    def _invalid(self) -> None:
        self.last_reason = self.problem or ""
        self.failures += 1

    def _removed(self) -> None:
        self.expires_at = None
        self.granted_expires = None

    def _terminated(self) -> None:
        self.next_attempt_at = None
        self.expires_at = None
        self._pending = None
        stopped, self._stopped = self._stopped, []
        for d in stopped:
            d.callback(None)

    S = RegistrationState
    table: Table = {
        (S.UNREGISTERED, "start"): (S.REGISTERING, _register),
        (S.UNREGISTERED, "invalid"): (S.FAILED, _invalid),
        (S.REGISTERING, "accepted"): (S.REGISTERED, _bound),
        (S.REGISTERING, "challenged"): (S.REGISTERING, _register),
        (S.REGISTERING, "too_brief"): (S.REGISTERING, _register),
        (S.REGISTERING, "failed"): (S.FAILED, _failed),
        (S.REGISTERING, "stop"): (S.UNREGISTERING, _unregister),
        (S.REGISTERED, "refresh"): (S.REGISTERING, _register),
        (S.REGISTERED, "stop"): (S.UNREGISTERING, _unregister),
        (S.FAILED, "retry"): (S.REGISTERING, _register),
        (S.FAILED, "stop"): (S.UNREGISTERING, _unregister),
        (S.FAILED, "drop"): (S.UNREGISTERED, None),
        (S.UNREGISTERING, "accepted"): (S.UNREGISTERING, _unregister),
        (S.UNREGISTERING, "challenged"): (S.UNREGISTERING, _unregister),
        (S.UNREGISTERING, "too_brief"): (S.UNREGISTERING, _unregister),
        (S.UNREGISTERING, "failed"): (S.UNREGISTERING, _unregister),
        (S.UNREGISTERING, "removed"): (S.UNREGISTERED, _removed),
        (S.UNREGISTERING, "give_up"): (S.UNREGISTERED, None),
    }
    del S

    # --- sending ---------------------------------------------------------------

    def _send(self, expires: int) -> None:
        """Send one REGISTER asking for C{expires} seconds."""
        config = self.config
        target = config.target
        assert target is not None  # a config without one has a problem: never sent
        attempt = _Attempt(self, expires)
        self._pending = attempt
        try:
            local = config.contact_address or self._sender.local_address(target.transport)
            uri = contact_uri(local, target.transport, config.contact_user)
            self._contact_uri = str(uri)
            contact = NameAddress(uri)
            if config.instance_id:
                contact.params["+sip.instance"] = f'"<{config.instance_id}>"'
            self.contact = str(contact)
            self.cseq += 1
            headers = [("Contact", self.contact), ("Expires", str(expires))]
            authorization = self._next_auth or self._preemptive(config.registrar)
            self._next_auth = None
            if authorization is not None:
                headers.append(authorization)
            headers.append(("Content-Length", "0"))
            request = build_request(
                "REGISTER", config.registrar, from_=f"<{config.aor}>;tag={self.from_tag}",
                to=f"<{config.aor}>", call_id=self.call_id, cseq=self.cseq, headers=headers,
                user_agent=self._user_agent)
            self._sender.send_request(request, target, attempt)
        except (TransportError, ValueError) as error:
            self._no_answer(attempt, error)

    def _preemptive(self, uri: str) -> tuple[str, str] | None:
        """Credentials for the last challenge, sent with a fresh REGISTER so
        that a refresh needs no second round trip."""
        if self._last_challenge is None or self._digest is None:
            return None
        code, values = self._last_challenge
        try:
            value = self._digest.authorize_strongest("REGISTER", uri, values)
        except UnsupportedChallenge:
            return None
        return ("Proxy-Authorization" if code == 407 else "Authorization", value)

    # --- outcomes --------------------------------------------------------------

    def _final(self, attempt: _Attempt, response: Response) -> None:
        """Classify a final response into one event."""
        if attempt is not self._pending:
            return
        self._pending = None
        code = response.code
        self.last_code, self.last_reason = code, response.reason
        if code in (401, 407):
            authorization = self._answer(response)
            if authorization is not None:
                self._next_auth = authorization
                self._fire("challenged")
                return
        self._challenges = 0
        if attempt.expires == 0:
            self._fire("removed")
        elif 200 <= code < 300:
            granted = self._granted(response, attempt.expires)
            if granted > 0:
                self._fire("accepted", granted)
            else:
                self.last_reason = "the registrar kept no binding"
                self._fire("failed")
        elif code == 423 and self._too_brief(response, attempt.expires):
            self._fire("too_brief")
        elif code in (401, 407):
            self._fire("failed")
        else:
            self._fire("failed", retry_after(response))

    def _no_answer(self, attempt: _Attempt, error: Exception) -> None:
        """The REGISTER got no final response (or could not be sent)."""
        if attempt is not self._pending:
            return
        self._pending = None
        self._challenges = 0
        self.last_code = None
        self.last_reason = str(error) or type(error).__name__
        self._fire("removed" if attempt.expires == 0 else "failed")

    def _answer(self, response: Response) -> tuple[str, str] | None:
        """Credentials for a 401/407, or C{None} when it must not be answered
        (a second challenge in a row without C{stale=true}, a third one, or
        one the credentials cannot answer: C{last_reason} says why)."""
        self._challenges += 1
        proxy = response.code == 407
        values = response.headers.get_all("Proxy-Authenticate" if proxy else "WWW-Authenticate")
        if self._challenges > 2 or (self._challenges == 2 and not _stale(values)):
            self.last_reason = "credentials refused"
            return None
        if self._digest is None:
            self.last_reason = "challenged, but no credentials are configured"
            return None
        try:
            value = self._digest.authorize_strongest("REGISTER", self.config.registrar, values)
        except UnsupportedChallenge as error:
            self.last_reason = f"cannot answer the challenge: {error.reason}"
            return None
        self._last_challenge = (response.code, values)
        return ("Proxy-Authorization" if proxy else "Authorization", value)

    def _granted(self, response: Response, asked: int) -> int:
        """The expiry the registrar granted our Contact (see module doc)."""
        try:
            for contact in response.contact:
                if self._is_ours(contact) and "expires" in contact.params:
                    value = (contact.params.get("expires") or "").strip()
                    if value.isdigit():
                        return int(value)
            if response.expires is not None:
                return response.expires
        except ParseError:
            pass
        return asked

    def _is_ours(self, contact: NameAddress) -> bool:
        instance = self.config.instance_id
        if instance and (contact.params.get("+sip.instance") or "").strip('"<>') == instance:
            return True
        return str(contact.uri) == self._contact_uri

    def _too_brief(self, response: Response, asked: int) -> bool:
        """Raise the asked expiry to a 423's Min-Expires, if that makes sense."""
        value = (response.headers.get("Min-Expires") or "").strip()
        if not value.isdigit() or not asked < int(value) <= self.settings.max_expires:
            self.last_reason = f"Min-Expires {value or 'missing'} cannot be met"
            return False
        self.requested_expires = int(value)
        return True


def _stale(values: list[str]) -> bool:
    """True when a challenge says C{stale=true} (a new nonce, same password)."""
    for value in values:
        try:
            _, params = parse_auth_header(value)
        except ParseError:
            continue
        if params.get("stale", "").lower() == "true":
            return True
    return False
