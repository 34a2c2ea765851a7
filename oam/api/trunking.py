"""The live state of the vendor trunks over the API (admins only).

    GET /api/v1/trunking/status

answers 200 with what the trunking plugins know now, on this node::

    {"registrations": [{"connection_id": 7, "state": "registered", ...}],
     "connections": [{"connection_id": 7, "available": true, "health": "up", ...}],
     "limits": [{"kind": "connection", "id": "7", "inbound": 0, "outbound": 3,
                 "attempts": 1}],
     "quality": {"7": {"asr": "0.52", "acd": "84.1", "pdd": null}}}

Each part is empty when its plugin is disabled or has nothing yet: the
registrations (C{trunk_registration}: state, expiry, last failure, next
attempt), the probed connections and the ones parked by a C{503
Retry-After} (C{trunk_probing}), the calls counted against trunk and
connection limits (C{trunking}; with Redis, every node's), and the rolling
ASR/ACD/PDD of the connections this node routed to.  A limit store that
cannot be read answers C{"limits": null} and C{"limits_error"}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from b2bua.db.interfaces import Scope
from oam.api.endpoint import ApiContext, ApiEndpoint
from oam.api.problems import Reply, forbidden
from oam.resource import NotFound

__all__ = ["TrunkingStatusResource"]

log = Logger()


class TrunkingStatusResource(ApiEndpoint):
    """C{GET /api/v1/trunking/status} (module docstring).

    @param extra: a zero-argument callable giving the services' C{extra}
        mapping, where the trunking plugins leave their state objects
        (C{trunk_registrations}, C{trunk_prober}, C{trunk_limiter},
        C{trunk_stats}).
    """

    isLeaf = True
    methods = ("GET",)

    def __init__(self, api: ApiContext, extra: Callable[[], Mapping[str, Any]]) -> None:
        super().__init__(api)
        self.extra = extra

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        return NotFound()

    async def handle_get(self, request: IRequest, scope: Scope) -> Reply:
        """The registrations, the connections' health, the limits, quality."""
        if scope.role != "admin":
            raise forbidden()
        extra = self.extra()
        body: dict[str, Any] = {"registrations": [], "connections": [], "limits": [],
                                "quality": {}}
        registrations = extra.get("trunk_registrations")
        if registrations is not None:
            body["registrations"] = registrations.status()
        prober = extra.get("trunk_prober")
        if prober is not None:
            body["connections"] = prober.status()
        limiter = extra.get("trunk_limiter")
        if limiter is not None:
            try:
                usage = await maybeDeferred(limiter.store.snapshot)
            except Exception:
                log.failure("oam api: the limit store could not be read")
                body["limits"] = None
                body["limits_error"] = "the limit store could not be read"
            else:
                body["limits"] = [{"kind": u.kind, "id": u.id, "inbound": u.inbound,
                                   "outbound": u.outbound, "attempts": u.attempts}
                                  for u in usage]
        stats = extra.get("trunk_stats")
        if stats is not None:
            body["quality"] = {
                str(connection): {"asr": _text(q.asr), "acd": _text(q.acd),
                                  "pdd": _text(q.pdd)}
                for connection, q in sorted(stats.quality().items())}
        return Reply(200, body)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
