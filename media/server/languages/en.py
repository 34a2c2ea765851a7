"""English prompt rules (British style: "one hundred and five").

Numbers are built from prompts C{0}-C{19} and the tens C{20}-C{90}, with
C{hundred}, C{thousand}, C{million}, C{billion}, C{and} and C{minus}:
21 is C{["20", "1"]}, 105 is C{["1", "hundred", "and", "5"]}, 1005 is
C{["1", "thousand", "and", "5"]}.  Dates read month, ordinal day and year
("March twenty first, twenty twenty four"); years 1100-2999 are read in
pairs ("nineteen oh five", "nineteen hundred"), except 2000-2009 ("two
thousand and five").  Units agree in number: one minute, two minutes,
zero seconds.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

from media.server.languages.base import (
    check_digits,
    check_number,
    split_duration,
    split_money,
)

__all__ = ["English"]

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen"
)
_TENS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy",
         80: "eighty", 90: "ninety"}
_ORDINALS = (
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
    "eighteenth", "nineteenth"
)
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December"
)
#: currency -> ((major singular, plural), (minor singular, plural))
_CURRENCIES = {
    "EUR": (("euro", "euros"), ("cent", "cents")),
    "USD": (("dollar", "dollars"), ("cent", "cents")),
    "GBP": (("pound", "pounds"), ("penny", "pence")),
}
_UNITS = {"hour": "hours", "minute": "minutes", "second": "seconds"}
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))


#: The built-in echo and speaking-clock flows' own prompts.
_FLOWS = {
    "echo-test": "This is the echo test. Speak, and you will hear yourself.",
    "goodbye": "Goodbye.",
    "the-time-is": "The time is",
    "oclock": "o'clock",
    "press-1-to-repeat": "Press 1 to hear the time again.",
}

#: The conference flow's prompts (media/server/flows/conference.toml).
_CONFERENCE = {
    "conference-enter-room": "Please enter the conference room number, followed by the hash key.",
    "conference-full": "Sorry, this conference is full. Please try again later.",
    "conference-left": "You have left the conference. Goodbye.",
}


def _catalogue() -> dict[str, str]:
    """Every English prompt name and its words."""
    prompts = {str(n): word for n, word in enumerate(_ONES)}
    prompts.update({str(n): word for n, word in _TENS.items()})
    prompts.update({f"ord-{n}": word for n, word in enumerate(_ORDINALS, start=1)})
    prompts.update({"ord-20": "twentieth", "ord-30": "thirtieth"})
    prompts.update({f"month-{n}": word for n, word in enumerate(_MONTHS, start=1)})
    for word in ("hundred", "thousand", "million", "billion", "and", "minus", "oh"):
        prompts[word] = word
    for (major, majors), (minor, minors) in _CURRENCIES.values():
        prompts.update({major: major, majors: majors, minor: minor, minors: minors})
    for singular, plural in _UNITS.items():
        prompts.update({singular: singular, plural: plural})
    prompts.update(_FLOWS)
    prompts.update(_CONFERENCE)
    return prompts


class English:
    """The English rules (see the module docstring)."""

    code = "en"
    voice = "en"
    prompts = _catalogue()

    def number(self, n: int) -> list[str]:
        """Prompts reading C{n}: 21 -> C{["20", "1"]}, -3 -> C{["minus", "3"]}."""
        check_number(n)
        if n < 0:
            return ["minus", *self.number(-n)]
        if n == 0:
            return ["0"]
        words: list[str] = []
        rest = n
        for value, name in _SCALES:
            count, rest = divmod(rest, value)
            if count:
                words += [*_below_thousand(count), name]
        if rest:
            if words and rest < 100:
                words.append("and")
            words += _below_thousand(rest)
        return words

    def digits(self, text: str) -> list[str]:
        """Prompts reading each digit of C{text}."""
        return [str(int(char)) for char in check_digits(text)]

    def money(self, amount: Decimal, currency: str) -> list[str]:
        """Prompts reading C{amount}: 2.50 USD -> two dollars and fifty cents."""
        negative, major, minor = split_money(amount, currency)
        (unit, units), (sub, subs) = _CURRENCIES[currency.upper()]
        words = ["minus"] if negative else []
        if major or not minor:
            words += [*self.number(major), unit if major == 1 else units]
        if minor:
            if major:
                words.append("and")
            words += [*self.number(minor), sub if minor == 1 else subs]
        return words

    def duration(self, seconds: int, *, hours: bool = True) -> list[str]:
        """Prompts reading a duration: 90 -> one minute and thirty seconds.

        Zero parts are left out; "and" joins the last part; zero reads
        "zero seconds".  With C{hours=False}, 7500 reads "one hundred and
        twenty five minutes".
        """
        hrs, mins, secs = split_duration(seconds, hours=hours)
        parts = [(count, unit) for count, unit in ((hrs, "hour"), (mins, "minute"),
                                                    (secs, "second")) if count]
        if not parts:
            return ["0", "seconds"]
        words: list[str] = []
        for index, (count, unit) in enumerate(parts):
            if index and index == len(parts) - 1:
                words.append("and")
            words += [*self.number(count), unit if count == 1 else _UNITS[unit]]
        return words

    def date(self, day: datetime.date) -> list[str]:
        """Prompts reading C{day}: 2024-03-21 -> March twenty first twenty twenty four."""
        return [f"month-{day.month}", *_ordinal(day.day), *self.year(day.year)]

    def year(self, year: int) -> list[str]:
        """Prompts reading a year the way it is spoken."""
        if 1100 <= year <= 2999 and not 2000 <= year <= 2009:
            high, low = divmod(year, 100)
            if low == 0:
                return [*self.number(high), "hundred"]
            if low < 10:
                return [*self.number(high), "oh", str(low)]
            return [*self.number(high), *_below_hundred(low)]
        return self.number(year)


def _below_hundred(n: int) -> list[str]:
    """Prompts for 1..99."""
    if n < 20 or n % 10 == 0:
        return [str(n)]
    return [str(n - n % 10), str(n % 10)]


def _below_thousand(n: int) -> list[str]:
    """Prompts for 1..999."""
    hundreds, rest = divmod(n, 100)
    words = [str(hundreds), "hundred"] if hundreds else []
    if rest:
        if hundreds:
            words.append("and")
        words += _below_hundred(rest)
    return words


def _ordinal(n: int) -> list[str]:
    """Prompts for the ordinal 1..31 (a day of the month)."""
    if n < 20 or n % 10 == 0:
        return [f"ord-{n}"]
    return [str(n - n % 10), f"ord-{n % 10}"]
