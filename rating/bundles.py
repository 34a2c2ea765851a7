"""Bundles (included minutes) and volume discounts, rating.md section 5.

A L{Bundle} (loaded by L{rating.tariff}) defines included seconds for some
destinations; an account holds it as a L{HeldBundle} with the seconds left,
a weight and an expiry.  At answer time the matching holdings are ordered
(highest weight, then earliest expiry) and consumed from call-second 0, each
in its own increments, before the tariff prices the rest (5.1).  This module
only computes what a call would take; reserving and committing bundle
seconds is the balance store's job.

A L{DiscountPlan} gives a percentage off the time charge from a counter
value read at call start (5.2); L{select_discount} picks it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rating.tariff import ANY_PREFIX, Bundle, TariffError, _Check

COUNTERS = ("seconds", "amount")
COUNTER_PERIODS = ("day", "week", "month", "year")


def prefix_matches(prefixes: Iterable[str], number: str) -> str | None:
    """The longest of C{prefixes} that starts C{number} (C{*any} last), or None."""
    best = None
    for prefix in prefixes:
        if prefix == ANY_PREFIX:
            best = best if best is not None else ""
        elif number.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


@dataclass(frozen=True)
class HeldBundle:
    """A bundle owned by an account: C{remaining_s} seconds left, consumed
    before others of lower C{weight}, unusable from C{expires_at} on."""

    bundle: Bundle
    remaining_s: int
    weight: Decimal = Decimal(0)
    expires_at: dt.datetime | None = None

    def usable(self, number: str, at: dt.datetime) -> bool:
        """Whether the bundle covers C{number} at C{at} and has one increment left."""
        if self.expires_at is not None and at >= self.expires_at:
            return False
        if self.remaining_s < self.bundle.increment_s:
            return False
        return prefix_matches(self.bundle.prefixes, number) is not None


@dataclass(frozen=True)
class BundleUse:
    """What one bundle covers of a call (seconds after the free seconds).

    C{covered_s} seconds of the call from C{start_s} are on the bundle;
    C{consumed_s} (whole increments) is what the bundle loses.
    """

    bundle: Bundle
    start_s: int
    covered_s: int
    consumed_s: int

    @property
    def end_s(self) -> int:
        """Where the tariff (or the next bundle) takes over."""
        return self.start_s + self.consumed_s


def usable_bundles(held: Iterable[HeldBundle], number: str,
                   at: dt.datetime) -> tuple[HeldBundle, ...]:
    """The holdings usable for a call to C{number} answered at C{at}, in
    consumption order: highest weight first, then earliest expiry (none last),
    then bundle id."""
    usable = [h for h in held if h.usable(number, at)]
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    usable.sort(key=lambda h: (-h.weight, h.expires_at or far, h.bundle.id))
    return tuple(usable)


def consume_bundles(ordered: Sequence[HeldBundle], seconds: int) -> tuple[BundleUse, ...]:
    """Cover the first C{seconds} of a call with C{ordered} holdings (5.1).

    Each bundle is consumed in its own increments from where the previous one
    stopped; a final partial increment consumes the whole increment, and a
    bundle with less than one increment left is skipped.
    """
    uses = []
    at = 0
    for held in ordered:
        if at >= seconds:
            break
        increment = held.bundle.increment_s
        count = min(-(-(seconds - at) // increment), held.remaining_s // increment)
        if count <= 0:
            continue
        consumed = count * increment
        uses.append(BundleUse(held.bundle, at, min(consumed, seconds - at), consumed))
        at += consumed
    return tuple(uses)


@dataclass(frozen=True)
class DiscountTier:
    """From counter value C{threshold} on, C{pct} percent off the time charge."""

    threshold: Decimal
    pct: Decimal


@dataclass(frozen=True)
class DiscountPlan:
    """A volume discount (5.2) for calls to C{prefixes}, counting C{counter}
    (C{seconds} billed or C{amount} charged) per C{period}."""

    id: str
    prefixes: tuple[str, ...]
    counter: str
    period: str
    tiers: tuple[DiscountTier, ...]

    def pct_for(self, value: Decimal | int) -> Decimal:
        """The discount percentage for counter C{value} (0 below every tier)."""
        pct = Decimal(0)
        for tier in self.tiers:
            if value >= tier.threshold:
                pct = tier.pct
        return pct

    def increment(self, billed_s: int, amount: Decimal) -> Decimal:
        """What a committed call adds to this plan's counter."""
        return Decimal(billed_s) if self.counter == "seconds" else amount


def load_discount_plan(value: Any, path: str = "discount") -> DiscountPlan:
    """Load C{{id, prefixes, counter, period, tiers: [{threshold, pct}]}}.

    @raise TariffError: listing every problem with its key path.
    """
    check = _Check()
    keys = ("id", "prefixes", "counter", "period", "tiers")
    doc = check.mapping(value, path, keys, keys)
    if doc is None or check.problems:
        raise TariffError(check.problems)
    plan_id = check.name(doc["id"], f"{path}.id")
    prefixes = check.prefixes(doc["prefixes"], f"{path}.prefixes")
    counter = check.choice(doc["counter"], f"{path}.counter", COUNTERS)
    period = check.choice(doc["period"], f"{path}.period", COUNTER_PERIODS)
    tiers: list[DiscountTier] = []
    if not isinstance(doc["tiers"], list) or not doc["tiers"]:
        check.bad(f"{path}.tiers", "must be a non-empty list")
    else:
        for i, raw in enumerate(doc["tiers"]):
            tpath = f"{path}.tiers[{i}]"
            tier = check.mapping(raw, tpath, ("threshold", "pct"), ("threshold", "pct"))
            if tier is None or "threshold" not in tier or "pct" not in tier:
                continue
            threshold = check.decimal(tier["threshold"], f"{tpath}.threshold")
            pct = check.decimal(tier["pct"], f"{tpath}.pct", Decimal(0), Decimal(100))
            if threshold is None or pct is None:
                continue
            if tiers and threshold <= tiers[-1].threshold:
                check.bad(f"{tpath}.threshold", "thresholds must be strictly ascending")
            tiers.append(DiscountTier(threshold, pct))
    if check.problems:
        raise TariffError(check.problems)
    return DiscountPlan(plan_id, prefixes, counter, period, tuple(tiers))  # type: ignore[arg-type]


def select_discount(plans: Iterable[DiscountPlan], number: str,
                    counters: Mapping[str, Decimal | int]) -> tuple[DiscountPlan | None, Decimal]:
    """The plan for C{number} (longest matching prefix, first listed on a
    tie) and its percentage for the counter value at call start (missing
    counters are 0)."""
    best, best_len = None, -1
    for plan in plans:
        prefix = prefix_matches(plan.prefixes, number)
        if prefix is not None and len(prefix) > best_len:
            best, best_len = plan, len(prefix)
    if best is None:
        return None, Decimal(0)
    return best, best.pct_for(counters.get(best.id, 0))
