"""Announcing provisioning changes to whoever keeps a copy (the snapshot).

A repository that changed a row does two things:

  1. inside the writing transaction, L{ChangeFeed.notify}: on PostgreSQL
     this runs C{NOTIFY b2bua_changes} (as C{pg_notify}), which the server
     delivers to every listening session when, and only when, the
     transaction commits; on SQLite it does nothing;
  2. after the commit, in the reactor thread, L{ChangeFeed.publish}: the
     feed's own subscribers hear of it at once.

Other processes hear of it through a L{PostgresListener}: a dedicated thread
holding its own connection in C{LISTEN b2bua_changes}, which hands each
notification to the feed in the reactor thread (C{callFromThread}).  Each
feed stamps its notifications with a random origin, so a process does not
hear its own changes twice.  When the listener had to reconnect, changes
may have been missed, so it publishes a C{resync} change (entity C{"*"}):
reload everything.

Changes are hints, not data: a subscriber reloads what it needs.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from b2bua.db.database import redact_url

if TYPE_CHECKING:
    from b2bua.db.database import Connection

__all__ = ["CHANNEL", "Change", "ChangeFeed", "PostgresListener"]

#: The PostgreSQL notification channel.
CHANNEL = "b2bua_changes"

_log = Logger(namespace="b2bua.db.changes")


@dataclass(frozen=True)
class Change:
    """One announced change.

    @ivar entity: the entity name (C{"account"}), or C{"*"} for a resync.
    @ivar row_id: the row's id (C{None} for a resync).
    @ivar action: C{create}, C{update}, C{delete} or C{resync}.
    """

    entity: str
    row_id: int | None
    action: str


class ChangeFeed:
    """Subscribers to provisioning changes, and how changes reach them.

    @ivar origin: a random identity stamped on this feed's notifications.
    """

    def __init__(self) -> None:
        self.origin = uuid.uuid4().hex
        self._subscribers: list[Callable[[Change], object]] = []

    def subscribe(self, callback: Callable[[Change], object]) -> Callable[[], None]:
        """Call C{callback(change)} for every change from now on.

        @return: a function that unsubscribes it.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, entity: str, row_id: int | None, action: str) -> None:
        """Tell every subscriber (in the reactor thread, after the commit).

        A subscriber that raises is logged; the others are still called.
        """
        change = Change(entity, row_id, action)
        for callback in list(self._subscribers):
            try:
                callback(change)
            except Exception:
                _log.failure("change subscriber {callback!r} failed on {change!r}",
                             callback=callback, change=change)

    def notify(self, connection: Connection, entity: str, row_id: int | None,
               action: str) -> None:
        """Inside a writing transaction: announce to other processes on commit.

        Does nothing on SQLite (one process owns an embedded database).
        """
        if connection.dialect.name != "postgresql":
            return
        payload = json.dumps({"entity": entity, "id": row_id, "action": action,
                              "origin": self.origin}, separators=(",", ":"))
        connection.execute("SELECT pg_notify(?, ?)", (CHANNEL, payload))

    def deliver(self, payload: str) -> None:
        """Publish a notification received from PostgreSQL (reactor thread).

        Our own notifications (already published) and malformed ones are
        ignored.
        """
        try:
            data = json.loads(payload)
            entity, row_id, action = data["entity"], data.get("id"), data["action"]
            origin = data.get("origin")
        except (ValueError, TypeError, KeyError):
            _log.warn("ignoring a malformed change notification {payload!r}", payload=payload)
            return
        if origin == self.origin:
            return
        if not isinstance(entity, str) or not isinstance(action, str) \
                or not (row_id is None or isinstance(row_id, int)):
            _log.warn("ignoring a malformed change notification {payload!r}", payload=payload)
            return
        self.publish(entity, row_id, action)

    def resync(self) -> None:
        """Publish a C{resync}: changes may have been missed, reload all."""
        self.publish("*", None, "resync")


class PostgresListener:
    """Runs C{LISTEN b2bua_changes} in a dedicated thread and feeds a feed.

    The thread waits for notifications at most C{poll_interval} seconds at a
    time so that L{stop} is seen promptly.  When the connection fails it
    reconnects after a back-off that doubles from C{min_backoff} up to
    C{max_backoff} seconds, and then publishes a resync.
    """

    def __init__(self, database_url: str, reactor: Any, feed: ChangeFeed, *,
                 poll_interval: float = 0.25, min_backoff: float = 0.5,
                 max_backoff: float = 30.0) -> None:
        """
        @param database_url: a C{postgresql://} URL.
        @param reactor: provides C{callFromThread}.
        @param feed: where notifications go.

        The connection's C{application_name} (L{application_name}) tells it
        apart in C{pg_stat_activity}.
        """
        self.database_url = database_url
        self.reactor = reactor
        self.feed = feed
        self.poll_interval = poll_interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connections = 0
        self.application_name = f"b2bua-listen-{feed.origin[:12]}"
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped: Deferred[None] | None = None
        self._listening: list[Deferred[None]] = []
        self._is_listening = False

    def start(self) -> None:
        """Start the listening thread (once)."""
        if self._thread is not None:
            return
        self._stopped = Deferred()
        self._thread = threading.Thread(target=self._run, name="b2bua-db-listen",
                                        daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the listening thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def when_listening(self) -> Deferred[None]:
        """A Deferred firing once C{LISTEN} is in effect (at once if it is)."""
        if self._is_listening:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._listening.append(d)
        return d

    def stop(self) -> Deferred[None]:
        """Ask the thread to end; the Deferred fires when it has ended."""
        if self._thread is None or self._stopped is None:
            return succeed(None)
        self._stopping.set()
        if self._stopped.called:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._stopped.addBoth(lambda result: d.callback(None))
        return d

    # -- in the reactor thread ---------------------------------------------------------

    def _connected(self, again: bool) -> None:
        """LISTEN is in effect: wake the waiters, resync after a reconnection."""
        self._is_listening = True
        waiters, self._listening = self._listening, []
        for d in waiters:
            d.callback(None)
        if again:
            self.feed.resync()

    def _lost(self) -> None:
        """The connection failed: not listening until it is back."""
        self._is_listening = False

    def _ended(self) -> None:
        """The thread has ended (its last act was to call this: it is gone
        within a moment, so wait for it, briefly)."""
        self._is_listening = False
        if self._thread is not None:
            self._thread.join(1.0)
        if self._stopped is not None and not self._stopped.called:
            self._stopped.callback(None)

    # -- in the listening thread -------------------------------------------------------

    def _run(self) -> None:
        """Connect, listen, deliver; reconnect with back-off until stopped."""
        import psycopg

        delay = self.min_backoff
        while not self._stopping.is_set():
            try:
                connection = psycopg.connect(self.database_url, autocommit=True,
                                             application_name=self.application_name,
                                             keepalives=1, keepalives_idle=30,
                                             keepalives_interval=10, keepalives_count=3)
            except psycopg.Error as error:
                _log.warn("cannot connect to {url} to listen for changes: {error}; retrying "
                          "in {delay}s", url=redact_url(self.database_url), error=error,
                          delay=delay)
            else:
                try:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.connections += 1
                    self.reactor.callFromThread(self._connected, self.connections > 1)
                    delay = self.min_backoff
                    while not self._stopping.is_set():
                        for notification in connection.notifies(timeout=self.poll_interval):
                            self.reactor.callFromThread(self.feed.deliver, notification.payload)
                except psycopg.Error as error:
                    self.reactor.callFromThread(self._lost)
                    _log.warn("lost the change listener connection: {error}; reconnecting "
                              "in {delay}s", error=error, delay=delay)
                finally:
                    try:
                        connection.close()
                    except Exception:
                        pass
            if self._stopping.wait(delay):
                break
            delay = min(delay * 2, self.max_backoff)
        self.reactor.callFromThread(self._ended)
