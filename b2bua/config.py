"""Configuration: TOML, one section per layer, every error reported at once.

L{load_config} reads a file (or, with no file, returns the embedded demo on
loopback) and checks every key; a bad file raises L{ConfigError} whose
C{problems} each name the key (C{FILE: sip.listen[1]: ...}), all of them,
not just the first.  C{twistd} prints them one per line and exits non-zero,
without a traceback.

What is checked here is everything that can be checked without binding a
socket: types and ranges, SIP listener strings (with the parser the
transport layer uses), the OAM endpoint string, storage URLs, and the TLS
files (read and matched, so a wrong key file is a config error, not a
traceback at start-up).  C{docs/configuration.md} documents every key.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.endpoints import serverFromString

from b2bua.sip import tls as sip_tls
from b2bua.sip.listeners import ListenerError, parse_listener

__all__ = [
    "DEMO_LISTEN",
    "MIN_SECRET_LENGTH",
    "SECTIONS",
    "Config",
    "ConfigError",
    "CoreConfig",
    "OAMConfig",
    "PluginsConfig",
    "SIPConfig",
    "StorageConfig",
    "TLSConfig",
    "load_config",
    "parse_config",
]

DEMO_LISTEN = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
#: The shortest C{storage.secret} accepted.
MIN_SECRET_LENGTH = 16

#: The sections a file may hold; C{rating} has no keys yet.
SECTIONS = ("sip", "core", "storage", "oam", "plugins", "rating", "media")

_DIGEST_ALGORITHMS = ("SHA-256", "SHA-256-sess", "MD5", "MD5-sess")
_MIN_SESSION_EXPIRES = 90  # RFC 4028 Min-SE floor
_MAX_SESSION_EXPIRES = 86400


class ConfigError(Exception):
    """A configuration that cannot be used; C{problems} lists each bad key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class TLSConfig:
    """The C{[sip.tls]} table: our identity for TLS listeners and connections."""

    certificate: str | None = None
    key: str | None = None
    ca: str | None = None
    verify_peer: bool = False
    require_client_certificate: bool = False
    minimum_version: str = "1.2"

    def stack_config(self) -> sip_tls.TLSConfig | None:
        """The transport layer's TLS settings, or C{None} without an identity."""
        if not (self.certificate and self.key):
            return None
        return sip_tls.TLSConfig(self.certificate, self.key, self.ca, self.verify_peer,
                                 self.require_client_certificate, self.minimum_version)


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
    auth_secret: str = field(default="", repr=False)
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
    #: act on REFER: blind transfer by the switch (docs/transfer.md)
    transfer: bool = True
    #: REFERs accepted in a call (and the transfer calls it led to); 0: none
    max_transfers: int = 3


@dataclass(frozen=True)
class StorageConfig:
    """The C{[storage]} section: where registrations, provisioning and
    balances live (C{balances} is for the charging layer to come).

    @ivar migrate: bring the database schema up to date at start-up;
        C{None} (not set) means yes for SQLite, no for PostgreSQL (see
        L{should_migrate}).
    @ivar secret: the key of the calling-card PIN hashes (empty: none; the
        switch then refuses to start on a database that holds cards).
    @ivar cdr_journal: where CDRs are written ahead before SQL: a file path
        (empty: C{cdrs.journal} beside a SQLite database, else
        C{var/cdrs.journal}) or a C{redis://} URL (a Redis stream shared by
        the nodes).
    @ivar recovery_interval: seconds between two runs of the crash
        recovery (rating.md 3.6): abandoned holds settled, their CDRs
        written (see C{docs/recovery.md}).
    """

    locations: str = "memory"
    database: str = "sqlite:///var/b2bua.db"
    balances: str = "memory"
    migrate: bool | None = None
    secret: str = field(default="", repr=False)
    cdr_journal: str = ""
    recovery_interval: float = 10.0

    @property
    def should_migrate(self) -> bool:
        """Whether start-up runs the migrations (L{migrate}, or its default)."""
        if self.migrate is not None:
            return self.migrate
        return urlsplit(self.database).scheme == "sqlite"


@dataclass(frozen=True)
class MohConfig:
    """The C{[media.moh]} table: music on hold (C{docs/music-on-hold.md}),
    played by the built-in relay only.

    @ivar enabled: whether held parties hear music.
    @ivar file: the WAV file to loop (8 kHz, 16-bit PCM or G.711; relative:
        to the working directory at start-up); empty: the generated music.
    @ivar max_listeners: held parties that may hear music at once (the
        others hear silence).
    """

    enabled: bool = True
    file: str = ""
    max_listeners: int = 1000


@dataclass(frozen=True)
class MediaConfig:
    """The C{[media]} section: where calls' media is anchored.

    @ivar backend: C{none} (media flows between the parties), C{relay}
        (the built-in relay, C{docs/media-relay.md}) or C{rtpengine}
        (C{docs/rtpengine.md}, settings in C{[media.rtpengine]}).
    @ivar interface: the IP address the relay binds its ports on.
    @ivar advertised_address: the address written into SDP (empty: the
        interface's; set it behind a 1:1 NAT).
    @ivar port_min, port_max: the relay's port range (RTP even, RTCP odd).
    @ivar media_timeout: seconds without RTP on every active stream after
        which a call is ended (0: never); held streams do not count.
    @ivar rtpengine: the C{[media.rtpengine]} table, checked by the
        rtpengine backend.
    @ivar record_policy: the switch-wide call recording policy
        (C{always}, C{on_demand}, C{never}) of accounts whose
        C{features.recording} says none (C{docs/call-recording.md}).
    @ivar recordings: the directory of call recordings (relative: to the
        working directory at start-up).
    @ivar moh: the C{[media.moh]} table (music on hold).
    """

    backend: str = "none"
    interface: str = "127.0.0.1"
    advertised_address: str = ""
    port_min: int = 30000
    port_max: int = 39999
    media_timeout: float = 60.0
    rtpengine: dict[str, Any] = field(default_factory=dict)
    record_policy: str = "on_demand"
    recordings: str = "recordings"
    moh: MohConfig = field(default_factory=MohConfig)


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
    media: MediaConfig = field(default_factory=MediaConfig)
    demo: bool = False
    source: str = "<demo>"


# -- checking -------------------------------------------------------------------------

_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "an array", dict: "a table"}

Check = Callable[[Any], "str | None"]


def _kind_name(kinds: tuple[type, ...]) -> str:
    if set(kinds) == {int, float}:
        return "a number"
    return " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)


class _Checker:
    """Collects problems while reading TOML tables, and the keys it knows."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.known: dict[str, list[str]] = {}

    def add(self, where: str, problem: str) -> None:
        """Record one problem about C{where} (a key path such as C{sip.t1})."""
        self.problems.append(f"{where}: {problem}")

    def take(self, table: dict[str, Any], section: str, key: str, kind: type | tuple,
             default: Any, check: Check | None = None, secret: bool = False) -> Any:
        """Pop C{table[key]} when of the right type and passing C{check}.

        C{check} returns C{None} for a good value, else what is wrong with
        it; a missing key, a wrong type or a failed check give C{default}.
        A C{secret} value is never repeated in a problem.
        """
        self.known.setdefault(section, []).append(key)
        if key not in table:
            return default
        value = table.pop(key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        got = "" if secret else f" (got {value!r})"
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            self.add(f"{section}.{key}", f"expected {_kind_name(kinds)}{got}")
            return default
        problem = check(value) if check is not None else None
        if problem:
            self.add(f"{section}.{key}", f"{problem}{got}")
            return default
        return value

    def seconds(self, table: dict[str, Any], section: str, key: str, default: float,
                zero: bool = False) -> float:
        """Pop a duration in seconds: a finite number above 0 (or 0 if C{zero})."""

        def check(v: float) -> str | None:
            if not math.isfinite(v):
                return "must be a finite number of seconds"
            if v < 0 or (v == 0 and not zero):
                return "must be at least 0" if zero else "must be positive"
            return None

        return float(self.take(table, section, key, (int, float), default, check))

    def table(self, data: dict[str, Any], name: str, where: str | None = None) -> dict[str, Any]:
        """Pop the table C{name} of C{data} (a copy); report it when not a table."""
        where = where or name
        value = data.pop(name, {})
        self.known.setdefault(where.rpartition(".")[0], []).append(name)
        if not isinstance(value, dict):
            self.add(where, f"expected a table, got {value!r}")
            return {}
        return dict(value)

    def unknown(self, table: dict[str, Any], section: str, hint: str = "") -> None:
        """Report the keys of C{table} nobody read, with a guess when close."""
        for key in table:
            guess = _guess(key, self.known.get(section, []))
            why = f" (did you mean {section}.{guess}?)" if guess else hint
            self.add(f"{section}.{key}", f"unknown key{why}")


def _guess(name: str, known: list[str]) -> str | None:
    """The known name C{name} is most likely a typo or a shortening of."""
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return close[0]
    longer = [k for k in known if len(name) >= 3 and k.startswith(name)]
    return longer[0] if len(longer) == 1 else None


def _non_empty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _header_text(v: str) -> str | None:
    if not v.strip():
        return "must not be empty"
    return None if v.isprintable() else "must not hold control characters"


def _redis_url(v: str) -> str | None:
    """What is wrong with a C{redis://} URL, or C{None}."""
    parts = urlsplit(v)
    if parts.scheme == "rediss":
        return "rediss:// (TLS to Redis) is not supported yet; use redis://"
    if parts.scheme != "redis":
        return None if v == "memory" else 'must be "memory" or a redis:// URL'
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "bad port in the redis:// URL"
    path = parts.path.strip("/")
    if path and not path.isdigit():
        return "the redis:// URL path must be a database number"
    return None


def _database_url(v: str) -> str | None:
    """What is wrong with a C{sqlite:///} or C{postgresql://} URL, or C{None}."""
    parts = urlsplit(v)
    if parts.scheme == "sqlite":
        return None if parts.path.strip("/") else "sqlite:/// needs a file path"
    if parts.scheme in ("postgresql", "postgres"):
        return None if parts.hostname or parts.path.strip("/") else "postgresql:// needs a host"
    return "must be a sqlite:/// or postgresql:// URL"


def _endpoint(v: str) -> str | None:
    """What is wrong with a Twisted server endpoint string, or C{None}."""
    try:
        serverFromString(None, v)  # parses only; the reactor is used when listening
    except Exception as error:
        return f"not a Twisted endpoint string such as tcp:8080:interface=127.0.0.1 ({error})"
    return None


# -- sections -------------------------------------------------------------------------


def _listeners(c: _Checker, table: dict[str, Any], tls: TLSConfig) -> tuple[str, ...]:
    """Pop and check C{sip.listen}: each string parsed as the transport will."""
    listen = c.take(table, "sip", "listen", list, list(DEMO_LISTEN),
                    lambda v: None if v else "must name at least one listener")
    good: list[str] = []
    seen: dict[tuple[str, str, int | None], int] = {}
    for i, item in enumerate(listen):
        where = f"sip.listen[{i}]"
        if not isinstance(item, str):
            c.add(where, f"expected a string such as udp:127.0.0.1:5060, got {item!r}")
            continue
        try:
            address = parse_listener(item)
        except ListenerError as error:
            c.add(where, str(error))
            continue
        if address.transport == "TLS" and not (tls.certificate and tls.key):
            c.add(where, "a tls listener needs sip.tls.certificate and sip.tls.key")
        if address.port:
            sent_by = address.advertise or (address.host, address.port)
            key = (address.transport, sent_by[0], sent_by[1] or address.port)
            if key in seen:
                c.add(where, f"same transport and address as sip.listen[{seen[key]}]")
            seen.setdefault(key, i)
        good.append(item)
    return tuple(good)


def _tls(c: _Checker, table: dict[str, Any]) -> TLSConfig:
    """Pop and check C{[sip.tls]}; the files are read and matched."""
    s = "sip.tls"
    certificate = c.take(table, s, "certificate", str, None, _non_empty)
    key = c.take(table, s, "key", str, None, _non_empty)
    tls = TLSConfig(
        certificate=certificate,
        key=key,
        ca=c.take(table, s, "ca", str, None, _non_empty),
        verify_peer=c.take(table, s, "verify_peer", bool, False),
        require_client_certificate=c.take(table, s, "require_client_certificate", bool, False),
        minimum_version=c.take(table, s, "minimum_version", str, "1.2",
                               lambda v: None if v in ("1.2", "1.3") else 'must be "1.2" or "1.3"'),
    )
    c.unknown(table, s)
    if bool(certificate) != bool(key):
        missing = "key" if certificate else "certificate"
        c.add(f"{s}.{missing}", "needed too: certificate and key go together")
    unreadable = False
    for name in ("certificate", "key", "ca"):
        path = getattr(tls, name)
        if path is not None:
            try:
                with open(path, "rb"):
                    pass
            except OSError as error:
                c.add(f"{s}.{name}", f"cannot read {path} ({error.strerror or error})")
                unreadable = True
    stack = tls.stack_config()
    if stack is not None and not unreadable:
        try:
            sip_tls.build_tls(stack)
        except sip_tls.TLSConfigError as error:
            c.add(s, str(error))
    return tls


def _digest_algorithms(c: _Checker, table: dict[str, Any]) -> tuple[str, ...]:
    """Pop C{sip.digest_algorithms}; names are matched without regard to case."""
    canonical = {name.lower(): name for name in _DIGEST_ALGORITHMS}

    def check(v: list[Any]) -> str | None:
        names = [canonical.get(a.lower()) if isinstance(a, str) else None for a in v]
        if not v or None in names:
            return f"must list some of {', '.join(_DIGEST_ALGORITHMS)}"
        if len(set(names)) != len(names):
            return "must not list an algorithm twice"
        return None

    chosen = c.take(table, "sip", "digest_algorithms", list, ["SHA-256", "MD5"], check)
    return tuple(canonical[a.lower()] for a in chosen)


def _sip(c: _Checker, data: dict[str, Any]) -> SIPConfig:
    table = c.table(data, "sip")
    tls = _tls(c, c.table(table, "tls", "sip.tls"))
    listen = _listeners(c, table, tls)
    t1 = c.seconds(table, "sip", "t1", 0.5)
    t2 = c.seconds(table, "sip", "t2", 4.0)
    if t2 < t1:
        c.add("sip.t2", f"must not be smaller than sip.t1 ({t2} < {t1})")
    sip = SIPConfig(
        listen=listen, t1=t1, t2=t2, t4=c.seconds(table, "sip", "t4", 5.0),
        max_message_size=c.take(
            table, "sip", "max_message_size", int, 65536,
            lambda v: None if 1024 <= v <= 1 << 20 else "must be 1024..1048576"),
        idle_timeout=c.seconds(table, "sip", "idle_timeout", 600.0, zero=True),
        max_connections_per_source=c.take(
            table, "sip", "max_connections_per_source", int, 64,
            lambda v: None if v > 0 else "must be positive"),
        realm=c.take(table, "sip", "realm", str, "127.0.0.1", _non_empty),
        auth_secret=c.take(
            table, "sip", "auth_secret", str, "",
            lambda v: None if v == "" or len(v) >= 16 else
            "must be at least 16 characters (or empty: a random secret per start)",
            secret=True),
        user_agent=c.take(table, "sip", "user_agent", str, "b2bua", _header_text),
        digest_algorithms=_digest_algorithms(c, table),
        digest_check_uri=c.take(table, "sip", "digest_check_uri", bool, True),
        tls=tls,
    )
    c.unknown(table, "sip")
    return sip


def _core(c: _Checker, data: dict[str, Any]) -> CoreConfig:
    table = c.table(data, "core")
    core = CoreConfig(
        no_answer_timeout=c.seconds(table, "core", "no_answer_timeout", 180.0),
        session_expires=c.take(
            table, "core", "session_expires", int, 1800,
            lambda v: None if v == 0 or _MIN_SESSION_EXPIRES <= v <= _MAX_SESSION_EXPIRES
            else f"must be 0 (off) or {_MIN_SESSION_EXPIRES}..{_MAX_SESSION_EXPIRES}"),
        follow_redirects=c.take(table, "core", "follow_redirects", bool, True),
        drain_timeout=c.seconds(table, "core", "drain_timeout", 60.0),
        transfer=c.take(table, "core", "transfer", bool, True),
        max_transfers=c.take(table, "core", "max_transfers", int, 3,
                             lambda v: None if 0 <= v <= 100 else "must be 0..100"),
    )
    c.unknown(table, "core")
    return core


def _storage(c: _Checker, data: dict[str, Any]) -> StorageConfig:
    table = c.table(data, "storage")
    storage = StorageConfig(
        locations=c.take(table, "storage", "locations", str, "memory", _redis_url),
        database=c.take(table, "storage", "database", str, "sqlite:///var/b2bua.db",
                        _database_url),
        balances=c.take(table, "storage", "balances", str, "memory", _redis_url),
        migrate=c.take(table, "storage", "migrate", bool, None),
        secret=c.take(
            table, "storage", "secret", str, "",
            lambda v: None if v == "" or len(v) >= MIN_SECRET_LENGTH else
            f"must be at least {MIN_SECRET_LENGTH} characters (or empty: no calling cards)",
            secret=True),
        cdr_journal=c.take(
            table, "storage", "cdr_journal", str, "",
            lambda v: _redis_url(v) if v.startswith(("redis:", "rediss:")) else None),
        recovery_interval=c.seconds(table, "storage", "recovery_interval", 10.0),
    )
    c.unknown(table, "storage")
    return storage


def _oam(c: _Checker, data: dict[str, Any]) -> OAMConfig:
    table = c.table(data, "oam")
    oam = OAMConfig(
        listen=c.take(table, "oam", "listen", str, "tcp:8080:interface=127.0.0.1", _endpoint),
        enabled=c.take(table, "oam", "enabled", bool, True),
    )
    c.unknown(table, "oam")
    return oam


def _plugins(c: _Checker, data: dict[str, Any]) -> PluginsConfig:
    table = c.table(data, "plugins")

    def names(v: list[Any]) -> str | None:
        if not all(isinstance(i, str) and i.strip() for i in v):
            return "must list plugin names (strings)"
        return None if len(set(v)) == len(v) else "must not name a plugin twice"

    disabled = c.take(table, "plugins", "disabled", list, [], names)
    settings = {name: table.pop(name) for name, value in list(table.items())
                if isinstance(value, dict)}
    c.unknown(table, "plugins")
    return PluginsConfig(tuple(disabled), settings)


def _ip_address(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "must be an IP address"
    return None


def _moh(c: _Checker, media: dict[str, Any], backend: str) -> MohConfig:
    """The C{[media.moh]} table; its file is checked when the relay plays it."""
    table = c.table(media, "moh", "media.moh")
    moh = MohConfig(
        enabled=c.take(table, "media.moh", "enabled", bool, True),
        file=c.take(table, "media.moh", "file", str, ""),
        max_listeners=c.take(table, "media.moh", "max_listeners", int, 1000,
                             lambda v: None if 0 <= v <= 100000 else "must be 0..100000"),
    )
    if moh.file and moh.enabled and backend == "relay":
        from media.moh import check_music_file

        problem = check_music_file(moh.file)
        if problem:
            c.add("media.moh.file", problem)
    c.unknown(table, "media.moh")
    return moh


def _media(c: _Checker, data: dict[str, Any]) -> MediaConfig:
    table = c.table(data, "media")
    rtpengine = table.pop("rtpengine", {})
    if not isinstance(rtpengine, dict):
        c.add("media.rtpengine", "expected a table")
        rtpengine = {}
    media = MediaConfig(
        backend=c.take(table, "media", "backend", str, "none",
                       lambda v: None if v in ("none", "relay", "rtpengine")
                       else 'must be "none", "relay" or "rtpengine"'),
        interface=c.take(table, "media", "interface", str, "127.0.0.1", _ip_address),
        advertised_address=c.take(table, "media", "advertised_address", str, "",
                                  lambda v: None if v == "" else _ip_address(v)),
        port_min=c.take(table, "media", "port_min", int, 30000,
                        lambda v: None if 1024 <= v <= 65534 else "must be 1024..65534"),
        port_max=c.take(table, "media", "port_max", int, 39999,
                        lambda v: None if 1025 <= v <= 65535 else "must be 1025..65535"),
        media_timeout=c.seconds(table, "media", "media_timeout", 60.0, zero=True),
        rtpengine=rtpengine,
        record_policy=c.take(table, "media", "record_policy", str, "on_demand",
                             lambda v: None if v in ("always", "on_demand", "never")
                             else 'must be "always", "on_demand" or "never"'),
        recordings=c.take(table, "media", "recordings", str, "recordings",
                          lambda v: None if v.strip() and v.isprintable()
                          else "must be a directory name (printable, not empty)"),
    )
    media = replace(media, moh=_moh(c, table, media.backend))
    if media.port_max - media.port_min < 3:
        c.add("media.port_max", "the range must hold at least two port pairs")
    if media.backend == "rtpengine":
        from media.rtpengine import parse_rtpengine_config

        try:
            parse_rtpengine_config(rtpengine)
        except ValueError as error:
            for line in str(error).splitlines():
                key, _, problem = line.partition(": ")
                c.add(key if problem else "media.rtpengine", problem or line)
    c.unknown(table, "media")
    return media


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    """Build a L{Config} from parsed TOML.

    @param source: the file name, put in front of every problem.
    @raise ConfigError: listing every problem found, one per bad key.
    """
    data = dict(data)
    c = _Checker()
    c.known[""] = list(SECTIONS)
    config = Config(sip=_sip(c, data), core=_core(c, data), storage=_storage(c, data),
                    oam=_oam(c, data), plugins=_plugins(c, data), media=_media(c, data),
                    demo=False, source=source)
    for name in ("rating",):
        c.unknown(c.table(data, name), name, f" (the [{name}] section has no settings yet)")
    for name, value in data.items():
        if isinstance(value, dict):
            guess = _guess(name, list(SECTIONS))
            hint = f" (did you mean [{guess}]?)" if guess else ""
            c.add(name, f"unknown section{hint}")
        else:
            c.add(name, "unknown key: settings go in a section ("
                  + ", ".join(f"[{s}]" for s in SECTIONS) + ")")
    if c.problems:
        raise ConfigError([f"{source}: {p}" for p in c.problems])
    return config


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read the configuration file at C{path}; C{None} gives the demo.

    The demo listens on loopback only (SIP on 127.0.0.1 UDP and TCP 5060,
    OAM on 127.0.0.1:8080), keeps its provisioning in SQLite under
    C{./var/} (seeded on first start by L{b2bua.demo}) and offers MD5 first
    so that any softphone can register with the demo credentials.

    @raise ConfigError: when the file is missing, not TOML, or invalid.
    """
    if path is None:
        from b2bua.demo import plugin_settings  # b2bua.demo imports this module

        return Config(sip=SIPConfig(digest_algorithms=("MD5", "SHA-256")),
                      plugins=PluginsConfig(settings=plugin_settings()), demo=True)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read ({e.strerror or e})"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError([f"{path}: not UTF-8 text ({e.reason} on line {line})"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{path}: not valid TOML ({e})"]) from None
    return parse_config(data, str(path))
