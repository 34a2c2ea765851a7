"""A fake rtpengine for tests: an ng server on a loopback UDP port.

L{FakeRtpengine} records every request, and answers it the way a test
chooses: like rtpengine (offers and answers get their SDP back with the
fake's address and ports, calls are remembered, C{query} and C{delete}
return the counters the test set), with canned replies, or not at all.
Nothing here reads a clock; tests wait for requests with L{received}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import DatagramProtocol

from b2bua.sip.sdp import Connection, parse_sdp
from media.bencode import decode, encode

#: How long a test waits for a datagram on loopback before failing.
WAIT = 5.0

#: A reply chooser: the request dictionary to the reply (None: stay silent).
Handler = Callable[[dict[str, Any]], "dict[str, Any] | None"]


@dataclass
class Request:
    """One datagram the fake received."""

    cookie: bytes
    message: dict[str, Any]
    raw: bytes
    source: tuple[str, int]


@dataclass
class FakeCall:
    """What the fake remembers of a call: the SDP bodies it rewrote."""

    tags: list[str] = field(default_factory=list)
    ports: dict[str, list[int]] = field(default_factory=dict)


class FakeRtpengine(DatagramProtocol):
    """An ng server that behaves enough like rtpengine for the client's tests.

    @ivar handler: answers each request; L{rtpengine} by default.
    @ivar stats: the reply to C{query} and C{delete} for a known call
        (without C{result}, which is added).
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.handler: Handler = self.rtpengine
        self.calls: dict[str, FakeCall] = {}
        self.stats: dict[str, Any] = {}
        self.next_port = 30000
        self._waiting: list[tuple[int, Deferred[Request]]] = []
        self.port: Any = None

    def listen(self) -> tuple[str, int]:
        """Bind a loopback port; return the address."""
        self.port = reactor.listenUDP(0, self, interface="127.0.0.1")
        return ("127.0.0.1", self.port.getHost().port)

    @property
    def address(self) -> tuple[str, int]:
        """The address it listens on."""
        return ("127.0.0.1", self.port.getHost().port)

    def close(self) -> Deferred[None]:
        """Stop listening."""
        result = self.port.stopListening()
        return result if isinstance(result, Deferred) else succeed(None)

    def received(self, count: int) -> Deferred[Request]:
        """Fire with the C{count}-th request (from 1) once it has come.

        Fails after L{WAIT} seconds, so a test never hangs.
        """
        if len(self.requests) >= count:
            return succeed(self.requests[count - 1])
        waiter: Deferred[Request] = Deferred()
        self._waiting.append((count, waiter))
        return waiter.addTimeout(WAIT, reactor)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Record the request and answer it as L{handler} says."""
        cookie, _, body = datagram.partition(b" ")
        request = Request(cookie, decode(body, encoding="utf-8"), datagram, (addr[0], addr[1]))
        self.requests.append(request)
        reply = self.handler(request.message)
        if reply is not None:
            self.send(cookie, reply, addr)
        ready = [(n, w) for n, w in self._waiting if n <= len(self.requests)]
        self._waiting = [(n, w) for n, w in self._waiting if n > len(self.requests)]
        for n, waiter in ready:
            waiter.callback(self.requests[n - 1])

    def send(self, cookie: bytes, reply: dict[str, Any] | bytes, addr: Any) -> None:
        """Send a reply (a dictionary, or raw bytes after the cookie)."""
        body = reply if isinstance(reply, bytes) else encode(reply)
        self.transport.write(cookie + b" " + body, addr)

    def silent(self, message: dict[str, Any]) -> None:
        """A handler that never answers."""
        return None

    def rtpengine(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """A handler that answers like rtpengine (without forwarding media)."""
        command = message.get("command")
        call_id = message.get("call-id", "")
        if command == "ping":
            return {"result": "pong"}
        if command in ("offer", "answer"):
            call = self.calls.setdefault(call_id, FakeCall())
            if command == "answer" and not call.tags:
                return {"result": "error", "error-reason": "Unknown call-id"}
            sdp = parse_sdp(message["sdp"])
            host = self.address[0]
            ports = []
            sdp.origin = sdp.origin._replace(address=host)
            sdp.connection = Connection("IN", "IP4", host)
            for media in sdp.media:
                media.connection = None
                if media.port:
                    media.port = self.next_port
                    self.next_port += 2
                ports.append(media.port)
            call.tags.append(message["from-tag"])
            call.ports[message["from-tag"]] = ports
            return {"result": "ok", "sdp": sdp.to_bytes()}
        if command in ("query", "delete"):
            if call_id not in self.calls:
                if command == "delete":
                    return {"result": "ok", "warning": "Call-ID not found or tags didn't match"}
                return {"result": "error", "error-reason": "Unknown call-id"}
            if command == "delete":
                del self.calls[call_id]
            return {"result": "ok", **self.stats}
        return {"result": "error", "error-reason": "Unrecognized command"}


def stats_reply(a_tag: str, b_tag: str) -> dict[str, Any]:
    """A C{query} reply shaped like rtpengine 10.5's, for two parties.

    Party a sent 50 RTP packets (8600 bytes) with SSRC 4369, party b 45
    (7740 bytes) with SSRC 8738, on one audio line; a T.38 line (index 2)
    saw nothing.  RTCP: a reported 5 packets lost and 20 ms jitter of what
    it received from b, with a 0.67 ms round trip; b sent no reports.
    """

    def stream(port: int, flag: str, packets: int, size: int, ssrc: int, last: int) -> dict:
        return {
            "local port": port,
            "local address": "127.0.0.1",
            "family": "IPv4",
            "endpoint": {"family": "IPv4", "address": "127.0.0.1", "port": port + 1000},
            "last packet": last,
            "flags": [flag, "filled"],
            "SSRC": ssrc,
            "stats": {"packets": packets, "bytes": size, "errors": 0},
        }

    def image(port: int) -> dict:
        return {
            "index": 2,
            "type": "image",
            "protocol": "udptl",
            "streams": [{
                "local port": port,
                "last packet": 1700000000,
                "flags": ["RTP", "filled"],
                "stats": {"packets": 0, "bytes": 0, "errors": 0},
            }],
            "flags": ["initialized"],
        }  # fmt: skip

    return {
        "created": 1700000000,
        "last signal": 1700000000,
        "SSRC": {
            "4369": {
                "cumulative loss": 5,
                "average MOS": {
                    "MOS": 41,
                    "round-trip time": 670,
                    "jitter": 20,
                    "packet loss": 3,
                    "samples": 1,
                },
                "lowest MOS": {
                    "MOS": 41,
                    "round-trip time": 670,
                    "jitter": 20,
                    "packet loss": 3,
                    "reported at": 1700000009,
                },
            },
        },
        "tags": {
            a_tag: {
                "tag": a_tag,
                "medias": [
                    {
                        "index": 1,
                        "type": "audio",
                        "protocol": "RTP/AVP",
                        "streams": [
                            stream(41018, "RTP", 50, 8600, 4369, 1700000010),
                            stream(41019, "RTCP", 4, 120, 4369, 1700000009),
                        ],
                        "flags": ["initialized", "send"],
                    },
                    image(41020),
                ],
            },
            b_tag: {
                "tag": b_tag,
                "medias": [
                    {
                        "index": 1,
                        "type": "audio",
                        "protocol": "RTP/AVP",
                        "streams": [
                            stream(41000, "RTP", 45, 7740, 8738, 1700000011),
                            stream(41001, "RTCP", 0, 0, 8738, 1700000000),
                        ],
                        "flags": ["initialized", "recv"],
                    },
                    image(41002),
                ],
            },
        },
        "totals": {
            "RTP": {"packets": 95, "bytes": 16340, "errors": 0},
            "RTCP": {"packets": 4, "bytes": 120, "errors": 0},
        },
    }
