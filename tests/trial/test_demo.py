"""Tests for L{b2bua.demo}: the embedded demo's data, seeded once into SQLite.

The switch is started on the memory reactor of L{tests.trial.test_service}
with its demo database in a temporary folder (the real demo uses
C{./var/}); SQL runs in a real worker thread whose results
L{run_until} delivers, each wait bounded.  A restart is a second service on
the same folder.
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from b2bua import demo
from b2bua.config import PluginsConfig
from b2bua.db.interfaces import Scope
from b2bua.db.repository import find_api_key
from b2bua.service import SwitchService
from b2bua.sip.auth import compute_ha1
from media.server.plugin import NAME, MediaServerSettings
from tests.trial.test_service import FakeReactor, config_from, database_in, demo_config, run_until

ADMIN = Scope.admin("test")


def mode(path: str) -> int:
    """The permission bits of C{path}."""
    return stat.S_IMODE(os.stat(path).st_mode)


class DemoServiceTests(SynchronousTestCase):
    """The demo as the service runs it: first start, later starts."""

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.folder = os.path.abspath(self.mktemp())
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def start(self) -> SwitchService:
        """Start the demo on this test's folder and wait until it is ready."""
        failures: list[str] = []
        service = SwitchService(self.reactor, demo_config(self.folder), fatal=failures.append)
        service.startService()
        self.addCleanup(self.stop, service)
        run_until(self.reactor, service.when_started())
        self.assertEqual(failures, [])
        self.assertTrue(service.ready)
        return service

    def stop(self, service: SwitchService) -> None:
        """Stop C{service} if it runs; nothing may be left on the clock."""
        if service.running:
            self.wait(service.stopService())
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def wait(self, d: Deferred[Any]) -> Any:
        """The result of C{d}, once the worker thread delivered it."""
        run_until(self.reactor, d)
        return self.successResultOf(d)

    def key_lines(self) -> list[str]:
        """Every logged line showing the admin API key."""
        return [formatEvent(e) for e in self.events if "admin API key: " in formatEvent(e)]

    def test_first_start_seeds_the_demo(self) -> None:
        """The first start creates the tenant (USD), extensions 1000-1019
        with password 1234 stored as HA1, an admin API key shown once and
        saved with mode 0600, and the PIN secret (mode 0600)."""
        service = self.start()
        snapshot = service.snapshot
        tenant = snapshot.tenant("127.0.0.1")
        self.assertEqual((tenant.name, tenant.currency), ("demo", "USD"))
        self.assertEqual(sorted(e.number for e in snapshot.extensions("127.0.0.1")),
                         [str(n) for n in range(1000, 1020)])
        self.assertEqual(snapshot.lookup_ha1("1007", "127.0.0.1", "MD5"),
                         compute_ha1("1007", "127.0.0.1", "1234", "MD5"))

        key_file = os.path.join(self.folder, "admin-api-key")
        self.assertEqual(service.admin_key_file, key_file)
        self.assertEqual(mode(key_file), 0o600)
        with open(key_file) as f:
            key = f.read().strip()
        self.assertTrue(key.startswith("b2k_"), key)
        [line] = self.key_lines()
        self.assertTrue(line.startswith(f"admin API key: {key} "), line)
        row = self.wait(find_api_key(service.database, key))
        self.assertEqual((row["role"], row["name"]), ("admin", demo.ADMIN_KEY_NAME))

        secret_file = os.path.join(self.folder, "secret")
        self.assertEqual(mode(secret_file), 0o600)
        with open(secret_file) as f:
            self.assertEqual(service.repositories["cards"].secret, f.read().strip())

    def test_restart_keeps_everything(self) -> None:
        """A later start recreates nothing: the key file and the secret are
        unchanged, the key is not shown again, an extension added in
        between is still there and one deleted stays deleted."""
        first = self.start()
        tenant = first.snapshot.tenant("127.0.0.1")
        self.wait(first.repositories["accounts"].create(
            {"customer_id": tenant.id, "number": "1020", "sip_username": "1020",
             "password": "another secret"}, ADMIN))
        gone = first.snapshot.extension("127.0.0.1", "1005")
        self.wait(first.repositories["accounts"].delete(gone.id, ADMIN))
        with open(os.path.join(self.folder, "admin-api-key")) as f:
            key = f.read()
        with open(os.path.join(self.folder, "secret")) as f:
            secret = f.read()
        self.stop(first)

        second = self.start()
        self.assertIsNone(second.admin_key_file)
        self.assertEqual(len(self.key_lines()), 1)
        with open(os.path.join(self.folder, "admin-api-key")) as f:
            self.assertEqual(f.read(), key)
        with open(os.path.join(self.folder, "secret")) as f:
            self.assertEqual(f.read(), secret)
        self.assertEqual(second.snapshot.lookup_ha1("1020", "127.0.0.1", "SHA-256"),
                         compute_ha1("1020", "127.0.0.1", "another secret", "SHA-256"))
        self.assertIsNone(second.snapshot.extension("127.0.0.1", "1005"))
        self.assertEqual(len(second.snapshot), 20)
        self.assertEqual(self.wait(find_api_key(second.database, key.strip()))["role"],
                         "admin")

    def test_interrupted_seed_is_completed(self) -> None:
        """A seed stopped before its admin key exists is completed by the
        next start (only what is missing is created)."""
        url = database_in(self.folder)
        seeded = self.wait(demo.seed_database(url, self.reactor, numbers=("1000", "1001"),
                                              admin_key=False))
        self.assertEqual((seeded.created, seeded.admin_key), (("1000", "1001"), None))
        service = self.start()
        self.assertEqual(len(service.snapshot), 20)
        self.assertEqual(len(self.key_lines()), 1)

    def test_seeding_a_configured_database(self) -> None:
        """C{seed_database} gives a switch started with a configuration file
        the demo extensions (as the integration tests do); the switch itself
        seeds nothing."""
        url = database_in(self.folder)
        seeded = self.wait(demo.seed_database(url, self.reactor, admin_key=False))
        self.assertEqual(seeded.created, demo.DEMO_NUMBERS)
        self.assertTrue(seeded.first_start)
        again = self.wait(demo.seed_database(url, self.reactor, admin_key=False))
        self.assertEqual(again.created, ())
        self.assertFalse(again.first_start)
        config = config_from({"sip": {"listen": ["udp:127.0.0.1:5060"]}}, self.folder)
        service = SwitchService(self.reactor, config, fatal=self.fail)
        service.startService()
        self.addCleanup(self.stop, service)
        run_until(self.reactor, service.when_started())
        self.assertIsNotNone(service.snapshot.by_username("127.0.0.1", "1003"))
        self.assertEqual(self.key_lines(), [])
        self.assertFalse(os.path.exists(os.path.join(self.folder, "admin-api-key")))


class FilesTests(SynchronousTestCase):
    """The demo's files next to its database."""

    def test_state_directory(self) -> None:
        """The folder of a SQLite file; nothing for memory or PostgreSQL."""
        self.assertEqual(demo.state_directory("sqlite:///var/b2bua.db"), "var")
        self.assertEqual(demo.state_directory("sqlite:///b2bua.db"), ".")
        self.assertEqual(demo.state_directory("sqlite:////srv/b2bua/b2bua.db"), "/srv/b2bua")
        self.assertIsNone(demo.state_directory("sqlite:///:memory:"))
        self.assertIsNone(demo.state_directory("postgresql://db/b2bua"))

    def test_write_private(self) -> None:
        """The file (and its folder) are made; mode 0600 even when the file
        existed with wider permissions."""
        path = os.path.join(self.mktemp(), "sub", "key")
        demo.write_private(path, "one")
        self.assertEqual(mode(path), 0o600)
        os.chmod(path, 0o644)
        demo.write_private(path, "two")
        self.assertEqual(mode(path), 0o600)
        with open(path) as f:
            self.assertEqual(f.read(), "two\n")

    def test_demo_secret(self) -> None:
        """Made once (mode 0600) and then read back; a file without a usable
        secret is refused rather than replaced."""
        folder = self.mktemp()
        made = demo.demo_secret(folder, token=lambda n: "x" * n)
        self.assertEqual(made, "x" * 32)
        self.assertEqual(mode(os.path.join(folder, "secret")), 0o600)
        self.assertEqual(demo.demo_secret(folder, token=lambda n: "other" * n), made)
        with open(os.path.join(folder, "secret"), "w") as f:
            f.write("short\n")
        error = self.assertRaises(ValueError, demo.demo_secret, folder)
        self.assertIn("holds no usable secret", str(error))


class DemoMediaServerTests(SynchronousTestCase):
    """The demo's media server (L{demo.plugin_settings})."""

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.folder = os.path.abspath(self.mktemp())

    def start(self, **media_server: Any) -> SwitchService:
        """The demo configuration with the demo's plugin tables (what
        C{load_config(None)} gives), on the memory reactor."""
        config = demo_config(self.folder)
        config = replace(config, plugins=PluginsConfig(
            settings=demo.plugin_settings(**media_server)))
        failures: list[str] = []
        service = SwitchService(self.reactor, config, fatal=failures.append)
        service.startService()
        run_until(self.reactor, service.when_started())
        self.assertEqual(failures, [])
        self.addCleanup(self.stop, service)
        return service

    def stop(self, service: SwitchService) -> None:
        """Stop the service; nothing may be left on the clock."""
        if service.running:
            stopped = service.stopService()
            run_until(self.reactor, stopped)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_settings(self) -> None:
        """Enabled on loopback 5070 with *43, *60 and *88; the demo keeps
        its recordings under var/; overrides apply to a copy."""
        settings = MediaServerSettings(demo.plugin_settings()["media_server"])
        self.assertTrue(settings.enabled)
        self.assertEqual((settings.host, settings.port), ("127.0.0.1", 5070))
        self.assertEqual(settings.extensions, {"*43": "echo", "*60": "speaking_clock",
                                               "*88": "conference"})
        self.assertEqual(settings.recordings, "var/recordings")
        self.assertEqual(demo.plugin_settings(listen="127.0.0.1:5072")["media_server"]["listen"],
                         "127.0.0.1:5072")
        self.assertEqual(demo.DEMO_MEDIA_SERVER["listen"], "127.0.0.1:5070")

    def test_demo_runs_the_media_server(self) -> None:
        """The demo switch starts the media server on 127.0.0.1:5070 with
        the demo's flows; its RTP range is not the relay's."""
        service = self.start()
        plugin = service.pm.get_plugin(NAME)
        self.assertIsNotNone(plugin.ua)
        self.assertIn((5070, "127.0.0.1"), [(p, i) for p, _, i, _ in self.reactor.udp_servers])
        self.assertTrue({"echo", "speaking_clock", "conference"} <= set(plugin.ua.flows))
        relay = range(service.config.media.port_min, service.config.media.port_max + 1)
        self.assertNotIn(plugin.settings.port_min, relay)
        self.assertNotIn(plugin.settings.port_max, relay)

    def test_moved(self) -> None:
        """Tests move the media server off 5070, or turn it off."""
        self.start(listen="127.0.0.1:5072")
        self.assertIn(5072, [p for p, _, _, _ in self.reactor.udp_servers])
        self.assertNotIn(5070, [p for p, _, _, _ in self.reactor.udp_servers])

    def test_disabled(self) -> None:
        """C{enabled=False}: no media server."""
        service = self.start(enabled=False)
        self.assertIsNone(service.pm.get_plugin(NAME).ua)
        self.assertNotIn(5070, [p for p, _, _, _ in self.reactor.udp_servers])
