"""Fixtures shared by the storage tests: fresh databases of each dialect,
tenants, and minimal valid rows of every entity.

SQL runs in worker threads, so these tests use the real reactor (bounded by
trial's timeout).  PostgreSQL tests run when C{DATABASE_URL} is set, each
in a schema of its own that is dropped afterwards; without it they skip,
unless C{CI} is C{"true"}, where they fail.
"""

from __future__ import annotations

import itertools
import os
import uuid
from dataclasses import dataclass
from typing import Any
from unittest import SkipTest

from twisted.internet import reactor

from b2bua.db.changes import ChangeFeed
from b2bua.db.database import Database
from b2bua.db.interfaces import Scope
from b2bua.db.migrations import migrate
from b2bua.db.model import entity
from b2bua.db.repository import Repository, repositories

ADMIN = Scope.admin("test")
SECRET = b"test-pin-secret-0123456789abcdef"
DIALECTS = ("sqlite", "postgresql")


def postgresql_url(testcase: Any) -> str:
    """C{DATABASE_URL}, or skip (fail under CI) when it is unset."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    if os.environ.get("CI") == "true":
        testcase.fail("DATABASE_URL is not set: CI must run the PostgreSQL storage suite")
    raise SkipTest("set DATABASE_URL=postgresql://USER@HOST:5432/DB (and start PostgreSQL) "
                   "to run the PostgreSQL storage suite")


def with_schema(url: str, schema: str) -> str:
    """C{url} with its sessions' search_path set to C{schema}."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


def _admin_sql(url: str, statement: str) -> None:
    """Run one statement on a short-lived autocommit connection."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(statement)


def database_url(testcase: Any, dialect: str) -> str:
    """A URL to a fresh, empty database of C{dialect} (removed after the test)."""
    if dialect == "sqlite":
        return f"sqlite:///{os.path.abspath(testcase.mktemp())}.db"
    url = postgresql_url(testcase)
    schema = f"b2bua_test_{uuid.uuid4().hex[:12]}"
    _admin_sql(url, f"CREATE SCHEMA {schema}")
    testcase.addCleanup(_admin_sql, url, f"DROP SCHEMA {schema} CASCADE")
    return with_schema(url, schema)


async def open_database(testcase: Any, dialect: str, *, migrated: bool = True,
                        url: str | None = None) -> Database:
    """Open a fresh database (migrated unless told otherwise), closed after the test."""
    database = Database(url or database_url(testcase, dialect), reactor)
    testcase.addCleanup(database.close)
    if migrated:
        await migrate(database)
    return database


@dataclass(frozen=True)
class Tenant:
    """A reseller, one of its customers and one of that customer's accounts."""

    reseller_id: int
    customer_id: int
    account_id: int

    def scope(self, role: str) -> Scope:
        """This tenant's key of C{role} (C{reseller}, C{customer}, C{enduser})."""
        if role == "reseller":
            return Scope("reseller", reseller_id=self.reseller_id, actor="reseller-key")
        if role == "customer":
            return Scope("customer", customer_id=self.customer_id, actor="customer-key")
        return Scope("enduser", customer_id=self.customer_id, account_id=self.account_id,
                     actor="enduser-key")


def sample(name: str, n: int) -> dict[str, Any]:
    """The required non-ref values of a minimal valid C{name}, unique by C{n}."""
    return {
        "reseller": {"name": f"reseller {n}"},
        "customer": {"name": f"customer {n}", "sip_domain": f"c{n}.example.com",
                     "currency": "EUR"},
        "account": {"number": f"{1000 + n}", "sip_username": f"user{n}",
                    "password": f"pw-{n}-secret"},
        "did": {"number": f"+3120{n:07d}"},
        "product": {"name": f"product {n}", "currency": "EUR"},
        "subscription": {"starts_on": "2024-01-01"},
        "tariff": {"name": f"tariff {n}", "currency": "EUR", "document": {"rates": []}},
        "vendor": {"name": f"vendor {n}"},
        "connection": {"name": f"trunk {n}", "address": "192.0.2.1:5060"},
        "routing_plan": {"name": f"plan {n}"},
        "trunk": {"name": f"pbx {n}", "allowed_sources": [f"198.51.100.{n % 256}"]},
        "lnp_entry": {"number": f"+3161{n:07d}", "routing_prefix": "1234"},
        "distributor": {"name": f"distributor {n}"},
        "card_batch": {"name": f"batch {n}", "currency": "EUR", "face_value": "10.00"},
        "card": {"serial": f"S{n:08d}", "pin": f"{n:08d}"},
        "cdr": {"call_id": f"call-{n}@example.com", "started_at": "2024-01-01T00:00:00Z"},
        "ledger_entry": {"kind": "topup", "amount": "5.00", "currency": "EUR"},
        "invoice": {"period_start": "2024-01-01", "period_end": "2024-01-31",
                    "currency": "EUR"},
        "audit_record": {"actor": "test", "action": "create", "entity": "thing",
                         "entity_id": n},
        "api_key": {"name": f"key {n}", "role": "admin"},
    }[name]


#: A harmless change per entity, for update tests.
UPDATES: dict[str, dict[str, Any]] = {
    "reseller": {"status": "suspended"}, "customer": {"name": "renamed"},
    "account": {"caller_id_name": "Renamed"}, "did": {"target": "42"},
    "product": {"fee_per_line": "1.50"}, "subscription": {"quantity": 3},
    "tariff": {"document": {"rates": [1]}}, "vendor": {"status": "suspended"},
    "connection": {"max_calls": 10}, "routing_plan": {"strategy": "priority"},
    "trunk": {"max_calls": 10}, "lnp_entry": {"routing_prefix": "D042"},
    "distributor": {"commission_pct": "2.5"}, "card_batch": {"name": "renamed"},
    "card": {"status": "suspended"}, "cdr": {"billsec": 3},
    "ledger_entry": {"reference": "x"}, "invoice": {"status": "issued"},
    "audit_record": {"actor": "x"}, "api_key": {"name": "renamed"},
}


class Builder:
    """Makes valid rows (and their parents) through the repositories."""

    def __init__(self, repos: dict[str, Repository]) -> None:
        self.repos = repos
        self._counter = itertools.count(1)

    def repo(self, name: str) -> Repository:
        """The repository of entity C{name}."""
        return self.repos[entity(name).collection]

    async def payload(self, name: str, tenant: Tenant | None = None, /,
                      **overrides: Any) -> dict[str, Any]:
        """A minimal valid create payload for C{name}, parents made by admin.

        With a C{tenant}, owner columns are that tenant's and parents are
        made inside it (an API key becomes the tenant's end-user key).
        """
        e = entity(name)
        values = sample(name, next(self._counter))
        fields = {f.name: f for f in e.fields}
        if tenant is not None:
            if (e.scope == "reseller" or name == "customer") and fields.get(
                    "reseller_id") and fields["reseller_id"].writable:
                values["reseller_id"] = tenant.reseller_id
            if "customer_id" in fields:
                values["customer_id"] = tenant.customer_id
            if "account_id" in fields and name != "trunk":
                # (a trunk's account is of kind trunk, not the tenant's extension)
                values["account_id"] = tenant.account_id
            if name == "api_key":
                values["role"] = "enduser"
        for f in e.fields:
            if f.type == "ref" and f.required and f.name not in {**values, **overrides}:
                values[f.name] = (await self.make(f.ref or "", tenant))["id"]
        values.update(overrides)
        return values

    async def make(self, name: str, tenant: Tenant | None = None, /, scope: Scope = ADMIN,
                   **overrides: Any) -> dict[str, Any]:
        """Create a minimal valid C{name} and return the stored row."""
        values = await self.payload(name, tenant, **overrides)
        return await self.repo(name).create(values, scope)

    async def tenant(self) -> Tenant:
        """A new reseller with a customer and an account."""
        reseller = await self.make("reseller")
        customer = await self.make("customer", reseller_id=reseller["id"])
        account = await self.make("account", customer_id=customer["id"])
        return Tenant(reseller["id"], customer["id"], account["id"])

    async def row_of(self, name: str, tenant: Tenant) -> dict[str, Any]:
        """A row of C{name} belonging to C{tenant} (its own row for the
        reseller, customer and account entities; a new admin row for global
        entities)."""
        own = {"reseller": tenant.reseller_id, "customer": tenant.customer_id,
               "account": tenant.account_id}
        if name in own:
            return await self.repo(name).get(own[name], ADMIN)
        if entity(name).scope == "global":
            return await self.make(name)
        return await self.make(name, tenant)


def stack(database: Database) -> tuple[dict[str, Repository], ChangeFeed, Builder]:
    """Repositories on C{database}, their change feed and a builder."""
    feed = ChangeFeed()
    repos = repositories(database, feed, SECRET)
    return repos, feed, Builder(repos)
