"""Caller-ID formats: an E.164 caller number written as a vendor wants it.

Each vendor connection has a L{CallerIdFormat}, stored as a small JSON
document (C{{"format": "national", "country": "GB", "default": "+44..."}}).
L{CallerIdFormat.format_number} writes the caller's E.164 number (or the
connection's default number when the caller has none usable) in that form;
L{CallerIdFormat.to_e164} reads a number written that way back, which is
also how caller numbers arriving from that vendor are normalised.  Pure
code on C{phonenumbers}; see C{docs/numbering.md}.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumberFormat

from plugins.trunking.numbering import NumberingError, is_e164

__all__ = ["CALLER_ID_FORMATS", "CallerIdError", "CallerIdFormat"]

_SEPARATORS = str.maketrans("", "", " \t-.()")


class CallerIdError(NumberingError):
    """A bad caller-ID format, or no number to send and no default."""


def _country_code(region: str) -> int | None:
    meta = PhoneMetadata.metadata_for_region(region)
    return meta.country_code if meta is not None else None


#: the caller-ID formats a vendor connection may ask for
CALLER_ID_FORMATS = ("e164", "e164_plus", "national", "international_00")

_FORMAT_KEYS = frozenset({"format", "country", "default"})


@dataclass(frozen=True)
class CallerIdFormat:
    """How one vendor connection wants caller numbers written.

    @ivar format: C{e164} (C{442079460000}), C{e164_plus} (C{+442079460000}),
        C{national} (C{02079460000}: numbers of C{country} in the national
        form libphonenumber knows, others with that country's international
        prefix) or C{international_00} (C{00442079460000}).
    @ivar country: the vendor's country (required for C{national}).
    @ivar default: the E.164 number sent when the caller has none usable.
    """

    format: str = "e164_plus"
    country: str | None = None
    default: str | None = None

    def __post_init__(self) -> None:
        """Check the format, the country and the default number."""
        if self.format not in CALLER_ID_FORMATS:
            raise CallerIdError("format", f"expected one of {', '.join(CALLER_ID_FORMATS)}")
        if self.country is not None and _country_code(self.country) is None:
            raise CallerIdError("country", f"{self.country!r} is not a known ISO 3166 region")
        if self.format == "national" and self.country is None:
            raise CallerIdError("country", "required for the national format")
        if self.default is not None and _usable(self.default) is None:
            raise CallerIdError("default", f"{self.default!r} is not an E.164 number")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CallerIdFormat:
        """Build from C{{"format": ..., "country": ..., "default": ...}}.

        @raise CallerIdError: naming the first bad or unknown key.
        """
        if not isinstance(data, Mapping):
            raise CallerIdError("caller_id", "expected a JSON object")
        for key in data:
            if key not in _FORMAT_KEYS:
                raise CallerIdError(str(key), "unknown key")
        for key in _FORMAT_KEYS:
            if data.get(key) is not None and not isinstance(data[key], str):
                raise CallerIdError(key, "expected a string")
        country = data.get("country")
        return cls(format=data.get("format", "e164_plus"),
                   country=country.upper() if country else None,
                   default=data.get("default"))

    def to_mapping(self) -> dict[str, str]:
        """The format as its JSON document."""
        out = {"format": self.format}
        if self.country is not None:
            out["country"] = self.country
        if self.default is not None:
            out["default"] = self.default
        return out

    def format_number(self, e164: str | None) -> str:
        """Write C{e164} as this vendor wants it; the default number when
        C{e164} is missing or not an E.164 number.

        @raise CallerIdError: when neither is usable.
        """
        number = _usable(e164) if e164 else None
        if number is None:
            if self.default is None:
                raise CallerIdError("default", "no caller number and no default to send")
            number = _usable(self.default)
            assert number is not None  # checked when built
        e164_text = phonenumbers.format_number(number, PhoneNumberFormat.E164)
        if self.format == "e164_plus":
            return e164_text
        if self.format == "e164":
            return e164_text[1:]
        if self.format == "international_00":
            return "00" + e164_text[1:]
        assert self.country is not None
        if number.country_code == _country_code(self.country):
            text = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
        else:
            text = phonenumbers.format_out_of_country_calling_number(number, self.country)
            if text.startswith("+"):  # a country whose prefix is only a pattern
                return "00" + e164_text[1:]
        return re.sub(r"\D", "", text)

    def to_e164(self, text: str) -> str | None:
        """Read a number written in this format (or with a C{+}) back to E.164;
        C{None} when it is not a possible number."""
        text = text.strip().translate(_SEPARATORS)
        if text.startswith("+"):
            candidate = text
        elif not text.isdigit():
            return None
        elif self.format in ("e164", "e164_plus"):
            candidate = "+" + text
        elif self.format == "international_00":
            candidate = "+" + text[2:] if text.startswith("00") else ""
        else:
            region = self.country if self.format == "national" else None
            try:
                number = phonenumbers.parse(text, region)
            except NumberParseException:
                return None
            candidate = phonenumbers.format_number(number, PhoneNumberFormat.E164)
        number = _usable(candidate)
        return phonenumbers.format_number(number, PhoneNumberFormat.E164) if number else None


def _usable(e164: str | None) -> phonenumbers.PhoneNumber | None:
    """The parsed number when C{e164} is a possible E.164 number."""
    if not e164 or not is_e164(e164):
        return None
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        return None
    return number if phonenumbers.is_possible_number(number) else None
