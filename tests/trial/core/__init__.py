"""Tests for L{b2bua.core}."""
