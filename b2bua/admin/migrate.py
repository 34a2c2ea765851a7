"""C{b2bua-admin migrate}: bring a provisioning database to the newest schema.

This is the one command that does not go through the API: it opens the
database from its URL (L{b2bua.db.database.Database}), applies the missing
migrations (L{b2bua.db.migrations.migrate}) and reports what it did.
L{migrate_database} is the Deferred-returning work, usable from any
running reactor; L{run_migrations} is the synchronous wrapper for the
command-line process, which owns its reactor and runs it just for this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from b2bua.db.database import Database, redact_url
from b2bua.db.migrations import applied_versions, migrate, migrations_for

__all__ = ["MigrationReport", "migrate_database", "run_migrations", "run_reactor"]

T = TypeVar("T")


@dataclass(frozen=True)
class MigrationReport:
    """What one run of the migrations did.

    @ivar database: the database URL, its password hidden.
    @ivar applied: the versions applied now (empty when already current).
    @ivar versions: every version the database has now, oldest first.
    @ivar names: the name of each known version (C{{"0001": "initial"}}).
    """

    database: str
    applied: tuple[str, ...]
    versions: tuple[str, ...]
    names: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        """The report as C{--json} prints it."""
        return {"database": self.database, "applied": list(self.applied),
                "versions": list(self.versions),
                "current": self.versions[-1] if self.versions else None}

    def as_text(self) -> str:
        """The report for people, one line per applied version and a summary."""
        label = {v: f"{v} ({self.names[v]})" if v in self.names else v for v in self.versions}
        current = self.versions[-1] if self.versions else "none"
        if not self.applied:
            return f"{self.database}: schema already at version {current}, nothing to apply\n"
        lines = [f"applied {label.get(version, version)}" for version in self.applied]
        lines.append(f"{self.database}: schema now at version {current}")
        return "\n".join(lines) + "\n"


def migrate_database(url: str, reactor: Any) -> Deferred[MigrationReport]:
    """Open C{url}, migrate it, read back its versions and close it again.

    @param reactor: a running reactor (the SQL runs in its thread pool).
    @return: a Deferred firing with the L{MigrationReport}, or failing with
        what went wrong (L{b2bua.db.migrations.SchemaTooNew}, a driver
        error); the database is closed either way.
    @raise ValueError: at once, for a URL that is not a database URL.
    """
    database = Database(url, reactor)
    names = {m.version: m.name for m in migrations_for(database.dialect.name)}
    outcome: dict[str, list[str]] = {}

    def record_applied(applied: list[str]) -> Deferred[list[str]]:
        outcome["applied"] = applied
        return database.run(applied_versions)

    def report(versions: list[str]) -> MigrationReport:
        return MigrationReport(redact_url(url), tuple(outcome["applied"]), tuple(versions),
                               names)

    def close(result: Any) -> Deferred[Any]:
        return database.close().addCallback(lambda _: result)

    d = migrate(database)
    d.addCallback(record_applied)
    d.addCallback(report)
    d.addBoth(close)
    return d


class Interrupted(Exception):
    """The reactor stopped (Ctrl-C, a signal) before the work finished."""


def run_reactor(work: Callable[[Any], Deferred[T] | T], reactor: Any) -> T:
    """Run C{reactor} until C{work(reactor)} is done; return or raise its result.

    Only for a process that owns its reactor (the command line): the reactor
    is stopped afterwards and cannot be run again.

    @raise Interrupted: when the reactor was stopped before C{work} finished.
    """
    outcome: list[Any] = []

    def start() -> None:
        d = maybeDeferred(work, reactor)
        d.addBoth(outcome.append)
        d.addCallback(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    if not outcome:
        raise Interrupted("interrupted before the work finished")
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


def run_migrations(url: str) -> MigrationReport:
    """Migrate C{url} with the global reactor (the command-line process only)."""
    from twisted.internet import reactor  # global-ok: the CLI process entry

    return run_reactor(lambda r: migrate_database(url, r), reactor)


def bootstrap_key(url: str, reactor: Any, name: str) -> Deferred[str]:
    """Create an admin API key directly in the (migrated) database at C{url}
    and fire with its plaintext: the first key of a deployment, since the
    API needs a key to create keys.  The database is closed either way."""
    from b2bua.db.changes import ChangeFeed
    from b2bua.db.interfaces import Scope
    from b2bua.db.repository import Repository

    database = Database(url, reactor)
    keys = Repository("api_key", database, ChangeFeed(), b"")
    d = keys.create({"name": name, "role": "admin"}, Scope.admin("b2bua-admin bootstrap"))
    d.addCallback(lambda row: str(row["key"]))

    def close(result: Any) -> Deferred[Any]:
        return database.close().addCallback(lambda _: result)

    return d.addBoth(close)


def run_bootstrap(url: str, name: str) -> str:
    """L{bootstrap_key} with the global reactor (the command-line process only)."""
    from twisted.internet import reactor  # global-ok: the CLI process entry

    return run_reactor(lambda r: bootstrap_key(url, r, name), reactor)

