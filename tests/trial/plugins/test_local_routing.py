"""Tests for L{plugins.local_routing}: calls between a tenant's extensions
ring every registered contact, through the public harness."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.decisions import Reject, Route
from b2bua.core.location import Binding, Received
from b2bua.core.transfer_policy import CalleeDestination
from b2bua.sip.interfaces import Target
from b2bua.sip.message import Request
from b2bua.testing import SwitchHarness
from plugins.local_routing import NAME, LocalRouting


def invite(uri: str) -> Request:
    """An INVITE for C{uri} (only its Request-URI matters here)."""
    return Request("INVITE", uri)


class LocalRoutingTests(SynchronousTestCase):
    """The plugin's answers, asked directly."""

    def setUp(self) -> None:
        """The plugin configured by a harness (whose registrar it reads)."""
        self.h = SwitchHarness(settings={NAME: {"ring_timeout": 25}})
        self.plugin = self.h.pm.get_plugin(NAME)
        self.call = SimpleNamespace(tenant="127.0.0.1")

    def route(self, uri: str, call: Any = None) -> Any:
        """The plugin's answer for a call to C{uri}, lazy ones resolved."""
        answer = self.plugin.b2bua_route_call(call=call or self.call, request=invite(uri))
        if callable(answer):
            return self.successResultOf(answer())
        return answer

    def bind(self, aor: str, contact: str, received: Received,
             path: tuple[str, ...] = (), outbound: bool = False) -> None:
        """Register C{contact} for C{aor} straight in the location store
        (with an RFC 5626 instance-id and reg-id when C{outbound})."""
        now = self.h.clock.seconds()
        binding = Binding(aor=aor, contact=contact, expires_at=now + 3600, q=None,
                          call_id=f"{contact}-reg", cseq=1, received=received, path=path,
                          instance_id="<urn:uuid:1>" if outbound else None,
                          reg_id=1 if outbound else None, user_agent=None,
                          registered_at=now)
        self.successResultOf(self.h.location.update(aor, binding.call_id, 1, [binding], now))

    def test_registered_contacts(self) -> None:
        """Every contact of the extension becomes a destination of one
        parallel step, sent to the address its REGISTER came from (NAT),
        with its Path as Route and the configured ring timeout; only an
        outbound (RFC 5626) registration pins its very connection."""
        self.bind("1001@127.0.0.1", "sip:1001@192.168.1.5:5060",
                  Received("UDP", "203.0.113.7", 40000))
        self.bind("1001@127.0.0.1", "sip:1001@10.0.0.9:5062;transport=tcp",
                  Received("TCP", "198.51.100.2", 50123, connection_id=7),
                  path=("<sip:edge.example.net;lr>",))
        self.bind("1001@127.0.0.1", "sip:1001@10.0.0.10:5062;transport=tls",
                  Received("TLS", "198.51.100.3", 50124, connection_id=8), outbound=True)
        [step] = self.route("sip:1001@127.0.0.1")
        self.assertIsInstance(step, Route)
        self.assertEqual((step.ring_timeout, step.source), (25.0, NAME))
        hops = sorted(((str(d.uri), d.next_hop, d.route, d.label) for d in step.destinations),
                      key=lambda hop: hop[0])
        self.assertEqual(hops, sorted([
            ("sip:1001@192.168.1.5:5060", Target("UDP", "203.0.113.7", 40000), (), "1001"),
            ("sip:1001@10.0.0.9:5062;transport=tcp", Target("TCP", "198.51.100.2", 50123),
             ("<sip:edge.example.net;lr>",), "1001"),
            ("sip:1001@10.0.0.10:5062;transport=tls", Target("TLS", "198.51.100.3", 50124, 8),
             (), "1001")], key=lambda hop: hop[0]))
        self.h.assert_idle()

    def test_destinations_name_the_callee(self) -> None:
        """Each destination is marked with the extension it rings (its
        address-of-record and tenant): whoever answers there is one of the
        switch's own subscribers, who pays for the transfers it asks for
        (C{docs/transfer.md}, "Who pays")."""
        self.bind("1001@127.0.0.1", "sip:1001@192.168.1.5:5060",
                  Received("UDP", "203.0.113.7", 40000))
        self.bind("1001@127.0.0.1", "sip:1001@192.168.1.6:5060",
                  Received("UDP", "203.0.113.8", 40000))
        [step] = self.route("sip:1001@127.0.0.1")
        self.assertEqual(len(step.destinations), 2)
        for destination in step.destinations:
            self.assertIsInstance(destination, CalleeDestination)
            self.assertEqual((destination.callee_identity, destination.callee_tenant),
                             ("1001@127.0.0.1", "127.0.0.1"))
        self.h.assert_idle()

    def test_unregistered(self) -> None:
        """A known extension without contacts is C{480}."""
        self.assertEqual(self.route("sip:1002@127.0.0.1"),
                         Reject(480, "Temporarily Unavailable", source=NAME))
        self.h.assert_idle()

    def test_not_ours(self) -> None:
        """Unknown numbers, other domains, callers without a tenant and
        non-SIP URIs get no opinion."""
        self.assertIsNone(self.route("sip:4711@127.0.0.1"))
        self.assertIsNone(self.route("sip:1001@example.net"))
        self.assertIsNone(self.route("sip:1001@127.0.0.1", SimpleNamespace(tenant="")))
        self.assertIsNone(self.route("tel:+15551234567"))
        self.h.assert_idle()

    def test_settings(self) -> None:
        """Without (or with a bad) C{ring_timeout} the core's default rules."""
        plugin = LocalRouting()
        plugin.b2bua_configure(services=self.h.services, settings={})
        self.assertIsNone(plugin.ring_timeout)
        plugin.b2bua_configure(services=self.h.services,
                               settings={NAME: {"ring_timeout": "long"}})
        self.assertIsNone(plugin.ring_timeout)
        self.assertIsNone(LocalRouting().b2bua_route_call(call=self.call,
                                                          request=invite("sip:1001@127.0.0.1")))
        self.h.assert_idle()


class RingTimeoutTests(SynchronousTestCase):
    """The ring timeout setting, through the switch."""

    def test_callee_rings_for_ring_timeout(self) -> None:
        """An extension rings for C{ring_timeout} seconds, then the callee is
        cancelled and the caller gets 408."""
        h = SwitchHarness(settings={NAME: {"ring_timeout": 30}})
        alice, bob = h.register("1000"), h.register("1001")
        call = alice.call("1001")
        bob.incoming[0].ring()
        h.advance(29.9)
        self.assertIsNone(call.code)
        h.advance(0.1)
        self.assertEqual(call.code, 408)
        self.assertEqual(bob.incoming[0].code, 487)
        h.settle()
        h.assert_idle()
