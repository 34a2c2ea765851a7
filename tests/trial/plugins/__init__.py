"""Tests of the built-in feature plugins (C{plugins/})."""
