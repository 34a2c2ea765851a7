"""Tests for L{plugins.ip_trust}: INVITEs from trusted networks are not
challenged and call as the configured account."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from b2bua.testing import SwitchHarness
from plugins.ip_trust import NAME, SettingsError, parse_sources


class SettingsTests(SynchronousTestCase):
    """Reading C{[plugins.ip_trust]}."""

    def test_most_specific_first(self) -> None:
        """Networks are ordered most specific first."""
        sources = parse_sources({"sources": {"10.0.0.0/8": "1@a", "10.1.0.0/16": "2@a"}})
        self.assertEqual([str(n) for n, _ in sources], ["10.1.0.0/16", "10.0.0.0/8"])

    def test_bad_entries(self) -> None:
        """A bad network or identity names the key."""
        for table in ({"sources": {"nonsense": "1@a"}}, {"sources": {"10.0.0.0/8": "nobody"}},
                      {"sources": ["10.0.0.0/8"]}):
            error = self.assertRaises(SettingsError, parse_sources, table)
            self.assertIn("plugins.ip_trust.sources", str(error))


class TrustedCallTests(SynchronousTestCase):
    """Calls through the switch from trusted and untrusted addresses."""

    def setUp(self) -> None:
        """Trust 127.0.0.50/32 as extension 1000 of the demo tenant."""
        self.h = SwitchHarness(settings={NAME: {"sources": {"127.0.0.50/32": "1000@127.0.0.1"}}})
        self.bob = self.h.register("1001")

    def test_trusted_source_not_challenged(self) -> None:
        """An INVITE from the trusted address rings the callee at once,
        with no 407."""
        pbx = self.h.phone("1000", host="127.0.0.50")
        call = pbx.call("1001", authenticate=False)
        self.assertEqual(len(self.bob.incoming), 1)
        self.bob.incoming[-1].answer()
        self.assertEqual(call.state, "confirmed")
        self.assertEqual(self.h.network.responses(407), [])
        call.hangup()
        self.h.settle()
        self.h.assert_idle()

    def test_other_source_challenged(self) -> None:
        """Any other address is challenged as usual."""
        phone = self.h.phone("1000", host="127.0.0.51")
        call = phone.call("1001", authenticate=False)
        self.assertEqual(call.code, 407)
        self.assertEqual(self.bob.incoming, [])
        self.h.settle()
        self.h.assert_idle()
