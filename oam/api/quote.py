"""Quote and explain the cost of one call (rating.md sections 2 and 3.2).

    POST /api/v1/rating/quote
    {"tariff_id": 7 | "tariff": {<tariff document>},
     "destination": "33612345678", "start": "2024-05-14T17:59:40+02:00",
     "duration_s": 75, "balance": "10.00"}

prices a call of C{duration_s} billable seconds to C{destination}, answered
at C{start}, with a stored tariff (C{tariff_id}) or an inline tariff
document (C{tariff}), and answers 200 with the cost and how it was made:

    {"cost": "0.4100", "currency": "EUR", "destination", "start",
     "duration_s", "billable_s", "free_s", "status", "period_boundary",
     "ambiguous",
     "entry": {"index", "prefix", "prefixes", "timing", "weight", "rate", ...},
     "rate": {"id", "groups", "connect_fee", ...},
     "components": {"connect_fee", "groups": [...], "time_charge", "fixed_fees",
                    "disconnect_fee", "surcharge_pct", "surcharge",
                    "min_charge_adjustment", "max_cost_adjustment", "unrounded",
                    "rounding": {"method", "decimals", "adjustment"}, ...}}

The components are L{rating.cost.Breakdown.as_dict} (the form CDRs keep),
regrouped; amounts are decimal strings.  With a C{balance}, the answer adds
the maximum duration of L{rating.duration.max_duration} (C{max_duration_s},
C{announced_duration_s}, C{may_announce}, C{limited_by}, C{reason},
C{max_duration_cost}, C{cap_s}).

Any key may quote.  Tariffs are operator data, so a C{tariff_id} the key
cannot see is 404 (the same as one that does not exist): non-admin keys
quote inline documents.  A bad field is a 422 naming it (the problems of an
inline document as C{tariff.<key path>}); a destination the tariff does
not rate is a 422 C{{"error": "destination not rated"}} (or C{"destination
blocked"}).

Loading and pricing run in the reactor's thread pool, so a large document
or a long C{split} call does not stall signalling; C{duration_s} is at most
L{MAX_QUOTE_DURATION_S}, which bounds the work of one quote.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, fields, is_dataclass
from decimal import Decimal, DecimalException
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from b2bua.db.interfaces import Scope
from b2bua.db.model import entity
from b2bua.db.validation import DECIMAL_FRACTION_DIGITS, DECIMAL_INTEGER_DIGITS, INT_MAX
from oam.api.collection import MIN_YEAR, call_repository
from oam.api.endpoint import ApiContext, ApiEndpoint, json_body
from oam.api.problems import ApiError, Reply, invalid
from rating.cost import Breakdown, cost
from rating.duration import max_duration, may_announce
from rating.lookup import BLOCKED_DESTINATION, DestinationRejected, Match, TariffIndex
from rating.tariff import Tariff, TariffError, load_tariff

__all__ = ["BALANCE_PATTERN", "DESTINATION_PATTERN", "MAX_QUOTE_DURATION_S", "START_PATTERN",
           "QuoteRequest", "QuoteResource", "explain", "load_quoted", "parse_quote",
           "price_quote"]

#: The longest call quoted (one day): bounds the work of a C{split} tariff.
MAX_QUOTE_DURATION_S = 86400
#: The called number: digits, an optional leading C{+} (matched as given).
DESTINATION_PATTERN = r"^\+?[0-9]{1,32}$"
#: An RFC 3339 date-time with its offset (C{Z} or C{+hh:mm}).
START_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
                 r"(Z|[+-][0-9]{2}:[0-9]{2})$")
#: An exact decimal amount, possibly negative.
BALANCE_PATTERN = (f"^-?[0-9]{{1,{DECIMAL_INTEGER_DIGITS}}}"
                   f"(\\.[0-9]{{1,{DECIMAL_FRACTION_DIGITS}}})?$")
#: The body's members.
FIELDS = ("tariff_id", "tariff", "destination", "start", "duration_s", "balance")
#: The C{error} of a 422 for each L{DestinationRejected} reason.
REJECTED = {BLOCKED_DESTINATION: "destination blocked"}
NOT_RATED = "destination not rated"
#: Members of L{Breakdown.as_dict} that are not components of the cost.
_NOT_COMPONENTS = frozenset({"number", "prefix", "entry", "rate_id", "answered_at",
                             "duration_s", "status", "period_boundary", "free_s",
                             "billable_s", "cost", "ambiguous", "rounding",
                             "rounding_adjustment"})
_TARIFF = entity("tariff")


@dataclass(frozen=True)
class QuoteRequest:
    """A checked quote request.

    @ivar tariff_id: the stored tariff, or C{None} for an inline document.
    @ivar start: the answer instant C{T0} (aware, the caller's offset).
    @ivar balance: the available credit, when a maximum duration is asked.
    """

    destination: str
    start: dt.datetime
    duration_s: int
    tariff_id: int | None = None
    balance: Decimal | None = None


def _is_int(value: Any) -> bool:
    """Whether C{value} is a JSON integer (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _start(value: Any, errors: dict[str, str]) -> dt.datetime | None:
    """The C{start} member as an aware datetime (else noted in C{errors})."""
    if not isinstance(value, str) or not re.fullmatch(START_PATTERN, value):
        errors["start"] = "must be an ISO 8601 date-time with its offset " \
                          "(2024-05-14T17:59:40+02:00 or ...Z)"
        return None
    try:
        start = dt.datetime.fromisoformat(value)
        year = start.astimezone(dt.UTC).year
    except (ValueError, OverflowError):
        errors["start"] = "is not a valid date-time"
        return None
    if not MIN_YEAR <= year < 9999:
        errors["start"] = f"is out of range (years {MIN_YEAR} to 9998 in UTC)"
        return None
    return start


def parse_quote(body: Any) -> tuple[QuoteRequest | None, dict[str, str]]:
    """Check a quote body, except the inline document (L{load_quoted}).

    @return: the request (C{None} when a field is bad) and the bad fields.
    """
    if not isinstance(body, dict):
        return None, {"body": "must be an object"}
    errors = {str(name)[:64]: "unknown field" for name in body if name not in FIELDS}
    tariff_id = body.get("tariff_id")
    if "tariff_id" in body and "tariff" in body:
        errors["tariff"] = "give tariff_id or tariff, not both"
    elif "tariff_id" not in body and "tariff" not in body:
        errors["tariff_id"] = "required (or an inline tariff document as tariff)"
    elif "tariff_id" in body and not (_is_int(tariff_id) and 1 <= tariff_id <= INT_MAX):
        errors["tariff_id"] = f"must be an integer from 1 to {INT_MAX}"
    destination = body.get("destination")
    if not isinstance(destination, str) or not re.fullmatch(DESTINATION_PATTERN, destination):
        errors["destination"] = "must be 1 to 32 digits, with an optional leading +"
    start = _start(body.get("start"), errors)
    duration = body.get("duration_s")
    if not (_is_int(duration) and 0 <= duration <= MAX_QUOTE_DURATION_S):
        errors["duration_s"] = f"must be an integer from 0 to {MAX_QUOTE_DURATION_S}"
    balance = None
    if "balance" in body:
        raw = body["balance"]
        if isinstance(raw, str) and re.fullmatch(BALANCE_PATTERN, raw):
            balance = Decimal(raw)
        else:
            errors["balance"] = "must be a decimal string such as \"10.50\""
    if errors or start is None:
        return None, errors
    return QuoteRequest(destination, start, duration, tariff_id, balance), errors


def load_quoted(document: Any, where: str) -> tuple[Tariff | None, dict[str, str]]:
    """Load a tariff document with the rating loader.

    @param where: C{tariff} (an inline document: each problem is named
        C{tariff.<key path>}) or C{tariff_id} (a stored one: one summary).
    @return: the tariff, or C{None} and the problems as bad fields.
    """
    try:
        return load_tariff(document), {}
    except TariffError as error:
        problems = list(error.problems)
    except OverflowError:
        problems = ["(document): a date or time is out of range"]
    if where != "tariff":
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return None, {where: f"the stored document is refused: {problems[0]}{more}"}
    errors: dict[str, str] = {}
    for problem in problems:
        path, sep, message = problem.partition(": ")
        key = "tariff" if not sep or path == "(document)" else f"tariff.{path}"
        message = message if sep else problem
        errors[key] = f"{errors[key]}; {message}" if key in errors else message
    return None, errors


def _plain(value: Any) -> Any:
    """A model value as JSON: decimals as strings, instants in ISO 8601,
    dataclasses as objects."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return value


def explain(breakdown: Breakdown, match: Match, currency: str | None) -> dict[str, Any]:
    """The answer for one priced call: L{Breakdown.as_dict} regrouped into
    the call, the matched entry, its rate and the cost components."""
    plain = breakdown.as_dict()
    components = {k: v for k, v in plain.items() if k not in _NOT_COMPONENTS}
    components["rounding"] = {**plain["rounding"], "adjustment": plain["rounding_adjustment"]}
    return {
        "cost": plain["cost"], "currency": currency, "destination": plain["number"],
        "start": plain["answered_at"], "duration_s": plain["duration_s"],
        "billable_s": plain["billable_s"], "free_s": plain["free_s"],
        "status": plain["status"], "period_boundary": plain["period_boundary"],
        "ambiguous": plain["ambiguous"],
        "entry": {"index": plain["entry"], "prefix": plain["prefix"],
                  **{k: v for k, v in _plain(match.entry).items() if k != "index"}},
        "rate": _plain(match.rate),
        "components": components,
    }


def price_quote(tariff: Tariff, ask: QuoteRequest, currency: str | None) -> dict[str, Any]:
    """Price C{ask} on C{tariff} (and its maximum duration with a balance).

    @raise ApiError: 422 for a destination the tariff does not rate, for a
        balance quote on a rate with a grace period over a day, and for
        amounts that cannot be computed exactly.
    """
    where = "tariff" if ask.tariff_id is None else "tariff_id"
    try:
        match = TariffIndex(tariff).match(ask.destination, ask.start)
        answer = explain(cost(match, ask.duration_s), match, currency)
        if ask.balance is not None:
            if match.rate.grace_s > MAX_QUOTE_DURATION_S:
                raise invalid({"balance": "no maximum duration for a rate whose grace period "
                                          f"exceeds {MAX_QUOTE_DURATION_S} s"})
            limit = max_duration(match, ask.balance)
            answer.update({
                "balance": str(ask.balance), "max_duration_s": limit.seconds,
                "announced_duration_s": limit.announced_s, "may_announce": may_announce(limit),
                "limited_by": limit.limited_by, "reason": limit.reason,
                "max_duration_cost": str(limit.cost), "cap_s": limit.cap_s})
    except DestinationRejected as rejected:
        raise ApiError(422, {"error": REJECTED.get(rejected.reason, NOT_RATED),
                             "destination": ask.destination}) from None
    except OverflowError:
        raise invalid({"start": "is out of range for this call"}) from None
    except DecimalException:
        raise invalid({where: "the cost cannot be computed exactly (amounts with too many "
                              "digits)"}) from None
    return answer


class QuoteResource(ApiEndpoint):
    """C{POST /api/v1/rating/quote}: the cost of one call, explained."""

    isLeaf = True
    methods = ("POST",)

    def __init__(self, api: ApiContext, tariffs: Any) -> None:
        """
        @param tariffs: the tariffs repository (C{tariff_id} lookups, in
            the caller's scope).
        """
        super().__init__(api)
        self.tariffs = tariffs

    async def handle_post(self, request: IRequest, scope: Scope) -> Reply:
        """Check the body, load the tariff, price the call; 200."""
        body = json_body(request)
        ask, errors = parse_quote(body)
        tariff: Tariff | None = None
        if isinstance(body, dict) and "tariff" in body and "tariff_id" not in body:
            tariff, problems = await deferToThread(load_quoted, body["tariff"], "tariff")
            errors.update(problems)
        if errors or ask is None:
            raise invalid(errors)
        currency = None
        if ask.tariff_id is not None:
            row = await call_repository(_TARIFF, self.tariffs.get(ask.tariff_id, scope))
            tariff, problems = await deferToThread(load_quoted, row["document"], "tariff_id")
            if problems:
                raise invalid(problems)
            currency = row.get("currency")
        assert tariff is not None
        return Reply(200, await deferToThread(price_quote, tariff, ask, currency))
