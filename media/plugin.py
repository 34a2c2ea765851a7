"""The C{media} plugin: every call's media anchored through a media
backend (C{media.interfaces.IMediaBackend}: the built-in relay, or
rtpengine), on the core's hooks.  The contract is in
C{docs/media-anchoring.md}.

  - B{the first offer} (the caller's INVITE SDP) is anchored while the call
    is authorised (C{b2bua_authorize_call}, lazily): the backend opens the
    call's ports before any B leg exists, and a backend out of ports
    refuses the call with C{503} and C{Retry-After} instead of letting it
    ring with media that cannot flow.  Every B leg of the hunt gets that
    anchored offer.
  - B{every later SDP} (answers in 18x and 2xx, re-INVITEs and UPDATEs
    either way, late offers and their ACK answers) goes through
    C{b2bua_rewrite_sdp}: the plugin keeps, per call, which side's offer is
    outstanding, so an SDP from the other side is its answer and one from
    the same side is a new offer; a copy repeated unchanged (the answer in
    a 180 and again in the 200) gives the same rewritten SDP without asking
    the backend twice.
  - B{the end}: C{b2bua_call_ended} deletes the call's media and leaves
    its statistics (per stream and side: packets, bytes, lost, jitter,
    round-trip time) in C{call.data["media"]}, which the CDR keeps and the
    metrics count.
  - B{call recording} (C{media/relay_recordings.py} and
    C{media/call_recording.py}, C{docs/call-recording.md}): with the built-in relay, a call whose
    policy is C{always} is recorded from its answer on; any other call (not
    C{never}) when the API asks.  The files go into
    C{call.data["recordings"]} at the end, before the CDR is built.
  - B{dead media}: the backend reports calls whose active streams have
    been silent for C{[media] media_timeout}; the plugin hangs them up
    (BYE both ways, C{Reason: Q.850;cause=102}, CDR disconnect
    C{media-timeout}).

A backend that answers later (rtpengine) anchors the first offer while
the call is authorised (the lazy hook waits), and every later SDP through
the SDP hook's Deferred: the core holds the SDP until the backend answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.core.call import Call, CallRecord
from b2bua.core.decisions import Reject
from b2bua.core.services import Services
from b2bua.hookspecs import hookimpl
from b2bua.sip.errors import ParseError
from b2bua.sip.message import Request
from b2bua.sip.sdp import SessionDescription, parse_sdp
from media.call_recording import RecordingMetrics
from media.interfaces import MediaError, MediaStats, MediaUnavailable
from media.relay_recordings import RecordingSettings, RelayRecordings

__all__ = ["CALL_RECORDINGS", "NAME", "MediaAnchor", "stats_json"]

NAME = "media"
#: Where the plugin leaves its L{RelayRecordings} in the shared state (the API's).
CALL_RECORDINGS = "call_recordings"
#: Where the service leaves the C{[media]} section (L{b2bua.config.MediaConfig}).
MEDIA_CONFIG = "media_config"
#: The answer to a call the backend cannot anchor.
NO_MEDIA = Reject(503, "Service Unavailable", (
    ("Retry-After", "5"), ("Reason", 'Q.850;cause=47;text="no media resources"')),
    source=NAME)
DEAD_MEDIA_REASON = 'Q.850;cause=102;text="media timeout"'

log = Logger()


@dataclass
class _Anchored:
    """One call's anchoring: the outstanding offer, the last SDP in and out."""

    call: Call
    tag: str = ""
    pending: str | None = None
    last: dict[str, tuple[bytes, SessionDescription]] = field(default_factory=dict)


def stats_json(stats: MediaStats) -> list[dict[str, Any]]:
    """The streams of C{stats}, JSON-ready (for the CDR)."""
    return [{"index": s.index, "media": s.media, "side": s.side, "packets": s.packets,
             "bytes": s.bytes, "lost": s.lost, "jitter_ms": s.jitter_ms, "rtt_ms": s.rtt_ms}
            for s in stats.streams]


def _replace(target: SessionDescription, source: SessionDescription) -> None:
    """Make C{target} (the hook's object) read as C{source}."""
    target.origin = source.origin
    target.session_name = source.session_name
    target.connection = source.connection
    target.bandwidths = list(source.bandwidths)
    target.attributes = list(source.attributes)
    target.media = [m.copy() for m in source.media]
    target.extra_lines = list(source.extra_lines)
    target.version = source.version


def _ready(d: Deferred[Any]) -> tuple[bool, Any]:
    """(fired, result) of a Deferred without waiting.  A fired one's
    failure is returned as a L{Failure} (and consumed); one not fired yet is
    left as it is, for callbacks to be added."""
    box: list[Any] = []

    def grab(result: Any) -> Any:
        box.append(result)
        return result

    d.addBoth(grab)
    if not box:
        return False, None
    if isinstance(box[0], Failure):
        d.addErrback(lambda _: None)
    return True, box[0]


class _Metrics:
    """What ended calls' media looked like."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.packets = Counter("b2bua_media_packets_total",
                               "RTP packets received from the parties of ended calls.",
                               registry=registry)
        self.lost = Counter("b2bua_media_lost_packets_total",
                            "RTP packets lost on their way to the switch (ended calls).",
                            registry=registry)
        self.jitter = Histogram("b2bua_media_jitter_ms",
                                "Interarrival jitter of ended calls' streams (ms).",
                                buckets=(1, 2, 5, 10, 20, 30, 50, 100, 200),
                                registry=registry)
        self.rtt = Histogram("b2bua_media_rtt_ms",
                             "Round-trip time between the switch and a party, from RTCP (ms).",
                             buckets=(5, 10, 25, 50, 100, 200, 400, 800),
                             registry=registry)
        self.dead = Counter("b2bua_media_timeouts_total",
                            "Calls ended because their media stopped.", registry=registry)
        self.refused = Counter("b2bua_media_unavailable_total",
                               "Calls refused because media could not be anchored.",
                               registry=registry)

    def ended(self, stats: MediaStats) -> None:
        for stream in stats.streams:
            self.packets.inc(stream.packets)
            self.lost.inc(max(0, stream.lost))
            if stream.jitter_ms is not None:
                self.jitter.observe(stream.jitter_ms)
            if stream.rtt_ms is not None:
                self.rtt.observe(stream.rtt_ms)


class _RelayCollector:
    """The built-in relay's own figures, read at each scrape."""

    GAUGES = (("calls", "Calls with media in the relay now."),
              ("streams", "Streams the relay carries now."),
              ("ports_in_use", "Relay UDP ports open now."),
              ("ports_capacity", "Relay UDP ports of the configured range."))
    COUNTERS = (("packets_relayed", "Packets the relay sent on."),
                ("bytes_relayed", "Bytes the relay sent on."),
                ("dropped_foreign", "Packets dropped from a source other than the latched one."),
                ("dropped_no_destination", "Packets with nowhere to go yet (address unknown, "
                                           "held)."),
                ("latches", "Sources latched."),
                ("takeovers", "Latched sources replaced by another."),
                ("ports_exhausted", "Offers refused for want of relay ports."))

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counters = self.backend.stats()
        for name, text in self.GAUGES:
            yield GaugeMetricFamily(f"b2bua_media_relay_{name}", text,
                                    value=getattr(counters, name))
        for name, text in self.COUNTERS:
            yield CounterMetricFamily(f"b2bua_media_relay_{name}", text,
                                      value=getattr(counters, name))


class MediaAnchor:
    """The media plugin (module docstring).

    @param backend: the backend to use (else C{services.extra["media_backend"]};
        without one the plugin stays idle).
    @param recording: the recording settings (else from
        C{services.extra["media_config"]}, the C{[media]} section).
    @param token: the random part of recording file names (tests).
    @ivar recordings: the calls' recordings (once configured).
    """

    def __init__(self, backend: Any = None, *, recording: RecordingSettings | None = None,
                 token: Any = None) -> None:
        self._given = backend
        self._recording = recording
        self._token = token
        self.backend: Any = None
        self.calls: dict[str, _Anchored] = {}
        self.metrics: _Metrics | None = None
        self.recordings: RelayRecordings | None = None
        self._warned = False

    @hookimpl
    def b2bua_configure(self, services: Services, settings: dict[str, Any]) -> None:
        """Take the backend; be told about dead media."""
        self.backend = self._given or services.extra.get("media_backend")
        if self.backend is None:
            return
        self.metrics = _Metrics(services.metrics.registry)
        if callable(getattr(self.backend, "stats", None)):
            services.metrics.registry.register(_RelayCollector(self.backend))
        services.extra["media_dead"] = self.media_dead
        self._configure_recording(services)

    def _configure_recording(self, services: Services) -> None:
        """Recording on the relay's taps; a warning when the policy says
        C{always} but the backend cannot record."""
        settings = self._recording or RecordingSettings.from_config(
            services.extra.get(MEDIA_CONFIG))
        relay = getattr(self.backend, "relay", None)
        if not callable(getattr(relay, "ends", None)):
            relay = None
            if settings.policy == "always":
                log.warn('media: [media] record_policy = "always" but the media backend '
                         "cannot record (only the built-in relay, [media] backend = "
                         '"relay", can): calls are not recorded')

        def live(call_id: str) -> Call | None:
            anchored = self.calls.get(call_id)
            return None if anchored is None else anchored.call

        self.recordings = RelayRecordings(
            services.clock, relay, settings, RecordingMetrics(services.metrics.registry),
            calls=live, directory=lambda: services.directory, token=self._token)
        services.extra[CALL_RECORDINGS] = self.recordings

    # -- the first offer -----------------------------------------------------------

    @hookimpl
    def b2bua_authorize_call(self, call: Call, request: Request) -> Any:
        """Anchor the caller's offer before the hunt (lazily); 503 when the
        backend cannot."""
        backend = self.backend
        if backend is None or not request.body or request.content_type != "application/sdp":
            if backend is not None:  # a late offer: anchored when it comes
                self.calls[call.id] = _Anchored(call, _from_tag(request))
            return None
        try:
            offer = parse_sdp(request.body)
        except (ValueError, ParseError):
            return None  # not ours to judge: the callee will
        anchored = self.calls[call.id] = _Anchored(call, _from_tag(request))
        # the offer as the SDP hook will see it (parsed and written again)
        text = offer.to_bytes()

        def anchor() -> Deferred[Reject | None]:
            d = backend.offer(call.id, anchored.tag, offer, side="a")

            def done(rewritten: SessionDescription) -> None:
                anchored.pending = "a"
                anchored.last["a"] = (text, rewritten)
                return None

            def failed(failure: Failure) -> Reject:
                self.calls.pop(call.id, None)
                assert self.metrics is not None
                self.metrics.refused.inc()
                if not failure.check(MediaUnavailable):
                    log.failure("media: anchoring {call_id} failed", failure, call_id=call.id)
                return NO_MEDIA

            return d.addCallbacks(done, failed)

        return anchor

    # -- every SDP crossing ----------------------------------------------------------

    @hookimpl
    def b2bua_rewrite_sdp(self, call: Call, leg: Any, sdp: SessionDescription,
                          direction: str) -> Deferred[None] | None:
        """Point the SDP at the backend (see the module docstring); a
        Deferred when the backend answers later (the core waits for it)."""
        anchored = self.calls.get(call.id)
        if anchored is None or self.backend is None:
            return
        side = "b" if leg is call.a_leg else "a"
        text = sdp.to_bytes()
        previous = anchored.last.get(side)
        if previous is not None and previous[0] == text:
            _replace(sdp, previous[1])
            return
        tag = anchored.tag
        # the callee's side is known by the tag we gave the caller (rtpengine's to-tag)
        to_tag = call.a_leg.local_tag
        if anchored.pending is not None and anchored.pending != side:
            d = self.backend.answer(call.id, tag, to_tag, sdp, side=side)
            pending = None
        else:
            d = self.backend.offer(call.id, tag, sdp, to_tag=to_tag, side=side)
            pending = side
        anchored.pending = pending  # what the backend will have seen

        def apply(result: SessionDescription) -> None:
            anchored.last[side] = (text, result)
            _replace(sdp, result)

        def failed(failure: Failure) -> None:
            log.error("media: SDP of {call_id} not anchored: {error}", call_id=call.id,
                      error=failure.getErrorMessage())

        fired, result = _ready(d)
        if fired:
            if isinstance(result, Failure):
                failed(result)
            else:
                apply(result)
            return None
        later: Deferred[None] = Deferred()
        d.addCallbacks(apply, failed).addBoth(lambda _: later.callback(None))
        return later

    # -- recording -------------------------------------------------------------------

    @hookimpl
    def b2bua_call_answered(self, call: Call, leg: Any, answered_at: float) -> None:
        """Start recording an anchored call whose policy is C{always}."""
        if self.recordings is not None and call.id in self.calls:
            self.recordings.answered(call)

    # -- the end ---------------------------------------------------------------------

    @hookimpl(tryfirst=True)
    def b2bua_call_ended(self, call: Call, record: CallRecord) -> Any:
        """Close the call's media; its statistics and recordings go to the
        CDR (runs first, so that the CDR plugin finds them)."""
        if self.recordings is not None:
            self.recordings.ended(call)
        anchored = self.calls.pop(call.id, None)
        if anchored is None or self.backend is None:
            return None
        # the statistics now, when the backend knows them at once (the relay):
        # the CDR is built right after this hook
        fired, now = _ready(self.backend.query(call.id))
        if fired and isinstance(now, MediaStats):
            call.data["media"] = stats_json(now)
        d = self.backend.delete(call.id)
        settled: Deferred[None] = Deferred()
        call.data["media_settled"] = settled

        def closed(stats: MediaStats | None) -> None:
            if stats is not None:
                call.data["media"] = stats_json(stats)
                assert self.metrics is not None
                self.metrics.ended(stats)

        def failed(failure: Failure) -> None:
            if not failure.check(MediaError):
                log.failure("media: closing {call_id} failed", failure, call_id=call.id)

        d.addCallbacks(closed, failed)
        d.addBoth(lambda _: settled.callback(None))
        return d

    def media_dead(self, call_id: str) -> None:
        """The backend saw no media on the call for too long: hang it up."""
        anchored = self.calls.get(call_id)
        if anchored is None or anchored.call.ended:
            return
        assert self.metrics is not None
        self.metrics.dead.inc()
        log.info("media: no RTP on {call_id} for too long; hanging up", call_id=call_id)
        anchored.call.hangup(DEAD_MEDIA_REASON, disconnect="media-timeout")


def _from_tag(request: Request | None) -> str:
    """The caller's From tag (rtpengine's call identity), C{""} if unknown."""
    if request is None:
        return ""
    try:
        return request.from_.tag or ""
    except (ParseError, AttributeError):
        return ""
