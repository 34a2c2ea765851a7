"""The live provisioning snapshot: the database read into memory, kept fresh.

Call processing never runs SQL per message (design.md, "Hot path").  A
L{Snapshot} reads everything it needs in one consistent transaction
(L{b2bua.db.repository.load_directory_rows}), builds a frozen
L{Directory} from it and publishes it with one assignment, so a request
sees either the old directory or the new one, never a mix.

It stays fresh by listening to the L{ChangeFeed}: every change (made in
this process, or in another one and delivered by PostgreSQL C{NOTIFY})
triggers a full reload.  Reloads are coalesced: at most one is in flight;
changes that arrive meanwhile queue exactly one more, so a burst of a
thousand changes costs two reloads, not a thousand.  A reload that fails
keeps the current directory and is retried on the clock after a back-off
that doubles from C{min_backoff} to C{max_backoff} seconds.

A full reload is cheap at the scale of one operator's provisioning (tens
of thousands of rows read in a few tens of milliseconds, off the reactor
thread).  Reloading only the changed rows (the change carries the entity
and id) is future work, for when it is not.

A L{Snapshot} offers the read API of a L{Directory} (L{DirectoryView}),
each call delegating to the current directory, so the core and the plugins
are handed the snapshot itself as their directory and read the current
data on every request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.core.directory import Directory, Extension, PortedNumber, Row, Tenant
from b2bua.db.repository import load_directory_rows

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from b2bua.db.changes import Change, ChangeFeed
    from b2bua.db.database import Database

__all__ = ["Rows", "Snapshot"]

#: What a loader fires with: collection name -> rows.
Rows = Mapping[str, Iterable[Mapping[str, Any]]]


class Snapshot:
    """The current provisioning L{Directory}, reloaded when the database changes.

    @ivar version: how many directories have been published (0 before the
        first load); a gauge for metrics, and a way for tests to see that a
        reload happened.
    @ivar loaded_at: the clock's time of the last successful load (C{None}
        before the first).
    @ivar failures: how many loads have failed since start (a counter).
    @ivar changes: how many change announcements were heard (a counter).
    """

    log = Logger()

    def __init__(self, database: Database, feed: ChangeFeed, clock: IReactorTime, *,
                 load: Callable[[Database], Deferred[Rows]] = load_directory_rows,
                 min_backoff: float = 0.5, max_backoff: float = 30.0) -> None:
        """
        @param database: where provisioning lives.
        @param feed: announces changes (subscribed to by L{start}).
        @param clock: schedules retries and stamps L{loaded_at}.
        @param load: reads the rows (a test may give its own).
        @param min_backoff: seconds before the first retry of a failed reload.
        @param max_backoff: the longest wait between retries.
        """
        self.database = database
        self.feed = feed
        self.clock = clock
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.version = 0
        self.loaded_at: float | None = None
        self.failures = 0
        self.changes = 0
        self._load = load
        self._directory = Directory.from_rows({})
        self._backoff = min_backoff
        self._loading: Deferred[None] | None = None
        self._queued = False
        self._retry: IDelayedCall | None = None
        self._starting: Deferred[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._stopped = False
        self._idle: list[Deferred[None]] = []

    def __repr__(self) -> str:
        return f"<Snapshot version={self.version} {self._directory.counts()}>"

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def directory(self) -> Directory:
        """The current directory (empty before the first load)."""
        return self._directory

    @property
    def loaded(self) -> bool:
        """Whether a directory has been loaded."""
        return self.version > 0

    def start(self) -> Deferred[None]:
        """Subscribe to changes and load the first directory.

        Changes heard while the first load runs queue a second one, so
        nothing committed after the first read is missed.

        @return: a Deferred firing once the first directory is published,
            or failing with what made the first load fail (the snapshot is
            then stopped: no retry).
        @raise RuntimeError: when called a second time.
        """
        if self._starting is not None:
            raise RuntimeError("this snapshot was already started")
        self._starting = Deferred()
        starting = self._starting
        self._unsubscribe = self.feed.subscribe(self._changed)
        self._run()
        return starting

    def stop(self) -> Deferred[None]:
        """Stop listening and retrying.

        @return: a Deferred firing once no load is in flight (a load that
            was running is let finish, so the database can then close).
        """
        self._stopped = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._loading is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle.append(waiter)
        return waiter

    def reload(self) -> None:
        """Ask for a reload (coalesced with one in flight or scheduled)."""
        if self._stopped or self._starting is None:
            return
        if self._loading is not None:
            self._queued = True
            return
        if self._retry is not None and self._retry.active():
            return  # the scheduled retry reads everything anyway
        self._run()

    # -- loading -----------------------------------------------------------------------

    def _changed(self, change: Change) -> None:
        """A change was announced: reload."""
        self.changes += 1
        self.reload()

    def _run(self) -> None:
        """Start one load now."""
        self._queued = False
        self._retry = None
        loading = maybeDeferred(self._load, self.database)
        self._loading = loading  # set before the callbacks: a loader may fire at once
        loading.addCallback(Directory.from_rows)
        loading.addCallbacks(self._publish, self._failed)
        loading.addBoth(self._settled)

    def _publish(self, directory: Directory) -> None:
        """Swap the new directory in."""
        self._directory = directory
        self.version += 1
        self.loaded_at = self.clock.seconds()
        self._backoff = self.min_backoff
        counts = directory.counts()
        self.log.info("provisioning snapshot {version}: {tenants} tenants, {extensions} "
                      "extensions, {dids} DIDs, {connections} connections, {trunks} trunks",
                      version=self.version, **counts)
        if counts["source_conflicts"]:
            self.log.warn("provisioning snapshot {version}: {source_conflicts} source "
                          "networks are listed by more than one trunk or connection (the "
                          "lower id keeps each)", version=self.version, **counts)
        if self._starting is not None and not self._starting.called:
            self._starting.callback(None)

    def _failed(self, failure: Failure) -> None:
        """Keep the current directory; fail the start, or retry later."""
        self.failures += 1
        if self._starting is not None and not self._starting.called:
            self._stopped = True
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            self._starting.errback(failure)
            return
        if self._stopped:
            return
        delay = self._backoff
        self._backoff = min(self._backoff * 2, self.max_backoff)
        self.log.warn("provisioning snapshot reload failed ({error}); keeping version "
                      "{version}, retrying in {delay}s", error=failure.getErrorMessage()
                      or failure.type.__name__, version=self.version, delay=delay)
        self._queued = False
        self._retry = self.clock.callLater(delay, self._run)

    def _settled(self, _: object) -> None:
        """A load ended: run the queued one, or tell whoever waits for quiet."""
        self._loading = None
        if self._queued and not self._stopped:
            self._run()
            return
        waiters, self._idle = self._idle, []
        for waiter in waiters:
            waiter.callback(None)

    # -- the Directory read API, on the current directory ------------------------------

    def tenant(self, domain: str) -> Tenant | None:
        """The tenant serving C{domain}, if any."""
        return self._directory.tenant(domain)

    def tenant_by_id(self, customer_id: int) -> Tenant | None:
        """The tenant of customer C{customer_id}, if it is active."""
        return self._directory.tenant_by_id(customer_id)

    def tenants(self) -> list[Tenant]:
        """Every tenant."""
        return self._directory.tenants()

    def extension(self, domain: str, number: str) -> Extension | None:
        """The extension C{number} of the tenant at C{domain}, if any."""
        return self._directory.extension(domain, number)

    def extensions(self, domain: str | None = None) -> list[Extension]:
        """Every extension (of the tenant at C{domain}, when given)."""
        return self._directory.extensions(domain)

    def by_username(self, realm: str, username: str) -> Extension | None:
        """The extension authenticating as C{username} in C{realm}."""
        return self._directory.by_username(realm, username)

    def lookup_ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        """HA1 for digest checks (C{None} for an unknown user)."""
        return self._directory.lookup_ha1(username, realm, algorithm)

    def did(self, number: str) -> Row | None:
        """The active DID C{number} (with or without its C{+}), if any."""
        return self._directory.did(number)

    def dids_of_customer(self, customer_id: int) -> list[Row]:
        """The active DIDs of a customer."""
        return self._directory.dids_of_customer(customer_id)

    def vendor(self, vendor_id: int) -> Row | None:
        """The active vendor C{vendor_id}, if any."""
        return self._directory.vendor(vendor_id)

    def connection(self, connection_id: int) -> Row | None:
        """The enabled connection C{connection_id}, if any."""
        return self._directory.connection(connection_id)

    def connections(self) -> list[Row]:
        """Every enabled connection of an active vendor."""
        return self._directory.connections()

    def routing_plan(self, plan_id: int) -> Row | None:
        """The routing plan C{plan_id}, if any."""
        return self._directory.routing_plan(plan_id)

    def routing_plans(self) -> list[Row]:
        """Every routing plan."""
        return self._directory.routing_plans()

    def tariff(self, tariff_id: int) -> Row | None:
        """The tariff C{tariff_id}, if any."""
        return self._directory.tariff(tariff_id)

    def tariff_for_tenant(self, domain: str, today: date) -> Row | None:
        """The tariff pricing the calls of the tenant at C{domain} on C{today}."""
        return self._directory.tariff_for_tenant(domain, today)

    def tenant_row(self, customer_id: int) -> Row | None:
        """The row of active customer C{customer_id}, if any."""
        return self._directory.tenant_row(customer_id)

    def trunk(self, trunk_id: int) -> Row | None:
        """The active trunk C{trunk_id}, if any."""
        return self._directory.trunk(trunk_id)

    def trunks(self) -> list[Row]:
        """Every active trunk of an active customer."""
        return self._directory.trunks()

    def trunks_for_customer(self, customer_id: int) -> list[Row]:
        """The active trunks of customer C{customer_id}."""
        return self._directory.trunks_for_customer(customer_id)

    def trunk_by_source(self, address: str) -> Row | None:
        """The address-authenticated trunk holding C{address} most specifically."""
        return self._directory.trunk_by_source(address)

    def trunk_by_account(self, account_id: int) -> Row | None:
        """The digest-authenticated trunk of account C{account_id}, if any."""
        return self._directory.trunk_by_account(account_id)

    def routing_plan_for_trunk(self, trunk_id: int) -> Row | None:
        """The routing plan of trunk C{trunk_id} (its own, else its customer's)."""
        return self._directory.routing_plan_for_trunk(trunk_id)

    def connection_by_source(self, address: str) -> Row | None:
        """The enabled connection whose inbound sources hold C{address}."""
        return self._directory.connection_by_source(address)

    def lnp(self, number: str) -> PortedNumber | None:
        """The ported-number entry of C{number}, if it was ported."""
        return self._directory.lnp(number)

    def counts(self) -> dict[str, int]:
        """How many of each thing the current directory holds."""
        return self._directory.counts()

    def __len__(self) -> int:
        return len(self._directory)
