"""The prepaid switch of the integration tests: C{twistd b2bua} in a child
process, its balances in a Redis database of its own, its provisioning in a
fresh SQLite database (or PostgreSQL schema) seeded with the demo tenant and
a tariff, and sipp callers and callees around it.

L{PrepaidSwitchCase} is the base of C{test_prepaid_sipp} (no overdraft, no
double charge) and C{test_crash_recovery} (SIGKILL under load).  A subclass
names its Redis database and lock, its configuration template and tariff.
The Redis database is used only if it holds nothing but the test's keys
(the service's C{b2bua:bal:} keys and the lock); the lock keeps two runs of
one test (from two working trees) from sharing it, and only C{b2bua:bal:}
keys are deleted, before and after.  Without sipp or C{REDIS_URL} the tests
are skipped, except under C{CI=true}, where they fail.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from twisted.internet import reactor
from twisted.logger import Logger
from twisted.trial import unittest

from b2bua.db.changes import ChangeFeed
from b2bua.db.database import Database
from b2bua.db.dialect import parse_timestamp
from b2bua.db.interfaces import Scope
from b2bua.db.repository import Repository
from b2bua.demo import DEMO_CURRENCY, seed_database
from tests.trial.integration.redis_claim import claim_database
from tests.trial.integration.sipp import (
    SwitchProcessMixin,
    free_port,
    require_program,
    run_sipp,
    scenario,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parents[3]
REDIS_URL = os.environ.get("REDIS_URL")
DATABASE_URL = os.environ.get("DATABASE_URL")
IN_CI = os.environ.get("CI") == "true"

#: The key prefix of the service's balance store (its default).
PREFIX = "b2bua:bal:"
#: The payer: the default account of the demo tenant.
TENANT = "127.0.0.1"
ACCOUNT = f"customer:{TENANT}"
CALLEE = "1001"
CALLER = "1000"
#: Who provisions the tariff.
ADMIN = Scope.admin("prepaid sipp test")


def redis_db_url(url: str, db: int) -> str:
    """C{url} (a C{redis://} URL) with its database number replaced by C{db}."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def micros(amount: Decimal) -> int:
    """C{amount} in integer micro-units (exact: money has at most 6 places)."""
    value = amount.scaleb(6)
    if value != value.to_integral_value():
        raise ValueError(f"{amount} has more than 6 decimal places")
    return int(value)


def stored_timestamp(value: Any) -> dt.datetime:
    """A stored timestamp (PostgreSQL: a datetime; SQLite: ISO text), in UTC."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    return parse_timestamp(str(value))


def stored_json(value: Any) -> Any:
    """A stored JSON column (PostgreSQL: decoded already; SQLite: text)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


class PrepaidSwitchCase(SwitchProcessMixin, unittest.TestCase):
    """The switch, Redis, the database and sipp, for a prepaid test.

    @cvar redis_db: the Redis database the switch keeps its balances in.
    @cvar lock_key: held by a running test in that database.
    @cvar config_template: the switch's configuration, C{str.format}ted with
        C{port}, C{oam}, C{database}, C{balances}, C{tenant}, C{callee} and
        L{config_values}; its C{[plugins.charging.tariffs."<tenant>"]} must
        be L{tariff}.
    @cvar tariff: the tenant's tariff document (also provisioned).
    """

    timeout = 120
    log = Logger()
    redis_db: ClassVar[int] = 15
    lock_key: ClassVar[str] = "b2bua-test:prepaid-sipp:lock"
    config_template: ClassVar[str] = ""
    config_values: ClassVar[dict[str, Any]] = {}
    tariff: ClassVar[dict[str, Any]] = {}
    tariff_name: ClassVar[str] = "prepaid sipp test"

    def setUp(self) -> None:
        """Find sipp and Redis (skip without them, fail under CI)."""
        self.sipp = require_program("sipp", "sip-tester")
        if not REDIS_URL:
            reason = ("set REDIS_URL (e.g. REDIS_URL=redis://127.0.0.1:6379/0) and start "
                      "redis-server to run the prepaid sipp test")
            if IN_CI:
                self.fail(f"CI=true but REDIS_URL is unset: {reason}")
            raise unittest.SkipTest(reason)
        self.balances_url = redis_db_url(REDIS_URL, self.redis_db)
        self.folder = Path(self.mktemp()).resolve()
        self.folder.mkdir(parents=True)

    # -- Redis ----------------------------------------------------------------------

    async def open_redis(self) -> None:
        """Claim L{self.redis_db} for the test (L{claim_database}): the lock,
        nothing else there, the service's balance keys emptied before and
        after."""
        self.redis = await claim_database(self, self.balances_url, self.lock_key, PREFIX)

    # -- the switch ------------------------------------------------------------------

    def database_url(self) -> str:
        """A fresh provisioning database: SQLite, or a PostgreSQL schema."""
        if DATABASE_URL:
            from tests.trial.db.support import database_url

            return database_url(self, "postgresql")
        return f"sqlite:///{self.folder / 'var' / 'b2bua.db'}"

    async def provision(self) -> None:
        """Seed the demo tenant and give it L{TARIFF}: a tariff row, a
        product pricing with it, and the tenant's subscription to the
        product (what the service's provisioned-tariff resolver reads)."""
        self.database = self.database_url()
        seeded = await seed_database(self.database, reactor, admin_key=False)
        database = Database(self.database, reactor)
        try:
            def repository(name: str) -> Repository:
                return Repository(name, database, ChangeFeed(), "")

            tariff = await repository("tariffs").create(
                {"name": self.tariff_name, "currency": DEMO_CURRENCY, "document": self.tariff},
                ADMIN)
            product = await repository("products").create(
                {"name": self.tariff_name, "currency": DEMO_CURRENCY,
                 "tariff_id": tariff["id"]}, ADMIN)
            await repository("subscriptions").create(
                {"customer_id": seeded.customer_id, "product_id": product["id"],
                 "starts_on": "2020-01-01"}, ADMIN)
        finally:
            await database.close()

    async def start_switch(self, provision: bool = True) -> None:
        """Provision (unless told not to: a restart), write the
        configuration, start twistd."""
        if provision:
            await self.provision()
            self.port = free_port("both")
        config = self.folder / "b2bua.toml"
        text = self.config_template.format(
            port=self.port, oam=free_port("tcp"), database=self.database,
            balances=self.balances_url, tenant=TENANT, callee=CALLEE, **self.config_values)
        inline = tomllib.loads(text)["plugins"]["charging"]["tariffs"][TENANT]
        self.assertEqual(inline, self.tariff, "the inline tariff is not the test's tariff")
        config.write_text(text)
        self.spawn_switch(config, self.folder)
        try:
            # the SIP port is bound only once the storage phase is over
            await wait_for_port(reactor, self.port, "udp", timeout=20.0)
        except Exception as error:
            self.fail(f"the switch did not start: {error}\n{self.output[-3000:]}")

    # -- sipp ------------------------------------------------------------------------

    async def register_callee(self, uas_port: int) -> None:
        """Register the callee's contact as extension L{CALLEE}."""
        result = await run_sipp(reactor, scenario("register_contact.xml"),
                                f"127.0.0.1:{self.port}", "u1",
                                ["-s", CALLEE, "-au", CALLEE, "-ap", "1234"],
                                timeout=20, local_port=uas_port, sipp=self.sipp)
        self.assertTrue(result.ok, result.describe())

    # -- the database ----------------------------------------------------------------

    async def read_cdrs(self) -> list[dict[str, Any]]:
        """Every row of C{cdrs}."""
        database = Database(self.database, reactor)
        try:
            return await database.run(lambda c: c.execute(
                "SELECT call_id, answered_at, ended_at, billsec, disposition, cost, "
                "currency, breakdown FROM cdrs"))
        finally:
            await database.close()
