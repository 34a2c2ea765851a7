"""L{rating.provisioned.ProvisionedTariffs}: the charging plugin's tariffs
and payer from the provisioning snapshot, on hand-made directory rows and
end to end through a real SQLite database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, cast

from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from b2bua.core.call import Call
from b2bua.core.directory import Directory
from b2bua.db.repository import load_directory_rows
from rating.charging import PREPAID, Payer
from rating.cost import cost
from rating.lookup import TariffIndex
from rating.provisioned import ProvisionedTariffs, tenant_domain
from tests.trial.db.support import open_database, stack
from tests.trial.rating import document, group

#: 2024-06-15 12:00 UTC.
NOON = dt.datetime(2024, 6, 15, 12, 0, tzinfo=dt.UTC)
DOMAIN = "a.example.com"


def tariff_document(price: str = "0.60") -> dict[str, Any]:
    """A tariff pricing 49... at C{price} a minute, per minute."""
    return document({"R": {"groups": [group(0, price, 60, 60)]}})


class FakeCall:
    """What the resolver reads of a call."""

    def __init__(self, tenant: str = DOMAIN, identity: str = f"1000@{DOMAIN}") -> None:
        self.tenant = tenant
        self.identity = identity


def call(tenant: str = DOMAIN, identity: str = f"1000@{DOMAIN}") -> Call:
    """A stand-in L{Call}."""
    return cast(Call, FakeCall(tenant, identity))


def rows(tariffs: list[dict[str, Any]] | None = None,
         starts_on: dt.date = dt.date(2024, 1, 1),
         ends_on: dt.date | None = None) -> dict[str, list[dict[str, Any]]]:
    """Customer 1 (C{a.example.com}) subscribed to product 10 (tariff 1)."""
    return {
        "customers": [{"id": 1, "sip_domain": DOMAIN, "name": "A", "currency": "EUR",
                       "billing_timezone": "Europe/Berlin", "status": "active"}],
        "tariffs": tariffs if tariffs is not None else [
            {"id": 1, "name": "retail", "currency": "EUR", "document": tariff_document()}],
        "products": [{"id": 10, "tariff_id": 1, "currency": "EUR"}],
        "subscriptions": [{"id": 5, "customer_id": 1, "product_id": 10,
                           "starts_on": starts_on, "ends_on": ends_on}],
    }


def price(index: TariffIndex | None, seconds: int = 90, number: str = "4930123456") -> Decimal:
    """What C{index} charges for a call of C{seconds} to C{number} at noon."""
    assert index is not None
    return cost(index.match(number, NOON), seconds).cost


class Holder:
    """The current directory, replaced like the snapshot replaces it."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory

    def __call__(self) -> Directory:
        return self.directory


def resolver(directory: Directory, at: dt.datetime = NOON) -> tuple[ProvisionedTariffs, Holder]:
    """A resolver on C{directory} with its clock at C{at}."""
    clock = Clock()
    clock.advance(at.timestamp())
    holder = Holder(directory)
    return ProvisionedTariffs(holder, clock), holder


class ResolutionTests(SynchronousTestCase):
    """Call -> tenant -> subscription -> product -> tariff -> index."""

    def test_tenant_with_tariff(self) -> None:
        """The tenant's subscribed tariff prices the call (two minutes at 0.60)."""
        provisioned, _ = resolver(Directory.from_rows(rows()))
        index = provisioned.tariffs(call())
        self.assertIsInstance(index, TariffIndex)
        self.assertEqual(price(index), Decimal("1.20"))

    def test_tenant_from_identity(self) -> None:
        """Without a tenant, the identity's domain (any case) is the tenant."""
        provisioned, _ = resolver(Directory.from_rows(rows()))
        self.assertEqual(tenant_domain(call("", "1000@A.Example.com")), DOMAIN)
        self.assertIsNotNone(provisioned.tariffs(call("", "1000@A.Example.com")))
        self.assertIsNone(provisioned.tariffs(call("", "trunk:42")))

    def test_unknown_tenant_or_no_subscription(self) -> None:
        """No tenant, or no subscription with a tariff: not charged."""
        provisioned, _ = resolver(Directory.from_rows(rows()))
        self.assertIsNone(provisioned.tariffs(call("other.example.com")))
        data = rows()
        data["subscriptions"] = []
        self.assertIsNone(resolver(Directory.from_rows(data))[0].tariffs(call()))

    def test_today_is_the_utc_date(self) -> None:
        """A subscription starting tomorrow (UTC) is not in effect yet, one
        that ended yesterday no more; at 00:00 UTC of its first day it is."""
        tomorrow = dt.date(2024, 6, 16)
        directory = Directory.from_rows(rows(starts_on=tomorrow))
        self.assertIsNone(resolver(directory)[0].tariffs(call()))
        midnight = dt.datetime(2024, 6, 16, 0, 0, tzinfo=dt.UTC)
        self.assertIsNotNone(resolver(directory, midnight)[0].tariffs(call()))
        ended = Directory.from_rows(rows(ends_on=dt.date(2024, 6, 14)))
        self.assertIsNone(resolver(ended)[0].tariffs(call()))

    def test_payer(self) -> None:
        """A tenant's calls are charged to C{customer:<domain>}, prepaid;
        an unknown tenant is left to the plugin's settings."""
        provisioned, _ = resolver(Directory.from_rows(rows()))
        self.assertEqual(provisioned.payer(call("A.example.com")),
                         Payer(f"customer:{DOMAIN}", PREPAID))
        self.assertIsNone(provisioned.payer(call("other.example.com")))
        self.assertIsNone(provisioned.payer(call("", "trunk:42")))


class CacheTests(SynchronousTestCase):
    """A tariff is indexed once per version."""

    def test_indexed_once(self) -> None:
        """Calls of the same snapshot share one index."""
        provisioned, _ = resolver(Directory.from_rows(rows()))
        first = provisioned.tariffs(call())
        self.assertIs(provisioned.tariffs(call()), first)
        self.assertEqual(provisioned.loads, 1)

    def test_unchanged_tariff_in_a_new_snapshot(self) -> None:
        """A new snapshot with the same document keeps the index."""
        provisioned, holder = resolver(Directory.from_rows(rows()))
        first = provisioned.tariffs(call())
        holder.directory = Directory.from_rows(rows())
        self.assertIs(provisioned.tariffs(call()), first)
        self.assertIs(provisioned.tariffs(call()), first)
        self.assertEqual(provisioned.loads, 1)

    def test_changed_tariff_is_reloaded(self) -> None:
        """A new snapshot with a changed document is loaded again."""
        provisioned, holder = resolver(Directory.from_rows(rows()))
        first = provisioned.tariffs(call())
        holder.directory = Directory.from_rows(rows([
            {"id": 1, "name": "retail", "currency": "EUR",
             "document": tariff_document("0.90")}]))
        second = provisioned.tariffs(call())
        self.assertIsNot(second, first)
        self.assertEqual(price(second), Decimal("1.80"))
        self.assertEqual(provisioned.loads, 2)

    def test_updated_at_is_the_version(self) -> None:
        """When rows carry C{updated_at}, it decides (not the document)."""
        def with_stamp(minute: int) -> Directory:
            return Directory.from_rows(rows([
                {"id": 1, "name": "retail", "currency": "EUR", "document": tariff_document(),
                 "updated_at": dt.datetime(2024, 6, 1, 0, minute, tzinfo=dt.UTC)}]))
        provisioned, holder = resolver(with_stamp(0))
        first = provisioned.tariffs(call())
        holder.directory = with_stamp(0)
        self.assertIs(provisioned.tariffs(call()), first)
        holder.directory = with_stamp(1)
        self.assertIsNot(provisioned.tariffs(call()), first)
        self.assertEqual(provisioned.loads, 2)


class BadDocumentTests(SynchronousTestCase):
    """A document that does not load gives C{None}, logged once."""

    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def errors(self) -> list[LogEvent]:
        """The resolver's error events."""
        return [e for e in self.events if e.get("log_namespace") == "rating.provisioned"]

    def test_bad_document(self) -> None:
        """Not charged, logged once for every call of that version; a fixed
        document is loaded."""
        bad = {"timezone": "Mars/Olympus", "rates": {}, "entries": []}
        provisioned, holder = resolver(Directory.from_rows(rows([
            {"id": 1, "name": "broken", "currency": "EUR", "document": bad}])))
        self.assertIsNone(provisioned.tariffs(call()))
        holder.directory = Directory.from_rows(rows([
            {"id": 1, "name": "broken", "currency": "EUR", "document": dict(bad)}]))
        self.assertIsNone(provisioned.tariffs(call()))
        self.assertEqual(provisioned.loads, 1)
        self.assertEqual(len(self.errors()), 1)
        self.assertIn("Mars/Olympus", self.errors()[0]["error"])
        holder.directory = Directory.from_rows(rows())
        self.assertEqual(price(provisioned.tariffs(call())), Decimal("1.20"))

    def test_not_a_document(self) -> None:
        """A document that is not even a mapping gives C{None} too."""
        provisioned, _ = resolver(Directory.from_rows(rows([
            {"id": 1, "name": "broken", "currency": "EUR", "document": [1, 2]}])))
        self.assertIsNone(provisioned.tariffs(call()))
        self.assertEqual(len(self.errors()), 1)
        self.flushLoggedErrors()


class SQLiteEndToEndTests(TestCase):
    """Provisioned through the repositories, loaded like the snapshot does."""

    timeout = 60

    async def test_subscribed_tariff_prices_a_number(self) -> None:
        """customer + tariff + product + subscription -> a TariffIndex."""
        database = await open_database(self, "sqlite")
        _, _, build = stack(database)
        customer = await build.make("customer", sip_domain=DOMAIN, currency="EUR")
        other = await build.make("customer", sip_domain="b.example.com", currency="EUR")
        tariff = await build.make("tariff", name="retail", currency="EUR",
                                  document=tariff_document())
        product = await build.make("product", name="basic", currency="EUR",
                                   tariff_id=tariff["id"])
        await build.make("subscription", customer_id=customer["id"],
                         product_id=product["id"], starts_on="2024-01-01")
        await build.make("subscription", customer_id=other["id"], product_id=product["id"],
                         starts_on="2024-01-01", status="closed")
        loaded = await load_directory_rows(database)
        self.assertEqual(loaded["products"][0]["tariff_id"], tariff["id"])
        self.assertEqual(loaded["subscriptions"][0]["starts_on"], dt.date(2024, 1, 1))
        self.assertEqual(len(loaded["subscriptions"]), 1)
        provisioned, _ = resolver(Directory.from_rows(loaded))
        index = provisioned.tariffs(call())
        self.assertIsInstance(index, TariffIndex)
        self.assertEqual(price(index), Decimal("1.20"))
        self.assertIsNone(provisioned.tariffs(call("b.example.com")))
        self.assertEqual(provisioned.payer(call()), Payer(f"customer:{DOMAIN}", PREPAID))
