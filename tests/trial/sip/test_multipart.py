"""Tests for multipart bodies (b2bua.sip.multipart)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip import ParseError, parse_message
from b2bua.sip.multipart import (
    BodyPart,
    boundary_of,
    build_multipart,
    find_part,
    parse_multipart,
)
from tests.trial.sip.sipdata import SDP
from tests.trial.sip.torture_corpus import load


class MultipartTests(SynchronousTestCase):
    """Splitting and building multipart bodies."""

    def test_torture_mpart01(self) -> None:
        """RFC 4475 mpart01: a text part and a binary (S/MIME) part."""
        msg = parse_message(load("mpart01"))
        parts = parse_multipart(msg.headers.get("content-type"), msg.body)
        self.assertEqual(len(parts), 2)
        text = find_part(parts, "text/plain")
        self.assertIsNotNone(text)
        self.assertEqual(text.body, b"Hello")
        binary = find_part(parts, "application/octet-stream")
        self.assertTrue(binary.body.startswith(b"0\x82"))

    def test_round_trip(self) -> None:
        """What build_multipart writes, parse_multipart reads back exactly."""
        parts = [BodyPart([("Content-Type", "application/sdp")], SDP),
                 BodyPart([("Content-Type", "application/isup;version=itu-t92+"),
                           ("Content-Disposition", "signal;handling=optional")],
                          b"\x01\x00\r\n\x02")]
        content_type, body = build_multipart(parts, boundary="unique-boundary-1")
        self.assertEqual(boundary_of(content_type), "unique-boundary-1")
        again = parse_multipart(content_type, body)
        self.assertEqual([(p.headers, p.body) for p in again],
                         [(p.headers, p.body) for p in parts])

    def test_errors(self) -> None:
        """Missing boundary, no closing delimiter and non-multipart types fail."""
        self.assertRaises(ParseError, boundary_of, "application/sdp")
        self.assertRaises(ParseError, boundary_of, "multipart/mixed")
        self.assertRaises(ParseError, parse_multipart, "multipart/mixed;boundary=x",
                          b"--x\r\nContent-Type: a/b\r\n\r\nbody")
        self.assertRaises(ParseError, parse_multipart, "multipart/mixed;boundary=x", b"none")

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(st.binary(max_size=300))
    def test_fuzz(self, data: bytes) -> None:
        """Arbitrary bodies raise only ParseError."""
        try:
            parse_multipart("multipart/mixed;boundary=b1", b"--b1\r\n" + data)
        except ParseError:
            pass
