"""Tests for L{b2bua.db.changes}: the in-process feed, and changes that
cross processes through PostgreSQL C{LISTEN/NOTIFY} (real server, real
reactor, bounded waits)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from b2bua.db.changes import CHANNEL, Change, ChangeFeed, PostgresListener
from b2bua.db.dialect import POSTGRESQL, SQLITE
from tests.trial.db.support import ADMIN, open_database, postgresql_url, stack


class _Recorder:
    """A stand-in connection that records the statements it is given."""

    def __init__(self, dialect: Any) -> None:
        self.dialect = dialect
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Record C{sql}."""
        self.statements.append((sql, tuple(params)))
        return []


class ChangeFeedTests(SynchronousTestCase):
    """L{ChangeFeed} within one process."""

    def test_publish_reaches_subscribers_in_order(self) -> None:
        """Subscribers hear every change, in order, until they unsubscribe."""
        feed, first, second = ChangeFeed(), [], []
        feed.subscribe(first.append)
        unsubscribe = feed.subscribe(second.append)
        feed.publish("account", 3, "create")
        unsubscribe()
        unsubscribe()
        feed.publish("account", 3, "delete")
        self.assertEqual(first, [Change("account", 3, "create"), Change("account", 3, "delete")])
        self.assertEqual(second, [Change("account", 3, "create")])

    def test_failing_subscriber_is_logged(self) -> None:
        """A subscriber that raises does not stop the others."""
        feed, heard = ChangeFeed(), []

        def broken(change: Change) -> None:
            raise RuntimeError("boom")

        feed.subscribe(broken)
        feed.subscribe(heard.append)
        feed.publish("did", 1, "update")
        self.assertEqual(heard, [Change("did", 1, "update")])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_notify_only_on_postgresql(self) -> None:
        """C{notify} issues pg_notify with the origin on PostgreSQL, nothing on SQLite."""
        feed = ChangeFeed()
        sqlite, postgresql = _Recorder(SQLITE), _Recorder(POSTGRESQL)
        feed.notify(sqlite, "account", 1, "create")  # type: ignore[arg-type]
        feed.notify(postgresql, "account", 1, "create")  # type: ignore[arg-type]
        self.assertEqual(sqlite.statements, [])
        [(sql, (channel, payload))] = postgresql.statements
        self.assertIn("pg_notify", sql)
        self.assertEqual(channel, CHANNEL)
        self.assertEqual(json.loads(payload), {"entity": "account", "id": 1, "action": "create",
                                               "origin": feed.origin})

    def test_deliver(self) -> None:
        """Foreign notifications are published; our own and malformed ones are not."""
        feed, heard = ChangeFeed(), []
        feed.subscribe(heard.append)
        feed.deliver(json.dumps({"entity": "card", "id": 9, "action": "delete", "origin": "x"}))
        feed.deliver(json.dumps({"entity": "card", "id": 9, "action": "delete",
                                 "origin": feed.origin}))
        for junk in ("not json", "[]", json.dumps({"entity": 1, "action": "x"}),
                     json.dumps({"id": 1})):
            feed.deliver(junk)
        feed.resync()
        self.assertEqual(heard, [Change("card", 9, "delete"), Change("*", None, "resync")])


class ListenerTests(TestCase):
    """L{PostgresListener} against a real PostgreSQL (C{DATABASE_URL})."""

    timeout = 30

    def setUp(self) -> None:
        """Skip (or fail under CI) without C{DATABASE_URL}."""
        self.url = postgresql_url(self)

    def listen(self, feed: ChangeFeed) -> PostgresListener:
        """Start a listener for C{feed}, stopped after the test."""
        listener = PostgresListener(self.url, reactor, feed, poll_interval=0.05,
                                    min_backoff=0.05)
        listener.start()
        self.addCleanup(listener.stop)
        return listener

    def heard(self, feed: ChangeFeed, wanted: Change | Callable[[Change], bool],
              within: float = 1.0) -> Deferred[None]:
        """A Deferred firing when C{feed} publishes C{wanted} (a change, or a
        test of one), failing after C{within} seconds."""
        d: Deferred[None] = Deferred()
        matches = wanted if callable(wanted) else wanted.__eq__

        def check(change: Change) -> None:
            if matches(change) and not d.called:
                d.callback(None)

        unsubscribe = feed.subscribe(check)
        d.addTimeout(within, reactor)
        d.addBoth(lambda result: (unsubscribe(), result)[1])
        return d

    async def test_change_reaches_another_process_within_a_second(self) -> None:
        """A change committed through one Database reaches the listener of
        another within one second, once; the writer hears it once too."""
        writer = await open_database(self, "postgresql")
        repos, writer_feed, build = stack(writer)
        writer_heard: list[Change] = []
        writer_feed.subscribe(writer_heard.append)
        await self.listen(writer_feed).when_listening()
        reader_feed = ChangeFeed()
        reader_heard: list[Change] = []
        reader_feed.subscribe(reader_heard.append)
        await self.listen(reader_feed).when_listening()
        arrival = self.heard(reader_feed, lambda c: c.entity == "vendor" and c.action == "create")
        row = await build.make("vendor")
        await arrival
        created = Change("vendor", row["id"], "create")
        self.assertEqual(reader_heard, [created])
        arrival = self.heard(reader_feed, Change("vendor", row["id"], "update"))
        await repos["vendors"].update(row["id"], {"status": "suspended"}, ADMIN)
        await arrival
        self.assertEqual(writer_heard, [created, Change("vendor", row["id"], "update")])

    async def test_rolled_back_changes_are_not_announced(self) -> None:
        """A notification inside a failed transaction is never delivered."""
        feed, heard = ChangeFeed(), []
        feed.subscribe(heard.append)
        await self.listen(feed).when_listening()
        database = await open_database(self, "postgresql", migrated=False)
        other = ChangeFeed()

        def fail_after_notify(connection: Any) -> None:
            other.notify(connection, "vendor", 77, "create")
            raise RuntimeError("rolled back")

        with self.assertRaises(RuntimeError):
            await database.run(fail_after_notify)
        arrival = self.heard(feed, Change("vendor", 78, "create"))
        await database.run(lambda c: other.notify(c, "vendor", 78, "create"))
        await arrival
        self.assertNotIn(Change("vendor", 77, "create"), heard)

    async def test_reconnects_and_resyncs(self) -> None:
        """When its connection is killed the listener reconnects, publishes a
        resync, and hears later changes."""
        feed = ChangeFeed()
        listener = self.listen(feed)
        await listener.when_listening()
        resync = self.heard(feed, Change("*", None, "resync"), within=5.0)
        database = await open_database(self, "postgresql", migrated=False)
        await database.run(lambda c: c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = ? AND pid <> pg_backend_pid()",
            (listener.application_name,)))
        await resync
        self.assertGreaterEqual(listener.connections, 2)
        arrival = self.heard(feed, Change("did", 5, "delete"), within=2.0)
        await database.run(lambda c: ChangeFeed().notify(c, "did", 5, "delete"))
        await arrival

    async def test_stop_is_clean(self) -> None:
        """Stopping ends the thread promptly; stopping twice is harmless."""
        listener = self.listen(ChangeFeed())
        await listener.when_listening()
        await listener.stop()
        await listener.stop()
        self.assertFalse(listener.running)
