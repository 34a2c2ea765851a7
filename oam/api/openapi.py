"""The OpenAPI 3.1 document of the REST API, generated from the model.

Nothing here is written by hand per entity: every collection of
L{b2bua.db.model.ENTITIES} gets its paths, and each entity four schemas:

  - C{<Name>}: a row as the API returns it.  Every readable field, with
    C{readOnly} for the fields the API never takes (ids, times, derived
    owners), and the write-only inputs (C{password}, C{pin}, ...) listed
    with C{writeOnly} (never returned).
  - C{<Name>Create}: what C{POST} takes: writable fields and write-only
    inputs, the model's C{required}, patterns, lengths, minimums, enums and
    defaults; nothing else (C{additionalProperties: false}).
  - C{<Name>Update}: the same for C{PATCH}, nothing required.
  - C{<Name>List}: a page of rows.

Tariffs add C{POST /tariffs/import} and C{POST /rating/quote} (with the
C{TariffDocument}, C{QuoteRequest} and C{Quote} schemas); an API serving
balances adds C{/balances/customers/{id}} and its C{/topup} (with the
C{TopUpRequest} and C{CustomerBalance} schemas).  Every operation
lists every status it can answer with an error schema, and every operation
but this document's needs the bearer key.
L{OpenAPIResource} serves the document at C{GET /api/v1/openapi.json}
without authentication.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

from b2bua.db.model import ENTITIES, Entity, Field
from b2bua.db.repository import MAX_LIMIT
from b2bua.db.scoping import WRITERS
from b2bua.db.validation import (
    DECIMAL_FRACTION_DIGITS,
    DECIMAL_INTEGER_DIGITS,
    INT_MAX,
    INT_MIN,
)
from oam.api.balances import AMOUNT_PATTERN, MAX_REFERENCE
from oam.api.collection import DEFAULT_LIMIT, NULLABLE_FILTERS, orderable
from oam.api.endpoint import ApiContext, ApiEndpoint
from oam.api.problems import Reply
from oam.api.quote import (
    BALANCE_PATTERN,
    DESTINATION_PATTERN,
    MAX_QUOTE_DURATION_S,
    START_PATTERN,
)
from oam.api.rates import CSV_PARAMETERS
from oam.api.routing_schemas import ROUTING_ENTITIES, routing_paths, routing_schemas

__all__ = ["OPENAPI_VERSION", "OpenAPIResource", "build_document", "schema_name"]

OPENAPI_VERSION = "3.1.0"
_REF = "#/components/schemas/"
_DIGITS = f"[0-9]{{1,{DECIMAL_INTEGER_DIGITS}}}(\\.[0-9]{{1,{DECIMAL_FRACTION_DIGITS}}})?"
_DEFAULT_FIELDS = ("id", "created_at", "updated_at")
_DECIMAL_INTEGER_MAX = 10**DECIMAL_INTEGER_DIGITS - 1

#: Error answers: status -> (description, schema name).
ERRORS: dict[int, tuple[str, str]] = {
    400: ("The body is not well-formed JSON (or CSV), or not UTF-8.", "Error"),
    401: ("No API key, or an unknown, revoked or inactive one.", "Error"),
    403: ("The key's role may not write this entity.", "Error"),
    404: ("No such row, or one the key may not see (the same answer).", "Error"),
    409: ("A unique value is taken, or a reference is missing or still held.", "Conflict"),
    413: ("The body is too large.", "Error"),
    415: ("The body's Content-Type is not one this operation reads.", "Error"),
    422: ("Bad fields or query parameters, each named.", "ValidationError"),
    500: ("An unexpected error (counted and logged; no details on the wire).", "Error"),
    503: ("The switch is stopping; try again (Retry-After).", "Error"),
}


def schema_name(e: Entity) -> str:
    """The schema name of an entity: C{routing_plan} -> C{RoutingPlan}."""
    return "".join(part.capitalize() for part in e.name.split("_"))


def _ref(name: str) -> dict[str, str]:
    """A reference to a component schema."""
    return {"$ref": _REF + name}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """C{schema} also admitting C{null} (OpenAPI 3.1: a type list)."""
    kind = schema.get("type")
    if isinstance(kind, list):
        schema["type"] = [*kind, "null"]
    elif kind is not None:
        schema["type"] = [kind, "null"]
    return schema


def _base(f: Field, *, writing: bool) -> dict[str, Any]:
    """The JSON Schema of one field's values, by model type."""
    kind = f.type
    if kind in ("id", "ref"):
        return {"type": "integer", "format": "int64", "minimum": 1, "maximum": INT_MAX}
    if kind == "int":
        low = INT_MIN if f.minimum is None else max(f.minimum, INT_MIN)
        return {"type": "integer", "format": "int64", "minimum": low, "maximum": INT_MAX}
    if kind == "decimal":
        if not writing:
            return {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$",
                    "description": "An exact decimal number, as a string."}
        positive = f.minimum is not None and f.minimum >= 0
        sign = "\\+?" if positive else "[+-]?"
        return {"type": ["string", "integer"], "pattern": f"^{sign}{_DIGITS}$",
                "minimum": 0 if positive else -_DECIMAL_INTEGER_MAX,
                "maximum": _DECIMAL_INTEGER_MAX,
                "description": "An exact decimal number: a string such as \"0.05\" (or an "
                               "integer); never a JSON number with a fraction."}
    if kind == "bool":
        return {"type": "boolean"}
    if kind == "timestamp":
        return {"type": "string", "format": "date-time"}
    if kind == "date":
        return {"type": "string", "format": "date"}
    if kind == "enum":
        return {"type": "string", "enum": list(f.choices)}
    if kind == "json":
        return {"description": "Any JSON value."}
    schema: dict[str, Any] = {"type": "string", "maxLength": f.maximum_length}
    if writing and f.required:
        schema["minLength"] = 1
    if f.pattern:
        schema["pattern"] = f.pattern
    return schema


def _describe(schema: dict[str, Any], f: Field) -> dict[str, Any]:
    """Add the field's description (after any the type gave)."""
    if f.description:
        before = schema.get("description")
        schema["description"] = f"{f.description} {before}" if before else f.description
    return schema


def _read_schema(e: Entity, f: Field) -> dict[str, Any]:
    """A field as it is returned."""
    schema = _base(f, writing=False)
    if e.name == "tariff" and f.name == "document":
        schema = {"type": "object", "description": "The tariff document (TariffDocument)."}
    always = f.required or f.default is not None or f.name in _DEFAULT_FIELDS
    if not always:
        _nullable(schema)
    if not f.writable:
        schema["readOnly"] = True
    return _describe(schema, f)


def _write_schema(e: Entity, f: Field, *, secret: bool) -> dict[str, Any]:
    """A field as C{POST} and C{PATCH} take it."""
    if e.name == "tariff" and f.name == "document":
        return _ref("TariffDocument")
    schema = _base(f, writing=True)
    if not f.required and f.default is None and not secret:
        _nullable(schema)
    if f.default is not None:
        schema["default"] = f.default
    if secret:
        schema["writeOnly"] = True
    return _describe(schema, f)


def entity_schemas(e: Entity) -> dict[str, dict[str, Any]]:
    """The four component schemas of C{e}."""
    name = schema_name(e)
    readable = [f for f in e.fields if f.readable]
    row: dict[str, Any] = {
        "type": "object", "description": e.description,
        "properties": {f.name: _read_schema(e, f) for f in readable},
        "required": [f.name for f in readable]}
    for f in e.write_only:
        row["properties"][f.name] = _describe(
            {**_base(f, writing=True), "writeOnly": True}, f)
    inputs = [(f, False) for f in e.fields if f.writable] + [(f, True) for f in e.write_only]
    properties = {f.name: _write_schema(e, f, secret=secret) for f, secret in inputs}
    create = {"type": "object", "additionalProperties": False, "properties": properties,
              "required": [f.name for f, _ in inputs if f.required]}
    update = {"type": "object", "additionalProperties": False, "properties": properties}
    page = {"type": "object", "required": ["items", "total", "limit", "offset"],
            "properties": {"items": {"type": "array", "items": _ref(name)},
                           "total": {"type": "integer", "minimum": 0},
                           "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                           "offset": {"type": "integer", "minimum": 0}}}
    return {name: row, f"{name}Create": create, f"{name}Update": update, f"{name}List": page}


def _responses(*codes: int) -> dict[str, Any]:
    """Error responses by reference."""
    return {str(code): {"$ref": f"#/components/responses/E{code}"} for code in codes}


def _json(schema: dict[str, Any], description: str, **more: Any) -> dict[str, Any]:
    """A JSON response object."""
    return {"description": description,
            "content": {"application/json": {"schema": schema}}, **more}


_LOCATION = {"Location": {"description": "The path of the new row.",
                          "schema": {"type": "string"}}}


def _filter_parameters(e: Entity) -> list[dict[str, Any]]:
    """The query parameters of a list of C{e}."""
    order = [*orderable(e), *(f"-{n}" for n in orderable(e))]
    params: list[dict[str, Any]] = [
        {"name": "limit", "in": "query", "description": "Rows per page.",
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                    "default": DEFAULT_LIMIT}},
        {"name": "offset", "in": "query", "description": "Rows to skip.",
         "schema": {"type": "integer", "minimum": 0, "maximum": INT_MAX, "default": 0}},
        {"name": "order", "in": "query", "description": "Sort key; - for descending.",
         "schema": {"type": "string", "enum": order, "default": "id"}}]
    for f in e.fields:
        if not (f.filterable and f.readable):
            continue
        schema = _base(f, writing=False)
        if f.type == "text":
            schema = {"type": "string", "maxLength": max(f.maximum_length, 1024)}
        note = ""
        if f.type in NULLABLE_FILTERS:
            schema = {"anyOf": [schema, {"type": "string", "enum": ["null"]}]}
            note = " (null: has none)"
        params.append({"name": f.name, "in": "query", "schema": schema,
                       "description": f"Only rows whose {f.name} equals this{note}."})
    return params


def _collection_paths(e: Entity) -> dict[str, Any]:
    """The paths of one collection."""
    name, c = schema_name(e), e.collection
    writer = WRITERS[e.name]
    rows = {
        "get": {"operationId": f"list_{c}", "summary": f"List {c}", "tags": [c],
                "parameters": _filter_parameters(e),
                "responses": {"200": _json(_ref(f"{name}List"), "A page of rows."),
                              **_responses(401, 422, 500, 503)}},
        "post": {"operationId": f"create_{e.name}", "summary": f"Create a {e.name}",
                 "description": f"Keys of role {writer} or above.", "tags": [c],
                 "requestBody": {"required": True, "content": {
                     "application/json": {"schema": _ref(f"{name}Create")}}},
                 "responses": {"201": _json(_ref("ApiKeyCreated" if e.name == "api_key"
                                                 else name), "The new row.",
                                            headers=_LOCATION),
                               **_responses(400, 401, 403, 404, 409, 413, 415, 422, 500, 503)}}}
    item: dict[str, Any] = {
        "parameters": [{"name": "id", "in": "path", "required": True,
                        "schema": {"type": "integer", "minimum": 1, "maximum": INT_MAX}}],
        "get": {"operationId": f"get_{e.name}", "summary": f"Read a {e.name}", "tags": [c],
                "responses": {"200": _json(_ref(name), "The row."),
                              **_responses(401, 404, 500, 503)}}}
    if not e.immutable:
        item["patch"] = {
            "operationId": f"update_{e.name}", "summary": f"Change a {e.name}", "tags": [c],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref(f"{name}Update")}}},
            "responses": {"200": _json(_ref(name), "The stored row."),
                          **_responses(400, 401, 403, 404, 409, 413, 415, 422, 500,
                                       503)}}
        item["delete"] = {
            "operationId": f"delete_{e.name}", "summary": f"Delete a {e.name}", "tags": [c],
            "responses": {"204": {"description": "Deleted."},
                          **_responses(401, 403, 404, 409, 500, 503)}}
    return {f"/{c}": rows, f"/{c}/{{id}}": item}


def _import_path() -> dict[str, Any]:
    """C{POST /tariffs/import}."""
    params: list[dict[str, Any]] = [
        {"name": "name", "in": "query", "required": True,
         "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
        {"name": "currency", "in": "query", "required": True,
         "schema": {"type": "string", "pattern": "^[A-Z]{3}$"}}]
    for name, description in CSV_PARAMETERS.items():
        schema: dict[str, Any] = {"type": "string"}
        if name in ("period_boundary", "rounding_method", "delimiter"):
            schema["enum"] = {"period_boundary": ["start", "split"],
                              "rounding_method": ["up", "down", "half_up", "half_even"],
                              "delimiter": ["comma", "semicolon", "tab", "pipe"]}[name]
        elif name == "rounding_decimals":
            schema = {"type": "integer", "minimum": 0, "maximum": 6}
        elif name == "strict_blocks":
            schema = {"type": "boolean"}
        params.append({"name": name, "in": "query", "description": f"CSV only: {description}.",
                       "schema": schema})
    invalid = {"anyOf": [_ref("ValidationError"), _ref("InvalidTariff")]}
    return {"/tariffs/import": {"post": {
        "operationId": "import_tariff", "summary": "Upload a rate deck or tariff document",
        "description": "The whole file is checked; any bad row rejects it and nothing is "
                       "stored.  Admin keys only.",
        "tags": ["tariffs"], "parameters": params,
        "requestBody": {"required": True, "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/json": {"schema": _ref("TariffDocument")}}},
        "responses": {"201": _json(_ref("TariffImported"), "The stored tariff.",
                                   headers=_LOCATION),
                      "422": _json(invalid, ERRORS[422][0]),
                      **_responses(400, 401, 403, 409, 413, 415, 500, 503)}}}}


def _tariff_schemas() -> dict[str, Any]:
    """The tariff document (rating.md section 6) and the upload answers."""
    decimal = {"type": "string", "pattern": f"^\\+?{_DIGITS}$"}
    seconds = {"type": "integer", "minimum": 0}
    rounding = {"type": "object", "additionalProperties": False, "properties": {
        "method": {"type": "string", "enum": ["up", "down", "half_up", "half_even"]},
        "decimals": {"type": "integer", "minimum": 0, "maximum": 6}}}
    group = {"type": "object", "additionalProperties": False,
             "required": ["start_s", "price", "unit_s", "increment_s"],
             "properties": {"start_s": seconds, "price": decimal,
                            "unit_s": {"type": "integer", "minimum": 1},
                            "increment_s": {"type": "integer", "minimum": 1},
                            "fixed_fee": decimal}}
    rate = {"type": "object", "additionalProperties": False, "required": ["groups"],
            "properties": {"groups": {"type": "array", "minItems": 1, "items": group},
                           "connect_fee_tricky": {"type": "boolean"},
                           **{k: decimal for k in ("connect_fee", "disconnect_fee",
                                                   "min_charge", "post_call_surcharge_pct")},
                           **{k: seconds for k in ("disconnect_fee_after_s", "grace_s",
                                                   "free_seconds")}}}
    prefixes = {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}
    entry = {"type": "object", "additionalProperties": False, "required": ["prefixes"],
             "properties": {"prefixes": prefixes, "timing": {"type": ["string", "null"]},
                            "weight": {"type": "string"}, "rate": {"type": "string"},
                            "rounding": rounding, "max_cost": decimal,
                            "max_cost_strategy": {"type": "string",
                                                  "enum": ["free", "disconnect"]},
                            "effective_from": {"type": "string"},
                            "effective_to": {"type": "string"},
                            "blocked": {"type": "boolean"}}}
    timing = {"type": "object", "additionalProperties": False, "properties": {
        **{k: {"type": "array", "items": {"type": "integer"}}
           for k in ("years", "months", "monthdays", "weekdays")},
        "dates": {"type": "array", "items": {"type": "string", "format": "date"}},
        "start": {"type": "string", "pattern": "^[0-9]{2}:[0-9]{2}:[0-9]{2}$"},
        "end": {"type": "string", "pattern": "^[0-9]{2}:[0-9]{2}:[0-9]{2}$"}}}
    bundle = {"type": "object", "additionalProperties": False,
              "required": ["id", "seconds", "prefixes"],
              "properties": {"id": {"type": "string", "minLength": 1}, "seconds": seconds,
                             "prefixes": prefixes,
                             "increment_s": {"type": "integer", "minimum": 1},
                             "connect_fee": decimal, "price": decimal}}
    document = {"type": "object", "additionalProperties": False,
                "description": "A tariff (rating.md section 6); checked whole by the "
                               "rating loader.",
                "required": ["timezone", "rates", "entries"],
                "properties": {"timezone": {"type": "string"},
                               "period_boundary": {"type": "string",
                                                   "enum": ["start", "split"]},
                               "rounding": rounding,
                               "timings": {"type": "object", "additionalProperties": timing},
                               "rates": {"type": "object", "additionalProperties": rate},
                               "entries": {"type": "array", "items": entry},
                               "bundles": {"type": "array", "items": bundle}}}
    return {
        "TariffDocument": document,
        "InvalidTariff": {"type": "object", "required": ["error", "rows"], "properties": {
            "error": {"type": "string"},
            "rows": {"type": "array", "items": _ref("TariffProblem")}}},
        "TariffImported": {"allOf": [_ref("Tariff"), {
            "type": "object", "required": ["warnings"],
            "properties": {"warnings": {"type": "array", "items": {"type": "string"}}}}]},
    }


def _quote_path() -> dict[str, Any]:
    """C{POST /rating/quote}."""
    rejected = {"anyOf": [_ref("ValidationError"), _ref("Error")]}
    return {"/rating/quote": {"post": {
        "operationId": "quote_call", "summary": "Quote and explain the cost of one call",
        "description": "Prices a call with a stored tariff (tariff_id; only keys that can "
                       "see it: admin keys) or an inline tariff document (any key), and "
                       "with a balance also its maximum duration (rating.md 2 and 3.2).",
        "tags": ["rating"],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _ref("QuoteRequest")}}},
        "responses": {"200": _json(_ref("Quote"), "The cost and its breakdown."),
                      "422": _json(rejected, "Bad fields (each named; an inline document's "
                                             "problems as tariff.<key path>), or "
                                             "{\"error\": \"destination not rated\"} or "
                                             "\"destination blocked\"."),
                      **_responses(400, 401, 403, 404, 409, 413, 415, 500, 503)}}}}


def _quote_schemas() -> dict[str, Any]:
    """The quote request and answer (L{oam.api.quote})."""
    amount = {"type": "string", "description": "An exact decimal number, as a string."}
    seconds = {"type": "integer", "minimum": 0}
    request = {
        "type": "object", "additionalProperties": False,
        "required": ["destination", "start", "duration_s"],
        "oneOf": [{"required": ["tariff_id"]}, {"required": ["tariff"]}],
        "properties": {
            "tariff_id": {"type": "integer", "minimum": 1, "maximum": INT_MAX,
                          "description": "A stored tariff (give this or tariff)."},
            "tariff": _ref("TariffDocument"),
            "destination": {"type": "string", "pattern": DESTINATION_PATTERN,
                            "description": "The called number, matched as given."},
            "start": {"type": "string", "format": "date-time", "pattern": START_PATTERN,
                      "description": "The answer time, with its offset."},
            "duration_s": {"type": "integer", "minimum": 0, "maximum": MAX_QUOTE_DURATION_S,
                           "description": "Billable seconds."},
            "balance": {"type": "string", "pattern": BALANCE_PATTERN,
                        "description": "Available credit: adds the maximum duration."}}}
    group = {"type": "object", "properties": {
        "rate_id": {"type": "string"}, "group": seconds, "start_s": seconds, "price": amount,
        "unit_s": seconds, "increment_s": seconds, "increments": seconds,
        "seconds": seconds, "amount": amount}}
    components = {
        "type": "object", "description": "rating.cost.Breakdown, unrounded amounts.",
        "required": ["connect_fee", "groups", "time_charge", "fixed_fees", "disconnect_fee",
                     "surcharge", "min_charge_adjustment", "max_cost_adjustment",
                     "unrounded", "rounding"],
        "properties": {
            "groups": {"type": "array", "items": group},
            "bundles": {"type": "array", "items": {"type": "object"}},
            **{k: amount for k in ("connect_fee", "time_charge", "discount_pct", "discount",
                                   "bundle_charge", "fixed_fees", "disconnect_fee",
                                   "surcharge_pct", "surcharge", "min_charge_adjustment",
                                   "max_cost_adjustment", "unrounded")},
            "rounding": {"type": "object", "required": ["method", "decimals", "adjustment"],
                         "properties": {"method": {"type": "string"},
                                        "decimals": {"type": "integer"},
                                        "adjustment": amount}}}}
    entry = {"type": "object", "required": ["index", "prefix", "prefixes", "rate"],
             "properties": {"index": seconds, "prefix": {"type": "string"},
                            "prefixes": {"type": "array", "items": {"type": "string"}},
                            "timing": {"type": ["string", "null"]}, "weight": amount,
                            "rate": {"type": ["string", "null"]}}}
    answer = {
        "type": "object",
        "required": ["cost", "currency", "destination", "start", "duration_s", "billable_s",
                     "free_s", "status", "period_boundary", "ambiguous", "entry", "rate",
                     "components"],
        "properties": {
            "cost": amount, "currency": {"type": ["string", "null"]},
            "destination": {"type": "string"}, "start": {"type": "string"},
            "duration_s": seconds, "billable_s": seconds, "free_s": seconds,
            "status": {"type": "string", "enum": ["rated", "grace", "zero_duration"]},
            "period_boundary": {"type": "string", "enum": ["start", "split"]},
            "ambiguous": {"type": "boolean"}, "entry": entry,
            "rate": {"type": "object", "required": ["id", "groups"]},
            "components": components,
            "balance": amount, "max_duration_s": seconds, "announced_duration_s": seconds,
            "may_announce": {"type": "boolean"},
            "limited_by": {"type": "string", "enum": ["cap", "credit", "max_cost", "refused"]},
            "reason": {"type": ["string", "null"]}, "max_duration_cost": amount,
            "cap_s": seconds}}
    return {"QuoteRequest": request, "Quote": answer}


def _balance_paths() -> dict[str, Any]:
    """C{GET /balances/customers/{id}} and C{POST .../topup} (L{oam.api.balances})."""
    ident = [{"name": "id", "in": "path", "required": True,
              "schema": {"type": "integer", "minimum": 1, "maximum": INT_MAX}}]
    return {
        "/balances/customers/{id}": {"get": {
            "operationId": "get_customer_balance", "summary": "A customer's balance",
            "description": "Admin keys: any customer; reseller keys: their customers; "
                           "customer keys: their own.  End-user keys: 403.",
            "tags": ["balances"], "parameters": ident,
            "responses": {"200": _json(_ref("CustomerBalance"), "The balance."),
                          **_responses(401, 403, 404, 500, 503)}}},
        "/balances/customers/{id}/topup": {"post": {
            "operationId": "top_up_customer", "summary": "Top up a customer's balance",
            "description": "Admin and reseller keys only.  Idempotent per reference: a "
                           "repeated one credits nothing (repeated: true).  The calls in "
                           "progress of the account get their new limit at once.",
            "tags": ["balances"], "parameters": ident,
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("TopUpRequest")}}},
            "responses": {"200": _json(_ref("CustomerBalance"), "The balance after."),
                          **_responses(400, 401, 403, 404, 413, 415, 422, 500, 503)}}},
    }


def _balance_schemas() -> dict[str, Any]:
    """The top-up request and the balance answer."""
    amount = {"type": "string", "description": "An exact decimal number, as a string."}
    return {
        "TopUpRequest": {
            "type": "object", "additionalProperties": False,
            "required": ["amount", "reference"],
            "properties": {
                "amount": {"type": "string", "pattern": AMOUNT_PATTERN,
                           "description": "Positive, at most 6 decimals."},
                "reference": {"type": "string", "minLength": 1, "maxLength": MAX_REFERENCE,
                              "description": "The idempotency key of the top-up."}}},
        "CustomerBalance": {
            "type": "object",
            "required": ["customer_id", "account", "balance", "credit_limit", "held",
                         "available", "currency"],
            "properties": {
                "customer_id": {"type": "integer"},
                "account": {"type": "string", "description": "customer:<sip_domain>"},
                "balance": amount, "credit_limit": amount, "held": amount,
                "available": amount, "currency": {"type": "string"},
                "repeated": {"type": "boolean",
                             "description": "Top-ups: the reference was used before."}}},
    }


def _error_schemas() -> dict[str, Any]:
    """The bodies of error answers."""
    error = {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"}, "reason": {"type": "string"}}}
    problem = {"type": "object", "required": ["row", "column", "message"], "properties": {
        "row": {"type": ["integer", "null"], "description": "CSV line (the header is 1)."},
        "column": {"type": ["string", "null"],
                   "description": "CSV column, or the document's key path."},
        "message": {"type": "string"}}}
    return {
        "Error": error,
        "TariffProblem": problem,
        "ValidationError": {"type": "object", "required": ["error", "fields"], "properties": {
            "error": {"type": "string", "const": "validation failed"},
            "fields": {"type": "object", "additionalProperties": {"type": "string"},
                       "description": "Each bad field or query parameter and why."},
            "rows": {"type": "array", "items": _ref("TariffProblem")}}},
        "Conflict": {"type": "object", "required": ["error", "field"], "properties": {
            "error": {"type": "string", "const": "conflict"},
            "field": {"type": ["string", "null"]}, "message": {"type": "string"}}},
        "ApiKeyCreated": {"allOf": [_ref("ApiKey"), {
            "type": "object", "required": ["key"], "properties": {"key": {
                "type": "string", "readOnly": True,
                "description": "The key itself: shown this once, stored only hashed."}}}]},
    }


def _trunking_paths() -> dict[str, Any]:
    """C{GET /trunking/status} (L{oam.api.trunking})."""
    any_list = {"type": "array", "items": {"type": "object"}}
    status = {"type": "object", "required": ["registrations", "connections", "limits",
                                             "quality"],
              "properties": {"registrations": any_list, "connections": any_list,
                             "limits": {"type": ["array", "null"],
                                        "items": {"type": "object"}},
                             "limits_error": {"type": "string"},
                             "quality": {"type": "object"}}}
    return {"/trunking/status": {"get": {
        "operationId": "get_trunking_status", "summary": "The vendor trunks now",
        "description": "Admin keys only.  Outbound registrations, probed and parked "
                       "connections, calls counted against limits, rolling ASR/ACD/PDD.",
        "tags": ["trunking"],
        "responses": {"200": _json(status, "The state on this node."),
                      **_responses(401, 403, 500)}}}}


def _media_paths() -> dict[str, Any]:
    """C{POST /media/calls/{call_id}/recording} (L{oam.api.media_calls})."""
    ident = [{"name": "call_id", "in": "path", "required": True,
              "schema": {"type": "string", "minLength": 1, "maxLength": 256},
              "description": "The SIP Call-ID of the media server's call, or of a switch "
                             "call's A leg (its CDR's call_id) when the built-in relay "
                             "anchors its media."}]
    body = {"type": "object", "additionalProperties": False, "required": ["action"],
            "properties": {"action": {"type": "string",
                                      "enum": ["start", "stop", "pause", "resume"]},
                           "mode": {"type": "string", "enum": ["stereo", "mixed", "a", "b"],
                                    "description": "For start: both parties in stereo (the "
                                                   "default), mixed into one channel, or one "
                                                   "party (a: the caller, b: the callee). "
                                                   "Media-server calls: stereo only."}}}
    recording = {"type": "object", "required": ["path", "mode", "duration_ms"],
                 "properties": {"path": {"type": "string"}, "mode": {"type": "string"},
                                "duration_ms": {"type": "integer"}}}
    state = {"type": "object", "required": ["call_id", "state", "path", "duration_ms",
                                            "recordings"],
             "properties": {
                 "call_id": {"type": "string"},
                 "source": {"type": "string", "enum": ["media_server", "relay"],
                            "description": "Which kind of call it is."},
                 "state": {"type": "string",
                           "enum": ["idle", "recording", "paused", "stopped"]},
                 "mode": {"type": "string", "enum": ["stereo", "mixed", "a", "b"],
                          "description": "The current (or last) file's mode (switch calls)."},
                 "path": {"type": ["string", "null"],
                          "description": "The file being written (WAV)."},
                 "duration_ms": {"type": ["integer", "null"]},
                 "recordings": {"type": "array", "items": recording,
                                "description": "The files the call finished."}}}
    return {"/media/calls/{call_id}/recording": {"post": {
        "operationId": "control_media_call_recording",
        "summary": "Start, stop, pause or resume recording a live call",
        "description": "Admin keys only.  A media-server call: the whole call, stereo "
                       "(caller left, media server right).  A switch call anchored by the "
                       "built-in relay: both parties or one (mode).  An action already in "
                       "effect changes nothing.  409 also when the call's recording policy is "
                       "never, its media is not in the built-in relay, or it is not answered "
                       "yet.",
        "tags": ["media"], "parameters": ident,
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {"200": _json(state, "The recording's state after the action."),
                      **_responses(400, 401, 403, 404, 409, 415, 422, 500, 503)}}}}


def build_document(version: str, entities: tuple[Entity, ...] = ENTITIES,
                   base: str = "/api/v1", *, balances: bool = False,
                   trunking: bool = False, media: bool = False) -> dict[str, Any]:
    """The OpenAPI document of the API serving C{entities} under C{base}
    (and the balance routes when C{balances}, the trunking status when
    C{trunking}, the media-server call recording when C{media})."""
    schemas: dict[str, Any] = _error_schemas()
    paths: dict[str, Any] = {"/openapi.json": {"get": {
        "operationId": "get_openapi", "summary": "This document", "security": [],
        "tags": ["meta"],
        "responses": {"200": _json({"type": "object"}, "The OpenAPI document."),
                      **_responses(500)}}}}
    for e in entities:
        schemas.update(entity_schemas(e))
        paths.update(_collection_paths(e))
        if e.name == "tariff":
            paths.update(_import_path())
            paths.update(_quote_path())
            schemas.update(_tariff_schemas())
            schemas.update(_quote_schemas())
    if {e.name for e in entities} >= ROUTING_ENTITIES:
        paths.update(routing_paths())
        schemas.update(routing_schemas())
    if balances:
        paths.update(_balance_paths())
        schemas.update(_balance_schemas())
    if trunking:
        paths.update(_trunking_paths())
    if media:
        paths.update(_media_paths())
    responses = {}
    for code, (description, schema) in ERRORS.items():
        responses[f"E{code}"] = _json(_ref(schema), description)
    responses["E401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    responses["E503"]["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "b2bua provisioning API", "version": version,
                 "description": "Tenants, accounts, numbers, vendors, tariffs, cards and "
                                "their history; every row seen through the key's tenant."},
        "servers": [{"url": base}],
        "security": [{"bearerAuth": []}],
        "tags": [{"name": "meta"}, *({"name": e.collection} for e in entities),
                 *([{"name": "rating"}] if "/rating/quote" in paths else []),
                 *([{"name": "routing"}] if "/routing/explain" in paths else []),
                 *([{"name": "balances"}] if balances else []),
                 *([{"name": "trunking"}] if trunking else []),
                 *([{"name": "media"}] if media else [])],
        "paths": paths,
        "components": {"schemas": schemas, "responses": responses,
                       "securitySchemes": {"bearerAuth": {
                           "type": "http", "scheme": "bearer",
                           "description": "An API key (b2k_...)."}}},
    }


class OpenAPIResource(ApiEndpoint):
    """C{GET /api/v1/openapi.json}: the document, to anyone."""

    isLeaf = True
    methods = ("GET",)
    public = True

    def __init__(self, api: ApiContext, document: dict[str, Any]) -> None:
        super().__init__(api)
        self.document = document
        json.dumps(document)

    async def handle_get(self, request: IRequest, scope: object) -> Reply:
        """The document."""
        return Reply(200, self.document)
