"""Tests for L{b2bua.service.SwitchService}: start-up, OAM and SIP on loopback.

Two kinds of test:

  - L{StartTests} start the service on a memory reactor: which addresses
    it binds (the demo: loopback only), the demo warning, how the
    configuration reaches the layers and plugins, a clean stop;
  - L{LoopbackTests} start it on the real reactor, on 127.0.0.1 with
    ephemeral ports, and talk to it: OPTIONS over a real UDP socket, the OAM
    routes over real HTTP, and a drain (C{POST /drain}) that turns C{/ready}
    to 503 and answers a new INVITE 503 before any challenge.  Each waits
    at most a few seconds, and cleanup leaves no port, connection or timer.
"""

from __future__ import annotations

import ipaddress
import json
from itertools import count
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from zope.interface import implementer

from b2bua.config import Config, load_config, parse_config
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
    """A memory reactor that also records UDP listeners.

    @ivar udp_servers: (port, protocol, interface, maxPacketSize) per call.
    @ivar ports: every L{FakePort} handed out, in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.udp_servers: list[tuple[int, Any, str, int]] = []
        self.ports: list[FakePort] = []

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


def config_from(data: dict[str, Any]) -> Config:
    """A checked configuration from a TOML-like dict."""
    return parse_config(data, "test.toml")


class StartTests(SynchronousTestCase):
    """Start-up on a memory reactor: what is bound, what is logged, wiring."""

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def start(self, config: Config) -> SwitchService:
        """Build and start a service on the fake reactor; stop it in cleanup."""
        service = SwitchService(self.reactor, config)
        service.startService()
        self.addCleanup(self.stop, service)
        return service

    def stop(self, service: SwitchService) -> None:
        """Stop C{service} if still running; it must stop at once."""
        if service.running:
            self.successResultOf(service.stopService())
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def warnings(self) -> list[str]:
        """The text of every warning logged so far."""
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if e.get("log_level") == LogLevel.warn]

    def test_binds_configured_addresses(self) -> None:
        """Each SIP listener and the OAM site are bound where configured."""
        service = self.start(config_from({
            "sip": {"listen": ["udp:127.0.0.1:5070", "tcp:127.0.0.1:5071"],
                    "max_message_size": 4096},
            "oam": {"listen": "tcp:8090:interface=127.0.0.1"},
        }))
        self.assertTrue(service.ready)
        self.assertEqual([(p, i, size) for p, _, i, size in self.reactor.udp_servers],
                         [(5070, "127.0.0.1", 4096)])
        self.assertEqual([(p, i) for p, _, _, i in self.reactor.tcpServers],
                         [(5071, "127.0.0.1"), (8090, "127.0.0.1")])
        self.assertEqual([(lst.transport, lst.bound_port) for lst in service.transport.listeners],
                         [("UDP", 5070), ("TCP", 5071)])

    def test_demo_on_loopback_with_warning(self) -> None:
        """The demo binds loopback only, and warns that demo credentials are in use."""
        service = self.start(load_config(None))
        self.assertTrue(service.ready)
        bound = [("UDP", p, i) for p, _, i, _ in self.reactor.udp_servers]
        bound += [("TCP", p, i) for p, _, _, i in self.reactor.tcpServers]
        self.assertEqual(sorted(bound), [("TCP", 5060, "127.0.0.1"), ("TCP", 8080, "127.0.0.1"),
                                         ("UDP", 5060, "127.0.0.1")])
        for _, _, interface in bound:
            self.assertTrue(ipaddress.ip_address(interface).is_loopback)
        [warning] = [w for w in self.warnings() if "DEMO" in w]
        self.assertIn("1234", warning)
        self.assertIn("1000-1019", warning)

    def test_demo_directory_warning_with_a_file(self) -> None:
        """Until provisioning exists, a configuration file also serves the
        demo directory, and says so."""
        self.start(config_from({"sip": {"listen": ["udp:127.0.0.1:5060"]}}))
        [warning] = [w for w in self.warnings() if "DEMO" in w]
        self.assertIn("1234", warning)

    def test_demo_directory_refuses_public_listeners(self) -> None:
        """The demo directory (password 1234) never listens beyond loopback:
        start-up stops with exit status 2."""
        config = config_from({"sip": {"listen": ["udp:0.0.0.0:5060;advertise=192.0.2.1"]}})
        error = self.assertRaises(SystemExit, self.start, config)
        self.assertEqual(error.code, 2)

    def test_not_ready_until_started(self) -> None:
        """C{ready} is false before start and after stop."""
        service = SwitchService(self.reactor, load_config(None))
        self.assertFalse(service.ready)
        service.startService()
        self.assertTrue(service.ready)
        self.successResultOf(service.stopService())
        self.assertFalse(service.ready)

    def test_stop_closes_every_port(self) -> None:
        """Stopping stops every listener, the OAM site's included."""
        service = self.start(load_config(None))
        self.assertEqual(len(self.reactor.ports), 3)
        self.successResultOf(service.stopService())
        self.assertEqual([p.stopped for p in self.reactor.ports], [True, True, True])
        self.assertEqual(service.transport.listeners, [])

    def test_oam_disabled(self) -> None:
        """With C{oam.enabled = false} only the SIP listeners are bound."""
        self.start(config_from({"sip": {"listen": ["tcp:127.0.0.1:5060"]},
                                "oam": {"enabled": False}}))
        self.assertEqual([p for p, _, _, _ in self.reactor.tcpServers], [5060])

    def test_settings_reach_the_layers(self) -> None:
        """Timers, limits and call settings go where they are used."""
        service = self.start(config_from({
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
        service = self.start(config_from({
            "sip": {"listen": ["udp:127.0.0.1:5060"]},
            "plugins": {"local_routing": {"ring_timeout": 12}},
        }))
        self.assertEqual(service.pm.get_plugin("local_routing").ring_timeout, 12.0)

    def test_disabled_plugin(self) -> None:
        """A disabled built-in plugin is not registered."""
        service = self.start(config_from({"sip": {"listen": ["udp:127.0.0.1:5060"]},
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

    def setUp(self) -> None:
        config = config_from({
            "sip": {"listen": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]},
            "oam": {"listen": "tcp:0:interface=127.0.0.1"},
        })
        self.service = SwitchService(reactor, config)
        self.server_connections: list[Deferred[None]] = []
        self.service.startService()
        self.addCleanup(self.stop_service)
        self.track_oam_connections()
        self.client = SIPClient()
        self.client_port = reactor.listenUDP(0, self.client, interface="127.0.0.1")
        self.addCleanup(self.client_port.stopListening)
        self.agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))

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
