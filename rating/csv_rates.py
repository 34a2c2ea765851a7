"""Import a rate deck from CSV into a tariff document (rating.md 6).

One row per prefix (and period/version): C{prefix}, C{description},
C{price} (per C{unit_s}, default 60 s), the intervals, C{effective_from}
(alias C{effective_date}), and any optional column named after a key of the
tariff format.  The intervals are one C{intervals} column C{"F/N"} (first /
next, e.g. C{60/6}) or two columns C{first_interval} and C{next_interval};
C{next_price} prices the next intervals differently (PB P1/P2).  A row is
mapped onto groups as rating.md 1.1 maps PB's model:
C{[{0, price, unit_s, F}, {F, next_price, unit_s, N}]} (one group when
C{F == N} and both prices are equal).

Every cell is checked; every problem is reported as C{"row R, column C:
message"} (the header is row 1) and any problem rejects the whole file.
Identical rates are shared.  The document is then loaded, so cross-row
problems (ambiguous entries) reject the file too, reported by row.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rating.tariff import (
    MAX_COST_STRATEGIES,
    MAX_ROUNDING_DECIMALS,
    PERIOD_BOUNDARIES,
    ROUNDING_METHODS,
    Tariff,
    TariffError,
    _Check,
    load_tariff,
)

_ALIASES = {"effective_date": "effective_from"}
_RATE_DECIMALS = ("connect_fee", "disconnect_fee", "min_charge", "post_call_surcharge_pct")
_RATE_INTS = ("disconnect_fee_after_s", "grace_s", "free_seconds")
_KNOWN = frozenset((
    "prefix", "description", "price", "next_price", "unit_s", "intervals", "first_interval",
    "next_interval", "effective_from", "effective_to", "timing", "weight", "max_cost",
    "max_cost_strategy", "blocked", "rounding_method", "rounding_decimals",
    "connect_fee_tricky", *_RATE_DECIMALS, *_RATE_INTS))
_TRUE = frozenset(("1", "true", "yes", "y"))
_FALSE = frozenset(("0", "false", "no", "n"))
_INTERVALS = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_ENTRY_PATH = re.compile(r"entries\[(\d+)\](?:\.(\w+))?")


@dataclass(frozen=True)
class RateDeck:
    """An imported deck: the tariff C{document}, the loaded C{tariff}, the
    C{descriptions} by prefix and, for each entry index, its CSV C{rows}."""

    document: dict[str, Any]
    tariff: Tariff
    descriptions: dict[str, str]
    rows: tuple[int, ...]


def _cells(text: str, delimiter: str) -> tuple[list[str], list[list[str]]]:
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=delimiter)
    records = [r for r in reader if any(cell.strip() for cell in r)]
    if not records:
        raise TariffError(["row 1: the file is empty (a header row is required)"])
    header = [_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in records[0]]
    return header, records[1:]


def _header_problems(header: list[str]) -> list[str]:
    problems = [f"row 1, column {name or '(empty)'}: unknown column"
                for name in dict.fromkeys(header) if name not in _KNOWN]
    problems += [f"row 1, column {name}: repeated" for name in sorted(set(header))
                 if header.count(name) > 1]
    for name in ("prefix", "price"):
        if name not in header:
            problems.append(f"row 1, column {name}: required")
    if "intervals" not in header and not {"first_interval", "next_interval"} <= set(header):
        problems.append("row 1, column intervals: required (or first_interval and "
                        "next_interval)")
    return problems


class _Row:
    """Typed access to one row's cells, problems named by row and column."""

    def __init__(self, number: int, cells: Mapping[str, str], check: _Check) -> None:
        self.number = number
        self.cells = cells
        self.check = check

    def path(self, column: str) -> str:
        """C{row R, column C}."""
        return f"row {self.number}, column {column}"

    def text(self, column: str) -> str:
        """The stripped cell, C{""} when the column is absent."""
        return self.cells.get(column, "").strip()

    def decimal(self, column: str, minimum: Decimal | None = Decimal(0)) -> Decimal | None:
        """A decimal cell, or None when empty."""
        value = self.text(column)
        return self.check.decimal(value, self.path(column), minimum) if value else None

    def integer(self, column: str, minimum: int = 0, maximum: int | None = None) -> int | None:
        """An integer cell, or None when empty."""
        value = self.text(column)
        if not value:
            return None
        if not re.fullmatch(r"[+-]?\d+", value):
            self.check.bad(self.path(column), f"must be an integer, not {value!r}")
            return None
        return self.check.integer(int(value), self.path(column), minimum, maximum)

    def boolean(self, column: str) -> bool | None:
        """A true/false/yes/no/1/0 cell, or None when empty."""
        value = self.text(column).lower()
        if not value:
            return None
        if value not in _TRUE | _FALSE:
            self.check.bad(self.path(column), "must be true or false")
            return None
        return value in _TRUE

    def choice(self, column: str, choices: tuple[str, ...]) -> str | None:
        """One of C{choices}, or None when empty."""
        value = self.text(column)
        return self.check.choice(value, self.path(column), choices) if value else None


def _intervals(row: _Row, strict_blocks: bool) -> tuple[int, int] | None:
    if row.text("intervals"):
        match = _INTERVALS.match(row.text("intervals"))
        if match is None:
            row.check.bad(row.path("intervals"), "must be FIRST/NEXT seconds, e.g. 60/6")
            return None
        first, following = int(match.group(1)), int(match.group(2))
        column = "intervals"
    else:
        first_cell = row.integer("first_interval", 1)
        next_cell = row.integer("next_interval", 1)
        for column, value in (("first_interval", first_cell), ("next_interval", next_cell)):
            if value is None and not row.text(column):
                row.check.bad(row.path(column), "required")
        if first_cell is None or next_cell is None:
            return None
        first, following, column = first_cell, next_cell, "first_interval"
    if first < 1 or following < 1:
        row.check.bad(row.path(column), "intervals must be >= 1")
        return None
    if strict_blocks and first % following:
        row.check.bad(row.path(column), f"first interval {first} is not a multiple of the "
                      f"next interval {following} (required for A2B decks)")
        return None
    return first, following


def _rate(row: _Row, strict_blocks: bool) -> dict[str, Any] | None:
    before = len(row.check.problems)
    price = row.decimal("price")
    if price is None and not row.text("price"):
        row.check.bad(row.path("price"), "required")
    next_price = row.decimal("next_price")
    unit = row.integer("unit_s", 1)
    intervals = _intervals(row, strict_blocks)
    rate: dict[str, Any] = {}
    for column in _RATE_DECIMALS:
        value = row.decimal(column)
        if value is not None:
            rate[column] = str(value)
    for column in _RATE_INTS:
        value = row.integer(column)
        if value is not None:
            rate[column] = value
    tricky = row.boolean("connect_fee_tricky")
    if tricky is not None:
        rate["connect_fee_tricky"] = tricky
    if len(row.check.problems) != before or price is None or intervals is None:
        return None
    unit = unit or 60
    first, following = intervals
    second_price = next_price if next_price is not None else price
    groups = [{"start_s": 0, "price": str(price), "unit_s": unit, "increment_s": first}]
    if first != following or second_price != price:
        groups.append({"start_s": first, "price": str(second_price), "unit_s": unit,
                       "increment_s": following})
    rate["groups"] = groups
    return rate


def _entry(row: _Row, timings: Mapping[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    entry: dict[str, Any] = {"prefixes": [], "timing": None}
    prefix = row.check.name(row.text("prefix"), row.path("prefix"))
    if prefix is not None:
        entry["prefixes"] = [prefix]
    timing = row.text("timing")
    if timing and timing not in timings:
        row.check.bad(row.path("timing"), f"no timing named {timing!r}")
    elif timing:
        entry["timing"] = timing
    weight = row.decimal("weight", None)
    if weight is not None:
        entry["weight"] = str(weight)
    max_cost = row.decimal("max_cost")
    if max_cost is not None:
        entry["max_cost"] = str(max_cost)
    strategy = row.choice("max_cost_strategy", MAX_COST_STRATEGIES)
    if strategy is not None:
        entry["max_cost_strategy"] = strategy
    for column in ("effective_from", "effective_to"):
        if row.text(column):
            instant = row.check.instant(row.text(column), row.path(column), zone)
            if instant is not None:
                entry[column] = instant.isoformat()
    method = row.choice("rounding_method", ROUNDING_METHODS)
    decimals = row.integer("rounding_decimals", 0, MAX_ROUNDING_DECIMALS)
    if method is not None or decimals is not None:
        entry["rounding"] = {"method": method or "up", "decimals": 4 if decimals is None
                             else decimals}
    if row.boolean("blocked"):
        entry["blocked"] = True
    return entry


def import_rates_csv(text: str, *, timezone: str, timings: Mapping[str, Any] | None = None,
                     rounding: Mapping[str, Any] | None = None,
                     period_boundary: str = "start", strict_blocks: bool = False,
                     delimiter: str = ",") -> RateDeck:
    """Build and load a tariff document from the CSV C{text}.

    @param timezone: the tariff's IANA zone (also for naive effective dates).
    @param timings: timing documents that the C{timing} column may name.
    @param rounding: the tariff's default rounding document.
    @param strict_blocks: require the first interval to be a multiple of the
        next (A2B decks, rating.md 2.5).
    @raise TariffError: every problem of every row; nothing is imported.
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise TariffError([f"timezone: unknown IANA time zone {timezone!r}"]) from None
    if period_boundary not in PERIOD_BOUNDARIES:
        raise TariffError([f"period_boundary: must be one of {', '.join(PERIOD_BOUNDARIES)}"])
    timings = dict(timings or {})
    header, records = _cells(text, delimiter)
    problems = _header_problems(header)
    if problems:
        raise TariffError(problems)
    check = _Check()
    rates: dict[str, dict[str, Any]] = {}
    rate_ids: dict[str, str] = {}
    entries, rows, descriptions = [], [], {}
    for offset, record in enumerate(records):
        number = offset + 2
        if len(record) > len(header):
            check.bad(f"row {number}", f"{len(record)} cells for {len(header)} columns")
            continue
        row = _Row(number, dict(zip(header, record, strict=False)), check)
        entry = _entry(row, timings, zone)
        if not entry.get("blocked"):
            rate = _rate(row, strict_blocks)
            if rate is None:
                continue
            key = json.dumps(rate, sort_keys=True)
            if key not in rate_ids:
                rate_ids[key] = f"R{len(rate_ids) + 1}"
                rates[rate_ids[key]] = rate
            entry["rate"] = rate_ids[key]
        entries.append(entry)
        rows.append(number)
        if row.text("description") and entry["prefixes"]:
            descriptions[entry["prefixes"][0]] = row.text("description")
    if check.problems:
        raise TariffError(check.problems)
    document = {"timezone": timezone, "period_boundary": period_boundary,
                "rounding": dict(rounding or {"method": "up", "decimals": 4}),
                "timings": timings, "rates": rates, "entries": entries}
    try:
        tariff = load_tariff(document)
    except TariffError as error:
        raise TariffError([_by_row(p, rows) for p in error.problems]) from None
    return RateDeck(document, tariff, descriptions, tuple(rows))


def _by_row(problem: str, rows: list[int]) -> str:
    """Rewrite C{entries[i].key} in a loader message as C{row R, column key}."""
    def replace(match: re.Match[str]) -> str:
        row = f"row {rows[int(match.group(1))]}"
        return f"{row}, column {match.group(2)}" if match.group(2) else row
    return _ENTRY_PATH.sub(replace, problem)
