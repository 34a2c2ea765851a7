"""The trunking collections through the generic REST API: trunks and ported
numbers created, read, listed, changed and deleted; bad networks, codecs,
failover codes and dial plans answered 422 naming the field and the item;
the rules of a trunk's authentication; who may write trunks."""

from __future__ import annotations

from typing import Any

from tests.trial.oam.api.test_crud import ApiTestCase


class TrunkApiTests(ApiTestCase):
    """C{/api/v1/trunks}, C{/api/v1/lnp_entries} and the trunking fields of
    customers and connections."""

    async def setUp(self) -> None:
        """A tenant to own the trunks."""
        await super().setUp()
        self.tenant = await self.api.build.tenant()

    def trunk(self, **values: Any) -> dict[str, Any]:
        """A trunk body of the tenant's customer."""
        return {"customer_id": self.tenant.customer_id, "name": "pbx", **values}

    async def test_crud(self) -> None:
        """Create (canonical networks), read, filter, update, delete."""
        created = await self.call("POST", "trunks", body=self.trunk(
            allowed_sources=["192.0.2.7", "2001:DB8::/32"], codecs=["PCMA", "G722"],
            max_calls=30, max_calls_in=10, max_calls_out=20, max_cps=5,
            caller_id_format={"format": "e164"}))
        self.assertEqual(created.code, 201, created.body)
        row = created.json()
        self.assertEqual(row["allowed_sources"], ["192.0.2.7/32", "2001:db8::/32"])
        self.assertEqual((row["auth_mode"], row["transport"], row["status"]),
                         ("ip", "udp", "active"))
        path = f"trunks/{row['id']}"
        self.assertEqual((await self.call("GET", path)).json(), row)
        listed = await self.call("GET", "trunks", params={"auth_mode": "ip",
                                                          "customer_id": row["customer_id"]})
        self.assertEqual([r["id"] for r in listed.json()["items"]], [row["id"]])
        changed = await self.call("PATCH", path, body={"transport": "tls", "status": "suspended"})
        self.assertEqual((changed.code, changed.json()["transport"]), (200, "tls"))
        self.assertEqual((await self.call("DELETE", path)).code, 204)

    async def test_bad_fields_are_named(self) -> None:
        """One 422 names every bad field, with the item at fault."""
        reply = await self.call("POST", "trunks", body=self.trunk(
            allowed_sources=["192.0.2.0/24", "10.0.0.9/8"], codecs=["PCMU", "pcmu"],
            auth_mode="token", caller_id_format="e164"))
        body = self.assertError(reply, 422, "validation failed")
        self.assertEqual(body["fields"], {
            "allowed_sources": "item 1: 10.0.0.9/8 has host bits set (the network is "
                               "10.0.0.0/8)",
            "auth_mode": "must be one of ip, digest, both",
            "caller_id_format": "must be a JSON object",
            "codecs": "item 1: pcmu is listed twice"})
        self.assertEqual((await self.call("GET", "trunks")).json()["total"], 0)

    async def test_auth_rules(self) -> None:
        """The rules across fields answer 422 too, naming the field."""
        reply = await self.call("POST", "trunks", body=self.trunk())
        body = self.assertError(reply, 422, "validation failed")
        self.assertEqual(set(body["fields"]), {"allowed_sources"})
        reply = await self.call("POST", "trunks", body=self.trunk(
            auth_mode="digest", account_id=self.tenant.account_id))
        body = self.assertError(reply, 422, "validation failed")
        self.assertIn("kind trunk", body["fields"]["account_id"])
        account = await self.api.build.make("account", customer_id=self.tenant.customer_id,
                                            kind="trunk")
        reply = await self.call("POST", "trunks", body=self.trunk(
            auth_mode="digest", account_id=account["id"]))
        self.assertEqual(reply.code, 201, reply.body)

    async def test_who_writes(self) -> None:
        """A reseller key creates its customer's trunk; the customer's key
        reads it and gets 403 when writing."""
        reseller = await self.api.key("reseller", self.tenant)
        customer = await self.api.key("customer", self.tenant)
        created = await self.call("POST", "trunks", key=reseller,
                                  body=self.trunk(allowed_sources=["192.0.2.1"]))
        self.assertEqual(created.code, 201, created.body)
        path = f"trunks/{created.json()['id']}"
        self.assertEqual((await self.call("GET", path, key=customer)).code, 200)
        self.assertError(await self.call("PATCH", path, key=customer, body={"max_calls": 1}),
                         403, "forbidden")
        self.assertError(await self.call("POST", "lnp_entries", key=reseller,
                                         body={"number": "+3161", "routing_prefix": "1"}),
                         403, "forbidden")

    async def test_lnp_entries(self) -> None:
        """Ported numbers: created, filtered by number, unique."""
        body = {"number": "+31612345678", "routing_prefix": "1234", "carrier": "blue"}
        created = await self.call("POST", "lnp_entries", body=body)
        self.assertEqual(created.code, 201, created.body)
        self.assertEqual({k: created.json()[k] for k in body}, body)
        found = await self.call("GET", "lnp_entries", params={"number": "+31612345678"})
        self.assertEqual(found.json()["total"], 1)
        again = await self.call("POST", "lnp_entries", body=body)
        self.assertEqual(again.code, 409)

    async def test_customer_and_connection_fields(self) -> None:
        """A dial plan must be an object; failover codes never hold 486;
        inbound sources are networks; good values are stored."""
        path = f"customers/{self.tenant.customer_id}"
        body = self.assertError(await self.call("PATCH", path, body={"dial_plan": []}), 422,
                                "validation failed")
        self.assertEqual(body["fields"], {"dial_plan": "must be a JSON object"})
        plan = await self.api.build.make("routing_plan")
        changed = await self.call("PATCH", path, body={"dial_plan": {"country_code": "31"},
                                                       "routing_plan_id": plan["id"]})
        self.assertEqual(changed.json()["routing_plan_id"], plan["id"])
        connection = await self.api.build.make("connection")
        item = f"connections/{connection['id']}"
        body = self.assertError(await self.call("PATCH", item, body={
            "failover_codes": [408, 486], "inbound_sources": ["203.0.113.1/24"]}), 422,
            "validation failed")
        self.assertEqual(set(body["fields"]), {"failover_codes", "inbound_sources"})
        changed = await self.call("PATCH", item, body={
            "failover_codes": [408, "5xx"], "inbound_sources": ["203.0.113.0/24"],
            "register": True, "registrar": "reg.carrier.example:5060", "setup_timeout": 3,
            "answer_timeout": 90, "weight": 10})
        self.assertEqual(changed.code, 200, changed.body)
        self.assertEqual((changed.json()["failover_codes"], changed.json()["weight"]),
                         ([408, "5xx"], 10))
