"""The C{b2bua-admin} commands that go through the API, one function each.

Each command takes an L{Invocation} (the parsed arguments, the API client,
where to print) and either prints its result or raises an
L{b2bua.admin.client.AdminError}; L{b2bua.admin.cli} turns that into one
line on stderr and an exit status.  Extension numbers are checked against
the model (L{b2bua.db.model}) before anything is created, so a typo does
not leave half a customer behind; should the API refuse an extension
anyway, what was created is deleted again.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from b2bua.admin.client import AdminError, APIClient, APIError
from b2bua.admin.output import (
    COLUMNS,
    Column,
    paging_note,
    render_json,
    render_quote,
    render_record,
    render_table,
)
from b2bua.db.model import entity

__all__ = ["COMMANDS", "Extension", "Invocation", "UsageError", "plan_extensions",
           "read_json_file", "render_blend", "render_explanation"]

#: An extension number, as the model declares it.
_NUMBER = re.compile(entity("account").field("number").pattern or r"^[0-9*#+]{1,32}$")
#: The longest password the API accepts.
_PASSWORD_MAX = entity("account").write_only[0].maximum_length
#: The most extensions one C{customer create} makes (a guard against typos).
MAX_EXTENSIONS = 1000
#: Length and alphabet of generated SIP passwords (easy to type on a phone).
PASSWORD_LENGTH = 16
_ALPHABET = string.ascii_letters + string.digits
_DIGITS = re.compile(r"[0-9]+")


class UsageError(AdminError):
    """The command line itself is wrong (exit status 2)."""

    exit_code = 2


class Invocation(Protocol):
    """What a command is given: its arguments, stdin (C{rates upload -}), the API
    and the output."""

    args: argparse.Namespace
    stdin: BinaryIO

    @property
    def client(self) -> APIClient:
        """The API client (built on first use; needs a key)."""

    def emit(self, text: str, raw: Any) -> None:
        """Print C{text} for people, or C{raw} as JSON under C{--json}."""


# -- customers and their extensions ----------------------------------------------------


@dataclass(frozen=True)
class Extension:
    """An extension to create: its number, its SIP password, and whether that
    password was generated (and so must be shown)."""

    number: str
    password: str
    generated: bool


def _generate_password() -> str:
    """A random SIP password of L{PASSWORD_LENGTH} letters and digits."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(PASSWORD_LENGTH))


def _numbers_in(spec: str) -> list[str]:
    """The numbers of C{1000-1019,2000}: ranges keep the first number's width."""
    numbers: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        first, dash, last = part.partition("-")
        if not dash:
            numbers.append(part)
            continue
        if not (_DIGITS.fullmatch(first) and _DIGITS.fullmatch(last)):
            raise UsageError(f"--extensions {part!r}: a range is FIRST-LAST in digits "
                             "(1000-1019)")
        if int(last) < int(first) or len(last) != len(first):
            raise UsageError(f"--extensions {part!r}: LAST must not be below FIRST and "
                             "must have as many digits")
        if int(last) - int(first) >= MAX_EXTENSIONS:
            raise UsageError(f"--extensions {part!r}: more than {MAX_EXTENSIONS} extensions")
        numbers += [str(n).zfill(len(first)) for n in range(int(first), int(last) + 1)]
    return numbers


def plan_extensions(ranges: str | None, password: str | None,
                    pairs: list[str] | None,
                    generate: Callable[[], str] = _generate_password) -> list[Extension]:
    """The extensions asked for by C{--extensions}/C{--password} or C{--extension}.

    @param ranges: C{"1000-1019"} (comma-separated ranges and numbers).
    @param password: the one password of every extension in C{ranges}
        (generated per extension when C{None}).
    @param pairs: C{["1000:secret", "1001"]} (no password: generated).
    @raise UsageError: for a malformed, repeated or too long list.
    """
    if password is not None and ranges is None:
        raise UsageError("--password goes with --extensions (use --extension NUMBER:PASSWORD)")
    wanted: list[tuple[str, str | None]] = []
    if ranges is not None:
        wanted += [(number, password) for number in _numbers_in(ranges)]
    for pair in pairs or ():
        number, colon, secret = pair.partition(":")
        if colon and not secret:
            raise UsageError(f"--extension {pair!r}: the password after ':' is empty")
        wanted.append((number.strip(), secret if colon else None))
    if len(wanted) > MAX_EXTENSIONS:
        raise UsageError(f"at most {MAX_EXTENSIONS} extensions at once")
    seen: set[str] = set()
    plan = []
    for number, secret in wanted:
        if not _NUMBER.fullmatch(number):
            raise UsageError(f"extension {number!r}: not a valid number "
                             "(digits, *, # or +, at most 32)")
        if number in seen:
            raise UsageError(f"extension {number} is given twice")
        if secret is not None and len(secret) > _PASSWORD_MAX:
            raise UsageError(f"extension {number}: the password is longer than "
                             f"{_PASSWORD_MAX} characters")
        seen.add(number)
        plan.append(Extension(number, secret or generate(), secret is None))
    return plan


def resolve_customer(client: APIClient, text: str) -> int:
    """A customer's id from its id or its SIP domain."""
    if _DIGITS.fullmatch(text):
        return int(text)
    items = client.list_page("customers", limit=2, sip_domain=text).get("items", [])
    if not items:
        raise AdminError(f"customers: no customer with SIP domain {text!r}")
    return int(items[0]["id"])


def _undo(client: APIClient, customer: Mapping[str, Any], accounts: list[dict[str, Any]],
          number: str, error: AdminError) -> AdminError:
    """Delete a half-made customer; the error to report, saying what is left."""
    customer_id = customer.get("id")
    try:
        for account in reversed(accounts):
            client.delete("accounts", account["id"])
        client.delete("customers", customer_id)
    except AdminError:
        left = len(accounts)
        undone = AdminError(f"{error.message} (extension {number}); customer {customer_id} "
                            f"was left in place with {left} extension(s)", error.details)
    else:
        undone = AdminError(f"{error.message} (extension {number}); nothing was kept "
                            f"(customer {customer_id} was deleted again)", error.details)
    undone.exit_code = error.exit_code
    return undone


def customer_create(inv: Invocation) -> None:
    """C{customer create}: a customer and its extensions."""
    args = inv.args
    plan = plan_extensions(args.extensions, args.password, args.extension)
    values: dict[str, Any] = {"name": args.name, "sip_domain": args.domain,
                              "currency": args.currency.upper()}
    optional = {"billing_timezone": args.timezone, "credit_limit": args.credit_limit,
                "reseller_id": args.reseller}
    values.update({k: v for k, v in optional.items() if v is not None})
    client = inv.client
    customer = client.create("customers", values)
    accounts: list[dict[str, Any]] = []
    for extension in plan:
        try:
            row = client.create("accounts", {
                "customer_id": customer["id"], "kind": "extension",
                "number": extension.number, "sip_username": extension.number,
                "password": extension.password})
        except AdminError as error:
            raise _undo(client, customer, accounts, extension.number, error) from None
        accounts.append({**row, "password": extension.password} if extension.generated
                        else row)
    text = render_record(customer, "customers")
    generated = any(e.generated for e in plan)
    if accounts:
        columns = COLUMNS["accounts"][:3]
        if generated:
            columns += (Column("password", "password"),)
        text += "\n" + render_table(accounts, columns)
    if generated:
        text += "\nThe generated passwords are shown only this once: store them now.\n"
    inv.emit(text, {"customer": customer, "accounts": accounts})


def customer_list(inv: Invocation) -> None:
    """C{customer list}: one page of customers."""
    args = inv.args
    answer = inv.client.list_page("customers", limit=args.limit, offset=args.offset,
                                  name=args.name, sip_domain=args.domain,
                                  reseller_id=args.reseller, status=args.status)
    items = answer.get("items", [])
    inv.emit(render_table(items, COLUMNS["customers"], empty="no customers")
             + paging_note(answer, "customers"), answer)


def customer_show(inv: Invocation) -> None:
    """C{customer show}: a customer with its extensions and DIDs."""
    client = inv.client
    customer_id = resolve_customer(client, inv.args.customer)
    customer = client.get("customers", customer_id)
    accounts = client.list_all("accounts", customer_id=customer_id)
    dids = client.list_all("dids", customer_id=customer_id)
    text = (render_record(customer, "customers")
            + "\nExtensions\n" + render_table(accounts, COLUMNS["accounts"], empty="(none)")
            + "\nDIDs\n" + render_table(dids, COLUMNS["dids"], empty="(none)"))
    inv.emit(text, {"customer": customer, "accounts": accounts, "dids": dids})


def customer_delete(inv: Invocation) -> None:
    """C{customer delete}: remove a customer (the API refuses one still in use)."""
    client = inv.client
    customer_id = resolve_customer(client, inv.args.customer)
    client.delete("customers", customer_id)
    inv.emit(f"deleted customer {customer_id}\n", {"deleted": "customers",
                                                    "id": customer_id})


# -- DIDs ------------------------------------------------------------------------------


def did_add(inv: Invocation) -> None:
    """C{did add}: a DID of a customer, ringing one of its accounts."""
    args, client = inv.args, inv.client
    customer_id = resolve_customer(client, args.customer)
    target = ""
    if args.account is not None:
        account = client.get("accounts", args.account)
        if account.get("customer_id") != customer_id:
            raise AdminError(f"accounts/{args.account}: belongs to customer "
                             f"{account.get('customer_id')}, not {customer_id}")
        target = str(account["id"])
    elif args.extension is not None:
        items = client.list_page("accounts", limit=2, customer_id=customer_id,
                                 number=args.extension).get("items", [])
        if not items:
            raise AdminError(f"accounts: customer {customer_id} has no extension "
                             f"{args.extension}")
        target = str(items[0]["id"])
    did = client.create("dids", {"number": args.number, "customer_id": customer_id,
                                 "target_kind": "account", "target": target})
    inv.emit(render_record(did, "dids"), did)


def did_list(inv: Invocation) -> None:
    """C{did list}: one page of DIDs."""
    args, client = inv.args, inv.client
    customer_id = resolve_customer(client, args.customer) if args.customer else None
    answer = client.list_page("dids", limit=args.limit, offset=args.offset,
                              customer_id=customer_id)
    inv.emit(render_table(answer.get("items", []), COLUMNS["dids"], empty="no DIDs")
             + paging_note(answer, "DIDs"), answer)


def did_remove(inv: Invocation) -> None:
    """C{did remove}: delete a DID given by its number."""
    client = inv.client
    items = client.list_page("dids", limit=2, number=inv.args.number).get("items", [])
    if not items:
        raise AdminError(f"dids: no DID {inv.args.number}")
    client.delete("dids", items[0]["id"])
    inv.emit(f"removed DID {inv.args.number} (id {items[0]['id']})\n",
             {"deleted": "dids", "id": items[0]["id"]})


# -- rates, keys, calls ----------------------------------------------------------------


def rates_upload(inv: Invocation) -> None:
    """C{rates upload}: a CSV rate deck becomes a tariff."""
    args = inv.args
    try:
        data = inv.stdin.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as error:
        raise AdminError(f"cannot read {args.file}: {error.strerror or error}") from None
    if not data.strip():
        raise AdminError(f"{args.file}: the file is empty")
    try:
        tariff = inv.client.import_tariff(data, name=args.name, currency=args.currency.upper(),
                                          timezone=args.timezone, delimiter=args.delimiter)
    except APIError as error:
        if error.status == 422 and error.details:
            count = len(error.details)
            raise AdminError(f"{args.file}: refused, {count} bad row{'s' * (count != 1)}",
                             error.details) from None
        raise
    document = tariff.get("document")
    entries = document.get("entries") if isinstance(document, Mapping) else None
    summary = {"id": tariff.get("id"), "name": tariff.get("name"),
               "currency": tariff.get("currency"),
               "entries": len(entries) if isinstance(entries, list) else None,
               "created_at": tariff.get("created_at")}
    warnings = tariff.get("warnings") or []
    text = render_record(summary) + "".join(f"warning: {w}\n" for w in warnings)
    inv.emit(text, tariff)


#: Which option binds a key of each role, and to which field.
_KEY_BINDING = {"admin": None, "reseller": "reseller", "customer": "customer",
                "enduser": "account"}


def apikey_create(inv: Invocation) -> None:
    """C{apikey create}: a new API key, printed once."""
    args, role = inv.args, inv.args.role
    given = [name for name in ("reseller", "customer", "account")
             if getattr(args, name) is not None]
    needed = _KEY_BINDING[role]
    if needed is None and given:
        raise UsageError(f"an admin key is bound to nothing: drop --{given[0]}")
    if needed is not None and given != [needed]:
        raise UsageError(f"a {role} key needs --{needed} ID")
    values: dict[str, Any] = {"name": args.name, "role": role}
    client = inv.client
    if needed == "customer":
        values["customer_id"] = resolve_customer(client, args.customer)
    elif needed is not None:
        values[f"{needed}_id"] = int(getattr(args, needed))
    row = client.create("api_keys", values)
    key = row.get("key")
    text = render_record({k: v for k, v in row.items() if k != "key"}, "api_keys")
    if key:
        text += f"\nkey: {key}\nThe key is shown only this once: store it now.\n"
    inv.emit(text, row)


def apikey_list(inv: Invocation) -> None:
    """C{apikey list}: one page of API keys (never the keys themselves)."""
    args, client = inv.args, inv.client
    customer_id = resolve_customer(client, args.customer) if args.customer else None
    answer = client.list_page("api_keys", limit=args.limit, offset=args.offset,
                              role=args.role, customer_id=customer_id)
    inv.emit(render_table(answer.get("items", []), COLUMNS["api_keys"], empty="no API keys")
             + paging_note(answer, "API keys"), answer)


def apikey_revoke(inv: Invocation) -> None:
    """C{apikey revoke}: the key stops working at once."""
    row = inv.client.update("api_keys", inv.args.id, {"revoked": True})
    inv.emit(f"revoked API key {row.get('id', inv.args.id)} ({row.get('name', '')})\n", row)


def calls_list(inv: Invocation) -> None:
    """C{calls list}: call detail records, the newest first."""
    args, client = inv.args, inv.client
    customer_id = resolve_customer(client, args.customer) if args.customer else None
    answer = client.list_page("cdrs", limit=args.limit, offset=args.offset, order="-id",
                              customer_id=customer_id, account_id=args.account,
                              callee=args.callee, disposition=args.disposition)
    inv.emit(render_table(answer.get("items", []), COLUMNS["cdrs"], empty="no calls")
             + paging_note(answer, "calls"), answer)


# -- quotes ----------------------------------------------------------------------------


def _exact(value: Any) -> Any:
    """C{value} with every C{Decimal} (a JSON number with a fraction) as its
    decimal string, so the API receives the file's digits exactly."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list):
        return [_exact(v) for v in value]
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    return value


def _not_json(name: str) -> Any:
    """Refuse C{NaN} and C{Infinity}."""
    raise ValueError(f"{name} is not JSON")


def read_tariff_file(inv: Invocation, path: str) -> dict[str, Any]:
    """The tariff document in C{path} (C{-}: stdin), numbers read exactly
    (as L{rating.tariff.loads_tariff} reads them)."""
    try:
        data = inv.stdin.read() if path == "-" else Path(path).read_bytes()
    except OSError as error:
        raise AdminError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        document = json.loads(data.decode("utf-8"), parse_float=Decimal,
                              parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise AdminError(f"{path}: not a JSON tariff document: {reason}") from None
    if not isinstance(document, dict):
        raise AdminError(f"{path}: a tariff document is a JSON object")
    exact: dict[str, Any] = _exact(document)
    return exact


def quote(inv: Invocation) -> None:
    """C{quote}: the cost of one call, explained (C{POST /rating/quote})."""
    args = inv.args
    payload: dict[str, Any] = {"destination": args.destination, "start": args.start,
                               "duration_s": args.duration}
    if args.tariff is not None:
        payload["tariff_id"] = args.tariff
    else:
        payload["tariff"] = read_tariff_file(inv, args.tariff_file)
    if args.balance is not None:
        payload["balance"] = args.balance
    try:
        answer = inv.client.request("POST", "rating/quote", payload=payload, what="quote")
    except APIError as error:
        if error.status == 404 and args.tariff is not None:
            raise AdminError(f"tariffs/{args.tariff}: not found") from None
        raise
    inv.emit(render_quote(answer), answer)


# -- routing: explain and blend ---------------------------------------------------------


def read_json_file(inv: Invocation, path: str, what: str, kind: type = dict) -> Any:
    """The JSON value in C{path} (C{-}: stdin), numbers read exactly.

    @param what: what the file holds, for messages (C{"routing plan"}).
    @param kind: C{dict} or C{list}: what the file must hold.
    """
    try:
        data = inv.stdin.read() if path == "-" else Path(path).read_bytes()
    except OSError as error:
        raise AdminError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        value = json.loads(data.decode("utf-8"), parse_float=Decimal, parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise AdminError(f"{path}: not a JSON {what}: {reason}") from None
    if not isinstance(value, kind):
        shape = "object" if kind is dict else "list"
        raise AdminError(f"{path}: a {what} is a JSON {shape}")
    return _exact(value)


def _flag(value: Any) -> str:
    return "-" if value in (None, "") else str(value)


#: The columns of the ranked routes and of the connections left out.
_ROUTE_COLUMNS = (
    Column("#", "position", right=True),
    Column("connection", lambda r: f"{r.get('connection_id')} {r.get('connection') or ''}"
           .strip()),
    Column("vendor", lambda r: _flag(r.get("vendor"))),
    Column("plan prefix", "plan_prefix"), Column("weight", "weight", right=True),
    Column("matched", "matched_prefix"),
    Column("rate", lambda r: f"{(r.get('rate') or {}).get('price')}/"
                             f"{(r.get('rate') or {}).get('unit_s')} s"),
    Column("cost", "cost", right=True), Column("margin", "margin", right=True),
    Column("reason", "reason"),
)
_EXCLUDED_COLUMNS = (
    Column("connection", lambda r: f"{r.get('connection_id')} {r.get('connection') or ''}"
           .strip()),
    Column("vendor", lambda r: _flag(r.get("vendor"))),
    Column("reason", "reason"), Column("detail", "detail"),
)


def render_explanation(answer: Mapping[str, Any]) -> str:
    """An explanation (C{POST /routing/explain}): the call, the routes in
    order, and the connections left out with their reasons."""
    currency = f" {answer['currency']}" if answer.get("currency") else ""
    head: dict[str, Any] = {
        "number": answer.get("number"), "start": answer.get("start"),
        "strategy": answer.get("strategy"),
        "reference call": f"{answer.get('duration_s')} s"}
    if answer.get("customer_cost") is not None:
        head["customer cost"] = f"{answer['customer_cost']}{currency}"
    if answer.get("ceiling") is not None:
        head["profit ceiling"] = f"{answer['ceiling']}{currency}"
    text = render_record(head) + "\n"
    routes = answer.get("routes") or []
    if routes:
        text += render_table(routes, _ROUTE_COLUMNS)
    else:
        text += "no route: the call would be rejected\n"
    if answer.get("loss"):
        text += "warning: every route breaks the profit guarantee; the cheapest is kept " \
                "at a loss\n"
    excluded = answer.get("excluded") or []
    if excluded:
        text += "\nLeft out\n" + render_table(excluded, _EXCLUDED_COLUMNS)
    return text


def route_explain(inv: Invocation) -> None:
    """C{route-explain}: the ranked routes of one call (C{POST /routing/explain})."""
    args = inv.args
    payload: dict[str, Any] = {"number": args.number, "start": args.start}
    if args.plan is not None:
        payload["routing_plan_id"] = args.plan
    else:
        payload["plan"] = read_json_file(inv, args.plan_file, "routing plan")
    if args.connection:
        payload["connections"] = list(args.connection)
    elif args.connections_file is not None:
        payload["connections"] = read_json_file(inv, args.connections_file,
                                                "list of connections", list)
    if args.customer_tariff is not None:
        payload["customer_tariff_id"] = args.customer_tariff
    elif args.customer_tariff_file is not None:
        payload["customer_tariff"] = read_tariff_file(inv, args.customer_tariff_file)
    if args.duration is not None:
        payload["duration_s"] = args.duration
    if args.unavailable:
        payload["unavailable"] = list(args.unavailable)
    if args.max_cost is not None:
        payload["profit_guarantee"] = {"max_cost": args.max_cost}
    if args.seed is not None:
        payload["seed"] = args.seed
    try:
        answer = inv.client.request("POST", "routing/explain", payload=payload,
                                    what="route-explain")
    except APIError as error:
        if error.status == 404:
            raise AdminError("route-explain: a routing plan, connection or tariff given is "
                             "not found") from None
        raise
    inv.emit(render_explanation(answer), answer)


_DESTINATION_COLUMNS = (
    Column("prefix", "prefix"), Column("sell", "sell", right=True),
    Column("base", "base", right=True), Column("used", "used", right=True),
    Column("vendors (cheapest first)", lambda d: ", ".join(
        f"{v.get('vendor')} {v.get('per_minute')}" for v in d.get("vendors") or ())),
)


def render_blend(answer: Mapping[str, Any]) -> str:
    """A blend (C{POST /routing/blend}): the sell price of each prefix, what
    no vendor covers, and the saved tariff."""
    text = render_table(answer.get("destinations") or [], _DESTINATION_COLUMNS,
                        empty="no prefix is covered by any vendor")
    uncovered = answer.get("uncovered") or []
    if uncovered:
        text += f"uncovered ({len(uncovered)}): {', '.join(uncovered)}\n"
    short = answer.get("short") or []
    if short:
        text += f"fewer vendors than the depth ({len(short)}): {', '.join(short)}\n"
    tariff = answer.get("tariff")
    if isinstance(tariff, Mapping):
        text += f"saved as tariff {tariff.get('id')} ({tariff.get('name')}, " \
                f"{tariff.get('currency')})\n"
    return text


def blend_tariff(inv: Invocation) -> None:
    """C{blend}: a sales tariff from vendor tariffs (C{POST /routing/blend})."""
    args = inv.args
    vendors: list[dict[str, Any]] = [{"tariff_id": t} for t in args.tariff or ()]
    for path in args.tariff_file or ():
        name = "stdin" if path == "-" else Path(path).stem or path
        vendors.append({"tariff": read_tariff_file(inv, path), "name": name[:255]})
    if not vendors:
        raise UsageError("blend: give at least one --tariff ID or --tariff-file FILE.json")
    at = args.at or datetime.now(UTC).isoformat(timespec="seconds")
    payload: dict[str, Any] = {"vendors": vendors, "at": at, "depth": args.depth,
                               "method": args.method}
    options = {"margin_pct": args.margin_pct, "margin_abs": args.margin_abs,
               "min_sell": args.min_sell, "max_sell": args.max_sell,
               "min_markup_abs": args.min_markup, "timezone": args.timezone,
               "effective_from": args.effective_from}
    payload.update({k: v for k, v in options.items() if v is not None})
    if args.rounding is not None or args.decimals is not None:
        payload["rounding"] = {"method": args.rounding or "up",
                               "decimals": 4 if args.decimals is None else args.decimals}
    if args.prefixes_file is not None:
        payload["prefixes"] = [str(p) for p in read_json_file(
            inv, args.prefixes_file, "list of prefixes", list)]
    if args.save is not None:
        payload["save"] = {"name": args.save}
        if args.currency is not None:
            payload["save"]["currency"] = args.currency
    try:
        answer = inv.client.request("POST", "routing/blend", payload=payload, what="blend")
    except APIError as error:
        if error.status == 404:
            raise AdminError("blend: a --tariff given is not found") from None
        raise
    if args.output is not None:
        try:
            Path(args.output).write_text(render_json(answer.get("document")), encoding="utf-8")
        except OSError as error:
            raise AdminError(f"cannot write {args.output}: {error.strerror or error}") \
                from None
    inv.emit(render_blend(answer), answer)


#: The API commands by C{(group, action)}; C{action} is C{None} for a
#: command without actions (C{quote}).
COMMANDS: dict[tuple[str, str | None], Callable[[Invocation], None]] = {
    ("customer", "create"): customer_create,
    ("customer", "list"): customer_list,
    ("customer", "show"): customer_show,
    ("customer", "delete"): customer_delete,
    ("did", "add"): did_add,
    ("did", "list"): did_list,
    ("did", "remove"): did_remove,
    ("rates", "upload"): rates_upload,
    ("apikey", "create"): apikey_create,
    ("apikey", "list"): apikey_list,
    ("apikey", "revoke"): apikey_revoke,
    ("calls", "list"): calls_list,
    ("quote", None): quote,
    ("route-explain", None): route_explain,
    ("blend", None): blend_tariff,
}
