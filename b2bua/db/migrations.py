"""Versioned schema migrations.

The frozen SQL lives in L{b2bua.db.versions}, one module per version and
dialect.  L{migrate} applies, in version order, every version not yet in the
C{schema_migrations} table, all in one transaction, and records each one
there.  It is idempotent (a second run applies nothing) and safe when
several processes start at once: on PostgreSQL a transaction-scoped
advisory lock serializes them, on SQLite C{BEGIN IMMEDIATE} does.  A
database that has a version this program does not know (a newer release
migrated it) is refused rather than used.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from b2bua.db import versions

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from b2bua.db.database import Connection, Database

__all__ = ["ADVISORY_LOCK", "Migration", "SchemaTooNew", "applied_versions", "migrate",
           "migrations_for"]

#: The PostgreSQL advisory lock key held while migrating (ASCII "b2bua-db").
ADVISORY_LOCK = 0x62326275612D6462

_MODULE = re.compile(
    r"^v(?P<version>[0-9]{4})_(?P<name>[a-z0-9_]+)_(?P<dialect>postgresql|sqlite)$")

_BOOKKEEPING = {
    "postgresql": """CREATE TABLE IF NOT EXISTS schema_migrations (
    version TEXT NOT NULL CONSTRAINT schema_migrations_pkey PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
)""",
    "sqlite": """CREATE TABLE IF NOT EXISTS schema_migrations (
    version TEXT NOT NULL CONSTRAINT schema_migrations_pkey PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)""",
}


class SchemaTooNew(Exception):
    """The database was migrated by a newer release than this one."""


@dataclass(frozen=True)
class Migration:
    """One version of the schema for one dialect.

    @ivar version: four digits (C{"0001"}), ordered as text.
    @ivar name: a short description (C{"initial"}).
    @ivar sql: the frozen statements.
    """

    version: str
    name: str
    sql: str


def migrations_for(dialect: str) -> list[Migration]:
    """Every migration of C{dialect} (C{postgresql} or C{sqlite}), in order.

    @raise ValueError: for an unknown dialect or a duplicated version.
    """
    if dialect not in _BOOKKEEPING:
        raise ValueError(f"no migrations for dialect {dialect!r}")
    found: dict[str, Migration] = {}
    for info in pkgutil.iter_modules(versions.__path__):
        match = _MODULE.match(info.name)
        if match is None or match["dialect"] != dialect:
            continue
        module = importlib.import_module(f"{versions.__name__}.{info.name}")
        version = match["version"]
        if version in found or version != module.VERSION:
            raise ValueError(f"migration {info.name}: duplicated or mislabelled version")
        found[version] = Migration(version, module.NAME, module.SQL)
    return [found[v] for v in sorted(found)]


def applied_versions(connection: Connection) -> list[str]:
    """The versions recorded in C{schema_migrations} (inside a transaction)."""
    connection.execute(_BOOKKEEPING[connection.dialect.name])
    rows = connection.execute("SELECT version FROM schema_migrations ORDER BY version")
    return [row["version"] for row in rows]


def _apply(connection: Connection, now: datetime) -> list[str]:
    """In a worker thread: lock, compare, apply what is missing, record it."""
    dialect = connection.dialect
    if dialect.name == "postgresql":
        connection.execute("SELECT pg_advisory_xact_lock(?)", (ADVISORY_LOCK,))
    known = migrations_for(dialect.name)
    done = set(applied_versions(connection))
    unknown = done - {m.version for m in known}
    if unknown:
        raise SchemaTooNew(f"the database has schema version(s) {sorted(unknown)} that this "
                           "release does not know: upgrade the software, not the schema")
    applied = []
    for migration in known:
        if migration.version in done:
            continue
        connection.execute_script(migration.sql)
        connection.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, dialect.to_db("timestamp", now)))
        applied.append(migration.version)
    return applied


def migrate(database: Database) -> Deferred[list[str]]:
    """Bring the schema of C{database} to the newest version.

    @return: a Deferred firing with the versions applied now (empty when the
        schema was already current), or failing with L{SchemaTooNew}.
    """
    now = datetime.fromtimestamp(database.reactor.seconds(), UTC)
    return database.run(lambda connection: _apply(connection, now))
