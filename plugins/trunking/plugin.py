"""The C{trunking} plugin: customer SIP trunks out through the vendors,
vendor DIDs in to their targets, with limits, failover and per-connection
figures.  The pieces live in the modules beside it; this one turns the
core's hooks into calls on them.  The contract is in C{docs/trunking.md}.

Settings (C{[plugins.trunking]})::

    [plugins.trunking]
    max_attempts = 5          # vendors tried per call at most
    trusted_vendors = true    # vendors are inside the trust domain (get P-Asserted-Identity)

    [plugins.trunking.limits] # see docs/limits.md
    reject_code = 503
    retry_after = 5

Who is who:

  - a request from an address of an C{ip} trunk is that trunk's call
    (identity C{trunk-<id>@<customer domain>}, no challenge); a C{digest}
    trunk's PBX authenticates as its trunk account, and a C{both} trunk
    must do both;
  - a request from a vendor connection's address (C{inbound_sources}, or
    its address) is an inbound DID call (identity C{connection-<id>@<the
    DID's customer domain>}).

Outbound calls are numbered with the customer's dial plan, looked up in
the LNP table, ranked by least cost and hunted connection by connection;
inbound calls ring the DID's target.  Both are counted against the trunk's
and the connection's limits, cluster-wide when the balances live in Redis
(the same Redis holds the limits).  Inbound DID calls and emergency calls
are not charged to the customer by the charging plugin
(C{call.data["uncharged"]}); every B leg to a vendor carries the vendor and
its buy cost in the CDR.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from twisted.logger import Logger

from b2bua.core.call import Call, CallRecord
from b2bua.core.decisions import Destination, Hunt, Reject, StopHunting
from b2bua.core.services import Services
from b2bua.hookspecs import hookimpl
from b2bua.sip.errors import ParseError
from b2bua.sip.headers import parse_name_addr
from b2bua.sip.interfaces import Source
from b2bua.sip.message import Request, Response
from b2bua.sip.offer_answer import filter_codecs
from plugins.trunking.call_limiter import CallLimiter, LimitSettings, provisioned_limits
from plugins.trunking.forwarding import apply_history_privacy
from plugins.trunking.identity import (
    CallerIdentity,
    apply_privacy,
    assert_identity,
    choose_caller_number,
    privacy_values,
    receive_identity,
    set_calling_number,
)
from plugins.trunking.inbound import UNKNOWN_DID, InboundContext, route_did
from plugins.trunking.limits import MemoryCallLimitStore
from plugins.trunking.numbering import Kind
from plugins.trunking.outbound import OutboundRouter, TrunkCall, connection_of
from plugins.trunking.stats import ConnectionStats
from plugins.trunking.uac import retry_after
from rating.cost import billable_duration, cost
from rating.lookup import DestinationRejected, TariffIndex

__all__ = ["NAME", "SettingsError", "Trunking"]

NAME = "trunking"
TRUNK_IDENTITY = "trunk-"
CONNECTION_IDENTITY = "connection-"
#: Why a call is not charged to the customer (C{call.data["uncharged"]}).
INBOUND_DID = "inbound-did"
EMERGENCY = "emergency"

_KEYS = frozenset({"max_attempts", "trusted_vendors", "limits"})
WRONG_SOURCE = Reject(403, "Forbidden", (("Reason", 'Q.850;cause=21;text="trunk source"'),),
                      source=NAME)

log = Logger()


class SettingsError(ValueError):
    """A bad C{[plugins.trunking]} table (names the key)."""


def _failover_codes(row: Mapping[str, Any]) -> list[Any]:
    codes = row.get("failover_codes")
    return list(codes) if isinstance(codes, list | tuple) else [408, 480, "5xx"]


def fails_over(code: int, codes: list[Any]) -> bool:
    """Whether C{code} is among a connection's failover codes (ints, or
    class patterns such as C{"5xx"})."""
    for entry in codes:
        if isinstance(entry, int) and entry == code:
            return True
        if isinstance(entry, str) and len(entry) == 3 and entry.endswith("xx") \
                and entry[0] == str(code)[0]:
            return True
    return False


def _number(request: Request) -> str:
    """The Request-URI's user part without parameters."""
    return (request.uri.user_unescaped or "").split(";", 1)[0]


class Trunking:
    """The trunking plugin (module docstring)."""

    def __init__(self) -> None:
        self.services: Services | None = None
        self.router: OutboundRouter | None = None
        self.limiter: CallLimiter | None = None
        self.stats: ConnectionStats | None = None
        self.trusted_vendors = True

    # -- life cycle ------------------------------------------------------------------

    @hookimpl
    def b2bua_configure(self, services: Services, settings: dict[str, Any]) -> None:
        """Read the settings; build the router, the limiter and the figures."""
        table = settings.get(NAME, {})
        if not isinstance(table, Mapping):
            raise SettingsError(f"plugins.{NAME}: expected a table")
        unknown = sorted(set(table) - _KEYS)
        if unknown:
            raise SettingsError(f"plugins.{NAME}.{unknown[0]}: unknown key")
        attempts = table.get("max_attempts", 5)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 20:
            raise SettingsError(f"plugins.{NAME}.max_attempts: expected 1..20")
        trusted = table.get("trusted_vendors", True)
        if not isinstance(trusted, bool):
            raise SettingsError(f"plugins.{NAME}.trusted_vendors: expected true or false")
        self.trusted_vendors = trusted
        limits = LimitSettings.from_settings(table.get("limits", {}))
        self.services = services
        registry = services.metrics.registry
        self.stats = ConnectionStats(registry)
        self.router = OutboundRouter(lambda: services.directory, self._unavailable,
                                     max_attempts=attempts, quality=self.stats.quality,
                                     lnp=lambda number: _ported(services, number))
        redis = services.extra.get("redis")
        if redis is not None:
            from plugins.trunking.limits_redis import RedisCallLimitStore

            store: Any = RedisCallLimitStore(redis, services.clock, lease=limits.lease)
        else:
            store = MemoryCallLimitStore(services.clock, lease=limits.lease)
        self.limiter = CallLimiter(store, services.clock, registry,
                                   provisioned_limits(services.directory), limits)
        self.limiter.start()
        services.extra["trunk_limiter"] = self.limiter
        services.extra["trunk_stats"] = self.stats

    @hookimpl
    def b2bua_unconfigure(self) -> None:
        """Stop renewing the limit leases."""
        if self.limiter is not None:
            self.limiter.stop()

    def _unavailable(self) -> set[int]:
        prober = self.services.extra.get("trunk_prober") if self.services else None
        return prober.unavailable() if prober is not None else set()

    # -- who is calling --------------------------------------------------------------

    @hookimpl
    def b2bua_trusted_source(self, source: Source, request: Request) -> str | None:
        """An C{ip} trunk's address, or a vendor connection's (for a DID)."""
        if self.services is None or request.method != "INVITE":
            return None
        directory = self.services.directory
        host = source.remote[0]
        trunk = directory.trunk_by_source(host)
        if trunk is not None and trunk.get("auth_mode") == "ip":
            tenant = directory.tenant_by_id(trunk["customer_id"])
            if tenant is not None:
                return f"{TRUNK_IDENTITY}{trunk['id']}@{tenant.domain}"
        connection = directory.connection_by_source(host)
        if connection is not None:
            did = directory.did(_number(request))
            tenant = directory.tenant_by_id(did["customer_id"]) \
                if did is not None and did.get("customer_id") else None
            domain = tenant.domain if tenant is not None else "invalid"
            return f"{CONNECTION_IDENTITY}{connection['id']}@{domain}"
        return None

    @hookimpl
    def b2bua_call_received(self, call: Call, request: Request) -> None:
        """Tell trunk calls and DID calls apart (C{call.data["trunking"]})."""
        if self.services is None:
            return
        directory = self.services.directory
        user, _, _ = call.identity.partition("@")
        state: TrunkCall | None = None
        if user.startswith(CONNECTION_IDENTITY):
            connection = directory.connection(_int(user[len(CONNECTION_IDENTITY):]))
            state = TrunkCall("in", connection=connection, number=_number(request).lstrip("+"))
            call.data["uncharged"] = INBOUND_DID
            if connection is not None:
                assert self.stats is not None
                self.stats.started(str(connection["id"]), "in")
        elif user.startswith(TRUNK_IDENTITY):
            state = TrunkCall("out", trunk=directory.trunk(_int(user[len(TRUNK_IDENTITY):])))
        elif call.tenant:
            extension = directory.extension(call.tenant, user)
            trunk = directory.trunk_by_account(extension.id) \
                if extension is not None and extension.id is not None else None
            if trunk is not None:
                state = TrunkCall("out", trunk=trunk)
                if trunk.get("auth_mode") == "both":
                    call.data["trunk_source_ok"] = self._source_matches(trunk, call)
        if state is None:
            return
        call.data[NAME] = state
        if state.direction == "out" and state.trunk is not None and self.router is not None:
            # numbered now, so that charging (before routing) rates the E.164 number
            customer = directory.tenant_row(state.trunk["customer_id"])
            dialled = self.router.classify(customer, _number(request))
            state.dialled = dialled
            if dialled.kind in (Kind.E164, Kind.EMERGENCY, Kind.SERVICE):
                state.number = dialled.number.lstrip("+")
                call.data["number"] = state.number
            if dialled.kind is Kind.EMERGENCY:
                state.emergency = True
                call.data["uncharged"] = EMERGENCY

    def _source_matches(self, trunk: Mapping[str, Any], call: Call) -> bool:
        assert self.services is not None
        found = self.services.directory.trunk_by_source(call.a_leg.source.remote[0])
        return found is not None and found["id"] == trunk["id"]

    # -- admission ---------------------------------------------------------------------

    @hookimpl
    def b2bua_authorize_call(self, call: Call, request: Request) -> Any:
        """A C{both} trunk from elsewhere is refused; then the call-scoped
        limits (the trunk's, and an inbound call's connection)."""
        state = call.data.get(NAME)
        if not isinstance(state, TrunkCall) or self.limiter is None:
            return None
        if call.data.pop("trunk_source_ok", True) is False:
            return WRONG_SOURCE
        if state.emergency:
            return None  # an emergency call is never refused by a limit
        if state.direction == "out":
            if state.trunk is None:
                return None
            trunk_id, connection_id = str(state.trunk["id"]), None
        else:
            connection_id = str(state.connection["id"]) if state.connection else None
            did = self.services.directory.did(state.number) if self.services else None
            trunk_id = str(did["target"]) if did is not None \
                and did.get("target_kind") == "trunk" else None
        limiter = self.limiter
        return lambda: limiter.admit_call(call.id, state.direction, trunk=trunk_id,
                                          connection=connection_id)

    @hookimpl
    def b2bua_admit_attempt(self, call: Call, destination: Destination,
                            attempt: int) -> Any:
        """Each attempt on a vendor connection counts against its limits."""
        state = call.data.get(NAME)
        connection = connection_of(destination.label)
        if not isinstance(state, TrunkCall) or connection is None or self.limiter is None:
            return None
        state.attempts[destination.label] = str(attempt)
        assert self.stats is not None
        if state.emergency:
            self.stats.started(str(connection), "out")
            return None
        limiter, stats = self.limiter, self.stats

        def admitted(reject: Reject | None) -> Reject | None:
            if reject is None:
                stats.started(str(connection), "out")
            return reject

        return lambda: limiter.admit_attempt(call.id, str(attempt), str(connection)) \
            .addCallback(admitted)

    # -- routing -------------------------------------------------------------------------

    @hookimpl
    def b2bua_route_call(self, call: Call, request: Request) -> Any:
        """Outbound: the least-cost hunt; inbound: the DID's target."""
        state = call.data.get(NAME)
        services = self.services
        if not isinstance(state, TrunkCall) or services is None or self.router is None:
            return None
        directory = services.directory
        if state.direction == "in":
            did = directory.did(state.number)
            if did is None:
                return UNKNOWN_DID
            return route_did(InboundContext(directory, services.registrar, did,
                                            did["number"].lstrip("+")))
        if state.trunk is None:
            return None
        customer = directory.tenant_row(state.trunk["customer_id"])
        if customer is None:
            return None
        return self.router.route(state, customer, _number(request), services.clock.seconds())

    @hookimpl
    def b2bua_prepare_outgoing_request(self, call: Call, leg: Any, request: Request) -> None:
        """Towards a vendor: the caller's number as the customer may send it,
        written the vendor's way, asserted, with the caller's privacy."""
        state = call.data.get(NAME)
        if not isinstance(state, TrunkCall) or state.direction != "out" \
                or request.method != "INVITE" or self.services is None:
            return
        connection_id = connection_of(getattr(leg.destination, "label", ""))
        if connection_id is None or state.trunk is None:
            return
        directory = self.services.directory
        connection = directory.connection(connection_id)
        if connection is None:
            return
        received = call.a_leg.request  # the PBX's INVITE (kept until the answer)
        try:
            identity = _pbx_identity(received) if received is not None \
                else receive_identity(request, trusted=False)
        except ParseError:
            return
        if received is not None:
            # a call the PBX forwards carries where it was forwarded from
            for name in ("Diversion", "History-Info"):
                for value in received.headers.get_all(name):
                    request.headers.add(name, value)
        allowed = {row["number"] if row["number"].startswith("+") else "+" + row["number"]
                   for row in directory.dids_of_customer(state.trunk["customer_id"])}
        fmt = self.router.caller_ids.get(connection) if self.router else None
        number = choose_caller_number(identity, allowed,
                                      default=fmt.default if fmt is not None else None)
        if number is not None:
            user = number
            if fmt is not None:
                try:
                    user = fmt.format_number(number)
                except ValueError:
                    user = number
            set_calling_number(request, user)
            assert_identity(request, number, domain=request.uri.host)
        apply_privacy(request, identity.privacy, next_hop_trusted=self.trusted_vendors)
        apply_history_privacy(request, identity.privacy, next_hop_trusted=self.trusted_vendors)

    @hookimpl
    def b2bua_rewrite_sdp(self, call: Call, leg: Any, sdp: Any, direction: str) -> None:
        """Offers towards a vendor or a trunk keep only the codecs both
        the connection and the trunk allow (empty lists allow anything);
        RFC 4733 telephone events always stay.  A stream left with no
        codec is rejected (port 0): the callee then refuses the call and
        the hunt moves on."""
        state = call.data.get(NAME)
        if direction != "offer" or not isinstance(state, TrunkCall) or self.services is None:
            return
        label = getattr(getattr(leg, "destination", None), "label", "")
        directory = self.services.directory
        allowed: list[list[str]] = []
        connection_id = connection_of(label)
        if connection_id is not None:
            connection = directory.connection(connection_id)
            allowed.append(list((connection or {}).get("codecs") or []))
            allowed.append(list((state.trunk or {}).get("codecs") or []))
        elif label.startswith("trunk:") and state.direction == "in":
            trunk = directory.trunk(_int(label[len("trunk:"):]))
            allowed.append(list((trunk or {}).get("codecs") or []))
            allowed.append(list((state.connection or {}).get("codecs") or []))
        lists = [names for names in allowed if names]
        if not lists:
            return
        names = set.intersection(*({name.lower() for name in names} for names in lists))
        for media in sdp.media:
            if not media.rejected:
                filter_codecs(media, names, keep_telephone_event=True)

    # -- failover -----------------------------------------------------------------------

    @hookimpl
    def b2bua_choose_failover(self, call: Call, leg: Any, response: Response | None,
                              attempt: int) -> Hunt | StopHunting | None:
        """Move on to the next vendor on the connection's failover codes and
        on timeouts; a C{503} with C{Retry-After} parks the connection."""
        state = call.data.get(NAME)
        if not isinstance(state, TrunkCall) or state.direction != "out":
            return None
        label = getattr(getattr(leg, "destination", None), "label", "") if leg else ""
        connection_id = connection_of(label)
        if self.limiter is not None:
            self.limiter.attempt_ended(call.id, str(attempt))
        if connection_id is None:
            return None  # refused by a limit before it was tried, or not a vendor
        code = response.code if response is not None else 408
        directory = self.services.directory if self.services else None
        row = directory.connection(connection_id) if directory is not None else None
        if response is not None and code == 503:
            seconds = retry_after(response)
            prober = self.services.extra.get("trunk_prober") if self.services else None
            if seconds and prober is not None:
                prober.mark_unavailable(connection_id, seconds)
        self._attempt_over(state, leg)
        if row is not None and not fails_over(code, _failover_codes(row)) and code != 408:
            return StopHunting(code, response.reason if response is not None else None,
                               source=NAME)
        assert self.stats is not None
        self.stats.failed_over(str(connection_id))
        self._attempt_over(state, leg)
        return Hunt(source=NAME)

    # -- the end -------------------------------------------------------------------------

    @hookimpl
    def b2bua_call_answered(self, call: Call, leg: Any, answered_at: float) -> Any:
        """The answering attempt keeps its connection slot; the others go."""
        state = call.data.get(NAME)
        if not isinstance(state, TrunkCall) or self.limiter is None:
            return None
        attempt = state.attempts.get(getattr(leg.destination, "label", ""))
        if attempt is None:
            return None
        return self.limiter.call_answered(call.id, attempt)

    @hookimpl
    def b2bua_call_ended(self, call: Call, record: CallRecord) -> Any:
        """Free every limit slot; count the attempts; price each vendor leg."""
        state = call.data.get(NAME)
        if not isinstance(state, TrunkCall):
            return None
        assert self.stats is not None
        if state.direction == "in" and state.connection is not None:
            talk = (record.ended_at or 0) - record.answered_at \
                if record.answered_at is not None else 0.0
            self.stats.ended(str(state.connection["id"]), "in",
                             record.answered_at is not None, talk)
        legs = {}
        for leg in record.legs:
            connection_id = connection_of(leg.destination)
            if connection_id is None or leg.destination not in state.attempts:
                continue
            if leg.destination not in state.over:
                answered = leg.answered_at is not None
                talk = (leg.ended_at or leg.answered_at) - leg.answered_at \
                    if leg.answered_at is not None else 0.0
                pdd = leg.ringing_at - leg.started_at if leg.ringing_at is not None else None
                self.stats.ended(str(connection_id), "out", answered, talk or 0.0, pdd)
            legs[leg.destination] = self._leg_charge(state, connection_id, leg)
        if legs:
            call.data["legs"] = legs
        return self.limiter.call_ended(call.id) if self.limiter is not None else None

    def _attempt_over(self, state: TrunkCall, leg: Any) -> None:
        """A failed attempt no longer counts as a current call (its figures
        are counted now, not when the whole call ends)."""
        label = getattr(getattr(leg, "destination", None), "label", "")
        connection_id = connection_of(label)
        if connection_id is None or label in state.over or label not in state.attempts:
            return
        state.over.add(label)
        assert self.stats is not None
        ringing = getattr(leg, "ringing_at", None)
        pdd = ringing - leg.started_at if ringing is not None else None
        self.stats.ended(str(connection_id), "out", False, 0.0, pdd)

    def _leg_charge(self, state: TrunkCall, connection_id: int, leg: Any) -> dict[str, Any]:
        """The vendor and its cost of one attempt (0 unless answered)."""
        ranked = state.routes.get(leg.destination)
        charge: dict[str, Any] = {"connection_id": connection_id,
                                  "vendor": ranked.vendor if ranked else "",
                                  "cost": Decimal(0), "currency": ""}
        if ranked is None or leg.answered_at is None or self.services is None:
            return charge
        directory = self.services.directory
        row = directory.connection(connection_id)
        tariff_row = directory.tariff(row["tariff_id"]) \
            if row is not None and row.get("tariff_id") else None
        index = self.router.tariffs.get(tariff_row) \
            if tariff_row is not None and self.router else None
        if not isinstance(index, TariffIndex):
            return charge
        answered = dt.datetime.fromtimestamp(leg.answered_at, dt.UTC)
        ended = dt.datetime.fromtimestamp(leg.ended_at or leg.answered_at, dt.UTC)
        try:
            match = index.match(state.number, answered)
        except DestinationRejected:
            return charge
        charge["cost"] = cost(match, billable_duration(answered, ended)).cost
        charge["currency"] = tariff_row.get("currency") or ""
        return charge


def _ported(services: Services, number: str) -> str | None:
    """The routing prefix of a ported number: a plugin's LNP lookup
    (C{services.extra["lnp_lookup"]}), else the provisioned table."""
    hook = services.extra.get("lnp_lookup")
    if hook is not None:
        return hook(number)  # type: ignore[no-any-return]
    found = services.directory.lnp(number)
    return found.routing_prefix if found is not None else None


def _pbx_identity(received: Request) -> CallerIdentity:
    """What a customer PBX's INVITE says of its caller, read without
    changing it: a PBX is outside the trust domain, so its
    P-Asserted-Identity is ignored and P-Preferred-Identity and From are
    hints (RFC 3325 9.1, 9.2); its Privacy is honoured (RFC 3323).

    @raise ParseError: a malformed P-Preferred-Identity or From.
    """
    preferred = tuple(parse_name_addr(v)
                      for v in received.headers.get_all("P-Preferred-Identity"))
    return CallerIdentity((), preferred, privacy_values(received), received.from_.uri, False)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1
