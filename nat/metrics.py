"""The NAT layer's metrics, made once per registry.

  - C{b2bua_nat_pings_total{result}}: OPTIONS keep-alives to NATed UDP
    bindings; C{result} is C{ok} (any final response), C{timeout} (no final
    response in time) or C{error} (it could not be sent).
  - C{b2bua_nat_bindings_dropped_total}: bindings removed from the location
    service after too many failed pings in a row.
  - C{b2bua_nat_stun_requests_total{result}}: datagrams at the STUN server;
    C{result} is C{ok} (a success response), C{error} (an error response,
    e.g. 420), C{ignored} (a well-formed indication or response, or another
    method: no answer) or C{malformed} (not STUN, or broken: dropped).
  - C{b2bua_nat_calls_total{nat}}: new calls whose INVITE showed a NAT
    (C{nat="yes"}) or none (C{"no"}).
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter

__all__ = ["PING_RESULTS", "STUN_RESULTS", "NatMetrics"]

#: The C{result} labels of C{b2bua_nat_pings_total}.
PING_RESULTS = ("ok", "timeout", "error")
#: The C{result} labels of C{b2bua_nat_stun_requests_total}.
STUN_RESULTS = ("ok", "error", "ignored", "malformed")


_MADE: WeakKeyDictionary[CollectorRegistry, NatMetrics] = WeakKeyDictionary()


class NatMetrics:
    """The counters of the NAT layer in C{registry} (every label present
    from the start, at zero).  Use L{of} to share them: a registry takes
    each name once."""

    @classmethod
    def of(cls, registry: CollectorRegistry) -> NatMetrics:
        """The counters in C{registry}, made on first use."""
        made = _MADE.get(registry)
        if made is None:
            made = _MADE[registry] = cls(registry)
        return made

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pings = Counter("b2bua_nat_pings", "OPTIONS keep-alives to NATed UDP bindings.",
                             ["result"], registry=registry)
        self.dropped = Counter("b2bua_nat_bindings_dropped",
                               "Bindings removed after failed keep-alive pings.",
                               registry=registry)
        self.stun = Counter("b2bua_nat_stun_requests", "Datagrams at the STUN server.",
                            ["result"], registry=registry)
        self.calls = Counter("b2bua_nat_calls", "New calls by whether the caller is NATed.",
                             ["nat"], registry=registry)
        for result in PING_RESULTS:
            self.pings.labels(result)
        for result in STUN_RESULTS:
            self.stun.labels(result)
        for nat in ("yes", "no"):
            self.calls.labels(nat)

    def ping(self, result: str) -> None:
        """Count one ping's outcome (one of L{PING_RESULTS})."""
        self.pings.labels(result).inc()

    def binding_dropped(self) -> None:
        """Count one binding removed."""
        self.dropped.inc()

    def stun_request(self, result: str) -> None:
        """Count one datagram at the STUN server (one of L{STUN_RESULTS})."""
        self.stun.labels(result).inc()

    def call(self, behind_nat: bool) -> None:
        """Count one new call."""
        self.calls.labels("yes" if behind_nat else "no").inc()
