"""Property tests (hypothesis) for the rating layer.

Generated tariffs cover one to three groups, every fee and adjustment, both
period boundaries (a random peak window, wrapping or not, over an always
active off-peak entry), every rounding method and answer instants spread
over a year in Europe/Berlin (so across DST changes).  The properties:

* a longer call never costs less (monotonicity, 2.5), with or without bundles;
* C{cost(max_duration(balance)) <= balance}, and C{max_duration} is the
  largest such duration: one second more costs more than the limit unless
  the cap was reached (3.2); a refused call's minimum call is unaffordable;
* the announced duration is never shorter than the enforced one;
* dump/load round-trips; lookup equals a naive longest-prefix scan;
* the one rounding step is within one unit, in its method's direction.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rating.bundles import HeldBundle
from rating.cost import cost, round_amount
from rating.duration import max_duration
from rating.lookup import DestinationRejected, Match, TariffIndex
from rating.tariff import Bundle, Rounding, dump_tariff, load_tariff
from tests.trial.rating import BERLIN, document

SETTINGS = settings(max_examples=150, deadline=None, database=None)
CAP_S = 2400


def money(high: int = 200, places: int = 4) -> st.SearchStrategy[Decimal]:
    """Decimal amounts from 0 to C{high / 100} with C{places} decimals."""
    scale = 10 ** places
    return st.integers(0, high * scale // 100).map(lambda n: Decimal(n) / scale)


@st.composite
def groups(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One to three valid groups (each length a multiple of its increment)."""
    out, start = [], 0
    for _ in range(draw(st.integers(1, 3))):
        increment = draw(st.sampled_from([1, 6, 10, 30, 60]))
        out.append({"start_s": start, "price": str(draw(money(300))),
                    "unit_s": draw(st.sampled_from([1, 60, 60, 60])),
                    "increment_s": increment,
                    "fixed_fee": str(draw(st.sampled_from([Decimal(0), Decimal("0.01")])))})
        start += increment * draw(st.integers(1, 10))
    return out


@st.composite
def rates(draw: st.DrawFn) -> dict[str, Any]:
    """A rate with random groups, fees and adjustments."""
    return {"groups": draw(groups()), "connect_fee": str(draw(money(50))),
            "connect_fee_tricky": draw(st.booleans()),
            "disconnect_fee": str(draw(money(20))),
            "disconnect_fee_after_s": draw(st.integers(0, 120)),
            "grace_s": draw(st.integers(0, 10)), "free_seconds": draw(st.integers(0, 40)),
            "min_charge": str(draw(money(80))),
            "post_call_surcharge_pct": str(draw(st.integers(0, 50)))}


def clock(seconds: int) -> str:
    """Seconds of the day as HH:MM:SS."""
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@st.composite
def tariffs(draw: st.DrawFn) -> dict[str, Any]:
    """A tariff document: peak and off-peak entries on prefix 49."""
    peak_entry: dict[str, Any] = {"prefixes": ["49"], "timing": "peak", "rate": "PEAK",
                                  "weight": 1}
    strategy = draw(st.sampled_from([None, "free", "disconnect"]))
    if strategy is not None:
        peak_entry.update(max_cost=str(draw(money(500))), max_cost_strategy=strategy)
    start = draw(st.integers(0, 86399))
    end = draw(st.integers(0, 86400))
    timing = {"start": clock(start), "end": clock(end) if end < 86400 else "24:00:00",
              "weekdays": draw(st.lists(st.integers(1, 7), max_size=3, unique=True))}
    return document({"PEAK": draw(rates()), "OFF": draw(rates())},
                    [peak_entry, {"prefixes": ["49"], "rate": "OFF"}],
                    timings={"peak": timing},
                    period_boundary=draw(st.sampled_from(["start", "split"])),
                    rounding={"method": draw(st.sampled_from(["up", "down", "half_up",
                                                              "half_even"])),
                              "decimals": draw(st.integers(0, 6))})


instants = st.integers(0, 365 * 86400).map(
    lambda s: dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=s))


@st.composite
def matches(draw: st.DrawFn) -> Match:
    """A match on a generated tariff at a generated instant."""
    tariff = load_tariff(draw(tariffs()))
    return TariffIndex(tariff).match("4930123456", draw(instants))


@st.composite
def holdings(draw: st.DrawFn) -> list[HeldBundle]:
    """Zero to two bundles for prefix 49."""
    out = []
    for i in range(draw(st.integers(0, 2))):
        bundle = Bundle(f"B{i}", 0, ("49",), draw(st.sampled_from([1, 20, 60])),
                        draw(money(10)), draw(money(30)))
        out.append(HeldBundle(bundle, draw(st.integers(0, 300))))
    return out


def limit_of(match: Match, balance: Decimal) -> Decimal:
    """The balance, or C{max_cost} when C{disconnect} makes it lower."""
    entry = match.entry
    if entry.max_cost is not None and entry.max_cost_strategy == "disconnect":
        return min(balance, entry.max_cost)
    return balance


class MonotonicityTests(SynchronousTestCase):
    """2.5: cost is non-decreasing in the duration."""

    @SETTINGS
    @given(matches(), st.integers(0, 3000), st.integers(1, 600))
    def test_longer_never_cheaper(self, match: Match, duration: int, extra: int) -> None:
        """C{cost(D + k) >= cost(D)} for every generated tariff and instant."""
        self.assertGreaterEqual(cost(match, duration + extra).cost, cost(match, duration).cost)

    @SETTINGS
    @given(matches(), holdings(), st.integers(0, 1500), st.integers(1, 300), money(50))
    def test_with_bundles_and_discount(self, match: Match, bundles: list[HeldBundle],
                                       duration: int, extra: int, pct: Decimal) -> None:
        """Bundles and a discount keep cost monotone."""
        pct = min(pct * 2, Decimal(100))
        short = cost(match, duration, bundles=bundles, discount_pct=pct).cost
        long = cost(match, duration + extra, bundles=bundles, discount_pct=pct).cost
        self.assertGreaterEqual(long, short)

    @SETTINGS
    @given(matches(), st.integers(1, 3000))
    def test_tricky_never_dearer(self, match: Match, duration: int) -> None:
        """Leaving tricky fees out never raises a cost."""
        self.assertLessEqual(cost(match, duration, exclude_tricky=True).cost,
                             cost(match, duration).cost)


class MaxDurationPropertyTests(SynchronousTestCase):
    """3.2: the maximum duration is affordable and maximal."""

    @SETTINGS
    @given(matches(), holdings(), money(3000))
    def test_affordable_and_largest(self, match: Match, bundles: list[HeldBundle],
                                    balance: Decimal) -> None:
        """cost(max) <= balance; cost(max + 1) > limit unless capped; refusals
        are exactly the calls whose minimum call is unaffordable."""
        result = max_duration(match, balance, max_call_duration_s=CAP_S,
                              free_call_duration_s=CAP_S // 2, bundles=bundles)
        limit = limit_of(match, balance)

        def price(seconds: int) -> Decimal:
            return cost(match, seconds, bundles=bundles).cost

        minimum = price(match.rate.grace_s + 1)
        if not result.allowed:
            self.assertGreater(minimum, limit)
            return
        self.assertLessEqual(minimum, limit)
        self.assertLessEqual(price(result.seconds), balance)
        self.assertLessEqual(price(result.seconds), limit)
        self.assertEqual(result.cost, price(result.seconds))
        if result.seconds < result.cap_s:
            self.assertGreater(price(result.seconds + 1), limit)
        else:
            self.assertEqual(result.limited_by, "cap")
        self.assertGreaterEqual(result.announced_s, result.seconds)
        self.assertLessEqual(result.announced_s, result.cap_s)


class RoundTripTests(SynchronousTestCase):
    """The document format loses nothing."""

    @SETTINGS
    @given(tariffs())
    def test_dump_load(self, doc: dict[str, Any]) -> None:
        """C{load(dump(t)) == t}."""
        tariff = load_tariff(doc)
        self.assertEqual(load_tariff(dump_tariff(tariff)), tariff)


class LookupPropertyTests(SynchronousTestCase):
    """The index agrees with a naive longest-prefix scan."""

    @SETTINGS
    @given(st.lists(st.text("0123", min_size=1, max_size=5), min_size=1, max_size=30,
                    unique=True),
           st.lists(st.text("0123", min_size=0, max_size=7), min_size=1, max_size=20),
           st.booleans())
    def test_longest_prefix(self, prefixes: list[str], numbers: list[str], any_: bool) -> None:
        """Every number matches the longest prefix that starts it (or C{*any})."""
        entries = [{"prefixes": [p], "rate": "R"} for p in prefixes]
        if any_:
            entries.append({"prefixes": ["*any"], "rate": "R"})
        rates = {"R": {"groups": [{"start_s": 0, "price": "1", "unit_s": 60,
                                   "increment_s": 60}]}}
        index = TariffIndex(load_tariff(document(rates, entries)))
        at = dt.datetime(2024, 6, 1, tzinfo=BERLIN)
        for number in numbers:
            expected = max((p for p in prefixes if number.startswith(p)), key=len,
                           default="*any" if any_ else None)
            try:
                got: str | None = index.match(number, at).prefix
            except DestinationRejected:
                got = None
            self.assertEqual(got, expected)


class RoundingPropertyTests(SynchronousTestCase):
    """2.7: one rounding step, within one unit, in the method's direction."""

    @SETTINGS
    @given(st.integers(0, 10**12), st.integers(1, 3600), st.integers(0, 6),
           st.sampled_from(["up", "down", "half_up", "half_even"]))
    def test_within_one_unit(self, numerator: int, denominator: int, decimals: int,
                             method: str) -> None:
        """C{|rounded - exact| < 10^-decimals}; up never below, down never above."""
        amount = Decimal(numerator).scaleb(-6)
        rounded = round_amount(amount, Rounding(method, decimals), denominator)
        # (rounded - amount / denominator) in units of 10^-decimals, times denominator
        diff = rounded.scaleb(decimals) * denominator - amount * 10**decimals
        self.assertLess(abs(diff), denominator)
        self.assertEqual(rounded.as_tuple().exponent, -decimals)
        if method == "up":
            self.assertGreaterEqual(diff, 0)
        elif method == "down":
            self.assertLessEqual(diff, 0)
        else:
            self.assertLessEqual(abs(diff) * 2, denominator)
