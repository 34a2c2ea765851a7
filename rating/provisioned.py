"""Provisioned tariffs: the charging plugin's C{tariffs} and C{payer}
resolvers (C{services.extra}, C{docs/charging.md}) answered from the live
provisioning snapshot.

An operator gives a customer a tariff through the API: a product with a
C{tariff_id}, and a subscription of the customer to that product.  The
snapshot (L{b2bua.db.repository.load_directory_rows},
L{b2bua.core.directory.Directory.from_rows}) keeps the active
subscriptions, the products and the tariff documents in memory;
L{ProvisionedTariffs} turns the tariff of a call's tenant into a
L{TariffIndex}, synchronously and without I/O, as the plugin requires::

    provisioned = ProvisionedTariffs(lambda: snapshot.directory, reactor)
    extra = {"tariffs": provisioned.tariffs, "payer": provisioned.payer, ...}

Decisions:

  - I{Today} is the UTC date of the injected clock (the subscription dates
    are compared with it).  The tenant's C{billing_timezone} is not used:
    a subscription starting or ending on a day takes effect at 00:00 UTC of
    that day.  The tariff's own C{timezone} still decides its periods.
  - I{Caching}: a tariff is loaded and indexed once per version of its row.
    Tariff rows carry no C{updated_at} in the snapshot today, so the
    version is the row object itself (the same until the next snapshot)
    and, for a row of a new snapshot, its document: an equal document
    keeps the index (compared once per snapshot), a different one is
    loaded again.  When a row does carry C{updated_at}, that stamp is the
    version instead.
  - A document that fails to load (L{TariffError}, or any error of the
    loader) is logged once per version and prices nothing: C{tariffs}
    returns C{None}, so the tenant's calls are I{not charged} (the plugin's
    "no tariff, no opinion") rather than failed with 500.
  - The payer is always C{customer:<tenant domain>}, C{prepaid}: a
    credit-limited postpaid customer is enforced as prepaid, because the
    balance store's C{available} includes its credit limit
    (C{docs/charging.md}, "Prepaid is credit controlled").  The customer's
    C{credit_limit} is therefore the store's business, not this module's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from b2bua.core.call import Call
from b2bua.core.directory import Row, Tenant
from rating.charging import PREPAID, Payer
from rating.lookup import TariffIndex
from rating.tariff import TariffError, load_tariff

__all__ = ["ACCOUNT", "DirectoryReader", "ProvisionedTariffs", "tenant_domain"]

#: The account a tenant's calls are charged to (the plugin's default too).
ACCOUNT = "customer:{domain}"

#: Tariff versions kept at most (stale ones are dropped all at once beyond it).
MAX_CACHED = 1024

log = Logger()


class DirectoryReader(Protocol):
    """What the resolver reads: a L{b2bua.core.directory.Directory}."""

    def tenant(self, domain: str) -> Tenant | None:
        """The tenant serving C{domain}, if any."""

    def tariff_for_tenant(self, domain: str, today: dt.date) -> Row | None:
        """The tariff row pricing the tenant's calls on C{today}, if any."""


def tenant_domain(call: Call) -> str:
    """The paying tenant's domain, as the charging plugin computes it: the
    call's tenant, else the domain of its identity; lower case."""
    return (call.tenant or call.identity.rpartition("@")[2]).lower()


@dataclass
class _Cached:
    """One loaded version of a tariff row.

    @ivar row: the row object last seen with this version.
    @ivar stamp: its C{updated_at} (C{None}: not in the row).
    @ivar document: its document (compared when C{stamp} is C{None}).
    @ivar index: the index, C{None} when the document did not load.
    """

    row: Row
    stamp: Any
    document: Any
    index: TariffIndex | None


class ProvisionedTariffs:
    """The C{tariffs} and C{payer} resolvers of the charging plugin, over
    the current directory.

    @param directory_provider: returns the directory to read now (for the
        service, C{lambda: snapshot.directory}: the snapshot publishes a new
        directory on each change).
    @param clock: gives "today" (its UTC date).
    """

    def __init__(self, directory_provider: Callable[[], DirectoryReader],
                 clock: IReactorTime) -> None:
        self._directory = directory_provider
        self._clock = clock
        self._cache: dict[int, _Cached] = {}
        #: How many times a document was loaded (successfully or not).
        self.loads = 0

    def today(self) -> dt.date:
        """The clock's current UTC date."""
        return dt.datetime.fromtimestamp(self._clock.seconds(), dt.UTC).date()

    def tariffs(self, call: Call) -> TariffIndex | None:
        """The index of the tariff of C{call}'s tenant today, or C{None}
        (no tenant, no subscription with a tariff, or a bad document)."""
        return self.index_for(tenant_domain(call))

    def index_for(self, domain: str) -> TariffIndex | None:
        """The index of the tariff of the tenant at C{domain} today, if any."""
        if not domain:
            return None
        row = self._directory().tariff_for_tenant(domain, self.today())
        return None if row is None else self._index(row)

    def payer(self, call: Call) -> Payer | None:
        """C{customer:<tenant domain>}, prepaid, for a tenant of the
        directory; C{None} (the plugin's settings decide) otherwise."""
        domain = tenant_domain(call)
        if not domain or self._directory().tenant(domain) is None:
            return None
        return Payer(ACCOUNT.format(domain=domain), PREPAID)

    # -- the cache ---------------------------------------------------------------------

    def _index(self, row: Row) -> TariffIndex | None:
        """The index of tariff C{row}, loaded only for a new version."""
        tariff_id = row["id"]
        cached = self._cache.get(tariff_id)
        if cached is not None:
            if cached.row is row:
                return cached.index
            if self._same_version(cached, row):
                cached.row = row
                return cached.index
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        index = self._load(row)
        self._cache[tariff_id] = _Cached(row, row.get("updated_at"), row.get("document"), index)
        return index

    @staticmethod
    def _same_version(cached: _Cached, row: Mapping[str, Any]) -> bool:
        stamp = row.get("updated_at")
        if stamp is not None or cached.stamp is not None:
            return bool(stamp == cached.stamp)
        return bool(cached.document == row.get("document"))

    def _load(self, row: Row) -> TariffIndex | None:
        """Load and index C{row}'s document; log and give C{None} if it fails."""
        self.loads += 1
        try:
            return TariffIndex(load_tariff(row.get("document")))
        except TariffError as error:
            log.error("tariff {tariff_id} ({name}) does not load, its calls are not "
                      "charged: {error}", tariff_id=row["id"], name=row.get("name", ""),
                      error=str(error))
        except Exception:
            log.failure("tariff {tariff_id} ({name}) does not load, its calls are not charged",
                        tariff_id=row["id"], name=row.get("name", ""))
        return None
