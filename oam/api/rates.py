"""Tariff uploads: rate decks as CSV, tariff documents as JSON.

    POST /api/v1/tariffs/import?name=...&currency=...[&timezone=...]

with C{Content-Type: text/csv} (a rate deck, one row per prefix: see
L{rating.csv_rates}) or C{application/json} (a tariff document, rating.md
section 6).  The file is checked whole by the rating package; any bad row
rejects it and nothing is stored:

    422 {"error": "invalid tariff",
         "rows": [{"row": 3, "column": "price", "message": "..."}, ...]}

(the CSV header is row 1; problems of a JSON document, or of the tariff as a
whole, have C{"row": null} and the document's key path as C{"column"}).
Success stores the tariff and answers 201 with the row, plus the loader's
C{warnings} (coverage gaps, rating.md 1.1).

The same loader checks the C{document} of C{POST}/C{PATCH /api/v1/tariffs}
(L{tariff_body_check}).

Only these two functions know the rating package's API (L{load_document},
L{import_csv}); if it changes, they change.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from twisted.web.iweb import IRequest

from b2bua.db.interfaces import Scope, ValidationFailed
from b2bua.db.model import entity
from b2bua.db.scoping import may_write
from b2bua.db.validation import to_json, validate
from oam.api.collection import call_repository
from oam.api.endpoint import ApiContext, ApiEndpoint, parse_json, query, read_body
from oam.api.problems import ApiError, Reply, forbidden, invalid, malformed
from rating.csv_rates import import_rates_csv
from rating.tariff import PERIOD_BOUNDARIES, ROUNDING_METHODS, TariffError, load_tariff

__all__ = [
    "CSV_PARAMETERS",
    "MAX_UPLOAD",
    "ImportResource",
    "Problem",
    "import_csv",
    "load_document",
    "tariff_body_check",
]

#: The largest upload read, in bytes.
MAX_UPLOAD = 8 * 1024 * 1024
#: Query parameters that only a CSV upload takes, with their descriptions.
CSV_PARAMETERS = {
    "timezone": "IANA zone of the tariff (and of effective dates without one); default UTC",
    "period_boundary": "start (default) or split (rating.md 1.5)",
    "rounding_method": "the tariff's default rounding: up (default), down, half_up, half_even",
    "rounding_decimals": "decimals of that rounding, 0 to 6 (default 4)",
    "strict_blocks": "true: the first interval must be a multiple of the next (A2B decks)",
    "delimiter": "the cell separator: comma (default), semicolon, tab or pipe",
}
_DELIMITERS = {"comma": ",", "semicolon": ";", "tab": "\t", "pipe": "|"}
_CSV_PROBLEM = re.compile(r"^row (?P<row>[0-9]+)(?:, column (?P<column>.+?))?: (?P<message>.*)$",
                          re.DOTALL)
_TARIFF = entity("tariff")


@dataclass(frozen=True)
class Problem:
    """One reason a tariff was refused: where (CSV row and column, or the
    document's key path as C{column}) and why."""

    row: int | None
    column: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        """The problem as the API writes it."""
        return {"row": self.row, "column": self.column, "message": self.message}


#: What a date the loader cannot convert to UTC (year 1 or 9999 with an
#: offset) is reported as.
_OUT_OF_RANGE = Problem(None, None, "a date or time is out of range")


class Rejected(Exception):
    """The rating package refused a tariff.  @ivar problems: every L{Problem}."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


def _problem(text: str) -> Problem:
    """Split the loader's C{"<where>: <message>"} into a L{Problem}."""
    match = _CSV_PROBLEM.match(text)
    if match is not None:
        return Problem(int(match["row"]), match["column"], match["message"])
    where, sep, message = text.partition(": ")
    if not sep:
        return Problem(None, None, text)
    if where.startswith("row ") and where[4:].isdigit():
        return Problem(int(where[4:]), None, message)
    return Problem(None, where or "(document)", message)


def load_document(document: Any) -> list[str]:
    """Check a tariff document with the rating loader.

    @return: the loader's warnings.
    @raise Rejected: listing every problem.
    """
    try:
        tariff = load_tariff(document)
    except TariffError as error:
        raise Rejected([_problem(p) for p in error.problems]) from None
    except OverflowError:
        raise Rejected([_OUT_OF_RANGE]) from None
    return list(tariff.warnings)


def import_csv(text: str, *, timezone: str, period_boundary: str,
               rounding: dict[str, Any], strict_blocks: bool,
               delimiter: str) -> tuple[dict[str, Any], list[str]]:
    """Turn a CSV rate deck into a tariff document with the rating package.

    @return: the document and the loader's warnings.
    @raise Rejected: listing every problem of every row.
    @raise ApiError: 400 when the text is not CSV at all.
    """
    try:
        deck = import_rates_csv(text, timezone=timezone, rounding=rounding,
                                period_boundary=period_boundary, strict_blocks=strict_blocks,
                                delimiter=delimiter)
    except TariffError as error:
        raise Rejected([_problem(p) for p in error.problems]) from None
    except csv.Error as error:
        raise malformed("CSV", str(error)[:200]) from None
    except OverflowError:
        raise Rejected([_OUT_OF_RANGE]) from None
    return deck.document, list(deck.tariff.warnings)


def _summary(problems: list[Problem]) -> str:
    """A one-line account of C{problems} for the C{fields} member."""
    first = problems[0]
    where = f"{first.column}: " if first.column else ""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{where}{first.message}{more}"


def tariff_body_check(body: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """The L{oam.api.collection.BodyCheck} of tariffs: the rating loader
    checks C{document}."""
    if "document" not in body or body["document"] is None:
        return {}, {}
    try:
        load_document(body["document"])
    except Rejected as rejected:
        return ({"document": _summary(rejected.problems)},
                {"rows": [p.to_json() for p in rejected.problems]})
    return {}, {}


def _options(params: dict[str, str], csv_upload: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """The CSV import options among C{params}, and the bad ones."""
    errors: dict[str, str] = {}
    if not csv_upload:
        for name in CSV_PARAMETERS:
            if name in params:
                errors[name] = "only for text/csv uploads"
        return {}, errors
    timezone = params.get("timezone", "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        errors["timezone"] = "must be an IANA time zone such as Europe/Paris"
    boundary = params.get("period_boundary", "start")
    if boundary not in PERIOD_BOUNDARIES:
        errors["period_boundary"] = f"must be one of {', '.join(PERIOD_BOUNDARIES)}"
    method = params.get("rounding_method", "up")
    if method not in ROUNDING_METHODS:
        errors["rounding_method"] = f"must be one of {', '.join(ROUNDING_METHODS)}"
    decimals = params.get("rounding_decimals", "4")
    if decimals not in tuple("0123456"):
        errors["rounding_decimals"] = "must be an integer from 0 to 6"
        decimals = "4"
    strict = params.get("strict_blocks", "false")
    if strict not in ("true", "false"):
        errors["strict_blocks"] = "must be true or false"
    delimiter = params.get("delimiter", "comma")
    if delimiter not in _DELIMITERS:
        errors["delimiter"] = f"must be one of {', '.join(_DELIMITERS)}"
    options = {"timezone": timezone, "period_boundary": boundary,
               "rounding": {"method": method, "decimals": int(decimals)},
               "strict_blocks": strict == "true", "delimiter": _DELIMITERS.get(delimiter, ",")}
    return options, errors


class ImportResource(ApiEndpoint):
    """C{POST /api/v1/tariffs/import}: store a tariff from a CSV deck or a
    JSON document, whole or not at all."""

    isLeaf = True
    methods = ("POST",)

    def __init__(self, api: ApiContext, repository: Any) -> None:
        super().__init__(api)
        self.repository = repository

    async def handle_post(self, request: IRequest, scope: Scope) -> Reply:
        """Check the parameters and the file; store the tariff; 201."""
        if not may_write(_TARIFF, scope):
            raise forbidden()
        kind, text = read_body(request, ("text/csv", "application/json"), MAX_UPLOAD)
        params = query(request)
        csv_upload = kind == "text/csv"
        errors: dict[str, str] = {}
        for name in params:
            if name not in ("name", "currency", *CSV_PARAMETERS):
                errors[name] = "unknown parameter"
        options, bad = _options(params, csv_upload)
        errors.update(bad)
        try:
            validate(_TARIFF, {"name": params.get("name"), "currency": params.get("currency"),
                               "document": {}}, partial=False)
        except ValidationFailed as failure:
            errors.update(failure.errors)
        if errors:
            raise invalid(errors)
        try:
            if csv_upload:
                document, warnings = import_csv(text, **options)
            else:
                document = parse_json(text)
                warnings = load_document(document)
        except Rejected as rejected:
            raise ApiError(422, {"error": "invalid tariff",
                                 "rows": [p.to_json() for p in rejected.problems]}) from None
        values = {"name": params["name"], "currency": params["currency"], "document": document}
        row = await call_repository(_TARIFF, self.repository.create(values, scope), set(values))
        location = f"{self.api.base}/{_TARIFF.collection}/{row['id']}"
        return Reply(201, {**to_json(_TARIFF, row), "warnings": warnings},
                     {b"Location": location.encode("ascii")})
