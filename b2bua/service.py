"""The switch's service tree: listeners, stack, core, plugins and OAM.

L{SwitchService} is what C{twistd -n b2bua} runs.  It takes the reactor
(for listeners) and passes it down as the clock; nothing below imports the
global reactor.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua import __version__
from b2bua.config import Config
from b2bua.core.directory import demo_directory
from b2bua.core.hooks import CallHooks
from b2bua.core.location import MemoryLocationStore
from b2bua.core.plugins import build_plugin_manager
from b2bua.core.registrar import Registrar
from b2bua.core.services import Services
from b2bua.core.switch import CoreSettings, Switch
from b2bua.metrics import Metrics
from b2bua.sip.listeners import parse_listener
from b2bua.sip.timers import Timers
from b2bua.sip.transaction import TransactionLayer
from b2bua.sip.transport import TransportLayer
from oam.site import OAMSite
from plugins.local_routing import NAME as LOCAL_ROUTING
from plugins.local_routing import LocalRouting

__all__ = ["SwitchService", "builtin_plugins"]


def _loopback(listener: str) -> bool:
    """True when a SIP listener string binds a loopback address."""
    host = parse_listener(listener).host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _stop_startup(line: str) -> None:
    """Stop start-up with one line on standard error and exit status 2."""
    sys.stderr.write(f"b2bua: {line}\n")
    raise SystemExit(2)


def builtin_plugins() -> dict[str, Any]:
    """The features shipped with the switch, by plugin name."""
    return {LOCAL_ROUTING: LocalRouting()}


class SwitchService(MultiService):
    """The whole switch as one Twisted service.

    @ivar ready: True once every SIP listener is up (C{/ready}).
    """

    log = Logger()

    def __init__(self, reactor: Any, config: Config) -> None:
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.ready = False
        self.metrics = Metrics()
        self.directory = demo_directory()
        self.location = self._location_store()
        self.registrar = Registrar(self.location, reactor)
        self.metrics.track_registrations(self.location.count)
        self.pm = build_plugin_manager(builtin_plugins(), config.plugins.disabled)
        self.hooks = CallHooks(self.pm, reactor, count_error=self.metrics.plugin_failed)
        secret = config.sip.auth_secret.encode() if config.sip.auth_secret else os.urandom(32)
        core = config.core
        self.switch = Switch(
            reactor, self.directory, self.registrar, self.hooks, self.metrics, secret,
            CoreSettings(core.no_answer_timeout, core.session_expires, core.follow_redirects,
                         core.drain_timeout, config.sip.user_agent),
            digest_algorithms=config.sip.digest_algorithms,
            digest_check_uri=config.sip.digest_check_uri)
        self.transport = TransportLayer(
            reactor, None, tls=config.sip.tls.stack_config(), idle_timeout=config.sip.idle_timeout,
            max_connections_per_address=config.sip.max_connections_per_source,
            max_message_size=config.sip.max_message_size)
        self.transactions = TransactionLayer(
            reactor, self.transport, self.switch,
            Timers(t1=config.sip.t1, t2=config.sip.t2, t4=config.sip.t4))
        self.transport.user = self.transactions
        self.switch.attach(self.transactions, self.transport)
        self.metrics.track_transactions(self.transactions.active_count)
        self.oam = OAMSite(self.metrics, lambda: self.ready, self.drain,
                           lambda: self.switch.draining, __version__)
        #: the OAM site's listening port, once it listens
        self.oam_port: Any = None

    def _location_store(self) -> Any:
        url = self.config.storage.locations
        if url == "memory":
            return MemoryLocationStore(self.reactor)
        import txredisapi

        from b2bua.core.location_redis import RedisLocationStore, redis_connection_args

        args = redis_connection_args(url)
        args.pop("ssl_context_factory", None)
        connection = txredisapi.lazyConnectionPool(**args)
        return RedisLocationStore(connection, self.reactor)

    def startService(self) -> None:
        """Open the listeners, configure plugins, start the OAM site.

        A listener that cannot be opened stops start-up with one line on
        standard error (exit status 2), never a traceback.
        """
        super().startService()
        self.log.warn("b2bua: the built-in DEMO directory is in use: extensions 1000-1019 of "
                      "domain 127.0.0.1 with the well-known password 1234; loopback only")
        for listener in self.config.sip.listen:
            if not _loopback(listener):
                _stop_startup(f"{self.config.source}: sip.listen: {listener!r}: the demo "
                              "directory may only listen on loopback (127.0.0.0/8, ::1)")
        services = Services(self.reactor, self.directory, self.registrar, self.location,
                            self.metrics)
        self.pm.hook.b2bua_configure.call_historic(
            kwargs={"services": services, "settings": dict(self.config.plugins.settings)})
        for listener in self.config.sip.listen:
            try:
                self.transport.listen(listener)
            except Exception as error:
                _stop_startup(f"{self.config.source}: sip.listen: cannot listen on "
                              f"{listener!r}: {error}")
        self.ready = True
        if self.config.oam.enabled:
            endpoint = serverFromString(self.reactor, self.config.oam.listen)
            outcome: list[Any] = []
            endpoint.listen(self.oam.make_site(self.reactor)).addBoth(outcome.append)
            if outcome and isinstance(outcome[0], Failure):
                _stop_startup(f"{self.config.source}: oam.listen: cannot listen on "
                              f"{self.config.oam.listen!r}: {outcome[0].getErrorMessage()}")
            if outcome:
                self.oam_port = outcome[0]
                address = self.oam_port.getHost()
                self.log.info("OAM HTTP listening on {host}:{port}", host=address.host,
                              port=address.port)

    def drain(self) -> Deferred[None]:
        """Refuse new calls and wait (bounded) for those in progress."""
        return self.switch.drain()

    def stopService(self) -> Deferred[None]:
        """Drain, then close everything."""
        self.ready = False
        d = self.switch.drain()

        def close(_: object) -> Deferred[Any]:
            self.hooks.unconfigure()
            self.transactions.stop()
            stops = [self.transport.stop(), super(SwitchService, self).stopService() or
                     succeed(None)]
            if self.oam_port is not None:
                stops.append(self.oam_port.stopListening() or succeed(None))
            return DeferredList(stops)

        return d.addCallback(close)
