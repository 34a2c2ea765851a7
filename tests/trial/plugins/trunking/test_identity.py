"""Tests for L{plugins.trunking.identity}: P-Asserted-Identity, Privacy and
the caller number at the trust boundary, on SIP messages parsed from text."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.errors import ParseError, SIPError
from b2bua.sip.message import Request, parse_message
from b2bua.sip.uri import parse_uri
from plugins.trunking.identity import (
    ANONYMOUS_FROM,
    apply_privacy,
    assert_identity,
    choose_caller_number,
    format_privacy,
    is_anonymous,
    privacy_values,
    receive_identity,
    set_calling_number,
    uri_number,
)
from plugins.trunking.numbering import DialPlan


def invite(*extra: str, from_: str = '"Reception" <sip:02079460000@pbx.example.com>;tag=a73kszlfl',
           ) -> Request:
    """An INVITE as a customer's IP-PBX sends it, with C{extra} header lines."""
    lines = [
        "INVITE sip:+12125550123@sw.example.net;user=phone SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK74bf9;rport",
        "Max-Forwards: 70",
        f"From: {from_}",
        "To: <sip:+12125550123@sw.example.net;user=phone>",
        "Call-ID: 3848276298220188511@pbx.example.com",
        "CSeq: 1 INVITE",
        "Contact: <sip:reception@198.51.100.20:5060>",
        "User-Agent: ExamplePBX/4.2",
        "Subject: Quarterly figures",
        "Organization: Example Widgets Ltd",
        "Call-Info: <http://pbx.example.com/photo/reception.png>;purpose=icon",
        *extra,
        "Content-Length: 0",
        "", "",
    ]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Request)
    return message


GB = DialPlan.from_mapping({"country": "GB", "extension_lengths": [4]})
OWNED = {"+442079460000", "+442079460001"}


class ReceiveTests(SynchronousTestCase):
    """What the boundary keeps of a received request (RFC 3325 5, 9)."""

    def test_untrusted_pai_removed(self) -> None:
        """A PBX may not assert: its P-Asserted-Identity is removed unread,
        even when malformed, and P-Preferred-Identity becomes a hint."""
        request = invite(
            "P-Asserted-Identity: <sip:+441632960999@pbx.example.com;user=phone>",
            "P-Asserted-Identity: <not a uri",
            "P-Preferred-Identity: <sip:+442079460001@pbx.example.com;user=phone>",
        )
        identity = receive_identity(request, trusted=False)
        self.assertEqual(identity.asserted, ())
        self.assertIsNone(identity.asserted_number())
        self.assertEqual([str(p.uri) for p in identity.preferred],
                         ["sip:+442079460001@pbx.example.com;user=phone"])
        self.assertNotIn("P-Asserted-Identity", request.headers)
        self.assertNotIn("P-Preferred-Identity", request.headers)
        self.assertFalse(identity.trusted)
        self.assertIn(b"P-Asserted", invite("P-Asserted-Identity: <tel:+441632960999>"
                                            ).to_bytes())
        self.assertNotIn(b"P-Asserted", request.to_bytes())

    def test_trusted_pai_kept(self) -> None:
        """A carrier inside the trust domain asserts with one sip and one
        tel URI; both are kept and the number read."""
        request = invite(
            'P-Asserted-Identity: "Example Widgets" <sip:+442079460000@carrier.example;'
            "user=phone>, <tel:+44-20-7946-0000>",
        )
        identity = receive_identity(request, trusted=True)
        self.assertEqual(len(identity.asserted), 2)
        self.assertEqual(identity.asserted[0].display_name, "Example Widgets")
        self.assertEqual(identity.asserted_number(), "+442079460000")
        self.assertEqual(request.headers.count("P-Asserted-Identity"), 1)

    def test_trusted_pai_malformed(self) -> None:
        """A trusted source's bad PAI, or two sip URIs in it, is a ParseError
        (the request is answered 400)."""
        for value in ("<sip:+442079460000@a.example", "<sip:+1@a.example>, <sip:+2@b.example>",
                      "<mailto:alice@example.com>"):
            request = invite(f"P-Asserted-Identity: {value}")
            self.assertRaises(ParseError, receive_identity, request, trusted=True)

    def test_bad_ppi_dropped(self) -> None:
        """A malformed hint is dropped, not rejected."""
        request = invite("P-Preferred-Identity: <sip:broken")
        identity = receive_identity(request, trusted=False)
        self.assertEqual(identity.preferred, ())
        self.assertNotIn("P-Preferred-Identity", request.headers)

    def test_privacy_read(self) -> None:
        """Privacy values are read case-insensitively; unknown ones ignored."""
        request = invite("Privacy: id; Critical", "Privacy: header;frobnicate")
        identity = receive_identity(request, trusted=False)
        self.assertEqual(identity.privacy, {"id", "critical", "header"})
        self.assertTrue(identity.withheld)
        self.assertFalse(receive_identity(invite("Privacy: none"), trusted=False).withheld)
        self.assertFalse(receive_identity(invite(), trusted=False).withheld)
        self.assertEqual(privacy_values(invite("Privacy: user")), {"user"})
        self.assertEqual(format_privacy({"critical", "id", "user"}), "user;id;critical")


class ChooseNumberTests(SynchronousTestCase):
    """The number asserted for a caller (RFC 3325 9.1: PPI is a hint)."""

    def test_preferred_identity_among_owned(self) -> None:
        """A PPI naming one of the customer's numbers is used."""
        request = invite("P-Preferred-Identity: <tel:+442079460001>")
        identity = receive_identity(request, trusted=False)
        self.assertEqual(choose_caller_number(identity, OWNED, "+442079460000"),
                         "+442079460001")

    def test_foreign_hint_refused(self) -> None:
        """A PPI and a From the customer does not own give the default."""
        request = invite("P-Preferred-Identity: <tel:+441632960999>",
                         from_="<sip:+441632960998@pbx.example.com>;tag=1")
        identity = receive_identity(request, trusted=False)
        self.assertEqual(choose_caller_number(identity, OWNED, "+442079460000"),
                         "+442079460000")
        self.assertIsNone(choose_caller_number(identity, OWNED))

    def test_from_national_with_plan(self) -> None:
        """A From in national form is read with the customer's dial plan."""
        identity = receive_identity(invite(), trusted=False)
        self.assertIsNone(choose_caller_number(identity, OWNED))
        self.assertEqual(choose_caller_number(identity, OWNED, plan=GB), "+442079460000")

    def test_trusted_assertion_wins(self) -> None:
        """A trusted source's asserted number is kept as it is."""
        request = invite("P-Asserted-Identity: <tel:+33123456789>",
                         "P-Preferred-Identity: <tel:+442079460001>")
        identity = receive_identity(request, trusted=True)
        self.assertEqual(choose_caller_number(identity, OWNED, "+442079460000"),
                         "+33123456789")


class OutgoingTests(SynchronousTestCase):
    """The request sent: asserted identity and privacy (RFC 3323, 3325 7)."""

    def test_assert_identity(self) -> None:
        """One sip and one tel URI replace whatever was there."""
        request = invite("P-Asserted-Identity: <sip:+449999@evil.example>")
        assert_identity(request, "+442079460000", domain="sw.example.net",
                        display_name="Example Widgets")
        self.assertEqual(request.headers.get_all("P-Asserted-Identity"), [
            '"Example Widgets" <sip:+442079460000@sw.example.net;user=phone>',
            '"Example Widgets" <tel:+442079460000>',
        ])
        reparsed = parse_message(request.to_bytes())
        identity = receive_identity(reparsed, trusted=True)  # type: ignore[arg-type]
        self.assertEqual(identity.asserted_number(), "+442079460000")
        assert_identity(request, "+442079460000", tel=True)
        self.assertEqual(request.headers.get_all("P-Asserted-Identity"),
                         ["<tel:+442079460000>"])

    def test_assert_identity_refuses(self) -> None:
        """Only E.164 numbers are asserted, in at least one URI."""
        self.assertRaises(ValueError, assert_identity, invite(), "02079460000", domain="a")
        self.assertRaises(ValueError, assert_identity, invite(), "+442079460000", tel=False)

    def test_private_to_untrusted(self) -> None:
        """Privacy: id towards a vendor outside the trust domain: no PAI,
        From anonymous (tag kept), Privacy passed on."""
        request = invite("Privacy: id")
        privacy = receive_identity(request, trusted=False).privacy
        assert_identity(request, "+442079460000", domain="sw.example.net")
        apply_privacy(request, privacy, next_hop_trusted=False)
        self.assertNotIn("P-Asserted-Identity", request.headers)
        self.assertEqual(request.headers.get("From"), ANONYMOUS_FROM + ";tag=a73kszlfl")
        self.assertEqual(request.from_.tag, "a73kszlfl")
        self.assertTrue(is_anonymous(request.from_.uri))
        self.assertEqual(request.headers.get("Privacy"), "id")
        self.assertEqual(request.headers.get("Subject"), "Quarterly figures")

    def test_private_to_trusted(self) -> None:
        """User privacy towards a trusted peer: PAI kept, Privacy: id added,
        From anonymous, user-level headers gone."""
        request = invite("Privacy: user")
        privacy = receive_identity(request, trusted=False).privacy
        assert_identity(request, "+442079460000", domain="sw.example.net")
        apply_privacy(request, privacy, next_hop_trusted=True)
        self.assertEqual(len(request.headers.get_all("P-Asserted-Identity")), 2)
        self.assertEqual(request.headers.get("Privacy"), "user;id")
        self.assertTrue(is_anonymous(request.from_.uri))
        for name in ("Subject", "Organization", "Call-Info", "User-Agent"):
            self.assertNotIn(name, request.headers)
        self.assertEqual(parse_message(request.to_bytes()).from_.display_name, "Anonymous")

    def test_no_privacy(self) -> None:
        """Without privacy (or with none) the identity goes to any next hop,
        From untouched (RFC 3325 5)."""
        for extra, sent in (((), None), (("Privacy: none",), "none")):
            request = invite(*extra)
            privacy = receive_identity(request, trusted=False).privacy
            assert_identity(request, "+442079460000", domain="sw.example.net")
            apply_privacy(request, privacy, next_hop_trusted=False)
            self.assertEqual(len(request.headers.get_all("P-Asserted-Identity")), 2)
            self.assertEqual(request.from_.display_name, "Reception")
            self.assertEqual(request.headers.get("Privacy"), sent)

    def test_header_privacy(self) -> None:
        """Header privacy removes Call-Info and Organization but keeps the
        identity visible."""
        request = invite("Privacy: header")
        apply_privacy(request, privacy_values(request), next_hop_trusted=False)
        self.assertNotIn("Call-Info", request.headers)
        self.assertNotIn("Organization", request.headers)
        self.assertEqual(request.from_.display_name, "Reception")
        self.assertEqual(request.headers.get("Privacy"), "header")

    def test_critical_session_privacy(self) -> None:
        """Session privacy needs anchored media; critical makes it a 500."""
        request = invite("Privacy: session;critical")
        error = self.assertRaises(SIPError, apply_privacy, request, privacy_values(request),
                                  next_hop_trusted=False, media_anchored=False)
        self.assertEqual(error.code, 500)
        apply_privacy(request, {"session"}, next_hop_trusted=False, media_anchored=False)
        apply_privacy(request, {"session", "critical"}, next_hop_trusted=False)
        self.assertEqual(request.headers.get("Privacy"), "session;critical")

    def test_set_calling_number(self) -> None:
        """The vendor's caller-ID form goes in the From user, tag kept."""
        request = invite()
        set_calling_number(request, "442079460000")
        self.assertEqual(str(request.from_.uri), "sip:442079460000@pbx.example.com;user=phone")
        self.assertEqual(request.from_.tag, "a73kszlfl")
        self.assertEqual(request.from_.display_name, "Reception")


class UriNumberTests(SynchronousTestCase):
    """Numbers read from URIs."""

    def test_forms(self) -> None:
        """Global numbers in sip and tel URIs, local ones with a plan."""
        cases = [
            ("sip:+442079460000@a.example;user=phone", None, "+442079460000"),
            ("tel:+44-20-7946-0000", None, "+442079460000"),
            ("tel:7946-0000;phone-context=+44-20", GB, "+442079460000"),
            ("sip:02079460000@pbx.example.com", GB, "+442079460000"),
            ("sip:02079460000@pbx.example.com", None, "02079460000"),
            ("sip:1001@pbx.example.com", GB, "1001"),
            ("sip:alice@pbx.example.com", None, None),
            ("sip:alice@pbx.example.com", GB, None),
            ("sip:anonymous@anonymous.invalid", GB, None),
            ("sip:pbx.example.com", None, None),
            ("tel:+44", None, None),
        ]
        for text, plan, expected in cases:
            self.assertEqual(uri_number(parse_uri(text), plan), expected, text)
