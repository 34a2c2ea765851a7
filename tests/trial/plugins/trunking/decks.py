"""Vendor rate decks for the LCR and blending tests: one tariff document
per vendor, one rate per prefix, written the way carriers publish them
(price per minute, first/next interval, connect fee)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rating.tariff import Tariff, load_tariff

#: A Tuesday, mid-morning (no tariff here has periods).
START = dt.datetime(2024, 5, 14, 10, 0, tzinfo=dt.UTC)


def deck(*rows: tuple[Any, ...], blocked: tuple[str, ...] = ()) -> dict[str, Any]:
    """A tariff document from rows C{(prefix, price[, first_s, next_s[,
    connect_fee]])}: price per minute, intervals default 60/60."""
    rates: dict[str, Any] = {}
    entries: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        prefix, price = row[0], row[1]
        first, later = (row[2], row[3]) if len(row) > 3 else (60, 60)
        groups = [{"start_s": 0, "price": price, "unit_s": 60, "increment_s": first}]
        if later != first:
            groups.append({"start_s": first, "price": price, "unit_s": 60,
                           "increment_s": later})
        rate: dict[str, Any] = {"groups": groups}
        if len(row) > 4:
            rate["connect_fee"] = row[4]
        rates[f"R{i}"] = rate
        entries.append({"prefixes": [prefix], "rate": f"R{i}"})
    entries += [{"prefixes": [p], "blocked": True} for p in blocked]
    return {"timezone": "UTC", "rates": rates, "entries": entries}


def tariff(*rows: tuple[Any, ...], blocked: tuple[str, ...] = ()) -> Tariff:
    """L{deck}, loaded."""
    return load_tariff(deck(*rows, blocked=blocked))
