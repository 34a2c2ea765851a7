"""Random bytes for tags, branches and Call-IDs, read from the OS in blocks.

Every call takes several random values (branches, tags, a Call-ID); one
C{os.urandom} system call per value showed up in profiles of the call path.
L{RandomPool} reads the kernel's CSPRNG a few kilobytes at a time and hands
out slices, so the values are exactly as unpredictable as C{os.urandom}'s
(RFC 3261 19.3 asks for cryptographically random tags) at a fraction of the
cost.  A child process forgets what its parent read (C{os.register_at_fork}),
so that two processes never hand out the same bytes.
"""

from __future__ import annotations

import os
import weakref

__all__ = ["RandomPool", "random_bytes"]

_pools: weakref.WeakSet[RandomPool] = weakref.WeakSet()


class RandomPool:
    """A callable C{(n) -> n random bytes}, drop-in for C{os.urandom}.

    @param block: how many bytes one read from the OS fetches.
    """

    __slots__ = ("__weakref__", "_block", "_buffer", "_offset")

    def __init__(self, block: int = 4096) -> None:
        if block <= 0:
            raise ValueError("block must be positive")
        self._block = block
        self._buffer = b""
        self._offset = 0
        _pools.add(self)

    def __call__(self, n: int) -> bytes:
        """Return C{n} random bytes (never the same bytes twice)."""
        start = self._offset
        end = start + n
        if end > len(self._buffer):
            if n > self._block:
                return os.urandom(n)
            self._buffer = os.urandom(self._block)
            start, end = 0, n
        self._offset = end
        return self._buffer[start:end]

    def forget(self) -> None:
        """Drop the bytes read so far (the next call reads new ones)."""
        self._buffer = b""
        self._offset = 0


def _forget_all() -> None:
    for pool in list(_pools):
        pool.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all)

#: The process-wide pool that the stack and the core use by default.
random_bytes = RandomPool()
