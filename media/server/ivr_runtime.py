"""The IVR interpreter: runs a validated L{Flow} on a L{Session}.

A L{FlowRun} walks the flow node by node and ends in exactly one
L{FlowResult}; its C{outcome} says how:

  - C{hangup}: a C{hangup} node (or a C{collect} out of retries with no
    target: cause C{no_input} or C{invalid_input}) hung the call up.
  - C{transfer}: a C{transfer} node handed the call on.  A transfer
    that failed with the caller still there goes to the node's
    C{on_error} (or hangs up with cause C{transfer_failed}); one with no
    outcome in time hangs up with cause C{transfer_timeout}.
  - C{caller_hangup}: the caller went away (a session operation failed
    with L{CallerHungUp}, or the owner called L{FlowRun.stop}); the
    pending operation is cancelled and the session is not called again.
  - C{error}: a node failed (an action without C{on_error}, a variable
    that is not a number where a number is said...); the call is hung up
    with cause C{flow_error}.
  - C{runaway}: the run executed more than the flow's C{max_steps} nodes;
    hung up with cause C{flow_runaway}.
  - C{timeout}: the run lasted more than the flow's C{max_duration}
    seconds (on the injected clock); the pending operation is cancelled and
    the call hung up with cause C{flow_timeout}.

The variable C{language} is reserved: on a L{LanguageSession} it is given
to the session at the start of the run and after every C{set} node that
sets it, so that every later prompt is played in that language (a language
the session has not loaded is a C{flow_error} naming the C{set} node).

Digits that barge in on a prompt are kept as type-ahead: the next
C{collect} starts with them and skips its own prompt; a later C{play} drops
them.
"""

from __future__ import annotations

import datetime
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from media.server.conference import ROOM_NAME, ConferenceError, RoomFull
from media.server.ivr import (
    ActionNode,
    BranchNode,
    CollectNode,
    ConferenceNode,
    Flow,
    HangupNode,
    Node,
    PlayNode,
    PromptSpec,
    SetNode,
    TransferNode,
    evaluate,
)
from media.server.ivr_actions import ActionRegistry
from media.server.ivr_session import (
    CallerHungUp,
    ConferenceSession,
    LanguageSession,
    Prompt,
    PromptItem,
    SayDate,
    SayDigits,
    SayDuration,
    SayNumber,
    Session,
    TransferFailed,
    TransferTimedOut,
    UnknownLanguage,
)

__all__ = ["LANGUAGE_VARIABLE", "FlowResult", "FlowRun", "FlowRuntimeError", "Outcome",
           "run_flow"]

#: The reserved variable that chooses the language of the prompts.
LANGUAGE_VARIABLE = "language"

Outcome = Literal["hangup", "transfer", "caller_hangup", "error", "runaway", "timeout"]
T = TypeVar("T")

_HANGUP_CAUSES: dict[str, str] = {
    "error": "flow_error",
    "runaway": "flow_runaway",
    "timeout": "flow_timeout",
}


class FlowRuntimeError(Exception):
    """A node could not run (names the node and the field)."""

    def __init__(self, node: str, field_name: str, message: str) -> None:
        """
        @param node: the node that failed.
        @param field_name: the field whose value was wrong.
        @param message: what was wrong.
        """
        super().__init__(f"node '{node}', field '{field_name}': {message}")
        self.node = node
        self.field = field_name


@dataclass(frozen=True)
class FlowResult:
    """How a run ended.

    @ivar outcome: see the module docstring.
    @ivar node: the node the run ended in (C{None} before the first one).
    @ivar detail: the hangup cause, the transfer target or the error text.
    @ivar steps: how many nodes were executed.
    @ivar variables: the variables at the end.
    """

    outcome: Outcome
    node: str | None
    detail: str
    steps: int
    variables: Mapping[str, str] = field(default_factory=dict)


class _Ended(Exception):
    """Internal: the run ends with this outcome."""

    def __init__(self, outcome: Outcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


class FlowRun:
    """One run of a flow on one session.

    @ivar flow: the flow.
    @ivar variables: the live variables (initial ones from the flow,
        overridden by those given, e.g. C{caller} and C{called}).
    @ivar node: the node being executed.
    @ivar steps: nodes executed so far.
    """

    log = Logger()

    def __init__(
        self,
        flow: Flow,
        session: Session,
        *,
        actions: ActionRegistry,
        clock: IReactorTime,
        variables: Mapping[str, str] | None = None,
    ) -> None:
        """
        @param flow: a validated flow.
        @param session: the call.
        @param actions: where C{action} nodes find their actions.
        @param clock: the time source for the run's and actions' timeouts.
        @param variables: initial variables (C{caller}, C{called}, ...).
        """
        self.flow = flow
        self.session = session
        self.actions = actions
        self.clock = clock
        self.variables: dict[str, str] = {**flow.variables, **(variables or {})}
        self.node: str | None = None
        self.steps = 0
        self._typeahead = ""
        self._pending: Deferred[Any] | None = None
        self._stop: _Ended | None = None
        self._deadline: IDelayedCall | None = None
        self._result: Deferred[FlowResult] | None = None

    def start(self) -> Deferred[FlowResult]:
        """Run the flow; the Deferred fires with the L{FlowResult} (it never
        fails).

        @raise RuntimeError: when the run was already started.
        """
        if self._result is not None:
            raise RuntimeError("a FlowRun runs once")
        self._deadline = self.clock.callLater(self.flow.max_duration, self._expired)
        self._result = Deferred.fromCoroutine(self._run())
        return self._result

    def stop(self) -> None:
        """The caller hung up: cancel what is pending and end the run with
        C{caller_hangup}, without calling the session again."""
        self._interrupt(_Ended("caller_hangup", "stopped"))

    def _expired(self) -> None:
        self._deadline = None
        self._interrupt(_Ended("timeout", f"longer than {self.flow.max_duration:g} s"))

    def _interrupt(self, reason: _Ended) -> None:
        if self._stop is not None or self._result is None or self._result.called:
            return
        self._stop = reason
        if self._pending is not None:
            self._pending.cancel()

    async def _wait(self, result: Deferred[T] | T) -> T:
        """Wait for a session or action result, cancellably."""
        if self._stop is not None:
            raise self._stop
        d = result if isinstance(result, Deferred) else succeed(result)
        self._pending = d
        try:
            return await d
        except CallerHungUp:
            raise _Ended("caller_hangup", "caller hung up") from None
        except CancelledError:
            if self._stop is not None:
                raise self._stop from None
            raise
        finally:
            self._pending = None

    async def _run(self) -> FlowResult:
        name: str | None = self.flow.start
        try:
            language = self.variables.get(LANGUAGE_VARIABLE)
            if language:
                self._set_language("(start)", "variables", language)
            while name is not None:
                self.steps += 1
                if self.steps > self.flow.max_steps:
                    raise _Ended("runaway", f"more than {self.flow.max_steps} steps")
                self.node = name
                name = await self._execute(self.flow.nodes[name])
            raise AssertionError("unreachable: a run ends in hangup or transfer")
        except _Ended as ended:
            return await self._finish(ended)
        except FlowRuntimeError as e:
            self.log.warn("IVR flow {flow}: {error}", flow=self.flow.name, error=str(e))
            return await self._finish(_Ended("error", str(e)))
        except Exception as e:  # a bug in a session or action: end the call cleanly
            self.log.failure(
                "IVR flow {flow} failed in node {node}", flow=self.flow.name, node=self.node
            )
            return await self._finish(_Ended("error", f"node '{self.node}': {e!r}"))

    async def _finish(self, ended: _Ended) -> FlowResult:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None
        cause = _HANGUP_CAUSES.get(ended.outcome)
        if cause is not None:
            try:
                await _maybe(self.session.hangup(cause))
            except Exception:
                self.log.failure("IVR hangup failed", flow=self.flow.name)
        return FlowResult(ended.outcome, self.node, ended.detail, self.steps, dict(self.variables))

    async def _execute(self, node: Node) -> str | None:
        if isinstance(node, PlayNode):
            self._typeahead = ""
            digit = await self._wait(
                self.session.play(self._resolve(node, "prompt", node.prompts), node.barge_in)
            )
            if digit:
                self._typeahead = digit
            return node.next
        if isinstance(node, CollectNode):
            return await self._collect(node)
        if isinstance(node, BranchNode):
            return node.target(self.variables.get(node.variable))
        if isinstance(node, SetNode):
            value = evaluate(node.value, self.variables)
            if node.variable == LANGUAGE_VARIABLE:
                self._set_language(node.name, "value", value)
            self.variables[node.variable] = value
            return node.next
        if isinstance(node, ActionNode):
            return await self._action(node)
        if isinstance(node, TransferNode):
            return await self._transfer(node)
        if isinstance(node, HangupNode):
            await self._wait(self.session.hangup(node.cause))
            raise _Ended("hangup", node.cause)
        if isinstance(node, ConferenceNode):
            return await self._conference(node)
        raise FlowRuntimeError(node.name, "type", f"cannot run a {node.type!r} node")

    def _set_language(self, node: str, field_name: str, code: str) -> None:
        """Tell a multilingual session the language of the next prompts.

        @raise FlowRuntimeError: for a language the session has not loaded.
        """
        session = self.session
        if not isinstance(session, LanguageSession):
            return
        try:
            session.set_language(code)
        except UnknownLanguage as e:
            raise FlowRuntimeError(node, field_name, str(e)) from None

    async def _collect(self, node: CollectNode) -> str | None:
        failures = 0
        while True:
            entry, status = await self._attempt(node)
            if status == "ok":
                self.variables[node.variable] = entry
                return node.next
            failures += 1
            if failures > node.retries:
                self.variables[node.variable] = entry
                target = node.on_timeout if status == "timeout" else node.on_invalid
                if target is None:
                    cause = "no_input" if status == "timeout" else "invalid_input"
                    await self._wait(self.session.hangup(cause))
                    raise _Ended("hangup", cause)
                return target
            field_name = f"{status}_prompt"
            specs = node.timeout_prompts if status == "timeout" else node.invalid_prompts
            if specs:
                digit = await self._wait(
                    self.session.play(self._resolve(node, field_name, specs), node.barge_in)
                )
                self._typeahead = digit or ""

    async def _attempt(self, node: CollectNode) -> tuple[str, str]:
        """One prompt-and-collect; returns the entry and C{ok}, C{timeout}
        or C{invalid}."""
        entry, self._typeahead = self._typeahead, ""
        if not entry and node.prompts:
            digit = await self._wait(
                self.session.play(self._resolve(node, "prompt", node.prompts), node.barge_in)
            )
            entry = digit or ""
        terminator = node.terminator
        if terminator and terminator in entry:
            entry = entry[: entry.index(terminator) + 1]
        elif len(entry) >= node.max_digits:
            entry = entry[: node.max_digits]
        else:
            first = node.inter_digit_timeout if entry else node.first_digit_timeout
            entry += await self._wait(
                self.session.collect(
                    node.max_digits - len(entry), terminator, first, node.inter_digit_timeout
                )
            )
        terminated = bool(terminator) and entry.endswith(terminator)
        if terminated:
            entry = entry[: -len(terminator)]
        if not entry and not terminated:
            return "", "timeout"
        return entry, "ok" if node.accepts(entry) else "invalid"

    async def _action(self, node: ActionNode) -> str | None:
        action = self.actions.get(node.action)
        if action is None:
            raise FlowRuntimeError(node.name, "action", f"no action named '{node.action}'")
        try:
            d = _as_deferred(action, self.session, self.variables)
            if node.timeout:
                d.addTimeout(node.timeout, self.clock)
            result = await self._wait(d)
        except (_Ended, CallerHungUp):
            raise
        except Exception as e:
            if isinstance(e, TimeoutError):
                text = f"action '{node.action}' took longer than {node.timeout:g} s"
            else:
                text = f"action '{node.action}' failed: {e or type(e).__name__}"
            if node.on_error is None:
                raise FlowRuntimeError(node.name, "action", text) from e
            self.log.info("IVR {text} in node {node}", text=text, node=node.name)
            self.variables["last_error"] = text
            return node.on_error
        if node.result is not None:
            self.variables[node.result] = _text(result)
        return node.next

    async def _transfer(self, node: TransferNode) -> str | None:
        """Hand the call on.  A L{TransferFailed} goes to C{on_error} (the
        caller is still there), or hangs up with cause C{transfer_failed}
        without one; a L{TransferTimedOut} always hangs up (cause
        C{transfer_timeout}); another failure is a flow error without
        C{on_error}."""
        target = evaluate(node.target, self.variables)
        if not target:
            raise FlowRuntimeError(node.name, "target", "evaluates to an empty target")
        try:
            if node.timeout is None:
                pending = self.session.transfer(target)
            else:
                pending = self.session.transfer(target, timeout=node.timeout)  # type: ignore[call-arg]
            await self._wait(pending)
        except (_Ended, CallerHungUp):
            raise
        except Exception as e:
            text = f"transfer to {target} failed: {e}"
            if isinstance(e, TransferTimedOut):
                cause = "transfer_timeout"
            elif node.on_error is not None:
                self.log.info("IVR {text} in node {node}", text=text, node=node.name)
                self.variables["last_error"] = text
                return node.on_error
            elif isinstance(e, TransferFailed):
                cause = "transfer_failed"
            else:
                raise FlowRuntimeError(node.name, "target", text) from e
            self.variables["last_error"] = text
            await self._wait(self.session.hangup(cause))
            raise _Ended("hangup", cause) from None
        raise _Ended("transfer", target)

    async def _conference(self, node: ConferenceNode) -> str | None:
        """Join the room; stay until the caller hangs up or leaves."""
        self._typeahead = ""
        room = evaluate(node.room, self.variables)
        if not ROOM_NAME.match(room):
            raise FlowRuntimeError(
                node.name, "room",
                f"{room!r} is not a room name (1-64 of letters, digits, _ . + -)")
        session = self.session
        if not isinstance(session, ConferenceSession):
            raise FlowRuntimeError(node.name, "type", "this session cannot join conferences")
        self.variables["conference_room"] = room
        try:
            await self._wait(session.conference(
                room, muted=node.muted, announce=node.announce,
                max_participants=node.max_participants, leave_digit=node.leave_digit,
                mute_digit=node.mute_digit))
        except (_Ended, CallerHungUp):
            raise
        except RoomFull as e:
            self.variables["last_error"] = str(e)
            if node.on_full is not None:
                return node.on_full
            await self._wait(self.session.hangup("room_full"))
            raise _Ended("hangup", "room_full") from None
        except ConferenceError as e:
            raise FlowRuntimeError(node.name, "room", str(e)) from e
        if node.next is None:
            raise FlowRuntimeError(node.name, "next", "the caller left the room but the node "
                                                      "has no next")
        return node.next

    def _resolve(
        self, node: Node, field_name: str, specs: Sequence[PromptSpec]
    ) -> list[PromptItem]:
        """Turn the flow's prompt specs into what the session plays."""
        items: list[PromptItem] = []
        for spec in specs:
            if spec.kind == "file":
                items.append(Prompt(spec.value))
                continue
            if spec.kind == "date" and spec.value == "today":
                items.append(SayDate(self.session.now().date()))
                continue
            value = self.variables.get(spec.value)
            if value is None:
                raise FlowRuntimeError(node.name, field_name, f"variable '{spec.value}' is unset")
            try:
                if spec.kind == "number":
                    items.append(SayNumber(int(value)))
                elif spec.kind == "duration":
                    items.append(SayDuration(int(value)))
                elif spec.kind == "date":
                    items.append(SayDate(datetime.date.fromisoformat(value)))
                else:
                    if not value or not set(value) <= set("0123456789*#"):
                        raise ValueError
                    items.append(SayDigits(value))
            except ValueError:
                message = f"variable '{spec.value}' is {value!r}, not a {spec.kind}"
                raise FlowRuntimeError(node.name, field_name, message) from None
        return items


def _as_deferred(action: Any, *args: Any) -> Deferred[Any]:
    """Call an action and make its result a Deferred (cancellable when the
    action is a coroutine or returns a Deferred)."""
    try:
        result = action(*args)
    except Exception as e:
        return fail(e)
    if isinstance(result, Deferred):
        return result
    if inspect.iscoroutine(result):
        return Deferred.fromCoroutine(result)
    return succeed(result)


async def _maybe(result: Deferred[Any] | Any) -> Any:
    return (await result) if isinstance(result, Deferred) else result


def _text(value: object) -> str:
    """An action result as a variable: C{None} is C{""}, booleans are
    C{true}/C{false}."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run_flow(
    flow: Flow,
    session: Session,
    *,
    actions: ActionRegistry,
    clock: IReactorTime,
    variables: Mapping[str, str] | None = None,
) -> tuple[FlowRun, Deferred[FlowResult]]:
    """Start a run; return it (for L{FlowRun.stop}) and its result."""
    run = FlowRun(flow, session, actions=actions, clock=clock, variables=variables)
    return run, run.start()
