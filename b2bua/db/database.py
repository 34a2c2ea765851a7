"""A provisioning database opened from a URL, driven from the reactor.

C{sqlite:///var/b2bua.db} (a path relative to the working directory;
C{sqlite:////abs/path.db} for an absolute one; C{sqlite:///:memory:} for
tests) or C{postgresql://user@host:5432/name} (libpq URI: query parameters
such as C{?options=-csearch_path%3Dmyschema} pass through).

All SQL runs on a bounded L{ThreadPool}, never in the reactor thread:
L{Database.run} hands a function to a worker thread, which calls it with a
L{Connection} inside one transaction (committed when the function returns,
rolled back when it raises), and fires the returned Deferred in the reactor
thread.  PostgreSQL gets one psycopg connection per worker thread (a
broken one is replaced on the next call); SQLite gets a single worker thread
and a single connection, so C{:memory:} is one database and writers never
contend inside the process (C{BEGIN IMMEDIATE} and a busy timeout handle
other processes).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IReactorCore
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from b2bua.db.dialect import Dialect, dialect_for_url

__all__ = ["Connection", "Database", "DatabaseClosed", "redact_url", "sqlite_path"]

T = TypeVar("T")

#: The oldest SQLite with C{RETURNING}.
SQLITE_MINIMUM = (3, 35, 0)


class DatabaseClosed(Exception):
    """Work was handed to a L{Database} after L{Database.close}."""


def redact_url(url: str) -> str:
    """Return C{url} with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def sqlite_path(url: str) -> str:
    """Return the file path of a C{sqlite:///} URL (or C{":memory:"}).

    Three slashes name a path relative to the working directory, four an
    absolute one.

    @raise ValueError: when the URL holds no path.
    """
    rest = url.split(":", 1)[1]
    if not rest.startswith("///"):
        raise ValueError("a SQLite URL looks like sqlite:///var/b2bua.db")
    path = unquote(rest[3:].split("?", 1)[0])
    if not path:
        raise ValueError("sqlite:/// needs a file path (or :memory:)")
    return path


class Connection:
    """One connection as seen by code running inside L{Database.run}.

    @ivar raw: the driver's connection (C{sqlite3} or C{psycopg}).
    @ivar dialect: the L{Dialect} to build SQL and convert values with.
    """

    def __init__(self, raw: Any, dialect: Dialect) -> None:
        self.raw = raw
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run one statement written with C{?} placeholders.

        @return: the rows it produced, as dicts (empty for statements
            without a result).
        """
        cursor = self.raw.execute(self.dialect.sql(sql), tuple(params))
        if cursor.description is None:
            return []
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def execute_script(self, script: str) -> None:
        """Run each statement of C{script} (parameterless frozen SQL)."""
        for statement in split_statements(script):
            self.raw.execute(statement)


def split_statements(script: str) -> list[str]:
    """Split frozen migration SQL at the semicolons that end a line.

    Comment lines (C{--}) are dropped.  The migrations hold no semicolon
    inside a literal, so this is exact for them.
    """
    statements, current = [], []
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        current.append(line)
        if stripped.endswith(";"):
            statements.append("\n".join(current).rstrip().rstrip(";"))
            current = []
    if current:
        statements.append("\n".join(current))
    return statements


class Database:
    """A database reached through a bounded pool of worker threads.

    @ivar url: the URL it was opened from.
    @ivar dialect: its L{Dialect}.
    @ivar reactor: the reactor results are delivered in (and whose clock
        stamps rows).
    """

    def __init__(self, url: str, reactor: Any, *, max_threads: int = 4) -> None:
        """
        @param url: C{sqlite:///...} or C{postgresql://...}.
        @param reactor: provides C{callFromThread} (and C{seconds}).
        @param max_threads: the pool bound for PostgreSQL (SQLite uses one).
        @raise ValueError: for an unsupported URL.
        """
        self.url = url
        self.dialect = dialect_for_url(url)
        self.reactor = reactor
        if self.dialect.name == "sqlite":
            self._path = sqlite_path(url)
            max_threads = 1
        elif max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self._local = threading.local()
        self._opened: list[Any] = []
        self._opened_lock = threading.Lock()
        self._pending: set[Deferred[Any]] = set()
        self._state = "open"
        self._waiters: list[Deferred[None]] = []
        self._pool = ThreadPool(minthreads=0, maxthreads=max_threads,
                                name=f"b2bua-db-{self.dialect.name}")
        self._pool.start()
        self._trigger = None
        if IReactorCore.providedBy(reactor):
            self._trigger = reactor.addSystemEventTrigger("during", "shutdown", self.close)

    def __repr__(self) -> str:
        return f"<Database {redact_url(self.url)}>"

    # -- running work ------------------------------------------------------------------

    def run(self, fn: Callable[[Connection], T]) -> Deferred[T]:
        """Call C{fn(connection)} in a worker thread inside one transaction.

        @return: a Deferred firing (in the reactor thread) with what C{fn}
            returned, or failing with what it raised (after a rollback).
        """
        if self._state != "open":
            return fail(DatabaseClosed(f"{self!r} is closed"))
        d = deferToThreadPool(self.reactor, self._pool, self._transaction, fn)
        self._pending.add(d)

        def done(result: Any) -> Any:
            self._pending.discard(d)
            return result

        return d.addBoth(done)

    def _transaction(self, fn: Callable[[Connection], T]) -> T:
        """In a worker thread: one transaction around C{fn}."""
        if self.dialect.name == "sqlite":
            connection = self._connection()
            raw = connection.raw
            raw.execute("BEGIN IMMEDIATE")
            try:
                result = fn(connection)
                raw.execute("COMMIT")
            except BaseException:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise
            return result
        return self._postgresql_transaction(fn, retry=True)

    def _postgresql_transaction(self, fn: Callable[[Connection], T], *, retry: bool) -> T:
        """One psycopg transaction around C{fn}.

        A connection found dead when the transaction begins (the server
        restarted, an idle session was killed) is replaced and the
        transaction tried once more: nothing of it had run.
        """
        connection = self._connection()
        raw = connection.raw
        started = False
        try:
            with raw.transaction():
                started = True
                return fn(connection)
        except BaseException:
            if not (raw.closed or raw.broken):
                raise
            self._forget(raw)
            if started or not retry:
                raise
        return self._postgresql_transaction(fn, retry=False)

    def _connection(self) -> Connection:
        """The worker thread's connection, opened (or reopened) as needed."""
        current = getattr(self._local, "connection", None)
        if current is not None and not self._is_broken(current.raw):
            return current
        if current is not None:
            self._forget(current.raw)
        raw = self._open_sqlite() if self.dialect.name == "sqlite" else self._open_postgresql()
        with self._opened_lock:
            self._opened.append(raw)
        current = Connection(raw, self.dialect)
        self._local.connection = current
        return current

    def _is_broken(self, raw: Any) -> bool:
        """Whether a psycopg connection has died (SQLite ones do not)."""
        return self.dialect.name != "sqlite" and (raw.closed or raw.broken)

    def _forget(self, raw: Any) -> None:
        """Close and drop a connection that can no longer be used."""
        with self._opened_lock:
            if raw in self._opened:
                self._opened.remove(raw)
        try:
            raw.close()
        except Exception:
            pass
        if getattr(self._local, "connection", None) is not None \
                and self._local.connection.raw is raw:
            self._local.connection = None

    def _open_sqlite(self) -> Any:
        """Open the SQLite database (creating the file's directory)."""
        import sqlite3

        if sqlite3.sqlite_version_info < SQLITE_MINIMUM:
            raise RuntimeError(f"SQLite {sqlite3.sqlite_version} is too old: provisioning "
                               "storage needs 3.35 or later")
        if self._path != ":memory:":
            directory = os.path.dirname(self._path)
            if directory:
                os.makedirs(directory, exist_ok=True)
        raw = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False,
                              timeout=30.0)
        raw.execute("PRAGMA foreign_keys = ON")
        raw.execute("PRAGMA busy_timeout = 30000")
        if self._path != ":memory:":
            # switching to WAL needs the file to itself and does not always
            # wait on the busy timeout: retry while another connection of
            # another process or Database holds it (this runs in a worker
            # thread, never in the reactor's)
            for attempt in range(100):
                try:
                    raw.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError as error:
                    if "locked" not in str(error) or attempt == 99:
                        raise
                    time.sleep(0.05)
        return raw

    def _open_postgresql(self) -> Any:
        """Open a psycopg connection in autocommit mode, in UTC."""
        import psycopg

        raw = psycopg.connect(self.url, autocommit=True)
        raw.execute("SET TIME ZONE 'UTC'")
        return raw

    # -- closing -----------------------------------------------------------------------

    def close(self) -> Deferred[None]:
        """Let running work finish, then stop the threads and close connections.

        Calling it again (while closing, or after) is harmless.
        """
        if self._state == "closed":
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        if self._state == "closing":
            return waiter
        self._state = "closing"
        if self._trigger is not None:
            try:
                self.reactor.removeSystemEventTrigger(self._trigger)
            except (ValueError, KeyError):
                pass
            self._trigger = None
        waiting = DeferredList(list(self._pending), consumeErrors=True)
        waiting.addCallback(self._stop)
        return waiter

    def _stop(self, _: object) -> None:
        """Stop the (now idle) threads, close every connection, tell the waiters."""
        self._pool.stop()
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for raw in opened:
            try:
                raw.close()
            except Exception:
                pass
        self._state = "closed"
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)
