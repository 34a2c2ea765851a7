"""Caller identity at the trust boundary: P-Asserted-Identity and Privacy.

The switch is a trust domain in the sense of RFC 3325: it asserts who a
caller is (P-Asserted-Identity) to the peers inside its trust domain, and
never passes on an identity it did not check.  These functions work on
parsed L{Request}s through their header API:

* on a request received, L{receive_identity} keeps P-Asserted-Identity only
  from a trusted source and takes P-Preferred-Identity as a hint (RFC 3325
  sections 5, 6 and 9);
* L{choose_caller_number} picks the number to assert among those the caller
  may use;
* on the request sent, L{assert_identity} writes P-Asserted-Identity and
  L{apply_privacy} honours the caller's Privacy (RFC 3323, RFC 3325 section
  7): outside the trust domain the identity is removed and From made
  anonymous; inside it the identity stays, marked C{Privacy: id}.

The decisions and the trust-boundary table are in C{docs/numbering.md}.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from b2bua.sip.errors import ParseError, SIPError
from b2bua.sip.headers import NameAddress, parse_name_addr
from b2bua.sip.message import Request
from b2bua.sip.uri import URI
from plugins.trunking.numbering import DialPlan, Kind, is_e164

__all__ = [
    "ANONYMOUS_FROM",
    "PRIVACY_VALUES",
    "CallerIdentity",
    "apply_privacy",
    "assert_identity",
    "choose_caller_number",
    "format_privacy",
    "is_anonymous",
    "privacy_values",
    "receive_identity",
    "set_calling_number",
    "uri_number",
]

#: The From of a caller who withholds their identity (RFC 3323 4.1.1.3).
ANONYMOUS_FROM = '"Anonymous" <sip:anonymous@anonymous.invalid>'

#: The priv-values understood, in the order they are written: RFC 3323 4.2
#: (header, session, user, none, critical), RFC 3325 9.3 (id), RFC 7044
#: 10.1 (history).
PRIVACY_VALUES = ("header", "session", "user", "id", "history", "none", "critical")

#: What "user" privacy removes besides the From: headers that say who the
#: caller is or what they use (RFC 3323 4.1.1).
_USER_HEADERS = ("Subject", "Call-Info", "Organization", "Reply-To", "In-Reply-To",
                 "User-Agent")
#: What "header" privacy removes: headers that let the callee reach the
#: caller or learn where the call came from other than through the switch
#: (RFC 3323 5.1; the switch writes its own Via, Contact and Record-Route).
_HEADER_HEADERS = ("Call-Info", "Reply-To", "In-Reply-To", "Organization", "Alert-Info")

_PAI = "P-Asserted-Identity"
_PPI = "P-Preferred-Identity"


@dataclass(frozen=True)
class CallerIdentity:
    """What the trust boundary kept of a received request's caller identity.

    @ivar asserted: P-Asserted-Identity values kept (from a trusted source
        only, RFC 3325 5).
    @ivar preferred: P-Preferred-Identity values: hints, never trusted
        (RFC 3325 9.2).
    @ivar privacy: the priv-values the caller asked for (RFC 3323 4.2).
    @ivar from_uri: the From URI as received.
    @ivar trusted: whether the source was inside the trust domain.
    """

    asserted: tuple[NameAddress, ...]
    preferred: tuple[NameAddress, ...]
    privacy: frozenset[str]
    from_uri: URI | None
    trusted: bool

    @property
    def withheld(self) -> bool:
        """True when the caller asked to keep their identity private
        (C{id} or C{user}, RFC 3323 4.2 and RFC 3325 9.3)."""
        return "none" not in self.privacy and bool(self.privacy & {"id", "user"})

    def asserted_number(self, plan: DialPlan | None = None) -> str | None:
        """The E.164 number asserted by the trusted source, if any."""
        for value in self.asserted:
            number = uri_number(value.uri, plan)
            if number is not None and is_e164(number):
                return number
        return None


def privacy_values(request: Request) -> frozenset[str]:
    """The priv-values of the request's Privacy header (RFC 3323 4.2).

    Values are separated by C{;} (and by C{,} across list elements);
    unknown values are ignored.
    """
    found = set()
    for line in request.headers.get_lines("Privacy"):
        for part in line.replace(",", ";").split(";"):
            value = part.strip().lower()
            if value in PRIVACY_VALUES:
                found.add(value)
    return frozenset(found)


def format_privacy(values: Iterable[str]) -> str:
    """A Privacy header value for C{values}, in the canonical order (RFC 3323 4.2)."""
    wanted = set(values)
    return ";".join(v for v in PRIVACY_VALUES if v in wanted)


def _identities(request: Request, name: str) -> tuple[NameAddress, ...]:
    """The values of P-Asserted- or P-Preferred-Identity (RFC 3325 9.1, 9.2).

    @raise ParseError: when a value is malformed, or there is more than one
        sip/sips URI or more than one tel URI.
    """
    values = tuple(parse_name_addr(v) for v in request.headers.get_all(name))
    sips = sum(1 for v in values if v.uri.is_sip)
    tels = sum(1 for v in values if v.uri.scheme == "tel")
    if sips > 1 or tels > 1 or sips + tels != len(values):
        raise ParseError(f"bad {name}: at most one sip and one tel URI")
    return values


def receive_identity(request: Request, *, trusted: bool) -> CallerIdentity:
    """Take the identity headers of a request received at the boundary.

    From an untrusted source P-Asserted-Identity is removed unread
    (RFC 3325 5: "MUST replace ... or remove").  From a trusted one it is
    kept.  P-Preferred-Identity is read as a hint and removed in both cases
    (RFC 3325 9.2: it never goes further than the first proxy); a malformed
    one is dropped, since a hint is not worth a rejection.

    @raise ParseError: a trusted source's P-Asserted-Identity is malformed.
    """
    asserted: tuple[NameAddress, ...] = ()
    if trusted:
        asserted = _identities(request, _PAI)
    else:
        request.headers.remove(_PAI)
    try:
        preferred = _identities(request, _PPI)
    except ParseError:
        preferred = ()
    request.headers.remove(_PPI)
    try:
        from_uri: URI | None = request.from_.uri
    except ParseError:
        from_uri = None
    return CallerIdentity(asserted, preferred, privacy_values(request), from_uri, trusted)


def choose_caller_number(identity: CallerIdentity, allowed: Collection[str],
                         default: str | None = None,
                         plan: DialPlan | None = None) -> str | None:
    """The E.164 number to assert for the caller (RFC 3325 9.1).

    A trusted source's asserted number wins.  Otherwise the numbers the
    caller offered, P-Preferred-Identity first and then From, are hints:
    the first that is in C{allowed} (the numbers the authenticated customer
    owns) is chosen; else C{default}.  Numbers written locally (C{020...})
    are read with C{plan}.
    """
    asserted = identity.asserted_number(plan)
    if asserted is not None:
        return asserted
    hints = [value.uri for value in identity.preferred]
    if identity.from_uri is not None:
        hints.append(identity.from_uri)
    for uri in hints:
        number = uri_number(uri, plan)
        if number is not None and number in allowed:
            return number
    return default


def assert_identity(request: Request, number: str, *, domain: str | None = None,
                    display_name: str | None = None, tel: bool = True) -> None:
    """Write P-Asserted-Identity for C{number} on a request sent (RFC 3325 9.1).

    One sip URI (C{sip:+44...@domain;user=phone}, when C{domain} is given)
    and one tel URI (when C{tel}) replace any existing values.

    @raise ValueError: when C{number} is not E.164 or no URI is asked for.
    """
    if not is_e164(number):
        raise ValueError(f"P-Asserted-Identity needs an E.164 number, got {number!r}")
    uris = []
    if domain is not None:
        uris.append(URI("sip", user=number, host=domain, params={"user": "phone"}))
    if tel:
        uris.append(URI("tel", user=number))
    if not uris:
        raise ValueError("P-Asserted-Identity needs a sip or a tel URI")
    request.headers.set_all(_PAI, [str(NameAddress(u, display_name)) for u in uris])


def set_calling_number(request: Request, user: str, display_name: str | None = None) -> None:
    """Put the caller number (as the vendor wants it written) in the From
    user part, keeping its host and tag (RFC 3261 8.1.1.3)."""
    old = request.from_
    uri = old.uri.copy()
    uri.user = user
    if uri.is_sip and user.lstrip("+").isdigit():
        uri.params["user"] = "phone"
    new = NameAddress(uri, display_name if display_name is not None else old.display_name,
                      old.params)
    request.headers.set("From", str(new))


def _anonymise_from(request: Request) -> None:
    """Replace From by the anonymous one, keeping the tag (RFC 3323 4.1.1.3)."""
    tag = request.from_.tag
    request.headers.set("From", ANONYMOUS_FROM + (f";tag={tag}" if tag else ""))


def apply_privacy(request: Request, privacy: Iterable[str], *, next_hop_trusted: bool,
                  media_anchored: bool = True) -> None:
    """Honour the caller's Privacy on a request sent (RFC 3323 5.1, RFC 3325 7).

    C{privacy} holds the caller's priv-values (L{privacy_values} of the
    received request).  With C{none} or nothing, nothing is hidden.
    Otherwise:

    * C{id} or C{user}: From becomes C{"Anonymous"
      <sip:anonymous@anonymous.invalid>} (the From reaches the callee
      whichever way the call goes); towards an untrusted next hop the
      P-Asserted-Identity is removed (RFC 3325 7), towards a trusted one it
      stays and C{Privacy: id} is added so that the last trusted hop removes
      it;
    * C{user}: the user-level headers (Subject, Call-Info, Organization,
      Reply-To, In-Reply-To, User-Agent) go (RFC 3323 4.1.1);
    * C{header}: headers that reveal the caller's addresses go;
    * C{session}: needs the media anchored by the switch;
    * C{critical}: a privacy that cannot be given fails the call with
      C{500} (RFC 3323 5.1).

    The Privacy header sent carries the values asked for (with C{id} added
    inside the trust domain), so the callee sees a withheld call.

    @raise SIPError: C{500} when C{critical} privacy cannot be given.
    """
    wanted = {v for v in privacy if v in PRIVACY_VALUES}
    if not wanted or "none" in wanted:
        if wanted:
            request.headers.set("Privacy", "none")
        else:
            request.headers.remove("Privacy")
        return
    if "session" in wanted and not media_anchored and "critical" in wanted:
        raise SIPError(500, "Privacy Not Available")
    if wanted & {"id", "user"}:
        _anonymise_from(request)
        if next_hop_trusted:
            wanted.add("id")
        else:
            request.headers.remove(_PAI)
    request.headers.remove(_PPI)
    removed = (_USER_HEADERS if "user" in wanted else ()) + (
        _HEADER_HEADERS if "header" in wanted else ())
    for name in removed:
        request.headers.remove(name)
    request.headers.set("Privacy", format_privacy(wanted))


def is_anonymous(uri: URI) -> bool:
    """True for the anonymous URI of RFC 3323 (or a user part "anonymous")."""
    return (uri.host or "").lower() == "anonymous.invalid" or (
        (uri.user_unescaped or "").lower() == "anonymous")


def uri_number(uri: URI, plan: DialPlan | None = None) -> str | None:
    """The number a sip/sips or tel URI names, or C{None}.

    A global number (C{+...}, visual separators allowed) gives its E.164
    form.  A local one is classified with C{plan} when given (an extension
    gives its digits, an external number its E.164 form); without a plan
    a digits-only user part is returned as it is.
    """
    if is_anonymous(uri):
        return None
    if uri.scheme == "tel":
        text = uri.user or ""
        context = uri.params.get("phone-context")
        if context:
            text = f"{text};phone-context={context}"
    elif uri.is_sip and uri.user:
        text = uri.user_unescaped or ""
    else:
        return None
    number = text.partition(";")[0].translate(str.maketrans("", "", "-.()"))
    if number.startswith("+"):
        return number if is_e164(number) else None
    if plan is not None:
        dialled = plan.classify(text)
        if dialled.kind in (Kind.E164, Kind.EXTENSION):
            return dialled.number
        return None
    return number if number.isdigit() else None
