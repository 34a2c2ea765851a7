"""Tests for the SIP message codec (b2bua.sip.message, headers, uri)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip import (
    URI,
    Headers,
    ParseError,
    Request,
    Response,
    make_response,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
)
from b2bua.sip.headers import parse_cseq, split_list
from tests.trial.sip import sipdata


class ParseRequestTests(SynchronousTestCase):
    """Requests parse into typed values and write back unchanged."""

    def setUp(self) -> None:
        """Parse the realistic INVITE fixture."""
        self.msg = parse_message(sipdata.INVITE)

    def test_request_line(self) -> None:
        """Method, Request-URI and version come from the request line."""
        self.assertIsInstance(self.msg, Request)
        self.assertEqual(self.msg.method, "INVITE")
        self.assertEqual(self.msg.uri.user, "bob")
        self.assertEqual(self.msg.uri.host, "biloxi.example.com")
        self.assertEqual(self.msg.version, "SIP/2.0")

    def test_vias_split_top_first(self) -> None:
        """Comma-joined Via values split into one Via each, top first, IPv6 included."""
        vias = self.msg.via
        self.assertEqual([v.branch for v in vias], ["z9hG4bK776asdhds", "z9hG4bK1", "z9hG4bK2"])
        self.assertEqual(vias[0].port, 5060)
        self.assertIsNone(vias[0].params["rport"])
        self.assertEqual(vias[2].host, "[2001:db8::9]")
        self.assertEqual(vias[2].port, 5070)
        self.assertEqual(vias[1].transport, "TCP")

    def test_from_to_with_quoted_comma(self) -> None:
        """A comma inside a quoted display name does not split the header."""
        self.assertEqual(self.msg.from_.display_name, "Alice, A.")
        self.assertEqual(self.msg.from_.tag, "1928301774")
        self.assertIsNone(self.msg.to.tag)
        self.assertEqual(self.msg.to.display_name, "Bob")

    def test_call_id_cseq(self) -> None:
        """Call-ID and CSeq are typed."""
        self.assertEqual(self.msg.call_id, "a84b4c76e66710@pc33.atlanta.example.com")
        self.assertEqual((self.msg.cseq.number, self.msg.cseq.method), (314159, "INVITE"))
        self.assertEqual(self.msg.max_forwards, 70)

    def test_record_route_list(self) -> None:
        """Record-Route values are split in order and keep their lr parameter."""
        rr = self.msg.record_route
        self.assertEqual([r.uri.host for r in rr], ["p2.example.com", "p1.example.com"])
        self.assertIn("lr", rr[0].uri.params)

    def test_contact_uri_params_vs_header_params(self) -> None:
        """In a name-addr, URI parameters stay with the URI; header ones with the header."""
        contact = self.msg.contact[0]
        self.assertEqual(contact.uri.transport, "tcp")
        self.assertEqual(contact.params["expires"], "60")

    def test_body(self) -> None:
        """The body is cut at Content-Length and the content type is known."""
        self.assertEqual(self.msg.body, sipdata.SDP)
        self.assertEqual(self.msg.content_type, "application/sdp")

    def test_round_trip(self) -> None:
        """A well-formed message writes back byte for byte (unknown header included)."""
        self.assertEqual(self.msg.to_bytes(), sipdata.INVITE.replace(
            b"X-Custom-Thing:   spaced", b"X-Custom-Thing: spaced"))
        self.assertEqual(self.msg.headers.get("x-custom-thing"), "spaced   value ; with=params")

    def test_response_round_trip(self) -> None:
        """A response parses and writes back unchanged."""
        msg = parse_message(sipdata.OK_200)
        self.assertIsInstance(msg, Response)
        self.assertEqual((msg.code, msg.reason), (200, "OK"))
        self.assertEqual(msg.to.tag, "a6c85cf")
        self.assertEqual(msg.to_bytes(), sipdata.OK_200)


class HeaderFormTests(SynchronousTestCase):
    """Header names, compact forms, folding and lists."""

    def test_compact_forms_and_case(self) -> None:
        """Compact forms and any case find the full header."""
        data = (b"OPTIONS sip:x@example.com SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKa\r\n"
                b"f: <sip:a@b>;tag=1\r\nt: <sip:x@example.com>\r\ni: abc\r\n"
                b"cSeQ: 1 OPTIONS\r\nl: 0\r\n\r\n")
        msg = parse_message(data)
        self.assertEqual(msg.call_id, "abc")
        self.assertEqual(msg.headers.get("Call-ID"), "abc")
        self.assertEqual(msg.via[0].branch, "z9hG4bKa")
        self.assertEqual(msg.cseq.number, 1)
        self.assertIn("CONTENT-LENGTH", msg.headers)

    def test_line_folding(self) -> None:
        """Continuation lines are joined with one space."""
        data = sipdata.request(extra=b"Subject: I know you're there,\r\n   pick up!\r\n")
        msg = parse_message(data)
        self.assertEqual(msg.headers.get("subject"), "I know you're there, pick up!")

    def test_split_list_keeps_quotes_and_angles(self) -> None:
        """Commas inside quotes and <> do not split; empty elements vanish."""
        self.assertEqual(
            split_list('"a, b" <sip:x@y>, <sip:c@d;p=1,2>,, <sip:e@f>'),
            ['"a, b" <sip:x@y>', "<sip:c@d;p=1,2>", "<sip:e@f>"],
        )

    def test_headers_mutation_invalidates_cache(self) -> None:
        """Changing a header is seen by the typed accessor."""
        msg = parse_message(sipdata.INVITE)
        self.assertEqual(msg.call_id, "a84b4c76e66710@pc33.atlanta.example.com")
        msg.headers.set("Call-ID", "new-id")
        self.assertEqual(msg.call_id, "new-id")

    def test_mutation_keeps_other_typed_values(self) -> None:
        """A change to one header drops only that header's typed value:
        the others are the objects parsed before (not parsed again), and
        every change, compact form or not, is seen."""
        msg = parse_message(sipdata.INVITE)
        from_, to, cseq, via = msg.from_, msg.to, msg.cseq, msg.via
        msg.headers.add("Via", "SIP/2.0/UDP extra.example.com;branch=z9hG4bKextra")
        self.assertIs(msg.from_, from_)
        self.assertIs(msg.to, to)
        self.assertIs(msg.cseq, cseq)
        self.assertIsNot(msg.via, via)
        self.assertEqual(msg.via[-1].host, "extra.example.com")
        msg.headers.set("f", "<sip:new@example.com>;tag=9")
        self.assertEqual(msg.from_.tag, "9")
        self.assertIs(msg.to, to)
        msg.headers.remove("t")
        with self.assertRaises(ParseError):
            msg.to  # noqa: B018
        self.assertIs(msg.cseq, cseq)

    def test_set_top_via(self) -> None:
        """L{Message.set_top_via} writes the top Via, keeps the others, and
        is what the next reader of C{via} gets."""
        msg = parse_message(sipdata.INVITE)
        others = [str(v) for v in msg.via][1:]
        top = msg.via[0]
        top.params["received"] = "192.0.2.7"
        msg.set_top_via(top)
        self.assertIs(msg.via[0], top)
        self.assertEqual([str(v) for v in msg.via][1:], others)
        again = parse_message(msg.to_bytes())
        self.assertEqual(again.via[0].params["received"], "192.0.2.7")
        self.assertEqual(len(again.via), len(others) + 1)
        with self.assertRaises(ParseError):
            Request("OPTIONS", "sip:a@b").set_top_via(top)

    def test_add_first_and_pop_first(self) -> None:
        """A proxy-style Via push and pop keeps the rest."""
        msg = parse_message(sipdata.INVITE)
        msg.headers.add_first("Via", "SIP/2.0/UDP me.example.com;branch=z9hG4bKme")
        self.assertEqual(msg.via[0].branch, "z9hG4bKme")
        self.assertEqual(len(msg.via), 4)
        self.assertEqual(msg.headers.pop_first_value("Via"),
                         "SIP/2.0/UDP me.example.com;branch=z9hG4bKme")
        self.assertEqual(msg.headers.pop_first_value("Via"),
                         "SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport")
        self.assertEqual(msg.via[0].branch, "z9hG4bK1")

    def test_constructed_message_gets_content_length(self) -> None:
        """A built message always carries the right Content-Length."""
        req = Request("MESSAGE", URI(user="bob", host="example.com"),
                      [("Content-Length", "99"), ("Content-Type", "text/plain")], b"hi")
        out = req.to_bytes()
        self.assertIn(b"Content-Length: 2\r\n", out)
        self.assertTrue(out.startswith(b"MESSAGE sip:bob@example.com SIP/2.0\r\n"))
        headers = Headers([("To", "<sip:x@y>")])
        resp = Response(486, headers=headers)
        self.assertIn(b"SIP/2.0 486 Busy Here\r\n", resp.to_bytes())
        self.assertIn(b"\r\nContent-Length: 0\r\n\r\n", resp.to_bytes())


class CompactTests(SynchronousTestCase):
    """A compacted message (kept for a long call) loses nothing."""

    def test_round_trip_and_typed_values(self) -> None:
        """After compact() the bytes, header lines and typed values are the same."""
        msg = parse_message(sipdata.INVITE)
        before = msg.to_bytes()
        lines = list(msg.headers)
        tag = msg.from_.tag
        msg.compact()
        self.assertIsInstance(msg.headers._fields, str)
        self.assertEqual(msg.from_.tag, tag)
        self.assertEqual(msg.via[0].branch, "z9hG4bK776asdhds")
        self.assertEqual(list(msg.headers), lines)
        self.assertEqual(msg.to_bytes(), before)

    def test_changes_after_compact(self) -> None:
        """Every change of the header lines works on a packed message."""
        for change in (lambda h: h.add("Subject", "x"), lambda h: h.add_first("Via", "v"),
                       lambda h: h.set("Subject", "x"), lambda h: h.set_all("Subject", ["x"]),
                       lambda h: h.remove("Subject"), lambda h: h.pop_first_value("Via")):
            msg = parse_message(sipdata.INVITE)
            expected = parse_message(sipdata.INVITE)
            change(expected.headers)
            msg.compact()
            change(msg.headers)
            self.assertEqual(msg.to_bytes(), expected.to_bytes())
            self.assertEqual(len(msg.headers), len(expected.headers))

    def test_response_and_copy(self) -> None:
        """A response made from a compacted request, and a copy of packed headers."""
        msg = parse_message(sipdata.INVITE)
        expected = make_response(msg, 180, to_tag="t1").to_bytes()
        msg.compact()
        self.assertEqual(make_response(msg, 180, to_tag="t1").to_bytes(), expected)
        self.assertEqual(list(msg.headers.copy()), list(msg.headers))

    def test_shared_strings(self) -> None:
        """Known methods, the version and usual reason phrases are one string
        object across messages (a message kept long does not own them)."""
        a, b = parse_message(sipdata.INVITE), parse_message(sipdata.INVITE)
        assert isinstance(a, Request) and isinstance(b, Request)
        self.assertIs(a.method, b.method)
        self.assertIs(a.version, b.version)
        ok = make_response(a, 200, to_tag="t").to_bytes()
        r1, r2 = parse_message(ok), parse_message(ok)
        assert isinstance(r1, Response) and isinstance(r2, Response)
        self.assertIs(r1.reason, r2.reason)
        odd = parse_message(ok.replace(b"200 OK", b"200 Fine"))
        assert isinstance(odd, Response)
        self.assertEqual(odd.reason, "Fine")

    def test_line_feed_left_unpacked(self) -> None:
        """A value holding a line feed (set by code) keeps the field records."""
        request = Request("MESSAGE", "sip:bob@example.com",
                          [("Subject", "a\nb"), ("Call-ID", "x")])
        request.compact()
        self.assertIsInstance(request.headers._fields, list)
        self.assertEqual(request.headers.get("subject"), "a\nb")

    def test_names_kept(self) -> None:
        """Compact forms and unusual spellings come back as they were written."""
        data = (b"OPTIONS sip:x@example.com SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKa\r\n"
                b"f: <sip:a@b>;tag=1\r\nt: <sip:x@example.com>\r\ni: abc\r\n"
                b"cSeQ: 1 OPTIONS\r\nX-Odd: \r\nl: 0\r\n\r\n")
        msg = parse_message(data)
        msg.compact()
        self.assertEqual(msg.to_bytes(), parse_message(data).to_bytes())
        self.assertEqual(msg.call_id, "abc")
        self.assertEqual(msg.headers.get("x-odd"), "")


class URITests(SynchronousTestCase):
    """SIP, SIPS, tel and other URIs."""

    def test_full_sip_uri(self) -> None:
        """User, password, host, port, parameters and headers are all kept."""
        uri = parse_uri("sips:alice:secret@atlanta.example.com:5061;transport=tcp;lr?subject=hi")
        self.assertEqual(uri.scheme, "sips")
        self.assertEqual((uri.user, uri.password), ("alice", "secret"))
        self.assertEqual((uri.host, uri.port), ("atlanta.example.com", 5061))
        self.assertEqual(uri.params, {"transport": "tcp", "lr": None})
        self.assertEqual(uri.headers, "subject=hi")
        self.assertEqual(str(uri), "sips:alice:secret@atlanta.example.com:5061;transport=tcp;lr?subject=hi")

    def test_ipv6_reference(self) -> None:
        """IPv6 references keep brackets in the URI and lose them for sockets."""
        uri = parse_uri("sip:[2001:db8::10]:5070")
        self.assertEqual(uri.host, "[2001:db8::10]")
        self.assertEqual(uri.host_unbracketed, "2001:db8::10")
        self.assertEqual(uri.port, 5070)
        self.assertRaises(ParseError, parse_uri, "sip:[2001:db8::zz]")

    def test_escapes(self) -> None:
        """Escaped user parts compare equal to unescaped ones; bad escapes fail."""
        a, b = parse_uri("sip:%61lice@atlanta.com"), parse_uri("sip:alice@AtLanTa.CoM")
        self.assertEqual(a.user_unescaped, "alice")
        self.assertEqual(a, b)
        self.assertRaises(ParseError, parse_uri, "sip:al%zzice@atlanta.com")

    def test_tel_and_other_schemes(self) -> None:
        """tel URIs keep their parameters; other schemes parse opaque."""
        tel = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
        self.assertEqual((tel.scheme, tel.user), ("tel", "+1-201-555-0123"))
        self.assertEqual(tel.params["phone-context"], "example.com")
        self.assertEqual(str(tel), "tel:+1-201-555-0123;phone-context=example.com")
        other = parse_uri("http://www.example.com/x")
        self.assertEqual((other.scheme, other.opaque), ("http", "//www.example.com/x"))

    def test_bad_uris(self) -> None:
        """Malformed URIs raise ParseError."""
        for bad in ("sip:", "sip:user@", "nocolon", "sip:host:99999", "sip:a b@c",
                    "sip:host:12a", "sip:ex ample.com"):
            self.assertRaises(ParseError, parse_uri, bad)


class HeaderValueTests(SynchronousTestCase):
    """name-addr, Via and CSeq values."""

    def test_addr_spec_params_belong_to_header(self) -> None:
        """Without <>, parameters after the URI are header parameters."""
        na = parse_name_addr("sip:bob@example.com;tag=abc")
        self.assertEqual(na.tag, "abc")
        self.assertEqual(na.uri.params, {})

    def test_display_name_escapes(self) -> None:
        """Quoted display names unescape and quote again on output."""
        na = parse_name_addr(r'"Bob \"the\" Builder" <sip:bob@example.com>;tag=1')
        self.assertEqual(na.display_name, 'Bob "the" Builder')
        self.assertEqual(str(na), r'"Bob \"the\" Builder" <sip:bob@example.com>;tag=1')

    def test_params_made_on_first_use(self) -> None:
        """An address without parameters has no table until one is set;
        without_tag() copies all but the tag."""
        na = parse_name_addr("<sip:a@b>")
        self.assertIsNone(na._params)
        self.assertIsNone(na.tag)
        self.assertEqual(str(na), "<sip:a@b>")
        na.tag = None
        self.assertIsNone(na._params)
        na.tag = "x"
        self.assertEqual(str(na), "<sip:a@b>;tag=x")
        tagged = parse_name_addr('"A" <sip:a@b>;tag=1;expires=5')
        bare = tagged.without_tag()
        self.assertEqual(str(bare), '"A" <sip:a@b>;expires=5')
        self.assertEqual(tagged.tag, "1")
        self.assertIsNot(bare.uri, tagged.uri)

    def test_token_display_name_and_wildcard(self) -> None:
        """Unquoted display names and the * contact parse."""
        na = parse_name_addr("Bob Smith <sip:bob@example.com>")
        self.assertEqual(na.display_name, "Bob Smith")
        self.assertTrue(parse_name_addr("*").star)

    def test_via_whitespace_tolerance(self) -> None:
        """Linear whitespace around the protocol parts and the port colon is allowed."""
        via = parse_via("SIP / 2.0 / UDP  host.example.com : 5060 ;branch=z9hG4bKx ; received=1.2.3.4")
        self.assertEqual((via.transport, via.host, via.port), ("UDP", "host.example.com", 5060))
        self.assertEqual(via.params["received"], "1.2.3.4")

    def test_bad_values(self) -> None:
        """Bad Via, CSeq and name-addr values raise ParseError."""
        for bad in ("SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP host;branch", "SIP/2.0/UDP h;rport=x"):
            self.assertRaises(ParseError, parse_via, bad)
        for bad in ("abc INVITE", "1", "99999999999 INVITE", "1 INV@ITE"):
            self.assertRaises(ParseError, parse_cseq, bad)
        for bad in ("<sip:a@b", '"unterminated <sip:a@b>', "Bob <sip:a@b> junk", ""):
            self.assertRaises(ParseError, parse_name_addr, bad)


class BadMessageTests(SynchronousTestCase):
    """Malformed messages raise ParseError with a reason."""

    def assertParseError(self, data: bytes, fragment: str) -> None:
        """C{data} fails to parse with a reason containing C{fragment}."""
        error = self.assertRaises(ParseError, parse_message, data)
        self.assertIn(fragment, error.reason)

    def test_content_length_too_large(self) -> None:
        """A body shorter than Content-Length is an error."""
        self.assertParseError(sipdata.request(body=b"abc").replace(
            b"Content-Length: 3", b"Content-Length: 50"), "Content-Length")

    def test_extra_datagram_bytes_dropped(self) -> None:
        """Bytes past Content-Length are dropped (RFC 3261 18.3)."""
        msg = parse_message(sipdata.request(body=b"abc") + b"garbage")
        self.assertEqual(msg.body, b"abc")

    def test_size_limit(self) -> None:
        """Messages above the size limit are refused."""
        self.assertParseError(sipdata.request(body=b"x" * 70000), "larger than")
        self.assertEqual(len(parse_message(sipdata.request(body=b"x" * 100), max_size=1000).body), 100)

    def test_bad_start_lines(self) -> None:
        """Bad request and status lines are named."""
        self.assertParseError(b"INVITE sip:a@b\r\n\r\n", "request line")
        self.assertParseError(b"SIP/2.0 9999 Huh\r\n\r\n", "status line")
        self.assertParseError(b"SIP/2.0 099 Huh\r\n\r\n", "status code")
        self.assertParseError(b"", "empty")

    def test_bad_header_lines(self) -> None:
        """A header line without colon or with a bad name is refused."""
        self.assertParseError(sipdata.request(extra=b"NoColonHere\r\n"), "colon")
        self.assertParseError(sipdata.request(extra=b"Bad Name: x\r\n"), "header name")

    def test_leading_crlf_ignored(self) -> None:
        """CRLFs before the start line are skipped (RFC 3261 7.5)."""
        self.assertEqual(parse_message(b"\r\n\r\n" + sipdata.request()).method, "OPTIONS")

    def test_non_utf8_round_trips(self) -> None:
        """Bytes that are not UTF-8 survive a round trip."""
        data = sipdata.request(extra=b"Subject: caf\xe9\r\n")
        self.assertEqual(parse_message(data).to_bytes(), data)


class MakeResponseTests(SynchronousTestCase):
    """make_response follows RFC 3261 8.2.6.2."""

    def test_copies_and_tags(self) -> None:
        """Via, From, Call-ID, CSeq are copied; To gets the tag; Record-Route for 1xx/2xx."""
        req = parse_message(sipdata.INVITE)
        resp = parse_message(make_response(req, 180, to_tag="t1").to_bytes())
        self.assertEqual(resp.code, 180)
        self.assertEqual(resp.reason, "Ringing")
        self.assertEqual(len(resp.via), 3)
        self.assertEqual(resp.to.tag, "t1")
        self.assertEqual(resp.from_.tag, "1928301774")
        self.assertEqual(resp.cseq, req.cseq)
        self.assertEqual(len(resp.record_route), 2)
        self.assertNotIn("record-route", make_response(req, 486, to_tag="t1").headers)
        self.assertIsNone(make_response(req, 100, to_tag="t1").to.tag)

    def test_existing_tag_kept(self) -> None:
        """A To tag already present is not replaced."""
        req = parse_message(sipdata.request(extra=b""))
        req.headers.set("To", "<sip:bob@biloxi.example.com>;tag=old")
        self.assertEqual(make_response(req, 200, to_tag="new").to.tag, "old")

    def test_extra_headers_and_reason(self) -> None:
        """Extra headers and a custom reason are applied."""
        req = parse_message(sipdata.request())
        resp = make_response(req, 400, "Bad CSeq", headers=[("Warning", '399 x "y"')])
        self.assertEqual(resp.reason, "Bad CSeq")
        self.assertEqual(resp.headers.get("warning"), '399 x "y"')


_SAMPLES = [sipdata.INVITE, sipdata.OK_200, sipdata.request(body=b"hello"),
            sipdata.request("REGISTER", b"Contact: *\r\nExpires: 0\r\n")]


def _touch(msg: Request | Response) -> None:
    """Read every typed accessor (each may raise only ParseError)."""
    for name in ("via", "from_", "to", "call_id", "cseq", "contact", "route",
                 "record_route", "max_forwards", "expires", "content_type"):
        try:
            getattr(msg, name)
        except ParseError:
            pass
    if isinstance(msg, Request):
        try:
            msg.uri  # noqa: B018
        except ParseError:
            pass
    msg.to_bytes()


class FuzzTests(SynchronousTestCase):
    """Mutated messages raise ParseError or parse; nothing else escapes."""

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(st.sampled_from(_SAMPLES), st.lists(
        st.tuples(st.integers(0, 3000), st.binary(min_size=0, max_size=8), st.integers(0, 12)),
        min_size=1, max_size=6))
    def test_mutations(self, sample: bytes, edits: list[tuple[int, bytes, int]]) -> None:
        """Random splices (insertions and deletions) of valid messages."""
        data = bytearray(sample)
        for position, insert, delete in edits:
            position %= len(data) + 1
            data[position:position + delete] = insert
        try:
            msg = parse_message(bytes(data))
        except ParseError:
            return
        _touch(msg)

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(st.binary(max_size=400))
    def test_random_bytes(self, data: bytes) -> None:
        """Arbitrary bytes never raise anything but ParseError."""
        try:
            msg = parse_message(data)
        except ParseError:
            return
        _touch(msg)

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(st.text(max_size=80))
    def test_header_value_parsers(self, text: str) -> None:
        """Each header value parser raises only ParseError on arbitrary text."""
        for parser in (parse_uri, parse_name_addr, parse_via, parse_cseq, split_list):
            try:
                parser(text)
            except ParseError:
                pass
