"""Tests for L{b2bua.sip.transport}, L{b2bua.sip.transport_stream} and
L{b2bua.sip.transport_rules}: listeners, UDP, response routing, sending
requests, TCP connections (over C{StringTransport} and
C{MemoryReactorClock}), limits, and loopback exchanges over real sockets.
"""

from __future__ import annotations

import socket
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from b2bua.sip.errors import TransportError
from b2bua.sip.framing import StreamFramer
from b2bua.sip.interfaces import Source, Target
from b2bua.sip.message import Request, Response, make_response, parse_message
from b2bua.sip.transport import ListenerError, TransportLayer, parse_listener
from b2bua.sip.transport_rules import response_address, salvage_request, stamp_via
from b2bua.sip.transport_stream import StreamConnection


def request_bytes(
    via: str = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1;rport",
    method: str = "OPTIONS",
    cseq_method: str | None = None,
    extra: str = "",
    body: bytes = b"",
) -> bytes:
    """A well-formed request with the given top Via (C{extra}: more header lines)."""
    head = (
        f"{method} sip:bob@198.51.100.1 SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
        "To: Bob <sip:bob@example.com>\r\n"
        "Call-ID: a84b4c76e66710@pc33\r\n"
        f"CSeq: 314159 {cseq_method or method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def make_request(via: str = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1;rport",
                 **kwargs: Any) -> Request:
    """A parsed L{request_bytes}."""
    message = parse_message(request_bytes(via, **kwargs))
    assert isinstance(message, Request)
    return message


class FakeUDPPort:
    """A listening UDP port that records what is written (like
    C{FakeDatagramTransport}, plus C{getHost})."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.stopped = False

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        """Record a datagram."""
        self.written.append((data, addr))

    def getHost(self) -> IPv4Address | IPv6Address:
        """The bound address."""
        if ":" in self.host:
            return IPv6Address("UDP", self.host, self.port)
        return IPv4Address("UDP", self.host, self.port)

    def stopListening(self) -> None:
        """Stop."""
        self.stopped = True


class FakeReactor(MemoryReactorClock):
    """C{MemoryReactorClock} with C{listenUDP}: the protocol gets a
    L{FakeUDPPort} as its transport, found in C{udp_ports}."""

    def __init__(self) -> None:
        super().__init__()
        self.udp_ports: dict[tuple[str, int], tuple[FakeUDPPort, Any]] = {}
        self._next_port = 40000

    def listenUDP(self, port: int, protocol: Any, interface: str = "",
                  maxPacketSize: int = 8192) -> FakeUDPPort:  # noqa: N803
        """Bind a fake UDP port (port 0 gets the next free fake port)."""
        if port == 0:
            self._next_port += 1
            port = self._next_port
        fake = FakeUDPPort(interface, port)
        self.udp_ports[(interface, port)] = (fake, protocol)
        protocol.makeConnection(fake)
        return fake


class RecordingUser:
    """A transport user that records what it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[Request | Response, Source]] = []

    def message_received(self, message: Request | Response, source: Source) -> None:
        """Record."""
        self.received.append((message, source))


def udp_layer(*listeners: str, **kwargs: Any) -> tuple[TransportLayer, FakeReactor,
                                                       RecordingUser]:
    """A layer on a L{FakeReactor} listening on C{listeners}."""
    reactor = FakeReactor()
    user = RecordingUser()
    layer = TransportLayer(reactor, user, **kwargs)
    for text in listeners or ("udp:203.0.113.5:5060",):
        layer.listen(text)
    return layer, reactor, user


def receive(reactor: FakeReactor, data: bytes, source: tuple[str, int],
            local: tuple[str, int] = ("203.0.113.5", 5060)) -> FakeUDPPort:
    """Deliver a datagram to the fake UDP listener at C{local}; return its port."""
    port, protocol = reactor.udp_ports[local]
    protocol.datagramReceived(data, source)
    return port


class ParseListenerTests(SynchronousTestCase):
    """Listener strings."""

    def test_udp_ipv4(self) -> None:
        """C{udp:HOST:PORT} gives the transport, host and port."""
        address = parse_listener("udp:127.0.0.1:5060")
        self.assertEqual((address.transport, address.host, address.port),
                         ("UDP", "127.0.0.1", 5060))

    def test_tcp_ipv6(self) -> None:
        """IPv6 hosts are bracketed in the string, bare in the result."""
        address = parse_listener("tcp:[::1]:5070")
        self.assertEqual((address.transport, address.host, address.port), ("TCP", "::1", 5070))

    def test_default_ports(self) -> None:
        """Without a port, 5060 (5061 for TLS)."""
        self.assertEqual(parse_listener("tcp:127.0.0.1").port, 5060)
        self.assertEqual(parse_listener("tls:127.0.0.1").port, 5061)
        self.assertEqual(parse_listener("udp:[::1]").port, 5060)

    def test_ephemeral_port(self) -> None:
        """Port 0 is allowed (any free port)."""
        self.assertEqual(parse_listener("udp:127.0.0.1:0").port, 0)

    def test_advertise(self) -> None:
        """A wildcard bind with C{;advertise=} is allowed."""
        address = parse_listener("udp:0.0.0.0:5060;advertise=sip.example.com:5080")
        self.assertEqual(address.advertise, ("sip.example.com", 5080))
        self.assertEqual(parse_listener("tcp:[::]:5060;advertise=[2001:db8::1]").advertise,
                         ("2001:db8::1", None))

    def test_errors_name_the_string(self) -> None:
        """Each malformed string raises ListenerError naming it and the problem."""
        cases = {
            "sctp:127.0.0.1:5060": "udp:, tcp: or tls:",
            "127.0.0.1:5060": "udp:, tcp: or tls:",
            "udp:sip.example.com:5060": "not an IP address",
            "udp:::1:5060": "brackets",
            "udp:[::1:5060": "unterminated",
            "udp:[::1]5060": "unexpected",
            "udp:127.0.0.1:70000": "bad port",
            "udp:127.0.0.1:http": "bad port",
            "udp:0.0.0.0:5060": "wildcard",
            "udp:127.0.0.1:5060;ttl=3": "unknown option",
            "udp:0.0.0.0:5060;advertise=[bad": "advertise",
        }
        for text, problem in cases.items():
            error = self.assertRaises(ListenerError, parse_listener, text)
            self.assertIn(repr(text), str(error))
            self.assertIn(problem, str(error))


class ListenTests(SynchronousTestCase):
    """Binding listeners and reporting their addresses."""

    def test_local_address(self) -> None:
        """local_address gives the first listener of a transport; the real
        port when 0 was asked for."""
        layer, _reactor, _user = udp_layer("udp:127.0.0.1:0", "tcp:[::1]:5070")
        self.assertEqual(layer.local_address("UDP"), ("127.0.0.1", 40001))
        self.assertEqual(layer.local_address("tcp"), ("::1", 5070))
        self.assertRaises(TransportError, layer.local_address, "TLS")

    def test_advertised_address(self) -> None:
        """An advertised address replaces the bound one in local_address."""
        layer, _reactor, _user = udp_layer("udp:0.0.0.0:5060;advertise=198.51.100.9")
        self.assertEqual(layer.local_address("UDP"), ("198.51.100.9", 5060))

    def test_udp_receive_buffer(self) -> None:
        """A UDP listener's socket gets a larger receive buffer (as far as
        the kernel allows); C{None} leaves the system default."""
        sockets: list[socket.socket] = []

        class SocketReactor(FakeReactor):
            """Fake UDP ports with a real (unbound) socket each."""

            def listenUDP(self, port: int, protocol: Any, interface: str = "",
                          maxPacketSize: int = 8192) -> FakeUDPPort:  # noqa: N803
                fake = super().listenUDP(port, protocol, interface, maxPacketSize)
                fake.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # type: ignore[attr-defined]
                sockets.append(fake.socket)  # type: ignore[attr-defined]
                self.addCleanup(fake.socket.close)  # type: ignore[attr-defined]
                return fake

        SocketReactor.addCleanup = self.addCleanup  # type: ignore[attr-defined]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            default = probe.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        wanted = max(4 * default, 1 << 20)
        TransportLayer(SocketReactor(), RecordingUser(),
                       udp_receive_buffer=wanted).listen("udp:127.0.0.1:0")
        TransportLayer(SocketReactor(), RecordingUser(),
                       udp_receive_buffer=None).listen("udp:127.0.0.1:0")
        grown, untouched = (s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) for s in sockets)
        self.assertGreater(grown, default)
        self.assertEqual(untouched, default)

    def test_tls_without_configuration(self) -> None:
        """A TLS listener needs TLS configuration."""
        layer = TransportLayer(FakeReactor(), RecordingUser())
        error = self.assertRaises(ListenerError, layer.listen, "tls:127.0.0.1:5061")
        self.assertIn("tls:127.0.0.1:5061", str(error))

    def test_duplicate_listener(self) -> None:
        """Two listeners with the same transport and address are refused."""
        layer, _reactor, _user = udp_layer("udp:127.0.0.1:5060")
        self.assertRaises(ListenerError, layer.listen, "udp:127.0.0.1:5060")

    def test_stop(self) -> None:
        """stop() stops every listener."""
        layer, reactor, _user = udp_layer("udp:127.0.0.1:5060")
        self.successResultOf(layer.stop())
        self.assertTrue(reactor.udp_ports[("127.0.0.1", 5060)][0].stopped)
        self.assertEqual(layer.listeners, [])


class UDPReceiveTests(SynchronousTestCase):
    """Inbound datagrams."""

    def test_received_and_rport(self) -> None:
        """A request from another address than its sent-by gets received=;
        an empty rport gets the source port; the user sees the Source."""
        _layer, reactor, user = udp_layer()
        receive(reactor, request_bytes(), ("198.51.100.7", 41000))
        [(message, source)] = user.received
        assert isinstance(message, Request)
        self.assertEqual(message.via[0].params["received"], "198.51.100.7")
        self.assertEqual(message.via[0].params["rport"], "41000")
        self.assertEqual(message.via[0].branch, "z9hG4bK-1")
        self.assertEqual(source, Source("UDP", ("198.51.100.7", 41000), ("203.0.113.5", 5060)))

    def test_no_received_when_sent_by_matches(self) -> None:
        """No rport and a sent-by equal to the source address: Via unchanged."""
        _layer, reactor, user = udp_layer()
        via = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-2"
        receive(reactor, request_bytes(via), ("192.0.2.10", 5060))
        self.assertEqual(user.received[0][0].headers.get("Via"), via)

    def test_received_with_rport_even_when_matching(self) -> None:
        """With rport, received is added even when sent-by is the source
        (RFC 3581 section 4)."""
        _layer, reactor, user = udp_layer()
        receive(reactor, request_bytes(), ("192.0.2.10", 5060))
        params = user.received[0][0].via[0].params
        self.assertEqual((params["received"], params["rport"]), ("192.0.2.10", "5060"))

    def test_hostname_sent_by(self) -> None:
        """A host name in sent-by always differs from the source address."""
        _layer, reactor, user = udp_layer()
        receive(reactor, request_bytes("SIP/2.0/UDP pc33.example.com;branch=z9hG4bK-3"),
                ("192.0.2.10", 5060))
        self.assertEqual(user.received[0][0].via[0].params["received"], "192.0.2.10")

    def test_ipv6_source(self) -> None:
        """IPv6: received has no brackets, the Source host neither, the
        sent-by keeps its brackets."""
        _layer, reactor, user = udp_layer("udp:[2001:db8::5]:5060")
        via = "SIP/2.0/UDP [2001:db8::10]:5060;branch=z9hG4bK-4;rport"
        receive(reactor, request_bytes(via), ("2001:db8::99", 5062, 0, 0),
                local=("2001:db8::5", 5060))
        message, source = user.received[0]
        self.assertEqual(
            message.headers.get("Via"),
            "SIP/2.0/UDP [2001:db8::10]:5060;branch=z9hG4bK-4;rport=5062;received=2001:db8::99",
        )
        self.assertEqual(source.remote, ("2001:db8::99", 5062))
        self.assertEqual(source.local, ("2001:db8::5", 5060))

    def test_response_passed_up(self) -> None:
        """A response is delivered without Via changes."""
        _layer, reactor, user = udp_layer()
        response = make_response(make_request(), 200).to_bytes()
        receive(reactor, response, ("192.0.2.10", 5060))
        [(message, _source)] = user.received
        assert isinstance(message, Response)
        self.assertNotIn("received", message.via[0].params)

    def test_malformed_request_answered_400(self) -> None:
        """A request that does not parse but whose start line, Via, Call-ID
        and CSeq can be read is answered 400 with the parse error as reason
        phrase, routed by its Via (received/rport); the user sees nothing."""
        layer, reactor, user = udp_layer()
        data = request_bytes(extra="Bad header line\r\n")
        port = receive(reactor, data, ("198.51.100.7", 41000))
        self.assertEqual(user.received, [])
        [(out, addr)] = port.written
        self.assertEqual(addr, ("198.51.100.7", 41000))
        response = parse_message(out)
        assert isinstance(response, Response)
        self.assertEqual(response.code, 400)
        self.assertIn("header line without colon", response.reason)
        self.assertEqual(response.call_id, "a84b4c76e66710@pc33")
        self.assertEqual(response.via[0].params["received"], "198.51.100.7")
        self.assertEqual(layer.stats["bad_requests_answered"], 1)

    def test_bad_content_length_answered_400(self) -> None:
        """A datagram whose Content-Length exceeds its body gets a 400."""
        _layer, reactor, _user = udp_layer()
        data = request_bytes(body=b"abc").replace(b"Content-Length: 3", b"Content-Length: 30")
        port = receive(reactor, data, ("192.0.2.10", 5060))
        self.assertEqual(parse_message(port.written[0][0]).code, 400)  # type: ignore[union-attr]

    def test_failed_check_answered_400(self) -> None:
        """A request that parses but whose CSeq method differs from its
        method is answered 400 naming that."""
        _layer, reactor, user = udp_layer()
        port = receive(reactor, request_bytes(cseq_method="INVITE"), ("192.0.2.10", 5060))
        self.assertEqual(user.received, [])
        response = parse_message(port.written[0][0])
        assert isinstance(response, Response)
        self.assertEqual((response.code, response.reason),
                         (400, "CSeq method does not match the request method"))

    def test_bad_from_answered_400(self) -> None:
        """A request with a malformed From is answered 400."""
        _layer, reactor, _user = udp_layer()
        data = request_bytes().replace(b"From: Alice <sip:alice@example.com>",
                                       b"From: Alice <sip:alice@example.com")
        port = receive(reactor, data, ("192.0.2.10", 5060))
        self.assertEqual(parse_message(port.written[0][0]).code, 400)  # type: ignore[union-attr]

    def test_garbage_dropped(self) -> None:
        """Bytes that are no SIP, or requests without a readable Via, are
        dropped and counted, never answered, never raised."""
        layer, reactor, user = udp_layer()
        garbage = [
            b"\x00\x01\x00\x08\x21\x12\xa4\x42abcdefghijkl",
            b"hello world",
            bytes(range(256)),
            request_bytes(via="garbage"),
            request_bytes().replace(b"Call-ID: a84b4c76e66710@pc33\r\n", b""),
            b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n",
            b"INVITE sip:x SIP/2.0\r\n\r\n",
        ]
        for data in garbage:
            port = receive(reactor, data, ("192.0.2.10", 5060))
        self.assertEqual(port.written, [])
        self.assertEqual(user.received, [])
        self.assertEqual(layer.stats["messages_dropped"], len(garbage))

    def test_malformed_ack_not_answered(self) -> None:
        """No response is ever sent to an ACK, even a malformed one."""
        layer, reactor, _user = udp_layer()
        port = receive(reactor, request_bytes(method="ACK", extra="junk\r\n"),
                       ("192.0.2.10", 5060))
        self.assertEqual(port.written, [])
        self.assertEqual(layer.stats["messages_dropped"], 1)

    def test_stun_keepalive_answered(self) -> None:
        """A datagram that cannot be SIP (first byte below 4: STUN, RFC 5626
        4.4.2) goes to the responder, whose reply is sent back from the
        same listener; without a responder it is dropped as before."""
        layer, reactor, user = udp_layer()
        seen: list[tuple[bytes, tuple[str, int]]] = []

        def responder(data: bytes, source: tuple[str, int]) -> bytes | None:
            seen.append((data, source))
            return b"\x01\x01reply"

        layer.datagram_responder = responder
        port = receive(reactor, b"\x00\x01\x00\x00binding", ("192.0.2.10", 5060))
        self.assertEqual(seen, [(b"\x00\x01\x00\x00binding", ("192.0.2.10", 5060))])
        self.assertEqual(port.written, [(b"\x01\x01reply", ("192.0.2.10", 5060))])
        self.assertEqual((user.received, layer.stats["keepalives_received"]), ([], 1))
        layer.datagram_responder = lambda data, source: None
        receive(reactor, b"\x00\x01junk", ("192.0.2.10", 5060))
        self.assertEqual(len(port.written), 1)

    def test_keepalive_datagram_ignored(self) -> None:
        """A datagram of CRLFs (a keep-alive) is ignored quietly."""
        layer, reactor, user = udp_layer()
        port = receive(reactor, b"\r\n\r\n", ("192.0.2.10", 5060))
        self.assertEqual((port.written, user.received), ([], []))
        self.assertEqual(layer.stats["keepalives_received"], 1)
        self.assertEqual(layer.stats["messages_dropped"], 0)

    def test_user_failure_contained(self) -> None:
        """An exception in the user is logged and counted, not raised."""
        layer, reactor, _user = udp_layer()

        class Failing:
            def message_received(self, message: object, source: object) -> None:
                raise RuntimeError("boom")

        layer.user = Failing()
        receive(reactor, request_bytes(), ("192.0.2.10", 5060))
        self.assertEqual(layer.stats["user_errors"], 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_no_user(self) -> None:
        """Without a user, messages are dropped and counted."""
        layer, reactor, _user = udp_layer()
        layer.user = None
        receive(reactor, request_bytes(), ("192.0.2.10", 5060))
        self.assertEqual(layer.stats["messages_dropped"], 1)


class FuzzTests(SynchronousTestCase):
    """Whatever arrives, the layer neither raises nor loses count."""

    @settings(max_examples=300, deadline=None)
    @given(data=st.one_of(
        st.binary(max_size=300),
        st.tuples(st.integers(min_value=0, max_value=400), st.binary(max_size=20)).map(
            lambda cut: request_bytes()[: cut[0]] + cut[1] + request_bytes()[cut[0] :]),
    ))
    def test_datagrams(self, data: bytes) -> None:
        """Every datagram is delivered, answered or dropped, exactly once."""
        layer, reactor, user = udp_layer()
        receive(reactor, data, ("192.0.2.10", 5060))
        stats = layer.stats
        outcomes = (len(user.received) + stats["bad_requests_answered"]
                    + stats["messages_dropped"] + stats["keepalives_received"])
        self.assertEqual(outcomes, 1)
        self.assertEqual(stats["internal_errors"] + stats["user_errors"], 0)

    @settings(max_examples=200, deadline=None)
    @given(chunks=st.lists(st.one_of(
        st.binary(max_size=80), st.just(request_bytes("SIP/2.0/TCP a;branch=z9hG4bK-f")),
        st.just(b"\r\n"),
    ), max_size=8))
    def test_stream(self, chunks: list[bytes]) -> None:
        """Any byte sequence on a connection is handled without exceptions."""
        layer, reactor, _user = tcp_layer()
        protocol, _transport = accept(reactor)
        for chunk in chunks:
            protocol.dataReceived(chunk)
        self.assertEqual(layer.stats["internal_errors"] + layer.stats["user_errors"], 0)


class UDPResponseRoutingTests(SynchronousTestCase):
    """RFC 3261 18.2.2 and RFC 3581 for UDP responses."""

    def respond(self, via: str, source: Source | None = None,
                listeners: tuple[str, ...] = ()) -> tuple[FakeReactor, Any]:
        """Send a 200 to a request with top Via C{via}; return the reactor
        and the result of send_response."""
        layer, reactor, _user = udp_layer(*listeners)
        source = source or Source("UDP", ("192.0.2.10", 5060), ("203.0.113.5", 5060))
        result = layer.send_response(make_response(make_request(via), 200), source)
        return reactor, result

    def written(self, reactor: FakeReactor,
                local: tuple[str, int] = ("203.0.113.5", 5060)) -> list[tuple[str, int]]:
        """Addresses written to from the listener at C{local}."""
        return [addr for _data, addr in reactor.udp_ports[local][0].written]

    def test_maddr(self) -> None:
        """maddr wins, with the sent-by port."""
        reactor, d = self.respond("SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-1;"
                                  "maddr=239.255.255.1;received=192.0.2.99;rport=7000")
        self.successResultOf(d)
        self.assertEqual(self.written(reactor), [("239.255.255.1", 5070)])

    def test_maddr_default_port(self) -> None:
        """maddr without a sent-by port uses 5060."""
        reactor, _d = self.respond("SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-1;maddr=192.0.2.50")
        self.assertEqual(self.written(reactor), [("192.0.2.50", 5060)])

    def test_received_and_rport(self) -> None:
        """received with an rport value: received:rport (RFC 3581)."""
        reactor, _d = self.respond("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;"
                                   "rport=41000;received=198.51.100.7")
        self.assertEqual(self.written(reactor), [("198.51.100.7", 41000)])

    def test_received_without_rport(self) -> None:
        """received without rport: received and the sent-by port."""
        reactor, _d = self.respond("SIP/2.0/UDP 10.0.0.1:5080;branch=z9hG4bK-1;"
                                   "received=198.51.100.7")
        self.assertEqual(self.written(reactor), [("198.51.100.7", 5080)])

    def test_received_default_port(self) -> None:
        """received and a sent-by without port: port 5060."""
        reactor, _d = self.respond("SIP/2.0/UDP pc33.example.com;branch=z9hG4bK-1;"
                                   "received=198.51.100.7")
        self.assertEqual(self.written(reactor), [("198.51.100.7", 5060)])

    def test_sent_by(self) -> None:
        """No received: the sent-by host and port."""
        reactor, _d = self.respond("SIP/2.0/UDP 192.0.2.10:5090;branch=z9hG4bK-1")
        self.assertEqual(self.written(reactor), [("192.0.2.10", 5090)])

    def test_ipv6_received(self) -> None:
        """An IPv6 received (bare) and rport route an IPv6 response."""
        source = Source("UDP", ("2001:db8::99", 5062), ("2001:db8::5", 5060))
        reactor, _d = self.respond(
            "SIP/2.0/UDP [2001:db8::10]:5060;branch=z9hG4bK-1;rport=5062;received=2001:db8::99",
            source, ("udp:[2001:db8::5]:5060",),
        )
        self.assertEqual(self.written(reactor, ("2001:db8::5", 5060)), [("2001:db8::99", 5062)])

    def test_same_socket(self) -> None:
        """The response leaves from the listener the request came in on."""
        listeners = ("udp:203.0.113.5:5060", "udp:203.0.113.6:5060")
        source = Source("UDP", ("192.0.2.10", 5060), ("203.0.113.6", 5060))
        reactor, _d = self.respond("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1",
                                   source, listeners)
        self.assertEqual(self.written(reactor, ("203.0.113.5", 5060)), [])
        self.assertEqual(self.written(reactor, ("203.0.113.6", 5060)), [("192.0.2.10", 5060)])

    def test_host_name_without_received(self) -> None:
        """A host name in sent-by with no received cannot be sent to."""
        _reactor, d = self.respond("SIP/2.0/UDP pc33.example.com;branch=z9hG4bK-1")
        self.failureResultOf(d, TransportError)

    def test_no_via(self) -> None:
        """A response without Via fails with TransportError."""
        layer, _reactor, _user = udp_layer()
        source = Source("UDP", ("192.0.2.10", 5060), ("203.0.113.5", 5060))
        self.failureResultOf(layer.send_response(Response(200), source), TransportError)

    def test_write_error(self) -> None:
        """A socket error while writing fails with TransportError."""
        layer, reactor, _user = udp_layer()

        def refuse(data: bytes, addr: object) -> None:
            raise OSError("Network is unreachable")

        reactor.udp_ports[("203.0.113.5", 5060)][0].write = refuse  # type: ignore[method-assign]
        source = Source("UDP", ("192.0.2.10", 5060), ("203.0.113.5", 5060))
        d = layer.send_response(make_response(make_request(), 200), source)
        self.assertIn("unreachable", str(self.failureResultOf(d, TransportError).value))
        self.assertEqual(layer.stats["send_errors"], 1)


class ResponseAddressTests(SynchronousTestCase):
    """L{response_address} for stream transports (no connection left)."""

    def test_reliable_uses_received_and_sent_by_port(self) -> None:
        """Streams: received with the sent-by port; rport (an ephemeral
        source port) is not used; maddr neither."""
        via = make_request("SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bK-1;rport=40000;"
                           "received=198.51.100.7;maddr=192.0.2.1").via[0]
        self.assertEqual(response_address(via, "TCP"), ("198.51.100.7", 5070))

    def test_tls_default_port(self) -> None:
        """TLS without a sent-by port defaults to 5061."""
        via = make_request("SIP/2.0/TLS 192.0.2.10;branch=z9hG4bK-1").via[0]
        self.assertEqual(response_address(via, "TLS"), ("192.0.2.10", 5061))


class SendRequestUDPTests(SynchronousTestCase):
    """send_request over UDP, and the RFC 3261 18.1.1 switch to TCP."""

    def test_via_rewritten(self) -> None:
        """The top Via gets our transport and sent-by; branch and rport stay;
        lower Vias are untouched."""
        layer, reactor, _user = udp_layer()
        request = make_request("SIP/2.0/TCP placeholder;branch=z9hG4bK-77;rport",
                               extra="Via: SIP/2.0/UDP 192.0.2.200;branch=z9hG4bK-lower\r\n")
        self.successResultOf(layer.send_request(request, Target("UDP", "192.0.2.10", 5060)))
        [(data, addr)] = reactor.udp_ports[("203.0.113.5", 5060)][0].written
        self.assertEqual(addr, ("192.0.2.10", 5060))
        sent = parse_message(data)
        self.assertEqual(sent.headers.get_all("Via"), [
            "SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-77;rport",
            "SIP/2.0/UDP 192.0.2.200;branch=z9hG4bK-lower",
        ])

    def test_no_via(self) -> None:
        """A request without Via is refused: the transaction layer adds it."""
        layer, _reactor, _user = udp_layer()
        request = make_request()
        request.headers.remove("Via")
        d = layer.send_request(request, Target("UDP", "192.0.2.10", 5060))
        self.assertIn("no Via", str(self.failureResultOf(d, TransportError).value))

    def test_host_name_target(self) -> None:
        """Targets are addresses; a host name fails with TransportError."""
        layer, _reactor, _user = udp_layer()
        d = layer.send_request(make_request(), Target("UDP", "example.com", 5060))
        self.failureResultOf(d, TransportError)

    def test_no_listener_for_family(self) -> None:
        """No IPv6 listener: sending to an IPv6 address fails."""
        layer, _reactor, _user = udp_layer()
        d = layer.send_request(make_request(), Target("UDP", "2001:db8::1", 5060))
        self.assertIn("IPv6", str(self.failureResultOf(d, TransportError).value))

    def test_ipv6_target(self) -> None:
        """To an IPv6 target: the IPv6 listener is used, its sent-by bracketed."""
        layer, reactor, _user = udp_layer("udp:203.0.113.5:5060", "udp:[2001:db8::5]:5060")
        request = make_request()
        self.successResultOf(layer.send_request(request, Target("UDP", "2001:db8::1", 5062)))
        [(data, addr)] = reactor.udp_ports[("2001:db8::5", 5060)][0].written
        self.assertEqual(addr, ("2001:db8::1", 5062))
        self.assertTrue(parse_message(data).headers.get("Via", "").startswith(
            "SIP/2.0/UDP [2001:db8::5]:5060;"))

    def test_large_request_switches_to_tcp(self) -> None:
        """A UDP request over 1300 bytes goes over TCP when a TCP listener
        exists, and its Via says TCP."""
        layer, reactor, _user = udp_layer("udp:203.0.113.5:5060", "tcp:203.0.113.5:5060")
        request = make_request(body=b"v=0\r\n" + b"a=x\r\n" * 300)
        d = layer.send_request(request, Target("UDP", "192.0.2.10", 5060))
        self.assertNoResult(d)
        self.assertEqual(reactor.udp_ports[("203.0.113.5", 5060)][0].written, [])
        [(host, port, *_rest)] = reactor.tcpClients
        self.assertEqual((host, port), ("192.0.2.10", 5060))
        self.assertTrue(request.headers.get("Via", "").startswith("SIP/2.0/TCP 203.0.113.5"))
        self.assertEqual(layer.stats["udp_to_tcp"], 1)

    def test_large_request_falls_back_to_udp(self) -> None:
        """When that TCP connection cannot be opened, the request goes over
        UDP after all, with a UDP Via."""
        layer, reactor, _user = udp_layer("udp:203.0.113.5:5060", "tcp:203.0.113.5:5060")
        request = make_request(body=b"x" * 2000)
        d = layer.send_request(request, Target("UDP", "192.0.2.10", 5060))
        factory = reactor.tcpClients[0][2]
        factory.clientConnectionFailed(reactor.connectors[0], Failure(ConnectionRefusedError()))
        self.successResultOf(d)
        [(data, _addr)] = reactor.udp_ports[("203.0.113.5", 5060)][0].written
        self.assertTrue(parse_message(data).headers.get("Via", "").startswith("SIP/2.0/UDP "))

    def test_refused_tcp_remembered(self) -> None:
        """After TCP was refused, large requests to that peer go straight
        over UDP for a while (on the injected clock), then TCP is tried again."""
        layer, reactor, _user = udp_layer("udp:203.0.113.5:5060", "tcp:203.0.113.5:5060")
        target = Target("UDP", "192.0.2.10", 5060)
        d = layer.send_request(make_request(body=b"x" * 2000), target)
        reactor.tcpClients[0][2].clientConnectionFailed(reactor.connectors[0],
                                                        Failure(ConnectionRefusedError()))
        self.successResultOf(d)
        self.successResultOf(layer.send_request(make_request(body=b"x" * 2000), target))
        self.assertEqual(len(reactor.tcpClients), 1)
        self.assertEqual(len(reactor.udp_ports[("203.0.113.5", 5060)][0].written), 2)
        reactor.advance(301)
        layer.send_request(make_request(body=b"x" * 2000), target)
        self.assertEqual(len(reactor.tcpClients), 2)

    def test_large_request_without_tcp_listener(self) -> None:
        """Without a TCP listener a large request stays on UDP."""
        layer, reactor, _user = udp_layer()
        request = make_request(body=b"x" * 2000)
        self.successResultOf(layer.send_request(request, Target("UDP", "192.0.2.10", 5060)))
        self.assertEqual(len(reactor.udp_ports[("203.0.113.5", 5060)][0].written), 1)

    def test_size_limit_disabled(self) -> None:
        """udp_size_limit=None never switches."""
        layer, reactor, _user = udp_layer("udp:203.0.113.5:5060", "tcp:203.0.113.5:5060",
                                          udp_size_limit=None)
        request = make_request(body=b"x" * 2000)
        self.successResultOf(layer.send_request(request, Target("UDP", "192.0.2.10", 5060)))
        self.assertEqual(reactor.tcpClients, [])


class RulesTests(SynchronousTestCase):
    """Sans-IO helpers of L{b2bua.sip.transport_rules}."""

    def test_salvage_keeps_needed_headers(self) -> None:
        """salvage_request keeps the request line, Via, From, To, Call-ID, CSeq."""
        request = salvage_request(request_bytes(extra="Bad header\r\nX-Other: 1\r\n"))
        assert request is not None
        self.assertEqual(request.method, "OPTIONS")
        self.assertEqual([name for name, _value in request.headers],
                         ["Via", "From", "To", "Call-ID", "CSeq"])

    def test_salvage_refuses_responses(self) -> None:
        """A response is never salvaged (nothing answers a response)."""
        self.assertIsNone(salvage_request(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a\r\n\r\n"))

    def test_stamp_via_replaces_forged_rport(self) -> None:
        """An rport value set by the sender is replaced by the source port."""
        request = make_request("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1;rport=9")
        stamp_via(request, ("192.0.2.10", 5060))
        self.assertEqual(request.via[0].params["rport"], "5060")


LOCAL = ("203.0.113.5", 5060)


def tcp_layer(*listeners: str, **kwargs: Any) -> tuple[TransportLayer, FakeReactor,
                                                       RecordingUser]:
    """A layer on a L{FakeReactor} with UDP and TCP listeners."""
    reactor = FakeReactor()
    user = RecordingUser()
    layer = TransportLayer(reactor, user, **kwargs)
    for text in listeners or ("udp:203.0.113.5:5060", "tcp:203.0.113.5:5060"):
        layer.listen(text)
    return layer, reactor, user


def accept(reactor: FakeReactor, host: str = "198.51.100.7", port: int = 41000,
           index: int = 0) -> tuple[StreamConnection, StringTransport]:
    """An inbound connection from (host, port) to the TCP listener C{index}."""
    factory = reactor.tcpServers[index][1]
    address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def connect(reactor: FakeReactor, index: int = 0,
            clients: str = "tcpClients") -> tuple[StreamConnection, StringTransport]:
    """Complete the outbound connection attempt C{index}."""
    attempt = getattr(reactor, clients)[index]
    host, port, factory = attempt[0], attempt[1], attempt[2]
    address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def messages(transport: StringTransport) -> list[Request | Response]:
    """Parse what was written on a StringTransport (messages back to back)."""
    return [parse_message(e) for e in StreamFramer().feed(transport.value())
            if isinstance(e, bytes)]


class InboundTests(SynchronousTestCase):
    """Messages arriving over TCP."""

    def test_request_delivered(self) -> None:
        """A framed request is delivered with a TCP Source naming its
        connection; received/rport are added."""
        layer, reactor, user = tcp_layer()
        protocol, _transport = accept(reactor)
        protocol.dataReceived(request_bytes("SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK-1;rport"))
        [(message, source)] = user.received
        self.assertEqual(source, Source("TCP", ("198.51.100.7", 41000), LOCAL,
                                        protocol.connection_id))
        self.assertEqual(message.via[0].params["received"], "198.51.100.7")
        self.assertEqual(message.via[0].params["rport"], "41000")
        self.assertEqual(layer.stats["connections_accepted"], 1)

    def test_pong(self) -> None:
        """CRLF CRLF gets a single CRLF back; a single CRLF gets nothing."""
        layer, reactor, _user = tcp_layer()
        protocol, transport = accept(reactor)
        protocol.dataReceived(b"\r\n\r\n")
        self.assertEqual(transport.value(), b"\r\n")
        protocol.dataReceived(b"\r\n")
        self.assertEqual(transport.value(), b"\r\n")
        self.assertEqual(layer.stats["keepalive_pings"], 1)

    def test_malformed_message_answered_connection_kept(self) -> None:
        """A framed message that does not parse gets 400 on the same
        connection, which stays open for the next message."""
        _layer, reactor, user = tcp_layer()
        protocol, transport = accept(reactor)
        bad = request_bytes("SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK-1", extra="oops\r\n")
        protocol.dataReceived(bad + request_bytes("SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK-2"))
        [response] = messages(transport)
        assert isinstance(response, Response)
        self.assertEqual(response.code, 400)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(user.received), 1)

    def test_garbage_dropped(self) -> None:
        """Framed garbage is dropped without a response or exception."""
        layer, reactor, user = tcp_layer()
        protocol, transport = accept(reactor)
        protocol.dataReceived(b"hello there\r\n\r\n\x00\x01\x02\r\n\r\n")
        self.assertEqual((transport.value(), user.received), (b"", []))
        self.assertEqual(layer.stats["messages_dropped"], 2)

    def test_framing_error_answers_and_closes(self) -> None:
        """A bad Content-Length: 400 (header block readable), then close."""
        layer, reactor, user = tcp_layer()
        protocol, transport = accept(reactor)
        data = request_bytes("SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK-1").replace(
            b"Content-Length: 0", b"Content-Length: many")
        protocol.dataReceived(data)
        [response] = messages(transport)
        assert isinstance(response, Response)
        self.assertEqual(response.code, 400)
        self.assertIn("Content-Length", response.reason)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(user.received, [])
        self.assertEqual(layer.stats["framing_errors"], 1)

    def test_too_large_answers_513_and_closes(self) -> None:
        """A message beyond the size limit: 513 and close."""
        _layer, reactor, _user = tcp_layer(max_message_size=2048)
        protocol, transport = accept(reactor)
        data = request_bytes("SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK-1", body=b"x" * 5000)
        protocol.dataReceived(data[:1500])
        [response] = messages(transport)
        self.assertEqual(response.code, 513)  # type: ignore[union-attr]
        self.assertTrue(transport.disconnecting)

    def test_header_flood_closes_silently(self) -> None:
        """A header block that never ends is closed without a response."""
        layer, reactor, _user = tcp_layer(max_message_size=1024)
        protocol, transport = accept(reactor)
        protocol.dataReceived(b"INVITE sip:a SIP/2.0\r\n" + b"X: y\r\n" * 300)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(layer.stats["messages_dropped"], 1)

    def test_ipv6_connection(self) -> None:
        """Over an IPv6 connection the Source host has no brackets; received
        is bare."""
        _layer, reactor, user = tcp_layer("tcp:[2001:db8::5]:5060")
        protocol, _transport = accept(reactor, "2001:db8::99", 41000)
        protocol.dataReceived(request_bytes("SIP/2.0/TCP [2001:db8::10];branch=z9hG4bK-1"))
        message, source = user.received[0]
        self.assertEqual(source.remote, ("2001:db8::99", 41000))
        self.assertEqual(source.local, ("2001:db8::5", 5060))
        self.assertEqual(message.via[0].params["received"], "2001:db8::99")

    def test_connection_ids_unique(self) -> None:
        """Every connection gets a new id, across layers too."""
        _layer, reactor, _user = tcp_layer()
        _layer2, reactor2, _user2 = tcp_layer()
        ids = {accept(reactor, port=40000 + i)[0].connection_id for i in range(5)}
        ids |= {accept(reactor2, port=40000 + i)[0].connection_id for i in range(5)}
        self.assertEqual(len(ids), 10)


class ResponseOverStreamTests(SynchronousTestCase):
    """RFC 3261 18.2.2 for reliable transports."""

    def test_same_connection(self) -> None:
        """A response goes back over the request's connection."""
        layer, reactor, user = tcp_layer()
        protocol, transport = accept(reactor)
        protocol.dataReceived(request_bytes("SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK-1"))
        request, source = user.received[0]
        assert isinstance(request, Request)
        self.successResultOf(layer.send_response(make_response(request, 200), source))
        [response] = messages(transport)
        self.assertEqual(response.code, 200)  # type: ignore[union-attr]
        self.assertEqual(reactor.tcpClients, [])

    def test_connection_gone_reconnects(self) -> None:
        """When the connection is gone, a new one is opened to received and
        the sent-by port; the response is sent once it connects."""
        layer, reactor, user = tcp_layer()
        protocol, _transport = accept(reactor)
        protocol.dataReceived(
            request_bytes("SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bK-1;rport"))
        request, source = user.received[0]
        assert isinstance(request, Request)
        protocol.connectionLost(Failure(ConnectionDone()))
        d = layer.send_response(make_response(request, 200), source)
        self.assertNoResult(d)
        self.assertEqual(reactor.tcpClients[0][:2], ("198.51.100.7", 5070))
        _client, transport = connect(reactor)
        self.successResultOf(d)
        self.assertEqual(messages(transport)[0].code, 200)  # type: ignore[union-attr]

    def test_tls_reconnect_default_port(self) -> None:
        """Over TLS without a sent-by port, the new connection goes to 5061."""
        from tests.trial.sip.test_tls import make_tls_config

        layer, reactor, _user = tcp_layer("tls:203.0.113.5:5061",
                                          tls=make_tls_config(self.mktemp()))
        request = make_request("SIP/2.0/TLS 10.0.0.1;branch=z9hG4bK-1;received=198.51.100.7")
        source = Source("TLS", ("198.51.100.7", 40000), ("203.0.113.5", 5061), 999999)
        d = layer.send_response(make_response(request, 200), source)
        self.assertNoResult(d)
        self.assertEqual(reactor.sslClients[0][:2], ("198.51.100.7", 5061))
        connect(reactor, clients="sslClients")
        self.successResultOf(d)


class OutboundTests(SynchronousTestCase):
    """send_request over TCP."""

    def test_connect_then_send(self) -> None:
        """The request waits for the connection, then is written; the
        Deferred fires then; the Via names our TCP listener."""
        layer, reactor, _user = tcp_layer()
        request = make_request("SIP/2.0/UDP x;branch=z9hG4bK-out;rport")
        d = layer.send_request(request, Target("TCP", "192.0.2.10", 5060))
        self.assertNoResult(d)
        self.assertEqual(reactor.tcpClients[0][:2], ("192.0.2.10", 5060))
        _protocol, transport = connect(reactor)
        self.successResultOf(d)
        [sent] = messages(transport)
        self.assertEqual(sent.headers.get("Via"),
                         "SIP/2.0/TCP 203.0.113.5:5060;branch=z9hG4bK-out;rport")

    def test_reuse_while_connecting_and_after(self) -> None:
        """Requests to the same address share one connection, whether it is
        still connecting or already open."""
        layer, reactor, _user = tcp_layer()
        target = Target("TCP", "192.0.2.10", 5060)
        first = layer.send_request(make_request(), target)
        second = layer.send_request(make_request(), target)
        _protocol, transport = connect(reactor)
        self.successResultOf(first)
        self.successResultOf(second)
        self.successResultOf(layer.send_request(make_request(), target))
        self.assertEqual(len(reactor.tcpClients), 1)
        self.assertEqual(len(messages(transport)), 3)

    def test_reuse_inbound_connection(self) -> None:
        """A request to the address of an inbound connection uses it."""
        layer, reactor, _user = tcp_layer()
        _protocol, transport = accept(reactor, "192.0.2.10", 40000)
        self.successResultOf(layer.send_request(make_request(),
                                                Target("TCP", "192.0.2.10", 40000)))
        self.assertEqual(reactor.tcpClients, [])
        self.assertEqual(len(messages(transport)), 1)

    def test_connect_failure(self) -> None:
        """A refused connection fails every queued send with TransportError."""
        layer, reactor, _user = tcp_layer()
        target = Target("TCP", "192.0.2.10", 5060)
        first = layer.send_request(make_request(), target)
        second = layer.send_request(make_request(), target)
        factory = reactor.tcpClients[0][2]
        factory.clientConnectionFailed(reactor.connectors[0], Failure(ConnectionRefusedError()))
        error = self.failureResultOf(first, TransportError).value
        self.assertIn("192.0.2.10:5060", str(error))
        self.failureResultOf(second, TransportError)
        self.assertEqual(layer.stats["connect_failures"], 1)
        # a later send tries again
        layer.send_request(make_request(), target)
        self.assertEqual(len(reactor.tcpClients), 2)

    def test_named_connection(self) -> None:
        """target.connection_id sends over that very connection."""
        layer, reactor, _user = tcp_layer()
        protocol, transport = accept(reactor, "192.0.2.10", 40000)
        target = Target("TCP", "192.0.2.99", 5060, protocol.connection_id)
        self.successResultOf(layer.send_request(make_request(), target))
        self.assertEqual(len(messages(transport)), 1)
        self.assertEqual(reactor.tcpClients, [])

    def test_named_connection_gone(self) -> None:
        """If the named connection is gone, TransportError, no new connection."""
        layer, reactor, _user = tcp_layer()
        protocol, _transport = accept(reactor, "192.0.2.10", 40000)
        protocol.connectionLost(Failure(ConnectionDone()))
        target = Target("TCP", "192.0.2.10", 40000, protocol.connection_id)
        d = layer.send_request(make_request(), target)
        self.assertIn("gone", str(self.failureResultOf(d, TransportError).value))
        self.assertEqual(reactor.tcpClients, [])

    def test_ipv6(self) -> None:
        """To an IPv6 target: the connect has a bare host, the Via brackets."""
        layer, reactor, _user = tcp_layer("tcp:[2001:db8::5]:5060")
        request = make_request()
        d = layer.send_request(request, Target("TCP", "2001:db8::10", 5062))
        self.assertEqual(reactor.tcpClients[0][:2], ("2001:db8::10", 5062))
        connect(reactor)
        self.successResultOf(d)
        self.assertTrue(request.headers.get("Via", "").startswith(
            "SIP/2.0/TCP [2001:db8::5]:5060;"))

    def test_tls_needs_listener(self) -> None:
        """Sending over TLS without a TLS listener fails with TransportError."""
        layer, _reactor, _user = tcp_layer()
        d = layer.send_request(make_request(), Target("TLS", "192.0.2.10", 5061))
        self.failureResultOf(d, TransportError)


class KeepAliveSendTests(SynchronousTestCase):
    """send_keepalive (RFC 5626 4.4.1 pings we send)."""

    def test_on_connection(self) -> None:
        """A ping goes on the existing connection, by id or by address."""
        layer, reactor, _user = tcp_layer()
        protocol, transport = accept(reactor, "192.0.2.10", 40000)
        self.successResultOf(layer.send_keepalive(Target("TCP", "192.0.2.10", 40000)))
        self.successResultOf(layer.send_keepalive(
            Target("TCP", "192.0.2.99", 1, protocol.connection_id)))
        self.assertEqual(transport.value(), b"\r\n\r\n" * 2)

    def test_never_connects(self) -> None:
        """Without a connection, a keep-alive fails and opens none."""
        layer, reactor, _user = tcp_layer()
        d = layer.send_keepalive(Target("TCP", "192.0.2.10", 5060))
        self.failureResultOf(d, TransportError)
        self.assertEqual(reactor.tcpClients, [])

    def test_udp(self) -> None:
        """Over UDP the ping is a datagram."""
        layer, reactor, _user = tcp_layer()
        self.successResultOf(layer.send_keepalive(Target("UDP", "192.0.2.10", 5060)))
        self.assertEqual(reactor.udp_ports[LOCAL][0].written,
                         [(b"\r\n\r\n", ("192.0.2.10", 5060))])


class LimitTests(SynchronousTestCase):
    """Idle timeout and the per-address connection cap."""

    def test_idle_timeout(self) -> None:
        """An unused connection closes after idle_timeout seconds on the
        injected clock; traffic postpones it."""
        layer, reactor, _user = tcp_layer(idle_timeout=30)
        protocol, transport = accept(reactor)
        reactor.advance(20)
        protocol.dataReceived(b"\r\n\r\n")
        reactor.advance(20)
        self.assertFalse(transport.disconnecting)
        reactor.advance(10)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(layer.stats["idle_timeouts"], 1)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(reactor.getDelayedCalls(), [])
        self.assertEqual(len(layer.connections), 0)

    def test_sending_postpones_idle_timeout(self) -> None:
        """Writing on a connection counts as use."""
        layer, reactor, _user = tcp_layer(idle_timeout=30)
        _protocol, transport = accept(reactor, "192.0.2.10", 40000)
        reactor.advance(25)
        layer.send_request(make_request(), Target("TCP", "192.0.2.10", 40000))
        reactor.advance(25)
        self.assertFalse(transport.disconnecting)

    def test_cap_per_address(self) -> None:
        """Beyond max_connections_per_address from one IP, new connections
        are refused (closed at once) and counted; other IPs are not
        affected; a closed connection frees a place."""
        layer, reactor, _user = tcp_layer(max_connections_per_address=2)
        factory = reactor.tcpServers[0][1]
        first, _t = accept(reactor, "198.51.100.7", 40001)
        accept(reactor, "198.51.100.7", 40002)
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "198.51.100.7", 40003)))
        self.assertEqual(layer.stats["connections_refused"], 1)
        self.assertIsNotNone(accept(reactor, "198.51.100.8", 40001)[0])
        first.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "198.51.100.7", 40004)))

    def test_stop_closes_connections(self) -> None:
        """stop() closes every connection; its Deferred fires once they are gone."""
        layer, reactor, _user = tcp_layer()
        protocol, transport = accept(reactor)
        d = layer.stop()
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(d)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)


class Echo:
    """A user that answers every request 200 and records responses."""

    def __init__(self) -> None:
        self.layer: TransportLayer | None = None
        self.requests: list[tuple[Request, Source]] = []
        self.responses: defer.DeferredQueue[tuple[Response, Source]] = defer.DeferredQueue()

    def message_received(self, message: Request | Response, source: Source) -> None:
        """Answer requests; queue responses."""
        if isinstance(message, Request):
            self.requests.append((message, source))
            assert self.layer is not None
            self.layer.send_response(make_response(message, 200, to_tag="b"), source)
        else:
            self.responses.put((message, source))


class LoopbackTests(TestCase):
    """Two transport layers on the real reactor, over loopback sockets."""

    timeout = 10

    def setUp(self) -> None:
        """Two layers, each listening on UDP and TCP at 127.0.0.1, any port."""
        from twisted.internet import reactor

        self.reactor = reactor
        self.users = (Echo(), Echo())
        self.layers = tuple(TransportLayer(reactor, user) for user in self.users)
        for user, layer in zip(self.users, self.layers, strict=True):
            user.layer = layer
            layer.listen("udp:127.0.0.1:0")
            layer.listen("tcp:127.0.0.1:0")
            self.addCleanup(layer.stop)

    @defer.inlineCallbacks
    def exchange(self, transport: str) -> Any:
        """A sends OPTIONS to B over C{transport}; B answers 200."""
        a, b = self.layers
        host, port = b.local_address(transport)
        self.assertNotEqual(port, 0)
        request = make_request(f"SIP/2.0/{transport} x;branch=z9hG4bK-loop-{transport};rport")
        yield a.send_request(request, Target(transport, host, port))
        response, source = yield self.users[0].responses.get()
        self.assertEqual(response.code, 200)
        self.assertEqual(source.transport, transport)
        self.assertEqual(source.remote, (host, port))
        [(received, inbound)] = self.users[1].requests
        self.assertEqual(received.via[0].params["rport"], str(inbound.remote[1]))
        self.assertEqual(inbound.remote[0], "127.0.0.1")

    def test_udp(self) -> None:
        """A request and its response cross over UDP."""
        return self.exchange("UDP")

    def test_tcp(self) -> None:
        """A request and its response cross over TCP (the response on the
        request's connection)."""
        d = self.exchange("TCP")

        def check(_: object) -> None:
            a, b = self.layers
            self.assertEqual((len(a.connections), len(b.connections)), (1, 1))
            self.assertEqual(b.stats["connections_opened"], 0)

        return d.addCallback(check)

    def test_address_in_use(self) -> None:
        """Binding a port already in use raises ListenerError naming it."""
        port = self.layers[0].local_address("UDP")[1]
        other = TransportLayer(self.reactor, None)
        error = self.assertRaises(ListenerError, other.listen, f"udp:127.0.0.1:{port}")
        self.assertIn(f"udp:127.0.0.1:{port}", str(error))

    def test_ipv6_udp(self) -> None:
        """A request crosses over UDP on ::1, when the host has IPv6."""
        if not socket.has_ipv6:
            self.skipTest("no IPv6")
        try:
            for layer in self.layers:
                layer.listen("udp:[::1]:0")
        except Exception as exc:
            self.skipTest(f"no IPv6 loopback: {exc}")
        a, b = self.layers
        host, port = b.listener_for("UDP", "::1").sent_by
        request = make_request("SIP/2.0/UDP x;branch=z9hG4bK-loop6;rport")
        d = a.send_request(request, Target("UDP", host, port))
        d.addCallback(lambda _: self.users[0].responses.get())

        def check(result: tuple[Response, Source]) -> None:
            response, source = result
            self.assertEqual(response.code, 200)
            self.assertEqual(source.remote, ("::1", port))
            self.assertIn("[::1]", response.headers.get("Via", ""))

        return d.addCallback(check)
