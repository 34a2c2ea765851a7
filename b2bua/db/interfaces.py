"""The contract between provisioning storage and its users (API, CLI,
snapshot): scopes, typed errors, and the repository interface.

Rows cross this boundary as plain dicts of Python values: C{int} ids,
C{str}, C{int}, C{bool}, C{decimal.Decimal} for money, timezone-aware
C{datetime} for timestamps, C{datetime.date}, and JSON-compatible values for
C{json} fields.  Unreadable fields (HA1 values, hashes) are never returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zope.interface import Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

__all__ = ["Conflict", "IRepository", "NotFound", "Page", "Scope", "ValidationFailed"]


@dataclass(frozen=True)
class Scope:
    """Who is asking, which bounds what a repository shows and changes.

    @ivar role: C{admin}, C{reseller}, C{customer} or C{enduser}.
    @ivar reseller_id: for C{reseller} keys.
    @ivar customer_id: for C{customer} and C{enduser} keys.
    @ivar account_id: for C{enduser} keys.
    @ivar actor: a name for the audit log (e.g. C{"key:12"}).
    """

    role: str
    reseller_id: int | None = None
    customer_id: int | None = None
    account_id: int | None = None
    actor: str = "system"

    @classmethod
    def admin(cls, actor: str = "system") -> Scope:
        """Everything (operator and internal use)."""
        return cls("admin", actor=actor)


class NotFound(Exception):
    """No such row, or not visible in the caller's scope (the same answer)."""


class Conflict(Exception):
    """A uniqueness rule or a reference would be broken.

    @ivar field: the field at fault, when known.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ValidationFailed(Exception):
    """Input that breaks the model's rules.

    @ivar errors: field name -> message, one entry per bad field.
    """

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Page:
    """One page of a list: the rows and the total count that matched."""

    rows: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


class IRepository(Interface):
    """Create, read, update, delete and list the rows of one entity, within
    a L{Scope}.  Every method returns a Deferred; errors are L{NotFound},
    L{Conflict} and L{ValidationFailed}.  Every change is written to the
    audit log and announced to change listeners (the live snapshot)."""

    def create(values: dict[str, Any], scope: Scope) -> Deferred[dict[str, Any]]:
        """Validate and insert a row; fire with the stored row."""

    def get(row_id: int, scope: Scope) -> Deferred[dict[str, Any]]:
        """Fire with the row, or fail with L{NotFound}."""

    def update(row_id: int, values: dict[str, Any], scope: Scope) -> Deferred[dict[str, Any]]:
        """Validate and apply a partial update; fire with the stored row."""

    def delete(row_id: int, scope: Scope) -> Deferred[None]:
        """Delete the row (L{Conflict} if other rows refer to it)."""

    def list(scope: Scope, filters: dict[str, Any] | None = None, limit: int = 50,
             offset: int = 0, order: str = "id") -> Deferred[Page]:
        """Fire with a L{Page} of rows matching C{filters} (field = value)."""
