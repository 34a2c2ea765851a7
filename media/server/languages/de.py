"""German prompt rules.

German puts the units before the tens in one word (einundzwanzig), so the
German set has one prompt per number C{0}-C{99} rather than spliced tens
and units; C{hundert}, C{tausend}, C{million}/C{millionen},
C{milliarde}/C{milliarden} build the larger numbers (1999 is
C{["ein", "tausend", "9", "hundert", "99"]}).

"One" has three forms: C{eins} when a number stands alone or ends a larger
one (C{"1"}: hunderteins), C{ein} before C{hundert}, C{tausend} and
masculine or neuter nouns (ein Euro, ein Pfund), C{eine} before feminine
nouns (eine Minute, eine Million).  A number ending in 01 takes the noun's
form too (hundertein Euro, hunderteine Minuten); the noun stays plural for
every count but one.  Currency nouns do not change in the plural (zwei
Euro, zwei Cent), except Penny/Pence.

Dates are read as ordinal day, month, year in the dative form that follows
"am" (ersten März zweitausendvierundzwanzig), so the flow's own prompt
supplies the preposition ("Ihre Karte läuft am" ... "ab").  Years
1100-1999 are read in hundreds (neunzehnhundertneunundneunzig).
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

__all__ = ["German"]

_UNITS = (
    "null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn",
    "elf", "zwölf", "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn", "achtzehn",
    "neunzehn"
)
_TENS = {20: "zwanzig", 30: "dreißig", 40: "vierzig", 50: "fünfzig", 60: "sechzig",
         70: "siebzig", 80: "achtzig", 90: "neunzig"}
_ORDINAL_IRREGULAR = {1: "ersten", 3: "dritten", 7: "siebten", 8: "achten"}
_MONTHS = (
    "Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
    "November", "Dezember"
)
#: currency -> ((major noun singular, plural, gender), (minor singular, plural, gender))
_CURRENCIES = {
    "EUR": (("euro", "euro", "m"), ("cent", "cent", "m")),
    "USD": (("dollar", "dollar", "m"), ("cent", "cent", "m")),
    "GBP": (("pfund", "pfund", "n"), ("penny", "pence", "m")),
}
_WORDS = {"euro": "Euro", "cent": "Cent", "dollar": "Dollar", "pfund": "Pfund",
          "penny": "Penny", "pence": "Pence", "stunde": "Stunde", "stunden": "Stunden",
          "minute": "Minute", "minuten": "Minuten", "sekunde": "Sekunde",
          "sekunden": "Sekunden", "hundert": "hundert", "tausend": "tausend",
          "million": "Million", "millionen": "Millionen", "milliarde": "Milliarde",
          "milliarden": "Milliarden", "und": "und", "minus": "minus", "ein": "ein",
          "eine": "eine"}
#: (value, singular, plural) of the scales above a thousand; both are feminine
_SCALES = ((10**9, "milliarde", "milliarden"), (10**6, "million", "millionen"))


def _cardinal_word(n: int) -> str:
    """The one-word German numeral for 0..99."""
    if n < 20:
        return _UNITS[n]
    tens, unit = divmod(n, 10)
    if unit == 0:
        return _TENS[n]
    return ("ein" if unit == 1 else _UNITS[unit]) + "und" + _TENS[tens * 10]


def _ordinal_word(n: int) -> str:
    """The dative ordinal (after "am") for 1..31: ersten, zwanzigsten."""
    if n in _ORDINAL_IRREGULAR:
        return _ORDINAL_IRREGULAR[n]
    if n < 20:
        return _UNITS[n] + "ten"
    return _cardinal_word(n) + "sten"


#: The conference flow's prompts (media/server/flows/conference.toml).
#: Die Ansagen der eingebauten Flows Echotest und Zeitansage.
_FLOWS = {
    "echo-test": "Dies ist der Echotest. Sprechen Sie, und Sie hören sich selbst.",
    "goodbye": "Auf Wiederhören.",
    "the-time-is": "Es ist",
    "oclock": "Uhr",
    "press-1-to-repeat": "Drücken Sie die 1, um die Zeit noch einmal zu hören.",
}

_CONFERENCE = {
    "conference-enter-room": "Bitte geben Sie die Nummer des Konferenzraums ein, "
                             "gefolgt von der Raute-Taste.",
    "conference-full": "Diese Konferenz ist leider voll. Bitte versuchen Sie es später noch "
                       "einmal.",
    "conference-left": "Sie haben die Konferenz verlassen. Auf Wiederhören.",
}


def _catalogue() -> dict[str, str]:
    """Every German prompt name and its words."""
    prompts = {str(n): _cardinal_word(n) for n in range(100)}
    prompts.update({f"ord-{n}": _ordinal_word(n) for n in range(1, 32)})
    prompts.update({f"month-{n}": word for n, word in enumerate(_MONTHS, start=1)})
    prompts.update(_WORDS)
    prompts.update(_FLOWS)
    prompts.update(_CONFERENCE)
    return prompts


def _one(gender: str | None) -> str:
    """The prompt for a final "one": eins alone, ein/eine before a noun."""
    if gender is None:
        return "1"
    return "eine" if gender == "f" else "ein"


def _below_thousand(n: int, gender: str | None) -> list[str]:
    """Prompts for 1..999; a final 1 takes the form for C{gender}."""
    hundreds, rest = divmod(n, 100)
    words = ["ein" if hundreds == 1 else str(hundreds), "hundert"] if hundreds else []
    if rest == 1:
        words.append(_one(gender))
    elif rest:
        words.append(str(rest))
    return words


class German:
    """The German rules (see the module docstring)."""

    code = "de"
    voice = "de"
    prompts = _catalogue()

    def number(self, n: int, gender: str | None = None) -> list[str]:
        """Prompts reading C{n}, before a noun of C{gender} (C{"m"}, C{"f"}, C{"n"}).

        Without a gender the number stands alone (1 is eins).
        """
        check_number(n)
        if n < 0:
            return ["minus", *self.number(-n, gender)]
        if n == 0:
            return ["0"]
        words: list[str] = []
        rest = n
        for value, singular, plural in _SCALES:
            count, rest = divmod(rest, value)
            if count == 1:
                words += ["eine", singular]
            elif count:
                words += [*_below_thousand(count, "f"), plural]
        count, rest = divmod(rest, 1000)
        if count:
            words += [*_below_thousand(count, "n"), "tausend"]
        if rest:
            words += _below_thousand(rest, gender)
        return words

    def digits(self, text: str) -> list[str]:
        """Prompts reading each digit of C{text}."""
        return [str(int(char)) for char in check_digits(text)]

    def money(self, amount: Decimal, currency: str) -> list[str]:
        """Prompts reading C{amount}: 2.50 EUR -> zwei Euro und fünfzig Cent."""
        negative, major, minor = split_money(amount, currency)
        (unit, units, gender), (sub, subs, sub_gender) = _CURRENCIES[currency.upper()]
        words = ["minus"] if negative else []
        if major or not minor:
            words += [*self.number(major, gender), unit if major == 1 else units]
        if minor:
            if major:
                words.append("und")
            words += [*self.number(minor, sub_gender), sub if minor == 1 else subs]
        return words

    def duration(self, seconds: int, *, hours: bool = True) -> list[str]:
        """Prompts reading a duration: 90 -> eine Minute und dreißig Sekunden."""
        hrs, mins, secs = split_duration(seconds, hours=hours)
        parts = [(count, unit) for count, unit in ((hrs, "stunde"), (mins, "minute"),
                                                    (secs, "sekunde")) if count]
        if not parts:
            return ["0", "sekunden"]
        words: list[str] = []
        for index, (count, unit) in enumerate(parts):
            if index and index == len(parts) - 1:
                words.append("und")
            words += [*self.number(count, "f"), unit if count == 1 else unit + "n"]
        return words

    def date(self, day: datetime.date) -> list[str]:
        """Prompts reading C{day} after "am": ersten März zweitausendvierundzwanzig."""
        return [f"ord-{day.day}", f"month-{day.month}", *self.year(day.year)]

    def year(self, year: int) -> list[str]:
        """Prompts reading a year: 1999 in hundreds, 2024 as a number."""
        if 1100 <= year <= 1999:
            high, low = divmod(year, 100)
            return [str(high), "hundert", *([str(low)] if low else [])]
        return self.number(year)
