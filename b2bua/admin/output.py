"""What C{b2bua-admin} prints: aligned tables for people, raw JSON for programs.

A list is a table with one row per item and the columns of its entity
(L{COLUMNS}); a single row is a two-column C{field  value} listing in the
order the model declares its fields (L{b2bua.db.model}).  Empty values
print as C{-}, times in UTC as C{YYYY-MM-DD HH:MM:SS}, JSON values
compactly.  C{--json} bypasses all of this and prints the API's own answer
(L{render_json}).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from b2bua.db.model import entity

__all__ = ["COLUMNS", "Column", "cell", "model_order", "paging_note", "render_json",
           "render_quote", "render_record", "render_table"]

#: The gap between two table columns.
GAP = "  "


@dataclass(frozen=True)
class Column:
    """One table column.

    @ivar header: printed upper-case above the column.
    @ivar value: the row's key, or a function of the row.
    @ivar right: right-aligned (numbers, amounts).
    """

    header: str
    value: str | Callable[[Mapping[str, Any]], Any]
    right: bool = False

    def text(self, row: Mapping[str, Any]) -> str:
        """This column's cell for C{row}."""
        value = self.value(row) if callable(self.value) else row.get(self.value)
        return cell(value)


def when(value: Any) -> str:
    """An ISO 8601 time as C{YYYY-MM-DD HH:MM:SS} in UTC (as is if unparsable)."""
    if not isinstance(value, str) or not value:
        return cell(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def cell(value: Any) -> str:
    """The printed form of one value."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True) if value else "-"
    return str(value).replace("\n", " ")


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column],
                 *, empty: str = "(none)") -> str:
    """C{rows} as an aligned table with a header line (C{empty} when there are none)."""
    if not rows:
        return empty + "\n"
    grid = [[c.header.upper() for c in columns]]
    grid += [[c.text(row) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(columns))]
    lines = []
    for line in grid:
        cells = [text.rjust(width) if column.right else text.ljust(width)
                 for text, width, column in zip(line, widths, columns, strict=True)]
        lines.append(GAP.join(cells).rstrip())
    return "\n".join(lines) + "\n"


def model_order(row: Mapping[str, Any], collection: str | None) -> list[str]:
    """The keys of C{row}: in the model's field order for C{collection} (id
    first, times last), then any others in the order the API gave them."""
    try:
        declared = [f.name for f in entity(collection).fields] if collection else []
    except KeyError:
        declared = []
    known = [name for name in declared if name in row]
    return known + [name for name in row if name not in known]


def render_record(row: Mapping[str, Any], collection: str | None = None, *,
                  extra: Iterable[tuple[str, Any]] = ()) -> str:
    """One row as C{field  value} lines (C{extra} last).

    @param collection: orders the fields as the model declares them; without
        it they come in the API's order.
    """
    pairs = [(name, when(row[name]) if name.endswith("_at") else cell(row[name]))
             for name in model_order(row, collection)]
    pairs += [(name, cell(value)) for name, value in extra]
    width = max((len(name) for name, _ in pairs), default=0)
    return "".join(f"{name.ljust(width)}{GAP}{value}\n" for name, value in pairs)


def render_json(value: Any) -> str:
    """C{value} as indented JSON, the way C{--json} prints it."""
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def paging_note(answer: Mapping[str, Any], noun: str) -> str:
    """C{"showing 21-40 of 57 customers (next page: --offset 40)"}, or C{""}
    when the page holds everything there is."""
    items = answer.get("items", [])
    total = int(answer.get("total", len(items)))
    offset = int(answer.get("offset") or 0)
    if offset == 0 and len(items) >= total:
        return ""
    if not items:
        return f"no {noun} at offset {offset} (there are {total})\n"
    last = offset + len(items)
    note = f"showing {offset + 1}-{last} of {total} {noun}"
    if last < total:
        note += f" (next page: --offset {last})"
    return note + "\n"


def _duration(row: Mapping[str, Any]) -> str:
    """Billed seconds as C{M:SS} (C{H:MM:SS} past an hour)."""
    seconds = row.get("billsec")
    if not isinstance(seconds, int):
        return cell(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _cost(row: Mapping[str, Any]) -> str:
    """C{"0.0420 USD"}."""
    cost, currency = row.get("cost"), row.get("currency")
    if cost in (None, ""):
        return "-"
    return f"{cost} {currency}" if currency else str(cost)


def _entries(row: Mapping[str, Any]) -> Any:
    """How many entries (prefixes) a tariff's document holds."""
    document = row.get("document")
    if isinstance(document, Mapping) and isinstance(document.get("entries"), list):
        return len(document["entries"])
    return None


def _key_scope(row: Mapping[str, Any]) -> str:
    """What an API key is bound to: C{customer 3}, C{account 12}, ..."""
    for name in ("account_id", "customer_id", "reseller_id"):
        if row.get(name) is not None:
            return f"{name[:-3]} {row[name]}"
    return "-"


#: The table columns of each collection the tool lists.
COLUMNS: dict[str, tuple[Column, ...]] = {
    "customers": (
        Column("id", "id", right=True), Column("name", "name"),
        Column("sip domain", "sip_domain"), Column("currency", "currency"),
        Column("credit limit", "credit_limit", right=True),
        Column("timezone", "billing_timezone"), Column("reseller", "reseller_id"),
        Column("status", "status"),
    ),
    "accounts": (
        Column("id", "id", right=True), Column("number", "number"),
        Column("sip username", "sip_username"), Column("kind", "kind"),
        Column("caller id name", "caller_id_name"), Column("status", "status"),
    ),
    "dids": (
        Column("id", "id", right=True), Column("number", "number"),
        Column("customer", "customer_id", right=True), Column("target kind", "target_kind"),
        Column("target", "target"), Column("status", "status"),
    ),
    "cdrs": (
        Column("started (utc)", lambda row: when(row.get("started_at"))),
        Column("customer", "customer_id", right=True),
        Column("account", "account_id", right=True),
        Column("caller", "caller"), Column("callee", "callee"),
        Column("disposition", "disposition"),
        Column("billed", _duration, right=True), Column("cost", _cost, right=True),
        Column("call-id", "call_id"),
    ),
    "api_keys": (
        Column("id", "id", right=True), Column("name", "name"), Column("role", "role"),
        Column("bound to", _key_scope), Column("prefix", "prefix"),
        Column("revoked", "revoked"),
        Column("last used (utc)", lambda row: when(row.get("last_used_at"))),
    ),
    "tariffs": (
        Column("id", "id", right=True), Column("name", "name"),
        Column("currency", "currency"), Column("entries", _entries, right=True),
        Column("created (utc)", lambda row: when(row.get("created_at"))),
    ),
}


# -- quotes ----------------------------------------------------------------------------


def _zero(amount: Any) -> bool:
    """Whether a decimal string is zero (anything unreadable is not)."""
    try:
        return isinstance(amount, str) and Decimal(amount) == 0
    except InvalidOperation:
        return False


def _quote_components(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of a quote's breakdown table, in pipeline order (rating.md 2.6)."""
    parts = answer.get("components") or {}
    rows: list[dict[str, Any]] = [{"component": "connect fee",
                                   "amount": parts.get("connect_fee")}]
    for g in parts.get("groups") or ():
        rows.append({"component": "time",
                     "detail": f"{g.get('rate_id')} group {g.get('group')}: "
                               f"{g.get('increments')} x {g.get('increment_s')} s from "
                               f"{g.get('start_s')} s at {g.get('price')}/{g.get('unit_s')} s",
                     "amount": g.get("amount")})
    rows.append({"component": "time charge", "amount": parts.get("time_charge")})
    if not _zero(parts.get("discount", "0")):
        rows.append({"component": "discount", "detail": f"{parts.get('discount_pct')} %",
                     "amount": f"-{parts.get('discount')}"})
    if not _zero(parts.get("bundle_charge", "0")):
        rows.append({"component": "bundles", "amount": parts.get("bundle_charge")})
    rounding = parts.get("rounding") or {}
    rows += [
        {"component": "fixed fees", "amount": parts.get("fixed_fees")},
        {"component": "disconnect fee", "amount": parts.get("disconnect_fee")},
        {"component": "surcharge", "detail": f"{parts.get('surcharge_pct')} %",
         "amount": parts.get("surcharge")},
        {"component": "minimum charge", "detail": "adjustment",
         "amount": parts.get("min_charge_adjustment")},
        {"component": "max cost", "detail": "adjustment",
         "amount": parts.get("max_cost_adjustment")},
        {"component": "unrounded", "amount": parts.get("unrounded")},
        {"component": "rounding",
         "detail": f"{rounding.get('method')}, {rounding.get('decimals')} decimals",
         "amount": rounding.get("adjustment")},
        {"component": "cost", "amount": answer.get("cost")},
    ]
    return rows


def render_quote(answer: Mapping[str, Any]) -> str:
    """A quote (C{POST /rating/quote}): the call and its cost, the breakdown
    table and, with a balance, the maximum and announced durations."""
    entry = answer.get("entry") or {}
    head = {
        "cost": _cost(answer),
        "destination": answer.get("destination"),
        "start": answer.get("start"),
        "duration": f"{answer.get('duration_s')} s (billable {answer.get('billable_s')} s, "
                    f"free {answer.get('free_s')} s)",
        "status": answer.get("status"),
        "entry": f"{entry.get('index')}: prefix {entry.get('prefix')}, rate "
                 f"{entry.get('rate')}, timing {entry.get('timing') or 'always'}, weight "
                 f"{entry.get('weight')}",
        "period boundary": answer.get("period_boundary"),
    }
    text = render_record(head) + "\n" + render_table(_quote_components(answer), (
        Column("component", "component"), Column("detail", "detail"),
        Column("amount", "amount", right=True)))
    if "max_duration_s" in answer:
        reason = f", {answer['reason']}" if answer.get("reason") else ""
        text += "\n" + render_record({
            "balance": answer.get("balance"),
            "max duration": f"{answer.get('max_duration_s')} s (limited by "
                            f"{answer.get('limited_by')}{reason})",
            "announced duration": f"{answer.get('announced_duration_s')} s",
            "may announce": answer.get("may_announce"),
            "max duration cost": answer.get("max_duration_cost"),
        })
    return text
