"""The OpenAPI paths and schemas of the routing endpoints (L{oam.api.routing},
L{oam.api.blending}).

L{oam.api.openapi.build_document} adds them when the API serves tariffs,
vendors, connections and routing plans (L{ROUTING_ENTITIES}).  The request
schemas state every rule the endpoints check that a schema can state, so
that a request the document calls invalid is always refused.
"""

from __future__ import annotations

from typing import Any

from b2bua.db.validation import INT_MAX
from oam.api.blending import MAX_DEPTH, MAX_PREFIXES, MAX_VENDORS
from oam.api.quote import DESTINATION_PATTERN, MAX_QUOTE_DURATION_S, START_PATTERN
from oam.api.routing import AMOUNT_PATTERN, MAX_CONNECTIONS, MAX_WHOLE, VENDOR_STATUSES
from plugins.trunking.blend import METHODS
from plugins.trunking.lcr import DEFAULT_REFERENCE_DURATION_S, REASONS
from plugins.trunking.lcr_plans import (
    MAX_ID,
    MAX_WEIGHT,
    ON_EMPTY,
    QUALITY_METRICS,
    STRATEGIES,
    TIE_BREAKS,
)
from rating.tariff import ROUNDING_METHODS

__all__ = ["ROUTING_ENTITIES", "routing_paths", "routing_schemas"]

#: The entities the routing endpoints read (and the API must serve).
ROUTING_ENTITIES = frozenset({"tariff", "vendor", "connection", "routing_plan"})
_REF = "#/components/schemas/"
_ID = {"type": "integer", "minimum": 1, "maximum": INT_MAX}
_AMOUNT = {"type": "string", "description": "An exact decimal number, as a string."}
_NULLABLE_AMOUNT = {"type": ["string", "null"],
                    "description": "An exact decimal number, as a string."}
_PLAIN_DECIMAL = "^[0-9]{1,20}(\\.[0-9]{1,12})?$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"$ref": f"#/components/responses/E{code}"} for code in codes}


def _json(schema: dict[str, Any], description: str, **more: Any) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": schema}}, **more}


def _amount_in(maximum: int, description: str = "") -> dict[str, Any]:
    """A non-negative decimal string (or a whole number up to C{maximum})."""
    schema: dict[str, Any] = {"type": ["string", "integer"], "pattern": AMOUNT_PATTERN,
                              "minimum": 0, "maximum": maximum}
    if description:
        schema["description"] = description
    return schema


def _plan_decimal(maximum: Any = None) -> dict[str, Any]:
    """A decimal of a plan document (L{plugins.trunking.lcr.load_plan})."""
    schema = {"type": ["string", "integer"], "pattern": _PLAIN_DECIMAL, "minimum": 0}
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def _rounding() -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": {
        "method": {"type": "string", "enum": list(ROUNDING_METHODS)},
        "decimals": {"type": "integer", "minimum": 0, "maximum": 6}}}


def routing_paths() -> dict[str, Any]:
    """C{POST /routing/explain} and C{POST /routing/blend}."""
    rejected = {"anyOf": [_ref("ValidationError"), _ref("Error")]}
    location = {"Location": {"description": "The path of the saved tariff.",
                             "schema": {"type": "string"}}}
    return {
        "/routing/explain": {"post": {
            "operationId": "explain_routing", "summary": "Rank the routes of one call",
            "description": "Ranks vendor connections for a number with a stored routing plan "
                           "(routing_plan_id; admin keys) or an inline plan (any key), and "
                           "says why each route stands where it does and why every other "
                           "connection was left out (docs/lcr.md).",
            "tags": ["routing"],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("RoutingExplainRequest")}}},
            "responses": {"200": _json(_ref("RoutingExplanation"), "The ranked routes."),
                          "422": _json(rejected, "Bad members (each named; an inline "
                                                 "document's problems under its path), or "
                                                 "the customer tariff does not rate the "
                                                 "number."),
                          **_errors(400, 401, 403, 404, 409, 413, 415, 500, 503)}}},
        "/routing/blend": {"post": {
            "operationId": "blend_tariff", "summary": "Blend a sales tariff from vendor tariffs",
            "description": "Per prefix, combines the cheapest vendor prices (depth), adds the "
                           "margin and rounds (rating.md 4.4).  With save, stores the result "
                           "as a new tariff (admin keys) and answers 201.",
            "tags": ["routing"],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("BlendRequest")}}},
            "responses": {"200": _json(_ref("BlendedTariff"), "The blended tariff."),
                          "201": _json(_ref("BlendedTariff"), "The blended tariff, saved.",
                                       headers=location),
                          "422": _json(_ref("ValidationError"), "Bad members, each named."),
                          **_errors(400, 401, 403, 404, 409, 413, 415, 500, 503)}}},
    }


def _plan_schema() -> dict[str, Any]:
    """An inline routing plan (L{plugins.trunking.lcr.load_plan})."""
    guarantee = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "max_cost": {"anyOf": [{"type": "string", "const": "event_cost"},
                                   _plan_decimal()],
                         "description": "event_cost (the customer's cost) or a fixed amount."},
            "min_margin_abs": _plan_decimal(),
            "min_margin_pct": _plan_decimal(100),
            "on_empty": {"type": "string", "enum": list(ON_EMPTY)}}}
    entry = {
        "type": "object", "additionalProperties": False,
        "required": ["prefix", "connection_ids"],
        "properties": {
            "prefix": {"type": "string", "pattern": "^(\\+?[0-9]{1,32}|\\*any)?$",
                       "description": "Digits, or *any (or empty) for every number."},
            "connection_ids": {"type": "array", "minItems": 1, "uniqueItems": True,
                               "items": {"type": "integer", "minimum": 1,
                                         "maximum": MAX_ID}},
            "weight": _plan_decimal(int(MAX_WEIGHT))}}
    return {
        "RoutingPlanDocument": {
            "type": "object", "additionalProperties": False,
            "description": "A routing plan; without entries, every given connection is "
                           "routed under one catch-all entry.",
            "properties": {
                "strategy": {"type": "string", "enum": list(STRATEGIES)},
                "entries": {"type": "array", "items": entry},
                "profit_guarantee": {"anyOf": [_ref("ProfitGuarantee"), {"type": "null"}]},
                "tie_break": {"type": "string", "enum": list(TIE_BREAKS)},
                "quality_metrics": {"type": "array", "minItems": 1, "uniqueItems": True,
                                    "items": {"type": "string",
                                              "enum": list(QUALITY_METRICS)}}}},
        "ProfitGuarantee": guarantee,
    }


def _explain_schemas() -> dict[str, Any]:
    """The explain request and answer."""
    connection = {
        "type": "object", "additionalProperties": False, "required": ["id"],
        "not": {"required": ["tariff_id", "tariff"]},
        "properties": {
            "id": _ID, "name": {"type": "string", "maxLength": 255},
            "vendor": {"type": "string", "maxLength": 255},
            "vendor_id": {"anyOf": [_ID, {"type": "null"}]},
            "enabled": {"type": "boolean"},
            "vendor_status": {"type": "string", "enum": list(VENDOR_STATUSES)},
            "currency": {"anyOf": [{"type": "string", "pattern": "^[A-Z]{3}$"},
                                   {"type": "null"}]},
            "weight": {"type": "integer", "minimum": 0, "maximum": INT_MAX,
                       "description": "Ranks the connection among equal candidates."},
            "tariff_id": _ID, "tariff": _ref("TariffDocument")}}
    figures = {"type": "object", "additionalProperties": False,
               "properties": {m: _amount_in(MAX_WHOLE) for m in QUALITY_METRICS}}
    ids = {"type": "array", "maxItems": MAX_CONNECTIONS, "items": _ID}
    request = {
        "type": "object", "additionalProperties": False, "required": ["number", "start"],
        "oneOf": [{"required": ["routing_plan_id"]}, {"required": ["plan"]}],
        "not": {"required": ["customer_tariff_id", "customer_tariff"]},
        "properties": {
            "number": {"type": "string", "pattern": DESTINATION_PATTERN,
                       "description": "The dialled number, matched as given."},
            "start": {"type": "string", "format": "date-time", "pattern": START_PATTERN,
                      "description": "The setup time, with its offset."},
            "routing_plan_id": _ID, "plan": _ref("RoutingPlanDocument"),
            "connections": {"type": "array", "maxItems": MAX_CONNECTIONS,
                            "items": {"anyOf": [_ID, connection]},
                            "description": "Stored connection ids or inline connections "
                                           "(default: the stored connections the plan "
                                           "lists for the number)."},
            "customer_tariff_id": _ID, "customer_tariff": _ref("TariffDocument"),
            "duration_s": {"type": "integer", "minimum": 1,
                           "maximum": MAX_QUOTE_DURATION_S,
                           "default": DEFAULT_REFERENCE_DURATION_S,
                           "description": "The reference call's billable seconds."},
            "unavailable": ids,
            "profit_guarantee": {"anyOf": [_ref("ProfitGuarantee"), {"type": "null"}]},
            "quality": {"type": "object", "maxProperties": MAX_CONNECTIONS,
                        "propertyNames": {"pattern": "^[1-9][0-9]{0,18}$"},
                        "additionalProperties": figures},
            "seed": {"type": "integer", "minimum": 0, "maximum": INT_MAX}}}
    rate = {"type": "object", "required": ["id", "price", "unit_s", "increment_s",
                                           "connect_fee"],
            "properties": {"id": {"type": "string"}, "price": _AMOUNT,
                           "unit_s": {"type": "integer"}, "increment_s": {"type": "integer"},
                           "connect_fee": _AMOUNT}}
    route = {
        "type": "object",
        "required": ["position", "connection_id", "connection", "vendor_id", "vendor",
                     "plan_prefix", "plan_entry", "weight", "connection_weight",
                     "matched_prefix", "rate", "cost", "margin", "reason", "loss"],
        "properties": {
            "position": {"type": "integer", "minimum": 1},
            "connection_id": {"type": "integer"}, "connection": {"type": "string"},
            "vendor_id": {"type": ["integer", "null"]}, "vendor": {"type": "string"},
            "plan_prefix": {"type": "string"}, "plan_entry": {"type": "integer"},
            "weight": _AMOUNT, "connection_weight": {"type": "integer"},
            "matched_prefix": {"type": "string"}, "rate": rate,
            "cost": _AMOUNT, "margin": _NULLABLE_AMOUNT, "reason": {"type": "string"},
            "loss": {"type": "boolean"}}}
    excluded = {
        "type": "object",
        "required": ["connection_id", "connection", "vendor_id", "vendor", "reason", "detail",
                     "plan_prefix", "cost"],
        "properties": {
            "connection_id": {"type": "integer"}, "connection": {"type": "string"},
            "vendor_id": {"type": ["integer", "null"]}, "vendor": {"type": "string"},
            "reason": {"type": "string", "enum": list(REASONS)},
            "detail": {"type": "string"}, "plan_prefix": {"type": ["string", "null"]},
            "cost": _NULLABLE_AMOUNT}}
    answer = {
        "type": "object",
        "required": ["number", "start", "duration_s", "strategy", "customer_cost", "ceiling",
                     "loss", "rejected", "routes", "excluded", "currency", "routing_plan_id"],
        "properties": {
            "number": {"type": "string"}, "start": {"type": "string"},
            "duration_s": {"type": "integer"},
            "strategy": {"type": "string", "enum": list(STRATEGIES)},
            "customer_cost": _NULLABLE_AMOUNT, "ceiling": _NULLABLE_AMOUNT,
            "loss": {"type": "boolean"}, "rejected": {"type": "boolean"},
            "routes": {"type": "array", "items": route},
            "excluded": {"type": "array", "items": excluded},
            "currency": {"type": ["string", "null"]},
            "routing_plan_id": {"type": ["integer", "null"]}}}
    return {"RoutingExplainRequest": request, "RoutingExplanation": answer}


def _blend_schemas() -> dict[str, Any]:
    """The blend request and answer."""
    vendor = {
        "type": "object", "additionalProperties": False,
        "oneOf": [{"required": ["tariff_id"]}, {"required": ["tariff"]}],
        "properties": {
            "tariff_id": _ID, "tariff": _ref("TariffDocument"),
            "name": {"type": "string", "minLength": 1, "maxLength": 255},
            "weight": _amount_in(MAX_WHOLE, "For method weighted (default 1)."),
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}}
    request = {
        "type": "object", "additionalProperties": False, "required": ["vendors", "at"],
        "properties": {
            "vendors": {"type": "array", "minItems": 1, "maxItems": MAX_VENDORS,
                        "items": vendor},
            "at": {"type": "string", "format": "date-time", "pattern": START_PATTERN,
                   "description": "The instant the vendor rates are read at."},
            "depth": {"type": "integer", "minimum": 1, "maximum": MAX_DEPTH, "default": 1},
            "method": {"type": "string", "enum": list(METHODS), "default": "depth"},
            **{name: _amount_in(MAX_WHOLE) for name in (
                "margin_pct", "margin_abs", "min_sell", "max_sell", "min_markup_abs")},
            "rounding": _rounding(), "tariff_rounding": _rounding(),
            "prefixes": {"type": "array", "minItems": 1, "maxItems": MAX_PREFIXES,
                         "items": {"type": "string", "pattern": DESTINATION_PATTERN}},
            "timezone": {"type": "string", "minLength": 1},
            "effective_from": {"type": "string", "format": "date-time",
                               "pattern": START_PATTERN},
            "save": {"type": "object", "additionalProperties": False, "required": ["name"],
                     "properties": {"name": {"type": "string", "minLength": 1,
                                             "maxLength": 255},
                                    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}}}}
    price = {"type": "object", "required": ["vendor", "matched_prefix", "rate", "per_minute",
                                            "connect_fee", "increments"],
             "properties": {"vendor": {"type": "string"}, "matched_prefix": {"type": "string"},
                            "rate": {"type": "string"}, "per_minute": _AMOUNT,
                            "connect_fee": _AMOUNT, "increments": {"type": "string"}}}
    destination = {
        "type": "object",
        "required": ["prefix", "sell", "base", "used", "rate", "vendors", "blocked"],
        "properties": {"prefix": {"type": "string"}, "sell": _AMOUNT, "base": _AMOUNT,
                       "used": {"type": "integer", "minimum": 1}, "rate": {"type": "string"},
                       "vendors": {"type": "array", "items": price},
                       "blocked": {"type": "array", "items": {"type": "string"}}}}
    answer = {
        "type": "object",
        "required": ["currency", "document", "destinations", "uncovered", "short"],
        "properties": {
            "currency": {"type": ["string", "null"]}, "document": _ref("TariffDocument"),
            "destinations": {"type": "array", "items": destination},
            "uncovered": {"type": "array", "items": {"type": "string"}},
            "short": {"type": "array", "items": {"type": "string"}},
            "tariff": _ref("Tariff")}}
    return {"BlendRequest": request, "BlendedTariff": answer}


def routing_schemas() -> dict[str, Any]:
    """The component schemas L{routing_paths} refers to (besides the tariff
    document, the C{Tariff} row and the error bodies)."""
    return {**_plan_schema(), **_explain_schemas(), **_blend_schemas()}
