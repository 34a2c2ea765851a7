"""Tests for L{b2bua.db}: validation, migrations, repositories, change feed."""
