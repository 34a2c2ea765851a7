"""Prometheus metrics of the media server, read at scrape time.

Nothing is counted per packet: L{MediaServerCollector} is a custom
collector that, when Prometheus scrapes, adds up the counters the calls
already keep (their L{RtpSession}'s, their jitter buffer's, their DTMF
receivers') over the calls up now (L{CallWatch.live}), plus what the
calls that ended had at their end (folded in once, when the watch sees
them end).  Families (all C{b2bua_media_server_...}):

  - C{rtp_packets_sent_total}, C{rtp_packets_received_total}: RTP packets
    (audio and telephone-events) sent to and accepted from the callers;
  - C{rtp_late_packets_total}: packets received too late to be played (the
    jitter buffer's playout point had passed them);
  - C{rtp_skipped_frames_total}: frames the server did not send because
    it fell more than 100 ms behind (a stalled process: capacity);
  - C{dtmf_digits_total{source}}: digits by how they came, C{rfc4733},
    C{info} or C{inband} (see L{WatchedCall.dtmf});
  - C{calls}: calls up now;
  - C{prompts_missing}: prompt names that were asked for and played as
    silence (missing files, or no prompt set at all), since start;
  - C{conference_rooms}: conference rooms open now;
    C{conference_joins_total{result}}: joins, C{joined} or C{refused} (a
    full room);
  - C{transfers_total{outcome}}: transfers (REFERs) by how they ended
    (C{transferred}, C{failed}, C{refused}, C{timeout}, C{fallback},
    C{given_up}), and C{bad_notify}: NOTIFYs refused as malformed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from media.server.call_watch import CallWatch, WatchedCall

__all__ = ["DTMF_SOURCES", "PREFIX", "MediaServerCollector"]

PREFIX = "b2bua_media_server_"
#: The C{source} label values of the DTMF family.
DTMF_SOURCES = ("rfc4733", "info", "inband")
_RTP = ("sent", "received", "late", "skipped")


def _rtp_figures(watched: WatchedCall) -> tuple[int, int, int, int]:
    """(sent, received, late, skipped) of one call."""
    rtp = watched.rtp
    counters = rtp.counters
    return (counters.packets_sent, counters.packets_received, rtp.jitter.counters.late,
            counters.skipped_frames)


class MediaServerCollector:
    """The media server's metrics (module docstring); register it on the
    service's registry, unregister it when the user agent stops."""

    def __init__(self, ua: Any, watch: CallWatch) -> None:
        """Report on C{ua}'s calls as C{watch} follows them."""
        self._ua = ua
        self._watch = watch
        self._ended_rtp = dict.fromkeys(_RTP, 0)
        self._ended_dtmf = dict.fromkeys(DTMF_SOURCES, 0)
        watch.on_end(self._ended)

    def _ended(self, watched: WatchedCall) -> None:
        """Fold an ended call's last figures into the totals."""
        for key, value in zip(_RTP, _rtp_figures(watched), strict=True):
            self._ended_rtp[key] += value
        dtmf = watched.dtmf()
        for source in DTMF_SOURCES:
            self._ended_dtmf[source] += getattr(dtmf, source)

    def describe(self) -> list[Metric]:
        """The families, without samples (so registering collects nothing)."""
        return [*self._families(dict.fromkeys(_RTP, 0), dict.fromkeys(DTMF_SOURCES, 0),
                                0, 0, samples=False), *self._features(samples=False)]

    def collect(self) -> Iterator[Metric]:
        """The families with the totals of ended and live calls."""
        rtp = dict(self._ended_rtp)
        dtmf = dict(self._ended_dtmf)
        for watched in list(self._watch.live.values()):
            for key, value in zip(_RTP, _rtp_figures(watched), strict=True):
                rtp[key] += value
            figures = watched.dtmf()
            for source in DTMF_SOURCES:
                dtmf[source] += getattr(figures, source)
        calls = len(self._ua.calls)
        missing = len(self._ua.missing_prompts)
        yield from self._families(rtp, dtmf, calls, missing, samples=True)
        yield from self._features(samples=True)

    @staticmethod
    def _families(rtp: dict[str, int], dtmf: dict[str, int], calls: int, missing: int, *,
                  samples: bool) -> Iterator[Metric]:
        def counter(name: str, doc: str, value: int) -> Metric:
            family = CounterMetricFamily(PREFIX + name, doc)
            if samples:
                family.add_metric([], value)
            return family

        yield counter("rtp_packets_sent", "RTP packets the media server sent.", rtp["sent"])
        yield counter("rtp_packets_received", "RTP packets the media server accepted.",
                      rtp["received"])
        yield counter("rtp_late_packets", "RTP packets received too late to be played.",
                      rtp["late"])
        yield counter("rtp_skipped_frames", "Frames not sent because the media server fell "
                      "behind.", rtp["skipped"])
        digits = CounterMetricFamily(PREFIX + "dtmf_digits", "DTMF digits received by the "
                                     "media server, by source.", labels=["source"])
        if samples:
            for source in DTMF_SOURCES:
                digits.add_metric([source], dtmf[source])
        yield digits
        gauge = GaugeMetricFamily(PREFIX + "calls", "Calls the media server has up now.")
        if samples:
            gauge.add_metric([], calls)
        yield gauge
        gauge = GaugeMetricFamily(PREFIX + "prompts_missing", "Prompt names played as "
                                  "silence since start (missing or no prompt set).")
        if samples:
            gauge.add_metric([], missing)
        yield gauge

    def _features(self, *, samples: bool) -> Iterator[Metric]:
        """Conference rooms and transfers (read off the UA at scrape time)."""
        conferences = getattr(self._ua, "conferences", None)
        rooms = GaugeMetricFamily(PREFIX + "conference_rooms", "Conference rooms open now.")
        joins = CounterMetricFamily(PREFIX + "conference_joins", "Conference joins, by "
                                    "result (joined, refused: the room was full).",
                                    labels=["result"])
        if samples and conferences is not None:
            rooms.add_metric([], len(conferences.rooms))
            joins.add_metric(["joined"], conferences.joins)
            joins.add_metric(["refused"], conferences.refused)
        yield rooms
        yield joins
        transfers = CounterMetricFamily(PREFIX + "transfers", "Transfers (REFERs) the media "
                                        "server started, by outcome; bad_notify counts "
                                        "NOTIFYs refused as malformed.", labels=["outcome"])
        if samples:
            for outcome, count in sorted(dict(getattr(self._ua, "transfers", {})).items()):
                transfers.add_metric([outcome], count)
        yield transfers
