"""Tests for L{media.server.plugin}: settings, start-up and routing."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.decisions import Route
from b2bua.testing import SwitchHarness
from media.server.plugin import NAME, MediaServer, MediaServerSettings, SettingsError
from tests.trial.media.support import FakeUDPReactor

TEST_FLOW = """
[flow]
name = "pin"
start = "bye"

[nodes.bye]
type = "hangup"
cause = "done"
"""


class SettingsTests(SynchronousTestCase):
    """The C{[plugins.media_server]} table."""

    def test_defaults(self) -> None:
        """Disabled, loopback 5070, the two demo extensions."""
        settings = MediaServerSettings({})
        self.assertFalse(settings.enabled)
        self.assertEqual((settings.host, settings.port), ("127.0.0.1", 5070))
        self.assertEqual(settings.extensions, {"*43": "echo", "*60": "speaking_clock"})

    def test_bad_keys(self) -> None:
        """Each bad value names its key."""
        for table, key in [({"listen": "nowhere"}, "listen"), ({"bogus": 1}, "bogus"),
                           ({"enabled": "yes"}, "enabled"),
                           ({"port_min": 5000, "port_max": 4000}, "port_max"),
                           ({"extensions": {"*1": 3}}, "extensions"),
                           ({"conference_max": -1}, "conference_max"),
                           ({"conference_announce": 1}, "conference_announce"),
                           ({"transfer_timeout": 0}, "transfer_timeout"),
                           ({"transfer_timeout": True}, "transfer_timeout")]:
            with self.assertRaises(SettingsError) as caught:
                MediaServerSettings(table)
            self.assertIn(f"plugins.{NAME}.{key}", str(caught.exception))


class PluginTests(SynchronousTestCase):
    """The plugin in a switch harness whose clock can listen on UDP."""

    def harness(self, **own: object) -> tuple[SwitchHarness, MediaServer, FakeUDPReactor]:
        reactor = FakeUDPReactor()
        settings = {NAME: {"enabled": True, "port_min": 42000, "port_max": 42009, **own}}
        harness = SwitchHarness(settings=settings, clock=reactor, extra={"reactor": reactor})
        return harness, harness.pm.get_plugin(NAME), reactor

    def test_disabled(self) -> None:
        """Disabled by default: no UA, no route."""
        plugin = SwitchHarness().pm.get_plugin(NAME)
        self.assertIsInstance(plugin, MediaServer)
        self.assertIsNone(plugin.ua)

    def test_feature_settings_reach_the_ua(self) -> None:
        """Conference and transfer settings are handed to the UA."""
        harness, plugin, _ = self.harness(conference_max=3, transfer_timeout=10)
        self.assertEqual((plugin.ua.conference_max, plugin.ua.transfer_timeout), (3, 10.0))
        harness.stop()

    def test_starts_and_stops(self) -> None:
        """Enabled: the UA listens on its port; unconfigure closes it."""
        harness, plugin, reactor = self.harness()
        self.assertIsNotNone(plugin.ua)
        self.assertIn(5070, reactor.ports)
        self.assertEqual(set(plugin.ua.flows), {"echo", "speaking_clock", "conference"})
        harness.stop()
        self.assertIsNone(plugin.ua)
        self.assertNotIn(5070, reactor.ports)

    def test_extra_flows(self) -> None:
        """Flows from the C{flows} directory join the built-in ones and may
        be named by extensions; an unknown flow name is refused."""
        folder = Path(self.mktemp())
        folder.mkdir()
        (folder / "pin.toml").write_text(TEST_FLOW)
        harness, plugin, _ = self.harness(flows=str(folder), extensions={"7000": "pin"})
        self.assertIn("pin", plugin.ua.flows)
        harness.stop()
        with self.assertRaises(SettingsError) as caught:
            self.harness(extensions={"7000": "nope"})
        self.assertIn("extensions.7000", str(caught.exception))

    def test_routes_extensions(self) -> None:
        """A caller of the tenant dialling *43 is routed to the UA; a call to
        an extension is not the plugin's business."""
        harness, _, _ = self.harness()
        routes: list[object] = []

        def after(outcome: object, name: str, impls: object, kwargs: object) -> None:
            if name == "b2bua_route_call":
                routes.append(outcome.get_result())  # type: ignore[attr-defined]

        harness.pm.add_hookcall_monitoring(lambda *_: None, after)
        alice = harness.register("1000")
        alice.call("*43")
        alice.call("1001")
        harness.flush()
        ours = [answer[0] for results in routes for answer in results  # type: ignore[attr-defined]
                if isinstance(answer, list) and answer and isinstance(answer[0], Route)
                and answer[0].source == NAME]
        self.assertEqual(len(ours), 1)
        route = ours[0]
        destination = route.destinations[0]
        self.assertEqual(str(destination.uri), "sip:echo@127.0.0.1:5070")
        self.assertEqual((destination.next_hop.host, destination.next_hop.port),
                         ("127.0.0.1", 5070))
        harness.stop()
