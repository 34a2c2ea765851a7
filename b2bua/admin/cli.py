"""C{b2bua-admin}: argument parsing and the entry point.

Global options (before or after the command)::

    --url URL        the switch's OAM address   (env B2BUA_URL, http://127.0.0.1:8080)
    --key KEY        an API key                 (env B2BUA_API_KEY, else ./var/admin-api-key)
    --json           print the API's JSON instead of tables
    --timeout SECS   per request                (10)

Commands::

    migrate [--database URL]                      (env B2BUA_DATABASE, sqlite:///var/b2bua.db)
    bootstrap [--database URL] [--name N]         (the first admin key, straight into the database)
    customer create --name N --domain D --currency C [--timezone Z] [--credit-limit X]
                    [--reseller ID] [--extensions 1000-1019 [--password P]]
                    [--extension NUMBER[:PASSWORD] ...]
    customer list [--name N] [--domain D] [--reseller ID] [--status S] [--limit] [--offset]
    customer show CUSTOMER          customer delete CUSTOMER
    did add NUMBER --customer CUSTOMER [--account ID | --extension NUMBER]
    did list [--customer CUSTOMER]  did remove NUMBER
    rates upload FILE.csv --name N --currency C [--timezone Z] [--delimiter D]
    apikey create --name N --role ROLE [--customer CUSTOMER | --reseller ID | --account ID]
    apikey list [--customer CUSTOMER] [--role ROLE]     apikey revoke ID
    calls list [--customer CUSTOMER] [--account ID] [--callee N] [--disposition D] (newest first)
    quote --tariff ID | --tariff-file FILE.json --destination D --start ISO --duration S
          [--balance X]                           the cost of one call, explained
    route-explain --number N --start ISO (--plan ID | --plan-file FILE.json)
          [--connection ID ... | --connections-file FILE.json]
          [--customer-tariff ID | --customer-tariff-file FILE.json] [--duration S]
          [--unavailable ID ...] [--max-cost event_cost|X] [--seed N]
                                                  the ranked routes of one call, explained
    blend (--tariff ID | --tariff-file FILE.json)... [--depth N] [--method M]
          [--margin-pct X] [--margin-abs X] [--min-sell X] [--max-sell X] [--min-markup X]
          [--rounding M] [--decimals N] [--prefixes-file FILE.json] [--timezone Z]
          [--at ISO] [--effective-from ISO] [--save NAME [--currency C]] [--output FILE.json]
                                                  a sales tariff blended from vendor tariffs

A CUSTOMER is its id or its SIP domain.  Exit status: 0 done, 1 refused
or failed, 2 bad command line (or no key), 3 the switch could not be
reached, 130 interrupted.  Every failure is one line on stderr (a refused
rate file adds one line per bad row), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, TextIO
from urllib.request import OpenerDirector
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from b2bua.admin.client import AdminError, APIClient
from b2bua.admin.commands import COMMANDS, UsageError
from b2bua.admin.migrate import Interrupted, MigrationReport, run_bootstrap, run_migrations
from b2bua.admin.output import render_json
from b2bua.db.database import redact_url
from b2bua.db.model import entity

__all__ = ["Console", "build_parser", "main"]

PROG = "b2bua-admin"
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_DATABASE = "sqlite:///var/b2bua.db"
#: Where the key is read from when neither --key nor B2BUA_API_KEY gives one.
KEY_FILE = "var/admin-api-key"
DEFAULT_TIMEOUT = 10.0
DEFAULT_LIMIT = 50
ROLES = entity("api_key").field("role").choices
STATUSES = entity("customer").field("status").choices


@dataclass
class Console:
    """Where the tool reads and writes, and what it runs with (tests swap these).

    @ivar migrator: runs the migrations of a database URL (the real one runs
        the global reactor, so only once per process).
    @ivar opener: the urllib opener for the API (C{None}: the default).
    """

    stdin: BinaryIO
    stdout: TextIO
    stderr: TextIO
    environ: Mapping[str, str]
    key_file: str = KEY_FILE
    migrator: Callable[[str], MigrationReport] = run_migrations
    opener: OpenerDirector | None = None

    @classmethod
    def system(cls) -> Console:
        """The process's own streams and environment."""
        return cls(sys.stdin.buffer, sys.stdout, sys.stderr, os.environ)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (a L{UsageError})."""

    def error(self, message: str) -> NoReturn:
        """Raise instead of printing the usage and exiting."""
        where = self.prog.removeprefix(PROG).strip()
        raise UsageError(f"{where + ': ' if where else ''}{message} "
                         f"(see '{self.prog} --help')")


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least C{minimum}."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value
    return parse


def _seconds(text: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _currency(text: str) -> str:
    """An argparse type: an ISO 4217 code (upper-cased)."""
    if len(text) != 3 or not text.isascii() or not text.isalpha():
        raise argparse.ArgumentTypeError(f"{text!r} is not a 3-letter currency code (USD)")
    return text.upper()


def _timezone(text: str) -> str:
    """An argparse type: an IANA time zone name."""
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not an IANA time zone "
                                         "(Europe/Paris, UTC)") from None
    return text


def _add_global(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The global options; below the top they only override what was given."""
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS
    group = parser.add_argument_group("global options")
    group.add_argument("--url", default=default(None), metavar="URL",
                       help=f"the switch's OAM address (env B2BUA_URL; {DEFAULT_URL})")
    group.add_argument("--key", default=default(None), metavar="KEY",
                       help=f"an API key (env B2BUA_API_KEY; else read ./{KEY_FILE})")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="print the API's JSON instead of tables")
    group.add_argument("--timeout", type=_seconds, default=default(None), metavar="SECS",
                       help=f"seconds allowed per request ({DEFAULT_TIMEOUT:g})")


def _paging(parser: argparse.ArgumentParser, limit: int = DEFAULT_LIMIT) -> None:
    """C{--limit} and C{--offset}."""
    parser.add_argument("--limit", type=_count(1), default=limit,
                        help=f"at most this many rows ({limit})")
    parser.add_argument("--offset", type=_count(0), default=0, help="skip this many rows (0)")


def _group(groups: Any, name: str, help_text: str) -> Any:
    """A command group (C{customer}) with its own sub-commands."""
    parser = groups.add_parser(name, help=help_text, description=help_text)
    _add_global(parser, top=False)
    return parser.add_subparsers(dest="action", metavar="ACTION", required=True)


def _leaf(actions: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """One command (C{customer create})."""
    parser = actions.add_parser(name, help=help_text, description=help_text)
    _add_global(parser, top=False)
    return parser


def _customer_commands(groups: Any) -> None:
    """C{customer create|list|show|delete}."""
    actions = _group(groups, "customer", "customers (tenants) and their extensions")
    create = _leaf(actions, "create", "create a customer and its extensions")
    create.add_argument("--name", required=True, help="the customer's name")
    create.add_argument("--domain", required=True, help="its SIP domain (also the realm)")
    create.add_argument("--currency", required=True, type=_currency, help="USD, EUR, ...")
    create.add_argument("--timezone", type=_timezone, help="IANA billing time zone (UTC)")
    create.add_argument("--credit-limit", metavar="AMOUNT", help="decimal amount (0)")
    create.add_argument("--reseller", type=_count(1), metavar="ID", help="owning reseller")
    create.add_argument("--extensions", metavar="RANGES",
                        help="extension numbers: 1000-1019 or 1000-1009,2000")
    create.add_argument("--password", help="the SIP password of every --extensions number "
                                           "(default: one generated per extension)")
    create.add_argument("--extension", action="append", metavar="NUMBER[:PASSWORD]",
                        help="one extension (repeatable); no password: one is generated")
    listing = _leaf(actions, "list", "list customers")
    listing.add_argument("--name")
    listing.add_argument("--domain", help="SIP domain")
    listing.add_argument("--reseller", type=_count(1), metavar="ID")
    listing.add_argument("--status", choices=STATUSES)
    _paging(listing)
    show = _leaf(actions, "show", "a customer with its extensions and DIDs")
    show.add_argument("customer", metavar="CUSTOMER", help="id or SIP domain")
    delete = _leaf(actions, "delete", "delete a customer")
    delete.add_argument("customer", metavar="CUSTOMER", help="id or SIP domain")


def _other_commands(groups: Any) -> None:
    """C{did}, C{rates}, C{apikey} and C{calls}."""
    actions = _group(groups, "did", "public numbers (DIDs)")
    add = _leaf(actions, "add", "add a DID ringing an account of a customer")
    add.add_argument("number", metavar="NUMBER", help="E.164 digits, optional +")
    add.add_argument("--customer", required=True, metavar="CUSTOMER", help="id or SIP domain")
    target = add.add_mutually_exclusive_group()
    target.add_argument("--account", type=_count(1), metavar="ID", help="the account's id")
    target.add_argument("--extension", metavar="NUMBER", help="the extension's number")
    listing = _leaf(actions, "list", "list DIDs")
    listing.add_argument("--customer", metavar="CUSTOMER", help="id or SIP domain")
    _paging(listing)
    remove = _leaf(actions, "remove", "delete a DID")
    remove.add_argument("number", metavar="NUMBER")

    actions = _group(groups, "rates", "tariffs (rate decks)")
    upload = _leaf(actions, "upload", "import a CSV rate deck as a new tariff")
    upload.add_argument("file", metavar="FILE.csv", help="the rate deck ('-': stdin)")
    upload.add_argument("--name", required=True, help="the tariff's name")
    upload.add_argument("--currency", required=True, type=_currency)
    upload.add_argument("--timezone", type=_timezone,
                        help="IANA zone of the tariff and its dates (UTC)")
    upload.add_argument("--delimiter", choices=("comma", "semicolon", "tab", "pipe"),
                        help="the cell separator (comma)")

    actions = _group(groups, "apikey", "API keys")
    create = _leaf(actions, "create", "create an API key (printed only once)")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument("--role", required=True, choices=ROLES)
    bound = create.add_mutually_exclusive_group()
    bound.add_argument("--customer", metavar="CUSTOMER", help="for a customer key")
    bound.add_argument("--reseller", type=_count(1), metavar="ID", help="for a reseller key")
    bound.add_argument("--account", type=_count(1), metavar="ID", help="for an enduser key")
    listing = _leaf(actions, "list", "list API keys")
    listing.add_argument("--customer", metavar="CUSTOMER")
    listing.add_argument("--role", choices=ROLES)
    _paging(listing)
    revoke = _leaf(actions, "revoke", "revoke an API key")
    revoke.add_argument("id", type=_count(1), metavar="ID")

    actions = _group(groups, "calls", "call detail records")
    calls = _leaf(actions, "list", "list calls (CDRs)")
    calls.add_argument("--customer", metavar="CUSTOMER", help="id or SIP domain")
    calls.add_argument("--account", type=_count(1), metavar="ID")
    calls.add_argument("--callee", metavar="NUMBER")
    calls.add_argument("--disposition")
    _paging(calls)


def _quote_command(groups: Any) -> None:
    """C{quote}: one command, no action (C{args.action} is C{None})."""
    text = "the cost of one call with a tariff, explained (POST /rating/quote)"
    quote = groups.add_parser("quote", help=text, description=text)
    _add_global(quote, top=False)
    quote.set_defaults(action=None)
    tariff = quote.add_mutually_exclusive_group(required=True)
    tariff.add_argument("--tariff", type=_count(1), metavar="ID", help="a stored tariff")
    tariff.add_argument("--tariff-file", metavar="FILE.json",
                        help="a tariff document (JSON; '-': stdin)")
    quote.add_argument("--destination", required=True, metavar="NUMBER",
                       help="the called number (digits, optional +)")
    quote.add_argument("--start", required=True, metavar="ISO",
                       help="the answer time with its offset (2024-05-14T17:59:40+02:00)")
    quote.add_argument("--duration", required=True, type=_count(0), metavar="SECS",
                       help="billable seconds")
    quote.add_argument("--balance", metavar="AMOUNT",
                       help="available credit: also show the maximum duration")


def _amount(text: str) -> str:
    """An argparse type: a non-negative decimal amount, kept as written."""
    if not re.fullmatch(r"[0-9]{1,9}(\.[0-9]{1,12})?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal amount (0.05)")
    return text


def _max_cost(text: str) -> str:
    """An argparse type: C{event_cost} or a decimal amount."""
    return text if text == "event_cost" else _amount(text)


def _routing_commands(groups: Any) -> None:
    """C{route-explain} and C{blend}: commands without actions."""
    text = "the ranked routes of one call, explained (POST /routing/explain)"
    explain = groups.add_parser("route-explain", help=text, description=text)
    _add_global(explain, top=False)
    explain.set_defaults(action=None)
    explain.add_argument("--number", required=True, metavar="NUMBER",
                         help="the dialled number (digits, optional +)")
    explain.add_argument("--start", required=True, metavar="ISO",
                         help="the setup time with its offset (2024-05-14T17:59:40+02:00)")
    plan = explain.add_mutually_exclusive_group(required=True)
    plan.add_argument("--plan", type=_count(1), metavar="ID", help="a stored routing plan")
    plan.add_argument("--plan-file", metavar="FILE.json",
                      help="a routing plan document (JSON; '-': stdin)")
    connections = explain.add_mutually_exclusive_group()
    connections.add_argument("--connection", type=_count(1), action="append", metavar="ID",
                             help="a stored connection to consider (repeatable; default: "
                                  "those the plan lists for the number)")
    connections.add_argument("--connections-file", metavar="FILE.json",
                             help="a JSON list of connection ids or inline connections")
    customer = explain.add_mutually_exclusive_group()
    customer.add_argument("--customer-tariff", type=_count(1), metavar="ID",
                          help="the customer's stored tariff (margins, profit guarantee)")
    customer.add_argument("--customer-tariff-file", metavar="FILE.json",
                          help="the customer's tariff document")
    explain.add_argument("--duration", type=_count(1), metavar="SECS",
                         help="the reference call's billable seconds (60)")
    explain.add_argument("--unavailable", type=_count(1), action="append", metavar="ID",
                         help="a connection that is down (repeatable)")
    explain.add_argument("--max-cost", type=_max_cost, metavar="event_cost|AMOUNT",
                         help="a profit guarantee: drop routes costing more")
    explain.add_argument("--seed", type=_count(0), metavar="N",
                         help="the random seed of the weighted strategy")

    text = "a sales tariff blended from vendor tariffs (POST /routing/blend)"
    blend = groups.add_parser("blend", help=text, description=text)
    _add_global(blend, top=False)
    blend.set_defaults(action=None)
    blend.add_argument("--tariff", type=_count(1), action="append", metavar="ID",
                       help="a stored vendor tariff (repeatable)")
    blend.add_argument("--tariff-file", action="append", metavar="FILE.json",
                       help="a vendor tariff document (repeatable; named by the file)")
    blend.add_argument("--depth", type=_count(1), default=1, metavar="N",
                       help="combine the N cheapest vendors (1)")
    blend.add_argument("--method", choices=("depth", "average", "weighted"), default="depth",
                       help="the N-th cheapest price (depth), or the average of the N")
    blend.add_argument("--margin-pct", type=_amount, metavar="PCT", help="margin in percent")
    blend.add_argument("--margin-abs", type=_amount, metavar="AMOUNT",
                       help="margin added per minute")
    blend.add_argument("--min-sell", type=_amount, metavar="AMOUNT")
    blend.add_argument("--max-sell", type=_amount, metavar="AMOUNT")
    blend.add_argument("--min-markup", type=_amount, metavar="AMOUNT",
                       help="never sell below cost plus this")
    blend.add_argument("--rounding", choices=("up", "down", "half_up", "half_even"),
                       help="rounding of the sell prices (up)")
    blend.add_argument("--decimals", type=int, choices=range(7), metavar="0-6",
                       help="decimals of the sell prices (4)")
    blend.add_argument("--prefixes-file", metavar="FILE.json",
                       help="the code deck: a JSON list of prefixes (default: every prefix "
                            "a vendor prices)")
    blend.add_argument("--timezone", type=_timezone, help="the sales tariff's zone (UTC)")
    blend.add_argument("--at", metavar="ISO", help="read the vendor rates at (default: now)")
    blend.add_argument("--effective-from", metavar="ISO",
                       help="the sales tariff's entries take effect then")
    blend.add_argument("--save", metavar="NAME", help="store the result as a new tariff")
    blend.add_argument("--currency", type=_currency, help="the saved tariff's currency "
                                                          "(default: the vendors')")
    blend.add_argument("--output", metavar="FILE.json",
                       help="also write the tariff document to this file")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line of C{b2bua-admin}."""
    parser = _Parser(prog=PROG, description="Operate a b2bua switch through its API.",
                     epilog="A CUSTOMER is its id or its SIP domain. See docs/admin.md.")
    _add_global(parser, top=True)
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    migrate = groups.add_parser("migrate", help="migrate the database (directly, not via "
                                                "the API)")
    _add_global(migrate, top=False)
    migrate.add_argument("--database", metavar="URL",
                         help=f"env B2BUA_DATABASE; {DEFAULT_DATABASE}")
    bootstrap = groups.add_parser(
        "bootstrap", help="create the first admin API key directly in the database")
    _add_global(bootstrap, top=False)
    bootstrap.add_argument("--database", metavar="URL",
                           help=f"env B2BUA_DATABASE; {DEFAULT_DATABASE}")
    bootstrap.add_argument("--name", default="bootstrap", help="the key's name")
    _customer_commands(groups)
    _other_commands(groups)
    _quote_command(groups)
    _routing_commands(groups)
    return parser


class _Invocation:
    """One run of an API command: its arguments, its client, its output."""

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.stdin = console.stdin
        self._console = console
        self._client: APIClient | None = None

    @property
    def client(self) -> APIClient:
        """The API client, with the key from C{--key}, the environment or the key file."""
        if self._client is None:
            environ = self._console.environ
            url = self.args.url or environ.get("B2BUA_URL") or DEFAULT_URL
            key = self.args.key or environ.get("B2BUA_API_KEY") or self._key_from_file()
            if not key:
                raise UsageError(f"no API key: give --key, set B2BUA_API_KEY or write one "
                                 f"to ./{self._console.key_file}")
            self._client = APIClient(url, key, timeout=self.args.timeout or DEFAULT_TIMEOUT,
                                     opener=self._console.opener)
        return self._client

    def _key_from_file(self) -> str | None:
        """The key in the key file, if there is one."""
        path = Path(self._console.key_file)
        try:
            return path.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            raise AdminError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}"
                             ) from None

    def emit(self, text: str, raw: Any) -> None:
        """Print C{text}, or C{raw} as JSON under C{--json}."""
        self._console.stdout.write(render_json(raw) if self.args.json else text)


def _database_reason(error: Exception) -> str:
    """The first line of a database error, without its class for known ones."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    if isinstance(error, ValueError | RuntimeError) or type(error).__name__ == "SchemaTooNew":
        return text
    return f"{type(error).__name__}: {text}"


def _migrate(args: argparse.Namespace, console: Console) -> None:
    """C{migrate}: run the migrations and print what was applied."""
    url = args.database or console.environ.get("B2BUA_DATABASE") or DEFAULT_DATABASE
    try:
        report = console.migrator(url)
    except Interrupted:
        raise AdminError("migrate: interrupted (nothing half-applied: each run is one "
                         "transaction)") from None
    except Exception as error:
        raise AdminError(f"migrate {redact_url(url)}: {_database_reason(error)}") from None
    console.stdout.write(render_json(report.as_json()) if args.json else report.as_text())


def _bootstrap(args: argparse.Namespace, console: Console) -> None:
    """C{bootstrap}: create an admin key in the database and print it once."""
    url = args.database or console.environ.get("B2BUA_DATABASE") or DEFAULT_DATABASE
    try:
        key = run_bootstrap(url, args.name)
    except Interrupted:
        raise AdminError("bootstrap: interrupted") from None
    except Exception as error:
        raise AdminError(f"bootstrap {redact_url(url)}: {_database_reason(error)}") from None
    if args.json:
        console.stdout.write(render_json({"key": key, "role": "admin", "name": args.name}))
    else:
        console.stdout.write(f"admin API key (shown once): {key}\n")


def _report(console: Console, error: AdminError) -> int:
    """Write C{error} as one line (and its detail lines); return its exit status."""
    console.stderr.write(f"{PROG}: {error.message}\n")
    for line in error.details:
        console.stderr.write(f"{line}\n")
    return error.exit_code


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    """Run one C{b2bua-admin} command line; return the exit status.

    @param argv: the arguments (default: C{sys.argv[1:]}).
    @param console: streams, environment and collaborators (default: the
        process's own).
    """
    console = console or Console.system()
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        with redirect_stdout(console.stdout), redirect_stderr(console.stderr):
            args = build_parser().parse_args(arguments)
        if args.group == "migrate":
            _migrate(args, console)
        elif args.group == "bootstrap":
            _bootstrap(args, console)
        else:
            COMMANDS[(args.group, args.action)](_Invocation(args, console))
        console.stdout.flush()
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    except AdminError as error:
        return _report(console, error)
    except KeyboardInterrupt:
        console.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        _silence_stdout(console)
        return 1
    except Exception as error:
        console.stderr.write(f"{PROG}: internal error: {type(error).__name__}: {error}\n")
        return 1
    return 0


def _silence_stdout(console: Console) -> None:
    """After the reader of our output went away, keep the interpreter quiet."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), console.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
