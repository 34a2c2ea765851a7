"""Tests for L{rating.cost}: the worked examples of rating.md 2.8 with their
exact numbers, every step of the 2.6 pipeline, both period boundaries, the
single rounding step and the breakdown."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from rating.cost import billable_duration, cost, quote, round_amount
from rating.lookup import DestinationRejected, TariffIndex
from rating.tariff import Rounding, load_tariff
from tests.trial.rating import berlin, document, group, matched, one_rate


def price(tariff: Any, duration_s: int, at: dt.datetime | None = None, **options: Any) -> Decimal:
    """The cost of a call of C{duration_s} to 4930123456 on C{tariff}."""
    return cost(matched(tariff, at), duration_s, **options).cost


def peak_tariff(boundary: str) -> Any:
    """Example 2's tariff: peak Mon-Fri 08:00-18:00, off-peak otherwise."""
    rates = {"PEAK": {"connect_fee": "0.02", "groups": [group(0, "0.10", 60, 1)]},
             "OFF": {"groups": [group(0, "0.04", 60, 30)]}}
    entries = [{"prefixes": ["49"], "timing": "peak", "rate": "PEAK", "weight": 10},
               {"prefixes": ["49"], "rate": "OFF"}]
    timings = {"peak": {"weekdays": [1, 2, 3, 4, 5], "start": "08:00:00", "end": "18:00:00"}}
    return load_tariff(document(rates, entries, timings=timings, period_boundary=boundary))


class WorkedExampleTests(SynchronousTestCase):
    """rating.md 2.8, number for number."""

    def test_example_1(self) -> None:
        """0.05 + 0.30 + 3 x 6 s x 0.20/60 = 0.41."""
        tariff = one_rate([group(0, "0.30", 60, 60), group(60, "0.20", 60, 6)],
                          connect_fee="0.05")
        breakdown = cost(matched(tariff), 75)
        self.assertEqual(breakdown.cost, Decimal("0.4100"))
        self.assertEqual([(g.group, g.increments, g.seconds, g.amount) for g in breakdown.groups],
                         [(0, 1, 60, Decimal("0.3")), (1, 3, 18, Decimal("0.06"))])
        self.assertEqual(breakdown.connect_fee, Decimal("0.05"))
        self.assertEqual(breakdown.unrounded, Decimal("0.41"))

    def test_example_2_split(self) -> None:
        """Split: 20 s peak + one 30 s off-peak increment + 0.02 = 0.07333... -> 0.0734."""
        breakdown = cost(matched(peak_tariff("split"), berlin(2024, 3, 5, 17, 59, 40)), 50)
        self.assertEqual(breakdown.cost, Decimal("0.0734"))
        self.assertEqual(breakdown.unrounded, Decimal("0.07333333333333333333333333333333333"))
        self.assertEqual([(g.rate_id, g.seconds) for g in breakdown.groups],
                         [("PEAK", 20), ("OFF", 30)])
        self.assertEqual(breakdown.rounding_adjustment,
                         Decimal("0.00006666666666666666666666666666666667"))

    def test_example_2_start(self) -> None:
        """Start: 0.02 + 50 x 0.10/60 -> 0.1034."""
        self.assertEqual(price(peak_tariff("start"), 50, berlin(2024, 3, 5, 17, 59, 40)),
                         Decimal("0.1034"))

    def test_example_3(self) -> None:
        """The first 60 s increment starts in peak and is charged whole: 1.25."""
        rates = {"PEAK": {"groups": [group(0, "1.00", 60, 60)]},
                 "OFF": {"groups": [group(0, "0.50", 60, 1)]}}
        entries = [{"prefixes": ["49"], "timing": "peak", "rate": "PEAK", "weight": 10},
                   {"prefixes": ["49"], "rate": "OFF"}]
        tariff = load_tariff(document(rates, entries, period_boundary="split",
                                      timings={"peak": {"end": "18:00:00"}}))
        self.assertEqual(price(tariff, 90, berlin(2024, 3, 5, 17, 59, 30)), Decimal("1.2500"))

    def test_example_4(self) -> None:
        """Fees and surcharge 0.78; minimum 1.00; max cost (free) 0.90."""
        fields = {"connect_fee": "0.10", "disconnect_fee": "0.05",
                  "post_call_surcharge_pct": "20"}
        groups = [group(0, "0.50", 60, 60)]
        self.assertEqual(price(one_rate(groups, **fields), 60), Decimal("0.7800"))
        self.assertEqual(price(one_rate(groups, min_charge="1.00", **fields), 60),
                         Decimal("1.0000"))
        doc = document({"R": {"groups": groups, "min_charge": "1.00", **fields}},
                       [{"prefixes": ["49"], "rate": "R", "max_cost": "0.90",
                         "max_cost_strategy": "free"}])
        breakdown = cost(matched(load_tariff(doc)), 60)
        self.assertEqual(breakdown.cost, Decimal("0.9000"))
        self.assertEqual((breakdown.surcharge, breakdown.min_charge_adjustment,
                          breakdown.max_cost_adjustment),
                         (Decimal("0.13"), Decimal("0.22"), Decimal("-0.1")))


class PipelineTests(SynchronousTestCase):
    """Each step of 2.2-2.6 on its own."""

    def test_zero_duration(self) -> None:
        """D = 0 costs nothing, not even the connect fee (2.2)."""
        breakdown = cost(matched(one_rate([group(0, "1", 60, 60)], connect_fee="0.1",
                                          min_charge="1")), 0)
        self.assertEqual((breakdown.cost, breakdown.status), (Decimal("0.0000"), "zero_duration"))

    def test_grace(self) -> None:
        """D <= grace_s is free of everything; above it, billed from second 0."""
        tariff = one_rate([group(0, "0.60", 60, 1)], grace_s=5, connect_fee="0.10",
                          min_charge="0.15")
        breakdown = cost(matched(tariff), 5)
        self.assertEqual((breakdown.cost, breakdown.status), (Decimal("0.0000"), "grace"))
        self.assertEqual(price(tariff, 6), Decimal("0.1600"))
        self.assertEqual(price(tariff, 10), Decimal("0.2000"))

    def test_free_seconds(self) -> None:
        """Time charges run on D - free_seconds; the connect fee still applies."""
        tariff = one_rate([group(0, "0.60", 60, 1)], free_seconds=10, connect_fee="0.05")
        self.assertEqual(price(tariff, 8), Decimal("0.0500"))
        breakdown = cost(matched(tariff), 25)
        self.assertEqual((breakdown.free_s, breakdown.billable_s, breakdown.cost),
                         (10, 15, Decimal("0.2000")))

    def test_free_seconds_shift_groups(self) -> None:
        """Group offsets count from the end of the free part."""
        tariff = one_rate([group(0, "1.00", 60, 60), group(60, "0.60", 60, 1)], free_seconds=30)
        self.assertEqual(price(tariff, 100), Decimal("1.1000"))

    def test_first_increment_is_minimum(self) -> None:
        """A call shorter than the first increment pays the whole increment."""
        self.assertEqual(price(one_rate([group(0, "0.30", 60, 60)]), 1), Decimal("0.3000"))

    def test_increments_from_group_start(self) -> None:
        """PB 60/6: 61 s is billed as 66 s."""
        breakdown = cost(matched(one_rate([group(0, "0.60", 60, 60),
                                           group(60, "0.60", 60, 6)])), 61)
        self.assertEqual(breakdown.cost, Decimal("0.6600"))
        self.assertEqual(breakdown.billed_s, 66)

    def test_group_fixed_fees(self) -> None:
        """A group's fixed fee is charged once D' passes its start."""
        tariff = one_rate([group(0, "0.60", 60, 60, fixed_fee="0.01"),
                           group(60, "0.60", 60, 6, fixed_fee="0.02")])
        self.assertEqual(price(tariff, 60), Decimal("0.6100"))
        self.assertEqual(price(tariff, 61), Decimal("0.6900"))

    def test_disconnect_fee_after(self) -> None:
        """The disconnect fee applies when D >= disconnect_fee_after_s."""
        tariff = one_rate([group(0, "0", 60, 1)], disconnect_fee="0.05",
                          disconnect_fee_after_s=30)
        self.assertEqual(price(tariff, 29), Decimal("0.0000"))
        self.assertEqual(price(tariff, 30), Decimal("0.0500"))

    def test_surcharge_is_percent(self) -> None:
        """C{"10"} means 10 %, of everything before it."""
        tariff = one_rate([group(0, "1", 60, 60)], connect_fee="1",
                          post_call_surcharge_pct="10")
        self.assertEqual(price(tariff, 60), Decimal("2.2000"))

    def test_max_cost_disconnect_does_not_cap(self) -> None:
        """CGR TestGetCostWithMaxCost: a long CDR is priced in full."""
        doc = document({"R": {"groups": [group(0, "1", 1, 1)]}},
                       [{"prefixes": ["49"], "rate": "R", "max_cost": "10",
                         "max_cost_strategy": "disconnect"}])
        self.assertEqual(price(load_tariff(doc), 1800), Decimal("1800.0000"))

    def test_discount_on_time_charge_only(self) -> None:
        """A volume discount reduces the time charge, not the fees."""
        tariff = one_rate([group(0, "1", 60, 60)], connect_fee="1")
        breakdown = cost(matched(tariff), 60, discount_pct=Decimal("25"))
        self.assertEqual((breakdown.discount, breakdown.cost),
                         (Decimal("0.25"), Decimal("1.7500")))

    def test_tricky_fee_left_out_on_request(self) -> None:
        """C{exclude_tricky} drops a tricky connect fee (announcements only)."""
        tariff = one_rate([group(0, "1", 60, 60)], connect_fee="1", connect_fee_tricky=True)
        self.assertEqual(price(tariff, 60, exclude_tricky=True), Decimal("1.0000"))
        self.assertEqual(price(tariff, 60), Decimal("2.0000"))

    def test_bad_duration(self) -> None:
        """Durations are whole seconds >= 0."""
        match = matched(one_rate([group(0, "1", 60, 60)]))
        for bad in (-1, Decimal("1.5"), True):
            self.assertRaises(ValueError, cost, match, bad)


class RoundingTests(SynchronousTestCase):
    """2.7: exact intermediates and one rounding step."""

    def test_methods(self) -> None:
        """The four methods on a non-tie and on ties."""
        cases = [("0.073333", {"up": "0.0734", "down": "0.0733", "half_up": "0.0733",
                               "half_even": "0.0733"}),
                 ("0.00005", {"up": "0.0001", "down": "0.0000", "half_up": "0.0001",
                              "half_even": "0.0000"}),
                 ("0.00015", {"half_even": "0.0002", "half_up": "0.0002"}),
                 ("0.5", {"up": "0.5000", "down": "0.5000"})]
        for amount, expected in cases:
            for method, result in expected.items():
                got = round_amount(Decimal(amount), Rounding(method, 4))
                self.assertEqual(str(got), result, (amount, method))

    def test_decimals(self) -> None:
        """Zero to six decimals; a fraction is rounded exactly."""
        self.assertEqual(round_amount(Decimal("1.2"), Rounding("up", 0)), Decimal(2))
        self.assertEqual(str(round_amount(Decimal(1), Rounding("up", 6), 3)), "0.333334")
        self.assertEqual(str(round_amount(Decimal(2), Rounding("down", 6), 3)), "0.666666")

    def test_entry_override(self) -> None:
        """The entry's rounding replaces the tariff's."""
        doc = document({"R": {"groups": [group(0, "0.10", 60, 1)]}},
                       [{"prefixes": ["49"], "rate": "R",
                         "rounding": {"method": "down", "decimals": 2}}],
                       rounding={"method": "up", "decimals": 6})
        breakdown = cost(matched(load_tariff(doc)), 50)
        self.assertEqual((str(breakdown.cost), breakdown.rounding), ("0.08", Rounding("down", 2)))

    def test_no_drift(self) -> None:
        """Thirds in three groups add up to exactly 0.01 (28-digit Decimal gives 0.0099)."""
        tariff = one_rate([group(0, "0.01", 3, 1), group(1, "0.01", 3, 1),
                           group(2, "0.01", 3, 1)], )
        doc = document({"R": {"groups": [group(0, "0.01", 3, 1), group(1, "0.01", 3, 1),
                                         group(2, "0.01", 3, 1)]}},
                       rounding={"method": "down", "decimals": 4})
        self.assertEqual(price(load_tariff(doc), 3), Decimal("0.0100"))
        self.assertEqual(price(tariff, 3), Decimal("0.0100"))

    def test_cgr_drift_cases(self) -> None:
        """The cases CGR's pre-rounding gets wrong come out exact here."""
        per_second = one_rate([group(0, "0.50", 60, 1)])
        self.assertEqual(price(per_second, 60), Decimal("0.5000"))
        self.assertEqual(price(one_rate([group(0, "0.1", 60, 1)]), 180), Decimal("0.3000"))
        self.assertEqual(price(one_rate([group(0, "0.7", 60, 1)]), 60), Decimal("0.7000"))


class SplitTests(SynchronousTestCase):
    """1.5 and 2.5 in C{split} mode."""

    def test_connect_fee_from_answer_rate_only(self) -> None:
        """A later rate's connect fee is never charged."""
        rates = {"DAY": {"groups": [group(0, "0.60", 60, 60)]},
                 "EVE": {"connect_fee": "5", "groups": [group(0, "0.60", 60, 60)]}}
        entries = [{"prefixes": ["49"], "rate": "DAY"},
                   {"prefixes": ["49"], "timing": "eve", "rate": "EVE", "weight": 1}]
        tariff = load_tariff(document(rates, entries, period_boundary="split",
                                      timings={"eve": {"start": "18:00:00"}}))
        breakdown = cost(matched(tariff, berlin(2024, 3, 5, 17, 59)), 120)
        self.assertEqual((breakdown.connect_fee, breakdown.cost),
                         (Decimal(0), Decimal("1.2000")))

    def test_groups_stay_call_relative(self) -> None:
        """After a boundary the new rate's group is chosen by call second."""
        rates = {"P": {"groups": [group(0, "1.00", 60, 60), group(60, "0.60", 60, 1)]},
                 "O": {"groups": [group(0, "2.00", 60, 60), group(60, "0.30", 60, 1)]}}
        entries = [{"prefixes": ["49"], "timing": "peak", "rate": "P", "weight": 1},
                   {"prefixes": ["49"], "rate": "O"}]
        tariff = load_tariff(document(rates, entries, period_boundary="split",
                                      timings={"peak": {"end": "18:00:00"}}))
        breakdown = cost(matched(tariff, berlin(2024, 3, 5, 17, 59, 30)), 90)
        self.assertEqual(breakdown.cost, Decimal("1.1500"))
        self.assertEqual([(g.rate_id, g.group) for g in breakdown.groups], [("P", 0), ("O", 1)])

    def test_gap_keeps_previous_rate(self) -> None:
        """An increment starting in a coverage gap takes the previous rate."""
        rates = {"P": {"groups": [group(0, "0.60", 60, 1)]},
                 "W": {"groups": [group(0, "6", 60, 1)]}}
        entries = [{"prefixes": ["49"], "timing": "peak", "rate": "P"},
                   {"prefixes": ["49"], "timing": "late", "rate": "W"}]
        timings = {"peak": {"start": "08:00:00", "end": "18:00:00"},
                   "late": {"start": "20:00:00", "end": "21:00:00"}}
        tariff = load_tariff(document(rates, entries, timings=timings, period_boundary="split"))
        self.assertEqual(len(tariff.warnings), 1)
        self.assertEqual(price(tariff, 60, berlin(2024, 3, 5, 17, 59, 30)), Decimal("0.6000"))

    def test_free_seconds_shift_the_clock(self) -> None:
        """Increments are placed at T0 + free_seconds + t."""
        rates = {"P": {"free_seconds": 30, "groups": [group(0, "0.60", 60, 1)]},
                 "O": {"groups": [group(0, "0", 60, 1)]}}
        entries = [{"prefixes": ["49"], "timing": "peak", "rate": "P", "weight": 1},
                   {"prefixes": ["49"], "rate": "O"}]
        tariff = load_tariff(document(rates, entries, period_boundary="split",
                                      timings={"peak": {"end": "18:00:00"}}))
        self.assertEqual(price(tariff, 60, berlin(2024, 3, 5, 17, 59, 0)), Decimal("0.3000"))

    def test_dst_spring_forward(self) -> None:
        """At 02:00 CET the clock jumps to 03:00: the cheap window ends 30 s in."""
        rates = {"N": {"groups": [group(0, "0.60", 60, 1)]},
                 "CHEAP": {"groups": [group(0, "0", 60, 1)]}}
        entries = [{"prefixes": ["49"], "rate": "N"},
                   {"prefixes": ["49"], "timing": "small", "rate": "CHEAP", "weight": 1}]
        tariff = load_tariff(document(rates, entries, period_boundary="split",
                                      timings={"small": {"end": "03:00:00"}}))
        at = dt.datetime(2024, 3, 31, 0, 59, 30, tzinfo=dt.UTC)  # 01:59:30 CET
        self.assertEqual(price(tariff, 60, at), Decimal("0.3000"))

    def test_single_candidate_is_start(self) -> None:
        """With one entry for the prefix, split equals start."""
        tariff = load_tariff(document({"R": {"groups": [group(0, "1", 60, 60)]}},
                                      period_boundary="split"))
        self.assertEqual(price(tariff, 61), Decimal("2.0000"))


class BreakdownTests(SynchronousTestCase):
    """The breakdown stored in CDRs and returned by quotes."""

    def test_as_dict_is_json(self) -> None:
        """Decimals become strings and the instant ISO text."""
        breakdown = cost(matched(peak_tariff("split"), berlin(2024, 3, 5, 17, 59, 40)), 50)
        data = json.loads(json.dumps(breakdown.as_dict()))
        self.assertEqual(data["cost"], "0.0734")
        self.assertEqual(data["rounding"], {"method": "up", "decimals": 4})
        self.assertEqual(data["answered_at"], "2024-03-05T17:59:40+01:00")
        self.assertEqual(data["groups"][1]["rate_id"], "OFF")
        self.assertEqual((data["entry"], data["prefix"], data["status"]), (0, "49", "rated"))

    def test_quote(self) -> None:
        """C{quote} looks up and prices; rejections propagate."""
        index = TariffIndex(one_rate([group(0, "1", 60, 60)]))
        self.assertEqual(quote(index, "4930", berlin(2024, 3, 5, 12), 30).cost, Decimal("1.0000"))
        self.assertRaises(DestinationRejected, quote, index, "33", berlin(2024, 3, 5, 12), 30)


class BillableDurationTests(SynchronousTestCase):
    """2.1: whole milliseconds, rounded up to whole seconds."""

    def test_rounding_up(self) -> None:
        """1000 ms is 1 s, 1001 ms is 2 s, sub-millisecond parts are dropped."""
        t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        for micros, expected in ((1_000_000, 1), (1_001_000, 2), (1_000_900, 1), (0, 0),
                                 (-5_000_000, 0), (86_400_000_001, 86400)):
            self.assertEqual(billable_duration(t0, t0 + dt.timedelta(microseconds=micros)),
                             expected)
