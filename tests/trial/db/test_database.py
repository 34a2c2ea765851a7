"""Tests for L{b2bua.db.database}: URLs, transactions in worker threads,
closing, and recovery from a dropped PostgreSQL connection."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from b2bua.db.database import Database, DatabaseClosed, redact_url, split_statements, sqlite_path
from b2bua.db.dialect import POSTGRESQL, SQLITE, dialect_for_url
from tests.trial.db.support import open_database


class URLTests(SynchronousTestCase):
    """Parsing database URLs."""

    def test_sqlite_paths(self) -> None:
        """Three slashes: relative; four: absolute; C{:memory:} as is."""
        self.assertEqual(sqlite_path("sqlite:///var/b2bua.db"), "var/b2bua.db")
        self.assertEqual(sqlite_path("sqlite:////srv/b2bua.db"), "/srv/b2bua.db")
        self.assertEqual(sqlite_path("sqlite:///:memory:"), ":memory:")
        self.assertRaises(ValueError, sqlite_path, "sqlite:///")
        self.assertRaises(ValueError, sqlite_path, "sqlite://host/x.db")

    def test_dialects(self) -> None:
        """The scheme picks the dialect; others are refused."""
        self.assertIs(dialect_for_url("sqlite:///x.db"), SQLITE)
        self.assertIs(dialect_for_url("postgresql://h/db"), POSTGRESQL)
        self.assertIs(dialect_for_url("postgres://h/db"), POSTGRESQL)
        self.assertRaises(ValueError, dialect_for_url, "mysql://h/db")
        self.assertRaises(ValueError, Database, "mysql://h/db", reactor)

    def test_redact(self) -> None:
        """Passwords never appear in messages."""
        self.assertEqual(redact_url("postgresql://u:s3cret@h:5432/db"),
                         "postgresql://u:***@h:5432/db")
        self.assertEqual(redact_url("postgresql://u@h/db"), "postgresql://u@h/db")

    def test_split_statements(self) -> None:
        """Frozen SQL splits at line-ending semicolons; comments are dropped."""
        script = "-- a comment\nCREATE TABLE a (\n  x INTEGER\n);\n\nCREATE INDEX i ON a (x);\n"
        self.assertEqual(split_statements(script),
                         ["CREATE TABLE a (\n  x INTEGER\n)", "CREATE INDEX i ON a (x)"])

    def test_placeholders(self) -> None:
        """C{?} becomes C{%s} for psycopg and literal C{%} is escaped."""
        self.assertEqual(POSTGRESQL.sql("SELECT '%' || ?"), "SELECT '%%' || %s")
        self.assertEqual(SQLITE.sql("SELECT ?"), "SELECT ?")


class TransactionContract:
    """Transactions on one dialect."""

    dialect = ""
    timeout = 30

    async def test_commit_and_rollback(self) -> None:
        """A function that returns is committed; one that raises is rolled back."""
        database = await open_database(self, self.dialect, migrated=False)
        await database.run(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))

        def insert_and_fail(connection: Any) -> None:
            connection.execute("INSERT INTO t (x) VALUES (?)", (1,))
            raise KeyError("oops")

        with self.assertRaises(KeyError):
            await database.run(insert_and_fail)
        await database.run(lambda c: c.execute("INSERT INTO t (x) VALUES (?)", (2,)))
        rows = await database.run(lambda c: c.execute("SELECT x FROM t"))
        self.assertEqual(rows, [{"x": 2}])

    async def test_close(self) -> None:
        """Closing waits for running work; afterwards work is refused."""
        database = Database(await self._url(), reactor)
        running = database.run(lambda c: c.execute("SELECT 1 AS one"))
        closing = database.close()
        self.assertEqual(await running, [{"one": 1}])
        await closing
        await database.close()
        with self.assertRaises(DatabaseClosed):
            await database.run(lambda c: None)

    async def _url(self) -> str:
        """A fresh database URL of this dialect."""
        from tests.trial.db.support import database_url

        return database_url(self, self.dialect)


class SQLiteTransactionTests(TransactionContract, TestCase):
    """Transactions on SQLite."""

    dialect = "sqlite"

    async def test_memory_is_one_database(self) -> None:
        """C{:memory:} keeps one connection, so every call sees the same data."""
        database = await open_database(self, "sqlite", migrated=False,
                                       url="sqlite:///:memory:")
        await database.run(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))
        await database.run(lambda c: c.execute("INSERT INTO t (x) VALUES (1)"))
        self.assertEqual(await database.run(lambda c: c.execute("SELECT x FROM t")), [{"x": 1}])

    async def test_creates_the_directory(self) -> None:
        """The database file's directory is created when missing."""
        path = os.path.join(os.path.abspath(self.mktemp()), "var", "b2bua.db")
        database = await open_database(self, "sqlite", migrated=False, url=f"sqlite:///{path}")
        await database.run(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))
        self.assertTrue(os.path.exists(path))
        self.assertEqual(sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0],
                         "wal")

    async def test_foreign_keys_are_enforced(self) -> None:
        """SQLite connections enforce foreign keys."""
        database = await open_database(self, "sqlite", migrated=False)
        rows = await database.run(lambda c: c.execute("PRAGMA foreign_keys"))
        self.assertEqual(list(rows[0].values()), [1])


class PostgreSQLTransactionTests(TransactionContract, TestCase):
    """Transactions on PostgreSQL (C{DATABASE_URL})."""

    dialect = "postgresql"

    async def test_dropped_connection_is_replaced(self) -> None:
        """A connection killed while idle is replaced transparently."""
        database = Database(await self._url(), reactor, max_threads=1)
        self.addCleanup(database.close)
        pid = (await database.run(lambda c: c.execute("SELECT pg_backend_pid() AS pid")))[0]
        killer = await open_database(self, "postgresql", migrated=False)
        await killer.run(lambda c: c.execute("SELECT pg_terminate_backend(?)", (pid["pid"],)))
        again = (await database.run(lambda c: c.execute("SELECT pg_backend_pid() AS pid")))[0]
        self.assertNotEqual(again["pid"], pid["pid"])

    async def test_time_zone_is_utc(self) -> None:
        """Sessions run in UTC."""
        database = await open_database(self, "postgresql", migrated=False)
        rows = await database.run(lambda c: c.execute("SHOW TIME ZONE"))
        self.assertEqual(list(rows[0].values()), ["UTC"])
