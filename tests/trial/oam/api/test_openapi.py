"""The OpenAPI document (L{oam.api.openapi}): its structure, checked by hand
against the OpenAPI 3.1 rules that matter here, its agreement with the
model, and (when C{jsonschema_rs}, which schemathesis brings, is there) its
schemas against JSON Schema 2020-12 and against real answers of the API."""

from __future__ import annotations

import re
from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase

from b2bua.db.model import ENTITIES, entity
from b2bua.db.repository import MAX_LIMIT
from oam.api import make_api
from oam.api.openapi import ERRORS, build_document, schema_name
from tests.trial.oam.api.support import TARIFF, VERSION, open_api

try:
    import jsonschema_rs
except ImportError:  # pragma: no cover - depends on the test environment
    jsonschema_rs = None

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
JSON_TYPES = {"string", "integer", "number", "boolean", "object", "array", "null"}


def walk(node: Any, path: str = "#") -> Any:
    """Every (path, dict) in C{node}, depth first."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}/{i}")


def resolve(document: dict[str, Any], ref: str) -> Any:
    """The target of a local C{$ref}."""
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


class StructureTests(SynchronousTestCase):
    """The document, built directly."""

    def setUp(self) -> None:
        """Build the document."""
        self.document = build_document(VERSION)
        self.schemas = self.document["components"]["schemas"]

    def operations(self) -> Any:
        """Every (path, method, operation)."""
        for path, item in self.document["paths"].items():
            for method in METHODS:
                if method in item:
                    yield path, method, item[method]

    def test_top_level(self) -> None:
        """OpenAPI 3.1 with info, a server, paths, components and bearer security."""
        d = self.document
        self.assertEqual(d["openapi"], "3.1.0")
        self.assertEqual(d["info"]["version"], VERSION)
        self.assertTrue(d["info"]["title"])
        self.assertEqual(d["servers"], [{"url": "/api/v1"}])
        self.assertEqual(d["security"], [{"bearerAuth": []}])
        self.assertEqual(d["components"]["securitySchemes"]["bearerAuth"],
                         {"type": "http", "scheme": "bearer",
                          "description": "An API key (b2k_...)."})
        self.assertLessEqual(set(d), {"openapi", "info", "servers", "paths", "components",
                                      "security", "tags", "webhooks", "jsonSchemaDialect",
                                      "externalDocs"})

    def test_references_resolve(self) -> None:
        """Every $ref points at something in the document."""
        refs = [node["$ref"] for _, node in walk(self.document) if "$ref" in node]
        self.assertTrue(refs)
        for ref in refs:
            self.assertTrue(ref.startswith("#/components/"), ref)
            resolve(self.document, ref)

    def test_every_collection(self) -> None:
        """Each collection has its list/create and read/update/delete paths;
        immutable ones have no update or delete; tariffs have the upload."""
        paths = self.document["paths"]
        for e in ENTITIES:
            self.assertEqual(set(paths[f"/{e.collection}"]), {"get", "post"})
            item = paths[f"/{e.collection}/{{id}}"]
            expected = {"get", "parameters"} | (set() if e.immutable else {"patch", "delete"})
            self.assertEqual(set(item), expected, e.name)
            self.assertEqual(item["parameters"][0]["in"], "path")
            self.assertTrue(item["parameters"][0]["required"])
        self.assertEqual(set(paths["/tariffs/import"]), {"post"})
        self.assertEqual(paths["/openapi.json"]["get"]["security"], [])
        self.assertEqual(set(paths["/rating/quote"]), {"post"})
        self.assertEqual(len(paths), 2 * len(ENTITIES) + 5)
        self.assertEqual(set(paths["/routing/explain"]), {"post"})
        self.assertEqual(set(paths["/routing/blend"]), {"post"})

    def test_operations(self) -> None:
        """Unique operation ids; every answer described; every keyed
        operation documents 401 (with WWW-Authenticate) and 500; writes
        document the body errors."""
        ids = [op["operationId"] for _, _, op in self.operations()]
        self.assertEqual(len(ids), len(set(ids)))
        for path, method, op in self.operations():
            responses = op["responses"]
            for code, response in responses.items():
                self.assertRegex(code, r"^[1-5][0-9][0-9]$")
                target = resolve(self.document, response["$ref"]) if "$ref" in response \
                    else response
                self.assertTrue(target["description"])
            self.assertIn("500", responses)
            if path != "/openapi.json":
                self.assertIn("401", responses, (path, method))
            if method in ("post", "patch"):
                self.assertTrue({"400", "403", "409", "413", "415", "422"} <= set(responses))
                self.assertTrue(op["requestBody"]["required"])
        self.assertEqual(resolve(self.document, "#/components/responses/E401")["headers"],
                         {"WWW-Authenticate": {"schema": {"type": "string"}}})
        for code, (_, schema) in ERRORS.items():
            self.assertIn(schema, self.schemas, code)

    def test_list_parameters(self) -> None:
        """limit (1..500, 50), offset, order and one filter per filterable field."""
        for e in ENTITIES:
            params = {p["name"]: p for p in self.document["paths"][f"/{e.collection}"]["get"][
                "parameters"]}
            self.assertEqual(params["limit"]["schema"],
                             {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                              "default": 50})
            self.assertEqual(params["offset"]["schema"]["minimum"], 0)
            self.assertIn("-id", params["order"]["schema"]["enum"])
            filters = {f.name for f in e.fields if f.filterable and f.readable}
            self.assertEqual(set(params) - {"limit", "offset", "order"}, filters, e.name)
            for p in params.values():
                self.assertEqual(p["in"], "query")

    def test_entity_schemas(self) -> None:
        """Row, create and update schemas follow the model: types, required,
        patterns, enums, readOnly for derived fields, writeOnly for secrets."""
        for e in ENTITIES:
            name = schema_name(e)
            row, create = self.schemas[name], self.schemas[f"{name}Create"]
            update = self.schemas[f"{name}Update"]
            readable = {f.name for f in e.fields if f.readable}
            secret = {f.name for f in e.write_only}
            self.assertEqual(set(row["properties"]), readable | secret)
            self.assertEqual(set(row["required"]), readable)
            for f in e.fields:
                if f.readable:
                    self.assertEqual(row["properties"][f.name].get("readOnly", False),
                                     not f.writable, (e.name, f.name))
            for f in e.write_only:
                self.assertTrue(row["properties"][f.name]["writeOnly"])
                self.assertTrue(create["properties"][f.name]["writeOnly"])
            writable = {f.name for f in e.fields if f.writable} | secret
            self.assertEqual(set(create["properties"]), writable)
            self.assertEqual(set(create["required"]), {
                f.name for f in (*e.fields, *e.write_only) if f.required and f.writable})
            self.assertFalse(create["additionalProperties"])
            self.assertNotIn("required", update)
            for f in (*e.fields, *e.write_only):
                if f.name not in create["properties"] or "$ref" in create["properties"][f.name]:
                    continue
                schema = create["properties"][f.name]
                if f.choices:
                    self.assertEqual(schema["enum"], list(f.choices))
                if f.pattern:
                    self.assertEqual(schema["pattern"], f.pattern)
        self.assertEqual(self.schemas["Account"]["properties"]["password"]["writeOnly"], True)
        self.assertEqual(self.schemas["Card"]["properties"]["reseller_id"]["readOnly"], True)
        self.assertNotIn("ha1_md5", self.schemas["Account"]["properties"])
        self.assertEqual(entity("api_key").name, "api_key")
        self.assertIn("key", self.schemas["ApiKeyCreated"]["allOf"][1]["required"])

    def test_schema_keywords(self) -> None:
        """Types are JSON Schema types; patterns compile; required names exist."""
        for path, node in walk(self.schemas):
            kind = node.get("type")
            if isinstance(kind, str | list) and "properties" not in path.split("/")[-1:]:
                kinds = kind if isinstance(kind, list) else [kind]
                if all(isinstance(k, str) for k in kinds):
                    self.assertLessEqual(set(kinds), JSON_TYPES, path)
            if isinstance(node.get("pattern"), str):
                re.compile(node["pattern"])
            if isinstance(node.get("required"), list) and "properties" in node:
                self.assertLessEqual(set(node["required"]), set(node["properties"]), path)

    def test_metaschema(self) -> None:
        """Every component schema is valid JSON Schema 2020-12."""
        if jsonschema_rs is None:
            raise self.skipTest("jsonschema_rs (installed with schemathesis) is missing")
        for name, schema in self.schemas.items():
            self.assertTrue(jsonschema_rs.meta.is_valid(schema), name)


class ServedTests(TestCase):
    """The document as served, and real answers against it."""

    timeout = 60

    async def test_served(self) -> None:
        """GET /api/v1/openapi.json: 200 JSON without a key, the built document."""
        api = await open_api(self)
        reply = await api.request("GET", "openapi.json")
        self.assertEqual((reply.code, reply.header("Content-Type")), (200, "application/json"))
        self.assertEqual(reply.json(), build_document(VERSION))

    async def test_answers_match(self) -> None:
        """Rows, pages, created keys, uploads and errors the API really
        answers validate against the schemas the document gives them."""
        if jsonschema_rs is None:
            raise self.skipTest("jsonschema_rs (installed with schemathesis) is missing")
        api = await open_api(self)
        key = await api.key("admin")
        document = (await api.request("GET", "openapi.json")).json()

        def check(schema: str, value: Any) -> None:
            validator = jsonschema_rs.Draft202012Validator(
                {"$ref": f"#/components/schemas/{schema}", "components": document["components"]})
            errors = [str(e) for e in validator.iter_errors(value)]
            self.assertEqual(errors, [], (schema, value))

        for e in ENTITIES:
            extra = {"document": TARIFF} if e.name == "tariff" else {}
            body = await api.build.payload(e.name, **extra)
            check(f"{schema_name(e)}Create", body)
            created = await api.request("POST", e.collection, key=key, body=body)
            check("ApiKeyCreated" if e.name == "api_key" else schema_name(e), created.json())
            page = await api.request("GET", e.collection, key=key)
            check(f"{schema_name(e)}List", page.json())
        upload = await api.request("POST", "tariffs/import", key=key, raw=b"prefix,price,"
                                   b"intervals\n33,0.1,60/60\n", content_type="text/csv",
                                   params={"name": "deck", "currency": "EUR"})
        check("TariffImported", upload.json())
        bad = await api.request("POST", "tariffs/import", key=key, raw=b"prefix\n",
                                content_type="text/csv",
                                params={"name": "deck2", "currency": "EUR"})
        check("InvalidTariff", bad.json())
        check("ValidationError", (await api.request("POST", "vendors", key=key,
                                                    body={"x": 1})).json())
        check("Conflict", (await api.request("POST", "tariffs/import", key=key,
                                             raw=b"prefix,price,intervals\n33,0.1,60/60\n",
                                             content_type="text/csv",
                                             params={"name": "deck", "currency": "EUR"})).json())
        check("Error", (await api.request("GET", "vendors")).json())


class PartialApiTests(TestCase):
    """An API over only some repositories (no PIN secret: no cards)."""

    timeout = 60

    async def test_without_cards(self) -> None:
        """Collections without a repository are neither served nor documented;
        the document stays whole (every reference resolves)."""
        full = await open_api(self)
        repos = {c: r for c, r in full.repos.items() if c != "cards"}
        root = make_api(repos, full.database, lambda *args: None, version=VERSION)
        self.assertNotIn(b"cards", root.children)
        self.assertIn(b"card_batches", root.children)
        document = root.children[b"openapi.json"].document
        self.assertNotIn("/cards", document["paths"])
        for _, node in walk(document):
            if "$ref" in node:
                resolve(document, node["$ref"])
        without_tariffs = build_document(VERSION, tuple(e for e in ENTITIES
                                                        if e.name != "tariff"))
        self.assertNotIn("TariffDocument", without_tariffs["components"]["schemas"])
        for _, node in walk(without_tariffs):
            if "$ref" in node:
                resolve(without_tariffs, node["$ref"])
        with self.assertRaises(KeyError):
            make_api({c: r for c, r in repos.items() if c != "api_keys"}, full.database,
                     lambda *args: None)
