"""The media backend contract: how the switch anchors a call's media.

Two backends implement L{IMediaBackend}: the built-in relay
(L{media.backend.RelayBackend}) and an rtpengine client.  The SIP side hands
every SDP offer and answer crossing the switch to the backend and sends on
the rewritten copy it gets back; at call end it deletes the call and writes
the returned L{MediaStats} into the CDR.

Errors a backend fails its Deferreds with are typed here, so that one place
on the SIP side maps them to responses: L{MediaUnavailable} (no capacity:
answer C{503}), L{UnknownCall} (an answer or update for a call the backend
does not know), and L{MediaError} for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from b2bua.sip.sdp import SessionDescription

__all__ = [
    "SIDES",
    "IMediaBackend",
    "MediaError",
    "MediaStats",
    "MediaUnavailable",
    "StreamStats",
    "UnknownCall",
    "other_side",
]

#: The two parties of a call: C{"a"} the caller's leg, C{"b"} the callee's.
SIDES = ("a", "b")


def other_side(side: str) -> str:
    """The party opposite C{side}.

    @param side: C{"a"} or C{"b"}.
    @return: C{"b"} or C{"a"}.
    @raise ValueError: for anything else.
    """
    if side == "a":
        return "b"
    if side == "b":
        return "a"
    raise ValueError(f"side must be 'a' or 'b', not {side!r}")


class MediaError(Exception):
    """A media backend could not do what it was asked."""


class MediaUnavailable(MediaError):
    """No capacity for the call's media (ports exhausted, backend down).

    The SIP side answers the INVITE with C{503 Service Unavailable}.
    """


class UnknownCall(MediaError):
    """An answer or update named a call the backend does not know."""


@dataclass(frozen=True, slots=True)
class StreamStats:
    """Reception statistics of one stream (C{m=} line) from one party.

    @ivar index: the position of the C{m=} line in the SDP, from 0.
    @ivar media: the C{m=} media type (C{audio}, C{video}, C{image} ...).
    @ivar side: the party that SENT these packets, C{"a"} or C{"b"}.
    @ivar packets: datagrams received from that party on the stream's
        media port and accepted (latched source); RTCP on its own port is
        not counted.
    @ivar bytes: their UDP payload bytes.
    @ivar lost: packets lost on the way from that party to the backend,
        from RTP sequence numbers (RFC 3550 A.3); 0 for non-RTP media.
    @ivar jitter_ms: RFC 3550 interarrival jitter in milliseconds, or
        C{None} when not measured (non-RTP media, too few packets).
    @ivar rtt_ms: round-trip time in milliseconds between the backend and
        that party, from its RTCP reports (mean of the samples), or C{None}.
    @ivar last_packet_at: clock reading (seconds) of the last packet
        received from that party, or C{None} if none came.
    """

    index: int
    media: str
    side: str
    packets: int
    bytes: int
    lost: int
    jitter_ms: float | None
    rtt_ms: float | None
    last_packet_at: float | None


@dataclass(frozen=True, slots=True)
class MediaStats:
    """The statistics of one call: one L{StreamStats} per (stream, side).

    Streams that were disabled or replaced during the call (a re-INVITE
    setting a port to 0, audio switched to T.38 on the same line) keep
    their entries.
    """

    streams: tuple[StreamStats, ...]


@runtime_checkable
class IMediaBackend(Protocol):
    """A media anchor: rewrites SDP so that media flows through it.

    Identity of a call is C{call_id} (the A leg's Call-ID); C{from_tag}
    and C{to_tag} are the A leg's tags, for backends that key on them.
    Every method returns a Deferred; failures are L{MediaError}s.
    """

    def offer(
        self,
        call_id: str,
        from_tag: str,
        sdp: SessionDescription,
        *,
        to_tag: str | None = None,
        side: str = "a",
    ) -> Deferred[SessionDescription]:
        """An SDP offer crossing the switch from C{side}.

        Allocate (first offer) or update (re-offer) the call's streams and
        fire with a COPY of C{sdp} rewritten so that every C{m=} line's
        connection address and port (and C{a=rtcp} if present) point at
        the backend, to be sent to the other side.  Port-0 lines stay port
        0; payload types, C{a=rtpmap}/C{a=fmtp} (telephone-event included)
        and directions are kept.  C{m=image ... udptl t38} is relayed like
        RTP.

        @param call_id: the call's identity.
        @param from_tag: the A leg's From tag.
        @param sdp: the offer as received; not changed.
        @param to_tag: the A leg's To tag, once known.
        @param side: C{"a"} (the caller's leg) or C{"b"} (the callee's).
        @return: a Deferred firing with the rewritten copy, or failing with
            L{MediaUnavailable} when there is no capacity.
        """
        ...

    def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: SessionDescription,
        *,
        side: str = "b",
    ) -> Deferred[SessionDescription]:
        """The SDP answer to the last offer, from C{side}; same rewriting.

        @param call_id: the call's identity.
        @param from_tag: the A leg's From tag.
        @param to_tag: the A leg's To tag.
        @param sdp: the answer as received; not changed.
        @param side: the party that wrote the answer.
        @return: a Deferred firing with the rewritten copy, or failing with
            L{UnknownCall} when no offer was seen for the call.
        """
        ...

    def delete(self, call_id: str) -> Deferred[MediaStats | None]:
        """The call ended: free its resources.

        @param call_id: the call's identity.
        @return: a Deferred firing with its final statistics (C{None} for
            an unknown call) once everything is released.
        """
        ...

    def query(self, call_id: str) -> Deferred[MediaStats | None]:
        """The call's statistics now.

        @param call_id: the call's identity.
        @return: a Deferred firing with the statistics, or C{None} for an
            unknown call.
        """
        ...
