"""The OPTIONS prober of vendor connections (see L{plugins.trunking.probing}
for the rules, the settings and the plugin that runs it).

L{ConnectionProber} keeps each probed connection's L{Health} (C{unknown},
C{up}, C{down}) from the answers to its OPTIONS, the Retry-After windows
during which a connection is kept out of routing, the metrics
C{b2bua_trunk_connection_up{connection}} and
C{b2bua_trunk_probes_total{connection,result}}, and tells listeners of every
change.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from twisted.logger import Logger

from b2bua.sip.errors import TransportError
from b2bua.sip.headers import NameAddress
from plugins.trunking.uac import (
    Connection,
    build_request,
    contact_uri,
    retry_after,
    timestamp,
)

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from b2bua.sip.message import Response
    from plugins.trunking.uac import RequestSender

__all__ = ["ConnectionProber", "Health", "Listener", "ProbeSettings", "probe_is_good"]

_log = Logger()

#: A change listener: (connection id, available, health).
Listener = Callable[[int, bool, "Health"], Any]


class Health(enum.StrEnum):
    """What probing knows of a connection."""

    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"


def probe_is_good(code: int, accepted: frozenset[int] = frozenset()) -> bool:
    """Whether a final response C{code} to OPTIONS proves the peer alive
    (see the module doc)."""
    if code in accepted:
        return True
    return not (code == 408 or 500 <= code < 600)


@dataclass(frozen=True)
class ProbeSettings:
    """The prober's knobs (see the module doc).

    @ivar interval: seconds between probes of a connection whose row and
        table give none.
    @ivar timeout: C{None}: wait for the transaction's own timeout (Timer F,
        32 s by default).
    @ivar connections: per-connection tables (C{probe}, C{interval}) by id.
    """

    interval: float = 30.0
    timeout: float | None = 5.0
    down_after: int = 3
    up_after: int = 2
    accepted_codes: frozenset[int] = frozenset({501})
    max_retry_after: float = 3600.0
    from_user: str = "ping"
    connections: dict[int, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError("interval must be positive")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError("timeout must be positive")
        if self.down_after < 1 or self.up_after < 1:
            raise ValueError("down_after and up_after must be at least 1")
        if not self.max_retry_after > 0:
            raise ValueError("max_retry_after must be positive")


class _Probe:
    """The owner of one OPTIONS's client transaction."""

    __slots__ = ("connection_id", "prober", "sent_at", "timer")

    def __init__(self, prober: ConnectionProber, connection_id: int, sent_at: float) -> None:
        self.prober = prober
        self.connection_id = connection_id
        self.sent_at = sent_at
        self.timer: IDelayedCall | None = None

    def response_received(self, response: Response, transaction: object) -> None:
        """A response to the OPTIONS (provisional ones prove nothing)."""
        if response.code >= 200:
            self.prober._answered(self, response)

    def transaction_failed(self, transaction: object, error: Exception) -> None:
        """Timer F fired or the transport failed."""
        self.prober._finished(self, False, None, str(error) or type(error).__name__)


class _Tracked:
    """What the prober keeps of one connection."""

    __slots__ = ("connection", "failures", "health", "interval", "last_code", "last_probe_at",
                 "last_reason", "last_rtt", "next", "probe", "probes", "skipped", "successes")

    def __init__(self, connection: Connection, interval: float) -> None:
        self.connection = connection
        self.interval = interval
        #: the timer of the next probe, while probing runs
        self.next: IDelayedCall | None = None
        self.health = Health.UNKNOWN
        self.successes = 0
        self.failures = 0
        self.last_code: int | None = None
        self.last_reason = ""
        self.last_probe_at: float | None = None
        self.last_rtt: float | None = None
        self.probe: _Probe | None = None
        self.probes = 0
        self.skipped = 0


class ConnectionProber:
    """Probes vendor connections with OPTIONS and keeps their availability."""

    def __init__(self, clock: IReactorTime, sender: RequestSender,
                 settings: ProbeSettings | None = None, *,
                 registry: CollectorRegistry | None = None, user_agent: str = "b2bua",
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        """
        @param registry: where the metrics go (none when C{None}).
        @param random_bytes: the source of Call-IDs and tags.
        """
        self.clock = clock
        self.settings = settings or ProbeSettings()
        self._sender = sender
        self._user_agent = user_agent
        self._random_bytes = random_bytes
        self._tracked: dict[int, _Tracked] = {}
        #: Retry-After windows: connection id -> (until, its timer)
        self._windows: dict[int, tuple[float, IDelayedCall]] = {}
        self._listeners: list[Listener] = []
        self._running = False
        self._up: Gauge | None = None
        self._probes: Counter | None = None
        if registry is not None:
            self._up = Gauge("b2bua_trunk_connection_up",
                             "1 when the connection is available to routing.",
                             ["connection"], registry=registry)
            self._probes = Counter("b2bua_trunk_probes",
                                   "OPTIONS probes of a connection by result.",
                                   ["connection", "result"], registry=registry)

    # --- connections and life cycle -----------------------------------------

    def update(self, connections: Iterable[Connection],
               intervals: Mapping[int, float] | None = None) -> None:
        """Probe these connections, each every C{intervals[id]} seconds
        (default C{settings.interval}): new ones start C{unknown} (and are
        probed at once while probing runs), ones whose address changed
        start over, ones gone are forgotten."""
        intervals = intervals or {}
        wanted = {c.id: c for c in connections}
        for connection_id in list(self._tracked):
            connection = wanted.get(connection_id)
            tracked = self._tracked[connection_id]
            if connection is None or connection.target != tracked.connection.target:
                self._forget(connection_id)
        for connection_id, connection in wanted.items():
            interval = float(intervals.get(connection_id) or self.settings.interval)
            tracked = self._tracked.get(connection_id)
            if tracked is None:
                tracked = self._tracked[connection_id] = _Tracked(connection, interval)
                self._publish(connection_id)
                if self._running:
                    self._run(tracked)
                continue
            tracked.connection = connection
            if tracked.interval != interval:
                tracked.interval = interval
                if tracked.next is not None:
                    tracked.next.cancel()
                    tracked.next = self.clock.callLater(interval, self._run, tracked)

    def start(self) -> None:
        """Probe every connection now, then each at its interval."""
        if not self._running:
            self._running = True
            for tracked in list(self._tracked.values()):
                self._run(tracked)

    def stop(self) -> None:
        """Stop probing; probes in flight are abandoned and every timer is
        cancelled (health and windows are kept for inspection)."""
        self._running = False
        for tracked in self._tracked.values():
            self._abandon(tracked)
        for _, timer in self._windows.values():
            if timer.active():
                timer.cancel()
        self._windows.clear()

    def on_change(self, listener: Listener) -> None:
        """Call C{listener(connection_id, available, health)} whenever a
        connection's health or availability changes."""
        self._listeners.append(listener)

    # --- what routing asks ---------------------------------------------------

    def health(self, connection_id: int) -> Health | None:
        """The probed health, or C{None} for a connection not probed."""
        tracked = self._tracked.get(connection_id)
        return None if tracked is None else tracked.health

    def is_available(self, connection_id: int) -> bool:
        """False when the connection is C{down} or inside a Retry-After
        window; any other connection, probed or not, is available."""
        if connection_id in self._windows:
            return False
        tracked = self._tracked.get(connection_id)
        return tracked is None or tracked.health is not Health.DOWN

    def unavailable(self) -> set[int]:
        """The ids of every connection that is not available."""
        down = {k for k, t in self._tracked.items() if t.health is Health.DOWN}
        return down | set(self._windows)

    def mark_unavailable(self, connection_id: int, seconds: float) -> None:
        """A C{503} with C{Retry-After: seconds} came from the connection:
        keep it out of routing for that long (at most C{max_retry_after});
        it is back afterwards unless probing finds it C{down}.  A shorter
        window never shortens a longer one."""
        if not seconds > 0:
            return
        seconds = min(seconds, self.settings.max_retry_after)
        until = self.clock.seconds() + seconds
        current = self._windows.get(connection_id)
        if current is not None:
            if current[0] >= until:
                return
            current[1].cancel()
        before = self.is_available(connection_id)
        timer = self.clock.callLater(seconds, self._window_ended, connection_id)
        self._windows[connection_id] = (until, timer)
        if before:
            self._publish(connection_id)

    def status(self) -> list[dict[str, Any]]:
        """Every probed connection (and every Retry-After window) as a
        JSON-ready dict, by connection id."""
        ids = sorted(set(self._tracked) | set(self._windows))
        return [self._status(k) for k in ids]

    def _status(self, connection_id: int) -> dict[str, Any]:
        tracked = self._tracked.get(connection_id)
        window = self._windows.get(connection_id)
        out: dict[str, Any] = {
            "connection": connection_id,
            "available": self.is_available(connection_id),
            "unavailable_until": timestamp(window[0]) if window else None,
        }
        if tracked is None:
            out.update(health=None, probed=False)
            return out
        target = tracked.connection.target
        out.update(
            name=tracked.connection.name,
            interval=tracked.interval,
            target=f"{target.transport.lower()}:{target.host}:{target.port}",
            health=str(tracked.health),
            probed=True,
            successes=tracked.successes,
            failures=tracked.failures,
            last_code=tracked.last_code,
            last_reason=tracked.last_reason or None,
            last_probe_at=timestamp(tracked.last_probe_at),
            last_rtt=None if tracked.last_rtt is None else round(tracked.last_rtt, 6),
            in_flight=tracked.probe is not None,
            probes=tracked.probes,
            skipped=tracked.skipped,
        )
        return out

    # --- probing ---------------------------------------------------------------

    def _run(self, tracked: _Tracked) -> None:
        """Probe C{tracked} (unless its last probe is still open) and
        schedule the next one."""
        tracked.next = self.clock.callLater(tracked.interval, self._run, tracked)
        if tracked.probe is not None:
            tracked.skipped += 1  # one probe per connection at a time
        else:
            self._send(tracked)

    def _send(self, tracked: _Tracked) -> None:
        connection = tracked.connection
        target = connection.target
        now = self.clock.seconds()
        probe = _Probe(self, connection.id, now)
        tracked.probe = probe
        tracked.probes += 1
        tracked.last_probe_at = now
        if self.settings.timeout is not None:
            probe.timer = self.clock.callLater(self.settings.timeout, self._finished, probe,
                                               False, None, "timeout")
        random = self._random_bytes
        try:
            local = self._sender.local_address(target.transport)
            contact = NameAddress(contact_uri(local, target.transport, self.settings.from_user))
            uri = str(contact_uri((target.host, target.port), target.transport, None))
            request = build_request(
                "OPTIONS", uri, from_=f"<sip:{self.settings.from_user}@{contact.uri.host}>"
                                      f";tag={random(6).hex()}",
                to=f"<{uri}>", call_id=f"{random(12).hex()}@b2bua", cseq=1,
                headers=[("Contact", str(contact)), ("Accept", "application/sdp"),
                         ("Content-Length", "0")],
                user_agent=self._user_agent)
            self._sender.send_request(request, target, probe)
        except (TransportError, ValueError) as error:
            self._finished(probe, False, None, str(error))

    def _answered(self, probe: _Probe, response: Response) -> None:
        good = probe_is_good(response.code, self.settings.accepted_codes)
        self._finished(probe, good, response.code, response.reason)
        if response.code == 503:
            seconds = retry_after(response)
            if seconds:
                self.mark_unavailable(probe.connection_id, seconds)

    def _finished(self, probe: _Probe, good: bool, code: int | None, reason: str) -> None:
        """One probe's verdict (ignored for an abandoned probe)."""
        tracked = self._tracked.get(probe.connection_id)
        if tracked is None or tracked.probe is not probe:
            return
        tracked.probe = None
        if probe.timer is not None and probe.timer.active():
            probe.timer.cancel()
        tracked.last_code, tracked.last_reason = code, reason
        tracked.last_rtt = self.clock.seconds() - probe.sent_at if code is not None else None
        if self._probes is not None:
            self._probes.labels(str(probe.connection_id), "ok" if good else "failed").inc()
        before = (tracked.health, self.is_available(probe.connection_id))
        if good:
            tracked.successes += 1
            tracked.failures = 0
            if tracked.health is Health.UNKNOWN or (
                    tracked.health is Health.DOWN
                    and tracked.successes >= self.settings.up_after):
                tracked.health = Health.UP
        else:
            tracked.failures += 1
            tracked.successes = 0
            if tracked.health is not Health.DOWN and \
                    tracked.failures >= self.settings.down_after:
                tracked.health = Health.DOWN
        if (tracked.health, self.is_available(probe.connection_id)) != before:
            _log.info("connection {name} is {health} ({code} {reason})",
                      name=tracked.connection.name, health=tracked.health, code=code,
                      reason=reason)
            self._publish(probe.connection_id)

    def _abandon(self, tracked: _Tracked) -> None:
        if tracked.next is not None and tracked.next.active():
            tracked.next.cancel()
        tracked.next = None
        probe, tracked.probe = tracked.probe, None
        if probe is not None and probe.timer is not None and probe.timer.active():
            probe.timer.cancel()

    def _forget(self, connection_id: int) -> None:
        tracked = self._tracked.pop(connection_id)
        self._abandon(tracked)
        if connection_id not in self._windows:
            self._remove_series(connection_id)

    def _window_ended(self, connection_id: int) -> None:
        self._windows.pop(connection_id, None)
        if self.is_available(connection_id):
            self._publish(connection_id)
        if connection_id not in self._tracked:
            self._remove_series(connection_id)

    # --- telling -----------------------------------------------------------------

    def _publish(self, connection_id: int) -> None:
        """Set the gauge and tell the listeners."""
        available = self.is_available(connection_id)
        if self._up is not None:
            self._up.labels(str(connection_id)).set(1 if available else 0)
        tracked = self._tracked.get(connection_id)
        health = tracked.health if tracked is not None else Health.UNKNOWN
        for listener in list(self._listeners):
            try:
                listener(connection_id, available, health)
            except Exception:
                _log.failure("connection listener {listener!r} failed", listener=listener)

    def _remove_series(self, connection_id: int) -> None:
        if self._up is not None:
            try:
                self._up.remove(str(connection_id))
            except KeyError:
                pass
        if self._probes is not None:
            for result in ("ok", "failed"):
                try:
                    self._probes.remove(str(connection_id), result)
                except KeyError:
                    pass
