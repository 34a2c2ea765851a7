"""Tests for L{rating.bundles}: included minutes (5.1) and volume discounts
(5.2), alone and inside the cost pipeline."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from rating.bundles import (
    DiscountPlan,
    HeldBundle,
    consume_bundles,
    load_discount_plan,
    prefix_matches,
    select_discount,
    usable_bundles,
)
from rating.cost import cost
from rating.tariff import TariffError, load_bundle
from tests.trial.rating import berlin, group, matched, one_rate

NOON = berlin(2024, 3, 5, 12)


def held(bundle_id: str, remaining: int, increment: int = 1, prefixes: tuple[str, ...] = ("49",),
         **fields: Any) -> HeldBundle:
    """A holding of a bundle C{bundle_id} with C{remaining} seconds."""
    doc = {"id": bundle_id, "seconds": remaining, "prefixes": list(prefixes),
           "increment_s": increment}
    doc.update({k: v for k, v in fields.items() if k in ("connect_fee", "price")})
    extra = {k: v for k, v in fields.items() if k in ("weight", "expires_at")}
    return HeldBundle(load_bundle(doc), remaining, **extra)


class SelectionTests(SynchronousTestCase):
    """Which holdings a call may use, and in which order."""

    def test_order(self) -> None:
        """Highest weight first, then earliest expiry (none last), then id."""
        soon = berlin(2024, 4, 1)
        later = berlin(2024, 5, 1)
        holdings = [held("late", 60, expires_at=later), held("never", 60),
                    held("heavy", 60, weight=Decimal(5)), held("soon", 60, expires_at=soon),
                    held("also-never", 60)]
        order = [h.bundle.id for h in usable_bundles(holdings, "4930", NOON)]
        self.assertEqual(order, ["heavy", "soon", "late", "also-never", "never"])

    def test_unusable(self) -> None:
        """Expired, other destinations and less than one increment left are skipped."""
        holdings = [held("expired", 60, expires_at=NOON), held("fr", 60, prefixes=("33",)),
                    held("crumbs", 10, increment=30), held("any", 60, prefixes=("*any",))]
        self.assertEqual([h.bundle.id for h in usable_bundles(holdings, "4930", NOON)], ["any"])

    def test_prefix_matches(self) -> None:
        """The longest matching prefix; C{*any} matches with length 0."""
        self.assertEqual(prefix_matches(["4", "49", "*any"], "4930"), "49")
        self.assertEqual(prefix_matches(["*any"], "4930"), "")
        self.assertIsNone(prefix_matches(["33"], "4930"))


class ConsumptionTests(SynchronousTestCase):
    """5.1: each bundle in its own increments from call-second 0."""

    def test_own_increments(self) -> None:
        """A 40 s bundle with 20 s increments covers a 30 s call and loses 40 s."""
        (use,) = consume_bundles([held("B", 40, increment=20)], 30)
        self.assertEqual((use.start_s, use.covered_s, use.consumed_s, use.end_s), (0, 30, 40, 40))

    def test_chained(self) -> None:
        """A bundle only takes whole increments; the next one continues."""
        uses = consume_bundles([held("A", 50, increment=20), held("B", 100, increment=1)], 70)
        self.assertEqual([(u.bundle.id, u.start_s, u.covered_s, u.consumed_s) for u in uses],
                         [("A", 0, 40, 40), ("B", 40, 30, 30)])

    def test_outlasted(self) -> None:
        """A call longer than all bundles leaves the rest to the tariff."""
        (use,) = consume_bundles([held("A", 30)], 100)
        self.assertEqual((use.covered_s, use.end_s), (30, 30))
        self.assertEqual(consume_bundles([held("A", 30)], 0), ())


class CostWithBundleTests(SynchronousTestCase):
    """Bundles inside the 2.6 pipeline."""

    def setUp(self) -> None:
        """A rate with a first minute and per-second after, and a connect fee."""
        self.match = matched(one_rate([group(0, "1.00", 60, 60), group(60, "0.60", 60, 1)],
                                      connect_fee="0.50"))

    def test_fully_covered(self) -> None:
        """Inside the bundle: only the bundle's connect fee (here 0)."""
        breakdown = cost(self.match, 45, bundles=[held("B", 120)])
        self.assertEqual((breakdown.cost, breakdown.connect_fee), (Decimal("0.0000"), 0))
        self.assertEqual(breakdown.bundle_seconds, {"B": 45})
        self.assertEqual(breakdown.groups, ())

    def test_remainder_keeps_call_positions(self) -> None:
        """After a 60 s bundle the tariff's second group applies, not the first."""
        breakdown = cost(self.match, 100, bundles=[held("B", 60)])
        self.assertEqual(breakdown.cost, Decimal("0.4000"))
        self.assertEqual([(g.group, g.seconds) for g in breakdown.groups], [(1, 40)])

    def test_remainder_mid_group(self) -> None:
        """After a 30 s bundle the first-minute increment runs from second 30."""
        self.assertEqual(cost(self.match, 90, bundles=[held("B", 30)]).cost, Decimal("1.0000"))
        self.assertEqual(cost(self.match, 100, bundles=[held("B", 30)]).cost, Decimal("1.1000"))

    def test_bundle_connect_fee_and_price(self) -> None:
        """The bundle's own connect fee replaces the rate's; its price is per minute."""
        bundle = held("B", 120, increment=60, connect_fee="0.05", price="0.30")
        breakdown = cost(self.match, 61, bundles=[bundle])
        self.assertEqual((breakdown.connect_fee, breakdown.bundle_charge, breakdown.cost),
                         (Decimal("0.05"), Decimal("0.6"), Decimal("0.6500")))

    def test_minimum_charge_still_applies(self) -> None:
        """The pipeline's minimum charge is per call, bundle or not (2.6.5)."""
        match = matched(one_rate([group(0, "1", 60, 60)], min_charge="0.10"))
        self.assertEqual(cost(match, 30, bundles=[held("B", 60)]).cost, Decimal("0.1000"))

    def test_grace_consumes_nothing(self) -> None:
        """A call inside the grace period uses no bundle seconds."""
        match = matched(one_rate([group(0, "1", 60, 60)], grace_s=5))
        self.assertEqual(cost(match, 5, bundles=[held("B", 60)]).bundles, ())

    def test_other_destination(self) -> None:
        """A bundle for another destination is ignored."""
        breakdown = cost(self.match, 30, bundles=[held("B", 60, prefixes=("33",))])
        self.assertEqual(breakdown.cost, Decimal("1.5000"))


PLAN = {"id": "US500", "prefixes": ["1"], "counter": "seconds", "period": "month",
        "tiers": [{"threshold": "30000", "pct": "10"}, {"threshold": "60000", "pct": "20"}]}


class DiscountTests(SynchronousTestCase):
    """5.2: the tier at call start, on the time charge."""

    def test_tiers(self) -> None:
        """0 % below the first threshold; a tier applies from its threshold on."""
        plan = load_discount_plan(PLAN)
        self.assertEqual([plan.pct_for(v) for v in (0, 29999, 30000, 59999, 60000, 10**9)],
                         [0, 0, 10, 10, 20, 20])

    def test_select(self) -> None:
        """The plan with the longest matching prefix, with the account's counter."""
        plans = [load_discount_plan(PLAN),
                 DiscountPlan("ANY", ("*any",), "amount", "month", ()),
                 load_discount_plan({**PLAN, "id": "NYC", "prefixes": ["1212"]})]
        plan, pct = select_discount(plans, "12125550100", {"NYC": 45000, "US500": 0})
        self.assertEqual((plan.id, pct), ("NYC", Decimal(10)))
        plan, pct = select_discount(plans, "4930", {})
        self.assertEqual((plan.id, pct), ("ANY", 0))
        self.assertEqual(select_discount(plans[:1], "4930", {}), (None, 0))

    def test_increment(self) -> None:
        """Counters grow by billed seconds or by the amount charged."""
        plan = load_discount_plan(PLAN)
        self.assertEqual(plan.increment(66, Decimal("0.66")), 66)
        amount = load_discount_plan({**PLAN, "counter": "amount"})
        self.assertEqual(amount.increment(66, Decimal("0.66")), Decimal("0.66"))

    def test_in_cost(self) -> None:
        """The selected percentage reduces the time charge of the whole call."""
        match = matched(one_rate([group(0, "0.60", 60, 1)], connect_fee="0.10"))
        plan = load_discount_plan({**PLAN, "id": "DE", "prefixes": ["49"]})
        _, pct = select_discount([plan], match.number, {"DE": 60000})
        self.assertEqual(cost(match, 100, discount_pct=pct).cost, Decimal("0.9000"))

    def test_validation(self) -> None:
        """Every problem of a plan is named by its path."""
        bad = {**PLAN, "counter": "calls", "tiers": [{"threshold": "10", "pct": "101"},
                                                    {"threshold": "5", "pct": "1"}]}
        error = self.assertRaises(TariffError, load_discount_plan, bad)
        self.assertEqual(error.problems, (
            "discount.counter: must be one of seconds, amount",
            "discount.tiers[0].pct: must be <= 100",
        ))
        error = self.assertRaises(TariffError, load_discount_plan,
                                  {**PLAN, "tiers": [{"threshold": "10", "pct": "1"},
                                                     {"threshold": "5", "pct": "1"}]})
        self.assertEqual(error.problems,
                         ("discount.tiers[1].threshold: thresholds must be strictly ascending",))
        self.assertRaises(TariffError, load_discount_plan, {"id": "x"})


class ExpiryBoundaryTests(SynchronousTestCase):
    """Expiry is exclusive: a bundle is unusable from its expiry instant on."""

    def test_boundary(self) -> None:
        """One second before expiry it is usable; at expiry it is not."""
        holding = held("B", 60, expires_at=NOON)
        self.assertTrue(holding.usable("49", NOON - dt.timedelta(seconds=1)))
        self.assertFalse(holding.usable("49", NOON))
