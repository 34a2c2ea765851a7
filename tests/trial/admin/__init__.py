"""Tests for L{b2bua.admin}: the C{b2bua-admin} command-line tool."""
