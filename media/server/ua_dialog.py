"""The media server's calls once answered: their state and in-dialog requests.

L{AnsweredCall} is one call of L{media.server.ua.MediaServerUA}: its dialog,
RTP session, media (L{MediaCall}) and flow run.  L{InDialogRequests} is the
part of the user agent that answers the requests of those dialogs and sends
the REFERs of the flows' C{transfer} nodes:

  - B{BYE} from the caller: C{200} (with the call's C{X-Recording}
    headers), the run is stopped, the RTP session closed and its ports
    returned to the pool.
  - B{INFO} with a DTMF body: C{200} and the digit (C{parse_info_body}
    errors are answered with their own code); an empty INFO gets C{200}.
  - B{re-INVITE} / B{UPDATE} with an offer: renegotiated on the same port
    (the C{o=} version grows); without one, the last answer again.
  - B{OPTIONS}: C{200} with C{Allow}; another method: C{405} (C{501} when
    unknown); no such dialog: C{481}.
  - B{REFER} (the C{transfer} node, RFC 3515): C{Refer-To: <sip:N@DOMAIN>}
    (L{refer_target}; DOMAIN is the From host of the INVITE),
    C{Referred-By} our own URI; a L{Referral} follows it.  The
    C{Event: refer} B{NOTIFY}s are answered C{200} (C{400} for a body that
    is not a sipfrag; C{489} for another event, C{481} when no REFER was
    sent).  A final 2xx sipfrag: the run ends C{transfer} and the user
    agent waits for the switch's BYE (C{TRANSFERRED_BYE_WAIT} at most,
    then sends its own); a failure goes back to the flow (C{on_error}); a
    C{405}/C{501} to the REFER falls back to a BYE naming the target; no
    final status within C{transfer_timeout} seconds (or the node's
    C{timeout}) hangs up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from b2bua.core.leg import target_for_uri
from b2bua.sip.dialog import Dialog
from b2bua.sip.errors import ParseError, SIPError, TransportError
from b2bua.sip.headers import NameAddress
from b2bua.sip.message import KNOWN_METHODS, Request, make_response
from b2bua.sip.sdp import Origin, parse_sdp
from b2bua.sip.timers import Timers
from b2bua.sip.transaction import TransactionLayer
from b2bua.sip.transaction_server import TwoXXRetransmitter
from media.server.dtmf_info import parse_info_body
from media.server.ivr import Flow
from media.server.ivr_runtime import FlowResult, FlowRun
from media.server.ivr_session import TransferFailed
from media.server.negotiation import negotiate
from media.server.refer import Referral, answer_notify, refer_target
from media.server.rtp_session import RtpSession
from media.server.ua_session import MediaCall

__all__ = ["ALLOWED", "AnsweredCall", "InDialogRequests"]

#: The methods the media server answers.
ALLOWED = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "NOTIFY")


@dataclass(eq=False)
class AnsweredCall:
    """One answered call's state (by (Call-ID, our tag) in
    L{MediaServerUA.calls<media.server.ua.MediaServerUA.calls>})."""

    key: tuple[str, str]
    flow: Flow | None
    invite: Request
    dialog: Dialog
    rtp: RtpSession
    port: int
    origin: Origin
    media: MediaCall
    answer: bytes
    retransmitter: TwoXXRetransmitter | None = None
    run: FlowRun | None = None
    done: Deferred[FlowResult] | None = None
    released: bool = False
    variables: dict[str, str] = field(default_factory=dict)
    room: str | None = None
    referral: Referral | None = None
    bye_wait: Any = None


class InDialogRequests:
    """The in-dialog requests of L{media.server.ua.MediaServerUA}'s calls
    and the REFERs it sends (a base class of the user agent, which
    provides the attributes and methods declared below).
    """

    if TYPE_CHECKING:
        log: Logger
        reactor: Any
        media_address: str
        user_agent: str
        timers: Timers
        transfer_timeout: float
        transactions: TransactionLayer | None
        calls: dict[tuple[str, str], AnsweredCall]
        transfers: dict[str, int]

        def _reply(self, transaction: Any, request: Request, code: int,
                   reason: str | None = None,
                   headers: list[tuple[str, str]] | None = None) -> None: ...

        def _recorded(self, call: AnsweredCall, hung_up: bool) -> list[tuple[str, str]]: ...

        def _caller_hung_up(self, call: AnsweredCall) -> None: ...

    # -- in the dialog ----------------------------------------------------------------

    def _in_dialog(self, request: Request, transaction: Any) -> None:
        call = self.calls.get((request.call_id, request.to.tag or ""))
        if call is None:
            self._reply(transaction, request, 481)
            return
        call.dialog.receive_request(request)  # SIPError: 400/500 for a bad CSeq
        method = request.method
        if method == "BYE":
            self._reply(transaction, request, 200, headers=self._recorded(call, True))
            self._caller_hung_up(call)
        elif method == "INFO":
            if request.body:
                event = parse_info_body(request.headers.get("content-type") or "", request.body)
                self._reply(transaction, request, 200)
                call.media.digit_received(event)
            else:
                self._reply(transaction, request, 200)
        elif method in ("INVITE", "UPDATE"):
            self._reoffer(call, request, transaction)
        elif method == "NOTIFY":
            self._notify(call, request, transaction)
        elif method == "OPTIONS":
            self._reply(transaction, request, 200, headers=[("Allow", ", ".join(ALLOWED))])
        else:
            self._reply(transaction, request, 405 if method in KNOWN_METHODS else 501,
                        headers=[("Allow", ", ".join(ALLOWED))])

    def _reoffer(self, call: AnsweredCall, request: Request, transaction: Any) -> None:
        """A re-INVITE or UPDATE: a new answer on the same port."""
        if request.body:
            try:
                offer = parse_sdp(request.body)
            except ParseError as error:
                raise SIPError(400, f"Bad SDP: {error}") from None
            origin = call.origin._replace(sess_version=call.origin.sess_version + 1)
            result = negotiate(offer, address=self.media_address, port=call.port, origin=origin)
            call.rtp.update(**result.session_parameters())  # type: ignore[arg-type]
            call.origin = origin
            call.answer = result.answer.to_bytes()
            if result.telephone_event is None and call.media.detector is None:
                from media.server.goertzel import DtmfDetector

                call.media.detector = DtmfDetector(call.media.digit_received)
        headers = [("Content-Type", "application/sdp"), ("Server", self.user_agent)]
        if request.method == "INVITE":
            headers.append(("Contact", str(call.dialog.local_contact)))
        response = make_response(request, 200, headers=headers, body=call.answer)
        transaction.respond(response)
        if request.method == "INVITE":
            if call.retransmitter is not None:
                call.retransmitter.stop()
            call.retransmitter = TwoXXRetransmitter(
                self.reactor, lambda: transaction.respond(response), self.timers)
            call.retransmitter.start()

    # -- transfer ---------------------------------------------------------------------

    def _refer(self, call: AnsweredCall, target: str, timeout: float | None) -> Deferred[None]:
        """Send a REFER for C{target} in the call's dialog; its L{Referral}'s
        Deferred (see L{MediaCall.transfer})."""
        if call.referral is not None and not call.referral.done:
            return fail(TransferFailed(491, "a transfer is in progress"))
        try:
            uri = refer_target(target, call.variables.get("tenant") or self.media_address)
        except ValueError as error:
            return fail(error)
        own = NameAddress(call.dialog.local_uri.uri.copy())
        referral = Referral(self.reactor, timeout=timeout or self.transfer_timeout,
                            label=call.invite.call_id)
        call.referral = referral
        referral.deferred.addBoth(self._transfer_ended, call, referral)
        try:
            request, hop = call.dialog.create_request(
                "REFER", headers=[("Refer-To", f"<{uri}>"), ("Referred-By", str(own))])
            referral.event_id = str(request.cseq.number)
            if self.transactions is None:
                raise TransportError("the media server is not started")
            self.log.info("media server: {call_id} REFER to {uri}",
                          call_id=call.invite.call_id, uri=str(uri))
            self.transactions.send_request(request, target_for_uri(hop), referral)
        except (SIPError, TransportError, ValueError) as error:
            self.log.warn("media server: cannot send the REFER of {call_id}: {error}",
                          call_id=call.invite.call_id, error=error)
            referral.transaction_failed(None, error)
        return referral.deferred

    def _transfer_ended(self, result: Any, call: AnsweredCall, referral: Referral) -> Any:
        """Count a transfer's outcome and log it; pass the result on."""
        outcome = referral.outcome
        self.transfers[outcome] = self.transfers.get(outcome, 0) + 1
        self.log.info("media server: transfer of {call_id}: {outcome} ({status})",
                      call_id=call.invite.call_id, outcome=outcome, status=referral.status)
        return result

    def _notify(self, call: AnsweredCall, request: Request, transaction: Any) -> None:
        """A NOTIFY: the progress of our REFER (RFC 3515 2.4.4)."""
        code, reason = answer_notify(call.referral, request)
        if code >= 300:
            self.transfers["bad_notify"] = self.transfers.get("bad_notify", 0) + 1
        headers = [("Allow-Events", "refer")] if code == 489 else None
        self._reply(transaction, request, code, reason, headers)
