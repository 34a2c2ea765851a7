"""The SIP-trunking switch of the integration tests: C{twistd b2bua} in a
child process, its provisioning in a fresh SQLite database (or PostgreSQL
schema) holding a customer with an IP trunk, three vendors with their
connections and rate decks, a routing plan and a DID, and sipp peers
around it, each on a loopback address of its own.

Trunks and vendor connections are recognised by their source address, so
the peers must not share one: the PBX sends from L{PBX}, vendor C{n} listens
on (and calls from) C{VENDOR_HOSTS[n]}, the extension registers from
L{EXTENSION}.  The switch itself listens on 127.0.0.1.  Linux routes all of
127.0.0.0/8 to the loopback interface, so nothing has to be configured.

L{TrunkSwitchCase} is the base of C{test_trunking_sipp}.  It provisions
through the repositories as an admin (after L{b2bua.demo.seed_database},
which gives the demo tenant C{127.0.0.1} and its extensions 1000-1019,
password C{1234}), writes the configuration, starts and stops the switch,
scrapes its C{/metrics} and reads its C{cdrs} table; L{open_redis}
moves its balances and call limits to a Redis database of the test's own.
Without sipp the tests are skipped, except under C{CI=true}, where they
fail.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from b2bua.db.changes import ChangeFeed
from b2bua.db.database import Database
from b2bua.db.interfaces import Scope
from b2bua.db.repository import Repository
from b2bua.demo import DEMO_CURRENCY, seed_database
from tests.trial.integration.prepaid_switch import redis_db_url, stored_json
from tests.trial.integration.redis_claim import claim_database, scan_keys
from tests.trial.integration.sipp import (
    SwitchProcessMixin,
    free_port,
    require_program,
    wait_for_port,
)
from tests.trial.redis_support import require_redis_url

__all__ = ["CUSTOMER_DOMAIN", "DEMO_TENANT", "DID", "DID_EXTENSION", "EXTENSION", "PBX",
           "VENDOR_HOSTS", "Metrics", "Provisioned", "TrunkSwitchCase", "Vendor", "free_port_on"]

ROOT = Path(__file__).resolve().parents[3]
#: Samples of a C{/metrics} scrape: (name, label set) -> value.
Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]
DATABASE_URL = os.environ.get("DATABASE_URL")

#: Who provisions.
ADMIN = Scope.admin("trunking sipp test")
#: The trunking customer's SIP domain (its trunk calls carry it).
CUSTOMER_DOMAIN = "acme.trunk.test"
#: The demo tenant (the DID's owner) and its extension the DID rings.
DEMO_TENANT = "127.0.0.1"
DID_EXTENSION = "1001"
#: A number of the demo tenant, ringing L{DID_EXTENSION}.
DID = "+442071234567"
#: The loopback addresses of the peers.
PBX = "127.0.0.21"
VENDOR_HOSTS = {"a": "127.0.0.31", "b": "127.0.0.32", "c": "127.0.0.33"}
EXTENSION = "127.0.0.41"
#: Per-minute prices of the vendors' decks for +44, billed per second: a is
#: the cheapest, then b, then c.
PRICES = {"a": "0.010", "b": "0.020", "c": "0.030"}
#: The prefix of every key the switch writes in Redis (balances, limits).
SWITCH_KEYS = "b2bua:"

CONFIG = """
[sip]
listen = ["udp:127.0.0.1:{port}"]
# sipp answers only MD5 challenges and digests its own URI
digest_algorithms = ["MD5", "SHA-256"]
digest_check_uri = false

[core]
drain_timeout = 5

[oam]
listen = "tcp:{oam}:interface=127.0.0.1"

[storage]
database = "{database}"
balances = "{balances}"
migrate = true
{extra}
"""


def free_port_on(host: str, kind: str = "udp") -> int:
    """A port free right now on loopback address C{host} (see L{free_port})."""
    kinds = {"udp": socket.SOCK_DGRAM, "tcp": socket.SOCK_STREAM}
    with socket.socket(socket.AF_INET, kinds[kind]) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


def deck(price: str) -> dict[str, Any]:
    """A vendor's rate deck: C{price} a minute to +44, billed per second."""
    return {"timezone": "UTC",
            "rates": {"R44": {"groups": [{"start_s": 0, "price": price, "unit_s": 60,
                                          "increment_s": 1}]}},
            "entries": [{"prefixes": ["44"], "rate": "R44"}]}


@dataclass(frozen=True)
class Vendor:
    """One provisioned vendor: its name, connection row and deck."""

    key: str
    name: str
    host: str
    port: int
    connection_id: int
    tariff: dict[str, Any]


@dataclass
class Provisioned:
    """What L{TrunkSwitchCase.provision} stored (row ids)."""

    customer_id: int
    trunk_id: int
    routing_plan_id: int
    vendors: dict[str, Vendor] = field(default_factory=dict)
    did_account_id: int | None = None


class TrunkSwitchCase(SwitchProcessMixin, unittest.TestCase):
    """The switch and the database for a SIP-trunking test.

    @cvar balances: the C{[storage] balances} URL (C{"memory"}: call limits
        live in the switch's memory; L{open_redis} puts them in Redis).
    @cvar config_extra: more configuration appended to L{CONFIG}.
    """

    timeout = 120
    balances: ClassVar[str] = "memory"
    config_extra: ClassVar[str] = ""

    def setUp(self) -> None:
        """Find sipp (skip without it, fail under CI); make a folder."""
        self.sipp = require_program("sipp", "sip-tester")
        self.folder = Path(self.mktemp()).resolve()
        self.folder.mkdir(parents=True)

    # -- provisioning ----------------------------------------------------------------

    def database_url(self) -> str:
        """A fresh provisioning database: SQLite, or a PostgreSQL schema."""
        if DATABASE_URL:
            from tests.trial.db.support import database_url

            return database_url(self, "postgresql")
        return f"sqlite:///{self.folder / 'var' / 'b2bua.db'}"

    async def provision(self, vendors: Sequence[str] = ("a", "b", "c"),
                        trunk: Mapping[str, Any] | None = None,
                        connection: Mapping[str, Any] | None = None,
                        did: bool = False) -> Provisioned:
        """Seed the demo tenant, then store the trunking customer
        (C{dial_plan} GB) with an C{ip} trunk from L{PBX} (C{trunk}: more
        columns), one vendor, deck and connection per key of C{vendors}
        (listening on C{VENDOR_HOSTS[key]}; C{connection}: more columns of
        each), a C{lcr} routing plan listing them for C{44}, and with
        C{did}, L{DID} on the demo tenant ringing extension L{DID_EXTENSION}."""
        self.database = self.database_url()
        seeded = await seed_database(self.database, reactor, admin_key=False)
        database = Database(self.database, reactor)
        feed = ChangeFeed()

        def create(collection: str, values: dict[str, Any]) -> Deferred[dict[str, Any]]:
            return Repository(collection, database, feed, "").create(values, ADMIN)

        try:
            stored: dict[str, Vendor] = {}
            for key in vendors:
                host = VENDOR_HOSTS[key]
                port = free_port_on(host)
                vendor = await create("vendors", {"name": f"vendor-{key}"})
                tariff_document = deck(PRICES[key])
                tariff = await create("tariffs", {"name": f"deck-{key}",
                                                  "currency": DEMO_CURRENCY,
                                                  "document": tariff_document})
                row = await create("connections", {
                    "vendor_id": vendor["id"], "name": f"trunk-{key}",
                    "address": f"{host}:{port}", "tariff_id": tariff["id"],
                    "setup_timeout": 2, "answer_timeout": 4, **(connection or {})})
                stored[key] = Vendor(key, vendor["name"], host, port, row["id"],
                                     tariff_document)
            plan = await create("routing_plans", {
                "name": "uk", "strategy": "lcr",
                "entries": [{"prefix": "44", "connection_ids":
                             [v.connection_id for v in stored.values()]}]})
            customer = await create("customers", {
                "name": "Acme", "sip_domain": CUSTOMER_DOMAIN, "currency": DEMO_CURRENCY,
                "dial_plan": {"country": "GB"}, "routing_plan_id": plan["id"]})
            trunk_row = await create("trunks", {
                "customer_id": customer["id"], "name": "pbx", "auth_mode": "ip",
                "allowed_sources": [PBX], **(trunk or {})})
            provisioned = Provisioned(customer["id"], trunk_row["id"], plan["id"], stored)
            if did:
                page = await Repository("accounts", database, feed, "").list(
                    ADMIN, {"customer_id": seeded.customer_id, "number": DID_EXTENSION})
                (account,) = page.rows
                await create("dids", {"number": DID, "customer_id": seeded.customer_id,
                                      "target_kind": "account", "target": str(account["id"])})
                provisioned.did_account_id = account["id"]
        finally:
            await database.close()
        return provisioned

    # -- Redis (for the cluster-wide call limits) ---------------------------------------

    async def open_redis(self, db: int, lock_key: str) -> None:
        """Keep the switch's balances, and so its call limits, in Redis
        database C{db} of C{REDIS_URL} (L{redis}: a connection to it).

        The database is used only if it holds nothing but the switch's keys
        (C{b2bua:}) and C{lock_key}; the lock keeps two runs of the test
        (from two working trees) from sharing it.  The switch's keys are
        deleted before and after.
        """
        url = require_redis_url(self, "SIP trunking limits test on Redis")
        self.balances = redis_db_url(url, db)
        self.redis = await claim_database(self, self.balances, lock_key, SWITCH_KEYS)

    async def redis_keys(self, pattern: str) -> list[str]:
        """Every key of L{redis} matching C{pattern} (by SCAN)."""
        return await scan_keys(self.redis, pattern)

    # -- the switch ------------------------------------------------------------------

    async def start_switch(self) -> None:
        """Write the configuration and start twistd; wait for its SIP port."""
        self.port = free_port("both")
        self.oam = free_port("tcp")
        config = self.folder / "b2bua.toml"
        config.write_text(CONFIG.format(port=self.port, oam=self.oam, database=self.database,
                                        balances=self.balances, extra=self.config_extra))
        self.spawn_switch(config, self.folder)
        try:
            # the SIP port is bound only once the storage phase is over
            await wait_for_port(reactor, self.port, "udp", timeout=20.0)
        except Exception as error:
            self.fail(f"the switch did not start: {error}\n{self.output[-3000:]}")

    @property
    def target(self) -> str:
        """The switch's SIP address."""
        return f"127.0.0.1:{self.port}"

    # -- what it tells -----------------------------------------------------------------

    async def metrics(self, until: Callable[[Metrics], bool] | None = None,
                      timeout: float = 5.0) -> Metrics:
        """Every sample of C{GET /metrics}, by name and label set.

        @param until: scrape again every 50 ms until it holds (at most
            C{timeout} seconds; then the last scrape is returned): the
            switch ends a call a moment after the peers have seen its last
            message.
        """
        waited = 0.0
        while True:
            metrics = await self._scrape()
            if until is None or until(metrics) or waited >= timeout:
                return metrics
            await deferLater(reactor, 0.05, lambda: None)
            waited += 0.05

    async def _scrape(self) -> Metrics:
        """One C{GET /metrics}."""
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.get(f"http://127.0.0.1:{self.oam}/metrics", timeout=10, pool=pool)
        self.assertEqual(response.code, 200)
        text = (await response.content()).decode()
        return {(sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples}

    @staticmethod
    def sample(metrics: Metrics, name: str, **labels: str) -> float:
        """The value of one sample; 0 when the switch exports no such series
        (a labelled counter that was never incremented)."""
        return metrics.get((name, frozenset(labels.items())), 0.0)

    async def read_cdrs(self) -> list[dict[str, Any]]:
        """Every row of C{cdrs}, oldest first, with C{legs} and C{breakdown}
        decoded."""
        database = Database(self.database, reactor)
        try:
            rows = await database.run(lambda c: c.execute(
                "SELECT call_id, caller, callee, answered_at, billsec, disposition, cost, "
                "legs, breakdown FROM cdrs ORDER BY id"))
        finally:
            await database.close()
        return [dict(row, legs=stored_json(row["legs"]),
                     breakdown=stored_json(row["breakdown"])) for row in rows]
