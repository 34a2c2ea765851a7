"""Outgoing trunk calls: from what a PBX dialled to the hunt through the
vendors (numbering, number portability, least-cost routing).

L{OutboundRouter.route} answers the core's routing question for a call
that came from a customer trunk: it classifies the dialled string with the
customer's dial plan (C{plugins.trunking.numbering}), asks the LNP table
for a routing prefix, ranks the vendor connections of the trunk's routing
plan (C{plugins.trunking.lcr}) and turns each ranked connection into one
hunt step: one destination, the connection's set-up timeout, its answer
timeout as the step's ring timeout.  The steps are tried in order; the
plugin's C{b2bua_choose_failover} decides whether a failure moves on.

Everything it reads comes from the provisioning snapshot; the only thing
it computes per call is the ranking (vendor tariffs are indexed once per
tariff version and kept).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from twisted.logger import Logger

from b2bua.core.decisions import Destination, Reject, Route
from b2bua.sip.uri import URI
from plugins.trunking.callerid import CallerIdError, CallerIdFormat
from plugins.trunking.lcr import (
    Quality,
    RankedRoute,
    Ranking,
    candidate_from_rows,
    rank_routes,
    reference_cost,
)
from plugins.trunking.lcr_plans import PlanError, plan_from_row
from plugins.trunking.numbering import Dialled, DialPlan, Kind, NumberingError
from plugins.trunking.uac import BadConnection, target_for
from rating.lookup import DestinationRejected, TariffIndex
from rating.tariff import TariffError, load_tariff

__all__ = ["CONNECTION_LABEL", "OutboundRouter", "TrunkCall", "connection_of"]

log = Logger()

#: The label of a destination that is a vendor connection (C{connection:<id>}).
CONNECTION_LABEL = "connection:"
_SOURCE = "trunking"


def connection_of(label: str) -> int | None:
    """The connection id of a destination label, or C{None}."""
    if not label.startswith(CONNECTION_LABEL):
        return None
    try:
        return int(label[len(CONNECTION_LABEL):])
    except ValueError:
        return None


def _reject(code: int, reason: str, cause: int, text: str) -> Reject:
    return Reject(code, reason, (("Reason", f'Q.850;cause={cause};text="{text}"'),),
                  source=_SOURCE)


#: Dialled strings that cannot be routed.
INVALID = _reject(484, "Address Incomplete", 28, "invalid number format")
NO_PLAN = _reject(404, "Not Found", 3, "no routing plan")
NO_ROUTE = _reject(404, "Not Found", 3, "no route to destination")
ALL_DOWN = _reject(503, "Service Unavailable", 34, "no circuit available")


@dataclass
class TrunkCall:
    """What the trunking plugin knows of one call (C{call.data["trunking"]}).

    @ivar direction: C{out} (from a customer trunk to the vendors) or
        C{in} (from a vendor to a DID).
    @ivar trunk: the customer trunk's row (the caller's, or the DID's target).
    @ivar connection: for an inbound call, the vendor connection it came on.
    @ivar number: the E.164 number (digits, no C{+}) called.
    @ivar dialled: how the dialled string was classified (outbound).
    @ivar routes: the ranked routes by destination label (outbound).
    @ivar ranking: the whole ranking, for the CDR and the logs.
    @ivar attempts: destination label -> the attempt id the limits know it by.
    """

    direction: str
    trunk: Mapping[str, Any] | None = None
    connection: Mapping[str, Any] | None = None
    number: str = ""
    dialled: Dialled | None = None
    routes: dict[str, RankedRoute] = field(default_factory=dict)
    ranking: Ranking | None = None
    attempts: dict[str, str] = field(default_factory=dict)
    #: labels of the attempts already counted as over (failed, the hunt moved on)
    over: set[str] = field(default_factory=set)
    emergency: bool = False


class _Cache:
    """Parsed documents by the identity of the snapshot row they came from
    (a new snapshot row is a new version); bounded."""

    def __init__(self, build: Callable[[Mapping[str, Any]], Any], size: int = 1024) -> None:
        self._build = build
        self._size = size
        self._items: dict[int, tuple[Mapping[str, Any], Any]] = {}

    def get(self, row: Mapping[str, Any]) -> Any:
        found = self._items.get(id(row))
        if found is not None and found[0] is row:
            return found[1]
        value = self._build(row)
        if len(self._items) >= self._size:
            self._items.clear()
        self._items[id(row)] = (row, value)
        return value


def _tariff_index(row: Mapping[str, Any]) -> TariffIndex | str:
    """A tariff row's index, or why it cannot be used."""
    try:
        return TariffIndex(load_tariff(row["document"]))
    except (TariffError, KeyError, TypeError) as error:
        return f"tariff {row.get('id')}: {error}"


def _dial_plan(row: Mapping[str, Any]) -> DialPlan | None:
    document = row.get("dial_plan") or {}
    if not document:
        return None
    try:
        return DialPlan.from_mapping(document)
    except NumberingError as error:
        log.error("trunking: dial plan of customer {id} refused: {error}",
                  id=row.get("id"), error=error)
        return None


def _caller_id_format(row: Mapping[str, Any]) -> CallerIdFormat:
    try:
        return CallerIdFormat.from_mapping(row.get("caller_id_format") or {})
    except CallerIdError as error:
        log.error("trunking: caller_id_format of {id} refused: {error}",
                  id=row.get("id"), error=error)
        return CallerIdFormat()


class OutboundRouter:
    """Routes the calls of customer trunks through the vendors.

    @param directory: a zero-argument callable giving the current snapshot
        (it changes with provisioning).
    @param unavailable: a zero-argument callable giving the connection ids
        that are down now (probing, C{503 Retry-After}).
    @param max_attempts: the most vendors tried for one call.
    @param rng: the random source of the C{weighted} strategy.
    @param quality: the rolling figures by connection (C{quality} strategy).
    @param lnp: the number-portability lookup: C{"+E.164"} -> routing prefix
        or C{None} (default: the provisioned C{lnp_entries} table).
    """

    def __init__(self, directory: Callable[[], Any],
                 unavailable: Callable[[], set[int]], *, max_attempts: int = 5,
                 rng: random.Random | None = None,
                 quality: Callable[[], Mapping[int, Quality]] | None = None,
                 lnp: Callable[[str], str | None] | None = None) -> None:
        self.directory = directory
        self.unavailable = unavailable
        self.quality = quality
        self.lnp = lnp
        self.max_attempts = max_attempts
        self.rng = rng or random.Random()
        self.tariffs = _Cache(_tariff_index)
        self.dial_plans = _Cache(_dial_plan)
        self.caller_ids = _Cache(_caller_id_format)

    # -- numbering ------------------------------------------------------------

    def classify(self, customer: Mapping[str, Any] | None, dialled: str) -> Dialled:
        """How the customer's dial plan reads C{dialled} (without a plan:
        E.164 with or without C{+}, else invalid)."""
        plan = self.dial_plans.get(customer) if customer is not None else None
        if plan is not None:
            return plan.classify(dialled)
        digits = dialled[1:] if dialled.startswith("+") else dialled
        if digits.isdigit() and 6 <= len(digits) <= 15:
            return Dialled(Kind.E164, "+" + digits)
        return Dialled.invalid(dialled, "no dial plan: only E.164 numbers are routed")

    # -- routing --------------------------------------------------------------

    def route(self, state: TrunkCall, customer: Mapping[str, Any], dialled: str,
              now: float) -> list[Route] | Reject:
        """The hunt for a call from C{state.trunk} dialling C{dialled}."""
        directory = self.directory()
        trunk = state.trunk
        assert trunk is not None
        classified = state.dialled
        if classified is None:
            classified = state.dialled = self.classify(customer, dialled)
        if classified.kind in (Kind.INVALID, Kind.EXTENSION):
            return INVALID if classified.kind is Kind.INVALID else NO_ROUTE
        number = classified.number.lstrip("+")
        state.number = number
        state.emergency = classified.kind is Kind.EMERGENCY
        lookup = number
        if classified.kind is Kind.E164:
            prefix = self.ported("+" + number, directory)
            if prefix:
                lookup = prefix + number
        plan_row = directory.routing_plan_for_trunk(int(trunk["id"]))
        if plan_row is None:
            return NO_PLAN
        try:
            plan = plan_from_row(plan_row)
        except PlanError as error:
            log.error("trunking: routing plan {id} refused: {error}",
                      id=plan_row.get("id"), error=error)
            return NO_PLAN
        start = dt.datetime.fromtimestamp(now, dt.UTC)
        ranking = self._rank(directory, lookup, start, plan, customer)
        state.ranking = ranking
        if ranking.rejected:
            down = any(e.reason == "unavailable" for e in ranking.excluded)
            return ALL_DOWN if down else NO_ROUTE
        steps = []
        for ranked in ranking.routes[:self.max_attempts]:
            step = self._step(directory, ranked, number, state.emergency)
            if step is not None:
                state.routes[step.destinations[0].label] = ranked
                steps.append(step)
        return steps or NO_ROUTE

    def ported(self, number: str, directory: Any) -> str | None:
        """The routing prefix of a ported number: the LNP hook's answer (a
        carrier database), else the provisioned table's."""
        if self.lnp is not None:
            try:
                return self.lnp(number)
            except Exception:
                log.failure("trunking: LNP lookup of {number} failed; routing as dialled",
                            number=number)
                return None
        found = directory.lnp(number)
        return found.routing_prefix if found is not None else None

    def _rank(self, directory: Any, number: str, start: dt.datetime, plan: Any,
              customer: Mapping[str, Any]) -> Ranking:
        candidates = []
        for row in directory.connections():
            tariff_row = directory.tariff(row["tariff_id"]) if row.get("tariff_id") else None
            index = self.tariffs.get(tariff_row) if tariff_row is not None else None
            problem = index if isinstance(index, str) else None
            vendor = directory.vendor(row["vendor_id"])
            candidates.append(candidate_from_rows(
                row, vendor, None if problem else index,
                currency=tariff_row.get("currency") if tariff_row is not None else None,
                problem=problem))
        customer_cost: Decimal | None = None
        guarantee = plan.profit_guarantee
        domain = customer.get("sip_domain") or ""
        if guarantee is not None and guarantee.needs_customer_cost:
            sell = directory.tariff_for_tenant(domain, start.date())
            index = self.tariffs.get(sell) if sell is not None else None
            if isinstance(index, TariffIndex):
                try:
                    customer_cost = reference_cost(index, number, start)
                except DestinationRejected:
                    customer_cost = None
        try:
            return rank_routes(number, start, candidates, plan, customer_cost=customer_cost,
                               unavailable=self.unavailable(), rng=self.rng,
                               quality=self.quality() if self.quality else None,
                               currency=customer.get("currency") or None)
        except ValueError as error:  # a guarantee that needs the customer's cost
            log.warn("trunking: ranking {number} failed: {error}", number=number, error=error)
            return rank_routes(number, start, candidates,
                               dataclasses.replace(plan, profit_guarantee=None),
                               unavailable=self.unavailable(), rng=self.rng,
                               currency=customer.get("currency") or None)

    def _step(self, directory: Any, ranked: RankedRoute, number: str,
              emergency: bool) -> Route | None:
        row = directory.connection(ranked.connection_id)
        if row is None:
            return None
        try:
            target = target_for(str(row["address"]), str(row.get("transport") or "udp"))
        except BadConnection as error:
            log.error("trunking: connection {id} unusable: {error}",
                      id=ranked.connection_id, error=error)
            return None
        user = number if emergency else "+" + number
        if not emergency and self._formats(row):
            try:
                user = self.caller_ids.get(row).format_number(user)
            except CallerIdError:
                pass  # not a number the format knows: sent as E.164
        uri = URI("sip", user=user, host=target.host, port=target.port,
                  params={"transport": target.transport.lower()}
                  if target.transport != "UDP" else {})
        setup = row.get("setup_timeout") or None
        answer = row.get("answer_timeout") or None
        destination = Destination(uri=uri, next_hop=target,
                                  label=f"{CONNECTION_LABEL}{ranked.connection_id}",
                                  setup_timeout=float(setup) if setup else None)
        return Route((destination,), ring_timeout=float(answer) if answer else None,
                     source=_SOURCE)

    @staticmethod
    def _formats(row: Mapping[str, Any]) -> bool:
        """Whether the connection says how numbers are written."""
        return bool((row.get("caller_id_format") or {}).get("format"))
