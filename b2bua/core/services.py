"""What the core hands plugins at configuration time (C{b2bua_configure})."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from b2bua.core.directory import Directory
    from b2bua.core.location import ILocationStore
    from b2bua.core.registrar import Registrar
    from b2bua.metrics import Metrics

__all__ = ["Services"]


@dataclass
class Services:
    """The switch's shared services, as plugins may use them.

    @ivar clock: the only source of time (C{clock.seconds()}, C{callLater}).
    @ivar directory: tenants and extensions (the in-memory snapshot).
    @ivar registrar: C{lookup(aor)} gives an AOR's current bindings.
    @ivar location: the location store behind the registrar.
    @ivar metrics: the service's metrics registry.
    @ivar extra: anything a later layer adds (balance stores, media...).
    """

    clock: IReactorTime
    directory: Directory
    registrar: Registrar
    location: ILocationStore
    metrics: Metrics
    extra: dict[str, Any] = field(default_factory=dict)
