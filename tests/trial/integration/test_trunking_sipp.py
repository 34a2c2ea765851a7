"""SIP trunking end to end: a PBX, vendors and an extension as real sipp
peers around the switch under C{twistd}.

Each peer has a loopback address of its own (the switch tells trunks and
vendor connections apart by source address; see L{trunk_switch}), each
test provisions a fresh database and starts its own switch, and every
vendor connection has C{setup_timeout} L{SETUP_TIMEOUT} and
C{answer_timeout} 4 s, so the tests are quick:

  1. failover: vendor a (the cheapest) answers 503 with Retry-After,
     vendor b takes the INVITE and never rings, vendor c (the dearest)
     answers.  The PBX's call is answered by c within the set-up timeout
     and a margin (the 503 failed over at once, the silent vendor was left
     after its set-up timeout, not after the 32 s of the INVITE
     transaction); the CDR lists the three attempts in hunt order with
     their vendors, codes and buy costs (only the answered one costs
     something: its deck, re-rated); the per-connection metrics count the
     failovers and the answer, and show vendor a parked;
  2. limits: a trunk allowed two outbound calls gets three at once: two
     are answered, one is refused with 503 and Retry-After; once they have
     ended the refusal is counted, no call is left counted on the
     connection, and a new call goes through.  L{TrunkLimitTests} keeps
     the limits in the switch's memory, L{RedisTrunkLimitTests} in Redis
     (database L{REDIS_DB} of C{REDIS_URL}; skipped without it, failing
     under C{CI=true}), where the trunk's live-call set is watched during
     the burst;
  3. DID: an extension of the demo tenant registers, a vendor calls the
     tenant's DID from its connection's address, the extension answers.

L{AttemptAccountingTests} replays the failover call and checks what each
attempt leaves behind: the current-calls gauge, the CDR legs' end times,
the post-dial delay.

Everything talks to 127.0.0.0/8 only and is bounded by sipp's timeouts
and the switch's stop.  Set C{B2BUA_REPORT_TIMINGS=1} to print the
measured delays.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from rating.cost import cost
from rating.lookup import TariffIndex
from rating.tariff import load_tariff
from tests.trial.integration.sipp import SippResult, run_sipp, run_sipp_uas, scenario, wait_for_port
from tests.trial.integration.trunk_switch import (
    DID,
    DID_EXTENSION,
    EXTENSION,
    PBX,
    Metrics,
    Provisioned,
    TrunkSwitchCase,
    Vendor,
    free_port_on,
)
from tests.trial.redis_support import redis_skip

#: The connections' C{setup_timeout} (seconds to the first ringing).
SETUP_TIMEOUT = 2.0
#: What the answer may take beyond the set-up timeout on a loopback
#: (twistd and sipp share two cores with other work).
MARGIN = 1.5
#: How long the PBX talks once the failover call is answered (ms).
TALK_MS = 2500
#: What the PBX dials: a UK national number (its dial plan is GB).
DIALLED = "02079460000"
NUMBER = "442079460000"
#: sipp's global timeout for every peer (they end long before).
SIPP_TIMEOUT = 40.0
REPORT = os.environ.get("B2BUA_REPORT_TIMINGS") == "1"
#: The Redis database of L{RedisTrunkLimitTests} (the prepaid tests use 14
#: and 15), and the lock that keeps two runs apart.
REDIS_DB = 13
LOCK_KEY = "b2bua-test:trunking-sipp:lock"
#: The call limit store's key prefix (its default).
LIMIT_KEYS = "b2bua:lim:"


def seconds(stat: str) -> float:
    """A sipp statistics time (C{HH:MM:SS:micro} or C{HH:MM:SS:milli}) in seconds."""
    hours, minutes, secs, fraction = stat.strip().split(":")
    return int(hours) * 3600 + int(minutes) * 60 + int(secs) + int(fraction) / 10 ** len(fraction)


def counter(result: SippResult, name: str) -> int:
    """The cumulative value of a scenario's generic counter C{name}."""
    return int(result.stats.get(f"{name}(C)") or 0)


class TrunkingCase(TrunkSwitchCase):
    """The peers' parts, for the tests below."""

    def vendor(self, vendor: Vendor, name: str, calls: int = 1) -> Deferred[SippResult]:
        """sipp as C{vendor}, playing scenario C{name} on its connection's
        address; a test that fails early still waits for it (bounded)."""
        peer = run_sipp_uas(reactor, scenario(name), vendor.port, "u1",
                            ["-mp", str(free_port_on(vendor.host))], timeout=SIPP_TIMEOUT,
                            calls=calls, recv_timeout=15, sipp=self.sipp, local_ip=vendor.host)
        self.addCleanup(lambda: peer.addBoth(lambda _: None))
        return peer

    async def listening(self, vendor: Vendor, peer: Deferred[SippResult]) -> None:
        """Wait until C{peer} listens on C{vendor}'s address."""
        await wait_for_port(reactor, vendor.port, "udp", ended=peer, host=vendor.host)

    def pbx(self, calls: int = 1, talk_ms: int = 1000) -> Deferred[SippResult]:
        """The PBX dials L{DIALLED} C{calls} times, all at once, each call
        lasting C{talk_ms} once answered."""
        return run_sipp(reactor, scenario("trunk_pbx_call.xml"), self.target, "u1",
                        ["-s", DIALLED, "-d", str(talk_ms), "-l", str(calls), "-r", "10",
                         "-mp", str(free_port_on(PBX))],
                        timeout=SIPP_TIMEOUT, calls=calls, recv_timeout=15, sipp=self.sipp,
                        local_ip=PBX)

    def context(self, **results: SippResult) -> str:
        """The peers' and the switch's accounts, for a failure message."""
        parts = [f"--- {name} ---\n{result.describe()}" for name, result in results.items()]
        return "\n" + "\n".join(parts) + f"\n--- switch ---\n{self.output[-3000:]}"


@dataclass
class Hunt:
    """What one run of the failover call left: the layout, the peers'
    results, the delays, the metrics during the call and after it, the CDRs."""

    layout: Provisioned
    pbx: SippResult
    vendors: dict[str, SippResult]
    elapsed: float
    during: Metrics
    after: Metrics
    cdrs: list[dict[str, Any]]
    context: str

    def connection(self, key: str) -> str:
        """Vendor C{key}'s connection id, as a metric label."""
        return str(self.layout.vendors[key].connection_id)


class FailoverCase(TrunkingCase):
    """The PBX's call hunted through vendors a (503), b (silent), c (answers)."""

    async def hunt(self) -> Hunt:
        """Provision, start the switch and the vendors, place the PBX's call
        (it talks L{TALK_MS} once answered); scrape the metrics half a
        second after vendor c got its INVITE (the call is up) and once the
        call has ended; stop the switch and read the CDRs."""
        layout = await self.provision()
        await self.start_switch()
        scenarios = {"a": "trunk_vendor_503.xml", "b": "trunk_vendor_silent.xml",
                     "c": "uas_answer.xml"}
        peers = {key: self.vendor(layout.vendors[key], name) for key, name in scenarios.items()}
        for key, peer in peers.items():
            await self.listening(layout.vendors[key], peer)
        ids = {key: str(v.connection_id) for key, v in layout.vendors.items()}
        started = reactor.seconds()
        running = self.pbx(talk_ms=TALK_MS)
        await self.metrics(until=lambda m: self.sample(
            m, "b2bua_trunk_attempts_total", connection=ids["c"], direction="out") == 1,
            timeout=SETUP_TIMEOUT + MARGIN)
        await deferLater(reactor, 0.5, lambda: None)
        during = await self.metrics()
        pbx = await running
        elapsed = reactor.seconds() - started
        ended = {key: await peer for key, peer in peers.items()}
        after = await self.metrics(until=lambda m: not any(
            self.sample(m, "b2bua_trunk_current_calls", connection=i, direction="out")
            for i in ids.values()))
        context = self.context(pbx=pbx, **ended)
        await self.stop_switch()
        cdrs = await self.read_cdrs()
        self.assertTrue(pbx.ok, context)
        self.assertEqual((counter(pbx, "answered"), counter(pbx, "refused")), (1, 0), context)
        for key, result in ended.items():
            self.assertTrue(result.ok, f"vendor {key} failed{context}")
        self.assertEqual(len(cdrs), 1, cdrs)
        return Hunt(layout, pbx, ended, elapsed, during, after, cdrs, context)


class FailoverTests(FailoverCase):
    """A PBX's call hunted through three vendors."""

    async def test_failover_lands_on_third_vendor(self) -> None:
        """503 with Retry-After fails over at once (and parks the vendor), a
        vendor that never rings is left after its set-up timeout, the third
        answers; the CDR and the metrics tell the hunt."""
        run = await self.hunt()
        a, b, c = (run.layout.vendors[k] for k in "abc")
        context = run.context

        # the INVITE was answered after b's set-up timeout, not much later
        answer = seconds(run.pbx.stats["ResponseTime1(C)"])
        silence = seconds(run.vendors["b"].stats["ResponseTime1(C)"])  # INVITE -> CANCEL
        if REPORT:
            print(f"\nfailover: INVITE->200 at the PBX {answer:.3f} s "
                  f"({run.pbx.stats['ResponseTime1(C)']}), INVITE->CANCEL at the silent "
                  f"vendor {silence:.3f} s, PBX run {run.elapsed:.3f} s")
        self.assertGreaterEqual(answer, SETUP_TIMEOUT - 0.1, context)
        self.assertLess(answer, SETUP_TIMEOUT + MARGIN, context)
        self.assertGreaterEqual(silence, SETUP_TIMEOUT - 0.1, context)
        self.assertLess(silence, SETUP_TIMEOUT + MARGIN, context)

        # one CDR, its legs in hunt order
        (cdr,) = run.cdrs
        self.assertEqual(cdr["disposition"], "answered", cdr)
        legs = cdr["legs"]
        self.assertEqual(
            [(leg["attempt"], leg["destination"], leg["vendor"], leg["connection_id"],
              leg["code"]) for leg in legs],
            [(1, f"connection:{a.connection_id}", a.name, a.connection_id, 503),
             (2, f"connection:{b.connection_id}", b.name, b.connection_id, 487),
             (3, f"connection:{c.connection_id}", c.name, c.connection_id, 200)], cdr)
        self.assertEqual([leg["uri"].split("@")[0] for leg in legs], [f"sip:+{NUMBER}"] * 3)
        self.assertEqual([Decimal(leg["cost"]) for leg in legs[:2]], [Decimal(0)] * 2, cdr)
        answered = legs[2]
        expected = cost(TariffIndex(load_tariff(c.tariff)).match(NUMBER, _time(
            answered["answered_at"])), answered["billsec"]).cost
        self.assertGreater(answered["billsec"], 0, cdr)
        self.assertGreater(expected, 0)
        self.assertEqual((Decimal(answered["cost"]), answered["currency"]),
                         (expected, "USD"), cdr)

        # the per-connection figures, during the call and after it
        ids = {key: run.connection(key) for key in "abc"}

        def figures(metrics: Metrics, name: str, **labels: str) -> dict[str, float]:
            return {k: self.sample(metrics, name, connection=i, **labels)
                    for k, i in ids.items()}

        self.assertEqual(figures(run.after, "b2bua_trunk_failovers_total"),
                         {"a": 1.0, "b": 1.0, "c": 0.0})
        self.assertEqual(figures(run.after, "b2bua_trunk_answered_total", direction="out"),
                         {"a": 0.0, "b": 0.0, "c": 1.0})
        self.assertEqual(figures(run.after, "b2bua_trunk_attempts_total", direction="out"),
                         {"a": 1.0, "b": 1.0, "c": 1.0})
        self.assertEqual(figures(run.after, "b2bua_trunk_current_calls", direction="out"),
                         {"a": 0.0, "b": 0.0, "c": 0.0})
        self.assertEqual(self.sample(run.during, "b2bua_trunk_current_calls",
                                     connection=ids["c"], direction="out"), 1.0)
        self.assertEqual(self.sample(run.during, "b2bua_trunk_limit_held_calls"), 1.0)
        self.assertEqual(self.sample(run.after, "b2bua_trunk_limit_held_calls"), 0.0)
        # the 503 with Retry-After parked vendor a (no other was probed)
        parked = ("b2bua_trunk_connection_up", frozenset({("connection", ids["a"])}))
        self.assertEqual(run.during.get(parked), 0.0)
        self.assertEqual(
            sorted(labels for name, labels in run.during if name == parked[0]), [parked[1]])


class AttemptAccountingTests(FailoverCase):
    """Each attempt of the failover run is accounted for on its own."""

    async def test_failed_attempts_are_not_current(self) -> None:
        """Once the hunt has moved on from an attempt (the 503, the silent
        vendor's set-up timeout), that attempt is no longer "in progress or
        answered": C{b2bua_trunk_current_calls} of its connection is 0 while
        the call talks on vendor c."""
        run = await self.hunt()
        self.assertEqual({k: self.sample(run.during, "b2bua_trunk_current_calls",
                                         connection=run.connection(k), direction="out")
                          for k in "abc"}, {"a": 0.0, "b": 0.0, "c": 1.0})

    async def test_cdr_legs_end_with_their_attempts(self) -> None:
        """Each CDR leg's C{ended_at} is when that attempt ended: the 503
        attempt right after it started, the silent vendor's around its
        set-up timeout (not the call's end)."""
        run = await self.hunt()
        (cdr,) = run.cdrs
        first, second, _ = cdr["legs"]
        self.assertLess(_time(first["ended_at"]) - _time(first["started_at"]),
                        dt.timedelta(seconds=MARGIN), first)
        self.assertLess(_time(second["ended_at"]) - _time(second["started_at"]),
                        dt.timedelta(seconds=SETUP_TIMEOUT + MARGIN), second)

    async def test_post_dial_delay_is_measured(self) -> None:
        """Vendor c rang (180) before it answered: its
        C{b2bua_trunk_pdd_seconds} (the mean delay to the first ring) is
        above 0, and so is what the C{quality} strategy ranks by."""
        run = await self.hunt()
        self.assertGreater(self.sample(run.after, "b2bua_trunk_pdd_seconds",
                                       connection=run.connection("c")), 0.0)


class TrunkLimitTests(TrunkingCase):
    """A trunk over its outbound limit (the limits in the switch's memory)."""

    async def test_trunk_over_its_outbound_limit(self) -> None:
        """Three calls at once on a trunk allowed two out: two answered, one
        refused with 503 and Retry-After; afterwards nothing is left counted
        and a new call goes through."""
        layout = await self.provision(vendors=("c",), trunk={"max_calls_out": 2})
        c = layout.vendors["c"]
        await self.start_switch()
        vendor = self.vendor(c, "uas_answer.xml", calls=3)
        await self.listening(c, vendor)
        self.trunk_key = f"{LIMIT_KEYS}{{trunk:{layout.trunk_id}}}:out"
        connection = str(c.connection_id)

        def idle(metrics: Metrics) -> bool:
            return not self.sample(metrics, "b2bua_trunk_current_calls",
                                   connection=connection, direction="out") \
                and not self.sample(metrics, "b2bua_trunk_limit_held_calls")

        running = self.pbx(calls=3, talk_ms=3000)
        peak = await self.watch_store(running)
        burst = await running
        during = await self.metrics(until=idle)
        later = await self.pbx(calls=1)
        ended = await vendor
        context = self.context(burst=burst, later=later, vendor=ended)
        metrics = await self.metrics(until=idle)
        await self.check_store()
        await self.stop_switch()
        cdrs = await self.read_cdrs()

        self.assertTrue(burst.ok, context)
        self.assertEqual((counter(burst, "answered"), counter(burst, "refused")), (2, 1), context)
        self.assertTrue(later.ok, context)
        self.assertEqual(counter(later, "answered"), 1, context)
        self.assertTrue(ended.ok, context)
        self.assertEqual(ended.successful, 3, context)
        if peak is not None:
            self.assertEqual(peak, 2, "the most calls the store counted on the trunk at once")

        trunk = str(layout.trunk_id)
        for figures in (during, metrics):
            self.assertEqual(self.sample(figures, "b2bua_trunk_limit_rejections_total",
                                         kind="trunk", id=trunk, limit="out"), 1.0)
        self.assertEqual(self.sample(during, "b2bua_trunk_current_calls",
                                     connection=connection, direction="out"), 0.0)
        self.assertEqual(self.sample(metrics, "b2bua_trunk_current_calls",
                                     connection=connection, direction="out"), 0.0)
        self.assertEqual(self.sample(metrics, "b2bua_trunk_answered_total",
                                     connection=connection, direction="out"), 3.0)
        for figures in (during, metrics):
            self.assertEqual(self.sample(figures, "b2bua_trunk_limit_held_calls"), 0.0)

        self.assertEqual(len(cdrs), 4, cdrs)
        self.assertEqual(sorted(cdr["breakdown"]["code"] for cdr in cdrs),
                         [200, 200, 200, 503], cdrs)
        (refused,) = [cdr for cdr in cdrs if cdr["breakdown"]["code"] == 503]
        self.assertEqual((refused["disposition"], refused["legs"]), ("unavailable", []), refused)
        self.assertEqual(refused["breakdown"]["disconnect"], "rejected:trunk_limits", refused)

    async def watch_store(self, running: Deferred[SippResult]) -> int | None:
        """The most calls the limit store counted on the trunk while
        C{running} ran (in memory: not visible from outside, C{None})."""
        return None

    async def check_store(self) -> None:
        """The limit store holds no call (in memory: nothing to look at
        from outside but the metrics above)."""


class RedisTrunkLimitTests(TrunkLimitTests):
    """The same with the limits in Redis (database L{REDIS_DB}), as a
    cluster keeps them; afterwards no call is left in any of their sets."""

    skip = redis_skip("SIP trunking limits test on Redis")

    async def start_switch(self) -> None:
        """Put the switch's balances and call limits in Redis first."""
        await self.open_redis(REDIS_DB, LOCK_KEY)
        await super().start_switch()

    async def watch_store(self, running: Deferred[SippResult]) -> int | None:
        """Sample the trunk's set of live outbound calls every 20 ms."""
        peak = 0
        while not running.called:
            peak = max(peak, await self.redis.zcard(self.trunk_key))
            await deferLater(reactor, 0.02, lambda: None)
        return peak

    async def check_store(self) -> None:
        """No call id is left in the live-call sets (C{...:in}, C{...:out};
        Redis drops a set once empty) of any entity."""
        keys = await self.redis_keys(LIMIT_KEYS + "*")
        live = [k for k in keys if k.endswith((":in", ":out"))]
        counts = {key: await self.redis.zcard(key) for key in live}
        self.assertEqual({k: n for k, n in counts.items() if n}, {}, counts)


class DidTests(TrunkingCase):
    """A vendor's call to a DID."""

    async def test_did_rings_registered_extension(self) -> None:
        """A vendor's call to a DID, from its connection's address, rings
        the extension the DID names where it registered; not charged."""
        layout = await self.provision(vendors=("c",), did=True)
        c = layout.vendors["c"]
        await self.start_switch()
        port = free_port_on(EXTENSION)
        registered = await run_sipp(
            reactor, scenario("register_contact.xml"), self.target, "u1",
            ["-s", DID_EXTENSION, "-au", DID_EXTENSION, "-ap", "1234"], timeout=SIPP_TIMEOUT,
            local_port=port, sipp=self.sipp, local_ip=EXTENSION)
        self.assertTrue(registered.ok, self.context(register=registered))
        callee = run_sipp_uas(reactor, scenario("uas_answer.xml"), port, "u1",
                              ["-mp", str(free_port_on(EXTENSION))], timeout=SIPP_TIMEOUT,
                              recv_timeout=15, sipp=self.sipp, local_ip=EXTENSION)
        self.addCleanup(lambda: callee.addBoth(lambda _: None))
        await wait_for_port(reactor, port, "udp", ended=callee, host=EXTENSION)
        caller = await run_sipp(
            reactor, scenario("uac_call.xml"), self.target, "u1",
            ["-s", DID, "-set", "caller", "+15551234567", "-d", "1000",
             "-mp", str(free_port_on(c.host))],
            timeout=SIPP_TIMEOUT, local_port=free_port_on(c.host), recv_timeout=15,
            sipp=self.sipp, local_ip=c.host)
        answered = await callee
        context = self.context(vendor=caller, extension=answered)
        metrics = await self.metrics()
        await self.stop_switch()
        cdrs = await self.read_cdrs()

        self.assertTrue(caller.ok, context)
        self.assertTrue(answered.ok, context)
        connection = str(c.connection_id)
        self.assertEqual(
            {name: self.sample(metrics, name, connection=connection, direction="in")
             for name in ("b2bua_trunk_attempts_total", "b2bua_trunk_answered_total",
                          "b2bua_trunk_current_calls")},
            {"b2bua_trunk_attempts_total": 1.0, "b2bua_trunk_answered_total": 1.0,
             "b2bua_trunk_current_calls": 0.0})
        self.assertEqual(len(cdrs), 1, cdrs)
        (cdr,) = cdrs
        self.assertEqual((cdr["disposition"], Decimal(cdr["cost"])),
                         ("answered", Decimal(0)), cdr)
        self.assertEqual([(leg["destination"], leg["code"]) for leg in cdr["legs"]],
                         [(f"did:{DID.lstrip('+')}", 200)], cdr)
        self.assertEqual(cdr["legs"][0]["uri"].split(";")[0],
                         f"sip:{DID_EXTENSION}@{EXTENSION}:{port}", cdr)


def _time(text: str) -> dt.datetime:
    """A CDR leg's ISO time."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
