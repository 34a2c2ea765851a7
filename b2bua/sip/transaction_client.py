"""Client transactions (RFC 3261 17.1, with RFC 6026's Accepted state).

L{InviteClientTransaction} and L{NonInviteClientTransaction} send one
request, retransmit it over unreliable transports, and hand every response
to their owner (a L{ClientTransactionUser}); the INVITE one acknowledges
non-2xx final responses itself and builds the CANCEL of RFC 3261 9.1.  They
are created by L{b2bua.sip.transaction.TransactionLayer.send_request}, which
adds the Via and routes responses to them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.logger import Logger

from b2bua.sip.errors import TransactionTimeout, TransportError
from b2bua.sip.message import Request, Response
from b2bua.sip.timers import Table, TimedMachine, Timers, notify, transport_error

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime
    from twisted.python.failure import Failure

    from b2bua.sip.interfaces import ClientTransactionUser, Target, Transport

__all__ = [
    "ClientTransaction",
    "InviteClientState",
    "InviteClientTransaction",
    "NonInviteClientState",
    "NonInviteClientTransaction",
    "build_ack",
    "build_cancel",
]

_log = Logger()


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK of a non-2xx final response (RFC 3261 17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE, the To of
    the response (with its tag), the INVITE's top Via only, its Route
    header fields, and the method ACK in the CSeq.
    """
    ack = Request("ACK", invite.uri_text)
    headers = ack.headers
    headers.add("Via", invite.headers.get_all("Via")[0])
    for route in invite.headers.get_lines("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq.number} ACK")
    return ack


def build_cancel(request: Request, reason: str | None = None) -> Request:
    """The CANCEL of C{request} (RFC 3261 9.1): same Request-URI, Call-ID,
    To, From, CSeq number, the single top Via (same branch) and the Route
    header fields; C{reason} becomes a Reason header (RFC 3326)."""
    cancel = Request("CANCEL", request.uri_text)
    headers = cancel.headers
    headers.add("Via", request.headers.get_all("Via")[0])
    for route in request.headers.get_lines("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", request.headers.get("From") or "")
    headers.add("To", request.headers.get("To") or "")
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", f"{request.cseq.number} CANCEL")
    if reason:
        headers.add("Reason", reason)
    return cancel


class _Finished:
    """The owner of a client transaction in C{Completed}: nothing is
    reported from then on (retransmitted finals are absorbed, Timers D and K
    end the state silently), so the transaction lets go of its real owner
    instead of keeping it, and all it holds, alive until the timer fires."""

    __slots__ = ()

    def response_received(self, response: Response, transaction: object) -> None:
        """Never called in C{Completed}."""

    def transaction_failed(self, transaction: object,
                           error: TransactionTimeout | TransportError) -> None:
        """Never called in C{Completed}."""


_FINISHED = _Finished()


class ClientTransaction(TimedMachine):
    """What both client transactions share.

    @ivar request: the request sent (with the Via the layer added).
    @ivar target: where it goes.
    @ivar branch: the branch of its top Via (the transaction id).
    @ivar owner: the L{ClientTransactionUser} told of responses and failures;
        once the transaction is C{Completed} (it has nothing more to tell),
        a placeholder that ignores everything.
    @ivar state: the current state (a C{StrEnum}, compares to its name).
    """

    __slots__ = ("_interval", "_on_terminated", "_transport", "branch", "owner",
                 "request", "target", "timers")

    def __init__(self, clock: IReactorTime, transport: Transport, timers: Timers,
                 request: Request, target: Target, owner: ClientTransactionUser,
                 branch: str,
                 on_terminated: Callable[[ClientTransaction], None]) -> None:
        super().__init__(clock)
        self._transport = transport
        self.timers = timers
        self.request = request
        self.target = target
        self.owner = owner
        self.branch = branch
        self._on_terminated = on_terminated
        self._interval = timers.t1

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.branch} {self.state}>"

    @property
    def reliable(self) -> bool:
        """True when the target's transport is a stream."""
        return self.target.reliable

    def start(self) -> None:
        """Send the request and start the timers (called by the layer once
        the transaction is in its table)."""
        self._run(self._begin)

    def receive(self, response: Response) -> None:
        """A response that matched this transaction (called by the layer)."""
        raise NotImplementedError

    def cancel(self, owner: ClientTransactionUser | None = None,
               reason: str | None = None) -> ClientTransaction | None:
        """Cancel the request; only INVITE transactions can be cancelled."""
        return None

    def _begin(self) -> None:
        raise NotImplementedError

    def _send(self) -> None:
        d = self._transport.send_request(self.request, self.target)
        d.addErrback(self._send_failed)

    def _send_failed(self, failure: Failure) -> None:
        self._fire("transport_error", transport_error(failure))

    def _report(self, response: Response) -> None:
        notify(self.owner.response_received, response, self)

    def _timed_out(self) -> None:
        notify(self.owner.transaction_failed, self,
               TransactionTimeout(f"no final response to {self.request.method}"))

    def _transport_failed(self, error: TransportError) -> None:
        notify(self.owner.transaction_failed, self, error)

    def _terminated(self) -> None:
        self._on_terminated(self)


class InviteClientState(enum.StrEnum):
    """States of L{InviteClientTransaction}."""

    CALLING = "Calling"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class InviteClientTransaction(ClientTransaction):
    """The INVITE client transaction (RFC 3261 17.1.1, RFC 6026 section 7.2).

    States:
      - C{Calling}: the INVITE was sent; Timer A retransmits it over
        unreliable transports (T1, doubling, no cap); Timer B (64*T1) ends
        the transaction with L{TransactionTimeout}.
      - C{Proceeding}: a provisional response came; no more
        retransmissions, no timeout (the TU decides how long to ring).
      - C{Accepted}: a 2xx came; every further 2xx (retransmissions, other
        forks with other To tags) goes to the owner, which sends the ACK;
        Timer M (64*T1) ends the state.
      - C{Completed}: a 300-699 came; the transaction sent the ACK and
        answers retransmitted finals with it; Timer D (32 s, zero over
        reliable transports) ends the state.
      - C{Terminated}: gone from the layer, no timer left.

    L{cancel} sends a CANCEL (RFC 3261 9.1) as its own non-INVITE
    transaction once a provisional response has arrived.
    """

    __slots__ = ("_ack", "_cancel_transaction", "_cancel_wish", "_start_cancel")

    State = InviteClientState
    initial = InviteClientState.CALLING
    terminal = InviteClientState.TERMINATED
    events = frozenset({"provisional", "success", "failure", "timer_a", "timer_b",
                        "timer_d", "timer_m", "transport_error"})

    def __init__(self, clock: IReactorTime, transport: Transport, timers: Timers,
                 request: Request, target: Target, owner: ClientTransactionUser,
                 branch: str, on_terminated: Callable[[ClientTransaction], None],
                 start_cancel: Callable[[Request, Target, ClientTransactionUser],
                                        ClientTransaction]) -> None:
        super().__init__(clock, transport, timers, request, target, owner, branch,
                         on_terminated)
        self._start_cancel = start_cancel
        self._ack: Request | None = None
        self._cancel_wish: tuple[ClientTransactionUser, str | None] | None = None
        self._cancel_transaction: ClientTransaction | None = None

    @property
    def cancel_transaction(self) -> ClientTransaction | None:
        """The CANCEL's client transaction, once it was sent."""
        return self._cancel_transaction

    @property
    def ack(self) -> Request | None:
        """The ACK this transaction sent for a non-2xx final response."""
        return self._ack

    def receive(self, response: Response) -> None:
        """A response that matched this transaction (called by the layer)."""
        code = response.code
        if code < 200:
            self._fire("provisional", response)
        elif code < 300:
            self._fire("success", response)
        else:
            self._fire("failure", response)

    def cancel(self, owner: ClientTransactionUser | None = None,
               reason: str | None = None) -> ClientTransaction | None:
        """Cancel the INVITE (RFC 3261 9.1).

        In C{Proceeding} the CANCEL is sent now and its transaction
        returned.  In C{Calling} the wish is kept and the CANCEL is sent on
        the first provisional response (C{None} is returned; see
        L{cancel_transaction}); a final response arriving first drops it.
        Once a final response came, nothing is sent and C{None} returned.
        A second call returns the CANCEL already sent.

        @param owner: who gets the CANCEL's responses (default: the INVITE's
            owner; they are told apart by C{CSeq} method or transaction).
        @param reason: a Reason header value (RFC 3326), if any.
        """
        if self._cancel_transaction is not None:
            return self._cancel_transaction
        owner = owner or self.owner
        if self.state is InviteClientState.CALLING:
            self._cancel_wish = (owner, reason)
            return None
        if self.state is InviteClientState.PROCEEDING:
            return self._send_cancel(owner, reason)
        return None

    def _send_cancel(self, owner: ClientTransactionUser,
                     reason: str | None) -> ClientTransaction:
        self._cancel_wish = None
        cancel = build_cancel(self.request, reason)
        self._cancel_transaction = self._start_cancel(cancel, self.target, owner)
        return self._cancel_transaction

    # --- actions ---------------------------------------------------------

    def _begin(self) -> None:
        self._send()
        if not self.reliable:
            self._interval = self.timers.timer_a
            self._start_timer("timer_a", self._interval)
        self._start_timer("timer_b", self.timers.timer_b)

    def _retransmit(self) -> None:
        self._send()
        self._interval *= 2
        self._start_timer("timer_a", self._interval)

    def _proceed(self, response: Response) -> None:
        self._cancel_timer("timer_a")
        self._cancel_timer("timer_b")
        wish = self._cancel_wish
        if wish is not None:
            self._send_cancel(*wish)
        self._report(response)

    def _accept(self, response: Response) -> None:
        self._cancel_timer("timer_a")
        self._cancel_timer("timer_b")
        self._cancel_wish = None
        self._start_timer("timer_m", self.timers.timer_m)
        self._report(response)

    def _complete(self, response: Response) -> None:
        self._cancel_timer("timer_a")
        self._cancel_timer("timer_b")
        self._cancel_wish = None
        self._ack = build_ack(self.request, response)
        self._send_ack()
        self._report(response)
        self.owner = _FINISHED
        self._start_timer("timer_d", 0 if self.reliable else self.timers.timer_d)

    def _send_ack(self, response: Response | None = None) -> None:
        assert self._ack is not None
        d = self._transport.send_request(self._ack, self.target)
        d.addErrback(lambda f: _log.warn("ACK not sent: {error}", error=transport_error(f)))

    S = InviteClientState
    table: Table = {
        (S.CALLING, "timer_a"): (S.CALLING, _retransmit),
        (S.CALLING, "timer_b"): (S.TERMINATED, ClientTransaction._timed_out),
        (S.CALLING, "provisional"): (S.PROCEEDING, _proceed),
        (S.CALLING, "success"): (S.ACCEPTED, _accept),
        (S.CALLING, "failure"): (S.COMPLETED, _complete),
        (S.CALLING, "transport_error"): (S.TERMINATED, ClientTransaction._transport_failed),
        (S.PROCEEDING, "provisional"): (S.PROCEEDING, ClientTransaction._report),
        (S.PROCEEDING, "success"): (S.ACCEPTED, _accept),
        (S.PROCEEDING, "failure"): (S.COMPLETED, _complete),
        (S.PROCEEDING, "transport_error"): (S.TERMINATED, ClientTransaction._transport_failed),
        (S.ACCEPTED, "success"): (S.ACCEPTED, ClientTransaction._report),
        (S.ACCEPTED, "timer_m"): (S.TERMINATED, None),
        (S.COMPLETED, "failure"): (S.COMPLETED, _send_ack),
        (S.COMPLETED, "timer_d"): (S.TERMINATED, None),
    }
    del S


class NonInviteClientState(enum.StrEnum):
    """States of L{NonInviteClientTransaction}."""

    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class NonInviteClientTransaction(ClientTransaction):
    """The non-INVITE client transaction (RFC 3261 17.1.2).

    States:
      - C{Trying}: the request was sent; Timer E retransmits it over
        unreliable transports (T1, doubling up to T2); Timer F (64*T1) ends
        the transaction with L{TransactionTimeout}.
      - C{Proceeding}: a provisional response came (and went to the
        owner); Timer E keeps retransmitting, every T2.
      - C{Completed}: a final response came (and went to the owner);
        retransmitted finals are absorbed; Timer K (T4, zero over reliable
        transports) ends the state.
      - C{Terminated}: gone from the layer, no timer left.
    """

    __slots__ = ()

    State = NonInviteClientState
    initial = NonInviteClientState.TRYING
    terminal = NonInviteClientState.TERMINATED
    events = frozenset({"provisional", "final", "timer_e", "timer_f", "timer_k",
                        "transport_error"})

    def receive(self, response: Response) -> None:
        """A response that matched this transaction (called by the layer)."""
        self._fire("provisional" if response.code < 200 else "final", response)

    def _begin(self) -> None:
        self._send()
        if not self.reliable:
            self._interval = self.timers.timer_e
            self._start_timer("timer_e", self._interval)
        self._start_timer("timer_f", self.timers.timer_f)

    def _retransmit(self) -> None:
        self._send()
        self._interval = min(2 * self._interval, self.timers.t2)
        self._start_timer("timer_e", self._interval)

    def _retransmit_t2(self) -> None:
        self._send()
        self._interval = self.timers.t2
        self._start_timer("timer_e", self._interval)

    def _complete(self, response: Response) -> None:
        self._cancel_timer("timer_e")
        self._cancel_timer("timer_f")
        self._report(response)
        self.owner = _FINISHED
        # kept (unread) until Timer K ends the transaction: compact it
        self.request.compact()
        self._start_timer("timer_k", 0 if self.reliable else self.timers.timer_k)

    S = NonInviteClientState
    table: Table = {
        (S.TRYING, "timer_e"): (S.TRYING, _retransmit),
        (S.TRYING, "timer_f"): (S.TERMINATED, ClientTransaction._timed_out),
        (S.TRYING, "provisional"): (S.PROCEEDING, ClientTransaction._report),
        (S.TRYING, "final"): (S.COMPLETED, _complete),
        (S.TRYING, "transport_error"): (S.TERMINATED, ClientTransaction._transport_failed),
        (S.PROCEEDING, "timer_e"): (S.PROCEEDING, _retransmit_t2),
        (S.PROCEEDING, "timer_f"): (S.TERMINATED, ClientTransaction._timed_out),
        (S.PROCEEDING, "provisional"): (S.PROCEEDING, ClientTransaction._report),
        (S.PROCEEDING, "final"): (S.COMPLETED, _complete),
        (S.PROCEEDING, "transport_error"): (S.TERMINATED, ClientTransaction._transport_failed),
        (S.COMPLETED, "timer_k"): (S.TERMINATED, None),
    }
    del S
