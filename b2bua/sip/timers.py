"""Transaction timing: the RFC 3261 timer values and the timed state-machine
runner that the four transactions (and the 2xx retransmitter) share.

L{Timers} holds T1, T2 and T4 (RFC 3261 17.1.1.1, table 4) and derives
Timers A to M from them.  L{TimedMachine} is the small base every
transaction machine is written with: an explicit state enum, a transition
table C{{(state, event): (next state, action)}} looked up with one dict
access per event, named timers on an injected L{IReactorTime}, and an event
queue so that a machine is never re-entered from its own transition (an
event raised while a transition runs, e.g. by a send whose Deferred has
already failed or by a user calling back into the transaction, runs right
after it).  Why not automat: see C{docs/transactions.md}.
"""

from __future__ import annotations

import enum
import itertools
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING, Any, ClassVar

from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.sip.errors import TransportError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["Action", "Table", "TimedMachine", "Timers", "notify", "transport_error"]

_log = Logger()


@dataclass(frozen=True, slots=True)
class Timers:
    """The transaction timer values, in seconds (RFC 3261 table 4).

    Only T1, T2, T4, Timer D (a fixed lower bound in the RFC) and the delay
    of the automatic C{100 Trying} are configured; the rest are derived.
    Properties give the values for unreliable transports; over reliable
    ones Timers D, I, J and K are zero (the transactions apply that).

    @ivar t1: RTT estimate (default 500 ms).
    @ivar t2: maximum retransmit interval for non-INVITE requests and
        INVITE responses (default 4 s).
    @ivar t4: maximum time a message stays in the network (default 5 s).
    @ivar timer_d: wait time for response retransmissions (at least 32 s).
    @ivar trying_delay: how long an INVITE server transaction waits for the
        TU before it sends C{100 Trying} itself (RFC 3261 17.2.1: 200 ms).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0
    trying_delay: float = 0.2

    def __post_init__(self) -> None:
        for name in ("t1", "t2", "t4", "timer_d", "trying_delay"):
            if not getattr(self, name) > 0:
                raise ValueError(f"timer {name} must be positive")
        if self.t2 < self.t1:
            raise ValueError("t2 must not be smaller than t1")

    @property
    def timer_a(self) -> float:
        """INVITE request retransmit interval, first value (T1, doubling)."""
        return self.t1

    @property
    def timer_b(self) -> float:
        """INVITE transaction timeout (64*T1)."""
        return 64 * self.t1

    @property
    def timer_e(self) -> float:
        """Non-INVITE request retransmit interval, first value (T1)."""
        return self.t1

    @property
    def timer_f(self) -> float:
        """Non-INVITE transaction timeout (64*T1)."""
        return 64 * self.t1

    @property
    def timer_g(self) -> float:
        """INVITE final response retransmit interval, first value (T1)."""
        return self.t1

    @property
    def timer_h(self) -> float:
        """Wait time for the ACK of a non-2xx final response (64*T1)."""
        return 64 * self.t1

    @property
    def timer_i(self) -> float:
        """Wait time for ACK retransmissions (T4; zero when reliable)."""
        return self.t4

    @property
    def timer_j(self) -> float:
        """Wait time for non-INVITE request retransmissions (64*T1)."""
        return 64 * self.t1

    @property
    def timer_k(self) -> float:
        """Wait time for non-INVITE response retransmissions (T4)."""
        return self.t4

    @property
    def timer_l(self) -> float:
        """Wait time in the INVITE server's Accepted state (64*T1, RFC 6026)."""
        return 64 * self.t1

    @property
    def timer_m(self) -> float:
        """Wait time in the INVITE client's Accepted state (64*T1, RFC 6026)."""
        return 64 * self.t1


#: Timers at least this long (seconds) share one reactor call per clock
#: (L{_LongTimers}): Timers B, D, F, H, I, J, K, L, M, the 2xx give-up and
#: retransmission intervals from 1 s on.
LONG_TIMER = 1.0
#: Slack when deciding whether a long timer is due: the reactor call that
#: runs them is scheduled from a difference of times and may land a rounding
#: error before the deadline.
_EPSILON = 1e-9


class _LongTimers:
    """The long timers of every machine on one clock, in one heap.

    Most long timers never fire (Timers B and F, the 2xx give-up: a response
    or an ACK comes first) and the others fire seconds later, so giving each
    its own C{IDelayedCall} costs a reactor heap entry, a Python comparison
    per heap level and an object graph that lingers until the deadline even
    when cancelled.  Here a timer is a small list C{[deadline, sequence,
    machine, name, event, timers]} in a heap ordered by plain list
    comparison (deadline, then sequence: never the machine); cancelling it
    clears its machine; one reactor call, at the earliest deadline, runs
    those due.  Each timer still fires at its own deadline (not rounded);
    timers due at the same time fire in the order they were started.
    """

    __slots__ = ("__weakref__", "_armed", "_clock", "_dead", "_expiring", "_heap", "_live",
                 "_sequence")

    def __init__(self, clock: IReactorTime) -> None:
        # weakly: the registry's value must not keep its key (the clock) alive
        self._clock = weakref.proxy(clock)
        self._heap: list[list[Any]] = []
        self._sequence = itertools.count()
        self._armed: IDelayedCall | None = None
        self._live = 0
        self._dead = 0
        self._expiring = False

    def add(self, delay: float, machine: TimedMachine, name: str, event: str) -> list[Any]:
        """Start a timer: C{machine._timer_expired(name, event)} in C{delay} s."""
        entry = [self._clock.seconds() + delay, next(self._sequence), machine, name, event,
                 self]
        heappush(self._heap, entry)
        self._live += 1
        if not self._expiring:
            armed = self._armed
            if armed is None:
                self._armed = self._clock.callLater(delay, self._expire)
            elif armed.getTime() > entry[0]:
                # sooner: a new call (moving one sooner searches the heap)
                armed.cancel()
                self._armed = self._clock.callLater(delay, self._expire)
        return entry

    def cancel(self, entry: list[Any]) -> None:
        """Stop a timer that has not fired (a no-op for one that has)."""
        if entry[2] is None:
            return
        entry[2] = None
        self._live -= 1
        if self._live == 0:
            # nothing left: nothing stays on the clock either
            self._heap.clear()
            self._dead = 0
            if self._armed is not None:
                self._armed.cancel()
                self._armed = None
            return
        self._dead += 1
        heap = self._heap
        if self._dead > 64 and 2 * self._dead > len(heap):
            heap[:] = [e for e in heap if e[2] is not None]
            heapify(heap)
            self._dead = 0

    def _expire(self) -> None:
        """Run the timers that are due, then wait for the next one."""
        self._armed = None
        self._expiring = True
        heap = self._heap
        try:
            now = self._clock.seconds() + _EPSILON
            while heap and heap[0][0] <= now:
                entry = heappop(heap)
                machine = entry[2]
                if machine is None:
                    self._dead -= 1
                    continue
                entry[2] = None
                self._live -= 1
                try:
                    machine._timer_expired(entry[3], entry[4])
                except Exception:
                    _log.failure("timer {name} of {machine!r} failed", name=entry[3],
                                 machine=machine)
        finally:
            self._expiring = False
            self._rearm()

    def _rearm(self) -> None:
        """Have the reactor call at (or before) the earliest live deadline."""
        heap = self._heap
        while heap and heap[0][2] is None:
            heappop(heap)
            self._dead -= 1
        armed = self._armed
        if not heap:
            self._dead = 0
            if armed is not None:
                armed.cancel()
                self._armed = None
            return
        delay = max(0.0, heap[0][0] - self._clock.seconds())
        if armed is None:
            self._armed = self._clock.callLater(delay, self._expire)
        elif armed.getTime() > heap[0][0]:
            armed.cancel()
            self._armed = self._clock.callLater(delay, self._expire)


_LONG_TIMERS: weakref.WeakKeyDictionary[Any, _LongTimers] = weakref.WeakKeyDictionary()


def _long_timers(clock: IReactorTime) -> _LongTimers | None:
    """The long-timer heap of C{clock} (C{None} for a clock that cannot be
    weakly referenced: its machines then use one reactor call per timer)."""
    try:
        timers = _LONG_TIMERS.get(clock)
        if timers is None:
            timers = _LONG_TIMERS[clock] = _LongTimers(clock)
    except TypeError:
        return None
    return timers


#: what a transition runs: an unbound method of the machine, or nothing
Action = Callable[..., None] | None
#: (state, event) -> (next state, action)
Table = dict[tuple[enum.Enum, str], tuple[enum.Enum, Action]]


def notify(callback: Callable[..., object], *args: object) -> None:
    """Call a user's callback, logging (not raising) anything it raises, so
    that a bug above the stack cannot leave a machine half-way."""
    try:
        callback(*args)
    except Exception:
        _log.failure("user callback {callback!r} raised", callback=callback)


def transport_error(failure: Failure) -> TransportError:
    """The L{TransportError} a failed send reports (others are wrapped)."""
    value = failure.value
    if isinstance(value, TransportError):
        return value
    return TransportError(f"{type(value).__name__}: {value}")


def _cancel(call: Any) -> None:
    """Cancel a machine's timer: a long timer's entry, or a reactor call."""
    if call.__class__ is list:
        call[5].cancel(call)
    elif call.active():
        call.cancel()


class TimedMachine:
    """A state machine given by a transition table, with named timers.

    Subclasses set C{State} (an enum), C{initial}, C{terminal}, C{events}
    and C{table}; every (state, event) pair absent from the table is
    absorbed: the event is ignored and the state kept, as in the RFC's
    diagrams.  An action runs after the state has changed.  Entering
    C{terminal} cancels every timer and calls L{_terminated}.
    """

    __slots__ = ("_calls", "_clock", "_queue", "state")

    State: ClassVar[type[enum.Enum]]
    initial: ClassVar[enum.Enum]
    terminal: ClassVar[enum.Enum]
    events: ClassVar[frozenset[str]]
    table: ClassVar[Table]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check the table: known states and events, callable actions."""
        super().__init_subclass__(**kwargs)
        table = cls.__dict__.get("table")
        if table is None:
            return
        for (state, event), (target, action) in table.items():
            if state not in cls.State or target not in cls.State:
                raise TypeError(f"{cls.__name__}: unknown state in {state}->{target}")
            if event not in cls.events:
                raise TypeError(f"{cls.__name__}: unknown event {event!r}")
            if action is not None and not callable(action):
                raise TypeError(f"{cls.__name__}: action for {event!r} is not callable")

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._calls: dict[str, IDelayedCall] = {}
        self._queue: list[tuple[Callable[..., None], tuple[object, ...]]] | None = None
        self.state: enum.Enum = self.initial

    # --- running ---------------------------------------------------------

    def _run(self, step: Callable[..., None], *args: object) -> None:
        """Run C{step} now, or after the transition in progress."""
        if self._queue is not None:
            self._queue.append((step, args))
            return
        queue = self._queue = [(step, args)]
        try:
            while queue:
                func, fargs = queue.pop(0)
                func(*fargs)
        finally:
            self._queue = None

    def _fire(self, event: str, *args: object) -> None:
        """Deliver C{event} to the machine (queued during a transition)."""
        self._run(self._step, event, args)

    def _step(self, event: str, args: tuple[object, ...]) -> None:
        old = self.state
        entry = self.table.get((old, event))
        if entry is None:
            self._absorbed(event, args)
            return
        new, action = entry
        self.state = new
        if action is not None:
            action(self, *args)
        if new is self.terminal and old is not new:
            self._cancel_all_timers()
            self._terminated()

    def _absorbed(self, event: str, args: tuple[object, ...]) -> None:
        """An event the current state does not react to (hook; ignores)."""

    def _terminated(self) -> None:
        """The machine has just entered its terminal state (hook)."""

    # --- timers ----------------------------------------------------------

    def _start_timer(self, name: str, delay: float, event: str | None = None) -> None:
        """Fire C{event} (default: C{name}) after C{delay} seconds; a zero
        delay fires it right after the current transition, without the
        clock, so nothing is left scheduled.  Timers of L{LONG_TIMER} or
        more share one reactor call per clock (L{_LongTimers})."""
        self._cancel_timer(name)
        if delay <= 0:
            self._fire(event or name)
            return
        if delay >= LONG_TIMER:
            timers = _long_timers(self._clock)
            if timers is not None:
                self._calls[name] = timers.add(delay, self, name, event or name)  # type: ignore[assignment]
                return
        self._calls[name] = self._clock.callLater(delay, self._timer_expired, name, event or name)

    def _timer_expired(self, name: str, event: str) -> None:
        self._calls.pop(name, None)
        self._fire(event)

    def _cancel_timer(self, name: str) -> None:
        call = self._calls.pop(name, None)
        if call is not None:
            _cancel(call)

    def _cancel_all_timers(self) -> None:
        calls, self._calls = self._calls, {}
        for call in calls.values():
            _cancel(call)

    @property
    def pending_timers(self) -> list[str]:
        """Names of the timers running now (for tests and introspection)."""
        return sorted(self._calls)

    # --- documentation ---------------------------------------------------

    @classmethod
    def dot(cls) -> str:
        """The machine as a Graphviz digraph: one edge per table entry that
        changes the state or runs an action (absorbed events are left out)."""
        name = cls.__name__
        lines = [f"digraph {name} {{", "    rankdir=LR;", '    node [shape=box, style=rounded];']
        for state in cls.State:
            shape = ", peripheries=2" if state is cls.terminal else ""
            lines.append(f'    "{state.value}" [label="{state.value}"{shape}];')
        lines.append(f'    start [shape=point]; start -> "{cls.initial.value}";')
        for (state, event), (target, action) in cls.table.items():
            label = event if action is None else f"{event} / {action.__name__.lstrip('_')}"
            lines.append(f'    "{state.value}" -> "{target.value}" [label="{label}"];')
        lines.append("}")
        return "\n".join(lines) + "\n"
