"""Tests for L{b2bua.core.registrar}: REGISTER processing (RFC 3261 10.3,
RFC 3327 Path, RFC 5626 outbound) against the memory location store, on a
fake clock."""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, fail
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from b2bua.core.location import Binding, ILocationStore, MemoryLocationStore, Received
from b2bua.core.registrar import RETRY_AFTER, Registrar, format_binding
from b2bua.sip.interfaces import Source
from b2bua.sip.message import Request, Response, parse_message

T0 = 1_700_000_000.0
AOR = "alice@example.com"
SOURCE = Source("UDP", ("203.0.113.50", 40123), ("192.0.2.1", 5060))
TCP_SOURCE = Source("TCP", ("203.0.113.51", 50999), ("192.0.2.1", 5060), connection_id=42)
INSTANCE = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
C1 = "sip:alice@192.168.1.20:5060"
C2 = "sip:alice@192.168.1.21:5060"


def register(*contacts: str, expires: int | None = None, call_id: str = "reg-1@192.168.1.20",
             cseq: int = 1, extra: tuple[str, ...] = ()) -> Request:
    """A REGISTER for alice as it comes off the wire."""
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKreg1;rport",
        "Max-Forwards: 70",
        "To: <sip:alice@example.com>",
        "From: <sip:alice@example.com>;tag=456248",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    lines += [f"Contact: {c}" for c in contacts]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += list(extra)
    lines.append("Content-Length: 0")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


@implementer(ILocationStore)
class BrokenStore:
    """A location store whose every call fails (Redis down)."""

    def _fail(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        return fail(RuntimeError("connection refused"))

    get = update = remove_all = count = expire = _fail


class RegistrarTests(SynchronousTestCase):
    """Tests for L{Registrar}."""

    def setUp(self) -> None:
        """A registrar with the defaults on a memory store and a fake clock."""
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.store = MemoryLocationStore(self.clock)
        self.registrar = Registrar(self.store, self.clock, tag_factory=lambda: "regtag")

    def handle(self, request: Request, source: Source = SOURCE, aor: str = AOR) -> Response:
        """Run C{request} through the registrar; its answer."""
        return self.successResultOf(self.registrar.handle(request, source, aor))

    def lookup(self, aor: str = AOR) -> list[Binding]:
        """The current bindings of C{aor}."""
        return self.successResultOf(self.registrar.lookup(aor))

    def contacts(self, response: Response) -> list[str]:
        """The Contact values of a response."""
        return response.headers.get_all("Contact")

    def test_register(self) -> None:
        """A new contact is bound for the default interval; the 200 lists it
        with C{expires}, has a To tag, Date and Supported."""
        response = self.handle(register(f"<{C1}>"))
        self.assertEqual(response.code, 200)
        self.assertEqual(self.contacts(response), [f"<{C1}>;expires=3600"])
        self.assertEqual(response.to.tag, "regtag")
        self.assertEqual(response.headers.get("Date"), formatdate(T0, usegmt=True))
        self.assertEqual(response.headers.get("Date"), "Tue, 14 Nov 2023 22:13:20 GMT")
        self.assertEqual(response.headers.get_all("Supported"), ["path", "outbound"])
        self.assertEqual(response.call_id, "reg-1@192.168.1.20")
        (b,) = self.lookup()
        self.assertEqual((b.aor, b.contact, b.expires_at, b.call_id, b.cseq),
                         (AOR, C1, T0 + 3600, "reg-1@192.168.1.20", 1))

    def test_expires_header(self) -> None:
        """Without an expires parameter the Expires header decides."""
        response = self.handle(register(f"<{C1}>", expires=600))
        self.assertEqual(self.contacts(response), [f"<{C1}>;expires=600"])

    def test_expires_param_wins(self) -> None:
        """A Contact's expires parameter overrides the Expires header."""
        response = self.handle(register(f"<{C1}>;expires=120", f"<{C2}>", expires=600))
        self.assertEqual(sorted(self.contacts(response)),
                         sorted([f"<{C1}>;expires=120", f"<{C2}>;expires=600"]))

    def test_expires_clamped(self) -> None:
        """An interval above max_expires is shortened to it."""
        response = self.handle(register(f"<{C1}>", expires=86400))
        self.assertEqual(self.contacts(response), [f"<{C1}>;expires=3600"])

    def test_interval_too_brief(self) -> None:
        """An interval below min_expires gets 423 with Min-Expires, and
        nothing of the request is stored."""
        response = self.handle(register(f"<{C2}>", f"<{C1}>;expires=30"))
        self.assertEqual((response.code, response.reason), (423, "Interval Too Brief"))
        self.assertEqual(response.headers.get("Min-Expires"), "60")
        self.assertEqual(response.to.tag, "regtag")
        self.assertEqual(self.lookup(), [])

    def test_min_above_an_hour(self) -> None:
        """An interval of an hour or more is never too brief (10.3 step 7)."""
        registrar = Registrar(self.store, self.clock, min_expires=7200, max_expires=9000,
                              default_expires=7200)
        response = self.successResultOf(
            registrar.handle(register(f"<{C1}>", expires=3600), SOURCE, AOR))
        self.assertEqual(self.contacts(response), [f"<{C1}>;expires=3600"])

    def test_remove_with_expires_zero(self) -> None:
        """expires=0 removes that contact; the 200 lists the others."""
        self.handle(register(f"<{C1}>", f"<{C2}>"))
        response = self.handle(register(f"<{C1}>;expires=0", cseq=2))
        self.assertEqual(self.contacts(response), [f"<{C2}>;expires=3600"])
        self.assertEqual([b.contact for b in self.lookup()], [C2])

    def test_star(self) -> None:
        """C{Contact: *} with Expires: 0 removes every binding; the 200 has no
        Contact."""
        self.handle(register(f"<{C1}>", f"<{C2}>"))
        response = self.handle(register("*", expires=0, cseq=2))
        self.assertEqual(response.code, 200)
        self.assertEqual(self.contacts(response), [])
        self.assertEqual(self.lookup(), [])

    def test_star_out_of_order(self) -> None:
        """C{*} with a CSeq not above a binding's on the same Call-ID is 500."""
        self.handle(register(f"<{C1}>", cseq=5))
        response = self.handle(register("*", expires=0, cseq=5))
        self.assertEqual(response.code, 500)
        self.assertEqual(len(self.lookup()), 1)

    def test_star_needs_expires_zero(self) -> None:
        """C{*} without Expires: 0 is 400."""
        self.handle(register(f"<{C1}>"))
        for request in (register("*"), register("*", expires=60)):
            response = self.handle(request)
            self.assertEqual((response.code, response.reason),
                             (400, "Contact * Needs Expires: 0"))
        self.assertEqual(len(self.lookup()), 1)

    def test_star_alone(self) -> None:
        """C{*} with another Contact is 400."""
        response = self.handle(register("*", f"<{C1}>", expires=0))
        self.assertEqual((response.code, response.reason), (400, "Contact * Must Be Alone"))

    def test_query(self) -> None:
        """A REGISTER without Contact changes nothing and lists the bindings."""
        self.handle(register(f"<{C1}>"))
        self.clock.advance(600)
        response = self.handle(register(cseq=2))
        self.assertEqual(self.contacts(response), [f"<{C1}>;expires=3000"])
        self.assertEqual(self.lookup()[0].expires_at, T0 + 3600)

    def test_query_empty(self) -> None:
        """A query of an AOR without bindings is a 200 without Contact."""
        response = self.handle(register())
        self.assertEqual((response.code, self.contacts(response)), (200, []))

    def test_out_of_order(self) -> None:
        """The same Call-ID with a CSeq not higher is refused with 500."""
        self.handle(register(f"<{C1}>", cseq=5))
        for cseq in (5, 4):
            response = self.handle(register(f"<{C1}>;expires=0", cseq=cseq))
            self.assertEqual((response.code, response.reason), (500, "Out Of Order CSeq"))
        self.assertEqual(len(self.lookup()), 1)

    def test_refresh(self) -> None:
        """A higher CSeq refreshes the binding from the current time."""
        self.handle(register(f"<{C1}>"))
        self.clock.advance(1000)
        response = self.handle(register(f"<{C1}>", cseq=2))
        self.assertEqual(self.contacts(response), [f"<{C1}>;expires=3600"])
        self.assertEqual(self.lookup()[0].expires_at, T0 + 1000 + 3600)

    def test_expiry(self) -> None:
        """A binding that is not refreshed is gone when its time is up."""
        self.handle(register(f"<{C1}>", expires=300))
        self.clock.advance(299)
        self.assertEqual(len(self.lookup()), 1)
        self.clock.advance(1)
        self.assertEqual(self.lookup(), [])
        self.assertEqual(self.contacts(self.handle(register(cseq=2))), [])

    def test_too_many_contacts_in_request(self) -> None:
        """More contacts in one REGISTER than max_contacts is 403."""
        contacts = [f"<sip:alice@192.168.1.{i}>" for i in range(11)]
        response = self.handle(register(*contacts))
        self.assertEqual((response.code, response.reason), (403, "Too Many Contacts"))
        self.assertEqual(self.lookup(), [])

    def test_too_many_bindings(self) -> None:
        """A REGISTER that would grow the AOR beyond max_contacts is 403;
        refreshing within the limit still works."""
        registrar = Registrar(self.store, self.clock, max_contacts=2)
        first = registrar.handle(register(f"<{C1}>", f"<{C2}>"), SOURCE, AOR)
        self.assertEqual(self.successResultOf(first).code, 200)
        third = registrar.handle(register("<sip:alice@192.168.1.22>", call_id="other"),
                                 SOURCE, AOR)
        self.assertEqual(self.successResultOf(third).code, 403)
        again = registrar.handle(register(f"<{C1}>", cseq=2), SOURCE, AOR)
        self.assertEqual(self.successResultOf(again).code, 200)

    def test_received_kept(self) -> None:
        """The source address of the REGISTER is kept for NAT traversal."""
        self.handle(register(f"<{C1}>"))
        self.assertEqual(self.lookup()[0].received,
                         Received("UDP", "203.0.113.50", 40123, None, ("192.0.2.1", 5060)))

    def test_connection_kept(self) -> None:
        """A REGISTER over TCP keeps its connection id in the binding."""
        self.handle(register(f"<{C1};transport=tcp>"), source=TCP_SOURCE)
        received = self.lookup()[0].received
        assert received is not None
        self.assertEqual(received.connection_id, 42)
        self.assertEqual(received.target().connection_id, 42)

    def test_user_agent_kept(self) -> None:
        """The User-Agent is kept with the binding."""
        self.handle(register(f"<{C1}>", extra=("User-Agent: Deskphone/2.1",)))
        self.assertEqual(self.lookup()[0].user_agent, "Deskphone/2.1")

    def test_path_stored_and_echoed(self) -> None:
        """Path values are stored in order and echoed when the UA supports path."""
        request = register(f"<{C1}>", extra=(
            "Path: <sip:p2.example.net;lr>", "Path: <sip:p1.example.net;lr>",
            "Supported: path"))
        response = self.handle(request)
        self.assertEqual(response.headers.get_all("Path"),
                         ["<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>"])
        self.assertEqual(self.lookup()[0].path,
                         ("<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>"))

    def test_path_not_echoed_without_support(self) -> None:
        """Without C{path} in Supported, Path is stored but not echoed."""
        response = self.handle(register(f"<{C1}>", extra=("Path: <sip:p1.example.net;lr>",)))
        self.assertEqual(response.headers.get_all("Path"), [])
        self.assertEqual(self.lookup()[0].path, ("<sip:p1.example.net;lr>",))

    def test_outbound_flow_replacement(self) -> None:
        """RFC 5626: a REGISTER with the same instance and reg-id from a new
        address replaces the old flow; the 200 requires outbound and lists
        +sip.instance and reg-id."""
        ob = (f'<{C1};ob>;+sip.instance="{INSTANCE}";reg-id=1')
        self.handle(register(ob, extra=("Supported: outbound, path",)))
        moved = f'<{C2};ob>;+sip.instance="{INSTANCE}";reg-id=1'
        response = self.handle(register(moved, call_id="after-reboot",
                                        extra=("Supported: outbound",)), source=TCP_SOURCE)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.contacts(response),
                         [f'<{C2};ob>;+sip.instance="{INSTANCE}";reg-id=1;expires=3600'])
        self.assertEqual(response.headers.get("Require"), "outbound")
        # RFC 5626 5.4: the keep-alive interval asked of the flow (UDP here)
        self.assertEqual(response.headers.get("Flow-Timer"), "25")
        (b,) = self.lookup()
        self.assertEqual((b.instance_id, b.reg_id), (INSTANCE, 1))

    def test_reg_id_without_outbound_support(self) -> None:
        """Without C{outbound} in Supported the reg-id is ignored (no Require),
        but the instance-id still identifies the binding."""
        self.handle(register(f'<{C1}>;+sip.instance="{INSTANCE}";reg-id=1'))
        response = self.handle(register(f'<{C2}>;+sip.instance="{INSTANCE}";reg-id=1',
                                        call_id="new"))
        self.assertIsNone(response.headers.get("Require"))
        (b,) = self.lookup()
        self.assertEqual((b.contact, b.instance_id, b.reg_id), (C2, INSTANCE, None))

    def test_reg_id_needs_single_contact(self) -> None:
        """A REGISTER using outbound (reg-id) with two Contacts is 400."""
        response = self.handle(register(
            f'<{C1}>;+sip.instance="{INSTANCE}";reg-id=1', f"<{C2}>",
            extra=("Supported: outbound",)))
        self.assertEqual(response.code, 400)

    def test_bad_values(self) -> None:
        """Malformed expires, q, reg-id, Expires or Contact get 400 and store nothing."""
        cases = [
            register(f"<{C1}>;expires=soon"),
            register(f"<{C1}>;q=1.5"),
            register(f"<{C1}>;q=0.1234"),
            register(f'<{C1}>;+sip.instance="{INSTANCE}";reg-id=0',
                     extra=("Supported: outbound",)),
            register(f"<{C1}>", extra=("Expires: never",)),
            register("<sip:alice@192.168.1.20"),
        ]
        for request in cases:
            response = self.handle(request)
            self.assertEqual(response.code, 400, request.headers.get("Contact"))
            self.assertEqual(response.to.tag, "regtag")
        self.assertEqual(self.lookup(), [])

    def test_q_listed(self) -> None:
        """q values are kept, listed in the 200, and order the lookup."""
        response = self.handle(register(f"<{C1}>;q=0.5", f"<{C2}>;q=1.0"))
        self.assertEqual(self.contacts(response),
                         [f"<{C2}>;q=1;expires=3600", f"<{C1}>;q=0.5;expires=3600"])
        self.assertEqual([b.contact for b in self.lookup()], [C2, C1])

    def test_aor_normalised(self) -> None:
        """The AOR is normalised, so lookups by any equivalent form agree."""
        self.handle(register(f"<{C1}>"), aor="sip:alice@EXAMPLE.com")
        self.assertEqual(len(self.lookup("sip:%61lice@example.com")), 1)
        self.assertEqual(self.lookup()[0].aor, AOR)

    def test_store_failure(self) -> None:
        """When the location store fails the answer is 503 with Retry-After,
        and the failure is logged."""
        registrar = Registrar(BrokenStore(), self.clock)
        response = self.successResultOf(registrar.handle(register(f"<{C1}>"), SOURCE, AOR))
        self.assertEqual((response.code, response.headers.get("Retry-After")),
                         (503, str(RETRY_AFTER)))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_bad_configuration(self) -> None:
        """Inconsistent limits raise ValueError."""
        for kwargs in ({"min_expires": 0}, {"min_expires": 100, "max_expires": 50},
                       {"default_expires": 10}, {"max_contacts": 0}):
            self.assertRaises(ValueError, Registrar, self.store, self.clock, **kwargs)

    def test_format_binding(self) -> None:
        """format_binding writes the URI, q, instance, reg-id and seconds left."""
        b = Binding(AOR, C1, T0 + 100.4, q=0.25, instance_id=INSTANCE, reg_id=3)
        self.assertEqual(format_binding(b, T0),
                         f'<{C1}>;q=0.25;+sip.instance="{INSTANCE}";reg-id=3;expires=100')
