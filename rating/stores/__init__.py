"""Balance stores: accounts, holds and commits of the charging engine.

L{IBalanceStore} (L{rating.stores.interface}) is the contract;
L{MemoryBalanceStore} keeps balances in process memory (one node, the demo,
tests) and L{rating.stores.redis.RedisBalanceStore} in Redis with one Lua
script function per operation (every node of a cluster); import it from
its own module.  Money conversions are in L{rating.money}.
"""

from rating.stores.interface import (
    Balance,
    BalanceError,
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
)
from rating.stores.memory import MemoryBalanceStore

__all__ = [
    "Balance",
    "BalanceError",
    "Commit",
    "ExpiredHold",
    "Hold",
    "IBalanceStore",
    "InsufficientFunds",
    "InvalidAmount",
    "InvalidRequest",
    "LedgerEntry",
    "MemoryBalanceStore",
    "ReservationClosed",
    "ReservationConflict",
    "UnknownReservation",
]
