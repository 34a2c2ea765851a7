"""What every prompt language provides, and the arithmetic they share.

A language turns values (numbers, money, durations, dates) into a list of
prompt names, following its own grammar, and names the text of every
prompt it may return so that the prompt generator and the rules can never
disagree: L{Language.prompts} maps each name to the words spoken in it.
"""

from __future__ import annotations

import datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Protocol

__all__ = [
    "CURRENCY_DIGITS",
    "Language",
    "split_duration",
    "split_money",
]

#: Currencies the languages can read, with the digits of their minor unit.
CURRENCY_DIGITS = {"EUR": 2, "GBP": 2, "USD": 2}

#: The largest magnitude a language reads as a number (below a trillion).
MAX_NUMBER = 10**12 - 1


class Language(Protocol):
    """The rules of one language for building prompt sequences."""

    #: Language code, also the prompt directory name (C{"en"}, C{"de"}).
    code: str
    #: The espeak-ng voice the generator speaks this language with.
    voice: str
    #: Every prompt name the rules may return, with the words it speaks.
    prompts: dict[str, str]

    def number(self, n: int) -> list[str]:
        """Prompts reading the integer C{n} (negative ones too)."""

    def digits(self, text: str) -> list[str]:
        """Prompts reading C{text} (decimal digits) one digit at a time."""

    def money(self, amount: Decimal, currency: str) -> list[str]:
        """Prompts reading C{amount} of C{currency} (an ISO 4217 code)."""

    def duration(self, seconds: int, *, hours: bool = True) -> list[str]:
        """Prompts reading a duration of C{seconds}."""

    def date(self, day: datetime.date) -> list[str]:
        """Prompts reading the calendar date C{day}."""


def check_number(n: int) -> int:
    """Return C{n} if a language can read it, else raise C{ValueError}."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"a number to read must be an int, got {type(n).__name__}")
    if abs(n) > MAX_NUMBER:
        raise ValueError(f"{n} is too large to read (the limit is {MAX_NUMBER})")
    return n


def check_digits(text: str) -> str:
    """Return C{text} if it holds only ASCII digits, else raise C{ValueError}."""
    if not text or not all("0" <= char <= "9" for char in text):
        raise ValueError(f"digits to read must be 0-9 only, got {text!r}")
    return text


def split_money(amount: Decimal, currency: str) -> tuple[bool, int, int]:
    """Split C{amount} into C{(negative, major units, minor units)}.

    The amount is cut (rounded toward zero) to the currency's minor unit:
    an announced balance is never more than the real one.

    @raise ValueError: for an unknown currency or an amount that is not a
        finite decimal.
    """
    code = currency.upper()
    if code not in CURRENCY_DIGITS:
        known = ", ".join(sorted(CURRENCY_DIGITS))
        raise ValueError(f"no prompts for currency {currency!r} (known: {known})")
    if not isinstance(amount, Decimal):
        raise TypeError(f"money must be a Decimal, got {type(amount).__name__}")
    if not amount.is_finite():
        raise ValueError(f"cannot read the amount {amount}")
    digits = CURRENCY_DIGITS[code]
    try:
        minor_total = int(amount.scaleb(digits).quantize(Decimal(1), rounding=ROUND_DOWN))
    except InvalidOperation as error:
        raise ValueError(f"cannot read the amount {amount}") from error
    negative = minor_total < 0
    major, minor = divmod(abs(minor_total), 10**digits)
    check_number(major)
    return negative, major, minor


def split_duration(seconds: int, *, hours: bool = True) -> tuple[int, int, int]:
    """Split C{seconds} into C{(hours, minutes, seconds)}.

    With C{hours=False} the hours stay in the minutes (125 minutes).

    @raise ValueError: for a negative duration.
    """
    if isinstance(seconds, datetime.timedelta):
        seconds = int(seconds.total_seconds())
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise TypeError(f"a duration must be whole seconds (int), got {type(seconds).__name__}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {seconds}")
    minutes, secs = divmod(seconds, 60)
    if not hours:
        return 0, minutes, secs
    hrs, minutes = divmod(minutes, 60)
    check_number(hrs)
    return hrs, minutes, secs
