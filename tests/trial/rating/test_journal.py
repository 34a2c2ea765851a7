"""The contract of L{IJournal}, run against every implementation.

L{JournalContract} is the one contract suite; it runs against
L{FileJournal} always (its I/O inline, and in its worker thread on the real
reactor) and against L{RedisStreamJournal} when C{REDIS_URL} is set (e.g.
C{redis://127.0.0.1:6379/0}).  Without C{REDIS_URL} the Redis tests are
skipped, except under C{CI=true}, where they fail.  The Redis tests use a
stream of their own, removed afterwards.

"Reopening" a journal stands for a restart: a new journal object on the
same file (or the same stream, group and consumer name).  A real crash
(SIGKILL) is in C{tests/trial/integration/test_cdr_crash.py}.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from b2bua.core.location_redis import redis_connection_args
from rating import journal as journal_module
from rating.journal import (
    DEFAULT_FLUSH_DELAY,
    FileJournal,
    IJournal,
    JournalEntry,
    JournalError,
    JournalLocked,
    RedisStreamJournal,
)
from tests.trial.redis_support import redis_skip, require_redis_url


class JournalContract:
    """The L{IJournal} contract; mixed into a trial C{TestCase} that
    provides L{make_journal}, L{reopen} and L{dead_letters}."""

    journal: Any

    async def make_journal(self) -> Any:
        """A fresh, empty journal."""
        raise NotImplementedError

    async def reopen(self) -> Any:
        """Close (or drop) the journal and open a new object on the same
        storage, as a restarted process would."""
        raise NotImplementedError

    async def dead_letters(self) -> list[dict[str, Any]]:
        """What was set aside: C{{"id", "reason", "record"}} each."""
        raise NotImplementedError

    async def setUp(self) -> None:
        """A fresh journal."""
        self.journal = await self.make_journal()

    async def append_all(self, *records: dict[str, Any]) -> list[str]:
        """Append each record, in order; their ids."""
        return [await self.journal.append(r) for r in records]

    async def test_provides_interface(self) -> None:
        """The journal provides L{IJournal}."""
        self.assertTrue(verifyObject(IJournal, self.journal))

    async def test_append_then_read(self) -> None:
        """Appended records come back in order, equal, with the ids the
        appends fired with."""
        records = [{"n": i, "text": "é ☎ \"q\"\n", "nested": {"a": [1, None, True]}}
                   for i in range(3)]
        ids = await self.append_all(*records)
        entries = await self.journal.read(10)
        self.assertEqual([e.id for e in entries], ids)
        self.assertEqual([e.record for e in entries], records)
        self.assertEqual(len(set(ids)), 3)

    async def test_read_limit(self) -> None:
        """C{read(limit)} hands out at most C{limit}, then the next ones."""
        await self.append_all(*({"n": i} for i in range(5)))
        seen = []
        for expected in (2, 2, 1, 0):
            entries = await self.journal.read(2)
            self.assertEqual(len(entries), expected)
            seen.extend(e.record["n"] for e in entries)
        self.assertEqual(seen, [0, 1, 2, 3, 4])

    async def test_not_handed_out_twice(self) -> None:
        """An entry read and not confirmed is not handed out again by the
        same object; one appended later is."""
        await self.append_all({"n": 1})
        self.assertEqual(len(await self.journal.read(10)), 1)
        self.assertEqual(await self.journal.read(10), [])
        await self.append_all({"n": 2})
        self.assertEqual([e.record for e in await self.journal.read(10)], [{"n": 2}])

    async def test_unconfirmed_replayed(self) -> None:
        """After a restart every unconfirmed entry (read or not) comes back,
        in order."""
        await self.append_all(*({"n": i} for i in range(4)))
        await self.journal.read(2)
        self.journal = await self.reopen()
        entries = await self.journal.read(10)
        self.assertEqual([e.record["n"] for e in entries], [0, 1, 2, 3])

    async def test_confirmed_not_replayed(self) -> None:
        """Confirmed entries never come back; the backlog counts the others."""
        await self.append_all(*({"n": i} for i in range(4)))
        self.assertEqual(await self.journal.backlog(), 4)
        entries = await self.journal.read(10)
        await self.journal.confirm([e.id for e in entries[:2]])
        self.assertEqual(await self.journal.backlog(), 2)
        self.journal = await self.reopen()
        self.assertEqual(await self.journal.backlog(), 2)
        entries = await self.journal.read(10)
        self.assertEqual([e.record["n"] for e in entries], [2, 3])
        await self.journal.confirm([e.id for e in entries])
        self.assertEqual(await self.journal.backlog(), 0)
        self.journal = await self.reopen()
        self.assertEqual(await self.journal.read(10), [])

    async def test_confirm_out_of_order(self) -> None:
        """Confirming later entries before an earlier one: the earlier one
        still comes back after a restart (later ones may, as duplicates);
        once all are confirmed none does."""
        await self.append_all(*({"n": i} for i in range(3)))
        entries = await self.journal.read(10)
        await self.journal.confirm([entries[2].id, entries[1].id])
        self.journal = await self.reopen()
        again = await self.journal.read(10)
        self.assertEqual(again[0].record, {"n": 0})
        await self.journal.confirm([e.id for e in again])
        self.journal = await self.reopen()
        self.assertEqual(await self.journal.read(10), [])

    async def test_unknown_ids_ignored(self) -> None:
        """Confirming ids that are unknown, or twice, does nothing."""
        (entry_id,) = await self.append_all({"n": 1})
        await self.journal.confirm(["nonsense", "9:99", "1-1"])
        entries = await self.journal.read(10)
        await self.journal.confirm([entry_id])
        await self.journal.confirm([entry_id])
        self.assertEqual(len(entries), 1)
        self.assertEqual(await self.journal.backlog(), 0)

    async def test_set_aside(self) -> None:
        """A set-aside entry goes to the dead letters with its reason and is
        confirmed: it never comes back."""
        await self.append_all({"n": 1}, {"n": 2})
        first, _ = await self.journal.read(10)
        await self.journal.set_aside([first], "refused: because")
        letters = await self.dead_letters()
        self.assertEqual([(d["id"], d["reason"], d["record"]) for d in letters],
                         [(first.id, "refused: because", {"n": 1})])
        self.journal = await self.reopen()
        self.assertEqual([e.record for e in await self.journal.read(10)], [{"n": 2}])

    async def test_not_json_refused(self) -> None:
        """Only JSON objects without NaN are appended."""
        for bad in ([1, 2], {"x": math.nan}, {"x": object()}):
            with self.assertRaises(JournalError):
                await self.journal.append(bad)
        self.assertEqual(await self.journal.backlog(), 0)

    async def test_many_concurrent_appends(self) -> None:
        """Appends made without waiting all become durable, in order."""
        ids = await gatherResults([self.journal.append({"n": i}) for i in range(300)])
        self.assertEqual(len(set(ids)), 300)
        entries = []
        while True:
            batch = await self.journal.read(128)
            if not batch:
                break
            entries.extend(batch)
        self.assertEqual([e.record["n"] for e in entries], list(range(300)))
        self.assertEqual([e.id for e in entries], ids)


class FileJournalSetup:
    """A L{FileJournal} in a fresh directory, inline I/O."""

    reactor: Any = None

    async def make_journal(self) -> FileJournal:
        """A journal at a new path."""
        directory = self.mktemp()  # type: ignore[attr-defined]
        os.makedirs(directory)
        self.path = os.path.join(directory, "cdrs.journal")
        journal = FileJournal(self.path, self.reactor)
        self.addCleanup(lambda: self.journal.close())  # type: ignore[attr-defined]
        return journal

    async def reopen(self) -> FileJournal:
        """Close and open the file again."""
        await self.journal.close()  # type: ignore[attr-defined]
        return FileJournal(self.path, self.reactor)

    async def dead_letters(self) -> list[dict[str, Any]]:
        """The lines of C{PATH.rejected}."""
        with open(self.path + ".rejected", encoding="utf-8") as letters:
            return [json.loads(line) for line in letters]


class FileJournalTests(FileJournalSetup, JournalContract, TestCase):
    """The contract against L{FileJournal} with its I/O inline, and what
    only a file journal does."""

    path: str

    async def test_append_is_durable_at_once(self) -> None:
        """Inline, an append has fired (durably written) when it returns,
        and the line is in the file."""
        d = self.journal.append({"n": 1})
        self.assertEqual(self.successResultOf(d), f"1:{os.path.getsize(self.path)}")
        with open(self.path, encoding="utf-8") as f:
            self.assertEqual(f.read().splitlines()[1:], ['{"n":1}'])

    async def test_locked(self) -> None:
        """A second journal on the same file is refused while the first is open."""
        with self.assertRaises(JournalLocked):
            FileJournal(self.path, self.reactor)
        await self.journal.close()
        self.journal = FileJournal(self.path, self.reactor)

    async def test_torn_tail_cut(self) -> None:
        """A last line without its newline (an append cut by a crash, never
        acknowledged) is cut on open; appends go on after the good lines."""
        await self.append_all({"n": 1}, {"n": 2})
        await self.journal.close()
        with open(self.path, "ab") as f:
            f.write(b'{"n":3,"tor')
        self.journal = FileJournal(self.path, self.reactor)
        await self.append_all({"n": 4})
        entries = await self.journal.read(10)
        self.assertEqual([e.record for e in entries], [{"n": 1}, {"n": 2}, {"n": 4}])
        with open(self.path, encoding="utf-8") as f:
            self.assertEqual(len(f.read().splitlines()), 4)

    async def test_failed_append_leaves_no_torn_line(self) -> None:
        """A write that fails half-way (disk full) fails the append and cuts
        the half line off; the next append and a restart are fine."""
        await self.append_all({"n": 1})
        real = journal_module._write_all

        def half(fd: int, data: bytes) -> None:
            real(fd, data[: len(data) // 2])
            raise OSError(28, "No space left on device")

        self.patch(journal_module, "_write_all", half)
        with self.assertRaises(JournalError):
            await self.journal.append({"n": 2, "pad": "x" * 100})
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.patch(journal_module, "_write_all", real)
        await self.append_all({"n": 3})
        self.journal = await self.reopen()
        entries = await self.journal.read(10)
        self.assertEqual([e.record for e in entries], [{"n": 1}, {"n": 3}])

    async def test_corrupt_line(self) -> None:
        """A complete line that is not a JSON object is handed out with no
        record and its raw text (for the reader to set aside)."""
        await self.append_all({"n": 1})
        await self.journal.close()
        with open(self.path, "ab") as f:
            f.write(b"not json\n")
        self.journal = FileJournal(self.path, self.reactor)
        await self.append_all({"n": 2})
        entries = await self.journal.read(10)
        self.assertEqual([(e.record, e.raw) for e in entries],
                         [({"n": 1}, ""), (None, "not json"), ({"n": 2}, "")])

    async def test_compaction(self) -> None:
        """Once everything is confirmed and the file is past C{compact_bytes}
        it is emptied and its generation bumped; ids of the old generation
        are ignored; nothing is replayed."""
        await self.journal.close()
        self.journal = FileJournal(self.path, self.reactor, compact_bytes=200)
        await self.append_all(*({"n": i, "pad": "x" * 40} for i in range(6)))
        entries = await self.journal.read(10)
        await self.journal.confirm([e.id for e in entries[:3]])
        self.assertGreater(os.path.getsize(self.path), 200)
        await self.journal.confirm([e.id for e in entries[3:]])
        with open(self.path, encoding="utf-8") as f:
            self.assertEqual(f.read(), '{"b2bua_journal": 1, "generation": 2}\n')
        (new_id,) = await self.append_all({"n": 6})
        self.assertTrue(new_id.startswith("2:"))
        await self.journal.confirm([entries[0].id])
        self.journal = await self.reopen()
        self.assertEqual([e.record for e in await self.journal.read(10)], [{"n": 6}])

    async def test_interrupted_compaction(self) -> None:
        """A crash after the file was emptied and written again but before
        the marker was: the marker's generation is older, so every entry of
        the new generation is replayed."""
        await self.append_all({"n": 1})
        entries = await self.journal.read(10)
        await self.journal.confirm([e.id for e in entries])
        await self.journal.close()
        with open(self.path, "wb") as f:
            f.write(b'{"b2bua_journal": 1, "generation": 2}\n{"n":2}\n')
        self.journal = FileJournal(self.path, self.reactor)
        self.assertEqual([e.record for e in await self.journal.read(10)], [{"n": 2}])

    async def test_lost_marker_replays_everything(self) -> None:
        """Without its marker the journal replays the whole file (duplicates
        that the idempotent writer ignores) rather than lose anything."""
        await self.append_all({"n": 1}, {"n": 2})
        await self.journal.confirm([e.id for e in await self.journal.read(10)])
        await self.journal.close()
        os.remove(self.path + ".offset")
        self.journal = FileJournal(self.path, self.reactor)
        self.assertEqual(len(await self.journal.read(10)), 2)

    async def test_not_a_journal(self) -> None:
        """A file whose first line is not a journal header is refused."""
        await self.journal.close()
        with open(self.path, "wb") as f:
            f.write(b'{"something": "else"}\n')
        with self.assertRaises(JournalError):
            FileJournal(self.path, self.reactor)
        self.journal = FileJournal(self.path + ".other", self.reactor)

    async def test_close_waits_and_refuses(self) -> None:
        """Close releases the lock; afterwards appends fail."""
        await self.journal.close()
        await self.journal.close()
        with self.assertRaises(JournalError):
            await self.journal.append({"n": 1})
        other = FileJournal(self.path, self.reactor)
        await other.close()


class ThreadedFileJournalTests(FileJournalTests):
    """The same, with the file I/O in the journal's worker thread (the
    production mode: the reactor never waits for the disk)."""

    reactor = reactor

    async def test_gathers_by_default(self) -> None:
        """In the worker, appends are gathered for L{DEFAULT_FLUSH_DELAY}."""
        self.assertEqual(self.journal.flush_delay, DEFAULT_FLUSH_DELAY)

    async def test_append_is_durable_at_once(self) -> None:
        """In the worker, an append fires later, once written and synced."""
        d = self.journal.append({"n": 1})
        self.assertNoResult(d)
        self.assertEqual(await d, f"1:{os.path.getsize(self.path)}")

    async def test_group_commit(self) -> None:
        """Appends made while a write is running are synced together: far
        fewer syncs than appends."""
        syncs = []
        real = os.fdatasync

        def counting(fd: int) -> None:
            syncs.append(fd)
            real(fd)

        self.patch(journal_module.os, "fdatasync", counting)
        await gatherResults([self.journal.append({"n": i}) for i in range(200)])
        self.assertLess(len(syncs), 20)


class GatheredAppendTests(TestCase):
    """Appends gathered for C{flush_delay} and written together: one write
    and one sync for the group, each Deferred fired only after that sync,
    every Deferred of a failed write failed (inline I/O, a L{Clock})."""

    def setUp(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        self.path = os.path.join(directory, "cdrs.journal")
        self.clock = Clock()
        self.events: list[str] = []
        real_sync = os.fdatasync
        real_write = journal_module._write_all

        def sync(fd: int) -> None:
            real_sync(fd)
            self.events.append("sync")

        def write(fd: int, data: bytes) -> None:
            self.events.append(f"write {data.count(b'{')}")
            real_write(fd, data)

        self.patch(journal_module.os, "fdatasync", sync)
        self.patch(journal_module, "_write_all", write)

    def open(self, **options: Any) -> FileJournal:
        """A journal on the clock, closed after the test."""
        journal = FileJournal(self.path, self.clock, **options)
        self.addCleanup(journal.close)
        return journal

    def test_one_write_for_many_appends(self) -> None:
        """50 appends within the delay: nothing written until it is over,
        then one write and one sync, and only then does every Deferred fire,
        each with its own id in order."""
        journal = self.open(flush_delay=0.01)
        fired: list[str] = []
        ds = []
        for n in range(50):
            d = journal.append({"n": n})
            d.addCallback(lambda entry_id: (fired.append(entry_id),
                                            self.events.append("fired"))[0])
            ds.append(d)
        self.clock.advance(0.005)
        self.assertEqual(self.events, [])
        self.assertEqual(fired, [])
        self.clock.advance(0.005)
        self.assertEqual(self.events, ["write 50", "sync"] + ["fired"] * 50)
        offsets = [int(i.split(":")[1]) for i in fired]
        self.assertEqual(offsets, sorted(offsets))
        self.assertEqual(offsets[-1], os.path.getsize(self.path))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_read_sees_only_durable_entries(self) -> None:
        """Entries still gathering are not handed out."""
        journal = self.open(flush_delay=0.01)
        journal.append({"n": 1})
        self.assertEqual(self.successResultOf(journal.read(10)), [])
        self.clock.advance(0.01)
        entries = self.successResultOf(journal.read(10))
        self.assertEqual([e.record for e in entries], [{"n": 1}])

    def test_failed_write_fails_every_append(self) -> None:
        """A group whose write fails fails every append in it (nothing of it
        stays in the file); the next group is written normally."""
        journal = self.open(flush_delay=0.01)

        def broken(fd: int, data: bytes) -> None:
            raise OSError(28, "No space left on device")

        self.patch(journal_module, "_write_all", broken)
        ds = [journal.append({"n": n}) for n in range(5)]
        self.clock.advance(0.01)
        for d in ds:
            self.failureResultOf(d, JournalError)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        size = os.path.getsize(self.path)
        self.patch(journal_module, "_write_all", lambda fd, data: os.write(fd, data))
        d = journal.append({"n": 9})
        self.clock.advance(0.01)
        line = b'{"n":9}\n'
        self.assertEqual(self.successResultOf(d), f"1:{size + len(line)}")

    def test_full_group_written_at_once(self) -> None:
        """A group reaching C{max_group} is written without waiting."""
        journal = self.open(flush_delay=10, max_group=3)
        ds = [journal.append({"n": n}) for n in range(3)]
        self.assertEqual(self.events, ["write 3", "sync"])
        for d in ds:
            self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_close_writes_what_is_gathering(self) -> None:
        """Closing writes the appends still waiting for their delay first."""
        journal = self.open(flush_delay=10)
        d = journal.append({"n": 1})
        closed = journal.close()
        self.successResultOf(d)
        self.successResultOf(closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        with open(self.path, encoding="utf-8") as f:
            self.assertEqual(f.read().splitlines()[1:], ['{"n":1}'])

    def test_defaults(self) -> None:
        """Inline I/O writes each append at once unless a delay is asked
        for; no delay without a clock; a negative delay is refused."""
        journal = self.open()
        self.assertEqual(journal.flush_delay, 0)
        self.successResultOf(journal.append({"n": 1}))
        self.successResultOf(journal.close())
        journal = FileJournal(self.path, flush_delay=5)
        self.addCleanup(journal.close)
        self.assertEqual(journal.flush_delay, 0)
        self.assertRaises(ValueError, FileJournal, self.path + "2", self.clock, flush_delay=-1)
        self.assertRaises(ValueError, FileJournal, self.path + "3", self.clock, max_group=0)


class RedisJournalSetup:
    """A L{RedisStreamJournal} on a stream of its own: skipped without
    C{REDIS_URL}, failing under C{CI=true}."""

    timeout = 30
    skip = redis_skip("Redis journal tests")
    options: dict[str, Any] = {}

    async def connect(self) -> Any:
        """A new connection, closed after the test."""
        import txredisapi

        url = require_redis_url(self, "Redis journal tests")
        connection = await txredisapi.Connection(reconnect=False, connectTimeout=5,
                                                 replyTimeout=10,
                                                 **redis_connection_args(url))
        self.addCleanup(connection.disconnect)  # type: ignore[attr-defined]
        return connection

    async def make_journal(self) -> RedisStreamJournal:
        """A journal on a unique stream (deleted afterwards)."""
        self.redis = await self.connect()
        self.stream = f"test:b2bua:cdrs:{uuid.uuid4().hex}"
        self.addCleanup(self.redis.execute_command, "DEL", self.stream,  # type: ignore[attr-defined]
                        self.stream + ":rejected")
        return RedisStreamJournal(self.redis, self.stream, consumer="node-a", **self.options)

    async def reopen(self) -> RedisStreamJournal:
        """A new object with the same consumer name (a restarted node)."""
        return RedisStreamJournal(self.redis, self.stream, consumer="node-a", **self.options)

    async def dead_letters(self) -> list[dict[str, Any]]:
        """The entries of C{STREAM:rejected}."""
        rows = await self.redis.execute_command("XRANGE", self.stream + ":rejected", "-", "+")
        out = []
        for _, fields in rows:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            out.append({"id": values["id"], "reason": values["reason"],
                        "record": json.loads(values["record"])})
        return out


class RedisStreamJournalTests(RedisJournalSetup, JournalContract, TestCase):
    """The contract against L{RedisStreamJournal}, and taking over the
    entries of a consumer that died."""

    async def test_confirmed_entries_deleted(self) -> None:
        """Confirming acknowledges and deletes: the stream holds only what
        is not confirmed."""
        await self.append_all({"n": 1}, {"n": 2})
        entries = await self.journal.read(10)
        await self.journal.confirm([entries[0].id])
        self.assertEqual(await self.redis.execute_command("XLEN", self.stream), 1)
        pending = await self.redis.execute_command("XPENDING", self.stream, "writers")
        self.assertEqual(pending[0], 1)

    async def test_dead_consumer_claimed(self) -> None:
        """Entries a consumer read and never confirmed (it died) are claimed
        by another node once idle for C{claim_idle}, and not before."""
        await self.append_all(*({"n": i} for i in range(3)))
        await self.journal.read(10)
        other = RedisStreamJournal(self.redis, self.stream, consumer="node-b",
                                   claim_idle=3600, **self.options)
        self.assertEqual(await other.read(10), [])
        other = RedisStreamJournal(self.redis, self.stream, consumer="node-b",
                                   claim_idle=0, **self.options)
        entries = await other.read(10)
        self.assertEqual([e.record["n"] for e in entries], [0, 1, 2])
        await other.confirm([e.id for e in entries])
        self.assertEqual(await other.backlog(), 0)
        again = await self.reopen()
        self.assertEqual(await again.read(10), [])

    async def test_claimed_entry_deleted_meanwhile(self) -> None:
        """A pending entry deleted from the stream is dropped from the
        group when claimed, never handed out empty."""
        (entry_id,) = await self.append_all({"n": 1})
        await self.journal.read(10)
        await self.redis.execute_command("XDEL", self.stream, entry_id)
        other = RedisStreamJournal(self.redis, self.stream, consumer="node-b",
                                   claim_idle=0, **self.options)
        self.assertEqual(await other.read(10), [])
        pending = await self.redis.execute_command("XPENDING", self.stream, "writers")
        self.assertEqual(pending[0], 0)

    async def test_replicas_not_reached(self) -> None:
        """With C{replicas} and no replica answering in time, the append
        fails (the writer then stores the CDR directly)."""
        journal = RedisStreamJournal(self.redis, self.stream, consumer="node-a",
                                     replicas=1, replica_timeout=0.05, **self.options)
        with self.assertRaises(JournalError):
            await journal.append({"n": 1})

    async def test_undecodable_entry(self) -> None:
        """A stream entry that is not a JSON object comes with no record."""
        await self.redis.execute_command("XADD", self.stream, "*", "record", "[1, 2]")
        (entry,) = await self.journal.read(10)
        self.assertEqual((entry.record, entry.raw), (None, "[1, 2]"))
        await self.journal.set_aside([entry], "not a record")
        self.assertEqual(await self.journal.backlog(), 0)


class RedisStreamJournalPendingClaimTests(RedisStreamJournalTests):
    """The same with C{XPENDING} + C{XCLAIM} instead of C{XAUTOCLAIM}."""

    options = {"autoclaim": False}


class JournalEntryTests(TestCase):
    """L{JournalEntry} is a plain value."""

    def test_equality(self) -> None:
        """Entries with the same id, record and raw text are equal."""
        self.assertEqual(JournalEntry("1:2", {"a": 1}), JournalEntry("1:2", {"a": 1}))
