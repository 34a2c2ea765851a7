"""DTMF in SIP INFO bodies: C{application/dtmf-relay} and C{application/dtmf}.

Endpoints that signal digits out of band without RFC 4733 send a SIP INFO
request per key press.  Two body formats are in use:

* C{application/dtmf-relay}: lines of C{key=value}, C{Signal} the digit and
  C{Duration} the press in milliseconds::

      Signal=5
      Duration=160

* C{application/dtmf}: the digit alone (C{5}).

L{parse_info_body} reads either into a L{DtmfEvent} (source
L{SOURCE_INFO}); L{build_info_body} writes one.  A body that cannot be
read raises L{DtmfInfoError}, a L{SIPError} carrying the response to send:
C{415} (with an C{Accept} header) for another content type, C{400} for a
malformed body.

Readers accept what deployed endpoints send: keys in any case, spaces
around C{=}, CRLF or LF line ends, other keys ignored, the signal as a
character (C{0-9 * # A-D}, C{a-d}, C{!} for a flash) or as its RFC 4733
event code (C{10} for C{*}, C{11} for C{#}, C{12}-C{15} for C{A}-C{D},
C{16} for a flash).  A missing C{Duration} means L{DEFAULT_DURATION_MS}.
"""

from __future__ import annotations

from b2bua.sip.errors import SIPError
from media.server.dtmf import (
    DIGITS,
    MAX_SEND_DURATION_MS,
    SOURCE_INFO,
    DtmfError,
    DtmfEvent,
    digit_to_event,
)

__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_DURATION_MS",
    "DTMF",
    "DTMF_RELAY",
    "DtmfInfoError",
    "build_dtmf",
    "build_dtmf_relay",
    "build_info_body",
    "parse_dtmf",
    "parse_dtmf_relay",
    "parse_info_body",
]

#: The content type of C{Signal=}/C{Duration=} bodies.
DTMF_RELAY = "application/dtmf-relay"
#: The content type of a body holding the digit alone.
DTMF = "application/dtmf"
#: The content types understood, in order of preference (for C{Accept}).
CONTENT_TYPES = (DTMF_RELAY, DTMF)
#: The duration given to a digit whose body does not state one.
DEFAULT_DURATION_MS = 100
#: The longest body read; DTMF bodies are a few dozen bytes.
MAX_BODY_BYTES = 1024


class DtmfInfoError(SIPError):
    """An INFO body that is not a DTMF digit; C{code} is the response to send."""


def parse_info_body(content_type: str, body: bytes | str) -> DtmfEvent:
    """Read the digit in an INFO request's body.

    @param content_type: the Content-Type header value (parameters allowed).
    @param body: the message body.
    @raise DtmfInfoError: 415 for another content type, 400 for a body
        that holds no valid digit.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == DTMF_RELAY:
        return parse_dtmf_relay(body)
    if media_type == DTMF:
        return parse_dtmf(body)
    raise DtmfInfoError(415, "Unsupported Media Type", [("Accept", ", ".join(CONTENT_TYPES))])


def parse_dtmf_relay(body: bytes | str) -> DtmfEvent:
    """Read an C{application/dtmf-relay} body.

    @raise DtmfInfoError: (400) without a C{Signal}, with two, with a
        signal that is not a digit or a duration that is not a number of
        milliseconds.
    """
    signal: str | None = None
    duration: str | None = None
    for line in _text(body).splitlines():
        if not line.strip():
            continue
        key, equals, value = line.partition("=")
        if not equals:
            raise _bad(f"DTMF line without '=': {line.strip()[:40]!r}")
        key = key.strip().lower()
        if key == "signal":
            if signal is not None:
                raise _bad("more than one DTMF Signal")
            signal = value.strip()
        elif key == "duration":
            if duration is not None:
                raise _bad("more than one DTMF Duration")
            duration = value.strip()
    if signal is None:
        raise _bad("DTMF body without Signal")
    return DtmfEvent(_digit(signal), _duration(duration), SOURCE_INFO)


def parse_dtmf(body: bytes | str) -> DtmfEvent:
    """Read an C{application/dtmf} body (the digit alone).

    @raise DtmfInfoError: (400) when the body is not one digit.
    """
    return DtmfEvent(_digit(_text(body).strip()), DEFAULT_DURATION_MS, SOURCE_INFO)


def build_dtmf_relay(event: DtmfEvent) -> bytes:
    """The C{application/dtmf-relay} body for C{event}.

    A flash is written as C{Signal=16}, the form endpoints recognise.
    """
    return f"Signal={_signal(event.digit)}\r\nDuration={event.duration_ms}\r\n".encode("ascii")


def build_dtmf(event: DtmfEvent) -> bytes:
    """The C{application/dtmf} body for C{event} (its duration is not carried)."""
    return _signal(event.digit).encode("ascii")


def build_info_body(event: DtmfEvent, content_type: str = DTMF_RELAY) -> tuple[str, bytes]:
    """The Content-Type and body of an INFO request carrying C{event}.

    @raise ValueError: for a content type other than L{CONTENT_TYPES}.
    """
    if content_type == DTMF_RELAY:
        return content_type, build_dtmf_relay(event)
    if content_type == DTMF:
        return content_type, build_dtmf(event)
    raise ValueError(f"not a DTMF content type: {content_type!r}")


def _signal(digit: str) -> str:
    """The C{Signal} value of C{digit}."""
    return "16" if digit == DIGITS[16] else digit


def _text(body: bytes | str) -> str:
    """The body as text; only ASCII bodies of bounded size are DTMF."""
    if len(body) > MAX_BODY_BYTES:
        raise _bad("DTMF body too long")
    if isinstance(body, str):
        return body
    try:
        return body.decode("ascii")
    except UnicodeDecodeError:
        raise _bad("DTMF body is not ASCII") from None


def _digit(signal: str) -> str:
    """The digit a C{Signal} value names (a character or an event code)."""
    if signal.isascii() and signal.isdigit() and len(signal) == 2 and int(signal) < len(DIGITS):
        return DIGITS[int(signal)]
    try:
        return DIGITS[digit_to_event(signal)]
    except DtmfError:
        raise _bad(f"not a DTMF signal: {signal[:20]!r}") from None


def _duration(value: str | None) -> int:
    """The C{Duration} in milliseconds (the default when absent)."""
    if value is None:
        return DEFAULT_DURATION_MS
    if not value.isascii() or not value.isdigit() or int(value) > MAX_SEND_DURATION_MS:
        raise _bad(f"bad DTMF Duration: {value[:20]!r}")
    return int(value)


def _bad(reason: str) -> DtmfInfoError:
    """A 400 error naming the problem."""
    return DtmfInfoError(400, reason)
