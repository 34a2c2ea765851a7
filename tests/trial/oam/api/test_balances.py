"""Balances over the REST API (L{oam.api.balances}): reading a tenant's
balance, topping it up (store, ledger, live calls), who may, and failures.

A real SQLite database and API site, a L{MemoryBalanceStore} on the real
reactor, and a fake of the live sessions that records what it is told.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import TestCase

from oam.api import make_api, mount
from oam.api.balances import BalanceAccess
from oam.site import OAMSite
from rating.stores.memory import MemoryBalanceStore
from tests.trial.db.support import Tenant
from tests.trial.oam.api.support import ADMIN, VERSION, Api, Reply, open_api


class RecordingSessions:
    """The live sessions: remembers each C{balance_changed(account)}."""

    def __init__(self, broken: bool = False) -> None:
        self.accounts: list[str] = []
        self.broken = broken

    def balance_changed(self, account: str) -> Deferred[None]:
        """Record C{account}; fail when broken."""
        self.accounts.append(account)
        if self.broken:
            return fail(RuntimeError("the charging plugin is not configured"))
        return succeed(None)


class FlakyStore(MemoryBalanceStore):
    """A memory store whose operations fail while C{down}."""

    down = False

    def get_balance(self, account: str) -> Deferred[Any]:
        """Fail while down."""
        if self.down:
            return fail(ConnectionError("redis is gone"))
        return super().get_balance(account)

    def top_up(self, account: str, amount: Decimal, reference: str) -> Deferred[Any]:
        """Fail while down."""
        if self.down:
            return fail(ConnectionError("redis is gone"))
        return super().top_up(account, amount, reference)


class BalanceTestCase(TestCase):
    """Two tenants, the API with balances, keys of every role."""

    timeout = 60

    async def setUp(self) -> None:
        """Open the API, mount it again with balances, make the tenants."""
        api = await open_api(self)
        self.store = FlakyStore(reactor)
        self.sessions = RecordingSessions()
        self.access = BalanceAccess(self.store, self.sessions)
        site = OAMSite(api.metrics, lambda: True, lambda: None, lambda: False, VERSION)
        self.root = make_api(api.repos, api.database, site.report_error, version=VERSION,
                             balances=self.access)
        mount(site, self.root)
        self.api: Api = dataclasses.replace(api, site=site, client=StubTreq(site.resource))
        self.home: Tenant = await self.api.build.tenant()
        self.other: Tenant = await self.api.build.tenant()
        self.customer = await self.api.repos["customers"].get(self.home.customer_id, ADMIN)
        self.account = f"customer:{self.customer['sip_domain']}"
        self.admin = await self.api.key("admin")

    async def read(self, customer_id: Any, key: str) -> Reply:
        """GET the balance of C{customer_id}."""
        return await self.api.request("GET", f"balances/customers/{customer_id}", key=key)

    async def top_up(self, customer_id: Any, key: str, body: Any) -> Reply:
        """POST a top-up of C{customer_id}."""
        return await self.api.request("POST", f"balances/customers/{customer_id}/topup",
                                      key=key, body=body)

    async def ledger(self, customer_id: int) -> list[dict[str, Any]]:
        """The customer's ledger rows."""
        page = await self.api.repos["ledger"].list(ADMIN, {"customer_id": customer_id})
        return list(page.rows)


class ReadTests(BalanceTestCase):
    """C{GET /balances/customers/{id}}."""

    async def test_read(self) -> None:
        """The store's balance of C{customer:<sip_domain>}, amounts as strings."""
        await self.store.top_up(self.account, Decimal("12.5"), "seed")
        await self.store.set_credit_limit(self.account, Decimal("3"))
        reply = await self.read(self.home.customer_id, self.admin)
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual(reply.json(), {
            "customer_id": self.home.customer_id, "account": self.account,
            "balance": "12.500000", "credit_limit": "3.000000", "held": "0.000000",
            "available": "15.500000", "currency": "EUR"})

    async def test_unknown_account(self) -> None:
        """A customer never topped up reads zeros (no exponent notation)."""
        answer = (await self.read(self.home.customer_id, self.admin)).json()
        self.assertEqual((answer["balance"], answer["available"]), ("0.000000", "0.000000"))

    async def test_roles(self) -> None:
        """Reseller and customer keys read their own; end-user keys never."""
        for role in ("reseller", "customer"):
            key = await self.api.key(role, self.home)
            reply = await self.read(self.home.customer_id, key)
            self.assertEqual(reply.code, 200, (role, reply.body))
        enduser = await self.api.key("enduser", self.home)
        reply = await self.read(self.home.customer_id, enduser)
        self.assertEqual((reply.code, reply.json()), (403, {"error": "forbidden"}))

    async def test_isolation(self) -> None:
        """Another tenant's customer (or one that does not exist, or a bad
        id) is a plain 404 for reseller and customer keys."""
        for role in ("reseller", "customer"):
            key = await self.api.key(role, self.home)
            for ident in (self.other.customer_id, 999999, "abc", 0):
                reply = await self.read(ident, key)
                self.assertEqual((reply.code, reply.json()), (404, {"error": "not found"}),
                                 (role, ident))

    async def test_no_key(self) -> None:
        """No key: 401."""
        reply = await self.api.request("GET", f"balances/customers/{self.home.customer_id}")
        self.assertEqual(reply.code, 401)

    async def test_store_down(self) -> None:
        """A failing store is 503."""
        self.store.down = True
        reply = await self.read(self.home.customer_id, self.admin)
        self.assertEqual(reply.code, 503, reply.body)
        self.assertEqual(reply.header("Retry-After"), "5")
        self.assertEqual(self.api.errors(), 0)
        self.flushLoggedErrors(ConnectionError)

    async def test_paths(self) -> None:
        """The parents and unknown children are 404; POST on the balance is 405."""
        for path in ("balances", "balances/customers", "balances/other",
                     f"balances/customers/{self.home.customer_id}/nope",
                     f"balances/customers/{self.home.customer_id}/topup/x"):
            reply = await self.api.request("GET", path, key=self.admin)
            self.assertEqual(reply.code, 404, path)
        reply = await self.api.request("POST", f"balances/customers/{self.home.customer_id}",
                                       key=self.admin, body={})
        self.assertEqual(reply.code, 405)
        reply = await self.api.request(
            "GET", f"balances/customers/{self.home.customer_id}/topup", key=self.admin)
        self.assertEqual(reply.code, 405)


class TopUpTests(BalanceTestCase):
    """C{POST /balances/customers/{id}/topup}."""

    async def test_top_up(self) -> None:
        """The balance grows, a ledger row is written, the live calls are told."""
        reply = await self.top_up(self.home.customer_id, self.admin,
                                  {"amount": "10.50", "reference": "pay-1"})
        self.assertEqual(reply.code, 200, reply.body)
        answer = reply.json()
        self.assertEqual((answer["balance"], answer["available"], answer["repeated"]),
                         ("10.500000", "10.500000", False))
        self.assertEqual(answer["account"], self.account)
        self.assertEqual((await self.store.get_balance(self.account)).balance,
                         Decimal("10.5"))
        rows = await self.ledger(self.home.customer_id)
        self.assertEqual(len(rows), 1)
        row = rows[0]
        self.assertEqual((row["kind"], Decimal(row["amount"]), row["currency"],
                          row["reference"], row["customer_id"]),
                         ("topup", Decimal("10.50"), "EUR", "pay-1", self.home.customer_id))
        self.assertEqual(self.sessions.accounts, [self.account])

    async def test_repeated(self) -> None:
        """The same reference again credits nothing and writes no row: 200,
        repeated; another reference credits again."""
        body = {"amount": "5", "reference": "pay-2"}
        first = await self.top_up(self.home.customer_id, self.admin, body)
        again = await self.top_up(self.home.customer_id, self.admin, body)
        self.assertEqual((first.code, again.code), (200, 200))
        self.assertFalse(first.json()["repeated"])
        self.assertTrue(again.json()["repeated"])
        self.assertEqual(again.json()["balance"], "5.000000")
        self.assertEqual(len(await self.ledger(self.home.customer_id)), 1)
        third = await self.top_up(self.home.customer_id, self.admin,
                                  {"amount": "1", "reference": "pay-3"})
        self.assertEqual(third.json()["balance"], "6.000000")
        self.assertEqual(len(await self.ledger(self.home.customer_id)), 2)

    async def test_retry_writes_missing_ledger_row(self) -> None:
        """A top-up the store has but the ledger missed (a failure in between)
        gets its row when retried, credited once."""
        await self.store.top_up(self.account, Decimal("7"), "pay-4")
        reply = await self.top_up(self.home.customer_id, self.admin,
                                  {"amount": "7", "reference": "pay-4"})
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual((reply.json()["balance"], reply.json()["repeated"]),
                         ("7.000000", False))
        self.assertEqual(len(await self.ledger(self.home.customer_id)), 1)

    async def test_reseller(self) -> None:
        """A reseller tops up its own customers, not another reseller's."""
        key = await self.api.key("reseller", self.home)
        reply = await self.top_up(self.home.customer_id, key,
                                  {"amount": "2", "reference": "r-1"})
        self.assertEqual(reply.code, 200, reply.body)
        reply = await self.top_up(self.other.customer_id, key,
                                  {"amount": "2", "reference": "r-2"})
        self.assertEqual((reply.code, reply.json()), (404, {"error": "not found"}))
        row = await self.api.repos["customers"].get(self.other.customer_id, ADMIN)
        other = f"customer:{row['sip_domain']}"
        self.assertEqual((await self.store.get_balance(other)).balance, 0)
        self.assertEqual(await self.ledger(self.other.customer_id), [])

    async def test_forbidden_roles(self) -> None:
        """Customer and end-user keys may never top up: 403, nothing credited."""
        for role in ("customer", "enduser"):
            key = await self.api.key(role, self.home)
            reply = await self.top_up(self.home.customer_id, key,
                                      {"amount": "2", "reference": f"{role}-1"})
            self.assertEqual((reply.code, reply.json()), (403, {"error": "forbidden"}), role)
        self.assertEqual((await self.store.get_balance(self.account)).balance, 0)
        self.assertEqual(self.sessions.accounts, [])

    async def test_validation(self) -> None:
        """Bad bodies are 422 naming each bad field."""
        cases: list[tuple[Any, set[str]]] = [
            ({}, {"amount", "reference"}),
            ({"amount": 10, "reference": "x"}, {"amount"}),
            ({"amount": "0", "reference": "x"}, {"amount"}),
            ({"amount": "-1", "reference": "x"}, {"amount"}),
            ({"amount": "1.0000001", "reference": "x"}, {"amount"}),
            ({"amount": "1e3", "reference": "x"}, {"amount"}),
            ({"amount": "99999999999", "reference": "x"}, {"amount"}),
            ({"amount": "1", "reference": ""}, {"reference"}),
            ({"amount": "1", "reference": "x" * 129}, {"reference"}),
            ({"amount": "1", "reference": "a\nb"}, {"reference"}),
            ({"amount": "1", "reference": "x", "note": "hi"}, {"note"}),
            ([1], {"body"}),
        ]
        for body, fields in cases:
            reply = await self.top_up(self.home.customer_id, self.admin, body)
            self.assertEqual(reply.code, 422, (body, reply.body))
            answer = reply.json()
            self.assertEqual(answer["error"], "validation failed")
            self.assertEqual(set(answer["fields"]), fields, body)
        reply = await self.top_up(self.home.customer_id, self.admin,
                                  {"amount": "1", "reference": "x" * 128})
        self.assertEqual(reply.code, 200, reply.body)

    async def test_store_limit(self) -> None:
        """A top-up the store refuses (the balance would exceed its maximum)
        is a 422 on amount; nothing is written."""
        await self.store.top_up(self.account, Decimal("999999999"), "big")
        reply = await self.top_up(self.home.customer_id, self.admin,
                                  {"amount": "2", "reference": "more"})
        self.assertEqual(reply.code, 422, reply.body)
        self.assertEqual(set(reply.json()["fields"]), {"amount"})
        self.assertEqual(await self.ledger(self.home.customer_id), [])

    async def test_store_down(self) -> None:
        """A failing store is 503: no ledger row, no session told."""
        self.store.down = True
        reply = await self.top_up(self.home.customer_id, self.admin,
                                  {"amount": "2", "reference": "down-1"})
        self.assertEqual(reply.code, 503, reply.body)
        self.assertEqual(await self.ledger(self.home.customer_id), [])
        self.assertEqual(self.sessions.accounts, [])
        self.flushLoggedErrors(ConnectionError)

    async def test_sessions_failure_is_not_fatal(self) -> None:
        """The money is in even when the live calls cannot be told."""
        self.sessions.broken = True
        reply = await self.top_up(self.home.customer_id, self.admin,
                                  {"amount": "3", "reference": "s-1"})
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual(self.sessions.accounts, [self.account])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class WiringTests(BalanceTestCase):
    """make_api with and without balances; the document."""

    async def test_without_sessions(self) -> None:
        """Without sessions a top-up only credits and writes the ledger."""
        access = BalanceAccess(self.store)
        root = make_api(self.api.repos, self.api.database, lambda *args: None,
                        version=VERSION, balances=access)
        site = OAMSite(self.api.metrics, lambda: True, lambda: None, lambda: False, VERSION)
        mount(site, root)
        api = dataclasses.replace(self.api, site=site, client=StubTreq(site.resource))
        reply = await api.request("POST", f"balances/customers/{self.home.customer_id}/topup",
                                  key=self.admin, body={"amount": "1", "reference": "n-1"})
        self.assertEqual(reply.code, 200, reply.body)

    async def test_document(self) -> None:
        """Both paths (and their schemas) are documented only when served."""
        document = self.root.children[b"openapi.json"].document
        self.assertEqual(set(document["paths"]["/balances/customers/{id}"]), {"get"})
        self.assertEqual(set(document["paths"]["/balances/customers/{id}/topup"]), {"post"})
        self.assertIn("TopUpRequest", document["components"]["schemas"])
        plain = make_api(self.api.repos, self.api.database, lambda *args: None,
                         version=VERSION)
        self.assertNotIn(b"balances", plain.children)
        self.assertFalse([p for p in plain.children[b"openapi.json"].document["paths"]
                          if p.startswith("/balances")])

    def test_store_checked(self) -> None:
        """A store that does not provide IBalanceStore is refused."""
        with self.assertRaises(TypeError):
            BalanceAccess(object())
