"""Tests of the NAT layer (C{nat/}): detection, keep-alives, STUN, the plugin."""
