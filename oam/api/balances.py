"""A tenant's balance over the API: read it, top it up (docs/charging.md).

    GET  /api/v1/balances/customers/{id}
    POST /api/v1/balances/customers/{id}/topup
         {"amount": "10.00", "reference": "payment-4711"}

Both answer 200 with the balance of the customer's account
(C{customer:<sip_domain>}, the key the charging plugin charges by default)
as the balance store (L{rating.stores.IBalanceStore}) holds it::

    {"customer_id": 12, "account": "customer:pbx.example.com",
     "balance": "10.000000", "credit_limit": "0.000000", "held": "0.000000",
     "available": "10.000000", "currency": "EUR"}

amounts as decimal strings; a top-up adds C{"repeated"} (C{true} when its
reference was used before and nothing was credited this time).

A top-up:

  1. credits the store (C{top_up(account, amount, reference)}: once per
     reference and account, a repeated reference credits nothing);
  2. writes a C{ledger} row (kind C{topup}, the amount, the customer's
     currency, the reference) through the ledger repository, unless a
     C{topup} row of this customer already has this reference (or the
     repository refuses the row as a conflict): then the answer says
     C{"repeated": true}.  Retrying a top-up with the same body after a
     failure (a 503, a lost answer) is therefore always safe, and writes
     the ledger row the failed attempt may have missed;
  3. tells the live calls of the account (C{sessions.balance_changed}), so
     that their cut moves at once.  A failure there is logged and does not
     fail the top-up: the money is in, and each call sees it at its next
     extension anyway.

Who may (checked before the customer is looked up, so a 403 says nothing
about which customers exist):

    ========  =======================  =============================
    role      read                     top up
    ========  =======================  =============================
    admin     any customer             any customer
    reseller  its own customers        its own customers
    customer  itself                   no (403)
    enduser   no (403)                 no (403)
    ========  =======================  =============================

A customer the key cannot see is 404, exactly as elsewhere in the API.  A
bad body is 422 naming each bad field; a balance store that fails is 503.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from b2bua.db.interfaces import Conflict, Scope
from b2bua.db.model import entity
from oam.api.collection import call_repository, row_id
from oam.api.endpoint import ApiContext, ApiEndpoint, json_body
from oam.api.problems import ApiError, Reply, forbidden, invalid
from oam.resource import NotFound
from rating.money import MoneyError, to_micros
from rating.stores.interface import Balance, IBalanceStore, InvalidRequest

__all__ = ["AMOUNT_PATTERN", "MAX_REFERENCE", "READERS", "TOP_UP_ROLES", "BalanceAccess",
           "BalanceResource", "BalancesRoot", "CustomerBalances", "TopUpResource",
           "account_of", "parse_top_up"]

log = Logger()

#: A top-up amount: a positive decimal string of at most six decimals
#: (the balance store counts micro-units).
AMOUNT_PATTERN = r"^[0-9]{1,20}(\.[0-9]{1,6})?$"
#: The longest top-up reference.
MAX_REFERENCE = 128
#: Roles that may read a balance (within their scope).
READERS = frozenset({"admin", "reseller", "customer"})
#: Roles that may top up (within their scope).
TOP_UP_ROLES = frozenset({"admin", "reseller"})
#: The body's members.
FIELDS = ("amount", "reference")
_CUSTOMER = entity("customer")
_LEDGER = entity("ledger_entry")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BalanceChanged(Protocol):
    """What is told about a top-up: L{rating.charging_sessions.ChargingSessions},
    or the charging plugin (which forwards to its sessions)."""

    def balance_changed(self, account: str) -> Any:
        """Money came to C{account}; may return a L{Deferred}."""


@dataclass(frozen=True)
class BalanceAccess:
    """What the balance routes need besides the repositories.

    @ivar store: the balance store (an L{IBalanceStore} provider).
    @ivar sessions: told C{balance_changed(account)} after each top-up, or
        C{None} (no live calls to re-arm).
    """

    store: Any
    sessions: BalanceChanged | None = None

    def __post_init__(self) -> None:
        """Refuse a store that does not provide L{IBalanceStore}."""
        if not IBalanceStore.providedBy(self.store):
            raise TypeError("BalanceAccess.store must provide IBalanceStore")


def account_of(customer: dict[str, Any]) -> str:
    """The balance account of a customer row: C{customer:<sip_domain>}."""
    return f"customer:{customer['sip_domain']}"


def _money(value: Decimal) -> str:
    """An amount as a plain decimal string (never an exponent)."""
    return format(value, "f")


def _answer(customer: dict[str, Any], balance: Balance) -> dict[str, Any]:
    """The JSON of a customer's balance."""
    return {"customer_id": customer["id"], "account": balance.account,
            "balance": _money(balance.balance), "credit_limit": _money(balance.credit_limit),
            "held": _money(balance.held), "available": _money(balance.available),
            "currency": customer["currency"]}


def _unavailable() -> ApiError:
    """503: the balance store failed."""
    return ApiError(503, {"error": "unavailable", "reason": "balance store unavailable"},
                    {b"Retry-After": b"5"})


def parse_top_up(body: Any) -> tuple[Decimal | None, str | None, dict[str, str]]:
    """Check a top-up body.

    @return: the amount and the reference (C{None} when bad) and the bad
        fields (empty when the body is fine).
    """
    if not isinstance(body, dict):
        return None, None, {"body": "must be an object"}
    errors = {str(name)[:64]: "unknown field" for name in body if name not in FIELDS}
    amount: Decimal | None = None
    raw = body.get("amount")
    if not isinstance(raw, str) or not re.fullmatch(AMOUNT_PATTERN, raw):
        errors["amount"] = ("required: a positive decimal string of at most 6 decimals, "
                            "such as \"10.00\"")
    else:
        try:
            to_micros(raw)
            amount = Decimal(raw)
        except MoneyError as error:
            errors["amount"] = str(error)
        else:
            if amount <= 0:
                errors["amount"] = "must be more than 0"
                amount = None
    reference = body.get("reference")
    if not isinstance(reference, str) or not 1 <= len(reference) <= MAX_REFERENCE \
            or _CONTROL.search(reference) or not reference.strip():
        errors["reference"] = (f"required: 1 to {MAX_REFERENCE} characters without control "
                               "characters (the top-up's idempotency key)")
        reference = None
    if errors:
        return None, None, errors
    return amount, reference, errors


class _BalanceEndpoint(ApiEndpoint):
    """What the two routes share: the customer, its account, the store."""

    def __init__(self, api: ApiContext, access: BalanceAccess, segment: bytes) -> None:
        super().__init__(api)
        self.access = access
        self.segment = segment

    async def customer(self, scope: Scope, roles: frozenset[str]) -> dict[str, Any]:
        """The customer row, if the role may act and the key sees it.

        @raise ApiError: 403 for a role that may never, 404 for an unknown
            or invisible customer.
        """
        if scope.role not in roles:
            raise forbidden()
        ident = row_id(self.segment)
        row: dict[str, Any] = await call_repository(
            _CUSTOMER, self.api.repositories["customers"].get(ident, scope))
        return row

    async def balance(self, account: str) -> Balance:
        """The account's balance.  @raise ApiError: 503 when the store fails."""
        try:
            balance: Balance = await maybeDeferred(self.access.store.get_balance, account)
        except Exception:
            log.failure("oam api: reading the balance of {account} failed", account=account)
            raise _unavailable() from None
        return balance


class BalanceResource(_BalanceEndpoint):
    """C{GET /api/v1/balances/customers/{id}}; its child C{topup}."""

    methods = ("GET",)

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        """C{topup}; the item itself for a trailing slash; else 404."""
        if path == b"topup":
            return TopUpResource(self.api, self.access, self.segment)
        if path == b"" and not request.postpath:
            return self
        return NotFound()

    async def handle_get(self, request: IRequest, scope: Scope) -> Reply:
        """The customer's balance."""
        customer = await self.customer(scope, READERS)
        return Reply(200, _answer(customer, await self.balance(account_of(customer))))


class TopUpResource(_BalanceEndpoint):
    """C{POST /api/v1/balances/customers/{id}/topup}."""

    isLeaf = True
    methods = ("POST",)

    async def handle_post(self, request: IRequest, scope: Scope) -> Reply:
        """Credit the store, write the ledger, re-arm the live calls; 200."""
        customer = await self.customer(scope, TOP_UP_ROLES)
        amount, reference, errors = parse_top_up(json_body(request))
        if errors or amount is None or reference is None:
            raise invalid(errors)
        account = account_of(customer)
        try:
            balance = await maybeDeferred(self.access.store.top_up, account, amount, reference)
        except InvalidRequest as error:
            raise invalid({"amount": str(error)}) from None
        except Exception:
            log.failure("oam api: top-up of {account} failed", account=account)
            raise _unavailable() from None
        repeated = await self._ledger(customer, amount, reference, scope)
        await self._tell(account)
        return Reply(200, {**_answer(customer, balance), "repeated": repeated})

    async def _ledger(self, customer: dict[str, Any], amount: Decimal, reference: str,
                      scope: Scope) -> bool:
        """Write the C{topup} ledger row once per customer and reference.

        The ledger is written by the operator only (L{b2bua.db.scoping.WRITERS}),
        so the row is written with an admin scope bearing the key's actor.

        @return: whether the reference was used before (no row written).
        """
        ledger = self.api.repositories["ledger"]
        writer = Scope.admin(scope.actor)
        found = await call_repository(_LEDGER, ledger.list(
            writer, {"customer_id": customer["id"], "kind": "topup", "reference": reference},
            limit=1))
        if found.rows:
            return True
        try:
            await ledger.create({"customer_id": customer["id"], "kind": "topup",
                                 "amount": amount, "currency": customer["currency"],
                                 "reference": reference}, writer)
        except Conflict:
            return True
        return False

    async def _tell(self, account: str) -> None:
        """C{sessions.balance_changed(account)}; a failure is only logged."""
        sessions = self.access.sessions
        if sessions is None:
            return
        try:
            await maybeDeferred(sessions.balance_changed, account)
        except Exception:
            log.failure("oam api: re-arming the calls of {account} failed", account=account)


class CustomerBalances(Resource):
    """C{/api/v1/balances/customers}: each child is one customer's balance;
    the path itself is 404."""

    def __init__(self, api: ApiContext, access: BalanceAccess) -> None:
        super().__init__()
        self.api = api
        self.access = access

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        """The balance of customer C{path} (a bad id is a 404 when handled)."""
        if path == b"":
            return NotFound()
        return BalanceResource(self.api, self.access, path)

    def render(self, request: IRequest) -> bytes:
        """The path itself: 404."""
        return NotFound().render(request)


class BalancesRoot(Resource):
    """C{/api/v1/balances}: only C{customers} below it; anything else is 404."""

    def __init__(self, api: ApiContext, access: BalanceAccess) -> None:
        super().__init__()
        self.putChild(b"customers", CustomerBalances(api, access))

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        """Unknown: 404."""
        return NotFound()

    def render(self, request: IRequest) -> bytes:
        """The path itself: 404."""
        return NotFound().render(request)
