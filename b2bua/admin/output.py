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
from typing import Any

from b2bua.db.model import entity

__all__ = ["COLUMNS", "Column", "cell", "model_order", "paging_note", "render_json",
           "render_record", "render_table"]

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
