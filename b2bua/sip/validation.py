"""Request validation: what a UAS checks before it acts (RFC 3261 8.2, 16.3).

L{validate_request} raises L{SIPError} with the response code and a reason
phrase that names the problem (C{400 Bad CSeq: ...}, C{416 Unsupported URI
Scheme}, C{420 Bad Extension} with C{Unsupported}, C{483 Too Many Hops},
C{505 Version Not Supported}).  The one place that turns these into
responses is the transaction user.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from b2bua.sip.errors import ParseError, SIPError
from b2bua.sip.headers import split_list
from b2bua.sip.message import Request

__all__ = ["SINGLE_VALUE_HEADERS", "validate_request", "validate_response_headers"]

#: Headers that must appear at most once (RFC 3261 7.3.1, 20).
SINGLE_VALUE_HEADERS = (
    "call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type",
    "expires", "min-expires",
)

_MANDATORY = (("to", "To"), ("from", "From"), ("call-id", "Call-ID"), ("cseq", "CSeq"),
              ("via", "Via"))


def _as_set(values: Iterable[str]) -> frozenset[str] | set[str]:
    """C{values} as a set: made once per distinct tuple of values."""
    if isinstance(values, tuple):
        return _tuple_set(values)
    return set(values)


@lru_cache(maxsize=64)
def _tuple_set(values: tuple[str, ...]) -> frozenset[str]:
    return frozenset(values)


def _reason(prefix: str, error: ParseError) -> str:
    """A reason phrase: the header name and the parser's explanation."""
    return f"{prefix}: {error.reason}"[:120]


def validate_request(
    request: Request,
    *,
    supported_extensions: Iterable[str] = (),
    supported_schemes: Iterable[str] = ("sip", "sips", "tel"),
    check_max_forwards: bool = True,
    supported_encodings: Iterable[str] = ("identity",),
) -> None:
    """Check a parsed request before a UAS or B2BUA acts on it.

    @param supported_extensions: option tags we implement (C{Require}).
    @param supported_schemes: Request-URI schemes we serve.
    @param check_max_forwards: answer 483 to C{Max-Forwards: 0} (a B2BUA
        forwards, so it does; OPTIONS addressed to us may set it to C{False}).
    @raise SIPError: with the code and reason to answer.
    """
    if request.version.upper() != "SIP/2.0":
        raise SIPError(505, "Version Not Supported")
    headers = request.headers
    lines = headers.lines_by_key()
    for key, name in _MANDATORY:
        if key not in lines:
            raise SIPError(400, f"Missing {name} header")
    for key in SINGLE_VALUE_HEADERS:
        found = lines.get(key)
        if found is not None and len(found) > 1:
            raise SIPError(400, f"Multiple values in single-value header {key}")
    try:
        list(request.via)
    except ParseError as e:
        raise SIPError(400, _reason("Bad Via", e)) from None
    for name, getter in (("From", lambda: request.from_), ("To", lambda: request.to)):
        try:
            getter()
        except ParseError as e:
            raise SIPError(400, _reason(f"Bad {name}", e)) from None
    try:
        request.call_id  # noqa: B018
    except ParseError as e:
        raise SIPError(400, _reason("Bad Call-ID", e)) from None
    try:
        cseq = request.cseq
    except ParseError as e:
        raise SIPError(400, _reason("Bad CSeq", e)) from None
    if cseq.method != request.method:
        raise SIPError(400, "CSeq method does not match the request method")
    try:
        max_forwards = request.max_forwards
    except ParseError as e:
        raise SIPError(400, _reason("Bad Max-Forwards", e)) from None
    for name, getter in (("Contact", lambda: list(request.contact)),
                         ("Route", lambda: list(request.route)),
                         ("Record-Route", lambda: list(request.record_route))):
        try:
            getter()
        except ParseError as e:
            raise SIPError(400, _reason(f"Bad {name}", e)) from None
    if request.method == "REGISTER" or "expires" in headers:
        try:
            request.expires  # noqa: B018
        except ParseError as e:
            raise SIPError(400, _reason("Bad Expires", e)) from None
    if request.body and "content-type" not in headers:
        raise SIPError(400, "Missing Content-Type for a message body")
    try:
        uri = request.uri
    except ParseError as e:
        raise SIPError(400, _reason("Bad Request-URI", e)) from None
    if uri.scheme not in _as_set(supported_schemes):
        raise SIPError(416, "Unsupported URI Scheme")
    if uri.headers is not None:
        raise SIPError(400, "Headers not allowed in the Request-URI")
    if request.method == "REGISTER" and not request.to.uri.is_sip:
        raise SIPError(400, "Address-of-record must be a SIP or SIPS URI")
    if check_max_forwards and max_forwards == 0 and request.method not in ("ACK", "CANCEL"):
        raise SIPError(483, "Too Many Hops")
    try:
        used = [e.lower() for e in headers.get_all("content-encoding")] \
            if "content-encoding" in lines else []
        required = headers.get_all("require") if "require" in lines else []
    except ParseError as e:
        raise SIPError(400, _reason("Bad header", e)) from None
    encodings = {e.lower() for e in supported_encodings} if used else set()
    unknown_encodings = [e for e in used if e not in encodings]
    if unknown_encodings and request.body:
        raise SIPError(415, "Unsupported Media Type",
                       [("Accept-Encoding", ", ".join(sorted(encodings)))])
    if required and request.method not in ("ACK", "CANCEL"):
        known = {t.lower() for t in supported_extensions}
        unsupported = [t for t in required if t.lower() not in known]
        if unsupported:
            raise SIPError(420, "Bad Extension", [("Unsupported", ", ".join(unsupported))])


def validate_response_headers(response: object) -> None:
    """Check the headers a transaction needs in a response (Via, CSeq,
    Call-ID, From, To).

    @raise ParseError: naming the first bad header.
    """
    for attribute in ("via", "cseq", "call_id", "from_", "to"):
        value = getattr(response, attribute)
        if attribute == "via":
            list(value)


def option_tags(value: str) -> list[str]:
    """Split a Supported/Require header value into option tags."""
    return split_list(value)
