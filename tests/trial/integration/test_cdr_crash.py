"""CDRs survive SIGKILL: a child process journals CDRs and writes them to
SQLite until it is killed at a random point; a new writer replays the
journal, and every acknowledged CDR is stored exactly once.

Each round runs a small child Python process (C{sys.executable -c}) with
the production set-up: a L{FileJournal} doing its I/O in its worker thread
(compacting often: at 16 KiB), a L{CDRWriter} on the real reactor with
small batches, and a SQLite L{Database}.  The child appends CDRs in bursts
and prints C{acked N} once the append of CDR N has fired (it is durable).
The parent kills it with SIGKILL after a random number of
acknowledgements plus a random few milliseconds, so the kill lands
anywhere: during an append's write or sync, between a batch's commit and
its confirm, while the marker is replaced or the file emptied.  Later
rounds start on what the killed ones left (their start is itself a
replay).  Finally the parent replays the journal with a new writer and
checks the table: every acknowledged CDR is there, nothing is there twice
(no row was even renamed as "another call"), nothing that was never
appended is there, and each row is the CDR as it was built.

Bounded: a few rounds of a few hundred CDRs, on the local disk only.  Set
C{CDR_CRASH_SEED} to replay a failing run (the seed is in the failure).
"""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from b2bua.db.database import Database
from b2bua.db.dialect import parse_timestamp
from b2bua.db.migrations import migrate
from rating.cdr import CDR
from rating.cdr_writer import CDRWriter
from rating.journal import FileJournal

ROOT = Path(__file__).resolve().parents[3]
ROUNDS = 4
PER_ROUND = 250
CHILD_TIMEOUT = 60.0

CHILD = r'''
import random, sys
from datetime import UTC, datetime
from decimal import Decimal
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults
from b2bua.db.database import Database
from b2bua.db.dialect import parse_timestamp
from b2bua.db.migrations import migrate
from rating.cdr import CDR
from rating.cdr_writer import CDRWriter
from rating.journal import FileJournal

path, url, first, count, seed = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
rng = random.Random(seed)

def cdr(n):
    return CDR(call_id=f"crash-{n}@example.com", started_at=1700000000.0 + n,
               answered_at=1700000001.0 + n, ended_at=1700000031.0 + n, billsec=30,
               disposition="answered", cost=Decimal(n).scaleb(-6), currency="EUR",
               legs=[{"attempt": 1, "vendor": f"v{n % 3}"}], breakdown={"n": n})

def acked(_, n):
    sys.stdout.write(f"acked {n}\n")
    sys.stdout.flush()

async def main(reactor):
    database = Database(url, reactor)
    await migrate(database)
    journal = FileJournal(path, reactor, compact_bytes=16384)
    writer = CDRWriter(journal, database, reactor, batch_size=7, interval=0.002)
    await writer.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    n = first
    while n < first + count:
        burst = [writer.append(cdr(i)).addCallback(acked, i)
                 for i in range(n, min(first + count, n + rng.randint(1, 12)))]
        n += len(burst)
        await gatherResults(burst)
        await task.deferLater(reactor, rng.random() * 0.004, lambda: None)
    sys.stdout.write("done\n")
    sys.stdout.flush()
    await task.deferLater(reactor, 60, lambda: None)

task.react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
'''


def expected(n: int) -> CDR:
    """The CDR the child builds for number C{n}."""
    return CDR(call_id=f"crash-{n}@example.com", started_at=1700000000.0 + n,
               answered_at=1700000001.0 + n, ended_at=1700000031.0 + n, billsec=30,
               disposition="answered", cost=Decimal(n).scaleb(-6), currency="EUR",
               legs=[{"attempt": 1, "vendor": f"v{n % 3}"}], breakdown={"n": n})


class ChildRun:
    """One child process, read line by line with a deadline."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=ROOT,
                                        env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.process.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        self.buffer = b""
        self.deadline = time.monotonic() + CHILD_TIMEOUT

    def line(self) -> str | None:
        """The next line, or None at its end."""
        while b"\n" not in self.buffer:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise AssertionError("the child process took too long")
            if not self.selector.select(remaining):
                continue
            chunk = os.read(self.process.stdout.fileno(), 65536)  # type: ignore[union-attr]
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def kill(self) -> str:
        """SIGKILL it (if still running); what it printed after what was
        read (stdout), then its stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        if self.process.stdout.closed:  # type: ignore[union-attr]
            return ""
        self.selector.close()
        rest = self.buffer + self.process.stdout.read()  # type: ignore[union-attr]
        stderr = self.process.stderr.read()  # type: ignore[union-attr]
        self.process.stdout.close()  # type: ignore[union-attr]
        self.process.stderr.close()  # type: ignore[union-attr]
        return (rest + b"\n" + stderr).decode(errors="replace")


class CrashTests(TestCase):
    """SIGKILL at random points loses no acknowledged CDR and stores none twice."""

    timeout = 240

    async def test_kill_nine_then_replay(self) -> None:
        """Rounds of append-and-write killed at random, then a replay: the
        table holds every acknowledged CDR exactly once, as built."""
        seed = int(os.environ.get("CDR_CRASH_SEED") or random.SystemRandom().randrange(2**32))
        rng = random.Random(seed)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "cdrs.journal")
        url = f"sqlite:///{os.path.join(directory, 'cdrs.db')}"
        acked: set[int] = set()
        killed_at = []
        for round_ in range(ROUNDS):
            first = round_ * PER_ROUND
            child = ChildRun([path, url, str(first), str(PER_ROUND), str(rng.randrange(2**32))])
            self.addCleanup(child.kill)
            kill_after = rng.randrange(PER_ROUND)
            seen = 0
            line = child.line()
            if line != "ready":
                self.fail(f"seed {seed}: the child did not start: {line!r} {child.kill()}")
            while seen < kill_after:
                line = child.line()
                if line is None or line == "done":
                    break
                self.assertTrue(line.startswith("acked "), line)
                acked.add(int(line.split()[1]))
                seen += 1
            time.sleep(rng.random() * 0.02)
            # acknowledgements printed before the kill count too
            for rest in child.kill().splitlines():
                if rest.startswith("acked "):
                    acked.add(int(rest.split()[1]))
                    seen += 1
            killed_at.append(seen)
        database = Database(url, reactor)
        self.addCleanup(database.close)
        await migrate(database)
        before = await database.run(lambda c: c.execute("SELECT count(*) AS n FROM cdrs"))
        journal = FileJournal(path, reactor)
        self.addCleanup(journal.close)
        writer = CDRWriter(journal, database, reactor, registry=CollectorRegistry())
        await writer.flush()
        rows = await database.run(
            lambda c: c.execute("SELECT call_id, started_at, cost, breakdown FROM cdrs"))
        ids = [r["call_id"] for r in rows]
        context = f"seed {seed}, killed after {killed_at} acknowledgements"
        self.assertEqual(len(ids), len(set(ids)), context)
        stored = set()
        for row in rows:
            self.assertRegex(row["call_id"], r"^crash-[0-9]+@example\.com$", context)
            n = int(row["call_id"].split("-")[1].split("@")[0])
            stored.add(n)
            built = expected(n).columns(datetime.now(UTC))
            self.assertEqual((parse_timestamp(row["started_at"]), Decimal(row["cost"]),
                              json.loads(row["breakdown"])),
                             (built["started_at"], built["cost"], built["breakdown"]), context)
        self.assertEqual(acked - stored, set(), context)
        attempted = set(range(ROUNDS * PER_ROUND))
        self.assertEqual(stored - attempted, set(), context)
        written = writer.registry.get_sample_value("b2bua_cdrs_written_total") or 0
        self.assertEqual(before[0]["n"] + written, len(rows), context)
        self.assertEqual(await journal.backlog(), 0, context)
        self.assertGreater(len(acked), 0, context)
