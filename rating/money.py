"""Money as it is stored: C{Decimal} in Python, integer micro-units in Redis.

A micro-unit is 10**-6 of the account's currency unit (rating.md 2.7: no
cost has more than six decimals, C{rating.tariff.MAX_ROUNDING_DECIMALS}).
The conversions here are exact both ways: L{to_micros} refuses a value that
is not a whole number of micro-units (it never rounds), and L{from_micros}
always answers with exactly six decimal places, so C{Decimal("1.5")} goes
in as C{1500000} and comes back as C{Decimal("1.500000")} (equal to it).

Floats are refused with C{TypeError}: a float such as C{0.1} is not the
decimal amount its author meant, and money never passes through one.

Amounts are bounded by L{MAX_MICROS} (10**15 micro-units, a thousand
million currency units) so that every balance, limit, hold and their sums
stay exact in Redis' Lua, whose numbers are IEEE doubles (exact integers up
to 2**53, about 9.007e15).
"""

from __future__ import annotations

from decimal import Context, Decimal, Inexact

__all__ = [
    "MAX_MICROS",
    "MICROS_PER_UNIT",
    "ZERO",
    "MoneyError",
    "from_micros",
    "to_micros",
]

#: Micro-units in one currency unit.
MICROS_PER_UNIT = 1_000_000
#: The largest magnitude stored (see the module docstring).
MAX_MICROS = 10**15
#: Zero, with the six places L{from_micros} gives.
ZERO = Decimal("0.000000")
_PLACES = -6
#: Exact arithmetic: rounding raises C{Inexact} instead of happening.
_EXACT = Context(prec=60, traps=[Inexact])
#: Below this magnitude L{from_micros} scales within L{_EXACT}'s precision.
_FAST_LIMIT = 10**59
#: The highest C{Decimal.adjusted()} of a storable amount (10**9 units).
_MAX_ADJUSTED = 9


class MoneyError(ValueError):
    """An amount that cannot be stored exactly: not finite, not a whole
    number of micro-units, or beyond L{MAX_MICROS}."""


def to_micros(amount: Decimal | int | str) -> int:
    """The integer number of micro-units in C{amount}, exactly.

    @param amount: a C{Decimal}, an C{int} (whole units) or a decimal
        string (C{"12.50"}).
    @raise TypeError: for a float, a bool or anything else.
    @raise MoneyError: when C{amount} is not finite, has a non-zero digit
        beyond the sixth decimal place, or exceeds L{MAX_MICROS} in
        magnitude.
    """
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int | str):
        raise TypeError(f"money must be a Decimal, int or decimal string, not "
                        f"{type(amount).__name__}")
    if isinstance(amount, str):
        try:
            amount = Decimal(amount.strip())
        except ArithmeticError:
            raise MoneyError(f"not a decimal amount: {amount[:40]!r}") from None
    micros = amount * MICROS_PER_UNIT if isinstance(amount, int) else _decimal_micros(amount)
    if abs(micros) > MAX_MICROS:
        raise MoneyError(f"{amount} is beyond the largest amount stored "
                         f"({from_micros(MAX_MICROS)})")
    return micros


def _decimal_micros(amount: Decimal) -> int:
    """Micro-units of a Decimal.  The magnitude is checked before any
    arithmetic (so a huge exponent costs nothing), and the scaling runs in a
    private context that traps C{Inexact}: nothing is ever rounded."""
    if not amount.is_finite():
        raise MoneyError(f"not a finite amount: {amount}")
    if not amount:
        return 0
    if amount.adjusted() > _MAX_ADJUSTED:
        raise MoneyError(f"{amount} is beyond the largest amount stored "
                         f"({from_micros(MAX_MICROS)})")
    try:
        scaled = amount.scaleb(-_PLACES, _EXACT)
        integral = scaled.to_integral_value(context=_EXACT)
    except Inexact:
        integral = None
    if integral is None or integral != scaled:
        raise MoneyError(f"{amount} is not a whole number of micro-units (10**-6)")
    return int(integral)


def from_micros(micros: int) -> Decimal:
    """The C{Decimal} amount of C{micros} micro-units, with six decimal places.

    @raise TypeError: when C{micros} is not an C{int} (a float or bool).
    """
    if type(micros) is not int:  # the common case costs one check
        if isinstance(micros, bool) or not isinstance(micros, int):
            raise TypeError(f"micro-units are an int, not {type(micros).__name__}")
        micros = int(micros)
    if -_FAST_LIMIT < micros < _FAST_LIMIT:
        return Decimal(micros).scaleb(_PLACES, _EXACT)
    digits = tuple(int(c) for c in str(abs(micros)))
    return Decimal((1 if micros < 0 else 0, digits, _PLACES))
