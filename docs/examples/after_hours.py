"""An example plugin: calls to a tenant outside its business hours get
C{480 Temporarily Unavailable} with a C{Retry-After} saying when it opens.

C{docs/plugins.md} walks through this file; C{tests/trial/core/test_plugins.py}
runs it through the switch with L{b2bua.testing}.  It shows the three kinds
of hook a feature needs:

  - C{b2bua_configure}: keep the clock, read the C{[plugins.after_hours]}
    table;
  - C{b2bua_authorize_call}, a decision: a plain L{Reject} when the answer
    needs no I/O (outside the opening hours), a lazy callable returning a
    Deferred when it does (asking a holiday calendar);
  - C{b2bua_call_ended}, a notification: tidy up and count, exactly once
    per call.

Settings::

    [plugins.after_hours]
    retry_after_max = 86400          # never ask callers to wait longer

    [plugins.after_hours.tenants."127.0.0.1"]
    opens = "08:00"
    closes = "18:00"
    days = ["mon", "tue", "wed", "thu", "fri"]
    utc_offset = "+01:00"
    holidays = ["2023-12-25"]
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed

from b2bua.core.call import Call, CallRecord
from b2bua.core.decisions import Reject
from b2bua.core.services import Services
from b2bua.hookspecs import hookimpl
from b2bua.sip.message import Request

__all__ = ["NAME", "AfterHours", "Hours", "plugin"]

#: The plugin's name: its C{[plugins.NAME]} table, its C{call.data} key.
NAME = "after_hours"

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: Asks whether a tenant is closed on a date (a holiday); may need I/O.
Calendar = Callable[[str, dt.date], Deferred[bool]]


def _time(table: Mapping[str, Any], key: str, default: str) -> dt.time:
    value = table.get(key, default)
    try:
        return dt.time.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a time like {default!r}, not {value!r}") from None


def _offset(value: Any) -> dt.timezone:
    try:
        sign = -1 if value[0] == "-" else 1
        hours, minutes = (int(part) for part in value.lstrip("+-").split(":"))
        return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"utc_offset must look like '+01:00', not {value!r}") from None


@dataclass(frozen=True)
class Hours:
    """The opening hours of one tenant, in its own time zone."""

    opens: dt.time
    closes: dt.time
    days: frozenset[int]
    zone: dt.timezone
    holidays: frozenset[dt.date]

    @classmethod
    def from_settings(cls, table: Mapping[str, Any]) -> Hours:
        """Read one tenant's table.  @raise ValueError: naming the bad key."""
        days = table.get("days", list(DAYS[:5]))
        if not isinstance(days, list) or not set(days) <= set(DAYS):
            raise ValueError(f"days must list some of {', '.join(DAYS)}")
        try:
            holidays = frozenset(dt.date.fromisoformat(d) for d in table.get("holidays", []))
        except (TypeError, ValueError):
            raise ValueError("holidays must list dates like '2023-12-25'") from None
        hours = cls(_time(table, "opens", "08:00"), _time(table, "closes", "18:00"),
                    frozenset(DAYS.index(d) for d in days),
                    _offset(table.get("utc_offset", "+00:00")), holidays)
        if hours.opens >= hours.closes:
            raise ValueError("opens must come before closes")
        return hours

    def is_open(self, now: dt.datetime) -> bool:
        """Open at C{now} by the weekly schedule (holidays aside)?"""
        return now.weekday() in self.days and self.opens <= now.time() < self.closes

    def next_opening(self, now: dt.datetime, after_today: bool = False) -> dt.datetime:
        """When the tenant opens next (not today when C{after_today})."""
        for ahead in range(1 if after_today else 0, 32):
            day = now.date() + dt.timedelta(days=ahead)
            opening = dt.datetime.combine(day, self.opens, tzinfo=self.zone)
            if day.weekday() in self.days and day not in self.holidays and opening > now:
                return opening
        return now + dt.timedelta(days=31)


class AfterHours:
    """Refuses calls to a tenant while it is closed.

    @param calendar: asks whether a tenant is closed all day on a date
        (default: the C{holidays} listed in its settings).
    @ivar refused: how many calls were refused, by why (C{closed},
        C{holiday}), counted when they ended.
    """

    def __init__(self, calendar: Calendar | None = None) -> None:
        self.clock: Any = None
        self.hours: dict[str, Hours] = {}
        self.retry_after_max = 86400
        self.calendar = calendar or self._listed_holiday
        self.refused: Counter[str] = Counter()

    @hookimpl
    def b2bua_configure(self, services: Services, settings: dict[str, Any]) -> None:
        """Keep the clock; read the C{[plugins.after_hours]} table."""
        own = settings.get(NAME, {})
        self.clock = services.clock
        self.hours = {domain.lower(): Hours.from_settings(table)
                      for domain, table in own.get("tenants", {}).items()}
        self.retry_after_max = int(own.get("retry_after_max", 86400))

    @hookimpl
    def b2bua_authorize_call(self, call: Call, request: Request) -> Any:
        """Refuse calls to a closed tenant; ask the calendar (lazily) when
        the schedule says open."""
        uri = request.uri
        domain = (uri.host or "").lower() if uri.is_sip else ""
        hours = self.hours.get(domain)
        if hours is None or self.clock is None:
            return None  # not ours: no opinion
        now = dt.datetime.fromtimestamp(self.clock.seconds(), hours.zone)
        if not hours.is_open(now):
            return self._refuse(call, "closed", hours, now)

        def ask_calendar() -> Deferred[Reject | None]:
            d = self.calendar(domain, now.date())
            d.addCallback(lambda holiday: self._refuse(call, "holiday", hours, now, True)
                          if holiday else None)
            return d

        return ask_calendar

    def _refuse(self, call: Call, why: str, hours: Hours, now: dt.datetime,
                after_today: bool = False) -> Reject:
        call.data[NAME] = why
        wait = (hours.next_opening(now, after_today) - now).total_seconds()
        retry_after = min(self.retry_after_max, max(60, int(wait)))
        return Reject(480, "Temporarily Unavailable", (("Retry-After", str(retry_after)),),
                      source=NAME)

    def _listed_holiday(self, domain: str, date: dt.date) -> Deferred[bool]:
        return succeed(date in self.hours[domain].holidays)

    @hookimpl
    def b2bua_call_ended(self, call: Call, record: CallRecord) -> None:
        """Count the calls we refused (and forget what we kept on them)."""
        why = call.data.pop(NAME, None)
        if why is not None:
            self.refused[why] += 1


#: What the C{b2bua} entry point names: C{after_hours = "after_hours:plugin"}.
plugin = AfterHours()
