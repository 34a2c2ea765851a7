"""Tests for L{b2bua.sip.framing}: stream framing and CRLF keep-alives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from b2bua.sip.errors import ParseError
from b2bua.sip.framing import PING, PONG, FramingError, StreamFramer, content_length

HEAD = (
    b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: frame-1\r\n"
    b"CSeq: 1 MESSAGE\r\n"
)


def message(body: bytes = b"", length: int | None = None, name: bytes = b"Content-Length") -> bytes:
    """A MESSAGE request with C{body} and a Content-Length (C{length} overrides)."""
    n = len(body) if length is None else length
    return HEAD + name + b": " + str(n).encode() + b"\r\n\r\n" + body


class FramingTests(SynchronousTestCase):
    """Cutting a byte stream into messages."""

    def test_one_message(self) -> None:
        """A whole message in one chunk comes out as one event, unchanged."""
        data = message(b"hello")
        self.assertEqual(StreamFramer().feed(data), [data])

    def test_byte_by_byte(self) -> None:
        """A message fed one byte at a time comes out once, when complete."""
        data = message(b"hello world")
        framer = StreamFramer()
        events = []
        for i in range(len(data)):
            got = framer.feed(data[i : i + 1])
            if i < len(data) - 1:
                self.assertEqual(got, [])
            events.extend(got)
        self.assertEqual(events, [data])
        self.assertTrue(framer.idle)

    def test_two_messages_in_one_chunk(self) -> None:
        """Two messages in one chunk come out as two events, in order."""
        first, second = message(b"one"), message(b"second body")
        self.assertEqual(StreamFramer().feed(first + second), [first, second])

    def test_partial_second_message_waits(self) -> None:
        """The start of a next message stays buffered until it completes."""
        first, second = message(b"one"), message(b"two")
        framer = StreamFramer()
        self.assertEqual(framer.feed(first + second[:10]), [first])
        self.assertEqual(framer.buffered, 10)
        self.assertEqual(framer.feed(second[10:]), [second])

    def test_body_split_from_header(self) -> None:
        """A body arriving after its header block completes the message."""
        data = message(b"x" * 1000)
        framer = StreamFramer()
        self.assertEqual(framer.feed(data[:-1000]), [])
        self.assertEqual(framer.feed(data[-1000:-1]), [])
        self.assertEqual(framer.feed(data[-1:]), [data])

    def test_compact_content_length(self) -> None:
        """The compact form C{l} gives the body length too."""
        data = message(b"abc", name=b"l")
        self.assertEqual(StreamFramer().feed(data + message()), [data, message()])

    def test_missing_content_length_means_no_body(self) -> None:
        """Without Content-Length the body is empty: the bytes after the
        header block start the next message."""
        bare = HEAD + b"\r\n"
        self.assertEqual(StreamFramer().feed(bare + message()), [bare, message()])

    def test_bare_lf_header_end(self) -> None:
        """A header block ending in LF LF is accepted."""
        data = HEAD.replace(b"\r\n", b"\n") + b"Content-Length: 2\n\nhi"
        self.assertEqual(StreamFramer().feed(data), [data])

    def test_content_length_helper(self) -> None:
        """C{content_length} reads the value, ignores the start line, and
        returns None when absent."""
        self.assertEqual(content_length(HEAD + b"Content-Length: 012"), 12)
        self.assertEqual(content_length(b"X sip:a SIP/2.0\r\nl:5"), 5)
        self.assertIsNone(content_length(HEAD.rstrip()))


class KeepAliveTests(SynchronousTestCase):
    """RFC 5626 4.4.1 CRLF keep-alives between messages."""

    def test_ping(self) -> None:
        """CRLF CRLF outside a message is a ping; the pong is one CRLF."""
        self.assertEqual(StreamFramer().feed(b"\r\n\r\n"), [PING])
        self.assertEqual(PONG, b"\r\n")

    def test_single_crlf_ignored(self) -> None:
        """A single CRLF (a pong) produces nothing."""
        framer = StreamFramer()
        self.assertEqual(framer.feed(b"\r\n"), [])
        self.assertEqual(framer.feed(message()), [message()])

    def test_ping_split_across_reads(self) -> None:
        """The two CRLFs of a ping may arrive in different reads, even split
        inside a CRLF."""
        framer = StreamFramer()
        self.assertEqual(framer.feed(b"\r\n\r"), [])
        self.assertEqual(framer.feed(b"\n"), [PING])

    def test_pings_between_messages(self) -> None:
        """Pings and messages interleave in stream order."""
        framer = StreamFramer()
        stream = message() + b"\r\n\r\n" + message(b"b") + b"\r\n\r\n\r\n\r\n"
        self.assertEqual(framer.feed(stream), [message(), PING, message(b"b"), PING, PING])

    def test_crlf_inside_body_is_not_a_ping(self) -> None:
        """CRLF CRLF inside a body is body, not a ping."""
        data = message(b"\r\n\r\n")
        self.assertEqual(StreamFramer().feed(data), [data])

    def test_crlf_before_message_dropped(self) -> None:
        """A single CRLF before a start line is not part of the message."""
        self.assertEqual(StreamFramer().feed(b"\r\n" + message()), [message()])


class FramingErrorTests(SynchronousTestCase):
    """Streams that cannot be framed."""

    def test_bad_content_length(self) -> None:
        """A non-numeric Content-Length is a FramingError carrying the header
        block, and a ParseError."""
        framer = StreamFramer()
        events = framer.feed(HEAD + b"Content-Length: ten\r\n\r\n")
        self.assertEqual(len(events), 1)
        error = events[0]
        self.assertIsInstance(error, FramingError)
        self.assertIsInstance(error, ParseError)
        assert isinstance(error, FramingError)
        self.assertIn("Content-Length", error.reason)
        self.assertEqual(error.head, HEAD + b"Content-Length: ten")
        self.assertEqual(error.code, 400)

    def test_conflicting_content_length(self) -> None:
        """Two different Content-Length values are a FramingError."""
        events = StreamFramer().feed(HEAD + b"Content-Length: 1\r\nl: 2\r\n\r\nab")
        self.assertIsInstance(events[-1], FramingError)

    def test_messages_before_error_kept(self) -> None:
        """Messages completed before the error come out before it; later
        feeds return nothing."""
        framer = StreamFramer()
        events = framer.feed(message() + HEAD + b"Content-Length: -1\r\n\r\n")
        self.assertEqual(events[0], message())
        self.assertIsInstance(events[1], FramingError)
        self.assertEqual(framer.feed(message()), [])

    def test_header_block_too_large(self) -> None:
        """No end of header block within the limit is an error without head."""
        framer = StreamFramer(max_size=1024)
        events = framer.feed(HEAD + b"X-Pad: " + b"a" * 2000)
        self.assertEqual(len(events), 1)
        error = events[0]
        assert isinstance(error, FramingError)
        self.assertIsNone(error.head)

    def test_header_block_too_large_in_pieces(self) -> None:
        """The header limit holds when the block arrives in many reads."""
        framer = StreamFramer(max_size=1024)
        events: list[object] = []
        for _ in range(30):
            events.extend(framer.feed(b"X-Pad: 0123456789012345678901234567890123456789\r\n"))
        self.assertEqual(len(events), 1)
        self.assertIsInstance(events[0], FramingError)

    def test_message_too_large(self) -> None:
        """A body beyond the limit is an error at once (513), with the head."""
        framer = StreamFramer(max_size=1024)
        events = framer.feed(message(length=5000))
        error = events[0]
        assert isinstance(error, FramingError)
        self.assertEqual(error.code, 513)
        self.assertTrue(error.head and error.head.startswith(b"MESSAGE "))

    def test_huge_content_length(self) -> None:
        """An absurdly long Content-Length number is too large, not a crash."""
        events = StreamFramer().feed(message(length=10**40))
        self.assertIsInstance(events[0], FramingError)


class EfficiencyTests(SynchronousTestCase):
    """Large buffers are handled in linear time."""

    def test_large_header_block_in_small_reads(self) -> None:
        """A 60 KiB header block fed 16 bytes at a time is framed, and after
        every read the search for its end resumes at the newest bytes instead
        of rescanning the buffer."""
        pad = b"".join(b"X-Pad-%05d: %s\r\n" % (i, b"v" * 40) for i in range(1100))
        data = HEAD + pad + b"Content-Length: 0\r\n\r\n"
        self.assertLess(len(data), 65536)
        framer = StreamFramer()
        events = []
        for i in range(0, len(data), 16):
            events.extend(framer.feed(data[i : i + 16]))
            if not events:
                self.assertGreaterEqual(framer._scan, framer.buffered - 2)
        self.assertEqual(events, [data])

    def test_many_messages_in_one_buffer(self) -> None:
        """Thousands of messages in one read all come out."""
        data = message(b"x") * 5000
        self.assertEqual(len(StreamFramer(max_size=1 << 30).feed(data)), 5000)


class PropertyTests(SynchronousTestCase):
    """Framing does not depend on how the stream is cut into reads."""

    @settings(max_examples=200, deadline=None)
    @given(
        bodies=st.lists(st.binary(max_size=40), min_size=1, max_size=5),
        pings=st.lists(st.booleans(), min_size=5, max_size=5),
        cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
    )
    def test_any_split_same_events(self, bodies: list[bytes], pings: list[bool],
                                   cuts: list[int]) -> None:
        """Feeding the stream in arbitrary pieces gives the events of one feed."""
        stream = b""
        expected: list[object] = []
        for body, ping in zip(bodies, pings, strict=False):
            stream += message(body)
            expected.append(message(body))
            if ping:
                stream += b"\r\n\r\n"
                expected.append(PING)
        framer = StreamFramer()
        events = []
        last = 0
        for cut in sorted(c % (len(stream) + 1) for c in cuts):
            events.extend(framer.feed(stream[last:cut]))
            last = cut
        events.extend(framer.feed(stream[last:]))
        self.assertEqual(events, expected)
