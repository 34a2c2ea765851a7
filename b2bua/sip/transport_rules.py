"""The transport layer's message rules (RFC 3261 section 18, RFC 3581), sans-IO.

  - L{check_request} and L{check_response}: what a message needs before
    the layers above may see it;
  - L{salvage_request}: the start line, Via, From, To, Call-ID and CSeq of
    bytes that did not parse, so that a C{400} can still be answered;
  - L{stamp_via}: C{received} and C{rport} on the top Via of a request
    (RFC 3261 18.2.1, RFC 3581 section 4);
  - L{response_address}: where a response goes when it cannot use the
    connection its request came on (RFC 3261 18.2.2, RFC 3581 section 4);
  - L{set_sent_by}: our transport and address in the top Via of a request.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from b2bua.sip.errors import ParseError
from b2bua.sip.headers import Via
from b2bua.sip.message import Request, Response, make_response, parse_message

__all__ = [
    "DEFAULT_PORTS",
    "bad_request",
    "check_request",
    "check_response",
    "reason_phrase",
    "response_address",
    "salvage_request",
    "same_address",
    "set_sent_by",
    "stamp_via",
]

#: The port a sent-by without port means, per transport (RFC 3261 18.1.1).
DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061, "SCTP": 5060}

#: Header names (lower-case, compact forms too) a 400 needs to copy.
_SALVAGED = frozenset({"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"})

_MAX_REASON = 120


def check_request(request: Request) -> None:
    """Read what every layer below the transaction user relies on.

    That is the Request-URI, the top Via, From, To, Call-ID and CSeq, whose
    method must be the request's (RFC 3261 8.1.1, 8.2).

    @raise ParseError: naming the first problem.
    """
    if not request.via:
        raise ParseError("missing Via header")
    list(request.via)  # every Via must be readable to answer and to match
    request.uri  # noqa: B018 -- parse it now
    request.from_  # noqa: B018
    request.to  # noqa: B018
    request.call_id  # noqa: B018
    if request.cseq.method != request.method:
        raise ParseError("CSeq method does not match the request method")


def check_response(response: Response) -> None:
    """Read the top Via, Call-ID and CSeq that transaction matching uses.

    @raise ParseError: naming the first problem.
    """
    if not response.via:
        raise ParseError("missing Via header")
    response.via[0]  # only the top Via is ours to read
    response.call_id  # noqa: B018
    response.cseq  # noqa: B018


def salvage_request(data: bytes) -> Request | None:
    """Rebuild just enough of a malformed request to answer it.

    Only the request line and the Via, From, To, Call-ID and CSeq fields are
    kept; the rest (the body too) is dropped.

    @return: a request whose top Via, Call-ID and CSeq can be read, or
        C{None} when the bytes are a response or too broken for that.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    head = data if end < 0 else data[:end]
    lines = head.decode("utf-8", "surrogateescape").replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines or lines[0].startswith("SIP/"):
        return None
    kept = [lines[0]]
    keeping = False
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if keeping:
                kept.append(line)
            continue
        name = line.partition(":")[0].strip().lower()
        keeping = name in _SALVAGED
        if keeping:
            kept.append(line)
    text = "\r\n".join(kept) + "\r\n\r\n"
    try:
        request = parse_message(text.encode("utf-8", "surrogateescape"))
        if not isinstance(request, Request) or not request.via:
            return None
        list(request.via)
        request.call_id  # noqa: B018
        request.cseq  # noqa: B018
    except ParseError:
        return None
    return request


def reason_phrase(reason: str) -> str:
    """A parse error's reason made safe as a reason phrase (no controls, short)."""
    cleaned = "".join(c if " " <= c != "\x7f" else " " for c in reason).strip()
    return cleaned[:_MAX_REASON] or "Bad Request"


def bad_request(request: Request, reason: str, code: int = 400) -> Response:
    """The response to a request that failed a check (400 by default)."""
    return make_response(request, code, reason_phrase(reason))


@lru_cache(maxsize=4096)
def same_address(host: str, ip: str) -> bool:
    """True when a Via host (maybe bracketed, maybe a name) is that IP address."""
    bare = host[1:-1] if host.startswith("[") else host
    try:
        return ipaddress.ip_address(bare) == ipaddress.ip_address(ip)
    except ValueError:
        return False


def stamp_via(request: Request, remote: tuple[str, int]) -> None:
    """Add C{received} and C{rport} to the top Via of an inbound request.

    C{received} is set when the sent-by host is not the source address
    (RFC 3261 18.2.1), and always when C{rport} is present (RFC 3581
    section 4).  C{rport} gets the source port; a value the sender put
    there is replaced too (it must not steer our responses elsewhere).

    @param remote: the (host, port) the request came from.
    """
    top = request.via[0]
    host, port = remote
    params = top.params
    changed = False
    rport = "rport" in params
    if rport and params["rport"] != str(port):
        params["rport"] = str(port)
        changed = True
    wanted = rport or "received" in params or not same_address(top.host, host)
    if wanted and params.get("received") != host:
        params["received"] = host
        changed = True
    if changed:
        request.set_top_via(top)


def response_address(via: Via, transport: str) -> tuple[str, int]:
    """Where to send a response when its request's connection is unusable.

    Unreliable transports (RFC 3261 18.2.2, RFC 3581 section 4): C{maddr}
    with the sent-by port (5060 by default); else C{received} (or the
    sent-by host) with C{rport} when it has a value, else the sent-by port,
    else the transport's default port.  Reliable transports open a new
    connection to C{received} (or the sent-by host) at the sent-by port: a
    stream's C{rport} is the peer's ephemeral source port, which accepts no
    connections.

    @return: (host, port), host without IPv6 brackets (maybe a host name).
    """
    default = DEFAULT_PORTS.get(transport, 5060)
    params = via.params
    host = via.host
    if transport == "UDP":
        maddr = params.get("maddr")
        if maddr:
            return _unbracket(maddr), via.port or 5060
        rport = params.get("rport")
        port = int(rport) if rport else via.port or default
    else:
        port = via.port or default
    received = params.get("received")
    return _unbracket(received or host), port


def set_sent_by(request: Request, transport: str, sent_by: tuple[str, int]) -> None:
    """Put our transport and (host, port) in the top Via, keeping its parameters.

    @raise ParseError: when the request has no Via or a malformed top Via.
    """
    if not request.via:
        raise ParseError("request has no Via header")
    top = request.via[0]
    if top.transport == transport and top.host == sent_by[0] and top.port == sent_by[1]:
        return  # as the transaction layer wrote it: nothing to rewrite
    top.transport = transport
    top.host, top.port = sent_by
    request.set_top_via(top)


def _unbracket(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host
