"""The figures of music on hold (L{media.moh}): a snapshot
(L{MohCounters}) and their export to Prometheus (L{MohCollector})."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["MohCollector", "MohCounters"]


@dataclass(frozen=True, slots=True)
class MohCounters:
    """Music-on-hold figures (gauges now, counters since start).

    @ivar listeners: parties hearing music now.
    @ivar waiting: held parties hearing silence for want of a place now.
    @ivar packets_sent: RTP packets of music sent.
    @ivar packets_unsent: packets that could not be sent (no address for
        the party yet, or the socket refused).
    @ivar frames_skipped: frames left out because the timer ran too late
        to catch up.
    @ivar no_codec: holds whose held party signalled neither PCMU nor
        PCMA (no music).
    @ivar refused: holds that found every place taken (silence until one
        freed up).
    @ivar holds: holds that started music (or silence for want of a place).

    Each of the last three counts a hold at most once, however often the
    held party changes its codec during it.
    """

    listeners: int
    waiting: int
    packets_sent: int
    packets_unsent: int
    frames_skipped: int
    no_codec: int
    refused: int
    holds: int


class _Counted(Protocol):
    """What the collector reads (L{media.moh.MusicOnHold})."""

    def counters(self) -> MohCounters:
        """The figures now."""


class MohCollector:
    """The music-on-hold figures for a Prometheus registry, read at each
    scrape (C{b2bua_media_moh_*})."""

    GAUGES = (("listeners", "Held parties hearing music on hold now."),
              ("waiting", "Held parties hearing silence because every music-on-hold "
                          "place is taken."))
    COUNTERS = (("packets_sent", "RTP packets of music on hold sent."),
                ("packets_unsent", "Music-on-hold packets that could not be sent."),
                ("frames_skipped", "Music-on-hold frames skipped because the timer ran late."),
                ("no_codec", "Held streams without PCMU or PCMA: no music on hold."),
                ("refused", "Holds that found every music-on-hold place taken."),
                ("holds", "Holds that started music on hold."))

    def __init__(self, moh: _Counted) -> None:
        """
        @param moh: the service whose figures are exported.
        """
        self.moh = moh

    def describe(self) -> list[Any]:
        """Nothing up front (the figures are read at collection)."""
        return []

    def collect(self) -> Iterator[Any]:
        """The gauges and counters now."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counters = self.moh.counters()
        for name, text in self.GAUGES:
            yield GaugeMetricFamily(f"b2bua_media_moh_{name}", text,
                                    value=getattr(counters, name))
        for name, text in self.COUNTERS:
            yield CounterMetricFamily(f"b2bua_media_moh_{name}", text,
                                      value=getattr(counters, name))
