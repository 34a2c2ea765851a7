"""A minimal user agent server on top of the transaction layer.

It shows the stack end to end and serves as the switch's fallback TU until
the core takes requests: it answers OPTIONS with C{200} (Allow, Accept,
Supported), challenges REGISTER with digest authentication and accepts it
without keeping bindings (the core's registrar keeps them), answers CANCEL,
and refuses what it does not handle: C{405} (with Allow) for methods SIP
defines, C{501} for methods it does not know.  Every bad request gets the
code and reason that L{validate_request} names.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.logger import Logger

from b2bua.sip.auth import DigestServer
from b2bua.sip.errors import SIPError, TransactionTimeout, TransportError
from b2bua.sip.message import KNOWN_METHODS, Request, Response, make_response
from b2bua.sip.validation import validate_request

__all__ = ["ALLOWED", "KNOWN_METHODS", "MinimalUAS"]

#: Methods this UAS answers itself.
ALLOWED = ("OPTIONS", "REGISTER", "CANCEL", "ACK")

SUPPORTED = ("path", "outbound")


def _tag(random: Callable[[int], bytes]) -> str:
    """A fresh To tag."""
    return random(8).hex()


class MinimalUAS:
    """A transaction user that answers OPTIONS and REGISTER itself.

    @param lookup_ha1: C{(username, realm, algorithm) -> HA1 or None}, the
        credential store REGISTER is checked against.
    @param digest: the L{DigestServer} issuing and checking nonces.
    @param find_cancelled: C{cancel_request -> server transaction or None}
        (the transaction layer's C{find_cancelled}); set after wiring.
    """

    log = Logger()

    def __init__(self, digest: DigestServer,
                 lookup_ha1: Callable[[str, str, str], str | None],
                 user_agent: str = "b2bua",
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.digest = digest
        self.lookup_ha1 = lookup_ha1
        self.user_agent = user_agent
        self.random = random
        self.find_cancelled: Callable[[Request], object | None] = lambda request: None
        #: counts of answers sent, by code (for tests and metrics)
        self.answered: dict[int, int] = {}

    # -- TransactionUser -------------------------------------------------

    def request_received(self, request: Request, transaction: object | None) -> None:
        """Answer a new request (ACKs without a transaction are absorbed)."""
        if transaction is None or request.method == "ACK":
            return
        try:
            validate_request(request, supported_extensions=SUPPORTED,
                             check_max_forwards=request.method != "OPTIONS")
            response = self._answer(request)
        except SIPError as error:
            response = make_response(request, error.code, error.reason,
                                     to_tag=_tag(self.random), headers=error.headers)
        self._send(transaction, response)

    def response_received(self, response: Response, source: object) -> None:
        """A stray response: a UAS that sends no requests ignores it."""

    def server_transaction_failed(
        self, transaction: object, error: TransactionTimeout | TransportError
    ) -> None:
        """Log a response that could not be delivered."""
        self.log.info("server transaction failed: {error!r}", error=error)

    # -- behaviour -------------------------------------------------------

    def _send(self, transaction: object, response: Response) -> None:
        response.headers.add("Server", self.user_agent)
        self.answered[response.code] = self.answered.get(response.code, 0) + 1
        transaction.respond(response)  # type: ignore[attr-defined]

    def _answer(self, request: Request) -> Response:
        method = request.method
        if method == "OPTIONS":
            return make_response(request, 200, to_tag=_tag(self.random), headers=[
                ("Allow", ", ".join(ALLOWED)),
                ("Accept", "application/sdp"),
                ("Accept-Encoding", "identity"),
                ("Accept-Language", "en"),
                ("Supported", ", ".join(SUPPORTED)),
            ])
        if method == "REGISTER":
            return self._register(request)
        if method == "CANCEL":
            if self.find_cancelled(request) is None:
                return make_response(request, 481, to_tag=_tag(self.random))
            return make_response(request, 200, to_tag=_tag(self.random))
        if method in KNOWN_METHODS:
            return make_response(request, 405, to_tag=_tag(self.random),
                                 headers=[("Allow", ", ".join(ALLOWED))])
        return make_response(request, 501, to_tag=_tag(self.random),
                             headers=[("Allow", ", ".join(ALLOWED))])

    def _register(self, request: Request) -> Response:
        credentials = request.headers.get("authorization")
        stale = False
        if credentials is not None:
            result = self.digest.verify("REGISTER", request.uri_text, credentials,
                                        self.lookup_ha1, request.body)
            if result.ok:
                headers = [("Contact", str(c)) for c in request.contact if not c.star]
                expires = request.expires
                if expires is not None:
                    headers.append(("Expires", str(expires)))
                return make_response(request, 200, to_tag=_tag(self.random), headers=headers)
            stale = result.stale
        challenge = [("WWW-Authenticate", value) for value in self.digest.challenge(stale=stale)]
        return make_response(request, 401, to_tag=_tag(self.random), headers=challenge)
