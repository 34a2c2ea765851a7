"""Tests for L{rating.tariff}: the document model, its loader and its checks."""

from __future__ import annotations

import copy
import datetime as dt
import json
from decimal import Decimal
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from rating.tariff import (
    Rounding,
    TariffError,
    dump_tariff,
    load_bundle,
    load_tariff,
    loads_tariff,
)
from tests.trial.rating import document, group

FULL: dict[str, Any] = {
    "timezone": "Europe/Berlin",
    "period_boundary": "split",
    "rounding": {"method": "half_even", "decimals": 2},
    "timings": {
        "peak": {"weekdays": [1, 2, 3, 4, 5], "start": "08:00:00", "end": "18:00:00"},
        "night": {"start": "18:00:00", "end": "08:00:00"},
        "xmas": {"months": [12], "monthdays": [24, 25, 26, -1], "years": [2024],
                 "dates": ["2024-12-25"]},
    },
    "rates": {
        "DAY": {"connect_fee": "0.05", "connect_fee_tricky": True,
                "groups": [group(0, "0.30", 60, 60), group(60, "0.20", 60, 6, fixed_fee="0.01")],
                "disconnect_fee": "0.02", "disconnect_fee_after_s": 30, "grace_s": 3,
                "free_seconds": 5, "min_charge": "0.10", "post_call_surcharge_pct": "10"},
        "NIGHT": {"groups": [group(0, "0.10", 60, 1)]},
    },
    "entries": [
        {"prefixes": ["4930", "4940"], "timing": "peak", "weight": 10, "rate": "DAY",
         "rounding": {"method": "up", "decimals": 4}, "max_cost": "5",
         "max_cost_strategy": "free", "effective_from": "2024-01-01",
         "effective_to": "2025-01-01T00:00:00+01:00"},
        {"prefixes": ["4930"], "timing": "night", "weight": 10, "rate": "NIGHT"},
        {"prefixes": ["4930"], "timing": "xmas", "weight": 20, "rate": "NIGHT"},
        {"prefixes": ["4930"], "weight": 0, "rate": "NIGHT"},
        {"prefixes": ["4990"], "timing": None, "blocked": True},
    ],
    "bundles": [{"id": "B1", "seconds": 600, "prefixes": ["49"], "increment_s": 60,
                 "connect_fee": "0.01", "price": "0"}],
}


def problems(doc: Any) -> tuple[str, ...]:
    """The problems L{load_tariff} reports for C{doc} (fails if it loads)."""
    try:
        load_tariff(doc)
    except TariffError as error:
        return error.problems
    raise AssertionError("the document loaded")


def with_change(path: list[Any], value: Any, base: dict[str, Any] | None = None) -> dict:
    """A copy of C{FULL} (or C{base}) with the value at C{path} replaced."""
    doc = copy.deepcopy(base or FULL)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


class LoadTests(SynchronousTestCase):
    """A valid document becomes the model with every key and default."""

    def test_full_document(self) -> None:
        """Every key of section 6 is read into the model."""
        tariff = load_tariff(FULL)
        self.assertEqual(tariff.timezone, "Europe/Berlin")
        self.assertEqual(tariff.period_boundary, "split")
        self.assertEqual(tariff.rounding, Rounding("half_even", 2))
        peak = tariff.timings["peak"]
        self.assertEqual((peak.start_s, peak.end_s, peak.weekdays),
                         (8 * 3600, 18 * 3600, frozenset({1, 2, 3, 4, 5})))
        self.assertEqual(tariff.timings["xmas"].monthdays, frozenset({24, 25, 26, -1}))
        self.assertEqual(tariff.timings["xmas"].dates, frozenset({dt.date(2024, 12, 25)}))
        day = tariff.rates["DAY"]
        self.assertEqual(day.connect_fee, Decimal("0.05"))
        self.assertTrue(day.connect_fee_tricky)
        self.assertEqual(day.groups[1].fixed_fee, Decimal("0.01"))
        self.assertEqual((day.grace_s, day.free_seconds, day.disconnect_fee_after_s), (3, 5, 30))
        self.assertEqual(day.post_call_surcharge_pct, Decimal(10))
        first = tariff.entries[0]
        self.assertEqual(first.prefixes, ("4930", "4940"))
        self.assertEqual(first.weight, Decimal(10))
        self.assertEqual(first.rounding, Rounding("up", 4))
        self.assertEqual((first.max_cost, first.max_cost_strategy), (Decimal(5), "free"))
        self.assertEqual(first.effective_from, dt.datetime(2023, 12, 31, 23, tzinfo=dt.UTC))
        self.assertEqual(first.effective_to, dt.datetime(2024, 12, 31, 23, tzinfo=dt.UTC))
        self.assertTrue(tariff.entries[4].blocked)
        self.assertIsNone(tariff.entries[4].rate)
        self.assertEqual(tariff.bundles["B1"].increment_s, 60)

    def test_defaults(self) -> None:
        """Missing optional keys take the defaults of the spec."""
        tariff = load_tariff(document({"R": {"groups": [group(0, "1", 60, 60)]}}))
        self.assertEqual(tariff.period_boundary, "start")
        self.assertEqual(tariff.rounding, Rounding("up", 4))
        rate = tariff.rates["R"]
        self.assertEqual((rate.connect_fee, rate.min_charge, rate.grace_s), (0, 0, 0))
        self.assertFalse(rate.connect_fee_tricky)
        entry = tariff.entries[0]
        self.assertEqual((entry.timing, entry.weight, entry.blocked), (None, 0, False))
        self.assertIsNone(entry.rounding)

    def test_round_trip(self) -> None:
        """Dumping and loading again gives the same tariff."""
        tariff = load_tariff(FULL)
        again = load_tariff(json.loads(json.dumps(dump_tariff(tariff))))
        self.assertEqual(again, tariff)

    def test_json_numbers_are_decimal(self) -> None:
        """JSON numbers are parsed as Decimal, never float."""
        text = json.dumps(document({"R": {"groups": [group(0, "X", 60, 60)]}}))
        tariff = loads_tariff(text.replace('"X"', "0.1"))
        self.assertEqual(tariff.rates["R"].groups[0].price, Decimal("0.1"))

    def test_toml(self) -> None:
        """A TOML document loads like JSON."""
        text = """
timezone = "UTC"
[rates.R]
connect_fee = "0.01"
groups = [{start_s = 0, price = "0.5", unit_s = 60, increment_s = 1}]
[[entries]]
prefixes = ["1"]
rate = "R"
"""
        tariff = loads_tariff(text, "toml")
        self.assertEqual(tariff.rates["R"].connect_fee, Decimal("0.01"))

    def test_syntax_error(self) -> None:
        """Unparseable text is a TariffError too."""
        self.assertRaises(TariffError, loads_tariff, "{")

    def test_end_midnight(self) -> None:
        """C{end: 00:00:00} is kept as given (a window up to midnight)."""
        doc = with_change(["timings", "night", "end"], "00:00:00")
        self.assertEqual(load_tariff(doc).timings["night"].end_s, 0)


class ValidationTests(SynchronousTestCase):
    """Every invalid value is named by its key path; all are reported at once."""

    def assertProblem(self, doc: Any, expected: str) -> None:
        """C{expected} is among the problems of C{doc}."""
        found = problems(doc)
        self.assertIn(expected, found, f"got {found}")

    def test_increment_path(self) -> None:
        """The example of the brief: a zero increment, with its full path."""
        doc = document({"R1": {"groups": [group(0, "1", 60, 60), group(60, "1", 60, 0)]}})
        self.assertProblem(doc, "rates.R1.groups[1].increment_s: must be >= 1")

    def test_unit(self) -> None:
        """C{unit_s} must be at least 1."""
        doc = document({"R": {"groups": [group(0, "1", 0, 60)]}})
        self.assertProblem(doc, "rates.R.groups[0].unit_s: must be >= 1")

    def test_negative_price(self) -> None:
        """Prices are >= 0."""
        doc = document({"R": {"groups": [group(0, "-0.1", 60, 60)]}})
        self.assertProblem(doc, "rates.R.groups[0].price: must be >= 0")

    def test_first_group_starts_at_zero(self) -> None:
        """The first group starts at second 0."""
        doc = document({"R": {"groups": [group(10, "1", 60, 60)]}})
        self.assertProblem(doc, "rates.R.groups[0].start_s: the first group must start at 0")

    def test_groups_sorted(self) -> None:
        """Groups are sorted by C{start_s} without repeats."""
        doc = document({"R": {"groups": [group(0, "1", 60, 30), group(60, "1", 60, 1),
                                         group(60, "1", 60, 1)]}})
        self.assertProblem(doc, "rates.R.groups[2].start_s: groups must be sorted by start_s, "
                                "no repeats")

    def test_increment_straddles_group(self) -> None:
        """An increment may not straddle the next group of its rate."""
        doc = document({"R": {"groups": [group(0, "1", 60, 60), group(90, "1", 60, 1)]}})
        found = problems(doc)
        self.assertEqual(len(found), 1)
        self.assertTrue(found[0].startswith("rates.R.groups[0].increment_s: 60 does not divide"))

    def test_float_refused(self) -> None:
        """A float price is refused: money is decimal strings."""
        doc = document({"R": {"groups": [group(0, 0.1, 60, 60)]}})  # type: ignore[arg-type]
        self.assertProblem(doc, "rates.R.groups[0].price: must be a decimal string")

    def test_not_a_number(self) -> None:
        """A price that is not a number names its value."""
        doc = document({"R": {"groups": [group(0, "1,5", 60, 60)]}})
        self.assertProblem(doc, "rates.R.groups[0].price: not a decimal number: '1,5'")

    def test_boolean_is_not_integer(self) -> None:
        """C{true} is not an integer."""
        doc = document({"R": {"groups": [group(0, "1", 60, 60)], "grace_s": True}})
        self.assertProblem(doc, "rates.R.grace_s: must be an integer")

    def test_unknown_keys(self) -> None:
        """Unknown keys are refused at every level."""
        doc = copy.deepcopy(FULL)
        doc["colour"] = "red"
        doc["rates"]["DAY"]["groups"][0]["per"] = 1
        doc["entries"][0]["comment"] = "x"
        doc["timings"]["peak"]["hours"] = []
        found = problems(doc)
        for expected in ("colour: unknown key", "rates.DAY.groups[0].per: unknown key",
                         "entries[0].comment: unknown key", "timings.peak.hours: unknown key"):
            self.assertIn(expected, found)

    def test_required(self) -> None:
        """Missing required keys are named."""
        found = problems({"rates": {"R": {}}, "entries": [{}]})
        for expected in ("timezone: required", "rates.R.groups: required",
                         "entries[0].prefixes: required", "entries[0].rate: required unless "
                         "blocked"):
            self.assertIn(expected, found)

    def test_timezone(self) -> None:
        """The zone must be a known IANA name."""
        self.assertProblem(with_change(["timezone"], "Mars/Olympus"),
                           "timezone: unknown IANA time zone 'Mars/Olympus'")

    def test_choices(self) -> None:
        """Enumerated values are checked."""
        doc = with_change(["period_boundary"], "middle")
        doc["rounding"]["method"] = "bankers"
        doc["entries"][0]["max_cost_strategy"] = "cut"
        found = problems(doc)
        self.assertIn("period_boundary: must be one of start, split", found)
        self.assertIn("rounding.method: must be one of up, down, half_up, half_even", found)
        self.assertIn("entries[0].max_cost_strategy: must be one of free, disconnect", found)

    def test_rounding_decimals(self) -> None:
        """At most 6 decimals: balances are micro-units."""
        self.assertProblem(with_change(["rounding", "decimals"], 7),
                           "rounding.decimals: must be <= 6")

    def test_references(self) -> None:
        """Entries name existing rates and timings."""
        doc = copy.deepcopy(FULL)
        doc["entries"][1]["rate"] = "NOPE"
        doc["entries"][1]["timing"] = "never"
        found = problems(doc)
        self.assertIn("entries[1].rate: no rate named 'NOPE'", found)
        self.assertIn("entries[1].timing: no timing named 'never'", found)

    def test_max_cost_pairs(self) -> None:
        """C{max_cost} and C{max_cost_strategy} come together."""
        doc = copy.deepcopy(FULL)
        del doc["entries"][0]["max_cost_strategy"]
        doc["entries"][1]["max_cost_strategy"] = "free"
        found = problems(doc)
        self.assertIn("entries[0].max_cost_strategy: required when max_cost is set", found)
        self.assertIn("entries[1].max_cost: required when max_cost_strategy is set", found)

    def test_effective_dates(self) -> None:
        """Dates are ISO and C{effective_to} is after C{effective_from}."""
        doc = with_change(["entries", 0, "effective_to"], "2023-06-01")
        doc["entries"][1]["effective_from"] = "yesterday"
        found = problems(doc)
        self.assertIn("entries[0].effective_to: must be after effective_from", found)
        self.assertIn("entries[1].effective_from: not an ISO date or date-time: 'yesterday'",
                      found)

    def test_timing_values(self) -> None:
        """Calendar lists and clock times are range-checked."""
        doc = copy.deepcopy(FULL)
        doc["timings"]["peak"].update(months=[0, 13], monthdays=[-2], weekdays=[8],
                                      start="24:00:00", end="25:00:00")
        doc["timings"]["night"].update(dates=["2024-02-30"], start="8:00")
        found = problems(doc)
        for expected in ("timings.peak.months[0]: must be an integer in 1..12",
                         "timings.peak.months[1]: must be an integer in 1..12",
                         "timings.peak.monthdays[0]: must be an integer in 1..31 or -1",
                         "timings.peak.weekdays[0]: must be an integer in 1..7",
                         "timings.peak.start: not a time of day",
                         "timings.peak.end: not a time of day (00:00:00..24:00:00)",
                         "timings.night.dates[0]: must be a YYYY-MM-DD date",
                         "timings.night.start: must be HH:MM:SS"):
            self.assertIn(expected, found)

    def test_prefixes(self) -> None:
        """Prefixes are a non-empty list of non-empty strings without spaces."""
        doc = with_change(["entries", 0, "prefixes"], ["49 30", ""])
        doc["entries"][1]["prefixes"] = []
        found = problems(doc)
        self.assertIn("entries[0].prefixes[0]: must be a non-empty string without spaces", found)
        self.assertIn("entries[0].prefixes[1]: must be a non-empty string without spaces", found)
        self.assertIn("entries[1].prefixes: must be a non-empty list", found)

    def test_every_problem_at_once(self) -> None:
        """One error lists every problem, one a line; nothing is loaded."""
        doc = document({"A": {"groups": [group(0, "-1", 0, 0)]}})
        doc["timezone"] = "Nowhere"
        error = self.assertRaises(TariffError, load_tariff, doc)
        self.assertEqual(len(error.problems), 4)
        self.assertEqual(str(error), "\n".join(error.problems))

    def test_bundles(self) -> None:
        """Bundles are checked; ids are unique."""
        doc = copy.deepcopy(FULL)
        doc["bundles"].append({"id": "B1", "seconds": -1, "prefixes": ["1"], "colour": 1})
        found = problems(doc)
        self.assertIn("bundles[1].seconds: must be >= 0", found)
        self.assertIn("bundles[1].colour: unknown key", found)

    def test_load_bundle(self) -> None:
        """A standalone bundle document loads with its defaults, or is refused."""
        bundle = load_bundle({"id": "B", "seconds": 60, "prefixes": ["*any"]})
        self.assertEqual((bundle.increment_s, bundle.connect_fee, bundle.price), (1, 0, 0))
        error = self.assertRaises(TariffError, load_bundle, {"id": "B", "seconds": 60})
        self.assertEqual(error.problems, ("bundle.prefixes: required",))


def periods_doc(timings: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A document with C{timings} and C{entries} over rates C{A} and C{B}."""
    rates = {"A": {"groups": [group(0, "1", 60, 60)]}, "B": {"groups": [group(0, "2", 60, 60)]}}
    return document(rates, entries, timings=timings)


class AmbiguityTests(SynchronousTestCase):
    """Entries that 1.4 could not order are refused at load time (1.1)."""

    def test_same_period_same_weight(self) -> None:
        """Two always-active entries with equal weight are ambiguous."""
        doc = periods_doc({}, [{"prefixes": ["49"], "rate": "A"},
                               {"prefixes": ["49"], "rate": "B"}])
        found = problems(doc)
        self.assertEqual(len(found), 1)
        self.assertTrue(found[0].startswith("entries[1]: ambiguous with entries[0] for prefix "
                                            "'49'"), found[0])

    def test_overlapping_weekdays(self) -> None:
        """Overlapping weekday sets with the same start are ambiguous."""
        timings = {"wd": {"weekdays": [1, 2, 3], "start": "08:00:00"},
                   "mid": {"weekdays": [3, 4], "start": "08:00:00", "end": "12:00:00"}}
        doc = periods_doc(timings, [{"prefixes": ["49"], "timing": "wd", "rate": "A"},
                                    {"prefixes": ["49"], "timing": "mid", "rate": "B"}])
        self.assertEqual(len(problems(doc)), 1)

    def test_accepted_when_orderable(self) -> None:
        """Different weight, start, weekdays or dates make entries orderable."""
        timings = {"mon": {"weekdays": [1]}, "tue": {"weekdays": [2]},
                   "eve": {"start": "18:00:00"},
                   "sunday_date": {"dates": ["2024-03-03"]}, "workdays": {"weekdays": [1, 5]}}
        cases = [
            [{"prefixes": ["49"], "rate": "A"}, {"prefixes": ["49"], "rate": "B", "weight": 1}],
            [{"prefixes": ["49"], "timing": "mon", "rate": "A"},
             {"prefixes": ["49"], "timing": "tue", "rate": "B"}],
            [{"prefixes": ["49"], "rate": "A"}, {"prefixes": ["49"], "timing": "eve",
                                                 "rate": "B"}],
            [{"prefixes": ["49"], "timing": "sunday_date", "rate": "A"},
             {"prefixes": ["49"], "timing": "workdays", "rate": "B"}],
            [{"prefixes": ["49"], "rate": "A", "effective_to": "2024-06-01"},
             {"prefixes": ["49"], "rate": "B", "effective_from": "2024-06-01"}],
            [{"prefixes": ["49"], "rate": "A"}, {"prefixes": ["4930"], "rate": "B"}],
        ]
        for entries in cases:
            load_tariff(periods_doc(timings, entries))

    def test_leap_day(self) -> None:
        """C{-1} (last day) and C{29} coincide in February of leap years."""
        timings = {"last": {"months": [2], "monthdays": [-1]},
                   "d29": {"months": [2], "monthdays": [29]},
                   "d30": {"months": [2, 4], "monthdays": [30], "weekdays": [1]}}
        doc = periods_doc(timings, [{"prefixes": ["49"], "timing": "last", "rate": "A"},
                                    {"prefixes": ["49"], "timing": "d29", "rate": "B"}])
        self.assertEqual(len(problems(doc)), 1)
        load_tariff(periods_doc(timings, [
            {"prefixes": ["49"], "timing": "d29", "rate": "A"},
            {"prefixes": ["49"], "timing": "d30", "rate": "B"}]))


class CoverageTests(SynchronousTestCase):
    """Destinations not covered 7x24 load with a warning (1.1)."""

    def test_weekday_only_plan(self) -> None:
        """A Monday-Friday plan warns about Saturday."""
        doc = periods_doc({"wd": {"weekdays": [1, 2, 3, 4, 5]}},
                          [{"prefixes": ["49"], "timing": "wd", "rate": "A"}])
        tariff = load_tariff(doc)
        self.assertEqual(len(tariff.warnings), 1)
        self.assertIn("prefixes 49:", tariff.warnings[0])
        self.assertIn("first gap Sat 00:00:00", tariff.warnings[0])

    def test_covered_week(self) -> None:
        """Peak plus a wrapping off-peak window plus the weekend cover the week."""
        timings = {"peak": {"weekdays": [1, 2, 3, 4, 5], "start": "08:00:00",
                            "end": "18:00:00"},
                   "off": {"weekdays": [1, 2, 3, 4, 5], "start": "18:00:00", "end": "08:00:00"},
                   "weekend": {"weekdays": [6, 7]}}
        doc = periods_doc(timings, [
            {"prefixes": ["49"], "timing": "peak", "rate": "A"},
            {"prefixes": ["49"], "timing": "off", "rate": "B"},
            {"prefixes": ["49"], "timing": "weekend", "rate": "B"}])
        self.assertEqual(load_tariff(doc).warnings, ())

    def test_hole_in_the_day(self) -> None:
        """A missing hour is reported with its start."""
        doc = periods_doc({"am": {"end": "12:00:00"}, "pm": {"start": "13:00:00"}}, [
            {"prefixes": ["49"], "timing": "am", "rate": "A"},
            {"prefixes": ["49"], "timing": "pm", "rate": "B"}])
        self.assertIn("first gap Mon 12:00:00", load_tariff(doc).warnings[0])
