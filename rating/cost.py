"""The cost of one call, rating.md section 2, as an itemised L{Breakdown}.

Pipeline (2.6), for a L{Match} made at the answer instant C{T0} and a
billable duration C{D} in whole seconds:

    1. C{D == 0} or C{D <= grace_s}: cost 0, nothing charged (2.2, 2.3);
    2. C{D' = max(0, D - free_seconds)} (2.4);
    3. bundles cover the first seconds of C{D'} in their own increments (5.1);
    4. the tariff prices the rest in increments (2.5): the answer-time rate
       (C{start}) or the rate active when each increment starts (C{split});
    5. connect fee (the bundle's when the call starts on a bundle), group
       fixed fees, disconnect fee, volume discount on the time charge (5.2),
       post-call surcharge, minimum charge, C{max_cost} with C{free};
    6. one rounding step with the entry's (else the tariff's) method.

Every intermediate value is exact (2.7).  Seconds are summed per (rate,
group); an amount is kept as a C{Decimal} numerator over one integer
denominator C{L}, the least common multiple of the C{unit_s} involved, so
C{price * seconds / unit_s} becomes C{price * seconds * (L / unit_s)} with no
division at all.  The arithmetic runs in a 100-digit context that traps
C{Inexact}: an intermediate value that could not be represented exactly
would raise instead of drifting.  The only rounding is the final one.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from decimal import (
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Any

from rating.bundles import HeldBundle, consume_bundles, usable_bundles
from rating.lookup import Match, TariffIndex
from rating.tariff import Rate, Rounding

_ZERO = Decimal(0)
_UTC = dt.UTC
#: A bundle's price is per minute of bundle seconds consumed.
BUNDLE_PRICE_UNIT_S = 60
#: Exact arithmetic: any result that would need rounding raises C{Inexact}.
_EXACT = Context(prec=100, traps=[Inexact, InvalidOperation, Overflow, DivisionByZero])
#: Display of a non-terminating unrounded value (breakdowns only).
_SHOW = Context(prec=34)


def round_amount(amount: Decimal | int, rounding: Rounding, denominator: int = 1) -> Decimal:
    """Round C{amount / denominator} once to C{rounding.decimals} places (2.7).

    C{up} is the ceiling and C{down} truncation (for the positive amounts
    costs are; a negative amount is rounded by its magnitude), C{half_up}
    takes ties away from zero, C{half_even} to the even neighbour.  The
    arithmetic is on integers, so it is exact for any denominator.
    """
    numerator, scale = Decimal(amount).as_integer_ratio()
    scale *= denominator
    sign = -1 if numerator < 0 else 1
    whole, rest = divmod(abs(numerator) * 10 ** rounding.decimals, scale)
    if rest:
        twice = 2 * rest
        method = rounding.method
        if (method == "up" or (method == "half_up" and twice >= scale)
                or (method == "half_even" and (twice > scale or (twice == scale and whole % 2)))):
            whole += 1
    return Decimal(sign * whole).scaleb(-rounding.decimals, _EXACT)


def show(numerator: Decimal, denominator: int) -> Decimal:
    """C{numerator / denominator} for display: exact when it terminates within
    34 significant digits, else rounded to 34 (breakdowns only, never charged)."""
    if denominator == 1:
        return numerator
    return _SHOW.divide(numerator, denominator)


def billable_duration(answered_at: dt.datetime, ended_at: dt.datetime) -> int:
    """C{D} of 2.1: the answered time in whole milliseconds, rounded up to
    whole seconds (0 when C{ended_at} is not after C{answered_at})."""
    elapsed = ended_at - answered_at
    millis = (elapsed.days * 86400 + elapsed.seconds) * 1000 + elapsed.microseconds // 1000
    return max(0, -(-millis // 1000))


@dataclass(frozen=True)
class GroupCharge:
    """Increments of one group of one rate, aggregated (C{amount} unrounded)."""

    rate_id: str
    group: int
    start_s: int
    price: Decimal
    unit_s: int
    increment_s: int
    increments: int
    seconds: int
    amount: Decimal


@dataclass(frozen=True)
class BundleCharge:
    """The part of a call on one bundle (C{amount}: its price, unrounded)."""

    bundle_id: str
    start_s: int
    covered_s: int
    consumed_s: int
    amount: Decimal


@dataclass(frozen=True)
class Breakdown:
    """How a cost was made: the matched entry, every component, the
    unrounded total, the rounding and the final C{cost}.

    C{status} is C{zero_duration}, C{grace} or C{rated}.  Components are in
    pipeline order; C{unrounded} is their sum, C{rounding_adjustment} is
    C{cost - unrounded}.  C{as_dict()} is the JSON form kept in CDRs.
    """

    number: str
    prefix: str
    entry: int
    rate_id: str
    answered_at: dt.datetime
    duration_s: int
    status: str
    period_boundary: str
    free_s: int
    billable_s: int
    bundles: tuple[BundleCharge, ...]
    groups: tuple[GroupCharge, ...]
    connect_fee: Decimal
    time_charge: Decimal
    discount_pct: Decimal
    discount: Decimal
    bundle_charge: Decimal
    fixed_fees: Decimal
    disconnect_fee: Decimal
    surcharge_pct: Decimal
    surcharge: Decimal
    min_charge_adjustment: Decimal
    max_cost_adjustment: Decimal
    unrounded: Decimal
    rounding: Rounding
    rounding_adjustment: Decimal
    cost: Decimal
    ambiguous: bool = False

    @property
    def billed_s(self) -> int:
        """Seconds priced by the tariff (whole increments)."""
        return sum(g.seconds for g in self.groups)

    @property
    def bundle_seconds(self) -> dict[str, int]:
        """Seconds each bundle loses, by bundle id."""
        return {b.bundle_id: b.consumed_s for b in self.bundles}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: Decimals as strings, the instant in ISO 8601."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Rounding):
        return {"method": value.method, "decimals": value.decimals}
    if isinstance(value, tuple):
        return [{f.name: _plain(getattr(v, f.name)) for f in fields(v)} for v in value]
    return value


def _group_at(rate: Rate, t: int) -> int:
    """The index of the last group of C{rate} starting at or before C{t}."""
    groups = rate.groups
    index = len(groups) - 1
    while groups[index].start_s > t:
        index -= 1
    return index


def _start_runs(rate: Rate, t: int, end: int) -> list[tuple[Rate, int, int]]:
    """Increments of one rate from C{t} until C{end}: C{(rate, group, count)}."""
    runs = []
    groups = rate.groups
    while t < end:
        index = _group_at(rate, t)
        group = groups[index]
        stop = end if index + 1 == len(groups) else min(end, groups[index + 1].start_s)
        count = -(-(stop - t) // group.increment_s)
        runs.append((rate, index, count))
        t += count * group.increment_s
    return runs


class _SplitSchedule:
    """The increments of a C{split} call from one start second, built lazily
    and kept on the match, so C{max_duration} re-evaluates cheaply."""

    def __init__(self, match: Match, origin: dt.datetime, start: int) -> None:
        self.match = match
        self.origin = origin
        self.t = start
        self.previous = match.rate
        self.runs: list[list[Any]] = []

    def runs_until(self, end: int) -> list[tuple[Rate, int, int]]:
        """C{(rate, group, count)} for the increments starting before C{end}."""
        while self.t < end:
            instant = self.origin + dt.timedelta(seconds=self.t)
            rate = self.match.rate_at(instant) or self.previous
            index = _group_at(rate, self.t)
            increment = rate.groups[index].increment_s
            last = self.runs[-1] if self.runs else None
            if last is not None and last[1] is rate and last[2] == index:
                last[4] += 1
            else:
                self.runs.append([self.t, rate, index, increment, 1])
            self.t += increment
            self.previous = rate
        out = []
        for start, rate, index, increment, count in self.runs:
            if start >= end:
                break
            out.append((rate, index, min(count, -(-(end - start) // increment))))
        return out


def _runs(match: Match, free: int, start: int, end: int) -> list[tuple[Rate, int, int]]:
    """The increments priced by the tariff from call-second C{start} to C{end}."""
    if match.tariff.period_boundary == "start" or len(match.candidates) < 2:
        return _start_runs(match.rate, start, end)
    key = ("split", free, start)
    schedule = match.memo.get(key)
    if schedule is None:
        origin = match.answered_at.astimezone(_UTC) + dt.timedelta(seconds=free)
        schedule = match.memo[key] = _SplitSchedule(match, origin, start)
    return schedule.runs_until(end)


def _aggregate(runs: Iterable[tuple[Rate, int, int]]) -> list[list[Any]]:
    """Increment counts per (rate, group), in order of first use."""
    totals: dict[tuple[str, int], list[Any]] = {}
    for rate, index, count in runs:
        key = (rate.id, index)
        if key in totals:
            totals[key][2] += count
        else:
            totals[key] = [rate, index, count]
    return list(totals.values())


def cost(match: Match, duration_s: int, *, bundles: Sequence[HeldBundle] = (),
         discount_pct: Decimal = Decimal(0), exclude_tricky: bool = False) -> Breakdown:
    """Price a call of C{duration_s} billable seconds on C{match} (2.6).

    @param bundles: the account's holdings; the usable ones are consumed first.
    @param discount_pct: the volume discount in percent on the time charge (5.2).
    @param exclude_tricky: leave out fees flagged C{*_tricky} (for the
        announced duration of 3.2 only, never for a charge).
    """
    if isinstance(duration_s, bool) or not isinstance(duration_s, int) or duration_s < 0:
        raise ValueError(f"duration_s must be an integer >= 0, not {duration_s!r}")
    if not 0 <= discount_pct <= 100:
        raise ValueError(f"discount_pct must be within 0..100, not {discount_pct!r}")
    rate = match.rate
    rounding = match.rounding
    if duration_s == 0 or duration_s <= rate.grace_s:
        status = "zero_duration" if duration_s == 0 else "grace"
        return _nothing(match, duration_s, status)
    free = min(duration_s, rate.free_seconds)
    billable = duration_s - free
    ordered = usable_bundles(bundles, match.number, match.answered_at) if bundles else ()
    uses = consume_bundles(ordered, billable)
    totals = _aggregate(_runs(match, free, uses[-1].end_s if uses else 0, billable))
    units = {rate_.groups[index].unit_s for rate_, index, _ in totals}
    if uses:
        units.add(BUNDLE_PRICE_UNIT_S)
    scale = math.lcm(*units) if units else 1
    if ordered:
        connect = ordered[0].bundle.connect_fee
    else:
        connect = _ZERO if exclude_tricky and rate.connect_fee_tricky else rate.connect_fee
    disconnect = rate.disconnect_fee if duration_s >= rate.disconnect_fee_after_s else _ZERO
    entry = match.entry
    with localcontext(_EXACT):
        fixed = sum((g.fixed_fee for g in rate.groups if g.start_s < billable), _ZERO)
        groups, time_charge = [], _ZERO
        for rate_, index, count in totals:
            group = rate_.groups[index]
            seconds = count * group.increment_s
            time_charge += group.price * seconds * (scale // group.unit_s)
            groups.append(GroupCharge(rate_.id, index, group.start_s, group.price,
                                      group.unit_s, group.increment_s, count, seconds,
                                      show(group.price * seconds, group.unit_s)))
        bundle_charges, bundle_total = [], _ZERO
        for use in uses:
            amount = use.bundle.price * use.consumed_s
            bundle_total += amount * (scale // BUNDLE_PRICE_UNIT_S)
            bundle_charges.append(BundleCharge(use.bundle.id, use.start_s, use.covered_s,
                                               use.consumed_s, show(amount, BUNDLE_PRICE_UNIT_S)))
        discount = time_charge * discount_pct / 100
        subtotal = (connect + fixed + disconnect) * scale + time_charge - discount + bundle_total
        surcharge = subtotal * rate.post_call_surcharge_pct / 100
        subtotal += surcharge
        minimum = max(_ZERO, rate.min_charge * scale - subtotal)
        subtotal += minimum
        cap = _ZERO
        if entry.max_cost is not None and entry.max_cost_strategy == "free":
            cap = min(_ZERO, entry.max_cost * scale - subtotal)
            subtotal += cap
        final = round_amount(subtotal, rounding, scale)
        adjustment = final * scale - subtotal
    return Breakdown(
        number=match.number, prefix=match.prefix, entry=entry.index, rate_id=rate.id,
        answered_at=match.answered_at, duration_s=duration_s, status="rated",
        period_boundary=match.tariff.period_boundary, free_s=free, billable_s=billable,
        bundles=tuple(bundle_charges), groups=tuple(groups), connect_fee=connect,
        time_charge=show(time_charge, scale), discount_pct=Decimal(discount_pct),
        discount=show(discount, scale), bundle_charge=show(bundle_total, scale),
        fixed_fees=fixed, disconnect_fee=disconnect,
        surcharge_pct=rate.post_call_surcharge_pct, surcharge=show(surcharge, scale),
        min_charge_adjustment=show(minimum, scale), max_cost_adjustment=show(cap, scale),
        unrounded=show(subtotal, scale), rounding=rounding,
        rounding_adjustment=show(adjustment, scale), cost=final, ambiguous=match.ambiguous)


def _nothing(match: Match, duration_s: int, status: str) -> Breakdown:
    """The breakdown of a call that is charged nothing (2.2, 2.3)."""
    nothing = Decimal(0)
    rounding = match.rounding
    return Breakdown(
        number=match.number, prefix=match.prefix, entry=match.entry.index,
        rate_id=match.rate.id, answered_at=match.answered_at, duration_s=duration_s,
        status=status, period_boundary=match.tariff.period_boundary, free_s=0,
        billable_s=0, bundles=(), groups=(), connect_fee=nothing,
        time_charge=nothing, discount_pct=nothing, discount=nothing, bundle_charge=nothing,
        fixed_fees=nothing, disconnect_fee=nothing, surcharge_pct=nothing, surcharge=nothing,
        min_charge_adjustment=nothing, max_cost_adjustment=nothing, unrounded=nothing,
        rounding=rounding, rounding_adjustment=nothing, cost=round_amount(nothing, rounding),
        ambiguous=match.ambiguous)


def quote(index: TariffIndex, number: str, answered_at: dt.datetime, duration_s: int,
          **options: Any) -> Breakdown:
    """Look C{number} up at C{answered_at} and price C{duration_s} seconds;
    C{options} are those of L{cost}.

    @raise rating.lookup.DestinationRejected: no rate, or a blocked one.
    """
    return cost(index.match(number, answered_at), duration_s, **options)
