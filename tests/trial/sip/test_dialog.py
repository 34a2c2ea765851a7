"""Tests for L{b2bua.sip.dialog}: dialog creation, in-dialog requests, matching."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.dialog import (
    Dialog,
    DialogId,
    DialogState,
    DialogTable,
)
from b2bua.sip.errors import ParseError, SIPError
from b2bua.sip.headers import parse_name_addr
from b2bua.sip.message import Request, Response, make_response, parse_message

CALL_ID = "a84b4c76e66710@pc33.atlanta.example.com"
BOB_TAG = "a6c85cf"
ALICE_CONTACT = parse_name_addr("<sip:alice@192.0.2.10:5060;transport=udp>")
BOB_CONTACT = parse_name_addr("<sip:bob@192.0.2.20:5062>")


def _invite(uri: str = "sip:bob@biloxi.example.com", contact: str | None =
            "<sip:alice@192.0.2.10:5060;transport=udp>",
            record_route: str | None = None, from_tag: str | None = "1928301774",
            cseq: int = 314159, method: str = "INVITE", extra: str = "") -> Request:
    """A dialog-creating request as the UAS receives it (a proxy chain's RR)."""
    lines = [
        f"{method} {uri} SIP/2.0",
        "Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bKp2, "
        "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport",
        "Max-Forwards: 68",
        "To: Bob <sip:bob@biloxi.example.com>",
        'From: "Alice" <sip:alice@atlanta.example.com>'
        + (f";tag={from_tag}" if from_tag else ""),
        f"Call-ID: {CALL_ID}",
        f"CSeq: {cseq} {method}",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if record_route is not None:
        lines.append(f"Record-Route: {record_route}")
    if extra:
        lines.append(extra)
    lines.append("Content-Length: 0")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def _response(request: Request, code: int, to_tag: str | None = "a6c85cf",
              contact: str | None = "<sip:bob@192.0.2.20:5062>",
              record_route: str | None = None, extra: list[tuple[str, str]] | None = None,
              ) -> Response:
    """A response to C{request} as the UAC receives it, via the wire codec."""
    headers = list(extra or [])
    if contact is not None:
        headers.append(("Contact", contact))
    response = make_response(request, code, to_tag=to_tag, headers=headers)
    if record_route is not None:
        response.headers.set("Record-Route", record_route)
    msg = parse_message(response.to_bytes())
    assert isinstance(msg, Response)
    return msg


RR = "<sip:p2.example.com;lr>, <sip:p1.example.com;lr>"


def _uac_dialog(code: int = 200, record_route: str | None = RR, **kw) -> Dialog:
    """A UAC dialog built from an INVITE and a response to it."""
    invite = _invite()
    return Dialog.from_uac(invite, _response(invite, code, record_route=record_route, **kw),
                           ALICE_CONTACT)


def _uas_dialog(record_route: str | None = RR, confirmed: bool = True, **kw) -> Dialog:
    """A UAS dialog built from a received INVITE."""
    return Dialog.from_uas(_invite(record_route=record_route, **kw), BOB_TAG, BOB_CONTACT,
                           confirmed=confirmed)


def _reliable_180(invite: Request, rseq: int, to_tag: str = "a6c85cf") -> Response:
    """A reliable provisional response (RFC 3262) with RSeq C{rseq}."""
    return _response(invite, 180, to_tag=to_tag,
                     extra=[("Require", "100rel"), ("RSeq", str(rseq))])


class UACCreationTests(SynchronousTestCase):
    """RFC 3261 12.1.2: dialogs created by responses to our requests."""

    def test_early_from_180(self) -> None:
        """A 180 with a To tag creates an early dialog holding the 12.1.2 state."""
        invite = _invite()
        d = Dialog.from_uac(invite, _response(invite, 180, record_route=RR), ALICE_CONTACT)
        self.assertIs(d.state, DialogState.EARLY)
        self.assertTrue(d.uac)
        self.assertEqual(d.id, DialogId(CALL_ID, "1928301774", "a6c85cf"))
        self.assertEqual(d.local_seq, 314159)
        self.assertIsNone(d.remote_seq)
        self.assertEqual(str(d.remote_target), "sip:bob@192.0.2.20:5062")
        self.assertEqual(str(d.local_uri), '"Alice" <sip:alice@atlanta.example.com>')
        self.assertEqual(str(d.remote_uri), '"Bob" <sip:bob@biloxi.example.com>')
        self.assertIsNone(d.local_uri.tag)
        self.assertIsNone(d.remote_uri.tag)
        self.assertIs(d.local_contact, ALICE_CONTACT)
        self.assertFalse(d.secure)

    def test_route_set_reversed(self) -> None:
        """The UAC's route set is the response's Record-Route in reverse order."""
        d = _uac_dialog(200)
        self.assertEqual([str(r) for r in d.route_set],
                         ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"])

    def test_confirmed_from_200(self) -> None:
        """A 2xx creates a confirmed dialog."""
        self.assertIs(_uac_dialog(200).state, DialogState.CONFIRMED)

    def test_no_dialog_without_to_tag(self) -> None:
        """A 1xx without a To tag, a 100 or a non-2xx final creates no dialog."""
        invite = _invite()
        for response in (_response(invite, 180, to_tag=None), _response(invite, 100),
                         _response(invite, 486)):
            self.assertRaises(ValueError, Dialog.from_uac, invite, response, ALICE_CONTACT)

    def test_missing_contact(self) -> None:
        """A dialog-creating response without Contact raises SIPError 400."""
        invite = _invite()
        exc = self.assertRaises(SIPError, Dialog.from_uac, invite,
                                _response(invite, 200, contact=None), ALICE_CONTACT)
        self.assertEqual((exc.code, exc.reason), (400, "Missing Contact"))

    def test_bad_contact(self) -> None:
        """A wildcard, a non-SIP URI, several URIs or garbage in Contact is a 400."""
        invite = _invite()
        for contact in ("*", "<tel:+15551234>", "<sip:a@h1>, <sip:b@h2>", "<sip:@@>"):
            exc = self.assertRaises(SIPError, Dialog.from_uac, invite,
                                    _response(invite, 200, contact=contact), ALICE_CONTACT)
            self.assertEqual((exc.code, exc.reason), (400, "Bad Contact"), contact)

    def test_early_to_confirmed(self) -> None:
        """confirm(2xx) confirms and recomputes route set and target from the 2xx."""
        invite = _invite()
        d = Dialog.from_uac(invite, _response(invite, 183, record_route=RR), ALICE_CONTACT)
        ok = _response(invite, 200, contact="<sip:bob@192.0.2.99>",
                       record_route="<sip:p3.example.com;lr>")
        d.confirm(ok)
        self.assertIs(d.state, DialogState.CONFIRMED)
        self.assertEqual(str(d.remote_target), "sip:bob@192.0.2.99")
        self.assertEqual([str(r) for r in d.route_set], ["<sip:p3.example.com;lr>"])
        d.confirm(ok)
        self.assertIs(d.state, DialogState.CONFIRMED)

    def test_confirm_needs_own_2xx(self) -> None:
        """A UAC dialog is confirmed only by a 2xx carrying its remote tag."""
        invite = _invite()
        d = Dialog.from_uac(invite, _response(invite, 180), ALICE_CONTACT)
        self.assertRaises(ValueError, d.confirm)
        self.assertRaises(ValueError, d.confirm, _response(invite, 200, to_tag="other"))
        self.assertIs(d.state, DialogState.EARLY)

    def test_early_terminated_by_final_error(self) -> None:
        """terminate() ends an early dialog; it then builds and confirms nothing."""
        invite = _invite()
        d = Dialog.from_uac(invite, _response(invite, 180), ALICE_CONTACT)
        d.terminate()
        self.assertIs(d.state, DialogState.TERMINATED)
        self.assertRaises(ValueError, d.create_request, "BYE")
        self.assertRaises(ValueError, d.confirm, _response(invite, 200))


class UASCreationTests(SynchronousTestCase):
    """RFC 3261 12.1.1: dialogs created by our responses."""

    def test_state_from_request(self) -> None:
        """from_uas takes the 12.1.1 state from the request; route set in order."""
        d = _uas_dialog(confirmed=False)
        self.assertIs(d.state, DialogState.EARLY)
        self.assertFalse(d.uac)
        self.assertEqual(d.id, DialogId(CALL_ID, BOB_TAG, "1928301774"))
        self.assertEqual(d.remote_seq, 314159)
        self.assertIsNone(d.local_seq)
        self.assertEqual(str(d.remote_target), "sip:alice@192.0.2.10:5060;transport=udp")
        self.assertEqual([str(r) for r in d.route_set],
                         ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"])
        self.assertEqual(str(d.local_uri), '"Bob" <sip:bob@biloxi.example.com>')
        self.assertEqual(str(d.remote_uri), '"Alice" <sip:alice@atlanta.example.com>')

    def test_early_to_confirmed(self) -> None:
        """A UAS confirms its early dialog when it sends the 2xx."""
        d = _uas_dialog(confirmed=False)
        d.confirm()
        self.assertIs(d.state, DialogState.CONFIRMED)

    def test_confirmed_directly(self) -> None:
        """confirmed=True creates the dialog of a 2xx sent without 1xx."""
        self.assertIs(_uas_dialog(confirmed=True).state, DialogState.CONFIRMED)

    def test_missing_contact(self) -> None:
        """A dialog-creating request without Contact raises SIPError 400."""
        exc = self.assertRaises(SIPError, Dialog.from_uas, _invite(contact=None),
                                "t", BOB_CONTACT)
        self.assertEqual((exc.code, exc.reason), (400, "Missing Contact"))

    def test_not_dialog_creating(self) -> None:
        """An in-dialog request or a non-creating method is a programming error."""
        in_dialog = _invite(extra="X: y")
        in_dialog.headers.set("To", "<sip:bob@biloxi.example.com>;tag=x")
        self.assertRaises(ValueError, Dialog.from_uas, in_dialog, "t", BOB_CONTACT)
        self.assertRaises(ValueError, Dialog.from_uas, _invite(method="OPTIONS"), "t",
                          BOB_CONTACT)

    def test_rfc2543_peer(self) -> None:
        """A From without tag gives a remote tag of None (RFC 3261 12.1.1)."""
        d = Dialog.from_uas(_invite(from_tag=None), "t", BOB_CONTACT)
        self.assertIsNone(d.remote_tag)
        request, _ = d.create_request("BYE")
        self.assertEqual(request.to.tag, None)

    def test_subscribe_creates_dialog(self) -> None:
        """SUBSCRIBE (RFC 6665) creates a dialog like INVITE does."""
        d = Dialog.from_uas(_invite(method="SUBSCRIBE", extra="Event: presence"), "t",
                            BOB_CONTACT, confirmed=True)
        self.assertEqual(d.remote_seq, 314159)


class SecureTests(SynchronousTestCase):
    """The secure flag follows the SIPS Request-URI (RFC 3261 12.1.1, 12.1.2)."""

    def test_sips_uac(self) -> None:
        """A UAC dialog for a sips: Request-URI is secure."""
        invite = _invite(uri="sips:bob@biloxi.example.com",
                         contact="<sips:alice@192.0.2.10:5061>")
        d = Dialog.from_uac(invite, _response(invite, 200, contact="<sips:bob@192.0.2.20>"),
                            ALICE_CONTACT)
        self.assertTrue(d.secure)

    def test_sips_uas(self) -> None:
        """A UAS dialog for a sips: Request-URI is secure; sip: is not."""
        sips = _invite(uri="sips:bob@biloxi.example.com", contact="<sips:alice@192.0.2.10>")
        self.assertTrue(Dialog.from_uas(sips, "t", BOB_CONTACT).secure)
        self.assertFalse(Dialog.from_uas(_invite(), "t", BOB_CONTACT).secure)

    def test_override(self) -> None:
        """The creator may state the flag itself (it knows the transport)."""
        sips = _invite(uri="sips:bob@biloxi.example.com", contact="<sips:alice@192.0.2.10>")
        self.assertFalse(Dialog.from_uas(sips, "t", BOB_CONTACT, secure=False).secure)


class RequestTests(SynchronousTestCase):
    """RFC 3261 12.2.1.1: requests we send in a dialog."""

    def test_bye_loose_routing(self) -> None:
        """Loose routing: Request-URI is the remote target, Route the route set,
        next hop the first route."""
        d = _uac_dialog(200)
        request, hop = d.create_request("BYE")
        self.assertEqual(request.method, "BYE")
        self.assertEqual(str(request.uri), "sip:bob@192.0.2.20:5062")
        self.assertEqual(request.headers.get_all("Route"),
                         ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"])
        self.assertEqual(str(hop), "sip:p1.example.com;lr")
        self.assertEqual(str(request.to), '"Bob" <sip:bob@biloxi.example.com>;tag=a6c85cf')
        self.assertEqual(str(request.from_),
                         '"Alice" <sip:alice@atlanta.example.com>;tag=1928301774')
        self.assertEqual(request.call_id, CALL_ID)
        self.assertEqual(str(request.cseq), "314160 BYE")
        self.assertEqual(request.max_forwards, 70)
        self.assertEqual(request.headers.get_all("Via"), [])
        self.assertNotIn("Contact", request.headers)

    def test_no_route_set(self) -> None:
        """Without a route set the request goes straight to the remote target."""
        d = _uac_dialog(200, record_route=None)
        request, hop = d.create_request("INFO", b"Signal=5\r\n", "application/dtmf-relay")
        self.assertNotIn("Route", request.headers)
        self.assertEqual(str(hop), "sip:bob@192.0.2.20:5062")
        self.assertEqual(request.content_type, "application/dtmf-relay")
        self.assertEqual(request.body, b"Signal=5\r\n")

    def test_strict_routing(self) -> None:
        """A first route without lr: it becomes the Request-URI (minus method and
        headers), the remote target goes last in Route, the hop is the R-URI."""
        d = _uac_dialog(200, record_route="<sip:p2.example.com;lr>, "
                                          "<sip:p1.example.com;method=INVITE?X=1>")
        request, hop = d.create_request("BYE")
        self.assertEqual(str(request.uri), "sip:p1.example.com")
        self.assertEqual(request.headers.get_all("Route"),
                         ["<sip:p2.example.com;lr>", "<sip:bob@192.0.2.20:5062>"])
        self.assertEqual(str(hop), "sip:p1.example.com")
        self.assertEqual(str(d.route_set[0].uri), "sip:p1.example.com;method=INVITE?X=1")

    def test_uas_route_set_order(self) -> None:
        """A UAS sends along its Record-Route in received order."""
        request, hop = _uas_dialog().create_request("BYE")
        self.assertEqual(request.headers.get_all("Route"),
                         ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"])
        self.assertEqual(str(hop), "sip:p2.example.com;lr")
        self.assertEqual(str(request.uri), "sip:alice@192.0.2.10:5060;transport=udp")
        self.assertEqual(str(request.to), '"Alice" <sip:alice@atlanta.example.com>;tag=1928301774')
        self.assertEqual(str(request.from_), '"Bob" <sip:bob@biloxi.example.com>;tag=a6c85cf')

    def test_cseq_increments(self) -> None:
        """Each request takes local_seq + 1; an empty local_seq starts at 1."""
        d = _uas_dialog()
        numbers = [d.create_request(m)[0].cseq.number for m in ("INFO", "UPDATE", "BYE")]
        self.assertEqual(numbers, [1, 2, 3])
        self.assertEqual(d.local_seq, 3)
        u = _uac_dialog()
        self.assertEqual(u.create_request("OPTIONS")[0].cseq.number, 314160)

    def test_contact_for_target_refresh(self) -> None:
        """Contact goes into INVITE, UPDATE, SUBSCRIBE, NOTIFY and REFER only."""
        d = _uac_dialog()
        for method in ("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"):
            request, _ = d.create_request(method)
            self.assertEqual(request.headers.get("Contact"), str(ALICE_CONTACT), method)
        for method in ("BYE", "INFO", "OPTIONS", "MESSAGE"):
            request, _ = d.create_request(method)
            self.assertNotIn("Contact", request.headers, method)

    def test_extra_headers(self) -> None:
        """Extra headers are added; Contact and Max-Forwards among them win."""
        d = _uac_dialog()
        request, _ = d.create_request(
            "REFER", headers=[("Refer-To", "<sip:carol@example.com>"),
                              ("Contact", "<sip:other@192.0.2.1>"), ("Max-Forwards", "10")])
        self.assertEqual(request.headers.get("Refer-To"), "<sip:carol@example.com>")
        self.assertEqual(request.headers.get_all("Contact"), ["<sip:other@192.0.2.1>"])
        self.assertEqual(request.max_forwards, 10)

    def test_refused_requests(self) -> None:
        """CANCEL, ACK, reserved extra headers and bodies without type are refused,
        and a refused request does not use up a CSeq number."""
        d = _uac_dialog()
        self.assertRaises(ValueError, d.create_request, "CANCEL")
        self.assertRaises(ValueError, d.create_request, "ACK")
        self.assertRaises(ValueError, d.create_request, "INFO", headers=[("Call-ID", "x")])
        self.assertRaises(ValueError, d.create_request, "INFO", headers=[("v", "x")])
        self.assertRaises(ValueError, d.create_request, "MESSAGE", b"hi")
        self.assertEqual(d.local_seq, 314159)

    def test_wire_round_trip(self) -> None:
        """A built request, once the transaction layer adds a Via, parses back."""
        d = _uac_dialog()
        request, _ = d.create_request("MESSAGE", b"hello", "text/plain")
        request.headers.add_first("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx")
        parsed = parse_message(request.to_bytes())
        self.assertEqual((parsed.method, parsed.body, parsed.cseq.method),
                         ("MESSAGE", b"hello", "MESSAGE"))
        self.assertEqual(parsed.headers.get("Content-Length"), "5")

    def test_ack(self) -> None:
        """ACK takes the INVITE's CSeq number and leaves local_seq alone."""
        d = _uac_dialog()
        reinvite, _ = d.create_request("INVITE")
        ack, hop = d.create_ack(reinvite.cseq.number, b"v=0\r\n", "application/sdp")
        self.assertEqual(str(ack.cseq), "314160 ACK")
        self.assertEqual(d.local_seq, 314160)
        self.assertEqual(str(ack.uri), "sip:bob@192.0.2.20:5062")
        self.assertEqual(str(hop), "sip:p1.example.com;lr")
        self.assertEqual(ack.body, b"v=0\r\n")
        self.assertNotIn("Contact", ack.headers)


class ReliableProvisionalTests(SynchronousTestCase):
    """RFC 3262: PRACK and RSeq tracking."""

    def test_prack_rack(self) -> None:
        """The PRACK's RAck names the RSeq and CSeq of the provisional."""
        invite = _invite()
        p180 = _reliable_180(invite, 988789)
        d = Dialog.from_uac(invite, p180, ALICE_CONTACT)
        prack, hop = d.create_prack(p180)
        self.assertEqual(prack.method, "PRACK")
        self.assertEqual(prack.headers.get("RAck"), "988789 314159 INVITE")
        self.assertEqual(str(prack.cseq), "314160 PRACK")
        self.assertEqual(str(hop), "sip:bob@192.0.2.20:5062")
        self.assertNotIn("Contact", prack.headers)

    def test_prack_needs_rseq(self) -> None:
        """Only a response with RSeq can be PRACKed."""
        invite = _invite()
        d = Dialog.from_uac(invite, _response(invite, 180), ALICE_CONTACT)
        self.assertRaises(ValueError, d.create_prack, _response(invite, 180))

    def test_retransmission_detected(self) -> None:
        """First and next-in-order are new; retransmitted or skipped RSeqs are not."""
        invite = _invite()
        first = _reliable_180(invite, 5)
        d = Dialog.from_uac(invite, first, ALICE_CONTACT)
        self.assertTrue(d.is_new_reliable_provisional(first))
        self.assertFalse(d.is_new_reliable_provisional(first))
        self.assertFalse(d.is_new_reliable_provisional(_reliable_180(invite, 7)))
        self.assertTrue(d.is_new_reliable_provisional(_reliable_180(invite, 6)))
        self.assertFalse(d.is_new_reliable_provisional(_reliable_180(invite, 6)))
        self.assertTrue(d.is_new_reliable_provisional(_reliable_180(invite, 7)))

    def test_unreliable_is_not_new(self) -> None:
        """A provisional without RSeq, a 100 or a final is never a new reliable one."""
        invite = _invite()
        d = Dialog.from_uac(invite, _response(invite, 180), ALICE_CONTACT)
        for response in (_response(invite, 180), _response(invite, 100),
                         _response(invite, 200, extra=[("RSeq", "1")])):
            self.assertFalse(d.is_new_reliable_provisional(response))

    def test_bad_rseq(self) -> None:
        """A malformed RSeq is a ParseError."""
        invite = _invite()
        bad = _response(invite, 183, extra=[("RSeq", "zero")])
        d = Dialog.from_uac(invite, bad, ALICE_CONTACT)
        self.assertRaises(ParseError, d.is_new_reliable_provisional, bad)

    def test_forks_track_separately(self) -> None:
        """Each forked early dialog keeps its own RSeq space."""
        invite = _invite()
        a, b = _reliable_180(invite, 1, "fork-a"), _reliable_180(invite, 1, "fork-b")
        da = Dialog.from_uac(invite, a, ALICE_CONTACT)
        db = Dialog.from_uac(invite, b, ALICE_CONTACT)
        self.assertTrue(da.is_new_reliable_provisional(a))
        self.assertTrue(db.is_new_reliable_provisional(b))


class ReceiveTests(SynchronousTestCase):
    """RFC 3261 12.2.2 and 12.2.1.2: requests and responses we receive."""

    def _in_dialog(self, method: str, cseq: int, contact: str | None = None) -> Request:
        """A request from Alice inside the UAS dialog."""
        request = _invite(method=method, cseq=cseq, contact=contact)
        request.headers.set("To", "Bob <sip:bob@biloxi.example.com>;tag=a6c85cf")
        return request

    def test_cseq_rules(self) -> None:
        """Higher or equal CSeq is accepted and stored; lower is a 500."""
        d = _uas_dialog()
        d.receive_request(self._in_dialog("INFO", 314160))
        self.assertEqual(d.remote_seq, 314160)
        d.receive_request(self._in_dialog("INFO", 314160))
        exc = self.assertRaises(SIPError, d.receive_request, self._in_dialog("BYE", 3))
        self.assertEqual((exc.code, exc.reason), (500, "CSeq out of order"))
        self.assertEqual(d.remote_seq, 314160)

    def test_ack_and_cancel_exempt(self) -> None:
        """ACK and CANCEL are neither checked nor stored."""
        d = _uas_dialog()
        d.receive_request(self._in_dialog("INFO", 314170))
        d.receive_request(self._in_dialog("ACK", 314159))
        d.receive_request(self._in_dialog("CANCEL", 314159))
        self.assertEqual(d.remote_seq, 314170)

    def test_empty_remote_seq(self) -> None:
        """A UAC dialog takes the peer's first CSeq, whatever it is."""
        d = _uac_dialog()
        d.receive_request(self._in_dialog("BYE", 1))
        self.assertEqual(d.remote_seq, 1)

    def test_target_refresh_requests(self) -> None:
        """re-INVITE and UPDATE with Contact replace the remote target; BYE's
        Contact and a refresh without Contact do not."""
        d = _uas_dialog()
        d.receive_request(self._in_dialog("INVITE", 314160, "<sip:alice@198.51.100.7>"))
        self.assertEqual(str(d.remote_target), "sip:alice@198.51.100.7")
        d.receive_request(self._in_dialog("UPDATE", 314161, "<sip:alice@198.51.100.8>"))
        self.assertEqual(str(d.remote_target), "sip:alice@198.51.100.8")
        d.receive_request(self._in_dialog("INVITE", 314162))
        d.receive_request(self._in_dialog("BYE", 314163, "<sip:alice@203.0.113.1>"))
        self.assertEqual(str(d.remote_target), "sip:alice@198.51.100.8")

    def test_bad_refresh_contact(self) -> None:
        """A bad Contact in a refresh is a 400 and changes no state."""
        d = _uas_dialog()
        exc = self.assertRaises(SIPError, d.receive_request,
                                self._in_dialog("INVITE", 314160, "*"))
        self.assertEqual(exc.code, 400)
        self.assertEqual(d.remote_seq, 314159)

    def test_terminated(self) -> None:
        """A terminated dialog answers requests with 481 but swallows ACK."""
        d = _uas_dialog()
        d.terminate()
        exc = self.assertRaises(SIPError, d.receive_request, self._in_dialog("BYE", 314160))
        self.assertEqual(exc.code, 481)
        d.receive_request(self._in_dialog("ACK", 314159))

    def test_refresh_responses(self) -> None:
        """A 2xx to re-INVITE or UPDATE replaces the target; other answers do not."""
        d = _uac_dialog()
        reinvite, _ = d.create_request("INVITE")
        d.receive_response(_response(reinvite, 491, contact="<sip:bob@203.0.113.5>"))
        self.assertEqual(str(d.remote_target), "sip:bob@192.0.2.20:5062")
        d.receive_response(_response(reinvite, 200, contact="<sip:bob@203.0.113.5>"))
        self.assertEqual(str(d.remote_target), "sip:bob@203.0.113.5")
        update, _ = d.create_request("UPDATE")
        d.receive_response(_response(update, 200, contact="<sip:bob@203.0.113.6>"))
        self.assertEqual(str(d.remote_target), "sip:bob@203.0.113.6")
        bye, _ = d.create_request("BYE")
        d.receive_response(_response(bye, 200, contact="<sip:bob@203.0.113.7>"))
        self.assertEqual(str(d.remote_target), "sip:bob@203.0.113.6")

    def test_early_provisional_refresh(self) -> None:
        """In an early dialog a later 1xx with a Contact updates the target."""
        invite = _invite()
        d = Dialog.from_uac(invite, _response(invite, 180), ALICE_CONTACT)
        d.receive_response(_response(invite, 183, contact="<sip:bob@203.0.113.9>"))
        self.assertEqual(str(d.remote_target), "sip:bob@203.0.113.9")


class DialogTableTests(SynchronousTestCase):
    """L{DialogTable}: lookup, matching, 481 and forking."""

    def test_add_find_remove(self) -> None:
        """Dialogs are stored by id; a duplicate id is refused."""
        table = DialogTable()
        d = _uas_dialog()
        table.add(d)
        self.assertIs(table.find(d.id), d)
        self.assertIn(d.id, table)
        self.assertEqual(list(table), [d])
        self.assertRaises(ValueError, table.add, _uas_dialog())
        self.assertIs(table.remove(d.id), d)
        self.assertIsNone(table.remove(d.id))
        self.assertEqual(len(table), 0)

    def test_match_request(self) -> None:
        """A request matches by Call-ID, To tag (ours) and From tag (theirs)."""
        table = DialogTable()
        uas, uac = _uas_dialog(), _uac_dialog()
        table.add(uas)
        table.add(uac)
        bye_from_alice, _ = uas.create_request("BYE")
        # what Bob's BYE looks like when Alice (the UAC) receives it
        self.assertIs(table.match(bye_from_alice), uac)
        bye_to_bob, _ = uac.create_request("BYE")
        self.assertIs(table.match(bye_to_bob), uas)
        bye_to_bob.headers.set("From", "<sip:alice@atlanta.example.com>;tag=nope")
        self.assertIsNone(table.match(bye_to_bob))
        self.assertIsNone(table.match(_invite()))

    def test_match_response(self) -> None:
        """A response matches by Call-ID, From tag (ours) and To tag (theirs)."""
        table = DialogTable()
        d = _uac_dialog()
        table.add(d)
        info, _ = d.create_request("INFO")
        self.assertIs(table.match_response(_response(info, 200)), d)
        other = _response(info, 200)
        other.headers.set("To", "<sip:bob@biloxi.example.com>;tag=zz")
        self.assertIsNone(table.match_response(other))

    def test_reject_unknown(self) -> None:
        """A request with an unknown To tag gets a 481 built by make_response."""
        table = DialogTable()
        request = _invite(method="BYE")
        request.headers.set("To", "Bob <sip:bob@biloxi.example.com>;tag=gone")
        response = table.reject_unknown(request)
        self.assertEqual((response.code, response.reason),
                         (481, "Call/Transaction Does Not Exist"))
        self.assertEqual(response.to.tag, "gone")
        self.assertEqual(len(response.via), 2)
        self.assertEqual(str(response.cseq), "314159 BYE")

    def test_reject_unknown_exemptions(self) -> None:
        """No 481 for an ACK, a request without To tag, or a matching request."""
        table = DialogTable()
        d = _uas_dialog()
        table.add(d)
        ack = _invite(method="ACK")
        ack.headers.set("To", "<sip:bob@biloxi.example.com>;tag=gone")
        self.assertIsNone(table.reject_unknown(ack))
        self.assertIsNone(table.reject_unknown(_invite()))
        known = _invite(method="BYE", cseq=314160)
        known.headers.set("To", "<sip:bob@biloxi.example.com>;tag=a6c85cf")
        self.assertIsNone(table.reject_unknown(known))

    def test_forked_early_dialogs(self) -> None:
        """Two 180s with different To tags make two early dialogs of one request;
        the 2xx confirms one, the caller ends and removes the other."""
        table = DialogTable()
        invite = _invite()
        for tag, contact in (("fork-a", "<sip:bob@192.0.2.21>"),
                             ("fork-b", "<sip:bob@192.0.2.22>")):
            response = _response(invite, 180, to_tag=tag, contact=contact)
            if table.match_response(response) is None:
                table.add(Dialog.from_uac(invite, response, ALICE_CONTACT))
        self.assertEqual(len(table), 2)
        forks = table.dialogs_of(CALL_ID, "1928301774")
        self.assertEqual(sorted(d.remote_tag for d in forks), ["fork-a", "fork-b"])
        ok = _response(invite, 200, to_tag="fork-b", contact="<sip:bob@192.0.2.22>")
        winner = table.match_response(ok)
        winner.confirm(ok)
        for d in table.dialogs_of(CALL_ID, "1928301774"):
            if d is not winner:
                d.terminate()
                table.remove(d.id)
        self.assertEqual(list(table), [winner])
        self.assertIs(winner.state, DialogState.CONFIRMED)
        self.assertEqual(str(winner.remote_target), "sip:bob@192.0.2.22")

    def test_dialog_id_hashable(self) -> None:
        """DialogId is a frozen value usable as a key."""
        a = DialogId("c", "l", "r")
        self.assertEqual(a, DialogId("c", "l", "r"))
        self.assertEqual(len({a, DialogId("c", "l", "r")}), 1)
        self.assertRaises(AttributeError, setattr, a, "call_id", "x")


class ForkTests(SynchronousTestCase):
    """A 2xx from another fork of our INVITE makes a dialog of its own."""

    def test_fork_from_confirmed_dialog(self) -> None:
        """Same Call-ID, local tag and addresses as the answered dialog; the
        other fork's To tag, Contact and Record-Route; requests built in it
        match those of a dialog made from the INVITE itself."""
        invite = _invite()
        answered = Dialog.from_uac(invite, _response(invite, 200), ALICE_CONTACT)
        answered.create_request("INFO")  # our CSeq moves on; the fork's starts again
        other = _response(invite, 200, to_tag="fork-b", contact="<sip:bob@192.0.2.22>",
                          record_route="<sip:p9.example.com;lr>")
        fork = answered.fork(other)
        expected = Dialog.from_uac(invite, other, ALICE_CONTACT)
        self.assertEqual(fork.id, expected.id)
        self.assertIs(fork.state, DialogState.CONFIRMED)
        self.assertIs(fork.local_contact, ALICE_CONTACT)
        self.assertEqual(fork.local_seq, 314159)
        self.assertEqual(str(fork.remote_target), "sip:bob@192.0.2.22")
        mine, theirs = fork.create_request("BYE")[0], expected.create_request("BYE")[0]
        self.assertEqual(mine.to_bytes(), theirs.to_bytes())

    def test_fork_refused(self) -> None:
        """Only a UAC dialog forks, and only on a 2xx with a To tag."""
        invite = _invite()
        answered = Dialog.from_uac(invite, _response(invite, 200), ALICE_CONTACT)
        self.assertRaises(ValueError, answered.fork, _response(invite, 180, to_tag="x"))
        self.assertRaises(ValueError, answered.fork, _response(invite, 200, to_tag=None))
        self.assertRaises(ValueError, _uas_dialog().fork, _response(invite, 200))
        self.assertRaises(SIPError, answered.fork, _response(invite, 200, to_tag="y",
                                                             contact=None))


class DialogStateFormTests(SynchronousTestCase):
    """What a dialog keeps is small: the addresses as text, one id object."""

    def test_id_is_one_object(self) -> None:
        """The id is made once (the tables key on it) and again after a change."""
        d = _uac_dialog(200)
        self.assertIs(d.id, d.id)
        d.remote_tag = "other"
        self.assertEqual(d.id, DialogId(CALL_ID, "1928301774", "other"))

    def test_addresses_are_copies(self) -> None:
        """Reading an address gives a new object: changing it changes nothing;
        setting one (with a tag) keeps it without the tag."""
        d = _uac_dialog(200)
        d.local_uri.uri.user = "mallory"
        self.assertEqual(str(d.local_uri), '"Alice" <sip:alice@atlanta.example.com>')
        d.remote_uri = parse_name_addr("<sip:carol@example.com>;tag=zz;x=1")
        self.assertEqual(str(d.remote_uri), "<sip:carol@example.com>;x=1")
        request, _ = d.create_request("BYE")
        self.assertEqual(request.headers.get("To"), "<sip:carol@example.com>;x=1;tag=a6c85cf")

    def test_request_uri_is_text_and_hop_shared(self) -> None:
        """A loose-routed request carries the remote target as text (parsed
        when read); the next hop without a route set is the remote target."""
        d = _uac_dialog(200, record_route=None)
        request, hop = d.create_request("BYE")
        self.assertIs(hop, d.remote_target)
        self.assertEqual(request.uri_text, "sip:bob@192.0.2.20:5062")
        self.assertEqual(request.uri, d.remote_target)
        self.assertIsNot(request.uri, d.remote_target)

    def test_no_route_set_shared(self) -> None:
        """Dialogs without a route set share one empty sequence."""
        self.assertEqual(_uac_dialog(200, record_route=None).route_set, ())
        self.assertIs(_uac_dialog(200, record_route=None).route_set,
                      _uas_dialog(record_route=None).route_set)


class WithoutTagTests(SynchronousTestCase):
    """L{NameAddress.text_without_tag}, what a dialog keeps of From and To,
    is the text of L{NameAddress.without_tag} without the copy."""

    def test_same_as_the_copy(self) -> None:
        """Display names (quoted, token, escaped), URI parameters, header
        parameters before and after the tag, no tag, no parameters."""
        for text in [
            "<sip:alice@a.example>;tag=1",
            "Alice <sip:alice@a.example;transport=tcp>;tag=1;x=2",
            '"Alice \\"A\\" Smith" <sip:alice@a.example>;x;tag=1;y=z',
            "sip:bob@b.example;tag=7",
            "<sip:carol@c.example>",
            "<sip:carol@c.example>;expires=60",
            '"" <sip:anon@anonymous.invalid>;tag=9',
            "<tel:+15551234;phone-context=example.com>;tag=t",
            "<sip:[2001:db8::1]:5070>;TAG=upper;tag=lower",
        ]:
            address = parse_name_addr(text)
            self.assertEqual(address.text_without_tag(), str(address.without_tag()), text)
