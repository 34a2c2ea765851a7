"""Rate lookup (rating.md 1.2-1.5): longest prefix, effective dates, periods.

L{TariffIndex} turns a loaded L{Tariff} into a dict of prefixes; C{match}
walks the prefix lengths present in the tariff from the longest that fits
the number down to the shortest, then C{*any}, and keeps the first prefix
with an entry that is effective and whose period is active at the answer
instant C{T0}.  Periods are evaluated at C{T0} converted to the tariff's
zone (zoneinfo, so DST is the zone's own rule); the conversion is done only
when some candidate has a period or two candidates tie on weight.

Precedence among the active entries of one prefix (1.4): higher weight,
then the window that started most recently, then (a configuration error the
loader rejects when it can see it) the lowest price, then the rate id, with
C{Match.ambiguous} set so the caller can log it.

This module also holds the two load-time checks on periods that
L{rating.tariff.load_tariff} runs: ambiguous entries (an error) and coverage
gaps (a warning).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from rating.tariff import ANY_PREFIX, DAY_S, Entry, Rate, Rounding, Tariff, Timing, format_clock

#: Reasons of L{DestinationRejected}, as CDR/SIP mapping keys.
UNAUTHORIZED_DESTINATION = "unauthorized_destination"
BLOCKED_DESTINATION = "blocked_destination"
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: Any 28 consecutive years within 1901-2099 hold every weekday/date combination.
_CYCLE = (dt.date(2001, 1, 1), dt.date(2028, 12, 31))


class DestinationRejected(Exception):
    """No rate for the number (C{unauthorized_destination}) or a blocked
    entry won (C{blocked_destination}), 1.2 steps 3 and 4."""

    def __init__(self, reason: str, number: str, entry: Entry | None = None) -> None:
        self.reason = reason
        self.number = number
        self.entry = entry
        super().__init__(f"{reason}: {number}")


class _Candidate:
    """An entry under one prefix, with what the hot path needs at hand."""

    __slots__ = ("dated", "entry", "order", "rate", "start_s", "timing", "weight")

    def __init__(self, entry: Entry, timing: Timing | None, rate: Rate | None) -> None:
        self.entry = entry
        self.timing = timing
        self.rate = rate
        self.weight = entry.weight
        self.start_s = timing.start_s if timing is not None else 0
        self.dated = entry.effective_from is not None or entry.effective_to is not None
        if rate is None:
            self.order: tuple[Any, ...] = (Decimal(-1), Decimal(0), "")
        else:
            first = rate.groups[0]
            self.order = (first.price / first.unit_s, rate.connect_fee, rate.id)


def has_calendar(timing: Timing) -> bool:
    """Whether C{timing} is restricted to some years, months or dates."""
    return bool(timing.years or timing.months or timing.monthdays or timing.dates)


def day_matches(timing: Timing, day: dt.date) -> bool:
    """Whether every calendar condition of C{timing} holds on local date C{day}."""
    if timing.years and day.year not in timing.years:
        return False
    if timing.months and day.month not in timing.months:
        return False
    if timing.weekdays and day.isoweekday() not in timing.weekdays:
        return False
    if timing.dates and day not in timing.dates:
        return False
    if timing.monthdays and day.day not in timing.monthdays:
        if -1 not in timing.monthdays:
            return False
        return day.day == calendar.monthrange(day.year, day.month)[1]
    return True


def time_matches(timing: Timing, second: int) -> bool:
    """Whether local second-of-day C{second} lies in the window of C{timing}:
    C{[start, end)}, wrapping midnight when C{end <= start}."""
    if timing.start_s < timing.end_s:
        return timing.start_s <= second < timing.end_s
    return second >= timing.start_s or second < timing.end_s


def period_active(timing: Timing | None, local: dt.datetime) -> bool:
    """Whether C{timing} is active at C{local}, a time in the tariff's zone.

    C{None} is "always".  The window is C{[start, end)} and wraps midnight
    when C{end <= start}; calendar conditions are tested on C{local} itself.
    """
    if timing is None:
        return True
    second = local.hour * 3600 + local.minute * 60 + local.second
    return time_matches(timing, second) and day_matches(timing, local.date())


def window_distance(timing: Timing | None, local: dt.datetime) -> int:
    """Seconds since the window of C{timing} last started (the 1.4 tie-break)."""
    second = local.hour * 3600 + local.minute * 60 + local.second
    return (second - (timing.start_s if timing is not None else 0)) % DAY_S


def _select(candidates: Sequence[_Candidate], instant: dt.datetime, zone: Any,
            dated: bool) -> tuple[_Candidate | None, bool]:
    """The winning active candidate at C{instant} and whether it was a tie.

    C{candidates} are sorted by weight, highest first.  C{dated} false skips
    the effective-date test (split mode reuses the set chosen at C{T0}).
    """
    best: _Candidate | None = None
    best_distance = -1
    tied = False
    local = None
    for c in candidates:
        if best is not None and c.weight < best.weight:
            break
        if dated and c.dated and not c.entry.effective_at(instant):
            continue
        if c.timing is not None:
            if local is None:
                local = instant.astimezone(zone)
            if not period_active(c.timing, local):
                continue
        if best is None:
            best = c
            continue
        if local is None:
            local = instant.astimezone(zone)
        if best_distance < 0:
            best_distance = window_distance(best.timing, local)
        distance = window_distance(c.timing, local)
        if distance < best_distance:
            best, best_distance, tied = c, distance, False
        elif distance == best_distance:
            tied = True
            if c.order < best.order:
                best = c
    return best, tied


class Match:
    """The result of a lookup at C{answered_at}: what prices the call.

    C{entry}/C{rate} were selected at C{T0} under C{prefix}; C{ambiguous} is
    true when the runtime tie-break of 1.4 step 3 was used (log it).  Treat
    a match as immutable; C{memo} holds cost evaluations for re-use.
    """

    __slots__ = ("_bucket", "_candidates", "_memo", "ambiguous", "answered_at", "entry",
                 "number", "prefix", "rate", "tariff")

    def __init__(self, tariff: Tariff, number: str, prefix: str, entry: Entry, rate: Rate,
                 answered_at: dt.datetime, bucket: Sequence[_Candidate] = (),
                 ambiguous: bool = False) -> None:
        self.tariff = tariff
        self.number = number
        self.prefix = prefix
        self.entry = entry
        self.rate = rate
        self.answered_at = answered_at
        self.ambiguous = ambiguous
        self._bucket = bucket
        self._candidates: tuple[_Candidate, ...] | None = None
        self._memo: dict[Any, Any] | None = None

    def __repr__(self) -> str:
        return (f"Match(number={self.number!r}, prefix={self.prefix!r}, "
                f"entry={self.entry.index}, rate={self.rate.id!r}, "
                f"answered_at={self.answered_at.isoformat()!r})")

    @property
    def rounding(self) -> Rounding:
        """The entry's rounding, else the tariff's (2.7)."""
        return self.entry.rounding or self.tariff.rounding

    @property
    def memo(self) -> dict[Any, Any]:
        """A per-match cache for L{rating.cost} (split increment schedules)."""
        if self._memo is None:
            self._memo = {}
        return self._memo

    @property
    def candidates(self) -> tuple[_Candidate, ...]:
        """The non-blocked entries of C{prefix} effective at C{T0}: those that
        may price an increment in C{split} mode (1.5)."""
        if self._candidates is None:
            at = self.answered_at
            self._candidates = tuple(
                c for c in self._bucket if c.rate is not None and not c.entry.blocked
                and (not c.dated or c.entry.effective_at(at))) or (
                    _Candidate(self.entry, None, self.rate),)
        return self._candidates

    def rate_at(self, instant: dt.datetime) -> Rate | None:
        """The rate active at C{instant} among C{candidates} (split mode), or
        C{None} when no candidate's period is active then (a gap)."""
        best, _ = _select(self.candidates, instant, self.tariff.zone, False)
        return best.rate if best is not None else None


class TariffIndex:
    """Longest-prefix lookup over one tariff; build once, share freely."""

    def __init__(self, tariff: Tariff) -> None:
        self.tariff = tariff
        buckets: dict[str, list[_Candidate]] = defaultdict(list)
        for entry in tariff.entries:
            timing = tariff.timings[entry.timing] if entry.timing is not None else None
            rate = tariff.rates[entry.rate] if entry.rate is not None else None
            candidate = _Candidate(entry, timing, rate)
            for prefix in dict.fromkeys(entry.prefixes):
                buckets[prefix].append(candidate)
        self._buckets = {p: tuple(sorted(cs, key=lambda c: -c.weight))
                         for p, cs in buckets.items()}
        self._any = self._buckets.pop(ANY_PREFIX, ())
        lengths = sorted({len(p) for p in self._buckets}, reverse=True)
        longest = lengths[0] if lengths else 0
        #: For a number of n digits, the prefix lengths worth trying.
        self._lengths_for = tuple(tuple(k for k in lengths if k <= n)
                                  for n in range(longest + 1))
        #: A prefix whose only entry is rated, always active and undated
        #: needs no period evaluation: its candidate is stored bare.
        self._lookup: dict[str, _Candidate | tuple[_Candidate, ...]] = {
            p: cs[0] if len(cs) == 1 and cs[0].timing is None and not cs[0].dated
            and cs[0].rate is not None and not cs[0].entry.blocked else cs
            for p, cs in self._buckets.items()}

    def __len__(self) -> int:
        """The number of distinct prefixes (C{*any} not counted)."""
        return len(self._buckets)

    def match(self, number: str, answered_at: dt.datetime) -> Match:
        """Select the entry pricing a call to C{number} answered at C{answered_at}.

        @param answered_at: an aware datetime (C{T0}, the 200 OK).
        @raise DestinationRejected: no entry, or the selected entry is blocked.
        """
        if answered_at.tzinfo is None:
            raise ValueError("answered_at must be timezone-aware")
        lookup = self._lookup
        lengths = self._lengths_for
        for length in lengths[min(len(number), len(lengths) - 1)]:
            prefix = number[:length]
            found = lookup.get(prefix)
            if found is None:
                continue
            if found.__class__ is _Candidate:
                return Match(self.tariff, number, prefix, found.entry, found.rate,  # type: ignore[union-attr]
                             answered_at, (found,))
            best, tied = _select(found, answered_at, self.tariff.zone, True)  # type: ignore[arg-type]
            if best is not None:
                return self._found(number, prefix, found, best, tied, answered_at)  # type: ignore[arg-type]
        if self._any:
            best, tied = _select(self._any, answered_at, self.tariff.zone, True)
            if best is not None:
                return self._found(number, ANY_PREFIX, self._any, best, tied, answered_at)
        raise DestinationRejected(UNAUTHORIZED_DESTINATION, number)

    def _found(self, number: str, prefix: str, candidates: Sequence[_Candidate],
               best: _Candidate, tied: bool, answered_at: dt.datetime) -> Match:
        if best.rate is None or best.entry.blocked:
            raise DestinationRejected(BLOCKED_DESTINATION, number, best.entry)
        return Match(self.tariff, number, prefix, best.entry, best.rate, answered_at,
                     candidates, tied)


def _coincide(a: Timing | None, b: Timing | None) -> bool:
    """Whether some local day satisfies the calendar conditions of both."""
    timings = [t for t in (a, b) if t is not None]
    for attr in ("years", "months", "weekdays", "dates"):
        sets = [getattr(t, attr) for t in timings if getattr(t, attr)]
        if len(sets) == 2 and not sets[0] & sets[1]:
            return False
    if not any(has_calendar(t) or t.weekdays for t in timings):
        return True
    dated = [t.dates for t in timings if t.dates]
    years = [t.years for t in timings if t.years]
    if dated:
        days: Iterable[dt.date] = sorted(frozenset.intersection(*dated))
    elif years:
        days = (dt.date(y, 1, 1) + dt.timedelta(n) for y in sorted(frozenset.intersection(*years))
                for n in range(366 if calendar.isleap(y) else 365))
    else:
        first, last = _CYCLE
        days = (first + dt.timedelta(n) for n in range((last - first).days + 1))
    return any(all(day_matches(t, day) for t in timings) for day in days)


def _overlap(a: Entry, b: Entry) -> bool:
    """Whether the effective intervals of two entries overlap."""
    if a.effective_to is not None and b.effective_from is not None \
            and a.effective_to <= b.effective_from:
        return False
    return not (b.effective_to is not None and a.effective_from is not None
                and b.effective_to <= a.effective_from)


def ambiguous_entries(entries: Sequence[Entry], timings: Mapping[str, Timing]) -> list[str]:
    """Problems for entry pairs 1.1 calls ambiguous: same prefix, equal weight,
    overlapping effective dates, periods that can be active at one instant and
    start at the same time of day (so 1.4 could not order them)."""
    by_prefix: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        for prefix in dict.fromkeys(entry.prefixes):
            by_prefix[prefix].append(entry)
    memo: dict[tuple[str | None, str | None], bool] = {}
    reported: set[tuple[int, int]] = set()
    problems = []
    for prefix, group in by_prefix.items():
        for i, a in enumerate(group):
            ta = timings[a.timing] if a.timing is not None else None
            for b in group[i + 1:]:
                tb = timings[b.timing] if b.timing is not None else None
                if (a.weight != b.weight or (a.index, b.index) in reported
                        or (ta.start_s if ta else 0) != (tb.start_s if tb else 0)
                        or not _overlap(a, b)):
                    continue
                key = (a.timing, b.timing)
                if key not in memo:
                    memo[key] = _coincide(ta, tb)
                if memo[key]:
                    reported.add((a.index, b.index))
                    problems.append(
                        f"entries[{b.index}]: ambiguous with entries[{a.index}] for prefix "
                        f"{prefix!r}: equal weight {a.weight}, overlapping effective dates, "
                        f"periods {a.timing or 'always'!s}/{b.timing or 'always'!s} can be "
                        "active at the same instant and start at "
                        f"{format_clock(ta.start_s if ta else 0)}; give one a higher weight")
    return problems


def _first_gap(timings: Iterable[Timing | None]) -> str | None:
    """The first hour of the week not covered by calendar-free C{timings}."""
    windows = [t for t in timings if t is None or not has_calendar(t)]
    if any(t is None for t in windows):
        return None
    for weekday in range(1, 8):
        spans = []
        for t in windows:
            if t is None or (t.weekdays and weekday not in t.weekdays):
                continue
            if t.start_s < t.end_s:
                spans.append((t.start_s, t.end_s))
            else:
                spans += [(0, t.end_s), (t.start_s, DAY_S)]
        covered = 0
        for begin, end in sorted(spans):
            if begin > covered:
                break
            covered = max(covered, end)
        if covered < DAY_S:
            return f"{_DAY_NAMES[weekday - 1]} {format_clock(covered)}"
    return None


def coverage_gaps(entries: Sequence[Entry], timings: Mapping[str, Timing]) -> list[str]:
    """Warnings for destinations whose entries do not cover 7x24 (1.1).

    Checked per prefix and effective version, over periods without calendar
    conditions (holiday periods only add to a week that must be covered).
    """
    versions: dict[tuple[Any, ...], set[str | None]] = defaultdict(set)
    for entry in entries:
        for prefix in entry.prefixes:
            versions[(prefix, entry.effective_from, entry.effective_to)].add(entry.timing)
    memo: dict[frozenset[str | None], str | None] = {}
    gaps: dict[str, list[str]] = defaultdict(list)
    for (prefix, _, _), names in versions.items():
        key = frozenset(names)
        if key not in memo:
            memo[key] = _first_gap(timings[n] if n is not None else None for n in key)
        if memo[key] is not None:
            gaps[memo[key]].append(prefix)
    warnings = []
    for gap, prefixes in gaps.items():
        shown = ", ".join(dict.fromkeys(prefixes[:5]))
        more = f" (+{len(prefixes) - 5} more)" if len(prefixes) > 5 else ""
        warnings.append(f"prefixes {shown}{more}: entries do not cover the whole week, "
                        f"first gap {gap}; calls then fall through to shorter prefixes")
    return warnings
