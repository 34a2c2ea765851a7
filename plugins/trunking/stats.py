"""Per-connection figures of the vendor trunks: Prometheus metrics, and the
rolling ASR/ACD/PDD the C{quality} routing strategy ranks by.

Labels are bounded: a connection id (a provisioned row) and a direction
(C{out} to the vendor, C{in} from it).

    b2bua_trunk_attempts_total{connection,direction}     attempts (B legs, or inbound calls)
    b2bua_trunk_answered_total{connection,direction}     of which answered
    b2bua_trunk_failovers_total{connection}              failed attempts the hunt moved on from
    b2bua_trunk_talk_seconds_total{connection,direction} answered time
    b2bua_trunk_current_calls{connection,direction}      attempts in progress or answered
    b2bua_trunk_asr{connection}                          answered / attempts, last L{WINDOW}
    b2bua_trunk_acd_seconds{connection}                  mean talk of those answered
    b2bua_trunk_pdd_seconds{connection}                  mean delay to the first ring

ASR over all time is C{answered_total / attempts_total} in PromQL; the
gauges above are over the last L{WINDOW} outbound attempts of each
connection, which is what routing reacts to.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge

from plugins.trunking.lcr import Quality

__all__ = ["WINDOW", "ConnectionStats"]

#: Outbound attempts per connection the rolling figures are computed over.
WINDOW = 100


@dataclass(slots=True)
class _Attempt:
    answered: bool
    talk: float
    pdd: float | None


class ConnectionStats:
    """Counts attempts and answers per connection (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        labels = ["connection", "direction"]
        self.attempts = Counter("b2bua_trunk_attempts_total",
                                "Call attempts on a vendor connection.", labels,
                                registry=registry)
        self.answered = Counter("b2bua_trunk_answered_total",
                                "Attempts on a vendor connection that were answered.", labels,
                                registry=registry)
        self.failovers = Counter("b2bua_trunk_failovers_total",
                                 "Failed attempts on a connection after which the hunt "
                                 "went on to the next.", ["connection"], registry=registry)
        self.talk = Counter("b2bua_trunk_talk_seconds_total",
                            "Answered time on a vendor connection.", labels, registry=registry)
        self.current = Gauge("b2bua_trunk_current_calls",
                             "Attempts on a vendor connection in progress or answered.",
                             labels, registry=registry)
        self.asr = Gauge("b2bua_trunk_asr", f"Answered share of the last {WINDOW} "
                         "outbound attempts of a connection.", ["connection"],
                         registry=registry)
        self.acd = Gauge("b2bua_trunk_acd_seconds", f"Mean talk time of the answered calls "
                         f"among the last {WINDOW} outbound attempts.", ["connection"],
                         registry=registry)
        self.pdd = Gauge("b2bua_trunk_pdd_seconds", f"Mean delay to the first ring of the "
                         f"last {WINDOW} outbound attempts.", ["connection"], registry=registry)
        self._recent: dict[str, deque[_Attempt]] = {}

    def started(self, connection: str, direction: str) -> None:
        """An attempt began."""
        self.attempts.labels(connection, direction).inc()
        self.current.labels(connection, direction).inc()

    def ended(self, connection: str, direction: str, answered: bool, talk: float,
              pdd: float | None = None) -> None:
        """An attempt ended (answered for C{talk} seconds, or not)."""
        self.current.labels(connection, direction).dec()
        if answered:
            self.answered.labels(connection, direction).inc()
            self.talk.labels(connection, direction).inc(max(0.0, talk))
        if direction != "out":
            return
        recent = self._recent.setdefault(connection, deque(maxlen=WINDOW))
        recent.append(_Attempt(answered, max(0.0, talk), pdd))
        answers = [a for a in recent if a.answered]
        self.asr.labels(connection).set(len(answers) / len(recent))
        self.acd.labels(connection).set(sum(a.talk for a in answers) / len(answers)
                                        if answers else 0.0)
        delays = [a.pdd for a in recent if a.pdd is not None]
        self.pdd.labels(connection).set(sum(delays) / len(delays) if delays else 0.0)

    def failed_over(self, connection: str) -> None:
        """The hunt moved on from a failed attempt on C{connection}."""
        self.failovers.labels(connection).inc()

    def quality(self) -> dict[int, Quality]:
        """The rolling figures by connection id, for the C{quality} strategy."""
        out = {}
        for connection, recent in self._recent.items():
            if not recent:
                continue
            answers = [a for a in recent if a.answered]
            delays = [a.pdd for a in recent if a.pdd is not None]
            out[int(connection)] = Quality(
                asr=Decimal(len(answers)) / Decimal(len(recent)),
                acd=Decimal(str(round(sum(a.talk for a in answers) / len(answers), 3)))
                if answers else Decimal(0),
                pdd=Decimal(str(round(sum(delays) / len(delays), 3))) if delays else None)
        return out
