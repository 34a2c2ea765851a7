"""Tests for L{media.ports}: the RTP/RTCP port pair pool."""

from __future__ import annotations

import errno

from twisted.internet.error import CannotListenError
from twisted.trial.unittest import SynchronousTestCase

from media.interfaces import MediaUnavailable
from media.ports import PortPool, PortsExhausted


def opened(port: int) -> str:
    """An C{open_pair} that always succeeds."""
    return f"pair {port}"


class PortPoolTests(SynchronousTestCase):
    """Pairs of an even RTP port and the odd RTCP port above it."""

    def test_pairs_start_even(self) -> None:
        """An odd first port is raised to the next even one, and a last
        port without its odd partner is left out."""
        pool = PortPool(10001, 10008)
        self.assertEqual(pool.capacity, 3)
        ports = [pool.acquire(opened)[0] for _ in range(3)]
        self.assertEqual(ports, [10002, 10004, 10006])

    def test_acquire_returns_what_was_opened(self) -> None:
        """The opener's result comes back with the port."""
        pool = PortPool(20000, 20009)
        self.assertEqual(pool.acquire(opened), (20000, "pair 20000"))
        self.assertEqual((pool.in_use, pool.free), (1, 4))

    def test_bad_ranges(self) -> None:
        """Ranges outside 1-65535 or without a pair are refused."""
        for first, last in [(0, 10), (10, 70000), (20000, 20000), (20001, 20002), (30, 20)]:
            with self.assertRaises(ValueError, msg=f"{first}-{last}"):
                PortPool(first, last)

    def test_released_ports_go_last(self) -> None:
        """A port given back is reused only after every other free one."""
        pool = PortPool(20000, 20005)
        first = pool.acquire(opened)[0]
        pool.release(first)
        self.assertEqual([pool.acquire(opened)[0] for _ in range(3)], [20002, 20004, 20000])

    def test_exhaustion(self) -> None:
        """With every pair in use, acquire raises a MediaUnavailable saying
        so, counted."""
        pool = PortPool(20000, 20003)
        pool.acquire(opened)
        pool.acquire(opened)
        with self.assertRaises(PortsExhausted) as caught:
            pool.acquire(opened)
        self.assertIsInstance(caught.exception, MediaUnavailable)
        self.assertIn("20000-20003", str(caught.exception))
        self.assertIn("2 of 2 in use", str(caught.exception))
        self.assertEqual(pool.exhausted, 1)

    def test_bind_failures_are_skipped(self) -> None:
        """A pair that cannot be bound is skipped, counted, and tried again
        later."""
        pool = PortPool(20000, 20005)
        taken = {20000, 20002}

        def bind(port: int) -> int:
            if port in taken:
                raise CannotListenError("127.0.0.1", port, OSError(errno.EADDRINUSE, "in use"))
            return port

        self.assertEqual(pool.acquire(bind), (20004, 20004))
        self.assertEqual(pool.bind_failures, 2)
        self.assertEqual(pool.free, 2)
        taken.clear()
        self.assertEqual(pool.acquire(bind)[0], 20000)

    def test_all_unbindable_is_exhaustion(self) -> None:
        """When no free pair binds, the pool is exhausted and keeps them."""
        pool = PortPool(20000, 20003)

        def bind(port: int) -> int:
            raise OSError(errno.EADDRINUSE, "in use")

        with self.assertRaises(PortsExhausted):
            pool.acquire(bind)
        self.assertEqual((pool.free, pool.in_use, pool.bind_failures), (2, 0, 2))

    def test_other_errors_propagate(self) -> None:
        """An opener bug is not mistaken for a taken port."""
        pool = PortPool(20000, 20003)

        def bind(port: int) -> int:
            raise ZeroDivisionError()

        self.assertRaises(ZeroDivisionError, pool.acquire, bind)
        self.assertEqual((pool.free, pool.in_use), (2, 0))

    def test_double_release(self) -> None:
        """Releasing a pair twice (or one never taken) is an error."""
        pool = PortPool(20000, 20003)
        port = pool.acquire(opened)[0]
        pool.release(port)
        self.assertRaises(ValueError, pool.release, port)
        self.assertRaises(ValueError, pool.release, 20002)
        self.assertEqual(pool.free, 2)
