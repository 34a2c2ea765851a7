"""Prepaid charging under load, end to end: no overdraft, no double charge.

The switch runs under C{twistd} in a child process with its balances in a
real Redis (C{[storage] balances}, database L{REDIS_DB} of the server named
by C{REDIS_URL}) and its provisioning in a fresh SQLite database (or, when
C{DATABASE_URL} is set, a fresh schema of that PostgreSQL database) seeded
with the demo tenant.  The tenant's calls to 1001 are priced by L{TARIFF}
(a connect fee, then a per-second rate; on-net calls charged too), given
twice: provisioned in the database as an operator does (a tariff row, a
product with that tariff, the tenant's subscription to the product: what
the service's resolver reads) and inline in C{[plugins.charging]} (what
the plugin falls back to without a resolver).  The payer's account
(C{customer:127.0.0.1}, the default for the tenant) is topped up from this
process, through a L{RedisBalanceStore} on the same Redis database, with
money for only a few calls.

Then one sipp caller places L{CALLS} calls from 1000 to 1001 at L{RATE} a
second, all allowed up at once (a sipp callee registered as 1001 answers
each), each caller talking L{TALK_MS}.  The debit interval is short, so
answered calls extend their holds while new ones take their first hold,
and the money runs out in the middle: most calls are refused with 402,
some are cut by the switch, the others end normally.  A monitor samples
the account in Redis all along.

Once the switch has stopped (SIGTERM: it drains, commits, and flushes its
CDR writer), the test checks, from Redis and from the C{cdrs} table:

  1. nothing was overdrawn: at no sampled instant did the holds exceed the
     balance, no ledger entry shows a negative balance, and the sum
     debited is at most the top-up;
  2. every CDR's cost is its re-rating: C{rating.cost.cost} on the same
     tariff for the CDR's C{billsec} (the talk time, or up to the cut),
     equal to the breakdown the CDR keeps;
  3. the ledger, the balance and the CDRs agree to the micro-unit: one
     commit per answered call (never two), each debiting exactly its
     CDR's cost, the balances of the ledger following each other, the
     final balance equal to the top-up less the sum of the CDR costs, and
     no hold left;
  4. some calls were refused with 402, and the counts agree: sipp's caller
     (every call played its scenario; its counters of refused, cut and
     completed calls), sipp's callee (calls answered), and the CDRs
     (answered and cut, refused by the charging plugin).

The Redis database L{REDIS_DB} is used only if it holds nothing but this
test's keys (the service's C{b2bua:bal:} keys and a lock); the lock keeps
two runs of this test (from two working trees) from sharing it, and only
C{b2bua:bal:} keys are deleted, before and after.  Without sipp or
C{REDIS_URL} the test is skipped, except under C{CI=true}, where it fails.
Everything talks to 127.0.0.1 only and is bounded: the test takes about
10 s (at most about 90 s when everything times out).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import tomllib
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.trial import unittest

from b2bua.core.location_redis import redis_connection_args
from b2bua.db.changes import ChangeFeed
from b2bua.db.database import Database
from b2bua.db.dialect import parse_timestamp
from b2bua.db.interfaces import Scope
from b2bua.db.repository import Repository
from b2bua.demo import DEMO_CURRENCY, seed_database
from rating.cost import billable_duration, cost
from rating.lookup import TariffIndex
from rating.stores.interface import LedgerEntry
from rating.stores.redis import RedisBalanceStore
from rating.tariff import load_tariff
from tests.trial.integration.sipp import (
    SippResult,
    TwistdProcess,
    free_port,
    require_program,
    run_sipp,
    run_sipp_uas,
    scenario,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parents[3]
REDIS_URL = os.environ.get("REDIS_URL")
DATABASE_URL = os.environ.get("DATABASE_URL")
IN_CI = os.environ.get("CI") == "true"

#: The Redis database the switch keeps its balances in during the test.
REDIS_DB = 15
#: The key prefix of the service's balance store (its default).
PREFIX = "b2bua:bal:"
#: Held by a running test, so that two runs never share L{REDIS_DB}.
LOCK_KEY = "b2bua-test:prepaid-sipp:lock"
#: Seconds to wait for another run's lock before failing.
LOCK_WAIT = 30.0

#: The payer: the default account of the demo tenant.
TENANT = "127.0.0.1"
ACCOUNT = f"customer:{TENANT}"
CALLEE = "1001"
CALLER = "1000"
#: How many calls (all may be up at once: C{-l}), placed at L{RATE} a
#: second, and how long each caller talks: the calls overlap, so new calls
#: take their first hold while earlier ones extend theirs.
CALLS = 50
RATE = 10
TALK_MS = 2500
#: The top-up: 21 first holds of 0.07 at most, far fewer than L{CALLS}.
INITIAL = Decimal("1.50")
#: The tariff of the demo tenant: 0.05 to connect, then 0.01 a second.
TARIFF: dict[str, Any] = {
    "timezone": "UTC",
    "rates": {"R1": {"connect_fee": "0.05", "groups": [
        {"start_s": 0, "price": "0.60", "unit_s": 60, "increment_s": 1}]}},
    "entries": [{"prefixes": [CALLEE], "rate": "R1"}],
}
#: Who provisions the tariff.
ADMIN = Scope.admin("prepaid sipp test")
#: Seconds of money each extension adds (the first hold covers as much).
DEBIT_INTERVAL = 2

CONFIG = """
[sip]
listen = ["udp:127.0.0.1:{port}"]
# sipp answers only MD5 challenges and digests its own URI
digest_algorithms = ["MD5", "SHA-256"]
digest_check_uri = false

[core]
drain_timeout = 10

[oam]
listen = "tcp:{oam}:interface=127.0.0.1"

[storage]
database = "{database}"
balances = "{balances}"
migrate = true

[plugins.charging]
charge_on_net = true
debit_interval = {interval}
lead = 1
warn_before = 1

# TARIFF again (the test checks that it is the same document)
[plugins.charging.tariffs."{tenant}"]
timezone = "UTC"
rates = {{ R1 = {{ connect_fee = "0.05", groups = [
    {{ start_s = 0, price = "0.60", unit_s = 60, increment_s = 1 }} ] }} }}
entries = [ {{ prefixes = ["{callee}"], rate = "R1" }} ]
"""


def redis_db_url(url: str, db: int) -> str:
    """C{url} (a C{redis://} URL) with its database number replaced by C{db}."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def micros(amount: Decimal) -> int:
    """C{amount} in integer micro-units (exact: money has at most 6 places)."""
    value = amount.scaleb(6)
    if value != value.to_integral_value():
        raise ValueError(f"{amount} has more than 6 decimal places")
    return int(value)


def _timestamp(value: Any) -> dt.datetime:
    """A stored timestamp (PostgreSQL: a datetime; SQLite: ISO text), in UTC."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    return parse_timestamp(str(value))


def _json(value: Any) -> Any:
    """A stored JSON column (PostgreSQL: decoded already; SQLite: text)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


@dataclass
class AccountMonitor:
    """Samples the account's hash in Redis every L{interval} seconds.

    @ivar samples: how many samples were taken.
    @ivar lowest_available: the least C{balance - held} seen (micro-units).
    @ivar lowest_balance: the least C{balance} seen (micro-units).
    @ivar most_held: the largest C{held} seen (micro-units).
    """

    redis: Any
    key: str
    interval: float = 0.01
    samples: int = 0
    lowest_available: int | None = None
    lowest_balance: int | None = None
    most_held: int = 0
    errors: list[str] = field(default_factory=list)

    def start(self) -> None:
        """Start sampling."""
        self._loop = task.LoopingCall(self._sample)
        self._done = self._loop.start(self.interval, now=True)
        self._done.addErrback(lambda failure: self.errors.append(failure.getErrorMessage()))

    async def stop(self) -> None:
        """Stop sampling (after a last sample)."""
        await self._sample()
        if self._loop.running:
            self._loop.stop()

    async def _sample(self) -> None:
        """Read C{balance} and C{held} in one command."""
        balance, held = await self.redis.hmget(self.key, ["balance", "held"])
        if balance is None:
            return
        balance, held = int(balance), int(held or 0)
        self.samples += 1
        available = balance - held
        if self.lowest_available is None or available < self.lowest_available:
            self.lowest_available = available
        if self.lowest_balance is None or balance < self.lowest_balance:
            self.lowest_balance = balance
        self.most_held = max(self.most_held, held)


class PrepaidWithSippTests(unittest.TestCase):
    """Many concurrent prepaid calls on a small balance, through the switch."""

    timeout = 120
    log = Logger()

    def setUp(self) -> None:
        """Find sipp and Redis (skip without them, fail under CI)."""
        self.sipp = require_program("sipp", "sip-tester")
        if not REDIS_URL:
            reason = ("set REDIS_URL (e.g. REDIS_URL=redis://127.0.0.1:6379/0) and start "
                      "redis-server to run the prepaid sipp test")
            if IN_CI:
                self.fail(f"CI=true but REDIS_URL is unset: {reason}")
            raise unittest.SkipTest(reason)
        self.balances_url = redis_db_url(REDIS_URL, REDIS_DB)
        self.folder = Path(self.mktemp()).resolve()
        self.folder.mkdir(parents=True)

    # -- Redis ----------------------------------------------------------------------

    async def open_redis(self) -> None:
        """Connect to L{REDIS_DB}, take the lock, check that the database
        holds nothing else, and empty what a previous run left."""
        import txredisapi

        self.redis = await txredisapi.Connection(
            reconnect=False, connectTimeout=5, replyTimeout=10,
            **redis_connection_args(self.balances_url))
        self.addCleanup(self.redis.disconnect)
        self.token = f"run-{uuid.uuid4().hex}"  # never a number for txredisapi
        waited = 0.0
        while not await self.redis.set(LOCK_KEY, self.token, expire=self.timeout + 30,
                                       only_if_not_exists=True):
            if waited >= LOCK_WAIT:
                self.fail(f"Redis database {REDIS_DB} is locked by another run of this test "
                          f"({LOCK_KEY}); wait for it or delete the key")
            await task.deferLater(reactor, 0.5, lambda: None)
            waited += 0.5
        self.addCleanup(self._unlock)
        keys = await self._keys("*")
        foreign = sorted(k for k in keys if not k.startswith(PREFIX) and k != LOCK_KEY)
        if foreign:
            self.fail(f"Redis database {REDIS_DB} ({self.balances_url}) holds keys that are "
                      f"not this test's, such as {foreign[:3]}: it is not free for the test")
        await self._delete_balances()
        self.addCleanup(self._delete_balances)

    async def _keys(self, pattern: str) -> list[str]:
        """Every key of the database matching C{pattern} (by SCAN)."""
        found: list[str] = []
        cursor = 0
        while True:
            cursor, keys = await self.redis.scan(cursor, pattern, 1000)
            found += [k.decode() if isinstance(k, bytes) else k for k in keys]
            if int(cursor) == 0:
                return found

    async def _delete_balances(self) -> None:
        """Delete the service's balance keys (and only those)."""
        keys = await self._keys(PREFIX + "*")
        for i in range(0, len(keys), 500):
            await self.redis.delete(keys[i:i + 500])

    async def _unlock(self) -> None:
        """Give the lock back (if it is still ours)."""
        if await self.redis.get(LOCK_KEY) == self.token:
            await self.redis.delete(LOCK_KEY)

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
                {"name": "prepaid sipp test", "currency": DEMO_CURRENCY, "document": TARIFF},
                ADMIN)
            product = await repository("products").create(
                {"name": "prepaid sipp test", "currency": DEMO_CURRENCY,
                 "tariff_id": tariff["id"]}, ADMIN)
            await repository("subscriptions").create(
                {"customer_id": seeded.customer_id, "product_id": product["id"],
                 "starts_on": "2020-01-01"}, ADMIN)
        finally:
            await database.close()

    async def start_switch(self) -> None:
        """Provision, write the configuration, start twistd."""
        await self.provision()
        self.port = free_port("both")
        config = self.folder / "b2bua.toml"
        text = CONFIG.format(port=self.port, oam=free_port("tcp"), database=self.database,
                             balances=self.balances_url, interval=DEBIT_INTERVAL,
                             tenant=TENANT, callee=CALLEE)
        inline = tomllib.loads(text)["plugins"]["charging"]["tariffs"][TENANT]
        self.assertEqual(inline, TARIFF, "the inline tariff is not TARIFF")
        config.write_text(text)
        self.twistd = TwistdProcess()
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "--logfile=-", "b2bua", "--config", str(config)]
        self.process = reactor.spawnProcess(self.twistd, sys.executable, argv,
                                            env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                            path=str(self.folder))
        self.addCleanup(self._kill_switch)
        try:
            # the SIP port is bound only once the storage phase is over
            await wait_for_port(reactor, self.port, "udp", timeout=20.0)
        except Exception as error:
            self.fail(f"the switch did not start: {error}\n{self.output[-3000:]}")

    @property
    def output(self) -> str:
        """What twistd printed so far."""
        return self.twistd.output.decode(errors="replace")

    async def stop_switch(self) -> None:
        """SIGTERM: the switch drains, commits and flushes its CDRs, then exits."""
        if not self.twistd.ended.called:
            self.process.signalProcess("TERM")
        ended = self.twistd.ended
        ended.addTimeout(30, reactor)
        try:
            await ended
        except Exception:
            self.fail(f"the switch did not stop within 30 s\n{self.output[-3000:]}")
        self.assertNotIn("Traceback", self.output, self.output[-3000:])

    def _kill_switch(self) -> Deferred[None] | None:
        """Cleanup: make sure the child is gone."""
        if self.twistd.ended.called:
            return None
        try:
            self.process.signalProcess("KILL")
        except Exception:
            return None
        return self.twistd.ended

    # -- sipp ------------------------------------------------------------------------

    async def register_callee(self, uas_port: int) -> None:
        """Register the callee's contact as extension L{CALLEE}."""
        result = await run_sipp(reactor, scenario("register_contact.xml"),
                                f"127.0.0.1:{self.port}", "u1",
                                ["-s", CALLEE, "-au", CALLEE, "-ap", "1234"],
                                timeout=20, local_port=uas_port, sipp=self.sipp)
        self.assertTrue(result.ok, result.describe())

    async def place_calls(self) -> tuple[SippResult, SippResult]:
        """Run the callee, then the caller's L{CALLS} concurrent calls; stop
        the callee (remote control C{q}) once the caller is done."""
        uas_port = free_port("udp")
        await self.register_callee(uas_port)
        control = free_port("udp")
        callee = run_sipp_uas(reactor, scenario("uas_answer.xml"), uas_port, "u1",
                              ["-mp", str(free_port("udp")), "-cp", str(control)],
                              timeout=60, calls=CALLS, recv_timeout=20, sipp=self.sipp)
        await wait_for_port(reactor, uas_port, "udp", ended=callee)
        caller = await run_sipp(
            reactor, scenario("uac_call_long.xml"), f"127.0.0.1:{self.port}", "u1",
            ["-s", CALLEE, "-au", CALLER, "-ap", "1234", "-set", "caller", CALLER,
             "-mp", str(free_port("udp")), "-l", str(CALLS), "-r", str(RATE),
             "-d", str(TALK_MS)],
            timeout=40, calls=CALLS, sipp=self.sipp)
        if not callee.called:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as remote:
                remote.sendto(b"q", ("127.0.0.1", control))
        return caller, await callee

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

    # -- the test --------------------------------------------------------------------

    async def test_no_overdraft_no_double_charge(self) -> None:
        """L{CALLS} concurrent calls on money for a few: none overdraws, each
        answered call is charged once, its re-rated cost, and the ledger,
        the balance and the CDRs agree to the micro-unit."""
        await self.open_redis()
        store = RedisBalanceStore(self.redis, reactor)
        await store.top_up(ACCOUNT, INITIAL, "prepaid-sipp-test")
        await self.start_switch()
        monitor = AccountMonitor(self.redis, store.account_keys(ACCOUNT)["acct"])
        monitor.start()
        try:
            caller, callee = await self.place_calls()
        finally:
            await monitor.stop()
        await self.stop_switch()

        entries: list[LedgerEntry] = await store.ledger(count=10 * CALLS)
        final = await store.get_balance(ACCOUNT)
        holds = await self.redis.hlen(store.account_keys(ACCOUNT)["hold"])
        rows = await self.read_cdrs()
        figures = self.check(caller, callee, monitor, entries, final, holds, rows)
        self.log.info("prepaid sipp run: {figures}", figures=figures)

    def check(self, caller: SippResult, callee: SippResult, monitor: AccountMonitor,
              entries: list[LedgerEntry], final: Any, holds: int,
              rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Every assertion of the module docstring; the figures of the run."""
        context = (f"\n--- caller ---\n{caller.describe()}\n--- callee ---\n"
                   f"{callee.describe()}\n--- switch ---\n{self.output[-2000:]}")
        index = TariffIndex(load_tariff(TARIFF))
        # -- the CDRs: one per call; answered ones re-rated, the others refused with 402
        self.assertEqual(len(rows), CALLS, context)
        self.assertEqual(len({r["call_id"] for r in rows}), CALLS, context)
        answered = [r for r in rows if r["disposition"] == "answered"]
        refused = [r for r in rows if r["disposition"] != "answered"]
        costs: dict[str, Decimal] = {}
        cut = 0
        for row in answered:
            breakdown = _json(row["breakdown"])
            where = f"CDR {row['call_id']}: {row}"
            billsec = row["billsec"]
            answered_at = _timestamp(row["answered_at"])
            talked = billable_duration(answered_at, _timestamp(row["ended_at"]))
            self.assertGreaterEqual(billsec, 1, where)
            if breakdown["disconnect"] == "limit":
                cut += 1  # billed up to the cut, not the BYE exchange after it
                self.assertLessEqual(billsec, talked, where)
            else:
                self.assertEqual(billsec, talked, where)
            rerated = cost(index.match(CALLEE, answered_at), billsec)
            charged = Decimal(row["cost"])
            self.assertEqual(charged, rerated.cost, where)
            self.assertEqual((breakdown["rating"]["duration_s"],
                              Decimal(breakdown["rating"]["cost"])),
                             (billsec, rerated.cost), where)
            self.assertEqual(row["currency"], "USD", where)
            costs[row["call_id"]] = charged
        for row in refused:
            breakdown = _json(row["breakdown"])
            self.assertEqual((row["disposition"], breakdown["code"], breakdown["disconnect"],
                              Decimal(row["cost"]), row["billsec"]),
                             ("rejected", 402, "rejected:charging", Decimal(0), 0),
                             f"CDR {row['call_id']}: {row}")
        # -- (4) some calls refused with 402, the counts agree everywhere
        self.assertGreater(len(refused), 0, "no call was refused: the top-up was too large")
        self.assertGreater(len(answered), 0, "no call was answered" + context)
        self.assertTrue(caller.ok, context)
        self.assertEqual(caller.successful, CALLS, context)
        self.assertEqual({name: int(caller.stats.get(f"{name}(C)") or 0)
                          for name in ("refused", "cut", "completed")},
                         {"refused": len(refused), "cut": cut,
                          "completed": len(answered) - cut}, context)
        self.assertEqual(callee.successful, len(answered), context)
        self.assertFalse(callee.failed, context)
        # -- (1) no overdraft, at any sampled instant and in the ledger
        self.assertEqual(monitor.errors, [])
        self.assertGreater(monitor.samples, 10)
        self.assertGreaterEqual(monitor.lowest_available, 0,
                                "the holds exceeded the balance at some instant")
        self.assertGreaterEqual(monitor.lowest_balance, 0)
        top_ups = [e for e in entries if e.kind == "top_up"]
        commits = [e for e in entries if e.kind != "top_up"]
        self.assertEqual([(e.account, e.amount) for e in top_ups], [(ACCOUNT, INITIAL)])
        self.assertEqual(entries[0], top_ups[0])
        debited = sum((e.amount for e in commits), Decimal(0))
        self.assertLessEqual(debited, INITIAL)
        running = micros(INITIAL)
        for entry in commits:
            running -= micros(entry.amount)
            self.assertEqual(micros(entry.balance), running, entry)
            self.assertGreaterEqual(entry.balance, 0, entry)
        # -- (3) one commit per answered call, its CDR's cost, debited in full
        self.assertEqual([e.kind for e in commits], ["commit"] * len(commits))
        ids = [e.reservation_id for e in commits]
        self.assertEqual(len(ids), len(set(ids)), "a call was committed twice")
        self.assertEqual(sorted(ids), sorted(costs))
        for entry in commits:
            self.assertEqual((entry.account, entry.reference), (ACCOUNT, entry.reservation_id))
            self.assertEqual(micros(entry.final_cost), micros(costs[entry.reservation_id]),
                             entry)
            self.assertEqual(micros(entry.amount), micros(entry.final_cost),
                             f"{entry}: a shortfall (cost not fully debited)")
        total = sum(costs.values(), Decimal(0))
        self.assertEqual(micros(debited), micros(total))
        self.assertEqual(micros(final.balance), micros(INITIAL) - micros(total))
        self.assertEqual((final.held, holds), (Decimal(0), 0), "a hold was left behind")
        self.assertGreaterEqual(final.balance, 0)
        return {"initial": INITIAL, "final": final.balance, "charged": total,
                "answered": len(answered), "cut": cut, "refused": len(refused),
                "lowest_available": Decimal(monitor.lowest_available or 0).scaleb(-6),
                "most_held": Decimal(monitor.most_held).scaleb(-6),
                "samples": monitor.samples,
                "billsec": Counter(r["billsec"] for r in answered)}
