"""Routing plans: the documents that say which connections serve which numbers.

A plan is C{{strategy, entries: [{prefix, connection_ids, weight}],
profit_guarantee?, tie_break?, quality_metrics?}}: the C{routing_plan}
entity's C{strategy} and C{entries} (L{plan_from_row}) plus the options
L{plugins.trunking.lcr} adds.  L{load_plan} checks every key and value and
raises one L{PlanError} naming each problem by its key path
(C{entries[1].connection_ids[0]: ...}).  Decimals are plain decimal
strings (C{"0.05"}) or integers; floats, signs and exponents are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rating.tariff import ANY_PREFIX

__all__ = ["MAX_ID", "MAX_WEIGHT", "ON_EMPTY", "QUALITY_METRICS", "STRATEGIES", "TIE_BREAKS",
           "PlanEntry", "PlanError", "ProfitGuarantee", "RoutingPlan", "load_guarantee",
           "load_plan", "plan_from_row"]

#: The strategies, as the C{routing_plan} entity names them (rating.md 4.2).
STRATEGIES = ("lcr", "priority", "weighted", "quality")
#: How routes equal on every key are ordered: by connection id, or drawn.
TIE_BREAKS = ("id", "random")
#: Quality metrics: C{pdd} lower is better, the others higher (rating.md 4.2 C{qos}).
QUALITY_METRICS = ("asr", "acd", "pdd")
#: What the profit guarantee does when it drops every route.
ON_EMPTY = ("reject", "cheapest")
#: The largest plan weight (weights are decimal, 0 or more).
MAX_WEIGHT = Decimal(10**9)
_PREFIX = re.compile(r"^\+?[0-9]{1,32}$")
_DECIMAL = re.compile(r"^[0-9]{1,20}(\.[0-9]{1,12})?$")
#: The largest connection id (ids are 64-bit).
MAX_ID = 2**63 - 1


class PlanError(ValueError):
    """A routing plan (or profit guarantee) document was refused.

    C{problems} lists each problem as C{"<key path>: <message>"}.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class PlanEntry:
    """One row of a routing plan: C{connection_ids} serve numbers starting
    with C{prefix} (C{*any}: every number) at C{weight}."""

    index: int
    prefix: str
    connection_ids: tuple[int, ...]
    weight: Decimal = Decimal(0)

    @property
    def length(self) -> int:
        """How specific the prefix is (0 for the catch-all)."""
        return 0 if self.prefix == ANY_PREFIX else len(self.prefix)

    def matches(self, number: str) -> bool:
        """Whether this entry serves C{number}."""
        return self.prefix == ANY_PREFIX or number.startswith(self.prefix)


@dataclass(frozen=True)
class ProfitGuarantee:
    """Routes whose cost exceeds L{ceiling} are dropped (rating.md 4.3).

    @ivar max_cost: a fixed ceiling, or C{None} for the customer's own
        cost of the call (C{event_cost}).
    @ivar min_margin_abs: the ceiling is at most the customer's cost minus
        this.
    @ivar min_margin_pct: ... and at most the customer's cost less this
        percentage of it (the margin as a share of the sell price).
    @ivar on_empty: C{reject} the call when every route is dropped, or keep
        the C{cheapest} at a loss (L{Ranking.loss} set: raise an alarm).
    """

    max_cost: Decimal | None = None
    min_margin_abs: Decimal = Decimal(0)
    min_margin_pct: Decimal = Decimal(0)
    on_empty: str = "reject"

    @property
    def needs_customer_cost(self) -> bool:
        """Whether the ceiling depends on the customer's cost."""
        return self.max_cost is None or bool(self.min_margin_abs) or bool(self.min_margin_pct)

    def ceiling(self, customer_cost: Decimal | None) -> Decimal:
        """The highest vendor cost kept.

        @raise ValueError: the ceiling needs C{customer_cost} and it is C{None}.
        """
        if self.needs_customer_cost and customer_cost is None:
            raise ValueError("the profit guarantee needs the customer's cost of the call")
        limits = [] if self.max_cost is None else [self.max_cost]
        if customer_cost is not None:
            if self.max_cost is None:
                limits.append(customer_cost)
            if self.min_margin_abs:
                limits.append(customer_cost - self.min_margin_abs)
            if self.min_margin_pct:
                limits.append(customer_cost * (100 - self.min_margin_pct) / 100)
        return min(limits)


@dataclass(frozen=True)
class RoutingPlan:
    """How a call picks vendor connections (the C{routing_plan} entity plus
    the options this module adds)."""

    strategy: str = "lcr"
    entries: tuple[PlanEntry, ...] = ()
    profit_guarantee: ProfitGuarantee | None = None
    tie_break: str = "id"
    quality_metrics: tuple[str, ...] = QUALITY_METRICS


def _decimal(value: Any, path: str, problems: list[str], low: Decimal = Decimal(0),
             high: Decimal | None = None) -> Decimal | None:
    """A plain decimal string (C{"0.05"}: digits, an optional fraction) or an
    integer, within C{[low, high]}; floats, signs and exponents are refused."""
    plain = isinstance(value, str) and _DECIMAL.match(value) is not None
    whole = isinstance(value, int) and not isinstance(value, bool)
    if plain or whole or (isinstance(value, Decimal) and value.is_finite()):
        number = Decimal(value)
    else:
        problems.append(f"{path}: must be a decimal string such as \"0.05\"")
        return None
    if number < low or (high is not None and number > high):
        bound = f" and <= {high}" if high is not None else ""
        problems.append(f"{path}: must be >= {low}{bound}")
        return None
    return number


def _unknown(doc: Mapping[str, Any], path: str, allowed: Sequence[str],
             problems: list[str]) -> None:
    for key in doc:
        if key not in allowed:
            problems.append(f"{path}{key}: unknown key")


def load_guarantee(document: Any, path: str = "profit_guarantee") -> ProfitGuarantee:
    """A profit guarantee from C{{max_cost, min_margin_abs, min_margin_pct,
    on_empty}}; C{max_cost} is C{"event_cost"} (the default) or a decimal.

    @raise PlanError: naming each bad key under C{path}.
    """
    problems: list[str] = []
    guarantee = _guarantee(document, path, problems)
    if problems or guarantee is None:
        raise PlanError(problems)
    return guarantee


def _guarantee(document: Any, path: str, problems: list[str]) -> ProfitGuarantee | None:
    if not isinstance(document, Mapping):
        problems.append(f"{path}: must be an object")
        return None
    before = len(problems)
    _unknown(document, f"{path}.", ("max_cost", "min_margin_abs", "min_margin_pct",
                                    "on_empty"), problems)
    raw = document.get("max_cost", "event_cost")
    max_cost = None if raw == "event_cost" else _decimal(raw, f"{path}.max_cost", problems)
    margin_abs = _decimal(document.get("min_margin_abs", "0"), f"{path}.min_margin_abs",
                          problems)
    margin_pct = _decimal(document.get("min_margin_pct", "0"), f"{path}.min_margin_pct",
                          problems, high=Decimal(100))
    on_empty = document.get("on_empty", "reject")
    if on_empty not in ON_EMPTY:
        problems.append(f"{path}.on_empty: must be one of {', '.join(ON_EMPTY)}")
    if len(problems) != before:
        return None
    return ProfitGuarantee(max_cost, margin_abs or Decimal(0), margin_pct or Decimal(0),
                           on_empty)


def _entry(index: int, raw: Any, problems: list[str]) -> PlanEntry | None:
    path = f"entries[{index}]"
    if not isinstance(raw, Mapping):
        problems.append(f"{path}: must be an object")
        return None
    before = len(problems)
    _unknown(raw, f"{path}.", ("prefix", "connection_ids", "weight"), problems)
    prefix = raw.get("prefix")
    if prefix == "":
        prefix = ANY_PREFIX
    if not isinstance(prefix, str) or not (prefix == ANY_PREFIX or _PREFIX.match(prefix)):
        problems.append(f"{path}.prefix: must be 1 to 32 digits (optional leading +) "
                        f"or {ANY_PREFIX}")
    ids = raw.get("connection_ids")
    if not isinstance(ids, list) or not ids:
        problems.append(f"{path}.connection_ids: must be a non-empty list of connection ids")
        ids = []
    for i, item in enumerate(ids):
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= MAX_ID:
            problems.append(f"{path}.connection_ids[{i}]: must be a connection id "
                            f"(1 to {MAX_ID})")
        elif item in ids[:i]:
            problems.append(f"{path}.connection_ids[{i}]: connection {item} is listed twice")
    weight = _decimal(raw.get("weight", 0), f"{path}.weight", problems, high=MAX_WEIGHT)
    if len(problems) != before or weight is None:
        return None
    return PlanEntry(index, prefix, tuple(ids), weight)


def load_plan(document: Any) -> RoutingPlan:
    """A routing plan from C{{strategy, entries: [{prefix, connection_ids,
    weight}], profit_guarantee?, tie_break?, quality_metrics?}}.

    @raise PlanError: listing every problem with its key path.
    """
    problems: list[str] = []
    if not isinstance(document, Mapping):
        raise PlanError(["(plan): must be an object"])
    _unknown(document, "", ("strategy", "entries", "profit_guarantee", "tie_break",
                            "quality_metrics"), problems)
    strategy = document.get("strategy", "lcr")
    if strategy not in STRATEGIES:
        problems.append(f"strategy: must be one of {', '.join(STRATEGIES)}")
    raw_entries = document.get("entries", [])
    if not isinstance(raw_entries, list):
        problems.append("entries: must be a list")
        raw_entries = []
    entries = [_entry(i, raw, problems) for i, raw in enumerate(raw_entries)]
    guarantee = None
    if document.get("profit_guarantee") is not None:
        guarantee = _guarantee(document["profit_guarantee"], "profit_guarantee", problems)
    tie_break = document.get("tie_break", "id")
    if tie_break not in TIE_BREAKS:
        problems.append(f"tie_break: must be one of {', '.join(TIE_BREAKS)}")
    metrics = document.get("quality_metrics", list(QUALITY_METRICS))
    if (not isinstance(metrics, list) or not metrics
            or any(m not in QUALITY_METRICS for m in metrics) or len(set(metrics)) != len(metrics)):
        problems.append(f"quality_metrics: must be a non-empty list of distinct names among "
                        f"{', '.join(QUALITY_METRICS)}")
    if problems:
        raise PlanError(problems)
    return RoutingPlan(strategy, tuple(e for e in entries if e is not None), guarantee,
                       tie_break, tuple(metrics))


def plan_from_row(row: Mapping[str, Any]) -> RoutingPlan:
    """The plan of a C{routing_plan} row (its C{strategy} and C{entries}).

    @raise PlanError: the stored entries are not a valid plan.
    """
    return load_plan({"strategy": row.get("strategy", "lcr"),
                      "entries": row.get("entries") or []})
