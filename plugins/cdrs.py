"""CDRs: every call's detail record, made durable before the call is let go.

A thin plugin over L{rating.cdr_writer.CDRWriter}: at C{b2bua_call_ended}
it builds the call's L{rating.cdr.CDR} and returns C{writer.append(cdr)},
whose Deferred fires once the CDR is durable in the journal (so a drain or
a shutdown waits for it).  The writer, its journal and its database belong
to the service, which puts the writer in C{services.extra["cdr_writer"]}
before the plugins are configured (and starts and stops it); without one
the plugin stays idle.

It runs after the other implementations of C{b2bua_call_ended}
(C{trylast}), so the charging plugin has committed the call's cost first.
When that commit is asynchronous, the charging data in
C{call.data["charging"]} may carry C{settled}, a Deferred firing once the
final cost is in it: the CDR waits for it, for at most C{settle_timeout}
seconds (C{[plugins.cdrs] settle_timeout}, default 10), and is written
with what is known if it fails or takes longer (noted in the breakdown).
The media plugin's C{call.data["media_settled"]} (its backend's final
statistics, when they come later) is waited for the same way, and so is
every Deferred in C{call.data["recordings_settled"]} (producers of call
recordings whose files are finished later register them with
L{media.call_recording.add_recording_wait}; the files are read from
C{call.data["recordings"]} once they fired).  Only the charging commit's
failure is noted in the CDR (C{breakdown.charging}); the others are
logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.core.call import Call, CallRecord
from b2bua.core.services import Services
from b2bua.hookspecs import hookimpl
from media.call_recording import recording_waits
from rating.cdr import CDR, cdr_for_call
from rating.cdr_writer import CDRWriter

NAME = "cdrs"
DEFAULT_SETTLE_TIMEOUT = 10.0

log = Logger()


def _settled(charging: Any) -> Deferred[Any] | None:
    """The charging data's C{settled} Deferred, if it has one."""
    if charging is None:
        return None
    value = charging.get("settled") if isinstance(charging, Mapping) \
        else getattr(charging, "settled", None)
    return value if isinstance(value, Deferred) else None


def _kept(result: Any, box: list[Any]) -> Any:
    """Keep a Deferred's result in C{box}; pass it on."""
    box.append(result)
    return result


def _logged(failure: Any, call_id: str) -> None:
    """A media or recording producer failed: log it; the CDR is written
    with what is known."""
    log.warn("cdrs: media or recordings of {call_id} not settled ({error}); writing its "
             "CDR with what is known", call_id=call_id, error=failure.getErrorMessage())


class CDRs:
    """The built-in plugin that writes a CDR for every call (module docstring)."""

    def __init__(self) -> None:
        self.writer: CDRWriter | None = None
        self.services: Services | None = None
        self.settle_timeout = DEFAULT_SETTLE_TIMEOUT

    @hookimpl
    def b2bua_configure(self, services: Services, settings: dict[str, Any]) -> None:
        """Take the writer from C{services.extra["cdr_writer"]}, if any."""
        self.services = services
        self.writer = services.extra.get("cdr_writer")
        own = settings.get(NAME, {})
        timeout = own.get("settle_timeout") if isinstance(own, Mapping) else None
        if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout >= 0:
            self.settle_timeout = timeout
        if self.writer is None:
            log.info("cdrs: no CDR writer configured; CDRs are not stored")

    @hookimpl(trylast=True)
    def b2bua_call_ended(self, call: Call, record: CallRecord) -> Deferred[None] | None:
        """Build the call's CDR and journal it (the Deferred fires once durable)."""
        writer, services = self.writer, self.services
        if writer is None or services is None:
            return None
        charging = _settled(call.data.get("charging"))
        others = [d for d in (call.data.get("media_settled"), *recording_waits(call))
                  if isinstance(d, Deferred)]
        if charging is None and not others:
            return writer.append(self._cdr(call, record, None))
        if not others:
            assert charging is not None
            return self._after_settling(call, record, charging, [])
        for d in others:
            d.addErrback(_logged, call.id)
        charged: list[Any] | None = None
        if charging is not None:
            charged = []  # the commit's outcome, once known (a late producer is not its fault)
            charging.addBoth(_kept, charged)
        waits = others if charging is None else [charging, *others]
        settled: Deferred[Any] = DeferredList(waits, consumeErrors=True)
        # the result is the charging commit's (its failure is noted in the CDR)
        settled.addCallback(lambda results: results[0][1] if charging is not None else None)
        ready = self._after_settling(call, record, settled, charged)
        settled.addErrback(lambda _: None)  # our own list's copy of it: noted already
        return ready

    def _cdr(self, call: Call, record: CallRecord, note: str | None) -> CDR:
        """The CDR of C{call}, with C{note} about its charging if any."""
        directory = self.services.directory if self.services is not None else None
        cdr = cdr_for_call(call, record, directory)
        if note:
            cdr.breakdown["charging"] = note
        return cdr

    def _after_settling(self, call: Call, record: CallRecord, settled: Deferred[Any],
                        charged: list[Any] | None) -> Deferred[None]:
        """Wait (bounded) for C{settled}, then journal the CDR.

        @param charged: C{None} without a charging commit; else a list
            that holds its outcome once it is known (empty while it is not,
            which makes a time-out the commit's).
        """
        assert self.services is not None and self.writer is not None
        writer = self.writer
        clock = self.services.clock
        ready: Deferred[str | None] = Deferred()

        def finished(result: Any) -> Any:
            if not ready.called:
                if timer.active():
                    timer.cancel()
                note = None
                if hasattr(result, "getErrorMessage"):
                    log.warn("cdrs: charging of {call_id} failed ({error}); writing its CDR "
                             "with what is known", call_id=call.id,
                             error=result.getErrorMessage())
                    note = "unsettled: charging failed"
                ready.callback(note)
            return result  # the charging plugin's chain is left as it was

        def too_late() -> None:
            if not ready.called and (charged is None or charged):
                log.warn("cdrs: media or recordings of {call_id} not settled after "
                         "{timeout} s; writing its CDR with what is known", call_id=call.id,
                         timeout=self.settle_timeout)
                failed = bool(charged) and isinstance(charged[0], Failure)
                ready.callback("unsettled: charging failed" if failed else None)
            if not ready.called:
                log.warn("cdrs: charging of {call_id} not settled after {timeout} s; writing "
                         "its CDR with what is known", call_id=call.id,
                         timeout=self.settle_timeout)
                ready.callback("unsettled: timed out")

        timer = clock.callLater(self.settle_timeout, too_late)
        settled.addBoth(finished)
        return ready.addCallback(lambda note: writer.append(self._cdr(call, record, note)))
