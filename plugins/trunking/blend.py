"""The LCR blending tool: a sales tariff document from vendor tariffs (rating.md 4.4).

For each prefix of the code deck (by default every prefix any vendor
prices), L{blend}:

  1. looks up each vendor's longest-prefix rate for the prefix at the
     instant C{at} (the vendor's rate for a number starting with it) and
     takes the per-minute price of its first group, C{price * 60 / unit_s};
     vendors with no rate, or a blocked one, do not cover the prefix;
  2. sorts the covering vendors by that price (then by name) and combines
     the C{depth} cheapest into the C{base}: the price at position C{depth}
     (C{method: depth}, the spec's rule), their plain average (C{average})
     or their average weighted by the vendors' weights (C{weighted}); when
     fewer vendors cover the prefix, the ones there are are used and the
     prefix is reported as short;
  3. sells at C{base * (1 + margin_pct/100) + margin_abs}, clamped to
     C{[min_sell, max_sell]}, then raised to at least C{base +
     min_markup_abs} (the markup floor beats C{max_sell});
  4. rounds once with C{rounding} (default C{up}, 4 decimals); a rounding
     that would land below C{base + min_markup_abs} is replaced by C{up};
  5. sells in increments no finer than the coarsest of the vendors used
     (the largest first increment, the largest later increment), with the
     highest of their connect fees.

Prefixes no vendor covers are reported and left out of the document.  The
arithmetic is exact (C{Fraction}); only step 4 rounds.  The answer's
C{document} is a tariff document (rating.md section 6) that
L{rating.tariff.load_tariff} loads; identical sell rates are shared, named
C{S1}, C{S2}, ... in code-deck order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal
from fractions import Fraction
from typing import Any

from rating.cost import round_amount
from rating.lookup import BLOCKED_DESTINATION, DestinationRejected, TariffIndex
from rating.tariff import ANY_PREFIX, Rate, Rounding, Tariff

__all__ = ["METHODS", "Blend", "BlendOptions", "BlendedDestination", "VendorDeck",
           "VendorPrice", "blend", "code_deck"]

#: How the C{depth} cheapest prices become the base (step 2).
METHODS = ("depth", "average", "weighted")
#: The sell rates' unit: prices are per minute.
SELL_UNIT_S = 60
#: Display of a price that does not terminate (details only, never sold from).
_SHOW = Context(prec=34)


@dataclass(frozen=True)
class VendorDeck:
    """One vendor's tariff, and its weight for C{method: weighted}."""

    name: str
    tariff: Tariff | TariffIndex
    weight: Decimal = Decimal(1)


@dataclass(frozen=True)
class BlendOptions:
    """The knobs of L{blend} (rating.md 4.4 names).

    @ivar depth: how many of the cheapest vendors are combined (1 = cheapest).
    @ivar method: one of L{METHODS}.
    @ivar rounding: the rounding of the sell price per minute.
    @ivar timezone: the sales tariff's zone.
    @ivar tariff_rounding: the sales tariff's per-call rounding (2.7).
    @ivar effective_from: written on every entry (a future date gives the
        customers their notice period), or C{None}.
    """

    depth: int = 1
    method: str = "depth"
    margin_pct: Decimal = Decimal(0)
    margin_abs: Decimal = Decimal(0)
    min_sell: Decimal | None = None
    max_sell: Decimal | None = None
    min_markup_abs: Decimal = Decimal(0)
    rounding: Rounding = field(default_factory=Rounding)
    timezone: str = "UTC"
    tariff_rounding: Rounding = field(default_factory=Rounding)
    effective_from: dt.datetime | None = None

    def check(self) -> None:
        """@raise ValueError: an option is out of range."""
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"depth must be an integer >= 1, not {self.depth!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}")
        for name in ("margin_pct", "margin_abs", "min_markup_abs", "min_sell", "max_sell"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, Decimal) or not value.is_finite()
                                      or value < 0):
                raise ValueError(f"{name} must be a finite Decimal >= 0")
        if (self.min_sell is not None and self.max_sell is not None
                and self.max_sell < self.min_sell):
            raise ValueError("max_sell must not be below min_sell")


@dataclass(frozen=True)
class VendorPrice:
    """A vendor's rate for one code-deck prefix.

    @ivar per_minute: the first group's price per minute (exact when it
        terminates, else shown to 34 digits).
    """

    vendor: str
    matched_prefix: str
    rate_id: str
    per_minute: Decimal
    connect_fee: Decimal
    first_increment_s: int
    next_increment_s: int
    exact: Fraction = field(repr=False, compare=False)
    weight: Decimal = Decimal(1)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (decimals as strings)."""
        return {"vendor": self.vendor, "matched_prefix": self.matched_prefix,
                "rate": self.rate_id, "per_minute": str(self.per_minute),
                "connect_fee": str(self.connect_fee),
                "increments": f"{self.first_increment_s}/{self.next_increment_s}"}


@dataclass(frozen=True)
class BlendedDestination:
    """How one prefix was priced.

    @ivar vendors: every covering vendor, cheapest first; the first C{used}
        made the base.
    @ivar blocked: vendors whose tariff blocks the prefix.
    """

    prefix: str
    sell: Decimal
    base: Decimal
    used: int
    rate_id: str
    vendors: tuple[VendorPrice, ...]
    blocked: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (decimals as strings)."""
        return {"prefix": self.prefix, "sell": str(self.sell), "base": str(self.base),
                "used": self.used, "rate": self.rate_id,
                "vendors": [v.as_dict() for v in self.vendors], "blocked": list(self.blocked)}


@dataclass(frozen=True)
class Blend:
    """The result: the sales tariff document and how each prefix was priced.

    @ivar uncovered: code-deck prefixes no vendor prices (not in C{document}).
    @ivar short: prefixes priced by fewer vendors than C{depth}.
    """

    document: dict[str, Any]
    destinations: tuple[BlendedDestination, ...]
    uncovered: tuple[str, ...]
    short: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (decimals as strings)."""
        return {"document": self.document,
                "destinations": [d.as_dict() for d in self.destinations],
                "uncovered": list(self.uncovered), "short": list(self.short)}


def _show(value: Fraction) -> Decimal:
    """C{value} as a Decimal: exact when it terminates within 34 digits."""
    return _SHOW.divide(Decimal(value.numerator), Decimal(value.denominator))


def _increments(rate: Rate) -> tuple[int, int]:
    """The first increment and the coarsest later one (the first again for
    a one-group rate)."""
    first = rate.groups[0].increment_s
    later = [g.increment_s for g in rate.groups[1:]]
    return first, max(later) if later else first


def code_deck(vendors: Iterable[VendorDeck]) -> list[str]:
    """Every prefix the vendors' entries name (C{*any} aside), sorted."""
    prefixes: set[str] = set()
    for vendor in vendors:
        tariff = vendor.tariff.tariff if isinstance(vendor.tariff, TariffIndex) \
            else vendor.tariff
        for entry in tariff.entries:
            prefixes.update(p for p in entry.prefixes if p != ANY_PREFIX)
    return sorted(prefixes)


def _prices(prefix: str, at: dt.datetime,
            indexes: Sequence[tuple[VendorDeck, TariffIndex]]) -> tuple[list[VendorPrice],
                                                                         list[str]]:
    """Step 1: the covering vendors' prices for C{prefix}, and the blocking ones."""
    prices, blocked = [], []
    for vendor, index in indexes:
        try:
            match = index.match(prefix, at)
        except DestinationRejected as rejected:
            if rejected.reason == BLOCKED_DESTINATION:
                blocked.append(vendor.name)
            continue
        group = match.rate.groups[0]
        exact = Fraction(group.price) * SELL_UNIT_S / group.unit_s
        first, later = _increments(match.rate)
        prices.append(VendorPrice(vendor.name, match.prefix, match.rate.id, _show(exact),
                                  match.rate.connect_fee, first, later, exact, vendor.weight))
    prices.sort(key=lambda p: (p.exact, p.vendor))
    return prices, blocked


def _base(used: Sequence[VendorPrice], method: str) -> Fraction:
    """Step 2: the base price of the vendors used."""
    if method == "depth":
        return used[-1].exact
    weights = [Fraction(p.weight) if method == "weighted" else Fraction(1) for p in used]
    total = sum(weights)
    if not total:
        weights, total = [Fraction(1)] * len(used), Fraction(len(used))
    return sum((w * p.exact for w, p in zip(weights, used, strict=True)), Fraction(0)) / total


def _round(value: Fraction, rounding: Rounding) -> Decimal:
    return round_amount(Decimal(value.numerator), rounding, value.denominator)


def _sell(base: Fraction, options: BlendOptions) -> Decimal:
    """Steps 3 and 4: margin, clamps, markup floor, one rounding."""
    sell = base * (1 + Fraction(options.margin_pct) / 100) + Fraction(options.margin_abs)
    if options.min_sell is not None:
        sell = max(sell, Fraction(options.min_sell))
    if options.max_sell is not None:
        sell = min(sell, Fraction(options.max_sell))
    floor = base + Fraction(options.min_markup_abs)
    sell = max(sell, floor)
    rounded = _round(sell, options.rounding)
    if rounded < floor:
        rounded = _round(sell, Rounding("up", options.rounding.decimals))
    return rounded


def _rate(sell: Decimal, used: Sequence[VendorPrice]) -> dict[str, Any]:
    """Step 5: the sell rate document."""
    first = max(p.first_increment_s for p in used)
    later = max(p.next_increment_s for p in used)
    connect = max(p.connect_fee for p in used)
    groups = [{"start_s": 0, "price": str(sell), "unit_s": SELL_UNIT_S, "increment_s": first}]
    if later != first:
        groups.append({"start_s": first, "price": str(sell), "unit_s": SELL_UNIT_S,
                       "increment_s": later})
    rate: dict[str, Any] = {"groups": groups}
    if connect:
        rate["connect_fee"] = str(connect)
    return rate


def blend(vendors: Sequence[VendorDeck], at: dt.datetime, options: BlendOptions | None = None,
          prefixes: Iterable[str] | None = None) -> Blend:
    """Build a sales tariff from C{vendors}' rates at instant C{at}.

    @param prefixes: the code deck (default: L{code_deck} of the vendors).
    @raise ValueError: no vendor, a naive C{at}, or a bad option.
    """
    options = options or BlendOptions()
    options.check()
    if not vendors:
        raise ValueError("at least one vendor tariff is needed")
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    indexes = [(v, v.tariff if isinstance(v.tariff, TariffIndex) else TariffIndex(v.tariff))
               for v in vendors]
    deck = list(dict.fromkeys(prefixes)) if prefixes is not None else code_deck(vendors)
    rates: dict[str, dict[str, Any]] = {}
    names: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    destinations, uncovered, short = [], [], []
    for prefix in deck:
        prices, blocked = _prices(prefix, at, indexes)
        if not prices:
            uncovered.append(prefix)
            continue
        used = prices[:options.depth]
        if len(used) < options.depth:
            short.append(prefix)
        base = _base(used, options.method)
        sell = _sell(base, options)
        rate = _rate(sell, used)
        key = repr(rate)
        if key not in names:
            names[key] = f"S{len(names) + 1}"
            rates[names[key]] = rate
            members[names[key]] = []
        members[names[key]].append(prefix)
        destinations.append(BlendedDestination(prefix, sell, _show(base), len(used),
                                               names[key], tuple(prices), tuple(blocked)))
    entries = []
    for name, listed in members.items():
        entry: dict[str, Any] = {"prefixes": listed, "rate": name}
        if options.effective_from is not None:
            entry["effective_from"] = options.effective_from.isoformat()
        entries.append(entry)
    document = {"timezone": options.timezone, "period_boundary": "start",
                "rounding": {"method": options.tariff_rounding.method,
                             "decimals": options.tariff_rounding.decimals},
                "rates": rates, "entries": entries}
    return Blend(document, tuple(destinations), tuple(uncovered), tuple(short))
