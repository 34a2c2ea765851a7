"""Tests for L{b2bua.core.hooks}: lazy decisions in order with a timeout on
the clock, the error rules (a failing decision fails the call with 500, a
failing notification disturbs nothing), alone and through the switch; and
the promise every plugin relies on: C{b2bua_call_ended} once per call, with
the call metrics following."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.call import Call, CallRecord
from b2bua.core.decisions import Hunt, Reject
from b2bua.core.hooks import CallHooks, HookFailed
from b2bua.core.plugins import build_plugin_manager
from b2bua.hookspecs import hookimpl
from b2bua.sip.interfaces import Source
from b2bua.sip.message import Request
from b2bua.testing import assert_no_delayed_calls
from tests.trial.core.test_call import CallTestCase

REQUEST = Request("INVITE", "sip:1001@127.0.0.1")


class Decider:
    """A plugin whose b2bua_authorize_call answers what it is told, lazily
    or not, and records when it is asked and when its callable runs."""

    def __init__(self, name: str, log: list[str], answer: Any = None,
                 lazy: Callable[[], Deferred[Any]] | None = None) -> None:
        self.name = name
        self.log = log
        self.answer = answer
        self.lazy = lazy

    @hookimpl
    def b2bua_authorize_call(self, call: Any, request: Request) -> Any:
        """Record; answer (a callable when lazy)."""
        self.log.append(f"asked {self.name}")
        if self.lazy is None:
            return self.answer
        lazy = self.lazy

        def decide() -> Deferred[Any]:
            self.log.append(f"called {self.name}")
            return lazy()

        return decide


class Broken:
    """A plugin whose every hook raises."""

    @hookimpl
    def b2bua_authorize_call(self, call: Any, request: Request) -> None:
        """Raise."""
        raise RuntimeError("authorize is broken")

    @hookimpl
    def b2bua_call_answered(self, call: Any, leg: Any, answered_at: float) -> None:
        """Raise."""
        raise RuntimeError("answered is broken")

    @hookimpl
    def b2bua_call_ended(self, call: Any, record: Any) -> None:
        """Raise."""
        raise RuntimeError("ended is broken")

    @hookimpl
    def b2bua_trusted_source(self, source: Source, request: Request) -> str:
        """Raise."""
        raise RuntimeError("trust is broken")


class Watcher:
    """A plugin that records call ends and returns a Deferred from them."""

    def __init__(self) -> None:
        self.ended: list[Any] = []
        self.pending: Deferred[None] = Deferred()

    @hookimpl
    def b2bua_call_ended(self, call: Any, record: Any) -> Deferred[None]:
        """Record; hand back a Deferred the test fires."""
        self.ended.append(call)
        return self.pending


class CallHooksTests(SynchronousTestCase):
    """L{CallHooks} over a real plugin manager and a fake clock."""

    def setUp(self) -> None:
        """A clock and an empty record of errors."""
        self.clock = Clock()
        self.errors: list[str] = []
        self.log: list[str] = []

    def hooks(self, **plugins: object) -> CallHooks:
        """L{CallHooks} over C{plugins} (registered in keyword order)."""
        pm = build_plugin_manager(plugins, load_entry_points=False)
        return CallHooks(pm, self.clock, timeout=5.0, count_error=self.errors.append)

    def test_lazy_in_order(self) -> None:
        """Every plugin is asked at once (pluggy calls the last registered
        first), but their callables run one after the other, and the first
        decisive answer ends the walk."""
        slow = Decider("slow", self.log, lazy=lambda: deferLater(self.clock, 1.0, lambda: None))
        rejecting = Decider("rejecting", self.log,
                            lazy=lambda: succeed(Reject(403, source="rejecting")))
        never = Decider("never", self.log, lazy=lambda: succeed(Reject(486)))
        hooks = self.hooks(never=never, rejecting=rejecting, slow=slow)
        d = hooks.authorize(object(), REQUEST)
        self.assertEqual(self.log, ["asked slow", "asked rejecting", "asked never",
                                    "called slow"])
        self.clock.advance(0.5)
        self.assertNoResult(d)
        self.clock.advance(0.5)
        self.assertEqual(self.successResultOf(d), Reject(403, source="rejecting"))
        self.assertEqual(self.log[-1], "called rejecting")
        self.assertEqual(self.errors, [])
        assert_no_delayed_calls(self.clock)

    def test_plain_values(self) -> None:
        """Plain answers need no callable; C{None} means no objection."""
        hooks = self.hooks(a=Decider("a", self.log), b=Decider("b", self.log))
        self.assertIsNone(self.successResultOf(hooks.authorize(object(), REQUEST)))
        assert_no_delayed_calls(self.clock)

    def test_timeout(self) -> None:
        """A lazy decision still pending after the timeout is cancelled and
        fails the decision (L{HookFailed}), counted under its hook."""
        cancelled: list[bool] = []
        pending: Deferred[None] = Deferred(lambda d: cancelled.append(True))
        hooks = self.hooks(stuck=Decider("stuck", self.log, lazy=lambda: pending))
        d = hooks.authorize(object(), REQUEST)
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, HookFailed)
        self.assertEqual(cancelled, [True])
        self.assertEqual(self.errors, ["b2bua_authorize_call"])
        self.flushLoggedErrors(TimeoutError)
        assert_no_delayed_calls(self.clock)

    def test_raising_decision(self) -> None:
        """A decision hook that raises fails the decision, counted."""
        hooks = self.hooks(broken=Broken())
        self.failureResultOf(hooks.authorize(object(), REQUEST), HookFailed)
        self.assertEqual(self.errors, ["b2bua_authorize_call"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        assert_no_delayed_calls(self.clock)

    def test_wrong_answer_type(self) -> None:
        """An answer that is not a decision fails the decision."""
        hooks = self.hooks(odd=Decider("odd", self.log, answer="yes"))
        self.failureResultOf(hooks.authorize(object(), REQUEST), HookFailed)
        self.assertEqual(self.errors, ["b2bua_authorize_call"])
        self.flushLoggedErrors(TypeError)
        assert_no_delayed_calls(self.clock)

    def test_notification_errors_are_contained(self) -> None:
        """A notification that raises is counted and logged, not raised, and
        the other plugins still get the notification."""
        watcher = Watcher()
        hooks = self.hooks(watcher=watcher, broken=Broken())
        hooks.call_ended("call", "record")
        self.assertEqual(watcher.ended, ["call"])
        self.assertEqual(self.errors, ["b2bua_call_ended"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        assert_no_delayed_calls(self.clock)

    def test_returned_deferreds_tracked(self) -> None:
        """A Deferred a notification returns is kept in C{outstanding} until
        it fires; a failure of it is counted."""
        watcher = Watcher()
        hooks = self.hooks(watcher=watcher)
        hooks.call_ended("call", "record")
        self.assertEqual(hooks.outstanding, {watcher.pending})
        watcher.pending.errback(RuntimeError("late failure"))
        self.assertEqual(hooks.outstanding, set())
        self.assertEqual(self.errors, ["b2bua_call_ended"])
        self.flushLoggedErrors(RuntimeError)
        assert_no_delayed_calls(self.clock)

    def test_synchronous_decisions(self) -> None:
        """A raising C{b2bua_trusted_source} trusts nobody; a failover answer
        of the wrong type means "no opinion"."""
        hooks = self.hooks(broken=Broken())
        source = Source("UDP", ("127.0.0.2", 5060), ("127.0.0.1", 5060))
        self.assertIsNone(hooks.trusted_source(source, REQUEST))
        self.assertEqual(self.errors, ["b2bua_trusted_source"])
        self.assertIsNone(hooks.choose_failover(object(), object(), None, 0))
        self.flushLoggedErrors(RuntimeError)

        class Failover:
            """Answers nonsense on the first attempt, then hunts."""

            @hookimpl
            def b2bua_choose_failover(self, call: Any, leg: Any, response: Any,
                                      attempt: int) -> Any:
                """Nonsense, then L{Hunt}."""
                return Hunt(source="x") if attempt else "nonsense"

        hooks = self.hooks(failover=Failover())
        self.assertIsNone(hooks.choose_failover(object(), object(), None, 0))
        self.assertEqual(hooks.choose_failover(object(), object(), None, 1), Hunt(source="x"))
        assert_no_delayed_calls(self.clock)


    def test_lazy_answers_at_once_need_no_timer(self) -> None:
        """Lazy answers whose result is there at once are decided at once:
        no timeout is armed on the clock for them."""
        armed: list[float] = []
        original = self.clock.callLater

        def call_later(delay: float, *args: Any, **kwargs: Any) -> Any:
            armed.append(delay)
            return original(delay, *args, **kwargs)

        self.clock.callLater = call_later  # type: ignore[method-assign]
        first = Decider("first", self.log, lazy=lambda: succeed(None))
        second = Decider("second", self.log, lazy=lambda: succeed(Reject(486, source="b")))
        hooks = self.hooks(second=second, first=first)
        d = hooks.authorize(object(), REQUEST)
        self.assertEqual(self.successResultOf(d), Reject(486, source="b"))
        self.assertEqual(self.log, ["asked first", "asked second", "called first",
                                    "called second"])
        self.assertEqual(armed, [])
        self.assertEqual(self.errors, [])

    def test_lazy_failing_at_once(self) -> None:
        """A lazy answer that fails at once fails the decision, counted and
        logged once (no unhandled error is left behind)."""

        def broken() -> Deferred[Any]:
            raise RuntimeError("lazy is broken")

        hooks = self.hooks(broken=Decider("broken", self.log, lazy=broken))
        failure = self.failureResultOf(hooks.authorize(object(), REQUEST), HookFailed)
        self.assertEqual(failure.value.hook, "b2bua_authorize_call")
        self.assertEqual(self.errors, ["b2bua_authorize_call"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        assert_no_delayed_calls(self.clock)

    def test_later_answer_of_wrong_type(self) -> None:
        """A lazy answer that comes later and is no decision fails it."""
        late: Deferred[Any] = Deferred()
        hooks = self.hooks(odd=Decider("odd", self.log, lazy=lambda: late))
        d = hooks.authorize(object(), REQUEST)
        self.assertNoResult(d)
        late.callback("yes")
        self.failureResultOf(d, HookFailed)
        self.assertEqual(self.errors, ["b2bua_authorize_call"])
        self.flushLoggedErrors(TypeError)
        assert_no_delayed_calls(self.clock)


class Slow:
    """A plugin authorizing every call after C{delay} seconds (or never)."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self.clock: Any = None

    @hookimpl
    def b2bua_configure(self, services: Any, settings: dict[str, Any]) -> None:
        """Keep the clock."""
        self.clock = services.clock

    @hookimpl
    def b2bua_authorize_call(self, call: Call, request: Request) -> Any:
        """A lazy decision on the clock."""
        if self.delay is None:
            return lambda: Deferred()
        return lambda: deferLater(self.clock, self.delay, lambda: None)


class PluginErrorTests(CallTestCase):
    """Plugin failures seen from the calls."""

    def test_raising_authorize_fails_the_call(self) -> None:
        """A plugin raising in C{b2bua_authorize_call} fails the call with
        500, counted in C{b2bua_plugin_errors_total}; the call still ends
        exactly once."""
        self.h.pm.register(Broken(), name="broken")
        call = self.alice.call("1001")
        self.assertEqual(call.code, 500)
        self.assertEqual(self.bob.incoming, [])
        self.assertEqual(self.h.metric("b2bua_plugin_errors_total",
                                       hook="b2bua_authorize_call"), 1)
        self.assertEqual(self.ended_once().disconnect, "plugin-error")
        self.assertEqual(self.h.metric("b2bua_plugin_errors_total", hook="b2bua_call_ended"), 1)
        self.flushLoggedErrors(RuntimeError)
        self.finish()

    def test_raising_notification_does_not_disturb(self) -> None:
        """A plugin raising in C{b2bua_call_answered} and
        C{b2bua_call_ended} changes nothing for the call or other plugins."""
        self.h.pm.register(_Notifications(), name="notifications")
        call, incoming = self.connect()
        call.hangup()
        self.assertEqual(incoming.state, "terminated")
        self.assertEqual(self.ended_once().code, 200)
        self.assertEqual(self.h.metric("b2bua_plugin_errors_total",
                                       hook="b2bua_call_answered"), 1)
        self.assertEqual(self.h.metric("b2bua_plugin_errors_total", hook="b2bua_call_ended"), 1)
        self.flushLoggedErrors(RuntimeError)
        self.finish()

    def test_slow_decision_waited_for(self) -> None:
        """A lazy decision taking 2 s holds the call that long on the clock."""
        self.h.pm.register(Slow(2.0), name="slow")
        self.alice.call("1001")
        self.assertEqual(self.bob.incoming, [])
        self.h.advance(2)
        self.assertEqual(len(self.bob.incoming), 1)
        self.bob.incoming[0].answer()
        self.alice.calls[-1].hangup()
        self.finish()

    def test_decision_timeout_fails_the_call(self) -> None:
        """A lazy decision that never answers fails the call with 500 after
        the hook timeout (5 s)."""
        self.h.pm.register(Slow(None), name="slow")
        call = self.alice.call("1001")
        self.h.advance(4.9)
        self.assertIsNone(call.code)
        self.h.advance(0.1)
        self.assertEqual(call.code, 500)
        self.assertEqual(self.h.metric("b2bua_plugin_errors_total",
                                       hook="b2bua_authorize_call"), 1)
        self.ended_once()
        self.flushLoggedErrors(TimeoutError)
        self.finish()


class _Notifications:
    """A plugin whose notifications raise."""

    @hookimpl
    def b2bua_call_answered(self, call: Any, leg: Any, answered_at: float) -> None:
        """Raise."""
        raise RuntimeError("answered is broken")

    @hookimpl
    def b2bua_call_ended(self, call: Call, record: CallRecord) -> None:
        """Raise."""
        raise RuntimeError("ended is broken")


class OutcomeTests(CallTestCase):
    """C{b2bua_call_ended} fires once for every call, and the metrics
    follow."""

    def test_rejected_by_authorize(self) -> None:
        """A call a plugin refuses gets the plugin's code and headers, and
        still ends exactly once."""
        self.recorder.reject = Reject(402, "Payment Required", (("Warning", '399 x "low"'),),
                                      source="recorder")
        call = self.alice.call("1001")
        self.assertEqual(call.code, 402)
        self.assertEqual(call.responses[-1].headers.get("Warning"), '399 x "low"')
        self.assertEqual(self.bob.incoming, [])
        self.assertEqual(self.ended_once().disconnect, "rejected:recorder")
        self.assertEqual(self.h.metric("b2bua_calls_total", outcome="rejected"), 1)
        self.finish()

    def test_no_route(self) -> None:
        """A number nobody routes gets 404 and ends once."""
        call = self.alice.call("sip:5551234@example.net")
        self.assertEqual(call.code, 404)
        self.assertEqual(self.ended_once().disconnect, "no-route")
        self.finish()

    def test_every_call_ends_once(self) -> None:
        """Answered, cancelled, busy and unregistered calls each fire
        C{b2bua_call_ended} exactly once, with the right outcome metric."""
        call, _ = self.connect()
        call.hangup()
        cancelled = self.alice.call("1001")
        cancelled.cancel()
        busy = self.alice.call("1001")
        self.bob.incoming[-1].busy()
        self.alice.call("1009")
        self.finish()
        ids = [c.id for c, _ in self.recorder.ended]
        self.assertEqual(len(ids), 4)
        self.assertEqual(len(set(ids)), 4)
        self.assertEqual(busy.code, 486)
        for outcome in ("answered", "cancelled", "busy", "no_answer"):
            self.assertEqual(self.h.metric("b2bua_calls_total", outcome=outcome), 1, outcome)
        self.assertEqual(self.h.metric("b2bua_calls_active"), 0)

    def test_setup_time_observed(self) -> None:
        """The time from INVITE to answer goes to
        C{b2bua_call_setup_seconds}; the active gauge goes up and back."""
        call = self.alice.call("1001")
        self.assertEqual(self.h.metric("b2bua_calls_active"), 1)
        self.h.advance(2.5)
        self.bob.incoming[0].answer()
        self.assertEqual(self.h.metric("b2bua_call_setup_seconds_count"), 1)
        self.assertEqual(self.h.metric("b2bua_call_setup_seconds_sum"), 2.5)
        self.assertEqual(self.recorder.events[-1], ("answered", self.h.clock.seconds()))
        call.hangup()
        self.assertEqual(self.h.metric("b2bua_calls_active"), 0)
        self.assertEqual(self.h.metric("b2bua_calls_total", outcome="answered"), 1)
        self.finish()
