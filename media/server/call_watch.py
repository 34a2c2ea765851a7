"""Following the media server's calls from outside its user agent.

The media server plugin wants to know two things the user agent does not
report: the figures of every call (RTP, DTMF) for its metrics, and the end
of a call, after which the call's recordings are final, to hand them to the
switch's call.  Both come from the RTP sessions' shared L{Pacer}: the user
agent starts a call's L{RtpSession} once the call is in
L{MediaServerUA.calls} (the pacer hears it join) and stops it once the call
is released, its recordings closed (the pacer hears it leave).

L{CallWatch} observes the pacer: at a join it looks the session up among
the user agent's calls (the newest call first, where it nearly always is)
and keeps a L{WatchedCall}; at a leave it takes the call's last figures and
tells its listeners.  Sessions that are not the user agent's calls are left
alone.  Nothing here runs per packet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from media.server.pacer import Pacer

__all__ = ["CallWatch", "DtmfFigures", "WatchedCall"]


@dataclass(slots=True)
class DtmfFigures:
    """Digits a call received, by how they came.

    @ivar rfc4733: telephone-events (RFC 4733) in the RTP.
    @ivar info: SIP INFO requests.
    @ivar inband: tones detected in the audio.
    """

    rfc4733: int = 0
    info: int = 0
    inband: int = 0


@dataclass(eq=False)
class WatchedCall:
    """One media server call as the watch sees it.

    @ivar call_id: its SIP Call-ID (the switch's B-leg Call-ID).
    @ivar call: the user agent's call (C{rtp}, C{media}, C{invite}...).
    @ivar detectors: every in-band DTMF detector seen on it (one, or one
        more made by a re-INVITE that dropped telephone-event).
    """

    call_id: str
    call: Any
    detectors: list[Any] = field(default_factory=list)

    @property
    def rtp(self) -> Any:
        """The call's L{RtpSession}."""
        return self.call.rtp

    @property
    def media(self) -> Any:
        """The call's L{MediaCall}."""
        return self.call.media

    def dtmf(self) -> DtmfFigures:
        """The digits the call received so far, by source.

        RFC 4733 digits are the telephone-event receiver's, in-band ones
        the detectors'; every other digit the call took came in an INFO.
        """
        media = self.media
        self.note_detector()
        events = getattr(media, "events", None)
        rfc4733 = events.counters.events if events is not None else 0
        inband = sum(getattr(detector, "digits", 0) for detector in self.detectors)
        taken = len(getattr(media, "digits", ()))
        return DtmfFigures(rfc4733, max(taken - rfc4733 - inband, 0), inband)

    def note_detector(self) -> None:
        """Keep the call's current in-band detector (the call drops it at its end)."""
        detector = getattr(self.media, "detector", None)
        if detector is not None and not any(d is detector for d in self.detectors):
            self.detectors.append(detector)


class CallWatch:
    """Follows the calls of one L{MediaServerUA} (module docstring).

    @ivar live: the calls up now, by their RTP session.
    """

    def __init__(self, ua: Any, pacer: Pacer) -> None:
        """Watch C{ua}'s calls through C{pacer} (the pacer of its reactor)."""
        self._ua = ua
        self.live: dict[Any, WatchedCall] = {}
        self._listeners: list[Callable[[WatchedCall], object]] = []
        self._stop = pacer.observe(self._observed)

    def on_end(self, listener: Callable[[WatchedCall], object]) -> None:
        """Call C{listener(watched)} when a call ends (its recordings are
        final then, its figures last)."""
        self._listeners.append(listener)

    def close(self) -> None:
        """Stop watching (the calls up are forgotten)."""
        self._stop()
        self.live.clear()

    def _observed(self, event: str, session: Any) -> None:
        if event == "join":
            call = self._find(session)
            if call is not None:
                watched = WatchedCall(str(call.invite.call_id), call)
                watched.note_detector()
                self.live[session] = watched
            return
        watched = self.live.pop(session, None)
        if watched is None:
            return
        for listener in list(self._listeners):
            listener(watched)

    def _find(self, session: Any) -> Any:
        """The user agent's call whose RTP session is C{session}, or C{None}."""
        calls = self._ua.calls
        if not calls:
            return None
        newest = next(reversed(calls.values()))
        if newest.rtp is session:
            return newest
        for call in calls.values():
            if call.rtp is session:
                return call
        return None
