"""Tests for L{rating.lookup}: longest prefix, effective dates, periods in the
tariff's zone (including windows that wrap midnight and DST) and precedence."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from twisted.trial.unittest import SynchronousTestCase

from rating.lookup import (
    BLOCKED_DESTINATION,
    UNAUTHORIZED_DESTINATION,
    DestinationRejected,
    TariffIndex,
    period_active,
    window_distance,
)
from rating.tariff import Entry, Rate, RateGroup, Rounding, Tariff, Timing, load_tariff
from tests.trial.rating import BERLIN, berlin, document, group

RATES = {name: {"groups": [group(0, price, 60, 60)]}
         for name, price in (("A", "1"), ("B", "2"), ("C", "3"), ("D", "4"))}


def index(entries: list[dict[str, Any]], timings: dict[str, Any] | None = None,
          timezone: str = "Europe/Berlin") -> TariffIndex:
    """An index over rates A-D and C{entries}."""
    doc = document(RATES, entries, timings=timings or {}, timezone=timezone)
    return TariffIndex(load_tariff(doc))


def rate_of(idx: TariffIndex, number: str, at: dt.datetime) -> str:
    """The id of the rate selected for C{number} at C{at}, or the reject reason."""
    try:
        return idx.match(number, at).rate.id
    except DestinationRejected as rejected:
        return rejected.reason


NOON = berlin(2024, 3, 5, 12, 0)  # a Tuesday


class PrefixTests(SynchronousTestCase):
    """1.2: the longest prefix with an active entry, then C{*any}, else reject."""

    def test_longest_prefix(self) -> None:
        """The longest matching prefix wins."""
        idx = index([{"prefixes": ["4"], "rate": "A"}, {"prefixes": ["49"], "rate": "B"},
                     {"prefixes": ["4930"], "rate": "C"}])
        self.assertEqual(rate_of(idx, "4930123", NOON), "C")
        self.assertEqual(rate_of(idx, "4940123", NOON), "B")
        self.assertEqual(rate_of(idx, "4412", NOON), "A")
        match = idx.match("4930123", NOON)
        self.assertEqual((match.prefix, match.number, match.entry.index), ("4930", "4930123", 2))

    def test_exact_number(self) -> None:
        """A prefix equal to the whole number matches."""
        idx = index([{"prefixes": ["4930123"], "rate": "A"}, {"prefixes": ["49"], "rate": "B"}])
        self.assertEqual(rate_of(idx, "4930123", NOON), "A")
        self.assertEqual(rate_of(idx, "493012", NOON), "B")

    def test_plus_prefixes(self) -> None:
        """Matching is plain string prefix: a leading + is just a character."""
        idx = index([{"prefixes": ["+49"], "rate": "A"}])
        self.assertEqual(rate_of(idx, "+4930", NOON), "A")
        self.assertEqual(rate_of(idx, "4930", NOON), UNAUTHORIZED_DESTINATION)

    def test_any(self) -> None:
        """C{*any} is the catch-all after every real prefix."""
        idx = index([{"prefixes": ["49"], "rate": "A"}, {"prefixes": ["*any"], "rate": "B"}])
        self.assertEqual(rate_of(idx, "4930", NOON), "A")
        self.assertEqual(rate_of(idx, "3312", NOON), "B")
        self.assertEqual(idx.match("3312", NOON).prefix, "*any")

    def test_unauthorized(self) -> None:
        """No entry: C{unauthorized_destination}."""
        idx = index([{"prefixes": ["49"], "rate": "A"}])
        error = self.assertRaises(DestinationRejected, idx.match, "33", NOON)
        self.assertEqual((error.reason, error.number), (UNAUTHORIZED_DESTINATION, "33"))

    def test_blocked_shadows_shorter(self) -> None:
        """A blocked longer prefix rejects although a shorter one is rated."""
        idx = index([{"prefixes": ["49"], "rate": "A"},
                     {"prefixes": ["49900"], "blocked": True}])
        error = self.assertRaises(DestinationRejected, idx.match, "499001", NOON)
        self.assertEqual(error.reason, BLOCKED_DESTINATION)
        self.assertEqual(error.entry.index, 1)
        self.assertEqual(rate_of(idx, "49901", NOON), "A")

    def test_blocked_by_period(self) -> None:
        """A blocked entry only blocks while its period is active."""
        idx = index([{"prefixes": ["49"], "rate": "A"},
                     {"prefixes": ["49"], "timing": "night", "blocked": True, "weight": 5}],
                    {"night": {"start": "22:00:00", "end": "06:00:00"}})
        self.assertEqual(rate_of(idx, "49", NOON), "A")
        self.assertEqual(rate_of(idx, "49", berlin(2024, 3, 5, 23)), BLOCKED_DESTINATION)

    def test_inactive_longer_falls_through(self) -> None:
        """A longer prefix without an active entry falls through to a shorter one."""
        idx = index([{"prefixes": ["49"], "rate": "A"},
                     {"prefixes": ["4930"], "timing": "weekend", "rate": "B"}],
                    {"weekend": {"weekdays": [6, 7]}})
        self.assertEqual(rate_of(idx, "4930", NOON), "A")
        self.assertEqual(rate_of(idx, "4930", berlin(2024, 3, 9, 12)), "B")

    def test_naive_instant(self) -> None:
        """The answer instant must be timezone-aware."""
        idx = index([{"prefixes": ["49"], "rate": "A"}])
        self.assertRaises(ValueError, idx.match, "49", dt.datetime(2024, 1, 1))

    def test_length(self) -> None:
        """C{len()} counts distinct prefixes, not C{*any}."""
        idx = index([{"prefixes": ["49", "4930"], "rate": "A"}, {"prefixes": ["49"],
                     "rate": "B", "weight": 1}, {"prefixes": ["*any"], "rate": "C"}])
        self.assertEqual(len(idx), 2)


class EffectiveDateTests(SynchronousTestCase):
    """1.3: C{effective_from <= T0 < effective_to}, chosen once at answer."""

    def test_version_change(self) -> None:
        """The new version applies from its first instant; the old one up to it."""
        idx = index([{"prefixes": ["49"], "rate": "A", "effective_to": "2024-06-01"},
                     {"prefixes": ["49"], "rate": "B", "effective_from": "2024-06-01"}])
        self.assertEqual(rate_of(idx, "49", berlin(2024, 5, 31, 23, 59, 59)), "A")
        self.assertEqual(rate_of(idx, "49", berlin(2024, 6, 1, 0, 0, 0)), "B")
        self.assertEqual(rate_of(idx, "49", dt.datetime(2024, 5, 31, 22, tzinfo=dt.UTC)), "B")

    def test_not_yet_effective(self) -> None:
        """Before its first version a prefix is unauthorised (or falls through)."""
        idx = index([{"prefixes": ["4930"], "rate": "A", "effective_from": "2030-01-01"},
                     {"prefixes": ["49"], "rate": "B"}])
        self.assertEqual(rate_of(idx, "4930", NOON), "B")

    def test_offset_dates(self) -> None:
        """Dates with an offset are absolute instants."""
        idx = index([{"prefixes": ["49"], "rate": "A",
                      "effective_from": "2024-03-05T12:00:00+00:00"}])
        self.assertEqual(rate_of(idx, "49", berlin(2024, 3, 5, 12, 59)), UNAUTHORIZED_DESTINATION)
        self.assertEqual(rate_of(idx, "49", berlin(2024, 3, 5, 13, 0)), "A")


PEAK_TIMINGS = {
    "peak": {"weekdays": [1, 2, 3, 4, 5], "start": "08:00:00", "end": "18:00:00"},
    "night": {"weekdays": [1, 2, 3, 4, 5], "start": "20:00:00", "end": "08:00:00"},
}


class PeriodTests(SynchronousTestCase):
    """1.4: instant semantics of time windows and calendar conditions."""

    def timing(self, **doc: Any) -> Timing:
        """A loaded timing from its document."""
        entries = [{"prefixes": ["49"], "rate": "A", "timing": "t"}]
        return load_tariff(document(RATES, entries, timings={"t": doc})).timings["t"]

    def test_window_is_half_open(self) -> None:
        """C{[start, end)}: the start second is in, the end second is out."""
        peak = self.timing(start="08:00:00", end="18:00:00")
        self.assertFalse(period_active(peak, berlin(2024, 3, 5, 7, 59, 59)))
        self.assertTrue(period_active(peak, berlin(2024, 3, 5, 8, 0, 0)))
        self.assertTrue(period_active(peak, berlin(2024, 3, 5, 17, 59, 59)))
        self.assertFalse(period_active(peak, berlin(2024, 3, 5, 18, 0, 0)))

    def test_window_wraps_midnight(self) -> None:
        """C{end <= start} wraps: C{time >= start or time < end}."""
        night = self.timing(start="22:00:00", end="06:00:00")
        self.assertTrue(period_active(night, berlin(2024, 3, 5, 23, 0)))
        self.assertTrue(period_active(night, berlin(2024, 3, 6, 0, 0)))
        self.assertTrue(period_active(night, berlin(2024, 3, 6, 5, 59, 59)))
        self.assertFalse(period_active(night, berlin(2024, 3, 6, 6, 0)))
        self.assertFalse(period_active(night, berlin(2024, 3, 6, 21, 59, 59)))
        whole = self.timing(start="09:00:00", end="09:00:00")
        self.assertTrue(period_active(whole, berlin(2024, 3, 6, 3, 0)))

    def test_weekday_tested_on_the_instant(self) -> None:
        """PB's rule: 20:00-08:00 Mon-Fri excludes 06:00 on Saturday."""
        idx = index([{"prefixes": ["49"], "rate": "A"},
                     {"prefixes": ["49"], "timing": "night", "rate": "B", "weight": 5}],
                    PEAK_TIMINGS)
        self.assertEqual(rate_of(idx, "49", berlin(2024, 3, 8, 21, 0)), "B")  # Friday
        self.assertEqual(rate_of(idx, "49", berlin(2024, 3, 9, 6, 0)), "A")   # Saturday
        self.assertEqual(rate_of(idx, "49", berlin(2024, 3, 11, 6, 0)), "B")  # Monday

    def test_calendar_conditions(self) -> None:
        """Years, months, monthdays (with -1), weekdays and dates all hold."""
        last = self.timing(monthdays=[-1])
        self.assertTrue(period_active(last, berlin(2024, 2, 29, 12)))
        self.assertFalse(period_active(last, berlin(2023, 2, 27, 12)))
        self.assertTrue(period_active(last, berlin(2023, 2, 28, 12)))
        summer = self.timing(months=[6, 7, 8], years=[2024])
        self.assertTrue(period_active(summer, berlin(2024, 7, 1)))
        self.assertFalse(period_active(summer, berlin(2025, 7, 1)))
        self.assertFalse(period_active(summer, berlin(2024, 9, 1)))
        day = self.timing(dates=["2024-12-25"])
        self.assertTrue(period_active(day, berlin(2024, 12, 25, 23, 59)))
        self.assertFalse(period_active(day, berlin(2024, 12, 26, 0, 0)))
        self.assertTrue(period_active(None, berlin(2024, 1, 1)))

    def test_zone_of_the_tariff(self) -> None:
        """Periods are evaluated in the tariff's zone, whatever zone T0 is in."""
        idx = index([{"prefixes": ["1"], "rate": "A"},
                     {"prefixes": ["1"], "timing": "peak", "rate": "B", "weight": 5}],
                    PEAK_TIMINGS, timezone="America/New_York")
        at = dt.datetime(2024, 3, 5, 14, 0, tzinfo=dt.UTC)  # 09:00 in New York (EST)
        self.assertEqual(rate_of(idx, "1", at), "B")
        self.assertEqual(rate_of(idx, "1", at.astimezone(BERLIN)), "B")
        self.assertEqual(rate_of(idx, "1", at - dt.timedelta(hours=2)), "A")

    def test_spring_forward(self) -> None:
        """DST: the same UTC hour is 07:30 before and 08:30 after the switch."""
        idx = index([{"prefixes": ["49"], "rate": "A"},
                     {"prefixes": ["49"], "timing": "day", "rate": "B", "weight": 5}],
                    {"day": {"start": "08:00:00", "end": "18:00:00"}})
        self.assertEqual(rate_of(idx, "49", dt.datetime(2024, 3, 30, 6, 30, tzinfo=dt.UTC)), "A")
        self.assertEqual(rate_of(idx, "49", dt.datetime(2024, 3, 31, 6, 30, tzinfo=dt.UTC)), "B")

    def test_skipped_hour(self) -> None:
        """A window inside the hour DST skips is never active that night."""
        idx = index([{"prefixes": ["49"], "rate": "A"},
                     {"prefixes": ["49"], "timing": "gap", "rate": "B", "weight": 5}],
                    {"gap": {"start": "02:00:00", "end": "03:00:00"}})
        start = dt.datetime(2024, 3, 31, 0, 0, tzinfo=dt.UTC)  # 01:00 CET
        seen = {rate_of(idx, "49", start + dt.timedelta(minutes=m)) for m in range(0, 120, 5)}
        self.assertEqual(seen, {"A"})
        self.assertEqual(rate_of(idx, "49", dt.datetime(2024, 3, 30, 1, 30, tzinfo=dt.UTC)), "B")

    def test_fall_back(self) -> None:
        """The repeated hour 02:00-03:00 is in the window both times."""
        idx = index([{"prefixes": ["49"], "rate": "A"},
                     {"prefixes": ["49"], "timing": "gap", "rate": "B", "weight": 5}],
                    {"gap": {"start": "02:00:00", "end": "03:00:00"}})
        first = dt.datetime(2024, 10, 27, 0, 30, tzinfo=dt.UTC)   # 02:30 CEST
        second = dt.datetime(2024, 10, 27, 1, 30, tzinfo=dt.UTC)  # 02:30 CET
        self.assertEqual((rate_of(idx, "49", first), rate_of(idx, "49", second)), ("B", "B"))
        self.assertEqual(rate_of(idx, "49", dt.datetime(2024, 10, 27, 2, 0, tzinfo=dt.UTC)), "A")


class PrecedenceTests(SynchronousTestCase):
    """1.4: weight, then the most recently started window, then a tie-break."""

    def test_higher_weight_wins(self) -> None:
        """A holiday is a higher-weight period."""
        idx = index([{"prefixes": ["49"], "rate": "A", "weight": 10},
                     {"prefixes": ["49"], "timing": "newyear", "rate": "B", "weight": 20}],
                    {"newyear": {"months": [1], "monthdays": [1]}})
        self.assertEqual(rate_of(idx, "49", berlin(2025, 1, 1, 12)), "B")
        self.assertEqual(rate_of(idx, "49", berlin(2025, 1, 2, 12)), "A")

    def test_latest_start_wins(self) -> None:
        """Mon-Fri from 00:00 plus Mon-Fri from 18:00: day rate, then evening."""
        timings = {"day": {"weekdays": [1, 2, 3, 4, 5]},
                   "evening": {"weekdays": [1, 2, 3, 4, 5], "start": "18:00:00"}}
        idx = index([{"prefixes": ["49"], "timing": "day", "rate": "A"},
                     {"prefixes": ["49"], "timing": "evening", "rate": "B"}], timings)
        self.assertEqual(rate_of(idx, "49", berlin(2024, 3, 5, 17, 59, 59)), "A")
        self.assertEqual(rate_of(idx, "49", berlin(2024, 3, 5, 18, 0)), "B")
        self.assertFalse(idx.match("49", berlin(2024, 3, 5, 18, 0)).ambiguous)

    def test_distance(self) -> None:
        """The distance is C{(time - start) mod 24 h}, also for wrapping windows."""
        night = Timing("n", start_s=22 * 3600, end_s=6 * 3600)
        self.assertEqual(window_distance(night, berlin(2024, 3, 5, 1, 0)), 3 * 3600)
        self.assertEqual(window_distance(None, berlin(2024, 3, 5, 1, 0)), 3600)

    def test_runtime_tie(self) -> None:
        """A tie the loader could not see: lowest price, then rate id, flagged."""
        rates = {r: Rate(r, (RateGroup(0, Decimal(p), 60, 60),))
                 for r, p in (("X", "2"), ("Y", "1"), ("Z", "1"))}
        tariff = Tariff("UTC", ZoneInfo("UTC"), "start", Rounding(), {}, rates,
                        tuple(Entry(i, ("49",), r) for i, r in enumerate("XZY")))
        match = TariffIndex(tariff).match("49", NOON)
        self.assertEqual(match.rate.id, "Y")
        self.assertTrue(match.ambiguous)


class SplitCandidateTests(SynchronousTestCase):
    """The entries that may price increments of a C{split} call (1.5)."""

    def test_rate_at(self) -> None:
        """C{rate_at} re-selects among the prefix's entries; a gap is None."""
        idx = index([{"prefixes": ["49"], "timing": "peak", "rate": "A"},
                     {"prefixes": ["49"], "timing": "night", "rate": "B"},
                     {"prefixes": ["4"], "rate": "C"}], PEAK_TIMINGS)
        match = idx.match("49", berlin(2024, 3, 5, 17, 0))
        self.assertEqual(match.rate.id, "A")
        self.assertEqual(match.rate_at(berlin(2024, 3, 5, 21, 0)).id, "B")
        self.assertIsNone(match.rate_at(berlin(2024, 3, 5, 19, 0)))
        self.assertEqual(len(match.candidates), 2)

    def test_same_version_only(self) -> None:
        """Candidates are the version effective at T0, even after it ends."""
        idx = index([{"prefixes": ["49"], "rate": "A", "effective_to": "2024-03-06"},
                     {"prefixes": ["49"], "rate": "B", "effective_from": "2024-03-06"}])
        match = idx.match("49", berlin(2024, 3, 5, 23, 59))
        self.assertEqual(match.rate_at(berlin(2024, 3, 6, 0, 30)).id, "A")
        self.assertEqual([c.entry.index for c in match.candidates], [0])
