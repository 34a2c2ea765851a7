"""Tests for L{plugins.trunking.numbering}: dial plans classify what users
dial per country (with the caller-ID formats of L{plugins.trunking.callerid}
in the properties that dial written numbers back)."""

from __future__ import annotations

import phonenumbers
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from plugins.trunking.callerid import CallerIdFormat
from plugins.trunking.numbering import (
    Dialled,
    DialPlan,
    DialPlanError,
    Kind,
    is_e164,
)

EXTENSION, E164, EMERGENCY, SERVICE, INVALID = (
    Kind.EXTENSION, Kind.E164, Kind.EMERGENCY, Kind.SERVICE, Kind.INVALID)


class ClassifyCase(SynchronousTestCase):
    """Shared assertion for tables of (dialled, kind, number)."""

    def assertTable(self, plan: DialPlan, table: list[tuple[str, Kind, str]]) -> None:
        """Every row of C{table} classifies as given under C{plan}."""
        for dialled, kind, number in table:
            with self.subTest(dialled=dialled):
                result = plan.classify(dialled)
                self.assertEqual((result.kind, result.number), (kind, number),
                                 f"{plan.country} {dialled!r} gave {result}")
                if kind is INVALID:
                    self.assertTrue(result.reason, f"{dialled!r}: invalid without a reason")
                else:
                    self.assertIsNone(result.reason)


class UnitedKingdomTests(ClassifyCase):
    """A British PBX: 3- and 4-digit extensions, 9 for an outside line."""

    def setUp(self) -> None:
        """The plan as the operator stores it."""
        self.plan = DialPlan.from_mapping({
            "country": "GB", "extension_lengths": [3, 4], "outside_line": "9",
            "service_codes": ["*97", "1571"], "service_prefixes": ["*72"],
        })

    def test_defaults_from_metadata(self) -> None:
        """The national and international prefixes come from libphonenumber."""
        self.assertEqual(self.plan.national_prefix, "0")
        self.assertEqual(self.plan.international_prefixes, ("00",))
        self.assertEqual(self.plan.country_code, 44)

    def test_national_and_international(self) -> None:
        """London, mobile, freephone and foreign numbers, in the ways people
        write them, with and without the outside line."""
        self.assertTable(self.plan, [
            ("02079460000", E164, "+442079460000"),
            ("020 7946 0000", E164, "+442079460000"),
            ("9 020 7946 0000", E164, "+442079460000"),
            ("(020) 7946-0000", E164, "+442079460000"),
            ("07400 123456", E164, "+447400123456"),
            ("907400123456", E164, "+447400123456"),
            ("0800 123 4567", E164, "+448001234567"),
            ("0044 20 7946 0000", E164, "+442079460000"),
            ("+44 (0)20 7946 0000", E164, "+442079460000"),
            ("+44.20.7946.0000", E164, "+442079460000"),
            ("00 1 212 555 0123", E164, "+12125550123"),
            ("9 00 33 1 23 45 67 89", E164, "+33123456789"),
            ("00 49 30 123456", E164, "+4930123456"),
        ])

    def test_emergency(self) -> None:
        """999 and 112, bare, after the outside line, with a send key, or
        in a tel URI: always emergency, even where a 4-digit extension
        would match."""
        self.assertTable(self.plan, [
            ("999", EMERGENCY, "999"),
            ("112", EMERGENCY, "112"),
            ("9999", EMERGENCY, "999"),
            ("9112", EMERGENCY, "112"),
            ("999#", EMERGENCY, "999"),
            ("tel:999;phone-context=+44", EMERGENCY, "999"),
            ("sip:112@sw.example.com;user=phone", EMERGENCY, "112"),
        ])
        self.assertEqual(self.plan.classify("999").region, "GB")

    def test_extensions_and_services(self) -> None:
        """Extensions, listed codes, codes taking digits, and the country's
        short numbers after the outside line."""
        self.assertTable(self.plan, [
            ("1001", EXTENSION, "1001"),
            ("201", EXTENSION, "201"),
            ("sip:1001@pbx.example.com", EXTENSION, "1001"),
            ("*97", SERVICE, "*97"),
            ("1571", SERVICE, "1571"),
            ("*7207400123456", SERVICE, "*7207400123456"),
            ("%2A97", SERVICE, "*97"),
            ("9118118", SERVICE, "118118"),
        ])
        plain = DialPlan("GB")
        self.assertEqual(plain.classify("101"), Dialled(SERVICE, "101", region="GB"))

    def test_invalid(self) -> None:
        """Junk, unknown codes, numbers too short or in no range."""
        self.assertTable(self.plan, [
            ("", INVALID, ""),
            ("   ", INVALID, ""),
            ("alice", INVALID, "alice"),
            ("sip:alice@example.com", INVALID, "alice"),
            ("sip:example.com", INVALID, "sip:example.com"),
            ("*99", INVALID, "*99"),
            ("+44*20", INVALID, "+44*20"),
            ("020794600", INVALID, "020794600"),
            ("0207946000012345", INVALID, "0207946000012345"),
            ("00999123456", INVALID, "00999123456"),
            ("12345p6", INVALID, "12345p6"),
        ])
        self.assertIn("'a'", self.plan.classify("alice").reason or "")
        self.assertIn("country code", self.plan.classify("00999123456").reason or "")

    def test_phone_context(self) -> None:
        """RFC 3966: a country context reads the number as dialled there,
        an area context is prefixed, a domain context means "this plan"."""
        self.assertTable(self.plan, [
            ("tel:02079460000;phone-context=+44", E164, "+442079460000"),
            ("sip:02079460000;phone-context=+44@sw.example.com;user=phone", E164,
             "+442079460000"),
            ("tel:7946-0000;phone-context=+44-20", E164, "+442079460000"),
            ("tel:1001;phone-context=pbx.example.com", EXTENSION, "1001"),
            ("tel:212-555-0123;phone-context=+1", E164, "+12125550123"),
            ("tel:911;phone-context=+1", EMERGENCY, "911"),
            ("tel:0612345678;phone-context=+33", E164, "+33612345678"),
            ("tel:+33-6-12-34-56-78;phone-context=+44", E164, "+33612345678"),
            ("tel:1234;phone-context=+999", INVALID, "1234"),
        ])
        self.assertEqual(self.plan.classify("tel:911;phone-context=+1").region, "US")

    def test_outside_line_required(self) -> None:
        """When required, external numbers need the 9 (a + number never does)
        and emergency numbers never do."""
        plan = DialPlan.from_mapping({"country": "GB", "outside_line": "9",
                                      "outside_line_required": True})
        self.assertTable(plan, [
            ("02079460000", INVALID, "02079460000"),
            ("902079460000", E164, "+442079460000"),
            ("+442079460000", E164, "+442079460000"),
            ("999", EMERGENCY, "999"),
            ("9999", EMERGENCY, "999"),
        ])
        self.assertIn("prefix 9", plan.classify("02079460000").reason or "")


class UnitedStatesTests(ClassifyCase):
    """An American PBX: 4-digit extensions, 9 for an outside line."""

    def setUp(self) -> None:
        """The plan."""
        self.plan = DialPlan.from_mapping({"country": "US", "extension_lengths": 4,
                                           "outside_line": "9"})

    def test_defaults_from_metadata(self) -> None:
        """NANP: trunk prefix 1, international prefix 011."""
        self.assertEqual(self.plan.national_prefix, "1")
        self.assertEqual(self.plan.international_prefixes, ("011",))

    def test_numbers(self) -> None:
        """Ten and eleven digits, with and without the 9; international with
        011; a 917 number dialled without the 9 is still found."""
        self.assertTable(self.plan, [
            ("2125550123", E164, "+12125550123"),
            ("1 212 555 0123", E164, "+12125550123"),
            ("(212) 555-0123", E164, "+12125550123"),
            ("912125550123", E164, "+12125550123"),
            ("9 212 555 0123", E164, "+12125550123"),
            ("9175550123", E164, "+19175550123"),
            ("1-800-555-0199", E164, "+18005550199"),
            ("4165550123", E164, "+14165550123"),
            ("011 44 20 7946 0000", E164, "+442079460000"),
            ("9011 49 30 123456", E164, "+4930123456"),
            ("+1 212 555 0123", E164, "+12125550123"),
        ])
        self.assertEqual(self.plan.classify("4165550123").region, "CA")

    def test_emergency_and_services(self) -> None:
        """911 and 112 (with or without the 9), N11 services, extensions."""
        self.assertTable(self.plan, [
            ("911", EMERGENCY, "911"),
            ("9911", EMERGENCY, "911"),
            ("112", EMERGENCY, "112"),
            ("411", SERVICE, "411"),
            ("988", SERVICE, "988"),
            ("2001", EXTENSION, "2001"),
        ])

    def test_invalid(self) -> None:
        """A 7-digit local number, 00 (not the US prefix), a 555 area code."""
        self.assertTable(self.plan, [
            ("5550123", INVALID, "5550123"),
            ("0044 20 7946 0000", INVALID, "00442079460000"),
            ("1 555 555 0123", INVALID, "15555550123"),
        ])


class GermanyTests(ClassifyCase):
    """A German PBX with an extension pattern and 0 for an outside line."""

    def setUp(self) -> None:
        """Extensions 20-49 and 200-499; the outside line is 0, as in many
        German offices, so national numbers are dialled 0 0...."""
        self.plan = DialPlan.from_mapping({
            "country": "DE", "extension_pattern": "[2-4][0-9]{1,2}", "outside_line": "0",
        })

    def test_numbers(self) -> None:
        """Berlin, Munich, mobile; 00 after the outside line; +49 (0)."""
        self.assertTable(self.plan, [
            ("0030 123456", E164, "+4930123456"),
            ("0 089 1234567", E164, "+49891234567"),
            ("0 0151 23456789", E164, "+4915123456789"),
            ("0 0044 20 7946 0000", E164, "+442079460000"),
            ("+49 (0)30 123456", E164, "+4930123456"),
            ("030 123456", E164, "+4930123456"),
        ])

    def test_emergency_extensions_services(self) -> None:
        """110 and 112 with and without the outside line; extensions by
        pattern; 116116 and 115 as services."""
        self.assertTable(self.plan, [
            ("110", EMERGENCY, "110"),
            ("112", EMERGENCY, "112"),
            ("0110", EMERGENCY, "110"),
            ("0112", EMERGENCY, "112"),
            ("21", EXTENSION, "21"),
            ("420", EXTENSION, "420"),
            ("0116116", SERVICE, "116116"),
            ("115", SERVICE, "115"),
            ("500", INVALID, "500"),
        ])


class FranceTests(ClassifyCase):
    """A French PBX without extensions or outside line, with an extra
    emergency number the operator lists."""

    def setUp(self) -> None:
        """The plan."""
        self.plan = DialPlan.from_mapping({"country": "FR", "emergency": ["191"],
                                           "validation": "possible"})

    def test_numbers(self) -> None:
        """Paris, mobile, 0033, freephone."""
        self.assertTable(self.plan, [
            ("01 23 45 67 89", E164, "+33123456789"),
            ("06 12 34 56 78", E164, "+33612345678"),
            ("0033 1 23 45 67 89", E164, "+33123456789"),
            ("+33 (0)1 23 45 67 89", E164, "+33123456789"),
            ("0800 123 456", E164, "+33800123456"),
        ])

    def test_emergency(self) -> None:
        """15, 17, 18 and 112 from the metadata, 191 from the operator."""
        self.assertTable(self.plan, [
            ("15", EMERGENCY, "15"),
            ("17", EMERGENCY, "17"),
            ("18", EMERGENCY, "18"),
            ("112", EMERGENCY, "112"),
            ("191", EMERGENCY, "191"),
            ("3949", SERVICE, "3949"),
        ])
        self.assertTrue(self.plan.is_emergency("191"))
        self.assertFalse(DialPlan("FR").is_emergency("191"))

    def test_short_numbers_off(self) -> None:
        """Without the country's short numbers, 3949 is not a service."""
        plan = DialPlan.from_mapping({"country": "FR", "short_numbers": False})
        self.assertEqual(plan.classify("3949").kind, INVALID)
        self.assertEqual(plan.classify("112").kind, EMERGENCY)

    def test_validation_modes(self) -> None:
        """"valid" refuses a number in no allocated range that "possible"
        accepts."""
        unallocated = "+33 7 00 00 00 00"
        strict = DialPlan("FR")
        self.assertFalse(phonenumbers.is_valid_number(phonenumbers.parse(unallocated)))
        self.assertEqual(strict.classify(unallocated).kind, INVALID)
        self.assertIn("range", strict.classify(unallocated).reason or "")
        self.assertEqual(self.plan.classify(unallocated).number, "+33700000000")


class DialPlanDocumentTests(SynchronousTestCase):
    """Reading and writing the operator's document."""

    def test_round_trip(self) -> None:
        """to_mapping writes the defaults out; from_mapping reads it back."""
        plan = DialPlan.from_mapping({"country": "gb", "extension_lengths": [4],
                                      "outside_line": "9", "service_codes": ["*97"]})
        document = plan.to_mapping()
        self.assertEqual(document["national_prefix"], "0")
        self.assertEqual(document["international_prefix"], ["00"])
        self.assertEqual(DialPlan.from_mapping(document), plan)

    def test_overridden_prefixes(self) -> None:
        """An operator may set its own prefixes, or none."""
        plan = DialPlan.from_mapping({"country": "GB", "national_prefix": "",
                                      "international_prefix": ["000", "00"]})
        self.assertEqual(plan.classify("000 1 212 555 0123").number, "+12125550123")
        self.assertEqual(plan.classify("2079460000").number, "+442079460000")
        self.assertEqual(plan.classify("00 1 212 555 0123").number, "+12125550123")
        self.assertEqual(DialPlan("GB").classify("000 1 212 555 0123").kind, INVALID)

    def test_bad_documents(self) -> None:
        """Each bad key is named in the error."""
        cases = [
            ({}, "country"),
            ({"country": "XX"}, "country"),
            ({"country": 44}, "country"),
            ({"country": "GB", "colour": "blue"}, "colour"),
            ({"country": "GB", "extension_lengths": "4"}, "extension_lengths"),
            ({"country": "GB", "extension_lengths": [0]}, "extension_lengths"),
            ({"country": "GB", "extension_lengths": [True]}, "extension_lengths"),
            ({"country": "GB", "extension_pattern": "[12"}, "extension_pattern"),
            ({"country": "GB", "outside_line": "nine"}, "outside_line"),
            ({"country": "GB", "outside_line": 9}, "outside_line"),
            ({"country": "GB", "outside_line_required": "yes"}, "outside_line_required"),
            ({"country": "GB", "national_prefix": "O"}, "national_prefix"),
            ({"country": "GB", "international_prefix": ["00", "+"]}, "international_prefix[1]"),
            ({"country": "GB", "emergency": ["999", "fire"]}, "emergency[1]"),
            ({"country": "GB", "emergency": "999,112"}, "emergency[0]"),
            ({"country": "GB", "service_codes": ["*97", "*9 7"]}, "service_codes[1]"),
            ({"country": "GB", "service_codes": ["999"]}, "service_codes[0]"),
            ({"country": "GB", "service_prefixes": {"a": 1}}, "service_prefixes"),
            ({"country": "GB", "short_numbers": 1}, "short_numbers"),
            ({"country": "GB", "validation": "strict"}, "validation"),
        ]
        for document, key in cases:
            with self.subTest(key=key):
                error = self.assertRaises(DialPlanError, DialPlan.from_mapping, document)
                self.assertEqual(error.key, key, str(error))
                self.assertTrue(str(error).startswith(key + ":"), str(error))
        self.assertRaises(DialPlanError, DialPlan.from_mapping, ["GB"])

    def test_direct_construction_checked(self) -> None:
        """Building a plan in code runs the same checks."""
        self.assertRaises(DialPlanError, DialPlan, "GB", emergency=("99a",))
        self.assertRaises(DialPlanError, DialPlan, "GB", service_codes=("112",))
        self.assertEqual(DialPlan("GB"), DialPlan.from_mapping({"country": "GB"}))

    def test_dialled_invalid(self) -> None:
        """The invalid constructor keeps the number and the reason."""
        self.assertEqual(Dialled.invalid("12", "too short"),
                         Dialled(Kind.INVALID, "12", "too short"))


#: regions whose numbers the properties draw from
REGIONS = ["GB", "US", "DE", "FR", "IT", "ES", "NL", "AU", "JP", "BR", "IN", "CH", "SE"]
TYPES = [phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE,
         phonenumbers.PhoneNumberType.TOLL_FREE]


@st.composite
def valid_numbers(draw: st.DrawFn) -> str:
    """A valid E.164 number: a region's example number with its last
    digits changed (kept when libphonenumber still calls it valid)."""
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(region, draw(st.sampled_from(TYPES)))
    assume(example is not None)
    text = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    tail = draw(st.text("0123456789", min_size=3, max_size=3))
    candidate = text[:-3] + tail
    assume(phonenumbers.is_valid_number(phonenumbers.parse(candidate)))
    return candidate


class PropertyTests(SynchronousTestCase):
    """Properties over many numbers."""

    @settings(max_examples=150, deadline=None)
    @given(valid_numbers(), st.sampled_from(["GB", "DE", "FR", "US"]))
    def test_national_format_dials_back(self, number: str, country: str) -> None:
        """A number written the national way of a country, dialled by a
        user of that country (with the outside line), is the same E.164."""
        written = CallerIdFormat(format="national", country=country).format_number(number)
        plan = DialPlan(country, outside_line="9")
        self.assertEqual(plan.classify("9" + written), Dialled(
            Kind.E164, number, region=phonenumbers.region_code_for_number(
                phonenumbers.parse(number))))
        self.assertEqual(DialPlan(country).classify(written).number, number)

    @settings(max_examples=150, deadline=None)
    @given(valid_numbers(), st.sampled_from(["GB", "DE", "FR", "US", "JP"]),
           st.sampled_from([" ", "-", ".", ""]))
    def test_plus_form_any_country(self, number: str, country: str, sep: str) -> None:
        """A + number with visual separators classifies to itself in any plan."""
        written = number[:3] + sep + number[3:6] + sep + number[6:]
        result = DialPlan(country).classify(written)
        self.assertEqual((result.kind, result.number), (E164, number))
        self.assertTrue(is_e164(result.number))

    @settings(max_examples=100, deadline=None)
    @given(st.text(max_size=30))
    def test_never_raises(self, text: str) -> None:
        """Any text classifies without an exception; invalid has a reason."""
        result = DialPlan("GB", extension_lengths=(4,), outside_line="9").classify(text)
        self.assertIn(result.kind, set(Kind))
        self.assertEqual(result.kind is Kind.INVALID, result.reason is not None)
