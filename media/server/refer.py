"""The media server as a transferor: one REFER and its implicit subscription.

An IVR C{transfer} node asks the switch to move the caller elsewhere
(RFC 3515 REFER, the blind transfer of RFC 5589 section 6; the switch acts
on it itself, see C{docs/transfer.md}).  A L{Referral} is the client side
of one REFER sent in the call's dialog:

  - it is the client transaction user of the REFER: a 2xx (C{202}) means
    "wait for NOTIFYs"; C{405}/C{501} means the peer does not do
    transfers (L{ReferNotSupported}: the session falls back to a BYE whose
    C{Reason} names the target); any other final answer, or none, is a
    L{TransferFailed} (the caller is still in the call);
  - it reads each C{Event: refer} NOTIFY's C{message/sipfrag} status line
    (RFC 3420): a provisional status keeps waiting, a 2xx is success, any
    other final status is a L{TransferFailed} with that status; a
    subscription terminated without a final status fails too;
  - it waits at most C{timeout} seconds from the REFER for the final
    status (L{TransferTimedOut}).

It sends nothing itself: the user agent builds and sends the REFER and
answers the NOTIFYs with what L{Referral.notify_received} returns.
L{refer_target} turns a flow's target (a number, a C{tel:} or a SIP URI)
into the C{Refer-To} SIP URI the switch accepts.
"""

from __future__ import annotations

import re

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from b2bua.sip.errors import ParseError
from b2bua.sip.message import REASON_PHRASES, Request, Response
from b2bua.sip.uri import URI, parse_uri
from media.server.ivr_session import TransferFailed, TransferTimedOut

__all__ = ["DEFAULT_TRANSFER_TIMEOUT", "ReferNotSupported", "Referral", "answer_notify",
           "parse_sipfrag", "refer_target"]

#: Seconds to wait for a transfer's final status (64*T1, as a transaction).
DEFAULT_TRANSFER_TIMEOUT = 32.0
#: REFER answers meaning "this peer does not take transfers".
NOT_SUPPORTED = frozenset({405, 501})

_NUMBER = re.compile(r"\+?[0-9*#]{1,32}\Z")
_VISUAL = re.compile(r"[-.() ]")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?\Z")


class ReferNotSupported(Exception):
    """The peer answered the REFER C{405} or C{501}: it does not take
    transfers (the session falls back to ending the call)."""

    def __init__(self, code: int, reason: str) -> None:
        """
        @param code: 405 or 501.
        @param reason: the response's reason phrase.
        """
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


def refer_target(target: str, domain: str) -> URI:
    """The C{Refer-To} URI for a flow's transfer target.

    A C{sip:}/C{sips:} URI stays as it is; a bare number (C{1002},
    C{+4930...}, C{*60}) and a C{tel:} URI (its visual separators and
    parameters dropped) become C{sip:<number>@<domain>}, the switch
    answering C{400} to a C{Refer-To} that is not a SIP URI.

    @param target: what the node's C{target} evaluated to.
    @param domain: the host of the number's SIP URI (the tenant: the From
        host of the INVITE the media server received).
    @raise ValueError: when C{target} is none of those.
    """
    text = target.strip()
    if text[:4].lower() == "tel:":
        number = _VISUAL.sub("", text[4:].partition(";")[0])
    elif ":" in text:
        try:
            uri = parse_uri(text)
        except ParseError as error:
            raise ValueError(f"{target!r} is not a valid URI: {error}") from None
        if not uri.is_sip or not uri.host:
            raise ValueError(f"{target!r} is neither a number nor a sip:, sips: or tel: URI")
        return uri
    else:
        number = text
    if not _NUMBER.match(number):
        raise ValueError(f"{target!r} is neither a number nor a sip:, sips: or tel: URI")
    if not domain:
        raise ValueError(f"no domain to make a SIP URI of {target!r}")
    return URI("sip", number.replace("#", "%23"), domain)


def parse_sipfrag(body: bytes) -> tuple[int, str]:
    """The status of a C{message/sipfrag} NOTIFY body (RFC 3420): its first
    line, C{SIP/2.0 <code> <reason>}.

    @raise ValueError: when the body does not start with a status line.
    """
    first = body.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace").strip()
    match = _STATUS_LINE.match(first)
    if match is None:
        raise ValueError(f"not a SIP status line: {first[:60]!r}")
    return int(match.group(1)), (match.group(2) or "").strip()


class Referral:
    """One REFER the media server sent, from its sending to its outcome.

    States (C{state}):

      - C{sent}: the REFER is on its way (a NOTIFY may overtake its 2xx);
      - C{accepted}: the REFER got a 2xx; waiting for the final NOTIFY;
      - C{succeeded}: a NOTIFY reported a 2xx: C{deferred} fired with
        C{None};
      - C{failed}: C{deferred} failed (L{TransferFailed},
        L{TransferTimedOut} or L{ReferNotSupported});
      - C{stopped}: given up (cancelled, or the call ended).

    @ivar deferred: fires once, as above; cancelling it stops the timer.
    @ivar event_id: the C{id} of the subscription (the REFER's CSeq number).
    @ivar status: the last status reported (the REFER's answer or a
        NOTIFY's sipfrag), as C{(code, reason)}.
    @ivar notifies: NOTIFYs received for this referral (accepted ones).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, *, timeout: float = DEFAULT_TRANSFER_TIMEOUT,
                 label: str = "") -> None:
        """Start waiting: the timer runs from now.

        @param clock: the clock of the timeout.
        @param timeout: seconds to wait for the final status.
        @param label: a name for logs (the Call-ID).
        """
        self.label = label
        self.timeout = timeout
        self.state = "sent"
        self.event_id: str | None = None
        self.status: tuple[int, str] | None = None
        self.notifies = 0
        self.deferred: Deferred[None] = Deferred(lambda _: self.stop())
        self._failure = "failed"
        self._timer: IDelayedCall | None = clock.callLater(timeout, self._expired)

    @property
    def outcome(self) -> str:
        """How the transfer ended, as a counter label: C{transferred},
        C{refused} (the REFER's answer), C{fallback} (405/501),
        C{failed} (a NOTIFY's status, or no answer), C{timeout},
        C{given_up}; C{pending} while it runs."""
        if self.state == "succeeded":
            return "transferred"
        if self.state == "failed":
            return self._failure
        return "given_up" if self.state == "stopped" else "pending"

    @property
    def done(self) -> bool:
        """Whether the outcome is known (or the referral was given up)."""
        return self.state in ("succeeded", "failed", "stopped")

    def stop(self) -> None:
        """Give up waiting (idempotent); C{deferred} is left as it is."""
        self._cancel_timer()
        if not self.done:
            self.state = "stopped"

    # -- the REFER's client transaction ------------------------------------------------

    def response_received(self, response: Response, transaction: object) -> None:
        """The REFER's answer: a 2xx waits for NOTIFYs; an error ends it."""
        code = response.code
        if code < 200 or self.state != "sent":
            return
        reason = response.reason or ""
        self.status = (code, reason)
        if code < 300:
            self.state = "accepted"
        elif code in NOT_SUPPORTED:
            self._fail(ReferNotSupported(code, reason), "fallback")
        else:
            self._fail(TransferFailed(code, reason), "refused")

    def transaction_failed(self, transaction: object, error: Exception) -> None:
        """The REFER got no answer (or could not be sent)."""
        if self.state == "sent":
            self._fail(TransferFailed(408, "REFER not answered"))

    # -- the NOTIFYs ----------------------------------------------------------------------

    def matches(self, request: Request) -> bool:
        """Whether a NOTIFY is for this referral: C{Event: refer} with our
        C{id} (or none)."""
        event = request.headers.get("event") or ""
        package, _, rest = event.partition(";")
        if package.strip().lower() != "refer":
            return False
        ident = None
        for part in rest.split(";"):
            name, _, value = part.partition("=")
            if name.strip().lower() == "id":
                ident = value.strip().strip('"')
        return ident is None or ident == self.event_id

    def notify_received(self, request: Request) -> tuple[int, str]:
        """Read a NOTIFY of this referral; the code and reason to answer it.

        C{200} for a readable sipfrag (acted on while the outcome is not
        known yet), C{400} for a body that is not one (nothing changes).
        """
        try:
            code, reason = parse_sipfrag(request.body)
        except ValueError as error:
            self.log.info("media server: bad NOTIFY in {call}: {error}", call=self.label,
                          error=str(error))
            return 400, "Bad sipfrag"
        self.notifies += 1
        if self.done:
            return 200, "OK"
        self.status = (code, reason)
        terminated = (request.headers.get("subscription-state") or "").strip().lower() \
            .startswith("terminated")
        if code < 200:
            if self.state == "sent":
                self.state = "accepted"  # the NOTIFY overtook the 202 (RFC 3515 2.4.4)
            if terminated:
                self._fail(TransferFailed(487, "subscription terminated before the outcome"))
        elif code < 300:
            self.state = "succeeded"
            self._cancel_timer()
            self.deferred.callback(None)
        else:
            self._fail(TransferFailed(code, reason or REASON_PHRASES.get(code, "")))
        return 200, "OK"

    # -- helpers ------------------------------------------------------------------------

    def _expired(self) -> None:
        self._timer = None
        if not self.done:
            self._fail(TransferTimedOut(
                408, f"no final transfer status in {self.timeout:g} s"), "timeout")

    def _fail(self, error: Exception, outcome: str = "failed") -> None:
        self.state = "failed"
        self._failure = outcome
        self._cancel_timer()
        if not self.deferred.called:
            self.deferred.errback(error)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()


def answer_notify(referral: Referral | None, request: Request) -> tuple[int, str]:
    """The answer to a NOTIFY in a call's dialog (RFC 6665 4.1.3): C{481}
    when no REFER was sent, C{489} for another event or subscription,
    else what L{Referral.notify_received} says."""
    if referral is None:
        return 481, "Subscription does not exist"
    if not referral.matches(request):
        return 489, "Bad Event"
    return referral.notify_received(request)
