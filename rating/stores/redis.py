"""L{IBalanceStore} in Redis, shared by every node: one Lua function per
operation, each applied atomically inside a script run (rating.md 3.3, 3.6).

Key layout (C{P} is the configurable prefix, C{b2bua:bal:} by default; C{A}
the account key, inside braces so that an account's keys share a Redis
Cluster hash slot)::

    P acct:{A}       hash    balance, credit_limit, held (micro-units),
                             version (+1 on every change)
    P hold:{A}       hash    field = reservation id, value =
                             "amount|expires_at_ms|checkpoint|checkpoint_ms"
                             (micro-units and ms; checkpoint_ms 0 = none)
    P exp:{A}        zset    member = reservation id, score = expires_at_ms
    P done:{A}:<id>  string  the commit that closed the id (JSON), TTL done_ttl
    P topup:{A}      hash    field = top-up reference, value = "amount|at_ms"
    P holds          zset    member = A + LF + id, score = expires_at_ms
                             (every hold of every account, for L{expired})
    P ledger         stream  one entry per top-up, commit and settlement:
                             kind, account, reservation_id, reference,
                             amount, final_cost, balance (micro-units), at (ms)

All money is integer micro-units (L{rating.money}); Lua numbers are doubles,
exact up to 2**53, which L{rating.money.MAX_MICROS} keeps every sum under.
Numbers are written with C{string.format("%d")}, never Lua's default number
formatting.

L{BALANCE_SCRIPT} holds one Lua function per operation (C{reserve},
C{extend}, C{commit} ...) and a dispatcher.  For each operation it reads
the account, settles the account's holds that expired by the operation's
C{now} (the store's clock) from their checkpoints (up to L{SETTLE_BATCH}),
runs the operation's function, and writes the account back when anything
changed.  A script run carries one operation or several queued ones
(L{RedisBalanceStore}); either way Redis runs it atomically, so no other
operation, from any node, interleaves with an operation.  Replies are one
JSON text per run (money as strings), so txredisapi's C{convertNumbers}
never turns a reference or an amount into a float, and a run costs one
bulk reply to parse.

Key names are built inside the scripts from C{P} and the account (so a run
may carry operations on many accounts); a script declares no KEYS.  That
and the global C{P holds} and C{P ledger} tie this store to one primary
(replicas + Sentinel), rating.md 3.3's v1; a Redis Cluster version would
send one account per run with declared keys and per-slot ledgers.  The
ledger is never trimmed here: the CDR writer acknowledges and trims what it
has stored.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from rating.money import MAX_MICROS, from_micros
from rating.stores.interface import (
    DEFAULT_DONE_TTL,
    SETTLE_BATCH,
    Balance,
    Commit,
    ExpiredHold,
    Hold,
    IBalanceStore,
    InsufficientFunds,
    InvalidAmount,
    InvalidRequest,
    LedgerEntry,
    ReservationClosed,
    ReservationConflict,
    UnknownReservation,
    amount_micros,
    check_cursor,
    check_key,
    check_note,
    parse_entry_id,
    refusals_as_failures,
    time_ms,
)

__all__ = ["BALANCE_SCRIPT", "EXPIRED_SCRIPT", "LEDGER_SCRIPT", "RedisBalanceStore"]

#: The balance script: one Lua function per operation, and a dispatcher that
#: applies a list of operations in order, each atomically (the whole list
#: is one script run, so nothing interleaves with it).
#:
#: ARGV[1] the key prefix P, ARGV[2] the done TTL (s), ARGV[3] a JSON array
#: of operations, each C{[name, account, now_ms, arg...]} (all strings).
#: Returns one JSON array (a single bulk string: txredisapi parses each
#: element of a multi-bulk reply in its own reactor turn) of one object per
#: operation, money and times as integer strings: C{{"s": status, ...}};
#: status C{"error"} when the operation raised (the others still run).
BALANCE_SCRIPT = r"""
local P, done_ttl = ARGV[1], ARGV[2]
local index, ledger = P .. "holds", P .. "ledger"
local function fmt(n) return string.format("%d", n) end

-- an account, read for one operation
local function open(account, now)
  local tag = "{" .. account .. "}"
  local s = {account = account, now = now, acct = P .. "acct:" .. tag,
             holds = P .. "hold:" .. tag, exp = P .. "exp:" .. tag, notes = P .. "note:" .. tag,
             done = P .. "done:" .. tag .. ":", topup = P .. "topup:" .. tag, dirty = false}
  local a = redis.call("HMGET", s.acct, "balance", "credit_limit", "held")
  s.balance, s.credit, s.held = tonumber(a[1]) or 0, tonumber(a[2]) or 0, tonumber(a[3]) or 0
  return s
end
local function save(s)
  if s.dirty then
    redis.call("HSET", s.acct, "balance", fmt(s.balance), "credit_limit", fmt(s.credit),
               "held", fmt(s.held))
    redis.call("HINCRBY", s.acct, "version", 1)
  end
end
local function available(s) return s.balance + s.credit - s.held end
local function parse(raw)
  local amount, expires, cp, cp_ms = string.match(raw, "^(%d+)|(%-?%d+)|(%d+)|(%d+)$")
  return {amount = tonumber(amount), expires = tonumber(expires), cp = tonumber(cp),
          cp_ms = tonumber(cp_ms)}
end
local function get_hold(s, rid)
  local raw = redis.call("HGET", s.holds, rid)
  if raw then return parse(raw) end
  return nil
end
local function put_hold(s, rid, h)
  redis.call("HSET", s.holds, rid,
             fmt(h.amount) .. "|" .. fmt(h.expires) .. "|" .. fmt(h.cp) .. "|" .. fmt(h.cp_ms))
end
local function index_hold(s, rid, expires)
  redis.call("ZADD", s.exp, expires, rid)
  redis.call("ZADD", index, expires, s.account .. "\n" .. rid)
end
local function drop_hold(s, rid)
  redis.call("HDEL", s.holds, rid)
  redis.call("HDEL", s.notes, rid)
  redis.call("ZREM", s.exp, rid)
  redis.call("ZREM", index, s.account .. "\n" .. rid)
end
local function hold_reply(status, h)
  return {s = status, amount = fmt(h.amount), expires = fmt(h.expires), cp = fmt(h.cp),
          cp_ms = fmt(h.cp_ms)}
end
local function balance_reply(s)
  return {s = "balance", balance = fmt(s.balance), credit = fmt(s.credit), held = fmt(s.held)}
end
local function insufficient(s, requested)
  return {s = "insufficient", requested = fmt(requested), available = fmt(available(s))}
end
local function append(s, kind, rid, reference, amount, final, settled)
  if settled then
    -- a settled hold: its recovery note and checkpoint time go with it
    redis.call("XADD", ledger, "*", "kind", kind, "account", s.account, "reservation_id", rid,
               "reference", reference, "amount", fmt(amount), "final_cost", fmt(final),
               "balance", fmt(s.balance), "at", fmt(s.now),
               "note", settled.note, "cp_at", fmt(settled.cp_ms))
    return
  end
  redis.call("XADD", ledger, "*", "kind", kind, "account", s.account, "reservation_id", rid,
             "reference", reference, "amount", fmt(amount), "final_cost", fmt(final),
             "balance", fmt(s.balance), "at", fmt(s.now))
end
-- close a reservation: debit min(final, hold + available), drop the hold,
-- remember the result for done_ttl, append to the ledger; the commit JSON
local function close(s, rid, h, final, reference, recovered)
  local amount, settled = 0, nil
  if recovered then
    settled = {note = redis.call("HGET", s.notes, rid) or "", cp_ms = h and h.cp_ms or 0}
  end
  if h then
    amount = h.amount
    drop_hold(s, rid)
  end
  local debited = math.max(0, math.min(final, available(s) + amount))
  s.balance = s.balance - debited
  s.held = s.held - amount
  s.dirty = true
  local commit = cjson.encode({reference = reference, final = fmt(final),
    debited = fmt(debited), held = fmt(amount), recovered = recovered and "1" or "0",
    at = fmt(s.now), balance = fmt(s.balance)})
  redis.call("SET", s.done .. rid, commit, "EX", done_ttl)
  append(s, recovered and "recovered" or "commit", rid, reference, debited, final, settled)
  return commit
end
-- rating.md 3.6: expired holds are abandoned; settle them from the checkpoint
local function settle(s)
  local expired = redis.call("ZRANGEBYSCORE", s.exp, "-inf", fmt(s.now), "LIMIT", 0,
                             """ + str(SETTLE_BATCH) + r""")
  for _, rid in ipairs(expired) do
    local h = get_hold(s, rid)
    if h then close(s, rid, h, h.cp, "recovered", true) else drop_hold(s, rid) end
  end
end
local function closed(s, rid)
  local commit = redis.call("GET", s.done .. rid)
  if commit then return {s = "closed", commit = commit} end
  return nil
end

local ops = {}
function ops.get_balance(s)
  return balance_reply(s)
end
function ops.top_up(s, amount, reference, largest)
  amount = tonumber(amount)
  if redis.call("HEXISTS", s.topup, reference) == 0 then
    if s.balance + amount > tonumber(largest) then return {s = "limit"} end
    s.balance = s.balance + amount
    s.dirty = true
    redis.call("HSET", s.topup, reference, fmt(amount) .. "|" .. fmt(s.now))
    append(s, "top_up", "", reference, amount, amount)
  end
  return balance_reply(s)
end
function ops.set_credit_limit(s, limit)
  s.credit = tonumber(limit)
  s.dirty = true
  return balance_reply(s)
end
function ops.reserve(s, rid, amount, expires, note)
  amount = tonumber(amount)
  local refused = closed(s, rid)
  if refused then return refused end
  local h = get_hold(s, rid)
  if h then
    if amount > h.amount then return hold_reply("conflict", h) end
    return hold_reply("hold", h)
  end
  if amount > available(s) then return insufficient(s, amount) end
  h = {amount = amount, expires = tonumber(expires), cp = 0, cp_ms = 0}
  put_hold(s, rid, h)
  if note and note ~= "" then redis.call("HSET", s.notes, rid, note) end
  index_hold(s, rid, expires)
  s.held = s.held + amount
  s.dirty = true
  return hold_reply("hold", h)
end
function ops.extend(s, rid, total, expires)
  total = tonumber(total)
  local refused = closed(s, rid)
  if refused then return refused end
  local h = get_hold(s, rid)
  if not h then return {s = "unknown"} end
  local increase = total - h.amount
  if increase > 0 then
    if increase > available(s) then return insufficient(s, increase) end
    h.amount = total
    s.held = s.held + increase
    s.dirty = true
  end
  if tonumber(expires) > h.expires then
    h.expires = tonumber(expires)
    index_hold(s, rid, expires)
  end
  put_hold(s, rid, h)
  return hold_reply("hold", h)
end
function ops.checkpoint(s, rid, rated, note)
  local refused = closed(s, rid)
  if refused then return refused end
  local h = get_hold(s, rid)
  if not h then return {s = "unknown"} end
  h.cp = math.max(h.cp, math.min(tonumber(rated), h.amount))
  h.cp_ms = s.now
  put_hold(s, rid, h)
  if note == "" then
    redis.call("HDEL", s.notes, rid)
  elseif note then
    redis.call("HSET", s.notes, rid, note)
  end
  return hold_reply("hold", h)
end
function ops.commit(s, rid, final, reference)
  local commit = redis.call("GET", s.done .. rid)
  if not commit then commit = close(s, rid, get_hold(s, rid), tonumber(final), reference, false) end
  return {s = "commit", commit = commit}
end
function ops.release(s, rid)
  local h = get_hold(s, rid)
  if h then
    s.held = s.held - h.amount
    s.dirty = true
    drop_hold(s, rid)
  end
  return {s = "released"}
end
function ops.settle(s, rid)
  local commit = redis.call("GET", s.done .. rid)
  if commit then return {s = "commit", commit = commit} end
  return {s = "none"}
end

local function run(op)
  local s = open(op[2], tonumber(op[3]))
  settle(s)
  local reply = ops[op[1]](s, op[4], op[5], op[6], op[7])
  save(s)
  return reply
end

local out = {}
for i, op in ipairs(cjson.decode(ARGV[3])) do
  local ok, reply = pcall(run, op)
  if not ok then reply = {s = "error", message = tostring(reply)} end
  out[i] = reply
end
return cjson.encode(out)
"""

#: L{IBalanceStore.expired}.  KEYS[1] the index; ARGV: 1 now (ms), 2 limit,
#: 3 the key prefix P.  A JSON array with one C{[account, id, hold record]}
#: per hold.
EXPIRED_SCRIPT = r"""
local out = {}
local found = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, ARGV[2])
for _, member in ipairs(found) do
  local cut = string.find(member, "\n", 1, true)
  local account, rid = string.sub(member, 1, cut - 1), string.sub(member, cut + 1)
  local raw = redis.call("HGET", ARGV[3] .. "hold:{" .. account .. "}", rid)
  if raw then out[#out + 1] = {account, rid, raw} end
end
if #out == 0 then return "[]" end
return cjson.encode(out)
"""

#: L{IBalanceStore.ledger}.  KEYS[1] the stream; ARGV: 1 after (an entry
#: id), 2 count.  A JSON array with one C{[id, field, value, ...]} per
#: entry.
LEDGER_SCRIPT = r"""
local out = {}
for _, entry in ipairs(redis.call("XRANGE", KEYS[1], "(" .. ARGV[1], "+", "COUNT", ARGV[2])) do
  local row = {entry[1]}
  for _, v in ipairs(entry[2]) do row[#row + 1] = v end
  out[#out + 1] = row
end
if #out == 0 then return "[]" end
return cjson.encode(out)
"""


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


#: L{IBalanceStore.advance_ledger_cursor}.  KEYS[1] the cursor's key; ARGV[1]
#: the entry id to move to.  The cursor after the move.
CURSOR_SCRIPT = r"""
local function parse(id)
  local ms, seq = string.match(id, "^(%d+)-?(%d*)$")
  return tonumber(ms), tonumber(seq) or 0
end
local current = redis.call("GET", KEYS[1]) or "0-0"
local ams, aseq = parse(ARGV[1])
local bms, bseq = parse(current)
if ams > bms or (ams == bms and aseq > bseq) then
  redis.call("SET", KEYS[1], ARGV[1])
  return ARGV[1]
end
return current
"""

_SOURCES = {"balance": BALANCE_SCRIPT, "expired": EXPIRED_SCRIPT, "ledger": LEDGER_SCRIPT,
            "cursor": CURSOR_SCRIPT}
_SHAS = {name: _sha(source) for name, source in _SOURCES.items()}


def _hold(account: str, rid: str, reply: dict[str, str], cls: type[Hold] = Hold) -> Hold:
    cp_ms = int(reply["cp_ms"])
    return cls(account, rid, from_micros(int(reply["amount"])), int(reply["expires"]) / 1000,
               from_micros(int(reply["cp"])), cp_ms / 1000 if cp_ms else None)


def _commit(account: str, rid: str, text: str) -> Commit:
    c = json.loads(text)
    return Commit(account, rid, c["reference"], from_micros(int(c["final"])),
                  from_micros(int(c["debited"])), from_micros(int(c["held"])),
                  c["recovered"] == "1", int(c["at"]) / 1000,
                  from_micros(int(c["balance"])))


@implementer(IBalanceStore)
class RedisBalanceStore:
    """L{IBalanceStore} on a txredisapi connection (or pool).

    Operations are queued and sent as runs of L{BALANCE_SCRIPT}: while
    C{in_flight} runs are outstanding, new operations wait and go together
    in the next run (at most C{batch} of them), so under load one EVALSHA
    carries many operations and the client's per-command cost is shared.
    Alone, an operation is sent at once.  C{batch=1} makes it one script
    run per operation.  Operations in one run apply in the order they were
    issued; two runs in flight on a pool's different connections may apply
    in either order, so a caller that needs an order waits for the first
    answer (as the charging layer does anyway).

    @param redis: a connected txredisapi handler (C{Connection},
        C{ConnectionPool} or their lazy forms); its C{replyTimeout} bounds
        every call.  When a run fails (timeout, lost connection), every
        operation in it fails with that error, and may or may not have been
        applied: callers retry commits (idempotent) and release holds
        (idempotent) on such failures.
    @param clock: the store's clock (expiry, checkpoint and commit times);
        nodes sharing a Redis must keep their clocks in sync (NTP).
    @param prefix: put before every key (tests use a unique one).
    @param done_ttl: seconds a closed reservation id is remembered.
    @param batch: the most operations in one script run.
    @param in_flight: the most script runs outstanding at once.
    """

    def __init__(self, redis: Any, clock: IReactorTime, prefix: str = "b2bua:bal:",
                 done_ttl: int = DEFAULT_DONE_TTL, batch: int = 256,
                 in_flight: int = 2) -> None:
        if batch < 1 or in_flight < 1:
            raise ValueError("batch and in_flight must be at least 1")
        self._redis = redis
        self._clock = clock
        self.prefix = prefix
        self._done_ttl = str(int(done_ttl))
        self._index = prefix + "holds"
        self._ledger = prefix + "ledger"
        self._batch = batch
        self._max_in_flight = in_flight
        self._in_flight = 0
        self._delivering = False
        self._queue: list[tuple[list[str], Deferred[dict[str, Any]]]] = []

    def account_keys(self, account: str) -> dict[str, str]:
        """The names of an account's keys (built the same way in the script)."""
        tag = "{" + account + "}"
        p = self.prefix
        return {"acct": f"{p}acct:{tag}", "hold": f"{p}hold:{tag}", "exp": f"{p}exp:{tag}",
                "note": f"{p}note:{tag}", "topup": f"{p}topup:{tag}", "holds": self._index,
                "ledger": self._ledger}

    def done_key(self, account: str, reservation_id: str) -> str:
        """The key remembering how C{reservation_id} was closed."""
        return f"{self.prefix}done:{{{account}}}:{reservation_id}"

    def _evalsha(self, name: str, keys: list[str], args: list[str]) -> Deferred[Any]:
        """Run a script by its SHA1, loading it with EVAL when Redis does not
        know it (first use, restart, SCRIPT FLUSH)."""
        d = self._redis.execute_command("EVALSHA", _SHAS[name], len(keys), *keys, *args)

        def unknown(failure: Failure) -> Any:
            if "NOSCRIPT" not in str(failure.value):
                return failure
            return self._redis.execute_command("EVAL", _SOURCES[name], len(keys), *keys, *args)

        return d.addErrback(unknown)

    def _run(self, name: str, account: str, args: list[str],
             now_ms: int | None = None) -> Deferred[dict[str, Any]]:
        """Queue operation C{name} of L{BALANCE_SCRIPT}; fires with its reply."""
        if now_ms is None:
            now_ms = time_ms("now", self._clock.seconds())
        d: Deferred[dict[str, Any]] = Deferred()
        self._queue.append(([name, account, str(now_ms), *args], d))
        if self._in_flight < self._max_in_flight and not self._delivering:
            self._send()
        return d

    def _send(self, count: int | None = None) -> None:
        """Send C{count} (default: all, at most C{batch}) queued operations
        as one script run."""
        take = self._batch if count is None else min(count, self._batch)
        sent, self._queue = self._queue[:take], self._queue[take:]
        self._in_flight += 1
        payload = json.dumps([op for op, _ in sent], separators=(",", ":"))
        d = maybeDeferred(self._evalsha, "balance", [], [self.prefix, self._done_ttl, payload])
        d.addBoth(self._landed, sent)

    def _landed(self, result: Any, sent: list[tuple[list[str], Deferred[Any]]]) -> None:
        """Hand each operation its reply, then send what queued meanwhile
        (operations queued by these callbacks included)."""
        self._in_flight -= 1
        if not isinstance(result, Failure):
            try:
                result = json.loads(result)
            except (TypeError, ValueError):
                pass
            if not (isinstance(result, list) and len(result) == len(sent)):
                result = Failure(RuntimeError(
                    f"balance script: unexpected reply {result!r:.80}"))
        self._delivering = True
        try:
            for i, (op, d) in enumerate(sent):
                if isinstance(result, Failure):
                    d.errback(result)
                    continue
                answer = result[i]
                if answer["s"] == "error":
                    d.errback(RuntimeError(f"balance script {op[0]}: {answer['message']}"))
                else:
                    d.callback(answer)
        finally:
            self._delivering = False
        # spread what queued over the free runs, so that Redis executes one
        # while this process handles the answers of another
        while self._queue and self._in_flight < self._max_in_flight:
            free = self._max_in_flight - self._in_flight
            self._send(-(-len(self._queue) // free))

    @staticmethod
    def _answer(account: str, rid: str, reply: dict[str, Any]) -> dict[str, Any]:
        """C{reply}, unless it is a refusal: then raise its error."""
        status = reply["s"]
        if status == "insufficient":
            raise InsufficientFunds(account, from_micros(int(reply["requested"])),
                                    from_micros(int(reply["available"])))
        if status == "closed":
            raise ReservationClosed(_commit(account, rid, reply["commit"]))
        if status == "unknown":
            raise UnknownReservation(account, rid)
        if status == "conflict":
            raise ReservationConflict(_hold(account, rid, reply))
        if status == "limit":
            raise InvalidAmount(f"{account}: the balance would exceed "
                                f"{from_micros(MAX_MICROS)}")
        return reply

    def _holding(self, name: str, account: str, rid: str, args: list[str],
                 now_ms: int | None = None) -> Deferred[Hold]:
        """Run an operation that answers with a hold."""
        return self._run(name, account, args, now_ms).addCallback(
            lambda reply: _hold(account, rid, self._answer(account, rid, reply)))

    def _balancing(self, name: str, account: str, args: list[str]) -> Deferred[Balance]:
        """Run an operation that answers with the account's balance."""
        def result(reply: dict[str, Any]) -> Balance:
            reply = self._answer(account, "", reply)
            return Balance(account, from_micros(int(reply["balance"])),
                           from_micros(int(reply["credit"])), from_micros(int(reply["held"])))
        return self._run(name, account, args).addCallback(result)

    def _hold_args(self, account: str, rid: str, amount: Decimal, what: str,
                   expires_at: float) -> tuple[list[str], int]:
        """Validated arguments of reserve/extend (id, micro-units, expiry ms)
        and now (ms)."""
        check_key("account", account)
        check_key("reservation id", rid)
        micros = amount_micros(what, amount)
        expires_ms = time_ms("expires_at", expires_at)
        now_ms = time_ms("now", self._clock.seconds())
        if expires_ms <= now_ms:
            raise InvalidRequest(f"expires_at {expires_at} is not after now")
        return [rid, str(micros), str(expires_ms)], now_ms

    # -- IBalanceStore -------------------------------------------------------

    @refusals_as_failures
    def get_balance(self, account: str) -> Deferred[Balance]:
        """See L{IBalanceStore.get_balance}."""
        return self._balancing("get_balance", check_key("account", account), [])

    @refusals_as_failures
    def top_up(self, account: str, amount: Decimal, reference: str) -> Deferred[Balance]:
        """See L{IBalanceStore.top_up}."""
        check_key("account", account)
        micros = amount_micros("top-up amount", amount, minimum=1)
        return self._balancing("top_up", account, [str(micros), check_key("reference", reference),
                                                   str(MAX_MICROS)])

    @refusals_as_failures
    def set_credit_limit(self, account: str, credit_limit: Decimal) -> Deferred[Balance]:
        """See L{IBalanceStore.set_credit_limit}."""
        micros = amount_micros("credit limit", credit_limit)
        return self._balancing("set_credit_limit", check_key("account", account), [str(micros)])

    @refusals_as_failures
    def reserve(self, account: str, reservation_id: str, amount: Decimal,
                expires_at: float, note: str = "") -> Deferred[Hold]:
        """See L{IBalanceStore.reserve}."""
        args, now_ms = self._hold_args(account, reservation_id, amount, "hold amount",
                                       expires_at)
        if check_note(note):
            args.append(note)
        return self._holding("reserve", account, reservation_id, args, now_ms)

    @refusals_as_failures
    def extend(self, account: str, reservation_id: str, new_total: Decimal,
               expires_at: float) -> Deferred[Hold]:
        """See L{IBalanceStore.extend}."""
        args, now_ms = self._hold_args(account, reservation_id, new_total, "hold total",
                                       expires_at)
        return self._holding("extend", account, reservation_id, args, now_ms)

    @refusals_as_failures
    def checkpoint(self, account: str, reservation_id: str,
                   rated_so_far: Decimal, note: str | None = None) -> Deferred[Hold]:
        """See L{IBalanceStore.checkpoint}."""
        check_key("account", account)
        micros = amount_micros("rated so far", rated_so_far)
        args = [check_key("reservation id", reservation_id), str(micros)]
        if note is not None:
            args.append(check_note(note))
        return self._holding("checkpoint", account, reservation_id, args)

    @refusals_as_failures
    def commit(self, account: str, reservation_id: str, final_cost: Decimal,
               reference: str) -> Deferred[Commit]:
        """See L{IBalanceStore.commit}."""
        check_key("account", account)
        check_key("reservation id", reservation_id)
        micros = amount_micros("final cost", final_cost)
        d = self._run("commit", account,
                      [reservation_id, str(micros), check_key("reference", reference)])
        return d.addCallback(lambda reply: _commit(account, reservation_id, reply["commit"]))

    @refusals_as_failures
    def release(self, account: str, reservation_id: str) -> Deferred[None]:
        """See L{IBalanceStore.release}."""
        check_key("account", account)
        d = self._run("release", account, [check_key("reservation id", reservation_id)])
        return d.addCallback(lambda _: None)

    @refusals_as_failures
    def expired(self, now: float, limit: int = 1000) -> Deferred[list[ExpiredHold]]:
        """See L{IBalanceStore.expired}: one read-only script over the index."""
        now_ms = time_ms("now", now)
        if limit <= 0:
            return succeed([])
        d = self._evalsha("expired", [self._index], [str(now_ms), str(limit), self.prefix])

        def holds(reply: str) -> list[ExpiredHold]:
            found = []
            for account, rid, raw in json.loads(reply):
                amount, expires, cp, cp_ms = raw.split("|")
                found.append(_hold(account, rid, {"amount": amount, "expires": expires,
                                                  "cp": cp, "cp_ms": cp_ms}, ExpiredHold))
            return found

        return d.addCallback(holds)

    @refusals_as_failures
    def settle_expired(self, account: str, reservation_id: str,
                       now: float | None = None) -> Deferred[Commit | None]:
        """See L{IBalanceStore.settle_expired}."""
        check_key("account", account)
        check_key("reservation id", reservation_id)
        now_ms = None if now is None else time_ms("now", now)
        d = self._run("settle", account, [reservation_id], now_ms)
        return d.addCallback(lambda reply: _commit(account, reservation_id, reply["commit"])
                             if reply["s"] == "commit" else None)

    @refusals_as_failures
    def ledger(self, after: str = "0-0", count: int = 100) -> Deferred[list[LedgerEntry]]:
        """See L{IBalanceStore.ledger}: one read-only script over the stream."""
        parse_entry_id(after)
        if count <= 0:
            return succeed([])
        d = self._evalsha("ledger", [self._ledger], [after, str(count)])

        def entries(reply: str) -> list[LedgerEntry]:
            out = []
            for values in json.loads(reply):
                f = dict(zip(values[1::2], values[2::2], strict=True))
                cp_ms = int(f.get("cp_at") or 0)
                out.append(LedgerEntry(values[0], f["kind"], f["account"], f["reservation_id"],
                                       f["reference"], from_micros(int(f["amount"])),
                                       from_micros(int(f["final_cost"])),
                                       from_micros(int(f["balance"])), int(f["at"]) / 1000,
                                       f.get("note", ""), cp_ms / 1000 if cp_ms else None))
            return out

        return d.addCallback(entries)

    def _cursor_key(self, name: str) -> str:
        return f"{self.prefix}cursor:{check_cursor(name)}"

    @refusals_as_failures
    def ledger_cursor(self, name: str) -> Deferred[str]:
        """See L{IBalanceStore.ledger_cursor}."""
        d = self._redis.execute_command("GET", self._cursor_key(name))
        return d.addCallback(lambda value: _text(value) or "0-0")

    @refusals_as_failures
    def advance_ledger_cursor(self, name: str, entry_id: str) -> Deferred[str]:
        """See L{IBalanceStore.advance_ledger_cursor}: one script, so that two
        readers moving it at once never move it back."""
        parse_entry_id(entry_id)
        d = self._evalsha("cursor", [self._cursor_key(name)], [entry_id])
        return d.addCallback(_text)


def _text(value: Any) -> str:
    """A Redis reply as text (C{""} for nil)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
