"""The RFC 3261 SIP stack: codecs, transports, transactions, dialogs, auth.

This package knows nothing of calls; it imports nothing of ours above it.
"""

from b2bua.sip.errors import ParseError, SIPError, TransactionTimeout, TransportError
from b2bua.sip.headers import CSeq, NameAddress, Via, parse_name_addr, parse_via
from b2bua.sip.message import Headers, Request, Response, make_response, parse_message
from b2bua.sip.uri import URI, Params, parse_uri

__all__ = [
    "URI",
    "CSeq",
    "Headers",
    "NameAddress",
    "Params",
    "ParseError",
    "Request",
    "Response",
    "SIPError",
    "TransactionTimeout",
    "TransportError",
    "Via",
    "make_response",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
]
