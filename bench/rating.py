"""Benchmark: rate lookups per second on a generated 100 000-prefix tariff.

The tariff is built the way carrier decks look: 100 000 distinct E.164
prefixes of 3 to 9 digits, most rated all week, one in five with a peak
(Mon-Fri 08:00-18:00) and an off-peak entry, one in fifty on a version that
changes on a date, a few blocked, and C{*any} as the catch-all.  It is
loaded and validated with L{rating.tariff.load_tariff} (timed), indexed, and
then L{rating.lookup.TariffIndex.match} is run on pre-generated
(number, answer instant) pairs for C{--seconds}, pinned to one core; the
figure printed is lookups per second.  A smaller loop prices calls too
(lookup + L{rating.cost.cost}).

The second half measures reserve/extend/commit cycles per second of the
balance store against real Redis (REDIS_URL).

Usage::

    python bench/rating.py [--seconds 3] [--prefixes 100000]

Exits non-zero when a lookup answers wrongly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# This file is itself named rating.py: put the working tree first, and drop
# the script's own folder, so "import rating" finds the package.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from rating.cost import cost  # noqa: E402
from rating.lookup import DestinationRejected, TariffIndex  # noqa: E402
from rating.tariff import load_tariff  # noqa: E402

#: The floor this benchmark is meant to show (rating issue, item 1).
TARGET_LOOKUPS_PER_S = 100_000


def pin_to_one_core() -> str:
    """Pin this process to one CPU (the highest-numbered it may use, as CPU 0
    tends to carry the system's own work) where the OS allows it."""
    if hasattr(os, "sched_setaffinity"):
        try:
            cpu = max(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {cpu})
            return f"pinned to CPU {cpu}"
        except OSError:
            pass
    return "not pinned"


def generate_tariff(prefixes: int, seed: int = 5) -> tuple[dict[str, Any], list[str]]:
    """A tariff document with C{prefixes} distinct prefixes, and the prefixes."""
    rng = random.Random(seed)
    seen: set[str] = set()
    while len(seen) < prefixes:
        length = rng.choice((3, 4, 5, 5, 6, 6, 7, 7, 8, 9))
        seen.add(str(rng.randint(1, 9)) + "".join(rng.choices("0123456789", k=length - 1)))
    codes = sorted(seen)
    rates = {f"R{i}": {"connect_fee": f"0.0{i % 10}", "groups": [
        {"start_s": 0, "price": f"0.{i:04d}", "unit_s": 60, "increment_s": 60},
        {"start_s": 60, "price": f"0.{i:04d}", "unit_s": 60, "increment_s": 6}]}
        for i in range(1, 200)}
    entries: list[dict[str, Any]] = []
    for n, code in enumerate(codes):
        rate = f"R{n % 199 + 1}"
        other = f"R{(n * 7) % 199 + 1}"
        if n % 97 == 0:
            entries.append({"prefixes": [code], "blocked": True})
        elif n % 5 == 0:
            entries.append({"prefixes": [code], "timing": "peak", "rate": rate, "weight": 10})
            entries.append({"prefixes": [code], "timing": "offpeak", "rate": other,
                            "weight": 10})
        elif n % 50 == 1:
            entries.append({"prefixes": [code], "rate": rate,
                            "effective_to": "2025-07-01"})
            entries.append({"prefixes": [code], "rate": other,
                            "effective_from": "2025-07-01"})
        else:
            entries.append({"prefixes": [code], "rate": rate})
    entries.append({"prefixes": ["*any"], "rate": "R1"})
    document = {
        "timezone": "Europe/Berlin",
        "rounding": {"method": "up", "decimals": 4},
        "timings": {"peak": {"weekdays": [1, 2, 3, 4, 5], "start": "08:00:00",
                             "end": "18:00:00"},
                    "offpeak": {"start": "18:00:00", "end": "08:00:00"},
                    "weekend": {"weekdays": [6, 7]}},
        "rates": rates,
        "entries": entries,
    }
    return document, codes


def workload(codes: list[str], count: int, seed: int = 7) -> list[tuple[str, dt.datetime]]:
    """C{count} (number, answer instant) pairs: numbers under random prefixes
    (some under no prefix), instants spread over a year."""
    rng = random.Random(seed)
    base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    pairs = []
    for _ in range(count):
        number = rng.choice(codes) + "".join(rng.choices("0123456789", k=rng.randint(2, 6)))
        if rng.random() < 0.02:
            number = "0" + number
        pairs.append((number[:15], base + dt.timedelta(seconds=rng.randrange(365 * 86400))))
    return pairs


def check(index: TariffIndex, pairs: list[tuple[str, dt.datetime]]) -> None:
    """Cross-check the index: no match may use a prefix shorter than the
    longest one that is in the tariff and has an active entry, and every
    matched prefix must start the number."""
    buckets = index._buckets
    for number, instant in pairs[:5000]:
        try:
            got = index.match(number, instant).prefix
        except DestinationRejected:
            continue
        longest = next((number[:n] for n in range(len(number), 0, -1)
                        if number[:n] in buckets), "*any")
        if got != "*any" and not number.startswith(got):
            raise SystemExit(f"{number} matched {got}, which does not start it")
        if len(got) > len(longest) and got != "*any":
            raise SystemExit(f"{number} matched {got}, longer than the longest {longest}")


def lookups_per_second(index: TariffIndex, pairs: list[tuple[str, dt.datetime]],
                       seconds: float) -> tuple[int, int]:
    """Run C{match} over C{pairs} repeatedly for C{seconds}; (rate, count)."""
    match = index.match
    done = 0
    began = time.perf_counter()
    deadline = began + seconds
    while time.perf_counter() < deadline:
        for number, instant in pairs:
            try:
                match(number, instant)
            except DestinationRejected:
                pass
        done += len(pairs)
    elapsed = time.perf_counter() - began
    return int(done / elapsed), done


def costs_per_second(index: TariffIndex, pairs: list[tuple[str, dt.datetime]],
                     seconds: float) -> int:
    """Lookups followed by the full cost pipeline of a 137 s call."""
    done = 0
    began = time.perf_counter()
    deadline = began + seconds
    while time.perf_counter() < deadline:
        for number, instant in pairs[:5000]:
            try:
                cost(index.match(number, instant), 137)
            except DestinationRejected:
                pass
        done += min(len(pairs), 5000)
    return int(done / (time.perf_counter() - began))


def reservation_cycles(seconds: float = 3.0) -> None:
    """Reserve/extend/commit cycles per second against a real Redis
    (C{REDIS_URL}, default C{redis://127.0.0.1:6379/0}), through
    L{rating.stores.redis.RedisBalanceStore} on one txredisapi connection.

    C{concurrent} calls run at once, spread over C{accounts} accounts; each
    repeats hold 0.60 (with expiry) -> extend to 1.20 -> commit 0.95, waiting
    for each answer, and a cycle counts when its commit returns.  The store
    runs as configured by default: operations queued while a script run is
    in flight share the next EVALSHA (the figure printed says how many per
    run on average).  The figure is completed cycles per second of this
    process (pinned to one core; Redis runs in its own process), and per
    CPU-second it used, which stays meaningful when other work shares the
    core.  Afterwards
    every account's balance is checked against the cycles it ran, and the
    keys (a unique prefix) are deleted.  Prints a skip line with the reason
    when Redis cannot be reached.
    """
    import uuid
    from decimal import Decimal

    from twisted.internet import reactor
    from twisted.internet.defer import DeferredList, inlineCallbacks

    from b2bua.core.location_redis import redis_connection_args
    from rating.stores.redis import RedisBalanceStore

    target, concurrent, accounts = 5_000, 128, 64
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    hold, total, final = Decimal("0.60"), Decimal("1.20"), Decimal("0.95")
    funds = Decimal(1_000_000)
    outcome: list[str] = []

    @inlineCallbacks
    def run() -> Any:
        import txredisapi

        try:
            redis = yield txredisapi.Connection(reconnect=False, connectTimeout=2,
                                                replyTimeout=10, **redis_connection_args(url))
        except Exception as exc:  # any failure to connect means skip
            outcome.append(f"reservation cycles: skipped, Redis unreachable at {url} ({exc})")
            return
        prefix = f"bench:b2bua:bal:{uuid.uuid4().hex}:"
        runs = [0]

        class Counting:
            """The connection, counting script runs."""

            def execute_command(self, *args: Any) -> Any:
                runs[0] += args[0] in ("EVALSHA", "EVAL")
                return redis.execute_command(*args)

        store = RedisBalanceStore(Counting(), reactor, prefix=prefix)
        try:
            info = yield redis.execute_command("INFO", "server")
            version = next((line.split(":", 1)[1].strip() for line in str(info).splitlines()
                            if line.startswith("redis_version:")), "?")
            names = [f"bench:{n}" for n in range(accounts)]
            for name in names:
                yield store.top_up(name, funds, "bench")
            done = [0] * accounts
            deadline = reactor.seconds() + seconds

            @inlineCallbacks
            def caller(k: int) -> Any:
                account, n = names[k % accounts], 0
                while reactor.seconds() < deadline:
                    rid = f"w{k}-{n}"
                    expires = reactor.seconds() + 300
                    yield store.reserve(account, rid, hold, expires)
                    yield store.extend(account, rid, total, expires + 60)
                    yield store.commit(account, rid, final, rid)
                    done[k % accounts] += 1
                    n += 1

            began, runs[0], cpu = reactor.seconds(), 0, time.process_time()
            results = yield DeferredList([caller(k) for k in range(concurrent)],
                                         consumeErrors=True)
            elapsed, scripts = reactor.seconds() - began, runs[0]
            cpu = time.process_time() - cpu
            failures = [r for ok, r in results if not ok]
            if failures:
                outcome.append(f"reservation cycles: FAILED: {failures[0].getErrorMessage()}")
                return
            for name, count in zip(names, done, strict=True):
                got = yield store.get_balance(name)
                if got.balance != funds - final * count or got.held:
                    outcome.append(f"reservation cycles: FAILED: {name} has {got.balance}, "
                                   f"expected {funds - final * count}")
                    return
            cycles = sum(done)
            rate = int(cycles / elapsed)
            verdict = "meets" if rate >= target else "BELOW"
            outcome.append(
                f"reservation cycles (reserve + extend + commit; Redis {version}): {rate:,}/s "
                f"({cycles:,} in {elapsed:.1f} s; {verdict} the {target:,}/s target)\n"
                f"  {int(cycles / max(cpu, 1e-9)):,} per CPU-second of this process (it had "
                f"{cpu / elapsed:.0%} of its core); {concurrent} calls in flight on "
                f"{accounts} accounts, one connection; {scripts:,} script runs, "
                f"{3 * cycles / max(1, scripts):.1f} operations per run; balances checked")
        finally:
            cursor = 0
            while True:
                cursor, keys = yield redis.scan(cursor, prefix + "*", 1000)
                if keys:
                    yield redis.delete(keys)
                if int(cursor) == 0:
                    break
            yield redis.disconnect()

    def stop(_: Any) -> None:
        reactor.stop()

    def failed(failure: Any) -> None:
        outcome.append(f"reservation cycles: FAILED: {failure.getErrorMessage()}")

    reactor.callWhenRunning(lambda: run().addErrback(failed).addBoth(stop))
    reactor.run()
    print("\n".join(outcome) or "reservation cycles: no result")


def main(argv: list[str]) -> int:
    """Build the tariff, measure, print the figures."""
    parser = argparse.ArgumentParser(description="Rate lookups per second.")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--prefixes", type=int, default=100_000)
    options = parser.parse_args(argv)
    pinned = pin_to_one_core()
    document, codes = generate_tariff(options.prefixes)
    began = time.perf_counter()
    tariff = load_tariff(document)
    loaded = time.perf_counter() - began
    began = time.perf_counter()
    index = TariffIndex(tariff)
    indexed = time.perf_counter() - began
    pairs = workload(codes, 50_000)
    check(index, pairs)
    rate, done = lookups_per_second(index, pairs, options.seconds)
    priced = costs_per_second(index, pairs, max(1.0, options.seconds / 3))
    print(f"tariff: {len(index):,} prefixes, {len(tariff.entries):,} entries; "
          f"load+validate {loaded:.2f} s, index {indexed:.2f} s ({pinned}, "
          f"Python {sys.version.split()[0]})")
    verdict = "meets" if rate >= TARGET_LOOKUPS_PER_S else "BELOW"
    print(f"rate lookups: {rate:,}/s ({done:,} in {options.seconds:g} s; {verdict} the "
          f"{TARGET_LOOKUPS_PER_S:,}/s target)")
    print(f"priced calls (lookup + cost): {priced:,}/s")
    reservation_cycles(max(1.0, options.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
