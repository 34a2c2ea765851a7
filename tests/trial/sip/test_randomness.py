"""Tests for L{b2bua.sip.randomness}: blocks read from the OS, never a byte
handed out twice, forgotten on request (as in a forked child)."""

from __future__ import annotations

from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip import randomness
from b2bua.sip.randomness import RandomPool, random_bytes


class RandomPoolTests(SynchronousTestCase):
    """L{RandomPool} over a counting stand-in for C{os.urandom}."""

    def setUp(self) -> None:
        """Every read from the "OS" gives the next bytes of a counter."""
        self.reads: list[int] = []
        self.next = 0

        def urandom(n: int) -> bytes:
            self.reads.append(n)
            data = bytes((self.next + i) % 256 for i in range(n))
            self.next += n
            return data

        patcher = mock.patch.object(randomness.os, "urandom", urandom)
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_slices_of_one_block(self) -> None:
        """Values are consecutive slices of one block read."""
        pool = RandomPool(block=16)
        self.assertEqual(pool(4), bytes(range(0, 4)))
        self.assertEqual(pool(6), bytes(range(4, 10)))
        self.assertEqual(self.reads, [16])

    def test_refill_never_reuses(self) -> None:
        """A value that does not fit in what is left comes from a new block."""
        pool = RandomPool(block=8)
        first, second = pool(6), pool(6)
        self.assertEqual(first, bytes(range(0, 6)))
        self.assertEqual(second, bytes(range(8, 14)))
        self.assertEqual(self.reads, [8, 8])

    def test_large_request_read_directly(self) -> None:
        """A request larger than a block goes to the OS as it is."""
        pool = RandomPool(block=4)
        self.assertEqual(len(pool(10)), 10)
        self.assertEqual(self.reads, [10])

    def test_forget(self) -> None:
        """After L{RandomPool.forget} the next value is from a new read."""
        pool = RandomPool(block=16)
        pool(2)
        pool.forget()
        self.assertEqual(pool(2), bytes(range(16, 18)))
        self.assertEqual(self.reads, [16, 16])

    def test_bad_block(self) -> None:
        """A block size must be positive."""
        self.assertRaises(ValueError, RandomPool, 0)


class SharedPoolTests(SynchronousTestCase):
    """The process-wide pool."""

    def test_distinct_values(self) -> None:
        """Many values of the shared pool are all different and sized."""
        values = [random_bytes(12) for _ in range(2000)]
        self.assertEqual({len(v) for v in values}, {12})
        self.assertEqual(len(set(values)), len(values))
