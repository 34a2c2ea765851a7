"""L{ICallLimitStore} in Redis, shared by every node of a cluster: one Lua
script per operation, each run atomically by Redis (C{docs/limits.md}).

Key layout (C{P} is the configurable prefix, C{b2bua:lim:} by default; C{E}
the entity name C{"<kind>:<id>"}, inside braces so that an entity's keys
share a Redis Cluster hash slot)::

    P {E}:in     zset   member = call id, score = lease expiry (ms)
    P {E}:out    zset   the same, outbound calls
    P {E}:cps    zset   member = call id + LF + attempt instant, score =
                        the attempt instant (ms): the last second's attempts
    P entities   set    every entity with keys (for L{snapshot})

A count is the C{ZCARD} of a live set once the members whose lease expired
(score <= now) are removed, which every script that counts does first, in
the same run.  Each key carries a TTL a little longer than the longest
lease (or the window) written into it, so an entity that nobody renews
vanishes by itself.  Nothing is ever incremented or decremented.

Times are integer milliseconds from the caller's clock (nodes keep their
clocks in sync with NTP, as for balances and registrations); Lua numbers
are doubles, exact for them.  Scripts declare the keys they touch, except
L{SNAPSHOT_SCRIPT}, which walks the entity index.  One admission spans the
keys of several entities, so this store targets one primary (replicas and
Sentinel), like the balance store; a Redis Cluster version would put a
call's entities under one hash tag.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from plugins.trunking.limits import (
    GRANTED,
    INBOUND,
    OUTBOUND,
    WINDOW_MS,
    Admission,
    ICallLimitStore,
    LimitKey,
    Refusal,
    Usage,
    check_call_id,
    check_keys,
    check_lease,
    refusals_as_failures,
)

__all__ = [
    "ACQUIRE_SCRIPT",
    "RELEASE_SCRIPT",
    "RENEW_SCRIPT",
    "SNAPSHOT_SCRIPT",
    "USAGE_SCRIPT",
    "RedisCallLimitStore",
]

#: Milliseconds a key outlives the longest lease (or window) written to it.
GRACE_MS = 1000
#: Calls renewed by one script run (a renewal of more is split).
RENEW_BATCH = 500

_COMMON = r"""
local function fmt(n) return string.format("%d", n) end
-- make sure key k lives at least ms more milliseconds
local function keep(k, ms)
  if redis.call("PTTL", k) < ms then redis.call("PEXPIRE", k, ms) end
end
"""

#: L{ICallLimitStore.acquire}.
#:
#: KEYS: per limit key i, C{3i-2} its entity's inbound live set, C{3i-1}
#: the outbound one, C{3i} its attempt log; the last KEYS is the entity
#: index.  ARGV: 1 now (ms), 2 lease (ms), 3 window (ms), 4 grace (ms), 5
#: the call id, then per key six values: entity name, direction, limits
#: total, in, out, cps.  Returns JSON: C{{"s":"granted"}} or C{{"s":
#: "refused", "i": key position, "limit", "current", "max", "retry_ms"}}.
ACQUIRE_SCRIPT = _COMMON + r"""
local now, lease, window, grace = tonumber(ARGV[1]), tonumber(ARGV[2]),
  tonumber(ARGV[3]), tonumber(ARGV[4])
local call = ARGV[5]
local joining = {}
for i = 1, (#KEYS - 1) / 3 do
  local a = 5 + (i - 1) * 6
  local k = {live = {["in"] = KEYS[3 * i - 2], out = KEYS[3 * i - 1]}, log = KEYS[3 * i],
             name = ARGV[a + 1], dir = ARGV[a + 2], total = tonumber(ARGV[a + 3]),
             max = {["in"] = tonumber(ARGV[a + 4]), out = tonumber(ARGV[a + 5])},
             cps = tonumber(ARGV[a + 6])}
  redis.call("ZREMRANGEBYSCORE", k.live["in"], "-inf", fmt(now))
  redis.call("ZREMRANGEBYSCORE", k.live.out, "-inf", fmt(now))
  redis.call("ZREMRANGEBYSCORE", k.log, "-inf", fmt(now - window))
  k.held = redis.call("ZSCORE", k.live[k.dir], call) ~= false
  if not k.held then
    local count = {["in"] = redis.call("ZCARD", k.live["in"]),
                   out = redis.call("ZCARD", k.live.out)}
    local function refuse(limit, current, max, retry)
      return cjson.encode({s = "refused", i = i, limit = limit, current = current, max = max,
                           retry_ms = retry})
    end
    local total = count["in"] + count.out
    if k.total > 0 and total >= k.total then return refuse("total", total, k.total, -1) end
    local max = k.max[k.dir]
    if max > 0 and count[k.dir] >= max then return refuse(k.dir, count[k.dir], max, -1) end
    if k.cps > 0 then
      local attempts = redis.call("ZCARD", k.log)
      if attempts >= k.cps then
        local at = redis.call("ZRANGE", k.log, attempts - k.cps, attempts - k.cps, "WITHSCORES")
        return refuse("cps", attempts, k.cps, tonumber(at[2]) + window - now)
      end
    end
  end
  joining[#joining + 1] = k
end
local expiry = fmt(now + lease)
for _, k in ipairs(joining) do
  redis.call("ZADD", k.live[k.dir], expiry, call)
  keep(k.live[k.dir], lease + grace)
  if not k.held then
    redis.call("ZADD", k.log, fmt(now), call .. "\n" .. fmt(now))
    keep(k.log, window + grace)
  end
  redis.call("SADD", KEYS[#KEYS], k.name)
end
return cjson.encode({s = "granted"})
"""

#: L{ICallLimitStore.release}.  KEYS: the live sets (both directions of
#: every key); ARGV[1] the call id.  Returns the memberships removed.
RELEASE_SCRIPT = r"""
local removed = 0
for _, k in ipairs(KEYS) do removed = removed + redis.call("ZREM", k, ARGV[1]) end
return removed
"""

#: L{ICallLimitStore.renew}.  KEYS: the live sets renewed, then the entity
#: index.  ARGV: 1 now (ms), 2 lease (ms), 3 grace (ms), then per live set
#: its entity name (C{#KEYS - 1} values), then pairs (position of a live
#: set in KEYS, call id).  Returns the memberships added back.
RENEW_SCRIPT = _COMMON + r"""
local now, lease, grace = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local sets = #KEYS - 1
local expiry = fmt(now + lease)
for i = 1, sets do
  redis.call("ZREMRANGEBYSCORE", KEYS[i], "-inf", fmt(now))
  redis.call("SADD", KEYS[#KEYS], ARGV[3 + i])
end
local restored = 0
for j = 4 + sets, #ARGV, 2 do
  restored = restored + redis.call("ZADD", KEYS[tonumber(ARGV[j])], expiry, ARGV[j + 1])
end
for i = 1, sets do keep(KEYS[i], lease + grace) end
return restored
"""

#: L{ICallLimitStore.usage}.  KEYS: the entity's inbound and outbound live
#: sets and its attempt log; ARGV: 1 now (ms), 2 window (ms).  Read only;
#: returns JSON C{[in, out, attempts]}.
USAGE_SCRIPT = _COMMON + r"""
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
return cjson.encode({redis.call("ZCOUNT", KEYS[1], "(" .. fmt(now), "+inf"),
                     redis.call("ZCOUNT", KEYS[2], "(" .. fmt(now), "+inf"),
                     redis.call("ZCOUNT", KEYS[3], "(" .. fmt(now - window), "+inf")})
"""

#: L{ICallLimitStore.snapshot}.  KEYS[1] the entity index; ARGV: 1 the key
#: prefix, 2 now (ms), 3 window (ms).  Drops from the index the entities
#: with nothing left to count; returns JSON C{[[name, in, out, attempts],
#: ...]} for the others.
SNAPSHOT_SCRIPT = _COMMON + r"""
local P, now, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for _, name in ipairs(redis.call("SMEMBERS", KEYS[1])) do
  local base = P .. "{" .. name .. "}:"
  local n_in = redis.call("ZCOUNT", base .. "in", "(" .. fmt(now), "+inf")
  local n_out = redis.call("ZCOUNT", base .. "out", "(" .. fmt(now), "+inf")
  local n_cps = redis.call("ZCOUNT", base .. "cps", "(" .. fmt(now - window), "+inf")
  if n_in + n_out + n_cps > 0 then
    out[#out + 1] = {name, n_in, n_out, n_cps}
  elseif redis.call("EXISTS", base .. "in", base .. "out", base .. "cps") == 0 then
    redis.call("SREM", KEYS[1], name)
  end
end
if #out == 0 then return "[]" end
return cjson.encode(out)
"""

_SOURCES = {"acquire": ACQUIRE_SCRIPT, "release": RELEASE_SCRIPT, "renew": RENEW_SCRIPT,
            "usage": USAGE_SCRIPT, "snapshot": SNAPSHOT_SCRIPT}
_SHAS = {name: hashlib.sha1(source.encode()).hexdigest() for name, source in _SOURCES.items()}


@implementer(ICallLimitStore)
class RedisCallLimitStore:
    """L{ICallLimitStore} on a txredisapi connection (or pool).

    @param redis: a connected txredisapi handler (C{Connection},
        C{ConnectionPool} or their lazy forms); its C{replyTimeout} bounds
        every call.  A failed call (timeout, lost connection) may or may not
        have been applied: an admission that failed is released by its
        caller (idempotent), a release that failed is undone by the lease.
    @param clock: the store's clock (leases and the CPS window); nodes
        sharing a Redis keep their clocks in sync (NTP).
    @param lease: seconds a membership lives unless renewed.
    @param prefix: put before every key (tests use a unique one).
    """

    def __init__(self, redis: Any, clock: IReactorTime, lease: float = 60.0,
                 prefix: str = "b2bua:lim:") -> None:
        self._redis = redis
        self._clock = clock
        self._lease_ms = check_lease(lease)
        self.lease = self._lease_ms / 1000
        self.prefix = prefix
        self._index = prefix + "entities"

    def entity_keys(self, name: str) -> tuple[str, str, str]:
        """The inbound and outbound live sets and the attempt log of the
        entity C{name} (C{"<kind>:<id>"})."""
        base = f"{self.prefix}{{{name}}}:"
        return base + INBOUND, base + OUTBOUND, base + "cps"

    @property
    def index_key(self) -> str:
        """The set of entity names (for L{snapshot})."""
        return self._index

    def _now_ms(self) -> int:
        return round(self._clock.seconds() * 1000)

    def _evalsha(self, name: str, keys: list[str], args: list[str]) -> Deferred[Any]:
        """Run a script by its SHA1, loading it with EVAL when Redis does not
        know it (first use, restart, SCRIPT FLUSH)."""
        d = maybeDeferred(self._redis.execute_command, "EVALSHA", _SHAS[name], len(keys),
                          *keys, *args)

        def unknown(failure: Failure) -> Any:
            if "NOSCRIPT" not in str(failure.value):
                return failure
            return self._redis.execute_command("EVAL", _SOURCES[name], len(keys), *keys, *args)

        return d.addErrback(unknown)

    @refusals_as_failures
    def acquire(self, call_id: str, keys: Sequence[LimitKey]) -> Deferred[Admission]:
        """See L{ICallLimitStore.acquire}: one run of L{ACQUIRE_SCRIPT}."""
        check_call_id(call_id)
        checked = check_keys(keys)
        if not checked:
            return succeed(GRANTED)
        redis_keys: list[str] = []
        args = [str(self._now_ms()), str(self._lease_ms), str(WINDOW_MS), str(GRACE_MS),
                call_id]
        for key in checked:
            redis_keys += self.entity_keys(key.entity)
            limits = key.limits
            args += [key.entity, key.direction, str(limits.total), str(limits.inbound),
                     str(limits.outbound), str(limits.cps)]
        redis_keys.append(self._index)

        def answer(reply: Any) -> Admission:
            result = json.loads(reply)
            if result["s"] == "granted":
                return GRANTED
            retry_ms = int(result["retry_ms"])
            return Admission(Refusal(checked[int(result["i"]) - 1], result["limit"],
                                     int(result["current"]), int(result["max"]),
                                     retry_ms / 1000 if retry_ms >= 0 else None))

        return self._evalsha("acquire", redis_keys, args).addCallback(answer)

    @refusals_as_failures
    def release(self, call_id: str, keys: Sequence[LimitKey]) -> Deferred[int]:
        """See L{ICallLimitStore.release}: one run of L{RELEASE_SCRIPT}."""
        check_call_id(call_id)
        redis_keys = [k for key in check_keys(keys) for k in self.entity_keys(key.entity)[:2]]
        if not redis_keys:
            return succeed(0)
        return self._evalsha("release", redis_keys, [call_id]).addCallback(int)

    @refusals_as_failures
    def renew(self, held: Mapping[str, Sequence[LimitKey]]) -> Deferred[int]:
        """See L{ICallLimitStore.renew}: one run of L{RENEW_SCRIPT} per
        L{RENEW_BATCH} calls, one after the other."""
        checked = [(check_call_id(call_id), check_keys(keys)) for call_id, keys in held.items()]
        batches = [checked[i:i + RENEW_BATCH] for i in range(0, len(checked), RENEW_BATCH)]
        now_ms = str(self._now_ms())
        restored = 0

        def run(_: object = None) -> Deferred[int] | int:
            if not batches:
                return restored
            return self._renew_batch(batches.pop(0), now_ms).addCallback(add)

        def add(count: int) -> Deferred[int] | int:
            nonlocal restored
            restored += count
            return run()

        return maybeDeferred(run)

    def _renew_batch(self, batch: list[tuple[str, list[LimitKey]]],
                     now_ms: str) -> Deferred[int]:
        positions: dict[str, int] = {}
        names: list[str] = []
        pairs: list[str] = []
        for call_id, keys in batch:
            for key in keys:
                live = self.entity_keys(key.entity)[key.direction == OUTBOUND]
                if live not in positions:
                    positions[live] = len(positions) + 1
                    names.append(key.entity)
                pairs += [str(positions[live]), call_id]
        if not pairs:
            return succeed(0)
        args = [now_ms, str(self._lease_ms), str(GRACE_MS), *names, *pairs]
        return self._evalsha("renew", [*positions, self._index], args).addCallback(int)

    @refusals_as_failures
    def usage(self, kind: str, id: str) -> Deferred[Usage]:
        """See L{ICallLimitStore.usage}: one read-only script."""
        name = LimitKey(kind, id, OUTBOUND).entity
        d = self._evalsha("usage", list(self.entity_keys(name)),
                          [str(self._now_ms()), str(WINDOW_MS)])
        return d.addCallback(lambda reply: Usage(kind, id, *map(int, json.loads(reply))))

    def snapshot(self) -> Deferred[list[Usage]]:
        """See L{ICallLimitStore.snapshot}: one script over the index."""
        d = self._evalsha("snapshot", [self._index],
                          [self.prefix, str(self._now_ms()), str(WINDOW_MS)])

        def usages(reply: Any) -> list[Usage]:
            found = []
            for name, inbound, outbound, attempts in json.loads(reply):
                kind, _, id = name.partition(":")
                found.append(Usage(kind, id, int(inbound), int(outbound), int(attempts)))
            return sorted(found, key=lambda u: (u.kind, u.id))

        return d.addCallback(usages)
