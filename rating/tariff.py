"""Tariff documents: the model of rating.md 1.1 and the loader of section 6.

A tariff is loaded from one JSON (or TOML) document with exactly the key names
of the spec.  L{load_tariff} checks every key and value, collects every
problem with its key path (C{rates.R1.groups[1].increment_s: must be >= 1})
and raises one L{TariffError} listing them all, so a tariff is either loaded
whole or not at all.  Money is C{Decimal} (decimal strings in the document);
durations are integer seconds.

Periods are only described here; L{rating.lookup} evaluates them, and also
holds the two period checks the loader runs (ambiguous entries, coverage).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: The catch-all prefix of 1.2, tried after every real prefix.
ANY_PREFIX = "*any"
ROUNDING_METHODS = ("up", "down", "half_up", "half_even")
PERIOD_BOUNDARIES = ("start", "split")
MAX_COST_STRATEGIES = ("free", "disconnect")
#: Balances are integer micro-units, so a cost never has more decimals (2.7).
MAX_ROUNDING_DECIMALS = 6
DAY_S = 86400
_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})$")


class TariffError(ValueError):
    """A tariff (or bundle, discount plan, rate CSV) was rejected.

    C{problems} lists every problem found, each as C{"<key path>: <message>"};
    the string form is the problems, one a line.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Rounding:
    """The single rounding step of 2.7: C{method} at C{decimals} places."""

    method: str = "up"
    decimals: int = 4


@dataclass(frozen=True)
class Timing:
    """A named period (1.4); an empty condition matches everything.

    C{start_s}/C{end_s} are seconds of the local day; the window is
    C{[start_s, end_s)} and wraps midnight when C{end_s <= start_s}.
    C{monthdays} may hold C{-1}, the last day of the month.
    """

    name: str
    years: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    monthdays: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()
    dates: frozenset[dt.date] = frozenset()
    start_s: int = 0
    end_s: int = DAY_S


@dataclass(frozen=True)
class RateGroup:
    """From call-second C{start_s} on, each C{increment_s} costs
    C{price * increment_s / unit_s}; C{fixed_fee} is charged once when the
    call enters the group (2.6.2)."""

    start_s: int
    price: Decimal
    unit_s: int
    increment_s: int
    fixed_fee: Decimal = Decimal(0)


@dataclass(frozen=True)
class Rate:
    """A named rate: fees, the ordered groups and the per-call adjustments."""

    id: str
    groups: tuple[RateGroup, ...]
    connect_fee: Decimal = Decimal(0)
    connect_fee_tricky: bool = False
    disconnect_fee: Decimal = Decimal(0)
    disconnect_fee_after_s: int = 0
    grace_s: int = 0
    free_seconds: int = 0
    min_charge: Decimal = Decimal(0)
    post_call_surcharge_pct: Decimal = Decimal(0)


@dataclass(frozen=True)
class Entry:
    """One row of the rating plan; C{index} is its position in C{entries}."""

    index: int
    prefixes: tuple[str, ...]
    rate: str | None
    timing: str | None = None
    weight: Decimal = Decimal(0)
    rounding: Rounding | None = None
    max_cost: Decimal | None = None
    max_cost_strategy: str | None = None
    effective_from: dt.datetime | None = None
    effective_to: dt.datetime | None = None
    blocked: bool = False

    def effective_at(self, instant: dt.datetime) -> bool:
        """Whether C{effective_from <= instant < effective_to} (open ends)."""
        if self.effective_from is not None and instant < self.effective_from:
            return False
        return self.effective_to is None or instant < self.effective_to


@dataclass(frozen=True)
class Bundle:
    """Included seconds for some destinations (5.1), as a document defines it.

    C{price} is per minute (60 s) of bundle seconds consumed; 0 means the
    seconds are included.  Remaining seconds, weight and expiry belong to an
    account's holding, L{rating.bundles.HeldBundle}.
    """

    id: str
    seconds: int
    prefixes: tuple[str, ...]
    increment_s: int = 1
    connect_fee: Decimal = Decimal(0)
    price: Decimal = Decimal(0)


@dataclass(frozen=True)
class Tariff:
    """A loaded, validated tariff; C{warnings} lists coverage gaps (1.1)."""

    timezone: str
    zone: ZoneInfo = field(repr=False, compare=False)
    period_boundary: str
    rounding: Rounding
    timings: Mapping[str, Timing]
    rates: Mapping[str, Rate]
    entries: tuple[Entry, ...]
    bundles: Mapping[str, Bundle] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


class _Check:
    """Collects problems and converts raw document values, one path each."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, path: str, message: str) -> None:
        """Record one problem at C{path}."""
        self.problems.append(f"{path or '(document)'}: {message}")

    def bounded(self, value: Any, path: str, minimum: Any, maximum: Any) -> Any:
        """C{value} if within C{[minimum, maximum]} (None: open), else None."""
        if minimum is not None and value < minimum:
            self.bad(path, f"must be >= {minimum}")
            return None
        if maximum is not None and value > maximum:
            self.bad(path, f"must be <= {maximum}")
            return None
        return value

    def mapping(self, value: Any, path: str, allowed: Iterable[str],
                required: Iterable[str] = ()) -> Mapping[str, Any] | None:
        """C{value} as a mapping with only C{allowed} keys and all C{required}."""
        if not isinstance(value, Mapping):
            self.bad(path, "must be an object")
            return None
        allowed = set(allowed)
        for key in value:
            if key not in allowed:
                self.bad(_join(path, str(key)), "unknown key")
        for key in required:
            if key not in value:
                self.bad(_join(path, key), "required")
        return value

    def decimal(self, value: Any, path: str, minimum: Decimal | None = Decimal(0),
                maximum: Decimal | None = None) -> Decimal | None:
        """A decimal string (or int/Decimal); floats are refused."""
        if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
            self.bad(path, "must be a decimal string")
            return None
        try:
            number = Decimal(value.strip() if isinstance(value, str) else value)
        except InvalidOperation:
            self.bad(path, f"not a decimal number: {value!r}")
            return None
        if not number.is_finite():
            self.bad(path, "must be finite")
            return None
        return self.bounded(number, path, minimum, maximum)

    def integer(self, value: Any, path: str, minimum: int | None = 0,
                maximum: int | None = None) -> int | None:
        """An integer within C{[minimum, maximum]}."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.bad(path, "must be an integer")
            return None
        return self.bounded(value, path, minimum, maximum)

    def boolean(self, value: Any, path: str) -> bool:
        """A JSON boolean."""
        if not isinstance(value, bool):
            self.bad(path, "must be true or false")
            return False
        return value

    def choice(self, value: Any, path: str, choices: tuple[str, ...]) -> str | None:
        """One of C{choices}."""
        if not isinstance(value, str) or value not in choices:
            self.bad(path, f"must be one of {', '.join(choices)}")
            return None
        return value

    def name(self, value: Any, path: str) -> str | None:
        """A non-empty string without white space (ids, prefixes)."""
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            self.bad(path, "must be a non-empty string without spaces")
            return None
        return value

    def items(self, value: Any, path: str) -> list[Any]:
        """C{value} if it is a list, else C{[]} and a problem."""
        if not isinstance(value, list):
            self.bad(path, "must be a list")
            return []
        return value

    def int_set(self, value: Any, path: str, low: int, high: int,
                extra: tuple[int, ...] = ()) -> frozenset[int]:
        """A list of integers in C{[low, high]} (or in C{extra})."""
        out = set()
        for i, item in enumerate(self.items(value, path)):
            ok = (isinstance(item, int) and not isinstance(item, bool)
                  and (low <= item <= high or item in extra))
            if not ok:
                self.bad(f"{path}[{i}]", f"must be an integer in {low}..{high}"
                         + "".join(f" or {e}" for e in extra))
            else:
                out.add(item)
        return frozenset(out)

    def prefixes(self, value: Any, path: str) -> tuple[str, ...]:
        """A non-empty list of prefixes."""
        if not isinstance(value, list) or not value:
            self.bad(path, "must be a non-empty list")
            return ()
        out = [self.name(p, f"{path}[{i}]") for i, p in enumerate(value)]
        return tuple(p for p in out if p is not None)

    def rounding(self, value: Any, path: str) -> Rounding | None:
        """A C{{method, decimals}} object."""
        doc = self.mapping(value, path, ("method", "decimals"))
        if doc is None:
            return None
        method = self.choice(doc.get("method", "up"), _join(path, "method"), ROUNDING_METHODS)
        decimals = self.integer(doc.get("decimals", 4), _join(path, "decimals"),
                                0, MAX_ROUNDING_DECIMALS)
        if method is None or decimals is None:
            return None
        return Rounding(method, decimals)

    def instant(self, value: Any, path: str, zone: ZoneInfo | None) -> dt.datetime | None:
        """An ISO date or date-time, kept in UTC; naive values are in the tariff's zone."""
        if isinstance(value, str):
            try:
                value = (dt.date.fromisoformat(value) if len(value) == 10
                         else dt.datetime.fromisoformat(value))
            except ValueError:
                self.bad(path, f"not an ISO date or date-time: {value!r}")
                return None
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            value = dt.datetime.combine(value, dt.time())
        if not isinstance(value, dt.datetime):
            self.bad(path, "must be an ISO date or date-time string")
            return None
        if value.tzinfo is None:
            if zone is None:
                return None
            value = value.replace(tzinfo=zone)
        return value.astimezone(dt.UTC)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _clock(value: Any, path: str, check: _Check, end: bool) -> int | None:
    """C{HH:MM:SS} as seconds of the day; only an end may be C{24:00:00}."""
    match = _TIME.match(value) if isinstance(value, str) else None
    if match is None:
        check.bad(path, "must be HH:MM:SS")
        return None
    h, m, s = (int(g) for g in match.groups())
    seconds = h * 3600 + m * 60 + s
    if m > 59 or s > 59 or seconds > DAY_S or (seconds == DAY_S and not end):
        check.bad(path, "not a time of day" + (" (00:00:00..24:00:00)" if end else ""))
        return None
    return seconds


def format_clock(seconds: int) -> str:
    """Seconds of the day as C{HH:MM:SS}."""
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _timing(name: str, value: Any, path: str, check: _Check) -> Timing | None:
    keys = ("years", "months", "monthdays", "weekdays", "dates", "start", "end")
    doc = check.mapping(value, path, keys)
    if doc is None:
        return None
    dates = set()
    for i, item in enumerate(check.items(doc.get("dates", []), _join(path, "dates"))):
        try:
            dates.add(item if isinstance(item, dt.date) else dt.date.fromisoformat(item))
        except (TypeError, ValueError):
            check.bad(f"{path}.dates[{i}]", "must be a YYYY-MM-DD date")
    return Timing(
        name=name,
        years=check.int_set(doc.get("years", []), _join(path, "years"), 1, 9999),
        months=check.int_set(doc.get("months", []), _join(path, "months"), 1, 12),
        monthdays=check.int_set(doc.get("monthdays", []), _join(path, "monthdays"), 1, 31, (-1,)),
        weekdays=check.int_set(doc.get("weekdays", []), _join(path, "weekdays"), 1, 7),
        dates=frozenset(dates),
        start_s=_clock(doc.get("start", "00:00:00"), _join(path, "start"), check, False) or 0,
        end_s=_clock(doc.get("end", "24:00:00"), _join(path, "end"), check, True) or 0,
    )


def _groups(value: Any, path: str, check: _Check) -> tuple[RateGroup, ...]:
    if not isinstance(value, list) or not value:
        check.bad(path, "must be a non-empty list")
        return ()
    groups: list[RateGroup | None] = []
    required = ("start_s", "price", "unit_s", "increment_s")
    for i, raw in enumerate(value):
        gpath = f"{path}[{i}]"
        doc = check.mapping(raw, gpath, (*required, "fixed_fee"), required)
        if doc is None or any(key not in doc for key in required):
            groups.append(None)
            continue
        parts = (check.integer(doc["start_s"], _join(gpath, "start_s")),
                 check.decimal(doc["price"], _join(gpath, "price")),
                 check.integer(doc["unit_s"], _join(gpath, "unit_s"), 1),
                 check.integer(doc["increment_s"], _join(gpath, "increment_s"), 1),
                 check.decimal(doc.get("fixed_fee", "0"), _join(gpath, "fixed_fee")))
        groups.append(None if None in parts else RateGroup(*parts))  # type: ignore[arg-type]
    if None in groups:
        return ()
    done: list[RateGroup] = [g for g in groups if g is not None]
    if done[0].start_s != 0:
        check.bad(f"{path}[0].start_s", "the first group must start at 0")
    for i in range(1, len(done)):
        before, group = done[i - 1], done[i]
        if group.start_s <= before.start_s:
            check.bad(f"{path}[{i}].start_s", "groups must be sorted by start_s, no repeats")
        elif (group.start_s - before.start_s) % before.increment_s:
            check.bad(f"{path}[{i - 1}].increment_s",
                      f"{before.increment_s} does not divide the group length "
                      f"{group.start_s - before.start_s} (an increment may not straddle "
                      "the next group)")
    return tuple(done)


_RATE_DECIMALS = ("connect_fee", "disconnect_fee", "min_charge", "post_call_surcharge_pct")
_RATE_INTS = ("disconnect_fee_after_s", "grace_s", "free_seconds")


def _rate(rate_id: str, value: Any, path: str, check: _Check) -> Rate | None:
    keys = ("groups", "connect_fee_tricky", *_RATE_DECIMALS, *_RATE_INTS)
    doc = check.mapping(value, path, keys, ("groups",))
    if doc is None:
        return None
    before = len(check.problems)
    groups = _groups(doc.get("groups"), _join(path, "groups"), check) if "groups" in doc else ()
    fields: dict[str, Any] = {}
    for key in _RATE_DECIMALS:
        if key in doc:
            fields[key] = check.decimal(doc[key], _join(path, key))
    for key in _RATE_INTS:
        if key in doc:
            fields[key] = check.integer(doc[key], _join(path, key))
    if "connect_fee_tricky" in doc:
        fields["connect_fee_tricky"] = check.boolean(doc["connect_fee_tricky"],
                                                     _join(path, "connect_fee_tricky"))
    if len(check.problems) != before:
        return None
    return Rate(id=rate_id, groups=groups, **fields)


_ENTRY_KEYS = ("prefixes", "timing", "weight", "rate", "rounding", "max_cost",
               "max_cost_strategy", "effective_from", "effective_to", "blocked")


def _entry(index: int, value: Any, check: _Check, timings: Mapping[str, Any],
           rates: Mapping[str, Any], zone: ZoneInfo | None) -> Entry | None:
    path = f"entries[{index}]"
    doc = check.mapping(value, path, _ENTRY_KEYS, ("prefixes",))
    if doc is None:
        return None
    before = len(check.problems)
    prefixes = check.prefixes(doc["prefixes"], _join(path, "prefixes")) if "prefixes" in doc \
        else ()
    blocked = check.boolean(doc.get("blocked", False), _join(path, "blocked"))
    rate = doc.get("rate")
    if rate is None and not blocked:
        check.bad(_join(path, "rate"), "required unless blocked")
    elif rate is not None and (not isinstance(rate, str) or rate not in rates):
        check.bad(_join(path, "rate"), f"no rate named {rate!r}")
    timing = doc.get("timing")
    if timing is not None and (not isinstance(timing, str) or timing not in timings):
        check.bad(_join(path, "timing"), f"no timing named {timing!r}")
    weight = check.decimal(doc.get("weight", 0), _join(path, "weight"), None)
    rounding = doc.get("rounding")
    if rounding is not None:
        rounding = check.rounding(rounding, _join(path, "rounding"))
    max_cost = doc.get("max_cost")
    strategy = doc.get("max_cost_strategy")
    if max_cost is not None:
        max_cost = check.decimal(max_cost, _join(path, "max_cost"))
        if strategy is None:
            check.bad(_join(path, "max_cost_strategy"), "required when max_cost is set")
    if strategy is not None:
        strategy = check.choice(strategy, _join(path, "max_cost_strategy"), MAX_COST_STRATEGIES)
        if doc.get("max_cost") is None:
            check.bad(_join(path, "max_cost"), "required when max_cost_strategy is set")
    begin = end = None
    if doc.get("effective_from") is not None:
        begin = check.instant(doc["effective_from"], _join(path, "effective_from"), zone)
    if doc.get("effective_to") is not None:
        end = check.instant(doc["effective_to"], _join(path, "effective_to"), zone)
    if begin is not None and end is not None and end <= begin:
        check.bad(_join(path, "effective_to"), "must be after effective_from")
    if len(check.problems) != before:
        return None
    return Entry(index=index, prefixes=prefixes, rate=rate, timing=timing, weight=weight,
                 rounding=rounding, max_cost=max_cost, max_cost_strategy=strategy,
                 effective_from=begin, effective_to=end, blocked=blocked)


def load_bundle(value: Any, path: str = "bundle") -> Bundle:
    """Load one bundle document C{{id, seconds, prefixes, increment_s,
    connect_fee, price}}; raise L{TariffError} when it is invalid."""
    check = _Check()
    bundle = _bundle(value, path, check)
    if check.problems or bundle is None:
        raise TariffError(check.problems)
    return bundle


def _bundle(value: Any, path: str, check: _Check) -> Bundle | None:
    keys = ("id", "seconds", "prefixes", "increment_s", "connect_fee", "price")
    doc = check.mapping(value, path, keys, ("id", "seconds", "prefixes"))
    if doc is None:
        return None
    before = len(check.problems)
    bundle_id = check.name(doc["id"], _join(path, "id")) if "id" in doc else None
    seconds = check.integer(doc["seconds"], _join(path, "seconds"), 0) if "seconds" in doc \
        else None
    prefixes = check.prefixes(doc["prefixes"], _join(path, "prefixes")) if "prefixes" in doc \
        else ()
    increment = check.integer(doc.get("increment_s", 1), _join(path, "increment_s"), 1)
    connect_fee = check.decimal(doc.get("connect_fee", "0"), _join(path, "connect_fee"))
    price = check.decimal(doc.get("price", "0"), _join(path, "price"))
    if len(check.problems) != before or bundle_id is None or seconds is None:
        return None
    return Bundle(bundle_id, seconds, prefixes, increment, connect_fee, price)  # type: ignore[arg-type]


_TOP_KEYS = ("timezone", "period_boundary", "rounding", "timings", "rates", "entries", "bundles")


def load_tariff(document: Mapping[str, Any]) -> Tariff:
    """Validate a tariff document (rating.md 1.1 and 6) and build the model.

    @raise TariffError: listing every problem; nothing is half-loaded.
    """
    check = _Check()
    doc = check.mapping(document, "", _TOP_KEYS, ("timezone", "rates", "entries"))
    if doc is None:
        raise TariffError(check.problems)
    zone = None
    name = doc.get("timezone")
    try:
        zone = ZoneInfo(name) if isinstance(name, str) and name else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if zone is None and "timezone" in doc:
        check.bad("timezone", f"unknown IANA time zone {name!r}")
    boundary = check.choice(doc.get("period_boundary", "start"), "period_boundary",
                            PERIOD_BOUNDARIES)
    rounding = check.rounding(doc.get("rounding", {}), "rounding")
    timings: dict[str, Timing] = {}
    raw_timings = _named(doc.get("timings", {}), "timings", check)
    for key, raw in raw_timings.items():
        timing = _timing(key, raw, f"timings.{key}", check)
        if timing is not None:
            timings[key] = timing
    raw_rates = _named(doc.get("rates"), "rates", check) if "rates" in doc else {}
    rates: dict[str, Rate] = {}
    for key, raw in raw_rates.items():
        rate = _rate(key, raw, f"rates.{key}", check)
        if rate is not None:
            rates[key] = rate
    entries = []
    for i, raw in enumerate(check.items(doc.get("entries", []), "entries")):
        entry = _entry(i, raw, check, raw_timings, raw_rates, zone)
        if entry is not None:
            entries.append(entry)
    bundles: dict[str, Bundle] = {}
    for i, raw in enumerate(check.items(doc.get("bundles", []), "bundles")):
        bundle = _bundle(raw, f"bundles[{i}]", check)
        if bundle is not None and bundle.id in bundles:
            check.bad(f"bundles[{i}].id", f"duplicate bundle id {bundle.id!r}")
        elif bundle is not None:
            bundles[bundle.id] = bundle
    if check.problems:
        raise TariffError(check.problems)
    assert zone is not None and boundary is not None and rounding is not None
    from rating.lookup import ambiguous_entries, coverage_gaps  # lookup imports this module

    problems = ambiguous_entries(entries, timings)
    if problems:
        raise TariffError(problems)
    return Tariff(timezone=name, zone=zone, period_boundary=boundary, rounding=rounding,
                  timings=timings, rates=rates, entries=tuple(entries), bundles=bundles,
                  warnings=tuple(coverage_gaps(entries, timings)))


def _named(value: Any, path: str, check: _Check) -> Mapping[str, Any]:
    """A mapping of names to documents, the names checked."""
    if not isinstance(value, Mapping):
        check.bad(path, "must be an object of named items")
        return {}
    for key in value:
        check.name(key, f"{path}.{key}")
    return value


def loads_tariff(text: str, fmt: str = "json") -> Tariff:
    """Load a tariff from JSON or TOML text; numbers become C{Decimal}, never float.

    @raise TariffError: on a syntax error or any invalid value.
    """
    try:
        if fmt == "toml":
            document = tomllib.loads(text, parse_float=Decimal)
        else:
            document = json.loads(text, parse_float=Decimal)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        raise TariffError([f"(document): not valid {fmt}: {error}"]) from None
    return load_tariff(document)


def _plain(value: Any) -> Any:
    """A model value as document data: decimals and dates as text, sets
    sorted, dataclasses as objects without their name and unset keys."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, frozenset | tuple):
        return [_plain(v) for v in (sorted(value) if isinstance(value, frozenset) else value)]
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)
                if f.name not in ("id", "index", "name") and getattr(value, f.name) is not None}
    return value


def dump_tariff(tariff: Tariff) -> dict[str, Any]:
    """The document of C{tariff}: C{load_tariff(dump_tariff(t))} equals C{t}."""
    timings = {}
    for name, timing in tariff.timings.items():
        doc = {k: v for k, v in _plain(timing).items() if v and k not in ("start_s", "end_s")}
        timings[name] = {**doc, "start": format_clock(timing.start_s),
                         "end": format_clock(timing.end_s)}
    return {"timezone": tariff.timezone, "period_boundary": tariff.period_boundary,
            "rounding": _plain(tariff.rounding), "timings": timings,
            "rates": {rate_id: _plain(rate) for rate_id, rate in tariff.rates.items()},
            "entries": [_plain(entry) for entry in tariff.entries],
            "bundles": [{"id": b.id, **_plain(b)} for b in tariff.bundles.values()]}
