"""Tests for L{b2bua.db.migrations}: versions applied once, in one
transaction, safely under a race, and a schema that is exactly the model's
(so drift between the model and the frozen migrations is caught)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import DeferredList
from twisted.trial.unittest import SynchronousTestCase, TestCase

from b2bua.db import migrations
from b2bua.db.database import Connection, Database
from b2bua.db.migrations import Migration, SchemaTooNew, migrate, migrations_for
from b2bua.db.model import ENTITIES, entity
from tests.trial.db.support import database_url, open_database

#: How each model type is declared, per dialect (lower case).
TYPES = {
    "sqlite": {"id": "integer", "text": "text", "int": "integer", "decimal": "text",
               "bool": "integer", "json": "text", "timestamp": "text", "date": "text",
               "enum": "text", "ref": "integer"},
    "postgresql": {"id": "bigint", "text": "text", "int": "bigint", "decimal": "numeric",
                   "bool": "boolean", "json": "jsonb", "timestamp": "timestamp with time zone",
                   "date": "date", "enum": "text", "ref": "bigint"},
}
#: Audit records outlive what they describe: their refs are not foreign keys.
NO_FOREIGN_KEYS = {"audit_record"}
#: Every version of this release, in order (the same for both dialects).
VERSIONS = [m.version for m in migrations_for("sqlite")]


def _sqlite_schema(connection: Connection) -> dict[str, Any]:
    """Tables, columns (type, not null), unique sets, foreign keys and indexed
    leading columns of a SQLite database."""
    out: dict[str, Any] = {}
    tables = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    for (table,) in ((t["name"],) for t in tables):
        columns = {c["name"]: (c["type"].lower(), bool(c["notnull"] or c["pk"]))
                   for c in connection.execute(f"PRAGMA table_info({table})")}
        unique, leading = set(), set()
        for index in connection.execute(f"PRAGMA index_list({table})"):
            names = [i["name"] for i in connection.execute(f"PRAGMA index_info({index['name']})")]
            leading.add(names[0])
            if index["unique"] and index["origin"] == "u":
                unique.add(frozenset(names))
        foreign = {f["from"]: (f["table"], f["on_delete"].upper())
                   for f in connection.execute(f"PRAGMA foreign_key_list({table})")}
        out[table] = {"columns": columns, "unique": unique, "foreign": foreign,
                      "leading": leading}
    return out


def _postgresql_schema(connection: Connection) -> dict[str, Any]:
    """The same description of the current PostgreSQL schema."""
    out: dict[str, Any] = {}
    for c in connection.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM "
            "information_schema.columns WHERE table_schema = current_schema()"):
        table = out.setdefault(c["table_name"], {"columns": {}, "unique": set(), "foreign": {},
                                                 "leading": {"id"}})
        table["columns"][c["column_name"]] = (c["data_type"], c["is_nullable"] == "NO")
    for c in connection.execute(
            "SELECT t.relname AS tab, c.contype AS kind, c.confdeltype AS del, "
            "f.relname AS target, ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH "
            "ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = c.conrelid AND "
            "a.attnum = k.n ORDER BY k.o)::text[] AS cols FROM pg_constraint c "
            "JOIN pg_class t ON t.oid = c.conrelid LEFT JOIN pg_class f ON f.oid = c.confrelid "
            "WHERE t.relnamespace = current_schema()::regnamespace"):
        table = out[c["tab"]]
        if c["kind"] == "u":
            table["unique"].add(frozenset(c["cols"]))
            table["leading"].add(c["cols"][0])
        elif c["kind"] == "f":
            table["foreign"][c["cols"][0]] = (c["target"], {"r": "RESTRICT"}.get(c["del"],
                                                                                 c["del"]))
    for i in connection.execute(
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = current_schema()"):
        first = i["indexdef"].split("(", 1)[1].split(")")[0].split(",")[0].strip()
        out[i["tablename"]]["leading"].add(first)
    return out


class MigrationContract:
    """Migrations on one dialect."""

    dialect = ""
    timeout = 60

    async def schema(self, database: Database) -> dict[str, Any]:
        """The described schema of C{database}."""
        describe = _sqlite_schema if self.dialect == "sqlite" else _postgresql_schema
        return await database.run(describe)

    async def test_idempotent(self) -> None:
        """The first run applies every version, the next ones nothing."""
        database = await open_database(self, self.dialect, migrated=False)
        self.assertEqual(await migrate(database), VERSIONS)
        self.assertEqual(await migrate(database), [])
        rows = await database.run(lambda c: c.execute(
            "SELECT version FROM schema_migrations ORDER BY version"))
        self.assertEqual([r["version"] for r in rows], VERSIONS)

    async def test_schema_matches_the_model(self) -> None:
        """Every table of the model exists with exactly its columns, types,
        NOT NULLs, unique constraints, RESTRICT foreign keys and indexes."""
        schema = await self.schema(await open_database(self, self.dialect))
        self.assertEqual(set(schema), {e.collection for e in ENTITIES} | {"schema_migrations"})
        for e in ENTITIES:
            table = schema[e.collection]
            expected = {f.name: (TYPES[self.dialect][f.type],
                                 f.type == "id" or f.required or f.default is not None
                                 or f.name in ("created_at", "updated_at"))
                        for f in e.fields}
            self.assertEqual(table["columns"], expected, e.name)
            self.assertEqual(table["unique"], {frozenset({f.name, *f.unique_with})
                                               for f in e.fields if f.unique or f.unique_with},
                             e.name)
            refs = {} if e.name in NO_FOREIGN_KEYS else {
                f.name: (entity(f.ref or "").collection, "RESTRICT")
                for f in e.fields if f.type == "ref"}
            self.assertEqual(table["foreign"], refs, e.name)
            for f in e.fields:
                if f.filterable or f.type == "ref":
                    self.assertIn(f.name, table["leading"], f"{e.name}.{f.name} not indexed")

    async def test_race(self) -> None:
        """Two databases migrating at once: one applies, the other waits and
        finds nothing to do."""
        url = database_url(self, self.dialect)
        first = await open_database(self, self.dialect, migrated=False, url=url)
        second = await open_database(self, self.dialect, migrated=False, url=url)
        results = await DeferredList([migrate(first), migrate(second)], fireOnOneErrback=True)
        self.assertEqual(sorted(r for _, r in results), [[], VERSIONS])

    async def test_newer_schema_is_refused(self) -> None:
        """A version this release does not know stops the migration."""
        database = await open_database(self, self.dialect)
        await database.run(lambda c: c.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            ("9999", "future", "2030-01-01T00:00:00Z")))
        with self.assertRaises(SchemaTooNew):
            await migrate(database)

    async def test_failed_migration_is_rolled_back(self) -> None:
        """A migration that fails half-way leaves no trace."""
        real = migrations_for(self.dialect)
        broken = Migration(f"{len(real) + 1:04d}", "broken",
                           "CREATE TABLE half_done (x INTEGER);\nTHIS IS NOT SQL;\n")
        self.patch(migrations, "migrations_for", lambda dialect: [*real, broken])
        database = await open_database(self, self.dialect, migrated=False)
        with self.assertRaises(Exception):  # noqa: B017 - each driver raises its own error
            await migrate(database)
        self.patch(migrations, "migrations_for", lambda dialect: real)
        self.assertEqual(await migrate(database), VERSIONS)
        tables = await self.schema(database)
        self.assertNotIn("half_done", tables)


class SQLiteMigrationTests(MigrationContract, TestCase):
    """Migrations on SQLite."""

    dialect = "sqlite"


class PostgreSQLMigrationTests(MigrationContract, TestCase):
    """Migrations on PostgreSQL (C{DATABASE_URL})."""

    dialect = "postgresql"


class MigrationListTests(SynchronousTestCase):
    """The frozen migration modules."""

    def test_both_dialects_have_the_same_versions(self) -> None:
        """Every version exists for both dialects, numbered from 0001 without gaps."""
        sqlite = [(m.version, m.name) for m in migrations_for("sqlite")]
        postgresql = [(m.version, m.name) for m in migrations_for("postgresql")]
        self.assertEqual(sqlite, postgresql)
        self.assertEqual([v for v, _ in sqlite],
                         [f"{n:04d}" for n in range(1, len(sqlite) + 1)])

    def test_unknown_dialect(self) -> None:
        """Asking for another dialect is an error."""
        self.assertRaises(ValueError, migrations_for, "oracle")
