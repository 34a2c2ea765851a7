"""Tests for the pure rating layer (L{rating}): tariffs, lookup, cost,
maximum duration, bundles and rate CSV import.

The helpers here build small tariff documents for the test modules.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from rating.lookup import Match, TariffIndex
from rating.tariff import Tariff, load_tariff

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC


def group(start_s: int, price: str, unit_s: int, increment_s: int, **extra: Any) -> dict[str, Any]:
    """One rate group document."""
    return {"start_s": start_s, "price": price, "unit_s": unit_s, "increment_s": increment_s,
            **extra}


def document(rates: dict[str, Any], entries: list[dict[str, Any]] | None = None,
             **top: Any) -> dict[str, Any]:
    """A tariff document in Europe/Berlin; without C{entries}, one entry
    C{prefixes: ["49"]} per rate (the first rate only)."""
    if entries is None:
        entries = [{"prefixes": ["49"], "rate": next(iter(rates))}]
    doc: dict[str, Any] = {"timezone": "Europe/Berlin", "rates": rates, "entries": entries}
    doc.update(top)
    return doc


def one_rate(groups: list[dict[str, Any]], **fields: Any) -> Tariff:
    """A tariff with one rate C{R} (C{groups} plus C{fields}) on prefix 49."""
    return load_tariff(document({"R": {"groups": groups, **fields}}))


def matched(tariff: Tariff, at: dt.datetime | None = None, number: str = "4930123456") -> Match:
    """Look C{number} up in C{tariff} at C{at} (default: a Tuesday noon in Berlin)."""
    when = at or dt.datetime(2024, 3, 5, 12, 0, tzinfo=BERLIN)
    return TariffIndex(tariff).match(number, when)


def berlin(*args: int) -> dt.datetime:
    """An aware datetime in Europe/Berlin."""
    return dt.datetime(*args, tzinfo=BERLIN)
