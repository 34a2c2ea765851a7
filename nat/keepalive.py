"""Keep-alives for NATed UDP registrations: OPTIONS pings, dead bindings dropped.

A phone behind a NAT is reached at the address its REGISTER came from
(C{Binding.received}); over UDP that mapping lives only as long as the NAT
sees traffic, often 30 to 120 seconds.  L{KeepAlive} sends an OPTIONS to
each such binding every C{interval} seconds, which keeps the mapping open
from our side and proves the phone is still there:

  - which bindings: received over UDP by this node (C{owns} its listener,
    so that in a cluster only the node whose socket the NAT knows pings),
    without a Path (an edge proxy keeps its own flows), and behind a NAT by
    L{nat.detection.binding_verdict} (the Contact is not where the REGISTER
    came from).  TCP/TLS bindings are never pinged: the phone keeps its
    connection alive with CRLF pings, which the transport answers
    (RFC 5626 4.4.1).
  - what counts: any final response, whatever its code, proves the NAT
    mapping and the phone alive (it can only come from the phone's
    address); a ping with no final response within C{timeout} seconds, or
    one that cannot be sent, is a failure.
  - what happens: after C{failures} failures in a row the binding is
    removed from the location service, unless it was refreshed (same
    Call-ID with a higher CSeq, or another Call-ID or source) meanwhile.  A
    refresh also starts the count afresh.

One C{LoopingCall} runs the sweeps (the next starts only after the last
ended); a sweep lists the AORs (C{aors}, the directory's extensions in the
plugin), reads their bindings and pings, never more than C{in_flight}
store reads or pings at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    ensureDeferred,
    gatherResults,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.core.location import Binding, ILocationStore, OutOfOrder
from b2bua.sip.errors import TransactionTimeout, TransportError
from b2bua.sip.interfaces import Target
from b2bua.sip.message import Request, Response
from b2bua.sip.uri import format_host
from nat.detection import binding_verdict
from nat.metrics import NatMetrics

__all__ = ["KeepAlive", "KeepAliveSettings", "OptionsPinger", "PingTimeout", "Pinger",
           "SweepReport", "needs_ping", "options_request"]

_log = Logger()

#: Pings a binding: fires with the final response's code, or fails
#: (L{PingTimeout}, C{TransactionTimeout}, C{TransportError}...).
Pinger = Callable[[Binding], "Deferred[int]"]

#: Whether this node received on the listener C{(host, port)} (C{None}:
#: not recorded).
Owns = Callable[[tuple[str, int] | None], bool]


class PingTimeout(Exception):
    """No final response to a keep-alive ping within its timeout."""


@dataclass(frozen=True)
class KeepAliveSettings:
    """The keep-alive's knobs (see the module doc).

    @ivar interval: seconds between the starts of two sweeps.
    @ivar failures: failed pings in a row that remove a binding.
    @ivar timeout: seconds a ping waits for its final response.
    @ivar in_flight: most store reads, and most pings, at once.
    """

    interval: float = 30.0
    failures: int = 2
    timeout: float = 5.0
    in_flight: int = 100

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError("interval must be positive")
        if self.failures < 1:
            raise ValueError("failures must be at least 1")
        if not 0 < self.timeout <= self.interval:
            raise ValueError("timeout must be positive and at most the interval")
        if self.in_flight < 1:
            raise ValueError("in_flight must be at least 1")


@dataclass
class SweepReport:
    """What one sweep did (for logs and tests)."""

    aors: int = 0
    bindings: int = 0
    pinged: int = 0
    ok: int = 0
    failed: int = 0
    dropped: int = 0


def needs_ping(binding: Binding, owns: Owns = lambda local: True) -> bool:
    """Whether C{binding} gets OPTIONS keep-alives (see the module doc)."""
    received = binding.received
    if received is None or received.transport.upper() != "UDP" or binding.path:
        return False
    if not owns(received.local):
        return False
    return binding_verdict(binding).behind_nat


def options_request(binding: Binding, local: tuple[str, int], random_bytes: Callable[[int], bytes],
                    user_agent: str = "b2bua") -> Request:
    """The OPTIONS that pings C{binding}: to its Contact, From our listener
    C{local}, a fresh Call-ID and tag.  The transaction layer adds the Via."""
    host = format_host(local[0])
    fields = [
        ("Max-Forwards", "70"),
        ("From", f"<sip:ping@{host}:{local[1]}>;tag={random_bytes(6).hex()}"),
        ("To", f"<{binding.contact}>"),
        ("Call-ID", f"{random_bytes(12).hex()}@{host}"),
        ("CSeq", "1 OPTIONS"),
        ("Accept", "application/sdp"),
        ("User-Agent", user_agent),
        ("Content-Length", "0"),
    ]
    return Request("OPTIONS", binding.contact, fields)


class _Ping:
    """The owner of one OPTIONS client transaction: fires C{done} once."""

    __slots__ = ("done", "pinger", "timer")

    def __init__(self, pinger: OptionsPinger) -> None:
        self.pinger = pinger
        self.done: Deferred[int] = Deferred()
        self.timer: IDelayedCall | None = None

    def response_received(self, response: Response, transaction: object) -> None:
        """A final response (of any code) ends the ping well."""
        if response.code >= 200:
            self.finish(response.code)

    def transaction_failed(self, transaction: object, error: Exception) -> None:
        """Timer F fired or the transport failed."""
        self.finish(Failure(error))

    def finish(self, result: int | Failure) -> None:
        """Fire C{done} (only the first time)."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.pinger._pending.discard(self)
        if not self.done.called:
            if isinstance(result, Failure):
                self.done.errback(result)
            else:
                self.done.callback(result)


class OptionsPinger:
    """A L{Pinger} that sends OPTIONS through the transaction layer.

    @param send_request: C{TransactionLayer.send_request(request, target,
        owner)}.
    @param local_address: C{TransportLayer.local_address(transport)}.
    @param timeout: seconds to wait for a final response (the transaction
        itself goes on to Timer F; a late answer is ignored).
    @param random_bytes: the source of Call-IDs and tags.
    """

    def __init__(self, clock: IReactorTime, send_request: Callable[[Request, Target, Any], Any],
                 local_address: Callable[[str], tuple[str, int]], timeout: float = 5.0,
                 user_agent: str = "b2bua",
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.clock = clock
        self.timeout = timeout
        self.user_agent = user_agent
        self._send = send_request
        self._local_address = local_address
        self._random_bytes = random_bytes
        self._pending: set[_Ping] = set()

    def __call__(self, binding: Binding) -> Deferred[int]:
        """Ping C{binding} at the address its REGISTER came from."""
        received = binding.received
        if received is None:
            raise ValueError("a binding without a received address cannot be pinged")
        ping = _Ping(self)
        self._pending.add(ping)
        ping.timer = self.clock.callLater(
            self.timeout, ping.finish, Failure(PingTimeout(f"no answer in {self.timeout:g} s")))
        try:
            local = received.local or self._local_address(received.transport)
            request = options_request(binding, local, self._random_bytes, self.user_agent)
            self._send(request, Target(received.transport.upper(), received.host, received.port),
                       ping)
        except (TransportError, ValueError) as error:
            ping.finish(Failure(error))
        return ping.done

    def stop(self) -> None:
        """Abandon every ping in flight (each fails with C{CancelledError})."""
        for ping in list(self._pending):
            ping.finish(Failure(CancelledError()))


class KeepAlive:
    """Pings NATed UDP bindings and drops those that stopped answering.

    Two ways to find the AORs a sweep looks at:

      - C{aors} given (the directory's extensions): every sweep reads every
        one of them, and the loop runs from L{start} to L{stop};
      - C{aors} C{None}: the AORs handed to L{watch} (by whoever sees
        REGISTERs succeed, for a NATed UDP contact).  A sweep forgets an
        AOR once it has nothing left to ping, and the loop sleeps (no timer
        at all) while nothing is watched; L{watch} wakes it.

    @param aors: the AORs to look at in each sweep (normalised), or C{None}.
    @param ping: how to ping one binding (L{OptionsPinger} in service).
    @param owns: whether a binding's C{received.local} is this node's.
    @param metrics: where the counters go (none when C{None}).
    """

    def __init__(self, clock: IReactorTime, location: ILocationStore,
                 aors: Callable[[], Iterable[str]] | None, ping: Pinger,
                 settings: KeepAliveSettings | None = None, *,
                 owns: Owns = lambda local: True, metrics: NatMetrics | None = None) -> None:
        self.clock = clock
        self.settings = settings or KeepAliveSettings()
        self._location = location
        self._aors = aors
        self._ping = ping
        self._owns = owns
        self._metrics = metrics
        #: consecutive failures per binding registration (see L{_key})
        self._failures: dict[tuple[str, str, str, int], int] = {}
        self._loop: LoopingCall | None = None
        self._sweeping: Deferred[SweepReport] | None = None
        self._followers: list[Deferred[SweepReport]] = []
        self._started = False
        #: set by L{stop}: results still in flight are ignored
        self._stopped = False
        #: the AORs watched (when C{aors} is C{None})
        self.watching: set[str] = set()
        #: NATed bindings found by the last sweep
        self.pingable = 0
        #: the last complete sweep's report
        self.last: SweepReport | None = None

    # --- life cycle -----------------------------------------------------------

    def start(self) -> None:
        """Sweep every C{interval} seconds, the first one an interval from
        now (when watching, only while an AOR is watched)."""
        self._started, self._stopped = True, False
        if self._aors is not None or self.watching:
            self._wake()

    def stop(self) -> None:
        """Stop sweeping; results still in flight are ignored."""
        self._started, self._stopped = False, True
        self._sleep()

    def watch(self, aor: str) -> None:
        """Look at C{aor} (normalised) in the next sweeps, until it has no
        NATed binding left; starts the loop if it slept.  Only when the
        keep-alive was made without C{aors}."""
        if self._aors is not None:
            raise ValueError("this keep-alive sweeps a fixed list of AORs")
        self.watching.add(aor)
        if self._started:
            self._wake()

    def seed(self, aors: Iterable[str]) -> Deferred[int]:
        """Watch those of C{aors} that hold a binding to ping now (at
        start-up: bindings registered before a restart); fires with how
        many were added."""
        return ensureDeferred(self._seed(list(dict.fromkeys(aors))))

    async def _seed(self, aors: list[str]) -> int:
        now = self.clock.seconds()
        reads = DeferredSemaphore(self.settings.in_flight)
        found = await gatherResults([reads.run(self._bindings, aor, now) for aor in aors])
        added = 0
        for aor, bindings in zip(aors, found, strict=True):
            if bindings and any(needs_ping(b, self._owns) for b in bindings):
                if aor not in self.watching:
                    added += 1
                self.watch(aor)
        return added

    @property
    def running(self) -> bool:
        """True while the loop runs (a timer or a sweep is pending)."""
        return self._loop is not None

    def _wake(self) -> None:
        if self._loop is None:
            loop = LoopingCall(self._tick)
            loop.clock = self.clock
            self._loop = loop
            loop.start(self.settings.interval, now=False)

    def _sleep(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def failures_of(self, binding: Binding) -> int:
        """The failed pings in a row of C{binding} (as registered now)."""
        return self._failures.get(self._key(binding), 0)

    # --- sweeping -------------------------------------------------------------

    def _tick(self) -> Deferred[Any]:
        """One loop turn: a sweep whose errors are logged, never raised
        (a failed Deferred would stop the C{LoopingCall})."""
        d = self.sweep()
        d.addErrback(lambda f: _log.failure("keep-alive sweep failed", f))
        return d

    def sweep(self) -> Deferred[SweepReport]:
        """Look at every AOR's bindings now and ping the NATed ones; fires
        with the report when every ping (and removal) is done.  While a
        sweep runs, another call gets the running one's report."""
        if self._sweeping is None:
            running = ensureDeferred(self._sweep())
            if not running.called:
                self._sweeping = running
                self._followers = []
                running.addBoth(self._swept)
                return self._follow()
            running.addCallback(self._remember)
            return running
        return self._follow()

    def _follow(self) -> Deferred[SweepReport]:
        follower: Deferred[SweepReport] = Deferred()
        self._followers.append(follower)
        return follower

    def _remember(self, report: SweepReport) -> SweepReport:
        self.last = report
        return report

    def _swept(self, result: Any) -> None:
        """The running sweep ended: tell everyone who asked for it."""
        self._sweeping = None
        followers, self._followers = self._followers, []
        if not isinstance(result, Failure):
            self._remember(result)
        for follower in followers:
            if isinstance(result, Failure):
                follower.errback(result)
            else:
                follower.callback(result)

    @staticmethod
    def _key(binding: Binding) -> tuple[str, str, str, int]:
        """One registration of a binding: a refresh (a new CSeq or Call-ID)
        is a new key, so its count starts afresh."""
        return (binding.aor, binding.key, binding.call_id, binding.cseq)

    async def _sweep(self) -> SweepReport:
        report = SweepReport()
        watching = self._aors is None
        aors = sorted(self.watching) if watching else list(dict.fromkeys(self._aors()))
        report.aors = len(aors)
        now = self.clock.seconds()
        reads = DeferredSemaphore(self.settings.in_flight)
        found = await gatherResults([reads.run(self._bindings, aor, now) for aor in aors])
        due = []
        for aor, bindings in zip(aors, found, strict=True):
            if bindings is None:
                continue  # unreadable now: try again next time
            report.bindings += len(bindings)
            pingable = [b for b in bindings if needs_ping(b, self._owns)]
            if watching and not pingable:
                self.watching.discard(aor)
            due.extend(pingable)
        if watching and not self.watching:
            self._sleep()
        keys = {self._key(b) for b in due}
        for key in [k for k in self._failures if k not in keys]:
            del self._failures[key]  # gone, refreshed, or no longer behind a NAT
        self.pingable = len(due)
        pings = DeferredSemaphore(self.settings.in_flight)
        await gatherResults([pings.run(self._ping_one, b, report) for b in due])
        return report

    def _bindings(self, aor: str, now: float) -> Deferred[list[Binding] | None]:
        """The bindings of C{aor} (C{None} when the store fails: logged)."""
        def failed(failure: Failure) -> None:
            _log.failure("keep-alive: bindings of {aor} could not be read", failure, aor=aor)
            return None
        return self._location.get(aor, now).addErrback(failed)

    def _ping_one(self, binding: Binding, report: SweepReport) -> Deferred[None]:
        return ensureDeferred(self._ping_and_judge(binding, report))

    async def _ping_and_judge(self, binding: Binding, report: SweepReport) -> None:
        report.pinged += 1
        try:
            await self._ping(binding)
            result = "ok"
        except (PingTimeout, TransactionTimeout):
            result = "timeout"
        except CancelledError:
            return
        except Exception as error:
            _log.debug("keep-alive ping to {target} failed: {error!r}",
                       target=str(binding.received), error=error)
            result = "error"
        if self._stopped:
            return
        if self._metrics is not None:
            self._metrics.ping(result)
        key = self._key(binding)
        if result == "ok":
            report.ok += 1
            self._failures.pop(key, None)
            return
        report.failed += 1
        count = self._failures[key] = self._failures.get(key, 0) + 1
        if count >= self.settings.failures and await self._drop(binding):
            report.dropped += 1

    async def _drop(self, binding: Binding) -> bool:
        """Remove C{binding} unless it changed since it was read: an update
        of its own Call-ID at CSeq + 1 that expires it now, which the store
        refuses (L{OutOfOrder}) if the phone refreshed meanwhile."""
        key = self._key(binding)
        now = self.clock.seconds()
        try:
            current = await self._location.get(binding.aor, now)
            same = [b for b in current if b.key == binding.key
                    and (b.call_id, b.cseq, b.received) ==
                    (binding.call_id, binding.cseq, binding.received)]
            if not same or self._stopped:
                self._failures.pop(key, None)
                return False
            cseq = binding.cseq + 1
            removal = Binding(aor=binding.aor, contact=binding.contact, expires_at=now,
                              call_id=binding.call_id, cseq=cseq)
            await self._location.update(binding.aor, binding.call_id, cseq, [removal], now)
        except OutOfOrder:
            self._failures.pop(key, None)
            return False
        except Exception:
            _log.failure("keep-alive: binding {contact} of {aor} could not be removed",
                         contact=binding.contact, aor=binding.aor)
            return False
        self._failures.pop(key, None)
        if self._metrics is not None:
            self._metrics.binding_dropped()
        _log.info("keep-alive: removed {contact} of {aor} ({target} stopped answering)",
                  contact=binding.contact, aor=binding.aor, target=str(binding.received))
        return True
