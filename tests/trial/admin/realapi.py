"""The real API on a loopback port, and the CLI run against it (shared by
the end-to-end tests of the admin tool)."""

from __future__ import annotations

import io
import os

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from b2bua.admin.cli import Console, main
from b2bua.db.changes import ChangeFeed
from b2bua.db.database import Database
from b2bua.db.interfaces import Scope
from b2bua.db.repository import repositories
from b2bua.metrics import Metrics
from oam.api import make_api, mount
from oam.site import OAMSite

ADMIN = Scope.admin("test")


class RealAPITestCase(TestCase):
    """Serves the real API over a migrated database and runs the CLI on it."""

    timeout = 60

    async def serve_api(self, database: Database, name: str) -> None:
        """Serve the API over C{database} on a free loopback port, with an
        admin key in C{self.environ} and a scratch folder in C{self.directory}."""
        self.repos = repositories(database, ChangeFeed(), f"{name}-pin-secret".encode())
        site = OAMSite(Metrics(), lambda: True, lambda: None, lambda: False, name)
        mount(site, make_api(self.repos, database, site.report_error, version=name))
        port = reactor.listenTCP(0, site.make_site(reactor), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        key = await self.repos["api_keys"].create({"name": "ops", "role": "admin"}, ADMIN)
        self.environ = {"B2BUA_URL": f"http://127.0.0.1:{port.getHost().port}",
                        "B2BUA_API_KEY": str(key["key"])}
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    async def cli(self, *argv: str, key: str | None = None) -> tuple[int, str, str]:
        """Run one command line in a worker thread; status, stdout, stderr."""
        out, err = io.StringIO(), io.StringIO()
        environ = dict(self.environ, **({"B2BUA_API_KEY": key} if key else {}))
        console = Console(io.BytesIO(), out, err, environ,
                          key_file=os.path.join(self.directory, "no-key-file"))
        code = await deferToThread(main, [*argv, "--timeout", "20"], console)
        return code, out.getvalue(), err.getvalue()
