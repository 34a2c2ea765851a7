"""A test harness for the switch and for plugins, public like C{txacme.testing}.

Everything runs in memory on one L{twisted.internet.task.Clock}; nothing
touches the global reactor or a socket:

  - L{FakeNetwork} carries the bytes one endpoint sends to the endpoint
    listening at the target address, each delivery a delayed call on the
    clock (so C{clock.advance(0)} delivers what is in flight), records every
    message (L{Delivery}) and drops the ones a test asks it to.
  - L{FakeTransport} is a L{b2bua.sip.interfaces.Transport} at one
    C{(host, port)}: it stamps Vias and routes responses like the real
    transport layer (RFC 3261 18, RFC 3581), with UDP semantics by default
    and C{"TCP"} reliable ones on request.
  - L{SwitchHarness} builds a whole switch on it: demo directory, memory
    location store, registrar, plugin manager (the built-in plugins and
    yours, no entry points), hooks, metrics, transaction layer; and
    configures the plugins (C{b2bua_configure}) with the settings you give.
  - L{Phone} is a user agent on the same stack (its own transaction layer):
    it registers, calls, rings, answers, re-INVITEs, hangs up, answering
    digest challenges and in-dialog requests by itself.

A test reads like the call it checks::

    h = SwitchHarness(plugins={"after_hours": AfterHours()})
    alice, bob = h.register("1000"), h.register("1001")
    call = alice.call("1001")
    bob.incoming[0].ring()
    bob.incoming[0].answer()
    assert call.code == 200
    call.hangup()
    h.settle()
    h.assert_idle()

Phone actions deliver what they send at once (the clock does not move)
unless they run inside C{with network.batch():}, which delivers on exit:
that is how two phones send "at the same time" (glare).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from b2bua.core.directory import DEMO_DOMAIN, DEMO_PASSWORD, Directory, demo_directory
from b2bua.core.hooks import CallHooks
from b2bua.core.leg import target_for_uri
from b2bua.core.location import MemoryLocationStore
from b2bua.core.plugins import build_plugin_manager
from b2bua.core.registrar import Registrar
from b2bua.core.services import Services
from b2bua.core.switch import CoreSettings, Switch
from b2bua.metrics import Metrics
from b2bua.sip.auth import DigestClient
from b2bua.sip.dialog import Dialog, DialogState
from b2bua.sip.errors import SIPError, TransportError
from b2bua.sip.headers import NameAddress
from b2bua.sip.interfaces import RELIABLE_TRANSPORTS, Source, Target, TransportUser
from b2bua.sip.message import Request, Response, make_response, parse_message
from b2bua.sip.offer_answer import answer_direction, explicit_direction
from b2bua.sip.sdp import parse_sdp
from b2bua.sip.timers import Timers
from b2bua.sip.transaction import TransactionLayer
from b2bua.sip.transaction_server import TwoXXRetransmitter
from b2bua.sip.transport_rules import (
    check_request,
    check_response,
    response_address,
    set_sent_by,
    stamp_via,
)
from b2bua.sip.uri import URI

__all__ = ["SETTLE", "SWITCH_ADDRESS", "T0", "Delivery", "FakeNetwork", "FakeTransport",
           "Outgoing", "Phone", "PhoneCall", "SwitchHarness", "assert_no_delayed_calls",
           "sdp_direction", "sdp_offer"]

#: Where the harness's switch listens.
SWITCH_ADDRESS = ("127.0.0.1", 5060)
#: The clock's start (a realistic epoch: some bugs hide at zero).
T0 = 1_700_000_000.0
#: Seconds after which every transaction timer of RFC 3261 has run out.
SETTLE = 64.0

Address = tuple[str, int]


def assert_no_delayed_calls(clock: Clock) -> None:
    """Fail (C{AssertionError}) when anything is still scheduled on C{clock}.

    Call it after advancing time past every timer (L{SwitchHarness.settle}).
    """
    calls = clock.getDelayedCalls()
    if calls:
        listing = "\n  ".join(repr(c) for c in calls)
        raise AssertionError(f"{len(calls)} delayed call(s) left on the clock:\n  {listing}")


def sdp_offer(host: str, port: int = 4000, direction: str = "sendrecv",
              version: int = 1) -> bytes:
    """A one-stream audio SDP (PCMU, PCMA, telephone-event) for tests."""
    return (f"v=0\r\no=- 1 {version} IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\n"
            f"t=0 0\r\nm=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            f"a={direction}\r\n").encode()


def sdp_direction(body: bytes) -> str | None:
    """The direction of the first stream of an SDP body (C{None}: no body)."""
    if not body:
        return None
    sdp = parse_sdp(body)
    for section in (*sdp.media[:1], sdp):
        direction = explicit_direction(section)
        if direction is not None:
            return direction
    return "sendrecv"


# ---- the network --------------------------------------------------------------------


@dataclass
class Delivery:
    """One message the network carried (or dropped).

    @ivar message: the message as sent (parsed again from its bytes).
    """

    at: float
    transport: str
    sender: Address
    receiver: Address
    message: Request | Response
    dropped: bool = False


class FakeNetwork:
    """In-memory wires between L{FakeTransport}s on one clock.

    @ivar deliveries: every message sent, in order, dropped ones included.
    @param latency: seconds each message takes (0: delivered on the next
        C{clock.advance}, of any amount).
    """

    def __init__(self, clock: Clock | None = None, latency: float = 0.0) -> None:
        self.clock = clock or Clock()
        self.latency = latency
        self.deliveries: list[Delivery] = []
        self._endpoints: dict[tuple[str, str, int], FakeTransport] = {}
        self._drops: list[list[Any]] = []
        self._held = 0
        self._delivering = False

    def attach(self, transport: FakeTransport) -> None:
        """Listen at C{transport}'s address (called by L{FakeTransport})."""
        for name in transport.transports:
            key = (name, transport.host, transport.port)
            if key in self._endpoints:
                raise ValueError(f"{name} {transport.host}:{transport.port} is taken")
            self._endpoints[key] = transport

    def drop(self, match: Callable[[Delivery], bool], count: int | None = 1) -> None:
        """Lose the next C{count} messages C{match} accepts (C{None}: all)."""
        self._drops.append([match, count])

    def carry(self, data: bytes, transport: str, sender: Address, receiver: Address) -> bool:
        """Send C{data}; False when a reliable transport finds no listener."""
        delivery = Delivery(self.clock.seconds(), transport, sender, receiver,
                            parse_message(data))
        self.deliveries.append(delivery)
        endpoint = self._endpoints.get((transport, *receiver))
        if endpoint is None and transport in RELIABLE_TRANSPORTS:
            delivery.dropped = True
            return False
        for rule in self._drops:
            if rule[1] != 0 and rule[0](delivery):
                delivery.dropped = True
                if rule[1] is not None:
                    rule[1] -= 1
                return True
        self.clock.callLater(self.latency, self._deliver, data, transport, sender, receiver)
        return True

    def _deliver(self, data: bytes, transport: str, sender: Address, receiver: Address) -> None:
        endpoint = self._endpoints.get((transport, *receiver))
        if endpoint is None:
            return
        self._delivering = True
        try:
            endpoint.receive(data, transport, sender)
        finally:
            self._delivering = False

    @property
    def held(self) -> bool:
        """True inside L{batch}, or while a message is being delivered."""
        return self._held > 0 or self._delivering

    def flush(self) -> None:
        """Deliver everything in flight now (and what that sends), time still."""
        if not self._delivering:
            self.clock.advance(0)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Phone actions inside do not deliver; everything goes on exit."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if not self._held:
                self.flush()

    def advance(self, seconds: float) -> None:
        """Move time forward by C{seconds}, one scheduled event at a time."""
        clock = self.clock
        end = clock.seconds() + seconds
        self.flush()
        while True:
            due = [c.getTime() for c in clock.getDelayedCalls()]
            upcoming = min(due, default=None)
            if upcoming is None or upcoming > end:
                break
            clock.advance(max(0.0, upcoming - clock.seconds()))
        clock.advance(max(0.0, end - clock.seconds()))

    def messages(self, sender: Address | None = None, receiver: Address | None = None,
                 dropped: bool = False) -> list[Request | Response]:
        """The messages sent (from C{sender}, to C{receiver}), in order;
        the dropped ones instead when C{dropped}."""
        return [d.message for d in self.deliveries
                if (sender is None or d.sender == sender) and d.dropped == dropped
                and (receiver is None or d.receiver == receiver)]

    def requests(self, method: str | None = None, sender: Address | None = None,
                 receiver: Address | None = None) -> list[Request]:
        """The requests delivered (with C{method}), in order."""
        return [m for m in self.messages(sender, receiver)
                if isinstance(m, Request) and method in (None, m.method)]

    def responses(self, code: int | None = None, method: str | None = None,
                  sender: Address | None = None,
                  receiver: Address | None = None) -> list[Response]:
        """The responses delivered (with C{code}, to C{method}), in order."""
        return [m for m in self.messages(sender, receiver)
                if isinstance(m, Response) and code in (None, m.code)
                and method in (None, m.cseq.method)]


class FakeTransport:
    """A L{b2bua.sip.interfaces.Transport} listening at C{(host, port)}.

    @ivar user: the L{TransportUser} given every message received.
    @param transports: the transports it listens on (C{"UDP"}, C{"TCP"}).
    """

    def __init__(self, network: FakeNetwork, host: str, port: int = 5060,
                 transports: tuple[str, ...] = ("UDP",)) -> None:
        self.network = network
        self.host = host
        self.port = port
        self.transports = tuple(t.upper() for t in transports)
        self.user: TransportUser | None = None
        network.attach(self)

    @property
    def address(self) -> Address:
        """Our (host, port)."""
        return (self.host, self.port)

    def local_address(self, transport: str) -> Address:
        """Our address for Via and Contact.  @raise TransportError."""
        if transport.upper() not in self.transports:
            raise TransportError(f"no {transport} listener")
        return self.address

    def send_request(self, request: Request, target: Target) -> Deferred[None]:
        """Put our sent-by in the top Via and send to C{target}."""
        transport = target.transport.upper()
        if transport not in self.transports or not request.headers.get_all("Via"):
            return fail(TransportError(f"cannot send {request.method} over {transport}"))
        set_sent_by(request, transport, self.address)
        return self._send(request.to_bytes(), transport, (target.host, target.port))

    def send_response(self, response: Response, source: Source) -> Deferred[None]:
        """Send back along the request's way (RFC 3261 18.2.2, RFC 3581)."""
        transport = source.transport.upper()
        if transport == "UDP":
            receiver = response_address(response.via[0], transport)
        else:
            receiver = source.remote
        return self._send(response.to_bytes(), transport, receiver)

    def _send(self, data: bytes, transport: str, receiver: Address) -> Deferred[None]:
        if self.network.carry(data, transport, self.address, receiver):
            return succeed(None)
        return fail(TransportError(f"connection to {transport} {receiver} refused"))

    def receive(self, data: bytes, transport: str, sender: Address) -> None:
        """Bytes from the network: parse, check, stamp, hand to the user."""
        message = parse_message(data)
        if isinstance(message, Request):
            check_request(message)
            stamp_via(message, sender)
        else:
            check_response(message)
        if self.user is not None:
            self.user.message_received(message, Source(transport, sender, self.address))


# ---- the phone -------------------------------------------------------------------------


class Outgoing:
    """A request a phone sent and what came back (a client transaction user).

    A 401/407 is answered once with the phone's credentials (a new
    transaction, CSeq + 1): L{request} is then the second request.
    """

    def __init__(self, phone: Phone, request: Request | None, target: Target | None,
                 on_response: Callable[[Response], Any] | None = None,
                 authenticate: bool = True) -> None:
        self.phone = phone
        self.request = request
        self.target = target
        self.responses: list[Response] = []
        self.failure: Exception | None = None
        self.transaction: Any = None
        self.ack: Request | None = None
        self._on_response = on_response
        self._authenticate = authenticate

    def send(self) -> Outgoing:
        """Send L{request} in a new client transaction."""
        assert self.request is not None and self.target is not None
        self.transaction = self.phone.transactions.send_request(self.request, self.target,
                                                                self)
        return self

    @property
    def final(self) -> Response | None:
        """The final response to L{request} (the last one sent), if any."""
        number = self.request.cseq.number if self.request is not None else None
        return next((r for r in reversed(self.responses) if r.code >= 200
                     and number in (None, r.cseq.number)), None)

    @property
    def code(self) -> int | None:
        """The code of L{final} (C{None} before it)."""
        final = self.final
        return None if final is None else final.code

    def response_received(self, response: Response, transaction: object) -> None:
        """Record; answer a challenge once; tell the owner."""
        self.responses.append(response)
        self.phone.responses.append(response)
        if response.code in (401, 407) and self._authenticate and self.request is not None:
            self._authenticate = False
            self._retry(response)
            return
        if self._on_response is not None:
            self._on_response(response)

    def transaction_failed(self, transaction: object, error: Exception) -> None:
        """Record a timeout or transport failure."""
        self.failure = error

    def _retry(self, challenge: Response) -> None:
        assert self.request is not None
        old = self.request
        header = "WWW-Authenticate" if challenge.code == 401 else "Proxy-Authenticate"
        credentials = self.phone.digest.authorize_strongest(
            old.method, old.uri_text, challenge.headers.get_lines(header), old.body)
        skip = ("via", "cseq", "authorization", "proxy-authorization", "content-length")
        headers = [(n, v) for n, v in old.headers if n.lower() not in skip]
        headers.append(("CSeq", f"{old.cseq.number + 1} {old.method}"))
        headers.append(("Authorization" if challenge.code == 401 else "Proxy-Authorization",
                        credentials))
        self.request = Request(old.method, old.uri_text, headers, old.body)
        self.phone.cseq = max(self.phone.cseq, old.cseq.number + 1)
        self.send()


class PhoneCall:
    """One call of a L{Phone}, either way (C{role} C{"uac"} or C{"uas"}).

    @ivar state: C{calling}/C{incoming}, C{early}, C{confirmed}, C{terminated}.
    @ivar requests: requests received in this call (ACKs included).
    @ivar sent: L{Outgoing} in-dialog requests we sent (BYE, re-INVITE...).
    @ivar local_sdp: the last SDP we sent; C{remote_sdp} the last received.
    @ivar cancelled: the peer CANCELled this incoming call.
    """

    def __init__(self, phone: Phone, role: str) -> None:
        self.phone = phone
        self.role = role
        self.state = "calling" if role == "uac" else "incoming"
        self.dialog: Dialog | None = None
        self.outgoing: Outgoing | None = None
        self.received_invite: Request | None = None
        self.transaction: Any = None
        self.final_sent: Response | None = None
        self.requests: list[Request] = []
        self.sent: list[Outgoing] = []
        self.local_sdp = b""
        self.remote_sdp = b""
        self.cancelled = False
        self.cancel_outgoing: Outgoing | None = None
        self.local_tag = phone.new_id()
        self._ack: Request | None = None
        self._rseq = 0
        self._retransmitter: TwoXXRetransmitter | None = None
        self._offering: Outgoing | None = None

    def __repr__(self) -> str:
        return f"<PhoneCall {self.phone.user} {self.role} {self.state}>"

    @property
    def invite(self) -> Request:
        """The (last) INVITE that set this call up."""
        request = self.received_invite or (self.outgoing and self.outgoing.request)
        assert request is not None
        return request

    @property
    def responses(self) -> list[Response]:
        """Responses to our INVITE (a caller's call)."""
        return self.outgoing.responses if self.outgoing is not None else []

    @property
    def code(self) -> int | None:
        """The INVITE's final code (received, or sent when we are the callee)."""
        if self.role == "uas":
            return None if self.final_sent is None else self.final_sent.code
        return self.outgoing.code if self.outgoing is not None else None

    # -- caller side ---------------------------------------------------------------

    def _invite_response(self, response: Response) -> None:
        code, tag = response.code, response.to.tag
        phone = self.phone
        if code < 200:
            if code > 100 and tag and self.dialog is None:
                self.dialog = Dialog.from_uac(self.invite, response, phone.contact)
                self.state = "early"
            if code > 100 and response.body:
                self.remote_sdp = response.body
            dialog = self.dialog
            if ("rseq" in response.headers and phone.prack and dialog is not None
                    and dialog.remote_tag == tag
                    and dialog.is_new_reliable_provisional(response)):
                prack, hop = dialog.create_prack(response)
                self.sent.append(phone.send(prack, target_for_uri(hop)))
            return
        if code >= 300:
            self.state = "terminated"
            if self.dialog is not None:
                self.dialog.terminate()
            return
        if self._ack is not None:
            if self.dialog is not None and tag == self.dialog.remote_tag:
                phone.send_ack(self._ack)
            else:  # another fork answered too: ACK and BYE it (RFC 3261 13.2.2.4)
                extra = Dialog.from_uac(self.invite, response, phone.contact)
                ack, hop = extra.create_ack(self.invite.cseq.number)
                phone.send_ack(ack)
                bye, hop = extra.create_request("BYE")
                phone.send(bye, target_for_uri(hop))
            return
        if self.dialog is not None and self.dialog.remote_tag == tag:
            if self.dialog.state is DialogState.EARLY:
                self.dialog.confirm(response)
        else:
            self.dialog = Dialog.from_uac(self.invite, response, phone.contact)
        body = b""
        if response.body:
            self.remote_sdp = response.body
            if not self.invite.body:
                body = self.local_sdp = phone.answer_for(response.body)
        self._ack, _ = self.dialog.create_ack(self.invite.cseq.number, body,
                                              "application/sdp" if body else None)
        phone.send_ack(self._ack)
        self.state = "confirmed"

    def cancel(self) -> Outgoing:
        """CANCEL our INVITE (sent at once, or on the first provisional)."""
        assert self.outgoing is not None and self.outgoing.transaction is not None
        owner = Outgoing(self.phone, None, None)
        owner.transaction = self.outgoing.transaction.cancel(owner)
        self.cancel_outgoing = owner
        self.phone.flush()
        return owner

    # -- callee side -----------------------------------------------------------------

    def _respond_invite(self, code: int, reason: str | None, headers: list[tuple[str, str]],
                        body: bytes = b"") -> Response:
        if body:
            headers.append(("Content-Type", "application/sdp"))
        response = make_response(self.invite, code, reason, to_tag=self.local_tag,
                                 headers=headers, body=body)
        self.transaction.respond(response)
        if code >= 200:
            self.final_sent = response
        return response

    def ring(self, code: int = 180, sdp: bool = False, reliable: bool = False,
             headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Send a provisional response (with an SDP answer, reliably...)."""
        extra = [("Contact", str(self.phone.contact)), *headers]
        if reliable:
            self._rseq += 1
            extra += [("Require", "100rel"), ("RSeq", str(self._rseq))]
        body = self._answer_body() if sdp else b""
        if self.dialog is None:
            self.dialog = Dialog.from_uas(self.invite, self.local_tag, self.phone.contact)
        self._respond_invite(code, None, extra, body)
        self.state = "early"
        self.phone.flush()

    def _answer_body(self, direction: str | None = None) -> bytes:
        if self.local_sdp and direction is None:
            return self.local_sdp  # the answer an early response already gave
        offer = self.invite.body
        body = self.phone.answer_for(offer, direction) if offer else self.phone.offer(direction)
        self.local_sdp = body
        return body

    def answer(self, sdp: bool = True, direction: str | None = None,
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Send 200 (an SDP answer, or an offer for an INVITE without one)
        and re-send it until the ACK."""
        body = self._answer_body(direction) if sdp else b""
        if self.dialog is None:
            self.dialog = Dialog.from_uas(self.invite, self.local_tag, self.phone.contact,
                                          confirmed=True)
        else:
            self.dialog.confirm()
        response = self._respond_invite(200, None,
                                        [("Contact", str(self.phone.contact)), *headers], body)
        self._retransmit(self.transaction, response)
        self.state = "confirmed"
        self.phone.flush()

    def reject(self, code: int, reason: str | None = None,
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Send a final error response to the INVITE."""
        self._respond_invite(code, reason, list(headers))
        self.state = "terminated"
        if self.dialog is not None:
            self.dialog.terminate()
        self.phone.flush()

    def busy(self) -> None:
        """486 Busy Here."""
        self.reject(486)

    def redirect(self, *contacts: str, code: int = 302) -> None:
        """A 3xx sending the caller to C{contacts}."""
        self.reject(code, headers=tuple(("Contact", c) for c in contacts))

    def _retransmit(self, transaction: Any, response: Response) -> None:
        if self._retransmitter is not None:
            self._retransmitter.stop()
        phone = self.phone
        self._retransmitter = TwoXXRetransmitter(
            phone.clock, lambda: transaction.respond(response), phone.timers)
        self._retransmitter.start()

    # -- in the dialog -----------------------------------------------------------------

    def request(self, method: str, body: bytes = b"", content_type: str | None = None,
                headers: list[tuple[str, str]] | None = None,
                on_response: Callable[[Response], Any] | None = None,
                flush: bool = True) -> Outgoing:
        """Send any in-dialog request; its L{Outgoing} is returned (and kept
        in L{sent})."""
        assert self.dialog is not None, "no dialog yet"
        request, hop = self.dialog.create_request(method, body, content_type, headers)
        outgoing = self.phone.send(request, target_for_uri(hop), on_response)
        self.sent.append(outgoing)
        if flush:
            self.phone.flush()
        return outgoing

    def hangup(self, reason: str | None = None) -> Outgoing:
        """BYE (C{reason}: a Reason header value); a caller CANCELs before
        the answer."""
        if self.state != "confirmed" and self.role == "uac":
            return self.cancel()
        assert self.state == "confirmed", "a callee rejects before it answers"
        self.state = "terminated"
        outgoing = self.request("BYE", headers=[("Reason", reason)] if reason else None)
        assert self.dialog is not None
        self.dialog.terminate()
        return outgoing

    def reinvite(self, direction: str | None = "sendrecv") -> Outgoing:
        """A re-INVITE offering C{direction} (C{None}: no SDP, the offer
        comes in the 2xx and our answer in the ACK)."""
        body = self.local_sdp = self.phone.offer(direction) if direction else b""
        request_body = body if direction else b""
        holder: list[Outgoing] = []
        outgoing = self.request("INVITE", request_body,
                                "application/sdp" if request_body else None,
                                on_response=lambda r: self._offer_answered(holder[0], r),
                                flush=False)
        holder.append(outgoing)
        self._offering = outgoing
        self.phone.flush()
        return outgoing

    def update(self, direction: str = "sendrecv") -> Outgoing:
        """An UPDATE offering C{direction}."""
        body = self.local_sdp = self.phone.offer(direction)
        holder: list[Outgoing] = []
        outgoing = self.request("UPDATE", body, "application/sdp",
                                on_response=lambda r: self._offer_answered(holder[0], r),
                                flush=False)
        holder.append(outgoing)
        self.phone.flush()
        return outgoing

    def info(self, body: bytes = b"Signal=5\r\nDuration=160\r\n",
             content_type: str = "application/dtmf-relay") -> Outgoing:
        """An INFO (a DTMF digit by default)."""
        return self.request("INFO", body, content_type)

    def _offer_answered(self, outgoing: Outgoing, response: Response) -> None:
        if response.code < 200:
            return
        if self._offering is outgoing:
            self._offering = None
        if response.code >= 300:
            return
        if response.body:
            self.remote_sdp = response.body
        request = outgoing.request
        if request is None or request.method != "INVITE" or self.dialog is None:
            return
        if outgoing.ack is None:
            body = b""
            if not request.body and response.body:
                body = self.local_sdp = self.phone.answer_for(response.body)
            outgoing.ack, _ = self.dialog.create_ack(request.cseq.number, body,
                                                     "application/sdp" if body else None)
        self.phone.send_ack(outgoing.ack)

    def in_dialog(self, request: Request, transaction: Any) -> None:
        """An in-dialog request for this call (called by the phone)."""
        self.requests.append(request)
        method = request.method
        dialog = self.dialog
        try:
            if dialog is None:
                raise SIPError(481, "Call/Transaction Does Not Exist")
            dialog.receive_request(request)
        except SIPError as error:
            self._reply(transaction, request, error.code, error.reason)
            return
        code = self.phone.answers.get(method, 200)
        if method == "BYE":
            self.state = "terminated"
            dialog.terminate()
            self._reply(transaction, request, 200)
        elif code >= 300:
            self._reply(transaction, request, code)
        elif method == "INVITE" and self._offering is not None:
            self._reply(transaction, request, 491, headers=[("Retry-After", "1")])
        elif method in ("INVITE", "UPDATE"):
            body = b""
            if request.body:
                self.remote_sdp = request.body
                body = self.local_sdp = self.phone.answer_for(request.body)
            elif method == "INVITE":
                body = self.local_sdp = self.phone.offer()
            self._reply(transaction, request, 200, body=body)
        else:
            self._reply(transaction, request, code)

    def _reply(self, transaction: Any, request: Request, code: int, reason: str | None = None,
               headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        extra = list(headers or ())
        if body:
            extra.append(("Content-Type", "application/sdp"))
        invite_2xx = request.method == "INVITE" and 200 <= code < 300
        if invite_2xx:
            extra.append(("Contact", str(self.phone.contact)))
        response = make_response(request, code, reason, headers=extra, body=body)
        transaction.respond(response)
        if invite_2xx:
            self._retransmit(transaction, response)

    def ack_received(self, ack: Request) -> None:
        """The ACK of a 2xx we sent (carrying the answer to our offer, maybe)."""
        self.requests.append(ack)
        if self._retransmitter is not None:
            self._retransmitter.ack_received()
            self._retransmitter = None
        if ack.body:
            self.remote_sdp = ack.body


class Phone:
    """A SIP phone for tests, on the switch's own stack.

    @ivar calls: every call, both ways, in order; C{incoming} the callee ones.
    @ivar requests: every request received; C{responses} every response.
    @ivar answers: final code per method for in-dialog requests but BYE
        (default 200; INVITE and UPDATE are answered with SDP unless their
        code is an error): C{phone.answers["INFO"] = 469}.
    @ivar on_incoming: called with each new incoming L{PhoneCall}.
    @ivar prack: PRACK reliable provisional responses (RFC 3262).
    """

    def __init__(self, network: FakeNetwork, user: str, host: str, port: int = 5060,
                 password: str | None = DEMO_PASSWORD, domain: str = DEMO_DOMAIN,
                 transport: str = "UDP", proxy: Address = SWITCH_ADDRESS,
                 timers: Timers | None = None, seed: int = 0) -> None:
        self.network = network
        self.clock = network.clock
        self.user = user
        self.domain = domain
        self.transport_name = transport.upper()
        self.timers = timers or Timers()
        self._random = random.Random(f"{seed}/{user}/{host}:{port}")
        self.transport = FakeTransport(network, host, port, (self.transport_name,))
        self.transactions = TransactionLayer(self.clock, self.transport, self, self.timers,
                                             random=self._random.randbytes)
        self.transport.user = self.transactions
        self.proxy = Target(self.transport_name, *proxy)
        self.digest = DigestClient(user, password or "", random_bytes=self._random.randbytes)
        params = {} if self.transport_name == "UDP" else {"transport": transport.lower()}
        self.contact = NameAddress(URI("sip", user, host, port, params))
        self.aor = f"sip:{user}@{domain}"
        self.call_id = f"{self.new_id()}@{host}"
        self.cseq = 0
        self.calls: list[PhoneCall] = []
        self.incoming: list[PhoneCall] = []
        self.requests: list[Request] = []
        self.responses: list[Response] = []
        self.answers: dict[str, int] = {}
        self.on_incoming: Callable[[PhoneCall], Any] | None = None
        self.prack = True
        self._sdp_version = 0

    def __repr__(self) -> str:
        return f"<Phone {self.user} at {self.address}>"

    @property
    def address(self) -> Address:
        """Where the phone listens."""
        return self.transport.address

    def new_id(self) -> str:
        """A fresh tag or Call-ID part."""
        return self._random.randbytes(6).hex()

    def flush(self) -> None:
        """Deliver what is in flight, unless in a L{FakeNetwork.batch}."""
        if not self.network.held:
            self.network.flush()

    def offer(self, direction: str | None = None) -> bytes:
        """A new SDP offer from this phone."""
        self._sdp_version += 1
        return sdp_offer(self.transport.host, 4000 + self.transport.port % 1000,
                         direction or "sendrecv", self._sdp_version)

    def answer_for(self, offer: bytes, direction: str | None = None) -> bytes:
        """The SDP answer to C{offer} (RFC 3264 direction rules)."""
        wanted = direction or answer_direction(sdp_direction(offer) or "sendrecv")
        return self.offer(wanted)

    # -- sending ---------------------------------------------------------------------

    def send(self, request: Request, target: Target | None = None,
             on_response: Callable[[Response], Any] | None = None,
             authenticate: bool = True) -> Outgoing:
        """Send any request (to the switch by default) in a new transaction."""
        outgoing = Outgoing(self, request, target or self.proxy, on_response, authenticate)
        return outgoing.send()

    def send_ack(self, ack: Request) -> None:
        """Send (or re-send) the ACK of a 2xx."""
        hop = ack.route[0].uri if ack.headers.get("Route") else ack.uri
        self.transactions.send_ack(ack, target_for_uri(hop))

    def _headers(self, to: str, method: str, tag: str, call_id: str,
                 extra: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, str]]:
        self.cseq += 1
        fields = [("Max-Forwards", "70"), ("From", f"<{self.aor}>;tag={tag}"),
                  ("To", f"<{to}>"), ("Call-ID", call_id), ("CSeq", f"{self.cseq} {method}"),
                  ("Contact", str(self.contact)), ("User-Agent", f"test-phone-{self.user}")]
        if method == "INVITE":
            fields += [("Allow", "INVITE, ACK, CANCEL, BYE, UPDATE, INFO, PRACK"),
                       ("Supported", "100rel, timer")]
        replaced = {name.lower() for name, _ in extra}
        return [f for f in fields if f[0].lower() not in replaced] + list(extra)

    def register(self, expires: int | None = None, authenticate: bool = True) -> Outgoing:
        """REGISTER our contact for C{user@domain} (answering the 401)."""
        headers = self._headers(self.aor, "REGISTER", self.new_id(), self.call_id)
        if expires is not None:
            headers.append(("Expires", str(expires)))
        outgoing = self.send(Request("REGISTER", f"sip:{self.domain}", headers),
                             authenticate=authenticate)
        self.flush()
        return outgoing

    def call(self, to: str, sdp: bool = True, headers: tuple[tuple[str, str], ...] = (),
             authenticate: bool = True) -> PhoneCall:
        """INVITE C{to} (a user of our domain, or a whole SIP URI),
        answering the 407; C{headers} are added (or replace ours)."""
        uri = to if ":" in to else f"sip:{to}@{self.domain}"
        call = PhoneCall(self, "uac")
        fields = self._headers(uri, "INVITE", call.local_tag,
                               f"{self.new_id()}@{self.transport.host}", headers)
        body = b""
        if sdp:
            body = call.local_sdp = self.offer()
            fields.append(("Content-Type", "application/sdp"))
        call.outgoing = Outgoing(self, Request("INVITE", uri, fields, body), self.proxy,
                                 call._invite_response, authenticate)
        self.calls.append(call)
        call.outgoing.send()
        self.flush()
        return call

    # -- TransactionUser ---------------------------------------------------------------

    def _find(self, call_id: str, local_tag: str | None) -> PhoneCall | None:
        for call in self.calls:
            dialog = call.dialog
            if call.invite.call_id == call_id and call.local_tag == local_tag:
                return call
            if dialog is not None and dialog.call_id == call_id and dialog.local_tag == local_tag:
                return call
        return None

    def request_received(self, request: Request, transaction: Any) -> None:
        """Every request: incoming calls, CANCEL, in-dialog requests, ACKs."""
        self.requests.append(request)
        method = request.method
        if transaction is None:
            call = self._find(request.call_id, request.to.tag)
            if call is not None and method == "ACK":
                call.ack_received(request)
            return
        if request.to.tag:
            call = self._find(request.call_id, request.to.tag)
            if call is None:
                transaction.respond(make_response(request, 481, to_tag=self.new_id()))
            else:
                call.in_dialog(request, transaction)
            return
        if method == "INVITE":
            call = PhoneCall(self, "uas")
            call.received_invite, call.transaction = request, transaction
            self.calls.append(call)
            self.incoming.append(call)
            if self.on_incoming is not None:
                self.on_incoming(call)
        elif method == "CANCEL":
            self._cancelled(request, transaction)
        else:
            code = 200 if method == "OPTIONS" else 405
            transaction.respond(make_response(request, code, to_tag=self.new_id()))

    def _cancelled(self, cancel: Request, transaction: Any) -> None:
        invite_tx = self.transactions.find_cancelled(cancel)
        call = next((c for c in self.incoming if c.transaction is invite_tx), None)
        if invite_tx is None or call is None:
            transaction.respond(make_response(cancel, 481, to_tag=self.new_id()))
            return
        transaction.respond(make_response(cancel, 200, to_tag=call.local_tag))
        call.cancelled = True
        if call.final_sent is None:
            call.reject(487)

    def response_received(self, response: Response, source: Source) -> None:
        """A 2xx retransmitted after its transaction ended: ACK it again."""
        self.responses.append(response)
        call = self._find(response.call_id, response.from_.tag)
        if call is not None and call._ack is not None:
            self.send_ack(call._ack)

    def server_transaction_failed(self, transaction: Any, error: Exception) -> None:
        """Nothing to do: the test sees the missing ACK in the records."""


# ---- the switch --------------------------------------------------------------------------


class SwitchHarness:
    """A whole switch on a L{FakeNetwork}, with its plugins configured.

    @param plugins: your plugins by name, registered after the built-in
        ones (so pluggy asks them first).
    @param builtins: also register the built-in plugins (local routing).
    @param settings: the C{[plugins]} settings handed to C{b2bua_configure}.
    @param core: the core's settings; C{hook_timeout} bounds lazy decisions.
    @ivar services: what the plugins were configured with.
    """

    def __init__(self, plugins: Mapping[str, object] | None = None, *, builtins: bool = True,
                 settings: Mapping[str, Any] | None = None, core: CoreSettings | None = None,
                 clock: Clock | None = None, hook_timeout: float = 5.0,
                 disabled: tuple[str, ...] = (), seed: int = 0,
                 directory: Directory | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        if clock is None:
            clock = Clock()
            clock.advance(T0)
        self.clock = clock
        self.seed = seed
        self.network = FakeNetwork(clock)
        self.metrics = Metrics()
        self.directory = directory if directory is not None else demo_directory()
        self.location = MemoryLocationStore(clock)
        self.registrar = Registrar(self.location, clock)
        everything: dict[str, object] = {}
        if builtins:
            from b2bua.service import builtin_plugins

            everything.update(builtin_plugins())
        everything.update(plugins or {})
        self.pm = build_plugin_manager(everything, disabled, load_entry_points=False)
        self.hooks = CallHooks(self.pm, clock, hook_timeout, self.metrics.plugin_failed)
        rng = random.Random(f"switch/{seed}")
        self.switch = Switch(clock, self.directory, self.registrar, self.hooks, self.metrics,
                             b"harness secret", core, random=rng.randbytes)
        self.transport = FakeTransport(self.network, *SWITCH_ADDRESS, ("UDP", "TCP"))
        self.transactions = TransactionLayer(clock, self.transport, self.switch,
                                             random=rng.randbytes)
        self.transport.user = self.transactions
        self.switch.attach(self.transactions, self.transport)
        self.services = Services(clock, self.directory, self.registrar, self.location,
                                 self.metrics, extra={
                                     "send_request": self.transactions.send_request,
                                     "local_address": self.transport.local_address,
                                     "user_agent": "b2bua harness", **(extra or {})})
        self.pm.hook.b2bua_configure.call_historic(
            kwargs={"services": self.services, "settings": dict(settings or {})})
        self._hosts = 1

    @property
    def address(self) -> Address:
        """Where the switch listens."""
        return SWITCH_ADDRESS

    def phone(self, user: str, host: str | None = None, **kwargs: Any) -> Phone:
        """A new phone (at the next free 127.0.0.N by default)."""
        if host is None:
            self._hosts += 1
            host = f"127.0.0.{self._hosts}"
        return Phone(self.network, user, host, seed=self.seed, **kwargs)

    def register(self, user: str, **kwargs: Any) -> Phone:
        """A new phone, registered (asserting the 200)."""
        phone = self.phone(user, **kwargs)
        outgoing = phone.register()
        if outgoing.code != 200:
            raise AssertionError(f"REGISTER of {user} got {outgoing.code}")
        return phone

    def flush(self) -> None:
        """Deliver what is in flight."""
        self.network.flush()

    def advance(self, seconds: float) -> None:
        """Let C{seconds} pass (every timer on the way fires in order)."""
        self.network.advance(seconds)

    def settle(self, seconds: float = SETTLE) -> None:
        """Let every transaction end (64 s: Timers B, D, F, H, J, L, M...)."""
        self.network.advance(seconds)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the switch's registry (0 when absent)."""
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def assert_idle(self) -> None:
        """Fail unless no call, dialog, transaction or timer is left."""
        problems = []
        if self.switch.calls:
            problems.append(f"calls {list(self.switch.calls.values())}")
        if len(self.switch.dialogs):
            problems.append(f"dialogs {list(self.switch.dialogs)}")
        if self.transactions.active_count():
            problems.append(f"transactions {self.transactions.client_transactions()} "
                            f"{self.transactions.server_transactions()}")
        if self.metric("b2bua_calls_active"):
            problems.append("b2bua_calls_active is not 0")
        if problems:
            raise AssertionError("switch not idle: " + "; ".join(problems))
        assert_no_delayed_calls(self.clock)

    def stop(self) -> None:
        """Unconfigure the plugins and drop every transaction."""
        self.hooks.unconfigure()
        self.transactions.stop()
