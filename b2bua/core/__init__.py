"""The B2BUA core: calls, legs, registrar, routing (built on b2bua.sip)."""
