"""Server transactions (RFC 3261 17.2, with RFC 6026's Accepted state), and
the TU's 2xx retransmitter (RFC 3261 13.3.1.4).

L{InviteServerTransaction} and L{NonInviteServerTransaction} are created by
L{b2bua.sip.transaction.TransactionLayer} for each new request; the TU
answers through L{ServerTransaction.respond}.  They absorb retransmitted
requests (re-sending the last response) and retransmit non-2xx finals to
INVITE until the ACK.  The 2xx to an INVITE is retransmitted by the TU, not
by the transaction: L{TwoXXRetransmitter} does that for it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.logger import Logger

from b2bua.sip.errors import TransactionTimeout, TransportError
from b2bua.sip.message import Request, Response, make_response
from b2bua.sip.timers import Table, TimedMachine, Timers, notify, transport_error

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime
    from twisted.python.failure import Failure

    from b2bua.sip.interfaces import Source, TransactionUser, Transport

__all__ = [
    "InviteServerState",
    "InviteServerTransaction",
    "NonInviteServerState",
    "NonInviteServerTransaction",
    "RetransmitterState",
    "ServerTransaction",
    "TwoXXRetransmitter",
]

_log = Logger()


class ServerTransaction(TimedMachine):
    """What both server transactions share.

    @ivar request: the request that created the transaction.
    @ivar source: where it came from; every response goes back there.
    @ivar state: the current state (a C{StrEnum}, compares to its name).
    @ivar last_response: the last response sent, or C{None}.
    @ivar keys: the layer's table keys of this transaction.
    """

    __slots__ = ("_interval", "_on_terminated", "_transport", "_user", "keys",
                 "last_response", "request", "source", "timers")

    def __init__(self, clock: IReactorTime, transport: Transport, timers: Timers,
                 request: Request, source: Source, user: TransactionUser,
                 on_terminated: Callable[[ServerTransaction], None]) -> None:
        super().__init__(clock)
        self._transport = transport
        self.timers = timers
        self.request = request
        self.source = source
        self._user = user
        self._on_terminated = on_terminated
        self.last_response: Response | None = None
        self.keys: tuple[object, ...] = ()
        self._interval = timers.t1

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.state}>"

    @property
    def reliable(self) -> bool:
        """True when the request came over a stream."""
        return self.source.reliable

    def start(self) -> None:
        """Start the timers that run from creation (called by the layer)."""

    def respond(self, response: Response) -> None:
        """Send C{response} (built e.g. with L{make_response}) to the request.

        A response the state does not allow (a second final, a provisional
        after the final) is dropped and logged.
        """
        raise NotImplementedError

    def receive(self, request: Request) -> None:
        """A retransmission of the request, or (INVITE) its ACK (called by
        the layer)."""
        self._fire("ack" if request.method == "ACK" else "request", request)

    def _absorbed(self, event: str, args: tuple[object, ...]) -> None:
        if event.startswith("tu_"):
            _log.warn("{tx!r}: response {response!r} dropped", tx=self, response=args[0])

    def _send(self, response: Response) -> None:
        self.last_response = response
        self._resend()
        if response.code >= 200:
            # kept until Timer H, J or L ends the transaction: compact
            response.compact()

    def _resend(self, request: Request | None = None) -> None:
        response = self.last_response
        if response is None:
            return
        d = self._transport.send_response(response, self.source)
        d.addErrback(self._send_failed)

    def _send_failed(self, failure: Failure) -> None:
        self._fire("transport_error", transport_error(failure))

    def _transport_failed(self, error: TransportError) -> None:
        notify(self._user.server_transaction_failed, self, error)

    def _terminated(self) -> None:
        self._on_terminated(self)


class InviteServerState(enum.StrEnum):
    """States of L{InviteServerTransaction}."""

    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class InviteServerTransaction(ServerTransaction):
    """The INVITE server transaction (RFC 3261 17.2.1, RFC 6026 section 7.1).

    States:
      - C{Proceeding}: the INVITE was received and given to the TU; if the
        TU has not answered within 200 ms a C{100 Trying} is sent; a
        retransmitted INVITE gets the last provisional response again.
      - C{Accepted}: the TU sent a 2xx; further 2xx from the TU (its own
        retransmissions, see L{TwoXXRetransmitter}) pass through, INVITE
        retransmissions are absorbed, an ACK matching this transaction goes
        to the TU; Timer L (64*T1) ends the state.
      - C{Completed}: the TU sent a 300-699; Timer G retransmits it over
        unreliable transports (T1 doubling up to T2), a retransmitted
        INVITE gets it again; Timer H (64*T1) without ACK reports
        L{TransactionTimeout} to the TU.
      - C{Confirmed}: the ACK came; further ACKs are absorbed; Timer I (T4,
        zero over reliable transports) ends the state.
      - C{Terminated}: gone from the layer, no timer left.

    A transport error in any state reports L{TransportError} to the TU and
    terminates the transaction.
    """

    __slots__ = ()

    State = InviteServerState
    initial = InviteServerState.PROCEEDING
    terminal = InviteServerState.TERMINATED
    events = frozenset({"request", "ack", "tu_provisional", "tu_success", "tu_failure",
                        "trying", "timer_g", "timer_h", "timer_i", "timer_l",
                        "transport_error"})

    def start(self) -> None:
        """Start the 200 ms wait for the TU's first response."""
        self._run(self._start_timer, "trying", self.timers.trying_delay)

    def respond(self, response: Response) -> None:
        """Send a response from the TU (see L{ServerTransaction.respond})."""
        code = response.code
        if code < 200:
            self._fire("tu_provisional", response)
        elif code < 300:
            self._fire("tu_success", response)
        else:
            self._fire("tu_failure", response)

    def _trying(self) -> None:
        if self.last_response is None:
            self._send(make_response(self.request, 100))

    def _provisional(self, response: Response) -> None:
        self._cancel_timer("trying")
        self._send(response)

    def _accept(self, response: Response) -> None:
        self._cancel_timer("trying")
        self._send(response)
        self._start_timer("timer_l", self.timers.timer_l)

    def _complete(self, response: Response) -> None:
        self._cancel_timer("trying")
        self._send(response)
        if not self.reliable:
            self._interval = self.timers.timer_g
            self._start_timer("timer_g", self._interval)
        self._start_timer("timer_h", self.timers.timer_h)

    def _retransmit(self) -> None:
        self._resend()
        self._interval = min(2 * self._interval, self.timers.t2)
        self._start_timer("timer_g", self._interval)

    def _timed_out(self) -> None:
        notify(self._user.server_transaction_failed, self,
               TransactionTimeout("no ACK for the final response"))

    def _confirm(self, ack: Request) -> None:
        self._cancel_timer("timer_g")
        self._cancel_timer("timer_h")
        self._start_timer("timer_i", 0 if self.reliable else self.timers.timer_i)

    def _pass_ack(self, ack: Request) -> None:
        notify(self._user.request_received, ack, None)

    S = InviteServerState
    table: Table = {
        (S.PROCEEDING, "trying"): (S.PROCEEDING, _trying),
        (S.PROCEEDING, "request"): (S.PROCEEDING, ServerTransaction._resend),
        (S.PROCEEDING, "tu_provisional"): (S.PROCEEDING, _provisional),
        (S.PROCEEDING, "tu_success"): (S.ACCEPTED, _accept),
        (S.PROCEEDING, "tu_failure"): (S.COMPLETED, _complete),
        (S.PROCEEDING, "transport_error"): (S.TERMINATED, ServerTransaction._transport_failed),
        (S.ACCEPTED, "tu_success"): (S.ACCEPTED, ServerTransaction._send),
        (S.ACCEPTED, "ack"): (S.ACCEPTED, _pass_ack),
        (S.ACCEPTED, "timer_l"): (S.TERMINATED, None),
        (S.ACCEPTED, "transport_error"): (S.TERMINATED, ServerTransaction._transport_failed),
        (S.COMPLETED, "request"): (S.COMPLETED, ServerTransaction._resend),
        (S.COMPLETED, "timer_g"): (S.COMPLETED, _retransmit),
        (S.COMPLETED, "timer_h"): (S.TERMINATED, _timed_out),
        (S.COMPLETED, "ack"): (S.CONFIRMED, _confirm),
        (S.COMPLETED, "transport_error"): (S.TERMINATED, ServerTransaction._transport_failed),
        (S.CONFIRMED, "timer_i"): (S.TERMINATED, None),
    }
    del S


class NonInviteServerState(enum.StrEnum):
    """States of L{NonInviteServerTransaction}."""

    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class NonInviteServerTransaction(ServerTransaction):
    """The non-INVITE server transaction (RFC 3261 17.2.2).

    States:
      - C{Trying}: the request was received and given to the TU;
        retransmissions are absorbed (there is nothing to re-send yet).
      - C{Proceeding}: the TU sent a provisional response; a retransmitted
        request gets the last one again.
      - C{Completed}: the TU sent the final response; a retransmitted
        request gets it again; Timer J (64*T1, zero over reliable
        transports) ends the state.
      - C{Terminated}: gone from the layer, no timer left.

    A transport error in any state reports L{TransportError} to the TU and
    terminates the transaction.
    """

    __slots__ = ()

    State = NonInviteServerState
    initial = NonInviteServerState.TRYING
    terminal = NonInviteServerState.TERMINATED
    events = frozenset({"request", "tu_provisional", "tu_final", "timer_j",
                        "transport_error"})

    def respond(self, response: Response) -> None:
        """Send a response from the TU (see L{ServerTransaction.respond})."""
        self._fire("tu_provisional" if response.code < 200 else "tu_final", response)

    def _complete(self, response: Response) -> None:
        self._send(response)
        self._start_timer("timer_j", 0 if self.reliable else self.timers.timer_j)

    S = NonInviteServerState
    table: Table = {
        (S.TRYING, "tu_provisional"): (S.PROCEEDING, ServerTransaction._send),
        (S.TRYING, "tu_final"): (S.COMPLETED, _complete),
        (S.TRYING, "transport_error"): (S.TERMINATED, ServerTransaction._transport_failed),
        (S.PROCEEDING, "request"): (S.PROCEEDING, ServerTransaction._resend),
        (S.PROCEEDING, "tu_provisional"): (S.PROCEEDING, ServerTransaction._send),
        (S.PROCEEDING, "tu_final"): (S.COMPLETED, _complete),
        (S.PROCEEDING, "transport_error"): (S.TERMINATED, ServerTransaction._transport_failed),
        (S.COMPLETED, "request"): (S.COMPLETED, ServerTransaction._resend),
        (S.COMPLETED, "timer_j"): (S.TERMINATED, None),
        (S.COMPLETED, "transport_error"): (S.TERMINATED, ServerTransaction._transport_failed),
    }
    del S


class RetransmitterState(enum.StrEnum):
    """States of L{TwoXXRetransmitter}."""

    IDLE = "Idle"
    RETRANSMITTING = "Retransmitting"
    DONE = "Done"


class TwoXXRetransmitter(TimedMachine):
    """Retransmits a 2xx to an INVITE until its ACK (RFC 3261 13.3.1.4).

    The TU sends the 2xx once (L{ServerTransaction.respond}), then calls
    L{start}: C{send} is called again after T1, then at intervals doubling
    up to T2, over every transport, until L{ack_received} (or L{stop});
    after 64*T1 without an ACK it stops and calls C{on_timeout} (the TU
    then ends the dialog with a BYE, 13.3.1.4).

    States:
      - C{Idle}: created, not started.
      - C{Retransmitting}: waiting for the ACK.
      - C{Done}: ACK received, stopped or timed out; no timer left.
    """

    __slots__ = ("_interval", "_on_timeout", "_send", "timed_out", "timers")

    State = RetransmitterState
    initial = RetransmitterState.IDLE
    terminal = RetransmitterState.DONE
    events = frozenset({"start", "retransmit", "timeout", "ack", "stop"})

    def __init__(self, clock: IReactorTime, send: Callable[[], object],
                 timers: Timers | None = None,
                 on_timeout: Callable[[], object] | None = None) -> None:
        super().__init__(clock)
        self.timers = timers or Timers()
        self._send = send
        self._on_timeout = on_timeout
        self._interval = self.timers.t1
        #: True once 64*T1 passed without an ACK
        self.timed_out = False

    def start(self) -> None:
        """Start retransmitting (the first send is the TU's own)."""
        self._fire("start")

    def ack_received(self) -> None:
        """The ACK came: stop retransmitting."""
        self._fire("ack")

    def stop(self) -> None:
        """Stop without an ACK (e.g. the dialog is gone); no callback."""
        self._fire("stop")

    def _begin(self) -> None:
        self._interval = self.timers.t1
        self._start_timer("retransmit", self._interval)
        self._start_timer("timeout", 64 * self.timers.t1)

    def _retransmit(self) -> None:
        notify(self._send)
        self._interval = min(2 * self._interval, self.timers.t2)
        self._start_timer("retransmit", self._interval)

    def _give_up(self) -> None:
        self.timed_out = True
        if self._on_timeout is not None:
            notify(self._on_timeout)

    S = RetransmitterState
    table: Table = {
        (S.IDLE, "start"): (S.RETRANSMITTING, _begin),
        (S.IDLE, "stop"): (S.DONE, None),
        (S.RETRANSMITTING, "retransmit"): (S.RETRANSMITTING, _retransmit),
        (S.RETRANSMITTING, "ack"): (S.DONE, None),
        (S.RETRANSMITTING, "stop"): (S.DONE, None),
        (S.RETRANSMITTING, "timeout"): (S.DONE, _give_up),
    }
    del S
