"""Tariff uploads (L{oam.api.rates}): CSV rate decks and JSON tariff
documents, checked whole by the rating package, stored whole or not at all;
and the tariff documents of C{POST}/C{PATCH /tariffs}."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import TestCase

from oam.api.rates import Problem, _problem
from tests.trial.oam.api.support import ADMIN, TARIFF, Api, Reply, open_api

GOOD_CSV = (
    "prefix,description,price,intervals,effective_date,connect_fee\n"
    "33,France,0.05,60/6,2024-01-01,0.01\n"
    "3361,France mobile,0.12,30/6,2024-01-01,\n"
    "44,United Kingdom,0.04,1/1,2024-01-01,\n"
)
BAD_CSV = (
    "prefix,description,price,intervals,effective_date\n"
    "33,France,0.05,60/6,2024-01-01\n"
    "3361,France mobile,abc,60/6,2024-01-01\n"
    "44,United Kingdom,0.04,0/6,2024-13-01\n"
)
PARAMS = {"name": "retail", "currency": "EUR"}


class RatesTestCase(TestCase):
    """The API with an admin key."""

    timeout = 60

    async def setUp(self) -> None:
        """Open the API and make an admin key."""
        self.api: Api = await open_api(self)
        self.admin = await self.api.key("admin")

    async def upload(self, raw: bytes | str, kind: str = "text/csv",
                     params: dict[str, Any] | None = None, key: str | None = None) -> Reply:
        """POST /tariffs/import."""
        data = raw.encode("utf-8") if isinstance(raw, str) else raw
        return await self.api.request("POST", "tariffs/import", key=key or self.admin, raw=data,
                                      content_type=kind,
                                      params=PARAMS if params is None else params)

    async def stored(self) -> int:
        """How many tariffs there are."""
        return (await self.api.repos["tariffs"].list(ADMIN)).total


class CsvUploadTests(RatesTestCase):
    """Rate decks as CSV."""

    async def test_good_file(self) -> None:
        """A good deck is stored as a tariff document: 201, Location, the row."""
        reply = await self.upload(GOOD_CSV, params={**PARAMS, "timezone": "Europe/Paris"})
        self.assertEqual(reply.code, 201, reply.body)
        row = reply.json()
        self.assertEqual(reply.header("Location"), f"/api/v1/tariffs/{row['id']}")
        self.assertEqual((row["name"], row["currency"]), ("retail", "EUR"))
        document = row["document"]
        self.assertEqual(document["timezone"], "Europe/Paris")
        self.assertEqual([e["prefixes"] for e in document["entries"]],
                         [["33"], ["3361"], ["44"]])
        self.assertEqual(document["rates"][document["entries"][0]["rate"]]["connect_fee"],
                         "0.01")
        self.assertIsInstance(row["warnings"], list)
        got = await self.api.request("GET", f"tariffs/{row['id']}", key=self.admin)
        self.assertEqual(got.json()["document"], document)

    async def test_bad_rows_reject_the_file(self) -> None:
        """Every bad cell is reported by row and column; nothing is stored."""
        reply = await self.upload(BAD_CSV)
        self.assertEqual(reply.code, 422)
        body = reply.json()
        self.assertEqual(body["error"], "invalid tariff")
        where = {(p["row"], p["column"]) for p in body["rows"]}
        self.assertEqual(where, {(3, "price"), (4, "intervals"), (4, "effective_from")})
        for problem in body["rows"]:
            self.assertTrue(problem["message"])
        self.assertEqual(await self.stored(), 0)

    async def test_bad_header(self) -> None:
        """Unknown and missing columns are row 1 problems."""
        reply = await self.upload("prefix,colour\n33,red\n")
        rows = reply.json()["rows"]
        self.assertEqual(reply.code, 422)
        self.assertIn({"row": 1, "column": "colour", "message": "unknown column"}, rows)
        self.assertIn(1, {p["row"] for p in rows if p["column"] == "price"})
        empty = await self.upload("")
        self.assertEqual((empty.code, empty.json()["rows"][0]["row"]), (422, 1))

    async def test_options(self) -> None:
        """The CSV options shape the document; bad ones are named."""
        deck = "prefix;price;intervals\n33;0.05;60/6\n"
        reply = await self.upload(deck, params={
            **PARAMS, "delimiter": "semicolon", "rounding_method": "half_even",
            "rounding_decimals": "2", "period_boundary": "split"})
        self.assertEqual(reply.code, 201, reply.body)
        document = reply.json()["document"]
        self.assertEqual(document["rounding"], {"method": "half_even", "decimals": 2})
        self.assertEqual(document["period_boundary"], "split")
        reply = await self.upload(GOOD_CSV, params={
            **PARAMS, "name": "other", "timezone": "Mars/Olympus", "delimiter": "space",
            "rounding_decimals": "9", "strict_blocks": "maybe", "colour": "red"})
        self.assertEqual(reply.code, 422)
        self.assertEqual(set(reply.json()["fields"]), {
            "timezone", "delimiter", "rounding_decimals", "strict_blocks", "colour"})
        strict = await self.upload("prefix,price,intervals\n33,0.05,60/7\n",
                                   params={**PARAMS, "strict_blocks": "true"})
        self.assertEqual((strict.code, strict.json()["rows"][0]["column"]), (422, "intervals"))

    async def test_not_text(self) -> None:
        """Bytes that are not UTF-8, or no CSV at all: 400 malformed CSV."""
        reply = await self.upload(b"prefix,price\n33,\xff\n")
        self.assertEqual((reply.code, reply.json()["error"]), (400, "malformed CSV"))
        huge = "prefix,price,intervals\n" + '"' + "9" * 200000 + '",1,1/1\n'
        reply = await self.upload(huge)
        self.assertEqual((reply.code, reply.json()["error"]), (400, "malformed CSV"))
        self.assertEqual(await self.stored(), 0)


class UploadRulesTests(RatesTestCase):
    """What every upload needs."""

    async def test_name_and_currency(self) -> None:
        """name and currency are required and checked like a tariff's."""
        reply = await self.upload(GOOD_CSV, params={"currency": "euro"})
        self.assertEqual(reply.code, 422)
        self.assertEqual(set(reply.json()["fields"]), {"name", "currency"})

    async def test_content_type(self) -> None:
        """Only text/csv and application/json are read."""
        reply = await self.upload(GOOD_CSV, kind="text/plain")
        self.assertEqual(reply.code, 415)
        self.assertEqual(reply.json()["expected"], ["text/csv", "application/json"])
        reply = await self.upload(GOOD_CSV, kind="text/csv; charset=utf-8")
        self.assertEqual(reply.code, 201)

    async def test_admin_only(self) -> None:
        """Tariffs are operator data: other roles get 403."""
        tenant = await self.api.build.tenant()
        key = await self.api.key("reseller", tenant)
        reply = await self.upload(GOOD_CSV, key=key)
        self.assertEqual((reply.code, reply.json()), (403, {"error": "forbidden"}))
        self.assertEqual((await self.upload(GOOD_CSV, key="b2k_nobody")).code, 401)

    async def test_name_taken(self) -> None:
        """A second tariff of the same name: 409 naming it."""
        self.assertEqual((await self.upload(GOOD_CSV)).code, 201)
        reply = await self.upload(GOOD_CSV)
        self.assertEqual((reply.code, reply.json()["field"]), (409, "name"))
        self.assertEqual(await self.stored(), 1)


class DocumentTests(RatesTestCase):
    """Tariff documents, uploaded or in the body of POST/PATCH /tariffs."""

    async def test_json_upload(self) -> None:
        """A JSON document is stored as given."""
        reply = await self.upload(json.dumps(TARIFF), kind="application/json")
        self.assertEqual(reply.code, 201, reply.body)
        self.assertEqual(reply.json()["document"], TARIFF)

    async def test_bad_json_upload(self) -> None:
        """Problems of a document are named by key path; nothing is stored."""
        document = {**TARIFF, "timezone": "Nowhere/Land", "colour": "red"}
        reply = await self.upload(json.dumps(document), kind="application/json")
        self.assertEqual(reply.code, 422)
        columns = {p["column"] for p in reply.json()["rows"]}
        self.assertEqual(columns, {"timezone", "colour"})
        self.assertEqual({p["row"] for p in reply.json()["rows"]}, {None})
        self.assertEqual((await self.upload("{", kind="application/json")).code, 400)
        reply = await self.upload(json.dumps(TARIFF), kind="application/json",
                                  params={**PARAMS, "timezone": "UTC"})
        self.assertEqual(reply.json()["fields"], {"timezone": "only for text/csv uploads"})
        self.assertEqual(await self.stored(), 0)

    async def test_far_dates(self) -> None:
        """A date the loader cannot place in UTC is a problem, not a crash."""
        document = {**TARIFF, "entries": [{"prefixes": ["33"], "rate": "R1",
                                           "effective_from": "0001-01-01T00:00:00+01:00"}]}
        reply = await self.upload(json.dumps(document), kind="application/json")
        self.assertEqual(reply.code, 422)
        self.assertEqual(self.api.errors(), 0)

    async def test_tariff_bodies(self) -> None:
        """POST and PATCH /tariffs check document with the rating loader."""
        reply = await self.api.request("POST", "tariffs", key=self.admin, body={
            "name": "t", "currency": "EUR", "document": {"rates": []}})
        self.assertEqual(reply.code, 422)
        body = reply.json()
        self.assertEqual(list(body["fields"]), ["document"])
        self.assertIn({"row": None, "column": "timezone", "message": "required"}, body["rows"])
        reply = await self.api.request("POST", "tariffs", key=self.admin, body={
            "name": "t", "currency": "EUR", "document": TARIFF})
        self.assertEqual(reply.code, 201)
        path = f"tariffs/{reply.json()['id']}"
        reply = await self.api.request("PATCH", path, key=self.admin, body={
            "document": {**TARIFF, "period_boundary": "sometimes"}})
        self.assertEqual(reply.code, 422)
        self.assertEqual(reply.json()["rows"][0]["column"], "period_boundary")
        reply = await self.api.request("PATCH", path, key=self.admin, body={"name": "u"})
        self.assertEqual((reply.code, reply.json()["document"]), (200, TARIFF))

    def test_problem_locations(self) -> None:
        """The loader's messages are split into row, column and message."""
        self.assertEqual(_problem("row 3, column price: not a decimal number: 'x'"),
                         Problem(3, "price", "not a decimal number: 'x'"))
        self.assertEqual(_problem("row 1: the file is empty"), Problem(1, None, "the file is empty"))
        self.assertEqual(_problem("rates.R1.groups[0].price: must be >= 0"),
                         Problem(None, "rates.R1.groups[0].price", "must be >= 0"))
        self.assertEqual(_problem(": must be an object"),
                         Problem(None, "(document)", "must be an object"))
        self.assertEqual(_problem("odd"), Problem(None, None, "odd"))
