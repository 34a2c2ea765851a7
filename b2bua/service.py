"""The switch's service tree: listeners, stack, core, plugins, storage and OAM.

L{SwitchService} is what C{twistd -n b2bua} runs.  It takes the reactor
(for listeners) and passes it down as the clock; nothing below imports the
global reactor.

Start-up happens in two phases:

  1. at C{startService}, synchronously: the demo's checks and warning, and
     the OAM site (C{/health} answers, C{/ready} says C{starting});
  2. then, as the database answers (SQL never runs in the reactor
     thread): open the provisioning database, migrate it (C{[storage]
     migrate}), load the PIN secret, build the change feed (with a
     PostgreSQL C{LISTEN} when the database is PostgreSQL), seed the demo
     data (demo only), load the live L{Snapshot}, configure the plugins and
     only then open the SIP listeners and turn ready.

A problem in phase 1 stops start-up at once (one line on standard error,
exit status 2).  A problem in phase 2 is written the same way; the reactor
is then stopped and the process exits with status 2 (see L{exit_startup}).
"""

from __future__ import annotations

import gc
import ipaddress
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua import __version__, demo
from b2bua.config import Config
from b2bua.core.directory import Directory, DirectoryView
from b2bua.core.hooks import CallHooks
from b2bua.core.location import MemoryLocationStore
from b2bua.core.plugins import build_plugin_manager
from b2bua.core.registrar import Registrar
from b2bua.core.services import Services
from b2bua.core.snapshot import Snapshot
from b2bua.core.switch import CoreSettings, Switch
from b2bua.db.changes import ChangeFeed, PostgresListener
from b2bua.db.database import Database, redact_url, sqlite_path
from b2bua.db.migrations import SchemaTooNew, applied_versions, migrate, migrations_for
from b2bua.db.model import ENTITIES
from b2bua.db.repository import Repository, repositories
from b2bua.metrics import Metrics
from b2bua.sip.listeners import parse_listener
from b2bua.sip.timers import Timers
from b2bua.sip.transaction import TransactionLayer
from b2bua.sip.transport import TransportLayer
from media.plugin import NAME as MEDIA
from media.plugin import MediaAnchor
from media.server.plugin import NAME as MEDIA_SERVER
from media.server.plugin import MediaServer
from nat.plugin import NAME as NAT
from nat.plugin import Nat
from nat.stun import answer as stun_answer
from oam.api import make_api, mount
from oam.api.balances import BalanceAccess
from oam.site import OAMSite
from plugins.cdrs import NAME as CDRS
from plugins.cdrs import CDRs
from plugins.charging import NAME as CHARGING
from plugins.charging import Charging
from plugins.ip_trust import NAME as IP_TRUST
from plugins.ip_trust import IPTrust
from plugins.local_routing import NAME as LOCAL_ROUTING
from plugins.local_routing import LocalRouting
from plugins.trunking.plugin import NAME as TRUNKING
from plugins.trunking.plugin import Trunking
from plugins.trunking.probing import NAME as TRUNK_PROBING
from plugins.trunking.probing import TrunkProbing
from plugins.trunking.registration import NAME as TRUNK_REGISTRATION
from plugins.trunking.registration import TrunkRegistration
from rating.cdr_writer import CDRWriter
from rating.journal import FileJournal, RedisStreamJournal
from rating.provisioned import ProvisionedTariffs
from rating.recovery import Recovery
from rating.stores.memory import MemoryBalanceStore
from rating.stores.redis import RedisBalanceStore

__all__ = ["EXIT_STARTUP", "STORAGE_STOP_TIMEOUT", "StartupError", "SwitchService",
           "builtin_plugins", "exit_startup"]

#: The exit status of a start-up that failed.
EXIT_STARTUP = 2
#: Seconds start-up waits for the PostgreSQL change listener to be in effect.
LISTEN_TIMEOUT = 10.0
#: Seconds stopping waits for the snapshot, the listener and the database.
STORAGE_STOP_TIMEOUT = 10.0
#: Seconds the plugins get to finish their last requests (un-REGISTER) at a stop.
UNCONFIGURE_TIMEOUT = 5.0


class StartupError(Exception):
    """Start-up cannot go on; the message is the one line to show."""


class _Stopped(Exception):
    """The service was stopped while it was still starting."""


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
    raise SystemExit(EXIT_STARTUP)


def _exit_now(status: int) -> None:
    """Flush what was written and leave the process with C{status}."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(status)


def exit_startup(reactor: Any) -> Callable[[str], None]:
    """The default reaction to a start-up that failed once the reactor runs:
    stop the reactor (so the service stops cleanly) and then leave the
    process with L{EXIT_STARTUP} (twistd has no other way to set a status).
    Nothing happens on a reactor that is not an C{IReactorCore}."""

    def fatal(line: str) -> None:
        if not IReactorCore.providedBy(reactor):
            return

        def stop() -> None:
            reactor.addSystemEventTrigger("after", "shutdown", _exit_now, EXIT_STARTUP)
            reactor.stop()

        if getattr(reactor, "running", False):
            stop()
        else:
            reactor.callWhenRunning(stop)

    return fatal


def builtin_plugins() -> dict[str, Any]:
    """The features shipped with the switch, by plugin name."""
    return {LOCAL_ROUTING: LocalRouting(), IP_TRUST: IPTrust(), CHARGING: Charging(),
            CDRS: CDRs(), TRUNKING: Trunking(), TRUNK_REGISTRATION: TrunkRegistration(),
            TRUNK_PROBING: TrunkProbing(), NAT: Nat(), MEDIA: MediaAnchor(),
            MEDIA_SERVER: MediaServer()}


def _redis(url: str) -> Any:
    """A lazy txredisapi connection pool for a C{redis://} URL."""
    import txredisapi

    from b2bua.core.location_redis import redis_connection_args

    args = redis_connection_args(url)
    args.pop("ssl_context_factory", None)
    return txredisapi.lazyConnectionPool(**args)


def _tune_garbage_collector() -> None:
    """Move what start-up built out of the collector's way and collect young
    objects less often: with thousands of live calls, frequent full passes
    stall the reactor long enough to cause retransmissions."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20000, 50, 100)


def _repositories(database: Database, feed: ChangeFeed, secret: str) -> dict[str, Repository]:
    """Every repository; without a PIN secret, every one but the cards'."""
    if secret:
        return repositories(database, feed, secret)
    return {e.collection: Repository(e, database, feed, "") for e in ENTITIES
            if not any(f.name == "pin" for f in e.write_only)}


class _SnapshotMetrics:
    """Exports the live snapshot's state at scrape time."""

    def __init__(self, service: SwitchService) -> None:
        self._service = service

    def describe(self) -> list[Metric]:
        """Nothing to describe ahead (samples are made at collect time)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The snapshot's version, load time, failed loads and changes heard."""
        snapshot = self._service.snapshot
        version = GaugeMetricFamily("b2bua_provisioning_snapshot_version",
                                    "Provisioning snapshots loaded since start.")
        version.add_metric([], snapshot.version if snapshot else 0)
        loaded = GaugeMetricFamily("b2bua_provisioning_snapshot_loaded_timestamp_seconds",
                                   "When the current provisioning snapshot was loaded.")
        loaded.add_metric([], (snapshot.loaded_at or 0) if snapshot else 0)
        failed = CounterMetricFamily("b2bua_provisioning_snapshot_failures",
                                     "Provisioning snapshot loads that failed.")
        failed.add_metric([], snapshot.failures if snapshot else 0)
        changes = CounterMetricFamily("b2bua_provisioning_changes",
                                      "Provisioning changes heard by the snapshot.")
        changes.add_metric([], snapshot.changes if snapshot else 0)
        yield from (version, loaded, failed, changes)


class SwitchService(MultiService):
    """The whole switch as one Twisted service.

    @ivar ready: True once the snapshot is loaded and every SIP listener is
        up (C{/ready}).
    @ivar database: the provisioning L{Database} (once starting).
    @ivar feed: the L{ChangeFeed} of provisioning changes (once starting).
    @ivar repositories: a L{Repository} per collection, for the REST API
        (C{cards} only when C{storage.secret} is set).
    @ivar snapshot: the live L{Snapshot}, which is also the switch's
        directory (once starting).
    @ivar listener: the PostgreSQL change listener (PostgreSQL only).
    @ivar admin_key_file: where the demo's admin API key was written (first
        demo start only).
    @ivar startup_error: the line that stopped start-up, if one did.
    """

    log = Logger()

    def __init__(self, reactor: Any, config: Config, *,
                 fatal: Callable[[str], None] | None = None,
                 tune_gc: bool = False) -> None:
        """
        @param tune_gc: tune Python's garbage collector for a long-running
            switch once started (twistd does; tests, sharing the process,
            do not).
        @param fatal: called with the line when start-up fails after
            C{startService} returned (default: L{exit_startup}).
        """
        self._tune_gc = tune_gc
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.ready = False
        self.metrics = Metrics()
        self.metrics.registry.register(_SnapshotMetrics(self))
        self._redis_pools: list[Any] = []
        self.location = self._location_store()
        #: the Redis pool of the balances (also the trunk limits'), if any
        self.balances_redis: Any = None
        self.balance_store = self._balance_store()
        self.cdr_writer: CDRWriter | None = None
        self.recovery: Recovery | None = None
        #: the services' C{extra}: what the plugins share (and the API reads)
        self.plugin_state: dict[str, Any] = {}
        self.media_backend: Any = None
        self.cdr_journal: Any = None
        self.registrar = Registrar(self.location, reactor)
        self.metrics.track_registrations(self.location.count)
        self.pm = build_plugin_manager(builtin_plugins(), config.plugins.disabled)
        self.hooks = CallHooks(self.pm, reactor, count_error=self.metrics.plugin_failed)
        secret = config.sip.auth_secret.encode() if config.sip.auth_secret else os.urandom(32)
        core = config.core
        self.switch = Switch(
            reactor, Directory.from_rows({}), self.registrar, self.hooks, self.metrics, secret,
            CoreSettings(core.no_answer_timeout, core.session_expires, core.follow_redirects,
                         core.drain_timeout, config.sip.user_agent, transfer=core.transfer,
                         max_transfers=core.max_transfers),
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
        self.database: Database | None = None
        self.feed: ChangeFeed | None = None
        self.repositories: dict[str, Repository] = {}
        self.snapshot: Snapshot | None = None
        self.listener: PostgresListener | None = None
        self.admin_key_file: str | None = None
        self.startup_error: str | None = None
        self._fatal = fatal if fatal is not None else exit_startup(reactor)
        self._starting: Deferred[None] | None = None
        self._stopping = False

    @property
    def directory(self) -> DirectoryView:
        """What the switch reads subscribers from: the live snapshot once
        starting (an empty directory before)."""
        return self.switch.directory

    def _location_store(self) -> Any:
        url = self.config.storage.locations
        if url == "memory":
            return MemoryLocationStore(self.reactor)
        from b2bua.core.location_redis import RedisLocationStore

        return RedisLocationStore(self._redis(url), self.reactor)

    def _redis(self, url: str) -> Any:
        """A Redis connection pool, disconnected when the service stops."""
        pool = _redis(url)
        self._redis_pools.append(pool)
        return pool

    def _media_backend(self) -> Any:
        """The media backend of C{[media] backend} (C{None}: not anchored)."""
        media = self.config.media
        if media.backend == "relay":
            from media.backend import RelayBackend

            state = self.plugin_state
            return RelayBackend(
                self.reactor, interface=media.interface,
                port_range=(media.port_min, media.port_max),
                advertised_address=media.advertised_address or None,
                media_timeout=media.media_timeout or None,
                on_dead=lambda call_id: state.get("media_dead", lambda _: None)(call_id),
                moh=media.moh, registry=self.metrics.registry)
        if media.backend == "rtpengine":
            from media.rtpengine import RtpengineBackend, parse_rtpengine_config

            return RtpengineBackend.from_config(
                self.reactor, parse_rtpengine_config(media.rtpengine),
                registry=self.metrics.registry)
        return None

    def _balance_store(self) -> Any:
        """The balance store of C{[storage] balances} (memory or Redis)."""
        url = self.config.storage.balances
        if url == "memory":
            return MemoryBalanceStore(self.reactor)
        self.balances_redis = self._redis(url)
        return RedisBalanceStore(self.balances_redis, self.reactor)

    # -- starting ----------------------------------------------------------------------

    def startService(self) -> None:
        """Check the demo, open the OAM site, then start the storage phase
        (see the module docstring); L{when_started} tells when it is over.

        A problem found here stops start-up with one line on standard error
        (exit status 2), never a traceback.
        """
        super().startService()
        self._stopping = False
        if self.config.demo:
            self.log.warn("b2bua: DEMO mode: the demo tenant (domain 127.0.0.1, extensions "
                          "1000-1019) uses the well-known password 1234; listening on "
                          "loopback only; data in {url}",
                          url=redact_url(self.config.storage.database))
            for listener in self.config.sip.listen:
                if not _loopback(listener):
                    _stop_startup(f"{self.config.source}: sip.listen: {listener!r}: the demo "
                                  "may only listen on loopback (127.0.0.0/8, ::1)")
        self._listen_oam()
        self._starting = ensureDeferred(self._start())
        self._starting.addErrback(self._start_failed)

    def when_started(self) -> Deferred[None]:
        """A Deferred firing once start-up is over (ready, or failed, or
        stopped while starting); at once if it is."""
        if self._starting is None or self._starting.called:
            return succeed(None)
        done: Deferred[None] = Deferred()

        def fire(result: object) -> object:
            done.callback(None)
            return result

        self._starting.addBoth(fire)
        return done

    def _listen_oam(self) -> None:
        """Open the OAM site (C{/ready} answers C{starting} until ready)."""
        if not self.config.oam.enabled:
            return
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

    def _check_running(self) -> None:
        """@raise _Stopped: when the service was stopped meanwhile."""
        if self._stopping:
            raise _Stopped()

    async def _start(self) -> None:
        """The storage phase, then the SIP listeners."""
        storage = self.config.storage
        folder = demo.state_directory(storage.database) if self.config.demo else None
        if folder is not None and not os.path.isdir(folder):
            os.makedirs(folder, mode=0o700)  # HA1 values are password equivalents
        database = self.database = Database(storage.database, self.reactor)
        if storage.should_migrate:
            applied = await migrate(database)
            if applied:
                self.log.info("provisioning schema migrated to {versions}", versions=applied)
        else:
            await self._check_schema(database)
        self._check_running()
        secret = storage.secret
        if folder is not None:
            secret = demo.demo_secret(folder)
        if not secret and await database.run(_count_cards):
            raise StartupError(f"{self.config.source}: storage.secret: required: the database "
                               "holds calling cards, whose PINs are hashed with it")
        self._check_running()
        self.feed = ChangeFeed()
        self.repositories = _repositories(database, self.feed, secret)
        mount(self.oam, make_api(self.repositories, database, self.oam.report_error,
                                 version=__version__,
                                 balances=BalanceAccess(self.balance_store,
                                                        self.pm.get_plugin(CHARGING)),
                                 plugin_state=lambda: self.plugin_state))
        if database.dialect.name == "postgresql":
            await self._listen_for_changes(database, self.feed)
        if self.config.demo:
            await self._seed_demo(folder)
            self._check_running()
        self.snapshot = Snapshot(database, self.feed, self.reactor)
        provisioned = ProvisionedTariffs(lambda: self.snapshot.directory, self.reactor)
        await self.snapshot.start()
        self._check_running()
        self.switch.directory = self.snapshot
        self.cdr_writer = await self._start_cdr_writer(database, folder)
        self._check_running()
        self.recovery = Recovery(self.balance_store, self.cdr_writer, self.reactor,
                                 interval=storage.recovery_interval,
                                 registry=self.metrics.registry)
        await self.recovery.start()
        self._check_running()
        services = Services(self.reactor, self.snapshot, self.registrar, self.location,
                            self.metrics, extra=self.plugin_state)
        self.media_backend = self._media_backend()
        self.plugin_state.update({
            "media_backend": self.media_backend, "media_config": self.config.media,
            "reactor": self.reactor,
            "balance_store": self.balance_store, "cdr_writer": self.cdr_writer,
            "redis": self.balances_redis, "send_request": self.transactions.send_request,
            "local_address": self.transport.local_address,
            "user_agent": self.config.sip.user_agent, "tariffs": provisioned.tariffs,
            "payer": provisioned.payer})
        self.pm.hook.b2bua_configure.call_historic(
            kwargs={"services": services, "settings": dict(self.config.plugins.settings)})
        # RFC 5626 4.4.2: STUN keep-alives of outbound (RFC 5626) phones on the SIP port
        self.transport.datagram_responder = lambda data, source: stun_answer(
            data, source, software=self.config.sip.user_agent).reply
        for listener in self.config.sip.listen:
            try:
                self.transport.listen(listener)
            except Exception as error:
                raise StartupError(f"{self.config.source}: sip.listen: cannot listen on "
                                   f"{listener!r}: {error}") from None
        if self.media_backend is not None and hasattr(self.media_backend, "start"):
            self.media_backend.start()
        if self._tune_gc:
            _tune_garbage_collector()
        self.ready = True

    async def _check_schema(self, database: Database) -> None:
        """Without migrations: the schema must be exactly this release's."""
        known = [m.version for m in migrations_for(database.dialect.name)]
        applied = await database.run(applied_versions)
        unknown = sorted(set(applied) - set(known))
        if unknown:
            raise SchemaTooNew(f"the database has schema version(s) {unknown} that this "
                               "release does not know: upgrade the software")
        missing = [v for v in known if v not in applied]
        if missing:
            raise StartupError(f"{self.config.source}: storage.migrate: the database lacks "
                               f"schema version(s) {missing}: set storage.migrate = true "
                               "(on one node) to apply them")

    async def _listen_for_changes(self, database: Database, feed: ChangeFeed) -> None:
        """Start the PostgreSQL listener and wait (bounded) until it listens,
        so that no change committed after the snapshot's first read is
        missed."""
        self.listener = PostgresListener(database.url, self.reactor, feed)
        self.listener.start()
        listening = self.listener.when_listening()
        listening.addTimeout(LISTEN_TIMEOUT, self.reactor)
        try:
            await listening
        except Exception:
            raise StartupError(f"{self.config.source}: storage.database: could not LISTEN "
                               f"for changes within {LISTEN_TIMEOUT:g}s") from None
        self._check_running()

    async def _seed_demo(self, folder: str | None) -> None:
        """Seed the demo data (first start only); show the admin key once."""
        seeded = await demo.seed(self.repositories)
        if seeded.created:
            self.log.info("demo: created the demo tenant's extensions {first}-{last}",
                          first=seeded.created[0], last=seeded.created[-1])
        if seeded.admin_key is None:
            return
        where = "not saved"
        if folder is not None:
            try:
                self.admin_key_file = demo.save_admin_key(folder, seeded.admin_key)
                where = f"saved in {self.admin_key_file} (mode 0600)"
            except OSError as error:
                where = f"could not be saved: {error}"
        self.log.warn("admin API key: {key} (for the demo's REST API; shown once, {where})",
                      key=seeded.admin_key, where=where)

    def _start_failed(self, failure: Failure) -> None:
        """Write the one line, then call C{fatal} (unless we were stopped)."""
        if self._stopping:
            return
        if failure.check(StartupError):
            line = str(failure.value)
        else:
            what = failure.getErrorMessage() or failure.type.__name__
            line = (f"{self.config.source}: storage.database: "
                    f"{redact_url(self.config.storage.database)}: {what}")
        self.startup_error = line
        sys.stderr.write(f"b2bua: {line}\n")  # twistd also logs what goes to stderr
        sys.stderr.flush()
        self._fatal(line)

    # -- running and stopping ----------------------------------------------------------

    def drain(self) -> Deferred[None]:
        """Refuse new calls and wait (bounded) for those in progress."""
        return self.switch.drain()

    def stopService(self) -> Deferred[None]:
        """Drain, close the listeners, then the storage (bounded)."""
        self.ready = False
        self._stopping = True
        d = self.switch.drain()

        def unconfigure(_: object) -> Deferred[Any]:
            # plugins' last words (an un-REGISTER) still need the transactions
            return self.hooks.unconfigure().addTimeout(UNCONFIGURE_TIMEOUT, self.reactor) \
                .addErrback(lambda _: None)

        def close(_: object) -> Deferred[Any]:
            self.transactions.stop()
            if self.media_backend is not None:
                self.media_backend.stop()
            stops = [self.transport.stop(), super(SwitchService, self).stopService() or
                     succeed(None)]
            if self.oam_port is not None:
                stops.append(self.oam_port.stopListening() or succeed(None))
            return DeferredList(stops)

        d.addCallback(unconfigure)
        d.addCallback(close)
        d.addCallback(lambda _: self._close_storage())
        return d

    async def _start_cdr_writer(self, database: Database, folder: str | None) -> CDRWriter:
        """The CDR journal and writer; the writer replays what a previous
        run journaled but did not write."""
        where = self.config.storage.cdr_journal
        journal: Any
        if where.startswith("redis:"):
            journal = RedisStreamJournal(self._redis(where), consumer=f"node-{os.getpid()}")
        else:
            if not where:
                base = folder or (os.path.dirname(sqlite_path(database.url) or "")
                                  if database.dialect.name == "sqlite" else "") or "var"
                where = os.path.join(base, "cdrs.journal")
            directory = os.path.dirname(where)
            if directory:
                os.makedirs(directory, exist_ok=True)
            journal = FileJournal(where, self.reactor)
        self.cdr_journal = journal
        writer = CDRWriter(journal, database, self.reactor, registry=self.metrics.registry)
        await writer.start()
        return writer

    def _close_storage(self) -> Deferred[None]:
        """Flush the CDR writer, stop the snapshot and the listener, then
        close the database; give up waiting after L{STORAGE_STOP_TIMEOUT}
        seconds."""
        waits = []
        if self.cdr_writer is not None:
            journal = self.cdr_journal
            recovery = self.recovery.stop() if self.recovery is not None else succeed(None)
            writer = self.cdr_writer
            flushed = recovery.addCallback(lambda _: writer.stop(flush=True))
            flushed.addBoth(lambda _: journal.close())
            waits.append(flushed)
        if self.snapshot is not None:
            waits.append(self.snapshot.stop())
        if self.listener is not None:
            waits.append(self.listener.stop())
        database = self.database
        closed: Deferred[Any] = DeferredList(waits)
        if database is not None:
            closed.addCallback(lambda _: database.close())
        closed.addTimeout(STORAGE_STOP_TIMEOUT, self.reactor)

        def timed_out(failure: Failure) -> None:
            self.log.warn("storage did not close within {timeout}s: {error}",
                          timeout=STORAGE_STOP_TIMEOUT, error=failure.getErrorMessage())

        closed.addCallbacks(lambda _: None, timed_out)
        closed.addCallback(lambda _: self._disconnect_redis())
        return closed

    def _disconnect_redis(self) -> None:
        """Close the Redis pools (they would otherwise keep reconnecting)."""
        for pool in self._redis_pools:
            try:
                pool.disconnect()
            except Exception as error:
                self.log.info("closing a Redis pool: {error}", error=error)
        self._redis_pools.clear()


def _count_cards(connection: Any) -> int:
    """In a worker thread: how many calling cards the database holds."""
    return int(connection.execute("SELECT count(*) AS n FROM cards")[0]["n"])
