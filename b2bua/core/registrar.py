"""The registrar (RFC 3261 section 10.3, RFC 3327 Path, RFC 5626 outbound).

L{Registrar.handle} takes a REGISTER that the caller has already
authenticated and mapped to its address-of-record (steps 1-5 of 10.3: the
digest check and the tenant lookup are not ours), validates its Contact and
Expires values, turns them into L{Binding}s carrying where the request came
from (for NAT) and its Path, applies them to an L{ILocationStore} (steps
6-7, atomically per AOR) and answers (step 8).  L{Registrar.lookup} is what
the router asks for an AOR's contacts.

Answers:
  - 200 with every current binding of the AOR (each Contact with its
    C{expires}), C{Date}, C{Supported: path, outbound}, the request's Path
    when the UA supports C{path}, C{Require: outbound} and C{Flow-Timer} when a
    reg-id was used;
  - 400 for a malformed Contact/Expires/q/reg-id, a misused C{*};
  - 423 with C{Min-Expires} for an interval below the minimum;
  - 403 C{Too Many Contacts} when the AOR would exceed C{max_contacts};
  - 500 C{Out Of Order CSeq} when a binding holds the same Call-ID with a
    CSeq not lower (10.3 step 6/7);
  - 503 with C{Retry-After} when the location store fails.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.core.location import (
    Binding,
    ILocationStore,
    OutOfOrder,
    Received,
    TooManyBindings,
    normalise_aor,
)
from b2bua.sip.errors import ParseError, SIPError
from b2bua.sip.headers import NameAddress
from b2bua.sip.interfaces import Source
from b2bua.sip.message import Request, Response, make_response

__all__ = ["RETRY_AFTER", "SUPPORTED", "Registrar", "format_binding"]

#: Seconds between keep-alives the registrar asks of an outbound (RFC 5626)
#: flow: C{Flow-Timer} of its 200 (5.4), for UDP and for TCP/TLS.
FLOW_TIMER_UDP = 25
FLOW_TIMER_STREAM = 120
#: Option tags the registrar puts in C{Supported} of its 200 responses.
SUPPORTED = "path, outbound"

#: Retry-After (seconds) of the 503 sent when the location store fails.
RETRY_AFTER = 5

#: RFC 3261 10.3 step 7: a registrar may refuse only intervals below an hour.
_ONE_HOUR = 3600

#: Largest delta-seconds (RFC 3261 20.19 allows any value; we cap like Expires).
_MAX_DELTA = 2**32 - 1

_log = Logger()


@dataclass(frozen=True, slots=True)
class _Contact:
    """One Contact of a REGISTER, checked: the URI text and what it asks."""

    uri: str
    expires: int
    q: float | None
    instance_id: str | None
    reg_id: int | None


def _q_value(text: str | None) -> float | None:
    """Parse a qvalue (RFC 3261 25.1: 0 to 1, at most three decimals)."""
    if text is None:
        return None
    whole, _, frac = text.partition(".")
    if (whole not in ("0", "1") or len(frac) > 3 or (frac and not frac.isdigit())
            or (whole == "1" and frac.strip("0"))):
        raise SIPError(400, "Bad q Parameter")
    return float(text)


def _delta_seconds(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        raise SIPError(400, f"Bad {what}")
    return min(int(text), _MAX_DELTA)


def _utf8(text: str, what: str) -> str:
    """Refuse text that is not valid UTF-8 on the wire (it could not be stored)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise SIPError(400, f"Bad {what}") from None
    return text


def _instance_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return _utf8(value, "+sip.instance") or None


def format_binding(binding: Binding, now: float) -> str:
    """The Contact header value a 200 lists for C{binding}: its URI, q,
    +sip.instance, reg-id and the seconds it has left as C{expires}."""
    out = [f"<{binding.contact}>"]
    if binding.q is not None:
        out.append(";q=" + (f"{binding.q:.3f}".rstrip("0").rstrip(".") or "0"))
    if binding.instance_id is not None:
        out.append(f';+sip.instance="{binding.instance_id}"')
    if binding.reg_id is not None:
        out.append(f";reg-id={binding.reg_id}")
    out.append(f";expires={binding.expires_in(now)}")
    return "".join(out)


class Registrar:
    """Processes authenticated REGISTER requests against a location store.

    @param store: where bindings live.
    @param clock: the time of every binding and of the C{Date} header.
    @param min_expires: shorter non-zero intervals get 423 (if below an hour).
    @param max_expires: longer intervals are shortened to this.
    @param default_expires: the interval when a REGISTER names none.
    @param max_contacts: most bindings one AOR may hold (403 beyond).
    @param tag_factory: makes To tags (random by default).
    """

    def __init__(self, store: ILocationStore, clock: IReactorTime, min_expires: int = 60,
                 max_expires: int = 3600, default_expires: int = 3600,
                 max_contacts: int = 10,
                 tag_factory: Callable[[], str] | None = None) -> None:
        if not 0 < min_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= max_expires")
        if not min_expires <= default_expires <= max_expires:
            raise ValueError("default_expires must lie within [min_expires, max_expires]")
        if max_contacts < 1:
            raise ValueError("max_contacts must be at least 1")
        self.store = store
        self.clock = clock
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self.max_contacts = max_contacts
        self._tag = tag_factory or (lambda: secrets.token_hex(6))

    def lookup(self, aor: str) -> Deferred[list[Binding]]:
        """The unexpired bindings of C{aor}, best first (q, then recency)."""
        return self.store.get(normalise_aor(aor), self.clock.seconds())

    def handle(self, request: Request, source: Source, aor: str) -> Deferred[Response]:
        """Process an authenticated REGISTER for C{aor}; fire with the final
        response (never fails: store errors become a 503).

        @param source: where the request came from; kept in each binding.
        @param aor: the address-of-record, as L{normalise_aor} accepts it.
        """
        now = self.clock.seconds()
        tag = self._tag()
        aor = normalise_aor(aor)
        try:
            star, contacts = self._contacts(request)
            supported = self._option_tags(request)
            outbound = "outbound" in supported and any(c.reg_id is not None for c in contacts)
            if outbound and len(contacts) > 1:
                raise SIPError(400, "reg-id With More Than One Contact")
            path = [_utf8(p, "Path") for p in request.headers.get_all("Path")]
            call_id = _utf8(request.call_id, "Call-ID")
            cseq = request.cseq.number
        except ParseError as exc:
            return succeed(self._reject(request, tag, SIPError(400, exc.reason)))
        except SIPError as exc:
            return succeed(self._reject(request, tag, exc))

        if star:
            d = self.store.remove_all(aor, call_id, cseq, now)
        elif not contacts:
            d = self.store.get(aor, now)
        else:
            user_agent = request.headers.get("User-Agent")
            if user_agent is not None:
                user_agent = user_agent.encode("utf-8", "surrogateescape").decode(
                    "utf-8", "replace")
            received = Received.from_source(source)
            changes = [
                Binding(aor=aor, contact=c.uri,
                        expires_at=now + c.expires if c.expires else now,
                        q=c.q, call_id=call_id, cseq=cseq, received=received,
                        path=tuple(path), instance_id=c.instance_id,
                        reg_id=c.reg_id if outbound else None,
                        user_agent=user_agent, registered_at=now)
                for c in contacts
            ]
            d = self.store.update(aor, call_id, cseq, changes, now,
                                  max_bindings=self.max_contacts)
        echo_path = path if "path" in supported else []
        d.addCallback(self._accept, request, tag, now, echo_path, outbound)
        d.addErrback(self._refuse, request, tag, aor)
        return d

    def _option_tags(self, request: Request) -> set[str]:
        """Option tags of Supported and Require, lower-cased."""
        tags = request.headers.get_all("Supported") + request.headers.get_all("Require")
        return {t.strip().lower() for t in tags}

    def _contacts(self, request: Request) -> tuple[bool, list[_Contact]]:
        """Check Contact and Expires (10.3 steps 6-7).  Returns (star, contacts).

        @raise SIPError: 400 for bad values, 423 for a too brief interval,
            403 for more contacts than an AOR may hold.
        @raise ParseError: for a malformed header.
        """
        names: list[NameAddress] = list(request.contact)
        header_expires = request.expires
        if any(na.star for na in names):
            if len(names) != 1:
                raise SIPError(400, "Contact * Must Be Alone")
            if header_expires != 0:
                raise SIPError(400, "Contact * Needs Expires: 0")
            return True, []
        contacts: list[_Contact] = []
        too_brief = False
        for na in names:
            expires = _delta_seconds(na.params.get("expires"), "expires Parameter")
            if expires is None:
                expires = header_expires if header_expires is not None else self.default_expires
            if 0 < expires < self.min_expires and expires < _ONE_HOUR:
                too_brief = True
            expires = min(expires, self.max_expires)
            instance_id = _instance_id(na.params.get("+sip.instance"))
            reg_id = _delta_seconds(na.params.get("reg-id"), "reg-id")
            if reg_id is not None and not 1 <= reg_id <= 2**31 - 1:
                raise SIPError(400, "Bad reg-id")
            contacts.append(_Contact(
                uri=_utf8(str(na.uri), "Contact"), expires=expires,
                q=_q_value(na.params.get("q")), instance_id=instance_id,
                reg_id=reg_id if instance_id is not None else None,
            ))
        if too_brief:
            raise SIPError(423, "Interval Too Brief",
                           [("Min-Expires", str(self.min_expires))])
        if sum(1 for c in contacts if c.expires) > self.max_contacts:
            raise SIPError(403, "Too Many Contacts")
        return False, contacts

    def _accept(self, bindings: list[Binding], request: Request, tag: str, now: float,
                path: list[str], outbound: bool) -> Response:
        """Step 8: 200 listing every binding, with Date, Path, Supported."""
        headers = [("Contact", format_binding(b, now)) for b in bindings]
        headers += [("Path", p) for p in path]
        if outbound:
            headers.append(("Require", "outbound"))
            # RFC 5626 5.4: how often the flow's keep-alives should come (UDP
            # bindings behind NATs time out in about 30 s; streams last longer)
            via = request.via[0] if request.via else None
            reliable = via is not None and via.transport.upper() != "UDP"
            headers.append(("Flow-Timer", str(FLOW_TIMER_STREAM if reliable
                                              else FLOW_TIMER_UDP)))
        headers.append(("Supported", SUPPORTED))
        headers.append(("Date", formatdate(now, usegmt=True)))
        return make_response(request, 200, to_tag=tag, headers=headers)

    def _refuse(self, failure: Failure, request: Request, tag: str, aor: str) -> Response:
        """Map a store failure to a final response."""
        if failure.check(OutOfOrder):
            error = SIPError(500, "Out Of Order CSeq")
        elif failure.check(TooManyBindings):
            error = SIPError(403, "Too Many Contacts")
        else:
            _log.failure("location store failed for {aor}", failure, aor=aor,
                         call_id=request.headers.get("Call-ID"))
            error = SIPError(503, "Location Service Unavailable",
                             [("Retry-After", str(RETRY_AFTER))])
        return self._reject(request, tag, error)

    def _reject(self, request: Request, tag: str, error: SIPError) -> Response:
        return make_response(request, error.code, error.reason, to_tag=tag,
                             headers=error.headers)
