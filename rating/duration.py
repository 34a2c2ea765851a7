"""Maximum call duration from a balance, rating.md 3.2.

C{max_duration} is the largest whole number of seconds C{D <= cap} whose
full cost (L{rating.cost.cost}: fees, increments, minimum charge, bundles,
discount) fits in the available credit and, with C{max_cost_strategy =
disconnect}, in C{max_cost}.  Cost is monotone in C{D}, so a binary search
over C{[grace_s + 1, cap]} finds it in O(log cap) evaluations; the answer
always lands on the end of an increment.

The authorisation threshold refuses a call whose minimum charged call
(C{cost(grace_s + 1)}) is not affordable, so a short call can never leave a
negative balance.  The announced duration ("you have N minutes") is the same
computation with the fees flagged C{*_tricky} left out; calling-card flows
refuse calls whose announcement would not exceed C{min_announce_s}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from rating.bundles import HeldBundle
from rating.cost import cost
from rating.lookup import Match

#: CGR's C{default_usage *voice 3h}.
DEFAULT_MAX_CALL_DURATION_S = 3 * 3600
#: The cap for destinations that cost nothing (A2B's shipped 5400 s).
DEFAULT_FREE_CALL_DURATION_S = 5400
#: A2B refuses a calling-card call it would announce as 10 s or less.
DEFAULT_MIN_ANNOUNCE_S = 10
INSUFFICIENT_CREDIT = "insufficient_credit"
MAX_COST_EXCEEDED = "max_cost_exceeded"


@dataclass(frozen=True)
class MaxDuration:
    """The outcome of L{max_duration}.

    C{seconds} is the enforced maximum (0: refuse the call with C{reason});
    C{announced_s} is what may be announced (>= C{seconds}); C{limited_by} is
    C{cap}, C{credit}, C{max_cost} or C{refused}; C{cost} is the cost of a
    call of C{seconds}.
    """

    seconds: int
    announced_s: int
    cap_s: int
    limited_by: str
    reason: str | None
    cost: Decimal

    @property
    def allowed(self) -> bool:
        """Whether the call may be placed at all."""
        return self.reason is None and self.seconds > 0


def _largest(price: Callable[[int], Decimal], low: int, high: int, limit: Decimal) -> int:
    """The largest C{d} in C{[low, high]} with C{price(d) <= limit}, given
    that C{price(low) <= limit} and C{price} is non-decreasing."""
    while low < high:
        middle = (low + high + 1) // 2
        if price(middle) <= limit:
            low = middle
        else:
            high = middle - 1
    return low


def max_duration(match: Match, available: Decimal, *, requested_s: int | None = None,
                 max_call_duration_s: int = DEFAULT_MAX_CALL_DURATION_S,
                 free_call_duration_s: int = DEFAULT_FREE_CALL_DURATION_S,
                 bundles: Sequence[HeldBundle] = (),
                 discount_pct: Decimal = Decimal(0)) -> MaxDuration:
    """The maximum duration of a call on C{match} with C{available} credit.

    @param available: C{balance + credit_limit - active holds} (3.1).
    @param requested_s: the usage asked for, if any (caps the result).
    @param max_call_duration_s: the cap for priced destinations.
    @param free_call_duration_s: the cap for destinations whose tariff cost
        is 0 for every duration (bundles do not make a destination free).
    """
    rate = match.rate

    def price(seconds: int, tricky: bool = False) -> Decimal:
        return cost(match, seconds, bundles=bundles, discount_pct=discount_pct,
                    exclude_tricky=tricky).cost

    probe = max(max_call_duration_s, free_call_duration_s, rate.grace_s + 1)
    free = cost(match, probe).cost == 0
    cap = free_call_duration_s if free else max_call_duration_s
    if requested_s is not None:
        cap = min(cap, requested_s)
    cap = max(cap, 0)
    first = rate.grace_s + 1
    limit = available
    entry = match.entry
    if entry.max_cost is not None and entry.max_cost_strategy == "disconnect":
        limit = min(limit, entry.max_cost)
    if price(first) > limit:
        reason = INSUFFICIENT_CREDIT if price(first) > available else MAX_COST_EXCEEDED
        return MaxDuration(0, 0, cap, "refused", reason, Decimal(0))
    if cap < first:
        return MaxDuration(cap, cap, cap, "cap", None, price(cap))
    seconds = _largest(price, first, cap, limit)
    announced = seconds
    if rate.connect_fee_tricky:
        announced = _largest(lambda d: price(d, True), seconds, cap, limit)
    if seconds == cap:
        limited_by = "cap"
    elif price(seconds + 1) > available:
        limited_by = "credit"
    else:
        limited_by = "max_cost"
    return MaxDuration(seconds, announced, cap, limited_by, None, price(seconds))


def may_announce(result: MaxDuration, min_announce_s: int = DEFAULT_MIN_ANNOUNCE_S) -> bool:
    """Whether a calling-card flow may place the call: it is allowed and its
    announced duration exceeds C{min_announce_s} (A2B refuses C{<= 10 s})."""
    return result.allowed and result.announced_s > min_announce_s
