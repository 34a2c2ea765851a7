"""Tests for L{b2bua.sip.transaction_client}: the INVITE and non-INVITE client
transactions, driven through L{TransactionLayer.send_request} on a
L{Clock} with a recording fake transport.

The fakes at the top (L{RecordingTransport}, L{RecordingOwner},
L{RecordingUser}, the message builders) are shared by the server and layer
tests.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.errors import TransactionTimeout, TransportError
from b2bua.sip.interfaces import Source, Target
from b2bua.sip.message import Request, Response, make_response, parse_message
from b2bua.sip.timers import Timers
from b2bua.sip.transaction import TransactionLayer
from b2bua.sip.transaction_client import (
    InviteClientState,
    InviteClientTransaction,
    NonInviteClientState,
    NonInviteClientTransaction,
    build_ack,
)

UDP_TARGET = Target("UDP", "127.0.0.2", 5070)
TCP_TARGET = Target("TCP", "127.0.0.2", 5070, connection_id=7)

#: INVITE retransmission times over UDP with the default timers (17.1.1.2)
INVITE_SENDS = [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
#: non-INVITE retransmission times over UDP, capped at T2 (17.1.2.2)
NON_INVITE_SENDS = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]


def counting_random() -> Callable[[int], bytes]:
    """A deterministic stand-in for C{os.urandom}: 1, 2, 3 ... big-endian."""
    counter = itertools.count(1)

    def random(n: int) -> bytes:
        return next(counter).to_bytes(n, "big")

    return random


class RecordingTransport:
    """A fake L{Transport}: records every send with the clock's time.

    @ivar requests: (time, request, target) per send_request.
    @ivar responses: (time, response, source) per send_response.
    @ivar result: what the next sends return: C{None} for success, an
        exception for an immediate failure, or C{"pending"} for a Deferred
        kept in L{pending} for the test to fire.
    """

    def __init__(self, clock: Clock, listeners: dict[str, tuple[str, int]] | None = None):
        self.clock = clock
        self.listeners = listeners or {"UDP": ("127.0.0.1", 5060), "TCP": ("127.0.0.1", 5060)}
        self.requests: list[tuple[float, Request, Target]] = []
        self.responses: list[tuple[float, Response, Source]] = []
        self.result: object = None
        self.pending: list[Deferred[None]] = []

    def _outcome(self) -> Deferred[None]:
        if self.result is None:
            return succeed(None)
        if self.result == "pending":
            d: Deferred[None] = Deferred()
            self.pending.append(d)
            return d
        assert isinstance(self.result, Exception)
        return fail(self.result)

    def send_request(self, request: Request, target: Target) -> Deferred[None]:
        """Record a request."""
        self.requests.append((self.clock.seconds(), request, target))
        return self._outcome()

    def send_response(self, response: Response, source: Source) -> Deferred[None]:
        """Record a response."""
        self.responses.append((self.clock.seconds(), response, source))
        return self._outcome()

    def local_address(self, transport: str) -> tuple[str, int]:
        """Our fake listener for C{transport}."""
        try:
            return self.listeners[transport]
        except KeyError:
            raise TransportError(f"no {transport} listener") from None

    def request_times(self, method: str | None = None) -> list[float]:
        """When requests (of C{method}) were sent."""
        return [t for t, r, _ in self.requests if method is None or r.method == method]

    def response_codes(self) -> list[int]:
        """The codes of the responses sent, in order."""
        return [r.code for _, r, _ in self.responses]


class RecordingOwner:
    """A fake L{ClientTransactionUser} that records what it is told."""

    def __init__(self) -> None:
        self.responses: list[tuple[Response, object]] = []
        self.failures: list[tuple[object, Exception]] = []
        self.on_response: Callable[[Response, object], object] | None = None

    def response_received(self, response: Response, transaction: object) -> None:
        """Record a response."""
        self.responses.append((response, transaction))
        if self.on_response is not None:
            self.on_response(response, transaction)

    def transaction_failed(self, transaction: object, error: Exception) -> None:
        """Record a failure."""
        self.failures.append((transaction, error))

    def codes(self) -> list[int]:
        """The codes of the responses received, in order."""
        return [r.code for r, _ in self.responses]


class RecordingUser:
    """A fake L{TransactionUser}: records requests, stray responses and
    failures; C{on_request} may answer."""

    def __init__(self) -> None:
        self.requests: list[tuple[Request, object]] = []
        self.responses: list[tuple[Response, Source]] = []
        self.failures: list[tuple[object, Exception]] = []
        self.on_request: Callable[[Request, object], object] | None = None

    def request_received(self, request: Request, transaction: object) -> None:
        """Record a request."""
        self.requests.append((request, transaction))
        if self.on_request is not None:
            self.on_request(request, transaction)

    def response_received(self, response: Response, source: Source) -> None:
        """Record a stray response."""
        self.responses.append((response, source))

    def server_transaction_failed(self, transaction: object, error: Exception) -> None:
        """Record a failure."""
        self.failures.append((transaction, error))


def outgoing(method: str = "INVITE", cseq: int = 1, routes: tuple[str, ...] = (),
             body: bytes = b"") -> Request:
    """A request as a UAC core builds it (no Via yet)."""
    headers = [
        ("Max-Forwards", "70"),
        ("From", "Alice <sip:alice@a.example>;tag=from1"),
        ("To", "Bob <sip:bob@b.example>"),
        ("Call-ID", "call-1@a.example"),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", "<sip:alice@127.0.0.1:5060>"),
    ]
    headers[1:1] = [("Route", r) for r in routes]
    return Request(method, "sip:bob@b.example", headers, body)


def reply(request: Request, code: int, to_tag: str | None = "to1") -> Response:
    """A response to C{request} as it comes back over the wire (parsed)."""
    response = make_response(request, code, to_tag=to_tag if code > 100 else None)
    return parse_message(response.to_bytes())  # type: ignore[return-value]


def wait(clock: Clock, seconds: float) -> None:
    """Advance C{clock} by C{seconds}, stopping at each delayed call's time,
    so that what a call does is recorded at the time it was due."""
    end = clock.seconds() + seconds
    while True:
        due = [c.getTime() for c in clock.getDelayedCalls() if c.getTime() <= end]
        if not due:
            break
        clock.advance(max(0.0, min(due) - clock.seconds()))
    clock.advance(end - clock.seconds())


SERVER = Source("UDP", ("127.0.0.2", 5070), ("127.0.0.1", 5060))


class ClientTestCase(SynchronousTestCase):
    """Sets up a layer with a recording transport, owner and user."""

    timers = Timers()

    def setUp(self) -> None:
        """A layer on a fresh clock."""
        self.clock = Clock()
        self.transport = RecordingTransport(self.clock)
        self.user = RecordingUser()
        self.owner = RecordingOwner()
        self.layer = TransactionLayer(self.clock, self.transport, self.user, self.timers,
                                      random=counting_random())

    def assertClean(self) -> None:
        """No transaction left, nothing on the clock."""
        self.assertEqual(self.layer.active_count(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def wait(self, seconds: float) -> None:
        """Let C{seconds} pass, running each timer at its own time."""
        wait(self.clock, seconds)

    def deliver(self, response: Response) -> None:
        """A response arrives from the server."""
        self.layer.message_received(response, SERVER)

    def invite(self, target: Target = UDP_TARGET, **kw: object) -> InviteClientTransaction:
        """Send an INVITE."""
        tx = self.layer.send_request(outgoing("INVITE", **kw), target, self.owner)  # type: ignore[arg-type]
        assert isinstance(tx, InviteClientTransaction)
        return tx


class TimersTests(SynchronousTestCase):
    """L{Timers} derives Timers A to M from T1, T2 and T4."""

    def test_defaults(self) -> None:
        """The RFC 3261 table 4 defaults."""
        t = Timers()
        self.assertEqual((t.t1, t.t2, t.t4), (0.5, 4.0, 5.0))
        self.assertEqual((t.timer_a, t.timer_b, t.timer_d), (0.5, 32.0, 32.0))
        self.assertEqual((t.timer_e, t.timer_f, t.timer_g, t.timer_h), (0.5, 32.0, 0.5, 32.0))
        self.assertEqual((t.timer_i, t.timer_j, t.timer_k), (5.0, 32.0, 5.0))
        self.assertEqual((t.timer_l, t.timer_m, t.trying_delay), (32.0, 32.0, 0.2))

    def test_derived(self) -> None:
        """Changing T1 and T4 changes the timers derived from them."""
        t = Timers(t1=0.1, t2=1.0, t4=2.0)
        self.assertAlmostEqual(t.timer_b, 6.4)
        self.assertAlmostEqual(t.timer_h, 6.4)
        self.assertEqual(t.timer_k, 2.0)

    def test_frozen(self) -> None:
        """The values cannot be changed once built."""
        with self.assertRaises(AttributeError):
            Timers().t1 = 1.0  # type: ignore[misc]

    def test_invalid(self) -> None:
        """Non-positive values and T2 below T1 are refused."""
        self.assertRaises(ValueError, Timers, t1=0)
        self.assertRaises(ValueError, Timers, t1=2.0, t2=1.0)


class InviteClientTests(ClientTestCase):
    """The INVITE client transaction (RFC 3261 17.1.1, RFC 6026)."""

    def test_via(self) -> None:
        """The layer adds a top Via with our listener, a new branch and rport."""
        tx = self.invite()
        self.assertEqual(
            tx.request.headers.get_all("Via"),
            ["SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK000000000000000000000001;rport"])
        self.assertEqual(tx.branch, "z9hG4bK000000000000000000000001")
        self.assertEqual(tx.target, UDP_TARGET)
        self.assertEqual(tx.state, InviteClientState.CALLING)
        self.assertEqual(tx.state, "Calling")
        self.wait(32)

    def test_via_ipv6(self) -> None:
        """An IPv6 listener address goes in brackets."""
        self.transport.listeners["UDP"] = ("::1", 5060)
        tx = self.invite()
        self.assertTrue(tx.request.headers.get("Via").startswith("SIP/2.0/UDP [::1]:5060;"))
        self.wait(32)

    def test_no_listener(self) -> None:
        """Without a listener for the target's transport, send_request raises."""
        self.assertRaises(TransportError, self.invite, Target("TLS", "127.0.0.2", 5061))
        self.assertClean()

    def test_ack_and_cancel_refused(self) -> None:
        """ACK and CANCEL are not sent through send_request."""
        for method in ("ACK", "CANCEL"):
            self.assertRaises(ValueError, self.layer.send_request, outgoing(method),
                              UDP_TARGET, self.owner)
        self.assertClean()

    def test_retransmissions_and_timer_b(self) -> None:
        """Over UDP the INVITE goes at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s;
        Timer B ends the transaction at 32 s with L{TransactionTimeout}."""
        tx = self.invite()
        self.wait(31.5)
        self.assertEqual(self.clock.seconds(), 31.5)
        self.assertEqual(self.transport.request_times("INVITE"), INVITE_SENDS)
        self.assertEqual(self.owner.failures, [])
        self.wait(0.5)
        [(failed, error)] = self.owner.failures
        self.assertIs(failed, tx)
        self.assertIsInstance(error, TransactionTimeout)
        self.assertEqual(self.transport.request_times("INVITE"), INVITE_SENDS)
        self.assertEqual(tx.state, InviteClientState.TERMINATED)
        self.assertClean()

    def test_timer_b_exact_time(self) -> None:
        """Nothing fails before 32 s; the failure comes at 32 s."""
        tx = self.invite()
        self.wait(31.999)
        self.assertEqual(self.owner.failures, [])
        self.wait(0.001)
        self.assertEqual([f[0] for f in self.owner.failures], [tx])
        self.assertClean()

    def test_same_request_retransmitted(self) -> None:
        """Every retransmission sends the same request object, same branch."""
        tx = self.invite()
        self.wait(1.5)
        sent = [r for _, r, _ in self.transport.requests]
        self.assertEqual(len(sent), 3)
        self.assertTrue(all(r is tx.request for r in sent))
        self.wait(31)

    def test_custom_timers(self) -> None:
        """The intervals follow a configured T1."""
        self.layer = TransactionLayer(self.clock, self.transport, self.user,
                                      Timers(t1=0.25), random=counting_random())
        self.invite()
        self.wait(16)
        self.assertEqual(self.transport.request_times(),
                         [0.0, 0.25, 0.75, 1.75, 3.75, 7.75, 15.75])
        self.assertEqual(len(self.owner.failures), 1)
        self.assertClean()

    def test_reliable_no_retransmission(self) -> None:
        """Over TCP the INVITE is sent once; Timer B still fires at 32 s."""
        self.invite(TCP_TARGET)
        self.wait(31.9)
        self.assertEqual(len(self.transport.requests), 1)
        self.assertEqual(self.transport.requests[0][2], TCP_TARGET)
        self.wait(0.1)
        self.assertEqual(len(self.owner.failures), 1)
        self.assertClean()

    def test_provisional(self) -> None:
        """A provisional response stops retransmissions and Timer B: the
        transaction waits in Proceeding for as long as it takes."""
        tx = self.invite()
        self.wait(0.5)
        self.deliver(reply(tx.request, 180))
        self.assertEqual(tx.state, InviteClientState.PROCEEDING)
        self.assertEqual(self.owner.codes(), [180])
        self.assertIs(self.owner.responses[0][1], tx)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.wait(600)
        self.assertEqual(self.transport.request_times(), [0.0, 0.5])
        self.assertEqual(self.owner.failures, [])
        self.deliver(reply(tx.request, 183))
        self.assertEqual(self.owner.codes(), [180, 183])
        self.deliver(reply(tx.request, 486))
        self.assertEqual(tx.state, InviteClientState.COMPLETED)
        self.wait(32)
        self.assertClean()

    def test_non_2xx_ack(self) -> None:
        """A 486 is acknowledged by the transaction itself (17.1.1.3): same
        Request-URI, Call-ID, From, CSeq number, the To of the response, the
        INVITE's single top Via and its Route headers."""
        tx = self.invite(routes=("<sip:p1.example;lr>", "<sip:p2.example;lr>"),
                         body=b"v=0\r\n")
        tx.request.headers.add("Via", "SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKbelow")
        response = reply(tx.request, 486, to_tag="busy9")
        self.deliver(response)
        self.assertEqual(tx.state, InviteClientState.COMPLETED)
        self.assertEqual(self.owner.codes(), [486])
        _, ack, target = self.transport.requests[-1]
        self.assertEqual(ack.method, "ACK")
        self.assertIs(tx.ack, ack)
        self.assertEqual(target, UDP_TARGET)
        self.assertEqual(ack.uri_text, "sip:bob@b.example")
        self.assertEqual(ack.headers.get_all("Via"), [tx.request.headers.get_all("Via")[0]])
        self.assertEqual(ack.via[0].branch, tx.branch)
        self.assertEqual(ack.call_id, "call-1@a.example")
        self.assertEqual(ack.headers.get("From"), "Alice <sip:alice@a.example>;tag=from1")
        self.assertEqual(ack.to.tag, "busy9")
        self.assertEqual(str(ack.cseq), "1 ACK")
        self.assertEqual(ack.headers.get_all("Route"),
                         ["<sip:p1.example;lr>", "<sip:p2.example;lr>"])
        self.assertEqual(ack.body, b"")
        self.assertEqual(ack.headers.get("Contact"), None)
        self.wait(32)
        self.assertClean()

    def test_build_ack_function(self) -> None:
        """L{build_ack} can be used on its own and writes a valid message."""
        request = outgoing()
        request.headers.add_first("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx")
        ack = build_ack(request, reply(request, 603, to_tag="t"))
        parsed = parse_message(ack.to_bytes())
        self.assertEqual(parsed.headers.get("Content-Length"), "0")
        self.assertEqual(parsed.to.tag, "t")

    def test_final_retransmission_absorbed(self) -> None:
        """A retransmitted 486 gets the same ACK again and is not passed up;
        Timer D (32 s over UDP) ends the transaction."""
        tx = self.invite()
        response = reply(tx.request, 486)
        self.deliver(response)
        self.wait(10)
        self.deliver(reply(tx.request, 486))
        acks = [r for _, r, _ in self.transport.requests if r.method == "ACK"]
        self.assertEqual(len(acks), 2)
        self.assertIs(acks[0], acks[1])
        self.assertEqual(self.owner.codes(), [486])
        self.assertEqual(self.transport.request_times("INVITE"), [0.0])
        self.wait(21.9)
        self.assertEqual(tx.state, InviteClientState.COMPLETED)
        self.wait(0.1)
        self.assertEqual(tx.state, InviteClientState.TERMINATED)
        self.assertClean()

    def test_completed_lets_go_of_the_owner(self) -> None:
        """Once Completed (a 300-699 came and was reported) the transaction
        no longer holds its owner: lingering for Timer D keeps nothing of
        the TU alive; retransmitted finals are still ACKed."""
        tx = self.invite()
        self.deliver(reply(tx.request, 486))
        self.assertIsNot(tx.owner, self.owner)
        self.deliver(reply(tx.request, 486))
        self.assertEqual(self.owner.codes(), [486])
        self.assertEqual(len([r for _, r, _ in self.transport.requests if r.method == "ACK"]), 2)
        self.wait(32)
        self.assertClean()

    def test_accepted_keeps_the_owner(self) -> None:
        """In Accepted every 2xx still goes to the owner (it ACKs them)."""
        tx = self.invite()
        self.deliver(reply(tx.request, 200))
        self.deliver(reply(tx.request, 200))
        self.assertIs(tx.owner, self.owner)
        self.assertEqual(self.owner.codes(), [200, 200])

    def test_timer_d_reliable(self) -> None:
        """Over TCP Timer D is zero: the transaction ends with the final."""
        tx = self.invite(TCP_TARGET)
        self.deliver(reply(tx.request, 404))
        self.assertEqual(tx.state, InviteClientState.TERMINATED)
        self.assertEqual(self.transport.request_times("ACK"), [0.0])
        self.assertClean()

    def test_2xx_accepted(self) -> None:
        """A 2xx moves to Accepted (RFC 6026); the transaction sends no ACK;
        every 2xx, retransmitted or forked, goes to the owner; Timer M ends
        it after 64*T1."""
        tx = self.invite()
        self.wait(0.2)
        self.deliver(reply(tx.request, 200, to_tag="fork1"))
        self.assertEqual(tx.state, InviteClientState.ACCEPTED)
        self.deliver(reply(tx.request, 200, to_tag="fork1"))
        self.deliver(reply(tx.request, 200, to_tag="fork2"))
        self.assertEqual(self.owner.codes(), [200, 200, 200])
        self.assertEqual([r.to.tag for r, _ in self.owner.responses],
                         ["fork1", "fork1", "fork2"])
        self.deliver(reply(tx.request, 180))
        self.deliver(reply(tx.request, 486))
        self.assertEqual(self.owner.codes(), [200, 200, 200])
        self.assertEqual(self.transport.request_times(), [0.0])
        self.wait(31.9)
        self.assertEqual(tx.state, InviteClientState.ACCEPTED)
        self.wait(0.1)
        self.assertEqual(tx.state, InviteClientState.TERMINATED)
        self.assertEqual(self.owner.failures, [])
        self.assertClean()

    def test_stray_2xx_after_accepted(self) -> None:
        """Once Timer M has ended the transaction a retransmitted 2xx goes to
        the TU as a stray response."""
        tx = self.invite()
        self.deliver(reply(tx.request, 200))
        self.wait(32)
        late = reply(tx.request, 200)
        self.deliver(late)
        self.assertEqual(self.owner.codes(), [200])
        self.assertEqual(self.user.responses, [(late, SERVER)])
        self.assertClean()

    def test_transport_error_at_once(self) -> None:
        """A send that fails at once ends the transaction with the error."""
        self.transport.result = TransportError("unreachable")
        tx = self.invite()
        self.assertEqual(tx.state, InviteClientState.TERMINATED)
        self.assertEqual(len(self.owner.failures), 1)
        self.assertIsInstance(self.owner.failures[0][1], TransportError)
        self.assertEqual(str(self.owner.failures[0][1]), "unreachable")
        self.assertClean()

    def test_transport_error_later(self) -> None:
        """A retransmission whose send fails later ends the transaction; other
        exceptions are reported as L{TransportError} too."""
        self.transport.result = "pending"
        tx = self.invite()
        self.wait(0.5)
        self.assertEqual(len(self.transport.pending), 2)
        self.transport.pending[1].errback(OSError("network down"))
        self.assertEqual(tx.state, InviteClientState.TERMINATED)
        error = self.owner.failures[0][1]
        self.assertIsInstance(error, TransportError)
        self.assertIn("network down", str(error))
        self.transport.pending[0].callback(None)
        self.assertEqual(len(self.owner.failures), 1)
        self.assertClean()

    def test_owner_exception_logged(self) -> None:
        """An owner that raises does not stop the machine; the error is logged."""
        self.owner.on_response = lambda r, t: 1 / 0
        tx = self.invite()
        self.deliver(reply(tx.request, 486))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(tx.state, InviteClientState.COMPLETED)
        self.assertEqual(self.transport.request_times("ACK"), [0.0])
        self.wait(32)
        self.assertClean()


class CancelTests(ClientTestCase):
    """L{InviteClientTransaction.cancel} (RFC 3261 9.1)."""

    def cancels(self) -> list[Request]:
        """The CANCEL requests sent so far."""
        return [r for _, r, _ in self.transport.requests if r.method == "CANCEL"]

    def test_after_provisional(self) -> None:
        """In Proceeding the CANCEL goes at once, as its own non-INVITE
        transaction with the INVITE's Via and branch."""
        tx = self.invite(routes=("<sip:p1.example;lr>",))
        self.deliver(reply(tx.request, 180))
        cancel_tx = tx.cancel()
        self.assertIsInstance(cancel_tx, NonInviteClientTransaction)
        assert cancel_tx is not None
        self.assertIs(tx.cancel_transaction, cancel_tx)
        self.assertIs(tx.cancel(), cancel_tx)
        [cancel] = self.cancels()
        self.assertIs(cancel, cancel_tx.request)
        self.assertEqual(cancel.uri_text, tx.request.uri_text)
        self.assertEqual(cancel.headers.get_all("Via"), [tx.request.headers.get_all("Via")[0]])
        self.assertEqual(cancel_tx.branch, tx.branch)
        self.assertEqual(cancel.call_id, tx.request.call_id)
        self.assertEqual(cancel.headers.get("From"), tx.request.headers.get("From"))
        self.assertEqual(cancel.headers.get("To"), "Bob <sip:bob@b.example>")
        self.assertEqual(str(cancel.cseq), "1 CANCEL")
        self.assertEqual(cancel.headers.get_all("Route"), ["<sip:p1.example;lr>"])
        self.assertEqual(cancel.headers.get("Reason"), None)
        self.assertEqual(cancel_tx.target, UDP_TARGET)
        # the CANCEL's 200 and the INVITE's 487 go to their own transactions
        self.deliver(reply(cancel, 200))
        self.deliver(reply(tx.request, 487))
        self.assertEqual([(r.code, t) for r, t in self.owner.responses],
                         [(180, tx), (200, cancel_tx), (487, tx)])
        self.assertEqual(tx.state, InviteClientState.COMPLETED)
        self.assertEqual(cancel_tx.state, NonInviteClientState.COMPLETED)
        self.wait(32)
        self.assertClean()

    def test_cancel_retransmitted(self) -> None:
        """The CANCEL is retransmitted like any non-INVITE request."""
        tx = self.invite()
        self.deliver(reply(tx.request, 180))
        self.wait(10)
        cancel_tx = tx.cancel()
        assert cancel_tx is not None
        self.wait(64)
        self.assertEqual(self.transport.request_times("CANCEL"),
                         [10 + t for t in NON_INVITE_SENDS])
        self.assertEqual([f[0] for f in self.owner.failures], [cancel_tx])
        self.assertEqual(tx.state, InviteClientState.PROCEEDING)
        self.deliver(reply(tx.request, 408))
        self.wait(32)
        self.assertClean()

    def test_before_provisional(self) -> None:
        """In Calling the wish is kept; the CANCEL goes with the first
        provisional response, before the owner hears of it."""
        tx = self.invite()
        self.assertIsNone(tx.cancel())
        self.assertEqual(self.cancels(), [])
        self.wait(0.5)
        self.assertEqual(self.transport.request_times("INVITE"), [0.0, 0.5])
        seen: list[object] = []
        self.owner.on_response = lambda r, t: seen.append(tx.cancel_transaction)
        self.deliver(reply(tx.request, 100))
        self.assertIsNotNone(tx.cancel_transaction)
        self.assertEqual(seen, [tx.cancel_transaction])
        self.assertEqual(len(self.cancels()), 1)
        self.deliver(reply(tx.request, 180))
        self.assertEqual(len(self.cancels()), 1)
        self.deliver(reply(tx.cancel_transaction.request, 200))
        self.deliver(reply(tx.request, 487))
        self.wait(32)
        self.assertClean()

    def test_final_first(self) -> None:
        """A final response before any provisional drops the wish."""
        for code in (200, 486):
            tx = self.invite()
            tx.cancel()
            self.deliver(reply(tx.request, code))
            self.assertIsNone(tx.cancel_transaction)
            self.assertIsNone(tx.cancel())
            self.assertEqual(self.cancels(), [])
            self.wait(32)
        self.assertClean()

    def test_timeout_first(self) -> None:
        """Timer B before any provisional: no CANCEL either."""
        tx = self.invite()
        tx.cancel()
        self.wait(32)
        self.assertEqual(self.cancels(), [])
        self.assertIsNone(tx.cancel())
        self.assertClean()

    def test_cancel_from_owner_callback(self) -> None:
        """The owner may cancel while it is told of the provisional response."""
        tx = self.invite()
        self.owner.on_response = lambda r, t: tx.cancel(reason='SIP;cause=200;text="Elsewhere"')
        self.deliver(reply(tx.request, 180))
        [cancel] = self.cancels()
        self.assertEqual(cancel.headers.get("Reason"), 'SIP;cause=200;text="Elsewhere"')
        self.owner.on_response = None
        self.deliver(reply(cancel, 200))
        self.deliver(reply(tx.request, 487))
        self.wait(32)
        self.assertClean()

    def test_other_owner(self) -> None:
        """The CANCEL's responses can go to another owner."""
        other = RecordingOwner()
        tx = self.invite()
        self.deliver(reply(tx.request, 183))
        cancel_tx = tx.cancel(owner=other)
        assert cancel_tx is not None
        self.deliver(reply(cancel_tx.request, 200))
        self.assertEqual(other.codes(), [200])
        self.assertEqual(self.owner.codes(), [183])
        self.deliver(reply(tx.request, 487))
        self.wait(32)
        self.assertClean()

    def test_non_invite_not_cancelled(self) -> None:
        """A non-INVITE transaction is never cancelled."""
        tx = self.layer.send_request(outgoing("OPTIONS"), UDP_TARGET, self.owner)
        self.deliver(reply(tx.request, 100))
        self.assertIsNone(tx.cancel())
        self.assertEqual(self.cancels(), [])
        self.wait(32)
        self.assertClean()


class NonInviteClientTests(ClientTestCase):
    """The non-INVITE client transaction (RFC 3261 17.1.2)."""

    def send(self, target: Target = UDP_TARGET) -> NonInviteClientTransaction:
        """Send an OPTIONS."""
        tx = self.layer.send_request(outgoing("OPTIONS"), target, self.owner)
        assert isinstance(tx, NonInviteClientTransaction)
        return tx

    def test_retransmissions_capped_and_timer_f(self) -> None:
        """Over UDP Timer E doubles from T1 up to T2 (4 s); Timer F ends the
        transaction at 32 s with L{TransactionTimeout}."""
        tx = self.send()
        self.assertEqual(tx.state, NonInviteClientState.TRYING)
        self.wait(31.99)
        self.assertEqual(self.owner.failures, [])
        self.wait(0.01)
        self.assertEqual(self.transport.request_times(), NON_INVITE_SENDS)
        [(failed, error)] = self.owner.failures
        self.assertIs(failed, tx)
        self.assertIsInstance(error, TransactionTimeout)
        self.assertEqual(tx.state, NonInviteClientState.TERMINATED)
        self.assertClean()

    def test_proceeding_retransmits_at_t2(self) -> None:
        """After a provisional response Timer E keeps firing, every T2."""
        tx = self.send()
        self.wait(0.2)
        self.deliver(reply(tx.request, 100))
        self.assertEqual(tx.state, NonInviteClientState.PROCEEDING)
        self.assertEqual(self.owner.codes(), [100])
        self.wait(31.8)
        self.assertEqual(self.transport.request_times(),
                         [0.0, 0.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5])
        self.assertEqual(len(self.owner.failures), 1)
        self.assertClean()

    def test_reliable(self) -> None:
        """Over TCP nothing is retransmitted; Timer F still applies."""
        self.send(TCP_TARGET)
        self.wait(32)
        self.assertEqual(self.transport.request_times(), [0.0])
        self.assertEqual(len(self.owner.failures), 1)
        self.assertClean()

    def test_final_and_timer_k(self) -> None:
        """A final response goes to the owner; retransmissions of it are
        absorbed; Timer K (T4 = 5 s) ends the transaction."""
        tx = self.send()
        self.wait(1)
        self.deliver(reply(tx.request, 200))
        self.assertEqual(tx.state, NonInviteClientState.COMPLETED)
        self.deliver(reply(tx.request, 200))
        self.deliver(reply(tx.request, 180))
        self.assertEqual(self.owner.codes(), [200])
        self.wait(4.9)
        self.assertEqual(self.transport.request_times(), [0.0, 0.5])
        self.assertEqual(tx.state, NonInviteClientState.COMPLETED)
        self.wait(0.1)
        self.assertEqual(tx.state, NonInviteClientState.TERMINATED)
        self.assertEqual(self.owner.failures, [])
        self.assertClean()

    def test_completed_lets_go_of_the_owner(self) -> None:
        """Once the final response is reported the transaction no longer
        holds its owner while Timer K runs."""
        tx = self.send()
        text = tx.request.to_bytes()
        self.deliver(reply(tx.request, 200))
        self.assertIsNot(tx.owner, self.owner)
        # the request, kept unread until Timer K, is compacted (nothing lost)
        self.assertIsInstance(tx.request.headers._fields, str)
        self.assertEqual(tx.request.to_bytes(), text)
        self.deliver(reply(tx.request, 200))
        self.assertEqual(self.owner.codes(), [200])
        self.wait(5)
        self.assertClean()

    def test_timer_k_reliable(self) -> None:
        """Over TCP Timer K is zero."""
        tx = self.send(TCP_TARGET)
        self.deliver(reply(tx.request, 404))
        self.assertEqual(tx.state, NonInviteClientState.TERMINATED)
        self.assertEqual(self.owner.codes(), [404])
        self.assertClean()

    def test_transport_error(self) -> None:
        """A failed send ends the transaction with L{TransportError}."""
        self.transport.result = TransportError("connection refused")
        tx = self.send(TCP_TARGET)
        self.assertEqual(tx.state, NonInviteClientState.TERMINATED)
        self.assertIsInstance(self.owner.failures[0][1], TransportError)
        self.assertClean()

    def test_response_after_timeout(self) -> None:
        """A response after Timer F is a stray: dropped and counted."""
        tx = self.send()
        self.wait(32)
        self.deliver(reply(tx.request, 200))
        self.assertEqual(self.owner.codes(), [])
        self.assertEqual(self.layer.stray_responses, 1)
        self.assertClean()

    def test_state_names(self) -> None:
        """The class docstring lists every state of the machine."""
        for cls in (InviteClientTransaction, NonInviteClientTransaction):
            for state in cls.State:
                self.assertIn(f"C{{{state.value}}}", cls.__doc__)
