"""Tenant isolation through the REST API, for every entity and every role.

The world: two resellers, each with two customers; the first customer of
the first reseller has two accounts, every other customer one.  The keys
under test belong to the first account's tenant (its reseller, its
customer, the account itself).  For each key, every row of every entity
that belongs to another tenant (and every operator row) must be a plain
404 for GET, PATCH and DELETE, must never appear in a list, and must not
be reachable by a create naming it.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from b2bua.db.model import ENTITIES
from b2bua.db.scoping import may_write
from oam.api.auth import scope_of
from tests.trial.db.support import Tenant
from tests.trial.oam.api.support import ADMIN, TARIFF, Api, open_api
from tests.trial.oam.api.test_crud import API_UPDATES

ROLES = ("reseller", "customer", "enduser")
NOT_FOUND = {"error": "not found"}


class IsolationTests(TestCase):
    """No key reaches another tenant's rows."""

    timeout = 120

    async def setUp(self) -> None:
        """Build the world, the home keys and every tenant's rows."""
        self.api: Api = await open_api(self)
        build = self.api.build
        home = await build.tenant()
        sibling_account = await build.make("account", customer_id=home.customer_id)
        second = await build.make("customer", reseller_id=home.reseller_id)
        second_account = await build.make("account", customer_id=second["id"])
        other = await build.tenant()
        other_customer = await build.make("customer", reseller_id=other.reseller_id)
        other_account = await build.make("account", customer_id=other_customer["id"])
        self.home = home
        tenants = {
            "sibling account": Tenant(home.reseller_id, home.customer_id,
                                      sibling_account["id"]),
            "sibling customer": Tenant(home.reseller_id, second["id"], second_account["id"]),
            "other reseller": other,
            "other reseller's second customer": Tenant(other.reseller_id, other_customer["id"],
                                                       other_account["id"]),
        }
        #: Whose rows each role must not reach.
        self.foreign = {
            "reseller": [tenants["other reseller"],
                         tenants["other reseller's second customer"]],
            "customer": [tenants["sibling customer"], tenants["other reseller"],
                         tenants["other reseller's second customer"]],
            "enduser": list(tenants.values()),
        }
        self.keys = {role: await self.api.key(role, home) for role in ROLES}
        #: entity name -> tenant -> a row of that tenant (or an operator row).
        self.rows: dict[str, dict[Tenant, dict[str, Any]]] = {}
        for e in ENTITIES:
            extra = {"document": TARIFF} if e.name == "tariff" else {}
            self.rows[e.name] = {}
            for tenant in tenants.values():
                if e.name == "tariff":
                    row = await build.make("tariff", **extra)
                else:
                    row = await build.row_of(e.name, tenant)
                self.rows[e.name][tenant] = row

    def foreign_rows(self, role: str, name: str) -> list[dict[str, Any]]:
        """The rows of entity C{name} that C{role}'s key must not reach."""
        return [self.rows[name][t] for t in self.foreign[role]]

    async def test_rows_of_others_are_not_found(self) -> None:
        """GET, PATCH and DELETE of another tenant's row: 404 with no data
        (405 for PATCH and DELETE of immutable entities, whoever asks), and
        the row is left as it was."""
        for e in ENTITIES:
            for role in ROLES:
                for row in self.foreign_rows(role, e.name):
                    path = f"{e.collection}/{row['id']}"
                    before = await self.api.repos[e.collection].get(row["id"], ADMIN)
                    for method, body in (("GET", None), ("PATCH", API_UPDATES[e.name]),
                                         ("DELETE", None)):
                        reply = await self.api.request(method, path, key=self.keys[role],
                                                       body=body)
                        expected = 405 if e.immutable and method != "GET" else 404
                        self.assertEqual(reply.code, expected, (e.name, role, method, row))
                        if expected == 404:
                            self.assertEqual(reply.json(), NOT_FOUND)
                    after = await self.api.repos[e.collection].get(row["id"], ADMIN)
                    self.assertEqual(after, before, (e.name, role))

    async def test_lists_hold_no_other_rows(self) -> None:
        """No list of any key holds another tenant's rows, even when filtered
        by that tenant's ids (which finds only the key's own rows, if the
        ids are shared); every row listed is one the key may read."""
        for e in ENTITIES:
            owners = [f.name for f in e.fields if f.filterable
                      and f.name in ("reseller_id", "customer_id", "account_id")]
            for role in ROLES:
                key = self.keys[role]
                foreign = {row["id"] for row in self.foreign_rows(role, e.name)}
                listed = await self.api.request("GET", e.collection, key=key,
                                                params={"limit": 500})
                self.assertEqual(listed.code, 200)
                ids = {item["id"] for item in listed.json()["items"]}
                self.assertFalse(ids & foreign, (e.name, role))
                self.assertEqual(listed.json()["total"], len(ids))
                for row_id in ids:
                    got = await self.api.request("GET", f"{e.collection}/{row_id}", key=key)
                    self.assertEqual(got.code, 200)
                for tenant in self.foreign[role]:
                    for owner in owners:
                        value = getattr(tenant, owner)
                        reply = await self.api.request("GET", e.collection, key=key,
                                                       params={owner: value})
                        found = {item["id"] for item in reply.json()["items"]}
                        self.assertLessEqual(found, ids - foreign, (e.name, role, owner))
                        self.assertEqual(reply.json()["total"], len(found))

    async def test_own_rows_are_visible(self) -> None:
        """The same keys do see their own tenant's rows (the 404s above are
        not an API that shows nothing)."""
        expectations = {
            "reseller": [("resellers", self.home.reseller_id),
                         ("customers", self.home.customer_id),
                         ("accounts", self.home.account_id)],
            "customer": [("customers", self.home.customer_id),
                         ("accounts", self.home.account_id)],
            "enduser": [("accounts", self.home.account_id)],
        }
        for role, paths in expectations.items():
            for collection, row_id in paths:
                reply = await self.api.request("GET", f"{collection}/{row_id}",
                                               key=self.keys[role])
                self.assertEqual(reply.code, 200, (role, collection))

    async def test_creates_cannot_target_others(self) -> None:
        """A create naming another tenant's owner ids or rows is refused (422
        naming the field, or 403 for a role that may not write the entity),
        says nothing about the other tenant, and stores nothing."""
        for e in ENTITIES:
            for role in ROLES:
                writes = may_write(e, scope_of({"id": 0, "role": role}))
                for tenant in self.foreign[role]:
                    extra = {"document": TARIFF} if e.name == "tariff" else {}
                    body = await self.api.build.payload(e.name, tenant, **extra)
                    if e.name == "api_key":
                        body["role"] = role
                        body.update({"reseller": {"reseller_id": tenant.reseller_id,
                                                  "customer_id": None,
                                                  "account_id": None},
                                     "customer": {"account_id": None}}.get(role, {}))
                    total = (await self.api.repos[e.collection].list(ADMIN)).total
                    reply = await self.api.request("POST", e.collection, key=self.keys[role],
                                                   body=body)
                    if not writes:
                        self.assertEqual((reply.code, reply.json()),
                                         (403, {"error": "forbidden"}), (e.name, role))
                    else:
                        self.assertEqual(reply.code, 422, (e.name, role, body, reply.body))
                        fields = reply.json()["fields"]
                        self.assertTrue(set(fields.values()) <= {"not found"},
                                        (e.name, role, fields))
                    after = (await self.api.repos[e.collection].list(ADMIN)).total
                    self.assertEqual(after, total, (e.name, role))
