"""Tests for C{b2bua-admin migrate} (L{b2bua.admin.migrate}): the report, the
synchronous reactor runner, the real migrations on a temporary SQLite file,
and the command run as its own process."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase, TestCase

import b2bua
from b2bua.admin.cli import Console, main
from b2bua.admin.migrate import Interrupted, MigrationReport, migrate_database, run_reactor
from b2bua.db.migrations import SchemaTooNew, migrations_for

#: The directory holding the C{b2bua} package (for the child process's path).
SOURCE = str(Path(b2bua.__file__).resolve().parent.parent)
#: Every version of this release, in order.
VERSIONS = tuple(m.version for m in migrations_for("sqlite"))
REPORT = MigrationReport("sqlite:///var/b2bua.db", ("0001",), ("0001",), {"0001": "initial"})


def schema_versions(path: str) -> list[str]:
    """The versions recorded in C{schema_migrations} of the SQLite file C{path}."""
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute(
            "SELECT version FROM schema_migrations ORDER BY version")]


class CommandTests(SynchronousTestCase):
    """C{main(["migrate", ...])} with a stand-in migrator."""

    def cli(self, *argv: str, migrator: Any,
            environ: dict[str, str] | None = None) -> tuple[int, str, str]:
        """Run C{b2bua-admin ARGV}; return status, stdout, stderr."""
        out, err = io.StringIO(), io.StringIO()
        console = Console(io.BytesIO(), out, err, environ or {}, migrator=migrator)
        return main(list(argv), console), out.getvalue(), err.getvalue()

    def test_default_database(self) -> None:
        """Without --database: B2BUA_DATABASE, else sqlite:///var/b2bua.db."""
        asked: list[str] = []

        def migrator(url: str) -> MigrationReport:
            asked.append(url)
            return REPORT

        self.cli("migrate", migrator=migrator)
        self.cli("migrate", migrator=migrator, environ={"B2BUA_DATABASE": "sqlite:///x.db"})
        self.cli("migrate", "--database", "sqlite:///y.db", migrator=migrator)
        self.assertEqual(asked, ["sqlite:///var/b2bua.db", "sqlite:///x.db", "sqlite:///y.db"])

    def test_text_and_json(self) -> None:
        """People get the versions applied; C{--json} gets the report."""
        code, out, _ = self.cli("migrate", migrator=lambda url: REPORT)
        self.assertEqual((code, out), (0, "applied 0001 (initial)\n"
                                          "sqlite:///var/b2bua.db: schema now at version 0001\n"))
        code, out, _ = self.cli("migrate", "--json", migrator=lambda url: REPORT)
        self.assertEqual(json.loads(out), {"database": "sqlite:///var/b2bua.db",
                                           "applied": ["0001"], "versions": ["0001"],
                                           "current": "0001"})

    def test_current(self) -> None:
        """Nothing to apply says so."""
        current = MigrationReport("sqlite:///a.db", (), ("0001",), {"0001": "initial"})
        self.assertEqual(self.cli("migrate", migrator=lambda url: current)[1],
                         "sqlite:///a.db: schema already at version 0001, nothing to apply\n")

    def test_failures(self) -> None:
        """A failure is one line naming the database, its password hidden."""
        def too_new(url: str) -> MigrationReport:
            raise SchemaTooNew("the database has schema version(s) ['0009'] that this "
                               "release does not know")

        def broken(url: str) -> MigrationReport:
            raise ConnectionError("server closed the connection\nmore detail")

        def interrupted(url: str) -> MigrationReport:
            raise Interrupted()

        url = "postgresql://ops:secret@db/b2bua"
        code, _, err = self.cli("migrate", "--database", url, migrator=too_new)
        self.assertEqual((code, err), (1, "b2bua-admin: migrate postgresql://ops:***@db/b2bua: "
                                          "the database has schema version(s) ['0009'] that "
                                          "this release does not know\n"))
        self.assertEqual(self.cli("migrate", "--database", url, migrator=broken)[2],
                         "b2bua-admin: migrate postgresql://ops:***@db/b2bua: "
                         "ConnectionError: server closed the connection\n")
        self.assertEqual(self.cli("migrate", migrator=interrupted)[2],
                         "b2bua-admin: migrate: interrupted (nothing half-applied: each run "
                         "is one transaction)\n")


class _Reactor:
    """Just enough of a reactor for L{run_reactor}: C{run} calls what was
    scheduled to run at start-up, and returns (as a stopped reactor would)."""

    def __init__(self) -> None:
        self.starting: list[Any] = []
        self.stopped = False

    def callWhenRunning(self, f: Any) -> None:
        self.starting.append(f)

    def run(self) -> None:
        for f in self.starting:
            f()

    def stop(self) -> None:
        self.stopped = True


class RunReactorTests(SynchronousTestCase):
    """L{run_reactor} runs a reactor just long enough for one piece of work."""

    def test_result(self) -> None:
        """The work's result is returned and the reactor stopped."""
        fake = _Reactor()
        self.assertEqual(run_reactor(lambda r: succeed(r is fake), fake), True)
        self.assertTrue(fake.stopped)

    def test_failure(self) -> None:
        """The work's failure is raised."""
        self.assertRaises(SchemaTooNew, run_reactor, lambda r: fail(SchemaTooNew("new")),
                          _Reactor())

    def test_interrupted(self) -> None:
        """A reactor that stopped before the work finished raises L{Interrupted}."""
        self.assertRaises(Interrupted, run_reactor, lambda r: Deferred(), _Reactor())


class MigrateDatabaseTests(TestCase):
    """L{migrate_database} on a real, temporary SQLite file (real reactor, bounded)."""

    async def test_applies_once(self) -> None:
        """The first run applies every version and records them; the second
        applies nothing."""
        path = os.path.abspath(self.mktemp()) + ".db"
        first = await migrate_database(f"sqlite:///{path}", reactor)
        self.assertEqual((first.applied, first.versions, first.names["0001"]),
                         (VERSIONS, VERSIONS, "initial"))
        self.assertEqual(schema_versions(path), list(VERSIONS))
        second = await migrate_database(f"sqlite:///{path}", reactor)
        self.assertEqual((second.applied, second.versions), ((), VERSIONS))

    async def test_too_new(self) -> None:
        """A database migrated by a newer release is refused (and closed)."""
        path = os.path.abspath(self.mktemp()) + ".db"
        await migrate_database(f"sqlite:///{path}", reactor)
        with sqlite3.connect(path) as connection:
            connection.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                               "VALUES ('9999', 'future', '2030-01-01T00:00:00+00:00')")
        with self.assertRaises(SchemaTooNew):
            await migrate_database(f"sqlite:///{path}", reactor)

    def test_bad_url(self) -> None:
        """A URL that is no database URL is refused at once."""
        self.assertRaises(ValueError, migrate_database, "mysql://h/db", reactor)


class ProcessTests(SynchronousTestCase):
    """C{python -m b2bua.admin migrate} as the operator runs it: its own process
    and reactor (bounded by a timeout)."""

    def run_admin(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run the tool in a child process, in a temporary working directory."""
        cwd = self.mktemp()
        os.makedirs(cwd)
        environ = {**os.environ, "PYTHONPATH": SOURCE}
        environ.pop("B2BUA_DATABASE", None)
        return subprocess.run([sys.executable, "-m", "b2bua.admin", *argv], cwd=cwd,
                              env=environ, capture_output=True, text=True, timeout=60)

    def test_migrate_default_database(self) -> None:
        """Without --database it creates and migrates ./var/b2bua.db."""
        done = self.run_admin("migrate")
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        applied = "".join(f"applied {m.version} ({m.name})\n"
                          for m in migrations_for("sqlite"))
        self.assertEqual(done.stdout, f"{applied}sqlite:///var/b2bua.db: schema now at version "
                                      f"{VERSIONS[-1]}\n")

    def test_migrate_twice_json(self) -> None:
        """An absolute --database; the second run applies nothing."""
        path = os.path.abspath(self.mktemp()) + ".db"
        self.assertEqual(self.run_admin("migrate", "--database", f"sqlite:///{path}")
                         .returncode, 0)
        done = self.run_admin("--json", "migrate", "--database", f"sqlite:///{path}")
        self.assertEqual(json.loads(done.stdout)["applied"], [])
        self.assertEqual(schema_versions(path), list(VERSIONS))

    def test_failure_is_one_line(self) -> None:
        """A database that cannot be opened: one line on stderr, no traceback."""
        blocker = os.path.abspath(self.mktemp())
        Path(blocker).write_text("a file, not a directory")
        done = self.run_admin("migrate", "--database", f"sqlite:///{blocker}/b2bua.db")
        self.assertEqual(done.returncode, 1)
        self.assertEqual(done.stderr.count("\n"), 1, done.stderr)
        self.assertTrue(done.stderr.startswith(f"b2bua-admin: migrate sqlite:///{blocker}/"),
                        done.stderr)


class BootstrapTests(TestCase):
    """C{b2bua-admin bootstrap}: the first admin key, straight into the database."""

    async def test_key_is_created_and_works(self) -> None:
        """The printed key is an admin key the database recognises; a second
        run makes another key (nothing is replaced)."""
        from b2bua.admin.migrate import bootstrap_key
        from b2bua.db.database import Database
        from b2bua.db.repository import find_api_key

        path = os.path.abspath(self.mktemp()) + ".db"
        url = f"sqlite:///{path}"
        await migrate_database(url, reactor)
        first = await bootstrap_key(url, reactor, "ops")
        second = await bootstrap_key(url, reactor, "ops2")
        self.assertNotEqual(first, second)
        database = Database(url, reactor)
        self.addCleanup(database.close)
        row = await find_api_key(database, first)
        self.assertEqual((row["role"], row["name"]), ("admin", "ops"))

    def test_command_line(self) -> None:
        """The command prints the key once; an unmigrated database is one
        clear error line."""
        cwd = self.mktemp()
        os.makedirs(cwd)
        environ = {**os.environ, "PYTHONPATH": SOURCE}
        environ.pop("B2BUA_DATABASE", None)

        def admin(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "b2bua.admin", *argv], cwd=cwd,
                                  env=environ, capture_output=True, text=True, timeout=60)

        refused = admin("bootstrap")
        self.assertNotEqual(refused.returncode, 0)
        self.assertEqual(len(refused.stderr.strip().splitlines()), 1, refused.stderr)
        self.assertNotIn("Traceback", refused.stderr)
        self.assertEqual(admin("migrate").returncode, 0)
        done = admin("bootstrap", "--json")
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        self.assertTrue(json.loads(done.stdout)["key"].startswith("b2k_"))
