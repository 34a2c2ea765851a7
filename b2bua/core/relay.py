"""What happens between two legs once a call is set up: the in-dialog
requests each side sends, relayed to the other.

  - BYE: answered at once, then the other leg is released (a caller's BYE
    before the answer ends the call like a CANCEL).
  - re-INVITE and UPDATE (hold, resume, codec changes, session refresh):
    relayed with their SDP through C{b2bua_rewrite_sdp}; one offer at a time
    per call, a second one gets C{491 Request Pending} (RFC 3261 14.2).  A
    re-INVITE without SDP (offer in the 2xx) has its ACK held until the
    originator's ACK brings the answer.
  - INFO, MESSAGE, NOTIFY, REFER, OPTIONS: offered to
    C{b2bua_handle_in_dialog_request} first, else relayed and their final
    response relayed back.
  - PRACK toward the caller leg: 481 (we never send reliable provisionals
    there; B legs' reliable provisionals are acknowledged by the leg).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from b2bua.core.hooks import HookFailed
from b2bua.core.session_timer import MIN_SE, SessionTimer, parse_session_expires
from b2bua.sip.errors import SIPError
from b2bua.sip.message import Request, Response, make_response

if TYPE_CHECKING:
    from b2bua.core.call import Call
    from b2bua.core.leg import Leg

__all__ = ["RELAYED_HEADERS", "Relay"]

#: Header fields copied from a relayed in-dialog request to the other leg.
RELAYED_HEADERS = ("event", "subscription-state", "refer-to", "referred-by",
                   "content-disposition", "info-package", "reason", "replaces")


class _Exchange:
    """An offer/answer (re-INVITE or UPDATE) crossing the call."""

    def __init__(self, origin: Leg, target: Leg, request: Request, transaction: Any) -> None:
        self.origin = origin
        self.target = target
        self.request = request
        self.transaction = transaction
        self.answer_2xx: Response | None = None
        #: the final response, once relayed (later 2xx are retransmissions)
        self.final: Response | None = None
        #: the ACK we sent the target for its 2xx (and its next hop)
        self.ack: tuple[Request, Any] | None = None


class Relay:
    """The established-call half of a L{Call}."""

    log = Logger()

    def __init__(self, call: Call) -> None:
        self.call = call
        self.exchange: _Exchange | None = None
        self.timers: dict[int, SessionTimer] = {}

    # -- helpers ---------------------------------------------------------------

    def other(self, leg: Leg) -> Leg | None:
        """The leg across the call from C{leg}."""
        call = self.call
        if leg is call.a_leg:
            return call.answered_leg
        return call.a_leg

    def _respond(self, leg: Leg, transaction: Any, request: Request, code: int,
                 reason: str | None = None, headers: list[tuple[str, str]] | None = None,
                 body: bytes = b"", content_type: str | None = None) -> None:
        extra = list(headers or ())
        if body and content_type:
            extra.append(("Content-Type", content_type))
        if 200 <= code < 300 and request.method == "INVITE":
            extra.append(("Contact", str(self.call.context.contact_for(
                (getattr(transaction, "source", None) and transaction.source.transport) or "UDP"))))
        response = make_response(request, code, reason, headers=extra, body=body)
        self.call.context.stamp_response(response)
        if 200 <= code < 300 and request.method == "INVITE":
            if body:
                leg.last_sdp = (body, content_type)
            leg.respond_2xx(transaction, response)
        else:
            transaction.respond(response)

    # -- requests ----------------------------------------------------------------

    def request_received(self, leg: Leg, request: Request, transaction: Any) -> None:
        """An in-dialog request on C{leg} (the switch matched its dialog)."""
        method = request.method
        call = self.call
        try:
            if leg.dialog is not None:
                leg.dialog.receive_request(request)
        except SIPError as error:
            self._respond(leg, transaction, request, error.code, error.reason, error.headers)
            return
        if method == "BYE":
            self._respond(leg, transaction, request, 200)
            if call.transfer is not None and call.transfer.referrer_left(leg):
                return  # the transferee waits for the transfer target
            if call.is_answered:
                call.release(leg, request.headers.get("reason"),
                             disconnect=getattr(leg, "role", "peer"))
            elif leg is not call.a_leg:
                leg.ended = True
            else:
                # the caller left its early dialog: like a CANCEL (RFC 3261 15.1.2)
                call.cancel_received()
            return
        if method == "PRACK":
            self._respond(leg, transaction, request, 481, "No reliable provisional pending")
            return
        if not call.is_answered or call.ended:
            self._respond(leg, transaction, request, 491 if method == "INVITE" else 403,
                          "Call not established")
            return
        if method in ("INVITE", "UPDATE"):
            self._offer(leg, request, transaction)
            return
        try:
            claimed = call.context.hooks.handle_in_dialog_request(call, leg, request)
        except HookFailed:
            self._respond(leg, transaction, request, 500, "Plugin error")
            return
        if claimed is not None:
            self._answer_claim(leg, request, transaction, claimed)
            return
        if method == "REFER":
            from b2bua.core.transfer import refer_received  # transfer imports the call

            refer_received(call, leg, request, transaction)
            return
        self._forward(leg, request, transaction)

    def _answer_claim(self, leg: Leg, request: Request, transaction: Any,
                      claimed: Response | Deferred[Response]) -> None:
        def send(response: Response) -> None:
            self.call.context.stamp_response(response)
            transaction.respond(response)

        if isinstance(claimed, Deferred):
            claimed.addCallbacks(send, lambda f: self._respond(
                leg, transaction, request, 500, "Plugin error"))
        else:
            send(claimed)

    def _forward(self, leg: Leg, request: Request, transaction: Any) -> None:
        other = self.other(leg)
        if other is None or other.ended:
            self._respond(leg, transaction, request, 481)
            return
        headers = [(name, value) for name, value in request.headers
                   if name.lower() in RELAYED_HEADERS]
        sent = other.send_in_dialog(
            request.method, request.body, request.headers.get("content-type"), headers,
            on_response=lambda r: r.code >= 200 and self._respond(
                leg, transaction, request, r.code, r.reason, body=r.body,
                content_type=r.headers.get("content-type")),
            on_failure=lambda e: self._respond(leg, transaction, request, 408))
        if sent is None:
            self._respond(leg, transaction, request, 481)

    # -- offer/answer ------------------------------------------------------------

    def _offer(self, leg: Leg, request: Request, transaction: Any) -> None:
        other = self.other(leg)
        if other is None or other.ended:
            self._respond(leg, transaction, request, 481)
            return
        if self.exchange is not None or leg.retransmitter is not None:
            self._respond(leg, transaction, request, 491, "Request Pending",
                          [("Retry-After", "1")])
            return
        exchange = _Exchange(leg, other, request, transaction)
        self.exchange = exchange
        self.call.with_body(request, other, "offer",
                            lambda body, content_type: self._send_offer(
                                exchange, body, content_type))

    def _send_offer(self, exchange: _Exchange, body: bytes, content_type: str | None) -> None:
        """Forward an offer (its SDP rewritten) to the other leg."""
        leg, other, request = exchange.origin, exchange.target, exchange.request
        transaction = exchange.transaction
        if other.ended or self.call.ended:
            if self.exchange is exchange:
                self.exchange = None
            self._respond(leg, transaction, request, 481)
            return
        if body:
            other.last_sdp = (body, content_type)
        headers = self._session_headers(request, other)
        sent = other.send_in_dialog(
            request.method, body, content_type, headers,
            on_response=lambda r: self._offer_answered(exchange, r),
            on_failure=lambda e: self._offer_failed(exchange),
            prepare=self._prepare(other, request.method))
        if sent is None:
            self.exchange = None
            self._respond(leg, transaction, request, 481)

    def _session_headers(self, request: Request, other: Leg) -> list[tuple[str, str]]:
        timer = self.timers.get(id(other))
        if timer is None or timer.interval is None:
            return []
        refresher = "uac" if timer.we_refresh else "uas"
        return [("Session-Expires", f"{timer.interval};refresher={refresher}"),
                ("Supported", "timer")]

    def _prepare(self, leg: Leg, method: str) -> Any:
        """C{b2bua_prepare_outgoing_request} for a re-INVITE to a B leg."""
        call = self.call
        if method != "INVITE" or leg is call.a_leg:
            return None
        return lambda request: call.context.hooks.prepare_outgoing_request(call, leg, request)

    def _offer_answered(self, exchange: _Exchange, response: Response) -> None:
        if response.code < 200:
            return
        if exchange.final is not None:
            # a retransmitted 2xx: our ACK was lost; send it again, nothing more
            if exchange.ack is not None and 200 <= response.code < 300:
                self._send_ack(exchange.target, *exchange.ack)
            return
        exchange.final = response
        if self.exchange is exchange:
            self.exchange = None
        origin, target = exchange.origin, exchange.target
        if 200 <= response.code < 300:
            self._refreshed(target)
            self._refreshed(origin)
            if exchange.request.method == "INVITE":
                if exchange.request.body or not response.body:
                    exchange.ack = self._ack(target, response)
                else:
                    exchange.answer_2xx = response
                    target.awaiting_exchange = exchange  # type: ignore[attr-defined]
            self.call.with_body(response, origin, "answer",
                                lambda body, content_type: self._respond(
                                    origin, exchange.transaction, exchange.request,
                                    response.code, response.reason, body=body,
                                    content_type=content_type))
            return
        if exchange.request.method == "INVITE" and response.code in (408, 481):
            self.call.hangup(f'SIP;cause={response.code};text="re-INVITE failed"',
                             disconnect="reinvite-failed")
        self._respond(origin, exchange.transaction, exchange.request, response.code,
                      response.reason)

    def _offer_failed(self, exchange: _Exchange) -> None:
        if self.exchange is exchange:
            self.exchange = None
        self._respond(exchange.origin, exchange.transaction, exchange.request, 408)
        self.call.hangup('SIP;cause=408;text="re-INVITE timed out"', disconnect="reinvite-failed")

    def _ack(self, leg: Leg, response: Response, body: bytes = b"",
             content_type: str | None = None) -> tuple[Request, Any] | None:
        dialog = leg.dialog
        if dialog is None:
            return None
        cseq = response.cseq.number
        ack, hop = dialog.create_ack(cseq, body, content_type)
        self._send_ack(leg, ack, hop)
        return ack, hop

    def _send_ack(self, leg: Leg, ack: Request, hop: Any) -> None:
        """Send (or send again, unchanged) the ACK of a 2xx."""
        try:
            leg.context.transactions.send_ack(ack, leg.next_hop(hop)).addErrback(lambda f: None)
        except Exception:
            pass

    def ack_from(self, leg: Leg, ack: Request) -> None:
        """The ACK of a 2xx we sent on C{leg}: release a held ACK (late offer)."""
        call = self.call
        other = self.other(leg)
        if other is None:
            return
        held = getattr(other, "awaiting_exchange", None)
        if held is not None and held.answer_2xx is not None:
            other.awaiting_exchange = None  # type: ignore[attr-defined]

            def ack_held(body: bytes, content_type: str | None) -> None:
                held.ack = self._ack(other, held.answer_2xx, body, content_type)

            call.with_body(ack, other, "answer", ack_held)
            return
        awaiting = getattr(other, "awaiting_ack_body", None)
        if awaiting is not None:
            other.awaiting_ack_body = None  # type: ignore[attr-defined]
            call.with_body(ack, other, "answer",
                           lambda body, content_type: other.send_ack(  # type: ignore[attr-defined]
                               awaiting, body, content_type))

    # -- session timers ------------------------------------------------------

    def start_session_timers(self, answer: Response) -> None:
        """Negotiate each leg's session timer once the call is answered."""
        call = self.call
        settings = call.context.settings
        a_request = call.a_leg.request
        asked = parse_session_expires(a_request)
        if asked is not None:
            interval, refresher = asked
            we_refresh = refresher == "uas"
            self._arm(call.a_leg, interval, we_refresh)
        b_leg = call.answered_leg
        if b_leg is None or not settings.session_expires:
            return
        granted = parse_session_expires(answer)
        if granted is None:
            # the callee does not do session timers: we refresh (RFC 4028 7.2)
            self._arm(b_leg, settings.session_expires, True)
        else:
            interval, refresher = granted
            self._arm(b_leg, interval, refresher != "uas")

    def _arm(self, leg: Leg, interval: int, we_refresh: bool) -> None:
        timer = SessionTimer(self.call.context.clock,
                             lambda: self._send_refresh(leg),
                             lambda: self.call.hangup(
                                 'SIP;cause=408;text="session timer expired"',
                                 disconnect="session-timer"))
        self.timers[id(leg)] = timer
        timer.start(max(interval, MIN_SE), we_refresh)

    def _refreshed(self, leg: Leg) -> None:
        timer = self.timers.get(id(leg))
        if timer is not None:
            timer.refreshed()

    def _send_refresh(self, leg: Leg) -> None:
        if self.exchange is not None or leg.ended:
            return
        timer = self.timers.get(id(leg))
        headers = [("Session-Expires", f"{timer.interval};refresher=uac")] if timer else []
        body, content_type = leg.last_sdp
        method = "INVITE"
        if leg.allows_update:
            method, body, content_type = "UPDATE", b"", None

        def answered(response: Response) -> None:
            if response.code < 200:
                return
            if 200 <= response.code < 300:
                if method == "INVITE":
                    self._ack(leg, response)
                self._refreshed(leg)

        leg.send_in_dialog(method, body, content_type, headers, on_response=answered,
                           prepare=self._prepare(leg, method))

    def stop(self) -> None:
        """Stop every timer (the call is over)."""
        for timer in self.timers.values():
            timer.stop()
        self.timers.clear()
        for leg in (self.call.a_leg, *self.call.b_legs):
            leg.stop_retransmitting()
