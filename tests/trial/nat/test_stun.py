"""Tests for L{nat.stun}: the codec against the test vectors of RFC 5769,
the server's rules, and the server on real UDP sockets on loopback."""

from __future__ import annotations

import socket
import struct
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nat.stun import (
    BINDING,
    CHANGE_REQUEST,
    ERROR,
    ERROR_CODE,
    INDICATION,
    MAGIC_COOKIE,
    MAPPED_ADDRESS,
    REQUEST,
    SOFTWARE,
    SUCCESS,
    UNKNOWN_ATTRIBUTES,
    XOR_MAPPED_ADDRESS,
    Message,
    StunError,
    StunServer,
    answer,
    decode_address,
    encode,
    encode_address,
    fingerprint,
    is_stun,
    parse,
)


def hex_bytes(text: str) -> bytes:
    """Bytes from hex printed with spaces and line breaks, as RFCs print it."""
    return bytes.fromhex("".join(text.split()))


# RFC 5769 (test vectors for STUN), sections 2.1 to 2.3.
TRANSACTION = hex_bytes("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")
SAMPLE_REQUEST = hex_bytes("""
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf""")
SAMPLE_IPV4_RESPONSE = hex_bytes("""
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96""")
SAMPLE_IPV6_RESPONSE = hex_bytes("""
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c""")
XOR_KEY = struct.pack("!I", MAGIC_COOKIE) + TRANSACTION
PRIORITY = 0x0024  # an ICE attribute (RFC 8445), comprehension-required


def request(*attributes: tuple[int, bytes], transaction: bytes = TRANSACTION,
            with_fingerprint: bool = False, method: int = BINDING, cls: int = REQUEST,
            cookie: bytes = struct.pack("!I", MAGIC_COOKIE)) -> bytes:
    """An encoded STUN message (a Binding request by default)."""
    return encode(Message(method, cls, transaction, cookie, tuple(attributes)),
                  with_fingerprint)


class VectorTests(SynchronousTestCase):
    """The codec against RFC 5769."""

    def test_fingerprints(self) -> None:
        """Every sample parses with a correct FINGERPRINT, and L{fingerprint}
        computes the very value the vector ends with."""
        for vector in (SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE):
            message = parse(vector)
            self.assertTrue(message.fingerprinted)
            self.assertEqual(message.transaction_id, TRANSACTION)
            self.assertEqual(fingerprint(vector[:-8]), vector[-4:])
            self.assertTrue(is_stun(vector))

    def test_sample_request(self) -> None:
        """The sample request: a Binding request with its attributes in
        order (FINGERPRINT taken off)."""
        message = parse(SAMPLE_REQUEST)
        self.assertEqual((message.method, message.cls, message.classic),
                         (BINDING, REQUEST, False))
        self.assertEqual([a for a, _ in message.attributes],
                         [SOFTWARE, PRIORITY, 0x8029, 0x0006, 0x0008])
        self.assertEqual(message.get(SOFTWARE), b"STUN test client")
        self.assertEqual(message.get(0x0006), b"evtj:h6vY")

    def test_xor_mapped_addresses(self) -> None:
        """The responses' XOR-MAPPED-ADDRESS decode to 192.0.2.1:32853 and
        [2001:db8:1234:5678:11:2233:4455:6677]:32853, and encode back."""
        v4 = parse(SAMPLE_IPV4_RESPONSE).get(XOR_MAPPED_ADDRESS)
        v6 = parse(SAMPLE_IPV6_RESPONSE).get(XOR_MAPPED_ADDRESS)
        assert v4 is not None and v6 is not None
        self.assertEqual(decode_address(v4, XOR_KEY), ("192.0.2.1", 32853))
        self.assertEqual(decode_address(v6, XOR_KEY),
                         ("2001:db8:1234:5678:11:2233:4455:6677", 32853))
        self.assertEqual(encode_address("192.0.2.1", 32853, XOR_KEY), v4)
        self.assertEqual(encode_address("2001:db8:1234:5678:11:2233:4455:6677", 32853,
                                        XOR_KEY), v6)

    def test_sample_request_is_refused_for_priority(self) -> None:
        """The sample request carries ICE's PRIORITY, which a plain STUN
        server does not understand: 420 listing it, FINGERPRINT added (the
        optional ICE-CONTROLLED and the known USERNAME and
        MESSAGE-INTEGRITY are no reason)."""
        result = answer(SAMPLE_REQUEST, ("192.0.2.1", 32853))
        self.assertEqual(result.result, "error")
        assert result.reply is not None
        reply = parse(result.reply)
        self.assertEqual((reply.method, reply.cls, reply.transaction_id),
                         (BINDING, ERROR, TRANSACTION))
        self.assertTrue(reply.fingerprinted)
        self.assertEqual(reply.get(ERROR_CODE), b"\x00\x00\x04\x14Unknown Attribute")
        self.assertEqual(reply.get(UNKNOWN_ATTRIBUTES), struct.pack("!H", PRIORITY))


class AnswerTests(SynchronousTestCase):
    """L{answer}: the server's rules."""

    def mapped(self, data: bytes, source: tuple[str, int]) -> tuple[str, int]:
        """The XOR-MAPPED-ADDRESS of the success answer to C{data}."""
        result = answer(data, source)
        self.assertEqual(result.result, "ok", result.reason)
        assert result.reply is not None
        reply = parse(result.reply)
        self.assertEqual((reply.method, reply.cls), (BINDING, SUCCESS))
        self.assertTrue(reply.fingerprinted)
        self.assertIsNone(reply.get(MAPPED_ADDRESS))
        value = reply.get(XOR_MAPPED_ADDRESS)
        assert value is not None
        return decode_address(value, XOR_KEY[:4] + reply.transaction_id)

    def test_binding_request(self) -> None:
        """A bare request gets the source as XOR-MAPPED-ADDRESS, in both
        families; a dual-stack socket's IPv4-mapped peer is IPv4."""
        self.assertEqual(self.mapped(request(), ("198.51.100.7", 40123)),
                         ("198.51.100.7", 40123))
        self.assertEqual(self.mapped(request(), ("2001:db8::7", 5060)), ("2001:db8::7", 5060))
        self.assertEqual(self.mapped(request(), ("::ffff:198.51.100.7", 1)),
                         ("198.51.100.7", 1))

    def test_fingerprint_checked(self) -> None:
        """A request with a correct FINGERPRINT is answered; a wrong one (or
        anything after it) is dropped without an answer."""
        good = request(with_fingerprint=True)
        self.assertEqual(self.mapped(good, ("192.0.2.9", 9)), ("192.0.2.9", 9))
        bad = good[:-1] + bytes([good[-1] ^ 1])
        self.assertEqual(answer(bad, ("192.0.2.9", 9)).result, "malformed")
        trailing = bytearray(good + struct.pack("!HH", SOFTWARE, 4) + b"abcd")
        trailing[2:4] = struct.pack("!H", len(trailing) - 20)
        result = answer(bytes(trailing), ("192.0.2.9", 9))
        self.assertEqual((result.result, result.reply), ("malformed", None))

    def test_rfc3489_client(self) -> None:
        """Without the magic cookie: MAPPED-ADDRESS, the 128-bit transaction
        id echoed, no FINGERPRINT."""
        cookie = b"\x01\x02\x03\x04"
        result = answer(request(cookie=cookie), ("192.0.2.1", 32853))
        self.assertEqual(result.result, "ok")
        assert result.reply is not None
        reply = parse(result.reply)
        self.assertTrue(reply.classic)
        self.assertEqual((reply.cookie, reply.transaction_id), (cookie, TRANSACTION))
        self.assertFalse(reply.fingerprinted)
        self.assertIsNone(reply.get(XOR_MAPPED_ADDRESS))
        mapped = reply.get(MAPPED_ADDRESS)
        assert mapped is not None
        self.assertEqual(decode_address(mapped), ("192.0.2.1", 32853))

    def test_change_request(self) -> None:
        """CHANGE-REQUEST asking no change is served; asking for another
        address or port gets 420 (there is no alternate address)."""
        self.assertEqual(self.mapped(request((CHANGE_REQUEST, b"\x00\x00\x00\x00")),
                                     ("192.0.2.1", 1)), ("192.0.2.1", 1))
        for flags in (b"\x00\x00\x00\x04", b"\x00\x00\x00\x02"):
            result = answer(request((CHANGE_REQUEST, flags)), ("192.0.2.1", 1))
            self.assertEqual(result.result, "error")
            assert result.reply is not None
            self.assertEqual(parse(result.reply).get(UNKNOWN_ATTRIBUTES), b"\x00\x03")

    def test_unknown_attributes(self) -> None:
        """Unknown optional attributes are ignored; every unknown required
        one is listed once in the 420; attributes after MESSAGE-INTEGRITY
        are ignored (RFC 5389 15.4)."""
        self.assertEqual(self.mapped(request((0x8055, b"x")), ("192.0.2.1", 1)),
                         ("192.0.2.1", 1))
        result = answer(request((0x0002, b"\x00\x01\x00\x01\x01\x02\x03\x04"),
                                (0x7777, b""), (0x0002, b"\x00" * 8)), ("192.0.2.1", 1))
        assert result.reply is not None
        self.assertEqual(parse(result.reply).get(UNKNOWN_ATTRIBUTES), b"\x00\x02\x77\x77")
        after = request((0x0008, b"\x00" * 20), (PRIORITY, b"\x00" * 4))
        self.assertEqual(self.mapped(after, ("192.0.2.1", 1)), ("192.0.2.1", 1))

    def test_not_answered(self) -> None:
        """Indications (keep-alives), responses and other methods get no
        answer; malformed datagrams neither."""
        for data, result in [
            (request(cls=INDICATION), "ignored"),
            (request(cls=SUCCESS), "ignored"),
            (request(method=0x003), "ignored"),
            (b"", "malformed"),
            (b"\r\n\r\n", "malformed"),
            (b"OPTIONS sip:1000@example.com SIP/2.0\r\n\r\n", "malformed"),
            (request()[:-1], "malformed"),
            (request((SOFTWARE, b"abcd"))[:-2], "malformed"),
        ]:
            got = answer(data, ("192.0.2.1", 1))
            self.assertEqual((got.result, got.reply), (result, None), data)

    def test_bad_lengths(self) -> None:
        """A header length that is not the datagram's, or an attribute
        that overruns the message, is malformed."""
        data = bytearray(request((SOFTWARE, b"abcd")))
        data[2:4] = struct.pack("!H", 4)
        self.assertRaises(StunError, parse, bytes(data))
        data = bytearray(request((SOFTWARE, b"abcd")))
        data[22:24] = struct.pack("!H", 40)
        self.assertRaises(StunError, parse, bytes(data))
        self.assertFalse(is_stun(b"OPTIONS sip:x SIP/2.0\r\n\r\n"))

    def test_software(self) -> None:
        """The SOFTWARE attribute appears only when configured."""
        result = answer(request(), ("192.0.2.1", 1), software="b2bua")
        assert result.reply is not None
        self.assertEqual(parse(result.reply).get(SOFTWARE), b"b2bua")
        plain = answer(request(), ("192.0.2.1", 1)).reply
        assert plain is not None
        self.assertIsNone(parse(plain).get(SOFTWARE))


class _Client(DatagramProtocol):
    """Sends one datagram and fires C{answered} with the first reply."""

    def __init__(self, data: bytes, server: tuple[str, int]) -> None:
        self.data = data
        self.server = server
        self.answered: Deferred[bytes] = Deferred()

    def startProtocol(self) -> None:
        """Send at once."""
        assert self.transport is not None
        self.transport.write(self.data, self.server)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """Keep the first reply."""
        if not self.answered.called:
            self.answered.callback(data)


class RealSocketTests(TestCase):
    """The server on loopback UDP, a real client (bounded by the timeout)."""

    timeout = 5

    def exchange(self, host: str, data: bytes) -> Deferred[tuple[bytes, tuple[str, int]]]:
        """Start a server and a client on C{host}; fire with the client's
        reply and its own address."""
        results: list[str] = []
        server_port = reactor.listenUDP(0, StunServer(on_result=results.append), interface=host)
        self.addCleanup(server_port.stopListening)
        self.results = results
        client = _Client(data, (host, server_port.getHost().port))
        client_port = reactor.listenUDP(0, client, interface=host)
        self.addCleanup(client_port.stopListening)
        own = client_port.getHost()
        return client.answered.addCallback(lambda reply: (reply, (own.host, own.port)))

    async def test_ipv4(self) -> None:
        """A Binding request over IPv4 on loopback: the XOR-MAPPED-ADDRESS
        is the client's own address and port."""
        reply, own = await self.exchange("127.0.0.1", request(transaction=b"\x07" * 12))
        message = parse(reply)
        self.assertEqual((message.cls, message.transaction_id), (SUCCESS, b"\x07" * 12))
        value = message.get(XOR_MAPPED_ADDRESS)
        assert value is not None
        self.assertEqual(decode_address(value, XOR_KEY[:4] + b"\x07" * 12), own)
        self.assertEqual(self.results, ["ok"])

    async def test_ipv6(self) -> None:
        """The same over IPv6 loopback (skipped where ::1 is not available)."""
        if not socket.has_ipv6:
            self.skipTest("no IPv6")
        try:
            probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            probe.bind(("::1", 0))
            probe.close()
        except OSError:
            self.skipTest("no IPv6 loopback")
        reply, own = await self.exchange("::1", request(transaction=b"\x09" * 12))
        value = parse(reply).get(XOR_MAPPED_ADDRESS)
        assert value is not None
        self.assertEqual(decode_address(value, XOR_KEY[:4] + b"\x09" * 12), ("::1", own[1]))
