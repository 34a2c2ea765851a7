"""Tests for L{oam.api}: the provisioning REST API over a real SQLite database."""
