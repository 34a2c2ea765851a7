"""Tests for L{rating.duration}: maximum call duration from a balance (3.2),
the authorisation threshold, caps, C{max_cost} with C{disconnect}, bundles
and the announced duration."""

from __future__ import annotations

from decimal import Decimal

from twisted.trial.unittest import SynchronousTestCase

from rating.bundles import HeldBundle
from rating.cost import cost
from rating.duration import (
    INSUFFICIENT_CREDIT,
    MAX_COST_EXCEEDED,
    MaxDuration,
    max_duration,
    may_announce,
)
from rating.tariff import load_bundle, load_tariff
from tests.trial.rating import berlin, document, group, matched, one_rate
from tests.trial.rating.test_cost import peak_tariff


class MaxDurationTests(SynchronousTestCase):
    """The largest affordable duration, landing on increment ends."""

    def test_lands_on_increment_end(self) -> None:
        """Money for 2 units on 60/60 gives 120 s (121 s costs 3)."""
        result = max_duration(matched(one_rate([group(0, "1", 60, 60)])), Decimal(2))
        self.assertEqual((result.seconds, result.limited_by, result.cost),
                         (120, "credit", Decimal("2.0000")))
        self.assertTrue(result.allowed)

    def test_per_second(self) -> None:
        """0.10/s with 0.99: 9 s."""
        result = max_duration(matched(one_rate([group(0, "0.10", 1, 1)])), Decimal("0.99"))
        self.assertEqual(result.seconds, 9)

    def test_authorisation_threshold(self) -> None:
        """Credit for 15 s of a 60 s first increment is refused (a2billing #22)."""
        result = max_duration(matched(one_rate([group(0, "1.00", 60, 60)])), Decimal("0.25"))
        self.assertEqual(result, MaxDuration(0, 0, 10800, "refused", INSUFFICIENT_CREDIT,
                                             Decimal(0)))
        self.assertFalse(result.allowed)

    def test_threshold_includes_fees(self) -> None:
        """Connect fee and minimum charge count towards the minimum call."""
        tariff = one_rate([group(0, "0.60", 60, 1)], connect_fee="0.10", min_charge="0.50")
        self.assertFalse(max_duration(matched(tariff), Decimal("0.49")).allowed)
        self.assertEqual(max_duration(matched(tariff), Decimal("0.50")).seconds, 40)

    def test_negative_balance(self) -> None:
        """A negative balance cannot place even a cheap call."""
        result = max_duration(matched(one_rate([group(0, "0.01", 60, 1)])), Decimal("-1"))
        self.assertEqual(result.reason, INSUFFICIENT_CREDIT)

    def test_default_cap(self) -> None:
        """Three hours by default; the requested usage caps further."""
        match = matched(one_rate([group(0, "0.01", 60, 60)]))
        self.assertEqual(max_duration(match, Decimal(1000)).seconds, 10800)
        capped = max_duration(match, Decimal(1000), requested_s=300)
        self.assertEqual((capped.seconds, capped.limited_by, capped.cap_s), (300, "cap", 300))
        self.assertEqual(max_duration(match, Decimal(1000), max_call_duration_s=600).seconds, 600)

    def test_free_destination_cap(self) -> None:
        """A destination that costs nothing gets the separate cap."""
        match = matched(one_rate([group(0, "0", 60, 60)]))
        self.assertEqual(max_duration(match, Decimal(0)).seconds, 5400)
        self.assertEqual(max_duration(match, Decimal(0), free_call_duration_s=60).seconds, 60)

    def test_max_cost_disconnect(self) -> None:
        """CGR TestMaxSessionTimeWithMaxCost: 1/s with MaxCost 10 gives 10 s."""
        doc = document({"R": {"groups": [group(0, "1", 1, 1)]}},
                       [{"prefixes": ["49"], "rate": "R", "max_cost": "10",
                         "max_cost_strategy": "disconnect"}])
        result = max_duration(matched(load_tariff(doc)), Decimal(1000))
        self.assertEqual((result.seconds, result.limited_by), (10, "max_cost"))

    def test_max_cost_below_minimum_call(self) -> None:
        """A max cost the first increment exceeds refuses the call."""
        doc = document({"R": {"groups": [group(0, "1", 60, 60)]}},
                       [{"prefixes": ["49"], "rate": "R", "max_cost": "0.5",
                         "max_cost_strategy": "disconnect"}])
        result = max_duration(matched(load_tariff(doc)), Decimal(1000))
        self.assertEqual((result.seconds, result.reason), (0, MAX_COST_EXCEEDED))

    def test_max_cost_free_does_not_limit(self) -> None:
        """With C{free} the cost is capped instead, so the balance rules."""
        doc = document({"R": {"groups": [group(0, "1", 1, 1)]}},
                       [{"prefixes": ["49"], "rate": "R", "max_cost": "10",
                         "max_cost_strategy": "free"}])
        self.assertEqual(max_duration(matched(load_tariff(doc)), Decimal(10)).seconds, 10800)

    def test_bundle_extends(self) -> None:
        """CGR TestMaxDebitZeroDefinedRate: 40 s bundle + 0.99 at 0.10/s gives 49 s."""
        bundle = HeldBundle(load_bundle({"id": "B", "seconds": 40, "prefixes": ["49"]}), 40)
        match = matched(one_rate([group(0, "0.10", 1, 1)]))
        self.assertEqual(max_duration(match, Decimal("0.99"), bundles=[bundle]).seconds, 49)

    def test_grace_and_tiny_cap(self) -> None:
        """A cap inside the grace period is granted once the threshold passes."""
        match = matched(one_rate([group(0, "1", 60, 60)], grace_s=10))
        self.assertEqual(max_duration(match, Decimal(5), requested_s=5).seconds, 5)
        self.assertFalse(max_duration(match, Decimal("0.5"), requested_s=5).allowed)

    def test_split_mode(self) -> None:
        """Split mode: 0.02 + 120 s peak (0.20), then four 30 s off-peak
        increments (0.08) fit in 0.30: 240 s, and one more second does not."""
        match = matched(peak_tariff("split"), berlin(2024, 3, 5, 17, 58, 0))
        result = max_duration(match, Decimal("0.30"))
        self.assertLessEqual(cost(match, result.seconds).cost, Decimal("0.30"))
        self.assertGreater(cost(match, result.seconds + 1).cost, Decimal("0.30"))
        self.assertEqual(result.seconds, 240)


class AnnouncedDurationTests(SynchronousTestCase):
    """PB honest and tricky fees; A2B's refusal of short announcements."""

    def test_honest(self) -> None:
        """$10, 0.10/min, 0.20 connection fee: 98 minutes announced and enforced."""
        match = matched(one_rate([group(0, "0.10", 60, 60)], connect_fee="0.20"))
        result = max_duration(match, Decimal(10))
        self.assertEqual((result.seconds, result.announced_s), (98 * 60, 98 * 60))

    def test_tricky(self) -> None:
        """The same with a tricky fee: 100 minutes announced, cut at 98."""
        match = matched(one_rate([group(0, "0.10", 60, 60)], connect_fee="0.20",
                                 connect_fee_tricky=True))
        result = max_duration(match, Decimal(10))
        self.assertEqual((result.seconds, result.announced_s), (98 * 60, 100 * 60))

    def test_may_announce(self) -> None:
        """Calling cards refuse a call announced as 10 s or less."""
        match = matched(one_rate([group(0, "0.60", 60, 1)]))
        self.assertFalse(may_announce(max_duration(match, Decimal("0.10"))))
        self.assertTrue(may_announce(max_duration(match, Decimal("0.11"))))
        self.assertTrue(may_announce(max_duration(match, Decimal("0.10")), min_announce_s=9))
        self.assertFalse(may_announce(max_duration(match, Decimal(0))))
