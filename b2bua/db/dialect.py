"""The two SQL dialects provisioning storage speaks: SQLite and PostgreSQL.

A L{Dialect} hides what differs between them from the repositories:

  - placeholders: SQL is written once with C{?} and rewritten to C{%s}
    for psycopg;
  - values: how each model type is stored (L{Dialect.to_db}) and read back
    (L{Dialect.from_db}).  PostgreSQL stores C{decimal} as NUMERIC, C{json}
    as JSONB and C{timestamp} as TIMESTAMPTZ; SQLite stores them as exact
    decimal TEXT, JSON TEXT and ISO 8601 TEXT in UTC
    (C{2024-05-01T12:00:00.000000Z}, so that text order is time order);
  - errors: which integrity error a driver exception is
    (L{Dialect.integrity_error}), so that the repositories can answer with
    L{Conflict} and the field at fault.

Identifiers are never quoted from input: they come from the model only.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

__all__ = ["POSTGRESQL", "SQLITE", "Dialect", "IntegrityProblem", "dialect_for_url",
           "format_timestamp", "parse_timestamp"]


class IntegrityProblem:
    """What an integrity error was about.

    @ivar kind: C{"unique"}, C{"foreign_key"} or C{"other"}.
    @ivar table: the table the constraint belongs to, when known.
    @ivar columns: the columns of a broken unique constraint, when known.
    @ivar constraint: the constraint name, when the driver tells it.
    """

    def __init__(self, kind: str, table: str | None = None,
                 columns: tuple[str, ...] = (), constraint: str | None = None) -> None:
        self.kind = kind
        self.table = table
        self.columns = columns
        self.constraint = constraint

    def __repr__(self) -> str:
        return (f"IntegrityProblem({self.kind!r}, table={self.table!r}, "
                f"columns={self.columns!r}, constraint={self.constraint!r})")


def format_timestamp(value: datetime) -> str:
    """Return C{value} in UTC as fixed-width ISO 8601 text ending in C{Z}.

    @raise ValueError: for a naive datetime.
    """
    if value.tzinfo is None:
        raise ValueError("a timestamp needs a time zone")
    utc = value.astimezone(UTC)
    return f"{utc.year:04d}" + utc.strftime("-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    """Parse stored or given ISO 8601 text into an aware UTC datetime.

    Accepts C{Z} or a numeric offset, a C{T} or a space between date and
    time, and any number of fraction digits up to six.

    @raise ValueError: for anything else, or a time without a zone.
    """
    value = datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        raise ValueError("a timestamp needs a time zone (Z or +hh:mm)")
    return value.astimezone(UTC)


class Dialect:
    """What one SQL dialect does differently.

    @ivar name: C{"sqlite"} or C{"postgresql"}.
    @ivar for_update: the suffix that locks selected rows until commit
        (empty for SQLite, whose write transactions lock the database).
    @ivar for_share: the suffix that keeps selected rows from changing.
    """

    name = ""
    for_update = ""
    for_share = ""

    def sql(self, text: str) -> str:
        """Return C{text} (written with C{?} placeholders) for this driver."""
        return text

    def to_db(self, type_: str, value: Any) -> Any:
        """Convert a Python value of model type C{type_} to a driver parameter."""
        raise NotImplementedError

    def from_db(self, type_: str, value: Any) -> Any:
        """Convert a value read from a column of model type C{type_}."""
        raise NotImplementedError

    def integrity_error(self, error: BaseException) -> IntegrityProblem | None:
        """Classify C{error}, or return C{None} if it is no integrity error."""
        raise NotImplementedError


class _SQLite(Dialect):
    """SQLite 3.35 or later (C{RETURNING}), through the C{sqlite3} module."""

    name = "sqlite"

    _UNIQUE = re.compile(r"UNIQUE constraint failed: (.+)$")

    def to_db(self, type_: str, value: Any) -> Any:
        """Decimals as exact text, JSON as text, times as ISO 8601 UTC text."""
        if value is None:
            return None
        if type_ == "decimal":
            return format(Decimal(value), "f")
        if type_ == "bool":
            return 1 if value else 0
        if type_ == "json":
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)
        if type_ == "timestamp":
            return format_timestamp(value)
        if type_ == "date":
            return value.isoformat()
        return value

    def from_db(self, type_: str, value: Any) -> Any:
        """The inverse of L{to_db}."""
        if value is None:
            return None
        if type_ == "decimal":
            return Decimal(str(value))
        if type_ == "bool":
            return bool(value)
        if type_ == "json":
            return json.loads(value)
        if type_ == "timestamp":
            return parse_timestamp(value)
        if type_ == "date":
            return date.fromisoformat(value)
        return value

    def integrity_error(self, error: BaseException) -> IntegrityProblem | None:
        """Read the constraint from the C{sqlite3.IntegrityError} message."""
        import sqlite3

        if not isinstance(error, sqlite3.IntegrityError):
            return None
        message = str(error)
        match = self._UNIQUE.search(message)
        if match:
            qualified = [c.strip() for c in match.group(1).split(",")]
            table = qualified[0].split(".")[0] if qualified else None
            columns = tuple(c.split(".", 1)[-1] for c in qualified)
            return IntegrityProblem("unique", table, columns)
        if "FOREIGN KEY" in message:
            return IntegrityProblem("foreign_key")
        return IntegrityProblem("other")


class _PostgreSQL(Dialect):
    """PostgreSQL through psycopg 3 (imported only when used)."""

    name = "postgresql"
    for_update = " FOR UPDATE"
    for_share = " FOR SHARE"

    def sql(self, text: str) -> str:
        """Rewrite C{?} placeholders to C{%s} (and escape literal C{%})."""
        return _pyformat(text)

    def to_db(self, type_: str, value: Any) -> Any:
        """JSON is wrapped for JSONB; the other types adapt natively."""
        if value is None:
            return None
        if type_ == "json":
            from psycopg.types.json import Jsonb

            return Jsonb(value)
        if type_ == "timestamp" and value.tzinfo is None:
            raise ValueError("a timestamp needs a time zone")
        return value

    def from_db(self, type_: str, value: Any) -> Any:
        """Timestamps come back in UTC; the other types are already Python."""
        if value is None:
            return None
        if type_ == "timestamp":
            return value.astimezone(UTC)
        if type_ == "decimal" and not isinstance(value, Decimal):
            return Decimal(str(value))
        return value

    def integrity_error(self, error: BaseException) -> IntegrityProblem | None:
        """Read the SQLSTATE and the constraint name from psycopg's diagnostics."""
        state = getattr(error, "sqlstate", None)
        if state is None or not state.startswith("23"):
            return None
        diag = error.diag  # type: ignore[attr-defined]
        table = diag.table_name
        constraint = diag.constraint_name
        if state == "23505":
            return IntegrityProblem("unique", table, constraint=constraint)
        if state == "23503":
            return IntegrityProblem("foreign_key", table, constraint=constraint)
        return IntegrityProblem("other", table, constraint=constraint)


@lru_cache(maxsize=512)
def _pyformat(text: str) -> str:
    """C{?} to C{%s}, C{%} to C{%%} (the SQL comes from code, never input)."""
    return text.replace("%", "%%").replace("?", "%s")


SQLITE: Dialect = _SQLite()
POSTGRESQL: Dialect = _PostgreSQL()


def dialect_for_url(url: str) -> Dialect:
    """Return the dialect of a C{sqlite:///} or C{postgresql://} URL.

    @raise ValueError: for any other scheme.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return SQLITE
    if scheme in ("postgresql", "postgres"):
        return POSTGRESQL
    raise ValueError(f"unsupported database URL scheme {scheme!r} "
                     "(use sqlite:///PATH or postgresql://...)")
