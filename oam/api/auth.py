"""Bearer API keys: who is calling, as a provisioning L{Scope}.

Every request (except C{GET /api/v1/openapi.json}) carries
C{Authorization: Bearer <key>}.  The key is looked up by its hash
(L{b2bua.db.repository.find_api_key}: constant-time compare, revoked keys
skipped) and becomes C{Scope(role, reseller_id, customer_id, account_id,
actor="key:<id>")}.

A key is refused, with the same 401 and C{WWW-Authenticate: Bearer} as a
missing or unknown one, when what it belongs to is not active:

  - a reseller key whose reseller is suspended or closed;
  - a customer or end-user key whose customer is suspended or closed;
  - an end-user key whose account is suspended or closed.

Telling these cases apart on the wire would help nobody but someone
probing keys, so the answer never says which it was.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from b2bua.db.interfaces import NotFound, Scope
from b2bua.db.repository import find_api_key
from oam.api.problems import unauthorized

__all__ = ["KeyAuthenticator", "bearer_token", "scope_of"]

#: The scope the authenticator reads owners' status with.
_READER = Scope.admin("api-auth")
#: The longest credential looked at (longer ones are simply wrong).
MAX_TOKEN = 128


def bearer_token(request: IRequest) -> str | None:
    """The key of C{Authorization: Bearer <key>}, or C{None}.

    The scheme is case-insensitive (RFC 7235); exactly one C{Authorization}
    header with a single token is accepted.
    """
    values = request.requestHeaders.getRawHeaders(b"Authorization") or []
    if len(values) != 1:
        return None
    parts = values[0].split()
    if len(parts) != 2 or parts[0].lower() != b"bearer" or len(parts[1]) > MAX_TOKEN:
        return None
    try:
        return parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None


def scope_of(row: dict[str, Any]) -> Scope:
    """The L{Scope} an API key row grants."""
    return Scope(row["role"], reseller_id=row.get("reseller_id"),
                 customer_id=row.get("customer_id"), account_id=row.get("account_id"),
                 actor=f"key:{row['id']}")


class KeyAuthenticator:
    """Turns a request into the L{Scope} of its API key, or a 401.

    @ivar database: where keys are looked up.
    @ivar repositories: collection name -> repository (to read the status
        of a key's reseller, customer and account).
    """

    def __init__(self, database: Any, repositories: dict[str, Any]) -> None:
        self.database = database
        self.repositories = repositories

    async def __call__(self, request: IRequest) -> Scope:
        """Authenticate C{request}.

        @raise ApiError: 401 for a missing, unknown, revoked or inactive key.
        """
        token = bearer_token(request)
        if token is None:
            raise unauthorized()
        row = await find_api_key(self.database, token)
        if row is None or not await self._active(row):
            raise unauthorized()
        return scope_of(row)

    async def _active(self, row: dict[str, Any]) -> bool:
        """Whether the reseller, customer and account of the key are active."""
        owners = []
        if row["role"] == "reseller":
            owners.append(("resellers", row.get("reseller_id")))
        if row["role"] in ("customer", "enduser"):
            owners.append(("customers", row.get("customer_id")))
        if row["role"] == "enduser":
            owners.append(("accounts", row.get("account_id")))
        for collection, owner_id in owners:
            if owner_id is None:
                return False
            try:
                owner = await self.repositories[collection].get(owner_id, _READER)
            except NotFound:
                return False
            if owner.get("status") != "active":
                return False
        return row["role"] in ("admin", "reseller", "customer", "enduser")
