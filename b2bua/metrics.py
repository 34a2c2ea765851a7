"""The switch's Prometheus metrics, one registry per service instance.

L{Metrics} owns a private L{prometheus_client.CollectorRegistry} (never the
process-global C{REGISTRY}) and every metric of the switch. Names follow
C{b2bua_<layer>_<thing>_<unit>}; every label takes its values from a bounded
set, so a hostile peer cannot grow the series count by inventing methods,
codes or reasons:

    - SIP methods outside L{SIP_METHODS} fold into C{"other"};
    - response codes outside 100-699 are not counted at all;
    - drop and reject reasons outside L{DROP_REASONS} and L{REJECT_REASONS}
      fold into C{"other"};
    - plugin hook names must look like a hook (C{b2bua_...}) and at most
      L{MAX_HOOK_LABELS} distinct ones are kept, the rest fold into
      C{"other"}.

Nothing here reads a clock: durations are measured by the caller on its
injected reactor and handed in as seconds. Gauges that mirror live state
(registrations, transactions) read it through callbacks at scrape time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from b2bua.sip.message import KNOWN_METHODS

__all__ = [
    "DROP_REASONS",
    "MAX_HOOK_LABELS",
    "OAM_ROUTES",
    "OTHER",
    "OUTCOMES",
    "REJECT_REASONS",
    "SETUP_BUCKETS",
    "SIP_METHODS",
    "TRANSFER_RESULTS",
    "Metrics",
    "code_label",
    "method_label",
    "outcome_for",
]

log = Logger()

LiveCount = Callable[[], "float | Deferred[int] | Deferred[float]"]
"""A live gauge's source: returns a number, or a L{Deferred} firing with one
(as C{ILocationStore.count()} does)."""

OTHER = "other"
"""The label value that every out-of-set value folds into."""

OUTCOMES: tuple[str, ...] = (
    "answered",
    "busy",
    "no_answer",
    "cancelled",
    "rejected",
    "failed",
    "unavailable",
)
"""Every value of the C{outcome} label of C{b2bua_calls_total}."""

SIP_METHODS: frozenset[str] = KNOWN_METHODS
"""Methods counted under their own name; SIP methods are case-sensitive."""

DROP_REASONS: frozenset[str] = frozenset(
    {
        "malformed",  # unparseable and no response can be formed
        "too_large",  # larger than the configured maximum message size
        "stray_response",  # a response that matches no client transaction
        "rate_limited",  # flood protection dropped it silently
        "blocked",  # source address on a block list
        "transport_error",  # could not be sent (connection gone, no route)
    }
)
"""Reasons of C{b2bua_sip_messages_dropped_total} besides C{"other"}."""

REJECT_REASONS: frozenset[str] = frozenset(
    {
        "malformed",  # 400
        "auth_failed",  # 401/403/407 after bad or missing credentials
        "forbidden",  # policy or access list (403)
        "not_found",  # unknown user or number (404, 484)
        "method_not_allowed",  # 405
        "unsupported_uri_scheme",  # 416
        "bad_extension",  # 420
        "interval_too_brief",  # 423
        "loop_detected",  # 482
        "too_many_hops",  # 483
        "no_route",  # routing found no target
        "call_limit",  # trunk call or CPS limit
        "insufficient_balance",  # charging refused the call
        "overload",  # 503 under load
    }
)
"""Reasons of C{b2bua_sip_rejected_requests_total} besides C{"other"}."""

TRANSFER_RESULTS: tuple[str, ...] = (
    "accepted",  # REFER answered 202: a call to the target was placed
    "connected",  # the target answered: the transferee was moved to it
    "failed",  # the call to the target failed (busy, no answer, refused...)
    "refused_payer",  # 403: the referrer is nobody the switch can charge
    "refused_limit",  # 403: the call reached [core] max_transfers
    "refused_policy",  # 403 with [core] transfer off, or b2bua_authorize_transfer refused
    "refused_invalid",  # 400/501: bad Refer-To, Replaces, a method other than INVITE
    "refused_other",  # 481/491/500: party gone, offer pending, plugin error
)
"""Every value of the C{result} label of C{b2bua_calls_transferred_total}."""

OAM_ROUTES: frozenset[str] = frozenset({"health", "ready", "metrics", "drain", "api"})
"""Values of the C{route} label of C{b2bua_oam_http_errors_total} besides C{"other"}."""

SETUP_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0, 20.0, 30.0,
)
"""Upper bounds, in seconds, of the C{b2bua_call_setup_seconds} buckets."""

MAX_HOOK_LABELS = 64
"""At most this many distinct hook names get their own series."""

_HOOK_NAME = re.compile(r"b2bua_[a-z0-9_]{1,58}")

_BUSY = frozenset({486, 600})
_NO_ANSWER = frozenset({408, 480, 487})
_UNAVAILABLE = frozenset({502, 503, 504})


def outcome_for(code: int | None, cancelled: bool) -> str:
    """Classify how a call ended, for the C{outcome} label.

    The code is the final response the caller received (or would have
    received); C{None} means no final response came at all (timeout,
    transport failure). A 2xx wins over a late CANCEL, since the call was
    answered; otherwise a caller's CANCEL wins over whatever code followed.

    ======================  ===============
    code                    outcome
    ======================  ===============
    200-299                 answered
    (cancelled by caller)   cancelled
    486, 600                busy
    408, 480, 487           no_answer
    502, 503, 504           unavailable
    300-399, other 4xx/6xx  rejected
    other 5xx, None, junk   failed
    ======================  ===============

    A 487 without a caller's CANCEL means the switch gave up ringing itself
    (its no-answer timer), hence C{no_answer}.

    @param code: the final response code, or C{None}.
    @param cancelled: C{True} if the caller sent CANCEL.
    @return: one of L{OUTCOMES}.
    """
    if code is not None and 200 <= code <= 299:
        return "answered"
    if cancelled:
        return "cancelled"
    if code is None or not 300 <= code <= 699:
        return "failed"
    if code in _BUSY:
        return "busy"
    if code in _NO_ANSWER:
        return "no_answer"
    if code in _UNAVAILABLE:
        return "unavailable"
    if 500 <= code <= 599:
        return "failed"
    return "rejected"


def method_label(method: str) -> str:
    """Return the C{method} label value: the method if known, else C{"other"}."""
    return method if method in SIP_METHODS else OTHER


def code_label(code: object) -> str | None:
    """Return the C{code} label value, or C{None} if C{code} is not 100-699."""
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 699:
        return None
    return str(code)


def _bounded(value: str, allowed: frozenset[str]) -> str:
    """Return C{value} if it is in C{allowed}, else C{"other"}."""
    return value if value in allowed else OTHER


class Metrics:
    """Every metric of one switch instance, in a registry of its own.

    @ivar registry: the L{CollectorRegistry} holding all of them; render it
        with L{render}, or hand it to another exporter.
    """

    def __init__(
        self,
        registrations: LiveCount | None = None,
        transactions: LiveCount | None = None,
    ) -> None:
        """
        @param registrations: returns the number of active registrations,
            or a L{Deferred} of it (the location store's C{count}); may be
            bound later with L{track_registrations}.
        @param transactions: returns the number of live SIP transactions
            (or a L{Deferred} of it); may be bound later with
            L{track_transactions}.
        """
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._registrations: LiveCount = registrations or _zero
        self._transactions: LiveCount = transactions or _zero
        self._hooks: set[str] = set()
        #: label value -> child, for the counters bumped on every message
        #: (each label set is bounded, so are these)
        self._request_children: dict[str, Any] = {}
        self._response_children: dict[int, tuple[Any, str]] = {}
        self._call_children: dict[str, Any] = {}
        self._last: dict[str, float] = {}

        self.calls_active = Gauge(
            "b2bua_calls_active", "Calls in progress (set up or answered).", registry=reg
        )
        self.calls = Counter(
            "b2bua_calls_total", "Calls ended, by outcome.", ["outcome"], registry=reg
        )
        self.call_setup = Histogram(
            "b2bua_call_setup_seconds",
            "Time from the initial INVITE to the answer, in seconds.",
            buckets=SETUP_BUCKETS,
            registry=reg,
        )
        self.sip_requests = Counter(
            "b2bua_sip_requests_total", "SIP requests received, by method.", ["method"],
            registry=reg,
        )
        self.sip_responses = Counter(
            "b2bua_sip_responses_total", "SIP responses sent, by status code.", ["code"],
            registry=reg,
        )
        self.sip_dropped = Counter(
            "b2bua_sip_messages_dropped_total",
            "SIP messages dropped without a response, by reason.", ["reason"], registry=reg,
        )
        self.sip_rejected = Counter(
            "b2bua_sip_rejected_requests_total",
            "SIP requests answered with an error by the switch, by reason.", ["reason"],
            registry=reg,
        )
        self.registrations_active = Gauge(
            "b2bua_registrations_active", "Contacts bound in the location service.",
            registry=reg,
        )
        self.registrations_active.set_function(lambda: self._read("registrations"))
        self.transactions_active = Gauge(
            "b2bua_transactions_active", "SIP transactions alive (client and server).",
            registry=reg,
        )
        self.transactions_active.set_function(lambda: self._read("transactions"))
        self.plugin_errors = Counter(
            "b2bua_plugin_errors_total", "Exceptions raised by plugin hook implementations.",
            ["hook"], registry=reg,
        )
        self.oam_errors = Counter(
            "b2bua_oam_http_errors_total",
            "Unexpected exceptions in the OAM HTTP site, answered with 500.", ["route"],
            registry=reg,
        )
        self.calls_transferred = Counter(
            "b2bua_calls_transferred",
            "Blind transfers by the switch (REFER), by result.", ["result"], registry=reg,
        )
        for outcome in OUTCOMES:
            self.calls.labels(outcome)
        for result in TRANSFER_RESULTS:
            self.calls_transferred.labels(result)
        for method in sorted(SIP_METHODS):
            self.sip_requests.labels(method)
        for reason in sorted(DROP_REASONS):
            self.sip_dropped.labels(reason)
        for reason in sorted(REJECT_REASONS):
            self.sip_rejected.labels(reason)

    # Live gauges.

    def track_registrations(self, count: LiveCount) -> None:
        """Read C{b2bua_registrations_active} from C{count} at every scrape."""
        self._registrations = count

    def track_transactions(self, count: LiveCount) -> None:
        """Read C{b2bua_transactions_active} from C{count} at every scrape."""
        self._transactions = count

    def _read(self, which: str) -> float:
        """Read a live gauge at scrape time; never let it break the scrape.

        A plain number is used as is. A L{Deferred} that already fired (an
        in-memory store) gives its result now; one still pending (Redis)
        leaves the value of the previous scrape in place and updates it when
        it fires. A failure reads as NaN and is logged.
        """
        count = self._registrations if which == "registrations" else self._transactions
        try:
            result = count()
        except Exception:
            return self._failed(Failure(), which)
        if isinstance(result, Deferred):
            result.addCallbacks(
                self._store, self._failed, callbackArgs=(which,), errbackArgs=(which,)
            )
            return self._last.get(which, math.nan)
        return self._store(result, which)

    def _store(self, value: object, which: str) -> float:
        """Remember and return the number a live gauge read."""
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return self._failed(Failure(), which)
        self._last[which] = number
        return number

    def _failed(self, failure: Failure, which: str) -> float:
        """Log a failed live-gauge read; the gauge reads NaN until the next good one."""
        log.failure("metrics: reading the {which} gauge failed", failure, which=which)
        self._last[which] = math.nan
        return math.nan

    # Calls.

    def call_started(self) -> None:
        """Count a call in progress; pair with exactly one L{call_ended}."""
        self.calls_active.inc()

    def call_ended(self, code: int | None, cancelled: bool = False) -> str:
        """Count a call that ended and release its L{call_started}.

        @param code: the final response code the caller got, or C{None}.
        @param cancelled: C{True} if the caller sent CANCEL.
        @return: the outcome counted, see L{outcome_for}.
        """
        outcome = outcome_for(code, cancelled)
        self.calls_active.dec()
        child = self._call_children.get(outcome)
        if child is None:
            child = self._call_children[outcome] = self.calls.labels(outcome)
        child.inc()
        return outcome

    def observe_call_setup(self, seconds: float) -> None:
        """Record the time from INVITE to answer; negative or NaN values are ignored."""
        if seconds >= 0:
            self.call_setup.observe(seconds)

    def call_transferred(self, result: str) -> str:
        """Count a step of a blind transfer; return the C{result} label
        (one of L{TRANSFER_RESULTS}, anything else folds into C{"other"})."""
        label = result if result in TRANSFER_RESULTS else OTHER
        self.calls_transferred.labels(label).inc()
        return label

    # SIP messages.

    def request_received(self, method: str) -> str:
        """Count a SIP request received; return the C{method} label used."""
        label = method_label(method)
        child = self._request_children.get(label)
        if child is None:
            child = self._request_children[label] = self.sip_requests.labels(label)
        child.inc()
        return label

    def response_sent(self, code: int) -> str | None:
        """Count a SIP response sent; return the C{code} label, C{None} if not counted."""
        known = self._response_children.get(code) if code.__class__ is int else None
        if known is not None:
            known[0].inc()
            return known[1]
        label = code_label(code)
        if label is not None:
            child = self.sip_responses.labels(label)
            self._response_children[code] = (child, label)
            child.inc()
        return label

    def message_dropped(self, reason: str) -> str:
        """Count a message dropped without a response; return the C{reason} label."""
        label = _bounded(reason, DROP_REASONS)
        self.sip_dropped.labels(label).inc()
        return label

    def request_rejected(self, reason: str) -> str:
        """Count a request the switch answered with an error; return the C{reason} label."""
        label = _bounded(reason, REJECT_REASONS)
        self.sip_rejected.labels(label).inc()
        return label

    # Plugins and OAM.

    def plugin_failed(self, hook: str) -> str:
        """Count an exception raised by a hook implementation; return the C{hook} label."""
        label = OTHER
        if hook in self._hooks:
            label = hook
        elif _HOOK_NAME.fullmatch(hook) and len(self._hooks) < MAX_HOOK_LABELS:
            self._hooks.add(hook)
            label = hook
        self.plugin_errors.labels(label).inc()
        return label

    def oam_error(self, route: str) -> str:
        """Count an unexpected exception in the OAM site; return the C{route} label."""
        label = _bounded(route, OAM_ROUTES)
        self.oam_errors.labels(label).inc()
        return label

    # Exposition.

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """Render the registry for a scrape, without C{_created} samples.

        Without C{accept} (or with one that asks for nothing better) this is
        the classic text format from C{generate_latest}; an C{Accept} header
        asking for OpenMetrics gets OpenMetrics, as Prometheus prefers.

        @param accept: the scraper's C{Accept} header, if any.
        @return: the body and its C{Content-Type}.
        """
        scrape = _WithoutCreated(self.registry)
        if accept:
            try:
                encoder, content_type = choose_encoder(accept)
            except (TypeError, ValueError):
                # prometheus_client chokes on a non-numeric version parameter.
                pass
            else:
                return encoder(scrape), content_type
        return generate_latest(scrape), CONTENT_TYPE_PLAIN_0_0_4


class _WithoutCreated:
    """A view of a registry without the C{_created} samples.

    Those timestamps (read from the wall clock by prometheus_client) would
    double the series count in the classic text format and tell an operator
    nothing that C{process_start_time_seconds} does not.
    """

    _WITH_CREATED = frozenset({"counter", "histogram", "summary", "gaugehistogram"})

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        """Yield the registry's families, C{_created} samples left out."""
        for family in self._registry.collect():
            if family.type not in self._WITH_CREATED:
                yield family
                continue
            copy = Metric(family.name, family.documentation, family.type, family.unit)
            copy.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield copy


def _zero() -> float:
    """The value of a live gauge nobody has bound yet."""
    return 0.0
