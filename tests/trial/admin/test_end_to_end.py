"""End to end: C{b2bua-admin} against the real REST API (L{oam.api}) served by
the real OAM site on a loopback port, over a temporary SQLite database that
the tool itself migrated (C{python -m b2bua.admin migrate}, its own
process).

The API answers on the real reactor while each command runs in a worker
thread (the tool is blocking, as in its own process), so every step is
bounded by the tool's timeout and trial's.  The listening port, the
database and its threads are closed after the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.internet import reactor

from b2bua.db.database import Database
from b2bua.db.interfaces import Scope
from tests.trial.admin.realapi import RealAPITestCase
from tests.trial.admin.test_migrate import SOURCE

ADMIN = Scope.admin("test")
#: A rate deck the rating package accepts, and one with two bad rows.
DECK = "prefix,description,price,intervals\n33,France,0.05,60/6\n44,UK,0.04,1/1\n"
BAD_DECK = "prefix,description,price,intervals\n33,France,cheap,60/6\n44,UK,0.04,60/6\n" \
           "49,Germany,0.03,0/0\n"


class EndToEndTests(RealAPITestCase):
    """The daily operator tasks, through the real API."""

    async def setUp(self) -> None:
        """Migrate a fresh database with the tool, serve the API over it, make a key."""
        path = os.path.abspath(self.mktemp()) + ".db"
        url = f"sqlite:///{path}"
        migrated = subprocess.run(
            [sys.executable, "-m", "b2bua.admin", "migrate", "--database", url],
            env={**os.environ, "PYTHONPATH": SOURCE}, capture_output=True, text=True,
            timeout=60)
        self.assertEqual((migrated.returncode, migrated.stderr), (0, ""))
        database = Database(url, reactor)
        self.addCleanup(database.close)
        await self.serve_api(database, "end-to-end")

    def deck(self, text: str) -> str:
        """A rate file holding C{text}."""
        path = os.path.join(self.directory, f"deck{len(os.listdir(self.directory))}.csv")
        with open(path, "w") as f:
            f.write(text)
        return path

    async def test_operator_day(self) -> None:
        """Create a tenant with extensions, give it a DID, upload rates, issue
        a key, list calls; refusals come back as one line each."""
        code, out, err = await self.cli(
            "customer", "create", "--name", "Acme", "--domain", "acme.example",
            "--currency", "usd", "--extensions", "1000-1002", "--password", "s3cret-pw")
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn(" 1000    1000\n", out)
        accounts = await self.repos["accounts"].list(ADMIN, {})
        self.assertEqual(sorted(a["number"] for a in accounts.rows), ["1000", "1001", "1002"])

        code, out, err = await self.cli("--json", "customer", "show", "acme.example")
        self.assertEqual((code, err), (0, ""))
        shown = json.loads(out)
        self.assertEqual((shown["customer"]["currency"], len(shown["accounts"])), ("USD", 3))

        code, _, err = await self.cli("customer", "create", "--name", "Bad", "--domain",
                                      "bad domain!", "--currency", "EUR")
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("b2bua-admin: customers: validation failed: sip_domain"),
                        err)
        self.assertEqual(err.count("\n"), 1)

        code, out, err = await self.cli("did", "add", "+15551230000", "--customer",
                                        "acme.example", "--extension", "1001")
        self.assertEqual((code, err), (0, ""))
        target = shown["accounts"][1]["id"]
        self.assertIn(["target", str(target)], [line.split() for line in out.splitlines()])
        code, _, err = await self.cli("did", "add", "+15551230000", "--customer", "1")
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("b2bua-admin: dids: conflict: "), err)

        code, out, err = await self.cli("rates", "upload", self.deck(DECK), "--name", "retail",
                                        "--currency", "EUR")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("entries     2\n", out)
        code, out, err = await self.cli("rates", "upload", self.deck(BAD_DECK), "--name",
                                        "broken", "--currency", "EUR")
        lines = err.splitlines()
        self.assertEqual((code, out), (1, ""))
        self.assertTrue(lines[0].endswith(": refused, 2 bad rows"), err)
        self.assertTrue(lines[1].startswith("row 2, column price: "), err)
        self.assertTrue(lines[2].startswith("row 4, column intervals: "), err)

        code, out, err = await self.cli("--json", "apikey", "create", "--name", "portal",
                                        "--role", "customer", "--customer", "acme.example")
        self.assertEqual((code, err), (0, ""))
        customer_key = json.loads(out)["key"]
        code, out, err = await self.cli("calls", "list", key=customer_key)
        self.assertEqual((code, out, err), (0, "no calls\n", ""))

        code, _, err = await self.cli("customer", "list", key="b2k_" + "x" * 32)
        self.assertEqual((code, err), (1, "b2bua-admin: unauthorized (check --key)\n"))
        code, _, err = await self.cli("customer", "delete", "acme.example")
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("b2bua-admin: customers/1: conflict: "), err)
