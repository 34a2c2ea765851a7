"""Tests for L{media.server.ivr_runtime}: running flows on a fake session.

The fake session lives on a L{Clock}: a prompt plays for one second per
item, digits are collected by the real L{DigitCollector}, and everything the
flow makes the session do is recorded in C{events}.
"""

from __future__ import annotations

import datetime
from collections.abc import MutableMapping, Sequence
from textwrap import dedent
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from media.server.ivr import builtin_flow, load_flow
from media.server.ivr_actions import ActionError, ActionRegistry, builtin_actions
from media.server.ivr_runtime import FlowResult, FlowRun, run_flow
from media.server.ivr_session import (
    CallerHungUp,
    DigitCollector,
    EchoSession,
    Prompt,
    PromptItem,
    SayDate,
    SayDigits,
    SayDuration,
    SayNumber,
    Session,
)

#: 2024-05-06 14:05:09 UTC, the fake session's wall clock at time 0.
EPOCH = datetime.datetime(2024, 5, 6, 14, 5, 9, tzinfo=datetime.UTC)


def names(prompts: Sequence[PromptItem]) -> tuple[Any, ...]:
    """Prompts as short values, for readable event lists."""
    out: list[Any] = []
    for item in prompts:
        if isinstance(item, Prompt):
            out.append(item.name)
        else:
            out.append(item)
    return tuple(out)


class FakeSession:
    """A call on a clock: records what it is asked to do, takes key presses.

    @ivar events: C{("play", names, barge_in)}, C{("collect", max, term,
        first, inter)}, C{("transfer", target)}, C{("hangup", cause)} and
        C{("stopped", what)} when a pending operation was cancelled.
    """

    def __init__(self, clock: Clock, epoch: datetime.datetime = EPOCH) -> None:
        self.clock = clock
        self.epoch = epoch
        self.events: list[tuple[Any, ...]] = []
        self.transfer_result: Deferred[None] | None = None
        self._play: tuple[Deferred[str | None], bool, IDelayedCall] | None = None
        self._collector: DigitCollector | None = None

    def play(self, prompts: Sequence[PromptItem], barge_in: bool) -> Deferred[str | None]:
        """Play for one second per item."""
        self.events.append(("play", names(prompts), barge_in))

        def cancel(_: Deferred[str | None]) -> None:
            self.events.append(("stopped", "play"))
            timer.cancel()
            self._play = None

        d: Deferred[str | None] = Deferred(cancel)
        timer = self.clock.callLater(len(prompts), self._played, d)
        self._play = (d, barge_in, timer)
        return d

    def _played(self, d: Deferred[str | None]) -> None:
        self._play = None
        d.callback(None)

    def collect(
        self, max_digits: int, terminator: str, first: float, inter: float
    ) -> Deferred[str]:
        """Collect with the real collector."""
        self.events.append(("collect", max_digits, terminator, first, inter))
        self._collector = DigitCollector(self.clock, max_digits, terminator, first, inter)
        return self._collector.deferred

    def transfer(self, target: str) -> Deferred[None] | None:
        """Record the transfer; answer with C{transfer_result}."""
        self.events.append(("transfer", target))
        return self.transfer_result

    def hangup(self, cause: str) -> None:
        """Record the hangup."""
        self.events.append(("hangup", cause))

    def now(self) -> datetime.datetime:
        """The epoch plus the clock's seconds."""
        return self.epoch + datetime.timedelta(seconds=self.clock.seconds())

    def press(self, digits: str) -> None:
        """The caller presses keys (a barge-in stops a playing prompt)."""
        for digit in digits:
            if self._play is not None:
                d, barge_in, timer = self._play
                if barge_in:
                    self._play = None
                    timer.cancel()
                    d.callback(digit)
            elif self._collector is not None and not self._collector.done:
                self._collector.digit_received(digit)

    def caller_hangs_up(self) -> None:
        """The caller goes away: whatever is pending fails."""
        if self._play is not None:
            d, _, timer = self._play
            self._play = None
            timer.cancel()
            d.errback(CallerHungUp())
        elif self._collector is not None:
            self._collector.caller_hung_up()


class EchoingSession(FakeSession):
    """A fake session that can echo."""

    def echo(self) -> Deferred[None]:
        """Echo until cancelled."""
        self.events.append(("echo",))
        return Deferred(lambda _: self.events.append(("stopped", "echo")))


MENU = """
[flow]
start = "menu"

[nodes.menu]
type = "collect"
prompt = "menu"
invalid_prompt = "invalid"
timeout_prompt = "no-input"
variable = "choice"
pattern = "[1-3]"
on_timeout = "operator"
on_invalid = "bye"
next = "route"

[nodes.route]
type = "branch"
variable = "choice"
cases = { "1" = "sales", "2" = "support" }
default = "bye"

[nodes.sales]
type = "transfer"
target = "2001"

[nodes.support]
type = "transfer"
target = "sip:support@example.com"

[nodes.operator]
type = "transfer"
target = "0"

[nodes.bye]
type = "hangup"
cause = "busy"
"""


class RuntimeCase(SynchronousTestCase):
    """Shared set-up: a clock, a fake session, the built-in actions."""

    session_class: type[FakeSession] = FakeSession

    def setUp(self) -> None:
        self.clock = Clock()
        self.session = self.session_class(self.clock)
        self.actions = builtin_actions()
        self.addCleanup(self.assertNoTimers)

    def assertNoTimers(self) -> None:
        """Nothing is left on the clock after a test."""
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def start(
        self, text: str, variables: dict[str, str] | None = None
    ) -> tuple[FlowRun, Deferred[FlowResult]]:
        """Load a flow and start it on the fake session."""
        flow = load_flow(dedent(text), actions=self.actions)
        return run_flow(
            flow, self.session, actions=self.actions, clock=self.clock, variables=variables
        )

    def result(self, d: Deferred[FlowResult]) -> FlowResult:
        """The run's result, which must be there."""
        return self.successResultOf(d)


class MenuTests(RuntimeCase):
    """A menu with retries, timeouts, invalid input and a branch."""

    def test_retries_then_success(self) -> None:
        """Silence, then a wrong key, then a right one: each failure plays
        its prompt, the menu repeats, and the branch transfers."""
        _, d = self.start(MENU)
        self.clock.advance(1)  # "menu" played
        self.clock.advance(5)  # nothing pressed
        self.clock.advance(1)  # "no-input" played
        self.clock.advance(1)  # "menu" played again
        self.session.press("9")
        self.clock.advance(1)  # "invalid"
        self.clock.advance(1)  # "menu"
        self.assertNoResult(d)
        self.session.press("2")
        result = self.result(d)
        collect = ("collect", 1, "#", 5.0, 3.0)
        self.assertEqual(
            self.session.events,
            [
                ("play", ("menu",), True),
                collect,
                ("play", ("no-input",), True),
                ("play", ("menu",), True),
                collect,
                ("play", ("invalid",), True),
                ("play", ("menu",), True),
                collect,
                ("transfer", "sip:support@example.com"),
            ],
        )
        self.assertEqual(
            (result.outcome, result.node, result.detail, result.steps),
            ("transfer", "support", "sip:support@example.com", 3),
        )
        self.assertEqual(result.variables["choice"], "2")

    def test_timeouts_exhausted(self) -> None:
        """Three silent attempts (retries = 2) take on_timeout."""
        _, d = self.start(MENU)
        self.clock.pump([1, 5, 1] * 2 + [1])
        self.assertNoResult(d)
        self.clock.advance(5)
        result = self.result(d)
        self.assertEqual(self.session.events[-1], ("transfer", "0"))
        self.assertEqual([e[0] for e in self.session.events].count("collect"), 3)
        self.assertEqual((result.outcome, result.variables["choice"]), ("transfer", ""))
        self.assertEqual(self.clock.seconds(), 1 + 5 + 1 + 1 + 5 + 1 + 1 + 5)

    def test_invalid_exhausted(self) -> None:
        """Three wrong keys take on_invalid; the last entry is kept."""
        _, d = self.start(MENU)
        for key in "789":
            self.clock.advance(1)
            self.session.press(key)
        self.clock.advance(1)  # the last "invalid" prompt is not played
        result = self.result(d)
        self.assertEqual(self.session.events[-1], ("hangup", "busy"))
        self.assertEqual(
            (result.outcome, result.detail, result.variables["choice"]), ("hangup", "busy", "9")
        )

    def test_default_branch(self) -> None:
        """A valid key without a case takes the default."""
        _, d = self.start(MENU)
        self.clock.advance(1)
        self.session.press("3")
        self.assertEqual(self.result(d).node, "bye")

    def test_no_target_hangs_up(self) -> None:
        """Out of retries with no on_timeout: hang up with no_input."""
        text = MENU.replace('on_timeout = "operator"\n', "").replace(
            '[nodes.operator]\ntype = "transfer"\ntarget = "0"\n', ""
        )
        _, d = self.start(text.replace("pattern", "retries = 0\npattern"))
        self.clock.pump([1, 5])
        result = self.result(d)
        self.assertEqual((result.outcome, result.detail), ("hangup", "no_input"))
        self.assertEqual(self.session.events[-1], ("hangup", "no_input"))

    def test_invalid_without_target_hangs_up(self) -> None:
        """Out of retries with no on_invalid: hang up with invalid_input."""
        text = MENU.replace('on_invalid = "bye"\n', "").replace("pattern", "retries = 0\npattern")
        _, d = self.start(text)
        self.clock.advance(1)
        self.session.press("5")
        self.assertEqual(self.result(d).detail, "invalid_input")


ACCOUNT = """
[flow]
start = "ask"

[nodes.ask]
type = "collect"
prompt = "enter-account"
variable = "account"
max_digits = 6
min_digits = 4
first_digit_timeout = 8
inter_digit_timeout = 2
retries = 0
on_invalid = "bad"
on_timeout = "bad"
next = "ok"

[nodes.ok]
type = "hangup"
cause = "normal"

[nodes.bad]
type = "hangup"
cause = "rejected"
"""


class CollectTests(RuntimeCase):
    """Digit counts, terminator, inter-digit timeout and barge-in."""

    def test_terminator(self) -> None:
        """The terminator ends the entry and is not part of it."""
        _, d = self.start(ACCOUNT)
        self.clock.advance(1)
        self.session.press("1234#")
        result = self.result(d)
        self.assertEqual((result.detail, result.variables["account"]), ("normal", "1234"))
        self.assertEqual(self.session.events[1], ("collect", 6, "#", 8.0, 2.0))

    def test_max_digits(self) -> None:
        """The entry ends by itself at max_digits."""
        _, d = self.start(ACCOUNT)
        self.clock.advance(1)
        self.session.press("123456")
        self.assertEqual(self.result(d).variables["account"], "123456")

    def test_inter_digit_timeout_partial(self) -> None:
        """A pause after some digits ends the entry; too short is invalid."""
        _, d = self.start(ACCOUNT)
        self.clock.advance(1)
        self.session.press("12")
        self.clock.advance(1.9)
        self.session.press("3")
        self.assertNoResult(d)
        self.clock.advance(2)
        result = self.result(d)
        self.assertEqual((result.detail, result.variables["account"]), ("rejected", "123"))

    def test_barge_in_on_collect_prompt(self) -> None:
        """A key during the prompt stops it and starts the entry; the rest
        is collected with the inter-digit timeout."""
        _, d = self.start(ACCOUNT.replace('"enter-account"', '["enter-account", "beep"]'))
        self.clock.advance(1)
        self.session.press("4")
        self.assertEqual(
            self.session.events,
            [("play", ("enter-account", "beep"), True), ("collect", 5, "#", 2.0, 2.0)],
        )
        self.session.press("321#")
        self.assertEqual(self.result(d).variables["account"], "4321")

    def test_barge_in_terminator_only(self) -> None:
        """The terminator alone, with min_digits 0, is a valid empty entry."""
        text = ACCOUNT.replace("min_digits = 4", "min_digits = 0")
        _, d = self.start(text)
        self.session.press("#")
        result = self.result(d)
        self.assertEqual((result.detail, result.variables["account"]), ("normal", ""))
        self.assertEqual([e[0] for e in self.session.events], ["play", "hangup"])

    def test_play_barge_in_is_type_ahead(self) -> None:
        """A key that stops a play node feeds the next collect, which skips
        its prompt; one digit is the whole entry at max_digits 1."""
        _, d = self.start(
            """
            [flow]
            start = "hello"
            [nodes.hello]
            type = "play"
            prompt = ["hello", "long-announcement"]
            barge_in = true
            next = "menu"
            [nodes.menu]
            type = "collect"
            prompt = "menu"
            variable = "choice"
            next = "done"
            [nodes.done]
            type = "hangup"
            """
        )
        self.clock.advance(1)
        self.session.press("7")
        result = self.result(d)
        self.assertEqual(
            self.session.events,
            [("play", ("hello", "long-announcement"), True), ("hangup", "normal")],
        )
        self.assertEqual(result.variables["choice"], "7")

    def test_no_barge_in(self) -> None:
        """Keys during a prompt without barge-in are ignored."""
        _, d = self.start(
            """
            [flow]
            start = "hello"
            [nodes.hello]
            type = "play"
            prompt = "hello"
            next = "menu"
            [nodes.menu]
            type = "collect"
            variable = "choice"
            retries = 0
            next = "done"
            on_timeout = "done"
            [nodes.done]
            type = "hangup"
            """
        )
        self.session.press("7")
        self.clock.advance(1)
        self.assertEqual(self.session.events[-1], ("collect", 1, "#", 5.0, 3.0))
        self.session.press("8")
        self.assertEqual(self.result(d).variables["choice"], "8")


class NodeTests(RuntimeCase):
    """set, action, transfer and hangup nodes; prompt resolution."""

    def test_set_and_transfer(self) -> None:
        """set builds a target from variables; transfer hands it over."""
        _, d = self.start(
            """
            [flow]
            start = "build"
            [nodes.build]
            type = "set"
            variable = "uri"
            value = ["sip:", { digits = "caller", last = 4 }, "@", { var = "domain" }]
            next = "go"
            [nodes.go]
            type = "transfer"
            target = { var = "uri" }
            """,
            variables={"caller": "+1 (555) 010-4321", "domain": "pbx.example"},
        )
        result = self.result(d)
        self.assertEqual(self.session.events, [("transfer", "sip:4321@pbx.example")])
        self.assertEqual((result.outcome, result.steps), ("transfer", 2))

    def test_transfer_failure(self) -> None:
        """A refused transfer takes on_error, with last_error set."""
        self.session.transfer_result = fail(RuntimeError("486 Busy Here"))
        _, d = self.start(
            """
            [flow]
            start = "go"
            [nodes.go]
            type = "transfer"
            target = "1001"
            on_error = "sorry"
            [nodes.sorry]
            type = "hangup"
            cause = "busy"
            """
        )
        result = self.result(d)
        self.assertEqual(result.detail, "busy")
        self.assertEqual(result.variables["last_error"], "transfer to 1001 failed: 486 Busy Here")

    def test_transfer_failure_without_on_error(self) -> None:
        """Without on_error a refused transfer is a flow error."""
        self.session.transfer_result = fail(RuntimeError("no route"))
        _, d = self.start('[flow]\nstart = "go"\n[nodes.go]\ntype = "transfer"\ntarget = "9"\n')
        result = self.result(d)
        self.assertEqual(result.outcome, "error")
        self.assertEqual(result.detail, "node 'go', field 'target': transfer to 9 failed: no route")
        self.assertEqual(self.session.events[-1], ("hangup", "flow_error"))

    def test_empty_transfer_target(self) -> None:
        """A target that evaluates to nothing is an error naming the field."""
        _, d = self.start(
            '[flow]\nstart = "go"\n[nodes.go]\ntype = "transfer"\ntarget = { var = "x" }\n'
        )
        self.assertEqual(
            self.result(d).detail, "node 'go', field 'target': evaluates to an empty target"
        )

    def test_hangup_cause(self) -> None:
        """A hangup node's cause reaches the session."""
        _, d = self.start('[flow]\nstart = "h"\n[nodes.h]\ntype = "hangup"\ncause = "rejected"\n')
        self.assertEqual(self.session.events, [("hangup", "rejected")])
        self.assertEqual(self.result(d).outcome, "hangup")

    def test_say_items(self) -> None:
        """Say items are resolved from variables and the session's clock."""
        _, d = self.start(
            """
            [flow]
            start = "say"
            [nodes.say]
            type = "play"
            prompt = ["balance", { number = "cents" }, { duration = "secs" },
                      { date = "today" }, { date = "expiry" }, { digits = "pin" }]
            next = "bye"
            [nodes.bye]
            type = "hangup"
            """,
            variables={"cents": "-42", "secs": "125", "expiry": "2025-01-31", "pin": "0#7"},
        )
        self.clock.advance(6)
        self.result(d)
        self.assertEqual(
            self.session.events[0][1],
            (
                "balance",
                SayNumber(-42),
                SayDuration(125),
                SayDate(datetime.date(2024, 5, 6)),
                SayDate(datetime.date(2025, 1, 31)),
                SayDigits("0#7"),
            ),
        )

    def test_say_bad_value(self) -> None:
        """A variable that cannot be said ends the flow with an error naming
        node, field and value."""
        for spec, value in (("number", "12a"), ("date", "tomorrow"), ("digits", "12a")):
            session = FakeSession(self.clock)
            flow = load_flow(
                f'[flow]\nstart = "s"\n[nodes.s]\ntype = "play"\nprompt = {{ {spec} = "v" }}\n'
                'next = "s"\n'
            )
            _, d = run_flow(
                flow, session, actions=self.actions, clock=self.clock, variables={"v": value}
            )
            result = self.result(d)
            self.assertEqual(result.outcome, "error")
            self.assertEqual(
                result.detail, f"node 's', field 'prompt': variable 'v' is '{value}', not a {spec}"
            )
            self.assertEqual(session.events, [("hangup", "flow_error")])

    def test_say_unset(self) -> None:
        """Saying an unset variable is an error."""
        _, d = self.start(
            '[flow]\nstart = "s"\n[nodes.s]\ntype = "play"\nprompt = { number = "n" }\nnext = "s"\n'
        )
        self.assertEqual(self.result(d).detail, "node 's', field 'prompt': variable 'n' is unset")


ACTION = """
[flow]
start = "act"

[nodes.act]
type = "action"
action = "lookup"
result = "status"
timeout = 10
on_error = "failed"
next = "route"

[nodes.route]
type = "branch"
variable = "status"
cases = { "ok" = "good", "true" = "good" }
default = "failed"

[nodes.good]
type = "hangup"
cause = "normal"

[nodes.failed]
type = "hangup"
cause = "rejected"
"""


class ActionTests(RuntimeCase):
    """Actions: results stored and branched on, errors, timeouts."""

    def use(self, action: Any) -> None:
        """Register C{action} as C{lookup}."""
        self.actions.register("lookup", action)

    def test_async_result_branched_on(self) -> None:
        """A coroutine's result is stored and a branch follows it; the
        action sees the session and may set variables itself."""
        seen: list[Any] = []

        async def lookup(session: Session, variables: MutableMapping[str, str]) -> str:
            seen.append((session, variables["caller"]))
            variables["name"] = "Alice"
            return "ok"

        self.use(lookup)
        _, d = self.start(ACTION, variables={"caller": "1001"})
        result = self.result(d)
        self.assertEqual(seen, [(self.session, "1001")])
        self.assertEqual(result.detail, "normal")
        self.assertEqual((result.variables["status"], result.variables["name"]), ("ok", "Alice"))

    def test_deferred_result_later(self) -> None:
        """A Deferred result is awaited; booleans become true/false."""
        pending: Deferred[bool] = Deferred()
        self.use(lambda session, variables: pending)
        _, d = self.start(ACTION)
        self.clock.advance(9)
        self.assertNoResult(d)
        pending.callback(True)
        result = self.result(d)
        self.assertEqual((result.variables["status"], result.detail), ("true", "normal"))

    def test_plain_and_none_results(self) -> None:
        """A plain None result stores an empty value (which takes the default)."""
        self.use(lambda session, variables: None)
        _, d = self.start(ACTION)
        result = self.result(d)
        self.assertEqual((result.variables["status"], result.detail), ("", "rejected"))

    def test_failure_takes_on_error(self) -> None:
        """An action that raises takes on_error, with last_error set."""

        async def lookup(session: Session, variables: MutableMapping[str, str]) -> str:
            raise ActionError("CRM unreachable")

        self.use(lookup)
        _, d = self.start(ACTION)
        result = self.result(d)
        self.assertEqual((result.node, result.detail), ("failed", "rejected"))
        self.assertEqual(result.variables["last_error"], "action 'lookup' failed: CRM unreachable")
        self.assertNotIn("status", result.variables)

    def test_synchronous_raise(self) -> None:
        """A plain function raising is handled the same way."""

        def lookup(session: Session, variables: MutableMapping[str, str]) -> str:
            raise ValueError("bad")

        self.use(lookup)
        _, d = self.start(ACTION)
        self.assertEqual(self.result(d).variables["last_error"], "action 'lookup' failed: bad")

    def test_failure_without_on_error(self) -> None:
        """Without on_error a failing action ends the flow with an error."""
        self.use(lambda session, variables: fail(ActionError("nope")))
        _, d = self.start(ACTION.replace('on_error = "failed"\n', ""))
        result = self.result(d)
        self.assertEqual(result.outcome, "error")
        self.assertEqual(result.detail, "node 'act', field 'action': action 'lookup' failed: nope")
        self.assertEqual(self.session.events, [("hangup", "flow_error")])

    def test_timeout_cancels(self) -> None:
        """An action longer than its timeout is cancelled and takes on_error."""
        cancelled: list[bool] = []
        self.use(lambda session, variables: Deferred(lambda _: cancelled.append(True)))
        _, d = self.start(ACTION)
        self.clock.advance(10)
        result = self.result(d)
        self.assertEqual(cancelled, [True])
        self.assertEqual(result.variables["last_error"], "action 'lookup' took longer than 10 s")

    def test_action_unregistered_at_run_time(self) -> None:
        """A flow loaded without the action check fails at run time."""
        flow = load_flow(ACTION)
        _, d = run_flow(flow, self.session, actions=ActionRegistry(), clock=self.clock)
        self.assertEqual(
            self.result(d).detail, "node 'act', field 'action': no action named 'lookup'"
        )

    def test_unexpected_session_error(self) -> None:
        """A bug in the session ends the flow with an error and is logged."""

        def broken(prompts: Sequence[PromptItem], barge_in: bool) -> Deferred[str | None]:
            raise KeyError("player")

        self.session.play = broken  # type: ignore[method-assign]
        _, d = self.start(
            '[flow]\nstart = "p"\n[nodes.p]\ntype = "play"\nprompt = "x"\nnext = "h"\n'
            '[nodes.h]\ntype = "hangup"\n'
        )
        result = self.result(d)
        self.assertEqual((result.outcome, result.detail), ("error", "node 'p': KeyError('player')"))
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_registry(self) -> None:
        """Names are unique and actions callable."""
        registry = ActionRegistry()
        registry.register("a", lambda s, v: None)
        with self.assertRaises(ValueError):
            registry.register("a", lambda s, v: None)
        with self.assertRaises(ValueError):
            registry.register("b", "not callable")  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            registry.register("", lambda s, v: None)
        self.assertEqual((registry.names(), list(registry), "a" in registry), ({"a"}, ["a"], True))
        self.assertIsNone(registry.get("b"))


LOOP = """
[flow]
start = "again"
max_steps = 7
max_duration = 30

[nodes.again]
type = "play"
prompt = "tick"
next = "count"

[nodes.count]
type = "set"
variable = "n"
value = [{ var = "n" }, "x"]
next = "again"
"""


class LimitTests(RuntimeCase):
    """Runaway flows, the time limit, the caller hanging up."""

    def test_runaway(self) -> None:
        """A flow looping through a play is stopped after max_steps nodes."""
        _, d = self.start(LOOP)
        self.clock.pump([1] * 4)
        result = self.result(d)
        self.assertEqual((result.outcome, result.steps), ("runaway", 8))
        self.assertEqual(result.detail, "more than 7 steps")
        self.assertEqual(result.variables["n"], "xxx")
        self.assertEqual(self.session.events[-1], ("hangup", "flow_runaway"))
        self.assertEqual([e[0] for e in self.session.events].count("play"), 4)

    def test_max_duration(self) -> None:
        """At max_duration the pending operation is cancelled and the call
        hung up."""
        _, d = self.start(
            LOOP.replace("max_steps = 7", "max_steps = 100").replace(
                'prompt = "tick"', 'prompt = ["a", "b", "c", "d", "e", "f", "g"]'
            )
        )
        self.clock.advance(29.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        result = self.result(d)
        self.assertEqual((result.outcome, result.detail), ("timeout", "longer than 30 s"))
        self.assertEqual(
            self.session.events[-2:], [("stopped", "play"), ("hangup", "flow_timeout")]
        )

    def test_caller_hangs_up_during_collect(self) -> None:
        """A session failing with CallerHungUp ends the run quietly."""
        _, d = self.start(MENU)
        self.clock.advance(1)
        self.session.caller_hangs_up()
        result = self.result(d)
        self.assertEqual((result.outcome, result.node), ("caller_hangup", "menu"))
        self.assertEqual([e[0] for e in self.session.events], ["play", "collect"])

    def test_caller_hangs_up_during_play(self) -> None:
        """The same during a prompt."""
        _, d = self.start(MENU)
        self.session.caller_hangs_up()
        self.assertEqual(self.result(d).outcome, "caller_hangup")

    def test_stop_cancels_play(self) -> None:
        """stop() cancels the pending prompt; the session is not called
        again."""
        run, d = self.start(MENU)
        run.stop()
        result = self.result(d)
        self.assertEqual((result.outcome, result.detail), ("caller_hangup", "stopped"))
        self.assertEqual(self.session.events, [("play", ("menu",), True), ("stopped", "play")])
        run.stop()  # a second stop is harmless

    def test_stop_cancels_action_coroutine(self) -> None:
        """stop() reaches into a coroutine action and cancels what it awaits."""
        inner: Deferred[str] = Deferred()
        got: list[type[BaseException]] = []

        async def lookup(session: Session, variables: MutableMapping[str, str]) -> str:
            try:
                return await inner
            except CancelledError as e:
                got.append(type(e))
                raise

        self.actions.register("lookup", lookup)
        run, d = self.start(ACTION)
        run.stop()
        self.assertEqual(self.result(d).outcome, "caller_hangup")
        self.assertEqual(got, [CancelledError])
        self.assertEqual(self.session.events, [])

    def test_stop_after_end(self) -> None:
        """Stopping a finished run changes nothing; a run starts once."""
        run, d = self.start('[flow]\nstart = "h"\n[nodes.h]\ntype = "hangup"\n')
        run.stop()
        self.assertEqual(self.result(d).outcome, "hangup")
        with self.assertRaises(RuntimeError):
            run.start()


class SpeakingClockTests(RuntimeCase):
    """The built-in speaking clock flow with the built-in clock action."""

    def run_clock(self, epoch: datetime.datetime) -> Deferred[FlowResult]:
        """Start the speaking clock on a session whose wall clock is C{epoch}."""
        self.session = FakeSession(self.clock, epoch)
        flow = builtin_flow("speaking_clock", actions=self.actions)
        return run_flow(flow, self.session, actions=self.actions, clock=self.clock)[1]

    def test_says_the_time_and_repeats(self) -> None:
        """The time is said; 1 repeats it (the clock read again), silence
        ends it."""
        d = self.run_clock(EPOCH.replace(second=58))
        self.clock.advance(3)  # the time is fourteen five
        self.clock.advance(1)  # press 1 to repeat
        self.session.press("1")
        self.clock.advance(3)  # the time is fourteen six
        self.clock.advance(1)
        self.clock.advance(5)  # silence
        self.clock.advance(1)  # goodbye
        result = self.result(d)
        plays = [e[1] for e in self.session.events if e[0] == "play"]
        self.assertEqual(
            plays,
            [
                ("the-time-is", SayNumber(14), SayNumber(5)),
                ("press-1-to-repeat",),
                ("the-time-is", SayNumber(14), SayNumber(6)),
                ("press-1-to-repeat",),
                ("goodbye",),
            ],
        )
        self.assertEqual((result.outcome, result.detail), ("hangup", "normal"))
        self.assertEqual(result.variables["time"], "14:06")

    def test_on_the_hour(self) -> None:
        """On the hour it says o'clock; a key during it barges in."""
        d = self.run_clock(datetime.datetime(2024, 5, 6, 9, 0, tzinfo=datetime.UTC))
        self.clock.advance(1)
        self.session.press("5")  # not 1: goodbye
        self.clock.advance(1)
        self.assertEqual(
            [e[1] for e in self.session.events if e[0] == "play"],
            [("the-time-is", SayNumber(9), "oclock"), ("goodbye",)],
        )
        self.assertEqual(self.result(d).variables["choice"], "5")


class EchoTests(RuntimeCase):
    """The built-in echo test."""

    session_class = EchoingSession

    def test_echo_until_timeout(self) -> None:
        """After the prompt the session echoes for five minutes, then goodbye."""
        d = run_flow(
            builtin_flow("echo", actions=self.actions),
            self.session,
            actions=self.actions,
            clock=self.clock,
        )[1]
        self.clock.advance(1)
        self.assertEqual(self.session.events[-1], ("echo",))
        self.clock.advance(299)
        self.assertNoResult(d)
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(
            self.session.events,
            [
                ("play", ("echo-test",), False),
                ("echo",),
                ("stopped", "echo"),
                ("play", ("goodbye",), False),
                ("hangup", "normal"),
            ],
        )
        self.assertEqual(self.result(d).outcome, "hangup")

    def test_caller_hangs_up_during_echo(self) -> None:
        """Hanging up during the echo stops it."""
        run, d = run_flow(
            builtin_flow("echo", actions=self.actions),
            self.session,
            actions=self.actions,
            clock=self.clock,
        )
        self.clock.advance(1)
        run.stop()
        self.assertEqual(self.result(d).outcome, "caller_hangup")
        self.assertEqual(self.session.events[-1], ("stopped", "echo"))

    def test_session_without_echo(self) -> None:
        """A session that cannot echo: the echo node's on_error (goodbye)."""
        session = FakeSession(self.clock)
        self.assertNotIsInstance(session, EchoSession)
        d = run_flow(
            builtin_flow("echo", actions=self.actions),
            session,
            actions=self.actions,
            clock=self.clock,
        )[1]
        self.clock.pump([1, 1])
        result = self.result(d)
        self.assertEqual(
            result.variables["last_error"], "action 'echo' failed: this session cannot echo audio"
        )
        self.assertEqual(session.events[-1], ("hangup", "normal"))


class DigitCollectorTests(SynchronousTestCase):
    """The collect contract on a clock."""

    def setUp(self) -> None:
        self.clock = Clock()

    def collector(self, max_digits: int = 4, terminator: str = "#") -> DigitCollector:
        """A collector with a 5 s first and 2 s inter-digit timeout."""
        return DigitCollector(self.clock, max_digits, terminator, 5, 2)

    def test_first_digit_timeout(self) -> None:
        """Nothing pressed: C{""} after the first-digit timeout."""
        c = self.collector()
        self.clock.advance(4.9)
        self.assertNoResult(c.deferred)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(c.deferred), "")
        self.assertTrue(c.done)

    def test_inter_digit_timeout(self) -> None:
        """After a digit, the inter-digit timeout applies, reset per digit."""
        c = self.collector()
        self.clock.advance(4)
        c.digit_received("1")
        self.clock.advance(1.5)
        c.digit_received("2")
        self.clock.advance(1.9)
        self.assertNoResult(c.deferred)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(c.deferred), "12")

    def test_terminator_kept(self) -> None:
        """The terminator ends collection and is reported."""
        c = self.collector()
        for digit in "12#3":
            c.digit_received(digit)
        self.assertEqual(self.successResultOf(c.deferred), "12#")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_terminator(self) -> None:
        """With no terminator, # is an ordinary digit."""
        c = self.collector(max_digits=2, terminator="")
        c.digit_received("#")
        c.digit_received("#")
        self.assertEqual(self.successResultOf(c.deferred), "##")

    def test_cancel(self) -> None:
        """Cancelling stops the timer and fails with CancelledError."""
        c = self.collector()
        c.deferred.cancel()
        self.failureResultOf(c.deferred, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        c.digit_received("1")  # ignored

    def test_caller_hung_up(self) -> None:
        """The caller leaving fails the collection with CallerHungUp."""
        c = self.collector()
        c.caller_hung_up()
        self.failureResultOf(c.deferred, CallerHungUp)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_bad_max(self) -> None:
        """At least one digit must be asked for."""
        with self.assertRaises(ValueError):
            DigitCollector(self.clock, 0, "#", 1, 1)
