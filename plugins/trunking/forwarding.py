"""Forwarded calls: the Diversion and History-Info headers.

A call that the switch forwards (call forwarding unconditional, on busy, on
no answer, a deflection) carries where it was first meant to go, so that
the next hop (a voicemail, a vendor, the callee's phone) can tell.  Two
headers do that, and vendors ask for one or the other:

* Diversion (RFC 5806): one entry per diverting user, newest on top, each
  with a C{reason} and a C{counter};
* History-Info (RFC 7044): one entry per target the request went to, in
  order, indexed as a tree (C{1}, C{1.1}, C{1.1.1}); a forwarded target
  carries the RFC 4458 C{cause} parameter, the entry it was forwarded from
  a C{Reason} header inside its URI.

L{add_diversion} and L{add_history_info} write them on the request sent;
L{read_forwarding} reads them back from a request received (History-Info
first, Diversion otherwise); L{apply_history_privacy} hides entries at the
trust boundary.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, unquote

from b2bua.sip.errors import ParseError
from b2bua.sip.headers import NameAddress, parse_name_addr
from b2bua.sip.message import REASON_PHRASES, Request
from b2bua.sip.uri import URI, Params
from plugins.trunking.identity import uri_number
from plugins.trunking.numbering import DialPlan

__all__ = [
    "CAUSE_BY_REASON",
    "DiversionEntry",
    "Forwarding",
    "HistoryEntry",
    "Reason",
    "add_diversion",
    "add_history_info",
    "apply_history_privacy",
    "diversions",
    "history",
    "original_called_number",
    "read_forwarding",
]


class Reason(StrEnum):
    """Why a call was forwarded: the C{reason} values of RFC 5806 section 4."""

    UNKNOWN = "unknown"
    USER_BUSY = "user-busy"
    NO_ANSWER = "no-answer"
    UNAVAILABLE = "unavailable"
    UNCONDITIONAL = "unconditional"
    TIME_OF_DAY = "time-of-day"
    DO_NOT_DISTURB = "do-not-disturb"
    DEFLECTION = "deflection"
    FOLLOW_ME = "follow-me"
    OUT_OF_SERVICE = "out-of-service"
    AWAY = "away"


#: The RFC 4458 C{cause} written for each reason.  RFC 4458 section 3.2
#: names 404 (unknown), 486 (busy), 408 (no reply), 302 (unconditional),
#: 487 (deflection during alerting), 480 (deflection immediate) and 503
#: (not reachable); the reasons it does not name are forwardings the
#: served user set up in advance, written as unconditional.
CAUSE_BY_REASON: dict[Reason, int] = {
    Reason.UNKNOWN: 404,
    Reason.USER_BUSY: 486,
    Reason.NO_ANSWER: 408,
    Reason.UNAVAILABLE: 503,
    Reason.OUT_OF_SERVICE: 503,
    Reason.UNCONDITIONAL: 302,
    Reason.TIME_OF_DAY: 302,
    Reason.DO_NOT_DISTURB: 302,
    Reason.FOLLOW_ME: 302,
    Reason.AWAY: 302,
    Reason.DEFLECTION: 480,
}

#: cause -> reason when reading (RFC 4458 section 3.2)
_REASON_BY_CAUSE: dict[int, Reason] = {
    404: Reason.UNKNOWN, 486: Reason.USER_BUSY, 408: Reason.NO_ANSWER,
    302: Reason.UNCONDITIONAL, 487: Reason.DEFLECTION, 480: Reason.DEFLECTION,
    503: Reason.UNAVAILABLE,
}

_INDEX = re.compile(r"[1-9]\d*(?:\.[1-9]\d*)*\Z")
_CAUSE_IN_REASON = re.compile(r"cause\s*=\s*(\d{3})", re.IGNORECASE)
_ANONYMOUS = URI("sip", user="anonymous", host="anonymous.invalid")


@dataclass(frozen=True)
class DiversionEntry:
    """One Diversion value (RFC 5806 section 4).

    @ivar address: the diverting user's name-addr.
    @ivar reason: the C{reason} parameter (C{unknown} when absent).
    @ivar counter: how many diversions the entry stands for (default 1).
    @ivar privacy: the C{privacy} parameter (C{full}, C{name}, C{uri},
        C{off}) or C{None}.
    """

    address: NameAddress
    reason: str
    counter: int
    privacy: str | None


@dataclass(frozen=True)
class HistoryEntry:
    """One History-Info entry (RFC 7044 section 4).

    @ivar address: the hi-targeted-to-uri with its header parameters.
    @ivar index: the C{index} (C{"1.1"}), or C{None} when missing or bad.
    @ivar cause: the RFC 4458 C{cause} URI parameter, if any.
    @ivar mapped_from: the C{mp} parameter: the index this target was
        mapped (forwarded) from.
    @ivar reason_cause: the SIP cause of the escaped Reason header in the
        URI: why the request to this target ended.
    """

    address: NameAddress
    index: str | None
    cause: int | None
    mapped_from: str | None
    reason_cause: int | None


@dataclass(frozen=True)
class Forwarding:
    """What a received request says about its forwarding.

    @ivar original: the number first called.
    @ivar last: the number that forwarded it last.
    @ivar reason: why it was last forwarded (a L{Reason} value).
    @ivar count: how many times it was forwarded.
    @ivar source: C{"history-info"} or C{"diversion"}.
    """

    original: str | None
    last: str | None
    reason: str
    count: int
    source: str


def _int(text: str | None, default: int | None = None) -> int | None:
    if text is not None and text.strip().isdigit():
        return int(text)
    return default


def diversions(request: Request) -> list[DiversionEntry]:
    """The Diversion entries, newest (top) first (RFC 5806 section 4).

    @raise ParseError: when a value is malformed.
    """
    out = []
    for value in request.headers.get_all("Diversion"):
        address = parse_name_addr(value)
        params = address.params
        out.append(DiversionEntry(address, (params.get("reason") or "unknown").lower(),
                                  _int(params.get("counter"), 1) or 1,
                                  (params.get("privacy") or "").lower() or None))
    return out


def history(request: Request) -> list[HistoryEntry]:
    """The History-Info entries, in order (RFC 7044 section 4).

    @raise ParseError: when a value is malformed.
    """
    out = []
    for value in request.headers.get_all("History-Info"):
        address = parse_name_addr(value)
        index = address.params.get("index")
        uri = address.uri
        cause = _int(uri.params.get("cause")) if uri.is_sip else None
        reason_cause = None
        for name, text in _uri_headers(uri):
            if name.lower() == "reason":
                m = _CAUSE_IN_REASON.search(text)
                reason_cause = int(m.group(1)) if m else None
        out.append(HistoryEntry(address, index if index and _INDEX.match(index) else None,
                                cause, address.params.get("mp"), reason_cause))
    return out


def _uri_headers(uri: URI) -> list[tuple[str, str]]:
    """The escaped headers of a URI (C{?Reason=...&Privacy=history}), decoded."""
    if not uri.headers:
        return []
    out = []
    for part in uri.headers.split("&"):
        name, _, value = part.partition("=")
        out.append((unquote(name), unquote(value)))
    return out


def _with_reason(uri: URI, cause: int) -> URI:
    """C{uri} with an escaped C{Reason: SIP;cause=...} header (RFC 7044 4.1)."""
    phrase = REASON_PHRASES.get(cause, "Unknown")
    reason = quote(f'SIP;cause={cause};text="{phrase}"', safe="")
    kept = [f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in _uri_headers(uri)
            if n.lower() != "reason"]
    new = uri.copy()
    new.headers = "&".join([*kept, f"Reason={reason}"])
    return new


def add_diversion(request: Request, diverted_from: URI | NameAddress, reason: str, *,
                  counter: int = 1, privacy: str | None = None) -> None:
    """Add a Diversion entry for a call forwarded by C{diverted_from} (RFC 5806 4).

    The new entry goes on top of those already there.

    @raise ValueError: on a reason RFC 5806 does not define or a counter
        below 1.
    """
    reason = Reason(reason).value
    if counter < 1:
        raise ValueError("a Diversion counter is at least 1")
    base = diverted_from if isinstance(diverted_from, NameAddress) else NameAddress(
        diverted_from)
    params = Params({"reason": reason, "counter": str(counter)})
    if privacy is not None:
        params["privacy"] = privacy
    entry = NameAddress(base.uri.copy(), base.display_name, params)
    request.headers.add_first("Diversion", str(entry))


def _child_index(entries: list[HistoryEntry], parent: str) -> str:
    """The next free child index under C{parent} (RFC 7044 10.3)."""
    depth = parent.count(".") + 1
    taken = [int(e.index.rsplit(".", 1)[1]) for e in entries
             if e.index and e.index.startswith(parent + ".") and e.index.count(".") == depth]
    return f"{parent}.{max(taken, default=0) + 1}"


def _same_target(a: URI, b: URI) -> bool:
    """True when two URIs name the same user (by number when both have one)."""
    na, nb = uri_number(a), uri_number(b)
    if na is not None and nb is not None:
        return na == nb
    return a.user_unescaped == b.user_unescaped and (a.host or "").lower() == (
        b.host or "").lower()


def add_history_info(request: Request, diverted_from: URI, target: URI,
                     reason: str) -> None:
    """Record in History-Info that the call to C{diverted_from} was forwarded
    to C{target} for C{reason} (RFC 7044 sections 9 and 10.3, RFC 4458 3.2).

    Without History-Info yet, C{diverted_from} becomes entry C{1}.  The entry
    for C{diverted_from} (the last one naming it, else a new child of the
    last entry) gets the escaped C{Reason} with the cause; C{target} is
    added as its next child with C{cause} in its URI and C{mp} naming the
    parent's index.

    @raise ValueError: on a reason RFC 5806 does not define.
    @raise ParseError: when the present entries are malformed or unindexed.
    """
    cause = CAUSE_BY_REASON[Reason(reason)]
    entries = history(request)
    if any(e.index is None for e in entries):
        raise ParseError("History-Info entry without a valid index")
    addresses = [e.address for e in entries]
    parent = next((i for i in range(len(entries) - 1, -1, -1)
                   if _same_target(entries[i].address.uri, diverted_from)), None)
    if parent is None:
        if entries:
            index = _child_index(entries, entries[-1].index or "1")
            params = Params({"index": index, "mp": entries[-1].index})
        else:
            params = Params({"index": "1"})
        addresses.append(NameAddress(diverted_from.copy(), None, params))
        entries.append(HistoryEntry(addresses[-1], params["index"], None, None, None))
        parent = len(entries) - 1
    parent_entry = entries[parent]
    parent_index = parent_entry.index or "1"
    if parent_entry.address.uri.is_sip:
        old = addresses[parent]
        addresses[parent] = NameAddress(_with_reason(old.uri, cause), old.display_name,
                                        Params(old.params))
    new_uri = target.copy()
    if new_uri.is_sip:
        new_uri.params["cause"] = str(cause)
    addresses.append(NameAddress(new_uri, None, Params(
        {"index": _child_index(entries, parent_index), "mp": parent_index})))
    request.headers.set_all("History-Info", [str(a) for a in addresses])


def read_forwarding(request: Request, plan: DialPlan | None = None) -> Forwarding | None:
    """What a received request says about its forwarding, or C{None}.

    History-Info is read first (RFC 7044): the first entry is the original
    target, the last entry with a C{cause} (or C{mp}) the last forwarding,
    its parent the user who forwarded.  Without History-Info forwardings,
    Diversion is read (RFC 5806): the bottom entry is the original called
    user, the top one the last diverting user, and the counters add up.
    Numbers are read with L{uri_number} (and C{plan} for local ones).

    @raise ParseError: when a present header is malformed.
    """
    entries = history(request)
    steps = [e for e in entries if e.cause is not None or e.mapped_from is not None]
    if steps:
        last = steps[-1]
        by_index = {e.index: e for e in entries if e.index}
        parent = by_index.get(last.mapped_from) if last.mapped_from else None
        if parent is None:
            parent = entries[entries.index(last) - 1] if entries.index(last) else last
        cause = last.cause or parent.reason_cause
        return Forwarding(
            original=uri_number(entries[0].address.uri, plan),
            last=uri_number(parent.address.uri, plan),
            reason=_REASON_BY_CAUSE.get(cause or 0, Reason.UNKNOWN).value,
            count=len(steps),
            source="history-info",
        )
    found = diversions(request)
    if not found:
        return None
    return Forwarding(
        original=uri_number(found[-1].address.uri, plan),
        last=uri_number(found[0].address.uri, plan),
        reason=found[0].reason,
        count=sum(d.counter for d in found),
        source="diversion",
    )


def original_called_number(request: Request, plan: DialPlan | None = None) -> str | None:
    """The number a forwarded call was first made to, or C{None} when the
    request carries no forwarding (see L{read_forwarding})."""
    forwarding = read_forwarding(request, plan)
    return forwarding.original if forwarding is not None else None


def apply_history_privacy(request: Request, privacy: Iterable[str], *,
                          next_hop_trusted: bool) -> None:
    """Hide forwarding history that must not leave the trust domain.

    Towards an untrusted next hop: with C{Privacy: history} every
    History-Info entry is anonymised, and otherwise those whose URI carries
    C{Privacy=history} (RFC 7044 10.1); a Diversion entry with
    C{privacy=full} gets the anonymous URI without a display name, C{uri}
    the anonymous URI, C{name} loses its display name (RFC 5806 4).
    Indexes, causes, reasons and counters stay, so the next hop still knows
    the call was forwarded and why.  Nothing
    changes towards a trusted next hop.
    """
    if next_hop_trusted:
        return
    hide_all = "history" in set(privacy)
    entries = history(request)
    if entries:
        values = []
        for entry in entries:
            address = entry.address
            private = hide_all or any(
                n.lower() == "privacy" and v.lower() == "history"
                for n, v in _uri_headers(address.uri))
            if private:
                uri = _ANONYMOUS.copy()
                if entry.cause is not None:
                    uri.params["cause"] = str(entry.cause)
                address = NameAddress(uri, None, Params(address.params))
            values.append(str(address))
        request.headers.set_all("History-Info", values)
    found = diversions(request)
    if any(d.privacy in ("full", "uri", "name") for d in found):
        values = []
        for d in found:
            address = d.address
            if d.privacy == "full":
                address = NameAddress(_ANONYMOUS.copy(), None, Params(address.params))
            elif d.privacy == "uri":
                address = NameAddress(_ANONYMOUS.copy(), address.display_name,
                                      Params(address.params))
            elif d.privacy == "name":
                address = NameAddress(address.uri, None, Params(address.params))
            values.append(str(address))
        request.headers.set_all("Diversion", values)
