"""SDP offer/answer for the media server's own legs (RFC 3264).

L{negotiate} answers an offer the way a G.711 endpoint can honour it:

 - B{One audio stream.}  The first offered C{m=audio} line that is active
   and uses C{RTP/AVP} is accepted; every other stream (more audio, video,
   T.38 C{image}, secure or feedback profiles such as C{RTP/SAVP} and
   C{RTP/AVPF}) is rejected with port 0 in its place in the answer.
 - B{One codec.}  The answer names the first of PCMU and PCMA (8000 Hz,
   mono) in the offerer's order, with the offerer's payload type, and
   C{telephone-event/8000} (RFC 4733) when offered, with its C{a=fmtp}.
   Listing one codec tells the offerer what we will send.
 - B{Refusal.}  When no stream can be accepted, L{NotAcceptableHere} is
   raised: a L{b2bua.sip.errors.SIPError} with code 488, which the
   transaction user answers as it answers every C{SIPError}.
 - B{Direction} (RFC 3264 6.1): C{sendrecv} is answered C{sendrecv},
   C{sendonly} C{recvonly}, C{recvonly} C{sendonly} and C{inactive}
   C{inactive}; an RFC 2543 hold (connection address C{0.0.0.0}) counts as
   the offerer not receiving.  The result gives our direction; the
   session sends RTP only when it allows, and RTCP in every direction.
 - B{Packetisation.}  We send 20 ms packets whatever C{a=ptime} the offer
   has (it is a preference) and say so with C{a=ptime:20}.

The answer gets our address (C{c=} and C{o=}) and RTP port; the RTCP port
is the next one up, so no C{a=rtcp} is written, and C{a=rtcp-mux} is never
accepted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from b2bua.sip.errors import SIPError
from b2bua.sip.offer_answer import (
    answer_skeleton,
    effective_connection,
    effective_direction,
    filter_codecs,
    is_null_address,
    rewrite_connection,
)
from b2bua.sip.sdp import (
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
)
from media.server.g711 import SUPPORTED, G711Codec

__all__ = [
    "PTIME_MS",
    "Negotiation",
    "NotAcceptableHere",
    "make_origin",
    "negotiate",
]

#: The packetisation we send and announce, in milliseconds.
PTIME_MS = 20
_PROFILE = "RTP/AVP"
_RATE = 8000
_TELEPHONE_EVENT = "telephone-event"


class NotAcceptableHere(SIPError):
    """The offer holds nothing the media server can do: answer C{488}.

    The response carries a C{Warning: 305} (incompatible media format,
    RFC 3261 20.43) naming what was missing.

    @ivar detail: what was wrong with the offer, for logs and metrics.
    """

    def __init__(self, detail: str, *, agent: str = "-") -> None:
        """
        @param detail: what was wrong, in a few words.
        @param agent: the warn-agent of the Warning header (our host).
        """
        text = detail.replace("\\", "").replace('"', "'")
        super().__init__(488, "Not Acceptable Here", [("Warning", f'305 {agent} "{text}"')])
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Negotiation:
    """The outcome of answering an offer.

    @ivar answer: the SDP answer to send.
    @ivar index: the position of the accepted C{m=} line.
    @ivar codec: the G.711 law chosen.
    @ivar payload_type: its payload type (the offerer's).
    @ivar telephone_event: the telephone-event payload type, or C{None}.
    @ivar telephone_event_fmtp: its offered C{a=fmtp} events (C{"0-16"}),
        or C{None}.
    @ivar direction: our direction for the stream.
    @ivar remote: the offerer's RTP address, or C{None} when its
        connection address is null (RFC 2543 hold) or missing.  It is given
        whatever the direction: RTCP goes there in every direction.
    @ivar remote_rtcp: its RTCP address from C{a=rtcp} (RFC 3605), or
        C{None} for the RTP port plus one.
    @ivar remote_ptime: the offer's C{a=ptime} in milliseconds, or C{None}.
    """

    answer: SessionDescription
    index: int
    codec: G711Codec
    payload_type: int
    telephone_event: int | None
    telephone_event_fmtp: str | None
    direction: str
    remote: tuple[str, int] | None
    remote_rtcp: tuple[str, int] | None
    remote_ptime: int | None

    def session_parameters(self) -> dict[str, object]:
        """The keyword arguments of L{media.server.rtp_session.RtpSession}
        (and of its C{update}) this outcome sets.

        @return: C{codec}, C{payload_type}, C{telephone_event}, C{remote},
            C{remote_rtcp} and C{direction}.
        """
        return {
            "codec": self.codec,
            "payload_type": self.payload_type,
            "telephone_event": self.telephone_event,
            "remote": self.remote,
            "remote_rtcp": self.remote_rtcp,
            "direction": self.direction,
        }


def make_origin(address: str, *, rng: random.Random | None = None) -> Origin:
    """A fresh C{o=} line for our answers in a new dialog.

    Keep it for the dialog and call C{bump_version} on the answer when a
    later answer differs (RFC 3264 8).

    @param address: our address (IPv4 or IPv6).
    @param rng: randomness for the session id (default: the system's).
    @return: the origin, version 1.
    """
    source = rng if rng is not None else random.SystemRandom()
    sess_id = str(source.getrandbits(62))
    addrtype = "IP6" if ":" in address else "IP4"
    return Origin("-", sess_id, 1, "IN", addrtype, address)


def negotiate(
    offer: SessionDescription,
    *,
    address: str,
    port: int,
    origin: Origin,
    codecs: tuple[str, ...] = ("PCMU", "PCMA"),
    telephone_event: bool = True,
) -> Negotiation:
    """Answer an offer with one G.711 audio stream.

    @param offer: the offer (not changed).
    @param address: our media address for C{c=} (and C{o=}).
    @param port: our RTP port.
    @param origin: our C{o=} line (L{make_origin}).
    @param codecs: the laws we allow, by encoding name; the offerer's order
        decides among them.
    @param telephone_event: accept RFC 4733 events when offered.
    @return: the L{Negotiation}.
    @raise NotAcceptableHere: when no audio stream with PCMU or PCMA over
        C{RTP/AVP} is offered.
    @raise ValueError: for a bad port, address or codec name.
    """
    if not 0 < port <= 65535:
        raise ValueError(f"bad RTP port: {port}")
    allowed = [name.upper() for name in codecs]
    unknown = [name for name in allowed if name not in SUPPORTED]
    if unknown or not allowed:
        raise ValueError(f"codecs must be some of {sorted(SUPPORTED)}, not {list(codecs)}")
    agent = address if ":" not in address else f"[{address}]"
    index, codec, payload_type = _choose_stream(offer, allowed, agent)
    offered = offer.media[index]
    event_type, event_fmtp = _telephone_event(offered) if telephone_event else (None, None)

    answer = answer_skeleton(offer, origin)
    for position, media in enumerate(answer.media):
        if position != index:
            media.reject()
            media.attributes.clear()
    answer.connection = Connection("IN", "IP4", address)
    rewrite_connection(
        answer,
        address,
        [port if position == index else None for position in range(len(answer.media))],
        rewrite_origin=True,
        keep_null=False,
    )
    chosen = answer.media[index]
    kept = [payload_type] if event_type is None else [payload_type, event_type]
    filter_codecs(chosen, payload_types=kept)
    chosen.attributes.append(("ptime", str(PTIME_MS)))

    direction = effective_direction(answer, chosen, legacy_hold=False)
    remote = _remote(offer, offered)
    return Negotiation(
        answer=answer,
        index=index,
        codec=codec,
        payload_type=payload_type,
        telephone_event=event_type,
        telephone_event_fmtp=event_fmtp,
        direction=direction,
        remote=remote,
        remote_rtcp=_remote_rtcp(offer, offered) if remote is not None else None,
        remote_ptime=_ptime(offered),
    )


def _choose_stream(
    offer: SessionDescription, allowed: list[str], agent: str
) -> tuple[int, G711Codec, int]:
    """The first acceptable audio stream, its law and payload type."""
    reasons: list[str] = []
    for index, media in enumerate(offer.media):
        if media.media != "audio" or media.rejected:
            continue
        if media.proto.upper() != _PROFILE:
            reasons.append(f"profile {media.proto}")
            continue
        for offered in media.codecs:
            name = offered.name.upper()
            if (
                name in allowed
                and offered.clock_rate == _RATE
                and offered.channels == 1
                and _usable_payload_type(offered.payload_type)
            ):
                return index, SUPPORTED[name], offered.payload_type
        reasons.append("no PCMU or PCMA")
    if not reasons:
        raise NotAcceptableHere("no audio stream offered", agent=agent)
    raise NotAcceptableHere(f"incompatible audio: {', '.join(reasons)}", agent=agent)


def _usable_payload_type(payload_type: int) -> bool:
    """Whether an RTP payload type can be used without RTCP ambiguity."""
    return 0 <= payload_type <= 127 and not 64 <= payload_type <= 95


def _telephone_event(media: MediaDescription) -> tuple[int | None, str | None]:
    """The first offered telephone-event/8000 and its fmtp."""
    for offered in media.codecs:
        if (
            offered.name.lower() == _TELEPHONE_EVENT
            and offered.clock_rate == _RATE
            and _usable_payload_type(offered.payload_type)
        ):
            return offered.payload_type, media.fmtp(offered.payload_type)
    return None, None


def _remote(offer: SessionDescription, media: MediaDescription) -> tuple[str, int] | None:
    """The offerer's RTP address, unless it is missing or null."""
    connection = effective_connection(offer, media)
    if connection is None or is_null_address(connection.address):
        return None
    host = connection.address.split("/", 1)[0]
    return host, media.port


def _remote_rtcp(offer: SessionDescription, media: MediaDescription) -> tuple[str, int] | None:
    """The offerer's RTCP address from C{a=rtcp:<port> [IN IP4 <addr>]}."""
    value = media.get_attribute("rtcp")
    if value is None:
        return None
    parts = value.split()
    if not parts or not parts[0].isdigit() or not 0 < int(parts[0]) <= 65535:
        return None
    if len(parts) >= 4:
        host = parts[3]
    else:
        connection = effective_connection(offer, media)
        if connection is None:
            return None
        host = connection.address.split("/", 1)[0]
    return host, int(parts[0])


def _ptime(media: MediaDescription) -> int | None:
    """The offered C{a=ptime}, in whole milliseconds."""
    value = media.get_attribute("ptime")
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None
