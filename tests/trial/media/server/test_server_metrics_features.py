"""Tests for the conference and transfer families of
L{media.server.server_metrics.MediaServerCollector}."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry
from twisted.trial.unittest import SynchronousTestCase

from media.server.server_metrics import MediaServerCollector


class _Watch:
    """A call watch with no live calls."""

    live: dict[str, object] = {}

    def on_end(self, callback: object) -> None:
        """Nothing ever ends here."""


class FeatureFamiliesTests(SynchronousTestCase):
    """Rooms, joins and transfers are read off the UA at scrape time."""

    def test_rooms_joins_transfers(self) -> None:
        """The UA's counters appear as samples, by label."""
        conferences = SimpleNamespace(rooms={"7": object(), "8": object()}, joins=5, refused=1)
        ua = SimpleNamespace(calls={}, missing_prompts=set(), conferences=conferences,
                             transfers={"transferred": 3, "bad_notify": 1})
        registry = CollectorRegistry()
        registry.register(MediaServerCollector(ua, _Watch()))  # type: ignore[arg-type]
        value = registry.get_sample_value
        self.assertEqual(value("b2bua_media_server_conference_rooms"), 2)
        self.assertEqual(value("b2bua_media_server_conference_joins_total",
                               {"result": "joined"}), 5)
        self.assertEqual(value("b2bua_media_server_conference_joins_total",
                               {"result": "refused"}), 1)
        self.assertEqual(value("b2bua_media_server_transfers_total",
                               {"outcome": "transferred"}), 3)
        self.assertEqual(value("b2bua_media_server_transfers_total",
                               {"outcome": "bad_notify"}), 1)
        ua.transfers["transferred"] = 4
        self.assertEqual(value("b2bua_media_server_transfers_total",
                               {"outcome": "transferred"}), 4)
