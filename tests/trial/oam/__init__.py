"""Tests for the L{oam} package: the OAM HTTP site."""
