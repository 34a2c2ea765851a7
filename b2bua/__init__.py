"""A carrier-grade SIP back-to-back user agent on Twisted."""

__version__ = "0.1.0.dev0"
