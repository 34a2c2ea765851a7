"""Tests for L{nat.plugin}: settings, and the plugin on a whole switch
(L{b2bua.testing.SwitchHarness}): NATed phones are reached, pinged, and
dropped when they fall silent; the STUN server on a real loopback port."""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from b2bua.sip.headers import NameAddress
from b2bua.sip.interfaces import Source
from b2bua.sip.message import Response
from b2bua.sip.uri import URI
from b2bua.testing import (
    SWITCH_ADDRESS,
    Delivery,
    Phone,
    SwitchHarness,
    assert_no_delayed_calls,
)
from nat.plugin import (
    DIRECTORY,
    NAME,
    REGISTRATIONS,
    STUN_PORT,
    Nat,
    NatSettings,
    SettingsError,
    read_settings,
)
from nat.stun import MAGIC_COOKIE, SUCCESS, XOR_MAPPED_ADDRESS, decode_address, parse


class SettingsTests(SynchronousTestCase):
    """Reading C{[plugins.nat]}."""

    def test_defaults(self) -> None:
        """Pings every 30 s, 2 failures, 5 s timeout; no STUN server."""
        settings = read_settings({})
        self.assertEqual(settings, NatSettings())
        self.assertEqual((settings.ping_interval, settings.ping_failures, settings.stun_listen),
                         (30.0, 2, None))
        keepalive = settings.keepalive()
        assert keepalive is not None
        self.assertEqual((keepalive.interval, keepalive.failures, keepalive.timeout,
                          keepalive.in_flight), (30.0, 2, 5.0, 100))

    def test_values(self) -> None:
        """Every key read; 0 turns pings off; STUN addresses in both families."""
        settings = read_settings({"ping_interval": 0, "ping_failures": 3, "ping_timeout": 2,
                                  "pings_in_flight": 10, "stun_listen": "udp:[::1]:3479"})
        self.assertIsNone(settings.keepalive())
        self.assertEqual((settings.ping_failures, settings.ping_timeout,
                          settings.pings_in_flight, settings.stun_listen),
                         (3, 2.0, 10, ("::1", 3479)))
        self.assertEqual(read_settings({"stun_listen": "udp:0.0.0.0"}).stun_listen,
                         ("0.0.0.0", STUN_PORT))
        self.assertIsNone(read_settings({"stun_listen": ""}).stun_listen)

    def test_bad_tables(self) -> None:
        """A bad value names its key."""
        for table, key in [
            ([], "plugins.nat:"),
            ({"pings": 1}, "plugins.nat.pings"),
            ({"ping_interval": "30"}, "plugins.nat.ping_interval"),
            ({"ping_interval": True}, "plugins.nat.ping_interval"),
            ({"ping_interval": -1}, "plugins.nat.ping_interval"),
            ({"ping_failures": 0}, "plugins.nat.ping_failures"),
            ({"ping_failures": 1.5}, "plugins.nat.ping_failures"),
            ({"ping_timeout": 0}, "plugins.nat.ping_timeout"),
            ({"ping_timeout": 40}, "plugins.nat.ping_timeout"),
            ({"pings_in_flight": 0}, "plugins.nat.pings_in_flight"),
            ({"stun_listen": 3478}, "plugins.nat.stun_listen"),
            ({"stun_listen": "tcp:127.0.0.1:3478"}, "plugins.nat.stun_listen"),
            ({"stun_listen": "udp:stun.example.com:3478"}, "plugins.nat.stun_listen"),
            ({"stun_listen": "udp:127.0.0.1:70000"}, "plugins.nat.stun_listen"),
            ({"stun_listen": "udp:[::1"}, "plugins.nat.stun_listen"),
        ]:
            error = self.assertRaises(SettingsError, read_settings, table)
            self.assertIn(key, str(error))


def nat_phone(h: SwitchHarness, user: str, private: str, **kwargs: Any) -> Phone:
    """A phone of C{h} whose Contact names C{private} (its LAN address)
    while it sends from its own 127.0.0.N: a phone behind a NAT."""
    phone = h.phone(user, **kwargs)
    params = {} if phone.transport_name == "UDP" else {"transport": phone.transport_name.lower()}
    phone.contact = NameAddress(URI("sip", user, private, 5060, params))
    outgoing = phone.register()
    if outgoing.code != 200:
        raise AssertionError(f"REGISTER of {user} got {outgoing.code}")
    return phone


class SwitchTests(SynchronousTestCase):
    """The plugin on a whole switch."""

    def setUp(self) -> None:
        """A switch with the NAT plugin (pings every 30 s, 2 failures)."""
        self.plugin = Nat(discovery=DIRECTORY)
        self.h = SwitchHarness(plugins={NAME: self.plugin},
                               settings={NAME: {"ping_interval": 30, "ping_failures": 2,
                                                "ping_timeout": 5}})

    def stop(self) -> None:
        """Stop the switch, let the phones' transactions end: nothing may
        be left on the clock (the keep-alive's loop and timers included)."""
        self.h.stop()
        self.h.settle()
        assert_no_delayed_calls(self.h.clock)

    def options_to(self, phone: Phone) -> list[Any]:
        """The OPTIONS delivered to C{phone}."""
        return self.h.network.requests("OPTIONS", receiver=phone.address)

    def test_natted_phone_reached_and_pinged(self) -> None:
        """A NATed phone gets its calls at its source address (not at its
        private Contact) and an OPTIONS every interval, which it answers."""
        alice = self.h.register("1000")
        bob = nat_phone(self.h, "1001", "192.168.1.60")
        call = alice.call("1001")
        self.assertEqual(len(bob.incoming), 1)
        bob.incoming[0].ring()
        bob.incoming[0].answer()
        self.assertEqual(call.code, 200)
        call.hangup()
        self.h.advance(30)
        self.assertEqual(len(self.options_to(bob)), 1)
        self.assertEqual(self.options_to(alice), [])
        [options] = self.options_to(bob)
        self.assertEqual(options.uri_text, "sip:1001@192.168.1.60:5060")
        self.h.advance(30)
        self.assertEqual(len(self.options_to(bob)), 2)
        self.assertEqual(self.h.metric("b2bua_nat_pings_total", result="ok"), 2)
        self.assertEqual(len(self.successResultOf(self.h.registrar.lookup("1001@127.0.0.1"))), 1)
        self.h.settle()
        self.stop()

    def test_silent_phone_dropped(self) -> None:
        """When the NAT mapping dies (the phone's answers never arrive),
        the binding goes after two failed pings and calls get 480."""
        alice = self.h.register("1000")
        bob = nat_phone(self.h, "1001", "10.1.2.3")

        def from_bob(delivery: Delivery) -> bool:
            return delivery.sender == bob.address and isinstance(delivery.message, Response)

        self.h.network.drop(from_bob, count=None)
        self.h.advance(35)
        self.assertEqual(self.successResultOf(self.h.registrar.lookup("1001@127.0.0.1"))[0]
                         .contact, "sip:1001@10.1.2.3:5060")
        self.h.advance(30)
        self.assertEqual(self.successResultOf(self.h.registrar.lookup("1001@127.0.0.1")), [])
        self.assertEqual(self.h.metric("b2bua_nat_pings_total", result="timeout"), 2)
        self.assertEqual(self.h.metric("b2bua_nat_bindings_dropped_total"), 1)
        call = alice.call("1001")
        self.assertEqual(call.code, 480)
        self.h.settle()
        self.stop()

    def test_streams_and_plain_phones_not_pinged(self) -> None:
        """A NATed phone on TCP (it keeps its connection alive with CRLF
        pings) and a phone whose Contact is its source get no OPTIONS."""
        tcp = nat_phone(self.h, "1002", "192.168.1.61", transport="TCP")
        plain = self.h.register("1003")
        self.h.advance(90)
        self.assertEqual(self.options_to(tcp), [])
        self.assertEqual(self.options_to(plain), [])
        self.assertEqual(self.plugin.keepalive.pingable if self.plugin.keepalive else -1, 0)
        self.stop()

    def test_calls_counted_by_nat(self) -> None:
        """Each new call is counted as from behind a NAT or not."""
        nat_phone(self.h, "1000", "192.168.1.62").call("1001")
        self.h.register("1002").call("1001")
        self.assertEqual(self.h.metric("b2bua_nat_calls_total", nat="yes"), 1)
        self.assertEqual(self.h.metric("b2bua_nat_calls_total", nat="no"), 1)
        self.h.settle()
        self.stop()

    def test_off(self) -> None:
        """C{ping_interval = 0}: no keep-alive, nothing on the clock."""
        h = SwitchHarness(plugins={NAME: Nat()}, settings={NAME: {"ping_interval": 0}})
        nat_phone(h, "1001", "192.168.1.63")
        h.advance(120)
        self.assertEqual(h.network.requests("OPTIONS"), [])
        h.assert_idle()

    def test_without_a_sender(self) -> None:
        """A service that offers no way to send requests: no keep-alive
        (a warning), and the plugin still configures."""
        plugin = Nat()
        services = self.h.services
        bare = type(services)(services.clock, services.directory, services.registrar,
                              services.location, services.metrics, extra={})
        plugin.b2bua_configure(services=bare, settings={})
        self.assertIsNone(plugin.keepalive)
        self.assertIsNone(plugin.b2bua_unconfigure())
        self.stop()

    def test_stun_needs_a_udp_reactor(self) -> None:
        """C{stun_listen} on a service without a UDP reactor (a bare clock)
        is a settings error naming the key."""
        error = self.assertRaises(SettingsError, Nat().b2bua_configure,
                                  services=self.h.services,
                                  settings={NAME: {"ping_interval": 0,
                                                   "stun_listen": "udp:127.0.0.1:0"}})
        self.assertIn("plugins.nat.stun_listen", str(error))
        self.stop()


class RegistrationDiscoveryTests(SynchronousTestCase):
    """Discovery by registrations: the AORs the core reports (through
    L{Nat.registered}) are watched; the switch keeps no timer otherwise."""

    def setUp(self) -> None:
        """A switch with the plugin discovering by registrations."""
        self.plugin = Nat(discovery=REGISTRATIONS)
        self.h = SwitchHarness(plugins={NAME: self.plugin})

    def report(self, phone: Phone) -> None:
        """Tell the plugin of the phone's last REGISTER, as the core's
        notification would."""
        request = self.h.network.requests("REGISTER", sender=phone.address)[-1]
        self.plugin.registered(f"{phone.user}@{phone.domain}", request,
                               Source(phone.transport_name, phone.address, SWITCH_ADDRESS))

    def test_natted_registration_watched(self) -> None:
        """A NATed phone's AOR is watched and pinged; a plain phone's is
        not, and leaves no timer behind."""
        plain = self.h.register("1000")
        self.report(plain)
        self.h.settle()
        self.h.assert_idle()
        bob = nat_phone(self.h, "1001", "192.168.1.70")
        self.report(bob)
        keepalive = self.plugin.keepalive
        assert keepalive is not None
        self.assertEqual(keepalive.watching, {"1001@127.0.0.1"})
        self.h.advance(30)
        self.assertEqual(len(self.h.network.requests("OPTIONS", receiver=bob.address)), 1)
        self.assertEqual(self.h.network.requests("OPTIONS", receiver=plain.address), [])
        self.h.stop()
        self.h.settle()
        assert_no_delayed_calls(self.h.clock)

    def test_streams_and_paths_not_watched(self) -> None:
        """A REGISTER over TCP, or one with a Path, watches nothing."""
        tcp = nat_phone(self.h, "1002", "192.168.1.71", transport="TCP")
        self.report(tcp)
        keepalive = self.plugin.keepalive
        assert keepalive is not None
        request = self.h.network.requests("REGISTER", sender=tcp.address)[-1]
        request.headers.add("Path", "<sip:edge.example.net;lr>")
        self.plugin.registered("1002@127.0.0.1", request,
                               Source("UDP", tcp.address, SWITCH_ADDRESS))
        self.assertEqual(keepalive.watching, set())
        self.h.assert_idle()

    def test_seeded_at_start(self) -> None:
        """Bindings registered before the plugin starts (a restart) are
        watched from the start."""
        nat_phone(self.h, "1003", "10.3.3.3")
        again = Nat(discovery=REGISTRATIONS)
        again.b2bua_configure(services=self.h.services, settings={})
        assert again.keepalive is not None
        self.assertEqual(again.keepalive.watching, {"1003@127.0.0.1"})
        self.assertTrue(again.keepalive.running)
        again.b2bua_unconfigure()
        self.assertRaises(ValueError, Nat, discovery="dns")
        self.plugin.b2bua_unconfigure()  # the harness's own watches 1003 too
        self.h.settle()
        self.h.assert_idle()


class _Client(DatagramProtocol):
    """Sends one Binding request and fires C{answered} with the reply."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.answered: Deferred[bytes] = Deferred()

    def startProtocol(self) -> None:
        """Send at once (a bare Binding request)."""
        assert self.transport is not None
        self.transport.write(struct.pack("!HHI", 0x0001, 0, MAGIC_COOKIE) + b"\x05" * 12,
                             self.server)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """Keep the first reply."""
        if not self.answered.called:
            self.answered.callback(data)


class StunPluginTests(TestCase):
    """C{stun_listen}: the plugin's STUN server on a real loopback port."""

    timeout = 5

    async def test_stun_server(self) -> None:
        """The server answers on the configured port, counts what it
        answered, and closes its port when the plugin is unconfigured."""
        plugin = Nat()
        h = SwitchHarness(plugins={NAME: plugin}, extra={"reactor": reactor},
                          settings={NAME: {"ping_interval": 0, "stun_listen": "udp:127.0.0.1:0"}})
        port = plugin.stun_port
        assert port is not None
        client = _Client(("127.0.0.1", port.getHost().port))
        client_port = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(client_port.stopListening)
        reply = parse(await client.answered)
        self.assertEqual(reply.cls, SUCCESS)
        value = reply.get(XOR_MAPPED_ADDRESS)
        assert value is not None
        own = client_port.getHost()
        self.assertEqual(decode_address(value, struct.pack("!I", MAGIC_COOKIE) + b"\x05" * 12),
                         (own.host, own.port))
        self.assertEqual(h.metric("b2bua_nat_stun_requests_total", result="ok"), 1)
        closing = plugin.b2bua_unconfigure()
        assert closing is not None
        await closing
        self.assertIsNone(plugin.stun_port)

    def test_port_taken(self) -> None:
        """A port that cannot be opened is a settings error naming the key."""
        taken = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        error = self.assertRaises(
            SettingsError, SwitchHarness, plugins={NAME: Nat()}, extra={"reactor": reactor},
            settings={NAME: {"ping_interval": 0,
                             "stun_listen": f"udp:127.0.0.1:{taken.getHost().port}"}})
        self.assertIn("plugins.nat.stun_listen", str(error))
