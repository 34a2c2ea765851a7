"""RFC 4475 and RFC 5118 torture messages through the codec and the minimal UAS.

Every message of the corpus (C{torture/}) has an expected outcome here: the
code the minimal UAS answers, C{"parse"} for a L{ParseError} (dropped, or
answered 400 by the transport when the headers can be read), C{"response"}
for a response whose transaction headers parse, C{"bad-response"} for one
that must be discarded.  Invalid requests are answered with a reason phrase
that names the problem.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip import ParseError, Request, Response, parse_message
from b2bua.sip.auth import DigestServer
from b2bua.sip.uas import MinimalUAS
from tests.trial.sip.torture_corpus import MESSAGES, load

EXPECTED: dict[str, int | str] = {
    "wsinv": 405,
    "intmeth": 501,
    "esc01": 405,
    "escnull": 401,
    "esc02": 501,
    "lwsdisp": 200,
    "longreq": 405,
    "dblreq": 401,
    "semiuri": 200,
    "transports": 200,
    "mpart01": 405,
    "unreason": "response",
    "noreason": "response",
    "badinv01": 400,
    "clerr": "parse",
    "ncl": "parse",
    "scalar02": 400,
    "scalarlg": "bad-response",
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": "parse",
    "lwsstart": "parse",
    "trws": "parse",
    "escruri": 400,
    "baddate": 405,
    "regbadct": 400,
    "badaspec": 400,
    "baddn": 400,
    "badvers": 505,
    "mismatch01": 400,
    "mismatch02": 400,
    "bigcode": "parse",
    "badbranch": 200,
    "insuf": 400,
    "unkscm": 416,
    "novelsc": 416,
    "unksm2": 400,
    "bext01": 420,
    "invut": 405,
    "regaut01": 401,
    "multi01": 400,
    "mcl01": "parse",
    "bcast": "response",
    "zeromf": 200,
    "cparam01": 401,
    "cparam02": 401,
    "regescrt": 401,
    "sdp01": 405,
    "inv2543": 405,
    "ipv6-ipv6-good": 401,
    "ipv6-ipv6-bad": 400,
    "ipv6-port-ambiguous": 401,
    "ipv6-port-unambiguous": 401,
    "ipv6-via-received-param-with-delim": 405,
    "ipv6-via-received-param-no-delim": 200,
    "ipv6-ipv6-in-sdp": 405,
    "ipv6-mult-ip-in-header": 405,
    "ipv6-mult-ip-in-sdp": 405,
    "ipv6-ipv4-mapped-ipv6": 405,
    "ipv6-ipv6-bug-abnf-3-colons": 200,
    "ipv6-ipv6-correct-abnf-2-colons": 200,
}


#: RFC 5118 messages published with a wrong Content-Length (an erratum):
#: they are run with the length corrected.
MISSTATED_LENGTH = frozenset({"ipv6-ipv6-in-sdp", "ipv6-mult-ip-in-sdp", "ipv6-ipv4-mapped-ipv6"})


class _Transaction:
    """Records the response the UAS gives."""

    response: Response | None = None

    def respond(self, response: Response) -> None:
        """Keep C{response}."""
        self.response = response


def _fix_length(data: bytes) -> bytes:
    """Correct the Content-Length of the RFC 5118 messages that misstate it."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = [b"Content-Length: %d" % len(body) if line.lower().startswith(b"content-length")
             else line for line in head.split(b"\r\n")]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class TortureTests(SynchronousTestCase):
    """Each torture message meets its expected outcome."""

    def outcome(self, data: bytes) -> tuple[int | str, object]:
        """Run C{data} through the codec and, for requests, the minimal UAS."""
        try:
            msg = parse_message(data)
        except ParseError as error:
            self.assertTrue(error.reason)
            return "parse", error
        if isinstance(msg, Response):
            try:
                msg.via, msg.cseq, msg.call_id, msg.from_, msg.to  # noqa: B018
            except ParseError as error:
                return "bad-response", error
            return "response", msg
        uas = MinimalUAS(DigestServer("example.com", b"secret", Clock()), lambda *a: None)
        tx = _Transaction()
        uas.request_received(msg, tx)
        assert tx.response is not None
        # whatever is answered can be written and read back
        parse_message(tx.response.to_bytes())
        return tx.response.code, tx.response

    def test_manifest_covered(self) -> None:
        """Every corpus message has an expectation, and no expectation is stale."""
        self.assertEqual(set(EXPECTED), {m.name for m in MESSAGES})

    def test_every_message(self) -> None:
        """Each message gives its expected outcome; 4xx reasons name the problem."""
        for message in MESSAGES:
            data = load(message.name)
            if message.name in MISSTATED_LENGTH:
                data = _fix_length(data)
            got, detail = self.outcome(data)
            self.assertEqual(got, EXPECTED[message.name], f"{message.name}: {detail!r}")
            if got == 400:
                self.assertNotEqual(detail.reason, "Bad Request", message.name)
            if message.kind == "valid":
                self.assertNotIn(got, ("parse", "bad-response", 400), message.name)

    def test_escapes_kept_and_compared(self) -> None:
        """esc01: escaped user parts are kept as sent and compare unescaped."""
        msg = parse_message(load("esc01"))
        self.assertIn("%", msg.uri.user)
        self.assertNotIn("%", msg.uri.user_unescaped)

    def test_escaped_null_contacts_distinct(self) -> None:
        """escnull: %00 does not shorten a user; both contacts stay distinct."""
        msg = parse_message(load("escnull"))
        users = [c.uri.user_unescaped for c in msg.contact]
        self.assertEqual(len(set(users)), 2)
        self.assertTrue(all("\x00" in u for u in users))

    def test_semicolon_in_user(self) -> None:
        """semiuri: a user part may contain ';' (it is not a URI parameter)."""
        msg = parse_message(load("semiuri"))
        self.assertEqual(msg.uri.user_unescaped, "user;par=u@example.net")
        self.assertEqual(msg.uri.params, {})

    def test_contact_param_placement(self) -> None:
        """cparam01/cparam02: contact-params versus URI parameters."""
        header_param = parse_message(load("cparam01")).contact[0]
        self.assertIn("unknownparam", header_param.params)
        self.assertNotIn("unknownparam", header_param.uri.params)
        uri_param = parse_message(load("cparam02")).contact[0]
        self.assertIn("unknownparam", uri_param.uri.params)

    def test_multipart_body_framed_by_length(self) -> None:
        """mpart01: a binary multipart body is cut by Content-Length alone."""
        msg = parse_message(load("mpart01"))
        self.assertEqual(len(msg.body), int(msg.headers.get("content-length")))
        self.assertTrue(msg.content_type.startswith("multipart/"))

    def test_double_request_tail_discarded(self) -> None:
        """dblreq: the octets after the first request's body are not kept."""
        msg = parse_message(load("dblreq"))
        self.assertEqual(msg.method, "REGISTER")
        self.assertEqual(msg.body, b"")

    def test_ipv6_ports(self) -> None:
        """RFC 5118 4.3/4.4: the port is outside the brackets or absent."""
        ambiguous = parse_message(load("ipv6-port-ambiguous"))
        self.assertEqual((ambiguous.uri.host, ambiguous.uri.port), ("[2001:db8::10:5070]", None))
        clear = parse_message(load("ipv6-port-unambiguous"))
        self.assertEqual((clear.uri.host, clear.uri.port), ("[2001:db8::10]", 5070))

    def test_ipv6_sdp_with_corrected_length(self) -> None:
        """RFC 5118 SDP messages parse once their misstated length is fixed."""
        for name in sorted(MISSTATED_LENGTH):
            msg = parse_message(_fix_length(load(name)))
            self.assertIsInstance(msg, Request)
            self.assertIn(b"IP6", msg.body)

    def test_long_request(self) -> None:
        """longreq: many Vias and long values parse."""
        msg = parse_message(load("longreq"))
        self.assertGreater(len(msg.via), 30)
