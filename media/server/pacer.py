"""One 20 ms frame clock for every RTP session of a reactor.

Each L{media.server.rtp_session.RtpSession} sends a frame every 20 ms.  With
one timer per session a media server carrying a few hundred calls runs a few
thousand timer callbacks a second, and each costs about as much as the
frame it sends.  A L{Pacer} keeps one timer for all of them: the 20 ms
period is cut into L{SLOTS} phases, each session belongs to one phase, and
the timer fires once per phase that has sessions, calling each of its
sessions in turn.  With ten phases a session's frames go out at most one
phase's work late, however many sessions there are (one phase for all would
make the last session wait for every other one, on every tick).

 - B{Joining} (L{Pacer.join}, when a session starts): the session goes to
   the phase with the fewest sessions (among equals, the one whose time came
   last), and gets that phase's last time as its I{epoch}: its frame C{n}
   is due C{n x 20 ms} after it.  The epoch is never in the future, so the
   session's first frame, sent at start, is not early; its second one comes
   less than 20 ms after.  The first session of an idle pacer starts the
   phase grid at its own start, so a lone session is timed exactly as it
   would be with its own timer.
 - B{Ticking}: at a phase's time every session of the phase is asked to
   send what is due (C{pace(now)}); a session works out from its epoch how
   many frames that is, so a late timer (a stalled reactor) means a burst,
   never a drift.  Phases whose time passed while the reactor stalled are
   run once each, in order.
 - B{Leaving} (L{Pacer.leave}, when a session stops): the session is out of
   its phase at once, also from within a tick; the timer is cancelled when
   no session is left, so an idle reactor holds no delayed call.
 - B{Failures}: an exception from a session (or an observer) is logged;
   the other sessions of the tick are still called.

L{Pacer.of} gives the pacer of a reactor (one per reactor, made on first
use), so that every session on it shares one timer without anybody passing
it around.  The pacer also knows its live sessions (L{Pacer.sessions}) and
lets observers hear of sessions joining and leaving (L{Pacer.observe}): the
media server's metrics and its recordings hand-over use that.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

__all__ = ["PERIOD", "SLOTS", "Paced", "Pacer"]

#: The frame period, seconds (20 ms of G.711).
PERIOD = 0.020
#: Phases per period.
SLOTS = 10
#: Timers are set this much early, so that a clock whose time is a sum of
#: float steps never misses a phase.
_EARLY = 1e-4

_PACERS: weakref.WeakKeyDictionary[Any, Pacer] = weakref.WeakKeyDictionary()

log = Logger()


class Paced(Protocol):
    """What a pacer drives: an object that sends what is due at C{now}."""

    def pace(self, now: float) -> None:
        """Send the frames due by C{now} (reactor time)."""


Observer = Callable[[str, Any], object]


class Pacer:
    """A shared 20 ms clock for RTP sessions (module docstring).

    @ivar slots: the number of phases per period.
    @ivar period: seconds per frame.
    @ivar ticks: timer callbacks run so far (for tests and profiling).
    """

    def __init__(self, reactor: Any, *, slots: int = SLOTS, period: float = PERIOD) -> None:
        """
        @param reactor: the C{IReactorTime} whose C{callLater} times the phases.
        @param slots: phases per period (>= 1).
        @param period: seconds per frame (> 0).
        @raise ValueError: for a bad C{slots} or C{period}.
        """
        if slots < 1 or period <= 0:
            raise ValueError(f"a pacer needs slots >= 1 and period > 0, not {slots}, {period}")
        self._reactor = reactor
        self.slots = slots
        self.period = period
        self._step = period / slots
        self._phases: list[dict[Paced, None]] = [{} for _ in range(slots)]
        self._phase_of: dict[Paced, int] = {}
        self._anchor = 0.0
        self._done = 0  # phase times are anchor + index * step; the last index run
        self._call: IDelayedCall | None = None
        self._observers: list[Observer] = []
        self.ticks = 0

    @classmethod
    def of(cls, reactor: Any) -> Pacer:
        """The pacer shared by every session on C{reactor} (made on first use)."""
        pacer = _PACERS.get(reactor)
        if pacer is None:
            pacer = _PACERS[reactor] = cls(reactor)
        return pacer

    # -- members ----------------------------------------------------------------

    def __len__(self) -> int:
        """How many sessions are paced."""
        return len(self._phase_of)

    def sessions(self) -> Iterator[Paced]:
        """The sessions paced now (a snapshot)."""
        return iter(list(self._phase_of))

    def observe(self, observer: Observer) -> Callable[[], None]:
        """Call C{observer("join" | "leave", session)} on every join and leave.

        @return: a function that removes the observer.
        """
        self._observers.append(observer)

        def remove() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return remove

    def join(self, session: Paced) -> float:
        """Pace C{session} from now on (see the module docstring).

        @return: its epoch: the reactor time its frame 0 was due (<= now).
        @raise ValueError: when it is paced already.
        """
        if session in self._phase_of:
            raise ValueError("the session is paced already")
        now = self._reactor.seconds()
        if not self._phase_of:
            self._anchor = now
            self._done = 0
        latest = self._latest_index(now)
        phases = self._phases
        best, best_index = latest % self.slots, latest
        for back in range(1, self.slots):  # from the phase whose time came last backwards
            index = latest - back
            phase = index % self.slots
            if len(phases[phase]) < len(phases[best]):
                best, best_index = phase, index
        self._phases[best][session] = None
        self._phase_of[session] = best
        self._schedule(now)
        self._tell("join", session)
        return self._anchor + best_index * self._step

    def leave(self, session: Paced) -> None:
        """Stop pacing C{session} (nothing when it is not paced)."""
        phase = self._phase_of.pop(session, None)
        if phase is None:
            return
        del self._phases[phase][session]
        if not self._phase_of:
            call, self._call = self._call, None
            if call is not None and call.active():
                call.cancel()
        self._tell("leave", session)

    # -- the timer --------------------------------------------------------------

    def _latest_index(self, now: float) -> int:
        """The index of the last phase time at or before C{now}."""
        return int((now - self._anchor + _EARLY) // self._step)

    def _schedule(self, now: float) -> None:
        """Set the timer for the next phase time that has sessions."""
        if not self._phase_of:
            return
        index = self._done + 1
        while not self._phases[index % self.slots]:
            index += 1
        when = self._anchor + index * self._step - _EARLY
        call = self._call
        if call is not None and call.active():
            if abs(call.getTime() - when) < 1e-9:
                return
            call.cancel()
        self._call = self._reactor.callLater(max(when - now, 0.0), self._fire)

    def _fire(self) -> None:
        """Run the phases whose time has come (each once), then re-arm."""
        self._call = None
        self.ticks += 1
        now = self._reactor.seconds()
        latest = self._latest_index(now)
        first = max(self._done + 1, latest - self.slots + 1)
        self._done = max(self._done, latest)
        try:
            for index in range(first, latest + 1):
                phase = self._phases[index % self.slots]
                if phase:
                    for session in list(phase):
                        if session in phase:  # it may have left during this tick
                            try:
                                session.pace(now)
                            except Exception:  # one session never stops the others
                                log.failure("media server: a paced RTP session failed")
        finally:
            self._schedule(now)

    def _tell(self, event: str, session: Paced) -> None:
        for observer in list(self._observers):
            try:
                observer(event, session)
            except Exception:
                log.failure("media server: a pacer observer failed on {event}", event=event)
