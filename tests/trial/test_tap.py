"""Tests for L{b2bua.tap} and the twistd drop-in C{twisted/plugins/b2bua_plugin.py}.

Option parsing runs in process (with standard error captured); two tests run
a real C{twistd} in a child process, bounded by a timeout, to check what an
operator sees.  No test here opens a socket: a bad configuration stops
start-up before anything listens.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from twisted.application.service import IService, IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from b2bua import tap
from b2bua.config import load_config
from b2bua.service import SwitchService

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "etc" / "b2bua.toml")
BAD = """
[sip]
listen = ["udp:127.0.0.1:5060", "udp:127.0.0.1:99999"]
t1 = "fast"
[oam]
listn = "tcp:8080"
"""
#: Seconds a child twistd may take before the test fails (and it is killed).
CHILD_TIMEOUT = 30


class _TapTestCase(SynchronousTestCase):
    """Captures standard error and writes configuration files."""

    def setUp(self) -> None:
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def write(self, text: str) -> str:
        """Write C{text} to a fresh file; return its path."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def assertRefused(self, parse: object, *args: object) -> list[str]:
        """C{parse(*args)} exits with status 2; return the lines it wrote."""
        error = self.assertRaises(SystemExit, parse, *args)
        self.assertEqual(error.code, tap.EXIT_CONFIG)
        output = self.stderr.getvalue()
        self.assertNotIn("Traceback", output)
        self.assertTrue(output.endswith("\n"))
        lines = output.splitlines()
        for line in lines:
            self.assertTrue(line.startswith("b2bua: config error: "), line)
        return lines

    def assertBadFileLines(self, lines: list[str], path: str) -> None:
        """C{lines} are the three problems of L{BAD} in C{path}, in order."""
        prefix = f"b2bua: config error: {path}: "
        self.assertEqual([line.removeprefix(prefix).split(":")[0] for line in lines],
                         ["sip.listen[1]", "sip.t1", "oam.listn"])
        self.assertIn("did you mean oam.listen?", lines[2])


class OptionsTests(_TapTestCase):
    """L{tap.Options}: C{--config} loads and checks the file at parse time."""

    def test_no_config_is_the_demo(self) -> None:
        """Without C{--config} the loaded configuration is the demo."""
        options = tap.Options()
        options.parseOptions([])
        self.assertIsNone(options["config"])
        self.assertTrue(options["loaded"].demo)
        self.assertEqual(self.stderr.getvalue(), "")

    def test_config_file(self) -> None:
        """C{--config FILE} (and C{-c FILE}) load that file."""
        for flag in ("--config", "-c"):
            options = tap.Options()
            options.parseOptions([flag, EXAMPLE])
            self.assertEqual(options["config"], EXAMPLE)
            self.assertEqual(options["loaded"], load_config(EXAMPLE))
            self.assertFalse(options["loaded"].demo)

    def test_bad_config_exits(self) -> None:
        """A bad file exits with status 2, one line per problem, no traceback."""
        path = self.write(BAD)
        lines = self.assertRefused(tap.Options().parseOptions, ["--config", path])
        self.assertBadFileLines(lines, path)

    def test_missing_file_exits(self) -> None:
        """A missing file is one line."""
        path = self.mktemp()
        lines = self.assertRefused(tap.Options().parseOptions, ["--config", path])
        self.assertEqual(lines, [f"b2bua: config error: {path}: cannot read "
                                 "(No such file or directory)"])

    def test_invalid_toml_exits(self) -> None:
        """A file that is not TOML is one line."""
        path = self.write("[sip\n")
        lines = self.assertRefused(tap.Options().parseOptions, ["--config", path])
        self.assertEqual(len(lines), 1)
        self.assertIn("not valid TOML", lines[0])

    def test_unknown_option(self) -> None:
        """An unknown option is a usage error, as for any twistd plugin."""
        self.assertRaises(usage.UsageError, tap.Options().parseOptions, ["--bogus"])

    def test_missing_argument(self) -> None:
        """C{--config} needs a value."""
        self.assertRaises(usage.UsageError, tap.Options().parseOptions, ["--config"])

    def test_help_mentions_config_and_demo(self) -> None:
        """The help text documents C{--config} and the demo."""
        text = str(tap.Options())
        self.assertIn("--config", text)
        self.assertIn("demo", text)


class MakeServiceTests(_TapTestCase):
    """L{tap.makeService} and L{tap.build_service}."""

    def test_make_service(self) -> None:
        """The service tree is a L{SwitchService} on the global reactor, not started."""
        from twisted.internet import reactor

        options = tap.Options()
        options.parseOptions(["--config", EXAMPLE])
        service = tap.makeService(options)
        self.assertIsInstance(service, SwitchService)
        self.assertTrue(IService.providedBy(service))
        self.assertIs(service.reactor, reactor)
        self.assertIs(service.config, options["loaded"])
        self.assertFalse(service.running)
        self.assertEqual(service.transport.listeners, [])

    def test_build_service_on_memory_reactor(self) -> None:
        """L{tap.build_service} takes the reactor: building touches nothing."""
        reactor = MemoryReactorClock()
        service = tap.build_service(reactor, load_config(None))
        self.assertIsInstance(service, SwitchService)
        self.assertIs(service.reactor, reactor)
        self.assertEqual((reactor.tcpServers, reactor.getDelayedCalls()), ([], []))

    def test_unknown_disabled_plugin_exits(self) -> None:
        """A name in C{plugins.disabled} that no plugin has stops start-up
        with one line, like a bad file."""
        path = self.write('[plugins]\ndisabled = ["no-such-plugin"]\n')
        config = load_config(path)
        lines = self.assertRefused(tap.build_service, MemoryReactorClock(), config)
        self.assertEqual(lines, [f"b2bua: config error: {path}: plugins.disabled names "
                                 "unknown plugins: ['no-such-plugin']"])


class TwistdPluginTests(_TapTestCase):
    """The drop-in is found by twistd and drives L{tap}."""

    def maker(self) -> IServiceMaker:
        """The C{b2bua} service maker found through the plugin system."""
        import twisted.plugins

        makers = [m for m in getPlugins(IServiceMaker, twisted.plugins) if m.tapname == "b2bua"]
        self.assertEqual(len(makers), 1, "the b2bua drop-in is not on twisted.plugins.__path__")
        return makers[0]

    def test_discoverable(self) -> None:
        """C{getPlugins(IServiceMaker)} finds C{b2bua}, pointing at L{tap}."""
        maker = self.maker()
        self.assertIs(maker.options, tap.Options)
        self.assertIs(maker.makeService, tap.makeService)
        self.assertTrue(maker.description)

    def test_server_options_demo(self) -> None:
        """C{twistd b2bua} parses to the demo configuration."""
        config = ServerOptions()
        config.parseOptions(["-n", "b2bua"])
        self.assertEqual(config.subCommand, "b2bua")
        self.assertTrue(config["nodaemon"])
        self.assertTrue(config.subOptions["loaded"].demo)

    def test_server_options_config(self) -> None:
        """C{twistd b2bua --config FILE} hands the file to L{tap.Options}."""
        config = ServerOptions()
        config.parseOptions(["-n", "b2bua", "--config", EXAMPLE])
        self.assertEqual(config.subOptions["loaded"].source, EXAMPLE)

    def test_server_options_bad_config(self) -> None:
        """C{twistd b2bua --config BAD} exits 2 with one line per problem."""
        path = self.write(BAD)
        lines = self.assertRefused(ServerOptions().parseOptions,
                                   ["-n", "b2bua", "--config", path])
        self.assertBadFileLines(lines, path)


class TwistdProcessTests(SynchronousTestCase):
    """A real C{twistd} in a child process: what the operator sees."""

    def twistd(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run C{twistd ARGS} with the repository on C{PYTHONPATH}, bounded."""
        cwd = self.mktemp()
        os.mkdir(cwd)  # any pid or log file lands here, not in the tree
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        code = "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"
        return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT)

    def test_bad_config(self) -> None:
        """C{twistd -n b2bua --config BAD}: non-zero exit, the problems on
        standard error one per line naming the keys, no traceback."""
        path = os.path.abspath(self.mktemp())
        with open(path, "w", encoding="utf-8") as f:
            f.write(BAD)
        result = self.twistd("-n", "--pidfile=", "b2bua", "--config", path)
        self.assertEqual(result.returncode, tap.EXIT_CONFIG, result.stderr)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertEqual(result.stderr.splitlines(), [
            f"b2bua: config error: {path}: sip.listen[1]: bad SIP listener "
            "'udp:127.0.0.1:99999': bad port '99999'",
            f"b2bua: config error: {path}: sip.t1: expected a number (got 'fast')",
            f"b2bua: config error: {path}: oam.listn: unknown key "
            "(did you mean oam.listen?)",
        ])

    def test_unknown_plugin(self) -> None:
        """A problem found while building the service is one line too."""
        path = os.path.abspath(self.mktemp())
        with open(path, "w", encoding="utf-8") as f:
            # should it start anyway, it binds one ephemeral loopback port
            f.write('[sip]\nlisten = ["udp:127.0.0.1:0"]\n[oam]\nenabled = false\n'
                    '[plugins]\ndisabled = ["nope"]\n')
        result = self.twistd("-n", "--pidfile=", "b2bua", "--config", path)
        self.assertEqual(result.returncode, tap.EXIT_CONFIG, result.stderr)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertEqual(result.stderr.splitlines(), [
            f"b2bua: config error: {path}: plugins.disabled names unknown plugins: ['nope']"])

    def test_help(self) -> None:
        """C{twistd b2bua --help} lists C{--config} and exits 0."""
        result = self.twistd("b2bua", "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("--config", result.stdout)
