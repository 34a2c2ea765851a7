"""L{plugins.trunking.blend}: sales tariffs from vendor decks (rating.md 4.4).

Three vendor decks for the UK and France: the N-th cheapest (and the
averages), margins, clamps and the markup floor, rounding, the coarsest
increments and highest connect fee, per-vendor longest prefixes, blocked
and uncovered prefixes, and the document (loaded and quoted back).  A
property: with non-negative margins the sell price is never below the
base, and the document always loads.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from plugins.trunking.blend import Blend, BlendOptions, VendorDeck, blend, code_deck
from rating.cost import quote
from rating.lookup import TariffIndex
from rating.tariff import Rounding, load_tariff
from tests.trial.plugins.trunking.decks import START, tariff

#: UK mobile (4477) is dearer than the UK (44) at A; B prices only 44 (30/6,
#: a connect fee); C prices the whole of zone 4 (and France) 60/60.
A = VendorDeck("alpha", tariff(("44", "0.0100"), ("4477", "0.0300"), ("33", "0.0200")))
B = VendorDeck("bravo", tariff(("44", "0.0120", 30, 6, "0.0100")), Decimal(3))
C = VendorDeck("charlie", tariff(("4", "0.0150"), ("33", "0.0100")))


def sells(result: Blend) -> dict[str, Decimal]:
    """The sell price of each prefix."""
    return {d.prefix: d.sell for d in result.destinations}


class DepthTests(SynchronousTestCase):
    """Which vendor prices make the base."""

    def test_cheapest(self) -> None:
        """Depth 1: the cheapest vendor per prefix, at cost (no margin)."""
        result = blend([A, B, C], START)
        self.assertEqual(sells(result), {"33": Decimal("0.0100"), "4": Decimal("0.0150"),
                                         "44": Decimal("0.0100"), "4477": Decimal("0.0120")})
        uk = {d.prefix: d for d in result.destinations}["4477"]
        self.assertEqual([(v.vendor, v.matched_prefix, v.per_minute) for v in uk.vendors],
                         [("bravo", "44", Decimal("0.0120")),
                          ("charlie", "4", Decimal("0.0150")),
                          ("alpha", "4477", Decimal("0.0300"))])
        self.assertEqual((uk.used, uk.base), (1, Decimal("0.0120")))

    def test_nth_cheapest(self) -> None:
        """Depth 2: the second cheapest; zone 4 has one vendor and is short."""
        result = blend([A, B, C], START, BlendOptions(depth=2))
        self.assertEqual(sells(result), {"33": Decimal("0.0200"), "4": Decimal("0.0150"),
                                         "44": Decimal("0.0120"), "4477": Decimal("0.0150")})
        self.assertEqual(result.short, ("4",))
        self.assertEqual(result.uncovered, ())

    def test_averages(self) -> None:
        """average: the mean of the two cheapest; weighted: by vendor weight
        (bravo 3, charlie 1: (3 x 0.012 + 0.015) / 4 = 0.01275 -> up 0.0128)."""
        plain = blend([A, B, C], START, BlendOptions(depth=2, method="average"))
        self.assertEqual(sells(plain)["4477"], Decimal("0.0135"))
        weighted = blend([A, B, C], START, BlendOptions(depth=2, method="weighted"))
        self.assertEqual(sells(weighted)["4477"], Decimal("0.0128"))
        self.assertEqual({d.prefix: d.base for d in weighted.destinations}["4477"],
                         Decimal("0.01275"))
        nobody = [VendorDeck(v.name, v.tariff, Decimal(0)) for v in (A, B)]
        self.assertEqual(sells(blend(nobody, START, BlendOptions(depth=2, method="weighted")))
                         ["44"], Decimal("0.0110"))


class MarginTests(SynchronousTestCase):
    """Margins, clamps and the one rounding."""

    def test_percent_and_absolute(self) -> None:
        """4477: 0.012 x 1.10 + 0.001 = 0.0142; 44: 0.010 x 1.10 + 0.001 = 0.0120."""
        result = blend([A, B, C], START, BlendOptions(margin_pct=Decimal("10"),
                                                      margin_abs=Decimal("0.001")))
        self.assertEqual(sells(result)["4477"], Decimal("0.0142"))
        self.assertEqual(sells(result)["44"], Decimal("0.0120"))

    def test_rounding(self) -> None:
        """0.0100 x 1.0333 = 0.010333: up 0.0104, half_up 0.0103, 2 decimals up 0.02."""
        pct = Decimal("3.33")
        up = blend([A], START, BlendOptions(margin_pct=pct))
        self.assertEqual(sells(up)["44"], Decimal("0.0104"))
        half = blend([A], START, BlendOptions(margin_pct=pct, rounding=Rounding("half_up", 4)))
        self.assertEqual(sells(half)["44"], Decimal("0.0103"))
        cents = blend([A], START, BlendOptions(margin_pct=pct, rounding=Rounding("up", 2)))
        self.assertEqual(sells(cents)["44"], Decimal("0.02"))

    def test_rounding_never_below_the_floor(self) -> None:
        """A markup of 0.00004 on 0.0100 rounded half_up would be 0.0100,
        below cost plus markup: it is rounded up instead (0.0101)."""
        result = blend([A], START, BlendOptions(min_markup_abs=Decimal("0.00004"),
                                                rounding=Rounding("half_up", 4)))
        self.assertEqual(sells(result)["44"], Decimal("0.0101"))
        down = blend([A], START, BlendOptions(margin_pct=Decimal("10"),
                                              rounding=Rounding("down", 2)))
        self.assertEqual(sells(down)["44"], Decimal("0.01"))

    def test_clamps(self) -> None:
        """min_sell lifts, max_sell caps, the markup floor beats max_sell."""
        options = BlendOptions(margin_pct=Decimal("100"), min_sell=Decimal("0.025"),
                               max_sell=Decimal("0.04"))
        self.assertEqual(sells(blend([A], START, options)),
                         {"33": Decimal("0.0400"), "44": Decimal("0.0250"),
                          "4477": Decimal("0.0400")})
        floor = BlendOptions(max_sell=Decimal("0.02"), min_markup_abs=Decimal("0.005"))
        self.assertEqual(sells(blend([A], START, floor))["4477"], Decimal("0.0350"))

    def test_bad_options(self) -> None:
        """Out-of-range options, no vendor, or a naive instant are refused."""
        for options in (BlendOptions(depth=0), BlendOptions(method="median"),
                        BlendOptions(margin_pct=Decimal(-1)),
                        BlendOptions(min_sell=Decimal(2), max_sell=Decimal(1))):
            self.assertRaises(ValueError, blend, [A], START, options)
        self.assertRaises(ValueError, blend, [], START)
        self.assertRaises(ValueError, blend, [A], START.replace(tzinfo=None))


class DocumentTests(SynchronousTestCase):
    """The sales tariff document."""

    def test_loads_and_quotes_back(self) -> None:
        """The document loads; a quote on it costs the sell price per minute;
        equal rates are shared."""
        result = blend([A, B, C], START, BlendOptions(depth=2, margin_pct=Decimal("20")))
        document = result.document
        sales = load_tariff(document)
        index = TariffIndex(sales)
        for d in result.destinations:
            breakdown = quote(index, d.prefix + "123456", START, 60)
            self.assertEqual(breakdown.prefix, d.prefix)
            self.assertEqual(sales.rates[breakdown.rate_id].groups[0].price, d.sell)
        self.assertEqual(sorted(p for e in document["entries"] for p in e["prefixes"]),
                         ["33", "4", "44", "4477"])
        self.assertEqual(len(document["rates"]), len({repr(r) for r in
                                                      document["rates"].values()}))

    def test_increments_and_fees(self) -> None:
        """Selling 4477 at depth 2 (bravo 30/6 + 0.01, charlie 60/60): 60/60
        with connect fee 0.01; 44 at depth 1 (alpha only 60/60): no fee."""
        result = blend([A, B, C], START, BlendOptions(depth=2))
        rates = result.document["rates"]
        by_prefix = {d.prefix: rates[d.rate_id] for d in result.destinations}
        self.assertEqual(by_prefix["4477"], {
            "groups": [{"start_s": 0, "price": "0.0150", "unit_s": 60, "increment_s": 60}],
            "connect_fee": "0.0100"})
        fine = VendorDeck("fine", tariff(("44", "0.0100", 1, 1)))
        mixed = VendorDeck("mixed", tariff(("44", "0.0200", 30, 6)))
        rate = blend([fine, mixed], START, BlendOptions(depth=2)).document["rates"]["S1"]
        self.assertEqual(rate["groups"], [
            {"start_s": 0, "price": "0.0200", "unit_s": 60, "increment_s": 30},
            {"start_s": 30, "price": "0.0200", "unit_s": 60, "increment_s": 6}])

    def test_document_shape(self) -> None:
        """Zone, rounding and effective date as asked; entries in deck order."""
        effective = dt.datetime(2024, 7, 1, tzinfo=dt.UTC)
        result = blend([A, C], START, BlendOptions(timezone="Europe/London",
                                                   tariff_rounding=Rounding("half_up", 2),
                                                   effective_from=effective),
                       prefixes=["4477", "44", "4477"])
        document = result.document
        self.assertEqual((document["timezone"], document["period_boundary"],
                          document["rounding"]),
                         ("Europe/London", "start", {"method": "half_up", "decimals": 2}))
        self.assertEqual(document["entries"], [
            {"prefixes": ["4477"], "rate": "S1", "effective_from": "2024-07-01T00:00:00+00:00"},
            {"prefixes": ["44"], "rate": "S2", "effective_from": "2024-07-01T00:00:00+00:00"}])
        self.assertEqual(load_tariff(document).entries[0].effective_from, effective)

    def test_uncovered_and_blocked(self) -> None:
        """A deck prefix nobody prices is reported and left out; a vendor that
        blocks a prefix does not cover it."""
        blocker = VendorDeck("blocker", tariff(("44", "0.0010"), blocked=("4477",)))
        result = blend([blocker, A], START, prefixes=["4477", "44", "1", "4"])
        self.assertEqual(result.uncovered, ("1", "4"))
        self.assertEqual(sells(result), {"4477": Decimal("0.0300"), "44": Decimal("0.0010")})
        uk = result.destinations[0]
        self.assertEqual((uk.blocked, [v.vendor for v in uk.vendors]), (("blocker",), ["alpha"]))
        self.assertNotIn("1", [p for e in result.document["entries"] for p in e["prefixes"]])

    def test_units_other_than_minutes(self) -> None:
        """Prices per second or per 7 s are compared exactly per minute."""
        per_second = VendorDeck("s", load_tariff({"timezone": "UTC", "rates": {"R": {
            "groups": [{"start_s": 0, "price": "0.0002", "unit_s": 1, "increment_s": 1}]}},
            "entries": [{"prefixes": ["44"], "rate": "R"}]}))
        per_seven = VendorDeck("7", load_tariff({"timezone": "UTC", "rates": {"R": {
            "groups": [{"start_s": 0, "price": "0.0014", "unit_s": 7, "increment_s": 7}]}},
            "entries": [{"prefixes": ["44"], "rate": "R"}]}))
        result = blend([per_second, per_seven], START)
        self.assertEqual([(v.vendor, v.per_minute) for v in result.destinations[0].vendors],
                         [("7", Decimal("0.012")), ("s", Decimal("0.012"))])
        self.assertEqual(sells(result)["44"], Decimal("0.0120"))
        odd = VendorDeck("odd", load_tariff({"timezone": "UTC", "rates": {"R": {
            "groups": [{"start_s": 0, "price": "0.001", "unit_s": 7, "increment_s": 7}]}},
            "entries": [{"prefixes": ["44"], "rate": "R"}]}))
        self.assertEqual(sells(blend([odd], START))["44"], Decimal("0.0086"))

    def test_code_deck(self) -> None:
        """The default deck: every vendor prefix but the catch-all, sorted."""
        anywhere = VendorDeck("any", tariff(("*any", "0.5"), ("44", "0.1")))
        self.assertEqual(code_deck([A, anywhere, C]), ["33", "4", "44", "4477"])
        self.assertEqual(code_deck([VendorDeck("i", TariffIndex(C.tariff))]),  # type: ignore[arg-type]
                         ["33", "4"])


_PRICE = st.decimals(min_value=Decimal("0"), max_value=Decimal("2"), places=5)


@st.composite
def _decks(draw: Any) -> list[VendorDeck]:
    """One to four vendors pricing some of a few prefixes."""
    prefixes = ["1", "12", "123", "2", "21"]
    decks = []
    for i in range(draw(st.integers(1, 4))):
        chosen = draw(st.lists(st.sampled_from(prefixes), min_size=1, unique=True))
        rows = [(p, str(draw(_PRICE)), draw(st.sampled_from([1, 30, 60])),
                 draw(st.sampled_from([1, 6, 60])), str(draw(_PRICE))) for p in chosen]
        decks.append(VendorDeck(f"v{i}", tariff(*rows), Decimal(draw(st.integers(0, 5)))))
    return decks


class PropertyTests(SynchronousTestCase):
    """Invariants of any blend."""

    @settings(max_examples=150, deadline=None)
    @given(_decks(), st.integers(1, 4), st.sampled_from(["depth", "average", "weighted"]),
           st.decimals(min_value=0, max_value=50, places=2),
           st.sampled_from(["up", "down", "half_up", "half_even"]), st.integers(0, 6))
    def test_never_below_cost(self, decks: list[VendorDeck], depth: int, method: str,
                              pct: Decimal, rounding: str, decimals: int) -> None:
        """Sell >= base, connect fee >= each used vendor's, increments no
        finer than any used vendor's; every prefix is priced or uncovered;
        the document loads."""
        result = blend(decks, START, BlendOptions(depth=depth, method=method, margin_pct=pct,
                                                  rounding=Rounding(rounding, decimals)))
        load_tariff(result.document)
        for d in result.destinations:
            self.assertGreaterEqual(d.sell, d.base)
            self.assertEqual(d.sell, d.sell.quantize(Decimal(1).scaleb(-decimals)))
            used = d.vendors[:d.used]
            if method == "depth":
                self.assertEqual(d.base, used[-1].per_minute)
            rate = result.document["rates"][d.rate_id]
            groups = rate["groups"]
            self.assertGreaterEqual(Decimal(rate.get("connect_fee", "0")),
                                    max(v.connect_fee for v in used))
            self.assertTrue(all(groups[0]["increment_s"] >= v.first_increment_s
                                and groups[-1]["increment_s"] >= v.next_increment_s
                                for v in used))
        priced = {d.prefix for d in result.destinations}
        self.assertEqual(priced | set(result.uncovered), set(code_deck(decks)))
        self.assertFalse(priced & set(result.uncovered))
