"""End-to-end tests of the charging plugin (C{plugins/charging.py}): real SIP
between phones on the harness's fake network, a L{MemoryBalanceStore} on
the switch's clock, and the demo tenant C{127.0.0.1} paying from the
account C{customer:127.0.0.1}.

The tenant's tariff charges 0.60 a started minute (60/60) for numbers
starting with 100 and 0.01 a second for numbers starting with 101; the
tests let extensions call each other (C{charge_on_net = true}).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.call import Call, CallRecord
from b2bua.hookspecs import hookimpl
from b2bua.testing import T0, PhoneCall, SwitchHarness
from plugins.charging import Charging, SettingsError, parse_settings
from rating.charging import ChargingSession, Payer
from rating.stores import MemoryBalanceStore
from rating.tariff import load_tariff

ACCOUNT = "customer:127.0.0.1"


def tariff_document() -> dict[str, Any]:
    """0.60 a started minute on 100, per second on 101, 102 blocked."""
    return {
        "timezone": "Europe/Berlin",
        "rates": {"MIN": {"groups": [{"start_s": 0, "price": "0.60", "unit_s": 60,
                                      "increment_s": 60}]},
                  "SEC": {"groups": [{"start_s": 0, "price": "0.60", "unit_s": 60,
                                      "increment_s": 1}]}},
        "entries": [{"prefixes": ["100"], "rate": "MIN"},
                    {"prefixes": ["101"], "rate": "SEC"},
                    {"prefixes": ["102"], "blocked": True}],
    }


SETTINGS = {"charge_on_net": True, "tariffs": {"127.0.0.1": tariff_document()}}


class CDRReader:
    """Stands for the CDR writer: reads what charging left in C{call.data},
    and records the warnings."""

    def __init__(self) -> None:
        self.costs: list[str | None] = []
        self.warned: list[float] = []
        self.records: list[CallRecord] = []

    @hookimpl
    def b2bua_call_warned(self, call: Call, remaining: float) -> None:
        """Record."""
        self.warned.append(remaining)

    @hookimpl
    def b2bua_call_ended(self, call: Call, record: CallRecord) -> None:
        """Read the charging session's cost (set before this runs)."""
        session = call.data.get("charging")
        self.costs.append(session.as_dict()["cost"] if session is not None else None)
        self.records.append(record)


class ChargingTestCase(SynchronousTestCase):
    """A switch with the charging plugin, alice (1000) and bob (1001)."""

    settings: dict[str, Any] = SETTINGS

    def setUp(self) -> None:
        """Build the switch around a memory store on its clock."""
        clock = Clock()
        clock.advance(T0)
        self.store = MemoryBalanceStore(clock)
        self.plugin = Charging(balance_store=self.store)
        self.reader = CDRReader()
        self.h = SwitchHarness({"charging": self.plugin, "cdr": self.reader},
                               settings={"charging": self.settings}, clock=clock)
        self.alice = self.h.register("1000")
        self.bob = self.h.register("1001")

    def fund(self, amount: str, reference: str = "t1") -> None:
        """Top the tenant's account up."""
        self.successResultOf(self.store.top_up(ACCOUNT, Decimal(amount), reference))

    def money(self) -> tuple[Decimal, Decimal]:
        """(balance, held) of the tenant's account."""
        balance = self.successResultOf(self.store.get_balance(ACCOUNT))
        return balance.balance, balance.held

    def commits(self) -> list[tuple[str, Decimal]]:
        """(reservation id, amount debited) of every commit in the ledger."""
        return [(e.reservation_id, e.amount)
                for e in self.successResultOf(self.store.ledger(count=1000))
                if e.kind == "commit"]

    def connect(self, caller: Any = None, callee: Any = None,
                number: str | None = None) -> tuple[PhoneCall, PhoneCall]:
        """C{caller} (alice) calls C{callee} (bob), who rings and answers."""
        caller, callee = caller or self.alice, callee or self.bob
        call = caller.call(number or callee.user)
        incoming = callee.incoming[-1]
        incoming.ring()
        incoming.answer()
        self.assertEqual(call.state, "confirmed")
        return call, incoming

    def finish(self) -> None:
        """Let every transaction end; nothing may be left behind."""
        self.h.settle()
        self.h.assert_idle()
        self.assertEqual(len(self.plugin.sessions or ()), 0)


class ChargedCallTests(ChargingTestCase):
    """Calls that are charged: the price, the cut, the top-up."""

    def test_charged_the_re_rated_cost(self) -> None:
        """A call of 75.5 s answered on 10.00 is charged two started
        minutes, 1.20: once, from the re-rating of the whole call; the CDR
        writer finds the cost in C{call.data["charging"]}."""
        self.fund("10")
        call, _incoming = self.connect()
        self.assertEqual(self.money(), (Decimal(10), Decimal("0.6")))
        self.h.advance(75.5)
        self.assertEqual(self.money(), (Decimal(10), Decimal("1.2")))
        self.assertEqual(call.hangup().code, 200)
        self.assertEqual(self.money(), (Decimal("8.8"), Decimal(0)))
        self.assertEqual(self.commits(), [(call.invite.call_id, Decimal("1.2"))])
        self.assertEqual(self.reader.costs, ["1.2000"])
        self.assertEqual(self.h.metric("b2bua_balance_operation_seconds_count", op="commit"), 1)
        self.finish()

    def test_cut_when_the_money_runs_out(self) -> None:
        """1.50 pays two minutes: the call is warned 30 s ahead, then cut
        with a BYE on both sides carrying the Reason, at exactly 120 s; the
        balance never goes below zero."""
        self.fund("1.50")
        call, incoming = self.connect()
        self.h.advance(89)
        self.assertEqual(self.reader.warned, [])
        self.h.advance(1)
        self.assertEqual(self.reader.warned, [30])
        self.h.advance(29)
        self.assertEqual(self.h.network.requests("BYE"), [])
        self.h.advance(1)
        for phone in (self.alice, self.bob):
            [bye] = self.h.network.requests("BYE", self.h.address, phone.address)
            self.assertIn('text="insufficient balance"', bye.headers.get("Reason") or "")
        self.assertEqual((call.state, incoming.state), ("terminated", "terminated"))
        self.assertEqual(self.reader.records[0].disconnect, "limit")
        self.assertEqual(self.money(), (Decimal("0.3"), Decimal(0)))
        self.finish()

    def test_top_up_extends_the_call(self) -> None:
        """A top-up during the call (the API calls C{balance_changed}) moves
        the cut: the call goes on past 120 s and costs its four minutes."""
        self.fund("1.50")
        _call, incoming = self.connect()
        self.h.advance(100)
        self.fund("6", "t2")
        self.successResultOf(self.plugin.balance_changed(ACCOUNT))
        self.h.advance(100)
        self.assertEqual(self.h.network.requests("BYE"), [])
        self.assertEqual(incoming.hangup().code, 200)
        self.assertEqual(self.money(), (Decimal("5.1"), Decimal(0)))
        self.finish()

    def test_concurrent_calls_never_overdraw(self) -> None:
        """Five calls at once on 2.00 at 0.01/s: four get a hold (three a
        minute, one the 20 s left), the fifth is refused with 402; all are
        cut when the money is spent; the commits add up to 2.00 and money
        committed plus held never exceeds it, at any second."""
        self.fund("2.00")
        callers = [self.h.register(str(1002 + i)) for i in range(5)]
        callees = [self.h.register(str(1010 + i)) for i in range(5)]
        calls = [caller.call(f"sip:101{i}@127.0.0.1") for i, caller in enumerate(callers)]
        for i, callee in enumerate(callees):
            if callee.incoming:
                callee.incoming[0].answer()
            self.assertEqual(calls[i].code, 402 if i == 4 else 200)
        for _ in range(120):
            balance, held = self.money()
            self.assertLessEqual(Decimal(2) - balance + held, Decimal(2))
            self.assertGreaterEqual(balance, 0)
            self.h.advance(1)
        self.assertEqual([c.state for c in calls], ["terminated"] * 5)
        debited = sorted(amount for _, amount in self.commits())
        self.assertEqual(debited, [Decimal("0.2"), Decimal("0.6"), Decimal("0.6"),
                                   Decimal("0.6")])
        self.assertLessEqual(sum(debited), Decimal(2))
        self.assertEqual(self.money(), (Decimal(0), Decimal(0)))
        self.finish()


class UnchargedCallTests(ChargingTestCase):
    """Calls that are refused, or end before the answer."""

    def test_no_balance(self) -> None:
        """Without money the caller gets 402 with a Q.850 Reason, the callee
        never rings, and the refusal is counted."""
        call = self.alice.call("1001")
        self.assertEqual(call.code, 402)
        self.assertEqual(call.outgoing.final.headers.get("Reason"),  # type: ignore[union-attr]
                         'Q.850;cause=21;text="insufficient balance"')
        self.assertEqual(self.bob.incoming, [])
        self.assertEqual(self.h.metric("b2bua_rating_rejections_total",
                                       reason="insufficient_balance"), 1)
        self.assertEqual(self.reader.records[0].disconnect, "rejected:charging")
        self.assertEqual(self.reader.costs, [None])
        self.finish()

    def test_unrated_and_blocked(self) -> None:
        """A number without a rate, and a blocked one, get 403."""
        self.fund("10")
        for number, text in (("2000", "unrated destination"), ("1020", "blocked destination")):
            call = self.alice.call(number)
            self.assertEqual(call.code, 403)
            self.assertIn(text, call.outgoing.final.headers.get("Reason"))  # type: ignore[union-attr]
        self.assertEqual(self.money(), (Decimal(10), Decimal(0)))
        self.finish()

    def test_cancelled(self) -> None:
        """A call the caller cancels while it rings costs nothing and its
        hold is released."""
        self.fund("10")
        call = self.alice.call("1001")
        self.bob.incoming[0].ring()
        self.assertEqual(self.money(), (Decimal(10), Decimal("0.6")))
        call.cancel()
        self.assertEqual(call.code, 487)
        self.assertEqual(self.money(), (Decimal(10), Decimal(0)))
        self.assertEqual(self.commits(), [])
        self.finish()

    def test_busy(self) -> None:
        """A busy callee: nothing charged, the hold released."""
        self.fund("10")
        call = self.alice.call("1001")
        self.bob.incoming[0].busy()
        self.assertEqual(call.code, 486)
        self.assertEqual(self.money(), (Decimal(10), Decimal(0)))
        self.assertEqual(self.commits(), [])
        self.finish()


class NotChargedTests(ChargingTestCase):
    """Calls the plugin has no opinion on."""

    settings = {"tariffs": {"127.0.0.1": tariff_document()}}

    def test_on_net_is_free(self) -> None:
        """By default a call to an extension of the caller's own tenant is
        not charged (no balance needed, no cut)."""
        call, _incoming = self.connect()
        self.h.advance(3 * 3600)
        self.assertEqual(call.state, "confirmed")
        call.hangup()
        self.assertEqual(self.reader.costs, [None])
        self.finish()


class NoTariffTests(ChargingTestCase):
    """A tenant without a tariff."""

    settings: dict[str, Any] = {}

    def test_not_charged(self) -> None:
        """No tariff, no opinion: the call goes through on no money."""
        call, _incoming = self.connect()
        call.hangup()
        self.assertEqual(self.reader.costs, [None])
        self.finish()


class ServicesExtraTests(ChargingTestCase):
    """The service wires the store, the tariffs and the payer through
    C{services.extra}."""

    settings: dict[str, Any] = {}

    def test_injected(self) -> None:
        """A plugin made without arguments uses C{balance_store},
        C{tariffs} and C{payer} from C{services.extra}; configuring again
        does not register the metrics twice."""
        plugin = Charging()
        store = MemoryBalanceStore(self.h.clock)
        tariff = load_tariff(tariff_document())
        asked: list[str] = []

        def tariffs(call: Call) -> Any:
            asked.append(call.tenant)
            return tariff

        self.h.services.extra.update(balance_store=store, tariffs=tariffs,
                                     payer=lambda call: Payer("card:7"))
        self.h.pm.unregister(name="charging")
        self.h.pm.register(plugin, name="charging")
        plugin.b2bua_configure(self.h.services, {"charging": {"charge_on_net": True}})
        self.assertIs(self.h.services.extra["charging_sessions"], plugin.sessions)
        self.successResultOf(store.top_up("card:7", Decimal(1), "r"))
        call, _incoming = self.connect()
        self.assertIsInstance(self.h.switch.calls[call.invite.call_id].data["charging"],
                              ChargingSession)
        self.h.advance(10)
        call.hangup()
        self.assertEqual(asked, ["127.0.0.1"])
        balance = self.successResultOf(store.get_balance("card:7"))
        self.assertEqual(balance.balance, Decimal("0.4"))
        self.plugin = plugin
        self.finish()


class SettingsTests(SynchronousTestCase):
    """L{parse_settings}: every bad key is named."""

    def test_defaults(self) -> None:
        """An empty table: one-minute intervals, 30 s warning, prepaid."""
        settings = parse_settings({})
        self.assertEqual((settings.policy.debit_interval, settings.policy.warn_before,
                          settings.payment, settings.charge_on_net), (60, 30, "prepaid", False))

    def test_accounts(self) -> None:
        """Accounts by identity or tenant, with their payment."""
        settings = parse_settings({"accounts": {
            "1000@Example.com": "card:9",
            "example.com": {"account": "customer:1", "payment": "postpaid"}}})
        self.assertEqual(settings.accounts, {"1000@example.com": Payer("card:9"),
                                             "example.com": Payer("customer:1", "postpaid")})

    def test_errors(self) -> None:
        """Each problem stops the start-up with the key in the message."""
        for table, key in (
                ({"debit_interval": 0}, "debit_interval"),
                ({"warn_before": "30"}, "warn_before"),
                ({"lead": 60}, "lead"),
                ({"surprise": 1}, "surprise"),
                ({"payment": "credit"}, "payment"),
                ({"hold_mode": "all"}, "hold_mode"),
                ({"accounts": {"a.com": 5}}, "accounts.a.com"),
                ({"accounts": {"a.com": {"account": "x", "pay": 1}}}, "accounts.a.com.pay"),
                ({"tariffs": {"a.com": {"timezone": "UTC"}}}, "tariffs.a.com"),
                ({"tariff_file": "/nonexistent/tariffs.json"}, "tariff_file")):
            with self.assertRaises(SettingsError) as raised:
                parse_settings(table)
            self.assertIn(f"plugins.charging.{key}", str(raised.exception))

    def test_tariff_file(self) -> None:
        """C{tariff_file} holds tenant domain = tariff document, in JSON or
        TOML; inline C{tariffs} win over it."""
        import json

        folder = Path(self.mktemp())
        folder.mkdir()
        (folder / "t.json").write_text(json.dumps({"A.com": tariff_document(),
                                                   "b.com": tariff_document()}))
        settings = parse_settings({"tariff_file": "t.json",
                                   "tariffs": {"b.com": tariff_document()}}, base=folder)
        self.assertEqual(sorted(settings.tariffs), ["a.com", "b.com"])
        (folder / "t.toml").write_text('[x]\ntimezone = "UTC"\nrates = {}\nentries = []\n')
        self.assertEqual(list(parse_settings({"tariff_file": str(folder / "t.toml")}).tariffs),
                         ["x"])
