"""The repository contract, run against SQLite always and PostgreSQL when
C{DATABASE_URL} is set: CRUD of every entity, exact decimals, conflicts,
tenant isolation of every entity, audit, change announcements and the
stored secrets."""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from typing import Any

from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from b2bua.db.interfaces import Conflict, IRepository, NotFound, Scope, ValidationFailed
from b2bua.db.model import ENTITIES, entity
from b2bua.db.repository import Immutable, find_api_key, load_directory_rows
from b2bua.db.scoping import Forbidden, may_write
from b2bua.db.validation import to_json
from b2bua.sip.auth import compute_ha1
from tests.trial.db.support import ADMIN, SECRET, UPDATES, open_database, stack

ROLES = ("reseller", "customer", "enduser")


def sees(name: str, role: str) -> bool:
    """Whether a key of C{role} sees its own tenant's rows of C{name}."""
    e = entity(name)
    if e.scope == "global":
        return False
    if role == "reseller":
        return True
    if role == "customer":
        return e.scope in ("customer", "account")
    # (the trunks made here use no account: an end user sees its own trunk
    # only through the trunk's account, tests.trial.db.test_trunking_model)
    return name == "account" or (e.scope in ("customer", "account") and name != "trunk"
                                 and any(f.name == "account_id" for f in e.fields))


class RepositoryContract:
    """The behaviour every provisioning database must have."""

    dialect = ""
    timeout = 60

    async def setUp(self) -> None:
        """A fresh, migrated database with repositories and a change log."""
        self.database = await open_database(self, self.dialect)
        self.repos, self.feed, self.build = stack(self.database)
        self.changes: list[Any] = []
        self.feed.subscribe(self.changes.append)

    async def raw(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows of raw SQL (to look at what is really stored)."""
        return await self.database.run(lambda c: c.execute(sql, params))

    async def fails(self, d: Any, *errors: type[BaseException]) -> BaseException:
        """Await C{d}, which must fail with one of C{errors}; return the error."""
        try:
            await d
        except errors as error:
            return error
        self.fail(f"expected {errors}")

    # -- CRUD ---------------------------------------------------------------------------

    def test_provides_the_interface(self) -> None:
        """Every repository provides L{IRepository}."""
        for repo in self.repos.values():
            self.assertTrue(verifyObject(IRepository, repo))

    def test_cards_need_a_secret(self) -> None:
        """Without a PIN hashing secret the cards repository is refused."""
        from b2bua.db.repository import Repository

        self.assertRaises(ValueError, Repository, "cards", self.database, self.feed, b"")
        Repository("vendors", self.database, self.feed, b"")

    async def test_crud_every_entity(self) -> None:
        """Each entity's minimal row is created, read, listed, updated and
        (unless immutable) deleted; immutable ones refuse both."""
        for e in ENTITIES:
            repo = self.build.repo(e.name)
            row = await self.build.make(e.name)
            self.assertEqual(await repo.get(row["id"], ADMIN), {k: v for k, v in row.items()
                                                                if k != "key"}, e.name)
            page = await repo.list(ADMIN, limit=500)
            self.assertIn(row["id"], [r["id"] for r in page.rows], e.name)
            for f in e.fields:
                if not f.readable:
                    self.assertNotIn(f.name, row, e.name)
            if e.immutable:
                await self.fails(repo.update(row["id"], UPDATES[e.name], ADMIN), Immutable)
                await self.fails(repo.delete(row["id"], ADMIN), Immutable)
                await repo.get(row["id"], ADMIN)
                continue
            updated = await repo.update(row["id"], UPDATES[e.name], ADMIN)
            for key, value in UPDATES[e.name].items():
                self.assertEqual(to_json(e, updated)[key], to_json(e, {key: value})[key], e.name)
            self.assertGreaterEqual(updated["updated_at"], row["updated_at"])
            await repo.delete(row["id"], ADMIN)
            await self.fails(repo.get(row["id"], ADMIN), NotFound)

    async def test_defaults_and_types(self) -> None:
        """Defaults are filled and values come back as Python types."""
        customer = await self.build.make("customer")
        self.assertEqual(customer["credit_limit"], Decimal("0"))
        self.assertEqual(customer["payment_terms_days"], 30)
        self.assertEqual(customer["status"], "active")
        self.assertEqual(customer["fraud_profile"], {})
        self.assertIsNotNone(customer["created_at"].tzinfo)
        connection = await self.build.make("connection")
        self.assertIs(connection["enabled"], True)

    async def test_decimals_round_trip_exactly(self) -> None:
        """Decimals are stored and read back exactly, never through float."""
        for text in ("0.000001", "12345678901234.123456", "0.1", "100"):
            customer = await self.build.make("customer", credit_limit=text)
            again = await self.build.repo("customer").get(customer["id"], ADMIN)
            self.assertEqual(again["credit_limit"], Decimal(text))
            self.assertEqual(to_json(entity("customer"), again)["credit_limit"], text)
        entry = await self.build.make("ledger_entry", amount="-0.000001")
        self.assertEqual(str(entry["amount"]), "-0.000001")

    async def test_validation_names_every_bad_field(self) -> None:
        """A create with several bad fields reports all of them at once."""
        customer = await self.build.make("customer")
        error = await self.fails(self.build.repo("account").create(
            {"customer_id": customer["id"], "number": "abc", "sip_username": "bad name",
             "kind": "fax", "ha1_md5": "x", "bogus": 1}, ADMIN), ValidationFailed)
        self.assertEqual(set(error.errors),
                         {"number", "sip_username", "kind", "ha1_md5", "bogus", "password"})

    async def test_get_unknown_ids(self) -> None:
        """Ids that do not exist, or are not ids, are not found."""
        repo = self.build.repo("reseller")
        for bad in (999999, 0, -1, "x", 2**70, True):
            await self.fails(repo.get(bad, ADMIN), NotFound)
            await self.fails(repo.update(bad, {"name": "x"}, ADMIN), NotFound)
            await self.fails(repo.delete(bad, ADMIN), NotFound)

    # -- conflicts ----------------------------------------------------------------------

    async def test_unique_conflicts(self) -> None:
        """Unique and unique-together fields conflict, naming the field."""
        await self.build.make("reseller", name="Acme")
        error = await self.fails(self.build.make("reseller", name="Acme"), Conflict)
        self.assertEqual(error.field, "name")
        customer = await self.build.make("customer", sip_domain="a.example.com")
        error = await self.fails(self.build.make("customer", sip_domain="a.example.com"),
                                 Conflict)
        self.assertEqual(error.field, "sip_domain")
        await self.build.make("account", customer_id=customer["id"], number="100")
        error = await self.fails(
            self.build.make("account", customer_id=customer["id"], number="100"), Conflict)
        self.assertEqual(error.field, "number")
        other = await self.build.make("customer")
        await self.build.make("account", customer_id=other["id"], number="100")
        second = await self.build.make("reseller", name="Other")
        error = await self.fails(self.build.repo("reseller").update(
            second["id"], {"name": "Acme"}, ADMIN), Conflict)
        self.assertEqual(error.field, "name")

    async def test_card_pin_conflict(self) -> None:
        """Two cards cannot share a PIN; the conflict names C{pin}."""
        await self.build.make("card", pin="12345678")
        error = await self.fails(self.build.make("card", pin="12345678"), Conflict)
        self.assertEqual(error.field, "pin")

    async def test_foreign_key_conflicts(self) -> None:
        """A missing parent, or deleting a parent with children, is a Conflict."""
        error = await self.fails(self.build.make("account", customer_id=999999), Conflict)
        self.assertEqual(error.field, "customer_id")
        account = await self.build.make("account")
        await self.fails(self.build.repo("customer").delete(account["customer_id"], ADMIN),
                         Conflict)
        await self.build.repo("customer").get(account["customer_id"], ADMIN)

    async def test_failed_write_leaves_nothing(self) -> None:
        """A refused write is rolled back: no row, no audit, no announcement."""
        await self.build.make("reseller", name="Acme")
        before = len(await self.raw("SELECT id FROM audit"))
        self.changes.clear()
        await self.fails(self.build.make("reseller", name="Acme"), Conflict)
        self.assertEqual(len(await self.raw("SELECT id FROM audit")), before)
        self.assertEqual(self.changes, [])

    # -- lists --------------------------------------------------------------------------

    async def test_list_filters_order_and_pages(self) -> None:
        """Filters on filterable fields, ordering, limit/offset and totals."""
        for name in ("b", "a", "c"):
            await self.build.make("vendor", name=name)
        await self.build.make("vendor", name="d", status="suspended")
        repo = self.build.repo("vendor")
        page = await repo.list(ADMIN, {"status": "active"}, limit=2, offset=0, order="name")
        self.assertEqual(([r["name"] for r in page.rows], page.total), (["a", "b"], 3))
        page = await repo.list(ADMIN, {"status": "active"}, limit=2, offset=2, order="-name")
        self.assertEqual([r["name"] for r in page.rows], ["a"])
        page = await repo.list(ADMIN, {"name": "d"})
        self.assertEqual(page.total, 1)
        connection = await self.build.make("connection", enabled=False)
        page = await self.build.repo("connection").list(ADMIN, {"enabled": "false"})
        self.assertEqual([r["id"] for r in page.rows], [connection["id"]])

    async def test_list_refuses_bad_arguments(self) -> None:
        """Unfilterable fields, bad limits, offsets and orders are refused."""
        repo = self.build.repo("account")
        for kwargs, field in (({"filters": {"ha1_md5": "x"}}, "ha1_md5"),
                              ({"filters": {"caller_id_name": "x"}}, "caller_id_name"),
                              ({"filters": {"customer_id": "abc"}}, "customer_id"),
                              ({"limit": 0}, "limit"), ({"limit": 501}, "limit"),
                              ({"offset": -1}, "offset"), ({"order": "ha1_md5"}, "order"),
                              ({"order": "id; DROP TABLE accounts"}, "order")):
            error = await self.fails(repo.list(ADMIN, **kwargs), ValidationFailed)
            self.assertIn(field, error.errors)

    # -- tenant isolation ---------------------------------------------------------------

    async def test_isolation_of_every_entity(self) -> None:
        """No key of one tenant can read, change, delete or list another
        tenant's rows (or any global row), for every entity."""
        mine, theirs = await self.build.tenant(), await self.build.tenant()
        for e in ENTITIES:
            repo = self.build.repo(e.name)
            other = await self.build.row_of(e.name, theirs)
            own = await self.build.row_of(e.name, mine)
            for role in ROLES:
                scope = mine.scope(role)
                label = f"{role} on {e.name}"
                await self.fails(repo.get(other["id"], scope), NotFound)
                await self.fails(repo.update(other["id"], UPDATES[e.name], scope), NotFound,
                                 Immutable)
                await self.fails(repo.delete(other["id"], scope), NotFound, Immutable)
                listed = [r["id"] for r in (await repo.list(scope, limit=500)).rows]
                self.assertNotIn(other["id"], listed, label)
                if sees(e.name, role):
                    self.assertEqual((await repo.get(own["id"], scope))["id"], own["id"], label)
                    self.assertIn(own["id"], listed, label)
                else:
                    await self.fails(repo.get(own["id"], scope), NotFound)
                    self.assertNotIn(own["id"], listed, label)
            self.assertEqual(await repo.get(other["id"], ADMIN),
                             {k: v for k, v in other.items() if k != "key"}, e.name)

    async def test_creates_are_forced_into_scope(self) -> None:
        """A non-admin's create gets its own owner ids; naming another
        tenant's is a NotFound; a role that may not write is Forbidden."""
        mine, theirs = await self.build.tenant(), await self.build.tenant()
        for e in ENTITIES:
            for role in ROLES:
                scope = mine.scope(role)
                label = f"{role} creating {e.name}"
                payload = await self.build.payload(e.name, theirs)
                if e.name == "api_key":
                    payload["role"] = "enduser"
                if not may_write(e, scope):
                    await self.fails(self.build.repo(e.name).create(payload, scope), Forbidden)
                    continue
                await self.fails(self.build.repo(e.name).create(payload, scope), NotFound)
                payload = await self.build.payload(e.name, mine)
                forced = {"reseller": ("reseller_id",), "customer": ("customer_id",),
                          "enduser": ("customer_id", "account_id")}[role]
                for name in forced:
                    payload.pop(name, None)
                row = await self.build.repo(e.name).create(payload, scope)
                for name in ("reseller_id", "customer_id", "account_id"):
                    if name in row and name in forced and (e.name, name) != ("api_key",
                                                                             "reseller_id"):
                        self.assertEqual(row[name], getattr(mine, name), label)
                await self.build.repo(e.name).get(row["id"], scope)

    async def test_reseller_scope_rules(self) -> None:
        """A reseller's customers get its id; its customer-scoped rows must
        name one of its customers; another reseller's customer is not found."""
        mine, theirs = await self.build.tenant(), await self.build.tenant()
        scope = mine.scope("reseller")
        customer = await self.build.repo("customer").create(
            {"name": "n", "sip_domain": "n.example.com", "currency": "EUR"}, scope)
        self.assertEqual(customer["reseller_id"], mine.reseller_id)
        error = await self.fails(self.build.repo("did").create({"number": "+311234"}, scope),
                                 ValidationFailed)
        self.assertIn("customer_id", error.errors)
        await self.fails(self.build.repo("did").create(
            {"number": "+311234", "customer_id": theirs.customer_id}, scope), NotFound)
        await self.fails(self.build.repo("customer").update(
            customer["id"], {"reseller_id": theirs.reseller_id}, scope), NotFound)
        did = await self.build.repo("did").create(
            {"number": "+311234", "customer_id": mine.customer_id}, scope)
        await self.fails(self.build.repo("did").update(
            did["id"], {"customer_id": theirs.customer_id}, scope), NotFound)
        moved = await self.build.repo("did").update(did["id"], {"customer_id": customer["id"]},
                                                    scope)
        self.assertEqual(moved["customer_id"], customer["id"])
        error = await self.fails(self.build.repo("did").update(did["id"], {"customer_id": None},
                                                               scope), ValidationFailed)
        self.assertIn("customer_id", error.errors)

    async def test_refs_stay_inside_a_tenant(self) -> None:
        """A row's refs to tenant rows must be in the row's own tenant;
        owner ids taken from a ref are derived."""
        mine, theirs = await self.build.tenant(), await self.build.tenant()
        error = await self.fails(self.build.repo("ledger_entry").create(
            {"customer_id": mine.customer_id, "account_id": theirs.account_id, "kind": "topup",
             "amount": "1", "currency": "EUR"}, ADMIN), ValidationFailed)
        self.assertIn("account_id", error.errors)
        entry = await self.build.repo("cdr").create(
            {"account_id": mine.account_id, "call_id": "x@y", "started_at": "2024-01-01T00:00:00Z"},
            ADMIN)
        self.assertEqual(entry["customer_id"], mine.customer_id)
        batch = await self.build.make("card_batch", mine)
        card = await self.build.make("card", batch_id=batch["id"])
        self.assertEqual(card["reseller_id"], mine.reseller_id)
        distributor = await self.build.make("distributor", theirs)
        error = await self.fails(self.build.make("card_batch", mine,
                                                 distributor_id=distributor["id"]),
                                 ValidationFailed)
        self.assertIn("distributor_id", error.errors)
        await self.fails(self.build.make("card_batch", mine, distributor_id=distributor["id"],
                                         scope=mine.scope("reseller")), NotFound)

    async def test_api_keys_cannot_escalate(self) -> None:
        """No key mints a more powerful key; owner ids match the role."""
        mine, theirs = await self.build.tenant(), await self.build.tenant()
        keys = self.build.repo("api_key")
        for creator, role in (("reseller", "admin"), ("customer", "reseller"),
                              ("customer", "admin"), ("enduser", "customer")):
            error = await self.fails(keys.create({"name": "k", "role": role},
                                                 mine.scope(creator)), ValidationFailed)
            self.assertIn("role", error.errors)
        key = await keys.create({"name": "k", "role": "reseller"}, mine.scope("reseller"))
        self.assertEqual((key["reseller_id"], key["customer_id"]), (mine.reseller_id, None))
        key = await keys.create({"name": "k", "role": "enduser", "account_id": mine.account_id},
                                mine.scope("customer"))
        self.assertEqual(key["customer_id"], mine.customer_id)
        await self.fails(keys.create({"name": "k", "role": "enduser",
                                      "account_id": theirs.account_id},
                                     mine.scope("customer")), NotFound)
        error = await self.fails(keys.update(key["id"], {"role": "admin"}, ADMIN),
                                 ValidationFailed)
        self.assertIn("role", error.errors)
        error = await self.fails(keys.create({"name": "k", "role": "customer"}, ADMIN),
                                 ValidationFailed)
        self.assertIn("customer_id", error.errors)

    # -- secrets ------------------------------------------------------------------------

    async def test_passwords_are_stored_as_ha1(self) -> None:
        """An account's password is never stored; its HA1 values use the
        customer's domain as realm and follow password changes."""
        customer = await self.build.make("customer", sip_domain="pbx.example.com")
        account = await self.build.make("account", customer_id=customer["id"],
                                        sip_username="alice", password="s3cret-Pass")
        [row] = await self.raw("SELECT * FROM accounts WHERE id = ?", (account["id"],))
        self.assertNotIn("s3cret-Pass", repr(row))
        self.assertEqual(row["ha1_md5"], compute_ha1("alice", "pbx.example.com", "s3cret-Pass"))
        self.assertEqual(row["ha1_sha256"],
                         compute_ha1("alice", "pbx.example.com", "s3cret-Pass", "SHA-256"))
        repo = self.build.repo("account")
        await repo.update(account["id"], {"password": "n3w-Pass"}, ADMIN)
        [row] = await self.raw("SELECT ha1_md5 FROM accounts WHERE id = ?", (account["id"],))
        self.assertEqual(row["ha1_md5"], compute_ha1("alice", "pbx.example.com", "n3w-Pass"))
        error = await self.fails(repo.update(account["id"], {"sip_username": "bob"}, ADMIN),
                                 ValidationFailed)
        self.assertIn("password", error.errors)
        await repo.update(account["id"], {"sip_username": "bob", "password": "x-Pass"}, ADMIN)
        [row] = await self.raw("SELECT ha1_md5 FROM accounts WHERE id = ?", (account["id"],))
        self.assertEqual(row["ha1_md5"], compute_ha1("bob", "pbx.example.com", "x-Pass"))
        other = await self.build.make("customer")
        error = await self.fails(repo.update(account["id"], {"customer_id": other["id"]}, ADMIN),
                                 ValidationFailed)
        self.assertIn("customer_id", error.errors)
        error = await self.fails(self.build.repo("customer").update(
            customer["id"], {"sip_domain": "new.example.com"}, ADMIN), ValidationFailed)
        self.assertIn("sip_domain", error.errors)
        audit = await self.raw("SELECT * FROM audit")
        self.assertNotIn("Pass", repr(audit))

    async def test_pins_are_keyed_hashes(self) -> None:
        """A card's PIN is stored only as HMAC-SHA-256 with the secret."""
        card = await self.build.make("card", pin="987654321")
        [row] = await self.raw("SELECT * FROM cards WHERE id = ?", (card["id"],))
        self.assertNotIn("987654321", repr(row))
        expected = hmac.new(SECRET, b"987654321", hashlib.sha256).hexdigest()
        self.assertEqual(row["pin_hash"], expected)
        self.assertNotEqual(row["pin_hash"], hashlib.sha256(b"987654321").hexdigest())

    async def test_connection_password_is_ha1(self) -> None:
        """A vendor connection keeps only the HA1 of its password."""
        repo = self.build.repo("connection")
        error = await self.fails(self.build.make("connection", auth_password="pw"),
                                 ValidationFailed)
        self.assertEqual(set(error.errors), {"auth_username", "auth_realm"})
        row = await self.build.make("connection", auth_username="u", auth_realm="carrier.net",
                                    auth_password="tr-Pass")
        [raw] = await self.raw("SELECT * FROM connections WHERE id = ?", (row["id"],))
        self.assertEqual(raw["auth_ha1"], compute_ha1("u", "carrier.net", "tr-Pass"))
        self.assertNotIn("tr-Pass", repr(raw))
        await self.fails(repo.update(row["id"], {"auth_realm": "x"}, ADMIN), ValidationFailed)
        await repo.update(row["id"], {"auth_password": ""}, ADMIN)
        [raw] = await self.raw("SELECT auth_ha1 FROM connections WHERE id = ?", (row["id"],))
        self.assertIsNone(raw["auth_ha1"])

    async def test_api_key_lookup(self) -> None:
        """A key is shown once, stored as its SHA-256, found by its
        plaintext until revoked, and its use is stamped at most once a minute."""
        key = await self.build.make("api_key", name="ops")
        plaintext = key["key"]
        self.assertTrue(plaintext.startswith("b2k_"))
        self.assertEqual(len(plaintext), 36)
        self.assertEqual(key["prefix"], plaintext[:12])
        [row] = await self.raw("SELECT * FROM api_keys WHERE id = ?", (key["id"],))
        self.assertEqual(row["key_hash"], hashlib.sha256(plaintext.encode()).hexdigest())
        self.assertNotIn(plaintext, repr(row))
        found = await find_api_key(self.database, plaintext)
        self.assertEqual((found["id"], found["role"]), (key["id"], "admin"))
        self.assertNotIn("key_hash", found)
        first = found["last_used_at"]
        self.assertIsNotNone(first)
        again = await find_api_key(self.database, plaintext)
        self.assertEqual(again["last_used_at"], first)
        self.assertIsNone(await find_api_key(self.database, plaintext + "x"))
        self.assertIsNone(await find_api_key(self.database, "nonsense"))
        await self.build.repo("api_key").update(key["id"], {"revoked": True}, ADMIN)
        self.assertIsNone(await find_api_key(self.database, plaintext))

    # -- audit and announcements ---------------------------------------------------------

    async def test_audit_records_every_change(self) -> None:
        """Create, update and delete write audit rows with the actor and the
        changed field names, visible to the customer."""
        tenant = await self.build.tenant()
        scope = Scope("customer", customer_id=tenant.customer_id, actor="key:7")
        repo = self.build.repo("account")
        account = await repo.create({"number": "55", "sip_username": "u55",
                                     "password": "pw-55-x"}, scope)
        await repo.update(account["id"], {"caller_id_name": "Bob", "password": "pw-56-x"}, scope)
        await repo.update(account["id"], {"caller_id_name": "Bob"}, scope)
        await repo.delete(account["id"], scope)
        page = await self.build.repo("audit_record").list(
            scope, {"entity": "account", "actor": "key:7"})
        rows = [(r["action"], r["entity_id"], r["customer_id"], r["changes"]["fields"])
                for r in page.rows]
        self.assertEqual(rows, [
            ("create", account["id"], tenant.customer_id,
             ["number", "password", "sip_username"]),
            ("update", account["id"], tenant.customer_id, ["caller_id_name", "password"]),
            ("delete", account["id"], tenant.customer_id, []),
        ])
        raw = await self.raw("SELECT * FROM audit")
        self.assertNotIn("pw-5", repr(raw))

    async def test_changes_are_announced_after_commit(self) -> None:
        """Each committed change is published once; no-op updates are not."""
        row = await self.build.make("vendor")
        repo = self.build.repo("vendor")
        await repo.update(row["id"], {"status": "suspended"}, ADMIN)
        await repo.update(row["id"], {"status": "suspended"}, ADMIN)
        await repo.delete(row["id"], ADMIN)
        mine = [(c.entity, c.row_id, c.action) for c in self.changes if c.entity == "vendor"]
        self.assertEqual(mine, [("vendor", row["id"], "create"), ("vendor", row["id"], "update"),
                                ("vendor", row["id"], "delete")])

    async def test_directory_rows(self) -> None:
        """The snapshot loader returns active rows with their HA1 values."""
        tenant = await self.build.tenant()
        suspended = await self.build.make("account", customer_id=tenant.customer_id,
                                          status="suspended")
        tariff = await self.build.make("tariff", document={"rates": [{"prefix": "31"}]})
        off = await self.build.make("connection", enabled=False)
        on = await self.build.make("connection")
        rows = await load_directory_rows(self.database)
        accounts = {a["id"]: a for a in rows["accounts"]}
        self.assertIn(tenant.account_id, accounts)
        self.assertNotIn(suspended["id"], accounts)
        self.assertEqual(len(accounts[tenant.account_id]["ha1_md5"]), 32)
        self.assertEqual([c["id"] for c in rows["customers"]], [tenant.customer_id])
        self.assertEqual(rows["tariffs"][0]["document"], {"rates": [{"prefix": "31"}]})
        self.assertEqual(set(rows["tariffs"][0]), {"id", "name", "currency", "document"})
        connections = [c["id"] for c in rows["connections"]]
        self.assertIn(on["id"], connections)
        self.assertNotIn(off["id"], connections)
        self.assertEqual(tariff["id"], rows["tariffs"][0]["id"])


class SQLiteRepositoryTests(RepositoryContract, TestCase):
    """The repository contract on SQLite."""

    dialect = "sqlite"


class PostgreSQLRepositoryTests(RepositoryContract, TestCase):
    """The repository contract on PostgreSQL (C{DATABASE_URL})."""

    dialect = "postgresql"
