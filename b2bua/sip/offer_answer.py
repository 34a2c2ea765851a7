"""Offer/answer helpers (RFC 3264) over the SDP model of L{b2bua.sip.sdp}.

Everything here is sans-IO and works in place on a L{SessionDescription}
or L{MediaDescription} (take a L{SessionDescription.copy} first to keep the
original).  Policy (which address, which codecs) belongs to the caller; these
functions only apply it correctly:

 - L{rewrite_connection}: put a relay's address and ports into an offer or
   answer.
 - L{effective_direction}, L{set_direction}, L{answer_direction},
   L{is_on_hold}: media direction and hold (RFC 3264 sections 6.1 and 8.4).
 - L{filter_codecs}: keep only allowed formats; reject the stream when none
   is left.
 - L{answer_skeleton}: an answer with the offer's C{m=} lines, in order.

Hold by a null connection address (RFC 2543 C{c=IN IP4 0.0.0.0}) means
"send nothing to me" (RFC 3264 section 8.4): it removes the receive half of
the stream's direction, so C{sendrecv} reads as C{sendonly} and C{recvonly}
as C{inactive}.  Streams using ICE are exempt, since RFC 8840 uses
C{0.0.0.0} there as a placeholder before candidates are known.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from b2bua.sip.sdp import (
    INACTIVE,
    RECVONLY,
    SENDONLY,
    SENDRECV,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
)

__all__ = [
    "PLACEHOLDER_PORT",
    "answer_direction",
    "answer_skeleton",
    "effective_connection",
    "effective_direction",
    "explicit_direction",
    "filter_codecs",
    "is_null_address",
    "is_on_hold",
    "rewrite_connection",
    "set_direction",
]

#: The port L{answer_skeleton} gives accepted streams until the caller sets
#: the real one (the discard port, as RFC 8840 uses it).
PLACEHOLDER_PORT = 9

_ANSWER_DIRECTION = {SENDRECV: SENDRECV, SENDONLY: RECVONLY, RECVONLY: SENDONLY, INACTIVE: INACTIVE}
_WITHOUT_RECEIVE = {SENDRECV: SENDONLY, SENDONLY: SENDONLY, RECVONLY: INACTIVE, INACTIVE: INACTIVE}
_NULL_ADDRESSES = frozenset({"0.0.0.0", "::"})
_PER_FORMAT_ATTRIBUTES = frozenset({"rtpmap", "fmtp", "rtcp-fb"})
_AUXILIARY_CODECS = frozenset({"telephone-event", "cn"})
_ANSWER_COPIED_ATTRIBUTES = frozenset({"rtpmap", "fmtp"})


def answer_direction(offered: str) -> str:
    """The direction an answer takes for an offered direction.

    @param offered: C{sendrecv}, C{sendonly}, C{recvonly} or C{inactive}.
    @return: C{sendrecv}, C{recvonly}, C{sendonly} or C{inactive}
        respectively (RFC 3264 section 6.1).
    @raise ValueError: for any other value.
    """
    try:
        return _ANSWER_DIRECTION[offered]
    except KeyError:
        raise ValueError(f"not a media direction: {offered!r}") from None


def explicit_direction(section: SessionDescription | MediaDescription) -> str | None:
    """The direction attribute written in one section, if any.

    @param section: a session or a media description.
    @return: the first of C{a=sendrecv/sendonly/recvonly/inactive}, or
        C{None}.
    """
    for name, _ in section.attributes:
        if name in _ANSWER_DIRECTION:
            return name
    return None


def set_direction(section: SessionDescription | MediaDescription, direction: str) -> None:
    """Write a direction attribute into one section.

    The first direction attribute is replaced in place and any others are
    removed; without one, the attribute is appended.  A media-level direction
    overrides the session-level one, so setting the session's leaves
    media-level attributes in charge of their streams.

    @param section: a session or a media description.
    @param direction: C{sendrecv}, C{sendonly}, C{recvonly} or C{inactive}.
    @raise ValueError: for any other direction.
    """
    if direction not in _ANSWER_DIRECTION:
        raise ValueError(f"not a media direction: {direction!r}")
    result = []
    written = False
    for attr in section.attributes:
        if attr[0] in _ANSWER_DIRECTION:
            if not written:
                result.append((direction, None))
                written = True
        else:
            result.append(attr)
    if not written:
        result.append((direction, None))
    section.attributes[:] = result


def is_null_address(address: str) -> bool:
    """Whether a connection address is the null address used for hold.

    @param address: the C{c=} address.
    @return: C{True} for C{0.0.0.0} (and C{::}, its IPv6 twin).
    """
    return address in _NULL_ADDRESSES


def effective_connection(sdp: SessionDescription, media: MediaDescription) -> Connection | None:
    """The connection data in force for a stream.

    @param sdp: the description holding C{media}.
    @param media: one of its media descriptions.
    @return: the media-level C{c=}, else the session-level one, else
        C{None}.
    """
    return media.connection if media.connection is not None else sdp.connection


def effective_direction(
    sdp: SessionDescription, media: MediaDescription, *, legacy_hold: bool = True
) -> str:
    """The direction of a stream as seen by the side that wrote C{sdp}.

    The media-level attribute wins over the session-level one; without
    either the stream is C{sendrecv} (RFC 3264 section 5.1).

    @param sdp: the description holding C{media}.
    @param media: one of its media descriptions.
    @param legacy_hold: when true, a null connection address (RFC 2543
        hold) removes the receive half: C{sendrecv} becomes C{sendonly} and
        C{recvonly} becomes C{inactive}.  Streams with ICE are exempt.
    @return: C{sendrecv}, C{sendonly}, C{recvonly} or C{inactive}.
    """
    direction = explicit_direction(media) or explicit_direction(sdp) or SENDRECV
    if legacy_hold:
        connection = effective_connection(sdp, media)
        if (
            connection is not None
            and connection.address in _NULL_ADDRESSES
            and not media.has_attribute("ice-ufrag")
            and not sdp.has_attribute("ice-ufrag")
        ):
            return _WITHOUT_RECEIVE[direction]
    return direction


def is_on_hold(sdp: SessionDescription, media: MediaDescription | None = None) -> bool:
    """Whether the side that wrote C{sdp} is holding a stream, or the call.

    A stream is held when its L{effective_direction} (null address included)
    is C{sendonly} or C{inactive}; a rejected stream (port 0) is not held.

    @param sdp: an offer or answer.
    @param media: one of its streams; C{None} asks about the whole
        description ("held SDP", RFC 3264 section 8.4): every stream that
        is not rejected is held, and there is at least one.
    @return: C{True} if held.
    """
    if media is not None:
        return not media.rejected and effective_direction(sdp, media) in (SENDONLY, INACTIVE)
    active = [m for m in sdp.media if not m.rejected]
    return bool(active) and all(effective_direction(sdp, m) in (SENDONLY, INACTIVE) for m in active)


def rewrite_connection(
    sdp: SessionDescription,
    address: str,
    ports: Sequence[int | None] | None = None,
    *,
    rewrite_origin: bool = False,
    keep_null: bool = True,
) -> None:
    """Point the streams of C{sdp} at a new address (and ports).

    Every C{c=} line, session-level and media-level, gets C{address} with
    C{IP6} or C{IP4} as its address type; a media description that has no
    C{c=} and no session-level one to inherit gets its own.  Extra C{c=}
    lines (multicast layers) and C{a=rtcp} (RFC 3605, now stale) are
    removed from every section whose address changes.  The origin's
    sess-version is not touched: call L{SessionDescription.bump_version}
    when the description sent on a leg changes.

    @param sdp: the description to change in place.
    @param address: an IPv4 or IPv6 address (brackets allowed) or a host
        name (typed C{IP4}).
    @param ports: one entry per media description: a new port, or C{None}
        to keep it.  Rejected streams (port 0) keep port 0.
    @param rewrite_origin: also put C{address} into the C{o=} line.
    @param keep_null: leave a null (hold) address as it is, so that an
        RFC 2543 hold still reads as hold on the other leg.
    @raise ValueError: when C{ports} does not match the media count or holds
        a port outside 1-65535, or C{address} is empty.
    """
    host = address[1:-1] if address.startswith("[") and address.endswith("]") else address
    if not host or any(ch.isspace() for ch in host):
        raise ValueError(f"bad connection address: {address!r}")
    if ports is not None and len(ports) != len(sdp.media):
        raise ValueError(f"{len(ports)} ports for {len(sdp.media)} media descriptions")
    for port in ports or ():
        if port is not None and not (isinstance(port, int) and 0 < port <= 65535):
            raise ValueError(f"bad port: {port!r}")
    addrtype = "IP6" if ":" in host else "IP4"
    new = Connection("IN", addrtype, host)

    session_changed = False
    if sdp.connection is not None and not (keep_null and sdp.connection.address in _NULL_ADDRESSES):
        session_changed = sdp.connection != new
        sdp.connection = new
        _drop_extra_connections(sdp.extra_lines)
    for index, media in enumerate(sdp.media):
        changed = False
        if media.connection is not None:
            if not (keep_null and media.connection.address in _NULL_ADDRESSES):
                changed = media.connection != new
                media.connection = new
        elif sdp.connection is None:
            media.connection = new
            changed = True
        else:
            changed = session_changed
        port = None if ports is None else ports[index]
        if port is not None and media.port != 0:
            changed = changed or port != media.port
            media.port = port
        if changed:
            _drop_extra_connections(media.extra_lines)
            media.remove_attributes("rtcp")
    if rewrite_origin:
        sdp.origin = sdp.origin._replace(nettype="IN", addrtype=addrtype, address=host)


def _drop_extra_connections(extra_lines: list[tuple[str, str]]) -> None:
    """Remove the C{c=} lines kept verbatim in a section."""
    extra_lines[:] = [line for line in extra_lines if line[0] != "c"]


def filter_codecs(
    media: MediaDescription,
    names: Iterable[str] = (),
    payload_types: Iterable[int | str] = (),
    *,
    keep_telephone_event: bool = False,
) -> bool:
    """Keep only the allowed formats of a stream, in their offered order.

    A format stays when its codec name (from L{MediaDescription.codecs},
    compared case-insensitively) is in C{names}, when its payload type is in
    C{payload_types}, or when it is C{telephone-event} and
    C{keep_telephone_event} is set.  For non-RTP media (C{udptl},
    C{TCP/MSRP} ...) the format text itself is matched against C{names}, so
    C{"t38"} allows T.38.  The C{a=rtpmap}, C{a=fmtp} and C{a=rtcp-fb} lines
    of removed formats go too.

    When no format is left, or only C{telephone-event} and C{CN} (which
    carry no media on their own), the stream is rejected (port 0, RFC 3264
    section 6) and keeps its first remaining or offered format, since an
    C{m=} line needs one.

    @param media: the stream to change in place.
    @param names: allowed encoding names (C{"PCMA"}, C{"opus"}, C{"t38"}).
    @param payload_types: allowed payload types.
    @param keep_telephone_event: keep RFC 4733 C{telephone-event} formats.
    @return: C{True} if the stream is still accepted, C{False} if it is (or
        already was) rejected.
    """
    allowed_names = {name.lower() for name in names}
    allowed_types = {str(pt) for pt in payload_types}
    if keep_telephone_event:
        allowed_names.add("telephone-event")
    kept: list[str] = []
    usable = False
    if media.is_rtp:
        name_of = {str(codec.payload_type): codec.name.lower() for codec in media.codecs}
        for fmt in media.formats:
            name = name_of.get(fmt)
            if fmt in allowed_types or (name is not None and name in allowed_names):
                kept.append(fmt)
                usable = usable or name not in _AUXILIARY_CODECS
    else:
        for fmt in media.formats:
            if fmt.lower() in allowed_names or fmt in allowed_types:
                kept.append(fmt)
                usable = True
    if not usable:
        kept = kept[:1] or media.formats[:1]
        media.reject()
    removed = set(media.formats).difference(kept)
    media.formats[:] = kept
    if removed:
        media.attributes[:] = [
            attr
            for attr in media.attributes
            if not (
                attr[0] in _PER_FORMAT_ATTRIBUTES
                and attr[1] is not None
                and attr[1].partition(" ")[0] in removed
            )
        ]
    return not media.rejected


def answer_skeleton(
    offer: SessionDescription, origin: Origin, *, session_name: str = "-"
) -> SessionDescription:
    """Start an answer to C{offer} (RFC 3264 section 6).

    The answer has the offer's C{t=}/C{r=} lines and exactly its C{m=} lines
    in the same order, with the same media type and transport.  A stream the
    offer disabled (port 0) stays at port 0 with only its first format.  An
    active stream gets L{PLACEHOLDER_PORT}, all the offered formats with
    their C{a=rtpmap}/C{a=fmtp} lines, and the answer direction of the
    offered one (L{answer_direction} of L{effective_direction}).  No
    connection data is set: follow with L{rewrite_connection}, then
    L{filter_codecs} or L{MediaDescription.reject} per stream.

    @param offer: the offer being answered.
    @param origin: the answerer's own C{o=} line (its own sess-id and
        version, never the offerer's).
    @param session_name: the C{s=} text.
    @return: a new description.
    """
    timing = [line for line in offer.extra_lines if line[0] in ("t", "r")]
    answer = SessionDescription(origin, session_name, extra_lines=timing or [("t", "0 0")])
    for offered in offer.media:
        if offered.rejected:
            answer.media.append(
                MediaDescription(offered.media, 0, offered.proto, offered.formats[:1])
            )
            continue
        formats = set(offered.formats)
        attributes = [
            attr
            for attr in offered.attributes
            if attr[0] in _ANSWER_COPIED_ATTRIBUTES
            and attr[1] is not None
            and attr[1].partition(" ")[0] in formats
        ]
        attributes.append((answer_direction(effective_direction(offer, offered)), None))
        answer.media.append(
            MediaDescription(
                offered.media,
                PLACEHOLDER_PORT,
                offered.proto,
                list(offered.formats),
                attributes=attributes,
            )
        )
    return answer
