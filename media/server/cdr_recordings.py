"""The media server's recordings, handed to the switch's call for its CDR.

The media server runs in the switch's process, so its plugin gives the
files a call recorded to the switch's L{Call} directly (the C{X-Recording}
headers of the BYE say the same on the wire).  A media server call's SIP
Call-ID is the switch's B-leg Call-ID: the plugin notes it when the B-leg
INVITE to the media server is built (L{RecordingHandover.expect}, from
C{b2bua_prepare_outgoing_request}).  When the media server call ends (the
L{CallWatch} hears it; its files are final then) each file is appended to
the switch call's C{call.data["recordings"]}::

    {"path": "/abs/recordings/...wav", "mode": "stereo", "duration_ms": 12340,
     "source": "media_server"}

The CDR must not be written before that.  When the switch's call ends
first (the caller hung up: the BYE to the media server is still on its
way), L{RecordingHandover.call_ended} puts a Deferred into the list
C{call.data["recordings_settled"]}; it fires (with the entries added) once
the media server call has ended, or after C{timeout} seconds (logged), so
that a CDR never waits forever.  A media server call already over, or
never reached, adds no wait.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from media.call_recording import RECORDINGS, RECORDINGS_SETTLED, add_recording, add_recording_wait
from media.server.call_watch import CallWatch, WatchedCall

__all__ = ["RECORDINGS", "RECORDINGS_SETTLED", "SETTLE_TIMEOUT", "SOURCE",
           "RecordingHandover"]

#: The C{source} of the entries made here.
SOURCE = "media_server"
#: Seconds a switch call waits for the end of its media server call.
SETTLE_TIMEOUT = 5.0

log = Logger()


@dataclass(eq=False)
class _Expected:
    """A B leg to the media server, and who waits for its recordings."""

    call: Any
    done: bool = False
    waiters: list[Deferred[list[dict[str, Any]]]] = field(default_factory=list)
    added: list[dict[str, Any]] = field(default_factory=list)
    timer: IDelayedCall | None = None


class RecordingHandover:
    """Hands finished media server recordings to switch calls (module docstring)."""

    def __init__(self, clock: Any, watch: CallWatch, *, timeout: float = SETTLE_TIMEOUT) -> None:
        """
        @param clock: the C{IReactorTime} of the timeout.
        @param watch: the watch of the media server's calls.
        @param timeout: seconds a switch call waits at most.
        """
        self._clock = clock
        self._watch = watch
        self.timeout = timeout
        self._expected: dict[str, _Expected] = {}
        #: the media server Call-IDs expected, by switch call (its C{id()}),
        #: so that a switch call's end looks only at its own legs
        self._by_call: dict[int, list[str]] = {}
        watch.on_end(self._media_call_ended)

    def expect(self, call_id: str, call: Any) -> None:
        """The switch's C{call} sends a leg with this Call-ID to the media server."""
        if call_id not in self._expected:
            self._expected[call_id] = _Expected(call)
            self._by_call.setdefault(id(call), []).append(call_id)

    def call_ended(self, call: Any) -> None:
        """The switch's C{call} ended: make its CDR wait for the recordings
        of its media server calls that are still up."""
        mine = [(call_id, expected) for call_id in self._by_call.pop(id(call), ())
                if (expected := self._expected.get(call_id)) is not None
                and expected.call is call]
        if not mine:
            return
        live = {watched.call_id for watched in list(self._watch.live.values())}
        for call_id, expected in mine:
            if expected.done or call_id not in live:
                del self._expected[call_id]
                continue
            waiter: Deferred[list[dict[str, Any]]] = Deferred()
            expected.waiters.append(waiter)
            add_recording_wait(call, waiter)
            if expected.timer is None:
                expected.timer = self._clock.callLater(self.timeout, self._too_late, call_id)

    def close(self) -> None:
        """Release every wait (the media server stops)."""
        for call_id in list(self._expected):
            self._settle(call_id)
        self._by_call.clear()

    def _media_call_ended(self, watched: WatchedCall) -> None:
        expected = self._expected.get(watched.call_id)
        if expected is None or expected.done:
            return
        recordings = getattr(watched.media, "recordings", None)
        files = list(recordings.finished) if recordings is not None else []
        for recording in files:
            add_recording(expected.call, str(recording.path), str(recording.mode),
                          int(recording.duration_ms), SOURCE)
            expected.added.append(expected.call.data[RECORDINGS][-1])
        expected.done = True
        if expected.waiters:  # the switch call ended already: this was the last word
            self._settle(watched.call_id)

    def _too_late(self, call_id: str) -> None:
        expected = self._expected.get(call_id)
        if expected is None:
            return
        expected.timer = None
        log.warn("media server: the call {call_id} did not end within {timeout} s of the "
                 "switch's call; its CDR goes without its recordings", call_id=call_id,
                 timeout=self.timeout)
        self._settle(call_id)

    def _settle(self, call_id: str) -> None:
        expected = self._expected.pop(call_id, None)
        if expected is None:
            return
        timer, expected.timer = expected.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        waiters, expected.waiters = expected.waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(list(expected.added))
