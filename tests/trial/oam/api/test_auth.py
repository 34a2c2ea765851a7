"""Bearer keys (L{oam.api.auth}) and what each role may do: 401, 403, 404."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from oam.api.auth import scope_of
from tests.trial.oam.api.support import ADMIN, TARIFF, Api, Reply, open_api

UNAUTHORIZED = {"error": "unauthorized"}


class AuthTestCase(TestCase):
    """A tenant (reseller, customer, account) and keys of every role."""

    timeout = 60

    async def setUp(self) -> None:
        """Open the API, make a tenant and one key per role."""
        self.api: Api = await open_api(self)
        self.tenant = await self.api.build.tenant()
        self.keys = {"admin": await self.api.key("admin")}
        for role in ("reseller", "customer", "enduser"):
            self.keys[role] = await self.api.key(role, self.tenant)

    def assertUnauthorized(self, reply: Reply) -> None:
        """The one answer to every credential problem."""
        self.assertEqual(reply.code, 401)
        self.assertEqual(reply.header("WWW-Authenticate"), "Bearer")
        self.assertEqual(reply.json(), UNAUTHORIZED)

    async def status(self, method: str, path: str, role: str, body: object = None) -> int:
        """The status C{role}'s key gets."""
        reply = await self.api.request(method, path, key=self.keys[role], body=body)
        return reply.code


class CredentialTests(AuthTestCase):
    """What counts as a credential."""

    async def test_missing(self) -> None:
        """No Authorization header: 401 with WWW-Authenticate: Bearer."""
        self.assertUnauthorized(await self.api.request("GET", "accounts"))
        self.assertUnauthorized(await self.api.request("POST", "vendors", body={"name": "v"}))
        self.assertUnauthorized(await self.api.request("GET", "accounts/1"))

    async def test_malformed(self) -> None:
        """Other schemes, no token, extra words, unknown keys: the same 401."""
        key = self.keys["admin"]
        for value in (f"Basic {key}", "Bearer", f"Bearer {key} extra", f"Token {key}",
                      "Bearer b2k_unknown", "Bearer " + "x" * 500, f"Bearer  {key}x"):
            reply = await self.api.request("GET", "vendors", headers={"Authorization": value})
            self.assertUnauthorized(reply)

    async def test_scheme_case(self) -> None:
        """The scheme is case-insensitive."""
        reply = await self.api.request(
            "GET", "vendors", headers={"Authorization": f"bEaReR {self.keys['admin']}"})
        self.assertEqual(reply.code, 200)

    async def test_revoked(self) -> None:
        """A revoked key is refused from then on; so is a deleted one."""
        rows = (await self.api.repos["api_keys"].list(ADMIN, {"role": "customer"})).rows
        reply = await self.api.request("PATCH", f"api_keys/{rows[0]['id']}",
                                       key=self.keys["admin"], body={"revoked": True})
        self.assertEqual(reply.code, 200)
        self.assertUnauthorized(await self.api.request("GET", "accounts",
                                                       key=self.keys["customer"]))
        rows = (await self.api.repos["api_keys"].list(ADMIN, {"role": "enduser"})).rows
        await self.api.repos["api_keys"].delete(rows[0]["id"], ADMIN)
        self.assertUnauthorized(await self.api.request("GET", "accounts",
                                                       key=self.keys["enduser"]))

    async def test_inactive_owners(self) -> None:
        """Keys of a suspended or closed customer (or reseller, or account)
        are refused; they work again once it is active."""
        customers = self.api.repos["customers"]
        for status in ("suspended", "closed"):
            await customers.update(self.tenant.customer_id, {"status": status}, ADMIN)
            for role in ("customer", "enduser"):
                self.assertUnauthorized(await self.api.request("GET", "accounts",
                                                               key=self.keys[role]))
            self.assertEqual(await self.status("GET", "accounts", "reseller"), 200)
        await customers.update(self.tenant.customer_id, {"status": "active"}, ADMIN)
        self.assertEqual(await self.status("GET", "accounts", "customer"), 200)
        await self.api.repos["accounts"].update(self.tenant.account_id,
                                                {"status": "suspended"}, ADMIN)
        self.assertUnauthorized(await self.api.request("GET", "accounts",
                                                       key=self.keys["enduser"]))
        self.assertEqual(await self.status("GET", "accounts", "customer"), 200)
        await self.api.repos["resellers"].update(self.tenant.reseller_id,
                                                 {"status": "closed"}, ADMIN)
        self.assertUnauthorized(await self.api.request("GET", "customers",
                                                       key=self.keys["reseller"]))

    async def test_document_is_public(self) -> None:
        """The OpenAPI document needs no key."""
        reply = await self.api.request("GET", "openapi.json")
        self.assertEqual(reply.code, 200)

    async def test_scope_of_a_key(self) -> None:
        """A key row becomes the scope of its role and owners, acting as key:<id>."""
        scope = scope_of({"id": 7, "role": "enduser", "reseller_id": None, "customer_id": 2,
                          "account_id": 3})
        self.assertEqual((scope.role, scope.customer_id, scope.account_id, scope.actor),
                         ("enduser", 2, 3, "key:7"))


class RoleTests(AuthTestCase):
    """403 when a role may not write an entity; 404 when it may not see the row."""

    async def test_writes_refused_with_403(self) -> None:
        """Creating what the role may never write is 403, whatever the body."""
        for role, collection in (("reseller", "tariffs"), ("reseller", "vendors"),
                                 ("customer", "dids"), ("customer", "customers"),
                                 ("enduser", "accounts"), ("reseller", "cdrs"),
                                 ("customer", "tariffs/import")):
            reply = await self.api.request("POST", collection, key=self.keys[role],
                                           body={"nonsense": True})
            self.assertEqual(reply.json(), {"error": "forbidden"}, (role, collection))
            self.assertEqual(reply.code, 403)

    async def test_visible_row_403(self) -> None:
        """Changing a row the role sees but may not write is 403."""
        customer = f"customers/{self.tenant.customer_id}"
        self.assertEqual(await self.status("GET", customer, "customer"), 200)
        self.assertEqual(await self.status("PATCH", customer, "customer", {"name": "x"}), 403)
        self.assertEqual(await self.status("DELETE", customer, "customer"), 403)
        account = f"accounts/{self.tenant.account_id}"
        self.assertEqual(await self.status("PATCH", account, "enduser", {}), 403)

    async def test_invisible_row_404(self) -> None:
        """A row the role cannot see is 404 for every method, writable or not."""
        tariff = await self.api.build.make("tariff", document=TARIFF)
        path = f"tariffs/{tariff['id']}"
        for role in ("reseller", "customer", "enduser"):
            for method in ("GET", "PATCH", "DELETE"):
                reply = await self.api.request(method, path, key=self.keys[role], body={})
                self.assertEqual((reply.code, reply.json()), (404, {"error": "not found"}))
        self.assertEqual(await self.status("GET", path, "admin"), 200)

    async def test_role_writes(self) -> None:
        """Each role writes what it may, within its own tenant."""
        did = await self.api.request("POST", "dids", key=self.keys["reseller"], body={
            "number": "+3120555", "customer_id": self.tenant.customer_id})
        self.assertEqual(did.code, 201, did.body)
        account = await self.api.request("POST", "accounts", key=self.keys["customer"], body={
            "number": "2000", "sip_username": "alice", "password": "a-secret"})
        self.assertEqual(account.code, 201, account.body)
        self.assertEqual(account.json()["customer_id"], self.tenant.customer_id)
        key = await self.api.request("POST", "api_keys", key=self.keys["enduser"], body={
            "name": "phone app", "role": "enduser"})
        self.assertEqual(key.code, 201, key.body)
        self.assertEqual(key.json()["account_id"], self.tenant.account_id)
        stronger = await self.api.request("POST", "api_keys", key=self.keys["enduser"], body={
            "name": "escalate", "role": "customer"})
        self.assertEqual(stronger.code, 422)
        self.assertIn("role", stronger.json()["fields"])

    async def test_global_lists_are_empty(self) -> None:
        """Operator data lists empty for tenants (their rows are invisible)."""
        await self.api.build.make("vendor")
        for role in ("reseller", "customer", "enduser"):
            reply = await self.api.request("GET", "vendors", key=self.keys[role])
            self.assertEqual(reply.json()["items"], [])
