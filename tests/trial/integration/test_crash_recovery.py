"""The switch killed with SIGKILL under call load, then restarted: every
call has exactly one CDR, the holds it abandoned are settled from their
last checkpoint, and nothing is charged twice (rating.md 3.6).

The switch runs under C{twistd} as in C{test_prepaid_sipp} (balances in a
real Redis, provisioning in a fresh SQLite database or PostgreSQL schema,
the file CDR journal beside the database), with a short debit interval and
hold grace, and recovery running every second.  The payer has money for
every call, so no call is refused.

  1. L{SHORT} calls of half a second each run to their end (their CDRs are
     journaled; some may not be in SQL yet when the switch dies);
  2. L{LONG} calls of a minute each are placed at once, and the test waits
     until every one of them is answered and has been extended and
     checkpointed at least once (read from Redis: each hold's recovery note
     has its answer time, each checkpoint is above zero);
  3. the switch is killed with SIGKILL, then sipp is stopped;
  4. the switch is started again on the same configuration: it replays
     its CDR journal, and once the long calls' holds expire its recovery
     settles each from its last checkpoint and writes its CDR;
  5. once no hold is left and recovery has read the whole ledger, the
     switch is stopped (SIGTERM: it flushes its CDR writer).

The test then checks, from the C{cdrs} table and from Redis:

  - one CDR per call, for exactly the calls sipp placed (their Call-IDs
    are set with C{-cid_str}): the short ones as answered and ended by the
    caller, the long ones as answered, C{disconnect = "recovered"},
    C{partial}, with the cost of their last checkpoint;
  - one closing ledger entry per call (a C{commit} for a short call, a
    C{recovered} settlement for a long one), never two; each CDR's cost is
    its entry's cost; the balance is the top-up less the sum of the CDRs'
    costs, to the micro-unit; no hold is left; the long calls cost more
    than nothing (a dead node's calls are not free) and less than their
    holds (they are not charged for time nobody knows happened).

Redis database L{REDIS_DB}, loopback only, bounded: about 25 s.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from twisted.internet import reactor, task

from rating.recovery import CURSOR
from rating.stores.redis import RedisBalanceStore
from tests.trial.integration.prepaid_switch import (
    ACCOUNT,
    CALLEE,
    CALLER,
    PrepaidSwitchCase,
    micros,
    stored_json,
)
from tests.trial.integration.sipp import (
    SippResult,
    free_port,
    run_sipp,
    run_sipp_uas,
    scenario,
    wait_for_port,
)

#: The Redis database of this test (not C{test_prepaid_sipp}'s).
REDIS_DB = 14
LOCK_KEY = "b2bua-test:crash-recovery:lock"
#: Calls that end before the kill, and calls up when it comes.
SHORT = 6
LONG = 12
#: Seconds sipp's long caller and its callee run (their global timeouts:
#: they end by themselves once the switch is gone).
LONG_TIMEOUT = 12
UAS_TIMEOUT = 20
#: Money for every call.
INITIAL = Decimal("100")
#: 0.05 to connect, then 0.01 a second.
TARIFF: dict[str, Any] = {
    "timezone": "UTC",
    "rates": {"R1": {"connect_fee": "0.05", "groups": [
        {"start_s": 0, "price": "0.60", "unit_s": 60, "increment_s": 1}]}},
    "entries": [{"prefixes": [CALLEE], "rate": "R1"}],
}

CONFIG = """
[sip]
listen = ["udp:127.0.0.1:{port}"]
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
recovery_interval = 1

[plugins.charging]
charge_on_net = true
debit_interval = 2
lead = 1
hold_grace = 1
# calls are answered at once; a set-up hold outlives its call by this much
setup_ttl = 8
warn_before = 0

[plugins.charging.tariffs."{tenant}"]
timezone = "UTC"
rates = {{ R1 = {{ connect_fee = "0.05", groups = [
    {{ start_s = 0, price = "0.60", unit_s = 60, increment_s = 1 }} ] }} }}
entries = [ {{ prefixes = ["{callee}"], rate = "R1" }} ]
"""


def of_kind(kind: str, ids: Any) -> set[str]:
    """The Call-IDs among C{ids} that sipp gave with C{-cid_str KIND-%u@%s}."""
    return {i for i in ids if i.startswith(f"{kind}-") and i.endswith("@127.0.0.1")}


class CrashRecoveryTests(PrepaidSwitchCase):
    """SIGKILL under load, restart, and account for every call."""

    redis_db = REDIS_DB
    lock_key = LOCK_KEY
    config_template = CONFIG
    tariff = TARIFF
    tariff_name = "crash recovery test"

    async def poll(self, what: str, check: Any, timeout: float) -> None:
        """Wait until C{await check()} is true (every 0.2 s), or fail."""
        waited = 0.0
        while not await check():
            if waited >= timeout:
                keys = self.store.account_keys(ACCOUNT)
                holds = await self.redis.hgetall(keys["hold"])
                notes = await self.redis.hgetall(keys["note"])
                self.fail(f"{what}: not within {timeout} s\nholds: {holds}\nnotes: {notes}\n"
                          f"{self.output[-3000:]}")
            await task.deferLater(reactor, 0.2, lambda: None)
            waited += 0.2

    async def long_calls_checkpointed(self) -> bool:
        """Every long call answered (its note says when) and checkpointed."""
        keys = self.store.account_keys(ACCOUNT)
        holds = await self.redis.hgetall(keys["hold"])
        notes = await self.redis.hgetall(keys["note"])
        ready = set()
        for call_id, raw in holds.items():
            checkpoint = int(str(raw).split("|")[2])
            note = json.loads(notes.get(call_id) or "{}")
            if checkpoint > 0 and note.get("answered_at"):
                ready.add(call_id)
        self.up = of_kind("long", ready)
        return len(self.up) == LONG

    async def settled(self) -> bool:
        """No hold left, and recovery has read the whole ledger."""
        if await self.redis.hlen(self.store.account_keys(ACCOUNT)["hold"]):
            return False
        entries = await self.store.ledger(count=10_000)
        return (await self.store.ledger_cursor(CURSOR)) == entries[-1].id

    async def test_sigkill_under_load(self) -> None:
        """See the module docstring."""
        await self.open_redis()
        self.store = RedisBalanceStore(self.redis, reactor)
        await self.store.top_up(ACCOUNT, INITIAL, "crash-recovery-test")
        await self.start_switch()
        uas_port = free_port("udp")
        await self.register_callee(uas_port)
        callee = run_sipp_uas(reactor, scenario("uas_answer.xml"), uas_port, "u1",
                              ["-mp", str(free_port("udp"))],
                              timeout=UAS_TIMEOUT, calls=SHORT + LONG, recv_timeout=None,
                              sipp=self.sipp)
        await wait_for_port(reactor, uas_port, "udp", ended=callee)
        common = ["-s", CALLEE, "-au", CALLER, "-ap", "1234", "-set", "caller", CALLER,
                  "-mp", str(free_port("udp"))]
        short = await run_sipp(
            reactor, scenario("uac_call_long.xml"), f"127.0.0.1:{self.port}", "u1",
            [*common, "-cid_str", "short-%u@%s", "-l", str(SHORT), "-r", "20", "-d", "500"],
            timeout=20, calls=SHORT, sipp=self.sipp)
        self.assertTrue(short.ok, short.describe())
        long = run_sipp(
            reactor, scenario("uac_call_long.xml"), f"127.0.0.1:{self.port}", "u1",
            [*common, "-cid_str", "long-%u@%s", "-l", str(LONG), "-r", str(LONG),
             "-d", "60000"],
            timeout=LONG_TIMEOUT, calls=LONG, recv_timeout=None, sipp=self.sipp)
        await self.poll("every long call answered and checkpointed",
                        self.long_calls_checkpointed, 20)

        self.log.info("crash recovery: {n} long calls up; SIGKILL", n=len(self.up))
        self.process.signalProcess("KILL")
        await self.twistd.ended
        first_life = self.output
        for run in (long, callee):  # their global timeouts end them
            try:
                await run
            except Exception as error:  # killed after its timeout: nothing to learn
                self.log.info("sipp ended: {error}", error=error)

        self.log.info("crash recovery: sipp stopped; restarting the switch")
        await self.start_switch(provision=False)
        await self.poll("the abandoned holds settled and their CDRs written", self.settled, 30)
        self.log.info("crash recovery: settled; stopping the switch")
        await self.stop_switch()
        await self.check(short, first_life)

    async def check(self, short: SippResult, first_life: str) -> None:
        """Every assertion of the module docstring."""
        context = f"\n--- switch, first life ---\n{first_life[-2000:]}\n--- second ---\n" \
                  f"{self.output[-2000:]}"
        rows = {row["call_id"]: row for row in await self.read_cdrs()}
        entries = await self.store.ledger(count=10_000)
        final = await self.store.get_balance(ACCOUNT)
        holds = await self.redis.hlen(self.store.account_keys(ACCOUNT)["hold"])
        # one CDR per call, for exactly the calls placed: the short ones, and
        # the long ones that were up at the kill
        self.assertEqual(len(of_kind("short", rows)), SHORT, context)
        self.assertEqual(set(rows), of_kind("short", rows) | self.up, context)
        closing = [e for e in entries if e.kind != "top_up"]
        by_call = {e.reservation_id: e for e in closing}
        self.assertEqual(len(by_call), len(closing), "a call was charged twice")
        self.assertEqual(set(by_call), set(rows), context)
        total = Decimal(0)
        for call_id, row in rows.items():
            breakdown = stored_json(row["breakdown"])
            entry = by_call[call_id]
            where = f"{call_id}: {row} / {entry}"
            self.assertEqual(row["disposition"], "answered", where)
            self.assertEqual(micros(Decimal(row["cost"])), micros(entry.final_cost), where)
            self.assertEqual(micros(entry.amount), micros(entry.final_cost), where)
            if call_id.startswith("short-"):
                self.assertEqual(entry.kind, "commit", where)
                self.assertEqual(breakdown["disconnect"], "caller", where)
            else:
                self.assertEqual(entry.kind, "recovered", where)
                self.assertEqual((breakdown["disconnect"], breakdown["partial"]),
                                 ("recovered", True), where)
                self.assertGreater(entry.amount, Decimal("0.05"), where)
                self.assertGreaterEqual(row["billsec"], 1, where)
                self.assertLess(row["billsec"], 60, where)
            total += Decimal(row["cost"])
        self.assertEqual(micros(final.balance), micros(INITIAL) - micros(total))
        self.assertEqual((final.held, holds), (Decimal(0), 0), "a hold was left behind")
        self.log.info("crash recovery: {short} short, {long} recovered, charged {total}",
                      short=SHORT, long=LONG, total=total)
