"""Sales tariffs blended from vendor tariffs (docs/lcr.md).

    POST /api/v1/routing/blend
    {"vendors": [{"tariff_id": 5}, {"tariff": {...}, "name": "B"}],
     "at": "2024-06-01T00:00:00Z", "depth": 2, "margin_pct": "10",
     "rounding": {"method": "up", "decimals": 4}, "save": {"name": "retail"}}

builds a sales tariff document with L{plugins.trunking.blend.blend} and
answers 200 with it, how each prefix was priced, and the prefixes no
vendor covers; with C{save} it also stores it as a new tariff (admin keys)
and answers 201 with the row and C{Location}.  Authentication and errors
are the quote's, as for L{oam.api.routing}; the vendor tariffs must share
one currency, which the saved tariff takes unless C{save.currency} names
it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal, DecimalException
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from b2bua.db.interfaces import Scope, ValidationFailed
from b2bua.db.model import entity
from b2bua.db.scoping import may_write
from b2bua.db.validation import to_json, validate
from oam.api.collection import call_repository
from oam.api.endpoint import ApiContext, ApiEndpoint, json_body
from oam.api.problems import Reply, forbidden, invalid
from oam.api.quote import DESTINATION_PATTERN
from oam.api.routing import (
    CURRENCY,
    amount_member,
    fetch_row,
    id_member,
    instant_member,
    is_int,
    load_inline,
    load_stored,
    one_of,
    rounding_member,
)
from plugins.trunking.blend import METHODS, BlendOptions, VendorDeck, blend
from rating.tariff import Tariff, load_tariff

__all__ = ["BLEND_FIELDS", "MAX_DEPTH", "MAX_PREFIXES", "MAX_VENDORS", "BlendResource",
           "blend_tariffs", "parse_blend"]

#: The most vendor tariffs one blend combines.
MAX_VENDORS = 20
#: The deepest blend.
MAX_DEPTH = 10
#: The longest code deck given inline.
MAX_PREFIXES = 100_000
BLEND_FIELDS = ("vendors", "at", "depth", "method", "margin_pct", "margin_abs", "min_sell",
                "max_sell", "min_markup_abs", "rounding", "prefixes", "timezone",
                "effective_from", "tariff_rounding", "save")
_TARIFF = entity("tariff")


@dataclass
class VendorAsk:
    """One member of C{vendors}."""

    where: str
    name: str | None
    weight: Decimal
    currency: str | None
    tariff_id: int | None


@dataclass
class BlendAsk:
    """A checked blend request."""

    vendors: list[VendorAsk]
    at: dt.datetime
    options: BlendOptions
    prefixes: list[str] | None
    save_name: str | None
    save_currency: str | None
    documents: dict[str, Any] = field(default_factory=dict)


def _vendor(item: Any, i: int, errors: dict[str, str],
            documents: dict[str, Any]) -> VendorAsk | None:
    """One member of C{vendors}; an inline document goes to C{documents}."""
    where = f"vendors[{i}]"
    if not isinstance(item, dict):
        errors[where] = "must be an object with tariff_id or tariff"
        return None
    before = len(errors)
    for key in item:
        if key not in ("tariff_id", "tariff", "name", "weight", "currency"):
            errors[f"{where}.{str(key)[:64]}"] = "unknown field"
    one_of(item, "tariff_id", "tariff", errors, True, f"{where}.")
    tariff_id = None
    if "tariff_id" in item and "tariff" not in item:
        tariff_id = id_member(item["tariff_id"], f"{where}.tariff_id", errors)
    elif "tariff" in item and "tariff_id" not in item:
        documents[f"{where}.tariff"] = item["tariff"]
    name = item.get("name")
    if "name" in item and not (isinstance(name, str) and 1 <= len(name) <= 255):
        errors[f"{where}.name"] = "must be a string of 1 to 255 characters"
    weight = amount_member(item.get("weight", 1), f"{where}.weight", errors)
    currency = item.get("currency")
    if "currency" in item and not (isinstance(currency, str) and CURRENCY.match(currency)):
        errors[f"{where}.currency"] = "must be 3 capital letters (EUR)"
    if len(errors) != before or weight is None:
        return None
    return VendorAsk(where, name, weight, currency, tariff_id)


def _options(body: dict[str, Any], errors: dict[str, str]) -> BlendOptions | None:
    """The blend's knobs."""
    depth = body.get("depth", 1)
    if not (is_int(depth) and 1 <= depth <= MAX_DEPTH):
        errors["depth"] = f"must be an integer from 1 to {MAX_DEPTH}"
    method = body.get("method", "depth")
    if method not in METHODS:
        errors["method"] = f"must be one of {', '.join(METHODS)}"
    amounts = {name: amount_member(body[name], name, errors) for name in (
        "margin_pct", "margin_abs", "min_sell", "max_sell", "min_markup_abs") if name in body}
    low, high = amounts.get("min_sell"), amounts.get("max_sell")
    if low is not None and high is not None and high < low:
        errors["max_sell"] = "must not be below min_sell"
    rounding = rounding_member(body.get("rounding", {}), "rounding", errors)
    tariff_rounding = rounding_member(body.get("tariff_rounding", {}), "tariff_rounding", errors)
    timezone = body.get("timezone", "UTC")
    try:
        ZoneInfo(timezone if isinstance(timezone, str) and timezone else "?")
    except (ZoneInfoNotFoundError, ValueError):
        errors["timezone"] = "must be an IANA time zone such as Europe/Paris"
    effective = None
    if "effective_from" in body:
        effective = instant_member(body["effective_from"], "effective_from", errors)
    if errors or rounding is None or tariff_rounding is None:
        return None
    return BlendOptions(depth=depth, method=method, rounding=rounding, timezone=timezone,
                        tariff_rounding=tariff_rounding, effective_from=effective,
                        **{k: v for k, v in amounts.items() if v is not None})


def parse_blend(body: Any) -> tuple[BlendAsk | None, dict[str, str]]:
    """Check a blend body, except its inline tariff documents (listed in
    C{ask.documents}).

    @return: the request (C{None} when a member is bad) and the bad members.
    """
    if not isinstance(body, dict):
        return None, {"body": "must be an object"}
    errors = {str(name)[:64]: "unknown field" for name in body if name not in BLEND_FIELDS}
    documents: dict[str, Any] = {}
    items = body.get("vendors")
    vendors = []
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_VENDORS:
        errors["vendors"] = f"must be a list of 1 to {MAX_VENDORS} vendor tariffs"
    else:
        vendors = [_vendor(item, i, errors, documents) for i, item in enumerate(items)]
    at = instant_member(body.get("at"), "at", errors)
    options = _options(body, errors)
    prefixes = body.get("prefixes")
    if "prefixes" in body and not (
            isinstance(prefixes, list) and 1 <= len(prefixes) <= MAX_PREFIXES
            and all(isinstance(p, str) and re.fullmatch(DESTINATION_PATTERN, p)
                    for p in prefixes)):
        errors["prefixes"] = f"must be a list of 1 to {MAX_PREFIXES} prefixes (digits, " \
                             "optional leading +)"
    save = body.get("save")
    name = currency = None
    if "save" in body:
        if not isinstance(save, dict) or set(save) - {"name", "currency"}:
            errors["save"] = "must be an object with name and currency only"
        else:
            name, currency = save.get("name"), save.get("currency")
            if not (isinstance(name, str) and 1 <= len(name) <= 255):
                errors["save.name"] = "required: a string of 1 to 255 characters"
            if "currency" in save and not (isinstance(currency, str)
                                           and CURRENCY.match(currency)):
                errors["save.currency"] = "must be 3 capital letters (EUR)"
    if errors or at is None or options is None:
        return None, errors
    return BlendAsk([v for v in vendors if v is not None], at, options, prefixes, name,
                    currency, documents), errors


def _blend_documents(body: Any) -> dict[str, Any]:
    """The inline tariff documents of a blend body that parsed badly."""
    items = body.get("vendors") if isinstance(body, dict) else None
    if not isinstance(items, list) or len(items) > MAX_VENDORS:
        return {}
    return {f"vendors[{i}].tariff": item["tariff"] for i, item in enumerate(items)
            if isinstance(item, dict) and "tariff" in item and "tariff_id" not in item}


def blend_tariffs(ask: BlendAsk, stored: dict[int, dict[str, Any]],
                  inline: dict[str, Tariff]) -> dict[str, Any]:
    """Blend (in a thread): the answer's body, its document checked by the loader.

    @raise ApiError: 422 for a stored vendor tariff the loader now refuses.
    """
    decks = []
    for i, vendor in enumerate(ask.vendors):
        if vendor.tariff_id is not None:
            row = stored[vendor.tariff_id]
            tariff, problem = load_stored(row)
            if tariff is None:
                raise invalid({f"{vendor.where}.tariff_id": problem or "refused"})
            name = vendor.name or str(row.get("name") or f"tariff {vendor.tariff_id}")
        else:
            tariff = inline[f"{vendor.where}.tariff"]
            name = vendor.name or f"vendor {i + 1}"
        decks.append(VendorDeck(name, tariff, vendor.weight))
    try:
        result = blend(decks, ask.at, ask.options, ask.prefixes)
    except DecimalException:
        raise invalid({"vendors": "the prices cannot be computed exactly (amounts with too "
                                  "many digits)"}) from None
    load_tariff(result.document)
    return result.as_dict()


class BlendResource(ApiEndpoint):
    """C{POST /api/v1/routing/blend}: a sales tariff from vendor tariffs."""

    isLeaf = True
    methods = ("POST",)

    def __init__(self, api: ApiContext, tariffs: Any) -> None:
        """
        @param tariffs: the tariffs repository (vendor tariffs by id, and
            where a saved blend goes).
        """
        super().__init__(api)
        self.tariffs = tariffs

    async def handle_post(self, request: IRequest, scope: Scope) -> Reply:
        """Check the body, read the vendor tariffs, blend; 200 (201 saved)."""
        body = json_body(request)
        ask, errors = parse_blend(body)
        documents = ask.documents if ask is not None else _blend_documents(body)
        inline, problems = await deferToThread(load_inline, documents)
        errors.update(problems)
        if errors or ask is None:
            raise invalid(errors)
        if ask.save_name is not None and not may_write(_TARIFF, scope):
            raise forbidden()
        stored: dict[int, dict[str, Any]] = {}
        for vendor in ask.vendors:
            if vendor.tariff_id is not None and vendor.tariff_id not in stored:
                stored[vendor.tariff_id] = await fetch_row(self.tariffs, _TARIFF, vendor.tariff_id,
                                                      scope)
        currency = self._currency(ask, stored)
        answer = await deferToThread(blend_tariffs, ask, stored, inline)
        answer = {"currency": currency, **answer}
        if ask.save_name is None:
            return Reply(200, answer)
        values = {"name": ask.save_name, "currency": currency, "document": answer["document"]}
        row = await call_repository(_TARIFF, self.tariffs.create(values, scope), set(values))
        location = f"{self.api.base}/{_TARIFF.collection}/{row['id']}"
        return Reply(201, {**answer, "tariff": to_json(_TARIFF, row)},
                     {b"Location": location.encode("ascii")})

    def _currency(self, ask: BlendAsk, stored: dict[int, dict[str, Any]]) -> str | None:
        """The vendor tariffs' one currency (and the saved tariff's).

        @raise ApiError: 422 when they differ, or a save has none.
        """
        given = {v.currency for v in ask.vendors if v.currency is not None}
        given |= {str(row["currency"]) for row in stored.values() if row.get("currency")}
        if len(given) > 1:
            raise invalid({"vendors": f"the tariffs are in different currencies: "
                                      f"{', '.join(sorted(given))}"})
        currency = next(iter(given), None)
        if ask.save_name is None:
            return currency
        if ask.save_currency is not None and currency not in (None, ask.save_currency):
            raise invalid({"save.currency": f"the vendor tariffs are in {currency}"})
        currency = ask.save_currency or currency
        if currency is None:
            raise invalid({"save.currency": "required: no vendor tariff states a currency"})
        try:
            validate(_TARIFF, {"name": ask.save_name, "currency": currency, "document": {}},
                     partial=False)
        except ValidationFailed as failure:
            raise invalid({f"save.{k}": str(v) for k, v in failure.errors.items()}) from None
        return currency
