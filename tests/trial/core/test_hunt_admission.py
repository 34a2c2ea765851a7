"""Tests for the hunt's per-attempt admission (C{b2bua_admit_attempt}) and
the destinations' set-up timeout (C{Destination.setup_timeout})."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred

from b2bua.core.call import Call
from b2bua.core.decisions import Destination, Reject, Route, StopHunting
from b2bua.hookspecs import hookimpl
from tests.trial.core.test_call import CallTestCase, to_phone


class Gate:
    """Refuses the destinations whose label it lists; may answer later."""

    def __init__(self) -> None:
        self.refused: set[str] = set()
        self.asked: list[tuple[str, int]] = []
        self.lazy: Deferred[Any] | None = None
        self.stop = False

    @hookimpl
    def b2bua_admit_attempt(self, call: Call, destination: Destination, attempt: int) -> Any:
        self.asked.append((destination.label, attempt))
        answer = Reject(503, "Over Limit", (("Retry-After", "7"),), source="gate") \
            if destination.label in self.refused else None
        if self.lazy is not None:
            pending = self.lazy
            return lambda: pending.addCallback(lambda _: answer)
        return answer

    @hookimpl
    def b2bua_choose_failover(self, call: Call, leg: Any, response: Any, attempt: int) -> Any:
        if self.stop and leg is None:
            return StopHunting(response.code, response.reason, (("Retry-After", "7"),))
        return None


class AdmissionTests(CallTestCase):
    """A plugin may refuse destinations just before their legs start."""

    def setUp(self) -> None:
        super().setUp()
        self.gate = Gate()
        self.h.pm.register(self.gate, name="gate")
        self.carol = self.h.register("1002")

    def test_refused_destination_skipped(self) -> None:
        """A refused step is skipped: the next one rings; the plugin was
        asked once per destination, with the step's index."""
        self.steps.steps = [Route((to_phone(self.bob),)), Route((to_phone(self.carol),))]
        self.gate.refused = {"1001"}
        call = self.alice.call("2000")
        self.assertEqual(self.bob.incoming, [])
        self.carol.incoming[0].answer()
        self.assertEqual(call.code, 200)
        self.assertEqual(self.gate.asked, [("1001", 0), ("1002", 1)])
        call.hangup()
        self.finish()

    def test_part_of_a_step_refused(self) -> None:
        """In a parallel step, the admitted destinations still ring."""
        self.steps.steps = [Route((to_phone(self.bob), to_phone(self.carol)))]
        self.gate.refused = {"1001"}
        call = self.alice.call("2000")
        self.assertEqual((len(self.bob.incoming), len(self.carol.incoming)), (0, 1))
        self.carol.incoming[0].answer()
        self.assertEqual(call.code, 200)
        call.hangup()
        self.finish()

    def test_all_refused_answers_the_refusal(self) -> None:
        """When every step is refused, the caller gets the refusal."""
        self.steps.steps = [Route((to_phone(self.bob),))]
        self.gate.refused = {"1001"}
        call = self.alice.call("2000")
        self.assertEqual((call.code, call.responses[-1].reason), (503, "Over Limit"))
        self.finish()

    def test_stop_hunting_on_refusal(self) -> None:
        """The failover hook sees a refused step (no leg) and may stop."""
        self.steps.steps = [Route((to_phone(self.bob),)), Route((to_phone(self.carol),))]
        self.gate.refused = {"1001"}
        self.gate.stop = True
        call = self.alice.call("2000")
        self.assertEqual(call.code, 503)
        self.assertEqual(call.responses[-1].headers.get("retry-after"), "7")
        self.assertEqual(self.carol.incoming, [])
        self.finish()

    def test_lazy_admission(self) -> None:
        """A lazy answer holds the step until it fires; a caller's CANCEL
        meanwhile ends the call and nothing starts afterwards."""
        self.steps.steps = [Route((to_phone(self.bob),))]
        self.gate.lazy = Deferred()
        call = self.alice.call("2000")
        self.assertEqual(self.bob.incoming, [])
        self.gate.lazy.callback(None)
        self.h.flush()
        self.bob.incoming[0].answer()
        self.assertEqual(call.code, 200)
        call.hangup()
        self.gate.lazy = Deferred()
        second = self.alice.call("2000")
        self.h.advance(1)  # the switch's 100 Trying lets alice CANCEL
        second.cancel()
        self.h.flush()
        self.gate.lazy.callback(None)
        self.h.flush()
        self.assertEqual(len(self.bob.incoming), 1)
        self.assertEqual(second.code, 487)
        self.finish()


class SetupTimeoutTests(CallTestCase):
    """A destination that does not ring in time is left for the next."""

    def setUp(self) -> None:
        super().setUp()
        self.carol = self.h.register("1002")

    def test_silent_destination_left(self) -> None:
        """No ringing within the set-up timeout: CANCEL, next step."""
        first = replace(to_phone(self.bob), setup_timeout=3.0)
        self.steps.steps = [Route((first,), ring_timeout=60), Route((to_phone(self.carol),))]
        call = self.alice.call("2000")
        self.h.advance(2.9)
        self.assertEqual(self.carol.incoming, [])
        self.h.advance(0.2)
        self.assertTrue(self.bob.incoming[0].cancelled)
        self.carol.incoming[0].answer()
        self.assertEqual(call.code, 200)
        call.hangup()
        self.finish()

    def test_ringing_destination_kept(self) -> None:
        """A destination that rang in time rings on to the step's ring timeout."""
        first = replace(to_phone(self.bob), setup_timeout=3.0)
        self.steps.steps = [Route((first,), ring_timeout=60), Route((to_phone(self.carol),))]
        call = self.alice.call("2000")
        self.bob.incoming[0].ring()
        self.h.advance(30)
        self.assertEqual(self.carol.incoming, [])
        self.bob.incoming[0].answer()
        self.assertEqual(call.code, 200)
        call.hangup()
        self.finish()
