"""Call detail records: what one call was, as the C{cdrs} table keeps it.

L{build_cdr} turns the L{CallRecord} that C{b2bua_call_ended} hands out,
plus what the charging layer left in C{call.data["charging"]}, into one
L{CDR}: one row per call attempt (a received INVITE, answered or not),
identified by the call id, so that writing it twice stores it once.

The row holds the final disposition, the caller's cost and currency, and
C{legs}: every B-leg attempt in order (the hunt and its failovers), each
with its destination label, vendor, response code, answer and billed
seconds, and its own cost when the charging data has one.  C{breakdown}
keeps the call's final code, reason and disconnect cause, and the rating
breakdown (L{rating.cost.Breakdown.as_dict}) when the call was rated.

The charging data (a mapping, or an object with these attributes; every
one optional) is read as:

    - C{customer_id}, C{account_id}: the payer's row ids;
    - C{cost} (C{Decimal}, C{int} or decimal string, never a float),
      C{currency};
    - C{billsec}: billable seconds, when the charging layer decided them;
    - C{breakdown}: a L{rating.cost.Breakdown} or a JSON-ready mapping;
    - C{legs}: per-attempt charges, a list in attempt order or a mapping
      keyed by attempt index (0-based) or destination label, each a mapping
      with C{vendor}, C{cost}, C{currency} (and anything JSON-ready).

A CDR travels through the journal as L{CDR.to_json} (money as decimal
strings, times as seconds since the epoch) and reaches SQL as
L{CDR.columns} (model-typed values for the dialect's C{to_db}).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from twisted.logger import Logger

from b2bua.core.call import CallRecord, LegRecord
from b2bua.db.model import entity
from b2bua.db.validation import convert, json_value
from b2bua.metrics import OUTCOMES, outcome_for
from rating.cost import billable_duration

__all__ = ["CDR", "DISPOSITIONS", "build_cdr", "cdr_for_call", "cdr_for_recovery",
           "disposition_for", "recovery_note", "row_ids"]

log = Logger()

#: Every value of the C{disposition} column.
#: the same set as the C{outcome} label of C{b2bua_calls_total}
DISPOSITIONS = OUTCOMES
#: Longest text kept in a CDR's text columns (longer is cut, never refused).
MAX_TEXT = 1024
_ZERO = Decimal(0)
_COST_FIELD = entity("cdr").field("cost")



def disposition_for(record: CallRecord) -> str:
    """How the call ended, one of L{DISPOSITIONS}.

    Answered wins; then a caller's CANCEL; then the final code: 486/600
    busy, 408/480/487 no answer, 502-504 unavailable, other 3xx-6xx
    rejected (5xx failed), anything else failed.
    """
    code = 200 if record.answered_at is not None else record.code
    return outcome_for(code, cancelled=record.disconnect == "caller-cancel")


def _text(value: Any) -> str:
    """Text safe for every database: no NUL, at most L{MAX_TEXT} characters."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    return text.replace("\x00", "")[:MAX_TEXT]


def _iso(seconds: float | None) -> str | None:
    """ISO 8601 UTC text of a clock reading (for JSON columns)."""
    if seconds is None:
        return None
    return _utc(seconds).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc(seconds: float) -> dt.datetime:
    """An aware UTC datetime of a clock reading."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _billsec(answered_at: float | None, ended_at: float | None) -> int:
    """Billable seconds (rating.md 2.1: whole ms rounded up to seconds)."""
    if answered_at is None or ended_at is None:
        return 0
    return billable_duration(_utc(answered_at), _utc(ended_at))


def _get(source: Any, name: str) -> Any:
    """C{source[name]} of a mapping or C{source.name} of an object (or None)."""
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def _plain(value: Any) -> Any:
    """A JSON-ready copy: Decimals as strings, times as ISO text, records as dicts."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if hasattr(value, "as_dict") and callable(value.as_dict):
        return _plain(value.as_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return value.replace("\x00", "")
    return value


def _json(value: Any, what: str, problems: list[str]) -> Any:
    """C{value} as checked plain JSON, or C{None} (and a problem noted)."""
    try:
        return json_value(_plain(value))
    except (ValueError, TypeError) as error:
        problems.append(f"{what}: {error}")
        return None


def _money(value: Any, what: str, problems: list[str]) -> Decimal | None:
    """An exact Decimal for C{value} (never through a float), or None."""
    if value is None:
        return None
    try:
        result = convert(_COST_FIELD, value)
    except (ValueError, TypeError) as error:
        problems.append(f"{what} {value!r}: {error}")
        return None
    assert isinstance(result, Decimal)
    return result


def _ref(value: Any) -> int | None:
    """A positive row id, or None."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


@dataclass(frozen=True)
class CDR:
    """One call's detail record (a row of C{cdrs}).

    Times are clock readings (seconds since the epoch); C{cost} is exact.
    """

    call_id: str
    started_at: float
    ended_at: float | None = None
    answered_at: float | None = None
    caller: str = ""
    callee: str = ""
    customer_id: int | None = None
    account_id: int | None = None
    billsec: int = 0
    disposition: str = "failed"
    cost: Decimal = _ZERO
    currency: str = ""
    legs: list[dict[str, Any]] = field(default_factory=list)
    breakdown: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The journal form: a JSON object, the cost as a decimal string."""
        return {
            "call_id": self.call_id, "started_at": self.started_at,
            "answered_at": self.answered_at, "ended_at": self.ended_at,
            "caller": self.caller, "callee": self.callee,
            "customer_id": self.customer_id, "account_id": self.account_id,
            "billsec": self.billsec, "disposition": self.disposition,
            "cost": format(self.cost, "f"), "currency": self.currency,
            "legs": self.legs, "breakdown": self.breakdown,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CDR:
        """The inverse of L{to_json}.

        @raise ValueError: for a record that is not a CDR.
        """
        try:
            call_id = data["call_id"]
            started_at = data["started_at"]
            cost = data.get("cost", "0")
            if not isinstance(call_id, str) or not call_id:
                raise ValueError("call_id must be non-empty text")
            for name in ("started_at", "answered_at", "ended_at"):
                value = data.get(name)
                if value is None and name != "started_at":
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float) \
                        or not math.isfinite(value):
                    raise ValueError(f"{name} must be a number of seconds")
            if not isinstance(cost, str):
                raise ValueError("cost must be a decimal string")
            legs, breakdown = data.get("legs", []), data.get("breakdown", {})
            if not isinstance(legs, list) or not isinstance(breakdown, dict):
                raise ValueError("legs must be a list and breakdown an object")
            billsec = data.get("billsec", 0)
            if isinstance(billsec, bool) or not isinstance(billsec, int) or billsec < 0:
                raise ValueError("billsec must be a whole number of seconds")
            return cls(
                call_id=call_id, started_at=started_at, answered_at=data.get("answered_at"),
                ended_at=data.get("ended_at"), caller=_text(data.get("caller")),
                callee=_text(data.get("callee")), customer_id=_ref(data.get("customer_id")),
                account_id=_ref(data.get("account_id")), billsec=billsec,
                disposition=_text(data.get("disposition")), cost=convert(_COST_FIELD, cost),
                currency=_text(data.get("currency")), legs=legs, breakdown=breakdown)
        except (KeyError, TypeError, ValueError, ArithmeticError) as error:
            raise ValueError(f"not a CDR record: {error}") from None

    def columns(self, now: dt.datetime) -> dict[str, Any]:
        """The row for C{cdrs}, as model-typed Python values (C{now} stamps
        C{created_at} and C{updated_at})."""
        return {
            "customer_id": self.customer_id, "account_id": self.account_id,
            "call_id": self.call_id, "caller": self.caller, "callee": self.callee,
            "started_at": _utc(self.started_at),
            "answered_at": None if self.answered_at is None else _utc(self.answered_at),
            "ended_at": None if self.ended_at is None else _utc(self.ended_at),
            "billsec": self.billsec, "disposition": self.disposition, "cost": self.cost,
            "currency": self.currency, "legs": self.legs, "breakdown": self.breakdown,
            "created_at": now, "updated_at": now,
        }


def _leg_charge(charges: Any, index: int, leg: LegRecord) -> Any:
    """The charging data's entry for attempt C{index}, if any."""
    if isinstance(charges, Mapping):
        for key in (index, str(index), leg.destination):
            if key in charges:
                return charges[key]
        return None
    if isinstance(charges, Sequence) and not isinstance(charges, str | bytes):
        return charges[index] if index < len(charges) else None
    return None


def _leg(index: int, leg: LegRecord, charge: Any, problems: list[str]) -> dict[str, Any]:
    """One attempt's entry of C{legs}."""
    out: dict[str, Any] = {
        "attempt": index + 1, "destination": _text(leg.destination), "uri": _text(leg.uri),
        "vendor": _text(_get(charge, "vendor")), "started_at": _iso(leg.started_at),
        "ringing_at": _iso(getattr(leg, "ringing_at", None)),
        "answered_at": _iso(leg.answered_at), "ended_at": _iso(leg.ended_at),
        "code": leg.code, "reason": _text(leg.reason),
        "billsec": _billsec(leg.answered_at, leg.ended_at), "cost": None, "currency": "",
    }
    cost = _money(_get(charge, "cost"), f"legs[{index}].cost", problems)
    if cost is not None:
        out["cost"] = format(cost, "f")
        out["currency"] = _text(_get(charge, "currency"))
    if isinstance(charge, Mapping):
        for key, value in charge.items():
            if str(key) not in out:
                out[str(key)] = _json(value, f"legs[{index}].{key}", problems)
    return out


def build_cdr(record: CallRecord, *, charging: Any = None, customer_id: int | None = None,
              account_id: int | None = None, identity: str = "",
              leg_charges: Any = None) -> CDR:
    """The CDR of the call C{record} describes.

    @param charging: the charging data (see the module docstring), if any;
        its ids win over C{customer_id} and C{account_id}.
    @param leg_charges: per-attempt entries (the C{legs} shapes of the
        charging data) when the charging data has none: a routing plugin's
        vendors and buy costs (C{call.data["legs"]}).
    @param identity: who placed the call (kept in the breakdown).
    @return: a CDR that is always storable: a charging value that cannot
        be stored exactly (a float cost...) is left out, logged, and named
        in C{breakdown["problems"]}; the CDR is never refused.
    """
    problems: list[str] = []
    cost = _money(_get(charging, "cost"), "cost", problems)
    billsec = _get(charging, "billsec")
    if isinstance(billsec, bool) or not isinstance(billsec, int) or billsec < 0:
        billsec = _billsec(record.answered_at, record.ended_at)
    legs_charges = _get(charging, "legs") or leg_charges
    legs = [_leg(i, leg, _leg_charge(legs_charges, i, leg), problems)
            for i, leg in enumerate(record.legs)]
    breakdown: dict[str, Any] = {
        "code": record.code, "reason": _text(record.reason),
        "disconnect": _text(record.disconnect), "tenant": _text(record.tenant),
    }
    if identity:
        breakdown["identity"] = _text(identity)
    rating = _get(charging, "breakdown")
    if rating is not None:
        breakdown["rating"] = _json(rating, "breakdown", problems)
    if problems:
        breakdown["problems"] = problems
        log.error("CDR {call_id}: charging data not stored as given: {problems}",
                  call_id=record.call_id, problems="; ".join(problems))
    return CDR(
        call_id=_text(record.call_id), started_at=record.received_at,
        answered_at=record.answered_at, ended_at=record.ended_at,
        caller=_text(record.caller), callee=_text(record.callee),
        customer_id=_ref(_get(charging, "customer_id")) or _ref(customer_id),
        account_id=_ref(_get(charging, "account_id")) or _ref(account_id),
        billsec=billsec, disposition=disposition_for(record),
        cost=_ZERO if cost is None else cost, currency=_text(_get(charging, "currency")),
        legs=legs, breakdown=breakdown)


def cdr_for_call(call: Any, record: CallRecord, directory: Any = None,
                 charging: Any = None) -> CDR:
    """The CDR of an ended L{b2bua.core.call.Call}.

    @param directory: a L{b2bua.core.directory.DirectoryView}; when given,
        the tenant's and the calling extension's row ids fill C{customer_id}
        and C{account_id} that the charging data does not give.
    @param charging: the charging data; default C{call.data["charging"]}.
    """
    if charging is None:
        charging = call.data.get("charging")
    identity = getattr(call, "identity", "") or ""
    customer_id, account_id = row_ids(directory, record.tenant, identity, record.call_id)
    cdr = build_cdr(record, charging=charging, customer_id=customer_id,
                    account_id=account_id, identity=identity,
                    leg_charges=call.data.get("legs"))
    media = call.data.get("media")
    if media:
        problems: list[str] = []
        cdr.breakdown["media"] = _json(media, "media", problems)
    recordings = call.data.get("recordings")
    if recordings:  # [{"path", "mode", "duration_ms", "source"}] (docs/call-recording.md)
        cdr.breakdown["recordings"] = _json(list(recordings), "recordings", [])
    return cdr


def row_ids(directory: Any, tenant: str, identity: str,
            call_id: str = "") -> tuple[int | None, int | None]:
    """The row ids of the tenant C{tenant} and of the calling extension
    C{identity} (C{number@domain}, when that is the tenant's), from the
    directory; C{None} for what is not there."""
    customer_id = account_id = None
    if directory is not None and tenant:
        try:
            row = directory.tenant(tenant)
            customer_id = getattr(row, "id", None)
            number, _, domain = identity.rpartition("@")
            if number and domain.lower() == tenant.lower():
                extension = directory.extension(tenant, number)
                account_id = getattr(extension, "id", None)
        except Exception:
            log.failure("CDR {call_id}: directory lookup failed", call_id=call_id)
    return _ref(customer_id), _ref(account_id)


#: The version of the recovery note's layout (L{recovery_note}).
NOTE_VERSION = 1


def recovery_note(call: Any, directory: Any = None) -> dict[str, Any]:
    """What a CDR of C{call} needs should its node die before the call ends
    (rating.md 3.6): the charging layer stores it with the call's hold, and
    recovery hands it back in the C{recovered} ledger entry
    (L{cdr_for_recovery}).  Keep it small: it travels with every hold."""
    tenant = getattr(call, "tenant", "") or ""
    identity = getattr(call, "identity", "") or ""
    customer_id, account_id = row_ids(directory, tenant, identity, call.id)
    return {"v": NOTE_VERSION, "caller": _text(str(call.caller.uri))[:256],
            "callee": _text(str(call.callee))[:256], "tenant": tenant[:256],
            "identity": identity[:256], "started_at": call.received_at,
            "customer_id": customer_id, "account_id": account_id}


def _number(value: Any) -> float | None:
    """A finite clock reading from a note, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value  # a clock reading (seconds), not money


def cdr_for_recovery(entry: Any, currency: str = "") -> CDR:
    """The CDR of a call whose hold recovery settled (rating.md 3.6).

    @param entry: the C{recovered} L{rating.stores.interface.LedgerEntry};
        its C{note} is what L{recovery_note} wrote (plus C{answered_at}),
        or C{""} when the call's owner wrote none.
    @return: a CDR with the call's own id and start (so that a CDR its
        node did write first is kept and this one is a duplicate), the
        settled amount as its cost, the usage known to have happened
        (answer to last checkpoint) as its billable time, disposition
        C{answered} or C{failed}, and C{breakdown.disconnect = "recovered"},
        C{breakdown.partial = true}.
    """
    problems: list[str] = []
    try:
        note = json.loads(entry.note) if entry.note else {}
    except ValueError:
        note, problems = {}, ["recovery note is not JSON"]
    if not isinstance(note, Mapping):
        note, problems = {}, ["recovery note is not an object"]
    started_at = _number(note.get("started_at"))
    if started_at is None:
        started_at = entry.at
        problems.append("call start unknown: the settlement time is used")
    answered_at = _number(note.get("answered_at"))
    ended_at = entry.checkpointed_at if answered_at is not None else None
    if answered_at is not None and (ended_at is None or ended_at < answered_at):
        ended_at = answered_at
    breakdown: dict[str, Any] = {
        "code": 200 if answered_at is not None else None, "reason": "",
        "disconnect": "recovered", "partial": True,
        "tenant": _text(note.get("tenant")),
        "recovered": {"ledger_entry": entry.id, "settled_at": _iso(entry.at),
                      "account": entry.account, "debited": format(entry.amount, "f"),
                      "checkpoint_at": _iso(entry.checkpointed_at)},
    }
    if note.get("identity"):
        breakdown["identity"] = _text(note.get("identity"))
    if problems:
        breakdown["problems"] = problems
    return CDR(
        call_id=_text(entry.reservation_id), started_at=started_at,
        answered_at=answered_at, ended_at=ended_at if answered_at is not None else entry.at,
        caller=_text(note.get("caller")), callee=_text(note.get("callee")),
        customer_id=_ref(note.get("customer_id")), account_id=_ref(note.get("account_id")),
        billsec=_billsec(answered_at, ended_at),
        disposition="answered" if answered_at is not None else "failed",
        cost=entry.final_cost, currency=_text(note.get("currency") or currency),
        legs=[], breakdown=breakdown)
