"""Tests for L{rating.csv_rates}: importing a rate deck from CSV."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from twisted.trial.unittest import SynchronousTestCase

from rating.cost import cost
from rating.csv_rates import import_rates_csv
from rating.lookup import TariffIndex
from rating.tariff import TariffError
from tests.trial.rating import berlin

DECK = """prefix,description,price,intervals,effective_date
4930,Germany Berlin,0.02,60/6,2024-01-01
49,Germany,0.05,60/60,
4915,Germany Mobile,0.12,1/1,2024-01-01T00:00:00+01:00
"""


def problems(text: str, **options: object) -> tuple[str, ...]:
    """The problems the import reports (fails if the file is accepted)."""
    options.setdefault("timezone", "Europe/Berlin")
    try:
        import_rates_csv(text, **options)  # type: ignore[arg-type]
    except TariffError as error:
        return error.problems
    raise AssertionError("the file was accepted")


class ImportTests(SynchronousTestCase):
    """A valid deck becomes a loaded tariff."""

    def test_basic_deck(self) -> None:
        """Prefix, description, price, intervals and effective date."""
        deck = import_rates_csv(DECK, timezone="Europe/Berlin")
        self.assertEqual(deck.descriptions, {"4930": "Germany Berlin", "49": "Germany",
                                             "4915": "Germany Mobile"})
        self.assertEqual(deck.rows, (2, 3, 4))
        rate = deck.tariff.rates[deck.tariff.entries[0].rate]
        self.assertEqual([(g.start_s, g.price, g.unit_s, g.increment_s) for g in rate.groups],
                         [(0, Decimal("0.02"), 60, 60), (60, Decimal("0.02"), 60, 6)])
        self.assertEqual(len(deck.tariff.rates[deck.tariff.entries[1].rate].groups), 1)
        self.assertEqual(deck.tariff.entries[0].effective_from,
                         dt.datetime(2023, 12, 31, 23, tzinfo=dt.UTC))
        self.assertEqual(deck.document["timezone"], "Europe/Berlin")

    def test_priced(self) -> None:
        """The imported tariff rates calls: 61 s on 60/6 is 66 s."""
        deck = import_rates_csv(DECK, timezone="Europe/Berlin")
        match = TariffIndex(deck.tariff).match("4930123", berlin(2024, 3, 5, 12))
        self.assertEqual(cost(match, 61).cost, Decimal("0.0220"))

    def test_split_interval_columns(self) -> None:
        """C{first_interval}/C{next_interval}, C{next_price} and C{unit_s}."""
        text = "prefix,price,next_price,first_interval,next_interval,unit_s\n1,0.60,0.30,60,6,60\n"
        rate = next(iter(import_rates_csv(text, timezone="UTC").tariff.rates.values()))
        self.assertEqual([(g.start_s, g.price, g.increment_s) for g in rate.groups],
                         [(0, Decimal("0.60"), 60), (60, Decimal("0.30"), 6)])

    def test_optional_columns(self) -> None:
        """Every optional tariff column reaches the rate or the entry."""
        text = ("prefix,price,intervals,connect_fee,connect_fee_tricky,disconnect_fee,"
                "disconnect_fee_after_s,grace_s,free_seconds,min_charge,post_call_surcharge_pct,"
                "timing,weight,max_cost,max_cost_strategy,rounding_method,rounding_decimals,"
                "effective_to\n"
                "1,0.1,60/6,0.05,yes,0.02,30,3,5,0.2,10,peak,5,9,free,half_up,2,2030-01-01\n")
        deck = import_rates_csv(text, timezone="UTC", timings={"peak": {"start": "08:00:00"}})
        entry = deck.tariff.entries[0]
        rate = deck.tariff.rates[entry.rate]
        self.assertEqual((rate.connect_fee, rate.connect_fee_tricky, rate.disconnect_fee,
                          rate.disconnect_fee_after_s, rate.grace_s, rate.free_seconds,
                          rate.min_charge, rate.post_call_surcharge_pct),
                         (Decimal("0.05"), True, Decimal("0.02"), 30, 3, 5, Decimal("0.2"),
                          Decimal(10)))
        self.assertEqual((entry.timing, entry.weight, entry.max_cost, entry.max_cost_strategy),
                         ("peak", Decimal(5), Decimal(9), "free"))
        self.assertEqual((entry.rounding.method, entry.rounding.decimals), ("half_up", 2))
        self.assertEqual(entry.effective_to, dt.datetime(2030, 1, 1, tzinfo=dt.UTC))

    def test_shared_rates(self) -> None:
        """Rows with identical pricing share one rate."""
        text = "prefix,price,intervals\n1,0.1,60/6\n2,0.1,60/6\n3,0.2,60/6\n"
        self.assertEqual(len(import_rates_csv(text, timezone="UTC").tariff.rates), 2)

    def test_blocked_rows(self) -> None:
        """A blocked row needs no price."""
        text = "prefix,price,intervals,blocked\n1,0.1,60/6,\n1900,,,true\n"
        entry = import_rates_csv(text, timezone="UTC").tariff.entries[1]
        self.assertTrue(entry.blocked)
        self.assertIsNone(entry.rate)

    def test_header_forms(self) -> None:
        """Headers are case-insensitive, a BOM is ignored, blank lines skipped."""
        text = "\ufeffPrefix , PRICE,Intervals\n\n1,0.1,60/6\n"
        self.assertEqual(len(import_rates_csv(text, timezone="UTC").tariff.entries), 1)

    def test_semicolons(self) -> None:
        """Another delimiter may be given."""
        text = "prefix;price;intervals\n1;0,1;60/6\n"
        self.assertEqual(problems(text, delimiter=";"),
                         ("row 2, column price: not a decimal number: '0,1'",))

    def test_a2b_blocks(self) -> None:
        """With C{strict_blocks} the first interval is a multiple of the next."""
        text = "prefix,price,intervals\n1,0.1,30/20\n"
        import_rates_csv(text, timezone="UTC")
        self.assertEqual(problems(text, strict_blocks=True),
                         ("row 2, column intervals: first interval 30 is not a multiple of the "
                          "next interval 20 (required for A2B decks)",))


class RejectionTests(SynchronousTestCase):
    """Every bad cell is named by row and column; any rejects the whole file."""

    def test_every_bad_cell(self) -> None:
        """All problems of all rows are listed together."""
        text = ("prefix,price,intervals,effective_date,connect_fee,grace_s,blocked\n"
                "4930,0.02,60/6,2024-01-01,0.01,0,\n"
                "44,abc,60/x,2024-13-01,-1,1.5,maybe\n"
                ",0.1,60/60,,,,\n")
        found = problems(text)
        self.assertEqual(set(found), {
            "row 3, column price: not a decimal number: 'abc'",
            "row 3, column intervals: must be FIRST/NEXT seconds, e.g. 60/6",
            "row 3, column effective_from: not an ISO date or date-time: '2024-13-01'",
            "row 3, column connect_fee: must be >= 0",
            "row 3, column grace_s: must be an integer, not '1.5'",
            "row 3, column blocked: must be true or false",
            "row 4, column prefix: must be a non-empty string without spaces",
        })

    def test_header_problems(self) -> None:
        """Unknown, repeated and missing columns are reported on row 1."""
        found = problems("prefix,colour,colour,description\n1,a,b,c\n")
        self.assertEqual(found, ("row 1, column colour: unknown column",
                                 "row 1, column colour: repeated",
                                 "row 1, column price: required",
                                 "row 1, column intervals: required (or first_interval and "
                                 "next_interval)"))

    def test_missing_cells(self) -> None:
        """Required cells may not be empty; extra cells are refused."""
        found = problems("prefix,price,first_interval,next_interval\n1,,60,\n2,1,1,1,9\n")
        self.assertEqual(found, ("row 2, column price: required",
                                 "row 2, column next_interval: required",
                                 "row 3: 5 cells for 4 columns"))

    def test_cross_row_ambiguity(self) -> None:
        """Two rows for one prefix with nothing to order them name both rows."""
        found = problems("prefix,price,intervals\n49,0.1,60/6\n49,0.2,1/1\n")
        self.assertEqual(len(found), 1)
        self.assertTrue(found[0].startswith("row 3: ambiguous with row 2 for prefix '49'"))

    def test_cross_row_entry_rule(self) -> None:
        """A loader rule on an entry is reported by row and column."""
        found = problems("prefix,price,intervals,max_cost\n49,0.1,60/6,5\n")
        self.assertEqual(found, ("row 2, column max_cost_strategy: required when max_cost is "
                                 "set",))

    def test_unknown_timing(self) -> None:
        """The timing column names a timing passed in."""
        found = problems("prefix,price,intervals,timing\n49,0.1,60/6,peak\n")
        self.assertEqual(found, ("row 2, column timing: no timing named 'peak'",))

    def test_empty_and_bad_options(self) -> None:
        """An empty file, a bad zone or period boundary are refused."""
        self.assertEqual(problems(""), ("row 1: the file is empty (a header row is required)",))
        self.assertEqual(problems(DECK, timezone="Nowhere/City"),
                         ("timezone: unknown IANA time zone 'Nowhere/City'",))
        self.assertEqual(problems(DECK, period_boundary="end"),
                         ("period_boundary: must be one of start, split",))
