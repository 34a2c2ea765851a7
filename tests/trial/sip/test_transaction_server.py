"""Tests for L{b2bua.sip.transaction_server}: the INVITE and non-INVITE
server transactions, fed through L{TransactionLayer.message_received} on a
L{Clock}, and the TU's L{TwoXXRetransmitter}."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.errors import TransactionTimeout, TransportError
from b2bua.sip.interfaces import Source
from b2bua.sip.message import Request, make_response, parse_message
from b2bua.sip.timers import Timers
from b2bua.sip.transaction import TransactionLayer
from b2bua.sip.transaction_server import (
    InviteServerState,
    InviteServerTransaction,
    NonInviteServerState,
    NonInviteServerTransaction,
    RetransmitterState,
    TwoXXRetransmitter,
)
from tests.trial.sip.test_transaction_client import (
    NON_INVITE_SENDS,
    RecordingTransport,
    RecordingUser,
    counting_random,
    wait,
)

UDP_CLIENT = Source("UDP", ("127.0.0.2", 5070), ("127.0.0.1", 5060))
TCP_CLIENT = Source("TCP", ("127.0.0.2", 40000), ("127.0.0.1", 5060), connection_id=3)

#: final response retransmissions over UDP (Timer G, capped at T2)
FINAL_SENDS = NON_INVITE_SENDS


def incoming(method: str = "INVITE", branch: str | None = "z9hG4bKc1",
             sent_by: str = "127.0.0.2:5070", transport: str = "UDP", cseq: int = 1,
             cseq_method: str | None = None, to_tag: str | None = None,
             uri: str = "sip:bob@127.0.0.1", call_id: str = "call-9@127.0.0.2",
             from_tag: str = "c1", extra: str = "") -> Request:
    """A request as it arrives from the wire (parsed from bytes)."""
    params = f";branch={branch}" if branch is not None else ""
    to = "<sip:bob@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {sent_by}{params};rport=5070;received=127.0.0.2\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@127.0.0.2>;tag={from_tag}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    return request


def ack_for(invite: Request, tag: str = "srv1", branch: str | None = None) -> Request:
    """The ACK of a response with To tag C{tag} (by default the non-2xx
    ACK: same branch as the INVITE)."""
    via = invite.via[0]
    return incoming("ACK", branch=branch or via.branch,
                    sent_by=f"{via.host}:{via.port}", transport=via.transport,
                    cseq=invite.cseq.number, to_tag=tag, uri=invite.uri_text,
                    call_id=invite.call_id, from_tag=invite.from_.tag or "")


class ServerTestCase(SynchronousTestCase):
    """A layer with a recording transport and a recording TU."""

    timers = Timers()

    def setUp(self) -> None:
        """A layer on a fresh clock."""
        self.clock = Clock()
        self.transport = RecordingTransport(self.clock)
        self.user = RecordingUser()
        self.layer = TransactionLayer(self.clock, self.transport, self.user, self.timers,
                                      random=counting_random())

    def wait(self, seconds: float) -> None:
        """Let C{seconds} pass, each timer at its own time."""
        wait(self.clock, seconds)

    def assertClean(self) -> None:
        """No transaction left, nothing on the clock."""
        self.assertEqual(self.layer.active_count(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def receive(self, request: Request, source: Source = UDP_CLIENT) -> object:
        """Deliver C{request}; return the transaction the TU got for it (if
        the TU was called)."""
        before = len(self.user.requests)
        self.layer.message_received(request, source)
        if len(self.user.requests) > before:
            return self.user.requests[-1][1]
        return None


class NonInviteServerTests(ServerTestCase):
    """The non-INVITE server transaction (RFC 3261 17.2.2)."""

    def test_new_request(self) -> None:
        """A new request makes a transaction in Trying and goes to the TU."""
        request = incoming("OPTIONS")
        tx = self.receive(request)
        self.assertIsInstance(tx, NonInviteServerTransaction)
        assert isinstance(tx, NonInviteServerTransaction)
        self.assertEqual(self.user.requests, [(request, tx)])
        self.assertIs(tx.request, request)
        self.assertEqual(tx.source, UDP_CLIENT)
        self.assertEqual(tx.state, NonInviteServerState.TRYING)
        self.assertIsNone(tx.last_response)
        self.assertEqual(self.layer.active_count(), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        tx.respond(make_response(request, 200, to_tag="s1"))
        self.wait(32)
        self.assertClean()

    def test_retransmission_in_trying(self) -> None:
        """A retransmission before any response is absorbed silently."""
        request = incoming("OPTIONS")
        tx = self.receive(request)
        self.assertIsNone(self.receive(incoming("OPTIONS")))
        self.assertEqual(len(self.user.requests), 1)
        self.assertEqual(self.transport.responses, [])
        tx.respond(make_response(request, 200))  # type: ignore[union-attr]
        self.wait(32)
        self.assertClean()

    def test_final_and_timer_j(self) -> None:
        """The final goes to the source; retransmissions get it again and do
        not reach the TU; Timer J (64*T1) ends the transaction."""
        request = incoming("OPTIONS")
        tx = self.receive(request)
        assert isinstance(tx, NonInviteServerTransaction)
        response = make_response(request, 200, to_tag="s1")
        tx.respond(response)
        self.assertEqual(tx.state, NonInviteServerState.COMPLETED)
        self.assertIs(tx.last_response, response)
        self.assertEqual(self.transport.responses, [(0.0, response, UDP_CLIENT)])
        self.wait(3)
        self.receive(incoming("OPTIONS"))
        self.assertEqual([(t, r) for t, r, _ in self.transport.responses],
                         [(0.0, response), (3.0, response)])
        self.assertEqual(len(self.user.requests), 1)
        self.wait(28.9)
        self.assertEqual(tx.state, NonInviteServerState.COMPLETED)
        self.wait(0.1)
        self.assertEqual(tx.state, NonInviteServerState.TERMINATED)
        self.assertClean()
        # after Timer J the same request is new again
        self.assertIsNotNone(self.receive(incoming("OPTIONS")))
        self.user.requests[-1][1].respond(make_response(request, 200))  # type: ignore[attr-defined]
        self.wait(32)
        self.assertClean()

    def test_provisional_resent(self) -> None:
        """In Proceeding a retransmission gets the last provisional response."""
        request = incoming("SUBSCRIBE")
        tx = self.receive(request)
        assert isinstance(tx, NonInviteServerTransaction)
        tx.respond(make_response(request, 100))
        tx.respond(make_response(request, 183))
        self.assertEqual(tx.state, NonInviteServerState.PROCEEDING)
        self.receive(incoming("SUBSCRIBE"))
        self.assertEqual(self.transport.response_codes(), [100, 183, 183])
        tx.respond(make_response(request, 202))
        tx.respond(make_response(request, 500))
        self.assertEqual(self.transport.response_codes(), [100, 183, 183, 202])
        self.wait(32)
        self.assertClean()

    def test_reliable(self) -> None:
        """Over TCP Timer J is zero: the transaction ends with the final."""
        request = incoming("OPTIONS", transport="TCP")
        tx = self.receive(request, TCP_CLIENT)
        assert isinstance(tx, NonInviteServerTransaction)
        tx.respond(make_response(request, 200))
        self.assertEqual(tx.state, NonInviteServerState.TERMINATED)
        self.assertEqual(self.transport.responses[0][2], TCP_CLIENT)
        self.assertClean()

    def test_transport_error(self) -> None:
        """A response that cannot be sent is reported to the TU and ends the
        transaction."""
        request = incoming("OPTIONS")
        tx = self.receive(request)
        assert isinstance(tx, NonInviteServerTransaction)
        self.transport.result = TransportError("gone")
        tx.respond(make_response(request, 200))
        self.assertEqual(tx.state, NonInviteServerState.TERMINATED)
        [(failed, error)] = self.user.failures
        self.assertIs(failed, tx)
        self.assertIsInstance(error, TransportError)
        self.assertClean()

    def test_tu_exception(self) -> None:
        """A TU that raises on a new request gets it answered C{500}."""
        self.user.on_request = lambda r, t: 1 / 0
        self.receive(incoming("OPTIONS"))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.transport.response_codes(), [500])
        self.assertIsNotNone(self.transport.responses[0][1].to.tag)
        self.wait(32)
        self.assertClean()


class InviteServerTests(ServerTestCase):
    """The INVITE server transaction (RFC 3261 17.2.1, RFC 6026)."""

    def start(self, source: Source = UDP_CLIENT,
              transport: str = "UDP") -> tuple[Request, InviteServerTransaction]:
        """Receive an INVITE; return it and its transaction."""
        request = incoming("INVITE", transport=transport,
                           extra="Timestamp: 54\r\nRecord-Route: <sip:p.example;lr>\r\n")
        tx = self.receive(request, source)
        assert isinstance(tx, InviteServerTransaction)
        return request, tx

    def test_trying_after_200ms(self) -> None:
        """Without an answer from the TU, C{100 Trying} goes at 200 ms, with
        the Timestamp and no To tag."""
        request, tx = self.start()
        self.assertEqual(tx.state, InviteServerState.PROCEEDING)
        self.wait(0.199)
        self.assertEqual(self.transport.responses, [])
        self.wait(0.001)
        [(when, trying, source)] = self.transport.responses
        self.assertAlmostEqual(when, 0.2)
        self.assertEqual(trying.code, 100)
        self.assertEqual(source, UDP_CLIENT)
        self.assertIsNone(trying.to.tag)
        self.assertEqual(trying.headers.get("Timestamp"), "54")
        self.assertEqual(trying.headers.get("Record-Route"), None)
        self.assertIs(tx.last_response, trying)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # a retransmitted INVITE gets the 100 again
        self.wait(0.3)
        self.assertIsNone(self.receive(incoming("INVITE")))
        self.assertEqual(self.transport.response_codes(), [100, 100])
        tx.respond(make_response(request, 486, to_tag="srv1"))
        self.receive(ack_for(request))
        self.wait(5)
        self.assertClean()

    def test_no_trying_when_tu_answers(self) -> None:
        """A TU that answers within 200 ms cancels the automatic 100."""
        self.user.on_request = lambda r, t: t.respond(make_response(r, 180, to_tag="srv1"))
        request, tx = self.start()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.wait(1)
        self.assertEqual(self.transport.response_codes(), [180])
        tx.respond(make_response(request, 200, to_tag="srv1"))
        self.wait(32)
        self.assertClean()

    def test_retransmission_before_response(self) -> None:
        """A retransmitted INVITE before any response sends nothing."""
        request, tx = self.start()
        self.receive(incoming("INVITE"))
        self.assertEqual(self.transport.responses, [])
        self.assertEqual(len(self.user.requests), 1)
        tx.respond(make_response(request, 603, to_tag="x"))
        self.receive(ack_for(request, "x"))
        self.wait(5)
        self.assertClean()

    def test_provisional_resent(self) -> None:
        """In Proceeding a retransmission gets the last provisional again."""
        request, tx = self.start()
        tx.respond(make_response(request, 180, to_tag="srv1"))
        tx.respond(make_response(request, 183, to_tag="srv1"))
        self.receive(incoming("INVITE"))
        self.assertEqual(self.transport.response_codes(), [180, 183, 183])
        tx.respond(make_response(request, 200, to_tag="srv1"))
        self.wait(32)
        self.assertClean()

    def test_2xx_accepted(self) -> None:
        """A 2xx moves to Accepted: INVITE retransmissions are absorbed, 2xx
        retransmissions by the TU pass through, an ACK matching the
        transaction goes to the TU, Timer L ends it after 64*T1."""
        request, tx = self.start()
        ok = make_response(request, 200, to_tag="srv1")
        tx.respond(ok)
        self.assertEqual(tx.state, InviteServerState.ACCEPTED)
        self.receive(incoming("INVITE"))
        self.assertEqual(self.transport.response_codes(), [200])
        self.wait(0.5)
        tx.respond(ok)
        self.assertEqual([t for t, _, _ in self.transport.responses], [0.0, 0.5])
        tx.respond(make_response(request, 486, to_tag="srv1"))
        tx.respond(make_response(request, 180, to_tag="srv1"))
        self.assertEqual(self.transport.response_codes(), [200, 200])
        ack = ack_for(request, "srv1")
        self.receive(ack)
        self.assertEqual(self.user.requests[-1], (ack, None))
        self.assertEqual(tx.state, InviteServerState.ACCEPTED)
        self.wait(31.4)
        self.assertEqual(tx.state, InviteServerState.ACCEPTED)
        self.wait(0.1)
        self.assertEqual(tx.state, InviteServerState.TERMINATED)
        self.assertClean()

    def test_finals_kept_compact(self) -> None:
        """A final response, kept until the transaction ends, is compacted
        once sent (L{Message.compact}) and still writes the same bytes; a
        provisional one is left as it is."""
        for code in (200, 486):
            request, tx = self.start()
            ringing = make_response(request, 180, to_tag="srv1")
            tx.respond(ringing)
            self.assertIsInstance(ringing.headers._fields, list)
            final = make_response(request, code, to_tag="srv1")
            wire = final.to_bytes()
            tx.respond(final)
            self.assertIsInstance(final.headers._fields, str)
            self.assertEqual(final.to_bytes(), wire)
            self.assertEqual(tx.last_response.to.tag, "srv1")  # type: ignore[union-attr]
            if code >= 300:
                self.receive(ack_for(request))
            self.wait(32)
            self.assertClean()

    def test_2xx_ack_with_own_branch(self) -> None:
        """The ACK of a 2xx (a new branch) matches no transaction: the TU
        gets it with C{None}."""
        request, tx = self.start()
        tx.respond(make_response(request, 200, to_tag="srv1"))
        ack = ack_for(request, "srv1", branch="z9hG4bKack2")
        self.receive(ack)
        self.assertEqual(self.user.requests[-1], (ack, None))
        self.wait(32)
        self.assertClean()

    def test_non_2xx_timer_g_and_h(self) -> None:
        """A 486 over UDP is retransmitted by Timer G (T1 doubling up to T2);
        without an ACK Timer H (64*T1) reports L{TransactionTimeout}."""
        request, tx = self.start()
        busy = make_response(request, 486, to_tag="srv1")
        tx.respond(busy)
        self.assertEqual(tx.state, InviteServerState.COMPLETED)
        self.wait(31.9)
        self.assertEqual(self.user.failures, [])
        self.wait(0.1)
        self.assertEqual([t for t, _, _ in self.transport.responses], FINAL_SENDS)
        self.assertTrue(all(r is busy for _, r, _ in self.transport.responses))
        [(failed, error)] = self.user.failures
        self.assertIs(failed, tx)
        self.assertIsInstance(error, TransactionTimeout)
        self.assertEqual(tx.state, InviteServerState.TERMINATED)
        self.assertClean()

    def test_ack_confirms(self) -> None:
        """The ACK stops Timer G and H; Confirmed absorbs more ACKs and
        INVITEs; Timer I (T4) ends the transaction."""
        request, tx = self.start()
        tx.respond(make_response(request, 486, to_tag="srv1"))
        self.wait(1.6)
        self.receive(incoming("INVITE"))
        self.assertEqual([t for t, _, _ in self.transport.responses], [0.0, 0.5, 1.5, 1.6])
        self.receive(ack_for(request))
        self.assertEqual(tx.state, InviteServerState.CONFIRMED)
        self.assertEqual(len(self.user.requests), 1)
        self.receive(ack_for(request))
        self.receive(incoming("INVITE"))
        self.assertEqual(len(self.user.requests), 1)
        self.wait(4.9)
        self.assertEqual(len(self.transport.responses), 4)
        self.assertEqual(tx.state, InviteServerState.CONFIRMED)
        self.wait(0.1)
        self.assertEqual(tx.state, InviteServerState.TERMINATED)
        self.assertEqual(self.user.failures, [])
        self.assertClean()

    def test_reliable(self) -> None:
        """Over TCP nothing is retransmitted and Timer I is zero."""
        request, tx = self.start(TCP_CLIENT, "TCP")
        tx.respond(make_response(request, 404, to_tag="srv1"))
        self.wait(10)
        self.assertEqual(self.transport.response_codes(), [404])
        self.receive(ack_for(request), TCP_CLIENT)
        self.assertEqual(tx.state, InviteServerState.TERMINATED)
        self.assertClean()

    def test_reliable_timer_h(self) -> None:
        """Over TCP Timer H still runs when no ACK comes."""
        request, tx = self.start(TCP_CLIENT, "TCP")
        tx.respond(make_response(request, 404, to_tag="srv1"))
        self.wait(32)
        self.assertEqual(len(self.user.failures), 1)
        self.assertClean()

    def test_second_final_dropped(self) -> None:
        """A second final response from the TU is not sent."""
        request, tx = self.start()
        tx.respond(make_response(request, 486, to_tag="srv1"))
        tx.respond(make_response(request, 200, to_tag="srv1"))
        self.assertEqual(self.transport.response_codes(), [486])
        self.receive(ack_for(request))
        self.wait(5)
        self.assertClean()

    def test_transport_error_on_trying(self) -> None:
        """The automatic 100 failing reports L{TransportError} to the TU."""
        self.transport.result = TransportError("no route")
        _, tx = self.start()
        self.wait(0.2)
        self.assertEqual(tx.state, InviteServerState.TERMINATED)
        self.assertIsInstance(self.user.failures[0][1], TransportError)
        self.assertClean()

    def test_transport_error_on_retransmission(self) -> None:
        """A Timer G retransmission that fails later ends the transaction."""
        request, tx = self.start()
        self.transport.result = "pending"
        tx.respond(make_response(request, 500, to_tag="srv1"))
        self.wait(0.5)
        self.transport.pending[1].errback(TransportError("lost"))
        self.assertEqual(tx.state, InviteServerState.TERMINATED)
        self.assertEqual(len(self.user.failures), 1)
        self.assertClean()

    def test_state_names(self) -> None:
        """The class docstrings list every state of the machines."""
        for cls in (InviteServerTransaction, NonInviteServerTransaction, TwoXXRetransmitter):
            for state in cls.State:
                self.assertIn(f"C{{{state.value}}}", cls.__doc__)


class TwoXXRetransmitterTests(SynchronousTestCase):
    """L{TwoXXRetransmitter} (RFC 3261 13.3.1.4)."""

    def setUp(self) -> None:
        """A retransmitter that records when it sends."""
        self.clock = Clock()
        self.sent: list[float] = []
        self.timeouts: list[float] = []
        self.retransmitter = TwoXXRetransmitter(
            self.clock, lambda: self.sent.append(self.clock.seconds()), Timers(),
            on_timeout=lambda: self.timeouts.append(self.clock.seconds()))

    def test_until_timeout(self) -> None:
        """Without an ACK: T1 doubling up to T2, then the timeout at 64*T1."""
        self.assertEqual(self.retransmitter.state, RetransmitterState.IDLE)
        self.retransmitter.start()
        self.assertEqual(self.retransmitter.state, RetransmitterState.RETRANSMITTING)
        wait(self.clock, 100)
        self.assertEqual(self.sent, NON_INVITE_SENDS[1:])
        self.assertEqual(self.timeouts, [32.0])
        self.assertTrue(self.retransmitter.timed_out)
        self.assertEqual(self.retransmitter.state, RetransmitterState.DONE)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ack(self) -> None:
        """The ACK stops the retransmissions; no timeout is reported."""
        self.retransmitter.start()
        wait(self.clock, 2)
        self.retransmitter.ack_received()
        wait(self.clock, 100)
        self.assertEqual(self.sent, [0.5, 1.5])
        self.assertEqual(self.timeouts, [])
        self.assertFalse(self.retransmitter.timed_out)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.retransmitter.ack_received()

    def test_stop(self) -> None:
        """L{TwoXXRetransmitter.stop} ends it quietly, started or not."""
        self.retransmitter.start()
        self.retransmitter.stop()
        other = TwoXXRetransmitter(self.clock, lambda: None)
        other.stop()
        other.start()
        wait(self.clock, 100)
        self.assertEqual((self.sent, self.timeouts), ([], []))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_send_raises(self) -> None:
        """A send that raises is logged; the retransmissions go on."""
        calls: list[float] = []

        def send() -> None:
            calls.append(self.clock.seconds())
            raise RuntimeError("boom")

        retransmitter = TwoXXRetransmitter(self.clock, send, Timers(t1=1.0, t2=2.0))
        retransmitter.start()
        wait(self.clock, 64)
        self.assertEqual(calls[:4], [1.0, 3.0, 5.0, 7.0])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), len(calls))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_with_transaction(self) -> None:
        """The intended use: the TU sends the 2xx, the retransmitter re-sends
        it through the transaction until the ACK arrives."""
        clock = Clock()
        transport = RecordingTransport(clock)
        user = RecordingUser()
        layer = TransactionLayer(clock, transport, user)
        retransmitters: list[TwoXXRetransmitter] = []

        def answer(request: Request, tx: object) -> None:
            if tx is None:
                retransmitters[0].ack_received()
                return
            ok = make_response(request, 200, to_tag="srv1")
            tx.respond(ok)  # type: ignore[attr-defined]
            retransmitter = TwoXXRetransmitter(clock, lambda: tx.respond(ok))  # type: ignore[attr-defined]
            retransmitters.append(retransmitter)
            retransmitter.start()

        user.on_request = answer
        invite = incoming("INVITE")
        layer.message_received(invite, UDP_CLIENT)
        wait(clock, 4)
        layer.message_received(ack_for(invite, "srv1", branch="z9hG4bKack"), UDP_CLIENT)
        wait(clock, 40)
        self.assertEqual([t for t, _, _ in transport.responses], [0.0, 0.5, 1.5, 3.5])
        self.assertEqual(layer.active_count(), 0)
        self.assertEqual(clock.getDelayedCalls(), [])
