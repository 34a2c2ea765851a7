"""Tests for the recording settings of L{media.server.plugin}."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from b2bua.testing import SwitchHarness
from media.server.plugin import NAME, MediaServerSettings, SettingsError
from tests.trial.media.support import FakeUDPReactor


class RecordingSettingsTests(SynchronousTestCase):
    """C{recordings} and C{record_policy}."""

    def test_defaults(self) -> None:
        """C{recordings} under the working directory, on demand."""
        settings = MediaServerSettings({})
        self.assertEqual((settings.recordings, settings.record_policy),
                         ("recordings", "on_demand"))

    def test_bad_values(self) -> None:
        """Each bad value names its key."""
        for table, key in [({"recordings": ""}, "recordings"),
                           ({"recordings": "/var/rec;x"}, "recordings"),
                           ({"recordings": 5}, "recordings"),
                           ({"record_policy": "sometimes"}, "record_policy")]:
            with self.assertRaises(SettingsError) as caught:
                MediaServerSettings(table)
            self.assertIn(f"plugins.{NAME}.{key}", str(caught.exception))

    def test_plugin_wiring(self) -> None:
        """The UA gets the directory and the policy, the flows may call
        C{record}, and the plugin is in the shared state while it runs."""
        reactor = FakeUDPReactor()
        directory = str(Path(self.mktemp()))
        harness = SwitchHarness(settings={NAME: {
            "enabled": True, "port_min": 42000, "port_max": 42009, "recordings": directory,
            "record_policy": "always"}}, clock=reactor, extra={"reactor": reactor})
        plugin = harness.pm.get_plugin(NAME)
        self.assertEqual(plugin.ua.recordings_directory, str(Path(directory).absolute()))
        self.assertEqual(plugin.ua.record_policy, "always")
        self.assertIn("record", plugin.ua.actions)
        self.assertIs(harness.services.extra[NAME], plugin)
        harness.stop()
        self.assertNotIn(NAME, harness.services.extra)
