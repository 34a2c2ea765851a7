"""Tenant isolation: which rows a L{Scope} sees, and what it may write.

Reading (L{visibility}, a SQL condition with parameters, used in the
C{WHERE} of every select, update and delete, so there is no window between
a check and a write):

  - C{admin}: every row.
  - C{reseller} R: its own C{resellers} row; rows of reseller-scoped
    entities with C{reseller_id = R}; C{customers} with C{reseller_id = R};
    rows of customer- and account-scoped entities whose customer has
    C{reseller_id = R} (and, for C{api_keys}, keys with C{reseller_id = R}).
  - C{customer} C: its own C{customers} row; rows of customer- and
    account-scoped entities with C{customer_id = C}.
  - C{enduser} A (of customer C): its own C{accounts} row; rows with
    C{account_id = A} (and C{customer_id = C}).
  - Global entities, and anything a scope lacks the ids for: nothing.

Writing: a role writes an entity only if it is at least as powerful as the
entity's writer in L{WRITERS} (otherwise L{Forbidden}, a L{NotFound}).  On
create and update by a non-admin, L{force_owner} sets the owner columns
from the scope; asking for someone else's id is a L{NotFound}.  API keys
obey L{check_api_key}: no key can mint a more powerful one.
"""

from __future__ import annotations

from typing import Any

from b2bua.db.interfaces import NotFound, Scope, ValidationFailed
from b2bua.db.model import ENTITIES, Entity, entity

__all__ = ["OWNER_FIELDS", "RANK", "WRITERS", "Forbidden", "check_api_key", "derivations",
           "force_owner", "may_write", "owner_defaults", "owner_of_ref", "visibility"]

#: Roles from the most to the least powerful.
RANK = {"admin": 0, "reseller": 1, "customer": 2, "enduser": 3}

#: The least powerful role that may create, update and delete each entity
#: (within its scope).  Money and history (CDRs, ledger, invoices, audit)
#: and operator data are written by admin keys only; a customer key cannot
#: change its own customer row (credit limit, status).
WRITERS: dict[str, str] = {
    "reseller": "admin",
    "customer": "reseller",
    "account": "customer",
    "did": "reseller",
    "product": "admin",
    "subscription": "reseller",
    "tariff": "admin",
    "vendor": "admin",
    "connection": "admin",
    "routing_plan": "admin",
    "trunk": "reseller",
    "lnp_entry": "admin",
    "distributor": "reseller",
    "card_batch": "reseller",
    "card": "reseller",
    "cdr": "admin",
    "ledger_entry": "admin",
    "invoice": "admin",
    "audit_record": "admin",
    "api_key": "enduser",
}

#: The columns that say whom a row belongs to.
OWNER_FIELDS = ("reseller_id", "customer_id", "account_id")

_NOTHING: tuple[str, list[Any]] = ("1 = 0", [])


class Forbidden(NotFound):
    """The caller's role may not write this entity (a L{NotFound}, so that
    an API answers as for an invisible row unless it prefers 403)."""


def _names(e: Entity) -> set[str]:
    """The column names of C{e}."""
    return {f.name for f in e.fields}


def _check_model() -> None:
    """Every scoped entity has the owner column its scope needs."""
    for e in ENTITIES:
        names = _names(e)
        if e.scope == "reseller" and e.name != "reseller" and "reseller_id" not in names:
            raise AssertionError(f"{e.name}: reseller scope without reseller_id")
        if e.scope in ("customer", "account") and e.name != "customer" \
                and "customer_id" not in names:
            raise AssertionError(f"{e.name}: {e.scope} scope without customer_id")
        if e.name not in WRITERS:
            raise AssertionError(f"{e.name}: no writer role in scoping.WRITERS")


_check_model()


def visibility(e: Entity, scope: Scope) -> tuple[str, list[Any]]:
    """The SQL condition (with C{?} parameters) selecting the rows of C{e}
    that C{scope} may see.  Column names are unqualified."""
    role = scope.role
    if role == "admin":
        return "1 = 1", []
    names = _names(e)
    tenant = e.scope in ("customer", "account")
    if role == "reseller" and scope.reseller_id is not None:
        r = scope.reseller_id
        if e.name == "reseller":
            return "id = ?", [r]
        if e.scope == "reseller" or e.name == "customer":
            return "reseller_id = ?", [r]
        if tenant:
            inside = "customer_id IN (SELECT id FROM customers WHERE reseller_id = ?)"
            if "reseller_id" in names:
                return f"(reseller_id = ? OR {inside})", [r, r]
            return inside, [r]
    if role == "customer" and scope.customer_id is not None:
        c = scope.customer_id
        if e.name == "customer":
            return "id = ?", [c]
        if tenant:
            return "customer_id = ?", [c]
    if role == "enduser" and scope.account_id is not None and scope.customer_id is not None:
        a, c = scope.account_id, scope.customer_id
        if e.name == "account":
            return "id = ? AND customer_id = ?", [a, c]
        if tenant and "account_id" in names:
            return "account_id = ? AND customer_id = ?", [a, c]
    return _NOTHING


def may_write(e: Entity, scope: Scope) -> bool:
    """Whether C{scope}'s role may create, update and delete rows of C{e}."""
    rank = RANK.get(scope.role)
    return rank is not None and rank <= RANK[WRITERS[e.name]]


def _own(values: dict[str, Any], name: str, mine: int | None, creating: bool) -> None:
    """Force C{values[name]} to C{mine}: another id is a L{NotFound}."""
    if mine is None:
        raise Forbidden(f"this key has no {name}")
    given = values.get(name, mine)
    if given != mine:
        raise NotFound(f"{name} {given} not found")
    if creating or name in values:
        values[name] = mine


def owner_defaults(e: Entity, scope: Scope) -> dict[str, Any]:
    """The owner ids a non-admin's create of C{e} gets when it names none
    (filled in before validation, so that required owner ids are met)."""
    names = {f.name for f in e.fields if f.writable}
    tenant = e.scope in ("customer", "account")
    mine = {}
    if scope.role == "reseller" and (e.scope == "reseller" or e.name == "customer"):
        mine["reseller_id"] = scope.reseller_id
    if scope.role in ("customer", "enduser") and tenant:
        mine["customer_id"] = scope.customer_id
    if scope.role == "enduser" and tenant:
        mine["account_id"] = scope.account_id
    return {k: v for k, v in mine.items() if k in names and v is not None}


def force_owner(e: Entity, values: dict[str, Any], scope: Scope, *, creating: bool) -> None:
    """Set the owner columns of a non-admin's create (or check an update's).

    A reseller's rows of customer-scoped entities must name one of its
    customers (checked by the caller, through L{visibility} of the ref).

    @raise NotFound: when the values name another tenant.
    @raise ValidationFailed: when a needed owner id is missing.
    """
    if scope.role == "admin":
        return
    if e.name == "api_key":
        _force_api_key(values, scope, creating)
        return
    names = _names(e)
    emptied = [n for n in OWNER_FIELDS if n in names and n in values and values[n] is None]
    if emptied:
        raise ValidationFailed({n: "may not be emptied by this key" for n in emptied})
    if scope.role == "reseller":
        if e.scope == "reseller" or e.name == "customer":
            _own(values, "reseller_id", scope.reseller_id, creating)
        elif creating and values.get("customer_id") is None and "customer_id" in names:
            raise ValidationFailed({"customer_id": "required (one of your customers)"})
    elif scope.role == "customer" and "customer_id" in names:
        _own(values, "customer_id", scope.customer_id, creating)
    elif scope.role == "enduser":
        if "account_id" in names:
            _own(values, "account_id", scope.account_id, creating)
        if "customer_id" in names:
            _own(values, "customer_id", scope.customer_id, creating)


def _force_api_key(values: dict[str, Any], scope: Scope, creating: bool) -> None:
    """Owner columns of an API key created by a non-admin (see L{check_api_key})."""
    if not creating:
        return
    role = values.get("role")
    if RANK.get(role, -1) < RANK[scope.role]:  # type: ignore[arg-type]
        raise ValidationFailed({"role": f"a {scope.role} key cannot create {role} keys"})
    if scope.role == "reseller":
        if role == "reseller":
            _own(values, "reseller_id", scope.reseller_id, True)
        elif role == "customer" and values.get("customer_id") is None:
            raise ValidationFailed({"customer_id": "required (one of your customers)"})
        return
    _own(values, "customer_id", scope.customer_id, True)
    if scope.role == "enduser":
        _own(values, "account_id", scope.account_id, True)


def check_api_key(values: dict[str, Any]) -> None:
    """Check which owner ids an API key of its role carries.

    An admin key has none; a reseller key a C{reseller_id}; a customer key
    a C{customer_id}; an end-user key an C{account_id} (and its account's
    C{customer_id}).

    @raise ValidationFailed: naming the ids that are missing or extra.
    """
    needs = {"admin": (), "reseller": ("reseller_id",), "customer": ("customer_id",),
             "enduser": ("account_id", "customer_id")}[values["role"]]
    errors = {}
    for name in OWNER_FIELDS:
        present = values.get(name) is not None
        if name in needs and not present:
            errors[name] = f"required for a {values['role']} key"
        elif name not in needs and present:
            errors[name] = f"must be empty for a {values['role']} key"
    if errors:
        raise ValidationFailed(errors)


def owner_of_ref(e: Entity, field_name: str) -> str | None:
    """The owner column a ref must agree on, or C{None}.

    A row's ref to a reseller-scoped row must have the same C{reseller_id};
    a ref to a customer- or account-scoped row (other than the customer
    itself) the same C{customer_id}.  Refs to global rows, and the owner
    columns themselves, need no agreement.
    """
    if field_name in OWNER_FIELDS[:2]:
        return None
    target = entity(e.field(field_name).ref or "")
    names = _names(e)
    if target.scope == "reseller" and "reseller_id" in names:
        return "reseller_id"
    if target.scope in ("customer", "account") and target.name != "customer" \
            and "customer_id" in names:
        return "customer_id"
    return None


def derivations(e: Entity) -> dict[str, str]:
    """Owner columns a row takes from one of its refs: column -> ref field.

    A non-writable owner column (C{cards.reseller_id}) comes from the first
    required ref whose target has that column; a C{customer_id} next to an
    C{account_id} comes from the account.
    """
    out: dict[str, str] = {}
    names = _names(e)
    for f in e.fields:
        if f.name in OWNER_FIELDS[:2] and not f.writable:
            for r in e.fields:
                if r.type == "ref" and r.required and f.name in _names(entity(r.ref or "")):
                    out[f.name] = r.name
                    break
    if "customer_id" in names and "account_id" in names and e.name != "account":
        out.setdefault("customer_id", "account_id")
    return out
