"""Tests for the balance stores (L{rating.stores}) and L{rating.money}."""
