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

import socket
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from twisted.internet import reactor, task

from rating.cost import billable_duration, cost
from rating.lookup import TariffIndex
from rating.stores.interface import LedgerEntry
from rating.stores.redis import RedisBalanceStore
from rating.tariff import load_tariff
from tests.trial.integration.prepaid_switch import (
    ACCOUNT,
    CALLEE,
    CALLER,
    PrepaidSwitchCase,
    micros,
    stored_json,
    stored_timestamp,
)
from tests.trial.integration.sipp import (
    SippResult,
    free_port,
    run_sipp,
    run_sipp_uas,
    scenario,
    wait_for_port,
)

#: The Redis database the switch keeps its balances in during the test.
REDIS_DB = 15
#: Held by a running test, so that two runs never share L{REDIS_DB}.
LOCK_KEY = "b2bua-test:prepaid-sipp:lock"

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


class PrepaidWithSippTests(PrepaidSwitchCase):
    """Many concurrent prepaid calls on a small balance, through the switch."""

    redis_db = REDIS_DB
    lock_key = LOCK_KEY
    config_template = CONFIG
    config_values = {"interval": DEBIT_INTERVAL}
    tariff = TARIFF

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
            breakdown = stored_json(row["breakdown"])
            where = f"CDR {row['call_id']}: {row}"
            billsec = row["billsec"]
            answered_at = stored_timestamp(row["answered_at"])
            talked = billable_duration(answered_at, stored_timestamp(row["ended_at"]))
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
            breakdown = stored_json(row["breakdown"])
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
