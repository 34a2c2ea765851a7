"""Manifest of the SIP torture-test corpus in C{tests/trial/sip/torture/}.

The corpus holds every message of RFC 4475 ("SIP Torture Test Messages")
section 3 and every message of RFC 5118 ("SIP Torture Test Messages for
IPv6") section 4, one C{.dat} file per message.  C{torture/README.md} says
where the bytes come from; in short:

  - RFC 4475 files are the members of the RFC's bit-exact archive (Appendix
    A.1), byte for byte, under the RFC's own file names (C{wsinv.dat}, ...).
  - RFC 5118 files are the section 4 message texts in wire form (CRLF line
    ends, an empty line ending the header section), checked identical to the
    RFC's own archive apart from its bare-LF line ends.  Their names carry an
    C{ipv6-} prefix in front of the RFC's name (C{ipv6-port-ambiguous.dat},
    C{ipv6-ipv6-good.dat}).

Each L{TortureMessage} records its RFC section and title, a C{kind} and a
one-line C{note} with the handling the RFC asks for.  C{kind} is one of:

  - C{"valid"}: must parse and be answerable (RFC 4475 3.1.1 and 3.4, and the
    RFC 5118 messages the RFC says must be accepted);
  - C{"invalid"}: a parser must reject it, or request validation must answer
    it (mostly 400; the note says when the RFC asks for something else, such
    as 505, 501 or silently dropping a response) -- RFC 4475 3.1.2 and RFC
    5118 4.2;
  - C{"semantic"}: syntactically fine, but the transaction or application
    layer must reject or handle it specially -- RFC 4475 3.2 and 3.3.

The notes also flag the corpus's traps: C{baddn.dat} has no empty line ending
its header section, C{dblreq.dat} carries a second request after the first,
and the three RFC 5118 messages with SDP declare a Content-Length that does
not match their body.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

#: The directory holding the C{.dat} files.
CORPUS_DIR = pathlib.Path(__file__).parent / "torture"

#: The values L{TortureMessage.kind} takes.
KINDS = frozenset({"valid", "invalid", "semantic"})

#: Prefix of the RFC 5118 file names.
IPV6_PREFIX = "ipv6-"


@dataclass(frozen=True)
class TortureMessage:
    """One message of the corpus.

    @ivar name: the file name without C{.dat}: the RFC's message name, with
        C{ipv6-} in front for RFC 5118 messages.
    @ivar section: C{"RFC 4475 3.1.1.1"}, C{"RFC 5118 4.1"}, ...
    @ivar title: the title of that section, as the RFC spells it.
    @ivar kind: C{"valid"}, C{"invalid"} or C{"semantic"} (see the module
        docstring).
    @ivar note: what the RFC says the handling should be, in one line.
    """

    name: str
    section: str
    title: str
    kind: str
    note: str

    @property
    def filename(self) -> str:
        """The C{.dat} file name, relative to L{CORPUS_DIR}."""
        return f"{self.name}.dat"

    @property
    def rfc(self) -> int:
        """The RFC the message comes from: C{4475} or C{5118}."""
        return int(self.section.split()[1])

    @property
    def rfc_name(self) -> str:
        """The message's name in the RFC ("Message Details"), without our prefix."""
        if self.rfc == 5118:
            return self.name.removeprefix(IPV6_PREFIX)
        return self.name


def _m(name: str, section: str, title: str, kind: str, note: str) -> TortureMessage:
    """Build a L{TortureMessage}; shorthand for the table below."""
    return TortureMessage(name, section, title, kind, note)


_V, _I, _S = "valid", "invalid", "semantic"
_4 = "RFC 4475 "
_5 = "RFC 5118 "

# One entry per message, kept compact on purpose.
# fmt: off
MESSAGES: tuple[TortureMessage, ...] = (
    # RFC 4475 3.1.1: valid messages.
    _m("wsinv", _4 + "3.1.1.1", "A Short Tortuous INVITE", _V,
       "must parse as well-formed: folding, LWS around ':' ';' '/' '=', odd-case and "
       "short/long header names, escaped quotes, empty Subject, leading zeros in "
       "Max-Forwards/CSeq; the ';;,,;;,;' unknown header is an opaque value"),
    _m("intmeth", _4 + "3.1.1.2", "Wide Range of Valid Characters", _V,
       "must parse: odd token characters in method, Request-URI, branch and tag, quoted "
       "NUL/BEL/DEL in the To display name, UTF-8 values; proxy forwards or answers 404, "
       "endpoint answers 501 with Allow"),
    _m("esc01", _4 + "3.1.1.3", "Valid Use of the % Escaping Mechanism", _V,
       "must parse; %HH in SIP URIs equals the encoded character, never unescaped "
       "recursively (n%61me=v%61lue%25%34%31 is name=value%41, not valueA)"),
    _m("escnull", _4 + "3.1.1.4", "Escaped Nulls in URIs", _V,
       "must parse; %00 in a userpart must not shorten the AOR; registers two distinct "
       "contacts"),
    _m("esc02", _4 + "3.1.1.5", "Use of % When It Is Not an Escape", _V,
       "must parse; RE%47IST%45R is an unknown method, not REGISTER (endpoint answers "
       "501); C%6Fntact is an unknown header, so two Contact values, not three"),
    _m("lwsdisp", _4 + "3.1.1.6", "Message with No LWS between Display Name and <", _V,
       "accept as well formed although RFC 3261's grammar wants LWS before '<' "
       "(caller<sip:...>; a known spec bug)"),
    _m("longreq", _4 + "3.1.1.7", "Long Values in Header Fields", _V,
       "must parse: very long display name, URI and header parameters, tag, Call-ID "
       "and unknown header, and 34 Via values"),
    _m("dblreq", _4 + "3.1.1.8", "Extra Trailing Octets in a UDP Datagram", _V,
       "handle the REGISTER (Content-Length: 0) normally; the INVITE-looking octets after "
       "it are noise to discard (RFC 3261 18.3) and never forward"),
    _m("semiuri", _4 + "3.1.1.9", "Semicolon-Separated Parameters in URI User Part", _V,
       "must parse; the Request-URI user part is 'user;par=u@example.net'"),
    _m("transports", _4 + "3.1.1.10", "Varied and Unknown Transport Types", _V,
       "must parse; Via transports UDP, SCTP, TLS, UNKNOWN and TCP, the unknown one "
       "processed like any other"),
    _m("mpart01", _4 + "3.1.1.11", "Multipart MIME Message", _V,
       "must parse and frame by Content-Length (553): the binary part holds 0x00 and bare "
       "LF octets; accept even if multipart is unsupported above the parser"),
    _m("unreason", _4 + "3.1.1.12", "Unusual Reason Phrase", _V,
       "must parse: 200 response whose reason phrase holds '=', '*' and non-ASCII UTF-8"),
    _m("noreason", _4 + "3.1.1.13", "Empty Reason Phrase", _V,
       "must parse: 'SIP/2.0 100 ' with an empty reason phrase (the SP after the code "
       "is there and required)"),
    # RFC 4475 3.1.2: invalid messages.
    _m("badinv01", _4 + "3.1.2.1", "Extraneous Header Field Separators", _I,
       "400: stray ';;,;,,' in Via and ';;;;' in Contact"),
    _m("clerr", _4 + "3.1.2.2", "Content Length Larger Than Message", _I,
       "400 over UDP: Content-Length 9999 is larger than the message; on a stream, wait "
       "for more data and close the connection if none comes"),
    _m("ncl", _4 + "3.1.2.3", "Negative Content-Length", _I,
       "error response (Content-Length -999): over UDP discard the rest of the datagram, "
       "over TCP close the connection (unrecoverable framing); never use it as a count"),
    _m("scalar02", _4 + "3.1.2.4", "Request Scalar Fields with Overlarge Values", _I,
       "400 because CSeq > 2**32-1 (Max-Forwards 300 alone could be treated as absent; "
       "overlarge Expires/expires alone could default to 3600)"),
    _m("scalarlg", _4 + "3.1.2.5", "Response Scalar Fields with Overlarge Values", _I,
       "response with CSeq > 2**32-1, huge Retry-After and 4-digit warn-code: discard it"),
    _m("quotbal", _4 + "3.1.2.6", "Unterminated Quoted String in Display Name", _I,
       "400: unterminated quote in the To display name (a liberal element may infer the "
       "closing quote, with care)"),
    _m("ltgtruri", _4 + "3.1.2.7", "<> Enclosing Request-URI", _I,
       "400 for a Request-URI inside <> (a liberal element may drop the brackets and must "
       "not forward them)"),
    _m("lwsruri", _4 + "3.1.2.8", "Malformed SIP Request-URI (embedded LWS)", _I,
       "400 for LWS inside the Request-URI ('sip:user@example.com; lr')"),
    _m("lwsstart", _4 + "3.1.2.9", "Multiple SP Separating Request-Line Elements", _I,
       "may be rejected as malformed (400); a liberal element may ignore the extra SP and "
       "must not forward them"),
    _m("trws", _4 + "3.1.2.10", "SP Characters at End of Request-Line", _I,
       "may be rejected as malformed (400); a liberal element may ignore the two SP after "
       "SIP/2.0 and must not forward them"),
    _m("escruri", _4 + "3.1.2.11", "Escaped Headers in SIP Request-URI", _I,
       "may be answered 400; a liberal element ignores the ?Route= header, and a proxy "
       "must neither forward it in the Request-URI nor turn it into a header"),
    _m("baddate", _4 + "3.1.2.12", "Invalid Time Zone in Date Header Field", _I,
       "Date in EST (only GMT is legal): may be rejected as malformed, but better ignore "
       "the Date unless it matters, or convert it to GMT"),
    _m("regbadct", _4 + "3.1.2.13", "Failure to Enclose name-addr URI in <>", _I,
       "400: a Contact URI with ?headers must be a name-addr in <> (a liberal element may "
       "infer the brackets here)"),
    _m("badaspec", _4 + "3.1.2.14", "Spaces within addr-spec", _I,
       "parser must not break; 400 is reasonable for '< sip:t.watson@example.org >' (a "
       "liberal element may ignore the spaces)"),
    _m("baddn", _4 + "3.1.2.15", "Non-token Characters in Display Name", _I,
       "400 for unquoted display names with ',' and '.' (a liberal element may infer the "
       "quotes, a proxy must not forward them unquoted); NB the file has no empty line "
       "ending the headers"),
    _m("badvers", _4 + "3.1.2.16", "Unknown Protocol Version", _I,
       "505 Version Not Supported (SIP/7.0)"),
    _m("mismatch01", _4 + "3.1.2.17", "Start Line and CSeq Method Mismatch", _I,
       "400: OPTIONS request whose CSeq method is INVITE"),
    _m("mismatch02", _4 + "3.1.2.18", "Unknown Method with CSeq Method Mismatch", _I,
       "501 Not Implemented preferred (400 acceptable): NEWMETHOD request whose CSeq "
       "method is INVITE"),
    _m("bigcode", _4 + "3.1.2.19", "Overlarge Response Code", _I,
       "response with status code 4294967301 (> 699): drop it"),
    # RFC 4475 3.2: transaction layer semantics.
    _m("badbranch", _4 + "3.2.1", "Missing Transaction Identifier", _S,
       "parser must not break on branch=z9hG4bK with no identifier; answer 400 (preferably "
       "statelessly) or fall back to RFC 2543 transaction matching"),
    # RFC 4475 3.3: application-layer semantics.
    _m("insuf", _4 + "3.3.1", "Missing Required Header Fields", _S,
       "must not break; ideally 400 (no Call-ID, From or To)"),
    _m("unkscm", _4 + "3.3.2", "Request-URI with Unknown Scheme", _S,
       "must parse; respond 416 Unsupported URI Scheme (never route on the To header)"),
    _m("novelsc", _4 + "3.3.3", "Request-URI with Known but Atypical Scheme", _S,
       "must parse; 416 Unsupported URI Scheme if soap.beep is never acceptable, else 404 "
       "for the URIs not accepted"),
    _m("unksm2", _4 + "3.3.4", "Unknown URI Schemes in Header Fields", _S,
       "must parse (isbn:, http:, name: URIs); a proxy handles it normally, a registrar "
       "answers 400 since To must be a SIP/SIPS AOR"),
    _m("bext01", _4 + "3.3.5", "Proxy-Require and Require", _S,
       "420 Bad Extension with Unsupported listing the Require (as UAS) or Proxy-Require "
       "(as proxy) option tags"),
    _m("invut", _4 + "3.3.6", "Unknown Content-Type", _S,
       "must parse; a proxy forwards it like any INVITE, an endpoint answers 415 "
       "Unsupported Media Type"),
    _m("regaut01", _4 + "3.3.7", "Unknown Authorization Scheme", _S,
       "must parse; a proxy forwards Authorization unchanged; a registrar ignores it or "
       "answers 401 with a scheme it knows; a non-registrar endpoint answers 405"),
    _m("multi01", _4 + "3.3.8", "Multiple Values in Single Value Required Fields", _S,
       "must not break; 400 for two Call-ID, To, From, Max-Forwards and CSeq values"),
    _m("mcl01", _4 + "3.3.9", "Multiple Content-Length Values", _S,
       "framing error (Content-Length 13 and 5): error response; over UDP discard the "
       "rest of the datagram, over TCP close the connection"),
    _m("bcast", _4 + "3.3.10", "200 OK Response with Broadcast Via Header Field Value", _S,
       "must parse; an endpoint discards it, a proxy drops it rather than forward to "
       "255.255.255.255"),
    _m("zeromf", _4 + "3.3.11", "Max-Forwards of Zero", _S,
       "legal; a proxy must not forward it and answers 483 Too Many Hops; an endpoint "
       "processes it as usual"),
    _m("cparam01", _4 + "3.3.12", "REGISTER with a Contact Header Parameter", _S,
       "REGISTER succeeds; unknownparam is a contact-param and must never show up as a "
       "url-parameter of the binding"),
    _m("cparam02", _4 + "3.3.13", "REGISTER with a url-parameter", _S,
       "REGISTER succeeds; the binding keeps unknownparam as a url-parameter"),
    _m("regescrt", _4 + "3.3.14", "REGISTER with a URL Escaped Header", _S,
       "REGISTER succeeds; the binding keeps the escaped ?Route= header in the contact URI"),
    _m("sdp01", _4 + "3.3.15", "Unacceptable Accept Offering", _S,
       "406 Not Acceptable with Warning 399 (or 400): Accept lacks application/sdp"),
    # RFC 4475 3.4: backward compatibility.
    _m("inv2543", _4 + "3.4.1", "INVITE with RFC 2543 Syntax", _V,
       "accept for backward compatibility: no Via branch, no From tag, no Max-Forwards, "
       "no Content-Length (the body is the rest of the datagram)"),
    # RFC 5118 4: parser torture tests for IPv6.
    _m("ipv6-ipv6-good", _5 + "4.1", "Valid SIP Message with an IPv6 Reference", _V,
       "must parse: IPv6 references in Request-URI, Via and Contact"),
    _m("ipv6-ipv6-bad", _5 + "4.2", "Invalid SIP Message with an IPv6 Reference", _I,
       "400 Bad Request: Request-URI sip:2001:db8::10 lacks the '[' ']' delimiters"),
    _m("ipv6-port-ambiguous", _5 + "4.3", "Port Ambiguous in a SIP URI", _V,
       "well-formed: [2001:db8::10:5070] is an IPv6 host with no port (the intended port "
       "became its last group); wrong only in intent"),
    _m("ipv6-port-unambiguous", _5 + "4.4", "Port Unambiguous in a SIP URI", _V,
       "must parse: host [2001:db8::10], port 5070"),
    _m("ipv6-via-received-param-with-delim", _5 + "4.5",
       "IPv6 Reference Delimiters in Via Header", _V,
       "must parse received=[2001:db8::9:255] although strict RFC 3261 grammar has no "
       "brackets there; never send the brackets"),
    _m("ipv6-via-received-param-no-delim", _5 + "4.5",
       "IPv6 Reference Delimiters in Via Header", _V,
       "must parse: received=2001:db8::9:255, valid per RFC 3261"),
    _m("ipv6-ipv6-in-sdp", _5 + "4.6",
       "SIP Request with IPv6 Addresses in Session Description Protocol (SDP) Body", _V,
       "must parse; IP6 SDP addresses have no brackets; NB declared Content-Length 268 "
       "but the body is 251 octets (RFC error), a strict UDP parser sees a short body"),
    _m("ipv6-mult-ip-in-header", _5 + "4.7", "Multiple IP Addresses in SIP Headers", _V,
       "must parse: Via list mixes IPv6 references (one with port 6050) and IPv4"),
    _m("ipv6-mult-ip-in-sdp", _5 + "4.8", "Multiple IP Addresses in SDP", _V,
       "must parse; one IP4 and one IP6 c= line; NB declared Content-Length 181 but the "
       "body is 189 octets (RFC error), so framing cuts the last 8"),
    _m("ipv6-ipv4-mapped-ipv6", _5 + "4.9", "IPv4-Mapped IPv6 Addresses", _V,
       "must parse [::ffff:192.0.2.10]:19823 and ::ffff:192.0.2.2 in Via, Contact and "
       "SDP; NB declared Content-Length 236 but the body is 245 octets (236 with LF ends)"),
    _m("ipv6-ipv6-bug-abnf-3-colons", _5 + "4.10", "IPv6 Reference Bug in RFC 3261 ABNF", _V,
       "must tolerate [2001:db8:::192.0.2.1] (RFC 3261's ABNF admits the extra colon) "
       "and parse; a proxy may re-serialize it as [2001:db8::192.0.2.1]"),
    _m("ipv6-ipv6-correct-abnf-2-colons", _5 + "4.10",
       "IPv6 Reference Bug in RFC 3261 ABNF", _V,
       "must parse: the correct form [2001:db8::192.0.2.1]"),
)
# fmt: on

#: L{MESSAGES} by name.
BY_NAME: dict[str, TortureMessage] = {message.name: message for message in MESSAGES}


def messages(kind: str | None = None) -> tuple[TortureMessage, ...]:
    """Return the messages of one C{kind}, or all of them if C{kind} is L{None}."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(KINDS)}")
    return tuple(m for m in MESSAGES if kind is None or m.kind == kind)


def load(name: str) -> bytes:
    """Return the exact bytes of the message called C{name}.

    @param name: a L{TortureMessage.name} (C{"wsinv"}), or its file name
        (C{"wsinv.dat"}).
    @raise KeyError: if C{name} is not in L{MESSAGES}.
    """
    message = BY_NAME[name.removesuffix(".dat")]
    return (pathlib.Path(__file__).parent / "torture" / message.filename).read_bytes()
