"""Tests for L{b2bua.db.validation}: input checked and converted per field,
every bad field reported at once, and rows turned back into JSON."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from twisted.trial.unittest import SynchronousTestCase

from b2bua.db.interfaces import ValidationFailed
from b2bua.db.model import ENTITIES, entity
from b2bua.db.validation import coerce_filters, to_json, validate

CUSTOMER = entity("customer")
ACCOUNT = entity("account")


class ValidateTests(SynchronousTestCase):
    """L{validate} on creates and updates."""

    def errors(self, name: str, payload: object, partial: bool = False) -> dict[str, str]:
        """The errors L{validate} reports for C{payload}."""
        error = self.assertRaises(ValidationFailed, validate, entity(name), payload,
                                  partial=partial)
        return error.errors

    def test_create_converts_and_fills_defaults(self) -> None:
        """Strings become decimals, defaults are filled, mutable defaults copied."""
        values = validate(CUSTOMER, {"name": "Acme", "sip_domain": "acme.example.com",
                                     "currency": "EUR", "credit_limit": "12.50"}, partial=False)
        self.assertEqual(values["credit_limit"], Decimal("12.50"))
        self.assertEqual((values["status"], values["payment_terms_days"]), ("active", 30))
        values["fraud_profile"]["x"] = 1
        again = validate(CUSTOMER, {"name": "A", "sip_domain": "a", "currency": "EUR"},
                         partial=False)
        self.assertEqual(again["fraud_profile"], {})
        self.assertEqual(again["credit_limit"], Decimal("0"))

    def test_every_bad_field_is_named(self) -> None:
        """Missing, unknown, read-only and malformed fields are all reported."""
        errors = self.errors("account", {"number": "12a", "kind": "fax", "id": 3,
                                         "ha1_md5": "x", "created_at": "2024-01-01T00:00:00Z",
                                         "color": "red", "sip_username": "a b"})
        self.assertEqual(set(errors), {"number", "kind", "id", "ha1_md5", "created_at", "color",
                                       "sip_username", "customer_id", "password"})
        self.assertEqual(errors["color"], "unknown field")
        self.assertEqual(errors["id"], "is read-only")
        self.assertEqual(errors["password"], "required")
        self.assertIn("extension", errors["kind"])

    def test_write_only_fields_are_accepted(self) -> None:
        """Write-only fields pass through converted; their rules apply."""
        values = validate(ACCOUNT, {"password": "pw"}, partial=True)
        self.assertEqual(values, {"password": "pw"})
        errors = self.errors("card", {"pin": "12"}, partial=True)
        self.assertIn("pin", errors)
        errors = self.errors("account", {"password": "x" * 129}, partial=True)
        self.assertIn("128", errors["password"])

    def test_partial_updates(self) -> None:
        """Updates need no required field but cannot null one (or a defaulted one)."""
        self.assertEqual(validate(ACCOUNT, {}, partial=True), {})
        errors = self.errors("account", {"number": None, "status": None, "password": None},
                             partial=True)
        self.assertEqual(set(errors), {"number", "status", "password"})
        self.assertEqual(validate(entity("subscription"), {"ends_on": None}, partial=True),
                         {"ends_on": None})

    def test_not_an_object(self) -> None:
        """A body that is not an object is refused."""
        self.assertEqual(self.errors("vendor", ["x"]), {"body": "must be an object"})

    def test_decimals(self) -> None:
        """Decimal strings and integers are exact; floats and junk are refused."""
        field = {"name": "P", "currency": "EUR"}
        for text in ("0.000001", "12345678901234.123456", "-3", "7"):
            values = validate(entity("ledger_entry"), {"customer_id": 1, "kind": "topup",
                                                       "amount": text, "currency": "EUR"},
                              partial=False)
            self.assertEqual(str(values["amount"]), text)
        self.assertEqual(validate(entity("product"), {**field, "fee_per_line": 5},
                                  partial=False)["fee_per_line"], Decimal(5))
        for bad in (0.1, "1e3", "NaN", "Infinity", "1.2.3", "", True, "1" * 21,
                    "0." + "1" * 13, "-1"):
            errors = self.errors("product", {**field, "fee_per_line": bad})
            self.assertIn("fee_per_line", errors, bad)

    def test_integers_and_refs(self) -> None:
        """Integers (or digit strings) within 64 bits and the minimum; refs positive."""
        sub = entity("subscription")
        base = {"customer_id": "4", "product_id": 2, "starts_on": "2024-02-29"}
        values = validate(sub, {**base, "quantity": "3"}, partial=False)
        self.assertEqual((values["customer_id"], values["quantity"]), (4, 3))
        self.assertEqual(values["starts_on"], date(2024, 2, 29))
        for bad in (0, "x", 1.5, True, 2**63):
            self.assertIn("quantity", self.errors("subscription", {**base, "quantity": bad}))
        for bad in (0, -1, "abc"):
            self.assertIn("product_id", self.errors("subscription", {**base, "product_id": bad}))

    def test_dates(self) -> None:
        """Dates are YYYY-MM-DD and real."""
        base = {"customer_id": 1, "product_id": 2}
        for bad in ("2024-02-30", "2024/01/01", "20240101", 20240101):
            self.assertIn("starts_on", self.errors("subscription", {**base, "starts_on": bad}))

    def test_timestamps(self) -> None:
        """Timestamps need a zone and are kept in UTC."""
        cdr = entity("cdr")
        values = validate(cdr, {"call_id": "c", "started_at": "2024-05-01T14:00:00+02:00"},
                          partial=False)
        self.assertEqual(values["started_at"], datetime(2024, 5, 1, 12, tzinfo=UTC))
        values = validate(cdr, {"call_id": "c", "started_at": datetime(
            2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=1)))}, partial=False)
        self.assertEqual(values["started_at"].hour, 11)
        for bad in ("2024-05-01T12:00:00", "yesterday", 1714564800, "2024-05-01"):
            errors = self.errors("cdr", {"call_id": "c", "started_at": bad})
            self.assertIn("started_at", errors, bad)
        self.assertIn("zone", self.errors("cdr", {"call_id": "c",
                                                  "started_at": "2024-05-01T12:00:00"})[
            "started_at"])

    def test_text_rules(self) -> None:
        """Patterns match the whole text, lengths and NULs are checked, and
        required text may not be empty."""
        base = {"customer_id": 1, "sip_username": "u", "password": "p"}
        for bad in ("123\n", "", "1" * 33, 5):
            self.assertIn("number", self.errors("account", {**base, "number": bad}))
        self.assertIn("name", self.errors("vendor", {"name": "a\x00b"}))
        self.assertIn("name", self.errors("vendor", {"name": "x" * 256}))
        self.assertIn("name", self.errors("vendor", {"name": ""}))
        self.assertIn("password", self.errors("account", {**base, "number": "1",
                                                          "password": ""}))

    def test_booleans_and_json(self) -> None:
        """Booleans are true/false; JSON must be plain and finite."""
        connection = entity("connection")
        base = {"vendor_id": 1, "name": "t", "address": "h:1"}
        self.assertIs(validate(connection, {**base, "enabled": "false"}, partial=False)[
            "enabled"], False)
        self.assertIn("enabled", self.errors("connection", {**base, "enabled": "maybe"}))
        self.assertIn("enabled", self.errors("connection", {**base, "enabled": 1}))
        plan = {"name": "p"}
        ok = validate(entity("routing_plan"), {**plan, "entries": [{"prefix": "31", "w": 1.5}]},
                      partial=False)
        self.assertEqual(ok["entries"], [{"prefix": "31", "w": 1.5}])
        deep: list[object] = []
        for _ in range(70):
            deep = [deep]
        for bad in (float("nan"), {"a": float("inf")}, {1: "x"}, "a\x00", {"x": object()},
                    deep):
            self.assertIn("entries", self.errors("routing_plan", {**plan, "entries": bad}))

    def test_every_entity_reports_its_required_fields(self) -> None:
        """An empty create names exactly the required fields of each entity."""
        for e in ENTITIES:
            required = {f.name for f in (*e.fields, *e.write_only) if f.required}
            if not required:
                continue
            self.assertEqual(set(self.errors(e.name, {})), required, e.name)


class FilterTests(SynchronousTestCase):
    """L{coerce_filters} on list filters from query strings."""

    def test_filters_are_converted(self) -> None:
        """Query-string text becomes typed values; None means "is null"."""
        self.assertEqual(coerce_filters(ACCOUNT, {"customer_id": "3", "status": "active",
                                                  "kind": None}),
                         {"customer_id": 3, "status": "active", "kind": None})
        self.assertEqual(coerce_filters(entity("connection"), {"enabled": "true"}),
                         {"enabled": True})
        self.assertEqual(coerce_filters(ACCOUNT, None), {})

    def test_bad_filters_are_named(self) -> None:
        """Unfilterable, unknown and malformed filters are all reported."""
        error = self.assertRaises(ValidationFailed, coerce_filters, ACCOUNT,
                                  {"ha1_md5": "x", "password": "x", "nope": 1,
                                   "customer_id": "x", "status": "gone"})
        self.assertEqual(set(error.errors),
                         {"ha1_md5", "password", "nope", "customer_id", "status"})


class ToJSONTests(SynchronousTestCase):
    """L{to_json} on stored rows."""

    def test_values_become_json(self) -> None:
        """Decimals become exact strings, times ISO 8601 with Z, dates ISO."""
        row = {"id": 1, "credit_limit": Decimal("12345678901234.123456"),
               "created_at": datetime(2024, 5, 1, 12, 0, 0, 5, tzinfo=UTC),
               "updated_at": datetime(2024, 5, 1, 14, tzinfo=timezone(timedelta(hours=2)))}
        out = to_json(CUSTOMER, row)
        self.assertEqual(out["credit_limit"], "12345678901234.123456")
        self.assertEqual(out["created_at"], "2024-05-01T12:00:00.000005Z")
        self.assertEqual(out["updated_at"], "2024-05-01T12:00:00Z")
        self.assertEqual(to_json(entity("invoice"), {"period_start": date(2024, 1, 1)}),
                         {"period_start": "2024-01-01"})

    def test_secrets_are_removed(self) -> None:
        """Unreadable and write-only fields never appear; extras pass."""
        out = to_json(ACCOUNT, {"id": 1, "ha1_md5": "x", "ha1_sha256": "y", "password": "p"})
        self.assertEqual(out, {"id": 1})
        out = to_json(entity("api_key"), {"id": 1, "key_hash": "h", "key": "b2k_x"})
        self.assertEqual(out, {"id": 1, "key": "b2k_x"})
