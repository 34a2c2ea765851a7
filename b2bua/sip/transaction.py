"""The transaction layer (RFC 3261 section 17, RFC 6026): matching and
dispatch between the transport layer and the transaction user.

L{TransactionLayer} is the transport's L{TransportUser}.  It matches each
request to a server transaction (RFC 3261 17.2.3, with the RFC 2543
fallback for branches without the magic cookie) and each response to a
client transaction (17.1.3), with one dict lookup per message; it creates
server transactions for new requests and client transactions for the
requests the TU sends.  The machines themselves live in
L{b2bua.sip.transaction_client} and L{b2bua.sip.transaction_server}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.logger import Logger

from b2bua.sip.errors import ParseError
from b2bua.sip.headers import Via
from b2bua.sip.message import Request, Response, make_response
from b2bua.sip.randomness import random_bytes
from b2bua.sip.timers import Timers, notify
from b2bua.sip.transaction_client import (
    ClientTransaction,
    InviteClientTransaction,
    NonInviteClientTransaction,
)
from b2bua.sip.transaction_server import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
)
from b2bua.sip.uri import Params, format_host

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorTime

    from b2bua.sip.headers import Via
    from b2bua.sip.interfaces import (
        ClientTransactionUser,
        Source,
        Target,
        TransactionUser,
        Transport,
    )

__all__ = ["MAGIC_COOKIE", "TransactionLayer"]

#: The prefix of RFC 3261 branch parameters (RFC 3261 8.1.1.7).
MAGIC_COOKIE = "z9hG4bK"
_COOKIE = MAGIC_COOKIE.lower()

_log = Logger()

#: RFC 3261 17.2.3 key: (branch, sent-by host, sent-by port, method)
#: RFC 2543 key: (method, Request-URI, To tag, From tag, Call-ID, CSeq number, Via)
_ServerKey = tuple[object, ...]


def _method_key(method: str) -> str:
    """The method a request is matched under: an ACK matches its INVITE."""
    return "INVITE" if method == "ACK" else method


def _via_identity(via: Via) -> tuple[str, str, int | None, str | None]:
    """The parts of a top Via that identify an RFC 2543 transaction (the
    C{received}/C{rport} our transport adds are left out)."""
    return via.transport, via.host.lower(), via.port, via.branch


class TransactionLayer:
    """Matches messages to transactions and runs them (RFC 3261 17).

    @ivar stray_responses: responses that matched no transaction and were
        dropped (a stray 2xx to INVITE is not dropped: it goes to the TU).
    @ivar malformed_messages: messages whose Via, CSeq, Call-ID, From or To
        could not be read (requests among them were answered C{400}).
    """

    def __init__(self, clock: IReactorTime, transport: Transport, user: TransactionUser,
                 timers: Timers | None = None,
                 random: Callable[[int], bytes] = random_bytes) -> None:
        """
        @param clock: runs every transaction timer.
        @param transport: sends requests and responses.
        @param user: the TU: new requests, ACKs of 2xx, stray 2xx, failures
            of server transactions.
        @param timers: T1, T2, T4 (defaults of RFC 3261).
        @param random: source of the random part of new branches.
        """
        self._clock = clock
        self._transport = transport
        self._user = user
        self.timers = timers or Timers()
        self._random = random
        self._client: dict[tuple[str, str], ClientTransaction] = {}
        self._server: dict[_ServerKey, ServerTransaction] = {}
        #: RFC 2543 INVITE transactions by their key without the To tag
        self._server_acks: dict[_ServerKey, InviteServerTransaction] = {}
        self.stray_responses = 0
        self.malformed_messages = 0

    # --- inbound ----------------------------------------------------------

    def message_received(self, message: Request | Response, source: Source) -> None:
        """A message from the transport layer (L{TransportUser})."""
        if isinstance(message, Request):
            self._request_received(message, source)
        else:
            self._response_received(message, source)

    def _request_received(self, request: Request, source: Source) -> None:
        method = request.method
        try:
            key = self._server_key(request, _method_key(method))
            # what every transaction user reads: check it once, here
            if request.cseq.method != method:
                raise ParseError("CSeq method does not match the request method")
            _ = request.call_id, request.from_
        except ParseError as e:
            self._malformed(request, source, e.reason)
            return
        tx = self._server.get(key)
        if tx is None and method == "ACK" and len(key) > 4:
            tx = self._rfc2543_ack_match(request, key)
        if tx is not None:
            tx.receive(request)
            return
        if method == "ACK":
            notify(self._user.request_received, request, None)
            return
        self._create_server_transaction(request, source, key)

    def _server_key(self, request: Request, method: str) -> _ServerKey:
        """The table key of C{request} under C{method} (17.2.3).

        @raise ParseError: when the top Via, CSeq or To is missing or bad.
        """
        vias = request.via
        if not vias:
            raise ParseError("missing Via header")
        via = vias[0]
        branch = via.branch
        number = request.cseq.number
        to_tag = request.to.tag
        if branch is not None:
            branch = branch.lower()
            if branch.startswith(_COOKIE):
                return (branch, via.host.lower(), via.port, method)
        return (method, request.uri_text, to_tag, request.from_.tag, request.call_id,
                number, _via_identity(via))

    def _rfc2543_ack_match(self, ack: Request,
                           key: _ServerKey) -> InviteServerTransaction | None:
        """An RFC 2543 ACK matches the INVITE whose final response carried
        the ACK's To tag (17.2.3)."""
        tx = self._server_acks.get(key[:2] + key[3:])
        if tx is None or tx.last_response is None:
            return None
        try:
            tag = tx.last_response.to.tag
        except ParseError:
            return None
        return tx if tag == key[2] else None

    def _create_server_transaction(self, request: Request, source: Source,
                                   key: _ServerKey) -> None:
        invite = request.method == "INVITE"
        cls = InviteServerTransaction if invite else NonInviteServerTransaction
        tx = cls(self._clock, self._transport, self.timers, request, source, self._user,
                 self._server_terminated)
        self._server[key] = tx
        if len(key) > 4 and isinstance(tx, InviteServerTransaction):
            ack_key = key[:2] + key[3:]
            self._server_acks[ack_key] = tx
            tx.keys = (key, ack_key)
        else:
            tx.keys = (key,)
        tx.start()
        try:
            self._user.request_received(request, tx)
        except Exception:
            _log.failure("transaction user failed on {request!r}", request=request)
            if tx.last_response is None or tx.last_response.code < 200:
                tx.respond(make_response(request, 500, to_tag=self._random(8).hex()))
        last = tx.last_response
        if last is not None and last.code >= 200:
            # answered at once (a BYE...): the request only waits for Timer J
            # (or H, L) now, kept for retransmissions: compact it
            request.compact()

    def _malformed(self, request: Request, source: Source, reason: str) -> None:
        self.malformed_messages += 1
        _log.info("malformed {method} request dropped: {reason}",
                  method=request.method, reason=reason)
        if request.method == "ACK":
            return
        d = self._transport.send_response(make_response(request, 400, reason), source)
        d.addErrback(lambda f: _log.info("400 not sent: {f.value}", f=f))

    def _response_received(self, response: Response, source: Source) -> None:
        try:
            vias = response.via
            method = response.cseq.method
        except ParseError as e:
            self.malformed_messages += 1
            _log.info("malformed response dropped: {reason}", reason=e.reason)
            return
        branch = vias[0].branch if vias else None
        if branch is not None:
            tx = self._client.get((branch.lower(), method))
            if tx is not None:
                tx.receive(response)
                return
        if method == "INVITE" and 200 <= response.code < 300:
            notify(self._user.response_received, response, source)
            return
        self.stray_responses += 1
        _log.debug("stray response {response!r} dropped", response=response)

    def find_cancelled(self, cancel: Request) -> InviteServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 9.2):
        same top Via branch and sent-by (or, for RFC 2543 peers, the same
        Request-URI, tags, Call-ID, CSeq number and top Via), or C{None}
        (the TU answers C{481}).  The TU checks its C{state}: only in
        C{Proceeding} is the INVITE still open to a C{487}."""
        try:
            key = self._server_key(cancel, "INVITE")
        except ParseError:
            return None
        tx = self._server.get(key)
        return tx if isinstance(tx, InviteServerTransaction) else None

    def _server_terminated(self, tx: ServerTransaction) -> None:
        for key in tx.keys:
            if self._server.get(key) is tx:
                del self._server[key]
            if self._server_acks.get(key) is tx:
                del self._server_acks[key]

    # --- outbound ---------------------------------------------------------

    def new_branch(self) -> str:
        """A new branch parameter: the magic cookie and 96 random bits."""
        return MAGIC_COOKIE + self._random(12).hex()

    def _add_via(self, request: Request, target: Target) -> str:
        """Put our top Via on C{request}; return its branch.

        @raise TransportError: when there is no listener for the transport.
        """
        host, port = self._transport.local_address(target.transport)
        branch = self.new_branch()
        request.add_top_via(Via(target.transport, format_host(host), port,
                                Params({"branch": branch, "rport": None})))
        return branch

    def send_request(self, request: Request, target: Target,
                     owner: ClientTransactionUser) -> ClientTransaction:
        """Send C{request} in a new client transaction.

        A new top Via (our listener for C{target.transport}, a new branch,
        C{rport}) is added.  Responses and failures go to C{owner}; a send
        that fails at once is reported to it before this returns.  ACKs are
        sent with L{send_ack}, CANCELs with L{ClientTransaction.cancel}.

        @raise TransportError: when no listener serves C{target.transport}.
        @raise ValueError: for an ACK or a CANCEL.
        """
        method = request.method
        if method in ("ACK", "CANCEL"):
            raise ValueError(f"{method} is not sent with send_request")
        branch = self._add_via(request, target)
        tx: ClientTransaction
        if method == "INVITE":
            tx = InviteClientTransaction(
                self._clock, self._transport, self.timers, request, target, owner, branch,
                self._client_terminated, self._start_cancel)
        else:
            tx = NonInviteClientTransaction(
                self._clock, self._transport, self.timers, request, target, owner, branch,
                self._client_terminated)
        self._client[(branch.lower(), method)] = tx
        tx.start()
        return tx

    def _start_cancel(self, cancel: Request, target: Target,
                      owner: ClientTransactionUser) -> ClientTransaction:
        """Run a CANCEL built by an INVITE transaction (its Via is the
        INVITE's, RFC 3261 9.1)."""
        branch = cancel.via[0].branch or ""
        tx = NonInviteClientTransaction(
            self._clock, self._transport, self.timers, cancel, target, owner, branch,
            self._client_terminated)
        self._client[(branch.lower(), "CANCEL")] = tx
        tx.start()
        return tx

    def send_ack(self, ack: Request, target: Target) -> Deferred[None]:
        """Send the ACK of a 2xx (RFC 3261 13.2.2.4), outside any transaction.

        The first call adds a top Via with a new branch; calling again with
        the same ACK (for a retransmitted 2xx) re-sends it unchanged.  The
        Deferred fails with L{TransportError}; the caller handles it.
        """
        if ack.headers.get("Via") is None:
            self._add_via(ack, target)
        return self._transport.send_request(ack, target)

    def _client_terminated(self, tx: ClientTransaction) -> None:
        key = (tx.branch.lower(), tx.request.method)
        if self._client.get(key) is tx:
            del self._client[key]

    def stop(self) -> None:
        """Drop every transaction and its timers (the service stops; nothing
        more will be sent or received)."""
        for tx in [*self._client.values(), *self._server.values()]:
            tx._cancel_all_timers()
        self._client.clear()
        self._server.clear()
        self._server_acks.clear()

    # --- introspection ----------------------------------------------------

    def active_count(self) -> int:
        """How many transactions are live (client and server)."""
        return len(self._client) + len(self._server)

    def client_transactions(self) -> list[ClientTransaction]:
        """The live client transactions (for tests and introspection)."""
        return list(self._client.values())

    def server_transactions(self) -> list[ServerTransaction]:
        """The live server transactions (for tests and introspection)."""
        return list(self._server.values())
