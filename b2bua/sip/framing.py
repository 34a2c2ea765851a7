"""Message framing on stream transports (TCP, TLS), sans-IO.

A SIP message on a stream ends where its header block ends plus
Content-Length bytes of body (RFC 3261 18.3).  L{StreamFramer} cuts the
byte stream of one connection into whole messages and finds the RFC 5626
(section 4.4.1) keep-alives between them:

  - a double CRLF ("ping") outside a message is reported as L{PING}; the
    connection answers it with a single CRLF ("pong");
  - a single CRLF between messages (a pong, or the CRLFs RFC 3261 7.5 lets
    a sender put before a start line) is skipped.

Decisions:

  - a message without Content-Length has an empty body on a stream: RFC
    3261 20.14 makes the header mandatory there, and guessing the end of
    the body is impossible, so the bytes after the header block start the
    next message;
  - the header block may end with a bare-LF empty line (C{LF LF}) as well
    as with CRLF CRLF, like L{b2bua.sip.message.parse_message} accepts;
  - a header block larger than the size limit (no empty line within
    C{max_size} bytes), a message larger than the limit, an unparseable or
    conflicting Content-Length are a L{FramingError}: the connection cannot
    find the next message and must be closed.  The error carries the header
    block when one was found, so that a 400 (or 513) can still be answered.

The framer keeps one buffer per connection, never rescans bytes it has
already searched for the end of a header block, and waits for a body by
length alone, so feeding a large message in small pieces costs linear time.
"""

from __future__ import annotations

from b2bua.sip.errors import ParseError

__all__ = [
    "DEFAULT_MAX_SIZE",
    "PING",
    "PONG",
    "FrameEvent",
    "FramingError",
    "KeepAlivePing",
    "StreamFramer",
    "content_length",
]

#: Largest header block or message accepted by default (bytes).
DEFAULT_MAX_SIZE = 65536

#: What a connection writes back for a ping (RFC 5626 4.4.1).
PONG = b"\r\n"

#: Longest Content-Length value worth converting (anything longer is huge).
_MAX_LENGTH_DIGITS = 12


class KeepAlivePing:
    """A CRLF CRLF keep-alive ping received between messages."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PING"


#: The one L{KeepAlivePing} event.
PING = KeepAlivePing()


class FramingError(ParseError):
    """The stream cannot be cut into messages any more; close the connection.

    @ivar reason: a short phrase, fit as the reason phrase of a response.
    @ivar head: the header block (start line and header fields, without the
        empty line) of the offending message when it was complete, else
        C{None}.  A response can be formed from it when it is a request.
    @ivar code: the status code to answer with when C{head} allows one:
        C{513} for a message beyond the size limit, C{400} otherwise.
    """

    def __init__(self, reason: str, head: bytes | None = None, code: int = 400) -> None:
        super().__init__(reason)
        self.head = head
        self.code = code


#: What L{StreamFramer.feed} returns: whole messages as C{bytes}, L{PING},
#: and at most one L{FramingError}, always last.
FrameEvent = bytes | KeepAlivePing | FramingError


def content_length(head: bytes) -> int | None:
    """Read the Content-Length (or compact C{l}) of a header block.

    The start line is skipped; continuation lines are ignored.

    @param head: the header block, without the empty line that ends it.
    @return: the length, or C{None} when the header is absent.
    @raise FramingError: when the value is not a number, or when two
        Content-Length fields disagree.
    """
    found: str | None = None
    lines = head.split(b"\n")
    for raw in lines[1:]:
        if not raw or raw[0] in (32, 9):
            continue
        colon = raw.find(b":")
        if colon <= 0:
            continue
        name = raw[:colon].strip().lower()
        if name != b"content-length" and name != b"l":
            continue
        value = raw[colon + 1 :].strip().decode("latin-1")
        if not value.isdigit() or not value.isascii():
            raise FramingError(f"bad Content-Length {value[:20]!r}", head)
        value = value.lstrip("0") or "0"
        if found is not None and found != value:
            raise FramingError("conflicting Content-Length headers", head)
        found = value
    if found is None:
        return None
    if len(found) > _MAX_LENGTH_DIGITS:
        return 10**_MAX_LENGTH_DIGITS
    return int(found)


class StreamFramer:
    """Cut one connection's byte stream into SIP messages and keep-alives.

    Feed it every chunk read from the connection, in order; act on the
    returned events in order.  Once it has returned a L{FramingError} the
    framer is spent: later feeds return nothing.

    @ivar max_size: the largest header block, and the largest message
        (header block plus body), accepted.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        #: inside a message (its first byte is at the start of the buffer)
        self._in_message = False
        #: where the search for the end of the header block resumes
        self._scan = 0
        #: total length of the current message once its header block is read
        self._length: int | None = None
        #: one CRLF seen between messages (half a ping)
        self._crlf = False
        self._failed = False

    @property
    def buffered(self) -> int:
        """How many received bytes wait for the rest of their message."""
        return len(self._buf)

    @property
    def idle(self) -> bool:
        """True when no partial message is waiting (between messages)."""
        return not self._in_message and not self._buf

    def feed(self, data: bytes) -> list[FrameEvent]:
        """Add received bytes; return the messages and pings they complete.

        @return: in stream order, each complete message as C{bytes} (any
            leading CRLFs removed), L{PING} for each keep-alive ping, and
            possibly a final L{FramingError}.
        """
        if self._failed:
            return []
        buf = self._buf
        buf += data
        events: list[FrameEvent] = []
        pos = 0
        n = len(buf)
        try:
            while pos < n:
                if self._length is None:
                    if not self._in_message:
                        pos = self._skip_keepalives(pos, events)
                        if pos >= n or (buf[pos] == 13 and pos + 1 >= n):
                            break
                        self._in_message = True
                        self._crlf = False
                        self._scan = pos
                    if not self._find_head(pos):
                        break
                length = self._length
                assert length is not None
                if n - pos < length:
                    break
                events.append(bytes(buf[pos : pos + length]))
                pos += length
                self._length = None
                self._in_message = False
        except FramingError as error:
            self._failed = True
            self._buf = bytearray()
            events.append(error)
            return events
        if pos:
            del buf[:pos]
            self._scan = max(0, self._scan - pos)
        return events

    def _skip_keepalives(self, pos: int, events: list[FrameEvent]) -> int:
        """Consume CRLFs between messages, reporting every second one as a ping."""
        buf = self._buf
        n = len(buf)
        while pos < n:
            b = buf[pos]
            if b == 13:
                if pos + 1 >= n or buf[pos + 1] != 10:
                    return pos
                pos += 2
                if self._crlf:
                    events.append(PING)
                    self._crlf = False
                else:
                    self._crlf = True
            elif b == 10:
                # a bare LF between messages: tolerated, never part of a ping
                pos += 1
            else:
                return pos
        return pos

    def _find_head(self, pos: int) -> bool:
        """Look for the end of the header block of the message at C{pos}.

        @return: True once C{self._length} is known.
        @raise FramingError: on an oversized or unframeable message.
        """
        buf = self._buf
        n = len(buf)
        scan = self._scan
        crlf_end = buf.find(b"\n\r\n", scan)
        lf_end = buf.find(b"\n\n", scan, crlf_end + 2 if crlf_end >= 0 else n)
        if lf_end >= 0:
            head_end, body_start = lf_end, lf_end + 2
        elif crlf_end >= 0:
            head_end, body_start = crlf_end, crlf_end + 3
        else:
            if n - pos > self.max_size:
                raise FramingError(f"header block larger than {self.max_size} bytes")
            self._scan = max(pos, n - 2)
            return False
        head = bytes(buf[pos:head_end]).rstrip(b"\r")
        if body_start - pos > self.max_size:
            raise FramingError(f"header block larger than {self.max_size} bytes")
        length = content_length(head) or 0
        total = body_start - pos + length
        if total > self.max_size:
            raise FramingError(f"message larger than {self.max_size} bytes", head, 513)
        self._length = total
        return True
