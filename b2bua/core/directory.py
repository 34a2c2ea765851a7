"""The subscriber directory the core reads: tenants (SIP domains) and their
extensions with digest HA1 values.

This is the in-memory snapshot that call processing reads per message (no
SQL on that path); provisioning fills and refreshes it.  Passwords are never
kept: only HA1 values per digest algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from b2bua.sip.auth import compute_ha1

__all__ = ["Directory", "Extension", "Tenant", "demo_directory"]

DEMO_DOMAIN = "127.0.0.1"
DEMO_PASSWORD = "1234"


@dataclass(frozen=True)
class Tenant:
    """A customer: one SIP domain (also its digest realm)."""

    domain: str
    name: str = ""


@dataclass(frozen=True)
class Extension:
    """A phone line of a tenant.

    @ivar ha1: HA1 hex digests keyed by algorithm (C{MD5}, C{SHA-256}).
    """

    tenant: Tenant
    number: str
    username: str
    ha1: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    display_name: str = ""

    @property
    def aor(self) -> str:
        """The address-of-record, C{user@domain}."""
        return f"{self.number}@{self.tenant.domain}"


class Directory:
    """Tenants by domain and extensions by (domain, user)."""

    def __init__(self) -> None:
        self._tenants: dict[str, Tenant] = {}
        self._extensions: dict[tuple[str, str], Extension] = {}
        self._by_username: dict[tuple[str, str], Extension] = {}

    def add_tenant(self, tenant: Tenant) -> None:
        """Add or replace a tenant."""
        self._tenants[tenant.domain.lower()] = tenant

    def add_extension(self, tenant: Tenant, number: str, password: str,
                      username: str | None = None, display_name: str = "") -> Extension:
        """Add an extension, computing its HA1 values from C{password}."""
        username = username or number
        realm = tenant.domain
        ha1 = {alg: compute_ha1(username, realm, password, alg) for alg in ("MD5", "SHA-256")}
        ext = Extension(tenant, number, username, ha1, display_name)
        self._extensions[(tenant.domain.lower(), number)] = ext
        self._by_username[(realm.lower(), username)] = ext
        return ext

    def tenant(self, domain: str) -> Tenant | None:
        """The tenant serving C{domain}, if any."""
        return self._tenants.get(domain.lower())

    def extension(self, domain: str, number: str) -> Extension | None:
        """The extension C{number} of the tenant at C{domain}, if any."""
        return self._extensions.get((domain.lower(), number))

    def by_username(self, realm: str, username: str) -> Extension | None:
        """The extension authenticating as C{username} in C{realm}."""
        return self._by_username.get((realm.lower(), username))

    def lookup_ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """HA1 for digest checks (C{None} for an unknown user)."""
        ext = self._by_username.get((realm.lower(), username))
        return None if ext is None else ext.ha1.get(algorithm)

    def __len__(self) -> int:
        return len(self._extensions)


def demo_directory() -> Directory:
    """The embedded demo: tenant C{127.0.0.1}, extensions 1000-1019, password 1234."""
    directory = Directory()
    tenant = Tenant(DEMO_DOMAIN, "demo")
    directory.add_tenant(tenant)
    for number in range(1000, 1020):
        directory.add_extension(tenant, str(number), DEMO_PASSWORD)
    return directory
