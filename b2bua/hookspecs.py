"""Hook specifications: the one contract between the core and feature plugins.

pluggy project name C{b2bua}; every hook name starts with C{b2bua_}.
Hooks fire only from C{b2bua.core} (through L{b2bua.core.hooks.CallHooks}).
Plugins receive calls, legs, parsed messages and decisions, never
transports or bytes.

Three kinds of hook:

  - B{decisions that may need I/O} (C{b2bua_authorize_call},
    C{b2bua_route_call}): not C{firstresult}.  An implementation returns
    C{None} (no opinion), a decision value, or a zero-argument callable
    returning a Deferred of either.  The core walks the answers in hook
    order, calls callables lazily, and stops at the first decisive answer.
    Do the real work inside the callable: pluggy calls every implementation
    before the core sees the list.
  - B{synchronous decisions} (C{firstresult=True}): the first non-None
    answer wins, and returning anything (a Deferred included) claims it.
  - B{notifications} (past tense): broadcast, must not block; exceptions
    are logged and counted (C{b2bua_plugin_errors_total{hook}}), never
    propagated.  A returned Deferred is tracked only so that a drain or a
    shutdown waits for it.

When an implementation of a decision hook raises, the call fails with
C{500} (the error is logged and counted).  When a transformation hook
raises, the message goes on unchanged.

Call flow, in firing order: C{b2bua_call_received} ->
C{b2bua_authorize_call} -> C{b2bua_route_call} -> for each B leg
C{b2bua_prepare_outgoing_request} and C{b2bua_rewrite_sdp} -> on failure of
a route step C{b2bua_choose_failover} -> C{b2bua_call_answered} ->
in-dialog requests through C{b2bua_handle_in_dialog_request} (a REFER
no plugin claims: C{b2bua_authorize_transfer}, then a new call through
these same hooks) -> C{b2bua_call_ended} (exactly once per received call,
rejected ones included).  C{b2bua_call_state_changed} fires at every transition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from b2bua.core.call import Call, CallRecord, CallState
    from b2bua.core.decisions import Destination, Hunt, Reject, Route, StopHunting
    from b2bua.core.leg import Leg
    from b2bua.core.services import Services
    from b2bua.sip.interfaces import Source
    from b2bua.sip.message import Request, Response
    from b2bua.sip.sdp import SessionDescription
    from b2bua.sip.uri import URI

PROJECT = "b2bua"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---- life cycle -------------------------------------------------------


@hookspec(historic=True)
def b2bua_configure(services: Services, settings: dict[str, Any]) -> None:
    """The service starts: keep what you need from C{services} (clock,
    location store, directory, metrics) and read your C{[plugins.NAME]}
    table from C{settings}.  Historic: a plugin registered later is
    configured as it registers.  Notification."""


@hookspec
def b2bua_unconfigure() -> Deferred[None] | None:
    """The service stops.  A returned Deferred is waited for (bounded)."""


# ---- admission --------------------------------------------------------


@hookspec(firstresult=True)
def b2bua_trusted_source(source: Source, request: Request) -> str | None:
    """Return an identity (e.g. C{"trunk:42"}) when the request's source is
    trusted without digest authentication (an IP-authenticated trunk);
    C{None} lets the core challenge it.  Synchronous, firstresult."""


@hookspec
def b2bua_registered(aor: str, request: Request, source: Source, response: Response) -> None:
    """The registrar answered a REGISTER for C{aor} from C{source} with
    C{response} (200: accepted; its Contact lists the bindings).
    Notification (a NAT keep-alive starts watching the AOR)."""


# ---- call setup -------------------------------------------------------


@hookspec
def b2bua_call_received(call: Call, request: Request) -> None:
    """A new INVITE became a call (after authentication).  Notification."""


@hookspec
def b2bua_authorize_call(
    call: Call, request: Request
) -> Reject | Callable[[], Deferred[Reject | None]] | None:
    """May this call proceed?  Return a L{Reject} to refuse it (402 on no
    balance, 403, 503 over a limit...), C{None} for no objection, or a
    zero-argument callable returning a Deferred of either.  Every
    implementation is asked until one rejects."""


@hookspec
def b2bua_route_call(
    call: Call, request: Request
) -> list[Route] | Reject | Callable[[], Deferred[list[Route] | Reject | None]] | None:
    """Where should the call go?  Return the hunt as a list of L{Route}
    steps (each step's destinations ring in parallel, steps in sequence),
    a L{Reject} (e.g. 480 when the callee is not registered), C{None} for
    no opinion, or a lazy callable.  The first non-None answer is used;
    with no answer the caller gets C{404}.

    A destination where one of the switch's own subscribers answers should
    be a L{b2bua.core.transfer_policy.CalleeDestination} naming that
    subscriber: only such a callee may transfer the call (REFER), and the
    transfer is charged to it (C{docs/transfer.md}, "Who pays")."""


@hookspec
def b2bua_admit_attempt(
    call: Call, destination: Destination, attempt: int
) -> Reject | Callable[[], Deferred[Reject | None]] | None:
    """May the hunt try C{destination} now?  Asked for each destination of
    a step, just before its B leg would start (C{attempt} is the step's
    index).  A L{Reject} skips the destination (a vendor connection over
    its limit): its code counts among the answers the caller may get, and
    when every destination of the step is refused the step fails as if
    they had answered that (C{b2bua_choose_failover} gets the response,
    without a leg).  C{None} or a lazy callable as for
    C{b2bua_authorize_call}; every implementation is asked until one
    rejects."""


@hookspec
def b2bua_prepare_outgoing_request(call: Call, leg: Leg, request: Request) -> None:
    """Change a B-leg INVITE (or re-INVITE) before it is sent.  Synchronous
    transformation: mutate C{request}."""


@hookspec
def b2bua_rewrite_sdp(
    call: Call, leg: Leg, sdp: SessionDescription, direction: str
) -> None:
    """Change an SDP offer or answer crossing the B2BUA, as it goes out on
    C{leg}.  C{direction} is C{"offer"} or C{"answer"}.  Transformation:
    mutate C{sdp}, at once, or return a Deferred and mutate it before the
    Deferred fires (a media backend answering over the network): the core
    then holds that SDP, and the call's later ones, until it fires (at most
    the hook timeout; then the SDP goes as it came).  The first offer to a
    B leg cannot wait: anchor it earlier (C{b2bua_authorize_call})."""


@hookspec(firstresult=True)
def b2bua_choose_failover(
    call: Call, leg: Leg, response: Response | None, attempt: int
) -> Hunt | StopHunting | None:
    """A route step failed (C{response} is C{None} on a timeout).  Return
    L{Hunt} to try the next step, L{StopHunting} to answer the caller now,
    or C{None} to ask the next plugin; the built-in default hunts on
    everything but 6xx.  Synchronous, firstresult."""


# ---- established call -------------------------------------------------


@hookspec(firstresult=True)
def b2bua_handle_in_dialog_request(
    call: Call, leg: Leg, request: Request
) -> Response | Deferred[Response] | None:
    """REFER, INFO, MESSAGE... on an established call.  Return C{None}
    (synchronously) to let the core relay it to the other leg; a Response
    or a Deferred of one claims the request and answers it.  A REFER no
    plugin claims is not relayed: the core transfers the call itself
    (C{b2bua_authorize_transfer}, C{docs/transfer.md})."""


@hookspec
def b2bua_authorize_transfer(
    call: Call, leg: Leg, target: URI
) -> Reject | URI | Callable[[], Deferred[Reject | URI | None]] | None:
    """May C{leg} (the referrer) transfer the other party of C{call} to
    C{target} (the REFER's C{Refer-To}, without URI headers)?  Asked before
    the REFER is answered.  Return C{None} for no objection, a L{Reject} to
    refuse the REFER with its code (e.g. 403), a L{URI} to transfer to that
    target instead, or a zero-argument callable returning a Deferred of
    either.  The first non-None answer wins.  The transfer's new call then
    goes through C{b2bua_call_received}, C{b2bua_authorize_call} and
    C{b2bua_route_call} like any call (its C{transferred_from} names the
    first call)."""


@hookspec
def b2bua_call_state_changed(call: Call, previous: CallState, current: CallState) -> None:
    """Every call-level transition (metrics, BLF, tracing).  Notification."""


@hookspec
def b2bua_call_answered(call: Call, leg: Leg, answered_at: float) -> None:
    """The answer was relayed to the caller (start charging here).
    C{answered_at} is the clock's time.  Notification."""


@hookspec
def b2bua_call_warned(call: Call, remaining: float) -> None:
    """The call will be cut by C{Call.limit_duration} in C{remaining}
    seconds (a plugin may play a tone).  Notification."""


@hookspec
def b2bua_call_ended(call: Call, record: CallRecord) -> Deferred[None] | None:
    """Exactly once for every received call, rejected ones included:
    release what you reserved, write the CDR.  A returned Deferred is
    tracked so that drain and shutdown wait for it.  Notification."""
