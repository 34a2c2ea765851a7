"""Tests for the media package: RTP relay, latching, port pool, backends."""
