"""L{ILocationStore} in Redis, shared by every node of a cluster.

Key layout (C{P} is the configurable prefix, C{b2bua:loc:} by default)::

    P + "aor:" + aor   hash   field = contact key (L{contact_key}),
                              value = the binding's JSON (L{Binding.to_dict})
    P + "index"        zset   member = aor + LF + contact key, score = expires_at

Redis 7.0 has no per-field TTL, so it is emulated: each JSON record holds
its absolute C{expires_at}; readers ignore expired records; the update
script drops them; and the AOR key's TTL is set to its longest binding
(plus a second), so that an AOR nobody refreshes vanishes by itself.  The
index counts active bindings (C{ZCOUNT} above C{now}) for the
C{b2bua_registrations_active} gauge; the update script and L{expire} trim
it.

Every change goes through one Lua script (EVAL, then EVALSHA once Redis
knows it, through txredisapi), which reads, checks and modifies an AOR
atomically; its rules are those of L{apply_changes}.  Both keys are touched
by one script, so with Redis Cluster they would need a shared hash tag;
this store targets one primary (with Sentinel for failover).

Time: every record carries absolute times from the callers' clocks; a key's
TTL is relative, derived from C{expires_at - now}.  Nodes must keep their
clocks in sync (NTP), as with any shared registrar.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from b2bua.core.location import (
    Binding,
    ILocationStore,
    OutOfOrder,
    TooManyBindings,
    check_changes,
    sort_bindings,
)

__all__ = ["UPDATE_SCRIPT", "RedisLocationStore", "redis_connection_args"]

#: The update script.
#:
#: KEYS[1] the AOR hash, KEYS[2] the index zset.
#: ARGV[1] op: "update" or "remove_all"; ARGV[2] now (seconds);
#: ARGV[3] Call-ID; ARGV[4] CSeq; ARGV[5] max bindings (0: no limit);
#: ARGV[6] index member prefix ("<aor>\n"); ARGV[7] key TTL grace (ms);
#: then, for "update", pairs (contact key, binding JSON) in request order.
#:
#: Returns {"ok", json...} with every unexpired binding left (unordered),
#: {"out-of-order", contact} or {"too-many", count, limit}; on the last two
#: nothing was written.
UPDATE_SCRIPT = r"""
local op = ARGV[1]
local now = tonumber(ARGV[2])
local call_id = ARGV[3]
local cseq = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local prefix = ARGV[6]
local grace = tonumber(ARGV[7])

local function flow(b)
  if type(b.instance_id) ~= "string" or b.instance_id == "" then return nil end
  if type(b.reg_id) == "number" then
    return b.instance_id .. "\n" .. string.format("%d", b.reg_id)
  end
  return b.instance_id .. "\n"
end

local raw = redis.call("HGETALL", KEYS[1])
local alive, n_alive, dead = {}, 0, {}
for i = 1, #raw, 2 do
  local b = cjson.decode(raw[i + 1])
  if b.expires_at > now then
    alive[raw[i]] = {json = raw[i + 1], b = b}
    n_alive = n_alive + 1
  else
    dead[#dead + 1] = raw[i]
  end
end

local function refuses(entry)
  return entry.b.call_id == call_id and entry.b.cseq >= cseq
end

local result = {}
if op == "remove_all" then
  for k, entry in pairs(alive) do
    if refuses(entry) then return {"out-of-order", entry.b.contact} end
  end
else
  local changes = {}
  for i = 8, #ARGV, 2 do
    local c = {key = ARGV[i], json = ARGV[i + 1], b = cjson.decode(ARGV[i + 1])}
    c.matched = {}
    if alive[c.key] then c.matched[c.key] = true end
    local f = flow(c.b)
    if f then
      for k, entry in pairs(alive) do
        if flow(entry.b) == f then c.matched[k] = true end
      end
    end
    for k in pairs(c.matched) do
      if refuses(alive[k]) then return {"out-of-order", alive[k].b.contact} end
    end
    changes[#changes + 1] = c
  end
  for k, entry in pairs(alive) do result[k] = entry.json end
  for _, c in ipairs(changes) do
    for k in pairs(c.matched) do result[k] = nil end
    result[c.key] = nil
    if c.b.expires_at > now then result[c.key] = c.json end
  end
  local count = 0
  for _ in pairs(result) do count = count + 1 end
  if limit > 0 and count > limit and count > n_alive then
    return {"too-many", count, limit}
  end
end

-- write: drop what is gone, store what is new, keep the index in step
local gone = dead
for k in pairs(alive) do
  if result[k] == nil then gone[#gone + 1] = k end
end
for _, k in ipairs(gone) do
  redis.call("HDEL", KEYS[1], k)
  redis.call("ZREM", KEYS[2], prefix .. k)
end
local out, longest = {"ok"}, nil
for k, value in pairs(result) do
  local entry = alive[k]
  local b = cjson.decode(value)
  if entry == nil or entry.json ~= value then
    redis.call("HSET", KEYS[1], k, value)
    redis.call("ZADD", KEYS[2], b.expires_at, prefix .. k)
  end
  if longest == nil or b.expires_at > longest then longest = b.expires_at end
  out[#out + 1] = value
end
if longest == nil then
  redis.call("DEL", KEYS[1])
else
  redis.call("PEXPIRE", KEYS[1], math.ceil((longest - now) * 1000) + grace)
end
redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", now)
return out
"""


def redis_connection_args(url: str) -> dict[str, Any]:
    """Keyword arguments for C{txredisapi.Connection} from a
    C{redis://[[user]:password@]host[:port][/db]} URL.

    @raise ValueError: for another scheme or a bad database number.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis:// URL: {url!r}")
    path = parts.path.strip("/")
    args: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 6379,
        "dbid": int(path) if path else None,
    }
    if parts.password:
        args["password"] = unquote(parts.password)
        if parts.username:
            args["username"] = unquote(parts.username)
    if parts.scheme == "rediss":
        args["ssl_context_factory"] = True
    return args


def _decode(values: list[Any]) -> list[Binding]:
    return sort_bindings(Binding.from_dict(json.loads(v)) for v in values)


def _encode(binding: Binding) -> str:
    return json.dumps(binding.to_dict(), separators=(",", ":"), ensure_ascii=True)


@implementer(ILocationStore)
class RedisLocationStore:
    """L{ILocationStore} on a txredisapi connection (or pool).

    @param redis: a connected txredisapi handler (C{Connection},
        C{ConnectionPool} or their lazy forms); its C{replyTimeout} bounds
        every call.
    @param clock: supplies C{now} when a caller does not.
    @param prefix: put before every key (tests use a unique one).
    @param grace: seconds an AOR key outlives its longest binding.
    """

    def __init__(self, redis: Any, clock: IReactorTime, prefix: str = "b2bua:loc:",
                 grace: float = 1.0) -> None:
        self._redis = redis
        self._clock = clock
        self.prefix = prefix
        self._grace_ms = int(grace * 1000)
        self._index = prefix + "index"

    def _now(self, now: float | None) -> float:
        return self._clock.seconds() if now is None else now

    def aor_key(self, aor: str) -> str:
        """The Redis key of C{aor}'s hash."""
        return f"{self.prefix}aor:{aor}"

    def _script(self, aor: str, op: str, call_id: str, cseq: int, now: float,
                max_bindings: int | None, pairs: list[str]) -> Deferred[list[Binding]]:
        args = [op, repr(float(now)), call_id, str(cseq), str(max_bindings or 0),
                aor + "\n", str(self._grace_ms), *pairs]
        d = self._redis.eval(UPDATE_SCRIPT, [self.aor_key(aor), self._index], args)
        return d.addCallback(self._script_result)

    @staticmethod
    def _script_result(reply: list[Any]) -> list[Binding]:
        status = reply[0]
        if status == "out-of-order":
            raise OutOfOrder(str(reply[1]))
        if status == "too-many":
            raise TooManyBindings(int(reply[1]), int(reply[2]))
        if status != "ok":
            raise ValueError(f"unexpected reply from the location script: {status!r}")
        return _decode(reply[1:])

    def get(self, aor: str, now: float | None = None) -> Deferred[list[Binding]]:
        """See L{ILocationStore.get}: one HGETALL, expired records skipped."""
        at = self._now(now)
        d = self._redis.hgetall(self.aor_key(aor))

        def alive(record: dict[str, str]) -> list[Binding]:
            return [b for b in _decode(list(record.values())) if b.expires_at > at]

        return d.addCallback(alive)

    def update(self, aor: str, call_id: str, cseq: int, changes: list[Binding], now: float,
               max_bindings: int | None = None) -> Deferred[list[Binding]]:
        """See L{ILocationStore.update}: one run of L{UPDATE_SCRIPT}."""
        try:
            check_changes(aor, call_id, cseq, changes)
        except ValueError:
            return fail()
        pairs: list[str] = []
        for change in changes:
            pairs += [change.key, _encode(change)]
        return self._script(aor, "update", call_id, cseq, now, max_bindings, pairs)

    def remove_all(self, aor: str, call_id: str, cseq: int,
                   now: float) -> Deferred[list[Binding]]:
        """See L{ILocationStore.remove_all}."""
        return self._script(aor, "remove_all", call_id, cseq, now, None, [])

    def count(self, now: float | None = None) -> Deferred[int]:
        """See L{ILocationStore.count}: C{ZCOUNT} of the index above C{now}."""
        at = self._now(now)
        return self._redis.zcount(self._index, f"({at!r}", "+inf").addCallback(int)

    def expire(self, now: float | None = None) -> Deferred[int]:
        """See L{ILocationStore.expire}: trim the index (the AOR hashes
        expire by their TTL and are cleaned by the next update)."""
        at = self._now(now)
        return self._redis.zremrangebyscore(self._index, "-inf", repr(at)).addCallback(int)

    @staticmethod
    def key_ttl(expires_at: float, now: float) -> int:
        """Milliseconds a key lives for a binding expiring at C{expires_at}
        (without grace): what the script sets, for tests and operators."""
        return math.ceil((expires_at - now) * 1000)
