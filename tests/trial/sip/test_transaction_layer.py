"""Tests for L{b2bua.sip.transaction.TransactionLayer}: matching requests to
server transactions (RFC 3261 17.2.3 and the RFC 2543 fallback), responses
to client transactions (17.1.3), CANCEL lookup, stray and malformed
messages, and a client layer talking to a server layer through an
in-memory network."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.errors import TransportError
from b2bua.sip.interfaces import Source, Target
from b2bua.sip.message import Request, Response, make_response, parse_message
from b2bua.sip.timers import TimedMachine
from b2bua.sip.transaction import TransactionLayer
from b2bua.sip.transaction_client import (
    InviteClientState,
    InviteClientTransaction,
    NonInviteClientTransaction,
)
from b2bua.sip.transaction_server import (
    InviteServerState,
    InviteServerTransaction,
    NonInviteServerState,
    NonInviteServerTransaction,
    TwoXXRetransmitter,
)
from tests.trial.sip.test_transaction_client import (
    UDP_TARGET,
    RecordingOwner,
    RecordingTransport,
    RecordingUser,
    counting_random,
    outgoing,
    reply,
    wait,
)
from tests.trial.sip.test_transaction_server import (
    UDP_CLIENT,
    ServerTestCase,
    ack_for,
    incoming,
)

DIAGRAMS = Path(__file__).resolve().parents[3] / "docs" / "state-machines"

#: diagram file -> machine
MACHINES: dict[str, type[TimedMachine]] = {
    "invite-client.dot": InviteClientTransaction,
    "non-invite-client.dot": NonInviteClientTransaction,
    "invite-server.dot": InviteServerTransaction,
    "non-invite-server.dot": NonInviteServerTransaction,
    "two-xx-retransmitter.dot": TwoXXRetransmitter,
}


class ServerMatchingTests(ServerTestCase):
    """Requests are matched by top Via branch, sent-by and method (17.2.3)."""

    def test_sent_by_and_method(self) -> None:
        """Same branch from another sent-by, or with another method, is a new
        transaction; the same request again is a retransmission."""
        first = self.receive(incoming("OPTIONS"))
        self.assertIsNone(self.receive(incoming("OPTIONS")))
        other_host = self.receive(incoming("OPTIONS", sent_by="127.0.0.3:5070"))
        other_port = self.receive(incoming("OPTIONS", sent_by="127.0.0.2"))
        other_method = self.receive(incoming("INFO"))
        txs = [first, other_host, other_port, other_method]
        self.assertEqual(len({id(t) for t in txs if t is not None}), 4)
        self.assertEqual(self.layer.active_count(), 4)
        for tx in txs:
            tx.respond(make_response(tx.request, 200))  # type: ignore[union-attr]
        self.wait(32)
        self.assertClean()

    def test_branch_case_insensitive(self) -> None:
        """Branches compare without regard to case."""
        tx = self.receive(incoming("OPTIONS", branch="z9hG4bKAbC"))
        self.assertIsNone(self.receive(incoming("OPTIONS", branch="Z9HG4BKaBc")))
        tx.respond(make_response(tx.request, 200))  # type: ignore[union-attr]
        self.wait(32)
        self.assertClean()

    def test_ack_matches_invite(self) -> None:
        """The ACK of a non-2xx (same branch) matches the INVITE's transaction
        and does not reach the TU."""
        invite = incoming("INVITE")
        tx = self.receive(invite)
        assert isinstance(tx, InviteServerTransaction)
        tx.respond(make_response(invite, 480, to_tag="srv1"))
        self.receive(ack_for(invite))
        self.assertEqual(tx.state, InviteServerState.CONFIRMED)
        self.assertEqual(len(self.user.requests), 1)
        self.wait(5)
        self.assertClean()
        # once the transaction is gone, the same ACK goes to the TU
        late = ack_for(invite)
        self.receive(late)
        self.assertEqual(self.user.requests[-1], (late, None))

    def test_request_answered_at_once_is_compacted(self) -> None:
        """A request the TU answers with a final response while it is being
        delivered (a BYE) is compacted for the rest of the transaction's
        life (Timer J): its header fields packed, nothing lost; one left
        unanswered is not."""
        def answer(request: Request, tx: object) -> None:
            if request.method == "BYE":
                tx.respond(make_response(request, 200))  # type: ignore[attr-defined]

        self.user.on_request = answer
        bye = incoming("BYE")
        text = bye.to_bytes()
        self.receive(bye)
        self.assertIsInstance(bye.headers._fields, str)
        self.assertEqual(bye.to_bytes(), text)
        self.assertEqual(bye.cseq.method, "BYE")
        options = incoming("OPTIONS")
        self.receive(options)
        self.assertIsInstance(options.headers._fields, list)

    def test_cancel_gets_own_transaction(self) -> None:
        """A CANCEL does not match the INVITE: it gets a non-INVITE server
        transaction; L{TransactionLayer.find_cancelled} finds the INVITE, so
        the TU answers 200 to the CANCEL and 487 to the INVITE."""
        invite = incoming("INVITE")
        invite_tx = self.receive(invite)

        def on_cancel(request: Request, tx: object) -> None:
            if request.method != "CANCEL":
                return
            assert isinstance(tx, NonInviteServerTransaction)
            found = self.layer.find_cancelled(request)
            if found is None:
                tx.respond(make_response(request, 481))
                return
            tx.respond(make_response(request, 200, to_tag="srv1"))
            if found.state == InviteServerState.PROCEEDING:
                found.respond(make_response(found.request, 487, to_tag="srv1"))

        self.user.on_request = on_cancel
        cancel = incoming("CANCEL")
        cancel_tx = self.receive(cancel)
        self.assertIsInstance(cancel_tx, NonInviteServerTransaction)
        self.assertIsNot(cancel_tx, invite_tx)
        self.assertEqual(self.transport.response_codes(), [200, 487])
        self.assertEqual(self.transport.responses[1][1].cseq.method, "INVITE")
        self.assertIs(self.layer.find_cancelled(cancel), invite_tx)
        # a retransmitted CANCEL gets its 200 again
        self.receive(incoming("CANCEL"))
        self.assertEqual(self.transport.response_codes(), [200, 487, 200])
        self.receive(ack_for(invite))
        # a CANCEL for an unknown INVITE: 481
        self.receive(incoming("CANCEL", branch="z9hG4bKnone"))
        self.assertEqual(self.transport.response_codes(), [200, 487, 200, 481])
        self.wait(32)
        self.assertClean()

    def test_find_cancelled_misses(self) -> None:
        """No match for another sent-by, a non-INVITE, or a bad CANCEL."""
        invite_tx = self.receive(incoming("INVITE"))
        options_tx = self.receive(incoming("OPTIONS", branch="z9hG4bKopt"))
        self.assertIsNone(self.layer.find_cancelled(incoming("CANCEL", sent_by="127.0.0.9")))
        self.assertIsNone(self.layer.find_cancelled(incoming("CANCEL", branch="z9hG4bKopt")))
        broken = incoming("CANCEL")
        broken.headers.remove("Via")
        self.assertIsNone(self.layer.find_cancelled(broken))
        self.assertIs(self.layer.find_cancelled(incoming("CANCEL")), invite_tx)
        invite_tx.respond(make_response(invite_tx.request, 200, to_tag="a"))  # type: ignore[union-attr]
        options_tx.respond(make_response(options_tx.request, 200))  # type: ignore[union-attr]
        self.wait(32)
        self.assertIsNone(self.layer.find_cancelled(incoming("CANCEL")))
        self.assertClean()


class RFC2543MatchingTests(ServerTestCase):
    """Branches without the magic cookie fall back to RFC 2543 matching:
    Request-URI, To tag, From tag, Call-ID, CSeq and top Via (17.2.3)."""

    def test_retransmission(self) -> None:
        """The same request again is absorbed, with an old-style branch or
        with none."""
        for branch in ("1234abcd", None):
            request = incoming("OPTIONS", branch=branch)
            tx = self.receive(request)
            self.assertIsInstance(tx, NonInviteServerTransaction)
            tx.respond(make_response(request, 200, to_tag="s"))  # type: ignore[union-attr]
            self.assertIsNone(self.receive(incoming("OPTIONS", branch=branch)))
        self.assertEqual(self.transport.response_codes(), [200, 200, 200, 200])
        self.wait(32)
        self.assertClean()

    def test_differences_make_new_transactions(self) -> None:
        """Each of the matched fields tells transactions apart."""
        variants = [
            {}, {"cseq": 2}, {"from_tag": "other"}, {"call_id": "other@h"},
            {"uri": "sip:carol@127.0.0.1"}, {"to_tag": "t9"},
            {"sent_by": "127.0.0.3:5070"}, {"branch": "5678"}, {"method": "INFO"},
        ]
        txs = []
        for kw in variants:
            kw.setdefault("method", "OPTIONS")
            kw.setdefault("branch", "1234")
            tx = self.receive(incoming(**kw))  # type: ignore[arg-type]
            self.assertIsNotNone(tx, kw)
            txs.append(tx)
        self.assertEqual(self.layer.active_count(), len(variants))
        for tx in txs:
            tx.respond(make_response(tx.request, 200))
        self.wait(32)
        self.assertClean()

    def test_ack_by_to_tag(self) -> None:
        """An RFC 2543 ACK matches the INVITE when its To tag is the one of
        the final response; another tag makes it an ACK for the TU."""
        invite = incoming("INVITE", branch=None)
        tx = self.receive(invite)
        assert isinstance(tx, InviteServerTransaction)
        tx.respond(make_response(invite, 486, to_tag="srv1"))
        other = ack_for(invite, "wrong")
        self.receive(other)
        self.assertEqual(self.user.requests[-1], (other, None))
        self.assertEqual(tx.state, InviteServerState.COMPLETED)
        self.receive(ack_for(invite, "srv1"))
        self.assertEqual(tx.state, InviteServerState.CONFIRMED)
        self.assertEqual(len(self.user.requests), 2)
        self.wait(5)
        self.assertClean()
        self.assertEqual(self.layer._server_acks, {})

    def test_invite_retransmission_and_cancel(self) -> None:
        """An RFC 2543 INVITE retransmission gets the last provisional, and
        its CANCEL is found by the same fields."""
        invite = incoming("INVITE", branch="old1")
        tx = self.receive(invite)
        assert isinstance(tx, InviteServerTransaction)
        tx.respond(make_response(invite, 180, to_tag="srv1"))
        self.receive(incoming("INVITE", branch="old1"))
        self.assertEqual(self.transport.response_codes(), [180, 180])
        cancel = incoming("CANCEL", branch="old1")
        self.assertIs(self.layer.find_cancelled(cancel), tx)
        self.assertIsNone(self.layer.find_cancelled(incoming("CANCEL", branch="old1", cseq=5)))
        cancel_tx = self.receive(cancel)
        self.assertIsInstance(cancel_tx, NonInviteServerTransaction)
        cancel_tx.respond(make_response(cancel, 200, to_tag="srv1"))  # type: ignore[union-attr]
        tx.respond(make_response(invite, 487, to_tag="srv1"))
        self.receive(ack_for(invite, "srv1"))
        self.assertEqual(tx.state, InviteServerState.CONFIRMED)
        self.wait(32)
        self.assertClean()

    def test_2xx_ack_goes_to_tu(self) -> None:
        """In Accepted an RFC 2543 ACK that matches goes to the TU."""
        invite = incoming("INVITE", branch=None)
        tx = self.receive(invite)
        tx.respond(make_response(invite, 200, to_tag="srv1"))  # type: ignore[union-attr]
        ack = ack_for(invite, "srv1")
        self.receive(ack)
        self.assertEqual(self.user.requests[-1], (ack, None))
        self.wait(32)
        self.assertClean()


class BadInputTests(ServerTestCase):
    """Malformed requests get a stateless 400; nothing reaches the TU."""

    def check_400(self, request: Request, reason: str) -> None:
        """C{request} is answered 400 with C{reason} and not passed up."""
        self.receive(request)
        self.assertEqual(self.user.requests, [])
        [(_, response, source)] = self.transport.responses
        self.assertEqual((response.code, response.reason), (400, reason))
        self.assertEqual(source, UDP_CLIENT)
        self.assertEqual(self.layer.malformed_messages, 1)
        self.assertClean()

    def test_missing_call_id(self) -> None:
        """A request without Call-ID."""
        request = incoming("OPTIONS")
        request.headers.remove("Call-ID")
        self.check_400(request, "missing Call-ID header")

    def test_missing_via(self) -> None:
        """A request without Via."""
        request = incoming("OPTIONS")
        request.headers.remove("Via")
        self.check_400(request, "missing Via header")

    def test_bad_cseq(self) -> None:
        """A request with a bad CSeq."""
        request = incoming("OPTIONS")
        request.headers.set("CSeq", "x OPTIONS")
        self.check_400(request, "bad CSeq 'x OPTIONS'")

    def test_cseq_method_mismatch(self) -> None:
        """A request whose CSeq method is not its method."""
        self.check_400(incoming("OPTIONS", cseq_method="INFO"),
                       "CSeq method does not match the request method")

    def test_bad_ack_dropped(self) -> None:
        """A malformed ACK is dropped without an answer."""
        request = incoming("ACK")
        request.headers.remove("From")
        self.receive(request)
        self.assertEqual((self.user.requests, self.transport.responses), ([], []))
        self.assertEqual(self.layer.malformed_messages, 1)

    def test_400_send_failure_logged(self) -> None:
        """A 400 that cannot be sent is only logged."""
        self.transport.result = TransportError("gone")
        request = incoming("OPTIONS")
        request.headers.remove("To")
        self.receive(request)
        self.assertEqual(self.transport.response_codes(), [400])
        self.assertClean()

    def test_malformed_response(self) -> None:
        """A response with a bad CSeq is dropped and counted."""
        response = reply(incoming("OPTIONS"), 200)
        response.headers.set("CSeq", "1")
        self.layer.message_received(response, UDP_CLIENT)
        self.assertEqual(self.layer.malformed_messages, 1)
        self.assertEqual(self.user.responses, [])


class ResponseMatchingTests(SynchronousTestCase):
    """Responses are matched by top Via branch and CSeq method (17.1.3)."""

    def setUp(self) -> None:
        """A layer with a recording transport."""
        self.clock = Clock()
        self.transport = RecordingTransport(self.clock)
        self.user = RecordingUser()
        self.owner = RecordingOwner()
        self.layer = TransactionLayer(self.clock, self.transport, self.user,
                                      random=counting_random())

    def test_strays(self) -> None:
        """Unknown responses are dropped and counted, except a 2xx to
        INVITE, which goes to the TU (a retransmitted 2xx, RFC 6026)."""
        request = outgoing("INVITE")
        request.headers.add_first("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKgone")
        ok = reply(request, 200)
        self.layer.message_received(ok, UDP_CLIENT)
        self.assertEqual(self.user.responses, [(ok, UDP_CLIENT)])
        self.layer.message_received(reply(request, 180), UDP_CLIENT)
        bye = outgoing("BYE", cseq=2)
        bye.headers.add_first("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKgone")
        self.layer.message_received(reply(bye, 200), UDP_CLIENT)
        no_via = reply(bye, 200)
        no_via.headers.remove("Via")
        self.layer.message_received(no_via, UDP_CLIENT)
        self.assertEqual(self.layer.stray_responses, 3)
        self.assertEqual(len(self.user.responses), 1)

    def test_method_tells_apart(self) -> None:
        """An INVITE and its CANCEL share a branch; the CSeq method routes
        each response to its own transaction."""
        tx = self.layer.send_request(outgoing("INVITE"), UDP_TARGET, self.owner)
        self.layer.message_received(reply(tx.request, 180), UDP_CLIENT)
        cancel_tx = tx.cancel()
        assert cancel_tx is not None
        self.assertEqual(self.layer.active_count(), 2)
        self.assertEqual(set(self.layer.client_transactions()), {tx, cancel_tx})
        self.layer.message_received(reply(cancel_tx.request, 200), UDP_CLIENT)
        self.layer.message_received(reply(tx.request, 487), UDP_CLIENT)
        self.assertEqual([(r.code, t) for r, t in self.owner.responses],
                         [(180, tx), (200, cancel_tx), (487, tx)])
        wait(self.clock, 32)
        self.assertEqual(self.layer.active_count(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_send_ack(self) -> None:
        """L{TransactionLayer.send_ack} adds a Via with a new branch once and
        re-sends the same ACK unchanged."""
        ack = outgoing("ACK")
        d = self.layer.send_ack(ack, UDP_TARGET)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(ack.headers.get_all("Via"),
                         ["SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK000000000000000000000001;rport"])
        self.layer.send_ack(ack, UDP_TARGET)
        self.assertEqual(len(ack.headers.get_all("Via")), 1)
        self.assertEqual(len(self.transport.requests), 2)
        self.assertEqual(self.layer.active_count(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class Network:
    """An in-memory network of layers: each send is serialized, parsed and
    delivered to the layer at the target address after C{latency} seconds,
    unless C{lose} says to drop it."""

    def __init__(self, clock: Clock, latency: float = 0.01) -> None:
        self.clock = clock
        self.latency = latency
        self.layers: dict[tuple[str, int], TransactionLayer] = {}
        self.lost: list[bytes] = []
        self.to_lose: list[str] = []

    def deliver(self, data: bytes, sender: tuple[str, int], to: tuple[str, int]) -> None:
        """Carry C{data} to the layer at C{to} (or lose it)."""
        first_line = data.split(b"\r\n", 1)[0].decode()
        for prefix in self.to_lose:
            if first_line.startswith(prefix):
                self.to_lose.remove(prefix)
                self.lost.append(data)
                return
        source = Source("UDP", sender, to)
        self.clock.callLater(self.latency, lambda: self.layers[to].message_received(
            parse_message(data), source))


class NetworkTransport:
    """A L{Transport} attached to a L{Network} at one address."""

    def __init__(self, network: Network, address: tuple[str, int]) -> None:
        self.network = network
        self.address = address

    def send_request(self, request: Request, target: Target) -> Deferred[None]:
        """Send over the fake network."""
        self.network.deliver(request.to_bytes(), self.address, (target.host, target.port))
        return succeed(None)

    def send_response(self, response: Response, source: Source) -> Deferred[None]:
        """Send back to where the request came from."""
        self.network.deliver(response.to_bytes(), self.address, source.remote)
        return succeed(None)

    def local_address(self, transport: str) -> tuple[str, int]:
        """Our only listener."""
        return self.address


class EndToEndTests(SynchronousTestCase):
    """A client layer and a server layer talking through L{Network}."""

    ALICE = ("127.0.0.1", 5060)
    BOB = ("127.0.0.2", 5070)

    def setUp(self) -> None:
        """Two layers; Bob's TU answers as C{self.answer} says."""
        self.clock = Clock()
        self.network = Network(self.clock)
        self.alice_user = RecordingUser()
        self.bob_user = RecordingUser()
        self.alice = TransactionLayer(self.clock, NetworkTransport(self.network, self.ALICE),
                                      self.alice_user)
        self.bob = TransactionLayer(self.clock, NetworkTransport(self.network, self.BOB),
                                    self.bob_user)
        self.network.layers = {self.ALICE: self.alice, self.BOB: self.bob}
        self.owner = RecordingOwner()
        self.target = Target("UDP", *self.BOB)

    def assertClean(self) -> None:
        """Both layers are empty and nothing is left on the clock."""
        self.assertEqual((self.alice.active_count(), self.bob.active_count()), (0, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_invite_200_ack(self) -> None:
        """INVITE, 180, 200 (retransmitted by Bob's TU until the ACK), ACK
        sent by Alice's TU."""
        retransmitters: list[TwoXXRetransmitter] = []

        def bob_answers(request: Request, tx: object) -> None:
            if request.method == "ACK":
                retransmitters[0].ack_received()
                return
            assert isinstance(tx, InviteServerTransaction)
            tx.respond(make_response(request, 180, to_tag="bob1"))
            ok = make_response(request, 200, to_tag="bob1")
            tx.respond(ok)
            retransmitter = TwoXXRetransmitter(self.clock, lambda: tx.respond(ok))
            retransmitters.append(retransmitter)
            retransmitter.start()

        def alice_acks(response: Response, tx: object) -> None:
            if response.code == 200:
                assert isinstance(tx, InviteClientTransaction)
                ack = Request("ACK", "sip:bob@127.0.0.2:5070", [
                    ("Max-Forwards", "70"),
                    ("From", tx.request.headers.get("From")),
                    ("To", response.headers.get("To")),
                    ("Call-ID", tx.request.call_id),
                    ("CSeq", f"{tx.request.cseq.number} ACK"),
                ])
                self.alice.send_ack(ack, self.target)

        self.bob_user.on_request = bob_answers
        self.owner.on_response = alice_acks
        # the first 200 is lost: Bob's TU retransmits it, Alice ACKs the copy
        self.network.to_lose = ["SIP/2.0 200"]
        tx = self.alice.send_request(outgoing("INVITE"), self.target, self.owner)
        wait(self.clock, 1)
        self.assertEqual(self.owner.codes(), [180, 200])
        self.assertEqual(tx.state, InviteClientState.ACCEPTED)
        self.assertEqual([r.method for r, _ in self.bob_user.requests], ["INVITE", "ACK"])
        self.assertEqual(len(self.network.lost), 1)
        wait(self.clock, 40)
        self.assertFalse(retransmitters[0].timed_out)
        self.assertClean()

    def test_lost_invite_then_busy(self) -> None:
        """The first two INVITEs are lost; the third arrives at 1.5 s; Bob
        says 486; Alice's transaction ACKs it; both sides end cleanly."""
        def bob_busy(request: Request, tx: object) -> None:
            tx.respond(make_response(request, 486, to_tag="bob1"))  # type: ignore[attr-defined]

        self.bob_user.on_request = bob_busy
        self.network.to_lose = ["INVITE", "INVITE"]
        tx = self.alice.send_request(outgoing("INVITE"), self.target, self.owner)
        wait(self.clock, 2)
        self.assertEqual(self.owner.codes(), [486])
        self.assertEqual(tx.state, InviteClientState.COMPLETED)
        [(_, bob_tx)] = self.bob_user.requests
        assert isinstance(bob_tx, InviteServerTransaction)
        self.assertEqual(bob_tx.state, InviteServerState.CONFIRMED)
        wait(self.clock, 40)
        self.assertClean()

    def test_cancel(self) -> None:
        """Alice cancels a ringing call: Bob's TU finds the INVITE, answers
        200 to the CANCEL and 487 to the INVITE; Alice's transaction ACKs
        the 487."""
        def bob_rings(request: Request, tx: object) -> None:
            if request.method == "INVITE":
                tx.respond(make_response(request, 180, to_tag="bob1"))  # type: ignore[attr-defined]
            elif request.method == "CANCEL":
                found = self.bob.find_cancelled(request)
                assert found is not None
                tx.respond(make_response(request, 200, to_tag="bob1"))  # type: ignore[attr-defined]
                found.respond(make_response(found.request, 487, to_tag="bob1"))

        self.bob_user.on_request = bob_rings
        tx = self.alice.send_request(outgoing("INVITE"), self.target, self.owner)
        self.assertIsNone(tx.cancel())
        wait(self.clock, 1)
        self.assertEqual([(r.code, r.cseq.method) for r, _ in self.owner.responses],
                         [(180, "INVITE"), (200, "CANCEL"), (487, "INVITE")])
        self.assertEqual([r.method for r, _ in self.bob_user.requests], ["INVITE", "CANCEL"])
        bob_invite = self.bob_user.requests[0][1]
        assert isinstance(bob_invite, InviteServerTransaction)
        self.assertEqual(bob_invite.state, InviteServerState.CONFIRMED)
        wait(self.clock, 40)
        self.assertClean()

    def test_options_lost_response(self) -> None:
        """A lost 200 to OPTIONS: Alice retransmits, Bob's transaction
        re-sends the 200 without asking its TU, Alice's owner hears it once."""
        self.bob_user.on_request = lambda r, tx: tx.respond(  # type: ignore[attr-defined]
            make_response(r, 200, to_tag="bob1"))
        self.network.to_lose = ["SIP/2.0 200"]
        tx = self.alice.send_request(outgoing("OPTIONS"), self.target, self.owner)
        wait(self.clock, 1)
        self.assertEqual(self.owner.codes(), [200])
        self.assertEqual(len(self.bob_user.requests), 1)
        self.assertEqual(tx.state, "Completed")
        server_tx = self.bob_user.requests[0][1]
        assert isinstance(server_tx, NonInviteServerTransaction)
        self.assertEqual(server_tx.state, NonInviteServerState.COMPLETED)
        wait(self.clock, 40)
        self.assertClean()


class DiagramTests(SynchronousTestCase):
    """Each machine has a diagram under docs/state-machines/, kept in step."""

    def test_diagrams_current(self) -> None:
        """Each .dot file is what the machine's table produces (regenerate
        with C{Machine.dot()} when a table changes)."""
        for name, machine in MACHINES.items():
            self.assertEqual((DIAGRAMS / name).read_text(), machine.dot(), name)

    def test_table_check(self) -> None:
        """A table naming an unknown event is refused when the class is made."""
        with self.assertRaises(TypeError):
            class Broken(NonInviteServerTransaction):
                S = NonInviteServerState
                table = {(S.TRYING, "no_such_event"): (S.TRYING, None)}
