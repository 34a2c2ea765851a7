"""OPTIONS probing of vendor connections, and what it tells routing.

L{ConnectionProber} sends an OPTIONS to every probed connection at its
interval, at most one at a time per connection, and keeps each
connection's health:

  - C{unknown} until the first verdict (a connection is available then);
  - C{down} after C{down_after} failed probes in a row;
  - C{up} after C{up_after} good probes in a row (the first good probe of
    an C{unknown} connection is enough).

A probe is B{good} when a final response comes, whatever its code, except
C{408} and C{5xx} (a server that cannot serve, or a proxy in front of a dead
one), unless the code is in C{accepted_codes} (default C{501}: the peer is
alive and just does not do OPTIONS).  A probe is B{bad} on those codes, when
no final response comes within C{timeout} seconds, or when it cannot be
sent.  A C{503} with C{Retry-After} also makes the connection unavailable
for that long.

L{ConnectionProber.mark_unavailable} does the same for a C{503} with
C{Retry-After} seen on a call.  L{ConnectionProber.is_available} and
L{ConnectionProber.unavailable} are what least-cost routing asks: a
connection is available unless it is C{down} or inside a Retry-After
window.  Routing must leave unavailable connections out of the whole hunt
list, failover steps included (OpenSIPS #564).

A connection is probed when its row says so (C{probe}, every
C{probe_interval} seconds) or its table below does.  Settings
(C{[plugins.trunk_probing]})::

    [plugins.trunk_probing]
    enabled = true
    interval = 30            # seconds between probes, when the row gives none
    timeout = 5              # a probe without final response is bad after this
                             # (0: when the transaction times out, Timer F)
    down_after = 3
    up_after = 2
    accepted_codes = [501]   # 5xx answers that still prove liveness
    max_retry_after = 3600   # longest Retry-After honoured

    [plugins.trunk_probing.connections.42]
    probe = false            # never probe this one (true: probe it whatever its row says)
    interval = 10            # instead of the row's probe_interval
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from b2bua.hookspecs import hookimpl
from plugins.trunking.prober import ConnectionProber, Health, ProbeSettings, probe_is_good
from plugins.trunking.uac import (
    BadConnection,
    Connection,
    connection_from_row,
    connection_tables,
    positive_seconds,
    sender_from,
)

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from b2bua.core.services import Services

__all__ = [
    "NAME",
    "ConnectionProber",
    "Health",
    "ProbeSettings",
    "SettingsError",
    "TrunkProbing",
    "probe_is_good",
    "probed_connections",
    "read_settings",
]

NAME = "trunk_probing"
_KEY = f"plugins.{NAME}"

_log = Logger()


class SettingsError(ValueError):
    """A bad C{[plugins.trunk_probing]} table (the message names the key)."""


_NUMBERS = {"interval": float, "timeout": float, "down_after": int, "up_after": int,
            "max_retry_after": float}
_KEYS = frozenset({"enabled", "connections", "accepted_codes", "from_user", "sync_interval",
                   *_NUMBERS})


def read_settings(table: Mapping[str, Any]) -> tuple[bool, ProbeSettings, float]:
    """Check the plugin's table: (enabled, settings, sync interval).

    @raise SettingsError: naming the bad key.
    """
    if not isinstance(table, Mapping):
        raise SettingsError(f"{_KEY}: expected a table")
    unknown = set(table) - _KEYS
    if unknown:
        raise SettingsError(f"{_KEY}.{sorted(unknown)[0]}: unknown key")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SettingsError(f"{_KEY}.enabled: expected true or false")
    values: dict[str, Any] = {}
    for key, kind in _NUMBERS.items():
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    (kind is int and value != int(value)):
                raise SettingsError(f"{_KEY}.{key}: expected a number")
            values[key] = kind(value)
    if values.get("timeout") == 0:
        values["timeout"] = None  # wait for the transaction's own timeout
    if "accepted_codes" in table:
        codes = table["accepted_codes"]
        if not isinstance(codes, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) and 200 <= c <= 699
                for c in codes):
            raise SettingsError(f"{_KEY}.accepted_codes: expected a list of codes 200-699")
        values["accepted_codes"] = frozenset(codes)
    if "from_user" in table:
        if not isinstance(table["from_user"], str) or not table["from_user"].isalnum():
            raise SettingsError(f"{_KEY}.from_user: expected letters and digits")
        values["from_user"] = table["from_user"]
    connections: dict[int, Mapping[str, Any]] = {}
    for connection_id, own, where in connection_tables(table, _KEY, {"probe", "interval"},
                                                       SettingsError):
        if not isinstance(own.get("probe", True), bool):
            raise SettingsError(f"{where}.probe: expected true or false")
        positive_seconds(own, "interval", 1, where, SettingsError)
        connections[connection_id] = own
    values["connections"] = connections
    sync_interval = positive_seconds(table, "sync_interval", 30, _KEY, SettingsError)
    try:
        return enabled, ProbeSettings(**values), sync_interval
    except ValueError as error:
        raise SettingsError(f"{_KEY}: {error}") from None


def probed_connections(rows: Iterable[Mapping[str, Any]], settings: ProbeSettings
                       ) -> tuple[list[Connection], dict[int, float]]:
    """The connections of C{rows} to probe, and their intervals.

    A connection is probed when its table in the settings says C{probe =
    true}, or else when its row does (the C{probe} field); its interval is
    the table's C{interval}, else the row's C{probe_interval}, else
    C{settings.interval}.  Disabled rows and rows a client cannot use (a
    host name as address) are left out (the latter logged).
    """
    connections: list[Connection] = []
    intervals: dict[int, float] = {}
    for row in rows:
        if row.get("enabled") is False:
            continue
        key = row.get("id")
        own = settings.connections.get(int(key), {}) if str(key).isdigit() else {}
        if not own.get("probe", bool(row.get("probe"))):
            continue
        try:
            connection = connection_from_row(row)
        except BadConnection as error:
            _log.info("connection {id} cannot be probed: {error}", id=key, error=error)
            continue
        connections.append(connection)
        interval = own.get("interval") or row.get("probe_interval")
        intervals[connection.id] = (float(interval) if isinstance(interval, int | float)
                                    and interval > 0 else settings.interval)
    return connections, intervals


class TrunkProbing:
    """The plugin: probes the directory's connections.

    It needs the stack's sender in C{services.extra} (see
    L{plugins.trunking.uac.sender_from}); it puts its L{ConnectionProber}
    in C{services.extra["trunk_prober"]}, where routing finds
    C{is_available}/C{unavailable} and C{mark_unavailable}.
    """

    def __init__(self) -> None:
        self.prober: ConnectionProber | None = None
        self._services: Services | None = None
        self._sync_interval = 30.0
        self._next: IDelayedCall | None = None

    @hookimpl
    def b2bua_configure(self, services: Services, settings: dict[str, Any]) -> None:
        """Read the table; start probing on the next turn of the clock
        (once the SIP listeners are open)."""
        enabled, probe_settings, self._sync_interval = read_settings(settings.get(NAME, {}))
        if not enabled:
            return
        sender = sender_from(services)
        if sender is None:
            _log.warn("{key}: the service offers no way to send requests; nothing is probed",
                      key=_KEY)
            return
        self.prober = ConnectionProber(
            services.clock, sender, probe_settings, registry=services.metrics.registry,
            user_agent=str(services.extra.get("user_agent") or "b2bua"))
        services.extra["trunk_prober"] = self.prober
        self._services = services
        if hasattr(services.directory, "version"):
            self._next = services.clock.callLater(0, self.sync)  # once listening
        else:
            self.sync()

    def sync(self) -> None:
        """Follow the directory's connections (and start probing)."""
        self._next = None
        services, prober = self._services, self.prober
        if services is None or prober is None:
            return
        try:
            prober.update(*probed_connections(services.directory.connections(),
                                              prober.settings))
        except Exception:
            _log.failure("probed connections could not be updated")
        prober.start()
        if hasattr(services.directory, "version"):
            # a live snapshot changes with provisioning: follow it (a fixed
            # directory, in tests and tools, is read once)
            self._next = services.clock.callLater(self._sync_interval, self.sync)

    @hookimpl
    def b2bua_unconfigure(self) -> None:
        """Stop probing and every timer."""
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        self._services = None
        if self.prober is not None:
            self.prober.stop()
