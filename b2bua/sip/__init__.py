"""The RFC 3261 SIP stack: codecs, transports, transactions, dialogs, auth.

This package knows nothing of calls; it imports nothing of ours above it.
"""

from b2bua.sip.errors import ParseError, SIPError, TransactionTimeout, TransportError

__all__ = ["ParseError", "SIPError", "TransactionTimeout", "TransportError"]
