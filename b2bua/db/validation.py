"""Checking and converting provisioning input against the model.

L{validate} turns JSON-ish input (what a REST body or a CLI gives: decimal
and time values as strings, numbers, booleans, objects) into the Python
values the repositories store, following each L{Field}: its type, whether
it is required on create, writable, its pattern, maximum length, minimum
and choices.  Every bad field is reported at once in one
L{ValidationFailed}.  L{coerce_filters} does the same for list filters
(which arrive as query-string text), and L{to_json} turns a stored row back
into JSON-ready values.

Conversions, by field type:

  - C{decimal}: a decimal string (C{"0.05"}) or an integer; never a float,
    which could not be exact.  At most 20 digits before the point and 12
    after; stored exactly.
  - C{timestamp}: ISO 8601 text with a zone (C{Z} or C{+hh:mm}), or an aware
    C{datetime}; kept in UTC.
  - C{date}: C{YYYY-MM-DD}, or a C{date}.
  - C{int}, C{ref}: an integer or a string of digits (64-bit signed;
    refs are positive).
  - C{bool}: C{true}/C{false} (or those words as text).
  - C{text}, C{enum}: text without NUL characters.
  - C{json}: any JSON value (no NaN or infinity, no NUL in strings, nesting
    at most 64 deep), of the field's shape when it names one
    (L{b2bua.db.shapes}: an object, a list of networks, codecs or SIP codes).
"""

from __future__ import annotations

import copy
import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from b2bua.db.dialect import parse_timestamp
from b2bua.db.interfaces import ValidationFailed
from b2bua.db.model import Entity, Field
from b2bua.db.shapes import check_shape

__all__ = ["coerce_filters", "convert", "json_value", "to_json", "validate"]

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
DECIMAL_INTEGER_DIGITS = 20
DECIMAL_FRACTION_DIGITS = 12
JSON_DEPTH = 64

_DECIMAL = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")
_INTEGER = re.compile(r"^[+-]?[0-9]{1,19}$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    """The compiled form of a model pattern."""
    return re.compile(pattern)


def _integer(value: Any) -> int:
    """An int from an int or a string of digits."""
    if isinstance(value, bool):
        raise ValueError("must be an integer")
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        value = int(value.strip())
    if not isinstance(value, int):
        raise ValueError("must be an integer")
    if not INT_MIN <= value <= INT_MAX:
        raise ValueError("is out of range")
    return value


def _decimal(value: Any) -> Decimal:
    """An exact Decimal from a decimal string, an int or a Decimal."""
    if isinstance(value, bool | float):
        raise ValueError('must be a decimal string such as "0.05" (not a JSON number '
                         'with a fraction, which is inexact)')
    if isinstance(value, int):
        value = Decimal(value)
    elif isinstance(value, str):
        if not _DECIMAL.match(value.strip()):
            raise ValueError('must be a decimal string such as "0.05"')
        try:
            value = Decimal(value.strip())
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid text
            raise ValueError("must be a decimal string") from None
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValueError('must be a decimal string such as "0.05"')
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    fraction = max(0, -exponent)
    integer = max(0, len(digits) + exponent)
    if fraction > DECIMAL_FRACTION_DIGITS:
        raise ValueError(f"has more than {DECIMAL_FRACTION_DIGITS} digits after the point")
    if integer > DECIMAL_INTEGER_DIGITS:
        raise ValueError(f"has more than {DECIMAL_INTEGER_DIGITS} digits before the point")
    return Decimal(format(value, "f"))


def _timestamp(value: Any) -> datetime:
    """An aware UTC datetime from ISO 8601 text or an aware datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("needs a time zone (Z or +hh:mm)")
        return value.astimezone(UTC)
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 timestamp such as 2024-05-01T12:00:00Z")
    try:
        return parse_timestamp(value)
    except OverflowError:
        raise ValueError("is out of range") from None
    except ValueError as error:
        if "zone" in str(error):
            raise ValueError("needs a time zone (Z or +hh:mm)") from None
        raise ValueError("must be an ISO 8601 timestamp such as 2024-05-01T12:00:00Z") from None


def _date(value: Any) -> date:
    """A date from C{YYYY-MM-DD} text or a date."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError("must be a date such as 2024-05-01")


def _bool(value: Any) -> bool:
    """A bool from a bool or C{true}/C{false} text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError("must be true or false")


def _text(field: Field, value: Any) -> str:
    """Text within the field's length and pattern."""
    if not isinstance(value, str):
        raise ValueError("must be text")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if len(value) > field.maximum_length:
        raise ValueError(f"is longer than {field.maximum_length} characters")
    if field.pattern and not _compiled(field.pattern).fullmatch(value):
        raise ValueError(f"does not match {field.pattern}")
    return value


def json_value(value: Any, depth: int = 0) -> Any:
    """Check that C{value} is plain JSON (and return a deep copy of it).

    @raise ValueError: for anything JSON cannot hold exactly.
    """
    if depth > JSON_DEPTH:
        raise ValueError(f"is nested more than {JSON_DEPTH} levels deep")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must not contain NaN or infinity")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("must not contain NaN or infinity")
        return format(value, "f")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value
    if isinstance(value, list | tuple):
        return [json_value(v, depth + 1) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or "\x00" in k:
                raise ValueError("object keys must be text")
            out[k] = json_value(v, depth + 1)
        return out
    raise ValueError("must be a JSON value")


def convert(field: Field, value: Any) -> Any:
    """Convert one non-null input value for C{field}.

    @raise ValueError: with a message for the caller when it does not fit.
    """
    kind = field.type
    if kind in ("int", "id"):
        result: Any = _integer(value)
    elif kind == "ref":
        result = _integer(value)
        if result < 1:
            raise ValueError("must be a positive id")
    elif kind == "decimal":
        result = _decimal(value)
    elif kind == "bool":
        result = _bool(value)
    elif kind == "timestamp":
        result = _timestamp(value)
    elif kind == "date":
        result = _date(value)
    elif kind == "json":
        result = json_value(value)
        if field.shape is not None:
            result = check_shape(field.shape, result)
    elif kind == "enum":
        if not isinstance(value, str) or value not in field.choices:
            raise ValueError(f"must be one of {', '.join(field.choices)}")
        result = value
    else:
        result = _text(field, value)
    if field.minimum is not None and kind in ("int", "decimal") and result < field.minimum:
        raise ValueError(f"must be at least {field.minimum}")
    return result


def _nullable(field: Field) -> bool:
    """Whether C{null} is a value the field may hold."""
    return not field.required and field.default is None


def validate(entity: Entity, payload: Any, *, partial: bool) -> dict[str, Any]:
    """Check and convert the input for a create (C{partial=False}) or an update.

    On create, required fields must be present and missing fields with a
    default get it.  Unknown fields and fields that are not writable are
    errors; the entity's write-only fields (C{password}, C{pin}, ...) are
    accepted and returned converted (the repository turns them into what it
    stores).

    @return: field name -> Python value.
    @raise ValidationFailed: naming every bad field at once.
    """
    if not isinstance(payload, dict):
        raise ValidationFailed({"body": "must be an object"})
    fields = {f.name: f for f in entity.fields}
    secret = {f.name: f for f in entity.write_only}
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, value in payload.items():
        field = (secret.get(name) or fields.get(name)) if isinstance(name, str) else None
        if field is None:
            errors[str(name)] = "unknown field"
            continue
        if name in fields and not field.writable:
            errors[name] = "is read-only"
            continue
        if value is None:
            if _nullable(field) and name not in secret:
                values[name] = None
            else:
                errors[name] = "required" if field.required and not partial \
                    else "may not be null"
            continue
        try:
            values[name] = convert(field, value)
        except ValueError as error:
            errors[name] = str(error)
            continue
        if field.required and isinstance(values[name], str) and not values[name]:
            errors[name] = "must not be empty"
    if not partial:
        for field in (*entity.fields, *entity.write_only):
            if field.name in payload or not field.writable:
                continue
            if field.required:
                errors[field.name] = "required"
            elif field.default is not None:
                values[field.name] = convert(field, copy.deepcopy(field.default))
    if errors:
        raise ValidationFailed(dict(sorted(errors.items())))
    return values


def coerce_filters(entity: Entity, filters: dict[str, Any] | None) -> dict[str, Any]:
    """Check list filters: filterable fields only, values converted by type.

    A value of C{None} means "is null".  Patterns and minimums are not
    applied (a filter that matches nothing is not an error).

    @raise ValidationFailed: naming every bad filter.
    """
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for name, value in (filters or {}).items():
        try:
            field = entity.field(name)
        except (KeyError, TypeError):
            field = None
        if field is None or not field.filterable or not field.readable:
            errors[str(name)] = "is not a filter of this collection"
            continue
        if value is None:
            out[name] = None
            continue
        try:
            out[name] = convert(Field(field.name, field.type, choices=field.choices,
                                      maximum_length=max(field.maximum_length, 1024)), value)
        except ValueError as error:
            errors[name] = str(error)
    if errors:
        raise ValidationFailed(dict(sorted(errors.items())))
    return out


def _json_scalar(value: Any) -> Any:
    """One value as JSON: decimals as strings, times as ISO 8601 with C{Z}."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


def to_json(entity: Entity, row: dict[str, Any]) -> dict[str, Any]:
    """Return a stored row as JSON-ready values, without unreadable fields.

    Keys that are not fields of C{entity} (such as the C{key} shown once
    when an API key is created) pass through, converted the same way;
    write-only names never do.
    """
    hidden = {f.name for f in entity.fields if not f.readable}
    hidden.update(f.name for f in entity.write_only)
    return {name: _json_scalar(value) for name, value in row.items() if name not in hidden}
