"""The rtpengine media backend: the switch's anchoring through rtpengine.

L{RtpengineBackend} implements L{media.interfaces.IMediaBackend} with the
ng control protocol (L{media.ng}): every SDP offer and answer crossing the
switch is sent to rtpengine, which allocates its ports and sends the body
back rewritten; L{RtpengineBackend.query} and L{RtpengineBackend.delete}
turn rtpengine's per-stream counters into L{MediaStats}.

What is sent (see C{docs/rtpengine.md}):

    - C{offer}/C{answer} with C{call-id}, C{from-tag} (the tag of the party
      that made the offer), C{to-tag} (the other party's, once known) and
      the C{sdp}; the flags C{trust address} (use the SDP's addresses; the
      switch passes no SIP source address) and C{original sendrecv} (keep
      the direction attributes as they are), C{replace: [origin, session
      connection]}, C{ICE: remove}, C{supports: [load limit]}, and
      C{direction} on offers when logical interfaces are configured;
    - C{delete} with C{call-id}, the caller's C{from-tag} and C{delete
      delay: 0} (free the ports at once: the reply already holds the final
      counters);
    - C{query} with C{call-id} and the caller's C{from-tag}.

A call stays on the instance that took its first offer; a new call may
fail over to the next instance when one does not answer (or answers
C{load limit}).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime, IReactorUDP
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.sip.errors import ParseError
from b2bua.sip.sdp import SessionDescription, parse_sdp
from media.interfaces import (
    SIDES,
    MediaError,
    MediaStats,
    MediaUnavailable,
    StreamStats,
    UnknownCall,
)
from media.ng import (
    Address,
    InstanceSet,
    NgClient,
    NgError,
    NgMetrics,
    NgRemoteError,
    NgTimeout,
    parse_address,
)

__all__ = [
    "OFFER_FLAGS",
    "REPLACE",
    "RtpengineBackend",
    "RtpengineConfig",
    "parse_rtpengine_config",
    "stats_from_reply",
]

log = Logger()

#: The C{flags} of every offer and answer: use the SDP's addresses (the
#: switch passes no SIP source address), and leave the direction
#: attributes as they are (rtpengine would otherwise write its own).
OFFER_FLAGS: tuple[str, ...] = ("trust address", "original sendrecv")

#: The C{replace} list of every offer and answer.
REPLACE: tuple[str, ...] = ("origin", "session connection")

#: rtpengine's C{error-reason} for a call it does not know.
_UNKNOWN_CALL = "Unknown call-id"


@dataclass(frozen=True)
class RtpengineConfig:
    """The C{[media.rtpengine]} settings.

    @ivar instances: the ng addresses of the rtpengine instances.
    @ivar timeout: seconds to wait for a reply before sending again.
    @ivar retries: retransmissions before an instance counts as not
        answering.
    @ivar down_time: seconds a non-answering instance gets no new calls
        (unless every instance is down).
    @ivar interfaces: C{(side a, side b)} rtpengine logical interface names
        sent as C{direction} in offers, or C{None} for rtpengine's default.
    @ivar bind: the local address of the control socket (C{""}: every IPv4
        address, or every IPv6 one when an instance is IPv6).
    """

    instances: tuple[Address, ...] = (("127.0.0.1", 2223),)
    timeout: float = 1.0
    retries: int = 2
    down_time: float = 30.0
    interfaces: tuple[str, str] | None = None
    bind: str = ""


def parse_rtpengine_config(
    table: Mapping[str, Any], where: str = "media.rtpengine"
) -> RtpengineConfig:
    """Read the C{[media.rtpengine]} table.

    @param table: the table as parsed from TOML (not changed).
    @param where: the table's key path, put in front of each problem.
    @return: the settings (defaults for missing keys).
    @raise ValueError: listing every bad or unknown key, one per line,
        each naming the key (C{media.rtpengine.timeout: must be ...}).
    """
    problems: list[str] = []
    values = dict(table)
    config = RtpengineConfig()

    def bad(key: str, why: str) -> None:
        problems.append(f"{where}.{key}: {why}")

    instances = values.pop("instances", None)
    parsed: list[Address] = []
    if instances is None:
        parsed = list(config.instances)
    elif not isinstance(instances, list) or not instances:
        bad("instances", 'expected a non-empty list of "IP:PORT" strings')
    else:
        for item in instances:
            try:
                if not isinstance(item, str):
                    raise ValueError('expected "IP:PORT"')
                parsed.append(parse_address(item))
            except ValueError as error:
                bad("instances", f"{error} (got {item!r})")
        if len(set(parsed)) != len(parsed):
            bad("instances", "an instance is listed twice")

    def number(key: str, default: float, minimum: float, integer: bool = False) -> Any:
        value = values.pop(key, default)
        kinds = (int,) if integer else (int, float)
        if (
            isinstance(value, bool)
            or not isinstance(value, kinds)
            or not math.isfinite(value)
            or value < minimum
        ):
            kind = "an integer" if integer else "a finite number"
            bad(key, f"expected {kind} of at least {minimum:g} (got {value!r})")
            return default
        return value

    timeout = number("timeout", config.timeout, 0.001)
    retries = number("retries", config.retries, 0, integer=True)
    down_time = number("down_time", config.down_time, 0)
    interfaces = values.pop("interfaces", None)
    pair: tuple[str, str] | None = None
    if interfaces is not None:
        if (
            not isinstance(interfaces, list)
            or len(interfaces) != 2
            or not all(isinstance(name, str) and name for name in interfaces)
        ):
            bad("interfaces", f"expected two interface names, for side a and side b "
                              f"(got {interfaces!r})")  # fmt: skip
        else:
            pair = (interfaces[0], interfaces[1])
    bind = values.pop("bind", "")
    if not isinstance(bind, str):
        bad("bind", f"expected an IP address (got {bind!r})")
        bind = ""
    elif bind:
        try:
            parse_address(f"{bind}:1")
        except ValueError:
            bad("bind", f"expected an IP address (got {bind!r})")
    for key in values:
        bad(key, "unknown key")
    if problems:
        raise ValueError("\n".join(problems))
    return RtpengineConfig(tuple(parsed), float(timeout), int(retries), float(down_time),
                           pair, bind)  # fmt: skip


@dataclass
class _Call:
    """What the backend remembers of one call.

    @ivar address: the rtpengine instance holding it.
    @ivar a_tag: the caller's tag (the A leg's From tag).
    @ivar b_tag: the callee's tag (the A leg's To tag), once known.
    """

    address: Address
    a_tag: str
    b_tag: str | None = None


class RtpengineBackend:
    """Anchors calls' media in rtpengine (L{media.interfaces.IMediaBackend}).

    Failures are L{media.interfaces.MediaError}s: L{MediaUnavailable} when
    no instance answers an offer (or rtpengine refuses to anchor it: the
    switch answers C{503}), L{UnknownCall} for an answer or re-offer of a
    call this backend does not hold, L{MediaError} otherwise.
    """

    def __init__(
        self,
        client: NgClient,
        instances: InstanceSet,
        *,
        interfaces: tuple[str, str] | None = None,
    ) -> None:
        """
        @param client: the started ng client.
        @param instances: the rtpengine instances.
        @param interfaces: logical interface names of side a and side b,
            sent as C{direction} in offers.
        """
        self.client = client
        self.instances = instances
        self.interfaces = interfaces
        self._calls: dict[str, _Call] = {}

    @classmethod
    def from_config(
        cls,
        reactor: IReactorUDP,
        config: RtpengineConfig,
        *,
        clock: IReactorTime | None = None,
        registry: CollectorRegistry | None = None,
    ) -> RtpengineBackend:
        """Build a backend with its own started ng client.

        @param reactor: binds the control socket.
        @param config: the C{[media.rtpengine]} settings.
        @param clock: the timers' clock (the reactor by default).
        @param registry: where the ng counters go.
        """
        timer: IReactorTime = clock if clock is not None else reactor  # type: ignore[assignment]
        bind = config.bind or ("::" if any(":" in h for h, _ in config.instances) else "")
        client = NgClient(reactor, clock=timer, interface=bind, timeout=config.timeout,
                          retries=config.retries, metrics=NgMetrics(registry))  # fmt: skip
        client.start()
        instances = InstanceSet(timer, config.instances, down_time=config.down_time)
        return cls(client, instances, interfaces=config.interfaces)

    def stop(self) -> Deferred[None]:
        """Close the control socket (pending requests fail)."""
        return self.client.stop()

    @property
    def calls(self) -> int:
        """How many calls this backend holds."""
        return len(self._calls)

    def offer(
        self,
        call_id: str,
        from_tag: str,
        sdp: SessionDescription,
        *,
        to_tag: str | None = None,
        side: str = "a",
    ) -> Deferred[SessionDescription]:
        """Send an offer from C{side} through rtpengine (see the interface)."""
        _check_side(side)
        call = self._calls.get(call_id)
        if side == "b" and (to_tag is None or call is None):
            return _failed(UnknownCall(f"an offer from side b needs a known call ({call_id!r})"))
        offerer, other = (from_tag, to_tag) if side == "a" else (to_tag, from_tag)
        message = self._message("offer", call_id, offerer, other, sdp)
        if self.interfaces is not None:
            first, second = self.interfaces
            message["direction"] = [first, second] if side == "a" else [second, first]
        if call is not None:
            result = self._request(call.address, message)
        else:
            result = self._first_offer(self.instances.candidates(call_id), message, [])

        def taken(reply: tuple[Address, dict[str, Any]]) -> SessionDescription:
            address, body = reply
            known = self._calls.setdefault(call_id, _Call(address, from_tag))
            if to_tag is not None:
                known.b_tag = to_tag
            return _rewritten(body, sdp, "offer")

        return result.addCallbacks(taken, _offer_failed, errbackArgs=(call_id,))

    def _first_offer(
        self, candidates: list[Address], message: dict[str, Any], failures: list[str]
    ) -> Deferred[tuple[Address, dict[str, Any]]]:
        """Offer a new call to each candidate in turn until one takes it."""
        address = candidates[0]

        def failed(reason: Failure) -> Any:
            error = reason.value
            overloaded = isinstance(error, NgRemoteError) and error.result == "load limit"
            if not (isinstance(error, NgTimeout) or overloaded) or len(candidates) == 1:
                if failures and isinstance(error, NgError):
                    return Failure(NgError("; ".join([*failures, str(error)])))
                return reason
            failures.append(str(error))
            return self._first_offer(candidates[1:], message, failures)

        return self._request(address, message).addErrback(failed)

    def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: SessionDescription,
        *,
        side: str = "b",
    ) -> Deferred[SessionDescription]:
        """Send the answer from C{side} through rtpengine (see the interface)."""
        _check_side(side)
        call = self._calls.get(call_id)
        if call is None:
            return _failed(UnknownCall(f"no offer was seen for call {call_id!r}"))
        offerer, answerer = (from_tag, to_tag) if side == "b" else (to_tag, from_tag)
        message = self._message("answer", call_id, offerer, answerer, sdp)
        call.b_tag = to_tag

        def done(reply: tuple[Address, dict[str, Any]]) -> SessionDescription:
            return _rewritten(reply[1], sdp, "answer")

        return self._request(call.address, message).addCallbacks(
            done, _call_failed, errbackArgs=("answer", call_id))  # fmt: skip

    def delete(self, call_id: str) -> Deferred[MediaStats | None]:
        """Delete the call in rtpengine and fire with its final statistics.

        The call is forgotten here whatever happens; when rtpengine does
        not answer, the Deferred fails with L{MediaError} and rtpengine
        frees the ports itself once its media timeout expires.
        """
        call = self._calls.pop(call_id, None)
        if call is None:
            return succeed(None)
        message = {"command": "delete", "call-id": call_id, "from-tag": call.a_tag,
                   "delete delay": 0}  # fmt: skip

        def done(reply: tuple[Address, dict[str, Any]]) -> MediaStats | None:
            body = reply[1]
            if "tags" not in body:  # "ok" with a warning: rtpengine had no such call
                return None
            return stats_from_reply(body, call.a_tag, call.b_tag)

        return self._request(call.address, message).addCallbacks(
            done, _call_failed, errbackArgs=("delete", call_id))  # fmt: skip

    def query(self, call_id: str) -> Deferred[MediaStats | None]:
        """The call's statistics now, or C{None} when rtpengine no longer
        holds it (its media timed out) or this backend never did."""
        call = self._calls.get(call_id)
        if call is None:
            return succeed(None)
        message = {"command": "query", "call-id": call_id, "from-tag": call.a_tag}

        def done(reply: tuple[Address, dict[str, Any]]) -> MediaStats:
            return stats_from_reply(reply[1], call.a_tag, call.b_tag)

        def failed(reason: Failure) -> Any:
            error = reason.value
            if isinstance(error, NgRemoteError) and error.reason == _UNKNOWN_CALL:
                return None
            return _call_failed(reason, "query", call_id)

        return self._request(call.address, message).addCallbacks(done, failed)

    def _message(
        self,
        command: str,
        call_id: str,
        from_tag: str | None,
        to_tag: str | None,
        sdp: SessionDescription,
    ) -> dict[str, Any]:
        """An offer or answer request."""
        message: dict[str, Any] = {
            "command": command,
            "call-id": call_id,
            "from-tag": from_tag,
            "sdp": sdp.to_bytes(),
            "flags": list(OFFER_FLAGS),
            "replace": list(REPLACE),
            "ICE": "remove",
            "supports": ["load limit"],
        }
        if to_tag is not None:
            message["to-tag"] = to_tag
        return message

    def _request(
        self, address: Address, message: dict[str, Any]
    ) -> Deferred[tuple[Address, dict[str, Any]]]:
        """Send to one instance; keep the instance set's view up to date."""

        def answered(reply: dict[str, Any]) -> tuple[Address, dict[str, Any]]:
            self.instances.mark_up(address)
            return address, reply

        def failed(reason: Failure) -> Failure:
            if isinstance(reason.value, NgTimeout):
                self.instances.mark_down(address)
            else:
                self.instances.mark_up(address)
            return reason

        return self.client.request(address, message).addCallbacks(answered, failed)


def _check_side(side: str) -> None:
    """Refuse a side that is neither C{"a"} nor C{"b"}."""
    if side not in SIDES:
        raise ValueError(f"side must be 'a' or 'b', not {side!r}")


def _failed(error: Exception) -> Deferred[Any]:
    """A Deferred that has already failed with C{error}."""
    result: Deferred[Any] = Deferred()
    result.errback(error)
    return result


def _rewritten(
    reply: Mapping[str, Any], original: SessionDescription, what: str
) -> SessionDescription:
    """The SDP of an offer or answer reply, checked against what was sent."""
    text = reply.get("sdp")
    if not isinstance(text, str):
        raise MediaError(f"rtpengine's {what} reply holds no SDP")
    try:
        rewritten = parse_sdp(text)
    except ParseError as error:
        raise MediaError(f"rtpengine's {what} reply holds bad SDP: {error}") from None
    if len(rewritten.media) != len(original.media):
        raise MediaError(f"rtpengine's {what} reply has {len(rewritten.media)} media lines, "
                         f"not {len(original.media)}")  # fmt: skip
    return rewritten


def _offer_failed(reason: Failure, call_id: str) -> Failure:
    """Turn a failed offer into L{MediaUnavailable} (the caller gets 503)."""
    error = reason.value
    if isinstance(error, NgError):
        log.warn("rtpengine offer for call {call_id} failed: {error}", call_id=call_id, error=error)
        return Failure(MediaUnavailable(str(error)))
    return reason


def _call_failed(reason: Failure, command: str, call_id: str) -> Failure:
    """Turn a failed answer, delete or query into a L{MediaError}."""
    error = reason.value
    if isinstance(error, NgRemoteError) and error.reason == _UNKNOWN_CALL:
        return Failure(UnknownCall(str(error)))
    if isinstance(error, NgError):
        log.warn("rtpengine {command} for call {call_id} failed: {error}",
                 command=command, call_id=call_id, error=error)  # fmt: skip
        return Failure(MediaError(str(error)))
    return reason


def _integer(mapping: Any, *keys: str) -> int | None:
    """The integer at C{mapping[k1][k2]...}, or C{None} when absent."""
    value = mapping
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, int) else None


def _list(value: Any) -> list[Any]:
    """C{value} when it is a list, else an empty one."""
    return value if isinstance(value, list) else []


def _rtp_stream(media: Mapping[str, Any]) -> dict[str, Any]:
    """The stream flagged C{RTP} of a media (the one carrying the media;
    the other is RTCP), or an empty dictionary."""
    for stream in _list(media.get("streams")):
        if isinstance(stream, dict) and "RTP" in _list(stream.get("flags")):
            return stream
    return {}


def _ssrc_of(media: Mapping[str, Any]) -> int | None:
    """The SSRC rtpengine saw on a media's RTP stream, if any."""
    ssrc = _rtp_stream(media).get("SSRC")
    return ssrc if isinstance(ssrc, int) else None


def stats_from_reply(reply: Mapping[str, Any], a_tag: str, b_tag: str | None) -> MediaStats:
    """Map a C{query} or C{delete} reply to L{MediaStats}.

    For each media (C{m=} line) of each party's tag, the stream flagged
    C{RTP} counts what that party sent (rtpengine counts packets received
    on the port facing it): C{packets} and C{bytes} from its C{stats},
    C{last_packet_at} from its C{last packet} (UNIX seconds) when it got
    any packet.  RTCP-derived figures come from the C{SSRC} table, where
    rtpengine files each receiver report under the SSRC of its I{sender}:

        - C{lost} and C{jitter_ms} of what party X sent are what the other
          party reported receiving (C{cumulative loss}, average C{jitter});
        - C{rtt_ms} of party X is the average C{round-trip time} of X's own
          reports (microseconds in rtpengine).

    Without RTCP reports C{lost} is 0 and the others are C{None}.

    @param reply: the decoded reply.
    @param a_tag: the caller's tag.
    @param b_tag: the callee's tag, or C{None} before an answer.
    @return: one entry per (media, side), ordered by media then side.
    """
    tags = reply.get("tags")
    ssrcs = reply.get("SSRC")
    tags = tags if isinstance(tags, dict) else {}
    ssrcs = ssrcs if isinstance(ssrcs, dict) else {}
    medias: dict[str, dict[int, dict[str, Any]]] = {}
    for side, tag in (("a", a_tag), ("b", b_tag)):
        entry = tags.get(tag) if tag is not None else None
        found: dict[int, dict[str, Any]] = {}
        for media in _list(entry.get("medias")) if isinstance(entry, dict) else ():
            index = media.get("index") if isinstance(media, dict) else None
            if isinstance(index, int) and index >= 1:
                found[index] = media
        medias[side] = found
    streams: list[StreamStats] = []
    for index in sorted(set(medias["a"]) | set(medias["b"])):
        for side, other in (("a", "b"), ("b", "a")):
            media = medias[side].get(index)
            if media is None:
                continue
            streams.append(_stream_stats(index, side, media, medias[other].get(index), ssrcs))
    return MediaStats(tuple(streams))


def _stream_stats(
    index: int,
    side: str,
    media: Mapping[str, Any],
    peer: Mapping[str, Any] | None,
    ssrcs: Mapping[str, Any],
) -> StreamStats:
    """One L{StreamStats} from a media of a tag and the same media of the peer."""
    rtp = _rtp_stream(media)
    packets = _integer(rtp, "stats", "packets") or 0
    last = _integer(rtp, "last packet")
    own_ssrc = _ssrc_of(media)
    peer_ssrc = _ssrc_of(peer) if peer is not None else None
    own = ssrcs.get(str(own_ssrc)) if own_ssrc is not None else None
    heard = ssrcs.get(str(peer_ssrc)) if peer_ssrc is not None else None
    lost = _integer(heard, "cumulative loss")
    jitter = _integer(heard, "average MOS", "jitter")
    rtt = _integer(own, "average MOS", "round-trip time")
    kind = media.get("type")
    return StreamStats(
        index=index - 1,
        media=kind if isinstance(kind, str) else "",
        side=side,
        packets=packets,
        bytes=_integer(rtp, "stats", "bytes") or 0,
        lost=max(lost or 0, 0),
        jitter_ms=float(jitter) if jitter is not None else None,
        rtt_ms=rtt / 1000.0 if rtt is not None else None,
        last_packet_at=float(last) if packets and last is not None else None,
    )
