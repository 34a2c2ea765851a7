"""Provisioning storage: the data model, migrations and repositories."""
