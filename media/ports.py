"""The relay's port pool: RTP/RTCP port pairs from a configured range.

Each pair is an even RTP port and the odd port above it for RTCP
(RFC 3550 section 11).  Free pairs are handed out least recently used
first, so that a port just given back is not reused while stray packets of
its last call may still arrive.

The pool knows numbers only; opening the sockets is the caller's
C{open_pair} function.  When it cannot bind a pair (another process holds
one of the ports) the pair is skipped, counted, and moved to the back of the
queue to be tried again later.  When no pair can be had, L{PortsExhausted}
is raised (a L{MediaUnavailable}, which the SIP side answers with C{503}).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TypeVar

from twisted.internet.error import CannotListenError

from media.interfaces import MediaUnavailable

__all__ = ["PortPool", "PortsExhausted"]

T = TypeVar("T")


class PortsExhausted(MediaUnavailable):
    """No free RTP/RTCP port pair could be bound."""


class PortPool:
    """Even/odd port pairs from C{first} to C{last} (inclusive).

    @ivar first: the lowest port of the range.
    @ivar last: the highest port of the range.
    @ivar capacity: how many pairs the range holds.
    @ivar bind_failures: pairs skipped because they could not be bound.
    @ivar exhausted: how many times L{acquire} found no pair.
    """

    def __init__(self, first: int, last: int) -> None:
        """
        @param first: lowest port (raised to the next even number).
        @param last: highest port.
        @raise ValueError: when the range is outside 1-65535 or holds no
            pair.
        """
        if not (0 < first <= 65535 and 0 < last <= 65535):
            raise ValueError(f"port range {first}-{last} is outside 1-65535")
        start = first + (first & 1)
        if start + 1 > last:
            raise ValueError(f"port range {first}-{last} holds no even/odd port pair")
        self.first = first
        self.last = last
        self._free: deque[int] = deque(range(start, last, 2))
        self._used: set[int] = set()
        self.capacity = len(self._free)
        self.bind_failures = 0
        self.exhausted = 0

    @property
    def free(self) -> int:
        """How many pairs are free."""
        return len(self._free)

    @property
    def in_use(self) -> int:
        """How many pairs are handed out."""
        return len(self._used)

    def acquire(self, open_pair: Callable[[int], T]) -> tuple[int, T]:
        """Take a free pair and open it.

        @param open_pair: called with the RTP (even) port; opens both ports
            and returns what it opened, or raises L{CannotListenError} or
            L{OSError} (having closed whatever it opened) when a port is
            taken.
        @return: the RTP port and C{open_pair}'s result.
        @raise PortsExhausted: when no free pair could be opened.
        """
        for _ in range(len(self._free)):
            port = self._free.popleft()
            try:
                opened = open_pair(port)
            except (CannotListenError, OSError):
                self.bind_failures += 1
                self._free.append(port)
                continue
            except BaseException:
                self._free.appendleft(port)
                raise
            self._used.add(port)
            return port, opened
        self.exhausted += 1
        raise PortsExhausted(
            f"no free RTP port pair in {self.first}-{self.last} "
            f"({self.in_use} of {self.capacity} in use)"
        )

    def release(self, port: int) -> None:
        """Give a pair back (after its sockets are closed).

        @param port: the RTP port L{acquire} returned.
        @raise ValueError: if the pair is not handed out (a double release).
        """
        try:
            self._used.remove(port)
        except KeyError:
            raise ValueError(f"port {port} is not in use") from None
        self._free.append(port)
