"""The NAT plugin: OPTIONS keep-alives for NATed UDP phones, a STUN server,
and NAT detection of callers (counted).

Settings (C{[plugins.nat]}, every key optional)::

    [plugins.nat]
    ping_interval = 30        # seconds between keep-alive sweeps; 0 = off
    ping_failures = 2         # failed pings in a row that remove a binding
    ping_timeout = 5          # seconds a ping waits (at most ping_interval)
    pings_in_flight = 100     # most pings (and store reads) at once
    stun_listen = "udp:0.0.0.0:3478"   # a STUN server; "" (default) = none

What the keep-alives ping and when a binding goes: L{nat.keepalive}.  How
the keep-alive finds NATed bindings (L{Nat}'s C{discovery}): from the
core's C{b2bua_registered} notification when the core has it (only the
AORs that registered a NATed UDP contact, no timer while there are none),
else by reading every extension's bindings each sweep.  What the STUN
server answers: L{nat.stun}.  Reaching NATed phones at their source address
(and over their own connection) is the registrar's and local routing's
work; C{docs/nat.md} tells the whole story.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorUDP
from twisted.logger import Logger

from b2bua import hookspecs
from b2bua.core.location import normalise_aor
from b2bua.core.services import Services
from b2bua.hookspecs import hookimpl
from b2bua.sip.errors import ParseError, TransportError
from b2bua.sip.interfaces import Source
from b2bua.sip.message import Request, Response
from nat.detection import contact_reasons, detect
from nat.keepalive import KeepAlive, KeepAliveSettings, OptionsPinger
from nat.metrics import NatMetrics
from nat.stun import StunServer

__all__ = ["DIRECTORY", "NAME", "REGISTRATIONS", "STUN_PORT", "Nat", "NatSettings",
           "SettingsError", "parse_stun_listen", "read_settings"]

NAME = "nat"
_KEY = f"plugins.{NAME}"

#: The STUN port when C{stun_listen} names none (RFC 5389 9).
STUN_PORT = 3478

#: Discovery: every sweep reads every extension's bindings.
DIRECTORY = "directory"
#: Discovery: sweeps read the AORs that registered a NATed UDP contact.
REGISTRATIONS = "registrations"

#: Whether the core tells plugins of accepted REGISTERs (a notification
#: C{b2bua_registered(aor, request, source, response)}); without it the
#: keep-alive has to find NATed bindings by reading the directory's.
_REGISTERED_HOOK = hasattr(hookspecs, "b2bua_registered")

_log = Logger()

_NUMBERS: dict[str, type] = {"ping_interval": float, "ping_failures": int,
                             "ping_timeout": float, "pings_in_flight": int}
_KEYS = frozenset(_NUMBERS) | {"stun_listen"}


class SettingsError(ValueError):
    """A bad C{[plugins.nat]} table (the message names the key)."""


@dataclass(frozen=True)
class NatSettings:
    """The plugin's settings, checked.

    @ivar stun_listen: (host, port) of the STUN server, or C{None}.
    """

    ping_interval: float = 30.0
    ping_failures: int = 2
    ping_timeout: float = 5.0
    pings_in_flight: int = 100
    stun_listen: tuple[str, int] | None = None

    def keepalive(self) -> KeepAliveSettings | None:
        """The keep-alive's settings (C{None}: keep-alives are off)."""
        if not self.ping_interval:
            return None
        return KeepAliveSettings(self.ping_interval, self.ping_failures, self.ping_timeout,
                                 self.pings_in_flight)


def parse_stun_listen(text: str) -> tuple[str, int]:
    """Parse C{udp:HOST[:PORT]} (IPv6 in brackets; port 3478 by default, 0
    for any free one).  @raise SettingsError: naming the key."""
    def bad(why: str) -> SettingsError:
        return SettingsError(f"{_KEY}.stun_listen: {text!r}: {why} "
                             "(expected udp:HOST:PORT, e.g. \"udp:0.0.0.0:3478\")")

    proto, colon, rest = text.strip().partition(":")
    if not colon or proto.lower() != "udp":
        raise bad("only udp is served")
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise bad("bad IPv6 address")
        port_text = after[1:]
    else:
        host, _, port_text = rest.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise bad("HOST must be an IP address") from None
    if not port_text:
        return host, STUN_PORT
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise bad("bad port")
    return host, int(port_text)


def read_settings(table: Any) -> NatSettings:
    """Check the C{[plugins.nat]} table.  @raise SettingsError: naming the key."""
    if not isinstance(table, Mapping):
        raise SettingsError(f"{_KEY}: expected a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise SettingsError(f"{_KEY}.{unknown[0]}: unknown key")
    values: dict[str, Any] = {}
    for key, kind in _NUMBERS.items():
        if key not in table:
            continue
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                (kind is int and value != int(value)):
            what = "an integer" if kind is int else "a number"
            raise SettingsError(f"{_KEY}.{key}: expected {what}")
        values[key] = kind(value)
    settings = NatSettings(**values)
    if settings.ping_interval < 0:
        raise SettingsError(f"{_KEY}.ping_interval: expected 0 (off) or a number of seconds")
    if settings.ping_failures < 1:
        raise SettingsError(f"{_KEY}.ping_failures: expected at least 1")
    if settings.pings_in_flight < 1:
        raise SettingsError(f"{_KEY}.pings_in_flight: expected at least 1")
    if not settings.ping_timeout > 0 or (
            settings.ping_interval and settings.ping_timeout > settings.ping_interval):
        raise SettingsError(f"{_KEY}.ping_timeout: expected a positive number of seconds, "
                            "at most ping_interval")
    listen = table.get("stun_listen", "")
    if not isinstance(listen, str):
        raise SettingsError(f"{_KEY}.stun_listen: expected a string such as \"udp:0.0.0.0:3478\"")
    if listen.strip():
        settings = NatSettings(settings.ping_interval, settings.ping_failures,
                               settings.ping_timeout, settings.pings_in_flight,
                               parse_stun_listen(listen))
    return settings


class Nat:
    """The built-in NAT plugin (see the module doc).

    @param discovery: how the keep-alive finds NATed bindings:
        L{REGISTRATIONS} (the AORs L{registered} is told of, plus, at
        start-up, those already holding one) or L{DIRECTORY} (every
        extension's bindings, every sweep).  By default L{REGISTRATIONS}
        when the core has the C{b2bua_registered} notification, else
        L{DIRECTORY}.
    @ivar keepalive: the running keep-alive, if any.
    @ivar stun_port: the STUN server's listening port, if any.
    @ivar metrics: the counters (see L{nat.metrics}).
    """

    def __init__(self, discovery: str | None = None) -> None:
        if discovery is None:
            discovery = REGISTRATIONS if _REGISTERED_HOOK else DIRECTORY
        if discovery not in (DIRECTORY, REGISTRATIONS):
            raise ValueError(f"discovery must be {DIRECTORY!r} or {REGISTRATIONS!r}")
        self.discovery = discovery
        self.settings = NatSettings()
        self.keepalive: KeepAlive | None = None
        self.pinger: OptionsPinger | None = None
        self.stun_port: IListeningPort | None = None
        self.metrics: NatMetrics | None = None

    @hookimpl
    def b2bua_configure(self, services: Services, settings: dict[str, Any]) -> None:
        """Read the table, start the keep-alives and the STUN server."""
        self._stop_keepalive()
        self.settings = read_settings(settings.get(NAME, {}))
        self.metrics = NatMetrics.of(services.metrics.registry)
        self._start_keepalive(services)
        if self.settings.stun_listen is not None and self.stun_port is None:
            self.stun_port = self._listen(services, *self.settings.stun_listen)

    def _start_keepalive(self, services: Services) -> None:
        keepalive = self.settings.keepalive()
        if keepalive is None:
            return
        send = services.extra.get("send_request")
        local_address = services.extra.get("local_address")
        if not callable(send) or not callable(local_address):
            _log.warn("{key}: the service offers no way to send requests; "
                      "NATed phones are not pinged", key=_KEY)
            return
        directory = services.directory

        def aors() -> list[str]:
            return [normalise_aor(extension.aor) for extension in directory.extensions()]

        def owns(local: tuple[str, int] | None) -> bool:
            if local is None:
                return True
            every = services.extra.get("local_addresses")
            try:
                if callable(every):
                    return tuple(local) in {tuple(a) for a in every()}
                return tuple(local) == tuple(local_address("UDP"))
            except TransportError:
                return False

        self.pinger = OptionsPinger(services.clock, send, local_address, keepalive.timeout,
                                    user_agent=str(services.extra.get("user_agent") or "b2bua"))
        by_directory = self.discovery == DIRECTORY
        self.keepalive = KeepAlive(services.clock, services.location,
                                   aors if by_directory else None, self.pinger, keepalive,
                                   owns=owns, metrics=self.metrics)
        self.keepalive.start()
        if not by_directory:
            # bindings registered before a restart: read once, no timer
            self.keepalive.seed(aors()).addErrback(
                lambda f: _log.failure("keep-alive: start-up read of bindings failed", f))

    def registered(self, aor: str, request: Request, source: Source) -> None:
        """A REGISTER of C{aor} from C{source} was accepted: watch the AOR
        when a Contact of it is a NATed UDP one (and no Path says an edge
        proxy keeps the flow).  Only with L{REGISTRATIONS} discovery."""
        keepalive = self.keepalive
        if keepalive is None or self.discovery != REGISTRATIONS:
            return
        if source.transport.upper() != "UDP" or request.headers.get("Path") is not None:
            return
        try:
            uris = [na.uri for na in request.contact if not na.star]
        except ParseError:
            return
        if contact_reasons(uris, source.remote, source.transport):
            keepalive.watch(normalise_aor(aor))

    if _REGISTERED_HOOK:  # the core's notification, in releases that have it
        @hookimpl
        def b2bua_registered(self, aor: str, request: Request, source: Source,
                             response: Response) -> None:
            """An accepted REGISTER (see L{registered})."""
            if response.code == 200:
                self.registered(aor, request, source)

    def _listen(self, services: Services, host: str, port: int) -> IListeningPort:
        reactor = services.extra.get("reactor", services.clock)
        if not IReactorUDP.providedBy(reactor):
            raise SettingsError(f"{_KEY}.stun_listen: this service has no UDP reactor")
        metrics = self.metrics
        server = StunServer(on_result=metrics.stun_request if metrics is not None else None)
        try:
            listening: IListeningPort = reactor.listenUDP(port, server, interface=host)
        except CannotListenError as error:
            raise SettingsError(f"{_KEY}.stun_listen: cannot listen on udp {host} port "
                                f"{port}: {error.socketError}") from None
        _log.info("STUN server on udp {host} port {port}", host=host,
                  port=listening.getHost().port)
        return listening

    def _stop_keepalive(self) -> None:
        if self.keepalive is not None:
            self.keepalive.stop()
            self.keepalive = None
        if self.pinger is not None:
            self.pinger.stop()
            self.pinger = None

    @hookimpl
    def b2bua_call_received(self, call: Any, request: Request) -> None:
        """Count whether the caller is behind a NAT (and log why)."""
        source = getattr(getattr(call, "a_leg", None), "source", None)
        if source is None or self.metrics is None:
            return
        verdict = detect(request, source)
        self.metrics.call(verdict.behind_nat)
        if verdict:
            _log.debug("call {call_id} from {remote} is NATed: {reasons}",
                       call_id=getattr(call, "id", ""), remote=source.remote,
                       reasons=", ".join(verdict.reasons))

    @hookimpl
    def b2bua_unconfigure(self) -> Deferred[None] | None:
        """Stop the keep-alives and close the STUN port."""
        self._stop_keepalive()
        port, self.stun_port = self.stun_port, None
        if port is None:
            return None
        return maybeDeferred(port.stopListening)
