"""A Redis database of its own for an integration test that runs the switch.

The switch under test keeps its balances (and its trunk limits) in one
database of the server named by C{REDIS_URL}.  L{claim_database} makes sure
that database is the test's alone: a lock key keeps two runs (from two
working trees) apart, the database may hold nothing but the switch's keys
and the lock, and the switch's keys are deleted before and after.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from b2bua.core.location_redis import redis_connection_args

__all__ = ["LOCK_WAIT", "claim_database", "scan_keys"]

#: Seconds to wait for another run's lock before failing.
LOCK_WAIT = 30.0


async def scan_keys(redis: Any, pattern: str) -> list[str]:
    """Every key of C{redis} matching C{pattern} (by SCAN)."""
    found: list[str] = []
    cursor = 0
    while True:
        cursor, keys = await redis.scan(cursor, pattern, 1000)
        found += [k.decode() if isinstance(k, bytes) else k for k in keys]
        if int(cursor) == 0:
            return found


async def _delete(redis: Any, prefix: str) -> None:
    keys = await scan_keys(redis, prefix + "*")
    for i in range(0, len(keys), 500):
        await redis.delete(keys[i:i + 500])


async def claim_database(case: Any, url: str, lock_key: str, prefix: str) -> Any:
    """Connect to the database of C{url} (a C{redis://} URL with its number),
    take C{lock_key}, check that nothing but keys under C{prefix} is there,
    and empty those now and after the test; the connection (closed after
    the test).  Fails C{case} when the lock stays taken or the database
    holds other keys."""
    import txredisapi

    redis = await txredisapi.Connection(reconnect=False, connectTimeout=5, replyTimeout=10,
                                        **redis_connection_args(url))
    case.addCleanup(redis.disconnect)
    token = f"run-{uuid.uuid4().hex}"  # never a number for txredisapi
    waited = 0.0
    while not await redis.set(lock_key, token, expire=case.timeout + 30,
                              only_if_not_exists=True):
        if waited >= LOCK_WAIT:
            case.fail(f"Redis database {url} is locked by another run of this test "
                      f"({lock_key}); wait for it or delete the key")
        await deferLater(reactor, 0.5, lambda: None)
        waited += 0.5

    async def unlock() -> None:
        if await redis.get(lock_key) == token:
            await redis.delete(lock_key)

    case.addCleanup(unlock)
    foreign = sorted(k for k in await scan_keys(redis, "*")
                     if not k.startswith(prefix) and k != lock_key)
    if foreign:
        case.fail(f"Redis database {url} holds keys that are not this test's, such as "
                  f"{foreign[:3]}: it is not free for the test")
    await _delete(redis, prefix)
    case.addCleanup(_delete, redis, prefix)
    return redis
