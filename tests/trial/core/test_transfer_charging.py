"""A transfer is charged to the referrer's account: the charging plugin
(C{plugins/charging.py}) on the harness, with one prepaid account per
extension (C{[plugins.charging] accounts}).

Alice (1000, C{acct:alice}) calls bob (1001, C{acct:bob}) for 75 s: two
started minutes at 0.60; bob transfers alice to dave (1003), who talks with
her for 30 s: one started minute, which bob pays (C{docs/transfer.md},
"Who pays").
"""

from __future__ import annotations

from decimal import Decimal

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from b2bua.testing import T0, SwitchHarness
from plugins.charging import Charging
from rating.stores import MemoryBalanceStore
from tests.trial.core.test_transfer import Recorder
from tests.trial.plugins.test_charging import tariff_document

ALICE, BOB = "acct:alice", "acct:bob"
SETTINGS = {"charge_on_net": True, "tariffs": {"127.0.0.1": tariff_document()},
            "accounts": {"1000@127.0.0.1": ALICE, "1001@127.0.0.1": BOB}}
DAVE = "<sip:1003@127.0.0.1>"


class TransferChargingTests(SynchronousTestCase):
    """Who pays for the transfer's call."""

    def setUp(self) -> None:
        """A switch with charging on a memory store, four extensions."""
        clock = Clock()
        clock.advance(T0)
        self.store = MemoryBalanceStore(clock)
        self.plugin = Charging(balance_store=self.store)
        self.recorder = Recorder()
        self.h = SwitchHarness({"charging": self.plugin, "recorder": self.recorder},
                               settings={"charging": SETTINGS}, clock=clock)
        self.alice, self.bob = self.h.register("1000"), self.h.register("1001")
        self.dave = self.h.register("1003")

    def fund(self, account: str, amount: str) -> None:
        """Top C{account} up."""
        self.successResultOf(self.store.top_up(account, Decimal(amount), f"t-{account}"))

    def money(self, account: str) -> tuple[Decimal, Decimal]:
        """(balance, held) of C{account}."""
        balance = self.successResultOf(self.store.get_balance(account))
        return balance.balance, balance.held

    def commits(self) -> list[tuple[str, Decimal]]:
        """(account, amount) of every commit, in order."""
        return [(e.account, e.amount)
                for e in self.successResultOf(self.store.ledger(count=1000))
                if e.kind == "commit"]

    def finish(self) -> None:
        """Nothing may be left: calls, transactions, timers, sessions."""
        self.h.settle()
        self.h.assert_idle()
        self.assertEqual(len(self.plugin.sessions or ()), 0)

    def test_referrer_pays_for_the_transfer(self) -> None:
        """Bob's transfer of alice to dave is committed on bob's account;
        alice's account pays her own call to bob only."""
        self.fund(ALICE, "10")
        self.fund(BOB, "10")
        call = self.alice.call("1001")
        bob_side = self.bob.incoming[0]
        bob_side.answer()
        self.h.advance(75)
        self.assertEqual(bob_side.request("REFER", headers=[("Refer-To", DAVE)]).code, 202)
        self.dave.incoming[0].answer()
        self.assertEqual(bob_side.state, "terminated")
        self.assertEqual(self.money(BOB), (Decimal(10), Decimal("0.6")))
        self.h.advance(30)
        self.assertEqual(call.hangup().code, 200)
        self.assertEqual(self.commits(), [(ALICE, Decimal("1.2")), (BOB, Decimal("0.6"))])
        self.assertEqual(self.money(ALICE), (Decimal("8.8"), Decimal(0)))
        self.assertEqual(self.money(BOB), (Decimal("9.4"), Decimal(0)))
        self.finish()

    def test_referrer_without_money(self) -> None:
        """Bob has no money: the transfer's call is refused (402, notified
        to bob) although alice could pay; alice stays with bob, and her
        money is not touched by the attempt."""
        self.fund(ALICE, "10")
        call = self.alice.call("1001")
        bob_side = self.bob.incoming[0]
        bob_side.answer()
        held = self.money(ALICE)
        self.assertEqual(bob_side.request("REFER", headers=[("Refer-To", DAVE)]).code, 202)
        self.assertEqual(self.dave.incoming, [])
        notifies = [r.body for r in bob_side.requests if r.method == "NOTIFY"]
        self.assertEqual(notifies[-1], b"SIP/2.0 402 Payment Required\r\n")
        self.assertEqual(self.money(ALICE), held)
        self.assertEqual((call.state, bob_side.state), ("confirmed", "confirmed"))
        self.h.advance(65)
        call.hangup()
        self.assertEqual(self.commits(), [(ALICE, Decimal("1.2"))])
        self.finish()
