"""The switch: the transaction user that turns SIP requests into calls.

L{Switch.request_received} is the one place requests enter the core: it
validates them, answers what is not a call (OPTIONS, REGISTER through the
registrar, CANCEL), authenticates callers (every INVITE and REGISTER from a
source no plugin trusts is challenged; unknown users and wrong passwords
look the same), hands in-dialog requests to their leg, and creates a
L{Call} for every new INVITE.  It is also the context calls and legs use:
clock, transaction layer, hooks, tags, Contact, dialog registry, metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from b2bua.core.call import Call, CallRecord
from b2bua.core.decisions import Hunt, StopHunting
from b2bua.core.session_timer import MIN_SE, parse_session_expires
from b2bua.sip.auth import DigestServer
from b2bua.sip.dialog import Dialog, DialogTable
from b2bua.sip.errors import SIPError
from b2bua.sip.headers import NameAddress
from b2bua.sip.interfaces import Source, Target
from b2bua.sip.message import KNOWN_METHODS, Request, Response, make_response
from b2bua.sip.randomness import random_bytes
from b2bua.sip.uri import URI, format_host
from b2bua.sip.validation import validate_request

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from b2bua.core.decisions import Destination
    from b2bua.core.directory import Directory
    from b2bua.core.hooks import CallHooks
    from b2bua.core.leg import ClientLeg, Leg
    from b2bua.core.registrar import Registrar
    from b2bua.metrics import Metrics

__all__ = ["ALLOW", "SUPPORTED", "CoreSettings", "Switch"]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO, REFER, NOTIFY, MESSAGE, PRACK"
SUPPORTED = ("timer", "path", "outbound", "replaces")
_OUTSIDE_DIALOG_ONLY = frozenset({"INVITE", "REGISTER", "OPTIONS", "CANCEL", "MESSAGE"})
#: C{b2bua_sip_rejected_requests_total} reasons of validation failures
_REJECTED = {400: "malformed", 416: "unsupported_uri_scheme", 420: "bad_extension",
             483: "too_many_hops"}


@dataclass(frozen=True)
class CoreSettings:
    """The C{[core]} knobs.

    @ivar no_answer_timeout: seconds a route step rings by default.
    @ivar session_expires: session interval asked of callees (0: none).
    @ivar follow_redirects: try the Contacts of a 3xx as a new step.
    @ivar drain_timeout: seconds a drain waits for calls before ending them.
    @ivar transfer: act on REFER (blind transfer by the switch,
        C{docs/transfer.md}); off, a REFER gets C{403}.
    @ivar max_transfers: REFERs accepted in a call and the transfer calls
        it led to, after which a REFER gets C{403} (0: none accepted).
    """

    no_answer_timeout: float = 180.0
    session_expires: int = 1800
    follow_redirects: bool = True
    drain_timeout: float = 60.0
    user_agent: str = "b2bua"
    transfer: bool = True
    max_transfers: int = 3


class Switch:
    """The B2BUA core's transaction user and the context of its calls."""

    log = Logger()

    def __init__(self, clock: IReactorTime, directory: Directory, registrar: Registrar,
                 hooks: CallHooks, metrics: Metrics, auth_secret: bytes,
                 settings: CoreSettings | None = None,
                 random: Callable[[int], bytes] = random_bytes,
                 digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
                 digest_check_uri: bool = True) -> None:
        self.clock = clock
        self.directory = directory
        self.registrar = registrar
        self.hooks = hooks
        self.metrics = metrics
        self.settings = settings or CoreSettings()
        self._secret = auth_secret
        self._algorithms = digest_algorithms
        self._check_uri = digest_check_uri
        self._random = random
        self._digests: dict[str, DigestServer] = {}
        self.transactions: Any = None
        self.transport: Any = None
        self.calls: dict[str, Call] = {}
        self._calls_by_tx: dict[int, Call] = {}
        self._merged: dict[tuple[str, str, int], int] = {}
        #: every dialog of a call, its leg in C{Dialog.user}
        self.dialogs = DialogTable()
        self.draining = False
        self._contacts: dict[tuple[str, str, int], NameAddress] = {}

    def attach(self, transactions: Any, transport: Any) -> None:
        """Wire the transaction layer (to send) and the transport (for our
        addresses); done once at start-up."""
        self.transactions = transactions
        self.transport = transport

    # -- context for calls and legs -------------------------------------------------

    def new_tag(self) -> str:
        """A fresh tag (From/To)."""
        return self._random(6).hex()

    def contact_for(self, transport: str) -> NameAddress:
        """Our Contact on the listener of C{transport} (one shared object per
        listener: read it, never change it)."""
        host, port = self.transport.local_address(transport)
        key = (transport.upper(), host, port)
        contact = self._contacts.get(key)
        if contact is None:
            params = {"transport": transport.lower()} if transport.upper() != "UDP" else {}
            contact = NameAddress(URI("sip", "b2bua", format_host(host), port, params))
            self._contacts[key] = contact
        return contact

    def stamp_request(self, request: Request) -> None:
        """Add our User-Agent to a request we originate."""
        if "user-agent" not in request.headers:
            request.headers.add("User-Agent", self.settings.user_agent)

    def stamp_response(self, response: Response) -> None:
        """Add our Server header and count the response."""
        if "server" not in response.headers:
            response.headers.add("Server", self.settings.user_agent)
        self.metrics.response_sent(response.code)

    def register_dialog(self, dialog: Dialog, leg: Leg) -> None:
        """Find C{leg} again from requests in C{dialog}."""
        if dialog.id in self.dialogs:
            return
        dialog.user = leg
        self.dialogs.add(dialog)

    def unregister_dialog(self, dialog: Dialog) -> None:
        """Forget C{dialog}."""
        self.dialogs.remove(dialog.id)

    def build_invite(self, call: Call, leg: ClientLeg, destination: Destination,
                     target: Target) -> Request:
        """The B-leg INVITE: new Call-ID and tags, our Contact (topology
        hiding), the caller's identity and SDP (through the SDP hook)."""
        a = call.a_leg.request
        from_ = NameAddress(call.caller.uri.copy(), call.caller.display_name,
                            {"tag": self.new_tag()})
        headers = [
            ("Max-Forwards", str(max(0, (a.max_forwards or 70) - 1))),
            ("From", str(from_)),
            ("To", str(NameAddress(destination.uri.copy()))),
            ("Call-ID", f"{self._random(10).hex()}@b2bua"),
            ("CSeq", "1 INVITE"),
            ("Contact", str(self.contact_for(target.transport))),
            ("Allow", ALLOW),
            ("Supported", "timer, 100rel, replaces"),
        ]
        for value in destination.route:
            headers.append(("Route", value))
        if self.settings.session_expires:
            headers.append(("Session-Expires", str(self.settings.session_expires)))
            headers.append(("Min-SE", str(MIN_SE)))
        headers.extend(destination.headers)
        body, content_type = call._rewritten_body(a, leg, "offer", wait=False)
        if body and content_type:
            headers.append(("Content-Type", content_type))
        # the Request-URI as text: parsed only if a plugin reads it
        request = Request("INVITE", str(destination.uri), headers, body)
        self.stamp_request(request)
        return request

    def answer_headers(self, call: Call) -> list[tuple[str, str]]:
        """Headers of the 2xx to the caller: Allow, Supported, session timer."""
        headers = [("Allow", ALLOW), ("Supported", ", ".join(SUPPORTED))]
        asked = parse_session_expires(call.a_leg.request)
        if asked is not None:
            interval, refresher = asked
            headers.append(("Session-Expires",
                            f"{max(interval, MIN_SE)};refresher={refresher or 'uac'}"))
            headers.append(("Require", "timer"))
        return headers

    def default_failover(self, response: Response | None) -> Hunt | StopHunting:
        """The built-in hunt policy: stop on 6xx, hunt on anything else."""
        if response is not None and response.code >= 600:
            return StopHunting(response.code, response.reason, source="core")
        return Hunt(source="core")

    def call_answered(self, call: Call, setup_seconds: float) -> None:
        """Count the answer; a CANCEL or a merged copy of the INVITE no
        longer concerns the call (its leg lets the INVITE go once ACKed)."""
        self.metrics.observe_call_setup(setup_seconds)
        self._forget_invite(call)

    def _forget_invite(self, call: Call) -> None:
        """Drop the call's INVITE from the CANCEL and merged-request tables
        (what its leg still keeps of it: doing it twice is harmless)."""
        leg = call.a_leg
        if leg.transaction is not None:
            self._calls_by_tx.pop(id(leg.transaction), None)
        a = leg.request
        if a is not None:
            self._merged.pop((a.call_id, a.from_.tag or "", a.cseq.number), None)

    def call_ended(self, call: Call, record: CallRecord, cancelled: bool) -> None:
        """Forget the call and count it."""
        self.calls.pop(call.id, None)
        self._forget_invite(call)
        for leg in (call.a_leg, *call.b_legs):
            for dialog in [leg.dialog, *getattr(leg, "early", {}).values()]:
                if dialog is not None:
                    self.unregister_dialog(dialog)
        for leg in call.b_legs:
            leg.after_call()  # lingering transactions let go of the call
        self.metrics.call_ended(record.code, cancelled=cancelled)

    # -- TransactionUser ------------------------------------------------------------

    def request_received(self, request: Request, transaction: Any) -> None:
        """Every new request (and every ACK of a 2xx, with no transaction)."""
        method = request.method
        self.metrics.request_received(method)
        if transaction is None:
            leg = self._leg_for(request)
            if leg is not None and method == "ACK":
                leg.ack_received(request)
            return
        if method == "ACK":
            return
        try:
            validate_request(request, supported_extensions=SUPPORTED,
                             check_max_forwards=method != "OPTIONS")
        except SIPError as error:
            self.metrics.request_rejected(_REJECTED.get(error.code, "malformed"))
            self._respond(transaction, request, error.code, error.reason, error.headers)
            return
        if request.to.tag:
            self._in_dialog(request, transaction)
            return
        if method == "INVITE":
            self._invite(request, transaction)
        elif method == "REGISTER":
            self._register(request, transaction)
        elif method == "CANCEL":
            self._cancel(request, transaction)
        elif method == "OPTIONS":
            self._respond(transaction, request, 200, headers=[
                ("Allow", ALLOW), ("Accept", "application/sdp"),
                ("Supported", ", ".join(SUPPORTED))])
        elif method in KNOWN_METHODS:
            self._respond(transaction, request, 481 if method in ("BYE", "PRACK", "UPDATE")
                          else 405, headers=[("Allow", ALLOW)])
        else:
            self._respond(transaction, request, 501, headers=[("Allow", ALLOW)])

    def response_received(self, response: Response, source: Source) -> None:
        """A 2xx that matched no transaction: re-send our ACK."""
        dialog = self.dialogs.match_response(response)
        leg = dialog.user if dialog is not None else None
        if leg is not None and hasattr(leg, "resend_ack"):
            leg.resend_ack()

    def server_transaction_failed(self, transaction: Any, error: Exception) -> None:
        """A response could not be delivered (or no ACK came for an error)."""
        self.log.debug("server transaction failed: {error!r}", error=error)

    # -- helpers ------------------------------------------------------------------

    def _respond(self, transaction: Any, request: Request, code: int, reason: str | None = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        response = make_response(request, code, reason, to_tag=self.new_tag(),
                                 headers=list(headers or ()))
        self.stamp_response(response)
        transaction.respond(response)

    def _leg_for(self, request: Request) -> Leg | None:
        try:
            dialog = self.dialogs.match(request)
        except Exception:
            return None
        return dialog.user if dialog is not None else None  # type: ignore[return-value]

    def _in_dialog(self, request: Request, transaction: Any) -> None:
        leg = self._leg_for(request)
        if leg is None or leg.call.ended:
            self.metrics.request_rejected("no_dialog")
            self._respond(transaction, request, 481)
            return
        leg.call.relay.request_received(leg, request, transaction)

    def digest_for(self, realm: str) -> DigestServer:
        """The digest server of C{realm} (made on first use)."""
        digest = self._digests.get(realm)
        if digest is None:
            digest = DigestServer(realm, self._secret, self.clock,
                                  algorithms=self._algorithms, check_uri=self._check_uri)
            self._digests[realm] = digest
        return digest

    def _authenticate(self, request: Request, transaction: Any, realm: str,
                      proxy: bool) -> str | None:
        """The authenticated username, or C{None} after sending a challenge."""
        digest = self.digest_for(realm)
        credentials = request.headers.get("proxy-authorization" if proxy else "authorization")
        stale = False
        if credentials is not None:
            result = digest.verify(request.method, request.uri_text, credentials,
                                   self.directory.lookup_ha1, request.body)
            if result.ok and result.username is not None:
                return result.username
            stale = result.stale
            self.metrics.request_rejected("auth_failed")
        header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        self._respond(transaction, request, 407 if proxy else 401,
                      headers=[(header, value) for value in digest.challenge(stale=stale)])
        return None

    # -- REGISTER ------------------------------------------------------------------

    def _register(self, request: Request, transaction: Any) -> None:
        to_uri = request.to.uri
        realm = (to_uri.host or "").lower()
        username = self._authenticate(request, transaction, realm, proxy=False)
        if username is None:
            return
        extension = self.directory.by_username(realm, username)
        if extension is None or extension.number != to_uri.user_unescaped:
            self.metrics.request_rejected("forbidden")
            self._respond(transaction, request, 403, "Not allowed to register this AOR")
            return
        aor, source = extension.aor, transaction.source
        d = self.registrar.handle(request, source, aor)

        def send(response: Response) -> None:
            self.stamp_response(response)
            transaction.respond(response)
            self.hooks.registered(aor, request, source, response)

        d.addCallback(send)
        d.addErrback(lambda f: self.log.failure("registrar failed", f))

    # -- INVITE --------------------------------------------------------------------

    def _invite(self, request: Request, transaction: Any) -> None:
        if self.draining:
            self.metrics.request_rejected("overload")
            self._respond(transaction, request, 503, "Draining", [("Retry-After", "30")])
            return
        key = (request.call_id, request.from_.tag or "", request.cseq.number)
        if key in self._merged and self._merged[key] != id(transaction):
            self.metrics.request_rejected("loop_detected")
            self._respond(transaction, request, 482, "Loop Detected")
            return
        if request.headers.get("replaces") is not None:
            # RFC 3891 INVITE (call pickup, a phone's own attended transfer):
            # not built; a REFER with Replaces is (docs/transfer.md)
            self.metrics.request_rejected("other")
            self._respond(transaction, request, 501, "INVITE with Replaces not supported")
            return
        asked = parse_session_expires(request)
        if asked is not None and asked[0] < MIN_SE:
            self._respond(transaction, request, 422, headers=[("Min-SE", str(MIN_SE))])
            return
        source: Source = transaction.source
        identity = self.hooks.trusted_source(source, request)
        tenant = ""
        if identity is not None:
            # a trusted source calls as an address-of-record of a tenant
            domain = identity.rpartition("@")[2].lower()
            if self.directory.tenant(domain) is not None:
                tenant = domain
        else:
            realm = (request.from_.uri.host or "").lower()
            username = self._authenticate(request, transaction, realm, proxy=True)
            if username is None:
                return
            extension = self.directory.by_username(realm, username)
            if extension is None:
                self._respond(transaction, request, 403)
                return
            identity, tenant = extension.aor, extension.tenant.domain
        call = Call(self, request, transaction, source, identity, tenant)
        if call.id in self.calls:
            self._respond(transaction, request, 482, "Loop Detected")
            return
        self.calls[call.id] = call
        self._calls_by_tx[id(transaction)] = call
        self._merged[key] = id(transaction)
        self.metrics.call_started()
        call.start()

    def _cancel(self, request: Request, transaction: Any) -> None:
        invite_tx = self.transactions.find_cancelled(request)
        call = self._calls_by_tx.get(id(invite_tx)) if invite_tx is not None else None
        if invite_tx is None:
            self._respond(transaction, request, 481)
            return
        self._respond(transaction, request, 200)
        if call is not None:
            call.cancel_received()
        elif getattr(invite_tx, "last_response", None) is None or \
                invite_tx.last_response.code < 200:
            # an INVITE still being challenged or authorised
            response = make_response(invite_tx.request, 487, to_tag=self.new_tag())
            self.stamp_response(response)
            invite_tx.respond(response)

    # -- drain ---------------------------------------------------------------------

    def drain(self) -> Deferred[None]:
        """Refuse new calls (503) and wait for calls in progress, then for
        the Deferreds plugins returned from notifications (a CDR being
        written), bounded by C{settings.drain_timeout}; calls still up then
        are ended (and waited for)."""
        self.draining = True
        waiting = [call.when_ended() for call in list(self.calls.values())]
        done: Deferred[None] = Deferred()

        def complete(_: object = None) -> None:
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(None)

        def timed_out() -> None:
            self._end_all()
            if not self.calls:
                complete()

        def calls_ended(_: object) -> None:
            outstanding = list(self.hooks.outstanding)
            if outstanding and timer.active():
                DeferredList(outstanding).addCallback(complete)
            else:
                complete()

        timer = self.clock.callLater(self.settings.drain_timeout, timed_out)
        DeferredList(waiting).addCallback(calls_ended)
        return done

    def _end_all(self) -> None:
        for call in list(self.calls.values()):
            call.hangup('SIP;cause=503;text="switch shutting down"', disconnect="drain")
