"""L{Directory.tariff_for_tenant}: a tenant's tariff through its active
subscriptions and their products (rows as the snapshot loads them)."""

from __future__ import annotations

from datetime import date
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.directory import Directory, DirectoryFrozen, Tenant

TODAY = date(2024, 6, 15)


def rows(subscriptions: list[dict[str, Any]], **extra: Any) -> dict[str, list[dict[str, Any]]]:
    """Two customers, three tariffs, products 10 (tariff 1), 11 (tariff 2),
    12 (no tariff), 13 (tariff 3), 14 (a tariff not in the directory)."""
    data: dict[str, list[dict[str, Any]]] = {
        "customers": [
            {"id": 1, "sip_domain": "a.example.com", "name": "A", "currency": "EUR",
             "billing_timezone": "UTC", "status": "active"},
            {"id": 2, "sip_domain": "b.example.com", "name": "B", "currency": "USD",
             "billing_timezone": "UTC", "status": "active"}],
        "tariffs": [{"id": n, "name": f"t{n}", "currency": "EUR", "document": {"n": n}}
                    for n in (1, 2, 3)],
        "products": [{"id": 10, "tariff_id": 1, "currency": "EUR"},
                     {"id": 11, "tariff_id": 2, "currency": "EUR"},
                     {"id": 12, "tariff_id": None, "currency": "EUR"},
                     {"id": 13, "tariff_id": 3, "currency": "EUR"},
                     {"id": 14, "tariff_id": 99, "currency": "EUR"}],
        "subscriptions": subscriptions,
    }
    data.update(extra)
    return data


def sub(sub_id: int, product_id: int, starts_on: date, ends_on: date | None = None,
        customer_id: int = 1) -> dict[str, Any]:
    """A subscription row."""
    return {"id": sub_id, "customer_id": customer_id, "product_id": product_id,
            "starts_on": starts_on, "ends_on": ends_on}


def tariff_id(directory: Directory, domain: str = "a.example.com",
              today: date = TODAY) -> int | None:
    """The id of the tariff found, or C{None}."""
    row = directory.tariff_for_tenant(domain, today)
    return None if row is None else row["id"]


class TariffForTenantTests(SynchronousTestCase):
    """The subscription in effect whose product has a tariff decides."""

    def test_one_subscription(self) -> None:
        """The product's tariff row (with its document) is returned, for
        the domain in any case; another tenant has none."""
        directory = Directory.from_rows(rows([sub(1, 10, date(2024, 1, 1))]))
        row = directory.tariff_for_tenant("A.Example.COM", TODAY)
        assert row is not None
        self.assertEqual((row["id"], row["document"]), (1, {"n": 1}))
        self.assertIsNone(tariff_id(directory, "b.example.com"))
        self.assertIsNone(tariff_id(directory, "unknown.example.com"))

    def test_dates(self) -> None:
        """C{starts_on} is the first day, C{ends_on} the last day included."""
        directory = Directory.from_rows(rows([sub(1, 10, TODAY, TODAY)]))
        self.assertEqual(tariff_id(directory), 1)
        self.assertIsNone(tariff_id(directory, today=date(2024, 6, 14)))
        self.assertIsNone(tariff_id(directory, today=date(2024, 6, 16)))

    def test_most_recent_start_wins(self) -> None:
        """Of several subscriptions in effect, the latest C{starts_on} wins,
        whatever the row order; a future one is not in effect yet."""
        directory = Directory.from_rows(rows([
            sub(1, 11, date(2024, 5, 1)), sub(2, 10, date(2024, 1, 1)),
            sub(3, 13, date(2024, 7, 1))]))
        self.assertEqual(tariff_id(directory), 2)
        self.assertEqual(tariff_id(directory, today=date(2024, 7, 1)), 3)
        self.assertEqual(tariff_id(directory, today=date(2024, 2, 1)), 1)

    def test_same_start_higher_id_wins(self) -> None:
        """Equal C{starts_on}: the newer subscription (higher id) wins."""
        directory = Directory.from_rows(rows([sub(4, 11, TODAY), sub(3, 10, TODAY)]))
        self.assertEqual(tariff_id(directory), 2)

    def test_subscriptions_without_tariff_are_skipped(self) -> None:
        """A newer subscription whose product has no tariff (or a tariff not
        in the directory, or an unknown product) does not hide an older
        one that has a tariff."""
        directory = Directory.from_rows(rows([
            sub(1, 10, date(2024, 1, 1)), sub(2, 12, date(2024, 3, 1)),
            sub(3, 14, date(2024, 4, 1)), sub(4, 77, date(2024, 5, 1))]))
        self.assertEqual(tariff_id(directory), 1)
        only_without = Directory.from_rows(rows([sub(2, 12, date(2024, 3, 1))]))
        self.assertIsNone(tariff_id(only_without))

    def test_subscription_of_a_customer_not_loaded(self) -> None:
        """Subscriptions of a customer that is not a tenant give nothing."""
        directory = Directory.from_rows(rows([sub(1, 10, date(2024, 1, 1), customer_id=9)]))
        self.assertIsNone(tariff_id(directory))

    def test_hand_built_directory(self) -> None:
        """A directory built by hand (no rows, tenants without ids) has no tariffs."""
        directory = Directory()
        directory.add_tenant(Tenant("a.example.com"))
        self.assertIsNone(tariff_id(directory))

    def test_missing_collections(self) -> None:
        """Rows without subscriptions or products (an older loader) load."""
        data = rows([])
        del data["subscriptions"], data["products"]
        directory = Directory.from_rows(data)
        self.assertIsNone(tariff_id(directory))
        self.assertEqual(directory.tariff(1)["id"], 1)  # type: ignore[index]

    def test_tariff_row_is_read_only(self) -> None:
        """The row returned is the directory's frozen row."""
        directory = Directory.from_rows(rows([sub(1, 10, date(2024, 1, 1))]))
        row = directory.tariff_for_tenant("a.example.com", TODAY)
        assert row is not None
        self.assertIs(row, directory.tariff(1))
        with self.assertRaises(TypeError):
            row["document"] = {}  # type: ignore[index]
        with self.assertRaises(DirectoryFrozen):
            directory.add_tenant(Tenant("c.example.com"))
