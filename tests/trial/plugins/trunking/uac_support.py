"""A vendor on a wire, for the tests of the trunking SIP clients.

L{VendorWire} is the fake transport under a real L{TransactionLayer} on a
L{Clock}: it records every request the layer sends and lets a test answer
them as the vendor would (the response goes through the byte codec and the
layer's matching, like one from the network).  L{sender} gives the
L{CallableSender} the clients use.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from b2bua.sip.errors import TransportError
from b2bua.sip.interfaces import Source, Target
from b2bua.sip.message import Request, Response, make_response, parse_message
from b2bua.sip.transaction import TransactionLayer
from plugins.trunking.uac import CallableSender

LOCAL = ("192.0.2.10", 5060)
VENDOR = ("198.51.100.7", 5060)


def counting_random() -> Callable[[int], bytes]:
    """A deterministic stand-in for C{os.urandom}: 1, 2, 3 ... big-endian."""
    counter = itertools.count(1)

    def random(n: int) -> bytes:
        return next(counter).to_bytes(n, "big")

    return random


class _NoServer:
    """A transaction user for a layer that only sends (no request comes)."""

    def request_received(self, request: Request, transaction: object) -> None:
        """Not expected."""
        raise AssertionError(f"unexpected request {request!r}")

    def response_received(self, response: Response, source: Source) -> None:
        """A stray 2xx to INVITE: not expected either."""

    def server_transaction_failed(self, transaction: object, error: Exception) -> None:
        """Not expected."""


class VendorWire:
    """Records what the layer sends; answers as the vendor.

    @ivar sent: (time, request, target) for every send, retransmissions too.
    @ivar listeners: our listeners by transport (a send on another fails).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, Request, Target]] = []
        self.listeners = {"UDP": LOCAL, "TCP": LOCAL}
        self.layer = TransactionLayer(clock, self, _NoServer(), random=counting_random())

    # --- Transport ---------------------------------------------------------

    def send_request(self, request: Request, target: Target) -> Deferred[None]:
        """Record the request (parsed back from bytes, as the vendor reads it)."""
        self.sent.append((self.clock.seconds(), parse_message(request.to_bytes()), target))
        return succeed(None)

    def send_response(self, response: Response, source: Source) -> Deferred[None]:
        """Nothing is answered here."""
        return succeed(None)

    def local_address(self, transport: str) -> tuple[str, int]:
        """Our listener for C{transport}."""
        try:
            return self.listeners[transport]
        except KeyError:
            raise TransportError(f"no {transport} listener") from None

    # --- test side -----------------------------------------------------------

    def sender(self) -> CallableSender:
        """What a client sends with."""
        return CallableSender(self.layer.send_request, self.local_address)

    def requests(self, method: str | None = None) -> list[Request]:
        """The distinct requests sent (retransmissions left out), in order."""
        seen: set[str] = set()
        out = []
        for _, request, _ in self.sent:
            branch = request.via[0].branch or ""
            if branch in seen or (method is not None and request.method != method):
                continue
            seen.add(branch)
            out.append(request)
        return out

    def last(self, method: str | None = None) -> Request:
        """The last distinct request sent."""
        return self.requests(method)[-1]

    def answer(self, request: Request, code: int, headers: list[tuple[str, str]] = (),
               reason: str | None = None) -> None:  # type: ignore[assignment]
        """Answer C{request} with C{code} as the vendor."""
        response = make_response(request, code, reason, to_tag="vendor1", headers=list(headers))
        source = Source("UDP", VENDOR, LOCAL)
        self.layer.message_received(parse_message(response.to_bytes()), source)
