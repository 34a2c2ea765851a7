"""Tests for L{plugins.trunking.callerid}: caller numbers written per vendor
connection and read back."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from plugins.trunking.callerid import CallerIdError, CallerIdFormat
from tests.trial.plugins.trunking.test_numbering import valid_numbers


class CallerIdFormatTests(SynchronousTestCase):
    """Caller numbers written per vendor connection."""

    def test_formats(self) -> None:
        """Each format writes a London number its way."""
        expected = {
            "e164": "442079460000",
            "e164_plus": "+442079460000",
            "international_00": "00442079460000",
            "national": "02079460000",
        }
        for name, text in expected.items():
            fmt = CallerIdFormat.from_mapping({"format": name, "country": "GB"})
            self.assertEqual(fmt.format_number("+442079460000"), text)
            self.assertEqual(fmt.to_e164(text), "+442079460000")

    def test_national_foreign_numbers(self) -> None:
        """In national format, a foreign number gets the vendor country's
        international prefix; NANP numbers are written with ten digits."""
        us = CallerIdFormat(format="national", country="US")
        self.assertEqual(us.format_number("+12125550123"), "2125550123")
        self.assertEqual(us.format_number("+442079460000"), "011442079460000")
        gb = CallerIdFormat(format="national", country="GB")
        self.assertEqual(gb.format_number("+12125550123"), "0012125550123")
        self.assertEqual(gb.to_e164("0012125550123"), "+12125550123")
        self.assertEqual(us.to_e164("011442079460000"), "+442079460000")

    def test_default(self) -> None:
        """No number, an extension or junk sends the default."""
        fmt = CallerIdFormat.from_mapping({"format": "international_00",
                                           "default": "+441632960000"})
        for caller in (None, "", "1001", "+44", "anonymous"):
            self.assertEqual(fmt.format_number(caller), "00441632960000")
        error = self.assertRaises(CallerIdError, CallerIdFormat().format_number, None)
        self.assertEqual(error.key, "default")

    def test_to_e164_rejects(self) -> None:
        """What is not a number in the format reads as None."""
        fmt = CallerIdFormat(format="international_00")
        self.assertIsNone(fmt.to_e164("442079460000"))
        self.assertIsNone(fmt.to_e164("anonymous"))
        self.assertEqual(fmt.to_e164("+44 20 7946 0000"), "+442079460000")

    def test_bad_documents(self) -> None:
        """Each bad key is named."""
        for document, key in [
            ({"format": "e.164"}, "format"),
            ({"format": "national"}, "country"),
            ({"format": "national", "country": "XX"}, "country"),
            ({"default": "02079460000"}, "default"),
            ({"default": 442079460000}, "default"),
            ({"prefix": "00"}, "prefix"),
        ]:
            error = self.assertRaises(CallerIdError, CallerIdFormat.from_mapping, document)
            self.assertEqual(error.key, key, str(error))
        fmt = CallerIdFormat.from_mapping({"format": "national", "country": "de",
                                           "default": "+4930123456"})
        self.assertEqual(CallerIdFormat.from_mapping(fmt.to_mapping()), fmt)


class RoundTripTests(SynchronousTestCase):
    """Properties over many numbers."""

    @settings(max_examples=150, deadline=None)
    @given(valid_numbers(), st.sampled_from(["GB", "DE", "FR", "US"]),
           st.sampled_from(["e164", "e164_plus", "national", "international_00"]))
    def test_caller_id_round_trip(self, number: str, country: str, name: str) -> None:
        """Writing a number in any format and reading it back gives it again."""
        fmt = CallerIdFormat(format=name, country=country)
        self.assertEqual(fmt.to_e164(fmt.format_number(number)), number)
