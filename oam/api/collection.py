"""Generic CRUD resources, one collection per entity of the model.

For every entity C{E} stored in collection C{C} (L{b2bua.db.model}):

    GET    /api/v1/C          200 {"items", "total", "limit", "offset"}
    POST   /api/v1/C          201 the row, with C{Location}
    GET    /api/v1/C/{id}     200 the row
    PATCH  /api/v1/C/{id}     200 the row (partial update)
    DELETE /api/v1/C/{id}     204

Immutable entities (CDRs, ledger, audit) answer C{PATCH} and C{DELETE}
with 405.  Rows are written with L{b2bua.db.validation.to_json}; bodies
are checked against the model here first, so that one 422 names every bad
field (including those a per-entity L{BodyCheck} finds, such as a tariff
document the rating loader refuses), and then by the repository, which
also applies the tenant rules of the caller's L{Scope}.

Who gets 403 and who gets 404:

  - a role that may not write an entity at all (L{scoping.may_write})
    gets 403 on C{POST}, and on C{PATCH}/C{DELETE} of a row it can see;
  - a row the caller cannot see (another tenant's, a global row for a
    non-admin, or none at all) is 404 for every method, whatever the
    role: the answer is the same as for an id that does not exist;
  - a body naming another tenant's owner id or a row the caller cannot
    see is 422 naming the field (C{"not found"}), the same for rows that
    exist elsewhere and rows that do not exist.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from b2bua.db.interfaces import NotFound, Scope, ValidationFailed
from b2bua.db.model import Entity
from b2bua.db.repository import MAX_LIMIT
from b2bua.db.scoping import may_write, owner_defaults
from b2bua.db.validation import INT_MAX, coerce_filters, convert, to_json, validate
from oam.api.endpoint import ApiContext, ApiEndpoint, json_body, query
from oam.api.problems import (
    ApiError,
    Reply,
    forbidden,
    from_repository,
    invalid,
    not_found,
)

__all__ = [
    "DEFAULT_LIMIT",
    "BodyCheck",
    "CollectionResource",
    "ItemResource",
    "call_repository",
    "check_body",
    "orderable",
    "row_id",
]

#: The page size of a list that names none.
DEFAULT_LIMIT = 50
#: The earliest year of a timestamp the API takes (SQLite stores earlier
#: years in a form it cannot read back).
MIN_YEAR = 1000
#: Field types whose filters take the word C{null} to mean "is null".
NULLABLE_FILTERS = frozenset({"ref", "int", "bool", "decimal", "timestamp", "date"})

BodyCheck = Callable[[dict[str, Any]], "tuple[dict[str, str], dict[str, Any]]"]
"""An extra check of a create or update body: returns the bad fields
(name -> message) and extra members for the 422 body (both empty when
the body is fine)."""

_ID = re.compile(r"^[0-9]{1,19}$")


def row_id(segment: bytes | str) -> int:
    """The row id of a path segment.  @raise ApiError: 404 for anything else."""
    text = segment.decode("ascii", "replace") if isinstance(segment, bytes) else segment
    if not _ID.match(text) or not 1 <= int(text) <= INT_MAX:
        raise not_found()
    return int(text)


def orderable(entity: Entity) -> list[str]:
    """The names a list of C{entity} may be ordered by (C{-name}: descending)."""
    names = {"id", "created_at", "updated_at"} | {
        f.name for f in entity.fields if f.filterable and f.readable}
    return sorted(names)


def _timestamps_in_range(entity: Entity, body: dict[str, Any]) -> dict[str, str]:
    """Timestamp fields whose value, in UTC, is outside the years
    L{MIN_YEAR} to 9999 (or overflows on the way there)."""
    errors = {}
    for f in entity.fields:
        value = body.get(f.name)
        if f.type == "timestamp" and isinstance(value, str):
            try:
                year = convert(f, value).year
            except OverflowError:
                year = 0
            except ValueError:
                continue
            if year < MIN_YEAR:
                errors[f.name] = f"is out of range (years {MIN_YEAR} to 9999 in UTC)"
    return errors


def check_body(entity: Entity, body: Any, scope: Scope, *, partial: bool,
               extra: BodyCheck | None = None) -> dict[str, Any]:
    """Check a create (or, C{partial}, an update) body against the model.

    @return: the body.
    @raise ApiError: 422 naming every bad field.
    """
    if not isinstance(body, dict):
        raise invalid({"body": "must be an object"})
    errors = _timestamps_in_range(entity, body)
    values = {k: v for k, v in body.items() if k not in errors}
    if not partial:
        values = {**owner_defaults(entity, scope), **values}
    try:
        validate(entity, values, partial=partial)
    except ValidationFailed as failure:
        errors = {**failure.errors, **errors}
    members: dict[str, Any] = {}
    if extra is not None:
        more, members = extra({k: v for k, v in body.items() if k not in errors})
        errors.update(more)
    if errors:
        raise invalid({str(k): str(v) for k, v in errors.items()}, **members)
    return body


async def call_repository(entity: Entity, call: Any, given: set[str] | None = None) -> Any:
    """Await a repository call, turning its typed errors into L{ApiError}s."""
    try:
        return await call
    except ApiError:
        raise
    except Exception as error:
        mapped = from_repository(error, entity, given)
        if mapped is None:
            raise
        raise mapped from None


class CollectionResource(ApiEndpoint):
    """C{/api/v1/<collection>}: list and create; children are its rows."""

    methods = ("GET", "POST")

    def __init__(self, api: ApiContext, entity: Entity, repository: Any,
                 body_check: BodyCheck | None = None) -> None:
        super().__init__(api)
        self.entity = entity
        self.repository = repository
        self.body_check = body_check

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        """The row C{path} (C{/C/} itself is the collection)."""
        if path == b"":
            return self
        return ItemResource(self, path)

    def _filters(self, params: dict[str, str], errors: dict[str, str]) -> dict[str, Any]:
        """The list filters among C{params}, C{null} meaning "is null"."""
        fields = {f.name: f for f in self.entity.fields}
        filters: dict[str, Any] = {}
        for name, value in params.items():
            f = fields.get(name)
            nullable = f is not None and f.type in NULLABLE_FILTERS
            filters[name] = None if nullable and value == "null" else value
        try:
            return coerce_filters(self.entity, filters)
        except ValidationFailed as failure:
            errors.update(failure.errors)
            return {}

    async def handle_get(self, request: IRequest, scope: Scope) -> Reply:
        """List the rows the key may see: paged, filtered and ordered."""
        params = query(request)
        errors: dict[str, str] = {}
        limit = _integer(params.pop("limit", str(DEFAULT_LIMIT)), 1, MAX_LIMIT, "limit", errors)
        offset = _integer(params.pop("offset", "0"), 0, INT_MAX, "offset", errors)
        order = params.pop("order", "id")
        if order.removeprefix("-") not in orderable(self.entity):
            errors["order"] = (f"must be one of {', '.join(orderable(self.entity))} "
                               "(- for descending)")
        filters = self._filters(params, errors)
        if errors:
            raise invalid(errors)
        page = await call_repository(self.entity, self.repository.list(
            scope, filters, limit=limit, offset=offset, order=order))
        return Reply(200, {"items": [to_json(self.entity, r) for r in page.rows],
                           "total": page.total, "limit": page.limit, "offset": page.offset})

    async def handle_post(self, request: IRequest, scope: Scope) -> Reply:
        """Create a row; 201 with the row and its C{Location}."""
        if not may_write(self.entity, scope):
            raise forbidden()
        body = check_body(self.entity, json_body(request), scope, partial=False,
                          extra=self.body_check)
        row = await call_repository(self.entity, self.repository.create(body, scope), set(body))
        location = f"{self.api.base}/{self.entity.collection}/{row['id']}"
        return Reply(201, to_json(self.entity, row), {b"Location": location.encode("ascii")})


class ItemResource(ApiEndpoint):
    """C{/api/v1/<collection>/<id>}: read, update and delete one row."""

    isLeaf = True

    def __init__(self, collection: CollectionResource, segment: bytes) -> None:
        super().__init__(collection.api)
        self.collection = collection
        self.entity = collection.entity
        self.repository = collection.repository
        self.segment = segment
        self.methods = ("GET",) if self.entity.immutable else ("DELETE", "GET", "PATCH")

    async def _writable(self, ident: int, scope: Scope) -> None:
        """403 if the role may not write the entity but sees the row, else 404."""
        if may_write(self.entity, scope):
            return
        try:
            await self.repository.get(ident, scope)
        except NotFound:
            raise not_found() from None
        raise forbidden()

    async def handle_get(self, request: IRequest, scope: Scope) -> Reply:
        """The row, if the key may see it."""
        row = await call_repository(self.entity, self.repository.get(row_id(self.segment), scope))
        return Reply(200, to_json(self.entity, row))

    async def handle_patch(self, request: IRequest, scope: Scope) -> Reply:
        """Apply a partial update; 200 with the stored row."""
        ident = row_id(self.segment)
        await self._writable(ident, scope)
        body = check_body(self.entity, json_body(request), scope, partial=True,
                          extra=self.collection.body_check)
        row = await call_repository(self.entity, self.repository.update(ident, body, scope),
                                    set(body))
        return Reply(200, to_json(self.entity, row))

    async def handle_delete(self, request: IRequest, scope: Scope) -> Reply:
        """Delete the row; 204."""
        ident = row_id(self.segment)
        await self._writable(ident, scope)
        await call_repository(self.entity, self.repository.delete(ident, scope))
        return Reply(204)


def _integer(text: str, low: int, high: int, name: str, errors: dict[str, str]) -> int:
    """A query-string integer in C{[low, high]}; a bad one is noted in C{errors}."""
    if re.fullmatch(r"[0-9]{1,19}", text) and low <= int(text) <= high:
        return int(text)
    errors[name] = f"must be an integer from {low} to {high}"
    return low
