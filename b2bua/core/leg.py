"""Legs: the two sides of a call, each its own SIP dialog.

A L{ServerLeg} is the caller's side (we are its UAS); a L{ClientLeg} is a
callee's side (we are its UAC).  Each leg has its own Call-ID, tags, Via
and Contact: nothing of one leg's identifiers reaches the other (topology
hiding).  Legs speak SIP; the L{Call} decides.  A leg never calls back into
its call from inside a call's own transition: leg events go through the
call's methods, which the transaction layer invokes from its own context.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from b2bua.sip.dialog import Dialog, DialogState
from b2bua.sip.errors import SIPError, TransactionTimeout, TransportError
from b2bua.sip.headers import NameAddress
from b2bua.sip.interfaces import Source, Target
from b2bua.sip.message import Request, Response, make_response
from b2bua.sip.transaction_server import TwoXXRetransmitter
from b2bua.sip.uri import URI

if TYPE_CHECKING:
    from b2bua.core.call import Call
    from b2bua.core.decisions import Destination

__all__ = ["ClientLeg", "Leg", "Outcome", "ServerLeg", "target_for_uri"]


@lru_cache(maxsize=4096)
def _is_ip_literal(host: str) -> bool:
    """True for an IPv4 or IPv6 address literal (without brackets)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def target_for_uri(uri: URI) -> Target:
    """The next hop for a SIP URI whose host is an IP literal.

    @raise TransportError: for a host name (DNS resolution, RFC 3263, is
        done by routing plugins, which hand the core resolved targets).
    """
    if not uri.is_sip or not uri.host:
        raise TransportError(f"cannot send to {uri}")
    transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).upper()
    host = uri.params.get("maddr") or uri.host_unbracketed or ""
    if not _is_ip_literal(host):
        raise TransportError(f"no address for host {host!r} (needs DNS)")
    port = uri.port or (5061 if transport == "TLS" else 5060)
    return Target(transport, host, port)


class Outcome:
    """A client transaction user made of two callables (for in-dialog requests)."""

    __slots__ = ("on_failure", "on_response")

    def __init__(self, on_response: Callable[[Response], Any],
                 on_failure: Callable[[Exception], Any]) -> None:
        self.on_response = on_response
        self.on_failure = on_failure

    def response_received(self, response: Response, transaction: object) -> None:
        """Pass a response on."""
        self.on_response(response)

    def transaction_failed(self, transaction: object,
                           error: TransactionTimeout | TransportError) -> None:
        """Pass a failure on."""
        self.on_failure(error)


class Leg:
    """What both legs share: a dialog, a flow to send on, in-dialog requests.

    @ivar call: the call this leg belongs to.
    @ivar dialog: the confirmed (or early) dialog, once there is one.
    @ivar flow: where in-dialog requests go when set (the address the
        phone's messages come from: NAT friendly, and the TCP/TLS connection
        it uses).
    """

    log = Logger()
    role = "leg"
    #: whether session refreshes toward this leg may be UPDATEs (RFC 4028)
    allows_update = False

    def __init__(self, call: Call) -> None:
        self.call = call
        self.dialog: Dialog | None = None
        self.flow: Target | None = None
        self.ended = False
        #: the 2xx we re-send until the peer's ACK (INVITE or re-INVITE)
        self.retransmitter: TwoXXRetransmitter | None = None
        #: the last SDP we sent on this leg (for session refreshes)
        self.last_sdp: tuple[bytes, str | None] = (b"", None)

    def respond_2xx(self, transaction: Any, response: Response,
                    on_ack_timeout: Callable[[], Any] | None = None) -> None:
        """Send a 2xx to an INVITE and re-send it until the ACK (13.3.1.4)."""
        self.stop_retransmitting()
        transaction.respond(response)
        self.retransmitter = TwoXXRetransmitter(
            self.context.clock, lambda: transaction.respond(response),
            self.context.transactions.timers, on_ack_timeout)
        self.retransmitter.start()

    def stop_retransmitting(self) -> None:
        """Stop re-sending a 2xx."""
        if self.retransmitter is not None:
            self.retransmitter.stop()
            self.retransmitter = None

    def ack_received(self, ack: Request) -> None:
        """The peer's ACK of a 2xx we sent on this leg."""
        if self.retransmitter is not None:
            self.retransmitter.ack_received()
            self.retransmitter = None
        self.call.relay.ack_from(self, ack)

    @property
    def context(self) -> Any:
        """The switch context of the call (clock, transactions, hooks...)."""
        return self.call.context

    def next_hop(self, uri: URI) -> Target:
        """Where an in-dialog request to C{uri} goes."""
        if self.flow is not None and (self.dialog is None or not self.dialog.route_set):
            return self.flow
        return target_for_uri(uri)

    def send_in_dialog(self, method: str, body: bytes = b"", content_type: str | None = None,
                       headers: list[tuple[str, str]] | None = None,
                       on_response: Callable[[Response], Any] | None = None,
                       on_failure: Callable[[Exception], Any] | None = None,
                       prepare: Callable[[Request], Any] | None = None) -> Request | None:
        """Send an in-dialog request (BYE, re-INVITE, UPDATE, INFO...).

        @param prepare: called with the request just before it is sent.
        @return: the request, or C{None} when there is no dialog (or it
            could not be sent; C{on_failure} is told).
        """
        if self.dialog is None or self.dialog.state is DialogState.TERMINATED:
            return None
        request, hop = self.dialog.create_request(method, body, content_type, headers)
        self.context.stamp_request(request)
        if prepare is not None:
            prepare(request)
        outcome = Outcome(on_response or (lambda r: None), on_failure or (lambda e: None))
        try:
            self.context.transactions.send_request(request, self.next_hop(hop), outcome)
        except TransportError as error:
            outcome.on_failure(error)
            return None
        return request

    def bye(self, reason: str | None = None,
            on_done: Callable[[], Any] | None = None) -> None:
        """End this leg's dialog with a BYE (with a Reason header if given)."""
        if self.ended:
            return
        self.ended = True
        headers = [("Reason", reason)] if reason else None
        done = on_done or (lambda: None)
        sent = self.send_in_dialog("BYE", headers=headers,
                                   on_response=lambda r: r.code >= 200 and done(),
                                   on_failure=lambda e: done())
        if self.dialog is not None:
            self.dialog.terminate()
        if sent is None:
            done()


class ServerLeg(Leg):
    """The caller's side: we answer its INVITE.

    @ivar request: the INVITE that started the call; C{None} once the
        caller has ACKed our 2xx (the dialog holds what the call needs).
    @ivar transaction: its INVITE server transaction; C{None} from then on
        too.
    @ivar source: where it came from.
    @ivar local_tag: our To tag toward the caller (one for every response).
    @ivar allows_update: the caller's INVITE listed UPDATE in its C{Allow}
        (session refreshes toward it are UPDATEs then).
    """

    role = "caller"

    def __init__(self, call: Call, request: Request, transaction: Any, source: Source,
                 local_tag: str) -> None:
        super().__init__(call)
        self.request: Request | None = request
        self.transaction = transaction
        self.source = source
        self.local_tag = local_tag
        self.flow = source.reply_target()
        self.final_sent: int | None = None
        self.allows_update = "UPDATE" in (request.headers.get("allow") or "").upper()

    def _invite(self) -> Request:
        """The caller's INVITE (only asked for before the final response)."""
        if self.request is None:
            raise RuntimeError("the INVITE of an established call is not kept")
        return self.request

    def ack_received(self, ack: Request) -> None:
        """The caller's ACK of a 2xx: once it came for the answer, the INVITE
        and its transaction are not needed any more (a long call keeps only
        its dialog)."""
        super().ack_received(ack)
        if self.final_sent == 200 and self.request is not None:
            # the transaction keeps the INVITE until Timer L: compact it
            self.request.compact()
            self.request = None
            self.transaction = None

    def _contact(self) -> NameAddress:
        return self.context.contact_for(self.source.transport)

    def _ensure_dialog(self, confirmed: bool) -> None:
        if self.dialog is None:
            dialog = Dialog.from_uas(self._invite(), self.local_tag, self._contact(),
                                     confirmed=confirmed)
            self.dialog = dialog
            self.context.register_dialog(dialog, self)
        elif confirmed and self.dialog.state is DialogState.EARLY:
            self.dialog.confirm()

    def provisional(self, code: int, reason: str | None = None, body: bytes = b"",
                    content_type: str | None = None) -> None:
        """Relay a 1xx to the caller (it creates the early dialog)."""
        if self.final_sent is not None:
            return
        headers = [("Contact", str(self._contact()))]
        if body and content_type:
            headers.append(("Content-Type", content_type))
        try:
            self._ensure_dialog(confirmed=False)
        except SIPError:
            pass
        response = make_response(self._invite(), code, reason, to_tag=self.local_tag,
                                 headers=headers, body=body)
        self.context.stamp_response(response)
        self.transaction.respond(response)

    def answer(self, body: bytes = b"", content_type: str | None = None,
               headers: list[tuple[str, str]] | None = None,
               on_ack_timeout: Callable[[], Any] | None = None) -> bool:
        """Send the 2xx and keep re-sending it until the caller's ACK.

        @return: False when a final response was already sent.
        """
        if self.final_sent is not None:
            return False
        self.final_sent = 200
        self._ensure_dialog(confirmed=True)
        extra = [("Contact", str(self._contact())), *list(headers or ())]
        if body and content_type:
            extra.append(("Content-Type", content_type))
        response = make_response(self._invite(), 200, to_tag=self.local_tag, headers=extra,
                                 body=body)
        self.context.stamp_response(response)
        if body:
            self.last_sdp = (body, content_type)
        self.respond_2xx(self.transaction, response, on_ack_timeout)
        return True

    def reject(self, code: int, reason: str | None = None,
               headers: list[tuple[str, str]] | None = None) -> bool:
        """Send a final error response to the INVITE (the transaction ACKs).

        @return: False when a final response was already sent.
        """
        if self.final_sent is not None:
            return False
        self.final_sent = code
        response = make_response(self._invite(), code, reason, to_tag=self.local_tag,
                                  headers=list(headers or ()))
        self.context.stamp_response(response)
        self.transaction.respond(response)
        if self.dialog is not None:
            self.dialog.terminate()
        self.ended = True
        return True

    def stop(self) -> None:
        """Stop timers (the call is over)."""
        self.stop_retransmitting()


class ClientLeg(Leg):
    """A callee's side: we send it an INVITE.

    Once the answer is relayed and ACKed the leg lets go of what only the
    set-up needed (L{release_setup}): C{invite} and C{transaction} become
    C{None} and C{final} keeps its status line only (code and reason, for
    the CDR).

    @ivar destination: what the route asked for.
    @ivar invite: the INVITE sent (C{None} once the answer is ACKed).
    @ivar invite_cseq: its CSeq number (the ACK of the answer carries it).
    @ivar transaction: its INVITE client transaction (C{None} from then on).
    @ivar early: early dialogs by remote tag (a forking proxy may make several).
    @ivar final: the final response, once there is one.
    """

    role = "callee"

    def __init__(self, call: Call, destination: Destination, index: int) -> None:
        super().__init__(call)
        self.destination = destination
        self.index = index
        self.invite: Request | None = None
        self.invite_cseq = 0
        self.transaction: Any = None
        #: the INVITE transaction still, once C{transaction} is C{None} (it
        #: lingers until Timer M): see L{after_call}
        self._invite_transaction: Any = None
        self.early: dict[str, Dialog] = {}
        self.final: Response | None = None
        self.failure: Exception | None = None
        self.ack: Request | None = None
        self.cancelled = False
        self.started_at = call.context.clock.seconds()
        self.answered_at: float | None = None
        #: the first ringing (a provisional response other than 100): post-dial delay
        self.ringing_at: float | None = None
        #: when the attempt ended unanswered (its final response, its failure,
        #: or when the call gave up on it)
        self.ended_at: float | None = None
        #: a 2xx whose ACK waits for the caller's answer (late offer)
        self.awaiting_ack_body: Response | None = None

    @property
    def done(self) -> bool:
        """True once the INVITE has a final outcome (response or failure)."""
        return self.final is not None or self.failure is not None

    def start(self, invite: Request, target: Target) -> None:
        """Send C{invite} to C{target} in a new client transaction."""
        self.invite = invite
        self.invite_cseq = invite.cseq.number
        if invite.body:
            self.last_sdp = (invite.body, invite.headers.get("content-type"))
        self.flow = target if self.destination.next_hop is not None else None
        self.transaction = self.context.transactions.send_request(invite, target, self)
        self._invite_transaction = self.transaction

    # -- ClientTransactionUser -------------------------------------------------

    def response_received(self, response: Response, transaction: object) -> None:
        """A response to our INVITE (every 2xx of a fork included)."""
        if response.code < 200:
            if response.code > 100 and self.ringing_at is None:
                self.ringing_at = self.context.clock.seconds()
            tag = response.to.tag
            if tag and response.code > 100 and tag not in self.early and self.final is None:
                try:
                    dialog = Dialog.from_uac(self.invite, response, self.context.contact_for(
                        self.transaction.target.transport))
                except SIPError:
                    dialog = None
                if dialog is not None:
                    self.early[tag] = dialog
                    self.context.register_dialog(dialog, self)
            self._prack_if_reliable(response)
        elif 200 <= response.code < 300:
            if self.final is not None and self.final.is_success:
                answered = self.final.to.tag if self.dialog is None else self.dialog.remote_tag
                if response.to.tag == answered:
                    self.resend_ack()  # a retransmission: our ACK was lost
                else:
                    self._extra_answer(response)
                return
            self.final = response
            self.answered_at = self.context.clock.seconds()
            self._confirm(response)
        else:
            self.final = response
            if self.ended_at is None:
                self.ended_at = self.context.clock.seconds()
            for dialog in self.early.values():
                dialog.terminate()
                self.context.unregister_dialog(dialog)
            self.early.clear()
        self.call.leg_response(self, response)

    def transaction_failed(self, transaction: object,
                           error: TransactionTimeout | TransportError) -> None:
        """Timer B or a transport failure: no final response will come."""
        if self.final is None:
            self.failure = error
            if self.ended_at is None:
                self.ended_at = self.context.clock.seconds()
            self.call.leg_failed(self, error)

    # -- dialog handling -------------------------------------------------------

    def _confirm(self, response: Response) -> None:
        tag = response.to.tag or ""
        dialog = self.early.pop(tag, None)
        contact = self.context.contact_for(self.transaction.target.transport)
        try:
            if dialog is None:
                dialog = Dialog.from_uac(self.invite, response, contact)
                self.context.register_dialog(dialog, self)
            else:
                dialog.confirm(response)
        except SIPError as error:
            self.log.info("2xx without a usable Contact: {error}", error=error)
            dialog = None
        for other in self.early.values():
            other.terminate()
            self.context.unregister_dialog(other)
        self.early.clear()
        self.dialog = dialog
        if dialog is not None:
            if self.invite is not None and not self.invite.body and response.body:
                # late offer: the caller's ACK will carry the answer
                self.awaiting_ack_body = response
            else:
                self.send_ack(response)

    def send_ack(self, response: Response, body: bytes = b"",
                 content_type: str | None = None) -> None:
        """ACK the 2xx of the INVITE (kept, to re-send on a retransmitted 2xx).

        When the answer was relayed already (a late offer: this ACK carries
        the caller's answer) the leg then lets go of its set-up state.
        """
        if self.dialog is None or self.invite is None:
            return
        ack, hop = self.dialog.create_ack(self.invite_cseq, body, content_type)
        self.ack = ack
        self._send_ack(ack, hop)
        if self.call.is_answered:
            # a late offer: the answer was relayed before this ACK
            self.release_setup()

    def release_setup(self) -> None:
        """The answer is relayed and ACKed: drop the INVITE, its transaction
        (which runs on by itself until Timer M, the INVITE compacted) and the
        answer's header fields (C{final} keeps code and reason)."""
        if self.ack is None:
            return
        if self.invite is not None:
            self.invite.compact()
        self.invite = None
        self.transaction = None
        final = self.final
        if final is not None:
            self.final = Response(final.code, final.reason)
        self.ack.compact()

    def after_call(self) -> None:
        """The call is over (its dialogs are unregistered).

        The answered INVITE's transaction lingers in C{Accepted} until Timer
        M (64*T1) to pass on retransmitted 2xx, and with this leg as its
        owner it would keep the whole call alive that long.  It gets an
        owner of its own instead (L{_AnsweredInvite}) that answers those
        2xx as this leg did, holding only the ACK, the dialog and the flow.
        """
        tx, self._invite_transaction = self._invite_transaction, None
        if (tx is None or tx.owner is not self or tx.state != "Accepted"
                or self.ack is None or self.invite is not None or self.dialog is None):
            return  # not answered and set up: keep the leg's own handling
        tx.owner = _AnsweredInvite(self)
        if self.dialog.user is self:  # (a dialog moved to another call keeps its leg)
            self.dialog.user = None

    def _send_ack(self, ack: Request, hop: URI) -> None:
        try:
            target = self.next_hop(hop)
            self.context.transactions.send_ack(ack, target).addErrback(lambda f: None)
        except TransportError:
            pass

    def resend_ack(self) -> None:
        """The 2xx came again: send the same ACK again."""
        if self.ack is not None and self.dialog is not None:
            self._send_ack(self.ack, self.dialog.remote_target)

    def _extra_answer(self, response: Response) -> None:
        """A second 2xx from another fork: ACK it and hang it up."""
        try:
            if self.dialog is not None:
                dialog = self.dialog.fork(response)
            elif self.invite is not None:
                dialog = Dialog.from_uac(self.invite, response, self.context.contact_for(
                    self.transaction.target.transport))
            else:
                return
        except (SIPError, ValueError):
            return
        ack, hop = dialog.create_ack(self.invite_cseq)
        self._send_ack(ack, hop)
        request, hop = dialog.create_request("BYE")
        self.context.stamp_request(request)
        try:
            self.context.transactions.send_request(
                request, self.next_hop(hop), Outcome(lambda r: None, lambda e: None))
        except TransportError:
            pass

    def _prack_if_reliable(self, response: Response) -> None:
        """RFC 3262: acknowledge a reliable provisional response ourselves."""
        if "rseq" not in response.headers or self.invite is None:
            return
        dialog = self.early.get(response.to.tag or "")
        if dialog is None or not dialog.is_new_reliable_provisional(response):
            return
        try:
            prack, hop = dialog.create_prack(response)
        except (SIPError, ValueError):
            return
        self.context.stamp_request(prack)
        try:
            self.context.transactions.send_request(
                prack, self.next_hop(hop), Outcome(lambda r: None, lambda e: None))
        except TransportError:
            pass

    def cancel(self, reason: str | None = None) -> None:
        """CANCEL the INVITE (sent once a provisional response arrived)."""
        if self.cancelled or self.done or self.transaction is None:
            return
        self.cancelled = True
        self.transaction.cancel(Outcome(lambda r: None, lambda e: None), reason=reason)


class _AnsweredInvite:
    """The owner of an answered INVITE's transaction once the call is over
    (L{ClientLeg.after_call}): a retransmitted 2xx gets the same ACK again, a
    2xx of another fork is ACKed and hung up, exactly as the leg would do,
    with what the leg used for that and nothing else (not the call)."""

    __slots__ = ("ack", "context", "dialog", "flow", "invite", "invite_cseq", "transaction")

    def __init__(self, leg: ClientLeg) -> None:
        self.ack = leg.ack
        self.context = leg.context
        self.dialog = leg.dialog
        self.flow = leg.flow
        self.invite_cseq = leg.invite_cseq
        #: released with the set-up (what L{ClientLeg._extra_answer} reads)
        self.invite = None
        self.transaction = None

    # the leg's own code, on these attributes
    next_hop = Leg.next_hop
    _send_ack = ClientLeg._send_ack
    resend_ack = ClientLeg.resend_ack
    _extra_answer = ClientLeg._extra_answer

    def response_received(self, response: Response, transaction: object) -> None:
        """A 2xx in C{Accepted} (nothing else is reported there)."""
        if not 200 <= response.code < 300 or self.dialog is None:
            return
        if response.to.tag == self.dialog.remote_tag:
            self.resend_ack()  # a retransmission: our ACK was lost
        else:
            self._extra_answer(response)  # type: ignore[arg-type]

    def transaction_failed(self, transaction: object,
                           error: TransactionTimeout | TransportError) -> None:
        """Never reported in C{Accepted}."""
