"""Tests for L{media.server.dtmf_info}: DTMF bodies of SIP INFO requests."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.errors import SIPError
from media.server.dtmf import DIGITS, SOURCE_INFO, DtmfEvent
from media.server.dtmf_info import (
    DEFAULT_DURATION_MS,
    DTMF,
    DTMF_RELAY,
    DtmfInfoError,
    build_dtmf,
    build_dtmf_relay,
    build_info_body,
    parse_dtmf,
    parse_dtmf_relay,
    parse_info_body,
)


class ParseRelayTests(SynchronousTestCase):
    """C{application/dtmf-relay}."""

    def test_canonical(self) -> None:
        """C{Signal=5} and C{Duration=160} give digit 5 held 160 ms."""
        self.assertEqual(
            parse_dtmf_relay(b"Signal=5\r\nDuration=160\r\n"), DtmfEvent("5", 160, SOURCE_INFO)
        )

    def test_lenient_forms(self) -> None:
        """Any key case, spaces around '=', LF line ends, blank lines,
        other keys, Duration first, and no final line end are accepted."""
        body = "\nduration = 250\nX-Vendor=1\n  SIGNAL = #\n"
        self.assertEqual(parse_dtmf_relay(body), DtmfEvent("#", 250, SOURCE_INFO))
        self.assertEqual(parse_dtmf_relay(b"Signal=*").digit, "*")

    def test_letters_and_codes(self) -> None:
        """Lower-case letters, and event codes 10-16, name their digits."""
        cases = {
            "a": "A",
            "d": "D",
            "10": "*",
            "11": "#",
            "12": "A",
            "15": "D",
            "16": "!",
            "!": "!",
        }
        for signal, digit in cases.items():
            self.assertEqual(parse_dtmf_relay(f"Signal={signal}\r\n").digit, digit, signal)

    def test_default_duration(self) -> None:
        """Without Duration the digit lasts the default."""
        self.assertEqual(parse_dtmf_relay(b"Signal=1").duration_ms, DEFAULT_DURATION_MS)

    def test_malformed(self) -> None:
        """Bad bodies are 400 errors naming the problem."""
        for body in (
            b"",
            b"Duration=100",
            b"Signal=",
            b"Signal=E",
            b"Signal=17",
            b"Signal=55",
            b"Signal=1\r\nSignal=2",
            b"Signal=1\r\nDuration=-5",
            b"Signal=1\r\nDuration=1.5",
            b"Signal=1\r\nDuration=99999999",
            b"Signal=1\r\nDuration=10\r\nDuration=20",
            b"Signal 1",
            "Signal=\u0661\u0660".encode(),
            b"Signal=1\r\n" + b"X=" + b"y" * 2000,
        ):
            with self.assertRaises(DtmfInfoError, msg=repr(body)) as caught:
                parse_dtmf_relay(body)
            self.assertEqual(caught.exception.code, 400)
            self.assertTrue(caught.exception.reason)

    def test_error_is_a_sip_error(self) -> None:
        """The error is a L{SIPError}, which the transaction user answers."""
        self.assertTrue(issubclass(DtmfInfoError, SIPError))


class ParseDtmfTests(SynchronousTestCase):
    """C{application/dtmf}."""

    def test_digit(self) -> None:
        """The body is the digit, spaces and line end around it allowed."""
        self.assertEqual(parse_dtmf(b"7"), DtmfEvent("7", DEFAULT_DURATION_MS, SOURCE_INFO))
        self.assertEqual(parse_dtmf(b" b\r\n").digit, "B")
        self.assertEqual(parse_dtmf(b"16").digit, "!")

    def test_malformed(self) -> None:
        """Anything but one digit is a 400."""
        for body in (b"", b"Signal=5", b"5 6", b"x"):
            with self.assertRaises(DtmfInfoError) as caught:
                parse_dtmf(body)
            self.assertEqual(caught.exception.code, 400)


class DispatchTests(SynchronousTestCase):
    """L{parse_info_body} by content type."""

    def test_by_content_type(self) -> None:
        """The type picks the reader; case and parameters do not matter."""
        self.assertEqual(
            parse_info_body("application/dtmf-relay", b"Signal=3\r\nDuration=90").digit, "3"
        )
        self.assertEqual(
            parse_info_body("Application/DTMF-Relay; charset=us-ascii", b"Signal=4").digit, "4"
        )
        self.assertEqual(parse_info_body(" application/dtmf ", b"9").digit, "9")

    def test_unsupported_type(self) -> None:
        """Another type is a 415 with an Accept header listing both types."""
        with self.assertRaises(DtmfInfoError) as caught:
            parse_info_body("application/media_control+xml", b"<x/>")
        self.assertEqual(caught.exception.code, 415)
        self.assertEqual(
            caught.exception.headers, [("Accept", "application/dtmf-relay, application/dtmf")]
        )


class BuildTests(SynchronousTestCase):
    """Writing bodies."""

    def test_relay(self) -> None:
        """The canonical form, flash as code 16."""
        self.assertEqual(
            build_dtmf_relay(DtmfEvent("5", 160, SOURCE_INFO)), b"Signal=5\r\nDuration=160\r\n"
        )
        self.assertEqual(
            build_dtmf_relay(DtmfEvent("!", 500, SOURCE_INFO)), b"Signal=16\r\nDuration=500\r\n"
        )

    def test_dtmf(self) -> None:
        """The digit alone."""
        self.assertEqual(build_dtmf(DtmfEvent("#", 160, SOURCE_INFO)), b"#")

    def test_info_body(self) -> None:
        """Content type and body together; unknown types refused."""
        event = DtmfEvent("A", 120, SOURCE_INFO)
        self.assertEqual(build_info_body(event), (DTMF_RELAY, b"Signal=A\r\nDuration=120\r\n"))
        self.assertEqual(build_info_body(event, DTMF), (DTMF, b"A"))
        self.assertRaises(ValueError, build_info_body, event, "text/plain")

    @given(st.sampled_from(DIGITS), st.integers(0, 3_600_000), st.sampled_from([DTMF_RELAY, DTMF]))
    def test_round_trip(self, digit: str, duration: int, content_type: str) -> None:
        """What is built parses back (dtmf bodies lose the duration)."""
        event = DtmfEvent(digit, duration, SOURCE_INFO)
        parsed = parse_info_body(*build_info_body(event, content_type))
        expected = duration if content_type == DTMF_RELAY else DEFAULT_DURATION_MS
        self.assertEqual(parsed, DtmfEvent(digit, expected, SOURCE_INFO))
