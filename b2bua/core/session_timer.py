"""Session timers (RFC 4028), one per leg.

Each leg negotiates its own interval and refresher.  When we are the
refresher we send a refresh (UPDATE when the peer allows it, else a
re-INVITE with the last SDP we sent) at half the interval; when the peer
is, we expect a refresh before the interval ends (less min(32, SE/3)
seconds) and otherwise end the call on both sides.

States: C{idle} (not negotiated), C{running} (timer armed), C{stopped}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from b2bua.sip.message import Message

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["SessionTimer", "parse_session_expires"]

MIN_SE = 90


def parse_session_expires(message: Message) -> tuple[int, str | None] | None:
    """(interval, refresher) from a Session-Expires header, or C{None}."""
    value = message.headers.get("session-expires")
    if value is None:
        return None
    number, _, params = value.partition(";")
    number = number.strip()
    if not number.isdigit():
        return None
    refresher = None
    for param in params.split(";"):
        name, _, arg = param.partition("=")
        if name.strip().lower() == "refresher":
            refresher = arg.strip().lower() or None
    return int(number), refresher


class SessionTimer:
    """The refresh timer of one leg.

    @param clock: runs the timer.
    @param refresh: sends a refresh on the leg (we are the refresher).
    @param expired: called when the peer failed to refresh in time.
    """

    def __init__(self, clock: IReactorTime, refresh: Callable[[], Any],
                 expired: Callable[[], Any]) -> None:
        self.clock = clock
        self._refresh = refresh
        self._expired = expired
        self.interval: int | None = None
        self.we_refresh = False
        self._timer: IDelayedCall | None = None
        self.state = "idle"

    def start(self, interval: int, we_refresh: bool) -> None:
        """Arm (or re-arm after a refresh) with a negotiated interval."""
        self.interval = max(interval, MIN_SE)
        self.we_refresh = we_refresh
        self.state = "running"
        self._arm()

    def refreshed(self) -> None:
        """A refresh succeeded on this leg: start the interval again."""
        if self.state == "running":
            self._arm()

    def _arm(self) -> None:
        self._cancel()
        assert self.interval is not None
        if self.we_refresh:
            self._timer = self.clock.callLater(self.interval / 2, self._fire_refresh)
        else:
            grace = min(32, self.interval / 3)
            self._timer = self.clock.callLater(self.interval - grace, self._fire_expired)

    def _fire_refresh(self) -> None:
        self._timer = None
        # if the refresh gets no answer, the session ends at the interval
        assert self.interval is not None
        self._timer = self.clock.callLater(self.interval / 2, self._fire_expired)
        self._refresh()

    def _fire_expired(self) -> None:
        self._timer = None
        self.state = "stopped"
        self._expired()

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def stop(self) -> None:
        """Stop for good (the call is over)."""
        self._cancel()
        self.state = "stopped"
