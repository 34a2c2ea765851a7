"""Tests for L{b2bua.config}: every key checked, every problem reported at once.

A bad file must give one line per problem, each naming the file and the key
(C{FILE: sip.listen[1]: ...}); these tests pin those lines.  They also check
that C{etc/b2bua.toml} loads and that it and C{docs/configuration.md} name
every key the loader knows.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from b2bua.config import (
    SECTIONS,
    Config,
    ConfigError,
    CoreConfig,
    OAMConfig,
    PluginsConfig,
    SIPConfig,
    StorageConfig,
    TLSConfig,
    load_config,
    parse_config,
)
from b2bua.sip import tls as sip_tls
from b2bua.sip.listeners import parse_listener
from tests.trial.sip.test_tls import make_tls_config

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "f.toml"

#: Each section's dataclass, for the "every key" checks (C{tls} is a table).
SECTION_TYPES = {"sip": SIPConfig, "core": CoreConfig, "storage": StorageConfig,
                 "oam": OAMConfig, "sip.tls": TLSConfig}


def parse(text: str) -> Config:
    """Parse TOML C{text} as the file C{f.toml}."""
    return parse_config(tomllib.loads(text), SOURCE)


class _ConfigTestCase(SynchronousTestCase):
    """Helpers shared by the tests below."""

    def problems(self, text: str) -> list[str]:
        """The problems of the TOML C{text}; fails if it is accepted."""
        error = self.assertRaises(ConfigError, parse, text)
        self.assertEqual(str(error), "\n".join(error.problems))
        for line in error.problems:
            self.assertNotIn("\n", line)
            self.assertTrue(line.startswith(f"{SOURCE}: "), line)
        return error.problems

    def assertProblem(self, text: str, expected: str) -> None:
        """C{text} gives exactly the one problem C{f.toml: expected}."""
        self.assertEqual(self.problems(text), [f"{SOURCE}: {expected}"])

    def assertProblemStarts(self, text: str, key: str, *fragments: str) -> None:
        """C{text} gives one problem about C{key} containing every fragment."""
        problems = self.problems(text)
        self.assertEqual(len(problems), 1, problems)
        self.assertTrue(problems[0].startswith(f"{SOURCE}: {key}: "), problems[0])
        for fragment in fragments:
            self.assertIn(fragment, problems[0])

    def write(self, data: bytes | str) -> str:
        """Write C{data} to a fresh file; return its path."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        return path


class DefaultsAndDemoTests(_ConfigTestCase):
    """An empty file gives the defaults; no file gives the loopback demo."""

    def test_empty_file_gives_defaults(self) -> None:
        """An empty file is valid: every section takes its defaults."""
        config = load_config(self.write(""))
        self.assertEqual(config.sip, SIPConfig())
        self.assertEqual(config.core, CoreConfig())
        self.assertEqual(config.storage, StorageConfig())
        self.assertEqual(config.oam, OAMConfig())
        self.assertEqual(config.plugins, PluginsConfig())
        self.assertFalse(config.demo)

    def test_source_is_the_path(self) -> None:
        """The loaded config remembers the file (a C{str} or a C{Path})."""
        path = self.write("")
        self.assertEqual((load_config(path).source, load_config(Path(path)).source),
                         (path, path))

    def test_demo_without_a_file(self) -> None:
        """C{load_config(None)} is the demo, flagged as such, storing
        registrations and balances in memory and provisioning in SQLite
        under C{./var/} (migrated at start)."""
        config = load_config(None)
        self.assertTrue(config.demo)
        self.assertEqual(config.source, "<demo>")
        self.assertEqual((config.storage.locations, config.storage.balances),
                         ("memory", "memory"))
        self.assertEqual(config.storage.database, "sqlite:///var/b2bua.db")
        self.assertTrue(config.storage.should_migrate)

    def test_demo_listens_on_loopback_only(self) -> None:
        """Every demo listener, SIP and OAM, is on a loopback address."""
        config = load_config(None)
        self.assertEqual(config.sip.listen, ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"))
        for listener in config.sip.listen:
            address = parse_listener(listener)
            self.assertTrue(ipaddress.ip_address(address.host).is_loopback, listener)
            self.assertIsNone(address.advertise)
        self.assertTrue(config.oam.enabled)
        self.assertEqual(config.oam.listen, "tcp:8080:interface=127.0.0.1")

    def test_demo_offers_md5_first(self) -> None:
        """The demo offers MD5 first so that any softphone can register."""
        self.assertEqual(load_config(None).sip.digest_algorithms, ("MD5", "SHA-256"))

    def test_auth_secret_hidden_from_repr(self) -> None:
        """The digest secret never shows in a printed (logged) configuration."""
        config = parse('[sip]\nauth_secret = "0123456789abcdef-very-secret"\n')
        self.assertEqual(config.sip.auth_secret, "0123456789abcdef-very-secret")
        self.assertNotIn("very-secret", repr(config))

    def test_input_not_modified(self) -> None:
        """L{parse_config} leaves the parsed TOML it is given untouched."""
        data = tomllib.loads('[sip]\nt1 = 1\n[sip.tls]\nverify_peer = true\n'
                            '[plugins]\ndisabled = ["x"]\n[plugins.x]\na = 1\n')
        before = repr(data)
        parse_config(data, SOURCE)
        self.assertEqual(repr(data), before)


class SIPSectionTests(_ConfigTestCase):
    """The C{[sip]} keys: types, ranges, listeners."""

    def test_all_keys(self) -> None:
        """Every C{[sip]} key is read into L{SIPConfig}."""
        sip = parse("""
            [sip]
            listen = ["udp:127.0.0.1:5070", "tcp:[::1]:5070"]
            t1 = 1
            t2 = 8.5
            t4 = 2.5
            max_message_size = 4096
            idle_timeout = 30
            max_connections_per_source = 3
            realm = "example.com"
            auth_secret = "sixteen-chars-ok"
            user_agent = "Acme SBC/1.0"
            digest_algorithms = ["SHA-256-sess", "md5"]
            digest_check_uri = false
        """).sip
        self.assertEqual(sip, SIPConfig(
            ("udp:127.0.0.1:5070", "tcp:[::1]:5070"), 1.0, 8.5, 2.5, 4096, 30.0, 3,
            "example.com", "sixteen-chars-ok", "Acme SBC/1.0", ("SHA-256-sess", "MD5"), False))
        self.assertIsInstance(sip.t1, float)

    def test_listener_forms_accepted(self) -> None:
        """IPv6, UDP and TCP on one address, a default port, port 0 (twice) and
        a wildcard with advertise pass."""
        listen = ["udp:[::1]:5060", "tcp:[::1]:5060", "tcp:127.0.0.1", "udp:127.0.0.1:0",
                  "tcp:127.0.0.1:0", "udp:127.0.0.1:0",
                  "udp:0.0.0.0:5062;advertise=sip.example.com:5062"]
        config = parse(f"[sip]\nlisten = {listen!r}\n")
        self.assertEqual(config.sip.listen, tuple(listen))

    def test_listener_problems(self) -> None:
        """Each bad listener is reported with its index, all at once."""
        problems = self.problems("""
            [sip]
            listen = ["udp:127.0.0.1:99999", 5, "sctp:127.0.0.1:5060", "udp:localhost:5060",
                      "udp:0.0.0.0:5060", "udp:127.0.0.1:5060", "udp:127.0.0.1:5060",
                      "tls:127.0.0.1:5061", "udp:::1:5060"]
        """)
        self.assertEqual(len(problems), 8, problems)
        expected = [
            ("sip.listen[0]", "bad port '99999'"),
            ("sip.listen[1]", "expected a string such as udp:127.0.0.1:5060, got 5"),
            ("sip.listen[2]", "must start with udp:, tcp: or tls:"),
            ("sip.listen[3]", "'localhost' is not an IP address"),
            ("sip.listen[4]", "a wildcard address needs ;advertise=HOST"),
            ("sip.listen[6]", "same transport and address as sip.listen[5]"),
            ("sip.listen[7]", "a tls listener needs sip.tls.certificate and sip.tls.key"),
            ("sip.listen[8]", "IPv6 addresses need brackets"),
        ]
        for line, (key, fragment) in zip(problems, expected, strict=True):
            self.assertTrue(line.startswith(f"{SOURCE}: {key}: "), line)
            self.assertIn(fragment, line)

    def test_listen_type_and_emptiness(self) -> None:
        """C{listen} must be a non-empty array."""
        self.assertProblem('[sip]\nlisten = "udp:127.0.0.1:5060"\n',
                           "sip.listen: expected an array (got 'udp:127.0.0.1:5060')")
        self.assertProblem("[sip]\nlisten = []\n",
                           "sip.listen: must name at least one listener (got [])")

    def test_timers(self) -> None:
        """T1, T2 and T4 are positive, finite numbers of seconds; T2 >= T1."""
        self.assertProblem('[sip]\nt1 = "x"\n', "sip.t1: expected a number (got 'x')")
        self.assertProblem("[sip]\nt1 = true\n", "sip.t1: expected a number (got True)")
        self.assertProblem("[sip]\nt1 = 0\n", "sip.t1: must be positive (got 0)")
        self.assertProblem("[sip]\nt4 = -1.5\n", "sip.t4: must be positive (got -1.5)")
        self.assertProblem("[sip]\nt4 = inf\n",
                           "sip.t4: must be a finite number of seconds (got inf)")
        self.assertProblemStarts("[sip]\nt2 = nan\n", "sip.t2", "finite")
        self.assertProblem("[sip]\nt2 = 0.25\n",
                           "sip.t2: must not be smaller than sip.t1 (0.25 < 0.5)")
        self.assertEqual(parse("[sip]\nt1 = 4\nt2 = 4\n").sip.t2, 4.0)

    def test_max_message_size(self) -> None:
        """C{max_message_size} is an integer in 1024..1048576."""
        self.assertEqual(parse("[sip]\nmax_message_size = 1024\n").sip.max_message_size, 1024)
        self.assertEqual(parse("[sip]\nmax_message_size = 1048576\n").sip.max_message_size,
                         1048576)
        for bad in ("1023", "1048577"):
            self.assertProblem(f"[sip]\nmax_message_size = {bad}\n",
                               f"sip.max_message_size: must be 1024..1048576 (got {bad})")
        self.assertProblem("[sip]\nmax_message_size = 2048.0\n",
                           "sip.max_message_size: expected an integer (got 2048.0)")

    def test_idle_timeout_may_be_zero(self) -> None:
        """C{idle_timeout = 0} means never; negative values are refused."""
        self.assertEqual(parse("[sip]\nidle_timeout = 0\n").sip.idle_timeout, 0.0)
        self.assertProblem("[sip]\nidle_timeout = -1\n",
                           "sip.idle_timeout: must be at least 0 (got -1)")

    def test_max_connections_per_source(self) -> None:
        """C{max_connections_per_source} is a positive integer."""
        self.assertProblem("[sip]\nmax_connections_per_source = 0\n",
                           "sip.max_connections_per_source: must be positive (got 0)")
        self.assertProblem('[sip]\nmax_connections_per_source = "8"\n',
                           "sip.max_connections_per_source: expected an integer (got '8')")

    def test_realm_not_empty(self) -> None:
        """C{realm} must not be blank."""
        self.assertProblem('[sip]\nrealm = " "\n', "sip.realm: must not be empty (got ' ')")

    def test_auth_secret(self) -> None:
        """An empty secret is allowed (random per start); a short one is
        refused without repeating it."""
        self.assertEqual(parse('[sip]\nauth_secret = ""\n').sip.auth_secret, "")
        problems = self.problems('[sip]\nauth_secret = "hunter2"\n')
        self.assertEqual(problems, [f"{SOURCE}: sip.auth_secret: must be at least 16 "
                                    "characters (or empty: a random secret per start)"])
        self.assertNotIn("hunter2", problems[0])
        self.assertProblem("[sip]\nauth_secret = 1234\n", "sip.auth_secret: expected a string")

    def test_user_agent(self) -> None:
        """C{user_agent} goes into a header: not empty, no control characters."""
        self.assertProblem('[sip]\nuser_agent = "x\\r\\nVia: evil"\n',
                           "sip.user_agent: must not hold control characters "
                           "(got 'x\\r\\nVia: evil')")
        self.assertProblem('[sip]\nuser_agent = ""\n', "sip.user_agent: must not be empty (got '')")

    def test_digest_algorithms(self) -> None:
        """A non-empty list of supported names, each once, any case."""
        self.assertEqual(parse('[sip]\ndigest_algorithms = ["md5-SESS"]\n').sip.digest_algorithms,
                         ("MD5-sess",))
        usage = "must list some of SHA-256, SHA-256-sess, MD5, MD5-sess"
        self.assertProblem("[sip]\ndigest_algorithms = []\n",
                           f"sip.digest_algorithms: {usage} (got [])")
        self.assertProblem('[sip]\ndigest_algorithms = ["SHA-512"]\n',
                           f"sip.digest_algorithms: {usage} (got ['SHA-512'])")
        self.assertProblem("[sip]\ndigest_algorithms = [5]\n",
                           f"sip.digest_algorithms: {usage} (got [5])")
        self.assertProblem('[sip]\ndigest_algorithms = ["MD5", "md5"]\n',
                           "sip.digest_algorithms: must not list an algorithm twice "
                           "(got ['MD5', 'md5'])")
        self.assertProblem('[sip]\ndigest_algorithms = "MD5"\n',
                           "sip.digest_algorithms: expected an array (got 'MD5')")

    def test_digest_check_uri(self) -> None:
        """C{digest_check_uri} is a boolean, not a string or a number."""
        self.assertProblem('[sip]\ndigest_check_uri = "yes"\n',
                           "sip.digest_check_uri: expected true or false (got 'yes')")
        self.assertProblem("[sip]\ndigest_check_uri = 1\n",
                           "sip.digest_check_uri: expected true or false (got 1)")

    def test_section_must_be_a_table(self) -> None:
        """C{sip = 5} is reported as such, not as a crash."""
        self.assertProblem("sip = 5\n", "sip: expected a table, got 5")


class TLSTests(_ConfigTestCase):
    """The C{[sip.tls]} table: files read and matched at load time."""

    def setUp(self) -> None:
        self.files = make_tls_config(self.mktemp())

    def tls_table(self, **overrides: Any) -> str:
        """A C{[sip.tls]} table with the generated files and C{overrides}."""
        values = {"certificate": self.files.certificate, "key": self.files.private_key,
                  "ca": self.files.ca_certificates, **overrides}
        lines = [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {str(v).lower()}"
                 for k, v in values.items() if v is not None]
        return "[sip.tls]\n" + "\n".join(lines) + "\n"

    def test_good_files(self) -> None:
        """Matching files load; a tls listener is then accepted."""
        text = ('[sip]\nlisten = ["tls:127.0.0.1:5061"]\n'
                + self.tls_table(verify_peer=True, require_client_certificate=True,
                                 minimum_version="1.3"))
        tls = parse(text).sip.tls
        self.assertEqual((tls.certificate, tls.key, tls.ca),
                         (self.files.certificate, self.files.private_key,
                          self.files.ca_certificates))
        self.assertTrue(tls.verify_peer)
        self.assertTrue(tls.require_client_certificate)
        self.assertEqual(tls.minimum_version, "1.3")

    def test_stack_config(self) -> None:
        """L{TLSConfig.stack_config} gives the transport layer's settings."""
        tls = parse(self.tls_table(verify_peer=True)).sip.tls
        self.assertEqual(tls.stack_config(), sip_tls.TLSConfig(
            self.files.certificate, self.files.private_key, self.files.ca_certificates,
            verify_peer=True))
        self.assertIsNone(TLSConfig().stack_config())

    def test_certificate_without_key(self) -> None:
        """Certificate and key go together; the missing one is named."""
        self.assertProblem(self.tls_table(key=None, ca=None),
                           "sip.tls.key: needed too: certificate and key go together")
        self.assertProblem(self.tls_table(certificate=None, ca=None),
                           "sip.tls.certificate: needed too: certificate and key go together")

    def test_missing_files_named(self) -> None:
        """Each unreadable file is named by its key."""
        missing = os.path.join(self.mktemp(), "none.pem")
        problems = self.problems(self.tls_table(certificate=missing, ca=missing))
        self.assertEqual(problems, [
            f"{SOURCE}: sip.tls.certificate: cannot read {missing} (No such file or directory)",
            f"{SOURCE}: sip.tls.ca: cannot read {missing} (No such file or directory)",
        ])

    def test_mismatched_key(self) -> None:
        """A key that does not match the certificate is a one-line problem."""
        other = make_tls_config(self.mktemp())
        self.assertProblemStarts(self.tls_table(key=other.private_key), "sip.tls",
                                 "does not match")

    def test_not_pem(self) -> None:
        """A certificate file that holds no certificate is reported."""
        self.assertProblemStarts(self.tls_table(certificate=self.write("junk")), "sip.tls",
                                 "no PEM certificate")

    def test_keys_checked(self) -> None:
        """Types, version and unknown keys of the table are reported together."""
        problems = self.problems(self.tls_table(minimum_version="1.1", verify_peer="yes")
                                 + 'cert = "x"\n')
        self.assertEqual(problems, [
            f"{SOURCE}: sip.tls.verify_peer: expected true or false (got 'yes')",
            f"{SOURCE}: sip.tls.minimum_version: must be \"1.2\" or \"1.3\" (got '1.1')",
            f"{SOURCE}: sip.tls.cert: unknown key (did you mean sip.tls.certificate?)",
        ])

    def test_table_type(self) -> None:
        """C{[sip] tls = 1} is reported."""
        self.assertProblem("[sip]\ntls = 1\n", "sip.tls: expected a table, got 1")


class OtherSectionTests(_ConfigTestCase):
    """C{[core]}, C{[storage]}, C{[oam]}, C{[plugins]}, C{[rating]}, C{[media]}."""

    def test_core(self) -> None:
        """Every C{[core]} key is read and checked."""
        core = parse("[core]\nno_answer_timeout = 20\nsession_expires = 90\n"
                     "follow_redirects = false\ndrain_timeout = 2.5\n").core
        self.assertEqual(core, CoreConfig(20.0, 90, False, 2.5))
        self.assertEqual(parse("[core]\nsession_expires = 0\n").core.session_expires, 0)
        for bad in ("60", "86401"):
            self.assertProblem(f"[core]\nsession_expires = {bad}\n",
                               f"core.session_expires: must be 0 (off) or 90..86400 (got {bad})")
        self.assertProblem("[core]\nsession_expires = 1800.0\n",
                           "core.session_expires: expected an integer (got 1800.0)")
        self.assertProblem("[core]\nno_answer_timeout = 0\n",
                           "core.no_answer_timeout: must be positive (got 0)")
        self.assertProblem("[core]\ndrain_timeout = -inf\n",
                           "core.drain_timeout: must be a finite number of seconds (got -inf)")
        self.assertProblem("[core]\nfollow_redirects = 0\n",
                           "core.follow_redirects: expected true or false (got 0)")

    def test_storage_good(self) -> None:
        """Memory, Redis, SQLite and PostgreSQL locations are accepted."""
        storage = parse('[storage]\nlocations = "redis://:pw@10.0.0.5:6380/2"\n'
                        'database = "postgresql://b2bua@db.example/b2bua"\n'
                        'balances = "redis://127.0.0.1"\n').storage
        self.assertEqual(storage, StorageConfig("redis://:pw@10.0.0.5:6380/2",
                                                "postgresql://b2bua@db.example/b2bua",
                                                "redis://127.0.0.1"))
        self.assertEqual(parse('[storage]\ndatabase = "sqlite:////srv/b2bua.db"\n')
                         .storage.database, "sqlite:////srv/b2bua.db")

    def test_storage_migrate(self) -> None:
        """C{migrate} defaults to yes for SQLite and no for PostgreSQL; a
        given value wins; it must be a boolean."""
        self.assertIsNone(parse("").storage.migrate)
        self.assertTrue(parse("").storage.should_migrate)
        postgresql = '[storage]\ndatabase = "postgresql://db.example/b2bua"\n'
        self.assertFalse(parse(postgresql).storage.should_migrate)
        self.assertTrue(parse(postgresql + "migrate = true\n").storage.should_migrate)
        self.assertFalse(parse("[storage]\nmigrate = false\n").storage.should_migrate)
        self.assertProblem('[storage]\nmigrate = "yes"\n',
                           "storage.migrate: expected true or false (got 'yes')")

    def test_storage_secret(self) -> None:
        """The PIN secret is optional; a short one is refused without being
        repeated; it never shows in a printed configuration."""
        self.assertEqual(parse("").storage.secret, "")
        config = parse('[storage]\nsecret = "0123456789abcdef-pin-key"\n')
        self.assertEqual(config.storage.secret, "0123456789abcdef-pin-key")
        self.assertNotIn("pin-key", repr(config))
        problems = self.problems('[storage]\nsecret = "hunter2"\n')
        self.assertEqual(problems, [f"{SOURCE}: storage.secret: must be at least 16 "
                                    "characters (or empty: no calling cards)"])
        self.assertNotIn("hunter2", problems[0])
        self.assertProblem("[storage]\nsecret = 12\n", "storage.secret: expected a string")

    def test_storage_problems(self) -> None:
        """Each bad storage URL is reported under its key."""
        problems = self.problems('[storage]\nlocations = "redis://h:abc"\n'
                                 'database = "mysql://db/x"\nbalances = "redis://h/x"\n')
        self.assertEqual(problems, [
            f"{SOURCE}: storage.locations: bad port in the redis:// URL (got 'redis://h:abc')",
            f"{SOURCE}: storage.database: must be a sqlite:/// or postgresql:// URL "
            "(got 'mysql://db/x')",
            f"{SOURCE}: storage.balances: the redis:// URL path must be a database number "
            "(got 'redis://h/x')",
        ])
        self.assertProblem('[storage]\nlocations = "memcached"\n',
                           "storage.locations: must be \"memory\" or a redis:// URL "
                           "(got 'memcached')")
        self.assertProblemStarts('[storage]\nlocations = "rediss://h"\n', "storage.locations",
                                 "not supported yet")
        self.assertProblemStarts('[storage]\ndatabase = "sqlite://"\n', "storage.database",
                                 "needs a file path")

    def test_oam(self) -> None:
        """OAM listens on any Twisted endpoint string; bad ones are reported."""
        for good in ("tcp:0:interface=127.0.0.1", r"tcp6:8080:interface=\:\:1",
                     "unix:/run/b2bua/oam.sock"):
            self.assertEqual(parse(f"[oam]\nlisten = '{good}'\n").oam.listen, good)
        self.assertFalse(parse("[oam]\nenabled = false\n").oam.enabled)
        self.assertProblemStarts('[oam]\nlisten = "tcp:abc"\n', "oam.listen",
                                 "not a Twisted endpoint string", "'tcp:abc'")
        self.assertProblemStarts('[oam]\nlisten = "http://0.0.0.0:8080"\n', "oam.listen",
                                 "not a Twisted endpoint string")
        self.assertProblem("[oam]\nlisten = 8080\n", "oam.listen: expected a string (got 8080)")
        self.assertProblem('[oam]\nenabled = "no"\n', "oam.enabled: expected true or false "
                           "(got 'no')")

    def test_plugins(self) -> None:
        """C{disabled} lists names; every sub-table is one plugin's settings."""
        plugins = parse('[plugins]\ndisabled = ["a", "b"]\n[plugins.local_routing]\n'
                        'ring_timeout = 30\n[plugins.other]\n').plugins
        self.assertEqual(plugins.disabled, ("a", "b"))
        self.assertEqual(plugins.settings, {"local_routing": {"ring_timeout": 30}, "other": {}})

    def test_plugins_problems(self) -> None:
        """Bad C{disabled} lists and stray keys are reported."""
        self.assertProblem('[plugins]\ndisabled = "a"\n',
                           "plugins.disabled: expected an array (got 'a')")
        self.assertProblem("[plugins]\ndisabled = [1]\n",
                           "plugins.disabled: must list plugin names (strings) (got [1])")
        self.assertProblem('[plugins]\ndisabled = [""]\n',
                           "plugins.disabled: must list plugin names (strings) (got [''])")
        self.assertProblem('[plugins]\ndisabled = ["a", "a"]\n',
                           "plugins.disabled: must not name a plugin twice (got ['a', 'a'])")
        self.assertProblem("[plugins]\nring_timeout = 3\n", "plugins.ring_timeout: unknown key")

    def test_reserved_sections(self) -> None:
        """C{[rating]} and C{[media]} exist but take no keys yet."""
        parse("[rating]\n[media]\n")
        self.assertProblem("[rating]\ntariff = 1\n",
                           "rating.tariff: unknown key (the [rating] section has no settings yet)")
        self.assertProblem("media = 1\n", "media: expected a table, got 1")


class UnknownKeysTests(_ConfigTestCase):
    """Misspelt keys and sections are reported, with a guess when close."""

    def test_unknown_key_with_guess(self) -> None:
        """A near miss suggests the right key."""
        self.assertProblem("[sip]\nlisen = []\n", "sip.lisen: unknown key (did you mean sip.listen?)")
        self.assertProblem("[core]\ndrain = 1\n", "core.drain: unknown key "
                           "(did you mean core.drain_timeout?)")

    def test_unknown_key_without_guess(self) -> None:
        """A key like no other is simply unknown."""
        self.assertProblem("[oam]\nzzz = 1\n", "oam.zzz: unknown key")

    def test_unknown_section(self) -> None:
        """Unknown sections are reported, with a guess when close."""
        self.assertProblem("[sipp]\n", "sipp: unknown section (did you mean [sip]?)")
        self.assertProblem("[zzz]\n", "zzz: unknown section")

    def test_top_level_key(self) -> None:
        """A key outside any section says where settings go."""
        self.assertProblem('listen = "x"\n', "listen: unknown key: settings go in a section "
                           "(" + ", ".join(f"[{s}]" for s in SECTIONS) + ")")


class AllProblemsTests(_ConfigTestCase):
    """A bad file is reported whole, one line per problem, in file order."""

    def test_every_problem_at_once(self) -> None:
        """Problems from every section come back together, each naming its key."""
        path = self.write("""
            oops = 1
            [sip]
            listen = ["udp:127.0.0.1:5060", "udp:127.0.0.1:70000"]
            t1 = "fast"
            colour = "blue"
            [core]
            session_expires = 30
            [storage]
            locations = "sql"
            [oam]
            listen = "tcp:nope"
            [plugins]
            disabled = [1]
            [extra]
        """)
        error = self.assertRaises(ConfigError, load_config, path)
        keys = [line.split(": ")[1] for line in error.problems]
        self.assertEqual(keys, ["sip.listen[1]", "sip.t1", "sip.colour", "core.session_expires",
                                "storage.locations", "oam.listen", "plugins.disabled", "oops",
                                "extra"])
        for line in error.problems:
            self.assertTrue(line.startswith(f"{path}: "), line)
            self.assertNotIn("\n", line)
            self.assertNotIn("Traceback", line)


class LoadTests(_ConfigTestCase):
    """Reading the file: missing, unreadable, not TOML, not UTF-8."""

    def test_missing_file(self) -> None:
        """A missing file is one problem naming it."""
        path = self.mktemp()
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(error.problems, [f"{path}: cannot read (No such file or directory)"])

    def test_directory(self) -> None:
        """A directory is not a configuration file."""
        path = self.mktemp()
        os.mkdir(path)
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(error.problems, [f"{path}: cannot read (Is a directory)"])

    def test_invalid_toml(self) -> None:
        """A syntax error is one line, with its position."""
        path = self.write("[sip]\nt1 = = 1\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(len(error.problems), 1)
        self.assertTrue(error.problems[0].startswith(f"{path}: not valid TOML ("))
        self.assertIn("line", error.problems[0])
        self.assertNotIn("\n", error.problems[0])

    def test_duplicate_key_is_invalid_toml(self) -> None:
        """A key given twice is a TOML error, not silently the last value."""
        error = self.assertRaises(ConfigError, load_config, self.write("[sip]\nt1 = 1\nt1 = 2\n"))
        self.assertIn("not valid TOML", error.problems[0])

    def test_not_utf8(self) -> None:
        """Bytes that are not UTF-8 are one problem with the offset."""
        path = self.write(b'[sip]\nuser_agent = "\xff"\n')
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(error.problems, [f"{path}: not UTF-8 text (invalid start byte on line 2)"])


class ShippedFilesTests(_ConfigTestCase):
    """C{etc/b2bua.toml} loads; it and the documentation name every key."""

    example = ROOT / "etc" / "b2bua.toml"
    docs = ROOT / "docs" / "configuration.md"

    def keys(self) -> list[tuple[str, str]]:
        """(section, key) for every key the loader knows."""
        found = [(section, f.name) for section, kind in SECTION_TYPES.items()
                 for f in fields(kind) if f.name != "tls"]
        return [*found, ("plugins", "disabled")]

    def test_example_loads(self) -> None:
        """The example is valid and is not the demo."""
        config = load_config(str(self.example))
        self.assertFalse(config.demo)
        for listener in config.sip.listen:
            self.assertTrue(ipaddress.ip_address(parse_listener(listener).host).is_loopback)
        self.assertIn("local_routing", config.plugins.settings)

    def test_example_shows_every_key(self) -> None:
        """Every key appears in the example (TLS files commented out)."""
        text = self.example.read_text(encoding="utf-8")
        for section in (*SECTION_TYPES, *SECTIONS):
            self.assertIn(f"[{section}]", text)
        for section, key in self.keys():
            self.assertRegex(text, rf"(?m)^#? ?{key} = ", f"{section}.{key}")

    def test_example_values_are_the_defaults(self) -> None:
        """The example's live values are the defaults, as its header says."""
        data = tomllib.loads(self.example.read_text(encoding="utf-8"))
        defaults = {"sip": SIPConfig(), "core": CoreConfig(), "storage": StorageConfig(),
                    "oam": OAMConfig(), "sip.tls": TLSConfig()}
        for section, key in self.keys():
            table = data
            for part in section.split("."):
                table = table[part]
            if key in table:
                value = getattr(defaults[section], key) if section in defaults else ()
                expected = list(value) if isinstance(value, tuple) else value
                self.assertEqual(table[key], expected, f"{section}.{key}")

    def test_docs_name_every_key(self) -> None:
        """C{docs/configuration.md} documents every section and key."""
        text = self.docs.read_text(encoding="utf-8")
        for section in (*SECTION_TYPES, *SECTIONS):
            self.assertIn(f"[{section}]", text)
        for section, key in self.keys():
            self.assertIn(f"`{key}`", text, f"{section}.{key}")
