"""Tests for the media-server pieces."""
