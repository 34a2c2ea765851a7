"""Tests for L{plugins.trunking.probing}: OPTIONS probes through a real
transaction layer on a L{Clock}, answered (or not) by the test as the
vendor."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.services import Services
from b2bua.metrics import Metrics
from b2bua.sip.interfaces import Target
from b2bua.testing import assert_no_delayed_calls
from plugins.trunking.probing import (
    NAME,
    ConnectionProber,
    Health,
    ProbeSettings,
    SettingsError,
    TrunkProbing,
    probe_is_good,
    probed_connections,
    read_settings,
)
from plugins.trunking.uac import LOCAL_ADDRESS, SEND_REQUEST, Connection
from tests.trial.plugins.trunking.uac_support import LOCAL, VENDOR, VendorWire, counting_random

A = Connection(1, "vendor-a", Target("UDP", *VENDOR), f"{VENDOR[0]}:{VENDOR[1]}")
B = Connection(2, "vendor-b", Target("TCP", "198.51.100.8", 5070), "198.51.100.8:5070")


class ProberTestCase(SynchronousTestCase):
    """A prober on a wire."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.wire = VendorWire(self.clock)
        self.metrics = Metrics()
        self.changes: list[tuple[int, bool, str]] = []

    def make(self, connections: list[Connection] = (A,), **settings: Any) -> ConnectionProber:  # type: ignore[assignment]
        """A started prober of C{connections}."""
        prober = ConnectionProber(self.clock, self.wire.sender(), ProbeSettings(**settings),
                                  registry=self.metrics.registry,
                                  random_bytes=counting_random())
        prober.on_change(lambda cid, available, health: self.changes.append(
            (cid, available, str(health))))
        prober.update(connections)
        prober.start()
        return prober

    def probes(self, target: Target | None = None) -> list[Any]:
        """The OPTIONS sent (to C{target}), retransmissions left out."""
        out = []
        for request in self.wire.requests("OPTIONS"):
            if target is None or any(r is request for _, r, t in self.wire.sent if t == target):
                out.append(request)
        return out

    def up(self, connection_id: int = 1) -> float | None:
        """The C{b2bua_trunk_connection_up} sample."""
        return self.metrics.registry.get_sample_value(
            "b2bua_trunk_connection_up", {"connection": str(connection_id)})

    def finish(self, prober: ConnectionProber) -> None:
        """Stop, let the transactions end: nothing may be left."""
        prober.stop()
        self.clock.advance(64)
        assert_no_delayed_calls(self.clock)


class RuleTests(SynchronousTestCase):
    """Which answers prove a peer alive."""

    def test_rule(self) -> None:
        """Any final answer but 408 and 5xx; accepted codes are good too."""
        for code in (200, 202, 403, 404, 405, 481, 486, 603):
            self.assertTrue(probe_is_good(code), code)
        for code in (408, 500, 501, 502, 503, 504):
            self.assertFalse(probe_is_good(code), code)
        self.assertTrue(probe_is_good(503, frozenset({503})))


class ProbeTests(ProberTestCase):
    """Sending probes and judging their answers."""

    def test_request(self) -> None:
        """One OPTIONS per connection at start, to its address, with our
        Contact; a fresh Call-ID each time."""
        prober = self.make([A, B])
        self.assertEqual(len(self.probes()), 2)
        request = self.probes(A.target)[0]
        self.assertEqual(request.uri_text, f"sip:{VENDOR[0]}:{VENDOR[1]}")
        self.assertEqual(str(request.to.uri), request.uri_text)
        self.assertEqual((request.contact[0].uri.host, request.contact[0].uri.port), LOCAL)
        self.assertEqual(request.max_forwards, 70)
        self.assertEqual(self.probes(B.target)[0].uri_text, "sip:198.51.100.8:5070;transport=tcp")
        for request in self.wire.requests():
            self.wire.answer(request, 200)
        self.clock.advance(30)
        self.assertEqual(len(self.probes()), 4)
        self.assertEqual(len({r.call_id for r in self.probes()}), 4)
        self.finish(prober)

    def test_down_after_timeouts_then_up_after_successes(self) -> None:
        """Three unanswered probes in a row: down (listeners told once, gauge
        0, unavailable); two answered ones: up again."""
        prober = self.make(down_after=3, up_after=2)
        self.assertEqual(prober.health(1), Health.UNKNOWN)
        self.assertTrue(prober.is_available(1))
        self.assertEqual(self.up(), 1)
        self.clock.advance(5)                       # first timeout
        self.clock.advance(25)                      # probe 2 at 30 s
        self.clock.advance(5)                       # second timeout
        self.assertEqual(prober.health(1), Health.UNKNOWN)
        self.clock.advance(25)
        self.clock.advance(5)                       # third timeout: at 65 s
        self.assertEqual(prober.health(1), Health.DOWN)
        self.assertFalse(prober.is_available(1))
        self.assertEqual(prober.unavailable(), {1})
        self.assertEqual(self.up(), 0)
        self.assertEqual(self.changes, [(1, True, "unknown"), (1, False, "down")])
        self.clock.advance(25)                      # probe 4 at 90 s
        self.wire.answer(self.wire.last(), 200)
        self.assertEqual(prober.health(1), Health.DOWN)
        self.clock.advance(30)
        self.wire.answer(self.wire.last(), 404)     # alive, if unhelpful
        self.assertEqual(prober.health(1), Health.UP)
        self.assertTrue(prober.is_available(1))
        self.assertEqual(self.changes[-1], (1, True, "up"))
        self.assertEqual(self.metrics.registry.get_sample_value(
            "b2bua_trunk_probes_total", {"connection": "1", "result": "failed"}), 3)
        self.finish(prober)

    def test_first_success_is_up(self) -> None:
        """An unknown connection is up on its first good answer."""
        prober = self.make()
        self.wire.answer(self.wire.last(), 405)
        self.assertEqual(prober.health(1), Health.UP)
        self.finish(prober)

    def test_failure_codes(self) -> None:
        """503 and 408 count as failures; 501 is accepted by default, and a
        configured set replaces the default."""
        prober = self.make(down_after=2)
        self.wire.answer(self.wire.last(), 503)
        self.clock.advance(30)
        self.wire.answer(self.wire.last(), 408)
        self.assertEqual(prober.health(1), Health.DOWN)
        self.clock.advance(30)
        self.wire.answer(self.wire.last(), 501)
        self.clock.advance(30)
        self.wire.answer(self.wire.last(), 501)
        self.assertEqual(prober.health(1), Health.UP)
        self.finish(prober)
        self.metrics = Metrics()
        other = self.make(down_after=1, up_after=1, accepted_codes=frozenset({503}))
        self.wire.answer(self.wire.last(), 501)
        self.assertEqual(other.health(1), Health.DOWN)
        self.clock.advance(30)
        self.wire.answer(self.wire.last(), 503)
        self.assertEqual(other.health(1), Health.UP)
        self.finish(other)

    def test_a_good_answer_resets_the_failures(self) -> None:
        """Failures must be in a row."""
        prober = self.make(down_after=2)
        self.clock.advance(30)                      # timeout, then probe 2
        self.wire.answer(self.wire.last(), 200)
        self.clock.advance(30)
        self.clock.advance(5)                       # one more timeout
        self.assertEqual(prober.health(1), Health.UP)
        self.finish(prober)

    def test_no_overlapping_probes(self) -> None:
        """With no timeout of its own a probe lasts until Timer F (32 s):
        the ticks meanwhile send nothing to that connection."""
        prober = self.make(interval=10, timeout=None)
        self.clock.advance(10)
        self.clock.advance(10)
        self.clock.advance(10)
        self.assertEqual(len(self.probes()), 1)
        self.assertEqual(prober.status()[0]["skipped"], 3)
        self.assertTrue(prober.status()[0]["in_flight"])
        self.clock.advance(2)                       # Timer F at 32 s
        self.assertEqual(prober.status()[0]["failures"], 1)
        self.assertIn("no final response", prober.status()[0]["last_reason"])
        self.clock.advance(8)
        self.assertEqual(len(self.probes()), 2)
        self.finish(prober)

    def test_late_answer_ignored(self) -> None:
        """An answer after the probe's timeout changes nothing."""
        prober = self.make(down_after=1)
        first = self.wire.last()
        self.clock.advance(5)
        self.assertEqual(prober.health(1), Health.DOWN)
        self.wire.answer(first, 200)
        self.assertEqual(prober.health(1), Health.DOWN)
        self.finish(prober)

    def test_no_listener(self) -> None:
        """A transport without a listener is a failed probe at once."""
        wire_listeners = self.wire.listeners
        wire_listeners.pop("TCP")
        prober = self.make([B], down_after=1)
        self.assertEqual(prober.health(2), Health.DOWN)
        self.assertEqual(self.wire.sent, [])
        self.finish(prober)

    def test_status_is_json(self) -> None:
        """status() is plain JSON with the last answer and its delay."""
        prober = self.make()
        self.clock.advance(0.25)
        self.wire.answer(self.wire.last(), 200)
        [status] = prober.status()
        json.dumps(status)
        self.assertEqual((status["health"], status["available"], status["last_code"],
                          status["last_rtt"]), ("up", True, 200, 0.25))
        self.assertEqual(status["target"], f"udp:{VENDOR[0]}:{VENDOR[1]}")
        self.finish(prober)


class RetryAfterTests(ProberTestCase):
    """Retry-After windows."""

    def test_window(self) -> None:
        """Marked unavailable for 60 s, then back (while probing says up)."""
        prober = self.make()
        self.wire.answer(self.wire.last(), 200)
        prober.mark_unavailable(1, 60)
        self.assertFalse(prober.is_available(1))
        self.assertEqual(prober.unavailable(), {1})
        self.assertEqual(self.up(), 0)
        self.clock.advance(59)
        self.assertFalse(prober.is_available(1))
        self.clock.advance(1)
        self.assertTrue(prober.is_available(1))
        self.assertEqual(self.up(), 1)
        self.assertEqual(self.changes, [(1, True, "unknown"), (1, True, "up"),
                                        (1, False, "up"), (1, True, "up")])
        self.finish(prober)

    def test_window_never_shortened_and_capped(self) -> None:
        """A shorter Retry-After does not shorten a longer window; a huge
        one is capped at max_retry_after."""
        prober = self.make(max_retry_after=600)
        prober.mark_unavailable(9, 100)
        prober.mark_unavailable(9, 10)
        self.clock.advance(10)
        self.assertFalse(prober.is_available(9))
        self.clock.advance(90)
        self.assertTrue(prober.is_available(9))
        prober.mark_unavailable(9, 10**9)
        self.clock.advance(600)
        self.assertTrue(prober.is_available(9))
        self.finish(prober)

    def test_window_ends_but_down_stays_down(self) -> None:
        """When the window ends on a connection probing found down, it stays
        unavailable."""
        prober = self.make(down_after=1)
        prober.mark_unavailable(1, 20)
        self.clock.advance(5)                       # the probe times out: down
        self.clock.advance(15)
        self.assertFalse(prober.is_available(1))
        self.assertEqual(prober.unavailable(), {1})
        self.finish(prober)

    def test_probe_503_with_retry_after(self) -> None:
        """A 503 with Retry-After to a probe opens a window too."""
        prober = self.make(down_after=3)
        self.wire.answer(self.wire.last(), 503, [("Retry-After", "45")])
        self.assertEqual(prober.health(1), Health.UNKNOWN)
        self.assertFalse(prober.is_available(1))
        self.clock.advance(45)
        self.assertTrue(prober.is_available(1))
        self.finish(prober)


class UpdateTests(ProberTestCase):
    """Following the provisioned connections."""

    def test_added_removed_changed(self) -> None:
        """A new connection is probed at once; a removed one is forgotten
        (metric series too); a moved one starts over."""
        prober = self.make([A])
        self.wire.answer(self.wire.last(), 200)
        prober.update([A, B])
        self.assertEqual(len(self.probes(B.target)), 1)
        prober.update([B])
        self.assertIsNone(prober.health(1))
        self.assertIsNone(self.up(1))
        self.assertTrue(prober.is_available(1))
        self.wire.answer(self.wire.last(), 200)
        moved = Connection(2, "vendor-b", Target("UDP", "198.51.100.9", 5060), "198.51.100.9")
        prober.update([moved])
        self.assertEqual(prober.health(2), Health.UNKNOWN)
        self.finish(prober)

    def test_rows(self) -> None:
        """Rows that ask for probing (or that the table switches on), enabled
        and usable, are probed at their interval."""
        rows = [
            {"id": 1, "name": "a", "address": "198.51.100.7", "probe": True,
             "probe_interval": 15},
            {"id": 2, "name": "b", "address": "198.51.100.8:5070", "probe": True,
             "enabled": False},
            {"id": 3, "name": "c", "address": "sbc.example.com", "probe": True},
            {"id": 4, "name": "d", "address": "198.51.100.9", "transport": "tls",
             "probe": True},
            {"id": 5, "name": "e", "address": "198.51.100.10", "probe": False},
            {"id": 6, "name": "f", "address": "198.51.100.11"},
        ]
        _, settings, _ = read_settings({"interval": 20, "connections": {
            "4": {"probe": False}, "6": {"probe": True, "interval": 5}}})
        connections, intervals = probed_connections(rows, settings)
        self.assertEqual([c.id for c in connections], [1, 6])
        self.assertEqual(intervals, {1: 15.0, 6: 5.0})
        _, defaults, _ = read_settings({})
        self.assertEqual(probed_connections(rows[:1], defaults)[1], {1: 15.0})
        self.assertEqual(probed_connections([dict(rows[0], probe_interval=None)],
                                            defaults)[1], {1: 30.0})

    def test_own_intervals(self) -> None:
        """Each connection is probed at its own interval; a changed interval
        takes effect from now."""
        prober = self.make([A, B])
        prober.update([A, B], {1: 10, 2: 25})
        self.clock.advance(10)
        self.clock.advance(10)
        self.assertEqual(len(self.probes(A.target)), 3)
        self.assertEqual(len(self.probes(B.target)), 1)
        self.clock.advance(5)
        self.assertEqual(len(self.probes(B.target)), 2)
        prober.update([A, B], {1: 100, 2: 25})
        self.clock.advance(99)
        self.assertEqual(len(self.probes(A.target)), 3)
        self.clock.advance(1)
        self.assertEqual(len(self.probes(A.target)), 4)
        self.assertEqual(prober.status()[0]["interval"], 100)
        self.finish(prober)


class SettingsTests(SynchronousTestCase):
    """Reading C{[plugins.trunk_probing]}."""

    def test_values(self) -> None:
        """Numbers and codes are read."""
        enabled, settings, sync = read_settings({
            "interval": 10, "timeout": 2.5, "down_after": 2, "up_after": 1,
            "accepted_codes": [501, 503], "sync_interval": 5})
        self.assertTrue(enabled)
        self.assertEqual((settings.interval, settings.timeout, settings.down_after,
                          settings.up_after, settings.accepted_codes, sync),
                         (10.0, 2.5, 2, 1, frozenset({501, 503}), 5.0))

    def test_bad(self) -> None:
        """Each bad key is named."""
        cases = {
            "plugins.trunk_probing.nope": {"nope": 1},
            "plugins.trunk_probing.interval": {"interval": "30s"},
            "plugins.trunk_probing.down_after": {"down_after": 1.5},
            "plugins.trunk_probing.accepted_codes": {"accepted_codes": [99]},
            "plugins.trunk_probing.enabled": {"enabled": "yes"},
            "plugins.trunk_probing.connections.4.probe": {"connections": {"4": {"probe": "no"}}},
            "plugins.trunk_probing.connections.4.interval": {
                "connections": {"4": {"interval": 0}}},
            "plugins.trunk_probing.connections.4.every": {"connections": {"4": {"every": 1}}},
        }
        for key, table in cases.items():
            error = self.assertRaises(SettingsError, read_settings, table)
            self.assertIn(key, str(error))
        self.assertIsNone(read_settings({"timeout": 0})[1].timeout)
        error = self.assertRaises(SettingsError, read_settings, {"up_after": 0})
        self.assertIn("up_after", str(error))


class FakeDirectory:
    """The directory's connections, as the plugin reads them."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    #: like the service's live snapshot (followed, not read once)
    version = 1

    def connections(self) -> list[dict[str, Any]]:
        """The enabled connections."""
        return self.rows


class PluginTests(SynchronousTestCase):
    """L{TrunkProbing} through its hooks."""

    def test_configure_probe_unconfigure(self) -> None:
        """It probes the directory's connections on the next turn, exposes
        the prober for routing and stops cleanly."""
        clock = Clock()
        wire = VendorWire(clock)
        rows = [{"id": 1, "name": "a", "address": f"{VENDOR[0]}:{VENDOR[1]}", "probe": True}]
        services = Services(clock, FakeDirectory(rows), None, None, Metrics(),  # type: ignore[arg-type]
                            extra={SEND_REQUEST: wire.layer.send_request,
                                   LOCAL_ADDRESS: wire.local_address})
        plugin = TrunkProbing()
        plugin.b2bua_configure(services, {NAME: {"interval": 10}})
        prober = services.extra["trunk_prober"]
        self.assertIs(prober, plugin.prober)
        self.assertEqual(wire.sent, [])
        clock.advance(0)
        wire.answer(wire.last(), 200)
        self.assertEqual(prober.health(1), Health.UP)
        plugin.b2bua_unconfigure()
        clock.advance(64)
        assert_no_delayed_calls(clock)

    def test_disabled(self) -> None:
        """enabled = false: nothing at all."""
        clock = Clock()
        services = Services(clock, FakeDirectory([]), None, None, Metrics(),  # type: ignore[arg-type]
                            extra={SEND_REQUEST: print, LOCAL_ADDRESS: print})
        plugin = TrunkProbing()
        plugin.b2bua_configure(services, {NAME: {"enabled": False}})
        self.assertIsNone(plugin.prober)
        self.assertNotIn("trunk_prober", services.extra)
        assert_no_delayed_calls(clock)
