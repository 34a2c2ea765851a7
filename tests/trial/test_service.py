"""Tests for L{b2bua.service.SwitchService}: start-up, OAM and SIP on loopback.

Two kinds of test:

  - L{StartTests} start the service on a memory reactor: which addresses
    it binds (the demo: loopback only), the demo warning, how the
    configuration reaches the layers and plugins, the storage phase (a
    real SQLite file in a temporary folder, whose worker thread hands its
    results to the memory reactor: L{run_until} delivers them, each wait
    bounded), a clean stop;
  - L{LoopbackTests} start it on the real reactor, on 127.0.0.1 with
    ephemeral ports, and talk to it: OPTIONS over a real UDP socket, the OAM
    routes over real HTTP, and a drain (C{POST /drain}) that turns C{/ready}
    to 503 and answers a new INVITE 503 before any challenge.  Each waits
    at most a few seconds, and cleanup leaves no port, connection or timer.
"""

from __future__ import annotations

import ipaddress
import json
import os
import queue
from collections.abc import Callable
from dataclasses import replace
from itertools import count
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from zope.interface import implementer

from b2bua.config import Config, load_config, parse_config
from b2bua.core.snapshot import Snapshot
from b2bua.db.changes import ChangeFeed
from b2bua.db.database import Database
from b2bua.db.interfaces import Scope
from b2bua.db.migrations import migrate, migrations_for
from b2bua.db.repository import repositories
from b2bua.service import SwitchService
from b2bua.sip.message import Response, parse_message

#: Seconds any single exchange with the running service may take.
WAIT = 5.0


@implementer(IListeningPort)
class FakePort:
    """A listening port of L{FakeReactor}; remembers being stopped."""

    def __init__(self, address: IPv4Address) -> None:
        self.address = address
        self.stopped = False

    def startListening(self) -> None:
        """Nothing to do."""

    def stopListening(self) -> None:
        """Remember the stop."""
        self.stopped = True

    def getHost(self) -> IPv4Address:
        """The address asked for."""
        return self.address


class FakeReactor(MemoryReactorClock):
    """A memory reactor that also records UDP listeners and queues what
    worker threads hand to the reactor thread (L{run_until} runs it).

    @ivar udp_servers: (port, protocol, interface, maxPacketSize) per call.
    @ivar ports: every L{FakePort} handed out, in order.
    @ivar from_threads: the calls C{callFromThread} was given, in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.udp_servers: list[tuple[int, Any, str, int]] = []
        self.ports: list[FakePort] = []
        self.from_threads: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...],
                                             dict[str, Any]]] = queue.Queue()

    def callFromThread(self, f: Callable[..., Any], *args: Any,
                       **kwargs: Any) -> None:
        """Queue C{f(*args, **kwargs)} for L{run_until} (any thread)."""
        self.from_threads.put((f, args, kwargs))

    def listenUDP(self, port: int, protocol: Any, interface: str = "",
                  maxPacketSize: int = 8192) -> FakePort:  # noqa: N803 (Twisted name)
        """Record the call; return a port that reports the address asked for."""
        self.udp_servers.append((port, protocol, interface, maxPacketSize))
        return self._port("UDP", interface, port)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50,
                  interface: str = "") -> FakePort:
        """Record the call as the memory reactor does; return a L{FakePort}."""
        super().listenTCP(port, factory, backlog, interface)
        return self._port("TCP", interface, port)

    def _port(self, kind: str, interface: str, port: int) -> FakePort:
        fake = FakePort(IPv4Address(kind, interface, port))
        self.ports.append(fake)
        return fake


def run_until(reactor: FakeReactor, d: Deferred[Any]) -> None:
    """Run what worker threads handed to C{reactor} until C{d} has fired;
    each wait is bounded by L{WAIT} seconds (C{queue.Empty} after that)."""
    fired: list[bool] = []

    def note(result: Any) -> Any:
        fired.append(True)
        return result

    d.addBoth(note)
    while not fired:
        f, args, kwargs = reactor.from_threads.get(timeout=WAIT)
        f(*args, **kwargs)


def database_in(folder: str) -> str:
    """The URL of a SQLite database in C{folder} (not created yet)."""
    return f"sqlite:///{os.path.abspath(folder)}/b2bua.db"


def config_from(data: dict[str, Any], folder: str | None = None) -> Config:
    """A checked configuration from a TOML-like dict; with C{folder}, its
    database is there unless C{data} names one."""
    data = dict(data)
    if folder is not None:
        storage = dict(data.get("storage", {}))
        storage.setdefault("database", database_in(folder))
        data["storage"] = storage
    return parse_config(data, "test.toml")


def demo_config(folder: str, **sip: Any) -> Config:
    """The demo configuration with its database in C{folder} (and C{sip}
    settings replaced, e.g. ephemeral listeners)."""
    config = load_config(None)
    return replace(config, sip=replace(config.sip, **sip),
                   storage=replace(config.storage, database=database_in(folder)))


class StartTests(SynchronousTestCase):
    """Start-up on a memory reactor: what is bound, what is logged, wiring."""

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.folder = self.mktemp()
        self.fatal: list[str] = []
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def config(self, data: dict[str, Any]) -> Config:
        """A configuration whose database is in this test's folder."""
        return config_from(data, self.folder)

    def start(self, config: Config, wait: bool = True) -> SwitchService:
        """Build and start a service on the fake reactor (and, with C{wait},
        let its storage phase finish); stop it in cleanup."""
        service = SwitchService(self.reactor, config, fatal=self.fatal.append)
        service.startService()
        self.addCleanup(self.stop, service)
        if wait:
            run_until(self.reactor, service.when_started())
        return service

    def stop(self, service: SwitchService) -> None:
        """Stop C{service} if still running; nothing may be left behind."""
        if service.running:
            stopped = service.stopService()
            run_until(self.reactor, stopped)
            self.successResultOf(stopped)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def warnings(self) -> list[str]:
        """The text of every warning logged so far."""
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if e.get("log_level") == LogLevel.warn]

    def test_binds_configured_addresses(self) -> None:
        """Each SIP listener and the OAM site are bound where configured
        (the OAM site first: it answers while the storage phase runs)."""
        service = self.start(self.config({
            "sip": {"listen": ["udp:127.0.0.1:5070", "tcp:127.0.0.1:5071"],
                    "max_message_size": 4096},
            "oam": {"listen": "tcp:8090:interface=127.0.0.1"},
        }))
        self.assertTrue(service.ready)
        self.assertEqual([(p, i, size) for p, _, i, size in self.reactor.udp_servers],
                         [(5070, "127.0.0.1", 4096)])
        self.assertEqual([(p, i) for p, _, _, i in self.reactor.tcpServers],
                         [(8090, "127.0.0.1"), (5071, "127.0.0.1")])
        self.assertEqual([(lst.transport, lst.bound_port) for lst in service.transport.listeners],
                         [("UDP", 5070), ("TCP", 5071)])

    def test_demo_on_loopback_with_warning(self) -> None:
        """The demo binds loopback only, and warns that demo credentials are in use."""
        service = self.start(demo_config(self.folder))
        self.assertTrue(service.ready)
        bound = [("UDP", p, i) for p, _, i, _ in self.reactor.udp_servers]
        bound += [("TCP", p, i) for p, _, _, i in self.reactor.tcpServers]
        self.assertEqual(sorted(bound), [("TCP", 5060, "127.0.0.1"), ("TCP", 8080, "127.0.0.1"),
                                         ("UDP", 5060, "127.0.0.1"), ("UDP", 5070, "127.0.0.1")])
        for _, _, interface in bound:
            self.assertTrue(ipaddress.ip_address(interface).is_loopback)
        [warning] = [w for w in self.warnings() if "DEMO" in w]
        self.assertIn("1234", warning)
        self.assertIn("1000-1019", warning)

    def test_a_file_seeds_no_demo(self) -> None:
        """With a configuration file nothing is seeded and there is no demo
        warning: the directory is what the database holds (nothing here)."""
        service = self.start(self.config({"sip": {"listen": ["udp:127.0.0.1:5060"]}}))
        self.assertEqual([w for w in self.warnings() if "DEMO" in w], [])
        self.assertTrue(service.snapshot.loaded)
        self.assertEqual(len(service.snapshot), 0)
        self.assertIsNone(service.snapshot.tenant("127.0.0.1"))
        self.assertIsNone(service.admin_key_file)

    def test_a_file_may_listen_beyond_loopback(self) -> None:
        """Without demo data, a file may bind public addresses."""
        service = self.start(self.config({
            "sip": {"listen": ["udp:0.0.0.0:5060;advertise=192.0.2.1"]}}))
        self.assertTrue(service.ready)
        self.assertEqual([(p, i) for p, _, i, _ in self.reactor.udp_servers],
                         [(5060, "0.0.0.0")])

    def test_demo_refuses_public_listeners(self) -> None:
        """The demo (password 1234) never listens beyond loopback: start-up
        stops with exit status 2 before anything is opened."""
        config = demo_config(self.folder, listen=("udp:0.0.0.0:5060;advertise=192.0.2.1",))
        stderr = self.capture_stderr()
        error = self.assertRaises(SystemExit, self.start, config)
        self.assertEqual(error.code, 2)
        self.assertEqual(stderr.getvalue(), "b2bua: <demo>: sip.listen: 'udp:0.0.0.0:5060;"
                         "advertise=192.0.2.1': the demo may only listen on loopback "
                         "(127.0.0.0/8, ::1)\n")
        self.assertEqual((self.reactor.udp_servers, self.reactor.tcpServers), ([], []))
        self.assertFalse(os.path.exists(self.folder))

    def test_not_ready_until_started(self) -> None:
        """C{ready} is false before start and after stop."""
        service = SwitchService(self.reactor, self.config({}), fatal=self.fatal.append)
        self.assertFalse(service.ready)
        service.startService()
        run_until(self.reactor, service.when_started())
        self.assertTrue(service.ready)
        stopped = service.stopService()
        run_until(self.reactor, stopped)
        self.successResultOf(stopped)
        self.assertFalse(service.ready)

    def test_ready_only_once_the_snapshot_is_loaded(self) -> None:
        """The OAM site answers at once, but no SIP listener is open and
        C{/ready} stays false until the snapshot is loaded."""
        service = self.start(self.config({"sip": {"listen": ["udp:127.0.0.1:5060"]}}),
                             wait=False)
        self.assertFalse(service.ready)
        self.assertEqual(service.oam.not_ready_reason(), "starting")
        self.assertEqual([p for p, _, _, _ in self.reactor.tcpServers], [8080])
        self.assertEqual(self.reactor.udp_servers, [])
        run_until(self.reactor, service.when_started())
        self.assertTrue(service.ready)
        self.assertTrue(service.snapshot.loaded)
        self.assertIsNone(service.oam.not_ready_reason())
        self.assertEqual([p for p, _, _, _ in self.reactor.udp_servers], [5060])

    def test_storage_is_exposed(self) -> None:
        """The database, its repositories, the change feed and the snapshot
        are on the service; the snapshot is the switch's directory and what
        plugins were given."""
        service = self.start(self.config({"sip": {"listen": ["udp:127.0.0.1:5060"]}}))
        self.assertIsInstance(service.database, Database)
        self.assertIsInstance(service.feed, ChangeFeed)
        self.assertIsInstance(service.snapshot, Snapshot)
        self.assertIs(service.switch.directory, service.snapshot)
        self.assertIs(service.directory, service.snapshot)
        self.assertIs(service.pm.get_plugin("local_routing").services.directory,
                      service.snapshot)
        self.assertIs(service.repositories["accounts"].changes, service.feed)
        self.assertNotIn("cards", service.repositories)
        self.assertIsNone(service.listener)

    def test_secret_gives_the_cards_repository(self) -> None:
        """With C{storage.secret} the cards repository exists, keyed with it."""
        secret = "s" * 20
        service = self.start(self.config({"sip": {"listen": ["udp:127.0.0.1:5060"]},
                                          "storage": {"secret": secret}}))
        self.assertEqual(service.repositories["cards"].secret, secret)

    def test_snapshot_follows_changes(self) -> None:
        """An account created through the service's repositories reaches
        the switch's directory (SQLite: the in-process feed)."""
        service = self.start(self.config({"sip": {"listen": ["udp:127.0.0.1:5060"]}}))
        admin = Scope.admin("test")
        created = service.repositories["customers"].create(
            {"name": "acme", "sip_domain": "acme.example", "currency": "EUR"}, admin)
        run_until(self.reactor, created)
        customer = self.successResultOf(created)
        created = service.repositories["accounts"].create(
            {"customer_id": customer["id"], "number": "200", "sip_username": "alice",
             "password": "correct horse"}, admin)
        run_until(self.reactor, created)
        while service.snapshot.by_username("acme.example", "alice") is None:
            f, args, kwargs = self.reactor.from_threads.get(timeout=WAIT)
            f(*args, **kwargs)
        self.assertEqual(service.switch.directory.extension("acme.example", "200").username,
                         "alice")
        self.assertEqual(service.metrics.registry.get_sample_value(
            "b2bua_provisioning_snapshot_version"), service.snapshot.version)

    def seed_card(self) -> None:
        """Put one calling card into this test's database."""
        database = Database(database_in(self.folder), self.reactor)
        steps: Deferred[Any] = migrate(database)
        run_until(self.reactor, steps)
        repos = repositories(database, ChangeFeed(), "k" * 20)
        admin = Scope.admin("test")
        made = repos["card_batches"].create({"name": "b", "currency": "USD",
                                             "face_value": "5"}, admin)
        run_until(self.reactor, made)
        made = repos["cards"].create({"batch_id": self.successResultOf(made)["id"],
                                      "serial": "S1", "pin": "12345678"}, admin)
        run_until(self.reactor, made)
        self.successResultOf(made)
        closed = database.close()
        run_until(self.reactor, closed)

    def test_secret_required_when_cards_exist(self) -> None:
        """A database holding cards needs C{storage.secret}: start-up fails
        with one line naming the key, and nothing listens for SIP."""
        self.seed_card()
        stderr = self.capture_stderr()
        service = self.start(self.config({"sip": {"listen": ["udp:127.0.0.1:5060"]}}))
        [line] = self.fatal
        self.assertEqual(line, "test.toml: storage.secret: required: the database holds "
                               "calling cards, whose PINs are hashed with it")
        self.assertEqual(stderr.getvalue(), f"b2bua: {line}\n")
        self.assertEqual(service.startup_error, line)
        self.assertFalse(service.ready)
        self.assertEqual(self.reactor.udp_servers, [])

    def capture_stderr(self) -> Any:
        """Replace standard error by a buffer for this test; return it."""
        import io
        import sys

        buffer = io.StringIO()
        self.patch(sys, "stderr", buffer)
        return buffer

    def test_unmigrated_database_without_migrate(self) -> None:
        """C{storage.migrate = false} on an empty database stops start-up
        with one line naming C{storage.migrate}."""
        self.capture_stderr()
        self.start(self.config({"storage": {"migrate": False}}))
        [line] = self.fatal
        versions = [m.version for m in migrations_for("sqlite")]
        self.assertTrue(line.startswith("test.toml: storage.migrate: the database lacks "
                                        f"schema version(s) {versions}"), line)

    def test_unusable_database(self) -> None:
        """A database that cannot be opened stops start-up with one line
        naming C{storage.database}, without a traceback."""
        stderr = self.capture_stderr()
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("a file, not a folder")
        self.start(self.config({"storage": {"database": f"sqlite:///{blocker}/b2bua.db"}}))
        [line] = self.fatal
        self.assertTrue(line.startswith(f"test.toml: storage.database: sqlite:///{blocker}/"),
                        line)
        self.assertNotIn("Traceback", stderr.getvalue())

    def test_stopped_while_starting(self) -> None:
        """Stopping during the storage phase opens nothing more, reports no
        failure and closes the database."""
        service = self.start(self.config({"sip": {"listen": ["udp:127.0.0.1:5060"]}}),
                             wait=False)
        stopped = service.stopService()
        run_until(self.reactor, stopped)
        self.successResultOf(stopped)
        run_until(self.reactor, service.when_started())
        self.assertEqual((self.fatal, self.reactor.udp_servers), ([], []))
        self.assertFalse(service.ready)
        failed = service.database.run(lambda connection: None)
        self.failureResultOf(failed)

    def test_stop_closes_every_port(self) -> None:
        """Stopping stops every listener, the OAM site's included."""
        service = self.start(demo_config(self.folder))
        self.assertEqual(len(self.reactor.ports), 4)
        stopped = service.stopService()
        run_until(self.reactor, stopped)
        self.successResultOf(stopped)
        self.assertEqual([p.stopped for p in self.reactor.ports], [True] * 4)
        self.assertEqual(service.transport.listeners, [])

    def test_oam_disabled(self) -> None:
        """With C{oam.enabled = false} only the SIP listeners are bound."""
        self.start(self.config({"sip": {"listen": ["tcp:127.0.0.1:5060"]},
                                "oam": {"enabled": False}}))
        self.assertEqual([p for p, _, _, _ in self.reactor.tcpServers], [5060])

    def test_settings_reach_the_layers(self) -> None:
        """Timers, limits and call settings go where they are used."""
        service = self.start(self.config({
            "sip": {"listen": ["udp:127.0.0.1:5060"], "t1": 0.25, "t2": 2, "t4": 3,
                    "max_message_size": 2048, "idle_timeout": 30,
                    "max_connections_per_source": 5, "user_agent": "Test/1"},
            "core": {"no_answer_timeout": 20, "session_expires": 600,
                     "follow_redirects": False, "drain_timeout": 7},
        }))
        timers = service.transactions.timers
        self.assertEqual((timers.t1, timers.t2, timers.t4), (0.25, 2.0, 3.0))
        self.assertEqual(service.transport.max_message_size, 2048)
        self.assertEqual(service.transport.connections.idle_timeout, 30.0)
        settings = service.switch.settings
        self.assertEqual((settings.no_answer_timeout, settings.session_expires,
                          settings.follow_redirects, settings.drain_timeout,
                          settings.user_agent), (20.0, 600, False, 7.0, "Test/1"))

    def test_plugin_settings(self) -> None:
        """A C{[plugins.NAME]} table reaches that plugin at start-up."""
        service = self.start(self.config({
            "sip": {"listen": ["udp:127.0.0.1:5060"]},
            "plugins": {"local_routing": {"ring_timeout": 12}},
        }))
        self.assertEqual(service.pm.get_plugin("local_routing").ring_timeout, 12.0)

    def test_disabled_plugin(self) -> None:
        """A disabled built-in plugin is not registered."""
        service = self.start(self.config({"sip": {"listen": ["udp:127.0.0.1:5060"]},
                                          "plugins": {"disabled": ["local_routing"]}}))
        self.assertIsNone(service.pm.get_plugin("local_routing"))


class SIPClient(DatagramProtocol):
    """A UDP user agent client just able to wait for final responses."""

    def __init__(self) -> None:
        self._waiting: dict[str, Deferred[Response]] = {}

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """Hand a final response to whoever waits for its Call-ID."""
        message = parse_message(data)
        if isinstance(message, Response) and message.code >= 200:
            waiter = self._waiting.pop(message.call_id, None)
            if waiter is not None:
                waiter.callback(message)

    def send(self, data: bytes, port: int) -> Deferred[Response]:
        """Send C{data} to the switch; fire with the final response (bounded)."""
        call_id = parse_message(data).call_id
        waiting: Deferred[Response] = Deferred()
        self._waiting[call_id] = waiting
        self.transport.write(data, ("127.0.0.1", port))
        return waiting.addTimeout(WAIT, reactor)

    def ack(self, invite: bytes, response: Response, port: int) -> None:
        """ACK a non-2xx final response to C{invite} (same branch, RFC 3261 17.1.1.3)."""
        request = parse_message(invite)
        lines = [f"ACK {request.uri_text} SIP/2.0",
                 f"Via: {request.headers.get('Via')}",
                 "Max-Forwards: 70",
                 f"From: {request.headers.get('From')}",
                 f"To: {response.headers.get('To')}",
                 f"Call-ID: {request.call_id}",
                 f"CSeq: {request.cseq.number} ACK",
                 "Content-Length: 0", "", ""]
        self.transport.write("\r\n".join(lines).encode(), ("127.0.0.1", port))


_serial = count(1)


def sip_request(method: str, local_port: int, target_port: int,
                user: str = "1001") -> bytes:
    """A request from extension 1000 to C{user}, new Call-ID and branch."""
    n = next(_serial)
    uri = f"sip:{user}@127.0.0.1:{target_port}"
    lines = [f"{method} {uri} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK-svc-{n};rport",
             "Max-Forwards: 70",
             f"From: <sip:1000@127.0.0.1>;tag=t{n}",
             f"To: <sip:{user}@127.0.0.1>",
             f"Call-ID: service-test-{n}@127.0.0.1",
             f"CSeq: 1 {method}",
             f"Contact: <sip:1000@127.0.0.1:{local_port}>",
             "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


class LoopbackTests(TestCase):
    """The running switch on 127.0.0.1 and the real reactor."""

    timeout = 30

    def setUp(self) -> Deferred[None]:
        config = config_from({
            "sip": {"listen": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]},
            "oam": {"listen": "tcp:0:interface=127.0.0.1"},
        }, self.mktemp())
        self.service = SwitchService(reactor, config, fatal=self.startup_failed)
        self.server_connections: list[Deferred[None]] = []
        self.service.startService()
        self.addCleanup(self.stop_service)
        self.track_oam_connections()
        self.client = SIPClient()
        self.client_port = reactor.listenUDP(0, self.client, interface="127.0.0.1")
        self.addCleanup(self.client_port.stopListening)
        self.agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        return self.service.when_started().addTimeout(WAIT, reactor)

    def startup_failed(self, line: str) -> None:
        """Start-up must not fail here (and must not stop the test's reactor)."""
        self.fail(f"start-up failed: {line}")

    def track_oam_connections(self) -> None:
        """Note every server-side OAM connection, to wait for its end in cleanup."""
        site = self.service.oam_port.factory
        build = site.buildProtocol

        def tracked(addr: Any) -> Any:
            protocol = build(addr)
            lost: Deferred[None] = Deferred()
            connection_lost = protocol.connectionLost

            def notify(reason: Any) -> None:
                connection_lost(reason)
                lost.callback(None)

            protocol.connectionLost = notify
            self.server_connections.append(lost)
            return protocol

        site.buildProtocol = tracked

    def stop_service(self) -> Deferred[Any]:
        """Stop the service (if running) and wait until every connection is gone."""
        stopped = self.service.stopService() if self.service.running else None
        waits = [d for d in (stopped, *self.server_connections) if d is not None]
        return DeferredList(waits, fireOnOneErrback=True, consumeErrors=True)

    def port(self, transport: str) -> int:
        """The bound port of our listener for C{transport}."""
        [listener] = [lst for lst in self.service.transport.listeners
                      if lst.transport == transport]
        return listener.bound_port

    @property
    def oam_port(self) -> int:
        """The port the OAM site is bound to."""
        return self.service.oam_port.getHost().port

    @inlineCallbacks
    def http(self, method: bytes, path: str) -> Any:
        """C{method} C{path} on the OAM site: (code, content type, body)."""
        url = f"http://127.0.0.1:{self.oam_port}{path}".encode()
        response = yield self.agent.request(method, url, Headers()).addTimeout(WAIT, reactor)
        body = yield readBody(response).addTimeout(WAIT, reactor)
        content_type = response.headers.getRawHeaders(b"content-type", [b""])[0]
        return response.code, content_type, body

    def test_ready_and_bound_ports(self) -> None:
        """After C{startService} the switch is ready and reports real ports."""
        self.assertTrue(self.service.ready)
        for listener in self.service.transport.listeners:
            self.assertNotEqual(listener.bound_port, 0)
            self.assertEqual(listener.bound_port, listener.port.getHost().port)
            self.assertEqual(listener.port.getHost().host, "127.0.0.1")
        self.assertEqual(self.service.transport.local_address("UDP"),
                         ("127.0.0.1", self.port("UDP")))
        self.assertEqual(self.service.transport.local_address("TCP"),
                         ("127.0.0.1", self.port("TCP")))
        self.assertNotEqual(self.oam_port, 0)

    @inlineCallbacks
    def test_options_over_udp(self) -> Any:
        """OPTIONS over a real UDP socket gets 200 with Allow."""
        local = self.client_port.getHost().port
        request = sip_request("OPTIONS", local, self.port("UDP"))
        response = yield self.client.send(request, self.port("UDP"))
        self.assertEqual(response.code, 200)
        allow = [m.strip() for m in response.headers.get("Allow").split(",")]
        for method in ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER"):
            self.assertIn(method, allow)
        self.assertEqual(response.via[0].branch, parse_message(request).via[0].branch)
        self.assertEqual(response.via[0].params.get("rport"), str(local))
        self.assertIsNotNone(response.to.tag)

    @inlineCallbacks
    def test_stun_on_the_sip_port(self) -> Any:
        """A STUN Binding request to the SIP UDP port (RFC 5626 4.4.2
        keep-alive) gets a success answer with the client's address."""
        from nat import stun

        replies: list[bytes] = []

        class Stun(DatagramProtocol):
            def datagramReceived(self, data: bytes, addr: Any) -> None:
                replies.append(data)

        port = reactor.listenUDP(0, Stun(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        transaction = b"0123456789ab"
        request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + transaction
        port.write(request, ("127.0.0.1", self.port("UDP")))
        for _ in range(50):
            if replies:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        (reply,) = replies
        answer = stun.parse(reply)
        self.assertEqual((answer.method, answer.cls), (stun.BINDING, stun.SUCCESS))
        self.assertEqual(answer.transaction_id, transaction)

    @inlineCallbacks
    def test_oam_over_http(self) -> Any:
        """C{/health}, C{/ready} and C{/metrics} answer over real HTTP."""
        code, content_type, body = yield self.http(b"GET", "/health")
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body)["status"], "ok")
        code, _, body = yield self.http(b"GET", "/ready")
        self.assertEqual((code, json.loads(body)), (200, {"ready": True}))
        code, content_type, body = yield self.http(b"GET", "/metrics")
        self.assertEqual(code, 200)
        self.assertTrue(content_type.startswith(b"text/plain"), content_type)
        self.assertIn(b"b2bua_sip_requests_total", body)
        self.assertIn(b"b2bua_transactions_active", body)

    @inlineCallbacks
    def test_metrics_count_sip_traffic(self) -> Any:
        """An OPTIONS received is visible in C{/metrics}."""
        yield self.client.send(sip_request("OPTIONS", self.client_port.getHost().port,
                                           self.port("UDP")), self.port("UDP"))
        _, _, body = yield self.http(b"GET", "/metrics")
        self.assertIn(b'b2bua_sip_requests_total{method="OPTIONS"} 1.0', body)

    @inlineCallbacks
    def test_drain(self) -> Any:
        """An INVITE is challenged (407); after C{POST /drain}, C{/ready}
        answers 503 and a new INVITE is refused with 503 before any challenge."""
        local, sip = self.client_port.getHost().port, self.port("UDP")
        invite = sip_request("INVITE", local, sip)
        response = yield self.client.send(invite, sip)
        self.client.ack(invite, response, sip)
        self.assertEqual(response.code, 407)
        self.assertIsNotNone(response.headers.get("Proxy-Authenticate"))

        code, _, body = yield self.http(b"POST", "/drain")
        self.assertEqual((code, json.loads(body)), (202, {"draining": True}))
        self.assertTrue(self.service.switch.draining)
        code, _, body = yield self.http(b"GET", "/ready")
        self.assertEqual(code, 503)
        self.assertEqual(json.loads(body)["reason"], "draining")
        code, _, _ = yield self.http(b"GET", "/health")
        self.assertEqual(code, 200)

        invite = sip_request("INVITE", local, sip)
        response = yield self.client.send(invite, sip)
        self.client.ack(invite, response, sip)
        self.assertEqual(response.code, 503)
        self.assertIsNone(response.headers.get("Proxy-Authenticate"))
        self.assertIsNotNone(response.headers.get("Retry-After"))

        response = yield self.client.send(sip_request("OPTIONS", local, sip), sip)
        self.assertEqual(response.code, 200)

    @inlineCallbacks
    def test_stop_releases_ports(self) -> Any:
        """After C{stopService} nothing accepts on the SIP TCP or OAM port."""
        tcp, oam = self.port("TCP"), self.oam_port
        udp_port = self.service.transport.listeners[0].port
        yield self.stop_service()
        self.assertFalse(self.service.ready)
        self.assertNotIn(udp_port, reactor.getReaders())
        for port in (tcp, oam):
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=WAIT)
            yield self.assertFailure(endpoint.connect(Factory.forProtocol(Protocol)),
                                     ConnectionRefusedError)
