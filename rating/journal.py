"""Durable queues of records waiting to be stored: L{IJournal}.

The CDR writer (L{rating.cdr_writer}) appends every CDR to a journal first;
the append is the durability point.  It then reads entries in batches,
writes them to SQL and confirms them.  Whatever was appended and not
confirmed is handed out again after a restart (I{replay}), so delivery is
at least once, and the SQL insert is idempotent (keyed by the call id).

Two implementations share one contract suite
(C{tests/trial/rating/test_journal.py}):

  - L{FileJournal}: the embedded default.  An append-only file of JSON
    lines (the first line a header naming the file's I{generation}), made
    durable with C{fdatasync} per group commit, and a small marker file
    C{PATH.offset} holding the generation and the byte offset up to which
    every entry is confirmed.  One process owns the file (an exclusive
    C{flock}).  When everything is confirmed and the file has grown past
    C{compact_bytes}, it is emptied and its generation bumped.
  - L{RedisStreamJournal}: a Redis stream shared by every node; C{XADD} to
    append, a consumer group (C{XREADGROUP}) to read, C{XACK} + C{XDEL} to
    confirm, C{XAUTOCLAIM} (or C{XPENDING} + C{XCLAIM}) to take over the
    entries of a consumer that died.

Entries that can never be stored (a record SQL refuses for good) are
I{set aside}: copied durably to a dead-letter place (C{PATH.rejected}, or
the stream C{STREAM:rejected}) for an operator, then confirmed, so one bad
record never blocks the queue and is never silently dropped.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorCore, IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

__all__ = ["FileJournal", "IJournal", "JournalClosed", "JournalEntry", "JournalError",
           "JournalLocked", "RedisStreamJournal"]

log = Logger()
T = TypeVar("T")

#: Format version written in a file journal's header line.
FORMAT_VERSION = 1
#: Bytes read at a time when a file journal hands out entries.
_CHUNK = 1 << 20
#: A first line without a newline and at most this long is a header whose
#: write was cut by a crash; anything longer is not a journal.
_TORN_HEADER = 256
#: How long a file journal whose I/O runs in its worker thread gathers
#: appends before writing them (one write, one C{fdatasync}, one thread
#: hand-off for all of them); see L{FileJournal}.
DEFAULT_FLUSH_DELAY = 0.02
#: A group this large is written at once, without waiting for the delay.
DEFAULT_MAX_GROUP = 512


@dataclass(frozen=True)
class JournalEntry:
    """One appended record, as handed out by L{IJournal.read}.

    @ivar id: the journal's name for it (pass it to L{IJournal.confirm}).
    @ivar record: the record appended (a JSON object), or C{None} when the
        stored bytes could not be decoded (set such an entry aside).
    @ivar raw: the stored text, kept for entries that could not be decoded.
    """

    id: str
    record: dict[str, Any] | None
    raw: str = ""


class JournalError(Exception):
    """The journal could not do what was asked (I/O error, bad file)."""


class JournalLocked(JournalError):
    """Another process holds the journal file."""


class JournalClosed(JournalError):
    """The journal was closed."""


class IJournal(Interface):
    """A durable FIFO of JSON records with at-least-once delivery.

    Every method returns a Deferred.  A reader reads, stores, then confirms;
    entries it read and did not confirm are not handed to it again by the
    same journal object, and are handed out again by a new one (after a
    restart or a crash).
    """

    # zope.interface method declarations take no self (hence noqa: N805)
    def append(record: dict[str, Any]) -> Deferred[str]:  # noqa: N805
        """Append C{record} (a JSON object); fire with its id once it is
        durable (it survives a crash of this process from then on)."""

    def read(limit: int) -> Deferred[list[JournalEntry]]:  # noqa: N805
        """Fire with up to C{limit} entries not yet confirmed nor handed
        out by this object, oldest first (after a restart: the unconfirmed
        entries of before first)."""

    def confirm(ids: Sequence[str]) -> Deferred[None]:  # noqa: N805
        """These entries are stored: never hand them out again.  Unknown or
        already confirmed ids are ignored."""

    def set_aside(entries: Sequence[JournalEntry], reason: str) -> Deferred[None]:  # noqa: N805
        """Copy C{entries} durably to the dead-letter place with C{reason},
        then confirm them."""

    def backlog() -> Deferred[int]:
        """Fire with the number of durable entries not confirmed yet."""

    def close() -> Deferred[None]:
        """Finish what is in progress and release the journal's resources."""


#: One encoder for every record (C{json.dumps} with options builds a new
#: one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_record(record: dict[str, Any]) -> str:
    """One line of JSON for C{record} (no newline inside, no NaN).

    @raise JournalError: when C{record} is not a JSON object.
    """
    if not isinstance(record, dict):
        raise JournalError("a journal record must be a JSON object")
    try:
        return _ENCODER.encode(record)
    except (TypeError, ValueError) as error:
        raise JournalError(f"record is not plain JSON: {error}") from None


def decode_record(text: str) -> dict[str, Any] | None:
    """The record stored as C{text}, or C{None} when it is not a JSON object."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# ---- file journal: blocking I/O, run inline or in the journal's worker thread ----------


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of C{data} (C{os.write} may write fewer)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(path: str) -> None:
    """Make a rename or a creation in C{path}'s directory durable."""
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _append_lines(fd: int, start: int, data: bytes) -> int:
    """Append C{data} at C{start} (the file's end) and make it durable.

    On failure the file is cut back to C{start}, so that a later append is
    never glued to a torn line.  @return: the new end of the file.
    """
    try:
        end = os.fstat(fd).st_size
        if end != start:
            raise JournalError(f"journal file is {end} bytes long, expected {start}: "
                               "was it written by something else?")
        _write_all(fd, data)
        os.fdatasync(fd)
    except BaseException:
        try:
            os.ftruncate(fd, start)
            os.fdatasync(fd)
        except OSError:
            pass
        raise
    return start + len(data)


def _read_lines(fd: int, start: int, end: int, limit: int) -> tuple[list[tuple[int, str]], int]:
    """Up to C{limit} complete lines between C{start} and C{end}.

    @return: (end offset of each line, its text) in order, and the offset
        after the last line returned.
    """
    lines: list[tuple[int, str]] = []
    buffer = b""
    base = start  # file offset of buffer[0]
    position = start  # next byte to read
    index = 0
    while len(lines) < limit:
        newline = buffer.find(b"\n", index)
        if newline < 0:
            if position >= end:
                break
            chunk = os.pread(fd, min(_CHUNK, end - position), position)
            if not chunk:
                break
            buffer = buffer[index:] + chunk
            base += index
            index = 0
            position += len(chunk)
            continue
        lines.append((base + newline + 1, buffer[index:newline].decode("utf-8", "replace")))
        index = newline + 1
    return lines, base + index


def _write_marker(path: str, generation: int, offset: int) -> None:
    """Replace the marker file atomically and durably."""
    temporary = path + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, json.dumps({"generation": generation, "offset": offset}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    _fsync_directory(path)


def _read_marker(path: str) -> tuple[int, int] | None:
    """The (generation, offset) of the marker file, if it is readable."""
    try:
        with open(path, "rb") as marker:
            value = json.loads(marker.read())
        generation, offset = value["generation"], value["offset"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(generation, int) and isinstance(offset, int):
        return generation, offset
    return None


def _header(generation: int) -> bytes:
    """The first line of a file journal of C{generation}."""
    return (json.dumps({"b2bua_journal": FORMAT_VERSION, "generation": generation})
            + "\n").encode()


def _compact(fd: int, marker_path: str, generation: int) -> int:
    """Empty the file, start C{generation}, then point the marker at it (in
    that order: a crash in between leaves a marker of an older generation,
    which means "replay the whole file").  @return: the header's end."""
    header_end = _reset(fd, generation)
    _write_marker(marker_path, generation, header_end)
    return header_end


def _reset(fd: int, generation: int) -> int:
    """Empty the file and start C{generation}; @return: the header's end."""
    os.ftruncate(fd, 0)
    header = _header(generation)
    os.pwrite(fd, header, 0)
    os.fsync(fd)
    return len(header)


def _append_durably(path: str, text: str) -> None:
    """Append C{text} to the file at C{path}, synced (dead letters)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        _write_all(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_directory(path)


class _Inline:
    """Runs the journal's I/O in the calling thread (tests, tools)."""

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Call C{fn} now; a Deferred of its result or its exception."""
        return maybeDeferred(fn, *args)

    def stop(self) -> None:
        """Nothing to stop."""


class _Worker:
    """Runs the journal's I/O, in order, in one thread of its own."""

    def __init__(self, reactor: Any, name: str) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=1, name=name)
        self._pool.start()

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """Queue C{fn} on the thread; its result arrives in the reactor thread."""
        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    def stop(self) -> None:
        """Stop the thread (after the queued work)."""
        self._pool.stop()


@implementer(IJournal)
class FileJournal:
    """L{IJournal} in a local file, for one process (see the module docstring).

    Group commit: appends are gathered for C{flush_delay} seconds (from the
    first one of a group) and then written, synced and handed to the worker
    thread together; appends that arrive while a write is in progress are
    written by the next one, at once.  Each append's Deferred still fires
    only once the write that holds it has been synced (and every Deferred of
    a failed write fails).  Under load one write, one C{fdatasync} and one
    thread hand-off then cover many appends, instead of one each.

    @param path: the journal file (its directory must exist); the marker is
        C{PATH.offset} and the dead letters C{PATH.rejected}.
    @param reactor: with one (an C{IReactorThreads}), the file I/O runs in a
        worker thread of the journal's own and the reactor never waits for
        the disk; without, it runs in the calling thread and an append's
        Deferred has fired when C{append} returns.
    @param compact_bytes: empty the file once everything in it is confirmed
        and it is at least this large.
    @param flush_delay: seconds an append waits for others to share its
        write, on the reactor's clock.  C{None} (the default):
        L{DEFAULT_FLUSH_DELAY} when the I/O runs in the worker thread, none
        when it runs inline (an inline append is then durable when
        C{append} returns, as before).  An explicit value needs a reactor
        providing C{IReactorTime} (a C{task.Clock} in tests); 0 writes each
        append (or each group gathered during a write) at once.
    @param max_group: a group this large is written without waiting.
    @raise JournalLocked: when another process holds the file.
    @raise JournalError: when the file is not a journal.
    """

    def __init__(self, path: str, reactor: Any = None, *,
                 compact_bytes: int = 64 * 1024 * 1024, flush_delay: float | None = None,
                 max_group: int = DEFAULT_MAX_GROUP) -> None:
        if flush_delay is not None and flush_delay < 0:
            raise ValueError("flush_delay must not be negative")
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self.path = path
        self.marker_path = path + ".offset"
        self.rejected_path = path + ".rejected"
        self.compact_bytes = compact_bytes
        self.max_group = max_group
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise JournalLocked(f"{path} is in use by another process") from None
        try:
            self._recover()
        except BaseException:
            os.close(self._fd)
            raise
        if reactor is not None and IReactorThreads.providedBy(reactor):
            name = f"b2bua-journal-{os.path.basename(path)}"
            self._io: _Inline | _Worker = _Worker(reactor, name)
        else:
            self._io = _Inline()
        if flush_delay is None:
            flush_delay = DEFAULT_FLUSH_DELAY if isinstance(self._io, _Worker) else 0.0
        if not (reactor is not None and IReactorTime.providedBy(reactor)):
            flush_delay = 0.0
        #: seconds appends are gathered before a write (0: written at once)
        self.flush_delay = flush_delay
        self._flush_timer: IDelayedCall | None = None
        self._buffer: list[tuple[bytes, Deferred[str]]] = []
        self._flushing = False
        self._reading = False
        self._compacting = False
        self._marker_busy = False
        self._mark_waiters: list[Deferred[None]] = []
        self._outstanding: deque[int] = deque()
        self._handed: set[int] = set()
        self._done: set[int] = set()
        self._state = "open"
        self._idle_waiters: list[Deferred[None]] = []
        self._reactor = reactor
        self._trigger = None
        if reactor is not None and IReactorCore.providedBy(reactor):
            self._trigger = reactor.addSystemEventTrigger("during", "shutdown", self.close)

    def __repr__(self) -> str:
        return f"<FileJournal {self.path} generation {self._generation}>"

    # -- opening -------------------------------------------------------------------------

    def _recover(self) -> None:
        """Find the confirmed offset, cut a torn tail, count the backlog."""
        marker = _read_marker(self.marker_path)
        size = os.fstat(self._fd).st_size
        first = os.pread(self._fd, min(size, 4096), 0)
        newline = first.find(b"\n")
        header = decode_record(first[:newline].decode("utf-8", "replace")) \
            if newline >= 0 else None
        if header is None or "b2bua_journal" not in header:
            if size and (header is not None or newline >= 0 or size > _TORN_HEADER):
                raise JournalError(f"{self.path} is not a CDR journal (bad header line)")
            # a new file, or one whose header write was cut by a crash
            generation = (marker[0] if marker else 0) + 1
            self._header_end = _reset(self._fd, generation)
            _fsync_directory(self.path)
            self._generation = generation
            size = self._header_end
        else:
            if header.get("b2bua_journal") != FORMAT_VERSION \
                    or not isinstance(header.get("generation"), int):
                raise JournalError(f"{self.path}: unsupported journal format {header!r}")
            self._generation = header["generation"]
            self._header_end = newline + 1
        committed = self._header_end
        if marker is not None and marker[0] == self._generation:
            if self._header_end <= marker[1] <= size:
                committed = marker[1]
            else:
                log.error("CDR journal {path}: marker offset {offset} is outside the file "
                          "({size} bytes): replaying the whole file", path=self.path,
                          offset=marker[1], size=size)
        # cut a torn last line (an append that never completed, never acknowledged)
        tail = size
        while tail > committed:
            start = max(committed, tail - _CHUNK)
            chunk = os.pread(self._fd, tail - start, start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                tail = start + newline + 1
                break
            tail = start
        if tail != size:
            log.warn("CDR journal {path}: dropped {count} bytes of a torn last record "
                     "(an append that was never acknowledged)", path=self.path,
                     count=size - tail)
            os.ftruncate(self._fd, tail)
            os.fsync(self._fd)
        self._durable_end = tail
        self._committed = self._marked = self._read_offset = committed
        self._backlog = self._count_lines(committed, tail)

    def _count_lines(self, start: int, end: int) -> int:
        """Newlines between C{start} and C{end}."""
        count, position = 0, start
        while position < end:
            chunk = os.pread(self._fd, min(_CHUNK, end - position), position)
            if not chunk:
                break
            count += chunk.count(b"\n")
            position += len(chunk)
        return count

    # -- appending -----------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> Deferred[str]:
        """See L{IJournal.append}."""
        if self._state != "open":
            return fail(JournalClosed(f"{self!r} is closed"))
        try:
            line = (encode_record(record) + "\n").encode()
        except JournalError:
            return fail()
        d: Deferred[str] = Deferred()
        buffer = self._buffer
        buffer.append((line, d))
        if self.flush_delay <= 0 or len(buffer) >= self.max_group:
            self._flush()
        elif self._flush_timer is None and not (self._flushing or self._compacting):
            # the first append of a group: write it (and what joins it) soon
            self._flush_timer = self._reactor.callLater(self.flush_delay, self._delayed_flush)
        return d

    def _delayed_flush(self) -> None:
        """The gathering time of a group is over: write it."""
        self._flush_timer = None
        self._flush()

    def _cancel_flush_timer(self) -> None:
        timer, self._flush_timer = self._flush_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _flush(self) -> None:
        """Write and sync everything buffered, unless a write is running."""
        if self._flushing or self._compacting or not self._buffer:
            return
        self._cancel_flush_timer()
        group, self._buffer = self._buffer, []
        self._flushing = True
        start = self._durable_end
        generation = self._generation
        data = b"".join(line for line, _ in group)
        ends, end = [], start
        for line, _ in group:
            end += len(line)
            ends.append(end)

        def written(new_end: int) -> None:
            self._durable_end = new_end
            self._backlog += len(group)
            self._flushing = False
            for offset, (_, d) in zip(ends, group, strict=True):
                d.callback(f"{generation}:{offset}")

        def failed(failure: Failure) -> None:
            self._flushing = False
            log.failure("CDR journal {path}: append failed", failure, path=self.path)
            error = JournalError(f"append to {self.path} failed: {failure.getErrorMessage()}")
            for _, d in group:
                d.errback(error)

        op = self._io.run(_append_lines, self._fd, start, data)
        op.addCallbacks(written, failed)
        op.addBoth(lambda _: self._after_io())

    def _after_io(self) -> None:
        """Start what waited for the I/O that just finished."""
        self._flush()
        self._write_mark()
        self._check_idle()

    # -- reading and confirming ----------------------------------------------------------

    def read(self, limit: int) -> Deferred[list[JournalEntry]]:
        """See L{IJournal.read}."""
        if self._state == "closed":
            return fail(JournalClosed(f"{self!r} is closed"))
        if self._reading:
            return fail(JournalError("one read at a time"))
        start, end = self._read_offset, self._durable_end
        if start >= end or limit < 1 or self._compacting:
            return succeed([])
        self._reading = True
        generation = self._generation

        def got(result: tuple[list[tuple[int, str]], int]) -> list[JournalEntry]:
            lines, next_offset = result
            self._read_offset = next_offset
            entries = []
            for offset, text in lines:
                self._outstanding.append(offset)
                self._handed.add(offset)
                record = decode_record(text)
                entries.append(JournalEntry(f"{generation}:{offset}", record,
                                            text if record is None else ""))
            return entries

        def done(result: Any) -> Any:
            self._reading = False
            self._after_io()
            return result

        op = self._io.run(_read_lines, self._fd, start, end, limit)
        return op.addCallback(got).addBoth(done)

    def confirm(self, ids: Sequence[str]) -> Deferred[None]:
        """See L{IJournal.confirm}: the marker moves over the confirmed
        prefix; the Deferred fires once the marker is durable."""
        if self._state == "closed":
            return fail(JournalClosed(f"{self!r} is closed"))
        for entry_id in ids:
            generation, _, offset = str(entry_id).partition(":")
            if generation != str(self._generation) or not offset.isdigit():
                continue
            end = int(offset)
            if end in self._handed:
                self._handed.discard(end)
                self._done.add(end)
        moved = False
        while self._outstanding and self._outstanding[0] in self._done:
            end = self._outstanding.popleft()
            self._done.discard(end)
            self._marked = end
            self._backlog -= 1
            moved = True
        if not moved:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._mark_waiters.append(d)
        self._write_mark()
        return d

    def _write_mark(self) -> None:
        """Write the marker (one write at a time; later confirms coalesce).

        When the marker reaches the end of a file that has grown past
        C{compact_bytes} and nothing else is going on, the same step
        empties the file and starts the next generation (L{_compact})."""
        if self._marker_busy or not self._mark_waiters or self._compacting:
            return
        waiters, self._mark_waiters = self._mark_waiters, []
        self._marker_busy = True
        generation, offset = self._generation, self._marked
        compact = (self._state == "open" and offset == self._durable_end
                   and offset >= max(self.compact_bytes, self._header_end + 1)
                   and not (self._flushing or self._reading or self._buffer
                            or self._outstanding))
        if compact:
            self._compacting = True
            op = self._io.run(_compact, self._fd, self.marker_path, generation + 1)
        else:
            op = self._io.run(_write_marker, self.marker_path, generation, offset)

        def written(header_end: int | None) -> None:
            if compact:
                assert header_end is not None
                self._generation = generation + 1
                self._header_end = self._durable_end = self._marked = header_end
                self._committed = self._read_offset = header_end
            else:
                self._committed = max(self._committed, offset)
            for d in waiters:
                d.callback(None)

        def failed(failure: Failure) -> None:
            log.failure("CDR journal {path}: writing the marker failed", failure,
                        path=self.path)
            for d in waiters:
                d.errback(JournalError(f"marker of {self.path}: {failure.getErrorMessage()}"))

        def done(_: object) -> None:
            self._marker_busy = False
            self._compacting = False
            self._after_io()

        op.addCallbacks(written, failed).addBoth(done)

    def set_aside(self, entries: Sequence[JournalEntry], reason: str) -> Deferred[None]:
        """See L{IJournal.set_aside}: one JSON line per entry in C{PATH.rejected}."""
        if not entries:
            return succeed(None)
        text = "".join(json.dumps({"id": e.id, "reason": reason, "record": e.record,
                                   "raw": e.raw}, ensure_ascii=False) + "\n"
                       for e in entries)
        op = self._io.run(_append_durably, self.rejected_path, text)
        return op.addCallback(lambda _: self.confirm([e.id for e in entries]))

    def backlog(self) -> Deferred[int]:
        """See L{IJournal.backlog}."""
        return succeed(self._backlog)

    # -- compaction and closing ----------------------------------------------------------

    def _busy(self) -> bool:
        return bool(self._flushing or self._reading or self._compacting or self._marker_busy
                    or self._buffer)

    def _check_idle(self) -> None:
        """Finish closing once nothing is in progress."""
        if self._state != "closing" or self._busy():
            return
        self._state = "closed"
        self._io.stop()
        os.close(self._fd)
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)

    def close(self) -> Deferred[None]:
        """See L{IJournal.close}: buffered appends are written first; the
        file lock is released.  Calling it again is harmless."""
        if self._state == "closed":
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle_waiters.append(d)
        if self._state == "open":
            self._state = "closing"
            # appends still gathering are written now, without their delay
            self._flush()
            if self._trigger is not None:
                try:
                    self._reactor.removeSystemEventTrigger(self._trigger)
                except (ValueError, KeyError):
                    pass
                self._trigger = None
        self._check_idle()
        return d


# ---- Redis stream journal ----------------------------------------------------------------

_CONFIRM = """
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
"""
_FIELD = "record"
_STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


def _text(value: Any) -> str:
    """A reply value as text (txredisapi may turn digits into numbers)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def _entries(reply: Any) -> list[tuple[str, str | None]]:
    """(id, stored text or None for a deleted entry) from an entry list."""
    out = []
    for item in reply or []:
        entry_id, fields = _text(item[0]), item[1]
        value = None
        if fields:
            pairs = dict(zip(fields[::2], fields[1::2], strict=False))
            if _FIELD in pairs:
                value = _text(pairs[_FIELD])
        out.append((entry_id, value))
    return out


@implementer(IJournal)
class RedisStreamJournal:
    """L{IJournal} on a Redis stream read by a consumer group.

    Durability is Redis': with C{appendfsync always} an acknowledged
    C{XADD} survives a Redis crash; with C{everysec} up to a second may be
    lost.  C{replicas} > 0 also waits (C{WAIT}) until that many replicas
    have the entry, and fails the append when they do not in time.

    @param redis: a connected txredisapi handler (connection or pool).
    @param stream: the stream key; dead letters go to C{STREAM:rejected}.
    @param group: the consumer group every writer reads through.
    @param consumer: this reader's name in the group (default: the host
        name); a restarted node with the same name gets its unconfirmed
        entries back at once, another node takes them over after
        C{claim_idle} seconds.
    @param claim_idle: entries delivered this many seconds ago and still
        not confirmed are claimed from whichever consumer holds them.
    @param autoclaim: use C{XAUTOCLAIM} (Redis 6.2); C{False} uses
        C{XPENDING} + C{XCLAIM}, and so does a server that lacks it.
    """

    def __init__(self, redis: Any, stream: str = "b2bua:cdrs", group: str = "writers", *,
                 consumer: str | None = None, claim_idle: float = 60.0, autoclaim: bool = True,
                 replicas: int = 0, replica_timeout: float = 1.0) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer or socket.gethostname()
        self.claim_idle_ms = max(0, int(claim_idle * 1000))
        self.autoclaim = autoclaim
        self.replicas = replicas
        self.replica_timeout_ms = max(1, int(replica_timeout * 1000))
        self._group_ready = False
        self._replay_from: str | None = "0"
        self._claim_cursor = "0-0"
        self._in_flight: set[str] = set()
        self._reading = False

    def __repr__(self) -> str:
        return f"<RedisStreamJournal {self.stream} {self.group}/{self.consumer}>"

    def append(self, record: dict[str, Any]) -> Deferred[str]:
        """See L{IJournal.append}: C{XADD} (then C{WAIT} with replicas)."""
        try:
            text = encode_record(record)
        except JournalError:
            return fail()
        return Deferred.fromCoroutine(self._append(text))

    async def _append(self, text: str) -> str:
        entry_id = _text(await self.redis.execute_command("XADD", self.stream, "*", _FIELD, text))
        if self.replicas > 0:
            acknowledged = await self.redis.execute_command("WAIT", self.replicas,
                                                            self.replica_timeout_ms)
            if int(acknowledged) < self.replicas:
                raise JournalError(f"{entry_id} reached {acknowledged} of {self.replicas} "
                                   "replicas in time")
        return entry_id

    async def _ensure_group(self) -> None:
        """Create the group (reading from the stream's start) if missing."""
        if self._group_ready:
            return
        try:
            await self.redis.execute_command("XGROUP", "CREATE", self.stream, self.group, "0",
                                             "MKSTREAM")
        except Exception as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    def read(self, limit: int) -> Deferred[list[JournalEntry]]:
        """See L{IJournal.read}: this consumer's own pending entries first
        (a restart), then entries claimed from idle consumers, then new ones."""
        if self._reading:
            return fail(JournalError("one read at a time"))
        self._reading = True
        d = Deferred.fromCoroutine(self._read(limit))

        def done(result: Any) -> Any:
            self._reading = False
            return result

        return d.addBoth(done)

    async def _read(self, limit: int) -> list[JournalEntry]:
        await self._ensure_group()
        found: list[tuple[str, str | None]] = []
        if self._replay_from is not None:
            reply = await self._readgroup(limit, self._replay_from)
            if reply:
                self._replay_from = reply[-1][0]
                found.extend(reply)
            else:
                self._replay_from = None
        if len(found) < limit:
            found.extend(await self._claim(limit - len(found)))
        if len(found) < limit:
            found.extend(await self._readgroup(limit - len(found), ">"))
        entries, gone = [], []
        for entry_id, text in found:
            if entry_id in self._in_flight:
                continue
            if text is None:  # deleted from the stream while pending
                gone.append(entry_id)
                continue
            self._in_flight.add(entry_id)
            record = decode_record(text)
            entries.append(JournalEntry(entry_id, record, text if record is None else ""))
        if gone:
            await self._confirm(gone)
        return entries

    async def _readgroup(self, count: int, start: str) -> list[tuple[str, str | None]]:
        reply = await self.redis.execute_command(
            "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count,
            "STREAMS", self.stream, start)
        if not reply:
            return []
        return _entries(reply[0][1])

    async def _claim(self, count: int) -> list[tuple[str, str | None]]:
        """Entries idle for C{claim_idle} in any consumer, now ours."""
        if self.autoclaim:
            try:
                reply = await self.redis.execute_command(
                    "XAUTOCLAIM", self.stream, self.group, self.consumer, self.claim_idle_ms,
                    self._claim_cursor, "COUNT", count)
            except Exception as error:
                if "unknown command" not in str(error).lower():
                    raise
                self.autoclaim = False
            else:
                self._claim_cursor = _text(reply[0])
                claimed = _entries(reply[1])
                if len(reply) > 2:
                    claimed.extend((_text(i), None) for i in reply[2] or [])
                return claimed
        pending = await self.redis.execute_command("XPENDING", self.stream, self.group, "-", "+",
                                                   max(count, 10) * 4)
        idle = [_text(item[0]) for item in pending or []
                if int(item[2]) >= self.claim_idle_ms and _text(item[0]) not in self._in_flight]
        if not idle:
            return []
        reply = await self.redis.execute_command("XCLAIM", self.stream, self.group,
                                                 self.consumer, self.claim_idle_ms,
                                                 *idle[:count])
        claimed = _entries([item for item in reply or [] if item])
        returned = {entry_id for entry_id, _ in claimed}
        # an id XCLAIM does not return was deleted from the stream: drop it
        claimed.extend((i, None) for i in idle[:count] if i not in returned)
        return claimed

    def confirm(self, ids: Sequence[str]) -> Deferred[None]:
        """See L{IJournal.confirm}: C{XACK} and C{XDEL}, atomically."""
        return Deferred.fromCoroutine(self._confirm([str(i) for i in ids]))

    async def _confirm(self, ids: list[str]) -> None:
        ids = [i for i in ids if _STREAM_ID.match(i)]
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            await self.redis.execute_command("EVAL", _CONFIRM, 1, self.stream, self.group,
                                             *chunk)
            self._in_flight.difference_update(chunk)

    def set_aside(self, entries: Sequence[JournalEntry], reason: str) -> Deferred[None]:
        """See L{IJournal.set_aside}: one entry per record in C{STREAM:rejected}."""
        return Deferred.fromCoroutine(self._set_aside(list(entries), reason))

    async def _set_aside(self, entries: list[JournalEntry], reason: str) -> None:
        for entry in entries:
            await self.redis.execute_command(
                "XADD", self.stream + ":rejected", "*", "id", entry.id, "reason", reason,
                _FIELD, entry.raw or encode_record(entry.record or {}))
        await self._confirm([e.id for e in entries])

    def backlog(self) -> Deferred[int]:
        """See L{IJournal.backlog}: confirmed entries are deleted, so this is
        the stream's length."""
        return self.redis.execute_command("XLEN", self.stream).addCallback(int)

    def close(self) -> Deferred[None]:
        """Nothing to release: the connection belongs to the caller."""
        return succeed(None)
