"""L{CallHooks}: the only code that calls C{pm.hook}.

It implements the house conventions of L{b2bua.hookspecs}: lazy callables
for decisions that may need I/O, a timeout on each of them (on the injected
clock), and the error rule (a decision hook that fails fails the call with
C{500}; a notification that fails is logged and counted, never raised).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.core.decisions import Hunt, Reject, Route, StopHunting
from b2bua.sip.uri import URI

if TYPE_CHECKING:
    from b2bua.sip.interfaces import Source
    from b2bua.sip.message import Request, Response

__all__ = ["CallHooks", "HookFailed"]


class HookFailed(Exception):
    """A decision hook raised or timed out; the call fails with 500."""

    def __init__(self, hook: str, failure: Failure | None = None) -> None:
        super().__init__(hook)
        self.hook = hook
        self.failure = failure


class CallHooks:
    """Typed calls of every hook.

    @param plugin_manager: the C{pluggy.PluginManager} with our hookspecs.
    @param clock: for decision timeouts.
    @param timeout: seconds a lazy decision may take.
    @param count_error: called with the hook name whenever an
        implementation fails (feeds C{b2bua_plugin_errors_total}).
    """

    log = Logger()

    def __init__(self, plugin_manager: pluggy.PluginManager, clock: IReactorTime,
                 timeout: float = 5.0,
                 count_error: Callable[[str], None] = lambda hook: None) -> None:
        self.pm = plugin_manager
        self.hook = plugin_manager.hook
        self.clock = clock
        self.timeout = timeout
        self.count_error = count_error
        #: Deferreds returned by notifications, waited for on drain
        self.outstanding: set[Deferred[Any]] = set()

    # -- helpers ---------------------------------------------------------

    def _failed(self, name: str, failure: Failure) -> None:
        self.count_error(name)
        self.log.failure("plugin error in {hook}", failure, hook=name)

    def _notify(self, name: str, **kwargs: Any) -> list[Deferred[Any]]:
        """Call every implementation of C{name}; return the Deferreds they
        returned (tracked in L{outstanding} until they fire)."""
        implementations = getattr(self.hook, name).get_hookimpls()
        if not implementations:
            return []
        results: list[Any] = []
        for implementation in implementations:
            if implementation.wrapper or implementation.hookwrapper:
                # wrappers need pluggy's own call, where one failure stops the rest
                try:
                    results = getattr(self.hook, name)(**kwargs)
                except Exception:
                    self._failed(name, Failure())
                    return []
                break
        else:
            # one by one, in pluggy's order: a failing plugin must not keep
            # the others from being told (b2bua_call_ended releases money)
            for implementation in reversed(implementations):
                try:
                    results.append(implementation.function(
                        *[kwargs[arg] for arg in implementation.argnames]))
                except Exception:
                    self._failed(name, Failure())
        tracked = []
        for result in results or ():
            if isinstance(result, Deferred):
                self._track(name, result)
                tracked.append(result)
        return tracked

    def _track(self, name: str, d: Deferred[Any]) -> None:
        self.outstanding.add(d)

        def done(result: object) -> None:
            self.outstanding.discard(d)
            if isinstance(result, Failure):
                self._failed(name, result)

        d.addBoth(done)

    def _first_decision(self, name: str, kinds: tuple[type, ...],
                        **kwargs: Any) -> Deferred[Any]:
        """The first answer of decision hook C{name}, in a Deferred.

        Lazy answers (zero-argument callables) are called in order, each
        bounded by the timeout; one whose result is there at once is taken
        at once (no timer, no coroutine), as most are.  Fails with
        L{HookFailed} when an implementation raises, times out or answers
        something that is none of C{kinds} (nor a list of L{Route}s).
        """
        try:
            answers = getattr(self.hook, name)(**kwargs)
        except Exception:
            failure = Failure()
            self._failed(name, failure)
            return fail(HookFailed(name, failure))
        return self._answers_from(name, kinds, answers, 0)

    def _answers_from(self, name: str, kinds: tuple[type, ...], answers: list[Any],
                      start: int) -> Deferred[Any]:
        """L{_first_decision} from C{answers[start]} on."""
        for index in range(start, len(answers)):
            answer = answers[index]
            if callable(answer) and not isinstance(answer, kinds):
                d = maybeDeferred(answer)
                now: list[Any] = []

                def grab(result: Any, now: list[Any] = now) -> Any:
                    now.append(result)
                    return result

                d.addBoth(grab)
                if not now:  # not there yet: wait for it, bounded
                    d.addTimeout(self.timeout, self.clock)
                    return d.addBoth(self._lazy_answered, name, kinds, answers, index)
                answer = now[0]
                if isinstance(answer, Failure):
                    d.addErrback(lambda _: None)  # handled here
                    self._failed(name, answer)
                    return fail(HookFailed(name, answer))
            if answer is not None:
                try:
                    return succeed(self._accepted(name, kinds, answer))
                except HookFailed as error:
                    return fail(error)
        return succeed(None)

    def _lazy_answered(self, answer: Any, name: str, kinds: tuple[type, ...],
                       answers: list[Any], index: int) -> Any:
        """A lazy answer that came later (or failed, or timed out)."""
        if isinstance(answer, Failure):
            self._failed(name, answer)
            return Failure(HookFailed(name, answer))
        if answer is None:
            return self._answers_from(name, kinds, answers, index + 1)
        try:
            return self._accepted(name, kinds, answer)
        except HookFailed:
            return Failure()

    def _accepted(self, name: str, kinds: tuple[type, ...], answer: Any) -> Any:
        """C{answer} when it is one of C{kinds} or a list of routes; else
        count the plugin error and raise L{HookFailed}."""
        if isinstance(answer, list) and all(isinstance(r, Route) for r in answer):
            return answer
        if isinstance(answer, kinds):
            return answer
        self._failed(name, Failure(TypeError(f"{name} returned {answer!r}")))
        raise HookFailed(name)

    # -- decisions ---------------------------------------------------------

    def trusted_source(self, source: Source, request: Request) -> str | None:
        """An identity when a plugin trusts the source, else C{None}."""
        try:
            return self.hook.b2bua_trusted_source(source=source, request=request)
        except Exception:
            self._failed("b2bua_trusted_source", Failure())
            return None

    def authorize(self, call: object, request: Request) -> Deferred[Reject | None]:
        """The first L{Reject} any plugin gives, or C{None}.  Fails with
        L{HookFailed} when a plugin raises or times out."""
        return self._first_decision("b2bua_authorize_call", (Reject,), call=call,
                                    request=request)

    def route(self, call: object, request: Request) -> Deferred[list[Route] | Reject | None]:
        """The first routing answer (a list of steps or a L{Reject})."""
        return self._first_decision("b2bua_route_call", (Reject,), call=call, request=request)

    def admit_attempt(self, call: object, destination: object,
                      attempt: int) -> Deferred[Reject | None] | None:
        """The first L{Reject} any plugin gives for trying C{destination},
        or C{None}; C{None} at once (no Deferred) when no plugin asks."""
        if not self.hook.b2bua_admit_attempt.get_hookimpls():
            return None
        return self._first_decision("b2bua_admit_attempt", (Reject,), call=call,
                                    destination=destination, attempt=attempt)

    def authorize_transfer(self, call: object, leg: object,
                           target: URI) -> Deferred[Reject | URI | None]:
        """The first L{Reject} or replacement target any plugin gives for a
        transfer of C{call} to C{target} asked on C{leg}, or C{None}."""
        return self._first_decision("b2bua_authorize_transfer", (Reject, URI), call=call,
                                    leg=leg, target=target)

    def choose_failover(self, call: object, leg: object, response: Response | None,
                        attempt: int) -> Hunt | StopHunting | None:
        """The failover decision (C{None}: use the default policy)."""
        try:
            answer = self.hook.b2bua_choose_failover(
                call=call, leg=leg, response=response, attempt=attempt)
        except Exception:
            self._failed("b2bua_choose_failover", Failure())
            return None
        return answer if isinstance(answer, Hunt | StopHunting) else None

    def handle_in_dialog_request(self, call: object, leg: object,
                                 request: Request) -> Response | Deferred[Response] | None:
        """A plugin's claim on an in-dialog request, or C{None} to relay."""
        try:
            return self.hook.b2bua_handle_in_dialog_request(call=call, leg=leg, request=request)
        except Exception:
            self._failed("b2bua_handle_in_dialog_request", Failure())
            raise HookFailed("b2bua_handle_in_dialog_request") from None

    # -- transformations -------------------------------------------------------

    def prepare_outgoing_request(self, call: object, leg: object, request: Request) -> None:
        """Let plugins change a B-leg request (failures leave it unchanged)."""
        self._notify("b2bua_prepare_outgoing_request", call=call, leg=leg, request=request)

    def rewrite_sdp(self, call: object, leg: object, sdp: object,
                    direction: str) -> Deferred[None] | None:
        """Let plugins rewrite an SDP going out on C{leg}.  C{None} when
        they are done; else a Deferred firing once the Deferreds they
        returned have (a media backend answering over the network), at
        most the hook timeout later."""
        pending = self._notify("b2bua_rewrite_sdp", call=call, leg=leg, sdp=sdp,
                               direction=direction)
        pending = [d for d in pending if d in self.outstanding]  # not fired yet
        if not pending:
            return None
        d: Deferred[Any] = DeferredList(pending, consumeErrors=True)
        d.addTimeout(self.timeout, self.clock)

        def late(failure: Failure) -> None:
            self._failed("b2bua_rewrite_sdp", failure)

        return d.addCallbacks(lambda _: None, late)

    # -- notifications -----------------------------------------------------

    def call_received(self, call: object, request: Request) -> None:
        """A call was created."""
        self._notify("b2bua_call_received", call=call, request=request)

    def call_state_changed(self, call: object, previous: object, current: object) -> None:
        """A call-level transition."""
        self._notify("b2bua_call_state_changed", call=call, previous=previous, current=current)

    def call_answered(self, call: object, leg: object, answered_at: float) -> None:
        """The answer reached the caller."""
        self._notify("b2bua_call_answered", call=call, leg=leg, answered_at=answered_at)

    def call_warned(self, call: object, remaining: float) -> None:
        """The call will be cut in C{remaining} seconds."""
        self._notify("b2bua_call_warned", call=call, remaining=remaining)

    def call_ended(self, call: object, record: object) -> None:
        """The call is over (exactly once per call)."""
        self._notify("b2bua_call_ended", call=call, record=record)

    def registered(self, aor: str, request: Request, source: Any, response: Response) -> None:
        """A REGISTER was answered."""
        self._notify("b2bua_registered", aor=aor, request=request, source=source,
                     response=response)

    def unconfigure(self) -> Deferred[Any]:
        """The service stops; fires once the Deferreds the plugins returned
        have (an un-REGISTER's answer...), whatever their results."""
        pending = self._notify("b2bua_unconfigure")
        return DeferredList([d for d in pending if d in self.outstanding], consumeErrors=True)
