"""Errors that cross the SIP stack's boundaries, as types.

Exactly one place (the transaction user) turns these into final responses;
everything below it only raises.
"""

from __future__ import annotations


class ParseError(ValueError):
    """Bytes that are not a valid SIP (or SDP) message.

    @ivar reason: a short human-readable phrase naming the problem, fit to
        be used as the reason phrase of a C{400} response.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SIPError(Exception):
    """A request that must be answered with a final error response.

    @ivar code: the SIP status code (4xx, 5xx or 6xx).
    @ivar reason: the reason phrase to send.
    @ivar headers: extra header fields for the response, as (name, value).
    """

    def __init__(
        self, code: int, reason: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.headers = list(headers or [])


class TransportError(Exception):
    """A message could not be sent (no route, connection refused or lost)."""


class TransactionTimeout(Exception):
    """A client transaction ended by Timer B, F or an equivalent timeout."""
