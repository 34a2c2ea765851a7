"""The provisioning data of SIP trunking: the JSON shapes
(L{b2bua.db.shapes}), the rules across a trunk's fields
(L{b2bua.db.rules}), migration 0002 (an upgrade of a database holding
0001 rows, on SQLite always and on PostgreSQL with C{DATABASE_URL}), the
trunk, connection, customer and LNP rows through the repositories, and what
the live snapshot loads of them."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase

from b2bua.core.directory import Directory
from b2bua.db import migrations
from b2bua.db.interfaces import Conflict, NotFound, ValidationFailed
from b2bua.db.model import DID_TARGET_KINDS, ENTITIES, TRUNK_AUTH_MODES, entity
from b2bua.db.repository import load_directory_rows
from b2bua.db.rules import row_errors, trunk_errors
from b2bua.db.scoping import Forbidden
from b2bua.db.shapes import MAX_NETWORKS, SHAPES, check_shape, json_schema
from b2bua.db.validation import validate
from tests.trial.db.support import ADMIN, open_database, stack

TRUNK = entity("trunk")
CONNECTION = entity("connection")


class ShapeTests(SynchronousTestCase):
    """L{check_shape}: each shape's values, and a clear message for the rest."""

    def refused(self, shape: str, value: Any) -> str:
        """The message C{value} is refused with."""
        return str(self.assertRaises(ValueError, check_shape, shape, value))

    def test_networks_are_canonical(self) -> None:
        """Addresses become /32 or /128 networks; IPv6 is written in lower
        case, compressed; the order is kept."""
        self.assertEqual(check_shape("networks", ["192.0.2.7", "198.51.100.0/24",
                                                  "2001:DB8:0:0::/64", "2001:db8::1"]),
                         ["192.0.2.7/32", "198.51.100.0/24", "2001:db8::/64",
                          "2001:db8::1/128"])
        self.assertEqual(check_shape("networks", []), [])

    def test_bad_networks(self) -> None:
        """Each kind of bad network is named, with its position."""
        self.assertEqual(self.refused("networks", ["192.0.2.0/24", "10.0.0.5/24"]),
                         "item 1: 10.0.0.5/24 has host bits set (the network is 10.0.0.0/24)")
        self.assertEqual(self.refused("networks", ["pbx.example.com"]),
                         "item 0: 'pbx.example.com' is not an IP address or CIDR network")
        self.assertIn("not an IP address", self.refused("networks", ["192.0.2.1/33"]))
        self.assertIn("not an IP address", self.refused("networks", [" 192.0.2.1"]))
        self.assertIn("would match every address", self.refused("networks", ["0.0.0.0/0"]))
        self.assertIn("would match every address", self.refused("networks", ["::/0"]))
        self.assertIn("interface zone", self.refused("networks", ["fe80::1%eth0"]))
        self.assertIn("write it as IPv4 (192.0.2.1)",
                      self.refused("networks", ["::ffff:192.0.2.1"]))
        self.assertEqual(self.refused("networks", ["192.0.2.1", "192.0.2.1/32"]),
                         "item 1: 192.0.2.1/32 is listed twice")
        self.assertEqual(self.refused("networks", [7]), "item 0: is not text")
        self.assertEqual(self.refused("networks", "192.0.2.1"),
                         "must be a list of IP addresses or CIDR networks")
        self.assertIn(str(MAX_NETWORKS), self.refused(
            "networks", [f"10.{n // 256}.{n % 256}.0/24" for n in range(MAX_NETWORKS + 1)]))

    def test_codecs(self) -> None:
        """Codec names as SDP writes them, once each whatever their case."""
        names = ["PCMU", "PCMA", "G722", "G729", "opus", "telephone-event", "AMR-WB"]
        self.assertEqual(check_shape("codecs", names), names)
        self.assertIn("item 1: 'G 729'", self.refused("codecs", ["PCMU", "G 729"]))
        self.assertIn("not a codec name", self.refused("codecs", [""]))
        self.assertEqual(self.refused("codecs", ["PCMU", "pcmu"]), "item 1: pcmu is listed twice")
        self.assertEqual(self.refused("codecs", {"PCMU": 0}), "must be a list of codec names")

    def test_sip_codes(self) -> None:
        """Final codes 300-699 and classes; 486 and 603 never fail over."""
        self.assertEqual(check_shape("sip_codes", [408, 480, "5xx", 302, 699]),
                         [408, 480, "5xx", 302, 699])
        for bad in (200, 700, "5XX", "7xx", True, 408.0, "408"):
            self.assertIn("not a final SIP response code", self.refused("sip_codes", [bad]),
                          bad)
        for code in (486, 603):
            self.assertIn("never fails over", self.refused("sip_codes", [code]))
        self.assertEqual(self.refused("sip_codes", ["5xx", "5xx"]),
                         "item 1: 5xx is listed twice")

    def test_object(self) -> None:
        """An object, any content; anything else is refused."""
        self.assertEqual(check_shape("object", {"rules": [1]}), {"rules": [1]})
        for bad in ([], "x", 1, None):
            self.assertEqual(self.refused("object", bad), "must be a JSON object")

    def test_every_shape_has_a_schema(self) -> None:
        """Each shape has a JSON Schema (a copy the caller may change)."""
        for shape in SHAPES:
            schema = json_schema(shape)
            schema["changed"] = True
            self.assertNotIn("changed", json_schema(shape))
        self.assertRaises(KeyError, check_shape, "color", [])

    def test_model_names_known_shapes(self) -> None:
        """Every shaped field of the model is JSON and names a shape."""
        shaped = [(e.name, f.name) for e in ENTITIES for f in e.fields if f.shape]
        self.assertIn(("trunk", "allowed_sources"), shaped)
        self.assertIn(("connection", "inbound_sources"), shaped)
        for e in ENTITIES:
            for f in e.fields:
                if f.shape:
                    self.assertEqual(f.type, "json")
                    self.assertIn(f.shape, SHAPES)


class ValidationTests(SynchronousTestCase):
    """L{validate} applies the shapes, names every bad field, fills defaults."""

    def errors(self, name: str, payload: dict[str, Any], partial: bool = False) -> dict:
        """What L{validate} reports."""
        return self.assertRaises(ValidationFailed, validate, entity(name), payload,
                                 partial=partial).errors

    def test_trunk_defaults(self) -> None:
        """A trunk takes the customer and name; the rest has defaults."""
        values = validate(TRUNK, {"customer_id": 1, "name": "pbx",
                                  "allowed_sources": ["192.0.2.9"]}, partial=False)
        self.assertEqual(values, {
            "customer_id": 1, "name": "pbx", "allowed_sources": ["192.0.2.9/32"], "address": "",
            "auth_mode": "ip", "transport": "udp", "codecs": [], "max_calls": 0,
            "max_calls_in": 0, "max_calls_out": 0, "max_cps": 0, "caller_id_format": {},
            "status": "active"})

    def test_bad_trunk_fields_all_named(self) -> None:
        """Bad networks, codecs, modes, limits and shapes in one report."""
        errors = self.errors("trunk", {
            "customer_id": 1, "name": "pbx", "auth_mode": "password",
            "allowed_sources": ["192.0.2.300"], "codecs": "PCMU", "transport": "sctp",
            "max_calls": -1, "max_cps": "fast", "caller_id_format": ["e164"]})
        self.assertEqual(set(errors), {"auth_mode", "allowed_sources", "codecs", "transport",
                                       "max_calls", "max_cps", "caller_id_format"})
        self.assertEqual(errors["auth_mode"], "must be one of ip, digest, both")
        self.assertEqual(errors["allowed_sources"],
                         "item 0: '192.0.2.300' is not an IP address or CIDR network")
        self.assertEqual(errors["caller_id_format"], "must be a JSON object")
        self.assertEqual(errors["max_calls"], "must be at least 0")

    def test_connection_fields(self) -> None:
        """The new connection fields: defaults, and their rules."""
        values = validate(CONNECTION, {"vendor_id": 1, "name": "a", "address": "192.0.2.1"},
                          partial=False)
        self.assertEqual(
            {k: values[k] for k in ("max_calls_in", "max_calls_out", "weight", "register",
                                    "register_expires", "registrar", "probe",
                                    "probe_interval", "setup_timeout", "answer_timeout",
                                    "failover_codes", "codecs", "caller_id_format",
                                    "inbound_sources")},
            {"max_calls_in": 0, "max_calls_out": 0, "weight": 0, "register": False,
             "register_expires": 3600, "registrar": "", "probe": False, "probe_interval": 30,
             "setup_timeout": 5, "answer_timeout": 120, "failover_codes": [408, 480, "5xx"],
             "codecs": [], "caller_id_format": {}, "inbound_sources": []})
        errors = self.errors("connection", {
            "failover_codes": [486], "inbound_sources": ["203.0.113.1/16"],
            "register_expires": 30, "probe_interval": 0, "setup_timeout": -1}, partial=True)
        self.assertEqual(set(errors), {"failover_codes", "inbound_sources", "register_expires",
                                       "probe_interval", "setup_timeout"})
        self.assertIn("host bits set", errors["inbound_sources"])

    def test_mutable_defaults_are_copied(self) -> None:
        """The default failover codes of one row are not another's."""
        first = validate(CONNECTION, {"vendor_id": 1, "name": "a", "address": "h"},
                         partial=False)
        first["failover_codes"].append(503)
        second = validate(CONNECTION, {"vendor_id": 1, "name": "b", "address": "h"},
                          partial=False)
        self.assertEqual(second["failover_codes"], [408, 480, "5xx"])

    def test_dial_plan_is_an_object(self) -> None:
        """A customer's dial plan: an object (default empty), nothing else."""
        values = validate(entity("customer"), {"name": "a", "sip_domain": "a.example",
                                               "currency": "EUR"}, partial=False)
        self.assertEqual((values["dial_plan"], "routing_plan_id" in values), ({}, False))
        self.assertEqual(self.errors("customer", {"dial_plan": ["9"]}, partial=True),
                         {"dial_plan": "must be a JSON object"})
        self.assertEqual(self.errors("customer", {"dial_plan": None}, partial=True),
                         {"dial_plan": "may not be null"})

    def test_did_target_kinds(self) -> None:
        """The registry of DID target kinds keeps the earlier kinds and is
        what validation checks."""
        self.assertLessEqual({"account", "trunk", "hunt_group", "queue", "ivr", "voicemail"},
                             set(DID_TARGET_KINDS))
        self.assertEqual(entity("did").field("target_kind").choices, DID_TARGET_KINDS)
        for kind in DID_TARGET_KINDS:
            validate(entity("did"), {"target_kind": kind}, partial=True)
        self.assertIn("target_kind", self.errors("did", {"target_kind": "fax"}, partial=True))

    def test_lnp_entry(self) -> None:
        """A ported number: an E.164 number and a routing prefix."""
        values = validate(entity("lnp_entry"), {"number": "+31612345678",
                                                "routing_prefix": "D042"}, partial=False)
        self.assertEqual(values["carrier"], "")
        errors = self.errors("lnp_entry", {"number": "06-1234", "routing_prefix": "1 2"})
        self.assertEqual(set(errors), {"number", "routing_prefix"})
        self.assertIn("routing_prefix", self.errors("lnp_entry", {"number": "+3161",
                                                                  "routing_prefix": ""}))


class RuleTests(SynchronousTestCase):
    """L{trunk_errors}: what an authentication mode needs."""

    def test_each_mode(self) -> None:
        """ip needs sources, digest an account, both both."""
        sources, account = {"allowed_sources": ["192.0.2.1/32"]}, {"account_id": 4}
        self.assertEqual(set(trunk_errors({"auth_mode": "ip"})), {"allowed_sources"})
        self.assertEqual(trunk_errors({"auth_mode": "ip", **sources}), {})
        self.assertEqual(set(trunk_errors({"auth_mode": "digest", "account_id": None})),
                         {"account_id"})
        self.assertEqual(trunk_errors({"auth_mode": "digest", **account}), {})
        self.assertEqual(set(trunk_errors({"auth_mode": "both", **account})),
                         {"allowed_sources"})
        self.assertEqual(set(trunk_errors({"auth_mode": "both", **sources})), {"account_id"})
        self.assertEqual(trunk_errors({"auth_mode": "both", **sources, **account}), {})
        self.assertEqual(set(TRUNK_AUTH_MODES), {"ip", "digest", "both"})

    def test_other_entities_have_no_rule(self) -> None:
        """Rows of other entities pass."""
        self.assertEqual(row_errors("vendor", {"auth_mode": "ip"}), {})
        self.assertEqual(set(row_errors("trunk", {"auth_mode": "digest"})), {"account_id"})


class TrunkingContract:
    """Migration 0002 and the trunking rows, on one dialect."""

    dialect = ""
    timeout = 60

    async def setUp(self) -> None:
        """A migrated database, its repositories and a tenant."""
        self.database = await open_database(self, self.dialect)
        self.repos, self.feed, self.build = stack(self.database)
        self.tenant = await self.build.tenant()

    async def fails(self, d: Any, error: type[Exception]) -> Any:
        """Await C{d}, which must fail with C{error}; the error."""
        try:
            await d
        except error as caught:
            return caught
        self.fail(f"expected {error.__name__}")

    async def trunk_account(self, customer_id: int | None = None) -> dict[str, Any]:
        """A new account of kind trunk (of the tenant's customer by default)."""
        return await self.build.make("account", kind="trunk",
                                     customer_id=customer_id or self.tenant.customer_id)

    async def test_upgrade_from_0001(self) -> None:
        """A database at 0001 holding a customer and a connection takes
        0002: the rows get the model's defaults and read back valid."""
        real = migrations.migrations_for(self.dialect)
        self.patch(migrations, "migrations_for", lambda dialect: real[:1])
        database = await open_database(self, self.dialect)
        stamp = "2024-01-01T00:00:00Z"
        await database.run(lambda c: (
            c.execute("INSERT INTO customers (name, sip_domain, currency, billing_timezone, "
                      "credit_limit, payment_terms_days, status, fraud_profile, created_at, "
                      "updated_at) VALUES ('old', 'old.example', 'EUR', 'UTC', 0, 30, "
                      f"'active', '{{}}', '{stamp}', '{stamp}')"),
            c.execute("INSERT INTO vendors (name, status, created_at, updated_at) VALUES "
                      f"('v', 'active', '{stamp}', '{stamp}')"),
            c.execute("INSERT INTO connections (vendor_id, name, address, transport, "
                      "auth_username, auth_realm, max_calls, max_cps, enabled, created_at, "
                      "updated_at) SELECT id, 'c', '192.0.2.1:5060', 'udp', '', '', 0, 0, "
                      f"{'TRUE' if self.dialect == 'postgresql' else 1}, '{stamp}', "
                      f"'{stamp}' FROM vendors")))
        self.patch(migrations, "migrations_for", lambda dialect: real)
        self.assertEqual(await migrations.migrate(database), [m.version for m in real[1:]])
        repos, _, _ = stack(database)
        customer = (await repos["customers"].list(ADMIN)).rows[0]
        self.assertEqual((customer["dial_plan"], customer["routing_plan_id"]), ({}, None))
        connection = (await repos["connections"].list(ADMIN)).rows[0]
        defaults = validate(CONNECTION, {"vendor_id": 1, "name": "x", "address": "h"},
                            partial=False)
        for name in ("max_calls_in", "max_calls_out", "weight", "register", "register_expires",
                     "registrar", "probe", "probe_interval", "setup_timeout",
                     "answer_timeout", "failover_codes", "codecs", "caller_id_format",
                     "inbound_sources"):
            self.assertEqual(connection[name], defaults[name], name)
        updated = await repos["connections"].update(connection["id"], {"register": True},
                                                    ADMIN)
        self.assertIs(updated["register"], True)
        rows = await load_directory_rows(database)
        self.assertEqual((rows["trunks"], rows["lnp_entries"]), ([], []))

    async def test_trunk_auth_rules(self) -> None:
        """An ip trunk needs sources, a digest trunk an account; an update
        that breaks the rule is refused, one that keeps it is not."""
        trunks = self.repos["trunks"]
        error = await self.fails(trunks.create({"customer_id": self.tenant.customer_id,
                                                "name": "pbx"}, ADMIN), ValidationFailed)
        self.assertEqual(set(error.errors), {"allowed_sources"})
        trunk = await trunks.create({"customer_id": self.tenant.customer_id, "name": "pbx",
                                     "allowed_sources": ["192.0.2.0/28"]}, ADMIN)
        self.assertEqual(trunk["allowed_sources"], ["192.0.2.0/28"])
        error = await self.fails(trunks.update(trunk["id"], {"auth_mode": "digest"}, ADMIN),
                                 ValidationFailed)
        self.assertEqual(set(error.errors), {"account_id"})
        error = await self.fails(trunks.update(trunk["id"], {"allowed_sources": []}, ADMIN),
                                 ValidationFailed)
        self.assertEqual(set(error.errors), {"allowed_sources"})
        account = await self.trunk_account()
        both = await trunks.update(trunk["id"], {"auth_mode": "both",
                                                 "account_id": account["id"]}, ADMIN)
        self.assertEqual((both["auth_mode"], both["account_id"]), ("both", account["id"]))
        digest = await trunks.update(trunk["id"], {"auth_mode": "digest",
                                                   "allowed_sources": []}, ADMIN)
        self.assertEqual(digest["allowed_sources"], [])
        self.assertEqual((await trunks.update(trunk["id"], {"max_cps": 5}, ADMIN))["max_cps"],
                         5)

    async def test_trunk_account(self) -> None:
        """The trunk's account is a trunk account of the same customer,
        used by one trunk, and keeps its kind while the trunk uses it."""
        trunks = self.repos["trunks"]
        base = {"customer_id": self.tenant.customer_id, "auth_mode": "digest"}
        error = await self.fails(trunks.create({**base, "name": "a",
                                                "account_id": self.tenant.account_id}, ADMIN),
                                 ValidationFailed)
        self.assertEqual(error.errors, {"account_id": (
            f"must be an account of kind trunk (account {self.tenant.account_id} is of kind "
            "extension)")})
        other = await self.build.tenant()
        foreign = await self.trunk_account(other.customer_id)
        error = await self.fails(trunks.create({**base, "name": "b",
                                                "account_id": foreign["id"]}, ADMIN),
                                 ValidationFailed)
        self.assertIn("another customer", error.errors["account_id"])
        account = await self.trunk_account()
        trunk = await trunks.create({**base, "name": "c", "account_id": account["id"]}, ADMIN)
        error = await self.fails(trunks.create({**base, "name": "d",
                                                "account_id": account["id"]}, ADMIN), Conflict)
        self.assertEqual(error.field, "account_id")
        error = await self.fails(self.repos["accounts"].update(
            account["id"], {"kind": "extension"}, ADMIN), ValidationFailed)
        self.assertEqual(error.errors, {"kind": f"cannot change while trunk {trunk['id']} "
                                                "uses the account"})
        renamed = await self.repos["accounts"].update(account["id"],
                                                      {"caller_id_name": "PBX"}, ADMIN)
        self.assertEqual(renamed["kind"], "trunk")
        await self.fails(self.repos["accounts"].delete(account["id"], ADMIN), Conflict)
        await trunks.delete(trunk["id"], ADMIN)
        changed = await self.repos["accounts"].update(account["id"], {"kind": "line"}, ADMIN)
        self.assertEqual(changed["kind"], "line")

    async def test_names_and_refs(self) -> None:
        """Names are unique per customer; the routing plan must exist."""
        trunks = self.repos["trunks"]
        first = await self.build.make("trunk", self.tenant, name="pbx")
        error = await self.fails(self.build.make("trunk", self.tenant, name="pbx"), Conflict)
        self.assertEqual(error.field, "name")
        other = await self.build.tenant()
        await self.build.make("trunk", other, name="pbx")
        error = await self.fails(trunks.update(first["id"], {"routing_plan_id": 999999},
                                               ADMIN), Conflict)
        self.assertEqual(error.field, "routing_plan_id")
        plan = await self.build.make("routing_plan")
        self.assertEqual((await trunks.update(first["id"], {"routing_plan_id": plan["id"]},
                                              ADMIN))["routing_plan_id"], plan["id"])
        await self.fails(self.repos["routing_plans"].delete(plan["id"], ADMIN), Conflict)
        customer = await self.repos["customers"].update(
            self.tenant.customer_id, {"routing_plan_id": plan["id"],
                                      "dial_plan": {"country_code": "31"}}, ADMIN)
        self.assertEqual(customer["dial_plan"], {"country_code": "31"})

    async def test_who_writes_trunks(self) -> None:
        """A reseller writes its customers' trunks; the customer's key and
        the trunk account's end-user key read them and cannot write them."""
        reseller = self.tenant.scope("reseller")
        trunk = await self.repos["trunks"].create(
            {"customer_id": self.tenant.customer_id, "name": "pbx",
             "allowed_sources": ["192.0.2.1"]}, reseller)
        customer = self.tenant.scope("customer")
        self.assertEqual((await self.repos["trunks"].get(trunk["id"], customer))["name"], "pbx")
        await self.fails(self.repos["trunks"].update(trunk["id"], {"max_calls": 99}, customer),
                         Forbidden)
        await self.fails(self.repos["trunks"].create(
            {"name": "mine", "allowed_sources": ["192.0.2.2"]}, customer), Forbidden)
        account = await self.trunk_account()
        await self.repos["trunks"].update(trunk["id"], {"account_id": account["id"]}, reseller)
        owner = type(self.tenant)(self.tenant.reseller_id, self.tenant.customer_id,
                                  account["id"]).scope("enduser")
        self.assertEqual((await self.repos["trunks"].get(trunk["id"], owner))["id"],
                         trunk["id"])
        await self.fails(self.repos["trunks"].get(trunk["id"], self.tenant.scope("enduser")),
                         NotFound)
        await self.fails(self.repos["lnp_entries"].create(
            {"number": "+3161", "routing_prefix": "1"}, reseller), Forbidden)

    async def test_lnp_entries(self) -> None:
        """Ported numbers are unique; carriers filter."""
        lnp = self.repos["lnp_entries"]
        await lnp.create({"number": "+31612345678", "routing_prefix": "1234",
                          "carrier": "blue"}, ADMIN)
        error = await self.fails(lnp.create({"number": "+31612345678",
                                             "routing_prefix": "9"}, ADMIN), Conflict)
        self.assertEqual(error.field, "number")
        await lnp.create({"number": "+31612345679", "routing_prefix": "1235"}, ADMIN)
        page = await lnp.list(ADMIN, {"carrier": "blue"})
        self.assertEqual([r["number"] for r in page.rows], ["+31612345678"])

    async def test_directory_rows(self) -> None:
        """The snapshot loads the active trunks of active customers, the
        ported numbers, the customers' plans and the connections' new
        columns; a directory built from them finds trunks by source."""
        plan = await self.build.make("routing_plan")
        await self.repos["customers"].update(
            self.tenant.customer_id, {"routing_plan_id": plan["id"],
                                      "dial_plan": {"country_code": "31"}}, ADMIN)
        wide = await self.build.make("trunk", self.tenant, allowed_sources=["10.0.0.0/8"])
        narrow = await self.build.make("trunk", self.tenant,
                                       allowed_sources=["10.1.0.0/16", "2001:db8::/32"])
        await self.build.make("trunk", self.tenant, allowed_sources=["10.1.2.0/24"],
                              status="suspended")
        closed = await self.build.tenant()
        await self.build.make("trunk", closed, allowed_sources=["10.1.2.3"])
        await self.repos["customers"].update(closed.customer_id, {"status": "suspended"},
                                             ADMIN)
        connection = await self.build.make("connection", inbound_sources=["203.0.113.0/24"],
                                           failover_codes=["5xx"], register=True)
        await self.repos["lnp_entries"].create({"number": "+31612345678",
                                                "routing_prefix": "1234"}, ADMIN)
        rows = await load_directory_rows(self.database)
        self.assertEqual([t["id"] for t in rows["trunks"]], [wide["id"], narrow["id"]])
        self.assertEqual(rows["trunks"][1]["allowed_sources"], ["10.1.0.0/16", "2001:db8::/32"])
        self.assertEqual(rows["lnp_entries"], [{"id": rows["lnp_entries"][0]["id"],
                                                "number": "+31612345678",
                                                "routing_prefix": "1234", "carrier": ""}])
        customer = rows["customers"][0]
        self.assertEqual((customer["dial_plan"], customer["routing_plan_id"]),
                         ({"country_code": "31"}, plan["id"]))
        loaded = rows["connections"][0]
        self.assertEqual((loaded["inbound_sources"], loaded["failover_codes"],
                          loaded["register"]), (["203.0.113.0/24"], ["5xx"], True))
        directory = Directory.from_rows(rows)
        self.assertEqual(directory.trunk_by_source("10.1.2.3")["id"], narrow["id"])
        self.assertEqual(directory.trunk_by_source("10.200.0.1")["id"], wide["id"])
        self.assertEqual(directory.trunk_by_source("2001:db8::9")["id"], narrow["id"])
        self.assertEqual(directory.connection_by_source("203.0.113.77")["id"], connection["id"])
        self.assertEqual(directory.routing_plan_for_trunk(wide["id"])["id"], plan["id"])
        self.assertEqual(directory.lnp("31612345678").routing_prefix, "1234")
        self.assertEqual(directory.tenant_by_id(self.tenant.customer_id).dial_plan,
                         {"country_code": "31"})


class SQLiteTrunkingTests(TrunkingContract, TestCase):
    """The trunking rows on SQLite."""

    dialect = "sqlite"


class PostgreSQLTrunkingTests(TrunkingContract, TestCase):
    """The trunking rows on PostgreSQL (C{DATABASE_URL})."""

    dialect = "postgresql"
