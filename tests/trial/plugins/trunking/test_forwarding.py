"""Tests for L{plugins.trunking.forwarding}: Diversion (RFC 5806) and
History-Info (RFC 7044, RFC 4458) written on forwarded calls and read back
from parsed SIP messages."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.errors import ParseError
from b2bua.sip.message import Request, parse_message
from b2bua.sip.uri import parse_uri
from plugins.trunking.forwarding import (
    CAUSE_BY_REASON,
    Forwarding,
    Reason,
    add_diversion,
    add_history_info,
    apply_history_privacy,
    diversions,
    history,
    original_called_number,
    read_forwarding,
)
from plugins.trunking.numbering import DialPlan

ALICE = parse_uri("sip:+442079460000@sw.example.net;user=phone")
BOB = parse_uri("sip:+442079460001@sw.example.net;user=phone")
VOICEMAIL = parse_uri("sip:vm-1001@vm.example.net")


def request(*extra: str) -> Request:
    """An INVITE from a carrier to one of our DIDs, with C{extra} lines."""
    lines = [
        "INVITE sip:+442079460000@sw.example.net;user=phone SIP/2.0",
        "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK2d4790",
        "Max-Forwards: 69",
        "From: <sip:+12125550123@carrier.example;user=phone>;tag=9fxced76sl",
        "To: <sip:+442079460000@sw.example.net;user=phone>",
        "Call-ID: 2xTb9vxSit55XU7p8@carrier.example",
        "CSeq: 8 INVITE",
        "Contact: <sip:203.0.113.5:5060>",
        *extra,
        "Content-Length: 0",
        "", "",
    ]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Request)
    return message


def reparsed(message: Request) -> Request:
    """The message written to bytes and parsed again (what the next hop sees)."""
    again = parse_message(message.to_bytes())
    assert isinstance(again, Request)
    return again


class DiversionTests(SynchronousTestCase):
    """Diversion entries (RFC 5806 section 4)."""

    def test_add_newest_on_top(self) -> None:
        """Each diversion goes on top; reason and counter are written."""
        message = request()
        add_diversion(message, ALICE, "user-busy")
        add_diversion(message, BOB, Reason.NO_ANSWER, counter=2)
        self.assertEqual(message.headers.get_all("Diversion"), [
            "<sip:+442079460001@sw.example.net;user=phone>;reason=no-answer;counter=2",
            "<sip:+442079460000@sw.example.net;user=phone>;reason=user-busy;counter=1",
        ])
        entries = diversions(reparsed(message))
        self.assertEqual([(d.reason, d.counter) for d in entries],
                         [("no-answer", 2), ("user-busy", 1)])

    def test_read_received(self) -> None:
        """A call arriving from a carrier with two diversions in one line,
        one without parameters."""
        message = request(
            "Diversion: <tel:+442079460001>;reason=unconditional;counter=1;privacy=off,"
            " <sip:02079460000@pbx.example.com>")
        found = read_forwarding(message, DialPlan("GB"))
        self.assertEqual(found, Forwarding(original="+442079460000", last="+442079460001",
                                           reason="unconditional", count=2,
                                           source="diversion"))
        self.assertEqual(original_called_number(message), "02079460000")
        self.assertEqual(diversions(message)[1].reason, "unknown")
        self.assertEqual(diversions(message)[0].privacy, "off")

    def test_bad_input(self) -> None:
        """Unknown reasons and counters below one are refused; a malformed
        received entry is a ParseError."""
        self.assertRaises(ValueError, add_diversion, request(), ALICE, "on-holiday")
        self.assertRaises(ValueError, add_diversion, request(), ALICE, "user-busy", counter=0)
        self.assertRaises(ParseError, diversions, request("Diversion: <sip:broken"))

    def test_no_forwarding(self) -> None:
        """A request that was never forwarded has no original called number."""
        self.assertIsNone(read_forwarding(request()))
        self.assertIsNone(original_called_number(request()))


class HistoryInfoTests(SynchronousTestCase):
    """History-Info entries (RFC 7044) with RFC 4458 causes."""

    def test_first_forwarding(self) -> None:
        """Without History-Info, the forwarding user becomes entry 1 with the
        Reason, the target entry 1.1 with cause and mp."""
        message = request()
        add_history_info(message, ALICE, BOB, "user-busy")
        self.assertEqual(message.headers.get_all("History-Info"), [
            "<sip:+442079460000@sw.example.net;user=phone"
            "?Reason=SIP%3Bcause%3D486%3Btext%3D%22Busy%20Here%22>;index=1",
            "<sip:+442079460001@sw.example.net;user=phone;cause=486>;index=1.1;mp=1",
        ])
        entries = history(reparsed(message))
        self.assertEqual([(e.index, e.cause, e.mapped_from, e.reason_cause) for e in entries],
                         [("1", None, None, 486), ("1.1", 486, "1", None)])

    def test_chain_and_read_back(self) -> None:
        """Busy then no answer to voicemail: indexes nest, causes follow
        RFC 4458, and the reader finds the original and last numbers."""
        message = request()
        add_history_info(message, ALICE, BOB, Reason.USER_BUSY)
        add_history_info(message, BOB, VOICEMAIL, Reason.NO_ANSWER)
        received = reparsed(message)
        entries = history(received)
        self.assertEqual([e.index for e in entries], ["1", "1.1", "1.1.1"])
        self.assertEqual(entries[2].cause, 408)
        self.assertEqual(entries[1].reason_cause, 408)
        self.assertEqual(read_forwarding(received), Forwarding(
            original="+442079460000", last="+442079460001", reason="no-answer", count=2,
            source="history-info"))

    def test_received_history_extended(self) -> None:
        """A call arriving with History-Info from a carrier (entry 1 is our
        DID) is forwarded by the DID's user: the DID entry is the parent;
        a second forwarding of the same entry is its sibling 1.2."""
        message = request(
            "History-Info: <sip:+442079460000@carrier.example;user=phone>;index=1")
        add_history_info(message, ALICE, BOB, "unconditional")
        add_history_info(message, ALICE, VOICEMAIL, "deflection")
        entries = history(message)
        self.assertEqual([(e.index, e.mapped_from, e.cause) for e in entries],
                         [("1", None, None), ("1.1", "1", 302), ("1.2", "1", 480)])
        self.assertEqual(entries[0].reason_cause, 480)
        self.assertEqual(read_forwarding(message).reason, "deflection")  # type: ignore[union-attr]

    def test_unrelated_parent(self) -> None:
        """When the forwarding user is not in the history yet, it is added
        as a child of the last entry."""
        message = request("History-Info: <sip:+12125550199@carrier.example;user=phone>;index=1")
        add_history_info(message, ALICE, parse_uri("tel:+442079460009"), "no-answer")
        entries = history(message)
        self.assertEqual([(e.index, e.mapped_from) for e in entries],
                         [("1", None), ("1.1", "1"), ("1.1.1", "1.1")])
        self.assertEqual(str(entries[2].address.uri), "tel:+442079460009")
        found = read_forwarding(message)
        assert found is not None
        self.assertEqual((found.original, found.last, found.reason),
                         ("+12125550199", "+442079460000", "no-answer"))

    def test_history_preferred_over_diversion(self) -> None:
        """When both are present, History-Info is read."""
        message = request("Diversion: <tel:+441632960000>;reason=away")
        add_history_info(message, ALICE, BOB, "user-busy")
        self.assertEqual(read_forwarding(message).source, "history-info")  # type: ignore[union-attr]
        self.assertEqual(original_called_number(message), "+442079460000")

    def test_unindexed_refused(self) -> None:
        """Extending a history whose entries lack an index is a ParseError."""
        message = request("History-Info: <sip:+442079460000@carrier.example>")
        self.assertIsNone(history(message)[0].index)
        self.assertRaises(ParseError, add_history_info, message, ALICE, BOB, "user-busy")
        self.assertRaises(ValueError, add_history_info, request(), ALICE, BOB, "sideways")

    def test_causes(self) -> None:
        """Every RFC 5806 reason has an RFC 4458 cause."""
        self.assertEqual(set(CAUSE_BY_REASON), set(Reason))
        self.assertEqual(CAUSE_BY_REASON[Reason.USER_BUSY], 486)
        self.assertEqual(CAUSE_BY_REASON[Reason.NO_ANSWER], 408)
        self.assertEqual(CAUSE_BY_REASON[Reason.UNCONDITIONAL], 302)


class HistoryPrivacyTests(SynchronousTestCase):
    """Forwarding history at the trust boundary."""

    def test_history_privacy_untrusted(self) -> None:
        """Privacy: history anonymises every entry leaving the trust domain
        but keeps indexes and causes."""
        message = request()
        add_history_info(message, ALICE, BOB, "user-busy")
        apply_history_privacy(message, {"history"}, next_hop_trusted=False)
        entries = history(reparsed(message))
        self.assertEqual([str(e.address.uri) for e in entries], [
            "sip:anonymous@anonymous.invalid", "sip:anonymous@anonymous.invalid;cause=486"])
        self.assertEqual([e.index for e in entries], ["1", "1.1"])
        self.assertEqual(read_forwarding(message).reason, "user-busy")  # type: ignore[union-attr]

    def test_entry_privacy(self) -> None:
        """Only entries marked Privacy=history are hidden; nothing changes
        towards a trusted peer."""
        line = ("History-Info: <sip:+442079460000@a.example?Privacy=history>;index=1, "
                "<sip:+442079460001@a.example;cause=302>;index=1.1;mp=1")
        message = request(line)
        apply_history_privacy(message, set(), next_hop_trusted=True)
        self.assertEqual(history(message)[0].address.uri.user, "+442079460000")
        apply_history_privacy(message, set(), next_hop_trusted=False)
        self.assertEqual([e.address.uri.user for e in history(message)],
                         ["anonymous", "+442079460001"])

    def test_diversion_privacy(self) -> None:
        """Diversion privacy=full hides the user, name hides the name."""
        message = request(
            'Diversion: "Bob" <tel:+442079460001>;reason=user-busy;privacy=full',
            'Diversion: "Alice" <tel:+442079460000>;reason=no-answer;privacy=name',
            'Diversion: "Carol" <tel:+442079460002>;reason=away;privacy=off')
        apply_history_privacy(message, set(), next_hop_trusted=False)
        entries = diversions(reparsed(message))
        self.assertEqual([(d.address.display_name, str(d.address.uri)) for d in entries], [
            (None, "sip:anonymous@anonymous.invalid"),
            (None, "tel:+442079460000"),
            ("Carol", "tel:+442079460002"),
        ])
        self.assertEqual([d.reason for d in entries], ["user-busy", "no-answer", "away"])
