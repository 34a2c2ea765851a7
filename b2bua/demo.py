"""The embedded demo's data: seeded once into its SQLite database.

Without C{--config}, C{twistd -n b2bua} keeps its provisioning in
C{sqlite:///var/b2bua.db} (relative to the working directory).  On the
first start L{seed} creates, through the repositories (so passwords are
stored only as HA1 values, and every row is audited and announced):

  - the demo tenant: a customer named C{demo} with SIP domain
    C{127.0.0.1} and currency USD;
  - its extensions 1000 to 1019, each with the well-known password C{1234}
    (user name = number);
  - an admin API key, named L{ADMIN_KEY_NAME}, created last: its presence
    marks a finished seed, so later starts recreate nothing, even what an
    operator deleted (a seed interrupted half-way is completed on the next
    start).

Next to the database (L{state_directory}, C{var/} by default) the demo keeps
two files, both readable by their owner only (mode 0600):
C{admin-api-key}, the admin key shown once at first start, and C{secret},
the calling-card PIN hashing key, generated on first start (L{demo_secret}).

L{seed_database} seeds any database from outside a running switch (the
integration tests use it to give a switch with a configuration file the
demo extensions).

The demo also runs the switch's media server (L{plugin_settings}: the
C{[plugins]} tables of the demo): on loopback C{127.0.0.1:5070}, RTP on its
default ports 40000-40999 (the demo anchors no media, and the relay's
default range, 30000-39999, does not meet it anyway), with the demo
tenant's service numbers C{*43} (echo test), C{*60} (speaking clock) and
C{*88} (conference rooms), prompts from C{./prompts} (C{make prompts};
without them the flows play silence, logged once) and recordings under
C{var/recordings}.  A test that starts the demo configuration for real
moves or disables it with C{plugin_settings(listen=...)} or
C{plugin_settings(enabled=False)}, so that two test processes never meet
on port 5070.
"""

from __future__ import annotations

import copy
import os
import secrets as _random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred

from b2bua.config import MIN_SECRET_LENGTH
from b2bua.core.directory import DEMO_DOMAIN, DEMO_PASSWORD
from b2bua.db.changes import ChangeFeed
from b2bua.db.database import Database, sqlite_path
from b2bua.db.interfaces import IRepository, Scope
from b2bua.db.migrations import migrate
from b2bua.db.repository import Repository

__all__ = ["ADMIN_KEY_FILE", "ADMIN_KEY_NAME", "DEMO_CURRENCY", "DEMO_MEDIA_SERVER",
           "DEMO_NUMBERS", "SECRET_FILE", "Seeded", "demo_secret", "plugin_settings",
           "save_admin_key", "seed", "seed_database", "state_directory", "write_private"]

#: The demo's extension numbers (also their SIP user names).
DEMO_NUMBERS: tuple[str, ...] = tuple(str(n) for n in range(1000, 1020))
DEMO_CURRENCY = "USD"
DEMO_CUSTOMER = "demo"
#: The name of the demo's admin API key; it exists once the seed is complete.
ADMIN_KEY_NAME = "demo admin"
#: The file (in L{state_directory}) holding the demo's admin API key.
ADMIN_KEY_FILE = "admin-api-key"
#: The file (in L{state_directory}) holding the demo's PIN hashing secret.
SECRET_FILE = "secret"

#: The demo's C{[plugins.media_server]} table (see the module docstring).
DEMO_MEDIA_SERVER: dict[str, Any] = {
    "enabled": True,
    "listen": "127.0.0.1:5070",
    "prompts": "prompts",
    "recordings": "var/recordings",
    "extensions": {"*43": "echo", "*60": "speaking_clock", "*88": "conference"},
}

_SCOPE = Scope.admin("demo")


def plugin_settings(**media_server: Any) -> dict[str, Any]:
    """The demo's C{[plugins]} tables (a fresh copy, the configuration's
    C{plugins.settings} when no file is given).

    @param media_server: keys of C{[plugins.media_server]} to change, e.g.
        C{enabled=False} or C{listen="127.0.0.1:5072"} (tests).
    """
    table = copy.deepcopy(DEMO_MEDIA_SERVER)
    table.update(media_server)
    return {"media_server": table}


@dataclass(frozen=True)
class Seeded:
    """What L{seed} did.

    @ivar customer_id: the demo tenant's customer id (C{None} when the seed
        was already complete and nothing was looked at).
    @ivar created: the extension numbers created now.
    @ivar admin_key: the admin API key created now (shown once), or C{None}.
    """

    customer_id: int | None
    created: tuple[str, ...]
    admin_key: str | None

    @property
    def first_start(self) -> bool:
        """Whether this seed created anything."""
        return bool(self.created) or self.admin_key is not None


def state_directory(database_url: str) -> str | None:
    """The folder of a SQLite database file (C{"var"} for the demo's), where
    the demo keeps its key files; C{None} for other databases and
    C{:memory:}."""
    if not database_url.startswith("sqlite:"):
        return None
    path = sqlite_path(database_url)
    if path == ":memory:":
        return None
    return os.path.dirname(path) or "."


def write_private(path: str, text: str) -> None:
    """Write C{text} (and a newline) to C{path}, readable by its owner only
    (mode 0600, also when the file existed); its folder is created."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text + "\n")


def demo_secret(folder: str, token: Callable[[int], str] = _random.token_urlsafe) -> str:
    """The demo's PIN hashing secret, read from C{folder/secret}, or made
    (32 random bytes, URL-safe) and stored there with mode 0600 when the
    file does not exist yet.

    @raise ValueError: when the file exists but holds no usable secret
        (making a new one would silently invalidate every stored PIN).
    """
    path = os.path.join(folder, SECRET_FILE)
    try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"{path} holds no usable secret (at least {MIN_SECRET_LENGTH} "
                             "characters): restore it, or remove it together with the "
                             "database") from None
        return secret
    secret = token(32)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secret + "\n")
    return secret


def save_admin_key(folder: str, key: str) -> str:
    """Write the admin API key to C{folder/admin-api-key} (mode 0600).

    @return: the file's path.
    """
    path = os.path.join(folder, ADMIN_KEY_FILE)
    write_private(path, key)
    return path


async def _seed(repos: Mapping[str, IRepository], domain: str, numbers: Iterable[str],
                password: str, admin_key: bool) -> Seeded:
    """See L{seed}."""
    if admin_key:
        keys = await repos["api_keys"].list(_SCOPE, {"role": "admin"}, limit=500)
        if any(row["name"] == ADMIN_KEY_NAME for row in keys.rows):
            return Seeded(None, (), None)
    found = await repos["customers"].list(_SCOPE, {"sip_domain": domain}, limit=1)
    if found.rows:
        customer_id = found.rows[0]["id"]
    else:
        customer = await repos["customers"].create(
            {"name": DEMO_CUSTOMER, "sip_domain": domain, "currency": DEMO_CURRENCY}, _SCOPE)
        customer_id = customer["id"]
    accounts = await repos["accounts"].list(_SCOPE, {"customer_id": customer_id}, limit=500)
    existing = {row["number"] for row in accounts.rows} | {
        row["sip_username"] for row in accounts.rows}
    created = []
    for number in numbers:
        if number in existing:
            continue
        await repos["accounts"].create({"customer_id": customer_id, "number": number,
                                        "sip_username": number, "password": password}, _SCOPE)
        created.append(number)
    key = None
    if admin_key:
        row = await repos["api_keys"].create({"name": ADMIN_KEY_NAME, "role": "admin"}, _SCOPE)
        key = row["key"]
    return Seeded(customer_id, tuple(created), key)


def seed(repos: Mapping[str, IRepository], *, domain: str = DEMO_DOMAIN,
         numbers: Iterable[str] = DEMO_NUMBERS, password: str = DEMO_PASSWORD,
         admin_key: bool = True) -> Deferred[Seeded]:
    """Create the demo tenant, its extensions and (with C{admin_key}) the
    demo admin API key, unless the seed was completed before.

    Only what is missing is created, so an interrupted seed is completed by
    the next call; with C{admin_key}, a seed whose key exists is complete
    and nothing at all is done.

    @param repos: repositories by collection (C{customers}, C{accounts},
        C{api_keys}), e.g. L{b2bua.db.repository.repositories}.
    @return: a Deferred firing with L{Seeded}.
    """
    return ensureDeferred(_seed(repos, domain, tuple(numbers), password, admin_key))


async def _seed_database(url: str, reactor: Any, kwargs: dict[str, Any]) -> Seeded:
    """See L{seed_database}."""
    database = Database(url, reactor)
    try:
        await migrate(database)
        feed = ChangeFeed()
        repos = {name: Repository(name, database, feed, "")
                 for name in ("customers", "accounts", "api_keys")}
        return await seed(repos, **kwargs)
    finally:
        await database.close()


def seed_database(url: str, reactor: Any, **kwargs: Any) -> Deferred[Seeded]:
    """Open the database at C{url}, migrate it, L{seed} it and close it.

    @param kwargs: passed to L{seed} (C{admin_key=False} to make no key).
    """
    return ensureDeferred(_seed_database(url, reactor, kwargs))
