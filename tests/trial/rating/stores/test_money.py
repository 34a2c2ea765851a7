"""Tests for L{rating.money}: exact Decimal <-> micro-unit conversion, with
hypothesis for the round trips."""

from __future__ import annotations

from decimal import Context, Decimal, Inexact, localcontext

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rating.money import MAX_MICROS, MICROS_PER_UNIT, ZERO, MoneyError, from_micros, to_micros

#: Test arithmetic that must not round (it raises instead).
EXACT = Context(prec=2000, traps=[Inexact])
SETTINGS = settings(max_examples=300, deadline=None, database=None)
MICROS = st.integers(min_value=-MAX_MICROS, max_value=MAX_MICROS)
#: Amounts with at most six places, within the stored range.
AMOUNTS = st.decimals(min_value=Decimal(-MAX_MICROS) / MICROS_PER_UNIT,
                      max_value=Decimal(MAX_MICROS) / MICROS_PER_UNIT,
                      places=6, allow_nan=False, allow_infinity=False)
#: Any finite decimal at all.
ANY_DECIMAL = st.decimals(allow_nan=False, allow_infinity=False)


class ConversionExamplesTests(SynchronousTestCase):
    """Worked examples of L{to_micros} and L{from_micros}."""

    def test_to_micros(self) -> None:
        """Decimals, ints (whole units) and decimal strings convert exactly;
        trailing zeros beyond six places are fine."""
        self.assertEqual(to_micros(Decimal("1.5")), 1_500_000)
        self.assertEqual(to_micros(Decimal("0.000001")), 1)
        self.assertEqual(to_micros(Decimal("-2.25")), -2_250_000)
        self.assertEqual(to_micros(7), 7_000_000)
        self.assertEqual(to_micros(" 12.340000000 "), 12_340_000)
        self.assertEqual(to_micros(Decimal("1E+3")), 1_000_000_000)
        self.assertEqual(to_micros(Decimal("0E+40")), 0)
        self.assertEqual(to_micros(Decimal("-0")), 0)

    def test_from_micros(self) -> None:
        """Micro-units come back with exactly six places."""
        self.assertEqual(str(from_micros(1_500_000)), "1.500000")
        self.assertEqual(str(from_micros(0)), "0.000000")
        self.assertEqual(str(from_micros(-1)), "-0.000001")
        self.assertEqual(str(ZERO), "0.000000")
        self.assertEqual(str(from_micros(10**70)), "1" + "0" * 64 + ".000000")

    def test_refuses_sub_micro(self) -> None:
        """A non-zero digit beyond the sixth place is refused, never rounded."""
        for text in ("0.0000001", "1.0000005", "-3.1415926", "1E-7", "1E-999999999"):
            self.assertRaises(MoneyError, to_micros, Decimal(text))
        self.assertRaises(MoneyError, to_micros, "0.1234567")

    def test_refuses_non_finite_and_garbage(self) -> None:
        """NaN, infinities and text that is not a number are refused."""
        for value in (Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity"), "abc", ""):
            self.assertRaises(MoneyError, to_micros, value)

    def test_refuses_out_of_range(self) -> None:
        """Beyond L{MAX_MICROS} is refused, huge exponents without work."""
        self.assertEqual(to_micros(from_micros(MAX_MICROS)), MAX_MICROS)
        self.assertRaises(MoneyError, to_micros, from_micros(MAX_MICROS + 1))
        self.assertRaises(MoneyError, to_micros, -from_micros(MAX_MICROS + 1))
        self.assertRaises(MoneyError, to_micros, 10**9 + 1)
        self.assertRaises(MoneyError, to_micros, Decimal("1E+999999999"))

    def test_refuses_float_and_bool(self) -> None:
        """Floats and bools are not money (TypeError), in either direction."""
        self.assertRaises(TypeError, to_micros, 0.1)
        self.assertRaises(TypeError, to_micros, True)
        self.assertRaises(TypeError, to_micros, None)
        self.assertRaises(TypeError, from_micros, 1.0)
        self.assertRaises(TypeError, from_micros, True)

    def test_money_error_is_value_error(self) -> None:
        """L{MoneyError} is a C{ValueError}, for callers that catch those."""
        self.assertTrue(issubclass(MoneyError, ValueError))


class ConversionPropertyTests(SynchronousTestCase):
    """Properties of the conversion, checked by hypothesis."""

    @SETTINGS
    @given(MICROS)
    def test_micros_round_trip(self, micros: int) -> None:
        """micro-units -> Decimal -> micro-units is the identity, and the
        Decimal has six places."""
        amount = from_micros(micros)
        self.assertEqual(to_micros(amount), micros)
        self.assertEqual(amount.as_tuple().exponent, -6)
        self.assertEqual(to_micros(str(amount)), micros)

    @SETTINGS
    @given(AMOUNTS)
    def test_decimal_round_trip(self, amount: Decimal) -> None:
        """Decimal -> micro-units -> Decimal gives an equal amount."""
        self.assertEqual(from_micros(to_micros(amount)), amount)

    @SETTINGS
    @given(ANY_DECIMAL)
    def test_exact_or_refused(self, amount: Decimal) -> None:
        """Any finite Decimal either converts exactly (the result equals the
        input) or is refused; it is never rounded."""
        try:
            micros = to_micros(amount)
        except MoneyError:
            with localcontext(EXACT):
                if abs(amount) <= Decimal(MAX_MICROS) / MICROS_PER_UNIT:
                    self.assertNotEqual(amount * MICROS_PER_UNIT % 1, 0)
            return
        self.assertEqual(from_micros(micros), amount)

    @SETTINGS
    @given(AMOUNTS, st.integers(min_value=1, max_value=9),
           st.integers(min_value=7, max_value=30))
    def test_sub_micro_digit_refused(self, amount: Decimal, digit: int, place: int) -> None:
        """Adding a non-zero digit at the seventh place or beyond makes any
        storable amount unstorable."""
        with localcontext(EXACT):
            nudged = amount + Decimal(digit).scaleb(-place)
        self.assertRaises(MoneyError, to_micros, nudged)

    @SETTINGS
    @given(AMOUNTS, AMOUNTS)
    def test_order_and_sums(self, a: Decimal, b: Decimal) -> None:
        """Conversion keeps order and sums (in range) exactly."""
        self.assertEqual(a < b, to_micros(a) < to_micros(b))
        if abs(a + b) <= Decimal(MAX_MICROS) / MICROS_PER_UNIT:
            self.assertEqual(to_micros(a + b), to_micros(a) + to_micros(b))
