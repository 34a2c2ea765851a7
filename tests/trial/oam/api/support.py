"""The REST API under test: a real SQLite database, the real OAM site with
the API mounted, and L{treq.testing.StubTreq} talking to its resource tree.

SQL runs in the database's worker thread, so these tests run on the real
reactor: a request is answered once the worker is done, and the in-memory
HTTP connection is pumped until then (bounded: L{ANSWER_WITHIN} seconds).
The database (and its thread pool) is closed after every test.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import treq
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from b2bua.db.changes import ChangeFeed
from b2bua.db.database import Database
from b2bua.db.interfaces import Scope
from b2bua.db.migrations import migrate
from b2bua.db.repository import Repository, repositories
from b2bua.metrics import Metrics
from oam.api import make_api, mount
from oam.site import OAMSite
from tests.trial.db.support import SECRET, Builder, Tenant

ADMIN = Scope.admin("test")
BASE = "http://oam.test/api/v1/"
#: The longest a request may take to be answered, in seconds.
ANSWER_WITHIN = 10.0
VERSION = "9.9.9-test"


@dataclass
class Reply:
    """A fully read HTTP answer."""

    code: int
    headers: Any
    body: bytes

    def header(self, name: str) -> str | None:
        """The single value of a response header, or C{None}."""
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Api:
    """A database, its repositories, the site serving the API and a client.

    @ivar keys: role -> plaintext key made by L{key}, for convenience.
    """

    database: Database
    repos: dict[str, Repository]
    build: Builder
    metrics: Metrics
    site: OAMSite
    client: StubTreq
    keys: dict[str, str] = field(default_factory=dict)

    async def _pumped(self, d: Deferred[Any]) -> Any:
        """Pump the in-memory connection until C{d} fires; its result."""
        box: list[Any] = []
        d.addBoth(box.append)
        deadline = reactor.seconds() + ANSWER_WITHIN
        while not box:
            self.client.flush()
            if box:
                break
            if reactor.seconds() > deadline:
                raise AssertionError("the API did not answer in time")
            await deferLater(reactor, 0.001, lambda: None)
        if isinstance(box[0], Failure):
            box[0].raiseException()
        return box[0]

    async def request(self, method: str, path: str, *, key: str | None = None,
                      body: Any = None, raw: bytes | None = None,
                      content_type: str | None = None, params: dict[str, Any] | None = None,
                      headers: dict[str, str] | None = None) -> Reply:
        """Send one request to C{/api/v1/<path>}; the complete reply.

        @param body: sent as JSON (with C{Content-Type: application/json}).
        @param raw: sent as is, with C{content_type}.
        """
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            sent.setdefault("Content-Type", "application/json")
        if content_type is not None:
            sent["Content-Type"] = content_type
        url = BASE + path.lstrip("/")
        if params:
            url += "?" + urlencode(params, doseq=True)
        response = await self._pumped(self.client.request(
            method, url, headers={k: [v] for k, v in sent.items()}, data=data))
        content = await self._pumped(treq.content(response))
        return Reply(response.code, response.headers, content)

    async def key(self, role: str, tenant: Tenant | None = None, **owners: Any) -> str:
        """A new API key of C{role} (for C{tenant}'s reseller, customer or
        account), made by an admin; its plaintext."""
        values: dict[str, Any] = {"name": f"{role} key", "role": role}
        if tenant is not None:
            values.update({"reseller": {"reseller_id": tenant.reseller_id},
                           "customer": {"customer_id": tenant.customer_id},
                           "enduser": {"customer_id": tenant.customer_id,
                                       "account_id": tenant.account_id}}.get(role, {}))
        values.update(owners)
        row = await self.repos["api_keys"].create(values, ADMIN)
        return str(row["key"])

    def errors(self) -> float:
        """How many unexpected API errors the metrics counted."""
        value = self.metrics.registry.get_sample_value(
            "b2bua_oam_http_errors_total", {"route": "api"})
        return value or 0.0


async def open_api(testcase: Any, plugin_state: Any = None) -> Api:
    """A migrated SQLite database in the test's temporary directory and the
    API over it (with the plugins' state C{plugin_state}, a zero-argument
    callable, when given); everything is closed after the test."""
    path = os.path.abspath(testcase.mktemp()) + ".db"
    database = Database(f"sqlite:///{path}", reactor)
    testcase.addCleanup(database.close)
    await migrate(database)
    repos = repositories(database, ChangeFeed(), SECRET)
    metrics = Metrics()
    site = OAMSite(metrics, lambda: True, lambda: None, lambda: False, VERSION)
    mount(site, make_api(repos, database, site.report_error, version=VERSION,
                         plugin_state=plugin_state))
    return Api(database, repos, Builder(repos), metrics, site, StubTreq(site.resource))


#: A valid tariff document (rating.md section 6).
TARIFF = {
    "timezone": "Europe/Paris",
    "rates": {"R1": {"connect_fee": "0.01",
                     "groups": [{"start_s": 0, "price": "0.05", "unit_s": 60,
                                 "increment_s": 60},
                                {"start_s": 60, "price": "0.04", "unit_s": 60,
                                 "increment_s": 6}]}},
    "entries": [{"prefixes": ["33"], "rate": "R1"}, {"prefixes": ["*any"], "blocked": True}],
}
