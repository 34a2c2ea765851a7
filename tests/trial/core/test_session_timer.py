"""Tests for L{b2bua.core.session_timer} (RFC 4028): the timer alone on a
clock, and session timers of calls through the switch."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.session_timer import MIN_SE, SessionTimer, parse_session_expires
from b2bua.core.switch import CoreSettings
from b2bua.sip.message import Request
from b2bua.testing import assert_no_delayed_calls
from tests.trial.core.test_call import CallTestCase


def with_session_expires(value: str | None) -> Request:
    """A request carrying C{Session-Expires: value} (none for C{None})."""
    headers = [] if value is None else [("Session-Expires", value)]
    return Request("INVITE", "sip:1001@127.0.0.1", headers)


class ParseTests(SynchronousTestCase):
    """L{parse_session_expires}."""

    def test_values(self) -> None:
        """Interval and refresher are read; junk and absence give C{None}."""
        self.assertEqual(parse_session_expires(with_session_expires("1800;refresher=uac")),
                         (1800, "uac"))
        self.assertEqual(parse_session_expires(with_session_expires(" 120 ; Refresher = UAS")),
                         (120, "uas"))
        self.assertEqual(parse_session_expires(with_session_expires("90")), (90, None))
        self.assertIsNone(parse_session_expires(with_session_expires("soon")))
        self.assertIsNone(parse_session_expires(with_session_expires(None)))


class SessionTimerTests(SynchronousTestCase):
    """L{SessionTimer} on a fake clock."""

    def setUp(self) -> None:
        """A timer recording its refreshes and its expiry."""
        self.clock = Clock()
        self.events: list[tuple[str, float]] = []
        self.timer = SessionTimer(
            self.clock, lambda: self.events.append(("refresh", self.clock.seconds())),
            lambda: self.events.append(("expired", self.clock.seconds())))

    def test_we_refresh_at_half(self) -> None:
        """As refresher we refresh at half the interval; a refresh that is
        answered starts the interval again; one that is not ends the
        session at the interval."""
        self.timer.start(120, we_refresh=True)
        self.clock.advance(60)
        self.assertEqual(self.events, [("refresh", 60)])
        self.timer.refreshed()
        self.clock.advance(60)
        self.assertEqual(self.events, [("refresh", 60), ("refresh", 120)])
        self.clock.advance(60)
        self.assertEqual(self.events[-1], ("expired", 180))
        self.assertEqual(self.timer.state, "stopped")
        assert_no_delayed_calls(self.clock)

    def test_peer_refreshes(self) -> None:
        """When the peer refreshes we expect it before the interval less
        min(32, interval/3) seconds (RFC 4028 10)."""
        self.timer.start(1800, we_refresh=False)
        self.clock.advance(1767)
        self.timer.refreshed()
        self.clock.advance(1767)
        self.assertEqual(self.events, [])
        self.clock.advance(1)
        self.assertEqual(self.events, [("expired", 3535)])
        small = SessionTimer(self.clock, lambda: None,
                             lambda: self.events.append(("small", self.clock.seconds())))
        small.start(90, we_refresh=False)
        self.clock.advance(60)
        self.assertEqual(self.events[-1], ("small", 3595))
        assert_no_delayed_calls(self.clock)

    def test_minimum_and_stop(self) -> None:
        """An interval below Min-SE is raised to it; L{SessionTimer.stop}
        leaves nothing scheduled and ignores later refreshes."""
        self.timer.start(10, we_refresh=True)
        self.assertEqual(self.timer.interval, MIN_SE)
        self.timer.stop()
        self.timer.refreshed()
        assert_no_delayed_calls(self.clock)
        self.assertEqual(self.events, [])


class CallerRefreshesTests(CallTestCase):
    """The caller asked for a session timer and refreshes it itself."""

    def test_missing_refresh_ends_the_call(self) -> None:
        """The 200 grants the caller's interval; when no refresh comes in
        time the switch sends BYE with a Reason to both sides."""
        call = self.alice.call("1001",
                               headers=(("Session-Expires", "90;refresher=uac"),))
        self.bob.incoming[0].answer()
        answer = call.responses[-1]
        self.assertEqual(answer.headers.get("Session-Expires"), "90;refresher=uac")
        self.assertIn("timer", answer.headers.get("Require") or "")
        self.h.advance(59.9)
        self.assertEqual(call.state, "confirmed")
        self.h.advance(0.1)
        for side in (self.a_side("BYE"), self.b_side("BYE")):
            self.assertEqual(len(side), 1)
            self.assertIn("session timer", side[0].headers.get("Reason") or "")
        self.assertEqual(self.ended_once().disconnect, "session-timer")
        self.finish()

    def test_refresh_keeps_the_call(self) -> None:
        """A caller's re-INVITE within the interval keeps the call up."""
        call = self.alice.call("1001",
                               headers=(("Session-Expires", "90;refresher=uac"),))
        self.bob.incoming[0].answer()
        for _ in range(3):
            self.h.advance(45)
            self.assertEqual(call.reinvite("sendrecv").code, 200)
        self.assertEqual(self.a_side("BYE"), [])
        call.hangup()
        self.finish()


class SwitchRefreshesTests(CallTestCase):
    """The switch asks callees for a 90 s session timer."""

    core = CoreSettings(session_expires=90)

    def test_refresh_at_half_interval(self) -> None:
        """A callee that ignores session timers is refreshed by the switch
        with a re-INVITE every 45 s, offering its last SDP again."""
        call, incoming = self.connect()
        invite = incoming.invite
        self.assertEqual(invite.headers.get("Session-Expires"), "90")
        self.assertEqual(invite.headers.get("Min-SE"), "90")
        self.h.advance(44.9)
        self.assertEqual(len(self.b_side("INVITE")), 1)
        self.h.advance(0.1)
        [_, refresh] = self.b_side("INVITE")
        self.assertEqual(refresh.headers.get("Session-Expires"), "90;refresher=uac")
        self.assertEqual(refresh.body, invite.body)
        self.assertEqual(len(self.b_side("ACK")), 2)
        self.h.advance(45)
        self.assertEqual(len(self.b_side("INVITE")), 3)
        self.assertEqual(self.a_side("INVITE"), [])
        self.assertEqual(call.state, "confirmed")
        call.hangup()
        self.finish()

    def test_callee_refresher_that_does_not(self) -> None:
        """A callee that takes the refresher role but never refreshes is hung
        up (both sides) before the interval ends."""
        call = self.alice.call("1001")
        self.bob.incoming[0].answer(headers=(("Session-Expires", "90;refresher=uas"),
                                             ("Require", "timer")))
        self.h.advance(60)
        self.assertEqual(len(self.b_side("BYE")), 1)
        self.assertEqual(call.state, "terminated")
        self.finish()

    def test_caller_refreshed_with_update(self) -> None:
        """When the caller made the switch its refresher it gets an UPDATE
        (its Allow lists UPDATE) at half its interval."""
        call = self.alice.call("1001",
                               headers=(("Session-Expires", "120;refresher=uas"),))
        self.bob.incoming[0].answer()
        self.h.advance(60)
        [update] = self.a_side("UPDATE")
        self.assertEqual(update.headers.get("Session-Expires"), "120;refresher=uac")
        self.assertEqual(update.body, b"")
        self.h.advance(61)
        self.assertEqual(len(self.a_side("UPDATE")), 2)
        self.assertEqual(call.state, "confirmed")
        call.hangup()
        self.finish()
