"""The call: one caller leg, one or more callee legs, and the hunt between them.

States (L{CallState}), in order:

  - C{received}: the INVITE is authenticated and became a call.
  - C{authorizing}: plugins are asked C{b2bua_authorize_call}.
  - C{routing}: plugins are asked C{b2bua_route_call}.
  - C{proceeding}: B legs are trying (route steps in sequence, the
    destinations of a step in parallel, each step with its ring timeout).
  - C{early}: a 18x was relayed to the caller.
  - C{connected}: a 2xx was relayed; other forks were cancelled.
  - C{releasing}: a BYE was sent to a leg; waiting for it to finish.
  - C{ended}: final; C{b2bua_call_ended} has fired (exactly once).

A call that fails before the answer goes straight to C{ended} with the best
final response of its attempts (RFC 3261 16.7).  Established-call requests
(BYE, re-INVITE, UPDATE, INFO...) are handled by L{b2bua.core.relay}.
The diagram is C{docs/state-machines/call.dot}.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.core.decisions import Destination, Hunt, Reject, Route, StopHunting
from b2bua.core.hooks import HookFailed
from b2bua.core.leg import ClientLeg, ServerLeg, target_for_uri
from b2bua.core.relay import Relay
from b2bua.sip.errors import TransactionTimeout, TransportError
from b2bua.sip.headers import NameAddress
from b2bua.sip.message import Request, Response
from b2bua.sip.sdp import parse_sdp

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from b2bua.sip.interfaces import Source

__all__ = ["Call", "CallRecord", "CallState", "best_response"]


class CallState(enum.StrEnum):
    """The call-level states (see the module docstring)."""

    RECEIVED = "received"
    AUTHORIZING = "authorizing"
    ROUTING = "routing"
    PROCEEDING = "proceeding"
    EARLY = "early"
    CONNECTED = "connected"
    RELEASING = "releasing"
    ENDED = "ended"


@dataclass
class LegRecord:
    """One attempt (B leg) of a call, for the CDR.

    @ivar ended_at: when an unanswered attempt ended (its final response,
        its failure, or the call giving up on it); the call's end for the
        answered one.
    @ivar ringing_at: its first ringing (post-dial delay), if it rang.
    """

    destination: str
    uri: str
    started_at: float
    answered_at: float | None
    ended_at: float | None
    code: int | None
    reason: str
    ringing_at: float | None = None


@dataclass
class CallRecord:
    """What the call was: handed to C{b2bua_call_ended} (the CDR's source).

    @ivar code: the final code the caller got (200 when answered).
    @ivar disconnect: who or what ended it (C{caller}, C{callee},
        C{limit}, C{session-timer}, C{media}, C{drain}, C{rejected}...).
    """

    call_id: str
    caller: str
    callee: str
    tenant: str
    received_at: float
    answered_at: float | None
    ended_at: float
    code: int
    reason: str
    disconnect: str
    legs: list[LegRecord] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Seconds from answer to end (0 when not answered)."""
        return 0.0 if self.answered_at is None else max(0.0, self.ended_at - self.answered_at)


_PREFERRED_4XX = (401, 407, 415, 420, 484)


def best_response(responses: list[Response]) -> tuple[int, str | None]:
    """Pick the final response to send upstream (RFC 3261 16.7 step 6).

    6xx wins; otherwise the lowest class, preferring 401/407/415/420/484
    among 4xx; a chosen 503 becomes 500.  No response at all gives 408.
    """
    if not responses:
        return 408, None
    six = [r for r in responses if r.code >= 600]
    if six:
        return six[0].code, six[0].reason
    lowest = min(r.code // 100 for r in responses)
    candidates = [r for r in responses if r.code // 100 == lowest]
    chosen = next((r for r in candidates if r.code in _PREFERRED_4XX), candidates[0])
    if chosen.code == 503:
        return 500, "Server Internal Error"
    return chosen.code, chosen.reason


class Call:
    """A call through the switch.

    @ivar id: our identifier (also the A leg's Call-ID).
    @ivar caller: the caller's From (a copy, without tag).
    @ivar callee: the Request-URI the caller dialled.
    @ivar tenant: the caller's tenant domain ('' when unknown).
    @ivar identity: who authenticated (an extension AOR or a trusted source).
    @ivar data: free space for plugins, keyed by plugin name.
    """

    log = Logger()

    def __init__(self, context: Any, request: Request, transaction: Any, source: Source,
                 identity: str, tenant: str) -> None:
        self.context = context
        self.id = request.call_id
        self.state = CallState.RECEIVED
        self.identity = identity
        self.tenant = tenant
        self.caller: NameAddress = request.from_.without_tag()
        self.callee = request.uri
        self.data: dict[str, Any] = {}
        self.received_at = context.clock.seconds()
        self.answered_at: float | None = None
        self.a_leg = ServerLeg(self, request, transaction, source, context.new_tag())
        self.b_legs: list[ClientLeg] = []
        self.answered_leg: ClientLeg | None = None
        self._steps: list[Route] = []
        self._step_index = -1
        self._step_legs: list[ClientLeg] = []
        self._responses: list[Response] = []
        self._ring_timer: IDelayedCall | None = None
        self._limit_timer: IDelayedCall | None = None
        self._warn_timer: IDelayedCall | None = None
        self._relayed_18x = False
        self._starting = False
        self._cancelled = False
        self._ended = False
        self._disconnect = ""
        self._final: tuple[int, str] = (0, "")
        self._releasing = 0
        #: set-up timers of B legs (by leg index), and the legs they gave up on
        self._setup_timers: dict[int, IDelayedCall] | None = None
        self._abandoned: set[int] | None = None
        self._refusal: Reject | None = None
        #: SDPs waiting for an earlier one's hooks (None: none waiting)
        self._sdp_queue: list[tuple[Any, Any, str, Any]] | None = None
        self.relay = Relay(self)
        #: the blind transfer in progress (L{b2bua.core.transfer.Transfer})
        self.transfer: Any = None

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.state}>"

    # -- state -------------------------------------------------------------

    def _set_state(self, state: CallState) -> None:
        previous = self.state
        if previous == state:
            return
        self.state = state
        self.context.hooks.call_state_changed(self, previous, state)

    @property
    def is_answered(self) -> bool:
        """True once the answer was relayed to the caller."""
        return self.answered_at is not None

    # -- setup -------------------------------------------------------------

    def start(self) -> None:
        """Run authorization and routing, then hunt."""
        hooks = self.context.hooks
        hooks.call_received(self, self.a_leg.request)
        if self._ended:
            return
        self._set_state(CallState.AUTHORIZING)
        d = hooks.authorize(self, self.a_leg.request)
        d.addCallbacks(self._authorized, self._hook_failed)

    def _hook_failed(self, failure: Failure) -> None:
        failure.trap(HookFailed)
        self.fail(500, "Server Internal Error", disconnect="plugin-error")

    def _authorized(self, reject: Reject | None) -> None:
        if self._ended or self._cancelled:
            return
        if reject is not None:
            self.fail(reject.code, reject.reason, list(reject.headers),
                      disconnect=f"rejected:{reject.source or 'authorize'}")
            return
        self._set_state(CallState.ROUTING)
        d = self.context.hooks.route(self, self.a_leg.request)
        d.addCallbacks(self._routed, self._hook_failed)

    def _routed(self, answer: list[Route] | Reject | None) -> None:
        if self._ended or self._cancelled:
            return
        if answer is None:
            self.fail(404, "Not Found", disconnect="no-route")
            return
        if isinstance(answer, Reject):
            self.fail(answer.code, answer.reason, list(answer.headers),
                      disconnect=f"rejected:{answer.source or 'route'}")
            return
        self._steps = [step for step in answer if step.destinations]
        if not self._steps:
            self.fail(404, "Not Found", disconnect="no-route")
            return
        self._set_state(CallState.PROCEEDING)
        self._next_step()

    def _next_step(self) -> None:
        self._cancel_ring_timer()
        self._step_index += 1
        if self._step_index >= len(self._steps):
            refusal = self._refusal
            if refusal is not None and not self.b_legs:
                # nothing was tried: the plugin's refusal (503 + Retry-After) as it is
                self.fail(refusal.code, refusal.reason, list(refusal.headers),
                          disconnect="callee")
                return
            code, reason = best_response(self._responses)
            self.fail(code, reason, disconnect="callee")
            return
        step = self._steps[self._step_index]
        self._step_legs = []
        hooks = self.context.hooks
        index = self._step_index
        admissions = [hooks.admit_attempt(self, destination, index)
                      for destination in step.destinations]
        if all(admission is None for admission in admissions):
            self._start_step(step, step.destinations)
            return
        pending = [admission if admission is not None else succeed(None)
                   for admission in admissions]
        DeferredList(pending, consumeErrors=True).addCallback(self._admitted, index)

    def _admitted(self, results: list[tuple[bool, Any]], index: int) -> None:
        """The admissions of step C{index} are in: start what was admitted."""
        if self._ended or self._cancelled or self.answered_leg is not None \
                or index != self._step_index:
            return
        for ok, result in results:
            if not ok:
                self._hook_failed(result)
                return
        step = self._steps[index]
        admitted = []
        refused: Response | None = None
        for destination, (_, reject) in zip(step.destinations, results, strict=True):
            if reject is None:
                admitted.append(destination)
                continue
            self._refusal = reject
            refused = Response(reject.code, reject.reason)
            for name, value in reject.headers:
                refused.headers.add(name, value)
            self._responses.append(refused)
        if admitted:
            self._start_step(step, tuple(admitted))
            return
        # every destination of the step was refused: the step failed with that
        decision = self.context.hooks.choose_failover(self, None, refused, index)
        if decision is None:
            decision = self.context.default_failover(refused)
        if isinstance(decision, StopHunting):
            self.fail(decision.code, decision.reason, list(decision.headers),
                      disconnect="callee")
            return
        self._next_step()

    def _start_step(self, step: Route, destinations: tuple[Destination, ...]) -> None:
        """Start the B legs of C{step} to C{destinations}; arm its ring timer."""
        # a leg may fail while it starts: judge the step once all have started
        self._starting = True
        try:
            for destination in destinations:
                self._start_leg(destination)
        finally:
            self._starting = False
        timeout = step.ring_timeout or self.context.settings.no_answer_timeout
        self._ring_timer = self.context.clock.callLater(timeout, self._ring_timeout)
        self._check_step_done()

    def _start_leg(self, destination: Destination) -> None:
        leg = ClientLeg(self, destination, len(self.b_legs))
        self.b_legs.append(leg)
        self._step_legs.append(leg)
        try:
            target = destination.next_hop or target_for_uri(destination.uri)
            invite = self.context.build_invite(self, leg, destination, target)
            self.context.hooks.prepare_outgoing_request(self, leg, invite)
            leg.start(invite, target)
        except TransportError as error:
            leg.failure = error
            self._responses.append(Response(480, "Temporarily Unavailable"))
            return
        if destination.setup_timeout:
            if self._setup_timers is None:
                self._setup_timers = {}
            self._setup_timers[leg.index] = self.context.clock.callLater(
                destination.setup_timeout, self._setup_timeout, leg)

    def _setup_timeout(self, leg: ClientLeg) -> None:
        """C{leg} got no ringing in time: give it up (CANCEL) and judge its
        step as if it had timed out."""
        if self._setup_timers is not None:
            self._setup_timers.pop(leg.index, None)
        if leg.done or self._ended or self.answered_leg is not None:
            return
        leg.cancel('SIP;cause=102;text="no answer to the set-up"')
        leg.failure = TransactionTimeout("set-up timeout")
        leg.ended_at = self.context.clock.seconds()
        if self._abandoned is None:
            self._abandoned = set()
        self._abandoned.add(leg.index)
        self._responses.append(Response(408, "Request Timeout"))
        if leg in self._step_legs:
            self._check_step_done()

    def _progressed(self, leg: ClientLeg) -> None:
        """C{leg} rang or ended: its set-up timer has no more to watch."""
        timers = self._setup_timers
        if timers:
            timer = timers.pop(leg.index, None)
            if timer is not None and timer.active():
                timer.cancel()

    def _settled(self, leg: ClientLeg) -> bool:
        """Whether the step no longer waits for C{leg}."""
        return leg.done or (self._abandoned is not None and leg.index in self._abandoned)

    def _ring_timeout(self) -> None:
        self._ring_timer = None
        for leg in self._step_legs:
            if not leg.done:
                leg.cancel('SIP;cause=408;text="ring timeout"')
                leg.failure = TransactionTimeout("ring timeout")
                leg.ended_at = self.context.clock.seconds()
        self._responses.append(Response(408, "Request Timeout"))
        self._step_failed(None)

    def _cancel_ring_timer(self) -> None:
        """Cancel the step's timers: its ring timer and its legs' set-up timers."""
        if self._ring_timer is not None and self._ring_timer.active():
            self._ring_timer.cancel()
        self._ring_timer = None
        timers = self._setup_timers
        if timers:
            for timer in timers.values():
                if timer.active():
                    timer.cancel()
            timers.clear()

    def _check_step_done(self) -> None:
        if self._ended or self.answered_leg is not None or self._starting:
            return
        if self._step_legs and all(self._settled(leg) for leg in self._step_legs):
            # a 6xx of any leg decides the step (RFC 3261 16.7 step 5)
            last = next((leg for leg in self._step_legs
                         if leg.final is not None and leg.final.code >= 600),
                        self._step_legs[-1])
            self._step_failed(last)

    def _step_failed(self, leg: ClientLeg | None) -> None:
        if self._ended or self._cancelled or self.answered_leg is not None:
            return
        self._cancel_ring_timer()
        response = leg.final if leg is not None else None
        decision = self.context.hooks.choose_failover(self, leg, response, self._step_index)
        if decision is None:
            decision = self.context.default_failover(response)
        if isinstance(decision, StopHunting):
            self.fail(decision.code, decision.reason, list(decision.headers),
                      disconnect="callee")
            return
        assert isinstance(decision, Hunt)
        self._next_step()

    # -- leg events ----------------------------------------------------------

    def leg_response(self, leg: ClientLeg, response: Response) -> None:
        """A response on a B leg's INVITE (called by the leg)."""
        code = response.code
        if code > 100:
            self._progressed(leg)
        if self._ended or self._cancelled:
            if 200 <= code < 300 and leg is not self.answered_leg:
                leg.bye('SIP;cause=487;text="call already ended"')
                if self._ended and leg.dialog is not None:
                    # the call's dialogs were forgotten when it ended
                    self.context.unregister_dialog(leg.dialog)
            return
        if code < 200:
            if code > 100:
                self._relay_provisional(leg, response)
            return
        if code < 300:
            self._answered(leg, response)
            return
        if 300 <= code < 400 and self._follow_redirect(leg, response):
            return
        self._responses.append(response)
        if code >= 600:
            # a global failure: cancel the other forks (RFC 3261 16.7 step 5)
            for other in self._step_legs:
                if other is not leg and not other.done:
                    other.cancel('SIP;cause=600;text="Global failure elsewhere"')
        self._check_step_done()

    def leg_failed(self, leg: ClientLeg, error: Exception) -> None:
        """A B leg's INVITE timed out or could not be sent."""
        self._progressed(leg)
        if self._ended:
            return
        # an unreachable callee is temporarily unavailable to the caller (a
        # synthesized 503 would become 500 under RFC 3261 16.7)
        if isinstance(error, TransactionTimeout):
            self._responses.append(Response(408))
        else:
            self._responses.append(Response(480, "Temporarily Unavailable"))
        self._check_step_done()

    def _relay_provisional(self, leg: ClientLeg, response: Response) -> None:
        self.with_body(response, self.a_leg, "answer",
                       lambda body, content_type: self._send_provisional(
                           response, body, content_type))

    def _send_provisional(self, response: Response, body: bytes,
                          content_type: str | None) -> None:
        if self._ended or self._cancelled or self.answered_leg is not None:
            return
        if self.state is CallState.EARLY and not body and self._relayed_18x:
            return
        self._relayed_18x = True
        self._set_state(CallState.EARLY)
        # a 180 with SDP is early media: the caller must play it (183)
        code = 183 if body or response.code == 199 else response.code
        self.a_leg.provisional(code, response.reason, body, content_type)

    def _follow_redirect(self, leg: ClientLeg, response: Response) -> bool:
        if not self.context.settings.follow_redirects:
            return False
        added = []
        for contact in response.contact[:5]:
            if contact.star or not contact.uri.is_sip:
                continue
            added.append(Destination(contact.uri.copy(), label=f"redirect:{leg.destination.label}"))
        if not added:
            return False
        self._steps.insert(self._step_index + 1, Route(tuple(added), source="redirect"))
        leg.failure = None
        # recursed on: the 3xx is not a candidate for the caller (16.7 step 4)
        self._check_step_done()
        return True

    def _answered(self, leg: ClientLeg, response: Response) -> None:
        if self.answered_leg is not None:
            if leg is not self.answered_leg:
                leg.bye('SIP;cause=200;text="Call completed elsewhere"')
            return
        self.answered_leg = leg
        self._cancel_ring_timer()
        for other in self.b_legs:
            if other is not leg and not other.done:
                other.cancel('SIP;cause=200;text="Call completed elsewhere"')
        self.with_body(response, self.a_leg, "answer",
                       lambda body, content_type: self._send_answer(
                           leg, response, body, content_type))

    def _send_answer(self, leg: ClientLeg, response: Response, body: bytes,
                     content_type: str | None) -> None:
        """Relay the answer (its SDP rewritten) to the caller."""
        if self._ended or self._cancelled:
            # the caller went away while the answer's SDP was being made
            leg.bye('SIP;cause=487;text="call already ended"')
            if self._ended and leg.dialog is not None:
                self.context.unregister_dialog(leg.dialog)
            return
        now = self.context.clock.seconds()
        if not self.a_leg.answer(body, content_type, self.context.answer_headers(self),
                                 on_ack_timeout=self._ack_timeout):
            return
        self.answered_at = now
        self._set_state(CallState.CONNECTED)
        self.context.call_answered(self, now - self.received_at)
        self.context.hooks.call_answered(self, leg, now)
        self.relay.start_session_timers(response)
        self.context.clock.callLater(0, self._compact)

    def _compact(self) -> None:
        """The call is set up: the answering leg lets go of its INVITE and
        answer once it ACKed it (late offer: when it does), the caller's
        INVITE packs its header fields until the caller's ACK lets it go
        (L{Message.compact}), and the hunt's lists are emptied."""
        if self.a_leg.request is not None:
            self.a_leg.request.compact()
        leg = self.answered_leg
        if leg is not None:
            leg.release_setup()
        self._steps.clear()
        self._step_legs.clear()
        self._responses.clear()

    def _ack_timeout(self) -> None:
        self.hangup('SIP;cause=408;text="no ACK"', disconnect="no-ack")


    def _rewritten_body(self, message: Request | Response, out_leg: Any, direction: str,
                        wait: bool = True) -> Any:
        """The body of C{message} for C{out_leg}, SDP passed through the
        hook: C{(body, content_type)}, or a Deferred of it when a plugin
        answers later (a media backend over the network).  With C{wait}
        false the caller cannot wait: the SDP then goes as it came (logged)."""
        body = message.body
        content_type = message.headers.get("content-type")
        if not body:
            return b"", None
        if message.content_type == "application/sdp":
            try:
                sdp = parse_sdp(body)
            except ValueError:
                return body, content_type
            pending = self.context.hooks.rewrite_sdp(self, out_leg, sdp, direction)
            if pending is None:
                return sdp.to_bytes(), content_type
            if not wait:
                self.log.error("call {call_id}: an SDP hook answered later than this SDP could "
                          "wait; sent as it came", call_id=self.id)
                return body, content_type
            return pending.addCallback(lambda _: (sdp.to_bytes(), content_type))
        return body, content_type

    def with_body(self, message: Request | Response, out_leg: Any, direction: str,
                  then: Callable[[bytes, str | None], object]) -> None:
        """Call C{then(body, content_type)} with C{message}'s body rewritten
        for C{out_leg}: at once, or once the SDP hooks are done.  The call's
        SDPs are handled in the order they came, one at a time: one waiting
        for a plugin holds the next ones back.  C{then} checks the call's
        state: time may have passed."""
        if self._sdp_queue is not None:
            self._sdp_queue.append((message, out_leg, direction, then))
            return
        result = self._rewritten_body(message, out_leg, direction)
        if not isinstance(result, Deferred):
            then(*result)
            return
        self._sdp_queue = []

        def done(rewritten: tuple[bytes, str | None]) -> None:
            try:
                then(*rewritten)
            finally:
                queue, self._sdp_queue = self._sdp_queue or [], None
                for item in queue:
                    self.with_body(*item)

        result.addCallback(done).addErrback(lambda f: self.log.failure(
            "call {call_id}: relaying an SDP failed", f, call_id=self.id))

    # -- caller events ---------------------------------------------------------

    def cancel_received(self) -> None:
        """The caller sent CANCEL before the answer."""
        if self._ended or self.is_answered:
            return
        self._cancelled = True
        self._cancel_ring_timer()
        for leg in self.b_legs:
            if not leg.done:
                leg.cancel('SIP;cause=487;text="ORIGINATOR_CANCEL"')
        self.a_leg.reject(487, "Request Terminated")
        self._end(487, "Request Terminated", "caller-cancel")

    # -- ending --------------------------------------------------------------

    def fail(self, code: int, reason: str | None = None,
             headers: list[tuple[str, str]] | None = None, disconnect: str = "") -> None:
        """End an unanswered call with a final error to the caller."""
        if self._ended:
            return
        self._cancel_ring_timer()
        for leg in self.b_legs:
            if not leg.done:
                leg.cancel()
        if self.is_answered:
            self.hangup(disconnect=disconnect or "failed")
            return
        self.a_leg.reject(code, reason, headers)
        self._end(code, reason or "", disconnect)

    def hangup(self, reason: str | None = None, disconnect: str = "switch") -> None:
        """End the call from the middle: BYE both legs (with C{reason} as a
        Reason header value), or fail it when not answered yet."""
        if self._ended:
            return
        if not self.is_answered:
            self.fail(480 if disconnect == "drain" else 503,
                      "Temporarily Unavailable" if disconnect == "drain" else None,
                      disconnect=disconnect)
            return
        self.release(None, reason, disconnect)

    def release(self, from_leg: Any, reason: str | None, disconnect: str) -> None:
        """BYE every leg but C{from_leg}; end when they are done."""
        if self._ended or self.state is CallState.RELEASING:
            return
        self._set_state(CallState.RELEASING)
        self._disconnect = disconnect
        legs = [leg for leg in (self.a_leg, self.answered_leg) if leg is not None]
        pending = [leg for leg in legs if leg is not from_leg and not leg.ended]
        for leg in legs:
            if leg is from_leg:
                leg.ended = True
        self._releasing = len(pending)
        if not pending:
            self._end(200, "OK", disconnect)
            return
        for leg in pending:
            leg.bye(reason, on_done=self._leg_released)

    def _leg_released(self) -> None:
        self._releasing -= 1
        if self._releasing <= 0:
            self._end(200, "OK", self._disconnect)

    def limit_duration(self, seconds: float, warn_before: float | None = None,
                       reason: str = 'SIP;cause=200;text="Call duration limit reached"') -> None:
        """End the call C{seconds} from now (from the answer if not answered
        yet... callers usually arm it on answer) with BYE and C{reason}.
        Calling again re-arms it; C{b2bua_call_warned} fires C{warn_before}
        seconds ahead."""
        clock = self.context.clock
        for timer in (self._limit_timer, self._warn_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._warn_timer = None
        self._limit_timer = clock.callLater(max(0.0, seconds), self._limit_reached, reason)
        if warn_before and seconds > warn_before:
            self._warn_timer = clock.callLater(seconds - warn_before, self._warned, warn_before)

    def _warned(self, remaining: float) -> None:
        self._warn_timer = None
        if not self._ended:
            self.context.hooks.call_warned(self, remaining)

    def _limit_reached(self, reason: str) -> None:
        self._limit_timer = None
        if self.is_answered:
            self.hangup(reason, disconnect="limit")
        else:
            self.fail(403, "Call duration limit", disconnect="limit")

    def _end(self, code: int, reason: str, disconnect: str) -> None:
        if self._ended:
            return
        self._ended = True
        self._cancel_ring_timer()
        for timer in (self._limit_timer, self._warn_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._limit_timer = self._warn_timer = None
        self.relay.stop()
        self.a_leg.stop()
        now = self.context.clock.seconds()
        if self.is_answered:
            code, reason = 200, "OK"
        record = CallRecord(
            call_id=self.id, caller=str(self.caller.uri), callee=str(self.callee),
            tenant=self.tenant, received_at=self.received_at, answered_at=self.answered_at,
            ended_at=now, code=code, reason=reason, disconnect=disconnect,
            legs=[LegRecord(leg.destination.label, str(leg.destination.uri), leg.started_at,
                            leg.answered_at,
                            leg.ended_at if leg.ended_at is not None
                            and leg.answered_at is None else now,
                            leg.final.code if leg.final is not None else None,
                            leg.final.reason if leg.final is not None else
                            type(leg.failure).__name__ if leg.failure else "",
                            leg.ringing_at)
                  for leg in self.b_legs])
        self._set_state(CallState.ENDED)
        self.context.call_ended(self, record, self._cancelled)
        self.context.hooks.call_ended(self, record)
        for waiter in self.data.pop("_waiters", []):
            waiter.callback(None)

    @property
    def ended(self) -> bool:
        """True once C{b2bua_call_ended} fired."""
        return self._ended

    def when_ended(self) -> Deferred[None]:
        """A Deferred firing when the call ends (for drain)."""
        d: Deferred[None] = Deferred()
        if self._ended:
            d.callback(None)
        else:
            self.data.setdefault("_waiters", []).append(d)
        return d

    def forget_when_ended(self, d: Deferred[None]) -> None:
        """Stop holding C{d}, a L{when_ended} Deferred its waiter no longer
        needs (it will never fire); unknown ones are ignored."""
        waiters = self.data.get("_waiters")
        if waiters and d in waiters:
            waiters.remove(d)
