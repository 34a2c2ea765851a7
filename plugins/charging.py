"""Real-time charging: calls are rated, authorised against their payer's
balance, held, extended, cut when the money runs out and committed once
(rating.md 3.3), by one L{rating.charging.ChargingSession} per call.

This module only reads the settings and turns hook calls into session calls
and session decisions into SIP; the protocol is in L{rating.charging}.  The
contract (settings, C{services.extra}, responses, metrics) is in
C{docs/charging.md}.

Settings (C{[plugins.charging]})::

    [plugins.charging]
    debit_interval = 60          # seconds each extension adds to the hold
    warn_before = 30             # b2bua_call_warned this long before the cut
    tariff_file = "etc/tariffs.json"      # { "<tenant domain>" = <tariff document> }
    accounts = { "1000@example.com" = "card:9",
                 "example.com" = { account = "customer:1", payment = "postpaid" } }

    [plugins.charging.tariffs."example.com"]          # inline tariff documents
    timezone = "Europe/Berlin"
    ...

A call whose tenant has no tariff is not charged (no opinion).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred

from b2bua.core.call import Call, CallRecord
from b2bua.core.decisions import Reject
from b2bua.core.services import Services
from b2bua.hookspecs import hookimpl
from b2bua.sip.message import Request
from rating.cdr import recovery_note
from rating.charging import (
    BLOCKED,
    INSUFFICIENT_BALANCE,
    POSTPAID,
    PREPAID,
    STORE_ERROR,
    UNRATED,
    Authorization,
    ChargingPolicy,
    ChargingSession,
    Payer,
)
from rating.charging_sessions import ChargingMetrics, ChargingSessions
from rating.lookup import TariffIndex
from rating.stores import IBalanceStore, MemoryBalanceStore
from rating.tariff import Tariff, TariffError, load_tariff

NAME = "charging"
#: The default account of a tenant's calls (C{customer:<tenant domain>}).
DEFAULT_ACCOUNT = "customer:{tenant}"
#: The tariff of every tenant that has none of its own.
ANY_TENANT = "*"

#: The final response of a refused call, by refusal reason.
REJECTS: dict[str, Reject] = {
    INSUFFICIENT_BALANCE: Reject(402, "Payment Required", (
        ("Reason", 'Q.850;cause=21;text="insufficient balance"'),), source=NAME),
    UNRATED: Reject(403, "Forbidden", (
        ("Reason", 'Q.850;cause=21;text="unrated destination"'),), source=NAME),
    BLOCKED: Reject(403, "Forbidden", (
        ("Reason", 'Q.850;cause=21;text="blocked destination"'),), source=NAME),
    STORE_ERROR: Reject(503, "Service Unavailable", (
        ("Reason", 'Q.850;cause=41;text="balance unavailable"'),), source=NAME),
}

TariffResolver = Callable[[Call], "Tariff | TariffIndex | None"]
PayerResolver = Callable[[Call], "Payer | None"]


class SettingsError(ValueError):
    """A bad C{[plugins.charging]} table (the message names the key)."""


@dataclass(frozen=True)
class ChargingSettings:
    """The C{[plugins.charging]} table, checked.

    @ivar tariffs: tariff indexes by tenant domain (C{"*"}: any tenant).
    @ivar accounts: payers by identity (C{user@domain}) or tenant domain.
    @ivar payment: the payment of tenants not listed in C{accounts}.
    @ivar charge_on_net: charge calls to an extension of the caller's own
        tenant (free and uncut by default).
    """

    policy: ChargingPolicy = field(default_factory=ChargingPolicy)
    tariffs: Mapping[str, TariffIndex] = field(default_factory=dict)
    accounts: Mapping[str, Payer] = field(default_factory=dict)
    payment: str = PREPAID
    charge_on_net: bool = False


_INTEGERS = {  # key: minimum
    "debit_interval": 1, "warn_before": 0, "lead": 0, "min_hold": 1, "hold_grace": 0,
    "setup_ttl": 1, "max_call_duration": 1, "free_call_duration": 1, "attempts": 1,
}
_KEYS = frozenset({*_INTEGERS, "tariffs", "tariff_file", "accounts", "payment", "hold_mode",
                   "charge_on_net", "retry_delay"})


def _key(name: str) -> str:
    return f"plugins.{NAME}.{name}"


def _payment(value: Any, where: str) -> str:
    if value not in (PREPAID, POSTPAID):
        raise SettingsError(f"{where}: expected \"prepaid\" or \"postpaid\", not {value!r}")
    return str(value)


def _tariff_documents(table: Mapping[str, Any], base: Path | None) -> dict[str, Any]:
    """The tariff documents of C{tariff_file} then C{tariffs} (inline wins)."""
    documents: dict[str, Any] = {}
    name = table.get("tariff_file")
    if name is not None:
        if not isinstance(name, str) or not name:
            raise SettingsError(f"{_key('tariff_file')}: expected a file name")
        path = Path(name) if base is None or Path(name).is_absolute() else base / name
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix.lower() == ".toml":
                loaded = tomllib.loads(text, parse_float=Decimal)
            else:
                loaded = json.loads(text, parse_float=Decimal)
        except (OSError, ValueError, tomllib.TOMLDecodeError) as error:
            raise SettingsError(f"{_key('tariff_file')}: cannot read {name}: {error}") from None
        if not isinstance(loaded, dict):
            raise SettingsError(f"{_key('tariff_file')}: expected an object of "
                                "tenant domain = tariff document")
        documents.update(loaded)
    inline = table.get("tariffs", {})
    if not isinstance(inline, Mapping):
        raise SettingsError(f"{_key('tariffs')}: expected a table of "
                            "tenant domain = tariff document")
    documents.update(inline)
    return documents


def parse_settings(table: Mapping[str, Any], base: Path | None = None) -> ChargingSettings:
    """Check the C{[plugins.charging]} table and load its tariffs.

    @param base: the folder a relative C{tariff_file} is in (default: the
        working directory).
    @raise SettingsError: naming the first bad key.
    """
    if not isinstance(table, Mapping):
        raise SettingsError(f"plugins.{NAME}: expected a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise SettingsError(f"{_key(unknown[0])}: unknown key")
    numbers: dict[str, int] = {}
    for name, minimum in _INTEGERS.items():
        value = table.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SettingsError(f"{_key(name)}: expected an integer >= {minimum}")
        numbers[name] = value
    policy = replace(ChargingPolicy(), **numbers)
    if policy.lead >= policy.debit_interval:
        raise SettingsError(f"{_key('lead')}: must be less than debit_interval")
    hold_mode = table.get("hold_mode", "chunk")
    if hold_mode not in ("chunk", "full"):
        raise SettingsError(f"{_key('hold_mode')}: expected \"chunk\" or \"full\"")
    retry = table.get("retry_delay", 1)
    if isinstance(retry, bool) or not isinstance(retry, int | float) or not 0 < retry <= 60:
        raise SettingsError(f"{_key('retry_delay')}: expected seconds within (0, 60]")
    policy = replace(policy, hold_mode=hold_mode, retry_delay=retry)
    tariffs = {}
    for domain, document in _tariff_documents(table, base).items():
        try:
            tariffs[str(domain).lower()] = TariffIndex(load_tariff(document))
        except TariffError as error:
            raise SettingsError(f"{_key('tariffs')}.{domain}: {error.problems[0]}") from None
    payment = _payment(table.get("payment", PREPAID), _key("payment"))
    accounts = {}
    raw_accounts = table.get("accounts", {})
    if not isinstance(raw_accounts, Mapping):
        raise SettingsError(f"{_key('accounts')}: expected a table of identity or "
                            "tenant = account")
    for who, value in raw_accounts.items():
        where = f"{_key('accounts')}.{who}"
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"account", "payment"})
            if unknown:
                raise SettingsError(f"{where}.{unknown[0]}: unknown key")
            account, kind = value.get("account"), _payment(value.get("payment", payment),
                                                           f"{where}.payment")
        else:
            account, kind = value, payment
        if not isinstance(account, str) or not account or "\n" in account:
            raise SettingsError(f"{where}: expected an account key such as \"card:9\"")
        accounts[str(who).lower()] = Payer(account, kind)
    on_net = table.get("charge_on_net", False)
    if not isinstance(on_net, bool):
        raise SettingsError(f"{_key('charge_on_net')}: expected true or false")
    return ChargingSettings(policy, tariffs, accounts, payment, on_net)


def tenant_of(call: Call) -> str:
    """The paying tenant's domain: the call's tenant, else the domain of
    its identity (a trusted source's C{user@domain})."""
    return (call.tenant or call.identity.rpartition("@")[2]).lower()


def dialled_number(call: Call) -> str:
    """The number to rate: the one a routing plugin normalised
    (C{call.data["number"]}, e.g. E.164 digits from a customer's dial
    plan), else the callee's user part as dialled (its URI parameters cut
    off); C{""} when there is none."""
    normalised = call.data.get("number")
    if isinstance(normalised, str) and normalised:
        return normalised
    uri = call.callee
    if not (uri.is_sip or uri.scheme == "tel"):
        return ""
    return (uri.user_unescaped or "").split(";", 1)[0]


class Charging:
    """The charging plugin.

    @param balance_store: the L{IBalanceStore} to use (else
        C{services.extra["balance_store"]}, else a memory store).
    @param tariffs: a tariff resolver C{(call) -> Tariff | TariffIndex |
        None} (else C{services.extra["tariffs"]}, else the settings).
    @param payer: a payer resolver C{(call) -> Payer | None} (else
        C{services.extra["payer"]}); C{None} falls back to the settings.
    @ivar sessions: the live L{ChargingSessions} (after configuration);
        C{balance_changed(account)} re-arms an account's calls after a top-up.
    """

    def __init__(self, balance_store: IBalanceStore | None = None,
                 tariffs: TariffResolver | None = None,
                 payer: PayerResolver | None = None) -> None:
        self._given = (balance_store, tariffs, payer)
        self.settings = ChargingSettings()
        self.services: Services | None = None
        self.sessions: ChargingSessions | None = None
        self._tariffs: TariffResolver | None = None
        self._payer: PayerResolver | None = None
        self._indexes: dict[int, tuple[Tariff, TariffIndex]] = {}

    @hookimpl
    def b2bua_configure(self, services: Services, settings: dict[str, Any]) -> None:
        """Read the settings; pick the store and resolvers; register metrics."""
        self.settings = parse_settings(settings.get(NAME, {}))
        extra = services.extra
        store, tariffs, payer = self._given
        store = store or extra.get("balance_store") or MemoryBalanceStore(services.clock)
        if not IBalanceStore.providedBy(store):
            raise SettingsError(f"services.extra[\"balance_store\"]: {store!r} does not "
                                "provide IBalanceStore")
        self._tariffs = tariffs or extra.get("tariffs")
        self._payer = payer or extra.get("payer")
        self.services = services
        metrics = ChargingMetrics.on(services.metrics.registry)
        self.sessions = ChargingSessions(store, services.clock, self.settings.policy, metrics)
        extra["charging_sessions"] = self.sessions

    # -- what a call is charged with ----------------------------------------------

    def _index(self, call: Call, tenant: str) -> TariffIndex | None:
        found = self._tariffs(call) if self._tariffs is not None else None
        if found is None:
            # no provisioned tariff: the settings' tariffs still apply
            tariffs = self.settings.tariffs
            return tariffs.get(tenant) or tariffs.get(ANY_TENANT)
        if isinstance(found, TariffIndex):
            return found
        cached = self._indexes.get(id(found))
        if cached is None or cached[0] is not found:
            if len(self._indexes) >= 256:
                self._indexes.clear()
            cached = self._indexes[id(found)] = (found, TariffIndex(found))
        return cached[1]

    def _payer_of(self, call: Call, tenant: str) -> Payer:
        # an account named in the settings wins; then the resolver; then
        # the tenant's default account
        accounts = self.settings.accounts
        named = accounts.get(call.identity.lower()) or accounts.get(tenant)
        if named is not None:
            return named
        payer = self._payer(call) if self._payer is not None else None
        if payer is not None:
            return payer
        return Payer(DEFAULT_ACCOUNT.format(tenant=tenant), self.settings.payment)

    def _currency(self, tenant: str) -> str:
        row = self.services.directory.tenant(tenant) if self.services is not None else None
        return getattr(row, "currency", "") or ""

    def _on_net(self, call: Call, tenant: str, number: str) -> bool:
        uri = call.callee
        if self.services is None or not uri.is_sip or (uri.host or "").lower() != tenant:
            return False
        return self.services.directory.extension(tenant, number) is not None

    # -- hooks ----------------------------------------------------------------------

    @hookimpl(trylast=True)
    def b2bua_authorize_call(self, call: Call, request: Request) -> Any:
        """Rate the number and hold the first chunk before the INVITE is
        forwarded (lazily); refuse with 402/403/503."""
        sessions = self.sessions
        if sessions is None or NAME in call.data or call.data.get("uncharged"):
            return None  # e.g. a DID call from a vendor, an emergency call
        tenant = tenant_of(call)
        number = dialled_number(call)
        if not self.settings.charge_on_net and self._on_net(call, tenant, number):
            return None  # checked first: a call between extensions needs no tariff
        index = self._index(call, tenant)
        if index is None:
            return None
        payer = self._payer_of(call, tenant)
        warn_before = self.settings.policy.warn_before

        def limit(seconds: float, reason: str) -> None:
            if not call.ended:
                call.limit_duration(seconds, warn_before, reason)

        def authorize() -> Deferred[Reject | None]:
            session = sessions.open(call.id, payer, index, number, on_limit=limit)
            session.currency = self._currency(tenant)
            directory = self.services.directory if self.services is not None else None
            session.note = dict(recovery_note(call, directory), currency=session.currency)
            call.data[NAME] = session
            return session.authorize().addCallback(_decision)

        return authorize

    @hookimpl
    def b2bua_call_answered(self, call: Call, leg: Any, answered_at: float) -> Any:
        """Start the session clock at the answer: arm the cut, extend."""
        session = call.data.get(NAME)
        if isinstance(session, ChargingSession):
            return session.answered(answered_at)
        return None

    @hookimpl(tryfirst=True)
    def b2bua_call_ended(self, call: Call, record: CallRecord) -> Any:
        """Commit the re-rated cost, or release the hold (exactly once).
        Runs first, so other plugins (the CDR writer) find the breakdown
        in C{call.data["charging"]}."""
        session = call.data.get(NAME)
        if isinstance(session, ChargingSession):
            return session.end(record.ended_at, cut=record.disconnect == "limit")
        return None

    @hookimpl
    def b2bua_unconfigure(self) -> Deferred[None] | None:
        """Wait for the commits and releases in flight."""
        return self.sessions.drained() if self.sessions is not None else None

    def balance_changed(self, account: str) -> Deferred[None]:
        """Money came to C{account}: its calls in progress get their new limit."""
        if self.sessions is None:
            raise RuntimeError("the charging plugin is not configured")
        return self.sessions.balance_changed(account)


def _decision(authorization: Authorization) -> Reject | None:
    """The hook's answer for an authorisation."""
    if authorization.reason is None:
        return None
    return REJECTS[authorization.reason]
