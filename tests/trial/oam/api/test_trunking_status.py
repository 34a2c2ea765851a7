"""Tests for L{oam.api.trunking}: the vendor trunks' live state, admins only."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import task
from twisted.trial.unittest import TestCase

from oam.api.openapi import build_document
from plugins.trunking.call_limiter import CallLimiter
from plugins.trunking.limits import Limits, MemoryCallLimitStore
from plugins.trunking.stats import ConnectionStats
from tests.trial.oam.api.support import VERSION, open_api


class Registrations:
    """What the registration manager answers (its own tests cover it)."""

    def status(self) -> list[dict[str, Any]]:
        return [{"connection_id": 7, "state": "registered", "expires_at": 1000.0}]


class StatusTests(TestCase):
    """C{GET /api/v1/trunking/status}."""

    async def setUp(self) -> None:
        clock = task.Clock()
        registry = CollectorRegistry()
        self.limiter = CallLimiter(MemoryCallLimitStore(clock), clock, registry,
                                   lambda kind, id: Limits(total=5))
        self.stats = ConnectionStats(registry)
        self.state: dict[str, Any] = {"trunk_registrations": Registrations(),
                                      "trunk_limiter": self.limiter,
                                      "trunk_stats": self.stats}
        self.api = await open_api(self, lambda: self.state)

    async def test_state(self) -> None:
        """Registrations, limits in use and rolling quality, as JSON."""
        self.assertIsNone(await self.limiter.admit_attempt("call-1", "0", "7"))
        self.stats.started("7", "out")
        self.stats.ended("7", "out", answered=True, talk=30.0)
        self.stats.started("7", "out")
        self.stats.ended("7", "out", answered=False, talk=0.0)
        key = await self.api.key("admin")
        reply = await self.api.request("GET", "trunking/status", key=key)
        self.assertEqual(reply.code, 200)
        body = reply.json()
        self.assertEqual(body["registrations"][0]["state"], "registered")
        self.assertEqual(body["connections"], [])
        self.assertEqual([(u["kind"], u["id"], u["outbound"]) for u in body["limits"]],
                         [("connection", "7", 1)])
        self.assertEqual(body["quality"], {"7": {"asr": "0.5", "acd": "30.0", "pdd": None}})
        await self.limiter.call_ended("call-1")

    async def test_admins_only(self) -> None:
        """Other keys get 403, no key 401."""
        key = await self.api.key("reseller", await self.api.build.tenant())
        self.assertEqual((await self.api.request("GET", "trunking/status", key=key)).code, 403)
        self.assertEqual((await self.api.request("GET", "trunking/status")).code, 401)

    def test_document(self) -> None:
        """The route is in the OpenAPI document when served."""
        self.assertIn("/trunking/status", build_document(VERSION, trunking=True)["paths"])
        self.assertNotIn("/trunking/status", build_document(VERSION)["paths"])
