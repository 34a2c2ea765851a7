"""Configuration: TOML, one section per layer, every error reported at once.

L{load_config} reads a file (or, with no file, returns the embedded demo on
loopback) and checks every key; a bad file raises L{ConfigError} whose
C{problems} each name the key (C{sip.listen[1]: ...}).  C{twistd} prints
them one per line and exits non-zero, without a traceback.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Config",
    "ConfigError",
    "CoreConfig",
    "OAMConfig",
    "PluginsConfig",
    "SIPConfig",
    "StorageConfig",
    "load_config",
    "parse_config",
]

DEMO_LISTEN = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")


class ConfigError(Exception):
    """A configuration that cannot be used; C{problems} lists each bad key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class TLSConfig:
    """Certificate, key and CA files for TLS listeners and connections."""

    certificate: str | None = None
    key: str | None = None
    ca: str | None = None
    verify_peer: bool = False


@dataclass(frozen=True)
class SIPConfig:
    """The C{[sip]} section: listeners, timers, limits, identity."""

    listen: tuple[str, ...] = DEMO_LISTEN
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    max_message_size: int = 65536
    idle_timeout: float = 600.0
    max_connections_per_source: int = 64
    realm: str = "127.0.0.1"
    auth_secret: str = ""
    user_agent: str = "b2bua"
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    digest_check_uri: bool = True
    tls: TLSConfig = field(default_factory=TLSConfig)


@dataclass(frozen=True)
class CoreConfig:
    """The C{[core]} section: call handling."""

    no_answer_timeout: float = 180.0
    session_expires: int = 1800
    follow_redirects: bool = True
    drain_timeout: float = 60.0


@dataclass(frozen=True)
class StorageConfig:
    """The C{[storage]} section: where registrations live."""

    locations: str = "memory"


@dataclass(frozen=True)
class OAMConfig:
    """The C{[oam]} section: the HTTP site (a Twisted endpoint string)."""

    listen: str = "tcp:8080:interface=127.0.0.1"
    enabled: bool = True


@dataclass(frozen=True)
class PluginsConfig:
    """The C{[plugins]} section: disabled plugin names, per-plugin tables."""

    disabled: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """The whole configuration; C{demo} is set for the embedded demo."""

    sip: SIPConfig = field(default_factory=SIPConfig)
    core: CoreConfig = field(default_factory=CoreConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    oam: OAMConfig = field(default_factory=OAMConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    demo: bool = False
    source: str = "<demo>"


class _Checker:
    """Collects problems while reading a TOML table."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def take(self, table: dict[str, Any], section: str, key: str, kind: type | tuple,
             default: Any, check: Any = None, message: str = "") -> Any:
        """Return C{table[key]} when of the right type (and passing C{check})."""
        if key not in table:
            return default
        value = table.pop(key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            self.problems.append(f"{section}.{key}: expected {names}, got {value!r}")
            return default
        if check is not None and not check(value):
            self.problems.append(f"{section}.{key}: {message} (got {value!r})")
            return default
        return value

    def unknown(self, table: dict[str, Any], section: str) -> None:
        """Report keys nobody read."""
        for key in table:
            self.problems.append(f"{section}.{key}: unknown key")


def _listen_ok(item: str) -> str | None:
    """Return a problem with a SIP listener string, or C{None}."""
    kind, _, rest = item.partition(":")
    if kind not in ("udp", "tcp", "tls"):
        return "transport must be udp, tcp or tls"
    host, colon, port = rest.rpartition(":")
    if not colon or not host:
        return "expected KIND:HOST:PORT"
    if not port.isdigit() or int(port) > 65535:
        return "bad port"
    return None


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    """Build a L{Config} from parsed TOML.

    @raise ConfigError: listing every problem found.
    """
    data = dict(data)
    c = _Checker()
    sip_table = data.pop("sip", {})
    if not isinstance(sip_table, dict):
        c.problems.append("sip: expected a table")
        sip_table = {}
    sip_table = dict(sip_table)
    positive = (lambda v: v > 0, "must be positive")
    listen = c.take(sip_table, "sip", "listen", list, list(DEMO_LISTEN))
    for i, item in enumerate(listen):
        problem = _listen_ok(item) if isinstance(item, str) else "expected a string"
        if problem:
            c.problems.append(f"sip.listen[{i}]: {problem} (got {item!r})")
    timers = {k: c.take(sip_table, "sip", k, (int, float), d, *positive)
              for k, d in (("t1", 0.5), ("t2", 4.0), ("t4", 5.0))}
    tls_table = sip_table.pop("tls", {})
    if not isinstance(tls_table, dict):
        c.problems.append("sip.tls: expected a table")
        tls_table = {}
    tls_table = dict(tls_table)
    tls = TLSConfig(
        certificate=c.take(tls_table, "sip.tls", "certificate", str, None),
        key=c.take(tls_table, "sip.tls", "key", str, None),
        ca=c.take(tls_table, "sip.tls", "ca", str, None),
        verify_peer=c.take(tls_table, "sip.tls", "verify_peer", bool, False),
    )
    c.unknown(tls_table, "sip.tls")
    if any(isinstance(i, str) and i.startswith("tls:") for i in listen) and not (
        tls.certificate and tls.key
    ):
        c.problems.append("sip.tls.certificate: a tls listener needs certificate and key")
    sip = SIPConfig(
        listen=tuple(i for i in listen if isinstance(i, str)),
        t1=float(timers["t1"]), t2=float(timers["t2"]), t4=float(timers["t4"]),
        max_message_size=c.take(sip_table, "sip", "max_message_size", int, 65536,
                                lambda v: 1024 <= v <= 1 << 20, "must be 1024..1048576"),
        idle_timeout=float(c.take(sip_table, "sip", "idle_timeout", (int, float), 600.0,
                                  *positive)),
        max_connections_per_source=c.take(sip_table, "sip", "max_connections_per_source",
                                          int, 64, *positive),
        realm=c.take(sip_table, "sip", "realm", str, "127.0.0.1", bool, "must not be empty"),
        auth_secret=c.take(sip_table, "sip", "auth_secret", str, ""),
        user_agent=c.take(sip_table, "sip", "user_agent", str, "b2bua"),
        digest_algorithms=tuple(c.take(
            sip_table, "sip", "digest_algorithms", list, ["SHA-256", "MD5"],
            lambda v: bool(v) and all(a in ("MD5", "SHA-256", "MD5-sess", "SHA-256-sess")
                                      for a in v),
            "must list MD5, SHA-256, MD5-sess or SHA-256-sess")),
        digest_check_uri=c.take(sip_table, "sip", "digest_check_uri", bool, True),
        tls=tls,
    )
    c.unknown(sip_table, "sip")
    core_table = _table(c, data, "core")
    core = CoreConfig(
        no_answer_timeout=float(c.take(core_table, "core", "no_answer_timeout", (int, float),
                                       180.0, *positive)),
        session_expires=c.take(core_table, "core", "session_expires", int, 1800,
                               lambda v: v == 0 or v >= 90, "must be 0 (off) or at least 90"),
        follow_redirects=c.take(core_table, "core", "follow_redirects", bool, True),
        drain_timeout=float(c.take(core_table, "core", "drain_timeout", (int, float), 60.0,
                                   *positive)),
    )
    c.unknown(core_table, "core")
    storage_table = _table(c, data, "storage")
    storage = StorageConfig(
        locations=c.take(storage_table, "storage", "locations", str, "memory",
                         lambda v: v == "memory" or v.startswith(("redis://", "rediss://")),
                         'must be "memory" or a redis:// URL'),
    )
    for key in ("database", "balances"):
        storage_table.pop(key, None)  # read by later layers
    c.unknown(storage_table, "storage")
    oam_table = _table(c, data, "oam")
    oam = OAMConfig(
        listen=c.take(oam_table, "oam", "listen", str, "tcp:8080:interface=127.0.0.1",
                      lambda v: v.startswith(("tcp:", "tcp6:", "ssl:", "unix:")),
                      "must be a Twisted endpoint string such as tcp:8080:interface=127.0.0.1"),
        enabled=c.take(oam_table, "oam", "enabled", bool, True),
    )
    c.unknown(oam_table, "oam")
    plugins_table = _table(c, data, "plugins")
    disabled = c.take(plugins_table, "plugins", "disabled", list, [],
                      lambda v: all(isinstance(i, str) for i in v), "must list plugin names")
    settings = {}
    for name, value in list(plugins_table.items()):
        if isinstance(value, dict):
            settings[name] = plugins_table.pop(name)
    c.unknown(plugins_table, "plugins")
    plugins = PluginsConfig(tuple(disabled), settings)
    for section in data:
        if section not in ("rating", "media"):
            c.problems.append(f"{section}: unknown section")
    if c.problems:
        raise ConfigError([f"{source}: {p}" for p in c.problems])
    return Config(sip=sip, core=core, storage=storage, oam=oam, plugins=plugins, demo=False,
                  source=source)


def _table(c: _Checker, data: dict[str, Any], name: str) -> dict[str, Any]:
    """Pop the section C{name} (a copy), reporting it when it is not a table."""
    table = data.pop(name, {})
    if not isinstance(table, dict):
        c.problems.append(f"{name}: expected a table")
        return {}
    return dict(table)


def load_config(path: str | None) -> Config:
    """Read the configuration file at C{path}; C{None} gives the demo.

    @raise ConfigError: when the file is missing, not TOML, or invalid.
    """
    if path is None:
        # the demo must work with any softphone: offer MD5 first
        return Config(sip=SIPConfig(digest_algorithms=("MD5", "SHA-256")), demo=True)
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read ({e.strerror})"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}: not valid TOML ({e})"]) from None
    return parse_config(data, str(path))
