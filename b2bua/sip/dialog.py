"""SIP dialogs (RFC 3261 section 12), sans-IO.

A L{Dialog} holds the state RFC 3261 12.1 names (Call-ID, tags, local and
remote URI, sequence numbers, remote target, route set, secure flag) and
applies the rules of section 12.2 to it: it builds in-dialog requests
(12.2.1.1, with loose and strict routing), checks the CSeq of received ones
(12.2.2) and follows target refreshes.  RFC 3262 (PRACK, RSeq/RAck), RFC 3311
(UPDATE), RFC 3515 (REFER) and RFC 6665 (SUBSCRIBE/NOTIFY) add requests and
target-refresh methods.  A L{DialogTable} finds the dialog a received message
belongs to and forms the C{481} for requests that belong to none.

Nothing here sends, times or retransmits: the transaction layer adds the Via
and carries the request to the next hop this module names.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from b2bua.sip.errors import ParseError, SIPError
from b2bua.sip.headers import NameAddress, header_key, parse_name_addr
from b2bua.sip.message import Request, Response, make_response
from b2bua.sip.uri import URI

__all__ = [
    "CONTACT_METHODS",
    "DIALOG_CREATING_METHODS",
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogId",
    "DialogState",
    "DialogTable",
]

#: Requests that create a dialog when answered with a 1xx-with-tag or 2xx.
DIALOG_CREATING_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})

#: Target refresh requests (RFC 3261 12.2, RFC 3311, RFC 6665 4.1 and 4.2):
#: their Contact (or that of their 2xx) replaces the remote target.
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})

#: In-dialog requests that carry our Contact (the target refreshes, and REFER,
#: whose Contact RFC 3515 requires).
CONTACT_METHODS = TARGET_REFRESH_METHODS | {"REFER"}

#: Headers a dialog writes itself; callers may not pass them as extras.
_RESERVED = frozenset({"to", "from", "call-id", "cseq", "route", "via"})

#: Parameters that may not appear in a Request-URI (RFC 3261 19.1.1).
_NOT_IN_REQUEST_URI = ("method",)

_MAX_SEQ = 2**31 - 1


class DialogState(enum.Enum):
    """The states of RFC 3261 12: C{early} -> C{confirmed} -> C{terminated}."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    """The dialog identifier (RFC 3261 12): Call-ID, local tag, remote tag.

    The remote tag is C{None} for a UAS dialog whose peer sent a From without
    a tag (an RFC 2543 UAC).
    """

    call_id: str
    local_tag: str
    remote_tag: str | None


def _dialog_contact(message: Request | Response) -> URI:
    """The one SIP/SIPS Contact URI of a dialog-creating or refreshing message.

    @raise SIPError: C{400 Missing Contact} or C{400 Bad Contact}.
    """
    try:
        contacts = list(message.contact)
    except ParseError:
        raise SIPError(400, "Bad Contact") from None
    if not contacts:
        raise SIPError(400, "Missing Contact")
    if len(contacts) != 1 or contacts[0].star or not contacts[0].uri.is_sip:
        raise SIPError(400, "Bad Contact")
    return contacts[0].uri.copy()


def _without_tag(address: NameAddress | str) -> str:
    """C{address} as header text without its C{tag} parameter (display name
    always quoted); text is taken as it is."""
    if isinstance(address, str):
        return address
    return address.text_without_tag()


def _rseq(response: Response) -> int | None:
    """The RSeq of a response (RFC 3262 7.1), or C{None} when absent.

    @raise ParseError: when the value is not a number in 1..2**31-1.
    """
    value = response.headers.get("RSeq")
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or not value.isascii() or not 1 <= int(value) <= _MAX_SEQ:
        raise ParseError(f"bad RSeq {value[:20]!r}")
    return int(value)


class Dialog:
    """One dialog, as seen from our side.

    States (L{DialogState}): C{EARLY} when created from a 1xx with a To tag,
    C{CONFIRMED} once a 2xx is sent or received (L{confirm}), C{TERMINATED}
    after L{terminate} (a non-2xx final ends an early dialog; a BYE or a
    forking loser ends any).  Terminated dialogs send and accept nothing.

    C{local_uri} and C{remote_uri} are the From/To addresses without their
    tags (display name kept); tags live in C{local_tag}/C{remote_tag}.  A
    dialog keeps them as header text (what its requests carry): reading one
    parses a new L{NameAddress}, setting one replaces the text.

    @ivar uac: C{True} when we sent the dialog-creating request.
    @ivar local_seq: CSeq number of our last request, C{None} before the first.
    @ivar remote_seq: CSeq number of the peer's last request, or C{None}.
    @ivar remote_target: the peer's Contact URI, where requests go.
    @ivar route_set: the route set, in the order requests carry it.
    @ivar secure: C{True} for a SIPS dialog (requests must go over TLS).
    @ivar local_contact: our Contact, written into target-refresh requests.
    @ivar user: free for the dialog's user (the core keeps its leg here).
    """

    __slots__ = ("_id", "_last_rseq", "_local_uri", "_remote_uri", "call_id", "local_contact",
                 "local_seq", "local_tag", "remote_seq", "remote_tag", "remote_target",
                 "route_set", "secure", "state", "uac", "user")

    def __init__(self, *, call_id: str, local_tag: str, remote_tag: str | None,
                 local_uri: NameAddress | str, remote_uri: NameAddress | str,
                 remote_target: URI, local_contact: NameAddress,
                 route_set: Sequence[NameAddress] | None = None,
                 local_seq: int | None = None, remote_seq: int | None = None,
                 secure: bool = False, state: DialogState = DialogState.EARLY,
                 uac: bool = True) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self._id: DialogId | None = None
        self._local_uri = _without_tag(local_uri)
        self._remote_uri = _without_tag(remote_uri)
        self.remote_target = remote_target
        self.local_contact = local_contact
        #: most dialogs have no route set: they share one empty tuple
        self.route_set: Sequence[NameAddress] = list(route_set) if route_set else ()
        self.user: object = None
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.secure = secure
        self.state = state
        self.uac = uac
        #: (CSeq number, RSeq) of the last in-order reliable provisional
        self._last_rseq: tuple[int, int] | None = None

    # -- creation (12.1) ---------------------------------------------------

    @classmethod
    def from_uac(cls, request: Request, response: Response,
                 local_contact: NameAddress, *, secure: bool | None = None) -> Dialog:
        """The dialog a response to our request creates (RFC 3261 12.1.2).

        A 101-199 with a To tag makes an early dialog, a 2xx a confirmed one.
        The route set is the response's Record-Route reversed; the remote
        target its Contact; the local sequence number the request's CSeq.
        C{secure} defaults to "the Request-URI is a SIPS URI".

        @raise ValueError: if C{response} cannot create a dialog for C{request}.
        @raise SIPError: C{400} for a missing or bad Contact or Record-Route.
        """
        if not (101 <= response.code < 300):
            raise ValueError(f"a {response.code} response creates no dialog")
        if request.method not in DIALOG_CREATING_METHODS:
            raise ValueError(f"{request.method} creates no dialog")
        try:
            to, from_, request_to = response.to, request.from_, request.to
            if response.call_id != request.call_id or response.cseq.method != request.method:
                raise ValueError("response does not answer this request")
            record_route = list(response.record_route)
            cseq = request.cseq.number
            uri = request.uri
        except ParseError as exc:
            raise SIPError(400, exc.reason) from None
        if to.tag is None or from_.tag is None:
            raise ValueError("a dialog needs a From tag and a To tag")
        remote_target = _dialog_contact(response)
        return cls(
            call_id=request.call_id, local_tag=from_.tag, remote_tag=to.tag,
            local_uri=_without_tag(from_), remote_uri=_without_tag(request_to),
            remote_target=remote_target, local_contact=local_contact,
            route_set=[r.copy() for r in reversed(record_route)], local_seq=cseq,
            secure=uri.scheme == "sips" if secure is None else secure,
            state=DialogState.CONFIRMED if response.code >= 200 else DialogState.EARLY,
            uac=True,
        )

    @classmethod
    def from_uas(cls, request: Request, local_tag: str, local_contact: NameAddress,
                 *, confirmed: bool = False, secure: bool | None = None) -> Dialog:
        """The dialog we create by answering C{request} (RFC 3261 12.1.1).

        Call when sending a 1xx with the To tag C{local_tag} (early) or a 2xx
        (C{confirmed=True}, or L{confirm} later).  The route set is the
        request's Record-Route in order; the remote target its Contact; the
        remote sequence number its CSeq.  C{secure} defaults to "the
        Request-URI is a SIPS URI" (the transport layer accepts SIPS only
        over TLS).

        @raise ValueError: if C{request} cannot create a dialog.
        @raise SIPError: C{400} for a missing or bad Contact or Record-Route.
        """
        if request.method not in DIALOG_CREATING_METHODS:
            raise ValueError(f"{request.method} creates no dialog")
        try:
            to, from_ = request.to, request.from_
            record_route = list(request.record_route)
            cseq = request.cseq.number
            call_id = request.call_id
            uri = request.uri
        except ParseError as exc:
            raise SIPError(400, exc.reason) from None
        if to.tag is not None:
            raise ValueError("a request with a To tag is already in a dialog")
        remote_target = _dialog_contact(request)
        return cls(
            call_id=call_id, local_tag=local_tag, remote_tag=from_.tag,
            local_uri=_without_tag(to), remote_uri=_without_tag(from_),
            remote_target=remote_target, local_contact=local_contact,
            route_set=[r.copy() for r in record_route], remote_seq=cseq,
            secure=uri.scheme == "sips" if secure is None else secure,
            state=DialogState.CONFIRMED if confirmed else DialogState.EARLY,
            uac=False,
        )

    # -- state ---------------------------------------------------------------

    @property
    def id(self) -> DialogId:
        """The L{DialogId} of this dialog (one object while it stays the same)."""
        known = self._id
        if (known is None or known.call_id != self.call_id
                or known.local_tag != self.local_tag or known.remote_tag != self.remote_tag):
            known = self._id = DialogId(self.call_id, self.local_tag, self.remote_tag)
        return known

    @property
    def local_uri(self) -> NameAddress:
        """Our address (From of our requests) without tag; a new object per read."""
        return parse_name_addr(self._local_uri)

    @local_uri.setter
    def local_uri(self, value: NameAddress | str) -> None:
        self._local_uri = _without_tag(value)

    @property
    def remote_uri(self) -> NameAddress:
        """The peer's address (To of our requests) without tag; a new object per read."""
        return parse_name_addr(self._remote_uri)

    @remote_uri.setter
    def remote_uri(self, value: NameAddress | str) -> None:
        self._remote_uri = _without_tag(value)

    def fork(self, response: Response) -> Dialog:
        """The confirmed dialog a 2xx from another fork of our INVITE creates
        (RFC 3261 13.2.2.4): this dialog's Call-ID, local tag, addresses and
        Contact, with the response's To tag, Contact and Record-Route.

        @raise ValueError: when this is not a UAC dialog or C{response} is
            not a 2xx with a To tag.
        @raise SIPError: C{400} for a missing or bad Contact or Record-Route.
        """
        if not self.uac or not response.is_success:
            raise ValueError("only a 2xx to our INVITE forks a UAC dialog")
        try:
            remote_tag = response.to.tag
            record_route = list(response.record_route)
            cseq = response.cseq.number
        except ParseError as exc:
            raise SIPError(400, exc.reason) from None
        if remote_tag is None:
            raise ValueError("a dialog needs a To tag")
        return Dialog(
            call_id=self.call_id, local_tag=self.local_tag, remote_tag=remote_tag,
            local_uri=self._local_uri, remote_uri=self._remote_uri,
            remote_target=_dialog_contact(response), local_contact=self.local_contact,
            route_set=[r.copy() for r in reversed(record_route)], local_seq=cseq,
            secure=self.secure, state=DialogState.CONFIRMED, uac=True)

    def confirm(self, response: Response | None = None) -> None:
        """Move an early dialog to C{confirmed}.

        A UAC passes the 2xx it received: the route set and remote target are
        recomputed from it (RFC 3261 13.2.2.4, 12.2.1.2).  A UAS passes
        nothing when it sends its 2xx.  Confirming a confirmed dialog again
        (a retransmitted 2xx) changes nothing.

        @raise ValueError: on a terminated dialog, or a UAC without a 2xx of
            this dialog.
        @raise SIPError: C{400} for a missing or bad Contact in the 2xx.
        """
        if self.state is DialogState.TERMINATED:
            raise ValueError("dialog is terminated")
        if self.state is DialogState.CONFIRMED:
            return
        if self.uac:
            if response is None or not response.is_success:
                raise ValueError("a UAC dialog is confirmed by a 2xx response")
            try:
                remote_tag = response.to.tag
                record_route = list(response.record_route)
            except ParseError as exc:
                raise SIPError(400, exc.reason) from None
            if remote_tag != self.remote_tag:
                raise ValueError("the 2xx belongs to another dialog")
            target = _dialog_contact(response)
            self.route_set = [r.copy() for r in reversed(record_route)] if record_route else ()
            self.remote_target = target
        self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        """End the dialog (BYE, a non-2xx final for an early one, a fork lost)."""
        self.state = DialogState.TERMINATED

    # -- requests we send (12.2.1.1) ----------------------------------------

    def create_request(self, method: str, body: bytes = b"",
                       content_type: str | None = None,
                       headers: list[tuple[str, str]] | None = None,
                       ) -> tuple[Request, URI]:
        """Build an in-dialog request and name the next hop to send it to.

        CSeq is C{local_seq + 1} (1 when C{local_seq} is empty, a valid
        initial value under RFC 3261 8.1.1.5), and C{local_seq} advances.
        Contact is C{local_contact} for L{CONTACT_METHODS}.  C{headers} are
        added after the dialog's own; a Contact or Max-Forwards among them
        replaces the default one.  No Via: the transaction layer adds it.

        @return: the request and the URI of the next hop (RFC 3261 8.1.2).
        @raise ValueError: for ACK (use L{create_ack}), CANCEL (built from
            the request it cancels), a terminated dialog, a body without
            Content-Type, a reserved extra header, or CSeq overflow.
        """
        if method == "ACK":
            raise ValueError("use create_ack() for ACK")
        if method == "CANCEL":
            raise ValueError("CANCEL is built from the request it cancels, not the dialog")
        seq = 1 if self.local_seq is None else self.local_seq + 1
        if seq > _MAX_SEQ:
            raise ValueError("CSeq number exhausted")
        request, hop = self._build(method, seq, body, content_type, headers)
        self.local_seq = seq
        return request, hop

    def create_ack(self, invite_cseq_number: int, body: bytes = b"",
                   content_type: str | None = None,
                   headers: list[tuple[str, str]] | None = None,
                   ) -> tuple[Request, URI]:
        """Build the ACK for a 2xx to the INVITE numbered C{invite_cseq_number}.

        Built like any in-dialog request (RFC 3261 13.2.2.4) but with the
        INVITE's CSeq number and method ACK; C{local_seq} is not touched.
        """
        return self._build("ACK", invite_cseq_number, body, content_type, headers)

    def create_prack(self, response: Response, body: bytes = b"",
                     content_type: str | None = None,
                     headers: list[tuple[str, str]] | None = None,
                     ) -> tuple[Request, URI]:
        """Build the PRACK for a reliable provisional response (RFC 3262 7.2).

        RAck is C{"RSeq CSeq-number CSeq-method"} of C{response}.

        @raise ValueError: when C{response} carries no RSeq.
        @raise ParseError: when its RSeq is malformed.
        """
        rseq = _rseq(response)
        if rseq is None:
            raise ValueError("not a reliable provisional response (no RSeq)")
        cseq = response.cseq
        extra = [("RAck", f"{rseq} {cseq.number} {cseq.method}"), *(headers or ())]
        return self.create_request("PRACK", body, content_type, extra)

    def is_new_reliable_provisional(self, response: Response) -> bool:
        """Whether C{response} is a reliable provisional to PRACK and process.

        True (and recorded) for the first reliable provisional of a request
        and for the one whose RSeq is one higher than the last; false for a
        retransmission, an out-of-order one (RFC 3262 4: neither is PRACKed)
        and for anything that is not a 101-199 with an RSeq.

        @raise ParseError: when its RSeq or CSeq is malformed.
        """
        if not (101 <= response.code < 200):
            return False
        rseq = _rseq(response)
        if rseq is None:
            return False
        number = response.cseq.number
        last = self._last_rseq
        if last is not None and last[0] == number and rseq != last[1] + 1:
            return False
        self._last_rseq = (number, rseq)
        return True

    def _build(self, method: str, seq: int, body: bytes, content_type: str | None,
               headers: list[tuple[str, str]] | None) -> tuple[Request, URI]:
        """The request of RFC 3261 12.2.1.1 with CSeq C{seq} C{method}."""
        if self.state is DialogState.TERMINATED:
            raise ValueError("dialog is terminated")
        extra = list(headers or ())
        extra_keys = {header_key(name) for name, _ in extra}
        reserved = extra_keys & _RESERVED
        if reserved:
            raise ValueError(f"header(s) set by the dialog: {sorted(reserved)}")
        if body and content_type is None and "content-type" not in extra_keys:
            raise ValueError("a body needs a Content-Type")
        request_uri, routes, hop = self._routing()
        to = self._remote_uri
        if self.remote_tag is not None:
            to = f"{to};tag={self.remote_tag}"
        fields = [("Route", str(r)) for r in routes]
        if "max-forwards" not in extra_keys:
            fields.append(("Max-Forwards", "70"))
        fields += [("To", to), ("From", f"{self._local_uri};tag={self.local_tag}"),
                   ("Call-ID", self.call_id), ("CSeq", f"{seq} {method}")]
        if method in CONTACT_METHODS and "contact" not in extra_keys:
            fields.append(("Contact", str(self.local_contact)))
        fields += extra
        if content_type is not None:
            fields.append(("Content-Type", content_type))
        return Request(method, request_uri, fields, body), hop

    def _routing(self) -> tuple[URI | str, Sequence[NameAddress], URI]:
        """Request-URI, Route values and next hop (RFC 3261 12.2.1.1, 8.1.2).

        The Request-URI of a loose-routed request is the remote target's text
        (the request parses it if read); the next hop is a URI of the dialog
        itself, to read, never to change.
        """
        if not self.route_set:
            return str(self.remote_target), (), self.remote_target
        first = self.route_set[0]
        if "lr" in first.uri.params:
            return str(self.remote_target), self.route_set, first.uri
        # strict router: it gets the Request-URI, the remote target goes last
        request_uri = first.uri.copy()
        request_uri.headers = None
        for name in _NOT_IN_REQUEST_URI:
            request_uri.params.pop(name, None)
        routes = [r.copy() for r in self.route_set[1:]]
        routes.append(NameAddress(self.remote_target.copy()))
        return request_uri, routes, request_uri.copy()

    # -- messages we receive (12.2.2, 12.2.1.2) ------------------------------

    def receive_request(self, request: Request) -> None:
        """Apply a request received in this dialog (RFC 3261 12.2.2).

        Its CSeq must not be lower than C{remote_seq} (ACK and CANCEL are not
        checked and do not advance it); a target refresh request with a
        Contact replaces the remote target.

        @raise SIPError: C{481} on a terminated dialog (not for ACK),
            C{500 CSeq out of order}, C{400} for a bad CSeq or Contact.
        """
        method = request.method
        if self.state is DialogState.TERMINATED and method != "ACK":
            raise SIPError(481, "Call/Transaction Does Not Exist")
        if method in ("ACK", "CANCEL"):
            return
        try:
            number = request.cseq.number
        except ParseError as exc:
            raise SIPError(400, exc.reason) from None
        if self.remote_seq is not None and number < self.remote_seq:
            raise SIPError(500, "CSeq out of order")
        target = None
        if method in TARGET_REFRESH_METHODS and "contact" in request.headers:
            target = _dialog_contact(request)
        self.remote_seq = number
        if target is not None:
            self.remote_target = target

    def receive_response(self, response: Response) -> None:
        """Apply a response to a request we sent in this dialog.

        A 2xx to a target refresh request (re-INVITE, UPDATE, SUBSCRIBE,
        NOTIFY) with a Contact replaces the remote target (12.2.1.2); so does
        a 1xx to the INVITE of an early dialog.  A malformed Contact is
        ignored: the response is already accepted by the transaction.  A 481
        or 408 does not end the dialog here: whether it ends the dialog or a
        single usage (RFC 5057) is the caller's decision.
        """
        if self.state is DialogState.TERMINATED:
            return
        try:
            method = response.cseq.method
        except ParseError:
            return
        refresh = (response.is_success and method in TARGET_REFRESH_METHODS) or (
            self.state is DialogState.EARLY and response.code > 100
            and response.is_provisional and method == "INVITE"
        )
        if refresh and "contact" in response.headers:
            try:
                self.remote_target = _dialog_contact(response)
            except SIPError:
                pass

    def __repr__(self) -> str:
        return (f"<Dialog {self.state.value} {self.call_id} "
                f"local={self.local_tag} remote={self.remote_tag}>")


class DialogTable:
    """The dialogs of one user agent, by L{DialogId}.

    Forking may make one request create several early dialogs that differ
    only in their remote tag; all of them live here (L{dialogs_of} lists
    them) until the caller removes the losers.
    """

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def __contains__(self, dialog_id: object) -> bool:
        return dialog_id in self._dialogs

    def add(self, dialog: Dialog) -> None:
        """Insert C{dialog}.  @raise ValueError: if its id is taken."""
        if dialog.id in self._dialogs:
            raise ValueError(f"dialog {dialog.id} exists")
        self._dialogs[dialog.id] = dialog

    def remove(self, dialog_id: DialogId) -> Dialog | None:
        """Remove and return the dialog with C{dialog_id}, if any."""
        return self._dialogs.pop(dialog_id, None)

    def find(self, dialog_id: DialogId) -> Dialog | None:
        """The dialog with C{dialog_id}, or C{None}."""
        return self._dialogs.get(dialog_id)

    def dialogs_of(self, call_id: str, local_tag: str) -> list[Dialog]:
        """Every dialog (forks included) with this Call-ID and local tag."""
        return [d for i, d in self._dialogs.items()
                if i.call_id == call_id and i.local_tag == local_tag]

    def match(self, request: Request) -> Dialog | None:
        """The dialog a received request belongs to: Call-ID, To tag as our
        local tag, From tag as the remote tag (RFC 3261 12.2.2).

        @raise ParseError: when Call-ID, From or To is malformed.
        """
        local_tag = request.to.tag
        if local_tag is None:
            return None
        return self._dialogs.get(DialogId(request.call_id, local_tag, request.from_.tag))

    def match_response(self, response: Response) -> Dialog | None:
        """The dialog a response to our request belongs to: Call-ID, From tag
        as our local tag, To tag as the remote tag.

        @raise ParseError: when Call-ID, From or To is malformed.
        """
        local_tag = response.from_.tag
        if local_tag is None:
            return None
        return self._dialogs.get(DialogId(response.call_id, local_tag, response.to.tag))

    def reject_unknown(self, request: Request) -> Response | None:
        """The C{481} for an in-dialog request that matches no dialog.

        C{None} when the request has no To tag (not in a dialog), matches a
        dialog, or is an ACK (an unmatched ACK is dropped).

        @raise ParseError: when Call-ID, From or To is malformed.
        """
        if request.method == "ACK" or request.to.tag is None:
            return None
        if self.match(request) is not None:
            return None
        return make_response(request, 481, "Call/Transaction Does Not Exist")
