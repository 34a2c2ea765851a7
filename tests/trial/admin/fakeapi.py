"""A small in-process fake of the switch's REST API, for the admin tool's tests.

L{FakeAPI} serves the API contract (C{/api/v1/<collection>} lists, creates,
reads, updates and deletes, C{POST /api/v1/tariffs/import}, C{POST
/api/v1/rating/quote} (a canned L{QUOTE}), and the error bodies for
401/404/409/422) from dicts, on 127.0.0.1 at an ephemeral port,
with C{http.server} in one thread.  It records every request, and a test
can script the next answer to a path (C{fail}) to see how the tool reports
403, 500 or anything else.  It is started by L{FakeAPI.start} and stopped
by the cleanup that registers, so no test leaves a thread or a port behind.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

KEY = "b2k_test_0123456789"

#: Unique fields per collection (C{None}: across the table, else per that field).
_UNIQUE = {"customers": [("sip_domain", None)], "dids": [("number", None)],
           "accounts": [("number", "customer_id"), ("sip_username", "customer_id")],
           "tariffs": [("name", None)]}
_DOMAIN = re.compile(r"^[A-Za-z0-9.\-]+$")
_E164 = re.compile(r"^\+?[0-9]{2,20}$")
#: What the real API answers for rating.md 2.8 example 1 (75 s) with balance 0.50.
QUOTE: dict[str, Any] = {
    "cost": "0.4100", "currency": None, "destination": "33612345678",
    "start": "2024-05-14T17:59:40+00:00", "duration_s": 75, "billable_s": 75, "free_s": 0,
    "status": "rated", "period_boundary": "start", "ambiguous": False,
    "entry": {"index": 0, "prefix": "33", "prefixes": ["33"], "rate": "R1", "timing": None,
              "weight": "0", "rounding": None, "max_cost": None, "max_cost_strategy": None,
              "effective_from": None, "effective_to": None, "blocked": False},
    "rate": {"id": "R1", "connect_fee": "0.05", "connect_fee_tricky": False,
             "groups": [{"start_s": 0, "price": "0.30", "unit_s": 60, "increment_s": 60,
                         "fixed_fee": "0"},
                        {"start_s": 60, "price": "0.20", "unit_s": 60, "increment_s": 6,
                         "fixed_fee": "0"}],
             "disconnect_fee": "0", "disconnect_fee_after_s": 0, "grace_s": 0,
             "free_seconds": 0, "min_charge": "0", "post_call_surcharge_pct": "0"},
    "components": {
        "bundles": [],
        "groups": [{"rate_id": "R1", "group": 0, "start_s": 0, "price": "0.30", "unit_s": 60,
                    "increment_s": 60, "increments": 1, "seconds": 60, "amount": "0.30"},
                   {"rate_id": "R1", "group": 1, "start_s": 60, "price": "0.20",
                    "unit_s": 60, "increment_s": 6, "increments": 3, "seconds": 18,
                    "amount": "0.06"}],
        "connect_fee": "0.05", "time_charge": "0.36", "discount_pct": "0",
        "discount": "0.00", "bundle_charge": "0", "fixed_fees": "0", "disconnect_fee": "0",
        "surcharge_pct": "0", "surcharge": "0.00", "min_charge_adjustment": "0",
        "max_cost_adjustment": "0", "unrounded": "0.41",
        "rounding": {"method": "up", "decimals": 4, "adjustment": "0.0000"}},
    "balance": "0.50", "max_duration_s": 102, "announced_duration_s": 102,
    "may_announce": True, "limited_by": "credit", "reason": None,
    "max_duration_cost": "0.4900", "cap_s": 10800,
}
_BALANCE_KEYS = ("balance", "max_duration_s", "announced_duration_s", "may_announce",
                 "limited_by", "reason", "max_duration_cost", "cap_s")


@dataclass
class Seen:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body, decoded as JSON."""
        return json.loads(self.body)


@dataclass
class FakeAPI:
    """The fake API's state: rows by collection, requests seen, scripted answers."""

    rows: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    scripted: dict[tuple[str, str], tuple[int, Any, int]] = field(default_factory=dict)
    next_id: int = 1
    url: str = ""

    def start(self, testcase: Any) -> FakeAPI:
        """Serve on 127.0.0.1 (ephemeral port) until C{testcase} ends."""
        api = self

        class Handler(_Handler):
            fake = api

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name="fake-api", daemon=True)
        thread.start()

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)

        testcase.addCleanup(stop)
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        return self

    def add(self, collection: str, **values: Any) -> dict[str, Any]:
        """Store a row directly (as if created earlier) and return it."""
        row = {"id": self.next_id, **values, "created_at": "2024-05-01T12:00:00+00:00"}
        self.rows.setdefault(collection, {})[self.next_id] = row
        self.next_id += 1
        return row

    def fail(self, method: str, path: str, status: int, body: Any, *, after: int = 0) -> None:
        """Answer C{method path} (below /api/v1/) once with C{status} and C{body},
        after serving C{after} such requests normally."""
        self.scripted[(method, path)] = (status, body, after)

    def requests(self, method: str | None = None) -> list[Seen]:
        """The requests seen (of C{method}), in order."""
        return [s for s in self.seen if method is None or s.method == method]

    # -- the contract ------------------------------------------------------------------

    def answer(self, seen: Seen) -> tuple[int, Any]:
        """The status and JSON body for one request."""
        if seen.headers.get("authorization") != f"Bearer {KEY}":
            return 401, {"error": "unauthorized"}
        path = seen.path.removeprefix("/api/v1/")
        script = self.scripted.get((seen.method, path))
        if script is not None:
            status, body, after = script
            if not after:
                del self.scripted[(seen.method, path)]
                return status, body
            self.scripted[(seen.method, path)] = (status, body, after - 1)
        parts = path.split("/")
        if parts == ["tariffs", "import"] and seen.method == "POST":
            return self._import(seen)
        if parts == ["rating", "quote"] and seen.method == "POST":
            return self._quote(seen)
        table = self.rows.setdefault(parts[0], {})
        if len(parts) == 1 and seen.method == "GET":
            return 200, self._list(table, seen.query)
        if len(parts) == 1 and seen.method == "POST":
            return self._create(parts[0], table, seen.json())
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in table:
            return 404, {"error": "not found"}
        row_id = int(parts[1])
        if seen.method == "GET":
            return 200, table[row_id]
        if seen.method == "PATCH":
            table[row_id].update(seen.json())
            return 200, table[row_id]
        del table[row_id]
        return 204, None

    def _list(self, table: dict[int, dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
        limit, offset = int(query.pop("limit", 50)), int(query.pop("offset", 0))
        order = query.pop("order", "id")
        table = dict(sorted(table.items(), reverse=order.startswith("-")))
        items = [r for r in table.values()
                 if all(str(r.get(k)) == v for k, v in query.items())]
        return {"items": items[offset:offset + limit], "total": len(items), "limit": limit,
                "offset": offset}

    def _create(self, collection: str, table: dict[int, dict[str, Any]],
                values: dict[str, Any]) -> tuple[int, Any]:
        fields = {}
        if collection == "customers":
            if not _DOMAIN.match(values.get("sip_domain", "")):
                fields["sip_domain"] = "must match ^[A-Za-z0-9.\\-]+$"
            if not re.match(r"^[A-Z]{3}$", values.get("currency", "")):
                fields["currency"] = "must be 3 capital letters"
        if collection == "dids" and not _E164.match(values.get("number", "")):
            fields["number"] = "must be E.164 digits"
        if fields:
            return 422, {"error": "validation failed", "fields": fields}
        for name, scope in _UNIQUE.get(collection, ()):
            for row in table.values():
                if row.get(name) == values.get(name) and (
                        scope is None or row.get(scope) == values.get(scope)):
                    return 409, {"error": "conflict", "field": name}
        stored = {k: v for k, v in values.items() if k != "password"}
        if collection == "api_keys":
            stored.update(prefix="b2k_new", revoked=False)
        row = self.add(collection, **stored)
        if collection == "api_keys":
            return 201, {**row, "key": "b2k_new_secret_key"}
        return 201, row

    def _quote(self, seen: Seen) -> tuple[int, Any]:
        """L{QUOTE}, with the stored tariff's currency and only the balance
        members a balance asks for; 404 for an unknown C{tariff_id}."""
        if seen.headers.get("content-type") != "application/json":
            return 415, {"error": "unsupported media type"}
        values = seen.json()
        answer = dict(QUOTE)
        if "tariff_id" in values:
            row = self.rows.get("tariffs", {}).get(values["tariff_id"])
            if row is None:
                return 404, {"error": "not found"}
            answer["currency"] = row.get("currency")
        if "balance" not in values:
            answer = {k: v for k, v in answer.items() if k not in _BALANCE_KEYS}
        return 200, answer

    def _import(self, seen: Seen) -> tuple[int, Any]:
        if seen.headers.get("content-type") != "text/csv":
            return 415, {"error": "unsupported media type"}
        reader = csv.DictReader(io.StringIO(seen.body.decode("utf-8")))
        bad, entries = [], []
        for number, record in enumerate(reader, start=2):
            try:
                float(record.get("price") or "x")
            except ValueError:
                bad.append({"row": number, "column": "price", "message": "not a decimal"})
            entries.append({"prefix": record.get("prefix")})
        if bad:
            return 422, {"error": "validation failed", "rows": bad}
        row = self.add("tariffs", name=seen.query.get("name"),
                       currency=seen.query.get("currency"), document={"entries": entries})
        warnings = ["no rate for prefix 2"] if seen.query.get("timezone") else []
        return 201, {**row, "warnings": warnings}


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP requests into L{FakeAPI.answer} calls."""

    fake: FakeAPI

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        seen = Seen(self.command, parts.path, dict(parse_qsl(parts.query)),
                    {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
        self.fake.seen.append(seen)
        status, body = self.fake.answer(Seen(seen.method, seen.path, dict(seen.query),
                                             seen.headers, seen.body))
        raw = isinstance(body, bytes)
        data = body if raw else b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if data and not raw:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""
