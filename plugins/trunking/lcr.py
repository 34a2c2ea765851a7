"""Least-cost routing: rank a routing plan's vendor connections for one call.

Pure (no I/O, no Twisted): L{rank_routes} takes the dialled number, the
call's setup instant, the candidate connections (each with its vendor and
its vendor tariff as a L{rating.lookup.TariffIndex}), the routing plan, and
optionally the customer's cost of the same call (profit guarantee), the
connections known to be down, quality figures and a random source, and
answers a L{Ranking}: the routes in the order to try them, each with why it
is there, and every candidate left out, each with a reason.

Plans are loaded by L{plugins.trunking.lcr_plans} (re-exported here).

Rules (rating.md 4.1 to 4.3; decisions in C{docs/lcr.md}):

  1. The plan entries whose prefix starts the number (or the catch-all
     C{*any}) give the candidates.  Routes of a longer plan prefix come
     first, always; a connection listed under several matching entries
     keeps its longest one (then the highest weight, then the first
     listed).
  2. A candidate is dropped, with its reason, when it is not in a matching
     entry, disabled, of a vendor that is not active, currently unavailable,
     priced in another currency, without a (valid) tariff, or when its
     tariff has no rate for the number or blocks it.  One vendor lacking a
     rate never fails the ranking.
  3. Each remaining route is priced with the vendor's full cost of a
     reference call (L{rating.cost.cost}: fees, increments, minimum,
     rounding) of C{duration_s} seconds (default 60, CGR's default usage)
     answered at the setup instant: never the per-minute price alone.
  4. The profit guarantee drops routes costing more than the ceiling
     (strictly more: an equal cost is kept); if that drops all of them the
     call is rejected, or the cheapest is kept at a loss (C{on_empty}).
  5. Within one plan prefix the strategy orders the routes: C{lcr} by cost
     then the entry's weight then the connection's weight, C{priority} by
     the entry's weight then the plan's listed order, C{weighted} by a
     random draw weighted by the entries' weights (the random source is
     injected), C{quality} by the plan's quality metrics then the weights
     then cost.  A final tie goes to the lower connection id (or is drawn,
     C{tie_break: random}).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, DecimalException
from typing import Any

from plugins.trunking.lcr_plans import (
    QUALITY_METRICS,
    STRATEGIES,
    PlanEntry,
    PlanError,
    ProfitGuarantee,
    RoutingPlan,
    load_guarantee,
    load_plan,
    plan_from_row,
)
from rating.cost import Breakdown, cost
from rating.lookup import BLOCKED_DESTINATION, DestinationRejected, TariffIndex
from rating.tariff import Rate, Tariff

__all__ = [
    "DEFAULT_REFERENCE_DURATION_S", "QUALITY_METRICS", "REASONS", "STRATEGIES", "Candidate",
    "ExcludedRoute", "PlanEntry", "PlanError", "ProfitGuarantee", "Quality", "RankedRoute",
    "Ranking", "RoutingPlan", "candidate_from_rows", "load_guarantee", "load_plan",
    "plan_from_row", "rank_routes", "reference_cost",
]

#: The usage a route is priced for when the call's own is not known (rating.md 4.1).
DEFAULT_REFERENCE_DURATION_S = 60
VENDOR_ACTIVE = "active"

# Exclusion reasons, in the order a candidate is checked.
NOT_IN_PLAN = "not_in_plan"
UNKNOWN_CONNECTION = "unknown_connection"
DISABLED = "disabled"
VENDOR_INACTIVE = "vendor_inactive"
UNAVAILABLE = "unavailable"
CURRENCY_MISMATCH = "currency_mismatch"
NO_TARIFF = "no_tariff"
INVALID_TARIFF = "invalid_tariff"
NO_RATE = "no_rate"
BLOCKED = "blocked"
COST_ERROR = "cost_error"
PROFIT_GUARANTEE = "profit_guarantee"
#: Every exclusion reason (a bounded set: usable as a metric label).
REASONS = (NOT_IN_PLAN, UNKNOWN_CONNECTION, DISABLED, VENDOR_INACTIVE, UNAVAILABLE,
           CURRENCY_MISMATCH, NO_TARIFF, INVALID_TARIFF, NO_RATE, BLOCKED, COST_ERROR,
           PROFIT_GUARANTEE)


@dataclass(frozen=True)
class Quality:
    """Measured quality of a connection (computed elsewhere, passed in).

    @ivar asr: answer-seizure ratio, 0 to 1.
    @ivar acd: average call duration, seconds.
    @ivar pdd: post-dial delay, seconds.
    """

    asr: Decimal | None = None
    acd: Decimal | None = None
    pdd: Decimal | None = None


@dataclass(frozen=True)
class Candidate:
    """A vendor connection that may carry the call.

    @ivar weight: the connection's own weight: among candidates equal on
        the strategy's keys and the entry weight, the higher goes first.
    @ivar tariff: the vendor tariff, or C{None} when the connection has none.
    @ivar currency: the tariff's currency (C{None}: unknown, never a mismatch).
    @ivar problem: why the connection's stored tariff cannot be used (it
        is then excluded as C{invalid_tariff}).
    """

    connection_id: int
    vendor: str
    vendor_id: int | None = None
    name: str = ""
    enabled: bool = True
    vendor_status: str = VENDOR_ACTIVE
    tariff: TariffIndex | Tariff | None = None
    weight: int = 0
    currency: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class RankedRoute:
    """One route, in the order to try it.

    @ivar position: 1 for the first route to try.
    @ivar plan_prefix: the plan entry's prefix that brought it in.
    @ivar weight: that entry's weight; C{connection_weight} the connection's.
    @ivar matched_prefix: the vendor tariff's prefix that priced it.
    @ivar cost: the vendor's cost of the reference call.
    @ivar margin: the customer's cost minus C{cost}, when that is known.
    @ivar reason: why it stands at this position, for people.
    @ivar loss: kept although the profit guarantee dropped it (on_empty).
    """

    position: int
    connection_id: int
    name: str
    vendor_id: int | None
    vendor: str
    plan_prefix: str
    plan_entry: int
    weight: Decimal
    connection_weight: int
    matched_prefix: str
    rate: Rate
    cost: Decimal
    breakdown: Breakdown = field(repr=False, compare=False)
    margin: Decimal | None
    reason: str
    loss: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (decimals as strings)."""
        first = self.rate.groups[0]
        return {"position": self.position, "connection_id": self.connection_id,
                "connection": self.name, "vendor_id": self.vendor_id, "vendor": self.vendor,
                "plan_prefix": self.plan_prefix, "plan_entry": self.plan_entry,
                "weight": str(self.weight), "connection_weight": self.connection_weight,
                "matched_prefix": self.matched_prefix,
                "rate": {"id": self.rate.id, "price": str(first.price),
                         "unit_s": first.unit_s, "increment_s": first.increment_s,
                         "connect_fee": str(self.rate.connect_fee)},
                "cost": str(self.cost),
                "margin": None if self.margin is None else str(self.margin),
                "reason": self.reason, "loss": self.loss}


@dataclass(frozen=True)
class ExcludedRoute:
    """A candidate left out, with one of L{REASONS} and a sentence."""

    connection_id: int
    name: str
    vendor_id: int | None
    vendor: str
    reason: str
    detail: str
    plan_prefix: str | None = None
    cost: Decimal | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (decimals as strings)."""
        return {"connection_id": self.connection_id, "connection": self.name,
                "vendor_id": self.vendor_id, "vendor": self.vendor, "reason": self.reason,
                "detail": self.detail, "plan_prefix": self.plan_prefix,
                "cost": None if self.cost is None else str(self.cost)}


@dataclass(frozen=True)
class Ranking:
    """What L{rank_routes} answers.

    @ivar ceiling: the profit guarantee's highest vendor cost, if any.
    @ivar loss: every route broke the profit guarantee and the cheapest
        was kept anyway (C{on_empty: cheapest}).
    """

    number: str
    start: dt.datetime
    duration_s: int
    strategy: str
    routes: tuple[RankedRoute, ...]
    excluded: tuple[ExcludedRoute, ...]
    customer_cost: Decimal | None = None
    ceiling: Decimal | None = None
    loss: bool = False

    @property
    def rejected(self) -> bool:
        """Whether no route is left (the call cannot be routed)."""
        return not self.routes

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (decimals as strings, the instant in ISO 8601)."""
        return {"number": self.number, "start": self.start.isoformat(),
                "duration_s": self.duration_s, "strategy": self.strategy,
                "customer_cost": None if self.customer_cost is None
                else str(self.customer_cost),
                "ceiling": None if self.ceiling is None else str(self.ceiling),
                "loss": self.loss, "rejected": self.rejected,
                "routes": [r.as_dict() for r in self.routes],
                "excluded": [e.as_dict() for e in self.excluded]}


def candidate_from_rows(connection: Mapping[str, Any], vendor: Mapping[str, Any] | None,
                        tariff: TariffIndex | Tariff | None, currency: str | None = None,
                        problem: str | None = None) -> Candidate:
    """A candidate from provisioned rows (C{connection}, its C{vendor}) and
    the connection's loaded tariff (C{None}: it has none)."""
    return Candidate(
        connection_id=int(connection["id"]),
        vendor=str(vendor.get("name", "")) if vendor is not None else "",
        vendor_id=connection.get("vendor_id"), name=str(connection.get("name", "")),
        enabled=bool(connection.get("enabled", True)),
        vendor_status=str(vendor.get("status", VENDOR_ACTIVE)) if vendor is not None
        else "missing",
        tariff=tariff, currency=currency, problem=problem,
        weight=int(connection.get("weight") or 0))


def reference_cost(tariff: TariffIndex | Tariff, number: str, start: dt.datetime,
                   duration_s: int = DEFAULT_REFERENCE_DURATION_S) -> Decimal:
    """The cost of a reference call on C{tariff} (the customer's, for the
    profit guarantee's C{event_cost}).

    @raise rating.lookup.DestinationRejected: the tariff does not rate C{number}.
    """
    index = tariff if isinstance(tariff, TariffIndex) else TariffIndex(tariff)
    return cost(index.match(number, start), duration_s).cost


# -- ranking ---------------------------------------------------------------------------


@dataclass
class _Slot:
    """A candidate placed by the plan, then priced."""

    candidate: Candidate
    entry: PlanEntry
    listed: int
    rate: Rate | None = None
    matched_prefix: str = ""
    breakdown: Breakdown | None = None
    tie: float = 0.0

    @property
    def cost(self) -> Decimal:
        assert self.breakdown is not None
        return self.breakdown.cost


def _excluded(c: Candidate, reason: str, detail: str, slot: _Slot | None = None,
              price: Decimal | None = None) -> ExcludedRoute:
    return ExcludedRoute(c.connection_id, c.name, c.vendor_id, c.vendor, reason, detail,
                         slot.entry.prefix if slot is not None else None, price)


def _placed(number: str, plan: RoutingPlan, candidates: Sequence[Candidate],
            excluded: list[ExcludedRoute]) -> list[_Slot]:
    """Step 1: each candidate's plan entry (longest prefix, then weight, then order)."""
    by_id: dict[int, Candidate] = {}
    for c in candidates:
        if c.connection_id in by_id:
            raise ValueError(f"connection {c.connection_id} is a candidate twice")
        by_id[c.connection_id] = c
    matching = sorted((e for e in plan.entries if e.matches(number)),
                      key=lambda e: (-e.length, -e.weight, e.index))
    slots: dict[int, _Slot] = {}
    unknown: dict[int, PlanEntry] = {}
    for entry in matching:
        for listed, connection_id in enumerate(entry.connection_ids):
            if connection_id in slots or connection_id in unknown:
                continue
            if connection_id not in by_id:
                unknown[connection_id] = entry
                continue
            slots[connection_id] = _Slot(by_id[connection_id], entry, listed)
    for connection_id, entry in unknown.items():
        excluded.append(ExcludedRoute(connection_id, "", None, "", UNKNOWN_CONNECTION,
                                      f"plan prefix {entry.prefix} lists connection "
                                      f"{connection_id}, which is not a candidate "
                                      "(deleted, or not given)",
                                      entry.prefix))
    for c in candidates:
        if c.connection_id not in slots:
            excluded.append(_excluded(c, NOT_IN_PLAN, f"no plan entry for {number} "
                                                      "lists this connection"))
    return list(slots.values())


def _priced(slot: _Slot, number: str, start: dt.datetime, duration_s: int,
            unavailable: frozenset[int], currency: str | None,
            indexes: dict[int, TariffIndex]) -> ExcludedRoute | None:
    """Step 2 and 3: the reason C{slot} cannot carry the call, or C{None}
    once it is priced."""
    c = slot.candidate
    if not c.enabled:
        return _excluded(c, DISABLED, "the connection is disabled", slot)
    if c.vendor_status != VENDOR_ACTIVE:
        return _excluded(c, VENDOR_INACTIVE, f"vendor {c.vendor or c.vendor_id} is "
                                             f"{c.vendor_status}", slot)
    if c.connection_id in unavailable:
        return _excluded(c, UNAVAILABLE, "the connection is down or asked for a pause "
                                         "(probe failure, 503 Retry-After)", slot)
    if currency is not None and c.currency is not None and c.currency != currency:
        return _excluded(c, CURRENCY_MISMATCH, f"the vendor tariff is in {c.currency}, "
                                               f"the call in {currency}", slot)
    if c.problem is not None:
        return _excluded(c, INVALID_TARIFF, c.problem, slot)
    if c.tariff is None:
        return _excluded(c, NO_TARIFF, "the connection has no vendor tariff", slot)
    index = c.tariff
    if not isinstance(index, TariffIndex):
        if id(index) not in indexes:
            indexes[id(index)] = TariffIndex(index)
        index = indexes[id(index)]
    try:
        match = index.match(number, start)
        slot.breakdown = cost(match, duration_s)
    except DestinationRejected as rejected:
        if rejected.reason == BLOCKED_DESTINATION:
            return _excluded(c, BLOCKED, f"the vendor tariff blocks {number}", slot)
        return _excluded(c, NO_RATE, f"the vendor tariff has no rate for {number}", slot)
    except (DecimalException, OverflowError) as error:
        return _excluded(c, COST_ERROR, f"the cost cannot be computed: "
                                        f"{type(error).__name__}", slot)
    slot.rate = match.rate
    slot.matched_prefix = match.prefix
    return None


def _guaranteed(slots: list[_Slot], guarantee: ProfitGuarantee, ceiling: Decimal,
                excluded: list[ExcludedRoute]) -> tuple[list[_Slot], bool]:
    """Step 4: the routes within C{ceiling}, and whether one is kept at a loss."""
    kept = [s for s in slots if s.cost <= ceiling]
    dropped = [s for s in slots if s.cost > ceiling]
    loss = False
    if dropped and not kept and guarantee.on_empty == "cheapest":
        cheapest = min(dropped, key=lambda s: (s.cost, -s.entry.weight,
                                               s.candidate.connection_id))
        dropped.remove(cheapest)
        kept, loss = [cheapest], True
    for s in dropped:
        excluded.append(_excluded(s.candidate, PROFIT_GUARANTEE,
                                  f"cost {s.cost} is above the ceiling {ceiling}", s, s.cost))
    return kept, loss


def _metric(slot: _Slot, name: str, quality: Mapping[int, Quality]) -> Decimal:
    """A quality figure as a sort key: better is smaller, missing is worst."""
    figures = quality.get(slot.candidate.connection_id)
    value = getattr(figures, name) if figures is not None else None
    if name == "pdd":
        return Decimal("Infinity") if value is None else value
    return Decimal(1) if value is None else -value


def _weighted(group: list[_Slot], rng: random.Random) -> list[_Slot]:
    """A weighted draw without replacement: each next route is picked with a
    chance proportional to its weight; weight-0 routes follow, cheapest first."""
    pool = sorted((s for s in group if s.entry.weight > 0),
                  key=lambda s: s.candidate.connection_id)
    rest = sorted((s for s in group if s.entry.weight <= 0),
                  key=lambda s: (s.cost, s.tie, s.candidate.connection_id))
    order = []
    while pool:
        total = sum(s.entry.weight for s in pool)
        point = Decimal(repr(rng.random())) * total
        for i, s in enumerate(pool):
            point -= s.entry.weight
            if point < 0 or i == len(pool) - 1:
                order.append(pool.pop(i))
                break
    return order + rest


def _sort_key(plan: RoutingPlan, quality: Mapping[int, Quality]) -> Callable[[_Slot], Any]:
    """The order of one plan prefix's routes under C{plan.strategy} (not C{weighted})."""
    if plan.strategy == "priority":
        def key(s: _Slot) -> Any:
            return (-s.entry.weight, s.entry.index, s.listed)
    elif plan.strategy == "quality":
        def key(s: _Slot) -> Any:
            return (*(_metric(s, m, quality) for m in plan.quality_metrics),
                    -s.entry.weight, -s.candidate.weight, s.cost, s.tie,
                    s.candidate.connection_id)
    else:
        def key(s: _Slot) -> Any:
            return (s.cost, -s.entry.weight, -s.candidate.weight, s.tie,
                    s.candidate.connection_id)
    return key


def _ordered(slots: list[_Slot], plan: RoutingPlan, quality: Mapping[int, Quality],
             rng: random.Random) -> list[_Slot]:
    """Step 5: longest plan prefix first, then the strategy within it."""
    if plan.tie_break == "random":
        for s in sorted(slots, key=lambda s: s.candidate.connection_id):
            s.tie = rng.random()
    groups: dict[int, list[_Slot]] = {}
    for s in slots:
        groups.setdefault(s.entry.length, []).append(s)
    key = _sort_key(plan, quality)
    out: list[_Slot] = []
    for length in sorted(groups, reverse=True):
        group = groups[length]
        out += _weighted(group, rng) if plan.strategy == "weighted" else sorted(group, key=key)
    return out


def _reason(slot: _Slot, before: _Slot | None, after: _Slot | None, plan: RoutingPlan,
            quality: Mapping[int, Quality]) -> str:
    """Why C{slot} stands where it does, next to its neighbours."""
    entry = slot.entry
    parts = [f"plan prefix {entry.prefix}"]
    peers = [s for s in (before, after) if s is not None and s.entry.length == entry.length]
    if plan.strategy == "priority":
        parts.append(f"weight {entry.weight}, listed {slot.listed + 1} in entry {entry.index}")
        return "; ".join(parts)
    if plan.strategy == "weighted":
        if entry.weight > 0:
            parts.append(f"drawn at weight {entry.weight}")
        else:
            parts.append(f"weight 0: after the drawn routes, cost {slot.cost}")
        return "; ".join(parts)
    if plan.strategy == "quality":
        figures = quality.get(slot.candidate.connection_id)
        shown = ", ".join(f"{m} {getattr(figures, m) if figures else None}"
                          for m in plan.quality_metrics)
        parts.append(shown.replace("None", "unknown"))
        tied = [p for p in peers if all(_metric(p, m, quality) == _metric(slot, m, quality)
                                        for m in plan.quality_metrics)]
    else:
        parts.append(f"cost {slot.cost}")
        tied = [p for p in peers if p.cost == slot.cost]
    if not tied:
        return "; ".join(parts)
    parts.append(f"weight {entry.weight}")
    tied = [p for p in tied if p.entry.weight == entry.weight]
    mine = slot.candidate.weight
    if tied and any(p.candidate.weight != mine for p in tied):
        parts.append(f"connection weight {mine}")
        tied = [p for p in tied if p.candidate.weight == mine]
    if tied and plan.strategy == "quality":
        parts.append(f"cost {slot.cost}")
        tied = [p for p in tied if p.cost == slot.cost]
    if tied:
        parts.append("tie drawn at random" if plan.tie_break == "random"
                     else f"tie broken by connection id {slot.candidate.connection_id}")
    return "; ".join(parts)


def rank_routes(number: str, start: dt.datetime, candidates: Sequence[Candidate],
                plan: RoutingPlan, *, customer_cost: Decimal | None = None,
                unavailable: Iterable[int] = (),
                duration_s: int = DEFAULT_REFERENCE_DURATION_S,
                quality: Mapping[int, Quality] | None = None,
                rng: random.Random | None = None, currency: str | None = None) -> Ranking:
    """Rank C{candidates} for a call to C{number} set up at C{start}.

    @param number: the dialled number, normalised as the tariffs are written.
    @param start: the setup instant (aware): vendor rates are looked up then.
    @param customer_cost: the customer's cost of the same reference call
        (L{reference_cost}); needed by a C{event_cost} profit guarantee,
        and gives each route its margin.
    @param unavailable: connection ids known to be down.
    @param duration_s: the reference call's billable seconds.
    @param quality: figures by connection id (C{quality} strategy).
    @param rng: the random source of C{weighted} and C{tie_break: random}
        (default: a new, unseeded one).
    @param currency: the call's currency; candidates whose tariff is in
        another one are excluded.
    @raise ValueError: C{start} is naive, C{duration_s} is not a positive
        integer, a candidate is given twice, or the profit guarantee needs
        C{customer_cost} and it is missing.
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if isinstance(duration_s, bool) or not isinstance(duration_s, int) or duration_s < 1:
        raise ValueError(f"duration_s must be an integer >= 1, not {duration_s!r}")
    guarantee = plan.profit_guarantee
    ceiling = guarantee.ceiling(customer_cost) if guarantee is not None else None
    excluded: list[ExcludedRoute] = []
    down = frozenset(unavailable)
    indexes: dict[int, TariffIndex] = {}
    slots = []
    for slot in _placed(number, plan, candidates, excluded):
        refused = _priced(slot, number, start, duration_s, down, currency, indexes)
        if refused is None:
            slots.append(slot)
        else:
            excluded.append(refused)
    loss = False
    if guarantee is not None and ceiling is not None:
        slots, loss = _guaranteed(slots, guarantee, ceiling, excluded)
    figures = quality or {}
    ordered = _ordered(slots, plan, figures, rng or random.Random())
    routes = []
    for i, s in enumerate(ordered):
        assert s.rate is not None and s.breakdown is not None
        reason = _reason(s, ordered[i - 1] if i else None,
                         ordered[i + 1] if i + 1 < len(ordered) else None, plan, figures)
        if loss:
            reason = (f"every route costs more than the ceiling {ceiling}: the cheapest is "
                      f"kept at a loss; {reason}")
        routes.append(RankedRoute(
            position=i + 1, connection_id=s.candidate.connection_id, name=s.candidate.name,
            vendor_id=s.candidate.vendor_id, vendor=s.candidate.vendor,
            plan_prefix=s.entry.prefix, plan_entry=s.entry.index, weight=s.entry.weight,
            connection_weight=s.candidate.weight, matched_prefix=s.matched_prefix,
            rate=s.rate, cost=s.cost, breakdown=s.breakdown,
            margin=None if customer_cost is None else customer_cost - s.cost,
            reason=reason, loss=loss))
    order = {reason: i for i, reason in enumerate(REASONS)}
    excluded.sort(key=lambda e: (order[e.reason], e.connection_id))
    return Ranking(number, start, duration_s, plan.strategy, tuple(routes), tuple(excluded),
                   customer_cost, ceiling, loss)
