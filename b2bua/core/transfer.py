"""Blind call transfer handled by the switch itself (RFC 3515, RFC 5589).

A party of an established call (the I{referrer}) sends REFER with a
C{Refer-To} SIP URI; the other party (the I{transferee}) is to be connected
to that target.  The switch does not relay the REFER: it

  1. checks it (C{400} bad or missing C{Refer-To}, C{501} with a
     method other than INVITE, C{491} while another
     transfer or offer is in progress, C{403} when C{[core] transfer} is
     off, when the referrer is nobody the switch can charge or when the
     call reached C{[core] max_transfers}: L{b2bua.core.transfer_policy})
     and asks C{b2bua_authorize_transfer} (a L{Reject} refuses with its
     code, a L{URI} replaces the target);
  2. answers C{202 Accepted} and sends the referrer a NOTIFY
     (C{Event: refer}, C{message/sipfrag} C{SIP/2.0 100 Trying});
  3. starts a L{TransferCall}: a new call from the transferee to the
     target, with the referrer's identity and tenant (the referrer pays:
     the caller's side as the call's identity, the callee's side as the
     identity its destination was marked with), through the whole
     call path (C{b2bua_call_received}, C{b2bua_authorize_call},
     C{b2bua_route_call}, the hunt, C{b2bua_call_answered}...).  Its INVITE
     offers the transferee's media: the last SDP the switch sent the
     referrer;
  4. when the target answers, moves the transferee's dialog into the new
     call, re-INVITEs the transferee with the target's SDP (ACKed on
     its 2xx; when the transferee's answer differs from what the target
     was offered, the target gets it in a re-INVITE), sends the referrer
     NOTIFY C{200 OK}
     (C{Subscription-State: terminated}) and then BYE, and ends the first
     call (C{disconnect="transferred"});
  5. when the new call fails (busy, no answer, refused, no route...),
     sends the referrer NOTIFY with that status; the transferee stays
     with the referrer, or is hung up if the referrer has left meanwhile.

A C{Refer-To} with C{Replaces} (attended transfer) goes to
L{b2bua.core.transfer_attended} after the checks of the C{Refer-To}.

The referrer may hang up as soon as it got C{202} (what phones do for a
blind transfer): the transferee then waits in the first call until the
target answers or fails.  The transferee hanging up while the target rings
cancels the new call.  C{b2bua_call_ended} fires once for each call.

The new call and its transferee leg are in L{b2bua.core.transfer_call},
the re-INVITE exchanges after the answer in L{b2bua.core.transfer_reinvite},
who may transfer and who pays in L{b2bua.core.transfer_policy}, the answer
to the REFER and the NOTIFYs (attended transfers' too) in
L{b2bua.core.transfer_notify}; the names of the first two are importable
from here too.  See C{docs/transfer.md}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from b2bua.core.call import Call
from b2bua.core.decisions import Reject
from b2bua.core.hooks import HookFailed
from b2bua.core.leg import ServerLeg
from b2bua.core.transfer_attended import BadReplaces, Replaces, attended_refer, parse_replaces
from b2bua.core.transfer_call import TransferCall, TransfereeLeg
from b2bua.core.transfer_notify import SIPFRAG, notify_referrer, respond
from b2bua.core.transfer_policy import (
    TRANSFERS,
    Party,
    TransferRefused,
    transfer_payer,
)
from b2bua.core.transfer_reinvite import ack_answer, late_answer, update_target
from b2bua.sip.errors import ParseError
from b2bua.sip.headers import NameAddress, parse_name_addr
from b2bua.sip.message import Request, Response
from b2bua.sip.uri import URI

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IDelayedCall
    from twisted.python.failure import Failure

    from b2bua.core.leg import Leg

__all__ = ["SIPFRAG", "Transfer", "TransferCall", "TransfereeLeg", "parse_refer_to",
           "refer_received"]

#: transfers accepted in a call and the calls it came from, when C{[core]
#: max_transfers} is not set (L{b2bua.core.switch.CoreSettings})
MAX_TRANSFERS = 3
#: a re-INVITE to the transferee that crossed one of its own (491) is tried
#: again this many seconds later, at most this many times (RFC 3261 14.1)
GLARE_RETRY_SECONDS = 2.0
GLARE_RETRIES = 2

log = Logger()


class BadReferTo(Exception):
    """A REFER the switch will not act on: C{code} and C{reason} say why."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


def refer_to_uri(request: Request) -> URI:
    """The URI of a REFER's one C{Refer-To}, as sent.

    @raise BadReferTo: C{400} when missing, repeated or malformed.
    """
    try:
        values = request.headers.get_all("refer-to")
    except ParseError:
        raise BadReferTo(400, "Bad Refer-To") from None
    if len(values) != 1:
        raise BadReferTo(400, "Missing Refer-To" if not values else "More than one Refer-To")
    try:
        uri = parse_name_addr(values[0]).uri
    except ParseError:
        raise BadReferTo(400, "Bad Refer-To") from None
    return uri


def refer_replaces(request: Request) -> Replaces | None:
    """The C{Replaces} of a REFER's C{Refer-To} (attended transfer), if any.

    @raise BadReferTo: C{400} for a bad C{Refer-To} or C{Replaces}.
    """
    try:
        return parse_replaces(refer_to_uri(request))
    except BadReplaces:
        raise BadReferTo(400, "Bad Replaces") from None


def parse_refer_to(request: Request, attended: bool = False) -> URI:
    """The target of a REFER: its one C{Refer-To}, a SIP URI, without URI
    header fields.

    @param attended: a C{Replaces} is expected (attended transfer,
        L{b2bua.core.transfer_attended}); without it, C{Replaces} is
        refused.
    @raise BadReferTo: C{400} when missing, repeated, malformed or not a
        SIP URI; C{501} when it asks for C{Replaces} and C{attended} is
        false, or for a method other than INVITE.
    """
    uri = refer_to_uri(request)
    if not uri.is_sip or not uri.host:
        raise BadReferTo(400, "Refer-To must be a SIP URI")
    names = {part.partition("=")[0].strip().lower()
             for part in (uri.headers or "").split("&") if part}
    if "replaces" in names and not attended:
        raise BadReferTo(501, "Attended transfer (Replaces) not supported")
    if (uri.params.get("method") or "INVITE").upper() != "INVITE":
        raise BadReferTo(501, "Only INVITE transfers are supported")
    target = uri.copy()
    target.headers = None
    target.params.pop("method", None)
    return target


def _count(call: Call, result: str) -> None:
    """Count a step of a transfer in C{b2bua_calls_transferred_total}."""
    call.context.metrics.call_transferred(result)


def refer_received(call: Call, leg: Leg, request: Request, transaction: Any) -> None:
    """A REFER on an established call, no plugin claimed it: act on it
    (called by L{b2bua.core.relay.Relay})."""
    context = call.context
    settings = context.settings
    if not getattr(settings, "transfer", True):
        context.metrics.request_rejected("forbidden")
        _count(call, "refused_policy")
        respond(call, transaction, request, 403, "Call transfer disabled")
        return
    try:
        replaces = refer_replaces(request)
        target = parse_refer_to(request, attended=replaces is not None)
    except BadReferTo as error:
        context.metrics.request_rejected("malformed" if error.code == 400 else "other")
        _count(call, "refused_invalid")
        respond(call, transaction, request, error.code, error.reason)
        return
    if replaces is not None:
        attended_refer(call, leg, request, transaction, target, replaces,
                       getattr(settings, "max_transfers", MAX_TRANSFERS))
        return
    transferee = call.relay.other(leg)
    if transferee is None or transferee.ended or leg.ended:
        _count(call, "refused_other")
        respond(call, transaction, request, 481)
        return
    try:
        payer = transfer_payer(call, leg, getattr(settings, "max_transfers", MAX_TRANSFERS))
    except TransferRefused as refused:
        log.info("transfer refused: {reason} (call {call_id}, {role})", reason=refused.reason,
                 call_id=call.id, role=getattr(leg, "role", ""))
        context.metrics.request_rejected("forbidden")
        _count(call, refused.result)
        respond(call, transaction, request, refused.code, refused.reason)
        return
    if call.transfer is not None or call.relay.exchange is not None:
        _count(call, "refused_other")
        respond(call, transaction, request, 491, "Request Pending")
        return
    transfer = Transfer(call, leg, transferee, request, target, payer)
    call.transfer = transfer
    transfer.authorize(transaction)


class Transfer:
    """One blind transfer of a call, from the REFER to its outcome.

    @ivar call: the call being transferred (the first call).
    @ivar referrer: the leg that sent the REFER.
    @ivar transferee: the other leg: it moves to the new call.
    @ivar target: where the transferee goes (after C{b2bua_authorize_transfer}).
    @ivar payer: whom the new call is placed as (the referrer's party).
    @ivar new_call: the L{TransferCall}, once started.
    @ivar state: C{authorizing}, C{trying}, C{connecting}, C{done} or C{failed}.
    @ivar referrer_gone: the referrer hung up while the transfer ran.
    """

    def __init__(self, call: Call, referrer: Leg, transferee: Leg, request: Request,
                 target: URI, payer: Party) -> None:
        self.call = call
        self.referrer = referrer
        self.transferee = transferee
        self.target = target
        self.payer = payer
        self.request: Request | None = request
        self.referred_by = request.headers.get("referred-by") or ""
        # the id tells this REFER's subscription from a later one's (RFC 3515 2.4.6)
        self.event = f"refer;id={request.cseq.number}"
        self.new_call: TransferCall | None = None
        self.state = "authorizing"
        self.referrer_gone = False
        self._glare = 0
        self._retry: IDelayedCall | None = None
        #: fires when the first call ends, while the new call may be cancelled
        self._watch: Deferred[None] | None = None

    # -- REFER -----------------------------------------------------------------

    def authorize(self, transaction: Any) -> None:
        """Ask C{b2bua_authorize_transfer}, then accept or refuse the REFER."""
        call = self.call
        d = call.context.hooks.authorize_transfer(call, self.referrer, self.target)
        d.addCallbacks(self._authorized, self._hook_failed,
                       callbackArgs=(transaction,), errbackArgs=(transaction,))

    def _hook_failed(self, failure: Failure, transaction: Any) -> None:
        failure.trap(HookFailed)
        self._refuse(transaction, 500, "Plugin error")

    def _refuse(self, transaction: Any, code: int, reason: str | None,
                result: str = "refused_other") -> None:
        _count(self.call, result)
        request = self.request
        self.request = None
        self.state = "failed"
        if self.call.transfer is self:
            self.call.transfer = None
        if request is not None:
            respond(self.call, transaction, request, code, reason)

    def _authorized(self, answer: Reject | URI | None, transaction: Any) -> None:
        call = self.call
        if isinstance(answer, Reject):
            call.context.metrics.request_rejected("forbidden")
            self._refuse(transaction, answer.code, answer.reason, "refused_policy")
            return
        if isinstance(answer, URI):
            self.target = answer
        if call.ended or self.referrer.ended or self.transferee.ended:
            self._refuse(transaction, 481, None)
            return
        request = self.request
        self.request = None  # the REFER is not needed any more
        assert request is not None
        respond(call, transaction, request, 202, "Accepted")
        _count(call, "accepted")
        call.data[TRANSFERS] = int(call.data.get(TRANSFERS, 0)) + 1
        self.state = "trying"
        self._notify(100, "Trying", final=False)
        self._watch = call.when_ended()
        self._watch.addCallback(lambda _: self._first_call_ended())
        self._start_new_call()

    def _start_new_call(self) -> None:
        """Make the transferee's call to the target and start it."""
        call, context = self.call, self.call.context
        call_id = f"xfer-{context.new_tag()}-{call.id}"
        if isinstance(self.transferee, ServerLeg):
            caller = NameAddress(call.caller.uri.copy(), call.caller.display_name)
        else:
            caller = NameAddress(call.callee.copy())
        caller.params["tag"] = context.new_tag()
        body, content_type = self.referrer.last_sdp
        headers = [
            ("Max-Forwards", "70"),
            ("From", str(caller)),
            ("To", str(NameAddress(self.target.copy()))),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Referred-By", self.referred_by or str(NameAddress(self._referrer_uri()))),
        ]
        if body and content_type:
            headers.append(("Content-Type", content_type))
        request = Request("INVITE", str(self.target), headers, body)
        new_call = TransferCall(self, request)
        self.new_call = new_call
        context.calls[new_call.id] = new_call
        context.metrics.call_started()
        new_call.start()

    def _referrer_uri(self) -> URI:
        call = self.call
        return call.caller.uri.copy() if self.referrer is call.a_leg else call.callee.copy()

    # -- NOTIFY ------------------------------------------------------------------

    def _notify(self, code: int, reason: str | None, final: bool,
                then: Any = None) -> None:
        """Tell the referrer how the transfer goes; C{then()} once the NOTIFY
        got its final response, failed, or could not be sent."""
        notify_referrer(self.referrer, self.event, code, reason, final, then)

    # -- events --------------------------------------------------------------------

    def referrer_left(self, leg: Leg) -> bool:
        """A BYE came on C{leg} of the first call (already answered 200).
        True when it is the referrer of a running transfer: the transferee
        stays and waits for the target."""
        if leg is not self.referrer or self.state not in ("trying", "connecting"):
            return False
        leg.ended = True
        if leg.dialog is not None:
            leg.dialog.terminate()
        self.referrer_gone = True
        timer = self.call.relay.timers.pop(id(leg), None)
        if timer is not None:
            timer.stop()
        if self.state == "connecting":
            # the final NOTIFY was on its way: the first call is over now
            self._release_first_call()
        return True

    def _unwatch(self) -> None:
        """The transfer is over: stop waiting for the first call's end, so
        that the first call (which may go on for hours, and see many
        REFERs) does not keep every failed transfer and its call alive."""
        watch, self._watch = self._watch, None
        if watch is not None:
            self.call.forget_when_ended(watch)

    def _first_call_ended(self) -> None:
        """The first call ended (the transferee left): give the new call up."""
        new_call = self.new_call
        if self.state == "trying" and new_call is not None and not new_call.ended:
            new_call.cancel_received()

    def failed(self, code: int, reason: str | None) -> None:
        """The new call failed with C{code}: tell the referrer; the
        transferee stays in the first call (hung up when the referrer left)."""
        if self.state != "trying":
            return
        self.state = "failed"
        call = self.call
        _count(call, "failed")
        if call.transfer is self:
            call.transfer = None
        self._unwatch()
        self._notify(code, reason, final=True)
        if self.referrer_gone and not call.ended:
            call.hangup(f'SIP;cause={code};text="transfer failed"',
                        disconnect="transfer-failed")

    def connect(self, leg: TransfereeLeg, body: bytes, content_type: str | None) -> None:
        """The target answered: the transferee's dialog moves into the new
        call, gets the target's SDP in a re-INVITE, and the first call
        ends (NOTIFY 200 then BYE to the referrer)."""
        self.state = "connecting"
        call, transferee = self.call, self.transferee
        _count(call, "connected")
        new_call = leg.call
        dialog = transferee.dialog
        leg.dialog = dialog
        leg.flow = transferee.flow
        leg.allows_update = transferee.allows_update
        if dialog is not None:
            dialog.user = leg
        transferee.dialog = None
        transferee.ended = True
        timer = call.relay.timers.pop(id(transferee), None)
        if timer is not None:
            timer.stop()
            if timer.interval:
                new_call.relay._arm(leg, timer.interval, timer.we_refresh)
        self._reinvite(leg, body, content_type)
        self._notify(200, "OK", final=True, then=self._release_first_call)

    def _release_first_call(self) -> None:
        call = self.call
        self.state = "done"
        if call.transfer is self:
            call.transfer = None
        if not call.ended:
            call.release(self.transferee, 'SIP;cause=200;text="Call transferred"',
                         disconnect="transferred")

    # -- the re-INVITE to the transferee --------------------------------------------

    def _reinvite(self, leg: TransfereeLeg, body: bytes, content_type: str | None) -> None:
        new_call = leg.call
        relay = new_call.relay
        if leg.ended or new_call.ended:
            return
        if body:
            leg.last_sdp = (body, content_type)
        relay.exchange = self  # one offer at a time: the transferee's waits (491)
        acks: list[tuple[Request, URI]] = []
        given_up: list[bool] = []

        def give_up(reason: str | None) -> None:
            if given_up:
                return
            given_up.append(True)
            if new_call.is_answered:
                new_call.hangup(reason, disconnect="transfer-failed")
            else:
                # the re-INVITE failed at once, inside the new call's answer
                # (L{TransfereeLeg.answer}): hanging up now would end the call
                # before it counts as answered (the target never BYE'd, the
                # answer hook after the end); end it as soon as it is
                new_call.context.clock.callLater(0, new_call.hangup, reason,
                                                 "transfer-failed")

        def answered(response: Response) -> None:
            if response.code < 200:
                return
            if relay.exchange is self:
                relay.exchange = None
            if 200 <= response.code < 300:
                first = not acks
                ack_answer(leg, response, acks)
                if first and not late_answer(new_call, response):
                    update_target(self, new_call, response)
                return
            if response.code == 491 and self._glare < GLARE_RETRIES:
                self._glare += 1
                self._retry = new_call.context.clock.callLater(
                    GLARE_RETRY_SECONDS, self._reinvite, leg, body, content_type)
                return
            give_up(f'SIP;cause={response.code};text="transfer re-INVITE refused"')

        def failed(error: Exception) -> None:
            if relay.exchange is self:
                relay.exchange = None
            give_up('SIP;cause=408;text="transfer re-INVITE timed out"')

        sent = leg.send_in_dialog("INVITE", body, content_type, on_response=answered,
                                  on_failure=failed)
        if sent is None:
            if relay.exchange is self:
                relay.exchange = None
            give_up(None)

    def stop(self) -> None:
        """Cancel a pending glare retry (the new call ended)."""
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
