"""Outbound registration to vendors: one L{OutboundRegistration} per
vendor connection that asks for it, their state for the API and metrics,
and the plugin that runs them.

Which connections register: those whose row says C{register} and those
listed under C{[plugins.trunk_registration.connections]} (by connection
id; C{register = false} there opts a row out).  Each registers with the
connection's C{auth_username}, C{auth_realm} and stored C{auth_ha1} (MD5),
or with a C{password} given in its settings table, which also allows
SHA-256 challenges; for C{register_expires} seconds, at its C{registrar}
(C{host:port}; empty: its C{address})::

    [plugins.trunk_registration]
    expires = 3600                  # asked for when the row says nothing
    margin = 60                     # refresh this long before expiry
    retry_base = 5                  # first retry delay; doubles per failure
    retry_max = 600                 # cap of the retry delay
    instance_id = "urn:uuid:..."    # our Contact's +sip.instance
    contact_address = "203.0.113.7:5060"   # advertise this, not the listener

    [plugins.trunk_registration.connections.42]
    aor = "sip:+15551230000@vendor.example"   # default sip:USERNAME@HOST
    request_uri = "sip:vendor.example"        # default sip:REGISTRAR (or ADDRESS)
    password = "..."                          # default: the stored HA1

L{RegistrationManager} holds the registrations: L{RegistrationManager.update}
reconciles them with the connection rows (new ones register, removed ones
un-register, changed ones un-register and then register anew),
L{RegistrationManager.status} gives them as JSON-ready dicts, and the
metrics C{b2bua_trunk_registration_state{connection}} (1 when registered)
and C{b2bua_trunk_registration_failures_total{connection}} follow them.
"""

from __future__ import annotations

import os
import random as _random
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from b2bua.hookspecs import hookimpl
from b2bua.sip.errors import ParseError
from b2bua.sip.uri import format_host, parse_uri, split_hostport
from plugins.trunking.registration_client import (
    OutboundRegistration,
    RegistrationConfig,
    RegistrationSettings,
    RegistrationState,
    refresh_delay,
    retry_delay,
)
from plugins.trunking.uac import (
    BadConnection,
    connection_from_row,
    connection_tables,
    positive_seconds,
    sender_from,
    target_for,
)

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from b2bua.core.services import Services
    from plugins.trunking.uac import RequestSender

__all__ = [
    "NAME",
    "OutboundRegistration",
    "RegistrationConfig",
    "RegistrationManager",
    "RegistrationSettings",
    "RegistrationState",
    "RegistrationTable",
    "SettingsError",
    "TrunkRegistration",
    "config_for",
    "configs_from_rows",
    "read_settings",
    "refresh_delay",
    "retry_delay",
]

NAME = "trunk_registration"
_KEY = f"plugins.{NAME}"

_log = Logger()

#: keys of RegistrationSettings that a table may set (globally or per connection)
_TIMING = ("expires", "margin", "retry_base", "retry_max", "max_expires", "max_retry_after",
           "unregister_timeout")
_CONNECTION_KEYS = frozenset({"register", "aor", "domain", "request_uri", "contact_user",
                              "username", "realm", "password", *_TIMING})
_GLOBAL_KEYS = frozenset({"connections", "instance_id", "contact_address", "sync_interval",
                          *_TIMING})


class SettingsError(ValueError):
    """A bad C{[plugins.trunk_registration]} table (the message names the key)."""


class RegistrationTable:
    """The C{[plugins.trunk_registration]} table, checked.

    @ivar settings: the timing defaults.
    @ivar connections: per-connection tables by connection id.
    @ivar instance_id: our C{+sip.instance}.
    @ivar contact_address: the (host, port) to advertise, if set.
    @ivar sync_interval: seconds between reconciliations with the
        provisioned connections.
    """

    def __init__(self, settings: RegistrationSettings,
                 connections: dict[int, Mapping[str, Any]], instance_id: str,
                 contact_address: tuple[str, int] | None, sync_interval: float) -> None:
        self.settings = settings
        self.connections = connections
        self.instance_id = instance_id
        self.contact_address = contact_address
        self.sync_interval = sync_interval


def default_instance_id() -> str:
    """A C{urn:uuid} stable for this host (a name-based UUID of its name)."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_DNS, 'b2bua.' + socket.gethostname())}"


def _timing(table: Mapping[str, Any], base: RegistrationSettings,
            where: str) -> RegistrationSettings:
    """C{base} with the timing keys of C{table}.

    @raise SettingsError: naming C{where.KEY}.
    """
    values: dict[str, Any] = {}
    for key in _TIMING:
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SettingsError(f"{where}.{key}: expected a number of seconds")
            values[key] = int(value) if key in ("expires", "max_expires") else float(value)
    try:
        return replace(base, **values)
    except ValueError as error:
        raise SettingsError(f"{where}: {error}") from None


def read_settings(table: Mapping[str, Any]) -> RegistrationTable:
    """Check the plugin's table.

    @raise SettingsError: naming the bad key.
    """
    if not isinstance(table, Mapping):
        raise SettingsError(f"{_KEY}: expected a table")
    unknown = set(table) - _GLOBAL_KEYS
    if unknown:
        raise SettingsError(f"{_KEY}.{sorted(unknown)[0]}: unknown key")
    settings = _timing(table, RegistrationSettings(), _KEY)
    connections: dict[int, Mapping[str, Any]] = {}
    for connection_id, own, where in connection_tables(table, _KEY, _CONNECTION_KEYS,
                                                       SettingsError):
        for name in ("aor", "domain", "request_uri", "contact_user", "username", "realm",
                     "password"):
            if name in own and not isinstance(own[name], str):
                raise SettingsError(f"{where}.{name}: expected a string")
        for name in ("aor", "request_uri"):
            if name in own:
                _check_uri(own[name], f"{where}.{name}")
        if "register" in own and not isinstance(own["register"], bool):
            raise SettingsError(f"{where}.register: expected true or false")
        _timing(own, settings, where)
        connections[connection_id] = own
    instance_id = table.get("instance_id") or default_instance_id()
    if not isinstance(instance_id, str) or not instance_id.startswith("urn:"):
        raise SettingsError(f"{_KEY}.instance_id: expected a URN such as urn:uuid:...")
    contact_address = None
    if "contact_address" in table:
        try:
            host, port = split_hostport(str(table["contact_address"]))
        except ParseError as error:
            raise SettingsError(f"{_KEY}.contact_address: {error.reason}") from None
        contact_address = (host.strip("[]"), port or 5060)
    sync_interval = positive_seconds(table, "sync_interval", 30, _KEY, SettingsError)
    return RegistrationTable(settings, connections, instance_id, contact_address, sync_interval)


def _check_uri(text: str, where: str) -> None:
    try:
        uri = parse_uri(text)
    except ParseError as error:
        raise SettingsError(f"{where}: {error.reason}") from None
    if not uri.is_sip:
        raise SettingsError(f"{where}: expected a sip: URI")


def config_for(row: Mapping[str, Any], own: Mapping[str, Any],
               table: RegistrationTable) -> RegistrationConfig:
    """The registration of one connection row with its settings C{own}.

    The row gives the credentials (C{auth_username}, C{auth_realm},
    C{auth_ha1}), the expiry asked (C{register_expires}) and where to
    register (C{registrar}, C{host:port}; empty: the connection's
    C{address}); C{own} overrides any of them.  A row that cannot be used
    gives a config with a C{problem} (shown as a failed registration)
    rather than an error: provisioning is not start-up configuration.
    """
    where = f"{_KEY}.connections.{row.get('id')}"
    name = str(row.get("name") or row.get("id"))
    base = table.settings
    problem = None
    expires = row.get("register_expires")
    if isinstance(expires, int) and not isinstance(expires, bool):
        try:
            base = replace(base, expires=expires)
        except ValueError as error:
            problem = f"register_expires: {error}"
    settings = _timing(own, base, where)
    try:
        connection = connection_from_row(row)
        registrar_address = str(row.get("registrar") or "").strip()
        target = connection.target
        if registrar_address:
            target = target_for(registrar_address, row.get("transport") or "udp")
    except BadConnection as error:
        connection_id = int(row["id"]) if str(row.get("id", "")).isdigit() else -1
        return RegistrationConfig(connection_id, name, None, "", "", "",
                                  settings=settings, problem=f"connection {error}")
    realm = own.get("realm") or connection.realm
    domain = own.get("domain") or format_host(target.host)
    username = own.get("username") or connection.username
    aor = own.get("aor") or (f"sip:{username}@{domain}" if username else f"sip:{domain}")
    try:
        aor_user = parse_uri(aor).user or ""
    except ParseError as error:
        return RegistrationConfig(connection.id, connection.name, target, "", aor, "",
                                  settings=settings, problem=f"aor: {error.reason}")
    username = username or aor_user
    registrar = own.get("request_uri") or (
        f"sip:{own['domain']}" if "domain" in own
        else f"sip:{registrar_address or connection.address}")
    password = own.get("password")
    ha1: dict[str, str] = {}
    if not username:
        problem = problem or "no username: set the connection's auth_username or an aor"
    elif password is None and connection.ha1:
        if realm:
            ha1 = {"MD5": connection.ha1}
        else:
            problem = problem or "the stored HA1 needs the connection's auth_realm"
    return RegistrationConfig(
        connection.id, connection.name, target, registrar, aor, username,
        password=password, ha1=ha1, realm=realm,
        contact_user=own.get("contact_user") or aor_user or username,
        contact_address=table.contact_address, instance_id=table.instance_id,
        settings=settings, problem=problem)


def configs_from_rows(rows: Iterable[Mapping[str, Any]],
                      table: RegistrationTable) -> list[RegistrationConfig]:
    """The registrations the connection C{rows} ask for (see module doc)."""
    configs = []
    for row in rows:
        key = row.get("id")
        own = table.connections.get(int(key)) if str(key).isdigit() else None
        wanted = own.get("register", True) if own is not None else bool(row.get("register"))
        if wanted:
            configs.append(config_for(row, own or {}, table))
    return configs


class RegistrationManager:
    """The registrations of every connection that registers."""

    def __init__(self, clock: IReactorTime, sender: RequestSender, *,
                 registry: CollectorRegistry | None = None, user_agent: str = "b2bua",
                 random_bytes: Callable[[int], bytes] = os.urandom,
                 random: Callable[[], float] = _random.random) -> None:
        """
        @param registry: where the metrics go (none when C{None}).
        @param random_bytes: the source of Call-IDs, tags and cnonces.
        @param random: the retry jitter, in [0, 1).
        """
        self._clock = clock
        self._sender = sender
        self._user_agent = user_agent
        self._random_bytes = random_bytes
        self._random = random
        self._registrations: dict[int, OutboundRegistration] = {}
        self._state: Gauge | None = None
        self._failures: Counter | None = None
        if registry is not None:
            self._state = Gauge("b2bua_trunk_registration_state",
                                "1 when the connection is registered with its vendor.",
                                ["connection"], registry=registry)
            self._failures = Counter("b2bua_trunk_registration_failures",
                                     "Failed registration attempts of a connection.",
                                     ["connection"], registry=registry)

    def __len__(self) -> int:
        return len(self._registrations)

    def get(self, connection_id: int) -> OutboundRegistration | None:
        """The registration of C{connection_id}, if it registers."""
        return self._registrations.get(connection_id)

    def update(self, configs: Iterable[RegistrationConfig]) -> Deferred[None]:
        """Make the registrations match C{configs}: start the new ones,
        un-register the ones gone, and replace the changed ones (the old
        binding is removed before the new one is asked for, or the removal
        could remove the new binding: RFC 3261 10.3 step 7).

        @return: fires once the removals are done.
        """
        wanted = {config.connection_id: config for config in configs}
        stops: list[Deferred[None]] = []
        for connection_id, old in list(self._registrations.items()):
            config = wanted.get(connection_id)
            if config is not None and config == old.config:
                continue
            del self._registrations[connection_id]
            stopped = old.stop()
            stops.append(stopped)
            if config is None:
                self._forget(connection_id)
            else:
                new = self._add(config)
                stopped.addCallback(lambda _, n=new: self._start(n))
        for connection_id, config in wanted.items():
            if connection_id not in self._registrations:
                self._start(self._add(config))
        return DeferredList(stops).addCallback(lambda _: None)

    def stop(self) -> Deferred[None]:
        """Un-register everything (fires when done, bounded by each
        registration's C{unregister_timeout})."""
        return self.update(())

    def status(self) -> list[dict[str, Any]]:
        """Every registration as a JSON-ready dict, by connection id."""
        return [self._registrations[k].status() for k in sorted(self._registrations)]

    def _add(self, config: RegistrationConfig) -> OutboundRegistration:
        registration = OutboundRegistration(
            self._clock, self._sender, config, user_agent=self._user_agent,
            random_bytes=self._random_bytes, random=self._random, on_change=self._changed)
        self._registrations[config.connection_id] = registration
        if self._state is not None and self._failures is not None:
            label = str(config.connection_id)
            self._state.labels(label).set(0)
            self._failures.labels(label)
        return registration

    def _start(self, registration: OutboundRegistration) -> None:
        if self._registrations.get(registration.config.connection_id) is registration:
            registration.start()

    def _forget(self, connection_id: int) -> None:
        for metric in (self._state, self._failures):
            if metric is not None:
                try:
                    metric.remove(str(connection_id))
                except KeyError:
                    pass

    def _changed(self, registration: OutboundRegistration, previous: RegistrationState) -> None:
        """Follow a registration's state in the metrics."""
        connection_id = registration.config.connection_id
        if self._registrations.get(connection_id) is not registration:
            return
        label = str(connection_id)
        if self._state is not None:
            self._state.labels(label).set(1 if registration.registered else 0)
        if self._failures is not None and registration.state is RegistrationState.FAILED:
            self._failures.labels(label).inc()


class TrunkRegistration:
    """The plugin: registers the connections that ask for it.

    It needs the stack's sender in C{services.extra} (see
    L{plugins.trunking.uac.sender_from}); it puts its L{RegistrationManager}
    in C{services.extra["trunk_registrations"]} for the API.  It reads the
    directory's connections shortly after start (once the SIP listeners are
    open) and again every C{sync_interval} seconds (an in-memory read).
    """

    def __init__(self) -> None:
        self.manager: RegistrationManager | None = None
        self.table: RegistrationTable | None = None
        self._services: Services | None = None
        self._next: IDelayedCall | None = None

    @hookimpl
    def b2bua_configure(self, services: Services, settings: dict[str, Any]) -> None:
        """Read the table and start registering (on the next turn of the clock)."""
        self.table = read_settings(settings.get(NAME, {}))
        sender = sender_from(services)
        if sender is None:
            if self.table.connections:
                _log.warn("{key}: the service offers no way to send requests; "
                          "no registration will be made", key=_KEY)
            return
        self._services = services
        self.manager = RegistrationManager(
            services.clock, sender, registry=services.metrics.registry,
            user_agent=str(services.extra.get("user_agent") or "b2bua"))
        services.extra["trunk_registrations"] = self.manager
        if hasattr(services.directory, "version"):
            self._next = services.clock.callLater(0, self.sync)  # once listening
        else:
            self.sync()

    def sync(self) -> None:
        """Reconcile the registrations with the directory's connections."""
        self._next = None
        services, table, manager = self._services, self.table, self.manager
        if services is None or table is None or manager is None:
            return
        try:
            manager.update(configs_from_rows(services.directory.connections(), table))
        except Exception:
            _log.failure("trunk registrations could not be updated")
        if hasattr(services.directory, "version"):
            # a live snapshot changes with provisioning: follow it (a fixed
            # directory, in tests and tools, is read once)
            self._next = services.clock.callLater(table.sync_interval, self.sync)

    @hookimpl
    def b2bua_unconfigure(self) -> Deferred[None] | None:
        """Un-register everything; the Deferred fires when done."""
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        self._services = None
        if self.manager is None:
            return None
        return self.manager.stop()
