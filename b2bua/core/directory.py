"""The subscriber directory the core reads: tenants (SIP domains) and their
extensions with digest HA1 values, plus the rest of provisioning that call
processing needs (DIDs, vendors, connections, routing plans, tariffs, the
subscriptions and products that give a customer its tariff, customer
trunks and ported numbers).

This is the in-memory view that call processing reads per message (no SQL
on that path).  A L{Directory} is built either by hand (L{add_tenant},
L{add_extension}: tests and L{demo_directory}) or from the rows of the
provisioning database (L{Directory.from_rows}, used by the live snapshot in
L{b2bua.core.snapshot}); one built from rows is frozen: it is never changed
after it is published, a change in the database builds a new one.

Passwords are never kept: only HA1 values per digest algorithm.

Trunks and vendor connections are also found by the source address of a
request (L{Directory.trunk_by_source}, L{Directory.connection_by_source}):
their networks are put in a L{NetworkTable} once, when the directory is
built, and the most specific network holding the address wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import Any, Protocol

from b2bua.core.networks import NetworkTable, host_address
from b2bua.sip.auth import compute_ha1

__all__ = ["DEMO_DOMAIN", "DEMO_PASSWORD", "Directory", "DirectoryFrozen", "DirectoryView",
           "Extension", "PortedNumber", "Row", "Tenant", "demo_directory"]

DEMO_DOMAIN = "127.0.0.1"
DEMO_PASSWORD = "1234"

#: A provisioning row as the directory keeps it: a read-only mapping of the
#: row's columns (JSON columns inside it are plain values: do not change them).
Row = Mapping[str, Any]

#: The digest algorithms whose HA1 values provisioning stores, by column.
_HA1_COLUMNS = (("MD5", "ha1_md5"), ("SHA-256", "ha1_sha256"))
#: The trunk authentication modes found by source address, and by account.
_BY_SOURCE = frozenset({"ip", "both"})
_BY_ACCOUNT = frozenset({"digest", "both"})
_EMPTY: Row = MappingProxyType({})


@dataclass(frozen=True)
class Tenant:
    """A customer: one SIP domain (also its digest realm).

    @ivar id: the customer's row id (C{None} when not from the database).
    @ivar currency: ISO 4217 code of its balance and tariffs.
    @ivar billing_timezone: IANA zone of its tariffs and invoices.
    @ivar routing_plan_id: the routing plan of its outgoing calls, if any.
    @ivar dial_plan: its dial plan document (a read-only mapping; the JSON
        values inside are plain: do not change them).
    """

    domain: str
    name: str = ""
    id: int | None = None
    currency: str = ""
    billing_timezone: str = "UTC"
    routing_plan_id: int | None = None
    dial_plan: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, hash=False,
                                         compare=False)


@dataclass(frozen=True)
class Extension:
    """A phone line of a tenant.

    @ivar ha1: HA1 hex digests keyed by algorithm (C{MD5}, C{SHA-256}).
    @ivar id: the account's row id (C{None} when not from the database).
    """

    tenant: Tenant
    number: str
    username: str
    ha1: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    display_name: str = ""
    id: int | None = None
    features: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, hash=False,
                                        compare=False)

    @property
    def aor(self) -> str:
        """The address-of-record, C{user@domain}."""
        return f"{self.number}@{self.tenant.domain}"


@dataclass(frozen=True, slots=True)
class PortedNumber:
    """A number ported to another network (an LNP entry).

    @ivar number: the number as provisioned.
    @ivar routing_prefix: the routing number of the network now serving it
        (prefixed to the number, or sent as C{rn}, by whoever routes it).
    @ivar carrier: the name of that network (may be empty).
    """

    number: str
    routing_prefix: str
    carrier: str = ""


class DirectoryView(Protocol):
    """What the core and plugins read: a L{Directory}, or something that
    delegates to the current one (the live L{b2bua.core.snapshot.Snapshot})."""

    def tenant(self, domain: str) -> Tenant | None:
        """The tenant serving C{domain}, if any."""

    def extension(self, domain: str, number: str) -> Extension | None:
        """The extension C{number} of the tenant at C{domain}, if any."""

    def by_username(self, realm: str, username: str) -> Extension | None:
        """The extension authenticating as C{username} in C{realm}."""

    def lookup_ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """HA1 for digest checks (C{None} for an unknown user)."""


class DirectoryFrozen(TypeError):
    """A change to a directory that has been published (built from rows)."""


def _freeze(row: Mapping[str, Any]) -> Row:
    """A read-only copy of C{row}."""
    return MappingProxyType(dict(row))


class Directory:
    """Tenants by domain and extensions by (domain, number) and by (realm,
    username); DIDs by number; vendors, connections, routing plans and
    tariffs by id; trunks by id, customer, account and source address;
    connections by source address; ported numbers by number."""

    def __init__(self) -> None:
        self._tenants: dict[str, Tenant] = {}
        self._tenants_by_id: dict[int, Tenant] = {}
        self._extensions: dict[tuple[str, str], Extension] = {}
        self._by_username: dict[tuple[str, str], Extension] = {}
        self._dids: dict[str, Row] = {}
        self._dids_by_customer: dict[int, list[Row]] = {}
        self._vendors: dict[int, Row] = {}
        self._connections: dict[int, Row] = {}
        self._routing_plans: dict[int, Row] = {}
        self._tariffs: dict[int, Row] = {}
        self._products: dict[int, Row] = {}
        #: Active subscriptions by customer id, most recent C{starts_on} first.
        self._subscriptions: dict[int, list[Row]] = {}
        self._customers: dict[int, Row] = {}
        self._trunks: dict[int, Row] = {}
        self._trunks_by_customer: dict[int, list[Row]] = {}
        self._trunks_by_account: dict[int, Row] = {}
        self._trunk_sources: NetworkTable[Row] = NetworkTable()
        self._connection_sources: NetworkTable[Row] = NetworkTable()
        self._ported: dict[str, PortedNumber] = {}
        self._frozen = False

    # -- building ----------------------------------------------------------------------

    @classmethod
    def from_rows(cls, rows: Mapping[str, Iterable[Mapping[str, Any]]]) -> Directory:
        """Build a frozen directory from what
        L{b2bua.db.repository.load_directory_rows} read.

        Customers become tenants (their C{sip_domain} is the realm), accounts
        become extensions with their stored HA1 values (accounts of a
        customer not in C{rows} are left out), the other collections are
        kept as read-only rows (subscriptions by customer, most recent
        C{starts_on} first).  Trunks of a customer not in C{rows} are left
        out; trunks and connections are indexed by their source networks
        (L{_index_sources}).  Missing collections are empty.
        """
        directory = cls()
        for row in rows.get("customers", ()):
            dial_plan = row.get("dial_plan")
            directory.add_tenant(Tenant(
                row["sip_domain"], row.get("name") or "", row["id"], row.get("currency") or "",
                row.get("billing_timezone") or "UTC", row.get("routing_plan_id"),
                MappingProxyType(dict(dial_plan)) if isinstance(dial_plan, Mapping)
                else _EMPTY))
            directory._customers[row["id"]] = _freeze(row)
        for row in rows.get("accounts", ()):
            tenant = directory._tenants_by_id.get(row["customer_id"])
            if tenant is None:
                continue
            ha1 = {alg: row[column] for alg, column in _HA1_COLUMNS if row.get(column)}
            features = row.get("features")
            directory._put(Extension(tenant, row["number"], row["sip_username"],
                                     MappingProxyType(ha1), row.get("caller_id_name") or "",
                                     row["id"],
                                     MappingProxyType(dict(features))
                                     if isinstance(features, Mapping) else _EMPTY))
        for row in rows.get("dids", ()):
            directory._dids[row["number"]] = _freeze(row)
        for name, table in (("vendors", directory._vendors),
                            ("connections", directory._connections),
                            ("routing_plans", directory._routing_plans),
                            ("tariffs", directory._tariffs),
                            ("products", directory._products)):
            for row in rows.get(name, ()):
                table[row["id"]] = _freeze(row)
        for row in rows.get("subscriptions", ()):
            directory._subscriptions.setdefault(row["customer_id"], []).append(_freeze(row))
        for subscriptions in directory._subscriptions.values():
            subscriptions.sort(key=lambda r: (r["starts_on"], r["id"]), reverse=True)
        for row in rows.get("trunks", ()):
            if row["customer_id"] not in directory._tenants_by_id:
                continue
            trunk = directory._trunks[row["id"]] = _freeze(row)
            directory._trunks_by_customer.setdefault(row["customer_id"], []).append(trunk)
            if row.get("auth_mode") in _BY_ACCOUNT and row.get("account_id") is not None:
                directory._trunks_by_account.setdefault(row["account_id"], trunk)
        for trunks in directory._trunks_by_customer.values():
            trunks.sort(key=lambda r: r["id"])
        for row in rows.get("lnp_entries", ()):
            ported = PortedNumber(row["number"], row["routing_prefix"], row.get("carrier") or "")
            directory._ported.setdefault(row["number"].removeprefix("+"), ported)
        directory._index_sources()
        directory._frozen = True
        return directory

    def _index_sources(self) -> None:
        """Build the source-address tables, once.

        Trunks that authenticate by address (C{ip}, C{both}) are found by
        their C{allowed_sources}; connections by their C{inbound_sources},
        or, when they list none, by the host of their C{address} if it is
        an IP address.  Lower ids come first, so when two rows list the
        same network the lower id keeps it (L{NetworkTable.duplicates}).
        """
        self._trunk_sources = NetworkTable(
            (network, trunk) for trunk in self.trunks() if trunk.get("auth_mode") in _BY_SOURCE
            for network in trunk.get("allowed_sources") or ())
        pairs: list[tuple[str, Row]] = []
        for connection in self.connections():
            sources = list(connection.get("inbound_sources") or ())
            if not sources:
                host = host_address(connection.get("address") or "")
                sources = [str(host)] if host is not None else []
            pairs.extend((network, connection) for network in sources)
        self._connection_sources = NetworkTable(pairs)

    def _check_open(self) -> None:
        if self._frozen:
            raise DirectoryFrozen("this directory is published: build a new one")

    def add_tenant(self, tenant: Tenant) -> None:
        """Add or replace a tenant.  @raise DirectoryFrozen: once published."""
        self._check_open()
        self._tenants[tenant.domain.lower()] = tenant
        if tenant.id is not None:
            self._tenants_by_id[tenant.id] = tenant

    def add_extension(self, tenant: Tenant, number: str, password: str,
                      username: str | None = None, display_name: str = "") -> Extension:
        """Add an extension, computing its HA1 values from C{password}.

        @raise DirectoryFrozen: once published.
        """
        self._check_open()
        username = username or number
        realm = tenant.domain
        ha1 = {alg: compute_ha1(username, realm, password, alg) for alg in ("MD5", "SHA-256")}
        ext = Extension(tenant, number, username, ha1, display_name)
        self._put(ext)
        return ext

    def _put(self, ext: Extension) -> None:
        """Index C{ext} by number and by username."""
        domain = ext.tenant.domain.lower()
        self._extensions[(domain, ext.number)] = ext
        self._by_username[(domain, ext.username)] = ext

    # -- the read API (DirectoryView) --------------------------------------------------

    def tenant(self, domain: str) -> Tenant | None:
        """The tenant serving C{domain}, if any."""
        return self._tenants.get(domain.lower())

    def tenant_by_id(self, customer_id: int) -> Tenant | None:
        """The tenant of customer C{customer_id}, if it is active."""
        return self._tenants_by_id.get(customer_id)

    def tenants(self) -> list[Tenant]:
        """Every tenant."""
        return list(self._tenants.values())

    def extension(self, domain: str, number: str) -> Extension | None:
        """The extension C{number} of the tenant at C{domain}, if any."""
        return self._extensions.get((domain.lower(), number))

    def extensions(self, domain: str | None = None) -> list[Extension]:
        """Every extension (of the tenant at C{domain}, when given)."""
        if domain is None:
            return list(self._extensions.values())
        wanted = domain.lower()
        return [e for (d, _), e in self._extensions.items() if d == wanted]

    def by_username(self, realm: str, username: str) -> Extension | None:
        """The extension authenticating as C{username} in C{realm}."""
        return self._by_username.get((realm.lower(), username))

    def lookup_ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """HA1 for digest checks (C{None} for an unknown user)."""
        ext = self._by_username.get((realm.lower(), username))
        return None if ext is None else ext.ha1.get(algorithm)

    def did(self, number: str) -> Row | None:
        """The active DID C{number}, tried as given and then with its
        leading C{+} added or removed (carriers differ)."""
        found = self._dids.get(number)
        if found is None and number:
            other = number[1:] if number.startswith("+") else f"+{number}"
            found = self._dids.get(other)
        return found

    def dids_of_customer(self, customer_id: int) -> list[Row]:
        """The active DIDs of a customer (the numbers its calls may show)."""
        found = self._dids_by_customer.get(customer_id)
        if found is None:
            found = [row for row in self._dids.values() if row.get("customer_id") == customer_id]
            if self._frozen:
                self._dids_by_customer[customer_id] = found
        return list(found)

    def vendor(self, vendor_id: int) -> Row | None:
        """The active vendor C{vendor_id}, if any."""
        return self._vendors.get(vendor_id)

    def connection(self, connection_id: int) -> Row | None:
        """The enabled connection C{connection_id} of an active vendor, if any."""
        return self._connections.get(connection_id)

    def connections(self) -> list[Row]:
        """Every enabled connection of an active vendor, by id."""
        return [self._connections[k] for k in sorted(self._connections)]

    def routing_plan(self, plan_id: int) -> Row | None:
        """The routing plan C{plan_id}, if any."""
        return self._routing_plans.get(plan_id)

    def routing_plans(self) -> list[Row]:
        """Every routing plan, by id."""
        return [self._routing_plans[k] for k in sorted(self._routing_plans)]

    def tariff(self, tariff_id: int) -> Row | None:
        """The tariff C{tariff_id} (id, name, currency, document), if any."""
        return self._tariffs.get(tariff_id)

    def tenant_row(self, customer_id: int) -> Row | None:
        """The row of active customer C{customer_id} (with its C{dial_plan}
        and C{routing_plan_id}), if it is in the directory."""
        return self._customers.get(customer_id)

    def trunk(self, trunk_id: int) -> Row | None:
        """The active trunk C{trunk_id} of an active customer, if any."""
        return self._trunks.get(trunk_id)

    def trunks(self) -> list[Row]:
        """Every active trunk of an active customer, by id."""
        return [self._trunks[k] for k in sorted(self._trunks)]

    def trunks_for_customer(self, customer_id: int) -> list[Row]:
        """The active trunks of customer C{customer_id}, by id."""
        return list(self._trunks_by_customer.get(customer_id, ()))

    def trunk_by_source(self, address: str) -> Row | None:
        """The trunk that authenticates by address (C{ip} or C{both}) whose
        C{allowed_sources} hold C{address} most specifically, if any.

        A C{both} trunk found here still needs its digest check.
        """
        return self._trunk_sources.lookup(address)

    def trunk_by_account(self, account_id: int) -> Row | None:
        """The trunk that authenticates by digest (C{digest} or C{both}) as
        account C{account_id}, if any (the registration of that account is
        the route back to the PBX)."""
        return self._trunks_by_account.get(account_id)

    def routing_plan_for_trunk(self, trunk_id: int) -> Row | None:
        """The routing plan of trunk C{trunk_id}: its own, else its
        customer's (C{None} when neither names one in the directory)."""
        trunk = self._trunks.get(trunk_id)
        if trunk is None:
            return None
        plan_id = trunk.get("routing_plan_id")
        if plan_id is None:
            customer = self._customers.get(trunk["customer_id"])
            plan_id = None if customer is None else customer.get("routing_plan_id")
        return None if plan_id is None else self._routing_plans.get(plan_id)

    def connection_by_source(self, address: str) -> Row | None:
        """The enabled connection whose inbound sources hold C{address} most
        specifically (a vendor's call to one of our DIDs), if any."""
        return self._connection_sources.lookup(address)

    def lnp(self, number: str) -> PortedNumber | None:
        """The ported-number entry of C{number} (with or without its
        leading C{+}), if it was ported."""
        return self._ported.get(number.removeprefix("+")) if number else None

    def tariff_for_tenant(self, domain: str, today: date) -> Row | None:
        """The tariff row that prices the calls of the tenant at C{domain} on
        C{today}, if any.

        It is the tariff of the tenant's active subscription in effect on
        C{today} (C{starts_on <= today}, and C{today <= ends_on} when it
        ends: C{ends_on} is the last day included) whose product has a
        C{tariff_id} that is in the directory.  With several, the most recent
        C{starts_on} wins (then the higher subscription id).  Subscriptions
        without a tariff are skipped.  C{today} is the caller's choice of
        calendar (the charging resolver uses UTC dates).
        """
        tenant = self.tenant(domain)
        if tenant is None or tenant.id is None:
            return None
        for subscription in self._subscriptions.get(tenant.id, ()):
            ends_on = subscription.get("ends_on")
            if subscription["starts_on"] > today or (ends_on is not None and ends_on < today):
                continue
            product = self._products.get(subscription["product_id"])
            tariff_id = None if product is None else product.get("tariff_id")
            if tariff_id is None:
                continue
            tariff = self._tariffs.get(tariff_id)
            if tariff is not None:
                return tariff
        return None

    def counts(self) -> dict[str, int]:
        """How many of each thing it holds (for logs and metrics)."""
        return {"tenants": len(self._tenants), "extensions": len(self._extensions),
                "dids": len(self._dids), "vendors": len(self._vendors),
                "connections": len(self._connections),
                "routing_plans": len(self._routing_plans), "tariffs": len(self._tariffs),
                "trunks": len(self._trunks), "lnp_entries": len(self._ported),
                "source_conflicts": len(self._trunk_sources.duplicates)
                + len(self._connection_sources.duplicates)}

    def __len__(self) -> int:
        return len(self._extensions)


def demo_directory() -> Directory:
    """The embedded demo: tenant C{127.0.0.1}, extensions 1000-1019, password 1234.

    The running switch keeps its demo in SQLite (L{b2bua.demo}); this
    in-memory one serves tests and the test harness.
    """
    directory = Directory()
    tenant = Tenant(DEMO_DOMAIN, "demo")
    directory.add_tenant(tenant)
    for number in range(1000, 1020):
        directory.add_extension(tenant, str(number), DEMO_PASSWORD)
    return directory
