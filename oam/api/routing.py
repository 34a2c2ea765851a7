"""Least-cost routing explained (docs/lcr.md).

    POST /api/v1/routing/explain
    {"number": "447783855111", "start": "2024-05-14T17:59:40Z",
     "routing_plan_id": 3 | "plan": {"strategy", "entries", ...},
     "connections": [4, 7, {"id": 9, "vendor": "Acme", "tariff": {...}}],
     "customer_tariff_id": 7 | "customer_tariff": {...}, "duration_s": 60,
     "unavailable": [7], "profit_guarantee": {...}, "quality": {"4": {...}},
     "seed": 1}

ranks the connections for one call with L{plugins.trunking.lcr.rank_routes}
and answers 200 with the routes in order (each with its cost and why it
stands there) and every connection left out with its reason.  Without
C{connections}, the candidates are the stored connections the plan's
matching entries list; an inline plan without C{entries} routes every
given connection under one catch-all entry.

Authentication and errors are the quote's (L{oam.api.quote}): any key may
ask with inline documents; stored rows are operator data, so an id the key
cannot see is 404; each bad member is a 422 naming it (an inline
document's problems under its path, C{connections[1].tariff.rates.R1...}).
The work runs in the reactor's thread pool.  The member checks shared with
L{oam.api.blending} live here.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from dataclasses import dataclass, field
from decimal import Decimal, DecimalException
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from b2bua.db.interfaces import NotFound, Scope
from b2bua.db.model import entity
from b2bua.db.validation import INT_MAX
from oam.api.collection import MIN_YEAR, call_repository
from oam.api.endpoint import ApiContext, ApiEndpoint, json_body
from oam.api.problems import ApiError, Reply, invalid
from oam.api.quote import DESTINATION_PATTERN, MAX_QUOTE_DURATION_S, START_PATTERN, load_quoted
from plugins.trunking.lcr import (
    DEFAULT_REFERENCE_DURATION_S,
    QUALITY_METRICS,
    Candidate,
    PlanEntry,
    PlanError,
    ProfitGuarantee,
    Quality,
    RoutingPlan,
    candidate_from_rows,
    load_guarantee,
    load_plan,
    plan_from_row,
    rank_routes,
    reference_cost,
)
from rating.lookup import BLOCKED_DESTINATION, DestinationRejected, TariffIndex
from rating.tariff import ANY_PREFIX, ROUNDING_METHODS, Rounding, Tariff

__all__ = ["AMOUNT_PATTERN", "MAX_CONNECTIONS", "ExplainResource", "amount_member",
           "fetch_row", "id_member", "instant_member", "is_int", "load_inline", "load_stored",
           "one_of", "parse_explain", "rounding_member"]

#: The most connections one explanation considers.
MAX_CONNECTIONS = 100
#: A non-negative decimal string (a JSON integer is taken too, up to L{MAX_WHOLE}).
AMOUNT_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,12})?$"
MAX_WHOLE = 999_999_999
EXPLAIN_FIELDS = ("number", "start", "routing_plan_id", "plan", "connections",
                  "customer_tariff_id", "customer_tariff", "duration_s", "unavailable",
                  "profit_guarantee", "quality", "seed")
CONNECTION_FIELDS = ("id", "name", "vendor", "vendor_id", "enabled", "vendor_status",
                     "currency", "weight", "tariff_id", "tariff")
VENDOR_STATUSES = entity("vendor").field("status").choices
CURRENCY = re.compile(r"^[A-Z]{3}$")
_TARIFF = entity("tariff")
_PLAN = entity("routing_plan")
_CONNECTION = entity("connection")


# -- shared member checks -------------------------------------------------------------


def is_int(value: Any) -> bool:
    """Whether C{value} is a JSON integer (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool)


def id_member(value: Any, name: str, errors: dict[str, str]) -> int | None:
    """A row id (1 to INT_MAX)."""
    if is_int(value) and 1 <= value <= INT_MAX:
        return int(value)
    errors[name] = f"must be an integer from 1 to {INT_MAX}"
    return None


def instant_member(value: Any, name: str, errors: dict[str, str]) -> dt.datetime | None:
    """An RFC 3339 date-time with its offset."""
    if not isinstance(value, str) or not re.fullmatch(START_PATTERN, value):
        errors[name] = "must be an ISO 8601 date-time with its offset " \
                       "(2024-05-14T17:59:40+02:00 or ...Z)"
        return None
    try:
        instant = dt.datetime.fromisoformat(value)
        year = instant.astimezone(dt.UTC).year
    except (ValueError, OverflowError):
        errors[name] = "is not a valid date-time"
        return None
    if not MIN_YEAR <= year < 9999:
        errors[name] = f"is out of range (years {MIN_YEAR} to 9998 in UTC)"
        return None
    return instant


def amount_member(value: Any, name: str, errors: dict[str, str]) -> Decimal | None:
    """A non-negative decimal string, or a whole number up to L{MAX_WHOLE}."""
    if isinstance(value, str) and re.fullmatch(AMOUNT_PATTERN, value):
        return Decimal(value)
    if is_int(value) and 0 <= value <= MAX_WHOLE:
        return Decimal(value)
    errors[name] = "must be a decimal string such as \"0.05\" (0 or more)"
    return None


def one_of(body: dict[str, Any], stored: str, inline: str, errors: dict[str, str],
           required: bool, where: str = "") -> None:
    """At most one (with C{required}: exactly one) of two members of the
    object at C{where} (C{"connections[0]."}, or the body)."""
    if stored in body and inline in body:
        errors[where + inline] = f"give {stored} or {inline}, not both"
    elif required and stored not in body and inline not in body:
        errors[where + stored] = f"required (or an inline {inline})"


def rounding_member(value: Any, name: str, errors: dict[str, str]) -> Rounding | None:
    """C{{method, decimals}} (defaults C{up}, 4)."""
    if not isinstance(value, dict) or set(value) - {"method", "decimals"}:
        errors[name] = "must be an object with method and decimals only"
        return None
    method = value.get("method", "up")
    decimals = value.get("decimals", 4)
    if method not in ROUNDING_METHODS:
        errors[f"{name}.method"] = f"must be one of {', '.join(ROUNDING_METHODS)}"
    if not (is_int(decimals) and 0 <= decimals <= 6):
        errors[f"{name}.decimals"] = "must be an integer from 0 to 6"
    if method not in ROUNDING_METHODS or not (is_int(decimals) and 0 <= decimals <= 6):
        return None
    return Rounding(method, decimals)


def _plan_problems(error: PlanError, prefix: str) -> dict[str, str]:
    """A L{PlanError}'s problems as bad members under C{prefix}."""
    errors: dict[str, str] = {}
    for problem in error.problems:
        path, sep, message = problem.partition(": ")
        key = prefix if not sep or path.startswith("(") else f"{prefix}.{path}"
        if path.startswith(prefix):
            key = path
        errors[key] = f"{errors[key]}; {message}" if key in errors else (message or problem)
    return errors


def load_inline(documents: dict[str, Any]) -> tuple[dict[str, Tariff], dict[str, str]]:
    """Load inline tariff documents (in a thread); their problems named
    under each document's member path."""
    loaded: dict[str, Tariff] = {}
    errors: dict[str, str] = {}
    for where, document in documents.items():
        tariff, problems = load_quoted(document, "tariff")
        for key, message in problems.items():
            errors[where + key.removeprefix("tariff")] = message
        if tariff is not None:
            loaded[where] = tariff
    return loaded, errors


def load_stored(row: dict[str, Any]) -> tuple[Tariff | None, str | None]:
    """A stored tariff row's document, loaded, or why it is refused."""
    tariff, problems = load_quoted(row["document"], "tariff_id")
    if tariff is None:
        return None, f"tariff {row['id']}: {problems['tariff_id']}"
    return tariff, None


async def fetch_row(repository: Any, e: Any, row_id: int, scope: Scope) -> dict[str, Any]:
    """A row the caller named: 404 when it does not exist or is not theirs."""
    row: dict[str, Any] = await call_repository(e, repository.get(row_id, scope))
    return row


async def _maybe(repository: Any, row_id: int, scope: Scope) -> dict[str, Any] | None:
    """A row a stored row refers to, or C{None} when it is gone (or hidden)."""
    try:
        row: dict[str, Any] = await repository.get(row_id, scope)
    except NotFound:
        return None
    return row


# -- explain ----------------------------------------------------------------------------


@dataclass
class ConnectionAsk:
    """One member of C{connections}: a stored id, or an inline connection."""

    id: int
    stored: bool
    name: str = ""
    vendor: str = ""
    vendor_id: int | None = None
    enabled: bool = True
    vendor_status: str = "active"
    currency: str | None = None
    tariff_id: int | None = None
    where: str = ""
    weight: int = 0


@dataclass
class ExplainAsk:
    """A checked explain request (inline documents are loaded apart)."""

    number: str
    start: dt.datetime
    duration_s: int
    plan_id: int | None
    plan: RoutingPlan | None
    implicit_entries: bool
    connections: list[ConnectionAsk] | None
    customer_tariff_id: int | None
    unavailable: frozenset[int]
    guarantee: ProfitGuarantee | None
    quality: dict[int, Quality]
    seed: int | None
    documents: dict[str, Any] = field(default_factory=dict)


def _connection(item: Any, i: int, errors: dict[str, str],
                documents: dict[str, Any]) -> ConnectionAsk | None:
    """One member of C{connections}."""
    where = f"connections[{i}]"
    if is_int(item):
        ident = id_member(item, where, errors)
        return None if ident is None else ConnectionAsk(ident, True, where=where)
    if not isinstance(item, dict):
        errors[where] = "must be a connection id or an inline connection object"
        return None
    before = len(errors)
    for key in item:
        if key not in CONNECTION_FIELDS:
            errors[f"{where}.{str(key)[:64]}"] = "unknown field"
    ident = id_member(item.get("id"), f"{where}.id", errors)
    texts = {}
    for key in ("name", "vendor"):
        value = item.get(key, "")
        if not isinstance(value, str) or len(value) > 255:
            errors[f"{where}.{key}"] = "must be a string of at most 255 characters"
        texts[key] = value
    vendor_id = item.get("vendor_id")
    if vendor_id is not None:
        vendor_id = id_member(vendor_id, f"{where}.vendor_id", errors)
    enabled = item.get("enabled", True)
    if not isinstance(enabled, bool):
        errors[f"{where}.enabled"] = "must be true or false"
    status = item.get("vendor_status", "active")
    if status not in VENDOR_STATUSES:
        errors[f"{where}.vendor_status"] = f"must be one of {', '.join(VENDOR_STATUSES)}"
    currency = item.get("currency")
    if currency is not None and not (isinstance(currency, str) and CURRENCY.match(currency)):
        errors[f"{where}.currency"] = "must be 3 capital letters (EUR)"
    weight = item.get("weight", 0)
    if not (is_int(weight) and 0 <= weight <= INT_MAX):
        errors[f"{where}.weight"] = f"must be an integer from 0 to {INT_MAX}"
    one_of(item, "tariff_id", "tariff", errors, False, f"{where}.")
    tariff_id = None
    if "tariff_id" in item:
        tariff_id = id_member(item["tariff_id"], f"{where}.tariff_id", errors)
    elif "tariff" in item:
        documents[f"{where}.tariff"] = item["tariff"]
    if len(errors) != before or ident is None:
        return None
    return ConnectionAsk(ident, False, texts["name"], texts["vendor"], vendor_id, enabled,
                         status, currency, tariff_id, where, weight)


def _connections(value: Any, errors: dict[str, str],
                 documents: dict[str, Any]) -> list[ConnectionAsk] | None:
    """The C{connections} member: at most L{MAX_CONNECTIONS}, no id twice."""
    if not isinstance(value, list) or len(value) > MAX_CONNECTIONS:
        errors["connections"] = f"must be a list of at most {MAX_CONNECTIONS} connections"
        return None
    asks = [_connection(item, i, errors, documents) for i, item in enumerate(value)]
    seen: set[int] = set()
    for i, ask in enumerate(asks):
        if ask is not None and ask.id in seen:
            errors[f"connections[{i}]"] = f"connection {ask.id} is given twice"
        elif ask is not None:
            seen.add(ask.id)
    return [a for a in asks if a is not None]


def _quality(value: Any, errors: dict[str, str]) -> dict[int, Quality]:
    """C{{"<connection id>": {"asr", "acd", "pdd"}}}, decimal strings."""
    if not isinstance(value, dict) or len(value) > MAX_CONNECTIONS:
        errors["quality"] = f"must be an object of at most {MAX_CONNECTIONS} connection ids"
        return {}
    out = {}
    for key, figures in value.items():
        where = f"quality.{str(key)[:24]}"
        if not (isinstance(key, str) and re.fullmatch(r"[1-9][0-9]{0,18}", key)
                and int(key) <= INT_MAX):
            errors[where] = "the key must be a connection id"
            continue
        if not isinstance(figures, dict) or set(figures) - set(QUALITY_METRICS):
            errors[where] = f"must be an object of {', '.join(QUALITY_METRICS)}"
            continue
        numbers = {m: amount_member(v, f"{where}.{m}", errors) for m, v in figures.items()}
        if numbers.get("asr") is not None and numbers["asr"] > 1:  # type: ignore[operator]
            errors[f"{where}.asr"] = "must be a ratio from 0 to 1"
        out[int(key)] = Quality(**numbers)
    return out


def _ids(value: Any, name: str, errors: dict[str, str]) -> frozenset[int]:
    """A list of connection ids (C{unavailable})."""
    if not isinstance(value, list) or len(value) > MAX_CONNECTIONS or not all(
            is_int(v) and 1 <= v <= INT_MAX for v in value):
        errors[name] = f"must be a list of at most {MAX_CONNECTIONS} connection ids"
        return frozenset()
    return frozenset(value)


def parse_explain(body: Any) -> tuple[ExplainAsk | None, dict[str, str]]:
    """Check an explain body, except its inline tariff documents (listed in
    C{ask.documents} by member path; L{load_inline} loads them).

    @return: the request (C{None} when a member is bad) and the bad members.
    """
    if not isinstance(body, dict):
        return None, {"body": "must be an object"}
    errors = {str(name)[:64]: "unknown field" for name in body if name not in EXPLAIN_FIELDS}
    documents: dict[str, Any] = {}
    number = body.get("number")
    if not isinstance(number, str) or not re.fullmatch(DESTINATION_PATTERN, number):
        errors["number"] = "must be 1 to 32 digits, with an optional leading +"
    start = instant_member(body.get("start"), "start", errors)
    duration = body.get("duration_s", DEFAULT_REFERENCE_DURATION_S)
    if not (is_int(duration) and 1 <= duration <= MAX_QUOTE_DURATION_S):
        errors["duration_s"] = f"must be an integer from 1 to {MAX_QUOTE_DURATION_S}"
    one_of(body, "routing_plan_id", "plan", errors, True)
    plan_id = plan = None
    if "routing_plan_id" in body:
        plan_id = id_member(body["routing_plan_id"], "routing_plan_id", errors)
    elif "plan" in body:
        try:
            plan = load_plan(body["plan"])
        except PlanError as error:
            errors.update(_plan_problems(error, "plan"))
    implicit = ("routing_plan_id" not in body and isinstance(body.get("plan"), dict)
                and "entries" not in body["plan"])
    connections = None
    if "connections" in body:
        connections = _connections(body["connections"], errors, documents)
    elif implicit:
        errors["connections"] = "required by a plan without entries"
    one_of(body, "customer_tariff_id", "customer_tariff", errors, False)
    customer_id = None
    if "customer_tariff_id" in body:
        customer_id = id_member(body["customer_tariff_id"], "customer_tariff_id", errors)
    elif "customer_tariff" in body:
        documents["customer_tariff"] = body["customer_tariff"]
    guarantee = plan.profit_guarantee if plan is not None else None
    if body.get("profit_guarantee") is not None:
        if guarantee is not None:
            errors["profit_guarantee"] = "the plan has one already: give it once"
        try:
            guarantee = load_guarantee(body["profit_guarantee"])
        except PlanError as error:
            errors.update(_plan_problems(error, "profit_guarantee"))
    if (guarantee is not None and guarantee.needs_customer_cost
            and "customer_tariff_id" not in body and "customer_tariff" not in body):
        errors["customer_tariff_id"] = "required by the profit guarantee (the customer's " \
                                       "cost of the call)"
    unavailable = _ids(body.get("unavailable", []), "unavailable", errors)
    quality = _quality(body.get("quality", {}), errors)
    seed = body.get("seed")
    if "seed" in body and not (is_int(seed) and 0 <= seed <= INT_MAX):
        errors["seed"] = f"must be an integer from 0 to {INT_MAX}"
    if errors or start is None or number is None:
        return None, errors
    if plan is not None and guarantee is not plan.profit_guarantee:
        plan = RoutingPlan(plan.strategy, plan.entries, guarantee, plan.tie_break,
                           plan.quality_metrics)
    return ExplainAsk(number, start, duration, plan_id, plan, implicit, connections,
                      customer_id, unavailable, guarantee, quality,
                      seed, documents), errors


def _documents(body: Any) -> dict[str, Any]:
    """The inline tariff documents of an explain body that parsed badly."""
    documents: dict[str, Any] = {}
    if not isinstance(body, dict):
        return documents
    if "customer_tariff" in body and "customer_tariff_id" not in body:
        documents["customer_tariff"] = body["customer_tariff"]
    items = body.get("connections")
    if isinstance(items, list) and len(items) <= MAX_CONNECTIONS:
        for i, item in enumerate(items):
            if isinstance(item, dict) and "tariff" in item and "tariff_id" not in item:
                documents[f"connections[{i}].tariff"] = item["tariff"]
    return documents


@dataclass
class _Rows:
    """The stored rows an explanation needs, read in the reactor thread."""

    connections: list[tuple[ConnectionAsk | None, dict[str, Any]]] = field(default_factory=list)
    vendors: dict[int, dict[str, Any] | None] = field(default_factory=dict)
    tariffs: dict[int, dict[str, Any] | None] = field(default_factory=dict)
    customer: dict[str, Any] | None = None


def _candidates(rows: _Rows, inline: dict[str, Tariff]) -> list[Candidate]:
    """Every candidate, stored rows and inline connections alike (in a thread)."""
    loaded: dict[int, tuple[TariffIndex | None, str | None]] = {}
    for tariff_id, row in rows.tariffs.items():
        if row is None:
            loaded[tariff_id] = (None, f"tariff {tariff_id} does not exist")
            continue
        tariff, problem = load_stored(row)
        loaded[tariff_id] = (TariffIndex(tariff) if tariff is not None else None, problem)
    out = []
    for connection, row in rows.connections:
        tariff_id = row.get("tariff_id")
        index, problem = loaded.get(tariff_id, (None, None)) if tariff_id else (None, None)
        stored = rows.tariffs.get(tariff_id) if tariff_id else None
        currency = stored.get("currency") if stored else None
        if connection is not None:
            if connection.tariff_id is None and f"{connection.where}.tariff" in inline:
                index = TariffIndex(inline[f"{connection.where}.tariff"])
            out.append(Candidate(
                connection.id, connection.vendor, vendor_id=connection.vendor_id,
                name=connection.name, enabled=connection.enabled,
                vendor_status=connection.vendor_status, tariff=index, weight=connection.weight,
                currency=connection.currency or currency, problem=problem))
            continue
        vendor = rows.vendors.get(row.get("vendor_id") or 0)
        out.append(candidate_from_rows(row, vendor, index, currency, problem))
    return out


def explain_route(ask: ExplainAsk, plan: RoutingPlan, rows: _Rows,
                  inline: dict[str, Tariff]) -> dict[str, Any]:
    """Rank the candidates (in a thread): the answer's body.

    @raise ApiError: 422 when the customer tariff does not rate the number.
    """
    currency = rows.customer.get("currency") if rows.customer is not None else None
    customer_cost = None
    customer = inline.get("customer_tariff")
    if rows.customer is not None:
        customer, problem = load_stored(rows.customer)
        if customer is None:
            raise invalid({"customer_tariff_id": problem or "refused"})
    where = "customer_tariff_id" if rows.customer is not None else "customer_tariff"
    try:
        if customer is not None:
            customer_cost = reference_cost(customer, ask.number, ask.start, ask.duration_s)
        candidates = _candidates(rows, inline)
        ranking = rank_routes(ask.number, ask.start, candidates, plan,
                              customer_cost=customer_cost, unavailable=ask.unavailable,
                              duration_s=ask.duration_s, quality=ask.quality,
                              rng=random.Random(ask.seed), currency=currency)
    except DestinationRejected as rejected:
        blocked = rejected.reason == BLOCKED_DESTINATION
        raise ApiError(422, {"error": "destination blocked by the customer tariff" if blocked
                             else "destination not rated by the customer tariff",
                             "destination": ask.number}) from None
    except OverflowError:
        raise invalid({"start": "is out of range for this call"}) from None
    except DecimalException:
        raise invalid({where: "the cost cannot be computed exactly (amounts with too many "
                              "digits)"}) from None
    return {**ranking.as_dict(), "currency": currency, "routing_plan_id": ask.plan_id}


class ExplainResource(ApiEndpoint):
    """C{POST /api/v1/routing/explain}: the routes of one call, explained."""

    isLeaf = True
    methods = ("POST",)

    def __init__(self, api: ApiContext, repositories: dict[str, Any]) -> None:
        """
        @param repositories: C{routing_plans}, C{connections}, C{vendors}
            and C{tariffs}, read in the caller's scope.
        """
        super().__init__(api)
        self.repositories = repositories

    async def handle_post(self, request: IRequest, scope: Scope) -> Reply:
        """Check the body, read the rows it names, rank; 200."""
        body = json_body(request)
        ask, errors = parse_explain(body)
        documents = ask.documents if ask is not None else _documents(body)
        inline, problems = await deferToThread(load_inline, documents)
        errors.update(problems)
        if errors or ask is None:
            raise invalid(errors)
        plan = ask.plan
        if ask.plan_id is not None:
            row = await fetch_row(self.repositories["routing_plans"], _PLAN, ask.plan_id, scope)
            try:
                plan = plan_from_row(row)
            except PlanError as error:
                raise invalid({"routing_plan_id": f"the stored plan is refused: "
                                                  f"{error.problems[0]}"}) from None
            plan = RoutingPlan(plan.strategy, plan.entries, ask.guarantee, plan.tie_break,
                               plan.quality_metrics)
        assert plan is not None
        rows = await self._rows(ask, plan, scope)
        if ask.implicit_entries and ask.connections is not None:
            ids = tuple(c.id for c in ask.connections)
            entries = (PlanEntry(0, ANY_PREFIX, ids),) if ids else ()
            plan = RoutingPlan(plan.strategy, entries, plan.profit_guarantee, plan.tie_break,
                               plan.quality_metrics)
        return Reply(200, await deferToThread(explain_route, ask, plan, rows, inline))

    async def _rows(self, ask: ExplainAsk, plan: RoutingPlan, scope: Scope) -> _Rows:
        """Read the connections, vendors and tariffs the request needs."""
        repos = self.repositories
        rows = _Rows()
        if ask.connections is None:
            wanted = list(dict.fromkeys(i for e in plan.entries if e.matches(ask.number)
                                        for i in e.connection_ids))
            if len(wanted) > MAX_CONNECTIONS:
                raise invalid({"routing_plan_id" if ask.plan_id else "plan":
                               f"lists more than {MAX_CONNECTIONS} connections for "
                               f"{ask.number}"})
            for connection_id in wanted:
                row = await _maybe(repos["connections"], connection_id, scope)
                if row is not None:
                    rows.connections.append((None, row))
        else:
            for ask_ in ask.connections:
                if ask_.stored:
                    row = await fetch_row(repos["connections"], _CONNECTION, ask_.id, scope)
                    rows.connections.append((None, row))
                else:
                    rows.connections.append((ask_, {"id": ask_.id,
                                                    "tariff_id": ask_.tariff_id}))
        for connection, row in rows.connections:
            vendor_id = row.get("vendor_id")
            if connection is None and vendor_id and vendor_id not in rows.vendors:
                rows.vendors[vendor_id] = await _maybe(repos["vendors"], vendor_id, scope)
            tariff_id = row.get("tariff_id")
            if tariff_id and tariff_id not in rows.tariffs:
                if connection is not None:  # named by the caller: 404 when unknown
                    rows.tariffs[tariff_id] = await fetch_row(repos["tariffs"], _TARIFF,
                                                         tariff_id, scope)
                else:
                    rows.tariffs[tariff_id] = await _maybe(repos["tariffs"], tariff_id, scope)
        if ask.customer_tariff_id is not None:
            rows.customer = await fetch_row(repos["tariffs"], _TARIFF, ask.customer_tariff_id,
                                       scope)
        return rows
