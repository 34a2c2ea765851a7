"""Tests for the timers of L{b2bua.sip.timers.TimedMachine}: long timers
share one reactor call per clock (L{b2bua.sip.timers._LongTimers}) and
still fire each at its own deadline, in order; short ones use the clock
directly; nothing is left on the clock once every timer is done."""

from __future__ import annotations

import enum

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.timers import LONG_TIMER, Table, TimedMachine


class _State(enum.StrEnum):
    ON = "On"
    OFF = "Off"


class Ticker(TimedMachine):
    """A machine that records every timer event it gets (and stays On)."""

    __slots__ = ("chain", "fired")

    State = _State
    initial = _State.ON
    terminal = _State.OFF
    events = frozenset({"a", "b", "c", "d", "stop", "boom"})

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.fired: list[tuple[str, float]] = []
        #: event -> (timer to start when it fires, its delay)
        self.chain: dict[str, tuple[str, float]] = {}

    def _absorbed(self, event: str, args: tuple[object, ...]) -> None:
        if event == "boom":
            raise RuntimeError("boom")
        self.fired.append((event, self._clock.seconds()))
        if event in self.chain:
            self._start_timer(*self.chain[event])

    table: Table = {(_State.ON, "stop"): (_State.OFF, None)}


class LongTimerTests(SynchronousTestCase):
    """Timers of L{LONG_TIMER} or more on one clock."""

    def setUp(self) -> None:
        self.clock = Clock()

    def test_each_fires_at_its_deadline(self) -> None:
        """Long timers of many machines, started at different times, fire
        each at its own deadline with one reactor call pending at a time."""
        machines = [Ticker(self.clock) for _ in range(3)]
        machines[0]._start_timer("a", 32)
        self.clock.advance(0.25)
        machines[1]._start_timer("b", 5)
        machines[2]._start_timer("c", 32)
        machines[2]._start_timer("d", 0.5)  # short: a reactor call of its own
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        for _ in range(200):
            calls = self.clock.getDelayedCalls()
            if not calls:
                break
            self.clock.advance(min(c.getTime() for c in calls) - self.clock.seconds())
        self.assertEqual(machines[0].fired, [("a", 32.0)])
        self.assertEqual(machines[1].fired, [("b", 5.25)])
        self.assertEqual(machines[2].fired, [("d", 0.75), ("c", 32.25)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_not_early(self) -> None:
        """A long timer does not fire a moment before its deadline."""
        machine = Ticker(self.clock)
        machine._start_timer("a", LONG_TIMER * 3)
        self.clock.advance(LONG_TIMER * 3 - 0.001)
        self.assertEqual(machine.fired, [])
        self.clock.advance(0.001)
        self.assertEqual([e for e, _ in machine.fired], ["a"])

    def test_same_deadline_in_start_order(self) -> None:
        """Timers due at the same time fire in the order they were started."""
        first, second = Ticker(self.clock), Ticker(self.clock)
        second._start_timer("b", 2)
        first._start_timer("a", 2)
        self.clock.advance(2)
        self.assertEqual((first.fired, second.fired), ([("a", 2.0)], [("b", 2.0)]))

    def test_cancelled_never_fire_and_leave_nothing(self) -> None:
        """Cancelled and restarted timers do not fire; once none is left,
        nothing is on the clock."""
        machine = Ticker(self.clock)
        machine._start_timer("a", 10)
        machine._start_timer("b", 20)
        machine._start_timer("a", 30)  # restarted: the first one is gone
        self.clock.advance(15)
        self.assertEqual(machine.fired, [])
        self.assertEqual(machine.pending_timers, ["a", "b"])
        machine._cancel_timer("b")
        self.clock.advance(15)
        self.assertEqual(machine.fired, [("a", 30.0)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        machine._start_timer("c", 5)
        machine._cancel_all_timers()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sooner_timer_rearms(self) -> None:
        """A timer due before every other one moves the reactor call sooner."""
        machine = Ticker(self.clock)
        machine._start_timer("a", 32)
        machine._start_timer("b", 5)
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [5.0])
        self.clock.advance(5)
        self.assertEqual(machine.fired, [("b", 5.0)])
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [32.0])

    def test_many_cancelled_are_dropped(self) -> None:
        """Thousands of timers started and cancelled (Timer B, F...) do not
        pile up: only live ones stay, and they still fire."""
        keep = Ticker(self.clock)
        keep._start_timer("a", 40)
        for _ in range(5000):
            machine = Ticker(self.clock)
            machine._start_timer("b", 32)
            machine._cancel_timer("b")
        from b2bua.sip.timers import _long_timers

        timers = _long_timers(self.clock)
        assert timers is not None
        self.assertLess(len(timers._heap), 200)
        self.clock.advance(40)
        self.assertEqual(keep.fired, [("a", 40.0)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failing_timer_does_not_stop_the_others(self) -> None:
        """A machine raising from a timer is logged; the other timers due
        then still fire."""
        bad, good = Ticker(self.clock), Ticker(self.clock)
        bad._start_timer("boom", 3)
        good._start_timer("a", 3)
        self.clock.advance(3)
        self.assertEqual(good.fired, [("a", 3.0)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timer_started_while_firing(self) -> None:
        """A machine starting a long timer from a long timer's event gets it
        at its own deadline."""
        machine = Ticker(self.clock)
        machine.chain["a"] = ("b", 4)
        machine._start_timer("a", 2)
        self.clock.advance(2)
        self.clock.advance(4)
        self.assertEqual(machine.fired, [("a", 2.0), ("b", 6.0)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_clock_not_kept_alive(self) -> None:
        """The per-clock heap does not keep a dropped clock alive."""
        import gc
        import weakref

        clock = Clock()
        machine = Ticker(clock)
        machine._start_timer("a", 5)
        machine._cancel_all_timers()
        ref = weakref.ref(clock)
        del clock, machine
        gc.collect()
        self.assertIsNone(ref())
