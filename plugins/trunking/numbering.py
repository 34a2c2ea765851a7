"""Dial plans: what users dial, normalised to E.164.

A customer's L{DialPlan} says how its users dial: the country they dial in,
which numbers are extensions, the outside-line prefix, the national and
international prefixes, the emergency and service numbers.
L{DialPlan.classify} turns what a phone sent (digits, C{+}, RFC 3966 visual
separators, a C{tel:} URI or a SIP user part with C{;phone-context=}) into a
L{Dialled}: an extension, an E.164 number, an emergency or service number,
or invalid with a reason.  (Caller numbers as each vendor wants them
written are in L{plugins.trunking.callerid}.)

The numbering facts (prefixes, emergency numbers, number ranges) come from
C{phonenumbers}, the port of Google's libphonenumber.  Everything here is
pure: no I/O, no clock, safe on the per-message path.  See
C{docs/numbering.md} for the document format and the rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumberFormat
from phonenumbers import ValidationResult as _Possible

__all__ = [
    "DialPlan",
    "DialPlanError",
    "Dialled",
    "Kind",
    "NumberingError",
    "is_e164",
]

#: E.164: a "+", a country code not starting with 0, 6 to 15 digits (the
#: shortest numbers in service, such as Niue's, have 7).
_E164 = re.compile(r"\+[1-9]\d{5,14}\Z")
#: what a dial string may hold once visual separators are gone
_DIAL = re.compile(r"[0-9*#]+\Z")
#: RFC 3966 visual separators, plus the spaces that address books add
_SEPARATORS = str.maketrans("", "", " \t-.()")
_CODE = re.compile(r"[0-9*#]{1,16}\Z")
_PREFIX = re.compile(r"[0-9]{1,6}\Z")


class NumberingError(ValueError):
    """A bad numbering document; C{key} names the offending key.

    @ivar key: the key (with an index for list entries: C{emergency[2]}).
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


class DialPlanError(NumberingError):
    """A bad dial plan document (raised by L{DialPlan.from_mapping})."""


def is_e164(text: str) -> bool:
    """True when C{text} has the shape of an E.164 number (C{+} and digits)."""
    return _E164.match(text) is not None


class Kind(StrEnum):
    """What a dialled string turned out to be."""

    EXTENSION = "extension"
    E164 = "e164"
    EMERGENCY = "emergency"
    SERVICE = "service"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class Dialled:
    """The classification of one dialled string.

    @ivar kind: the L{Kind}.
    @ivar number: E.164 with C{+} for L{Kind.E164}; the dialled digits
        (outside-line prefix removed) for the other kinds.
    @ivar reason: why it is invalid (C{None} otherwise).
    @ivar region: the ISO region the number belongs to (the destination's
        for E.164, the region it was dialled in for emergency and service
        numbers); C{None} for extensions and invalid input.
    """

    kind: Kind
    number: str
    reason: str | None = None
    region: str | None = None

    @classmethod
    def invalid(cls, number: str, reason: str) -> Dialled:
        """An invalid result with its reason."""
        return cls(Kind.INVALID, number, reason)


class _Unusable(Exception):
    """Input that cannot be a dial string at all (internal)."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(reason)
        self.text = text
        self.reason = reason


def _split_dialled(dialled: str) -> tuple[str, str | None]:
    """Split what a phone sent into (dial string, phone-context).

    Accepts plain digits, a C{tel:} URI, a C{sip:}/C{sips:} URI or its user
    part; %-escapes are decoded, visual separators removed, a C{(0)} after
    a C{+} country code dropped.

    @raise _Unusable: on characters that cannot be dialled.
    """
    text = dialled.strip()
    lower = text[:5].lower()
    if lower.startswith(("sip:", "sips:")):
        user, at, _host = text.partition(":")[2].rpartition("@")
        if not at or not user:
            raise _Unusable(text, "a SIP URI without a user part")
        text = user.partition(":")[0]
    elif lower.startswith("tel:"):
        text = text[4:]
    text = unquote(text)
    number, _, params = text.partition(";")
    context = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "phone-context":
            context = value.strip()
    if number.startswith("+") and "(0)" in number:
        number = number.replace("(0)", "", 1)
    number = number.translate(_SEPARATORS)
    body = number[1:] if number.startswith("+") else number
    if not body:
        raise _Unusable(number, "nothing dialled")
    if _DIAL.match(body) is None:
        bad = next(c for c in body if c not in "0123456789*#")
        raise _Unusable(number, f"cannot dial {bad!r}")
    if number.startswith("+") and not body.isdigit():
        raise _Unusable(number, "a number after '+' has digits only")
    return number, context


@lru_cache(maxsize=512)
def _metadata(region: str) -> PhoneMetadata | None:
    return PhoneMetadata.metadata_for_region(region)


@lru_cache(maxsize=512)
def _short_patterns(region: str) -> tuple[re.Pattern[str] | None, ...]:
    """(general, short code, emergency) patterns of a region's short numbers."""
    meta = PhoneMetadata.short_metadata_for_region(region)
    if meta is None:
        return (None, None, None)

    def compile_(desc: Any) -> re.Pattern[str] | None:
        pattern = getattr(desc, "national_number_pattern", None)
        return re.compile(f"(?:{pattern})\\Z") if pattern else None

    return compile_(meta.general_desc), compile_(meta.short_code), compile_(meta.emergency)


def _country_emergency(region: str, digits: str) -> bool:
    """True when libphonenumber lists C{digits} as an emergency number of C{region}."""
    pattern = _short_patterns(region)[2]
    return pattern is not None and pattern.match(digits) is not None


def _country_short_number(region: str, digits: str) -> bool:
    """True when C{digits} is a short number (directory, operator...) of C{region}."""
    general, short, _ = _short_patterns(region)
    return (general is not None and short is not None and general.match(digits) is not None
            and short.match(digits) is not None)


def _default_international(meta: PhoneMetadata) -> tuple[str, ...]:
    """The prefix a user dials before a country code, from the metadata.

    The preferred prefix when there is one, the prefix itself when it is
    plain digits, else its pattern (Brazil's carrier-selection prefixes).
    """
    if meta.preferred_international_prefix:
        return (meta.preferred_international_prefix,)
    prefix = meta.international_prefix or ""
    return (prefix,) if prefix else ()


_REASONS = {
    _Possible.TOO_SHORT: "too short",
    _Possible.TOO_LONG: "too long",
    _Possible.INVALID_LENGTH: "wrong length",
    _Possible.INVALID_COUNTRY_CODE: "unknown country code",
    _Possible.IS_POSSIBLE_LOCAL_ONLY: "incomplete",
}

_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_LONG: "too long",
}

_VALIDATIONS = ("valid", "possible")


def _e164(digits: str, validation: str) -> Dialled:
    """Check C{+digits} against the numbering plans: a L{Kind.E164} or invalid."""
    text = "+" + digits
    if len(digits) > 17:
        return Dialled.invalid(text, "too long")
    try:
        number = phonenumbers.parse(text, None)
    except NumberParseException as exc:
        return Dialled.invalid(text, _PARSE_REASONS.get(exc.error_type, "not a number"))
    possible = phonenumbers.is_possible_number_with_reason(number)
    region = phonenumbers.region_code_for_number(number)
    where = f" for +{number.country_code}" if region else ""
    if possible != _Possible.IS_POSSIBLE:
        return Dialled.invalid(text, _REASONS.get(possible, "not possible") + where)
    if validation == "valid" and not phonenumbers.is_valid_number(number):
        return Dialled.invalid(text, f"no such number range{where}")
    return Dialled(Kind.E164, phonenumbers.format_number(number, PhoneNumberFormat.E164),
                   region=region)


def _region_of(digits: str) -> tuple[str, int] | None:
    """(region, country code) of a digit string that starts with a country code."""
    for size in (1, 2, 3):
        if len(digits) < size:
            break
        code = int(digits[:size])
        region = phonenumbers.region_code_for_country_code(code)
        if region != "ZZ":
            return region, code
    return None


def _strings(data: Mapping[str, Any], key: str, pattern: re.Pattern[str],
             what: str) -> tuple[str, ...]:
    """A string or list of strings matching C{pattern}, or C{()} when absent."""
    value = data.get(key)
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise DialPlanError(key, f"expected a list of {what}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or pattern.match(item) is None:
            raise DialPlanError(f"{key}[{i}]", f"expected {what}, got {item!r}")
        out.append(item)
    return tuple(out)


_PLAN_KEYS = frozenset({
    "country", "extension_lengths", "extension_pattern", "outside_line",
    "outside_line_required", "national_prefix", "international_prefix", "emergency",
    "service_codes", "service_prefixes", "short_numbers", "validation",
})


@dataclass(frozen=True)
class DialPlan:
    """How one customer's users dial.  See C{docs/numbering.md}.

    Build one with L{from_mapping} from the document the operator stores;
    constructing it directly fills the same defaults and runs the same checks.
    C{national_prefix=None} and an empty C{international_prefixes} mean
    "the country's, from libphonenumber"; C{national_prefix=""} means none.

    @ivar country: ISO 3166 region the users dial in (C{GB}, C{US}, C{DE}).
    @ivar extension_lengths: lengths of internal extension numbers.
    @ivar extension_pattern: a regular expression an extension matches
        whole (either this or a length makes a digit string an extension).
    @ivar outside_line: the prefix for an outside line (C{"9"}), if any.
    @ivar outside_line_required: refuse external numbers dialled without it
        (a C{+} number is always accepted).
    @ivar national_prefix: the trunk prefix (C{"0"}, C{"1"}), C{""} for none.
    @ivar international_prefixes: what is dialled before a country code.
    @ivar emergency: emergency numbers added to the country's own.
    @ivar service_codes: feature and service codes matched exactly.
    @ivar service_prefixes: codes that take digits after them (C{*72}).
    @ivar short_numbers: treat the country's short numbers (directory,
        operator, helplines) as service numbers.
    @ivar validation: C{"valid"} (the number must fall in an allocated range)
        or C{"possible"} (its length must fit the country).
    """

    country: str
    extension_lengths: tuple[int, ...] = ()
    extension_pattern: str | None = None
    outside_line: str | None = None
    outside_line_required: bool = False
    national_prefix: str | None = None
    international_prefixes: tuple[str, ...] = ()
    emergency: tuple[str, ...] = ()
    service_codes: tuple[str, ...] = ()
    service_prefixes: tuple[str, ...] = ()
    short_numbers: bool = True
    validation: str = "valid"
    country_code: int = field(init=False, repr=False, compare=False)
    _extension: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _international: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Fill the country's defaults and check the plan."""
        meta = _metadata(self.country) if isinstance(self.country, str) else None
        if meta is None:
            raise DialPlanError("country", f"{self.country!r} is not a known ISO 3166 region "
                                "(such as GB, US, DE, FR)")
        set_ = object.__setattr__
        set_(self, "country_code", meta.country_code)
        if self.national_prefix is None:
            set_(self, "national_prefix", meta.national_prefix or "")
        elif self.national_prefix and _PREFIX.match(self.national_prefix) is None:
            raise DialPlanError("national_prefix", "expected digits or \"\"")
        if not self.international_prefixes:
            set_(self, "international_prefixes", _default_international(meta))
        alternatives = "|".join(f"(?:{p})" for p in self.international_prefixes)
        set_(self, "_international", re.compile(alternatives) if alternatives else None)
        for length in self.extension_lengths:
            if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 15:
                raise DialPlanError("extension_lengths", "expected lengths from 1 to 15")
        pattern = None
        if self.extension_pattern is not None:
            try:
                pattern = re.compile(f"(?:{self.extension_pattern})\\Z")
            except re.error as exc:
                raise DialPlanError("extension_pattern", f"not a regular expression: {exc}"
                                    ) from None
        set_(self, "_extension", pattern)
        if self.outside_line is not None and _PREFIX.match(self.outside_line) is None:
            raise DialPlanError("outside_line", "expected a few digits such as \"9\"")
        if self.validation not in _VALIDATIONS:
            raise DialPlanError("validation", f"expected one of {', '.join(_VALIDATIONS)}")
        for i, code in enumerate(self.emergency):
            if not isinstance(code, str) or not code.isdigit():
                raise DialPlanError(f"emergency[{i}]", "expected digits")
        for key, codes in (("service_codes", self.service_codes),
                           ("service_prefixes", self.service_prefixes)):
            for i, code in enumerate(codes):
                if not isinstance(code, str) or _CODE.match(code) is None:
                    raise DialPlanError(f"{key}[{i}]", "expected a code of 0-9, * and #")
                if self.is_emergency(code):
                    raise DialPlanError(f"{key}[{i}]", f"{code} is an emergency number")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DialPlan:
        """Build a plan from its JSON document (see C{docs/numbering.md}).

        @raise DialPlanError: naming the first bad or unknown key.
        """
        if not isinstance(data, Mapping):
            raise DialPlanError("dial plan", "expected a JSON object")
        for key in data:
            if key not in _PLAN_KEYS:
                raise DialPlanError(str(key), "unknown key")
        country = data.get("country")
        if not isinstance(country, str) or not country:
            raise DialPlanError("country", "required: an ISO 3166 region such as \"GB\"")
        lengths = data.get("extension_lengths", [])
        if isinstance(lengths, int) and not isinstance(lengths, bool):
            lengths = [lengths]
        if not isinstance(lengths, list):
            raise DialPlanError("extension_lengths", "expected a length or a list of lengths")
        pattern = data.get("extension_pattern")
        if pattern is not None and not isinstance(pattern, str):
            raise DialPlanError("extension_pattern", "expected a regular expression")
        outside = data.get("outside_line")
        if outside is not None and not isinstance(outside, str):
            raise DialPlanError("outside_line", "expected a string of digits such as \"9\"")
        national = data.get("national_prefix")
        if national is not None and not isinstance(national, str):
            raise DialPlanError("national_prefix", "expected a string of digits or \"\"")
        flags = {}
        for key, default in (("outside_line_required", False), ("short_numbers", True)):
            flags[key] = data.get(key, default)
            if not isinstance(flags[key], bool):
                raise DialPlanError(key, "expected true or false")
        validation = data.get("validation", "valid")
        if not isinstance(validation, str):
            raise DialPlanError("validation", "expected \"valid\" or \"possible\"")
        return cls(
            country=country.upper(),
            extension_lengths=tuple(lengths),
            extension_pattern=pattern,
            outside_line=outside,
            national_prefix=national,
            international_prefixes=_strings(data, "international_prefix", _PREFIX, "digits"),
            emergency=_strings(data, "emergency", re.compile(r"[0-9]{2,8}\Z"),
                               "an emergency number (digits)"),
            service_codes=_strings(data, "service_codes", _CODE, "a code of 0-9, * and #"),
            service_prefixes=_strings(data, "service_prefixes", _CODE,
                                      "a code of 0-9, * and #"),
            validation=validation,
            **flags,
        )

    def to_mapping(self) -> dict[str, Any]:
        """The plan as its JSON document, defaults written out."""
        out: dict[str, Any] = {"country": self.country}
        if self.extension_lengths:
            out["extension_lengths"] = list(self.extension_lengths)
        if self.extension_pattern is not None:
            out["extension_pattern"] = self.extension_pattern
        if self.outside_line is not None:
            out["outside_line"] = self.outside_line
            out["outside_line_required"] = self.outside_line_required
        out["national_prefix"] = self.national_prefix
        if all(_PREFIX.match(p) for p in self.international_prefixes):
            out["international_prefix"] = list(self.international_prefixes)
        for key in ("emergency", "service_codes", "service_prefixes"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        out["short_numbers"] = self.short_numbers
        out["validation"] = self.validation
        return out

    def is_emergency(self, digits: str) -> bool:
        """True when C{digits} is an emergency number of this plan: the
        country's (from libphonenumber) or one the operator listed."""
        return digits in self.emergency or _country_emergency(self.country, digits)

    def is_extension(self, digits: str) -> bool:
        """True when C{digits} is shaped like one of the plan's extensions."""
        if not digits.isdigit():
            return False
        if len(digits) in self.extension_lengths:
            return True
        return self._extension is not None and self._extension.match(digits) is not None

    def classify(self, dialled: str) -> Dialled:
        """Classify what a user dialled (see C{docs/numbering.md} for the order).

        Emergency numbers come first and are never invalid; then service
        codes, extensions, the outside line, the country's short numbers,
        and last the international and national prefixes.
        """
        try:
            number, context = _split_dialled(dialled)
        except _Unusable as exc:
            return Dialled.invalid(exc.text, exc.reason)
        if number.startswith("+"):
            result = _e164(number[1:], self.validation)
        elif context and context.startswith("+"):
            result = self._in_context(number, context)
        else:
            result = self._local(number)
        if result.kind is Kind.INVALID and result.number != number:
            return Dialled.invalid(number, result.reason or "invalid")
        return result

    def _emergency(self, number: str) -> Dialled | None:
        """An emergency result for C{number} (a trailing C{#} "send" key allowed)."""
        digits = number[:-1] if number.endswith("#") else number
        if digits and self.is_emergency(digits):
            return Dialled(Kind.EMERGENCY, digits, region=self.country)
        return None

    def _service(self, number: str) -> Dialled | None:
        """A service result for a code the operator listed."""
        if number in self.service_codes or any(
                number.startswith(p) for p in self.service_prefixes):
            return Dialled(Kind.SERVICE, number, region=self.country)
        return None

    def _short(self, number: str) -> Dialled | None:
        """A service result for one of the country's short numbers."""
        if self.short_numbers and number.isdigit() and _country_short_number(
                self.country, number):
            return Dialled(Kind.SERVICE, number, region=self.country)
        return None

    def _local(self, number: str) -> Dialled:
        """Classify a dial string that is local to this plan."""
        line = self.outside_line
        rest = number[len(line):] if line and number.startswith(line) else ""
        found = self._emergency(number)
        if found is None and rest:
            found = self._emergency(rest)
        if found is None:
            found = self._service(number)
        if found is not None:
            return found
        if not number.isdigit():
            return Dialled.invalid(number, "unknown service code")
        if self.is_extension(number):
            return Dialled(Kind.EXTENSION, number)
        if rest:
            found = self._short(rest) or (
                None if self.outside_line_required else self._short(number))
            if found is not None:
                return found
            result = self.external(rest)
            if result.kind is Kind.E164 or self.outside_line_required:
                return result
            whole = self.external(number)
            return whole if whole.kind is Kind.E164 else result
        if line and self.outside_line_required:
            return Dialled.invalid(number, f"an outside line needs the prefix {line}")
        return self._short(number) or self.external(number)

    def external(self, digits: str) -> Dialled:
        """Normalise a number dialled to the outside world (no outside-line
        prefix): international prefix, national prefix, or neither."""
        international = self._international
        if international is not None:
            m = international.match(digits)
            if m is not None and m.end() < len(digits):
                return _e164(digits[m.end():], self.validation)
        national = self.national_prefix
        if national and digits.startswith(national):
            digits = digits[len(national):]
        return _e164(f"{self.country_code}{digits}", self.validation)

    def _in_context(self, number: str, context: str) -> Dialled:
        """A local number with a global C{phone-context} (RFC 3966 5.1.5).

        A context of only a country code means "dialled in that country";
        a longer one (an area) is prefixed to a number that has no national
        or international prefix, as RFC 3966 describes.
        """
        digits = context[1:].translate(_SEPARATORS)
        found = _region_of(digits) if digits.isdigit() else None
        if found is None:
            return Dialled.invalid(number, f"unknown phone-context {context!r}")
        region, code = found
        plan = self if region == self.country else _default_plan(region)
        result = plan._emergency(number) or plan._short(number)
        if result is not None:
            return result
        if not number.isdigit():
            return Dialled.invalid(number, "a service code in a global phone-context")
        if digits == str(code):
            return plan.external(number)
        starts = plan.national_prefix and number.startswith(plan.national_prefix)
        m = plan._international.match(number) if plan._international else None
        if starts or m is not None:
            return plan.external(number)
        return _e164(digits + number, plan.validation)


@lru_cache(maxsize=256)
def _default_plan(region: str) -> DialPlan:
    """The plan of a region with every default (for foreign phone-contexts)."""
    return DialPlan(region)
